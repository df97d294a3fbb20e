//! A profile change is copied into the user's member event in every room
//! they are joined to (as Synapse does), and only there.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";

async fn member_content(
    server: &TestServer,
    who: &Session,
    room: &str,
    user_id: &str,
) -> serde_json::Value {
    let (st, body) = server
        .get(
            &format!("{V3}/rooms/{room}/state/m.room.member/{user_id}"),
            who.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn displayname_and_avatar_changes_reach_every_joined_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let first = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let second = create_room(&server, &bob, json!({"preset": "public_chat"})).await;
    let left = create_room(&server, &bob, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &first).await;
    join(&server, &alice, &second).await;
    join(&server, &alice, &left).await;
    leave(&server, &alice, &left).await;

    let (st, body) = server
        .put(
            &format!("{V3}/profile/{}/displayname", alice.user_id),
            alice.token(),
            json!({"displayname": "LemurLover"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server
        .put(
            &format!("{V3}/profile/{}/avatar_url", alice.user_id),
            alice.token(),
            json!({"avatar_url": "mxc://example.org/lemur"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    for room in [&first, &second] {
        let content = member_content(&server, &bob, room, &alice.user_id).await;
        assert_eq!(content["membership"], "join", "{content}");
        assert_eq!(content["displayname"], "LemurLover", "{content}");
        assert_eq!(
            content["avatar_url"], "mxc://example.org/lemur",
            "{content}"
        );
    }
    // The room she left keeps her leave.
    let content = member_content(&server, &bob, &left, &alice.user_id).await;
    assert_eq!(content["membership"], "leave", "{content}");
    assert!(content.get("displayname").is_none(), "{content}");
}

#[tokio::test]
async fn an_unchanged_profile_writes_no_member_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let path = format!("{V3}/profile/{}/displayname", alice.user_id);
    let count = || async {
        let (st, body) = server
            .get(
                &format!("{V3}/rooms/{room}/messages?dir=b&limit=100"),
                alice.token(),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .count()
    };
    let before = count().await;
    server
        .put(&path, alice.token(), json!({"displayname": "Al"}))
        .await;
    assert_eq!(
        count().await,
        before + 1,
        "the new name is one member event"
    );
    let (st, body) = server
        .put(&path, alice.token(), json!({"displayname": "Al"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        count().await,
        before + 1,
        "the same name again writes nothing"
    );
}
