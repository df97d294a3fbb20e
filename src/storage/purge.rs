//! Room-wide removal (`purgeRoom`, Synapse's room delete with `purge`) and
//! room blocking. Every table that holds a room id is listed here; the purge
//! test counts rows by room id across the schema to keep this list honest.

use sqlx::Row;

use super::{Storage, now_ms};

/// Tables with a `room_id` column, purged by room.
pub const ROOM_TABLES: &[&str] = &[
    "event_relations",
    "current_state",
    "forward_extremities",
    "room_aliases",
    "forgotten_rooms",
    "account_data",
    "receipts",
    "event_reports",
    "room_reports",
    "server_notice_rooms",
    "state_groups",
    "events",
    "rooms",
];

impl Storage {
    /// Removes everything about a room, in one transaction. Returns the
    /// number of events removed.
    pub async fn purge_room(&self, room_id: &str) -> sqlx::Result<u64> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM event_transactions WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)",
        )
        .bind(room_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM state_group_entries WHERE state_group IN (SELECT state_group FROM state_groups WHERE room_id = $1)",
        )
        .bind(room_id)
        .execute(&mut *tx)
        .await?;
        let mut events = 0;
        for table in ROOM_TABLES {
            let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE room_id = $1"
            )))
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
            if *table == "events" {
                events = r.rows_affected();
            }
        }
        tx.commit().await?;
        Ok(events)
    }

    pub async fn block_room(&self, room_id: &str, by: &str, block: bool) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM blocked_rooms WHERE room_id = $1")
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
        if block {
            sqlx::query(
                "INSERT INTO blocked_rooms (room_id, blocked_by, blocked_ts) VALUES ($1, $2, $3)",
            )
            .bind(room_id)
            .bind(by)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Who blocked the room, if it is blocked.
    pub async fn room_blocked_by(&self, room_id: &str) -> sqlx::Result<Option<String>> {
        let row = sqlx::query("SELECT blocked_by FROM blocked_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every room id this server knows.
    pub async fn all_rooms(&self) -> sqlx::Result<Vec<(String, String, String, bool)>> {
        let rows = sqlx::query(
            "SELECT room_id, room_version, creator, is_public FROM rooms ORDER BY room_id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get::<i64, _>(3) != 0))
            .collect())
    }
}
