//! Admin APIs: Dendrite's (`/_dendrite/admin/...`) and Synapse's
//! (`/_synapse/admin/...`), both thin fronts over the same services.

pub(crate) mod dendrite;
mod notices;
mod registration_tokens;
mod reports;
mod shared_secret;
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
    let r = reports::routes(r);
    let r = notices::routes(r);
    registration_tokens::routes(r)
}

/// `GET /_synapse/admin/v1/server_version`: no auth, as admin UIs call it
/// before anyone has logged in.
async fn server_version() -> Json<Value> {
    Json(json!({ "server_version": concat!("Myelin ", env!("CARGO_PKG_VERSION")) }))
}
