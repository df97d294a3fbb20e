//! Synapse's user admin API behind its handlers: listing accounts with
//! filters, ordering and paging, creating and modifying one, and the flags
//! admin tools set. Tables `accounts`, `profiles`, `devices` (last seen).

use ruma::{OwnedUserId, UserId};

use crate::error::{MatrixError, Result};
pub use crate::model::accounts::AdminUser;
pub use crate::model::accounts::UserListFilter;
use crate::model::accounts::{AccountType, Requester};
use crate::services::accounts::Registration;
use crate::services::{Services, admin, passwords};
use crate::storage::admin_users::{AccountFlag, order_column};

/// What the listing may be ordered by (Synapse's `order_by` values).
#[derive(Debug, Clone, Copy)]
pub struct UserOrder(&'static str);

impl UserOrder {
    /// The column it orders by.
    pub fn column(self) -> &'static str {
        self.0
    }

    /// 400 `M_INVALID_PARAM` for a value Synapse does not know.
    pub fn parse(order_by: &str) -> Result<Self> {
        order_column(order_by)
            .map(Self)
            .ok_or_else(|| MatrixError::invalid_param("Unknown order_by"))
    }
}

/// Filters, order and page of `GET /_synapse/admin/v2|v3/users`.
pub struct UserListQuery {
    pub filter: UserListFilter,
    pub from: i64,
    pub limit: i64,
}

/// A page of accounts and how many match in all.
pub struct UserPage {
    pub users: Vec<AdminUser>,
    pub total: i64,
}

pub async fn list(s: &Services, q: UserListQuery) -> Result<UserPage> {
    let (rows, total) = s.storage.admin_users(&q.filter, q.from, q.limit).await?;
    Ok(UserPage { users: rows, total })
}

/// The local account `raw` names; 404 when there is none.
pub async fn existing(s: &Services, raw: &str) -> Result<(OwnedUserId, AdminUser)> {
    let user = s.accounts.parse_local_user_id(raw)?;
    let row = admin_user(s, &user)
        .await?
        .ok_or_else(|| MatrixError::not_found("User not found"))?;
    Ok((user, row))
}

async fn admin_user(s: &Services, user: &UserId) -> Result<Option<AdminUser>> {
    Ok(s.storage.admin_user(user.as_str()).await?)
}

/// What `PUT /_synapse/admin/v2/users/{userId}` asks for; `None` leaves a
/// field as it is.
pub struct UserChanges<'a> {
    pub password: Option<&'a str>,
    pub displayname: Option<&'a str>,
    pub avatar_url: Option<&'a str>,
    pub admin: Option<bool>,
    pub deactivated: Option<bool>,
    pub locked: Option<bool>,
    /// Whether a new password logs out every device.
    pub logout_devices: bool,
    /// `Some(None)` clears the type.
    pub user_type: Option<Option<&'a str>>,
}

/// Creates the account with `changes` or applies them to the existing one.
/// Returns whether it was created, and the account as it is now. An admin
/// may not demote themself; reactivating needs a password.
pub async fn create_or_modify(
    s: &Services,
    me: &Requester,
    user: &UserId,
    changes: UserChanges<'_>,
) -> Result<(bool, AdminUser)> {
    if let Some(p) = changes.password {
        passwords::validate(p)?;
    }
    let created = match s.accounts.get(user).await? {
        Some(_) => false,
        None => {
            create_account(s, user, &changes).await?;
            true
        }
    };
    if !created {
        modify_account(s, me, user, &changes).await?;
    }
    set_profile_and_lock(s, user, &changes).await?;
    let row = admin_user(s, user)
        .await?
        .ok_or_else(|| MatrixError::internal("user vanished"))?;
    Ok((created, row))
}

/// Registers the account `changes` describe; its id must be lower case.
async fn create_account(s: &Services, user: &UserId, c: &UserChanges<'_>) -> Result<()> {
    let localpart = s.accounts.validate_localpart(user.localpart())?;
    if localpart != user.localpart() {
        return Err(MatrixError::invalid_param("User ids must be lower case"));
    }
    s.accounts
        .register(Registration {
            localpart: Some(&localpart),
            password: c.password,
            account_type: if c.admin == Some(true) {
                AccountType::Admin
            } else {
                AccountType::User
            },
            displayname: c.displayname.filter(|d| !d.is_empty()),
            user_type: c.user_type.flatten(),
            registration_token: None,
            appservice_id: None,
        })
        .await?;
    Ok(())
}

/// Applies the admin flag, user type, (re)activation and password of
/// `changes` to an existing account.
async fn modify_account(
    s: &Services,
    me: &Requester,
    user: &UserId,
    c: &UserChanges<'_>,
) -> Result<()> {
    if let Some(admin_flag) = c.admin {
        set_admin(s, me, user, admin_flag).await?;
    }
    if let Some(t) = c.user_type {
        s.storage.set_user_type(user.as_str(), t).await?;
    }
    if c.deactivated == Some(true) {
        admin::deactivate_user(s, user, false).await?;
    } else if c.deactivated == Some(false)
        && admin_user(s, user).await?.is_some_and(|u| u.is_deactivated)
    {
        reactivate(s, user, c.password).await?;
    }
    if let Some(p) = c.password {
        reset_password(s, user, p, c.logout_devices).await?;
    }
    Ok(())
}

/// Clears a deactivated account's deactivated and erased flags; a password
/// must come with it.
async fn reactivate(s: &Services, user: &UserId, password: Option<&str>) -> Result<()> {
    if password.is_none() {
        return Err(MatrixError::invalid_param(
            "A password is needed to reactivate an account",
        ));
    }
    s.storage
        .set_account_flag(user.as_str(), AccountFlag::Deactivated, false)
        .await?;
    s.storage
        .set_account_flag(user.as_str(), AccountFlag::Erased, false)
        .await?;
    s.rooms.note_erased(user, false).await?;
    Ok(())
}

/// Sets the display name, avatar and locked flag `changes` give, on a new
/// account as on an existing one.
async fn set_profile_and_lock(s: &Services, user: &UserId, c: &UserChanges<'_>) -> Result<()> {
    if let Some(d) = c.displayname {
        s.profiles.set_displayname(user, Some(d)).await?;
    }
    if let Some(a) = c.avatar_url {
        s.profiles.set_avatar_url(user, Some(a)).await?;
    }
    if let Some(l) = c.locked {
        s.storage
            .set_account_flag(user.as_str(), AccountFlag::Locked, l)
            .await?;
    }
    Ok(())
}

/// Makes the account an admin or not; an admin may not demote themself.
pub async fn set_admin(s: &Services, me: &Requester, user: &UserId, admin: bool) -> Result<()> {
    if user.as_str() == me.user_id && !admin {
        return Err(MatrixError::invalid_param("You may not demote yourself"));
    }
    s.accounts.set_admin(user, admin).await
}

/// Sets the account's password; with `logout_devices` every device of the
/// account is logged out too.
pub async fn reset_password(
    s: &Services,
    user: &UserId,
    password: &str,
    logout_devices: bool,
) -> Result<()> {
    s.accounts.set_password(user, password).await?;
    if logout_devices {
        s.sessions.delete_all_devices(user.as_str(), None).await?;
    }
    Ok(())
}

/// Whether the admin `me` may act as the account (Synapse's login-as): not
/// when it is deactivated, nor as themself.
pub fn check_login_as(me: &Requester, user: &UserId, row: &AdminUser) -> Result<()> {
    if row.is_deactivated {
        return Err(MatrixError::invalid_param("The user is deactivated"));
    }
    if user.as_str() == me.user_id {
        return Err(MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            "Cannot use admin API to login as self",
        ));
    }
    Ok(())
}

/// A new device and token with which `me` acts as the account; the token
/// stops working at `valid_until_ms` when given. Returns the token.
pub async fn login_as(
    s: &Services,
    me: &Requester,
    user: &UserId,
    valid_until_ms: Option<i64>,
) -> Result<String> {
    let session = s
        .sessions
        .create_until(user.as_str(), None, Some("Admin login"), valid_until_ms)
        .await?;
    tracing::info!(admin = %me.user_id, %user, "admin logged in as user");
    Ok(session.access_token)
}

/// Gives the account the device if it lacks it: one with a token nobody
/// holds, as Synapse's device creation. An empty id is 400.
pub async fn ensure_device(s: &Services, user: &UserId, device_id: &str) -> Result<()> {
    if device_id.is_empty() {
        return Err(MatrixError::invalid_param("device_id must not be empty"));
    }
    if s.sessions.device(user.as_str(), device_id).await?.is_none() {
        s.sessions
            .create(user.as_str(), Some(device_id), None)
            .await?;
    }
    Ok(())
}
