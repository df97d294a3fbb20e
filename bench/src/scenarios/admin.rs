//! `myelin-bench admin`: the admin API's long operations, timed, against any
//! homeserver by URL or a Myelin this command starts (`--binary`).
//!
//! 1. **reindex**: `--senders` users send messages (one request in flight
//!    each) until the server holds at least `--events` of them; then an admin
//!    `POST /_dendrite/admin/fulltext/reindex`. Myelin answers `{"job_id"}`
//!    and the job's status (`GET /_myelin/admin/v1/jobs/{id}`: `status`,
//!    `processed`, `elapsed_ms`) is polled every `--poll-ms` until it is
//!    `complete`: events/s is `processed` over the job's own `elapsed_ms` and
//!    over the wall clock from the POST. A server that answers without a job
//!    id (Dendrite answers `{}`) gets "n/a". Afterwards a `/search` for a word
//!    only this run's messages carry must count every one of them.
//! 2. **purge**: one room holds `--purge-events` of those messages (they are
//!    sent before the reindex and count towards `--events`); `POST
//!    /_dendrite/admin/purgeRoom/{roomId}`, then `GET
//!    /_synapse/admin/v2/rooms/{roomId}/delete_status` is polled until the
//!    job is `complete`: the time from the POST. Then `GET
//!    /_synapse/admin/v1/rooms/{roomId}` must answer 404.
//! 3. **evacuate**: `--members` users (shared-secret registration and joins,
//!    `--concurrency` at a time) join a room an admin created; `POST
//!    /_dendrite/admin/evacuateRoom/{roomId}` is timed; its `affected` must
//!    list exactly the members and the admin, and `GET
//!    /_synapse/admin/v1/rooms/{roomId}/members` must then count 0 joined.
//!
//! Messages beyond `--purge-events` go round-robin into `--rooms` further
//! rooms. Set-up (registration, rooms, messages, joins) is never in a timed
//! phase. Any failed check makes the run exit 1.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::client::{Client, RequestError, Session, encode_segment};
use crate::load::{self, Errors, Monitor, PhaseStats, Target};
use crate::local::Local;
use crate::procstat;
use crate::report::{fmt_ms, round3};

/// The targets.
pub const REINDEX_TARGET_PER_SEC: f64 = 100_000.0;
pub const PURGE_TARGET_MS: f64 = 2_000.0;
/// Dendrite's documentation: 69,586 events reindexed in 53.7 s.
pub const DENDRITE_REINDEX_PER_SEC: f64 = 69_586.0 / 53.7;

/// A part of the scenario.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Reindex,
    Purge,
    Evacuate,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Start this Myelin binary (a temp dir, a free loopback port, rate limits
    /// off, argon2 at 256 KiB) and measure it; `--url`, `--shared-secret` and
    /// `--pid` then come from it.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// With `--binary`: the started server's `database.url` (a postgres://
    /// URL of an empty database; default SQLite in the temp dir).
    #[arg(long, requires = "binary")]
    pub database_url: Option<String>,
    /// With `--binary`: keep the temp dir (config, data, server.log).
    #[arg(long, requires = "binary")]
    pub keep_dir: bool,
    /// Messages the reindex must index at least (it indexes every searchable
    /// event on the server; the purged room's messages count).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Messages in the room that is purged.
    #[arg(long, default_value_t = 100_000)]
    pub purge_events: usize,
    /// Local users who join the evacuated room (its creator, the admin,
    /// comes on top).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Concurrent senders, each a user with one request in flight.
    #[arg(long, default_value_t = 8)]
    pub senders: usize,
    /// Rooms for the messages beyond `--purge-events` (when `--events` is larger).
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,
    /// Registrations and joins in flight at once (set-up).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How often a job's status is polled (ms).
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// Give up on a job, or on the evacuation request, after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub job_timeout_secs: u64,
    /// The parts to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "reindex,purge,evacuate"
    )]
    pub parts: Vec<Part>,
    /// A reindex answered without a job id, or a job status (reindex or
    /// purge) that cannot be read, fails the run instead of "n/a": for
    /// Myelin. Implied by `--binary`.
    #[arg(long)]
    pub require_job_status: bool,
}

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.events = args.events.min(150);
        args.purge_events = args.purge_events.min(100);
        args.members = args.members.min(10);
        args.senders = args.senders.min(3);
        args.rooms = args.rooms.min(2);
    }
    args.senders = args.senders.max(1);
    args.rooms = args.rooms.max(1);
    args.concurrency = args.concurrency.max(1);
    args.poll_ms = args.poll_ms.max(1);
    let Some(binary) = args.binary.clone() else {
        return measure(&args).await;
    };
    let local = Local::start(
        &binary,
        "myelin-bench-admin-",
        args.database_url.as_deref(),
        None,
    )
    .await?;
    args.target.url = local.base.clone();
    args.target.shared_secret = Some(local.secret.clone());
    args.target.pid = Some(local.server.pid());
    args.require_job_status = true;
    if args.target.label == "server" {
        let db = if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        };
        args.target.label = format!("myelin ({db})");
    }
    eprintln!(
        "admin: started {} on {} (temp dir {})",
        binary.display(),
        local.base,
        local.dir.path().display()
    );
    let result = measure(&args).await;
    let stopped = local.stop(args.keep_dir);
    let ok = result?;
    stopped?;
    Ok(ok)
}

/// What the report collects as the parts run.
#[derive(Default)]
struct Report {
    /// measure, value, target, result
    results: Vec<Vec<String>>,
    /// check, value
    checks: Vec<Vec<String>>,
    server: Vec<Vec<String>>,
    json: Map<String, Value>,
    failures: Vec<String>,
}

impl Report {
    fn result(&mut self, measure: &str, value: String, target: &str, verdict: &str) {
        self.results.push(vec![
            measure.to_owned(),
            value,
            target.to_owned(),
            verdict.to_owned(),
        ]);
    }

    fn check(&mut self, what: &str, value: impl ToString) {
        self.checks.push(vec![what.to_owned(), value.to_string()]);
    }

    /// Server CPU and peak RSS over one timed part (when `--pid` was given).
    fn phase(&mut self, part: &str, p: Option<&PhaseStats>) -> Value {
        let Some(p) = p else {
            return Value::Null;
        };
        let cpu = p.end.cpu_percent_since(&p.start);
        self.server.push(vec![
            format!("server CPU during {part} (% of a core)"),
            format!("{cpu:.0}"),
        ]);
        self.server.push(vec![
            format!("server RSS peak during {part} (MiB)"),
            format!("{:.1}", procstat::mib(p.peak_rss_kib)),
        ]);
        json!({
            "cpu_percent": round3(cpu),
            "cpu_secs": round3(p.end.cpu_secs - p.start.cpu_secs),
            "peak_vm_rss_mib": procstat::mib(p.peak_rss_kib),
        })
    }
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

async fn measure(args: &Args) -> anyhow::Result<bool> {
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    // Admin requests may run long (evacuating a big room): their own timeout.
    let client = Client::with_timeout(&t.url, Duration::from_secs(args.job_timeout_secs))?;
    let has = |p: Part| args.parts.contains(&p);
    // Messages: the purged room's, and the rest of --events in other rooms.
    let in_purge_room = if has(Part::Purge) {
        args.purge_events
    } else {
        0
    };
    let elsewhere = if has(Part::Reindex) {
        args.events.saturating_sub(in_purge_room)
    } else {
        0
    };
    eprintln!(
        "admin: {} parts, {in_purge_room} messages in the purged room + {elsewhere} in {} other room(s), {} members to evacuate, against {} (run {run})",
        args.parts.len(),
        if elsewhere > 0 { args.rooms } else { 0 },
        args.members,
        t.url
    );
    let secret = t.secret()?;
    let admin_user = client
        .register_or_login(secret, &format!("{run}-admin"), load::PASSWORD, true)
        .await
        .context("registering the admin")?;
    let admin = client.session(&admin_user);

    let mut report = Report::default();
    report.json.insert(
        "params".into(),
        json!({
            "events": args.events,
            "purge_events": args.purge_events,
            "members": args.members,
            "senders": args.senders,
            "rooms": args.rooms,
            "concurrency": args.concurrency,
            "poll_ms": args.poll_ms,
            "parts": args.parts.iter().map(|p| format!("{p:?}").to_lowercase()).collect::<Vec<_>>(),
            "binary": args.binary,
            "database": if args.binary.is_some() {
                json!(if args.database_url.is_some() { "postgresql" } else { "sqlite" })
            } else {
                Value::Null
            },
        }),
    );

    let sent = if in_purge_room + elsewhere > 0 {
        Some(send_messages(args, &client, &run, in_purge_room, elsewhere, &mut report).await?)
    } else {
        None
    };
    if has(Part::Reindex)
        && let Some(sent) = &sent
    {
        reindex(args, &admin, &monitor, sent, &mut report).await?;
    }
    if has(Part::Purge)
        && let Some(sent) = &sent
        && let Some(room) = &sent.purge_room
    {
        purge(args, &admin, &monitor, room, sent, &mut report).await?;
    }
    if has(Part::Evacuate) {
        evacuate(args, &client, &admin, &monitor, &run, &mut report).await?;
    }

    let (server_json, mut server_rows) = monitor.report(None, &[], t.settle_secs).await?;
    report.server.append(&mut server_rows);
    report.json.insert("server".into(), server_json);
    let title = format!(
        "reindex of ≥ {} messages, purgeRoom of a {}-message room, evacuateRoom of {} members",
        args.events, args.purge_events, args.members
    );
    let Report {
        results,
        checks,
        server,
        json,
        failures,
    } = report;
    load::finish(
        t,
        "admin",
        &title,
        &[
            (&["measure", "value", "target", "result"], results),
            (&["check", "value"], checks),
            (&["server", "value"], server),
        ],
        Value::Object(json),
        &failures,
    )
}

/// The messages sent during set-up.
struct Sent {
    /// The room to purge (when the purge part runs) and its messages.
    purge_room: Option<String>,
    in_purge_room: u64,
    /// Every message acknowledged with a 200.
    acked: u64,
    senders: Vec<Session>,
    /// A word only this run's messages carry.
    word: String,
}

/// Registers the senders; the first creates the rooms, the others join them
/// all; then every sender sends (one request in flight each) until each
/// room has its share.
async fn send_messages(
    args: &Args,
    client: &Client,
    run: &str,
    in_purge_room: usize,
    elsewhere: usize,
    report: &mut Report,
) -> anyhow::Result<Sent> {
    let t = &args.target;
    let mut setup = t.clone();
    setup.register_concurrency = args.concurrency;
    let names = (0..args.senders).map(|i| format!("{run}-s{i}")).collect();
    let senders = load::register_users(client, &setup, names).await?;
    let word = format!(
        "adm{}",
        run.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    );

    // Rooms and how many messages each gets.
    let mut rooms: Vec<(String, u64)> = Vec::new();
    let purge_room = if in_purge_room > 0 {
        let room = senders[0]
            .create_room(&load::room_body(&format!("bench admin {run} purge")))
            .await
            .context("createRoom")?;
        rooms.push((room.clone(), in_purge_room as u64));
        Some(room)
    } else {
        None
    };
    if elsewhere > 0 {
        let n = args.rooms.min(elsewhere);
        for r in 0..n {
            let room = senders[0]
                .create_room(&load::room_body(&format!("bench admin {run} {r}")))
                .await
                .context("createRoom")?;
            let share = elsewhere / n + usize::from(r < elsewhere % n);
            rooms.push((room, share as u64));
        }
    }
    let bar = t.bar(((senders.len() - 1) * rooms.len()) as u64, "joining rooms");
    for s in senders.iter().skip(1) {
        for (room, _) in &rooms {
            s.join(room).await.context("sender join")?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    // Each sender takes the next room (round-robin among rooms with
    // messages left) and the next sequence number.
    struct Plan {
        left: Vec<u64>,
        cursor: usize,
        next_seq: u64,
    }
    let plan = Arc::new(Mutex::new(Plan {
        left: rooms.iter().map(|(_, n)| *n).collect(),
        cursor: 0,
        next_seq: 0,
    }));
    let room_ids: Arc<Vec<String>> = Arc::new(rooms.iter().map(|(r, _)| r.clone()).collect());
    let total: u64 = rooms.iter().map(|(_, n)| n).sum();
    let bar = t.bar(total, "sending messages");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        let (s, plan, room_ids, bar) = (s.clone(), plan.clone(), room_ids.clone(), bar.clone());
        let (run, word) = (run.to_owned(), word.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = vec![0u64; room_ids.len()];
            let mut errors = Errors::default();
            loop {
                let next = {
                    let mut p = plan.lock().expect("not poisoned");
                    let n = p.left.len();
                    (0..n)
                        .map(|k| (p.cursor + k) % n)
                        .find(|&r| p.left[r] > 0)
                        .map(|r| {
                            p.left[r] -= 1;
                            p.cursor = (r + 1) % n;
                            p.next_seq += 1;
                            (r, p.next_seq - 1)
                        })
                };
                let Some((r, seq)) = next else { break };
                let content = json!({
                    "msgtype": "m.text",
                    "body": format!("admin bench {word} sender {i} message {seq}"),
                    "bench_run": run,
                    "bench_sender": i,
                    "bench_seq": seq,
                });
                match s
                    .send_message(&room_ids[r], &format!("{run}-a-{seq}"), &content)
                    .await
                {
                    Ok(_) => acked[r] += 1,
                    Err(e) => errors.add(&e),
                }
                bar.inc(1);
            }
            (acked, errors)
        }));
    }
    let mut acked = vec![0u64; rooms.len()];
    let mut errors = Errors::default();
    for task in tasks {
        let (a, e) = task.await.context("sender task")?;
        for (sum, n) in acked.iter_mut().zip(a) {
            *sum += n;
        }
        errors.merge(e);
    }
    let took = start.elapsed();
    bar.finish_and_clear();
    let acked_total: u64 = acked.iter().sum();
    let in_purge = if purge_room.is_some() { acked[0] } else { 0 };
    report.check("set-up: messages sent (200)", acked_total);
    report.check(
        "set-up: messages/s while sending (not a target)",
        format!("{:.0}", per_sec(acked_total, took)),
    );
    report.check("set-up: failed sends", errors.total());
    if errors.total() > 0 {
        report.failures.push(format!(
            "{} sends failed (first: {})",
            errors.total(),
            errors.first.clone().unwrap_or_default()
        ));
    }
    report.json.insert(
        "messages".into(),
        json!({
            "acknowledged": acked_total,
            "in_purge_room": in_purge,
            "rooms": rooms.iter().zip(&acked).map(|((r, _), n)| json!({ "room_id": r, "messages": n })).collect::<Vec<_>>(),
            "secs": round3(took.as_secs_f64()),
            "messages_per_sec": round3(per_sec(acked_total, took)),
            "errors": errors.to_json(),
        }),
    );
    Ok(Sent {
        purge_room,
        in_purge_room: in_purge,
        acked: acked_total,
        senders,
        word,
    })
}

/// Polls `path` every `--poll-ms` until `done` says the answer is final
/// (Some(true) complete, Some(false) failed); `progress` is shown on `bar`.
/// Returns the last answer and when it came; Err after `--job-timeout-secs`,
/// or when the status is unreadable 10 times in a row.
async fn poll_until(
    args: &Args,
    admin: &Session,
    path: &str,
    bar: &indicatif::ProgressBar,
    status_of: impl Fn(&Value) -> Option<(String, u64)>,
) -> anyhow::Result<(Value, Instant, u64)> {
    let deadline = Instant::now() + Duration::from_secs(args.job_timeout_secs);
    let mut unreadable = 0;
    let mut polls = 0u64;
    loop {
        let answer = admin.get(path).await;
        let now = Instant::now();
        polls += 1;
        match answer {
            Ok(v) => match status_of(&v) {
                Some((status, progress)) => {
                    unreadable = 0;
                    bar.set_position(progress);
                    if status == "complete" || status == "failed" {
                        return Ok((v, now, polls));
                    }
                }
                None => {
                    unreadable += 1;
                    if unreadable >= 10 {
                        anyhow::bail!("GET {path}: no status in {v}");
                    }
                }
            },
            Err(e) => {
                unreadable += 1;
                if unreadable >= 10 {
                    return Err(e).with_context(|| format!("GET {path}"));
                }
            }
        }
        if now > deadline {
            anyhow::bail!("GET {path}: not complete after {} s", args.job_timeout_secs);
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
}

/// How a failed request is shown.
fn request_failure(what: &str, e: &RequestError) -> String {
    format!("{what}: {e}")
}

async fn reindex(
    args: &Args,
    admin: &Session,
    monitor: &Monitor,
    sent: &Sent,
    report: &mut Report,
) -> anyhow::Result<()> {
    let t = &args.target;
    let bar = t.bar(sent.acked, "reindexing (events)");
    let phase = monitor.phase()?;
    let started = Instant::now();
    let answer = admin
        .post("/_dendrite/admin/fulltext/reindex", &json!({}))
        .await;
    let post_took = started.elapsed();
    let answer = match answer {
        Ok(v) => v,
        Err(e) => {
            bar.finish_and_clear();
            phase.finish().await?;
            report.failures.push(request_failure(
                "POST /_dendrite/admin/fulltext/reindex",
                &e,
            ));
            report.result("reindex", "error".into(), "", "");
            return Ok(());
        }
    };
    let Some(job_id) = answer.get("job_id").and_then(Value::as_str) else {
        bar.finish_and_clear();
        phase.finish().await?;
        report.result(
            "reindex: events/s",
            "n/a (no job_id in the answer)".into(),
            "≥ 100,000",
            "–",
        );
        report.check("reindex: POST answer", &answer);
        if args.require_job_status {
            report
                .failures
                .push(format!("the reindex answered {answer} without a job_id"));
        }
        report.json.insert(
            "reindex".into(),
            json!({ "answer": answer, "job_id": null }),
        );
        return Ok(());
    };
    let path = format!("/_myelin/admin/v1/jobs/{}", encode_segment(job_id));
    let polled = poll_until(args, admin, &path, &bar, |v| {
        Some((
            v.get("status")?.as_str()?.to_owned(),
            v.get("processed").and_then(Value::as_u64).unwrap_or(0),
        ))
    })
    .await;
    let phase = phase.finish().await?;
    bar.finish_and_clear();
    let (job, done_at, polls) = match polled {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("{e:#}");
            report.result("reindex: events/s", format!("n/a ({msg})"), "", "");
            if args.require_job_status {
                report.failures.push(format!("reindex job status: {msg}"));
            }
            report
                .json
                .insert("reindex".into(), json!({ "job_id": job_id, "error": msg }));
            return Ok(());
        }
    };
    let wall = done_at.duration_since(started);
    let status = job.get("status").and_then(Value::as_str).unwrap_or("");
    let processed = job.get("processed").and_then(Value::as_u64).unwrap_or(0);
    let server_ms = job.get("elapsed_ms").and_then(Value::as_u64);
    let rate_server = server_ms.map(|e| processed as f64 / (e.max(1) as f64 / 1e3));
    let rate_wall = per_sec(processed, wall);
    let verdict = |r: f64| {
        if r >= REINDEX_TARGET_PER_SEC {
            "pass"
        } else {
            "MISS"
        }
    };
    report.result(
        "reindex: events indexed (job's processed)",
        thousands(processed as f64),
        &format!("≥ {}", thousands(args.events as f64)),
        if processed as usize >= args.events {
            "ok"
        } else {
            "fewer"
        },
    );
    match (server_ms, rate_server) {
        (Some(e), Some(r)) => {
            report.result(
                "reindex: job time, server's elapsed_ms",
                thousands(e as f64),
                "",
                "",
            );
            report.result(
                "reindex: events/s (server's elapsed_ms)",
                thousands(r),
                "≥ 100,000",
                verdict(r),
            );
        }
        _ => report.result(
            "reindex: events/s (server's elapsed_ms)",
            "n/a".into(),
            "",
            "",
        ),
    }
    report.result(
        "reindex: POST → status complete, wall clock (ms)",
        fmt_ms(ms(wall)),
        "",
        "",
    );
    report.result(
        "reindex: events/s (wall clock)",
        thousands(rate_wall),
        "≥ 100,000",
        verdict(rate_wall),
    );
    report.result(
        "reindex: × Dendrite's documented 1,296/s",
        format!(
            "{:.1}×",
            rate_server.unwrap_or(rate_wall) / DENDRITE_REINDEX_PER_SEC
        ),
        "",
        "",
    );
    if status != "complete" {
        report.failures.push(format!("the reindex job ended {job}"));
    }
    if processed < sent.acked {
        report.failures.push(format!(
            "the reindex indexed {processed} events, fewer than the {} messages sent",
            sent.acked
        ));
    }
    // Every message of this run must be found again.
    let searcher = &sent.senders[0];
    let found = searcher
        .post(
            "/_matrix/client/v3/search",
            &json!({ "search_categories": { "room_events": { "search_term": sent.word } } }),
        )
        .await;
    let count = match &found {
        Ok(v) => v
            .pointer("/search_categories/room_events/count")
            .and_then(Value::as_u64),
        Err(e) => {
            report
                .failures
                .push(request_failure("search after the reindex", e));
            None
        }
    };
    report.check("reindex: job status", status);
    report.check(
        "reindex: search hits for this run's word after the reindex",
        count.map_or("n/a".into(), |c| c.to_string()),
    );
    if let Some(c) = count
        && c != sent.acked
    {
        let how = if c > sent.acked {
            format!("{} indexed twice?", c - sent.acked)
        } else {
            format!("{} missing", sent.acked - c)
        };
        report.failures.push(format!(
            "after the reindex a search for this run's word counts {c} messages, {} were sent ({how})",
            sent.acked
        ));
    }
    let phase_json = report.phase("reindex", phase.as_ref());
    report.json.insert(
        "reindex".into(),
        json!({
            "job_id": job_id,
            "status": status,
            "processed": processed,
            "server_elapsed_ms": server_ms,
            "wall_ms": round3(ms(wall)),
            "post_ms": round3(ms(post_took)),
            "events_per_sec_server": rate_server.map(round3),
            "events_per_sec_wall": round3(rate_wall),
            "polls": polls,
            "search_count": count,
            "job": job,
            "server": phase_json,
        }),
    );
    Ok(())
}

async fn purge(
    args: &Args,
    admin: &Session,
    monitor: &Monitor,
    room: &str,
    sent: &Sent,
    report: &mut Report,
) -> anyhow::Result<()> {
    let t = &args.target;
    let bar = t.bar(1, "purgeRoom job");
    let enc = encode_segment(room);
    let phase = monitor.phase()?;
    let started = Instant::now();
    let answer = admin
        .post(&format!("/_dendrite/admin/purgeRoom/{enc}"), &json!({}))
        .await;
    let post_took = started.elapsed();
    if let Err(e) = &answer {
        bar.finish_and_clear();
        phase.finish().await?;
        report
            .failures
            .push(request_failure("POST /_dendrite/admin/purgeRoom", e));
        report.result("purgeRoom", "error".into(), "", "");
        return Ok(());
    }
    let status_path = format!("/_synapse/admin/v2/rooms/{enc}/delete_status");
    let polled = poll_until(args, admin, &status_path, &bar, |v| {
        let job = v.get("results")?.as_array()?.last()?;
        let status = job.get("status")?.as_str()?.to_owned();
        let done = u64::from(status == "complete");
        Some((status, done))
    })
    .await;
    let phase = phase.finish().await?;
    bar.finish_and_clear();
    let (status, took, job) = match polled {
        Ok((v, at, _)) => {
            let job = v
                .pointer("/results")
                .and_then(Value::as_array)
                .and_then(|r| r.last())
                .cloned()
                .unwrap_or(Value::Null);
            let status = job
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            (status, Some(at.duration_since(started)), job)
        }
        Err(e) => {
            // A server without Synapse's delete_status (Dendrite) cannot say
            // when the purge is done: "n/a", unless the status is required.
            let msg = format!("{e:#}");
            if args.require_job_status {
                report.failures.push(format!("purgeRoom status: {msg}"));
            }
            (format!("unknown ({msg})"), None, Value::Null)
        }
    };
    report.result(
        "purgeRoom: messages in the room",
        thousands(sent.in_purge_room as f64),
        "",
        "",
    );
    match took {
        Some(d) => report.result(
            "purgeRoom: POST → delete_status complete (ms)",
            fmt_ms(ms(d)),
            "≤ 2,000",
            if ms(d) <= PURGE_TARGET_MS {
                "pass"
            } else {
                "MISS"
            },
        ),
        None => report.result(
            "purgeRoom: time",
            "n/a (no delete_status)".into(),
            "≤ 2,000",
            "–",
        ),
    }
    if took.is_some() && status != "complete" {
        report
            .failures
            .push(format!("the purgeRoom job ended {job}"));
    }
    // The room must be gone.
    let details = admin.get(&format!("/_synapse/admin/v1/rooms/{enc}")).await;
    let details_status = match &details {
        Ok(_) => 200,
        Err(e) => e.status.unwrap_or(0),
    };
    report.check("purgeRoom: job status", &status);
    report.check(
        "purgeRoom: GET /_synapse/admin/v1/rooms/{roomId} afterwards (HTTP)",
        details_status,
    );
    if details_status != 404 {
        report.failures.push(format!(
            "after purgeRoom, GET /_synapse/admin/v1/rooms/{room} answered {details_status}, not 404"
        ));
    }
    let phase_json = report.phase("purgeRoom", phase.as_ref());
    report.json.insert(
        "purge".into(),
        json!({
            "room_id": room,
            "messages": sent.in_purge_room,
            "status": status,
            "ms": took.map(|d| round3(ms(d))),
            "post_ms": round3(ms(post_took)),
            "room_details_http": details_status,
            "job": job,
            "server": phase_json,
        }),
    );
    Ok(())
}

async fn evacuate(
    args: &Args,
    client: &Client,
    admin: &Session,
    monitor: &Monitor,
    run: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let t = &args.target;
    let mut setup = t.clone();
    setup.register_concurrency = args.concurrency;
    let names = (0..args.members).map(|i| format!("{run}-m{i}")).collect();
    let members = load::register_users(client, &setup, names).await?;
    let room = admin
        .create_room(&load::room_body(&format!("bench admin {run} evacuate")))
        .await
        .context("createRoom")?;
    let bar = t.bar(members.len() as u64, "joining the room to evacuate");
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = Vec::new();
    for m in &members {
        let (m, room, sem, bar) = (m.clone(), room.clone(), sem.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("never closed");
            let r = m.join(&room).await;
            bar.inc(1);
            r
        }));
    }
    let mut join_errors = Errors::default();
    for task in tasks {
        if let Err(e) = task.await.context("join task")? {
            join_errors.add(&e);
        }
    }
    bar.finish_and_clear();
    let joined_before = admin.joined_member_count(&room).await.unwrap_or(0);
    report.check("evacuateRoom: joined members before", joined_before);
    if join_errors.total() > 0 {
        report.failures.push(format!(
            "{} joins failed (first: {})",
            join_errors.total(),
            join_errors.first.clone().unwrap_or_default()
        ));
    }

    let enc = encode_segment(&room);
    let bar = t.bar(1, "evacuateRoom");
    let phase = monitor.phase()?;
    let started = Instant::now();
    let answer = admin
        .post(&format!("/_dendrite/admin/evacuateRoom/{enc}"), &json!({}))
        .await;
    let took = started.elapsed();
    let phase = phase.finish().await?;
    bar.finish_and_clear();
    let expected: BTreeSet<String> = members
        .iter()
        .map(|m| m.user_id.clone())
        .chain([admin.user_id.clone()])
        .collect();
    let mut affected: Vec<String> = Vec::new();
    match &answer {
        Ok(v) => {
            affected = v
                .get("affected")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            report.result(
                "evacuateRoom: local members",
                thousands(expected.len() as f64),
                "",
                "",
            );
            report.result(
                "evacuateRoom: POST → 200 (ms)",
                fmt_ms(ms(took)),
                "recorded",
                "",
            );
            report.result(
                "evacuateRoom: members/s",
                thousands(per_sec(affected.len() as u64, took)),
                "",
                "",
            );
        }
        Err(e) => {
            report.result("evacuateRoom", "error".into(), "", "");
            report
                .failures
                .push(request_failure("POST /_dendrite/admin/evacuateRoom", e));
        }
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for u in &affected {
        *counts.entry(u.as_str()).or_default() += 1;
    }
    let missing = expected
        .iter()
        .filter(|u| !counts.contains_key(u.as_str()))
        .count();
    let unexpected = counts.keys().filter(|u| !expected.contains(**u)).count();
    let repeated: usize = counts.values().map(|n| n - 1).sum();
    report.check("evacuateRoom: affected users", affected.len());
    report.check(
        "evacuateRoom: expected (members + the admin)",
        expected.len(),
    );
    report.check("evacuateRoom: missing from affected", missing);
    report.check(
        "evacuateRoom: unexpected or repeated in affected",
        unexpected + repeated,
    );
    if answer.is_ok() && (missing > 0 || unexpected > 0 || repeated > 0) {
        report.failures.push(format!(
            "evacuateRoom's affected lists {} users ({missing} missing, {unexpected} unexpected, {repeated} repeated), expected {}",
            affected.len(),
            expected.len()
        ));
    }
    // Nobody may be left (the admin left too, so ask the admin API).
    let left = admin
        .get(&format!("/_synapse/admin/v1/rooms/{enc}/members"))
        .await;
    let joined_after = match &left {
        Ok(v) => v.get("total").and_then(Value::as_u64),
        Err(e) => {
            report.failures.push(request_failure(
                "GET /_synapse/admin/v1/rooms/{roomId}/members after evacuateRoom",
                e,
            ));
            None
        }
    };
    report.check(
        "evacuateRoom: joined members afterwards (admin API)",
        joined_after.map_or("n/a".into(), |n| n.to_string()),
    );
    if let Some(n) = joined_after
        && n != 0
    {
        report.failures.push(format!(
            "after evacuateRoom the room still has {n} joined members"
        ));
    }
    let phase_json = report.phase("evacuateRoom", phase.as_ref());
    report.json.insert(
        "evacuate".into(),
        json!({
            "room_id": room,
            "members": expected.len(),
            "joined_before": joined_before,
            "ms": answer.is_ok().then(|| round3(ms(took))),
            "affected": affected.len(),
            "missing": missing,
            "unexpected": unexpected,
            "repeated": repeated,
            "joined_after": joined_after,
            "join_errors": join_errors.to_json(),
            "server": phase_json,
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_296.0), "1,296");
        assert_eq!(thousands(100_001.0), "100,001");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(-35_499.0), "-35,499");
    }
}
