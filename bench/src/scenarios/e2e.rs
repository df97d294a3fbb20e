//! The encryption paths of issue 19, each on every client's start-up or
//! room-key share: `keys-query` (`POST /keys/query` naming U users, all
//! their devices), `keys-claim` (`POST /keys/claim` naming D devices) and
//! `to-device` (`PUT /sendToDevice` to U users × P devices).
//!
//! Set-up goes through the public API only and is never timed: users
//! registered (shared secret), extra devices logged in, device keys with a
//! valid ed25519 self-signature and signed one-time keys uploaded as a
//! client does (ruma's signing, a key pair per device). Then N requests,
//! `--concurrency` in flight: requests/s and latency to the answer's last
//! byte; every answer is checked after its clock stopped.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ruma::CanonicalJsonObject;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, sign_json};
use serde_json::{Value, json};

use crate::client::{Client, RequestError, Session};
use crate::load::{self, Errors, Monitor, PASSWORD, Target};
use crate::report::{LATENCY_HEADER, Summary, latency_row, round3};

/// What the three scenarios share: how many timed requests, how many in flight.
#[derive(clap::Args, Clone, Debug)]
pub struct Load {
    /// Timed requests.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Requests in flight at once (1: a client's start-up, one after another).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Set-up requests (uploads, logins, the delivery check) in flight at once.
    #[arg(long, default_value_t = 4)]
    pub setup_concurrency: usize,
}

#[derive(clap::Args, Clone, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    /// Users each `/keys/query` names (one device each, with keys).
    #[arg(long, default_value_t = 500)]
    pub users: usize,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ClaimArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    /// Devices each `/keys/claim` names (one user each); each uploads one
    /// one-time key per timed request, so every claim can return a key.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ToDeviceArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: Load,
    /// Recipient users.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Devices per recipient user: 1 names each device; more sends `*`.
    #[arg(long, default_value_t = 1)]
    pub devices_per_user: usize,
}

/// A device's ed25519 signing key, as a client holds it.
struct DeviceKey {
    pair: Ed25519KeyPair,
    /// Unpadded base64 of the public key, as `keys` carries it.
    public: String,
}

impl DeviceKey {
    fn generate(device_id: &str) -> anyhow::Result<Self> {
        let doc = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&doc, device_id.to_owned())
            .map_err(|e| anyhow::anyhow!("ed25519 key: {e}"))?;
        let public = Base64::<ruma::serde::base64::Standard, _>::new(pair.public_key()).encode();
        Ok(Self { pair, public })
    }

    /// `value` signed by this device's key for `user_id` (`signatures`
    /// added, canonical JSON as the spec's "Signing JSON").
    fn sign(&self, user_id: &str, value: Value) -> anyhow::Result<Value> {
        let mut object: CanonicalJsonObject =
            serde_json::from_value(value).context("canonical JSON")?;
        sign_json(user_id, &self.pair, &mut object).context("signing")?;
        Ok(serde_json::to_value(object)?)
    }
}

/// 32 bytes of base64 standing in for a curve25519 public key (the server
/// never reads it), different for every `(seed, n)`.
fn fake_curve_key(seed: u64, n: u64) -> String {
    let mut bytes = Vec::with_capacity(32);
    let mut x = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    for _ in 0..4 {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        bytes.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    Base64::<ruma::serde::base64::Standard, _>::new(bytes).encode()
}

/// Uploads the session's device keys (ed25519 and curve25519, both Olm and
/// Megolm listed, self-signed); returns the signing key.
async fn upload_device_keys(s: &Session, seed: u64) -> anyhow::Result<DeviceKey> {
    let key = DeviceKey::generate(&s.device_id)?;
    let device_keys = key.sign(
        &s.user_id,
        json!({
            "user_id": s.user_id,
            "device_id": s.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", s.device_id): fake_curve_key(seed, u64::MAX),
                format!("ed25519:{}", s.device_id): key.public,
            },
        }),
    )?;
    s.post(
        "/_matrix/client/v3/keys/upload",
        &json!({ "device_keys": device_keys }),
    )
    .await
    .with_context(|| format!("/keys/upload (device keys) for {}", s.user_id))?;
    Ok(key)
}

/// The id of the `n`th one-time key of a device (sorts in upload order).
fn otk_id(n: usize) -> String {
    format!("AAAA{n:06}")
}

/// Uploads `count` signed `signed_curve25519` one-time keys, 100 a request.
async fn upload_one_time_keys(
    s: &Session,
    key: &DeviceKey,
    seed: u64,
    count: usize,
) -> anyhow::Result<()> {
    let mut n = 0;
    while n < count {
        let mut keys = serde_json::Map::new();
        for i in n..(n + 100).min(count) {
            let signed = key.sign(&s.user_id, json!({ "key": fake_curve_key(seed, i as u64) }))?;
            keys.insert(format!("signed_curve25519:{}", otk_id(i)), signed);
        }
        n = (n + 100).min(count);
        s.post(
            "/_matrix/client/v3/keys/upload",
            &json!({ "one_time_keys": keys }),
        )
        .await
        .with_context(|| format!("/keys/upload (one-time keys) for {}", s.user_id))?;
    }
    Ok(())
}

/// Runs `f` on each item, `concurrency` at a time (set-up), in order.
async fn each<T, R, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    bar: &indicatif::ProgressBar,
    f: F,
) -> anyhow::Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(usize, T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let (sem, f, bar) = (sem.clone(), f.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("never closed");
            let r = f(i, item).await;
            bar.inc(1);
            r
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.context("set-up task")??);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// One timed answer: its body and how long it took.
struct Answer {
    body: bytes::Bytes,
    took: Duration,
}

/// `requests` timed requests, `concurrency` in flight; `make(i)` gives the
/// i-th request's method, path and body. Returns the answers in request
/// order (`None` for a failed one), the errors, and the wall time from the
/// first request to the last answer.
async fn timed<F>(
    session: &Session,
    load: &Load,
    bar: &indicatif::ProgressBar,
    make: F,
) -> (Vec<Option<Answer>>, Errors, Duration)
where
    F: Fn(usize) -> (reqwest::Method, String, Value),
{
    // Bodies serialized before the clock starts.
    let requests: Vec<_> = (0..load.requests)
        .map(|i| {
            let (method, path, body) = make(i);
            (method, path, bytes::Bytes::from(body.to_string()))
        })
        .collect();
    let requests = Arc::new(std::sync::Mutex::new(
        requests.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    requests.lock().expect("not poisoned").reverse();
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..load.concurrency.max(1) {
        let (session, requests, bar) = (session.clone(), requests.clone(), bar.clone());
        workers.push(tokio::spawn(async move {
            let mut out: Vec<(usize, Result<Answer, RequestError>, Instant)> = Vec::new();
            // An answer equal to this worker's previous one shares its
            // buffer, so the load tool does not keep (and page in) a fresh
            // copy of every large identical answer while the clock runs.
            let mut previous = bytes::Bytes::new();
            loop {
                let Some((i, (method, path, body))) = requests.lock().expect("not poisoned").pop()
                else {
                    break;
                };
                let sent = Instant::now();
                let r = session.send_raw(method, &path, body).await;
                let done = Instant::now();
                out.push((
                    i,
                    r.map(|(body, received)| {
                        if body != previous {
                            previous = body;
                        }
                        Answer {
                            body: previous.clone(),
                            took: received.duration_since(sent),
                        }
                    }),
                    done,
                ));
                bar.inc(1);
            }
            out
        }));
    }
    let mut answers: Vec<Option<Answer>> = (0..load.requests).map(|_| None).collect();
    let mut errors = Errors::default();
    let mut last = start;
    for w in workers {
        for (i, r, done) in w.await.unwrap_or_default() {
            last = last.max(done);
            match r {
                Ok(a) => answers[i] = Some(a),
                Err(e) => errors.add(&e),
            }
        }
    }
    bar.finish_and_clear();
    (answers, errors, last.duration_since(start))
}

/// The latency row, the throughput row and their JSON.
fn measures(
    label: &str,
    answers: &[Option<Answer>],
    elapsed: Duration,
) -> (Vec<Vec<String>>, Value) {
    let lat: Vec<Duration> = answers.iter().flatten().map(|a| a.took).collect();
    let ok = lat.len();
    let per_sec = ok as f64 / elapsed.as_secs_f64().max(1e-9);
    let summary = Summary::of(&lat);
    let mut rows = Vec::new();
    if let Some(s) = &summary {
        rows.push(latency_row(label, s));
    }
    (
        rows,
        json!({
            "requests_ok": ok,
            "elapsed_secs": round3(elapsed.as_secs_f64()),
            "requests_per_sec": round3(per_sec),
            "latency": summary.map(|s| s.to_json()),
        }),
    )
}

fn clamp_smoke(t: &Target, load: &mut Load) {
    if t.smoke {
        load.requests = load.requests.min(10);
    }
    load.requests = load.requests.max(1);
}

/// Registers `count` users named `{run}-{role}-{i}`.
async fn users(
    client: &Client,
    t: &Target,
    run: &str,
    role: &str,
    count: usize,
) -> anyhow::Result<Vec<Session>> {
    let names = (0..count).map(|i| format!("{run}-{role}-{i}")).collect();
    load::register_users(client, t, names).await
}

/// A seed for this run's fake keys.
fn seed(run: &str) -> u64 {
    let mut h = DefaultHasher::new();
    run.hash(&mut h);
    h.finish()
}

// ---- keys-query -------------------------------------------------------------

pub async fn run_query(mut args: QueryArgs) -> anyhow::Result<bool> {
    clamp_smoke(&args.target, &mut args.load);
    if args.target.smoke {
        args.users = args.users.min(5);
    }
    args.users = args.users.max(1);
    let (t, l) = (&args.target, &args.load);
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    let client = Client::new(&t.url)?;
    eprintln!(
        "keys-query: {} requests naming {} users, {} in flight, against {} (run {run})",
        l.requests, args.users, l.concurrency, t.url
    );
    let users = users(&client, t, &run, "kq", args.users).await?;
    let s0 = seed(&run);
    let bar = t.bar(users.len() as u64, "uploading device keys");
    let keys: Vec<String> = each(
        users.clone(),
        l.setup_concurrency,
        &bar,
        move |i, s| async move { Ok(upload_device_keys(&s, s0 ^ i as u64).await?.public) },
    )
    .await?;
    // Expected: user -> (device, ed25519 key).
    let expected: HashMap<String, (String, String)> = users
        .iter()
        .zip(keys)
        .map(|(s, k)| (s.user_id.clone(), (s.device_id.clone(), k)))
        .collect();
    let body = json!({
        "device_keys": users.iter().map(|s| (s.user_id.clone(), json!([]))).collect::<serde_json::Map<_, _>>(),
    });

    let bar = t.bar(l.requests as u64, "/keys/query");
    let phase = monitor.phase()?;
    let (answers, errors, elapsed) = timed(&users[0], l, &bar, |_| {
        (
            reqwest::Method::POST,
            "/_matrix/client/v3/keys/query".to_owned(),
            body.clone(),
        )
    })
    .await;
    let phase = phase.finish().await?;

    // Each distinct answer is checked once: every user with exactly its
    // device and that device's ed25519 key.
    // Answers sharing one buffer (see `timed`) are the same answer: its
    // result is looked up by the buffer's address.
    let mut good: HashSet<u64> = HashSet::new();
    let mut by_buffer: HashMap<(usize, usize), u64> = HashMap::new();
    let (mut wrong_answers, mut missing_devices, mut bytes) = (0u64, 0u64, 0usize);
    for a in answers.iter().flatten() {
        bytes = bytes.max(a.body.len());
        let buffer = (a.body.as_ptr() as usize, a.body.len());
        let missing = match by_buffer.get(&buffer) {
            Some(missing) => *missing,
            None => {
                let mut h = DefaultHasher::new();
                a.body.hash(&mut h);
                let h = h.finish();
                let missing = if good.contains(&h) {
                    0
                } else {
                    check_query(&a.body, &expected)
                };
                if missing == 0 {
                    good.insert(h);
                }
                by_buffer.insert(buffer, missing);
                missing
            }
        };
        if missing > 0 {
            wrong_answers += 1;
            missing_devices += missing;
        }
    }
    let (rows, measured) = measures(
        &format!("/keys/query of {} users", args.users),
        &answers,
        elapsed,
    );
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;
    let per_sec = measured["requests_per_sec"].as_f64().unwrap_or(0.0);
    let counts = vec![
        vec!["requests/s".into(), format!("{per_sec:.1}")],
        vec!["answer bytes".into(), bytes.to_string()],
        vec!["wrong answers".into(), wrong_answers.to_string()],
        vec![
            "devices missing or wrong".into(),
            missing_devices.to_string(),
        ],
        vec!["request errors".into(), errors.total().to_string()],
    ];
    let mut failures = Vec::new();
    if wrong_answers > 0 {
        failures.push(format!(
            "{wrong_answers} answers lacked or altered {missing_devices} devices' keys"
        ));
    }
    push_errors(&mut failures, &errors);
    load::finish(
        t,
        "keys-query",
        &format!(
            "/keys/query naming {} users, {} in flight",
            args.users, l.concurrency
        ),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], counts),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": { "users": args.users, "requests": l.requests, "concurrency": l.concurrency },
            "measured": measured,
            "answer_bytes": bytes,
            "wrong_answers": wrong_answers,
            "missing_devices": missing_devices,
            "errors": errors.to_json(),
            "server": server_json,
        }),
        &failures,
    )
}

/// How many of the expected devices a `/keys/query` answer lacks or shows
/// with another key (all of them when it is not JSON).
fn check_query(body: &[u8], expected: &HashMap<String, (String, String)>) -> u64 {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return expected.len() as u64;
    };
    let mut missing = 0;
    for (user, (device, ed)) in expected {
        let devices = v
            .pointer("/device_keys")
            .and_then(|d| d.get(user))
            .and_then(Value::as_object);
        let ok = devices.is_some_and(|d| {
            d.len() == 1
                && d.get(device)
                    .and_then(|k| k.pointer("/keys"))
                    .and_then(|k| k.get(format!("ed25519:{device}")))
                    .and_then(Value::as_str)
                    == Some(ed.as_str())
        });
        if !ok {
            missing += 1;
        }
    }
    missing
}

fn push_errors(failures: &mut Vec<String>, errors: &Errors) {
    if errors.total() > 0 {
        failures.push(format!(
            "{} requests failed (first: {})",
            errors.total(),
            errors.first.clone().unwrap_or_default()
        ));
    }
}

// ---- keys-claim -------------------------------------------------------------

pub async fn run_claim(mut args: ClaimArgs) -> anyhow::Result<bool> {
    clamp_smoke(&args.target, &mut args.load);
    if args.target.smoke {
        args.devices = args.devices.min(5);
    }
    args.devices = args.devices.max(1);
    let (t, l) = (&args.target, &args.load);
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    let client = Client::new(&t.url)?;
    eprintln!(
        "keys-claim: {} claims naming {} devices ({} one-time keys each), {} in flight, against {} (run {run})",
        l.requests, args.devices, l.requests, l.concurrency, t.url
    );
    let mut users = users(&client, t, &run, "kc", args.devices + 1).await?;
    let claimer = users.pop().expect("registered");
    let s0 = seed(&run);
    let per_device = l.requests;
    let bar = t.bar(users.len() as u64, "uploading keys");
    each(
        users.clone(),
        l.setup_concurrency,
        &bar,
        move |i, s| async move {
            let key = upload_device_keys(&s, s0 ^ i as u64).await?;
            upload_one_time_keys(&s, &key, s0 ^ i as u64, per_device).await
        },
    )
    .await?;
    let body = json!({
        "one_time_keys": users.iter().map(|s| (s.user_id.clone(), json!({ s.device_id.clone(): "signed_curve25519" }))).collect::<serde_json::Map<_, _>>(),
    });

    let bar = t.bar(l.requests as u64, "/keys/claim");
    let phase = monitor.phase()?;
    let (answers, errors, elapsed) = timed(&claimer, l, &bar, |_| {
        (
            reqwest::Method::POST,
            "/_matrix/client/v3/keys/claim".to_owned(),
            body.clone(),
        )
    })
    .await;
    let phase = phase.finish().await?;

    // Every claim must return one key of each device, each key the one
    // uploaded under its id, and no key twice.
    let index: HashMap<(&str, &str), usize> = users
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.user_id.as_str(), s.device_id.as_str()), i))
        .collect();
    let mut handed: HashSet<(usize, String)> = HashSet::new();
    let (mut short_claims, mut missing, mut duplicated, mut altered) = (0u64, 0u64, 0u64, 0u64);
    let mut full: Vec<Option<Answer>> = Vec::new();
    for a in answers {
        let Some(a) = a else { continue };
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        let mut got = 0usize;
        if let Some(by_user) = v.get("one_time_keys").and_then(Value::as_object) {
            for (user, devices) in by_user {
                for (device, keys) in devices.as_object().into_iter().flatten() {
                    let Some(&i) = index.get(&(user.as_str(), device.as_str())) else {
                        altered += 1;
                        continue;
                    };
                    for (id, key) in keys.as_object().into_iter().flatten() {
                        got += 1;
                        let n = id
                            .strip_prefix("signed_curve25519:AAAA")
                            .and_then(|n| n.parse::<u64>().ok());
                        let content_ok = n.is_some_and(|n| {
                            key.get("key").and_then(Value::as_str)
                                == Some(fake_curve_key(s0 ^ i as u64, n).as_str())
                        });
                        if !content_ok {
                            altered += 1;
                        }
                        if !handed.insert((i, id.clone())) {
                            duplicated += 1;
                        }
                    }
                }
            }
        }
        if got < args.devices {
            short_claims += 1;
            missing += (args.devices - got) as u64;
        } else {
            full.push(Some(a));
        }
    }
    let (rows, measured) = measures(
        &format!("/keys/claim of {} devices", args.devices),
        &full,
        elapsed,
    );
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;
    let per_sec = measured["requests_per_sec"].as_f64().unwrap_or(0.0);
    let counts = vec![
        vec![
            "claims/s (each returning every device's key)".into(),
            format!("{per_sec:.1}"),
        ],
        vec!["keys handed out".into(), handed.len().to_string()],
        vec!["claims short of a key".into(), short_claims.to_string()],
        vec!["keys missing".into(), missing.to_string()],
        vec!["keys handed out twice".into(), duplicated.to_string()],
        vec!["keys not as uploaded".into(), altered.to_string()],
        vec!["request errors".into(), errors.total().to_string()],
    ];
    let mut failures = Vec::new();
    if short_claims > 0 {
        failures.push(format!(
            "{short_claims} claims lacked {missing} keys although enough were uploaded"
        ));
    }
    if duplicated > 0 {
        failures.push(format!(
            "{duplicated} one-time keys were handed out more than once"
        ));
    }
    if altered > 0 {
        failures.push(format!(
            "{altered} keys were not as uploaded (or of an unknown device)"
        ));
    }
    push_errors(&mut failures, &errors);
    load::finish(
        t,
        "keys-claim",
        &format!(
            "/keys/claim naming {} devices, {} in flight",
            args.devices, l.concurrency
        ),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], counts),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": { "devices": args.devices, "requests": l.requests, "one_time_keys_per_device": per_device, "concurrency": l.concurrency },
            "measured": measured,
            "keys_handed_out": handed.len(),
            "short_claims": short_claims,
            "missing_keys": missing,
            "duplicated_keys": duplicated,
            "altered_keys": altered,
            "errors": errors.to_json(),
            "server": server_json,
        }),
        &failures,
    )
}

// ---- to-device --------------------------------------------------------------

/// The event type of this scenario's messages.
const TO_DEVICE_TYPE: &str = "org.myelin.bench";

pub async fn run_to_device(mut args: ToDeviceArgs) -> anyhow::Result<bool> {
    clamp_smoke(&args.target, &mut args.load);
    if args.target.smoke {
        args.users = args.users.min(4);
        args.devices_per_user = args.devices_per_user.min(2);
    }
    args.users = args.users.max(1);
    args.devices_per_user = args.devices_per_user.max(1);
    let (t, l) = (&args.target, &args.load);
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    let client = Client::new(&t.url)?;
    let wildcard = args.devices_per_user > 1;
    let devices = args.users * args.devices_per_user;
    eprintln!(
        "to-device: {} sends to {} users × {} devices ({}), {} in flight, against {} (run {run})",
        l.requests,
        args.users,
        args.devices_per_user,
        if wildcard {
            "\"*\""
        } else {
            "each device named"
        },
        l.concurrency,
        t.url
    );
    let mut users = users(&client, t, &run, "td", args.users + 1).await?;
    let sender = users.pop().expect("registered");
    // Extra devices: password logins.
    let mut recipients: Vec<Session> = users.clone();
    if args.devices_per_user > 1 {
        let logins: Vec<String> = users
            .iter()
            .flat_map(|s| {
                let name = s
                    .user_id
                    .trim_start_matches('@')
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                std::iter::repeat_n(name, args.devices_per_user - 1)
            })
            .collect();
        let bar = t.bar(logins.len() as u64, "logging in devices");
        let c = client.clone();
        recipients.extend(
            each(logins, l.setup_concurrency, &bar, move |_, name| {
                let c = c.clone();
                async move {
                    let r = c.login(&name, PASSWORD).await?;
                    Ok(c.session(&r))
                }
            })
            .await?,
        );
    }
    if recipients.len() != devices {
        bail!("{} recipient devices, expected {devices}", recipients.len());
    }
    // The body of send i: the same content for every device, or each
    // device's own (its address in it, to check delivery to the right one).
    let padding = "x".repeat(100);
    let make = |i: usize| {
        let mut messages = serde_json::Map::new();
        if wildcard {
            for u in &users {
                messages.insert(
                    u.user_id.clone(),
                    json!({ "*": { "bench_run": run, "seq": i, "ciphertext": padding } }),
                );
            }
        } else {
            for r in &recipients {
                messages.insert(
                    r.user_id.clone(),
                    json!({ r.device_id.clone(): {
                        "bench_run": run, "seq": i, "to": r.device_id, "ciphertext": padding,
                    } }),
                );
            }
        }
        let path = format!(
            "/_matrix/client/v3/sendToDevice/{TO_DEVICE_TYPE}/{}",
            crate::client::encode_segment(&format!("{run}-{i}"))
        );
        (reqwest::Method::PUT, path, json!({ "messages": messages }))
    };

    let bar = t.bar(l.requests as u64, "/sendToDevice");
    let phase = monitor.phase()?;
    let (answers, errors, elapsed) = timed(&sender, l, &bar, make).await;
    let phase = phase.finish().await?;
    let acked: Vec<u64> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_some())
        .map(|(i, _)| i as u64)
        .collect();

    // Delivery: each device syncs until its inbox is empty.
    let bar = t.bar(recipients.len() as u64, "checking delivery");
    let max_syncs = l.requests + 10;
    let run2 = run.clone();
    let delivered = each(recipients, l.setup_concurrency, &bar, move |_, s| {
        let run = run2.clone();
        async move { drain_inbox(&s, &run, max_syncs).await }
    })
    .await?;
    let acked_set: HashSet<u64> = acked.iter().copied().collect();
    let (mut lost, mut duplicated, mut out_of_order, mut misrouted, mut unexpected) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for d in &delivered {
        let mut seen = HashSet::new();
        let mut last: Option<u64> = None;
        for &(seq, ok_route) in &d.seqs {
            if !ok_route {
                misrouted += 1;
            }
            if !acked_set.contains(&seq) {
                unexpected += 1;
            }
            if !seen.insert(seq) {
                duplicated += 1;
            }
            if l.concurrency == 1 && last.is_some_and(|p| seq < p) {
                out_of_order += 1;
            }
            last = Some(seq);
        }
        lost += acked.iter().filter(|s| !seen.contains(s)).count() as u64;
    }
    let syncs: usize = delivered.iter().map(|d| d.syncs).sum();
    let (rows, measured) = measures(
        &format!("/sendToDevice to {devices} devices"),
        &answers,
        elapsed,
    );
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;
    let per_sec = measured["requests_per_sec"].as_f64().unwrap_or(0.0);
    let counts = vec![
        vec!["sends/s".into(), format!("{per_sec:.1}")],
        vec![
            "device messages/s".into(),
            format!("{:.0}", per_sec * devices as f64),
        ],
        vec![
            "messages delivered".into(),
            delivered
                .iter()
                .map(|d| d.seqs.len())
                .sum::<usize>()
                .to_string(),
        ],
        vec!["expected".into(), (acked.len() * devices).to_string()],
        vec!["syncs to read them".into(), syncs.to_string()],
        vec!["lost".into(), lost.to_string()],
        vec!["duplicated".into(), duplicated.to_string()],
        vec![
            "out of order".into(),
            if l.concurrency == 1 {
                out_of_order.to_string()
            } else {
                "n/a".into()
            },
        ],
        vec!["to the wrong device".into(), misrouted.to_string()],
        vec!["never acknowledged".into(), unexpected.to_string()],
        vec!["request errors".into(), errors.total().to_string()],
    ];
    let mut failures = Vec::new();
    for (n, what) in [
        (lost, "lost"),
        (duplicated, "duplicated"),
        (out_of_order, "out of order"),
        (misrouted, "delivered to the wrong device"),
        (unexpected, "delivered but never acknowledged"),
    ] {
        if n > 0 {
            failures.push(format!("{n} device messages {what}"));
        }
    }
    push_errors(&mut failures, &errors);
    let drain_errors = delivered.iter().filter(|d| d.error.is_some()).count();
    if let Some(e) = delivered.iter().find_map(|d| d.error.clone()) {
        failures.push(format!(
            "{drain_errors} devices could not read their inbox (first: {e})"
        ));
    }
    load::finish(
        t,
        "to-device",
        &format!(
            "/sendToDevice to {} users × {} devices, {} in flight",
            args.users, args.devices_per_user, l.concurrency
        ),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], counts),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": {
                "users": args.users, "devices_per_user": args.devices_per_user, "wildcard": wildcard,
                "requests": l.requests, "concurrency": l.concurrency,
            },
            "measured": measured,
            "device_messages_per_sec": round3(per_sec * devices as f64),
            "delivered": delivered.iter().map(|d| d.seqs.len()).sum::<usize>(),
            "expected": acked.len() * devices,
            "syncs": syncs,
            "lost": lost,
            "duplicated": duplicated,
            "out_of_order": out_of_order,
            "misrouted": misrouted,
            "never_acknowledged": unexpected,
            "errors": errors.to_json(),
            "server": server_json,
        }),
        &failures,
    )
}

/// What one device read from its inbox: (seq, addressed to it) in order.
struct Inbox {
    seqs: Vec<(u64, bool)>,
    syncs: usize,
    error: Option<String>,
}

/// Syncs (no rooms, no presence) from the start until a sync brings no
/// to-device message, at most `max_syncs` times.
async fn drain_inbox(s: &Session, run: &str, max_syncs: usize) -> anyhow::Result<Inbox> {
    let filter = json!({
        "room": { "rooms": [] },
        "presence": { "not_types": ["*"] },
        "account_data": { "not_types": ["*"] },
    })
    .to_string();
    let mut inbox = Inbox {
        seqs: Vec::new(),
        syncs: 0,
        error: None,
    };
    let mut since: Option<String> = None;
    while inbox.syncs < max_syncs {
        inbox.syncs += 1;
        let resp = match s.sync(since.as_deref(), 0, Some(&filter)).await {
            Ok(r) => r,
            Err(e) => {
                inbox.error = Some(e.to_string());
                break;
            }
        };
        let events = resp
            .body
            .pointer("/to_device/events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for ev in &events {
            let c = &ev["content"];
            if ev["type"] != TO_DEVICE_TYPE || c["bench_run"] != run {
                continue;
            }
            let Some(seq) = c["seq"].as_u64() else {
                continue;
            };
            let to_ok = c.get("to").is_none_or(|to| to == s.device_id.as_str());
            inbox.seqs.push((seq, to_ok));
        }
        since = resp.next_batch().map(str::to_owned);
        if events.is_empty() || since.is_none() {
            break;
        }
    }
    Ok(inbox)
}
