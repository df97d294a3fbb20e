//! `myelin-bench idle-syncers`: C users each hold a long-polling `/sync`
//! open at once (one connection each, re-polling when one returns) while one
//! room sees traffic: the server's memory with them all held, and the
//! wake-up latency of a watcher in that room (as in `wakeup`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::client::Client;
use crate::load::{self, Errors, Follower, Monitor, Target};
use crate::procstat;
use crate::report::{LATENCY_HEADER, Summary, latency_row};
use crate::scenarios::wakeup;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent long-polling clients (one user and one connection each).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// How many of them are also members of the busy room (so each of its
    /// messages wakes them); the rest are in no room.
    #[arg(long, default_value_t = 0)]
    pub in_room: usize,
    /// Wake-up samples (messages into the busy room) while all are held.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Pause before each sample's send.
    #[arg(long, default_value_t = 100)]
    pub gap_ms: u64,
    /// The idle clients' long-poll timeout.
    #[arg(long, default_value_t = 30_000)]
    pub poll_timeout_ms: u64,
    /// Initial syncs in flight at once while the clients connect.
    #[arg(long, default_value_t = 50)]
    pub ramp: usize,
    /// Seconds to wait once every client has its long-poll out, before the
    /// "held" reading.
    #[arg(long, default_value_t = 3)]
    pub hold_secs: u64,
}

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.clients = args.clients.min(20);
        args.samples = args.samples.min(5);
        args.hold_secs = args.hold_secs.min(1);
        args.gap_ms = args.gap_ms.min(20);
    }
    args.in_room = args.in_room.min(args.clients);
    let limit = load::raise_nofile(args.clients as u64 + 256)?;
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    // One pool for everyone; hyper opens a connection per request in flight.
    let client = Client::new(&t.url)?;
    eprintln!(
        "idle-syncers: {} clients ({} in the busy room), {} samples against {} (run {run}, open-file limit {limit})",
        args.clients, args.in_room, args.samples, t.url
    );
    let mut names: Vec<String> = (0..args.clients).map(|i| format!("{run}-i{i}")).collect();
    names.push(format!("{run}-sender"));
    names.push(format!("{run}-watcher"));
    let mut users = load::register_users(&client, t, names).await?;
    let watcher = users.pop().expect("registered");
    let sender = users.pop().expect("registered");
    let idle = users;
    let room = sender
        .create_room(&load::room_body(&format!("bench idle-syncers {run}")))
        .await
        .context("createRoom")?;
    watcher.join(&room).await.context("watcher join")?;
    let bar = t.bar(args.in_room as u64, "joining the busy room");
    for u in idle.iter().take(args.in_room) {
        u.join(&room).await.context("idle client join")?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut follower = Follower::start(watcher.clone(), &run, 50).await?;
    let before_clients = monitor.snapshot()?;

    // The idle clients.
    let stop = Arc::new(AtomicBool::new(false));
    let parked = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let early = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Errors::default()));
    let ramp = Arc::new(tokio::sync::Semaphore::new(args.ramp.max(1)));
    let filter = json!({
        "room": { "timeline": { "limit": 1 } },
        "presence": { "not_types": ["*"] },
    })
    .to_string();
    let poll_timeout = args.poll_timeout_ms;
    let mut tasks = Vec::with_capacity(idle.len());
    for s in idle {
        let (stop, parked, in_flight, early, errors, ramp, filter) = (
            stop.clone(),
            parked.clone(),
            in_flight.clone(),
            early.clone(),
            errors.clone(),
            ramp.clone(),
            filter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = ramp.acquire_owned().await.expect("never closed");
            let mut since = loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match s.sync(None, 0, Some(&filter)).await {
                    Ok(r) => break r.next_batch().unwrap_or_default().to_owned(),
                    Err(e) => {
                        errors.lock().expect("not poisoned").add(&e);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            drop(permit);
            parked.fetch_add(1, Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) {
                in_flight.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let r = s.sync(Some(&since), poll_timeout, Some(&filter)).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(r) => {
                        if started.elapsed() + Duration::from_secs(1)
                            < Duration::from_millis(poll_timeout)
                        {
                            early.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(n) = r.next_batch() {
                            since = n.to_owned();
                        }
                    }
                    Err(e) => {
                        errors.lock().expect("not poisoned").add(&e);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
    }
    let bar = t.bar(args.clients as u64, "clients connecting");
    let connect_started = Instant::now();
    loop {
        let n = parked.load(Ordering::Relaxed);
        bar.set_position(n);
        if n as usize >= args.clients {
            break;
        }
        if connect_started.elapsed() > Duration::from_secs(600) {
            stop.store(true, Ordering::Relaxed);
            bail!(
                "only {n} of {} clients connected within 600 s (errors: {:?})",
                args.clients,
                errors.lock().expect("not poisoned").first
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let held = monitor.snapshot()?;
    let held_in_flight = in_flight.load(Ordering::Relaxed);
    let early_before = early.load(Ordering::Relaxed);

    let bar = t.bar(args.samples as u64, "wake-up samples");
    let phase = monitor.phase()?;
    let s = wakeup::sample(
        &mut follower,
        &sender,
        &room,
        &run,
        args.samples,
        Duration::from_millis(args.gap_ms),
        &bar,
    )
    .await;
    let min_in_flight = in_flight.load(Ordering::Relaxed);
    let phase = phase.finish().await?;
    bar.finish_and_clear();
    let early_during = early.load(Ordering::Relaxed) - early_before;
    stop.store(true, Ordering::Relaxed);
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    let idle_errors = errors.lock().expect("not poisoned").clone();

    let extra: Vec<(&str, &procstat::Snapshot)> = before_clients
        .as_ref()
        .map(|b| ("before the clients", b))
        .into_iter()
        .chain(held.as_ref().map(|h| ("with all clients held", h)))
        .collect();
    let (server_json, server_rows) = monitor
        .report(phase.as_ref(), &extra, t.settle_secs)
        .await?;
    let per_client_kib = match (&before_clients, &held) {
        (Some(b), Some(h)) if args.clients > 0 => {
            Some((h.status.vm_rss_kib as f64 - b.status.vm_rss_kib as f64) / args.clients as f64)
        }
        _ => None,
    };

    let wake = Summary::of(&s.wake);
    let send = Summary::of(&s.send);
    let mut rows = Vec::new();
    if let Some(w) = &wake {
        rows.push(latency_row("send → watcher's long-poll answer", w));
    }
    if let Some(x) = &send {
        rows.push(latency_row("send (PUT → 200)", x));
    }
    let mut counts = vec![
        vec!["clients".into(), args.clients.to_string()],
        vec![
            "long-polls in flight when held".into(),
            held_in_flight.to_string(),
        ],
        vec![
            "long-polls in flight after the samples".into(),
            min_in_flight.to_string(),
        ],
        vec!["connect time (s)".into(), format!("{connect_secs:.1}")],
        vec![
            "idle long-polls answered early during the samples".into(),
            early_during.to_string(),
        ],
        vec!["idle client errors".into(), idle_errors.total().to_string()],
        vec!["samples lost".into(), s.lost.to_string()],
        vec!["samples duplicated".into(), s.duplicated.to_string()],
        vec!["sample request errors".into(), s.errors.total().to_string()],
    ];
    if let Some(k) = per_client_kib {
        counts.push(vec!["server KiB per held client".into(), format!("{k:.1}")]);
    }
    let mut failures = Vec::new();
    if s.lost > 0 {
        failures.push(format!("{} messages never reached the watcher", s.lost));
    }
    if s.duplicated > 0 {
        failures.push(format!("{} messages arrived more than once", s.duplicated));
    }
    if s.errors.total() + idle_errors.total() > 0 {
        failures.push(format!(
            "{} requests failed (first: {})",
            s.errors.total() + idle_errors.total(),
            s.errors
                .first
                .clone()
                .or(idle_errors.first.clone())
                .unwrap_or_default()
        ));
    }
    load::finish(
        t,
        "idle-syncers",
        &format!(
            "{} long-polling clients ({} in the busy room), {} samples",
            args.clients, args.in_room, args.samples
        ),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], counts),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": {
                "clients": args.clients,
                "in_room": args.in_room,
                "samples": args.samples,
                "gap_ms": args.gap_ms,
                "poll_timeout_ms": args.poll_timeout_ms,
            },
            "connect_secs": connect_secs,
            "held_in_flight": held_in_flight,
            "in_flight_after_samples": min_in_flight,
            "early_returns_during_samples": early_during,
            "wake_latency": wake.map(|w| w.to_json()),
            "send_latency": send.map(|x| x.to_json()),
            "lost": s.lost,
            "duplicated": s.duplicated,
            "sample_errors": s.errors.to_json(),
            "idle_errors": idle_errors.to_json(),
            "server_kib_per_client": per_client_kib,
            "server": server_json,
        }),
        &failures,
    )
}
