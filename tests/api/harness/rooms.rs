//! Room helpers: create, send, state, membership, and reading event lists.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Session, TestServer};

/// Form-urlencodes one path segment or query value (a space becomes
/// `+`); the room helpers here encode with it.
pub fn enc_form(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn next_txn() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("rr{}", N.fetch_add(1, Ordering::Relaxed))
}

/// POST /createRoom; returns the room id.
pub async fn create_room(server: &TestServer, who: &Session, body: Value) -> String {
    let (st, b) = server
        .post("/_matrix/client/v3/createRoom", who.token(), body)
        .await;
    assert_eq!(st, StatusCode::OK, "createRoom: {b}");
    b["room_id"].as_str().expect("room_id").to_owned()
}

/// Sends an m.room.message with `body`; returns the event id.
pub async fn send_text(server: &TestServer, who: &Session, room: &str, body: &str) -> String {
    send_event(
        server,
        who,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
}

/// Sends any message event; returns the event id.
pub async fn send_event(
    server: &TestServer,
    who: &Session,
    room: &str,
    ty: &str,
    content: Value,
) -> String {
    send_event_txn(server, who, room, ty, content, &next_txn()).await
}

pub async fn send_event_txn(
    server: &TestServer,
    who: &Session,
    room: &str,
    ty: &str,
    content: Value,
    txn: &str,
) -> String {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/{}/{}",
        enc_form(room),
        enc_form(ty),
        enc_form(txn)
    );
    let (st, b) = server.put(&path, who.token(), content).await;
    assert_eq!(st, StatusCode::OK, "send {ty}: {b}");
    b["event_id"].as_str().expect("event_id").to_owned()
}

/// PUT /state/{type}/{key}; returns the event id.
pub async fn set_state(
    server: &TestServer,
    who: &Session,
    room: &str,
    ty: &str,
    key: &str,
    content: Value,
) -> String {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/{}/{}",
        enc_form(room),
        enc_form(ty),
        enc_form(key)
    );
    let (st, b) = server.put(&path, who.token(), content).await;
    assert_eq!(st, StatusCode::OK, "state {ty}/{key}: {b}");
    b["event_id"].as_str().expect("event_id").to_owned()
}

pub async fn join(server: &TestServer, who: &Session, room: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/join", enc_form(room));
    let (st, b) = server.post(&path, who.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "join {}: {b}", who.user_id);
}

pub async fn invite(server: &TestServer, who: &Session, room: &str, user_id: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/invite", enc_form(room));
    let (st, b) = server
        .post(&path, who.token(), json!({"user_id": user_id}))
        .await;
    assert_eq!(st, StatusCode::OK, "invite {user_id}: {b}");
}

pub async fn leave(server: &TestServer, who: &Session, room: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/leave", enc_form(room));
    let (st, b) = server.post(&path, who.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "leave {}: {b}", who.user_id);
}

/// The `body` of every m.room.message in a list of events, in order.
pub fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {events}"))
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect()
}

pub fn event_ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {events}"))
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

/// The state event of (type, state_key) in a list of events, if any.
pub fn find_state<'a>(events: &'a Value, ty: &str, key: &str) -> Option<&'a Value> {
    events
        .as_array()?
        .iter()
        .find(|e| e["type"] == ty && e["state_key"] == key)
}

/// The state keys of the m.room.member events in a list.
pub fn member_keys(events: &Value) -> HashSet<String> {
    events
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {events}"))
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// `initial_state` setting the history visibility.
pub fn hv_state(visibility: &str) -> Value {
    json!([{
        "type": "m.room.history_visibility",
        "state_key": "",
        "content": {"history_visibility": visibility}
    }])
}

/// GET /joined_rooms as a set.
pub async fn joined_rooms(server: &TestServer, who: &Session) -> HashSet<String> {
    let (st, body) = server
        .get("/_matrix/client/v3/joined_rooms", who.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["joined_rooms"]
        .as_array()
        .expect("joined_rooms")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}
