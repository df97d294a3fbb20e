//! `GET /_myelin/admin/v1/jobs/{jobId}`: the state and progress of a tracked
//! admin job (a full-text reindex, a history purge, or a room deletion).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::AdminAuth;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/_myelin/admin/v1/jobs/{job_id}", get(job))
}

/// `{"job_id", "kind", "status", "processed", "started_ts", "elapsed_ms",
/// "finished_ts"?, "room_id"?, "error"?}`. A room deletion answers in its
/// own shape with `"kind": "room_delete"` added. Unknown ids: 404.
async fn job(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    if let Some(task) = s.jobs.task(&id).await? {
        return Ok(Json(task.to_json(s.clock.now_ms())));
    }
    let room_job = s
        .jobs
        .room_job(&id)
        .await?
        .ok_or_else(|| MatrixError::not_found("Unknown job id"))?;
    let mut body = serde_json::to_value(room_job).map_err(MatrixError::internal)?;
    body["job_id"] = json!(id);
    body["kind"] = json!("room_delete");
    Ok(Json(body))
}
