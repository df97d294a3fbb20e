//! `myelin-bench send`: K users send messages as fast as the server takes
//! them (one request in flight each) for T seconds, into one room or spread
//! over `--rooms` rooms. Messages/s and send latency; another member follows
//! its `/sync` throughout and checks that every message acknowledged with a
//! 200 arrived exactly once and, per sender, in order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::load::{self, Acked, Delivered, Errors, Follower, Monitor, Target};
use crate::report::{LATENCY_HEADER, Summary, latency_row};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent senders (each a user with one request in flight).
    #[arg(long, default_value_t = 8)]
    pub senders: usize,
    /// Rooms; sender i sends into room i % rooms (`--rooms 8` with 8 senders:
    /// one room each).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// After sending, how long the follower may take to see every message.
    #[arg(long, default_value_t = 60)]
    pub drain_secs: u64,
}

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.senders = args.senders.min(3);
        args.secs = args.secs.min(1.5);
        args.drain_secs = args.drain_secs.min(20);
    }
    args.senders = args.senders.max(1);
    args.rooms = args.rooms.clamp(1, args.senders);
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    let client = crate::client::Client::new(&t.url)?;
    eprintln!(
        "send: {} senders, {} room(s), {} s against {} (run {run})",
        args.senders, args.rooms, args.secs, t.url
    );

    // Users: the senders, then the follower.
    let mut names: Vec<String> = (0..args.senders)
        .map(|i| format!("{run}-send-{i}"))
        .collect();
    names.push(format!("{run}-follow"));
    let mut users = load::register_users(&client, t, names).await?;
    let follower_session = users.pop().expect("registered");
    let senders = users;

    let bar = t.bar(args.rooms as u64, "creating rooms");
    let mut rooms = Vec::with_capacity(args.rooms);
    for (r, creator) in senders.iter().enumerate().take(args.rooms) {
        let room = creator
            .create_room(&load::room_body(&format!("bench send {run} {r}")))
            .await
            .context("createRoom")?;
        follower_session
            .join(&room)
            .await
            .context("follower join")?;
        rooms.push(room);
        bar.inc(1);
    }
    bar.finish_and_clear();
    for (i, s) in senders.iter().enumerate() {
        if i >= args.rooms {
            s.join(&rooms[i % args.rooms])
                .await
                .context("sender join")?;
        }
    }
    let mut follower = Follower::start(follower_session, &run, 1000).await?;

    // The follower reads /sync until told that sending is over and it has
    // seen every acknowledged message (or the drain time is up).
    let acked_ids: Arc<Mutex<Option<HashSet<String>>>> = Arc::new(Mutex::new(None));
    let follow_errors = Arc::new(Mutex::new(Errors::default()));
    let follow_task = {
        let acked_ids = acked_ids.clone();
        let follow_errors = follow_errors.clone();
        let drain = Duration::from_secs(args.drain_secs);
        tokio::spawn(async move {
            let mut delivered: Vec<Delivered> = Vec::new();
            let mut seen: HashSet<String> = HashSet::new();
            let mut drain_deadline: Option<Instant> = None;
            loop {
                {
                    let acked = acked_ids.lock().expect("not poisoned");
                    if let Some(acked) = acked.as_ref() {
                        let deadline =
                            *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
                        if acked.iter().all(|id| seen.contains(id)) || Instant::now() > deadline {
                            break;
                        }
                    }
                }
                match follower.poll(1000).await {
                    Ok(batch) => {
                        for d in batch {
                            seen.insert(d.event_id.clone());
                            delivered.push(d);
                        }
                    }
                    Err(e) => {
                        follow_errors.lock().expect("not poisoned").add(&e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (delivered, follower.backfills)
        })
    };

    // Sending.
    let secs = Duration::from_secs_f64(args.secs);
    let bar = t.bar(args.secs.ceil() as u64, "sending (s)");
    let phase = monitor.phase()?;
    let start = Instant::now();
    let load::Sending {
        acked,
        latencies,
        errors,
        last_done,
    } = load::send_messages(&senders, &rooms, &run, 0.0, secs, start, &bar).await?;
    let phase = phase.finish().await?;
    bar.finish_and_clear();
    let elapsed = last_done.duration_since(start);

    // Delivery.
    let drain_bar = t.bar(acked.len() as u64, "waiting for delivery");
    *acked_ids.lock().expect("not poisoned") =
        Some(acked.iter().map(|a| a.event_id.clone()).collect());
    let (delivered, backfills) = follow_task.await.context("follower task")?;
    drain_bar.finish_and_clear();

    let mut times: HashMap<&str, usize> = HashMap::new();
    for d in &delivered {
        *times.entry(d.event_id.as_str()).or_default() += 1;
    }
    let duplicated: usize = times.values().map(|n| n - 1).sum();
    let lost = acked
        .iter()
        .filter(|a| !times.contains_key(a.event_id.as_str()))
        .count();
    let acked_set: HashSet<&str> = acked.iter().map(|a| a.event_id.as_str()).collect();
    let unacked_delivered = times.keys().filter(|id| !acked_set.contains(*id)).count();
    // Per sender, the first deliveries must come in sending order.
    let mut out_of_order = 0usize;
    let mut last_seq: HashMap<usize, u64> = HashMap::new();
    let mut first_seen: HashSet<&str> = HashSet::new();
    for d in &delivered {
        if !first_seen.insert(d.event_id.as_str()) {
            continue;
        }
        if let Some(prev) = last_seq.get(&d.sender)
            && d.seq <= *prev
        {
            out_of_order += 1;
        }
        last_seq.insert(d.sender, d.seq);
    }
    // Send (request start) to the follower's receipt, first delivery.
    let sent_at: HashMap<&str, &Acked> = acked.iter().map(|a| (a.event_id.as_str(), a)).collect();
    let mut delivery_latency = Vec::new();
    let mut counted: HashSet<&str> = HashSet::new();
    for d in &delivered {
        if let Some(a) = sent_at.get(d.event_id.as_str())
            && counted.insert(d.event_id.as_str())
        {
            debug_assert_eq!((a.sender, a.seq), (d.sender, d.seq));
            delivery_latency.push(d.at.saturating_duration_since(a.sent_at));
        }
    }
    let follow_errors = follow_errors.lock().expect("not poisoned").clone();

    let rate = acked.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let send = Summary::of(&latencies);
    let deliver = Summary::of(&delivery_latency);
    let mut lat_rows = Vec::new();
    if let Some(s) = &send {
        lat_rows.push(latency_row("send (PUT → 200)", s));
    }
    if let Some(s) = &deliver {
        lat_rows.push(latency_row("send → follower's /sync", s));
    }
    let counts = vec![
        vec![
            "messages acknowledged (200)".into(),
            acked.len().to_string(),
        ],
        vec!["messages/s".into(), format!("{rate:.1}")],
        vec![
            "seconds (until the last send returned)".into(),
            format!("{:.2}", elapsed.as_secs_f64()),
        ],
        vec!["send errors".into(), errors.total().to_string()],
        vec!["delivered (distinct)".into(), times.len().to_string()],
        vec!["lost".into(), lost.to_string()],
        vec!["duplicated".into(), duplicated.to_string()],
        vec!["out of order".into(), out_of_order.to_string()],
        vec![
            "delivered without a 200 (send failed)".into(),
            unacked_delivered.to_string(),
        ],
        vec!["gaps filled from /messages".into(), backfills.to_string()],
        vec![
            "follower sync errors".into(),
            follow_errors.total().to_string(),
        ],
    ];
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;

    let mut failures = Vec::new();
    if lost > 0 {
        failures.push(format!("{lost} acknowledged messages never arrived"));
    }
    if duplicated > 0 {
        failures.push(format!("{duplicated} messages arrived more than once"));
    }
    if out_of_order > 0 {
        failures.push(format!("{out_of_order} messages arrived out of order"));
    }
    if errors.total() > 0 {
        failures.push(format!(
            "{} sends failed (first: {})",
            errors.total(),
            errors.first.clone().unwrap_or_default()
        ));
    }
    if acked.is_empty() {
        failures.push("no message was acknowledged".into());
    }
    let title = format!(
        "{} senders, {} room(s), {:.1} s",
        args.senders, args.rooms, args.secs
    );
    load::finish(
        t,
        "send",
        &title,
        &[
            (&["what", "value"], counts),
            (&LATENCY_HEADER, lat_rows),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": { "senders": args.senders, "rooms": args.rooms, "secs": args.secs },
            "acknowledged": acked.len(),
            "elapsed_secs": elapsed.as_secs_f64(),
            "messages_per_sec": rate,
            "send_latency": send.map(|s| s.to_json()),
            "delivery_latency": deliver.map(|s| s.to_json()),
            "send_errors": errors.to_json(),
            "follower_errors": follow_errors.to_json(),
            "delivered_distinct": times.len(),
            "lost": lost,
            "duplicated": duplicated,
            "out_of_order": out_of_order,
            "unacked_delivered": unacked_delivered,
            "backfills": backfills,
            "server": server_json,
        }),
        &failures,
    )
}
