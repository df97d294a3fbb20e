//! Server-side key backups (spec: "Server-side key backups"): a user's
//! backup versions, each with opaque `auth_data`, and the room keys stored
//! in them. Keys go only into the latest version; a stored key is replaced
//! only by a better one (verified, then a lower first message index, then
//! fewer forwards); every change moves the version's etag.
//!
//! A user's writes run one at a time (one of [`LOCK_STRIPES`] locks, by
//! user), as Synapse's per-user lock: a key upload cannot interleave with
//! the creation of a newer version on PostgreSQL, whose transactions do not
//! lock each other out as SQLite's do.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use ruma::api::client::backup::{BackupAlgorithm, KeyBackupData};
use ruma::api::error::{ErrorKind, WrongRoomKeysVersionErrorData};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, RoomId};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::storage::Storage;
use crate::storage::key_backup::{BackupKey, KeyScope, KeysWrite};

/// How many locks a user's backup writes are spread over.
const LOCK_STRIPES: usize = 64;

/// A backup version's info: what `GET /room_keys/version[/{version}]`
/// answers.
pub struct VersionInfo {
    /// `{"algorithm", "auth_data"}`.
    pub algorithm: Raw<BackupAlgorithm>,
    pub count: u64,
    pub etag: String,
    pub version: String,
}

/// The etag and key count a write of keys answers.
pub struct KeysState {
    pub etag: String,
    pub count: u64,
}

/// A version's keys by room, then session.
pub type KeysByRoom = BTreeMap<OwnedRoomId, BTreeMap<String, Raw<KeyBackupData>>>;

/// A key to store: its place and its data.
pub struct KeyUpload<'a> {
    pub room_id: &'a RoomId,
    pub session_id: &'a str,
    pub data: &'a Raw<KeyBackupData>,
}

impl<'a> KeyUpload<'a> {
    /// The keys of a room's sessions.
    pub fn of_room(
        room_id: &'a RoomId,
        sessions: &'a BTreeMap<String, Raw<KeyBackupData>>,
    ) -> impl Iterator<Item = Self> + 'a {
        sessions.iter().map(move |(session_id, data)| Self {
            room_id,
            session_id,
            data,
        })
    }
}

/// A version's `algorithm` and `auth_data` as a request's body holds them.
#[derive(Deserialize)]
struct VersionBody {
    algorithm: Option<serde_json::Value>,
    auth_data: Option<Box<RawValue>>,
    version: Option<serde_json::Value>,
}

pub struct KeyBackup {
    storage: Storage,
    locks: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl KeyBackup {
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    async fn lock(&self, user: &Requester) -> tokio::sync::MutexGuard<'_, ()> {
        let hash = self.hasher.hash_one(&user.user_id);
        let stripe = usize::try_from(hash % LOCK_STRIPES as u64).unwrap_or(0);
        self.locks[stripe].lock().await
    }

    /// Creates the user's next backup version, which becomes the latest.
    pub async fn create_version(
        &self,
        user: &Requester,
        body: &Raw<BackupAlgorithm>,
    ) -> Result<String> {
        let (algorithm, auth_data, _) = parse_version_body(body)?;
        let _guard = self.lock(user).await;
        let version = self
            .storage
            .create_backup_version(&user.user_id, &algorithm, auth_data.get())
            .await?;
        Ok(version.to_string())
    }

    /// A version's info, or the latest's with `None`; 404 `M_NOT_FOUND`
    /// when there is none.
    pub async fn version_info(
        &self,
        user: &Requester,
        version: Option<&str>,
    ) -> Result<VersionInfo> {
        let number = match version {
            Some(v) => Some(parse_version(v)?),
            None => None,
        };
        let row = self
            .storage
            .backup_version(&user.user_id, number)
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown backup version"))?;
        #[derive(serde::Serialize)]
        struct AlgorithmWithData<'a> {
            algorithm: &'a str,
            auth_data: &'a RawValue,
        }
        let auth_data = RawValue::from_string(row.auth_data).map_err(MatrixError::internal)?;
        let algorithm = Raw::new(&AlgorithmWithData {
            algorithm: &row.algorithm,
            auth_data: &auth_data,
        })
        .map_err(MatrixError::internal)?
        .cast_unchecked();
        Ok(VersionInfo {
            algorithm,
            count: count(row.count),
            etag: row.etag.to_string(),
            version: row.version.to_string(),
        })
    }

    /// Replaces a version's `auth_data`. The body's `version`, if given,
    /// must be the path's, and its `algorithm` the version's: 400
    /// `M_INVALID_PARAM` otherwise (as Synapse).
    pub async fn update_version(
        &self,
        user: &Requester,
        version: &str,
        body: &Raw<BackupAlgorithm>,
    ) -> Result<()> {
        let (algorithm, auth_data, body_version) = parse_version_body(body)?;
        match &body_version {
            None => {}
            Some(serde_json::Value::String(v)) if v == version => {}
            Some(_) => {
                return Err(MatrixError::invalid_param(
                    "The version in the body does not match the path",
                ));
            }
        }
        let number = parse_version(version)?;
        let _guard = self.lock(user).await;
        let current = self
            .storage
            .backup_version(&user.user_id, Some(number))
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown backup version"))?;
        if current.algorithm != algorithm {
            return Err(MatrixError::invalid_param(
                "A backup version's algorithm cannot be changed",
            ));
        }
        match self
            .storage
            .update_backup_version(&user.user_id, number, auth_data.get())
            .await?
        {
            true => Ok(()),
            false => Err(MatrixError::not_found("Unknown backup version")),
        }
    }

    /// Deletes a version and its keys; it is 404 afterwards.
    pub async fn delete_version(&self, user: &Requester, version: &str) -> Result<()> {
        let number = parse_version(version)?;
        let _guard = self.lock(user).await;
        match self
            .storage
            .delete_backup_version(&user.user_id, number)
            .await?
        {
            true => Ok(()),
            false => Err(MatrixError::not_found("Unknown backup version")),
        }
    }

    /// Stores keys into `version`, which must be the user's latest: 403
    /// `M_WRONG_ROOM_KEYS_VERSION` (with `current_version`) for an older
    /// one, 404 for one that is not theirs. Every key is checked before
    /// anything is written.
    pub async fn put_keys(
        &self,
        user: &Requester,
        version: &str,
        keys: &[KeyUpload<'_>],
    ) -> Result<KeysState> {
        let checked: Vec<(String, KeyMeta)> = keys
            .iter()
            .map(|k| check_key(k.data))
            .collect::<Result<_>>()?;
        let rows: Vec<BackupKey<'_>> = keys
            .iter()
            .zip(&checked)
            .map(|(k, (text, meta))| BackupKey {
                room_id: k.room_id.as_str(),
                session_id: k.session_id,
                first_message_index: meta.first_message_index,
                forwarded_count: meta.forwarded_count,
                is_verified: meta.is_verified,
                key_data: text,
            })
            .collect();
        let number = parse_version(version)?;
        let _guard = self.lock(user).await;
        let written = self
            .storage
            .put_backup_keys(&user.user_id, number, &rows)
            .await?;
        keys_state(written)
    }

    /// The keys of a version: all, a room's, or one session's (`room` and
    /// `session` given); 404 when the version is not the user's.
    pub async fn keys(
        &self,
        user: &Requester,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<KeysByRoom> {
        let number = parse_version(version)?;
        if self
            .storage
            .backup_version(&user.user_id, Some(number))
            .await?
            .is_none()
        {
            return Err(MatrixError::not_found("Unknown backup version"));
        }
        let rows = self
            .storage
            .backup_keys(&user.user_id, number, scope(room, session))
            .await?;
        let mut out = KeysByRoom::new();
        for row in rows {
            let room_id = OwnedRoomId::try_from(row.room_id).map_err(MatrixError::internal)?;
            let data = RawValue::from_string(row.key_data).map_err(MatrixError::internal)?;
            out.entry(room_id)
                .or_default()
                .insert(row.session_id, Raw::from_json(data));
        }
        Ok(out)
    }

    /// Deletes the keys of a version: all, a room's, or one session's.
    pub async fn delete_keys(
        &self,
        user: &Requester,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<KeysState> {
        let number = parse_version(version)?;
        let _guard = self.lock(user).await;
        let deleted = self
            .storage
            .delete_backup_keys(&user.user_id, number, scope(room, session))
            .await?;
        keys_state(deleted)
    }
}

fn scope<'a>(room: Option<&'a RoomId>, session: Option<&'a str>) -> KeyScope<'a> {
    KeyScope {
        room_id: room.map(RoomId::as_str),
        session_id: session,
    }
}

/// A version number: versions are integers, so any other text names none.
fn parse_version(version: &str) -> Result<i64> {
    version
        .parse::<i64>()
        .map_err(|_| MatrixError::not_found("Unknown backup version"))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn keys_state(written: KeysWrite) -> Result<KeysState> {
    match written {
        KeysWrite::Done { etag, count: n } => Ok(KeysState {
            etag: etag.to_string(),
            count: count(n),
        }),
        KeysWrite::NotLatest(current) => Err(MatrixError::new(
            http::StatusCode::FORBIDDEN,
            ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(
                current.to_string(),
            )),
            "Keys go only into the current backup version",
        )),
        KeysWrite::Unknown => Err(MatrixError::not_found("Unknown backup version")),
    }
}

/// The `algorithm` (a string), `auth_data` (any JSON: sytest sends a
/// string) and `version` (if any) of a version body; `algorithm` or
/// `auth_data` missing is 400 `M_BAD_JSON`.
fn parse_version_body(
    body: &Raw<BackupAlgorithm>,
) -> Result<(String, Box<RawValue>, Option<serde_json::Value>)> {
    let parsed: VersionBody = body
        .deserialize_as_unchecked()
        .map_err(|e| MatrixError::bad_json(format!("Invalid backup version: {e}")))?;
    let Some(serde_json::Value::String(algorithm)) = parsed.algorithm else {
        return Err(MatrixError::bad_json("'algorithm' must be a string"));
    };
    let auth_data = parsed
        .auth_data
        .ok_or_else(|| MatrixError::bad_json("'auth_data' is required"))?;
    Ok((algorithm, auth_data, parsed.version))
}

/// What decides whether a key replaces a stored one.
struct KeyMeta {
    first_message_index: i64,
    forwarded_count: i64,
    is_verified: bool,
}

/// A key's data checked, as the JSON text to store (its four fields only)
/// and its metadata. A missing or malformed field is 400 `M_BAD_JSON`,
/// except a non-boolean `is_verified`: 400 `M_INVALID_PARAM`, as Synapse.
fn check_key(data: &Raw<KeyBackupData>) -> Result<(String, KeyMeta)> {
    #[derive(Deserialize)]
    struct KeyIn {
        first_message_index: Option<serde_json::Value>,
        forwarded_count: Option<serde_json::Value>,
        is_verified: Option<serde_json::Value>,
        session_data: Option<Box<RawValue>>,
    }
    let k: KeyIn = data
        .deserialize_as_unchecked()
        .map_err(|e| MatrixError::bad_json(format!("Invalid key backup data: {e}")))?;
    let uint = |v: &Option<serde_json::Value>, name: &str| -> Result<i64> {
        v.as_ref()
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| ruma::UInt::new(n).map(|_| n))
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| {
                MatrixError::bad_json(format!("'{name}' must be a non-negative integer"))
            })
    };
    let first_message_index = uint(&k.first_message_index, "first_message_index")?;
    let forwarded_count = uint(&k.forwarded_count, "forwarded_count")?;
    let is_verified = match k.is_verified {
        Some(serde_json::Value::Bool(b)) => b,
        Some(_) => {
            return Err(MatrixError::invalid_param(
                "'is_verified' must be a boolean",
            ));
        }
        None => return Err(MatrixError::bad_json("'is_verified' is required")),
    };
    let session_data = k
        .session_data
        .ok_or_else(|| MatrixError::bad_json("'session_data' is required"))?;
    #[derive(serde::Serialize)]
    struct KeyOut<'a> {
        first_message_index: i64,
        forwarded_count: i64,
        is_verified: bool,
        session_data: &'a RawValue,
    }
    let text = serde_json::to_string(&KeyOut {
        first_message_index,
        forwarded_count,
        is_verified,
        session_data: &session_data,
    })
    .map_err(MatrixError::internal)?;
    Ok((
        text,
        KeyMeta {
            first_message_index,
            forwarded_count,
            is_verified,
        },
    ))
}
