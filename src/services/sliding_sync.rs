//! Simplified sliding sync (MSC4186): the sync of Element X and
//! matrix-rust-sdk's `RoomListService`.
//!
//! A client keeps a *connection* (per user, device and `conn_id`): each
//! answer carries an opaque `pos` naming what the connection was sent so far
//! (per room: the stream position it was last sent at, its room config, its
//! unread counts). The next request with that `pos` is answered with what
//! changed since. Connections live in memory only (bounded, least recently
//! used forgotten first): after a restart, or for a forgotten connection,
//! a `pos` is unknown and answered 400 `M_UNKNOWN_POS`, and the client
//! starts again without one.
//!
//! Rooms are built from `/sync`'s pieces (timelines, state at a position,
//! invite state, unread counts); `extensions.rs` holds the extensions.

mod extensions;
mod rooms;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ruma::api::client::sync::sync_events::v5;
use ruma::api::error::ErrorKind;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UInt};
use serde_json::{Map, Value};

use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::services::Services;
use crate::services::e2e_keys::DeviceLists;
use crate::services::stream::Topic;
use crate::services::to_device::ToDevice;

pub use extensions::ExtensionsAnswer;

/// Longest long-poll honoured (as `/sync`).
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections kept (all users together).
const MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();
/// Positions of a connection that stay valid: the newest and the one before
/// it (a client whose answer was lost repeats its request).
const KEPT_POSITIONS: usize = 2;
/// The most timeline events a room config asks for that are honoured.
const MAX_TIMELINE_LIMIT: usize = 1000;
/// How many list windows and subscriptions one request may ask for.
const MAX_LISTS: usize = 100;

/// Event types that move a room up a list (its `bump_stamp`), as Synapse's
/// defaults.
pub const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// A request, with what ruma's type leaves out: the `spaces`, `tags` and
/// `not_tags` filters of each list (Synapse's extensions of MSC4186).
pub struct SlidingRequest {
    pub req: v5::Request,
    pub extra_filters: BTreeMap<String, ExtraFilters>,
}

#[derive(Default, Clone)]
pub struct ExtraFilters {
    pub spaces: Option<Vec<OwnedRoomId>>,
    pub tags: Option<Vec<String>>,
    pub not_tags: Vec<String>,
}

impl ExtraFilters {
    /// The extra filters of the body's lists, by list name.
    pub fn from_body(body: &Map<String, Value>) -> BTreeMap<String, ExtraFilters> {
        let strings = |v: Option<&Value>| -> Option<Vec<String>> {
            v.and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let mut out = BTreeMap::new();
        let Some(lists) = body.get("lists").and_then(Value::as_object) else {
            return out;
        };
        for (name, list) in lists {
            let Some(filters) = list.get("filters") else {
                continue;
            };
            out.insert(
                name.clone(),
                ExtraFilters {
                    spaces: strings(filters.get("spaces")).map(|rooms| {
                        rooms
                            .into_iter()
                            .filter_map(|r| RoomId::parse(r).ok())
                            .collect()
                    }),
                    tags: strings(filters.get("tags")),
                    not_tags: strings(filters.get("not_tags")).unwrap_or_default(),
                },
            );
        }
        out
    }
}

/// What a room is sent with: the union of the lists' and subscription's
/// configs that include it.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub(crate) struct RoomConfig {
    pub timeline_limit: usize,
    pub required_state: BTreeSet<(String, String)>,
}

impl RoomConfig {
    fn from_parts(limit: UInt, required: &[(ruma::events::StateEventType, String)]) -> Self {
        Self {
            timeline_limit: (u64::from(limit) as usize).min(MAX_TIMELINE_LIMIT),
            required_state: required
                .iter()
                .map(|(t, k)| (t.to_string(), k.clone()))
                .collect(),
        }
    }

    fn merge(&mut self, other: &RoomConfig) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        self.required_state
            .extend(other.required_state.iter().cloned());
    }

    /// Whether the config asks for more than `self` did (the room is then
    /// sent afresh).
    fn widens(&self, before: &RoomConfig) -> bool {
        self.timeline_limit > before.timeline_limit
            || !self.required_state.is_subset(&before.required_state)
    }
}

/// What a connection sent of a room.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    /// The stream position the room was last sent at.
    pub at: i64,
    pub config: RoomConfig,
    pub membership: MembershipState,
    pub counts: (u64, u64),
    /// Members sent for `$LAZY`.
    pub lazy: HashSet<OwnedUserId>,
}

/// What a connection had been sent when it was given a `pos`.
#[derive(Clone, Default)]
struct Snapshot {
    /// The stream position the answer covered.
    to: i64,
    rooms: HashMap<OwnedRoomId, Sent>,
    lists: BTreeMap<String, usize>,
}

struct Connection {
    /// Random, so a `pos` of a connection made before a restart (or
    /// replaced since) is unknown.
    id: String,
    next: u64,
    snapshots: VecDeque<(u64, Arc<Snapshot>)>,
}

type ConnKey = (OwnedUserId, String, String);

/// The sliding sync connections (in memory).
pub struct Connections {
    conns: parking_lot::Mutex<lru::LruCache<ConnKey, Connection>>,
    /// Per room: the stream position checked up to and the `bump_stamp`
    /// there, so a room is searched only for events after it.
    bumps: parking_lot::Mutex<lru::LruCache<OwnedRoomId, (i64, Option<i64>)>>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            conns: parking_lot::Mutex::new(lru::LruCache::new(MAX_CONNECTIONS)),
            bumps: parking_lot::Mutex::new(lru::LruCache::new(NonZeroUsize::new(100_000).unwrap())),
        }
    }
}

impl Connections {
    /// The snapshot a `pos` names, or 400 `M_UNKNOWN_POS`.
    fn find(&self, key: &ConnKey, pos: &str) -> Result<Arc<Snapshot>> {
        let unknown = || {
            MatrixError::new(
                http::StatusCode::BAD_REQUEST,
                ErrorKind::UnknownPos,
                "Unknown or expired position",
            )
        };
        let (id, n) = pos.split_once('_').ok_or_else(unknown)?;
        let n: u64 = n.parse().map_err(|_| unknown())?;
        let mut conns = self.conns.lock();
        let conn = conns.get(key).filter(|c| c.id == id).ok_or_else(unknown)?;
        conn.snapshots
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, s)| s.clone())
            .ok_or_else(unknown)
    }

    /// Keeps a snapshot and names it: on the connection the request's `pos`
    /// was of, or (without a `pos`) on a new connection replacing the old.
    fn store(&self, key: ConnKey, from_pos: Option<&str>, snapshot: Snapshot) -> String {
        let mut conns = self.conns.lock();
        let same = from_pos
            .and_then(|p| p.split_once('_'))
            .is_some_and(|(id, _)| conns.peek(&key).is_some_and(|c| c.id == id));
        if !same {
            conns.put(
                key.clone(),
                Connection {
                    id: {
                        use rand::distr::{Alphanumeric, SampleString};
                        Alphanumeric.sample_string(&mut rand::rng(), 8)
                    },
                    next: 0,
                    snapshots: VecDeque::new(),
                },
            );
        }
        let conn = conns.get_mut(&key).expect("just put");
        conn.next += 1;
        let n = conn.next;
        conn.snapshots.push_back((n, Arc::new(snapshot)));
        while conn.snapshots.len() > KEPT_POSITIONS {
            conn.snapshots.pop_front();
        }
        format!("{}_{n}", conn.id)
    }
}

/// Answers a sliding sync request: at once when there is something new (or
/// on a connection's first request), else when something arrives or the
/// timeout passes.
pub async fn sliding_sync(
    s: &Services,
    who: &Requester,
    req: SlidingRequest,
) -> Result<v5::Response> {
    let key: ConnKey = (
        who.user_id(),
        who.device_id.clone(),
        req.req.conn_id.clone().unwrap_or_default(),
    );
    let prev = match req.req.pos.as_deref() {
        Some(pos) => Some(s.sliding.find(&key, pos)?),
        None => None,
    };
    check_request(&req.req)?;
    if s.config.presence.enabled && !who.is_guest() {
        s.presence
            .note_syncing(&who.user_id(), &req.req.set_presence)
            .await?;
    }
    let timeout = req.req.timeout.unwrap_or(Duration::ZERO).min(MAX_TIMEOUT);
    let deadline = Instant::now() + timeout;
    let to = s.stream.current();
    let mut built = Box::pin(build(s, who, &req, prev.as_deref(), to)).await?;
    if let Some(since) = prev.as_ref().map(|p| p.to)
        && !built.has_updates
        && !timeout.is_zero()
    {
        let registration = s.stream.register(&built.topics, to);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let woken = s.stream.wait(&registration, remaining).await;
            let to = s.stream.current();
            if !woken {
                built = Box::pin(build(s, who, &req, prev.as_deref(), to)).await?;
                break;
            }
            if !s.stream.touched_after(&built.topics, since) {
                continue;
            }
            built = Box::pin(build(s, who, &req, prev.as_deref(), to)).await?;
            if built.has_updates {
                break;
            }
        }
    }
    let Built {
        mut response,
        snapshot,
        ..
    } = built;
    response.pos = s.sliding.store(key, req.req.pos.as_deref(), snapshot);
    response.txn_id = req.req.txn_id.clone();
    Ok(response)
}

/// 400 `M_INVALID_PARAM` for a request Myelin will not serve.
fn check_request(req: &v5::Request) -> Result<()> {
    let windows: usize = req.lists.values().map(|l| l.ranges.len()).sum();
    if windows + req.room_subscriptions.len() > MAX_LISTS * 10 || req.lists.len() > MAX_LISTS {
        return Err(MatrixError::invalid_param(
            "Too many lists or subscriptions",
        ));
    }
    for (name, list) in &req.lists {
        if let Some((a, b)) = list.ranges.iter().find(|(a, b)| a > b) {
            return Err(MatrixError::invalid_param(format!(
                "List {name:?}: range [{a}, {b}] ends before it starts"
            )));
        }
    }
    if let Some(conn) = &req.conn_id
        && conn.len() > 16
    {
        return Err(MatrixError::invalid_param(
            "conn_id is longer than 16 characters",
        ));
    }
    Ok(())
}

struct Built {
    response: v5::Response,
    snapshot: Snapshot,
    has_updates: bool,
    topics: Vec<Topic>,
}

/// A room the user may see in a list: their membership and what the
/// filters and the ordering look at.
pub(crate) struct Candidate {
    pub room_id: OwnedRoomId,
    pub membership: MembershipState,
    /// The stream position of the user's member event.
    pub member_pos: i64,
    pub bump_stamp: i64,
}

/// The answer for `(prev.to, to]`.
async fn build(
    s: &Services,
    who: &Requester,
    req: &SlidingRequest,
    prev: Option<&Snapshot>,
    to: i64,
) -> Result<Built> {
    let user = who.user_id();
    let since = prev.map(|p| p.to).filter(|since| *since <= to);
    let candidates = candidates(s, &user, since, to).await?;
    let mut facts = rooms::Facts::new(s, &user).await?;
    let Windows {
        configs,
        lists,
        list_rooms,
    } = windows(s, &user, req, &candidates, &mut facts).await?;
    let mut snapshot = prev.cloned().unwrap_or_default();
    snapshot.to = to;
    let mut response = v5::Response::new(String::new());
    let mut has_updates = prev.is_none_or(|p| p.lists != lists);
    for (name, count) in &lists {
        let mut list = v5::response::List::default();
        list.count = UInt::try_from(*count as u64).unwrap_or(UInt::MAX);
        response.lists.insert(name.clone(), list);
    }
    snapshot.lists = lists;
    let by_id: HashMap<&RoomId, &Candidate> = candidates.iter().map(|c| (&*c.room_id, c)).collect();
    let mut room_builder = rooms::Builder::new(s, who, since, to).await?;
    let afresh: Vec<(&Candidate, &RoomConfig)> = configs
        .iter()
        .filter_map(|(room_id, config)| {
            let c = by_id.get(&**room_id)?;
            rooms::sent_afresh(c, config, snapshot.rooms.get(room_id)).then_some((*c, config))
        })
        .collect();
    room_builder.prefetch(&afresh).await?;
    for (room_id, config) in &configs {
        let Some(candidate) = by_id.get(&**room_id) else {
            continue;
        };
        let sent = snapshot.rooms.get(room_id);
        if let Some((room, sent)) = room_builder.room(candidate, config, sent, &facts).await? {
            response.rooms.insert(room_id.clone(), room);
            snapshot.rooms.insert(room_id.clone(), sent);
            has_updates = true;
        }
    }
    // Extensions.
    let initial: BTreeSet<OwnedRoomId> = response
        .rooms
        .iter()
        .filter(|(_, r)| r.initial == Some(true))
        .map(|(id, _)| id.clone())
        .collect();
    let ext = extensions::build(
        s,
        who,
        &req.req.extensions,
        extensions::Scope {
            since,
            to,
            lists: &list_rooms,
            subscribed: &req.req.room_subscriptions,
            initial: &initial,
            candidates: &candidates,
        },
    )
    .await?;
    has_updates |= ext.has_updates;
    response.extensions = ext.extensions;
    // Woken by: the candidate rooms (their events, receipts and typing),
    // the user (memberships, account data), the device's to-device
    // messages and device list changes.
    let mut topics: Vec<Topic> = candidates
        .iter()
        .map(|c| Topic::Room(c.room_id.clone()))
        .collect();
    topics.push(Topic::User(user.clone()));
    topics.push(ToDevice::topic(who));
    topics.push(DeviceLists::topic(&user));
    Ok(Built {
        response,
        snapshot,
        has_updates,
        topics,
    })
}

/// What the lists and subscriptions ask for.
struct Windows {
    /// Each room's config (the union of those asking for it).
    configs: BTreeMap<OwnedRoomId, RoomConfig>,
    /// Each list's count: the rooms its filters let through.
    lists: BTreeMap<String, usize>,
    /// The rooms of each list's windows.
    list_rooms: BTreeMap<String, Vec<OwnedRoomId>>,
}

/// Each list's rooms filtered, sorted by recency (newest `bump_stamp`
/// first) and cut to its ranges; and the subscribed rooms the user has.
async fn windows(
    s: &Services,
    user: &OwnedUserId,
    req: &SlidingRequest,
    candidates: &[Candidate],
    facts: &mut rooms::Facts,
) -> Result<Windows> {
    let mut configs: BTreeMap<OwnedRoomId, RoomConfig> = BTreeMap::new();
    let mut lists = BTreeMap::new();
    let mut list_rooms: BTreeMap<String, Vec<OwnedRoomId>> = BTreeMap::new();
    for (name, list) in &req.req.lists {
        let extra = req.extra_filters.get(name).cloned().unwrap_or_default();
        let mut matching: Vec<&Candidate> = Vec::new();
        for c in candidates {
            if facts
                .matches(s, user, c, list.filters.as_ref(), &extra)
                .await?
            {
                matching.push(c);
            }
        }
        matching.sort_by(|a, b| {
            b.bump_stamp
                .cmp(&a.bump_stamp)
                .then_with(|| a.room_id.cmp(&b.room_id))
        });
        let config = RoomConfig::from_parts(
            list.room_details.timeline_limit,
            &list.room_details.required_state,
        );
        let mut in_windows = Vec::new();
        for (a, b) in &list.ranges {
            let (a, b) = (u64::from(*a) as usize, u64::from(*b) as usize);
            for c in matching.iter().skip(a).take(b.saturating_sub(a) + 1) {
                configs.entry(c.room_id.clone()).or_default().merge(&config);
                in_windows.push(c.room_id.clone());
            }
        }
        lists.insert(name.clone(), matching.len());
        list_rooms.insert(name.clone(), in_windows);
    }
    for (room_id, sub) in &req.req.room_subscriptions {
        if candidates.iter().any(|c| &c.room_id == room_id) {
            let config = RoomConfig::from_parts(sub.timeline_limit, &sub.required_state);
            configs.entry(room_id.clone()).or_default().merge(&config);
        }
    }
    Ok(Windows {
        configs,
        lists,
        list_rooms,
    })
}

/// The rooms a list may show: every joined, invited or knocked room, and a
/// room left or banned from within the window (so the client sees the
/// leave); not an invite from an ignored user. With their `bump_stamp`.
async fn candidates(
    s: &Services,
    user: &OwnedUserId,
    since: Option<i64>,
    to: i64,
) -> Result<Vec<Candidate>> {
    let memberships = s.storage.rooms_for_user(user.as_str()).await?;
    let mut ignored = None;
    let mut out = Vec::with_capacity(memberships.len());
    for m in memberships {
        if m.stream_ordering > to {
            // Joined after the answer's position: the next answer has it.
            continue;
        }
        let wanted = match m.membership {
            MembershipState::Join | MembershipState::Knock => true,
            MembershipState::Invite => {
                if ignored.is_none() {
                    ignored = Some(s.account_data.ignored_users(user).await?);
                }
                let inviter = s
                    .rooms
                    .current_state_pdu(&m.room_id, "m.room.member", user.as_str())
                    .await?
                    .map(|p| p.sender.clone());
                !inviter.is_some_and(|i| ignored.as_ref().is_some_and(|ig| ig.contains(&i)))
            }
            MembershipState::Leave | MembershipState::Ban => {
                since.is_some_and(|since| m.stream_ordering > since)
            }
            _ => false,
        };
        if !wanted {
            continue;
        }
        let bump_stamp = if m.membership == MembershipState::Join {
            bump_stamp(s, &m.room_id, to)
                .await?
                .unwrap_or(m.stream_ordering)
        } else {
            m.stream_ordering
        };
        out.push(Candidate {
            room_id: m.room_id,
            membership: m.membership,
            member_pos: m.stream_ordering,
            bump_stamp,
        });
    }
    Ok(out)
}

/// The stream position of the room's newest event of a [`BUMP_TYPES`] type
/// at or before `to`.
async fn bump_stamp(s: &Services, room_id: &RoomId, to: i64) -> Result<Option<i64>> {
    let known = s.sliding.bumps.lock().get(room_id).copied();
    let (after, before) = match known {
        Some((upto, bump)) if upto == to => return Ok(bump),
        Some((upto, bump)) if upto < to => (upto, bump),
        _ => (0, None),
    };
    // Nothing new in the room since it was looked at.
    if known.is_some() && s.rooms.latest_position(room_id).await? <= after {
        s.sliding.bumps.lock().put(room_id.to_owned(), (to, before));
        return Ok(before);
    }
    let found = s
        .storage
        .room_newest_of_types(room_id.as_str(), BUMP_TYPES, (after, to))
        .await?;
    let bump = found.or(before);
    s.sliding.bumps.lock().put(room_id.to_owned(), (to, bump));
    Ok(bump)
}
