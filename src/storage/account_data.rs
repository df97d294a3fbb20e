//! Tables `account_data` (global when `room_id` is empty, else per room),
//! `receipts` and `presence`. Each change takes a position in the global
//! stream so `/sync` can send what changed since a token.

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use sqlx::FromRow;

use super::Storage;
use super::rows::OptionalId;

/// One piece of account data: global when it has no room (stored as an
/// empty `room_id`).
#[derive(Debug, Clone, FromRow)]
pub struct AccountDataRow {
    #[sqlx(try_from = "OptionalId<OwnedRoomId>")]
    pub room_id: Option<OwnedRoomId>,
    pub data_type: String,
    /// JSON text.
    pub content: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct ReceiptRow {
    #[sqlx(try_from = "String")]
    pub room_id: OwnedRoomId,
    #[sqlx(try_from = "String")]
    pub user_id: OwnedUserId,
    pub receipt_type: String,
    pub thread_id: String,
    #[sqlx(try_from = "String")]
    pub event_id: OwnedEventId,
    pub ts: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct PresenceRow {
    #[sqlx(try_from = "String")]
    pub user_id: OwnedUserId,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub stream_ordering: i64,
}

impl PresenceRow {
    /// A joined member who has no presence row ([`Storage::presence_in_rooms`]
    /// reads them as `offline`, at position and time 0).
    pub fn is_unset(&self) -> bool {
        self.stream_ordering == 0
    }
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
        sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .fetch_optional(self.pool())
        .await
    }

    /// The user's account data of two types (global and per room), with
    /// the position each was stored at: what sliding sync's room lists keep
    /// (`m.direct` and `m.tag`).
    pub async fn account_data_of_types(
        &self,
        user_id: &str,
        (first, second): (&str, &str),
    ) -> sqlx::Result<Vec<(AccountDataRow, i64)>> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT room_id, data_type, content, stream_ordering FROM account_data
             WHERE user_id = $1 AND data_type IN ($2, $3)",
        )
        .bind(user_id)
        .bind(first)
        .bind(second)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(room, data_type, content, pos)| {
                let room_id = match room.as_str() {
                    "" => None,
                    r => Some(
                        OwnedRoomId::try_from(r)
                            .map_err(|e| super::rows::decode_error("room_id", e))?,
                    ),
                };
                Ok((
                    AccountDataRow {
                        room_id,
                        data_type,
                        content,
                    },
                    pos,
                ))
            })
            .collect()
    }

    /// The account data changed after `since` (all when 0), up to `to`.
    pub async fn account_data_since(
        &self,
        user_id: &str,
        since: i64,
        to: i64,
    ) -> sqlx::Result<Vec<AccountDataRow>> {
        sqlx::query_as(
            "SELECT NULLIF(room_id, '') AS room_id, data_type, content FROM account_data
             WHERE user_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 ORDER BY stream_ordering",
        )
        .bind(user_id)
        .bind(since)
        .bind(to)
        .fetch_all(self.pool())
        .await
    }

    /// Stores the receipt unless the one it replaces acknowledges an event
    /// at or after `event_pos` (the new event's stream position); whether it
    /// was stored.
    pub async fn set_receipt(
        &self,
        r: &ReceiptRow,
        pos: i64,
        event_pos: i64,
    ) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT e.stream_ordering FROM receipts r JOIN events e ON e.event_id = r.event_id
             WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type = $3 AND r.thread_id = $4",
        )
        .bind(r.room_id.as_str())
        .bind(r.user_id.as_str())
        .bind(&r.receipt_type)
        .bind(&r.thread_id)
        .fetch_optional(&mut *tx)
        .await?;
        if current.is_some_and(|current| current >= event_pos) {
            return Ok(false);
        }
        sqlx::query(
            "DELETE FROM receipts WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4",
        )
        .bind(r.room_id.as_str())
        .bind(r.user_id.as_str())
        .bind(&r.receipt_type)
        .bind(&r.thread_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_ordering)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(r.room_id.as_str())
        .bind(r.user_id.as_str())
        .bind(&r.receipt_type)
        .bind(&r.thread_id)
        .bind(r.event_id.as_str())
        .bind(r.ts)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Receipts changed in `(since, to]` in the given rooms, as `user_id`
    /// may see them (others' private receipts left out). Each room is a
    /// range of the `(room_id, stream_ordering)` index: the receipts of
    /// other rooms, or from before `since`, are never read.
    pub async fn receipts_in_rooms(
        &self,
        rooms: &[&str],
        user_id: &str,
        since: i64,
        to: i64,
    ) -> sqlx::Result<Vec<ReceiptRow>> {
        let mut out = Vec::new();
        for (chunk, size) in super::padded_chunks(rooms, super::PADDED_MAX) {
            let mut q = self.list_query(receipts_in_rooms_sql(size));
            for room in super::padded_ids(chunk, size) {
                q = q.bind(room);
            }
            let rows = q
                .bind(since)
                .bind(to)
                .bind(user_id)
                .try_map(|r| ReceiptRow::from_row(&r))
                .fetch_all(self.pool())
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The events of the user's main-timeline read receipts (public and
    /// private) in every room: room → event ids.
    pub async fn all_main_receipts(
        &self,
        user_id: &str,
    ) -> sqlx::Result<std::collections::HashMap<OwnedRoomId, Vec<OwnedEventId>>> {
        #[derive(FromRow)]
        struct Receipt {
            #[sqlx(try_from = "String")]
            room_id: OwnedRoomId,
            #[sqlx(try_from = "String")]
            event_id: OwnedEventId,
        }
        let rows: Vec<Receipt> = sqlx::query_as(
            "SELECT room_id, event_id FROM receipts
             WHERE user_id = $1 AND receipt_type IN ('m.read', 'm.read.private')
               AND thread_id IN ('', 'main')",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        let mut out: std::collections::HashMap<OwnedRoomId, Vec<OwnedEventId>> = Default::default();
        for r in rows {
            out.entry(r.room_id).or_default().push(r.event_id);
        }
        Ok(out)
    }

    /// The user's read receipts (public and private) in every room, by
    /// thread: room → (thread id, `""` when unthreaded; event id).
    pub async fn all_read_receipts(
        &self,
        user_id: &str,
    ) -> sqlx::Result<std::collections::HashMap<OwnedRoomId, Vec<(String, OwnedEventId)>>> {
        #[derive(FromRow)]
        struct Receipt {
            #[sqlx(try_from = "String")]
            room_id: OwnedRoomId,
            thread_id: String,
            #[sqlx(try_from = "String")]
            event_id: OwnedEventId,
        }
        let rows: Vec<Receipt> = sqlx::query_as(
            "SELECT room_id, thread_id, event_id FROM receipts
             WHERE user_id = $1 AND receipt_type IN ('m.read', 'm.read.private')",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        let mut out: std::collections::HashMap<_, Vec<_>> = Default::default();
        for r in rows {
            out.entry(r.room_id)
                .or_default()
                .push((r.thread_id, r.event_id));
        }
        Ok(out)
    }

    pub async fn set_presence(&self, p: &PresenceRow) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM presence WHERE user_id = $1")
            .bind(p.user_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_ordering) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(p.user_id.as_str())
        .bind(&p.state)
        .bind(&p.status_msg)
        .bind(p.last_active_ts)
        .bind(p.stream_ordering)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// The users whose stored presence is not `offline`.
    pub async fn users_present(&self) -> sqlx::Result<Vec<OwnedUserId>> {
        let users: Vec<String> =
            sqlx::query_scalar("SELECT user_id FROM presence WHERE state <> 'offline'")
                .fetch_all(self.pool())
                .await?;
        Ok(users
            .into_iter()
            .filter_map(|u| OwnedUserId::try_from(u).ok())
            .collect())
    }

    pub async fn presence(&self, user_id: &str) -> sqlx::Result<Option<PresenceRow>> {
        sqlx::query_as(
            "SELECT user_id, state, status_msg, last_active_ts, stream_ordering FROM presence WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Presence changed in `(since, to]` of `user_id` and of the joined
    /// members of `rooms` (each user once). Read from the rooms' member
    /// entries to each member's presence row: the presence of users who
    /// share no room is never read.
    pub async fn presence_in_rooms(
        &self,
        rooms: &[&str],
        user_id: &str,
        since: i64,
        to: i64,
    ) -> sqlx::Result<Vec<PresenceRow>> {
        let mut out: Vec<PresenceRow> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // The user alone when in no room.
        let rooms: &[&str] = if rooms.is_empty() { &[""] } else { rooms };
        for (chunk, size) in super::padded_chunks(rooms, super::PADDED_MAX) {
            let mut q = self
                .list_query(presence_in_rooms_sql(size))
                .bind(user_id)
                .bind(since)
                .bind(to);
            for room in super::padded_ids(chunk, size) {
                q = q.bind(room);
            }
            let rows = q
                .bind(since)
                .bind(to)
                .try_map(|r| PresenceRow::from_row(&r))
                .fetch_all(self.pool())
                .await?;
            for row in rows {
                if seen.insert(row.user_id.clone()) {
                    out.push(row);
                }
            }
        }
        Ok(out)
    }

    /// The highest stream position used by account data, receipts or presence.
    pub async fn max_side_stream(&self) -> sqlx::Result<i64> {
        let mut max = 0;
        for q in [
            "SELECT COALESCE(MAX(stream_ordering), 0) FROM account_data",
            "SELECT COALESCE(MAX(stream_ordering), 0) FROM receipts",
            "SELECT COALESCE(MAX(stream_ordering), 0) FROM presence",
        ] {
            let pos: i64 = sqlx::query_scalar(q).fetch_one(self.pool()).await?;
            max = max.max(pos);
        }
        Ok(max)
    }
}

/// [`Storage::receipts_in_rooms`] for `size` rooms: `$1..$size` the rooms,
/// then since, to and the reader.
fn receipts_in_rooms_sql(size: usize) -> String {
    let list = super::placeholders(1, size);
    format!(
        "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM receipts
         WHERE room_id IN ({list}) AND stream_ordering > ${} AND stream_ordering <= ${}
           AND (receipt_type <> 'm.read.private' OR user_id = ${})",
        size + 1,
        size + 2,
        size + 3
    )
}

/// [`Storage::presence_in_rooms`] for `size` rooms: `$1` the user, `$2`
/// and `$3` since and to, then the rooms, then since and to again (each
/// placeholder once, in order; see [`super::Dialect::positional`]).
/// The `LEFT JOIN` keeps the member entries the outer loop on SQLite, and
/// gives a member without a presence row (one who joined in the window) as
/// unset ([`PresenceRow::is_unset`]).
fn presence_in_rooms_sql(size: usize) -> String {
    let list = super::placeholders(4, size);
    let columns = "p.user_id, p.state, p.status_msg, p.last_active_ts, p.stream_ordering";
    format!(
        "SELECT {columns} FROM presence p
         WHERE p.user_id = $1 AND p.stream_ordering > $2 AND p.stream_ordering <= $3
         UNION ALL
         SELECT c.state_key AS user_id, COALESCE(p.state, 'offline') AS state, p.status_msg,
                COALESCE(p.last_active_ts, 0) AS last_active_ts,
                COALESCE(p.stream_ordering, 0) AS stream_ordering
         FROM current_state c LEFT JOIN presence p ON p.user_id = c.state_key
         WHERE c.room_id IN ({list}) AND c.event_type = 'm.room.member'
           AND c.membership = 'join'
           AND (p.stream_ordering > ${since} OR c.stream_ordering > ${since})
           AND COALESCE(p.stream_ordering, c.stream_ordering) <= ${to}",
        since = size + 4,
        to = size + 5
    )
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    async fn storage() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 1).await.unwrap();
        (dir, storage)
    }

    /// SQLite's plan for a statement, one line per step.
    async fn plan(storage: &Storage, sql: String, binds: &[&str]) -> Vec<String> {
        let mut q = storage.list_query(format!("EXPLAIN QUERY PLAN {sql}"));
        for b in binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(storage.pool()).await.unwrap();
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect()
    }

    fn receipt(room: &str, user: &str, receipt_type: &str) -> ReceiptRow {
        ReceiptRow {
            room_id: room.try_into().unwrap(),
            user_id: user.try_into().unwrap(),
            receipt_type: receipt_type.into(),
            thread_id: String::new(),
            event_id: "$e".try_into().unwrap(),
            ts: 1,
        }
    }

    /// The receipts a `/sync` reads are ranges of the rooms' index in the
    /// window, never a scan of every room's receipts (issue 16).
    #[tokio::test]
    async fn receipt_reads_are_bounded_by_the_rooms_and_the_window() {
        let (_dir, storage) = storage().await;
        let detail = plan(
            &storage,
            receipts_in_rooms_sql(2),
            &["!a:x", "!b:x", "1", "9", "@u:x"],
        )
        .await;
        assert!(
            detail.iter().all(|d| d.contains(
                "USING INDEX receipts_room_stream (room_id=? AND stream_ordering>? AND stream_ordering<?)"
            )),
            "{detail:?}"
        );

        storage
            .set_receipt(&receipt("!a:x", "@v:x", "m.read"), 1, 1)
            .await
            .unwrap();
        storage
            .set_receipt(&receipt("!a:x", "@w:x", "m.read"), 5, 1)
            .await
            .unwrap();
        storage
            .set_receipt(&receipt("!a:x", "@v:x", "m.read.private"), 6, 1)
            .await
            .unwrap();
        storage
            .set_receipt(&receipt("!a:x", "@u:x", "m.read.private"), 7, 1)
            .await
            .unwrap();
        storage
            .set_receipt(&receipt("!b:x", "@w:x", "m.read"), 8, 1)
            .await
            .unwrap();
        let got = storage
            .receipts_in_rooms(&["!a:x"], "@u:x", 1, 7)
            .await
            .unwrap();
        let mut got: Vec<(String, String)> = got
            .into_iter()
            .map(|r| (r.user_id.to_string(), r.receipt_type))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("@u:x".into(), "m.read.private".into()),
                ("@w:x".into(), "m.read".into()),
            ]
        );
    }

    /// Presence is read from the rooms' joined members to their presence
    /// rows: the presence table is never scanned (issue 16).
    #[tokio::test]
    async fn presence_reads_are_bounded_by_the_rooms_members() {
        let (_dir, storage) = storage().await;
        let detail = plan(
            &storage,
            presence_in_rooms_sql(2),
            &["@u:x", "0", "9", "!a:x", "!b:x", "0", "9"],
        )
        .await;
        assert!(detail.iter().all(|d| !d.starts_with("SCAN")), "{detail:?}");
        assert!(
            detail.iter().any(|d| d.starts_with("SEARCH c")),
            "{detail:?}"
        );

        for (room, member) in [("!a:x", "@u:x"), ("!a:x", "@v:x"), ("!b:x", "@w:x")] {
            sqlx::query(
                "INSERT INTO current_state (room_id, event_type, state_key, event_id, membership, stream_ordering)
                 VALUES ($1, 'm.room.member', $2, $3, 'join', 1)",
            )
            .bind(room)
            .bind(member)
            .bind(format!("$m-{room}-{member}"))
            .execute(storage.pool())
            .await
            .unwrap();
        }
        for (pos, user) in [(2, "@u:x"), (3, "@v:x"), (4, "@w:x"), (5, "@stranger:x")] {
            storage
                .set_presence(&PresenceRow {
                    user_id: user.try_into().unwrap(),
                    state: "online".into(),
                    status_msg: None,
                    last_active_ts: 1,
                    stream_ordering: pos,
                })
                .await
                .unwrap();
        }
        let users = |rows: Vec<PresenceRow>| {
            let mut users: Vec<String> = rows.into_iter().map(|p| p.user_id.to_string()).collect();
            users.sort();
            users
        };
        let got = storage
            .presence_in_rooms(&["!a:x"], "@u:x", 0, 9)
            .await
            .unwrap();
        assert_eq!(users(got), vec!["@u:x", "@v:x"]);
        let got = storage
            .presence_in_rooms(&["!a:x"], "@u:x", 2, 9)
            .await
            .unwrap();
        assert_eq!(users(got), vec!["@v:x"]);
        let got = storage.presence_in_rooms(&[], "@w:x", 0, 9).await.unwrap();
        assert_eq!(users(got), vec!["@w:x"]);
        // A member without a presence row comes as unset once joined.
        sqlx::query(
            "INSERT INTO current_state (room_id, event_type, state_key, event_id, membership, stream_ordering)
             VALUES ('!a:x', 'm.room.member', '@new:x', '$m-new', 'join', 6)",
        )
        .execute(storage.pool())
        .await
        .unwrap();
        let got = storage
            .presence_in_rooms(&["!a:x"], "@u:x", 5, 9)
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].is_unset() && got[0].state == "offline", "{got:?}");
        assert_eq!(got[0].user_id, "@new:x");
        let got = storage
            .presence_in_rooms(&["!a:x"], "@u:x", 6, 9)
            .await
            .unwrap();
        assert!(got.is_empty(), "{got:?}");
    }
}
