//! Presence: online/unavailable/offline and a status message per user, in the
//! global stream so syncing users who share a room see changes.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::events::room::member::MembershipState;
use ruma::presence::PresenceState;
use ruma::{OwnedUserId, UserId};
use serde::Serialize;
use serde_json::Value;

use crate::clock::SharedClock;
use crate::error::{MatrixError, Result};
use crate::services::expiring::bounded_lru;
use crate::services::stream::{Stream, Topic};
use crate::storage::{PresenceRow, Storage};

/// A user active within this many ms is `currently_active`.
const ACTIVE_WINDOW_MS: i64 = 5 * 60 * 1000;

/// A user whose presence is not `offline` and who has not synced (nor read
/// the event stream, nor set their presence) for this long goes offline,
/// as with Synapse's `SYNC_ONLINE_TIMEOUT`: a client that was closed
/// without setting itself offline does not leave its user online.
pub const SYNC_TIMEOUT_MS: i64 = 30_000;

/// How many users' last known presence state is remembered, so that a sync
/// that would set the state it already has reads nothing.
const KNOWN_STATES: usize = 100_000;

/// A user's presence as clients see it (serialized: the content of an
/// `m.presence` event).
#[derive(Debug, Serialize)]
pub struct PresenceStatus {
    /// `online`, `unavailable` or `offline`.
    #[serde(rename = "presence")]
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_ago: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currently_active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
}

impl PresenceStatus {
    /// A user who never had a presence: offline, nothing else known.
    fn never_set() -> Self {
        Self {
            state: "offline".to_owned(),
            last_active_ago: None,
            currently_active: None,
            status_msg: None,
        }
    }
}

pub struct Presence {
    storage: Storage,
    stream: Arc<Stream>,
    clock: SharedClock,
    /// The stored state of recently seen users.
    known: Mutex<lru::LruCache<OwnedUserId, String>>,
    /// A hit is a state that stands read from `known` (no database read).
    known_lookups: crate::metrics::CacheLookups,
    /// Users not offline, with when they last synced (or read events, or
    /// set their presence): [`Presence::expire_idle`] sets them offline
    /// [`SYNC_TIMEOUT_MS`] after that. One entry per user present, dropped
    /// when they go offline.
    syncing: Mutex<HashMap<OwnedUserId, i64>>,
    /// What hears of presence changes (`ephemeral::EphemeralListener`).
    listeners: super::ephemeral::Listeners,
}

impl Presence {
    pub fn new(storage: Storage, stream: Arc<Stream>, clock: SharedClock) -> Self {
        Self {
            storage,
            stream,
            clock,
            known: Mutex::new(bounded_lru(KNOWN_STATES)),
            known_lookups: crate::metrics::CacheLookups::default(),
            syncing: Mutex::new(HashMap::new()),
            listeners: super::ephemeral::Listeners::default(),
        }
    }

    /// Registers a listener of presence changes.
    pub fn listen(&self, listener: Arc<dyn super::ephemeral::EphemeralListener>) {
        self.listeners.listen(listener);
    }

    /// Starts the timeouts of the users the database holds as present (a
    /// restart does not leave them online for good): they go offline
    /// [`SYNC_TIMEOUT_MS`] from now unless they sync.
    pub async fn load_present(&self) -> Result<()> {
        let now = self.clock.now_ms();
        let users = self.storage.users_present().await?;
        let mut syncing = self.syncing.lock();
        for user in users {
            syncing.entry(user).or_insert(now);
        }
        Ok(())
    }

    /// Records that `user` is active now (their timeout starts again).
    fn seen(&self, user: &UserId) {
        let now = self.clock.now_ms();
        let mut syncing = self.syncing.lock();
        match syncing.get_mut(user) {
            Some(at) => *at = now,
            None => {
                syncing.insert(user.to_owned(), now);
            }
        }
    }

    /// Sets offline every user whose timeout passed (keeping their status
    /// message and last active time). Run every second by a worker.
    pub async fn expire_idle(&self) -> Result<()> {
        let now = self.clock.now_ms();
        let expired: Vec<OwnedUserId> = {
            let mut syncing = self.syncing.lock();
            let expired: Vec<OwnedUserId> = syncing
                .iter()
                .filter(|(_, at)| now - **at > SYNC_TIMEOUT_MS)
                .map(|(user, _)| user.clone())
                .collect();
            for user in &expired {
                syncing.remove(user);
            }
            expired
        };
        for user in expired {
            let Some(current) = self.storage.presence(user.as_str()).await? else {
                continue;
            };
            if current.state != "offline" {
                self.write(
                    &user,
                    "offline",
                    current.status_msg.as_deref(),
                    current.last_active_ts,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// A `/sync` with `set_presence` (online when the client names none):
    /// sets the user's state when it differs from the stored one, keeping
    /// their status message. `offline` changes nothing (the spec: the
    /// client is then not marked online by syncing).
    pub async fn note_syncing(&self, user: &UserId, state: &PresenceState) -> Result<()> {
        let state = match state {
            PresenceState::Online => {
                self.seen(user);
                "online"
            }
            PresenceState::Unavailable => {
                self.seen(user);
                "unavailable"
            }
            PresenceState::Offline => return Ok(()),
            other => {
                return Err(MatrixError::invalid_param(format!(
                    "Unknown set_presence {:?}: online, unavailable or offline",
                    other.as_str()
                )));
            }
        };
        self.mark(user, state, |current| current == state).await
    }

    /// A user reading the deprecated event stream (`GET /events`) is online,
    /// as Synapse does: an offline (or never set) presence becomes online,
    /// keeping its status message; `unavailable` stays.
    pub async fn note_reading_events(&self, user: &UserId) -> Result<()> {
        self.seen(user);
        self.mark(user, "online", |current| current != "offline")
            .await
    }

    /// Sets `state` (keeping the status message) unless `keep` says the
    /// stored state stands; the state last seen is remembered, so a user
    /// whose state stands costs no read.
    async fn mark(&self, user: &UserId, state: &str, keep: impl Fn(&str) -> bool) -> Result<()> {
        let stands = self.known.lock().peek(user).is_some_and(|k| keep(k));
        if self.known_lookups.record(stands) {
            return Ok(());
        }
        let current = self.storage.presence(user.as_str()).await?;
        if let Some(c) = &current
            && keep(&c.state)
        {
            self.known.lock().put(user.to_owned(), c.state.clone());
            return Ok(());
        }
        let status_msg = current.and_then(|c| c.status_msg);
        self.set(user, state, status_msg.as_deref()).await
    }

    /// Sets `user`'s state and status message, active now. A state other
    /// than `offline` starts the user's timeout (see [`SYNC_TIMEOUT_MS`]).
    pub async fn set(&self, user: &UserId, state: &str, status_msg: Option<&str>) -> Result<()> {
        if !matches!(state, "online" | "offline" | "unavailable") {
            return Err(MatrixError::invalid_param(format!(
                "Unknown presence state {state}"
            )));
        }
        if state == "offline" {
            self.syncing.lock().remove(user);
        } else {
            self.seen(user);
        }
        self.write(user, state, status_msg, self.clock.now_ms())
            .await
    }

    /// Stores a presence at a new stream position and wakes those who see it.
    async fn write(
        &self,
        user: &UserId,
        state: &str,
        status_msg: Option<&str>,
        last_active_ts: i64,
    ) -> Result<()> {
        let r = self.stream.reserve();
        let row = PresenceRow {
            user_id: user.to_owned(),
            state: state.to_owned(),
            status_msg: status_msg.map(str::to_owned),
            last_active_ts,
            stream_ordering: r.pos(),
        };
        // Who may see it: the user, and everyone sharing a joined room.
        let rooms = match self.storage.rooms_for_user(user.as_str()).await {
            Ok(rooms) => rooms,
            Err(e) => {
                self.stream.complete(r);
                return Err(e.into());
            }
        };
        self.stream.touch(Topic::User(user.to_owned()), r.pos());
        for m in rooms {
            if m.membership == MembershipState::Join {
                self.stream.touch(Topic::PresenceIn(m.room_id), r.pos());
            }
        }
        let result = self.storage.set_presence(&row).await;
        self.stream.complete(r);
        result?;
        self.known.lock().put(user.to_owned(), state.to_owned());
        self.listeners.tell(|| {
            let mut content = serde_json::json!({
                "presence": state,
                "last_active_ago": self.clock.now_ms().saturating_sub(last_active_ts).max(0),
                "currently_active": state == "online",
            });
            if let Some(msg) = status_msg {
                content["status_msg"] = msg.into();
            }
            super::ephemeral::EphemeralChange::Presence(
                user.to_owned(),
                serde_json::json!({"type": "m.presence", "sender": user, "content": content}),
            )
        });
        Ok(())
    }

    /// The body of `GET /presence/{userId}/status` (offline if never set).
    pub async fn get(&self, user: &UserId) -> Result<PresenceStatus> {
        Ok(match self.storage.presence(user.as_str()).await? {
            Some(p) => self.status(&p),
            None => PresenceStatus::never_set(),
        })
    }

    /// A stored presence as clients see it now.
    pub fn status(&self, p: &PresenceRow) -> PresenceStatus {
        if p.is_unset() {
            return PresenceStatus::never_set();
        }
        let ago = (self.clock.now_ms() - p.last_active_ts).max(0);
        PresenceStatus {
            state: p.state.clone(),
            last_active_ago: Some(ago.unsigned_abs()),
            currently_active: Some(p.state == "online" && ago < ACTIVE_WINDOW_MS),
            status_msg: p.status_msg.clone(),
        }
    }

    /// [`Presence::status`] as JSON (an `m.presence` event's content).
    pub fn content(&self, p: &PresenceRow) -> Value {
        serde_json::to_value(self.status(p)).unwrap_or_default()
    }
}

impl crate::services::workers::CacheSizes for Presence {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("known_states", self.known.lock().len()),
            ("present_users", self.syncing.lock().len()),
        ]
    }

    fn cache_lookups(&self) -> Vec<(&'static str, &crate::metrics::CacheLookups)> {
        vec![("known_states", &self.known_lookups)]
    }
}
