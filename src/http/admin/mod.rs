//! Admin APIs: Dendrite's (`/_dendrite/admin/...`) and Synapse's
//! (`/_synapse/admin/...`), both thin fronts over the same services.

pub(crate) mod dendrite;
mod jobs;
mod notices;
mod purge_history;
mod registration_tokens;
mod reports;
mod shared_secret;
mod synapse_media;
mod synapse_rooms;
mod synapse_users;
mod users;

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;

pub fn routes(state: &AppState) -> Router<AppState> {
    let mut r = Router::new().route("/_synapse/admin/v1/server_version", get(server_version));
    // Shared-secret registration exists only when a secret is configured.
    if state.shared_secret.is_some() {
        r = shared_secret::routes(r);
    }
    let r = users::routes(r);
    let r = dendrite::routes(r);
    let r = synapse_users::routes(r);
    let r = synapse_rooms::routes(r);
    let r = synapse_media::routes(r);
    let r = reports::routes(r);
    let r = notices::routes(r);
    let r = purge_history::routes(r);
    let r = jobs::routes(r);
    registration_tokens::routes(r)
}

/// `GET /_synapse/admin/v1/server_version`: no auth, as admin UIs call it
/// before anyone has logged in.
async fn server_version() -> Json<Value> {
    Json(json!({ "server_version": concat!("Myelin ", env!("CARGO_PKG_VERSION")) }))
}

/// A non-negative integer query parameter (`from`, `limit`, ...); anything
/// else is 400 `M_INVALID_PARAM`.
pub(crate) fn query_count(v: Option<&str>, name: &str, default: i64) -> crate::error::Result<i64> {
    match v {
        None => Ok(default),
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            crate::error::MatrixError::invalid_param(format!(
                "{name} must be a non-negative integer"
            ))
        }),
    }
}

/// A `true`/`false` query parameter; absent is `None`.
pub(crate) fn query_bool(v: Option<&str>, name: &str) -> crate::error::Result<Option<bool>> {
    match v {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(crate::error::MatrixError::invalid_param(format!(
            "{name} must be true or false"
        ))),
    }
}
