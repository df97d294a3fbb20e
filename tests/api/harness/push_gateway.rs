//! A fake push gateway on loopback: it records every POST to
//! `/_matrix/push/v1/notify` and answers as the test scripted (200 `{}`
//! unless told otherwise), so tests wait on what it received instead of
//! sleeping.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One POST the gateway received, and the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    pub status: u16,
}

#[derive(Default)]
struct Script {
    /// Answers for the next POSTs, in order.
    next: VecDeque<(u16, Value)>,
    /// While set, every POST not scripted above is answered 500.
    down: bool,
}

struct Shared {
    script: Mutex<Script>,
    seen: mpsc::UnboundedSender<Received>,
}

pub struct FakeGateway {
    /// The pusher URL that reaches this gateway.
    pub url: String,
    shared: Arc<Shared>,
    seen: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn notify(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let (status, answer) = {
        let mut script = shared.script.lock();
        match script.next.pop_front() {
            Some(scripted) => scripted,
            None if script.down => (500, json!({"error": "down"})),
            None => (200, json!({})),
        }
    };
    let _ = shared.seen.send(Received { body, status });
    (StatusCode::from_u16(status).unwrap(), Json(answer))
}

/// Serves `app` on a free loopback port until the task is aborted.
pub async fn serve_on_loopback(app: Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

impl FakeGateway {
    pub async fn start() -> Self {
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            script: Mutex::new(Script::default()),
            seen: seen_tx,
        });
        let app = Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(shared.clone());
        let (addr, task) = serve_on_loopback(app).await;
        Self {
            url: format!("http://{addr}/_matrix/push/v1/notify"),
            shared,
            seen: tokio::sync::Mutex::new(seen_rx),
            task,
        }
    }

    /// The next POST gets this answer.
    pub fn answer_next(&self, status: u16, body: Value) {
        self.shared.script.lock().next.push_back((status, body));
    }

    /// While `down`, POSTs are answered 500.
    pub fn set_down(&self, down: bool) {
        self.shared.script.lock().down = down;
    }

    /// The next POST received (within 20 s, else the test fails).
    pub async fn next(&self) -> Received {
        let mut seen = self.seen.lock().await;
        tokio::time::timeout(Duration::from_secs(20), seen.recv())
            .await
            .expect("the push gateway received nothing within 20 s")
            .expect("the gateway's channel is open")
    }

    /// The next POST whose notification is about `event_id`, skipping
    /// others (badge updates, earlier events).
    pub async fn next_for(&self, event_id: &str) -> Received {
        loop {
            let r = self.next().await;
            if r.body["notification"]["event_id"] == event_id {
                return r;
            }
        }
    }

    /// Whatever has been received and not taken yet (no waiting).
    pub async fn drain(&self) -> Vec<Received> {
        let mut seen = self.seen.lock().await;
        let mut out = Vec::new();
        while let Ok(r) = seen.try_recv() {
            out.push(r);
        }
        out
    }
}
