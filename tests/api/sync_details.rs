//! Details sytest checks in the deprecated initial syncs and in `/sync`:
//! room events of the r0 API carry `user_id` (sytest 30rooms/01state "Room
//! initialSync" finds the user's own membership by it), a read receipt
//! never moves back (30rooms/21receipts "Read receipts are visible to
//! /initialSync"), and an incremental sync brings the presence of users who
//! newly share a room with the syncer even when they never had one
//! (31sync/03joined "Newly joined room includes presence in incremental
//! sync", "Get presence for newly joined members in incremental sync").

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// A sync that leaves the syncer's presence alone (as sytest's helpers).
async fn quiet_sync(server: &TestServer, who: &Session, since: Option<&str>) -> Value {
    let since = since
        .map(|s| format!("&since={}", enc(s)))
        .unwrap_or_default();
    sync(
        server,
        who,
        &format!("timeout=0&set_presence=offline{since}"),
    )
    .await
}

/// The `m.presence` events of a sync body other than the syncer's own, as
/// (sender, state).
fn others_presence(body: &Value, me: &Session) -> Vec<(String, String)> {
    presences(body)
        .into_iter()
        .filter(|(sender, _)| *sender != me.user_id)
        .collect()
}

#[tokio::test]
async fn newly_shared_users_without_presence_come_as_offline() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;

    // Bob joins alice's room: alice, who never had a presence, comes with it.
    let since = next_batch(&quiet_sync(&server, &bob, None).await);
    join(&server, &bob, &room).await;
    let body = quiet_sync(&server, &bob, Some(&since)).await;
    assert_eq!(
        others_presence(&body, &bob),
        vec![(alice.user_id.clone(), "offline".to_owned())],
        "{body}"
    );
    let presence = &body["presence"]["events"];
    let event = presence
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sender"] == alice.user_id.as_str())
        .unwrap();
    assert_eq!(event["content"], json!({"presence": "offline"}), "{event}");
    // Once sent, it does not come again.
    let body = quiet_sync(&server, &bob, Some(&next_batch(&body))).await;
    assert_eq!(others_presence(&body, &bob), vec![], "{body}");

    // Carol joins: alice, already in the room, gets carol's presence.
    let since = next_batch(&quiet_sync(&server, &alice, None).await);
    join(&server, &carol, &room).await;
    let body = quiet_sync(&server, &alice, Some(&since)).await;
    assert_eq!(
        others_presence(&body, &alice),
        vec![(carol.user_id.clone(), "offline".to_owned())],
        "{body}"
    );

    // An initial sync leaves out who never had a presence (as Synapse).
    let body = quiet_sync(&server, &carol, None).await;
    assert_eq!(others_presence(&body, &carol), vec![], "{body}");
}

#[tokio::test]
async fn r0_room_events_carry_user_id() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let sent = send_text(&server, &alice, &room, "hello").await;

    let path = format!("/_matrix/client/v3/rooms/{}/initialSync", enc(&room));
    let (st, body) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let mine = body["state"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["user_id"] == alice.user_id.as_str())
        .unwrap_or_else(|| panic!("own membership by user_id: {body}"));
    assert_eq!(mine["content"]["membership"], "join");
    assert_eq!(mine["sender"], alice.user_id.as_str());
    let chunk = body["messages"]["chunk"].as_array().unwrap();
    assert!(!chunk.is_empty(), "{body}");
    assert!(chunk.iter().all(|e| e["user_id"] == e["sender"]), "{body}");

    let (st, body) = server
        .get("/_matrix/client/v3/initialSync?limit=5", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let rooms = body["rooms"].as_array().unwrap();
    assert!(
        rooms[0]["state"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_id"] == e["sender"] && e["user_id"].is_string()),
        "{body}"
    );

    let path = format!("/_matrix/client/v3/events/{}", enc(&sent));
    let (st, body) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice.user_id.as_str(), "{body}");
    // An unknown event is still 404.
    let (st, body) = server
        .get("/_matrix/client/v3/events/%24nope", alice.token())
        .await;
    assert_error(&(st, body), 404, "M_NOT_FOUND");
}

/// The user's `m.read` receipt in the room as `/initialSync` shows it.
async fn initial_sync_read(server: &TestServer, who: &Session, room: &str) -> Option<String> {
    let (st, body) = server
        .get("/_matrix/client/v3/initialSync?limit=1", who.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["room_id"] == room)
        .flat_map(|r| r["content"].as_object().unwrap().iter())
        .find(|(_, by_type)| by_type["m.read"].get(&who.user_id).is_some())
        .map(|(event_id, _)| event_id.clone())
}

#[tokio::test]
async fn a_read_receipt_never_moves_back() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let first = send_text(&server, &alice, &room, "one").await;
    let second = send_text(&server, &alice, &room, "two").await;

    post_receipt(&server, &alice, &room, "m.read", &second).await;
    assert_eq!(
        initial_sync_read(&server, &alice, &room).await.as_deref(),
        Some(second.as_str())
    );
    // A receipt for an earlier event is accepted and changes nothing.
    post_receipt(&server, &alice, &room, "m.read", &first).await;
    assert_eq!(
        initial_sync_read(&server, &alice, &room).await.as_deref(),
        Some(second.as_str())
    );
    let (st, body) = server
        .post(
            &room_path(&room, "/read_markers"),
            alice.token(),
            json!({"m.read": first}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        initial_sync_read(&server, &alice, &room).await.as_deref(),
        Some(second.as_str())
    );
    // A later one moves it on.
    let third = send_text(&server, &alice, &room, "three").await;
    post_receipt(&server, &alice, &room, "m.read", &third).await;
    assert_eq!(
        initial_sync_read(&server, &alice, &room).await.as_deref(),
        Some(third.as_str())
    );
    // An event of no room is still 404.
    let resp = server
        .post(
            &receipt_path(&room, "m.read", "$nope"),
            alice.token(),
            json!({}),
        )
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}
