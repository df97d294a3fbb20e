//! Tables `event_reports`, `room_reports`, `user_reports` (abuse reports)
//! and `server_notice_rooms` (each user's server-notices room).

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};

use super::Storage;
use super::rows::parse_id;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventReportRow {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub room_id: OwnedRoomId,
    #[sqlx(try_from = "String")]
    pub event_id: OwnedEventId,
    #[sqlx(try_from = "String")]
    pub reporter: OwnedUserId,
    #[sqlx(try_from = "String")]
    pub event_sender: OwnedUserId,
    pub reason: Option<String>,
    pub score: Option<i64>,
    pub received_ts: i64,
}

/// Filters of the admin report listing (Synapse's query parameters).
#[derive(Debug, Default)]
pub struct ReportFilter {
    pub user_id: Option<String>,
    pub room_id: Option<String>,
    pub event_sender_user_id: Option<String>,
}

/// A new row of `event_reports`.
pub struct NewEventReport<'a> {
    pub room_id: &'a str,
    pub event_id: &'a str,
    pub reporter: &'a str,
    pub event_sender: &'a str,
    pub reason: Option<&'a str>,
    pub score: Option<i64>,
    /// When the report was made, in ms.
    pub received_ts: i64,
}

impl Storage {
    pub async fn insert_event_report(&self, r: &NewEventReport<'_>) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO event_reports (room_id, event_id, reporter, event_sender, reason, score, received_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(r.room_id)
        .bind(r.event_id)
        .bind(r.reporter)
        .bind(r.event_sender)
        .bind(r.reason)
        .bind(r.score)
        .bind(r.received_ts)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn insert_room_report(
        &self,
        room_id: &str,
        reporter: &str,
        reason: Option<&str>,
        received_ts: i64,
    ) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO room_reports (room_id, reporter, reason, received_ts) VALUES ($1, $2, $3, $4)")
            .bind(room_id)
            .bind(reporter)
            .bind(reason)
            .bind(received_ts)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn insert_user_report(
        &self,
        target: &str,
        reporter: &str,
        reason: Option<&str>,
        received_ts: i64,
    ) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO user_reports (target_user_id, reporter, reason, received_ts) VALUES ($1, $2, $3, $4)")
            .bind(target)
            .bind(reporter)
            .bind(reason)
            .bind(received_ts)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A page of event reports (newest first unless `forwards`) and the
    /// total matching the filter. Substring matches, as Synapse.
    pub async fn event_reports(
        &self,
        f: &ReportFilter,
        offset: i64,
        limit: i64,
        forwards: bool,
    ) -> sqlx::Result<(Vec<EventReportRow>, i64)> {
        // Case-sensitive, literal substring matches (as Synapse).
        let d = self.dialect();
        let condition = format!(
            "WHERE ($1 = '' OR {}) AND ($2 = '' OR {}) AND ($3 = '' OR {})",
            d.contains("reporter", "$1"),
            d.contains("room_id", "$2"),
            d.contains("event_sender", "$3")
        );
        let plain = |v: &Option<String>| v.clone().unwrap_or_default();
        let (u, r, s) = (
            plain(&f.user_id),
            plain(&f.room_id),
            plain(&f.event_sender_user_id),
        );
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM event_reports {condition}"
        )))
        .bind(&u)
        .bind(&r)
        .bind(&s)
        .fetch_one(self.pool())
        .await?;
        let order = if forwards { "ASC" } else { "DESC" };
        let q = format!(
            "SELECT id, room_id, event_id, reporter, event_sender, reason, score, received_ts FROM event_reports
             {condition} ORDER BY received_ts {order}, id {order} LIMIT $4 OFFSET $5"
        );
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .bind(&u)
            .bind(&r)
            .bind(&s)
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool())
            .await?;
        Ok((rows, total))
    }

    pub async fn event_report(&self, id: i64) -> sqlx::Result<Option<EventReportRow>> {
        sqlx::query_as(
            "SELECT id, room_id, event_id, reporter, event_sender, reason, score, received_ts FROM event_reports WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
    }

    pub async fn delete_event_report(&self, id: i64) -> sqlx::Result<bool> {
        let r = sqlx::query("DELETE FROM event_reports WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn server_notice_room(&self, user_id: &str) -> sqlx::Result<Option<OwnedRoomId>> {
        self.optional_id(
            "SELECT room_id FROM server_notice_rooms WHERE user_id = $1",
            user_id,
            "room_id",
        )
        .await
    }

    pub async fn set_server_notice_room(&self, user_id: &str, room_id: &str) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM server_notice_rooms WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO server_notice_rooms (user_id, room_id) VALUES ($1, $2)")
            .bind(user_id)
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Whether the room is some user's server-notices room.
    pub async fn is_server_notice_room(&self, user_id: &str, room_id: &str) -> sqlx::Result<bool> {
        Ok(self
            .server_notice_room(user_id)
            .await?
            .is_some_and(|r| r.as_str() == room_id))
    }

    /// Every local, active account (for broadcasts).
    pub async fn active_local_users(&self) -> sqlx::Result<Vec<OwnedUserId>> {
        let users: Vec<String> = sqlx::query_scalar("SELECT user_id FROM accounts WHERE is_deactivated = 0 AND account_type <> 2 ORDER BY user_id")
            .fetch_all(self.pool())
            .await?;
        users.into_iter().map(|u| parse_id("user_id", u)).collect()
    }
}
