//! OpenID tokens (`POST /user/{userId}/openid/request_token`): a token
//! proving to another service (a widget, an integration manager, Element
//! Call) who the user is; that service asks the federation
//! `/openid/userinfo` with it.

use rand::distr::{Alphanumeric, SampleString};

use crate::clock::SharedClock;
use crate::error::Result;
use crate::storage::Storage;

/// How long a token is valid, in seconds (Synapse's hour).
pub const EXPIRES_IN_SECS: u64 = 3600;

pub struct OpenId {
    storage: Storage,
    clock: SharedClock,
}

/// A token issued and how long it stays valid.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in_secs: u64,
}

impl OpenId {
    pub fn new(storage: Storage, clock: SharedClock) -> Self {
        Self { storage, clock }
    }

    /// Issues a token for `user_id` (the caller checked it is the requester).
    pub async fn issue(&self, user_id: &str) -> Result<IssuedToken> {
        let token = Alphanumeric.sample_string(&mut rand::rng(), 24);
        let now = self.clock.now_ms();
        let until = now + i64::try_from(EXPIRES_IN_SECS * 1000).unwrap_or(i64::MAX);
        self.storage
            .insert_openid_token(&token, user_id, until, now)
            .await?;
        Ok(IssuedToken {
            access_token: token,
            expires_in_secs: EXPIRES_IN_SECS,
        })
    }

    /// The user a token was issued to, while it is valid.
    pub async fn user_for(&self, token: &str) -> Result<Option<String>> {
        Ok(self
            .storage
            .openid_token_user(token, self.clock.now_ms())
            .await?)
    }
}
