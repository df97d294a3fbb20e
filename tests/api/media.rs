//! The content repository: upload and download (bytes and headers), one
//! stored body per content, the size limit, asynchronous uploads,
//! authenticated media against the legacy download, quarantine, remote
//! media, bad parameters, and uploads cut off half-way.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::*;

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

#[tokio::test]
async fn upload_and_download_round_trip_with_headers() {
    let server = TestServer::start_with(|c| {
        c.media.max_upload_size = 123_456;
        // The JSON bodies' cap is not the uploads' (70,000 bytes below).
        c.limits.max_request_bytes = 1024;
        c.registration.allow_guests = true;
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    for path in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
    ] {
        let (st, body) = server.get(path, alice.token()).await;
        assert_eq!(st, StatusCode::OK, "{path}: {body}");
        assert_eq!(body, json!({"m.upload.size": 123_456}), "{path}");
        assert_error_for(path, &server.get(path, None).await, 401, "M_MISSING_TOKEN");
    }

    let text = b"hello, media\n".to_vec();
    let id = upload(
        &server,
        &alice,
        &text,
        Some("text/plain"),
        Some("hello world.txt"),
    )
    .await;
    assert_eq!(id.len(), 24, "{id}");
    // Another user downloads it: bytes and every header.
    let got = download(&server, &download_v1(&server, &id), bob.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, text);
    assert_eq!(got.header("content-type"), "text/plain");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"hello world.txt\""
    );
    assert_eq!(got.header("content-length"), text.len().to_string());
    assert_eq!(got.header("content-security-policy"), CSP);
    assert_eq!(got.header("x-content-type-options"), "nosniff");
    assert_eq!(got.header("cross-origin-resource-policy"), "cross-origin");
    // A name in the path replaces the uploaded one.
    let named = download(
        &server,
        &format!("{}/other.txt", download_v1(&server, &id)),
        bob.token(),
    )
    .await;
    assert_eq!(named.status, StatusCode::OK);
    assert_eq!(named.bytes, text);
    assert_eq!(
        named.header("content-disposition"),
        "inline; filename=other.txt"
    );
    // No token: 401.
    let anon = download(&server, &download_v1(&server, &id), None).await;
    assert_error(&anon.error(), 401, "M_MISSING_TOKEN");

    // A type outside the spec's safe list is an attachment; a non-ASCII
    // name is RFC 8187-encoded.
    let html = b"<script>alert(1)</script>".to_vec();
    let id = upload(
        &server,
        &alice,
        &html,
        Some("text/html"),
        Some("grüße.html"),
    )
    .await;
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.bytes, html);
    assert_eq!(got.header("content-type"), "text/html");
    assert_eq!(
        got.header("content-disposition"),
        "attachment; filename*=utf-8''gr%C3%BC%C3%9Fe.html"
    );
    assert_eq!(got.header("content-security-policy"), CSP);

    // No type and no name: application/octet-stream, attachment.
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let id = upload(&server, &bob, &blob, None, None).await;
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, blob);
    assert_eq!(got.header("content-type"), "application/octet-stream");
    assert_eq!(got.header("content-disposition"), "attachment");
    assert_eq!(got.header("content-length"), "70000");
    let row = server
        .sql_count(&format!(
            "SELECT size FROM media WHERE media_id = '{id}' AND uploader = '{}' AND sha256 IS NOT NULL",
            bob.user_id
        ))
        .await;
    assert_eq!(row, 70_000);

    // An empty file is a file; HEAD gives its headers alone.
    let empty = upload(&server, &alice, b"", Some("text/plain"), None).await;
    let got = download(&server, &download_v1(&server, &empty), bob.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.bytes.is_empty());
    assert_eq!(got.header("content-length"), "0");
    let head = server
        .client
        .head(server.url(&download_v1(&server, &id)))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "70000");
    assert_eq!(head.headers()["content-security-policy"], CSP);

    // Uploading needs a full account.
    let (st, body) = send_bytes(&server, Method::POST, UPLOAD, None, None, b"x".to_vec()).await;
    assert_error(&(st, body), 401, "M_MISSING_TOKEN");
    let guest = server.guest().await;
    let (st, body) = try_upload(&server, &guest, b"x", None, None).await;
    assert_error(&(st, body), 403, "M_GUEST_ACCESS_FORBIDDEN");
    // Guests may read media, as they may read rooms.
    let got = download(&server, &download_v1(&server, &id), guest.token()).await;
    assert_eq!((got.status, got.bytes), (StatusCode::OK, blob));
}

#[tokio::test]
async fn identical_uploads_are_stored_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let body = b"the same bytes twice".to_vec();
    let first = upload(&server, &alice, &body, Some("text/plain"), Some("a.txt")).await;
    let second = upload(
        &server,
        &bob,
        &body,
        Some("application/json"),
        Some("b.json"),
    )
    .await;
    assert_ne!(first, second);
    assert_eq!(
        stored_bodies(&server).len(),
        1,
        "{:?}",
        stored_bodies(&server)
    );
    // Each id keeps its own metadata.
    let a = download(&server, &download_v1(&server, &first), bob.token()).await;
    let b = download(&server, &download_v1(&server, &second), alice.token()).await;
    assert_eq!((a.bytes.clone(), b.bytes.clone()), (body.clone(), body));
    assert_eq!(a.header("content-type"), "text/plain");
    assert_eq!(b.header("content-type"), "application/json");
    assert_eq!(b.header("content-disposition"), "inline; filename=b.json");
    // Different bytes: a second body.
    upload(&server, &alice, b"other bytes", None, None).await;
    assert_eq!(stored_bodies(&server).len(), 2);
    assert_eq!(staged_files(&server), 0);
}

/// Writes a chunked upload of `chunks` chunks of 1000 bytes on a raw
/// connection; the answer's status.
async fn chunked_upload(server: &TestServer, token: &str, chunks: usize) -> u16 {
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("3e8\r\n{}\r\n", "z".repeat(1000));
    for _ in 0..chunks {
        // The server may answer 413 and close before the last chunk.
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    read_raw_answer(&mut conn).await.0
}

#[tokio::test]
async fn uploads_past_the_size_limit_are_refused_and_leave_nothing() {
    let server = TestServer::start_with(|c| c.media.max_upload_size = 4000).await;
    let alice = server.user("alice").await;
    // Declared too large: refused before the body is read.
    let (st, body) = try_upload(&server, &alice, &[7u8; 4001], Some("image/png"), None).await;
    assert_error(&(st, body), 413, "M_TOO_LARGE");
    // Chunked, no length: refused once past the limit while streaming.
    assert_eq!(chunked_upload(&server, &alice.access_token, 10).await, 413);
    assert_eq!(server.sql_count("SELECT COUNT(*) FROM media").await, 0);
    assert!(
        stored_bodies(&server).is_empty(),
        "{:?}",
        stored_bodies(&server)
    );
    wait_until("no staged file", Duration::from_secs(10), || async {
        match staged_files(&server) {
            0 => Ok(()),
            n => Err(format!("{n} staged")),
        }
    })
    .await;
    // At the limit: accepted, chunked or not.
    let id = upload(&server, &alice, &[7u8; 4000], None, None).await;
    assert_eq!(
        download(&server, &download_v1(&server, &id), alice.token())
            .await
            .bytes
            .len(),
        4000
    );
    assert_eq!(chunked_upload(&server, &alice.access_token, 4).await, 200);
    assert_eq!(server.sql_count("SELECT COUNT(*) FROM media").await, 2);
}

/// `POST /_matrix/media/v1/create`: the answer as it is.
async fn create(server: &TestServer, who: &Session) -> (StatusCode, serde_json::Value) {
    server
        .post("/_matrix/media/v1/create", who.token(), json!({}))
        .await
}

/// `PUT /_matrix/media/v3/upload/{server}/{id}` of `body`.
async fn put_media(
    server: &TestServer,
    who: &Session,
    id: &str,
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    send_bytes(
        server,
        Method::PUT,
        &format!(
            "/_matrix/media/v3/upload/{}/{id}?filename=late.txt",
            server.server_name
        ),
        who.token(),
        Some("text/plain"),
        body.to_vec(),
    )
    .await
}

#[tokio::test]
async fn asynchronous_uploads() {
    let server = TestServer::start_with(|c| c.media.max_pending_uploads = 2).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let before = server.now_ms();
    let (st, created) = create(&server, &alice).await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let id = media_id_of(&server, &created["content_uri"]);
    let expires = created["unused_expires_at"]
        .as_i64()
        .expect("unused_expires_at");
    assert!(expires >= before + 24 * 3600 * 1000, "{created}");

    // Not there yet: 504 once the (short) wait is over.
    let early = download(
        &server,
        &format!("{}?timeout_ms=50", download_v1(&server, &id)),
        bob.token(),
    )
    .await;
    assert_error(&early.error(), 504, "M_NOT_YET_UPLOADED");

    // A download waiting for it is answered by the upload.
    let waiting = {
        let path = server.url(&format!("{}?timeout_ms=60000", download_v1(&server, &id)));
        let req = server.client.get(path).bearer_auth(&bob.access_token);
        tokio::spawn(async move {
            let resp = req.send().await.expect("sent");
            (resp.status(), resp.bytes().await.expect("body").to_vec())
        })
    };
    wait_until("a waiting download", Duration::from_secs(10), || async {
        match server.services().media.waiting_downloads() {
            0 => Err("none waiting".to_owned()),
            _ => Ok(()),
        }
    })
    .await;

    // Only its creator uploads to it.
    assert_error(
        &put_media(&server, &bob, &id, b"not yours").await,
        403,
        "M_FORBIDDEN",
    );
    let (st, body) = put_media(&server, &alice, &id, b"arrived late").await;
    assert_eq!((st, body), (StatusCode::OK, json!({})));
    let (st, bytes) = waiting.await.unwrap();
    assert_eq!((st, bytes), (StatusCode::OK, b"arrived late".to_vec()));
    // Once.
    assert_error(
        &put_media(&server, &alice, &id, b"again").await,
        409,
        "M_CANNOT_OVERWRITE_MEDIA",
    );
    let got = download(&server, &download_v1(&server, &id), bob.token()).await;
    assert_eq!(got.bytes, b"arrived late");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=late.txt"
    );

    // Unknown ids and other servers' ids: 404.
    assert_error(
        &put_media(&server, &alice, "nosuchmediaid", b"x").await,
        404,
        "M_NOT_FOUND",
    );
    let (st, body) = send_bytes(
        &server,
        Method::PUT,
        &format!("/_matrix/media/v3/upload/other.example/{id}"),
        alice.token(),
        None,
        b"x".to_vec(),
    )
    .await;
    assert_error(&(st, body), 404, "M_NOT_FOUND");

    // Two pending at most; an upload frees a place.
    let (st, first) = create(&server, &alice).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let (st, second) = create(&server, &alice).await;
    assert_eq!(st, StatusCode::OK, "{second}");
    assert_error(&create(&server, &alice).await, 429, "M_LIMIT_EXCEEDED");
    // Another user has places of their own.
    assert_eq!(create(&server, &bob).await.0, StatusCode::OK);
    let first = media_id_of(&server, &first["content_uri"]);
    assert_eq!(
        put_media(&server, &alice, &first, b"done").await.0,
        StatusCode::OK
    );
    assert_eq!(create(&server, &alice).await.0, StatusCode::OK);
    assert_eq!(server.sql_count("SELECT COUNT(*) FROM media").await, 5);
}

#[tokio::test]
async fn a_pending_upload_lapses() {
    let server = TestServer::start_with_mock_clock(|c| {
        c.media.max_pending_uploads = 1;
        c.media.unused_expiration_secs = 60;
    })
    .await;
    let alice = server.user("alice").await;
    let (st, created) = create(&server, &alice).await;
    assert_eq!(st, StatusCode::OK, "{created}");
    assert_eq!(
        created["unused_expires_at"].as_i64(),
        Some(server.now_ms() + 60_000)
    );
    let id = media_id_of(&server, &created["content_uri"]);
    assert_error(&create(&server, &alice).await, 429, "M_LIMIT_EXCEEDED");
    server.advance(Duration::from_secs(61));
    assert_error(
        &put_media(&server, &alice, &id, b"too late").await,
        404,
        "M_NOT_FOUND",
    );
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_error(&got.error(), 404, "M_NOT_FOUND");
    // A lapsed reservation no longer counts.
    assert_eq!(create(&server, &alice).await.0, StatusCode::OK);
    assert!(stored_bodies(&server).is_empty());
}

#[tokio::test]
async fn legacy_download_serves_only_media_from_before_authenticated_media() {
    let mut server = TestServer::start_with(|c| c.media.enable_authenticated_media = false).await;
    let alice = server.user("alice").await;
    let old = upload(&server, &alice, b"old media", Some("text/plain"), None).await;
    let got = download(&server, &download_v3(&server, &old), None).await;
    assert_eq!(
        (got.status, got.bytes.clone()),
        (StatusCode::OK, b"old media".to_vec())
    );
    assert_eq!(got.header("content-security-policy"), CSP);
    let named = download(
        &server,
        &format!("{}/x.txt", download_v3(&server, &old)),
        None,
    )
    .await;
    assert_eq!(
        named.header("content-disposition"),
        "inline; filename=x.txt"
    );

    // Switched on: what was uploaded before stays served there, new
    // uploads are not.
    server.config.media.enable_authenticated_media = true;
    server.restart().await;
    let got = download(&server, &download_v3(&server, &old), None).await;
    assert_eq!(
        (got.status, got.bytes),
        (StatusCode::OK, b"old media".to_vec())
    );
    let new = upload(&server, &alice, b"new media", Some("text/plain"), None).await;
    for path in [
        download_v3(&server, &new),
        format!("{}/x.txt", download_v3(&server, &new)),
    ] {
        let got = download(&server, &path, None).await;
        assert_error_for(&path, &got.error(), 404, "M_NOT_FOUND");
        // A token changes nothing there.
        let got = download(&server, &path, alice.token()).await;
        assert_error_for(&path, &got.error(), 404, "M_NOT_FOUND");
    }
    let got = download(&server, &download_v1(&server, &new), alice.token()).await;
    assert_eq!(
        (got.status, got.bytes),
        (StatusCode::OK, b"new media".to_vec())
    );
    let got = download(&server, &download_v1(&server, &old), alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn quarantined_media_is_served_to_admins_only() {
    let server = TestServer::start_with(|c| c.media.enable_authenticated_media = false).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let id = upload(&server, &alice, b"bad content", Some("image/png"), None).await;
    let media = &server.services().media;
    assert!(
        media
            .set_quarantined(&id, Some(&admin.user_id))
            .await
            .unwrap()
    );
    assert!(
        !media
            .set_quarantined("nosuchmediaid", Some(&admin.user_id))
            .await
            .unwrap()
    );
    for (who, token) in [("uploader", alice.token()), ("anonymous", None)] {
        let got = download(&server, &download_v3(&server, &id), token).await;
        assert_error_for(who, &got.error(), 404, "M_NOT_FOUND");
    }
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_error(&got.error(), 404, "M_NOT_FOUND");
    let got = download(&server, &download_v1(&server, &id), admin.token()).await;
    assert_eq!(
        (got.status, got.bytes),
        (StatusCode::OK, b"bad content".to_vec())
    );
    // Released: served again.
    assert!(media.set_quarantined(&id, None).await.unwrap());
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_and_remote_media_are_not_found() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let got = download(
        &server,
        &download_v1(&server, "nosuchmediaid"),
        alice.token(),
    )
    .await;
    assert_error(&got.error(), 404, "M_NOT_FOUND");
    for path in [
        format!("{DOWNLOAD_V1}/matrix.org/someid"),
        format!("{DOWNLOAD_V1}/matrix.org/someid/name.png"),
        format!("{DOWNLOAD_V3}/matrix.org/someid"),
        format!("{DOWNLOAD_V3}/matrix.org/someid?allow_remote=false"),
    ] {
        let got = download(&server, &path, alice.token()).await;
        let err = got.error();
        assert_error_for(&path, &err, 404, "M_NOT_FOUND");
        assert!(
            err.1["error"].as_str().unwrap().contains("federate"),
            "{path}: {}",
            err.1
        );
    }
}

#[tokio::test]
async fn bad_parameters_are_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let id = upload(&server, &alice, b"x", None, None).await;
    let v1 = download_v1(&server, &id);
    let cases = [
        (
            format!("{DOWNLOAD_V1}/not%20a%20server/{id}"),
            "M_INVALID_PARAM",
        ),
        (format!("{v1}?timeout_ms=soon"), "M_INVALID_PARAM"),
        (format!("{v1}?timeout_ms=-5"), "M_INVALID_PARAM"),
        (
            format!("{}?allow_remote=maybe", download_v3(&server, &id)),
            "M_INVALID_PARAM",
        ),
        (
            format!("{}?allow_redirect=2", download_v3(&server, &id)),
            "M_INVALID_PARAM",
        ),
    ];
    for (path, errcode) in cases {
        let got = download(&server, &path, alice.token()).await;
        assert_error_for(&path, &got.error(), 400, errcode);
    }
    // Accepted: allow_redirect, allow_remote and a timeout on either endpoint.
    for path in [
        format!("{v1}?timeout_ms=1000&allow_redirect=true"),
        format!(
            "{}?allow_remote=true&allow_redirect=false&timeout_ms=5",
            download_v3(&server, &id)
        ),
    ] {
        let got = download(&server, &path, alice.token()).await;
        let expected = if path.starts_with(DOWNLOAD_V3) {
            StatusCode::NOT_FOUND // authenticated media, legacy endpoint
        } else {
            StatusCode::OK
        };
        assert_eq!(got.status, expected, "{path}");
    }
    let (st, body) = send_bytes(
        &server,
        Method::PUT,
        "/_matrix/media/v3/upload/bad%20server/abc",
        alice.token(),
        None,
        b"x".to_vec(),
    )
    .await;
    assert_error(&(st, body), 400, "M_INVALID_PARAM");
    let long_name = "n".repeat(2000);
    let (st, body) = try_upload(&server, &alice, b"x", None, Some(&long_name)).await;
    assert_error(&(st, body), 400, "M_INVALID_PARAM");
    assert_eq!(server.sql_count("SELECT COUNT(*) FROM media").await, 1);
}

/// Cut off within the first write batch, and after several batches were
/// written to the staged file.
#[tokio::test]
async fn an_upload_cut_off_half_way_leaves_nothing() {
    for (sent, declared) in [(30_000, 100_000), (3 * 1024 * 1024 + 5, 10 * 1024 * 1024)] {
        cut_off_upload_leaves_nothing(sent, declared).await;
    }
}

async fn cut_off_upload_leaves_nothing(sent: usize, declared: usize) {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {UPLOAD}?filename=half.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {declared}\r\n\r\n",
        alice.access_token
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&vec![1u8; sent]).await.unwrap();
    // The server is writing it...
    wait_until("a staged upload", Duration::from_secs(10), || async {
        match staged_files(&server) {
            0 => Err("nothing staged".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    // ...when the client goes away.
    drop(conn);
    wait_until(
        "the staged upload gone",
        Duration::from_secs(10),
        || async {
            match staged_files(&server) {
                0 => Ok(()),
                n => Err(format!("{n} staged")),
            }
        },
    )
    .await;
    assert_eq!(server.sql_count("SELECT COUNT(*) FROM media").await, 0);
    assert!(
        stored_bodies(&server).is_empty(),
        "{:?}",
        stored_bodies(&server)
    );
    // The server goes on.
    upload(&server, &alice, b"whole", None, None).await;
    assert_eq!(stored_bodies(&server).len(), 1);
}

#[tokio::test]
async fn an_upload_may_take_longer_than_a_json_body() {
    let server = TestServer::start_with(|c| {
        c.limits.body_read_timeout_secs = 1;
        c.media.upload_timeout_secs = 60;
    })
    .await;
    let alice = server.user("alice").await;
    let mut upload_conn = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 2000\r\n\r\n",
        alice.access_token
    );
    upload_conn.write_all(head.as_bytes()).await.unwrap();
    upload_conn.write_all(&[5u8; 1000]).await.unwrap();
    wait_until("a staged upload", Duration::from_secs(10), || async {
        match staged_files(&server) {
            0 => Err("nothing staged".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    // A JSON body begun after it, as slow, runs out of time: the upload has
    // waited longer than limits.body_read_timeout_secs by then.
    let mut json_conn = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /_matrix/client/v3/createRoom HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{",
        alice.access_token
    );
    json_conn.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = read_raw_answer(&mut json_conn).await;
    assert_eq!(status, 408, "{body}");
    // The upload is still being received.
    upload_conn.write_all(&[5u8; 1000]).await.unwrap();
    let (status, body) = read_raw_answer(&mut upload_conn).await;
    assert_eq!(status, 200, "{body}");
    let id = media_id_of(&server, &body["content_uri"]);
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.bytes, vec![5u8; 2000]);
}

/// matrix-sdk (and other clients) use the authenticated media endpoints
/// only when `/versions` says v1.11 or `org.matrix.msc3916.stable`; without
/// the flag they download new uploads through the legacy endpoint, which
/// answers 404 for them. The flag is there and the endpoints it names answer.
#[tokio::test]
async fn versions_advertise_the_authenticated_media_endpoints() {
    let server = TestServer::start().await;
    let (st, v) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["unstable_features"]["org.matrix.msc3916.stable"], true,
        "{v}"
    );
    let alice = server.user("alice").await;
    let id = upload(&server, &alice, b"flagged", None, None).await;
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(
        (got.status, got.bytes),
        (StatusCode::OK, b"flagged".to_vec())
    );
    let (st, config) = server
        .get("/_matrix/client/v1/media/config", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{config}");
}

/// `media.upload_limits`: what one user uploads within the period is
/// capped (403 `M_RESOURCE_LIMIT_EXCEEDED`, as Synapse's
/// `media_upload_limits` with the spec's status for a quota), others are
/// not, deleted media frees its bytes, the period moves on, asynchronous
/// uploads count, and `/media/config` does not change.
#[tokio::test]
async fn per_user_upload_limits() {
    let server = TestServer::start_with_mock_clock(|c| {
        c.media.upload_limits = vec![myelin::config::UploadLimit {
            time_period_secs: 3600,
            max_bytes: 3000,
        }];
        c.media.upload_limit_contact = "mailto:admin@test.local".into();
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let admin = server.admin("admin").await;
    let (st, config) = server
        .get("/_matrix/client/v1/media/config", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        config,
        json!({"m.upload.size": myelin::config::MediaConfig::default().max_upload_size})
    );

    let first = upload(&server, &alice, &[1u8; 2000], None, None).await;
    // Declared past what is left: refused before the body is read.
    let refused = try_upload(&server, &alice, &[2u8; 1001], None, None).await;
    assert_error(&refused, 403, "M_RESOURCE_LIMIT_EXCEEDED");
    assert_eq!(refused.1["admin_contact"], "mailto:admin@test.local");
    // Streamed without a length: refused once past it.
    assert_eq!(chunked_upload(&server, &alice.access_token, 2).await, 403);
    assert_eq!(server.sql_count("SELECT COUNT(*) FROM media").await, 1);
    // Another user has an allowance of their own.
    upload(&server, &bob, &[3u8; 3000], None, None).await;
    // Up to the limit exactly.
    upload(&server, &alice, &[4u8; 1000], None, None).await;
    assert_error(
        &try_upload(&server, &alice, &[5u8; 1], None, None).await,
        403,
        "M_RESOURCE_LIMIT_EXCEEDED",
    );
    // An asynchronous upload's body counts too.
    let (st, created) = create(&server, &alice).await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let pending = media_id_of(&server, &created["content_uri"]);
    assert_error(
        &put_media(&server, &alice, &pending, b"late").await,
        403,
        "M_RESOURCE_LIMIT_EXCEEDED",
    );

    // Deleting media gives its bytes back.
    let (st, body) = server
        .delete(
            &format!("/_synapse/admin/v1/media/{}/{first}", server.server_name),
            admin.token(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        put_media(&server, &alice, &pending, b"late").await.0,
        StatusCode::OK
    );
    upload(&server, &alice, &[6u8; 1996], None, None).await;
    assert_error(
        &try_upload(&server, &alice, &[7u8; 1], None, None).await,
        403,
        "M_RESOURCE_LIMIT_EXCEEDED",
    );
    // An hour later those uploads no longer count.
    server.advance(Duration::from_secs(3601));
    upload(&server, &alice, &[8u8; 3000], None, None).await;
}

/// Bodies larger than one read of the store (512 KiB) and one staged
/// write batch (1 MiB) come back whole, in order, with their exact length;
/// the file is complete in the store when the upload is answered (it is
/// synced to the disk before the row naming it is written); a `Range`
/// header is not served (the whole body, 200, as Synapse); a body found
/// shorter than its recorded size is 404, never served short. The local
/// store's files, so the S3 setting is turned off here.
#[tokio::test]
async fn large_bodies_round_trip_and_short_files_are_not_served() {
    let server = TestServer::start_with(|c| {
        c.media.store = myelin::config::MediaStoreKind::Local;
        c.media.s3 = None;
    })
    .await;
    let alice = server.user("alice").await;
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 7u32)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect();
    let id = upload(&server, &alice, &big, None, None).await;
    let bodies = stored_bodies(&server);
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    {
        use sha2::Digest;
        assert_eq!(
            bodies[0].file_name().and_then(|n| n.to_str()),
            Some(hex::encode(sha2::Sha256::digest(&big)).as_str()),
            "the body is stored under its sha256"
        );
    }
    assert_eq!(
        std::fs::read(&bodies[0]).unwrap(),
        big,
        "the stored file is the whole upload once it is answered"
    );
    assert_eq!(
        std::fs::read_dir(server.config.data_dir.join("media").join("tmp"))
            .unwrap()
            .count(),
        0,
        "nothing left staged"
    );
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-length"), big.len().to_string());
    assert!(got.bytes == big, "the download differs from the upload");
    // Not in the page cache: each read waits for the disk (on a blocking
    // thread) and the body is the same.
    evict_from_page_cache(&bodies[0]);
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(
        got.bytes == big,
        "the download read from the disk differs from the upload"
    );

    let ranged = server
        .client
        .get(server.url(&download_v1(&server, &id)))
        .bearer_auth(alice.token().unwrap())
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::OK);
    assert!(ranged.headers().get("content-range").is_none());
    assert!(
        ranged.bytes().await.unwrap() == big,
        "a ranged ask gets it all"
    );

    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&bodies[0])
        .unwrap();
    file.set_len(1000).unwrap();
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let answer: serde_json::Value = serde_json::from_slice(&got.bytes).unwrap();
    assert_eq!(answer["errcode"], "M_NOT_FOUND", "{answer}");
}

/// Asks the kernel to drop `path`'s pages from the page cache (they are
/// clean: the body was synced when uploaded).
fn evict_from_page_cache(path: &std::path::Path) {
    let file = std::fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}
