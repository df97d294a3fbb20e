//! Dendrite's room and user operations: `evacuateRoom`, `evacuateUser`
//! (`resetPassword` is in `users.rs`).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use ruma::OwnedRoomId;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::AdminAuth;
use crate::services::admin;
use crate::services::jobs::{Work, start_task};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(
        "/_dendrite/admin/evacuateRoom/{room_id}",
        post(evacuate_room),
    )
    .route("/_dendrite/admin/purgeRoom/{room_id}", post(purge_room))
    .route(
        "/_dendrite/admin/fulltext/reindex",
        get(reindex).post(reindex),
    )
    .route(
        "/_dendrite/admin/evacuateUser/{user_id}",
        post(evacuate_user),
    )
    .route(
        "/_dendrite/admin/refreshDevices/{user_id}",
        post(refresh_devices),
    )
}

/// How long `refreshDevices` waits for the user's server.
const REFRESH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// `POST /_dendrite/admin/refreshDevices/{userID}`: a remote user's devices
/// fetched from their server now (also for a user never seen before, which
/// Dendrite skips) and stored; answers `{"device_ids": [...]}` when done.
/// A local user is 400 `M_INVALID_PARAM`; a server that fails or does not
/// answer within 15 s is 502 or 504.
async fn refresh_devices(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = ruma::OwnedUserId::try_from(raw.as_str())
        .map_err(|e| MatrixError::invalid_param(format!("Invalid user id {raw:?}: {e}")))?;
    if s.accounts.is_local(&user) {
        return Err(MatrixError::invalid_param(
            "Can not mark local device list as stale",
        ));
    }
    match tokio::time::timeout(REFRESH_TIMEOUT, s.e2e_keys.refresh_remote_devices(&user)).await {
        Ok(ids) => Ok(Json(json!({ "device_ids": ids? }))),
        Err(_) => Err(MatrixError::unknown(
            http::StatusCode::GATEWAY_TIMEOUT,
            "Timed out fetching the devices",
        )),
    }
}

pub(crate) fn parse_room_id(raw: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(raw)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room id {raw:?}: {e}")))
}

async fn evacuate_room(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&raw)?;
    Ok(Json(
        json!({ "affected": admin::evacuate_room(&s, &room_id).await? }),
    ))
}

async fn evacuate_user(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = s.accounts.parse_local_user_id(&raw)?;
    s.accounts.get_existing(&user).await?;
    Ok(Json(
        json!({ "affected": admin::evacuate_user(&s, &user).await? }),
    ))
}

/// `POST /_dendrite/admin/purgeRoom/{roomID}`: evacuates and purges the room
/// as a tracked job (status at `/_synapse/admin/v2/rooms/{roomId}/delete_status`);
/// answers `{}` at once, as Dendrite.
async fn purge_room(
    State(s): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&raw)?;
    s.rooms.known_version(&room_id).await?;
    admin::start_room_delete(
        &s,
        room_id,
        admin::DeleteRoom {
            block: false,
            purge: true,
            new_room_user_id: None,
            room_name: None,
            message: None,
            requester: me.user_id.clone(),
        },
    )
    .await?;
    Ok(Json(json!({})))
}

/// `GET|POST /_dendrite/admin/fulltext/reindex`: rebuilds the search index
/// from the events table as a tracked job; answers at once with the job's id
/// (`{"job_id"}`; Dendrite answers `{}`), whose progress is at
/// `/_myelin/admin/v1/jobs/{jobId}`. A rebuild already running is not started
/// twice: its id is returned. Progress and the final `Indexed N events in T`
/// also go to the log.
async fn reindex(State(s): State<AppState>, _: AdminAuth) -> Result<Json<Value>> {
    if s.search.is_none() {
        return Err(MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            "Full-text search is disabled (search.enabled is false)",
        ));
    }
    let id = start_task(&s, Work::Reindex)
        .await?
        .unwrap_or_else(|running| running);
    Ok(Json(json!({ "job_id": id })))
}
