//! Ephemeral messages (MSC2228): the `event_expiry` table, written with the
//! event (`Storage::persist_events`), and the pruning of an expired one.

use ruma::{OwnedEventId, OwnedRoomId};

use super::Storage;

/// A message due to be pruned.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExpiryRow {
    #[sqlx(try_from = "String")]
    pub event_id: OwnedEventId,
    #[sqlx(try_from = "String")]
    pub room_id: OwnedRoomId,
    pub stream_ordering: i64,
}

impl Storage {
    /// Up to `limit` messages whose time came by `now`, earliest first.
    pub async fn due_expiries(&self, now: i64, limit: i64) -> sqlx::Result<Vec<ExpiryRow>> {
        sqlx::query_as(
            "SELECT event_id, room_id, stream_ordering FROM event_expiry
             WHERE expiry_ts <= $1 ORDER BY expiry_ts LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// The earliest time a message is to be pruned at, if any is.
    pub async fn next_expiry(&self) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar("SELECT MIN(expiry_ts) FROM event_expiry")
            .fetch_one(self.pool())
            .await
    }

    /// Stores the message as pruned (`json`, or as it is when `None`: an
    /// event gone or not prunable) and forgets its expiry, in one
    /// transaction.
    pub async fn expire_event(&self, event_id: &str, json: Option<&str>) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        if let Some(json) = json {
            sqlx::query("UPDATE events SET json = $1 WHERE event_id = $2")
                .bind(json)
                .bind(event_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM event_expiry WHERE event_id = $1")
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}
