//! Unread notification counts: the room's events after the user's read
//! receipt, evaluated against the user's push rules with ruma's evaluator.
//!
//! Counted at sync time over at most `MAX_COUNTED` unread events (clients show
//! "99+" long before that); `/sync` reads those events for all rooms at once.

use ruma::events::AnySyncTimelineEvent;
use ruma::push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset};
use ruma::serde::Raw;
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use serde_json::Value;

use crate::error::Result;
use crate::model::pdu::Pdu;
use crate::model::state::StateMap;
use crate::model::viewer::ViewerTxns;
use crate::services::Services;
use crate::services::pipeline::{Batch, Settled, Subscriber};

pub const MAX_COUNTED: i64 = 500;

/// Counts already made, per (user, room): a sync only evaluates the events
/// that arrived since the last one counted, as long as the read position has
/// not moved (when it moves, the room is counted afresh). Lost at restart;
/// at most `caches.unread_counts` pairs, least recently used forgotten first
/// (a forgotten pair is counted afresh).
pub struct UnreadCounts {
    counted: Mutex<lru::LruCache<(OwnedUserId, OwnedRoomId), Counted>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// The read position the counts start from.
    pub read_pos: i64,
    /// The stream position counted up to.
    pub upto: i64,
    pub notify: u64,
    pub highlight: u64,
}

impl UnreadCounts {
    pub fn new(capacity: usize) -> Self {
        Self {
            counted: Mutex::new(crate::services::expiring::bounded_lru(capacity)),
        }
    }

    /// Where to start counting the room at `to` from, and the counts so far:
    /// the earlier counts when they start at the same read position and stop
    /// at or before `to`, else nothing.
    pub fn resume(&self, user: &UserId, room: &RoomId, read_pos: i64, to: i64) -> Counted {
        let fresh = Counted {
            read_pos,
            upto: read_pos,
            notify: 0,
            highlight: 0,
        };
        match self.counted.lock().get(&(user.to_owned(), room.to_owned())) {
            Some(c) if c.read_pos == read_pos && c.upto <= to => *c,
            _ => fresh,
        }
    }

    pub fn store(&self, user: &UserId, room: &RoomId, counted: Counted) {
        self.counted
            .lock()
            .put((user.to_owned(), room.to_owned()), counted);
    }

    /// Forgets a room's counts (an event in it was redacted).
    pub fn forget_room(&self, room: &RoomId) {
        self.forget(|(_, r)| r == room);
    }

    /// Forgets a user's counts (their push rules changed).
    pub fn forget_user(&self, user: &UserId) {
        self.forget(|(u, _)| u == user);
    }

    fn forget(&self, which: impl Fn(&(OwnedUserId, OwnedRoomId)) -> bool) {
        let mut counted = self.counted.lock();
        let gone: Vec<_> = counted
            .iter()
            .filter(|(k, _)| which(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            counted.pop(&k);
        }
    }
}

/// Unread counts listen to the event pipeline: a redaction may take back a
/// counted event, so its room is counted afresh. Done on the writer task,
/// before the redaction's position completes, so no `/sync` can count
/// with the old figures after it.
impl Subscriber for UnreadCounts {
    fn committed(&self, batch: &Batch) -> Option<Settled> {
        for event in batch.events.iter() {
            if event.redacts.is_some() {
                self.forget_room(&event.pdu.room_id);
            }
        }
        None
    }
}

/// Where the user has read the room up to: the newest of their main-timeline
/// read receipts (public or private, given as event ids) and their own join.
pub async fn read_position(
    s: &Services,
    user: &UserId,
    state: &StateMap,
    receipt_events: Vec<OwnedEventId>,
) -> Result<i64> {
    let mut read_pos = 0;
    for event_id in receipt_events {
        if let Some(pdu) = s.rooms.pdu_shared(event_id.as_str()).await? {
            read_pos = read_pos.max(pdu.stream_ordering);
        }
    }
    // Your own membership join also marks the room read up to then.
    if let Some(id) = state.get(&("m.room.member".to_owned(), user.to_string()))
        && let Some(pdu) = s.rooms.pdu_shared(id.as_str()).await?
    {
        read_pos = read_pos.max(pdu.stream_ordering);
    }
    Ok(read_pos)
}

/// (notification_count, highlight_count) over `unread`: the room's events
/// after the read position sent by others (at most `MAX_COUNTED`).
pub async fn count_unread(
    s: &Services,
    user: &UserId,
    room_id: &RoomId,
    state: &StateMap,
    joined_members: u32,
    rules: &Ruleset,
    unread: Vec<Arc<Pdu>>,
) -> Result<(u64, u64)> {
    if unread.is_empty() {
        return Ok((0, 0));
    }
    let ctx = context(s, user, room_id, state, joined_members).await?;
    let (mut notify, mut highlight) = (0, 0);
    // What a history purge kept below its point is out of the timeline,
    // and out of the counts.
    let floor = s.rooms.history_floor(room_id).await?;
    let others: Vec<Arc<Pdu>> = unread
        .into_iter()
        .filter(|p| p.sender != user && p.redacted_by.is_none() && p.depth >= floor)
        .collect();
    for raw in push_forms(s, &others).await? {
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

/// Events in their client form, as the push rules see them (no
/// transaction ids).
pub async fn push_forms(s: &Services, pdus: &[Arc<Pdu>]) -> Result<Vec<Raw<AnySyncTimelineEvent>>> {
    Ok(s.rooms
        .client_events_with(pdus, &ViewerTxns::default())
        .await?
        .into_iter()
        .map(|json| Raw::from_json(json.to_raw()))
        .collect())
}

/// What the push rules' conditions look at for `user` in the room with
/// `state` and `joined` members (display name, member count, power levels).
pub async fn context(
    s: &Services,
    user: &UserId,
    room_id: &RoomId,
    state: &StateMap,
    joined: u32,
) -> Result<PushConditionRoomCtx> {
    let mut display_name = user.localpart().to_owned();
    if let Some(id) = state.get(&("m.room.member".to_owned(), user.to_string()))
        && let Some(p) = s.rooms.pdu_shared(id.as_str()).await?
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

impl crate::services::workers::CacheSizes for UnreadCounts {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("counts", self.counted.lock().len())]
    }
}
