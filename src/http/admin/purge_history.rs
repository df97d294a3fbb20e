//! Synapse's purge history API: `POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`
//! starts a tracked job that removes old non-state events of a room, and
//! `GET /_synapse/admin/v1/purge_history_status/{purgeId}` reports on it.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::admin::dendrite::parse_room_id;
use crate::http::extract::{AdminAuth, JsonBody};
use crate::services::admin;
use crate::services::jobs::{JobStatus, TaskKind};

const V1: &str = "/_synapse/admin/v1";

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(
        &format!("{V1}/purge_history/{{room_id}}"),
        post(purge_room_history),
    )
    .route(
        &format!("{V1}/purge_history/{{room_id}}/{{event_id}}"),
        post(purge_history_to_event),
    )
    .route(
        &format!("{V1}/purge_history_status/{{purge_id}}"),
        get(status),
    )
}

async fn purge_room_history(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(room): Path<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    start(&s, &room, None, body).await
}

async fn purge_history_to_event(
    State(s): State<AppState>,
    _: AdminAuth,
    Path((room, event)): Path<(String, String)>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    start(&s, &room, Some(event), body).await
}

/// Body: `delete_local_events` (bool, default false), and the point to purge
/// up to unless the path names an event: `purge_up_to_event_id` or
/// `purge_up_to_ts` (ms). Answers `{"purge_id"}` at once.
async fn start(
    s: &AppState,
    room: &str,
    path_event: Option<String>,
    body: Map<String, Value>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(room)?;
    let delete_local = match body.get("delete_local_events") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(MatrixError::bad_json(
                "Parameter 'delete_local_events' must be a boolean",
            ));
        }
    };
    let event = match (path_event, body.get("purge_up_to_event_id")) {
        (Some(e), _) => Some(e),
        (None, None | Some(Value::Null)) => None,
        (None, Some(Value::String(e))) => Some(e.clone()),
        (None, Some(_)) => {
            return Err(MatrixError::invalid_param(
                "purge_up_to_event_id must be a string",
            ));
        }
    };
    if let Some(e) = &event
        && ruma::EventId::parse(e).is_err()
    {
        return Err(MatrixError::invalid_param(format!(
            "Malformed event id {e:?}"
        )));
    }
    let ts = match body.get("purge_up_to_ts") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| MatrixError::invalid_param("purge_up_to_ts must be an int"))?,
        ),
    };
    let depth = admin::purge_history_point(s, &room_id, event.as_deref(), ts).await?;
    let id = admin::start_purge_history(s, room_id, depth, delete_local).await?;
    Ok(Json(json!({ "purge_id": id })))
}

/// `{"status": "active"|"complete"|"failed", "error"?}`; unknown ids 404.
async fn status(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let task = s
        .jobs
        .task(&id)
        .await?
        .filter(|t| t.kind == TaskKind::PurgeHistory)
        .ok_or_else(|| MatrixError::not_found("Unknown purge id"))?;
    let status = match task.status {
        JobStatus::Scheduled | JobStatus::Active => "active",
        JobStatus::Complete => "complete",
        JobStatus::Failed => "failed",
    };
    let mut body = json!({ "status": status });
    if let Some(e) = task.error {
        body["error"] = json!(e);
    }
    Ok(Json(body))
}
