//! Tables `remote_device_lists`, `remote_devices` and
//! `remote_cross_signing_keys`: other servers' users' devices and keys, as
//! last fetched from their server.

use super::Storage;

/// A remote user's device list as fetched.
#[derive(Debug, Clone, Default)]
pub struct RemoteDeviceList {
    /// `(device_id, display_name, key_json)`.
    pub devices: Vec<(String, Option<String>, String)>,
    /// `(key_type, key_json)`: `master`, `self_signing`.
    pub cross_signing: Vec<(String, String)>,
}

impl Storage {
    /// Replaces what is stored of `user_id`'s devices and cross-signing
    /// keys, in one transaction.
    pub async fn replace_remote_devices(
        &self,
        user_id: &str,
        stream_id: i64,
        fetched_ts: i64,
        list: &RemoteDeviceList,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        for table in ["remote_devices", "remote_cross_signing_keys"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE user_id = $1"
            )))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        for (device_id, name, json) in &list.devices {
            sqlx::query(
                "INSERT INTO remote_devices (user_id, device_id, display_name, key_json)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(name.as_deref())
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        for (key_type, json) in &list.cross_signing {
            sqlx::query(
                "INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json)
                 VALUES ($1, $2, $3)",
            )
            .bind(user_id)
            .bind(key_type)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO remote_device_lists (user_id, stream_id, fetched_ts) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id,
               fetched_ts = excluded.fetched_ts",
        )
        .bind(user_id)
        .bind(stream_id)
        .bind(fetched_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// A remote user's stored device list; `None` when never fetched.
    pub async fn remote_devices(&self, user_id: &str) -> sqlx::Result<Option<RemoteDeviceList>> {
        let known: Option<i64> =
            sqlx::query_scalar("SELECT stream_id FROM remote_device_lists WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?;
        if known.is_none() {
            return Ok(None);
        }
        let devices: Vec<(String, Option<String>, String)> = sqlx::query_as(
            "SELECT device_id, display_name, key_json FROM remote_devices
             WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        let cross_signing: Vec<(String, String)> = sqlx::query_as(
            "SELECT key_type, key_json FROM remote_cross_signing_keys
             WHERE user_id = $1 ORDER BY key_type",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        Ok(Some(RemoteDeviceList {
            devices,
            cross_signing,
        }))
    }
}
