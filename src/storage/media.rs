//! Tables `media` (v25): the content repository's metadata, one row per media
//! id, and `media_thumbnails` (v27): the thumbnails made of them. The bodies
//! live in the media store (`services/media/store.rs`), named by their
//! `sha256`; several rows (of either table) may name one body.

use super::Storage;
use super::rows::IntFlag;

/// One media id, uploaded or pending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MediaRow {
    pub server_name: String,
    pub media_id: String,
    pub uploader: Option<String>,
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
    /// `None` while an asynchronous upload waits for its body.
    pub size: Option<i64>,
    /// `None` while an asynchronous upload waits for its body.
    pub sha256: Option<String>,
    pub created_ts: i64,
    pub last_access_ts: Option<i64>,
    /// A pending upload's deadline; `None` once uploaded.
    pub unused_expires_at: Option<i64>,
    pub quarantined_by: Option<String>,
    #[sqlx(try_from = "IntFlag")]
    pub safe_from_quarantine: bool,
    #[sqlx(try_from = "IntFlag")]
    pub authenticated: bool,
}

/// What an upload wrote: the body's name in the store and how it was sent.
#[derive(Debug, Clone, Copy)]
pub struct UploadedBody<'a> {
    pub content_type: &'a str,
    pub upload_name: Option<&'a str>,
    pub size: i64,
    pub sha256: &'a str,
}

/// A media id's identity and who made it when.
#[derive(Debug, Clone, Copy)]
pub struct NewMedia<'a> {
    pub server_name: &'a str,
    pub media_id: &'a str,
    pub uploader: &'a str,
    pub created_ts: i64,
    pub authenticated: bool,
}

impl Storage {
    /// Records an uploaded body under a new media id.
    pub async fn insert_media(
        &self,
        media: NewMedia<'_>,
        body: UploadedBody<'_>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO media (server_name, media_id, uploader, content_type, upload_name, size,
                sha256, created_ts, authenticated)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(media.server_name)
        .bind(media.media_id)
        .bind(media.uploader)
        .bind(body.content_type)
        .bind(body.upload_name)
        .bind(body.size)
        .bind(body.sha256)
        .bind(media.created_ts)
        .bind(i64::from(media.authenticated))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Reserves a media id whose body comes later, until `expires_at`.
    pub async fn insert_pending_media(
        &self,
        media: NewMedia<'_>,
        expires_at: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO media (server_name, media_id, uploader, created_ts, unused_expires_at,
                authenticated)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(media.server_name)
        .bind(media.media_id)
        .bind(media.uploader)
        .bind(media.created_ts)
        .bind(expires_at)
        .bind(i64::from(media.authenticated))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// How many of `uploader`'s reservations are still waiting for a body
    /// at `now`, and when the first of them lapses.
    pub async fn count_pending_media(
        &self,
        uploader: &str,
        now: i64,
    ) -> sqlx::Result<(i64, Option<i64>)> {
        sqlx::query_as(
            "SELECT COUNT(*), MIN(unused_expires_at) FROM media
             WHERE uploader = $1 AND sha256 IS NULL AND unused_expires_at > $2",
        )
        .bind(uploader)
        .bind(now)
        .fetch_one(self.pool())
        .await
    }

    /// The bytes of the bodies `uploader`'s media created at or after
    /// `since` have (pending uploads count nothing).
    pub async fn media_uploaded_since(&self, uploader: &str, since: i64) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media
             WHERE uploader = $1 AND created_ts >= $2",
        )
        .bind(uploader)
        .bind(since)
        .fetch_one(self.pool())
        .await
    }

    /// Gives a pending media id its body; false when it has one already (a
    /// concurrent upload won).
    pub async fn complete_pending_media(
        &self,
        server_name: &str,
        media_id: &str,
        body: UploadedBody<'_>,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET content_type = $3, upload_name = $4, size = $5, sha256 = $6,
                unused_expires_at = NULL
             WHERE server_name = $1 AND media_id = $2 AND sha256 IS NULL",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(body.content_type)
        .bind(body.upload_name)
        .bind(body.size)
        .bind(body.sha256)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn media(&self, server_name: &str, media_id: &str) -> sqlx::Result<Option<MediaRow>> {
        sqlx::query_as(
            "SELECT server_name, media_id, uploader, content_type, upload_name, size, sha256,
                created_ts, last_access_ts, unused_expires_at, quarantined_by,
                safe_from_quarantine, authenticated
             FROM media WHERE server_name = $1 AND media_id = $2",
        )
        .bind(server_name)
        .bind(media_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Records a download at `now`.
    pub async fn touch_media(
        &self,
        server_name: &str,
        media_id: &str,
        now: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE media SET last_access_ts = $3 WHERE server_name = $1 AND media_id = $2",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Quarantines a media id (`by`: the admin, or `None` to release it);
    /// false when there is no such media id.
    pub async fn set_media_quarantined(
        &self,
        server_name: &str,
        media_id: &str,
        by: Option<&str>,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET quarantined_by = $3 WHERE server_name = $1 AND media_id = $2",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(by)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The thumbnails made of a media id.
    pub async fn media_thumbnails(
        &self,
        server_name: &str,
        media_id: &str,
    ) -> sqlx::Result<Vec<ThumbnailRow>> {
        sqlx::query_as(
            "SELECT width, height, method, content_type, sha256, size, source_width, source_height
             FROM media_thumbnails WHERE server_name = $1 AND media_id = $2
             ORDER BY width, height, method",
        )
        .bind(server_name)
        .bind(media_id)
        .fetch_all(self.pool())
        .await
    }

    /// Records a thumbnail; one made concurrently with the same size and
    /// method is kept.
    pub async fn insert_media_thumbnail(
        &self,
        server_name: &str,
        media_id: &str,
        thumbnail: &ThumbnailRow,
        created_ts: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO media_thumbnails (server_name, media_id, width, height, method,
                content_type, sha256, size, source_width, source_height, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT DO NOTHING",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(thumbnail.width)
        .bind(thumbnail.height)
        .bind(&thumbnail.method)
        .bind(&thumbnail.content_type)
        .bind(&thumbnail.sha256)
        .bind(thumbnail.size)
        .bind(thumbnail.source_width)
        .bind(thumbnail.source_height)
        .bind(created_ts)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets every thumbnail of a media id; the bodies they named.
    pub async fn delete_media_thumbnails(
        &self,
        server_name: &str,
        media_id: &str,
    ) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "DELETE FROM media_thumbnails WHERE server_name = $1 AND media_id = $2
             RETURNING sha256",
        )
        .bind(server_name)
        .bind(media_id)
        .fetch_all(self.pool())
        .await
    }

    /// Whether any media id or thumbnail still names the body `sha256`.
    pub async fn media_body_in_use(&self, sha256: &str) -> sqlx::Result<bool> {
        let uses: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1)
                + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)",
        )
        .bind(sha256)
        .fetch_one(self.pool())
        .await?;
        Ok(uses > 0)
    }
}

/// One thumbnail: its size and how it was made, its body's name in the
/// store, and the size of the (orientation-corrected) image it was made of.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ThumbnailRow {
    pub width: i64,
    pub height: i64,
    /// `crop` or `scale`.
    pub method: String,
    pub content_type: String,
    pub sha256: String,
    pub size: i64,
    pub source_width: i64,
    pub source_height: i64,
}
