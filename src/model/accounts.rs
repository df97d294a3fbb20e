//! Who an account is and who is calling.

/// Account types, numbered as Dendrite's `account_type` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountType {
    User = 1,
    Guest = 2,
    Admin = 3,
    AppService = 4,
}

impl AccountType {
    pub fn from_db(v: i64) -> Self {
        match v {
            2 => Self::Guest,
            3 => Self::Admin,
            4 => Self::AppService,
            _ => Self::User,
        }
    }
}

/// Who made a request: the owner of an access token, with the account type as
/// it is in the database right now.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user_id: String,
    /// `user_id` as a ruma id (checked when the token was resolved).
    pub user: ruma::OwnedUserId,
    pub device_id: String,
    pub account_type: AccountType,
    pub is_deactivated: bool,
    pub is_locked: bool,
    /// When the token stops working (admin login-as tokens), in ms.
    pub valid_until_ms: Option<i64>,
    /// Read from the database for this request, not from the token cache
    /// (whose entries may miss a change made to the database by hand).
    pub fresh: bool,
    /// The application service whose `as_token` made the request (its
    /// id); `device_id` is then empty unless the service named a device.
    pub app_service: Option<String>,
}

impl Requester {
    pub fn is_admin(&self) -> bool {
        self.account_type == AccountType::Admin
    }
    pub fn is_guest(&self) -> bool {
        self.account_type == AccountType::Guest
    }
    pub fn user_id(&self) -> ruma::OwnedUserId {
        self.user.clone()
    }
}

/// One account as the admin APIs show it (the account, its profile and when
/// it was last seen).
#[derive(Debug, Clone)]
pub struct AdminUser {
    pub user_id: ruma::OwnedUserId,
    pub account_type: AccountType,
    pub is_deactivated: bool,
    pub erased: bool,
    pub locked: bool,
    pub suspended: bool,
    pub shadow_banned: bool,
    pub user_type: Option<String>,
    /// Milliseconds since the epoch.
    pub created_ts: i64,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub last_seen_ts: Option<i64>,
    /// The application service that registered the account.
    pub appservice_id: Option<String>,
}

/// Filters of `GET /_synapse/admin/v2|v3/users`.
#[derive(Debug, Default)]
pub struct UserListFilter {
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub guests: bool,
    pub admins: Option<bool>,
    pub deactivated: Option<bool>,
    pub locked: bool,
    /// User types to leave out (`""`: users without a type).
    pub not_user_types: Vec<String>,
    /// Column to order by (checked against the allowed list: see
    /// `services::admin_users::UserOrder`).
    pub order_by: &'static str,
    pub backwards: bool,
}
