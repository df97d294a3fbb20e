//! `POST /_dendrite/admin/purgeRoom/{roomID}`: nothing about the room is left
//! in any table, and the room id space is usable again without a restart.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// Every table of the schema that has a `room_id` column.
async fn tables_with_room_id(server: &TestServer) -> Vec<String> {
    let names: Vec<&str> = vec![
        "accounts",
        "devices",
        "access_tokens",
        "profiles",
        "filters",
        "registration_tokens",
        "rooms",
        "events",
        "event_relations",
        "state_groups",
        "state_group_entries",
        "event_expiry",
        "current_state",
        "forward_extremities",
        "event_transactions",
        "room_aliases",
        "forgotten_rooms",
        "account_data",
        "receipts",
        "presence",
        "event_reports",
        "room_reports",
        "user_reports",
        "server_notice_rooms",
        "blocked_rooms",
        "room_history_floors",
        "schema_migrations",
        // A room's jobs name it in `job_room`: they outlive its purge.
        "jobs",
        // Send-to-device (v14, v38, v43): about devices, not rooms.
        "to_device_sends",
        "to_device_acks",
        "to_device_chunks",
        "stream_high_water",
        // Key backups (v19): a user's; their keys name rooms and go with a
        // purged room, as Synapse's e2e_room_keys.
        "key_backup_versions",
        "key_backup_sessions",
        // Device keys (v18): about devices and users, not rooms.
        "e2e_device_keys",
        "e2e_one_time_keys",
        "e2e_fallback_keys",
        "device_list_changes",
        // Media (v25): a user's uploads; they stay when a room is purged
        // (as Synapse), unless an admin deletes them.
        "media",
        // OpenID tokens and custom profile fields (v30): a user's.
        "openid_tokens",
        "profile_fields",
        // Application services' delivery state (v32): per service.
        "appservice_state",
        // Application services' network room lists (v42): by room.
        "appservice_room_list",
        // The push recorder's stream position (v47): the server's.
        "push_state",
    ];
    let mut out = Vec::new();
    for t in names {
        let q = if backend() == "postgres" {
            format!(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = '{t}' AND column_name = 'room_id'"
            )
        } else {
            format!("SELECT COUNT(*) FROM pragma_table_info('{t}') WHERE name = 'room_id'")
        };
        if server.sql_count(&q).await > 0 {
            out.push(t.to_owned());
        }
    }
    out
}

/// Every table must be in the list above: a new table must be added there
/// (and to the purge) deliberately.
async fn table_count(server: &TestServer) -> i64 {
    let q = if backend() == "postgres" {
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
    } else {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    };
    server.sql_count(q).await
}

#[tokio::test]
async fn purge_room_leaves_no_row_behind() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "doomed", "name": "Doomed"}),
    )
    .await;
    join(&server, &bob, &room).await;
    let mut last = String::new();
    for i in 0..5 {
        last = send_text(&server, &alice, &room, &format!("message {i}")).await;
    }
    // Rows in every room table: receipts, account data, tags, reports, relations, redactions.
    let st = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{last}"),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    let st = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{room}/tags/u.work",
                bob.user_id
            ),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    let st = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report/{last}"),
            bob.token(),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    let st = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report"),
            bob.token(),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    let st = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/r1"),
            bob.token(),
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": last, "key": "x"}}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    // An ephemeral message's expiry (`event_expiry`).
    let far = server.now_ms() + 3_600_000;
    send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "later", "org.matrix.self_destruct_after": far}),
    )
    .await;
    // A backed-up room key of the room.
    let (st, body) = server
        .post(
            "/_matrix/client/v3/room_keys/version",
            bob.token(),
            json!({"algorithm": "m.megolm_backup.v1", "auth_data": {}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let st = server
        .put(
            &format!("/_matrix/client/v3/room_keys/keys/{room}/s1?version=1"),
            bob.token(),
            json!({"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": {}}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    let other = create_room(&server, &alice, json!({"name": "Survivor"})).await;
    // An image sent in the room: media is not the room's, and stays.
    let image = upload(&server, &alice, b"an image", Some("image/png"), None).await;
    send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "image.png", "url": format!("mxc://{}/{image}", server.server_name)}),
    )
    .await;

    let tables = tables_with_room_id(&server).await;
    assert!(tables.len() >= 12, "room tables found: {tables:?}");
    // 41 since v14-v27; v15's user_directory_words, v18's four key tables,
    // v20's two cross-signing tables, v25's media and v27's media_thumbnails
    // are per user, device or media (no room id: nothing of a room to purge).
    // 44 with v26's push tables (pushers per device; the queue and
    // notifications by room); 47 with v28's url_previews (by URL) and
    // v30's openid_tokens and profile_fields (per user); 48 with v32's
    // appservice_state (per application service); 49 with v38, which
    // replaced device_inbox with to_device_sends and to_device_acks; 50
    // with v42's appservice_room_list (by room: purged); 51 with v43's
    // to_device_chunks (a send's contents in pieces); 56 with v46's
    // server_signing_keys and server_key_responses (per server) and
    // remote_device_lists, remote_devices and remote_cross_signing_keys
    // (per remote user); 57 with v47's push_state (the push recorder's
    // position: the server's).
    assert_eq!(
        table_count(&server).await,
        57,
        "a table was added: list it in this test and in the purge"
    );

    let st = server
        .post(
            &format!("/_dendrite/admin/purgeRoom/{room}"),
            admin.token(),
            json!({}),
        )
        .await;
    assert_eq!(st.0, StatusCode::OK, "{}", st.1);
    assert_eq!(st.1, json!({}));
    let status_path = format!("/_synapse/admin/v2/rooms/{room}/delete_status");
    server
        .poll_get(
            &status_path,
            admin.token(),
            Duration::from_secs(20),
            |body| {
                let status = body["results"][0]["status"].as_str().unwrap_or_default();
                assert_ne!(status, "failed", "{body}");
                status == "complete"
            },
        )
        .await;

    for t in &tables {
        let n = server
            .sql_count(&format!(
                "SELECT COUNT(*) FROM {t} WHERE room_id = '{room}'"
            ))
            .await;
        assert_eq!(n, 0, "{t} still has rows for the purged room");
    }
    // The backup that held the room's key counts it no more, and its etag
    // moved (1 after the upload).
    let (st, backup) = server
        .get("/_matrix/client/v3/room_keys/version", bob.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{backup}");
    assert_eq!(
        (&backup["count"], &backup["etag"]),
        (&json!(0), &json!("2"))
    );
    // Tables keyed through events or state groups.
    assert_eq!(
        server
            .sql_count(&format!(
                "SELECT COUNT(*) FROM event_transactions WHERE event_id = '{last}'"
            ))
            .await,
        0
    );
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM state_group_entries WHERE state_group NOT IN (SELECT state_group FROM state_groups)").await,
        0
    );
    let got = download(&server, &download_v1(&server, &image), bob.token()).await;
    assert_eq!(
        (got.status, got.bytes),
        (StatusCode::OK, b"an image".to_vec())
    );
    // The other room is untouched, and the purged room is unknown now.
    assert!(
        server
            .sql_count(&format!(
                "SELECT COUNT(*) FROM events WHERE room_id = '{other}'"
            ))
            .await
            > 0
    );
    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert_error(
        &server
            .get(
                "/_matrix/client/v3/directory/room/%23doomed:test.local",
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    let (_, joined) = server
        .get("/_matrix/client/v3/joined_rooms", bob.token())
        .await;
    assert!(
        !joined["joined_rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &Value::String(room.clone()))
    );
    // The alias can be taken again at once, by a new room.
    let again = create_room(&server, &alice, json!({"room_alias_name": "doomed"})).await;
    assert_ne!(again, room);
}

#[tokio::test]
async fn purge_room_errors() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let user = server.user("plain").await;
    assert_error(
        &server
            .post(
                "/_dendrite/admin/purgeRoom/!nope:test.local",
                admin.token(),
                json!({}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .post(
                "/_dendrite/admin/purgeRoom/notaroom",
                admin.token(),
                json!({}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .post(
                "/_dendrite/admin/purgeRoom/!nope:test.local",
                user.token(),
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .post(
                "/_dendrite/admin/purgeRoom/!nope:test.local",
                None,
                json!({}),
            )
            .await,
        401,
        "M_MISSING_TOKEN",
    );
}
