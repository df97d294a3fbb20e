//! Devices and access tokens: log in, authenticate a request, log out, and the
//! last-seen bookkeeping (IP, user agent, time) behind `GET /devices` and whois.
//!
//! Last-seen records are kept in memory and written in one batch every few
//! seconds, not once per request; reads merge the pending records in, so they
//! are visible at once.
//!
//! Resolved tokens are cached: an entry is used while the storage's auth
//! epoch has not moved since it was read (every change to tokens, devices
//! or account flags moves it) and for at most [`TOKEN_CACHE_TTL`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::distr::{Alphanumeric, SampleString};
use ruma::api::error::{ErrorKind, UnknownTokenErrorData};

use crate::clock::SharedClock;
use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::model::devices::Device;
use crate::services::e2e_keys::DeviceLists;
use crate::storage::Storage;
use crate::storage::devices::LastSeen;

pub const LAST_SEEN_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Tokens kept resolved in memory, and for how long at most (a bound on
/// changes made to the database by another process).
const TOKEN_CACHE_SIZE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(16_384).unwrap();
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(30);

pub struct Sessions {
    storage: Storage,
    clock: SharedClock,
    /// Device creation, renaming and deletion are device-list changes.
    device_lists: Arc<DeviceLists>,
    pending_last_seen: Mutex<HashMap<(String, String), LastSeen>>,
    tokens: Mutex<lru::LruCache<String, CachedToken>>,
    /// Hits and misses of `tokens`.
    token_lookups: crate::metrics::CacheLookups,
}

struct CachedToken {
    requester: Requester,
    /// The storage's auth epoch before the token was read.
    epoch: u64,
    read_at: Instant,
}

/// A freshly issued login.
pub struct NewSession {
    pub device_id: String,
    pub access_token: String,
}

pub fn generate_device_id() -> String {
    Alphanumeric
        .sample_string(&mut rand::rng(), 10)
        .to_ascii_uppercase()
}

pub fn generate_access_token() -> String {
    format!("myl_{}", Alphanumeric.sample_string(&mut rand::rng(), 40))
}

impl Sessions {
    pub fn new(storage: Storage, clock: SharedClock, device_lists: Arc<DeviceLists>) -> Arc<Self> {
        Arc::new(Self {
            storage,
            clock,
            device_lists,
            pending_last_seen: Mutex::new(HashMap::new()),
            tokens: Mutex::new(lru::LruCache::new(TOKEN_CACHE_SIZE)),
            token_lookups: crate::metrics::CacheLookups::default(),
        })
    }

    /// Issues a token for a new or existing device of the user.
    pub async fn create(
        &self,
        user_id: &str,
        device_id: Option<&str>,
        display_name: Option<&str>,
    ) -> Result<NewSession> {
        self.create_until(user_id, device_id, display_name, None)
            .await
    }

    /// [`Sessions::create`] with a token that stops working at
    /// `valid_until_ms` (when given).
    pub async fn create_until(
        &self,
        user_id: &str,
        device_id: Option<&str>,
        display_name: Option<&str>,
        valid_until_ms: Option<i64>,
    ) -> Result<NewSession> {
        let device_id = device_id
            .map(str::to_owned)
            .unwrap_or_else(generate_device_id);
        let access_token = generate_access_token();
        self.storage
            .create_session(
                user_id,
                &device_id,
                display_name,
                &access_token,
                valid_until_ms,
                self.clock.now_ms(),
            )
            .await?;
        self.device_lists.changed(&parse_user(user_id)?).await?;
        Ok(NewSession {
            device_id,
            access_token,
        })
    }

    /// The guest account whose live access token this is (read from the
    /// database now), or `None`: an unknown token, or a full, deactivated or
    /// locked account's.
    pub async fn guest_of_token(&self, token: &str) -> Result<Option<ruma::OwnedUserId>> {
        Ok(self
            .storage
            .requester_by_token(token)
            .await?
            .filter(|r| r.is_guest() && !r.is_deactivated && !r.is_locked)
            .filter(|r| r.valid_until_ms.is_none_or(|t| t > self.clock.now_ms()))
            .map(|r| r.user))
    }

    /// `POST /refresh` (v1.3), given the body's `refresh_token`: Myelin
    /// hands out no refresh tokens (`/login` and `/register` never return
    /// one; access tokens do not expire), so every refresh token is
    /// unknown, 401 `M_UNKNOWN_TOKEN` (`soft_logout` false: log in again).
    /// As Synapse: 400 `M_MISSING_PARAM` without the field, 400
    /// `M_INVALID_PARAM` when it is not a string.
    pub fn refresh(
        &self,
        refresh_token: Option<&serde_json::Value>,
    ) -> Result<std::convert::Infallible> {
        let token = match refresh_token {
            None => return Err(MatrixError::missing_param("Missing params: refresh_token")),
            Some(serde_json::Value::String(token)) => token,
            Some(_) => return Err(MatrixError::invalid_param("Invalid param: refresh_token")),
        };
        tracing::debug!(
            len = token.len(),
            "a refresh token was presented; none is ever issued"
        );
        Err(MatrixError::new(
            http::StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(UnknownTokenErrorData::new()),
            "Unknown refresh token",
        ))
    }

    /// Resolves a token to its requester and records the device as seen.
    /// `fresh`: read the account from the database now (admin endpoints:
    /// a promotion or demotion made by hand in the database applies to the
    /// next request); otherwise a cached entry may be used.
    pub async fn authenticate(
        &self,
        token: &str,
        ip: &str,
        user_agent: &str,
        fresh: bool,
    ) -> Result<Requester> {
        let cached = if fresh {
            None
        } else {
            self.cached_requester(token)
        };
        let requester = match cached {
            Some(r) => r,
            None => {
                let epoch = self.storage.auth_epoch();
                let r = self
                    .storage
                    .requester_by_token(token)
                    .await?
                    .ok_or_else(MatrixError::unknown_token)?;
                let entry = CachedToken {
                    requester: r.clone(),
                    epoch,
                    read_at: Instant::now(),
                };
                self.tokens.lock().put(token.to_owned(), entry);
                r
            }
        };
        if requester.is_deactivated {
            return Err(MatrixError::unknown_token());
        }
        if requester
            .valid_until_ms
            .is_some_and(|t| t <= self.clock.now_ms())
        {
            let mut data = UnknownTokenErrorData::new();
            data.soft_logout = true;
            return Err(MatrixError::new(
                http::StatusCode::UNAUTHORIZED,
                ErrorKind::UnknownToken(data),
                "Access token has expired",
            ));
        }
        if requester.is_locked {
            return Err(MatrixError::new(
                http::StatusCode::UNAUTHORIZED,
                ErrorKind::UserLocked,
                "User account has been locked",
            ));
        }
        self.pending_last_seen.lock().insert(
            (requester.user_id.clone(), requester.device_id.clone()),
            LastSeen {
                user_id: requester.user_id.clone(),
                device_id: requester.device_id.clone(),
                ip: ip.to_owned(),
                user_agent: user_agent.to_owned(),
                ts: self.clock.now_ms(),
            },
        );
        Ok(requester)
    }

    /// The cached owner of a token, if the entry is still current.
    fn cached_requester(&self, token: &str) -> Option<Requester> {
        let mut tokens = self.tokens.lock();
        let Some(entry) = tokens.get(token) else {
            self.token_lookups.record(false);
            return None;
        };
        if entry.epoch == self.storage.auth_epoch() && entry.read_at.elapsed() < TOKEN_CACHE_TTL {
            let mut r = entry.requester.clone();
            r.fresh = false;
            self.token_lookups.record(true);
            return Some(r);
        }
        tokens.pop(token);
        self.token_lookups.record(false);
        None
    }

    /// Whether the requester is a server admin according to the database now
    /// (a cached requester's account type may predate a change made by hand).
    pub async fn admin_now(&self, r: &Requester) -> Result<bool> {
        if r.fresh {
            return Ok(r.is_admin());
        }
        Ok(self.storage.account(&r.user_id).await?.is_some_and(|a| {
            a.account_type == crate::storage::AccountType::Admin && !a.is_deactivated
        }))
    }

    /// Writes the pending last-seen records. Called periodically and at shutdown.
    pub async fn flush_last_seen(&self) -> Result<()> {
        let batch: Vec<LastSeen> = std::mem::take(&mut *self.pending_last_seen.lock())
            .into_values()
            .collect();
        self.storage.write_last_seen(&batch).await?;
        Ok(())
    }

    /// The device with its pending last-seen record.
    fn merge_pending(&self, mut d: Device) -> Device {
        if let Some(seen) = self
            .pending_last_seen
            .lock()
            .get(&(d.user_id.to_string(), d.device_id.to_string()))
        {
            d.last_seen_ip = Some(seen.ip.clone());
            d.last_seen_user_agent = Some(seen.user_agent.clone());
            d.last_seen_ts = Some(seen.ts);
        }
        d
    }

    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>> {
        Ok(self
            .storage
            .devices(user_id)
            .await?
            .into_iter()
            .map(|d| self.merge_pending(d))
            .collect())
    }

    pub async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>> {
        Ok(self
            .storage
            .device(user_id, device_id)
            .await?
            .map(|d| self.merge_pending(d)))
    }

    pub async fn rename_device(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<bool> {
        let renamed = self
            .storage
            .set_device_display_name(user_id, device_id, name)
            .await?;
        if renamed {
            self.device_lists.changed(&parse_user(user_id)?).await?;
        }
        Ok(renamed)
    }

    fn forget_pending(&self, user_id: &str, devices: Option<&[String]>, except: Option<&str>) {
        self.pending_last_seen.lock().retain(|(u, d), _| {
            u != user_id
                || match devices {
                    Some(ids) => !ids.contains(d),
                    None => except == Some(d.as_str()),
                }
        });
    }

    /// Deletes the given devices with their tokens, inboxes and keys: a
    /// device-list change.
    pub async fn delete_devices(&self, user_id: &str, devices: &[String]) -> Result<()> {
        self.storage
            .delete_devices(user_id, Some(devices), None)
            .await?;
        self.forget_pending(user_id, Some(devices), None);
        self.device_lists.changed(&parse_user(user_id)?).await
    }

    /// Deletes every device of the user except `keep` (all of them if `None`).
    pub async fn delete_all_devices(&self, user_id: &str, keep: Option<&str>) -> Result<()> {
        self.storage.delete_devices(user_id, None, keep).await?;
        self.forget_pending(user_id, None, keep);
        self.device_lists.changed(&parse_user(user_id)?).await
    }
}

impl crate::services::workers::CacheSizes for Sessions {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("tokens", self.tokens.lock().len()),
            ("pending_last_seen", self.pending_last_seen.lock().len()),
        ]
    }

    fn cache_lookups(&self) -> Vec<(&'static str, &crate::metrics::CacheLookups)> {
        vec![("tokens", &self.token_lookups)]
    }
}

fn parse_user(user_id: &str) -> Result<ruma::OwnedUserId> {
    ruma::OwnedUserId::try_from(user_id).map_err(MatrixError::internal)
}
