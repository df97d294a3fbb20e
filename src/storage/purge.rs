//! Room-wide removal (`purgeRoom`, Synapse's room delete with `purge`) and
//! room blocking. Every table that holds a room id is listed here; the purge
//! test counts rows by room id across the schema to keep this list honest.

use ruma::{OwnedEventId, OwnedUserId};

use super::Storage;
use super::events::RoomRow;

/// An event a history purge may remove.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PurgeableEventRow {
    #[sqlx(try_from = "String")]
    pub event_id: OwnedEventId,
    #[sqlx(try_from = "String")]
    pub sender: OwnedUserId,
    pub stream_ordering: i64,
}

/// An event's place in its room (see [`Storage::last_event_before_ts`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventDepthRow {
    #[sqlx(try_from = "String")]
    pub event_id: OwnedEventId,
    pub depth: i64,
    pub stream_ordering: i64,
}

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
    "room_history_floors",
    "key_backup_sessions",
    "state_groups",
    "event_expiry",
    "push_queue",
    "push_notifications",
    "appservice_room_list",
    "events",
    "rooms",
];

impl Storage {
    /// Removes everything about a room, in one transaction. Returns the
    /// number of events removed.
    pub async fn purge_room(&self, room_id: &str) -> sqlx::Result<u64> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM event_transactions WHERE (user_id, device_id, scope, txn_id) IN
                (SELECT sender, txn_device, txn_scope, txn_id FROM events
                 WHERE room_id = $1 AND txn_id IS NOT NULL)",
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
        sqlx::query(super::key_backup::ROOM_PURGE_ETAGS)
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

    /// The newest event of a room sent before `ts`.
    pub async fn last_event_before_ts(
        &self,
        room_id: &str,
        ts: i64,
    ) -> sqlx::Result<Option<EventDepthRow>> {
        sqlx::query_as(
            "SELECT event_id, depth, stream_ordering FROM events
             WHERE room_id = $1 AND origin_server_ts < $2
             ORDER BY stream_ordering DESC LIMIT 1",
        )
        .bind(room_id)
        .bind(ts)
        .fetch_optional(self.pool())
        .await
    }

    /// The room's first event after a stream position.
    pub async fn first_event_after(
        &self,
        room_id: &str,
        stream: i64,
    ) -> sqlx::Result<Option<EventDepthRow>> {
        sqlx::query_as(
            "SELECT event_id, depth, stream_ordering FROM events
             WHERE room_id = $1 AND stream_ordering > $2
             ORDER BY stream_ordering LIMIT 1",
        )
        .bind(room_id)
        .bind(stream)
        .fetch_optional(self.pool())
        .await
    }

    /// What a history purge up to `depth` may remove: the room's non-state
    /// events below that depth, never a forward extremity, oldest first.
    pub async fn history_below(
        &self,
        room_id: &str,
        depth: i64,
    ) -> sqlx::Result<Vec<PurgeableEventRow>> {
        sqlx::query_as(
            "SELECT event_id, sender, stream_ordering FROM events
             WHERE room_id = $1 AND depth < $2 AND state_key IS NULL
               AND event_id NOT IN (SELECT event_id FROM forward_extremities WHERE room_id = $1)
             ORDER BY stream_ordering",
        )
        .bind(room_id)
        .bind(depth)
        .fetch_all(self.pool())
        .await
    }

    /// Deletes events of a room with their relation rows and transaction
    /// ids, and starts the room's timeline at `floor` (a depth; an earlier
    /// floor stays as it is), in one transaction. Returns how many events
    /// went.
    pub async fn delete_events(
        &self,
        room_id: &str,
        event_ids: &[OwnedEventId],
        floor: i64,
    ) -> sqlx::Result<u64> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO room_history_floors (room_id, depth) VALUES ($1, $2)
             ON CONFLICT (room_id) DO UPDATE SET depth = CASE
                 WHEN excluded.depth > room_history_floors.depth THEN excluded.depth
                 ELSE room_history_floors.depth END",
        )
        .bind(room_id)
        .bind(floor)
        .execute(&mut *tx)
        .await?;
        let mut deleted = 0;
        for chunk in event_ids.chunks(500) {
            let list = |first: usize| {
                (first..first + chunk.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM event_transactions WHERE (user_id, device_id, scope, txn_id) IN
                    (SELECT sender, txn_device, txn_scope, txn_id FROM events
                     WHERE event_id IN ({}) AND txn_id IS NOT NULL)",
                list(1)
            )))
            .persistent(false);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            q.execute(&mut *tx).await?;
            for table in ["event_relations", "event_expiry", "events"] {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE room_id = $1 AND event_id IN ({})",
                    list(2)
                )))
                .persistent(false)
                .bind(room_id);
                for id in chunk {
                    q = q.bind(id.as_str());
                }
                let r = q.execute(&mut *tx).await?;
                if table == "events" {
                    deleted += r.rows_affected();
                }
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Where each purged room's timeline starts (a depth), by room.
    pub async fn history_floors(&self) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as("SELECT room_id, depth FROM room_history_floors")
            .fetch_all(self.pool())
            .await
    }

    /// Blocks (at `now`, in ms) or unblocks the room.
    pub async fn block_room(
        &self,
        room_id: &str,
        by: &str,
        block: bool,
        now: i64,
    ) -> sqlx::Result<()> {
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
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Who blocked the room, if it is blocked.
    pub async fn room_blocked_by(&self, room_id: &str) -> sqlx::Result<Option<OwnedUserId>> {
        self.optional_id(
            "SELECT blocked_by FROM blocked_rooms WHERE room_id = $1",
            room_id,
            "blocked_by",
        )
        .await
    }

    /// Every room this server knows.
    pub async fn all_rooms(&self) -> sqlx::Result<Vec<RoomRow>> {
        sqlx::query_as(
            "SELECT room_id, room_version, creator, is_public FROM rooms ORDER BY room_id",
        )
        .fetch_all(self.pool())
        .await
    }
}
