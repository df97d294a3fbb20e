//! Tables `devices` and `access_tokens`.

use super::Storage;
use super::rows::IntFlag;
use crate::model::accounts::{AccountType, Requester};
use crate::model::devices::Device;

/// The model's device under the name storage's callers know.
pub type DeviceRow = Device;

/// A `devices` row as read.
#[derive(sqlx::FromRow)]
struct DeviceRecord {
    #[sqlx(try_from = "String")]
    user_id: ruma::OwnedUserId,
    #[sqlx(try_from = "String")]
    device_id: ruma::OwnedDeviceId,
    display_name: Option<String>,
    last_seen_ip: Option<String>,
    last_seen_user_agent: Option<String>,
    last_seen_ts: Option<i64>,
}

impl From<DeviceRecord> for Device {
    fn from(r: DeviceRecord) -> Self {
        Device {
            user_id: r.user_id,
            device_id: r.device_id,
            display_name: r.display_name,
            last_seen_ip: r.last_seen_ip,
            last_seen_user_agent: r.last_seen_user_agent,
            last_seen_ts: r.last_seen_ts,
        }
    }
}

/// An access token joined with its account, as read.
#[derive(sqlx::FromRow)]
struct RequesterRecord {
    /// A stored id that does not parse is a decode error, not a panic later.
    #[sqlx(try_from = "String")]
    user_id: ruma::OwnedUserId,
    device_id: String,
    #[sqlx(try_from = "i64")]
    account_type: AccountType,
    #[sqlx(try_from = "IntFlag")]
    is_deactivated: bool,
    #[sqlx(try_from = "IntFlag")]
    is_locked: bool,
    valid_until_ms: Option<i64>,
}

macro_rules! columns {
    () => {
        "user_id, device_id, display_name, last_seen_ip, last_seen_user_agent, last_seen_ts"
    };
}

/// A last-seen record waiting to be written.
pub struct LastSeen {
    pub user_id: String,
    pub device_id: String,
    pub ip: String,
    pub user_agent: String,
    pub ts: i64,
}

impl Storage {
    /// Resolves an access token, joining the account so the account type is
    /// always current (an admin promotion applies to the next request).
    pub async fn requester_by_token(&self, token: &str) -> sqlx::Result<Option<Requester>> {
        let row: Option<RequesterRecord> = sqlx::query_as(
            "SELECT t.user_id, t.device_id, a.account_type, a.is_deactivated, a.locked AS is_locked,
                    t.valid_until_ms
             FROM access_tokens t JOIN accounts a ON a.user_id = t.user_id
             WHERE t.token = $1",
        )
        .bind(token)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| Requester {
            user_id: r.user_id.to_string(),
            user: r.user_id,
            device_id: r.device_id,
            account_type: r.account_type,
            is_deactivated: r.is_deactivated,
            is_locked: r.is_locked,
            valid_until_ms: r.valid_until_ms,
            fresh: true,
            app_service: None,
        }))
    }

    /// Creates (or reuses) a device and issues a new access token for it. An
    /// existing device keeps its other tokens only if `keep_tokens`. `now`
    /// (ms since the epoch) is the new rows' creation time.
    pub async fn create_session(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token: &str,
        valid_until_ms: Option<i64>,
        now: i64,
    ) -> sqlx::Result<()> {
        self.changing_auth(async {
            let mut tx = self.begin().await?;
            let exists = sqlx::query("SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if exists {
                // Logging in again with a device id replaces that device's session.
                sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .execute(&mut *tx)
                    .await?;
                if let Some(name) = display_name {
                    sqlx::query(
                        "UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3",
                    )
                    .bind(name)
                    .bind(user_id)
                    .bind(device_id)
                    .execute(&mut *tx)
                    .await?;
                }
            } else {
                sqlx::query(
                    "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES ($1, $2, $3, $4)",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(display_name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("INSERT INTO access_tokens (token, user_id, device_id, created_ts, valid_until_ms) VALUES ($1, $2, $3, $4, $5)")
                .bind(token)
                .bind(user_id)
                .bind(device_id)
                .bind(now)
                .bind(valid_until_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
        .await
    }

    pub async fn devices(&self, user_id: &str) -> sqlx::Result<Vec<DeviceRow>> {
        const Q: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM devices WHERE user_id = $1 ORDER BY created_ts, device_id"
        );
        let rows: Vec<DeviceRecord> = sqlx::query_as(Q)
            .bind(user_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(Device::from).collect())
    }

    pub async fn device(&self, user_id: &str, device_id: &str) -> sqlx::Result<Option<DeviceRow>> {
        const Q: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM devices WHERE user_id = $1 AND device_id = $2"
        );
        let row: Option<DeviceRecord> = sqlx::query_as(Q)
            .bind(user_id)
            .bind(device_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(Device::from))
    }

    pub async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3",
        )
        .bind(name)
        .bind(user_id)
        .bind(device_id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Deletes devices, their tokens, to-device inboxes, keys, pushers and
    /// cross-signing signatures (of them and by them) in one transaction.
    /// `None` deletes all of the user's devices except `except`.
    pub async fn delete_devices(
        &self,
        user_id: &str,
        devices: Option<&[String]>,
        except: Option<&str>,
    ) -> sqlx::Result<()> {
        self.changing_auth(async {
            let mut tx = self.begin().await?;
            match devices {
                Some(ids) => {
                    for id in ids {
                        for q in [
                            "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
                            "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
                        ]
                        .iter()
                        .chain(&super::to_device::DEVICE_CLEANUP)
                        .chain(&super::e2e_keys::DEVICE_CLEANUP)
                        .chain(&super::cross_signing::DEVICE_CLEANUP)
                        .chain(&super::pushers::DEVICE_CLEANUP)
                        .copied()
                        {
                            sqlx::query(q)
                                .bind(user_id)
                                .bind(id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                None => {
                    // The signatures and the to-device clean-up first: they
                    // find the devices in `devices`.
                    for q in super::cross_signing::OTHER_DEVICES_CLEANUP
                        .iter()
                        .chain(&super::to_device::OTHER_DEVICES_CLEANUP)
                        .chain(&[
                            "DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2",
                            "DELETE FROM devices WHERE user_id = $1 AND device_id <> $2",
                        ])
                        .chain(&super::e2e_keys::OTHER_DEVICES_CLEANUP)
                        .chain(&super::pushers::OTHER_DEVICES_CLEANUP)
                        .copied()
                    {
                        sqlx::query(q)
                            .bind(user_id)
                            .bind(except.unwrap_or(""))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            tx.commit().await
        })
        .await
    }

    /// Writes a batch of last-seen records in one transaction.
    pub async fn write_last_seen(&self, batch: &[LastSeen]) -> sqlx::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for s in batch {
            sqlx::query(
                "UPDATE devices SET last_seen_ip = $1, last_seen_user_agent = $2, last_seen_ts = $3
                 WHERE user_id = $4 AND device_id = $5",
            )
            .bind(&s.ip)
            .bind(&s.user_agent)
            .bind(s.ts)
            .bind(&s.user_id)
            .bind(&s.device_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}
