//! `myelin-bench wakeup`: one user long-polls `/sync`, another sends one
//! message at a time; the time from the start of the send to the arrival of
//! the long-poll's answer carrying it, over N samples.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::client::{RequestError, Session};
use crate::load::{self, Delivered, Errors, Follower, Monitor, Target};
use crate::report::{LATENCY_HEADER, Summary, latency_row};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Samples (messages).
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Pause before each send, so the long-poll is parked on the server.
    #[arg(long, default_value_t = 20)]
    pub gap_ms: u64,
}

/// The outcome of a series of wake-up samples.
#[derive(Default)]
pub struct Samples {
    /// Send start → long-poll answer carrying the message.
    pub wake: Vec<Duration>,
    /// Send start → 200.
    pub send: Vec<Duration>,
    /// Messages not seen within the sample's time limit.
    pub lost: usize,
    /// Messages seen more than once.
    pub duplicated: usize,
    pub errors: Errors,
}

/// Runs `n` samples: `sender` sends into `room`, `follower` waits for it.
pub async fn sample(
    follower: &mut Follower,
    sender: &Session,
    room: &str,
    run: &str,
    n: usize,
    gap: Duration,
    bar: &indicatif::ProgressBar,
) -> Samples {
    sample_with(
        async || follower.poll(30_000).await,
        sender,
        room,
        run,
        n,
        gap,
        bar,
    )
    .await
}

/// [`sample`] with any long-poll: `poll` answers this run's messages that
/// one long-poll delivered (a `/sync`, a sliding sync request...).
pub async fn sample_with(
    mut poll: impl AsyncFnMut() -> Result<Vec<Delivered>, RequestError>,
    sender: &Session,
    room: &str,
    run: &str,
    n: usize,
    gap: Duration,
    bar: &indicatif::ProgressBar,
) -> Samples {
    let mut out = Samples::default();
    let mut seen = std::collections::HashSet::new();
    for i in 0..n as u64 {
        let watch = async {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut errors = Errors::default();
            let mut dups = 0;
            while Instant::now() < deadline {
                match poll().await {
                    Ok(batch) => {
                        let mut found = None;
                        for d in batch {
                            if !seen.insert(d.event_id.clone()) {
                                dups += 1;
                            } else if d.seq == i {
                                found = Some(d.at);
                            }
                        }
                        if let Some(at) = found {
                            return (Some(at), errors, dups);
                        }
                    }
                    Err(e) => {
                        errors.add(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (None, errors, dups)
        };
        let send = async {
            tokio::time::sleep(gap).await;
            let t0 = Instant::now();
            let r = sender
                .send_message(room, &format!("{run}-w-{i}"), &load::message(run, 0, i))
                .await;
            (t0, t0.elapsed(), r)
        };
        let ((at, errors, dups), (t0, send_time, r)) = tokio::join!(watch, send);
        out.errors.merge(errors);
        out.duplicated += dups;
        match r {
            Ok(_) => out.send.push(send_time),
            Err(e) => out.errors.add(&e),
        }
        match at {
            Some(at) => out.wake.push(at.saturating_duration_since(t0)),
            None => out.lost += 1,
        }
        bar.inc(1);
    }
    out
}

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.samples = args.samples.min(10);
    }
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    eprintln!(
        "wakeup: {} samples against {} (run {run})",
        args.samples, t.url
    );
    let (users, room) = sender_and_watcher(t, &run, "wakeup").await?;
    let (sender, watcher) = (&users[0], &users[1]);
    let mut follower = Follower::start(watcher.clone(), &run, 50).await?;

    let bar = t.bar(args.samples as u64, "samples");
    let phase = monitor.phase()?;
    let s = sample(
        &mut follower,
        sender,
        &room,
        &run,
        args.samples,
        Duration::from_millis(args.gap_ms),
        &bar,
    )
    .await;
    let phase = phase.finish().await?;
    bar.finish_and_clear();
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;

    report(
        t,
        "wakeup",
        "send → long-poll answer",
        &args,
        &s,
        server_json,
        server_rows,
    )
}

/// Registers this run's sender and watcher; the sender creates a room,
/// the watcher joins it. Returns both (sender first) and the room.
pub async fn sender_and_watcher(
    t: &Target,
    run: &str,
    scenario: &str,
) -> anyhow::Result<(Vec<Session>, String)> {
    let client = crate::client::Client::new(&t.url)?;
    let users = load::register_users(
        &client,
        t,
        vec![format!("{run}-sender"), format!("{run}-watcher")],
    )
    .await?;
    let room = users[0]
        .create_room(&load::room_body(&format!("bench {scenario} {run}")))
        .await
        .context("createRoom")?;
    users[1].join(&room).await.context("join")?;
    Ok((users, room))
}

/// Prints and writes the outcome of [`sample`] as scenario `name` (its
/// latency row `what`); false when a message was lost or duplicated or a
/// request failed.
pub fn report(
    t: &Target,
    name: &str,
    what: &str,
    args: &Args,
    s: &Samples,
    server_json: serde_json::Value,
    server_rows: Vec<Vec<String>>,
) -> anyhow::Result<bool> {
    let wake = Summary::of(&s.wake);
    let send = Summary::of(&s.send);
    let mut rows = Vec::new();
    if let Some(w) = &wake {
        rows.push(latency_row(what, w));
    }
    if let Some(x) = &send {
        rows.push(latency_row("send (PUT → 200)", x));
    }
    let counts = vec![
        vec!["samples".into(), args.samples.to_string()],
        vec!["lost".into(), s.lost.to_string()],
        vec!["duplicated".into(), s.duplicated.to_string()],
        vec!["request errors".into(), s.errors.total().to_string()],
    ];
    let mut failures = Vec::new();
    if s.lost > 0 {
        failures.push(format!("{} messages never reached the long-poll", s.lost));
    }
    if s.duplicated > 0 {
        failures.push(format!("{} messages arrived more than once", s.duplicated));
    }
    failures.extend(s.errors.failure());
    load::finish(
        t,
        name,
        &format!("{} samples, {} ms apart", args.samples, args.gap_ms),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], counts),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": { "samples": args.samples, "gap_ms": args.gap_ms },
            "wake_latency": wake.map(|w| w.to_json()),
            "send_latency": send.map(|x| x.to_json()),
            "lost": s.lost,
            "duplicated": s.duplicated,
            "errors": s.errors.to_json(),
            "server": server_json,
        }),
        &failures,
    )
}
