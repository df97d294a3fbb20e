//! Table `accounts`: one row per local account.

use super::Storage;
use super::rows::IntFlag;

pub use crate::model::accounts::AccountType;

/// The column as stored (rows decode it with `try_from = "i64"`).
impl From<i64> for AccountType {
    fn from(v: i64) -> Self {
        Self::from_db(v)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    #[sqlx(try_from = "String")]
    pub user_id: ruma::OwnedUserId,
    pub password_hash: Option<String>,
    #[sqlx(try_from = "i64")]
    pub account_type: AccountType,
    #[sqlx(try_from = "IntFlag")]
    pub is_deactivated: bool,
    pub user_type: Option<String>,
    pub created_ts: i64,
    /// Locked by an admin: no login, no authenticated request.
    #[sqlx(try_from = "IntFlag")]
    pub locked: bool,
}

macro_rules! columns {
    () => {
        "user_id, password_hash, account_type, is_deactivated, user_type, created_ts, locked"
    };
}

/// What a new account starts with.
pub struct NewAccount<'a> {
    pub user_id: &'a str,
    pub password_hash: Option<&'a str>,
    pub account_type: AccountType,
    pub user_type: Option<&'a str>,
    pub displayname: Option<&'a str>,
    /// A registration token whose use is counted in the same transaction.
    pub registration_token: Option<&'a str>,
    /// The application service registering it (in its exclusive namespace).
    pub appservice_id: Option<&'a str>,
    /// The time of creation (ms since the epoch): `created_ts`, and the
    /// moment the registration token must not have expired by.
    pub now: i64,
}

pub enum CreateOutcome {
    Created,
    Taken,
    TokenInvalid,
}

impl Storage {
    pub async fn account(&self, user_id: &str) -> sqlx::Result<Option<AccountRow>> {
        const Q: &str = concat!("SELECT ", columns!(), " FROM accounts WHERE user_id = $1");
        sqlx::query_as(Q)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await
    }

    /// Creates the account and its profile, spending the registration token if
    /// one is given, in one transaction.
    pub async fn create_account(&self, new: &NewAccount<'_>) -> sqlx::Result<CreateOutcome> {
        let mut tx = self.begin().await?;
        if let Some(token) = new.registration_token {
            let used = sqlx::query(
                "UPDATE registration_tokens SET completed = completed + 1
                 WHERE token = $1 AND (expiry_time IS NULL OR expiry_time > $2)
                   AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
            )
            .bind(token)
            .bind(new.now)
            .execute(&mut *tx)
            .await?;
            if used.rows_affected() == 0 {
                return Ok(CreateOutcome::TokenInvalid);
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO accounts (user_id, password_hash, account_type, is_deactivated, user_type, created_ts, appservice_id)
             VALUES ($1, $2, $3, 0, $4, $5, $6)",
        )
        .bind(new.user_id)
        .bind(new.password_hash)
        .bind(new.account_type as i64)
        .bind(new.user_type)
        .bind(new.now)
        .bind(new.appservice_id)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if super::Dialect::is_unique_violation(&e) => return Ok(CreateOutcome::Taken),
            Err(e) => return Err(e),
        }
        sqlx::query(
            "INSERT INTO profiles (user_id, displayname, avatar_url) VALUES ($1, $2, NULL)",
        )
        .bind(new.user_id)
        .bind(new.displayname)
        .execute(&mut *tx)
        .await?;
        super::profiles::write_user_words(&mut tx, new.user_id, new.displayname).await?;
        tx.commit().await?;
        Ok(CreateOutcome::Created)
    }

    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> sqlx::Result<bool> {
        let r = sqlx::query("UPDATE accounts SET password_hash = $1 WHERE user_id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Turns a guest account into a full user with this password hash, in
    /// one statement; `false` when the account is not a live guest's.
    pub async fn upgrade_guest(&self, user_id: &str, hash: &str) -> sqlx::Result<bool> {
        self.changing_auth(async {
            let r = sqlx::query(
                "UPDATE accounts SET password_hash = $1, account_type = $2
                 WHERE user_id = $3 AND account_type = $4 AND is_deactivated = 0",
            )
            .bind(hash)
            .bind(AccountType::User as i64)
            .bind(user_id)
            .bind(AccountType::Guest as i64)
            .execute(self.pool())
            .await?;
            Ok(r.rows_affected() > 0)
        })
        .await
    }

    pub async fn set_account_type(&self, user_id: &str, ty: AccountType) -> sqlx::Result<bool> {
        self.changing_auth(async {
            let r = sqlx::query("UPDATE accounts SET account_type = $1 WHERE user_id = $2")
                .bind(ty as i64)
                .bind(user_id)
                .execute(self.pool())
                .await?;
            Ok(r.rows_affected() > 0)
        })
        .await
    }

    /// Marks the account deactivated and removes its devices, tokens,
    /// pending to-device messages, keys, key backups, pushers and OpenID tokens, in one transaction.
    pub async fn deactivate_account(&self, user_id: &str) -> sqlx::Result<()> {
        self.changing_auth(async {
            let mut tx = self.begin().await?;
            sqlx::query(
                "UPDATE accounts SET is_deactivated = 1, password_hash = NULL WHERE user_id = $1",
            )
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM access_tokens WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            // The to-device clean-up reads the devices: before they go.
            for q in super::to_device::USER_CLEANUP
                .iter()
                .chain(&["DELETE FROM devices WHERE user_id = $1"])
                .chain(&super::e2e_keys::USER_CLEANUP)
            {
                sqlx::query(*q).bind(user_id).execute(&mut *tx).await?;
            }
            for q in super::key_backup::USER_CLEANUP
                .iter()
                .chain(&super::cross_signing::USER_CLEANUP)
                .chain(&super::pushers::USER_CLEANUP)
                .chain(&super::openid::USER_CLEANUP)
            {
                sqlx::query(*q).bind(user_id).execute(&mut *tx).await?;
            }
            tx.commit().await
        })
        .await
    }

    /// Number of accounts, deactivated ones included.
    pub async fn count_accounts(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(self.pool())
            .await
    }
}
