//! Tables `account_data` (global when `room_id` is empty, else per room),
//! `receipts` and `presence`. Each change takes a position in the global
//! stream so `/sync` can send what changed since a token.

use sqlx::Row;

use super::Storage;

#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

#[derive(Debug, Clone)]
pub struct PresenceRow {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub stream_ordering: i64,
}

impl Storage {
    pub async fn set_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
        content: &str,
        pos: i64,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_ordering)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .bind(content)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub async fn account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
    ) -> sqlx::Result<Option<String>> {
        let row = sqlx::query(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// (room_id, type, content) changed after `since` (all when 0), up to `to`.
    pub async fn account_data_since(
        &self,
        user_id: &str,
        since: i64,
        to: i64,
    ) -> sqlx::Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT room_id, data_type, content FROM account_data
             WHERE user_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 ORDER BY stream_ordering",
        )
        .bind(user_id)
        .bind(since)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub async fn set_receipt(&self, r: &ReceiptRow, pos: i64) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM receipts WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4",
        )
        .bind(&r.room_id)
        .bind(&r.user_id)
        .bind(&r.receipt_type)
        .bind(&r.thread_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_ordering)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.room_id)
        .bind(&r.user_id)
        .bind(&r.receipt_type)
        .bind(&r.thread_id)
        .bind(&r.event_id)
        .bind(r.ts)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Receipts (in any room) changed in `(since, to]`.
    pub async fn receipts_since(&self, since: i64, to: i64) -> sqlx::Result<Vec<ReceiptRow>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM receipts
             WHERE stream_ordering > $1 AND stream_ordering <= $2",
        )
        .bind(since)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| ReceiptRow {
                room_id: r.get(0),
                user_id: r.get(1),
                receipt_type: r.get(2),
                thread_id: r.get(3),
                event_id: r.get(4),
                ts: r.get(5),
            })
            .collect())
    }

    /// The events of the user's main-timeline read receipts (public and
    /// private) in every room: room → event ids.
    pub async fn all_main_receipts(
        &self,
        user_id: &str,
    ) -> sqlx::Result<std::collections::HashMap<String, Vec<String>>> {
        let rows = sqlx::query(
            "SELECT room_id, event_id FROM receipts
             WHERE user_id = $1 AND receipt_type IN ('m.read', 'm.read.private')
               AND thread_id IN ('', 'main')",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
        for r in &rows {
            out.entry(r.get(0)).or_default().push(r.get(1));
        }
        Ok(out)
    }

    pub async fn set_presence(&self, p: &PresenceRow) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM presence WHERE user_id = $1")
            .bind(&p.user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_ordering) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&p.user_id)
        .bind(&p.state)
        .bind(&p.status_msg)
        .bind(p.last_active_ts)
        .bind(p.stream_ordering)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub async fn presence(&self, user_id: &str) -> sqlx::Result<Option<PresenceRow>> {
        let row = sqlx::query(
            "SELECT user_id, state, status_msg, last_active_ts, stream_ordering FROM presence WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| PresenceRow {
            user_id: r.get(0),
            state: r.get(1),
            status_msg: r.get(2),
            last_active_ts: r.get(3),
            stream_ordering: r.get(4),
        }))
    }

    /// Presence changed in `(since, to]`, for the given users.
    pub async fn presence_since(&self, since: i64, to: i64) -> sqlx::Result<Vec<PresenceRow>> {
        let rows = sqlx::query(
            "SELECT user_id, state, status_msg, last_active_ts, stream_ordering FROM presence
             WHERE stream_ordering > $1 AND stream_ordering <= $2",
        )
        .bind(since)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| PresenceRow {
                user_id: r.get(0),
                state: r.get(1),
                status_msg: r.get(2),
                last_active_ts: r.get(3),
                stream_ordering: r.get(4),
            })
            .collect())
    }

    /// The highest stream position used by account data, receipts or presence.
    pub async fn max_side_stream(&self) -> sqlx::Result<i64> {
        let mut max = 0;
        for q in [
            "SELECT COALESCE(MAX(stream_ordering), 0) FROM account_data",
            "SELECT COALESCE(MAX(stream_ordering), 0) FROM receipts",
            "SELECT COALESCE(MAX(stream_ordering), 0) FROM presence",
        ] {
            let row = sqlx::query(q).fetch_one(self.pool()).await?;
            max = max.max(row.get::<i64, _>(0));
        }
        Ok(max)
    }
}
