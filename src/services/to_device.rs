//! Send-to-device messaging: `PUT /sendToDevice` stores a message in each
//! recipient device's inbox (`device_inbox`) at one stream position, and
//! `/sync` delivers a device's messages in order, up to [`SYNC_LIMIT`] at a
//! time, until the device acknowledges them by syncing with a `since` at
//! or past them; then they are deleted.
//!
//! A message touches [`Topic::Device`], which wakes only that device's
//! parked syncs and tells a sync whether its inbox can hold anything new,
//! so a sync with nothing sent to it since `since` reads no inbox.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::api::client::to_device::send_event_to_device::v3::Messages;
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{OwnedDeviceId, OwnedServerName};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::Config;
use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::services::stream::{Stream, Topic};
use crate::storage::Storage;
use crate::storage::to_device::{InboxDelivery, InboxSend};

/// Messages per `/sync` response, as Synapse; the rest come with the next.
pub const SYNC_LIMIT: usize = 100;

/// The largest content of one message, in bytes of canonical JSON: 413
/// `M_TOO_LARGE` above it, as Synapse (`MAX_TO_DEVICE_CONTENT_SIZE`, the
/// federation EDU size, so that a message sent today can cross servers).
pub const MAX_CONTENT_BYTES: usize = 65_536;

/// How many devices' unacknowledged deliveries [`ToDevice`] remembers. A
/// device forgotten here has its acknowledged messages deleted at its next
/// inbox read instead of at once.
const UNACKED_DEVICES: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();

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

pub struct ToDevice {
    storage: Storage,
    stream: Arc<Stream>,
    server_name: OwnedServerName,
    /// `limits.max_to_device_messages` and `limits.max_to_device_bytes`.
    max_messages: usize,
    max_bytes: usize,
    /// Per (user, device): the highest position delivered to it and not
    /// yet deleted, so the sync that acknowledges it deletes at once (and a
    /// sync with an older `since` cannot get it again).
    unacked: Mutex<lru::LruCache<(String, String), i64>>,
}

impl ToDevice {
    /// The service for `config`'s server name and limits.
    pub fn new(
        storage: Storage,
        stream: Arc<Stream>,
        config: &Config,
    ) -> std::result::Result<Self, ruma::IdParseError> {
        Ok(Self {
            storage,
            stream,
            server_name: OwnedServerName::try_from(config.server_name.as_str())?,
            max_messages: config.limits.max_to_device_messages,
            max_bytes: config.limits.max_to_device_bytes,
            unacked: Mutex::new(lru::LruCache::new(UNACKED_DEVICES)),
        })
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
        messages: &Messages,
    ) -> Result<()> {
        // Every content and recipient is checked before anything is written.
        if let Some(remote) = messages
            .keys()
            .find(|u| u.server_name() != self.server_name)
        {
            return Err(MatrixError::invalid_param(format!(
                "Cannot send to-device messages to {remote}: this server does not federate yet"
            )));
        }
        for (user, by_device) in messages {
            for (device, content) in by_device {
                if !content.json().get().trim_start().starts_with('{') {
                    return Err(MatrixError::bad_json(
                        "Each to-device message content must be a JSON object",
                    ));
                }
                check_content_size(user.as_str(), device, content.json().get())?;
            }
        }
        // Every recipient's devices in one read, not one per user.
        let users: Vec<&str> = messages.keys().map(|u| u.as_str()).collect();
        let mut devices_of: HashMap<String, Vec<OwnedDeviceId>> = HashMap::new();
        for d in self.storage.devices_of_users(&users).await? {
            devices_of
                .entry(d.user_id)
                .or_default()
                .push(OwnedDeviceId::from(d.device_id));
        }
        let mut deliveries = Vec::new();
        let mut topics = Vec::new();
        for (user, by_device) in messages {
            let wildcard = by_device.get(&DeviceIdOrAllDevices::AllDevices);
            for device in devices_of.get(user.as_str()).into_iter().flatten() {
                // A device named gets its own content; "*" is for the rest.
                let named = by_device.get(&DeviceIdOrAllDevices::DeviceId(device.clone()));
                if let Some(content) = named.or(wildcard) {
                    deliveries.push(InboxDelivery {
                        user_id: user.as_str(),
                        device_id: device.as_str(),
                        content: content.json().get(),
                    });
                    topics.push(Topic::Device(user.clone(), device.clone()));
                }
            }
        }
        if deliveries.is_empty() {
            return Ok(());
        }
        self.check_fan_out(&deliveries)?;
        let r = self.stream.reserve();
        for topic in topics {
            self.stream.touch(topic, r.pos());
        }
        let send = InboxSend {
            sender: &sender.user_id,
            sender_device: &sender.device_id,
            event_type,
            txn_id,
            stream_ordering: r.pos(),
        };
        let stored = self.storage.store_to_device(&send, &deliveries).await;
        self.stream.complete(r);
        stored?;
        Ok(())
    }

    /// 413 `M_TOO_LARGE` when `deliveries` are more messages or bytes than
    /// the configured limits.
    fn check_fan_out(&self, deliveries: &[InboxDelivery<'_>]) -> Result<()> {
        if deliveries.len() > self.max_messages {
            return Err(MatrixError::too_large(format!(
                "This request would store {} to-device messages (one per recipient device, \
                 \"*\" counting every device of its user); the limit is {}",
                deliveries.len(),
                self.max_messages
            )));
        }
        let bytes: usize = deliveries.iter().map(|d| d.content.len()).sum();
        if bytes > self.max_bytes {
            return Err(MatrixError::too_large(format!(
                "This request would store {bytes} bytes of to-device messages (one content per \
                 recipient device, \"*\" expanded); the limit is {}",
                self.max_bytes
            )));
        }
        Ok(())
    }

    /// The requester's messages for a sync of `(since, to]`, after deleting
    /// those up to `since` (which the device has seen: `since` is a
    /// `next_batch` it was given). Reads nothing when no message was sent
    /// to the device since `since` and none delivered waits for deletion.
    pub async fn for_sync(&self, who: &Requester, since: Option<i64>, to: i64) -> Result<ForSync> {
        let key = (who.user_id.clone(), who.device_id.clone());
        let fresh = since.is_none_or(|since| {
            self.stream
                .changed_since(std::slice::from_ref(&Self::topic(who)), since)
        });
        if let Some(since) = since {
            let unacked = self.unacked.lock().peek(&key).copied();
            if fresh || unacked.is_some() {
                self.storage
                    .delete_inbox_through(&who.user_id, &who.device_id, since)
                    .await?;
                let mut map = self.unacked.lock();
                if map.peek(&key).is_some_and(|p| *p <= since) {
                    map.pop(&key);
                }
            }
        }
        if !fresh {
            return Ok(ForSync {
                events: Vec::new(),
                to,
            });
        }
        let limit = i64::try_from(SYNC_LIMIT).unwrap_or(i64::MAX) + 1;
        let mut rows = self
            .storage
            .inbox(&who.user_id, &who.device_id, since.unwrap_or(0), to, limit)
            .await?;
        let more = rows.len() > SYNC_LIMIT;
        rows.truncate(SYNC_LIMIT);
        let Some(last) = rows.last().map(|r| r.stream_ordering) else {
            return Ok(ForSync {
                events: Vec::new(),
                to,
            });
        };
        {
            let mut map = self.unacked.lock();
            let entry = map.get_or_insert_mut(key, || last);
            *entry = (*entry).max(last);
        }
        let events = rows
            .into_iter()
            .map(|r| {
                Ok(ToDeviceEvent {
                    event_type: r.event_type,
                    sender: r.sender,
                    content: RawValue::from_string(r.content).map_err(MatrixError::internal)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ForSync {
            events,
            to: if more { last } else { to },
        })
    }
}

/// 413 `M_TOO_LARGE` when a content is over [`MAX_CONTENT_BYTES`] as
/// canonical JSON. The text as sent is measured first: canonical JSON is
/// compact, so a text within the limit needs no re-encoding.
fn check_content_size(user: &str, device: &DeviceIdOrAllDevices, content: &str) -> Result<()> {
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
        vec![("unacked_devices", self.unacked.lock().len())]
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

    /// A position that touched `topic`, completed.
    fn touch(stream: &Arc<Stream>, topic: Topic) -> i64 {
        let r = stream.reserve();
        let pos = r.pos();
        stream.touch(topic, pos);
        stream.complete(r);
        pos
    }

    /// The hot path: a sync reads the inbox only when its device's topic
    /// moved past `since` (with the table gone, any read fails).
    #[tokio::test]
    async fn a_sync_reads_the_inbox_only_when_its_device_got_something() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 1).await.unwrap();
        let stream = Arc::new(Stream::new(10));
        let config = Config {
            server_name: "example.org".into(),
            ..Config::default()
        };
        let to_device = ToDevice::new(storage.clone(), stream.clone(), &config).unwrap();
        let who = requester("@a:example.org", "DEV");
        sqlx::query("DROP TABLE device_inbox")
            .execute(storage.pool())
            .await
            .unwrap();

        assert!(to_device.for_sync(&who, Some(10), 10).await.is_ok());
        let other = requester("@a:example.org", "OTHER");
        let pos = touch(&stream, ToDevice::topic(&other));
        assert!(
            to_device.for_sync(&who, Some(10), pos).await.is_ok(),
            "another device's message is not read"
        );
        let pos = touch(&stream, ToDevice::topic(&who));
        assert!(
            to_device.for_sync(&who, Some(pos - 1), pos).await.is_err(),
            "its own message is read"
        );
        assert!(to_device.for_sync(&who, Some(pos), pos).await.is_ok());
        assert!(
            to_device.for_sync(&who, Some(5), pos).await.is_err(),
            "a since from before start-up reads"
        );
    }
}
