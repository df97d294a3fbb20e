//! Simplified sliding sync (MSC4186, `POST
//! /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`): positions
//! and connections, lists (ranges, recency order, counts), room fields,
//! required state, incremental answers, long-polling, subscriptions, filters
//! and the extensions.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync request (`pos` and `timeout` in the query); the answer
/// as it is.
async fn try_ss(
    server: &TestServer,
    who: &Session,
    pos: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let path = match pos {
        Some(pos) => format!("{PATH}?timeout=0&pos={}", enc(pos)),
        None => format!("{PATH}?timeout=0"),
    };
    server.post(&path, who.token(), body.clone()).await
}

/// One sliding sync request that must succeed.
async fn ss(server: &TestServer, who: &Session, pos: Option<&str>, body: &Value) -> Value {
    let (st, b) = try_ss(server, who, pos, body).await;
    assert_eq!(st, StatusCode::OK, "sliding sync {body}: {b}");
    assert!(b["pos"].is_string(), "{b}");
    b
}

fn pos(body: &Value) -> String {
    body["pos"].as_str().expect("pos").to_owned()
}

/// A list of all rooms, newest first: `[0, 99]`, with the room details.
fn all_rooms(timeline_limit: u64, required_state: Value) -> Value {
    json!({
        "lists": {
            "all": {
                "ranges": [[0, 99]],
                "timeline_limit": timeline_limit,
                "required_state": required_state,
            }
        }
    })
}

fn room<'a>(body: &'a Value, room_id: &str) -> &'a Value {
    body["rooms"]
        .get(room_id)
        .unwrap_or_else(|| panic!("{room_id} not in rooms: {body}"))
}

fn has_room(body: &Value, room_id: &str) -> bool {
    body["rooms"].get(room_id).is_some()
}

fn timeline_bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn state_keys(room: &Value) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = room["required_state"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap().to_owned(),
                        e["state_key"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

/// alice and bob, both joined to a public room of alice's named `name`.
async fn two_in_a_room(server: &TestServer, name: &str) -> (Session, Session, String) {
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let r = create_room(
        server,
        &alice,
        json!({"name": name, "preset": "public_chat"}),
    )
    .await;
    join(server, &bob, &r).await;
    (alice, bob, r)
}

/// POST /receipt/m.read for `event` in `room`; asserts 200.
async fn read_receipt(server: &TestServer, who: &Session, room: &str, event: &str) {
    let path = room_path(room, &format!("/receipt/m.read/{}", enc(event)));
    let (st, b) = server.post(&path, who.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

/// A long-polling request (30 s) from `pos`, in the background; the task
/// answers the status and body.
fn spawn_ss(
    server: &TestServer,
    who: &Session,
    pos: &str,
    req: Value,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let url = server.url(&format!("{PATH}?timeout=30000&pos={}", enc(pos)));
    let (client, token) = (server.client.clone(), who.access_token.clone());
    tokio::spawn(async move {
        let resp = client
            .post(url)
            .bearer_auth(token)
            .json(&req)
            .send()
            .await
            .expect("sent");
        let status = resp.status();
        (status, resp.json::<Value>().await.expect("JSON"))
    })
}

/// The rooms of a sliding sync answer, by id.
fn room_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["rooms"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------
// The endpoint, positions and connections
// ---------------------------------------------------------------------------

#[tokio::test]
async fn versions_advertise_simplified_sliding_sync() {
    let server = TestServer::start().await;
    let (st, body) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        body["unstable_features"]["org.matrix.simplified_msc3575"], true,
        "{body}"
    );
}

#[tokio::test]
async fn needs_a_token() {
    let server = TestServer::start().await;
    let resp = server.post(PATH, None, json!({})).await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn unknown_pos_is_m_unknown_pos() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let body = all_rooms(1, json!([]));
    for bogus in ["nonsense", "abc_1", "_", "12345678_99"] {
        let resp = try_ss(&server, &alice, Some(bogus), &body).await;
        assert_error_for(bogus, &resp, 400, "M_UNKNOWN_POS");
    }
    // A position of one connection is unknown on another.
    let first = ss(
        &server,
        &alice,
        None,
        &json!({"conn_id": "one", "lists": {}}),
    )
    .await;
    let other = json!({"conn_id": "two", "lists": {}});
    let resp = try_ss(&server, &alice, Some(&pos(&first)), &other).await;
    assert_error(&resp, 400, "M_UNKNOWN_POS");
    // ... and of another device of the same user.
    let alice2 = server.login("alice", "password123").await;
    let same = json!({"conn_id": "one", "lists": {}});
    let resp = try_ss(&server, &alice2, Some(&pos(&first)), &same).await;
    assert_error(&resp, 400, "M_UNKNOWN_POS");
    // Known on its own connection.
    ss(&server, &alice, Some(&pos(&first)), &same).await;
    // Connections live in memory: a restart forgets them all.
    server.restart().await;
    let resp = try_ss(&server, &alice, Some(&pos(&first)), &same).await;
    assert_error(&resp, 400, "M_UNKNOWN_POS");
}

#[tokio::test]
async fn previous_pos_can_be_repeated_but_older_ones_expire() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let r = create_room(&server, &alice, json!({"name": "R"})).await;
    let body = all_rooms(5, json!([]));
    let p1 = pos(&ss(&server, &alice, None, &body).await);
    send_text(&server, &alice, &r, "one").await;
    let b2 = ss(&server, &alice, Some(&p1), &body).await;
    assert_eq!(timeline_bodies(room(&b2, &r)), ["one"], "{b2}");
    // The answer was lost: the same request again gets the same news.
    let again = ss(&server, &alice, Some(&p1), &body).await;
    assert_eq!(timeline_bodies(room(&again, &r)), ["one"], "{again}");
    let p3 = pos(&again);
    send_text(&server, &alice, &r, "two").await;
    let b4 = ss(&server, &alice, Some(&p3), &body).await;
    assert_eq!(timeline_bodies(room(&b4, &r)), ["two"], "{b4}");
    let p4 = pos(&b4);
    ss(&server, &alice, Some(&p4), &body).await;
    // Only the two newest positions stay valid.
    let resp = try_ss(&server, &alice, Some(&p1), &body).await;
    assert_error(&resp, 400, "M_UNKNOWN_POS");
}

#[tokio::test]
async fn bad_requests_are_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let reversed = json!({"lists": {"a": {"ranges": [[5, 1]], "timeline_limit": 1}}});
    let resp = try_ss(&server, &alice, None, &reversed).await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let long_conn = json!({"conn_id": "x".repeat(17), "lists": {}});
    let resp = try_ss(&server, &alice, None, &long_conn).await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let not_a_list = json!({"lists": {"a": {"ranges": "all"}}});
    let resp = try_ss(&server, &alice, None, &not_a_list).await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);
    assert!(resp.1["errcode"].is_string(), "{}", resp.1);
}

// ---------------------------------------------------------------------------
// Room fields
// ---------------------------------------------------------------------------

#[tokio::test]
async fn initial_room_fields() {
    let server = TestServer::start().await;
    let (alice, bob, r) = two_in_a_room(&server, "Fields").await;
    let carol = server.user("carol").await;
    set_state(
        &server,
        &alice,
        &r,
        "m.room.topic",
        "",
        json!({"topic": "t"}),
    )
    .await;
    invite(&server, &alice, &r, &carol.user_id).await;
    set_state(
        &server,
        &alice,
        &r,
        "m.room.avatar",
        "",
        json!({"url": "mxc://example.org/abc"}),
    )
    .await;
    for i in 0..4 {
        send_text(&server, &bob, &r, &format!("m{i}")).await;
    }
    let body = ss(
        &server,
        &alice,
        None,
        &all_rooms(2, json!([["m.room.topic", ""], ["m.room.create", ""]])),
    )
    .await;
    assert_eq!(body["lists"]["all"]["count"], 1, "{body}");
    let got = room(&body, &r);
    assert_eq!(got["name"], "Fields", "{got}");
    assert_eq!(got["avatar"], "mxc://example.org/abc", "{got}");
    assert_eq!(got["initial"], true, "{got}");
    assert_eq!(got["joined_count"], 2, "{got}");
    assert_eq!(got["invited_count"], 1, "{got}");
    assert_eq!(got["notification_count"], 4, "{got}");
    assert_eq!(got["highlight_count"], 0, "{got}");
    assert_eq!(
        got["num_live"], 0,
        "an initial answer has no live events: {got}"
    );
    assert_eq!(got["limited"], true, "{got}");
    assert_eq!(got["is_dm"], false, "{got}");
    assert!(got["bump_stamp"].is_u64(), "{got}");
    assert!(
        got.get("heroes").is_none(),
        "a named room has no heroes: {got}"
    );
    assert!(got.get("invite_state").is_none(), "{got}");
    assert_eq!(timeline_bodies(got), ["m2", "m3"], "{got}");
    let last = got["timeline"].as_array().unwrap().last().unwrap();
    assert_eq!(last["sender"], bob.user_id.as_str(), "{last}");
    assert!(last["event_id"].is_string(), "{last}");
    assert_eq!(
        state_keys(got),
        [
            ("m.room.create".to_owned(), String::new()),
            ("m.room.topic".to_owned(), String::new())
        ],
        "{got}"
    );
    // prev_batch pages back from the timeline's start with /messages.
    let prev = got["prev_batch"].as_str().expect("prev_batch");
    let (st, messages) = server
        .get(
            &room_path(&r, &format!("/messages?dir=b&limit=2&from={}", enc(prev))),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{messages}");
    let older: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(older, ["m1", "m0"], "{messages}");
}

#[tokio::test]
async fn heroes_for_an_unnamed_room_and_own_reads_clear_counts() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    set_displayname(&server, &bob, "Bobby").await;
    let r = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &r).await;
    let msg = send_text(&server, &bob, &r, "hi").await;
    let body_req = all_rooms(1, json!([]));
    let body = ss(&server, &alice, None, &body_req).await;
    let got = room(&body, &r);
    assert!(got.get("name").is_none(), "{got}");
    let heroes = got["heroes"].as_array().expect("heroes");
    assert_eq!(heroes.len(), 1, "{got}");
    assert_eq!(heroes[0]["user_id"], bob.user_id.as_str(), "{got}");
    assert_eq!(heroes[0]["displayname"], "Bobby", "{got}");
    assert_eq!(got["notification_count"], 1, "{got}");
    // A read receipt brings the room back with its counts cleared.
    read_receipt(&server, &alice, &r, &msg).await;
    let next = ss(&server, &alice, Some(&pos(&body)), &body_req).await;
    let got = room(&next, &r);
    assert_eq!(got["notification_count"], 0, "{next}");
    assert!(got.get("initial").is_none(), "{got}");
    assert!(got.get("timeline").is_none(), "nothing new to show: {got}");
}

#[tokio::test]
async fn a_mention_counts_as_a_highlight() {
    let server = TestServer::start().await;
    let (alice, bob, r) = two_in_a_room(&server, "Loud").await;
    send_text(&server, &bob, &r, "plain").await;
    let mention = json!({"msgtype": "m.text", "body": "look, alice",
        "m.mentions": {"user_ids": [alice.user_id]}});
    let last = send_event(&server, &bob, &r, "m.room.message", mention).await;
    let req = all_rooms(1, json!([]));
    let body = ss(&server, &alice, None, &req).await;
    let got = room(&body, &r);
    assert_eq!(got["notification_count"], 2, "{got}");
    assert_eq!(got["highlight_count"], 1, "{got}");
    // Reading the room clears both.
    read_receipt(&server, &alice, &r, &last).await;
    let next = ss(&server, &alice, Some(&pos(&body)), &req).await;
    let got = room(&next, &r);
    assert_eq!(got["notification_count"], 0, "{next}");
    assert_eq!(got["highlight_count"], 0, "{next}");
}

#[tokio::test]
async fn a_knocked_room_carries_its_knock_state_until_the_invite() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let r = room_with_join_rules(&server, &alice, "10", json!({"join_rule": "knock"})).await;
    set_state(
        &server,
        &alice,
        &r,
        "m.room.name",
        "",
        json!({"name": "Knock here"}),
    )
    .await;
    send_text(&server, &alice, &r, "members only").await;
    let (st, b) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&r)),
            bob.token(),
            json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let req = all_rooms(5, json!([["*", "*"]]));
    let body = ss(&server, &bob, None, &req).await;
    assert_eq!(body["lists"]["all"]["count"], 1, "{body}");
    let got = room(&body, &r);
    assert_eq!(got["initial"], true, "{got}");
    assert_eq!(got["name"], "Knock here", "{got}");
    assert!(got.get("timeline").is_none(), "{got}");
    assert!(got.get("required_state").is_none(), "{got}");
    let state = got["invite_state"].as_array().expect("knock state");
    let of_type = |ty: &str| state.iter().find(|e| e["type"] == ty).cloned();
    assert_eq!(
        of_type("m.room.join_rules").expect("join rules")["content"]["join_rule"],
        "knock",
        "{got}"
    );
    let knock = of_type("m.room.member").expect("the knock");
    assert_eq!(knock["state_key"], bob.user_id.as_str(), "{got}");
    assert_eq!(knock["content"]["membership"], "knock", "{got}");
    // Accepted (invited): the room comes again, as an invite.
    invite(&server, &alice, &r, &bob.user_id).await;
    let next = ss(&server, &bob, Some(&pos(&body)), &req).await;
    let got = room(&next, &r);
    assert_eq!(got["initial"], true, "{next}");
    let state = got["invite_state"].as_array().expect("invite state");
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "invite"),
        "{got}"
    );
}

#[tokio::test]
async fn required_state_wildcards_lazy_and_me() {
    let server = TestServer::start().await;
    let (alice, bob, r) = two_in_a_room(&server, "RS").await;
    let carol = server.user("carol").await;
    join(&server, &carol, &r).await;
    send_text(&server, &carol, &r, "older").await;
    send_text(&server, &bob, &r, "newest").await;
    let member = |u: &Session| ("m.room.member".to_owned(), u.user_id.clone());

    // $LAZY: the members of the timeline's senders; $ME: one's own.
    let body = ss(
        &server,
        &alice,
        None,
        &all_rooms(
            1,
            json!([["m.room.member", "$LAZY"], ["m.room.member", "$ME"]]),
        ),
    )
    .await;
    assert_eq!(
        state_keys(room(&body, &r)),
        [member(&alice), member(&bob)],
        "{body}"
    );

    // A type with `*`: every state key of it.
    let body = ss(
        &server,
        &alice,
        None,
        &all_rooms(1, json!([["m.room.member", "*"]])),
    )
    .await;
    let mut want = vec![member(&alice), member(&bob), member(&carol)];
    want.sort();
    assert_eq!(state_keys(room(&body, &r)), want, "{body}");

    // `*` for the type: every type with that state key.
    let body = ss(&server, &alice, None, &all_rooms(1, json!([["*", ""]]))).await;
    let keys = state_keys(room(&body, &r));
    assert!(keys.iter().all(|(_, k)| k.is_empty()), "{keys:?}");
    for ty in [
        "m.room.create",
        "m.room.name",
        "m.room.power_levels",
        "m.room.join_rules",
    ] {
        assert!(
            keys.contains(&(ty.to_owned(), String::new())),
            "{ty}: {keys:?}"
        );
    }

    // `["*", "*"]`: the whole state.
    let body = ss(&server, &alice, None, &all_rooms(1, json!([["*", "*"]]))).await;
    let keys = state_keys(room(&body, &r));
    assert!(keys.contains(&member(&carol)), "{keys:?}");
    assert!(
        keys.contains(&("m.room.name".to_owned(), String::new())),
        "{keys:?}"
    );

    // Incrementally: only the state that changed, and a lazy member the
    // connection was not sent yet.
    let req = all_rooms(1, json!([["m.room.member", "$LAZY"], ["m.room.topic", ""]]));
    let first = ss(&server, &alice, None, &req).await;
    assert_eq!(state_keys(room(&first, &r)), [member(&bob)], "{first}");
    send_text(&server, &bob, &r, "again").await;
    let next = ss(&server, &alice, Some(&pos(&first)), &req).await;
    assert!(
        state_keys(room(&next, &r)).is_empty(),
        "bob was sent already: {next}"
    );
    set_state(
        &server,
        &alice,
        &r,
        "m.room.topic",
        "",
        json!({"topic": "new"}),
    )
    .await;
    send_text(&server, &carol, &r, "carol speaks").await;
    let after = ss(&server, &alice, Some(&pos(&next)), &req).await;
    assert_eq!(
        state_keys(room(&after, &r)),
        [member(&carol), ("m.room.topic".to_owned(), String::new())],
        "{after}"
    );
}

#[tokio::test]
async fn invites_carry_invite_state_and_no_timeline() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let r = create_room(&server, &alice, json!({"name": "Come in"})).await;
    send_text(&server, &alice, &r, "secret").await;
    let (st, b) = server
        .post(
            &room_path(&r, "/invite"),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let body = ss(&server, &bob, None, &all_rooms(5, json!([["*", "*"]]))).await;
    let got = room(&body, &r);
    assert_eq!(got["initial"], true, "{got}");
    assert_eq!(got["name"], "Come in", "{got}");
    assert!(got.get("timeline").is_none(), "{got}");
    assert!(got.get("required_state").is_none(), "{got}");
    let state = got["invite_state"].as_array().expect("invite_state");
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()),
        "{got}"
    );
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "{got}");
    // Joining turns it into a joined room, sent afresh with its timeline.
    let p = pos(&body);
    join(&server, &bob, &r).await;
    let next = ss(&server, &bob, Some(&p), &all_rooms(5, json!([]))).await;
    let got = room(&next, &r);
    assert_eq!(got["initial"], true, "{got}");
    assert!(got.get("invite_state").is_none(), "{got}");
    let last = got["timeline"]
        .as_array()
        .expect("timeline")
        .last()
        .cloned();
    let last = last.expect("the join is in the timeline");
    assert_eq!(last["type"], "m.room.member", "{got}");
    assert_eq!(last["state_key"], bob.user_id.as_str(), "{got}");
    assert_eq!(last["content"]["membership"], "join", "{got}");
}

// ---------------------------------------------------------------------------
// Lists: ranges, order, incremental answers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ranges_follow_recency_and_move_on_a_new_message() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut rooms = Vec::new();
    for name in ["first", "second", "third"] {
        let r = create_room(&server, &alice, json!({"name": name})).await;
        send_text(&server, &alice, &r, name).await;
        rooms.push(r);
    }
    let req =
        json!({"lists": {"top": {"ranges": [[0, 1]], "timeline_limit": 1, "required_state": []}}});
    let body = ss(&server, &alice, None, &req).await;
    assert_eq!(body["lists"]["top"]["count"], 3, "{body}");
    let mut newest_two = vec![rooms[1].clone(), rooms[2].clone()];
    newest_two.sort();
    assert_eq!(
        room_ids(&body),
        newest_two,
        "the two most recent rooms: {body}"
    );
    let bump = |b: &Value, r: &str| room(b, r)["bump_stamp"].as_u64().unwrap();
    assert!(bump(&body, &rooms[2]) > bump(&body, &rooms[1]), "{body}");

    // Nothing changed: an incremental answer has no rooms.
    let quiet = ss(&server, &alice, Some(&pos(&body)), &req).await;
    assert!(room_ids(&quiet).is_empty(), "{quiet}");
    assert_eq!(quiet["lists"]["top"]["count"], 3, "{quiet}");

    // A message in the oldest room moves it into the window, new to the
    // connection: sent whole.
    send_text(&server, &alice, &rooms[0], "bump").await;
    let next = ss(&server, &alice, Some(&pos(&quiet)), &req).await;
    assert_eq!(room_ids(&next), [rooms[0].clone()], "{next}");
    let got = room(&next, &rooms[0]);
    assert_eq!(got["initial"], true, "{got}");
    assert_eq!(timeline_bodies(got), ["bump"], "{got}");
    assert!(bump(&next, &rooms[0]) > bump(&body, &rooms[2]), "{next}");

    // A message in a room the connection has: only what is new.
    send_text(&server, &alice, &rooms[2], "later").await;
    send_text(&server, &alice, &rooms[2], "latest").await;
    let req5 =
        json!({"lists": {"top": {"ranges": [[0, 1]], "timeline_limit": 5, "required_state": []}}});
    // (A wider timeline limit sends the room afresh; the same one does not.)
    let inc = ss(&server, &alice, Some(&pos(&next)), &req).await;
    assert_eq!(room_ids(&inc), [rooms[2].clone()], "{inc}");
    let got = room(&inc, &rooms[2]);
    assert!(got.get("initial").is_none(), "{got}");
    assert_eq!(timeline_bodies(got), ["latest"], "{got}");
    assert_eq!(got["limited"], true, "{got}");
    assert_eq!(got["num_live"], 1, "{got}");
    let wider = ss(&server, &alice, Some(&pos(&inc)), &req5).await;
    let got = room(&wider, &rooms[2]);
    assert_eq!(got["initial"], true, "{got}");
    assert_eq!(timeline_bodies(got), ["third", "later", "latest"], "{got}");
}

#[tokio::test]
async fn several_ranges_and_lists() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut rooms = Vec::new();
    for i in 0..5 {
        let r = create_room(&server, &alice, json!({"name": format!("r{i}")})).await;
        send_text(&server, &alice, &r, "x").await;
        rooms.push(r);
    }
    // Newest first: r4 r3 r2 r1 r0; ranges [0,0] and [3,4]: r4, r1, r0.
    let req = json!({"lists": {
        "a": {"ranges": [[0, 0], [3, 4]], "timeline_limit": 0, "required_state": []},
        "b": {"ranges": [[10, 20]], "timeline_limit": 0, "required_state": []},
    }});
    let body = ss(&server, &alice, None, &req).await;
    let mut want = vec![rooms[4].clone(), rooms[1].clone(), rooms[0].clone()];
    want.sort();
    assert_eq!(room_ids(&body), want, "{body}");
    assert_eq!(body["lists"]["a"]["count"], 5, "{body}");
    assert_eq!(body["lists"]["b"]["count"], 5, "{body}");
    assert!(room(&body, &rooms[4]).get("timeline").is_none(), "{body}");
}

#[tokio::test]
async fn room_subscriptions_send_rooms_outside_any_list() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let r = create_room(&server, &alice, json!({"name": "Sub"})).await;
    send_text(&server, &alice, &r, "hello").await;
    let other = create_room(&server, &bob, json!({"name": "Not mine"})).await;
    let req = json!({
        "room_subscriptions": {
            r.clone(): {"timeline_limit": 3, "required_state": [["m.room.name", ""]]},
            other.clone(): {"timeline_limit": 3, "required_state": []},
        }
    });
    let body = ss(&server, &alice, None, &req).await;
    assert_eq!(
        room_ids(&body),
        std::slice::from_ref(&r),
        "a room the user is not in is not sent: {body}"
    );
    let got = room(&body, &r);
    assert_eq!(timeline_bodies(got), ["hello"], "{got}");
    assert_eq!(
        state_keys(got),
        [("m.room.name".to_owned(), String::new())],
        "{got}"
    );
}

#[tokio::test]
async fn a_left_room_is_sent_once_with_the_leave() {
    let server = TestServer::start().await;
    let (alice, bob, r) = two_in_a_room(&server, "Bye").await;
    let req = all_rooms(5, json!([]));
    let body = ss(&server, &bob, None, &req).await;
    assert!(has_room(&body, &r), "{body}");
    leave(&server, &bob, &r).await;
    send_text(&server, &alice, &r, "after bob left").await;
    let next = ss(&server, &bob, Some(&pos(&body)), &req).await;
    let got = room(&next, &r);
    let timeline = got["timeline"].as_array().expect("timeline");
    let last = timeline.last().unwrap();
    assert_eq!(last["type"], "m.room.member", "{got}");
    assert_eq!(last["content"]["membership"], "leave", "{got}");
    assert!(
        timeline_bodies(got).is_empty(),
        "nothing after the leave: {got}"
    );
    let after = ss(&server, &bob, Some(&pos(&next)), &req).await;
    assert!(!has_room(&after, &r), "{after}");
    assert_eq!(after["lists"]["all"]["count"], 0, "{after}");
}

// ---------------------------------------------------------------------------
// Long-polling
// ---------------------------------------------------------------------------

#[tokio::test]
async fn long_poll_wakes_on_a_new_message() {
    let server = TestServer::start().await;
    let (alice, bob, r) = two_in_a_room(&server, "Poll").await;
    let req = all_rooms(3, json!([]));
    let body = ss(&server, &alice, None, &req).await;
    let poll = spawn_ss(&server, &alice, &pos(&body), req);
    server.wait_for_parked_syncs(1).await;
    send_text(&server, &bob, &r, "wake up").await;
    let (st, answer) = poll.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{answer}");
    assert_eq!(timeline_bodies(room(&answer, &r)), ["wake up"], "{answer}");
    assert_eq!(room(&answer, &r)["num_live"], 1, "{answer}");
}

#[tokio::test]
async fn long_poll_times_out_with_nothing_new() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    create_room(&server, &alice, json!({"name": "Quiet"})).await;
    let req = all_rooms(3, json!([]));
    let body = ss(&server, &alice, None, &req).await;
    let (st, answer) = server
        .post(
            &format!("{PATH}?timeout=50&pos={}", enc(&pos(&body))),
            alice.token(),
            req,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{answer}");
    assert!(room_ids(&answer).is_empty(), "{answer}");
    assert_ne!(pos(&answer), pos(&body), "{answer}");
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

/// The rooms a list with `filters` shows (its window covers them all), and
/// its count.
async fn filtered(server: &TestServer, who: &Session, filters: Value) -> (Vec<String>, u64) {
    let req = json!({"lists": {"f": {
        "ranges": [[0, 99]], "timeline_limit": 0, "required_state": [], "filters": filters,
    }}});
    let body = ss(server, who, None, &req).await;
    let count = body["lists"]["f"]["count"].as_u64().expect("count");
    (room_ids(&body), count)
}

fn sorted(mut rooms: Vec<String>) -> Vec<String> {
    rooms.sort();
    rooms
}

#[tokio::test]
async fn filters_is_dm_is_invite_is_encrypted() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let dm = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    put_account_data(
        &server,
        &alice,
        "m.direct",
        json!({ bob.user_id.clone(): [dm] }),
    )
    .await;
    let encrypted = create_room(
        &server,
        &alice,
        json!({"initial_state": [{
            "type": "m.room.encryption", "state_key": "",
            "content": {"algorithm": "m.megolm.v1.aes-sha2"},
        }]}),
    )
    .await;
    let invited = create_room(&server, &bob, json!({"name": "Invite"})).await;
    invite(&server, &bob, &invited, &alice.user_id).await;

    let (rooms, count) = filtered(&server, &alice, json!({"is_dm": true})).await;
    assert_eq!((rooms, count), (vec![dm.clone()], 1));
    let (rooms, _) = filtered(&server, &alice, json!({"is_dm": false})).await;
    assert_eq!(rooms, sorted(vec![encrypted.clone(), invited.clone()]));
    let (rooms, _) = filtered(&server, &alice, json!({"is_invite": true})).await;
    assert_eq!(rooms, vec![invited.clone()]);
    let (rooms, _) = filtered(&server, &alice, json!({"is_invite": false})).await;
    assert_eq!(rooms, sorted(vec![dm.clone(), encrypted.clone()]));
    let (rooms, _) = filtered(&server, &alice, json!({"is_encrypted": true})).await;
    assert_eq!(rooms, vec![encrypted.clone()]);
    // Filters combine with AND.
    let (rooms, count) = filtered(
        &server,
        &alice,
        json!({"is_encrypted": false, "is_invite": false}),
    )
    .await;
    assert_eq!((rooms, count), (vec![dm.clone()], 1));
    // The answer says which rooms are direct chats.
    let body = ss(&server, &alice, None, &all_rooms(0, json!([]))).await;
    assert_eq!(room(&body, &dm)["is_dm"], true, "{body}");
    assert_eq!(room(&body, &encrypted)["is_dm"], false, "{body}");
}

#[tokio::test]
async fn an_invite_marked_direct_is_a_dm() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let r = create_room(
        &server,
        &bob,
        json!({"is_direct": true, "invite": [alice.user_id], "preset": "trusted_private_chat"}),
    )
    .await;
    let (rooms, _) = filtered(&server, &alice, json!({"is_dm": true})).await;
    assert_eq!(rooms, [r]);
}

#[tokio::test]
async fn filters_room_types_spaces_and_tags() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let space = create_room(
        &server,
        &alice,
        json!({"name": "Space", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let child = create_room(&server, &alice, json!({"name": "Child"})).await;
    let other = create_room(&server, &alice, json!({"name": "Other"})).await;
    set_state(
        &server,
        &alice,
        &space,
        "m.space.child",
        &child,
        json!({"via": ["test.local"]}),
    )
    .await;
    // A child event without `via` is no child.
    set_state(&server, &alice, &space, "m.space.child", &other, json!({})).await;

    let (rooms, _) = filtered(&server, &alice, json!({"room_types": ["m.space"]})).await;
    assert_eq!(rooms, vec![space.clone()]);
    let (rooms, _) = filtered(&server, &alice, json!({"not_room_types": ["m.space"]})).await;
    assert_eq!(rooms, sorted(vec![child.clone(), other.clone()]));
    // `null` is the room without a type.
    let (rooms, _) = filtered(&server, &alice, json!({"room_types": [null]})).await;
    assert_eq!(rooms, sorted(vec![child.clone(), other.clone()]));
    let (rooms, _) = filtered(&server, &alice, json!({"spaces": [space.clone()]})).await;
    assert_eq!(rooms, vec![child.clone()]);

    let tag_path = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite",
        enc(&alice.user_id),
        enc(&other)
    );
    let (st, b) = server.put(&tag_path, alice.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (rooms, _) = filtered(&server, &alice, json!({"tags": ["m.favourite"]})).await;
    assert_eq!(rooms, vec![other.clone()]);
    let (rooms, count) = filtered(&server, &alice, json!({"not_tags": ["m.favourite"]})).await;
    assert_eq!(
        (rooms, count),
        (sorted(vec![space.clone(), child.clone()]), 2)
    );
}

// ---------------------------------------------------------------------------
// Extensions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn to_device_extension_with_since() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let to_alice = |n: u32| json!({ alice.user_id.clone(): { alice.device_id.clone(): {"n": n} } });
    send_to_device(&server, &bob, "m.test", "t1", to_alice(1)).await;
    let req = json!({"lists": {}, "extensions": {"to_device": {"enabled": true}}});
    let body = ss(&server, &alice, None, &req).await;
    let ext = &body["extensions"]["to_device"];
    let events = ext["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "m.test", "{body}");
    assert_eq!(events[0]["sender"], bob.user_id.as_str(), "{body}");
    assert_eq!(events[0]["content"]["n"], 1, "{body}");
    let since = ext["next_batch"].as_str().expect("next_batch").to_owned();

    // Without `since` nothing is acknowledged: the message comes again.
    let again = ss(&server, &alice, None, &req).await;
    assert_eq!(
        again["extensions"]["to_device"]["events"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{again}"
    );
    // With it, the message is acknowledged and only new ones come.
    send_to_device(&server, &bob, "m.test", "t2", to_alice(2)).await;
    let with_since =
        json!({"lists": {}, "extensions": {"to_device": {"enabled": true, "since": since}}});
    // (`again` started the connection afresh: its position is the one.)
    let next = ss(&server, &alice, Some(&pos(&again)), &with_since).await;
    let events = next["extensions"]["to_device"]["events"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(events.len(), 1, "{next}");
    assert_eq!(events[0]["content"]["n"], 2, "{next}");
    // Disabled: no to_device section.
    let off = ss(&server, &alice, None, &json!({"lists": {}})).await;
    assert!(off["extensions"].get("to_device").is_none(), "{off}");
}

#[tokio::test]
async fn to_device_wakes_a_long_poll() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let req = json!({"lists": {}, "extensions": {"to_device": {"enabled": true}}});
    let body = ss(&server, &alice, None, &req).await;
    let since = body["extensions"]["to_device"]["next_batch"]
        .as_str()
        .unwrap();
    let req = json!({"lists": {}, "extensions": {"to_device": {"enabled": true, "since": since}}});
    let poll = spawn_ss(&server, &alice, &pos(&body), req);
    server.wait_for_parked_syncs(1).await;
    let msg = json!({ alice.user_id.clone(): { alice.device_id.clone(): {"hello": 1} } });
    send_to_device(&server, &bob, "m.test", "w1", msg).await;
    let (st, answer) = poll.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{answer}");
    let events = answer["extensions"]["to_device"]["events"]
        .as_array()
        .unwrap();
    assert_eq!(events.len(), 1, "{answer}");
}

#[tokio::test]
async fn e2ee_extension_counts_and_device_lists() {
    let server = TestServer::start().await;
    let (alice, bob, r) = two_in_a_room(&server, "Keys").await;
    upload_keys(
        &server,
        &alice,
        json!({
            "device_keys": own_device_keys(&alice),
            "one_time_keys": {"signed_curve25519:AAAA": {"key": "k1", "signatures": {}}},
            "fallback_keys": {"signed_curve25519:FFFF": {"key": "f1", "fallback": true, "signatures": {}}},
        }),
    )
    .await;
    let req = json!({"lists": {}, "extensions": {"e2ee": {"enabled": true}}});
    let body = ss(&server, &alice, None, &req).await;
    let e2ee = &body["extensions"]["e2ee"];
    assert_eq!(
        e2ee["device_one_time_keys_count"]["signed_curve25519"], 1,
        "{body}"
    );
    assert_eq!(
        e2ee["device_unused_fallback_key_types"],
        json!(["signed_curve25519"]),
        "{body}"
    );
    // bob's new device keys: his list changed for alice, who shares a room.
    upload_keys(&server, &bob, json!({"device_keys": own_device_keys(&bob)})).await;
    let next = ss(&server, &alice, Some(&pos(&body)), &req).await;
    let changed = &next["extensions"]["e2ee"]["device_lists"]["changed"];
    assert_eq!(changed, &json!([bob.user_id]), "{next}");
    // bob leaves their only shared room: alice stops tracking his devices.
    leave(&server, &bob, &r).await;
    let last = ss(&server, &alice, Some(&pos(&next)), &req).await;
    let lists = &last["extensions"]["e2ee"]["device_lists"];
    assert_eq!(lists["left"], json!([bob.user_id]), "{last}");
}

#[tokio::test]
async fn account_data_receipts_and_typing_extensions() {
    let server = TestServer::start().await;
    let (alice, bob, r) = two_in_a_room(&server, "Ext").await;
    put_account_data(&server, &alice, "org.example.global", json!({"g": 1})).await;
    let room_data = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/org.example.room",
        enc(&alice.user_id),
        enc(&r)
    );
    let (st, b) = server.put(&room_data, alice.token(), json!({"r": 1})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let msg = send_text(&server, &bob, &r, "read me").await;
    read_receipt(&server, &bob, &r, &msg).await;
    let typing = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        enc(&r),
        enc(&bob.user_id)
    );
    let (st, b) = server
        .put(
            &typing,
            bob.token(),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");

    let mut req = all_rooms(1, json!([]));
    req["extensions"] = json!({
        "account_data": {"enabled": true},
        "receipts": {"enabled": true},
        "typing": {"enabled": true},
    });
    let body = ss(&server, &alice, None, &req).await;
    let ext = &body["extensions"];
    let global = ext["account_data"]["global"].as_array().expect("global");
    assert!(
        global
            .iter()
            .any(|e| e["type"] == "org.example.global" && e["content"]["g"] == 1),
        "{ext}"
    );
    assert!(global.iter().any(|e| e["type"] == "m.push_rules"), "{ext}");
    let in_room = ext["account_data"]["rooms"][&r]
        .as_array()
        .expect("room data");
    assert!(
        in_room.iter().any(|e| e["type"] == "org.example.room"),
        "{ext}"
    );
    let receipt = &ext["receipts"]["rooms"][&r];
    assert_eq!(receipt["type"], "m.receipt", "{ext}");
    assert!(
        receipt["content"][&msg]["m.read"][&bob.user_id]["ts"].is_u64(),
        "{ext}"
    );
    let typing_ev = &ext["typing"]["rooms"][&r];
    assert_eq!(typing_ev["type"], "m.typing", "{ext}");
    assert_eq!(
        typing_ev["content"]["user_ids"],
        json!([bob.user_id]),
        "{ext}"
    );

    // Incrementally: only what changed.
    put_account_data(&server, &alice, "org.example.second", json!({})).await;
    let next = ss(&server, &alice, Some(&pos(&body)), &req).await;
    let ext = &next["extensions"];
    let global: Vec<&str> = ext["account_data"]["global"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(global, ["org.example.second"], "{next}");
    assert!(ext["receipts"]["rooms"].get(&r).is_none(), "{next}");
    assert!(ext["typing"]["rooms"].get(&r).is_none(), "{next}");
}

#[tokio::test]
async fn a_new_invite_wakes_a_long_poll_and_joins_the_list() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let req = all_rooms(1, json!([]));
    let body = ss(&server, &alice, None, &req).await;
    assert_eq!(body["lists"]["all"]["count"], 0, "{body}");
    let poll = spawn_ss(&server, &alice, &pos(&body), req);
    server.wait_for_parked_syncs(1).await;
    let r = create_room(&server, &bob, json!({"name": "Join us"})).await;
    invite(&server, &bob, &r, &alice.user_id).await;
    let (st, answer) = poll.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{answer}");
    // Only the invite touches alice: the answer is the invite's.
    assert_eq!(answer["lists"]["all"]["count"], 1, "{answer}");
    let got = room(&answer, &r);
    assert_eq!(got["initial"], true, "{got}");
    assert!(got["invite_state"].is_array(), "{got}");
}
