//! Send-to-device: `device_inbox` (each device's messages, by stream
//! position), the transaction ids of sends (`event_transactions`, scope
//! `to_device:{type}`) and the stream's high-water mark for them.

use super::batch::{Param, WriteBatch};
use super::{Dialect, Storage};

/// One message waiting in a device's inbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRow {
    pub stream_ordering: i64,
    pub sender: String,
    pub event_type: String,
    /// The content object as JSON text.
    pub content: String,
}

/// One recipient device of a send and the content it gets.
pub struct InboxDelivery<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub content: &'a str,
}

/// A send: who sent it with which transaction id, at which position.
pub struct InboxSend<'a> {
    pub sender: &'a str,
    pub sender_device: &'a str,
    pub event_type: &'a str,
    pub txn_id: &'a str,
    pub stream_ordering: i64,
}

/// Recipients per `INSERT` of a send (3 parameters each).
const INBOX_ROWS_PER_STATEMENT: usize = 256;

/// A recipient device of a send.
#[derive(Debug, sqlx::FromRow)]
pub struct RecipientDevice {
    pub user_id: String,
    pub device_id: String,
}

/// The transaction-id scope of a send of `event_type` (Synapse keys a
/// retry on the request's path, which names the type).
pub fn txn_scope(event_type: &str) -> String {
    format!("to_device:{event_type}")
}

impl Storage {
    /// Stores a send in one transaction: its transaction id, then a row per
    /// recipient device that still exists. `false` when the sender's device
    /// already sent this transaction id (nothing is written).
    pub async fn store_to_device(
        &self,
        send: &InboxSend<'_>,
        deliveries: &[InboxDelivery<'_>],
    ) -> sqlx::Result<bool> {
        let scope = txn_scope(send.event_type);
        let mut w = WriteBatch::default();
        w.push(
            "INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id)
             VALUES ($1, $2, $3, $4, '')",
            [
                Param::from(send.sender),
                send.sender_device.into(),
                scope.as_str().into(),
                send.txn_id.into(),
            ],
        );
        // Each placeholder once, in order: the joined SQLite text then binds
        // anonymous parameters (named ones cost a lookup each that grows
        // with their number: 8% of a 1,000-device send's time).
        w.push(
            "UPDATE stream_high_water SET position = $1 WHERE name = 'to_device' AND position < $2",
            [
                Param::from(send.stream_ordering),
                send.stream_ordering.into(),
            ],
        );
        // A multi-row statement per chunk of recipients (a fan-out to
        // 1,000 devices was 1,000 statements), joined with `devices`: a
        // device deleted since the recipients were read gets no row.
        for chunk in deliveries.chunks(INBOX_ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 4, 3 * i + 5, 3 * i + 6))
                .collect::<Vec<_>>()
                .join(", ");
            let mut params = vec![
                Param::from(send.stream_ordering),
                send.sender.into(),
                send.event_type.into(),
            ];
            for d in chunk {
                params.extend([Param::from(d.user_id), d.device_id.into(), d.content.into()]);
            }
            w.push(
                format!(
                    "INSERT INTO device_inbox (user_id, device_id, stream_ordering, sender, event_type, content)
                     SELECT d.user_id, d.device_id, $1, $2, $3, v.column3
                     FROM (VALUES {values}) AS v
                     JOIN devices d ON d.user_id = v.column1 AND d.device_id = v.column2"
                ),
                params,
            );
        }
        match self.run_batch(w).await {
            Ok(()) => Ok(true),
            Err(e) if Dialect::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The devices of `users` (an `IN` list per chunk of users, not a
    /// statement per user).
    pub async fn devices_of_users(&self, users: &[&str]) -> sqlx::Result<Vec<RecipientDevice>> {
        self.rows_of_users(
            "SELECT user_id, device_id FROM devices WHERE user_id IN",
            users,
        )
        .await
    }

    /// A device's messages in `(after, upto]`, oldest first, at most `limit`.
    pub async fn inbox(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<InboxRow>> {
        sqlx::query_as(
            "SELECT stream_ordering, sender, event_type, content FROM device_inbox
             WHERE user_id = $1 AND device_id = $2 AND stream_ordering > $3 AND stream_ordering <= $4
             ORDER BY stream_ordering LIMIT $5",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(after)
        .bind(upto)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// Deletes a device's messages up to `upto` (acknowledged).
    pub async fn delete_inbox_through(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "DELETE FROM device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_ordering <= $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The highest position a to-device send took (its rows may be gone).
    pub async fn to_device_high_water(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(MAX(position), 0) FROM stream_high_water WHERE name = 'to_device'",
        )
        .fetch_one(self.pool())
        .await
    }
}

/// What deleting a device removes besides the device and its tokens: its
/// inbox and the transaction ids of its sends, so a new device with the
/// same id starts afresh. `$1` is the user, `$2` the device.
pub(crate) const DEVICE_CLEANUP: [&str; 2] = [
    "DELETE FROM device_inbox WHERE user_id = $1 AND device_id = $2",
    "DELETE FROM event_transactions WHERE user_id = $1 AND device_id = $2
     AND substr(scope, 1, 10) = 'to_device:'",
];

/// [`DEVICE_CLEANUP`] for every device of user `$1` but `$2`.
pub(crate) const OTHER_DEVICES_CLEANUP: [&str; 2] = [
    "DELETE FROM device_inbox WHERE user_id = $1 AND device_id <> $2",
    "DELETE FROM event_transactions WHERE user_id = $1 AND device_id <> $2
     AND substr(scope, 1, 10) = 'to_device:'",
];

/// [`DEVICE_CLEANUP`] for every device of user `$1`.
pub(crate) const USER_CLEANUP: [&str; 2] = [
    "DELETE FROM device_inbox WHERE user_id = $1",
    "DELETE FROM event_transactions WHERE user_id = $1 AND substr(scope, 1, 10) = 'to_device:'",
];
