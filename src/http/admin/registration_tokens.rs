//! Registration tokens, in Synapse's admin API shape:
//! `/_synapse/admin/v1/registration_tokens[/new|/{token}]`.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::{AdminAuth, JsonBody};

const BASE: &str = "/_synapse/admin/v1/registration_tokens";

/// Dendrite's paths for the same operations (updates are PUTs there, as in
/// Dendrite's router; POST is kept as an alias).
const DENDRITE: &str = "/_dendrite/admin/registrationTokens";

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = r
        .route(DENDRITE, get(list))
        .route(&format!("{DENDRITE}/new"), post(create))
        .route(
            &format!("{DENDRITE}/{{token}}"),
            get(fetch).put(update).post(update).delete(delete),
        );
    r.route(BASE, get(list))
        .route(&format!("{BASE}/new"), post(create))
        .route(
            &format!("{BASE}/{{token}}"),
            get(fetch).put(update).delete(delete),
        )
}

#[derive(Deserialize)]
struct ListQuery {
    valid: Option<String>,
}

async fn list(
    State(s): State<AppState>,
    _: AdminAuth,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    let valid = match q.valid.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(MatrixError::invalid_param("valid must be true or false")),
    };
    let tokens = s.registration_tokens.list(valid).await?;
    Ok(Json(json!({ "registration_tokens": tokens })))
}

/// Reads an optional integer-or-null field: absent is `None`, null is `Some(None)`.
fn int_field(body: &Map<String, Value>, key: &str) -> Result<Option<Option<i64>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_i64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| MatrixError::invalid_param(format!("{key} must be an integer or null"))),
    }
}

async fn create(
    State(s): State<AppState>,
    _: AdminAuth,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    let token = match body.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(MatrixError::invalid_param("token must be a string")),
    };
    let length = int_field(&body, "length")?.flatten();
    let uses_allowed = int_field(&body, "uses_allowed")?.flatten();
    let expiry_time = int_field(&body, "expiry_time")?.flatten();
    let row = s
        .registration_tokens
        .create(token, length, uses_allowed, expiry_time)
        .await?;
    Ok(Json(json!(row)))
}

async fn fetch(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(token): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(json!(s.registration_tokens.get(&token).await?)))
}

async fn update(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(token): Path<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    let uses_allowed = int_field(&body, "uses_allowed")?;
    let expiry_time = int_field(&body, "expiry_time")?;
    Ok(Json(json!(
        s.registration_tokens
            .update(&token, uses_allowed, expiry_time)
            .await?
    )))
}

async fn delete(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(token): Path<String>,
) -> Result<Json<Value>> {
    s.registration_tokens.delete(&token).await?;
    Ok(Json(json!({})))
}
