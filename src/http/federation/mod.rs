//! The Server-Server API: the server's keys and the notary API
//! (`keys.rs`), `/.well-known/matrix/server`, `/version` and
//! `/openid/userinfo` (no signature needed), and the queries other
//! servers make of local users and aliases (`query.rs`), each behind the
//! `X-Matrix` check of [`auth::Federated`].

mod auth;
mod keys;
mod query;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use ruma::api::federation::discovery::get_server_version;
use serde_json::{Value, json};

use super::extract::RumaResponse;
use super::{AppState, ruma_route};
use crate::error::{MatrixError, Result};

pub use auth::Federated;

pub fn routes() -> Router<AppState> {
    let router = Router::new()
        .route("/_matrix/key/v2/server", get(keys::server_keys))
        .route("/.well-known/matrix/server", get(well_known_server))
        .route(
            "/_matrix/federation/v1/openid/userinfo",
            get(openid_userinfo),
        );
    let router = ruma_route::<get_server_version::v1::Request, _, _>(router, version);
    let router = keys::routes(router);
    query::routes(router)
}

/// `{"server": {"name": "Myelin", "version"}}`; no signature needed.
async fn version() -> RumaResponse<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Myelin".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut resp = get_server_version::v1::Response::new();
    resp.server = Some(server);
    RumaResponse(resp)
}

/// `{"m.server": ...}` from `federation.well_known_server`; 404 without.
async fn well_known_server(State(s): State<AppState>) -> Result<Json<Value>> {
    match &s.config.federation.well_known_server {
        Some(server) => Ok(Json(json!({ "m.server": server }))),
        None => Err(MatrixError::not_found(".well-known not available")),
    }
}

#[derive(serde::Deserialize)]
struct UserInfoQuery {
    access_token: Option<String>,
}

/// Who an OpenID token (`POST /user/{userId}/openid/request_token`) was
/// issued to: `{"sub": userId}`; 401 `M_MISSING_TOKEN` without one,
/// `M_UNKNOWN_TOKEN` for an unknown or expired one. No server signature
/// is asked for, as in the spec.
async fn openid_userinfo(
    State(s): State<AppState>,
    query: Result<axum::extract::Query<UserInfoQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let token = query
        .ok()
        .and_then(|q| q.0.access_token)
        .ok_or_else(|| MatrixError::missing_token("Access Token required"))?;
    match s.openid.user_for(&token).await? {
        Some(user_id) => Ok(Json(json!({ "sub": user_id }))),
        None => Err(MatrixError::new(
            http::StatusCode::UNAUTHORIZED,
            ruma::api::error::ErrorKind::UnknownToken(
                ruma::api::error::UnknownTokenErrorData::new(),
            ),
            "Access Token unknown or expired",
        )),
    }
}
