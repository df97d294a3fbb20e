//! The real `myelin` binary as a subprocess (crash.rs, backup.rs,
//! shutdown.rs): started on a test server's config, killed or sent
//! SIGTERM, its other commands (`backup`, `restore`, `migrate-db`) run;
//! and a send load that records every acknowledged event.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{Session, TestServer, enc, wait_until};

/// The binary: cargo's, or `MYELIN_TEST_BIN` (where several checkouts
/// share one target dir, `target/debug/myelin` is whichever built last).
pub fn bin() -> String {
    std::env::var("MYELIN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_myelin").to_owned())
}

/// A test server's data dir and database, served by the `myelin` binary.
pub struct Binary {
    pub server: TestServer,
    pub child: Option<std::process::Child>,
    pub dir: tempfile::TempDir,
}

impl Binary {
    /// A fresh database and data dir, set up in-process (with `setup`), then
    /// handed to the binary.
    pub async fn start<T>(
        setup: impl AsyncFnOnce(&TestServer) -> T,
        pause: Option<&Path>,
    ) -> (Self, T) {
        let mut server = TestServer::start().await;
        let made = setup(&server).await;
        server.running.take().expect("running").shutdown().await;
        let mut b = Self {
            server,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        b.spawn(pause).await;
        (b, made)
    }

    /// The config file the binary runs with (written by [`Binary::spawn`]
    /// and [`Binary::write_config`]).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("myelin.yaml")
    }

    /// Writes the server's config to [`Binary::config_path`].
    pub fn write_config(&self) {
        std::fs::write(
            self.config_path(),
            serde_norway::to_string(&self.server.config).unwrap(),
        )
        .unwrap();
    }

    /// Starts the binary on the server's config (a free port), and waits
    /// until it answers.
    pub async fn spawn(&mut self, pause: Option<&Path>) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        self.server.config.listen = format!("127.0.0.1:{port}").parse().unwrap();
        self.write_config();
        let yaml = self.config_path();
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["serve", "--config", yaml.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env_remove("MYELIN_TEST_PAUSE_JOBS")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(dir) = pause {
            cmd.env("MYELIN_TEST_PAUSE_JOBS", dir);
        }
        self.child = Some(cmd.spawn().expect("binary starts"));
        self.server.addr = self.server.config.listen;
        let log_path = self.log_path();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let child = self.child.as_mut().unwrap();
        let (client, url) = (
            &self.server.client,
            self.server.url("/_matrix/client/versions"),
        );
        wait_until("the server answering", Duration::from_secs(60), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the server exited ({status}): {}", log());
            }
            let versions = client.get(&url).send();
            async {
                match versions.await {
                    Ok(r) if r.status() == StatusCode::OK => Ok(()),
                    _ => Err(log()),
                }
            }
        })
        .await;
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL, then start again (without the pause knob).
    pub async fn kill_and_restart(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        self.spawn(None).await;
    }

    /// Sends SIGTERM and waits for the process to exit; its exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait().await
    }

    /// Sends `signal` (SIGTERM, SIGINT, ...) to the running process.
    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("running");
        let pid = i32::try_from(child.id()).unwrap();
        // SAFETY: kill(2) with a child's pid and a signal number.
        #[allow(unsafe_code)]
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "signal {signal} sent");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        let child = self.child.as_mut().expect("started");
        child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit; its exit status.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
    }

    /// Runs `myelin ARGS...` (another command than `serve`) to its end.
    pub async fn run(args: &[&str]) -> std::process::Output {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin())
                .args(&args)
                .env_remove("RUST_LOG")
                .stdin(std::process::Stdio::null())
                .output()
                .expect("binary runs")
        })
        .await
        .unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Senders sending messages into one room at once, each until a send is
/// not answered 200; every acknowledged event id is recorded, in order.
pub struct SendLoad {
    acked: Arc<parking_lot::Mutex<Vec<String>>>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl SendLoad {
    /// `senders` tasks sending `"{word} {sender} {i}"` to `room` as `token`.
    pub fn start(server: &TestServer, token: &str, room: &str, word: &str, senders: u32) -> Self {
        let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let senders = (0..senders)
            .map(|n| {
                let (client, base, token, room, word, acked) = (
                    server.client.clone(),
                    server.url(""),
                    token.to_owned(),
                    room.to_owned(),
                    word.to_owned(),
                    acked.clone(),
                );
                tokio::spawn(async move {
                    for i in 0.. {
                        let url = format!(
                            "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/{word}{n}-{i}",
                            enc(&room)
                        );
                        let sent = client
                            .put(url)
                            .bearer_auth(&token)
                            .json(&json!({"msgtype": "m.text", "body": format!("{word} {n} {i}")}))
                            .send()
                            .await;
                        let Ok(r) = sent else { return };
                        if r.status() != StatusCode::OK {
                            return;
                        }
                        let Ok(body) = r.json::<serde_json::Value>().await else {
                            return;
                        };
                        let id = body["event_id"].as_str().expect("event_id").to_owned();
                        acked.lock().push(id);
                    }
                })
            })
            .collect();
        Self { acked, senders }
    }

    /// The events acknowledged so far.
    pub fn acked(&self) -> Vec<String> {
        self.acked.lock().clone()
    }

    /// Waits until at least `n` sends were acknowledged.
    pub async fn wait_for(&self, n: usize) {
        wait_until(
            &format!("{n} sends acknowledged"),
            Duration::from_secs(60),
            || async {
                match self.acked.lock().len() {
                    done if done >= n => Ok(()),
                    done => Err(format!("{done} acknowledged")),
                }
            },
        )
        .await;
    }

    /// Waits for the senders to end (each ends at its first failed send:
    /// the server went away); every acknowledged event.
    pub async fn finish(self) -> Vec<String> {
        for s in self.senders {
            s.await.unwrap();
        }
        self.acked.lock().clone()
    }

    /// Stops the senders where they are; every acknowledged event.
    pub fn stop(self) -> Vec<String> {
        for s in &self.senders {
            s.abort();
        }
        self.acked.lock().clone()
    }
}

/// Asserts that `server` serves each of `events` in `room` (GET /event: 200).
pub async fn assert_events_served(
    server: &TestServer,
    token: Option<&str>,
    room: &str,
    events: &[String],
) {
    for id in events {
        let (st, b) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(id)),
                token,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "acknowledged event {id} missing: {b}");
    }
}

/// The total count of a search for `term` by `who`.
pub async fn search_count(server: &TestServer, who: &Session, term: &str) -> i64 {
    let (st, b) = server
        .post(
            "/_matrix/client/v3/search",
            who.token(),
            json!({"search_categories": {"room_events": {"search_term": term}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "search: {b}");
    b["search_categories"]["room_events"]["count"]
        .as_i64()
        .unwrap_or_else(|| panic!("count: {b}"))
}
