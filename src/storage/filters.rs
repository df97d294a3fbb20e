//! Table `filters`: sync filters uploaded by users, numbered per user.

use super::{Dialect, Storage};

impl Storage {
    /// Stores a filter and returns its id (the next number for this user).
    pub async fn insert_filter(&self, user_id: &str, filter_json: &str) -> sqlx::Result<i64> {
        loop {
            let id: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_one(self.pool())
            .await?;
            let r = sqlx::query(
                "INSERT INTO filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)",
            )
            .bind(user_id)
            .bind(id)
            .bind(filter_json)
            .execute(self.pool())
            .await;
            match r {
                Ok(_) => return Ok(id),
                // Two uploads raced for the same number: take the next one.
                Err(e) if Dialect::is_unique_violation(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn filter(&self, user_id: &str, filter_id: i64) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2")
            .bind(user_id)
            .bind(filter_id)
            .fetch_optional(self.pool())
            .await
    }
}
