//! `POST /rooms/{roomId}/upgrade`: replace a room with one of another
//! version (rules in `services::room_upgrade`).

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use ruma::api::client::room::upgrade_room;
use ruma::api::error::ErrorKind;
use ruma::{OwnedRoomId, RoomVersionId};
use serde::Deserialize;

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::{Auth, JsonBody, RumaResponse};
use crate::services::room_upgrade;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    // The body is parsed here: a version that is no room version id at all
    // is an unsupported version (400 `M_UNSUPPORTED_ROOM_VERSION`, as
    // Synapse), where ruma's type would call the body malformed.
    r.route("/_matrix/client/v3/rooms/{room_id}/upgrade", post(upgrade))
}

#[derive(Deserialize)]
struct UpgradeBody {
    new_version: String,
}

async fn upgrade(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<UpgradeBody>,
) -> Result<RumaResponse<upgrade_room::v3::Response>> {
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room id: {e}")))?;
    let version = RoomVersionId::try_from(body.new_version.as_str()).map_err(|_| {
        MatrixError::new(
            http::StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedRoomVersion,
            format!("Room version {:?} is not supported", body.new_version),
        )
    })?;
    let new_room = room_upgrade::upgrade_room(&s, &r, &room_id, version).await?;
    Ok(RumaResponse(upgrade_room::v3::Response::new(new_room)))
}
