//! `myelin-bench join`: users join one public room one after another until it
//! has `--members` members (join latency as the room grows), then `--extra`
//! more users each join the full room: the time for one more user to join a
//! room of that size.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::load::{self, Errors, Monitor, Target};
use crate::report::{LATENCY_HEADER, Summary, latency_row};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Members the room grows to (the creator included).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Users who then join the full room, each timed.
    #[arg(long, default_value_t = 5)]
    pub extra: usize,
    /// Rows of the growth table (joins grouped by room size).
    #[arg(long, default_value_t = 5)]
    pub buckets: usize,
}

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.members = args.members.min(6);
        args.extra = args.extra.min(2);
    }
    args.members = args.members.max(1);
    args.buckets = args.buckets.clamp(1, args.members);
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    let client = crate::client::Client::new(&t.url)?;
    eprintln!(
        "join: a room of {} members, then {} more joins, against {} (run {run})",
        args.members, args.extra, t.url
    );
    let names: Vec<String> = (0..args.members + args.extra)
        .map(|i| format!("{run}-j{i}"))
        .collect();
    let users = load::register_users(&client, t, names).await?;
    let room = users[0]
        .create_room(&load::room_body(&format!("bench join {run}")))
        .await
        .context("createRoom")?;

    let bar = t.bar((users.len() - 1) as u64, "joining");
    let phase = monitor.phase()?;
    let mut errors = Errors::default();
    // (members before the join, latency)
    let mut growth: Vec<(usize, Duration)> = Vec::new();
    let mut extra: Vec<Duration> = Vec::new();
    for (i, u) in users.iter().enumerate().skip(1) {
        let started = Instant::now();
        match u.join(&room).await {
            Ok(()) => {
                let took = started.elapsed();
                if i < args.members {
                    growth.push((i, took));
                } else {
                    extra.push(took);
                }
            }
            Err(e) => errors.add(&e),
        }
        bar.inc(1);
    }
    let phase = phase.finish().await?;
    bar.finish_and_clear();
    let joined = users[0].joined_member_count(&room).await.unwrap_or(0);
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;

    // Growth table: joins grouped by the room's size before them.
    let mut rows = Vec::new();
    let mut buckets_json = Vec::new();
    let per = growth.len().div_ceil(args.buckets).max(1);
    for chunk in growth.chunks(per) {
        let (lo, hi) = (chunk[0].0, chunk[chunk.len() - 1].0);
        let lat: Vec<Duration> = chunk.iter().map(|(_, d)| *d).collect();
        if let Some(s) = Summary::of(&lat) {
            rows.push(latency_row(&format!("join a room of {lo}–{hi}"), &s));
            buckets_json
                .push(json!({ "members_from": lo, "members_to": hi, "latency": s.to_json() }));
        }
    }
    let extra_summary = Summary::of(&extra);
    if let Some(s) = &extra_summary {
        rows.push(latency_row(
            &format!("one more user joins a room of ≥{}", args.members),
            s,
        ));
    }
    let expected = args.members + args.extra;
    let counts = vec![
        vec!["joined members at the end".into(), joined.to_string()],
        vec!["expected".into(), expected.to_string()],
        vec!["request errors".into(), errors.total().to_string()],
    ];
    let mut failures = Vec::new();
    if joined != expected {
        failures.push(format!(
            "the room has {joined} joined members, expected {expected}"
        ));
    }
    if errors.total() > 0 {
        failures.push(format!(
            "{} joins failed (first: {})",
            errors.total(),
            errors.first.clone().unwrap_or_default()
        ));
    }
    load::finish(
        t,
        "join",
        &format!(
            "a room grows to {} members, then {} more joins",
            args.members, args.extra
        ),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], counts),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": { "members": args.members, "extra": args.extra },
            "growth": buckets_json,
            "join_full_room": extra_summary.map(|s| s.to_json()),
            "all_joins": Summary::of(&growth.iter().map(|(_, d)| *d).collect::<Vec<_>>()).map(|s| s.to_json()),
            "joined_members": joined,
            "errors": errors.to_json(),
            "server": server_json,
        }),
        &failures,
    )
}
