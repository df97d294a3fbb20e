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
mod room_lists;
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
pub(crate) use room_lists::RoomLists;

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

    /// Adds `other` to a room's config: shared while only one list or
    /// subscription asks for the room (the usual case), copied when a
    /// second one asks for more.
    fn merge_into<'a>(configs: &mut Configs<'a>, c: &'a Candidate, other: &Arc<RoomConfig>) {
        let Some((_, mine)) = configs.get_mut(&**c.room_id()) else {
            configs.insert(c.room_id(), (c, other.clone()));
            return;
        };
        if Arc::ptr_eq(mine, other) || !other.widens(mine) {
            return;
        }
        let mine = Arc::make_mut(mine);
        mine.timeline_limit = mine.timeline_limit.max(other.timeline_limit);
        mine.required_state
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
    pub config: Arc<RoomConfig>,
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

/// The sliding sync connections (in memory), and the syncing users' room
/// lists (`room_lists.rs`).
pub struct Connections {
    conns: parking_lot::Mutex<lru::LruCache<ConnKey, Connection>>,
    lists: Arc<RoomLists>,
}

impl Connections {
    /// `lists` is subscribed to the event pipeline and to account data
    /// (`Services::new`).
    pub(crate) fn new(lists: Arc<RoomLists>) -> Self {
        Self {
            conns: parking_lot::Mutex::new(lru::LruCache::new(MAX_CONNECTIONS)),
            lists,
        }
    }

    /// Forgets a purged room in every room list.
    pub fn forget_room(&self, room_id: &RoomId) {
        self.lists.forget_room(room_id);
    }

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
        let mut topics = self::topics(who, &built.candidates);
        let registration = s.stream.register(&topics, to);
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
            if !s.stream.touched_after(&topics, since) {
                continue;
            }
            built = Box::pin(build(s, who, &req, prev.as_deref(), to)).await?;
            topics = self::topics(who, &built.candidates);
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
    /// The rooms the answer looked at (what a long-poll waits on).
    candidates: Vec<Candidate>,
}

/// A room the user may see in a list: their membership and what the
/// filters and the ordering look at.
pub(crate) struct Candidate {
    /// The room, and what the room lists know of it (its encryption and
    /// type).
    pub room: Arc<room_lists::RoomFacts>,
    pub membership: MembershipState,
    /// The stream position of the user's member event.
    pub member_pos: i64,
    pub bump_stamp: i64,
    /// An invite marked `is_direct`.
    pub invite_direct: bool,
}

impl Candidate {
    pub fn room_id(&self) -> &OwnedRoomId {
        &self.room.room_id
    }
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
    let mut view = candidates(s, &user, since, to).await?;
    let candidates = std::mem::take(&mut view.rooms);
    let mut facts = rooms::Facts::new(view.direct, view.tags);
    let Windows {
        configs,
        lists,
        list_rooms,
    } = windows(s, req, &candidates, &mut facts).await?;
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
    let mut room_builder = rooms::Builder::new(s, who, since, to).await?;
    let afresh: Vec<(&Candidate, &Arc<RoomConfig>)> = configs
        .iter()
        .filter(|(room_id, (c, config))| {
            rooms::sent_afresh(c, config, snapshot.rooms.get(**room_id))
        })
        .map(|(_, (c, config))| (*c, config))
        .collect();
    room_builder.prefetch(&afresh).await?;
    for (room_id, (candidate, config)) in &configs {
        let sent = snapshot.rooms.get(*room_id);
        if let Some((room, sent)) = room_builder.room(candidate, config, sent, &facts).await? {
            response.rooms.insert((*room_id).to_owned(), room);
            snapshot.rooms.insert((*room_id).to_owned(), sent);
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
    Ok(Built {
        response,
        snapshot,
        has_updates,
        candidates,
    })
}

/// What wakes a long-poll: the candidate rooms (their events, receipts and
/// typing), the user (memberships, account data), the device's to-device
/// messages and device list changes.
fn topics(who: &Requester, candidates: &[Candidate]) -> Vec<Topic> {
    let user = who.user_id();
    let mut topics: Vec<Topic> = candidates
        .iter()
        .map(|c| Topic::Room(c.room_id().clone()))
        .collect();
    topics.push(Topic::User(user.clone()));
    topics.push(ToDevice::topic(who));
    topics.push(DeviceLists::topic(&user));
    topics
}

/// The rooms the lists and subscriptions ask for, each with its config
/// (the union of those asking for it).
type Configs<'a> = BTreeMap<&'a RoomId, (&'a Candidate, Arc<RoomConfig>)>;

/// What the lists and subscriptions ask for.
struct Windows<'a> {
    configs: Configs<'a>,
    /// Each list's count: the rooms its filters let through.
    lists: BTreeMap<String, usize>,
    /// The rooms of each list's windows.
    list_rooms: BTreeMap<String, Vec<OwnedRoomId>>,
}

/// Each list's rooms filtered, sorted by recency (newest `bump_stamp`
/// first) and cut to its ranges; and the subscribed rooms the user has.
async fn windows<'a>(
    s: &Services,
    req: &SlidingRequest,
    candidates: &'a [Candidate],
    facts: &mut rooms::Facts,
) -> Result<Windows<'a>> {
    let mut configs = Configs::new();
    let mut lists = BTreeMap::new();
    let mut list_rooms: BTreeMap<String, Vec<OwnedRoomId>> = BTreeMap::new();
    for (name, list) in &req.req.lists {
        let extra = req.extra_filters.get(name).cloned().unwrap_or_default();
        let mut matching: Vec<&Candidate> = Vec::new();
        for c in candidates {
            if facts.matches(s, c, list.filters.as_ref(), &extra).await? {
                matching.push(c);
            }
        }
        sort_windows(&mut matching, &list.ranges);
        let config = Arc::new(RoomConfig::from_parts(
            list.room_details.timeline_limit,
            &list.room_details.required_state,
        ));
        let mut in_windows = Vec::new();
        for (a, b) in &list.ranges {
            let (a, b) = (u64::from(*a) as usize, u64::from(*b) as usize);
            for c in matching.iter().skip(a).take(b.saturating_sub(a) + 1) {
                RoomConfig::merge_into(&mut configs, c, &config);
                in_windows.push(c.room_id().clone());
            }
        }
        lists.insert(name.clone(), matching.len());
        list_rooms.insert(name.clone(), in_windows);
    }
    for (room_id, sub) in &req.req.room_subscriptions {
        if let Some(c) = candidates.iter().find(|c| c.room_id() == room_id) {
            let config = Arc::new(RoomConfig::from_parts(
                sub.timeline_limit,
                &sub.required_state,
            ));
            RoomConfig::merge_into(&mut configs, c, &config);
        }
    }
    Ok(Windows {
        configs,
        lists,
        list_rooms,
    })
}

/// Puts a list's rooms in recency order (newest `bump_stamp` first, then
/// by room id) as far as its ranges reach: the rooms after the last range
/// are only counted, so they are left unsorted.
fn sort_windows(matching: &mut [&Candidate], ranges: &[(UInt, UInt)]) {
    let order = |a: &&Candidate, b: &&Candidate| {
        b.bump_stamp
            .cmp(&a.bump_stamp)
            .then_with(|| a.room_id().cmp(b.room_id()))
    };
    let reach = ranges
        .iter()
        .map(|(_, b)| (u64::from(*b) as usize).saturating_add(1))
        .max()
        .unwrap_or(0)
        .min(matching.len());
    if reach == 0 {
        return;
    }
    if reach < matching.len() {
        matching.select_nth_unstable_by(reach - 1, order);
    }
    matching[..reach].sort_unstable_by(order);
}

/// The rooms a list may show: every joined, invited or knocked room, and a
/// room left or banned from within the window (so the client sees the
/// leave); not an invite from an ignored user. With their `bump_stamp`.
/// From the user's room list in memory (`room_lists.rs`); the database is
/// read only for a room whose `bump_stamp` memory cannot tell.
async fn candidates(
    s: &Services,
    user: &OwnedUserId,
    since: Option<i64>,
    to: i64,
) -> Result<room_lists::ListView<Candidate>> {
    let ignored = s.account_data.ignored_users(user).await?;
    let mut unknown = false;
    let mut view = s
        .sliding
        .lists
        .view(s, user, |m| {
            let wanted = match m.membership {
                MembershipState::Join | MembershipState::Knock => true,
                MembershipState::Invite => !m.inviter.as_ref().is_some_and(|i| ignored.contains(i)),
                MembershipState::Leave | MembershipState::Ban => {
                    since.is_some_and(|since| m.pos > since)
                }
                _ => false,
            };
            // Joined after the answer's position: the next answer has it.
            if !wanted || m.pos > to {
                return None;
            }
            let bump_stamp = if m.membership == MembershipState::Join {
                match m.room.known_bump(to) {
                    Some(bump) => Some(bump.unwrap_or(m.pos)),
                    None => {
                        unknown = true;
                        None
                    }
                }
            } else {
                Some(m.pos)
            };
            Some(Candidate {
                room: m.room.clone(),
                membership: m.membership.clone(),
                member_pos: m.pos,
                bump_stamp: bump_stamp.unwrap_or(UNKNOWN_BUMP),
                invite_direct: m.invite_direct,
            })
        })
        .await?;
    if unknown {
        let never_read: Vec<&Arc<room_lists::RoomFacts>> = view
            .rooms
            .iter()
            .filter(|c| c.bump_stamp == UNKNOWN_BUMP)
            .map(|c| &c.room)
            .collect();
        room_lists::RoomFacts::load_bumps(s, &never_read).await?;
        for c in view
            .rooms
            .iter_mut()
            .filter(|c| c.bump_stamp == UNKNOWN_BUMP)
        {
            c.bump_stamp = c.room.bump_stamp(s, to).await?.unwrap_or(c.member_pos);
        }
    }
    Ok(view)
}

/// A candidate's `bump_stamp` before memory or the database told it.
const UNKNOWN_BUMP: i64 = i64::MIN;

impl crate::services::workers::CacheSizes for Connections {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        let (users, rooms, facts) = self.lists.sizes();
        vec![
            ("connections", self.conns.lock().len()),
            ("room_list_users", users),
            ("room_list_rooms", rooms),
            ("room_facts", facts),
        ]
    }
}
