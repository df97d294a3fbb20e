//! Receipts (persisted) and typing notifications (in memory, expiring). Both
//! take positions in the global stream so long-polling `/sync` wakes for them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::clock::SharedClock;
use crate::error::Result;
use crate::services::stream::{Stream, Topic};
use crate::storage::{ReceiptRow, Storage};

/// Longest typing timeout honoured.
const MAX_TYPING: Duration = Duration::from_secs(120);

#[derive(Default)]
struct RoomTyping {
    /// Until when (clock ms) each user types.
    users: HashMap<OwnedUserId, i64>,
    /// Stream position of the last change.
    pos: i64,
}

pub struct Ephemeral {
    storage: Storage,
    stream: Arc<Stream>,
    typing: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    clock: SharedClock,
    listeners: Listeners,
}

/// A receipt, typing or presence change as it happens, in the client
/// form an EDU has (`m.receipt`, `m.typing` with `room_id`; `m.presence`
/// with `sender`).
pub enum EphemeralChange {
    /// In a room: a receipt or who types now.
    Room(OwnedRoomId, serde_json::Value),
    /// A user's presence.
    Presence(OwnedUserId, serde_json::Value),
}

/// What hears of receipts, typing and presence as they change (the
/// application services' delivery), registered at start-up: called on the
/// changing request's task, so it must be cheap (memory only), as a
/// pipeline subscriber. The services here know nothing of the listeners.
pub trait EphemeralListener: Send + Sync {
    fn changed(&self, change: EphemeralChange);
}

/// The registered listeners.
#[derive(Default)]
pub struct Listeners(parking_lot::RwLock<Vec<Arc<dyn EphemeralListener>>>);

impl Listeners {
    pub fn listen(&self, listener: Arc<dyn EphemeralListener>) {
        self.0.write().push(listener);
    }

    /// Tells every listener; the change is built only when there is one.
    pub fn tell(&self, change: impl FnOnce() -> EphemeralChange) {
        let listeners = self.0.read();
        if listeners.is_empty() {
            return;
        }
        let change = change();
        if let [only] = listeners.as_slice() {
            only.changed(change);
        } else {
            for l in listeners.iter() {
                l.changed(match &change {
                    EphemeralChange::Room(r, v) => EphemeralChange::Room(r.clone(), v.clone()),
                    EphemeralChange::Presence(u, v) => {
                        EphemeralChange::Presence(u.clone(), v.clone())
                    }
                });
            }
        }
    }
}

impl Ephemeral {
    pub fn new(storage: Storage, stream: Arc<Stream>, clock: SharedClock) -> Self {
        Self {
            storage,
            stream,
            clock,
            typing: Mutex::new(HashMap::new()),
            listeners: Listeners::default(),
        }
    }

    /// Registers a listener of receipts and typing changes.
    pub fn listen(&self, listener: Arc<dyn EphemeralListener>) {
        self.listeners.listen(listener);
    }

    fn tell_typing(&self, room: &RoomId, users: Vec<OwnedUserId>) {
        self.listeners.tell(|| {
            EphemeralChange::Room(
                room.to_owned(),
                serde_json::json!({"type": "m.typing", "room_id": room, "content": {"user_ids": users}}),
            )
        });
    }

    /// Moves the user's receipt to `event_id` (at stream position
    /// `event_pos`). A receipt never moves back (as Synapse): one for an
    /// event before the event already acknowledged changes nothing.
    pub async fn set_receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        receipt_type: &str,
        (event_id, event_pos): (&EventId, i64),
        thread_id: Option<&str>,
    ) -> Result<()> {
        let row = ReceiptRow {
            room_id: room.to_owned(),
            user_id: user.to_owned(),
            receipt_type: receipt_type.to_owned(),
            thread_id: thread_id.unwrap_or_default().to_owned(),
            event_id: event_id.to_owned(),
            ts: self.clock.now_ms(),
        };
        let r = self.stream.reserve();
        let pos = r.pos();
        self.stream.touch(Topic::Room(room.to_owned()), pos);
        self.stream.touch(Topic::Receipts, pos);
        let result = self.storage.set_receipt(&row, pos, event_pos).await;
        self.stream.complete(r);
        result?;
        self.listeners.tell(|| {
            let mut receipt = serde_json::json!({"ts": row.ts});
            if let Some(t) = thread_id {
                receipt["thread_id"] = t.into();
            }
            EphemeralChange::Room(
                room.to_owned(),
                serde_json::json!({
                    "type": "m.receipt",
                    "room_id": room,
                    "content": {event_id.as_str(): {receipt_type: {user.as_str(): receipt}}},
                }),
            )
        });
        Ok(())
    }

    /// Marks the user typing (for `timeout`) or not.
    pub fn set_typing(&self, room: &RoomId, user: &UserId, typing: bool, timeout: Duration) {
        let r = self.stream.reserve();
        {
            let mut rooms = self.typing.lock();
            let entry = rooms.entry(room.to_owned()).or_default();
            if typing {
                let ms = i64::try_from(timeout.min(MAX_TYPING).as_millis()).unwrap_or(i64::MAX);
                entry
                    .users
                    .insert(user.to_owned(), self.clock.now_ms().saturating_add(ms));
            } else {
                entry.users.remove(user);
            }
            entry.pos = r.pos();
        }
        self.stream.touch(Topic::Room(room.to_owned()), r.pos());
        self.stream.complete(r);
        self.tell_typing(room, self.typing_since(room, None).unwrap_or_default());
    }

    /// Drops expired typing notifications; called every second.
    pub fn expire_typing(&self) {
        let now = self.clock.now_ms();
        let mut rooms = self.typing.lock();
        let expired: Vec<OwnedRoomId> = rooms
            .iter()
            .filter(|(_, t)| t.users.values().any(|until| *until <= now))
            .map(|(room, _)| room.clone())
            .collect();
        let mut changed = Vec::new();
        for room in expired {
            let r = self.stream.reserve();
            if let Some(t) = rooms.get_mut(&room) {
                t.users.retain(|_, until| *until > now);
                t.pos = r.pos();
                let mut users: Vec<OwnedUserId> = t.users.keys().cloned().collect();
                users.sort();
                changed.push((room.clone(), users));
            }
            self.stream.touch(Topic::Room(room), r.pos());
            self.stream.complete(r);
        }
        rooms.retain(|_, t| !t.users.is_empty() || t.pos > 0);
        drop(rooms);
        for (room, users) in changed {
            self.tell_typing(&room, users);
        }
    }

    /// Who is typing in the room, if that changed after `since`.
    pub fn typing_since(&self, room: &RoomId, since: Option<i64>) -> Option<Vec<OwnedUserId>> {
        let rooms = self.typing.lock();
        let t = rooms.get(room)?;
        if since.is_some_and(|s| t.pos <= s) || (since.is_none() && t.users.is_empty()) {
            return None;
        }
        let mut users: Vec<OwnedUserId> = t.users.keys().cloned().collect();
        users.sort();
        Some(users)
    }
}

impl crate::services::workers::CacheSizes for Ephemeral {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("typing_rooms", self.typing.lock().len())]
    }
}
