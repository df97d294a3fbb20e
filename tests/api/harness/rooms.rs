//! Room helpers: create, send, state, membership, and reading event lists.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Session, TestServer, enc};

/// `/_matrix/client/v3/rooms/{room}{rest}` (the room id percent-encoded).
pub fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}{rest}", enc(room))
}

/// A transaction id no other helper call has used.
pub fn next_txn() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("rr{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The content of an m.text message.
pub fn text_content(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

/// POST /createRoom; returns the room id.
pub async fn create_room(server: &TestServer, who: &Session, body: Value) -> String {
    let (st, b) = server
        .post("/_matrix/client/v3/createRoom", who.token(), body.clone())
        .await;
    assert_eq!(st, StatusCode::OK, "createRoom {body}: {b}");
    b["room_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no room_id: {b}"))
        .to_owned()
}

/// A `private_chat` room of `version` whose `m.room.join_rules` content is
/// `join_rules` (knocking, restricted rooms); its id.
pub async fn room_with_join_rules(
    server: &TestServer,
    who: &Session,
    version: &str,
    join_rules: Value,
) -> String {
    let state = json!([{"type": "m.room.join_rules", "state_key": "", "content": join_rules}]);
    let body = json!({"room_version": version, "preset": "private_chat", "initial_state": state});
    create_room(server, who, body).await
}

/// A space (`m.space` room type) made with `preset`; its id.
pub async fn create_space(server: &TestServer, who: &Session, preset: &str) -> String {
    let body = json!({"preset": preset, "creation_content": {"type": "m.space"}});
    create_room(server, who, body).await
}

/// Sends an m.room.message with `body`; returns the event id.
pub async fn send_text(server: &TestServer, who: &Session, room: &str, body: &str) -> String {
    send_event(server, who, room, "m.room.message", text_content(body)).await
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
        enc(room),
        enc(ty),
        enc(txn)
    );
    let (st, b) = server.put(&path, who.token(), content).await;
    assert_eq!(st, StatusCode::OK, "send {ty} to {room}: {b}");
    let id = b["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no event_id: {b}"))
        .to_owned();
    assert!(id.starts_with('$'), "{id}");
    id
}

/// PUT /send/m.room.message/{txn} with a text `body`; the answer as it is.
pub async fn try_send_text(
    server: &TestServer,
    who: &Session,
    room: &str,
    txn: &str,
    body: &str,
) -> (StatusCode, Value) {
    server
        .put(
            &room_path(room, &format!("/send/m.room.message/{}", enc(txn))),
            who.token(),
            text_content(body),
        )
        .await
}

/// GET /state/{type}/{key}: the content in force (asserting 200).
pub async fn current_state_content(
    server: &TestServer,
    who: &Session,
    room: &str,
    ty: &str,
    key: &str,
) -> Value {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/{}/{}",
        enc(room),
        enc(ty),
        enc(key)
    );
    let (st, body) = server.get(&path, who.token()).await;
    assert_eq!(st, StatusCode::OK, "{ty}/{key} in {room}: {body}");
    body
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
        enc(room),
        enc(ty),
        enc(key)
    );
    let (st, b) = server.put(&path, who.token(), content).await;
    assert_eq!(st, StatusCode::OK, "state {ty}/{key}: {b}");
    b["event_id"].as_str().expect("event_id").to_owned()
}

/// PUT m.room.history_visibility to `visibility`; returns the event id.
pub async fn set_history_visibility(
    server: &TestServer,
    who: &Session,
    room: &str,
    visibility: &str,
) -> String {
    let content = json!({ "history_visibility": visibility });
    set_state(server, who, room, "m.room.history_visibility", "", content).await
}

/// POST /join; the answer as it is.
pub async fn try_join(server: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/join", enc(room));
    server.post(&path, who.token(), json!({})).await
}

/// POST /join; asserts 200 with the room id.
pub async fn join(server: &TestServer, who: &Session, room: &str) {
    let (st, b) = try_join(server, who, room).await;
    assert_eq!(st, StatusCode::OK, "join {} to {room}: {b}", who.user_id);
    assert_eq!(b["room_id"], room, "{b}");
}

/// A public room `owner` creates and `others` join; its id.
pub async fn shared_room(server: &TestServer, owner: &Session, others: &[&Session]) -> String {
    let room = create_room(server, owner, json!({"preset": "public_chat"})).await;
    for who in others {
        join(server, who, &room).await;
    }
    room
}

pub async fn invite(server: &TestServer, who: &Session, room: &str, user_id: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
    let (st, b) = server
        .post(&path, who.token(), json!({"user_id": user_id}))
        .await;
    assert_eq!(st, StatusCode::OK, "invite {user_id}: {b}");
}

pub async fn leave(server: &TestServer, who: &Session, room: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/leave", enc(room));
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
    super::field_of_each(events, "event_id")
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

/// GET /joined_rooms: the room ids, sorted.
pub async fn joined_rooms(server: &TestServer, who: &Session) -> Vec<String> {
    let (st, body) = server
        .get("/_matrix/client/v3/joined_rooms", who.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let mut rooms: Vec<String> = body["joined_rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("joined_rooms not an array: {body}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    rooms.sort();
    rooms
}

/// GET /joined_members: the user ids, sorted.
pub async fn joined_members(server: &TestServer, who: &Session, room: &str) -> Vec<String> {
    let (st, body) = server
        .get(&room_path(room, "/joined_members"), who.token())
        .await;
    assert_eq!(st, StatusCode::OK, "joined_members: {body}");
    let mut users: Vec<String> = body["joined"]
        .as_object()
        .unwrap_or_else(|| panic!("joined not an object: {body}"))
        .keys()
        .cloned()
        .collect();
    users.sort();
    users
}

/// GET /event/{id}; the answer as it is.
pub async fn get_event(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_id: &str,
) -> (StatusCode, Value) {
    server
        .get(
            &room_path(room, &format!("/event/{}", enc(event_id))),
            who.token(),
        )
        .await
}

/// GET /event/{id}; asserts 200 and returns the event.
pub async fn get_event_ok(server: &TestServer, who: &Session, room: &str, event_id: &str) -> Value {
    let (st, body) = get_event(server, who, room, event_id).await;
    assert_eq!(st, StatusCode::OK, "GET event {event_id}: {body}");
    body
}

/// GET /messages with a query string (already encoded).
pub async fn messages(
    server: &TestServer,
    who: &Session,
    room: &str,
    query: &str,
) -> (StatusCode, Value) {
    server
        .get(&room_path(room, &format!("/messages?{query}")), who.token())
        .await
}

/// GET /messages with a query string (already encoded); asserts 200, a
/// `chunk` array and a `start` token.
pub async fn messages_ok(server: &TestServer, who: &Session, room: &str, query: &str) -> Value {
    let (st, b) = messages(server, who, room, query).await;
    assert_eq!(st, StatusCode::OK, "messages ?{query}: {b}");
    assert!(b["chunk"].is_array(), "chunk: {b}");
    assert!(b["start"].is_string(), "start: {b}");
    b
}

/// Every event of the room `who` may see, oldest first (one /messages
/// page, dir=f, of up to 1000).
pub async fn timeline(server: &TestServer, who: &Session, room: &str) -> Vec<Value> {
    let body = messages_ok(server, who, room, "dir=f&limit=1000").await;
    body["chunk"].as_array().expect("chunk").clone()
}

/// PUT /redact/{event}/{txn} with `body`; the answer as it is.
pub async fn try_redact(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_id: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &room_path(room, &format!("/redact/{}/{}", enc(event_id), next_txn())),
            who.token(),
            body,
        )
        .await
}

/// Redacts `event_id` (reason "test"); returns the redaction's event id.
pub async fn redact(server: &TestServer, who: &Session, room: &str, event_id: &str) -> String {
    let (st, b) = try_redact(server, who, room, event_id, json!({"reason": "test"})).await;
    assert_eq!(st, StatusCode::OK, "redact: {b}");
    b["event_id"].as_str().expect("event_id").to_owned()
}

/// `/rooms/{room}/receipt/{ty}/{event}`.
pub fn receipt_path(room: &str, ty: &str, event: &str) -> String {
    room_path(room, &format!("/receipt/{}/{}", enc(ty), enc(event)))
}

/// POST /receipt/{ty}/{event}; asserts 200 with an empty object.
pub async fn post_receipt(server: &TestServer, who: &Session, room: &str, ty: &str, event: &str) {
    let (st, body) = server
        .post(&receipt_path(room, ty, event), who.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "receipt {ty}: {body}");
    assert_eq!(body, json!({}), "receipt answers an empty object");
}

/// The room's events form one chain: one forward extremity, and depths
/// 1..=n without a gap or a repeat (read from the database).
pub async fn assert_one_chain(server: &TestServer, room: &str) {
    let q = |sql: &str| sql.replace("ROOM", &super::sql_quote(room));
    let extremities = server
        .sql_count(&q(
            "SELECT COUNT(*) FROM forward_extremities WHERE room_id = 'ROOM'",
        ))
        .await;
    assert_eq!(extremities, 1, "one forward extremity in {room}");
    let events = server
        .sql_count(&q("SELECT COUNT(*) FROM events WHERE room_id = 'ROOM'"))
        .await;
    let depths = server
        .sql_count(&q(
            "SELECT COUNT(DISTINCT depth) FROM events WHERE room_id = 'ROOM'",
        ))
        .await;
    let max_depth = server
        .sql_count(&q("SELECT MAX(depth) FROM events WHERE room_id = 'ROOM'"))
        .await;
    assert_eq!(
        (depths, max_depth),
        (events, events),
        "depths 1..={events} in {room}"
    );
}
