//! Table `room_aliases`: local aliases (`#name:server`) pointing at rooms.

use sqlx::Row;

use super::{Dialect, Storage};

impl Storage {
    pub async fn alias_room(&self, alias: &str) -> sqlx::Result<Option<String>> {
        let row = sqlx::query("SELECT room_id FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Returns false if the alias is taken.
    pub async fn insert_alias(
        &self,
        alias: &str,
        room_id: &str,
        creator: &str,
    ) -> sqlx::Result<bool> {
        let r =
            sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)")
                .bind(alias)
                .bind(room_id)
                .bind(creator)
                .execute(self.pool())
                .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if Dialect::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_alias(&self, alias: &str) -> sqlx::Result<bool> {
        let r = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn alias_creator(&self, alias: &str) -> sqlx::Result<Option<String>> {
        let row = sqlx::query("SELECT creator FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn room_aliases(&self, room_id: &str) -> sqlx::Result<Vec<String>> {
        let rows = sqlx::query("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
            .bind(room_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
