//! `myelin-bench appservice` (issue 23): an application service receiving
//! transactions. The server must have a registration whose `url` is this
//! command's receiver (`--as-port` on 127.0.0.1), with `--as-token` and
//! `--hs-token`, and a user namespace of localparts starting with
//! `--namespace-prefix` (scripts/bench-synapse writes one and gives it to
//! both servers). Each room gets a namespaced user (registered and joined
//! through the service's token, as a bridge's ghost); senders, ordinary
//! users, send messages into the rooms at `--rate` messages/s in all (0: as
//! fast as the server takes them, one request in flight per sender) for
//! `--secs`. The receiver answers `{}` and timestamps each transaction on
//! arrival. Reported: delivered events/s sustained (from the first send to
//! the last arrival), the delay from the start of each send to its arrival
//! (median, p99), and the checks: every acknowledged message arrives once
//! (a transaction retried under the same id is counted once), per sender
//! in order, with the service's `hs_token`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::client::{Registered, Session, encode_segment};
use crate::fake_http::FakeHttp;
use crate::load::{self, Acked, Monitor, Target};
use crate::report::{LATENCY_HEADER, Summary, latency_row};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// The port on 127.0.0.1 the registration's `url` names.
    #[arg(long)]
    pub as_port: u16,
    /// The registration's `as_token`.
    #[arg(long)]
    pub as_token: String,
    /// The registration's `hs_token` (every transaction must carry it).
    #[arg(long)]
    pub hs_token: String,
    /// The start of the localparts in the registration's user namespace.
    #[arg(long, default_value = "bench_as_")]
    pub namespace_prefix: String,
    /// Concurrent senders (ordinary users, one request in flight each).
    #[arg(long, default_value_t = 8)]
    pub senders: usize,
    /// Rooms, each with a namespaced member; sender i sends into room i %
    /// rooms.
    #[arg(long, default_value_t = 8)]
    pub rooms: usize,
    /// Messages per second in all (0: as fast as the server takes them).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// After sending, how long the service may wait for the rest.
    #[arg(long, default_value_t = 120)]
    pub drain_secs: u64,
}

/// A registration for this scenario's service (what `smoke` gives the
/// Myelin it starts; scripts/bench-synapse writes the same in shell).
pub struct Registration {
    pub port: u16,
    pub as_token: String,
    pub hs_token: String,
}

impl Registration {
    /// Random tokens, the service on 127.0.0.1:`port`.
    pub fn new(port: u16) -> anyhow::Result<Self> {
        Ok(Self {
            port,
            as_token: crate::local::random_hex(16)?,
            hs_token: crate::local::random_hex(16)?,
        })
    }

    /// The registration file: users `@bench_as_.*` (exclusive), not rate
    /// limited.
    pub fn yaml(&self) -> String {
        format!(
            "id: bench\nurl: \"http://127.0.0.1:{}\"\nas_token: \"{}\"\nhs_token: \"{}\"\n\
             sender_localpart: bench_as_bot\nnamespaces:\n  users:\n    - exclusive: true\n      \
             regex: \"@bench_as_.*\"\n  aliases: []\n  rooms: []\nrate_limited: false\n",
            self.port, self.as_token, self.hs_token
        )
    }

    /// This scenario's flags for it.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--as-port".into(),
            self.port.to_string(),
            "--as-token".into(),
            self.as_token.clone(),
            "--hs-token".into(),
            self.hs_token.clone(),
        ]
    }
}

/// Registers (if new) the namespaced user `localpart` through the
/// service's token and joins it to `room`; its user id.
async fn ghost_join(
    service: &Session,
    localpart: &str,
    server_name: &str,
    room: &str,
) -> anyhow::Result<String> {
    let body = json!({
        "type": "m.login.application_service",
        "username": localpart,
        "inhibit_login": true,
    });
    let user_id = match service.post("/_matrix/client/v3/register", &body).await {
        Ok(v) => v["user_id"]
            .as_str()
            .map_or_else(|| format!("@{localpart}:{server_name}"), str::to_owned),
        Err(e) if e.message.contains("M_USER_IN_USE") => format!("@{localpart}:{server_name}"),
        Err(e) => return Err(anyhow::anyhow!("registering {localpart}: {e}")),
    };
    service
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?user_id={}",
                encode_segment(room),
                encode_segment(&user_id)
            ),
            &json!({}),
        )
        .await
        .with_context(|| format!("joining {user_id} to {room}"))?;
    Ok(user_id)
}

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.senders = args.senders.min(3);
        args.rooms = args.rooms.min(3);
        args.secs = args.secs.min(1.5);
        args.drain_secs = args.drain_secs.min(20);
    }
    args.senders = args.senders.max(1);
    args.rooms = args.rooms.clamp(1, args.senders);
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    let client = crate::client::Client::new(&t.url)?;
    let receiver = FakeHttp::start(&format!("127.0.0.1:{}", args.as_port), "", "{}")?;
    let rate = if args.rate > 0.0 {
        format!("{}", args.rate)
    } else {
        "max".to_owned()
    };
    eprintln!(
        "appservice: {} senders into {} rooms, {rate} msg/s for {} s, service at {} against {} (run {run})",
        args.senders, args.rooms, args.secs, receiver.url, t.url
    );

    let names: Vec<String> = (0..args.senders)
        .map(|i| format!("{run}-as-send-{i}"))
        .collect();
    let senders = load::register_users(&client, t, names).await?;
    let server_name = senders[0]
        .user_id
        .split_once(':')
        .map(|(_, s)| s.to_owned())
        .context("a user id without a server name")?;
    let service = client.session(&Registered {
        user_id: String::new(),
        access_token: args.as_token.clone(),
        device_id: String::new(),
    });
    let bar = t.bar(args.rooms as u64, "rooms with a namespaced member");
    let mut rooms = Vec::with_capacity(args.rooms);
    for (r, creator) in senders.iter().enumerate().take(args.rooms) {
        let room = creator
            .create_room(&load::room_body(&format!("bench appservice {run} {r}")))
            .await
            .context("createRoom")?;
        ghost_join(
            &service,
            &format!("{}{run}_{r}", args.namespace_prefix),
            &server_name,
            &room,
        )
        .await?;
        rooms.push(room);
        bar.inc(1);
    }
    bar.finish_and_clear();
    for (i, s) in senders.iter().enumerate().skip(args.rooms) {
        s.join(&rooms[i % args.rooms])
            .await
            .context("sender join")?;
    }

    // Sending: sender i's k-th message is due at start + (k * senders + i)
    // / rate (a sender behind sends at once).
    let secs = Duration::from_secs_f64(args.secs);
    let bar = t.bar(args.secs.ceil() as u64, "sending (s)");
    let phase = monitor.phase()?;
    let start = Instant::now();
    let sending = load::send_messages(&senders, &rooms, &run, args.rate, secs, start, &bar).await?;
    let (latencies, errors, last_done) = (sending.latencies, sending.errors, sending.last_done);
    let acked: HashMap<String, Acked> = sending
        .acked
        .into_iter()
        .map(|a| (a.event_id.clone(), a))
        .collect();
    bar.finish_and_clear();
    let send_elapsed = last_done.duration_since(start);

    // Delivery: until every acknowledged message arrived, or the drain
    // time is up.
    let deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    let drain_bar = t.bar(acked.len() as u64, "waiting for the service's transactions");
    loop {
        let arrived = {
            let received = receiver.inbox.received.lock().expect("inbox lock");
            let mut ids = HashSet::new();
            for r in received.iter() {
                for e in r.body["events"].as_array().into_iter().flatten() {
                    if let Some(id) = e["event_id"].as_str()
                        && acked.contains_key(id)
                    {
                        ids.insert(id.to_owned());
                    }
                }
            }
            ids.len()
        };
        drain_bar.set_position(arrived as u64);
        if arrived >= acked.len() || Instant::now() >= deadline {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), receiver.inbox.notify.notified())
            .await;
    }
    drain_bar.finish_and_clear();
    let phase = phase.finish().await?;
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;

    // Transactions in arrival order; a retried id counts once.
    let mut received = std::mem::take(&mut *receiver.inbox.received.lock().expect("inbox lock"));
    received.sort_by_key(|r| r.at);
    let want_auth = format!("Bearer {}", args.hs_token);
    let mut bad_auth = 0usize;
    let mut txn_ids: HashSet<String> = HashSet::new();
    let mut retried = 0usize;
    let mut first_arrival: HashMap<&str, Instant> = HashMap::new();
    let mut duplicated = 0usize;
    let mut out_of_order = 0usize;
    let mut last_seq: HashMap<usize, u64> = HashMap::new();
    let mut transactions = 0usize;
    let mut last_arrival = start;
    for r in &received {
        let Some(txn) = r.path.strip_prefix("/_matrix/app/v1/transactions/") else {
            continue;
        };
        if r.authorization.as_deref() != Some(want_auth.as_str()) {
            bad_auth += 1;
        }
        if !txn_ids.insert(txn.to_owned()) {
            retried += 1;
            continue;
        }
        transactions += 1;
        for e in r.body["events"].as_array().into_iter().flatten() {
            let Some((id, a)) = e["event_id"]
                .as_str()
                .and_then(|id| acked.get_key_value(id))
            else {
                continue;
            };
            if first_arrival.insert(id.as_str(), r.at).is_some() {
                duplicated += 1;
                continue;
            }
            last_arrival = last_arrival.max(r.at);
            if let Some(prev) = last_seq.get(&a.sender)
                && a.seq <= *prev
            {
                out_of_order += 1;
            }
            last_seq.insert(a.sender, a.seq);
        }
    }
    let lost = acked.len() - first_arrival.len();
    let mut delays: Vec<Duration> = first_arrival
        .iter()
        .map(|(id, at)| at.saturating_duration_since(acked[*id].sent_at))
        .collect();
    delays.sort();
    let span = last_arrival.duration_since(start);
    let delivered_rate = first_arrival.len() as f64 / span.as_secs_f64().max(1e-9);
    let send_rate = acked.len() as f64 / send_elapsed.as_secs_f64().max(1e-9);

    let mut lat_rows = Vec::new();
    if let Some(s) = Summary::of(&latencies) {
        lat_rows.push(latency_row("send (PUT → 200)", &s));
    }
    if let Some(s) = Summary::of(&delays) {
        lat_rows.push(latency_row("send start → transaction at the service", &s));
    }
    let counts = vec![
        vec![
            "messages acknowledged (200)".into(),
            acked.len().to_string(),
        ],
        vec!["sent messages/s".into(), format!("{send_rate:.1}")],
        vec![
            "delivered to the service (distinct)".into(),
            first_arrival.len().to_string(),
        ],
        vec![
            "delivered events/s (first send → last arrival)".into(),
            format!("{delivered_rate:.1}"),
        ],
        vec![
            "last arrival after the first send (s)".into(),
            format!("{:.2}", span.as_secs_f64()),
        ],
        vec![
            "transactions (distinct ids)".into(),
            transactions.to_string(),
        ],
        vec!["transactions retried".into(), retried.to_string()],
        vec!["lost".into(), lost.to_string()],
        vec!["duplicated".into(), duplicated.to_string()],
        vec!["out of order".into(), out_of_order.to_string()],
        vec!["without the hs_token".into(), bad_auth.to_string()],
        vec!["send errors".into(), errors.total().to_string()],
    ];
    let mut failures = Vec::new();
    if lost > 0 {
        failures.push(format!(
            "{lost} acknowledged messages never reached the service"
        ));
    }
    if duplicated > 0 {
        failures.push(format!(
            "{duplicated} messages reached the service more than once"
        ));
    }
    if out_of_order > 0 {
        failures.push(format!("{out_of_order} messages arrived out of order"));
    }
    if bad_auth > 0 {
        failures.push(format!("{bad_auth} transactions without the hs_token"));
    }
    if acked.is_empty() {
        failures.push("no message was acknowledged".into());
    }
    failures.extend(errors.failure());
    let delay = Summary::of(&delays);
    load::finish(
        t,
        "appservice",
        &format!(
            "{} senders, {} rooms with a namespaced member, {rate} msg/s, {:.1} s",
            args.senders, args.rooms, args.secs
        ),
        &[
            (&["what", "value"], counts),
            (&LATENCY_HEADER, lat_rows),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": {
                "senders": args.senders, "rooms": args.rooms, "rate": args.rate, "secs": args.secs,
            },
            "acknowledged": acked.len(),
            "sent_per_sec": send_rate,
            "delivered": first_arrival.len(),
            "delivered_per_sec": delivered_rate,
            "span_secs": span.as_secs_f64(),
            "delay": delay.map(|s| s.to_json()),
            "send_latency": Summary::of(&latencies).map(|s| s.to_json()),
            "transactions": transactions,
            "retried": retried,
            "lost": lost,
            "duplicated": duplicated,
            "out_of_order": out_of_order,
            "bad_auth": bad_auth,
            "send_errors": errors.to_json(),
            "server": server_json,
        }),
        &failures,
    )
}
