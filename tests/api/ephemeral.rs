//! Receipts, read markers, typing and presence: the endpoints and how they
//! show in /sync.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn typing_path(room: &str, user: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        enc(room),
        enc(user)
    )
}

async fn set_typing(server: &TestServer, who: &Session, room: &str, body: Value) {
    let (st, b) = server
        .put(&typing_path(room, &who.user_id), who.token(), body)
        .await;
    assert_eq!(st, StatusCode::OK, "typing: {b}");
}

fn presence_path(user: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(user))
}

/// The room's m.receipt content in a sync, if any.
fn receipt_content(body: &Value, room: &str) -> Option<Value> {
    let r = body["rooms"]["join"].get(room)?;
    event_of_type(&r["ephemeral"]["events"], "m.receipt").map(|e| e["content"].clone())
}

/// The room's m.typing user ids in a sync, if an m.typing event is there.
fn typing_users(body: &Value, room: &str) -> Option<Vec<String>> {
    let r = body["rooms"]["join"].get(room)?;
    let ev = event_of_type(&r["ephemeral"]["events"], "m.typing")?;
    Some(
        ev["content"]["user_ids"]
            .as_array()
            .unwrap_or_else(|| panic!("user_ids: {ev}"))
            .iter()
            .map(|u| u.as_str().expect("user id").to_owned())
            .collect(),
    )
}

/// A room of alice's that bob has joined, and a message in it.
async fn room_with_message(
    server: &TestServer,
    alice: &Session,
    bob: &Session,
) -> (String, String) {
    let room = create_room(server, alice, json!({"preset": "public_chat"})).await;
    join(server, bob, &room).await;
    let msg = send_text(server, alice, &room, "read me").await;
    (room, msg)
}

// ---------------------------------------------------------------------------
// Receipts
// ---------------------------------------------------------------------------

#[tokio::test]
async fn read_receipt_appears_in_other_members_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, msg) = room_with_message(&server, &alice, &bob).await;
    let ta = sync_token(&server, &alice).await;
    let tb = sync_token(&server, &bob).await;

    post_receipt(&server, &bob, &room, "m.read", &msg).await;

    for (who, since) in [(&alice, &ta), (&bob, &tb)] {
        let body = sync_since(&server, who, since).await;
        let content = receipt_content(&body, &room)
            .unwrap_or_else(|| panic!("no m.receipt for {}: {body}", who.user_id));
        let entry = &content[msg.as_str()]["m.read"][bob.user_id.as_str()];
        assert!(entry["ts"].is_u64(), "{content}");
        // Nothing is in the timeline: only the receipt changed.
        let r = joined_room(&body, &room);
        assert_eq!(r["timeline"]["events"], json!([]), "{r}");
    }

    // An initial sync has it too.
    let body = sync(&server, &alice, "timeout=0").await;
    let content = receipt_content(&body, &room).unwrap_or_else(|| panic!("{body}"));
    assert!(
        content[msg.as_str()]["m.read"][bob.user_id.as_str()]["ts"].is_u64(),
        "{content}"
    );
}

/// Receipts written in a room the user is not in never reach their sync
/// (issue 16: sync reads receipts of the user's rooms only), while one in
/// their room written in the same window does.
#[tokio::test]
async fn receipts_of_rooms_the_user_is_not_in_stay_out_of_their_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (room, msg) = room_with_message(&server, &alice, &bob).await;
    let (other, other_msg) = room_with_message(&server, &carol, &bob).await;
    let ta = sync_token(&server, &alice).await;

    post_receipt(&server, &carol, &other, "m.read", &other_msg).await;
    post_receipt(&server, &bob, &room, "m.read", &msg).await;

    for body in [
        sync_since(&server, &alice, &ta).await,
        sync(&server, &alice, "timeout=0").await,
    ] {
        assert!(body["rooms"]["join"].get(&other).is_none(), "{body}");
        assert!(!body.to_string().contains(&other_msg), "{body}");
        let content = receipt_content(&body, &room).unwrap_or_else(|| panic!("{body}"));
        assert!(
            content[msg.as_str()]["m.read"][bob.user_id.as_str()]["ts"].is_u64(),
            "{content}"
        );
    }
}

#[tokio::test]
async fn read_receipt_moves_to_the_newer_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, first) = room_with_message(&server, &alice, &bob).await;
    post_receipt(&server, &bob, &room, "m.read", &first).await;
    let second = send_text(&server, &alice, &room, "second").await;
    let ta = sync_token(&server, &alice).await;
    post_receipt(&server, &bob, &room, "m.read", &second).await;

    let body = sync_since(&server, &alice, &ta).await;
    let content = receipt_content(&body, &room).unwrap_or_else(|| panic!("{body}"));
    assert!(
        content[second.as_str()]["m.read"][bob.user_id.as_str()].is_object(),
        "{content}"
    );
    assert!(
        content.get(first.as_str()).is_none(),
        "the old receipt is not repeated: {content}"
    );
    // An initial sync holds only bob's newest receipt.
    let body = sync(&server, &alice, "timeout=0").await;
    let content = receipt_content(&body, &room).unwrap();
    let bobs: Vec<&String> = content
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["m.read"].get(bob.user_id.as_str()).is_some())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(bobs, [&second], "{content}");
}

#[tokio::test]
async fn read_receipt_with_thread_id() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, msg) = room_with_message(&server, &alice, &bob).await;
    let ta = sync_token(&server, &alice).await;
    let (st, body) = server
        .post(
            &receipt_path(&room, "m.read", &msg),
            bob.token(),
            json!({"thread_id": "main"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let body = sync_since(&server, &alice, &ta).await;
    let content = receipt_content(&body, &room).unwrap_or_else(|| panic!("{body}"));
    assert_eq!(
        content[msg.as_str()]["m.read"][bob.user_id.as_str()]["thread_id"],
        "main",
        "{content}"
    );
}

#[tokio::test]
async fn private_read_receipt_only_for_its_owner() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, msg) = room_with_message(&server, &alice, &bob).await;
    let ta = sync_token(&server, &alice).await;
    let tb = sync_token(&server, &bob).await;

    post_receipt(&server, &bob, &room, "m.read.private", &msg).await;

    let body = sync_since(&server, &bob, &tb).await;
    let content = receipt_content(&body, &room).unwrap_or_else(|| panic!("bob's own: {body}"));
    assert!(
        content[msg.as_str()]["m.read.private"][bob.user_id.as_str()]["ts"].is_u64(),
        "{content}"
    );

    let body = sync_since(&server, &alice, &ta).await;
    if let Some(content) = receipt_content(&body, &room) {
        assert!(
            !content.to_string().contains(&bob.user_id),
            "alice sees bob's private receipt: {content}"
        );
    }
    let body = sync(&server, &alice, "timeout=0").await;
    if let Some(content) = receipt_content(&body, &room) {
        assert!(
            !content.to_string().contains("m.read.private"),
            "alice's initial sync has a private receipt: {content}"
        );
    }
}

#[tokio::test]
async fn fully_read_goes_to_room_account_data() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, msg) = room_with_message(&server, &alice, &bob).await;
    let ta = sync_token(&server, &alice).await;
    let tb = sync_token(&server, &bob).await;

    post_receipt(&server, &bob, &room, "m.fully_read", &msg).await;

    let (st, data) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                enc(&bob.user_id),
                enc(&room)
            ),
            bob.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{data}");
    assert_eq!(data, json!({"event_id": msg}));

    let body = sync_since(&server, &bob, &tb).await;
    let r = joined_room(&body, &room);
    let ev = event_of_type(&r["account_data"]["events"], "m.fully_read")
        .unwrap_or_else(|| panic!("no m.fully_read: {r}"));
    assert_eq!(ev["content"]["event_id"], msg.as_str(), "{ev}");

    // Not a receipt others see.
    let body = sync_since(&server, &alice, &ta).await;
    if let Some(content) = receipt_content(&body, &room) {
        assert!(
            !content.to_string().contains(&bob.user_id),
            "fully_read leaked as a receipt: {content}"
        );
    }
}

#[tokio::test]
async fn receipt_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (room, msg) = room_with_message(&server, &alice, &bob).await;
    let elsewhere = create_room(&server, &alice, json!({})).await;
    let foreign = send_text(&server, &alice, &elsewhere, "not here").await;

    // Not joined.
    assert_error(
        &server
            .post(
                &receipt_path(&room, "m.read", &msg),
                carol.token(),
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Unknown event, or an event of another room.
    let unknown = "$doesnotexist";
    assert_error(
        &server
            .post(
                &receipt_path(&room, "m.read", unknown),
                bob.token(),
                json!({}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .post(
                &receipt_path(&room, "m.read", &foreign),
                bob.token(),
                json!({}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Unknown receipt type.
    let resp = server
        .post(
            &receipt_path(&room, "org.example.bogus", &msg),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);
    assert!(resp.1["errcode"].is_string(), "{}", resp.1);
    // No token.
    assert_error(
        &server
            .post(&receipt_path(&room, "m.read", &msg), None, json!({}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    // None of them left a receipt.
    let body = sync(&server, &alice, "timeout=0").await;
    if let Some(content) = receipt_content(&body, &room) {
        let s = content.to_string();
        assert!(
            !s.contains(&carol.user_id) && !s.contains(&bob.user_id),
            "{content}"
        );
    }
}

// ---------------------------------------------------------------------------
// Read markers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn read_markers_set_fully_read_and_receipts() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, first) = room_with_message(&server, &alice, &bob).await;
    let second = send_text(&server, &alice, &room, "second").await;
    let ta = sync_token(&server, &alice).await;
    let tb = sync_token(&server, &bob).await;

    let (st, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room)),
            bob.token(),
            json!({"m.fully_read": first, "m.read": second, "m.read.private": second}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let (st, data) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                enc(&bob.user_id),
                enc(&room)
            ),
            bob.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{data}");
    assert_eq!(data["event_id"], first.as_str(), "{data}");

    let body = sync_since(&server, &alice, &ta).await;
    let content = receipt_content(&body, &room).unwrap_or_else(|| panic!("{body}"));
    assert!(
        content[second.as_str()]["m.read"][bob.user_id.as_str()]["ts"].is_u64(),
        "{content}"
    );
    assert!(
        content[second.as_str()].get("m.read.private").is_none(),
        "alice sees the private receipt: {content}"
    );

    let body = sync_since(&server, &bob, &tb).await;
    let r = joined_room(&body, &room);
    let content = receipt_content(&body, &room).unwrap_or_else(|| panic!("{r}"));
    assert!(
        content[second.as_str()]["m.read.private"][bob.user_id.as_str()].is_object(),
        "{content}"
    );
    let ev = event_of_type(&r["account_data"]["events"], "m.fully_read")
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(ev["content"]["event_id"], first.as_str());
}

#[tokio::test]
async fn read_markers_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (room, msg) = room_with_message(&server, &alice, &bob).await;
    let path = format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room));

    assert_error(
        &server
            .post(&path, carol.token(), json!({"m.fully_read": msg}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .post(&path, bob.token(), json!({"m.read": "$doesnotexist"}))
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .post(&path, bob.token(), json!({"m.fully_read": "$doesnotexist"}))
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.post(&path, None, json!({"m.read": msg})).await,
        401,
        "M_MISSING_TOKEN",
    );
}

// ---------------------------------------------------------------------------
// Typing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn typing_appears_in_sync_and_false_clears_it() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, _) = room_with_message(&server, &alice, &bob).await;
    let tb = sync_token(&server, &bob).await;

    set_typing(
        &server,
        &alice,
        &room,
        json!({"typing": true, "timeout": 30000}),
    )
    .await;
    let body = sync_since(&server, &bob, &tb).await;
    assert_eq!(
        typing_users(&body, &room),
        Some(vec![alice.user_id.clone()]),
        "{body}"
    );
    // An initial sync shows who is typing now.
    let body0 = sync(&server, &bob, "timeout=0").await;
    assert_eq!(
        typing_users(&body0, &room),
        Some(vec![alice.user_id.clone()]),
        "{body0}"
    );

    // bob starts typing too: both, sorted or not.
    let tb2 = next_batch(&body);
    set_typing(
        &server,
        &bob,
        &room,
        json!({"typing": true, "timeout": 30000}),
    )
    .await;
    let body = sync_since(&server, &bob, &tb2).await;
    let mut users = typing_users(&body, &room).unwrap_or_else(|| panic!("{body}"));
    users.sort();
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(users, expected);

    let tb3 = next_batch(&body);
    set_typing(&server, &alice, &room, json!({"typing": false})).await;
    let body = sync_since(&server, &bob, &tb3).await;
    assert_eq!(
        typing_users(&body, &room),
        Some(vec![bob.user_id.clone()]),
        "{body}"
    );

    let tb4 = next_batch(&body);
    set_typing(&server, &bob, &room, json!({"typing": false})).await;
    let body = sync_since(&server, &bob, &tb4).await;
    assert_eq!(typing_users(&body, &room), Some(vec![]), "{body}");

    // Nothing changed since: no m.typing.
    let tb5 = next_batch(&body);
    let body = sync_since(&server, &bob, &tb5).await;
    assert_eq!(typing_users(&body, &room), None, "{body}");
}

#[tokio::test]
async fn typing_expires_after_its_timeout() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, _) = room_with_message(&server, &alice, &bob).await;
    let tb = sync_token(&server, &bob).await;

    // Long enough that the wall clock cannot expire it during the test.
    set_typing(
        &server,
        &alice,
        &room,
        json!({"typing": true, "timeout": 60000}),
    )
    .await;
    let body = sync_since(&server, &bob, &tb).await;
    assert_eq!(
        typing_users(&body, &room),
        Some(vec![alice.user_id.clone()]),
        "{body}"
    );
    let since = next_batch(&body);

    // 59.9 s on, an expiry pass leaves it: nothing changed.
    server.advance(Duration::from_millis(59_900));
    server.services().ephemeral.expire_typing();
    let body = sync(&server, &bob, &format!("since={}&timeout=0", enc(&since))).await;
    assert_eq!(
        typing_users(&body, &room),
        None,
        "expired too early: {body}"
    );

    // Past its timeout: the server's next expiry pass (every second) drops
    // it and wakes the long-poll.
    server.advance(Duration::from_millis(200));
    let body = sync(
        &server,
        &bob,
        &format!("since={}&timeout=10000", enc(&since)),
    )
    .await;
    assert_eq!(typing_users(&body, &room), Some(vec![]), "{body}");
    let body = sync(&server, &bob, "timeout=0").await;
    assert!(
        typing_users(&body, &room).is_none_or(|u| u.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn typing_wakes_a_long_polling_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, _) = room_with_message(&server, &alice, &bob).await;
    let tb = sync_token(&server, &bob).await;

    let poll = spawn_poll(&server, &bob, &tb, 10000);
    server.wait_for_parked_syncs(1).await;
    assert!(!poll.is_finished(), "returned before anything happened");
    let changed = Instant::now();
    set_typing(
        &server,
        &alice,
        &room,
        json!({"typing": true, "timeout": 30000}),
    )
    .await;
    let (st, body, done) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("long-poll finishes")
        .expect("task");
    assert_eq!(st, StatusCode::OK, "{body}");
    let waited = done.duration_since(changed);
    assert!(
        waited < Duration::from_secs(2),
        "woke {waited:?} after the change"
    );
    assert_eq!(
        typing_users(&body, &room),
        Some(vec![alice.user_id.clone()]),
        "{body}"
    );

    // And for typing stopping.
    let since = next_batch(&body);
    let poll = spawn_poll(&server, &bob, &since, 10000);
    server.wait_for_parked_syncs(1).await;
    assert!(!poll.is_finished(), "returned before anything happened");
    let changed = Instant::now();
    set_typing(&server, &alice, &room, json!({"typing": false})).await;
    let (_, body, done) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("long-poll finishes")
        .expect("task");
    assert!(done.duration_since(changed) < Duration::from_secs(2));
    assert_eq!(typing_users(&body, &room), Some(vec![]), "{body}");
}

#[tokio::test]
async fn typing_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (room, _) = room_with_message(&server, &alice, &bob).await;
    let tb = sync_token(&server, &bob).await;

    // For another user.
    assert_error(
        &server
            .put(
                &typing_path(&room, &bob.user_id),
                alice.token(),
                json!({"typing": true, "timeout": 30000}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Not joined.
    assert_error(
        &server
            .put(
                &typing_path(&room, &carol.user_id),
                carol.token(),
                json!({"typing": true, "timeout": 30000}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .put(
                &typing_path(&room, &alice.user_id),
                None,
                json!({"typing": true}),
            )
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    let resp = server
        .put(
            &typing_path(&room, &alice.user_id),
            alice.token(),
            json!({"typing": "yes"}),
        )
        .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);

    // Nobody is typing.
    let body = sync_since(&server, &bob, &tb).await;
    assert!(
        typing_users(&body, &room).is_none_or(|u| u.is_empty()),
        "{body}"
    );
}

// ---------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------

#[tokio::test]
async fn presence_put_and_get() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    let (st, body) = server
        .put(
            &presence_path(&bob.user_id),
            bob.token(),
            json!({"presence": "online", "status_msg": "busy"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let (st, body) = server
        .get(&presence_path(&bob.user_id), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["presence"], "online", "{body}");
    assert_eq!(body["status_msg"], "busy", "{body}");
    assert!(body["last_active_ago"].is_u64(), "{body}");
    assert!(body["last_active_ago"].as_u64().unwrap() < 60_000, "{body}");
    assert_eq!(body["currently_active"], true, "{body}");

    let (st, _) = server
        .put(
            &presence_path(&bob.user_id),
            bob.token(),
            json!({"presence": "unavailable"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = server.get(&presence_path(&bob.user_id), bob.token()).await;
    assert_eq!(body["presence"], "unavailable", "{body}");
    assert_ne!(body["currently_active"], true, "{body}");

    let (st, _) = server
        .put(
            &presence_path(&bob.user_id),
            bob.token(),
            json!({"presence": "offline"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = server
        .get(&presence_path(&bob.user_id), alice.token())
        .await;
    assert_eq!(body["presence"], "offline", "{body}");
}

#[tokio::test]
async fn presence_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server
        .put(
            &presence_path(&bob.user_id),
            bob.token(),
            json!({"presence": "online", "status_msg": "mine"}),
        )
        .await;

    assert_error(
        &server
            .put(
                &presence_path(&bob.user_id),
                alice.token(),
                json!({"presence": "offline", "status_msg": "hacked"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    let (_, body) = server.get(&presence_path(&bob.user_id), bob.token()).await;
    assert_eq!(body["presence"], "online", "{body}");
    assert_eq!(body["status_msg"], "mine", "{body}");

    let nobody = format!("@nobody:{}", server.server_name);
    assert_error(
        &server.get(&presence_path(&nobody), alice.token()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get(&presence_path(&bob.user_id), None).await,
        401,
        "M_MISSING_TOKEN",
    );
    let resp = server
        .put(&presence_path(&bob.user_id), bob.token(), json!({}))
        .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "no presence: {}", resp.1);
}

#[tokio::test]
async fn presence_appears_in_room_members_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    room_with_message(&server, &alice, &bob).await;
    create_room(&server, &carol, json!({})).await;
    let ta = sync_token(&server, &alice).await;
    let tc = sync_token(&server, &carol).await;
    let tb = sync_token(&server, &bob).await;

    let (st, body) = server
        .put(
            &presence_path(&bob.user_id),
            bob.token(),
            json!({"presence": "online", "status_msg": "here"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let bobs = |body: &Value| -> Option<Value> {
        body["presence"]["events"]
            .as_array()
            .unwrap_or_else(|| panic!("presence.events: {body}"))
            .iter()
            .find(|e| e["sender"] == bob.user_id.as_str())
            .cloned()
    };

    let body = sync_since(&server, &alice, &ta).await;
    let ev = bobs(&body).unwrap_or_else(|| panic!("alice sees no presence of bob: {body}"));
    assert_eq!(ev["type"], "m.presence", "{ev}");
    assert_eq!(ev["content"]["presence"], "online", "{ev}");
    assert_eq!(ev["content"]["status_msg"], "here", "{ev}");

    // bob sees his own.
    let body = sync_since(&server, &bob, &tb).await;
    assert!(bobs(&body).is_some(), "bob's own presence: {body}");

    // carol shares no room with bob.
    let body = sync_since(&server, &carol, &tc).await;
    assert!(bobs(&body).is_none(), "carol sees bob's presence: {body}");
}

#[tokio::test]
async fn presence_disabled_refuses_get() {
    let server = TestServer::start_with(|c| c.presence.enabled = false).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    let (st, body) = server
        .put(
            &presence_path(&bob.user_id),
            bob.token(),
            json!({"presence": "online"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "PUT is accepted and ignored: {body}");
    assert_error(
        &server
            .get(&presence_path(&bob.user_id), alice.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&presence_path(&bob.user_id), bob.token()).await,
        403,
        "M_FORBIDDEN",
    );
}

/// Presence goes to users who share a room; once bob has left alice's only
/// room with him, his presence is no longer hers to see.
#[tokio::test]
async fn presence_not_sent_after_leaving_the_shared_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, _) = room_with_message(&server, &alice, &bob).await;
    leave(&server, &bob, &room).await;
    let ta = sync_token(&server, &alice).await;

    let (st, body) = server
        .put(
            &presence_path(&bob.user_id),
            bob.token(),
            json!({"presence": "online", "status_msg": "gone"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let body = sync_since(&server, &alice, &ta).await;
    let leaked: Vec<&Value> = body["presence"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("presence.events: {body}"))
        .iter()
        .filter(|e| e["sender"] == bob.user_id.as_str())
        .collect();
    assert!(
        leaked.is_empty(),
        "alice shares no room with bob but gets his presence: {leaked:?}"
    );
}

/// A read receipt, and a tag (room account data), each wake a long-poll;
/// activity in a room the user is not in does not.
#[tokio::test]
async fn receipts_and_tags_wake_a_long_polling_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (room, event) = room_with_message(&server, &alice, &bob).await;
    let elsewhere = create_room(&server, &carol, json!({})).await;

    let since = sync_token(&server, &bob).await;
    let mut poll = spawn_poll(&server, &bob, &since, 10000);
    server.wait_for_parked_syncs(1).await;
    // Others' activity elsewhere: no answer. (Nothing marks "not woken":
    // the poll gets half a second to answer, and must not.)
    send_text(&server, &carol, &elsewhere, "not for bob").await;
    let early = tokio::time::timeout(Duration::from_millis(500), &mut poll).await;
    assert!(early.is_err(), "woken by a room bob is not in: {early:?}");
    let changed = Instant::now();
    post_receipt(&server, &alice, &room, "m.read", &event).await;
    let (st, body, done) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("long-poll finishes")
        .expect("task");
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(done.duration_since(changed) < Duration::from_secs(2));
    assert!(
        event_of_type(
            &joined_room(&body, &room)["ephemeral"]["events"],
            "m.receipt"
        )
        .is_some(),
        "{body}"
    );

    let since = next_batch(&body);
    let poll = spawn_poll(&server, &bob, &since, 10000);
    server.wait_for_parked_syncs(1).await;
    assert!(!poll.is_finished(), "returned before anything happened");
    let changed = Instant::now();
    let (st, b) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/tags/u.work",
                enc(&bob.user_id),
                enc(&room)
            ),
            bob.token(),
            json!({"order": 0.5}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, body, done) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("long-poll finishes")
        .expect("task");
    assert!(done.duration_since(changed) < Duration::from_secs(2));
    assert!(
        event_of_type(
            &joined_room(&body, &room)["account_data"]["events"],
            "m.tag"
        )
        .is_some(),
        "{body}"
    );
}
