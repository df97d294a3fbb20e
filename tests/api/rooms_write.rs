//! Writing to rooms: createRoom (versions, presets and every option),
//! membership (join, invite, leave, kick, ban, unban, forget), send with
//! transaction ids, state PUT, redaction, and bad input.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";

async fn public_room(server: &TestServer, s: &Session) -> String {
    create_room(server, s, json!({"preset": "public_chat"})).await
}

async fn private_room(server: &TestServer, s: &Session) -> String {
    create_room(server, s, json!({"preset": "private_chat"})).await
}

/// GET /state/{type}/{key} (the content).
async fn get_state(
    server: &TestServer,
    s: &Session,
    room: &str,
    ty: &str,
    key: &str,
) -> (StatusCode, Value) {
    server
        .get(
            &room_path(room, &format!("/state/{}/{}", enc(ty), enc(key))),
            s.token(),
        )
        .await
}

/// The state content, asserting it exists.
async fn state_content(server: &TestServer, s: &Session, room: &str, ty: &str, key: &str) -> Value {
    let (st, body) = get_state(server, s, room, ty, key).await;
    assert_eq!(st, StatusCode::OK, "state {ty}/{key} in {room}: {body}");
    body
}

/// The whole state event (?format=event), asserting it exists.
async fn state_event(server: &TestServer, s: &Session, room: &str, ty: &str, key: &str) -> Value {
    let (st, body) = server
        .get(
            &room_path(
                room,
                &format!("/state/{}/{}?format=event", enc(ty), enc(key)),
            ),
            s.token(),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "state event {ty}/{key} in {room}: {body}"
    );
    body
}

/// `user`'s membership as `viewer` reads it from the room state.
async fn membership(
    server: &TestServer,
    viewer: &Session,
    room: &str,
    user: &str,
) -> Option<String> {
    let (st, body) = get_state(server, viewer, room, "m.room.member", user).await;
    match st {
        StatusCode::OK => Some(
            body["membership"]
                .as_str()
                .unwrap_or_else(|| panic!("no membership: {body}"))
                .to_owned(),
        ),
        StatusCode::NOT_FOUND => None,
        other => panic!("member state of {user}: {other} {body}"),
    }
}

async fn put_state(
    server: &TestServer,
    s: &Session,
    room: &str,
    ty: &str,
    key: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &room_path(room, &format!("/state/{}/{}", enc(ty), enc(key))),
            s.token(),
            content,
        )
        .await
}

async fn count_bodies(server: &TestServer, s: &Session, room: &str, text: &str) -> usize {
    timeline(server, s, room)
        .await
        .iter()
        .filter(|e| e["content"]["body"] == text)
        .count()
}

// ---------------------------------------------------------------- createRoom

#[tokio::test]
async fn create_room_v10_has_server_name_in_id_and_creator_in_content() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_version": "10"})).await;
    assert!(room.starts_with('!'), "{room}");
    assert!(
        room.ends_with(":test.local"),
        "v10 room id without server name: {room}"
    );
    let create = state_event(&server, &alice, &room, "m.room.create", "").await;
    assert_eq!(create["content"]["room_version"], "10", "{create}");
    assert_eq!(
        create["content"]["creator"],
        alice.user_id.as_str(),
        "{create}"
    );
    assert_eq!(create["sender"], alice.user_id.as_str(), "{create}");
    assert_eq!(create["room_id"], room.as_str(), "{create}");
    assert_eq!(
        membership(&server, &alice, &room, &alice.user_id)
            .await
            .as_deref(),
        Some("join")
    );
    assert_eq!(joined_rooms(&server, &alice).await, vec![room.clone()]);
    let pl = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    assert_eq!(pl["users"][&alice.user_id], 100, "{pl}");
}

#[tokio::test]
async fn create_room_v11() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_version": "11"})).await;
    assert!(
        room.starts_with('!') && room.ends_with(":test.local"),
        "{room}"
    );
    let create = state_event(&server, &alice, &room, "m.room.create", "").await;
    assert_eq!(create["content"]["room_version"], "11", "{create}");
    assert_eq!(create["sender"], alice.user_id.as_str(), "{create}");
    assert_eq!(
        membership(&server, &alice, &room, &alice.user_id)
            .await
            .as_deref(),
        Some("join")
    );
    // The creator can write state (power 100).
    let (st, body) = put_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "t"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn create_room_v12_room_id_is_the_create_event_hash_without_server() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_version": "12"})).await;
    assert!(room.starts_with('!'), "{room}");
    assert!(
        !room.contains(':'),
        "v12 room id must not name a server: {room}"
    );
    let create = state_event(&server, &alice, &room, "m.room.create", "").await;
    assert_eq!(create["content"]["room_version"], "12", "{create}");
    assert_eq!(create["sender"], alice.user_id.as_str(), "{create}");
    // The room id is the create event's id with the other sigil.
    assert_eq!(
        create["event_id"].as_str().unwrap(),
        format!("${}", &room[1..]),
        "{create}"
    );
    assert_eq!(joined_rooms(&server, &alice).await, vec![room.clone()]);
    // v12 creators are privileged by the create event, not the users map.
    let pl = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    assert!(pl["users"].get(&alice.user_id).is_none(), "{pl}");
}

#[tokio::test]
async fn create_room_default_version_is_12() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    assert!(!room.contains(':'), "{room}");
    let create = state_content(&server, &alice, &room, "m.room.create", "").await;
    assert_eq!(create["room_version"], "12", "{create}");
    // r0 path too.
    let (st, body) = server
        .post("/_matrix/client/r0/createRoom", alice.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["room_id"].is_string(), "{body}");
}

#[tokio::test]
async fn create_room_unsupported_version() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    // Versions 1 to 9 are supported too now (room_versions.rs): only
    // versions outside 1-12 are refused.
    for v in ["0", "13", "foo"] {
        assert_error(
            &server
                .post(
                    &format!("{V3}/createRoom"),
                    alice.token(),
                    json!({"room_version": v}),
                )
                .await,
            400,
            "M_UNSUPPORTED_ROOM_VERSION",
        );
    }
    assert!(joined_rooms(&server, &alice).await.is_empty());
}

#[tokio::test]
async fn create_room_requires_auth() {
    let server = TestServer::start().await;
    assert_error(
        &server
            .post(&format!("{V3}/createRoom"), None, json!({}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );
}

/// The guest access of the private presets.
const CAN_JOIN: Option<&str> = Some("can_join");

async fn assert_preset_state(
    server: &TestServer,
    s: &Session,
    room: &str,
    join_rule: &str,
    history: &str,
    guest: Option<&str>,
) {
    let jr = state_content(server, s, room, "m.room.join_rules", "").await;
    assert_eq!(jr["join_rule"], join_rule, "{room}: {jr}");
    let hv = state_content(server, s, room, "m.room.history_visibility", "").await;
    assert_eq!(hv["history_visibility"], history, "{room}: {hv}");
    match guest {
        Some(guest) => {
            let ga = state_content(server, s, room, "m.room.guest_access", "").await;
            assert_eq!(ga["guest_access"], guest, "{room}: {ga}");
        }
        None => {
            let ga = get_state(server, s, room, "m.room.guest_access", "").await;
            assert_error(&ga, 404, "M_NOT_FOUND");
        }
    }
}

#[tokio::test]
async fn create_room_presets() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let public = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    // No guest access event in a public room (as Synapse; absent means
    // forbidden): sytest's 31sync/15lazy-members expects none in its state.
    assert_preset_state(&server, &alice, &public, "public", "shared", None).await;
    let private = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    assert_preset_state(&server, &alice, &private, "invite", "shared", CAN_JOIN).await;
    let trusted = create_room(&server, &alice, json!({"preset": "trusted_private_chat"})).await;
    assert_preset_state(&server, &alice, &trusted, "invite", "shared", CAN_JOIN).await;

    // The join rules are in force: anyone joins the public room, not the others.
    let bob = server.user("bob").await;
    join(&server, &bob, &public).await;
    assert_error(&try_join(&server, &bob, &private).await, 403, "M_FORBIDDEN");
    assert_error(&try_join(&server, &bob, &trusted).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn create_room_preset_defaults_follow_visibility() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let public = create_room(&server, &alice, json!({"visibility": "public"})).await;
    // No guest access event in a public room (as Synapse; absent means
    // forbidden): sytest's 31sync/15lazy-members expects none in its state.
    assert_preset_state(&server, &alice, &public, "public", "shared", None).await;
    let private = create_room(&server, &alice, json!({"visibility": "private"})).await;
    assert_preset_state(&server, &alice, &private, "invite", "shared", CAN_JOIN).await;
    let default = create_room(&server, &alice, json!({})).await;
    assert_preset_state(&server, &alice, &default, "invite", "shared", CAN_JOIN).await;
    // An explicit preset wins over visibility.
    let both = create_room(
        &server,
        &alice,
        json!({"visibility": "public", "preset": "private_chat"}),
    )
    .await;
    assert_preset_state(&server, &alice, &both, "invite", "shared", CAN_JOIN).await;
}

#[tokio::test]
async fn create_room_trusted_private_chat_gives_invitees_creator_power() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    // v10: the invitee gets power 100 in the users map.
    let room = create_room(
        &server,
        &alice,
        json!({"room_version": "10", "preset": "trusted_private_chat", "invite": [bob.user_id]}),
    )
    .await;
    let pl = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    assert_eq!(pl["users"][&alice.user_id], 100, "{pl}");
    assert_eq!(pl["users"][&bob.user_id], 100, "{pl}");

    // v12: creators are listed in the create event.
    let room = create_room(
        &server,
        &alice,
        json!({"room_version": "12", "preset": "trusted_private_chat", "invite": [bob.user_id]}),
    )
    .await;
    let create = state_content(&server, &alice, &room, "m.room.create", "").await;
    assert_eq!(
        create["additional_creators"],
        json!([bob.user_id]),
        "{create}"
    );
    // As a creator bob may change power levels once joined.
    join(&server, &bob, &room).await;
    let (st, body) = put_state(
        &server,
        &bob,
        &room,
        "m.room.power_levels",
        "",
        json!({"users": {}, "state_default": 60}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn create_room_name_and_topic() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "The Room", "topic": "Things to talk about"}),
    )
    .await;
    let name = state_content(&server, &alice, &room, "m.room.name", "").await;
    assert_eq!(name, json!({"name": "The Room"}));
    let topic = state_content(&server, &alice, &room, "m.room.topic", "").await;
    assert_eq!(topic["topic"], "Things to talk about", "{topic}");
    // Without them there is no name or topic state.
    let bare = create_room(&server, &alice, json!({})).await;
    assert_error(
        &get_state(&server, &alice, &bare, "m.room.name", "").await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &get_state(&server, &alice, &bare, "m.room.topic", "").await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn create_room_initial_state() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [
                {"type": "org.example.config", "state_key": "k1", "content": {"answer": 42}},
                {"type": "org.example.config", "content": {"empty": "key"}},
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "public"}},
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}},
            ],
        }),
    )
    .await;
    let c = state_content(&server, &alice, &room, "org.example.config", "k1").await;
    assert_eq!(c, json!({"answer": 42}));
    let c = state_content(&server, &alice, &room, "org.example.config", "").await;
    assert_eq!(c, json!({"empty": "key"}));
    // initial_state overrides the preset.
    let jr = state_content(&server, &alice, &room, "m.room.join_rules", "").await;
    assert_eq!(jr["join_rule"], "public", "{jr}");
    let hv = state_content(&server, &alice, &room, "m.room.history_visibility", "").await;
    assert_eq!(hv["history_visibility"], "joined", "{hv}");
    let ga = state_content(&server, &alice, &room, "m.room.guest_access", "").await;
    assert_eq!(ga["guest_access"], "can_join", "{ga}");
    let bob = server.user("bob").await;
    join(&server, &bob, &room).await;
}

#[tokio::test]
async fn create_room_creation_content() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({"creation_content": {"m.federate": false, "type": "m.space"}}),
    )
    .await;
    let create = state_content(&server, &alice, &room, "m.room.create", "").await;
    assert_eq!(create["m.federate"], false, "{create}");
    assert_eq!(create["type"], "m.space", "{create}");
    assert_eq!(create["room_version"], "12", "{create}");
    // The client cannot choose the room version through creation_content.
    let room = create_room(
        &server,
        &alice,
        json!({"room_version": "10", "creation_content": {"room_version": "11", "m.federate": true}}),
    )
    .await;
    let create = state_content(&server, &alice, &room, "m.room.create", "").await;
    assert_eq!(create["room_version"], "10", "{create}");
    assert_eq!(create["m.federate"], true, "{create}");
}

#[tokio::test]
async fn create_room_power_level_content_override() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "power_level_content_override": {
                "events_default": 50,
                "events": {"m.room.topic": 100},
                "users": {bob.user_id.clone(): 50},
            },
        }),
    )
    .await;
    let pl = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    assert_eq!(pl["events_default"], 50, "{pl}");
    // Top-level keys replace the defaults rather than merging into them.
    assert_eq!(pl["events"], json!({"m.room.topic": 100}), "{pl}");
    assert_eq!(pl["users"], json!({bob.user_id.clone(): 50}), "{pl}");
    // Keys not overridden keep their defaults.
    assert_eq!(pl["kick"], 50, "{pl}");
    assert_eq!(pl["ban"], 50, "{pl}");
    assert_eq!(pl["state_default"], 50, "{pl}");

    join(&server, &bob, &room).await;
    join(&server, &charlie, &room).await;
    // events_default 50: bob (50) may send, charlie (0) may not.
    send_text(&server, &bob, &room, "hi from bob").await;
    assert_error(
        &try_send_text(&server, &charlie, &room, &next_txn(), "hi").await,
        403,
        "M_FORBIDDEN",
    );
    // m.room.topic needs 100: bob cannot, the creator can.
    assert_error(
        &put_state(
            &server,
            &bob,
            &room,
            "m.room.topic",
            "",
            json!({"topic": "bob's"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let (st, body) = put_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "alice's"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn create_room_invite_and_is_direct() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let room = create_room(
        &server,
        &alice,
        json!({"invite": [bob.user_id, charlie.user_id], "is_direct": true, "preset": "trusted_private_chat"}),
    )
    .await;
    for invitee in [&bob, &charlie] {
        let ev = state_event(&server, &alice, &room, "m.room.member", &invitee.user_id).await;
        assert_eq!(ev["content"]["membership"], "invite", "{ev}");
        assert_eq!(ev["content"]["is_direct"], true, "{ev}");
        assert_eq!(ev["sender"], alice.user_id.as_str(), "{ev}");
    }
    // The invitee can now join the invite-only room.
    join(&server, &bob, &room).await;
    assert_eq!(joined_rooms(&server, &bob).await, vec![room.clone()]);
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(joined_members(&server, &alice, &room).await, expected);

    // Without is_direct the flag is not set.
    let room = create_room(&server, &alice, json!({"invite": [bob.user_id]})).await;
    let ev = state_event(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(ev["content"]["membership"], "invite", "{ev}");
    assert_ne!(ev["content"]["is_direct"], true, "{ev}");
}

#[tokio::test]
async fn create_room_invite_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    assert_error(
        &server
            .post(
                &format!("{V3}/createRoom"),
                alice.token(),
                json!({"invite": ["@someone:remote.example"]}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .post(
                &format!("{V3}/createRoom"),
                alice.token(),
                json!({"invite": ["@nosuchuser:test.local"]}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // No room was created by the failed requests.
    assert!(joined_rooms(&server, &alice).await.is_empty());
}

#[tokio::test]
async fn create_room_alias_then_join_by_alias() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"room_alias_name": "lobby", "preset": "public_chat"}),
    )
    .await;
    let ca = state_content(&server, &alice, &room, "m.room.canonical_alias", "").await;
    assert_eq!(ca["alias"], "#lobby:test.local", "{ca}");

    let (st, body) = server
        .post(
            &format!("{V3}/join/{}", enc("#lobby:test.local")),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str(), "{body}");
    assert_eq!(
        membership(&server, &alice, &room, &bob.user_id)
            .await
            .as_deref(),
        Some("join")
    );
    assert_eq!(joined_rooms(&server, &bob).await, vec![room.clone()]);

    // Joining by room id through the same endpoint also works.
    let other = public_room(&server, &alice).await;
    let (st, body) = server
        .post(
            &format!("{V3}/join/{}", enc(&other)),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], other.as_str(), "{body}");

    // An unknown alias is 404.
    assert_error(
        &server
            .post(
                &format!("{V3}/join/{}", enc("#nope:test.local")),
                bob.token(),
                json!({}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn create_room_alias_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    create_room(&server, &alice, json!({"room_alias_name": "taken"})).await;
    assert_error(
        &server
            .post(
                &format!("{V3}/createRoom"),
                alice.token(),
                json!({"room_alias_name": "taken"}),
            )
            .await,
        400,
        "M_ROOM_IN_USE",
    );
    assert_error(
        &server
            .post(
                &format!("{V3}/createRoom"),
                alice.token(),
                json!({"room_alias_name": "bad:name"}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    // Only the first room exists.
    assert_eq!(joined_rooms(&server, &alice).await.len(), 1);
}

#[tokio::test]
async fn create_room_event_order() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "room_alias_name": "ordered",
            "name": "N",
            "topic": "T",
            "initial_state": [{"type": "org.example.s", "state_key": "", "content": {}}],
            "invite": [bob.user_id],
        }),
    )
    .await;
    let events = timeline(&server, &alice, &room).await;
    let seq: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["state_key"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("m.room.create", ""),
        ("m.room.member", alice.user_id.as_str()),
        ("m.room.power_levels", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("org.example.s", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", bob.user_id.as_str()),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seq, expected);
}

#[tokio::test]
async fn create_room_bad_input() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("{V3}/createRoom");
    assert_error(
        &server
            .request_raw(Method::POST, &path, alice.token(), "{not json")
            .await,
        400,
        "M_NOT_JSON",
    );
    for body in [
        json!({"name": 5}),
        json!({"invite": "@bob:test.local"}),
        json!({"initial_state": {}}),
        json!({"is_direct": "yes"}),
        json!({"preset": "no_such_preset"}),
        json!({"creation_content": "x"}),
        json!({"power_level_content_override": [1]}),
    ] {
        assert_error(
            &server.post(&path, alice.token(), body.clone()).await,
            400,
            "M_BAD_JSON",
        );
    }
    assert!(joined_rooms(&server, &alice).await.is_empty());
}

// ---------------------------------------------------------------- membership

#[tokio::test]
async fn join_public_room_and_read_back() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = public_room(&server, &alice).await;
    assert_eq!(membership(&server, &alice, &room, &bob.user_id).await, None);
    join(&server, &bob, &room).await;

    let ev = state_event(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(ev["content"]["membership"], "join", "{ev}");
    assert_eq!(ev["content"]["displayname"], "bob", "{ev}");
    assert_eq!(ev["sender"], bob.user_id.as_str(), "{ev}");
    assert_eq!(joined_rooms(&server, &bob).await, vec![room.clone()]);
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(joined_members(&server, &alice, &room).await, expected);
    let (_, body) = server
        .get(&room_path(&room, "/joined_members"), alice.token())
        .await;
    assert_eq!(
        body["joined"][&bob.user_id]["display_name"], "bob",
        "{body}"
    );

    // Joining again while joined is fine and changes nothing visible.
    join(&server, &bob, &room).await;
    assert_eq!(joined_members(&server, &alice, &room).await, expected);
    // r0 path.
    let (st, body) = server
        .post(
            &format!("/_matrix/client/r0/rooms/{}/join", enc(&room)),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn join_invite_only_room_uninvited_is_forbidden() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = private_room(&server, &alice).await;
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_error(
        &server
            .post(&format!("{V3}/join/{}", enc(&room)), bob.token(), json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(membership(&server, &alice, &room, &bob.user_id).await, None);
    assert!(joined_rooms(&server, &bob).await.is_empty());
    assert_eq!(
        joined_members(&server, &alice, &room).await,
        vec![alice.user_id.clone()]
    );
}

#[tokio::test]
async fn invite_then_join() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = private_room(&server, &alice).await;
    let (st, body) = server
        .post(
            &room_path(&room, "/invite"),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let ev = state_event(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(ev["content"]["membership"], "invite", "{ev}");
    assert_eq!(ev["sender"], alice.user_id.as_str(), "{ev}");
    // Invited is not joined.
    assert!(joined_rooms(&server, &bob).await.is_empty());
    assert_eq!(
        joined_members(&server, &alice, &room).await,
        vec![alice.user_id.clone()]
    );
    // An invited user cannot send yet.
    assert_error(
        &try_send_text(&server, &bob, &room, &next_txn(), "too early").await,
        403,
        "M_FORBIDDEN",
    );

    join(&server, &bob, &room).await;
    assert_eq!(
        membership(&server, &alice, &room, &bob.user_id)
            .await
            .as_deref(),
        Some("join")
    );
    assert_eq!(joined_rooms(&server, &bob).await, vec![room.clone()]);
}

#[tokio::test]
async fn invite_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let room = public_room(&server, &alice).await;
    let invite = |who: &Session, target: &str| {
        let path = room_path(&room, "/invite");
        let token = who.access_token.clone();
        let target = target.to_owned();
        let server = &server;
        async move {
            server
                .post(&path, Some(&token), json!({"user_id": target}))
                .await
        }
    };
    // Not in the room.
    assert_error(&invite(&bob, &charlie.user_id).await, 403, "M_FORBIDDEN");
    join(&server, &bob, &room).await;
    // public_chat: inviting needs power 50; bob has 0.
    assert_error(&invite(&bob, &charlie.user_id).await, 403, "M_FORBIDDEN");
    assert_eq!(
        membership(&server, &alice, &room, &charlie.user_id).await,
        None
    );
    // Already joined.
    assert_error(&invite(&alice, &bob.user_id).await, 403, "M_FORBIDDEN");
    // Unknown local user.
    assert_error(
        &invite(&alice, "@nosuchuser:test.local").await,
        404,
        "M_NOT_FOUND",
    );
    // Unknown room.
    assert_error(
        &server
            .post(
                &room_path("!nosuchroom:test.local", "/invite"),
                alice.token(),
                json!({"user_id": charlie.user_id}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // The creator may invite.
    let (st, body) = invite(&alice, &charlie.user_id).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        membership(&server, &alice, &room, &charlie.user_id)
            .await
            .as_deref(),
        Some("invite")
    );
}

#[tokio::test]
async fn leave_and_reject_invite() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let room = public_room(&server, &alice).await;
    join(&server, &bob, &room).await;
    let (st, body) = server
        .post(&room_path(&room, "/leave"), bob.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let ev = state_event(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(ev["content"]["membership"], "leave", "{ev}");
    assert_eq!(ev["sender"], bob.user_id.as_str(), "{ev}");
    assert!(joined_rooms(&server, &bob).await.is_empty());
    assert_eq!(
        joined_members(&server, &alice, &room).await,
        vec![alice.user_id.clone()]
    );
    // Having left, bob cannot send.
    assert_error(
        &try_send_text(&server, &bob, &room, &next_txn(), "gone").await,
        403,
        "M_FORBIDDEN",
    );

    // Rejecting an invite is leaving.
    let private = private_room(&server, &alice).await;
    let (st, _) = server
        .post(
            &room_path(&private, "/invite"),
            alice.token(),
            json!({"user_id": charlie.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = server
        .post(
            &room_path(&private, "/leave"),
            charlie.token(),
            json!({"reason": "no thanks"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let ev = state_event(&server, &alice, &private, "m.room.member", &charlie.user_id).await;
    assert_eq!(ev["content"]["membership"], "leave", "{ev}");
    assert_eq!(ev["content"]["reason"], "no thanks", "{ev}");
    // Having rejected, charlie cannot join the invite-only room.
    assert_error(
        &try_join(&server, &charlie, &private).await,
        403,
        "M_FORBIDDEN",
    );

    // Leaving a room one is not in is rejected by the auth rules.
    assert_error(
        &server
            .post(&room_path(&private, "/leave"), bob.token(), json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn kick() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let room = public_room(&server, &alice).await;
    join(&server, &bob, &room).await;
    join(&server, &charlie, &room).await;

    // bob has power 0; kicking needs 50.
    assert_error(
        &server
            .post(
                &room_path(&room, "/kick"),
                bob.token(),
                json!({"user_id": charlie.user_id}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership(&server, &alice, &room, &charlie.user_id)
            .await
            .as_deref(),
        Some("join")
    );
    // Nor can he kick the creator.
    assert_error(
        &server
            .post(
                &room_path(&room, "/kick"),
                bob.token(),
                json!({"user_id": alice.user_id}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );

    let (st, body) = server
        .post(
            &room_path(&room, "/kick"),
            alice.token(),
            json!({"user_id": charlie.user_id, "reason": "spam"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let ev = state_event(&server, &alice, &room, "m.room.member", &charlie.user_id).await;
    assert_eq!(ev["content"]["membership"], "leave", "{ev}");
    assert_eq!(ev["content"]["reason"], "spam", "{ev}");
    assert_eq!(ev["sender"], alice.user_id.as_str(), "{ev}");
    assert!(joined_rooms(&server, &charlie).await.is_empty());
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(joined_members(&server, &alice, &room).await, expected);
    // A kicked user may rejoin a public room (kick is not ban).
    join(&server, &charlie, &room).await;

    assert_error(
        &server
            .post(
                &room_path("!nosuchroom:test.local", "/kick"),
                alice.token(),
                json!({"user_id": bob.user_id}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn ban_and_unban() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let room = public_room(&server, &alice).await;
    join(&server, &bob, &room).await;
    join(&server, &charlie, &room).await;

    // Banning needs power 50.
    assert_error(
        &server
            .post(
                &room_path(&room, "/ban"),
                charlie.token(),
                json!({"user_id": bob.user_id}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership(&server, &alice, &room, &bob.user_id)
            .await
            .as_deref(),
        Some("join")
    );

    let (st, body) = server
        .post(
            &room_path(&room, "/ban"),
            alice.token(),
            json!({"user_id": bob.user_id, "reason": "rude"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let ev = state_event(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(ev["content"]["membership"], "ban", "{ev}");
    assert_eq!(ev["content"]["reason"], "rude", "{ev}");
    assert!(joined_rooms(&server, &bob).await.is_empty());
    assert!(
        !joined_members(&server, &alice, &room)
            .await
            .contains(&bob.user_id)
    );

    // A banned user cannot rejoin (by id or through /join) nor send.
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_error(
        &server
            .post(&format!("{V3}/join/{}", enc(&room)), bob.token(), json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &try_send_text(&server, &bob, &room, &next_txn(), "let me in").await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership(&server, &alice, &room, &bob.user_id)
            .await
            .as_deref(),
        Some("ban")
    );

    // Unban of a user who is not banned.
    assert_error(
        &server
            .post(
                &room_path(&room, "/unban"),
                alice.token(),
                json!({"user_id": charlie.user_id}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership(&server, &alice, &room, &charlie.user_id)
            .await
            .as_deref(),
        Some("join")
    );
    // Unban without power.
    assert_error(
        &server
            .post(
                &room_path(&room, "/unban"),
                charlie.token(),
                json!({"user_id": bob.user_id}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership(&server, &alice, &room, &bob.user_id)
            .await
            .as_deref(),
        Some("ban")
    );

    let (st, body) = server
        .post(
            &room_path(&room, "/unban"),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    assert_eq!(
        membership(&server, &alice, &room, &bob.user_id)
            .await
            .as_deref(),
        Some("leave")
    );
    join(&server, &bob, &room).await;
    assert_eq!(joined_rooms(&server, &bob).await, vec![room.clone()]);
}

#[tokio::test]
async fn ban_of_a_user_never_in_the_room_keeps_them_out() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = public_room(&server, &alice).await;
    let (st, body) = server
        .post(
            &room_path(&room, "/ban"),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(
        membership(&server, &alice, &room, &bob.user_id)
            .await
            .as_deref(),
        Some("ban")
    );
}

#[tokio::test]
async fn unknown_room_is_not_found_everywhere() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    for room in [
        "!nosuchroom:test.local",
        "!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let target = json!({"user_id": bob.user_id});
        for (path, body) in [
            ("/join", json!({})),
            ("/invite", target.clone()),
            ("/leave", json!({})),
            ("/kick", target.clone()),
            ("/ban", target.clone()),
            ("/unban", target.clone()),
            ("/forget", json!({})),
        ] {
            let resp = server
                .post(&room_path(room, path), alice.token(), body)
                .await;
            assert_error(&resp, 404, "M_NOT_FOUND");
        }
        assert_error(
            &server
                .post(
                    &format!("{V3}/join/{}", enc(room)),
                    alice.token(),
                    json!({}),
                )
                .await,
            404,
            "M_NOT_FOUND",
        );
        assert_error(
            &try_send_text(&server, &alice, room, "t1", "hello").await,
            404,
            "M_NOT_FOUND",
        );
        assert_error(
            &put_state(
                &server,
                &alice,
                room,
                "m.room.topic",
                "",
                json!({"topic": "x"}),
            )
            .await,
            404,
            "M_NOT_FOUND",
        );
        assert_error(
            &server
                .put(
                    &room_path(room, &format!("/redact/{}/r1", enc("$abcdef"))),
                    alice.token(),
                    json!({}),
                )
                .await,
            404,
            "M_NOT_FOUND",
        );
    }
}

#[tokio::test]
async fn invalid_room_id_is_invalid_param() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = "not-a-room-id";
    let target = json!({"user_id": bob.user_id});
    for (path, body) in [
        ("/join", json!({})),
        ("/invite", target.clone()),
        ("/leave", json!({})),
        ("/kick", target.clone()),
        ("/ban", target.clone()),
        ("/unban", target.clone()),
        ("/forget", json!({})),
    ] {
        let resp = server
            .post(&room_path(room, path), alice.token(), body)
            .await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    assert_error(
        &server
            .post(&format!("{V3}/join/{room}"), alice.token(), json!({}))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &try_send_text(&server, &alice, room, "t1", "hello").await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &put_state(
            &server,
            &alice,
            room,
            "m.room.topic",
            "",
            json!({"topic": "x"}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(
                &room_path(room, &format!("/redact/{}/r1", enc("$abcdef"))),
                alice.token(),
                json!({}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn forget_rules() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let room = public_room(&server, &alice).await;
    let forget = |who: &Session| {
        let path = room_path(&room, "/forget");
        let token = who.access_token.clone();
        let server = &server;
        async move { server.post(&path, Some(&token), json!({})).await }
    };
    // Never a member.
    assert_error(&forget(&bob).await, 404, "M_NOT_FOUND");
    // Joined.
    join(&server, &bob, &room).await;
    assert_error(&forget(&bob).await, 400, "M_UNKNOWN");
    assert_error(&forget(&alice).await, 400, "M_UNKNOWN");
    // Invited.
    let (st, _) = server
        .post(
            &room_path(&room, "/invite"),
            alice.token(),
            json!({"user_id": charlie.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_error(&forget(&charlie).await, 400, "M_UNKNOWN");

    // Left: the room shows in an include_leave sync until forgotten.
    let (st, _) = server
        .post(&room_path(&room, "/leave"), bob.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let sync_path = format!(
        "{V3}/sync?timeout=0&filter={}",
        enc(&json!({"room": {"include_leave": true}}).to_string())
    );
    let (st, body) = server.get(&sync_path, bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(
        body["rooms"]["leave"].get(&room).is_some(),
        "left room missing: {body}"
    );

    let (st, body) = forget(&bob).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let (st, body) = server.get(&sync_path, bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(
        body["rooms"]["leave"].get(&room).is_none(),
        "forgotten room still in sync: {body}"
    );
    // Forgetting does not touch membership: still 'leave', and rejoining works.
    assert_eq!(
        membership(&server, &alice, &room, &bob.user_id)
            .await
            .as_deref(),
        Some("leave")
    );
    join(&server, &bob, &room).await;
    assert_eq!(joined_rooms(&server, &bob).await, vec![room.clone()]);

    // A banned user may forget the room.
    let (st, _) = server
        .post(
            &room_path(&room, "/ban"),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = forget(&bob).await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

// ---------------------------------------------------------------- send

#[tokio::test]
async fn send_message_and_read_back() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let (st, body) = server
        .put(
            &room_path(&room, "/send/org.example.custom/t1"),
            alice.token(),
            json!({"anything": [1, 2, {"nested": true}]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["event_id"].as_str().unwrap().to_owned();
    let (st, ev) = get_event(&server, &alice, &room, &id).await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["event_id"], id.as_str(), "{ev}");
    assert_eq!(ev["type"], "org.example.custom", "{ev}");
    assert_eq!(ev["sender"], alice.user_id.as_str(), "{ev}");
    assert_eq!(ev["room_id"], room.as_str(), "{ev}");
    assert_eq!(
        ev["content"],
        json!({"anything": [1, 2, {"nested": true}]}),
        "{ev}"
    );
    assert!(ev.get("state_key").is_none(), "{ev}");

    let msg = send_text(&server, &alice, &room, "hello world").await;
    let (st, ev) = get_event(&server, &alice, &room, &msg).await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(
        ev["content"],
        json!({"msgtype": "m.text", "body": "hello world"})
    );
}

#[tokio::test]
async fn send_by_non_member_is_forbidden() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = public_room(&server, &alice).await;
    assert_error(
        &try_send_text(&server, &bob, &room, "t1", "intruder").await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(count_bodies(&server, &alice, &room, "intruder").await, 0);
}

#[tokio::test]
async fn send_same_txn_same_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let (st, first) = try_send_text(&server, &alice, &room, "abc", "once").await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let (st, second) = try_send_text(&server, &alice, &room, "abc", "once").await;
    assert_eq!(st, StatusCode::OK, "{second}");
    assert_eq!(first["event_id"], second["event_id"]);
    assert_eq!(count_bodies(&server, &alice, &room, "once").await, 1);
    // A different txn id is a different event.
    let (st, third) = try_send_text(&server, &alice, &room, "abd", "once").await;
    assert_eq!(st, StatusCode::OK, "{third}");
    assert_ne!(first["event_id"], third["event_id"]);
    assert_eq!(count_bodies(&server, &alice, &room, "once").await, 2);
}

#[tokio::test]
async fn send_same_txn_from_another_device_is_a_new_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let alice2 = server.login("alice", "password123").await;
    let room = private_room(&server, &alice).await;
    let (st, a) = try_send_text(&server, &alice, &room, "same", "per device").await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let (st, b) = try_send_text(&server, &alice2, &room, "same", "per device").await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_ne!(a["event_id"], b["event_id"]);
    assert_eq!(count_bodies(&server, &alice, &room, "per device").await, 2);
}

#[tokio::test]
async fn send_same_txn_after_restart_same_event() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let (st, first) = try_send_text(&server, &alice, &room, "persist", "durable").await;
    assert_eq!(st, StatusCode::OK, "{first}");
    server.restart().await;
    let (st, second) = try_send_text(&server, &alice, &room, "persist", "durable").await;
    assert_eq!(st, StatusCode::OK, "{second}");
    assert_eq!(first["event_id"], second["event_id"]);
    assert_eq!(count_bodies(&server, &alice, &room, "durable").await, 1);
}

/// After a restart the server learns a device's transactions from the
/// database on its next send (a new transaction id): the old ones are still
/// retries afterwards, in the room they were sent to and only there.
#[tokio::test]
async fn old_txns_are_retries_after_a_new_send_following_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let other = private_room(&server, &alice).await;
    let mut first = Vec::new();
    for i in 0..3 {
        let (st, sent) = try_send_text(&server, &alice, &room, &format!("old-{i}"), "old").await;
        assert_eq!(st, StatusCode::OK, "{sent}");
        first.push(sent["event_id"].clone());
    }
    server.restart().await;
    let (st, new) = try_send_text(&server, &alice, &room, "new-0", "new").await;
    assert_eq!(st, StatusCode::OK, "{new}");
    assert!(!first.contains(&new["event_id"]), "{new}");
    for (i, id) in first.iter().enumerate() {
        let (st, again) = try_send_text(&server, &alice, &room, &format!("old-{i}"), "old").await;
        assert_eq!(st, StatusCode::OK, "{again}");
        assert_eq!(&again["event_id"], id, "old-{i} after the restart");
    }
    let (st, again) = try_send_text(&server, &alice, &room, "new-0", "new").await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["event_id"], new["event_id"]);
    assert_eq!(count_bodies(&server, &alice, &room, "old").await, 3);
    assert_eq!(count_bodies(&server, &alice, &room, "new").await, 1);
    // The same ids in another room are new events there.
    let (st, elsewhere) = try_send_text(&server, &alice, &other, "old-0", "old").await;
    assert_eq!(st, StatusCode::OK, "{elsewhere}");
    assert!(!first.contains(&elsewhere["event_id"]), "{elsewhere}");
    assert_eq!(count_bodies(&server, &alice, &other, "old").await, 1);
}

#[tokio::test]
async fn send_same_txn_concurrently_gives_one_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let (a, b, c, d) = tokio::join!(
        try_send_text(&server, &alice, &room, "racy", "raced"),
        try_send_text(&server, &alice, &room, "racy", "raced"),
        try_send_text(&server, &alice, &room, "racy", "raced"),
        try_send_text(&server, &alice, &room, "racy", "raced"),
    );
    for r in [&a, &b, &c, &d] {
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        assert_eq!(r.1["event_id"], a.1["event_id"], "{} vs {}", r.1, a.1);
    }
    assert_eq!(count_bodies(&server, &alice, &room, "raced").await, 1);
}

/// The spec scopes a transaction id to a device *and an endpoint*: the same
/// txn id sent to another room (another path) is a new request.
#[tokio::test]
async fn send_same_txn_to_another_room_is_a_new_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room_a = private_room(&server, &alice).await;
    let room_b = private_room(&server, &alice).await;
    let (st, a) = try_send_text(&server, &alice, &room_a, "shared-txn", "to A").await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let (st, b) = try_send_text(&server, &alice, &room_b, "shared-txn", "to B").await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_ne!(
        a["event_id"], b["event_id"],
        "room B got room A's event back"
    );
    assert_eq!(count_bodies(&server, &alice, &room_b, "to B").await, 1);
}

/// The same txn id on the redact endpoint is not a retransmission of a send.
#[tokio::test]
async fn redact_with_a_txn_used_by_send_is_a_new_redaction() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let (st, sent) = try_send_text(&server, &alice, &room, "t-42", "to redact").await;
    assert_eq!(st, StatusCode::OK, "{sent}");
    let msg = sent["event_id"].as_str().unwrap().to_owned();
    let (st, red) = server
        .put(
            &room_path(&room, &format!("/redact/{}/t-42", enc(&msg))),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{red}");
    assert_ne!(
        red["event_id"],
        msg.as_str(),
        "the send's event id came back from /redact"
    );
    let (st, ev) = get_event(&server, &alice, &room, &msg).await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["content"], json!({}), "message not redacted: {ev}");
}

#[tokio::test]
async fn send_bad_input() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let path = room_path(&room, "/send/m.room.message/bad1");
    assert_error(
        &server
            .request_raw(Method::PUT, &path, alice.token(), "{not json")
            .await,
        400,
        "M_NOT_JSON",
    );
    for (i, body) in [json!([1, 2]), json!("text"), json!(5), json!(null)]
        .into_iter()
        .enumerate()
    {
        let path = room_path(&room, &format!("/send/m.room.message/nonobj{i}"));
        assert_error(
            &server.put(&path, alice.token(), body).await,
            400,
            "M_BAD_JSON",
        );
    }
    // Nothing was stored: the same txn ids work afterwards with real content.
    let (st, body) = server
        .put(
            &path,
            alice.token(),
            json!({"msgtype": "m.text", "body": "ok"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server.put(&path, None, json!({"body": "x"})).await,
        401,
        "M_MISSING_TOKEN",
    );
}

// ---------------------------------------------------------------- state

#[tokio::test]
async fn put_state_and_read_back() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let (st, body) = put_state(
        &server,
        &alice,
        &room,
        "org.example.thing",
        "key1",
        json!({"v": 1}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["event_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with('$'), "{id}");
    assert_eq!(
        state_content(&server, &alice, &room, "org.example.thing", "key1").await,
        json!({"v": 1})
    );
    let ev = state_event(&server, &alice, &room, "org.example.thing", "key1").await;
    assert_eq!(ev["event_id"], id.as_str(), "{ev}");
    assert_eq!(ev["state_key"], "key1", "{ev}");
    // Replacing it.
    let (st, _) = put_state(
        &server,
        &alice,
        &room,
        "org.example.thing",
        "key1",
        json!({"v": 2}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        state_content(&server, &alice, &room, "org.example.thing", "key1").await,
        json!({"v": 2})
    );
    // The auth rules: a state key that is a user id must be the sender's own.
    assert_error(
        &put_state(
            &server,
            &alice,
            &room,
            "org.example.thing",
            "@other:test.local",
            json!({"v": 3}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let (st, body) = put_state(
        &server,
        &alice,
        &room,
        "org.example.thing",
        &alice.user_id,
        json!({"v": 4}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        state_content(&server, &alice, &room, "org.example.thing", &alice.user_id).await,
        json!({"v": 4})
    );
}

#[tokio::test]
async fn put_state_empty_state_key_path_variants() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    // /state/{type} without a state key.
    let (st, body) = server
        .put(
            &room_path(&room, "/state/m.room.topic"),
            alice.token(),
            json!({"topic": "no slash"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["event_id"].is_string(), "{body}");
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.topic", "").await["topic"],
        "no slash"
    );
    // /state/{type}/ with a trailing slash.
    let (st, body) = server
        .put(
            &room_path(&room, "/state/m.room.topic/"),
            alice.token(),
            json!({"topic": "slash"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.topic", "").await["topic"],
        "slash"
    );
    let ev = state_event(&server, &alice, &room, "m.room.topic", "").await;
    assert_eq!(ev["state_key"], "", "{ev}");
    assert_eq!(ev["event_id"], body["event_id"], "{ev}");
    // The r0 aliases.
    let (st, body) = server
        .put(
            &format!("/_matrix/client/r0/rooms/{}/state/m.room.name", enc(&room)),
            alice.token(),
            json!({"name": "r0 name"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server
        .put(
            &format!(
                "/_matrix/client/r0/rooms/{}/state/org.example.x/",
                enc(&room)
            ),
            alice.token(),
            json!({"r0": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.name", "").await,
        json!({"name": "r0 name"})
    );
    assert_eq!(
        state_content(&server, &alice, &room, "org.example.x", "").await,
        json!({"r0": true})
    );
}

#[tokio::test]
async fn put_state_needs_power_and_membership() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Original"}),
    )
    .await;
    join(&server, &bob, &room).await;
    // bob has power 0: m.room.name needs 50, state_default is 50, power levels 100.
    assert_error(
        &put_state(
            &server,
            &bob,
            &room,
            "m.room.name",
            "",
            json!({"name": "Hijacked"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &put_state(
            &server,
            &bob,
            &room,
            "org.example.thing",
            "",
            json!({"a": 1}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &put_state(
            &server,
            &bob,
            &room,
            "m.room.power_levels",
            "",
            json!({"users": {bob.user_id.clone(): 100}}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.name", "").await["name"],
        "Original"
    );
    assert_error(
        &get_state(&server, &alice, &room, "org.example.thing", "").await,
        404,
        "M_NOT_FOUND",
    );
    // A non-member may not send state at all.
    assert_error(
        &put_state(
            &server,
            &charlie,
            &room,
            "org.example.thing",
            "",
            json!({"a": 1}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Nobody sends m.room.create, not even the creator.
    assert_error(
        &put_state(
            &server,
            &alice,
            &room,
            "m.room.create",
            "",
            json!({"room_version": "12"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Once given power, bob may.
    let mut pl = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    pl["users"][&bob.user_id] = json!(50);
    let (st, body) = put_state(&server, &alice, &room, "m.room.power_levels", "", pl).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = put_state(
        &server,
        &bob,
        &room,
        "m.room.name",
        "",
        json!({"name": "Bob's"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.name", "").await["name"],
        "Bob's"
    );
}

#[tokio::test]
async fn put_canonical_alias_must_point_to_the_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_alias_name": "mine"})).await;
    let other = create_room(&server, &alice, json!({"room_alias_name": "theirs"})).await;
    for content in [
        json!({"alias": "#nonexistent:test.local"}),
        json!({"alias": "#theirs:test.local"}),
        json!({"alias": "#mine:test.local", "alt_aliases": ["#theirs:test.local"]}),
        json!({"alias": "#mine:elsewhere.example"}),
    ] {
        assert_error(
            &put_state(
                &server,
                &alice,
                &room,
                "m.room.canonical_alias",
                "",
                content.clone(),
            )
            .await,
            400,
            "M_BAD_ALIAS",
        );
    }
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.canonical_alias", "").await,
        json!({"alias": "#mine:test.local"})
    );
    // The room's own alias is fine, and so is removing it.
    let (st, body) = put_state(
        &server,
        &alice,
        &room,
        "m.room.canonical_alias",
        "",
        json!({"alias": "#mine:test.local", "alt_aliases": ["#mine:test.local"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = put_state(
        &server,
        &alice,
        &room,
        "m.room.canonical_alias",
        "",
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        state_content(&server, &alice, &other, "m.room.canonical_alias", "").await,
        json!({"alias": "#theirs:test.local"})
    );
}

#[tokio::test]
async fn put_state_bad_input() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let path = room_path(&room, "/state/org.example.thing/k");
    assert_error(
        &server
            .request_raw(Method::PUT, &path, alice.token(), "{not json")
            .await,
        400,
        "M_NOT_JSON",
    );
    for body in [json!([1]), json!("text"), json!(true)] {
        assert_error(
            &server.put(&path, alice.token(), body).await,
            400,
            "M_BAD_JSON",
        );
    }
    assert_error(
        &get_state(&server, &alice, &room, "org.example.thing", "k").await,
        404,
        "M_NOT_FOUND",
    );
}

// ---------------------------------------------------------------- redact

async fn redact_message_in(version: &str) {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_version": version})).await;
    let msg = send_text(&server, &alice, &room, "regrettable").await;
    // Read once unredacted, so that its client form is cached.
    let (st, ev) = get_event(&server, &alice, &room, &msg).await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["content"]["body"], "regrettable", "{ev}");
    let (st, body) = try_redact(&server, &alice, &room, &msg, json!({"reason": "oops"})).await;
    assert_eq!(st, StatusCode::OK, "v{version}: {body}");
    let redaction_id = body["event_id"].as_str().unwrap().to_owned();
    assert_ne!(redaction_id, msg);

    let (st, ev) = get_event(&server, &alice, &room, &msg).await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["content"], json!({}), "v{version}: {ev}");
    assert_eq!(ev["type"], "m.room.message", "{ev}");
    assert_eq!(ev["sender"], alice.user_id.as_str(), "{ev}");
    let because = &ev["unsigned"]["redacted_because"];
    assert_eq!(
        because["event_id"],
        redaction_id.as_str(),
        "v{version}: {ev}"
    );
    assert_eq!(because["type"], "m.room.redaction", "{ev}");
    assert_eq!(because["content"]["reason"], "oops", "{ev}");

    // The redaction itself names its target: top level before v11, content since.
    let (st, red) = get_event(&server, &alice, &room, &redaction_id).await;
    assert_eq!(st, StatusCode::OK, "{red}");
    assert_eq!(red["type"], "m.room.redaction", "{red}");
    assert_eq!(red["content"]["reason"], "oops", "{red}");
    if version == "10" {
        assert_eq!(red["redacts"], msg.as_str(), "{red}");
    } else {
        assert_eq!(red["content"]["redacts"], msg.as_str(), "v{version}: {red}");
    }
}

#[tokio::test]
async fn redact_message_v10() {
    redact_message_in("10").await;
}

#[tokio::test]
async fn redact_message_v11() {
    redact_message_in("11").await;
}

#[tokio::test]
async fn redact_message_v12() {
    redact_message_in("12").await;
}

#[tokio::test]
async fn redact_state_event_keeps_only_what_the_algorithm_keeps() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let (st, body) = put_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "secret"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let topic_id = body["event_id"].as_str().unwrap().to_owned();
    let (st, body) = try_redact(&server, &alice, &room, &topic_id, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, ev) = get_event(&server, &alice, &room, &topic_id).await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["content"], json!({}), "{ev}");
    assert_eq!(ev["state_key"], "", "{ev}");
    assert!(ev["unsigned"]["redacted_because"].is_object(), "{ev}");

    // join_rules keeps join_rule.
    let jr = state_event(&server, &alice, &room, "m.room.join_rules", "").await;
    let jr_id = jr["event_id"].as_str().unwrap().to_owned();
    let (st, body) = try_redact(&server, &alice, &room, &jr_id, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, ev) = get_event(&server, &alice, &room, &jr_id).await;
    assert_eq!(ev["content"], json!({"join_rule": "invite"}), "{ev}");
}

#[tokio::test]
async fn redact_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let charlie = server.user("charlie").await;
    let room = public_room(&server, &alice).await;
    let other = public_room(&server, &alice).await;
    let msg = send_text(&server, &alice, &room, "keep me").await;
    let elsewhere = send_text(&server, &alice, &other, "other room").await;

    // Unknown event: 404; an event of another room: 400, as Synapse (sytest
    // "PUT /redact disallows redaction of event in different room").
    assert_error(
        &try_redact(&server, &alice, &room, "$doesnotexist", json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &try_redact(&server, &alice, &room, &elsewhere, json!({})).await,
        400,
        "M_INVALID_PARAM",
    );
    // Malformed event id.
    assert_error(
        &try_redact(&server, &alice, &room, "not-an-event-id", json!({})).await,
        400,
        "M_INVALID_PARAM",
    );
    // A non-member.
    assert_error(
        &try_redact(&server, &charlie, &room, &msg, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    let (_, ev) = get_event(&server, &alice, &room, &msg).await;
    assert_eq!(ev["content"]["body"], "keep me", "{ev}");
    assert_error(
        &server
            .request_raw(
                Method::PUT,
                &room_path(&room, &format!("/redact/{}/raw", enc(&msg))),
                alice.token(),
                "{not json",
            )
            .await,
        400,
        "M_NOT_JSON",
    );
    let (_, ev) = get_event(&server, &alice, &other, &elsewhere).await;
    assert_eq!(ev["content"]["body"], "other room", "{ev}");
}

/// Client-Server API: a user below the room's `redact` level may redact only
/// their own events.
#[tokio::test]
async fn redact_someone_elses_event_needs_redact_power() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = public_room(&server, &alice).await;
    join(&server, &bob, &room).await;
    let alices = send_text(&server, &alice, &room, "alice's words").await;
    let bobs = send_text(&server, &bob, &room, "bob's words").await;

    // bob (power 0) redacts his own message: allowed.
    let (st, body) = try_redact(&server, &bob, &room, &bobs, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, ev) = get_event(&server, &alice, &room, &bobs).await;
    assert_eq!(ev["content"], json!({}), "{ev}");

    // ... but not alice's.
    let resp = try_redact(&server, &bob, &room, &alices, json!({})).await;
    let (_, ev) = get_event(&server, &alice, &room, &alices).await;
    assert_eq!(
        ev["content"]["body"], "alice's words",
        "a power-0 user redacted another user's event ({}): {ev}",
        resp.1
    );
    assert_error(&resp, 403, "M_FORBIDDEN");

    // alice (redact level 50 reached) may redact bob's.
    let bobs2 = send_text(&server, &bob, &room, "more from bob").await;
    let (st, body) = try_redact(&server, &alice, &room, &bobs2, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn redact_same_txn_same_redaction() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = private_room(&server, &alice).await;
    let msg = send_text(&server, &alice, &room, "x").await;
    let path = room_path(&room, &format!("/redact/{}/redtxn", enc(&msg)));
    let (st, a) = server
        .put(&path, alice.token(), json!({"reason": "r"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let (st, b) = server
        .put(&path, alice.token(), json!({"reason": "r"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(a["event_id"], b["event_id"]);
    let redactions = timeline(&server, &alice, &room)
        .await
        .iter()
        .filter(|e| e["type"] == "m.room.redaction")
        .count();
    assert_eq!(redactions, 1);
}
