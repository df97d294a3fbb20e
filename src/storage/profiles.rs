//! Tables `profiles` (display name and avatar of local users),
//! `profile_fields` (their custom profile fields, the value as JSON text) and
//! `user_directory_words` (the words the user directory finds each by).

use sqlx::AssertSqlSafe;

use super::Storage;
use crate::model::user_words::user_words;

/// Words per multi-row `INSERT` (two binds each).
const WORDS_PER_INSERT: usize = 256;

/// Replaces the user directory words of `user_id` with those of its
/// localpart and `displayname`.
pub(super) async fn write_user_words(
    tx: &mut super::Tx,
    user_id: &str,
    displayname: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM user_directory_words WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    let words: Vec<String> = user_words(user_id, displayname).into_iter().collect();
    for chunk in words.chunks(WORDS_PER_INSERT) {
        let rows: Vec<String> = (2..chunk.len() + 2)
            .map(|i| format!("(${i}, $1)"))
            .collect();
        let sql = format!(
            "INSERT INTO user_directory_words (word, user_id) VALUES {}",
            rows.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(user_id);
        for word in chunk {
            q = q.bind(word.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A local user's profile as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProfileRow {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

impl Storage {
    /// `None` if the user has no profile row (no such local user).
    pub async fn profile(&self, user_id: &str) -> sqlx::Result<Option<ProfileRow>> {
        sqlx::query_as("SELECT displayname, avatar_url FROM profiles WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await
    }

    /// Sets the display name, and the words the user directory finds the
    /// user by, in one transaction.
    pub async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> sqlx::Result<()> {
        let mut tx = self.pool().begin().await?;
        let set = sqlx::query("UPDATE profiles SET displayname = $1 WHERE user_id = $2")
            .bind(name)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if set.rows_affected() > 0 {
            write_user_words(&mut tx, user_id, name).await?;
        }
        tx.commit().await
    }

    pub async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> sqlx::Result<()> {
        sqlx::query("UPDATE profiles SET avatar_url = $1 WHERE user_id = $2")
            .bind(url)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A user's custom profile fields (name, JSON text), by name.
    pub async fn profile_fields(&self, user_id: &str) -> sqlx::Result<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT field_name, value FROM profile_fields WHERE user_id = $1 ORDER BY field_name",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
    }

    /// One custom profile field's JSON text.
    pub async fn profile_field(&self, user_id: &str, name: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT value FROM profile_fields WHERE user_id = $1 AND field_name = $2",
        )
        .bind(user_id)
        .bind(name)
        .fetch_optional(self.pool())
        .await
    }

    /// Sets (adds or replaces) a custom profile field.
    pub async fn set_profile_field(
        &self,
        user_id: &str,
        name: &str,
        json: &str,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO profile_fields (user_id, field_name, value) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, field_name) DO UPDATE SET value = excluded.value",
        )
        .bind(user_id)
        .bind(name)
        .bind(json)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes one custom profile field.
    pub async fn delete_profile_field(&self, user_id: &str, name: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM profile_fields WHERE user_id = $1 AND field_name = $2")
            .bind(user_id)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes every custom profile field of a user (erasure).
    pub async fn delete_all_profile_fields(&self, user_id: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM profile_fields WHERE user_id = $1")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
