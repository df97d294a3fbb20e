//! The content repository: uploads (direct and asynchronous), downloads,
//! and the rules around them (size limit, pending-upload limit and expiry,
//! quarantine, authenticated media). Bodies go to a [`store::MediaStore`]
//! named by their sha256 (identical uploads stored once); metadata to the
//! `media` table.

pub mod admin;
mod digest;
mod html;
pub mod oembed;
pub mod preview;
pub mod store;
pub mod thumbnails;

use std::sync::Arc;
use std::time::Duration;

use self::digest::BodyDigest;
use self::store::{ByteBody, MediaStore};
use self::thumbnails::{ThumbnailWant, Thumbnails};
use super::sessions::Sessions;
use crate::clock::SharedClock;
use crate::config::MediaConfig;
use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::storage::Storage;
use crate::storage::media::{MediaRow, NewMedia, UploadedBody};
use bytes::Bytes;
use http::StatusCode;
use hyper::body::Body as HttpBody;
use ruma::api::error::{
    ErrorKind, LimitExceededErrorData, ResourceLimitExceededErrorData, RetryAfter,
};
use ruma::{OwnedMxcUri, OwnedServerName, ServerName};

/// How long a download waits at most for a pending upload's body, whatever
/// `timeout_ms` asks (Synapse's bound).
pub const MAX_DOWNLOAD_WAIT: Duration = Duration::from_secs(60);

/// The content type of an upload that names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Longest `filename` and `Content-Type` accepted on upload, in bytes.
const MAX_UPLOAD_FIELD: usize = 1024;

/// How often a downloaded media's `last_access_ts` is written at most.
const ACCESS_RESOLUTION_MS: i64 = 60_000;

/// How a download reaches the media.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// `/_matrix/client/v1/media/...`, by a logged-in user.
    Authenticated(&'a Requester),
    /// The unauthenticated legacy `/_matrix/media/v3/download`.
    Legacy,
}

/// The media a download asks for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub server_name: &'a ServerName,
    pub media_id: &'a str,
    /// The name asked for in the path, which replaces the uploaded one.
    pub filename: Option<&'a str>,
    /// How long to wait for a pending upload (`timeout_ms`).
    pub timeout: Duration,
}

/// An upload's metadata, as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct UploadInfo<'a> {
    pub content_type: Option<&'a str>,
    pub filename: Option<&'a str>,
    /// The declared `Content-Length`, when there is one.
    pub declared_len: Option<u64>,
}

/// A body to download: what it is, and its bytes as a stream.
pub struct MediaFile {
    pub content_type: String,
    /// The name to offer (the one asked for in the path, else the uploaded one).
    pub filename: Option<String>,
    pub len: u64,
    pub body: ByteBody,
}

/// A media id reserved for an asynchronous upload.
pub struct Reservation {
    pub content_uri: OwnedMxcUri,
    pub unused_expires_at: i64,
}

pub struct Media {
    storage: Storage,
    store: Arc<dyn MediaStore>,
    sessions: Arc<Sessions>,
    clock: SharedClock,
    server_name: OwnedServerName,
    config: MediaConfig,
    /// Woken whenever a pending upload gets its body; downloads waiting for
    /// one check theirs again.
    uploaded: tokio::sync::Notify,
    /// Downloads waiting for a pending upload now.
    waiting: std::sync::atomic::AtomicUsize,
    thumbnails: Arc<Thumbnails>,
    /// New media per user (`rate_limits.media_*`); `None` when rate limits
    /// are off.
    upload_limiter: Option<super::ratelimit::RateLimiter>,
    /// `None` when URL previews are off.
    previews: Option<preview::Previews>,
}

impl Media {
    /// The media service of `config`, with its store (the data dir's, or
    /// the configured S3 bucket).
    pub fn open(
        config: &crate::config::Config,
        storage: Storage,
        sessions: Arc<Sessions>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let root = config.data_dir.join("media");
        let store: Arc<dyn MediaStore> = match config.media.store {
            crate::config::MediaStoreKind::S3 => {
                let s3 = config.media.s3.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("media.store is s3 but there is no media.s3 section")
                })?;
                Arc::new(
                    store::s3::S3Store::open(s3, &root)
                        .map_err(|e| anyhow::anyhow!("cannot open the S3 media store: {e}"))?,
                )
            }
            crate::config::MediaStoreKind::Local => Arc::new(
                store::LocalStore::open(&root)
                    .map_err(|e| anyhow::anyhow!("cannot open the media store: {e}"))?,
            ),
        };
        let thumbnails = Arc::new(Thumbnails::new(
            storage.clone(),
            store.clone(),
            clock.clone(),
            config.server_name.clone(),
            &config.media,
        ));
        Ok(Self {
            storage,
            store,
            sessions,
            clock,
            server_name: OwnedServerName::try_from(config.server_name.as_str())?,
            config: config.media.clone(),
            uploaded: tokio::sync::Notify::new(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            thumbnails,
            upload_limiter: config.rate_limits.enabled.then(|| {
                super::ratelimit::RateLimiter::new(
                    config.rate_limits.media_per_second,
                    config.rate_limits.media_burst,
                    config.caches.rate_limit_buckets,
                )
            }),
            previews: preview::Previews::of(&config.media.url_preview, &config.outbound.ca_files)?,
        })
    }

    /// Starts the background work: the configured thumbnail sizes of new
    /// image uploads.
    pub fn start(&self, workers: &super::workers::Workers) {
        self.thumbnails.start(workers);
    }

    /// How many downloads wait for a pending upload's body now.
    pub fn waiting_downloads(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `m.upload.size`.
    pub fn max_upload_size(&self) -> u64 {
        self.config.max_upload_size
    }

    /// Stores `body` under a new media id of `user`'s.
    pub async fn upload<B>(
        &self,
        user: &Requester,
        info: UploadInfo<'_>,
        body: B,
    ) -> Result<OwnedMxcUri>
    where
        B: HttpBody<Data = Bytes, Error = MatrixError> + Send + Unpin,
    {
        let content_type = check_upload_info(&info)?;
        self.check_rate(user).await?;
        let allowance = self.allowance(user).await?;
        let stored = self.store_body(info.declared_len, allowance, body).await?;
        let media_id = new_media_id();
        let media = NewMedia {
            server_name: self.server_name.as_str(),
            media_id: &media_id,
            uploader: user.user_id.as_str(),
            created_ts: self.clock.now_ms(),
            authenticated: self.config.enable_authenticated_media,
        };
        self.storage
            .insert_media(media, stored.as_uploaded(content_type, info.filename))
            .await?;
        self.thumbnails.after_upload(&media_id, content_type);
        Ok(self.mxc(&media_id))
    }

    /// Reserves a media id for `user` to upload to later (`POST /create`).
    pub async fn create(&self, user: &Requester) -> Result<Reservation> {
        self.check_rate(user).await?;
        let now = self.clock.now_ms();
        let (pending, first_expiry) = self
            .storage
            .count_pending_media(user.user_id.as_str(), now)
            .await?;
        if pending >= i64::from(self.config.max_pending_uploads) {
            let wait = first_expiry.map_or(0, |at| at - now).max(1000);
            let mut data = LimitExceededErrorData::new();
            data.retry_after = Some(RetryAfter::Delay(Duration::from_millis(
                u64::try_from(wait).unwrap_or(1000),
            )));
            return Err(MatrixError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::LimitExceeded(data),
                "Too many pending media uploads",
            ));
        }
        let media_id = new_media_id();
        let expires_at = now.saturating_add(
            i64::try_from(self.config.unused_expiration_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        );
        let media = NewMedia {
            server_name: self.server_name.as_str(),
            media_id: &media_id,
            uploader: user.user_id.as_str(),
            created_ts: now,
            authenticated: self.config.enable_authenticated_media,
        };
        self.storage.insert_pending_media(media, expires_at).await?;
        Ok(Reservation {
            content_uri: self.mxc(&media_id),
            unused_expires_at: expires_at,
        })
    }

    /// Uploads the body of a reserved media id (`PUT /upload/{server}/{id}`):
    /// only its creator, only once, only before it lapses.
    pub async fn upload_pending<B>(
        &self,
        user: &Requester,
        server_name: &ServerName,
        media_id: &str,
        info: UploadInfo<'_>,
        body: B,
    ) -> Result<()>
    where
        B: HttpBody<Data = Bytes, Error = MatrixError> + Send + Unpin,
    {
        let content_type = check_upload_info(&info)?;
        if server_name != self.server_name {
            return Err(MatrixError::not_found("Unknown media ID"));
        }
        let row = self
            .storage
            .media(server_name.as_str(), media_id)
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown media ID"))?;
        if row.uploader.as_deref() != Some(user.user_id.as_str()) {
            return Err(MatrixError::forbidden(
                "Only the creator of the media ID can upload to it",
            ));
        }
        if row.sha256.is_some() {
            return Err(cannot_overwrite());
        }
        if self.lapsed(&row) {
            return Err(MatrixError::not_found("Media ID has expired"));
        }
        let allowance = self.allowance(user).await?;
        let stored = self.store_body(info.declared_len, allowance, body).await?;
        let body = stored.as_uploaded(content_type, info.filename);
        if !self
            .storage
            .complete_pending_media(server_name.as_str(), media_id, body)
            .await?
        {
            return Err(cannot_overwrite());
        }
        self.thumbnails.after_upload(media_id, content_type);
        self.uploaded.notify_waiters();
        Ok(())
    }

    /// The media to download. A pending upload is waited for, up to its
    /// timeout (at most [`MAX_DOWNLOAD_WAIT`]), then 504 `M_NOT_YET_UPLOADED`.
    pub async fn download(&self, access: Access<'_>, wanted: Wanted<'_>) -> Result<MediaFile> {
        let row = self.uploaded_row(access, wanted).await?;
        let sha256 = row.sha256.as_deref().unwrap_or_default();
        let Some(stored) = self
            .store
            .get(sha256)
            .await
            .map_err(MatrixError::internal)?
        else {
            tracing::error!(
                media_id = wanted.media_id,
                sha256,
                "a media row names a body the store does not have"
            );
            return Err(MatrixError::not_found("Media not found"));
        };
        if row
            .size
            .is_some_and(|size| u64::try_from(size).ok() != Some(stored.len))
        {
            // Cut short by a crash before it reached the disk (`store`).
            tracing::error!(
                media_id = wanted.media_id,
                sha256,
                recorded = row.size,
                stored = stored.len,
                "a media body is not as long as recorded"
            );
            return Err(MatrixError::not_found("Media not found"));
        }
        self.touch(&row).await?;
        Ok(MediaFile {
            content_type: row
                .content_type
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            filename: wanted.filename.map(str::to_owned).or(row.upload_name),
            len: stored.len,
            body: stored.body,
        })
    }

    /// A thumbnail of the media `wanted` names (its `filename` unused):
    /// found as a download finds media (pending uploads waited for), then
    /// picked among those made or made now. No image: 400 `M_UNKNOWN` (as
    /// Synapse).
    pub async fn thumbnail(
        &self,
        access: Access<'_>,
        wanted: Wanted<'_>,
        want: ThumbnailWant,
    ) -> Result<MediaFile> {
        let row = self.uploaded_row(access, wanted).await?;
        let thumbnail = self.thumbnails.get(&row, want).await?;
        self.touch(&row).await?;
        Ok(MediaFile {
            content_type: thumbnail.content_type,
            filename: None,
            len: thumbnail.len,
            body: thumbnail.body,
        })
    }

    /// Deletes every thumbnail of a local media id (rows, and bodies nothing
    /// else names). Media deletion must call it.
    pub async fn delete_thumbnails(&self, media_id: &str) -> Result<()> {
        self.thumbnails.delete_all(media_id).await
    }

    /// The row of the local media `wanted` names once it has a body; 404
    /// for remote media.
    async fn uploaded_row(&self, access: Access<'_>, wanted: Wanted<'_>) -> Result<MediaRow> {
        let server_name = wanted.server_name;
        if server_name != self.server_name {
            return Err(MatrixError::not_found(format!(
                "Remote media (from {server_name}) cannot be fetched: this server does not federate yet"
            )));
        }
        self.wait_for_body(access, wanted.media_id, wanted.timeout)
            .await
    }

    /// Records an access to `row` (at most once a minute).
    async fn touch(&self, row: &MediaRow) -> Result<()> {
        let now = self.clock.now_ms();
        if row
            .last_access_ts
            .is_none_or(|at| now - at >= ACCESS_RESOLUTION_MS)
        {
            self.storage
                .touch_media(&row.server_name, &row.media_id, now)
                .await?;
        }
        Ok(())
    }

    /// The media's row once it has a body: waits (on [`Media::uploaded`],
    /// never polling) while it is pending.
    async fn wait_for_body(
        &self,
        access: Access<'_>,
        media_id: &str,
        timeout: Duration,
    ) -> Result<MediaRow> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_DOWNLOAD_WAIT);
        loop {
            let uploaded = self.uploaded.notified();
            tokio::pin!(uploaded);
            // Registered before the read: an upload finishing after it wakes us.
            uploaded.as_mut().enable();
            let row = self.visible_row(access, media_id).await?;
            if row.sha256.is_some() {
                return Ok(row);
            }
            if self.lapsed(&row) {
                return Err(MatrixError::not_found("Media ID has expired"));
            }
            let _waiting = Waiting::count(&self.waiting);
            tokio::select! {
                () = &mut uploaded => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(MatrixError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        ErrorKind::NotYetUploaded,
                        "Media has not been uploaded yet",
                    ));
                }
            }
        }
    }

    /// The media's row, if `access` may see it: quarantined media only an
    /// admin sees, and media uploaded while authenticated media was on
    /// only the authenticated endpoints serve.
    async fn visible_row(&self, access: Access<'_>, media_id: &str) -> Result<MediaRow> {
        let not_found = || MatrixError::not_found("Media not found");
        let row = self
            .storage
            .media(self.server_name.as_str(), media_id)
            .await?
            .ok_or_else(not_found)?;
        let admin = match access {
            Access::Legacy => {
                if row.authenticated && self.config.enable_authenticated_media {
                    return Err(not_found());
                }
                false
            }
            Access::Authenticated(requester) => {
                row.quarantined_by.is_some() && self.sessions.admin_now(requester).await?
            }
        };
        if row.quarantined_by.is_some() && !admin {
            return Err(not_found());
        }
        Ok(row)
    }

    /// Quarantines (or with `by` `None` releases) a local media id; false
    /// when there is none. Media marked safe from quarantine stays served.
    pub async fn set_quarantined(&self, media_id: &str, by: Option<&str>) -> Result<bool> {
        let server = self.server_name.as_str();
        let Some(row) = self.storage.media(server, media_id).await? else {
            return Ok(false);
        };
        if by.is_some() && row.safe_from_quarantine {
            return Ok(true);
        }
        Ok(self
            .storage
            .set_media_quarantined(server, media_id, by)
            .await?)
    }

    /// Takes one new media from `user`'s allowance (admins have no limit);
    /// 429 `M_LIMIT_EXCEEDED` when it is spent. Checked before the body is
    /// read.
    async fn check_rate(&self, user: &Requester) -> Result<()> {
        if let Some(limiter) = &self.upload_limiter
            && !user.is_admin()
            && let Err(wait) = limiter.check(&user.user_id)
            // A promotion made by hand counts too.
            && !self.sessions.admin_now(user).await?
        {
            return Err(MatrixError::limit_exceeded(wait));
        }
        Ok(())
    }

    /// The bytes `user` may still upload under `media.upload_limits` (the
    /// least any limit leaves); `None` when there are none.
    async fn allowance(&self, user: &Requester) -> Result<Option<u64>> {
        let now = self.clock.now_ms();
        let mut least: Option<u64> = None;
        for limit in &self.config.upload_limits {
            let period =
                i64::try_from(limit.time_period_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let used = self
                .storage
                .media_uploaded_since(user.user_id.as_str(), now.saturating_sub(period))
                .await?;
            let left = limit
                .max_bytes
                .saturating_sub(u64::try_from(used).unwrap_or(0));
            least = Some(least.map_or(left, |l| l.min(left)));
        }
        Ok(least)
    }

    /// A pending upload whose reservation has run out.
    fn lapsed(&self, row: &MediaRow) -> bool {
        row.sha256.is_none()
            && row
                .unused_expires_at
                .is_some_and(|at| at <= self.clock.now_ms())
    }

    fn mxc(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.server_name))
    }

    /// Streams `body` into the store, hashing as it goes, and commits it
    /// under its sha256. Past the size limit (from `Content-Length` before a
    /// byte is read, or while reading) it is 413 `M_TOO_LARGE` and nothing
    /// is kept; past `allowance` (the uploader's quota left) 403
    /// `M_RESOURCE_LIMIT_EXCEEDED`, the same way; so is anything staged
    /// when the body fails or the request goes away.
    async fn store_body<B>(
        &self,
        declared_len: Option<u64>,
        allowance: Option<u64>,
        mut body: B,
    ) -> Result<StoredUpload>
    where
        B: HttpBody<Data = Bytes, Error = MatrixError> + Send + Unpin,
    {
        let max = self.config.max_upload_size;
        let too_large = || MatrixError::too_large(format!("Uploads are limited to {max} bytes"));
        let over_quota = || {
            MatrixError::new(
                StatusCode::FORBIDDEN,
                ErrorKind::ResourceLimitExceeded(ResourceLimitExceededErrorData::new(
                    self.config.upload_limit_contact.clone(),
                )),
                "Media upload limit exceeded",
            )
        };
        let announced = declared_len.unwrap_or(0).max(body.size_hint().lower());
        if announced > max {
            return Err(too_large());
        }
        if allowance.is_some_and(|left| announced > left) {
            return Err(over_quota());
        }
        let mut staged = self.store.stage().await.map_err(MatrixError::internal)?;
        let mut digest = BodyDigest::new();
        let mut size = 0u64;
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let Ok(chunk) = frame?.into_data() else {
                continue;
            };
            size += chunk.len() as u64;
            if size > max {
                return Err(too_large());
            }
            if allowance.is_some_and(|left| size > left) {
                return Err(over_quota());
            }
            digest
                .update(chunk.clone())
                .await
                .map_err(MatrixError::internal)?;
            staged.write(chunk).await.map_err(MatrixError::internal)?;
        }
        let sha256 = digest.finish().await.map_err(MatrixError::internal)?;
        staged
            .commit(sha256.clone())
            .await
            .map_err(MatrixError::internal)?;
        Ok(StoredUpload {
            sha256,
            size: i64::try_from(size).map_err(MatrixError::internal)?,
        })
    }
}

/// One waiting download, counted while it lives (a request that goes away
/// counts no more).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A body in the store.
struct StoredUpload {
    sha256: String,
    size: i64,
}

impl StoredUpload {
    fn as_uploaded<'a>(
        &'a self,
        content_type: &'a str,
        filename: Option<&'a str>,
    ) -> UploadedBody<'a> {
        UploadedBody {
            content_type,
            upload_name: filename,
            size: self.size,
            sha256: &self.sha256,
        }
    }
}

/// The upload's content type (the default when none is given); 400
/// `M_INVALID_PARAM` for a name or type longer than [`MAX_UPLOAD_FIELD`].
fn check_upload_info<'a>(info: &UploadInfo<'a>) -> Result<&'a str> {
    for (what, value) in [
        ("filename", info.filename),
        ("Content-Type", info.content_type),
    ] {
        if value.is_some_and(|v| v.len() > MAX_UPLOAD_FIELD) {
            return Err(MatrixError::invalid_param(format!(
                "{what} is too long (at most {MAX_UPLOAD_FIELD} bytes)"
            )));
        }
    }
    Ok(info
        .content_type
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE))
}

fn cannot_overwrite() -> MatrixError {
    MatrixError::new(
        StatusCode::CONFLICT,
        ErrorKind::CannotOverwriteMedia,
        "Media ID already has content",
    )
}

/// A new media id: 24 random letters and digits.
fn new_media_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}
