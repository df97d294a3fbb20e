//! End-to-end encryption keys: `e2e_device_keys`, `e2e_one_time_keys`,
//! `e2e_fallback_keys`, and `device_list_changes` (the stream positions at
//! which a user's devices or keys changed).

use sqlx::FromRow;

use super::Storage;
use super::rows::PackedRows;

/// A one-time or fallback key to store: `algorithm:key_id` and its JSON.
pub struct NewKey<'a> {
    pub algorithm: &'a str,
    pub key_id: &'a str,
    pub json: &'a str,
}

/// What one `/keys/upload` writes, in one transaction.
pub struct KeyUpload<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    /// New device keys (absent: unchanged).
    pub device_keys: Option<&'a str>,
    pub one_time_keys: &'a [NewKey<'a>],
    pub fallback_keys: &'a [NewKey<'a>],
    /// The stream position of the device-list change the upload makes
    /// (new device keys), if any.
    pub change_at: Option<i64>,
}

/// A device's stored keys with the name shown beside them.
#[derive(Debug, sqlx::FromRow)]
pub struct DeviceKeysRow {
    pub user_id: String,
    pub device_id: String,
    pub key_json: String,
    pub display_name: Option<String>,
}

/// A claimed key: its id (`algorithm:key_id`'s key id) and JSON.
#[derive(Debug, sqlx::FromRow)]
pub struct ClaimedKey {
    pub key_id: String,
    pub key_json: String,
}

impl Storage {
    /// A device's stored device keys (JSON), if any.
    pub async fn device_keys_json(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(self.pool())
        .await
    }

    /// The one-time keys a device holds now: `(algorithm, key_id, json)`.
    pub async fn one_time_keys_of(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> sqlx::Result<Vec<(String, String, String)>> {
        sqlx::query_as(
            "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await
    }

    /// Stores an upload in one transaction. Rows are written only while the
    /// device exists (a device deleted meanwhile gets none); one-time keys
    /// already stored are kept; a fallback key replaces the one of its
    /// algorithm (unused again unless it is the same key). `false` when the
    /// device no longer exists (nothing written).
    pub async fn store_keys(&self, up: &KeyUpload<'_>) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(up.user_id)
            .bind(up.device_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(false);
        }
        if let Some(json) = up.device_keys {
            sqlx::query(
                "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
            )
            .bind(up.user_id)
            .bind(up.device_id)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        for k in up.one_time_keys {
            sqlx::query(
                "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(up.user_id)
            .bind(up.device_id)
            .bind(k.algorithm)
            .bind(k.key_id)
            .bind(k.json)
            .execute(&mut *tx)
            .await?;
        }
        for k in up.fallback_keys {
            sqlx::query(
                "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
                 VALUES ($1, $2, $3, $4, $5, 0)
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
                   used = CASE WHEN e2e_fallback_keys.key_id = excluded.key_id
                               AND e2e_fallback_keys.key_json = excluded.key_json
                          THEN e2e_fallback_keys.used ELSE 0 END,
                   key_id = excluded.key_id, key_json = excluded.key_json",
            )
            .bind(up.user_id)
            .bind(up.device_id)
            .bind(k.algorithm)
            .bind(k.key_id)
            .bind(k.json)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(pos) = up.change_at {
            insert_change(&mut tx, up.user_id, pos).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A device's one-time key counts by algorithm and the algorithms of
    /// its unused fallback keys.
    pub async fn key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> sqlx::Result<(Vec<(String, i64)>, Vec<String>)> {
        let counts = sqlx::query_as(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys
             WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await?;
        let fallback = sqlx::query_scalar(
            "SELECT algorithm FROM e2e_fallback_keys
             WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await?;
        Ok((counts, fallback))
    }

    /// The device keys of the users' existing devices, with their names
    /// (an `IN` list per chunk of users, not a statement per user). Each
    /// chunk is one packed value (a row crossing from sqlx's SQLite thread
    /// is a thread hand-off: 500 users' devices were 500), or its rows when
    /// a stored value holds a separator.
    pub async fn device_keys_of(&self, users: &[&str]) -> sqlx::Result<Vec<DeviceKeysRow>> {
        const FROM: &str = "FROM e2e_device_keys k JOIN devices d
             ON d.user_id = k.user_id AND d.device_id = k.device_id
             WHERE k.user_id IN";
        let column = super::packed_column(
            &[
                "k.user_id",
                "k.device_id",
                "CASE WHEN d.display_name IS NULL THEN '0' ELSE '1' END",
                "COALESCE(d.display_name, '')",
                "k.key_json",
            ],
            "",
        );
        let mut out = Vec::new();
        for (chunk, size) in super::padded_chunks(users, super::PADDED_MAX) {
            let list = super::placeholders(1, size);
            let mut q = self.list_query(format!(
                "SELECT COUNT(*) AS n, {column} AS packed {FROM} ({list})"
            ));
            for id in super::padded_ids(chunk, size) {
                q = q.bind(id);
            }
            let read = q
                .try_map(|r| PackedRows::from_row(&r))
                .fetch_one(self.pool())
                .await?;
            match super::unpack::<5>(read.packed.as_deref(), read.n) {
                Some(rows) => {
                    out.extend(rows.into_iter().map(|[user, device, named, name, json]| {
                        DeviceKeysRow {
                            user_id: user.to_owned(),
                            device_id: device.to_owned(),
                            key_json: json.to_owned(),
                            display_name: (named == "1").then(|| name.to_owned()),
                        }
                    }))
                }
                None => out.extend(
                    self.rows_of_users::<DeviceKeysRow>(
                        &format!(
                            "SELECT k.user_id, k.device_id, k.key_json, d.display_name {FROM}"
                        ),
                        chunk,
                    )
                    .await?,
                ),
            }
        }
        Ok(out)
    }

    /// Takes one one-time key of `algorithm` from a device: deleted in the
    /// statement that returns it, so no two claims get the same key.
    pub async fn take_one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> sqlx::Result<Option<ClaimedKey>> {
        let sql = format!(
            "DELETE FROM e2e_one_time_keys
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = (
               SELECT key_id FROM e2e_one_time_keys
               WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
               ORDER BY key_id LIMIT 1{})
             RETURNING key_id, key_json",
            self.dialect().skip_locked()
        );
        self.device_key_query(sql, (user_id, device_id, algorithm))
            .await
    }

    /// Takes one one-time key of each `(user, device, algorithm)` that has
    /// one, the lowest key id of each, deleted in the statement that
    /// returns it (one statement per chunk of requests, not one per
    /// device): `(user, device, algorithm, key)`. A device whose key a
    /// concurrent claim took at the same moment may come back without one
    /// (PostgreSQL); [`Self::take_one_time_key`] retries those.
    pub async fn take_one_time_keys(
        &self,
        wanted: &[(&str, &str, &str)],
    ) -> sqlx::Result<Vec<(String, String, String, ClaimedKey)>> {
        let mut conn = self.pool().acquire().await?;
        self.take_one_time_keys_on(&mut conn, wanted).await
    }

    /// Several claims' keys in one transaction: `rounds[k]` names the
    /// `(user, device, algorithm)`s that a k+1-th claim of the batch asks
    /// for, so round k takes each one's k+1-th lowest key (the rounds run in
    /// order, each taking the lowest left). One commit for the batch
    /// instead of one a claim: the pages of a device's keys are written
    /// once. The keys taken, round by round.
    pub async fn take_one_time_keys_rounds(
        &self,
        rounds: &[Vec<(&str, &str, &str)>],
    ) -> sqlx::Result<Vec<Vec<(String, String, String, ClaimedKey)>>> {
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(rounds.len());
        for round in rounds {
            out.push(self.take_one_time_keys_on(&mut tx, round).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn take_one_time_keys_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        wanted: &[(&str, &str, &str)],
    ) -> sqlx::Result<Vec<(String, String, String, ClaimedKey)>> {
        let mut out = Vec::new();
        for (chunk, size) in super::padded_chunks(wanted, super::PADDED_MAX) {
            let values = (0..size)
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            // Each key by the primary key: the lowest id of each device is
            // an index lookup, whatever the table holds.
            let mut q = self.list_query(format!(
                "DELETE FROM e2e_one_time_keys
                 WHERE (user_id, device_id, algorithm, key_id) IN (
                   SELECT v.column1, v.column2, v.column3, (
                     SELECT MIN(k.key_id) FROM e2e_one_time_keys k
                     WHERE k.user_id = v.column1 AND k.device_id = v.column2
                       AND k.algorithm = v.column3)
                   FROM (VALUES {values}) AS v)
                 RETURNING user_id, device_id, algorithm, key_id, key_json"
            ));
            let padding = std::iter::repeat_n(&("", "", ""), size - chunk.len());
            for (user, device, algorithm) in chunk.iter().chain(padding) {
                q = q.bind(*user).bind(*device).bind(*algorithm);
            }
            let rows = q
                .try_map(|r: sqlx::any::AnyRow| {
                    use sqlx::Row;
                    Ok((
                        r.try_get("user_id")?,
                        r.try_get("device_id")?,
                        r.try_get("algorithm")?,
                        ClaimedKey {
                            key_id: r.try_get("key_id")?,
                            key_json: r.try_get("key_json")?,
                        },
                    ))
                })
                .fetch_all(&mut *conn)
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Whether a device holds any one-time key of `algorithm`.
    pub async fn has_one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> sqlx::Result<bool> {
        let key = self
            .device_key_query(
                "SELECT key_id, key_json FROM e2e_one_time_keys
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 LIMIT 1"
                    .to_owned(),
                (user_id, device_id, algorithm),
            )
            .await?;
        Ok(key.is_some())
    }

    /// A device's fallback key of `algorithm`, marked used (it stays).
    pub async fn use_fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> sqlx::Result<Option<ClaimedKey>> {
        self.device_key_query(
            "UPDATE e2e_fallback_keys SET used = 1
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
             RETURNING key_id, key_json"
                .to_owned(),
            (user_id, device_id, algorithm),
        )
        .await
    }

    /// Runs `sql` (`$1` user, `$2` device, `$3` algorithm) for at most one
    /// `(key_id, key_json)` row.
    async fn device_key_query(
        &self,
        sql: String,
        (user_id, device_id, algorithm): (&str, &str, &str),
    ) -> sqlx::Result<Option<ClaimedKey>> {
        // Built from literals and the dialect's clauses only.
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(self.pool())
            .await
    }

    /// Records a change of a user's devices or keys at `pos`.
    pub async fn record_device_list_change(&self, user_id: &str, pos: i64) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        insert_change(&mut tx, user_id, pos).await?;
        tx.commit().await
    }

    /// The highest position of a device-list change.
    pub async fn device_lists_high_water(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(stream_ordering), 0) FROM device_list_changes")
            .fetch_one(self.pool())
            .await
    }

    /// The user and everyone who shares a joined room with them.
    pub async fn users_sharing_a_room(&self, user_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT CAST($1 AS TEXT) UNION
             SELECT b.state_key FROM current_state a JOIN current_state b ON b.room_id = a.room_id
             WHERE a.event_type = 'm.room.member' AND a.state_key = $2 AND a.membership = 'join'
               AND b.event_type = 'm.room.member' AND b.membership = 'join'",
        )
        .bind(user_id)
        .bind(user_id)
        .fetch_all(self.pool())
        .await
    }

    /// The changes of users' devices or keys in `(since, to]` that everyone
    /// sharing a room may see (not `only_for` one user), in position order,
    /// at most `limit`: (position, user).
    pub async fn device_list_changes_between(
        &self,
        since: i64,
        to: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<(i64, String)>> {
        sqlx::query_as(
            "SELECT stream_ordering, user_id FROM device_list_changes
             WHERE stream_ordering > $1 AND stream_ordering <= $2 AND only_for IS NULL
             ORDER BY stream_ordering, user_id LIMIT $3",
        )
        .bind(since)
        .bind(to)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// The users whose devices or keys changed in `(since, to]` among
    /// `user_id` and those who share a joined room with them now, and those
    /// of the changes seen by `user_id` alone (`only_for`).
    pub async fn device_list_changes_seen_by(
        &self,
        user_id: &str,
        since: i64,
        to: i64,
    ) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT c.user_id FROM device_list_changes c
             WHERE c.stream_ordering > $1 AND c.stream_ordering <= $2
               AND (c.only_for = $3 OR c.only_for IS NULL AND (c.user_id = $3 OR EXISTS (
                 SELECT 1 FROM current_state a JOIN current_state b ON b.room_id = a.room_id
                 WHERE a.event_type = 'm.room.member' AND a.state_key = $4 AND a.membership = 'join'
                   AND b.event_type = 'm.room.member' AND b.state_key = c.user_id
                   AND b.membership = 'join')))
             ORDER BY c.user_id",
        )
        .bind(since)
        .bind(to)
        .bind(user_id)
        .bind(user_id)
        .fetch_all(self.pool())
        .await
    }

    /// The users whose membership event in one of `rooms` lies in
    /// `(since, to]` (any membership), with the room.
    pub async fn member_events_in(
        &self,
        rooms: &[&str],
        since: i64,
        to: i64,
    ) -> sqlx::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (chunk, size) in super::padded_chunks(rooms, super::PADDED_MAX) {
            let list = super::placeholders(1, size);
            let mut q = self.list_query(format!(
                "SELECT room_id, state_key FROM events
                 WHERE room_id IN ({list}) AND stream_ordering > ${} AND stream_ordering <= ${}
                   AND event_type = 'm.room.member' AND state_key IS NOT NULL",
                size + 1,
                size + 2
            ));
            for id in super::padded_ids(chunk, size) {
                q = q.bind(id);
            }
            let rows = q
                .bind(since)
                .bind(to)
                .try_map(|r: sqlx::any::AnyRow| {
                    use sqlx::Row;
                    Ok((r.try_get("room_id")?, r.try_get("state_key")?))
                })
                .fetch_all(self.pool())
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Of `users`, those joined to at least one of `rooms` now.
    pub async fn joined_to_any(&self, users: &[&str], rooms: &[&str]) -> sqlx::Result<Vec<String>> {
        let mut out = Vec::new();
        if rooms.is_empty() {
            return Ok(out);
        }
        for (users, usize_) in super::padded_chunks(users, super::PADDED_MAX) {
            for (rooms, rsize) in super::padded_chunks(rooms, super::PADDED_MAX) {
                let ulist = super::placeholders(1, usize_);
                let rlist = super::placeholders(usize_ + 1, rsize);
                let mut q = self.list_query(format!(
                    "SELECT DISTINCT state_key FROM current_state
                     WHERE state_key IN ({ulist}) AND room_id IN ({rlist})
                       AND event_type = 'm.room.member' AND membership = 'join'"
                ));
                for id in super::padded_ids(users, usize_).chain(super::padded_ids(rooms, rsize)) {
                    q = q.bind(id);
                }
                let rows = q
                    .try_map(|r: sqlx::any::AnyRow| {
                        use sqlx::Row;
                        r.try_get::<String, _>("state_key")
                    })
                    .fetch_all(self.pool())
                    .await?;
                out.extend(rows);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

async fn insert_change(tx: &mut super::Tx, user_id: &str, pos: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO device_list_changes (stream_ordering, user_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(pos)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What deleting a device removes of its keys. `$1` is the user, `$2` the
/// device.
pub(crate) const DEVICE_CLEANUP: [&str; 3] = [
    "DELETE FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
    "DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2",
    "DELETE FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2",
];

/// [`DEVICE_CLEANUP`] for every device of user `$1` but `$2`.
pub(crate) const OTHER_DEVICES_CLEANUP: [&str; 3] = [
    "DELETE FROM e2e_device_keys WHERE user_id = $1 AND device_id <> $2",
    "DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id <> $2",
    "DELETE FROM e2e_fallback_keys WHERE user_id = $1 AND device_id <> $2",
];

/// [`DEVICE_CLEANUP`] for every device of user `$1`.
pub(crate) const USER_CLEANUP: [&str; 3] = [
    "DELETE FROM e2e_device_keys WHERE user_id = $1",
    "DELETE FROM e2e_one_time_keys WHERE user_id = $1",
    "DELETE FROM e2e_fallback_keys WHERE user_id = $1",
];
