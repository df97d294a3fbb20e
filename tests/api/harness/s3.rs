//! A real S3 protocol server for the S3 media backend: moto's
//! (`moto[server]` from PyPI), one per test process on an ephemeral port,
//! with one bucket; each test server gets a prefix of its own in it.
//!
//! The executable: `MYELIN_MOTO_SERVER`, else `moto_server` on `PATH`
//! (`scripts/install-moto` installs it; `scripts/test` does and sets
//! `MYELIN_REQUIRE_S3=1`). `MYELIN_TEST_MEDIA_STORE=s3` runs every test
//! server on it (the media modules against the S3 backend).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use myelin::config::S3Config;
use tokio::sync::OnceCell;

/// The bucket every test server's prefix is in.
const BUCKET: &str = "myelin-test";

/// A running moto server.
pub struct Moto {
    pub endpoint: String,
    /// The wrapper shell, whose stdin (a pipe) stays open while it is
    /// held: the shell stops moto when that pipe closes, that is when the
    /// test process ends.
    _shell: std::process::Child,
}

static MOTO: OnceCell<Option<Moto>> = OnceCell::const_new();

/// The moto executable, if there is one.
fn moto_executable() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MYELIN_MOTO_SERVER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "MYELIN_MOTO_SERVER={} is not a file (scripts/install-moto prints the right path)",
            p.display()
        );
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.is_file())
    })
}

/// The moto server of this test process, started on first use; `None`
/// when there is no moto.
pub async fn moto() -> Option<&'static Moto> {
    MOTO.get_or_init(|| async { start_moto().await })
        .await
        .as_ref()
}

/// The moto server, or `None` after printing why the test is skipped;
/// with `MYELIN_REQUIRE_S3=1` a missing moto fails the test instead.
pub async fn moto_or_skip(test: &str) -> Option<&'static Moto> {
    let moto = moto().await;
    if moto.is_none() {
        assert!(
            !std::env::var("MYELIN_REQUIRE_S3").is_ok_and(|v| v == "1"),
            "MYELIN_REQUIRE_S3=1 but moto_server was not found: set MYELIN_MOTO_SERVER=$(scripts/install-moto) or put moto_server on PATH"
        );
        eprintln!(
            "SKIPPED {test}: no moto_server for the S3 media backend (set MYELIN_MOTO_SERVER=$(scripts/install-moto), or pip install 'moto[server]')"
        );
    }
    moto
}

async fn start_moto() -> Option<Moto> {
    let exe = moto_executable()?;
    // The shell starts moto in the background and stops it once its stdin
    // (a pipe this process holds) closes.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#""$@" 2>&1 & pid=$!; read -r _ignored; kill "$pid" 2>/dev/null"#)
        .arg("sh")
        .arg(&exe)
        .args(["-H", "127.0.0.1", "-p", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    // Its output: the first "Running on http://..." line names the port;
    // the rest (a line per request) is read and dropped so moto never
    // blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("Running on http://")
                && let Some(tx) = tx.take()
            {
                let url = line[at + "Running on ".len()..].trim().to_owned();
                let _ = tx.send(url);
            }
        }
    });
    let endpoint = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("waiting for moto")
        .unwrap_or_else(|e| panic!("{} did not say where it listens: {e}", exe.display()));
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{BUCKET}"))
        .send()
        .await
        .expect("moto answers");
    assert!(
        created.status().is_success(),
        "creating the test bucket: {}",
        created.status()
    );
    Some(Moto {
        endpoint,
        _shell: child,
    })
}

impl Moto {
    /// The S3 settings of a test server: this moto's bucket, under a
    /// prefix nobody else uses.
    pub fn config(&self) -> S3Config {
        use rand::distr::{Alphanumeric, SampleString};
        S3Config {
            bucket: BUCKET.into(),
            endpoint: Some(self.endpoint.clone()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            prefix: format!(
                "t/{}",
                Alphanumeric
                    .sample_string(&mut rand::rng(), 16)
                    .to_lowercase()
            ),
            allow_http: true,
            ..S3Config::default()
        }
    }
}

/// The S3 settings for a test server when `MYELIN_TEST_MEDIA_STORE=s3`
/// (moto must be there then), else `None` (the local store).
pub async fn s3_from_env() -> Option<S3Config> {
    match std::env::var("MYELIN_TEST_MEDIA_STORE").as_deref() {
        Ok("s3") => {
            let moto = moto().await.expect(
                "MYELIN_TEST_MEDIA_STORE=s3 but moto_server was not found (MYELIN_MOTO_SERVER=$(scripts/install-moto))",
            );
            Some(moto.config())
        }
        Ok("local" | "") | Err(_) => None,
        Ok(other) => panic!("MYELIN_TEST_MEDIA_STORE={other}: expected local or s3"),
    }
}

/// The object names under `config`'s prefix (listed from a thread of its
/// own, so callers need not be async).
pub fn s3_objects(config: &S3Config) -> Vec<String> {
    use futures_util::StreamExt;
    use object_store::ObjectStore;
    let config = config.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let bucket = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(&config.bucket)
                .with_region(&config.region)
                .with_endpoint(config.endpoint.clone().expect("an endpoint"))
                .with_access_key_id(config.access_key_id.clone().expect("a key id"))
                .with_secret_access_key(config.secret_access_key.clone().expect("a secret"))
                .with_allow_http(true)
                .build()
                .expect("S3 client");
            let prefix = object_store::path::Path::from(config.prefix.as_str());
            let mut names = Vec::new();
            let mut listing = bucket.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                names.push(meta.expect("listing").location.to_string());
            }
            names
        })
    })
    .join()
    .expect("listing thread")
}
