//! Presence: online/unavailable/offline and a status message per user, in the
//! global stream so syncing users who share a room see changes.

use std::sync::Arc;

use ruma::UserId;
use serde_json::{Value, json};

use crate::clock::SharedClock;
use crate::error::{MatrixError, Result};
use crate::services::stream::{Stream, Topic};
use crate::storage::{PresenceRow, Storage};

/// A user active within this many ms is `currently_active`.
const ACTIVE_WINDOW_MS: i64 = 5 * 60 * 1000;

pub struct Presence {
    storage: Storage,
    stream: Arc<Stream>,
    clock: SharedClock,
}

impl Presence {
    pub fn new(storage: Storage, stream: Arc<Stream>, clock: SharedClock) -> Self {
        Self {
            storage,
            stream,
            clock,
        }
    }

    pub async fn set(&self, user: &UserId, state: &str, status_msg: Option<&str>) -> Result<()> {
        if !matches!(state, "online" | "offline" | "unavailable") {
            return Err(MatrixError::invalid_param(format!(
                "Unknown presence state {state}"
            )));
        }
        let r = self.stream.reserve();
        let row = PresenceRow {
            user_id: user.to_string(),
            state: state.to_owned(),
            status_msg: status_msg.map(str::to_owned),
            last_active_ts: self.clock.now_ms(),
            stream_ordering: r.pos(),
        };
        self.stream.touch(Topic::Presence, r.pos());
        let result = self.storage.set_presence(&row).await;
        self.stream.complete(r);
        Ok(result?)
    }

    /// The body of `GET /presence/{userId}/status` (offline if never set).
    pub async fn get(&self, user: &UserId) -> Result<Value> {
        Ok(match self.storage.presence(user.as_str()).await? {
            Some(p) => self.content(&p),
            None => json!({ "presence": "offline" }),
        })
    }

    /// Presence content as clients see it.
    pub fn content(&self, p: &PresenceRow) -> Value {
        let ago = (self.clock.now_ms() - p.last_active_ts).max(0);
        let mut c = json!({
            "presence": p.state,
            "last_active_ago": ago,
            "currently_active": p.state == "online" && ago < ACTIVE_WINDOW_MS,
        });
        if let Some(m) = &p.status_msg {
            c["status_msg"] = json!(m);
        }
        c
    }
}
