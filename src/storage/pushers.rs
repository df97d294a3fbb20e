//! Push: the `pushers` table, the delivery queue (`push_queue`), the
//! notifications `/notifications` lists (`push_notifications`) and the
//! stream position they are recorded up to (`push_state`).

use super::Storage;
use super::batch::{Param, WriteBatch};

/// A pusher as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PusherRow {
    pub pusher_id: i64,
    pub user_id: String,
    pub device_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The `data` object as JSON text.
    pub data: String,
    pub pushkey_ts: i64,
}

const PUSHER_COLUMNS: &str = "pusher_id, user_id, device_id, app_id, pushkey, kind, \
     app_display_name, device_display_name, profile_tag, lang, data, pushkey_ts";

/// What one notifying event leaves for one user: the notification row
/// and a queue row for each of the user's `http` pushers.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub user_id: String,
    pub stream_ordering: i64,
    pub room_id: String,
    pub event_id: String,
    /// The push rule's actions as JSON text.
    pub actions: String,
    pub highlight: bool,
    pub ts: i64,
    pub pushers: Vec<i64>,
}

/// One delivery waiting in the queue.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedPush {
    pub id: i64,
    pub pusher_id: i64,
    pub room_id: Option<String>,
    /// `None` for a badge update (the unread count changed).
    pub event_id: Option<String>,
    pub actions: String,
    pub created_ts: i64,
}

/// A notification as `/notifications` lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub stream_ordering: i64,
    pub room_id: String,
    pub event_id: String,
    pub actions: String,
    pub ts: i64,
    /// The user's read receipt in the room is at or past the event.
    pub is_read: i64,
}

/// The newest main-timeline read position (an event's stream position) of
/// user `n.user_id` in room `n.room_id`.
const READ_UPTO: &str = "COALESCE((SELECT MAX(e.stream_ordering) FROM receipts r
        JOIN events e ON e.event_id = r.event_id
        WHERE r.room_id = n.room_id AND r.user_id = n.user_id
          AND r.receipt_type IN ('m.read', 'm.read.private')), 0)";

/// Removes the pushers of device `$2` of user `$1` and their queues
/// (run with the device's deletion).
pub(crate) const DEVICE_CLEANUP: [&str; 2] = [
    "DELETE FROM push_queue WHERE pusher_id IN
        (SELECT pusher_id FROM pushers WHERE user_id = $1 AND device_id = $2)",
    "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2",
];

/// [`DEVICE_CLEANUP`] for every device of user `$1` but `$2`.
pub(crate) const OTHER_DEVICES_CLEANUP: [&str; 2] = [
    "DELETE FROM push_queue WHERE pusher_id IN
        (SELECT pusher_id FROM pushers WHERE user_id = $1 AND device_id <> $2)",
    "DELETE FROM pushers WHERE user_id = $1 AND device_id <> $2",
];

/// Everything push keeps for user `$1` (deactivation).
pub(crate) const USER_CLEANUP: [&str; 3] = [
    "DELETE FROM push_queue WHERE pusher_id IN (SELECT pusher_id FROM pushers WHERE user_id = $1)",
    "DELETE FROM pushers WHERE user_id = $1",
    "DELETE FROM push_notifications WHERE user_id = $1",
];

impl Storage {
    /// Adds or replaces the user's pusher for (app id, pushkey); unless
    /// `append`, the same (app id, pushkey) of other users goes. One
    /// transaction.
    pub async fn set_pusher(&self, p: &PusherRow, append: bool) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        if !append {
            for q in [
                "DELETE FROM push_queue WHERE pusher_id IN (SELECT pusher_id FROM pushers
                    WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3)",
                "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
            ] {
                sqlx::query(q)
                    .bind(&p.app_id)
                    .bind(&p.pushkey)
                    .bind(&p.user_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query(
            "INSERT INTO pushers (app_id, pushkey, user_id, device_id, kind, app_display_name,
                device_display_name, profile_tag, lang, data, pushkey_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET
                device_id = excluded.device_id, kind = excluded.kind,
                app_display_name = excluded.app_display_name,
                device_display_name = excluded.device_display_name,
                profile_tag = excluded.profile_tag, lang = excluded.lang,
                data = excluded.data, pushkey_ts = excluded.pushkey_ts",
        )
        .bind(&p.app_id)
        .bind(&p.pushkey)
        .bind(&p.user_id)
        .bind(&p.device_id)
        .bind(&p.kind)
        .bind(&p.app_display_name)
        .bind(&p.device_display_name)
        .bind(&p.profile_tag)
        .bind(&p.lang)
        .bind(&p.data)
        .bind(p.pushkey_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Removes the user's pusher for (app id, pushkey) and its queue.
    /// Whether there was one.
    pub async fn delete_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM push_queue WHERE pusher_id IN (SELECT pusher_id FROM pushers
                WHERE user_id = $1 AND app_id = $2 AND pushkey = $3)",
        )
        .bind(user_id)
        .bind(app_id)
        .bind(pushkey)
        .execute(&mut *tx)
        .await?;
        let r =
            sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                .bind(user_id)
                .bind(app_id)
                .bind(pushkey)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// The user's pushers, oldest first.
    pub async fn pushers(&self, user_id: &str) -> sqlx::Result<Vec<PusherRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY pusher_id"
        )))
        .bind(user_id)
        .fetch_all(self.pool())
        .await
    }

    /// The `http` pushers' ids of each of `users` (one round trip per 256
    /// users), by user; users without one are absent.
    pub async fn http_pushers_of(
        &self,
        users: &[&str],
    ) -> sqlx::Result<std::collections::HashMap<String, Vec<i64>>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            user_id: String,
            pusher_id: i64,
        }
        let rows: Vec<Row> = self
            .rows_of_users(
                "SELECT user_id, pusher_id FROM pushers WHERE kind = 'http' AND user_id IN",
                users,
            )
            .await?;
        let mut out: std::collections::HashMap<String, Vec<i64>> = std::collections::HashMap::new();
        for r in rows {
            out.entry(r.user_id).or_default().push(r.pusher_id);
        }
        for ids in out.values_mut() {
            ids.sort_unstable();
        }
        Ok(out)
    }

    pub async fn pusher(&self, pusher_id: i64) -> sqlx::Result<Option<PusherRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers WHERE pusher_id = $1"
        )))
        .bind(pusher_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Every user with a pusher (read at start-up).
    /// Every user with notifications kept (`/notifications` readers, read
    /// at start-up).
    pub async fn notified_users(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT DISTINCT user_id FROM push_notifications")
            .fetch_all(self.pool())
            .await
    }

    pub async fn pusher_users(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT DISTINCT user_id FROM pushers")
            .fetch_all(self.pool())
            .await
    }

    /// Where the last run left the recording: the position notifications
    /// are recorded up to, and whether it stopped cleanly (everything it
    /// was handed recorded). The row is created at `start_pos` (nothing
    /// before it is recorded) when there is none yet; either way it is
    /// marked running (not clean) until [`Storage::push_stopped`].
    pub async fn push_started(&self, start_pos: i64) -> sqlx::Result<(i64, bool)> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO push_state (id, stream_pos, clean) VALUES (1, $1, 0)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(start_pos)
        .execute(&mut *tx)
        .await?;
        let (pos, clean): (i64, i64) =
            sqlx::query_as("SELECT stream_pos, clean FROM push_state WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("UPDATE push_state SET clean = 0 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((pos, clean != 0))
    }

    /// The recorder stopped at `pos` with everything it was handed
    /// recorded.
    pub async fn push_stopped(&self, pos: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE push_state SET stream_pos = $1, clean = 1 WHERE id = 1")
            .bind(pos)
            .execute(self.pool())
            .await
            .map(|_| ())
    }

    /// Moves the recorded-up-to position (events that notified nobody).
    pub async fn set_push_position(&self, upto: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE push_state SET stream_pos = $1 WHERE id = 1")
            .bind(upto)
            .execute(self.pool())
            .await
            .map(|_| ())
    }

    /// Writes notifications and their queue rows, and moves the recorded
    /// position to `upto`, in one transaction (so each event is recorded
    /// once, also across a crash): one write batch (on SQLite one text).
    pub async fn record_notifications(
        &self,
        new: &[NewNotification],
        upto: i64,
    ) -> sqlx::Result<()> {
        let mut w = WriteBatch::default();
        w.push(
            "UPDATE push_state SET stream_pos = $1 WHERE id = 1",
            [Param::Int(upto)],
        );
        for n in new {
            w.push(
                "INSERT INTO push_notifications (user_id, stream_ordering, room_id, event_id, actions, highlight, ts)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (user_id, stream_ordering) DO NOTHING",
                [
                    Param::from(&n.user_id),
                    Param::Int(n.stream_ordering),
                    Param::from(&n.room_id),
                    Param::from(&n.event_id),
                    Param::from(&n.actions),
                    Param::Int(i64::from(n.highlight)),
                    Param::Int(n.ts),
                ],
            );
            for pusher in &n.pushers {
                w.push(
                    "INSERT INTO push_queue (pusher_id, room_id, event_id, actions, created_ts)
                     VALUES ($1, $2, $3, $4, $5)",
                    [
                        Param::Int(*pusher),
                        Param::from(&n.room_id),
                        Param::from(&n.event_id),
                        Param::from(&n.actions),
                        Param::Int(n.ts),
                    ],
                );
            }
        }
        self.run_batch(w).await
    }

    /// Queues a badge update (no event) for each pusher.
    pub async fn queue_badge_updates(&self, pushers: &[i64], now: i64) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        for pusher in pushers {
            sqlx::query(
                "INSERT INTO push_queue (pusher_id, actions, created_ts) VALUES ($1, '[]', $2)",
            )
            .bind(pusher)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// The pushers with deliveries waiting.
    pub async fn queued_pushers(&self) -> sqlx::Result<Vec<i64>> {
        sqlx::query_scalar("SELECT DISTINCT pusher_id FROM push_queue")
            .fetch_all(self.pool())
            .await
    }

    /// How many deliveries wait in the queue (all pushers).
    pub async fn push_queue_len(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM push_queue")
            .fetch_one(self.pool())
            .await
    }

    /// The pusher's oldest waiting delivery.
    pub async fn next_queued(&self, pusher_id: i64) -> sqlx::Result<Option<QueuedPush>> {
        sqlx::query_as(
            "SELECT id, pusher_id, room_id, event_id, actions, created_ts FROM push_queue
             WHERE pusher_id = $1 ORDER BY id LIMIT 1",
        )
        .bind(pusher_id)
        .fetch_optional(self.pool())
        .await
    }

    pub async fn delete_queued(&self, id: i64) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM push_queue WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map(|_| ())
    }

    /// The user's notifications before stream position `before`, newest
    /// first (`limit` of them), only highlights if asked.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> sqlx::Result<Vec<NotificationRow>> {
        let highlight = if only_highlight {
            " AND n.highlight = 1"
        } else {
            ""
        };
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT n.stream_ordering, n.room_id, n.event_id, n.actions, n.ts,
                CASE WHEN n.stream_ordering <= {READ_UPTO} THEN 1 ELSE 0 END AS is_read
             FROM push_notifications n
             WHERE n.user_id = $1 AND n.stream_ordering < $2{highlight}
             ORDER BY n.stream_ordering DESC LIMIT $3"
        )))
        .bind(user_id)
        .bind(before)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// The user's badge: the number of rooms with a notification after
    /// their read receipt (as Synapse counts by room).
    pub async fn unread_rooms(&self, user_id: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(DISTINCT n.room_id) FROM push_notifications n
             WHERE n.user_id = $1 AND n.stream_ordering > {READ_UPTO}"
        )))
        .bind(user_id)
        .fetch_one(self.pool())
        .await
    }

    /// Forgets notifications older than `ts`, and each user's beyond their
    /// newest `keep`.
    pub async fn prune_notifications(&self, ts: i64, keep: i64) -> sqlx::Result<u64> {
        let mut gone = sqlx::query("DELETE FROM push_notifications WHERE ts < $1")
            .bind(ts)
            .execute(self.pool())
            .await?
            .rows_affected();
        let over: Vec<String> = sqlx::query_scalar(
            "SELECT user_id FROM push_notifications GROUP BY user_id HAVING COUNT(*) > $1",
        )
        .bind(keep)
        .fetch_all(self.pool())
        .await?;
        for user in over {
            gone += sqlx::query(
                "DELETE FROM push_notifications WHERE user_id = $1 AND stream_ordering <
                    (SELECT stream_ordering FROM push_notifications WHERE user_id = $1
                     ORDER BY stream_ordering DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&user)
            .bind(keep - 1)
            .execute(self.pool())
            .await?
            .rows_affected();
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(user: &str, stream_ordering: i64, ts: i64) -> NewNotification {
        NewNotification {
            user_id: user.to_owned(),
            stream_ordering,
            room_id: "!r:x".to_owned(),
            event_id: format!("$e{stream_ordering}"),
            actions: "[\"notify\"]".to_owned(),
            highlight: false,
            ts,
            pushers: Vec::new(),
        }
    }

    async fn kept(storage: &Storage, user: &str) -> Vec<i64> {
        sqlx::query_scalar(
            "SELECT stream_ordering FROM push_notifications WHERE user_id = $1
             ORDER BY stream_ordering",
        )
        .bind(user)
        .fetch_all(storage.pool())
        .await
        .unwrap()
    }

    /// The prune drops what is older than its time, then each user's
    /// notifications beyond their newest `keep`; the position moves with
    /// the notifications recorded.
    #[tokio::test]
    async fn prune_keeps_each_users_newest_and_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 1).await.unwrap();
        assert_eq!(storage.push_started(7).await.unwrap(), (7, false));
        let mut new: Vec<NewNotification> =
            (1..=6).map(|i| notification("@a:x", i, 100 + i)).collect();
        new.extend((1..=2).map(|i| notification("@b:x", i, 100 + i)));
        new.push(notification("@c:x", 1, 50));
        storage.record_notifications(&new, 9).await.unwrap();
        storage.push_stopped(9).await.unwrap();
        assert_eq!(storage.push_started(0).await.unwrap(), (9, true));
        assert_eq!(storage.push_started(0).await.unwrap(), (9, false));
        let gone = storage.prune_notifications(100, 3).await.unwrap();
        assert_eq!(gone, 4);
        assert_eq!(kept(&storage, "@a:x").await, [4, 5, 6]);
        assert_eq!(kept(&storage, "@b:x").await, [1, 2]);
        assert!(kept(&storage, "@c:x").await.is_empty());
    }
}
