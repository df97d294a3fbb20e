//! Reporting abuse: an event, a room or a user.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::{Auth, JsonBody};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    // Hand-parsed: ruma's type dropped `score`, which Synapse's and Dendrite's
    // admin APIs still report.
    let r = r.route(
        "/_matrix/client/v3/rooms/{room_id}/report/{event_id}",
        post(report_event),
    );
    // Paths as ruma declares them; bodies parsed here so a missing reason is an error.
    let r = r.route(
        "/_matrix/client/v3/rooms/{room_id}/report",
        post(report_a_room),
    );
    r.route(
        "/_matrix/client/v3/users/{user_id}/report",
        post(report_a_user),
    )
}

#[derive(Deserialize)]
struct EventReport {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    score: Option<i64>,
}

/// The reporter must be joined and the event must be in the room; anything
/// else is the same 404, so a report cannot probe for events.
async fn report_event(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<EventReport>,
) -> Result<Json<Value>> {
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room id: {e}")))?;
    let event_id = OwnedEventId::try_from(event_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid event id: {e}")))?;
    if body.score.is_some_and(|sc| !(-100..=0).contains(&sc)) {
        return Err(MatrixError::invalid_param(
            "score must be between -100 and 0",
        ));
    }
    let not_found =
        || MatrixError::not_found("The event was not found or you are not joined to the room");
    if s.rooms.membership(&room_id, &r.user_id()).await?.as_deref() != Some("join") {
        return Err(not_found());
    }
    let pdu = s
        .rooms
        .pdu(event_id.as_str())
        .await?
        .filter(|p| p.room_id == room_id)
        .ok_or_else(not_found)?;
    s.storage
        .insert_event_report(
            room_id.as_str(),
            event_id.as_str(),
            &r.user_id,
            pdu.sender.as_str(),
            body.reason.as_deref(),
            body.score,
        )
        .await?;
    tracing::info!(%room_id, %event_id, reporter = %r.user_id, "event reported");
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReasonBody {
    reason: String,
}

/// `reason` is required (spec v1.13/v1.14); ruma's type would default it.
async fn report_a_room(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room id: {e}")))?;
    s.rooms.known_version(&room_id).await?;
    s.storage
        .insert_room_report(room_id.as_str(), &r.user_id, Some(&body.reason))
        .await?;
    Ok(Json(json!({})))
}

async fn report_a_user(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let user = ruma::UserId::parse(&user_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid user id: {e}")))?;
    if s.accounts.is_local(&user) && s.accounts.get(&user).await?.is_none() {
        return Err(MatrixError::not_found("Unknown user"));
    }
    s.storage
        .insert_user_report(user.as_str(), &r.user_id, Some(&body.reason))
        .await?;
    Ok(Json(json!({})))
}
