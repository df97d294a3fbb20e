//! Table `registration_tokens`: tokens that allow registration when
//! `registration.requires_token` is on.

use super::{Dialect, Storage};

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct RegistrationTokenRow {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub pending: i64,
    pub completed: i64,
    pub expiry_time: Option<i64>,
}

impl RegistrationTokenRow {
    /// Usable now: not expired and not used up (pending uses count).
    pub fn is_valid(&self, now_ms: i64) -> bool {
        self.expiry_time.is_none_or(|t| t > now_ms)
            && self
                .uses_allowed
                .is_none_or(|n| self.pending + self.completed < n)
    }
}

macro_rules! columns {
    () => {
        "token, uses_allowed, pending, completed, expiry_time"
    };
}

impl Storage {
    pub async fn registration_tokens(&self) -> sqlx::Result<Vec<RegistrationTokenRow>> {
        const Q: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM registration_tokens ORDER BY token"
        );
        sqlx::query_as(Q).fetch_all(self.pool()).await
    }

    pub async fn registration_token(
        &self,
        token: &str,
    ) -> sqlx::Result<Option<RegistrationTokenRow>> {
        const Q: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM registration_tokens WHERE token = $1"
        );
        sqlx::query_as(Q)
            .bind(token)
            .fetch_optional(self.pool())
            .await
    }

    /// Returns false if the token already exists.
    pub async fn insert_registration_token(&self, t: &RegistrationTokenRow) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time)
             VALUES ($1, $2, 0, 0, $3)",
        )
        .bind(&t.token)
        .bind(t.uses_allowed)
        .bind(t.expiry_time)
        .execute(self.pool())
        .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if Dialect::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Updates the fields given (`Some(None)` clears a limit), in one transaction.
    pub async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<Option<i64>>,
        expiry_time: Option<Option<i64>>,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        if let Some(v) = uses_allowed {
            sqlx::query("UPDATE registration_tokens SET uses_allowed = $1 WHERE token = $2")
                .bind(v)
                .bind(token)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(v) = expiry_time {
            sqlx::query("UPDATE registration_tokens SET expiry_time = $1 WHERE token = $2")
                .bind(v)
                .bind(token)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    pub async fn delete_registration_token(&self, token: &str) -> sqlx::Result<bool> {
        let r = sqlx::query("DELETE FROM registration_tokens WHERE token = $1")
            .bind(token)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }
}
