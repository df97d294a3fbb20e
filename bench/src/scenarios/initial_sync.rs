//! `myelin-bench initial-sync`: a user in R rooms with M messages each asks
//! for a full initial `/sync`: its time and size. Each repeat uses a filter
//! no earlier request used (it excludes an account-data type that does not
//! exist), so no server answers from a cache of earlier responses.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::load::{self, Errors, Monitor, Target};
use crate::report::{LATENCY_HEADER, Summary, fmt_ms, latency_row};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Rooms the user is in.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Messages in each room.
    #[arg(long, default_value_t = 5)]
    pub messages: usize,
    /// Initial syncs measured (the first is reported on its own: cold).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Timeline events per room in the filter (Synapse's default is 10).
    #[arg(long, default_value_t = 10)]
    pub timeline_limit: usize,
}

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.rooms = args.rooms.min(3);
        args.messages = args.messages.min(2);
        args.repeats = args.repeats.min(2);
    }
    args.repeats = args.repeats.max(1);
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    let client = crate::client::Client::new(&t.url)?;
    eprintln!(
        "initial-sync: {} rooms x {} messages, {} syncs against {} (run {run})",
        args.rooms, args.messages, args.repeats, t.url
    );
    let user = load::register_users(&client, t, vec![format!("{run}-user")])
        .await?
        .pop()
        .expect("registered");

    let bar = t.bar(args.rooms as u64, "creating rooms and messages");
    let mut errors = Errors::default();
    for r in 0..args.rooms {
        let room = user
            .create_room(&load::room_body(&format!("bench initial-sync {run} {r}")))
            .await
            .context("createRoom")?;
        for m in 0..args.messages {
            if let Err(e) = user
                .send_message(
                    &room,
                    &format!("{run}-{r}-{m}"),
                    &load::message(&run, r, m as u64),
                )
                .await
            {
                errors.add(&e);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let bar = t.bar(args.repeats as u64, "initial syncs");
    let phase = monitor.phase()?;
    let mut times: Vec<Duration> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    let mut failures = Vec::new();
    let expected_msgs = args.messages.min(args.timeline_limit);
    for i in 0..args.repeats {
        let filter = json!({
            "room": { "timeline": { "limit": args.timeline_limit } },
            "account_data": { "not_types": [format!("bench.nocache.{run}.{i}")] },
        })
        .to_string();
        let started = Instant::now();
        let resp = match user.sync(None, 0, Some(&filter)).await {
            Ok(r) => r,
            Err(e) => {
                errors.add(&e);
                continue;
            }
        };
        // Until the answer's last byte arrived; the tool's parse of it
        // (a few milliseconds for half a megabyte) is not the server's time.
        times.push(resp.received.duration_since(started));
        sizes.push(resp.bytes);
        // Every room, each with its newest messages.
        let rooms = resp.joined_timelines();
        let ours: Vec<&(&str, &Value)> = rooms
            .iter()
            .filter(|(_, tl)| count_ours(tl, &run) > 0 || args.messages == 0)
            .collect();
        if rooms.len() < args.rooms || ours.len() != args.rooms {
            failures.push(format!(
                "sync {i}: {} joined rooms with this run's messages, expected {}",
                ours.len(),
                args.rooms
            ));
        }
        if let Some((room, tl)) = ours
            .iter()
            .find(|(_, tl)| count_ours(tl, &run) != expected_msgs)
        {
            failures.push(format!(
                "sync {i}: room {room} has {} of this run's messages in its timeline, expected {expected_msgs}",
                count_ours(tl, &run)
            ));
        }
        bar.inc(1);
    }
    let phase = phase.finish().await?;
    bar.finish_and_clear();
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;
    if errors.total() > 0 {
        failures.push(format!(
            "{} requests failed (first: {})",
            errors.total(),
            errors.first.clone().unwrap_or_default()
        ));
    }

    let Repeated {
        first,
        all,
        rest,
        bytes,
        rows,
        counts,
    } = Repeated::of("initial /sync", &times, &sizes, &errors);
    load::finish(
        t,
        "initial-sync",
        &format!(
            "{} rooms x {} messages, {} syncs",
            args.rooms, args.messages, args.repeats
        ),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], counts),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": {
                "rooms": args.rooms,
                "messages": args.messages,
                "repeats": args.repeats,
                "timeline_limit": args.timeline_limit,
            },
            "first_ms": first,
            "all": all.map(|s| s.to_json()),
            "after_first": rest.map(|s| s.to_json()),
            "bytes": bytes,
            "bytes_each": sizes,
            "errors": errors.to_json(),
            "server": server_json,
        }),
        &failures,
    )
}

/// A series of the same timed request whose first is cold: its latency
/// rows (all, after the first), the first's time and size, the errors.
pub struct Repeated {
    pub first: Option<f64>,
    pub all: Option<Summary>,
    pub rest: Option<Summary>,
    pub bytes: usize,
    pub rows: Vec<Vec<String>>,
    pub counts: Vec<Vec<String>>,
}

impl Repeated {
    /// `what` names the request in the rows.
    pub fn of(what: &str, times: &[Duration], sizes: &[usize], errors: &Errors) -> Self {
        let first = times.first().map(|d| d.as_secs_f64() * 1e3);
        let rest = Summary::of(times.get(1..).unwrap_or(&[]));
        let all = Summary::of(times);
        let mut rows = Vec::new();
        if let Some(a) = &all {
            rows.push(latency_row(&format!("{what}, all"), a));
        }
        if let Some(r) = &rest {
            rows.push(latency_row(&format!("{what}, after the first"), r));
        }
        let bytes = sizes.first().copied().unwrap_or(0);
        let counts = vec![
            vec![
                format!("first (cold) {what} (ms)"),
                first.map_or("-".into(), fmt_ms),
            ],
            vec!["response bytes".into(), bytes.to_string()],
            vec!["request errors".into(), errors.total().to_string()],
        ];
        Self {
            first,
            all,
            rest,
            bytes,
            rows,
            counts,
        }
    }
}

/// This run's messages in a timeline.
fn count_ours(timeline: &Value, run: &str) -> usize {
    timeline
        .get("events")
        .and_then(Value::as_array)
        .map_or(0, |evs| {
            evs.iter()
                .filter(|e| e.pointer("/content/bench_run").and_then(Value::as_str) == Some(run))
                .count()
        })
}
