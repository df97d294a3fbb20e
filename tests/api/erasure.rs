//! Deactivation with `erase` (client `/account/deactivate`, Synapse's admin
//! `/_synapse/admin/v1/deactivate/{userId}`): an erased user's events are
//! served redacted to users who were not joined when they were sent, in
//! full to those who were (sytest 30rooms/32erasure.pl, Synapse's rule).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// The content of `event` in `who`'s initial sync timeline of `room`.
async fn synced_content(server: &TestServer, who: &Session, room: &str, event: &str) -> Value {
    let body = sync(server, who, "timeout=0").await;
    let timeline = &joined_room(&body, room)["timeline"]["events"];
    timeline
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == event)
        .unwrap_or_else(|| panic!("{event} not in the timeline: {timeline}"))["content"]
        .clone()
}

/// The content of `event` as `who` gets it from `/messages`, `/event` and
/// `/context`, which must agree.
async fn read_content(server: &TestServer, who: &Session, room: &str, event: &str) -> Value {
    let page = messages_ok(server, who, room, "dir=b&limit=50").await;
    let from_messages = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == event)
        .unwrap_or_else(|| panic!("{event} not in /messages: {page}"))["content"]
        .clone();
    let from_event = get_event_ok(server, who, room, event).await["content"].clone();
    let (st, context) = server
        .get(
            &room_path(room, &format!("/context/{}?limit=2", enc(event))),
            who.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "context: {context}");
    assert_eq!(from_messages, from_event, "/messages and /event");
    assert_eq!(
        context["event"]["content"], from_event,
        "/context and /event"
    );
    from_event
}

/// A room of `alice` (public, shared history) where `bob` joined before
/// her message and `carol` after it. Returns the room and the message.
async fn room_with_original_and_later_member(
    server: &TestServer,
    alice: &Session,
    bob: &Session,
    carol: &Session,
) -> (String, String) {
    let room = create_room(server, alice, json!({"preset": "public_chat"})).await;
    join(server, bob, &room).await;
    let message = send_text(server, alice, &room, "body1").await;
    join(server, carol, &room).await;
    assert_eq!(
        synced_content(server, carol, &room, &message).await["body"],
        "body1"
    );
    (room, message)
}

/// sytest "Only original members of the room can see messages from erased
/// users", and the same through every read path.
#[tokio::test]
async fn only_original_members_see_an_erased_users_messages() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (room, message) = room_with_original_and_later_member(&server, &alice, &bob, &carol).await;

    deactivate_with(&server, &alice, "alice", json!({"erase": true})).await;

    let full = text_content("body1");
    assert_eq!(synced_content(&server, &bob, &room, &message).await, full);
    assert_eq!(read_content(&server, &bob, &room, &message).await, full);
    assert_eq!(
        synced_content(&server, &carol, &room, &message).await,
        json!({})
    );
    assert_eq!(
        read_content(&server, &carol, &room, &message).await,
        json!({})
    );
    // Pruned as a redaction would: the event keeps its type and sender.
    let event = get_event_ok(&server, &carol, &room, &message).await;
    assert_eq!(
        (&event["type"], &event["sender"]),
        (&json!("m.room.message"), &json!(alice.user_id))
    );
    // She left her rooms on deactivation, as with Synapse.
    assert!(
        joined_members(&server, &bob, &room)
            .await
            .iter()
            .all(|m| *m != alice.user_id)
    );

    // The erasure outlives a restart.
    server.restart().await;
    assert_eq!(
        read_content(&server, &carol, &room, &message).await,
        json!({})
    );
    assert_eq!(read_content(&server, &bob, &room, &message).await, full);
}

/// Without `erase`, a deactivated user's messages stay readable to all.
#[tokio::test]
async fn deactivation_without_erase_hides_nothing() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (room, message) = room_with_original_and_later_member(&server, &alice, &bob, &carol).await;
    deactivate_with(&server, &alice, "alice", json!({"erase": false})).await;
    assert_eq!(
        read_content(&server, &carol, &room, &message).await["body"],
        "body1"
    );
}

/// The admin endpoint erases the same way; reactivating the account (admin
/// `PUT /v2/users/{id}` with `deactivated: false`) lifts the erasure. Bad
/// input changes nothing.
#[tokio::test]
async fn admin_erasure_and_reactivation() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (room, message) = room_with_original_and_later_member(&server, &alice, &bob, &carol).await;
    let path = format!("/_synapse/admin/v1/deactivate/{}", enc(&alice.user_id));

    for (name, who, target, body, status, errcode) in [
        (
            "not an admin",
            bob.token(),
            path.clone(),
            json!({"erase": true}),
            403,
            "M_FORBIDDEN",
        ),
        (
            "erase not a bool",
            admin.token(),
            path.clone(),
            json!({"erase": "yes"}),
            400,
            "M_BAD_JSON",
        ),
        (
            "unknown user",
            admin.token(),
            format!(
                "/_synapse/admin/v1/deactivate/{}",
                enc("@nobody:test.local")
            ),
            json!({"erase": true}),
            404,
            "M_NOT_FOUND",
        ),
    ] {
        assert_error_for(
            name,
            &server.post(&target, who, body).await,
            status,
            errcode,
        );
    }
    assert_eq!(
        read_content(&server, &carol, &room, &message).await["body"],
        "body1"
    );

    let (st, b) = server
        .post(&path, admin.token(), json!({"erase": true}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        read_content(&server, &carol, &room, &message).await,
        json!({})
    );
    assert_eq!(
        read_content(&server, &bob, &room, &message).await["body"],
        "body1"
    );
    let user = format!("/_synapse/admin/v2/users/{}", enc(&alice.user_id));
    let (_, b) = server.get(&user, admin.token()).await;
    assert_eq!(
        (&b["deactivated"], &b["erased"]),
        (&json!(true), &json!(true)),
        "{b}"
    );

    let (st, b) = server
        .put(
            &user,
            admin.token(),
            json!({"deactivated": false, "password": "another-password"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["erased"], false, "{b}");
    assert_eq!(
        read_content(&server, &carol, &room, &message).await["body"],
        "body1"
    );
}

/// The client endpoint checks `erase` before anything happens.
#[tokio::test]
async fn client_deactivate_rejects_a_bad_erase() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (st, body) = with_uia(
        &server,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(
            "/_matrix/client/v3/account/deactivate",
            alice.token(),
            json!({"erase": "yes"}),
        ),
        "alice",
        "password123",
    )
    .await;
    assert_error(&(st, body), 400, "M_BAD_JSON");
    let (st, _) = server
        .get("/_matrix/client/v3/account/whoami", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "still active");
}
