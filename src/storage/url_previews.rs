//! Table `url_previews` (v28): the OpenGraph answer of each fetch of a URL
//! (`services/media/preview.rs`), kept until it expires.

use super::Storage;

/// One fetch's answer, to keep.
#[derive(Debug, Clone, Copy)]
pub struct NewUrlPreview<'a> {
    pub url: &'a str,
    pub fetched_ts: i64,
    pub expires_ts: i64,
    /// The answer, a JSON object.
    pub og: &'a str,
    /// The stored image, if any.
    pub media_id: Option<&'a str>,
}

impl Storage {
    /// The answer of the newest fetch of `url` made at or before `ts` and
    /// still valid at `ts`.
    pub async fn url_preview(&self, url: &str, ts: i64) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT og FROM url_previews
             WHERE url = $1 AND fetched_ts <= $2 AND expires_ts > $2
             ORDER BY fetched_ts DESC LIMIT 1",
        )
        .bind(url)
        .bind(ts)
        .fetch_optional(self.pool())
        .await
    }

    /// Keeps a fetch's answer, and drops the answers of `url` that have
    /// expired by then (in one transaction).
    pub async fn insert_url_preview(&self, p: NewUrlPreview<'_>) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM url_previews WHERE url = $1 AND expires_ts <= $2")
            .bind(p.url)
            .bind(p.fetched_ts)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO url_previews (url, fetched_ts, expires_ts, og, media_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (url, fetched_ts) DO NOTHING",
        )
        .bind(p.url)
        .bind(p.fetched_ts)
        .bind(p.expires_ts)
        .bind(p.og)
        .bind(p.media_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}
