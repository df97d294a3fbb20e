//! Send-to-device (sytest 46direct): `PUT /sendToDevice/{type}/{txnId}` and
//! `/sync`'s `to_device`, delivered in order until acknowledged by a sync
//! with the next `since`, at most 100 a response.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// What sytest's `matrix_recv_device_message` syncs with: no rooms, no
/// account data, no presence.
const ONLY_TO_DEVICE: &str =
    r#"{"room":{"rooms":[]},"account_data":{"types":[]},"presence":{"types":[]}}"#;

async fn sync_device(server: &TestServer, who: &Session, since: Option<&str>) -> Value {
    let filter = format!("filter={}", enc(ONLY_TO_DEVICE));
    match since {
        Some(since) => {
            sync(
                server,
                who,
                &format!("{filter}&since={}&timeout=0", enc(since)),
            )
            .await
        }
        None => sync(server, who, &format!("{filter}&timeout=0")).await,
    }
}

fn event(sender: &Session, ty: &str, content: Value) -> Value {
    json!({"type": ty, "sender": sender.user_id, "content": content})
}

/// `{who: {who's device: content}}`.
fn to_own_device(who: &Session, content: Value) -> Value {
    json!({who.user_id.clone(): {who.device_id.clone(): content}})
}

/// `who` sends a `my.test.type` message to their own device.
async fn send_self(server: &TestServer, who: &Session, txn: &str, content: Value) {
    let messages = to_own_device(who, content);
    send_to_device(server, who, "my.test.type", txn, messages).await;
}

/// Asserts a sync body's `to_device` holds exactly one `my.test.type`
/// message from `sender` with `content`.
#[track_caller]
fn assert_one(body: &Value, sender: &Session, content: Value) {
    assert_eq!(
        to_device_events(body),
        vec![event(sender, "my.test.type", content)],
        "{body}"
    );
}

/// Logs alice in on the device `PHONE`.
async fn login_phone(server: &TestServer) -> Session {
    let (st, b) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": "password123", "device_id": "PHONE"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    Session::from_answer(&b)
}

/// `from` sends `to`'s device `count` messages, `{"n": 0}` upwards, one a
/// request.
async fn send_numbered(server: &TestServer, from: &Session, to: &Session, count: i64) {
    for n in 0..count {
        let messages = json!({to.user_id.clone(): {to.device_id.clone(): {"n": n}}});
        send_to_device(server, from, "my.test.type", &format!("m{n}"), messages).await;
    }
}

/// sytest "Can send a message directly to a device using PUT
/// /sendToDevice", "Can recv a device message using /sync", "Can send a
/// to-device message to two users which both receive it using /sync": the
/// answer is `{}`, each recipient gets exactly `{type, sender, content}`.
#[tokio::test]
async fn each_recipient_gets_its_message_in_the_spec_shape() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let bob_since = next_batch(&sync_device(&server, &bob, None).await);
    let carol_since = next_batch(&sync_device(&server, &carol, None).await);

    send_to_device(
        &server,
        &alice,
        "my.test.type",
        "t1",
        json!({
            bob.user_id.clone(): {bob.device_id.clone(): {"my_key": "r1"}},
            carol.user_id.clone(): {carol.device_id.clone(): {"my_key": "r2"}},
        }),
    )
    .await;

    let b = sync_device(&server, &bob, Some(&bob_since)).await;
    assert_one(&b, &alice, json!({"my_key": "r1"}));
    let c = sync_device(&server, &carol, Some(&carol_since)).await;
    assert_one(&c, &alice, json!({"my_key": "r2"}));
    // An initial sync gets what is waiting too (sytest's first receive has
    // no `since`), and the sender's own device got nothing.
    assert_eq!(
        to_device_events(&sync_device(&server, &bob, None).await).len(),
        1
    );
    assert!(to_device_events(&sync_device(&server, &alice, None).await).is_empty());
    // r0 path too, with the plain /sync default filter.
    let (st, body) = server
        .put(
            &format!("/_matrix/client/r0/sendToDevice/m.other/{}", enc("t 2")),
            alice.token(),
            json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {}}}}),
        )
        .await;
    assert_eq!((st, body), (StatusCode::OK, json!({})));
    let b2 = sync_since(&server, &bob, &next_batch(&b)).await;
    assert_eq!(
        to_device_events(&b2),
        vec![event(&alice, "m.other", json!({}))]
    );
}

/// sytest "Can recv device messages until they are acknowledged": a sync
/// with the old `since` gets the message again; once a sync used the
/// `next_batch` that carried it, never again (its row is gone).
#[tokio::test]
async fn messages_come_again_until_acknowledged_and_never_after() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t0 = next_batch(&sync_device(&server, &alice, None).await);
    let first = json!({"message": "first"});
    send_self(&server, &alice, "a", first.clone()).await;

    assert_one(
        &sync_device(&server, &alice, Some(&t0)).await,
        &alice,
        first.clone(),
    );
    let again = sync_device(&server, &alice, Some(&t0)).await;
    assert_one(&again, &alice, first);
    assert_eq!(inbox_rows(&server, &alice).await, 1, "not acknowledged yet");

    let ack = sync_device(&server, &alice, Some(&next_batch(&again))).await;
    assert!(to_device_events(&ack).is_empty(), "{ack}");
    assert_eq!(
        inbox_rows(&server, &alice).await,
        0,
        "deleted on acknowledgement"
    );
    let old = sync_device(&server, &alice, Some(&t0)).await;
    assert!(to_device_events(&old).is_empty(), "acknowledged: {old}");

    let second = json!({"message": "second"});
    send_self(&server, &alice, "b", second.clone()).await;
    let got = sync_device(&server, &alice, Some(&next_batch(&ack))).await;
    assert_one(&got, &alice, second);
}

/// sytest "Device messages with the same txn_id are deduplicated": a retry
/// (same device, type and transaction id) stores nothing, even after the
/// first was acknowledged; another device, or another type, is a new send.
#[tokio::test]
async fn a_retried_transaction_id_is_stored_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let alice2 = server.login("alice", "password123").await;
    let t0 = next_batch(&sync_device(&server, &alice, None).await);
    let first = json!({"message": "first"});
    send_self(&server, &alice, "txn", first.clone()).await;
    send_self(&server, &alice, "txn", first.clone()).await;
    let got = sync_device(&server, &alice, Some(&t0)).await;
    assert_one(&got, &alice, first.clone());

    let acked = next_batch(&sync_device(&server, &alice, Some(&next_batch(&got))).await);
    send_self(&server, &alice, "txn", first).await;
    let to_alice = |content| to_own_device(&alice, content);
    send_to_device(
        &server,
        &alice2,
        "my.test.type",
        "txn",
        to_alice(json!({"n": 2})),
    )
    .await;
    send_to_device(
        &server,
        &alice,
        "my.other",
        "txn",
        to_alice(json!({"n": 3})),
    )
    .await;
    let got = sync_device(&server, &alice, Some(&acked)).await;
    assert_eq!(
        to_device_events(&got),
        vec![
            event(&alice, "my.test.type", json!({"n": 2})),
            event(&alice, "my.other", json!({"n": 3})),
        ]
    );
}

/// sytest "Can send messages with a wildcard device id" (and "... to two
/// devices"): `*` reaches each of the user's devices; a device named beside
/// it gets its own content instead.
#[tokio::test]
async fn a_wildcard_reaches_every_device_of_the_user() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let alice2 = server.login("alice", "password123").await;
    let alice3 = server.login("alice", "password123").await;
    let t1 = next_batch(&sync_device(&server, &alice, None).await);
    let t2 = next_batch(&sync_device(&server, &alice2, None).await);
    let t3 = next_batch(&sync_device(&server, &alice3, None).await);
    send_to_device(
        &server,
        &alice,
        "my.test.type",
        "w1",
        json!({alice.user_id.clone(): {"*": {"message": "first"}}}),
    )
    .await;
    let first = vec![event(&alice, "my.test.type", json!({"message": "first"}))];
    let r1 = sync_device(&server, &alice, Some(&t1)).await;
    let r2 = sync_device(&server, &alice2, Some(&t2)).await;
    let r3 = sync_device(&server, &alice3, Some(&t3)).await;
    for r in [&r1, &r2, &r3] {
        assert_eq!(to_device_events(r), first);
    }

    send_to_device(
        &server,
        &alice,
        "my.test.type",
        "w2",
        json!({alice.user_id.clone(): {"*": {"message": "second"}, alice3.device_id.clone(): {"just": 3}}}),
    )
    .await;
    let second = vec![event(&alice, "my.test.type", json!({"message": "second"}))];
    let r1 = sync_device(&server, &alice, Some(&next_batch(&r1))).await;
    let r2 = sync_device(&server, &alice2, Some(&next_batch(&r2))).await;
    let r3 = sync_device(&server, &alice3, Some(&next_batch(&r3))).await;
    assert_eq!(to_device_events(&r1), second, "the first not again");
    assert_eq!(to_device_events(&r2), second);
    assert_one(&r3, &alice, json!({"just": 3}));
}

/// A body that names a user or a device twice (JSON allows it) is read as a
/// map, as Synapse and ruma read it: what is named last counts, and a user
/// named again replaces what was named for them before.
#[tokio::test]
async fn a_user_or_device_named_twice_gets_what_is_named_last() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let alice2 = server.login("alice", "password123").await;
    let t1 = next_batch(&sync_device(&server, &alice, None).await);
    let t2 = next_batch(&sync_device(&server, &alice2, None).await);
    let (user, device) = (&alice.user_id, &alice.device_id);
    let body = format!(
        r#"{{"messages": {{"{user}": {{"{device}": {{"n": 1}}, "*": {{"w": 1}}, "{device}": {{"n": 2}}, "*": {{"w": 2}}}}}}}}"#
    );
    let path = "/_matrix/client/v3/sendToDevice/my.test.type/twice1";
    let (st, b) = server
        .request_raw(reqwest::Method::PUT, path, alice.token(), body)
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let r1 = sync_device(&server, &alice, Some(&t1)).await;
    let r2 = sync_device(&server, &alice2, Some(&t2)).await;
    assert_one(&r1, &alice, json!({"n": 2}));
    assert_one(&r2, &alice, json!({"w": 2}));

    let device2 = &alice2.device_id;
    let body = format!(
        r#"{{"messages": {{"{user}": {{"*": {{"v": 1}}}}, "{user}": {{"{device2}": {{"v": 2}}}}}}}}"#
    );
    let path = "/_matrix/client/v3/sendToDevice/my.test.type/twice2";
    let (st, b) = server
        .request_raw(reqwest::Method::PUT, path, alice.token(), body)
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let r1 = sync_device(&server, &alice, Some(&next_batch(&r1))).await;
    let r2 = sync_device(&server, &alice2, Some(&next_batch(&r2))).await;
    assert_eq!(to_device_events(&r1), Vec::<Value>::new(), "{r1}");
    assert_one(&r2, &alice, json!({"v": 2}));
}

/// sytest "Device messages wake up /sync", "Wildcard device messages wake
/// up /sync": a parked sync answers as soon as a message for its device is
/// stored.
#[tokio::test]
async fn a_message_wakes_the_parked_sync_of_its_device() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for (txn, device) in [("d1", alice.device_id.clone()), ("d2", "*".to_owned())] {
        let since = next_batch(&sync_device(&server, &alice, None).await);
        let poll = spawn_poll(&server, &alice, &since, 20_000);
        server.wait_for_parked_syncs(1).await;
        let sent = std::time::Instant::now();
        send_to_device(
            &server,
            &alice,
            "my.test.type",
            txn,
            json!({alice.user_id.clone(): {device: {"my_key": txn}}}),
        )
        .await;
        let (st, body, answered) = poll.await.unwrap();
        assert_eq!(st, StatusCode::OK);
        assert_one(&body, &alice, json!({"my_key": txn}));
        assert!(
            answered.duration_since(sent) < Duration::from_secs(10),
            "woken, not timed out"
        );
        // Acknowledge, so the next round starts with an empty inbox.
        sync_device(&server, &alice, Some(&next_batch(&body))).await;
    }
}

/// 101 messages: the first sync gets 100 in order and a `next_batch` that
/// brings the last at once; a room message sent after them is in exactly
/// one of the two answers.
#[tokio::test]
async fn more_than_a_hundred_messages_come_over_two_syncs_in_order() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &bob, json!({})).await;
    let t0 = sync_token(&server, &bob).await;
    send_numbered(&server, &alice, &bob, 101).await;
    let message = send_text(&server, &bob, &room, "after them").await;

    let first = sync_since(&server, &bob, &t0).await;
    let events = to_device_events(&first);
    let numbers: Vec<i64> = events
        .iter()
        .map(|e| e["content"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (0..100).collect::<Vec<i64>>());
    let second = sync(
        &server,
        &bob,
        &format!("since={}&timeout=30000", enc(&next_batch(&first))),
    )
    .await;
    assert_one(&second, &alice, json!({"n": 100}));
    let timeline_ids = |body: &Value| -> Vec<String> {
        body["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .map(|e| e["event_id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let seen: Vec<String> = timeline_ids(&first)
        .into_iter()
        .chain(timeline_ids(&second))
        .filter(|id| *id == message)
        .collect();
    assert_eq!(
        seen,
        vec![message],
        "the room message once: {first} {second}"
    );
    // Acknowledged: the inbox is empty.
    sync_since(&server, &bob, &next_batch(&second)).await;
    assert_eq!(inbox_rows(&server, &bob).await, 0);
}

/// Deleting a device (logout) deletes its inbox, and a device created
/// later (even under the same id) gets nothing sent before it existed.
#[tokio::test]
async fn a_deleted_device_loses_its_inbox_and_a_new_one_gets_nothing_old() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let phone = login_phone(&server).await;
    let to_phone = |n: i64| json!({alice.user_id.clone(): {"PHONE": {"n": n}}});
    send_to_device(&server, &alice, "my.test.type", "x1", to_phone(1)).await;
    assert_eq!(inbox_rows(&server, &phone).await, 1);

    let (st, _) = server
        .post("/_matrix/client/v3/logout", phone.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(inbox_rows(&server, &phone).await, 0, "gone with the device");
    // Sent while no PHONE exists: nobody gets it (and the send still works).
    send_to_device(&server, &alice, "my.test.type", "x2", to_phone(2)).await;
    let phone = login_phone(&server).await;
    assert!(to_device_events(&sync_device(&server, &phone, None).await).is_empty());
    // The new PHONE may use the old one's transaction ids.
    send_to_device(&server, &phone, "my.test.type", "x1", to_phone(3)).await;
    assert_one(
        &sync_device(&server, &phone, None).await,
        &alice,
        json!({"n": 3}),
    );

    // Deactivation empties every inbox of the user.
    deactivate(&server, &alice, "alice").await;
    assert_eq!(inbox_rows(&server, &phone).await, 0);
}

/// Unknown local users and devices are left out silently; a user of
/// another server (federation is not there yet: issue 19 asks for a clear
/// refusal until it is) and a content that is not an object each fail the
/// whole request, which stores nothing.
#[tokio::test]
async fn unknown_recipients_are_ignored_and_bad_input_is_refused() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t0 = next_batch(&sync_device(&server, &alice, None).await);
    let nobody = server.user_id("nobody");
    send_to_device(
        &server,
        &alice,
        "my.test.type",
        "u1",
        json!({
            nobody: {"*": {}},
            alice.user_id.clone(): {"NOSUCHDEVICE": {}},
        }),
    )
    .await;
    let remote = try_send_to_device(
        &server,
        &alice,
        "my.test.type",
        "r1",
        json!({
            alice.user_id.clone(): {alice.device_id.clone(): {"ok": 1}},
            "@someone:elsewhere.example": {"DEV": {}},
        }),
    )
    .await;
    assert_error(&remote, 400, "M_INVALID_PARAM");
    send_to_device(&server, &alice, "my.test.type", "u2", json!({})).await;

    let bad = try_send_to_device(
        &server,
        &alice,
        "my.test.type",
        "b1",
        json!({alice.user_id.clone(): {alice.device_id.clone(): {"ok": 1}, "*": "not an object"}}),
    )
    .await;
    assert_error(&bad, 400, "M_BAD_JSON");
    let path = "/_matrix/client/v3/sendToDevice/my.test.type/b2";
    assert_error(
        &server.put(path, alice.token(), json!({})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .put(
                path,
                alice.token(),
                json!({"messages": {"not a user id": {}}}),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    let raw = server
        .request_raw(reqwest::Method::PUT, path, alice.token(), "{not json")
        .await;
    assert_error(&raw, 400, "M_NOT_JSON");
    assert_error(
        &server.put(path, None, json!({"messages": {}})).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .put(path, Some("nope"), json!({"messages": {}}))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let after = sync_device(&server, &alice, Some(&t0)).await;
    assert!(to_device_events(&after).is_empty(), "{after}");
    assert_eq!(inbox_rows(&server, &alice).await, 0);
}

/// Guests may send and receive to-device messages (the spec lists the
/// endpoint among theirs).
#[tokio::test]
async fn guests_send_and_receive() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let guest = server.guest().await;
    let alice = server.user("alice").await;
    send_to_device(
        &server,
        &guest,
        "my.test.type",
        "g1",
        json!({alice.user_id.clone(): {"*": {"from": "guest"}}, guest.user_id.clone(): {"*": {"to": "self"}}}),
    )
    .await;
    assert_eq!(
        to_device_events(&sync_device(&server, &alice, None).await),
        vec![event(&guest, "my.test.type", json!({"from": "guest"}))]
    );
    assert_eq!(
        to_device_events(&sync_device(&server, &guest, None).await),
        vec![event(&guest, "my.test.type", json!({"to": "self"}))]
    );
}

/// The inbox outlives a restart, and so does the stream position: after
/// the only message was acknowledged (its row deleted), a restart does not
/// hand its position out again, so a message sent then still comes to a
/// client whose token is at that position.
#[tokio::test]
async fn messages_and_positions_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t0 = next_batch(&sync_device(&server, &alice, None).await);
    send_self(&server, &alice, "r1", json!({"n": 1})).await;
    server.restart().await;
    let got = sync_device(&server, &alice, Some(&t0)).await;
    assert_one(&got, &alice, json!({"n": 1}));
    let acked = next_batch(&sync_device(&server, &alice, Some(&next_batch(&got))).await);
    assert_eq!(inbox_rows(&server, &alice).await, 0);

    server.restart().await;
    send_self(&server, &alice, "r2", json!({"n": 2})).await;
    assert_one(
        &sync_device(&server, &alice, Some(&acked)).await,
        &alice,
        json!({"n": 2}),
    );
}

/// Oversized sends (issue 19 "Bad input") are refused whole with 413
/// `M_TOO_LARGE` naming the limit, never stored in part: a content over
/// 65536 bytes (Synapse's `MAX_TO_DEVICE_CONTENT_SIZE`), more recipient
/// devices than `limits.max_to_device_messages` once `*` is expanded, more
/// bytes than `limits.max_to_device_bytes`, a body over
/// `limits.max_request_bytes`. The refused transaction id stays free: the
/// client splits the batch and sends it again.
#[tokio::test]
async fn oversized_sends_are_refused_whole_and_name_the_limit() {
    let server = TestServer::start_with(|c| {
        c.limits.max_to_device_messages = 3;
        c.limits.max_to_device_bytes = 100_000;
        c.limits.max_request_bytes = 200_000;
    })
    .await;
    let alice = server.user("alice").await;
    let phone = login_phone(&server).await;
    let bob = server.user("bob").await;
    let bob2 = server.login("bob", "password123").await;
    let refused = |resp: &(StatusCode, Value), limit: &str| {
        assert_error(resp, 413, "M_TOO_LARGE");
        let message = resp.1["error"].as_str().unwrap_or_default();
        assert!(message.contains(limit), "names {limit}: {}", resp.1);
    };

    // One content too large (its canonical JSON: the padding is counted).
    let big = "x".repeat(65_537);
    let messages = json!({bob.user_id.clone(): {bob.device_id.clone(): {"b": big}}});
    let resp = try_send_to_device(&server, &alice, "my.test.type", "big", messages).await;
    refused(&resp, "65536");
    // Just within: accepted, whitespace as sent not counted.
    let fits = "x".repeat(65_536 - r#"{"b":""}"#.len());
    let raw = format!(
        r#"{{"messages": {{"{}": {{"{}": {{ "b" : "{fits}" }} }} }} }}"#,
        bob.user_id, bob.device_id
    );
    let path = "/_matrix/client/v3/sendToDevice/my.test.type/fits";
    let resp = server
        .request_raw(reqwest::Method::PUT, path, bob.token(), raw)
        .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(stored_sends(&server).await, 1);
    let t = next_batch(&sync_device(&server, &bob, None).await);
    sync_device(&server, &bob, Some(&t)).await;
    assert_eq!(stored_sends(&server).await, 0, "acknowledged");

    // Four recipient devices ("*" expanded: alice's two, bob's two) over 3.
    let wide = json!({
        alice.user_id.clone(): {"*": {"n": 1}},
        bob.user_id.clone(): {"*": {"n": 1}},
    });
    let resp = try_send_to_device(&server, &alice, "my.test.type", "wide", wide).await;
    refused(&resp, "3");
    assert_eq!(stored_sends(&server).await, 0, "nothing stored");
    // Split by the client, under the same transaction id for the first half.
    for (txn, user) in [("wide", &alice.user_id), ("wide2", &bob.user_id)] {
        let half = json!({user.clone(): {"*": {"n": 1}}});
        send_to_device(&server, &alice, "my.test.type", txn, half).await;
    }
    for who in [&alice, &phone, &bob, &bob2] {
        assert_eq!(inbox_rows(&server, who).await, 1, "{}", who.device_id);
    }
    // Three named devices are within the count; unknown devices count
    // for nothing.
    send_to_device(
        &server,
        &alice,
        "my.test.type",
        "three",
        json!({
            alice.user_id.clone(): {alice.device_id.clone(): {}, "NOSUCH1": {}, "NOSUCH2": {}},
            bob.user_id.clone(): {bob.device_id.clone(): {}, bob2.device_id.clone(): {}},
        }),
    )
    .await;

    // Bytes: 40,000 each to three devices is over 100,000.
    let rows = stored_sends(&server).await;
    let part = "y".repeat(40_000);
    let resp = try_send_to_device(
        &server,
        &alice,
        "my.test.type",
        "bytes",
        json!({
            alice.user_id.clone(): {phone.device_id.clone(): {"p": part}},
            bob.user_id.clone(): {"*": {"p": part}},
        }),
    )
    .await;
    refused(&resp, "100000");
    assert_eq!(stored_sends(&server).await, rows, "nothing stored");

    // The body itself over max_request_bytes (each content within 65536).
    let mut by_device = serde_json::Map::new();
    for n in 0..4 {
        by_device.insert(format!("NOSUCH{n}"), json!({"p": "z".repeat(60_000)}));
    }
    let resp = try_send_to_device(
        &server,
        &alice,
        "my.test.type",
        "body",
        json!({bob.user_id.clone(): by_device}),
    )
    .await;
    refused(&resp, "200000");
    assert_eq!(stored_sends(&server).await, rows, "nothing stored");
}

/// A device with thousands of messages waiting gets them all across
/// syncs of 100, in order and exactly once; each batch comes again until
/// the next sync acknowledges it with its `since`, and only then is it
/// deleted.
#[tokio::test]
async fn thousands_waiting_arrive_in_order_once_and_go_when_acknowledged() {
    const TOTAL: i64 = 2_050;
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut since = next_batch(&sync_device(&server, &bob, None).await);
    send_numbered(&server, &alice, &bob, TOTAL).await;
    let numbers = |body: &Value| -> Vec<i64> {
        to_device_events(body)
            .iter()
            .map(|e| e["content"]["n"].as_i64().unwrap())
            .collect()
    };
    let mut received = Vec::new();
    loop {
        let body = sync_device(&server, &bob, Some(&since)).await;
        let got = numbers(&body);
        // Everything before `since` is gone, nothing after it yet.
        let delivered = i64::try_from(received.len()).unwrap();
        assert_eq!(inbox_rows(&server, &bob).await, TOTAL - delivered);
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 100, "{}", got.len());
        // Not acknowledged yet: the same `since` gets the same batch.
        let again = sync_device(&server, &bob, Some(&since)).await;
        assert_eq!(numbers(&again), got, "unacknowledged batch comes again");
        assert_eq!(next_batch(&again), next_batch(&body));
        received.extend(got);
        since = next_batch(&body);
    }
    assert_eq!(received, (0..TOTAL).collect::<Vec<_>>());
    assert_eq!(inbox_rows(&server, &bob).await, 0);
}

/// The `n` of each `my.test.type` message of a sync body, in order.
fn numbers(body: &Value) -> Vec<i64> {
    to_device_events(body)
        .iter()
        .map(|e| e["content"]["n"].as_i64().expect("n"))
        .collect()
}

/// Restarts between every step: messages waiting come after a restart, an
/// unacknowledged batch comes again, and an acknowledgement (a sync with
/// the next `since`) is kept across restarts, so acknowledged messages
/// never come again, not even to a sync with an older `since`.
#[tokio::test]
async fn waiting_messages_and_acknowledgements_survive_restarts() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let t0 = next_batch(&sync_device(&server, &bob, None).await);
    send_numbered(&server, &alice, &bob, 150).await;
    server.restart().await;
    let b1 = sync_device(&server, &bob, Some(&t0)).await;
    assert_eq!(numbers(&b1), (0..100).collect::<Vec<_>>());
    server.restart().await;
    let again = sync_device(&server, &bob, Some(&t0)).await;
    assert_eq!(
        numbers(&again),
        (0..100).collect::<Vec<_>>(),
        "not acknowledged"
    );
    let b2 = sync_device(&server, &bob, Some(&next_batch(&b1))).await;
    assert_eq!(numbers(&b2), (100..150).collect::<Vec<_>>());
    assert_eq!(inbox_rows(&server, &bob).await, 50);
    assert_eq!(
        stored_sends(&server).await,
        50,
        "acknowledged sends deleted"
    );

    server.restart().await;
    let old = sync_device(&server, &bob, Some(&t0)).await;
    assert_eq!(
        numbers(&old),
        (100..150).collect::<Vec<_>>(),
        "an older since gets only what was not acknowledged"
    );
    let b3 = sync_device(&server, &bob, Some(&next_batch(&b2))).await;
    assert!(numbers(&b3).is_empty());
    assert_eq!(stored_sends(&server).await, 0);
    server.restart().await;
    assert!(numbers(&sync_device(&server, &bob, Some(&t0)).await).is_empty());
    assert!(numbers(&sync_device(&server, &bob, None).await).is_empty());
    // Positions go on after the sends are gone.
    let messages = json!({bob.user_id.clone(): {bob.device_id.clone(): {"n": 0}}});
    send_to_device(&server, &alice, "my.test.type", "after", messages).await;
    assert_eq!(
        numbers(&sync_device(&server, &bob, Some(&next_batch(&b3))).await),
        [0]
    );
}

/// A send to several devices stays stored until the last of them
/// acknowledges it: one device drains a large backlog, the other part of
/// it, then after a restart the rest, in order.
#[tokio::test]
async fn a_send_stays_until_its_last_device_acknowledges_it() {
    const TOTAL: i64 = 250;
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let phone = login_phone(&server).await;
    let t0 = next_batch(&sync_device(&server, &alice, None).await);
    let p0 = next_batch(&sync_device(&server, &phone, None).await);
    for n in 0..TOTAL {
        let messages = json!({alice.user_id.clone(): {"*": {"n": n}}});
        send_to_device(&server, &alice, "my.test.type", &format!("w{n}"), messages).await;
    }
    // The first device drains everything.
    let (mut since, mut got) = (t0, Vec::new());
    loop {
        let b = sync_device(&server, &alice, Some(&since)).await;
        since = next_batch(&b);
        if numbers(&b).is_empty() {
            break;
        }
        got.extend(numbers(&b));
    }
    assert_eq!(got, (0..TOTAL).collect::<Vec<_>>());
    assert_eq!(inbox_rows(&server, &alice).await, 0);
    assert_eq!(
        stored_sends(&server).await,
        TOTAL,
        "the phone waits for all"
    );
    // The phone takes one batch and acknowledges it.
    let b = sync_device(&server, &phone, Some(&p0)).await;
    assert_eq!(numbers(&b), (0..100).collect::<Vec<_>>());
    let b = sync_device(&server, &phone, Some(&next_batch(&b))).await;
    assert_eq!(numbers(&b), (100..200).collect::<Vec<_>>());
    assert_eq!(stored_sends(&server).await, TOTAL - 100);
    assert_eq!(inbox_rows(&server, &phone).await, TOTAL - 100);

    server.restart().await;
    let rest = sync_device(&server, &phone, Some(&next_batch(&b))).await;
    assert_eq!(numbers(&rest), (200..TOTAL).collect::<Vec<_>>());
    assert_eq!(stored_sends(&server).await, TOTAL - 200);
    let done = sync_device(&server, &phone, Some(&next_batch(&rest))).await;
    assert!(numbers(&done).is_empty());
    assert_eq!(stored_sends(&server).await, 0);
    assert!(numbers(&sync_device(&server, &alice, Some(&since)).await).is_empty());
}

/// Deleting a device with messages waiting frees the sends only it waited
/// for at once, keeps those another device still waits for, and a new
/// device with the same id gets none of them, before or after a restart.
#[tokio::test]
async fn a_deleted_devices_waiting_messages_go_and_free_their_sends() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let phone = login_phone(&server).await;
    let to_phone = |n: i64| json!({alice.user_id.clone(): {"PHONE": {"n": n}}});
    let to_both = |n: i64| json!({alice.user_id.clone(): {"*": {"n": n}}});
    let t0 = next_batch(&sync_device(&server, &alice, None).await);
    send_to_device(&server, &alice, "my.test.type", "p1", to_phone(1)).await;
    send_to_device(&server, &alice, "my.test.type", "b2", to_both(2)).await;
    assert_eq!(inbox_rows(&server, &phone).await, 2);
    assert_eq!(stored_sends(&server).await, 2);

    let (st, _) = server
        .post("/_matrix/client/v3/logout", phone.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(inbox_rows(&server, &phone).await, 0);
    assert_eq!(
        stored_sends(&server).await,
        1,
        "alice's own device waits for b2"
    );
    let phone = login_phone(&server).await;
    assert!(numbers(&sync_device(&server, &phone, None).await).is_empty());
    server.restart().await;
    assert!(numbers(&sync_device(&server, &phone, None).await).is_empty());
    let got = sync_device(&server, &alice, Some(&t0)).await;
    assert_eq!(numbers(&got), [2]);
    sync_device(&server, &alice, Some(&next_batch(&got))).await;
    assert_eq!(stored_sends(&server).await, 0);
}

/// Contents larger than a stored piece of a send (8 KiB), several to a
/// send, come back whole from storage after a restart (nothing in memory
/// then): each device gets exactly its own, wherever the pieces cut it, in
/// order, and a second device of the sender's user gets its own too.
#[tokio::test]
async fn large_contents_come_back_whole_from_storage_after_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let phone = login_phone(&server).await;
    let recipients = [&bob, &phone, &carol];
    let mut since = Vec::new();
    for r in recipients {
        since.push(next_batch(&sync_device(&server, r, None).await));
    }
    // Sizes differ per device and round, so the cuts fall all over.
    let size = |i: usize, round: usize| 5_000 + 7_919 * (i + 2 * round);
    for round in 0..3 {
        let mut messages = serde_json::Map::new();
        for (i, r) in recipients.iter().enumerate() {
            let content =
                json!({"to": r.device_id, "round": round, "pad": "x".repeat(size(i, round))});
            messages
                .entry(r.user_id.clone())
                .or_insert_with(|| json!({}))[r.device_id.as_str()] = content;
        }
        let txn = format!("big{round}");
        send_to_device(
            &server,
            &alice,
            "my.test.type",
            &txn,
            Value::Object(messages),
        )
        .await;
    }
    server.restart().await;
    for (i, r) in recipients.iter().enumerate() {
        let body = sync_device(&server, r, Some(&since[i])).await;
        let events = to_device_events(&body);
        assert_eq!(events.len(), 3, "{}", r.device_id);
        for (round, e) in events.iter().enumerate() {
            let c = &e["content"];
            assert_eq!(c["to"], r.device_id.as_str());
            assert_eq!(c["round"], round);
            assert_eq!(c["pad"].as_str().map(str::len), Some(size(i, round)));
            assert_eq!(e["sender"], alice.user_id.as_str());
        }
    }
}
