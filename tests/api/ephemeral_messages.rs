//! Ephemeral messages (MSC2228, `rooms.ephemeral_messages`, on by default):
//! a message whose content has `org.matrix.self_destruct_after` loses its
//! content once that time passes, in `/messages`, `/event` and `/sync`, and
//! leaves the search index; the expiry survives a restart; state events and
//! non-integer times are never scheduled (sytest 30rooms/04messages
//! "Ephemeral messages received from clients are correctly expired").

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const KEY: &str = "org.matrix.self_destruct_after";

/// Sends a text message that asks to be pruned at `at`; its event id.
async fn send_ephemeral(
    server: &TestServer,
    who: &Session,
    room: &str,
    body: &str,
    at: Value,
) -> String {
    let content = json!({"msgtype": "m.text", "body": body, KEY: at});
    send_event(server, who, room, "m.room.message", content).await
}

/// The event's content as `/rooms/{room}/event/{id}` shows it.
async fn content_of(server: &TestServer, who: &Session, room: &str, event_id: &str) -> Value {
    get_event_ok(server, who, room, event_id).await["content"].clone()
}

/// Waits until the event's content is `{}` (the worker looks once a second).
async fn wait_pruned(server: &TestServer, who: &Session, room: &str, event_id: &str) {
    wait_until("message pruned", Duration::from_secs(10), || async {
        let content = content_of(server, who, room, event_id).await;
        if content == json!({}) {
            Ok(())
        } else {
            Err(content.to_string())
        }
    })
    .await;
}

/// How many results `POST /search` finds for `term`.
async fn search_count(server: &TestServer, who: &Session, term: &str) -> u64 {
    let (st, body) = server
        .post(
            "/_matrix/client/v3/search",
            who.token(),
            json!({"search_categories": {"room_events": {"search_term": term}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["search_categories"]["room_events"]["count"]
        .as_u64()
        .unwrap()
}

async fn scheduled(server: &TestServer) -> i64 {
    server.sql_count("SELECT COUNT(*) FROM event_expiry").await
}

#[tokio::test]
async fn an_ephemeral_message_is_pruned_when_its_time_passes() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let now = server.now_ms();
    let gone = send_ephemeral(&server, &alice, &room, "vanishing words", json!(now + 1000)).await;
    let later = send_ephemeral(&server, &alice, &room, "lasting words", json!(now + 60_000)).await;
    // Neither a string time nor a state event is scheduled.
    let stringy = send_ephemeral(
        &server,
        &alice,
        &room,
        "stringy words",
        json!((now + 1000).to_string()),
    )
    .await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "stays", KEY: now + 1000}),
    )
    .await;
    assert_eq!(scheduled(&server).await, 2);
    assert_eq!(
        content_of(&server, &alice, &room, &gone).await["body"],
        "vanishing words"
    );
    assert_eq!(search_count(&server, &alice, "vanishing").await, 1);

    server.advance(Duration::from_millis(1500));
    wait_pruned(&server, &alice, &room, &gone).await;
    assert_eq!(scheduled(&server).await, 1);
    // The others keep their content.
    assert_eq!(
        content_of(&server, &alice, &room, &later).await["body"],
        "lasting words"
    );
    assert_eq!(
        content_of(&server, &alice, &room, &stringy).await["body"],
        "stringy words"
    );
    let topic = current_state_content(&server, &alice, &room, "m.room.topic", "").await;
    assert_eq!(topic["topic"], "stays", "{topic}");
    // /messages (as sytest reads it), /sync and search.
    let filter = enc(&json!({"types": ["m.room.message"]}).to_string());
    let page = messages_ok(&server, &alice, &room, &format!("dir=b&filter={filter}")).await;
    let chunk = page["chunk"].as_array().unwrap();
    let pruned = chunk
        .iter()
        .find(|e| e["event_id"] == gone.as_str())
        .unwrap();
    assert_eq!(pruned["content"], json!({}), "{pruned}");
    assert_eq!(pruned["type"], "m.room.message");
    let body = sync(&server, &alice, "timeout=0").await;
    let timeline = &joined_room(&body, &room)["timeline"]["events"];
    let in_sync = timeline
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == gone.as_str())
        .unwrap();
    assert_eq!(in_sync["content"], json!({}), "{in_sync}");
    assert_eq!(search_count(&server, &alice, "vanishing").await, 0);
    assert_eq!(search_count(&server, &alice, "lasting").await, 1);
}

#[tokio::test]
async fn an_expiry_survives_a_restart() {
    let mut server = TestServer::start_with_mock_clock(|_| {}).await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let at = server.now_ms() + 10_000;
    let gone = send_ephemeral(&server, &alice, &room, "short lived", json!(at)).await;
    server.restart().await;
    assert_eq!(
        content_of(&server, &alice, &room, &gone).await["body"],
        "short lived"
    );
    server.advance(Duration::from_secs(11));
    wait_pruned(&server, &alice, &room, &gone).await;
    assert_eq!(scheduled(&server).await, 0);
    // Unknown events are still 404 (the pruned one is not).
    let resp = get_event(&server, &alice, &room, "$nope").await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn switched_off_nothing_is_scheduled() {
    let server = TestServer::start_with_mock_clock(|c| c.rooms.ephemeral_messages = false).await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let kept = send_ephemeral(
        &server,
        &alice,
        &room,
        "kept",
        json!(server.now_ms() + 1000),
    )
    .await;
    assert_eq!(scheduled(&server).await, 0);
    assert_eq!(
        content_of(&server, &alice, &room, &kept).await["body"],
        "kept"
    );
}
