//! Content repository helpers: uploads with raw bodies, downloads with
//! their headers and bytes, and what the media store holds on disk.

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

/// The bodies in the server's media store (files outside its `tmp/`).
pub fn stored_bodies(server: &TestServer) -> Vec<PathBuf> {
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
