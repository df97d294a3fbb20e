//! Synapse's event report admin API: list, read (with the event's PDU),
//! delete.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::AdminAuth;
use crate::services::reports::{self, ReportFilter};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/_synapse/admin/v1/event_reports", get(list))
        .route(
            "/_synapse/admin/v1/event_reports/{report_id}",
            get(fetch).delete(remove),
        )
}

/// Query parameters; unknown ones (ketesa sends `order_by`) are ignored.
#[derive(Deserialize)]
struct ListQuery {
    from: Option<String>,
    limit: Option<String>,
    dir: Option<String>,
    user_id: Option<String>,
    room_id: Option<String>,
    event_sender_user_id: Option<String>,
}

async fn list(
    State(s): State<AppState>,
    _: AdminAuth,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    let from = super::query_count(q.from.as_deref(), "from", 0)?;
    let limit = super::query_count(q.limit.as_deref(), "limit", 100)?;
    let forwards = match q.dir.as_deref() {
        None | Some("b") => false,
        Some("f") => true,
        Some(_) => return Err(MatrixError::invalid_param("dir must be f or b")),
    };
    let filter = ReportFilter {
        user_id: q.user_id,
        room_id: q.room_id,
        event_sender_user_id: q.event_sender_user_id,
    };
    Ok(Json(
        reports::list(&s, filter, from, limit, forwards).await?,
    ))
}

fn report_id(raw: &str) -> Result<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| MatrixError::invalid_param("The report id must be a non-negative integer"))
}

async fn fetch(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(reports::get(&s, report_id(&raw)?).await?))
}

async fn remove(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    reports::delete(&s, report_id(&raw)?).await?;
    Ok(Json(serde_json::json!({})))
}
