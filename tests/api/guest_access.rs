//! Guest accounts in rooms (spec "Guest Access", sytest 30rooms/13guestaccess.pl
//! and the guest half of 30history-visibility.pl): joining only rooms whose
//! `m.room.guest_access` is `can_join`, sending, reading, leaving, removal
//! when guest access is revoked, display names, upgrade to a full account,
//! no presence, and the endpoints that stay closed to guests.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const REGISTER: &str = "/_matrix/client/v3/register";

async fn guest_server() -> TestServer {
    TestServer::start_with(|c| c.registration.allow_guests = true).await
}

/// A public room of `owner`'s, with `m.room.guest_access` set to `access`.
async fn public_room(server: &TestServer, owner: &Session, access: &str) -> String {
    let room = create_room(server, owner, json!({"preset": "public_chat"})).await;
    set_guest_access(server, owner, &room, access).await;
    room
}

async fn set_guest_access(server: &TestServer, owner: &Session, room: &str, access: &str) {
    set_state(
        server,
        owner,
        room,
        "m.room.guest_access",
        "",
        json!({"guest_access": access}),
    )
    .await;
}

/// The member event of `user` in force, as `who` reads it.
async fn member(server: &TestServer, who: &Session, room: &str, user: &str) -> Value {
    current_state_content(server, who, room, "m.room.member", user).await
}

#[tokio::test]
async fn guests_join_only_rooms_that_admit_them() {
    let server = guest_server().await;
    let alice = server.user("alice").await;
    let guest = server.guest().await;

    // A public room without m.room.guest_access (forbidden by default).
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "hall"}),
    )
    .await;
    assert_error(&try_join(&server, &guest, &room).await, 403, "M_FORBIDDEN");
    set_guest_access(&server, &alice, &room, "forbidden").await;
    assert_error(&try_join(&server, &guest, &room).await, 403, "M_FORBIDDEN");
    // Nothing was written for the refused joins.
    let (st, _) = server
        .get(
            &room_path(
                &room,
                &format!("/state/m.room.member/{}", enc(&guest.user_id)),
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    set_guest_access(&server, &alice, &room, "can_join").await;
    join(&server, &guest, &room).await;
    let content = member(&server, &alice, &room, &guest.user_id).await;
    assert_eq!(content["membership"], "join", "{content}");
    assert_eq!(content["kind"], "guest", "{content}");

    // By alias too; the guest's /sync shows the room joined.
    let alias = enc(&format!("#hall:{}", "test.local"));
    let (st, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{alias}"),
            guest.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room);
    let body = sync(&server, &guest, "timeout=0").await;
    joined_room(&body, &room);

    // An invite does not open a room that does not admit guests.
    let closed = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    invite(&server, &alice, &closed, &guest.user_id).await;
    assert_error(
        &try_join(&server, &guest, &closed).await,
        403,
        "M_FORBIDDEN",
    );
    // A guest cannot get round the rule with a member state event.
    let (st, body) = server
        .put(
            &room_path(
                &closed,
                &format!("/state/m.room.member/{}", enc(&guest.user_id)),
            ),
            guest.token(),
            json!({"membership": "join"}),
        )
        .await;
    assert_error(&(st, body), 403, "M_FORBIDDEN");
    assert_eq!(
        member(&server, &alice, &closed, &guest.user_id).await["membership"],
        "invite"
    );
}

#[tokio::test]
async fn joined_guests_send_read_and_leave() {
    let server = guest_server().await;
    let alice = server.user("alice").await;
    let guest = server.guest().await;
    let room = public_room(&server, &alice, "can_join").await;

    // Not joined: no sending.
    let r = try_send_text(&server, &guest, &room, "t0", "too early").await;
    assert_error(&r, 403, "M_FORBIDDEN");

    join(&server, &guest, &room).await;
    let sent = send_text(&server, &guest, &room, "sup").await;
    let (st, body) = server
        .get(&room_path(&room, "/messages?dir=b&limit=1"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let event = &body["chunk"][0];
    assert_eq!(event["event_id"], sent, "{body}");
    assert_eq!(event["sender"], guest.user_id);
    assert_eq!(event["content"]["body"], "sup");
    // Any event type since spec v1.2, and state events (under the power
    // levels, like anyone's).
    send_event(&server, &guest, &room, "org.example.ping", json!({"n": 1})).await;
    let note = room_path(&room, "/state/org.example.note/");
    let r = server.put(&note, guest.token(), json!({"a": 1})).await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let mut levels = current_state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    levels["users"][guest.user_id.as_str()] = json!(50);
    set_state(&server, &alice, &room, "m.room.power_levels", "", levels).await;
    set_state(
        &server,
        &guest,
        &room,
        "org.example.note",
        "",
        json!({"a": 1}),
    )
    .await;

    // The guest reads the room: messages, state, members, context.
    let (st, body) = server
        .get(&room_path(&room, "/messages?dir=b&limit=10"), guest.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(event_ids(&body["chunk"]).contains(&sent), "{body}");
    for path in [
        "/state".to_owned(),
        "/members".to_owned(),
        format!("/context/{}", enc(&sent)),
        format!("/event/{}", enc(&sent)),
    ] {
        let (st, body) = server.get(&room_path(&room, &path), guest.token()).await;
        assert_eq!(st, StatusCode::OK, "{path}: {body}");
    }

    // Typing, receipts and read markers.
    let (st, body) = server
        .put(
            &room_path(&room, &format!("/typing/{}", enc(&guest.user_id))),
            guest.token(),
            json!({"typing": true, "timeout": 10000}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "typing: {body}");
    let (st, body) = server
        .post(
            &room_path(&room, &format!("/receipt/m.read/{}", enc(&sent))),
            guest.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "receipt: {body}");
    let (st, body) = server
        .post(
            &room_path(&room, "/read_markers"),
            guest.token(),
            json!({"m.fully_read": sent}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "read_markers: {body}");

    // What stays closed: creating rooms, inviting, kicking, banning,
    // another user's member event.
    let bob = server.user("bob").await;
    let posts = [
        ("/_matrix/client/v3/createRoom".to_owned(), json!({})),
        (room_path(&room, "/invite"), json!({"user_id": bob.user_id})),
        (room_path(&room, "/kick"), json!({"user_id": alice.user_id})),
        (room_path(&room, "/ban"), json!({"user_id": alice.user_id})),
    ];
    for (path, body) in posts {
        let r = server.post(&path, guest.token(), body).await;
        assert_error_for(&path, &r, 403, "M_GUEST_ACCESS_FORBIDDEN");
    }
    let others_member = room_path(
        &room,
        &format!("/state/m.room.member/{}", enc(&bob.user_id)),
    );
    let r = server
        .put(
            &others_member,
            guest.token(),
            json!({"membership": "invite"}),
        )
        .await;
    assert_error(&r, 403, "M_GUEST_ACCESS_FORBIDDEN");
    assert_eq!(joined_members(&server, &alice, &room).await.len(), 2);

    // Leaving; the world-readable room's state stays readable after.
    set_history_visibility(&server, &alice, &room, "world_readable").await;
    leave(&server, &guest, &room).await;
    assert_eq!(
        member(&server, &guest, &room, &alice.user_id).await["membership"],
        "join"
    );
}

#[tokio::test]
async fn revoking_guest_access_removes_joined_guests() {
    let server = guest_server().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let guest = server.guest().await;
    let other_guest = server.guest().await;
    let room = public_room(&server, &alice, "can_join").await;
    join(&server, &guest, &room).await;
    join(&server, &other_guest, &room).await;
    join(&server, &bob, &room).await;
    leave(&server, &other_guest, &room).await;
    // A profile change rewrites the member event; it still says guest.
    set_displayname(&server, &guest, "visitor").await;
    let content = member(&server, &alice, &room, &guest.user_id).await;
    assert_eq!(content["displayname"], "visitor", "{content}");
    assert_eq!(content["kind"], "guest", "{content}");

    // Anything but can_join revokes it (here an unknown value).
    set_guest_access(&server, &alice, &room, "nobody").await;
    let content = member(&server, &alice, &room, &guest.user_id).await;
    assert_eq!(content["membership"], "leave", "{content}");
    // The guest's own leave event.
    let (st, body) = server.get(&room_path(&room, "/state"), alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let leave_event = find_state(&body, "m.room.member", &guest.user_id)
        .unwrap_or_else(|| panic!("no member event: {body}"));
    assert_eq!(leave_event["sender"], guest.user_id, "{leave_event}");
    // Full members stay; the guest who had left is not touched.
    assert_eq!(
        member(&server, &alice, &room, &bob.user_id).await["membership"],
        "join"
    );
    assert_eq!(
        member(&server, &alice, &room, &other_guest.user_id).await["membership"],
        "leave"
    );
    let r = try_send_text(&server, &guest, &room, "t1", "still here?").await;
    assert_error(&r, 403, "M_FORBIDDEN");
    assert_error(&try_join(&server, &guest, &room).await, 403, "M_FORBIDDEN");

    // Admitted again, the guest may come back.
    set_guest_access(&server, &alice, &room, "can_join").await;
    join(&server, &guest, &room).await;
}

#[tokio::test]
async fn guest_display_name_reaches_the_room() {
    let server = guest_server().await;
    let alice = server.user("alice").await;
    let guest = server.guest().await;
    let room = public_room(&server, &alice, "can_join").await;
    join(&server, &guest, &room).await;

    let path = format!(
        "/_matrix/client/v3/profile/{}/displayname",
        enc(&guest.user_id)
    );
    let (st, body) = server.get(&path, guest.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server
        .put(&path, guest.token(), json!({"displayname": "creeper"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server.get(&path, guest.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "creeper");
    let content = member(&server, &guest, &room, &guest.user_id).await;
    assert_eq!(content["displayname"], "creeper", "{content}");
}

#[tokio::test]
async fn guest_upgrades_to_a_full_account_keeping_its_id() {
    let server = guest_server().await;
    let alice = server.user("alice").await;
    let guest = server.guest().await;
    let other_guest = server.guest().await;
    let localpart = guest.user_id[1..].split(':').next().unwrap().to_owned();
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let body = |token: &str, auth: Option<Value>| {
        let mut b = json!({
            "username": localpart,
            "password": "SIR_Arthur_David",
            "guest_access_token": token,
        });
        if let Some(auth) = auth {
            b["auth"] = auth;
        }
        b
    };

    // Another guest's token, an unknown token: 403, nothing changes.
    let r = server
        .post(REGISTER, None, body(&other_guest.access_token, None))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let r = server.post(REGISTER, None, body("not-a-token", None)).await;
    assert_error(&r, 403, "M_FORBIDDEN");
    // A full user's token names no guest either.
    let r = server
        .post(REGISTER, None, body(&alice.access_token, None))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    // Without a guest token the name is taken.
    let r = server
        .post(
            REGISTER,
            None,
            json!({"username": localpart, "password": "SIR_Arthur_David"}),
        )
        .await;
    assert_error(&r, 400, "M_USER_IN_USE");

    // The first request is the UIA challenge; a dummy stage completes it.
    let (st, challenge) = server
        .post(REGISTER, None, body(&guest.access_token, None))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{challenge}");
    assert!(challenge["flows"].is_array(), "{challenge}");
    let (st, answer) = server
        .post(
            REGISTER,
            None,
            body(&guest.access_token, Some(json!({"type": "m.login.dummy"}))),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{answer}");
    let upgraded = Session::from_answer(&answer);
    assert_eq!(upgraded.user_id, guest.user_id);

    let (st, who) = server.whoami(upgraded.token()).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_ne!(who["is_guest"], true, "{who}");
    // Now a full user: it joins a room that does not admit guests, creates
    // rooms, and logs in with its password.
    join(&server, &upgraded, &room).await;
    create_room(&server, &upgraded, json!({})).await;
    server.login(&localpart, "SIR_Arthur_David").await;
    // The old guest token is no longer a guest's: it cannot upgrade again.
    let r = server
        .post(
            REGISTER,
            None,
            body(&guest.access_token, Some(json!({"type": "m.login.dummy"}))),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn guests_have_no_presence() {
    let server = guest_server().await;
    let alice = server.user("alice").await;
    let guest = server.guest().await;
    let room = public_room(&server, &alice, "can_join").await;
    join(&server, &guest, &room).await;

    // Syncing does not mark a guest online.
    sync(&server, &guest, "timeout=0&set_presence=online").await;
    let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&guest.user_id));
    let (st, body) = server.get(&presence, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["presence"], "offline", "{body}");
    // Nor may a guest set or read presence (as Synapse).
    let r = server
        .put(&presence, guest.token(), json!({"presence": "online"}))
        .await;
    assert_error(&r, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let r = server.get(&presence, guest.token()).await;
    assert_error(&r, 403, "M_GUEST_ACCESS_FORBIDDEN");
}

/// sytest "m.room.history_visibility == ... allows/forbids appropriately for
/// Guest users": after joining, a guest sees what any member would.
#[tokio::test]
async fn joined_guests_see_history_as_members_do() {
    let server = guest_server().await;
    let alice = server.user("alice").await;
    for (visibility, sees_before_invite) in [("shared", true), ("joined", false)] {
        let guest = server.guest().await;
        let room = public_room(&server, &alice, "can_join").await;
        set_history_visibility(&server, &alice, &room, visibility).await;
        let before = send_text(&server, &alice, &room, "Before join").await;
        // Not joined: nothing to read.
        let (st, body) = server
            .get(&room_path(&room, "/messages?dir=b&limit=10"), guest.token())
            .await;
        assert!(
            st == StatusCode::FORBIDDEN || body["chunk"] == json!([]),
            "{visibility}: {st} {body}"
        );
        join(&server, &guest, &room).await;
        let (st, body) = server
            .get(&room_path(&room, "/messages?dir=b&limit=10"), guest.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(
            event_ids(&body["chunk"]).contains(&before),
            sees_before_invite,
            "{visibility}: {body}"
        );
    }
}
