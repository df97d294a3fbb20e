//! The media admin API's queries over `media` and `media_thumbnails`
//! (Synapse's `/_synapse/admin/v1/.../media...`): a user's media page by
//! page, per-user usage statistics, quarantine and protection in bulk, old
//! media to delete, the deletion of media rows with their thumbnails (one
//! transaction), and the events of a room that name media.

use super::Storage;
use super::media::MediaRow;

const MEDIA_COLUMNS: &str = "server_name, media_id, uploader, content_type, upload_name, size,
    sha256, created_ts, last_access_ts, unused_expires_at, quarantined_by,
    safe_from_quarantine, authenticated";

/// The column a user's media list may be ordered by, for Synapse's
/// `order_by` value; `None` for a value Synapse does not know.
pub fn media_order_column(order_by: &str) -> Option<&'static str> {
    Some(match order_by {
        "media_id" => "media_id",
        "upload_name" => "upload_name",
        "created_ts" => "created_ts",
        "last_access_ts" => "last_access_ts",
        "media_length" => "size",
        "media_type" => "content_type",
        "quarantined_by" => "quarantined_by",
        "safe_from_quarantine" => "safe_from_quarantine",
        _ => return None,
    })
}

/// The column the per-user statistics may be ordered by.
pub fn stats_order_column(order_by: &str) -> Option<&'static str> {
    Some(match order_by {
        "user_id" => "m.uploader",
        "displayname" => "p.displayname",
        // The expressions, not their aliases: PostgreSQL does not know an
        // alias inside an ORDER BY expression.
        "media_length" => "COALESCE(SUM(m.size), 0)",
        "media_count" => "COUNT(*)",
        _ => return None,
    })
}

/// `ORDER BY` of `column` in one direction, NULLs after the values going
/// forwards and before them going backwards, on both databases.
fn order(column: &str, backwards: bool) -> String {
    let dir = if backwards { "DESC" } else { "ASC" };
    format!("({column} IS NULL) {dir}, {column} {dir}")
}

/// One page of a listing: where it starts and how long it may be.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub from: i64,
    pub limit: i64,
    /// A column of [`media_order_column`] or [`stats_order_column`].
    pub order_by: &'static str,
    pub backwards: bool,
}

/// The statistics' filters.
#[derive(Debug, Clone, Copy)]
pub struct StatsFilter<'a> {
    pub from_ts: i64,
    pub until_ts: Option<i64>,
    /// Part of a user id or display name (case-insensitive).
    pub search_term: Option<&'a str>,
}

/// One uploader's usage.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserMediaUsage {
    pub user_id: String,
    pub displayname: Option<String>,
    pub media_count: i64,
    pub media_length: i64,
}

/// What deleting media rows freed: the ids deleted, and the bodies (of
/// media and thumbnails) they named, which may now be unused.
#[derive(Debug, Default)]
pub struct DeletedMedia {
    pub media_ids: Vec<String>,
    pub bodies: Vec<String>,
}

impl Storage {
    /// A page of the media `uploader` uploaded to `server_name`, and how many
    /// there are in all.
    pub async fn user_media_page(
        &self,
        server_name: &str,
        uploader: &str,
        page: Page,
    ) -> sqlx::Result<(Vec<MediaRow>, i64)> {
        let q = format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE server_name = $1 AND uploader = $2
             ORDER BY {}, media_id ASC LIMIT $3 OFFSET $4",
            order(page.order_by, page.backwards)
        );
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .bind(server_name)
            .bind(uploader)
            .bind(page.limit)
            .bind(page.from)
            .fetch_all(self.pool())
            .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM media WHERE server_name = $1 AND uploader = $2",
        )
        .bind(server_name)
        .bind(uploader)
        .fetch_one(self.pool())
        .await?;
        Ok((rows, total))
    }

    /// Per-uploader media count and bytes, for media created in the
    /// filter's time range; a page of them and how many uploaders match.
    pub async fn user_media_usage(
        &self,
        server_name: &str,
        filter: StatsFilter<'_>,
        page: Page,
    ) -> sqlx::Result<(Vec<UserMediaUsage>, i64)> {
        let dialect = self.dialect();
        // Every parameter is always bound and named: no upper bound is
        // `i64::MAX`, no search term the empty string.
        let filters = format!(
            " AND m.created_ts <= $3 AND ($4 = '' OR {} OR {})",
            dialect.contains("LOWER(m.uploader)", "LOWER($4)"),
            dialect.contains("LOWER(COALESCE(p.displayname, ''))", "LOWER($4)")
        );
        let base = format!(
            "FROM media m LEFT JOIN profiles p ON p.user_id = m.uploader
             WHERE m.server_name = $1 AND m.uploader IS NOT NULL AND m.created_ts >= $2{filters}
             GROUP BY m.uploader, p.displayname"
        );
        let q = format!(
            "SELECT m.uploader AS user_id, p.displayname AS displayname,
                COUNT(*) AS media_count,
                CAST(COALESCE(SUM(m.size), 0) AS BIGINT) AS media_length
             {base} ORDER BY {}, m.uploader ASC LIMIT $5 OFFSET $6",
            order(page.order_by, page.backwards)
        );
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .bind(server_name)
            .bind(filter.from_ts)
            .bind(filter.until_ts.unwrap_or(i64::MAX))
            .bind(filter.search_term.unwrap_or_default())
            .bind(page.limit)
            .bind(page.from)
            .fetch_all(self.pool())
            .await?;
        let count = format!("SELECT COUNT(*) FROM (SELECT m.uploader {base}) AS t");
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .bind(server_name)
            .bind(filter.from_ts)
            .bind(filter.until_ts.unwrap_or(i64::MAX))
            .bind(filter.search_term.unwrap_or_default())
            .fetch_one(self.pool())
            .await?;
        Ok((rows, total))
    }

    /// Quarantines every media `uploader` uploaded, except protected media;
    /// how many were (again) quarantined.
    pub async fn quarantine_user_media(
        &self,
        server_name: &str,
        uploader: &str,
        by: &str,
    ) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "UPDATE media SET quarantined_by = $3
             WHERE server_name = $1 AND uploader = $2 AND safe_from_quarantine = 0",
        )
        .bind(server_name)
        .bind(uploader)
        .bind(by)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Quarantines each of `media_ids` that exists and is not protected,
    /// in one transaction; how many were.
    pub async fn quarantine_media_ids(
        &self,
        server_name: &str,
        media_ids: &[String],
        by: &str,
    ) -> sqlx::Result<u64> {
        let mut tx = self.begin().await?;
        let mut quarantined = 0;
        for media_id in media_ids {
            quarantined += sqlx::query(
                "UPDATE media SET quarantined_by = $3
                 WHERE server_name = $1 AND media_id = $2 AND safe_from_quarantine = 0",
            )
            .bind(server_name)
            .bind(media_id)
            .bind(by)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(quarantined)
    }

    /// Marks a media id safe from quarantine (or not); false when there is
    /// no such media id.
    pub async fn set_media_protected(
        &self,
        server_name: &str,
        media_id: &str,
        protected: bool,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET safe_from_quarantine = $3 WHERE server_name = $1 AND media_id = $2",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(i64::from(protected))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Uploaded media last accessed (or, never accessed, created) before
    /// `before_ts` and larger than `size_gt` bytes, neither quarantined nor
    /// protected.
    pub async fn old_media_ids(
        &self,
        server_name: &str,
        before_ts: i64,
        size_gt: i64,
    ) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT media_id FROM media
             WHERE server_name = $1 AND sha256 IS NOT NULL
                AND COALESCE(last_access_ts, created_ts) < $2 AND size > $3
                AND quarantined_by IS NULL AND safe_from_quarantine = 0
             ORDER BY media_id",
        )
        .bind(server_name)
        .bind(before_ts)
        .bind(size_gt)
        .fetch_all(self.pool())
        .await
    }

    /// The avatars in use: every profile's, and every room's and room
    /// member's (from the content of the current `m.room.avatar` and
    /// `m.room.member` events, as JSON for the caller to read).
    pub async fn avatar_sources(&self) -> sqlx::Result<(Vec<String>, Vec<String>)> {
        let profiles = sqlx::query_scalar(
            "SELECT avatar_url FROM profiles WHERE avatar_url IS NOT NULL AND avatar_url <> ''",
        )
        .fetch_all(self.pool())
        .await?;
        let events = sqlx::query_scalar(
            "SELECT e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id
             WHERE cs.event_type IN ('m.room.avatar', 'm.room.member')
                AND e.json LIKE '%mxc://%'",
        )
        .fetch_all(self.pool())
        .await?;
        Ok((profiles, events))
    }

    /// The JSON of every event of `room_id` that may name media, newest
    /// first.
    pub async fn room_events_naming_media(&self, room_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT json FROM events WHERE room_id = $1 AND json LIKE '%mxc://%'
             ORDER BY stream_ordering DESC",
        )
        .bind(room_id)
        .fetch_all(self.pool())
        .await
    }

    /// Deletes media rows and their thumbnails' rows in one transaction.
    /// The bodies are the caller's to delete, once nothing names them.
    pub async fn delete_media_rows(
        &self,
        server_name: &str,
        media_ids: &[String],
    ) -> sqlx::Result<DeletedMedia> {
        let mut tx = self.begin().await?;
        let mut deleted = DeletedMedia::default();
        for media_id in media_ids {
            let thumbnails: Vec<String> = sqlx::query_scalar(
                "DELETE FROM media_thumbnails WHERE server_name = $1 AND media_id = $2
                 RETURNING sha256",
            )
            .bind(server_name)
            .bind(media_id)
            .fetch_all(&mut *tx)
            .await?;
            let row: Option<(String, Option<String>)> = sqlx::query_as(
                "DELETE FROM media WHERE server_name = $1 AND media_id = $2
                 RETURNING media_id, sha256",
            )
            .bind(server_name)
            .bind(media_id)
            .fetch_optional(&mut *tx)
            .await?;
            deleted.bodies.extend(thumbnails);
            if let Some((media_id, sha256)) = row {
                deleted.media_ids.push(media_id);
                deleted.bodies.extend(sha256);
            }
        }
        tx.commit().await?;
        deleted.bodies.sort();
        deleted.bodies.dedup();
        Ok(deleted)
    }
}
