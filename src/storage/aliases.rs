//! Table `room_aliases`: local aliases (`#name:server`) pointing at rooms.

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId};

use sqlx::AssertSqlSafe;

use super::rows::parse_id;
use super::{Dialect, Storage};
use crate::model::user_words::upper_bound;

/// A user found in the user directory.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DirectoryUserRow {
    #[sqlx(try_from = "String")]
    pub user_id: OwnedUserId,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

impl Storage {
    pub async fn alias_room(&self, alias: &str) -> sqlx::Result<Option<OwnedRoomId>> {
        self.optional_id(
            "SELECT room_id FROM room_aliases WHERE alias = $1",
            alias,
            "room_id",
        )
        .await
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

    /// Deletes the alias if it still points at `room_id`.
    pub async fn delete_alias_of_room(&self, alias: &str, room_id: &str) -> sqlx::Result<bool> {
        let r = sqlx::query("DELETE FROM room_aliases WHERE alias = $1 AND room_id = $2")
            .bind(alias)
            .bind(room_id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Points every alias of `old` at `new` (a room upgrade).
    pub async fn move_room_aliases(&self, old: &str, new: &str) -> sqlx::Result<u64> {
        let r = sqlx::query("UPDATE room_aliases SET room_id = $1 WHERE room_id = $2")
            .bind(new)
            .bind(old)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn alias_creator(&self, alias: &str) -> sqlx::Result<Option<OwnedUserId>> {
        self.optional_id(
            "SELECT creator FROM room_aliases WHERE alias = $1",
            alias,
            "creator",
        )
        .await
    }

    pub async fn room_aliases(&self, room_id: &str) -> sqlx::Result<Vec<OwnedRoomAliasId>> {
        self.id_list(
            "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias",
            room_id,
            "alias",
        )
        .await
    }
}

/// The user directory search for `words` term words (see
/// [`Storage::search_user_directory`]): $1 and $2 bound the first word's
/// matches, $3 is the searcher, each further word has the next two
/// bounds, and the last parameter is the limit.
fn user_directory_sql(words: usize) -> String {
    let more: String = (1..words)
        .map(|i| {
            let lo = 2 * i + 2;
            format!(
                "\n  AND EXISTS (SELECT 1 FROM user_directory_words x{i} WHERE x{i}.user_id = w.user_id
                       AND x{i}.word >= ${lo} AND x{i}.word < ${})",
                lo + 1
            )
        })
        .collect();
    let limit = 2 * words.max(1) + 2;
    format!(
        "SELECT DISTINCT p.user_id, p.displayname, p.avatar_url FROM user_directory_words w
         JOIN profiles p ON p.user_id = w.user_id
         JOIN accounts a ON a.user_id = w.user_id
         WHERE w.word >= $1 AND w.word < $2
           AND a.account_type <> 2 AND a.is_deactivated = 0
           AND EXISTS (
             SELECT 1 FROM current_state m JOIN rooms r ON r.room_id = m.room_id
             WHERE m.state_key = w.user_id AND m.membership = 'join' AND m.event_type = 'm.room.member'
               AND (r.join_rule_public = 1 OR r.world_readable = 1
                    OR (w.user_id <> $3 AND EXISTS (
                          SELECT 1 FROM current_state s
                          WHERE s.room_id = m.room_id AND s.event_type = 'm.room.member'
                            AND s.state_key = $3 AND s.membership = 'join')))){more}
         ORDER BY p.user_id LIMIT ${limit}"
    )
}

impl Storage {
    /// Rooms published in the directory.
    pub async fn public_rooms(&self) -> sqlx::Result<Vec<OwnedRoomId>> {
        let rooms: Vec<String> =
            sqlx::query_scalar("SELECT room_id FROM rooms WHERE is_public = 1")
                .fetch_all(self.pool())
                .await?;
        rooms.into_iter().map(|r| parse_id("room_id", r)).collect()
    }

    /// Rooms an application service published in one network's list.
    pub async fn appservice_listed_rooms(
        &self,
        appservice_id: &str,
        network_id: &str,
    ) -> sqlx::Result<Vec<OwnedRoomId>> {
        let rooms: Vec<String> = sqlx::query_scalar(
            "SELECT room_id FROM appservice_room_list WHERE appservice_id = $1 AND network_id = $2",
        )
        .bind(appservice_id)
        .bind(network_id)
        .fetch_all(self.pool())
        .await?;
        rooms.into_iter().map(|r| parse_id("room_id", r)).collect()
    }

    /// Rooms published in the directory or in any application service's
    /// network list, each once.
    pub async fn rooms_listed_anywhere(&self) -> sqlx::Result<Vec<OwnedRoomId>> {
        let rooms: Vec<String> = sqlx::query_scalar(
            "SELECT room_id FROM rooms WHERE is_public = 1
             UNION SELECT room_id FROM appservice_room_list",
        )
        .fetch_all(self.pool())
        .await?;
        rooms.into_iter().map(|r| parse_id("room_id", r)).collect()
    }

    /// Publishes a room in (or removes it from) an application service's
    /// network list; publishing twice or removing an absent room is no change.
    pub async fn set_appservice_listed(
        &self,
        appservice_id: &str,
        network_id: &str,
        room_id: &str,
        listed: bool,
    ) -> sqlx::Result<()> {
        let sql = if listed {
            "INSERT INTO appservice_room_list (appservice_id, network_id, room_id)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM appservice_room_list
             WHERE appservice_id = $1 AND network_id = $2 AND room_id = $3"
        };
        sqlx::query(sql)
            .bind(appservice_id)
            .bind(network_id)
            .bind(room_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Local users whom `searcher` may find and who have, for each of
    /// `words` (lowercased, the most selective first), a directory word it
    /// begins: those joined to a room the searcher is joined to (not the
    /// searcher), and those joined to a room whose join rule is public or
    /// whose history is world-readable (the searcher too). Never guests or
    /// deactivated users. From the first word's matches (an index range) to
    /// their other words and joined rooms by key: the cost grows with the
    /// matches and their rooms, never with the users or rooms of the server.
    pub async fn search_user_directory(
        &self,
        searcher: &str,
        words: &[String],
        limit: i64,
    ) -> sqlx::Result<Vec<DirectoryUserRow>> {
        let Some((first, more)) = words.split_first() else {
            return Ok(Vec::new());
        };
        let mut q = sqlx::query_as(AssertSqlSafe(user_directory_sql(words.len())))
            .bind(first.as_str())
            .bind(upper_bound(first))
            .bind(searcher);
        for word in more {
            q = q.bind(word.as_str()).bind(upper_bound(word));
        }
        q.bind(limit).fetch_all(self.pool()).await
    }

    /// Events relating to `event_id` (optionally of one rel_type and event
    /// type): newest first below `from`, or oldest first above it when
    /// `forwards`; with `levels`, also those relating to them, that many
    /// levels down in all.
    #[allow(clippy::too_many_arguments)]
    pub async fn relations(
        &self,
        room_id: &str,
        event_id: &str,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        from: Option<i64>,
        (forwards, levels): (bool, Option<i64>),
        limit: i64,
    ) -> sqlx::Result<Vec<super::events::EventRow>> {
        let (cmp, order, bound) = if forwards {
            (">", "ASC", from.unwrap_or(0))
        } else {
            ("<", "DESC", from.unwrap_or(i64::MAX))
        };
        // The related events: the direct ones, or the recursive walk down
        // (each level one indexed lookup by `relates_to`).
        let (with, source) = match levels {
            None => ("", "event_relations r"),
            Some(_) => (
                "WITH RECURSIVE related (event_id, depth) AS (
                     SELECT event_id, 1 FROM event_relations WHERE relates_to = $1 AND room_id = $2
                     UNION
                     SELECT x.event_id, related.depth + 1
                     FROM event_relations x JOIN related ON x.relates_to = related.event_id
                     WHERE related.depth < $7 AND x.room_id = $2
                 )",
                "related JOIN event_relations r ON r.event_id = related.event_id",
            ),
        };
        let direct = if levels.is_some() {
            "r.room_id = $2"
        } else {
            "r.relates_to = $1 AND r.room_id = $2"
        };
        let q = format!(
            "{with}
             SELECT e.stream_ordering, e.event_id, e.room_id, e.depth, e.state_group, e.redacted_by, e.json,
                    e.txn_device, e.txn_id
             FROM {source} JOIN events e ON e.event_id = r.event_id
             WHERE {direct}
               AND ($3 = '' OR r.rel_type = $3) AND ($4 = '' OR e.event_type = $4)
               AND e.stream_ordering {cmp} $5
             ORDER BY e.stream_ordering {order} LIMIT $6"
        );
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .bind(event_id)
            .bind(room_id)
            .bind(rel_type.unwrap_or(""))
            .bind(event_type.unwrap_or(""))
            .bind(bound)
            .bind(limit);
        if let Some(levels) = levels {
            query = query.bind(levels);
        }
        query.fetch_all(self.pool()).await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    /// A search reads the first word's matches as an index range, and
    /// their other words, profiles, accounts and joined rooms by key (the
    /// member index, the rooms' and the searcher's membership by primary
    /// key): no table is scanned, whatever the server holds.
    #[tokio::test]
    async fn a_search_scans_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 1).await.unwrap();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            user_directory_sql(2)
        )))
        .bind("a")
        .bind("a\u{10ffff}")
        .bind("@u:x")
        .bind("b")
        .bind("b\u{10ffff}")
        .bind(10_i64)
        .fetch_all(storage.pool())
        .await
        .unwrap();
        let detail: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        assert!(detail.iter().all(|d| !d.starts_with("SCAN")), "{detail:?}");
        assert!(
            detail.iter().any(|d| d.starts_with("SEARCH m")),
            "{detail:?}"
        );
    }
}
