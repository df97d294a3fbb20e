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

use std::collections::{BTreeMap, HashMap};

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
    /// A hit is a resumed count (a miss counts the room afresh).
    lookups: crate::metrics::CacheLookups,
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
            lookups: crate::metrics::CacheLookups::default(),
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
        let resumed = match self.counted.lock().get(&(user.to_owned(), room.to_owned())) {
            Some(c) if c.read_pos == read_pos && c.upto <= to => Some(*c),
            _ => None,
        };
        self.lookups.of(resumed).unwrap_or(fresh)
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

/// Where the user has read each thread of a room up to, for a sync that
/// asks for `unread_thread_notifications` (as Synapse): an unthreaded read
/// receipt (and the user's join) reads every thread and the main timeline;
/// a `main` receipt reads the main timeline, a thread's receipt its thread.
pub struct ThreadReads {
    pub unthreaded: i64,
    /// `main` or a thread root's id → the position its receipt reads to.
    threads: HashMap<String, i64>,
}

impl ThreadReads {
    fn of(&self, thread: &str) -> i64 {
        self.threads
            .get(thread)
            .copied()
            .unwrap_or(0)
            .max(self.unthreaded)
    }
}

/// The read positions of the user's receipts `(thread id or "", event id)`.
pub async fn thread_reads(
    s: &Services,
    user: &UserId,
    state: &StateMap,
    receipts: Vec<(String, OwnedEventId)>,
) -> Result<ThreadReads> {
    let (unthreaded, threaded): (Vec<_>, Vec<_>) = receipts
        .into_iter()
        .partition(|(thread, _)| thread.is_empty());
    let unthreaded = read_position(
        s,
        user,
        state,
        unthreaded.into_iter().map(|r| r.1).collect(),
    )
    .await?;
    let mut threads: HashMap<String, i64> = HashMap::new();
    for (thread, event_id) in threaded {
        if let Some(pdu) = s.rooms.pdu_shared(event_id.as_str()).await? {
            let pos = threads.entry(thread).or_default();
            *pos = (*pos).max(pdu.stream_ordering);
        }
    }
    Ok(ThreadReads {
        unthreaded,
        threads,
    })
}

/// The thread an event is in: its `m.thread` relation's root, or `main`.
pub fn thread_of(pdu: &Pdu) -> String {
    #[derive(serde::Deserialize)]
    struct Content {
        #[serde(rename = "m.relates_to")]
        relates_to: Option<Relation>,
    }
    #[derive(serde::Deserialize)]
    struct Relation {
        rel_type: Option<String>,
        event_id: Option<String>,
    }
    serde_json::from_str::<Content>(pdu.content.get())
        .ok()
        .and_then(|c| c.relates_to)
        .filter(|r| r.rel_type.as_deref() == Some("m.thread"))
        .and_then(|r| r.event_id)
        .unwrap_or_else(|| "main".to_owned())
}

/// `unread` (the room's events after `reads.unthreaded`) by thread (`main`
/// or a root's id), less what each thread's receipt has read: what
/// [`count_unread`] counts for each.
pub fn unread_by_thread(
    unread: Vec<Arc<Pdu>>,
    reads: &ThreadReads,
) -> BTreeMap<String, Vec<Arc<Pdu>>> {
    let mut by_thread: BTreeMap<String, Vec<Arc<Pdu>>> = BTreeMap::new();
    for pdu in unread {
        let thread = thread_of(&pdu);
        if pdu.stream_ordering > reads.of(&thread) {
            by_thread.entry(thread).or_default().push(pdu);
        }
    }
    by_thread
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
    RoomContext::new(s, room_id, state, joined)
        .await?
        .for_user(s, user, state)
        .await
}

/// The room's part of [`context`] (member count, power levels), made once
/// for an event that many users' rules are evaluated against.
pub struct RoomContext {
    room_id: OwnedRoomId,
    joined: u32,
    power_levels: PushConditionPowerLevelsCtx,
}

impl RoomContext {
    pub async fn new(
        s: &Services,
        room_id: &RoomId,
        state: &StateMap,
        joined: u32,
    ) -> Result<Self> {
        let levels = s.rooms.power_levels(room_id, state).await?;
        Ok(Self {
            room_id: room_id.to_owned(),
            joined,
            power_levels: PushConditionPowerLevelsCtx::from(levels),
        })
    }

    /// [`context`] for `user`: their display name in `state` added.
    pub async fn for_user(
        &self,
        s: &Services,
        user: &UserId,
        state: &StateMap,
    ) -> Result<PushConditionRoomCtx> {
        let mut display_name = user.localpart().to_owned();
        if let Some(id) = state.get(&("m.room.member".to_owned(), user.to_string()))
            && let Some(p) = s.rooms.pdu_shared(id.as_str()).await?
            && let Some(n) = p.content_value().get("displayname").and_then(Value::as_str)
        {
            display_name = n.to_owned();
        }
        let mut ctx = PushConditionRoomCtx::new(
            self.room_id.clone(),
            UInt::from(self.joined),
            user.to_owned(),
            display_name,
        );
        ctx.power_levels = Some(self.power_levels.clone());
        Ok(ctx)
    }
}

impl crate::services::workers::CacheSizes for UnreadCounts {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("counts", self.counted.lock().len())]
    }

    fn cache_lookups(&self) -> Vec<(&'static str, &crate::metrics::CacheLookups)> {
        vec![("counts", &self.lookups)]
    }
}
