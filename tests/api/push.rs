//! Push notifications: `/pushers` and `/pushers/set` (validation, append,
//! deletion with the device and the account), delivery to a fake push
//! gateway on loopback (shape, counts, `event_id_only`, retries in order,
//! rejected pushkeys, across a restart and a crash), and `/notifications`
//! (with or without a pusher).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const SET: &str = "/_matrix/client/v3/pushers/set";
const LIST: &str = "/_matrix/client/v3/pushers";

fn http_pusher(pushkey: &str, url: &str) -> Value {
    json!({
        "kind": "http",
        "app_id": "org.example.app",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "profile_tag": "tag",
        "pushkey": pushkey,
        "lang": "en",
        "data": {"url": url, "custom": 7},
    })
}

async fn set_pusher(server: &TestServer, who: &Session, body: Value) {
    let st = server.post(SET, who.token(), body).await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    assert_eq!(st.1, json!({}));
}

async fn pushkeys(server: &TestServer, who: &Session) -> Vec<String> {
    let (st, body) = server.get(LIST, who.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["pushers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pushkey"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pushers_are_set_listed_replaced_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    assert_eq!(pushkeys(&server, &alice).await, Vec::<String>::new());
    let url = "https://push.example.org/_matrix/push/v1/notify";
    set_pusher(&server, &alice, http_pusher("key1", url)).await;
    let (_, body) = server.get(LIST, alice.token()).await;
    assert_eq!(
        body["pushers"],
        json!([{
            "kind": "http", "app_id": "org.example.app", "app_display_name": "Example",
            "device_display_name": "Phone", "profile_tag": "tag", "pushkey": "key1",
            "lang": "en", "data": {"url": url, "custom": 7},
        }])
    );
    // The same app id and pushkey replace the pusher.
    let mut changed = http_pusher("key1", url);
    changed["device_display_name"] = json!("Tablet");
    changed["data"]["format"] = json!("event_id_only");
    set_pusher(&server, &alice, changed).await;
    let (_, body) = server.get(LIST, alice.token()).await;
    assert_eq!(body["pushers"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["pushers"][0]["device_display_name"], "Tablet");
    assert_eq!(body["pushers"][0]["data"]["format"], "event_id_only");
    // Another pushkey is another pusher.
    set_pusher(&server, &alice, http_pusher("key2", url)).await;
    assert_eq!(pushkeys(&server, &alice).await, ["key1", "key2"]);
    // `kind: null` deletes; deleting one that is not there is fine.
    let delete = json!({"kind": null, "app_id": "org.example.app", "pushkey": "key1"});
    set_pusher(&server, &alice, delete.clone()).await;
    set_pusher(&server, &alice, delete).await;
    assert_eq!(pushkeys(&server, &alice).await, ["key2"]);
    // Another user sees none of them.
    let bob = server.user("bob").await;
    assert_eq!(pushkeys(&server, &bob).await, Vec::<String>::new());
}

#[tokio::test]
async fn bad_pushers_are_refused_and_nothing_is_written() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let good = "https://push.example.org/_matrix/push/v1/notify";
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = http_pusher("k", good);
        f(&mut b);
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no kind",
            with(&|b| {
                b.as_object_mut().unwrap().remove("kind");
            }),
            "M_MISSING_PARAM",
        ),
        (
            "no data",
            with(&|b| {
                b.as_object_mut().unwrap().remove("data");
            }),
            "M_MISSING_PARAM",
        ),
        (
            "no lang",
            with(&|b| {
                b.as_object_mut().unwrap().remove("lang");
            }),
            "M_MISSING_PARAM",
        ),
        (
            "no url",
            with(&|b| {
                b["data"] = json!({});
            }),
            "M_MISSING_PARAM",
        ),
        (
            "delete without pushkey",
            json!({"kind": null, "app_id": "a"}),
            "M_MISSING_PARAM",
        ),
        (
            "wrong path",
            with(&|b| {
                b["data"]["url"] = json!("https://push.example.org/notify");
            }),
            "M_INVALID_PARAM",
        ),
        (
            "not a URL",
            with(&|b| {
                b["data"]["url"] = json!("not a url");
            }),
            "M_INVALID_PARAM",
        ),
        (
            "not http",
            with(&|b| {
                b["data"]["url"] = json!("ftp://h/_matrix/push/v1/notify");
            }),
            "M_INVALID_PARAM",
        ),
        (
            "format not a string",
            with(&|b| {
                b["data"]["format"] = json!(5);
            }),
            "M_BAD_JSON",
        ),
        (
            "email",
            with(&|b| {
                b["kind"] = json!("email");
            }),
            "M_INVALID_PARAM",
        ),
        (
            "unknown kind",
            with(&|b| {
                b["kind"] = json!("carrier-pigeon");
            }),
            "M_INVALID_PARAM",
        ),
        (
            "long pushkey",
            with(&|b| {
                b["pushkey"] = json!("k".repeat(513));
            }),
            "M_INVALID_PARAM",
        ),
        (
            "append not bool",
            with(&|b| {
                b["append"] = json!("yes");
            }),
            "M_BAD_JSON",
        ),
        (
            "pushkey not string",
            with(&|b| {
                b["pushkey"] = json!(5);
            }),
            "M_BAD_JSON",
        ),
        (
            "data not object",
            with(&|b| {
                b["data"] = json!("x");
            }),
            "M_BAD_JSON",
        ),
    ];
    for (what, body, errcode) in cases {
        let st = server.post(SET, alice.token(), body).await;
        assert_error_for(what, &st, 400, errcode);
    }
    assert_eq!(pushkeys(&server, &alice).await, Vec::<String>::new());
    let st = server.get(LIST, None).await;
    assert_error(&st, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn append_false_takes_the_pushkey_from_other_users() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let url = "https://push.example.org/_matrix/push/v1/notify";
    set_pusher(&server, &alice, http_pusher("shared", url)).await;
    let mut appended = http_pusher("shared", url);
    appended["append"] = json!(true);
    set_pusher(&server, &bob, appended).await;
    assert_eq!(pushkeys(&server, &alice).await, ["shared"]);
    assert_eq!(pushkeys(&server, &bob).await, ["shared"]);
    // Without `append`, carol's pusher is the only one left with the key.
    set_pusher(&server, &carol, http_pusher("shared", url)).await;
    assert_eq!(pushkeys(&server, &alice).await, Vec::<String>::new());
    assert_eq!(pushkeys(&server, &bob).await, Vec::<String>::new());
    assert_eq!(pushkeys(&server, &carol).await, ["shared"]);
}

/// Makes `req` with alice's password for UIA; asserts 200.
async fn as_alice(server: &TestServer, req: UiaRequest<'_>) {
    let (st, body) = with_uia(server, FirstRound::Challenge, req, "alice", "password123").await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn pushers_go_with_their_device_and_the_account() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let phone = server.login("alice", "password123").await;
    let url = "https://push.example.org/_matrix/push/v1/notify";
    set_pusher(&server, &alice, http_pusher("first", url)).await;
    set_pusher(&server, &phone, http_pusher("phone", url)).await;
    assert_eq!(pushkeys(&server, &alice).await, ["first", "phone"]);
    let path = format!("/_matrix/client/v3/devices/{}", enc(&phone.device_id));
    as_alice(&server, UiaRequest::delete(&path, alice.token(), json!({}))).await;
    assert_eq!(pushkeys(&server, &alice).await, ["first"]);
    // A password change that logs out the other devices takes theirs.
    let laptop = server.login("alice", "password123").await;
    set_pusher(&server, &laptop, http_pusher("laptop", url)).await;
    as_alice(
        &server,
        UiaRequest::post(
            "/_matrix/client/v3/account/password",
            alice.token(),
            json!({"new_password": "another-password-1"}),
        ),
    )
    .await;
    assert_eq!(pushkeys(&server, &alice).await, ["first"]);
    // Deactivation takes them all.
    let admin = server.admin("admin").await;
    let st = server
        .post(
            &format!("/_synapse/admin/v1/deactivate/{}", enc(&alice.user_id)),
            admin.token(),
            json!({}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    assert_eq!(server.sql_count("SELECT COUNT(*) FROM pushers").await, 0);
}

/// Alice (with a pusher to the fake gateway) and bob in a named room.
pub(crate) async fn pushed_pair(
    server: &TestServer,
    gateway: &FakeGateway,
    format: Option<&str>,
) -> (Session, Session, String) {
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        server,
        &alice,
        json!({"name": "Garden", "invite": [bob.user_id]}),
    )
    .await;
    join(server, &bob, &room).await;
    let mut pusher = http_pusher("alice-key", &gateway.url);
    if let Some(f) = format {
        pusher["data"]["format"] = json!(f);
    }
    set_pusher(server, &alice, pusher).await;
    (alice, bob, room)
}

#[tokio::test]
async fn a_message_reaches_the_gateway_in_the_push_gateway_shape() {
    let server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let (alice, bob, room) = pushed_pair(&server, &gateway, None).await;
    let event_id = send_text(&server, &bob, &room, "hello there").await;
    let got = gateway.next_for(&event_id).await;
    let n = &got.body["notification"];
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], bob.user_id.as_str());
    assert_eq!(n["sender_display_name"], "bob");
    assert_eq!(n["room_name"], "Garden");
    assert_eq!(n["content"]["body"], "hello there");
    // A two-member room: the one-to-one rule rings (sound), so high.
    assert_eq!(n["prio"], "high");
    assert_eq!(n["counts"], json!({"unread": 1}));
    let device = &n["devices"][0];
    assert_eq!(n["devices"].as_array().unwrap().len(), 1);
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["pushkey"], "alice-key");
    assert!(
        device["pushkey_ts"].as_i64().unwrap() > 1_600_000_000,
        "{device}"
    );
    assert!(
        device["pushkey_ts"].as_i64().unwrap() < 100_000_000_000,
        "seconds: {device}"
    );
    assert_eq!(device["data"], json!({"custom": 7}), "data without url");
    assert_eq!(device["tweaks"], json!({"sound": "default"}));
    // Alice's own message pushes nothing; bob's next one counts the same room.
    send_text(&server, &alice, &room, "from alice").await;
    let second = send_text(&server, &bob, &room, "again").await;
    let got = gateway.next_for(&second).await;
    assert_eq!(got.body["notification"]["counts"]["unread"], 1);
    assert!(
        gateway
            .drain()
            .await
            .iter()
            .all(|r| r.body["notification"]["sender"] != alice.user_id.as_str()),
        "alice was pushed for her own message"
    );
    // Reading the room sends the new badge: counts and devices alone.
    let st = server
        .post(
            &room_path(&room, &format!("/receipt/m.read/{}", enc(&second))),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    let badge = gateway.next().await;
    let n = &badge.body["notification"];
    assert_eq!(n["counts"], json!({"unread": 0}), "{n}");
    assert_eq!(n["devices"][0]["pushkey"], "alice-key");
    assert!(
        n.get("event_id").is_none() && n.get("content").is_none(),
        "{n}"
    );
}

#[tokio::test]
async fn a_push_is_delivered_while_the_servers_clock_stands_still() {
    // Delivery follows the commit, not a schedule: with the server's clock
    // held still, the push still goes out.
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let gateway = FakeGateway::start().await;
    let (_alice, bob, room) = pushed_pair(&server, &gateway, None).await;
    let clock = server.now_ms();
    let sent = std::time::Instant::now();
    let event_id = send_text(&server, &bob, &room, "right now").await;
    let got = gateway.next_for(&event_id).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["notification"]["room_id"], room.as_str());
    assert_eq!(server.now_ms(), clock, "the mock clock moved");
    eprintln!("pushed {:?} after the send", sent.elapsed());
}

#[tokio::test]
async fn prio_is_low_unless_the_push_rings_highlights_or_is_encrypted() {
    let server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let (alice, bob, room) = pushed_pair(&server, &gateway, None).await;
    // Three members: a message notifies without a sound (not one-to-one).
    let carol = server.user("carol").await;
    invite(&server, &alice, &room, &carol.user_id).await;
    join(&server, &carol, &room).await;
    let plain = send_text(&server, &bob, &room, "to the three of us").await;
    let n = gateway.next_for(&plain).await.body["notification"].clone();
    assert_eq!(n["prio"], "low", "{n}");
    assert_eq!(n["devices"][0]["tweaks"], json!({}), "{n}");
    // A mention highlights: high.
    let mention = json!({"msgtype": "m.text", "body": "alice!",
        "m.mentions": {"user_ids": [alice.user_id]}});
    let loud = send_event(&server, &bob, &room, "m.room.message", mention).await;
    let n = gateway.next_for(&loud).await.body["notification"].clone();
    assert_eq!(n["prio"], "high", "{n}");
    assert_eq!(n["devices"][0]["tweaks"]["highlight"], true, "{n}");
    // An encrypted event may say anything: high, though it has no tweak.
    let sealed = send_event(
        &server,
        &bob,
        &room,
        "m.room.encrypted",
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA",
            "sender_key": "key", "session_id": "session", "device_id": "DEV"}),
    )
    .await;
    let n = gateway.next_for(&sealed).await.body["notification"].clone();
    assert_eq!(n["prio"], "high", "{n}");
    assert_eq!(n["devices"][0]["tweaks"], json!({}), "{n}");
}

#[tokio::test]
async fn event_id_only_pushers_get_ids_and_counts_only() {
    let server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let (_alice, bob, room) = pushed_pair(&server, &gateway, Some("event_id_only")).await;
    let event_id = send_text(&server, &bob, &room, "secret").await;
    let got = gateway.next_for(&event_id).await;
    let n = got.body["notification"].as_object().unwrap();
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["counts"], json!({"unread": 1}));
    assert_eq!(
        n["devices"][0]["data"],
        json!({"format": "event_id_only", "custom": 7})
    );
    for absent in [
        "content",
        "sender",
        "type",
        "sender_display_name",
        "room_name",
    ] {
        assert!(!n.contains_key(absent), "{absent} in {n:?}");
    }
}

#[tokio::test]
async fn another_format_sends_everything_and_an_alias_names_the_room() {
    let server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"room_alias_name": "patio", "invite": [bob.user_id]}),
    )
    .await;
    join(&server, &bob, &room).await;
    // Kept as given (sytest's "Can fetch a user's pushers" sets this one).
    let mut pusher = http_pusher("alice-key", &gateway.url);
    pusher["data"]["format"] = json!("id_event_only");
    set_pusher(&server, &alice, pusher).await;
    let (_, listed) = server.get(LIST, alice.token()).await;
    assert_eq!(listed["pushers"][0]["data"]["format"], "id_event_only");
    let event_id = send_text(&server, &bob, &room, "on the patio").await;
    let n = gateway.next_for(&event_id).await.body["notification"].clone();
    assert_eq!(n["content"]["body"], "on the patio");
    let alias = format!("#patio:{}", server.server_name);
    assert_eq!(n["room_name"], alias.as_str());
    assert_eq!(n["room_alias"], alias.as_str());
}

#[tokio::test]
async fn an_invite_is_pushed_to_its_target() {
    let server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    set_pusher(&server, &alice, http_pusher("alice-key", &gateway.url)).await;
    let room = create_room(&server, &bob, json!({})).await;
    invite(&server, &bob, &room, &alice.user_id).await;
    let got = loop {
        let r = gateway.next().await;
        if r.body["notification"]["type"] == "m.room.member" {
            break r;
        }
    };
    let n = &got.body["notification"];
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["sender"], bob.user_id.as_str());
    assert_eq!(n["membership"], "invite");
    assert_eq!(n["user_is_target"], true);
    assert_eq!(n["content"]["membership"], "invite");
}

#[tokio::test]
async fn a_gateway_that_fails_gets_everything_afterwards_in_order() {
    let server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let (_alice, bob, room) = pushed_pair(&server, &gateway, None).await;
    gateway.answer_next(500, json!({"error": "down"}));
    let first = send_text(&server, &bob, &room, "one").await;
    let failed = gateway.next_for(&first).await;
    assert_eq!(failed.status, 500);
    let second = send_text(&server, &bob, &room, "two").await;
    // After the backoff, the first comes again, then the second.
    let mut delivered = Vec::new();
    while delivered.len() < 2 {
        let r = gateway.next().await;
        if r.status == 200 {
            delivered.push(
                r.body["notification"]["event_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert_eq!(delivered, [first, second]);
}

#[tokio::test]
async fn a_rejected_pushkey_removes_the_pusher() {
    let server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let (alice, bob, room) = pushed_pair(&server, &gateway, None).await;
    let mut other = http_pusher("other-key", &gateway.url);
    other["app_id"] = json!("org.example.other");
    set_pusher(&server, &alice, other).await;
    gateway.answer_next(200, json!({"rejected": ["alice-key"]}));
    gateway.answer_next(200, json!({"rejected": ["alice-key"]}));
    send_text(&server, &bob, &room, "hello").await;
    wait_until(
        "the rejected pusher is gone",
        Duration::from_secs(20),
        || async {
            let keys = pushkeys(&server, &alice).await;
            if keys == ["other-key"] {
                Ok(())
            } else {
                Err(format!("{keys:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn undelivered_pushes_survive_a_restart() {
    let mut server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let (_alice, bob, room) = pushed_pair(&server, &gateway, None).await;
    gateway.set_down(true);
    let event_id = send_text(&server, &bob, &room, "while down").await;
    assert_eq!(gateway.next_for(&event_id).await.status, 500);
    server.restart().await;
    gateway.set_down(false);
    loop {
        let r = gateway.next_for(&event_id).await;
        if r.status == 200 {
            assert_eq!(r.body["notification"]["content"]["body"], "while down");
            break;
        }
    }
    // The row goes once the gateway's answer is in.
    wait_until("the queue is empty", Duration::from_secs(20), || async {
        match server.sql_count("SELECT COUNT(*) FROM push_queue").await {
            0 => Ok(()),
            n => Err(format!("{n} rows")),
        }
    })
    .await;
}

#[tokio::test]
async fn events_committed_before_a_crash_are_pushed_after_the_restart_once() {
    let mut server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let (alice, bob, room) = pushed_pair(&server, &gateway, None).await;
    let before = send_text(&server, &bob, &room, "before").await;
    gateway.next_for(&before).await;
    // From here the recorder drops what the pipeline hands it, as a crash
    // between the commit and the recording would.
    server.services().pushers.lose_handed_events(true);
    let lost = send_text(&server, &bob, &room, "lost on its way").await;
    server.restart().await;
    let after = send_text(&server, &bob, &room, "after").await;
    // The lost one first, then the new one; nothing twice.
    let mut pushed = Vec::new();
    while pushed.last() != Some(&after) {
        let r = gateway.next().await;
        if let Some(id) = r.body["notification"]["event_id"].as_str() {
            pushed.push(id.to_owned());
        }
    }
    assert_eq!(pushed, [lost, after]);
    let listed = wait_until("three notifications", Duration::from_secs(20), || async {
        let body = notifications(&server, &alice, "").await;
        match notified_bodies(&body).len() {
            3 => Ok(body),
            _ => Err(body.to_string()),
        }
    })
    .await;
    assert_eq!(
        notified_bodies(&listed),
        ["after", "lost on its way", "before"]
    );
}

#[tokio::test]
async fn a_user_without_a_pusher_is_notified_across_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    // Neither has a pusher; each reads /notifications once, which has their
    // notifications recorded from then on, across restarts.
    for who in [&alice, &bob] {
        assert_eq!(
            notified_bodies(&notifications(&server, who, "").await).len(),
            0
        );
    }
    let room = create_room(&server, &alice, json!({"invite": [bob.user_id]})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &bob, &room, "before the restart").await;
    server.restart().await;
    send_text(&server, &bob, &room, "after it").await;
    let listed = wait_until("two notifications", Duration::from_secs(20), || async {
        let body = notifications(&server, &alice, "").await;
        match notified_bodies(&body).len() {
            2 => Ok(body),
            _ => Err(body.to_string()),
        }
    })
    .await;
    assert_eq!(notified_bodies(&listed), ["after it", "before the restart"]);
    // Bob's own messages are not his notifications: his invite is.
    let bobs = notifications(&server, &bob, "").await;
    let kinds: Vec<&Value> = bobs["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["event"]["content"]["membership"])
        .collect();
    assert_eq!(kinds, [&json!("invite")], "{bobs}");
}

async fn notifications(server: &TestServer, who: &Session, query: &str) -> Value {
    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/notifications{query}"),
            who.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body
}

fn notified_bodies(body: &Value) -> Vec<String> {
    body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["event"]["content"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn notifications_are_listed_newest_first_with_paging_and_highlights() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"invite": [bob.user_id]})).await;
    join(&server, &bob, &room).await;
    // Nothing yet (no pusher needed: every member's notifications are
    // recorded).
    assert_eq!(
        notifications(&server, &alice, "").await["notifications"],
        json!([])
    );
    send_text(&server, &bob, &room, "one").await;
    let mention =
        json!({"msgtype": "m.text", "body": "two", "m.mentions": {"user_ids": [alice.user_id]}});
    send_event(&server, &bob, &room, "m.room.message", mention).await;
    let three = send_text(&server, &bob, &room, "three").await;
    let all = wait_until("three notifications", Duration::from_secs(20), || async {
        let body = notifications(&server, &alice, "").await;
        if body["notifications"].as_array().unwrap().len() == 3 {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert_eq!(notified_bodies(&all), ["three", "two", "one"]);
    let n = &all["notifications"][0];
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["read"], false);
    assert!(n["ts"].as_i64().unwrap() > 0);
    assert!(n.as_object().unwrap().contains_key("profile_tag"));
    assert!(
        n["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "notify"),
        "{n}"
    );
    assert_eq!(n["event"]["event_id"], three.as_str());
    // Paging.
    let page = notifications(&server, &alice, "?limit=2").await;
    assert_eq!(notified_bodies(&page), ["three", "two"]);
    let token = page["next_token"].as_str().expect("next_token").to_owned();
    let rest = notifications(&server, &alice, &format!("?limit=2&from={}", enc(&token))).await;
    assert_eq!(notified_bodies(&rest), ["one"]);
    assert!(rest.get("next_token").is_none(), "{rest}");
    // Highlights only.
    let highlights = notifications(&server, &alice, "?only=highlight").await;
    assert_eq!(notified_bodies(&highlights), ["two"]);
    // A read receipt marks them read.
    let st = server
        .post(
            &room_path(&room, &format!("/receipt/m.read/{}", enc(&three))),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    let read = notifications(&server, &alice, "").await;
    assert!(
        read["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["read"] == true),
        "{read}"
    );
    // A bad token is refused.
    let st = server
        .get("/_matrix/client/v3/notifications?from=nope", alice.token())
        .await;
    assert_error(&st, 400, "M_INVALID_PARAM");
}

/// Alice (with a pusher at `url`) and bob in one room.
async fn pair_pushing_to(server: &TestServer, url: &str) -> (Session, Session, String) {
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(server, &alice, json!({"invite": [bob.user_id]})).await;
    join(server, &bob, &room).await;
    set_pusher(server, &alice, http_pusher("alice-key", url)).await;
    (alice, bob, room)
}

#[tokio::test]
async fn an_https_gateway_signed_by_a_configured_ca_gets_the_push() {
    let server = TestServer::start_with(|c| c.outbound.ca_files = vec![test_ca_file()]).await;
    let gateway = TlsGateway::start().await;
    let (_alice, bob, room) = pair_pushing_to(&server, &gateway.url).await;
    let event_id = send_text(&server, &bob, &room, "over tls").await;
    let got = gateway.inner.next_for(&event_id).await;
    assert_eq!(got.body["notification"]["content"]["body"], "over tls");
}

#[tokio::test]
async fn an_https_gateway_of_an_unknown_ca_is_not_trusted() {
    let server = TestServer::start().await;
    let gateway = TlsGateway::start().await;
    let (_alice, bob, room) = pair_pushing_to(&server, &gateway.url).await;
    send_text(&server, &bob, &room, "not delivered").await;
    // The server refuses the certificate: the handshake fails, nothing
    // reaches the gateway behind.
    let failure = gateway.next_failure().await;
    assert!(!failure.is_empty());
    assert!(gateway.inner.drain().await.is_empty());
}

/// The pushkeys that got a notification about `event_id` among `received`.
fn pushkeys_for(received: &[Received], event_id: &str) -> Vec<String> {
    pushkeys_where(received, |n| n["event_id"] == event_id)
}

/// The pushkeys that got a notification `wanted` says yes to.
fn pushkeys_where(received: &[Received], wanted: impl Fn(&Value) -> bool) -> Vec<String> {
    let mut keys: Vec<String> = received
        .iter()
        .filter(|r| wanted(&r.body["notification"]))
        .flat_map(|r| {
            r.body["notification"]["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["pushkey"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn only_the_rooms_members_are_pushed_and_a_leaver_stops() {
    let server = TestServer::start().await;
    let gateway = FakeGateway::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    let room = create_room(&server, &bob, json!({"preset": "public_chat"})).await;
    join(&server, &alice, &room).await;
    join(&server, &dave, &room).await;
    // Carol has a pusher but is in another room only.
    let elsewhere = create_room(&server, &carol, json!({"preset": "public_chat"})).await;
    for (who, key) in [
        (&alice, "alice-key"),
        (&carol, "carol-key"),
        (&dave, "dave-key"),
    ] {
        set_pusher(&server, who, http_pusher(key, &gateway.url)).await;
    }

    let first = send_text(&server, &bob, &room, "first").await;
    dave_left_after(&server, &gateway, &dave, &room, &first).await;
    let second = send_text(&server, &bob, &room, "second").await;
    // Carol's own room still pushes her (her pusher works).
    join(&server, &alice, &elsewhere).await;
    let hers = send_text(&server, &alice, &elsewhere, "to carol").await;
    let mut received = Vec::new();
    while pushkeys_for(&received, &second).is_empty() || pushkeys_for(&received, &hers).is_empty() {
        received.push(gateway.next().await);
    }
    received.extend(gateway.drain().await);
    assert_eq!(pushkeys_for(&received, &second), ["alice-key"]);
    assert_eq!(pushkeys_for(&received, &hers), ["carol-key"]);
    // The notifications of both messages are written (one transaction per
    // batch, before any delivery): carol has only her room's, dave only the
    // first message.
    assert_eq!(
        notified_bodies(&notifications(&server, &carol, "").await),
        ["to carol"]
    );
    assert_eq!(
        notified_bodies(&notifications(&server, &dave, "").await),
        ["first"]
    );
    assert_eq!(
        notified_bodies(&notifications(&server, &alice, "").await),
        ["second", "first"]
    );
    invitee_is_pushed_the_invite_only(&server, &gateway, [&bob, &carol, &dave], &room).await;
}

/// Carol, who is not in `room`, is invited: she is pushed the invite and
/// not the message after it; alice (a member) the message and not the
/// invite (a pusher's deliveries go in order, so hers would have come
/// before the message).
async fn invitee_is_pushed_the_invite_only(
    server: &TestServer,
    gateway: &FakeGateway,
    [bob, carol, dave]: [&Session; 3],
    room: &str,
) {
    invite(server, bob, room, &carol.user_id).await;
    let third = send_text(server, bob, room, "third").await;
    let is_invite = |n: &Value| n["type"] == "m.room.member" && n["membership"] == "invite";
    let mut received = Vec::new();
    while pushkeys_for(&received, &third).is_empty()
        || pushkeys_where(&received, is_invite).is_empty()
    {
        received.push(gateway.next().await);
    }
    received.extend(gateway.drain().await);
    assert_eq!(pushkeys_where(&received, is_invite), ["carol-key"]);
    assert_eq!(pushkeys_for(&received, &third), ["alice-key"]);
    let invite = received
        .iter()
        .map(|r| &r.body["notification"])
        .find(|n| is_invite(n))
        .unwrap();
    assert_eq!(invite["room_id"], room);
    assert_eq!(invite["user_is_target"], true);
    // The notifications of an event are written together before any of
    // its deliveries: carol has the invite (no body) and not the message,
    // dave (who left) neither.
    assert_eq!(
        notified_bodies(&notifications(server, carol, "").await),
        ["", "to carol"]
    );
    assert_eq!(
        notified_bodies(&notifications(server, dave, "").await),
        ["first"]
    );
}

/// Waits for `event_id`'s deliveries to alice and dave (and checks that
/// carol got none), then has dave leave.
async fn dave_left_after(
    server: &TestServer,
    gateway: &FakeGateway,
    dave: &Session,
    room: &str,
    event_id: &str,
) {
    let mut received = Vec::new();
    while pushkeys_for(&received, event_id).len() < 2 {
        received.push(gateway.next().await);
    }
    assert_eq!(pushkeys_for(&received, event_id), ["alice-key", "dave-key"]);
    leave(server, dave, room).await;
}
