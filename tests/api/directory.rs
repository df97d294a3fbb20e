//! Aliases (/directory/room, /rooms/{id}/aliases), room visibility
//! (/directory/list/room), /publicRooms, /user_directory/search and
//! /relations.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", enc(alias))
}

fn visibility_path(room: &str) -> String {
    format!("/_matrix/client/v3/directory/list/room/{}", enc(room))
}

fn room_aliases_path(room: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/aliases", enc(room))
}

async fn put_alias(server: &TestServer, who: &Session, alias: &str, room: &str) {
    let (st, body) = server
        .put(&alias_path(alias), who.token(), json!({"room_id": room}))
        .await;
    assert_eq!(st, StatusCode::OK, "PUT {alias}: {body}");
}

async fn room_aliases(server: &TestServer, who: &Session, room: &str) -> Vec<String> {
    let (st, body) = server.get(&room_aliases_path(room), who.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let mut v: Vec<String> = body["aliases"]
        .as_array()
        .unwrap_or_else(|| panic!("aliases: {body}"))
        .iter()
        .map(|a| a.as_str().expect("alias").to_owned())
        .collect();
    v.sort();
    v
}

fn user_ids(body: &Value) -> Vec<String> {
    field_of_each(&body["results"], "user_id")
}

async fn search_users(server: &TestServer, who: &Session, body: Value) -> Value {
    let (st, b) = server
        .post(
            "/_matrix/client/v3/user_directory/search",
            who.token(),
            body,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(b["limited"].is_boolean(), "limited: {b}");
    b
}

/// Three public (published) rooms with 1, 3 and 2 joined members, and one
/// private room; returns (alpha, beta, gamma).
async fn three_public_rooms(server: &TestServer, alice: &Session) -> (String, String, String) {
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let alpha = create_room(
        server,
        alice,
        json!({"visibility": "public", "preset": "public_chat", "name": "Alpha Lounge",
               "topic": "first", "room_alias_name": "alpha"}),
    )
    .await;
    let beta = create_room(
        server,
        alice,
        json!({"visibility": "public", "preset": "public_chat", "name": "Beta Lounge",
               "topic": "second"}),
    )
    .await;
    let gamma = create_room(
        server,
        alice,
        json!({"visibility": "public", "preset": "public_chat", "name": "Gamma Hall",
               "topic": "third"}),
    )
    .await;
    create_room(
        server,
        alice,
        json!({"visibility": "private", "preset": "public_chat", "name": "Hidden Lounge"}),
    )
    .await;
    join(server, &bob, &beta).await;
    join(server, &carol, &beta).await;
    join(server, &bob, &gamma).await;
    (alpha, beta, gamma)
}

fn relations_path(room: &str, event: &str, rest: &str) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/relations/{}{rest}",
        enc(room),
        enc(event)
    )
}

async fn relations(server: &TestServer, who: &Session, path: &str) -> Value {
    let (st, body) = server.get(path, who.token()).await;
    assert_eq!(st, StatusCode::OK, "GET {path}: {body}");
    assert!(body["chunk"].is_array(), "{body}");
    body
}

/// A root message with a reaction and two thread replies:
/// (room, root, reaction, thread1, thread2), oldest first.
async fn relation_room(
    server: &TestServer,
    alice: &Session,
    bob: &Session,
) -> (String, String, String, String, String) {
    let room = create_room(server, alice, json!({"preset": "public_chat"})).await;
    join(server, bob, &room).await;
    let root = send_text(server, alice, &room, "root").await;
    send_text(server, alice, &room, "unrelated").await;
    let reaction = send_event(
        server,
        bob,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}),
    )
    .await;
    let thread = |body: &str| {
        json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": true,
                "m.in_reply_to": {"event_id": root}
            }
        })
    };
    let thread1 = send_event(server, bob, &room, "m.room.message", thread("t1")).await;
    let thread2 = send_event(server, alice, &room, "m.room.message", thread("t2")).await;
    (room, root, reaction, thread1, thread2)
}

// ---------------------------------------------------------------------------
// Aliases
// ---------------------------------------------------------------------------

#[tokio::test]
async fn alias_create_resolve_and_list() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let alias = format!("#hall:{}", server.server_name);

    let (st, body) = server
        .put(&alias_path(&alias), alice.token(), json!({"room_id": room}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    // Resolving needs no token.
    let (st, body) = server.get(&alias_path(&alias), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str(), "{body}");
    assert_eq!(body["servers"], json!([server.server_name]), "{body}");

    assert_eq!(
        room_aliases(&server, &alice, &room).await,
        std::slice::from_ref(&alias)
    );

    // The alias can be used to join.
    let bob = server.user("bob").await;
    let (st, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&alias)),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str(), "{body}");
}

#[tokio::test]
async fn alias_from_create_room_is_listed() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_alias_name": "made"})).await;
    let alias = format!("#made:{}", server.server_name);
    let (st, body) = server.get(&alias_path(&alias), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(
        room_aliases(&server, &alice, &room).await,
        std::slice::from_ref(&alias)
    );

    // A second one through the directory API: both are listed.
    let second = format!("#made2:{}", server.server_name);
    put_alias(&server, &alice, &second, &room).await;
    let mut expected = vec![alias, second];
    expected.sort();
    assert_eq!(room_aliases(&server, &alice, &room).await, expected);
}

#[tokio::test]
async fn alias_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let other = create_room(&server, &alice, json!({})).await;
    let alias = format!("#taken:{}", server.server_name);
    put_alias(&server, &alice, &alias, &room).await;

    // Taken, even for the same room.
    assert_error(
        &server
            .put(
                &alias_path(&alias),
                alice.token(),
                json!({"room_id": other}),
            )
            .await,
        409,
        "M_UNKNOWN",
    );
    assert_error(
        &server
            .put(&alias_path(&alias), alice.token(), json!({"room_id": room}))
            .await,
        409,
        "M_UNKNOWN",
    );
    let (_, body) = server.get(&alias_path(&alias), None).await;
    assert_eq!(body["room_id"], room.as_str(), "unchanged: {body}");

    // Another server's alias.
    assert_error(
        &server
            .put(
                &alias_path("#elsewhere:other.example"),
                alice.token(),
                json!({"room_id": room}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    // Unknown room.
    let unknown = format!("!doesnotexist:{}", server.server_name);
    let free = format!("#free:{}", server.server_name);
    assert_error(
        &server
            .put(
                &alias_path(&free),
                alice.token(),
                json!({"room_id": unknown}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get(&alias_path(&free), None).await,
        404,
        "M_NOT_FOUND",
    );
    // Not an alias at all.
    assert_error(
        &server
            .put(
                &alias_path("nohash"),
                alice.token(),
                json!({"room_id": room}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    // Missing room_id, malformed JSON, no token.
    assert_error(
        &server
            .put(&alias_path(&free), alice.token(), json!({}))
            .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .request_raw(Method::PUT, &alias_path(&free), alice.token(), "{x")
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &server
            .put(&alias_path(&free), None, json!({"room_id": room}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server.get(&alias_path(&free), None).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn alias_delete_permissions() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let admin = server.admin("operator").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let a1 = format!("#a1:{}", server.server_name);
    let b1 = format!("#b1:{}", server.server_name);
    let b2 = format!("#b2:{}", server.server_name);
    put_alias(&server, &alice, &a1, &room).await;
    put_alias(&server, &bob, &b1, &room).await;
    put_alias(&server, &bob, &b2, &room).await;

    // bob neither created a1 nor may change the canonical alias.
    assert_error(
        &server.delete(&alias_path(&a1), bob.token(), None).await,
        403,
        "M_FORBIDDEN",
    );
    let (st, _) = server.get(&alias_path(&a1), None).await;
    assert_eq!(st, StatusCode::OK, "a1 survives");

    // The creator may delete their own.
    let (st, body) = server.delete(&alias_path(&b1), bob.token(), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server.get(&alias_path(&b1), None).await,
        404,
        "M_NOT_FOUND",
    );

    // The room admin may delete bob's.
    let (st, body) = server.delete(&alias_path(&b2), alice.token(), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server.get(&alias_path(&b2), None).await,
        404,
        "M_NOT_FOUND",
    );

    // A server admin, not in the room, may delete any.
    let (st, body) = server.delete(&alias_path(&a1), admin.token(), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server.get(&alias_path(&a1), None).await,
        404,
        "M_NOT_FOUND",
    );
    assert!(room_aliases(&server, &alice, &room).await.is_empty());

    // Gone: 404.
    assert_error(
        &server.delete(&alias_path(&a1), alice.token(), None).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.delete(&alias_path(&a1), None, None).await,
        401,
        "M_MISSING_TOKEN",
    );

    // A deleted alias can be created again.
    put_alias(&server, &alice, &a1, &room).await;
}

#[tokio::test]
async fn room_aliases_need_membership() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"room_alias_name": "secret"})).await;
    assert_error(
        &server.get(&room_aliases_path(&room), bob.token()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&room_aliases_path(&room), None).await,
        401,
        "M_MISSING_TOKEN",
    );
    // A server admin outside the room may list them (as on Synapse); an
    // unknown room is 404 for the admin too.
    let admin = server.admin("operator").await;
    let (st, body) = server.get(&room_aliases_path(&room), admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["aliases"], json!(["#secret:test.local"]));
    assert_error(
        &server
            .get(&room_aliases_path("!nowhere:test.local"), admin.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
}

// ---------------------------------------------------------------------------
// Room visibility
// ---------------------------------------------------------------------------

#[tokio::test]
async fn room_visibility_get_and_put() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let public = create_room(&server, &alice, json!({"visibility": "public"})).await;
    let private = create_room(&server, &alice, json!({})).await;

    let (st, body) = server.get(&visibility_path(&public), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"visibility": "public"}));
    let (_, body) = server.get(&visibility_path(&private), None).await;
    assert_eq!(body, json!({"visibility": "private"}));

    let (st, body) = server
        .put(
            &visibility_path(&private),
            alice.token(),
            json!({"visibility": "public"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, body) = server.get(&visibility_path(&private), None).await;
    assert_eq!(body, json!({"visibility": "public"}));

    let (st, _) = server
        .put(
            &visibility_path(&public),
            alice.token(),
            json!({"visibility": "private"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = server.get(&visibility_path(&public), None).await;
    assert_eq!(body, json!({"visibility": "private"}));

    // The directory follows.
    let (_, body) = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(
        room_ids(&body["chunk"]),
        std::slice::from_ref(&private),
        "{body}"
    );
}

#[tokio::test]
async fn room_visibility_permissions_and_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let admin = server.admin("operator").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;

    // A member without power, and a non-member.
    for who in [&bob, &carol] {
        assert_error(
            &server
                .put(
                    &visibility_path(&room),
                    who.token(),
                    json!({"visibility": "public"}),
                )
                .await,
            403,
            "M_FORBIDDEN",
        );
    }
    let (_, body) = server.get(&visibility_path(&room), None).await;
    assert_eq!(body, json!({"visibility": "private"}));

    // A server admin may.
    let (st, body) = server
        .put(
            &visibility_path(&room),
            admin.token(),
            json!({"visibility": "public"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, body) = server.get(&visibility_path(&room), None).await;
    assert_eq!(body, json!({"visibility": "public"}));

    let unknown = format!("!doesnotexist:{}", server.server_name);
    assert_error(
        &server.get(&visibility_path(&unknown), None).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(
                &visibility_path(&unknown),
                admin.token(),
                json!({"visibility": "public"}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(
                &visibility_path(&room),
                None,
                json!({"visibility": "public"}),
            )
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    // A visibility that is neither public nor private: 400 M_BAD_JSON (as
    // Synapse), and the room stays listed.
    assert_error(
        &server
            .put(
                &visibility_path(&room),
                admin.token(),
                json!({"visibility": "secret"}),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    let (_, body) = server.get(&visibility_path(&room), None).await;
    assert_eq!(body, json!({"visibility": "public"}));
    // No visibility is public, the spec's default (as Synapse).
    for (put, listed) in [
        (json!({"visibility": "private"}), "private"),
        (json!({}), "public"),
    ] {
        let (st, b) = server
            .put(&visibility_path(&room), admin.token(), put)
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        let (_, body) = server.get(&visibility_path(&room), None).await;
        assert_eq!(body, json!({"visibility": listed}));
    }
}

// ---------------------------------------------------------------------------
// /publicRooms
// ---------------------------------------------------------------------------

#[tokio::test]
async fn public_rooms_lists_published_rooms_by_members() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (alpha, beta, gamma) = three_public_rooms(&server, &alice).await;

    let (st, body) = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        room_ids(&body["chunk"]),
        [beta.clone(), gamma.clone(), alpha.clone()],
        "sorted by joined members: {body}"
    );
    assert_eq!(body["total_room_count_estimate"], 3, "{body}");
    assert!(body.get("next_batch").is_none_or(Value::is_null), "{body}");

    let chunk = body["chunk"].as_array().unwrap();
    let counts: Vec<u64> = chunk
        .iter()
        .map(|r| r["num_joined_members"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [3, 2, 1], "{body}");

    let a = &chunk[2];
    assert_eq!(a["name"], "Alpha Lounge", "{a}");
    assert_eq!(a["topic"], "first", "{a}");
    assert_eq!(
        a["canonical_alias"],
        format!("#alpha:{}", server.server_name),
        "{a}"
    );
    assert_eq!(a["world_readable"], false, "{a}");
    assert_eq!(a["guest_can_join"], false, "{a}");
    assert_eq!(a["join_rule"], "public", "{a}");
    assert!(a.get("avatar_url").is_none_or(Value::is_null), "{a}");
}

#[tokio::test]
async fn public_rooms_get_paging() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (alpha, beta, gamma) = three_public_rooms(&server, &alice).await;

    let (st, page1) = server
        .get("/_matrix/client/v3/publicRooms?limit=2", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{page1}");
    assert_eq!(room_ids(&page1["chunk"]), [beta.clone(), gamma.clone()]);
    assert_eq!(page1["total_room_count_estimate"], 3, "{page1}");
    let next = page1["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("next_batch: {page1}"));

    let (st, page2) = server
        .get(
            &format!("/_matrix/client/v3/publicRooms?limit=2&since={}", enc(next)),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{page2}");
    assert_eq!(
        room_ids(&page2["chunk"]),
        std::slice::from_ref(&alpha),
        "{page2}"
    );
    assert!(
        page2.get("next_batch").is_none_or(Value::is_null),
        "last page: {page2}"
    );
    let prev = page2["prev_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("prev_batch: {page2}"));
    let (_, back) = server
        .get(
            &format!("/_matrix/client/v3/publicRooms?limit=2&since={}", enc(prev)),
            None,
        )
        .await;
    assert_eq!(room_ids(&back["chunk"]), [beta, gamma], "{back}");
}

#[tokio::test]
async fn public_rooms_post_search_and_paging() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (alpha, beta, gamma) = three_public_rooms(&server, &alice).await;
    let path = "/_matrix/client/v3/publicRooms";

    let (st, body) = server
        .post(
            path,
            alice.token(),
            json!({"filter": {"generic_search_term": "Lounge"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // The private "Hidden Lounge" is not listed.
    assert_eq!(room_ids(&body["chunk"]), [beta.clone(), alpha.clone()]);

    // By topic.
    let (_, body) = server
        .post(
            path,
            alice.token(),
            json!({"filter": {"generic_search_term": "third"}}),
        )
        .await;
    assert_eq!(
        room_ids(&body["chunk"]),
        std::slice::from_ref(&gamma),
        "{body}"
    );
    // Nothing matches.
    let (_, body) = server
        .post(
            path,
            alice.token(),
            json!({"filter": {"generic_search_term": "zzz-nothing"}}),
        )
        .await;
    assert_eq!(body["chunk"], json!([]), "{body}");

    // Paging one by one, no filter.
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    for _ in 0..5 {
        let mut req = json!({"limit": 1});
        if let Some(s) = &since {
            req["since"] = json!(s);
        }
        let (st, page) = server.post(path, alice.token(), req).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let ids = room_ids(&page["chunk"]);
        assert_eq!(ids.len(), 1, "{page}");
        seen.extend(ids);
        match page["next_batch"].as_str() {
            Some(n) => since = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [beta.clone(), gamma, alpha.clone()]);

    // Filter and paging together.
    let (_, page) = server
        .post(
            path,
            alice.token(),
            json!({"limit": 1, "filter": {"generic_search_term": "Lounge"}}),
        )
        .await;
    assert_eq!(
        room_ids(&page["chunk"]),
        std::slice::from_ref(&beta),
        "{page}"
    );
    let next = page["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("{page}"))
        .to_owned();
    let (_, page) = server
        .post(
            path,
            alice.token(),
            json!({"limit": 1, "since": next, "filter": {"generic_search_term": "Lounge"}}),
        )
        .await;
    assert_eq!(room_ids(&page["chunk"]), [alpha], "{page}");
    assert!(page.get("next_batch").is_none_or(Value::is_null), "{page}");

    // POST needs a token.
    assert_error(
        &server.post(path, None, json!({})).await,
        401,
        "M_MISSING_TOKEN",
    );
}

// ---------------------------------------------------------------------------
// User directory
// ---------------------------------------------------------------------------

#[tokio::test]
async fn user_directory_finds_a_user_sharing_a_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    set_displayname(&server, &bob, "Bobby Builder").await;
    let room = create_room(&server, &alice, json!({})).await;
    crate::harness::invite(&server, &alice, &room, &bob.user_id).await;
    join(&server, &bob, &room).await;

    // By user id.
    let body = search_users(&server, &alice, json!({"search_term": "bob"})).await;
    assert_eq!(
        user_ids(&body),
        std::slice::from_ref(&bob.user_id),
        "{body}"
    );
    assert_eq!(
        body["results"][0]["display_name"], "Bobby Builder",
        "{body}"
    );
    assert_eq!(body["limited"], false, "{body}");
    // By display name, case-insensitively.
    let body = search_users(&server, &alice, json!({"search_term": "builder"})).await;
    assert_eq!(
        user_ids(&body),
        std::slice::from_ref(&bob.user_id),
        "{body}"
    );
}

#[tokio::test]
async fn user_directory_finds_a_user_in_a_public_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;
    create_room(
        &server,
        &carol,
        json!({"visibility": "public", "preset": "public_chat"}),
    )
    .await;
    let body = search_users(&server, &alice, json!({"search_term": "carol"})).await;
    assert_eq!(
        user_ids(&body),
        std::slice::from_ref(&carol.user_id),
        "{body}"
    );
}

#[tokio::test]
async fn user_directory_hides_users_sharing_nothing() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let dave = server.user("dave").await;
    create_room(&server, &alice, json!({})).await;
    // dave is alone in a private room.
    create_room(&server, &dave, json!({})).await;
    let body = search_users(&server, &alice, json!({"search_term": "dave"})).await;
    assert_eq!(body["results"], json!([]), "{body}");
    assert_eq!(body["limited"], false, "{body}");
    // And a user in no room at all.
    server.user("erin").await;
    let body = search_users(&server, &alice, json!({"search_term": "erin"})).await;
    assert_eq!(body["results"], json!([]), "{body}");
}

#[tokio::test]
async fn user_directory_limit_sets_limited() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let u1 = server.user("member1").await;
    let u2 = server.user("member2").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &u1, &room).await;
    join(&server, &u2, &room).await;

    let body = search_users(
        &server,
        &alice,
        json!({"search_term": "member", "limit": 1}),
    )
    .await;
    assert_eq!(body["results"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["limited"], true, "{body}");

    let body = search_users(
        &server,
        &alice,
        json!({"search_term": "member", "limit": 10}),
    )
    .await;
    let mut ids = user_ids(&body);
    ids.sort();
    assert_eq!(ids, [u1.user_id.clone(), u2.user_id.clone()], "{body}");
    assert_eq!(body["limited"], false, "{body}");
}

#[tokio::test]
async fn user_directory_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    assert_error(
        &server
            .post(
                "/_matrix/client/v3/user_directory/search",
                None,
                json!({"search_term": "x"}),
            )
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .post(
                "/_matrix/client/v3/user_directory/search",
                alice.token(),
                json!({}),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
}

// ---------------------------------------------------------------------------
// /relations
// ---------------------------------------------------------------------------

#[tokio::test]
async fn relations_all_and_filtered() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, root, reaction, thread1, thread2) = relation_room(&server, &alice, &bob).await;

    let body = relations(&server, &alice, &relations_path(&room, &root, "")).await;
    assert_eq!(
        event_ids(&body["chunk"]),
        [thread2.clone(), thread1.clone(), reaction.clone()],
        "newest first: {body}"
    );
    assert!(body.get("next_batch").is_none_or(Value::is_null), "{body}");
    let first = &body["chunk"][0];
    assert_eq!(first["type"], "m.room.message", "{first}");
    assert_eq!(first["content"]["body"], "t2", "{first}");
    assert_eq!(first["room_id"], room.as_str(), "{first}");

    let body = relations(&server, &bob, &relations_path(&room, &root, "/m.thread")).await;
    assert_eq!(
        event_ids(&body["chunk"]),
        [thread2.clone(), thread1.clone()],
        "{body}"
    );
    let body = relations(
        &server,
        &bob,
        &relations_path(&room, &root, "/m.annotation"),
    )
    .await;
    assert_eq!(
        event_ids(&body["chunk"]),
        std::slice::from_ref(&reaction),
        "{body}"
    );

    let body = relations(
        &server,
        &alice,
        &relations_path(&room, &root, "/m.annotation/m.reaction"),
    )
    .await;
    assert_eq!(
        event_ids(&body["chunk"]),
        std::slice::from_ref(&reaction),
        "{body}"
    );
    let body = relations(
        &server,
        &alice,
        &relations_path(&room, &root, "/m.thread/m.room.message"),
    )
    .await;
    assert_eq!(event_ids(&body["chunk"]), [thread2, thread1], "{body}");
    let body = relations(
        &server,
        &alice,
        &relations_path(&room, &root, "/m.thread/m.reaction"),
    )
    .await;
    assert_eq!(body["chunk"], json!([]), "{body}");

    // An event with no relations.
    let body = relations(&server, &alice, &relations_path(&room, &reaction, "")).await;
    assert_eq!(body["chunk"], json!([]), "{body}");
}

#[tokio::test]
async fn relations_paging_with_limit() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, root, reaction, thread1, thread2) = relation_room(&server, &alice, &bob).await;

    let body = relations(
        &server,
        &alice,
        &format!("{}?limit=2", relations_path(&room, &root, "")),
    )
    .await;
    assert_eq!(
        event_ids(&body["chunk"]),
        [thread2.clone(), thread1.clone()],
        "{body}"
    );
    let next = body["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("next_batch: {body}"))
        .to_owned();
    let body = relations(
        &server,
        &alice,
        &format!(
            "{}?limit=2&from={}",
            relations_path(&room, &root, ""),
            enc(&next)
        ),
    )
    .await;
    assert_eq!(event_ids(&body["chunk"]), [reaction], "{body}");
    assert!(body.get("next_batch").is_none_or(Value::is_null), "{body}");

    // Paging within one rel_type.
    let body = relations(
        &server,
        &alice,
        &format!("{}?limit=1", relations_path(&room, &root, "/m.thread")),
    )
    .await;
    assert_eq!(event_ids(&body["chunk"]), [thread2], "{body}");
    let next = body["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("next_batch: {body}"))
        .to_owned();
    let body = relations(
        &server,
        &alice,
        &format!(
            "{}?limit=1&from={}",
            relations_path(&room, &root, "/m.thread"),
            enc(&next)
        ),
    )
    .await;
    assert_eq!(event_ids(&body["chunk"]), [thread1], "{body}");
    assert!(body.get("next_batch").is_none_or(Value::is_null), "{body}");
}

#[tokio::test]
async fn relations_forward_direction_is_oldest_first() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, root, reaction, thread1, thread2) = relation_room(&server, &alice, &bob).await;

    let body = relations(
        &server,
        &alice,
        &format!("{}?dir=f", relations_path(&room, &root, "")),
    )
    .await;
    assert_eq!(
        event_ids(&body["chunk"]),
        [reaction.clone(), thread1.clone(), thread2],
        "{body}"
    );
    // With a limit, dir=f starts at the oldest relation.
    let body = relations(
        &server,
        &alice,
        &format!("{}?dir=f&limit=2", relations_path(&room, &root, "")),
    )
    .await;
    assert_eq!(event_ids(&body["chunk"]), [reaction, thread1], "{body}");
}

#[tokio::test]
async fn relations_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (room, root, ..) = relation_room(&server, &alice, &bob).await;

    assert_error(
        &server
            .get(&relations_path(&room, "$doesnotexist", ""), alice.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    // An event of another room.
    let other = create_room(&server, &alice, json!({})).await;
    let foreign = send_text(&server, &alice, &other, "elsewhere").await;
    assert_error(
        &server
            .get(&relations_path(&room, &foreign, ""), alice.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    // carol is not in the room.
    assert_error(
        &server
            .get(&relations_path(&room, &root, ""), carol.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .get(&relations_path(&room, &root, "/m.thread"), carol.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&relations_path(&room, &root, ""), None).await,
        401,
        "M_MISSING_TOKEN",
    );
}

/// Redaction strips `m.relates_to`, so a redacted reaction no longer relates
/// to anything and is not listed (Synapse drops the relation on redaction).
#[tokio::test]
async fn relations_exclude_redacted_events() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (room, root, reaction, thread1, thread2) = relation_room(&server, &alice, &bob).await;
    let (st, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/undo-reaction",
                enc(&room),
                enc(&reaction)
            ),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let body = relations(&server, &alice, &relations_path(&room, &root, "")).await;
    assert_eq!(event_ids(&body["chunk"]), [thread2, thread1], "{body}");
    let body = relations(
        &server,
        &alice,
        &relations_path(&room, &root, "/m.annotation"),
    )
    .await;
    assert_eq!(body["chunk"], json!([]), "{body}");
}
