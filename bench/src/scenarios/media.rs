//! `myelin-bench media`: the content repository (issue 20), against any
//! homeserver by URL.
//!
//! - upload: `--uploads` uploads of a `--size-mib` file
//!   (`POST /_matrix/media/v3/upload`), each body different (no server
//!   can answer from a stored copy), one after another.
//! - download: `--downloads` downloads of one such file
//!   (`GET /_matrix/client/v1/media/download/...`), to the last byte.
//! - thumbnail: `--thumbnails` times, a 4000×3000 JPEG (made here with the
//!   `image` crate, each copy made distinct by a JPEG comment) is uploaded
//!   and its 96×96 crop thumbnail asked for at once: the first request of
//!   that media's thumbnail, and upload + thumbnail together (a server may
//!   make thumbnails while answering the upload or afterwards).
//! - big downloads: one `--big-mib` file downloaded by `--big-downloads`
//!   clients at once, read as it streams and dropped: the server's RSS
//!   during them (`--pid`), which a streaming server keeps flat whatever
//!   the file size; `--max-rss-mib` makes a peak above it a failure.
//!
//! Every body is checked after its clock stopped: downloads byte for
//! byte, thumbnails decoded at 96×96.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::client::{Client, Session};
use crate::load::{self, Monitor, Target};
use crate::report::{LATENCY_HEADER, Summary, latency_row, round3};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Size of the uploaded and downloaded file, in MiB.
    #[arg(long, default_value_t = 10)]
    pub size_mib: usize,
    /// Timed uploads.
    #[arg(long, default_value_t = 20)]
    pub uploads: usize,
    /// Timed downloads.
    #[arg(long, default_value_t = 20)]
    pub downloads: usize,
    /// Timed JPEG uploads, each followed by its first 96×96 thumbnail.
    #[arg(long, default_value_t = 10)]
    pub thumbnails: usize,
    /// Pause before each JPEG upload, in ms (not timed), so a server that
    /// makes its other thumbnail sizes in the background after answering
    /// is measured idle, as one that makes them during the upload is.
    #[arg(long, default_value_t = 1000)]
    pub thumbnail_gap_ms: u64,
    /// Size of the file of the concurrent downloads, in MiB (0: none).
    #[arg(long, default_value_t = 100)]
    pub big_mib: usize,
    /// Concurrent downloads of the big file.
    #[arg(long, default_value_t = 20)]
    pub big_downloads: usize,
    /// A server RSS peak above this during the concurrent downloads fails
    /// the run (needs --pid).
    #[arg(long)]
    pub max_rss_mib: Option<f64>,
}

const MIB: usize = 1024 * 1024;

/// The source image of the thumbnail measure.
const JPEG_WIDTH: u32 = 4000;
const JPEG_HEIGHT: u32 = 3000;
const THUMB: u32 = 96;

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.size_mib = args.size_mib.min(1);
        args.uploads = args.uploads.min(2);
        args.downloads = args.downloads.min(2);
        args.thumbnails = args.thumbnails.min(1);
        args.thumbnail_gap_ms = 0;
        args.big_mib = args.big_mib.min(8);
        args.big_downloads = args.big_downloads.min(4);
    }
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    // Big bodies: a generous timeout per request.
    let client = Client::with_timeout(&t.url, Duration::from_secs(600))?;
    eprintln!(
        "media: {} uploads and {} downloads of {} MiB, {} thumbnails of a {JPEG_WIDTH}×{JPEG_HEIGHT} JPEG, {} concurrent downloads of {} MiB, against {} (run {run})",
        args.uploads,
        args.downloads,
        args.size_mib,
        args.thumbnails,
        args.big_downloads,
        args.big_mib,
        t.url
    );
    let user = load::register_users(&client, t, vec![format!("{run}-media")])
        .await?
        .remove(0);
    let mut failures = Vec::new();
    let size = args.size_mib.max(1) * MIB;

    // Uploads: each body differs in its first eight bytes.
    let base = noise(size, 1);
    let bar = t.bar(args.uploads as u64, "uploading");
    let mut upload_times = Vec::new();
    let mut uploaded = None;
    for i in 0..args.uploads.max(1) {
        let mut body = base.clone();
        body[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let body = bytes::Bytes::from(body);
        let started = Instant::now();
        let mxc = upload(&user, body.clone(), "application/octet-stream").await?;
        upload_times.push(started.elapsed());
        uploaded = Some((mxc, body));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (mxc, body) = uploaded.context("no upload")?;

    // Downloads of the last upload.
    let bar = t.bar(args.downloads as u64, "downloading");
    let mut download_times = Vec::new();
    let path = download_path(&mxc)?;
    for _ in 0..args.downloads {
        let started = Instant::now();
        let got = get_chunks(&user, &path).await?;
        download_times.push(started.elapsed());
        if !same_bytes(&got, &body) {
            failures.push(format!(
                "a download of {mxc} differs from the upload ({} bytes, expected {})",
                got.iter().map(bytes::Bytes::len).sum::<usize>(),
                body.len()
            ));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Thumbnails.
    let jpeg = tokio::task::spawn_blocking(test_jpeg)
        .await
        .context("JPEG task")??;
    let bar = t.bar(args.thumbnails as u64, "thumbnails");
    let (mut jpeg_uploads, mut thumb_times, mut thumb_totals) =
        (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.thumbnails {
        let image = bytes::Bytes::from(with_comment(&jpeg, &format!("{run} image {i}")));
        tokio::time::sleep(Duration::from_millis(args.thumbnail_gap_ms)).await;
        let started = Instant::now();
        let mxc = upload(&user, image, "image/jpeg").await?;
        let uploaded_at = Instant::now();
        let thumb = get_bytes(&user, &thumbnail_path(&mxc)?).await?;
        let done = Instant::now();
        jpeg_uploads.push(uploaded_at.duration_since(started));
        thumb_times.push(done.duration_since(uploaded_at));
        thumb_totals.push(done.duration_since(started));
        match image::load_from_memory(&thumb) {
            Ok(img) if img.width() == THUMB && img.height() == THUMB => {}
            Ok(img) => failures.push(format!(
                "the thumbnail of {mxc} is {}×{}, expected {THUMB}×{THUMB}",
                img.width(),
                img.height()
            )),
            Err(e) => failures.push(format!("the thumbnail of {mxc} is not an image: {e}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Concurrent big downloads, with the server's RSS read throughout.
    let mut big = Value::Null;
    let mut big_rows = Vec::new();
    let mut phase_stats = None;
    if args.big_mib > 0 && args.big_downloads > 0 {
        let big_size = args.big_mib * MIB;
        let mxc = upload(
            &user,
            bytes::Bytes::from(noise(big_size, 2)),
            "application/octet-stream",
        )
        .await
        .context("uploading the big file")?;
        let path = download_path(&mxc)?;
        // The server settles after the upload before the reading starts.
        tokio::time::sleep(Duration::from_secs(t.settle_secs)).await;
        let before = monitor.snapshot()?;
        let phase = monitor.phase()?;
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.big_downloads)
            .map(|_| {
                let (user, path) = (user.clone(), path.clone());
                tokio::spawn(async move { drain(&user, &path).await })
            })
            .collect();
        let mut received = Vec::new();
        for task in tasks {
            received.push(task.await.context("download task")?);
        }
        let took = started.elapsed();
        let stats = phase.finish().await?;
        let mut total = 0u64;
        for r in &received {
            match r {
                Ok(n) if *n == big_size as u64 => total += n,
                Ok(n) => failures.push(format!(
                    "a concurrent download got {n} bytes, expected {big_size}"
                )),
                Err(e) => failures.push(format!("a concurrent download failed: {e:#}")),
            }
        }
        let mib_per_sec = total as f64 / MIB as f64 / took.as_secs_f64();
        big_rows.push(vec![
            format!(
                "{} concurrent downloads of {} MiB: MiB/s (all)",
                args.big_downloads, args.big_mib
            ),
            format!("{mib_per_sec:.0}"),
        ]);
        big_rows.push(vec![
            "their wall time (s)".into(),
            format!("{:.2}", took.as_secs_f64()),
        ]);
        let peak_mib = stats.as_ref().map(|s| crate::procstat::mib(s.peak_rss_kib));
        if let Some(peak) = peak_mib {
            big_rows.push(vec![
                "server RSS before them (MiB)".into(),
                format!(
                    "{:.1}",
                    before
                        .as_ref()
                        .map_or(0.0, |b| crate::procstat::mib(b.status.vm_rss_kib))
                ),
            ]);
            big_rows.push(vec![
                "server RSS peak during them (MiB)".into(),
                format!("{peak:.1}"),
            ]);
            if let Some(limit) = args.max_rss_mib
                && peak > limit
            {
                failures.push(format!(
                    "the server's RSS peaked at {peak:.1} MiB during the concurrent downloads (limit {limit} MiB)"
                ));
            }
        } else if args.max_rss_mib.is_some() {
            bail!("--max-rss-mib needs --pid");
        }
        big = json!({
            "file_mib": args.big_mib,
            "clients": args.big_downloads,
            "secs": round3(took.as_secs_f64()),
            "mib_per_sec": round3(mib_per_sec),
            "rss_before_mib": before.map(|b| crate::procstat::mib(b.status.vm_rss_kib)),
            "peak_rss_mib": peak_mib,
        });
        phase_stats = stats;
    }

    let (server_json, server_rows) = monitor
        .report(phase_stats.as_ref(), &[], t.settle_secs)
        .await?;
    let mib_per_sec = |times: &[Duration]| {
        let secs: f64 = times.iter().map(Duration::as_secs_f64).sum();
        if secs > 0.0 {
            (times.len() * size) as f64 / MIB as f64 / secs
        } else {
            0.0
        }
    };
    let summaries = [
        (
            format!("upload {} MiB", args.size_mib),
            Summary::of(&upload_times),
        ),
        (
            format!("download {} MiB", args.size_mib),
            Summary::of(&download_times),
        ),
        (
            format!("upload a {JPEG_WIDTH}×{JPEG_HEIGHT} JPEG"),
            Summary::of(&jpeg_uploads),
        ),
        (
            "then its first 96×96 thumbnail".to_owned(),
            Summary::of(&thumb_times),
        ),
        (
            "upload + first 96×96 thumbnail".to_owned(),
            Summary::of(&thumb_totals),
        ),
    ];
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .filter_map(|(name, s)| s.as_ref().map(|s| latency_row(name, s)))
        .collect();
    let rates = vec![
        vec![
            "upload MiB/s".into(),
            format!("{:.0}", mib_per_sec(&upload_times)),
        ],
        vec![
            "download MiB/s".into(),
            format!("{:.0}", mib_per_sec(&download_times)),
        ],
        vec!["JPEG bytes".into(), jpeg.len().to_string()],
    ];
    let js = |s: &Option<Summary>| s.as_ref().map(Summary::to_json);
    load::finish(
        t,
        "media",
        &format!(
            "{} MiB uploads and downloads, thumbnails of a {JPEG_WIDTH}×{JPEG_HEIGHT} JPEG, {} × {} MiB at once",
            args.size_mib, args.big_downloads, args.big_mib
        ),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], rates),
            (&["concurrent downloads", "value"], big_rows),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": {
                "size_mib": args.size_mib,
                "uploads": args.uploads,
                "downloads": args.downloads,
                "thumbnails": args.thumbnails,
                "thumbnail_gap_ms": args.thumbnail_gap_ms,
                "big_mib": args.big_mib,
                "big_downloads": args.big_downloads,
            },
            "upload": js(&summaries[0].1),
            "upload_mib_per_sec": round3(mib_per_sec(&upload_times)),
            "download": js(&summaries[1].1),
            "download_mib_per_sec": round3(mib_per_sec(&download_times)),
            "jpeg_upload": js(&summaries[2].1),
            "thumbnail_first": js(&summaries[3].1),
            "upload_and_thumbnail": js(&summaries[4].1),
            "jpeg_bytes": jpeg.len(),
            "concurrent_downloads": big,
            "server": server_json,
        }),
        &failures,
    )
}

/// `len` bytes of xorshift noise (incompressible, cheap to make).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A 4000×3000 photo-like JPEG: smooth gradients with some grain, so it
/// encodes to a few MiB as a camera's would.
fn test_jpeg() -> anyhow::Result<Vec<u8>> {
    let grain = noise((JPEG_WIDTH * JPEG_HEIGHT) as usize, 3);
    let img = image::RgbImage::from_fn(JPEG_WIDTH, JPEG_HEIGHT, |x, y| {
        let g = grain[(y * JPEG_WIDTH + x) as usize] % 24;
        image::Rgb([
            ((x * 255 / JPEG_WIDTH) as u8).saturating_add(g),
            ((y * 255 / JPEG_HEIGHT) as u8).saturating_add(g),
            (((x + y) / 28) as u8).saturating_add(g),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .context("encoding the test JPEG")?;
    Ok(out)
}

/// `jpeg` with a comment segment (COM) after its start marker: the same
/// image, different bytes.
fn with_comment(jpeg: &[u8], comment: &str) -> Vec<u8> {
    let len = u16::try_from(comment.len() + 2).expect("a short comment");
    let mut out = Vec::with_capacity(jpeg.len() + comment.len() + 4);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(comment.as_bytes());
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// `POST /_matrix/media/v3/upload`; the `content_uri`.
async fn upload(user: &Session, body: bytes::Bytes, content_type: &str) -> anyhow::Result<String> {
    let resp = user
        .authed(reqwest::Method::POST, "/_matrix/media/v3/upload")
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .context("upload")?;
    let status = resp.status();
    let answer: Value = resp.json().await.context("upload answer")?;
    if !status.is_success() {
        bail!("upload: {status} {answer}");
    }
    answer["content_uri"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("upload: no content_uri in {answer}"))
}

/// `mxc://server/id` as `server/id`.
fn mxc_path(mxc: &str) -> anyhow::Result<&str> {
    mxc.strip_prefix("mxc://")
        .with_context(|| format!("not an mxc URI: {mxc}"))
}

fn download_path(mxc: &str) -> anyhow::Result<String> {
    Ok(format!(
        "/_matrix/client/v1/media/download/{}",
        mxc_path(mxc)?
    ))
}

fn thumbnail_path(mxc: &str) -> anyhow::Result<String> {
    Ok(format!(
        "/_matrix/client/v1/media/thumbnail/{}?width={THUMB}&height={THUMB}&method=crop",
        mxc_path(mxc)?
    ))
}

/// `GET path`: the whole body of a 200.
async fn get_bytes(user: &Session, path: &str) -> anyhow::Result<bytes::Bytes> {
    let resp = user
        .authed(reqwest::Method::GET, path)
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status();
    let body = resp.bytes().await.with_context(|| format!("GET {path}"))?;
    if !status.is_success() {
        bail!(
            "GET {path}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(body)
}

/// `GET path`: the body of a 200 as the chunks it arrived in, kept as they
/// are (no copy into one buffer while the clock runs: for a 10 MiB body
/// that copy, into memory the allocator just mapped, cost the load tool
/// more than the server's whole answer).
async fn get_chunks(user: &Session, path: &str) -> anyhow::Result<Vec<bytes::Bytes>> {
    let mut resp = user
        .authed(reqwest::Method::GET, path)
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status();
    let mut chunks = Vec::new();
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("GET {path}"))? {
        chunks.push(chunk);
    }
    if !status.is_success() {
        let body: Vec<u8> = chunks.concat();
        bail!(
            "GET {path}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(chunks)
}

/// Whether `chunks` put together are `expected`.
fn same_bytes(chunks: &[bytes::Bytes], expected: &[u8]) -> bool {
    let mut rest = expected;
    for chunk in chunks {
        match rest.split_at_checked(chunk.len()) {
            Some((head, tail)) if head == &chunk[..] => rest = tail,
            _ => return false,
        }
    }
    rest.is_empty()
}

/// `GET path`, its body read as it arrives and dropped; the bytes read.
async fn drain(user: &Session, path: &str) -> anyhow::Result<u64> {
    let mut resp = user
        .authed(reqwest::Method::GET, path)
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    if !resp.status().is_success() {
        bail!("GET {path}: {}", resp.status());
    }
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("GET {path}"))? {
        n += chunk.len() as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::same_bytes;

    #[test]
    fn chunks_are_compared_with_the_whole_body() {
        let b = Bytes::from_static;
        assert!(same_bytes(&[b(b"ab"), b(b"cde")], b"abcde"));
        assert!(same_bytes(&[], b""));
        assert!(!same_bytes(&[b(b"ab"), b(b"cdf")], b"abcde"));
        assert!(!same_bytes(&[b(b"ab")], b"abcde"));
        assert!(!same_bytes(&[b(b"abcdef")], b"abcde"));
        assert!(!same_bytes(&[b(b"abcde"), b(b"f")], b"abcde"));
    }
}
