//! Thumbnails: crop and scale of PNG, JPEG, WebP and GIF (decoded back and
//! measured), EXIF orientation, animated GIFs, the configured sizes made
//! after an upload and picked for larger asks, sizes made on demand once,
//! non-images and decompression bombs refused (the server still answers),
//! the legacy endpoint's authenticated-media rule, and bad parameters.

use std::io::Cursor;
use std::time::Duration;

use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use reqwest::StatusCode;

use crate::harness::*;

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// The authenticated thumbnail path of local media `id` with `query`.
fn thumb_v1(server: &TestServer, id: &str, query: &str) -> String {
    format!(
        "/_matrix/client/v1/media/thumbnail/{}/{id}?{query}",
        server.server_name
    )
}

/// The legacy thumbnail path.
fn thumb_v3(server: &TestServer, id: &str, query: &str) -> String {
    format!(
        "/_matrix/media/v3/thumbnail/{}/{id}?{query}",
        server.server_name
    )
}

/// A `width`×`height` image, left half red, right half blue (so a crop
/// and a rotation show).
fn picture(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, _| {
        if x < width / 2 {
            Rgba([255, 0, 0, 255])
        } else {
            Rgba([0, 0, 255, 255])
        }
    }))
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(image.to_rgb8()).write_to(&mut out, format),
        _ => image.write_to(&mut out, format),
    }
    .expect("encoded");
    out.into_inner()
}

/// A JPEG of `image` with an EXIF APP1 segment whose orientation tag is
/// `orientation`, inserted after the start-of-image marker.
fn jpeg_with_orientation(image: &DynamicImage, orientation: u16) -> Vec<u8> {
    let jpeg = encoded(image, ImageFormat::Jpeg);
    let mut exif = b"Exif\0\0".to_vec();
    // Big-endian TIFF header, the first IFD at offset 8.
    exif.extend_from_slice(b"MM\0\x2a\0\0\0\x08");
    // One entry: tag 0x0112 (orientation), type SHORT, count 1, the value.
    exif.extend_from_slice(&1u16.to_be_bytes());
    exif.extend_from_slice(&0x0112u16.to_be_bytes());
    exif.extend_from_slice(&3u16.to_be_bytes());
    exif.extend_from_slice(&1u32.to_be_bytes());
    exif.extend_from_slice(&orientation.to_be_bytes());
    exif.extend_from_slice(&[0, 0]);
    // No next IFD.
    exif.extend_from_slice(&0u32.to_be_bytes());
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&u16::try_from(exif.len() + 2).unwrap().to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A two-frame GIF: a red frame, then a blue one.
fn two_frame_gif(width: u32, height: u32) -> Vec<u8> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).expect("repeat");
        for color in [[255, 0, 0, 255], [0, 0, 255, 255]] {
            let frame = RgbaImage::from_pixel(width, height, Rgba(color));
            encoder
                .encode_frame(image::Frame::new(frame))
                .expect("frame");
        }
    }
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims `width`×`height` RGBA pixels, with a tiny
/// (truncated) body: a decompression bomb's shape.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

/// GETs a thumbnail; asserts 200 and the download headers; the decoded
/// image and its content type.
async fn fetch(server: &TestServer, path: &str, token: Option<&str>) -> (DynamicImage, String) {
    let got = download(server, path, token).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&got.bytes)
    );
    assert_eq!(got.header("content-security-policy"), CSP, "{path}");
    assert_eq!(got.header("x-content-type-options"), "nosniff", "{path}");
    assert_eq!(
        got.header("cross-origin-resource-policy"),
        "cross-origin",
        "{path}"
    );
    assert_eq!(got.header("content-disposition"), "inline", "{path}");
    assert_eq!(
        got.header("content-length"),
        got.bytes.len().to_string(),
        "{path}"
    );
    let content_type = got.header("content-type").to_owned();
    let image = image::load_from_memory(&got.bytes)
        .unwrap_or_else(|e| panic!("{path}: not an image ({e})"));
    let format = image::guess_format(&got.bytes).expect("a format");
    let expected = match content_type.as_str() {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::WebP,
        other => panic!("{path}: unexpected content type {other}"),
    };
    assert_eq!(format, expected, "{path}: body and Content-Type differ");
    (image, content_type)
}

/// The size of the authenticated thumbnail `query` asks of `id`.
async fn thumb_dims(server: &TestServer, id: &str, query: &str, token: Option<&str>) -> (u32, u32) {
    dims(&fetch(server, &thumb_v1(server, id, query), token).await.0)
}

fn dims(image: &DynamicImage) -> (u32, u32) {
    (image.width(), image.height())
}

/// Waits (bounded) until `media_thumbnails` has `n` rows for a media id
/// (the configured sizes, made in the background).
async fn wait_for_rows(server: &TestServer, id: &str, n: i64) {
    wait_until(
        "the configured thumbnails",
        Duration::from_secs(30),
        || async {
            let rows = thumbnail_rows(server, id).await;
            if rows == n {
                Ok(())
            } else {
                Err(format!("{rows} rows"))
            }
        },
    )
    .await;
}

/// Synapse's five sizes were made for media `id` of `source` size: 32×32
/// and 96×96 crops and three scales (320×240, 640×480 and 800×600 fitted
/// to the source: `scales`), each of `content_type` and not empty.
async fn assert_configured_made(
    server: &TestServer,
    id: &str,
    scales: [(u32, u32); 3],
    content_type: &str,
    source: (u32, u32),
) {
    let [(w1, h1), (w2, h2), (w3, h3)] = scales;
    let made = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM media_thumbnails WHERE media_id = '{id}' AND (
                (method = 'crop' AND width = 32 AND height = 32)
                OR (method = 'crop' AND width = 96 AND height = 96)
                OR (method = 'scale' AND width = {w1} AND height = {h1})
                OR (method = 'scale' AND width = {w2} AND height = {h2})
                OR (method = 'scale' AND width = {w3} AND height = {h3}))
                AND content_type = '{content_type}' AND size > 0
                AND source_width = {} AND source_height = {}",
            source.0, source.1
        ))
        .await;
    assert_eq!(made, 5, "the configured sizes of {id}");
}

/// Rows of `media_thumbnails` for a media id.
async fn thumbnail_rows(server: &TestServer, id: &str) -> i64 {
    server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM media_thumbnails WHERE media_id = '{id}'"
        ))
        .await
}

#[tokio::test]
async fn crop_and_scale_of_every_format() {
    let server = TestServer::start_with(|c| c.media.thumbnail_sizes.clear()).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let source = picture(200, 100);
    for (format, content_type, thumb_type) in [
        (ImageFormat::Png, "image/png", "image/png"),
        (ImageFormat::Jpeg, "image/jpeg", "image/jpeg"),
        (ImageFormat::WebP, "image/webp", "image/webp"),
        (ImageFormat::Gif, "image/gif", "image/png"),
    ] {
        let bytes = encoded(&source, format);
        let id = upload(&server, &alice, &bytes, Some(content_type), None).await;
        // Crop: exactly the size asked for.
        let path = thumb_v1(&server, &id, "width=50&height=40&method=crop");
        let (crop, ct) = fetch(&server, &path, bob.token()).await;
        assert_eq!((dims(&crop), ct.as_str()), ((50, 40), thumb_type), "{path}");
        // Scale (the default method): within the box, the aspect kept.
        let path = thumb_v1(&server, &id, "width=100&height=100");
        let (scaled, ct) = fetch(&server, &path, bob.token()).await;
        assert_eq!(
            (dims(&scaled), ct.as_str()),
            ((100, 50), thumb_type),
            "{path}"
        );
        // The left of a scaled thumbnail is red, its right blue.
        let left = scaled.to_rgba8().get_pixel(5, 25).0;
        let right = scaled.to_rgba8().get_pixel(95, 25).0;
        assert!(left[0] > 200 && left[2] < 60, "{path}: left is {left:?}");
        assert!(
            right[2] > 200 && right[0] < 60,
            "{path}: right is {right:?}"
        );
        // A scale is never larger than its source.
        let path = thumb_v1(&server, &id, "width=1000&height=1000&method=scale");
        let (big, _) = fetch(&server, &path, bob.token()).await;
        assert_eq!(dims(&big), (200, 100), "{path}");
        // A crop of another shape: tall.
        let path = thumb_v1(&server, &id, "width=20&height=60&method=crop");
        let (tall, _) = fetch(&server, &path, alice.token()).await;
        assert_eq!(dims(&tall), (20, 60), "{path}");
    }
}

/// [`picture`] turned a quarter clockwise: red at the top, blue at the
/// bottom.
fn assert_red_over_blue(image: &DynamicImage) {
    let (w, h) = dims(image);
    let top = image.to_rgba8().get_pixel(w / 2, h / 12).0;
    let bottom = image.to_rgba8().get_pixel(w / 2, h - 1 - h / 12).0;
    assert!(top[0] > 200 && top[2] < 60, "top is {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "bottom is {bottom:?}");
}

#[tokio::test]
async fn exif_orientation_is_applied() {
    let server = TestServer::start_with(|c| c.media.thumbnail_sizes.clear()).await;
    let alice = server.user("alice").await;
    // 40×20, red left and blue right; orientation 6: shown turned a
    // quarter clockwise, so 20×40 with red on top.
    let bytes = jpeg_with_orientation(&picture(40, 20), 6);
    let id = upload(&server, &alice, &bytes, Some("image/jpeg"), None).await;
    let path = thumb_v1(&server, &id, "width=100&height=100&method=scale");
    let (image, ct) = fetch(&server, &path, alice.token()).await;
    assert_eq!((dims(&image), ct.as_str()), ((20, 40), "image/jpeg"));
    assert_red_over_blue(&image);
    // A large JPEG is decoded at a reduced scale (here 1/8: 50×25 covers
    // the 25×50 asked for, turned): the orientation is still applied.
    let large = jpeg_with_orientation(&picture(400, 200), 6);
    let id = upload(&server, &alice, &large, Some("image/jpeg"), None).await;
    let path = thumb_v1(&server, &id, "width=25&height=50&method=crop");
    let (image, ct) = fetch(&server, &path, alice.token()).await;
    assert_eq!((dims(&image), ct.as_str()), ((25, 50), "image/jpeg"));
    assert_red_over_blue(&image);
    // Without the tag, the same picture stays wide.
    let plain = encoded(&picture(40, 20), ImageFormat::Jpeg);
    let id = upload(&server, &alice, &plain, Some("image/jpeg"), None).await;
    let path = thumb_v1(&server, &id, "width=100&height=100&method=scale");
    let (image, _) = fetch(&server, &path, alice.token()).await;
    assert_eq!(dims(&image), (40, 20));
}

#[tokio::test]
async fn animated_gifs() {
    let server = TestServer::start_with(|c| c.media.thumbnail_sizes.clear()).await;
    let alice = server.user("alice").await;
    let gif = two_frame_gif(60, 30);
    let id = upload(&server, &alice, &gif, Some("image/gif"), None).await;
    // animated=true, the original within the size: the original itself.
    let path = thumb_v1(&server, &id, "width=100&height=100&animated=true");
    let got = download(&server, &path, alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-type"), "image/gif");
    assert_eq!(got.bytes, gif, "the animated original");
    // Too large for the size asked: a thumbnail of the first (red) frame.
    for query in [
        "width=30&height=30&animated=true&method=crop",
        "width=100&height=100&animated=false",
        "width=100&height=100",
    ] {
        let path = thumb_v1(&server, &id, query);
        let (image, ct) = fetch(&server, &path, alice.token()).await;
        assert_eq!(ct, "image/png", "{query}");
        let pixel = image.to_rgba8().get_pixel(image.width() / 2, 10).0;
        assert!(pixel[0] > 200 && pixel[2] < 60, "{query}: {pixel:?}");
    }
    // With thumbnails made (the source's size now known from them), the
    // animated original still answers.
    let path = thumb_v1(&server, &id, "width=60&height=30&animated=true");
    let got = download(&server, &path, alice.token()).await;
    assert_eq!(got.header("content-type"), "image/gif");
    assert_eq!(got.bytes, gif, "the animated original");
}

#[tokio::test]
async fn configured_sizes_are_made_after_upload_and_others_on_demand() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let png = encoded(&picture(1000, 500), ImageFormat::Png);
    let id = upload(&server, &alice, &png, Some("image/png"), None).await;
    // Synapse's five sizes: 32×32 and 96×96 crops, 320×240, 640×480 and
    // 800×600 scales (here 320×160, 640×320, 800×400).
    wait_for_rows(&server, &id, 5).await;
    assert_configured_made(
        &server,
        &id,
        [(320, 160), (640, 320), (800, 400)],
        "image/png",
        (1000, 500),
    )
    .await;
    // 300×200 scaled: the smallest made one at least that large (320×160).
    assert_eq!(
        thumb_dims(&server, &id, "width=300&height=200", alice.token()).await,
        (320, 160)
    );
    // 64×64 cropped: the 96×96 crop.
    let path = thumb_v1(&server, &id, "width=64&height=64&method=crop");
    let (image, _) = fetch(&server, &path, alice.token()).await;
    assert_eq!(dims(&image), (96, 96));
    assert_eq!(thumbnail_rows(&server, &id).await, 5, "nothing new made");
    // 900×900 scaled: larger than any made; made now, and kept.
    let path = thumb_v1(&server, &id, "width=900&height=900");
    let (image, _) = fetch(&server, &path, alice.token()).await;
    assert_eq!(dims(&image), (900, 450));
    assert_eq!(thumbnail_rows(&server, &id).await, 6);
    // A crop of another shape, asked for by many at once: made once.
    let path = thumb_v1(&server, &id, "width=50&height=40&method=crop");
    let answers = futures_join_all(&server, &path, alice.token(), 8).await;
    for bytes in &answers {
        assert_eq!(bytes, &answers[0]);
        let image = image::load_from_memory(bytes).expect("an image");
        assert_eq!(dims(&image), (50, 40));
    }
    assert_eq!(thumbnail_rows(&server, &id).await, 7);
    // Asked again: served from the store, nothing new.
    let (image, _) = fetch(&server, &path, alice.token()).await;
    assert_eq!(dims(&image), (50, 40));
    assert_eq!(thumbnail_rows(&server, &id).await, 7);
    // Each thumbnail body is in the media store once, by its hash.
    let bodies = stored_bodies(&server).len();
    assert_eq!(bodies, 1 + 7, "the upload and seven thumbnails");
    // What media deletion will call: the rows and their bodies go, the
    // upload's stays.
    server
        .services()
        .media
        .delete_thumbnails(&id)
        .await
        .expect("deleted");
    assert_eq!(thumbnail_rows(&server, &id).await, 0);
    assert_eq!(stored_bodies(&server).len(), 1, "the upload alone");
}

/// A `width`×`height` image of smooth gradients (red across, green down,
/// blue along the diagonal): a thumbnail off by a pixel or blurred wrong
/// shows in its difference from a resize of the original.
fn gradient(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
        let c = |n: u32, of: u32| u8::try_from(n * 255 / of.max(1)).unwrap();
        Rgba([c(x, width), c(y, height), c(x + y, width + height), 255])
    }))
}

/// The mean absolute difference of two same-sized images' RGB values.
fn mean_difference(a: &DynamicImage, b: &DynamicImage) -> f64 {
    assert_eq!(dims(a), dims(b));
    let (a, b) = (a.to_rgb8(), b.to_rgb8());
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    total as f64 / a.as_raw().len() as f64
}

/// A large JPEG (decoded at a reduced scale by the server): the configured
/// sizes and one made on demand have the right dimensions and type, and
/// look like the original shrunk (their mean difference from a resize of
/// the source made here is small).
#[tokio::test]
async fn a_large_jpegs_thumbnails_have_the_right_sizes_and_look_right() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let source = gradient(2400, 1800);
    let jpeg = encoded(&source, ImageFormat::Jpeg);
    let id = upload(&server, &alice, &jpeg, Some("image/jpeg"), None).await;
    wait_for_rows(&server, &id, 5).await;
    assert_configured_made(
        &server,
        &id,
        [(320, 240), (640, 480), (800, 600)],
        "image/jpeg",
        (2400, 1800),
    )
    .await;
    let filter = image::imageops::FilterType::Triangle;
    for (query, size) in [
        ("width=320&height=240&method=scale", (320, 240)),
        ("width=800&height=600&method=scale", (800, 600)),
        ("width=96&height=96&method=crop", (96, 96)),
        // Larger than any configured: made on demand (from a 1/2-scale
        // decode, 1200×900).
        ("width=1000&height=1000&method=scale", (1000, 750)),
        ("width=900&height=300&method=crop", (900, 300)),
    ] {
        let path = thumb_v1(&server, &id, query);
        let (thumb, ct) = fetch(&server, &path, alice.token()).await;
        assert_eq!((dims(&thumb), ct.as_str()), (size, "image/jpeg"), "{query}");
        let expected = if query.ends_with("crop") {
            source.resize_to_fill(size.0, size.1, filter)
        } else {
            source.resize_exact(size.0, size.1, filter)
        };
        let diff = mean_difference(&thumb, &expected);
        assert!(diff < 4.0, "{query}: mean difference {diff:.2}");
    }
}

/// A WebP's thumbnails, the configured ones too, are stored and served as
/// WebP (lossless: they match a resize of the source closely).
#[tokio::test]
async fn webp_thumbnails_are_webp() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let source = gradient(1000, 500);
    let webp = encoded(&source, ImageFormat::WebP);
    let id = upload(&server, &alice, &webp, Some("image/webp"), None).await;
    wait_for_rows(&server, &id, 5).await;
    assert_configured_made(
        &server,
        &id,
        [(320, 160), (640, 320), (800, 400)],
        "image/webp",
        (1000, 500),
    )
    .await;
    let path = thumb_v1(&server, &id, "width=320&height=240&method=scale");
    // `fetch` checks the bytes are the format the content type says.
    let (thumb, ct) = fetch(&server, &path, alice.token()).await;
    assert_eq!(ct, "image/webp");
    assert_eq!(dims(&thumb), (320, 160));
    let expected = source.resize_exact(320, 160, image::imageops::FilterType::Triangle);
    let diff = mean_difference(&thumb, &expected);
    assert!(diff < 4.0, "mean difference {diff:.2}");
}

/// `n` concurrent GETs of `path`, each 200; their bodies.
async fn futures_join_all(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    n: usize,
) -> Vec<Vec<u8>> {
    let mut answers = Vec::new();
    for task in (0..n)
        .map(|_| spawn_get(server, path, token))
        .collect::<Vec<_>>()
    {
        let (status, bytes) = task.await.expect("joined");
        assert_eq!(status, StatusCode::OK);
        answers.push(bytes);
    }
    answers
}

/// A GET of `path` on its own task: its status and body.
fn spawn_get(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
) -> tokio::task::JoinHandle<(StatusCode, Vec<u8>)> {
    let (client, url) = (server.client.clone(), server.url(path));
    let token = token.map(str::to_owned);
    tokio::spawn(async move {
        let mut req = client.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("sent");
        (resp.status(), resp.bytes().await.expect("body").to_vec())
    })
}

#[tokio::test]
async fn non_images_and_bombs_are_refused_and_the_server_stays_up() {
    let server = TestServer::start_with(|c| c.media.max_image_pixels = 1_000_000).await;
    let alice = server.user("alice").await;
    let text = upload(&server, &alice, b"not a picture", Some("text/plain"), None).await;
    let fake = upload(&server, &alice, b"not a picture", Some("image/png"), None).await;
    let bomb = png_claiming(100_000, 100_000);
    let bomb = upload(&server, &alice, &bomb, Some("image/png"), None).await;
    // Over max_image_pixels, though a sane size.
    let large = encoded(&picture(2000, 1000), ImageFormat::Png);
    let large = upload(&server, &alice, &large, Some("image/png"), None).await;
    for id in [&text, &fake, &bomb, &large] {
        for query in ["width=32&height=32&method=crop", "width=640&height=480"] {
            let path = thumb_v1(&server, id, query);
            let got = download(&server, &path, alice.token()).await;
            assert_error_for(&path, &got.error(), 400, "M_UNKNOWN");
        }
    }
    // The bomb was never decoded: no thumbnail rows, and the server answers.
    assert_eq!(thumbnail_rows(&server, &bomb).await, 0);
    let (st, body) = server
        .get("/_matrix/client/v3/account/whoami", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let small = encoded(&picture(100, 50), ImageFormat::Png);
    let small = upload(&server, &alice, &small, Some("image/png"), None).await;
    assert_eq!(
        thumb_dims(
            &server,
            &small,
            "width=32&height=32&method=crop",
            alice.token()
        )
        .await,
        (32, 32)
    );
}

/// A server (default config), alice, and her 100×50 PNG's media id.
async fn with_a_picture() -> (TestServer, Session, String) {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let png = encoded(&picture(100, 50), ImageFormat::Png);
    let id = upload(&server, &alice, &png, Some("image/png"), None).await;
    (server, alice, id)
}

#[tokio::test]
async fn unknown_remote_and_unauthenticated() {
    let (server, alice, id) = with_a_picture().await;
    let path = thumb_v1(&server, "nosuchmediaid", "width=32&height=32");
    assert_error(
        &download(&server, &path, alice.token()).await.error(),
        404,
        "M_NOT_FOUND",
    );
    let path = format!("/_matrix/client/v1/media/thumbnail/other.example/{id}?width=32&height=32");
    assert_error(
        &download(&server, &path, alice.token()).await.error(),
        404,
        "M_NOT_FOUND",
    );
    let path = thumb_v1(&server, &id, "width=32&height=32");
    assert_error(
        &download(&server, &path, None).await.error(),
        401,
        "M_MISSING_TOKEN",
    );
    // Quarantined: 404 but to admins.
    let admin = server.admin("root").await;
    let by = Some(admin.user_id.as_str());
    let quarantined = server.services().media.set_quarantined(&id, by).await;
    assert!(quarantined.expect("quarantined"), "no such media");
    let got = download(&server, &path, alice.token()).await;
    assert_error(&got.error(), 404, "M_NOT_FOUND");
    assert_eq!(
        // (The picture itself, made now or in the background.)
        thumb_dims(&server, &id, "width=100&height=50", admin.token()).await,
        (100, 50)
    );
}

#[tokio::test]
async fn legacy_thumbnail_serves_only_media_from_before_authenticated_media() {
    let mut server = TestServer::start_with(|c| {
        c.media.enable_authenticated_media = false;
        c.media.thumbnail_sizes.clear();
    })
    .await;
    let alice = server.user("alice").await;
    let png = encoded(&picture(100, 50), ImageFormat::Png);
    let old = upload(&server, &alice, &png, Some("image/png"), None).await;
    // Served without a token; a thumbnail's own size.
    let legacy_dims = async |server: &TestServer, query| {
        dims(&fetch(server, &thumb_v3(server, &old, query), None).await.0)
    };
    assert_eq!(
        legacy_dims(&server, "width=32&height=32&method=crop").await,
        (32, 32)
    );

    server.config.media.enable_authenticated_media = true;
    server.restart().await;
    assert_eq!(legacy_dims(&server, "width=40&height=40").await, (40, 20));
    let new = upload(&server, &alice, &png, Some("image/png"), None).await;
    let path = thumb_v3(&server, &new, "width=32&height=32");
    assert_error_for(
        &path,
        &download(&server, &path, None).await.error(),
        404,
        "M_NOT_FOUND",
    );
    assert_error_for(
        &path,
        &download(&server, &path, alice.token()).await.error(),
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        thumb_dims(&server, &new, "width=32&height=32", alice.token()).await,
        (32, 16)
    );
}

#[tokio::test]
async fn bad_parameters_are_400() {
    let (server, alice, id) = with_a_picture().await;
    for (query, errcode) in [
        ("height=32", "M_MISSING_PARAM"),
        ("width=32", "M_MISSING_PARAM"),
        ("", "M_MISSING_PARAM"),
        ("width=abc&height=32", "M_INVALID_PARAM"),
        ("width=32&height=-1", "M_INVALID_PARAM"),
        ("width=0&height=32", "M_INVALID_PARAM"),
        ("width=99999999999&height=32", "M_INVALID_PARAM"),
        ("width=32&height=32&method=zoom", "M_INVALID_PARAM"),
        ("width=32&height=32&animated=maybe", "M_INVALID_PARAM"),
        ("width=32&height=32&timeout_ms=soon", "M_INVALID_PARAM"),
        ("width=32&height=32&allow_remote=2", "M_INVALID_PARAM"),
    ] {
        let path = thumb_v1(&server, &id, query);
        assert_error_for(
            &path,
            &download(&server, &path, alice.token()).await.error(),
            400,
            errcode,
        );
    }
}

#[tokio::test]
async fn a_pending_upload_is_waited_for() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (st, created) = server
        .post(
            "/_matrix/media/v1/create",
            alice.token(),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let id = media_id_of(&server, &created["content_uri"]);
    let path = thumb_v1(&server, &id, "width=32&height=32&method=crop&timeout_ms=0");
    let got = download(&server, &path, alice.token()).await;
    assert_error(&got.error(), 504, "M_NOT_YET_UPLOADED");

    // A thumbnail asked for while the body has not come yet gets it when it does.
    let path = thumb_v1(
        &server,
        &id,
        "width=32&height=32&method=crop&timeout_ms=20000",
    );
    let waiting = spawn_get(&server, &path, alice.token());
    wait_until(
        "a parked thumbnail request",
        Duration::from_secs(10),
        || async {
            let n = server.services().media.waiting_downloads();
            if n == 1 {
                Ok(())
            } else {
                Err(format!("{n} waiting"))
            }
        },
    )
    .await;
    let png = encoded(&picture(100, 50), ImageFormat::Png);
    let (st, body) = send_bytes(
        &server,
        reqwest::Method::PUT,
        &format!("/_matrix/media/v3/upload/{}/{id}", server.server_name),
        alice.token(),
        Some("image/png"),
        png,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, bytes) = waiting.await.expect("joined");
    assert_eq!(st, StatusCode::OK);
    let image = image::load_from_memory(&bytes).expect("an image");
    assert_eq!(dims(&image), (32, 32));
    // The configured sizes are made for an asynchronous upload too (the
    // 32×32 crop perhaps by the request above): the crops, and the three
    // scales are one, the picture itself (a scale never enlarges).
    wait_for_rows(&server, &id, 3).await;
}
