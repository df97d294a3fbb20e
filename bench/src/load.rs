//! What the load scenarios share: the target server and its flags, user
//! registration, a follower that reads a user's `/sync` in order, server
//! readings from /proc (before, during, after), and the final report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{Client, RequestError, Session};
use crate::procstat::{self, Snapshot};
use crate::report::{round3, table, write_json};

/// Registrations retried after a 5xx during set-up, in this process.
pub static SETUP_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The password of every user the scenarios create.
pub const PASSWORD: &str = "myelin-bench password";

/// The server a load scenario drives (any homeserver, by URL).
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// The homeserver's client-server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    pub url: String,
    /// The registration shared secret (`registration_shared_secret` in
    /// Synapse, `registration.shared_secret` in Myelin). Required, except by
    /// `admin --binary`, which starts a server with a secret of its own.
    #[arg(long, env = "BENCH_SHARED_SECRET", hide_env_values = true)]
    pub shared_secret: Option<String>,
    /// The server's pid: its memory and CPU are read from /proc before,
    /// during and after the measured phase.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A name for the server in the output (e.g. myelin, synapse).
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Prefix of the user names this run creates (default: random), so runs
    /// against the same server do not collide. Existing users log in.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Registrations in flight at once during set-up. More than 1 makes
    /// Myelin (SQLite) answer some of them 500 "database is locked" as of
    /// f3e3dc6 (see docs/benchmarks-history.md).
    #[arg(long, default_value_t = 1)]
    pub register_concurrency: usize,
    /// Tiny sizes and short times, for CI: the scenario runs in seconds and
    /// only its correctness counters matter.
    #[arg(long)]
    pub smoke: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Seconds to wait after the measured phase before the "after" reading.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
}

impl Target {
    /// The user-name prefix for this run.
    pub fn prefix(&self) -> anyhow::Result<String> {
        match &self.prefix {
            Some(p) => Ok(p.to_lowercase()),
            None => Ok(format!("b{}", crate::local::random_hex(4)?)),
        }
    }

    /// The shared secret, or an error saying how to give it.
    pub fn secret(&self) -> anyhow::Result<&str> {
        self.shared_secret
            .as_deref()
            .context("--shared-secret (or BENCH_SHARED_SECRET) is required")
    }

    pub fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        let bar = ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("static template")
                .progress_chars("=> "),
        );
        if self.quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_message(msg.to_owned());
        bar
    }
}

/// A message the server acknowledged: sender `sender`'s `seq`-th.
pub struct Acked {
    pub event_id: String,
    pub sender: usize,
    pub seq: u64,
    pub sent_at: Instant,
}

/// What the senders of [`send_messages`] did.
pub struct Sending {
    pub acked: Vec<Acked>,
    /// Each acknowledged send's time from the request to the answer.
    pub latencies: Vec<Duration>,
    pub errors: Errors,
    /// When the last sender finished.
    pub last_done: Instant,
}

/// Sender i sends messages into `rooms[i % rooms.len()]` from `start` for
/// `secs`, one request in flight each; with `rate` > 0 (messages/s in
/// all), its k-th message is due at start + (k × senders + i) / rate (a
/// sender behind sends at once), else it sends as fast as the server
/// answers. `bar` shows the seconds.
pub async fn send_messages(
    senders: &[Session],
    rooms: &[String],
    run: &str,
    rate: f64,
    secs: Duration,
    start: Instant,
    bar: &ProgressBar,
) -> anyhow::Result<Sending> {
    let n = senders.len();
    let mut tasks = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        let s = s.clone();
        let room = rooms[i % rooms.len()].clone();
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut latencies = Vec::new();
            let mut errors = Errors::default();
            let mut seq = 0u64;
            while start.elapsed() < secs {
                if rate > 0.0 {
                    let due =
                        start + Duration::from_secs_f64((seq as f64 * n as f64 + i as f64) / rate);
                    if due >= start + secs {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let txn = format!("{run}-{i}-{seq}");
                let sent_at = Instant::now();
                match s.send_message(&room, &txn, &message(&run, i, seq)).await {
                    Ok(event_id) => {
                        latencies.push(sent_at.elapsed());
                        acked.push(Acked {
                            event_id,
                            sender: i,
                            seq,
                            sent_at,
                        });
                    }
                    Err(e) => errors.add(&e),
                }
                seq += 1;
            }
            (acked, latencies, errors, Instant::now())
        }));
    }
    while start.elapsed() < secs {
        tokio::time::sleep(Duration::from_millis(200)).await;
        bar.set_position(start.elapsed().as_secs());
    }
    let mut out = Sending {
        acked: Vec::new(),
        latencies: Vec::new(),
        errors: Errors::default(),
        last_done: start,
    };
    for task in tasks {
        let (a, l, e, done) = task.await.context("sender task")?;
        out.acked.extend(a);
        out.latencies.extend(l);
        out.errors.merge(e);
        out.last_done = out.last_done.max(done);
    }
    Ok(out)
}

/// Registers `names` (shared secret; a login if a name exists already),
/// `concurrency` at a time, in order.
pub async fn register_users(
    client: &Client,
    target: &Target,
    names: Vec<String>,
) -> anyhow::Result<Vec<Session>> {
    let secret = target.secret()?.to_owned();
    let bar = target.bar(names.len() as u64, "registering users");
    let sem = Arc::new(tokio::sync::Semaphore::new(
        target.register_concurrency.max(1),
    ));
    let mut tasks = Vec::with_capacity(names.len());
    for name in names {
        let client = client.clone();
        let secret = secret.clone();
        let sem = sem.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("never closed");
            let mut attempt = 0;
            let r = loop {
                match client
                    .register_or_login(&secret, &name, PASSWORD, false)
                    .await
                {
                    // Set-up is not what is measured: a 5xx is retried (and
                    // counted, so the server's problem stays visible).
                    Err(e) if attempt < 5 && format!("{e}").contains(": 5") => {
                        attempt += 1;
                        SETUP_RETRIES.fetch_add(1, Ordering::Relaxed);
                        eprintln!("set-up: retrying after {e}");
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                    other => break other,
                }
            };
            bar.inc(1);
            r.map(|u| client.session(&u))
        }));
    }
    let mut sessions = Vec::with_capacity(tasks.len());
    for t in tasks {
        sessions.push(t.await.context("registration task")??);
    }
    bar.finish_and_clear();
    Ok(sessions)
}

/// A public room with everything a benchmark needs (no encryption).
pub fn room_body(name: &str) -> Value {
    json!({ "preset": "public_chat", "name": name, "visibility": "private" })
}

/// A message the follower can recognise: `bench_run` is the run's prefix.
pub fn message(run: &str, sender: usize, seq: u64) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("bench {run} sender {sender} message {seq}"),
        "bench_run": run,
        "bench_sender": sender,
        "bench_seq": seq,
    })
}

/// One of this run's messages, as the follower received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub event_id: String,
    pub sender: usize,
    pub seq: u64,
    pub at: Instant,
}

/// Reads one user's `/sync` in order, as a client does: incremental syncs
/// from `next_batch`, and when a room's timeline comes back `limited` (more
/// events than the filter's limit), the gap is filled from `/messages`
/// backwards until the last event already seen.
pub struct Follower {
    session: Session,
    since: String,
    filter: String,
    run: String,
    last_seen: HashMap<String, String>,
    /// Gaps filled from `/messages`.
    pub backfills: u64,
}

impl Follower {
    /// An initial sync (its timeline ends become the "last seen" events).
    pub async fn start(session: Session, run: &str, timeline_limit: u32) -> anyhow::Result<Self> {
        let filter = json!({
            "room": { "timeline": { "limit": timeline_limit } },
            "presence": { "not_types": ["*"] },
            "account_data": { "not_types": ["*"] },
        })
        .to_string();
        let resp = session
            .sync(None, 0, Some(&filter))
            .await
            .with_context(|| format!("initial sync of {}", session.user_id))?;
        let since = resp
            .next_batch()
            .context("initial sync without next_batch")?
            .to_owned();
        let mut last_seen = HashMap::new();
        for (room, timeline) in resp.joined_timelines() {
            if let Some(id) = last_event_id(timeline) {
                last_seen.insert(room.to_owned(), id);
            }
        }
        Ok(Self {
            session,
            since,
            filter,
            run: run.to_owned(),
            last_seen,
            backfills: 0,
        })
    }

    /// One long-poll; returns this run's messages that arrived, in order.
    pub async fn poll(&mut self, timeout_ms: u64) -> Result<Vec<Delivered>, RequestError> {
        let resp = self
            .session
            .sync(Some(&self.since), timeout_ms, Some(&self.filter))
            .await?;
        let at = Instant::now();
        let mut out = Vec::new();
        for (room, timeline) in resp.joined_timelines() {
            let mut events: Vec<Value> = timeline
                .get("events")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let limited = timeline.get("limited").and_then(Value::as_bool) == Some(true);
            if limited
                && let (Some(last), Some(prev)) = (
                    self.last_seen.get(room).cloned(),
                    timeline.get("prev_batch").and_then(Value::as_str),
                )
            {
                let mut gap = self.backfill(room, prev, &last).await?;
                gap.append(&mut events);
                events = gap;
                self.backfills += 1;
            }
            if let Some(id) = events
                .last()
                .and_then(|e| e.get("event_id"))
                .and_then(Value::as_str)
            {
                self.last_seen.insert(room.to_owned(), id.to_owned());
            }
            for ev in &events {
                if let Some(d) = self.recognise(ev, at) {
                    out.push(d);
                }
            }
        }
        if let Some(next) = resp.next_batch() {
            self.since = next.to_owned();
        }
        Ok(out)
    }

    /// Events before `from` back to (not including) `last`, oldest first.
    async fn backfill(
        &self,
        room: &str,
        from: &str,
        last: &str,
    ) -> Result<Vec<Value>, RequestError> {
        let mut newest_first = Vec::new();
        let mut from = from.to_owned();
        loop {
            let page = self.session.messages_backwards(room, &from, 500).await?;
            let chunk = page
                .get("chunk")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for ev in &chunk {
                if ev.get("event_id").and_then(Value::as_str) == Some(last) {
                    newest_first.reverse();
                    return Ok(newest_first);
                }
                newest_first.push(ev.clone());
            }
            match page.get("end").and_then(Value::as_str) {
                Some(end) if !chunk.is_empty() => from = end.to_owned(),
                _ => break,
            }
        }
        // The last seen event was never reached: deliver what was found.
        newest_first.reverse();
        Ok(newest_first)
    }

    fn recognise(&self, ev: &Value, at: Instant) -> Option<Delivered> {
        if ev.get("type").and_then(Value::as_str) != Some("m.room.message") {
            return None;
        }
        let content = ev.get("content")?;
        if content.get("bench_run").and_then(Value::as_str) != Some(self.run.as_str()) {
            return None;
        }
        Some(Delivered {
            event_id: ev.get("event_id")?.as_str()?.to_owned(),
            sender: usize::try_from(content.get("bench_sender")?.as_u64()?).ok()?,
            seq: content.get("bench_seq")?.as_u64()?,
            at,
        })
    }
}

fn last_event_id(timeline: &Value) -> Option<String> {
    timeline
        .get("events")?
        .as_array()?
        .last()?
        .get("event_id")?
        .as_str()
        .map(str::to_owned)
}

/// Readings of the server process (when `--pid` was given).
pub struct Monitor {
    pid: Option<u32>,
    before: Option<Snapshot>,
}

/// A background reading every 250 ms during the measured phase.
pub struct Phase {
    pid: Option<u32>,
    start: Option<Snapshot>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Vec<Snapshot>>>,
}

/// What the server did during the measured phase.
pub struct PhaseStats {
    pub start: Snapshot,
    pub end: Snapshot,
    pub peak_rss_kib: u64,
}

impl Monitor {
    /// The "before" reading, at the start of the scenario.
    pub fn start(pid: Option<u32>) -> anyhow::Result<Self> {
        let before = pid.map(Snapshot::take).transpose()?;
        Ok(Self { pid, before })
    }

    pub fn snapshot(&self) -> anyhow::Result<Option<Snapshot>> {
        self.pid.map(Snapshot::take).transpose()
    }

    pub fn phase(&self) -> anyhow::Result<Phase> {
        let start = self.snapshot()?;
        let stop = Arc::new(AtomicBool::new(false));
        let task = self.pid.map(|pid| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if let Ok(s) = Snapshot::take(pid) {
                        out.push(s);
                    }
                }
                out
            })
        });
        Ok(Phase {
            pid: self.pid,
            start,
            stop,
            task,
        })
    }

    /// The server section of the report: JSON and table rows. `phase` is
    /// the measured phase, `extra` any named readings in between.
    pub async fn report(
        &self,
        phase: Option<&PhaseStats>,
        extra: &[(&str, &Snapshot)],
        settle_secs: u64,
    ) -> anyhow::Result<(Value, Vec<Vec<String>>)> {
        let Some(pid) = self.pid else {
            return Ok((Value::Null, Vec::new()));
        };
        if settle_secs > 0 {
            tokio::time::sleep(Duration::from_secs(settle_secs)).await;
        }
        let after = Snapshot::take(pid)?;
        let mib = |kib: u64| format!("{:.1}", procstat::mib(kib));
        let mut rows = Vec::new();
        let mut j = serde_json::Map::new();
        j.insert("pid".into(), json!(pid));
        if let Some(b) = &self.before {
            rows.push(vec![
                "server RSS before (MiB)".into(),
                mib(b.status.vm_rss_kib),
            ]);
            j.insert("before".into(), b.status.to_json());
        }
        for (name, s) in extra {
            rows.push(vec![
                format!("server RSS {name} (MiB)"),
                mib(s.status.vm_rss_kib),
            ]);
            j.insert(name.replace(' ', "_"), s.status.to_json());
        }
        if let Some(p) = phase {
            let cpu = p.end.cpu_percent_since(&p.start);
            let cpu_s = p.end.cpu_secs - p.start.cpu_secs;
            rows.push(vec![
                "server RSS peak during (MiB)".into(),
                mib(p.peak_rss_kib),
            ]);
            rows.push(vec![
                "server RSS at end (MiB)".into(),
                mib(p.end.status.vm_rss_kib),
            ]);
            rows.push(vec![
                "server CPU during (% of a core)".into(),
                format!("{cpu:.0}"),
            ]);
            j.insert(
                "during".into(),
                json!({
                    "peak_vm_rss_kib": p.peak_rss_kib,
                    "peak_vm_rss_mib": procstat::mib(p.peak_rss_kib),
                    "end": p.end.status.to_json(),
                    "cpu_percent": round3(cpu),
                    "cpu_secs": round3(cpu_s),
                    "secs": round3(p.end.at.duration_since(p.start.at).as_secs_f64()),
                }),
            );
        }
        rows.push(vec![
            format!("server RSS after {settle_secs} s (MiB)"),
            mib(after.status.vm_rss_kib),
        ]);
        rows.push(vec![
            "server VmHWM after (MiB)".into(),
            mib(after.status.vm_hwm_kib),
        ]);
        j.insert("after".into(), after.status.to_json());
        j.insert("settle_secs".into(), json!(settle_secs));
        Ok((Value::Object(j), rows))
    }
}

impl Phase {
    pub async fn finish(mut self) -> anyhow::Result<Option<PhaseStats>> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = match self.task.take() {
            Some(t) => t.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let (Some(pid), Some(start)) = (self.pid, self.start.take()) else {
            return Ok(None);
        };
        let end = Snapshot::take(pid)?;
        let peak_rss_kib = samples
            .iter()
            .chain([&start, &end])
            .map(|s| s.status.vm_rss_kib)
            .max()
            .unwrap_or(0);
        Ok(Some(PhaseStats {
            start,
            end,
            peak_rss_kib,
        }))
    }
}

/// Tally of failed requests by kind (`http 500`, `timeout`, ...).
#[derive(Default, Debug, Clone)]
pub struct Errors {
    pub by_kind: std::collections::BTreeMap<String, u64>,
    pub first: Option<String>,
}

impl Errors {
    pub fn add(&mut self, e: &RequestError) {
        *self.by_kind.entry(e.kind()).or_default() += 1;
        if self.first.is_none() {
            self.first = Some(e.to_string());
        }
    }

    pub fn merge(&mut self, other: Errors) {
        for (k, v) in other.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    pub fn to_json(&self) -> Value {
        json!({ "total": self.total(), "by_kind": self.by_kind, "first": self.first })
    }

    /// The correctness failure line when any request failed.
    pub fn failure(&self) -> Option<String> {
        (self.total() > 0).then(|| {
            format!(
                "{} requests failed (first: {})",
                self.total(),
                self.first.clone().unwrap_or_default()
            )
        })
    }
}

/// Prints the report's tables under a title, writes the JSON (with the
/// common fields added), prints PASS/FAIL of the correctness checks, and
/// returns whether they passed.
pub fn finish(
    target: &Target,
    scenario: &str,
    title: &str,
    sections: &[(&[&str], Vec<Vec<String>>)],
    mut json: Value,
    failures: &[String],
) -> anyhow::Result<bool> {
    println!();
    println!(
        "== {scenario} on {} ({}): {title}",
        target.label, target.url
    );
    for (header, rows) in sections {
        if !rows.is_empty() {
            print!("{}", table(header, rows));
        }
    }
    let retries = SETUP_RETRIES.load(Ordering::Relaxed);
    if retries > 0 {
        println!("set-up: {retries} registrations retried after a 5xx (not timed)");
    }
    let ok = failures.is_empty();
    if ok {
        println!("correctness: PASS");
    } else {
        for f in failures {
            println!("correctness: FAIL: {f}");
        }
    }
    if let Some(path) = &target.json {
        let obj = json.as_object_mut().context("report is an object")?;
        obj.insert("scenario".into(), json!(scenario));
        obj.insert("label".into(), json!(target.label));
        obj.insert("url".into(), json!(target.url));
        obj.insert("smoke".into(), json!(target.smoke));
        obj.insert(
            "unix_time".into(),
            json!(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ),
        );
        obj.insert("setup_retries_after_5xx".into(), json!(retries));
        obj.insert("correctness_failures".into(), json!(failures));
        obj.insert("pass".into(), json!(ok));
        write_json(path, &json)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ok)
}

/// Raises this process's open-file limit (soft, up to the hard limit) to at
/// least `needed`; fails if the hard limit is lower.
#[allow(unsafe_code)] // libc calls, each with its SAFETY comment
pub fn raise_nofile(needed: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < needed {
        bail!(
            "need {needed} open files but the hard limit is {} (raise it: ulimit -Hn, or run as root)",
            lim.rlim_max
        );
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!(
            "setrlimit(RLIMIT_NOFILE, {}): {}",
            lim.rlim_max,
            std::io::Error::last_os_error()
        );
    }
    Ok(lim.rlim_cur)
}
