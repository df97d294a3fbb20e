//! `myelin-bench push-fanout` (issue 21): a room of M members (1,000), each
//! with an `http` pusher pointing at a fake push gateway this command runs on
//! loopback; one message, and the time from the start of its send until the
//! gateway holds a notification for every member. Checked: each member's
//! pushkey gets exactly one notification, for that event and room, with
//! `counts.unread` 1. With `--others N`, N more users with pushers sit in
//! another room first (set-up): none of them may get the notification, and
//! the time should not grow with N.
//!
//! The server must be allowed to reach 127.0.0.1 (Myelin:
//! `outbound.ip_range_allowlist`, Synapse: `ip_range_whitelist`);
//! scripts/bench-synapse sets both.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::fake_http::{FakeHttp, Received};
use crate::load::{self, Errors, Monitor, Target};
use crate::report::{LATENCY_HEADER, Summary, latency_row};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Members with a pusher (the sender is one more member, without one).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Other users with a pusher to the same gateway, members of another
    /// room only: what push evaluation should not grow with.
    #[arg(long, default_value_t = 0)]
    pub others: usize,
    /// How long to wait for every notification.
    #[arg(long, default_value_t = 120)]
    pub deadline_secs: u64,
}

/// The pushkeys the notification for `event_id` reached, and what is wrong
/// with any of them (another room, a count other than 1).
fn pushkeys_for(
    received: &[Received],
    event_id: &str,
    room: &str,
) -> (HashMap<String, Instant>, usize, Vec<String>) {
    let mut keys = HashMap::new();
    let mut repeats = 0;
    let mut problems = Vec::new();
    let mut strays = 0;
    for r in received {
        let n = &r.body["notification"];
        if n["event_id"].as_str() != Some(event_id) {
            continue;
        }
        if n["room_id"].as_str() != Some(room) {
            problems.push(format!("room_id {} for the event", n["room_id"]));
        }
        if n.pointer("/counts/unread").and_then(Value::as_u64) != Some(1) {
            problems.push(format!("counts {}", n["counts"]));
        }
        for d in n["devices"].as_array().into_iter().flatten() {
            let Some(k) = d["pushkey"].as_str() else {
                continue;
            };
            if k.contains("-other-") {
                strays += 1;
            } else if keys.insert(k.to_owned(), r.at).is_some() {
                repeats += 1;
            }
        }
    }
    if strays > 0 {
        problems.push(format!("{strays} users outside the room got it"));
    }
    (keys, repeats, problems)
}

/// The other users: one room of their own (the first creates it, the rest
/// join), then a pusher each (pushkeys `{run}-other-{i}`).
async fn set_up_others(
    t: &Target,
    others: &[crate::client::Session],
    url: &str,
    run: &str,
) -> anyhow::Result<()> {
    let Some(first) = others.first() else {
        return Ok(());
    };
    let bar = t.bar(
        2 * others.len() as u64,
        "others: joining their room, setting pushers",
    );
    let room = first
        .create_room(&load::room_body(&format!("bench push-fanout others {run}")))
        .await
        .context("createRoom")?;
    for o in &others[1..] {
        o.join(&room).await.context("join")?;
        bar.inc(1);
    }
    for (i, o) in others.iter().enumerate() {
        o.post(
            "/_matrix/client/v3/pushers/set",
            &pusher_body(&format!("{run}-other-{i}"), url),
        )
        .await
        .context("pushers/set")?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

fn pusher_body(pushkey: &str, url: &str) -> Value {
    json!({
        "kind": "http",
        "app_id": "org.myelin.bench",
        "pushkey": pushkey,
        "app_display_name": "myelin-bench",
        "device_display_name": "bench",
        "lang": "en",
        "data": { "url": url, "format": "event_id_only" },
    })
}

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.members = args.members.min(5);
        args.others = args.others.min(5);
    }
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    let client = crate::client::Client::new(&t.url)?;
    let gateway = FakeHttp::start(
        "127.0.0.1:0",
        "/_matrix/push/v1/notify",
        r#"{"rejected":[]}"#,
    )?;
    eprintln!(
        "push-fanout: {} members ({} others elsewhere) with pushers to {} against {} (run {run})",
        args.members, args.others, gateway.url, t.url
    );
    let mut names = vec![format!("{run}-sender")];
    names.extend((0..args.members).map(|i| format!("{run}-m{i}")));
    names.extend((0..args.others).map(|i| format!("{run}-o{i}")));
    let mut users = load::register_users(&client, t, names).await?;
    let others = users.split_off(args.members + 1);
    let sender = users.remove(0);
    set_up_others(t, &others, &gateway.url, &run).await?;
    let room = sender
        .create_room(&load::room_body(&format!("bench push-fanout {run}")))
        .await
        .context("createRoom")?;
    // Everyone joins first, then sets a pusher: the joins are set-up, and
    // with no pusher yet no server evaluates push rules for them.
    let bar = t.bar(2 * args.members as u64, "joining, then setting pushers");
    for m in &users {
        m.join(&room).await.context("join")?;
        bar.inc(1);
    }
    for (i, m) in users.iter().enumerate() {
        m.post(
            "/_matrix/client/v3/pushers/set",
            &pusher_body(&format!("{run}-key-{i}"), &gateway.url),
        )
        .await
        .context("pushers/set")?;
        bar.inc(1);
    }
    bar.finish_and_clear();

    let phase = monitor.phase()?;
    let t0 = Instant::now();
    let mut errors = Errors::default();
    let event_id = match sender
        .send_message(&room, &format!("{run}-push"), &load::message(&run, 0, 0))
        .await
    {
        Ok(id) => Some(id),
        Err(e) => {
            errors.add(&e);
            None
        }
    };
    let send_time = t0.elapsed();
    let deadline = Duration::from_secs(args.deadline_secs);
    let (keys, repeats, problems) = loop {
        let got = {
            let received = gateway.inbox.received.lock().expect("gateway lock");
            pushkeys_for(&received, event_id.as_deref().unwrap_or(""), &room)
        };
        if got.0.len() >= args.members || event_id.is_none() {
            break got;
        }
        let left = deadline.saturating_sub(t0.elapsed());
        if left.is_zero()
            || tokio::time::timeout(left, gateway.inbox.notify.notified())
                .await
                .is_err()
        {
            break got;
        }
    };
    let phase = phase.finish().await?;
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;

    let mut times: Vec<Duration> = keys
        .values()
        .map(|at| at.saturating_duration_since(t0))
        .collect();
    times.sort();
    let all_delivered = (keys.len() >= args.members)
        .then(|| times.last().copied())
        .flatten();
    let mut rows = Vec::new();
    if let Some(s) = Summary::of(&times) {
        rows.push(latency_row("send start → notification at the gateway", &s));
    }
    let ms =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
    let counts = vec![
        vec!["members with pushers".into(), args.members.to_string()],
        vec![
            "others with pushers (other room)".into(),
            args.others.to_string(),
        ],
        vec!["notifications received".into(), keys.len().to_string()],
        vec!["all delivered after (ms)".into(), ms(all_delivered)],
        vec!["send (PUT → 200) (ms)".into(), ms(Some(send_time))],
        vec!["repeated notifications".into(), repeats.to_string()],
        vec!["request errors".into(), errors.total().to_string()],
    ];
    let mut failures = Vec::new();
    if keys.len() < args.members {
        failures.push(format!(
            "{} of {} members' notifications did not arrive within {deadline:?}",
            args.members - keys.len(),
            args.members
        ));
    }
    if repeats > 0 {
        failures.push(format!(
            "{repeats} pushkeys got the notification more than once"
        ));
    }
    if let Some(p) = problems.first() {
        failures.push(format!(
            "{} notifications are wrong (first: {p})",
            problems.len()
        ));
    }
    failures.extend(errors.failure());
    load::finish(
        t,
        "push-fanout",
        &format!(
            "one message, {} members with http pushers, {} others elsewhere",
            args.members, args.others
        ),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], counts),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": { "members": args.members, "others": args.others },
            "delivered": keys.len(),
            "all_delivered_ms": all_delivered.map(|d| d.as_secs_f64() * 1e3),
            "send_ms": send_time.as_secs_f64() * 1e3,
            "latency": Summary::of(&times).map(|s| s.to_json()),
            "repeats": repeats,
            "errors": errors.to_json(),
            "server": server_json,
        }),
        &failures,
    )
}
