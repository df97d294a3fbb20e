//! `POST /_dendrite/admin/evacuateRoom/{roomID}` and
//! `POST /_dendrite/admin/evacuateUser/{userID}`: Dendrite's
//! TestAdminEvacuateRoom / TestAdminEvacuateUser, with Myelin's fixed errors,
//! and every side effect read back through the client API.
//!
//! The test servers do not federate, so every member is local: `affected`
//! must equal the joined members as `/joined_members` showed them.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn evacuate_room(server: &TestServer, admin: &Session, room: &str) -> (StatusCode, Value) {
    server
        .post(
            &format!("/_dendrite/admin/evacuateRoom/{}", enc(room)),
            admin.token(),
            json!({}),
        )
        .await
}

async fn evacuate_user(server: &TestServer, admin: &Session, user: &str) -> (StatusCode, Value) {
    server
        .post(
            &format!("/_dendrite/admin/evacuateUser/{}", enc(user)),
            admin.token(),
            json!({}),
        )
        .await
}

/// The `affected` list of a 200 answer, as strings.
#[track_caller]
fn affected(resp: &(StatusCode, Value)) -> Vec<String> {
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    resp.1["affected"]
        .as_array()
        .unwrap_or_else(|| panic!("affected is not an array: {}", resp.1))
        .iter()
        .map(|v| v.as_str().expect("affected holds strings").to_owned())
        .collect()
}

/// The membership event of `user` in a list of events (the last one wins).
fn member_event<'a>(events: &'a Value, user: &str) -> Option<&'a Value> {
    events
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
}

/// Asserts that an incremental sync since `since` lists `room` under
/// rooms.leave, with the user's own leave event `{"membership":"leave"}`.
async fn assert_left_in_sync(server: &TestServer, who: &Session, since: &str, room: &str) {
    let body = sync(server, who, &format!("since={}&timeout=0", enc(since))).await;
    let left = &body["rooms"]["leave"][room];
    assert!(
        left.is_object(),
        "{} should see {room} in rooms.leave: {body}",
        who.user_id
    );
    assert!(
        body["rooms"]["join"][room].is_null(),
        "{} still sees {room} as joined: {body}",
        who.user_id
    );
    let ev = member_event(&left["timeline"]["events"], &who.user_id)
        .or_else(|| member_event(&left["state"]["events"], &who.user_id))
        .unwrap_or_else(|| panic!("no leave event for {} in {left}", who.user_id));
    assert_eq!(ev["content"]["membership"], "leave", "{ev}");
    // A self-leave, not a kick.
    assert_eq!(ev["sender"], who.user_id.as_str(), "{ev}");
}

// ---------------------------------------------------------------------------
// evacuateRoom
// ---------------------------------------------------------------------------

#[tokio::test]
async fn evacuate_room_makes_every_joined_member_leave() {
    // TestAdminEvacuateRoom: a room with the admin and bob joined.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &admin, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &bob, &room, "hello").await;

    // No federation: the joined members are the local members.
    let before = joined_members(&server, &admin, &room).await;
    assert_eq!(set(&before), set([&admin.user_id, &bob.user_id]));
    let admin_since = sync_token(&server, &admin).await;
    let bob_since = sync_token(&server, &bob).await;

    let resp = evacuate_room(&server, &admin, &room).await;
    let got = affected(&resp);
    assert_eq!(got.len(), 2, "each member once: {}", resp.1);
    assert_eq!(set(&got), set(&before), "{}", resp.1);

    // Read back: neither lists the room any more...
    assert!(!joined_rooms(&server, &admin).await.contains(&room));
    assert!(!joined_rooms(&server, &bob).await.contains(&room));
    // ... both see it under rooms.leave, with their own leave.
    assert_left_in_sync(&server, &admin, &admin_since, &room).await;
    assert_left_in_sync(&server, &bob, &bob_since, &room).await;
    // ... and can no longer post.
    let (st, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/after-evac",
                enc(&room)
            ),
            bob.token(),
            json!({"msgtype": "m.text", "body": "still here?"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");

    // Nobody is left behind: whoever comes back is alone in the room.
    join(&server, &bob, &room).await;
    assert_eq!(
        set(joined_members(&server, &bob, &room).await),
        set([&bob.user_id])
    );
}

#[tokio::test]
async fn evacuate_room_leave_events_are_plain_self_leaves() {
    // Dendrite copies the old member content (displayname, avatar) into the
    // leave; the contract is a plain {"membership":"leave"} sent by the user.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    set_displayname(&server, &bob, "Bobby").await;
    let room = create_room(&server, &admin, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;

    let got = affected(&evacuate_room(&server, &admin, &room).await);
    assert_eq!(set(&got), set([&admin.user_id, &bob.user_id]));

    // Bob comes back and reads the room's history: one leave per member.
    join(&server, &bob, &room).await;
    let body = messages_ok(&server, &bob, &room, "dir=b&limit=50").await;
    let leaves: Vec<&Value> = body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave")
        .collect();
    assert_eq!(leaves.len(), 2, "{body}");
    for ev in leaves {
        assert_eq!(ev["sender"], ev["state_key"], "a self-leave: {ev}");
        assert_eq!(
            ev["content"],
            json!({"membership": "leave"}),
            "plain leave content: {ev}"
        );
    }
}

#[tokio::test]
async fn evacuate_room_leaves_invites_alone() {
    // Only joined members are evacuated; a pending invite stays.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    invite(&server, &alice, &room, &bob.user_id).await;

    let got = affected(&evacuate_room(&server, &admin, &room).await);
    assert_eq!(got, vec![alice.user_id.clone()]);

    let body = sync(&server, &bob, "timeout=0").await;
    assert!(
        body["rooms"]["invite"][&room].is_object(),
        "bob's invite survives: {body}"
    );
    assert!(!joined_rooms(&server, &alice).await.contains(&room));
}

#[tokio::test]
async fn evacuate_room_without_joined_members_is_empty_list() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    leave(&server, &alice, &room).await;

    let resp = evacuate_room(&server, &admin, &room).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(resp.1["affected"], json!([]), "never null: {}", resp.1);

    // Evacuating twice: the second time nobody is left.
    let room2 = create_room(&server, &alice, json!({})).await;
    assert_eq!(
        affected(&evacuate_room(&server, &admin, &room2).await),
        vec![alice.user_id.clone()]
    );
    let resp = evacuate_room(&server, &admin, &room2).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(resp.1["affected"], json!([]), "{}", resp.1);
}

#[tokio::test]
async fn evacuate_room_touches_only_that_room() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let target = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let other = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &target).await;
    join(&server, &bob, &other).await;

    let got = affected(&evacuate_room(&server, &admin, &target).await);
    assert_eq!(set(&got), set([&alice.user_id, &bob.user_id]));
    assert_eq!(set(joined_rooms(&server, &alice).await), set([&other]));
    assert_eq!(set(joined_rooms(&server, &bob).await), set([&other]));
    assert_eq!(
        set(joined_members(&server, &alice, &other).await),
        set([&alice.user_id, &bob.user_id])
    );
    send_text(&server, &bob, &other, "life goes on").await;
}

#[tokio::test]
async fn evacuate_unknown_room_is_404() {
    // Dendrite: `!doesnotexist:localhost` -> 404, no `affected`.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    for room in ["!doesnotexist:localhost", "!doesnotexist:test.local"] {
        let resp = evacuate_room(&server, &admin, room).await;
        assert_error(&resp, 404, "M_NOT_FOUND");
        assert!(resp.1.get("affected").is_none(), "{}", resp.1);
    }
}

#[tokio::test]
async fn evacuate_malformed_room_id_is_400() {
    // Dendrite answers 404 for a malformed id; the contract says 400.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    for room in ["@x:y", "notaroom", "#alias:test.local"] {
        assert_error(
            &evacuate_room(&server, &admin, room).await,
            400,
            "M_INVALID_PARAM",
        );
    }
}

// ---------------------------------------------------------------------------
// evacuateUser
// ---------------------------------------------------------------------------

#[tokio::test]
async fn evacuate_user_leaves_every_joined_room() {
    // TestAdminEvacuateUser: bob joined to room1 and room2.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room1 = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let room2 = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room1).await;
    join(&server, &bob, &room2).await;
    let since = sync_token(&server, &bob).await;

    let got = affected(&evacuate_user(&server, &admin, &bob.user_id).await);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(set(&got), set([&room1, &room2]));

    assert!(joined_rooms(&server, &bob).await.is_empty());
    for room in [&room1, &room2] {
        // Alice stays; bob is gone.
        assert_eq!(
            set(joined_members(&server, &alice, room).await),
            set([&alice.user_id])
        );
        assert_left_in_sync(&server, &bob, &since, room).await;
    }
    // The rooms go on without him.
    send_text(&server, &alice, &room1, "bye bob").await;
    // Bob's account still works.
    let (st, body) = server
        .get("/_matrix/client/v3/account/whoami", bob.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn evacuate_user_rejects_invites_too() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let joined = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &joined).await;
    let invited = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    invite(&server, &alice, &invited, &bob.user_id).await;
    let body = sync(&server, &bob, "timeout=0").await;
    assert!(body["rooms"]["invite"][&invited].is_object(), "{body}");
    let since = body["next_batch"].as_str().unwrap().to_owned();

    let got = affected(&evacuate_user(&server, &admin, &bob.user_id).await);
    assert_eq!(set(&got), set([&joined, &invited]));

    // The invite is gone (rejected), both rooms are left.
    let body = sync(&server, &bob, "timeout=0").await;
    assert!(body["rooms"]["invite"][&invited].is_null(), "{body}");
    assert_left_in_sync(&server, &bob, &since, &invited).await;
    assert_left_in_sync(&server, &bob, &since, &joined).await;
    // Alice sees bob's membership as leave.
    let (st, member) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&invited),
                enc(&bob.user_id)
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{member}");
    assert_eq!(member["membership"], "leave", "{member}");
}

#[tokio::test]
async fn evacuate_user_rejects_a_server_notice_invite() {
    // The user may not reject a server-notice invite; an admin evacuating
    // the user does (Dendrite aborts with 400 there).
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let (st, body) = server
        .post(
            "/_synapse/admin/v1/send_server_notice",
            admin.token(),
            json!({"user_id": bob.user_id, "content": {"msgtype": "m.text", "body": "hi"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let body = sync(&server, &bob, "timeout=0").await;
    let invites = body["rooms"]["invite"].as_object().expect("invites");
    assert_eq!(invites.len(), 1, "one notice invite: {body}");
    let notice_room = invites.keys().next().unwrap().clone();
    let since = body["next_batch"].as_str().unwrap().to_owned();

    let got = affected(&evacuate_user(&server, &admin, &bob.user_id).await);
    assert_eq!(set(&got), set([&room, &notice_room]));

    let body = sync(&server, &bob, "timeout=0").await;
    assert!(
        body["rooms"]["invite"].as_object().unwrap().is_empty(),
        "no invite left: {body}"
    );
    assert_left_in_sync(&server, &bob, &since, &notice_room).await;
    assert!(joined_rooms(&server, &bob).await.is_empty());
}

#[tokio::test]
async fn evacuate_user_without_rooms_is_empty_list() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    let resp = evacuate_user(&server, &admin, &bob.user_id).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(resp.1["affected"], json!([]), "never null: {}", resp.1);

    // A room bob already left does not count again.
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    leave(&server, &bob, &room).await;
    let resp = evacuate_user(&server, &admin, &bob.user_id).await;
    assert_eq!(resp.1["affected"], json!([]), "{}", resp.1);
}

#[tokio::test]
async fn evacuate_user_twice_second_is_empty() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    assert_eq!(
        affected(&evacuate_user(&server, &admin, &alice.user_id).await),
        vec![room]
    );
    let resp = evacuate_user(&server, &admin, &alice.user_id).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(resp.1["affected"], json!([]), "{}", resp.1);
}

#[tokio::test]
async fn evacuate_user_invalid_or_remote_is_400() {
    // Dendrite: `!notauserid:test` and `@doesnotexist:localhost` -> 400 with
    // a {"message"} body; the contract gives M_INVALID_PARAM.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    for user in [
        "!notauserid:test.local",
        "notauser",
        "@doesnotexist:localhost",
        "@someone:remote.example",
    ] {
        let resp = evacuate_user(&server, &admin, user).await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
        assert!(resp.1.get("affected").is_none(), "{user}: {}", resp.1);
    }
}

#[tokio::test]
async fn evacuate_unknown_local_user_is_404() {
    // Dendrite answers 200 {"affected":[]}; the contract: 404.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    assert_error(
        &evacuate_user(&server, &admin, "@doesnotexist:test.local").await,
        404,
        "M_NOT_FOUND",
    );
}

/// Long-polls from `since` until `room` shows up under rooms.leave; the
/// first request is already waiting when `action` runs. Fails if that takes
/// anywhere near the 20 s sync timeout (a sync that was never woken).
async fn wait_for_leave<F: std::future::Future<Output = (StatusCode, Value)>>(
    server: &TestServer,
    who: &Session,
    room: &str,
    action: F,
) -> (StatusCode, Value) {
    let since = sync_token(server, who).await;
    let started = std::time::Instant::now();
    let path = |since: &str| format!("/_matrix/client/v3/sync?since={}&timeout=20000", enc(since));
    let first = path(&since);
    let ((st, mut body), resp) = tokio::join!(server.get(&first, who.token()), async {
        server.wait_for_parked_syncs(1).await;
        action.await
    });
    assert_eq!(st, StatusCode::OK, "{body}");
    // The sync wakes at the first new event, which may be another member's
    // leave; follow next_batch until our own leave arrives.
    while !body["rooms"]["leave"][room].is_object() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "no leave for {room} after {:?}: {body}",
            started.elapsed()
        );
        let next = body["next_batch"].as_str().expect("next_batch").to_owned();
        let (st, b) = server.get(&path(&next), who.token()).await;
        assert_eq!(st, StatusCode::OK, "{b}");
        body = b;
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the sync waited out its timeout"
    );
    resp
}

#[tokio::test]
async fn evacuation_wakes_a_waiting_sync() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room1 = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let room2 = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room1).await;
    join(&server, &bob, &room2).await;

    // evacuateRoom: bob's waiting sync returns and room1 is left.
    let resp = wait_for_leave(
        &server,
        &bob,
        &room1,
        evacuate_room(&server, &admin, &room1),
    )
    .await;
    assert_eq!(set(affected(&resp)), set([&alice.user_id, &bob.user_id]));

    // evacuateUser: the same for room2.
    let resp = wait_for_leave(
        &server,
        &bob,
        &room2,
        evacuate_user(&server, &admin, &bob.user_id),
    )
    .await;
    assert_eq!(affected(&resp), vec![room2.clone()]);
}
