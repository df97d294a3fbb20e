//! Server-side key backups: `key_backup_versions` (a user's backup
//! versions, numbered per user) and `key_backup_sessions` (the room keys
//! stored in each). Every write is one transaction.

use sqlx::AssertSqlSafe;

use super::Storage;

/// A backup version as its info answers show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackupVersionRow {
    pub version: i64,
    pub algorithm: String,
    /// `auth_data` as JSON text.
    pub auth_data: String,
    pub etag: i64,
    /// How many keys the version holds.
    pub count: i64,
}

/// One room key to store: its place and the metadata that decides whether
/// it replaces a stored one.
pub struct BackupKey<'a> {
    pub room_id: &'a str,
    pub session_id: &'a str,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// The whole key object as JSON text.
    pub key_data: &'a str,
}

/// One stored room key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackupKeyRow {
    pub room_id: String,
    pub session_id: String,
    pub key_data: String,
}

/// What a write of keys found: done (the version's etag and count after
/// it), or the version is not the user's latest (`NotLatest` with the
/// latest one) or none of theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysWrite {
    Done { etag: i64, count: i64 },
    NotLatest(i64),
    Unknown,
}

/// Which keys of a version a read or delete covers: all (no room), a
/// room's (no session), or one session's.
#[derive(Debug, Clone, Copy)]
pub struct KeyScope<'a> {
    pub room_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
}

impl<'a> KeyScope<'a> {
    /// The `WHERE` clause after `user_id = $1 AND version = $2`, and the
    /// values of its `$3` and `$4`.
    fn clause(self) -> (&'static str, Vec<&'a str>) {
        match (self.room_id, self.session_id) {
            (Some(room), Some(session)) => {
                (" AND room_id = $3 AND session_id = $4", vec![room, session])
            }
            (Some(room), None) => (" AND room_id = $3", vec![room]),
            _ => ("", Vec::new()),
        }
    }
}

const VERSION_INFO: &str = "SELECT v.version, v.algorithm, v.auth_data, v.etag,
       (SELECT COUNT(*) FROM key_backup_sessions s
        WHERE s.user_id = v.user_id AND s.version = v.version) AS count
     FROM key_backup_versions v WHERE v.user_id = $1 AND v.deleted = 0";

/// The stored key is replaced by `excluded` when the new one is verified
/// and the stored is not, or, verification equal, it starts at a lower
/// message index, or, that equal too, it was forwarded fewer times.
const PUT_KEY: &str = "INSERT INTO key_backup_sessions
     (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, key_data)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
       first_message_index = excluded.first_message_index,
       forwarded_count = excluded.forwarded_count,
       is_verified = excluded.is_verified,
       key_data = excluded.key_data
     WHERE excluded.is_verified > key_backup_sessions.is_verified
        OR (excluded.is_verified = key_backup_sessions.is_verified
            AND (excluded.first_message_index < key_backup_sessions.first_message_index
                 OR (excluded.first_message_index = key_backup_sessions.first_message_index
                     AND excluded.forwarded_count < key_backup_sessions.forwarded_count)))";

impl Storage {
    /// Creates the user's next backup version (one past every number they
    /// ever had) and returns its number.
    pub async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &str,
    ) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM key_backup_versions WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(algorithm)
        .bind(auth_data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// A version of the user's (not deleted), or their latest with `None`.
    pub async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> sqlx::Result<Option<BackupVersionRow>> {
        match version {
            Some(v) => {
                sqlx::query_as(AssertSqlSafe(format!("{VERSION_INFO} AND v.version = $2")))
                    .bind(user_id)
                    .bind(v)
                    .fetch_optional(self.pool())
                    .await
            }
            None => {
                sqlx::query_as(AssertSqlSafe(format!(
                    "{VERSION_INFO} ORDER BY v.version DESC LIMIT 1"
                )))
                .bind(user_id)
                .fetch_optional(self.pool())
                .await
            }
        }
    }

    /// Replaces a version's `auth_data`; `false` when it is not the user's.
    pub async fn update_backup_version(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE key_backup_versions SET auth_data = $3
             WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .bind(auth_data)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Marks a version deleted and deletes its keys; `false` when it is not
    /// the user's.
    pub async fn delete_backup_version(&self, user_id: &str, version: i64) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        let r = sqlx::query(
            "UPDATE key_backup_versions SET deleted = 1
             WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores keys into `version` if it is the user's latest, each replacing
    /// a stored key of its session only when it is better (see [`PUT_KEY`]).
    /// The etag moves when any key was written.
    pub async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[BackupKey<'_>],
    ) -> sqlx::Result<KeysWrite> {
        let mut tx = self.begin().await?;
        let latest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM key_backup_versions WHERE user_id = $1 AND deleted = 0",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        let Some(latest) = latest else {
            return Ok(KeysWrite::Unknown);
        };
        if latest != version {
            return Ok(match version_exists(&mut tx, user_id, version).await? {
                false => KeysWrite::Unknown,
                true => KeysWrite::NotLatest(latest),
            });
        }
        let mut changed = false;
        for k in keys {
            let r = sqlx::query(PUT_KEY)
                .bind(user_id)
                .bind(version)
                .bind(k.room_id)
                .bind(k.session_id)
                .bind(k.first_message_index)
                .bind(k.forwarded_count)
                .bind(i64::from(k.is_verified))
                .bind(k.key_data)
                .execute(&mut *tx)
                .await?;
            changed |= r.rows_affected() > 0;
        }
        let done = version_etag_count(&mut tx, user_id, version, changed).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// The keys of a version in `scope`, by room and session.
    pub async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: KeyScope<'_>,
    ) -> sqlx::Result<Vec<BackupKeyRow>> {
        let (clause, params) = scope.clause();
        let sql = format!(
            "SELECT room_id, session_id, key_data FROM key_backup_sessions
             WHERE user_id = $1 AND version = $2{clause} ORDER BY room_id, session_id"
        );
        let mut q = sqlx::query_as(AssertSqlSafe(sql))
            .bind(user_id)
            .bind(version);
        for p in params {
            q = q.bind(p);
        }
        q.fetch_all(self.pool()).await
    }

    /// Deletes the keys of a version in `scope`; `Unknown` when the version
    /// is not the user's. The etag moves when any key was deleted.
    pub async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: KeyScope<'_>,
    ) -> sqlx::Result<KeysWrite> {
        let mut tx = self.begin().await?;
        if !version_exists(&mut tx, user_id, version).await? {
            return Ok(KeysWrite::Unknown);
        }
        let (clause, params) = scope.clause();
        let sql =
            format!("DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2{clause}");
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(user_id).bind(version);
        for p in params {
            q = q.bind(p);
        }
        let r = q.execute(&mut *tx).await?;
        let done = version_etag_count(&mut tx, user_id, version, r.rows_affected() > 0).await?;
        tx.commit().await?;
        Ok(done)
    }
}

/// Whether `version` is one of the user's (not deleted).
async fn version_exists(tx: &mut super::Tx, user_id: &str, version: i64) -> sqlx::Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM key_backup_versions
         WHERE user_id = $1 AND version = $2 AND deleted = 0",
    )
    .bind(user_id)
    .bind(version)
    .fetch_one(&mut **tx)
    .await?;
    Ok(n > 0)
}

/// Moves a version's etag when its keys `changed`, then reads its etag and
/// key count.
async fn version_etag_count(
    tx: &mut super::Tx,
    user_id: &str,
    version: i64,
    changed: bool,
) -> sqlx::Result<KeysWrite> {
    if changed {
        sqlx::query(
            "UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut **tx)
        .await?;
    }
    let (etag, count): (i64, i64) = sqlx::query_as(
        "SELECT v.etag, (SELECT COUNT(*) FROM key_backup_sessions s
                         WHERE s.user_id = v.user_id AND s.version = v.version)
         FROM key_backup_versions v WHERE v.user_id = $1 AND v.version = $2",
    )
    .bind(user_id)
    .bind(version)
    .fetch_one(&mut **tx)
    .await?;
    Ok(KeysWrite::Done { etag, count })
}

/// What deactivating user `$1` removes: every backup version and key.
pub(crate) const USER_CLEANUP: [&str; 2] = [
    "DELETE FROM key_backup_sessions WHERE user_id = $1",
    "DELETE FROM key_backup_versions WHERE user_id = $1",
];

/// Run by a room's purge before its keys are deleted (`key_backup_sessions`
/// is among `purge::ROOM_TABLES`): the etag of every version holding keys
/// of room `$1` moves, as those keys go.
pub(crate) const ROOM_PURGE_ETAGS: &str = "UPDATE key_backup_versions SET etag = etag + 1
     WHERE EXISTS (SELECT 1 FROM key_backup_sessions s
                   WHERE s.room_id = $1 AND s.user_id = key_backup_versions.user_id
                     AND s.version = key_backup_versions.version)";
