//! Homeserver → application service transactions against the fake
//! application service: which events reach it (namespaced senders and
//! members, rooms where a namespaced user is joined, aliased rooms), with
//! the `hs_token`, in order; a failed transaction retried with the same id
//! and body; every event once and in order after the service was down; the
//! queue surviving a restart; a hanging service delaying nothing else.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const REGISTER: &str = "/_matrix/client/v3/register";

/// A server with the bridge registered at the fake service, retrying fast.
async fn server_and_bridge() -> (TestServer, RegistrationFiles, FakeAppService) {
    let fake = FakeAppService::start().await;
    let (s, files) =
        server_with_fast_retries(&[&bridge_registration(&format!("\"{}\"", fake.url))]).await;
    (s, files, fake)
}

async fn server_with_fast_retries(files: &[&str]) -> (TestServer, RegistrationFiles) {
    server_with_timeout(files, 5).await
}

async fn server_with_timeout(files: &[&str], timeout_secs: u64) -> (TestServer, RegistrationFiles) {
    let files = RegistrationFiles::new(files);
    let paths = files.paths.clone();
    let s = TestServer::start_with(|c| {
        c.app_services = paths;
        c.app_service_delivery.first_retry_ms = 20;
        c.app_service_delivery.max_retry_ms = 200;
        c.app_service_delivery.timeout_secs = timeout_secs;
    })
    .await;
    (s, files)
}

/// Registers `localpart` through the bridge (no login).
async fn ghost(s: &TestServer, localpart: &str) -> String {
    let body = json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true});
    let (st, b) = s.post(REGISTER, Some(AS_TOKEN), body).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["user_id"].as_str().unwrap().to_owned()
}

/// Joins `room` as the ghost (the bridge's token, `?user_id=`).
async fn ghost_join(s: &TestServer, ghost: &str, room: &str) {
    let (st, b) = s
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?user_id={}",
                enc(room),
                enc(ghost)
            ),
            Some(AS_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

/// Transactions until `n` events arrived: (txn id, event) in arrival order,
/// and every transaction's id with its body.
async fn collect_events(
    fake: &FakeAppService,
    n: usize,
) -> (Vec<(String, Value)>, Vec<(String, Value)>) {
    let mut events = Vec::new();
    let mut txns = Vec::new();
    while events.len() < n {
        let (id, r) = fake.next_transaction().await;
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {HS_TOKEN}").as_str())
        );
        for e in r.body["events"].as_array().expect("events") {
            events.push((id.clone(), e.clone()));
        }
        txns.push((id, r.body));
    }
    (events, txns)
}

/// Points `#bridge_lobby` (in the bridge's exclusive alias namespace, so
/// the bridge creates it) at `room`.
async fn alias_in_bridge_namespace(s: &TestServer, room: &str) {
    let (st, b) = s
        .put(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                enc("#bridge_lobby:test.local")
            ),
            Some(AS_TOKEN),
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

fn bodies_of(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(_, e)| e["type"] == "m.room.message")
        .map(|(_, e)| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn events_of_rooms_with_a_namespaced_member_reach_the_service_in_order() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    // A room the bridge has no one in: nothing of it is sent.
    let quiet = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    send_text(&s, &alice, &quiet, "not for the bridge").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    for i in 0..3 {
        send_text(&s, &alice, &room, &format!("hello {i}")).await;
    }
    let (events, txns) = collect_events(&fake, 4).await;
    assert_eq!(events[0].1["type"], "m.room.member", "{:?}", events[0]);
    assert_eq!(events[0].1["state_key"], bob);
    assert_eq!(bodies_of(&events), ["hello 0", "hello 1", "hello 2"]);
    for (_, e) in &events {
        assert_eq!(e["room_id"], room, "only the bridged room: {e}");
        assert!(
            e["event_id"].is_string() && e["origin_server_ts"].is_number(),
            "{e}"
        );
    }
    // Ids count up; `receive_ephemeral` gives the ephemeral keys.
    let ids: Vec<i64> = txns.iter().map(|(id, _)| id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(txns[0].1["ephemeral"].is_array(), "{}", txns[0].1);
    assert!(txns[0].1["de.sorunome.msc2409.to_device"].is_array());
}

#[tokio::test]
async fn a_namespaced_sender_or_alias_makes_a_room_interesting() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    // A room with an alias in the bridge's alias namespace: its events are
    // sent though no bridge user is in it. The alias is the bridge's
    // (exclusive), so the bridge creates it.
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    alias_in_bridge_namespace(&s, &room).await;
    send_text(&s, &alice, &room, "in an aliased room").await;
    assert_eq!(
        bodies_until(&fake, "in an aliased room").await,
        ["in an aliased room"]
    );
    // The bridge's own sender, anywhere.
    let other = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let (st, b) = s
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&other)),
            Some(AS_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // The room's earlier events may come too (a dispatcher running behind
    // sorts them once the bot is in); the bot's join comes.
    let mut events = Vec::new();
    while !events
        .iter()
        .any(|(_, e): &(String, Value)| e["sender"] == "@bridgebot:test.local")
    {
        let (more, _) = collect_events(&fake, 1).await;
        events.extend(more);
    }
    assert!(
        events.iter().all(|(_, e)| e["room_id"] == other),
        "{events:?}"
    );
}

/// A registration whose rooms namespace names every room (`!.*`: ids of
/// room version 12 have no server name): a room with no user of the
/// service and no alias in its namespace still reaches it, from its
/// creation on.
#[tokio::test]
async fn a_room_its_rooms_namespace_names_reaches_the_service() {
    let fake = FakeAppService::start().await;
    let registration = bridge_registration(&format!("\"{}\"", fake.url)).replace(
        "  rooms: []\n",
        "  rooms:\n    - exclusive: false\n      regex: \"!.*\"\n",
    );
    assert!(registration.contains("regex: \"!.*\""));
    let (s, _files) = server_with_fast_retries(&[&registration]).await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    send_text(&s, &alice, &room, "named by the rooms namespace").await;
    let mut events = Vec::new();
    while !bodies_of(&events).contains(&"named by the rooms namespace".to_owned()) {
        let (more, _) = collect_events(&fake, 1).await;
        events.extend(more);
    }
    assert_eq!(events[0].1["type"], "m.room.create", "{:?}", events[0]);
    assert!(events.iter().all(|(_, e)| e["room_id"] == room));
}

/// A room interesting through its alias: after an upgrade the alias points
/// at the new room, so the new room's messages reach the service and the
/// old room's no longer do.
#[tokio::test]
async fn an_aliased_room_s_interest_follows_its_alias_to_the_upgraded_room() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let old = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    alias_in_bridge_namespace(&s, &old).await;
    send_text(&s, &alice, &old, "before the upgrade").await;
    // The room's creation may come first: a dispatcher running behind
    // sorts it once the alias exists, so it interests the service too.
    assert_eq!(
        bodies_until(&fake, "before the upgrade").await,
        ["before the upgrade"]
    );

    let (st, b) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old)),
            alice.token(),
            json!({"new_version": "10"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let new = b["replacement_room"].as_str().unwrap().to_owned();
    send_text(&s, &alice, &old, "in the old room").await;
    send_text(&s, &alice, &new, "in the new room").await;
    assert_eq!(
        bodies_until(&fake, "in the new room").await,
        ["in the new room"]
    );
}

/// The message bodies of the transactions received until one carries
/// `body`.
async fn bodies_until(fake: &FakeAppService, body: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while !bodies.iter().any(|b| b == body) {
        let (events, _) = collect_events(fake, 1).await;
        bodies.extend(bodies_of(&events));
    }
    bodies
}

/// An invite of a bridged user carries `unsigned.invite_room_state` (as
/// Synapse sends bridges): the room's public face and the inviter's member
/// event, stripped, so the bridge can name the room before joining.
#[tokio::test]
async fn an_invite_carries_the_room_s_stripped_state() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let bob = ghost(&s, "bridge_bob").await;
    let room = create_room(&s, &alice, json!({"name": "Lobby", "topic": "chat"})).await;
    let (st, b) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            alice.token(),
            json!({"user_id": bob}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (events, _) = collect_events(&fake, 1).await;
    let invite = &events[0].1;
    assert_eq!(invite["type"], "m.room.member", "{invite}");
    assert_eq!(invite["content"]["membership"], "invite");
    let state = invite["unsigned"]["invite_room_state"]
        .as_array()
        .unwrap_or_else(|| panic!("invite_room_state: {invite}"));
    let of = |ty: &str| {
        state
            .iter()
            .find(|e| e["type"] == ty)
            .unwrap_or_else(|| panic!("{ty} in {state:?}"))
    };
    assert_eq!(of("m.room.name")["content"]["name"], "Lobby");
    assert_eq!(of("m.room.topic")["content"]["topic"], "chat");
    assert_eq!(of("m.room.create")["sender"], alice.user_id.as_str());
    assert!(of("m.room.join_rules")["content"]["join_rule"].is_string());
    assert_eq!(of("m.room.member")["state_key"], alice.user_id.as_str());
    for e in state {
        assert!(e.get("event_id").is_none(), "stripped: {e}");
        assert!(e["sender"].is_string() && e["content"].is_object(), "{e}");
    }
}

/// sytest "AS can deactivate a user": a service deactivates one of its users
/// (`?user_id=`) without user-interactive authentication, as Synapse; a
/// user's own token still needs it.
#[tokio::test]
async fn a_service_deactivates_its_user_without_interactive_auth() {
    let (s, _files, _fake) = server_and_bridge().await;
    let bob = ghost(&s, "bridge_bob").await;
    let (st, b) = s
        .post(
            &format!(
                "/_matrix/client/v3/account/deactivate?user_id={}",
                enc(&bob)
            ),
            Some(AS_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let admin = s.admin("admin").await;
    let (st, b) = s
        .get(
            &format!("/_synapse/admin/v2/users/{}", enc(&bob)),
            admin.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["deactivated"], true, "{b}");
    let alice = s.user("alice").await;
    let (st, b) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b["flows"].is_array(), "{b}");
}

#[tokio::test]
async fn a_failed_transaction_is_retried_with_the_same_id_and_body() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    fake.answer_next(500, json!({"errcode": "M_UNKNOWN"}));
    fake.answer_next(503, json!({}));
    ghost_join(&s, &bob, &room).await;
    let (first, r1) = fake.next_transaction().await;
    let (second, r2) = fake.next_transaction().await;
    let (third, r3) = fake.next_transaction().await;
    assert_eq!((&first, &second), (&third, &third));
    assert_eq!(r1.body, r2.body);
    assert_eq!(r1.body, r3.body);
    // Acknowledged: the next transaction has the next id.
    send_text(&s, &alice, &room, "after").await;
    let (next, r) = fake.next_transaction().await;
    assert_eq!(
        next.parse::<i64>().unwrap(),
        third.parse::<i64>().unwrap() + 1
    );
    assert_eq!(bodies_of(&[(next, r.body["events"][0].clone())]), ["after"]);
}

/// The case as it stands: the service answers 500 for a whole
/// minute while 100 events are sent; then it gets all 100, in order, each
/// once (the failing transaction retried with its id and body all along).
#[tokio::test]
async fn a_service_down_for_a_minute_gets_every_event_once_and_in_order() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    let (_, _) = collect_events(&fake, 1).await;
    fake.answer_all(500);
    for i in 0..100 {
        send_text(&s, &alice, &room, &format!("m{i}")).await;
    }
    // Failing for a minute: the same transaction again and again.
    let down = std::time::Instant::now();
    let (id, failed) = fake.next_transaction().await;
    let mut retries = 0;
    while down.elapsed() < Duration::from_secs(60) {
        let (again, failed_again) = fake.next_transaction().await;
        assert_eq!(id, again);
        assert_eq!(failed.body, failed_again.body);
        retries += 1;
    }
    assert!(retries >= 2, "{retries} retries in a minute");
    fake.answer_all(200);
    let got = distinct_transactions(&fake, 100, HashMap::new()).await;
    let want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "every event once, in order");
    // Nothing more comes.
    assert!(fake.next_within(Duration::from_millis(300)).await.is_none());
}

/// The message bodies of transactions until `n` arrived, each transaction
/// counted once: a retried id must carry the same body, and ids never go
/// back (an acknowledged transaction is not sent again).
async fn distinct_transactions(
    fake: &FakeAppService,
    n: usize,
    mut by_id: HashMap<i64, Value>,
) -> Vec<String> {
    let mut highest = by_id.keys().copied().max().unwrap_or(0);
    let mut got = Vec::new();
    while got.len() < n {
        let (id, r) = fake.next_transaction().await;
        let id: i64 = id.parse().unwrap();
        assert!(id >= highest, "transaction {id} came after {highest}");
        highest = id;
        if let Some(before) = by_id.get(&id) {
            assert_eq!(before, &r.body, "a retried id carries the same body");
            continue;
        }
        let events = r.body["events"].as_array().unwrap();
        assert!(events.len() <= 100);
        got.extend(bodies_of(
            &events
                .iter()
                .map(|e| (String::new(), e.clone()))
                .collect::<Vec<_>>(),
        ));
        by_id.insert(id, r.body);
    }
    got
}

#[tokio::test]
async fn the_queue_and_the_transaction_in_flight_survive_a_restart() {
    let (mut s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    let (_, _) = collect_events(&fake, 1).await;
    fake.answer_all(500);
    for i in 0..5 {
        send_text(&s, &alice, &room, &format!("before {i}")).await;
    }
    let (in_flight, first) = fake.next_transaction().await;
    s.restart().await;
    for i in 0..3 {
        send_text(&s, &alice, &room, &format!("after {i}")).await;
    }
    // The same transaction first, then the rest; nothing twice.
    fake.answer_all(200);
    let (again, r) = fake.next_transaction().await;
    assert_eq!(again, in_flight);
    assert_eq!(
        r.body, first.body,
        "the in-flight transaction is sent unchanged"
    );
    let mut got = bodies_of(
        &r.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (String::new(), e.clone()))
            .collect::<Vec<_>>(),
    );
    let seen = HashMap::from([(in_flight.parse().unwrap(), r.body)]);
    got.extend(distinct_transactions(&fake, 8 - got.len(), seen).await);
    assert_eq!(
        got,
        [
            "before 0", "before 1", "before 2", "before 3", "before 4", "after 0", "after 1",
            "after 2"
        ]
    );
}

#[tokio::test]
async fn a_hanging_service_delays_no_send_and_no_other_service() {
    let hanging = FakeAppService::start().await;
    let healthy = FakeAppService::start().await;
    let other = bridge_registration(&format!("\"{}\"", healthy.url))
        .replace("id: bridge", "id: other")
        .replace(AS_TOKEN, "as-other")
        .replace(HS_TOKEN, "hs-other")
        .replace("sender_localpart: bridgebot", "sender_localpart: otherbot")
        .replace("@bridge_", "@other_")
        .replace("#bridge_", "#other_");
    // The hanging service's requests time out after 60 s: the healthy one
    // gets its events within `next_transaction`'s 20 s only if it does
    // not wait behind them.
    let (s, _files) = server_with_timeout(
        &[
            &bridge_registration(&format!("\"{}\"", hanging.url)),
            &other,
        ],
        60,
    )
    .await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    let (st, b) = s
        .post(
            REGISTER,
            Some("as-other"),
            json!({"type": "m.login.application_service", "username": "other_carol", "inhibit_login": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let carol = b["user_id"].as_str().unwrap().to_owned();
    // The first service holds its requests unanswered (past the timeout).
    let _held: Vec<_> = (0..4).map(|_| hanging.hold_next()).collect();
    let (st, b) = s
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?user_id={}",
                enc(&room),
                enc(&carol)
            ),
            Some("as-other"),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    for i in 0..5 {
        send_text(&s, &alice, &room, &format!("m{i}")).await;
    }
    let mut got = Vec::new();
    while got.len() < 5 {
        let (_, r) = healthy.next_transaction().await;
        for e in r.body["events"].as_array().unwrap() {
            if e["type"] == "m.room.message" {
                got.push(e["content"]["body"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
    // The hanging one holds its first transaction.
    let (_, held) = hanging.next_transaction().await;
    assert!(held.body["events"].is_array());
}

#[tokio::test]
async fn a_service_without_url_receives_nothing_and_slows_nothing() {
    let (s, _files) = server_with_fast_retries(&[&bridge_registration("null")]).await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    send_text(&s, &alice, &room, "hello").await;
    assert!(!s.services().as_delivery.is_active());
}

/// Transactions until one's ephemeral list (under `key`) holds an event
/// `matches` accepts; that event.
async fn ephemeral_until(
    fake: &FakeAppService,
    key: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let (_, r) = fake.next_transaction().await;
        if let Some(found) = r.body[key]
            .as_array()
            .and_then(|list| list.iter().find(|e| matches(e)))
        {
            return found.clone();
        }
    }
}

#[tokio::test]
async fn receipts_typing_and_presence_of_interesting_rooms_come_as_ephemeral_events() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    let event = send_text(&s, &alice, &room, "read me").await;
    let (st, b) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&alice.user_id)
            ),
            alice.token(),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let typing = ephemeral_until(&fake, "ephemeral", |e| e["type"] == "m.typing").await;
    assert_eq!(typing["room_id"], room);
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));
    let (st, b) = s
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&event)
            ),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let receipt = ephemeral_until(&fake, "ephemeral", |e| e["type"] == "m.receipt").await;
    assert_eq!(receipt["room_id"], room);
    assert!(
        receipt["content"][&event]["m.read"][&alice.user_id]["ts"].is_number(),
        "{receipt}"
    );
    let (st, b) = s
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            alice.token(),
            json!({"presence": "unavailable", "status_msg": "away"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let presence = ephemeral_until(&fake, "ephemeral", |e| {
        e["type"] == "m.presence" && e["content"]["presence"] == "unavailable"
    })
    .await;
    assert_eq!(presence["sender"], alice.user_id);
    assert_eq!(presence["content"]["status_msg"], "away");
}

#[tokio::test]
async fn the_unstable_ephemeral_flag_uses_the_unstable_key_and_none_sends_none() {
    let fake = FakeAppService::start().await;
    let registration = bridge_registration(&format!("\"{}\"", fake.url)).replace(
        "receive_ephemeral: true",
        "de.sorunome.msc2409.push_ephemeral: true",
    );
    let (s, _files) = server_with_fast_retries(&[&registration]).await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    let (st, _) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&alice.user_id)
            ),
            alice.token(),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let typing = ephemeral_until(&fake, "de.sorunome.msc2409.ephemeral", |e| {
        e["type"] == "m.typing"
    })
    .await;
    assert_eq!(typing["room_id"], room);

    // Without either flag: no ephemeral key at all.
    let plain = FakeAppService::start().await;
    let registration =
        bridge_registration(&format!("\"{}\"", plain.url)).replace("receive_ephemeral: true\n", "");
    let (s, _files) = server_with_fast_retries(&[&registration]).await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    let (_, r) = plain.next_transaction().await;
    assert!(r.body.get("ephemeral").is_none(), "{}", r.body);
    assert!(r.body.get("de.sorunome.msc2409.ephemeral").is_none());
}

/// The delivery's metrics: a failed and an acknowledged transaction are
/// counted, and each service's in-memory queue is reported by its id.
#[tokio::test]
async fn transactions_and_failures_are_counted_in_the_metrics() {
    let fake = FakeAppService::start().await;
    let files = RegistrationFiles::new(&[&bridge_registration(&format!("\"{}\"", fake.url))]);
    let paths = files.paths.clone();
    let s = TestServer::start_with(|c| {
        c.app_services = paths;
        c.app_service_delivery.first_retry_ms = 20;
        c.app_service_delivery.max_retry_ms = 200;
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    fake.answer_next(500, json!({"errcode": "M_UNKNOWN"}));
    ghost_join(&s, &bob, &room).await;
    let (failed, _) = fake.next_transaction().await;
    let (acked, _) = fake.next_transaction().await;
    assert_eq!(failed, acked, "the same transaction again");
    // Counted once the answer is read: poll the scrape.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = crate::observability::scrape(&s).await;
        let count = |name: &str| crate::observability::total(&m, name, "", "");
        let queue_reported = m.keys().any(|(name, labels)| {
            name == "myelin_appservice_queued_events"
                && labels.get("service").map(String::as_str) == Some("bridge")
        });
        if count("myelin_appservice_transactions_total") >= 1.0
            && count("myelin_appservice_transaction_failures_total") >= 1.0
        {
            assert!(queue_reported, "{m:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not counted: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------- to-device and device lists

/// Logs the ghost in through the bridge: a session on a new device.
async fn ghost_login(s: &TestServer, ghost: &str) -> Session {
    let (st, b) = s
        .post(
            "/_matrix/client/v3/login",
            Some(AS_TOKEN),
            json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": ghost}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    Session::from_answer(&b)
}

async fn send_to_device(s: &TestServer, from: &Session, txn: &str, messages: Value) {
    let (st, b) = s
        .put(
            &format!("/_matrix/client/v3/sendToDevice/m.room.encrypted/{txn}"),
            from.token(),
            json!({ "messages": messages }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

const TO_DEVICE: &str = "de.sorunome.msc2409.to_device";

/// Transactions until one carries to-device messages: that one's body.
async fn to_device_transaction(fake: &FakeAppService) -> Value {
    loop {
        let (_, r) = fake.next_transaction().await;
        if r.body[TO_DEVICE].as_array().is_some_and(|l| !l.is_empty()) {
            return r.body;
        }
    }
}

/// The bodies of the transactions received until the one carrying
/// `event_id`, that one last.
async fn transactions_until_event(fake: &FakeAppService, event_id: &str) -> Vec<Value> {
    let mut bodies = Vec::new();
    loop {
        let (_, r) = fake.next_transaction().await;
        let done = r.body["events"]
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["event_id"] == event_id));
        bodies.push(r.body);
        if done {
            return bodies;
        }
    }
}

#[tokio::test]
async fn to_device_messages_for_the_service_s_users_come_in_transactions() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let carol = s.user("carol").await;
    let bob = ghost(&s, "bridge_bob").await;
    let phone = ghost_login(&s, &bob).await;
    send_to_device(
        &s,
        &alice,
        "t1",
        json!({
            bob.clone(): {phone.device_id.clone(): {"ciphertext": "for bob"}},
            carol.user_id.clone(): {carol.device_id.clone(): {"ciphertext": "for carol"}},
        }),
    )
    .await;
    let body = to_device_transaction(&fake).await;
    // Carol is not the service's: only Bob's message, as MSC2409 shapes it.
    assert_eq!(
        body[TO_DEVICE],
        json!([{
            "type": "m.room.encrypted",
            "sender": alice.user_id,
            "content": {"ciphertext": "for bob"},
            "to_user_id": bob,
            "to_device_id": phone.device_id,
        }]),
        "{body}"
    );
    // No MSC3202 keys for a service that did not ask for them.
    assert!(
        body.get("org.matrix.msc3202.device_lists").is_none()
            && body
                .get("org.matrix.msc3202.device_one_time_keys_count")
                .is_none(),
        "{body}"
    );

    // "*": one message per device of the ghost.
    let laptop = ghost_login(&s, &bob).await;
    send_to_device(
        &s,
        &alice,
        "t2",
        json!({ bob.clone(): {"*": {"ciphertext": "everywhere"}} }),
    )
    .await;
    let body = to_device_transaction(&fake).await;
    let mut devices: Vec<&str> = body[TO_DEVICE]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["content"]["ciphertext"], "everywhere", "{body}");
            assert_eq!(m["to_user_id"], bob.as_str(), "{body}");
            m["to_device_id"].as_str().unwrap()
        })
        .collect();
    devices.sort_unstable();
    let mut expected = vec![phone.device_id.as_str(), laptop.device_id.as_str()];
    expected.sort_unstable();
    assert_eq!(devices, expected, "{body}");
}

#[tokio::test]
async fn a_service_without_ephemeral_events_gets_no_to_device_messages() {
    let fake = FakeAppService::start().await;
    let registration =
        bridge_registration(&format!("\"{}\"", fake.url)).replace("receive_ephemeral: true\n", "");
    let (s, _files) = server_with_fast_retries(&[&registration]).await;
    let alice = s.user("alice").await;
    let bob = ghost(&s, "bridge_bob").await;
    let phone = ghost_login(&s, &bob).await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    ghost_join(&s, &bob, &room).await;
    send_to_device(
        &s,
        &alice,
        "t1",
        json!({ bob.clone(): {phone.device_id.clone(): {"ciphertext": "x"}} }),
    )
    .await;
    let marker = send_text(&s, &alice, &room, "after the to-device message").await;
    for body in transactions_until_event(&fake, &marker).await {
        assert!(body.get(TO_DEVICE).is_none(), "{body}");
    }
}

#[tokio::test]
async fn msc3202_device_list_changes_and_key_counts_reach_a_service_that_asks() {
    let fake = FakeAppService::start().await;
    let registration = format!(
        "{}org.matrix.msc3202: true\n",
        bridge_registration(&format!("\"{}\"", fake.url))
    );
    let (s, _files) = server_with_fast_retries(&[&registration]).await;
    let alice = s.user("alice").await;
    let dave = s.user("dave").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    let phone = ghost_login(&s, &bob).await;
    upload_keys(
        &s,
        &phone,
        json!({
            "device_keys": own_device_keys(&phone),
            "one_time_keys": {
                "signed_curve25519:A1": {"key": "a1", "signatures": {}},
                "signed_curve25519:A2": {"key": "a2", "signatures": {}},
            },
            "fallback_keys": {"signed_curve25519:F1": {"key": "f1", "fallback": true, "signatures": {}}},
        }),
    )
    .await;
    // Dave shares no room with the service's users; Alice does.
    upload_keys(&s, &dave, json!({"device_keys": own_device_keys(&dave)})).await;
    upload_keys(&s, &alice, json!({"device_keys": own_device_keys(&alice)})).await;
    let mut changed: Vec<String> = Vec::new();
    let mut left: Vec<Value> = Vec::new();
    while !changed.contains(&alice.user_id) {
        let (_, r) = fake.next_transaction().await;
        if let Some(lists) = r.body.get("org.matrix.msc3202.device_lists") {
            for u in lists["changed"].as_array().expect("changed") {
                changed.push(u.as_str().unwrap().to_owned());
            }
            left.extend(lists["left"].as_array().expect("left").iter().cloned());
        }
    }
    assert!(changed.contains(&bob), "the ghost's new keys: {changed:?}");
    assert!(!changed.contains(&dave.user_id), "{changed:?}");
    assert!(left.is_empty(), "Synapse sends no left users: {left:?}");

    // A message in the ghost's room: the ghost's devices' key counts.
    let marker = send_text(&s, &alice, &room, "count my keys").await;
    let body = transactions_until_event(&fake, &marker)
        .await
        .pop()
        .expect("a transaction");
    for key in [
        "org.matrix.msc3202.device_one_time_keys_count",
        "org.matrix.msc3202.device_one_time_key_counts",
    ] {
        assert_eq!(
            body[key][&bob],
            json!({ phone.device_id.clone(): {"signed_curve25519": 2} }),
            "{key}: {body}"
        );
        // Alice is not the service's user.
        assert!(body[key].get(&alice.user_id).is_none(), "{body}");
    }
    assert_eq!(
        body["org.matrix.msc3202.device_unused_fallback_key_types"][&bob],
        json!({ phone.device_id.clone(): ["signed_curve25519"] }),
        "{body}"
    );
    // A claim uses a key: the next transaction counts one.
    claim_keys(
        &s,
        &alice,
        json!({ bob.clone(): {phone.device_id.clone(): "signed_curve25519"} }),
    )
    .await;
    let marker = send_text(&s, &alice, &room, "count again").await;
    let body = transactions_until_event(&fake, &marker)
        .await
        .pop()
        .expect("a transaction");
    assert_eq!(
        body["org.matrix.msc3202.device_one_time_keys_count"][&bob][&phone.device_id],
        json!({"signed_curve25519": 1}),
        "{body}"
    );
}

/// The to-device messages (`n`) and the users whose device lists changed in
/// distinct transactions (a retried id counted once, with the same body)
/// until `want` messages and `user` arrived.
async fn distinct_to_device_and_changes(
    fake: &FakeAppService,
    want: usize,
    user: &str,
) -> (Vec<i64>, Vec<String>) {
    let mut by_id: HashMap<i64, Value> = HashMap::new();
    let mut highest = 0;
    let (mut messages, mut changed) = (Vec::new(), Vec::new());
    while messages.len() < want || !changed.iter().any(|u| u == user) {
        let (id, r) = fake.next_transaction().await;
        let id: i64 = id.parse().unwrap();
        assert!(id >= highest, "transaction {id} came after {highest}");
        highest = id;
        if let Some(before) = by_id.get(&id) {
            assert_eq!(before, &r.body, "a retried id carries the same body");
            continue;
        }
        for m in r.body[TO_DEVICE].as_array().into_iter().flatten() {
            messages.push(m["content"]["n"].as_i64().expect("n"));
        }
        if let Some(lists) = r.body.get("org.matrix.msc3202.device_lists") {
            for u in lists["changed"].as_array().expect("changed") {
                changed.push(u.as_str().unwrap().to_owned());
            }
        }
        by_id.insert(id, r.body);
    }
    (messages, changed)
}

#[tokio::test]
async fn to_device_messages_and_device_list_changes_reach_a_service_once_across_a_restart() {
    let fake = FakeAppService::start().await;
    let registration = format!(
        "{}org.matrix.msc3202: true\n",
        bridge_registration(&format!("\"{}\"", fake.url))
    );
    let (mut s, _files) = server_with_fast_retries(&[&registration]).await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    let phone = ghost_login(&s, &bob).await;
    let marker = send_text(&s, &alice, &room, "caught up").await;
    transactions_until_event(&fake, &marker).await;

    // The service is down: messages for the ghost's device and a change of
    // Alice's keys (she shares the ghost's room) wait.
    fake.answer_all(500);
    for n in 0..5 {
        send_to_device(
            &s,
            &alice,
            &format!("d{n}"),
            json!({ bob.clone(): {phone.device_id.clone(): {"n": n}} }),
        )
        .await;
    }
    upload_keys(&s, &alice, json!({"device_keys": own_device_keys(&alice)})).await;
    let (failed, _) = fake.next_transaction().await;
    s.restart().await;
    send_to_device(
        &s,
        &alice,
        "d5",
        json!({ bob.clone(): {phone.device_id.clone(): {"n": 5}} }),
    )
    .await;
    assert!(
        s.sql_count("SELECT COUNT(*) FROM to_device_sends").await >= 1,
        "the messages wait in the table"
    );
    fake.answer_all(200);
    let (messages, changed) = distinct_to_device_and_changes(&fake, 6, &alice.user_id).await;
    assert!(!failed.is_empty());
    assert_eq!(messages, [0, 1, 2, 3, 4, 5], "each once, in order");
    assert_eq!(
        changed.iter().filter(|u| **u == alice.user_id).count(),
        1,
        "{changed:?}"
    );
    // Nothing is sent again.
    while let Some(r) = fake.next_within(Duration::from_millis(500)).await {
        assert!(
            r.body[TO_DEVICE].as_array().is_none_or(|l| l.is_empty()),
            "sent again: {}",
            r.body
        );
        assert!(
            r.body
                .get("org.matrix.msc3202.device_lists")
                .is_none_or(|l| !l["changed"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(alice.user_id))),
            "sent again: {}",
            r.body
        );
    }
    // Delivered to the service: acknowledged for the ghost's device, as a
    // sync would; the sends are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = s.sql_count("SELECT COUNT(*) FROM to_device_sends").await
            + s.sql_count("SELECT COUNT(*) FROM to_device_chunks").await;
        if left == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{left} rows stay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And after another restart nothing comes again.
    s.restart().await;
    let marker = send_text(&s, &alice, &room, "after the second restart").await;
    for body in transactions_until_event(&fake, &marker).await {
        assert!(
            body[TO_DEVICE].as_array().is_none_or(|l| l.is_empty()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn only_the_devices_of_users_the_service_owns_are_done_once_it_has_their_messages() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    // Dave is in the bridge's shared (not exclusive) namespace: an ordinary
    // user whose own device syncs. Bob is the bridge's ghost.
    let dave = s.user("shared_dave").await;
    let bob = ghost(&s, "bridge_bob").await;
    let phone = ghost_login(&s, &bob).await;
    send_to_device(
        &s,
        &alice,
        "t1",
        json!({
            bob.clone(): {phone.device_id.clone(): {"ciphertext": "for bob"}},
            dave.user_id.clone(): {dave.device_id.clone(): {"ciphertext": "for dave"}},
        }),
    )
    .await;
    let body = to_device_transaction(&fake).await;
    let mut to: Vec<&str> = body[TO_DEVICE]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to_user_id"].as_str().unwrap())
        .collect();
    to.sort_unstable();
    let mut both = vec![bob.as_str(), dave.user_id.as_str()];
    both.sort_unstable();
    assert_eq!(to, both, "{body}");
    // A second message for Bob alone: its transaction comes after the
    // first was acknowledged and its messages done.
    send_to_device(
        &s,
        &alice,
        "t2",
        json!({ bob.clone(): {phone.device_id.clone(): {"ciphertext": "again"}} }),
    )
    .await;
    let body = to_device_transaction(&fake).await;
    assert_eq!(
        body[TO_DEVICE][0]["content"]["ciphertext"], "again",
        "{body}"
    );
    // Bob's part is done; the first send waits for Dave's device.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.sql_count("SELECT COUNT(*) FROM to_device_sends").await != 1 {
        assert!(std::time::Instant::now() < deadline, "Bob's sends stay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dave's own sync still gets his message, and acknowledges it.
    let first = sync(&s, &dave, "timeout=0").await;
    let events = first["to_device"]["events"].as_array().expect("to_device");
    assert_eq!(events.len(), 1, "{first}");
    assert_eq!(events[0]["content"]["ciphertext"], "for dave", "{first}");
    let again = sync_since(&s, &dave, &next_batch(&first)).await;
    assert!(
        again["to_device"]["events"]
            .as_array()
            .is_none_or(|l| l.is_empty()),
        "{again}"
    );
    assert_eq!(s.sql_count("SELECT COUNT(*) FROM to_device_sends").await, 0);
}

#[tokio::test]
async fn the_services_users_are_left_out_of_push_notifications() {
    let (s, _files, _fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let carol = s.user("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &carol, &room).await;
    let bob = ghost(&s, "bridge_bob").await;
    ghost_join(&s, &bob, &room).await;
    // Both read /notifications (so both want theirs recorded).
    for (token, query) in [
        (carol.token(), String::new()),
        (Some(AS_TOKEN), format!("?user_id={}", enc(&bob))),
    ] {
        let (st, b) = s
            .get(&format!("/_matrix/client/v3/notifications{query}"), token)
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
    }
    send_text(&s, &alice, &room, "hello all").await;
    // Carol is notified; the ghost, in the service's exclusive namespace,
    // is not (as Synapse): both would be written in one transaction.
    wait_until("carol's notification", Duration::from_secs(20), || async {
        let (st, b) = s
            .get("/_matrix/client/v3/notifications", carol.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        match b["notifications"].as_array().map(Vec::len) {
            Some(1) => Ok(()),
            _ => Err(b.to_string()),
        }
    })
    .await;
    let ghost_rows = s
        .sql_count(&format!(
            "SELECT COUNT(*) FROM push_notifications WHERE user_id = '{}'",
            sql_quote(&bob)
        ))
        .await;
    assert_eq!(ghost_rows, 0);
}
