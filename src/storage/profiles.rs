//! Table `profiles`: display name and avatar of local users.

use super::Storage;

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

    pub async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> sqlx::Result<()> {
        sqlx::query("UPDATE profiles SET displayname = $1 WHERE user_id = $2")
            .bind(name)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> sqlx::Result<()> {
        sqlx::query("UPDATE profiles SET avatar_url = $1 WHERE user_id = $2")
            .bind(url)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
