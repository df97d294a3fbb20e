//! The e2e suite's own server start: a Myelin on an ephemeral port with a
//! fresh database (SQLite file in a temp dir, or a new PostgreSQL database
//! when `MYELIN_TEST_BACKEND=postgres`), rate limits off, cheap password
//! hashing, shared-secret registration to create the users. The database
//! and the registration MAC come from tests/common/scratch.rs (shared with
//! tests/api, included in each binary).

use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::config::RequestConfig;
use myelin::config::Config;
use serde_json::{Value, json};

pub const SHARED_SECRET: &str = "e2e-shared-secret";
pub const PASSWORD: &str = "password123";

pub struct TestServer {
    pub base_url: String,
    pub server_name: String,
    _running: myelin::server::RunningServer,
    /// PostgreSQL leg: this server's database, dropped with the server.
    _database: Option<myelin::storage::ScratchPostgresDatabase>,
    _dir: tempfile::TempDir,
}

/// `RUST_LOG=matrix_sdk=debug cargo test --test e2e -- --nocapture` shows
/// every request the SDK sends and what it made of the response.
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl TestServer {
    pub async fn start() -> Self {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            server_name: "e2e.test".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let (url, database) = crate::scratch::fresh_database(dir.path(), "myelin_e2e").await;
        config.database.url = url;
        config.database.max_connections = 4;
        config.registration.shared_secret = Some(SHARED_SECRET.into());
        config.rate_limits.enabled = false;
        config.password_hashing.memory_kib = 64;
        config.password_hashing.iterations = 1;
        config.log_level = "warn".into();
        let running = myelin::server::start(config.clone())
            .await
            .expect("server starts");
        Self {
            base_url: format!("http://{}", running.addr),
            server_name: config.server_name,
            _running: running,
            _database: database,
            _dir: dir,
        }
    }

    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// Creates an account through shared-secret registration (plain HTTP, not
    /// the SDK) with password [`PASSWORD`].
    pub async fn register(&self, localpart: &str) {
        let http = reqwest::Client::new();
        let url = format!("{}/_synapse/admin/v1/register", self.base_url);
        let nonce: Value = http
            .get(&url)
            .send()
            .await
            .expect("nonce request")
            .json()
            .await
            .expect("nonce JSON");
        let nonce = nonce["nonce"].as_str().expect("nonce").to_owned();
        let mac = crate::scratch::shared_secret_mac(
            SHARED_SECRET,
            &nonce,
            localpart,
            PASSWORD,
            false,
            None,
        );
        let resp = http
            .post(&url)
            .json(
                &json!({"nonce": nonce, "username": localpart, "password": PASSWORD,
                          "admin": false, "mac": mac}),
            )
            .send()
            .await
            .expect("register request");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "register {localpart}: {status} {body}");
    }

    /// A matrix-sdk client (in-memory store) pointed at this server, not
    /// logged in. Retries are off so a server error fails the test at once
    /// instead of being retried with backoff.
    pub async fn client(&self) -> Client {
        Client::builder()
            .homeserver_url(&self.base_url)
            .request_config(
                RequestConfig::new()
                    .disable_retry()
                    .timeout(Duration::from_secs(30)),
            )
            .build()
            .await
            .expect("matrix-sdk client builds")
    }

    /// Registers `localpart` and returns an SDK client logged in as it with
    /// m.login.password.
    pub async fn logged_in(&self, localpart: &str) -> Client {
        self.register(localpart).await;
        self.login(localpart, &format!("e2e {localpart}")).await
    }

    /// A new SDK client (a new device, a new in-memory store) logged in as
    /// the existing user `localpart` with m.login.password.
    pub async fn login(&self, localpart: &str, device_name: &str) -> Client {
        let client = self.client().await;
        client
            .matrix_auth()
            .login_username(localpart, PASSWORD)
            .initial_device_display_name(device_name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("SDK login as {localpart}: {e:?}"));
        client
    }
}
