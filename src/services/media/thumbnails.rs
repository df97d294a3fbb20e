//! Thumbnails of image uploads: the configured sizes made in the background
//! after an upload (`media.thumbnail_sizes`), any other size made when
//! first asked for; both stored through the [`MediaStore`] by content hash
//! and recorded in `media_thumbnails`.
//!
//! Decoding is bounded twice: an image with more pixels than
//! `media.max_image_pixels` is refused from its header, before a pixel is
//! allocated, and the decoder's own [`image::Limits`] hold the same bound.
//! Decoding and resizing run on blocking threads, at most one per core at a
//! time (a semaphore), so a burst of thumbnail requests cannot starve the
//! server; concurrent requests for the same new thumbnail make it once.
//! The configured sizes are stored one by one, smallest first, and a
//! request arriving while they are being made waits for them rather than
//! decoding the image a second time. A JPEG is decoded at a reduced scale
//! (1/8, 1/4 or 1/2) when that still covers every size being made; a large
//! image is then shrunk by area averaging to twice the thumbnail's size,
//! then resized.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, metadata::Orientation};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore, mpsc};

use super::store::{ByteBody, MediaStore};
use crate::clock::SharedClock;
use crate::config::{MediaConfig, ThumbnailMethod, ThumbnailSize};
use crate::error::{MatrixError, Result};
use crate::services::workers::{Stage, Workers};
use crate::storage::Storage;
use crate::storage::media::{MediaRow, ThumbnailRow};

/// The media types thumbnails are made of (the formats the `image` crate
/// is built with: PNG, JPEG, WebP, GIF).
const THUMBNAILABLE: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/webp",
    "image/gif",
];

/// A crop is never larger than its source, or this in each dimension
/// when the source is smaller (small images may be enlarged up to it).
const MAX_CROP_ENLARGEMENT: u32 = 800;

/// Quality of JPEG thumbnails (as Synapse).
const JPEG_QUALITY: u8 = 80;

/// A thumbnail asked for.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailWant {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
    /// `animated=true`: a small enough animated original is served as is.
    pub animated: bool,
}

/// A thumbnail (or an animated original) to serve.
pub struct Thumbnail {
    pub content_type: String,
    pub len: u64,
    pub body: ByteBody,
}

/// Why no thumbnail could be made; shared by every request that waited
/// for the same one.
#[derive(Debug, Clone)]
enum Failure {
    /// The media is no image this server decodes, or too large a one: 400.
    Refused(String),
    /// A bug or a storage failure: 500.
    Internal(String),
}

impl From<Failure> for MatrixError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Refused(msg) => MatrixError::unknown(StatusCode::BAD_REQUEST, msg),
            Failure::Internal(msg) => MatrixError::internal(msg),
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<MatrixError> for Failure {
    fn from(e: MatrixError) -> Self {
        Self::Internal(e.message().to_owned())
    }
}

/// A thumbnail being made: (media id, method, width, height, whether that
/// size is the one asked for, to fit to the source once decoded, or the
/// thumbnail's own).
type Key = (String, ThumbnailMethod, u32, u32, bool);

type Made = std::result::Result<(ThumbnailRow, Bytes), Failure>;

pub struct Thumbnails {
    storage: Storage,
    store: Arc<dyn MediaStore>,
    clock: SharedClock,
    server_name: String,
    max_image_pixels: u64,
    sizes: Vec<ThumbnailSize>,
    /// One per core: decodes and resizes running at once.
    permits: Arc<Semaphore>,
    /// Thumbnails being made on demand; later requests for one wait for it.
    in_flight: Mutex<HashMap<Key, Arc<OnceCell<Made>>>>,
    /// Media ids whose configured sizes are to be made.
    queue: mpsc::UnboundedSender<String>,
    queued: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Media ids whose configured sizes are being made now.
    configuring: Mutex<HashSet<String>>,
    /// Woken when a thumbnail is stored or a configured run ends.
    kept: tokio::sync::Notify,
}

impl Thumbnails {
    pub fn new(
        storage: Storage,
        store: Arc<dyn MediaStore>,
        clock: SharedClock,
        server_name: String,
        config: &MediaConfig,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let (queue, queued) = mpsc::unbounded_channel();
        Self {
            storage,
            store,
            clock,
            server_name,
            max_image_pixels: config.max_image_pixels,
            sizes: config.thumbnail_sizes.clone(),
            permits: Arc::new(Semaphore::new(cores)),
            in_flight: Mutex::new(HashMap::new()),
            queue,
            queued: Mutex::new(Some(queued)),
            configuring: Mutex::new(HashSet::new()),
            kept: tokio::sync::Notify::new(),
        }
    }

    /// Starts the worker that makes the configured sizes of new uploads.
    /// What it has not made when the server stops (or crashes) is made when
    /// first asked for.
    pub fn start(self: &Arc<Self>, workers: &Workers) {
        let Some(mut queued) = self.queued.lock().take() else {
            return;
        };
        let this = self.clone();
        workers.spawn(
            "media thumbnails",
            Stage::Flush,
            move |mut stop| async move {
                loop {
                    tokio::select! {
                        () = stop.requested() => return,
                        next = queued.recv() => {
                            let Some(media_id) = next else { return };
                            if let Err(e) = this.make_configured(&media_id).await {
                                tracing::warn!(media_id, error = ?e, "could not make thumbnails");
                            }
                        }
                    }
                }
            },
        );
    }

    /// Queues the configured sizes of `media` (just uploaded, of `content_type`).
    pub fn after_upload(&self, media_id: &str, content_type: &str) {
        if !self.sizes.is_empty() && is_thumbnailable(content_type) {
            let _ = self.queue.send(media_id.to_owned());
        }
    }

    /// The thumbnail of `media` (uploaded, visible to the requester) that
    /// `want` asks for: the smallest stored one at least that large with the
    /// same method, else one made now (and stored).
    pub async fn get(&self, media: &MediaRow, want: ThumbnailWant) -> Result<Thumbnail> {
        let content_type = essence(media.content_type.as_deref().unwrap_or_default());
        if !is_thumbnailable(&content_type) {
            return Err(Failure::Refused(format!(
                "Cannot make a thumbnail of media of type {content_type:?}"
            ))
            .into());
        }
        let sha256 = media.sha256.as_deref().unwrap_or_default();
        let rows = self.stored_or_coming(media, want).await?;
        let animated = want.animated && content_type == "image/gif";
        let max = self.max_image_pixels;
        // The source's size: known from any thumbnail made of it; else read
        // from its header only where it decides what to serve.
        let source = match rows.first() {
            Some(row) => Some((dim(row.source_width), dim(row.source_height))),
            None if animated => Some(self.with_source(sha256, move |b| probe(b, max)).await?),
            None => None,
        };
        if animated
            && let Some((source_width, source_height)) = source
            && source_width <= want.width
            && source_height <= want.height
            && let Some(stored) = self
                .store
                .get(sha256)
                .await
                .map_err(MatrixError::internal)?
        {
            return Ok(Thumbnail {
                content_type,
                len: stored.len,
                body: stored.body,
            });
        }
        let Some(source) = source else {
            // Nothing made of it yet: the size follows from the decoded source.
            let key = (
                media.media_id.clone(),
                want.method,
                want.width,
                want.height,
                true,
            );
            return self
                .make_once(media, key)
                .await
                .map(made_thumbnail)
                .map_err(Into::into);
        };
        let (width, height) = target_size(source, (want.width, want.height), want.method);
        if let Some(row) = pick(&rows, want.method, width, height)
            && let Some(stored) = self
                .store
                .get(&row.sha256)
                .await
                .map_err(MatrixError::internal)?
        {
            return Ok(Thumbnail {
                content_type: row.content_type.clone(),
                len: stored.len,
                body: stored.body,
            });
        }
        let key = (media.media_id.clone(), want.method, width, height, false);
        Ok(made_thumbnail(self.make_once(media, key).await?))
    }

    /// The thumbnails stored of `media`; while its configured sizes are
    /// being made and none stored answers `want`, waits for the next one
    /// (or the run's end) instead of decoding the image again.
    async fn stored_or_coming(
        &self,
        media: &MediaRow,
        want: ThumbnailWant,
    ) -> Result<Vec<ThumbnailRow>> {
        loop {
            let kept = self.kept.notified();
            tokio::pin!(kept);
            // Registered before the reads: a thumbnail kept after them wakes us.
            kept.as_mut().enable();
            let rows = self
                .storage
                .media_thumbnails(&media.server_name, &media.media_id)
                .await?;
            if !self.configuring.lock().contains(&media.media_id) {
                return Ok(rows);
            }
            if let Some(first) = rows.first() {
                let source = (dim(first.source_width), dim(first.source_height));
                let (width, height) = target_size(source, (want.width, want.height), want.method);
                if pick(&rows, want.method, width, height).is_some() {
                    return Ok(rows);
                }
            }
            kept.await;
        }
    }

    /// Forgets every thumbnail of a local media id and deletes the bodies
    /// no other media or thumbnail names. For media deletion (the admin
    /// API), which must call it along with removing the media row.
    pub async fn delete_all(&self, media_id: &str) -> Result<()> {
        let bodies = self
            .storage
            .delete_media_thumbnails(&self.server_name, media_id)
            .await?;
        for sha256 in bodies {
            if !self.storage.media_body_in_use(&sha256).await? {
                self.store
                    .delete(&sha256)
                    .await
                    .map_err(MatrixError::internal)?;
            }
        }
        Ok(())
    }

    /// Makes the thumbnail `key` of `media` once however many ask for it
    /// at the same time.
    async fn make_once(&self, media: &MediaRow, key: Key) -> Made {
        let cell = self
            .in_flight
            .lock()
            .entry(key.clone())
            .or_default()
            .clone();
        let made = cell
            .get_or_init(|| async {
                let (_, method, width, height, fit) = key.clone();
                let max = self.max_image_pixels;
                let sha256 = media.sha256.as_deref().unwrap_or_default();
                let made = self
                    .with_source(sha256, move |bytes| {
                        let mut made = None;
                        render(
                            bytes,
                            max,
                            |source| {
                                let size = if fit {
                                    target_size(source, (width, height), method)
                                } else {
                                    (width, height)
                                };
                                vec![(method, size.0, size.1)]
                            },
                            |thumb| made = Some(thumb),
                        )?;
                        Ok(made)
                    })
                    .await?;
                let Some(thumb) = made else {
                    return Err(Failure::Internal("no thumbnail was made".to_owned()));
                };
                self.keep(media, thumb).await
            })
            .await
            .clone();
        let mut in_flight = self.in_flight.lock();
        if in_flight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            in_flight.remove(&key);
        }
        made
    }

    /// Makes the configured sizes of a media id (one decode for all).
    async fn make_configured(&self, media_id: &str) -> std::result::Result<(), Failure> {
        let _running = Configuring::start(self, media_id);
        let Some(media) = self.storage.media(&self.server_name, media_id).await? else {
            return Ok(());
        };
        let Some(sha256) = media.sha256.clone() else {
            return Ok(());
        };
        let (max, sizes) = (self.max_image_pixels, self.sizes.clone());
        // Each thumbnail is stored as soon as it is made (smallest first),
        // so a request waiting for one is answered early.
        let (made_tx, mut made_rx) = mpsc::channel::<Rendered>(1);
        let making = self.with_source(&sha256, move |bytes| {
            render(
                bytes,
                max,
                |source| {
                    let mut targets: Vec<(ThumbnailMethod, u32, u32)> = Vec::new();
                    for s in &sizes {
                        let (w, h) = target_size(source, (s.width, s.height), s.method);
                        if !targets.contains(&(s.method, w, h)) {
                            targets.push((s.method, w, h));
                        }
                    }
                    targets.sort_by_key(|(_, w, h)| u64::from(*w) * u64::from(*h));
                    targets
                },
                |thumb| {
                    // The receiver goes only when storing failed.
                    let _ = made_tx.blocking_send(thumb);
                },
            )
        });
        let keeping = async {
            while let Some(thumb) = made_rx.recv().await {
                self.keep(&media, thumb).await?;
            }
            Ok::<(), Failure>(())
        };
        let (made, kept) = tokio::join!(making, keeping);
        kept?;
        match made {
            Ok(()) => Ok(()),
            // Not an image after all, or too large: requests say so.
            Err(Failure::Refused(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stores a made thumbnail's body and records it.
    async fn keep(&self, media: &MediaRow, thumb: Rendered) -> Made {
        let sha256 = hex::encode(Sha256::digest(&thumb.bytes));
        let internal = |e: std::io::Error| Failure::Internal(e.to_string());
        let mut staged = self.store.stage().await.map_err(internal)?;
        staged.write(thumb.bytes.clone()).await.map_err(internal)?;
        staged.commit(sha256.clone()).await.map_err(internal)?;
        let row = ThumbnailRow {
            width: i64::from(thumb.width),
            height: i64::from(thumb.height),
            method: thumb.method.as_str().to_owned(),
            content_type: thumb.content_type.to_owned(),
            sha256,
            size: i64::try_from(thumb.bytes.len()).unwrap_or(i64::MAX),
            source_width: i64::from(thumb.source.0),
            source_height: i64::from(thumb.source.1),
        };
        self.storage
            .insert_media_thumbnail(
                &media.server_name,
                &media.media_id,
                &row,
                self.clock.now_ms(),
            )
            .await
            .map_err(|e| Failure::Internal(e.to_string()))?;
        self.kept.notify_waiters();
        Ok((row, thumb.bytes))
    }

    /// A body of the store, whole (image sources are at most
    /// `media.max_upload_size`).
    async fn load(&self, sha256: &str) -> std::result::Result<Bytes, Failure> {
        let internal = |e: std::io::Error| Failure::Internal(e.to_string());
        let stored = self
            .store
            .get(sha256)
            .await
            .map_err(internal)?
            .ok_or_else(|| Failure::Internal(format!("the media store has no body {sha256}")))?;
        Ok(stored.body.collect().await.map_err(internal)?.to_bytes())
    }

    /// Runs `work` on the body `sha256` on a blocking thread once a permit
    /// is free: the body is read only then (so at most one source per core
    /// is in memory), and the permit is held until the work ends, even if
    /// the request went away.
    async fn with_source<T: Send + 'static>(
        &self,
        sha256: &str,
        work: impl FnOnce(&[u8]) -> std::result::Result<T, Failure> + Send + 'static,
    ) -> std::result::Result<T, Failure> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Failure::Internal(e.to_string()))?;
        let bytes = self.load(sha256).await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&bytes)
        })
        .await
        .map_err(|e| Failure::Internal(format!("thumbnailing failed: {e}")))?
    }
}

/// A thumbnail just made, to serve from memory.
fn made_thumbnail((row, bytes): (ThumbnailRow, Bytes)) -> Thumbnail {
    Thumbnail {
        content_type: row.content_type,
        len: bytes.len() as u64,
        body: http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
    }
}

/// A media type without its parameters, lower-cased.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_thumbnailable(content_type: &str) -> bool {
    THUMBNAILABLE.contains(&essence(content_type).as_str())
}

fn dim(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The size of the thumbnail made for a `want`ed size of a `source`
/// (orientation applied): `scale` fits within it keeping the aspect and
/// never enlarges (as Synapse); `crop` is exactly it, shrunk (keeping the
/// asked aspect) where it would exceed the source and
/// [`MAX_CROP_ENLARGEMENT`].
pub fn target_size(source: (u32, u32), want: (u32, u32), method: ThumbnailMethod) -> (u32, u32) {
    let (sw, sh) = (u64::from(source.0.max(1)), u64::from(source.1.max(1)));
    let (w, h) = (u64::from(want.0.max(1)), u64::from(want.1.max(1)));
    let (tw, th) = match method {
        ThumbnailMethod::Scale => {
            let (tw, th) = if w * sh < h * sw {
                (w, (w * sh / sw).max(1))
            } else {
                ((h * sw / sh).max(1), h)
            };
            (tw.min(sw), th.min(sh))
        }
        ThumbnailMethod::Crop => {
            let limit_w = sw.max(u64::from(MAX_CROP_ENLARGEMENT));
            let limit_h = sh.max(u64::from(MAX_CROP_ENLARGEMENT));
            if w <= limit_w && h <= limit_h {
                (w, h)
            } else if w * limit_h > h * limit_w {
                (limit_w, (h * limit_w / w).max(1))
            } else {
                ((w * limit_h / h).max(1), limit_h)
            }
        }
    };
    (dim_u64(tw), dim_u64(th))
}

fn dim_u64(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The stored thumbnail to serve for a thumbnail of `width`×`height` made
/// with `method`: the smallest of that method at least that large in both
/// dimensions (crops of the same aspect only), as Synapse picks the
/// closest larger one.
fn pick(
    rows: &[ThumbnailRow],
    method: ThumbnailMethod,
    width: u32,
    height: u32,
) -> Option<&ThumbnailRow> {
    let (w, h) = (i64::from(width), i64::from(height));
    rows.iter()
        .filter(|r| r.method == method.as_str() && r.width >= w && r.height >= h)
        .filter(|r| method == ThumbnailMethod::Scale || r.width * h == r.height * w)
        .min_by_key(|r| (r.width * r.height, r.size))
}

/// The decoder of an image body, with `max_pixels` as its limits; 400 for
/// what is no image of the supported formats or has more pixels.
fn decoder(
    bytes: &[u8],
    max_pixels: u64,
) -> std::result::Result<(impl ImageDecoder + '_, ImageFormat), Failure> {
    let refused = |what: &str| Failure::Refused(format!("Cannot make a thumbnail: {what}"));
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| refused(&e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(refused("not an image in a supported format"));
    };
    let mut reader = reader;
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    // The decoded pixels (at most 16 bytes each) and the decoder's buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(16).saturating_add(64 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| refused(&e.to_string()))?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(refused(&format!(
            "the image has {w}×{h} pixels, more than the {max_pixels} this server decodes"
        )));
    }
    Ok((decoder, format))
}

/// An image's size with its EXIF orientation applied, from its header.
fn probe(bytes: &[u8], max_pixels: u64) -> std::result::Result<(u32, u32), Failure> {
    let (mut decoder, _) = decoder(bytes, max_pixels)?;
    let (w, h) = decoder.dimensions();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    Ok(if turns(orientation) { (h, w) } else { (w, h) })
}

/// Whether an orientation swaps width and height.
fn turns(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// A thumbnail made.
struct Rendered {
    method: ThumbnailMethod,
    width: u32,
    height: u32,
    content_type: &'static str,
    bytes: Bytes,
    /// The source's size, orientation applied.
    source: (u32, u32),
}

/// Decodes an image (its first frame), applies its EXIF orientation and
/// makes the thumbnails `targets` asks for given the source's size, in
/// that order, handing each to `made`: JPEG of a JPEG, WebP (lossless) of
/// a WebP, PNG of the rest. A JPEG is decoded at the smallest scale (1/8,
/// 1/4, 1/2) that still covers every target.
fn render(
    bytes: &[u8],
    max_pixels: u64,
    targets: impl FnOnce((u32, u32)) -> Vec<(ThumbnailMethod, u32, u32)>,
    mut made: impl FnMut(Rendered),
) -> std::result::Result<(), Failure> {
    let (mut decoder, format) = decoder(bytes, max_pixels)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (w, h) = decoder.dimensions();
    let source = if turns(orientation) { (h, w) } else { (w, h) };
    let targets = targets(source);
    // The size every target fits in, before the orientation is applied.
    let needed = targets.iter().fold((1, 1), |(nw, nh), &(_, tw, th)| {
        let (tw, th) = if turns(orientation) {
            (th, tw)
        } else {
            (tw, th)
        };
        (nw.max(tw), nh.max(th))
    });
    let scaled = if format == ImageFormat::Jpeg {
        jpeg_scaled(bytes, (w, h), needed, max_pixels)
    } else {
        None
    };
    let mut image = match scaled {
        Some(image) => image,
        None => DynamicImage::from_decoder(decoder)
            .map_err(|e| Failure::Refused(format!("Cannot make a thumbnail: {e}")))?,
    };
    image.apply_orientation(orientation);
    let filter = image::imageops::FilterType::CatmullRom;
    for (method, width, height) in targets {
        let shrunk = shrunk_for(&image, width, height);
        let from = shrunk.as_ref().unwrap_or(&image);
        let thumb = match method {
            ThumbnailMethod::Crop => from.resize_to_fill(width, height, filter),
            ThumbnailMethod::Scale => from.resize_exact(width, height, filter),
        };
        let (content_type, bytes) = encode(&thumb, format)?;
        made(Rendered {
            method,
            width: thumb.width(),
            height: thumb.height(),
            content_type,
            bytes,
            source,
        });
    }
    Ok(())
}

/// A thumbnail's bytes and type: JPEG of a JPEG (as Synapse), lossless
/// WebP of a WebP (the only WebP the `image` crate writes), PNG of the
/// rest.
fn encode(
    thumb: &DynamicImage,
    format: ImageFormat,
) -> std::result::Result<(&'static str, Bytes), Failure> {
    let mut out = Vec::new();
    let (content_type, encoded) = match format {
        ImageFormat::Jpeg => {
            let encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
            (
                "image/jpeg",
                DynamicImage::ImageRgb8(thumb.to_rgb8()).write_with_encoder(encoder),
            )
        }
        ImageFormat::WebP => {
            let encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            // The encoder takes 8-bit RGB(A) only.
            let eight_bit = if thumb.color().has_alpha() {
                DynamicImage::ImageRgba8(thumb.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(thumb.to_rgb8())
            };
            ("image/webp", eight_bit.write_with_encoder(encoder))
        }
        _ => {
            let encoder = image::codecs::png::PngEncoder::new(&mut out);
            ("image/png", thumb.write_with_encoder(encoder))
        }
    };
    encoded.map_err(|e| Failure::Internal(format!("cannot encode a thumbnail: {e}")))?;
    Ok((content_type, Bytes::from(out)))
}

/// A JPEG of `size` decoded at the smallest of 1/8, 1/4 and 1/2 its size
/// that is at least `needed` in both dimensions (the reduced IDCT shrinks
/// it: a fraction of the work of a whole decode and a resize). `None` when
/// no reduced scale is that large, or this decoder cannot read it (CMYK,
/// 16-bit, arithmetic coding...): the caller decodes it whole instead.
fn jpeg_scaled(
    bytes: &[u8],
    size: (u32, u32),
    needed: (u32, u32),
    max_pixels: u64,
) -> Option<DynamicImage> {
    // The decoder's rounding: ceil(len * eighths / 8).
    let scaled = |len: u32, eighths: u32| (len * eighths).div_ceil(8);
    let eighths = [1, 2, 4]
        .into_iter()
        .find(|&e| scaled(size.0, e) >= needed.0 && scaled(size.1, e) >= needed.1)?;
    let (want_w, want_h) = (scaled(size.0, eighths), scaled(size.1, eighths));
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(usize::try_from(max_pixels.saturating_mul(4)).ok()?);
    let (got_w, got_h) = decoder
        .scale(u16::try_from(want_w).ok()?, u16::try_from(want_h).ok()?)
        .ok()?;
    let info = decoder.info()?;
    if (u32::from(got_w), u32::from(got_h)) != (want_w, want_h)
        || (u32::from(info.width), u32::from(info.height)) != (want_w, want_h)
    {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => {
            image::RgbImage::from_raw(want_w, want_h, pixels).map(DynamicImage::ImageRgb8)
        }
        jpeg_decoder::PixelFormat::L8 => {
            image::GrayImage::from_raw(want_w, want_h, pixels).map(DynamicImage::ImageLuma8)
        }
        _ => None,
    }
}

/// `image` shrunk by area averaging (fast, and sound when reducing a lot)
/// to about twice `width`×`height`, its proportions kept, when it is more
/// than four times that large; the resize that follows then reads a few
/// pixels per output pixel instead of thousands. `None`: resize it as is.
fn shrunk_for(image: &DynamicImage, width: u32, height: u32) -> Option<DynamicImage> {
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    // The smallest scale keeping both sides at least twice the target.
    let scale = (2.0 * f64::from(width) / w).max(2.0 * f64::from(height) / h);
    if scale > 0.5 {
        return None;
    }
    let side = |v: f64| (v * scale).ceil().clamp(1.0, v) as u32;
    Some(image.thumbnail_exact(side(w), side(h)))
}

/// Marks a media id's configured sizes as being made while it lives;
/// dropped (run ended, failed, or stopped), it wakes the waiting requests.
struct Configuring<'a> {
    thumbnails: &'a Thumbnails,
    media_id: String,
}

impl<'a> Configuring<'a> {
    fn start(thumbnails: &'a Thumbnails, media_id: &str) -> Self {
        thumbnails.configuring.lock().insert(media_id.to_owned());
        Self {
            thumbnails,
            media_id: media_id.to_owned(),
        }
    }
}

impl Drop for Configuring<'_> {
    fn drop(&mut self) {
        self.thumbnails.configuring.lock().remove(&self.media_id);
        self.thumbnails.kept.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::store::{LocalStore, StagedBody, StoreFuture, StoredBody};
    use super::*;
    use crate::storage::media::{NewMedia, UploadedBody};

    /// A [`LocalStore`] that counts the bodies staged (one per thumbnail made).
    struct CountingStore {
        inner: LocalStore,
        staged: AtomicUsize,
    }

    impl MediaStore for CountingStore {
        fn stage(&self) -> StoreFuture<'_, Box<dyn StagedBody>> {
            self.staged.fetch_add(1, Ordering::SeqCst);
            self.inner.stage()
        }
        fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredBody>> {
            self.inner.get(key)
        }
        fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
            self.inner.delete(key)
        }
        fn exists<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
            self.inner.exists(key)
        }
    }

    /// Eight requests at once for a size not made yet make it once, and
    /// all get it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_asks_for_a_new_size_make_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 2).await.unwrap();
        let store = Arc::new(CountingStore {
            inner: LocalStore::open(&dir.path().join("media")).unwrap(),
            staged: AtomicUsize::new(0),
        });
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            300,
            200,
            image::Rgb([9, 99, 199]),
        ));
        let mut png = Cursor::new(Vec::new());
        image.write_to(&mut png, ImageFormat::Png).unwrap();
        let png = png.into_inner();
        let sha256 = hex::encode(Sha256::digest(&png));
        let mut staged = store.inner.stage().await.unwrap();
        staged.write(Bytes::from(png.clone())).await.unwrap();
        staged.commit(sha256.clone()).await.unwrap();
        let new = NewMedia {
            server_name: "x",
            media_id: "m",
            uploader: "@u:x",
            created_ts: 0,
            authenticated: true,
        };
        let body = UploadedBody {
            content_type: "image/png",
            upload_name: None,
            size: i64::try_from(png.len()).unwrap(),
            sha256: &sha256,
        };
        storage.insert_media(new, body).await.unwrap();
        let row = storage.media("x", "m").await.unwrap().unwrap();
        let thumbs = Arc::new(Thumbnails::new(
            storage.clone(),
            store.clone(),
            crate::clock::SystemClock::shared(),
            "x".to_owned(),
            &MediaConfig::default(),
        ));
        let want = ThumbnailWant {
            width: 50,
            height: 40,
            method: ThumbnailMethod::Crop,
            animated: false,
        };
        let mut asks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (thumbs, row) = (thumbs.clone(), row.clone());
            asks.spawn(async move {
                let thumb = thumbs.get(&row, want).await.unwrap();
                thumb.body.collect().await.unwrap().to_bytes()
            });
        }
        let answers = asks.join_all().await;
        assert!(answers.iter().all(|a| a == &answers[0]));
        assert_eq!(store.staged.load(Ordering::SeqCst), 1, "made once");
        assert_eq!(storage.media_thumbnails("x", "m").await.unwrap().len(), 1);
        assert!(thumbs.in_flight.lock().is_empty(), "nothing left in flight");
    }

    /// A JPEG of smooth gradients, `width`×`height`, colour or grey.
    fn gradient_jpeg(width: u32, height: u32, grey: bool) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            let c = |n: u32, of: u32| u8::try_from(n * 255 / of).unwrap();
            image::Rgb([c(x, width), c(y, height), c(x + y, width + height)])
        });
        let image = if grey {
            DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(image).to_luma8())
        } else {
            DynamicImage::ImageRgb8(image)
        };
        let mut out = Vec::new();
        image
            .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut out, 90,
            ))
            .unwrap();
        out
    }

    /// The mean absolute difference of two same-sized images' RGB values.
    fn mean_difference(a: &DynamicImage, b: &DynamicImage) -> f64 {
        assert_eq!((a.width(), a.height()), (b.width(), b.height()));
        let (a, b) = (a.to_rgb8(), b.to_rgb8());
        let total: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        total as f64 / a.as_raw().len() as f64
    }

    /// A JPEG is decoded at the smallest eighth-scale covering what is
    /// needed, and looks like the whole decode shrunk to that size.
    #[test]
    fn jpegs_decode_at_a_reduced_scale_that_covers_the_need() {
        for grey in [false, true] {
            let jpeg = gradient_jpeg(1600, 1200, grey);
            let whole = image::load_from_memory(&jpeg).unwrap();
            for (needed, got) in [
                ((96, 96), (200, 150)),
                ((32, 150), (200, 150)),
                ((320, 240), (400, 300)),
                ((800, 600), (800, 600)),
            ] {
                let scaled = jpeg_scaled(&jpeg, (1600, 1200), needed, 100_000_000)
                    .unwrap_or_else(|| panic!("{needed:?}: not decoded at a reduced scale"));
                assert_eq!((scaled.width(), scaled.height()), got, "{needed:?}");
                assert_eq!(scaled.color().has_color(), !grey, "{needed:?}");
                let reference =
                    whole.resize_exact(got.0, got.1, image::imageops::FilterType::Triangle);
                let diff = mean_difference(&scaled, &reference);
                assert!(
                    diff < 3.0,
                    "{needed:?} grey={grey}: mean difference {diff:.2}"
                );
            }
            // More than half the size needed: decoded whole by the caller.
            assert!(jpeg_scaled(&jpeg, (1600, 1200), (801, 600), 100_000_000).is_none());
            // Over the pixel limit: refused here too.
            assert!(jpeg_scaled(&jpeg, (1600, 1200), (96, 96), 1000).is_none());
        }
        // Not a JPEG: nothing.
        assert!(jpeg_scaled(b"not a jpeg", (1600, 1200), (96, 96), 100_000_000).is_none());
    }

    #[test]
    fn scale_fits_within_and_never_enlarges() {
        use ThumbnailMethod::Scale;
        assert_eq!(target_size((2000, 1000), (320, 240), Scale), (320, 160));
        assert_eq!(target_size((1000, 2000), (320, 240), Scale), (120, 240));
        assert_eq!(target_size((100, 50), (320, 240), Scale), (100, 50));
        assert_eq!(target_size((10_000, 1), (32, 32), Scale), (32, 1));
    }

    #[test]
    fn crop_is_exact_but_bounded() {
        use ThumbnailMethod::Crop;
        assert_eq!(target_size((2000, 1000), (96, 96), Crop), (96, 96));
        assert_eq!(target_size((2, 1), (96, 96), Crop), (96, 96));
        assert_eq!(target_size((2000, 1000), (4000, 1000), Crop), (2000, 500));
        assert_eq!(
            target_size((10, 10), (u32::MAX, u32::MAX), Crop),
            (800, 800)
        );
    }
}
