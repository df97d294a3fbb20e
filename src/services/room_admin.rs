//! What operators see and set about rooms outside the event graph: the room
//! list (table `rooms`) and blocking (table `blocked_rooms`), which local
//! joins and invites obey; and which local member acts for an admin in a
//! room (`room_operator`).

use ruma::{OwnedRoomId, OwnedUserId, RoomId};

use crate::error::{MatrixError, Result};
use crate::services::Services;

/// A room as this server records it.
pub struct RoomInfo {
    pub room_id: OwnedRoomId,
    pub version: String,
    pub creator: OwnedUserId,
    pub is_public: bool,
}

/// Every room this server knows, by room id.
pub async fn all_rooms(s: &Services) -> Result<Vec<RoomInfo>> {
    Ok(s.storage
        .all_rooms()
        .await?
        .into_iter()
        .map(|r| RoomInfo {
            room_id: r.room_id,
            version: r.room_version,
            creator: r.creator,
            is_public: r.is_public,
        })
        .collect())
}

/// A room this server knows; 404 otherwise.
pub async fn room(s: &Services, room_id: &RoomId) -> Result<RoomInfo> {
    let row = s
        .storage
        .room(room_id.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Room not found"))?;
    Ok(RoomInfo {
        room_id: room_id.to_owned(),
        version: row.room_version,
        creator: row.creator,
        is_public: row.is_public,
    })
}

/// Who blocked the room, if it is blocked.
pub async fn blocked_by(s: &Services, room_id: &RoomId) -> Result<Option<OwnedUserId>> {
    Ok(s.storage.room_blocked_by(room_id.as_str()).await?)
}

/// Blocks (or unblocks) a room, known or not, in the name of the admin `by`.
pub async fn set_blocked(s: &Services, room_id: &RoomId, by: &str, block: bool) -> Result<()> {
    s.storage
        .block_room(room_id.as_str(), by, block, s.clock.now_ms())
        .await?;
    Ok(())
}

/// Rooms an admin blocked cannot be joined or invited into.
pub async fn check_not_blocked(s: &Services, room_id: &RoomId) -> Result<()> {
    if blocked_by(s, room_id).await?.is_some() {
        return Err(MatrixError::forbidden(
            "This room has been blocked on this server",
        ));
    }
    Ok(())
}

/// The local joined member with the most power who may change power levels.
pub async fn room_operator(s: &Services, room_id: &RoomId) -> Result<OwnedUserId> {
    let state = s.rooms.current_state(room_id).await?;
    let levels = s.rooms.power_levels(room_id, &state).await?;
    let mut best: Option<(
        OwnedUserId,
        ruma::events::room::power_levels::UserPowerLevel,
    )> = None;
    for user in crate::services::memberships::joined_members(s, room_id).await? {
        if !s.accounts.is_local(&user)
            || !levels.user_can_send_state(&user, "m.room.power_levels".into())
        {
            continue;
        }
        let power = levels.for_user(&user);
        if best.as_ref().is_none_or(|(_, p)| power > *p) {
            best = Some((user, power));
        }
    }
    best.map(|(u, _)| u).ok_or_else(|| {
        MatrixError::invalid_param("No local member of this room can change its power levels")
    })
}
