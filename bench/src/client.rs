//! A small Matrix client for the scenarios: any homeserver, by base URL.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// What shared-secret registration (or a password login) answers.
#[derive(Debug, Clone)]
#[allow(dead_code)] // kept for the JSON of future scenarios (devices, to-device)
pub struct Registered {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

impl Client {
    /// `base` is the homeserver's client URL, e.g. `http://127.0.0.1:8008`.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::with_timeout(base, Duration::from_secs(60))
    }

    /// One HTTP client (one connection pool, shared by every clone and every
    /// [`Session`] made from it) whose requests give up after `timeout`.
    /// hyper opens as many connections to the server as there are requests
    /// in flight, so one pool carries thousands of long-polls.
    pub fn with_timeout(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Loopback benchmarks must not go through a proxy from the environment.
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// A client for one user, sharing this client's connection pool.
    pub fn session(&self, user: &Registered) -> Session {
        Session {
            client: self.clone(),
            user_id: user.user_id.clone(),
            device_id: user.device_id.clone(),
            token: format!("Bearer {}", user.access_token),
        }
    }

    /// `POST /_matrix/client/v3/login` with a password (for an account that
    /// exists already).
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<Registered> {
        let url = self.url("/_matrix/client/v3/login");
        let resp = self
            .http
            .post(&url)
            .json(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": username },
                "password": password,
                "initial_device_display_name": "myelin-bench",
            }))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url} for {username}: {status} {body}");
        }
        registered_from(&url, &body)
    }

    /// Shared-secret registration (an admin if `admin`), or a password login
    /// when the name is taken already (a re-run with the same `--prefix`).
    pub async fn register_or_login(
        &self,
        shared_secret: &str,
        username: &str,
        password: &str,
        admin: bool,
    ) -> anyhow::Result<Registered> {
        match self
            .register_shared_secret(shared_secret, username, password, admin)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) if format!("{e}").contains("M_USER_IN_USE") => {
                self.login(username, password).await
            }
            Err(e) => Err(e),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /_matrix/client/versions`: Ok(true) for a 200 whose body lists
    /// versions, Ok(false) for any other answer; Err when nothing answered
    /// (connection refused, reset, timeout).
    pub async fn versions_ok(&self) -> Result<bool, reqwest::Error> {
        let resp = self
            .http
            .get(self.url("/_matrix/client/versions"))
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Ok(false);
        }
        let body: Value = resp.json().await?;
        Ok(body.get("versions").is_some_and(Value::is_array))
    }

    /// Creates an account through `GET`/`POST /_synapse/admin/v1/register`
    /// (Synapse's shared-secret registration, which Myelin and Dendrite also serve).
    pub async fn register_shared_secret(
        &self,
        shared_secret: &str,
        username: &str,
        password: &str,
        admin: bool,
    ) -> anyhow::Result<Registered> {
        let url = self.url("/_synapse/admin/v1/register");
        let nonce_resp = self.http.get(&url).send().await?;
        let status = nonce_resp.status();
        let body: Value = nonce_resp.json().await.unwrap_or(Value::Null);
        let Some(nonce) = body.get("nonce").and_then(Value::as_str) else {
            bail!("GET {url}: {status}, no nonce in {body}");
        };
        let mac = shared_secret_mac(shared_secret, nonce, username, password, admin);
        let resp = self
            .http
            .post(&url)
            .json(&json!({
                "nonce": nonce,
                "username": username,
                "password": password,
                "admin": admin,
                "mac": mac,
            }))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url} for {username}: {status} {body}");
        }
        registered_from(&url, &body)
    }
}

fn registered_from(url: &str, body: &Value) -> anyhow::Result<Registered> {
    let field = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("POST {url}: no `{k}` in {body}"))
    };
    Ok(Registered {
        user_id: field("user_id")?,
        access_token: field("access_token")?,
        device_id: field("device_id")?,
    })
}

/// A failed Client-Server request: the HTTP status (None when nothing came
/// back: refused, reset, timed out) and what was said.
#[derive(Debug)]
pub struct RequestError {
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "HTTP {s}: {}", self.message),
            None => write!(f, "no answer: {}", self.message),
        }
    }
}

impl std::error::Error for RequestError {}

impl RequestError {
    /// A short key for tallies: `http 500`, `timeout`, `connect`, `io`.
    pub fn kind(&self) -> String {
        match self.status {
            Some(s) => format!("http {s}"),
            None if self.message.contains("timed out") => "timeout".into(),
            None if self.message.contains("connect") => "connect".into(),
            None => "io".into(),
        }
    }
}

fn transport(e: reqwest::Error) -> RequestError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() && !message.contains("timed out") {
        message.push_str(" (timed out)");
    }
    RequestError {
        status: None,
        message,
    }
}

/// One user's authenticated handle on the server (a clone of the shared
/// client plus an access token).
#[derive(Clone)]
pub struct Session {
    client: Client,
    pub user_id: String,
    pub device_id: String,
    token: String,
}

/// A `/sync` answer and its size on the wire (uncompressed: the bench sends
/// no Accept-Encoding).
pub struct SyncResponse {
    pub body: Value,
    pub bytes: usize,
    /// When the last byte of the answer arrived (before the tool parsed it).
    pub received: Instant,
}

impl SyncResponse {
    pub fn next_batch(&self) -> Option<&str> {
        self.body.get("next_batch").and_then(Value::as_str)
    }

    /// The joined rooms in this answer: (room id, its `timeline` object).
    pub fn joined_timelines(&self) -> Vec<(&str, &Value)> {
        self.body
            .pointer("/rooms/join")
            .and_then(Value::as_object)
            .map(|rooms| {
                rooms
                    .iter()
                    .map(|(id, room)| (id.as_str(), &room["timeline"]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Session {
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(Value, usize), RequestError> {
        self.request_received(method, path, query, body, timeout)
            .await
            .map(|(value, bytes, _)| (value, bytes))
    }

    /// [`Self::request`], and when the last byte of the answer arrived: what
    /// the server took, without the tool's own parsing of the body.
    async fn request_received(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(Value, usize, Instant), RequestError> {
        let body = body.map(|b| bytes::Bytes::from(b.to_string()));
        let (bytes, received) = self
            .request_bytes(method, path, query, body, timeout)
            .await?;
        let value = serde_json::from_slice(&bytes).map_err(|e| RequestError {
            status: Some(200),
            message: format!("bad JSON: {e}"),
        })?;
        Ok((value, bytes.len(), received))
    }

    /// The request (`body`: JSON text); a success's bytes and when the
    /// last one arrived, any other status as a [`RequestError`].
    async fn request_bytes(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<bytes::Bytes>,
        timeout: Option<Duration>,
    ) -> Result<(bytes::Bytes, Instant), RequestError> {
        let mut req = self
            .client
            .http
            .request(method, self.client.url(path))
            .header(reqwest::header::AUTHORIZATION, &self.token);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        let received = Instant::now();
        if !status.is_success() {
            return Err(RequestError {
                status: Some(status.as_u16()),
                message: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
            });
        }
        Ok((bytes, received))
    }

    /// A request to `path` with this session's token, to send and read as
    /// the caller likes (media: raw bodies up, streamed answers down).
    pub fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .http
            .request(method, self.client.url(path))
            .header(reqwest::header::AUTHORIZATION, &self.token)
    }

    /// `GET path` (a path with its query, already encoded); the JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value, RequestError> {
        self.request(reqwest::Method::GET, path, &[], None, None)
            .await
            .map(|(v, _)| v)
    }

    /// `POST path` with a JSON body; the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, RequestError> {
        self.request(reqwest::Method::POST, path, &[], Some(body), None)
            .await
            .map(|(v, _)| v)
    }

    /// `method path` with a JSON body; the answer's bytes (not parsed) and
    /// when its last byte arrived, for a timed request whose answer the
    /// caller checks after stopping the clock.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: bytes::Bytes,
    ) -> Result<(bytes::Bytes, Instant), RequestError> {
        self.request_bytes(method, path, &[], Some(body), None)
            .await
    }

    /// `POST /createRoom`; returns the room id.
    pub async fn create_room(&self, body: &Value) -> Result<String, RequestError> {
        let (v, _) = self
            .request(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                &[],
                Some(body),
                None,
            )
            .await?;
        v.get("room_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| RequestError {
                status: Some(200),
                message: format!("no room_id in {v}"),
            })
    }

    /// `POST /join/{roomIdOrAlias}`.
    pub async fn join(&self, room: &str) -> Result<(), RequestError> {
        let path = format!("/_matrix/client/v3/join/{}", encode_segment(room));
        self.request(reqwest::Method::POST, &path, &[], Some(&json!({})), None)
            .await
            .map(drop)
    }

    /// `PUT /rooms/{room}/send/m.room.message/{txn}`; returns the event id.
    pub async fn send_message(
        &self,
        room: &str,
        txn: &str,
        content: &Value,
    ) -> Result<String, RequestError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            encode_segment(room),
            encode_segment(txn)
        );
        let (v, _) = self
            .request(reqwest::Method::PUT, &path, &[], Some(content), None)
            .await?;
        v.get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| RequestError {
                status: Some(200),
                message: format!("no event_id in {v}"),
            })
    }

    /// `GET /sync`. `timeout_ms` is the long-poll; the request itself gives
    /// up 30 s after it.
    pub async fn sync(
        &self,
        since: Option<&str>,
        timeout_ms: u64,
        filter: Option<&str>,
    ) -> Result<SyncResponse, RequestError> {
        let timeout = timeout_ms.to_string();
        let mut query = vec![("timeout", timeout.as_str())];
        if let Some(s) = since {
            query.push(("since", s));
        }
        if let Some(f) = filter {
            query.push(("filter", f));
        }
        let (body, bytes, received) = self
            .request_received(
                reqwest::Method::GET,
                "/_matrix/client/v3/sync",
                &query,
                None,
                Some(Duration::from_millis(timeout_ms) + Duration::from_secs(30)),
            )
            .await?;
        Ok(SyncResponse {
            body,
            bytes,
            received,
        })
    }

    /// `GET /rooms/{room}/messages?dir=b&from=TOKEN&limit=N`.
    pub async fn messages_backwards(
        &self,
        room: &str,
        from: &str,
        limit: u32,
    ) -> Result<Value, RequestError> {
        let path = format!("/_matrix/client/v3/rooms/{}/messages", encode_segment(room));
        let limit = limit.to_string();
        self.request(
            reqwest::Method::GET,
            &path,
            &[("dir", "b"), ("from", from), ("limit", &limit)],
            None,
            None,
        )
        .await
        .map(|(v, _)| v)
    }

    /// `GET /rooms/{room}/joined_members`: how many.
    pub async fn joined_member_count(&self, room: &str) -> Result<usize, RequestError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            encode_segment(room)
        );
        let (v, _) = self
            .request(reqwest::Method::GET, &path, &[], None, None)
            .await?;
        Ok(v.get("joined")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len()))
    }
}

/// Percent-encodes one path segment (everything but RFC 3986's unreserved set).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Hex HMAC-SHA1 over `nonce \0 username \0 password \0 admin|notadmin`, as
/// Synapse's `register_new_matrix_user` computes it.
pub fn shared_secret_mac(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    for (i, part) in [
        nonce,
        username,
        password,
        if admin { "admin" } else { "notadmin" },
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Dendrite's test vectors (shared secret "dendritetest"), which Synapse agrees with.
    const NONCE: &str = "759f047f312b99ff428b21d581256f8592b8976e58bc1b543972dc6147e529a79657605b52d7becd160ff5137f3de11975684319187e06901955f79e5a6c5a79";

    #[test]
    fn mac_matches_dendrite_and_synapse_vectors() {
        assert_eq!(
            shared_secret_mac("dendritetest", NONCE, "alice", "wonderland", false),
            "f1ba8d37123866fd659b40de4bad9b0f8965c565"
        );
        assert_eq!(
            shared_secret_mac("dendritetest", NONCE, "alice", "wonderland", true),
            "24dca3bba410e43fe64b9b5c28306693bf3baa9f"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("!abc:localhost"), "%21abc%3Alocalhost");
        assert_eq!(encode_segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode_segment("x/y z"), "x%2Fy%20z");
    }

    #[test]
    fn base_url_trailing_slash_is_dropped() {
        let c = Client::new("http://127.0.0.1:8008/").unwrap();
        assert_eq!(
            c.url("/_matrix/client/versions"),
            "http://127.0.0.1:8008/_matrix/client/versions"
        );
    }
}
