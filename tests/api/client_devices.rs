//! /devices, /devices/{id}, /delete_devices and last-seen tracking.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

/// Logs in with an explicit initial device display name.
async fn login_named(server: &TestServer, localpart: &str, display_name: &str) -> Session {
    let (st, body) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": "password123",
                "initial_device_display_name": display_name,
            }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "login: {body}");
    Session::from_answer(&body)
}

#[tokio::test]
async fn devices_lists_every_device_of_the_user_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let alice2 = server.login("alice", "password123").await;
    let bob = server.user("bob").await;

    let (st, body) = server
        .get("/_matrix/client/v3/devices", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let mut expected = vec![alice.device_id.clone(), alice2.device_id.clone()];
    expected.sort();
    assert_eq!(device_ids(&body), expected, "{body}");

    // The other session sees the same list.
    let (st, body2) = server
        .get("/_matrix/client/v3/devices", alice2.token())
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(device_ids(&body2), expected);

    let (st, body) = server.get("/_matrix/client/v3/devices", bob.token()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(device_ids(&body), vec![bob.device_id.clone()]);

    // r0 alias.
    let (st, body) = server.get("/_matrix/client/r0/devices", bob.token()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(device_ids(&body), vec![bob.device_id.clone()]);
}

#[tokio::test]
async fn devices_requires_a_valid_token() {
    let server = TestServer::start().await;
    assert_error(
        &server.get("/_matrix/client/v3/devices", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .get("/_matrix/client/v3/devices", Some("not-a-token"))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.get("/_matrix/client/v3/devices/ABC", None).await,
        401,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn last_seen_is_recorded_and_visible_at_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let before = now_ms();
    let ua = "MyelinDeviceTest/1.0 (custom agent)";
    let (st, body) = get_with_ua(
        &server,
        "/_matrix/client/v3/account/whoami",
        &alice.access_token,
        ua,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let (st, body) = get_with_ua(
        &server,
        "/_matrix/client/v3/devices",
        &alice.access_token,
        ua,
    )
    .await;
    let after = now_ms();
    assert_eq!(st, StatusCode::OK, "{body}");
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{body}");
    let dev = &devices[0];
    assert_eq!(dev["device_id"], alice.device_id.as_str());
    assert_eq!(dev["last_seen_ip"], "127.0.0.1", "{body}");
    let ts = dev["last_seen_ts"]
        .as_i64()
        .unwrap_or_else(|| panic!("last_seen_ts not an integer: {body}"));
    assert!(
        ts >= before - 1000 && ts <= after + 1000,
        "last_seen_ts {ts} not in [{before}, {after}]"
    );

    // The user agent is visible through whois (GET /devices has no UA field in the spec).
    let path = format!("/_matrix/client/v3/admin/whois/{}", alice.user_id);
    let (st, body) = get_with_ua(&server, &path, &alice.access_token, ua).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let conns = &body["devices"][&alice.device_id]["sessions"][0]["connections"];
    let conn = &conns[0];
    assert_eq!(conn["user_agent"], ua, "{body}");
    assert_eq!(conn["ip"], "127.0.0.1", "{body}");
    let seen = conn["last_seen"]
        .as_i64()
        .unwrap_or_else(|| panic!("last_seen not an integer: {body}"));
    assert!(
        seen >= before - 1000 && seen <= now_ms() + 1000,
        "last_seen {seen} not recent"
    );
}

#[tokio::test]
async fn last_seen_user_agent_follows_the_latest_request() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    get_with_ua(
        &server,
        "/_matrix/client/v3/account/whoami",
        &alice.access_token,
        "FirstAgent/1",
    )
    .await;
    let (st, _) = get_with_ua(
        &server,
        "/_matrix/client/v3/account/whoami",
        &alice.access_token,
        "SecondAgent/2",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let path = format!("/_matrix/client/v3/admin/whois/{}", alice.user_id);
    let (st, body) = get_with_ua(&server, &path, &alice.access_token, "SecondAgent/2").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body["devices"][&alice.device_id]["sessions"][0]["connections"][0]["user_agent"],
        "SecondAgent/2",
        "{body}"
    );
}

#[tokio::test]
async fn get_device_by_id() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let phone = login_named(&server, "alice", "Alice's phone").await;
    // One authenticated request first, so last-seen data exists.
    let (st, _) = server
        .get("/_matrix/client/v3/account/whoami", phone.token())
        .await;
    assert_eq!(st, StatusCode::OK);

    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);
    let (st, body) = server.get(&path, phone.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], phone.device_id.as_str());
    assert_eq!(body["display_name"], "Alice's phone");
    assert_eq!(body["last_seen_ip"], "127.0.0.1", "{body}");

    assert_error(
        &server
            .get("/_matrix/client/v3/devices/NOSUCHDEVICE", phone.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn get_device_of_another_user_is_not_found() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    // A login device for bob, so its id is surely not one alice also has.
    let bob = server.login("bob", "password123").await;
    let path = format!("/_matrix/client/v3/devices/{}", bob.device_id);
    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
    let (st, body) = server.get(&path, bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn put_device_renames_it() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    let (st, body) = server
        .put(
            &path,
            alice.token(),
            json!({"display_name": "Renamed laptop"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    let (st, body) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["display_name"], "Renamed laptop", "{body}");

    let (_, list) = server
        .get("/_matrix/client/v3/devices", alice.token())
        .await;
    let dev = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == alice.device_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(dev["display_name"], "Renamed laptop");

    // Rename again to check it is not write-once.
    let (st, _) = server
        .put(&path, alice.token(), json!({"display_name": "Second name"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = server.get(&path, alice.token()).await;
    assert_eq!(body["display_name"], "Second name");
}

#[tokio::test]
async fn put_unknown_device_is_not_found() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    assert_error(
        &server
            .put(
                "/_matrix/client/v3/devices/NOSUCHDEVICE",
                alice.token(),
                json!({"display_name": "x"}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Another user's device cannot be renamed either.
    server.user("bob").await;
    let bob = server.login("bob", "password123").await;
    let path = format!("/_matrix/client/v3/devices/{}", bob.device_id);
    assert_error(
        &server
            .put(&path, alice.token(), json!({"display_name": "hacked"}))
            .await,
        404,
        "M_NOT_FOUND",
    );
    let (st, body) = server.get(&path, bob.token()).await;
    assert_eq!(st, StatusCode::OK);
    assert_ne!(body["display_name"], "hacked");
}

#[tokio::test]
async fn put_device_malformed_json() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    assert_error(
        &server
            .request_raw(Method::PUT, &path, alice.token(), "{not json")
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &server
            .put(&path, alice.token(), json!({"display_name": 42}))
            .await,
        400,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn delete_device_requires_uia_then_kills_its_token() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let other = server.login("alice", "password123").await;
    let path = format!("/_matrix/client/v3/devices/{}", other.device_id);

    // Without auth: the UIA challenge, and nothing is deleted.
    let first = server.delete(&path, alice.token(), Some(json!({}))).await;
    let session = assert_uia_challenge(&first, "m.login.password");
    let (st, _) = server
        .get("/_matrix/client/v3/account/whoami", other.token())
        .await;
    assert_eq!(st, StatusCode::OK, "device deleted before UIA completed");

    // Wrong password: 401 with the UIA body and M_FORBIDDEN.
    let wrong = server
        .delete(
            &path,
            alice.token(),
            Some(json!({"auth": password_auth("alice", "wrongpassword", &session)})),
        )
        .await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED, "{}", wrong.1);
    assert_eq!(wrong.1["errcode"], "M_FORBIDDEN", "{}", wrong.1);
    assert!(wrong.1["flows"].is_array(), "{}", wrong.1);
    let (st, _) = server
        .get("/_matrix/client/v3/account/whoami", other.token())
        .await;
    assert_eq!(st, StatusCode::OK, "device deleted with a wrong password");

    // Correct password.
    let (st, body) = with_uia(
        &server,
        FirstRound::Challenge,
        UiaRequest::delete(&path, alice.token(), json!({})),
        "alice",
        "password123",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    assert_error(
        &server
            .get("/_matrix/client/v3/account/whoami", other.token())
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    // The caller's own device is untouched; the deleted one is gone.
    let (st, list) = server
        .get("/_matrix/client/v3/devices", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(device_ids(&list), vec![alice.device_id.clone()]);
    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn delete_own_current_device() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    let (st, body) = with_uia(
        &server,
        FirstRound::Challenge,
        UiaRequest::delete(&path, alice.token(), json!({})),
        "alice",
        "password123",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server
            .get("/_matrix/client/v3/devices", alice.token())
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn delete_another_users_device_is_not_found() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let bob = server.login("bob", "password123").await;
    let path = format!("/_matrix/client/v3/devices/{}", bob.device_id);

    // The server may check existence before or after UIA; either way the
    // end result must be 404 and bob's device must survive.
    let first = server.delete(&path, alice.token(), Some(json!({}))).await;
    let result = if first.0 == StatusCode::UNAUTHORIZED {
        let session = assert_uia_challenge(&first, "m.login.password");
        server
            .delete(
                &path,
                alice.token(),
                Some(json!({"auth": password_auth("alice", "password123", &session)})),
            )
            .await
    } else {
        first
    };
    assert_error(&result, 404, "M_NOT_FOUND");
    let (st, _) = server
        .get("/_matrix/client/v3/account/whoami", bob.token())
        .await;
    assert_eq!(st, StatusCode::OK, "bob's device was deleted by alice");
}

#[tokio::test]
async fn delete_devices_bulk() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let d1 = server.login("alice", "password123").await;
    let d2 = server.login("alice", "password123").await;
    let d3 = server.login("alice", "password123").await;
    let body = json!({"devices": [d1.device_id, d2.device_id]});

    let first = server
        .post(
            "/_matrix/client/v3/delete_devices",
            alice.token(),
            body.clone(),
        )
        .await;
    let session = assert_uia_challenge(&first, "m.login.password");
    let (st, _) = server
        .get("/_matrix/client/v3/account/whoami", d1.token())
        .await;
    assert_eq!(st, StatusCode::OK, "deleted before UIA completed");

    let mut authed = body.clone();
    // Spec: the m.id.user identifier may be the full user id.
    authed["auth"] = password_auth(&alice.user_id, "password123", &session);
    let (st, resp) = server
        .post("/_matrix/client/v3/delete_devices", alice.token(), authed)
        .await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp, json!({}));

    for s in [&d1, &d2] {
        assert_error(
            &server
                .get("/_matrix/client/v3/account/whoami", s.token())
                .await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    for s in [&alice, &d3] {
        let (st, _) = server
            .get("/_matrix/client/v3/account/whoami", s.token())
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let (_, list) = server
        .get("/_matrix/client/v3/devices", alice.token())
        .await;
    let mut expected = vec![alice.device_id.clone(), d3.device_id.clone()];
    expected.sort();
    assert_eq!(device_ids(&list), expected);
}

#[tokio::test]
async fn delete_devices_wrong_password_deletes_nothing() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let d1 = server.login("alice", "password123").await;
    let body = json!({"devices": [d1.device_id]});
    let first = server
        .post(
            "/_matrix/client/v3/delete_devices",
            alice.token(),
            body.clone(),
        )
        .await;
    let session = assert_uia_challenge(&first, "m.login.password");
    let mut authed = body;
    authed["auth"] = password_auth("alice", "not-the-password", &session);
    let resp = server
        .post("/_matrix/client/v3/delete_devices", alice.token(), authed)
        .await;
    assert_eq!(resp.0, StatusCode::UNAUTHORIZED, "{}", resp.1);
    assert_eq!(resp.1["errcode"], "M_FORBIDDEN", "{}", resp.1);
    let (st, _) = server
        .get("/_matrix/client/v3/account/whoami", d1.token())
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn delete_devices_cannot_touch_other_users_devices() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let bob = server.login("bob", "password123").await;
    let (st, body) = with_uia(
        &server,
        FirstRound::Challenge,
        UiaRequest::post(
            "/_matrix/client/v3/delete_devices",
            alice.token(),
            json!({"devices": [bob.device_id]}),
        ),
        "alice",
        "password123",
    )
    .await;
    // Contract silent on foreign ids (Synapse ignores unknown ids: 200);
    // accept 200 or 404, but bob's device must survive.
    assert!(
        st == StatusCode::OK || st == StatusCode::NOT_FOUND,
        "{st}: {body}"
    );
    let (st, _) = server
        .get("/_matrix/client/v3/account/whoami", bob.token())
        .await;
    assert_eq!(st, StatusCode::OK, "alice deleted bob's device");
}

#[tokio::test]
async fn delete_devices_missing_list_is_bad_json() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    // Missing required `devices` -> 400 M_BAD_JSON (body validated before UIA
    // or after; accept the challenge first if the server asks for it).
    let first = server
        .post(
            "/_matrix/client/v3/delete_devices",
            alice.token(),
            json!({}),
        )
        .await;
    let result = if first.0 == StatusCode::UNAUTHORIZED {
        let session = assert_uia_challenge(&first, "m.login.password");
        server
            .post(
                "/_matrix/client/v3/delete_devices",
                alice.token(),
                json!({"auth": password_auth("alice", "password123", &session)}),
            )
            .await
    } else {
        first
    };
    assert_error(&result, 400, "M_BAD_JSON");
}
