//! Queries behind the Synapse user admin API: listing accounts with filters,
//! ordering and paging, and the flags admin tools set.

use ruma::OwnedUserId;
use sqlx::{FromRow, Row};

use super::Storage;
use super::rows::IntFlag;

/// One account as the admin listing shows it.
pub use crate::model::accounts::AdminUser as AdminUserRow;
use crate::model::accounts::{AccountType, AdminUser};

/// An account joined with its profile and last-seen time, as read.
#[derive(sqlx::FromRow)]
struct AdminUserRecord {
    #[sqlx(try_from = "String")]
    user_id: ruma::OwnedUserId,
    #[sqlx(try_from = "i64")]
    account_type: AccountType,
    #[sqlx(try_from = "IntFlag")]
    is_deactivated: bool,
    #[sqlx(try_from = "IntFlag")]
    erased: bool,
    #[sqlx(try_from = "IntFlag")]
    locked: bool,
    #[sqlx(try_from = "IntFlag")]
    suspended: bool,
    #[sqlx(try_from = "IntFlag")]
    shadow_banned: bool,
    user_type: Option<String>,
    created_ts: i64,
    displayname: Option<String>,
    avatar_url: Option<String>,
    last_seen_ts: Option<i64>,
    appservice_id: Option<String>,
}

impl From<AdminUserRecord> for AdminUser {
    fn from(r: AdminUserRecord) -> Self {
        AdminUser {
            user_id: r.user_id,
            account_type: r.account_type,
            is_deactivated: r.is_deactivated,
            erased: r.erased,
            locked: r.locked,
            suspended: r.suspended,
            shadow_banned: r.shadow_banned,
            user_type: r.user_type,
            created_ts: r.created_ts,
            displayname: r.displayname,
            avatar_url: r.avatar_url,
            last_seen_ts: r.last_seen_ts,
            appservice_id: r.appservice_id,
        }
    }
}

pub use crate::model::accounts::UserListFilter;

const SELECT: &str =
    "SELECT a.user_id, a.account_type, a.is_deactivated, a.erased, a.locked, a.suspended,
        a.shadow_banned, a.user_type, a.created_ts, a.appservice_id, p.displayname, p.avatar_url,
        (SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = a.user_id) AS last_seen_ts
    FROM accounts a LEFT JOIN profiles p ON p.user_id = a.user_id";

/// Maps Synapse's `order_by` values onto columns; `None` for unknown ones.
pub fn order_column(order_by: &str) -> Option<&'static str> {
    Some(match order_by {
        "name" => "a.user_id",
        "is_guest" => "a.account_type = 2",
        "admin" => "a.account_type = 3",
        "user_type" => "a.user_type",
        "deactivated" => "a.is_deactivated",
        "shadow_banned" => "a.shadow_banned",
        "displayname" => "p.displayname",
        "avatar_url" => "p.avatar_url",
        "creation_ts" => "a.created_ts",
        "last_seen_ts" => "last_seen_ts",
        "locked" => "a.locked",
        _ => return None,
    })
}

impl Storage {
    pub async fn admin_user(&self, user_id: &str) -> sqlx::Result<Option<AdminUserRow>> {
        let q = format!("{SELECT} WHERE a.user_id = $1");
        let row: Option<AdminUserRecord> = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(AdminUser::from))
    }

    /// A page of accounts and the total matching the filter.
    pub async fn admin_users(
        &self,
        f: &UserListFilter,
        offset: i64,
        limit: i64,
    ) -> sqlx::Result<(Vec<AdminUserRow>, i64)> {
        let like = |v: &Option<String>| v.as_deref().map(super::like_contains).unwrap_or_default();
        let tri = |v: Option<bool>| match v {
            None => -1i64,
            Some(b) => b as i64,
        };
        // $7 lists the excluded types as ",bot,support," (",," for none).
        let excluded = self
            .dialect
            .contains("$7", "(',' || COALESCE(a.user_type, '') || ',')");
        let condition = format!(
            "WHERE ($1 = '' OR LOWER(a.user_id) LIKE $1 ESCAPE '\\')
            AND ($2 = '' OR LOWER(a.user_id) LIKE $2 ESCAPE '\\'
                 OR LOWER(COALESCE(p.displayname, '')) LIKE $2 ESCAPE '\\')
            AND ($3 = 1 OR a.account_type <> 2)
            AND ($4 = -1 OR (a.account_type = 3) = ($4 = 1))
            AND ($5 = -1 OR a.is_deactivated = $5)
            AND ($6 = 1 OR a.locked = 0)
            AND ($7 = '' OR NOT {excluded})"
        );
        let not_types = if f.not_user_types.is_empty() {
            String::new()
        } else {
            format!(",{},", f.not_user_types.join(","))
        };
        let count_q = format!(
            "SELECT COUNT(*) AS n FROM accounts a LEFT JOIN profiles p ON p.user_id = a.user_id {condition}"
        );
        let bind = |q: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>| {
            q.bind(like(&f.user_id))
                .bind(like(&f.name))
                .bind(f.guests as i64)
                .bind(tri(f.admins))
                .bind(tri(f.deactivated))
                .bind(f.locked as i64)
                .bind(not_types.clone())
        };
        let total: i64 = bind(sqlx::query(sqlx::AssertSqlSafe(count_q)))
            .try_map(|r: sqlx::any::AnyRow| r.try_get("n"))
            .fetch_one(self.pool())
            .await?;
        let dir = if f.backwards { "DESC" } else { "ASC" };
        let page_q = format!(
            "{SELECT} {condition} ORDER BY {} {dir}, a.user_id {dir} LIMIT $8 OFFSET $9",
            f.order_by
        );
        let rows = bind(sqlx::query(sqlx::AssertSqlSafe(page_q)))
            .bind(limit)
            .bind(offset)
            .try_map(|r| AdminUserRecord::from_row(&r).map(AdminUser::from))
            .fetch_all(self.pool())
            .await?;
        Ok((rows, total))
    }

    pub async fn set_account_flag(
        &self,
        user_id: &str,
        flag: AccountFlag,
        value: bool,
    ) -> sqlx::Result<()> {
        self.changing_auth(async {
            let q = match flag {
                AccountFlag::Erased => "UPDATE accounts SET erased = $1 WHERE user_id = $2",
                AccountFlag::Locked => "UPDATE accounts SET locked = $1 WHERE user_id = $2",
                AccountFlag::Suspended => "UPDATE accounts SET suspended = $1 WHERE user_id = $2",
                AccountFlag::Deactivated => {
                    "UPDATE accounts SET is_deactivated = $1 WHERE user_id = $2"
                }
            };
            sqlx::query(q)
                .bind(value as i64)
                .bind(user_id)
                .execute(self.pool())
                .await?;
            Ok(())
        })
        .await
    }

    /// The accounts marked erased (deactivated with `erase`).
    pub async fn erased_users(&self) -> sqlx::Result<Vec<OwnedUserId>> {
        let raw: Vec<String> = sqlx::query_scalar("SELECT user_id FROM accounts WHERE erased = 1")
            .fetch_all(self.pool())
            .await?;
        raw.into_iter()
            .map(|r| super::rows::parse_id("user_id", r))
            .collect()
    }

    pub async fn set_user_type(&self, user_id: &str, user_type: Option<&str>) -> sqlx::Result<()> {
        sqlx::query("UPDATE accounts SET user_type = $1 WHERE user_id = $2")
            .bind(user_type)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
pub enum AccountFlag {
    Erased,
    Locked,
    Suspended,
    Deactivated,
}
