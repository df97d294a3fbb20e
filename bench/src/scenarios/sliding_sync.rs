//! Simplified sliding sync (MSC4186, what Element X uses), issue 21:
//!
//! - `sliding-sync`: a user in R rooms (500) asks for the first response of
//!   a new connection with one list of a W-room window (20) and
//!   `timeline_limit` 1 (Element X's room list): its time and size. Every
//!   repeat uses a new `conn_id`, so no server answers from a connection's
//!   earlier state. Checked: the list counts every room, the window holds
//!   the W rooms with the newest messages, each with that message alone.
//! - `sliding-sync-wakeup`: a user long-polls with `pos` while another
//!   sends into a room of the list; the time from the start of the send to
//!   the long-poll's answer carrying the message (p50), over N samples.
//!
//! Both drive any server by URL at the unstable path that Myelin and Synapse
//! serve.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::client::Session;
use crate::load::{self, Delivered, Errors, Monitor, Target};
use crate::report::LATENCY_HEADER;
use crate::scenarios::initial_sync::Repeated;
use crate::scenarios::wakeup;

/// MSC4186's endpoint, as Element X calls it.
const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The state Element X's room list asks for (matrix-sdk-ui 0.18's
/// `DEFAULT_REQUIRED_STATE`).
fn required_state() -> Value {
    json!([
        ["m.room.name", ""],
        ["m.room.encryption", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"],
        ["m.room.topic", ""],
        ["m.room.avatar", ""],
        ["m.room.canonical_alias", ""],
        ["m.room.power_levels", ""],
        ["org.matrix.msc3401.call.member", "*"],
        ["m.room.join_rules", ""],
        ["m.room.tombstone", ""],
        ["m.room.create", ""],
        ["m.room.history_visibility", ""],
        ["io.element.functional_members", ""],
        ["m.space.parent", "*"],
        ["m.space.child", "*"],
    ])
}

/// One list, `window` rooms from the top, `timeline_limit` events each.
fn request_body(conn_id: &str, window: usize, timeline_limit: usize) -> Value {
    json!({
        "conn_id": conn_id,
        "lists": {
            "all_rooms": {
                "ranges": [[0, window.saturating_sub(1)]],
                "timeline_limit": timeline_limit,
                "required_state": required_state(),
            }
        },
        "extensions": {}
    })
}

/// One sliding sync request: the answer, its size and when its last byte
/// arrived.
async fn request(
    session: &Session,
    body: &Value,
    pos: Option<&str>,
    timeout_ms: u64,
) -> Result<(Value, usize, Instant), crate::client::RequestError> {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(p) = pos {
        path.push_str("&pos=");
        path.push_str(&crate::client::encode_segment(p));
    }
    let (bytes, received) = session
        .send_raw(
            reqwest::Method::POST,
            &path,
            bytes::Bytes::from(body.to_string()),
        )
        .await?;
    let value = serde_json::from_slice(&bytes).map_err(|e| crate::client::RequestError {
        status: Some(200),
        message: format!("bad JSON: {e}"),
    })?;
    Ok((value, bytes.len(), received))
}

#[derive(clap::Args, Clone, Debug)]
pub struct FirstArgs {
    #[command(flatten)]
    pub target: Target,
    /// Rooms the user is in (one message each, sent in room order).
    #[arg(long, default_value_t = 500)]
    pub rooms: usize,
    /// The list's window: rooms 0..W-1.
    #[arg(long, default_value_t = 20)]
    pub window: usize,
    /// Timeline events per room.
    #[arg(long, default_value_t = 1)]
    pub timeline_limit: usize,
    /// First responses measured, each on a new connection.
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
}

/// What is wrong with a first response (none when it is right): the list
/// counts `rooms`, the window holds exactly `newest`, each room with
/// `timeline_limit` of this run's messages (at most one message a room).
fn check_first(
    body: &Value,
    run: &str,
    rooms: usize,
    newest: &BTreeSet<String>,
    timeline_limit: usize,
) -> Option<String> {
    let count = body
        .pointer("/lists/all_rooms/count")
        .and_then(Value::as_u64);
    if count != Some(rooms as u64) {
        return Some(format!(
            "lists.all_rooms.count is {count:?}, expected {rooms}"
        ));
    }
    let got: BTreeSet<String> = body
        .get("rooms")
        .and_then(Value::as_object)
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    if &got != newest {
        let missing = newest.difference(&got).count();
        let extra = got.difference(newest).count();
        return Some(format!(
            "the window is not the {} rooms with the newest messages ({missing} missing, {extra} others)",
            newest.len()
        ));
    }
    let want = timeline_limit.min(1);
    for (id, room) in body["rooms"].as_object().into_iter().flatten() {
        let ours = room["timeline"].as_array().map_or(0, |evs| {
            evs.iter()
                .filter(|e| e.pointer("/content/bench_run").and_then(Value::as_str) == Some(run))
                .count()
        });
        if ours != want {
            return Some(format!(
                "room {id} has {ours} of this run's messages, expected {want}"
            ));
        }
    }
    None
}

pub async fn run_first(mut args: FirstArgs) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.rooms = args.rooms.min(6);
        args.window = args.window.min(3);
        args.repeats = args.repeats.min(2);
    }
    args.repeats = args.repeats.max(1);
    args.window = args.window.max(1);
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    let client = crate::client::Client::new(&t.url)?;
    eprintln!(
        "sliding-sync: {} rooms, window {}, timeline_limit {}, {} first responses against {} (run {run})",
        args.rooms, args.window, args.timeline_limit, args.repeats, t.url
    );
    let user = load::register_users(&client, t, vec![format!("{run}-user")])
        .await?
        .pop()
        .expect("registered");

    // The rooms, each with one message, in order: the last W are the
    // window (sorted by recency).
    let bar = t.bar(args.rooms as u64, "creating rooms and messages");
    let mut room_ids = Vec::with_capacity(args.rooms);
    for r in 0..args.rooms {
        let room = user
            .create_room(&load::room_body(&format!("bench sliding-sync {run} {r}")))
            .await
            .context("createRoom")?;
        user.send_message(&room, &format!("{run}-{r}"), &load::message(&run, r, 0))
            .await
            .context("send")?;
        room_ids.push(room);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let newest: BTreeSet<String> = room_ids.iter().rev().take(args.window).cloned().collect();

    let bar = t.bar(args.repeats as u64, "first responses");
    let phase = monitor.phase()?;
    let mut errors = Errors::default();
    let mut times = Vec::new();
    let mut sizes = Vec::new();
    let mut failures = Vec::new();
    for i in 0..args.repeats {
        let body = request_body(&format!("{run}-{i}"), args.window, args.timeline_limit);
        let started = Instant::now();
        match request(&user, &body, None, 0).await {
            Ok((resp, bytes, received)) => {
                times.push(received.duration_since(started));
                sizes.push(bytes);
                if let Some(problem) =
                    check_first(&resp, &run, args.rooms, &newest, args.timeline_limit)
                {
                    failures.push(format!("response {i}: {problem}"));
                }
            }
            Err(e) => errors.add(&e),
        }
        bar.inc(1);
    }
    let phase = phase.finish().await?;
    bar.finish_and_clear();
    let (server_json, server_rows) = monitor.report(phase.as_ref(), &[], t.settle_secs).await?;
    failures.extend(errors.failure());

    let Repeated {
        first,
        all,
        rest,
        bytes,
        rows,
        counts,
    } = Repeated::of("first response", &times, &sizes, &errors);
    load::finish(
        t,
        "sliding-sync",
        &format!(
            "{} rooms, window {}, timeline_limit {}, {} first responses",
            args.rooms, args.window, args.timeline_limit, args.repeats
        ),
        &[
            (&LATENCY_HEADER, rows),
            (&["what", "value"], counts),
            (&["server", "value"], server_rows),
        ],
        json!({
            "params": {
                "rooms": args.rooms,
                "window": args.window,
                "timeline_limit": args.timeline_limit,
                "repeats": args.repeats,
            },
            "first_ms": first,
            "all": all.map(|s| s.to_json()),
            "after_first": rest.map(|s| s.to_json()),
            "bytes": bytes,
            "errors": errors.to_json(),
            "server": server_json,
        }),
        &failures,
    )
}

/// This run's messages in `room`'s timeline in an answer that arrived at `at`.
fn delivered(body: &Value, room: &str, run: &str, at: Instant) -> Vec<Delivered> {
    body.get("rooms")
        .and_then(|r| r.get(room))
        .and_then(|r| r.get("timeline"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.pointer("/content/bench_run").and_then(Value::as_str) == Some(run))
        .filter_map(|e| {
            Some(Delivered {
                event_id: e.get("event_id")?.as_str()?.to_owned(),
                sender: 0,
                seq: e.pointer("/content/bench_seq")?.as_u64()?,
                at,
            })
        })
        .collect()
}

/// `sliding-sync-wakeup`: [`crate::scenarios::wakeup`]'s samples, with a
/// sliding sync long-poll (Element X's room list request and `pos`) in
/// place of `/sync`.
pub async fn run_wakeup(mut args: wakeup::Args) -> anyhow::Result<bool> {
    if args.target.smoke {
        args.samples = args.samples.min(10);
    }
    let t = &args.target;
    let run = t.prefix()?;
    let monitor = Monitor::start(t.pid)?;
    eprintln!(
        "sliding-sync-wakeup: {} samples against {} (run {run})",
        args.samples, t.url
    );
    let (users, room) = wakeup::sender_and_watcher(t, &run, "ss-wakeup").await?;
    let (sender, watcher) = (&users[0], &users[1]);
    let body = request_body(&format!("{run}-wakeup"), 20, 1);
    let (first, _, _) = request(watcher, &body, None, 0)
        .await
        .context("the watcher's first sliding sync request")?;
    let mut pos = first
        .get("pos")
        .and_then(Value::as_str)
        .context("no pos in the first response")?
        .to_owned();

    let bar = t.bar(args.samples as u64, "samples");
    let phase = monitor.phase()?;
    let poll = async || {
        let (resp, _, at) = request(watcher, &body, Some(&pos), 30_000).await?;
        if let Some(p) = resp.get("pos").and_then(Value::as_str) {
            p.clone_into(&mut pos);
        }
        Ok(delivered(&resp, &room, &run, at))
    };
    let s = wakeup::sample_with(
        poll,
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
    wakeup::report(
        t,
        "sliding-sync-wakeup",
        "send → sliding sync answer",
        &args,
        &s,
        server_json,
        server_rows,
    )
}
