//! `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}` and MSC3266's
//! unstable paths: the summary's fields, the requester's membership, who
//! may see which room (unauthenticated included), and the errors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const PATHS: [&str; 3] = [
    "/_matrix/client/v1/room_summary/{}",
    "/_matrix/client/unstable/im.nheko.summary/rooms/{}/summary",
    "/_matrix/client/unstable/im.nheko.summary/summary/{}",
];

fn summary_path(template: &str, room: &str) -> String {
    template.replace("{}", &enc(room))
}

async fn try_summary(
    server: &TestServer,
    who: Option<&Session>,
    room: &str,
) -> (StatusCode, Value) {
    server
        .get(&summary_path(PATHS[0], room), who.and_then(Session::token))
        .await
}

async fn summary(server: &TestServer, who: Option<&Session>, room: &str) -> Value {
    let (st, b) = try_summary(server, who, room).await;
    assert_eq!(st, StatusCode::OK, "summary of {room}: {b}");
    b
}

#[tokio::test]
async fn summary_of_a_public_room_on_every_path() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "room_version": "10",
            "preset": "public_chat",
            "name": "The room",
            "topic": "what it is about",
            "room_alias_name": "summed",
            "initial_state": [
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://example.org/abc"}},
                {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}},
            ],
        }),
    )
    .await;
    join(&server, &bob, &room).await;
    let alias = format!("#summed:{}", server.server_name);

    for template in PATHS {
        for target in [&room, &alias] {
            let (st, b) = server
                .get(&summary_path(template, target), alice.token())
                .await;
            assert_eq!(st, StatusCode::OK, "{template} {target}: {b}");
            assert_eq!(b["room_id"], room.as_str(), "{b}");
            assert_eq!(b["name"], "The room");
            assert_eq!(b["topic"], "what it is about");
            assert_eq!(b["canonical_alias"], alias.as_str());
            assert_eq!(b["avatar_url"], "mxc://example.org/abc");
            assert_eq!(b["num_joined_members"], 2);
            assert_eq!(b["world_readable"], false);
            assert_eq!(b["guest_can_join"], true);
            assert!(b.get("join_rule").is_none_or(|j| j == "public"), "{b}");
            assert_eq!(b["encryption"], "m.megolm.v1.aes-sha2");
            assert_eq!(b["room_version"], "10");
            assert_eq!(b["membership"], "join");
            assert!(b.get("room_type").is_none(), "{b}");
        }
    }

    // Someone who never joined: membership leave; unauthenticated: none.
    let carol = server.user("carol").await;
    assert_eq!(
        summary(&server, Some(&carol), &room).await["membership"],
        "leave"
    );
    let anonymous = summary(&server, None, &room).await;
    assert!(anonymous.get("membership").is_none(), "{anonymous}");
    assert_eq!(anonymous["name"], "The room");
}

#[tokio::test]
async fn summary_visibility_and_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let private = create_space(&server, &alice, "private_chat").await;

    // A private room: members and invitees only.
    assert_eq!(
        summary(&server, Some(&alice), &private).await["room_type"],
        "m.space"
    );
    assert_error(
        &try_summary(&server, Some(&bob), &private).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &try_summary(&server, None, &private).await,
        404,
        "M_NOT_FOUND",
    );
    invite(&server, &alice, &private, &bob.user_id).await;
    let b = summary(&server, Some(&bob), &private).await;
    assert_eq!(b["membership"], "invite");
    assert_eq!(b["join_rule"], "invite");

    // World-readable history opens it to anyone.
    set_history_visibility(&server, &alice, &private, "world_readable").await;
    assert_eq!(
        summary(&server, None, &private).await["world_readable"],
        true
    );

    // A knock room: anyone; the knocker sees their knock.
    let knockable =
        room_with_join_rules(&server, &alice, "10", json!({"join_rule": "knock"})).await;
    assert_eq!(
        summary(&server, None, &knockable).await["join_rule"],
        "knock"
    );
    let (st, b) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&knockable)),
            carol.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        summary(&server, Some(&carol), &knockable).await["membership"],
        "knock"
    );

    // A restricted room: members of an allowed room.
    let space = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let allow = json!([{"type": "m.room_membership", "room_id": space}]);
    let restricted = room_with_join_rules(
        &server,
        &alice,
        "10",
        json!({"join_rule": "restricted", "allow": allow}),
    )
    .await;
    assert_error(
        &try_summary(&server, Some(&carol), &restricted).await,
        404,
        "M_NOT_FOUND",
    );
    invite(&server, &alice, &space, &carol.user_id).await;
    join(&server, &carol, &space).await;
    let b = summary(&server, Some(&carol), &restricted).await;
    assert_eq!(b["join_rule"], "restricted");
    assert_eq!(b["allowed_room_ids"], json!([space]));
    assert_eq!(b["membership"], "leave");

    // Unknown room and alias, a malformed id, a bad token.
    let unknown = format!("!nowhere:{}", server.server_name);
    assert_error(
        &try_summary(&server, Some(&bob), &unknown).await,
        404,
        "M_NOT_FOUND",
    );
    let alias = format!("#nothing:{}", server.server_name);
    assert_error(
        &try_summary(&server, None, &alias).await,
        404,
        "M_NOT_FOUND",
    );
    let (st, _) = try_summary(&server, Some(&bob), "not-a-room").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, b) = server
        .get(&summary_path(PATHS[0], &unknown), Some("not-a-token"))
        .await;
    assert_error(&(st, b), 401, "M_UNKNOWN_TOKEN");
}
