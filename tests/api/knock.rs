//! Knocking: `POST /knock/{roomIdOrAlias}` on `knock` and `knock_restricted`
//! rooms, the knock in `/sync` (`rooms.knock`) and in the room's timeline,
//! accept (invite), reject (kick), rescind (leave), joins through a
//! restricted allow list, `/publicRooms`, and each error.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

async fn try_knock(
    server: &TestServer,
    who: &Session,
    room: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(room)),
            who.token(),
            body,
        )
        .await
}

async fn knock(server: &TestServer, who: &Session, room: &str) {
    let (st, b) = try_knock(server, who, room, json!({})).await;
    assert_eq!(st, StatusCode::OK, "knock {} on {room}: {b}", who.user_id);
    assert_eq!(b["room_id"], room, "{b}");
}

/// A room of `version` with the join rule `rule` (no allow list).
async fn room_with_rule(server: &TestServer, who: &Session, version: &str, rule: &str) -> String {
    room_with_join_rules(server, who, version, json!({"join_rule": rule})).await
}

/// A room whose `rule` (`restricted` or `knock_restricted`) allows the
/// members of `allowed`.
async fn restricted_room(server: &TestServer, who: &Session, rule: &str, allowed: &str) -> String {
    let allow = json!([{"type": "m.room_membership", "room_id": allowed}]);
    room_with_join_rules(
        server,
        who,
        "10",
        json!({"join_rule": rule, "allow": allow}),
    )
    .await
}

async fn membership_of(server: &TestServer, who: &Session, room: &str, user: &str) -> Value {
    current_state_content(server, who, room, "m.room.member", user).await["membership"].clone()
}

#[tokio::test]
async fn knock_accept_flow_through_sync_and_timeline() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    set_displayname(&server, &bob, "Bob").await;
    let room = room_with_rule(&server, &alice, "10", "knock").await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "Knock here"}),
    )
    .await;
    let since = sync_token(&server, &bob).await;

    let (st, b) = try_knock(&server, &bob, &room, json!({"reason": "let me in"})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["room_id"], room.as_str());

    // The knocker's sync: rooms.knock with the room's public face and the knock.
    let body = sync_since(&server, &bob, &since).await;
    let knocked = &body["rooms"]["knock"][room.as_str()];
    let events = &knocked["knock_state"]["events"];
    assert_eq!(
        event_of_type(events, "m.room.join_rules").expect("join rules")["content"]["join_rule"],
        "knock",
        "{body}"
    );
    assert_eq!(
        event_of_type(events, "m.room.name").expect("name")["content"]["name"],
        "Knock here"
    );
    let member = event_of_type(events, "m.room.member").expect("the knock");
    assert_eq!(member["state_key"], bob.user_id.as_str());
    assert_eq!(member["content"]["membership"], "knock");
    assert_eq!(member["content"]["reason"], "let me in");
    assert_eq!(member["content"]["displayname"], "Bob");
    assert!(member["origin_server_ts"].is_u64(), "{member}");
    assert!(member["event_id"].is_string(), "{member}");
    assert!(body["rooms"]["join"].get(room.as_str()).is_none());
    // An initial sync shows it too; the next incremental one does not repeat it.
    let initial = sync(&server, &bob, "timeout=0").await;
    assert!(
        initial["rooms"]["knock"].get(room.as_str()).is_some(),
        "{initial}"
    );
    let again = sync_since(&server, &bob, &next_batch(&body)).await;
    assert!(
        again["rooms"]["knock"].get(room.as_str()).is_none(),
        "{again}"
    );

    // The room's members see the knock in their timeline.
    let seen = timeline(&server, &alice, &room).await;
    let knock_event = seen
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .expect("the knock in alice's timeline");
    assert_eq!(knock_event["content"]["membership"], "knock");
    assert_eq!(knock_event["content"]["reason"], "let me in");

    // Knocking again changes nothing.
    knock(&server, &bob, &room).await;
    // A knocker cannot just join.
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");

    // Accepting is an invite; then the knocker joins.
    let since = next_batch(&again);
    invite(&server, &alice, &room, &bob.user_id).await;
    let body = sync_since(&server, &bob, &since).await;
    assert!(
        body["rooms"]["invite"].get(room.as_str()).is_some(),
        "{body}"
    );
    join(&server, &bob, &room).await;
    assert_eq!(
        membership_of(&server, &alice, &room, &bob.user_id).await,
        "join"
    );
    // Joined: knocking is refused.
    assert_error(
        &try_knock(&server, &bob, &room, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn knock_rejected_by_kick_and_rescinded_by_leave() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = room_with_rule(&server, &alice, "7", "knock").await;

    // Rejection: a kick. The knocker's sync then shows the room as left.
    knock(&server, &bob, &room).await;
    let since = sync_token(&server, &bob).await;
    let path = room_path(&room, "/kick");
    let (st, b) = server
        .post(
            &path,
            alice.token(),
            json!({"user_id": bob.user_id, "reason": "no"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        membership_of(&server, &alice, &room, &bob.user_id).await,
        "leave"
    );
    let body = sync_since(&server, &bob, &since).await;
    assert!(
        body["rooms"]["leave"].get(room.as_str()).is_some(),
        "{body}"
    );
    assert!(
        body["rooms"]["knock"].get(room.as_str()).is_none(),
        "{body}"
    );
    // After a rejection one may knock again.
    knock(&server, &bob, &room).await;

    // Rescinding: the knocker leaves.
    knock(&server, &carol, &room).await;
    leave(&server, &carol, &room).await;
    assert_eq!(
        membership_of(&server, &alice, &room, &carol.user_id).await,
        "leave"
    );
    // After rescinding, an invite still lets the user in.
    invite(&server, &alice, &room, &carol.user_id).await;
    join(&server, &carol, &room).await;
}

#[tokio::test]
async fn knock_errors() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    // Join rules that are not knock: public, invite.
    let public = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    assert_error(
        &try_knock(&server, &bob, &public, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    let private = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    assert_error(
        &try_knock(&server, &bob, &private, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    // A room version before knocking (6) with a knock join rule.
    let v6 = room_with_rule(&server, &alice, "6", "knock").await;
    assert_error(
        &try_knock(&server, &bob, &v6, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    // knock_restricted needs version 10.
    let v9 = room_with_rule(&server, &alice, "9", "knock_restricted").await;
    assert_error(
        &try_knock(&server, &bob, &v9, json!({})).await,
        403,
        "M_FORBIDDEN",
    );

    let room = room_with_rule(&server, &alice, "10", "knock").await;
    // The creator is joined.
    assert_error(
        &try_knock(&server, &alice, &room, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    // Banned.
    let (st, b) = server
        .post(
            &room_path(&room, "/ban"),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_error(
        &try_knock(&server, &bob, &room, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership_of(&server, &alice, &room, &bob.user_id).await,
        "ban"
    );
    // Invited.
    let carol = server.user("carol").await;
    invite(&server, &alice, &room, &carol.user_id).await;
    assert_error(
        &try_knock(&server, &carol, &room, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership_of(&server, &alice, &room, &carol.user_id).await,
        "invite"
    );

    // Unknown room and alias.
    let unknown = format!("!nowhere:{}", server.server_name);
    assert_error(
        &try_knock(&server, &bob, &unknown, json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    let alias = format!("#nothing:{}", server.server_name);
    assert_error(
        &try_knock(&server, &bob, &alias, json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    // Guests may not knock.
    let guest = server.guest().await;
    assert_error(
        &try_knock(&server, &guest, &room, json!({})).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    // No access token.
    let (st, _) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            None,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn knock_by_alias_and_public_rooms_shows_the_rule() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "room_version": "10",
            "visibility": "public",
            "preset": "private_chat",
            "room_alias_name": "knocky",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": {"join_rule": "knock"}
            }],
        }),
    )
    .await;
    let alias = format!("#knocky:{}", server.server_name);
    let (st, b) = try_knock(&server, &bob, &alias, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["room_id"], room.as_str());
    assert_eq!(
        membership_of(&server, &alice, &room, &bob.user_id).await,
        "knock"
    );

    let (st, body) = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let chunk = body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .find(|c| c["room_id"] == room.as_str())
        .expect("the room listed");
    assert_eq!(chunk["join_rule"], "knock");
}

#[tokio::test]
async fn knock_restricted_joins_through_the_allow_list_or_knocks() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let space = create_space(&server, &alice, "public_chat").await;
    join(&server, &bob, &space).await;
    let room = restricted_room(&server, &alice, "knock_restricted", &space).await;

    // A member of the allowed space joins without an invite; the join names
    // a local member who may invite.
    join(&server, &bob, &room).await;
    let member = current_state_content(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "join");
    assert_eq!(
        member["join_authorised_via_users_server"],
        alice.user_id.as_str()
    );

    // Anyone else may not join, but may knock, and be let in.
    assert_error(&try_join(&server, &carol, &room).await, 403, "M_FORBIDDEN");
    knock(&server, &carol, &room).await;
    invite(&server, &alice, &room, &carol.user_id).await;
    join(&server, &carol, &room).await;
    // An invited join names no voucher.
    let member =
        current_state_content(&server, &alice, &room, "m.room.member", &carol.user_id).await;
    assert!(
        member.get("join_authorised_via_users_server").is_none(),
        "{member}"
    );
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_allowed_rooms_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let space = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &space).await;
    let room = restricted_room(&server, &alice, "restricted", &space).await;

    join(&server, &bob, &room).await;
    assert_error(&try_join(&server, &carol, &room).await, 403, "M_FORBIDDEN");
    // restricted is not knockable.
    assert_error(
        &try_knock(&server, &carol, &room, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    // Leaving the allowed room takes the right away.
    leave(&server, &bob, &room).await;
    leave(&server, &bob, &space).await;
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");

    // Nobody left who may invite: 400 M_UNABLE_TO_GRANT_JOIN.
    join(&server, &carol, &space).await;
    leave(&server, &alice, &room).await;
    assert_error(
        &try_join(&server, &carol, &room).await,
        400,
        "M_UNABLE_TO_GRANT_JOIN",
    );
}

#[tokio::test]
async fn a_knock_wakes_the_knockers_and_the_members_long_polls() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = room_with_rule(&server, &alice, "10", "knock").await;
    let bob_since = sync_token(&server, &bob).await;
    let alice_since = sync_token(&server, &alice).await;
    let bobs = spawn_poll(&server, &bob, &bob_since, 30_000);
    let alices = spawn_poll(&server, &alice, &alice_since, 30_000);
    server.wait_for_parked_syncs(2).await;
    knock(&server, &bob, &room).await;

    let wait = std::time::Duration::from_secs(30);
    let (st, body, _) = tokio::time::timeout(wait, bobs)
        .await
        .expect("bob's long-poll ends")
        .expect("task");
    assert_eq!(st, StatusCode::OK);
    let events = &body["rooms"]["knock"][room.as_str()]["knock_state"]["events"];
    let member = event_of_type(events, "m.room.member").unwrap_or_else(|| panic!("{body}"));
    assert_eq!(member["content"]["membership"], "knock");

    let (st, body, _) = tokio::time::timeout(wait, alices)
        .await
        .expect("alice's long-poll ends")
        .expect("task");
    assert_eq!(st, StatusCode::OK);
    let timeline = &joined_room(&body, &room)["timeline"]["events"];
    let knock = event_of_type(timeline, "m.room.member").unwrap_or_else(|| panic!("{body}"));
    assert_eq!(knock["state_key"], bob.user_id.as_str());
    assert_eq!(knock["content"]["membership"], "knock");
}
