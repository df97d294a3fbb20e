//! The S3 media backend against a real S3 protocol server (moto, see
//! `harness/s3.rs`), whatever `MYELIN_TEST_MEDIA_STORE` says: uploads and
//! downloads (small, and multipart-sized), identical bodies stored once,
//! async uploads, thumbnails, deletion, a restart, cut-off uploads and an
//! unreachable bucket. Skipped (with a message) when there is no moto,
//! unless `MYELIN_REQUIRE_S3=1`.

use std::io::Cursor;
use std::time::Duration;

use myelin::config::{Config, MediaStoreKind, S3Config};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

/// A test server on moto (after `tweak`), or `None` when the test is skipped.
async fn s3_server(test: &str, tweak: impl FnOnce(&mut Config)) -> Option<TestServer> {
    let moto = moto_or_skip(test).await?;
    let s3 = moto.config();
    Some(
        TestServer::start_with(move |c| {
            c.media.store = MediaStoreKind::S3;
            c.media.s3 = Some(s3);
            tweak(c);
        })
        .await,
    )
}

fn s3_of(server: &TestServer) -> &S3Config {
    server.config.media.s3.as_ref().expect("S3 settings")
}

/// Bytes that do not compress or repeat (each test's own).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn bodies_go_to_the_bucket_once_each_and_come_back() {
    let Some(mut server) = s3_server("media_s3 round trip", |_| {}).await else {
        return;
    };
    let alice = server.user("alice").await;
    let body = noise(5000, 1);
    let first = upload(&server, &alice, &body, Some("text/plain"), Some("a.txt")).await;
    let second = upload(&server, &alice, &body, Some("application/json"), None).await;
    assert_ne!(first, second);
    // One object, under the server's prefix, nothing in the data dir but
    // the (empty) staging directory.
    let objects = stored_bodies(&server);
    assert_eq!(objects.len(), 1, "{objects:?}");
    let prefix = format!("{}/", s3_of(&server).prefix);
    assert!(
        objects[0].to_str().unwrap().starts_with(&prefix),
        "{objects:?}"
    );
    assert_eq!(staged_files(&server), 0);
    let local: Vec<_> = std::fs::read_dir(server.config.data_dir.join("media"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(local, ["tmp"], "only the staging directory is local");
    // Each id downloads with its own metadata and the exact length.
    let a = download(&server, &download_v1(&server, &first), alice.token()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.bytes, body);
    assert_eq!(a.header("content-type"), "text/plain");
    assert_eq!(a.header("content-length"), "5000");
    let b = download(&server, &download_v1(&server, &second), alice.token()).await;
    assert_eq!(b.header("content-type"), "application/json");
    assert_eq!(b.bytes, body);
    // Larger than one part (8 MiB): a multipart upload, whole when read back.
    let big = noise(9 * 1024 * 1024 + 123, 2);
    let id = upload(&server, &alice, &big, None, None).await;
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.header("content-length"), big.len().to_string());
    assert!(got.bytes == big, "the multipart body comes back whole");
    assert_eq!(stored_bodies(&server).len(), 2);
    // Unknown media: 404 as ever.
    let missing = download(&server, &download_v1(&server, "nosuchmedia"), alice.token()).await;
    assert_error(&missing.error(), 404, "M_NOT_FOUND");
    // After a restart the bucket still serves them.
    server.restart().await;
    let again = download(&server, &download_v1(&server, &first), alice.token()).await;
    assert_eq!(again.bytes, body);
}

#[tokio::test]
async fn async_uploads_land_in_the_bucket() {
    let Some(server) = s3_server("media_s3 async upload", |_| {}).await else {
        return;
    };
    let alice = server.user("alice").await;
    let (st, created) = server
        .post("/_matrix/media/v1/create", alice.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let id = media_id_of(&server, &created["content_uri"]);
    assert!(stored_bodies(&server).is_empty());
    let body = noise(3000, 3);
    let (st, answer) = send_bytes(
        &server,
        Method::PUT,
        &format!("/_matrix/media/v3/upload/{}/{id}", server.server_name),
        alice.token(),
        Some("application/pdf"),
        body.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{answer}");
    assert_eq!(stored_bodies(&server).len(), 1);
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.bytes, body);
    assert_eq!(got.header("content-type"), "application/pdf");
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
    });
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encoded");
    out.into_inner()
}

#[tokio::test]
async fn thumbnails_are_made_from_and_stored_in_the_bucket_and_deleted_from_it() {
    let Some(server) = s3_server("media_s3 thumbnails", |c| {
        c.media.thumbnail_sizes.clear();
    })
    .await
    else {
        return;
    };
    let alice = server.user("alice").await;
    let id = upload(&server, &alice, &png(400, 300), Some("image/png"), None).await;
    let path = format!(
        "/_matrix/client/v1/media/thumbnail/{}/{id}?width=96&height=96&method=crop",
        server.server_name
    );
    let got = download(&server, &path, alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    let thumb = image::load_from_memory(&got.bytes).expect("an image");
    assert_eq!((thumb.width(), thumb.height()), (96, 96));
    assert_eq!(
        stored_bodies(&server).len(),
        2,
        "the upload and its thumbnail"
    );
    // Asked again: served from the bucket, the same bytes.
    let again = download(&server, &path, alice.token()).await;
    assert_eq!(again.bytes, got.bytes);
    // Deleting the thumbnails deletes their objects, not the upload's.
    let media = &server.services().media;
    media
        .delete_thumbnails(&id)
        .await
        .expect("thumbnails deleted");
    let left = stored_bodies(&server);
    assert_eq!(left.len(), 1, "{left:?}");
    let original = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(original.status, StatusCode::OK);
    assert!(
        left[0]
            .to_str()
            .unwrap()
            .ends_with(&sha256_hex(&original.bytes)),
        "{left:?}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn a_cut_off_upload_leaves_no_object() {
    let Some(server) = s3_server("media_s3 cut-off upload", |c| {
        c.media.max_upload_size = 4000;
    })
    .await
    else {
        return;
    };
    let alice = server.user("alice").await;
    // Too large while streaming (chunked, no length): refused midway.
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        alice.access_token
    );
    use tokio::io::AsyncWriteExt;
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("3e8\r\n{}\r\n", "z".repeat(1000));
    for _ in 0..10 {
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    assert_eq!(read_raw_answer(&mut conn).await.0, 413);
    // A body that stops midway (the client goes away).
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 3000\r\n\r\n",
        alice.access_token
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[b'h'; 1000]).await.unwrap();
    drop(conn);
    wait_until("no staged file", Duration::from_secs(10), || async {
        match staged_files(&server) {
            0 => Ok(()),
            n => Err(format!("{n} staged")),
        }
    })
    .await;
    assert_eq!(server.sql_count("SELECT COUNT(*) FROM media").await, 0);
    assert!(stored_bodies(&server).is_empty());
    // The server goes on.
    upload(&server, &alice, b"whole", None, None).await;
    assert_eq!(stored_bodies(&server).len(), 1);
}

#[tokio::test]
async fn an_unreachable_bucket_fails_the_upload_cleanly() {
    // Needs no moto: nothing listens at the endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = TestServer::start_with(move |c| {
        c.media.store = MediaStoreKind::S3;
        c.media.s3 = Some(S3Config {
            bucket: "nowhere".into(),
            endpoint: Some(endpoint),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: true,
            ..S3Config::default()
        });
    })
    .await;
    let alice = server.user("alice").await;
    let answer = try_upload(&server, &alice, b"lost", Some("text/plain"), None).await;
    assert_error(&answer, 500, "M_UNKNOWN");
    assert_eq!(server.sql_count("SELECT COUNT(*) FROM media").await, 0);
    assert_eq!(staged_files(&server), 0);
    // The rest of the server still answers.
    assert_eq!(server.whoami(alice.token()).await.0, StatusCode::OK);
}
