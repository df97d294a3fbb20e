//! Application services in tests: registration files written to a
//! temporary directory, a server started with them, and a fake application
//! service on loopback that records every request the homeserver makes to
//! it and answers as the test scripted (200 `{}` unless told otherwise).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::TestServer;

pub const AS_TOKEN: &str = "as-token-bridge";
pub const HS_TOKEN: &str = "hs-token-bridge";

/// A registration like a bridge's: sender `bridgebot`, users `@bridge_*`
/// and aliases `#bridge_*` exclusively, not rate limited; `url` is YAML
/// (`null`, or a quoted URL).
pub fn bridge_registration(url: &str) -> String {
    format!(
        r##"id: bridge
url: {url}
as_token: {AS_TOKEN}
hs_token: {HS_TOKEN}
sender_localpart: bridgebot
rate_limited: false
receive_ephemeral: true
protocols: ["gitter"]
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:test.local"
    - exclusive: false
      regex: "@shared_.*:test.local"
  aliases:
    - exclusive: true
      regex: "#bridge_.*:test.local"
  rooms: []
"##
    )
}

/// Registration files in a directory that lives as long as this value.
pub struct RegistrationFiles {
    dir: tempfile::TempDir,
    pub paths: Vec<PathBuf>,
}

impl RegistrationFiles {
    pub fn new(files: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = files
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let path = dir.path().join(format!("registration-{i}.yaml"));
                std::fs::write(&path, text).unwrap();
                path
            })
            .collect();
        Self { dir, paths }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A server with the bridge registered (reaching `url`), and its files.
pub async fn server_with_bridge(url: &str) -> (TestServer, RegistrationFiles) {
    let files = RegistrationFiles::new(&[&bridge_registration(url)]);
    let paths = files.paths.clone();
    let server = TestServer::start_with(|c| c.app_services = paths).await;
    (server, files)
}

/// What `myelin::server::start` answers with these registration files
/// (SQLite in a fresh directory): the error's text, or `None` if it started.
pub async fn start_error(files: &[&str]) -> Option<String> {
    let reg = RegistrationFiles::new(files);
    let dir = tempfile::tempdir().unwrap();
    let mut config = super::test_config();
    config.data_dir = dir.path().to_owned();
    config.app_services = reg.paths.clone();
    match myelin::server::start(config).await {
        Ok(running) => {
            running.shutdown().await;
            None
        }
        Err(e) => Some(format!("{e:#}")),
    }
}

/// One request the fake application service received.
#[derive(Debug, Clone)]
pub struct AsRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// How one request is answered.
enum Answer {
    Now(u16, Value),
    /// When the test releases it ([`FakeAppService::hold_next`]).
    Held(tokio::sync::oneshot::Receiver<(u16, Value)>),
}

struct Script {
    next: VecDeque<Answer>,
    /// The status of a request nothing scripted (200 `{}` unless set).
    default_status: u16,
    /// Transactions are answered 200 and neither recorded nor scripted.
    ignore_transactions: bool,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            next: VecDeque::new(),
            default_status: 200,
            ignore_transactions: false,
        }
    }
}

struct Shared {
    script: Mutex<Script>,
    seen: mpsc::UnboundedSender<AsRequest>,
}

pub struct FakeAppService {
    /// The registration's `url`.
    pub url: String,
    shared: Arc<Shared>,
    seen: tokio::sync::Mutex<mpsc::UnboundedReceiver<AsRequest>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAppService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn any_request(State(shared): State<Arc<Shared>>, req: Request) -> (StatusCode, String) {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 1 << 24)
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let scripted = {
        let mut script = shared.script.lock();
        if script.ignore_transactions
            && parts.method == axum::http::Method::PUT
            && parts
                .uri
                .path()
                .starts_with("/_matrix/app/v1/transactions/")
        {
            return (StatusCode::OK, "{}".to_owned());
        }
        let default = script.default_status;
        script
            .next
            .pop_front()
            .unwrap_or(Answer::Now(default, json!({})))
    };
    let request = AsRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        authorization: parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    };
    let (status, answer) = match scripted {
        Answer::Now(status, answer) => {
            let _ = shared.seen.send(request);
            (status, answer)
        }
        Answer::Held(rx) => {
            let _ = shared.seen.send(request);
            rx.await.unwrap_or((500, json!({})))
        }
    };
    (StatusCode::from_u16(status).unwrap(), answer.to_string())
}

impl FakeAppService {
    pub async fn start() -> Self {
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            script: Mutex::new(Script::default()),
            seen: seen_tx,
        });
        let app = Router::new()
            .fallback(any_request)
            .with_state(shared.clone());
        let (addr, task) = super::serve_on_loopback(app).await;
        Self {
            url: format!("http://{addr}"),
            shared,
            seen: tokio::sync::Mutex::new(seen_rx),
            task,
        }
    }

    /// The next request gets this answer.
    pub fn answer_next(&self, status: u16, body: Value) {
        self.shared
            .script
            .lock()
            .next
            .push_back(Answer::Now(status, body));
    }

    /// Transactions are answered 200 from now on, and neither recorded
    /// nor given scripted answers (for tests of the queries).
    pub fn ignore_transactions(&self) {
        self.shared.script.lock().ignore_transactions = true;
    }

    /// Every request nothing scripted is answered with this status (and
    /// `{}`) from now on.
    pub fn answer_all(&self, status: u16) {
        self.shared.script.lock().default_status = status;
    }

    /// The next request waits for its answer until the test sends it
    /// (dropping the sender answers 500).
    pub fn hold_next(&self) -> tokio::sync::oneshot::Sender<(u16, Value)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared.script.lock().next.push_back(Answer::Held(rx));
        tx
    }

    /// The next request received within `within`, if any.
    pub async fn next_within(&self, within: Duration) -> Option<AsRequest> {
        let mut seen = self.seen.lock().await;
        tokio::time::timeout(within, seen.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next transaction (`PUT .../transactions/{id}`) received, with
    /// its id; other requests on the way are skipped.
    pub async fn next_transaction(&self) -> (String, AsRequest) {
        loop {
            let r = self.next().await;
            if r.method == "PUT"
                && let Some(id) = r.path.strip_prefix("/_matrix/app/v1/transactions/")
            {
                return (id.to_owned(), r);
            }
        }
    }

    /// The next request received (within 20 s, else the test fails).
    pub async fn next(&self) -> AsRequest {
        let mut seen = self.seen.lock().await;
        tokio::time::timeout(Duration::from_secs(20), seen.recv())
            .await
            .expect("the application service received nothing within 20 s")
            .expect("the channel is open")
    }
}
