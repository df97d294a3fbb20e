//! Homeserver → application service transactions (`PUT
//! {url}/_matrix/app/v1/transactions/{txnId}`, `Authorization: Bearer
//! hs_token`): the events each service is interested in, as Synapse's
//! `is_interested_in_event` decides (its sender, or the `state_key` of a
//! member event, in the service's user namespaces; the room in its room
//! namespaces; an alias of the room in its alias namespaces; or a joined
//! member of the room in its user namespaces).
//!
//! - [`Delivery`] is a subscriber of the event pipeline: on the writer task
//!   it only hands the batch to its own task (the dispatcher), which sorts
//!   each service's events into that service's queue in memory and wakes
//!   its sender. The room service knows nothing of application services.
//! - Each service has a sender task of its own, so a service that answers
//!   500 or hangs (each request is bounded by
//!   `app_service_delivery.timeout_secs`) holds up nothing else.
//! - The queue is durable: table `appservice_state` keeps, per service, the
//!   stream position its events were decided up to and the transaction in
//!   flight (id, body, the position it covers). A transaction is written
//!   there before it is sent and cleared when the service answers 2xx, so a
//!   retry, also after a restart, sends the same id and body. After a
//!   restart (or when a service's queue in memory passed
//!   [`MAX_QUEUED`] while it was down) the sender reads the events it has
//!   not decided yet from the events table, in stream order.
//! - A failed transaction is retried after `first_retry_ms`, doubling up
//!   to `max_retry_ms` (Synapse: 2 s to 512 s); nothing after it is sent
//!   before it, so the service sees every event once and in order.
//! - At most [`MAX_EVENTS`] events per transaction (Synapse's limit).
//! - `url: null`: the service receives nothing.
//! - With `receive_ephemeral` (MSC2409), receipts, typing and presence
//!   ([`EphemeralListener`]) wait in memory for the next transaction (a
//!   restart loses those not sent yet, as Synapse's typing). The to-device
//!   messages for its users are not copied: they wait where every device's
//!   messages wait (`to_device`, stored), and the service has a position in
//!   that stream (`appservice_state.to_device_pos`) as for events: a
//!   transaction records the position it takes the service to, and once
//!   the service acknowledges it, the devices of the users it owns (its
//!   exclusive user namespaces, not its sender: it acts for them with its
//!   token, they do not sync) acknowledge those messages as a sync would
//!   (the sends are deleted when nobody else waits for them; with services
//!   whose namespaces overlap, only up to where each of them is); any
//!   other device takes its messages at its own syncs, as on Synapse.
//!   Typing is kept in memory on Synapse too; its receipts and presence
//!   are queued in memory with their position written as they are queued,
//!   and a transaction it retries carries events only, so it loses those
//!   as well. [`ToDeviceListener`] only says which users have
//!   messages and wakes the sender. So a message reaches the service once,
//!   in order, also across a restart while it was down.
//! - With `org.matrix.msc3202`, the users whose device lists changed
//!   (`device_list_changes`) and who share a room that interests it are
//!   read from its position in that stream (`device_list_pos`, moved as
//!   `to_device_pos`; `DeviceLists::watch` only wakes the sender); each of
//!   its transactions carries the key counts of the devices of its users in
//!   the transaction's rooms, of its to-device recipients and of its sender.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::config::AppServiceDeliveryConfig;
use crate::error::{MatrixError, Result};
use crate::model::pdu::Pdu;
use crate::model::to_device::Recipient;
use crate::net::outbound::{IpFilter, Outbound};
use crate::services::Services;
use crate::services::appservices::AppService;
use crate::services::ephemeral::{EphemeralChange, EphemeralListener};
use crate::services::pipeline::{Batch, Committed, Settled, Subscriber};
use crate::services::to_device::{ToDeviceListener, WaitingMessage};
use crate::services::workers::{Stage, Stop, Workers};
use crate::storage::appservices::{AppServiceState, InFlightTxn};

/// The most events one transaction carries (as Synapse).
pub const MAX_EVENTS: usize = 100;
/// A service's events waiting in memory past this are dropped from memory
/// and read again from the events table when it is their turn.
pub const MAX_QUEUED: usize = 10_000;
/// Events read from the database per step of a catch-up.
const CATCH_UP_PAGE: i64 = 500;
/// Ephemeral events waiting per service past this: the oldest are dropped.
const MAX_EPHEMERAL: usize = 1000;
/// Device-list changes read per transaction.
const DEVICE_LIST_PAGE: i64 = 1000;
/// To-device messages per transaction (as Synapse).
const MAX_TO_DEVICE_PER_TXN: usize = 100;
/// Rooms whose interest (aliases, joined members) is remembered per service.
const ROOM_CACHE: usize = 4096;
/// How often, at most, a service's position is written when it was sent
/// nothing (the events it skipped).
const IDLE_POSITION_WRITE: Duration = Duration::from_secs(1);

/// A service's events waiting, and what its sender may read.
struct Pending {
    /// Interesting events in stream order, each above `db_until`.
    events: VecDeque<(i64, Arc<Pdu>)>,
    /// Events up to here that the service has not been sent come from the
    /// events table, not from `events` (at start: the position then).
    db_until: i64,
    /// Every event up to here has been sorted into `events` (or lies at
    /// or below `db_until`): the sender may send up to it.
    safe: i64,
    /// Receipts, typing and presence for it (MSC2409), oldest first; in
    /// memory only (a restart loses those not yet in a transaction).
    ephemeral: VecDeque<Value>,
}

/// What the dispatcher hears of besides the pipeline's batches.
enum Change {
    /// A receipt, typing or presence change.
    Ephemeral(EphemeralChange),
    /// A user's devices or keys changed at this stream position.
    DeviceList(i64),
}

/// One service that receives transactions.
struct Target {
    service: Arc<AppService>,
    pending: Mutex<Pending>,
    wake: Notify,
    /// Whether a room interests the service through its aliases or joined
    /// members (forgotten when a member or alias event arrives in it).
    rooms: Mutex<RoomInterests>,
    /// Its users that may have to-device messages waiting.
    to_device_users: Mutex<BTreeSet<String>>,
    /// The highest position of a to-device send for them heard of.
    to_device_heard: AtomicI64,
    /// Its position in the to-device stream (0 until its sender read it):
    /// what its users' devices may acknowledge.
    to_device_pos: AtomicI64,
    /// The highest position of a device-list change heard of (at start:
    /// the stream's position then, so what changed before is read).
    device_lists_heard: AtomicI64,
}

/// The pipeline subscriber and the services it delivers to.
pub struct Delivery {
    targets: Vec<Arc<Target>>,
    queue: mpsc::UnboundedSender<Arc<[Committed]>>,
    /// Taken by [`Delivery::start`].
    queued: Mutex<Option<mpsc::UnboundedReceiver<Arc<[Committed]>>>>,
    /// Receipts, typing, presence and device-list changes as they happen,
    /// for the dispatcher.
    changes: mpsc::UnboundedSender<Change>,
    changed: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    /// The stream position at start-up.
    start_pos: i64,
    http: Outbound,
    config: AppServiceDeliveryConfig,
    /// Transactions sent and acknowledged, and those that failed.
    pub sent: AtomicU64,
    pub failures: AtomicU64,
}

impl Delivery {
    /// The services of `list` that have a URL; `start_pos` is the stream
    /// position at start-up (what came before is read from the database).
    pub fn new(
        list: &[Arc<AppService>],
        config: &AppServiceDeliveryConfig,
        roots: &[reqwest::Certificate],
        start_pos: i64,
    ) -> anyhow::Result<Arc<Self>> {
        let targets = list
            .iter()
            .filter(|a| a.url.is_some())
            .map(|a| {
                Arc::new(Target {
                    service: a.clone(),
                    pending: Mutex::new(Pending {
                        events: VecDeque::new(),
                        db_until: start_pos,
                        safe: start_pos,
                        ephemeral: VecDeque::new(),
                    }),
                    wake: Notify::new(),
                    rooms: Mutex::new(RoomInterests {
                        known: lru::LruCache::new(NonZeroUsize::new(ROOM_CACHE).expect("non-zero")),
                        forgets: 0,
                    }),
                    to_device_users: Mutex::new(BTreeSet::new()),
                    to_device_heard: AtomicI64::new(0),
                    to_device_pos: AtomicI64::new(0),
                    device_lists_heard: AtomicI64::new(start_pos),
                })
            })
            .collect();
        let (queue, rx) = mpsc::unbounded_channel();
        let (changes, changed) = mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            targets,
            queue,
            queued: Mutex::new(Some(rx)),
            changes,
            changed: Mutex::new(Some(changed)),
            start_pos,
            // The services' URLs are the operator's: no address is blocked
            // (as Synapse); an https one may be signed by `outbound.ca_files`.
            http: Outbound::new(
                roots,
                IpFilter::new(Vec::new(), Vec::new()),
                Duration::from_secs(config.timeout_secs),
            )?,
            config: config.clone(),
            sent: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }

    /// Forgets what it knew of a room's interest (an alias of it was
    /// created or deleted, which no event says).
    pub fn forget_room(&self, room_id: &ruma::RoomId) {
        for t in &self.targets {
            t.rooms.lock().forget(room_id);
        }
    }

    /// Whether any service receives transactions.
    pub fn is_active(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Starts the dispatcher (stage `Subscribers`: it sorts what the
    /// drained writer published) and one sender per service.
    pub fn start(s: &Arc<Services>, workers: &Workers) {
        let d = &s.as_delivery;
        let (Some(rx), Some(changed)) = (d.queued.lock().take(), d.changed.lock().take()) else {
            return;
        };
        if !d.is_active() {
            return;
        }
        if d.targets.iter().any(|t| t.service.receive_ephemeral) {
            s.ephemeral.listen(d.clone());
            s.presence.listen(d.clone());
            s.to_device.listen(d.clone());
        }
        if d.targets.iter().any(|t| t.service.msc3202) {
            let changes = d.changes.clone();
            s.e2e_keys
                .device_lists()
                .watch(Arc::new(move |_: &ruma::UserId, pos: i64| {
                    let _ = changes.send(Change::DeviceList(pos));
                }));
        }
        let services = s.clone();
        workers.spawn("appservice dispatcher", Stage::Subscribers, move |stop| {
            dispatch_forever(services, rx, changed, stop)
        });
        for target in &s.as_delivery.targets {
            let services = s.clone();
            let target = target.clone();
            workers.spawn("appservice sender", Stage::Flush, move |stop| {
                send_forever(services, target, stop)
            });
        }
    }
}

impl Subscriber for Delivery {
    /// Hands the batch to the dispatcher; nothing is decided here.
    fn committed(&self, batch: &Batch) -> Option<Settled> {
        if !self.targets.is_empty() {
            let _ = self.queue.send(batch.events.clone());
        }
        None
    }
}

impl EphemeralListener for Delivery {
    /// Hands the change to the dispatcher.
    fn changed(&self, change: EphemeralChange) {
        let _ = self.changes.send(Change::Ephemeral(change));
    }
}

impl ToDeviceListener for Delivery {
    /// Notes, for each service with `receive_ephemeral` whose user
    /// namespaces hold a recipient (Synapse's rule), that the user has
    /// messages waiting, and wakes its sender.
    fn sent(&self, pos: i64, recipients: &[Recipient<'_>]) {
        for target in self.targets.iter().filter(|t| t.service.receive_ephemeral) {
            let mut mine = recipients
                .iter()
                .filter(|r| target.service.is_interested_in_user(r.user))
                .peekable();
            if mine.peek().is_none() {
                continue;
            }
            {
                let mut users = target.to_device_users.lock();
                for r in mine {
                    if !users.contains(r.user) {
                        users.insert(r.user.to_owned());
                    }
                }
            }
            target.to_device_heard.fetch_max(pos, Ordering::SeqCst);
            target.wake.notify_one();
        }
    }
}

impl Delivery {
    /// Per service that receives transactions: the events waiting in
    /// memory for its next one (for the metrics).
    pub fn queue_depths(&self) -> Vec<(String, usize)> {
        self.targets
            .iter()
            .map(|t| (t.service.id.clone(), t.pending.lock().events.len()))
            .collect()
    }
}

impl crate::services::workers::CacheSizes for Delivery {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            (
                "queued_events",
                self.targets
                    .iter()
                    .map(|t| t.pending.lock().events.len())
                    .sum(),
            ),
            (
                "room_interest",
                self.targets
                    .iter()
                    .map(|t| t.rooms.lock().known.len())
                    .sum(),
            ),
        ]
    }
}

// ------------------------------------------------------------- interest

/// Whether the service is interested in the event (Synapse's
/// `is_interested_in_event`).
async fn interested(s: &Services, target: &Target, pdu: &Pdu) -> Result<bool> {
    let a = &target.service;
    if a.is_interested_in_user(pdu.sender.as_str())
        || a.is_interested_in_room_id(pdu.room_id.as_str())
    {
        return Ok(true);
    }
    if pdu.kind.to_string() == "m.room.member"
        && pdu
            .state_key
            .as_deref()
            .is_some_and(|u| a.is_interested_in_user(u))
    {
        return Ok(true);
    }
    room_interesting(s, target, &pdu.room_id).await
}

/// Whether the room interests the service: its id, an alias or a joined
/// member in its namespaces (Synapse's `is_interested_in_room`).
async fn room_interesting(s: &Services, target: &Target, room_id: &OwnedRoomId) -> Result<bool> {
    if target.service.is_interested_in_room_id(room_id.as_str()) {
        return Ok(true);
    }
    let forgets = {
        let mut rooms = target.rooms.lock();
        if let Some(known) = rooms.known.get(room_id) {
            return Ok(*known);
        }
        rooms.forgets
    };
    let by_room = room_interests(s, &target.service, room_id).await?;
    // Kept only if nothing was forgotten while it was read: an alias made
    // meanwhile (`forget_room`) may not be in what was read, and keeping
    // that answer would hide the room's later events from the service.
    let mut rooms = target.rooms.lock();
    if rooms.forgets == forgets {
        rooms.known.put(room_id.clone(), by_room);
    }
    Ok(by_room)
}

/// Which rooms interest a service through their aliases or joined members,
/// as last read, and how many times something was forgotten (what
/// [`room_interesting`] read is kept only if that did not move meanwhile).
struct RoomInterests {
    known: lru::LruCache<OwnedRoomId, bool>,
    forgets: u64,
}

impl RoomInterests {
    fn forget(&mut self, room_id: &ruma::RoomId) {
        self.forgets = self.forgets.wrapping_add(1);
        self.known.pop(room_id);
    }
}

/// Whether a change goes to the service (MSC2409): a receipt (not a
/// private one) or typing in a room that interests it; the presence of a
/// user in its namespaces or joined to a room that interests it.
async fn ephemeral_interest(
    s: &Services,
    target: &Target,
    change: &EphemeralChange,
) -> Result<bool> {
    match change {
        EphemeralChange::Room(room, event) => {
            let private = event["content"]
                .as_object()
                .is_some_and(|c| c.values().all(|e| e.get("m.read.private").is_some()))
                && event["type"] == "m.receipt";
            Ok(!private && room_interesting(s, target, room).await?)
        }
        EphemeralChange::Presence(user, _) => {
            if target.service.is_interested_in_user(user.as_str()) {
                return Ok(true);
            }
            for room in super::memberships::joined_rooms(s, user).await? {
                if room_interesting(s, target, &room).await? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

/// Queues a change for each service that wants it.
async fn dispatch_change(s: &Services, change: EphemeralChange) {
    for target in s
        .as_delivery
        .targets
        .iter()
        .filter(|t| t.service.receive_ephemeral)
    {
        match ephemeral_interest(s, target, &change).await {
            Ok(true) => {
                let event = match &change {
                    EphemeralChange::Room(_, e) | EphemeralChange::Presence(_, e) => e.clone(),
                };
                let mut p = target.pending.lock();
                if p.ephemeral.len() >= MAX_EPHEMERAL {
                    p.ephemeral.pop_front();
                }
                p.ephemeral.push_back(event);
                drop(p);
                target.wake.notify_one();
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(appservice = %target.service.id, error = %e.message(),
                    "could not decide an ephemeral event's interest: not sent");
            }
        }
    }
}

/// A device-list change at `pos`: once it is readable, wakes each service
/// with `org.matrix.msc3202` to read it (its sender decides its interest).
async fn dispatch_device_list(s: &Services, pos: i64) {
    let targets: Vec<&Arc<Target>> = s
        .as_delivery
        .targets
        .iter()
        .filter(|t| t.service.msc3202)
        .collect();
    if targets.is_empty() {
        return;
    }
    s.stream.wait_for(pos, Duration::from_secs(5)).await;
    for target in targets {
        target.device_lists_heard.fetch_max(pos, Ordering::SeqCst);
        target.wake.notify_one();
    }
}

/// The users among `changes` (position order) who share a room that
/// interests the service (Synapse's rule), each once.
async fn device_list_interest(
    s: &Services,
    target: &Target,
    changes: Vec<(i64, String)>,
) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (_, user) in changes {
        if !seen.insert(user.clone()) {
            continue;
        }
        let Ok(id) = OwnedUserId::try_from(user.as_str()) else {
            continue;
        };
        for room in super::memberships::joined_rooms(s, &id).await? {
            if room_interesting(s, target, &room).await? {
                out.push(user);
                break;
            }
        }
    }
    Ok(out)
}

/// An alias of the room in the service's alias namespaces, or a joined
/// member in its user namespaces.
async fn room_interests(s: &Services, a: &AppService, room_id: &OwnedRoomId) -> Result<bool> {
    // (The room id itself is checked by the caller.)
    if !a.namespaces.aliases.is_empty() {
        let aliases = s.storage.room_aliases(room_id.as_str()).await?;
        if aliases
            .iter()
            .any(|al| a.is_interested_in_alias(al.as_str()))
        {
            return Ok(true);
        }
    }
    let members = super::memberships::joined_members(s, room_id).await?;
    Ok(members.iter().any(|m| a.is_interested_in_user(m.as_str())))
}

/// Events that change what a room's interest depends on.
fn changes_room_interest(pdu: &Pdu) -> bool {
    matches!(
        pdu.kind.to_string().as_str(),
        "m.room.member" | "m.room.canonical_alias" | "m.room.aliases"
    )
}

// ----------------------------------------------------------- dispatcher

async fn dispatch_forever(
    s: Arc<Services>,
    mut rx: mpsc::UnboundedReceiver<Arc<[Committed]>>,
    mut changed: mpsc::UnboundedReceiver<Change>,
    mut stop: Stop,
) {
    loop {
        let first = tokio::select! {
            batch = rx.recv() => match batch {
                Some(b) => b,
                None => break,
            },
            Some(change) = changed.recv() => {
                match change {
                    Change::Ephemeral(change) => dispatch_change(&s, change).await,
                    Change::DeviceList(pos) => dispatch_device_list(&s, pos).await,
                }
                continue;
            }
            () = stop.requested() => {
                // What the drained writer published is sorted; the senders
                // stop later (stage Flush).
                while let Ok(b) = rx.try_recv() {
                    dispatch(&s, &b).await;
                }
                let safe = s.stream.current();
                mark_safe(&s, safe);
                break;
            }
        };
        dispatch(&s, &first).await;
        let mut highest = first.last().map_or(0, |c| c.pos);
        loop {
            // Every position up to `current` was published before it was
            // read, so once the channel is drained it has all been sorted.
            let current = s.stream.current();
            while let Ok(b) = rx.try_recv() {
                dispatch(&s, &b).await;
                highest = highest.max(b.last().map_or(0, |c| c.pos));
            }
            mark_safe(&s, current);
            if highest <= current {
                break;
            }
            // The batch's positions complete just after publishing.
            s.stream.wait_for(highest, Duration::from_secs(5)).await;
        }
    }
}

fn mark_safe(s: &Services, safe: i64) {
    for t in &s.as_delivery.targets {
        let mut p = t.pending.lock();
        if safe > p.safe {
            p.safe = safe;
            drop(p);
            t.wake.notify_one();
        }
    }
}

/// Sorts a batch into each service's queue.
async fn dispatch(s: &Services, events: &[Committed]) {
    for target in &s.as_delivery.targets {
        for c in events {
            if changes_room_interest(&c.pdu) {
                target.rooms.lock().forget(&c.pdu.room_id);
            }
        }
        for c in events {
            if c.pos <= target.pending.lock().db_until {
                continue;
            }
            match interested(s, target, &c.pdu).await {
                Ok(false) => {}
                Ok(true) => {
                    let mut p = target.pending.lock();
                    if p.events.len() >= MAX_QUEUED {
                        overflow(&mut p, c.pos);
                    } else {
                        let at = p.events.partition_point(|(pos, _)| *pos < c.pos);
                        p.events.insert(at, (c.pos, c.pdu.clone()));
                    }
                }
                Err(e) => {
                    tracing::warn!(appservice = %target.service.id, error = %e.message(),
                        "could not decide an event's interest: it is read again from the database");
                    overflow(&mut target.pending.lock(), c.pos);
                }
            }
        }
    }
}

/// Forgets the queue in memory: everything up to `pos` is read from the
/// database when its turn comes.
fn overflow(p: &mut Pending, pos: i64) {
    let until = p.events.back().map_or(pos, |(last, _)| (*last).max(pos));
    p.events.clear();
    p.db_until = p.db_until.max(until);
}

// --------------------------------------------------------------- sender

/// The events of the next transaction and the position it takes the
/// service to.
async fn next_events(s: &Services, target: &Target, pos: i64) -> Result<(Vec<Arc<Pdu>>, i64)> {
    let (db_until, safe) = {
        let p = target.pending.lock();
        (p.db_until, p.safe)
    };
    let from_db = db_until.min(safe);
    if pos < from_db {
        let rows = s
            .storage
            .events_in_stream_range(pos, from_db, CATCH_UP_PAGE)
            .await?;
        let mut upto = if (rows.len() as i64) < CATCH_UP_PAGE {
            from_db
        } else {
            rows.last().map_or(from_db, |r| r.stream_ordering)
        };
        let mut out = Vec::new();
        for row in rows {
            let at = row.stream_ordering;
            let pdu = s.rooms.pdu_from_row(row)?;
            if interested(s, target, &pdu).await? {
                out.push(pdu);
                if out.len() == MAX_EVENTS {
                    upto = at;
                    break;
                }
            }
        }
        return Ok((out, upto));
    }
    let mut p = target.pending.lock();
    let mut out = Vec::new();
    let mut last = pos;
    let safe = p.safe;
    while out.len() < MAX_EVENTS && p.events.front().is_some_and(|(at, _)| *at <= safe) {
        let (at, pdu) = p.events.pop_front().expect("a front");
        last = at;
        out.push(pdu);
    }
    let more = p.events.front().is_some_and(|(at, _)| *at <= safe);
    let upto = if more { last } else { safe };
    Ok((out, upto.max(pos)))
}

/// What a transaction carries besides its events.
#[derive(Default)]
struct Extras {
    /// Receipts, typing and presence (MSC2409).
    ephemeral: Vec<Value>,
    /// To-device messages for the service's users (MSC2409).
    to_device: Vec<Value>,
    /// Users whose device lists changed (MSC3202).
    device_lists: Vec<String>,
}

impl Extras {
    /// Takes at most [`MAX_EVENTS`] of the ephemeral events that wait.
    fn take_ephemeral(p: &mut Pending) -> Vec<Value> {
        let n = p.ephemeral.len().min(MAX_EVENTS);
        p.ephemeral.drain(..n).collect()
    }

    fn is_empty(&self) -> bool {
        self.ephemeral.is_empty() && self.to_device.is_empty() && self.device_lists.is_empty()
    }
}

/// The positions a transaction takes the service to.
struct Ends {
    upto: i64,
    to_device_upto: i64,
    device_list_upto: i64,
}

/// A to-device message as MSC2409 gives it: the event with `to_user_id`
/// and `to_device_id`.
fn to_device_event(m: WaitingMessage) -> Value {
    let content: Value = serde_json::from_str(&m.content).unwrap_or_else(|_| json!({}));
    json!({
        "type": m.event_type,
        "sender": m.sender,
        "content": content,
        "to_user_id": m.user,
        "to_device_id": m.device,
    })
}

/// The transaction's body: the events in client format, and the keys the
/// registration asks for.
async fn body(s: &Services, a: &AppService, events: &[Arc<Pdu>], extras: Extras) -> Result<String> {
    let mut client = s.rooms.client_events(events, None).await?;
    for (pdu, event) in events.iter().zip(&mut client) {
        if let Some(state) = invite_room_state(s, pdu).await? {
            event["unsigned"]["invite_room_state"] = Value::Array(state);
        }
    }
    let mut body = json!({ "events": client });
    if a.msc3202 {
        add_msc3202(s, a, events, &extras, &mut body).await?;
    }
    if a.receive_ephemeral {
        let key = if a.ephemeral_unstable {
            "de.sorunome.msc2409.ephemeral"
        } else {
            "ephemeral"
        };
        body[key] = Value::Array(extras.ephemeral);
        // Synapse's key for them (MSC4203 under MSC2409's prefix).
        body["de.sorunome.msc2409.to_device"] = Value::Array(extras.to_device);
    }
    serde_json::to_string(&body).map_err(MatrixError::internal)
}

/// MSC3202's keys, as Synapse writes them: the device list changes, and
/// the one-time key counts and unused fallback key algorithms of every
/// device of the service's sender, of its users joined to a room of the
/// transaction's events or ephemeral events, and of its to-device
/// recipients (each key left out when no such user has a device).
async fn add_msc3202(
    s: &Services,
    a: &AppService,
    events: &[Arc<Pdu>],
    extras: &Extras,
    body: &mut Value,
) -> Result<()> {
    if !extras.device_lists.is_empty() {
        body["org.matrix.msc3202.device_lists"] =
            json!({ "changed": extras.device_lists, "left": [] });
    }
    let mut rooms: BTreeSet<OwnedRoomId> = events.iter().map(|p| p.room_id.clone()).collect();
    rooms.extend(
        extras
            .ephemeral
            .iter()
            .filter_map(|e| e["room_id"].as_str())
            .filter_map(|r| OwnedRoomId::try_from(r).ok()),
    );
    let mut users: BTreeSet<String> = BTreeSet::from([a.sender.to_string()]);
    for room in &rooms {
        for member in super::memberships::joined_members(s, room).await? {
            if a.is_interested_in_user(member.as_str()) {
                users.insert(member.to_string());
            }
        }
    }
    users.extend(
        extras
            .to_device
            .iter()
            .filter_map(|m| m["to_user_id"].as_str())
            .map(str::to_owned),
    );
    // Every user's devices in one read; their key counts are kept in
    // memory by `e2e_keys` while unchanged.
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut devices: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in s.storage.devices_of_users(&users).await? {
        devices.entry(d.user_id).or_default().push(d.device_id);
    }
    let mut one_time = serde_json::Map::new();
    let mut fallback = serde_json::Map::new();
    for (user, devices) in devices {
        let mut counts: BTreeMap<String, Value> = BTreeMap::new();
        let mut unused: BTreeMap<String, Value> = BTreeMap::new();
        for device in devices {
            let k = s.e2e_keys.counts(&user, &device).await?;
            counts.insert(device.clone(), json!(k.one_time));
            unused.insert(device, json!(k.unused_fallback));
        }
        one_time.insert(user.clone(), json!(counts));
        fallback.insert(user, json!(unused));
    }
    if !one_time.is_empty() {
        // Synapse writes both spellings.
        body["org.matrix.msc3202.device_one_time_key_counts"] = Value::Object(one_time.clone());
        body["org.matrix.msc3202.device_one_time_keys_count"] = Value::Object(one_time);
        body["org.matrix.msc3202.device_unused_fallback_key_types"] = Value::Object(fallback);
    }
    Ok(())
}

/// An invite's `unsigned.invite_room_state`, as Synapse gives it to
/// bridges: the room's public face when the invite was made and the
/// inviter's member event, stripped (`None` for other events).
async fn invite_room_state(s: &Services, pdu: &Pdu) -> Result<Option<Vec<Value>>> {
    if pdu.kind != ruma::events::TimelineEventType::RoomMember
        || pdu.content_value()["membership"] != "invite"
    {
        return Ok(None);
    }
    let state = s.rooms.state_at(pdu).await?;
    let mut out = crate::services::sync::prejoin_state(s, &state).await?;
    if let Some(id) = state.get(&("m.room.member".to_owned(), pdu.sender.to_string()))
        && let Some(inviter) = s.rooms.pdu(id.as_str()).await?
    {
        out.push(inviter.to_stripped());
    }
    Ok(Some(out))
}

/// Waits `wait`; false when shutdown was asked for first.
async fn pause(stop: &mut Stop, wait: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = stop.requested() => false,
    }
}

/// One service's delivery loop: the transaction in flight is sent until it
/// is acknowledged; then the next is built from what waits and recorded
/// before it is sent; with nothing to send, the position reached is written
/// now and then.
async fn send_forever(s: Arc<Services>, target: Arc<Target>, mut stop: Stop) {
    let Some(mut d) = Sender::start(s, target, &mut stop).await else {
        return;
    };
    loop {
        let go_on = match d.state.in_flight.clone() {
            Some(txn) => d.send(txn, &mut stop).await,
            None => d.next(&mut stop).await,
        };
        if !go_on {
            return;
        }
    }
}

/// [`send_forever`]'s state for one service.
struct Sender {
    s: Arc<Services>,
    target: Arc<Target>,
    id: String,
    state: AppServiceState,
    /// The stream position the service has everything up to.
    pos: i64,
    /// Its positions in the to-device and device-list streams.
    to_device_pos: i64,
    device_list_pos: i64,
    /// The positions last written to its state row (events, to-device,
    /// device lists).
    written: (i64, i64, i64),
    last_write: Instant,
    /// The wait before the in-flight transaction is sent again.
    delay: Duration,
}

impl Sender {
    /// The service's state, read again until the database answers (`None`
    /// at shutdown); the to-device messages it has been sent but its users'
    /// devices have not acknowledged yet (a stop in between) are.
    async fn start(s: Arc<Services>, target: Arc<Target>, stop: &mut Stop) -> Option<Self> {
        let id = target.service.id.clone();
        let state = loop {
            match s
                .storage
                .appservice_state(&id, s.as_delivery.start_pos)
                .await
            {
                Ok(st) => break st,
                Err(e) => {
                    tracing::warn!(appservice = %id, error = %e, "could not read the delivery state");
                    if !pause(stop, Duration::from_secs(1)).await {
                        return None;
                    }
                }
            }
        };
        if target.service.receive_ephemeral {
            let mine: Vec<String> = s
                .to_device
                .users_waiting()
                .into_iter()
                .filter(|u| target.service.is_interested_in_user(u))
                .collect();
            target.to_device_users.lock().extend(mine);
            target
                .to_device_pos
                .store(state.to_device_pos, Ordering::SeqCst);
        }
        let delay = Duration::from_millis(s.as_delivery.config.first_retry_ms);
        let mut sender = Self {
            pos: state.stream_pos,
            to_device_pos: state.to_device_pos,
            device_list_pos: state.device_list_pos,
            written: (state.stream_pos, state.to_device_pos, state.device_list_pos),
            last_write: Instant::now(),
            delay,
            s,
            target,
            id,
            state,
        };
        sender.acknowledge_to_device().await;
        Some(sender)
    }

    /// Sends the transaction in flight once; after a failure, waits the
    /// current delay and doubles it. False at shutdown (the transaction
    /// stays in flight and is sent again at the next start).
    async fn send(&mut self, txn: InFlightTxn, stop: &mut Stop) -> bool {
        let s = self.s.clone();
        let d = &s.as_delivery;
        let sent = tokio::select! {
            sent = transmit(&self.s, &self.target.service, &txn) => sent,
            () = stop.requested() => return false,
        };
        match sent {
            Ok(()) => {
                d.sent.fetch_add(1, Ordering::Relaxed);
                match self.s.storage.appservice_end_txn(&self.id).await {
                    Ok(()) => {
                        self.state.in_flight = None;
                        self.pos = txn.upto;
                        self.device_list_pos = txn.device_list_upto;
                        let acknowledge = txn.to_device_upto > self.to_device_pos;
                        self.set_to_device_pos(txn.to_device_upto);
                        self.written = self.positions();
                        if acknowledge {
                            self.acknowledge_to_device().await;
                        }
                        self.delay = Duration::from_millis(d.config.first_retry_ms);
                        return true;
                    }
                    Err(e) => {
                        tracing::warn!(appservice = %self.id, error = %e, "could not record an acknowledged transaction");
                    }
                }
            }
            Err(e) => {
                d.failures.fetch_add(1, Ordering::Relaxed);
                tracing::info!(appservice = %self.id, txn_id = txn.txn_id, error = %e.message(),
                    retry_in = ?self.delay, "application service transaction failed");
            }
        }
        let go_on = pause(stop, self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_millis(d.config.max_retry_ms));
        go_on
    }

    /// Its positions now (events, to-device, device lists).
    fn positions(&self) -> (i64, i64, i64) {
        (self.pos, self.to_device_pos, self.device_list_pos)
    }

    fn set_to_device_pos(&mut self, pos: i64) {
        self.to_device_pos = pos;
        self.target.to_device_pos.store(pos, Ordering::SeqCst);
    }

    /// The to-device messages the service has been sent are done for the
    /// devices of the users it owns (its exclusive user namespaces, not its
    /// sender), as if each had synced: up to where every service interested
    /// in the user is. The service acts for those users through its own
    /// token and their devices do not sync; any other user's devices (its
    /// sender's, a user of a shared namespace) take their messages at their
    /// own syncs, as on Synapse. A user with nothing left after its position
    /// is forgotten.
    async fn acknowledge_to_device(&mut self) {
        let users: Vec<String> = self.target.to_device_users.lock().iter().cloned().collect();
        let service = &self.target.service;
        for user in users {
            if service.sender != user.as_str() && service.is_exclusive_user(&user) {
                let upto = self
                    .s
                    .as_delivery
                    .targets
                    .iter()
                    .filter(|t| {
                        t.service.receive_ephemeral && t.service.is_interested_in_user(&user)
                    })
                    .map(|t| t.to_device_pos.load(Ordering::SeqCst))
                    .min()
                    .unwrap_or(self.to_device_pos);
                if let Err(e) = self.s.to_device.acknowledge_user(&user, upto).await {
                    tracing::warn!(appservice = %self.id, %user, error = %e.message(),
                        "could not acknowledge to-device messages sent to the service");
                }
            }
            // Under the set's lock: a send heard of from now on adds the
            // user again (it waits before its listener is told).
            let mut set = self.target.to_device_users.lock();
            if !self.s.to_device.waits_after(&user, self.to_device_pos) {
                set.remove(&user);
            }
        }
    }

    /// The to-device messages for the service's users after its position,
    /// and the position they take it to (MSC2409).
    async fn to_device(&self) -> Result<(Vec<WaitingMessage>, i64)> {
        if !self.target.service.receive_ephemeral {
            return Ok((Vec::new(), self.to_device_pos));
        }
        let heard = self.target.to_device_heard.load(Ordering::SeqCst);
        if heard > self.to_device_pos {
            // Heard of before its position completed.
            self.s.stream.wait_for(heard, Duration::from_secs(5)).await;
        }
        let upto = self.s.stream.current().max(self.to_device_pos);
        let users: Vec<String> = self.target.to_device_users.lock().iter().cloned().collect();
        if users.is_empty() {
            return Ok((Vec::new(), upto));
        }
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        self.s
            .to_device
            .waiting_for(&users, self.to_device_pos, upto, MAX_TO_DEVICE_PER_TXN)
            .await
    }

    /// The users whose device lists changed after the service's position
    /// and who share a room that interests it, and the position they take
    /// it to (MSC3202). Reads nothing when no change was heard of.
    async fn device_lists(&self) -> Result<(Vec<String>, i64)> {
        if !self.target.service.msc3202
            || self.target.device_lists_heard.load(Ordering::SeqCst) <= self.device_list_pos
        {
            return Ok((Vec::new(), self.device_list_pos));
        }
        let upto = self.s.stream.current().max(self.device_list_pos);
        let mut changes = self
            .s
            .storage
            .device_list_changes_between(self.device_list_pos, upto, DEVICE_LIST_PAGE)
            .await?;
        let mut covered = upto;
        if changes.len() as i64 == DEVICE_LIST_PAGE {
            // The rest from the next one (a position's changes together).
            let last = changes.last().map_or(upto, |c| c.0);
            let keep = changes.partition_point(|c| c.0 < last);
            if keep > 0 {
                changes.truncate(keep);
                covered = last - 1;
            } else {
                covered = last;
            }
        }
        let users = device_list_interest(&self.s, &self.target, changes).await?;
        Ok((users, covered))
    }

    /// Builds and records the next transaction from what waits, or moves the
    /// positions past what the service does not want, or idles until woken.
    async fn next(&mut self, stop: &mut Stop) -> bool {
        let read = async {
            let (events, upto) = next_events(&self.s, &self.target, self.pos).await?;
            let (to_device, to_device_upto) = self.to_device().await?;
            let (device_lists, device_list_upto) = self.device_lists().await?;
            Ok::<_, MatrixError>((
                events,
                upto,
                to_device,
                to_device_upto,
                device_lists,
                device_list_upto,
            ))
        };
        let (events, upto, to_device, to_device_upto, device_lists, device_list_upto) = match read
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(appservice = %self.id, error = %e.message(), "could not read what to send");
                return pause(stop, Duration::from_secs(1)).await;
            }
        };
        let extras = Extras {
            ephemeral: Extras::take_ephemeral(&mut self.target.pending.lock()),
            to_device: to_device.into_iter().map(to_device_event).collect(),
            device_lists,
        };
        if !events.is_empty() || !extras.is_empty() {
            let ends = Ends {
                upto,
                to_device_upto,
                device_list_upto,
            };
            return self.record(&events, extras, ends, stop).await;
        }
        let moved = upto > self.pos
            || to_device_upto > self.to_device_pos
            || device_list_upto > self.device_list_pos;
        if moved {
            self.pos = self.pos.max(upto);
            self.set_to_device_pos(self.to_device_pos.max(to_device_upto));
            self.device_list_pos = self.device_list_pos.max(device_list_upto);
            return true;
        }
        self.idle(stop).await
    }

    /// Records the transaction of `events` and `extras` as in flight.
    async fn record(
        &mut self,
        events: &[Arc<Pdu>],
        extras: Extras,
        ends: Ends,
        stop: &mut Stop,
    ) -> bool {
        let built = match body(&self.s, &self.target.service, events, extras).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(appservice = %self.id, error = %e.message(), "could not build a transaction");
                return pause(stop, Duration::from_secs(1)).await;
            }
        };
        let txn = InFlightTxn {
            txn_id: self.state.next_txn_id,
            body: built,
            upto: ends.upto,
            to_device_upto: ends.to_device_upto,
            device_list_upto: ends.device_list_upto,
        };
        match self.s.storage.appservice_begin_txn(&self.id, &txn).await {
            Ok(()) => {
                self.state.next_txn_id += 1;
                self.state.in_flight = Some(txn);
                true
            }
            Err(e) => {
                // The events go back to be taken again (the to-device
                // messages and device-list changes are read again).
                tracing::warn!(appservice = %self.id, error = %e, "could not record a transaction");
                {
                    let mut p = self.target.pending.lock();
                    p.db_until = p.db_until.max(ends.upto);
                    p.events.clear();
                }
                pause(stop, Duration::from_secs(1)).await
            }
        }
    }

    /// Nothing to send: writes the position reached now and then, and waits
    /// for new events (writing it a last time at shutdown).
    async fn idle(&mut self, stop: &mut Stop) -> bool {
        let moved = self.positions() != self.written;
        if moved && self.last_write.elapsed() >= IDLE_POSITION_WRITE {
            self.write_positions().await;
            self.last_write = Instant::now();
        }
        let wait = if self.positions() != self.written {
            IDLE_POSITION_WRITE
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            () = self.target.wake.notified() => true,
            () = tokio::time::sleep(wait) => true,
            () = stop.requested() => {
                if self.positions() != self.written {
                    self.write_positions().await;
                }
                false
            }
        }
    }

    /// Writes the positions it moved past what was of no interest.
    async fn write_positions(&mut self) {
        let now = self.positions();
        if self
            .s
            .storage
            .appservice_advance(&self.id, now.0, now.1, now.2)
            .await
            .is_ok()
        {
            self.written = now;
        }
    }
}

/// Sends one transaction; `Ok` when the service answered 2xx.
async fn transmit(s: &Services, a: &AppService, txn: &InFlightTxn) -> Result<()> {
    let Some(url) = &a.url else {
        return Ok(());
    };
    let body = serde_json::value::RawValue::from_string(txn.body.clone())
        .map_err(MatrixError::internal)?;
    let response = s
        .as_delivery
        .http
        .put_json_bearer(
            &format!("{url}/_matrix/app/v1/transactions/{}", txn.txn_id),
            &a.hs_token,
            &body,
        )
        .await
        .map_err(|e| MatrixError::internal(format!("{url}: {e}")))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(MatrixError::internal(format!(
            "{url} answered {}",
            response.status()
        )))
    }
}
