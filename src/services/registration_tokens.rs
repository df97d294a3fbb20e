//! Registration tokens (Synapse's admin API shapes): create, list, update, delete.

use rand::distr::{Alphanumeric, SampleString};

use crate::clock::SharedClock;
use crate::error::{MatrixError, Result};
use crate::storage::{RegistrationTokenRow, Storage};

pub struct RegistrationTokens {
    storage: Storage,
    clock: SharedClock,
}

/// Characters Synapse allows in a token.
/// A token named in a path must be one that could exist: else 400
/// `M_INVALID_PARAM`, not 404.
fn check_format(token: &str) -> Result<()> {
    if valid_token(token) {
        Ok(())
    } else {
        Err(MatrixError::invalid_param(
            "token must be 1-64 characters from A-Z, a-z, 0-9 and ._~-",
        ))
    }
}

fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
}

impl RegistrationTokens {
    pub fn new(storage: Storage, clock: SharedClock) -> Self {
        Self { storage, clock }
    }

    pub async fn create(
        &self,
        token: Option<String>,
        length: Option<i64>,
        uses_allowed: Option<i64>,
        expiry_time: Option<i64>,
    ) -> Result<RegistrationTokenRow> {
        if uses_allowed.is_some_and(|n| n < 0) {
            return Err(MatrixError::invalid_param(
                "uses_allowed must be a non-negative integer or null",
            ));
        }
        if expiry_time.is_some_and(|t| t < self.clock.now_ms()) {
            return Err(MatrixError::invalid_param(
                "expiry_time must not be in the past",
            ));
        }
        // As Synapse: with a token given, `length` is ignored (synadm always
        // sends one).
        let token = match (token, length) {
            (Some(t), _) if valid_token(&t) => t,
            (Some(_), _) => {
                return Err(MatrixError::invalid_param(
                    "token must be 1-64 characters from A-Z, a-z, 0-9 and ._~-",
                ));
            }
            (None, len) => {
                let len = len.unwrap_or(16);
                if !(1..=64).contains(&len) {
                    return Err(MatrixError::invalid_param(
                        "length must be an integer from 1 to 64",
                    ));
                }
                Alphanumeric.sample_string(&mut rand::rng(), len as usize)
            }
        };
        let row = RegistrationTokenRow {
            token,
            uses_allowed,
            pending: 0,
            completed: 0,
            expiry_time,
        };
        if !self.storage.insert_registration_token(&row).await? {
            return Err(MatrixError::invalid_param(format!(
                "Token already exists: {}",
                row.token
            )));
        }
        Ok(row)
    }

    /// All tokens, or only the valid (or invalid) ones.
    pub async fn list(&self, valid: Option<bool>) -> Result<Vec<RegistrationTokenRow>> {
        let now = self.clock.now_ms();
        let all = self.storage.registration_tokens().await?;
        Ok(all
            .into_iter()
            .filter(|t| valid.is_none_or(|v| t.is_valid(now) == v))
            .collect())
    }

    pub async fn get(&self, token: &str) -> Result<RegistrationTokenRow> {
        check_format(token)?;
        self.storage
            .registration_token(token)
            .await?
            .ok_or_else(|| MatrixError::not_found(format!("No such registration token: {token}")))
    }

    /// Changes the fields given (`Some(None)` clears a limit).
    pub async fn update(
        &self,
        token: &str,
        uses_allowed: Option<Option<i64>>,
        expiry_time: Option<Option<i64>>,
    ) -> Result<RegistrationTokenRow> {
        self.get(token).await?;
        if uses_allowed.flatten().is_some_and(|n| n < 0) {
            return Err(MatrixError::invalid_param(
                "uses_allowed must be a non-negative integer or null",
            ));
        }
        if expiry_time
            .flatten()
            .is_some_and(|t| t < self.clock.now_ms())
        {
            return Err(MatrixError::invalid_param(
                "expiry_time must not be in the past",
            ));
        }
        self.storage
            .update_registration_token(token, uses_allowed, expiry_time)
            .await?;
        self.get(token).await
    }

    pub async fn delete(&self, token: &str) -> Result<()> {
        check_format(token)?;
        if !self.storage.delete_registration_token(token).await? {
            return Err(MatrixError::not_found(format!(
                "No such registration token: {token}"
            )));
        }
        Ok(())
    }

    /// Whether a token could be used to register right now.
    pub async fn is_valid(&self, token: &str) -> Result<bool> {
        Ok(self
            .storage
            .registration_token(token)
            .await?
            .is_some_and(|t| t.is_valid(self.clock.now_ms())))
    }
}
