//! Pushers and notifications: `GET /pushers`, `POST /pushers/set`,
//! `GET /notifications` (`services::pushers`).
//!
//! `/pushers/set`'s body is read here as JSON rather than by ruma's type,
//! so that a missing field is 400 `M_MISSING_PARAM` and `kind: null`
//! deletes, as Synapse answers.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use ruma::api::client::push::{get_notifications, get_pushers};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, JsonBody, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::services::pushers;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_pushers::v3::Request, _, _>(r, list);
    let r = ruma_route::<get_notifications::v3::Request, _, _>(r, notifications);
    r.route("/_matrix/client/v3/pushers/set", post(set))
}

async fn list(
    State(s): State<AppState>,
    Auth(r): Auth,
    _: Ruma<get_pushers::v3::Request>,
) -> Result<RumaResponse<get_pushers::v3::Response>> {
    let list = pushers::pushers(&s, &r.user).await?;
    Ok(RumaResponse(get_pushers::v3::Response::new(list)))
}

async fn set(
    State(s): State<AppState>,
    Auth(r): Auth,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>> {
    pushers::set_pusher(&s, &r.user, &r.device_id, &body).await?;
    Ok(Json(json!({})))
}

/// ruma's response leaves out a `profile_tag` that is not set; Synapse
/// sends it as null and clients (sytest) expect the key, so it is put back.
async fn notifications(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<get_notifications::v3::Request>,
) -> Result<Json<Value>> {
    let limit = req.limit.map(u64::from);
    let response =
        pushers::notifications(&s, &r.user, req.from.as_deref(), limit, req.only.as_deref())
            .await?;
    let mut list = serde_json::to_value(&response.notifications).map_err(MatrixError::internal)?;
    if let Some(list) = list.as_array_mut() {
        for n in list.iter_mut().filter_map(Value::as_object_mut) {
            n.entry("profile_tag").or_insert(Value::Null);
        }
    }
    let mut body = json!({ "notifications": list });
    if let Some(token) = response.next_token {
        body["next_token"] = json!(token);
    }
    Ok(Json(body))
}
