//! `/sync`: assembling what changed for a user between two stream positions,
//! and long-polling until something does.
//!
//! Tokens are `s{position}` in the global stream. A room is looked at only if
//! its newest event is past `since` (an in-memory lookup), so idle syncers cost
//! almost nothing per wake-up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::model::pdu::Pdu;
use crate::model::state::StateMap;
use crate::model::viewer::ViewerTxns;
use crate::services::Services;
use crate::services::account_data::IgnoredUsers;
use crate::services::e2e_keys::{DeviceLists, SyncKeys};
use crate::services::filtering;
use crate::services::notifications;
use crate::services::rooms::timeline::topo_token;
use crate::services::stream::Topic;
use crate::services::to_device::{ToDevice, ToDeviceEvent};
use crate::storage::events::{RoomMemberRow, RoomMembershipRow, StreamSpan};

/// Timeline events per room when the filter sets no limit (as Synapse).
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Longest long-poll honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// How many devices' lazy-loaded members [`LazyMembers`] remembers, and how
/// many members per device (as Synapse: a client told again is no harm).
const LAZY_DEVICES: std::num::NonZeroUsize = std::num::NonZeroUsize::new(1024).unwrap();
const LAZY_MEMBERS_PER_DEVICE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(100).unwrap();

/// The member events lazy-loading syncs sent each device (by user and
/// device id), so an incremental sync does not send them again unless the
/// filter sets `include_redundant_members`. Kept in memory only: after a
/// restart or an eviction members are sent again, which clients accept.
pub struct LazyMembers(
    parking_lot::Mutex<lru::LruCache<(String, String), lru::LruCache<String, ruma::OwnedEventId>>>,
);

impl Default for LazyMembers {
    fn default() -> Self {
        Self(parking_lot::Mutex::new(lru::LruCache::new(LAZY_DEVICES)))
    }
}

impl LazyMembers {
    /// Of the `(member, event)` pairs, the ones not sent to the device yet.
    fn unsent<'a>(&self, who: &Requester, members: &'a [(&'a str, &'a Pdu)]) -> Vec<bool> {
        let mut cache = self.0.lock();
        let sent = cache.get_mut(&(who.user_id.clone(), who.device_id.clone()));
        members
            .iter()
            .map(|(member, p)| {
                sent.as_ref()
                    .and_then(|sent| sent.peek(*member))
                    .is_none_or(|id| *id != p.event_id)
            })
            .collect()
    }

    /// Notes member events as sent to the device.
    fn note<'a>(&self, who: &Requester, members: impl Iterator<Item = (&'a str, &'a Pdu)>) {
        let mut cache = self.0.lock();
        let sent = cache.get_or_insert_mut((who.user_id.clone(), who.device_id.clone()), || {
            lru::LruCache::new(LAZY_MEMBERS_PER_DEVICE)
        });
        for (member, p) in members {
            sent.put(member.to_owned(), p.event_id.clone());
        }
    }
}

/// An event in client form, written out from its pieces.
type RawEvent = crate::model::pdu::ClientEvent;

/// The `/sync` response. Events are written out from the pieces
/// [`Pdu::client_event`] shares, not rebuilt as `serde_json::Value` trees.
#[derive(Serialize)]
pub struct SyncResponse {
    pub next_batch: String,
    pub rooms: RoomsSection,
    pub account_data: Events<Value>,
    pub presence: Events<Value>,
    pub to_device: Events<ToDeviceEvent>,
    /// `device_lists`, `device_one_time_keys_count`,
    /// `device_unused_fallback_key_types`.
    #[serde(flatten)]
    pub keys: SyncKeys,
}

#[derive(Serialize)]
pub struct RoomsSection {
    pub join: BTreeMap<String, JoinedRoom>,
    pub invite: Map<String, Value>,
    pub leave: BTreeMap<String, LeftRoom>,
    pub knock: Map<String, Value>,
}

#[derive(Serialize)]
pub struct JoinedRoom {
    pub timeline: Timeline,
    pub state: Events<RawEvent>,
    pub summary: Value,
    pub unread_notifications: UnreadNotifications,
    /// By thread root, for a filter's `unread_thread_notifications` (then
    /// `unread_notifications` counts only the main timeline); left out
    /// when no thread has any.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unread_thread_notifications: BTreeMap<String, UnreadNotifications>,
    pub ephemeral: Events<Value>,
    pub account_data: Events<Value>,
}

#[derive(Serialize)]
pub struct LeftRoom {
    pub timeline: Timeline,
    pub state: Events<RawEvent>,
    pub account_data: Events<Value>,
}

#[derive(Serialize)]
pub struct Timeline {
    pub events: Vec<RawEvent>,
    pub limited: bool,
    pub prev_batch: String,
}

#[derive(Serialize)]
pub struct UnreadNotifications {
    pub highlight_count: u64,
    pub notification_count: u64,
}

/// `{"events": [...]}`.
#[derive(Serialize)]
pub struct Events<T> {
    pub events: Vec<T>,
}

impl<T> From<Vec<T>> for Events<T> {
    fn from(events: Vec<T>) -> Self {
        Self { events }
    }
}

pub struct SyncRequest {
    pub since: Option<i64>,
    /// The state syncing marks the user with (`set_presence`).
    pub set_presence: ruma::presence::PresenceState,
    pub full_state: bool,
    /// Shared: a parked long-poll holds its request, and a filter is large
    /// (about a kilobyte).
    pub filter: Arc<FilterDefinition>,
    pub timeout: Duration,
}

pub fn parse_token(token: &str) -> Result<i64> {
    token
        .strip_prefix('s')
        .unwrap_or(token)
        .split('_')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| MatrixError::invalid_param(format!("Invalid sync token {token:?}")))
}

/// Answers a sync: at once if there is something new (or no `since`), else
/// when something arrives or the timeout passes.
pub async fn sync(s: &Services, who: &Requester, req: SyncRequest) -> Result<SyncResponse> {
    let deadline = Instant::now() + req.timeout.min(MAX_TIMEOUT);
    // Guests have no presence (as Synapse).
    if s.config.presence.enabled && !who.is_guest() {
        s.presence
            .note_syncing(&who.user_id(), &req.set_presence)
            .await?;
    }
    // Boxed: a parked long-poll holds only this loop's small state, not the
    // whole state machine of `build`.
    let to = s.stream.current();
    let (mut body, has_updates, topics) = Box::pin(build(s, who, &req, to)).await?;
    if has_updates || req.since.is_none() || req.full_state {
        return Ok(body);
    }
    let since = req.since.unwrap_or(0);
    // Woken only for positions that touched the user's rooms, the user, or
    // presence; anything touched after `to` already wakes it at once.
    let registration = s.stream.register(&topics, to);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(body);
        }
        let woken = s.stream.wait(&registration, remaining).await;
        let to = s.stream.current();
        if !woken {
            // Timed out: answer with the position we have now.
            return Ok(Box::pin(build(s, who, &req, to)).await?.0);
        }
        // Nothing of the user's changed after `since`: wait on. A change not
        // readable yet is built below, finds nothing, and waits on too. A new
        // room of the user's comes with a membership of theirs, so the user's
        // topic covers rooms the first build did not know.
        if !s.stream.touched_after(&topics, since) {
            continue;
        }
        let (next, has_updates, _) = Box::pin(build(s, who, &req, to)).await?;
        if has_updates {
            return Ok(next);
        }
        body = next;
    }
}

/// The sync answer for `(since, to]`, whether it has anything new, and the
/// stream topics that could change it (see [`Stream::touched_after`]).
async fn build(
    s: &Services,
    who: &Requester,
    req: &SyncRequest,
    to: i64,
) -> Result<(SyncResponse, bool, Vec<Topic>)> {
    let user = who.user_id();
    let since = req.since.filter(|since| *since <= to);
    // First: more to-device messages than one response takes lower `to`.
    let to_device = s.to_device.for_sync(who, since, to).await?;
    let to = to_device.to;
    let memberships = s.storage.rooms_for_user(user.as_str()).await?;
    // What an incremental sync may skip: each kind is read only when a
    // stream topic it depends on changed after `since`.
    let user_changed =
        since.is_none_or(|since| s.stream.changed_since(&[Topic::User(user.clone())], since));
    let rooms_changed = since.is_none_or(|since| {
        let joined: Vec<Topic> = memberships
            .iter()
            .filter(|m| m.membership == MembershipState::Join)
            .map(|m| Topic::Room(m.room_id.clone()))
            .collect();
        s.stream.changed_since(&joined, since)
    });
    let window = Window { since, to };
    let newly_joined: Vec<OwnedRoomId> = memberships
        .iter()
        .filter(|m| {
            m.membership == MembershipState::Join && since.is_some_and(|s| m.stream_ordering > s)
        })
        .map(|m| m.room_id.clone())
        .collect();
    let (global_data, room_data) =
        account_data(s, &user, &req.filter, window, user_changed).await?;
    let receipts = if rooms_changed {
        receipts_by_room(s, &user, &memberships, &req.filter.room, window).await?
    } else {
        HashMap::new()
    };
    let moved = user_changed || rooms_changed;
    let keys = s
        .e2e_keys
        .for_sync(who, &memberships, (since, to), moved)
        .await?;
    let mut ignored = Ignored::default();
    let sorted = sort_rooms(
        s,
        who,
        req,
        window,
        memberships,
        (receipts, room_data),
        &mut ignored,
    )
    .await?;
    let join = joined_rooms(s, who, req, to, sorted.pending, &mut ignored).await?;
    let presence_wanted = s.config.presence.enabled && wants_presence(&req.filter.presence);
    let presence_topics: Vec<Topic> = if presence_wanted {
        sorted
            .joined
            .iter()
            .map(|r| Topic::PresenceIn(r.clone()))
            .collect()
    } else {
        Vec::new()
    };
    // A member who newly joined one of the rooms changes that room; a room
    // the user newly joined comes with their membership (the user's topic).
    let presence_changed = user_changed
        || rooms_changed
        || since.is_none_or(|since| s.stream.changed_since(&presence_topics, since));
    let presence = if presence_wanted && presence_changed {
        presence_events(s, &user, &sorted.joined, &newly_joined, window).await?
    } else {
        Vec::new()
    };
    let has_updates = !join.is_empty()
        || keys.lists_changed()
        || !sorted.invite.is_empty()
        || !sorted.knock.is_empty()
        || !sorted.leave.is_empty()
        || !global_data.is_empty()
        || !presence.is_empty()
        || !to_device.events.is_empty();
    let body = SyncResponse {
        next_batch: format!("s{to}"),
        rooms: RoomsSection {
            join,
            invite: sorted.invite,
            leave: sorted.leave,
            knock: sorted.knock,
        },
        account_data: global_data.into(),
        presence: presence.into(),
        to_device: to_device.events.into(),
        keys,
    };
    let mut topics: Vec<Topic> = sorted.joined.into_iter().map(Topic::Room).collect();
    topics.push(Topic::User(user.clone()));
    topics.push(ToDevice::topic(who));
    topics.push(DeviceLists::topic(&user));
    topics.extend(presence_topics);
    Ok((body, has_updates, topics))
}

/// The users the syncing user ignores, read when first needed (a sync
/// with nothing to show reads none).
#[derive(Default)]
struct Ignored(Option<Arc<IgnoredUsers>>);

impl Ignored {
    async fn get(&mut self, s: &Services, user: &UserId) -> Result<Arc<IgnoredUsers>> {
        if let Some(ignored) = &self.0 {
            return Ok(ignored.clone());
        }
        let ignored = s.account_data.ignored_users(user).await?;
        self.0 = Some(ignored.clone());
        Ok(ignored)
    }
}

/// The stream window a sync answers for: `(since, to]` (`since` is `None`
/// on an initial sync).
#[derive(Clone, Copy)]
struct Window {
    since: Option<i64>,
    to: i64,
}

impl Window {
    fn since_or_zero(self) -> i64 {
        self.since.unwrap_or(0)
    }
}

/// The user's account data changed in the window that the filter lets
/// through: the global events (with the push rules on an initial sync) and
/// the room events by room.
async fn account_data(
    s: &Services,
    user: &UserId,
    filter: &FilterDefinition,
    window: Window,
    user_changed: bool,
) -> Result<(Vec<Value>, HashMap<OwnedRoomId, Vec<Value>>)> {
    let mut global_data = Vec::new();
    let mut room_data: HashMap<OwnedRoomId, Vec<Value>> = HashMap::new();
    let account_data = if user_changed {
        s.storage
            .account_data_since(user.as_str(), window.since_or_zero(), window.to)
            .await?
    } else {
        Vec::new()
    };
    let global_filter = (
        filter.account_data.types.as_deref(),
        &filter.account_data.not_types,
    );
    let room_filter = &filter.room.account_data;
    for data in account_data {
        let wanted = if data.room_id.is_none() {
            filtering::type_allowed(global_filter.0, global_filter.1, &data.data_type)
        } else {
            filtering::type_allowed(
                room_filter.types.as_deref(),
                &room_filter.not_types,
                &data.data_type,
            )
        };
        if !wanted {
            continue;
        }
        let content: Value = serde_json::from_str(&data.content).unwrap_or_else(|_| json!({}));
        let ev = json!({ "type": data.data_type, "content": content });
        match data.room_id {
            None => global_data.push(ev),
            Some(room) => room_data.entry(room).or_default().push(ev),
        }
    }
    // The push rules are account data too: the filter applies to them.
    if window.since.is_none()
        && filtering::type_allowed(global_filter.0, global_filter.1, "m.push_rules")
        && !global_data.iter().any(|e| e["type"] == "m.push_rules")
    {
        let rules = s.account_data.push_rules_json(user).await?;
        global_data.push(json!({ "type": "m.push_rules", "content": { "global": rules } }));
    }
    Ok((global_data, room_data))
}

/// The `m.receipt` content of each joined room, from the receipts written
/// in the window (read only when a receipt was written after `since`: most
/// changes of a room are its events).
async fn receipts_by_room(
    s: &Services,
    user: &UserId,
    memberships: &[RoomMembershipRow],
    room_filter: &ruma::api::client::filter::RoomFilter,
    window: Window,
) -> Result<HashMap<OwnedRoomId, Value>> {
    let since = window.since;
    if !since.is_none_or(|since| s.stream.changed_since(&[Topic::Receipts], since)) {
        return Ok(HashMap::new());
    }
    // Only the joined rooms the sync answers for whose topic moved in
    // the window (a receipt touches its room's topic).
    let rooms: Vec<&str> = memberships
        .iter()
        .filter(|m| m.membership == MembershipState::Join)
        .filter(|m| {
            room_wanted(room_filter, &m.room_id)
                && since.is_none_or(|since| {
                    s.stream
                        .changed_since(&[Topic::Room(m.room_id.clone())], since)
                })
        })
        .map(|m| m.room_id.as_str())
        .collect();
    let new_receipts = s
        .storage
        .receipts_in_rooms(&rooms, user.as_str(), window.since_or_zero(), window.to)
        .await?;
    Ok(receipt_contents(new_receipts))
}

/// The `m.receipt` content of each room the receipts are in, by room id.
pub(crate) fn receipt_contents(
    rows: Vec<crate::storage::ReceiptRow>,
) -> HashMap<OwnedRoomId, Value> {
    let mut receipts: HashMap<OwnedRoomId, Value> = HashMap::new();
    for r in rows {
        let mut entry = json!({ "ts": r.ts });
        if !r.thread_id.is_empty() {
            entry["thread_id"] = json!(r.thread_id);
        }
        let content = receipts
            .entry(r.room_id.clone())
            .or_insert_with(|| json!({}));
        content[r.event_id.as_str()][r.receipt_type.as_str()][r.user_id.as_str()] = entry;
    }
    receipts
}

/// The user's rooms sorted by membership: the joined rooms the sync
/// answers for (built later, together), the invites and the left rooms.
struct SortedRooms {
    /// Every joined room the filter wants (the sync's wake-up topics).
    joined: Vec<OwnedRoomId>,
    /// The joined rooms with something to say.
    pending: Vec<PendingJoined>,
    invite: Map<String, Value>,
    knock: Map<String, Value>,
    leave: BTreeMap<String, LeftRoom>,
}

/// First pass over the user's rooms: which the sync answers for, and the
/// sections of invited and left rooms.
async fn sort_rooms(
    s: &Services,
    who: &Requester,
    req: &SyncRequest,
    window: Window,
    memberships: Vec<RoomMembershipRow>,
    (mut receipts, mut room_data): (
        HashMap<OwnedRoomId, Value>,
        HashMap<OwnedRoomId, Vec<Value>>,
    ),
    ignored: &mut Ignored,
) -> Result<SortedRooms> {
    let user = who.user_id();
    let Window { since, to } = window;
    let room_filter = &req.filter.room;
    // Read when a left room is a candidate.
    let mut forgotten: Option<HashSet<OwnedRoomId>> = None;
    let mut sorted = SortedRooms {
        joined: Vec::new(),
        pending: Vec::new(),
        invite: Map::new(),
        knock: Map::new(),
        leave: BTreeMap::new(),
    };
    for m in memberships {
        let (room_id, member_pos) = (m.room_id, m.stream_ordering);
        let room = room_id.to_string();
        if !room_wanted(room_filter, &room_id) {
            continue;
        }
        let latest = s.rooms.latest_position(&room_id).await?;
        let changed = since.is_none_or(|since| latest > since);
        match m.membership {
            MembershipState::Join => {
                sorted.joined.push(room_id.clone());
                let typing = s.ephemeral.typing_since(&room_id, since);
                let mut ephemeral = Vec::new();
                if let Some(users) = typing {
                    ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
                }
                if let Some(content) = receipts.remove(&room_id) {
                    ephemeral.push(json!({ "type": "m.receipt", "content": content }));
                }
                let data = room_data.remove(&room_id).unwrap_or_default();
                // Joined since the last sync: the room is new to the client,
                // so it gets the whole picture, as on an initial sync.
                let room_since = match since {
                    Some(since)
                        if member_pos > since && !was_joined(s, &room_id, &user, since).await? =>
                    {
                        None
                    }
                    other => other,
                };
                if changed || req.full_state || !ephemeral.is_empty() || !data.is_empty() {
                    sorted.pending.push(PendingJoined {
                        room_id,
                        since: room_since,
                        ephemeral,
                        account_data: data,
                    });
                }
            }
            MembershipState::Invite if since.is_none_or(|since| member_pos > since) => {
                // An invite from an ignored user is not shown (spec,
                // "Ignoring Users").
                let ignored = ignored.get(s, &user).await?;
                if let Some(entry) = invite_entry(s, &room_id, &user, &ignored).await? {
                    sorted.invite.insert(room.clone(), entry);
                }
            }
            MembershipState::Knock if since.is_none_or(|since| member_pos > since) => {
                let entry = knock_state(s, &room_id, &user).await?;
                sorted.knock.insert(room.clone(), entry);
            }
            MembershipState::Leave | MembershipState::Ban => {
                let in_window = since.is_some_and(|since| member_pos > since && member_pos <= to);
                // `include_leave` brings back rooms left before the window
                // only when the client has not seen them (as Synapse: an
                // initial or full-state sync); an incremental sync shows a
                // leave once.
                let wanted =
                    in_window || (room_filter.include_leave && (since.is_none() || req.full_state));
                if wanted && forgotten.is_none() {
                    forgotten = Some(
                        s.storage
                            .forgotten_rooms(user.as_str())
                            .await?
                            .into_iter()
                            .collect(),
                    );
                }
                if wanted && !forgotten.as_ref().is_some_and(|f| f.contains(&room_id)) {
                    // Joined and left within the window: the client never
                    // had the room's state, so it gets it all (as Synapse).
                    let room_since = match since {
                        Some(since)
                            if in_window
                                && !was_joined(s, &room_id, &user, since).await?
                                && was_joined(s, &room_id, &user, member_pos - 1).await? =>
                        {
                            None
                        }
                        other => other,
                    };
                    let ignored = ignored.get(s, &user).await?;
                    let left = left_room(s, who, (&room_id, room_since), member_pos, req, &ignored)
                        .await?;
                    // An incremental sync leaves out a room with nothing
                    // to show (everything filtered out).
                    if since.is_none()
                        || req.full_state
                        || !left.timeline.events.is_empty()
                        || !left.state.events.is_empty()
                    {
                        sorted.leave.insert(room.clone(), left);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(sorted)
}

/// The joined rooms' sections: their reads together, then each room, then
/// the client form of every timeline event with one transaction id lookup.
async fn joined_rooms(
    s: &Services,
    who: &Requester,
    req: &SyncRequest,
    to: i64,
    pending: Vec<PendingJoined>,
    ignored: &mut Ignored,
) -> Result<BTreeMap<String, JoinedRoom>> {
    let user = who.user_id();
    let mut reads = read_joined(s, &user, &pending, to, &req.filter.room.timeline).await?;
    let (rules, ignored) = if pending.is_empty() {
        (Arc::default(), Arc::default())
    } else {
        (
            s.account_data.push_rules_shared(&user).await?,
            ignored.get(s, &user).await?,
        )
    };
    let mut bodies = Vec::with_capacity(pending.len());
    for room in pending {
        let id = room.room_id.to_string();
        bodies.push((
            id,
            joined_room(s, who, room, &mut reads, (to, req), (&rules, &ignored)).await?,
        ));
    }
    let all: Vec<&Pdu> = bodies
        .iter()
        .flat_map(|(_, (_, events))| events)
        .map(|p| &**p)
        .collect();
    let txns = s
        .rooms
        .transaction_ids(&all, who.user_id.as_str(), who.device_id.as_str())
        .await?;
    drop(all);
    let mut join = BTreeMap::new();
    // An incremental sync leaves out a room with nothing to show (as
    // Synapse: its events were all filtered out, or only its unread counts
    // changed).
    let incremental = req.since.is_some() && !req.full_state;
    let federation_format =
        req.filter.event_format == ruma::api::client::filter::EventFormat::Federation;
    let bodies: Vec<_> = bodies
        .into_iter()
        .filter(|(_, (body, events))| {
            !(incremental
                && events.is_empty()
                && body.state.events.is_empty()
                && body.ephemeral.events.is_empty()
                && body.account_data.events.is_empty())
        })
        .collect();
    // Every room's client forms at once: one look-up of thread summaries
    // for the whole answer.
    let events: Vec<Arc<Pdu>> = bodies
        .iter()
        .flat_map(|(_, (_, events))| events.iter().cloned())
        .collect();
    let mut forms = s
        .rooms
        .client_events_with(&events, &txns)
        .await?
        .into_iter();
    for (room, (mut body, events)) in bodies {
        body.timeline.events = forms.by_ref().take(events.len()).collect();
        if federation_format {
            body.timeline.events = body
                .timeline
                .events
                .into_iter()
                .map(RawEvent::into_federation_format)
                .collect();
        }
        join.insert(room, body);
    }
    Ok(join)
}

/// Presence for the sync's window: changes of the user's and of everyone
/// sharing a joined room, the presence of members who newly joined one of
/// those rooms, and of every member of a room the user newly joined (as
/// Synapse: a new room brings its members' presence, `offline` for those
/// who never had one; an initial sync leaves those out).
async fn presence_events(
    s: &Services,
    user: &UserId,
    joined: &[OwnedRoomId],
    newly_joined: &[OwnedRoomId],
    window: Window,
) -> Result<Vec<Value>> {
    let Window { since, to } = window;
    let rooms: Vec<&str> = joined.iter().map(|r| r.as_str()).collect();
    let mut changes = s
        .storage
        .presence_in_rooms(&rooms, user.as_str(), since.unwrap_or(0), to)
        .await?;
    let newly: Vec<&str> = newly_joined
        .iter()
        .filter(|r| joined.contains(r))
        .map(|r| r.as_str())
        .collect();
    if !newly.is_empty() {
        let mut seen: HashSet<OwnedUserId> = changes.iter().map(|p| p.user_id.clone()).collect();
        for p in s
            .storage
            .presence_in_rooms(&newly, user.as_str(), 0, to)
            .await?
        {
            if seen.insert(p.user_id.clone()) {
                changes.push(p);
            }
        }
    }
    Ok(changes
        .iter()
        .filter(|p| !p.is_unset() || (since.is_some() && p.user_id != user))
        .map(|p| {
            json!({
                "type": "m.presence",
                "sender": p.user_id,
                "content": s.presence.content(p),
            })
        })
        .collect())
}

/// Whether the filter lets any presence event through (a filter of
/// `not_types: ["*"]` or `types: []` wants none, and its syncs neither read
/// presence nor wake for it).
fn wants_presence(filter: &ruma::api::client::filter::Filter) -> bool {
    !filter.not_types.iter().any(|t| t == "*")
        && filter.types.as_ref().is_none_or(|t| !t.is_empty())
}

/// Whether the room filter lets a room through.
fn room_wanted(filter: &ruma::api::client::filter::RoomFilter, room_id: &RoomId) -> bool {
    !filter.not_rooms.iter().any(|r| r == room_id)
        && filter
            .rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
}

fn timeline_limit(filter: &RoomEventFilter) -> usize {
    filter
        .limit
        .map(|l| u64::from(l) as usize)
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .min(1000)
}

/// How many events to read for a timeline: one more than the limit (to
/// tell whether there is a gap), or more when the filter narrows the events.
pub(crate) fn timeline_fetch(filter: &RoomEventFilter) -> i64 {
    let limit = timeline_limit(filter);
    // Filters apply before the limit: with type or sender conditions, look
    // further back (bounded) to fill the timeline with matching events.
    let narrowing = filter.types.is_some()
        || !filter.not_types.is_empty()
        || filter.senders.is_some()
        || !filter.not_senders.is_empty()
        || filter.url_filter.is_some();
    if narrowing {
        (limit * 5).max(50) as i64
    } else {
        limit as i64 + 1
    }
}

/// What a timeline is read for: the room, the user's membership of it, the
/// window start, the events the user ignores, and the room's current state
/// (events of it are shown even where history visibility would hide them,
/// as Synapse: "Current state appears in timeline in private history").
pub(crate) struct TimelineFor<'a> {
    pub room_id: &'a RoomId,
    pub membership: &'a str,
    pub since: Option<i64>,
    pub ignored: &'a HashSet<ruma::OwnedUserId>,
    pub current: Option<&'a StateMap>,
}

/// How many more reads a timeline makes when history visibility hid events
/// (as Synapse, a few per room).
const TIMELINE_REFILLS: usize = 5;

/// Timeline events of a room in `(since, to]`, oldest first, visible to the
/// user and matching the filter; and whether older ones were left out.
pub(crate) async fn timeline(
    s: &Services,
    user: &UserId,
    room: &TimelineFor<'_>,
    to: i64,
    filter: &RoomEventFilter,
) -> Result<(Vec<Arc<Pdu>>, bool)> {
    let pdus = read_timeline(s, room, to, filter).await?;
    timeline_from_pdus(s, user, room, pdus, filter).await
}

/// Up to [`timeline_fetch`] events of a room in `(since, to]`, newest first.
async fn read_timeline(
    s: &Services,
    room: &TimelineFor<'_>,
    to: i64,
    filter: &RoomEventFilter,
) -> Result<Vec<Arc<Pdu>>> {
    let rows = s
        .storage
        .room_events_in_stream(
            room.room_id.as_str(),
            room.since.unwrap_or(0),
            to,
            timeline_fetch(filter),
        )
        .await?;
    rows.into_iter()
        .map(|row| s.rooms.pdu_from_row(row))
        .collect::<Result<Vec<_>>>()
}

/// Whether an event belongs in the user's timeline before visibility: it
/// passes the filter and its sender is not ignored (state events are kept,
/// as Synapse).
fn timeline_wants(
    filter: &RoomEventFilter,
    ignored: &HashSet<ruma::OwnedUserId>,
    pdu: &Pdu,
) -> bool {
    (pdu.state_key.is_some() || !ignored.contains(&pdu.sender)) && filtering::matches(filter, pdu)
}

/// Whether an event is part of the room's current state.
fn in_current_state(current: Option<&StateMap>, pdu: &Pdu) -> bool {
    match (current, &pdu.state_key) {
        (Some(state), Some(sk)) => state
            .get(&(pdu.kind.to_string(), sk.clone()))
            .is_some_and(|id| *id == pdu.event_id),
        _ => false,
    }
}

/// [`timeline`] from the events already read (newest first, as many as
/// [`timeline_fetch`] says). When history visibility hides events, older
/// ones are read (a few times at most) to fill the timeline.
pub(crate) async fn timeline_from_pdus(
    s: &Services,
    user: &UserId,
    room: &TimelineFor<'_>,
    mut pdus: Vec<Arc<Pdu>>,
    filter: &RoomEventFilter,
) -> Result<(Vec<Arc<Pdu>>, bool)> {
    let limit = timeline_limit(filter);
    let fetch = timeline_fetch(filter);
    // A purged room's timeline starts at its purge point.
    let floor = s.rooms.history_floor(room.room_id).await?;
    // Newest first while collecting.
    let mut shown: Vec<Arc<Pdu>> = Vec::new();
    let mut refills = TIMELINE_REFILLS;
    loop {
        let mut exhausted = (pdus.len() as i64) < fetch;
        let oldest = pdus.last().map(|p| p.stream_ordering);
        if floor > 0 && pdus.iter().any(|p| p.depth < floor) {
            pdus.retain(|p| p.depth >= floor);
            exhausted = true;
        }
        let mut candidates = pdus
            .into_iter()
            .filter(|p| timeline_wants(filter, room.ignored, p))
            .peekable();
        // Checked for visibility in chunks of what is still missing, so the
        // common case checks no more than the limit and one.
        while shown.len() <= limit && candidates.peek().is_some() {
            let need = limit + 1 - shown.len();
            let chunk: Vec<Arc<Pdu>> = candidates.by_ref().take(need).collect();
            let (always, rest): (Vec<_>, Vec<_>) = chunk
                .into_iter()
                .partition(|p| in_current_state(room.current, p));
            let mut visible = s
                .rooms
                .filter_visible_as(user, Some(room.membership), rest)
                .await?;
            visible.extend(always);
            visible.sort_by_key(|p| std::cmp::Reverse(p.stream_ordering));
            shown.extend(visible);
        }
        if shown.len() > limit {
            shown.truncate(limit);
            shown.reverse();
            return Ok((shown, true));
        }
        let (Some(oldest), false) = (oldest, exhausted) else {
            shown.reverse();
            return Ok((shown, false));
        };
        if refills == 0 {
            shown.reverse();
            return Ok((shown, true));
        }
        refills -= 1;
        pdus = read_timeline(s, room, oldest - 1, filter).await?;
    }
}

/// Whether the user was joined to the room at a stream position.
async fn was_joined(s: &Services, room_id: &RoomId, user: &UserId, pos: i64) -> Result<bool> {
    let state = state_at_position(s, room_id, pos).await?;
    Ok(s.rooms
        .state_content(&state, "m.room.member", user.as_str())
        .await?
        .and_then(|c| {
            c.get("membership")
                .and_then(Value::as_str)
                .map(|m| m == "join")
        })
        == Some(true))
}

/// The room state at a stream position: the current state when no state
/// event came after it, else read through the event at or before it.
pub(crate) async fn state_at_position(
    s: &Services,
    room_id: &RoomId,
    pos: i64,
) -> Result<Arc<StateMap>> {
    // A room whose head cannot be loaded (only an invite or a leave from
    // another server is known here) is left to the query.
    if let Ok((current, changed_at)) = s.rooms.current_state_and_change(room_id).await
        && changed_at <= pos
    {
        return Ok(current);
    }
    match s
        .storage
        .room_event_at_stream(room_id.as_str(), pos)
        .await?
    {
        Some(row) => s.rooms.state_after(row.state_group.unwrap_or(0)).await,
        None => Ok(Arc::default()),
    }
}

/// The `state` section: the state at the start of the timeline, in full for
/// an initial or full-state sync, else only what changed since `since`.
/// Lazy-loading members (as Synapse): only the members of the timeline's
/// senders (and the user's own on an initial sync), plus on an incremental
/// sync every member that changed since `since`; a member event this device
/// was already sent is left out unless `include_redundant_members`.
#[allow(clippy::too_many_arguments)]
async fn state_section(
    s: &Services,
    who: &Requester,
    room_id: &RoomId,
    since: Option<i64>,
    full_state: bool,
    timeline: &[Arc<Pdu>],
    end_state: Arc<StateMap>,
    filter: &RoomEventFilter,
) -> Result<Vec<RawEvent>> {
    let start = match timeline.first() {
        Some(first) => s.rooms.state_before(first).await?,
        None => end_state,
    };
    let previous = match (since, full_state) {
        (Some(since), false) => Some(state_at_position(s, room_id, since).await?),
        _ => None,
    };
    let (lazy, redundant) = match filter.lazy_load_options {
        ruma::api::client::filter::LazyLoadOptions::Enabled {
            include_redundant_members,
        } => (true, include_redundant_members),
        _ => (false, false),
    };
    let mut speakers: HashSet<&str> = timeline.iter().map(|p| p.sender.as_str()).collect();
    if previous.is_none() {
        speakers.insert(who.user_id.as_str());
    }
    let in_timeline: HashSet<&str> = timeline.iter().map(|p| p.event_id.as_str()).collect();
    let mut pdus = Vec::new();
    // Member events lazy loading decided to send: (member, position in `pdus`).
    let mut members: Vec<(&str, usize)> = Vec::new();
    for (key, id) in start.iter() {
        if in_timeline.contains(id.as_str()) {
            continue;
        }
        let changed = previous
            .as_ref()
            .is_none_or(|prev| prev.get(key) != Some(id));
        let member = lazy && key.0 == "m.room.member";
        let wanted = if member {
            speakers.contains(key.1.as_str()) || (changed && previous.is_some())
        } else {
            changed
        };
        if !wanted {
            continue;
        }
        if let Some(p) = s.rooms.pdu_shared(id.as_str()).await?
            && filtering::matches(filter, &p)
        {
            if member {
                members.push((key.1.as_str(), pdus.len()));
            }
            pdus.push(p);
        }
    }
    if lazy {
        let pairs: Vec<(&str, &Pdu)> = members.iter().map(|(m, i)| (*m, &*pdus[*i])).collect();
        // An incremental sync leaves out what the device was sent already.
        let keep = if previous.is_some() && !redundant {
            s.lazy_members.unsent(who, &pairs)
        } else {
            vec![true; pairs.len()]
        };
        let timeline_members = timeline
            .iter()
            .filter(|p| p.kind == ruma::events::TimelineEventType::RoomMember)
            .filter_map(|p| Some((p.state_key.as_deref()?, &**p)));
        s.lazy_members
            .note(who, pairs.iter().copied().chain(timeline_members));
        let dropped: HashSet<usize> = members
            .iter()
            .zip(&keep)
            .filter(|(_, keep)| !**keep)
            .map(|((_, i), _)| *i)
            .collect();
        if !dropped.is_empty() {
            let mut i = 0;
            pdus.retain(|_| {
                i += 1;
                !dropped.contains(&(i - 1))
            });
        }
    }
    pdus.sort_by_key(|p| p.stream_ordering);
    // No transaction ids: state events are never sent with one.
    s.rooms
        .client_events_with(&pdus, &ViewerTxns::default())
        .await
}

/// Member counts from the room's joined and invited members, and heroes
/// when the room has neither a name nor a canonical alias (the spec: heroes
/// are for clients to name the room; as Synapse, a named room has none).
async fn summary(
    s: &Services,
    user: &UserId,
    state: &StateMap,
    members: Vec<RoomMemberRow>,
) -> Result<Value> {
    let joined = members
        .iter()
        .filter(|m| m.membership == MembershipState::Join)
        .count();
    let invited = members.len() - joined;
    let mut summary = json!({
        "m.joined_member_count": joined,
        "m.invited_member_count": invited,
    });
    for (ty, field) in [("m.room.name", "name"), ("m.room.canonical_alias", "alias")] {
        if let Some(content) = s.rooms.state_content(state, ty, "").await?
            && content
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        {
            return Ok(summary);
        }
    }
    let heroes: Vec<OwnedUserId> = members
        .into_iter()
        .map(|m| m.user_id)
        .filter(|m| m != user)
        .take(5)
        .collect();
    summary["m.heroes"] = json!(heroes);
    Ok(summary)
}

/// A joined room the sync answers for, found in the first pass.
struct PendingJoined {
    room_id: OwnedRoomId,
    since: Option<i64>,
    ephemeral: Vec<Value>,
    account_data: Vec<Value>,
}

/// What the joined rooms of a sync need from the database, read for all of
/// them at once (a round trip per kind, not several per room).
#[derive(Default)]
struct JoinedReads {
    /// Timeline candidates, newest first.
    timelines: HashMap<OwnedRoomId, Vec<Arc<Pdu>>>,
    /// Joined and invited members.
    members: HashMap<OwnedRoomId, Vec<RoomMemberRow>>,
    /// Others' events after what was counted before, newest first.
    unread: HashMap<OwnedRoomId, Vec<Arc<Pdu>>>,
    /// The counts made before (see `UnreadCounts`).
    counted: HashMap<String, notifications::Counted>,
    /// The read positions by thread, when the filter asks for counts by
    /// thread (counted afresh, not kept in `UnreadCounts`).
    thread_reads: HashMap<String, notifications::ThreadReads>,
}

async fn read_joined(
    s: &Services,
    user: &UserId,
    pending: &[PendingJoined],
    to: i64,
    filter: &RoomEventFilter,
) -> Result<JoinedReads> {
    if pending.is_empty() {
        return Ok(JoinedReads::default());
    }
    let fetch = timeline_fetch(filter);
    let wanted: Vec<StreamSpan> = pending
        .iter()
        .map(|p| StreamSpan {
            room_id: p.room_id.as_str(),
            from: p.since.unwrap_or(0),
            to,
            limit: fetch,
        })
        .collect();
    let timelines = s.storage.rooms_events_in_stream(&wanted, None).await?;
    let timelines = s.rooms.pdus_for_refs(timelines).await?;
    let rooms: Vec<&str> = pending.iter().map(|p| p.room_id.as_str()).collect();
    let members = s.storage.rooms_joined_and_invited(&rooms).await?;
    let by_thread = filter.unread_thread_notifications;
    let (mut receipts, mut threaded) = if by_thread {
        let threaded = s.storage.all_read_receipts(user.as_str()).await?;
        (HashMap::new(), threaded)
    } else {
        let main = s.storage.all_main_receipts(user.as_str()).await?;
        (main, HashMap::new())
    };
    let mut read = Vec::with_capacity(pending.len());
    let mut counted = HashMap::with_capacity(pending.len());
    let mut thread_reads = HashMap::new();
    for p in pending {
        let current = s.rooms.current_state(&p.room_id).await?;
        if by_thread {
            let receipts = threaded.remove(&p.room_id).unwrap_or_default();
            let reads = notifications::thread_reads(s, user, &current, receipts).await?;
            if reads.unthreaded < to {
                read.push(StreamSpan {
                    room_id: p.room_id.as_str(),
                    from: reads.unthreaded,
                    to,
                    limit: notifications::MAX_COUNTED,
                });
            }
            thread_reads.insert(p.room_id.to_string(), reads);
            continue;
        }
        let receipts = receipts.remove(&p.room_id).unwrap_or_default();
        let pos = notifications::read_position(s, user, &current, receipts).await?;
        let so_far = s.unread.resume(user, &p.room_id, pos, to);
        if so_far.upto < to {
            read.push(StreamSpan {
                room_id: p.room_id.as_str(),
                from: so_far.upto,
                to,
                limit: notifications::MAX_COUNTED,
            });
        }
        counted.insert(p.room_id.to_string(), so_far);
    }
    let unread = s
        .storage
        .rooms_events_in_stream(&read, Some(user.as_str()))
        .await?;
    let unread = s.rooms.pdus_for_refs(unread).await?;
    Ok(JoinedReads {
        timelines,
        members,
        unread,
        counted,
        thread_reads,
    })
}

/// A joined room's section, but for the client form of its timeline events
/// (made for all rooms together, see [`build`]): the body and those events.
async fn joined_room(
    s: &Services,
    who: &Requester,
    room: PendingJoined,
    reads: &mut JoinedReads,
    (to, req): (i64, &SyncRequest),
    (rules, ignored): (&ruma::push::Ruleset, &IgnoredUsers),
) -> Result<(JoinedRoom, Vec<Arc<Pdu>>)> {
    let user = &who.user_id();
    let filter = &req.filter.room;
    let room_id = &room.room_id;
    let rows = reads.timelines.remove(room_id).unwrap_or_default();
    let current = s.rooms.current_state(room_id).await?;
    let timeline_for = TimelineFor {
        room_id,
        membership: "join",
        since: room.since,
        ignored,
        current: Some(&current),
    };
    let (events, limited) =
        timeline_from_pdus(s, user, &timeline_for, rows, &filter.timeline).await?;
    // A room joined since the last sync: its timeline starts somewhere in
    // the room's history, so it is limited (as Synapse; sytest "Newly
    // joined room has correct timeline in incremental sync").
    let limited = limited || (room.since.is_none() && req.since.is_some());
    // Read after `current`: nothing newer than `to` has reached `current`
    // when the room's newest event is at or before `to`.
    let end_state = if s.rooms.latest_position(room_id).await? <= to {
        current.clone()
    } else {
        state_at_position(s, room_id, to).await?
    };
    // With a limited timeline the state section still covers the gap: it is
    // the difference between the state at `since` and at the timeline start.
    let state = state_section(
        s,
        who,
        room_id,
        room.since,
        req.full_state,
        &events,
        end_state,
        &filter.state,
    )
    .await?;
    let members = reads.members.remove(room_id).unwrap_or_default();
    let joined = members
        .iter()
        .filter(|m| m.membership == MembershipState::Join)
        .count() as u32;
    // Evaluate the rules as the client sees them (legacy mention rules included).
    let unread = reads.unread.remove(room_id).unwrap_or_default();
    let mut unread_thread_notifications = BTreeMap::new();
    let thread_reads = reads.thread_reads.remove(room_id.as_str());
    let counted = reads.counted.remove(room_id.as_str());
    let (notify, highlight) = match (counted, &thread_reads) {
        (_, Some(thread_reads)) => {
            let mut main = (0, 0);
            for (thread, events) in notifications::unread_by_thread(unread, thread_reads) {
                let (n, h) =
                    notifications::count_unread(s, user, room_id, &current, joined, rules, events)
                        .await?;
                if thread == "main" {
                    main = (n, h);
                } else if (n, h) != (0, 0) {
                    let counts = UnreadNotifications {
                        highlight_count: h,
                        notification_count: n,
                    };
                    unread_thread_notifications.insert(thread, counts);
                }
            }
            main
        }
        (Some(mut so_far), None) => {
            let (n, h) =
                notifications::count_unread(s, user, room_id, &current, joined, rules, unread)
                    .await?;
            so_far.notify += n;
            so_far.highlight += h;
            so_far.upto = so_far.upto.max(to);
            s.unread.store(user, room_id, so_far);
            (so_far.notify, so_far.highlight)
        }
        (None, None) => (0, 0),
    };
    // As Synapse: on an initial sync (of the room), a timeline that holds
    // the whole room (not limited) has the sync point as its `prev_batch`,
    // so `/messages` back from it returns those events too (sytest "GET
    // /rooms/:room_id/messages returns a message" pages back from it). An
    // incremental sync's `prev_batch` is just before its first event ("A
    // prev_batch token from incremental sync can be used ...").
    let prev_batch = match events.first() {
        Some(first) if limited || room.since.is_some() => topo_token(first),
        _ => format!("s{to}"),
    };
    let body = JoinedRoom {
        // The events' client form is made for all rooms together.
        timeline: Timeline {
            events: Vec::new(),
            limited,
            prev_batch,
        },
        state: state.into(),
        summary: summary(s, user, &current, members).await?,
        unread_notifications: UnreadNotifications {
            highlight_count: highlight,
            notification_count: notify,
        },
        unread_thread_notifications,
        ephemeral: room.ephemeral.into(),
        account_data: room.account_data.into(),
    };
    Ok((body, events))
}

async fn left_room(
    s: &Services,
    who: &Requester,
    (room_id, since): (&RoomId, Option<i64>),
    leave_pos: i64,
    req: &SyncRequest,
    ignored: &IgnoredUsers,
) -> Result<LeftRoom> {
    let user = &who.user_id();
    let filter = &req.filter.room;
    let room = TimelineFor {
        room_id,
        membership: "leave",
        since,
        ignored,
        current: None,
    };
    // Up to and including the leave event; nothing after it.
    let (events, limited) = timeline(s, user, &room, leave_pos, &filter.timeline).await?;
    let end_state = state_at_position(s, room_id, leave_pos).await?;
    let state = state_section(
        s,
        who,
        room_id,
        since,
        req.full_state,
        &events,
        end_state,
        &filter.state,
    )
    .await?;
    let prev_batch = events
        .first()
        .map(|p| topo_token(p))
        .unwrap_or_else(|| format!("s{leave_pos}"));
    let viewer = (who.user_id.as_str(), who.device_id.as_str());
    Ok(LeftRoom {
        timeline: Timeline {
            events: s.rooms.client_events_raw(&events, Some(viewer)).await?,
            limited,
            prev_batch,
        },
        state: state.into(),
        account_data: Vec::new().into(),
    })
}

/// The room's public face as stripped state events: what an invitee or a
/// knocker sees of a room before joining.
pub(crate) async fn prejoin_state(s: &Services, state: &StateMap) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (ty, sk) in [
        ("m.room.create", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("m.room.avatar", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.encryption", ""),
        ("m.room.topic", ""),
    ] {
        if let Some(id) = state.get(&(ty.to_owned(), sk.to_owned()))
            && let Some(p) = s.rooms.pdu(id.as_str()).await?
        {
            out.push(p.to_stripped());
        }
    }
    Ok(out)
}

/// The user's own member event, stripped, with its id and timestamp.
fn own_member_event(member: &Pdu) -> Value {
    let mut ev = member.to_stripped();
    ev["event_id"] = json!(member.event_id);
    ev["origin_server_ts"] = json!(member.origin_server_ts);
    ev
}

/// The stripped state an invitee sees (an invited room's
/// `invite_state.events`; sliding sync's `invite_state`): the room's public
/// face, the inviter's member event and the invite; `None` when the
/// inviter is ignored.
pub(crate) async fn invite_state(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    ignored: &IgnoredUsers,
) -> Result<Option<Vec<Value>>> {
    let state = s.rooms.current_state(room_id).await?;
    let mut out = prejoin_state(s, &state).await?;
    if let Some(id) = state.get(&("m.room.member".to_owned(), user.to_string()))
        && let Some(invite) = s.rooms.pdu(id.as_str()).await?
    {
        if ignored.contains(&invite.sender) {
            return Ok(None);
        }
        if let Some(inviter) = state.get(&("m.room.member".to_owned(), invite.sender.to_string()))
            && let Some(p) = s.rooms.pdu(inviter.as_str()).await?
        {
            out.push(p.to_stripped());
        }
        out.push(own_member_event(&invite));
    }
    Ok(Some(out))
}

/// An invited room's `{"invite_state": {"events"}}` ([`invite_state`]).
async fn invite_entry(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    ignored: &IgnoredUsers,
) -> Result<Option<Value>> {
    Ok(invite_state(s, room_id, user, ignored)
        .await?
        .map(|events| json!({ "invite_state": { "events": events } })))
}

/// A knocked room's `{"knock_state": {"events"}}`: the stripped state a
/// knocker sees, the room's public face and the knock.
async fn knock_state(s: &Services, room_id: &RoomId, user: &UserId) -> Result<Value> {
    let state = s.rooms.current_state(room_id).await?;
    let mut out = prejoin_state(s, &state).await?;
    if let Some(id) = state.get(&("m.room.member".to_owned(), user.to_string()))
        && let Some(knock) = s.rooms.pdu(id.as_str()).await?
    {
        out.push(own_member_event(&knock));
    }
    Ok(json!({ "knock_state": { "events": out } }))
}
