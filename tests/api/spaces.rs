//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: the walk's order and
//! depth, the chunks' shape, paging, `suggested_only`, who sees which room,
//! cycles, children without `via`, and the errors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

async fn try_hierarchy(
    server: &TestServer,
    who: &Session,
    room: &str,
    query: &str,
) -> (StatusCode, Value) {
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{}/hierarchy?{query}", enc(room)),
            who.token(),
        )
        .await
}

async fn hierarchy(server: &TestServer, who: &Session, room: &str, query: &str) -> Value {
    let (st, b) = try_hierarchy(server, who, room, query).await;
    assert_eq!(st, StatusCode::OK, "hierarchy of {room} ?{query}: {b}");
    b
}

/// The room ids of a hierarchy page, in order.
fn ids(page: &Value) -> Vec<String> {
    field_of_each(&page["rooms"], "room_id")
}

/// A public space named `name`.
async fn space(server: &TestServer, who: &Session, name: &str) -> String {
    create_room(
        server,
        who,
        json!({"preset": "public_chat", "name": name, "creation_content": {"type": "m.space"}}),
    )
    .await
}

/// A public room named `name`.
async fn public_room(server: &TestServer, who: &Session, name: &str) -> String {
    create_room(server, who, json!({"preset": "public_chat", "name": name})).await
}

/// Makes `child` a child of `parent` (`via` this server), with `extra`
/// content keys.
async fn add_child(server: &TestServer, who: &Session, parent: &str, child: &str, extra: Value) {
    let mut content = json!({"via": [server.server_name]});
    if let Value::Object(extra) = extra {
        content.as_object_mut().expect("object").extend(extra);
    }
    set_state(server, who, parent, "m.space.child", child, content).await;
}

fn chunk<'a>(page: &'a Value, room: &str) -> &'a Value {
    page["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["room_id"] == room)
        .unwrap_or_else(|| panic!("{room} not in {page}"))
}

#[tokio::test]
async fn hierarchy_walks_depth_first_in_spec_order() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let root = space(&server, &alice, "Root").await;
    let a = public_room(&server, &alice, "A").await;
    let b = public_room(&server, &alice, "B").await;
    let sub = space(&server, &alice, "Sub").await;
    let d = public_room(&server, &alice, "D").await;
    join(&server, &bob, &a).await;
    set_state(
        &server,
        &alice,
        &a,
        "m.room.topic",
        "",
        json!({"topic": "all about A"}),
    )
    .await;
    // Order: a valid `order` first (lexicographic), then the rest by the
    // child event's timestamp.
    add_child(&server, &alice, &root, &a, json!({"order": "b"})).await;
    add_child(&server, &alice, &root, &sub, json!({})).await;
    add_child(&server, &alice, &root, &b, json!({"order": "a"})).await;
    add_child(&server, &alice, &sub, &d, json!({})).await;

    let page = hierarchy(&server, &bob, &root, "").await;
    assert_eq!(
        ids(&page),
        vec![root.clone(), b.clone(), a.clone(), sub.clone(), d.clone()]
    );
    assert!(page.get("next_batch").is_none(), "{page}");

    let top = chunk(&page, &root);
    assert_eq!(top["name"], "Root");
    assert_eq!(top["room_type"], "m.space");
    assert_eq!(top["num_joined_members"], 1);
    assert_eq!(top["world_readable"], false);
    assert_eq!(top["guest_can_join"], false);
    // A public room's join rule may be left out (the spec's default).
    assert!(top.get("join_rule").is_none_or(|j| j == "public"), "{top}");
    let children = top["children_state"].as_array().expect("children_state");
    assert_eq!(children.len(), 3, "{top}");
    for child in children {
        assert_eq!(child["type"], "m.space.child");
        assert_eq!(child["sender"], alice.user_id.as_str());
        assert!(child["origin_server_ts"].is_u64(), "{child}");
        assert_eq!(child["content"]["via"], json!([server.server_name]));
        assert!(child.get("event_id").is_none(), "stripped: {child}");
    }
    let room_a = chunk(&page, &a);
    assert_eq!(room_a["name"], "A");
    assert_eq!(room_a["topic"], "all about A");
    assert_eq!(room_a["num_joined_members"], 2);
    assert!(room_a.get("room_type").is_none(), "{room_a}");
    assert_eq!(room_a["children_state"], json!([]));
    assert_eq!(
        chunk(&page, &sub)["children_state"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // max_depth: 0 is the root alone, 1 stops above D.
    let page = hierarchy(&server, &bob, &root, "max_depth=0").await;
    assert_eq!(ids(&page), vec![root.clone()]);
    // The root still lists its children.
    assert_eq!(
        chunk(&page, &root)["children_state"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let page = hierarchy(&server, &bob, &root, "max_depth=1").await;
    assert_eq!(
        ids(&page),
        vec![root.clone(), b.clone(), a.clone(), sub.clone()]
    );

    // A sub-space as the root.
    let page = hierarchy(&server, &bob, &sub, "").await;
    assert_eq!(ids(&page), vec![sub, d]);
}

#[tokio::test]
async fn hierarchy_pages_with_from_and_limit() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let root = space(&server, &alice, "Root").await;
    let mut rooms = Vec::new();
    for i in 0..5 {
        let room = public_room(&server, &alice, &format!("R{i}")).await;
        add_child(
            &server,
            &alice,
            &root,
            &room,
            json!({"order": format!("{i}")}),
        )
        .await;
        rooms.push(room);
    }
    let mut all = vec![root.clone()];
    all.extend(rooms.iter().cloned());

    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = hierarchy(&server, &alice, &root, &query).await;
        let got = ids(&page);
        assert!(got.len() <= 2, "{page}");
        seen.extend(got);
        pages += 1;
        match page["next_batch"].as_str() {
            Some(token) => query = format!("limit=2&from={}", enc(token)),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, all);
    assert_eq!(pages, 3);

    // A token used with other parameters, or a made-up one: 400.
    let first = hierarchy(&server, &alice, &root, "limit=2").await;
    let token = first["next_batch"].as_str().expect("next_batch").to_owned();
    assert_error(
        &try_hierarchy(
            &server,
            &alice,
            &root,
            &format!("from={}&suggested_only=true", enc(&token)),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &try_hierarchy(
            &server,
            &alice,
            &root,
            &format!("from={}&max_depth=1", enc(&token)),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &try_hierarchy(&server, &alice, &rooms[0], &format!("from={}", enc(&token))).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &try_hierarchy(&server, &alice, &root, "from=garbage").await,
        400,
        "M_INVALID_PARAM",
    );
    // limit must be positive.
    assert_error(
        &try_hierarchy(&server, &alice, &root, "limit=0").await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn hierarchy_suggested_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let root = space(&server, &alice, "Root").await;
    let suggested = public_room(&server, &alice, "S").await;
    let other = public_room(&server, &alice, "O").await;
    add_child(
        &server,
        &alice,
        &root,
        &suggested,
        json!({"suggested": true}),
    )
    .await;
    add_child(&server, &alice, &root, &other, json!({"suggested": false})).await;

    let page = hierarchy(&server, &alice, &root, "suggested_only=true").await;
    assert_eq!(ids(&page), vec![root.clone(), suggested.clone()]);
    let kids = &chunk(&page, &root)["children_state"];
    assert_eq!(field_of_each(kids, "state_key"), vec![suggested.clone()]);

    let page = hierarchy(&server, &alice, &root, "").await;
    assert_eq!(set(ids(&page)), set([root, suggested, other]));
}

#[tokio::test]
async fn hierarchy_shows_only_rooms_the_user_may_see() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let root = space(&server, &alice, "Root").await;
    let public = public_room(&server, &alice, "public").await;
    let private = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let invited = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let readable = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    set_history_visibility(&server, &alice, &readable, "world_readable").await;
    let knockable =
        room_with_join_rules(&server, &alice, "10", json!({"join_rule": "knock"})).await;
    let allow = json!([{"type": "m.room_membership", "room_id": root}]);
    let restricted = room_with_join_rules(
        &server,
        &alice,
        "10",
        json!({"join_rule": "restricted", "allow": allow}),
    )
    .await;
    // A private sub-space with a public room under it: hidden with it.
    let hidden_space = create_space(&server, &alice, "private_chat").await;
    let under_hidden = public_room(&server, &alice, "under hidden").await;
    add_child(&server, &alice, &hidden_space, &under_hidden, json!({})).await;
    invite(&server, &alice, &invited, &bob.user_id).await;
    for child in [
        &public,
        &private,
        &invited,
        &readable,
        &knockable,
        &restricted,
        &hidden_space,
    ] {
        add_child(&server, &alice, &root, child, json!({})).await;
    }

    // Bob is not in the root space (it is public): the restricted room is
    // hidden from him until he joins the space.
    let page = hierarchy(&server, &bob, &root, "").await;
    assert_eq!(
        set(ids(&page)),
        set([&root, &public, &invited, &readable, &knockable])
    );
    assert_eq!(chunk(&page, &readable)["world_readable"], true);
    assert_eq!(chunk(&page, &knockable)["join_rule"], "knock");
    // children_state lists every child, seen or not.
    assert_eq!(
        chunk(&page, &root)["children_state"]
            .as_array()
            .map(Vec::len),
        Some(7)
    );

    join(&server, &bob, &root).await;
    let page = hierarchy(&server, &bob, &root, "").await;
    assert!(ids(&page).contains(&restricted), "{page}");
    let r = chunk(&page, &restricted);
    assert_eq!(r["join_rule"], "restricted");
    assert_eq!(r["allowed_room_ids"], json!([root]));

    // Alice, in every room, sees them all.
    let page = hierarchy(&server, &alice, &root, "").await;
    assert_eq!(page["rooms"].as_array().map(Vec::len), Some(9), "{page}");

    // A root the user may not see is 403; so is an unknown one.
    assert_error(
        &try_hierarchy(&server, &bob, &hidden_space, "").await,
        403,
        "M_FORBIDDEN",
    );
    let unknown = format!("!nowhere:{}", server.server_name);
    assert_error(
        &try_hierarchy(&server, &bob, &unknown, "").await,
        403,
        "M_FORBIDDEN",
    );
    // Unauthenticated: 401.
    let (st, _) = server
        .get(
            &format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&root)),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hierarchy_survives_cycles_and_skips_bad_children() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let a = space(&server, &alice, "A").await;
    let b = space(&server, &alice, "B").await;
    add_child(&server, &alice, &a, &b, json!({})).await;
    add_child(&server, &alice, &b, &a, json!({})).await;
    // A self-reference, a room of another server (not known here), an
    // unknown local room, and a child without via.
    add_child(&server, &alice, &b, &b, json!({})).await;
    add_child(&server, &alice, &a, "!remote:elsewhere.example", json!({})).await;
    let unknown = format!("!gone:{}", server.server_name);
    add_child(&server, &alice, &a, &unknown, json!({})).await;
    let no_via = public_room(&server, &alice, "no via").await;
    set_state(
        &server,
        &alice,
        &a,
        "m.space.child",
        &no_via,
        json!({"via": []}),
    )
    .await;
    let removed = public_room(&server, &alice, "removed").await;
    set_state(&server, &alice, &a, "m.space.child", &removed, json!({})).await;

    let page = hierarchy(&server, &alice, &a, "").await;
    assert_eq!(ids(&page), vec![a.clone(), b.clone()]);
    // Children without via are not listed.
    let listed = field_of_each(&chunk(&page, &a)["children_state"], "state_key");
    assert_eq!(
        set(&listed),
        set([&b, &"!remote:elsewhere.example".to_owned(), &unknown])
    );
    let page = hierarchy(&server, &alice, &b, "").await;
    assert_eq!(ids(&page), vec![b, a]);
}

#[tokio::test]
async fn hierarchy_of_a_plain_room_has_no_children_and_guests_may_ask() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    // A room that is not a space: its m.space.child events are not followed
    // (as Synapse), and it lists none.
    let plain = public_room(&server, &alice, "plain").await;
    let other = public_room(&server, &alice, "other").await;
    add_child(&server, &alice, &plain, &other, json!({})).await;
    let page = hierarchy(&server, &alice, &plain, "").await;
    assert_eq!(ids(&page), vec![plain.clone()]);
    assert_eq!(chunk(&page, &plain)["children_state"], json!([]));

    // Guests may walk a space they can see.
    let root = space(&server, &alice, "Root").await;
    add_child(&server, &alice, &root, &other, json!({})).await;
    let guest = server.guest().await;
    let page = hierarchy(&server, &guest, &root, "").await;
    assert_eq!(ids(&page), vec![root, other]);
}
