//! `GET/POST /_synapse/admin/v1/register`: shared-secret registration,
//! byte-compatible with Synapse (4-field MAC, or 5 with `user_type`).

use axum::extract::{FromRequest, Request, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::{ClientInfo, JsonBody};
use crate::model::accounts::AccountType;
use crate::services::accounts::Registration;
use crate::services::passwords;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/_synapse/admin/v1/register", get(nonce).post(register))
}

fn secret(s: &AppState) -> Result<&crate::services::shared_secret::SharedSecret> {
    s.shared_secret
        .as_ref()
        .ok_or_else(|| MatrixError::unrecognized(http::StatusCode::NOT_FOUND))
}

/// Needs no authentication, so it is limited per IP like login (in its own
/// bucket), and the outstanding nonces are bounded.
async fn nonce(State(s): State<AppState>, client: ClientInfo) -> Result<Json<Value>> {
    let secret = secret(&s)?;
    if let Some(limiter) = &s.login_limiter {
        limiter
            .check(&format!("nonce:{}", client.ip))
            .map_err(MatrixError::limit_exceeded)?;
    }
    Ok(Json(json!({ "nonce": secret.new_nonce() })))
}

#[derive(Deserialize)]
struct RegisterBody {
    nonce: String,
    username: String,
    password: String,
    mac: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    user_type: Option<String>,
}

async fn register(State(s): State<AppState>, req: Request) -> Result<Json<Value>> {
    // Disabled: answered before the body is read.
    let shared = secret(&s)?;
    let JsonBody(body) = JsonBody::<RegisterBody>::from_request(req, &s).await?;
    if !shared.consume_nonce(&body.nonce) {
        return Err(MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            "unrecognised nonce",
        ));
    }
    if body.username.contains('\0') || body.password.contains('\0') {
        return Err(MatrixError::invalid_param(
            "username and password must not contain NUL",
        ));
    }
    if !shared.verify_mac(
        &body.mac,
        &body.nonce,
        &body.username,
        &body.password,
        body.admin,
        body.user_type.as_deref(),
    ) {
        return Err(MatrixError::forbidden("HMAC incorrect"));
    }
    if let Some(t) = body.user_type.as_deref()
        && !matches!(t, "bot" | "support")
    {
        return Err(MatrixError::invalid_param("Invalid user type"));
    }
    let localpart = s.accounts.validate_localpart(&body.username)?;
    passwords::validate(&body.password)?;
    let displayname = body
        .displayname
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| body.username.clone());
    let user_id = s
        .accounts
        .register(Registration {
            localpart: Some(&localpart),
            password: Some(&body.password),
            account_type: if body.admin {
                AccountType::Admin
            } else {
                AccountType::User
            },
            displayname: Some(&displayname),
            user_type: body.user_type.as_deref(),
            registration_token: None,
            appservice_id: None,
        })
        .await?;
    let session = s
        .sessions
        .create(user_id.as_str(), None, Some(&localpart))
        .await?;
    tracing::info!(%user_id, admin = body.admin, "registered an account with the shared secret");
    Ok(Json(json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": s.server_name,
    })))
}
