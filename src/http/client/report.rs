//! Reporting abuse: an event, a room or a user.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use ruma::api::client::reporting::report_user;
use ruma::api::client::room::{report_content, report_room};
use ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::{Auth, JsonBody, RumaResponse};
use crate::services::reports;

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

async fn report_event(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<EventReport>,
) -> Result<RumaResponse<report_content::v3::Response>> {
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room id: {e}")))?;
    let event_id = OwnedEventId::try_from(event_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid event id: {e}")))?;
    reports::report_event(
        &s,
        &r,
        &room_id,
        &event_id,
        body.reason.as_deref(),
        body.score,
    )
    .await?;
    Ok(RumaResponse(report_content::v3::Response::new()))
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
) -> Result<RumaResponse<report_room::v3::Response>> {
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room id: {e}")))?;
    reports::report_room(&s, &r, &room_id, &body.reason).await?;
    Ok(RumaResponse(report_room::v3::Response::new()))
}

async fn report_a_user(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<RumaResponse<report_user::v3::Response>> {
    let user = ruma::UserId::parse(&user_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid user id: {e}")))?;
    reports::report_user(&s, &r, &user, &body.reason).await?;
    Ok(RumaResponse(report_user::v3::Response::new()))
}
