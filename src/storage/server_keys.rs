//! Tables `server_signing_keys` and `server_key_responses`: other servers'
//! published signing keys, as fetched from them or from a notary.

use super::Storage;

/// One known key of another server.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ServerKeyRow {
    pub key_id: String,
    /// Unpadded base64.
    pub public_key: String,
    /// Until when a current key may be used (ms).
    pub valid_until_ts: i64,
    /// When an old key stopped being used (ms); `None` for a current key.
    pub expired_ts: Option<i64>,
}

/// A server's latest key answer, as it was signed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerKeyResponseRow {
    pub body: String,
    pub valid_until_ts: i64,
    pub fetched_ts: i64,
}

impl Storage {
    /// Stores a server's key answer (`body`, canonical JSON) and the keys
    /// it lists, in one transaction. A key already known keeps its latest
    /// validity; one listed as old gets its expiry.
    pub async fn store_server_keys(
        &self,
        server_name: &str,
        response: &ServerKeyResponseRow,
        keys: &[ServerKeyRow],
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO server_key_responses (server_name, body, valid_until_ts, fetched_ts)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (server_name) DO UPDATE SET body = excluded.body,
               valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts",
        )
        .bind(server_name)
        .bind(&response.body)
        .bind(response.valid_until_ts)
        .bind(response.fetched_ts)
        .execute(&mut *tx)
        .await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO server_signing_keys
                   (server_name, key_id, public_key, valid_until_ts, expired_ts)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (server_name, key_id) DO UPDATE SET
                   public_key = excluded.public_key,
                   valid_until_ts = excluded.valid_until_ts,
                   expired_ts = excluded.expired_ts",
            )
            .bind(server_name)
            .bind(&key.key_id)
            .bind(&key.public_key)
            .bind(key.valid_until_ts)
            .bind(key.expired_ts)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Every key known for a server.
    pub async fn server_keys(&self, server_name: &str) -> sqlx::Result<Vec<ServerKeyRow>> {
        sqlx::query_as(
            "SELECT key_id, public_key, valid_until_ts, expired_ts FROM server_signing_keys
             WHERE server_name = $1 ORDER BY key_id",
        )
        .bind(server_name)
        .fetch_all(self.pool())
        .await
    }

    /// A server's latest stored key answer.
    pub async fn server_key_response(
        &self,
        server_name: &str,
    ) -> sqlx::Result<Option<ServerKeyResponseRow>> {
        sqlx::query_as(
            "SELECT body, valid_until_ts, fetched_ts FROM server_key_responses
             WHERE server_name = $1",
        )
        .bind(server_name)
        .fetch_optional(self.pool())
        .await
    }
}
