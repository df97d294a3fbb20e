//! Presence: online/unavailable/offline and a status message per user, in the
//! global stream so syncing users who share a room see changes.

use std::sync::Arc;

use ruma::UserId;
use serde::Serialize;
use serde_json::Value;

use crate::clock::SharedClock;
use crate::error::{MatrixError, Result};
use crate::services::stream::{Stream, Topic};
use crate::storage::{PresenceRow, Storage};

/// A user active within this many ms is `currently_active`.
const ACTIVE_WINDOW_MS: i64 = 5 * 60 * 1000;

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
            user_id: user.to_owned(),
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
    pub async fn get(&self, user: &UserId) -> Result<PresenceStatus> {
        Ok(match self.storage.presence(user.as_str()).await? {
            Some(p) => self.status(&p),
            None => PresenceStatus {
                state: "offline".to_owned(),
                last_active_ago: None,
                currently_active: None,
                status_msg: None,
            },
        })
    }

    /// A stored presence as clients see it now.
    pub fn status(&self, p: &PresenceRow) -> PresenceStatus {
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
