//! Every stable room version, 1 to 12: created, joined (by alias and by
//! invite), written to, read (`/messages`, `/sync`, `/event`), redacted (by
//! that version's algorithm), kicked from and banned from; each version's
//! event id format and PDU format (v1/v2: `$id:server` in the event,
//! `[id, hashes]` references), signatures; unknown versions;
//! `/capabilities`; a configured default version; canonical JSON content
//! (v6); string power levels (before v10). sytest: "POST /createRoom creates a room with
//! the given version", "User can create and send/receive messages in a room
//! with version N", "local user can join room with version N", "User can
//! invite local user to room with version N".

use reqwest::StatusCode;
use ruma::RoomVersionId;
use ruma::room_version_rules::RoomVersionRules;
use serde_json::{Value, json};

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";

fn rules(version: &str) -> RoomVersionRules {
    RoomVersionId::try_from(version)
        .expect("a room version")
        .rules()
        .expect("ruma knows its rules")
}

/// The stored PDU of an event, as JSON.
async fn pdu(server: &TestServer, event_id: &str) -> Value {
    let pdu = server
        .services()
        .rooms
        .pdu(event_id)
        .await
        .expect("event lookup")
        .unwrap_or_else(|| panic!("no event {event_id}"));
    serde_json::from_str(&pdu.json).expect("PDU JSON")
}

/// The reference hash of the stored event, as the version encodes it.
async fn reference_hash(server: &TestServer, event_id: &str, version: &str) -> String {
    let object: ruma::CanonicalJsonObject =
        serde_json::from_value(pdu(server, event_id).await).expect("canonical JSON");
    ruma::signatures::reference_hash(&object, &rules(version)).expect("reference hash")
}

/// The server's signing keys, from `/_matrix/key/v2/server`.
async fn signing_keys(server: &TestServer) -> ruma::signatures::PublicKeyMap {
    let (st, body) = server.get("/_matrix/key/v2/server", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let keys = body["verify_keys"]
        .as_object()
        .unwrap_or_else(|| panic!("verify_keys: {body}"))
        .iter()
        .map(|(id, key)| {
            let key = key["key"].as_str().expect("key");
            (
                id.clone(),
                ruma::serde::Base64::parse(key).expect("base64 key"),
            )
        })
        .collect();
    [("test.local".to_owned(), keys)].into()
}

/// Checks the event's id and its PDU's shape against the room version:
/// v1/v2 `$opaque:server` carried in the PDU as `event_id`, and
/// `prev_events`/`auth_events` as `[id, {"sha256": reference hash}]`; v3
/// on, `$` + the reference hash (standard base64 in v3, URL-safe from v4)
/// and plain ids.
/// Its hashes and signature verify as another server would check them.
async fn check_event_format(
    server: &TestServer,
    keys: &ruma::signatures::PublicKeyMap,
    event_id: &str,
    version: &str,
) {
    let json = pdu(server, event_id).await;
    let what = format!("v{version} event {event_id}: {json}");
    let object: ruma::CanonicalJsonObject =
        serde_json::from_value(json.clone()).expect("canonical JSON");
    assert_eq!(
        ruma::signatures::verify_event(keys, &object, &rules(version)).ok(),
        Some(ruma::signatures::Verified::All),
        "signed and hashed: {what}"
    );
    let v: u8 = version.parse().expect("numeric version");
    if v <= 2 {
        let opaque = event_id
            .strip_prefix('$')
            .and_then(|id| id.strip_suffix(":test.local"))
            .unwrap_or_else(|| panic!("not $opaque:test.local: {what}"));
        assert!(
            !opaque.is_empty() && opaque.chars().all(|c| c.is_ascii_alphanumeric()),
            "{what}"
        );
        assert_eq!(json["event_id"], event_id, "{what}");
        for field in ["prev_events", "auth_events"] {
            for reference in json[field].as_array().expect("array") {
                let id = reference[0].as_str().unwrap_or_else(|| panic!("{what}"));
                let hash = reference_hash(server, id, version).await;
                assert_eq!(reference[1], json!({"sha256": hash}), "{field}: {what}");
                assert!(!hash.contains(['-', '_']), "standard base64: {what}");
            }
        }
    } else {
        assert!(json.get("event_id").is_none(), "{what}");
        let hash = reference_hash(server, event_id, version).await;
        assert_eq!(event_id, format!("${hash}"), "{what}");
        assert_eq!(hash.len(), 43, "{what}");
        let (wrong, right) = if v == 3 { ("-_", "+/") } else { ("+/", "-_") };
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_alphanumeric() || right.contains(c)),
            "v{version} ids use {right}, never {wrong}: {what}"
        );
        for field in ["prev_events", "auth_events"] {
            let refs = json[field].as_array().expect("array");
            assert!(refs.iter().all(Value::is_string), "{field}: {what}");
        }
    }
}

async fn membership_action(
    server: &TestServer,
    who: &Session,
    room: &str,
    action: &str,
    user: &str,
) {
    let (st, body) = server
        .post(
            &room_path(room, &format!("/{action}")),
            who.token(),
            json!({"user_id": user, "reason": "test"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{action} {user}: {body}");
}

/// The scenario of one version, on a server shared by all versions.
async fn use_room_version(server: &TestServer, version: &str, users: [&Session; 3]) {
    let [alice, bob, carol] = users;
    let v: u8 = version.parse().expect("numeric version");

    // Create (private: bob comes by invite), and the create event's
    // content in alice's initial sync.
    let room = create_room(
        server,
        alice,
        json!({"room_version": version, "preset": "private_chat",
               "creation_content": {"m.federate": true}}),
    )
    .await;
    if v >= 12 {
        assert!(!room.contains(':'), "v{version} room id: {room}");
    } else {
        assert!(room.ends_with(":test.local"), "v{version} room id: {room}");
    }
    let initial = sync(server, alice, "timeout=0").await;
    let events = &joined_room(&initial, &room)["timeline"]["events"];
    let create = &events[0];
    assert_eq!(create["type"], "m.room.create", "v{version}: {events}");
    assert_eq!(create["content"]["room_version"], version, "{create}");
    assert_eq!(create["content"]["m.federate"], true, "{create}");
    if v <= 10 {
        assert_eq!(create["content"]["creator"], alice.user_id, "{create}");
    } else {
        assert!(create["content"].get("creator").is_none(), "{create}");
    }
    let create_id = create["event_id"].as_str().expect("event_id").to_owned();

    // Invite, join, send: bob's incremental sync has the message alone.
    invite(server, alice, &room, &bob.user_id).await;
    join(server, bob, &room).await;
    let since = sync_token(server, bob).await;
    let hello = send_text(server, alice, &room, "hello").await;
    let body = sync_since(server, bob, &since).await;
    let new = &joined_room(&body, &room)["timeline"]["events"];
    assert_eq!(event_ids(new), vec![hello.clone()], "v{version}: {body}");
    assert_eq!(bodies(new), vec!["hello"], "v{version}: {body}");

    // /messages and /event (the id percent-encoded: v3 ids may hold '/').
    let chunk = messages_ok(server, bob, &room, "dir=b&limit=1").await["chunk"].clone();
    assert_eq!(
        event_ids(&chunk),
        vec![hello.clone()],
        "v{version}: {chunk}"
    );
    let event = get_event_ok(server, bob, &room, &hello).await;
    assert_eq!(event["content"]["body"], "hello", "{event}");
    assert_eq!(event["room_id"], room, "{event}");

    // State.
    let topic = set_state(
        server,
        alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "t"}),
    )
    .await;
    let (st, content) = server
        .get(&room_path(&room, "/state/m.room.topic/"), bob.token())
        .await;
    assert_eq!((st, content), (StatusCode::OK, json!({"topic": "t"})));

    // A public room with an alias: carol joins by the alias.
    let alias_name = format!("versions-{version}");
    let public = create_room(
        server,
        alice,
        json!({"room_version": version, "preset": "public_chat", "room_alias_name": alias_name}),
    )
    .await;
    let alias = format!("#{alias_name}:test.local");
    let (st, body) = server
        .post(
            &format!("{V3}/join/{}", enc(&alias)),
            carol.token(),
            json!({}),
        )
        .await;
    assert_eq!(
        (st, &body["room_id"]),
        (StatusCode::OK, &json!(public)),
        "{body}"
    );
    assert_eq!(
        set(joined_members(server, carol, &public).await),
        set([&alice.user_id, &carol.user_id])
    );
    let there = send_text(server, carol, &public, "from carol").await;
    assert_eq!(
        get_event_ok(server, alice, &public, &there).await["sender"],
        carol.user_id
    );

    // Redact bob's message: content emptied, the redaction in unsigned.
    let doomed = send_text(server, bob, &room, "doomed").await;
    let redaction = redact(server, alice, &room, &doomed).await;
    let event = get_event_ok(server, bob, &room, &doomed).await;
    assert_eq!(event["content"], json!({}), "v{version}: {event}");
    assert_eq!(
        event["unsigned"]["redacted_because"]["event_id"], redaction,
        "{event}"
    );
    let red = get_event_ok(server, bob, &room, &redaction).await;
    assert_eq!(red["redacts"], doomed, "v{version}: {red}");

    // The version's own algorithm: a redacted create event keeps only
    // `creator` before v11, all of its content from v11.
    redact(server, alice, &room, &create_id).await;
    let create = get_event_ok(server, alice, &room, &create_id).await;
    let expected = if v <= 10 {
        json!({"creator": alice.user_id})
    } else {
        json!({"room_version": version, "m.federate": true})
    };
    assert_eq!(create["content"], expected, "v{version}: {create}");

    // Kick: bob may no longer send; invited again he may. Ban: no join.
    membership_action(server, alice, &room, "kick", &bob.user_id).await;
    assert_error(
        &try_send_text(server, bob, &room, &next_txn(), "kicked").await,
        403,
        "M_FORBIDDEN",
    );
    invite(server, alice, &room, &bob.user_id).await;
    join(server, bob, &room).await;
    membership_action(server, alice, &room, "ban", &bob.user_id).await;
    assert_error(&try_join(server, bob, &room).await, 403, "M_FORBIDDEN");
    assert!(!joined_rooms(server, bob).await.contains(&room));

    // Every event of the room has this version's id and PDU format, and
    // is found by its id in a path (percent-encoded: a v3 id may hold '/').
    let keys = signing_keys(server).await;
    let all = timeline(server, alice, &room).await;
    assert!(all.len() >= 15, "v{version}: {all:?}");
    for event in &all {
        let id = event["event_id"].as_str().expect("event_id");
        check_event_format(server, &keys, id, version).await;
        assert_eq!(get_event_ok(server, alice, &room, id).await["event_id"], id);
    }
    for id in [&topic, &there] {
        check_event_format(server, &keys, id, version).await;
    }
}

#[tokio::test]
async fn every_stable_version_can_be_created_joined_and_used() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    for v in 1..=12 {
        use_room_version(&server, &v.to_string(), [&alice, &bob, &carol]).await;
    }
}

/// Versions ruma or the spec do not know are 400
/// `M_UNSUPPORTED_ROOM_VERSION` and create nothing; a number instead of a
/// string is 400 `M_BAD_JSON` (sytest "POST /createRoom rejects attempts to
/// create rooms with numeric versions" / "... with unknown versions").
#[tokio::test]
async fn unknown_versions_are_refused() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for v in ["0", "13", "1.0", "foo", "org.matrix.msc9999"] {
        let resp = server
            .post(
                &format!("{V3}/createRoom"),
                alice.token(),
                json!({"room_version": v}),
            )
            .await;
        assert_error_for(v, &resp, 400, "M_UNSUPPORTED_ROOM_VERSION");
    }
    let resp = server
        .post(
            &format!("{V3}/createRoom"),
            alice.token(),
            json!({"room_version": 1}),
        )
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    assert!(joined_rooms(&server, &alice).await.is_empty());
}

/// `/capabilities` lists every version, 1 to 12, as stable, and the
/// configured default; a server configured with default version 1 makes
/// version 1 rooms when none is asked for.
#[tokio::test]
async fn capabilities_list_every_version_and_the_configured_default() {
    let expected: serde_json::Map<String, Value> =
        (1..=12).map(|v| (v.to_string(), json!("stable"))).collect();
    for default in ["12", "1"] {
        let server = TestServer::start_with(|c| c.rooms.default_version = default.to_owned()).await;
        let alice = server.user("alice").await;
        let (st, body) = server
            .get(&format!("{V3}/capabilities"), alice.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let versions = &body["capabilities"]["m.room_versions"];
        assert_eq!(versions["default"], default, "{body}");
        assert_eq!(
            versions["available"],
            Value::Object(expected.clone()),
            "{body}"
        );

        let room = create_room(&server, &alice, json!({})).await;
        let (st, create) = server
            .get(&room_path(&room, "/state/m.room.create/"), alice.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{create}");
        assert_eq!(create["room_version"], default, "{create}");
    }
}

/// Event content must be canonical JSON (room version 6's rules, and every
/// version's here, since events are stored as canonical JSON): integers
/// outside ±(2^53 - 1) and floats are 400 `M_BAD_JSON`; the non-JSON
/// values some encoders write (`NaN`, `Infinity`) are 400 `M_NOT_JSON`.
/// Nothing is sent (sytest "Invalid JSON integers", "Invalid JSON floats",
/// "Invalid JSON special values", in a version 6 room).
#[tokio::test]
async fn non_canonical_json_content_is_refused_in_a_version_6_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_version": "6"})).await;
    let before = timeline(&server, &alice, &room).await.len();
    let path = room_path(&room, "/send/sytest.dummy");
    for body in [
        json!(9_007_199_254_740_992_i64),
        json!(-9_007_199_254_740_992_i64),
        json!(1.1),
    ] {
        let resp = server
            .post(
                &path,
                alice.token(),
                json!({"msgtype": "sytest.dummy", "body": body}),
            )
            .await;
        assert_error_for(&body.to_string(), &resp, 400, "M_BAD_JSON");
    }
    for raw in [
        r#"{"msgtype": "sytest.dummy", "body": Infinity}"#,
        r#"{"msgtype": "sytest.dummy", "body": -Infinity}"#,
        r#"{"msgtype": "sytest.dummy", "body": NaN}"#,
    ] {
        let resp = server
            .request_raw(reqwest::Method::POST, &path, alice.token(), raw)
            .await;
        assert_error_for(raw, &resp, 400, "M_NOT_JSON");
    }
    assert_eq!(timeline(&server, &alice, &room).await.len(), before);
}

/// Before room version 10 power levels may be strings holding integers
/// (the rules of versions 1-9): set that way, they are honoured, both by
/// the auth rules and by the server's own checks (bob at "60" may set the
/// topic and kick; carol at the default 0 may not).
#[tokio::test]
async fn string_power_levels_count_before_version_10() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({"room_version": "9", "preset": "public_chat"}),
    )
    .await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.power_levels",
        "",
        json!({"users": {&alice.user_id: 100, &bob.user_id: "60"},
               "state_default": "50", "kick": "50", "users_default": 0}),
    )
    .await;
    let topic = json!({"topic": "by bob"});
    set_state(&server, &bob, &room, "m.room.topic", "", topic.clone()).await;
    let (st, body) = server
        .put(
            &room_path(&room, "/state/m.room.topic/"),
            carol.token(),
            json!({"topic": "no"}),
        )
        .await;
    assert_error(&(st, body), 403, "M_FORBIDDEN");
    let (st, content) = server
        .get(&room_path(&room, "/state/m.room.topic/"), alice.token())
        .await;
    assert_eq!((st, content), (StatusCode::OK, topic));
    membership_action(&server, &bob, &room, "kick", &carol.user_id).await;
    assert!(!joined_rooms(&server, &carol).await.contains(&room));
}
