//! The deprecated r0 event stream and initial sync: `GET /events`,
//! `GET /events/{eventId}`, `GET /initialSync` and `GET /rooms/{roomId}/initialSync` (r0.6.1; Synapse
//! still serves them, and sytest's fixtures call them). ruma has no types for
//! them: the query is read here, the answers are the service's structs.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use ruma::{OwnedRoomId, RoomId};
use serde::Deserialize;

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::admin::{query_bool, query_count};
use crate::http::extract::{Auth, GuestAuth};
use crate::services::legacy_sync::{
    self, EventsRequest, EventsResponse, InitialSyncRequest, InitialSyncResponse, RoomSnapshot,
    V1Event,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/_matrix/client/v3/events", get(events))
        .route("/_matrix/client/v3/events/{event_id}", get(event))
        .route("/_matrix/client/v3/initialSync", get(initial_sync))
        .route(
            "/_matrix/client/v3/rooms/{room_id}/initialSync",
            get(room_initial_sync),
        )
}

/// How long `/events` waits when the request names no timeout (as Synapse).
const DEFAULT_TIMEOUT_MS: i64 = 30_000;

/// The query of `/events`; other parameters (`access_token`) are ignored.
#[derive(Deserialize)]
struct EventsQuery {
    from: Option<String>,
    timeout: Option<String>,
    room_id: Option<String>,
    limit: Option<String>,
}

async fn events(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventsResponse>> {
    let timeout = query_count(q.timeout.as_deref(), "timeout", DEFAULT_TIMEOUT_MS)?;
    let limit = optional_count(q.limit.as_deref(), "limit")?;
    let room_id = q.room_id.as_deref().map(room_id).transpose()?;
    let req = EventsRequest {
        from: q.from,
        timeout: Duration::from_millis(timeout.unsigned_abs()),
        room_id,
        limit,
    };
    Ok(Json(legacy_sync::events(&s, &r, req).await?))
}

async fn event(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path(event_id): Path<String>,
) -> Result<Json<V1Event>> {
    Ok(Json(legacy_sync::event(&s, &r, &event_id).await?))
}

/// The query of the initial syncs.
#[derive(Deserialize)]
struct InitialSyncQuery {
    limit: Option<String>,
    archived: Option<String>,
}

async fn initial_sync(
    State(s): State<AppState>,
    Auth(r): Auth,
    Query(q): Query<InitialSyncQuery>,
) -> Result<Json<InitialSyncResponse>> {
    let req = InitialSyncRequest {
        limit: optional_count(q.limit.as_deref(), "limit")?,
        archived: query_bool(q.archived.as_deref(), "archived")?.unwrap_or(false),
    };
    Ok(Json(legacy_sync::initial_sync(&s, &r, req).await?))
}

async fn room_initial_sync(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Path(room): Path<String>,
    Query(q): Query<InitialSyncQuery>,
) -> Result<Json<RoomSnapshot>> {
    let room_id = room_id(&room)?;
    let limit = optional_count(q.limit.as_deref(), "limit")?;
    Ok(Json(
        legacy_sync::room_initial_sync(&s, &r, &room_id, limit).await?,
    ))
}

/// A non-negative integer parameter, if given (400 `M_INVALID_PARAM` for
/// anything else).
fn optional_count(v: Option<&str>, name: &str) -> Result<Option<usize>> {
    v.map(|v| query_count(Some(v), name, 0).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
        .transpose()
}

fn room_id(v: &str) -> Result<OwnedRoomId> {
    RoomId::parse(v).map_err(|_| MatrixError::invalid_param(format!("Invalid room id {v:?}")))
}
