//! Who is in which room, as the current state says (`current_state`'s member
//! rows), and forgetting rooms (`forgotten_rooms`).

use std::sync::Arc;

use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::error::{MatrixError, Result};
use crate::model::state::StateMap;
use crate::services::Services;

/// A user's current membership in one room.
pub struct RoomMembership {
    pub room_id: String,
    pub membership: String,
}

/// Every room where the user has a current membership (any kind).
pub async fn memberships(s: &Services, user: &UserId) -> Result<Vec<RoomMembership>> {
    Ok(s.storage
        .rooms_for_user(user.as_str())
        .await?
        .into_iter()
        .map(|m| RoomMembership {
            room_id: m.room_id.to_string(),
            membership: m.membership.to_string(),
        })
        .collect())
}

/// The rooms the user is joined to.
pub async fn joined_rooms(s: &Services, user: &UserId) -> Result<Vec<OwnedRoomId>> {
    Ok(s.storage
        .rooms_for_user(user.as_str())
        .await?
        .into_iter()
        .filter(|m| m.membership == MembershipState::Join)
        .map(|m| m.room_id)
        .collect())
}

/// The room's joined members, by user id.
pub async fn joined_members(s: &Services, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
    Ok(s.storage
        .room_members(room_id.as_str(), &MembershipState::Join)
        .await?)
}

/// The state `/members` reads: the current one, or with `at` (a sync token)
/// the state at that point if the user could see the room then (a member,
/// or the room was world-readable). 403 when the user may not read it now.
pub async fn members_state(
    s: &Services,
    user: &UserId,
    room_id: &RoomId,
    at: Option<&str>,
) -> Result<Arc<StateMap>> {
    let state = s.rooms.readable_state(room_id, user).await?;
    let Some(at) = at else {
        return Ok(state);
    };
    let pos = crate::services::rooms::timeline::inclusive_stream_position(at)
        .ok_or_else(|| MatrixError::invalid_param("Invalid `at` token"))?;
    let Some(row) = s
        .storage
        .room_event_at_stream(room_id.as_str(), pos)
        .await?
    else {
        return Ok(state);
    };
    let at_state = s.rooms.state_after(row.state_group.unwrap_or(0)).await?;
    let then = at_state.get(&("m.room.member".to_owned(), user.to_string()));
    let world = s
        .rooms
        .state_content(&at_state, "m.room.history_visibility", "")
        .await?;
    let world = world.and_then(|c| {
        c["history_visibility"]
            .as_str()
            .map(|v| v == "world_readable")
    });
    Ok(if then.is_some() || world == Some(true) {
        at_state
    } else {
        state
    })
}

/// Forgets a room the user has left (or was kicked or banned from).
pub async fn forget(s: &Services, user: &UserId, room_id: &RoomId) -> Result<()> {
    match s.rooms.membership(room_id, user).await?.as_deref() {
        Some("join" | "invite" | "knock") => {
            return Err(MatrixError::unknown(
                http::StatusCode::BAD_REQUEST,
                "Leave the room before forgetting it",
            ));
        }
        None => return Err(MatrixError::not_found("You were never in this room")),
        _ => {}
    }
    s.storage
        .forget_room(user.as_str(), room_id.as_str())
        .await?;
    Ok(())
}

/// Copies the user's profile into their member event in every room they are
/// joined to, as Synapse does after a profile change, so that rooms show the
/// new name and avatar. A room whose member event already carries it gets no
/// new event; a room where the join is refused (it failed for a reason of
/// that room's) is logged and skipped: the profile itself has changed.
pub async fn copy_profile_to_rooms(s: &Services, user: &UserId) -> Result<()> {
    let mut member = s.profiles.get(user).await?.member_content();
    crate::services::guests::mark_guest_member(s, user, &mut member).await?;
    let content = serde_json::Value::Object(member);
    for room_id in joined_rooms(s, user).await? {
        if let Err(e) = s.rooms.join(&room_id, user, content.clone(), None).await {
            tracing::warn!(%user, %room_id, error = %e.message(), "could not copy the profile into the room");
        }
    }
    Ok(())
}
