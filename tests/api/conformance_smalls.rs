//! Small conformance causes found by sytest: push rule paths and ids,
//! sending without a transaction id, event size limits, typing without a
//! timeout, invalid UTF-8, redacting across rooms, kicks, repeated state,
//! custom join content, and `/messages`' `end`. Each test names the sytest
//! tests it follows.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const RULES: &str = "/_matrix/client/v3/pushrules";

fn rule_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|r| r["rule_id"].as_str().expect("rule_id").to_owned())
        .collect()
}

fn user_rule_ids(list: &Value) -> Vec<String> {
    rule_ids(list)
        .into_iter()
        .filter(|id| !id.starts_with('.'))
        .collect()
}

async fn add_rule(
    server: &TestServer,
    who: &Session,
    kind: &str,
    id: &str,
    query: &str,
    body: Value,
) {
    let path = format!("{RULES}/global/{kind}/{}{query}", enc(id));
    let (st, b) = server.put(&path, who.token(), body).await;
    assert_eq!(st, StatusCode::OK, "PUT {path}: {b}");
    assert_eq!(b, json!({}));
}

/// sytest 61push/02add_rules.pl "Can add global push rule for
/// room/sender/content/override/underride": any rule id (a room rule's
/// `#spam:example.com` too), read back as the rule, in its kind's list
/// (`/pushrules/global/{kind}/`), in the scope, in the whole ruleset, and
/// through `/enabled` and `/actions`.
#[tokio::test]
async fn push_rules_of_every_kind_can_be_added_and_read() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let cond = json!([{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}]);
    for (kind, id, extra) in [
        ("room", "#spam:example.com", json!({})),
        ("sender", "@bob:example.com", json!({})),
        (
            "content",
            "my_content_rule",
            json!({"pattern": "my_pattern"}),
        ),
        ("override", "my_override_rule", json!({"conditions": cond})),
        (
            "underride",
            "my_underride_rule",
            json!({"conditions": cond}),
        ),
        ("content", "тест", json!({"pattern": "тест"})),
    ] {
        let mut body = extra.clone();
        body["actions"] = json!(["notify"]);
        add_rule(&server, &alice, kind, id, "", body).await;
        let path = format!("{RULES}/global/{kind}/{}", enc(id));
        let (st, rule) = server.get(&path, alice.token()).await;
        assert_eq!(st, StatusCode::OK, "{rule}");
        assert_eq!(rule["rule_id"], id);
        assert_eq!(rule["enabled"], true);
        assert_eq!(rule["default"], false);
        assert_eq!(rule["actions"], json!(["notify"]));

        let (st, list) = server
            .get(&format!("{RULES}/global/{kind}/"), alice.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{list}");
        assert!(rule_ids(&list).contains(&id.to_owned()), "{list}");
        let (st, scope) = server.get(&format!("{RULES}/global/"), alice.token()).await;
        assert_eq!(st, StatusCode::OK, "{scope}");
        assert_eq!(scope[kind], list);
        let (_, all) = server.get(&format!("{RULES}/"), alice.token()).await;
        assert_eq!(all["global"][kind], list);

        let (st, b) = server.get(&format!("{path}/enabled"), alice.token()).await;
        assert_eq!((st, b), (StatusCode::OK, json!({"enabled": true})));
        let (st, b) = server.get(&format!("{path}/actions"), alice.token()).await;
        assert_eq!((st, b), (StatusCode::OK, json!({"actions": ["notify"]})));
    }
    // Adding the same rule again replaces it in place.
    add_rule(
        &server,
        &alice,
        "sender",
        "@bob:example.com",
        "",
        json!({"actions": ["notify"]}),
    )
    .await;
    let (_, list) = server
        .get(&format!("{RULES}/global/sender/"), alice.token())
        .await;
    assert_eq!(user_rule_ids(&list), ["@bob:example.com"]);
}

/// sytest "New rules appear before old rules by default", "Can add global
/// push rule before/after an existing rule", "Can delete a push rule",
/// "Can disable a push rule".
#[tokio::test]
async fn push_rules_order_delete_and_disable() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let notify = json!({"actions": ["notify"]});
    add_rule(
        &server,
        &alice,
        "room",
        "#a:example.com",
        "",
        notify.clone(),
    )
    .await;
    add_rule(
        &server,
        &alice,
        "room",
        "#b:example.com",
        "",
        notify.clone(),
    )
    .await;
    let room_list = || async {
        let (st, b) = server
            .get(&format!("{RULES}/global/room/"), alice.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        user_rule_ids(&b)
    };
    assert_eq!(room_list().await, ["#b:example.com", "#a:example.com"]);
    add_rule(
        &server,
        &alice,
        "room",
        "#c:example.com",
        "?before=%23a:example.com",
        notify.clone(),
    )
    .await;
    assert_eq!(
        room_list().await,
        ["#b:example.com", "#c:example.com", "#a:example.com"]
    );
    add_rule(
        &server,
        &alice,
        "room",
        "#d:example.com",
        "?after=%23b:example.com",
        notify.clone(),
    )
    .await;
    assert_eq!(
        room_list().await,
        [
            "#b:example.com",
            "#d:example.com",
            "#c:example.com",
            "#a:example.com"
        ]
    );

    let a = format!("{RULES}/global/room/{}", enc("#a:example.com"));
    let (st, b) = server
        .put(
            &format!("{a}/enabled"),
            alice.token(),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!({})));
    let (_, rule) = server.get(&a, alice.token()).await;
    assert_eq!(rule["enabled"], false);

    let (st, b) = server.delete(&a, alice.token(), None).await;
    assert_eq!((st, b), (StatusCode::OK, json!({})));
    assert_eq!(
        room_list().await,
        ["#b:example.com", "#d:example.com", "#c:example.com"]
    );
    assert_error(&server.get(&a, alice.token()).await, 404, "M_NOT_FOUND");
}

/// sytest "Trying to add push rule with ... fails with 400" and "Trying to
/// get push rules with ... fails with 400": malformed paths are 400
/// `M_UNRECOGNIZED` (as Synapse), bad bodies 400; `/pushrules` without the
/// slash stays 404 and an unknown rule 404.
#[tokio::test]
async fn malformed_push_rule_paths_are_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let notify = json!({"actions": ["notify"]});
    for path in [
        "/",
        "/not_a_scope/room/%23spam:example.com",
        "/global",
        "/global/room",
        "/global/room/",
        "/global/not_a_template/foo",
        "/global/override/.m.rule.master/not_an_attr",
    ] {
        let resp = server
            .put(&format!("{RULES}{path}"), alice.token(), notify.clone())
            .await;
        assert_error(&resp, 400, "M_UNRECOGNIZED");
    }
    for path in [
        "/global",
        "/global/room",
        "/not_a_scope/",
        "/global/not_a_template/",
        "/global/override/.m.rule.master/not_an_attr",
    ] {
        assert_error(
            &server.get(&format!("{RULES}{path}"), alice.token()).await,
            400,
            "M_UNRECOGNIZED",
        );
    }
    for (path, body) in [
        ("/global/override/my_id", json!({"actions": ["notify"]})),
        (
            "/global/underride/my_id",
            json!({"actions": ["notify"], "conditions": [{}]}),
        ),
        ("/global/content/my_id", json!({"actions": ["notify"]})),
        ("/global/room/%23my_room:example.com", json!({})),
        (
            "/global/room/%23my_room:example.com",
            json!({"actions": ["not_an_action"]}),
        ),
        (
            "/global/override/.m.rule.master/enabled",
            json!({"enabled": "not a boolean"}),
        ),
    ] {
        let resp = server
            .put(&format!("{RULES}{path}"), alice.token(), body)
            .await;
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    for path in [
        "/global/room/%23fo%5Co:example.com",
        "/global/room/.reserved",
    ] {
        let resp = server
            .put(&format!("{RULES}{path}"), alice.token(), notify.clone())
            .await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    let (st, _) = server.get(RULES, alice.token()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(
        &server
            .get(
                &format!("{RULES}/global/override/not_a_rule_id"),
                alice.token(),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Nothing above added a rule.
    let (_, all) = server.get(&format!("{RULES}/"), alice.token()).await;
    for kind in ["override", "content", "room", "sender", "underride"] {
        assert!(user_rule_ids(&all["global"][kind]).is_empty(), "{all}");
    }
}

fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

async fn member_state(server: &TestServer, who: &Session, room: &str, user: &str) -> Value {
    let path = room_path(room, &format!("state/m.room.member/{}", enc(user)));
    let (st, b) = server.get(&path, who.token()).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b
}

/// The number of events in a room (all of them, as its creator sees them).
async fn event_count(server: &TestServer, who: &Session, room: &str) -> usize {
    let (st, b) = server
        .get(&room_path(room, "messages?dir=b&limit=1000"), who.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["chunk"].as_array().expect("chunk").len()
}

/// sytest "POST /rooms/:room_id/send/:event_type sends a message": each
/// call is a new event; content must be an object and the sender joined.
#[tokio::test]
async fn send_without_transaction_id() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    let path = room_path(&room, "send/m.room.message");
    let body = json!({"msgtype": "m.message", "body": "Here is the message content"});
    let (st, first) = server.post(&path, alice.token(), body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let (st, second) = server.post(&path, alice.token(), body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{second}");
    let (a, b) = (
        first["event_id"].as_str().unwrap(),
        second["event_id"].as_str().unwrap(),
    );
    assert!(
        a.starts_with('$') && b.starts_with('$') && a != b,
        "{a} {b}"
    );
    let (st, event) = server
        .get(
            &room_path(&room, &format!("event/{}", enc(a))),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{event}");
    assert_eq!(event["content"], body);

    assert_error(
        &server.post(&path, bob.token(), body.clone()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.post(&path, alice.token(), json!([1])).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .post(
                "/_matrix/client/v3/rooms/nope/send/m.room.message",
                alice.token(),
                body,
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
}

/// sytest "Event size limits": an event over 65536 bytes (a message or a
/// state event) is 413 `M_TOO_LARGE`, as are a type or state key over 255
/// bytes; nothing is written.
#[tokio::test]
async fn oversized_events_are_413() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let before = event_count(&server, &alice, &room).await;
    let big = "A".repeat(70_000);
    let resp = server
        .post(
            &room_path(&room, "send/m.room.message"),
            alice.token(),
            json!({"msgtype": "m.text", "body": big}),
        )
        .await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    let resp = server
        .put(
            &room_path(&room, "state/oooooooh"),
            alice.token(),
            json!({"key": big}),
        )
        .await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    let long = "x".repeat(256);
    let resp = server
        .put(
            &room_path(&room, &format!("send/{long}/t1")),
            alice.token(),
            json!({}),
        )
        .await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    let resp = server
        .put(
            &room_path(&room, &format!("state/m.x/{long}")),
            alice.token(),
            json!({}),
        )
        .await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    assert_eq!(event_count(&server, &alice, &room).await, before);
    // Just under the limit is fine.
    send_text(&server, &alice, &room, &"A".repeat(60_000)).await;
}

/// sytest "PUT /rooms/:room_id/typing/:user_id sets typing notification":
/// `typing: true` without a `timeout` (Synapse's default applies).
#[tokio::test]
async fn typing_without_timeout() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let path = room_path(&room, &format!("typing/{}", enc(&alice.user_id)));
    let (st, b) = server
        .put(&path, alice.token(), json!({"typing": true}))
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!({})));
    let body = sync(&server, &alice, "timeout=0").await;
    let ephemeral = &joined_room(&body, &room)["ephemeral"]["events"];
    let typing = event_of_type(ephemeral, "m.typing").expect("m.typing");
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));
    let (st, b) = server
        .put(&path, alice.token(), json!({"typing": false}))
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!({})));
    assert_error(
        &server
            .put(&path, alice.token(), json!({"typing": "yes"}))
            .await,
        400,
        "M_BAD_JSON",
    );
}

/// sytest "POST rejects invalid utf-8 in JSON": 400 `M_NOT_JSON`.
#[tokio::test]
async fn invalid_utf8_is_not_json() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .post(server.url("/_matrix/client/v3/register"))
        .header("content-type", "application/json")
        .body(b"{ \"username\": \"a\x81\" }".to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_error(&(status, body), 400, "M_NOT_JSON");
}

/// sytest "PUT /redact disallows redaction of event in different room":
/// 400, and nothing is redacted; an unknown event stays 404.
#[tokio::test]
async fn redacting_an_event_of_another_room_is_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room1 = create_room(&server, &alice, json!({})).await;
    let room2 = create_room(&server, &bob, json!({})).await;
    let event = send_text(&server, &alice, &room1, "test").await;
    let path = room_path(&room2, &format!("redact/{}/t1", enc(&event)));
    assert_error(
        &server.put(&path, bob.token(), json!({})).await,
        400,
        "M_INVALID_PARAM",
    );
    let path = room_path(&room2, "redact/$nope/t2");
    assert_error(
        &server.put(&path, bob.token(), json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    let (_, e) = server
        .get(
            &room_path(&room1, &format!("event/{}", enc(&event))),
            alice.token(),
        )
        .await;
    assert_eq!(e["content"]["body"], "test", "{e}");
}

/// sytest 30rooms/15kick.pl "Users cannot kick users from a room they are
/// not in", "... who have already left a room", and 07ban.pl "Banned user
/// is kicked and may not rejoin until unbanned": 403, nothing written.
#[tokio::test]
async fn kicks_need_a_member() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    let kick = room_path(&room, "kick");
    let ban = room_path(&room, "ban");

    let resp = server
        .post(
            &kick,
            alice.token(),
            json!({"user_id": "@bob:example.com", "reason": "testing"}),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");

    let (st, b) = server
        .post(&kick, alice.token(), json!({"user_id": bob.user_id}))
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!({})));
    assert_eq!(
        member_state(&server, &alice, &room, &bob.user_id).await["membership"],
        "leave"
    );
    let count = event_count(&server, &alice, &room).await;
    let resp = server
        .post(&kick, alice.token(), json!({"user_id": bob.user_id}))
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");

    let (st, _) = server
        .post(&ban, alice.token(), json!({"user_id": carol.user_id}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let count_banned = event_count(&server, &alice, &room).await;
    assert_eq!(count_banned, count + 1);
    let resp = server
        .post(&kick, alice.token(), json!({"user_id": carol.user_id}))
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    assert_eq!(
        member_state(&server, &alice, &room, &carol.user_id).await["membership"],
        "ban"
    );
    assert_eq!(event_count(&server, &alice, &room).await, count_banned);
    let resp = server
        .post(&room_path(&room, "join"), carol.token(), json!({}))
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    let resp = server
        .post(
            &room_path(&room, "invite"),
            alice.token(),
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    assert_eq!(event_count(&server, &alice, &room).await, count_banned);
    let (st, _) = server
        .post(
            &room_path(&room, "unban"),
            alice.token(),
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    join(&server, &carol, &room).await;
}

/// sytest "Setting state twice is idempotent": the same content from the
/// same sender answers the event in force and writes nothing; other
/// content, or another sender, is a new event.
#[tokio::test]
async fn setting_state_twice_is_idempotent() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let first = set_state(&server, &alice, &room, "a.test", "", json!({"a": 1})).await;
    let count = event_count(&server, &alice, &room).await;
    let again = set_state(&server, &alice, &room, "a.test", "", json!({"a": 1})).await;
    assert_eq!(again, first);
    assert_eq!(event_count(&server, &alice, &room).await, count);
    let changed = set_state(&server, &alice, &room, "a.test", "", json!({"a": 2})).await;
    assert_ne!(changed, first);
    let topic = set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "t"}),
    )
    .await;
    let (st, b) = server
        .put(
            &room_path(&room, "state/m.room.topic"),
            alice.token(),
            json!({"topic": "t"}),
        )
        .await;
    assert_eq!(
        (st, b["event_id"].as_str()),
        (StatusCode::OK, Some(topic.as_str()))
    );
    // The power to send it is still checked.
    let resp = server
        .put(
            &room_path(&room, "state/m.room.topic"),
            bob.token(),
            json!({"topic": "t"}),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

/// sytest "POST /join/:room_id can join a room with custom content" and
/// "POST /join/:room_alias ...": extra keys of the body go into the member
/// event; the server's own keys stay the server's.
#[tokio::test]
async fn join_with_custom_content() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "custom"}),
    )
    .await;
    let (st, b) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            bob.token(),
            json!({"foo": "bar", "membership": "leave", "displayname": "Not Bob", "reason": "hi"}),
        )
        .await;
    assert_eq!(
        (st, b["room_id"].as_str()),
        (StatusCode::OK, Some(room.as_str()))
    );
    let member = member_state(&server, &alice, &room, &bob.user_id).await;
    assert_eq!(member["foo"], "bar", "{member}");
    assert_eq!(member["membership"], "join", "{member}");
    assert_eq!(member["reason"], "hi", "{member}");
    assert_ne!(member["displayname"], "Not Bob", "{member}");

    let alias = format!("#custom:{}", server.server_name);
    let (st, b) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&alias)),
            carol.token(),
            json!({"foo": "bar"}),
        )
        .await;
    assert_eq!(
        (st, b["room_id"].as_str()),
        (StatusCode::OK, Some(room.as_str()))
    );
    let member = member_state(&server, &alice, &room, &carol.user_id).await;
    assert_eq!(
        (&member["foo"], &member["membership"]),
        (&json!("bar"), &json!("join"))
    );
}

/// sytest "GET /rooms/:room_id/messages returns a message", "... lazy loads
/// members correctly" and "A next_batch token can be used in the v1
/// messages API": a page with events has an `end` (as Synapse); the page
/// after the last, empty, has none.
#[tokio::test]
async fn messages_pages_with_events_have_an_end() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "Here is the message content").await;
    let body = sync(&server, &alice, "timeout=0").await;
    let prev = joined_room(&body, &room)["timeline"]["prev_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    for filter in ["", "&filter=%7B%22lazy_load_members%22%3Atrue%7D"] {
        let path = room_path(
            &room,
            &format!("messages?dir=b&from={}{filter}", enc(&prev)),
        );
        let (st, page) = server.get(&path, alice.token()).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        assert!(!page["chunk"].as_array().unwrap().is_empty(), "{page}");
        let end = page["end"]
            .as_str()
            .unwrap_or_else(|| panic!("no end: {page}"));
        if !filter.is_empty() {
            assert_eq!(page["state"][0]["state_key"], alice.user_id, "{page}");
        }
        let path = room_path(&room, &format!("messages?dir=b&from={}{filter}", enc(end)));
        let (st, page) = server.get(&path, alice.token()).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        assert_eq!(page["chunk"], json!([]), "{page}");
        assert!(page.get("end").is_none(), "{page}");
    }
    // An incremental sync's prev_batch is just before its first event.
    let next = next_batch(&body);
    let second = send_text(&server, &alice, &room, "second").await;
    let inc = sync_since(&server, &alice, &next).await;
    let timeline = &joined_room(&inc, &room)["timeline"];
    assert_eq!(event_ids(&timeline["events"]), [second], "{inc}");
    assert_eq!(timeline["limited"], false, "{inc}");
    let prev = timeline["prev_batch"].as_str().unwrap();
    let path = room_path(&room, &format!("messages?dir=b&limit=1&from={}", enc(prev)));
    let (st, page) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(
        bodies(&page["chunk"]),
        ["Here is the message content"],
        "{page}"
    );
    assert!(page["end"].is_string(), "{page}");
    // Forwards from a sync's next_batch.
    let body = inc;
    let next = next_batch(&body);
    let id = send_text(&server, &alice, &room, "2").await;
    let path = room_path(&room, &format!("messages?dir=f&from={}", enc(&next)));
    let (st, page) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(event_ids(&page["chunk"]), [id]);
    assert!(page["end"].is_string(), "{page}");
}
