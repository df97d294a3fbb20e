//! `/login` and `/logout`.

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use ruma::api::client::session::{get_login_types, login, logout, logout_all};
use ruma::api::client::uiaa::UserIdentifier;

use crate::error::{MatrixError, Result};
use crate::http::extract::{ClientInfo, GuestAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_login_types::v3::Request, _, _>(r, login_types);
    let r = ruma_route::<login::v3::Request, _, _>(
        r,
        login.layer(middleware::from_fn(require_login_type)),
    );
    let r = ruma_route::<logout::v3::Request, _, _>(r, logout);
    ruma_route::<logout_all::v3::Request, _, _>(r, logout_all)
}

/// ruma's login body parser assumes a `type` field; reject bodies without one
/// as bad input before it runs.
async fn require_login_type(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return MatrixError::too_large("Login body too large").into_response();
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Err(e) => {
            return MatrixError::not_json(format!("Body is not valid JSON: {e}")).into_response();
        }
        Ok(v) if !v.get("type").is_some_and(|t| t.is_string()) => {
            return MatrixError::bad_json("Missing login type").into_response();
        }
        Ok(_) => {}
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

async fn login_types(
    _: Ruma<get_login_types::v3::Request>,
) -> RumaResponse<get_login_types::v3::Response> {
    RumaResponse(get_login_types::v3::Response::new(vec![
        get_login_types::v3::LoginType::Password(get_login_types::v3::PasswordLoginType::new()),
    ]))
}

/// Applies the per-IP limit on login and registration attempts.
pub(super) fn check_login_rate(s: &AppState, client: &ClientInfo) -> Result<()> {
    if let Some(limiter) = &s.login_limiter {
        limiter
            .check(&client.ip)
            .map_err(MatrixError::limit_exceeded)?;
    }
    Ok(())
}

#[allow(deprecated)] // the legacy `user` field is still sent by older clients and tools
async fn login(
    State(s): State<AppState>,
    client: ClientInfo,
    Ruma(req): Ruma<login::v3::Request>,
) -> Result<RumaResponse<login::v3::Response>> {
    check_login_rate(&s, &client)?;
    let login::v3::LoginInfo::Password(p) = &req.login_info else {
        return Err(MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            format!("Unknown login type {}", req.login_info.login_type()),
        ));
    };
    let user = match (&p.identifier, &p.user) {
        (Some(UserIdentifier::Matrix(m)), _) => m.user.clone(),
        (None, Some(user)) => user.clone(),
        (Some(_), _) => {
            return Err(MatrixError::forbidden(
                "Only m.id.user identifiers are supported",
            ));
        }
        (None, None) => return Err(MatrixError::bad_json("Missing identifier")),
    };
    let user_id = s.accounts.resolve_login_user(&user)?;
    let account = s.accounts.check_password(&user_id, &p.password).await?;
    if account.locked {
        return Err(MatrixError::new(
            http::StatusCode::UNAUTHORIZED,
            ruma::api::error::ErrorKind::UserLocked,
            "User account has been locked",
        ));
    }
    let session = s
        .sessions
        .create(
            user_id.as_str(),
            req.device_id.as_ref().map(|d| d.as_str()),
            req.initial_device_display_name.as_deref(),
        )
        .await?;
    let mut resp =
        login::v3::Response::new(user_id, session.access_token, session.device_id.into());
    resp.home_server = Some(s.server_name.clone());
    Ok(RumaResponse(resp))
}

async fn logout(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    _: Ruma<logout::v3::Request>,
) -> Result<RumaResponse<logout::v3::Response>> {
    s.sessions
        .delete_devices(&r.user_id, std::slice::from_ref(&r.device_id))
        .await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

async fn logout_all(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    _: Ruma<logout_all::v3::Request>,
) -> Result<RumaResponse<logout_all::v3::Response>> {
    s.sessions.delete_all_devices(&r.user_id, None).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}
