//! Server notices: Synapse's `send_server_notice` (POST, and PUT with a
//! transaction id) and Myelin's broadcast to every local user.

use axum::extract::{Path, State};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::{AdminAuth, JsonBody};
use crate::services::notices::{self, Notice};
use crate::services::rooms::TxnRef;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/_synapse/admin/v1/send_server_notice", post(send))
        .route(
            "/_synapse/admin/v1/send_server_notice/{txn_id}",
            put(send_txn),
        )
        .route("/_myelin/admin/v1/broadcast_server_notice", post(broadcast))
}

#[derive(Deserialize)]
struct NoticeBody {
    user_id: String,
    content: Value,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    state_key: Option<String>,
}

fn notice<'a>(
    kind: &'a Option<String>,
    state_key: &'a Option<String>,
    content: &Value,
    txn: Option<TxnRef<'a>>,
) -> Result<Notice<'a>> {
    if !content.is_object() {
        return Err(MatrixError::bad_json("content must be a JSON object"));
    }
    Ok(Notice {
        kind: kind.as_deref().unwrap_or("m.room.message"),
        state_key: state_key.as_deref(),
        content: content.clone(),
        txn,
    })
}

async fn do_send(s: &AppState, body: &NoticeBody, txn: Option<TxnRef<'_>>) -> Result<Json<Value>> {
    let target = ruma::UserId::parse(&body.user_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid user id: {e}")))?;
    let pdu = notices::send(
        s,
        &target,
        notice(&body.kind, &body.state_key, &body.content, txn)?,
    )
    .await?;
    Ok(Json(json!({ "event_id": pdu.event_id })))
}

fn enabled(s: &AppState) -> Result<()> {
    if !s.config.server_notices.enabled {
        return Err(MatrixError::unrecognized(http::StatusCode::NOT_FOUND));
    }
    Ok(())
}

async fn send(
    State(s): State<AppState>,
    _: AdminAuth,
    JsonBody(body): JsonBody<NoticeBody>,
) -> Result<Json<Value>> {
    enabled(&s)?;
    do_send(&s, &body, None).await
}

async fn send_txn(
    State(s): State<AppState>,
    AdminAuth(r): AdminAuth,
    Path(txn_id): Path<String>,
    JsonBody(body): JsonBody<NoticeBody>,
) -> Result<Json<Value>> {
    enabled(&s)?;
    // Scoped to the admin's device and this endpoint; the notices user
    // sends the event.
    let device = format!("{}/{}", r.user_id, r.device_id);
    let txn = TxnRef {
        device: &device,
        scope: "send_server_notice",
        txn: &txn_id,
    };
    do_send(&s, &body, Some(txn)).await
}

#[derive(Deserialize)]
struct BroadcastBody {
    content: Value,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Sends the notice to every active local user; returns how many got it and
/// who could not.
async fn broadcast(
    State(s): State<AppState>,
    _: AdminAuth,
    JsonBody(body): JsonBody<BroadcastBody>,
) -> Result<Json<Value>> {
    enabled(&s)?;
    let out = notices::broadcast(&s, || notice(&body.kind, &None, &body.content, None)).await?;
    Ok(Json(json!({ "sent": out.sent, "failed": out.failed })))
}
