//! Account administration: Dendrite's resetPassword, and whois at the
//! client path (self or admin) and Synapse's admin path (admin only).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router, routing::get};
use ruma::api::client::admin::get_user_info;
use ruma::api::client::admin::get_user_info::v3::{ConnectionInfo, DeviceInfo, SessionInfo};
use ruma::{MilliSecondsSinceUnixEpoch, UInt, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{AdminAuth, Auth, RequiredJsonBody, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::services::admin_users;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_user_info::v3::Request, _, _>(r, client_whois);
    r.route("/_synapse/admin/v1/whois/{user_id}", get(synapse_whois))
        .route(
            "/_dendrite/admin/resetPassword/{user_id}",
            post(reset_password),
        )
}

async fn whois(s: &AppState, user_id: &UserId) -> Result<get_user_info::v3::Response> {
    if !s.accounts.is_local(user_id) {
        return Err(MatrixError::invalid_param(
            "whois only works for local users",
        ));
    }
    s.accounts.get_existing(user_id).await?;
    let mut devices = BTreeMap::new();
    for d in s.sessions.devices(user_id.as_str()).await? {
        let mut conn = ConnectionInfo::new();
        conn.ip = Some(d.last_seen_ip.unwrap_or_default());
        conn.last_seen = Some(MilliSecondsSinceUnixEpoch(
            d.last_seen_ts
                .and_then(|t| UInt::try_from(t).ok())
                .unwrap_or_default(),
        ));
        conn.user_agent = Some(d.last_seen_user_agent.unwrap_or_default());
        let mut session = SessionInfo::new();
        session.connections = vec![conn];
        let mut info = DeviceInfo::new();
        info.sessions = vec![session];
        devices.insert(d.device_id.to_string(), info);
    }
    let mut resp = get_user_info::v3::Response::new();
    resp.user_id = Some(user_id.to_owned());
    resp.devices = devices;
    Ok(resp)
}

/// `GET /_matrix/client/v3/admin/whois/{userId}`: yourself, or anyone if admin.
async fn client_whois(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<get_user_info::v3::Request>,
) -> Result<RumaResponse<get_user_info::v3::Response>> {
    if r.user_id != req.user_id.as_str() && !s.sessions.admin_now(&r).await? {
        return Err(MatrixError::forbidden(
            "You may only look up your own sessions",
        ));
    }
    Ok(RumaResponse(whois(&s, &req.user_id).await?))
}

/// `GET /_synapse/admin/v1/whois/{userId}`: admins only.
async fn synapse_whois(
    State(s): State<AppState>,
    _: AdminAuth,
    Ruma(req): Ruma<get_user_info::v3::Request>,
) -> Result<RumaResponse<get_user_info::v3::Response>> {
    Ok(RumaResponse(whois(&s, &req.user_id).await?))
}

#[derive(Deserialize)]
struct ResetPasswordBody {
    #[serde(default)]
    password: String,
    #[serde(default)]
    logout_devices: bool,
}

/// `POST /_dendrite/admin/resetPassword/{userID}`. With `logout_devices`, every
/// device of the user is deleted properly (tokens included).
async fn reset_password(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw_user_id): Path<String>,
    RequiredJsonBody(body): RequiredJsonBody<ResetPasswordBody>,
) -> Result<Json<Value>> {
    let user_id = s.accounts.parse_local_user_id(&raw_user_id)?;
    s.accounts.get_existing(&user_id).await?;
    admin_users::reset_password(&s, &user_id, &body.password, body.logout_devices).await?;
    tracing::info!(%user_id, logout_devices = body.logout_devices, "admin reset a password");
    Ok(Json(json!({ "password_updated": true })))
}
