//! GET /sync: initial and incremental syncs, long-polling, filters,
//! lazy-loading members, invites/joins/leaves, summaries, transaction ids and
//! prev_batch.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// The stream position in a `s{pos}` sync token (the contract's format).
fn token_pos(token: &str) -> i64 {
    token
        .strip_prefix('s')
        .and_then(|t| t.split('_').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not an s-token: {token}"))
}

fn section_is_empty(body: &Value, section: &str) -> bool {
    match body["rooms"].get(section) {
        None | Some(Value::Null) => true,
        Some(v) => v.as_object().is_none_or(|m| m.is_empty()),
    }
}

/// rooms.join[room], asserting it is there.
fn joined<'a>(body: &'a Value, room: &str) -> &'a Value {
    body["rooms"]["join"]
        .get(room)
        .unwrap_or_else(|| panic!("{room} not in rooms.join: {body}"))
}

fn q_filter(filter: Value) -> String {
    format!("filter={}", enc(&filter.to_string()))
}

// ---------------------------------------------------------------------------
// Shape, state, incremental
// ---------------------------------------------------------------------------

#[tokio::test]
async fn initial_sync_shape() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"name": "Sync me", "topic": "t"})).await;
    let msg = send_text(&server, &alice, &room, "hello").await;

    let body = sync(&server, &alice, "").await;
    assert!(body["next_batch"].is_string(), "{body}");
    let r = joined(&body, &room);
    let timeline = &r["timeline"];
    assert!(timeline["events"].is_array(), "{r}");
    assert!(timeline["limited"].is_boolean(), "{r}");
    assert!(timeline["prev_batch"].is_string(), "{r}");
    assert!(r["state"]["events"].is_array(), "{r}");
    assert!(r["summary"].is_object(), "{r}");
    assert_eq!(r["unread_notifications"]["highlight_count"], 0, "{r}");
    assert_eq!(r["unread_notifications"]["notification_count"], 0, "{r}");
    assert!(r["ephemeral"]["events"].is_array(), "{r}");
    assert!(r["account_data"]["events"].is_array(), "{r}");

    let events = timeline["events"].as_array().unwrap();
    let last = events.last().expect("timeline not empty");
    assert_eq!(last["event_id"], msg.as_str(), "newest last: {r}");
    assert_eq!(last["content"]["body"], "hello");
    assert_eq!(last["room_id"], room.as_str(), "{last}");
    assert!(last["origin_server_ts"].is_u64(), "{last}");
    assert!(last["sender"].is_string(), "{last}");

    // State and timeline together describe the whole room.
    let mut all = r["state"]["events"].as_array().unwrap().clone();
    all.extend(events.iter().cloned());
    let all = Value::Array(all);
    for ty in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.name",
        "m.room.topic",
    ] {
        assert!(find_state(&all, ty, "").is_some(), "{ty} missing: {r}");
    }
    assert!(
        find_state(&all, "m.room.member", &alice.user_id).is_some(),
        "{r}"
    );
    // A room with nothing else in it is not in the other sections.
    assert!(body["rooms"]["invite"].get(&room).is_none(), "{body}");
    assert!(body["rooms"]["leave"].get(&room).is_none(), "{body}");
}

#[tokio::test]
async fn initial_sync_state_is_state_at_timeline_start() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"topic": "t1"})).await;
    for k in ["k1", "k2", "k3", "k4"] {
        set_state(&server, &alice, &room, "org.example.s", k, json!({"v": k})).await;
    }
    // The last two events: a topic change and one more custom state event.
    let topic2 = set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "t2"}),
    )
    .await;
    let k5 = set_state(
        &server,
        &alice,
        &room,
        "org.example.s",
        "k5",
        json!({"v": "k5"}),
    )
    .await;

    let f = json!({"room": {"timeline": {"limit": 2}}});
    let body = sync(&server, &alice, &q_filter(f)).await;
    let r = joined(&body, &room);
    assert_eq!(
        event_ids(&r["timeline"]["events"]),
        [topic2.clone(), k5.clone()],
        "{r}"
    );
    assert_eq!(r["timeline"]["limited"], true, "{r}");

    let state = &r["state"]["events"];
    for k in ["k1", "k2", "k3", "k4"] {
        let ev = find_state(state, "org.example.s", k).unwrap_or_else(|| panic!("{k}: {r}"));
        assert_eq!(ev["content"]["v"], k);
    }
    for ty in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
    ] {
        assert!(find_state(state, ty, "").is_some(), "{ty}: {r}");
    }
    assert!(
        find_state(state, "m.room.member", &alice.user_id).is_some(),
        "{r}"
    );
    // State at the start of the timeline: the old topic, and not k5.
    assert_eq!(
        find_state(state, "m.room.topic", "").expect("topic")["content"]["topic"],
        "t1",
        "{r}"
    );
    assert!(find_state(state, "org.example.s", "k5").is_none(), "{r}");
    let state_ids = event_ids(state);
    assert!(
        !state_ids.contains(&topic2) && !state_ids.contains(&k5),
        "{r}"
    );
}

#[tokio::test]
async fn incremental_sync_returns_only_new_events() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "old").await;
    let t1 = sync_token(&server, &alice).await;

    send_text(&server, &alice, &room, "m1").await;
    send_text(&server, &alice, &room, "m2").await;
    let body = sync(&server, &alice, &format!("since={}&timeout=0", enc(&t1))).await;
    let r = joined(&body, &room);
    assert_eq!(bodies(&r["timeline"]["events"]), ["m1", "m2"], "{r}");
    assert_eq!(
        r["timeline"]["events"].as_array().unwrap().len(),
        2,
        "only the new: {r}"
    );
    assert_eq!(r["timeline"]["limited"], false, "{r}");
    assert_eq!(r["state"]["events"], json!([]), "no state changed: {r}");
    let t2 = next_batch(&body);
    assert!(token_pos(&t2) > token_pos(&t1), "{t1} -> {t2}");

    send_text(&server, &alice, &room, "m3").await;
    let body = sync(&server, &alice, &format!("since={}&timeout=0", enc(&t2))).await;
    let r = joined(&body, &room);
    assert_eq!(bodies(&r["timeline"]["events"]), ["m3"], "{r}");
    assert_eq!(r["timeline"]["events"].as_array().unwrap().len(), 1, "{r}");
}

#[tokio::test]
async fn incremental_sync_with_a_gap_has_the_state_changes() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"topic": "before"})).await;
    let t1 = sync_token(&server, &alice).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "in the gap"}),
    )
    .await;
    for i in 0..5 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
    }
    let f = json!({"room": {"timeline": {"limit": 2}}});
    let body = sync(
        &server,
        &alice,
        &format!("since={}&{}", enc(&t1), q_filter(f)),
    )
    .await;
    let r = joined(&body, &room);
    assert_eq!(bodies(&r["timeline"]["events"]), ["m3", "m4"], "{r}");
    assert_eq!(r["timeline"]["limited"], true, "{r}");
    let state = &r["state"]["events"];
    assert_eq!(
        find_state(state, "m.room.topic", "").expect("topic changed in the gap")["content"]["topic"],
        "in the gap",
        "{r}"
    );
    // Only what changed: not the unchanged creation state.
    assert!(find_state(state, "m.room.create", "").is_none(), "{r}");
}

#[tokio::test]
async fn empty_incremental_sync_has_no_rooms() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "x").await;
    let t1 = sync_token(&server, &alice).await;

    let body = sync(&server, &alice, &format!("since={}&timeout=0", enc(&t1))).await;
    assert!(token_pos(&next_batch(&body)) >= token_pos(&t1), "{body}");
    assert!(section_is_empty(&body, "join"), "{body}");
    assert!(section_is_empty(&body, "invite"), "{body}");
    assert!(section_is_empty(&body, "leave"), "{body}");
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_an_event_arrives() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let t1 = sync_token(&server, &alice).await;

    let started = Instant::now();
    let poll = spawn_poll(&server, &alice, &t1, 10000);
    server.wait_for_parked_syncs(1).await;
    assert!(
        !poll.is_finished(),
        "the long-poll returned before anything happened"
    );
    let id = send_text(&server, &bob, &room, "wake up").await;

    let (status, body, done) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("long-poll finishes")
        .expect("task");
    let elapsed = done.duration_since(started);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        elapsed < Duration::from_secs(3),
        "long-poll took {elapsed:?}; it should wake when the event arrives"
    );
    let r = joined(&body, &room);
    assert!(event_ids(&r["timeline"]["events"]).contains(&id), "{r}");
}

#[tokio::test]
async fn long_poll_times_out_empty() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    create_room(&server, &alice, json!({})).await;
    let t1 = sync_token(&server, &alice).await;

    let started = Instant::now();
    let body = sync(&server, &alice, &format!("since={}&timeout=1500", enc(&t1))).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400),
        "returned after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(6),
        "returned after {elapsed:?}"
    );
    assert!(section_is_empty(&body, "join"), "{body}");
    assert!(token_pos(&next_batch(&body)) >= token_pos(&t1), "{body}");
}

#[tokio::test]
async fn full_state_on_incremental_sync_returns_all_state() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"name": "full"})).await;
    send_text(&server, &alice, &room, "x").await;
    let t1 = sync_token(&server, &alice).await;

    let body = sync(
        &server,
        &alice,
        &format!("since={}&full_state=true&timeout=0", enc(&t1)),
    )
    .await;
    let r = joined(&body, &room);
    let state = &r["state"]["events"];
    for ty in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.name",
    ] {
        assert!(find_state(state, ty, "").is_some(), "{ty}: {r}");
    }
    assert!(
        find_state(state, "m.room.member", &alice.user_id).is_some(),
        "{r}"
    );

    // Without full_state, nothing.
    let body = sync(&server, &alice, &format!("since={}&timeout=0", enc(&t1))).await;
    assert!(section_is_empty(&body, "join"), "{body}");
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

async fn room_for_filters(server: &TestServer, alice: &Session) -> String {
    let room = create_room(server, alice, json!({"name": "filtered"})).await;
    for i in 0..5 {
        send_text(server, alice, &room, &format!("m{i}")).await;
    }
    room
}

#[tokio::test]
async fn inline_filter_applies_timeline_limit_and_types() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = room_for_filters(&server, &alice).await;

    let f = json!({"room": {"timeline": {"limit": 3, "types": ["m.room.message"]}}});
    let body = sync(&server, &alice, &q_filter(f)).await;
    let r = joined(&body, &room);
    let events = r["timeline"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{r}");
    assert!(events.iter().all(|e| e["type"] == "m.room.message"), "{r}");
    assert_eq!(bodies(&r["timeline"]["events"]), ["m2", "m3", "m4"]);
    assert_eq!(r["timeline"]["limited"], true, "{r}");

    // Types only: no state events in the timeline, even with room for them.
    let f = json!({"room": {"timeline": {"limit": 50, "types": ["m.room.message"]}}});
    let body = sync(&server, &alice, &q_filter(f)).await;
    let r = joined(&body, &room);
    let events = r["timeline"]["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["type"] == "m.room.message"), "{r}");
    assert_eq!(
        bodies(&r["timeline"]["events"]),
        ["m0", "m1", "m2", "m3", "m4"]
    );
}

#[tokio::test]
async fn stored_filter_applies_timeline_limit_and_types() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = room_for_filters(&server, &alice).await;
    let (st, created) = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)),
            alice.token(),
            json!({"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let id = created["filter_id"].as_str().expect("filter_id");

    let body = sync(&server, &alice, &format!("filter={}", enc(id))).await;
    let r = joined(&body, &room);
    assert_eq!(bodies(&r["timeline"]["events"]), ["m3", "m4"], "{r}");
    assert_eq!(r["timeline"]["events"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["timeline"]["limited"], true, "{r}");

    // A state filter by type through the stored filter as well.
    let (_, created) = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)),
            alice.token(),
            json!({"room": {"timeline": {"limit": 1}, "state": {"types": ["m.room.name"]}}}),
        )
        .await;
    let id = created["filter_id"].as_str().expect("filter_id");
    let body = sync(&server, &alice, &format!("filter={}", enc(id))).await;
    let r = joined(&body, &room);
    let state = r["state"]["events"].as_array().unwrap();
    assert_eq!(state.len(), 1, "only m.room.name: {r}");
    assert_eq!(state[0]["type"], "m.room.name", "{r}");
}

#[tokio::test]
async fn unknown_filter_id_is_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let resp = server
        .get("/_matrix/client/v3/sync?filter=12345", alice.token())
        .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);
    assert_error(&resp, 400, "M_INVALID_PARAM");

    // Another user's filter id is not alice's.
    let (st, created) = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&bob.user_id)),
            bob.token(),
            json!({"room": {"timeline": {"limit": 1}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let id = created["filter_id"].as_str().unwrap();
    // Make sure alice has no filter with the same id.
    let resp = server
        .get(
            &format!("/_matrix/client/v3/sync?filter={}", enc(id)),
            alice.token(),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn lazy_load_members_limits_member_state() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    send_text(&server, &carol, &room, "c").await;
    send_text(&server, &bob, &room, "b1").await;
    send_text(&server, &bob, &room, "b2").await;

    let f = json!({"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": true}}});
    let body = sync(&server, &alice, &q_filter(f)).await;
    let r = joined(&body, &room);
    assert_eq!(bodies(&r["timeline"]["events"]), ["b1", "b2"], "{r}");
    let members = member_keys(&r["state"]["events"]);
    assert_eq!(
        members,
        HashSet::from([alice.user_id.clone(), bob.user_id.clone()]),
        "only the timeline's senders and the syncing user: {r}"
    );
    // Non-member state is still all there.
    assert!(
        find_state(&r["state"]["events"], "m.room.create", "").is_some(),
        "{r}"
    );

    // Without lazy-loading carol is in the state too.
    let f = json!({"room": {"timeline": {"limit": 2}}});
    let body = sync(&server, &alice, &q_filter(f)).await;
    let members = member_keys(&joined(&body, &room)["state"]["events"]);
    assert!(members.contains(&carol.user_id), "{body}");
}

// ---------------------------------------------------------------------------
// Invites, joins, leaves
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invite_appears_in_rooms_invite_then_join_moves_it() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "Invitational", "preset": "private_chat"}),
    )
    .await;
    let t0 = sync_token(&server, &bob).await;
    invite(&server, &alice, &room, &bob.user_id).await;

    let body = sync(&server, &bob, &format!("since={}&timeout=0", enc(&t0))).await;
    let inv = body["rooms"]["invite"]
        .get(&room)
        .unwrap_or_else(|| panic!("not in rooms.invite: {body}"));
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");
    let events = &inv["invite_state"]["events"];
    let me = find_state(events, "m.room.member", &bob.user_id).unwrap_or_else(|| panic!("{inv}"));
    assert_eq!(me["content"]["membership"], "invite", "{inv}");
    assert_eq!(me["sender"], alice.user_id.as_str(), "{inv}");
    let inviter =
        find_state(events, "m.room.member", &alice.user_id).unwrap_or_else(|| panic!("{inv}"));
    assert_eq!(inviter["content"]["membership"], "join", "{inv}");
    assert!(find_state(events, "m.room.create", "").is_some(), "{inv}");
    assert_eq!(
        find_state(events, "m.room.name", "").expect("name")["content"]["name"],
        "Invitational"
    );
    // An initial sync shows the invite too.
    let body0 = sync(&server, &bob, "").await;
    assert!(body0["rooms"]["invite"].get(&room).is_some(), "{body0}");

    let t1 = next_batch(&body);
    join(&server, &bob, &room).await;
    let body = sync(&server, &bob, &format!("since={}&timeout=0", enc(&t1))).await;
    let r = joined(&body, &room);
    assert!(body["rooms"]["invite"].get(&room).is_none(), "{body}");
    // The newly joined room comes as on an initial sync, so the timeline may
    // hold the invite too; bob's latest member event in it is the join.
    let join_ev = r["timeline"]["events"]
        .as_array()
        .and_then(|evs| {
            evs.iter()
                .rev()
                .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        })
        .unwrap_or_else(|| panic!("bob's join in the timeline: {r}"));
    assert_eq!(join_ev["content"]["membership"], "join");
}

/// The sync that moves a room to rooms.join must carry the room's full state:
/// the client has never seen it (Synapse, Dendrite and clients rely on this).
#[tokio::test]
async fn newly_joined_room_in_incremental_sync_has_full_state() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "Joinable", "preset": "public_chat"}),
    )
    .await;
    send_text(&server, &alice, &room, "before bob").await;
    let t1 = sync_token(&server, &bob).await;
    join(&server, &bob, &room).await;

    let body = sync(&server, &bob, &format!("since={}&timeout=0", enc(&t1))).await;
    let r = joined(&body, &room);
    let mut all = r["state"]["events"].as_array().unwrap().clone();
    all.extend(r["timeline"]["events"].as_array().unwrap().iter().cloned());
    let all = Value::Array(all);
    for ty in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.name",
    ] {
        assert!(
            find_state(&all, ty, "").is_some(),
            "{ty} missing from the first sync after joining (since={t1}): {r}"
        );
    }
    assert!(
        find_state(&all, "m.room.member", &alice.user_id).is_some(),
        "{r}"
    );
}

#[tokio::test]
async fn leave_appears_in_rooms_leave_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let t1 = sync_token(&server, &bob).await;
    leave(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "after bob left").await;

    let body = sync(&server, &bob, &format!("since={}&timeout=0", enc(&t1))).await;
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");
    let left = body["rooms"]["leave"]
        .get(&room)
        .unwrap_or_else(|| panic!("not in rooms.leave: {body}"));
    let events = &left["timeline"]["events"];
    let ev = find_state(events, "m.room.member", &bob.user_id).unwrap_or_else(|| panic!("{left}"));
    assert_eq!(ev["content"]["membership"], "leave", "{left}");
    assert!(
        !bodies(events).contains(&"after bob left".to_owned()),
        "nothing after the leave: {left}"
    );

    let t2 = next_batch(&body);
    let body = sync(&server, &bob, &format!("since={}&timeout=0", enc(&t2))).await;
    assert!(
        body["rooms"]["leave"].get(&room).is_none(),
        "only once: {body}"
    );
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");
}

#[tokio::test]
async fn kick_appears_in_rooms_leave() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let t1 = sync_token(&server, &bob).await;
    let (st, b) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            alice.token(),
            json!({"user_id": bob.user_id, "reason": "bye"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let body = sync(&server, &bob, &format!("since={}&timeout=0", enc(&t1))).await;
    let left = body["rooms"]["leave"]
        .get(&room)
        .unwrap_or_else(|| panic!("not in rooms.leave: {body}"));
    let ev = find_state(&left["timeline"]["events"], "m.room.member", &bob.user_id)
        .unwrap_or_else(|| panic!("{left}"));
    assert_eq!(ev["content"]["membership"], "leave");
    assert_eq!(ev["sender"], alice.user_id.as_str());
}

// ---------------------------------------------------------------------------
// Summary, transaction ids, prev_batch, bad tokens
// ---------------------------------------------------------------------------

#[tokio::test]
async fn summary_heroes_and_member_counts() {
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

    let body = sync(&server, &alice, "").await;
    let s = &joined(&body, &room)["summary"];
    assert_eq!(s["m.joined_member_count"], 2, "{s}");
    assert_eq!(s["m.invited_member_count"], 1, "{s}");
    let heroes: HashSet<&str> = s["m.heroes"]
        .as_array()
        .unwrap_or_else(|| panic!("m.heroes: {s}"))
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(heroes.contains(bob.user_id.as_str()), "{s}");
    assert!(heroes.contains(carol.user_id.as_str()), "{s}");
    assert!(
        !heroes.contains(alice.user_id.as_str()),
        "never the syncing user: {s}"
    );
}

#[tokio::test]
async fn transaction_id_only_for_the_sending_device() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let alice2 = server.login("alice", "password123").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let id = send_event_txn(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "with txn"}),
        "my-txn-42",
    )
    .await;

    let find = |body: &Value| -> Value {
        joined(body, &room)["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_id"] == id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("event not in timeline: {body}"))
    };
    let ev = find(&sync(&server, &alice, "").await);
    assert_eq!(ev["unsigned"]["transaction_id"], "my-txn-42", "{ev}");
    let ev = find(&sync(&server, &alice2, "").await);
    assert!(
        ev["unsigned"].get("transaction_id").is_none(),
        "other device: {ev}"
    );
    let ev = find(&sync(&server, &bob, "").await);
    assert!(
        ev["unsigned"].get("transaction_id").is_none(),
        "other user: {ev}"
    );

    // GET /event likewise.
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&id));
    let (_, ev) = server.get(&path, alice.token()).await;
    assert_eq!(ev["unsigned"]["transaction_id"], "my-txn-42", "{ev}");
    let (_, ev) = server.get(&path, alice2.token()).await;
    assert!(
        ev["unsigned"].get("transaction_id").is_none(),
        "other device: {ev}"
    );
}

/// After a restart the events come from the database, not from the event
/// cache that kept their transaction since they were sent: the transaction
/// id still reaches the sending device (and only it), for message events
/// and redactions alike.
#[tokio::test]
async fn transaction_id_survives_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let alice2 = server.login("alice", "password123").await;
    let room = create_room(&server, &alice, json!({})).await;
    let id = send_event_txn(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "before the restart"}),
        "txn-before",
    )
    .await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/redact/{}/txn-redact",
        enc(&room),
        enc(&id)
    );
    let (status, body) = server
        .put(&path, alice.token(), json!({"reason": "gone"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let redaction = body["event_id"].as_str().unwrap().to_owned();
    server.restart().await;

    let timeline = |body: &Value| -> Vec<Value> {
        joined(body, &room)["timeline"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let body = sync(&server, &alice, "").await;
    let events = timeline(&body);
    let txn_of = |events: &[Value], id: &str| -> Value {
        events
            .iter()
            .find(|e| e["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {events:?}"))["unsigned"]["transaction_id"]
            .clone()
    };
    assert_eq!(txn_of(&events, &id), "txn-before");
    assert_eq!(txn_of(&events, &redaction), "txn-redact");
    let events = timeline(&sync(&server, &alice2, "").await);
    assert_eq!(txn_of(&events, &id), Value::Null, "other device");
    assert_eq!(txn_of(&events, &redaction), Value::Null, "other device");

    // /messages reads the events' rows too.
    let body = messages_ok(&server, &alice, &room, "dir=b&limit=10").await;
    let chunk = body["chunk"].as_array().unwrap().clone();
    assert_eq!(txn_of(&chunk, &id), "txn-before");
}

#[tokio::test]
async fn prev_batch_pages_back_before_the_timeline() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..15 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
    }
    let f = json!({"room": {"timeline": {"limit": 5}}});
    let body = sync(&server, &alice, &q_filter(f)).await;
    let r = joined(&body, &room);
    assert_eq!(
        bodies(&r["timeline"]["events"]),
        ["m10", "m11", "m12", "m13", "m14"],
        "{r}"
    );
    let prev = r["timeline"]["prev_batch"].as_str().expect("prev_batch");

    let page = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=5&from={}", enc(prev)),
    )
    .await;
    assert_eq!(
        bodies(&page["chunk"]),
        ["m9", "m8", "m7", "m6", "m5"],
        "{page}"
    );
}

#[tokio::test]
async fn invalid_since_is_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for bad in ["notatoken", "s", "sabc"] {
        let resp = server
            .get(
                &format!("/_matrix/client/v3/sync?since={}", enc(bad)),
                alice.token(),
            )
            .await;
        assert_eq!(resp.0, StatusCode::BAD_REQUEST, "since={bad}: {}", resp.1);
        assert!(resp.1["errcode"].is_string(), "{}", resp.1);
    }
}

#[tokio::test]
async fn long_poll_ignores_events_in_other_rooms() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    create_room(&server, &alice, json!({})).await;
    let bobs_room = create_room(&server, &bob, json!({})).await;
    let t1 = sync_token(&server, &alice).await;

    let started = Instant::now();
    let poll = spawn_poll(&server, &alice, &t1, 2000);
    server.wait_for_parked_syncs(1).await;
    send_text(&server, &bob, &bobs_room, "not for alice").await;
    let (_, body, done) = poll.await.expect("task");
    let elapsed = done.duration_since(started);
    assert!(
        elapsed >= Duration::from_millis(1800),
        "woke for a room alice is not in after {elapsed:?}: {body}"
    );
    assert!(section_is_empty(&body, "join"), "{body}");
    assert!(body["rooms"]["join"].get(&bobs_room).is_none(), "{body}");
}

#[tokio::test]
async fn long_poll_wakes_on_an_invite() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    let t1 = sync_token(&server, &bob).await;

    let started = Instant::now();
    let poll = spawn_poll(&server, &bob, &t1, 10000);
    server.wait_for_parked_syncs(1).await;
    invite(&server, &alice, &room, &bob.user_id).await;
    let (_, body, done) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("long-poll finishes")
        .expect("task");
    let elapsed = done.duration_since(started);
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(body["rooms"]["invite"].get(&room).is_some(), "{body}");
}

#[tokio::test]
async fn rejected_invite_appears_in_rooms_leave() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    invite(&server, &alice, &room, &bob.user_id).await;
    let t1 = sync_token(&server, &bob).await;
    leave(&server, &bob, &room).await;

    let body = sync(&server, &bob, &format!("since={}&timeout=0", enc(&t1))).await;
    assert!(body["rooms"]["invite"].get(&room).is_none(), "{body}");
    let left = body["rooms"]["leave"]
        .get(&room)
        .unwrap_or_else(|| panic!("rejected invite not in rooms.leave: {body}"));
    let ev = find_state(&left["timeline"]["events"], "m.room.member", &bob.user_id)
        .unwrap_or_else(|| panic!("{left}"));
    assert_eq!(ev["content"]["membership"], "leave", "{left}");
}

#[tokio::test]
async fn include_leave_filter_lists_left_rooms_on_initial_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "while bob is here").await;
    leave(&server, &bob, &room).await;

    let body = sync(&server, &bob, "").await;
    assert!(body["rooms"]["leave"].get(&room).is_none(), "{body}");
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");

    let f = json!({"room": {"include_leave": true}});
    let body = sync(&server, &bob, &q_filter(f)).await;
    let left = body["rooms"]["leave"]
        .get(&room)
        .unwrap_or_else(|| panic!("include_leave: {body}"));
    assert!(
        bodies(&left["timeline"]["events"]).contains(&"while bob is here".to_owned()),
        "{left}"
    );
}

#[tokio::test]
async fn rooms_and_not_rooms_filters() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let r1 = create_room(&server, &alice, json!({})).await;
    let r2 = create_room(&server, &alice, json!({})).await;

    let body = sync(&server, &alice, &q_filter(json!({"room": {"rooms": [r1]}}))).await;
    let rooms: HashSet<&String> = body["rooms"]["join"].as_object().unwrap().keys().collect();
    assert_eq!(rooms, HashSet::from([&r1]), "{body}");

    let body = sync(
        &server,
        &alice,
        &q_filter(json!({"room": {"not_rooms": [r1]}})),
    )
    .await;
    let rooms: HashSet<&String> = body["rooms"]["join"].as_object().unwrap().keys().collect();
    assert_eq!(rooms, HashSet::from([&r2]), "{body}");
}

/// An incremental sync skips a kind (account data, receipts, presence)
/// when nothing it depends on changed after `since`, as far as the running
/// server knows; a `since` from before a restart reads them all.
#[tokio::test]
async fn incremental_sync_across_a_restart_has_what_changed_before_it() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (st, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    let room_enc = room.replace('!', "%21").replace(':', "%3A");
    let (st, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{room_enc}"),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, sent) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room_enc}/send/m.room.message/t1"),
            alice.token(),
            json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{sent}");
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    let (_, body) = server
        .get("/_matrix/client/v3/sync?timeout=0", alice.token())
        .await;
    let since = next_batch(&body);

    // Account data of alice's, and bob's receipt in her room.
    let alice_enc = alice.user_id.replace('@', "%40").replace(':', "%3A");
    let (st, body) = server
        .put(
            &format!("/_matrix/client/v3/user/{alice_enc}/account_data/org.example.kept"),
            alice.token(),
            json!({"k": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room_enc}/receipt/m.read/{}",
                event_id.replace('$', "%24")
            ),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    server.restart().await;
    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let data: Vec<&str> = body["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(data.contains(&"org.example.kept"), "{body}");
    let ephemeral = &joined(&body, &room)["ephemeral"]["events"];
    let receipt = ephemeral
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .unwrap_or_else(|| panic!("no receipt: {body}"));
    assert!(
        receipt["content"][event_id.as_str()]["m.read"][bob.user_id.as_str()].is_object(),
        "{receipt}"
    );

    // With nothing new, the same sync after the restart is empty.
    let next = next_batch(&body);
    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?timeout=0&since={next}"),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(section_is_empty(&body, "join"), "{body}");
}
