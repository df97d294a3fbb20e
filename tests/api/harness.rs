//! Black-box test harness: starts a Myelin server on an ephemeral port with a
//! fresh database and talks HTTP to it.
//!
//! The backend comes from `MYELIN_TEST_BACKEND` (`sqlite`, the default, or
//! `postgres`). For PostgreSQL, `MYELIN_TEST_DATABASE_URL` must point at a
//! server where the user may create databases; every test server gets a new
//! database of its own. `MYELIN_TEST_MEDIA_STORE=s3` puts media bodies in
//! a moto S3 server (`harness/s3.rs`) instead of the data dir.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use myelin::clock::{Clock, MockClock, SharedClock, SystemClock};
use myelin::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "../common/scratch.rs"]
mod scratch;

mod admin;
mod appservice;
mod binary;
mod federation;
mod keys;
mod lists;
mod media;
mod pages;
mod push_gateway;
mod rooms;
mod s3;
mod sync;
mod tls_gateway;
mod to_device;
mod uia;

pub use admin::*;
pub use appservice::*;
pub use binary::*;
pub use federation::*;
pub use keys::*;
pub use lists::*;
pub use media::*;
pub use pages::*;
pub use push_gateway::*;
pub use rooms::*;
pub use s3::*;
pub use scratch::{backend, shared_secret_mac};
pub use sync::*;
pub use tls_gateway::*;
pub use to_device::*;
pub use uia::*;

pub const SHARED_SECRET: &str = "test-shared-secret";

pub struct TestServer {
    pub addr: SocketAddr,
    pub server_name: String,
    pub config: Config,
    pub client: reqwest::Client,
    pub running: Option<myelin::server::RunningServer>,
    /// The clock the server reads; a test started with
    /// [`TestServer::start_with_mock_clock`] moves it with
    /// [`TestServer::advance`].
    clock: SharedClock,
    mock_clock: Option<Arc<MockClock>>,
    /// PostgreSQL leg: this server's database, dropped with the server.
    _database: Option<myelin::storage::ScratchPostgresDatabase>,
    _dir: tempfile::TempDir,
}

/// The config every test server starts from: cheap password hashing, rate
/// limits off, shared-secret registration on, open registration on.
pub fn test_config() -> Config {
    let mut c = Config {
        server_name: "test.local".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.registration.enabled = true;
    c.registration.shared_secret = Some(SHARED_SECRET.into());
    c.rate_limits.enabled = false;
    c.password_hashing.memory_kib = 64;
    c.password_hashing.iterations = 1;
    c.log_level = "warn".into();
    // Push gateways and preview pages of the tests run on loopback.
    c.outbound.ip_range_blocklist.clear();
    c
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` has adjusted the test config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::launch(tweak, None).await
    }

    /// Starts a server whose clock stands still (at the current time) until
    /// the test moves it with [`TestServer::advance`]: expiries and ages
    /// are tested without waiting for time to pass.
    pub async fn start_with_mock_clock(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::launch(tweak, Some(Arc::new(MockClock::starting_now()))).await
    }

    async fn launch(tweak: impl FnOnce(&mut Config), mock_clock: Option<Arc<MockClock>>) -> Self {
        let clock: SharedClock = match &mock_clock {
            Some(c) => c.clone(),
            None => SystemClock::shared(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config();
        config.data_dir = dir.path().to_owned();
        let (url, database) = scratch::fresh_database(dir.path(), "myelin_test").await;
        config.database.url = url;
        config.database.max_connections = 4;
        if let Some(s3) = s3_from_env().await {
            config.media.store = myelin::config::MediaStoreKind::S3;
            config.media.s3 = Some(s3);
        }
        tweak(&mut config);
        let running = myelin::server::start_with(config.clone(), clock.clone())
            .await
            .expect("server starts");
        Self {
            addr: running.addr,
            server_name: config.server_name.clone(),
            config,
            client: reqwest::Client::new(),
            running: Some(running),
            clock,
            mock_clock,
            _database: database,
            _dir: dir,
        }
    }

    /// Stops the server and starts a new one on the same data dir and database.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        let running = myelin::server::start_with(self.config.clone(), self.clock.clone())
            .await
            .expect("server restarts");
        self.addr = running.addr;
        self.running = Some(running);
    }

    /// The running server's services (to observe, e.g. how many `/sync`s
    /// are parked).
    pub fn services(&self) -> &Arc<myelin::services::Services> {
        &self.running.as_ref().expect("server is running").services
    }

    /// The server's clock, in ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Moves the mock clock on (the server must have been started with
    /// [`TestServer::start_with_mock_clock`]).
    pub fn advance(&self, by: Duration) {
        self.mock_clock
            .as_ref()
            .expect("advance needs TestServer::start_with_mock_clock")
            .advance(by);
    }

    /// Waits until at least `n` long-polling `/sync`s are parked on the
    /// server (registered for wake-ups), so what the test does next
    /// happens while they wait.
    pub async fn wait_for_parked_syncs(&self, n: usize) {
        wait_until(
            &format!("{n} parked /sync"),
            Duration::from_secs(10),
            || async {
                let waiting = self.services().stream.waiting();
                if waiting >= n {
                    Ok(())
                } else {
                    Err(format!("{waiting} parked"))
                }
            },
        )
        .await
    }

    /// GETs `path` (200 expected) until `done` accepts the body (a
    /// background job's status, say); returns that body.
    pub async fn poll_get(
        &self,
        path: &str,
        token: Option<&str>,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(path, within, || async {
            let (st, b) = self.get(path, token).await;
            assert_eq!(st, StatusCode::OK, "{path}: {b}");
            if done(&b) { Ok(b) } else { Err(b.to_string()) }
        })
        .await
    }

    /// Runs one SQL statement directly against this server's database (to act
    /// as an operator would, e.g. `UPDATE accounts SET account_type = 3 ...`).
    pub async fn sql(&self, statement: &str) {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.config.database_url())
            .await
            .expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&pool)
            .await
            .expect("statement runs");
        pool.close().await;
    }

    /// Runs a `SELECT COUNT(*) ...`-style query and returns the first column
    /// (quote values in it with [`sql_quote`]).
    pub async fn sql_count(&self, query: &str) -> i64 {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.config.database_url())
            .await
            .expect("connect");
        let row = sqlx::query(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_one(&pool)
            .await
            .expect("query runs");
        let n: i64 = row.try_get(0).expect("integer column");
        pool.close().await;
        n
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{}:{}", localpart, self.server_name)
    }

    /// Sends a request with an optional bearer token and JSON body; returns the
    /// status and the body parsed as JSON (`Value::Null` for an empty body).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body read");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "response to {path} is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    /// Sends every (method, path, JSON body) request at once with `token`;
    /// each answer (status, body), in no particular order.
    pub async fn at_once(
        &self,
        token: &str,
        requests: Vec<(Method, String, Value)>,
    ) -> Vec<(StatusCode, Value)> {
        let mut set = tokio::task::JoinSet::new();
        for (method, path, body) in requests {
            let req = self
                .client
                .request(method, self.url(&path))
                .bearer_auth(token)
                .json(&body);
            set.spawn(async move {
                let resp = req.send().await.expect("request sent");
                let status = resp.status();
                (status, resp.json::<Value>().await.expect("JSON body"))
            });
        }
        set.join_all().await
    }

    /// Sends raw bytes as the body (for malformed-JSON cases).
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body read");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, token, body).await
    }

    /// GET /_synapse/admin/v1/register: a fresh shared-secret registration nonce.
    pub async fn nonce(&self) -> String {
        let (st, body) = self.get("/_synapse/admin/v1/register", None).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let n = body["nonce"]
            .as_str()
            .unwrap_or_else(|| panic!("nonce is not a string: {body}"));
        assert!(!n.is_empty());
        n.to_owned()
    }

    /// Registers a user through shared-secret registration; returns its session.
    pub async fn register(&self, localpart: &str, password: &str, admin: bool) -> Session {
        let nonce = self.nonce().await;
        let mac = shared_secret_mac(SHARED_SECRET, &nonce, localpart, password, admin, None);
        let (st, body) = self
            .post(
                "/_synapse/admin/v1/register",
                None,
                json!({"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "register {localpart}: {body}");
        Session::from_answer(&body)
    }

    /// Registers a normal user with password "password123".
    pub async fn user(&self, localpart: &str) -> Session {
        self.register(localpart, "password123", false).await
    }

    /// Registers an admin with password "password123".
    pub async fn admin(&self, localpart: &str) -> Session {
        self.register(localpart, "password123", true).await
    }

    /// Registers a guest (POST /register?kind=guest); returns its session.
    pub async fn guest(&self) -> Session {
        let (st, body) = self
            .post("/_matrix/client/v3/register?kind=guest", None, json!({}))
            .await;
        assert_eq!(st, StatusCode::OK, "guest registration: {body}");
        Session::from_answer(&body)
    }

    /// POST /login with m.login.password; the answer as it is.
    pub async fn try_login(&self, user: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            password_login(user, password),
        )
        .await
    }

    /// Logs in with m.login.password; returns the new session.
    pub async fn login(&self, localpart: &str, password: &str) -> Session {
        let (st, body) = self.try_login(localpart, password).await;
        assert_eq!(st, StatusCode::OK, "login {localpart}: {body}");
        Session::from_answer(&body)
    }

    /// GET /account/whoami with `token` (or none).
    pub async fn whoami(&self, token: Option<&str>) -> (StatusCode, Value) {
        self.get("/_matrix/client/v3/account/whoami", token).await
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

impl Session {
    /// The session of a /login or /register answer (user_id, access_token,
    /// device_id, each asserted to be a string).
    #[track_caller]
    pub fn from_answer(body: &Value) -> Self {
        let field = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} is not a string: {body}"))
                .to_owned()
        };
        Self {
            user_id: field("user_id"),
            access_token: field("access_token"),
            device_id: field("device_id"),
        }
    }

    pub fn token(&self) -> Option<&str> {
        Some(&self.access_token)
    }
}

/// Asserts a Matrix error response: status and errcode, and that `error` is a string.
#[track_caller]
pub fn assert_error(resp: &(StatusCode, Value), status: u16, errcode: &str) {
    assert_error_for("response", resp, status, errcode);
}

/// [`assert_error`], naming `what` (an endpoint, a case) in the failure.
#[track_caller]
pub fn assert_error_for(what: &str, resp: &(StatusCode, Value), status: u16, errcode: &str) {
    assert_eq!(
        resp.0.as_u16(),
        status,
        "{what}: unexpected status, body: {}",
        resp.1
    );
    assert_eq!(
        resp.1["errcode"], errcode,
        "{what}: unexpected errcode, body: {}",
        resp.1
    );
    assert!(
        resp.1["error"].is_string(),
        "{what}: error message missing: {}",
        resp.1
    );
}

/// `s` with its single quotes doubled, to stand inside '...' in SQL.
pub fn sql_quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// The wall clock in ms since the epoch (what a server started with the
/// system clock reads).
pub fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// An `m.login.password` login body for `user`.
pub fn password_login(user: &str, password: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})
}

/// PUT /profile/{who}/displayname; asserts 200.
pub async fn set_displayname(server: &TestServer, who: &Session, name: &str) {
    let (st, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&who.user_id)
            ),
            who.token(),
            json!({"displayname": name}),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "set displayname of {}: {body}",
        who.user_id
    );
}

/// GET with a `User-Agent` header (last-seen and whois record it).
pub async fn get_with_ua(
    server: &TestServer,
    path: &str,
    token: &str,
    ua: &str,
) -> (StatusCode, Value) {
    let resp = server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .header(reqwest::header::USER_AGENT, ua)
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON body");
    (status, body)
}

/// Percent-encodes one path segment or query value (everything but
/// RFC 3986's unreserved characters; a space is `%20`, never `+`).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Polls `check` until it answers `Ok`, and returns that; `Err` carries
/// what was seen last, for the failure message if `within` passes first.
/// For waiting on something the server does in the background (a job, a
/// rebuild, a parked request): never a fixed sleep.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
