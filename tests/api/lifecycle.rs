//! The services' lifecycle: the background workers that run, the cache
//! report (every in-memory cache with its size), and a shutdown that
//! writes what was queued before the database closes.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::TestServer;

fn cache_report(s: &TestServer) -> HashMap<String, usize> {
    let running = s.running.as_ref().expect("running");
    running.services.cache_report().into_iter().collect()
}

#[tokio::test]
async fn the_background_workers_run_under_the_lifecycle() {
    let s = TestServer::start().await;
    let running = s.running.as_ref().expect("running");
    let names: Vec<&str> = running
        .services
        .workers()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for worker in [
        "event writer",
        "search indexer",
        "last-seen flush",
        "typing expiry",
        "upkeep",
    ] {
        assert!(names.contains(&worker), "{worker} missing from {names:?}");
    }
}

#[tokio::test]
async fn the_cache_report_lists_the_caches_and_moves_when_they_fill() {
    let s = TestServer::start().await;
    let before = cache_report(&s);
    for cache in [
        "rooms.heads",
        "rooms.events",
        "rooms.versions",
        "rooms.state_entries",
        "rooms.history_floors",
        "rooms.erased_users",
        "sessions.tokens",
        "unread.counts",
        "uia.sessions",
        "account_data.push_rules",
        "ephemeral.typing_rooms",
        "jobs.tasks",
    ] {
        assert!(
            before.contains_key(cache),
            "{cache} missing from {before:?}"
        );
    }
    let alice = s.user("alice").await;
    let (st, body) = s
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({ "name": "report" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = s.get("/_matrix/client/v3/sync", alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let after = cache_report(&s);
    for cache in ["rooms.heads", "rooms.events", "sessions.tokens"] {
        assert!(
            after[cache] > before[cache],
            "{cache}: {} before, {} after",
            before[cache],
            after[cache]
        );
    }
}

#[tokio::test]
async fn shutdown_writes_every_queued_event_before_closing() {
    let mut s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (st, body) = s
        .post("/_matrix/client/v3/createRoom", alice.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().expect("room id").to_owned();
    for i in 0..20 {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/t{i}",
            crate::harness::enc(&room)
        );
        let (st, body) = s
            .put(
                &path,
                alice.token(),
                json!({ "msgtype": "m.text", "body": "x" }),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    s.restart().await;
    let n = s
        .sql_count(&format!(
            "SELECT COUNT(*) FROM events WHERE room_id = '{room}' AND event_type = 'm.room.message'"
        ))
        .await;
    assert_eq!(n, 20);
}
