//! Send-to-device messaging. A `PUT /sendToDevice` is stored once, at one
//! stream position: one body holding every recipient device's content
//! (`model::to_device`), not a row per device: its header (who gets what)
//! in a `to_device_sends` row, its contents in pieces (`to_device_chunks`)
//! so that a device whose message is no longer in memory reads the piece
//! it lies in, not everyone's.
//! Which messages wait for which device is kept in memory ([`Pending`]: per
//! device, the positions and where its content lies in each body), rebuilt
//! at start-up from the stored sends and the devices' acknowledgements, so
//! a sync finds its device's messages without a query.
//!
//! `/sync` delivers a device's messages in order, up to [`SYNC_LIMIT`] at a
//! time. A sync whose `since` is at or past some of them acknowledges them:
//! the device's mark in `to_device_acks` moves up to `since`, and a send
//! every recipient has acknowledged is deleted (in the same transaction). A
//! crash at any moment loses nothing unacknowledged: a send is answered
//! after its row commits, and start-up rebuilds what waits from the rows
//! and the marks (deleting the sends nobody waits for).
//!
//! A message touches [`Topic::Device`], which wakes only that device's
//! parked syncs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::Config;
use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::model::to_device::{self as send_body, Entry, ForUser, Outgoing, Recipient};
use crate::services::e2e_keys::DeviceLists;
use crate::services::stream::{Stream, Topic};
use crate::storage::Storage;
use crate::storage::to_device::{ContentAt, NewSend};

/// Messages per `/sync` response, as Synapse; the rest come with the next.
pub const SYNC_LIMIT: usize = 100;

/// The largest content of one message, in bytes of canonical JSON: 413
/// `M_TOO_LARGE` above it, as Synapse (`MAX_TO_DEVICE_CONTENT_SIZE`, the
/// federation EDU size, so that a message sent today can cross servers).
pub const MAX_CONTENT_BYTES: usize = 65_536;

/// The bodies of recent sends kept in memory, in bytes: the devices of a
/// send mostly read it soon after it was sent, so most reads find it here.
const BODY_CACHE_BYTES: usize = 64 << 20;

/// How many users' device lists the send path keeps.
const CACHED_DEVICE_LISTS: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();

/// An event of `/sync`'s `to_device.events`.
#[derive(Debug, Serialize)]
pub struct ToDeviceEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub sender: String,
    pub content: Box<RawValue>,
}

/// What a sync gets from the inbox: its events, and the position the sync
/// answers up to (lowered to the last event when more are waiting, so the
/// client comes back for them at once).
pub struct ForSync {
    pub events: Vec<ToDeviceEvent>,
    pub to: i64,
}

/// A stored send something still waits for.
struct SendMeta {
    send: Sent,
    /// Recipient devices that have not acknowledged it.
    waiting: usize,
}

/// A message waiting for a device: its send's position and where the
/// device's content lies in the send's body.
#[derive(Debug, Clone, Copy)]
struct Slot {
    pos: i64,
    offset: u32,
    len: u32,
}

/// Who sent a send, of which type, and where its contents start.
#[derive(Debug, Clone)]
struct Sent {
    sender: Arc<str>,
    event_type: Arc<str>,
    /// Where the body's contents start (its header's length).
    header_len: u32,
}

/// A map keyed by names, hashed fast: a send touches one entry per
/// recipient device, a thousand for a large room's key share.
type NameMap<V> = hashbrown::HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// What waits for which device.
#[derive(Default)]
struct Pending {
    sends: HashMap<i64, SendMeta, foldhash::fast::RandomState>,
    /// Per user, per device: its messages in position order.
    by_user: NameMap<NameMap<VecDeque<Slot>>>,
}

impl Pending {
    /// Records a send at `pos` for the devices of `entries`.
    fn add(&mut self, pos: i64, send: Sent, entries: &[Entry<'_>]) {
        if entries.is_empty() {
            return;
        }
        self.sends.insert(
            pos,
            SendMeta {
                send,
                waiting: entries.len(),
            },
        );
        for e in entries {
            // Looked up by `&str`: a key is allocated once per device.
            let queue = self
                .by_user
                .entry_ref(e.user)
                .or_default()
                .entry_ref(e.device)
                .or_default();
            let slot = Slot {
                pos,
                offset: e.offset,
                len: e.len,
            };
            // Sends commit out of order now and then: keep position order.
            match queue.back() {
                Some(last) if last.pos > pos => {
                    let at = queue.partition_point(|s| s.pos < pos);
                    queue.insert(at, slot);
                }
                _ => queue.push_back(slot),
            }
        }
    }

    /// One recipient fewer waits for the send at `pos`: whether it was the
    /// last (the send is forgotten then).
    fn release(&mut self, pos: i64) -> bool {
        let Some(send) = self.sends.get_mut(&pos) else {
            return false;
        };
        send.waiting = send.waiting.saturating_sub(1);
        if send.waiting == 0 {
            self.sends.remove(&pos);
            return true;
        }
        false
    }

    /// Drops the device's messages up to `upto`: the sends nobody waits
    /// for any more, or `None` when it had none there.
    fn acknowledge(&mut self, user: &str, device: &str, upto: i64) -> Option<Vec<i64>> {
        let devices = self.by_user.get_mut(user)?;
        let queue = devices.get_mut(device)?;
        let n = queue.partition_point(|s| s.pos <= upto);
        if n == 0 {
            return None;
        }
        let done: Vec<i64> = queue.drain(..n).map(|s| s.pos).collect();
        if queue.is_empty() {
            devices.remove(device);
            if devices.is_empty() {
                self.by_user.remove(user);
            }
        }
        Some(done.into_iter().filter(|p| self.release(*p)).collect())
    }

    /// Drops every message of the device: the sends nobody waits for.
    fn drop_device(&mut self, user: &str, device: &str) -> Vec<i64> {
        self.acknowledge(user, device, i64::MAX).unwrap_or_default()
    }

    /// Up to `limit` of the device's messages in `(after, upto]`, with
    /// their sends.
    fn take(
        &self,
        user: &str,
        device: &str,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Vec<(Slot, Sent)> {
        let Some(queue) = self.by_user.get(user).and_then(|d| d.get(device)) else {
            return Vec::new();
        };
        let first = queue.partition_point(|s| s.pos <= after);
        queue
            .range(first..)
            .take_while(|s| s.pos <= upto)
            .take(limit)
            .filter_map(|s| Some((*s, self.sends.get(&s.pos)?.send.clone())))
            .collect()
    }

    /// The devices of `user` with messages waiting.
    fn devices_of(&self, user: &str) -> Vec<String> {
        self.by_user
            .get(user)
            .into_iter()
            .flat_map(|d| d.keys())
            .map(|d| d.to_string())
            .collect()
    }

    fn devices(&self) -> usize {
        self.by_user.values().map(|d| d.len()).sum()
    }
}

/// Recent sends' bodies, least recently used out past [`BODY_CACHE_BYTES`].
struct Bodies {
    lru: lru::LruCache<i64, bytes::Bytes>,
    bytes: usize,
}

impl Bodies {
    fn insert(&mut self, pos: i64, body: bytes::Bytes) {
        self.bytes += body.len();
        if let Some(old) = self.lru.put(pos, body) {
            self.bytes -= old.len();
        }
        while self.bytes > BODY_CACHE_BYTES {
            match self.lru.pop_lru() {
                Some((_, b)) => self.bytes -= b.len(),
                None => break,
            }
        }
    }

    fn forget(&mut self, positions: &[i64]) {
        for p in positions {
            if let Some(b) = self.lru.pop(p) {
                self.bytes -= b.len();
            }
        }
    }
}

/// Each user's device ids (sorted), for the send path. Forgotten on every
/// change of the user's devices; a list read from the database is kept
/// only when nothing was forgotten while it was read.
struct DeviceCache {
    lists: Mutex<lru::LruCache<String, Arc<[OwnedDeviceId]>>>,
    generation: AtomicU64,
    /// Per user looked up.
    lookups: crate::metrics::CacheLookups,
}

impl DeviceCache {
    fn forget(&self, user: &str) {
        let mut lists = self.lists.lock();
        lists.pop(user);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The devices of each of `users`, in order.
    async fn of(&self, storage: &Storage, users: &[&str]) -> Result<Vec<Arc<[OwnedDeviceId]>>> {
        let mut out: Vec<Option<Arc<[OwnedDeviceId]>>> = Vec::with_capacity(users.len());
        let mut missing = Vec::new();
        let generation = {
            let mut lists = self.lists.lock();
            for u in users {
                let hit = self.lookups.of(lists.get(*u).cloned());
                if hit.is_none() {
                    missing.push(*u);
                }
                out.push(hit);
            }
            self.generation.load(Ordering::SeqCst)
        };
        if !missing.is_empty() {
            let mut read: HashMap<String, Vec<OwnedDeviceId>> = missing
                .iter()
                .map(|u| ((*u).to_owned(), Vec::new()))
                .collect();
            for d in storage.devices_of_users(&missing).await? {
                if let Some(list) = read.get_mut(&d.user_id) {
                    list.push(OwnedDeviceId::from(d.device_id));
                }
            }
            let read: HashMap<String, Arc<[OwnedDeviceId]>> = read
                .into_iter()
                .map(|(u, mut l)| {
                    l.sort();
                    (u, Arc::from(l))
                })
                .collect();
            let mut lists = self.lists.lock();
            let keep = self.generation.load(Ordering::SeqCst) == generation;
            for (slot, u) in out.iter_mut().zip(users) {
                if slot.is_none() {
                    let list = read
                        .get(*u)
                        .cloned()
                        .unwrap_or_else(|| Arc::from(Vec::new()));
                    if keep {
                        lists.put((*u).to_owned(), list.clone());
                    }
                    *slot = Some(list);
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|l| l.unwrap_or_else(|| Arc::from(Vec::new())))
            .collect())
    }
}

/// What the service and its device-change listener share.
struct Shared {
    storage: Storage,
    pending: Mutex<Pending>,
    bodies: Mutex<Bodies>,
    /// Per send body looked up.
    body_lookups: crate::metrics::CacheLookups,
    devices: DeviceCache,
}

impl Shared {
    /// The user's devices changed (the change is committed): forget their
    /// devices, and drop what waits for a device of theirs that was
    /// deleted: the messages up to its acknowledgement mark (a deletion
    /// moves it to the last send stored, so a new device with the same id
    /// gets none of them) and any of a device that is gone. Frees the
    /// sends nobody waits for any more.
    async fn user_changed(&self, user: &str) {
        self.devices.forget(user);
        if !self.pending.lock().by_user.contains_key(user) {
            return;
        }
        if let Err(e) = self.drop_deleted_devices(user).await {
            tracing::warn!(%user, error = %e, "dropping a deleted device's to-device messages");
        }
    }

    async fn drop_deleted_devices(&self, user: &str) -> sqlx::Result<()> {
        let live: HashSet<String> = self
            .storage
            .devices_of_users(&[user])
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        let acks: HashMap<String, i64> = self
            .storage
            .to_device_acks_of(user)
            .await?
            .into_iter()
            .map(|a| (a.device_id, a.position))
            .collect();
        let finished: Vec<i64> = {
            let mut pending = self.pending.lock();
            let devices = pending.devices_of(user);
            let mut finished = Vec::new();
            for d in devices {
                let upto = match (live.contains(&d), acks.get(&d)) {
                    (false, _) => i64::MAX,
                    (true, Some(acked)) => *acked,
                    (true, None) => continue,
                };
                finished.extend(pending.acknowledge(user, &d, upto).unwrap_or_default());
            }
            finished
        };
        if finished.is_empty() {
            return Ok(());
        }
        self.bodies.lock().forget(&finished);
        self.storage.delete_to_device_sends(&finished).await
    }

    /// The content of each of `slots`, in order: from the bodies kept in
    /// memory, or read from the pieces each lies in.
    async fn contents(&self, slots: &[(Slot, u32)]) -> Result<Vec<String>> {
        let mut out: Vec<Option<String>> = vec![None; slots.len()];
        let mut missing = Vec::new();
        {
            let mut bodies = self.bodies.lock();
            for (i, (slot, _)) in slots.iter().enumerate() {
                match self.body_lookups.of(bodies.lru.get(&slot.pos)) {
                    Some(b) => {
                        let text = send_body::content(b, slot.offset, slot.len)
                            .map_err(MatrixError::internal)?;
                        out[i] = Some(text.to_owned());
                    }
                    None => missing.push(i),
                }
            }
        }
        if !missing.is_empty() {
            let wanted = missing
                .iter()
                .map(|&i| content_at(slots[i].0, slots[i].1))
                .collect::<Result<Vec<_>>>()?;
            let read = self.storage.to_device_contents(&wanted).await?;
            for ((&i, at), bytes) in missing.iter().zip(&wanted).zip(read) {
                let bytes = bytes.ok_or_else(|| {
                    MatrixError::internal(format!("to-device send {} is cut short", at.pos))
                })?;
                out[i] = Some(String::from_utf8(bytes).map_err(MatrixError::internal)?);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

/// Where the content of `slot` lies in its send's contents (`header_len`:
/// where they start in the body).
fn content_at(slot: Slot, header_len: u32) -> Result<ContentAt> {
    let start = slot
        .offset
        .checked_sub(header_len)
        .ok_or_else(|| MatrixError::internal("a to-device content lies in its send's header"))?;
    Ok(ContentAt {
        pos: slot.pos,
        start: start as usize,
        len: slot.len as usize,
    })
}

/// What hears of each stored send (the application services' delivery,
/// MSC2409), registered at start-up: called on the sending request's task
/// once the send is stored and waits in memory, before its position
/// completes, so it must be cheap (memory only). The messages themselves
/// are read with [`ToDevice::waiting_for`]. This service knows nothing of
/// who listens.
pub trait ToDeviceListener: Send + Sync {
    fn sent(&self, pos: i64, recipients: &[Recipient<'_>]);
}

pub struct ToDevice {
    /// What hears of stored sends ([`ToDeviceListener`]).
    listeners: parking_lot::RwLock<Vec<Arc<dyn ToDeviceListener>>>,
    shared: Arc<Shared>,
    stream: Arc<Stream>,
    server_name: OwnedServerName,
    /// `limits.max_to_device_messages` and `limits.max_to_device_bytes`.
    max_messages: usize,
    max_bytes: usize,
}

impl ToDevice {
    /// The service for `config`'s server name and limits, with what waits
    /// for each device read from storage; it listens to `lists` for device
    /// changes.
    pub async fn load(
        storage: Storage,
        stream: Arc<Stream>,
        config: &Config,
        lists: &DeviceLists,
    ) -> anyhow::Result<Self> {
        let pending = rebuild(&storage).await?;
        let shared = Arc::new(Shared {
            storage,
            pending: Mutex::new(pending),
            bodies: Mutex::new(Bodies {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            body_lookups: crate::metrics::CacheLookups::default(),
            devices: DeviceCache {
                lists: Mutex::new(lru::LruCache::new(CACHED_DEVICE_LISTS)),
                generation: AtomicU64::new(0),
                lookups: crate::metrics::CacheLookups::default(),
            },
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        lists.on_change(Box::new(move |user| {
            let weak = weak.clone();
            Box::pin(async move {
                if let Some(shared) = weak.upgrade() {
                    shared.user_changed(&user).await;
                }
            })
        }));
        Ok(Self {
            listeners: parking_lot::RwLock::new(Vec::new()),
            shared,
            stream,
            server_name: OwnedServerName::try_from(config.server_name.as_str())?,
            max_messages: config.limits.max_to_device_messages,
            max_bytes: config.limits.max_to_device_bytes,
        })
    }

    /// Registers a listener of stored sends.
    pub fn listen(&self, listener: Arc<dyn ToDeviceListener>) {
        self.listeners.write().push(listener);
    }

    /// The topic a message for the requester's device touches.
    pub fn topic(who: &Requester) -> Topic {
        Topic::Device(
            who.user.clone(),
            OwnedDeviceId::from(who.device_id.as_str()),
        )
    }

    /// Stores `messages` (`{user: {device or "*": content}}`) of
    /// `event_type` for their local recipients. Retrying a transaction id
    /// of the sender's device stores nothing more. Unknown local users and
    /// devices are left out silently (as Synapse). A user of another server
    /// is 400 `M_INVALID_PARAM` before anything is stored: Myelin does not
    /// federate yet, and a message dropped silently would leave the sender
    /// believing a room key reached its recipient. A content over
    /// [`MAX_CONTENT_BYTES`], or a send that would store more messages or
    /// bytes than the configured limits (`*` expanded), is 413
    /// `M_TOO_LARGE` naming the limit, and stores nothing: the client can
    /// split it, which a server cannot do for it without breaking the
    /// transaction id's once-only promise.
    pub async fn send(
        &self,
        sender: &Requester,
        event_type: &str,
        txn_id: &str,
        messages: &Outgoing<'_>,
    ) -> Result<()> {
        // Every content and recipient is checked before anything is written.
        let users = self.checked_users(messages)?;
        // The position first, then the devices: a device deleted after this
        // read has its acknowledgement moved past this position (its
        // deletion reads the stream's high-water mark once this commits),
        // or is dropped from memory by the change listener.
        let r = self.stream.reserve();
        let names: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
        let devices = self.shared.devices.of(&self.shared.storage, &names).await?;
        let mut recipients: Vec<Recipient<'_>> = Vec::new();
        let mut topics = Vec::new();
        let mut named: Vec<(&str, &str)> = Vec::new();
        for ((user, u), devs) in users.iter().zip(&devices) {
            named.clear();
            let mut wildcard = None;
            for (key, content) in u.devices.iter().rev() {
                if key == "*" {
                    wildcard = wildcard.or(Some(content.get()));
                } else {
                    named.push((key, content.get()));
                }
            }
            named.sort_by(|a, b| a.0.cmp(b.0));
            named.dedup_by(|a, b| a.0 == b.0);
            let owned_user: OwnedUserId = (*user).to_owned();
            for device in devs.iter() {
                // A device named gets its own content; "*" is for the rest.
                let own = named
                    .binary_search_by(|(n, _)| (*n).cmp(device.as_str()))
                    .ok()
                    .map(|i| named[i].1);
                if let Some(content) = own.or(wildcard) {
                    recipients.push(Recipient {
                        user: user.as_str(),
                        device: device.as_str(),
                        content,
                    });
                    topics.push(Topic::Device(owned_user.clone(), device.clone()));
                }
            }
        }
        if recipients.is_empty() {
            return Ok(());
        }
        self.check_fan_out(&recipients)?;
        let encoded = send_body::encode(&mut recipients);
        let header_len = encoded.header_len;
        let stored = self
            .shared
            .storage
            .store_to_device(&NewSend {
                sender: &sender.user_id,
                sender_device: &sender.device_id,
                event_type,
                txn_id,
                stream_ordering: r.pos(),
                header: &encoded.body[..header_len],
                contents: &encoded.body[header_len..],
            })
            .await;
        if let Ok(true) = stored {
            self.shared.pending.lock().add(
                r.pos(),
                Sent {
                    sender: Arc::from(sender.user_id.as_str()),
                    event_type: Arc::from(event_type),
                    header_len: u32::try_from(header_len).map_err(MatrixError::internal)?,
                },
                &encoded.entries,
            );
            // Kept without a copy (a send's body can be megabytes).
            self.shared
                .bodies
                .lock()
                .insert(r.pos(), bytes::Bytes::from(encoded.body));
            self.stream.touch_many(topics, r.pos());
            for listener in self.listeners.read().iter() {
                listener.sent(r.pos(), &recipients);
            }
        }
        drop(recipients);
        self.stream.complete(r);
        stored?;
        Ok(())
    }

    /// The users `messages` names, each once, sorted: 400 `M_INVALID_PARAM`
    /// for a user of another server, 400 `M_BAD_JSON` for a content that is
    /// not an object, 413 `M_TOO_LARGE` for one over [`MAX_CONTENT_BYTES`].
    /// A user named twice gets what the body names last (as a JSON object
    /// read into a map).
    fn checked_users<'m, 'a>(
        &self,
        messages: &'m Outgoing<'a>,
    ) -> Result<Vec<(&'m UserId, &'m ForUser<'a>)>> {
        let mut users = Vec::with_capacity(messages.users.len());
        for u in &messages.users {
            let id = <&UserId>::try_from(&*u.user)
                .map_err(|e| MatrixError::bad_json(format!("Invalid user id {}: {e}", u.user)))?;
            users.push((id, u));
        }
        if let Some((remote, _)) = users
            .iter()
            .find(|(u, _)| u.server_name() != self.server_name)
        {
            return Err(MatrixError::invalid_param(format!(
                "Cannot send to-device messages to {remote}: this server does not federate yet"
            )));
        }
        for (user, u) in &users {
            for (device, content) in &u.devices {
                if !content.get().trim_start().starts_with('{') {
                    return Err(MatrixError::bad_json(
                        "Each to-device message content must be a JSON object",
                    ));
                }
                check_content_size(user.as_str(), device, content.get())?;
            }
        }
        // Sorted stably from the end, the first of each run is the last named.
        users.reverse();
        users.sort_by(|a, b| a.0.cmp(b.0));
        users.dedup_by(|a, b| a.0 == b.0);
        Ok(users)
    }

    /// 413 `M_TOO_LARGE` when `recipients` are more messages or bytes than
    /// the configured limits.
    fn check_fan_out(&self, recipients: &[Recipient<'_>]) -> Result<()> {
        if recipients.len() > self.max_messages {
            return Err(MatrixError::too_large(format!(
                "This request would store {} to-device messages (one per recipient device, \
                 \"*\" counting every device of its user); the limit is {}",
                recipients.len(),
                self.max_messages
            )));
        }
        let bytes: usize = recipients.iter().map(|d| d.content.len()).sum();
        if bytes > self.max_bytes {
            return Err(MatrixError::too_large(format!(
                "This request would store {bytes} bytes of to-device messages (one content per \
                 recipient device, \"*\" expanded); the limit is {}",
                self.max_bytes
            )));
        }
        Ok(())
    }

    /// The requester's messages for a sync of `(since, to]`, after
    /// acknowledging those up to `since` (which the device has seen:
    /// `since` is a `next_batch` it was given). Reads no storage when
    /// nothing waits for the device but the bodies of what it gets (most
    /// from memory).
    pub async fn for_sync(&self, who: &Requester, since: Option<i64>, to: i64) -> Result<ForSync> {
        let (user, device) = (who.user_id.as_str(), who.device_id.as_str());
        if let Some(since) = since {
            let finished = self.shared.pending.lock().acknowledge(user, device, since);
            if let Some(finished) = finished {
                self.shared.bodies.lock().forget(&finished);
                self.shared
                    .storage
                    .acknowledge_to_device(user, device, since, &finished)
                    .await?;
            }
        }
        let mut taken =
            self.shared
                .pending
                .lock()
                .take(user, device, since.unwrap_or(0), to, SYNC_LIMIT + 1);
        let more = taken.len() > SYNC_LIMIT;
        taken.truncate(SYNC_LIMIT);
        let Some(last) = taken.last().map(|t| t.0.pos) else {
            return Ok(ForSync {
                events: Vec::new(),
                to,
            });
        };
        let slots: Vec<(Slot, u32)> = taken.iter().map(|t| (t.0, t.1.header_len)).collect();
        let contents = self.shared.contents(&slots).await?;
        let events = taken
            .into_iter()
            .zip(contents)
            .map(|((_, send), text)| {
                Ok(ToDeviceEvent {
                    event_type: send.event_type.to_string(),
                    sender: send.sender.to_string(),
                    content: RawValue::from_string(text).map_err(MatrixError::internal)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ForSync {
            events,
            to: if more { last } else { to },
        })
    }
}

/// A message waiting for a device, as a reader other than the device's own
/// syncs takes it (an application service, for its users: MSC2409).
#[derive(Debug, Clone)]
pub struct WaitingMessage {
    pub pos: i64,
    pub user: String,
    pub device: String,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

impl ToDevice {
    /// The users with a message waiting for a device of theirs.
    pub fn users_waiting(&self) -> Vec<String> {
        self.shared
            .pending
            .lock()
            .by_user
            .keys()
            .map(|u| u.to_string())
            .collect()
    }

    /// Whether a message after `after` waits for a device of `user`
    /// (memory only).
    pub fn waits_after(&self, user: &str, after: i64) -> bool {
        self.shared
            .pending
            .lock()
            .by_user
            .get(user)
            .is_some_and(|devices| {
                devices
                    .values()
                    .any(|queue| queue.back().is_some_and(|s| s.pos > after))
            })
    }

    /// The messages waiting for the devices of `users` in `(after, upto]`,
    /// in position order, and the position they cover: `upto`, or the last
    /// one's when more wait. At most `limit`, cut between sends (a send
    /// with more recipients among `users` than `limit` comes whole).
    pub async fn waiting_for(
        &self,
        users: &[&str],
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<(Vec<WaitingMessage>, i64)> {
        let mut taken: Vec<(Slot, Sent, &str, Box<str>)> = Vec::new();
        {
            let pending = self.shared.pending.lock();
            for user in users {
                let Some(devices) = pending.by_user.get(*user) else {
                    continue;
                };
                for (device, queue) in devices {
                    let first = queue.partition_point(|s| s.pos <= after);
                    for slot in queue.range(first..).take_while(|s| s.pos <= upto) {
                        if let Some(meta) = pending.sends.get(&slot.pos) {
                            taken.push((*slot, meta.send.clone(), user, device.clone()));
                        }
                    }
                }
            }
        }
        taken.sort_by(|a, b| (a.0.pos, a.2, &a.3).cmp(&(b.0.pos, b.2, &b.3)));
        let mut covered = upto;
        if taken.len() > limit {
            let cut = taken[limit].0.pos;
            let keep = taken.partition_point(|t| t.0.pos < cut);
            let keep = if keep == 0 {
                taken.partition_point(|t| t.0.pos <= cut)
            } else {
                keep
            };
            taken.truncate(keep);
            covered = taken.last().map_or(upto, |t| t.0.pos);
        }
        let slots: Vec<(Slot, u32)> = taken.iter().map(|t| (t.0, t.1.header_len)).collect();
        let contents = self.shared.contents(&slots).await?;
        let out = taken
            .into_iter()
            .zip(contents)
            .map(|((slot, send, user, device), content)| WaitingMessage {
                pos: slot.pos,
                user: user.to_owned(),
                device: device.into(),
                sender: send.sender.to_string(),
                event_type: send.event_type.to_string(),
                content,
            })
            .collect();
        Ok((out, covered))
    }

    /// Acknowledges every device of `user` up to `upto`, as each device's
    /// sync would (deleting the sends nobody waits for any more); whether
    /// any of its messages still wait. Reads no storage when nothing waits
    /// there.
    pub async fn acknowledge_user(&self, user: &str, upto: i64) -> Result<bool> {
        let devices = self.shared.pending.lock().devices_of(user);
        for device in devices {
            let finished = self.shared.pending.lock().acknowledge(user, &device, upto);
            if let Some(finished) = finished {
                self.shared.bodies.lock().forget(&finished);
                self.shared
                    .storage
                    .acknowledge_to_device(user, &device, upto, &finished)
                    .await?;
            }
        }
        Ok(self.shared.pending.lock().by_user.contains_key(user))
    }
}

/// What waits for each device, from the stored sends and acknowledgements;
/// deletes the sends nobody waits for (every recipient acknowledged them,
/// or is a device that no longer exists) and the acknowledgements that rule
/// nothing out any more.
async fn rebuild(storage: &Storage) -> anyhow::Result<Pending> {
    let acks: HashMap<(String, String), i64> = storage
        .to_device_acks()
        .await?
        .into_iter()
        .map(|a| ((a.user_id, a.device_id), a.position))
        .collect();
    let mut pending = Pending::default();
    let mut finished = Vec::new();
    let mut after = 0;
    loop {
        let rows = storage.to_device_sends_after(after).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.stream_ordering;
        for row in rows {
            let entries = match send_body::header_entries(&row.header) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(pos = row.stream_ordering, error = %e, "a stored to-device send is unreadable; left as it is");
                    continue;
                }
            };
            let waiting: Vec<Entry<'_>> = entries
                .into_iter()
                .filter(|e| {
                    acks.get(&(e.user.to_owned(), e.device.to_owned()))
                        .is_none_or(|acked| *acked < row.stream_ordering)
                })
                .collect();
            if waiting.is_empty() {
                finished.push(row.stream_ordering);
            }
            let Ok(header_len) = u32::try_from(row.header.len()) else {
                continue;
            };
            pending.add(
                row.stream_ordering,
                Sent {
                    sender: Arc::from(row.sender.as_str()),
                    event_type: Arc::from(row.event_type.as_str()),
                    header_len,
                },
                &waiting,
            );
        }
    }
    // Devices deleted while a send to them was being stored.
    let users: Vec<&str> = pending.by_user.keys().map(|u| &**u).collect();
    let live: HashSet<(String, String)> = storage
        .devices_of_users(&users)
        .await?
        .into_iter()
        .map(|d| (d.user_id, d.device_id))
        .collect();
    let gone: Vec<(String, String)> = pending
        .by_user
        .iter()
        .flat_map(|(u, ds)| ds.keys().map(move |d| (u.to_string(), d.to_string())))
        .filter(|k| !live.contains(k))
        .collect();
    for (u, d) in &gone {
        finished.extend(pending.drop_device(u, d));
    }
    storage.delete_to_device_sends(&finished).await?;
    storage
        .prune_to_device_acks(pending.sends.keys().min().copied())
        .await?;
    Ok(pending)
}

/// 413 `M_TOO_LARGE` when a content is over [`MAX_CONTENT_BYTES`] as
/// canonical JSON. The text as sent is measured first: canonical JSON is
/// compact, so a text within the limit needs no re-encoding.
fn check_content_size(user: &str, device: &str, content: &str) -> Result<()> {
    if content.len() <= MAX_CONTENT_BYTES {
        return Ok(());
    }
    let value: serde_json::Value =
        serde_json::from_str(content).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    let canonical = serde_json::to_string(&value).map_err(MatrixError::internal)?;
    if canonical.len() > MAX_CONTENT_BYTES {
        return Err(MatrixError::too_large(format!(
            "The to-device message for {user} {device} is too large: {} bytes, the limit is \
             {MAX_CONTENT_BYTES}",
            canonical.len()
        )));
    }
    Ok(())
}

impl crate::services::workers::CacheSizes for ToDevice {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        let (sends, devices) = {
            let p = self.shared.pending.lock();
            (p.sends.len(), p.devices())
        };
        let (bodies, body_bytes) = {
            let b = self.shared.bodies.lock();
            (b.lru.len(), b.bytes)
        };
        vec![
            ("pending_sends", sends),
            ("devices_with_messages", devices),
            ("send_bodies", bodies),
            ("send_bodies.bytes", body_bytes),
            ("device_lists", self.shared.devices.lists.lock().len()),
        ]
    }

    fn cache_lookups(&self) -> Vec<(&'static str, &crate::metrics::CacheLookups)> {
        vec![
            ("send_bodies", &self.shared.body_lookups),
            ("device_lists", &self.shared.devices.lookups),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::accounts::AccountType;

    fn requester(user: &str, device: &str) -> Requester {
        Requester {
            user_id: user.to_owned(),
            user: user.try_into().unwrap(),
            device_id: device.to_owned(),
            account_type: AccountType::User,
            is_deactivated: false,
            is_locked: false,
            valid_until_ms: None,
            fresh: false,
            app_service: None,
        }
    }

    fn send_of(sender: &str) -> Sent {
        Sent {
            sender: Arc::from(sender),
            event_type: Arc::from("t"),
            header_len: 0,
        }
    }

    fn entry<'a>(user: &'a str, device: &'a str) -> Entry<'a> {
        Entry {
            user,
            device,
            offset: 0,
            len: 2,
        }
    }

    /// The hot path: a sync of a device nothing waits for reads no storage
    /// (with the table gone, any read or acknowledgement fails).
    #[tokio::test]
    async fn a_sync_reads_storage_only_when_something_waits_for_its_device() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 1).await.unwrap();
        let stream = Arc::new(Stream::new(10));
        let config = Config {
            server_name: "example.org".into(),
            ..Config::default()
        };
        let lists = DeviceLists::new(storage.clone(), stream.clone(), 10);
        let to_device = ToDevice::load(storage.clone(), stream.clone(), &config, &lists)
            .await
            .unwrap();
        let who = requester("@a:example.org", "DEV");
        for table in ["to_device_sends", "to_device_chunks"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
                .execute(storage.pool())
                .await
                .unwrap();
        }
        assert!(to_device.for_sync(&who, Some(10), 10).await.is_ok());
        assert!(to_device.for_sync(&who, None, 10).await.is_ok());
        to_device.shared.pending.lock().add(
            11,
            send_of("@b:example.org"),
            &[entry("@a:example.org", "OTHER")],
        );
        assert!(
            to_device.for_sync(&who, Some(10), 11).await.is_ok(),
            "another device's message is not read"
        );
        to_device.shared.pending.lock().add(
            12,
            send_of("@b:example.org"),
            &[entry("@a:example.org", "DEV")],
        );
        assert!(
            to_device.for_sync(&who, Some(11), 12).await.is_err(),
            "its own message is read"
        );
    }

    /// Sends that commit out of order still reach a device in position
    /// order; acknowledging releases each send once its last recipient is
    /// done.
    #[test]
    fn pending_keeps_position_order_and_counts_recipients() {
        let mut p = Pending::default();
        p.add(
            5,
            send_of("@s:x"),
            &[entry("@a:x", "A"), entry("@b:x", "B")],
        );
        p.add(3, send_of("@s:x"), &[entry("@a:x", "A")]);
        p.add(7, send_of("@s:x"), &[entry("@a:x", "A")]);
        let order: Vec<i64> = p
            .take("@a:x", "A", 0, 10, 10)
            .iter()
            .map(|t| t.0.pos)
            .collect();
        assert_eq!(order, [3, 5, 7]);
        assert_eq!(p.take("@a:x", "A", 3, 6, 10).len(), 1, "(since, to] only");
        assert_eq!(p.take("@a:x", "A", 0, 10, 2).len(), 2, "at most the limit");
        assert_eq!(
            p.acknowledge("@a:x", "A", 5),
            Some(vec![3]),
            "5 waits for B"
        );
        assert_eq!(p.acknowledge("@a:x", "A", 5), None, "nothing left there");
        assert_eq!(p.drop_device("@b:x", "B"), vec![5]);
        assert_eq!(p.sends.len(), 1);
        assert_eq!(p.acknowledge("@a:x", "A", 100), Some(vec![7]));
        assert!(p.sends.is_empty() && p.by_user.is_empty());
    }
}
