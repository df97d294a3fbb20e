//! The deprecated r0 event stream and initial syncs: `GET /events` (shape,
//! `timeout=0`, long-poll wake-up, `from`/`end` continuing, `limit` paging in
//! order, ephemeral and account data events, invites, peeking a
//! world-readable room), `GET /initialSync` (rooms, `limit`, `archived`,
//! invites, account data, receipts, presence) and
//! `GET /rooms/{roomId}/initialSync` (joined, left, world-readable, 403), with
//! their errors; and `GET /events/{eventId}`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// GET /events with `query` (200 expected).
async fn events(server: &TestServer, who: &Session, query: &str) -> Value {
    let (st, body) = server
        .get(&format!("/_matrix/client/r0/events?{query}"), who.token())
        .await;
    assert_eq!(st, StatusCode::OK, "/events?{query}: {body}");
    body
}

/// The current stream token of the user's event stream.
async fn flush(server: &TestServer, who: &Session) -> String {
    let body = events(server, who, "timeout=0").await;
    body["end"].as_str().expect("end").to_owned()
}

fn chunk(body: &Value) -> &Vec<Value> {
    body["chunk"].as_array().expect("chunk is a list")
}

fn of_type<'a>(body: &'a Value, ty: &str) -> Vec<&'a Value> {
    chunk(body).iter().filter(|e| e["type"] == ty).collect()
}

async fn guest(server: &TestServer) -> Session {
    let (st, body) = server
        .post("/_matrix/client/v3/register?kind=guest", None, json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    Session {
        user_id: body["user_id"].as_str().unwrap().to_owned(),
        access_token: body["access_token"].as_str().unwrap().to_owned(),
        device_id: body["device_id"].as_str().unwrap().to_owned(),
    }
}

async fn initial_sync(server: &TestServer, who: &Session, query: &str) -> Value {
    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/initialSync?{query}"),
            who.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "/initialSync?{query}: {body}");
    body
}

fn room_path(room: &str, query: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/initialSync?{query}", enc(room))
}

fn room_in<'a>(body: &'a Value, room: &str) -> &'a Value {
    body["rooms"]
        .as_array()
        .expect("rooms is a list")
        .iter()
        .find(|r| r["room_id"] == room)
        .unwrap_or_else(|| panic!("{room} not in {body}"))
}

/// PUT a tag on a room (200 expected).
async fn put_tag(server: &TestServer, who: &Session, room: &str, tag: &str) {
    let path = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/tags/{tag}",
        enc(&who.user_id),
        enc(room)
    );
    let (st, b) = server.put(&path, who.token(), json!({"order": 1})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

/// PUT global account data `my.type` (200 expected).
async fn put_my_type(server: &TestServer, who: &Session) {
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/my.type",
        enc(&who.user_id)
    );
    let (st, b) = server
        .put(&path, who.token(), json!({"cats_or_rats": "cats"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

/// POST an m.read receipt (200 expected).
async fn read_receipt(server: &TestServer, who: &Session, room: &str, event: &str) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        enc(room),
        enc(event)
    );
    let (st, b) = server.post(&path, who.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

/// PUT the user's presence (200 expected).
async fn set_presence(server: &TestServer, who: &Session, presence: &str) {
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&who.user_id));
    let (st, b) = server
        .put(&path, who.token(), json!({"presence": presence}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn events_answers_at_once_with_timeout_zero() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for prefix in ["r0", "v3"] {
        let started = Instant::now();
        let (st, body) = server
            .get(
                &format!("/_matrix/client/{prefix}/events?timeout=0"),
                alice.token(),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(chunk(&body).len(), 0, "no from: from now, {body}");
        assert!(
            body["start"].is_string() && body["end"].is_string(),
            "{body}"
        );
    }
    // The token is a /sync token: each continues the other.
    let room = create_room(&server, &alice, json!({})).await;
    let next = sync_token(&server, &alice).await;
    let id = send_text(&server, &alice, &room, "after the sync").await;
    let body = events(&server, &alice, &format!("timeout=0&from={}", enc(&next))).await;
    let msgs = of_type(&body, "m.room.message");
    assert_eq!(msgs.len(), 1, "{body}");
    assert_eq!(msgs[0]["event_id"], id.as_str());
    assert_eq!(msgs[0]["room_id"], room.as_str());
    let end = body["end"].as_str().unwrap();
    let again = sync_since(&server, &alice, end).await;
    assert!(
        again["rooms"]["join"].get(&room).is_none(),
        "nothing new after end: {again}"
    );
}

#[tokio::test]
async fn events_long_poll_wakes_on_a_send_and_end_continues() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let from = flush(&server, &alice).await;

    let client = server.client.clone();
    let url = server.url(&format!(
        "/_matrix/client/r0/events?from={}&timeout=10000",
        enc(&from)
    ));
    let token = alice.access_token.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let resp = client.get(url).bearer_auth(token).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        (status, body, started.elapsed())
    });
    server.wait_for_parked_syncs(1).await;
    assert!(!poll.is_finished(), "returned before anything happened");
    let id = send_text(&server, &bob, &room, "wake up").await;
    let (status, body, elapsed) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("long-poll finishes")
        .expect("task");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let msgs = of_type(&body, "m.room.message");
    assert_eq!(msgs.len(), 1, "{body}");
    assert_eq!(msgs[0]["event_id"], id.as_str());
    assert_eq!(body["start"], from.as_str());

    // From its end: nothing again.
    let end = body["end"].as_str().unwrap();
    let again = events(&server, &alice, &format!("from={}&timeout=0", enc(end))).await;
    assert_eq!(chunk(&again).len(), 0, "{again}");
    assert_eq!(again["end"], end);

    // A long-poll that nothing wakes answers empty after its timeout.
    let started = Instant::now();
    let quiet = events(&server, &alice, &format!("from={}&timeout=300", enc(end))).await;
    assert_eq!(chunk(&quiet).len(), 0, "{quiet}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn events_limit_pages_through_in_order() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut from = flush(&server, &alice).await;
    let mut sent = Vec::new();
    for i in 0..7 {
        sent.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let body = events(
            &server,
            &alice,
            &format!("from={}&timeout=0&limit=3", enc(&from)),
        )
        .await;
        assert!(chunk(&body).len() <= 3, "{body}");
        seen.extend(
            of_type(&body, "m.room.message")
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        from = body["end"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen, sent, "every message once, in order");
}

#[tokio::test]
async fn events_carry_typing_receipts_presence_and_account_data() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let event = send_text(&server, &bob, &room, "read me").await;
    let from = flush(&server, &alice).await;

    let (st, b) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&bob.user_id)
            ),
            bob.token(),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    read_receipt(&server, &bob, &room, &event).await;
    set_presence(&server, &bob, "online").await;
    put_tag(&server, &alice, &room, "work").await;
    put_my_type(&server, &alice).await;

    let body = events(&server, &alice, &format!("from={}&timeout=0", enc(&from))).await;
    let typing = of_type(&body, "m.typing");
    assert_eq!(typing.len(), 1, "{body}");
    assert_eq!(typing[0]["room_id"], room.as_str());
    assert_eq!(typing[0]["content"]["user_ids"], json!([bob.user_id]));
    let receipts = of_type(&body, "m.receipt");
    assert_eq!(receipts.len(), 1, "{body}");
    assert_eq!(receipts[0]["room_id"], room.as_str());
    assert!(
        receipts[0]["content"][&event]["m.read"][&bob.user_id]["ts"].is_number(),
        "{body}"
    );
    let presence = of_type(&body, "m.presence");
    let bobs = presence
        .iter()
        .find(|p| p["content"]["user_id"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("bob's presence: {body}"));
    assert_eq!(bobs["content"]["presence"], "online");
    assert!(bobs["content"]["last_active_ago"].is_number(), "{body}");
    let tags = of_type(&body, "m.tag");
    assert_eq!(tags.len(), 1, "{body}");
    assert_eq!(tags[0]["room_id"], room.as_str());
    assert_eq!(
        tags[0]["content"]["tags"]["work"]["order"].as_f64(),
        Some(1.0)
    );
    let data = of_type(&body, "my.type");
    assert_eq!(data.len(), 1, "{body}");
    assert_eq!(data[0]["content"]["cats_or_rats"], "cats");
    assert!(data[0].get("room_id").is_none(), "{body}");
}

#[tokio::test]
async fn reading_events_marks_the_user_online() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let visitor = guest(&server).await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("world_readable")}),
    )
    .await;
    join(&server, &bob, &room).await;
    let from = flush(&server, &alice).await;
    flush(&server, &bob).await;
    let body = events(&server, &alice, &format!("from={}&timeout=0", enc(&from))).await;
    let presence = of_type(&body, "m.presence");
    assert_eq!(presence.len(), 1, "{body}");
    assert_eq!(presence[0]["content"]["user_id"], bob.user_id.as_str());
    assert_eq!(presence[0]["content"]["presence"], "online");
    // Once: reading again changes nothing.
    let end = body["end"].as_str().unwrap();
    flush(&server, &bob).await;
    let again = events(&server, &alice, &format!("from={}&timeout=0", enc(end))).await;
    assert_eq!(chunk(&again).len(), 0, "{again}");
    // Unavailable stays unavailable.
    set_presence(&server, &bob, "unavailable").await;
    flush(&server, &bob).await;
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id));
    let (st, status) = server.get(&path, bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["presence"], "unavailable");
    // A refused request changes nothing.
    let carol = server.user("carol").await;
    let resp = server
        .get("/_matrix/client/r0/events?from=nonsense", carol.token())
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&carol.user_id));
    let (st, status) = server.get(&path, carol.token()).await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["presence"], "offline");
    // A guest peeking is not marked online.
    events(
        &server,
        &visitor,
        &format!("room_id={}&timeout=0", enc(&room)),
    )
    .await;
    let path = format!(
        "/_matrix/client/v3/presence/{}/status",
        enc(&visitor.user_id)
    );
    let (st, status) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["presence"], "offline");
}

#[tokio::test]
async fn a_token_from_before_a_restart_still_catches_up() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let from = flush(&server, &alice).await;
    let id = send_text(&server, &bob, &room, "before the restart").await;
    read_receipt(&server, &bob, &room, &id).await;
    put_my_type(&server, &alice).await;
    server.restart().await;
    let body = events(&server, &alice, &format!("from={}&timeout=0", enc(&from))).await;
    assert_eq!(of_type(&body, "m.room.message")[0]["event_id"], id.as_str());
    assert_eq!(of_type(&body, "m.receipt").len(), 1, "{body}");
    assert_eq!(of_type(&body, "my.type").len(), 1, "{body}");
}

#[tokio::test]
async fn events_show_an_invite_to_the_invitee() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let from = flush(&server, &bob).await;
    let room = create_room(&server, &alice, json!({"invite": [bob.user_id]})).await;
    let body = events(&server, &bob, &format!("from={}&timeout=0", enc(&from))).await;
    let members = of_type(&body, "m.room.member");
    assert_eq!(members.len(), 1, "only the invite, nothing else: {body}");
    assert_eq!(members[0]["room_id"], room.as_str());
    assert_eq!(members[0]["state_key"], bob.user_id.as_str());
    assert_eq!(members[0]["content"]["membership"], "invite");
    assert_eq!(chunk(&body).len(), 1, "{body}");
}

#[tokio::test]
async fn events_peek_into_a_world_readable_room_only() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;
    let visitor = guest(&server).await;
    let open = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("world_readable")}),
    )
    .await;
    let closed = create_room(&server, &alice, json!({"preset": "public_chat"})).await;

    for who in [&carol, &visitor] {
        // The room's initial sync hands the stream token to start from.
        let (st, snap) = server.get(&room_path(&open, ""), who.token()).await;
        assert_eq!(st, StatusCode::OK, "{snap}");
        let from = snap["messages"]["end"].as_str().unwrap().to_owned();
        let id = send_text(&server, &alice, &open, "for everyone").await;
        send_text(&server, &alice, &closed, "members only").await;
        let body = events(
            &server,
            who,
            &format!("room_id={}&from={}&timeout=0", enc(&open), enc(&from)),
        )
        .await;
        let msgs = of_type(&body, "m.room.message");
        assert_eq!(msgs.len(), 1, "{body}");
        assert_eq!(msgs[0]["event_id"], id.as_str());

        let resp = server
            .get(
                &format!(
                    "/_matrix/client/r0/events?room_id={}&timeout=0",
                    enc(&closed)
                ),
                who.token(),
            )
            .await;
        assert_error(&resp, 403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn events_errors() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let visitor = guest(&server).await;
    let from = flush(&server, &alice).await;
    for query in [
        "from=nonsense&timeout=0".to_owned(),
        "from=t5_10&timeout=0".to_owned(),
        format!("from={}&limit=hello", enc(&from)),
        format!("from={}&limit=-2", enc(&from)),
        format!("from={}&timeout=hello", enc(&from)),
        "room_id=not-a-room&timeout=0".to_owned(),
    ] {
        let resp = server
            .get(&format!("/_matrix/client/r0/events?{query}"), alice.token())
            .await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    let resp = server
        .get(
            &format!(
                "/_matrix/client/r0/events?room_id={}&timeout=0",
                enc("!nowhere:localhost")
            ),
            alice.token(),
        )
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
    // A guest must name a room.
    let resp = server
        .get("/_matrix/client/r0/events?timeout=0", visitor.token())
        .await;
    assert_error(&resp, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let resp = server
        .get("/_matrix/client/r0/events?timeout=0", None)
        .await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn initial_sync_lists_rooms_with_state_messages_and_data() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "topic": "hello"}),
    )
    .await;
    join(&server, &bob, &room).await;
    let last = send_text(&server, &alice, &room, "newest").await;
    read_receipt(&server, &bob, &room, &last).await;
    put_tag(&server, &alice, &room, "work").await;
    put_my_type(&server, &alice).await;
    set_presence(&server, &bob, "online").await;
    let invited = create_room(&server, &bob, json!({"invite": [alice.user_id]})).await;

    let body = initial_sync(&server, &alice, "").await;
    assert!(body["end"].is_string(), "{body}");
    let r = room_in(&body, &room);
    assert_eq!(r["membership"], "join");
    assert_eq!(r["visibility"], "public");
    assert!(
        find_state(&r["state"], "m.room.create", "").is_some(),
        "{r}"
    );
    assert_eq!(
        find_state(&r["state"], "m.room.topic", "").unwrap()["content"]["topic"],
        "hello"
    );
    let msgs = r["messages"]["chunk"].as_array().unwrap();
    assert!(!msgs.is_empty() && msgs.len() <= 10, "{r}");
    assert_eq!(
        msgs.last().unwrap()["event_id"],
        last.as_str(),
        "oldest first"
    );
    assert!(r["messages"]["start"].is_string() && r["messages"]["end"].is_string());
    assert_eq!(r["account_data"][0]["type"], "m.tag", "{r}");
    assert_eq!(
        r["account_data"][0]["content"]["tags"]["work"]["order"].as_f64(),
        Some(1.0)
    );
    assert!(
        body["account_data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "my.type" && e["content"]["cats_or_rats"] == "cats"),
        "{body}"
    );
    let receipt = body["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["room_id"] == room.as_str())
        .unwrap_or_else(|| panic!("receipts: {body}"));
    assert_eq!(receipt["type"], "m.receipt");
    assert!(receipt["content"][&last]["m.read"][&bob.user_id]["ts"].is_number());
    assert!(
        body["presence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["type"] == "m.presence" && p["content"]["user_id"] == bob.user_id.as_str()),
        "{body}"
    );
    // Bob's offline again: the global initial sync leaves him out.
    set_presence(&server, &bob, "offline").await;
    let quiet = initial_sync(&server, &alice, "").await;
    assert!(
        !quiet["presence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["content"]["user_id"] == bob.user_id.as_str()),
        "{quiet}"
    );
    let inv = room_in(&body, &invited);
    assert_eq!(inv["membership"], "invite");
    assert_eq!(inv["inviter"], bob.user_id.as_str());
    assert_eq!(inv["invite"]["content"]["membership"], "invite");

    // The messages' end continues as an /events token.
    let end = r["messages"]["end"].as_str().unwrap();
    let id = send_text(&server, &bob, &room, "later").await;
    let next = events(&server, &alice, &format!("from={}&timeout=0", enc(end))).await;
    assert_eq!(of_type(&next, "m.room.message")[0]["event_id"], id.as_str());

    let body = initial_sync(&server, &alice, "limit=0").await;
    assert_eq!(room_in(&body, &room)["messages"]["chunk"], json!([]));
    let body = initial_sync(&server, &alice, "limit=2").await;
    assert_eq!(
        room_in(&body, &room)["messages"]["chunk"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn initial_sync_shows_left_rooms_only_when_archived() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "before").await;
    leave(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "after").await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "after"}),
    )
    .await;

    let body = initial_sync(&server, &bob, "").await;
    assert_eq!(body["rooms"], json!([]), "{body}");
    let body = initial_sync(&server, &bob, "archived=true&limit=2").await;
    let r = room_in(&body, &room);
    assert_eq!(r["membership"], "leave");
    let msgs = r["messages"]["chunk"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{r}");
    assert_eq!(msgs[0]["content"]["body"], "before");
    assert_eq!(msgs[1]["content"]["membership"], "leave");
    assert!(find_state(&r["state"], "m.room.topic", "").is_none(), "{r}");

    // The same room alone.
    let (st, one) = server.get(&room_path(&room, "limit=2"), bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{one}");
    assert_eq!(one["membership"], "leave");
    assert_eq!(
        event_ids(&one["messages"]["chunk"]),
        event_ids(&r["messages"]["chunk"])
    );
    assert_eq!(one["presence"], json!([]));
    assert_eq!(one["receipts"], json!([]));
}

#[tokio::test]
async fn initial_sync_errors() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let visitor = guest(&server).await;
    for query in ["limit=hello", "limit=-1", "archived=maybe"] {
        let resp = server
            .get(
                &format!("/_matrix/client/v3/initialSync?{query}"),
                alice.token(),
            )
            .await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    let resp = server
        .get("/_matrix/client/v3/initialSync", visitor.token())
        .await;
    assert_error(&resp, 403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn room_initial_sync_for_members_and_world_readable_rooms() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;
    let visitor = guest(&server).await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    send_text(&server, &alice, &room, "private").await;

    let (st, body) = server.get(&room_path(&room, ""), alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["membership"], "join");
    assert!(body["messages"]["chunk"].as_array().unwrap().len() > 1);
    assert!(find_state(&body["state"], "m.room.join_rules", "").is_some());
    assert!(body["receipts"].is_array(), "{body}");
    // Every member's presence, offline when never set.
    let presence = body["presence"].as_array().unwrap();
    assert_eq!(presence.len(), 1, "{body}");
    assert_eq!(presence[0]["type"], "m.presence");
    assert_eq!(presence[0]["content"]["user_id"], alice.user_id.as_str());
    assert_eq!(presence[0]["content"]["presence"], "offline");
    assert_eq!(body["account_data"], json!([]));

    for who in [&carol, &visitor] {
        let resp = server.get(&room_path(&room, ""), who.token()).await;
        assert_error(&resp, 403, "M_FORBIDDEN");
    }
    set_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    send_text(&server, &alice, &room, "public").await;
    for who in [&carol, &visitor] {
        let (st, body) = server.get(&room_path(&room, ""), who.token()).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let msgs = body["messages"]["chunk"].as_array().unwrap();
        assert_eq!(msgs.len(), 2, "only what a non-member may see: {body}");
        assert_eq!(msgs[0]["type"], "m.room.history_visibility");
        assert_eq!(msgs[1]["content"]["body"], "public");
        assert!(body.get("membership").is_none(), "peeking: {body}");
    }
    let resp = server
        .get(&room_path("!nowhere:localhost", ""), alice.token())
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
    let resp = server.get(&room_path("nonsense", ""), alice.token()).await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let resp = server
        .get(&room_path(&room, "limit=hello"), alice.token())
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let (st, body) = server
        .get(&room_path(&room, "limit=0"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["messages"]["chunk"], json!([]));
}

#[tokio::test]
async fn one_event_by_id() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let id = send_text(&server, &alice, &room, "by id").await;
    let path = format!("/_matrix/client/r0/events/{}", enc(&id));
    let (st, body) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["event_id"], id.as_str());
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["content"]["body"], "by id");
    // Not in the room: as if it did not exist.
    assert_error(&server.get(&path, carol.token()).await, 404, "M_NOT_FOUND");
    let missing = format!("/_matrix/client/v3/events/{}", enc("$nothing"));
    assert_error(
        &server.get(&missing, alice.token()).await,
        404,
        "M_NOT_FOUND",
    );
}
