//! Unread notification counts: the room's events after the user's read
//! receipt, evaluated against the user's push rules with ruma's evaluator.
//!
//! Counted at sync time over at most `MAX_COUNTED` unread events (clients show
//! "99+" long before that).

use ruma::events::AnySyncTimelineEvent;
use ruma::push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset};
use ruma::serde::Raw;
use ruma::{RoomId, UInt, UserId};
use serde_json::Value;

use crate::error::{MatrixError, Result};
use crate::services::Services;
use crate::services::rooms::{StateMap, row_to_pdu};

const MAX_COUNTED: i64 = 500;

/// (notification_count, highlight_count) for the user in the room up to `to`.
pub async fn unread_counts(
    s: &Services,
    user: &UserId,
    room_id: &RoomId,
    state: &StateMap,
    rules: &Ruleset,
    to: i64,
) -> Result<(u64, u64)> {
    let mut read_pos = 0;
    for ty in ["m.read", "m.read.private"] {
        for event_id in s
            .storage
            .main_receipts(room_id.as_str(), user.as_str(), ty)
            .await?
        {
            if let Some(pdu) = s.rooms.pdu(&event_id).await? {
                read_pos = read_pos.max(pdu.stream_ordering);
            }
        }
    }
    // Your own membership join also marks the room read up to then.
    if let Some(id) = state.get(&("m.room.member".to_owned(), user.to_string()))
        && let Some(pdu) = s.rooms.pdu(id.as_str()).await?
    {
        read_pos = read_pos.max(pdu.stream_ordering);
    }
    let rows = s
        .storage
        .room_events_in_stream(room_id.as_str(), read_pos, to, MAX_COUNTED)
        .await?;
    if rows.is_empty() {
        return Ok((0, 0));
    }
    let ctx = context(s, user, room_id, state).await?;
    let (mut notify, mut highlight) = (0, 0);
    for row in rows {
        let pdu = row_to_pdu(row)?;
        if pdu.sender == user || pdu.redacted_by.is_some() {
            continue;
        }
        let ev = s.rooms.client_event(&pdu, None).await?;
        let raw: Raw<AnySyncTimelineEvent> =
            Raw::from_json(serde_json::value::to_raw_value(&ev).map_err(MatrixError::internal)?);
        let actions = rules.get_actions(&raw, &ctx).await;
        if actions.iter().any(|a| a.should_notify()) {
            notify += 1;
            if actions.iter().any(|a| a.is_highlight()) {
                highlight += 1;
            }
        }
    }
    Ok((notify, highlight))
}

async fn context(
    s: &Services,
    user: &UserId,
    room_id: &RoomId,
    state: &StateMap,
) -> Result<PushConditionRoomCtx> {
    let joined = s
        .storage
        .joined_and_invited(room_id.as_str())
        .await?
        .iter()
        .filter(|(_, m)| m == "join")
        .count() as u32;
    let mut display_name = user.localpart().to_owned();
    if let Some(id) = state.get(&("m.room.member".to_owned(), user.to_string()))
        && let Some(p) = s.rooms.pdu(id.as_str()).await?
        && let Some(n) = p.content_value().get("displayname").and_then(Value::as_str)
    {
        display_name = n.to_owned();
    }
    let mut ctx = PushConditionRoomCtx::new(
        room_id.to_owned(),
        UInt::from(joined),
        user.to_owned(),
        display_name,
    );
    let levels = s.rooms.power_levels(room_id, state).await?;
    ctx.power_levels = Some(PushConditionPowerLevelsCtx::from(levels));
    Ok(ctx)
}
