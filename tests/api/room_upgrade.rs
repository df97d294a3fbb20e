//! `POST /rooms/{roomId}/upgrade`: the replacement room, the tombstone, copied
//! state, bans and power levels, restricted old room, moved aliases and
//! directory listing, tags and push rules carried on join, and the errors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";

async fn upgrade(
    server: &TestServer,
    who: &Session,
    room: &str,
    version: &str,
) -> (StatusCode, Value) {
    server
        .post(
            &format!("{V3}/rooms/{}/upgrade", enc(room)),
            who.token(),
            json!({"new_version": version}),
        )
        .await
}

/// A public room of version 10 (the version upgrades start from here).
async fn public_v10_room(server: &TestServer, who: &Session) -> String {
    create_room(
        server,
        who,
        json!({"room_version": "10", "preset": "public_chat"}),
    )
    .await
}

#[tokio::test]
async fn upgrade_replaces_the_room_and_carries_its_state() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = public_v10_room(&server, &alice).await;
    let copied = [
        ("m.room.name", json!({"name": "name"})),
        ("m.room.topic", json!({"topic": "topic"})),
        ("m.room.join_rules", json!({"join_rule": "public"})),
        ("m.room.guest_access", json!({"guest_access": "forbidden"})),
        (
            "m.room.history_visibility",
            json!({"history_visibility": "joined"}),
        ),
        ("m.room.avatar", json!({"url": "mxc://example.org/avatar"})),
        (
            "m.room.encryption",
            json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        ),
    ];
    for (ty, content) in &copied {
        set_state(&server, &alice, &room, ty, "", content.clone()).await;
    }
    set_state(
        &server,
        &alice,
        &room,
        "m.room.member",
        "@bob:example.org",
        json!({"membership": "ban"}),
    )
    .await;

    let (st, body) = upgrade(&server, &alice, &room, "11").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap().to_owned();
    assert_ne!(new_room, room);

    let tombstone = current_state_content(&server, &alice, &room, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], new_room, "{tombstone}");
    let create = current_state_content(&server, &alice, &new_room, "m.room.create", "").await;
    assert_eq!(create["room_version"], "11", "{create}");
    assert_eq!(create["predecessor"]["room_id"], room, "{create}");
    // The predecessor names the tombstone (the new room's id was chosen first).
    let (_, old_state) = server
        .get(&format!("{V3}/rooms/{}/state", enc(&room)), alice.token())
        .await;
    let tombstone_id = old_state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.tombstone")
        .map(|e| e["event_id"].clone())
        .unwrap();
    assert_eq!(create["predecessor"]["event_id"], tombstone_id, "{create}");
    for (ty, content) in &copied {
        assert_eq!(
            &current_state_content(&server, &alice, &new_room, ty, "").await,
            content,
            "{ty}"
        );
    }
    let ban = current_state_content(
        &server,
        &alice,
        &new_room,
        "m.room.member",
        "@bob:example.org",
    )
    .await;
    assert_eq!(ban, json!({"membership": "ban"}));
    // The old room's ordinary members can no longer speak or invite there.
    let old_pl = current_state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    assert_eq!(old_pl["events_default"], 50, "{old_pl}");
    assert_eq!(old_pl["invite"], 50, "{old_pl}");
    // The new room's levels are the old room's before the restriction.
    let new_pl = current_state_content(&server, &alice, &new_room, "m.room.power_levels", "").await;
    assert_eq!(new_pl["events_default"], 0, "{new_pl}");
    assert_eq!(new_pl["users"][&alice.user_id], 100, "{new_pl}");
}

#[tokio::test]
async fn a_moderator_upgrades_with_their_own_level_kept() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = public_v10_room(&server, &alice).await;
    join(&server, &bob, &room).await;
    let mut pl = current_state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    pl["users"][&bob.user_id] = json!(50);
    pl["events"]["m.room.tombstone"] = json!(50);
    set_state(
        &server,
        &alice,
        &room,
        "m.room.power_levels",
        "",
        pl.clone(),
    )
    .await;

    let (st, body) = upgrade(&server, &bob, &room, "11").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap();
    assert_eq!(
        current_state_content(&server, &bob, new_room, "m.room.power_levels", "").await,
        pl
    );
    // Bob may not change the old room's levels: they stay as they were.
    assert_eq!(
        current_state_content(&server, &bob, &room, "m.room.power_levels", "").await,
        pl
    );
}

#[tokio::test]
async fn upgrade_moves_aliases_and_the_directory_listing() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = public_v10_room(&server, &alice).await;
    let (main, alt) = ("#up-main:test.local", "#up-alt:test.local");
    for alias in [main, alt] {
        let (st, body) = server
            .put(
                &format!("{V3}/directory/room/{}", enc(alias)),
                alice.token(),
                json!({"room_id": room}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    set_state(
        &server,
        &alice,
        &room,
        "m.room.canonical_alias",
        "",
        json!({"alias": main, "alt_aliases": [alt]}),
    )
    .await;
    let (st, body) = server
        .put(
            &format!("{V3}/directory/list/room/{}", enc(&room)),
            alice.token(),
            json!({"visibility": "public"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let (st, body) = upgrade(&server, &alice, &room, "11").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap().to_owned();
    for alias in [main, alt] {
        let (st, body) = server
            .get(
                &format!("{V3}/directory/room/{}", enc(alias)),
                alice.token(),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(body["room_id"], new_room, "{alias}: {body}");
    }
    assert_eq!(
        current_state_content(&server, &alice, &new_room, "m.room.canonical_alias", "").await,
        json!({"alias": main, "alt_aliases": [alt]})
    );
    assert_eq!(
        current_state_content(&server, &alice, &room, "m.room.canonical_alias", "").await,
        json!({})
    );
    for (r, visibility) in [(&room, "private"), (&new_room, "public")] {
        let (_, body) = server
            .get(&format!("{V3}/directory/list/room/{}", enc(r)), None)
            .await;
        assert_eq!(body["visibility"], visibility, "{r}: {body}");
    }
}

#[tokio::test]
async fn joining_the_new_room_carries_tags_and_push_rules() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = public_v10_room(&server, &alice).await;
    join(&server, &bob, &room).await;
    let (st, body) = server
        .put(
            &format!(
                "{V3}/user/{}/rooms/{}/tags/u.work",
                enc(&bob.user_id),
                enc(&room)
            ),
            bob.token(),
            json!({"order": 0.5}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server
        .put(
            &format!("{V3}/pushrules/global/room/{}", enc(&room)),
            bob.token(),
            json!({"actions": ["notify"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let (st, body) = upgrade(&server, &alice, &room, "11").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap().to_owned();
    join(&server, &bob, &new_room).await;
    let (_, tags) = server
        .get(
            &format!(
                "{V3}/user/{}/rooms/{}/tags",
                enc(&bob.user_id),
                enc(&new_room)
            ),
            bob.token(),
        )
        .await;
    assert_eq!(tags["tags"]["u.work"]["order"], 0.5, "{tags}");
    let (st, rule) = server
        .get(
            &format!("{V3}/pushrules/global/room/{}", enc(&new_room)),
            bob.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{rule}");
    assert_eq!(rule["actions"], json!(["notify"]), "{rule}");
}

#[tokio::test]
async fn upgrade_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    assert_error(
        &upgrade(&server, &alice, &room, "my_version").await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    assert_error(
        &upgrade(&server, &alice, "!bogus:test.local", "11").await,
        404,
        "M_NOT_FOUND",
    );
    // Not joined, then joined without the power to send a tombstone.
    assert_error(
        &upgrade(&server, &bob, &room, "11").await,
        403,
        "M_FORBIDDEN",
    );
    join(&server, &bob, &room).await;
    assert_error(
        &upgrade(&server, &bob, &room, "11").await,
        403,
        "M_FORBIDDEN",
    );
    let (st, _) = server
        .get(
            &format!("{V3}/rooms/{}/state/m.room.tombstone/", enc(&room)),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "no tombstone was sent");
    assert_error(
        &server
            .post(
                &format!("{V3}/rooms/{}/upgrade", enc(&room)),
                alice.token(),
                json!({}),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .request_raw(
                reqwest::Method::POST,
                &format!("{V3}/rooms/{}/upgrade", enc(&room)),
                alice.token(),
                "not json",
            )
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &upgrade(&server, &alice, "not-a-room-id", "11").await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn a_tombstone_cannot_point_at_its_own_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for path in [
        format!("{V3}/rooms/{}/send/m.room.tombstone/t1", enc(&room)),
        format!("{V3}/rooms/{}/state/m.room.tombstone/", enc(&room)),
    ] {
        let resp = server
            .put(&path, alice.token(), json!({"replacement_room": room}))
            .await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
}

#[tokio::test]
async fn an_upgrade_to_version_12_links_the_rooms_after_the_creation() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_version": "10"})).await;
    let (st, body) = upgrade(&server, &alice, &room, "12").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap().to_owned();
    let create = current_state_content(&server, &alice, &new_room, "m.room.create", "").await;
    assert_eq!(create["room_version"], "12", "{create}");
    assert_eq!(create["predecessor"], json!({"room_id": room}), "{create}");
    let tombstone = current_state_content(&server, &alice, &room, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], new_room, "{tombstone}");
}

#[tokio::test]
async fn an_upgrade_to_old_versions_works() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for version in ["1", "2", "5", "9"] {
        let room = create_room(&server, &alice, json!({})).await;
        let (st, body) = upgrade(&server, &alice, &room, version).await;
        assert_eq!(st, StatusCode::OK, "to {version}: {body}");
        let new_room = body["replacement_room"].as_str().unwrap().to_owned();
        let create = current_state_content(&server, &alice, &new_room, "m.room.create", "").await;
        assert_eq!(create["room_version"], version, "{create}");
        assert!(create["predecessor"]["event_id"].is_string(), "{create}");
    }
}
