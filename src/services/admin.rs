//! Operator actions behind both admin front ends (Dendrite's and Synapse's
//! routes, and the CLI through them): evacuating rooms and users, abuse
//! reports.

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::services::Services;
use crate::storage::reports::{EventReportRow, ReportFilter};

/// Makes every joined local user leave the room (one leave event each,
/// appended in turn). Returns who left.
pub async fn evacuate_room(s: &Services, room_id: &RoomId) -> Result<Vec<String>> {
    s.rooms.known_version(room_id).await?;
    let mut affected = Vec::new();
    for member in s.storage.room_members(room_id.as_str(), "join").await? {
        let user = UserId::parse(&member).map_err(MatrixError::internal)?;
        if !s.accounts.is_local(&user) {
            continue;
        }
        s.rooms.leave(room_id, &user, &user, None).await?;
        affected.push(member);
    }
    tracing::info!(%room_id, count = affected.len(), "evacuated room");
    Ok(affected)
}

/// Makes the user leave every joined room and reject every invite (server
/// notice invites included: an admin may). Returns the rooms affected.
pub async fn evacuate_user(s: &Services, user: &UserId) -> Result<Vec<String>> {
    let mut affected = Vec::new();
    let mut rooms = s.storage.rooms_for_user(user.as_str()).await?;
    // Joined rooms first, then invites, as Dendrite.
    rooms.sort_by_key(|(_, m, pos)| (m != "join", *pos));
    for (room, membership, _) in rooms {
        if !matches!(membership.as_str(), "join" | "invite" | "knock") {
            continue;
        }
        let room_id = OwnedRoomId::try_from(room.as_str()).map_err(MatrixError::internal)?;
        s.rooms.leave(&room_id, user, user, None).await?;
        affected.push(room);
    }
    tracing::info!(%user, count = affected.len(), "evacuated user");
    Ok(affected)
}

/// A report as Synapse's admin API shows it, with the room's current name
/// and canonical alias (null when unset).
pub async fn report_json(s: &Services, r: &EventReportRow) -> Result<Value> {
    let (mut name, mut alias) = (Value::Null, Value::Null);
    if let Ok(room_id) = OwnedRoomId::try_from(r.room_id.as_str())
        && s.rooms.version(&room_id).await?.is_some()
    {
        let state = s.rooms.current_state(&room_id).await?;
        if let Some(c) = s.rooms.state_content(&state, "m.room.name", "").await? {
            name = c.get("name").cloned().unwrap_or(Value::Null);
        }
        if let Some(c) = s
            .rooms
            .state_content(&state, "m.room.canonical_alias", "")
            .await?
        {
            alias = c.get("alias").cloned().unwrap_or(Value::Null);
        }
    }
    Ok(json!({
        "id": r.id,
        "received_ts": r.received_ts,
        "room_id": r.room_id,
        "event_id": r.event_id,
        "user_id": r.reporter,
        "sender": r.event_sender,
        "reason": r.reason,
        "score": r.score,
        "name": name,
        "canonical_alias": alias,
    }))
}

pub async fn list_reports(
    s: &Services,
    filter: &ReportFilter,
    from: i64,
    limit: i64,
    forwards: bool,
) -> Result<Value> {
    let (rows, total) = s
        .storage
        .event_reports(filter, from, limit, forwards)
        .await?;
    let mut reports = Vec::with_capacity(rows.len());
    for r in &rows {
        reports.push(report_json(s, r).await?);
    }
    let mut body = json!({ "event_reports": reports, "total": total });
    if from + (rows.len() as i64) < total {
        body["next_token"] = json!(from + rows.len() as i64);
    }
    Ok(body)
}

/// Deactivates an account as Synapse's admin API does: leaves every room and
/// rejects invites, deletes devices and tokens, clears the password, and
/// with `erase` also the profile (marking the account erased).
pub async fn deactivate_user(s: &Services, user: &UserId, erase: bool) -> Result<()> {
    evacuate_user(s, user).await?;
    s.accounts.deactivate(user).await?;
    s.sessions.delete_all_devices(user.as_str(), None).await?;
    if erase {
        s.profiles.set_displayname(user, None).await?;
        s.profiles.set_avatar_url(user, None).await?;
        s.storage
            .set_account_flag(
                user.as_str(),
                crate::storage::admin_users::AccountFlag::Erased,
                true,
            )
            .await?;
    }
    tracing::info!(%user, erase, "deactivated account");
    Ok(())
}
