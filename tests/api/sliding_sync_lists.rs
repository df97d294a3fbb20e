//! Sliding sync's room lists are kept in memory per syncing user (issue
//! 21): each test syncs first (so the user's list is in memory), changes
//! something, and checks that the next first response of another
//! connection sees the change: a join, a leave, an invite (and one from an
//! ignored user), recency, `m.direct`, tags, encryption, a room upgrade;
//! and a list evicted by the bound that is read again.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The first response of a new connection `conn` with one list `l` whose
/// window covers every room, filtered by `filters`.
async fn first(server: &TestServer, who: &Session, conn: &str, filters: Value) -> Value {
    let body = json!({
        "conn_id": conn,
        "lists": {"l": {
            "ranges": [[0, 99]],
            "timeline_limit": 1,
            "required_state": [["m.room.tombstone", ""]],
            "filters": filters,
        }},
    });
    let (st, b) = server
        .post(&format!("{PATH}?timeout=0"), who.token(), body)
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b
}

/// The rooms of a first response, in the list's order, and its count.
async fn listed(
    server: &TestServer,
    who: &Session,
    conn: &str,
    filters: Value,
) -> (Vec<String>, u64) {
    let b = first(server, who, conn, filters).await;
    (
        window(&b),
        b["lists"]["l"]["count"].as_u64().expect("count"),
    )
}

/// The list's window in order (MSC4186 answers carry no room order of
/// their own: `bump_stamp` orders them, newest first, then room id).
fn window(b: &Value) -> Vec<String> {
    let mut rooms: Vec<(i64, String)> = b["rooms"]
        .as_object()
        .map(|rooms| {
            rooms
                .iter()
                .map(|(id, r)| (r["bump_stamp"].as_i64().unwrap_or(0), id.clone()))
                .collect()
        })
        .unwrap_or_default();
    rooms.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    rooms.into_iter().map(|(_, id)| id).collect()
}

fn sorted(mut rooms: Vec<String>) -> Vec<String> {
    rooms.sort();
    rooms
}

#[tokio::test]
async fn a_join_a_leave_and_invites_reach_the_next_first_response() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let mine = create_room(&server, &alice, json!({"name": "Mine"})).await;
    assert_eq!(
        listed(&server, &alice, "c1", json!({})).await,
        (vec![mine.clone()], 1)
    );

    // An invite: listed as one, with its stripped state and no timeline.
    let theirs = create_room(&server, &bob, json!({"name": "Theirs"})).await;
    invite(&server, &bob, &theirs, &alice.user_id).await;
    let b = first(&server, &alice, "c2", json!({"is_invite": true})).await;
    assert_eq!(window(&b), vec![theirs.clone()], "{b}");
    let got = &b["rooms"][&theirs];
    assert!(got["invite_state"].is_array(), "{got}");
    assert!(
        got.get("timeline")
            .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
        "{got}"
    );

    // An invite marked `is_direct` is a DM at once.
    let direct = create_room(
        &server,
        &bob,
        json!({"is_direct": true, "invite": [alice.user_id], "preset": "trusted_private_chat"}),
    )
    .await;
    let (rooms, _) = listed(&server, &alice, "c3", json!({"is_dm": true})).await;
    assert_eq!(rooms, vec![direct.clone()]);

    // An invite from a user alice ignores is not listed.
    put_account_data(
        &server,
        &alice,
        "m.ignored_user_list",
        json!({"ignored_users": {carol.user_id.clone(): {}}}),
    )
    .await;
    let ignored = create_room(&server, &carol, json!({})).await;
    invite(&server, &carol, &ignored, &alice.user_id).await;
    let (rooms, count) = listed(&server, &alice, "c4", json!({"is_invite": true})).await;
    assert_eq!(
        (sorted(rooms), count),
        (sorted(vec![theirs.clone(), direct.clone()]), 2)
    );

    // The join: no longer an invite, joined with its newest event.
    join(&server, &alice, &theirs).await;
    let (rooms, _) = listed(&server, &alice, "c5", json!({"is_invite": true})).await;
    assert_eq!(rooms, vec![direct.clone()]);
    let b = first(&server, &alice, "c6", json!({"is_invite": false})).await;
    assert_eq!(b["lists"]["l"]["count"], 2, "{b}");
    // Created after alice's room: the newer of the two.
    assert_eq!(window(&b), vec![theirs.clone(), mine.clone()], "{b}");
    assert!(b["rooms"][&theirs].get("invite_state").is_none(), "{b}");
    let timeline = b["rooms"][&theirs]["timeline"]
        .as_array()
        .expect("timeline");
    assert_eq!(timeline.len(), 1, "{b}");
    assert_eq!(timeline[0]["type"], "m.room.member", "{b}");

    // A message moves a room to the top.
    send_text(&server, &alice, &mine, "news").await;
    let b = first(&server, &alice, "c7", json!({"is_invite": false})).await;
    assert_eq!(window(&b), vec![mine.clone(), theirs.clone()], "{b}");

    // The leave: gone from the next first response.
    leave(&server, &alice, &theirs).await;
    let (rooms, count) = listed(&server, &alice, "c8", json!({"is_invite": false})).await;
    assert_eq!((rooms, count), (vec![mine.clone()], 1));
    // Rejecting an invite too.
    leave(&server, &alice, &direct).await;
    let (rooms, count) = listed(&server, &alice, "c9", json!({})).await;
    assert_eq!((rooms, count), (vec![mine.clone()], 1));
}

#[tokio::test]
async fn dm_tags_and_encryption_reach_the_next_first_response() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let a = create_room(&server, &alice, json!({"name": "A"})).await;
    let b = create_room(&server, &alice, json!({"name": "B"})).await;
    let (rooms, _) = listed(&server, &alice, "c1", json!({"is_dm": true})).await;
    assert!(rooms.is_empty(), "{rooms:?}");

    // A new DM in `m.direct`.
    put_account_data(
        &server,
        &alice,
        "m.direct",
        json!({ bob.user_id.clone(): [a] }),
    )
    .await;
    let (rooms, _) = listed(&server, &alice, "c2", json!({"is_dm": true})).await;
    assert_eq!(rooms, vec![a.clone()]);
    let body = first(&server, &alice, "c3", json!({})).await;
    assert_eq!(body["rooms"][&a]["is_dm"], true, "{body}");
    assert_eq!(body["rooms"][&b]["is_dm"], false, "{body}");
    // And out of it again.
    put_account_data(&server, &alice, "m.direct", json!({})).await;
    let (rooms, _) = listed(&server, &alice, "c4", json!({"is_dm": true})).await;
    assert!(rooms.is_empty(), "{rooms:?}");

    // A tag, then its removal.
    let tag_path = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite",
        enc(&alice.user_id),
        enc(&b)
    );
    let (st, body) = server.put(&tag_path, alice.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (rooms, _) = listed(&server, &alice, "c5", json!({"tags": ["m.favourite"]})).await;
    assert_eq!(rooms, vec![b.clone()]);
    let (rooms, _) = listed(&server, &alice, "c6", json!({"not_tags": ["m.favourite"]})).await;
    assert_eq!(rooms, vec![a.clone()]);
    let (st, body) = server.delete(&tag_path, alice.token(), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (rooms, _) = listed(&server, &alice, "c7", json!({"tags": ["m.favourite"]})).await;
    assert!(rooms.is_empty(), "{rooms:?}");

    // A room becoming encrypted.
    let (rooms, _) = listed(&server, &alice, "c8", json!({"is_encrypted": true})).await;
    assert!(rooms.is_empty(), "{rooms:?}");
    set_state(
        &server,
        &alice,
        &a,
        "m.room.encryption",
        "",
        json!({"algorithm": "m.megolm.v1.aes-sha2"}),
    )
    .await;
    let (rooms, _) = listed(&server, &alice, "c9", json!({"is_encrypted": true})).await;
    assert_eq!(rooms, vec![a.clone()]);
    let (rooms, _) = listed(&server, &alice, "c10", json!({"is_encrypted": false})).await;
    assert_eq!(rooms, vec![b.clone()]);
}

#[tokio::test]
async fn a_room_upgrade_reaches_the_next_first_response() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let old = create_room(
        &server,
        &alice,
        json!({"name": "Old", "room_version": "10"}),
    )
    .await;
    let other = create_room(&server, &alice, json!({"name": "Other"})).await;
    let tag_path = |room: &str| {
        format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags/u.work",
            enc(&alice.user_id),
            enc(room)
        )
    };
    let (st, body) = server.put(&tag_path(&old), alice.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let bob = server.user("bob").await;
    put_account_data(
        &server,
        &alice,
        "m.direct",
        json!({ bob.user_id.clone(): [old] }),
    )
    .await;
    let (rooms, count) = listed(&server, &alice, "c1", json!({})).await;
    assert_eq!((rooms, count), (vec![other.clone(), old.clone()], 2));

    let (st, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old)),
            alice.token(),
            json!({"new_version": "11"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let new = body["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned();
    // The successor (alice joined it on upgrading) is listed first; the
    // old room shows its tombstone.
    let b = first(&server, &alice, "c2", json!({})).await;
    assert_eq!(b["lists"]["l"]["count"], 3, "{b}");
    assert_eq!(window(&b)[0], new, "{b}");
    let tombstone = b["rooms"][&old]["required_state"]
        .as_array()
        .and_then(|s| s.iter().find(|e| e["type"] == "m.room.tombstone"))
        .unwrap_or_else(|| panic!("no tombstone in the old room: {b}"));
    assert_eq!(
        tombstone["content"]["replacement_room"],
        new.as_str(),
        "{b}"
    );
    // The tag and the DM went with the room.
    let (rooms, _) = listed(&server, &alice, "c3", json!({"tags": ["u.work"]})).await;
    assert_eq!(sorted(rooms), sorted(vec![old.clone(), new.clone()]));
    let (rooms, _) = listed(&server, &alice, "c4", json!({"is_dm": true})).await;
    assert_eq!(sorted(rooms), sorted(vec![old.clone(), new.clone()]));
}

#[tokio::test]
async fn a_list_evicted_by_the_bound_is_read_again() {
    // One room over all lists: each sync of one user evicts the other's.
    let server = TestServer::start_with(|c| c.caches.sliding_sync_rooms = 1).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let a = create_room(&server, &alice, json!({})).await;
    let b = create_room(&server, &bob, json!({})).await;
    assert_eq!(
        listed(&server, &alice, "c1", json!({})).await,
        (vec![a.clone()], 1)
    );
    assert_eq!(
        listed(&server, &bob, "c1", json!({})).await,
        (vec![b.clone()], 1)
    );
    // alice's list is out: her join is heard by no list of hers.
    invite(&server, &bob, &b, &alice.user_id).await;
    join(&server, &alice, &b).await;
    let (rooms, count) = listed(&server, &alice, "c2", json!({})).await;
    assert_eq!(
        (sorted(rooms), count),
        (sorted(vec![a.clone(), b.clone()]), 2)
    );
    // alice's list (two rooms) stays while it is the only one.
    send_text(&server, &alice, &a, "newest").await;
    let (rooms, _) = listed(&server, &alice, "c3", json!({})).await;
    assert_eq!(rooms, vec![a.clone(), b.clone()]);
    assert_eq!(listed(&server, &bob, "c2", json!({})).await.1, 1);
}
