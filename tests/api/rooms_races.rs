//! Concurrent room writes by one client: createRoom racing for one alias,
//! one user creating many rooms at once (v12 room ids are create-event
//! hashes), and repeated or concurrent membership changes that change
//! nothing (no event written).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";

/// Runs `n` POSTs of `body` to `path` at once as `s`; the (status, body)
/// of each.
async fn post_all(
    server: &TestServer,
    s: &Session,
    path: &str,
    body: Value,
    n: usize,
) -> Vec<(StatusCode, Value)> {
    let requests = (0..n)
        .map(|_| (reqwest::Method::POST, path.to_owned(), body.clone()))
        .collect();
    server.at_once(&s.access_token, requests).await
}

/// Member events about `user` in `room`, as stored.
async fn member_events(server: &TestServer, room: &str, user: &str) -> i64 {
    server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM events WHERE room_id = '{}' AND event_type = 'm.room.member' AND state_key = '{}'",
            sql_quote(room),
            sql_quote(user)
        ))
        .await
}

/// The rooms' count of rows in `rooms` and of m.room.create events.
async fn rooms_stored(server: &TestServer) -> (i64, i64) {
    let rows = server.sql_count("SELECT COUNT(*) FROM rooms").await;
    let creates = server
        .sql_count("SELECT COUNT(*) FROM events WHERE event_type = 'm.room.create'")
        .await;
    (rows, creates)
}

#[tokio::test]
async fn concurrent_creations_with_one_alias_leave_one_owner() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let results = post_all(
        &server,
        &alice,
        &format!("{V3}/createRoom"),
        json!({"room_alias_name": "contested", "preset": "public_chat"}),
        20,
    )
    .await;
    let mut winners = Vec::new();
    for r in &results {
        match r.0.as_u16() {
            200 => winners.push(r.1["room_id"].as_str().unwrap().to_owned()),
            _ => assert_error(r, 400, "M_ROOM_IN_USE"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creation wins: {results:?}");
    let winner = &winners[0];
    // Losers leave no room behind.
    assert_eq!(rooms_stored(&server).await, (1, 1));

    let alias = format!("#contested:{}", server.server_name);
    let (st, body) = server
        .get(&format!("{V3}/directory/room/{}", enc(&alias)), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], json!(winner));
    let (st, body) = server
        .get(
            &format!("{V3}/rooms/{}/state/m.room.canonical_alias/", enc(winner)),
            alice.token(),
        )
        .await;
    assert_eq!((st, &body["alias"]), (StatusCode::OK, &json!(alias)));
    // No room names the alias but the owner.
    let naming = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM events WHERE event_type = 'm.room.canonical_alias' AND json LIKE '%{}%'",
            sql_quote(&alias)
        ))
        .await;
    assert_eq!(naming, 1);

    // Taken later, too: 400 M_ROOM_IN_USE, still no new room.
    let again = server
        .post(
            &format!("{V3}/createRoom"),
            alice.token(),
            json!({"room_alias_name": "contested"}),
        )
        .await;
    assert_error(&again, 400, "M_ROOM_IN_USE");
    assert_eq!(rooms_stored(&server).await, (1, 1));
}

/// `n` concurrent createRoom calls by one user with the same body: all
/// 200, `n` distinct rooms, each with its own create event and creator.
async fn concurrent_creations_by_one_user(
    server: &TestServer,
    alice: &Session,
    body: Value,
    n: usize,
) {
    let (rooms_before, creates_before) = rooms_stored(server).await;
    let results = post_all(server, alice, &format!("{V3}/createRoom"), body, n).await;
    let mut ids: Vec<String> = results
        .iter()
        .map(|(st, b)| {
            assert_eq!(*st, StatusCode::OK, "{b}");
            b["room_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "{n} distinct rooms");
    let n = n as i64;
    assert_eq!(
        rooms_stored(server).await,
        (rooms_before + n, creates_before + n)
    );
    let (st, body) = server
        .get(&format!("{V3}/joined_rooms"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let joined = body["joined_rooms"].as_array().unwrap();
    for id in &ids {
        assert!(joined.contains(&json!(id)), "alice is in {id}");
        assert_eq!(member_events(server, id, &alice.user_id).await, 1);
    }
}

#[tokio::test]
async fn concurrent_creations_by_one_user_make_distinct_rooms_v12() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    concurrent_creations_by_one_user(&server, &alice, json!({"room_version": "12"}), 50).await;
    // The default version (12) and an empty body, as bots send it.
    concurrent_creations_by_one_user(&server, &alice, json!({}), 50).await;
}

#[tokio::test]
async fn concurrent_creations_by_one_user_make_distinct_rooms_v10_v11() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    concurrent_creations_by_one_user(&server, &alice, json!({"room_version": "10"}), 25).await;
    concurrent_creations_by_one_user(&server, &alice, json!({"room_version": "11"}), 25).await;
}

async fn create_public(server: &TestServer, s: &Session) -> String {
    let (st, body) = server
        .post(
            &format!("{V3}/createRoom"),
            s.token(),
            json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn repeated_and_concurrent_joins_write_one_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_public(&server, &alice).await;
    let join_path = format!("{V3}/rooms/{}/join", enc(&room));

    let (st, body) = server.post(&join_path, bob.token(), json!({})).await;
    assert_eq!((st, &body["room_id"]), (StatusCode::OK, &json!(room)));
    assert_eq!(member_events(&server, &room, &bob.user_id).await, 1);
    // Again, by id and by /join/{id}: 200 with the room id, no new event.
    let (st, body) = server.post(&join_path, bob.token(), json!({})).await;
    assert_eq!((st, &body["room_id"]), (StatusCode::OK, &json!(room)));
    let (st, body) = server
        .post(&format!("{V3}/join/{}", enc(&room)), bob.token(), json!({}))
        .await;
    assert_eq!((st, &body["room_id"]), (StatusCode::OK, &json!(room)));
    assert_eq!(member_events(&server, &room, &bob.user_id).await, 1);
    // The creator's join from createRoom is not repeated either.
    let (st, _) = server.post(&join_path, alice.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(member_events(&server, &room, &alice.user_id).await, 1);

    // Concurrent joins by a new member: one event.
    let carol = server.user("carol").await;
    for (st, body) in post_all(&server, &carol, &join_path, json!({}), 10).await {
        assert_eq!((st, &body["room_id"]), (StatusCode::OK, &json!(room)));
    }
    assert_eq!(member_events(&server, &room, &carol.user_id).await, 1);
    let (st, body) = server
        .get(
            &format!("{V3}/rooms/{}/joined_members", enc(&room)),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["joined"].as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn a_join_that_changes_something_is_written() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_public(&server, &alice).await;
    let join_path = format!("{V3}/rooms/{}/join", enc(&room));
    let (st, _) = server.post(&join_path, bob.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK);

    // A reason is part of the content: a new event.
    let (st, _) = server
        .post(&join_path, bob.token(), json!({"reason": "hello"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(member_events(&server, &room, &bob.user_id).await, 2);
    // A new display name: the next join carries it (a new event); the
    // one after that is the same again and writes nothing.
    let (st, body) = server
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&bob.user_id)),
            bob.token(),
            json!({"displayname": "Bobby"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _) = server.post(&join_path, bob.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(member_events(&server, &room, &bob.user_id).await, 3);
    let (st, _) = server.post(&join_path, bob.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(member_events(&server, &room, &bob.user_id).await, 3);
    let (st, body) = server
        .get(
            &format!(
                "{V3}/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(&bob.user_id)
            ),
            bob.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "Bobby");
    assert_eq!(body["membership"], "join");
}

#[tokio::test]
async fn repeated_leaves_invites_and_bans_write_one_event_each() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_public(&server, &alice).await;
    let path = |rest: &str| format!("{V3}/rooms/{}/{rest}", enc(&room));

    // Leave twice: one leave event, both answered 200.
    let (st, _) = server.post(&path("join"), bob.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    for (st, body) in post_all(&server, &bob, &path("leave"), json!({}), 5).await {
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let (st, body) = server.post(&path("leave"), bob.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(member_events(&server, &room, &bob.user_id).await, 2);

    // Invite twice by the same sender: one invite event.
    for _ in 0..2 {
        let (st, body) = server
            .post(
                &path("invite"),
                alice.token(),
                json!({"user_id": carol.user_id}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    assert_eq!(member_events(&server, &room, &carol.user_id).await, 1);

    // Ban twice with the same reason: one ban; another reason is new.
    for _ in 0..2 {
        let (st, body) = server
            .post(
                &path("ban"),
                alice.token(),
                json!({"user_id": bob.user_id, "reason": "spam"}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    assert_eq!(member_events(&server, &room, &bob.user_id).await, 3);
    let (st, _) = server
        .post(
            &path("ban"),
            alice.token(),
            json!({"user_id": bob.user_id, "reason": "more spam"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(member_events(&server, &room, &bob.user_id).await, 4);
}
