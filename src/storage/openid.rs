//! Table `openid_tokens`: the tokens `POST /user/{userId}/openid/request_token`
//! hands out, which other services check through the federation
//! `/openid/userinfo` until they expire.

use super::Storage;

/// Removes a user's tokens (account deactivation).
pub(crate) const USER_CLEANUP: [&str; 1] = ["DELETE FROM openid_tokens WHERE user_id = $1"];

impl Storage {
    /// Stores a new token and drops every token expired before `now_ms`,
    /// in one transaction (the table holds only live tokens, give or take
    /// those that lapsed since the last request).
    pub async fn insert_openid_token(
        &self,
        token: &str,
        user_id: &str,
        valid_until_ms: i64,
        now_ms: i64,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM openid_tokens WHERE valid_until_ms < $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO openid_tokens (token, user_id, valid_until_ms) VALUES ($1, $2, $3)",
        )
        .bind(token)
        .bind(user_id)
        .bind(valid_until_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// The user a token was issued to, if it is known and valid at `now_ms`.
    pub async fn openid_token_user(
        &self,
        token: &str,
        now_ms: i64,
    ) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT user_id FROM openid_tokens WHERE token = $1 AND valid_until_ms >= $2",
        )
        .bind(token)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await
    }
}
