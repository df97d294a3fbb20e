//! Rooms and their events: the event pipeline (build, authorize, persist,
//! notify), room state, room creation and membership.
//!
//! Creating events is serialized per room (one async mutex per room guards
//! that room's head: forward extremities, depth and current state); rooms
//! proceed in parallel. Writing them is a group commit ([`writer`]): the
//! room's lock is released once the event is queued. See ARCHITECTURE.md,
//! "The event pipeline".

pub mod create;
mod hidden;
mod membership;
mod power;
mod state;
pub mod threads;
pub mod timeline;
mod txns;
mod visibility;
mod writer;

pub use create::CreateRoom;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::events::TimelineEventType;
use ruma::room_version_rules::{
    EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules,
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId,
    RoomVersionId, UserId,
};
use serde_json::Value;

use crate::error::{MatrixError, Result};
use crate::keys::SigningKey;
use crate::metrics::CacheLookups;
use crate::model::pdu::{self, Pdu};
use crate::model::state::StateMap;
use crate::model::viewer::ViewerTxns;
use crate::services::expiring::bounded_lru;
use crate::services::pipeline::{BoxFuture, EventLookup, Settled, Subscribers};
use crate::services::stream::{Stream, Topic};
use crate::storage::Storage;
use crate::storage::events::{DirectoryFlag, NewStateGroup, PersistEvent, StateEntryRow, TxnKey};

/// Room versions this server creates and joins: every stable one, 1 to 12
/// (ruma's rules say how each builds, ids, authorizes and redacts events).
pub const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 12] = [
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// A full snapshot is written after this many deltas, so finding the state at
/// any event reads at most this many state groups.
const MAX_STATE_CHAIN: i64 = 64;

/// How many parsed events [`Rooms::pdu`] keeps: enough for the state and
/// recent timeline of a few hundred rooms (about 1 KiB each).
const EVENT_CACHE_SIZE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(4096).unwrap();

/// What the pipeline needs to know about a room to append to it. It runs
/// ahead of the database by the events still in the write queue.
struct RoomHead {
    version: RoomVersionId,
    extremities: Vec<OwnedEventId>,
    depth: i64,
    state_group: i64,
    chain_length: i64,
    state: Arc<StateMap>,
    /// No event after this stream position changed `state`: the state at
    /// any later position is `state`. The position of the newest state
    /// event appended; at load, the newest position handed out.
    state_changed_at: i64,
    /// Set when an event built on this head failed to be written (the
    /// head is then reloaded).
    failed: writer::HeadFailed,
    /// The stream position of the newest event appended through this head:
    /// until it is written the head is ahead of the database and must stay
    /// loaded ([`Rooms::evict_idle_heads`]).
    queued_upto: i64,
    /// The newest client transactions, which may still be queued (older
    /// ones are found in the database).
    recent_txns: RecentTxns,
}

/// The transaction ids sent in a room lately: every one whose event is still
/// queued, since a retry finds those here only (the database does not have
/// them yet), and of the written ones the newest, up to [`RecentTxns::KEEP`]
/// entries in all.
#[derive(Default)]
struct RecentTxns {
    ids: HashMap<String, OwnedEventId>,
    /// Keys in the order sent, with their events' stream positions.
    order: VecDeque<(String, i64)>,
}

impl RecentTxns {
    const KEEP: usize = 256;

    fn key(sender: &str, device: &str, scope: &str, txn: &str) -> String {
        format!("{sender}\0{device}\0{scope}\0{txn}")
    }

    /// Notes `key`'s event at stream position `pos`, then forgets the oldest
    /// entries past `KEEP` whose events are written (at or below
    /// `persisted`). An entry still queued is never forgotten, however many
    /// follow it: the write queue bounds them.
    fn insert(&mut self, key: String, event_id: OwnedEventId, pos: i64, persisted: i64) {
        self.order.push_back((key.clone(), pos));
        self.ids.insert(key, event_id);
        while self.order.len() > Self::KEEP
            && self.order.front().is_some_and(|(_, p)| *p <= persisted)
            && let Some((old, _)) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
    }
}

/// An idempotent client send: which device sent it, where (the scope
/// names the endpoint and path, e.g. `send:!room`) and the client's
/// transaction id. The same three again are the same event.
#[derive(Debug, Clone, Copy)]
pub struct TxnRef<'a> {
    pub device: &'a str,
    pub scope: &'a str,
    pub txn: &'a str,
}

/// A new event to append to a room.
pub struct NewEvent<'a> {
    pub room_id: &'a RoomId,
    pub sender: &'a UserId,
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Value,
    /// For idempotent client sends.
    pub txn: Option<TxnRef<'a>>,
    pub redacts: Option<OwnedEventId>,
    /// An application service's `ts` (timestamp massaging); else the clock's.
    pub origin_server_ts: Option<i64>,
}

/// The writer before it starts, with its end of the queue.
type IdleWriter = (
    writer::Writer,
    tokio::sync::mpsc::UnboundedReceiver<writer::PendingWrite>,
);

/// A loaded head's (failure flag, current state, where the state last changed).
type LoadedState = (writer::HeadFailed, Arc<StateMap>, i64);

pub struct Rooms {
    storage: Storage,
    server_name: OwnedServerName,
    signing_key: Arc<SigningKey>,
    stream: Arc<Stream>,
    /// Least recently used first; beyond `caches.room_heads` idle heads are
    /// dropped (and reloaded from the database when next needed).
    heads: Mutex<lru::LruCache<OwnedRoomId, Arc<tokio::sync::Mutex<Option<RoomHead>>>>>,
    max_heads: usize,
    /// The newest stream position of each room, so `/sync` skips rooms
    /// with nothing new without a query (advanced by the writer). At most
    /// `caches.rooms`, like `versions`.
    latest: Arc<Mutex<lru::LruCache<OwnedRoomId, i64>>>,
    /// Room versions never change: cached after the first lookup.
    versions: Mutex<lru::LruCache<OwnedRoomId, RoomVersionId>>,
    state: state::StateCache,
    /// Recently loaded events by id (events never change but for
    /// redaction, which evicts the target). A new event is put here when
    /// queued, so the next one's auth checks find it before it is written.
    events: Arc<Mutex<lru::LruCache<String, Arc<Pdu>>>>,
    /// `events` over the database.
    cached: Arc<CachedEvents>,
    /// Which transaction ids each device sent, so a new one needs no query
    /// ([`Rooms::transaction_event`]).
    txns: txns::SentTxns,
    /// The group commit's queue.
    writes: tokio::sync::mpsc::UnboundedSender<writer::PendingWrite>,
    /// The writer and its end of the queue until [`Rooms::start`].
    writer: Mutex<Option<IdleWriter>>,
    /// Each loaded head's current state (with the head's failure flag and
    /// where the state last changed), for [`Rooms::membership`] and
    /// [`Rooms::current_state`] without the room's lock or a query.
    /// Dropped with the head, so bounded by `heads`.
    current: Mutex<HashMap<OwnedRoomId, LoadedState>>,
    default_version: RoomVersionId,
    /// Event timestamps and ages (see [`RoomsDeps::clock`]).
    clock: crate::clock::SharedClock,
    /// History floors and erased senders ([`hidden`]).
    hidden: hidden::Hidden,
    /// See [`RoomsDeps::ephemeral_messages`].
    ephemeral_messages: bool,
    /// The rooms with threads ([`threads`]).
    thread_rooms: threads::ThreadRooms,
    /// Hits and misses of the caches above.
    lookups: Arc<RoomLookups>,
}

/// Hits and misses of the room caches (`myelin_cache_hits_total`).
#[derive(Default)]
struct RoomLookups {
    events: CacheLookups,
    heads: CacheLookups,
    current_state: CacheLookups,
    versions: CacheLookups,
    latest: CacheLookups,
}

/// The event cache over the database: what [`Rooms::pdu_shared`] reads
/// through, and what the pipeline's subscribers look events up in.
struct CachedEvents {
    storage: Storage,
    events: Arc<Mutex<lru::LruCache<String, Arc<Pdu>>>>,
    lookups: Arc<RoomLookups>,
}

impl CachedEvents {
    async fn get(&self, event_id: &str) -> Result<Option<Arc<Pdu>>> {
        let cached = self.events.lock().get(event_id).cloned();
        if let Some(p) = self.lookups.events.of(cached) {
            return Ok(Some(p));
        }
        let Some(row) = self.storage.event(event_id).await? else {
            return Ok(None);
        };
        let pdu = Arc::new(row_to_pdu(row)?);
        self.events.lock().put(event_id.to_owned(), pdu.clone());
        Ok(Some(pdu))
    }
}

impl EventLookup for CachedEvents {
    fn event<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Option<Arc<Pdu>>>> {
        Box::pin(self.get(event_id))
    }

    fn edits_of<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Vec<OwnedEventId>>> {
        Box::pin(async move { Ok(self.storage.replacements_of(event_id).await?) })
    }
}

/// What the room service is built from.
pub struct RoomsDeps<'a> {
    pub storage: Storage,
    pub server_name: OwnedServerName,
    pub signing_key: Arc<SigningKey>,
    pub stream: Arc<Stream>,
    /// The version new rooms get unless they ask for another.
    pub default_version: RoomVersionId,
    /// What hears of every committed event.
    pub subscribers: Arc<Subscribers>,
    /// The bounds of the room caches (`caches.room_heads`, `caches.rooms`).
    pub caches: &'a crate::config::CacheConfig,
    /// The clock new events take their `origin_server_ts` from (and
    /// events' `unsigned.age` is measured against).
    pub clock: crate::clock::SharedClock,
    /// Whether messages may ask to be pruned (`rooms.ephemeral_messages`).
    pub ephemeral_messages: bool,
    /// Where the writer counts committed events and group commits.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Rooms {
    pub fn new(deps: RoomsDeps<'_>) -> Self {
        let RoomsDeps {
            storage,
            server_name,
            signing_key,
            stream,
            default_version,
            subscribers,
            caches,
            clock,
            ephemeral_messages,
            metrics,
        } = deps;
        let latest = Arc::new(Mutex::new(bounded_lru(caches.rooms)));
        let events = Arc::new(Mutex::new(lru::LruCache::new(EVENT_CACHE_SIZE)));
        let lookups = Arc::new(RoomLookups::default());
        let cached = Arc::new(CachedEvents {
            storage: storage.clone(),
            events: events.clone(),
            lookups: lookups.clone(),
        });
        let (writes, queued) = tokio::sync::mpsc::unbounded_channel();
        let writer = writer::Writer {
            storage: storage.clone(),
            stream: stream.clone(),
            latest: latest.clone(),
            events: events.clone(),
            subscribers,
            lookup: cached.clone(),
            metrics,
        };
        Self {
            state: state::StateCache::new(storage.clone()),
            storage,
            server_name,
            signing_key,
            stream,
            heads: Mutex::new(lru::LruCache::unbounded()),
            max_heads: caches.room_heads.max(1),
            versions: Mutex::new(bounded_lru(caches.rooms)),
            latest,
            events,
            cached,
            txns: txns::SentTxns::new(),
            writes,
            writer: Mutex::new(Some((writer, queued))),
            current: Mutex::new(HashMap::new()),
            default_version,
            thread_rooms: threads::ThreadRooms::default(),
            clock,
            hidden: hidden::Hidden::default(),
            ephemeral_messages,
            lookups,
        }
    }

    /// Starts the group-commit writer (once; events appended before wait
    /// in its queue).
    pub fn start(&self, workers: &crate::services::workers::Workers) {
        if let Some((writer, queued)) = self.writer.lock().take() {
            writer.start(queued, workers);
        }
    }

    pub fn default_version(&self) -> &RoomVersionId {
        &self.default_version
    }

    fn room_lock(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<Option<RoomHead>>> {
        let mut heads = self.heads.lock();
        if let Some(lock) = self.lookups.heads.of(heads.get(room_id)) {
            return lock.clone();
        }
        let lock = Arc::new(tokio::sync::Mutex::new(None));
        heads.put(room_id.to_owned(), lock.clone());
        if heads.len() > self.max_heads {
            self.evict_idle_heads(&mut heads);
        }
        lock
    }

    /// Drops the least recently used heads past `max_heads` that are idle:
    /// nobody holds or waits for the room's lock (the map holds the only
    /// reference, and new ones are taken under the map's lock) and every
    /// event appended through the head is written, so the database has
    /// caught up with it and a reload finds the same extremities and state.
    /// Looks at a few of the oldest only; a busy one is retried next time.
    fn evict_idle_heads(
        &self,
        heads: &mut lru::LruCache<OwnedRoomId, Arc<tokio::sync::Mutex<Option<RoomHead>>>>,
    ) {
        const LOOK_AT: usize = 16;
        let written = self.stream.current();
        let excess = heads.len() - self.max_heads;
        let idle: Vec<OwnedRoomId> = heads
            .iter()
            .rev()
            .take(LOOK_AT)
            .filter(|(_, lock)| {
                Arc::strong_count(lock) == 1
                    && lock
                        .try_lock()
                        .is_ok_and(|head| head.as_ref().is_none_or(|h| h.queued_upto <= written))
            })
            .map(|(room_id, _)| room_id.clone())
            .take(excess)
            .collect();
        let mut current = self.current.lock();
        for room_id in idle {
            heads.pop(&room_id);
            current.remove(&room_id);
        }
    }

    /// The room's version, or `None` for a room this server does not know.
    pub async fn version(&self, room_id: &RoomId) -> Result<Option<RoomVersionId>> {
        let cached = self.versions.lock().get(room_id).cloned();
        if let Some(v) = self.lookups.versions.of(cached) {
            return Ok(Some(v));
        }
        let Some(row) = self.storage.room(room_id.as_str()).await? else {
            return Ok(None);
        };
        let version =
            RoomVersionId::try_from(row.room_version.as_str()).map_err(MatrixError::internal)?;
        self.versions
            .lock()
            .put(room_id.to_owned(), version.clone());
        Ok(Some(version))
    }

    /// The event in client format as `viewer` (user, device) sees it: with
    /// redactions applied and the transaction id for the sending device.
    pub async fn client_event(&self, pdu: &Pdu, viewer: Option<(&str, &str)>) -> Result<Value> {
        Ok(self
            .client_events(std::slice::from_ref(pdu), viewer)
            .await?
            .pop()
            .unwrap_or(Value::Null))
    }

    /// [`Rooms::client_event`] for a list of events, in order (the viewer's
    /// transaction ids found in one query).
    pub async fn client_events<P: pdu::AsPdu>(
        &self,
        pdus: &[P],
        viewer: Option<(&str, &str)>,
    ) -> Result<Vec<Value>> {
        Ok(self
            .client_events_raw(pdus, viewer)
            .await?
            .iter()
            .map(|event| serde_json::to_value(event).unwrap_or(Value::Null))
            .collect())
    }

    /// [`Rooms::client_events`] as they are written out.
    pub async fn client_events_raw<P: pdu::AsPdu>(
        &self,
        pdus: &[P],
        viewer: Option<(&str, &str)>,
    ) -> Result<Vec<pdu::ClientEvent>> {
        let txns = match viewer {
            Some((user, device)) => {
                let pdus: Vec<&Pdu> = pdus.iter().map(|p| p.as_pdu()).collect();
                self.transaction_ids(&pdus, user, device).await?
            }
            None => ViewerTxns::default(),
        };
        self.client_events_with(pdus, &txns).await
    }

    /// The transaction ids `device` of `user` sent these events with. Events
    /// built here or read with their row know their transaction; the others
    /// are looked up in one query.
    pub async fn transaction_ids(
        &self,
        pdus: &[&Pdu],
        user: &str,
        device: &str,
    ) -> Result<ViewerTxns> {
        let unknown: Vec<&str> = pdus
            .iter()
            .filter(|p| p.sender.as_str() == user && p.sent_with == pdu::SentWith::Unknown)
            .map(|p| p.event_id.as_str())
            .collect();
        let looked_up = if unknown.is_empty() {
            HashMap::new()
        } else {
            self.storage
                .transaction_ids_of(&unknown, user, device)
                .await?
        };
        Ok(ViewerTxns::new(user, device, looked_up))
    }

    /// The client form of events as JSON text (what `/sync` writes out as
    /// it is), with the viewer's transaction ids
    /// ([`Rooms::transaction_ids`]; none for `ViewerTxns::default()`).
    /// A thread root carries its thread's summary for the viewer
    /// ([`threads`]).
    pub async fn client_events_with<P: pdu::AsPdu>(
        &self,
        pdus: &[P],
        txns: &ViewerTxns,
    ) -> Result<Vec<pdu::ClientEvent>> {
        let mut out = self.client_forms(pdus, txns).await?;
        self.add_thread_summaries(pdus, &mut out, txns).await?;
        Ok(out)
    }

    /// [`Rooms::client_events_with`] without the servers' aggregations.
    async fn client_forms<P: pdu::AsPdu>(
        &self,
        pdus: &[P],
        txns: &ViewerTxns,
    ) -> Result<Vec<pdu::ClientEvent>> {
        let now = self.clock.now();
        let mut out = Vec::with_capacity(pdus.len());
        // Events come grouped by room: look the version up once per run.
        let mut last: Option<(&RoomId, RoomVersionId)> = None;
        for held in pdus {
            let pdu: &Pdu = held.as_pdu();
            let shared = held.shared();
            let version = match &last {
                Some((room, version)) if *room == &*pdu.room_id => version.clone(),
                _ => {
                    let version = self.known_version(&pdu.room_id).await?;
                    last = Some((&pdu.room_id, version.clone()));
                    version
                }
            };
            let redaction = match &pdu.redacted_by {
                Some(id) => self.pdu_shared(id.as_str()).await?,
                None => None,
            };
            let pruned = match txns.user() {
                Some(viewer) => self.erased_for(viewer, pdu).await?,
                None => false,
            };
            out.push(pdu.client_event(
                shared,
                &version,
                (redaction.as_deref(), pruned),
                txns.get(pdu),
                now,
            ));
        }
        Ok(out)
    }

    /// The newest stream position of any event in the room.
    pub async fn latest_position(&self, room_id: &RoomId) -> Result<i64> {
        let cached = self.latest.lock().get(room_id).copied();
        if let Some(p) = self.lookups.latest.of(cached) {
            return Ok(p);
        }
        let p = self.storage.room_max_stream(room_id.as_str()).await?;
        let mut latest = self.latest.lock();
        let entry = latest.get_or_insert_mut_ref(room_id, || p);
        *entry = (*entry).max(p);
        Ok(*entry)
    }

    /// Drops every cached fact about a room (after it was purged), so the
    /// room id can be created or joined again without a restart.
    pub fn forget_caches(&self, room_id: &RoomId) {
        self.heads.lock().pop(room_id);
        self.current.lock().remove(room_id);
        self.versions.lock().pop(room_id);
        self.latest.lock().pop(room_id);
        // Rare: simpler to start the event cache afresh than to find the room's.
        self.events.lock().clear();
    }

    /// The version, or 404 `M_NOT_FOUND`.
    pub async fn known_version(&self, room_id: &RoomId) -> Result<RoomVersionId> {
        self.version(room_id)
            .await?
            .ok_or_else(|| MatrixError::not_found("Room not found"))
    }

    /// Loads one event, from the event cache when it is there.
    pub async fn pdu(&self, event_id: &str) -> Result<Option<Pdu>> {
        Ok(self.pdu_shared(event_id).await?.map(|p| Pdu::clone(&p)))
    }

    /// [`Rooms::pdu`] without a copy: the cached event itself.
    pub async fn pdu_shared(&self, event_id: &str) -> Result<Option<Arc<Pdu>>> {
        self.cached.get(event_id).await
    }

    /// An event read as a row, from the event cache when there (no parse),
    /// else parsed and cached.
    pub fn pdu_from_row(&self, row: crate::storage::events::EventRow) -> Result<Arc<Pdu>> {
        let cached = self.events.lock().get(row.event_id.as_str()).cloned();
        if let Some(p) = self.lookups.events.of(cached) {
            return Ok(p);
        }
        let id = row.event_id.as_str().to_owned();
        let pdu = Arc::new(row_to_pdu(row)?);
        self.events.lock().put(id, pdu.clone());
        Ok(pdu)
    }

    /// The events of many rooms' refs (room → refs, order kept), from the
    /// event cache where there, the rest read in one query and cached.
    /// Events deleted in between are left out.
    pub async fn pdus_for_refs(
        &self,
        refs: HashMap<OwnedRoomId, Vec<crate::storage::events::EventRef>>,
    ) -> Result<HashMap<OwnedRoomId, Vec<Arc<Pdu>>>> {
        let missing: Vec<&str> = {
            let mut cache = self.events.lock();
            let events = &self.lookups.events;
            refs.values()
                .flatten()
                .filter(|r| !events.record(cache.get(r.event_id.as_str()).is_some()))
                .map(|r| r.event_id.as_str())
                .collect()
        };
        let mut json = if missing.is_empty() {
            HashMap::new()
        } else {
            self.storage.events_json(&missing).await?
        };
        let mut out = HashMap::with_capacity(refs.len());
        for (room, room_refs) in refs {
            let mut pdus = Vec::with_capacity(room_refs.len());
            for r in room_refs {
                let cached = self.events.lock().get(r.event_id.as_str()).cloned();
                let pdu = match cached {
                    Some(p) => p,
                    None => match json.remove(&r.event_id) {
                        Some(text) => self.pdu_from_row(r.with_json(text))?,
                        // Evicted since the first look: read it alone.
                        None => match self.pdu_shared(r.event_id.as_str()).await? {
                            Some(p) => p,
                            None => continue,
                        },
                    },
                };
                pdus.push(pdu);
            }
            out.insert(room, pdus);
        }
        Ok(out)
    }

    /// Drops events from the event cache (after they were deleted).
    pub fn forget_events(&self, event_ids: &[OwnedEventId]) {
        let mut cache = self.events.lock();
        for id in event_ids {
            cache.pop(id.as_str());
        }
    }

    async fn load_head(&self, room_id: &RoomId) -> Result<RoomHead> {
        let version = self.known_version(room_id).await?;
        let extremities = self.storage.forward_extremities(room_id.as_str()).await?;
        let mut depth = 0;
        let mut state_group = 0;
        for id in &extremities {
            if let Some(row) = self.storage.event(id.as_str()).await?
                && row.depth >= depth
            {
                depth = row.depth;
                state_group = row.state_group.unwrap_or(0);
            }
        }
        let (state, chain_length) = self.state.load(state_group).await?;
        Ok(RoomHead {
            version,
            extremities,
            depth,
            state_group,
            chain_length,
            state,
            state_changed_at: self.stream.last_reserved(),
            failed: writer::HeadFailed::default(),
            queued_upto: 0,
            recent_txns: RecentTxns::default(),
        })
    }

    /// The room's head, loaded when missing or when a write built on it
    /// failed.
    async fn head<'g>(
        &self,
        guard: &'g mut Option<RoomHead>,
        room_id: &RoomId,
    ) -> Result<&'g mut RoomHead> {
        if guard.as_ref().is_some_and(|h| h.failed.is_set()) {
            *guard = None;
        }
        if guard.is_none() {
            let head = self.load_head(room_id).await?;
            self.current.lock().insert(
                room_id.to_owned(),
                (
                    head.failed.clone(),
                    head.state.clone(),
                    head.state_changed_at,
                ),
            );
            *guard = Some(head);
        }
        Ok(guard.as_mut().expect("head loaded above"))
    }

    /// The current state of a room as (type, state_key) → event id.
    pub async fn current_state(&self, room_id: &RoomId) -> Result<Arc<StateMap>> {
        Ok(self.current_state_and_change(room_id).await?.0)
    }

    /// A loaded head's current state and where it last changed, without
    /// the room's lock (which a burst of syncs would queue behind sends on).
    fn loaded_current(&self, room_id: &RoomId) -> Option<(Arc<StateMap>, i64)> {
        let cached = self.current.lock().get(room_id).cloned();
        let (failed, state, changed_at) = self.lookups.current_state.of(cached)?;
        (!failed.is_set()).then_some((state, changed_at))
    }

    /// The current state, and the stream position after which nothing
    /// changed it (the state at any later position is this one).
    pub async fn current_state_and_change(&self, room_id: &RoomId) -> Result<(Arc<StateMap>, i64)> {
        if let Some(loaded) = self.loaded_current(room_id) {
            return Ok(loaded);
        }
        let lock = self.room_lock(room_id);
        let mut guard = lock.lock().await;
        let head = self.head(&mut guard, room_id).await?;
        Ok((head.state.clone(), head.state_changed_at))
    }

    /// The state after an event (its state group).
    pub async fn state_after(&self, pdu_state_group: i64) -> Result<Arc<StateMap>> {
        Ok(self.state.load(pdu_state_group).await?.0)
    }

    /// The state event currently in force for (type, state_key).
    pub async fn current_state_pdu(
        &self,
        room_id: &RoomId,
        ty: &str,
        state_key: &str,
    ) -> Result<Option<Pdu>> {
        match self
            .storage
            .current_state_event_id(room_id.as_str(), ty, state_key)
            .await?
        {
            Some(id) => self.pdu(id.as_str()).await,
            None => Ok(None),
        }
    }

    /// The user's current membership in the room (`join`, `invite`, `leave`, `ban`, `knock`).
    pub async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<String>> {
        // A loaded head knows the member event without a query.
        if let Some((state, _)) = self.loaded_current(room_id) {
            let key = ("m.room.member".to_owned(), user_id.as_str().to_owned());
            return Ok(match state.get(&key) {
                Some(id) => self
                    .pdu_shared(id.as_str())
                    .await?
                    .and_then(|p| p.membership()),
                None => None,
            });
        }
        Ok(self
            .current_state_pdu(room_id, "m.room.member", user_id.as_str())
            .await?
            .and_then(|p| p.membership()))
    }

    /// The event a device's client transaction made, once written (one
    /// still queued is found by [`Rooms::append`]). A transaction id the
    /// device never used (nearly every send) is answered from memory once
    /// the device's transactions are loaded (`txns.rs`).
    pub async fn transaction_event(
        &self,
        user_id: &str,
        device_id: &str,
        scope: &str,
        txn_id: &str,
    ) -> Result<Option<OwnedEventId>> {
        let mut known = self.txns.check(user_id, device_id, scope, txn_id);
        if known == txns::Known::Unloaded {
            self.load_txns(user_id, device_id).await;
            known = self.txns.check(user_id, device_id, scope, txn_id);
        }
        if known == txns::Known::New {
            return Ok(None);
        }
        Ok(self
            .storage
            .transaction_event(user_id, device_id, scope, txn_id)
            .await?)
    }

    /// Loads a device's transactions into `txns`: after every event queued
    /// so far is written, so none is missed. A failure leaves it unloaded
    /// (the caller asks the database). The wait is short: the queue drains
    /// in milliseconds, and if a position stays in flight longer, asking the
    /// database costs this send less than waiting would.
    async fn load_txns(&self, user_id: &str, device_id: &str) {
        const WAIT: std::time::Duration = std::time::Duration::from_secs(1);
        let Some(loading) = self.txns.begin(user_id, device_id) else {
            return;
        };
        let queued = self.stream.last_reserved();
        let rows = match self.stream.wait_for(queued, WAIT).await {
            true => self
                .storage
                .device_transactions(user_id, device_id, self.txns.load_limit())
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "loading a device's transactions"))
                .ok(),
            false => None,
        };
        loading.finish(rows);
    }

    /// Builds, signs, authorizes and persists a new event; returns it
    /// persisted. An event the auth rules reject is 403 `M_FORBIDDEN`.
    pub async fn append(&self, new: NewEvent<'_>) -> Result<Pdu> {
        // A room cannot be replaced by itself (as Synapse refuses).
        if new.kind == TimelineEventType::RoomTombstone
            && new.content.get("replacement_room").and_then(Value::as_str)
                == Some(new.room_id.as_str())
        {
            return Err(MatrixError::invalid_param(
                "Cannot send a tombstone event that points to the same room",
            ));
        }
        let lock = self.room_lock(new.room_id);
        let mut guard = lock.lock().await;
        let head = self.head(&mut guard, new.room_id).await?;
        // Decided under the lock: concurrent repeats write one event.
        if let Some(current) = self.unchanged_member(&head.state, &new).await? {
            return Ok(current);
        }
        if let Some(sent) = self.retried_send(head, &new).await? {
            return Ok(sent);
        }
        let version = head.version.clone();
        let rules = version
            .rules()
            .ok_or_else(|| MatrixError::internal("unknown room version rules"))?;
        let room_id = new.room_id;
        let txn = new
            .txn
            .map(|t| (new.sender.as_str(), t.device, t.scope, t.txn));
        let obj = self.event_json(new, head, &rules)?;
        let pdu = self
            .sign_and_check(obj, &version, room_id.to_owned(), &head.state)
            .await?;

        let (pdu, written) = self.enqueue(pdu, head, txn, None)?;
        drop(guard);
        self.finish(pdu, written).await
    }

    /// The event a retried client transaction made, when `new` repeats one.
    /// Callers look for written ones in the database first
    /// (`transaction_event`); ones still queued are in the room head.
    async fn retried_send(&self, head: &RoomHead, new: &NewEvent<'_>) -> Result<Option<Pdu>> {
        let Some(TxnRef { device, scope, txn }) = new.txn else {
            return Ok(None);
        };
        let sender = new.sender.as_str();
        if let Some(existing) = head
            .recent_txns
            .ids
            .get(&RecentTxns::key(sender, device, scope, txn))
            && let Some(pdu) = self.pdu(existing.as_str()).await?
        {
            return Ok(Some(pdu));
        }
        // Not queued, and not in the database when the caller looked.
        // A transaction the device may have sent (a retry) can have been
        // written and forgotten here since: ask the database again, under
        // the lock. A new transaction id, nearly every send, costs no query.
        // A device the filter does not hold (over 2^16 transactions) is
        // not asked again: its retry would have to race 256 written sends.
        if self.txns.check(sender, device, scope, txn) == txns::Known::Maybe
            && let Some(existing) = self
                .storage
                .transaction_event(sender, device, scope, txn)
                .await?
            && let Some(pdu) = self.pdu(existing.as_str()).await?
        {
            return Ok(Some(pdu));
        }
        Ok(None)
    }

    /// The new event's JSON before hashing and signing: its content (with
    /// `redacts` inside it where the room version says so), its auth events
    /// chosen from the head's state, and the head's extremities as its
    /// `prev_events`.
    fn event_json(
        &self,
        new: NewEvent<'_>,
        head: &RoomHead,
        rules: &RoomVersionRules,
    ) -> Result<CanonicalJsonObject> {
        let mut content = new.content;
        if let Some(redacts) = &new.redacts
            && rules.redaction.content_field_redacts
            && let Value::Object(map) = &mut content
        {
            map.insert("redacts".into(), Value::String(redacts.to_string()));
        }
        let auth_events = auth_event_ids(
            &new.kind,
            new.sender,
            new.state_key.as_deref(),
            &content,
            &head.state,
            rules,
        )?;

        let mut obj = CanonicalJsonObject::new();
        let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
        obj.insert("type".into(), s(&new.kind.to_string()));
        obj.insert("room_id".into(), s(new.room_id.as_str()));
        obj.insert("sender".into(), s(new.sender.as_str()));
        obj.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(
                new.origin_server_ts
                    .and_then(ruma::Int::new)
                    .unwrap_or_else(|| self.clock.now().get().into()),
            ),
        );
        obj.insert(
            "content".into(),
            ruma::canonical_json::to_canonical_value(&content)
                .map_err(|e| MatrixError::bad_json(e.to_string()))?,
        );
        if let Some(sk) = &new.state_key {
            obj.insert("state_key".into(), s(sk));
        }
        if let Some(r) = &new.redacts
            && !rules.redaction.content_field_redacts
        {
            obj.insert("redacts".into(), s(r.as_str()));
        }
        obj.insert(
            "prev_events".into(),
            CanonicalJsonValue::Array(head.extremities.iter().map(|e| s(e.as_str())).collect()),
        );
        obj.insert(
            "auth_events".into(),
            CanonicalJsonValue::Array(auth_events.iter().map(|e| s(e.as_str())).collect()),
        );
        let depth = head.depth + 1;
        obj.insert(
            "depth".into(),
            CanonicalJsonValue::Integer(depth.try_into().map_err(MatrixError::internal)?),
        );
        Ok(obj)
    }

    /// Hashes, signs and ids the PDU, then runs the authorization rules
    /// against `state` (the state before the event).
    async fn sign_and_check(
        &self,
        mut obj: CanonicalJsonObject,
        version: &RoomVersionId,
        room_id: OwnedRoomId,
        state: &StateMap,
    ) -> Result<Pdu> {
        let rules = version
            .rules()
            .ok_or_else(|| MatrixError::internal("unknown room version rules"))?;
        // Room versions 1 and 2: the id is chosen here and signed with the
        // event, and events are referenced with their hashes.
        let opaque_event_id = (rules.event_id_format == EventIdFormatVersion::V1)
            .then(|| opaque_id('$', &self.server_name));
        if let Some(id) = &opaque_event_id {
            obj.insert("event_id".into(), CanonicalJsonValue::String(id.clone()));
        }
        if rules.events_reference_format == EventsReferenceFormatVersion::V1 {
            for field in ["prev_events", "auth_events"] {
                self.add_reference_hashes(&mut obj, field, &rules).await?;
            }
        }
        // Before signing too: ruma refuses to sign an oversized PDU.
        check_size(&obj)?;
        ruma::signatures::hash_and_sign_event(
            self.server_name.as_str(),
            &self.signing_key.key_pair,
            &mut obj,
            &rules.redaction,
        )
        .map_err(|e| MatrixError::bad_json(format!("Cannot sign event: {e}")))?;
        check_size(&obj)?;
        let hash = ruma::signatures::reference_hash(&obj, &rules)
            .map_err(|e| MatrixError::bad_json(format!("Cannot hash event: {e}")))?;
        let event_id =
            OwnedEventId::try_from(opaque_event_id.unwrap_or_else(|| format!("${hash}")))
                .map_err(MatrixError::internal)?;
        let is_create =
            obj.get("type") == Some(&CanonicalJsonValue::String("m.room.create".into()));
        let room_id = if is_create && rules.authorization.room_create_event_id_as_room_id {
            OwnedRoomId::try_from(format!("!{hash}")).map_err(MatrixError::internal)?
        } else {
            room_id
        };
        let pdu = Pdu::from_json(event_id, room_id, obj).map_err(MatrixError::internal)?;

        // Load the events the rules may consult: the auth events and the
        // state they were chosen from.
        let mut needed: Vec<OwnedEventId> = pdu.auth_events.clone();
        if let Some(create) = state.get(&("m.room.create".to_owned(), String::new())) {
            needed.push(create.clone());
        }
        if let Ok(types) = ruma::state_res::auth_types_for_event(
            &pdu.kind,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        ) {
            needed.extend(
                types
                    .iter()
                    .filter_map(|(ty, sk)| state.get(&(ty.to_string(), sk.clone())).cloned()),
            );
        }
        let mut loaded: HashMap<OwnedEventId, Pdu> = HashMap::new();
        for id in needed {
            if !loaded.contains_key(&id)
                && let Some(p) = self.pdu(id.as_str()).await?
            {
                loaded.insert(id, p);
            }
        }
        let forbidden = |e: String| MatrixError::forbidden(format!("Event not allowed: {e}"));
        ruma::state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id| {
            loaded.get(id).cloned()
        })
        .map_err(forbidden)?;
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, |ty, sk| {
            state
                .get(&(ty.to_string(), sk.to_owned()))
                .and_then(|id| loaded.get(id))
                .cloned()
        })
        .map_err(forbidden)?;
        Ok(pdu)
    }

    /// Turns the event ids in `obj[field]` into `[id, {"sha256": reference
    /// hash}]` pairs, the form room versions 1 and 2 reference events in.
    async fn add_reference_hashes(
        &self,
        obj: &mut CanonicalJsonObject,
        field: &str,
        rules: &RoomVersionRules,
    ) -> Result<()> {
        let Some(CanonicalJsonValue::Array(refs)) = obj.get_mut(field) else {
            return Ok(());
        };
        for r in refs.iter_mut() {
            let CanonicalJsonValue::String(id) = r else {
                continue;
            };
            let event = self
                .pdu_shared(id)
                .await?
                .ok_or_else(|| MatrixError::internal(format!("referenced event {id} not found")))?;
            let hash = ruma::signatures::reference_hash(&event.canonical(), rules)
                .map_err(MatrixError::internal)?;
            let hashes = CanonicalJsonObject::from([(
                "sha256".to_owned(),
                CanonicalJsonValue::String(hash),
            )]);
            let id = CanonicalJsonValue::String(std::mem::take(id));
            *r = CanonicalJsonValue::Array(vec![id, CanonicalJsonValue::Object(hashes)]);
        }
        Ok(())
    }

    /// Queues the event and everything it changes for the writer, and
    /// advances the room head past it; [`Rooms::finish`] waits for the write.
    fn enqueue(
        &self,
        mut pdu: Pdu,
        head: &mut RoomHead,
        txn: Option<(&str, &str, &str, &str)>,
        new_room: Option<(&str, &str)>,
    ) -> Result<(Pdu, tokio::sync::oneshot::Receiver<Result<Vec<Settled>>>)> {
        pdu.sent_with =
            pdu::SentWith::from_pair(txn.map(|(_, d, _, t)| (d.to_owned(), t.to_owned())));
        let json = pdu.json.to_string();
        let reservation = self.stream.reserve();
        let pos = reservation.pos();
        self.touch_topics(&pdu, pos);
        let (after, new_group) = head.state_after(&pdu, pos);
        let state_group = after.group;
        let row = PersistEvent {
            stream_ordering: pos,
            event_id: pdu.event_id.to_string(),
            room_id: pdu.room_id.to_string(),
            depth: pdu.depth,
            event_type: pdu.kind.to_string(),
            state_key: pdu.state_key.clone(),
            sender: pdu.sender.to_string(),
            origin_server_ts: i64::from(pdu.origin_server_ts.get()),
            json,
            state_group,
            new_state_group: new_group,
            membership: pdu
                .membership()
                .map(ruma::events::room::member::MembershipState::from),
            prev_events: head.extremities.iter().map(|e| e.to_string()).collect(),
            new_room: new_room.map(|(v, c)| (v.to_owned(), c.to_owned())),
            txn: txn.map(|(u, d, sc, t)| TxnKey {
                user_id: u.to_owned(),
                device_id: d.to_owned(),
                scope: sc.to_owned(),
                txn_id: t.to_owned(),
            }),
            relation: {
                let relation = relation_of(&pdu.content_value());
                self.note_relation(&pdu.room_id, relation.as_ref());
                relation
            },
            redacts: pdu.redacts.as_ref().map(|r| r.to_string()),
            directory_flag: directory_flag_of(&pdu),
            expires_at: self
                .ephemeral_messages
                .then(|| pdu.self_destruct_after())
                .flatten(),
        };
        pdu.stream_ordering = pos;
        pdu.state_group = Some(state_group);
        let shared = Arc::new(pdu.clone());
        let written = self.queue_write(row, head, reservation, shared.clone())?;
        self.advance_head(head, &pdu, txn, after);
        self.events.lock().put(pdu.event_id.to_string(), shared);
        Ok((pdu, written))
    }

    /// Marks the room, and for a membership event its user, as changed at
    /// `pos`.
    fn touch_topics(&self, pdu: &Pdu, pos: i64) {
        self.stream.touch(Topic::Room(pdu.room_id.clone()), pos);
        if pdu.kind == TimelineEventType::RoomMember
            && let Some(user) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
        {
            self.stream.touch(Topic::User(user), pos);
        }
    }

    /// Hands the row to the writer; when the writer has stopped, gives the
    /// stream position back.
    fn queue_write(
        &self,
        row: PersistEvent,
        head: &RoomHead,
        reservation: crate::services::stream::Reservation,
        pdu: Arc<Pdu>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Vec<Settled>>>> {
        let (done, written) = tokio::sync::oneshot::channel();
        let queued = self.writes.send(writer::PendingWrite {
            row,
            room_id: pdu.room_id.clone(),
            head_failed: head.failed.clone(),
            reservation,
            pdu,
            done,
            queued: std::time::Instant::now(),
        });
        if let Err(tokio::sync::mpsc::error::SendError(w)) = queued {
            self.stream.complete(w.reservation);
            return Err(MatrixError::internal("the event writer has stopped"));
        }
        Ok(written)
    }

    /// Moves the room head past the queued `pdu` (its extremity, depth and
    /// state), and notes its state group and transaction in the caches.
    fn advance_head(
        &self,
        head: &mut RoomHead,
        pdu: &Pdu,
        txn: Option<(&str, &str, &str, &str)>,
        after: StateAfter,
    ) {
        let pos = pdu.stream_ordering;
        if after.group == pos {
            self.state
                .insert(pos, after.state.clone(), after.chain_length);
        }
        if let Some((user, device, scope, txn)) = txn {
            // After the reservation: a load that missed this note waits
            // for this position (see txns.rs).
            self.txns.note(user, device, scope, txn);
            head.recent_txns.insert(
                RecentTxns::key(user, device, scope, txn),
                pdu.event_id.clone(),
                pos,
                self.stream.current(),
            );
        }
        head.queued_upto = pos;
        head.extremities = vec![pdu.event_id.clone()];
        head.depth = pdu.depth;
        head.state_group = after.group;
        head.chain_length = after.chain_length;
        if pdu.state_key.is_some() {
            self.current.lock().insert(
                pdu.room_id.clone(),
                (head.failed.clone(), after.state.clone(), pos),
            );
            head.state_changed_at = pos;
        }
        head.state = after.state;
    }

    /// Waits for a queued event to be written, and for what the pipeline's
    /// subscribers ask its sender to wait for (search indexing: a `/search`
    /// after the answer finds the event). The subscribers' work runs in
    /// tasks of their own: a client that goes away stops only the waiting.
    async fn finish(
        &self,
        pdu: Pdu,
        written: tokio::sync::oneshot::Receiver<Result<Vec<Settled>>>,
    ) -> Result<Pdu> {
        let settled = written
            .await
            .map_err(|_| MatrixError::internal("the event writer has stopped"))??;
        for s in settled {
            s.wait().await;
        }
        Ok(pdu)
    }
}

/// A new opaque id on this server (`!room:server`, `$event:server`).
pub(super) fn opaque_id(sigil: char, server: &ruma::ServerName) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!(
        "{sigil}{}:{server}",
        Alphanumeric.sample_string(&mut rand::rng(), 18)
    )
}

/// The ids of the auth events the rules want for an event of this kind,
/// sender, state key and content, from `state`: sorted, each once.
fn auth_event_ids(
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &Value,
    state: &StateMap,
    rules: &RoomVersionRules,
) -> Result<Vec<OwnedEventId>> {
    let content_raw = serde_json::value::to_raw_value(content).map_err(MatrixError::internal)?;
    let auth_types = ruma::state_res::auth_types_for_event(
        kind,
        sender,
        state_key,
        &content_raw,
        &rules.authorization,
    )
    .map_err(|e| MatrixError::bad_json(format!("Invalid event content: {e}")))?;
    let mut auth_events: Vec<OwnedEventId> = auth_types
        .iter()
        .filter_map(|(ty, sk)| state.get(&(ty.to_string(), sk.clone())).cloned())
        .collect();
    auth_events.sort();
    auth_events.dedup();
    Ok(auth_events)
}

/// A room's state after an event: its state group, how many deltas that
/// group is from a full snapshot, and the state map.
struct StateAfter {
    group: i64,
    chain_length: i64,
    state: Arc<StateMap>,
}

impl RoomHead {
    /// The state after `pdu`, queued at stream position `pos`. A state event
    /// starts a state group numbered `pos`, returned for writing: one entry
    /// on the head's group, or every entry when the head has none or its
    /// chain reaches [`MAX_STATE_CHAIN`]. Any other event keeps the head's.
    fn state_after(&self, pdu: &Pdu, pos: i64) -> (StateAfter, Option<NewStateGroup>) {
        let Some(sk) = &pdu.state_key else {
            let same = StateAfter {
                group: self.state_group,
                chain_length: self.chain_length,
                state: self.state.clone(),
            };
            return (same, None);
        };
        let mut next = (*self.state).clone();
        let key = (pdu.kind.to_string(), sk.clone());
        next.insert(key.clone(), pdu.event_id.clone());
        let snapshot = self.state_group == 0 || self.chain_length + 1 >= MAX_STATE_CHAIN;
        let (prev_group, chain_length, entries) = if snapshot {
            let all = next
                .iter()
                .map(|((t, k), e)| StateEntryRow {
                    event_type: t.clone(),
                    state_key: k.clone(),
                    event_id: e.clone(),
                })
                .collect();
            (None, 0, all)
        } else {
            (
                Some(self.state_group),
                self.chain_length + 1,
                vec![StateEntryRow {
                    event_type: key.0,
                    state_key: key.1,
                    event_id: pdu.event_id.clone(),
                }],
            )
        };
        let group = NewStateGroup {
            id: pos,
            prev_group,
            chain_length,
            entries,
        };
        let after = StateAfter {
            group: pos,
            chain_length,
            state: Arc::new(next),
        };
        (after, Some(group))
    }
}

/// The user-directory flag a join rules or history visibility event sets
/// on its room (a `public` join rule, `world_readable` history).
fn directory_flag_of(pdu: &Pdu) -> Option<DirectoryFlag> {
    if pdu.state_key.as_deref() != Some("") {
        return None;
    }
    match pdu.kind {
        TimelineEventType::RoomJoinRules => Some(DirectoryFlag::JoinRulePublic(
            pdu.content_value()["join_rule"] == "public",
        )),
        TimelineEventType::RoomHistoryVisibility => Some(DirectoryFlag::WorldReadable(
            pdu.content_value()["history_visibility"] == "world_readable",
        )),
        _ => None,
    }
}

/// `content.m.relates_to` as (event id, rel_type).
fn relation_of(content: &Value) -> Option<(String, String)> {
    let rel = content.get("m.relates_to")?;
    let event_id = rel.get("event_id")?.as_str()?;
    let rel_type = rel
        .get("rel_type")
        .and_then(Value::as_str)
        .unwrap_or("m.in_reply_to");
    Some((event_id.to_owned(), rel_type.to_owned()))
}

pub fn row_to_pdu(row: crate::storage::events::EventRow) -> Result<Pdu> {
    let mut pdu = Pdu::from_text(row.event_id, row.room_id, row.json.into())
        .map_err(MatrixError::internal)?;
    pdu.stream_ordering = row.stream_ordering;
    pdu.redacted_by = row.redacted_by;
    pdu.state_group = row.state_group;
    pdu.sent_with = pdu::SentWith::from_pair(row.txn);
    Ok(pdu)
}

impl crate::services::workers::CacheSizes for Rooms {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        let (floors, erased) = self.hidden.sizes();
        vec![
            ("heads", self.heads.lock().len()),
            ("current_state", self.current.lock().len()),
            ("latest", self.latest.lock().len()),
            ("versions", self.versions.lock().len()),
            ("events", self.events.lock().len()),
            ("state_entries", self.state.entries()),
            ("sent_txn_hashes", self.txns.hashes()),
            ("history_floors", floors),
            ("erased_users", erased),
        ]
    }

    fn cache_lookups(&self) -> Vec<(&'static str, &CacheLookups)> {
        let l = &self.lookups;
        vec![
            ("events", &l.events),
            ("heads", &l.heads),
            ("current_state", &l.current_state),
            ("versions", &l.versions),
            ("latest", &l.latest),
            ("state_entries", &self.state.lookups),
        ]
    }
}

/// The spec's size limits on a PDU, enforced as Synapse does (413
/// `M_TOO_LARGE`, nothing written): at most 65536 bytes as canonical JSON
/// with its hashes and signatures, and at most 255 bytes of `type`,
/// `state_key`, `sender` and `room_id` (sytest "Event size limits").
fn check_size(obj: &CanonicalJsonObject) -> Result<()> {
    for field in ["type", "state_key", "sender", "room_id"] {
        if let Some(CanonicalJsonValue::String(v)) = obj.get(field)
            && v.len() > 255
        {
            return Err(MatrixError::too_large(format!(
                "The event's {field} is over 255 bytes"
            )));
        }
    }
    let bytes = serde_json::to_vec(obj)
        .map_err(MatrixError::internal)?
        .len();
    if bytes > 65_536 {
        return Err(MatrixError::too_large(format!(
            "The event is {bytes} bytes, over 65536"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RecentTxns;
    use ruma::OwnedEventId;

    fn event(i: usize) -> OwnedEventId {
        OwnedEventId::try_from(format!("$e{i}")).unwrap()
    }

    /// Key `k{i}` made event `i` at stream position `i + 1`.
    fn send(r: &mut RecentTxns, i: usize, persisted: i64) {
        r.insert(format!("k{i}"), event(i), i as i64 + 1, persisted);
    }

    #[test]
    fn recent_txns_forget_only_written_events() {
        let mut r = RecentTxns::default();
        // More than KEEP queued and none written: a retry of the first must
        // still find it.
        for i in 0..300 {
            send(&mut r, i, 0);
        }
        assert_eq!(r.ids.len(), 300);
        assert_eq!(r.ids.get("k0"), Some(&event(0)));
        // The first ten written: only those go, though more are past KEEP.
        send(&mut r, 300, 10);
        assert_eq!(r.ids.len(), 291);
        assert!(!r.ids.contains_key("k9"));
        assert_eq!(r.ids.get("k10"), Some(&event(10)));
        // All written: back to the newest KEEP.
        send(&mut r, 301, 302);
        assert_eq!(r.ids.len(), RecentTxns::KEEP);
        assert_eq!(r.order.len(), RecentTxns::KEEP);
        assert!(!r.ids.contains_key("k45"));
        assert_eq!(r.ids.get("k46"), Some(&event(46)));
        assert_eq!(r.ids.get("k301"), Some(&event(301)));
    }

    #[test]
    fn recent_txns_under_keep_forget_nothing() {
        let mut r = RecentTxns::default();
        for i in 0..RecentTxns::KEEP {
            send(&mut r, i, i64::MAX);
        }
        assert_eq!(r.ids.len(), RecentTxns::KEEP);
        assert_eq!(r.ids.get("k0"), Some(&event(0)));
    }
}
