//! The real binary killed with SIGKILL (`kill -9`) and started again on the
//! same data dir and database: the search index catches up with every
//! stored message, and admin jobs interrupted half-way (reindex, purgeRoom,
//! room delete v2, purge_history) run to completion with their status
//! readable throughout, and a device gets every acknowledged to-device
//! message once. A job is stopped half-way deterministically by the
//! server's `MYELIN_TEST_PAUSE_JOBS` knob (it marks a file and waits).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Binary, Session, TestServer, create_room, enc, search_count, send_text, to_device_events,
    wait_until,
};

/// How long a job resumed after a restart may take.
const JOB_WAIT: Duration = Duration::from_secs(60);

/// Unredacted messages stored in `room` whose body has `word`.
async fn stored_messages(server: &TestServer, room: &str, word: &str) -> i64 {
    server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM events WHERE room_id = '{room}' AND event_type = 'm.room.message'
             AND redacted_by IS NULL AND json LIKE '%{word}%'"
        ))
        .await
}

#[tokio::test]
async fn kill_under_send_load_then_search_finds_every_stored_message() {
    let (mut bin, (root, room)) = Binary::start(
        async |s: &TestServer| {
            let root = s.admin("root").await;
            let room = create_room(s, &root, json!({})).await;
            (root, room)
        },
        None,
    )
    .await;
    let server = &bin.server;
    // A redaction and an edit after the index's last commit are applied by
    // the catch-up too.
    let gone = send_text(server, &root, &room, "crashword redacted").await;
    let (st, b) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                enc(&room),
                enc(&gone)
            ),
            root.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let edited = send_text(server, &root, &room, "crashword original").await;
    let (st, b) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/e1",
                enc(&room)
            ),
            root.token(),
            json!({"msgtype": "m.text", "body": "* editedword",
                "m.new_content": {"msgtype": "m.text", "body": "editedword"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": edited}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");

    // Eight senders at once; killed once 300 sends were acknowledged, with
    // more in flight.
    let acked = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for n in 0..8 {
        let (client, base, token, room, acked) = (
            server.client.clone(),
            server.url(""),
            root.access_token.clone(),
            room.clone(),
            acked.clone(),
        );
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let url = format!(
                    "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/load{n}-{i}",
                    enc(&room)
                );
                let sent = client
                    .put(url)
                    .bearer_auth(&token)
                    .json(&json!({"msgtype": "m.text", "body": format!("crashword {n} {i}")}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        }));
    }
    wait_until(
        "300 sends acknowledged",
        Duration::from_secs(60),
        || async {
            match acked.load(Ordering::SeqCst) {
                n if n >= 300 => Ok(()),
                n => Err(format!("{n} acknowledged")),
            }
        },
    )
    .await;
    bin.kill_and_restart().await;
    let acknowledged = acked.load(Ordering::SeqCst) as i64;
    for s in senders {
        s.await.unwrap();
    }
    let server = &bin.server;
    let stored = stored_messages(server, &room, "crashword").await;
    assert!(
        stored > acknowledged,
        "{stored} stored, {acknowledged} acknowledged"
    );
    // The original's text is the edit's ("crashword original" is gone),
    // the redacted message is not found.
    assert_eq!(
        search_count(server, &root, "crashword").await,
        stored - 1,
        "every stored message is found once the server answers"
    );
    assert_eq!(search_count(server, &root, "editedword").await, 1);
    assert_eq!(search_count(server, &root, "redacted").await, 0);

    // And the index still takes new messages, and survives a second crash.
    send_text(server, &root, &room, "crashword after").await;
    bin.kill_and_restart().await;
    let server = &bin.server;
    assert_eq!(
        search_count(server, &root, "crashword").await,
        stored_messages(server, &room, "crashword").await - 1
    );
}

/// Waits until the paused job `id` has marked its file.
async fn wait_paused(dir: &Path, id: &str) {
    let what = format!("job {id} pausing");
    wait_until(&what, Duration::from_secs(60), || async {
        if dir.join(id).exists() {
            Ok(())
        } else {
            Err("no mark".into())
        }
    })
    .await;
}

struct Rooms {
    root: Session,
    kept: String,
    deleted: String,
    purged: String,
    history: String,
    history_last: String,
}

#[tokio::test]
async fn kill_during_each_job_kind_then_every_job_completes() {
    let pause = tempfile::tempdir().unwrap();
    let (mut bin, r) = Binary::start(
        async |s: &TestServer| {
            let root = s.admin("root").await;
            let mut rooms = Vec::new();
            for name in ["kept", "deleted", "purged", "history"] {
                let room = create_room(s, &root, json!({})).await;
                for i in 0..5 {
                    send_text(s, &root, &room, &format!("jobword {name} {i}")).await;
                }
                rooms.push(room);
            }
            let history_last = send_text(s, &root, &rooms[3], "jobword history last").await;
            let [kept, deleted, purged, history] = rooms.try_into().unwrap();
            Rooms {
                root,
                kept,
                deleted,
                purged,
                history,
                history_last,
            }
        },
        Some(pause.path()),
    )
    .await;
    let server = &bin.server;
    let root = &r.root;

    let (st, b) = server
        .post(
            &format!(
                "/_synapse/admin/v1/purge_history/{}/{}",
                enc(&r.history),
                enc(&r.history_last)
            ),
            root.token(),
            json!({"delete_local_events": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let purge_history = b["purge_id"].as_str().unwrap().to_owned();
    // Paused before the reindex starts: a reindex waits for a purge's deletes.
    wait_paused(pause.path(), &purge_history).await;
    let (st, b) = server
        .post("/_dendrite/admin/fulltext/reindex", root.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let reindex = b["job_id"].as_str().unwrap().to_owned();
    let (st, b) = server
        .delete(
            &format!("/_synapse/admin/v2/rooms/{}", enc(&r.deleted)),
            root.token(),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let delete = b["delete_id"].as_str().unwrap().to_owned();
    let (st, b) = server
        .post(
            &format!("/_dendrite/admin/purgeRoom/{}", enc(&r.purged)),
            root.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let by_room = format!("/_synapse/admin/v2/rooms/{}/delete_status", enc(&r.purged));
    let (st, b) = server.get(&by_room, root.token()).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let purge_room = b["results"][0]["delete_id"].as_str().unwrap().to_owned();
    for id in [&reindex, &delete, &purge_room, &purge_history] {
        wait_paused(pause.path(), id).await;
    }

    bin.kill_and_restart().await;
    let server = &bin.server;
    let done = |b: &Value| b["status"] == "complete" || b["status"] == "failed";
    let b = server
        .poll_get(
            &format!("/_myelin/admin/v1/jobs/{}", enc(&reindex)),
            root.token(),
            JOB_WAIT,
            done,
        )
        .await;
    assert_eq!(b["status"], "complete", "{b}");
    assert_eq!(b["kind"], "reindex", "{b}");
    let b = server
        .poll_get(
            &format!("/_synapse/admin/v2/rooms/delete_status/{}", enc(&delete)),
            root.token(),
            JOB_WAIT,
            done,
        )
        .await;
    assert_eq!(b["status"], "complete", "{b}");
    assert_eq!(
        b["shutdown_room"]["kicked_users"],
        json!([root.user_id]),
        "{b}"
    );
    let b = server
        .poll_get(&by_room, root.token(), JOB_WAIT, |b| done(&b["results"][0]))
        .await;
    assert_eq!(b["results"][0]["delete_id"], purge_room.as_str(), "{b}");
    assert_eq!(b["results"][0]["status"], "complete", "{b}");
    let b = server
        .poll_get(
            &format!(
                "/_synapse/admin/v1/purge_history_status/{}",
                enc(&purge_history)
            ),
            root.token(),
            JOB_WAIT,
            done,
        )
        .await;
    assert_eq!(b, json!({"status": "complete"}));

    // The deleted rooms are gone, the history purged; search finds exactly
    // what is stored.
    for room in [&r.deleted, &r.purged] {
        let n = server
            .sql_count(&format!(
                "SELECT COUNT(*) FROM events WHERE room_id = '{room}'"
            ))
            .await;
        assert_eq!(n, 0, "{room} still has events");
    }
    assert_eq!(stored_messages(server, &r.kept, "jobword").await, 5);
    assert_eq!(stored_messages(server, &r.history, "jobword").await, 1);
    assert_eq!(search_count(server, root, "jobword").await, 5 + 1);
    assert_eq!(search_count(server, root, "history").await, 1);
}

/// SIGKILL while a device is sent to-device messages by two senders and
/// syncs them: after the restart it gets the rest; every acknowledged send
/// arrives exactly once, each sender's in order, and nothing arrives that
/// was not sent.
#[tokio::test]
async fn kill_under_to_device_load_then_every_acknowledged_message_arrives_once() {
    let (mut bin, (alice, bob)) = Binary::start(
        async |s: &TestServer| (s.user("alice").await, s.user("bob").await),
        None,
    )
    .await;
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<i64>::new()));
    let senders: Vec<_> = (0..2i64)
        .map(|sender| {
            let (client, base, token, to, device, acked) = (
                bin.server.client.clone(),
                bin.server.url(""),
                alice.access_token.clone(),
                bob.user_id.clone(),
                bob.device_id.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                for i in 0.. {
                    let n = sender * 1_000_000 + i;
                    let url = format!("{base}/_matrix/client/v3/sendToDevice/my.test.type/c{n}");
                    let body = json!({"messages": {&to: {&device: {"n": n}}}});
                    let sent = client.put(url).bearer_auth(&token).json(&body).send().await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::OK => acked.lock().push(n),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let filter = enc(r#"{"room":{"rooms":[]},"presence":{"types":[]}}"#);
    let mut since: Option<String> = None;
    let mut received = Vec::new();
    // Syncs until the server goes away (a sync fails).
    let mut drain = async |server: &TestServer, since: &mut Option<String>, until_empty: bool| {
        loop {
            let path = match since {
                Some(s) => format!(
                    "/_matrix/client/v3/sync?filter={filter}&timeout=0&since={}",
                    enc(s)
                ),
                None => format!("/_matrix/client/v3/sync?filter={filter}&timeout=0"),
            };
            let resp = server
                .client
                .get(server.url(&path))
                .bearer_auth(&bob.access_token)
                .send()
                .await;
            let Ok(resp) = resp else { return };
            let Ok(body) = resp.json::<Value>().await else {
                return;
            };
            let Some(next) = body["next_batch"].as_str() else {
                return;
            };
            let events = to_device_events(&body);
            received.extend(events.iter().map(|e| e["content"]["n"].as_i64().unwrap()));
            *since = Some(next.to_owned());
            if until_empty && events.is_empty() {
                return;
            }
            if !until_empty && acked.lock().len() >= 300 {
                return;
            }
        }
    };
    drain(&bin.server, &mut since, false).await;
    bin.kill_and_restart().await;
    for s in senders {
        s.await.unwrap();
    }
    drain(&bin.server, &mut since, true).await;
    let acked = acked.lock().clone();
    let mut seen = std::collections::HashSet::new();
    for n in &received {
        assert!(seen.insert(*n), "{n} delivered twice");
    }
    for n in &acked {
        assert!(seen.contains(n), "acknowledged send {n} lost");
    }
    for sender in 0..2 {
        let theirs: Vec<i64> = received
            .iter()
            .copied()
            .filter(|n| n / 1_000_000 == sender)
            .collect();
        assert!(theirs.is_sorted(), "sender {sender} out of order");
        let last_acked = acked.iter().filter(|n| *n / 1_000_000 == sender).max();
        assert!(theirs.last() >= last_acked);
    }
}
