//! Account data (global and per room), tags, push rules (the ruleset in sync,
//! the per-rule endpoints) and unread notification counts.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn global_path(user: &str, ty: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/account_data/{}",
        enc(user),
        enc(ty)
    )
}

fn room_data_path(user: &str, room: &str, ty: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/{}",
        enc(user),
        enc(room),
        enc(ty)
    )
}

fn tags_path(user: &str, room: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/tags",
        enc(user),
        enc(room)
    )
}

fn tag_path(user: &str, room: &str, tag: &str) -> String {
    format!("{}/{}", tags_path(user, room), enc(tag))
}

fn rule_path(kind: &str, rule: &str) -> String {
    format!(
        "/_matrix/client/v3/pushrules/global/{}/{}",
        enc(kind),
        enc(rule)
    )
}

fn find_rule<'a>(ruleset: &'a Value, kind: &str, id: &str) -> Option<&'a Value> {
    ruleset[kind]
        .as_array()?
        .iter()
        .find(|r| r["rule_id"] == id)
}

/// GET /pushrules/ -> the `global` ruleset.
async fn ruleset(server: &TestServer, who: &Session) -> Value {
    let (st, body) = server
        .get("/_matrix/client/v3/pushrules/", who.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["global"].clone()
}

fn keyword_rule(pattern: &str) -> Value {
    json!({
        "conditions": [{"kind": "event_match", "key": "content.body", "pattern": pattern}],
        "actions": ["notify"]
    })
}

/// rooms.join[room].unread_notifications of an initial sync.
async fn unread(server: &TestServer, who: &Session, room: &str) -> (u64, u64) {
    let body = sync(server, who, "timeout=0").await;
    let counts = &joined_room(&body, room)["unread_notifications"];
    (
        counts["notification_count"]
            .as_u64()
            .unwrap_or_else(|| panic!("notification_count: {counts}")),
        counts["highlight_count"]
            .as_u64()
            .unwrap_or_else(|| panic!("highlight_count: {counts}")),
    )
}

/// alice's public room with bob joined.
async fn room_with_bob(server: &TestServer, alice: &Session, bob: &Session) -> String {
    let room = create_room(server, alice, json!({"preset": "public_chat"})).await;
    join(server, bob, &room).await;
    room
}

// ---------------------------------------------------------------------------
// Global account data
// ---------------------------------------------------------------------------

#[tokio::test]
async fn global_account_data_round_trip() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = global_path(&alice.user_id, "org.example.custom");

    let (st, body) = server
        .put(
            &path,
            alice.token(),
            json!({"a": 1, "nested": {"b": [1, 2]}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}), "PUT answers an empty object");
    let (st, body) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"a": 1, "nested": {"b": [1, 2]}}));

    // A second PUT replaces the content.
    let (st, _) = server.put(&path, alice.token(), json!({"c": true})).await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = server.get(&path, alice.token()).await;
    assert_eq!(body, json!({"c": true}));

    // The r0 path reads the same data.
    let r0 = path.replace("/v3/", "/r0/");
    let (st, body) = server.get(&r0, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"c": true}));
}

#[tokio::test]
async fn global_account_data_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let path = global_path(&alice.user_id, "org.example.custom");

    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
    server.put(&path, alice.token(), json!({"a": 1})).await;

    assert_error(&server.get(&path, bob.token()).await, 403, "M_FORBIDDEN");
    assert_error(
        &server.put(&path, bob.token(), json!({"evil": 1})).await,
        403,
        "M_FORBIDDEN",
    );
    // bob's attempt changed nothing.
    let (_, body) = server.get(&path, alice.token()).await;
    assert_eq!(body, json!({"a": 1}));

    assert_error(
        &server.put(&path, alice.token(), json!([1, 2])).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server.put(&path, alice.token(), json!("text")).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .request_raw(Method::PUT, &path, alice.token(), "{not json")
            .await,
        400,
        "M_NOT_JSON",
    );
    // Push rules are changed through /pushrules only.
    assert_error(
        &server
            .put(
                &global_path(&alice.user_id, "m.push_rules"),
                alice.token(),
                json!({"global": {}}),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(&server.get(&path, None).await, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn global_account_data_appears_in_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t1 = sync_token(&server, &alice).await;

    let (st, _) = server
        .put(
            &global_path(&alice.user_id, "org.example.custom"),
            alice.token(),
            json!({"k": "v1"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    let body = sync_since(&server, &alice, &t1).await;
    let ev = event_of_type(&body["account_data"]["events"], "org.example.custom")
        .unwrap_or_else(|| panic!("not in account_data: {body}"));
    assert_eq!(ev["content"], json!({"k": "v1"}), "{ev}");
    // An incremental sync carries only what changed.
    assert!(
        event_of_type(&body["account_data"]["events"], "m.push_rules").is_none(),
        "unchanged push rules in an incremental sync: {body}"
    );

    // Nothing new: not repeated.
    let t2 = next_batch(&body);
    let body = sync_since(&server, &alice, &t2).await;
    assert!(
        event_of_type(&body["account_data"]["events"], "org.example.custom").is_none(),
        "{body}"
    );

    // A change shows the new content; an initial sync has it too.
    server
        .put(
            &global_path(&alice.user_id, "org.example.custom"),
            alice.token(),
            json!({"k": "v2"}),
        )
        .await;
    let body = sync_since(&server, &alice, &t2).await;
    let ev = event_of_type(&body["account_data"]["events"], "org.example.custom")
        .unwrap_or_else(|| panic!("not in account_data: {body}"));
    assert_eq!(ev["content"], json!({"k": "v2"}));
    let body = sync(&server, &alice, "timeout=0").await;
    let ev = event_of_type(&body["account_data"]["events"], "org.example.custom")
        .unwrap_or_else(|| panic!("not in initial account_data: {body}"));
    assert_eq!(ev["content"], json!({"k": "v2"}));
}

#[tokio::test]
async fn global_account_data_wakes_a_long_poll() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t1 = sync_token(&server, &alice).await;

    let started = std::time::Instant::now();
    let poll = spawn_poll(&server, &alice, &t1, 10000);
    server.wait_for_parked_syncs(1).await;
    server
        .put(
            &global_path(&alice.user_id, "org.example.wake"),
            alice.token(),
            json!({"x": 1}),
        )
        .await;
    let (_, body, done) = tokio::time::timeout(std::time::Duration::from_secs(15), poll)
        .await
        .expect("long-poll finishes")
        .unwrap();
    let elapsed = done.duration_since(started);
    assert!(
        elapsed < std::time::Duration::from_secs(4),
        "took {elapsed:?}"
    );
    assert!(
        event_of_type(&body["account_data"]["events"], "org.example.wake").is_some(),
        "{body}"
    );
}

// ---------------------------------------------------------------------------
// Room account data
// ---------------------------------------------------------------------------

#[tokio::test]
async fn room_account_data_round_trip() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let other = create_room(&server, &alice, json!({})).await;
    let path = room_data_path(&alice.user_id, &room, "org.example.room");

    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
    let (st, body) = server.put(&path, alice.token(), json!({"r": 1})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"r": 1}));

    // Scoped to the room: not global, not another room.
    assert_error(
        &server
            .get(
                &global_path(&alice.user_id, "org.example.room"),
                alice.token(),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .get(
                &room_data_path(&alice.user_id, &other, "org.example.room"),
                alice.token(),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // And global data of the same type does not leak into the room.
    server
        .put(
            &global_path(&alice.user_id, "org.example.global"),
            alice.token(),
            json!({"g": 1}),
        )
        .await;
    assert_error(
        &server
            .get(
                &room_data_path(&alice.user_id, &room, "org.example.global"),
                alice.token(),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn room_account_data_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    let path = room_data_path(&alice.user_id, &room, "org.example.room");
    server.put(&path, alice.token(), json!({"r": 1})).await;

    assert_error(&server.get(&path, bob.token()).await, 403, "M_FORBIDDEN");
    assert_error(
        &server.put(&path, bob.token(), json!({"r": 2})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.put(&path, alice.token(), json!([1])).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .put(
                &room_data_path(&alice.user_id, &room, "m.push_rules"),
                alice.token(),
                json!({"global": {}}),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    let unknown = format!("!doesnotexist:{}", server.server_name);
    assert_error(
        &server
            .put(
                &room_data_path(&alice.user_id, &unknown, "org.example.room"),
                alice.token(),
                json!({"r": 1}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    let (_, body) = server.get(&path, alice.token()).await;
    assert_eq!(body, json!({"r": 1}), "failed writes changed nothing");
}

#[tokio::test]
async fn room_account_data_appears_in_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let quiet = create_room(&server, &alice, json!({})).await;
    let t1 = sync_token(&server, &alice).await;

    server
        .put(
            &room_data_path(&alice.user_id, &room, "org.example.room"),
            alice.token(),
            json!({"r": "x"}),
        )
        .await;
    let body = sync_since(&server, &alice, &t1).await;
    let r = joined_room(&body, &room);
    let ev = event_of_type(&r["account_data"]["events"], "org.example.room")
        .unwrap_or_else(|| panic!("not in room account_data: {r}"));
    assert_eq!(ev["content"], json!({"r": "x"}));
    assert!(
        event_of_type(&body["account_data"]["events"], "org.example.room").is_none(),
        "room data in the global section: {body}"
    );
    assert!(
        body["rooms"]["join"].get(&quiet).is_none(),
        "unchanged room in an incremental sync: {body}"
    );

    // An initial sync has it in the room too.
    let body = sync(&server, &alice, "timeout=0").await;
    let r = joined_room(&body, &room);
    assert!(
        event_of_type(&r["account_data"]["events"], "org.example.room").is_some(),
        "{r}"
    );
}

// ---------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tags_put_get_delete() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let tags = tags_path(&alice.user_id, &room);

    let (st, body) = server.get(&tags, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"tags": {}}));

    let (st, body) = server
        .put(
            &tag_path(&alice.user_id, &room, "u.work"),
            alice.token(),
            json!({"order": 0.5}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server
        .put(
            &tag_path(&alice.user_id, &room, "m.favourite"),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let (_, body) = server.get(&tags, alice.token()).await;
    let t = body["tags"].as_object().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(t.len(), 2, "{body}");
    assert_eq!(body["tags"]["u.work"]["order"], 0.5, "{body}");
    assert!(body["tags"]["m.favourite"].is_object(), "{body}");

    // Stored as the room account data m.tag.
    let (st, data) = server
        .get(
            &room_data_path(&alice.user_id, &room, "m.tag"),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{data}");
    assert_eq!(data["tags"]["u.work"]["order"], 0.5, "{data}");

    // Changing a tag's order replaces it.
    server
        .put(
            &tag_path(&alice.user_id, &room, "u.work"),
            alice.token(),
            json!({"order": 0.25}),
        )
        .await;
    let (_, body) = server.get(&tags, alice.token()).await;
    assert_eq!(body["tags"]["u.work"]["order"], 0.25, "{body}");

    let (st, body) = server
        .delete(
            &tag_path(&alice.user_id, &room, "u.work"),
            alice.token(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, body) = server.get(&tags, alice.token()).await;
    assert!(body["tags"].get("u.work").is_none(), "{body}");
    assert!(body["tags"]["m.favourite"].is_object(), "{body}");
}

#[tokio::test]
async fn tags_of_another_user_are_forbidden() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    server
        .put(
            &tag_path(&alice.user_id, &room, "u.work"),
            alice.token(),
            json!({}),
        )
        .await;

    assert_error(
        &server
            .get(&tags_path(&alice.user_id, &room), bob.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .put(
                &tag_path(&alice.user_id, &room, "u.evil"),
                bob.token(),
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .delete(
                &tag_path(&alice.user_id, &room, "u.work"),
                bob.token(),
                None,
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    let (_, body) = server
        .get(&tags_path(&alice.user_id, &room), alice.token())
        .await;
    assert_eq!(body, json!({"tags": {"u.work": {}}}));
}

#[tokio::test]
async fn tags_appear_in_sync_as_m_tag() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let t1 = sync_token(&server, &alice).await;

    server
        .put(
            &tag_path(&alice.user_id, &room, "u.work"),
            alice.token(),
            json!({"order": 0.5}),
        )
        .await;
    let body = sync_since(&server, &alice, &t1).await;
    let r = joined_room(&body, &room);
    let ev = event_of_type(&r["account_data"]["events"], "m.tag")
        .unwrap_or_else(|| panic!("no m.tag: {r}"));
    assert_eq!(ev["content"]["tags"]["u.work"]["order"], 0.5, "{ev}");

    // Deleting shows the smaller set.
    let t2 = next_batch(&body);
    server
        .delete(
            &tag_path(&alice.user_id, &room, "u.work"),
            alice.token(),
            None,
        )
        .await;
    let body = sync_since(&server, &alice, &t2).await;
    let r = joined_room(&body, &room);
    let ev = event_of_type(&r["account_data"]["events"], "m.tag")
        .unwrap_or_else(|| panic!("no m.tag after delete: {r}"));
    assert_eq!(ev["content"], json!({"tags": {}}), "{ev}");
}

// ---------------------------------------------------------------------------
// Push rules
// ---------------------------------------------------------------------------

#[tokio::test]
async fn initial_sync_has_push_rules() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let body = sync(&server, &alice, "timeout=0").await;
    let ev = event_of_type(&body["account_data"]["events"], "m.push_rules")
        .unwrap_or_else(|| panic!("no m.push_rules in account_data: {body}"));
    let global = &ev["content"]["global"];
    for kind in ["override", "content", "room", "sender", "underride"] {
        assert!(global[kind].is_array(), "{kind}: {ev}");
    }
    assert_eq!(
        rule_ids(global, "override").first().map(String::as_str),
        Some(".m.rule.master"),
        "{ev}"
    );
    assert!(
        rule_ids(global, "underride")
            .iter()
            .any(|r| r == ".m.rule.message"),
        "{ev}"
    );
    // The same ruleset as GET /pushrules/.
    assert_eq!(global, &ruleset(&server, &alice).await);
}

#[tokio::test]
async fn push_rule_room_rule_create_get_delete() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let path = rule_path("room", &room);

    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
    let (st, body) = server
        .put(&path, alice.token(), json!({"actions": ["dont_notify"]}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let (st, rule) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{rule}");
    assert_eq!(rule["rule_id"], room.as_str(), "{rule}");
    assert_eq!(rule["enabled"], true, "{rule}");
    assert_eq!(rule["default"], false, "{rule}");
    assert_eq!(rule["actions"], json!(["dont_notify"]), "{rule}");

    let rules = ruleset(&server, &alice).await;
    assert!(find_rule(&rules, "room", &room).is_some(), "{rules}");
    // The r0 path sees the same rule.
    let (st, _) = server
        .get(&path.replace("/v3/", "/r0/"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK);

    let (st, body) = server.delete(&path, alice.token(), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
    let rules = ruleset(&server, &alice).await;
    assert!(find_rule(&rules, "room", &room).is_none(), "{rules}");
}

#[tokio::test]
async fn push_rules_are_per_user() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (st, body) = server
        .put(
            &rule_path("override", "alices.rule"),
            alice.token(),
            keyword_rule("cake"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server
            .get(&rule_path("override", "alices.rule"), bob.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    let rules = ruleset(&server, &bob).await;
    assert!(find_rule(&rules, "override", "alices.rule").is_none());
}

#[tokio::test]
async fn push_rule_override_before_and_after() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;

    let (st, body) = server
        .put(
            &rule_path("override", "o1"),
            alice.token(),
            keyword_rule("one"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server
        .put(
            &format!("{}?before=o1", rule_path("override", "o2")),
            alice.token(),
            keyword_rule("two"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server
        .put(
            &format!("{}?after=o1", rule_path("override", "o3")),
            alice.token(),
            keyword_rule("three"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let rules = ruleset(&server, &alice).await;
    let ids = rule_ids(&rules, "override");
    let mine: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| !id.starts_with('.'))
        .collect();
    assert_eq!(mine, ["o2", "o1", "o3"], "{ids:?}");
    assert_eq!(ids[0], ".m.rule.master", "master stays first: {ids:?}");

    let o1 = find_rule(&rules, "override", "o1").unwrap();
    assert_eq!(o1["default"], false, "{o1}");
    assert_eq!(o1["enabled"], true, "{o1}");
    assert_eq!(o1["actions"], json!(["notify"]), "{o1}");
    assert_eq!(
        o1["conditions"],
        json!([{"kind": "event_match", "key": "content.body", "pattern": "one"}]),
        "{o1}"
    );

    // GET /pushrules/global/ is the same ruleset.
    let (st, global) = server
        .get("/_matrix/client/v3/pushrules/global/", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{global}");
    assert_eq!(rule_ids(&global, "override"), ids);
}

#[tokio::test]
async fn push_rule_content_rule_has_its_pattern() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (st, body) = server
        .put(
            &rule_path("content", "kw"),
            alice.token(),
            json!({"pattern": "pineapple", "actions": ["notify", {"set_tweak": "highlight"}]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, rule) = server.get(&rule_path("content", "kw"), alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{rule}");
    assert_eq!(rule["pattern"], "pineapple", "{rule}");
    assert_eq!(
        rule["actions"],
        json!(["notify", {"set_tweak": "highlight"}]),
        "{rule}"
    );
}

#[tokio::test]
async fn push_rule_enabled_and_actions() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server
        .put(
            &rule_path("override", "kw"),
            alice.token(),
            keyword_rule("x"),
        )
        .await;
    let enabled = format!("{}/enabled", rule_path("override", "kw"));
    let actions = format!("{}/actions", rule_path("override", "kw"));

    let (st, body) = server.get(&enabled, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"enabled": true}));
    let (st, body) = server
        .put(&enabled, alice.token(), json!({"enabled": false}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, body) = server.get(&enabled, alice.token()).await;
    assert_eq!(body, json!({"enabled": false}));
    let rules = ruleset(&server, &alice).await;
    assert_eq!(
        find_rule(&rules, "override", "kw").unwrap()["enabled"],
        false,
        "{rules}"
    );

    let (st, body) = server.get(&actions, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"actions": ["notify"]}));
    let new_actions = json!(["notify", {"set_tweak": "sound", "value": "default"}]);
    let (st, body) = server
        .put(&actions, alice.token(), json!({"actions": new_actions}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, body) = server.get(&actions, alice.token()).await;
    assert_eq!(body, json!({"actions": new_actions}));
    let rule = find_rule(&ruleset(&server, &alice).await, "override", "kw")
        .cloned()
        .unwrap();
    assert_eq!(rule["actions"], new_actions, "{rule}");
    assert_eq!(rule["enabled"], false, "actions PUT kept enabled: {rule}");

    // Re-PUTting the rule keeps it disabled (spec: enabled is not reset).
    server
        .put(
            &rule_path("override", "kw"),
            alice.token(),
            keyword_rule("y"),
        )
        .await;
    let (_, body) = server.get(&enabled, alice.token()).await;
    assert_eq!(body, json!({"enabled": false}));
}

#[tokio::test]
async fn push_rule_server_defaults_can_be_toggled() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let enabled = format!("{}/enabled", rule_path("override", ".m.rule.master"));
    let (_, body) = server.get(&enabled, alice.token()).await;
    assert_eq!(body, json!({"enabled": false}));
    let (st, body) = server
        .put(&enabled, alice.token(), json!({"enabled": true}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, body) = server.get(&enabled, alice.token()).await;
    assert_eq!(body, json!({"enabled": true}));
    let rules = ruleset(&server, &alice).await;
    let master = find_rule(&rules, "override", ".m.rule.master").unwrap();
    assert_eq!(master["enabled"], true, "{master}");
    assert_eq!(master["default"], true, "{master}");

    let actions = format!("{}/actions", rule_path("underride", ".m.rule.message"));
    let (st, body) = server
        .put(&actions, alice.token(), json!({"actions": []}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, body) = server.get(&actions, alice.token()).await;
    assert_eq!(body, json!({"actions": []}));
}

/// Every rule GET /pushrules/ lists can be read and toggled, including the
/// legacy mention rules the server adds to the ruleset (Element's settings
/// toggle "messages containing my display name / username").
#[tokio::test]
async fn push_rule_legacy_mention_rules_can_be_toggled() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let rules = ruleset(&server, &alice).await;
    for (kind, id) in [
        ("override", ".m.rule.contains_display_name"),
        ("content", ".m.rule.contains_user_name"),
    ] {
        if find_rule(&rules, kind, id).is_none() {
            continue; // not served: nothing to toggle
        }
        let enabled = format!("{}/enabled", rule_path(kind, id));
        let (st, body) = server.get(&enabled, alice.token()).await;
        assert_eq!(st, StatusCode::OK, "GET {id} enabled: {body}");
        let (st, body) = server
            .put(&enabled, alice.token(), json!({"enabled": false}))
            .await;
        assert_eq!(st, StatusCode::OK, "PUT {id} enabled: {body}");
        let (_, body) = server.get(&enabled, alice.token()).await;
        assert_eq!(body, json!({"enabled": false}), "{id}");
        let rules = ruleset(&server, &alice).await;
        assert_eq!(find_rule(&rules, kind, id).unwrap()["enabled"], false);
    }
}

#[tokio::test]
async fn push_rule_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server
        .put(
            &rule_path("override", "mine"),
            alice.token(),
            keyword_rule("x"),
        )
        .await;

    // Server-default ids cannot be created or deleted.
    let resp = server
        .put(
            &rule_path("override", ".my.rule"),
            alice.token(),
            keyword_rule("x"),
        )
        .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);
    assert!(resp.1["errcode"].is_string(), "{}", resp.1);
    assert_error(
        &server
            .delete(
                &rule_path("override", ".m.rule.master"),
                alice.token(),
                None,
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Relative to a server-default rule: 400.
    let resp = server
        .put(
            &format!("{}?after=.m.rule.master", rule_path("override", "r2")),
            alice.token(),
            keyword_rule("x"),
        )
        .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);
    // Relative to an unknown rule: 404.
    assert_error(
        &server
            .put(
                &format!("{}?before=nope", rule_path("override", "r3")),
                alice.token(),
                keyword_rule("x"),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Unknown rules.
    for (method, suffix) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::GET, "/enabled"),
        (Method::GET, "/actions"),
    ] {
        let path = format!("{}{suffix}", rule_path("override", "nope"));
        assert_error(
            &server
                .request(method.clone(), &path, alice.token(), None)
                .await,
            404,
            "M_NOT_FOUND",
        );
    }
    assert_error(
        &server
            .put(
                &format!("{}/enabled", rule_path("override", "nope")),
                alice.token(),
                json!({"enabled": false}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(
                &format!("{}/actions", rule_path("override", "nope")),
                alice.token(),
                json!({"actions": []}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // A rule of one kind is not found under another.
    assert_error(
        &server
            .get(&rule_path("underride", "mine"), alice.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Bad bodies.
    assert_error(
        &server
            .request_raw(
                Method::PUT,
                &rule_path("override", "r4"),
                alice.token(),
                "{oops",
            )
            .await,
        400,
        "M_NOT_JSON",
    );
    let resp = server
        .put(
            &format!("{}/enabled", rule_path("override", "mine")),
            alice.token(),
            json!({"enabled": "yes"}),
        )
        .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);
    // A room rule's id may be any string (sytest "Can add global push rule
    // for room" uses `#spam:example.com`, as Synapse accepts), but a room
    // rule needs its actions.
    let resp = server
        .put(&rule_path("room", "not-a-room"), alice.token(), json!({}))
        .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);
    // No token.
    assert_error(
        &server.get(&rule_path("override", "mine"), None).await,
        401,
        "M_MISSING_TOKEN",
    );

    // None of the failures changed the ruleset.
    let rules = ruleset(&server, &alice).await;
    let mine: Vec<String> = rule_ids(&rules, "override")
        .into_iter()
        .filter(|id| !id.starts_with(".m.rule."))
        .collect();
    assert_eq!(mine, ["mine"], "{rules}");
    assert!(
        find_rule(&rules, "override", ".m.rule.master").is_some(),
        "{rules}"
    );
}

#[tokio::test]
async fn push_rule_changes_appear_in_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t1 = sync_token(&server, &alice).await;

    server
        .put(
            &rule_path("override", "synced"),
            alice.token(),
            keyword_rule("sync"),
        )
        .await;
    let body = sync_since(&server, &alice, &t1).await;
    let ev = event_of_type(&body["account_data"]["events"], "m.push_rules")
        .unwrap_or_else(|| panic!("no m.push_rules after a change: {body}"));
    let global = &ev["content"]["global"];
    let rule = find_rule(global, "override", "synced").unwrap_or_else(|| panic!("{ev}"));
    assert_eq!(rule["enabled"], true, "{rule}");
    assert_eq!(rule["default"], false, "{rule}");

    let t2 = next_batch(&body);
    server
        .put(
            &format!("{}/enabled", rule_path("override", "synced")),
            alice.token(),
            json!({"enabled": false}),
        )
        .await;
    let body = sync_since(&server, &alice, &t2).await;
    let ev = event_of_type(&body["account_data"]["events"], "m.push_rules")
        .unwrap_or_else(|| panic!("no m.push_rules after enabled change: {body}"));
    assert_eq!(
        find_rule(&ev["content"]["global"], "override", "synced").unwrap()["enabled"],
        false,
        "{ev}"
    );

    let t3 = next_batch(&body);
    server
        .delete(&rule_path("override", "synced"), alice.token(), None)
        .await;
    let body = sync_since(&server, &alice, &t3).await;
    let ev = event_of_type(&body["account_data"]["events"], "m.push_rules")
        .unwrap_or_else(|| panic!("no m.push_rules after delete: {body}"));
    assert!(
        find_rule(&ev["content"]["global"], "override", "synced").is_none(),
        "{ev}"
    );
}

// ---------------------------------------------------------------------------
// Unread counts
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unread_counts_count_other_users_messages() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = room_with_bob(&server, &alice, &bob).await;
    assert_eq!(unread(&server, &bob, &room).await, (0, 0), "nothing yet");

    for i in 0..3 {
        send_text(&server, &alice, &room, &format!("hello {i}")).await;
    }
    assert_eq!(unread(&server, &bob, &room).await, (3, 0));
    // The sender's own messages do not count for her.
    assert_eq!(unread(&server, &alice, &room).await, (0, 0));

    // bob's own message does not count either.
    send_text(&server, &bob, &room, "me").await;
    assert_eq!(unread(&server, &bob, &room).await, (3, 0));
}

#[tokio::test]
async fn unread_counts_in_incremental_sync() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = room_with_bob(&server, &alice, &bob).await;
    let t1 = sync_token(&server, &bob).await;
    send_text(&server, &alice, &room, "one").await;
    send_text(&server, &alice, &room, "two").await;
    let body = sync_since(&server, &bob, &t1).await;
    let counts = &joined_room(&body, &room)["unread_notifications"];
    assert_eq!(counts["notification_count"], 2, "{counts}");
    assert_eq!(counts["highlight_count"], 0, "{counts}");
}

#[tokio::test]
async fn unread_counts_highlight_a_display_name_mention() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    // A display name unlike the user id, set before joining so the member
    // event carries it.
    set_displayname(&server, &bob, "Robert Tables").await;
    let room = room_with_bob(&server, &alice, &bob).await;

    send_text(&server, &alice, &room, "just chatting").await;
    assert_eq!(unread(&server, &bob, &room).await, (1, 0));
    send_text(&server, &alice, &room, "hey Robert Tables, look at this").await;
    let (notify, highlight) = unread(&server, &bob, &room).await;
    assert_eq!(notify, 2, "both messages notify");
    assert!(highlight >= 1, "the display-name mention highlights");
    assert_eq!(highlight, 1, "only the mention highlights");
}

#[tokio::test]
async fn unread_counts_highlight_an_intentional_mention() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = room_with_bob(&server, &alice, &bob).await;
    crate::harness::send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "see above",
               "m.mentions": {"user_ids": [bob.user_id]}}),
    )
    .await;
    assert_eq!(unread(&server, &bob, &room).await, (1, 1));
}

#[tokio::test]
async fn unread_counts_skip_notices_and_member_events() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = room_with_bob(&server, &alice, &bob).await;
    crate::harness::send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.notice", "body": "a bot speaks"}),
    )
    .await;
    join(&server, &carol, &room).await;
    assert_eq!(unread(&server, &bob, &room).await, (0, 0));
    send_text(&server, &carol, &room, "hi all").await;
    assert_eq!(unread(&server, &bob, &room).await, (1, 0));
}

#[tokio::test]
async fn unread_counts_reset_by_read_receipt() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = room_with_bob(&server, &alice, &bob).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
    }
    ids.push(send_text(&server, &alice, &room, "bob!").await);
    let (n, h) = unread(&server, &bob, &room).await;
    assert_eq!(n, 4);
    assert!(h >= 1, "mention of bob highlights: {h}");

    // A receipt in the middle counts only what is after it.
    post_receipt(&server, &bob, &room, "m.read", &ids[1]).await;
    let (n, _) = unread(&server, &bob, &room).await;
    assert_eq!(n, 2, "two messages after the receipt");

    post_receipt(&server, &bob, &room, "m.read", &ids[3]).await;
    assert_eq!(unread(&server, &bob, &room).await, (0, 0));

    // New messages count again from there.
    send_text(&server, &alice, &room, "later").await;
    assert_eq!(unread(&server, &bob, &room).await, (1, 0));
}

/// Counts carry over from one sync to the next (only new events are
/// evaluated), and a redaction takes its event out again.
#[tokio::test]
async fn unread_counts_follow_new_events_and_redactions() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = room_with_bob(&server, &alice, &bob).await;
    let first = send_text(&server, &alice, &room, "one").await;
    assert_eq!(unread(&server, &bob, &room).await, (1, 0));
    send_text(&server, &alice, &room, "two").await;
    assert_eq!(unread(&server, &bob, &room).await, (2, 0));
    send_text(&server, &alice, &room, "three, bob").await;
    assert_eq!(unread(&server, &bob, &room).await, (3, 1));
    let (st, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/unread-redact",
                enc(&room),
                enc(&first)
            ),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        unread(&server, &bob, &room).await,
        (2, 1),
        "the redacted message no longer counts"
    );
}

#[tokio::test]
async fn unread_counts_reset_by_private_read_receipt() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = room_with_bob(&server, &alice, &bob).await;
    send_text(&server, &alice, &room, "a").await;
    let last = send_text(&server, &alice, &room, "b").await;
    assert_eq!(unread(&server, &bob, &room).await.0, 2);
    post_receipt(&server, &bob, &room, "m.read.private", &last).await;
    assert_eq!(unread(&server, &bob, &room).await, (0, 0));
}

#[tokio::test]
async fn dont_notify_room_rule_mutes_the_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = room_with_bob(&server, &alice, &bob).await;
    let other = room_with_bob(&server, &alice, &bob).await;

    let (st, body) = server
        .put(
            &rule_path("room", &room),
            bob.token(),
            json!({"actions": ["dont_notify"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    send_text(&server, &alice, &room, "muted 1").await;
    send_text(&server, &alice, &room, "muted 2").await;
    send_text(&server, &alice, &other, "loud").await;
    assert_eq!(unread(&server, &bob, &room).await, (0, 0), "muted room");
    assert_eq!(unread(&server, &bob, &other).await, (1, 0), "other room");
    // Mentions (override and content rules) still get through.
    send_text(&server, &alice, &room, "bob, a word please").await;
    assert_eq!(
        unread(&server, &bob, &room).await,
        (1, 1),
        "mention in a muted room"
    );

    // Disabling the rule unmutes it.
    let (st, body) = server
        .put(
            &format!("{}/enabled", rule_path("room", &room)),
            bob.token(),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(unread(&server, &bob, &room).await.0, 3, "rule disabled");
}

/// After a change, the ruleset in /sync (incremental and initial) is the same
/// one GET /pushrules/ serves: clients replace their rules with it.
#[tokio::test]
async fn synced_push_rules_match_get_pushrules_after_a_change() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t1 = sync_token(&server, &alice).await;
    let (st, body) = server
        .put(
            &rule_path("override", "changed"),
            alice.token(),
            keyword_rule("x"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let served = ruleset(&server, &alice).await;

    let mut problems = Vec::new();
    let body = sync_since(&server, &alice, &t1).await;
    let ev = event_of_type(&body["account_data"]["events"], "m.push_rules")
        .unwrap_or_else(|| panic!("no m.push_rules: {body}"));
    compare_rulesets(
        "incremental sync",
        &ev["content"]["global"],
        &served,
        &mut problems,
    );
    let body = sync(&server, &alice, "timeout=0").await;
    let ev = event_of_type(&body["account_data"]["events"], "m.push_rules")
        .unwrap_or_else(|| panic!("no m.push_rules: {body}"));
    compare_rulesets(
        "initial sync",
        &ev["content"]["global"],
        &served,
        &mut problems,
    );
    assert!(
        problems.is_empty(),
        "synced m.push_rules differs from GET /pushrules/:\n{}",
        problems.join("\n")
    );
}

/// Lists how a synced ruleset differs from the served one, kind by kind.
fn compare_rulesets(what: &str, synced: &Value, served: &Value, problems: &mut Vec<String>) {
    for kind in ["override", "content", "room", "sender", "underride"] {
        if !synced[kind].is_array() {
            problems.push(format!("{what}: kind {kind:?} missing"));
            continue;
        }
        let (have, want) = (rule_ids(synced, kind), rule_ids(served, kind));
        let missing: Vec<&String> = want.iter().filter(|id| !have.contains(id)).collect();
        let extra: Vec<&String> = have.iter().filter(|id| !want.contains(id)).collect();
        if !missing.is_empty() || !extra.is_empty() {
            problems.push(format!(
                "{what}: {kind}: missing {missing:?}, extra {extra:?}"
            ));
        } else if synced[kind] != served[kind] {
            problems.push(format!("{what}: {kind}: same ids, different rules"));
        }
    }
}

/// Clients with threads enabled (Element, matrix-js-sdk on spec >= 1.4) send
/// their main-timeline read receipt with `thread_id: "main"`; it marks the
/// main timeline read just as an unthreaded receipt does.
#[tokio::test]
async fn unread_counts_reset_by_main_thread_receipt() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = room_with_bob(&server, &alice, &bob).await;
    send_text(&server, &alice, &room, "a").await;
    send_text(&server, &alice, &room, "b").await;
    let last = send_text(&server, &alice, &room, "c").await;
    assert_eq!(unread(&server, &bob, &room).await.0, 3);
    let (st, body) = server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&last)
            ),
            bob.token(),
            json!({"thread_id": "main"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        unread(&server, &bob, &room).await,
        (0, 0),
        "a main-timeline receipt on the newest event"
    );
}
