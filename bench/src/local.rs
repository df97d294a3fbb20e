//! A Myelin process started by the bench: its config in a temp dir, spawn,
//! wait until it answers, stop with SIGTERM.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::Client;

/// Asks the kernel for a free loopback port (it may be taken again before the
/// server binds it, which start-up then reports).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `bytes` random bytes from the kernel, hex-encoded.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(hex::encode(buf))
}

/// Runs `myelin generate-config` for a loopback server on `port` with its
/// data in `dir/data`, shared-secret registration on and rate limits off,
/// on SQLite or the database at `database_url`; writes `dir/myelin.yaml` and
/// returns its path.
pub fn generate_config(
    binary: &Path,
    dir: &Path,
    port: u16,
    shared_secret: &str,
    database_url: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(binary);
    cmd.arg("generate-config");
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    let out = cmd
        .args(["--server-name", "localhost"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--registration-shared-secret", shared_secret])
        .arg("--disable-rate-limits")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "{} generate-config failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = dir.join("myelin.yaml");
    std::fs::write(&path, &out.stdout)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Sets `password_hashing.memory_kib` in a config that `generate_config`
/// wrote (for runs where registration is set-up, not what is measured).
pub fn set_password_hashing_memory(config: &Path, kib: u32) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("memory_kib:") {
                found = true;
                format!("  memory_kib: {kib}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !found {
        bail!("no memory_kib line in {}", config.display());
    }
    std::fs::write(config, out.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", config.display()))
}

/// Lets a config that `generate_config` wrote reach 127.0.0.1 from the
/// server (`outbound.ip_range_allowlist`): push-fanout's fake gateway.
pub fn allow_loopback_outbound(config: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    // The outbound section's key is the one indented by two spaces.
    let line = "  ip_range_allowlist: []";
    if !text.lines().any(|l| l == line) {
        bail!("no `{line}` line in {}", config.display());
    }
    let out: Vec<&str> = text
        .lines()
        .map(|l| {
            if l == line {
                "  ip_range_allowlist: [\"127.0.0.1\"]"
            } else {
                l
            }
        })
        .collect();
    std::fs::write(config, out.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", config.display()))
}

/// Lists the registration file `registration` in `app_services` of a
/// config that `generate_config` wrote.
pub fn add_app_service(config: &Path, registration: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let line = "app_services: []";
    if !text.lines().any(|l| l == line) {
        bail!("no `{line}` line in {}", config.display());
    }
    let listed = format!(
        "app_services: [{}]",
        serde_json::to_string(&registration.display().to_string())?
    );
    let out: Vec<&str> = text
        .lines()
        .map(|l| if l == line { listed.as_str() } else { l })
        .collect();
    std::fs::write(config, out.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", config.display()))
}

/// A running `myelin serve`. Dropping it kills the process (SIGKILL) if it
/// was not stopped.
pub struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Spawns `binary serve --config CONFIG`, its stdout and stderr to `log`,
    /// with `env` added to the bench's own environment.
    pub fn spawn(
        binary: &Path,
        config: &Path,
        log: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /_matrix/client/versions` every millisecond until a 200,
    /// and returns how long after `since` it came. Fails if the process exits
    /// or nothing answers within `timeout`.
    pub async fn wait_ready(
        &mut self,
        client: &Client,
        since: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        loop {
            if let Ok(true) = client.versions_ok().await {
                return Ok(since.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited ({status}) before answering; its log:\n{}",
                    self.log_tail()
                );
            }
            if since.elapsed() > timeout {
                bail!(
                    "no 200 from {} within {timeout:?}; the server's log:\n{}",
                    client.url("/_matrix/client/versions"),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// SIGTERM, then waits for the exit (Myelin finishes requests, flushes and
    /// closes the database). After `timeout` it is killed and this fails.
    /// Returns how long the shutdown took.
    #[allow(unsafe_code)] // libc calls, each with its SAFETY comment
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) with a pid of our own child that has not been reaped
        // (we hold the Child and have not waited on it successfully).
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!(
                "cannot send SIGTERM to {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the server exited with {status} after SIGTERM; its log:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the server did not exit within {timeout:?} of SIGTERM; killed it");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A Myelin the bench started for a load scenario: its temp dir (config,
/// data, `server.log`), address and shared secret.
pub struct Local {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub secret: String,
}

impl Local {
    /// `binary serve` in a fresh temp dir named `prefix…`: loopback, a free
    /// port, a random shared secret, rate limits off, argon2 at 256 KiB
    /// (registration is set-up, never what is measured), push gateways on
    /// 127.0.0.1 allowed, SQLite in the temp dir or the database at
    /// `database_url`, the application service registration file
    /// `app_service` listed if given. Returns once it answers.
    pub async fn start(
        binary: &Path,
        prefix: &str,
        database_url: Option<&str>,
        app_service: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let binary = std::fs::canonicalize(binary).with_context(|| {
            format!(
                "no binary at {} (build it: cargo build -p myelin)",
                binary.display()
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("cannot create a temp dir")?;
        let port = free_port()?;
        let secret = random_hex(16)?;
        let config = generate_config(&binary, dir.path(), port, &secret, database_url)?;
        set_password_hashing_memory(&config, 256)?;
        allow_loopback_outbound(&config)?;
        if let Some(registration) = app_service {
            add_app_service(&config, registration)?;
        }
        let base = format!("http://127.0.0.1:{port}");
        let mut server = Server::spawn(&binary, &config, &dir.path().join("server.log"), &[])?;
        server
            .wait_ready(
                &Client::new(&base)?,
                Instant::now(),
                Duration::from_secs(60),
            )
            .await?;
        Ok(Self {
            server,
            dir,
            base,
            secret,
        })
    }

    /// SIGTERM and wait; with `keep`, the temp dir stays and its path is printed.
    pub fn stop(self, keep: bool) -> anyhow::Result<()> {
        let stopped = self.server.stop(Duration::from_secs(30));
        if keep {
            eprintln!("kept {}", self.dir.keep().display());
        }
        stopped.map(drop)
    }
}
