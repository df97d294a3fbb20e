//! Content repository helpers: uploads with raw bodies, downloads with
//! their headers and bytes, and what the media store holds.

use std::path::PathBuf;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{Session, TestServer, enc};

/// `POST /_matrix/media/v3/upload`, legacy and only path.
pub const UPLOAD: &str = "/_matrix/media/v3/upload";
/// The authenticated download prefix (`{server}/{id}[/{name}]` follows).
pub const DOWNLOAD_V1: &str = "/_matrix/client/v1/media/download";
/// The unauthenticated legacy download prefix.
pub const DOWNLOAD_V3: &str = "/_matrix/media/v3/download";

/// A download's answer: status, headers, and the body's bytes.
pub struct Download {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Download {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }

    /// The body as JSON (an error's).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }

    /// (status, JSON body), for [`super::assert_error`].
    pub fn error(&self) -> (StatusCode, Value) {
        (self.status, self.json())
    }
}

/// Sends `body` with `method` to `path` (a content type when given); the
/// status and JSON answer.
pub async fn send_bytes(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = server.client.request(method, server.url(path)).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let value = resp.json().await.expect("JSON answer");
    (status, value)
}

/// `POST /upload` (`?filename=` when given); the answer as it is.
pub async fn try_upload(
    server: &TestServer,
    who: &Session,
    body: &[u8],
    content_type: Option<&str>,
    filename: Option<&str>,
) -> (StatusCode, Value) {
    let path = match filename {
        Some(name) => format!("{UPLOAD}?filename={}", enc(name)),
        None => UPLOAD.to_owned(),
    };
    send_bytes(
        server,
        reqwest::Method::POST,
        &path,
        who.token(),
        content_type,
        body.to_vec(),
    )
    .await
}

/// Uploads `body`; asserts 200 and returns the media id of its
/// `mxc://{server}/{id}`.
pub async fn upload(
    server: &TestServer,
    who: &Session,
    body: &[u8],
    content_type: Option<&str>,
    filename: Option<&str>,
) -> String {
    let (st, answer) = try_upload(server, who, body, content_type, filename).await;
    assert_eq!(st, StatusCode::OK, "upload: {answer}");
    media_id_of(server, &answer["content_uri"])
}

/// The media id of an `mxc://` URI of this server.
#[track_caller]
pub fn media_id_of(server: &TestServer, uri: &Value) -> String {
    let uri = uri
        .as_str()
        .unwrap_or_else(|| panic!("no content_uri: {uri}"));
    let prefix = format!("mxc://{}/", server.server_name);
    uri.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{uri} is not an mxc URI of {prefix}"))
        .to_owned()
}

/// GETs `path` (with a token when given) and reads the whole answer.
pub async fn download(server: &TestServer, path: &str, token: Option<&str>) -> Download {
    let mut req = server.client.get(server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body read").to_vec();
    Download {
        status,
        headers,
        bytes,
    }
}

/// The authenticated download path of local media `id`.
pub fn download_v1(server: &TestServer, id: &str) -> String {
    format!("{DOWNLOAD_V1}/{}/{id}", server.server_name)
}

/// The legacy download path of local media `id`.
pub fn download_v3(server: &TestServer, id: &str) -> String {
    format!("{DOWNLOAD_V3}/{}/{id}", server.server_name)
}

/// The bodies in the server's media store (files outside its `tmp/`, or
/// the objects under its S3 prefix).
pub fn stored_bodies(server: &TestServer) -> Vec<PathBuf> {
    if server.config.media.store == myelin::config::MediaStoreKind::S3 {
        let s3 = server.config.media.s3.as_ref().expect("S3 settings");
        return super::s3_objects(s3)
            .into_iter()
            .map(PathBuf::from)
            .collect();
    }
    let root = server.config.data_dir.join("media");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path == root.join("tmp") {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The files staged in the media store's `tmp/` (uploads being written).
pub fn staged_files(server: &TestServer) -> usize {
    std::fs::read_dir(server.config.data_dir.join("media").join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Reads one HTTP/1.1 answer with a `Content-Length` body from a raw
/// connection: its status and JSON body (`Value::Null` when empty).
pub async fn read_raw_answer(conn: &mut tokio::net::TcpStream) -> (u16, Value) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before an answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + len];
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).expect("JSON body")
    };
    (status, value)
}
