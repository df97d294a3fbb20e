//! The Server-Server API. So far the server's published signing keys
//! (`GET /_matrix/key/v2/server`), which admin tools such as synadm also use
//! to learn the server name, and `GET /_matrix/federation/v1/openid/userinfo`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::CanonicalJsonValue;
use serde_json::{Value, json};

use super::AppState;
use crate::error::{MatrixError, Result};

/// How long others may cache the keys.
const KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        .route(
            "/_matrix/federation/v1/openid/userinfo",
            get(openid_userinfo),
        )
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

/// `{"server_name", "verify_keys": {"ed25519:<v>": {"key"}}, "old_verify_keys",
/// "valid_until_ts", "signatures"}`, signed with the key it lists.
async fn server_keys(State(s): State<AppState>) -> Result<Json<Value>> {
    let key = &s.signing_key;
    let public = STANDARD_NO_PAD.encode(key.key_pair.public_key());
    let body = json!({
        "server_name": s.server_name,
        "verify_keys": { key.key_id(): { "key": public } },
        "old_verify_keys": {},
        "valid_until_ts": s.clock.now_ms() + KEY_VALIDITY_MS,
    });
    let CanonicalJsonValue::Object(mut obj) =
        CanonicalJsonValue::try_from(body).map_err(MatrixError::internal)?
    else {
        return Err(MatrixError::internal("key response is not an object"));
    };
    ruma::signatures::sign_json(s.server_name.as_str(), &key.key_pair, &mut obj)
        .map_err(MatrixError::internal)?;
    Ok(Json(
        serde_json::to_value(obj).map_err(MatrixError::internal)?,
    ))
}
