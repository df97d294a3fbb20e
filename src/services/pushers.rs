//! Push notifications (the spec's Push Notifications module): pushers,
//! the notifications a user's push rules make of new events, and their
//! delivery to push gateways.
//!
//! - Pushers (`/pushers`, `/pushers/set`) belong to the device whose access
//!   token set them: deleting the device (any path) or deactivating the
//!   account deletes them with it (`storage/pushers.rs`).
//! - Recording is a subscriber of the event pipeline ([`Pushers`]): on the
//!   writer task it only hands the batch to its own task (the recorder).
//!   That task evaluates the push rules (`notifications.rs`, ruma's
//!   evaluator) of every local member of the event's room but its sender
//!   (and of an invite's target), as Synapse, whether they have a pusher
//!   or not (`/notifications` lists what they "would have been notified
//!   about"): the cost of an event grows with its room, not with the
//!   server. It writes, in one transaction, a notification row per (user,
//!   notifying event), a queue row per (`http` pusher, event) and the
//!   stream position recorded up to (`push_state`). So each event is
//!   recorded once: after a crash (the channel to the recorder is in
//!   memory, a crash loses what it held; a clean stop records all of it
//!   and says so), the events committed after that position are read from
//!   the events table at the next start and recorded before the new ones;
//!   the queue is durable, so a restart loses no delivery either.
//! - Notifications are kept 30 days, and at most [`KEEP_PER_USER`] per
//!   user (the newest), pruned hourly.
//! - Delivery is a worker (`lifecycle.rs`): per pusher, in queue order, a
//!   POST in the Push Gateway API's shape; a failed POST backs the pusher off
//!   (1 s doubling to 10 min) and tries again; a delivery older than a day
//!   that still fails is dropped with a log line (as Synapse); a pushkey the
//!   gateway rejects deletes that pusher.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use ruma::api::client::push::{Pusher, get_notifications};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

use crate::error::{MatrixError, Result};
use crate::model::pdu::Pdu;
use crate::net::outbound::{self, IpFilter, Outbound};
use crate::services::Services;
use crate::services::pipeline::{Batch, Committed, Settled, Subscriber};
use crate::services::workers::{Stage, Stop, Workers};
use crate::storage::pushers::{NewNotification, NotificationRow, PusherRow, QueuedPush};

/// The only path a pusher's URL may have (the Push Gateway API's).
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// The longest pushkey accepted (bytes), as Synapse.
const MAX_PUSHKEY_LEN: usize = 512;
/// How long a gateway may take to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff after a failed delivery: doubled per failure, capped.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// A delivery still failing after this long is dropped (ms).
const MAX_DELIVERY_AGE_MS: i64 = 24 * 3600 * 1000;
/// Notifications are kept this long (ms), as Synapse.
const NOTIFICATION_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;
/// Notifications kept per user (the newest); older ones are pruned.
pub const KEEP_PER_USER: i64 = 1000;
/// How often old notifications are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// `/notifications` page size: default and most.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 1000;
/// Events read from the database per step of the catch-up at start.
const CATCH_UP_PAGE: i64 = 500;
/// How often, at most, the recorded position is written when the events
/// recorded nothing (replaying those after a crash records nothing).
const IDLE_POSITION_WRITE: Duration = Duration::from_secs(1);

/// The push service and its pipeline subscriber.
pub struct Pushers {
    /// Users who may have a pusher (a superset: a user whose last pusher
    /// went stays until the restart, which costs a lookup only), for the
    /// badge updates of read receipts.
    with_pushers: RwLock<HashSet<OwnedUserId>>,
    /// Users who read `GET /notifications` (since the start, or with
    /// notifications kept from before it): theirs are recorded though they
    /// have no pusher.
    readers: RwLock<HashSet<OwnedUserId>>,
    /// The stream position at start-up: the events up to it that were not
    /// recorded are read from the database.
    start_pos: i64,
    /// Test knob ([`Pushers::lose_handed_events`]).
    lose_handed: std::sync::atomic::AtomicBool,
    queue: mpsc::UnboundedSender<Arc<[Committed]>>,
    /// Taken by [`Pushers::start`].
    queued: Mutex<Option<mpsc::UnboundedReceiver<Arc<[Committed]>>>>,
    /// Wakes the delivery worker.
    wake: Notify,
    /// The badge each user's pushers were last sent (a read receipt that
    /// changes it sends the new one).
    last_badge: Mutex<HashMap<OwnedUserId, i64>>,
    /// Push gateways are reached through `outbound` (its CAs and address
    /// lists).
    http: crate::net::outbound::Outbound,
    /// Deliveries that failed so far (a count for metrics).
    pub failures: std::sync::atomic::AtomicU64,
}

impl Pushers {
    /// A new one, knowing every user with a pusher (read at start-up);
    /// `start_pos` is the stream position at start-up.
    pub async fn new(
        storage: &crate::storage::Storage,
        config: &crate::config::Config,
        start_pos: i64,
    ) -> anyhow::Result<Arc<Self>> {
        let with_pushers = storage
            .pusher_users()
            .await?
            .into_iter()
            .filter_map(|u| OwnedUserId::try_from(u).ok())
            .collect();
        let readers = storage
            .notified_users()
            .await?
            .into_iter()
            .filter_map(|u| OwnedUserId::try_from(u).ok())
            .collect();
        let (queue, rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            with_pushers: RwLock::new(with_pushers),
            readers: RwLock::new(readers),
            start_pos,
            lose_handed: std::sync::atomic::AtomicBool::new(false),
            queue,
            queued: Mutex::new(Some(rx)),
            wake: Notify::new(),
            last_badge: Mutex::new(HashMap::new()),
            http: Outbound::new(
                &outbound::extra_roots(&config.outbound.ca_files)?,
                IpFilter::new(
                    config.outbound.ip_range_blocklist.clone(),
                    config.outbound.ip_range_allowlist.clone(),
                ),
                REQUEST_TIMEOUT,
            )?,
            failures: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Starts the recording task (stage `Subscribers`: it finishes what
    /// the drained writer published) and the delivery worker.
    pub fn start(s: &Arc<Services>, workers: &Workers) {
        let Some(rx) = s.pushers.queued.lock().take() else {
            return;
        };
        let services = s.clone();
        workers.spawn("push recorder", Stage::Subscribers, move |stop| {
            record_forever(services, rx, stop)
        });
        let services = s.clone();
        workers.spawn("push delivery", Stage::Flush, move |stop| {
            deliver_forever(services, stop)
        });
    }

    fn note_reader(&self, user: &UserId) {
        if !self.readers.read().contains(user) {
            self.readers.write().insert(user.to_owned());
        }
    }

    /// Whether the user's notifications are recorded: they have a pusher or
    /// read `/notifications`. Recording for every member (as Synapse) cost
    /// the send benchmark half its rate (history run 44).
    fn wants_notifications(&self, user: &UserId) -> bool {
        self.with_pushers.read().contains(user) || self.readers.read().contains(user)
    }

    fn anyone_wants_notifications(&self) -> bool {
        !self.with_pushers.read().is_empty() || !self.readers.read().is_empty()
    }

    fn note_pusher(&self, user: &UserId) {
        if !self.with_pushers.read().contains(user) {
            self.with_pushers.write().insert(user.to_owned());
        }
    }

    /// Test knob: while `lose` is set, the recorder drops the events the
    /// pipeline hands it without recording them, as a crash between their
    /// commit and their recording would (the tests show the next start
    /// records them).
    pub fn lose_handed_events(&self, lose: bool) {
        self.lose_handed
            .store(lose, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Subscriber for Pushers {
    /// Hands the batch to the recording task; nothing is evaluated here.
    fn committed(&self, batch: &Batch) -> Option<Settled> {
        let _ = self.queue.send(batch.events.clone());
        None
    }
}

impl crate::services::workers::CacheSizes for Pushers {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("users_with_pushers", self.with_pushers.read().len())]
    }
}

// ---------------------------------------------------------------- pushers

fn str_field<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) => Ok(Some(v)),
        Some(_) => Err(MatrixError::bad_json(format!("'{key}' must be a string"))),
    }
}

fn missing(body: &Map<String, Value>, keys: &[&str]) -> Result<()> {
    let absent: Vec<&str> = keys
        .iter()
        .filter(|k| !body.contains_key(**k))
        .copied()
        .collect();
    if absent.is_empty() {
        Ok(())
    } else {
        Err(MatrixError::missing_param(format!(
            "Missing parameters: {}",
            absent.join(", ")
        )))
    }
}

/// A string field that must be there (checked by [`missing`]) and be a string.
fn required<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    str_field(body, key)?.ok_or_else(|| MatrixError::bad_json(format!("'{key}' must be a string")))
}

/// Checks an `http` pusher's `data`: a `url` to the gateway's notify path,
/// and `format` absent or a string.
fn check_http_data(data: &Map<String, Value>) -> Result<()> {
    let url = match data.get("url") {
        None | Some(Value::Null) => {
            return Err(MatrixError::missing_param(
                "'url' is required in 'data' for an http pusher",
            ));
        }
        Some(Value::String(url)) => url,
        Some(_) => return Err(MatrixError::bad_json("'data.url' must be a string")),
    };
    let parsed =
        url::Url::parse(url).map_err(|_| MatrixError::invalid_param("'data.url' is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(MatrixError::invalid_param(
            "'data.url' must be an http or https URL",
        ));
    }
    if parsed.path() != NOTIFY_PATH {
        return Err(MatrixError::invalid_param(format!(
            "'data.url' must have the path {NOTIFY_PATH}"
        )));
    }
    // Only `event_id_only` changes what is sent; another string is kept and
    // sends the full format, as Synapse (sytest's "Can fetch a user's
    // pushers" sets `id_event_only`).
    match data.get("format") {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(_) => Err(MatrixError::bad_json("'data.format' must be a string")),
    }
}

/// `POST /pushers/set`: adds, replaces or (with `kind: null`) deletes a
/// pusher of the user, owned by `device_id`.
pub async fn set_pusher(s: &Services, user: &UserId, device_id: &str, body: &Value) -> Result<()> {
    let Some(body) = body.as_object() else {
        return Err(MatrixError::not_json("The body must be a JSON object"));
    };
    if matches!(body.get("kind"), Some(Value::Null)) {
        missing(body, &["app_id", "pushkey"])?;
        let (app_id, pushkey) = (required(body, "app_id")?, required(body, "pushkey")?);
        s.storage
            .delete_pusher(user.as_str(), app_id, pushkey)
            .await?;
        return Ok(());
    }
    missing(
        body,
        &[
            "kind",
            "app_id",
            "app_display_name",
            "device_display_name",
            "pushkey",
            "lang",
            "data",
        ],
    )?;
    let kind = required(body, "kind")?;
    let pushkey = required(body, "pushkey")?;
    let append = match body.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(MatrixError::bad_json("'append' must be a boolean")),
    };
    let Some(data) = body.get("data").and_then(Value::as_object) else {
        return Err(MatrixError::bad_json("'data' must be an object"));
    };
    match kind {
        "http" => check_http_data(data)?,
        "email" => {
            return Err(MatrixError::invalid_param(
                "Email pushers need email sending, which this server does not have configured",
            ));
        }
        _ => {
            return Err(MatrixError::invalid_param(format!(
                "Unknown pusher kind '{kind}'"
            )));
        }
    }
    if pushkey.len() > MAX_PUSHKEY_LEN {
        return Err(MatrixError::invalid_param("'pushkey' is too long"));
    }
    let row = PusherRow {
        pusher_id: 0,
        user_id: user.to_string(),
        device_id: device_id.to_owned(),
        app_id: required(body, "app_id")?.to_owned(),
        pushkey: pushkey.to_owned(),
        kind: kind.to_owned(),
        app_display_name: required(body, "app_display_name")?.to_owned(),
        device_display_name: required(body, "device_display_name")?.to_owned(),
        profile_tag: str_field(body, "profile_tag")?.map(str::to_owned),
        lang: required(body, "lang")?.to_owned(),
        data: Value::Object(data.clone()).to_string(),
        pushkey_ts: s.clock.now_ms(),
    };
    s.storage.set_pusher(&row, append).await?;
    s.pushers.note_pusher(user);
    Ok(())
}

/// `GET /pushers`: the user's pushers.
pub async fn pushers(s: &Services, user: &UserId) -> Result<Vec<Pusher>> {
    let rows = s.storage.pushers(user.as_str()).await?;
    rows.into_iter()
        .map(|p| {
            let data: Value = serde_json::from_str(&p.data).unwrap_or_else(|_| json!({}));
            serde_json::from_value(json!({
                "pushkey": p.pushkey,
                "app_id": p.app_id,
                "kind": p.kind,
                "app_display_name": p.app_display_name,
                "device_display_name": p.device_display_name,
                "profile_tag": p.profile_tag,
                "lang": p.lang,
                "data": data,
            }))
            .map_err(MatrixError::internal)
        })
        .collect()
}

// ------------------------------------------------------------ recording

/// The recorder: first the events committed after the recorded position
/// and before this start (a crash lost them on their way), then what the
/// pipeline hands it, each event once.
async fn record_forever(
    s: Arc<Services>,
    mut rx: mpsc::UnboundedReceiver<Arc<[Committed]>>,
    mut stop: Stop,
) {
    let (mut recorder, clean) = loop {
        match s.storage.push_started(s.pushers.start_pos).await {
            Ok((pos, clean)) => {
                let recorder = Recorder {
                    pos,
                    written: pos,
                    last_write: Instant::now(),
                    handed: pos,
                };
                break (recorder, clean);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the push recording position");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.requested() => return,
                }
            }
        }
    };
    if clean {
        // The last run recorded everything it was handed: what came after
        // its position was not written by it (a bulk import into the
        // stopped server's database, say) and is not pushed.
        recorder.pos = recorder.pos.max(s.pushers.start_pos);
    } else {
        recorder.catch_up(&s, &mut stop).await;
    }
    loop {
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(events) => recorder.record(&s, &events).await,
                None => break,
            },
            () = tokio::time::sleep(IDLE_POSITION_WRITE), if recorder.pos != recorder.written => {
                recorder.write_position(&s).await;
            }
            () = stop.requested() => {
                while let Ok(events) = rx.try_recv() {
                    recorder.record(&s, &events).await;
                }
                break;
            }
        }
    }
    if recorder.pos >= recorder.handed {
        if let Err(e) = s.storage.push_stopped(recorder.pos).await {
            tracing::warn!(error = %e, "could not write the push recording position");
        }
    } else if recorder.pos != recorder.written {
        recorder.write_position(&s).await;
    }
}

/// Where the recorder is in the stream.
struct Recorder {
    /// Every event up to here is recorded (or notified nobody).
    pos: i64,
    /// The position last written to `push_state`.
    written: i64,
    last_write: Instant,
    /// The highest position handed to it: past `pos` when it dropped
    /// events (the tests' knob), and then it does not stop cleanly.
    handed: i64,
}

impl Recorder {
    /// Records the events after the stored position up to the start's.
    async fn catch_up(&mut self, s: &Services, stop: &mut Stop) {
        let until = s.pushers.start_pos;
        while self.pos < until {
            let rows = match s
                .storage
                .events_in_stream_range(self.pos, until, CATCH_UP_PAGE)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the events to record notifications of");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = stop.requested() => return,
                    }
                }
            };
            let end = if (rows.len() as i64) < CATCH_UP_PAGE {
                until
            } else {
                rows.last().map_or(until, |r| r.stream_ordering)
            };
            let mut events = Vec::with_capacity(rows.len());
            for row in rows {
                let pos = row.stream_ordering;
                match s.rooms.pdu_from_row(row) {
                    Ok(pdu) => events.push(Committed {
                        pdu,
                        pos,
                        redacts: None,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "an event that cannot be read is not recorded")
                    }
                }
            }
            if !events.is_empty() {
                tracing::info!(
                    events = events.len(),
                    "recording the notifications of events committed before the restart"
                );
            }
            self.record_upto(s, &events, end).await;
        }
    }

    /// Records the events past the position.
    async fn record(&mut self, s: &Services, events: &[Committed]) {
        if let Some(last) = events.last() {
            self.handed = self.handed.max(last.pos);
        }
        if s.pushers
            .lose_handed
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let upto = events.last().map_or(self.pos, |c| c.pos);
        self.record_upto(s, events, upto).await;
    }

    /// Records the events past the position and moves it to `upto`.
    async fn record_upto(&mut self, s: &Services, events: &[Committed], upto: i64) {
        let fresh: Vec<&Committed> = events.iter().filter(|c| c.pos > self.pos).collect();
        let upto = upto.max(self.pos);
        match record(s, &fresh, upto).await {
            Ok(true) => {
                self.written = upto;
                self.last_write = Instant::now();
            }
            Ok(false) => {}
            // Logged; the position moves on (the events are not tried
            // again).
            Err(e) => {
                tracing::warn!(error = %e.message(), "could not record push notifications");
            }
        }
        self.pos = upto;
        if self.pos != self.written && self.last_write.elapsed() >= IDLE_POSITION_WRITE {
            self.write_position(s).await;
        }
    }

    async fn write_position(&mut self, s: &Services) {
        match s.storage.set_push_position(self.pos).await {
            Ok(()) => self.written = self.pos,
            Err(e) => tracing::warn!(error = %e, "could not write the push recording position"),
        }
        self.last_write = Instant::now();
    }
}

/// Evaluates the members' push rules for each event and writes the
/// notifications and deliveries with the position `upto`, then wakes the
/// delivery worker. Whether it wrote (events that notified nobody: not).
async fn record(s: &Services, events: &[&Committed], upto: i64) -> Result<bool> {
    let mut rooms = BatchRooms::default();
    let mut notified = Vec::new();
    for event in events {
        evaluate(s, event, &mut rooms, &mut notified).await?;
    }
    if notified.is_empty() {
        return Ok(false);
    }
    // The notified users' `http` pushers: one lookup for the batch.
    let mut users: Vec<&str> = notified.iter().map(|n| n.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let pushers = s.storage.http_pushers_of(&users).await?;
    let now = s.clock.now_ms();
    let new: Vec<NewNotification> = notified
        .iter()
        .map(|n| NewNotification {
            pushers: pushers.get(n.user.as_str()).cloned().unwrap_or_default(),
            user_id: n.user.to_string(),
            stream_ordering: n.event.pos,
            room_id: n.event.pdu.room_id.to_string(),
            event_id: n.event.pdu.event_id.to_string(),
            actions: n.actions.clone(),
            highlight: n.highlight,
            ts: now,
        })
        .collect();
    let deliveries = new.iter().any(|n| !n.pushers.is_empty());
    s.storage.record_notifications(&new, upto).await?;
    if deliveries {
        s.pushers.wake.notify_one();
    }
    Ok(true)
}

/// One user an event notifies.
struct Notified<'a> {
    user: OwnedUserId,
    event: &'a Committed,
    /// The rule's actions as JSON text.
    actions: String,
    highlight: bool,
}

/// What a batch's events of one room share: the room's members, and (once
/// an event of it may notify someone) its state and the rules' contexts.
/// Read once per room and batch (the current state, as written with the
/// batch).
#[derive(Default)]
struct BatchRooms(HashMap<OwnedRoomId, BatchRoom>);

struct BatchRoom {
    /// How many joined members (the rules' `room_member_count`).
    count: u32,
    /// Those who may be notified ([`notifiable`]).
    notifiable: Vec<OwnedUserId>,
    contexts: Option<Contexts>,
}

/// The room's state and each evaluated user's rules and context.
struct Contexts {
    state: Arc<crate::model::state::StateMap>,
    room: super::notifications::RoomContext,
    users: HashMap<OwnedUserId, (Arc<ruma::push::Ruleset>, ruma::push::PushConditionRoomCtx)>,
}

impl BatchRooms {
    async fn of(&mut self, s: &Services, room_id: &RoomId) -> Result<&mut BatchRoom> {
        if !self.0.contains_key(room_id) {
            let joined = super::memberships::joined_members(s, room_id).await?;
            let room = BatchRoom {
                count: u32::try_from(joined.len()).unwrap_or(u32::MAX),
                notifiable: joined.into_iter().filter(|u| notifiable(s, u)).collect(),
                contexts: None,
            };
            self.0.insert(room_id.to_owned(), room);
        }
        Ok(self.0.get_mut(room_id).expect("inserted"))
    }
}

impl BatchRoom {
    async fn contexts(&mut self, s: &Services, room_id: &RoomId) -> Result<&mut Contexts> {
        if self.contexts.is_none() {
            let state = s.rooms.current_state(room_id).await?;
            let room =
                super::notifications::RoomContext::new(s, room_id, &state, self.count).await?;
            self.contexts = Some(Contexts {
                state,
                room,
                users: HashMap::new(),
            });
        }
        Ok(self.contexts.as_mut().expect("set"))
    }
}

/// A local user who is not an application service's (its sender or in an
/// exclusive user namespace: they have no pushers nor read receipts, as
/// Synapse leaves them out).
fn notifiable(s: &Services, user: &UserId) -> bool {
    s.accounts.is_local(user) && s.appservices.exclusive_owner(user.as_str()).is_none()
}

/// The users the event may notify: its room's [`notifiable`] joined
/// members (and an invite's target) who want notifications recorded
/// ([`Pushers::wants_notifications`]), but not its sender. Only the room's
/// members are looked at, so the cost grows with the room, not with the
/// server.
fn candidates(s: &Services, pdu: &Pdu, notifiable_members: &[OwnedUserId]) -> Vec<OwnedUserId> {
    let mut out: Vec<OwnedUserId> = notifiable_members
        .iter()
        .filter(|u| **u != pdu.sender && s.pushers.wants_notifications(u))
        .cloned()
        .collect();
    if pdu.kind.to_string() == "m.room.member"
        && pdu.membership().as_deref() == Some("invite")
        && let Some(invitee) = pdu.state_key.as_deref()
        && invitee != pdu.sender.as_str()
        && let Ok(invitee) = UserId::parse(invitee)
        && notifiable(s, &invitee)
        && s.pushers.wants_notifications(&invitee)
        && !out.contains(&invitee)
    {
        out.push(invitee);
    }
    out
}

/// Evaluates the candidates' push rules (ruma's, over the event flattened
/// once) and notes those the event notifies.
async fn evaluate<'a>(
    s: &Services,
    event: &'a Committed,
    rooms: &mut BatchRooms,
    out: &mut Vec<Notified<'a>>,
) -> Result<()> {
    let pdu = &event.pdu;
    if pdu.redacted_by.is_some() {
        return Ok(());
    }
    // Nobody with a pusher or reading /notifications: no room is read.
    if !s.pushers.anyone_wants_notifications() {
        return Ok(());
    }
    let room = rooms.of(s, &pdu.room_id).await?;
    let users = candidates(s, pdu, &room.notifiable);
    if users.is_empty() {
        return Ok(());
    }
    let Some(raw) = super::notifications::push_forms(s, std::slice::from_ref(pdu))
        .await?
        .pop()
    else {
        return Ok(());
    };
    let flat = ruma::push::FlattenedJson::from_raw(&raw);
    let contexts = room.contexts(s, &pdu.room_id).await?;
    for user in users {
        if !contexts.users.contains_key(&user) {
            let rules = s.account_data.push_rules_shared(&user).await?;
            let ctx = contexts.room.for_user(s, &user, &contexts.state).await?;
            contexts.users.insert(user.clone(), (rules, ctx));
        }
        let (rules, ctx) = &contexts.users[&user];
        // The first rule that applies decides (as `Ruleset::get_actions`).
        let mut actions: &[ruma::push::Action] = &[];
        for rule in &**rules {
            if rule.applies(&flat, ctx).await {
                actions = rule.actions();
                break;
            }
        }
        if !actions.iter().any(ruma::push::Action::should_notify) {
            continue;
        }
        out.push(Notified {
            actions: serde_json::to_string(actions).map_err(MatrixError::internal)?,
            highlight: actions.iter().any(ruma::push::Action::is_highlight),
            user,
            event,
        });
    }
    Ok(())
}

/// After a read receipt of the user's: when their badge is not the one
/// their pushers were last sent, each `http` pusher gets the new count (a
/// notification with the counts alone), as Synapse. Best effort: the
/// receipt is already stored, so a failure here is logged, not answered.
pub async fn receipt_sent(s: &Services, user: &UserId) {
    if let Err(e) = queue_badge_update(s, user).await {
        tracing::warn!(%user, error = ?e, "could not queue the badge update of a read receipt");
    }
}

async fn queue_badge_update(s: &Services, user: &UserId) -> Result<()> {
    if !s.pushers.with_pushers.read().contains(user) {
        return Ok(());
    }
    let pushers = http_pushers(s, user).await?;
    if pushers.is_empty() {
        return Ok(());
    }
    let badge = s.storage.unread_rooms(user.as_str()).await?;
    if s.pushers.last_badge.lock().get(user) == Some(&badge) {
        return Ok(());
    }
    s.storage
        .queue_badge_updates(&pushers, s.clock.now_ms())
        .await?;
    s.pushers.wake.notify_one();
    Ok(())
}

async fn http_pushers(s: &Services, user: &UserId) -> Result<Vec<i64>> {
    Ok(s.storage
        .pushers(user.as_str())
        .await?
        .into_iter()
        .filter(|p| p.kind == "http")
        .map(|p| p.pusher_id)
        .collect())
}

// --------------------------------------------------------- /notifications

/// `GET /notifications`: the user's notifications before `from`, newest
/// first.
pub async fn notifications(
    s: &Services,
    user: &UserId,
    from: Option<&str>,
    limit: Option<u64>,
    only: Option<&str>,
) -> Result<get_notifications::v3::Response> {
    s.pushers.note_reader(user);
    let before = match from {
        None | Some("") => i64::MAX,
        Some(f) => f
            .parse::<i64>()
            .map_err(|_| MatrixError::invalid_param("'from' is not a token this server gave"))?,
    };
    let limit = limit
        .map_or(DEFAULT_LIMIT, |l| i64::try_from(l).unwrap_or(MAX_LIMIT))
        .clamp(1, MAX_LIMIT);
    let only_highlight = only.is_some_and(|o| o.contains("highlight"));
    let rows = s
        .storage
        .notifications(user.as_str(), before, limit, only_highlight)
        .await?;
    let full = rows.len() as i64 == limit;
    let next_token = rows
        .last()
        .filter(|_| full)
        .map(|r| r.stream_ordering.to_string());
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(n) = notification(s, row).await? {
            out.push(n);
        }
    }
    let mut response = get_notifications::v3::Response::new(out);
    response.next_token = next_token;
    Ok(response)
}

async fn notification(
    s: &Services,
    row: NotificationRow,
) -> Result<Option<get_notifications::v3::Notification>> {
    let Some(pdu) = s.rooms.pdu_shared(&row.event_id).await? else {
        return Ok(None);
    };
    let event = s.rooms.client_event(&pdu, None).await?;
    let n = json!({
        "actions": serde_json::from_str::<Value>(&row.actions).unwrap_or_else(|_| json!([])),
        "event": event,
        "profile_tag": null,
        "read": row.is_read != 0,
        "room_id": row.room_id,
        "ts": row.ts,
    });
    serde_json::from_value(n)
        .map(Some)
        .map_err(MatrixError::internal)
}

// --------------------------------------------------------------- delivery

/// Per pusher, when it may be tried again and the backoff it is at.
#[derive(Clone, Copy)]
struct Backoff {
    until: Instant,
    delay: Duration,
}

async fn deliver_forever(s: Arc<Services>, mut stop: Stop) {
    let mut backoff: HashMap<i64, Backoff> = HashMap::new();
    // One task per pusher with deliveries, so a slow gateway holds up only
    // its own pushers. Dropped (cut off) at shutdown: what is not deleted
    // from the queue yet is sent again at the next start.
    let mut running: HashMap<i64, tokio::task::Id> = HashMap::new();
    let mut tasks: tokio::task::JoinSet<(i64, Result<()>)> = tokio::task::JoinSet::new();
    let mut last_prune: Option<Instant> = None;
    loop {
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL) {
            last_prune = Some(Instant::now());
            let before = s.clock.now_ms() - NOTIFICATION_RETENTION_MS;
            if let Err(e) = s.storage.prune_notifications(before, KEEP_PER_USER).await {
                tracing::warn!(error = %e, "could not prune old notifications");
            }
        }
        match s.storage.queued_pushers().await {
            Ok(queued) => {
                backoff.retain(|id, _| queued.contains(id));
                let now = Instant::now();
                for pusher_id in queued {
                    if running.contains_key(&pusher_id)
                        || backoff.get(&pusher_id).is_some_and(|b| b.until > now)
                    {
                        continue;
                    }
                    let s = s.clone();
                    let task = tasks
                        .spawn(async move { (pusher_id, deliver_pusher(&s, pusher_id).await) });
                    running.insert(pusher_id, task.id());
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the push queue"),
        }
        let next = backoff.values().map(|b| b.until).min();
        let wait = next.map_or(PRUNE_INTERVAL, |t| {
            t.saturating_duration_since(Instant::now())
                .min(PRUNE_INTERVAL)
        });
        tokio::select! {
            () = s.pushers.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok((pusher_id, delivered)) => {
                        running.remove(&pusher_id);
                        if delivered.is_err() {
                            s.pushers.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        note_outcome(&mut backoff, pusher_id, delivered);
                    }
                    // A task that panicked: its pusher is tried again.
                    Err(e) => running.retain(|_, task| *task != e.id()),
                }
            }
            () = stop.requested() => break,
        }
    }
}

/// Backs a pusher off after a failed delivery (doubling, capped), or
/// forgets its backoff after a good one.
fn note_outcome(backoff: &mut HashMap<i64, Backoff>, pusher_id: i64, delivered: Result<()>) {
    match delivered {
        Ok(()) => {
            backoff.remove(&pusher_id);
        }
        Err(e) => {
            let delay = backoff
                .get(&pusher_id)
                .map_or(FIRST_BACKOFF, |b| (b.delay * 2).min(MAX_BACKOFF));
            tracing::info!(pusher_id, error = %e.message(), retry_in = ?delay, "push delivery failed");
            backoff.insert(
                pusher_id,
                Backoff {
                    until: Instant::now() + delay,
                    delay,
                },
            );
        }
    }
}

/// Sends the pusher's queue in order until it is empty or a send fails.
async fn deliver_pusher(s: &Services, pusher_id: i64) -> Result<()> {
    while let Some(item) = s.storage.next_queued(pusher_id).await? {
        let Some(pusher) = s.storage.pusher(pusher_id).await? else {
            // The pusher went (its rows with it, unless just now).
            s.storage.delete_queued(item.id).await?;
            continue;
        };
        match send(s, &pusher, &item).await {
            Ok(Sent::Delivered) => s.storage.delete_queued(item.id).await?,
            Ok(Sent::Rejected) => {
                tracing::info!(app_id = %pusher.app_id, user = %pusher.user_id, "the push gateway rejected a pushkey: pusher removed");
                s.storage
                    .delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
                    .await?;
                return Ok(());
            }
            Err(e) if s.clock.now_ms() - item.created_ts > MAX_DELIVERY_AGE_MS => {
                tracing::warn!(
                    app_id = %pusher.app_id, user = %pusher.user_id, event_id = ?item.event_id,
                    error = %e.message(),
                    "dropping a push notification that could not be delivered for a day"
                );
                s.storage.delete_queued(item.id).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Sent {
    Delivered,
    /// The gateway rejected this pusher's pushkey.
    Rejected,
}

async fn send(s: &Services, pusher: &PusherRow, item: &QueuedPush) -> Result<Sent> {
    let mut data: Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
    let Some(Value::String(url)) = data.remove("url") else {
        return Ok(Sent::Rejected);
    };
    let Some(body) = notification_body(s, pusher, data, item).await? else {
        return Ok(Sent::Delivered);
    };
    let response = s
        .pushers
        .http
        .post_json(&url, &body)
        .await
        .map_err(|e| MatrixError::internal(format!("push gateway {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(MatrixError::internal(format!(
            "push gateway {url} answered {}",
            response.status()
        )));
    }
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    let rejected = answer
        .get("rejected")
        .and_then(Value::as_array)
        .is_some_and(|r| {
            r.iter()
                .any(|k| k.as_str() == Some(pusher.pushkey.as_str()))
        });
    Ok(if rejected {
        Sent::Rejected
    } else {
        Sent::Delivered
    })
}

/// The tweaks of a push rule's actions, as an object.
fn tweaks(actions: &str) -> Map<String, Value> {
    let actions: Vec<Value> = serde_json::from_str(actions).unwrap_or_default();
    let mut out = Map::new();
    for a in actions {
        if let Some(name) = a.get("set_tweak").and_then(Value::as_str) {
            let value = a.get("value").cloned().unwrap_or(Value::Bool(true));
            out.insert(name.to_owned(), value);
        }
    }
    out
}

/// The Push Gateway API request body; `None` when the event is gone.
async fn notification_body(
    s: &Services,
    pusher: &PusherRow,
    data: Map<String, Value>,
    item: &QueuedPush,
) -> Result<Option<Value>> {
    let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
    let tweaks = tweaks(&item.actions);
    let badge = s.storage.unread_rooms(&pusher.user_id).await?;
    if let Ok(user) = OwnedUserId::try_from(pusher.user_id.as_str()) {
        s.pushers.last_badge.lock().insert(user, badge);
    }
    let device = json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.pushkey_ts / 1000,
        "data": data,
        "tweaks": tweaks,
    });
    let counts = json!({ "unread": badge });
    let Some(event_id) = &item.event_id else {
        // A badge update: the counts alone.
        return Ok(Some(json!({ "notification": {
            "id": "", "type": null, "sender": "",
            "counts": counts, "devices": [device],
        }})));
    };
    let Some(pdu) = s.rooms.pdu_shared(event_id).await? else {
        return Ok(None);
    };
    let kind = pdu.kind.to_string();
    let high = kind == "m.room.encrypted"
        || tweaks.get("highlight").and_then(Value::as_bool) == Some(true)
        || tweaks.contains_key("sound");
    let mut n = json!({
        "id": event_id,
        "event_id": event_id,
        "room_id": pdu.room_id,
        "counts": counts,
        "devices": [device],
        "prio": if high { "high" } else { "low" },
    });
    if !event_id_only {
        add_event_details(s, &pdu, &pusher.user_id, &mut n).await?;
    }
    Ok(Some(json!({ "notification": n })))
}

/// The full format's fields: type, sender and their display name, the
/// room's name and alias, the content (and for a member event about the
/// pusher's user, `user_is_target`).
async fn add_event_details(
    s: &Services,
    pdu: &crate::model::pdu::Pdu,
    user: &str,
    n: &mut Value,
) -> Result<()> {
    let state = s.rooms.current_state(&pdu.room_id).await?;
    let state_field = async |ty: &str, key: &str, field: &str| -> Result<Option<String>> {
        let Some(id) = state.get(&(ty.to_owned(), key.to_owned())) else {
            return Ok(None);
        };
        Ok(s.rooms.pdu_shared(id.as_str()).await?.and_then(|p| {
            p.content_value()
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
        }))
    };
    let sender_name = state_field("m.room.member", pdu.sender.as_str(), "displayname").await?;
    let room_alias = state_field("m.room.canonical_alias", "", "alias").await?;
    // As Synapse: the room's name, else its canonical alias.
    let room_name = match state_field("m.room.name", "", "name").await? {
        Some(name) if !name.is_empty() => Some(name),
        _ => room_alias.clone(),
    };
    let kind = pdu.kind.to_string();
    let obj = n.as_object_mut().expect("built as an object");
    obj.insert("type".into(), json!(kind));
    obj.insert("sender".into(), json!(pdu.sender));
    obj.insert("content".into(), pdu.content_value());
    for (key, value) in [
        ("sender_display_name", sender_name),
        ("room_name", room_name),
        ("room_alias", room_alias),
    ] {
        if let Some(v) = value {
            obj.insert(key.into(), json!(v));
        }
    }
    if kind == "m.room.member" {
        obj.insert(
            "user_is_target".into(),
            json!(pdu.state_key.as_deref() == Some(user)),
        );
        if let Some(m) = pdu.membership() {
            obj.insert("membership".into(), json!(m));
        }
    }
    Ok(())
}
