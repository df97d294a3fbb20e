//! Reading rooms: GET /event, /state, /members, /joined_members,
//! /joined_rooms, /messages, /context, and history visibility on those reads.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn filter_param(filter: Value) -> String {
    enc(&filter.to_string())
}

// ---------------------------------------------------------------------------
// GET /event
// ---------------------------------------------------------------------------

#[tokio::test]
async fn event_visible_to_member_is_returned() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let id = send_text(&server, &alice, &room, "hello there").await;

    let (st, ev) = get_event(&server, &alice, &room, &id).await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["event_id"], id.as_str(), "{ev}");
    assert_eq!(ev["room_id"], room.as_str(), "{ev}");
    assert_eq!(ev["type"], "m.room.message", "{ev}");
    assert_eq!(ev["sender"], alice.user_id.as_str(), "{ev}");
    assert_eq!(ev["content"]["body"], "hello there", "{ev}");
    assert!(ev["origin_server_ts"].is_u64(), "{ev}");
    assert!(
        ev.get("state_key").is_none(),
        "a message has no state_key: {ev}"
    );
}

#[tokio::test]
async fn event_unknown_is_404() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let resp = get_event(
        &server,
        &alice,
        &room,
        "$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    )
    .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn event_of_another_room_is_404() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room_a = create_room(&server, &alice, json!({})).await;
    let room_b = create_room(&server, &alice, json!({})).await;
    let in_b = send_text(&server, &alice, &room_b, "in b").await;

    // The event exists and alice may read it, but not through room A.
    let (st, _) = get_event(&server, &alice, &room_b, &in_b).await;
    assert_eq!(st, StatusCode::OK);
    let resp = get_event(&server, &alice, &room_a, &in_b).await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn event_not_visible_to_non_member_is_404() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let id = send_text(&server, &alice, &room, "secret").await;

    let resp = get_event(&server, &bob, &room, &id).await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}

// ---------------------------------------------------------------------------
// GET /state
// ---------------------------------------------------------------------------

#[tokio::test]
async fn state_lists_current_state_events() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "The Room", "topic": "first"}),
    )
    .await;
    let topic_id = set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "second"}),
    )
    .await;

    let (st, state) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state", enc(&room)),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{state}");
    let list = state.as_array().expect("state is an array");
    for (ty, key) in [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", alice.user_id.as_str()),
    ] {
        let ev = find_state(&state, ty, key).unwrap_or_else(|| panic!("{ty} missing: {state}"));
        assert!(ev["event_id"].is_string(), "{ev}");
        assert_eq!(ev["room_id"], room.as_str(), "{ev}");
        assert!(ev["sender"].is_string(), "{ev}");
        assert!(ev["content"].is_object(), "{ev}");
    }
    // Only the current topic, once.
    let topics: Vec<&Value> = list
        .iter()
        .filter(|e| e["type"] == "m.room.topic")
        .collect();
    assert_eq!(topics.len(), 1, "{state}");
    assert_eq!(topics[0]["event_id"], topic_id.as_str());
    assert_eq!(topics[0]["content"]["topic"], "second");
    assert_eq!(
        find_state(&state, "m.room.name", "").unwrap()["content"]["name"],
        "The Room"
    );
    // No (type, state_key) twice.
    let keys: HashSet<(String, String)> = list
        .iter()
        .map(|e| (e["type"].to_string(), e["state_key"].to_string()))
        .collect();
    assert_eq!(keys.len(), list.len(), "duplicate state entries: {state}");
}

#[tokio::test]
async fn state_for_key_returns_content_or_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"name": "Named"})).await;
    let base = format!("/_matrix/client/v3/rooms/{}/state", enc(&room));

    let (st, content) = server
        .get(&format!("{base}/m.room.name/"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{content}");
    assert_eq!(content, json!({"name": "Named"}));

    // Without the trailing slash: the empty state key too.
    let (st, content) = server
        .get(&format!("{base}/m.room.name"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{content}");
    assert_eq!(content["name"], "Named");

    let (st, ev) = server
        .get(&format!("{base}/m.room.name/?format=event"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["type"], "m.room.name", "{ev}");
    assert_eq!(ev["state_key"], "", "{ev}");
    assert_eq!(ev["content"]["name"], "Named", "{ev}");
    assert!(ev["event_id"].is_string(), "{ev}");
    assert_eq!(ev["room_id"], room.as_str(), "{ev}");
    assert_eq!(ev["sender"], alice.user_id.as_str(), "{ev}");

    let (st, member) = server
        .get(
            &format!("{base}/m.room.member/{}", enc(&alice.user_id)),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{member}");
    assert_eq!(member["membership"], "join", "{member}");
}

#[tokio::test]
async fn state_for_missing_key_is_404() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let base = format!("/_matrix/client/v3/rooms/{}/state", enc(&room));
    let resp = server
        .get(&format!("{base}/m.room.avatar/"), alice.token())
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
    let resp = server
        .get(
            &format!("{base}/m.room.member/{}", enc("@nobody:test.local")),
            alice.token(),
        )
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn state_and_members_forbidden_to_non_member() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "private_chat", "name": "x"}),
    )
    .await;
    let base = format!("/_matrix/client/v3/rooms/{}", enc(&room));

    for path in [
        format!("{base}/state"),
        format!("{base}/state/m.room.name/"),
        format!("{base}/state/m.room.create/?format=event"),
        format!("{base}/members"),
        format!("{base}/joined_members"),
    ] {
        let resp = server.get(&path, bob.token()).await;
        assert_error(&resp, 403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn state_after_leaving_is_the_state_at_leave() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "topic": "old topic"}),
    )
    .await;
    join(&server, &bob, &room).await;
    leave(&server, &bob, &room).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "new topic"}),
    )
    .await;
    let base = format!("/_matrix/client/v3/rooms/{}/state", enc(&room));

    let (st, topic) = server
        .get(&format!("{base}/m.room.topic/"), bob.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{topic}");
    assert_eq!(topic["topic"], "old topic");

    let (st, all) = server.get(&base, bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{all}");
    assert_eq!(
        find_state(&all, "m.room.topic", "").expect("topic")["content"]["topic"],
        "old topic"
    );
    assert_eq!(
        find_state(&all, "m.room.member", &bob.user_id).expect("bob's member event")["content"]["membership"],
        "leave"
    );

    // Alice, still joined, sees the current topic.
    let (_, topic) = server
        .get(&format!("{base}/m.room.topic/"), alice.token())
        .await;
    assert_eq!(topic["topic"], "new topic");
}

// ---------------------------------------------------------------------------
// /members, /joined_members, /joined_rooms
// ---------------------------------------------------------------------------

fn chunk_members(body: &Value) -> HashSet<String> {
    member_keys(&body["chunk"])
}

#[tokio::test]
async fn members_with_membership_filters() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    invite(&server, &alice, &room, &carol.user_id).await;
    join(&server, &dave, &room).await;
    leave(&server, &dave, &room).await;
    let base = format!("/_matrix/client/v3/rooms/{}/members", enc(&room));
    let set = |v: &[&Session]| -> HashSet<String> { v.iter().map(|s| s.user_id.clone()).collect() };

    let (st, all) = server.get(&base, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{all}");
    for ev in all["chunk"].as_array().expect("chunk") {
        assert_eq!(ev["type"], "m.room.member", "{ev}");
        assert!(ev["event_id"].is_string(), "{ev}");
    }
    assert_eq!(chunk_members(&all), set(&[&alice, &bob, &carol, &dave]));

    let (_, joined) = server
        .get(&format!("{base}?membership=join"), alice.token())
        .await;
    assert_eq!(chunk_members(&joined), set(&[&alice, &bob]), "{joined}");

    let (_, invited) = server
        .get(&format!("{base}?membership=invite"), alice.token())
        .await;
    assert_eq!(chunk_members(&invited), set(&[&carol]), "{invited}");

    let (_, not_joined) = server
        .get(&format!("{base}?not_membership=join"), alice.token())
        .await;
    assert_eq!(
        chunk_members(&not_joined),
        set(&[&carol, &dave]),
        "{not_joined}"
    );

    let (_, not_left) = server
        .get(&format!("{base}?not_membership=leave"), alice.token())
        .await;
    assert_eq!(
        chunk_members(&not_left),
        set(&[&alice, &bob, &carol]),
        "{not_left}"
    );
}

#[tokio::test]
async fn members_at_a_sync_token_before_a_join() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    send_text(&server, &alice, &room, "before bob").await;
    let token = sync_token(&server, &alice).await;
    join(&server, &bob, &room).await;
    send_text(&server, &bob, &room, "bob is here").await;
    let base = format!("/_matrix/client/v3/rooms/{}/members", enc(&room));

    let (st, then) = server
        .get(&format!("{base}?at={}", enc(&token)), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{then}");
    let then = chunk_members(&then);
    assert!(then.contains(&alice.user_id), "{then:?}");
    assert!(
        !then.contains(&bob.user_id),
        "bob joined after `at`: {then:?}"
    );

    let (_, now) = server.get(&base, alice.token()).await;
    assert!(chunk_members(&now).contains(&bob.user_id), "{now}");
}

#[tokio::test]
async fn joined_members_shape_with_display_names() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (st, b) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&bob.user_id)
            ),
            bob.token(),
            json!({"displayname": "Bobby Tables"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    invite(&server, &alice, &room, &carol.user_id).await;

    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)),
            bob.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let joined = body["joined"].as_object().expect("joined object");
    let keys: HashSet<&str> = joined.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        HashSet::from([alice.user_id.as_str(), bob.user_id.as_str()]),
        "invited carol is not joined: {body}"
    );
    assert_eq!(
        joined[&bob.user_id]["display_name"], "Bobby Tables",
        "{body}"
    );
    // Display names default to the localpart.
    assert_eq!(joined[&alice.user_id]["display_name"], "alice", "{body}");
}

#[tokio::test]
async fn joined_rooms_lists_only_joined_rooms() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let r1 = create_room(&server, &alice, json!({})).await;
    let r2 = create_room(&server, &alice, json!({})).await;
    let bobs = create_room(&server, &bob, json!({"preset": "public_chat"})).await;
    let invited = create_room(&server, &bob, json!({})).await;
    invite(&server, &bob, &invited, &alice.user_id).await;
    join(&server, &alice, &bobs).await;
    leave(&server, &alice, &r2).await;

    let (st, body) = server
        .get("/_matrix/client/v3/joined_rooms", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let rooms: HashSet<&str> = body["joined_rooms"]
        .as_array()
        .expect("joined_rooms")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(rooms, HashSet::from([r1.as_str(), bobs.as_str()]), "{body}");

    let (_, body) = server
        .get("/_matrix/client/v3/joined_rooms", bob.token())
        .await;
    assert_eq!(body["joined_rooms"].as_array().unwrap().len(), 2, "{body}");
}

// ---------------------------------------------------------------------------
// /messages
// ---------------------------------------------------------------------------

#[tokio::test]
async fn messages_backwards_without_from_is_newest_first() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 1..=3 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
    }
    let page = messages_ok(&server, &alice, &room, "dir=b&limit=3").await;
    assert_eq!(bodies(&page["chunk"]), ["m3", "m2", "m1"], "{page}");
    assert_eq!(page["chunk"].as_array().unwrap().len(), 3, "{page}");
    // The room's creation events are further back, so there is more.
    assert!(page["end"].is_string(), "{page}");
}

#[tokio::test]
async fn messages_default_limit_is_ten() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..15 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
    }
    let page = messages_ok(&server, &alice, &room, "dir=b").await;
    let expected: Vec<String> = (5..15).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&page["chunk"]), expected, "{page}");
    assert_eq!(page["chunk"].as_array().unwrap().len(), 10, "{page}");
}

#[tokio::test]
async fn messages_paginate_backwards_through_everything() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..25 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
    }

    let mut all: Vec<Value> = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 20, "pagination does not end");
        let q = match &from {
            Some(f) => format!("dir=b&limit=10&from={}", enc(f)),
            None => "dir=b&limit=10".to_owned(),
        };
        let page = messages_ok(&server, &alice, &room, &q).await;
        let chunk = page["chunk"].as_array().unwrap();
        assert!(chunk.len() <= 10, "page over the limit: {page}");
        all.extend(chunk.iter().cloned());
        match page.get("end").and_then(Value::as_str) {
            Some(end) => {
                assert_ne!(Some(end), from.as_deref(), "end did not move: {page}");
                from = Some(end.to_owned());
            }
            None => break,
        }
    }
    let all = Value::Array(all);
    let expected: Vec<String> = (0..25).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(
        bodies(&all),
        expected,
        "no gaps, no duplicates, newest first"
    );
    let ids = event_ids(&all);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate events across pages");
    // The whole room, down to its first event.
    let last = all.as_array().unwrap().last().unwrap();
    assert_eq!(last["type"], "m.room.create", "{last}");
    assert!(pages >= 3, "25 messages at 10 a page take at least 3 pages");
}

#[tokio::test]
async fn messages_forwards_from_the_start() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..12 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
    }

    let first = messages_ok(&server, &alice, &room, "dir=f&limit=5").await;
    let chunk = first["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 5, "{first}");
    assert_eq!(chunk[0]["type"], "m.room.create", "oldest first: {first}");
    assert_eq!(chunk[1]["type"], "m.room.member", "{first}");

    let mut all: Vec<Value> = chunk.clone();
    let mut from = first["end"].as_str().expect("end").to_owned();
    for _ in 0..20 {
        let page = messages_ok(
            &server,
            &alice,
            &room,
            &format!("dir=f&limit=5&from={}", enc(&from)),
        )
        .await;
        all.extend(page["chunk"].as_array().unwrap().iter().cloned());
        match page.get("end").and_then(Value::as_str) {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    let all = Value::Array(all);
    let expected: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&all), expected);

    // The same events as paging backwards, reversed.
    let back = messages_ok(&server, &alice, &room, "dir=b&limit=100").await;
    let mut back_ids = event_ids(&back["chunk"]);
    back_ids.reverse();
    assert_eq!(event_ids(&all), back_ids);
}

#[tokio::test]
async fn messages_to_bound_stops_at_a_previous_end() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..10 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
    }

    // Backwards: the first page's `end` as `to` gives that page again.
    let page = messages_ok(&server, &alice, &room, "dir=b&limit=4").await;
    assert_eq!(bodies(&page["chunk"]), ["m9", "m8", "m7", "m6"]);
    let end = page["end"].as_str().expect("end");
    let bounded = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=50&to={}", enc(end)),
    )
    .await;
    assert_eq!(
        bodies(&bounded["chunk"]),
        ["m9", "m8", "m7", "m6"],
        "{bounded}"
    );
    assert_eq!(
        event_ids(&bounded["chunk"]),
        event_ids(&page["chunk"]),
        "{bounded}"
    );
}

#[tokio::test]
async fn messages_to_bound_forwards_stops_at_a_previous_end() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..10 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
    }
    // A forward page from the start, and its `end`.
    let page = messages_ok(&server, &alice, &room, "dir=f&limit=3").await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 3, "{page}");
    let end = page["end"].as_str().expect("end");
    // The same range again, bounded by `to`: the same three events.
    let bounded = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=50&to={}", enc(end)),
    )
    .await;
    assert_eq!(
        event_ids(&bounded["chunk"]),
        event_ids(&page["chunk"]),
        "dir=f with to=<end of a dir=f page> should give that page's events: {bounded}"
    );
}

#[tokio::test]
async fn messages_filters_types_senders_and_url() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "a1").await;
    send_text(&server, &bob, &room, "b1").await;
    send_event(&server, &bob, &room, "org.example.custom", json!({"x": 1})).await;
    send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "pic", "url": "mxc://test.local/abc"}),
    )
    .await;
    send_text(&server, &bob, &room, "b2").await;

    let q = |f: Value| format!("dir=b&limit=100&filter={}", filter_param(f));

    let only_msgs = messages_ok(
        &server,
        &alice,
        &room,
        &q(json!({"types": ["m.room.message"]})),
    )
    .await;
    let chunk = only_msgs["chunk"].as_array().unwrap();
    assert!(
        chunk.iter().all(|e| e["type"] == "m.room.message"),
        "{only_msgs}"
    );
    assert_eq!(bodies(&only_msgs["chunk"]), ["b2", "pic", "b1", "a1"]);

    let wildcard = messages_ok(
        &server,
        &alice,
        &room,
        &q(json!({"types": ["org.example.*"]})),
    )
    .await;
    let types: Vec<&Value> = wildcard["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["type"])
        .collect();
    assert_eq!(types, [&json!("org.example.custom")], "{wildcard}");

    let no_msgs = messages_ok(
        &server,
        &alice,
        &room,
        &q(json!({"not_types": ["m.room.message"]})),
    )
    .await;
    let chunk = no_msgs["chunk"].as_array().unwrap();
    assert!(
        chunk.iter().all(|e| e["type"] != "m.room.message"),
        "{no_msgs}"
    );
    assert!(
        chunk.iter().any(|e| e["type"] == "org.example.custom"),
        "{no_msgs}"
    );
    assert!(
        chunk.iter().any(|e| e["type"] == "m.room.create"),
        "{no_msgs}"
    );

    let bobs = messages_ok(
        &server,
        &alice,
        &room,
        &q(json!({"senders": [bob.user_id]})),
    )
    .await;
    let chunk = bobs["chunk"].as_array().unwrap();
    assert!(!chunk.is_empty());
    assert!(
        chunk.iter().all(|e| e["sender"] == bob.user_id.as_str()),
        "{bobs}"
    );
    assert_eq!(bodies(&bobs["chunk"]), ["b2", "b1"]);
    assert!(
        chunk.iter().any(|e| e["type"] == "org.example.custom"),
        "{bobs}"
    );

    let not_bob = messages_ok(
        &server,
        &alice,
        &room,
        &q(json!({"not_senders": [bob.user_id], "types": ["m.room.message"]})),
    )
    .await;
    assert_eq!(bodies(&not_bob["chunk"]), ["pic", "a1"], "{not_bob}");

    let with_url = messages_ok(&server, &alice, &room, &q(json!({"contains_url": true}))).await;
    assert_eq!(bodies(&with_url["chunk"]), ["pic"], "{with_url}");
    assert_eq!(with_url["chunk"].as_array().unwrap().len(), 1, "{with_url}");
}

#[tokio::test]
async fn messages_lazy_load_members_returns_senders_member_events() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    send_text(&server, &carol, &room, "c1").await;
    send_text(&server, &alice, &room, "a1").await;
    send_text(&server, &bob, &room, "b1").await;
    send_text(&server, &bob, &room, "b2").await;

    let f = json!({"lazy_load_members": true, "types": ["m.room.message"]});
    let page = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=2&filter={}", filter_param(f)),
    )
    .await;
    assert_eq!(bodies(&page["chunk"]), ["b2", "b1"], "{page}");
    let state = page.get("state").expect("state with lazy_load_members");
    let members = member_keys(state);
    assert!(members.contains(&bob.user_id), "bob's member event: {page}");
    assert!(
        !members.contains(&carol.user_id),
        "carol sent nothing in the chunk: {page}"
    );
    let bob_member = find_state(state, "m.room.member", &bob.user_id).unwrap();
    assert_eq!(bob_member["content"]["membership"], "join");

    // Without lazy loading there is no member state to speak of.
    let plain = messages_ok(&server, &alice, &room, "dir=b&limit=2").await;
    let plain_state = plain.get("state").cloned().unwrap_or(json!([]));
    assert!(member_keys(&plain_state).is_empty(), "{plain}");
}

#[tokio::test]
async fn messages_invalid_from_is_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for bad in ["notatoken", "t1_x", "tabc"] {
        let resp = messages(&server, &alice, &room, &format!("dir=b&from={}", enc(bad))).await;
        assert_eq!(resp.0, StatusCode::BAD_REQUEST, "from={bad}: {}", resp.1);
        assert!(resp.1["errcode"].is_string(), "{}", resp.1);
    }
}

#[tokio::test]
async fn messages_forbidden_to_non_member_of_shared_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    send_text(&server, &alice, &room, "hi").await;
    let resp = messages(&server, &bob, &room, "dir=b").await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------
// /context
// ---------------------------------------------------------------------------

#[tokio::test]
async fn context_around_a_middle_message() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"name": "ctx"})).await;
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
    }
    let (st, ctx) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{}?limit=4",
                enc(&room),
                enc(&ids[4])
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], ids[4].as_str(), "{ctx}");
    assert_eq!(ctx["event"]["content"]["body"], "m4");
    // Before: most recent first; after: chronological. Limit split in two.
    assert_eq!(bodies(&ctx["events_before"]), ["m3", "m2"], "{ctx}");
    assert_eq!(bodies(&ctx["events_after"]), ["m5", "m6"], "{ctx}");
    assert_eq!(ctx["events_before"].as_array().unwrap().len(), 2);
    assert_eq!(ctx["events_after"].as_array().unwrap().len(), 2);
    assert!(ctx["start"].is_string() && ctx["end"].is_string(), "{ctx}");
    let state = &ctx["state"];
    assert!(find_state(state, "m.room.create", "").is_some(), "{ctx}");
    assert!(
        find_state(state, "m.room.member", &alice.user_id).is_some(),
        "{ctx}"
    );
    assert_eq!(
        find_state(state, "m.room.name", "").expect("name")["content"]["name"],
        "ctx"
    );

    // `start` and `end` continue the pagination on either side.
    let start = ctx["start"].as_str().unwrap();
    let older = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=1&from={}", enc(start)),
    )
    .await;
    assert_eq!(bodies(&older["chunk"]), ["m1"], "{older}");
    let end = ctx["end"].as_str().unwrap();
    let newer = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=1&from={}", enc(end)),
    )
    .await;
    assert_eq!(bodies(&newer["chunk"]), ["m7"], "{newer}");
}

#[tokio::test]
async fn context_with_limit_zero_returns_only_the_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "a").await;
    let id = send_text(&server, &alice, &room, "b").await;
    send_text(&server, &alice, &room, "c").await;
    let (st, ctx) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{}?limit=0",
                enc(&room),
                enc(&id)
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], id.as_str(), "{ctx}");
    assert_eq!(ctx["events_before"], json!([]), "{ctx}");
    assert_eq!(ctx["events_after"], json!([]), "{ctx}");
}

#[tokio::test]
async fn context_of_unknown_or_invisible_event_is_404() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("joined")}),
    )
    .await;
    let hidden = send_text(&server, &alice, &room, "before bob").await;
    join(&server, &bob, &room).await;
    let path = |ev: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/context/{}",
            enc(&room),
            enc(ev)
        )
    };
    let resp = server.get(&path(&hidden), bob.token()).await;
    assert_error(&resp, 404, "M_NOT_FOUND");
    let resp = server
        .get(
            &path("$bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
            alice.token(),
        )
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}

// ---------------------------------------------------------------------------
// History visibility
// ---------------------------------------------------------------------------

async fn messages_newest_first(server: &TestServer, who: &Session, room: &str) -> Value {
    messages_ok(server, who, room, "dir=b&limit=1000").await
}

#[tokio::test]
async fn history_joined_later_joiner_sees_nothing_before_join() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("joined")}),
    )
    .await;
    let before = send_text(&server, &alice, &room, "before join").await;
    join(&server, &bob, &room).await;
    let after = send_text(&server, &alice, &room, "after join").await;

    let page = messages_newest_first(&server, &bob, &room).await;
    assert_eq!(bodies(&page["chunk"]), ["after join"], "{page}");
    // Nothing between the switch to `joined` and bob's join (what came
    // before any history_visibility event is `shared` by default).
    let full = messages_newest_first(&server, &alice, &room).await;
    let full_ids = event_ids(&full["chunk"]);
    let hv_at = full["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["content"]["history_visibility"] == "joined")
        .expect("the history_visibility event");
    let bob_join = find_state(&page["chunk"], "m.room.member", &bob.user_id)
        .expect("bob sees his own join")["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let join_at = full_ids.iter().position(|i| *i == bob_join).unwrap();
    // Newest first: the window is strictly between the join and the switch.
    let hidden: Vec<&String> = full_ids[join_at + 1..hv_at].iter().collect();
    assert!(!hidden.is_empty());
    let seen = event_ids(&page["chunk"]);
    for id in hidden {
        assert!(!seen.contains(id), "{id} is from before bob joined: {page}");
    }
    assert_eq!(seen[..2], [after.clone(), bob_join], "{page}");

    assert_error(
        &get_event(&server, &bob, &room, &before).await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        get_event(&server, &bob, &room, &after).await.0,
        StatusCode::OK
    );
    // Alice, joined all along, sees both.
    let page = messages_newest_first(&server, &alice, &room).await;
    assert_eq!(bodies(&page["chunk"]), ["after join", "before join"]);
}

#[tokio::test]
async fn history_joined_hides_events_after_leaving() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("joined")}),
    )
    .await;
    join(&server, &bob, &room).await;
    let during = send_text(&server, &alice, &room, "while bob is here").await;
    leave(&server, &bob, &room).await;
    let gone = send_text(&server, &alice, &room, "after bob left").await;

    let page = messages_newest_first(&server, &bob, &room).await;
    assert_eq!(bodies(&page["chunk"]), ["while bob is here"], "{page}");
    assert_eq!(
        get_event(&server, &bob, &room, &during).await.0,
        StatusCode::OK
    );
    assert_error(
        &get_event(&server, &bob, &room, &gone).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn history_invited_sees_from_the_invite() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let hv = set_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "invited"}),
    )
    .await;
    let pre = send_text(&server, &alice, &room, "before invite").await;
    invite(&server, &alice, &room, &bob.user_id).await;
    let invited = send_text(&server, &alice, &room, "while invited").await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "after join").await;

    let page = messages_newest_first(&server, &bob, &room).await;
    assert_eq!(
        bodies(&page["chunk"]),
        ["after join", "while invited"],
        "{page}"
    );
    // Bob sees his own invite, and nothing between the switch to `invited`
    // and the invite (the switch itself aside: `shared` before it allows it).
    let seen = event_ids(&page["chunk"]);
    let full = messages_newest_first(&server, &alice, &room).await;
    let full_ids = event_ids(&full["chunk"]);
    let invite_ev = full["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| {
            e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "invite"
        })
        .expect("the invite");
    assert!(
        seen.contains(&full_ids[invite_ev]),
        "bob sees his invite: {page}"
    );
    let hv_at = full_ids.iter().position(|i| *i == hv).unwrap();
    let hidden = &full_ids[invite_ev + 1..hv_at];
    assert!(!hidden.is_empty());
    for id in hidden {
        assert!(!seen.contains(id), "{id} is from before the invite: {page}");
    }

    assert_error(
        &get_event(&server, &bob, &room, &pre).await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        get_event(&server, &bob, &room, &invited).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn history_shared_later_joiner_sees_everything() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("shared")}),
    )
    .await;
    let before = send_text(&server, &alice, &room, "before join").await;
    // Not yet a member: nothing.
    assert_error(
        &get_event(&server, &bob, &room, &before).await,
        404,
        "M_NOT_FOUND",
    );
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "after join").await;

    let page = messages_newest_first(&server, &bob, &room).await;
    assert_eq!(
        bodies(&page["chunk"]),
        ["after join", "before join"],
        "{page}"
    );
    let last = page["chunk"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "m.room.create", "all history: {page}");
    assert_eq!(
        get_event(&server, &bob, &room, &before).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn history_shared_hides_events_after_leaving() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "while bob is here").await;
    leave(&server, &bob, &room).await;
    let gone = send_text(&server, &alice, &room, "after bob left").await;

    let page = messages_newest_first(&server, &bob, &room).await;
    let b = bodies(&page["chunk"]);
    assert!(b.contains(&"while bob is here".to_owned()), "{page}");
    assert!(!b.contains(&"after bob left".to_owned()), "{page}");
    assert_error(
        &get_event(&server, &bob, &room, &gone).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn history_world_readable_non_member_can_read() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "topic": "wr"}),
    )
    .await;
    let pre = send_text(&server, &alice, &room, "while shared").await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    let open = send_text(&server, &alice, &room, "world readable").await;

    // Carol never joined.
    let page = messages_newest_first(&server, &carol, &room).await;
    let b = bodies(&page["chunk"]);
    assert!(b.contains(&"world readable".to_owned()), "{page}");
    // What was sent while the room was `shared` stays hidden from outsiders.
    assert!(!b.contains(&"while shared".to_owned()), "{page}");
    assert_eq!(
        get_event(&server, &carol, &room, &open).await.0,
        StatusCode::OK
    );
    assert_error(
        &get_event(&server, &carol, &room, &pre).await,
        404,
        "M_NOT_FOUND",
    );

    let (st, topic) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
                enc(&room)
            ),
            carol.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{topic}");
    assert_eq!(topic["topic"], "wr");
}

#[tokio::test]
async fn history_world_readable_via_initial_state() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("world_readable")}),
    )
    .await;
    let id = send_text(&server, &alice, &room, "hello world").await;
    let page = messages_newest_first(&server, &carol, &room).await;
    assert_eq!(bodies(&page["chunk"]), ["hello world"], "{page}");
    assert_eq!(
        get_event(&server, &carol, &room, &id).await.0,
        StatusCode::OK
    );
}

/// Spec (history visibility, server behaviour): "For m.room.history_visibility
/// events themselves, the user should be allowed to see the event if the
/// history_visibility before or after the event would allow them to see it."
#[tokio::test]
async fn history_visibility_event_visible_if_setting_before_it_allows() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    // shared -> joined, before bob joins: `shared` (before) lets bob see it.
    let hv = set_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "joined"}),
    )
    .await;
    join(&server, &bob, &room).await;

    let resp = get_event(&server, &bob, &room, &hv).await;
    assert_eq!(
        resp.0,
        StatusCode::OK,
        "GET /event of the shared->joined change sent before bob joined: {}",
        resp.1
    );
    let page = messages_newest_first(&server, &bob, &room).await;
    assert!(
        event_ids(&page["chunk"]).contains(&hv),
        "the history_visibility change is in /messages: {page}"
    );
}

#[tokio::test]
async fn messages_accept_a_sync_token_as_from() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..3 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
    }
    let token = sync_token(&server, &alice).await;
    send_text(&server, &alice, &room, "m3").await;
    send_text(&server, &alice, &room, "m4").await;

    // Backwards from the sync position: what the sync had seen, newest first.
    let back = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=2&from={}", enc(&token)),
    )
    .await;
    assert_eq!(bodies(&back["chunk"]), ["m2", "m1"], "{back}");
    // Forwards from it: what came after.
    let fwd = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=10&from={}", enc(&token)),
    )
    .await;
    assert_eq!(bodies(&fwd["chunk"]), ["m3", "m4"], "{fwd}");
    assert_eq!(fwd["chunk"].as_array().unwrap().len(), 2, "{fwd}");
}

/// The spec's own example: "a user should be allowed to see
/// m.room.history_visibility events that change the history_visibility from
/// joined to world_readable, even if that user was not a member of the room."
#[tokio::test]
async fn history_visibility_event_visible_if_setting_after_it_allows() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("joined")}),
    )
    .await;
    let hidden = send_text(&server, &alice, &room, "joined only").await;
    let hv = set_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    send_text(&server, &alice, &room, "for the world").await;

    // Carol never joined.
    let resp = get_event(&server, &carol, &room, &hv).await;
    assert_eq!(
        resp.0,
        StatusCode::OK,
        "GET /event of the joined->world_readable change, as a non-member: {}",
        resp.1
    );
    let page = messages_newest_first(&server, &carol, &room).await;
    assert!(
        event_ids(&page["chunk"]).contains(&hv),
        "the change to world_readable is in /messages: {page}"
    );
    assert_eq!(bodies(&page["chunk"]), ["for the world"], "{page}");
    assert_error(
        &get_event(&server, &carol, &room, &hidden).await,
        404,
        "M_NOT_FOUND",
    );
}

/// Spec (GET /members, `at`): "This token can be obtained from a prev_batch
/// token returned for each room by the sync API."
#[tokio::test]
async fn members_at_a_sync_prev_batch() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    send_text(&server, &alice, &room, "before bob").await;
    join(&server, &bob, &room).await;
    send_text(&server, &bob, &room, "bob is here").await;

    let f = json!({"room": {"timeline": {"limit": 2}}});
    let body = sync(&server, &alice, &format!("filter={}", filter_param(f))).await;
    let timeline = &body["rooms"]["join"][&room]["timeline"];
    assert_eq!(
        timeline["events"][0]["state_key"],
        bob.user_id.as_str(),
        "the timeline starts at bob's join: {timeline}"
    );
    let prev = timeline["prev_batch"].as_str().expect("prev_batch");

    let (st, then) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/members?at={}",
                enc(&room),
                enc(prev)
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "members?at=<prev_batch {prev}>: {then}");
    let then = chunk_members(&then);
    assert!(then.contains(&alice.user_id), "{then:?}");
    assert!(
        !then.contains(&bob.user_id),
        "bob joined after prev_batch: {then:?}"
    );
}

// ---------------------------------------------------------------------------
// GET /v1/rooms/{roomId}/timestamp_to_event
// ---------------------------------------------------------------------------

/// The closest visible event at or before (`dir=b`) or at or after
/// (`dir=f`) a time; 404 `M_NOT_FOUND` when none; history visibility
/// applies; bad parameters and non-members refused.
#[tokio::test]
async fn timestamp_to_event() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    set_history_visibility(&server, &alice, &room, "joined").await;
    let start = server.now_ms();
    server.advance(std::time::Duration::from_secs(10));
    let first = send_text(&server, &alice, &room, "first").await;
    server.advance(std::time::Duration::from_secs(10));
    join(&server, &bob, &room).await;
    server.advance(std::time::Duration::from_secs(10));
    let second = send_text(&server, &alice, &room, "second").await;
    let at = |ts: i64, dir: &str| {
        format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}",
            enc(&room)
        )
    };
    let ask = async |who: &Session, ts: i64, dir: &str| server.get(&at(ts, dir), who.token()).await;

    let (st, body) = ask(&alice, start + 15_000, "b").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"event_id": first, "origin_server_ts": start + 10_000})
    );
    let (st, body) = ask(&alice, start + 15_000, "f").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body["origin_server_ts"],
        start + 20_000,
        "bob's join: {body}"
    );
    // The time itself counts, both ways.
    assert_eq!(ask(&alice, start + 30_000, "b").await.1["event_id"], second);
    assert_eq!(ask(&alice, start + 30_000, "f").await.1["event_id"], second);
    // The room's first event, from long before.
    let (_, body) = ask(&alice, 0, "f").await;
    let created = body["origin_server_ts"].as_i64().expect("a timestamp");
    assert!(created >= start && created < start + 10_000, "{body}");
    assert_error(&ask(&alice, start + 40_000, "f").await, 404, "M_NOT_FOUND");
    assert_error(&ask(&alice, start - 1, "b").await, 404, "M_NOT_FOUND");

    // Bob joined after "first": history visibility `joined` hides it (the
    // answer is from before the room went `joined`, when it was `shared`,
    // which members see), but not his own join.
    let (st, body) = ask(&bob, start + 15_000, "b").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_ne!(body["event_id"], first);
    assert!(
        body["origin_server_ts"].as_i64() < Some(start + 10_000),
        "{body}"
    );
    assert_eq!(
        ask(&bob, start + 25_000, "b").await.1["origin_server_ts"],
        start + 20_000
    );
    assert_eq!(ask(&bob, start + 25_000, "f").await.1["event_id"], second);

    // Not in the room: 403.
    let carol = server.user("carol").await;
    assert_error(&ask(&carol, start, "f").await, 403, "M_FORBIDDEN");
    // Bad or missing parameters: 400.
    for query in ["ts=1&dir=x", "ts=x&dir=f", "dir=f", "ts=1"] {
        let path = format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?{query}",
            enc(&room)
        );
        let (st, body) = server.get(&path, alice.token()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    assert_error(
        &server.get(&at(start, "f"), None).await,
        401,
        "M_MISSING_TOKEN",
    );
}
