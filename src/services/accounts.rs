//! Accounts: user id rules, registration, passwords, deactivation, admin flag.

use ruma::{OwnedServerName, OwnedUserId, UserId};

use crate::clock::SharedClock;
use crate::error::{MatrixError, Result};
use crate::services::passwords::{self, PasswordHasherService};
use crate::storage::accounts::NewAccount;
use crate::storage::{AccountRow, AccountType, Storage};

pub struct Accounts {
    storage: Storage,
    hasher: PasswordHasherService,
    server_name: OwnedServerName,
    clock: SharedClock,
    /// Deactivation deletes every device: a device-list change (absent
    /// outside the server, e.g. in the CLI).
    device_lists: Option<std::sync::Arc<crate::services::e2e_keys::DeviceLists>>,
}

/// Everything needed to create an account.
pub struct Registration<'a> {
    /// Already validated and lowercased (see [`Accounts::validate_localpart`]);
    /// `None` picks a numeric one.
    pub localpart: Option<&'a str>,
    pub password: Option<&'a str>,
    pub account_type: AccountType,
    pub displayname: Option<&'a str>,
    pub user_type: Option<&'a str>,
    /// A registration token to spend in the same transaction.
    pub registration_token: Option<&'a str>,
    /// The application service registering the account.
    pub appservice_id: Option<&'a str>,
}

impl Accounts {
    pub fn new(
        storage: Storage,
        hasher: PasswordHasherService,
        server_name: OwnedServerName,
        clock: SharedClock,
    ) -> Self {
        Self {
            storage,
            hasher,
            server_name,
            clock,
            device_lists: None,
        }
    }

    /// Reports deactivations as device-list changes.
    pub fn with_device_lists(
        mut self,
        lists: std::sync::Arc<crate::services::e2e_keys::DeviceLists>,
    ) -> Self {
        self.device_lists = Some(lists);
        self
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }

    /// Parses a user id from a path or body that must name a local user:
    /// malformed or remote ids are 400 `M_INVALID_PARAM`.
    pub fn parse_local_user_id(&self, raw: &str) -> Result<OwnedUserId> {
        let user_id = UserId::parse(raw)
            .map_err(|e| MatrixError::invalid_param(format!("Invalid user id {raw:?}: {e}")))?;
        if !self.is_local(&user_id) {
            return Err(MatrixError::invalid_param(format!(
                "{user_id} is not a local user of this server"
            )));
        }
        Ok(user_id)
    }

    /// Checks a requested localpart (lowercasing it first, as Synapse does):
    /// only a-z, 0-9 and `._=-/+`, not starting with `_`, and a full id of at
    /// most 255 bytes. Returns the normalized localpart.
    pub fn validate_localpart(&self, requested: &str) -> Result<String> {
        let lp = requested.to_lowercase();
        if lp.is_empty() {
            return Err(MatrixError::invalid_username("User ID cannot be empty"));
        }
        if !lp
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'))
        {
            return Err(MatrixError::invalid_username(
                "User ID can only contain characters a-z, 0-9, or '=_-./+'",
            ));
        }
        if lp.starts_with('_') {
            return Err(MatrixError::invalid_username(
                "User ID may not begin with '_'",
            ));
        }
        if lp.len() + self.server_name.as_str().len() + 2 > 255 {
            return Err(MatrixError::invalid_username(
                "User ID may not be longer than 255 characters",
            ));
        }
        Ok(lp)
    }

    pub fn user_id(&self, localpart: &str) -> Result<OwnedUserId> {
        UserId::parse(format!("@{localpart}:{}", self.server_name))
            .map_err(|e| MatrixError::invalid_username(format!("Invalid user id: {e}")))
    }

    pub async fn get(&self, user_id: &UserId) -> Result<Option<AccountRow>> {
        Ok(self.storage.account(user_id.as_str()).await?)
    }

    /// The account, or 404 `M_NOT_FOUND`.
    pub async fn get_existing(&self, user_id: &UserId) -> Result<AccountRow> {
        self.get(user_id)
            .await?
            .ok_or_else(|| MatrixError::not_found(format!("User {user_id} does not exist")))
    }

    /// Whether the localpart (already validated) is free.
    pub async fn is_available(&self, localpart: &str) -> Result<bool> {
        Ok(self
            .storage
            .account(self.user_id(localpart)?.as_str())
            .await?
            .is_none())
    }

    /// Creates the account and its profile (display name defaulting to the
    /// localpart). Errors: `M_USER_IN_USE`, password policy, and `M_FORBIDDEN`
    /// when the registration token is no longer valid.
    pub async fn register(&self, reg: Registration<'_>) -> Result<OwnedUserId> {
        let password_hash = match reg.password {
            Some(p) => {
                passwords::validate(p)?;
                Some(self.hasher.hash(p).await?)
            }
            None => None,
        };
        let mut generated = reg.localpart.is_none();
        let mut candidate = match reg.localpart {
            Some(lp) => lp.to_owned(),
            None => (self.storage.count_accounts().await? + 1).to_string(),
        };
        loop {
            let user_id = self.user_id(&candidate)?;
            let outcome = self
                .storage
                .create_account(&NewAccount {
                    user_id: user_id.as_str(),
                    password_hash: password_hash.as_deref(),
                    account_type: reg.account_type,
                    user_type: reg.user_type,
                    displayname: Some(reg.displayname.unwrap_or(&candidate)),
                    registration_token: reg.registration_token,
                    appservice_id: reg.appservice_id,
                    now: self.clock.now_ms(),
                })
                .await?;
            match outcome {
                crate::storage::accounts::CreateOutcome::Created => return Ok(user_id),
                crate::storage::accounts::CreateOutcome::TokenInvalid => {
                    return Err(MatrixError::forbidden(
                        "Registration token is invalid or used up",
                    ));
                }
                crate::storage::accounts::CreateOutcome::Taken if generated => {
                    // Numeric ids: skip over taken numbers.
                    candidate = (candidate.parse::<u64>().unwrap_or(0) + 1).to_string();
                    generated = true;
                }
                crate::storage::accounts::CreateOutcome::Taken => {
                    return Err(MatrixError::user_in_use());
                }
            }
        }
    }

    /// Upgrades the guest account `user_id` to a full user with `password`
    /// (policy checked), keeping its user id, profile, devices and rooms.
    /// 403 `M_FORBIDDEN` when it is no longer a guest's.
    pub async fn upgrade_guest(&self, user_id: &UserId, password: &str) -> Result<()> {
        passwords::validate(password)?;
        let hash = self.hasher.hash(password).await?;
        if !self.storage.upgrade_guest(user_id.as_str(), &hash).await? {
            return Err(MatrixError::forbidden(
                "This account is not a guest account any more",
            ));
        }
        Ok(())
    }

    /// Checks a login: unknown user or wrong password is 403 `M_FORBIDDEN`,
    /// deactivated is 403 `M_USER_DEACTIVATED`.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<AccountRow> {
        let invalid = || MatrixError::forbidden("Invalid username or password");
        let account = self.get(user_id).await?.ok_or_else(invalid)?;
        if account.is_deactivated {
            return Err(MatrixError::new(
                http::StatusCode::FORBIDDEN,
                ruma::api::error::ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        let Some(hash) = &account.password_hash else {
            return Err(invalid());
        };
        if !self.hasher.verify(password, hash).await? {
            return Err(invalid());
        }
        Ok(account)
    }

    /// Sets a new password (policy checked). Does not touch sessions.
    pub async fn set_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        passwords::validate(password)?;
        let hash = self.hasher.hash(password).await?;
        if !self
            .storage
            .set_password_hash(user_id.as_str(), &hash)
            .await?
        {
            return Err(MatrixError::not_found(format!(
                "User {user_id} does not exist"
            )));
        }
        Ok(())
    }

    /// Deactivates the account; its devices, tokens and key backups go with it.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        self.storage.deactivate_account(user_id.as_str()).await?;
        if let Some(lists) = &self.device_lists {
            lists.changed(user_id).await?;
        }
        Ok(())
    }

    pub async fn set_admin(&self, user_id: &UserId, admin: bool) -> Result<()> {
        let ty = if admin {
            AccountType::Admin
        } else {
            AccountType::User
        };
        if !self.storage.set_account_type(user_id.as_str(), ty).await? {
            return Err(MatrixError::not_found(format!(
                "User {user_id} does not exist"
            )));
        }
        Ok(())
    }

    /// Resolves a login identifier (localpart, any case, or a full user id).
    pub fn resolve_login_user(&self, user: &str) -> Result<OwnedUserId> {
        let forbidden = || MatrixError::forbidden("Invalid username or password");
        if user.starts_with('@') {
            let parsed = UserId::parse(user.to_lowercase()).map_err(|_| forbidden())?;
            if !self.is_local(&parsed) {
                return Err(forbidden());
            }
            Ok(parsed)
        } else {
            self.user_id(&user.to_lowercase()).map_err(|_| forbidden())
        }
    }
}
