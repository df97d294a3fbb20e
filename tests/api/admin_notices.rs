//! Server notices: `POST /_synapse/admin/v1/send_server_notice`,
//! `PUT /_synapse/admin/v1/send_server_notice/{txnId}` and
//! `POST /_myelin/admin/v1/broadcast_server_notice`, and what the user sees
//! through the client API (invite from @_server, the m.server_notice tag,
//! the invite that cannot be rejected, the room one cannot post in).

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const SEND: &str = "/_synapse/admin/v1/send_server_notice";
const BROADCAST: &str = "/_myelin/admin/v1/broadcast_server_notice";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn notice(server: &TestServer, admin: &Session, body: Value) -> (StatusCode, Value) {
    server.post(SEND, admin.token(), body).await
}

/// Sends a text notice to `user`; returns the event id.
async fn notice_ok(server: &TestServer, admin: &Session, user: &str, body: &str) -> String {
    let (st, b) = notice(
        server,
        admin,
        json!({"user_id": user, "content": text_content(body)}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "send_server_notice: {b}");
    let id = b["event_id"].as_str().expect("event_id").to_owned();
    assert!(id.starts_with('$'), "{b}");
    id
}

async fn notice_txn(
    server: &TestServer,
    admin: &Session,
    txn: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .put(&format!("{SEND}/{}", enc(txn)), admin.token(), body)
        .await
}

/// The rooms `who` is invited to, per an initial sync.
async fn invites(server: &TestServer, who: &Session) -> serde_json::Map<String, Value> {
    let body = sync(server, who, "timeout=0").await;
    body["rooms"]["invite"]
        .as_object()
        .unwrap_or_else(|| panic!("rooms.invite: {body}"))
        .clone()
}

/// The one room `who` is invited to; asserts there is exactly one.
async fn the_invite(server: &TestServer, who: &Session) -> (String, Value) {
    let inv = invites(server, who).await;
    assert_eq!(
        inv.len(),
        1,
        "exactly one invite for {}: {inv:?}",
        who.user_id
    );
    let (room, body) = inv.into_iter().next().unwrap();
    (room, body)
}

fn notice_bodies(events: &[Value], sender: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn try_leave(server: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(room)),
            who.token(),
            json!({}),
        )
        .await
}

fn server_user(server: &TestServer) -> String {
    server.user_id("_server")
}

// ---------------------------------------------------------------------------
// Sending and what the user sees
// ---------------------------------------------------------------------------

#[tokio::test]
async fn notice_invites_the_user_from_the_notices_user() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "maintenance at 10").await;

    let (room, inv) = the_invite(&server, &alice).await;
    let state = &inv["invite_state"]["events"];
    let me = find_state(state, "m.room.member", &alice.user_id)
        .unwrap_or_else(|| panic!("own invite in invite_state: {inv}"));
    assert_eq!(me["content"]["membership"], "invite", "{me}");
    assert_eq!(me["sender"], server_user(&server), "{me}");
    let name = find_state(state, "m.room.name", "").expect("room name in invite_state");
    assert_eq!(name["content"]["name"], "Server Notices", "{name}");
    // Not auto-joined.
    assert!(joined_rooms(&server, &alice).await.is_empty());
    assert!(room.starts_with('!'));
}

#[tokio::test]
async fn notices_user_and_room_name_follow_the_config() {
    let server = TestServer::start_with(|c| {
        c.server_notices.local_part = "notices".into();
        c.server_notices.display_name = "Ops Bot".into();
        c.server_notices.room_name = "Ops Alerts".into();
    })
    .await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "hello").await;

    let (room, inv) = the_invite(&server, &alice).await;
    let state = &inv["invite_state"]["events"];
    let me = find_state(state, "m.room.member", &alice.user_id).expect("own invite");
    assert_eq!(me["sender"], server.user_id("notices"), "{me}");
    let name = find_state(state, "m.room.name", "").expect("name");
    assert_eq!(name["content"]["name"], "Ops Alerts", "{name}");
    let (st, prof) = server
        .get(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&server.user_id("notices"))
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{prof}");
    assert_eq!(prof["displayname"], "Ops Bot", "{prof}");

    join(&server, &alice, &room).await;
    let events = timeline(&server, &alice, &room).await;
    assert_eq!(
        notice_bodies(&events, &server.user_id("notices")),
        ["hello"]
    );
}

#[tokio::test]
async fn notice_invite_cannot_be_rejected() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "you must read this").await;
    let (room, _) = the_invite(&server, &alice).await;

    assert_error(
        &try_leave(&server, &alice, &room).await,
        403,
        "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
    );
    // Still invited.
    let (again, _) = the_invite(&server, &alice).await;
    assert_eq!(again, room);
}

#[tokio::test]
async fn user_joins_sees_the_notice_and_the_tag() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let ev = notice_ok(&server, &admin, &alice.user_id, "welcome").await;
    let (room, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &room).await;
    assert_eq!(joined_rooms(&server, &alice).await, vec![room.clone()]);

    let got = get_event_ok(&server, &alice, &room, &ev).await;
    assert_eq!(got["sender"], server_user(&server), "{got}");
    assert_eq!(got["content"], text_content("welcome"), "{got}");

    // The m.server_notice tag, through the tags API...
    let (st, tags) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/tags",
                enc(&alice.user_id),
                enc(&room)
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{tags}");
    assert!(tags["tags"]["m.server_notice"].is_object(), "{tags}");
    // ... the room account data m.tag ...
    let (st, data) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.tag",
                enc(&alice.user_id),
                enc(&room)
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{data}");
    assert!(data["tags"]["m.server_notice"].is_object(), "{data}");
    // ... and in the joined room's account data in /sync.
    let body = sync(&server, &alice, "timeout=0").await;
    let joined = &body["rooms"]["join"][&room];
    assert!(joined.is_object(), "{body}");
    let tag = joined["account_data"]["events"]
        .as_array()
        .expect("account_data events")
        .iter()
        .find(|e| e["type"] == "m.tag")
        .unwrap_or_else(|| panic!("m.tag in room account data: {joined}"));
    assert!(
        tag["content"]["tags"]["m.server_notice"].is_object(),
        "{tag}"
    );
    // The notice is in the timeline.
    let events = joined["timeline"]["events"].as_array().expect("timeline");
    assert!(
        events.iter().any(|e| e["event_id"] == ev.as_str()),
        "{joined}"
    );
}

#[tokio::test]
async fn user_cannot_post_in_the_notices_room_but_may_leave() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "read only").await;
    let (room, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &room).await;

    let (st, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                enc(&room)
            ),
            alice.token(),
            text_content("can I reply?"),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    let (st, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)),
            alice.token(),
            json!({"name": "mine now"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");

    // Once joined, leaving is allowed.
    let (st, body) = try_leave(&server, &alice, &room).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(joined_rooms(&server, &alice).await.is_empty());
}

#[tokio::test]
async fn the_whole_content_is_forwarded() {
    // Dendrite keeps only msgtype and body (issue #3643).
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let content = json!({
        "msgtype": "m.notice",
        "body": "Planned *maintenance*",
        "format": "org.matrix.custom.html",
        "formatted_body": "Planned <b>maintenance</b>",
        "org.example.extra": {"window": [10, 12], "severity": "low"}
    });
    let (st, b) = notice(
        &server,
        &admin,
        json!({"user_id": alice.user_id, "content": content}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let ev = b["event_id"].as_str().unwrap().to_owned();
    let (room, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &room).await;
    let got = get_event_ok(&server, &alice, &room, &ev).await;
    assert_eq!(got["type"], "m.room.message", "{got}");
    assert_eq!(got["content"], content, "{got}");
}

#[tokio::test]
async fn type_and_state_key_are_honoured() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    // A custom state event.
    let banner = json!({"text": "Read-only from 10:00", "level": 2});
    let (st, b) = notice(
        &server,
        &admin,
        json!({"user_id": alice.user_id, "type": "org.example.banner", "state_key": "top", "content": banner}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let state_ev = b["event_id"].as_str().unwrap().to_owned();
    // A custom message event type.
    let alert = json!({"body": "disk almost full", "org.example.level": "warn"});
    let (st, b) = notice(
        &server,
        &admin,
        json!({"user_id": alice.user_id, "type": "org.example.alert", "content": alert}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let alert_ev = b["event_id"].as_str().unwrap().to_owned();

    let (room, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &room).await;

    let (st, got) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/org.example.banner/top",
                enc(&room)
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{got}");
    assert_eq!(got, banner);
    let ev = get_event_ok(&server, &alice, &room, &state_ev).await;
    assert_eq!(ev["type"], "org.example.banner", "{ev}");
    assert_eq!(ev["state_key"], "top", "{ev}");
    assert_eq!(ev["sender"], server_user(&server), "{ev}");

    let ev = get_event_ok(&server, &alice, &room, &alert_ev).await;
    assert_eq!(ev["type"], "org.example.alert", "{ev}");
    assert!(ev.get("state_key").is_none(), "not a state event: {ev}");
    assert_eq!(ev["content"], alert, "{ev}");
}

#[tokio::test]
async fn put_with_the_same_txn_id_is_idempotent() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let body = json!({"user_id": alice.user_id, "content": text_content("once")});

    let (st, first) = notice_txn(&server, &admin, "txn-1", body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let (st, again) = notice_txn(&server, &admin, "txn-1", body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(first["event_id"], again["event_id"], "same txn, same event");

    // Another txn id: another event.
    let (st, other) = notice_txn(
        &server,
        &admin,
        "txn-2",
        json!({"user_id": alice.user_id, "content": text_content("twice")}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{other}");
    assert_ne!(first["event_id"], other["event_id"]);

    // The same txn id from another device of the admin is a new request.
    let admin2 = server.login("root", "password123").await;
    let (st, dev2) = notice_txn(
        &server,
        &admin2,
        "txn-1",
        json!({"user_id": alice.user_id, "content": text_content("other device")}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{dev2}");
    assert_ne!(first["event_id"], dev2["event_id"]);

    // POST is not idempotent.
    let a = notice_ok(&server, &admin, &alice.user_id, "posted").await;
    let b = notice_ok(&server, &admin, &alice.user_id, "posted").await;
    assert_ne!(a, b);

    let (room, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &room).await;
    let events = timeline(&server, &alice, &room).await;
    assert_eq!(
        notice_bodies(&events, &server_user(&server)),
        ["once", "twice", "other device", "posted", "posted"],
        "the retried PUT was sent once"
    );
}

#[tokio::test]
async fn second_notice_goes_to_the_same_room() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "first").await;
    let (room, _) = the_invite(&server, &alice).await;
    notice_ok(&server, &admin, &alice.user_id, "second").await;
    let (again, _) = the_invite(&server, &alice).await;
    assert_eq!(again, room, "still one invite, to the same room");

    join(&server, &alice, &room).await;
    notice_ok(&server, &admin, &alice.user_id, "third").await;
    // Joined: no new invite, the same room.
    assert!(invites(&server, &alice).await.is_empty());
    assert_eq!(joined_rooms(&server, &alice).await, vec![room.clone()]);
    let events = timeline(&server, &alice, &room).await;
    assert_eq!(
        notice_bodies(&events, &server_user(&server)),
        ["first", "second", "third"]
    );
}

#[tokio::test]
async fn after_leaving_the_next_notice_reinvites_into_the_same_room() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "first").await;
    let (room, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &room).await;
    leave(&server, &alice, &room).await;
    assert!(invites(&server, &alice).await.is_empty());

    let ev = notice_ok(&server, &admin, &alice.user_id, "come back").await;
    let (again, _) = the_invite(&server, &alice).await;
    assert_eq!(again, room, "re-invited into the same room");
    // The new invite cannot be rejected either.
    assert_error(
        &try_leave(&server, &alice, &room).await,
        403,
        "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
    );
    join(&server, &alice, &room).await;
    let got = get_event_ok(&server, &alice, &room, &ev).await;
    assert_eq!(got["content"]["body"], "come back", "{got}");
}

#[tokio::test]
async fn notices_to_two_users_use_two_rooms() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    notice_ok(&server, &admin, &alice.user_id, "for alice").await;
    notice_ok(&server, &admin, &bob.user_id, "for bob").await;
    let (ra, _) = the_invite(&server, &alice).await;
    let (rb, _) = the_invite(&server, &bob).await;
    assert_ne!(ra, rb);
    join(&server, &bob, &rb).await;
    let events = timeline(&server, &bob, &rb).await;
    assert_eq!(notice_bodies(&events, &server_user(&server)), ["for bob"]);
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn send_notice_errors() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let dave = server.user("dave").await;
    deactivate(&server, &dave, "dave").await;

    // Remote user.
    assert_error(
        &notice(
            &server,
            &admin,
            json!({"user_id": "@bob:remote.example", "content": text_content("x")}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    // Not a user id.
    assert_error(
        &notice(
            &server,
            &admin,
            json!({"user_id": "not-a-user", "content": text_content("x")}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    // Unknown local user.
    assert_error(
        &notice(
            &server,
            &admin,
            json!({"user_id": "@nobody:test.local", "content": text_content("x")}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    // Deactivated user.
    let resp = notice(
        &server,
        &admin,
        json!({"user_id": dave.user_id, "content": text_content("x")}),
    )
    .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);
    assert!(resp.1["errcode"].is_string(), "{}", resp.1);
    // Missing fields.
    assert_error(
        &notice(&server, &admin, json!({"content": text_content("x")})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &notice(&server, &admin, json!({"user_id": alice.user_id})).await,
        400,
        "M_BAD_JSON",
    );
    // Wrong types.
    assert_error(
        &notice(
            &server,
            &admin,
            json!({"user_id": alice.user_id, "content": "just a string"}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    // Not JSON.
    assert_error(
        &server
            .request_raw(Method::POST, SEND, admin.token(), "{not json")
            .await,
        400,
        "M_NOT_JSON",
    );
    // The same through PUT.
    assert_error(
        &notice_txn(&server, &admin, "e1", json!({"content": text_content("x")})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &notice_txn(
            &server,
            &admin,
            "e2",
            json!({"user_id": "@bob:remote.example", "content": text_content("x")}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    // A non-admin.
    assert_error(
        &notice(
            &server,
            &alice,
            json!({"user_id": alice.user_id, "content": text_content("x")}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &notice_txn(
            &server,
            &alice,
            "e3",
            json!({"user_id": alice.user_id, "content": text_content("x")}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // None of it reached alice.
    assert!(invites(&server, &alice).await.is_empty());
}

#[tokio::test]
async fn disabled_server_notices_are_unrecognized() {
    let server = TestServer::start_with(|c| c.server_notices.enabled = false).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let body = json!({"user_id": alice.user_id, "content": text_content("x")});
    assert_error(
        &notice(&server, &admin, body.clone()).await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &notice_txn(&server, &admin, "t", body).await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &server
            .post(
                BROADCAST,
                admin.token(),
                json!({"content": text_content("x")}),
            )
            .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert!(invites(&server, &alice).await.is_empty());
}

// ---------------------------------------------------------------------------
// Broadcast
// ---------------------------------------------------------------------------

#[tokio::test]
async fn broadcast_reaches_every_active_local_user() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    deactivate(&server, &dave, "dave").await;
    // Carol already has a notices room; the broadcast reuses it.
    notice_ok(&server, &admin, &carol.user_id, "personal").await;
    let (carols_room, _) = the_invite(&server, &carol).await;

    let content = json!({
        "msgtype": "m.text",
        "body": "Server restart at 22:00",
        "format": "org.matrix.custom.html",
        "formatted_body": "Server restart at <b>22:00</b>"
    });
    let (st, body) = server
        .post(BROADCAST, admin.token(), json!({"content": content}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // root, alice, bob, carol; not dave (deactivated), not @_server.
    assert_eq!(body["sent"], 4, "{body}");
    assert_eq!(body["failed"], json!([]), "{body}");

    let mut rooms = HashSet::new();
    for who in [&admin, &alice, &bob, &carol] {
        let (room, _) = the_invite(&server, who).await;
        join(&server, who, &room).await;
        let events = timeline(&server, who, &room).await;
        let got = events
            .iter()
            .find(|e| e["content"]["body"] == "Server restart at 22:00")
            .unwrap_or_else(|| panic!("{} got no broadcast: {events:?}", who.user_id));
        assert_eq!(got["sender"], server_user(&server), "{got}");
        assert_eq!(got["content"], content, "{got}");
        rooms.insert(room);
    }
    assert_eq!(rooms.len(), 4, "one room per user");
    assert!(rooms.contains(&carols_room));
    // The deactivated user was not invited anywhere.
    assert_eq!(
        server
            .sql_count(
                "SELECT COUNT(*) FROM current_state WHERE state_key = '@dave:test.local' \
                 AND membership = 'invite'"
            )
            .await,
        0
    );
}

#[tokio::test]
async fn broadcast_honours_the_type_and_validates() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let (st, body) = server
        .post(
            BROADCAST,
            admin.token(),
            json!({"type": "org.example.alert", "content": {"body": "custom"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["sent"], 2, "{body}");
    let (room, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &room).await;
    let events = timeline(&server, &alice, &room).await;
    let got = events
        .iter()
        .find(|e| e["type"] == "org.example.alert")
        .unwrap_or_else(|| panic!("custom type: {events:?}"));
    assert_eq!(got["content"], json!({"body": "custom"}), "{got}");

    // Missing content, or a non-admin.
    assert_error(
        &server.post(BROADCAST, admin.token(), json!({})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .post(
                BROADCAST,
                alice.token(),
                json!({"content": text_content("x")}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
}

// ---------------------------------------------------------------------------
// More ways to reject, restarts, evacuation
// ---------------------------------------------------------------------------

async fn still_invited(server: &TestServer, who: &Session, room: &str) {
    let inv = invites(server, who).await;
    assert!(
        inv.contains_key(room),
        "{} must still be invited to {room}: {inv:?}",
        who.user_id
    );
}

#[tokio::test]
async fn notice_invite_cannot_be_rejected_through_the_r0_path() {
    // The rule is "the user cannot reject the invite", not only "POST /leave
    // answers 403": the r0 alias, kicking oneself or writing one's own member
    // event are rejections too.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "important").await;
    let (room, _) = the_invite(&server, &alice).await;

    // The r0 alias of /leave.
    assert_error(
        &server
            .post(
                &format!("/_matrix/client/r0/rooms/{}/leave", enc(&room)),
                alice.token(),
                json!({}),
            )
            .await,
        403,
        "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
    );
    still_invited(&server, &alice, &room).await;
}

#[tokio::test]
async fn notice_invite_cannot_be_rejected_by_kicking_oneself() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "important").await;
    let (room, _) = the_invite(&server, &alice).await;

    // POST /kick of oneself.
    let (st, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            alice.token(),
            json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "kick self: {body}");
    still_invited(&server, &alice, &room).await;
}

#[tokio::test]
async fn notice_invite_cannot_be_rejected_through_the_state_api() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "important").await;
    let (room, _) = the_invite(&server, &alice).await;

    // PUT of one's own m.room.member with membership leave.
    let (st, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(&alice.user_id)
            ),
            alice.token(),
            json!({"membership": "leave"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "state PUT leave: {body}");
    still_invited(&server, &alice, &room).await;
}

#[tokio::test]
async fn other_invites_can_still_be_rejected() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    notice_ok(&server, &admin, &alice.user_id, "notice").await;
    let (notice_room, _) = the_invite(&server, &alice).await;
    let (st, b) = server
        .post(
            "/_matrix/client/v3/createRoom",
            bob.token(),
            json!({"invite": [alice.user_id]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let bobs = b["room_id"].as_str().unwrap().to_owned();
    let (st, body) = try_leave(&server, &alice, &bobs).await;
    assert_eq!(st, StatusCode::OK, "an ordinary invite: {body}");
    let inv = invites(&server, &alice).await;
    assert_eq!(inv.keys().collect::<Vec<_>>(), [&notice_room], "{inv:?}");
}

#[tokio::test]
async fn put_txn_scope_and_restart() {
    let mut server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let body = json!({"user_id": alice.user_id, "content": text_content("once")});
    let (st, first) = notice_txn(&server, &admin, "shared-txn", body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{first}");

    // The same txn id on a room /send of the same device is another request.
    let (st, b) = server
        .post("/_matrix/client/v3/createRoom", admin.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let room = b["room_id"].as_str().unwrap().to_owned();
    let (st, sent) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/shared-txn",
                enc(&room)
            ),
            admin.token(),
            text_content("in my room"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{sent}");
    assert_ne!(sent["event_id"], first["event_id"]);
    let got = get_event_ok(&server, &admin, &room, sent["event_id"].as_str().unwrap()).await;
    assert_eq!(got["content"]["body"], "in my room", "{got}");

    // A retry after a restart is still the same event.
    server.restart().await;
    let (st, again) = notice_txn(&server, &admin, "shared-txn", body).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["event_id"], first["event_id"]);

    let (nroom, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &nroom).await;
    let events = timeline(&server, &alice, &nroom).await;
    assert_eq!(notice_bodies(&events, &server_user(&server)), ["once"]);
}

#[tokio::test]
async fn notice_after_the_notices_room_was_evacuated_still_arrives() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    notice_ok(&server, &admin, &alice.user_id, "first").await;
    let (room, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &room).await;
    let (st, body) = server
        .post(
            &format!("/_dendrite/admin/evacuateRoom/{}", enc(&room)),
            admin.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let affected: HashSet<&str> = body["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let sender = server_user(&server);
    assert_eq!(
        affected,
        HashSet::from([alice.user_id.as_str(), sender.as_str()]),
        "{body}"
    );

    // The notices user is gone from that room; the next notice still reaches
    // alice (in a room where @_server is joined).
    let ev = notice_ok(&server, &admin, &alice.user_id, "second").await;
    let (room2, _) = the_invite(&server, &alice).await;
    join(&server, &alice, &room2).await;
    let got = get_event_ok(&server, &alice, &room2, &ev).await;
    assert_eq!(got["content"]["body"], "second", "{got}");
    assert_eq!(got["sender"], sender.as_str(), "{got}");
}

#[tokio::test]
async fn broadcast_reports_users_it_could_not_reach() {
    // The notices user bans alice from her notices room (a notice may be any
    // state event); a broadcast then either reaches her some other way or
    // lists her under `failed`, and everyone else still gets it.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    notice_ok(&server, &admin, &alice.user_id, "hello").await;
    let (st, body) = notice(
        &server,
        &admin,
        json!({"user_id": alice.user_id, "type": "m.room.member", "state_key": alice.user_id,
               "content": {"membership": "ban"}}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(invites(&server, &alice).await.is_empty());

    let (st, body) = server
        .post(
            BROADCAST,
            admin.token(),
            json!({"content": text_content("to all")}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let failed: Vec<&str> = body["failed"]
        .as_array()
        .unwrap_or_else(|| panic!("failed is a list: {body}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let sent = body["sent"].as_i64().expect("sent count");
    assert_eq!(sent + failed.len() as i64, 3, "root, alice, bob: {body}");
    assert!(
        failed.is_empty() || failed == [alice.user_id.as_str()],
        "{body}"
    );
    if failed.is_empty() {
        let (room, _) = the_invite(&server, &alice).await;
        join(&server, &alice, &room).await;
        let events = timeline(&server, &alice, &room).await;
        assert!(
            notice_bodies(&events, &server_user(&server)).contains(&"to all".to_owned()),
            "{events:?}"
        );
    }
    for who in [&admin, &bob] {
        let (room, _) = the_invite(&server, who).await;
        join(&server, who, &room).await;
        let events = timeline(&server, who, &room).await;
        assert_eq!(notice_bodies(&events, &server_user(&server)), ["to all"]);
    }
}
