//! Compatibility with older clients (matrix-nio and the like): device fields
//! always present, legacy UIA `m.login.password` with a top-level `user`, an
//! `auth` object without `type`, and the pre-`m.mentions` push rules.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";

/// The legacy shape: `user` at the top level of the auth dict, no identifier.
fn legacy_password_auth(user: &str, password: &str, session: &str) -> Value {
    json!({"type": "m.login.password", "user": user, "password": password, "session": session})
}

fn device<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("devices not an array: {list}"))
        .iter()
        .find(|d| d["device_id"] == id)
        .unwrap_or_else(|| panic!("device {id} missing: {list}"))
}

#[track_caller]
fn assert_never_seen(dev: &Value) {
    let obj = dev
        .as_object()
        .unwrap_or_else(|| panic!("device not an object: {dev}"));
    for key in ["last_seen_ip", "last_seen_ts"] {
        assert!(obj.contains_key(key), "{key} key missing: {dev}");
        assert!(
            obj[key].is_null(),
            "{key} should be null for an unused device: {dev}"
        );
    }
}

#[tokio::test]
async fn device_fields_present_and_null_for_an_unused_device() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let unused = server.login("alice", "password123").await;

    let (st, list) = server.get(&format!("{V3}/devices"), alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_never_seen(device(&list, &unused.device_id));
    // The device that made the request has been seen.
    let used = device(&list, &alice.device_id);
    assert_eq!(used["last_seen_ip"], "127.0.0.1", "{list}");
    assert!(used["last_seen_ts"].is_i64(), "{list}");

    let (st, one) = server
        .get(&format!("{V3}/devices/{}", unused.device_id), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{one}");
    assert_eq!(one["device_id"], unused.device_id.as_str());
    assert_never_seen(&one);

    // Also when read back from the database after a restart.
    server.restart().await;
    let (st, list) = server.get(&format!("{V3}/devices"), alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_never_seen(device(&list, &unused.device_id));
    let (st, one) = server
        .get(&format!("{V3}/devices/{}", unused.device_id), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{one}");
    assert_never_seen(&one);

    // Once used, the values are filled in.
    let (st, _) = server
        .get(&format!("{V3}/account/whoami"), unused.token())
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, one) = server
        .get(&format!("{V3}/devices/{}", unused.device_id), alice.token())
        .await;
    assert_eq!(one["last_seen_ip"], "127.0.0.1", "{one}");
    assert!(one["last_seen_ts"].is_i64(), "{one}");
}

#[tokio::test]
async fn device_fields_present_with_a_display_name_too() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (st, body) = server
        .post(
            &format!("{V3}/login"),
            None,
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "password123",
                "initial_device_display_name": "nio laptop",
            }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["device_id"].as_str().unwrap().to_owned();
    let (_, list) = server.get(&format!("{V3}/devices"), alice.token()).await;
    let dev = device(&list, &id);
    assert_eq!(dev["display_name"], "nio laptop", "{dev}");
    assert_never_seen(dev);
}

#[tokio::test]
async fn delete_device_with_legacy_user_field() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let other = server.login("alice", "password123").await;
    let path = format!("{V3}/devices/{}", other.device_id);

    let first = server.delete(&path, alice.token(), Some(json!({}))).await;
    let session = assert_uia_challenge(&first, "m.login.password");
    // Wrong password with the legacy shape: refused, device kept.
    let resp = server
        .delete(
            &path,
            alice.token(),
            Some(json!({"auth": legacy_password_auth("alice", "wrong password", &session)})),
        )
        .await;
    assert_eq!(resp.0, StatusCode::UNAUTHORIZED, "{}", resp.1);
    assert_eq!(resp.1["errcode"], "M_FORBIDDEN", "{}", resp.1);
    let (st, _) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "device deleted with a wrong password");

    let resp = server
        .delete(
            &path,
            alice.token(),
            Some(json!({"auth": legacy_password_auth("alice", "password123", &session)})),
        )
        .await;
    assert_eq!(
        resp.0,
        StatusCode::OK,
        "legacy user auth refused: {}",
        resp.1
    );
    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
    assert_error(
        &server
            .get(&format!("{V3}/account/whoami"), other.token())
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn delete_device_legacy_user_field_with_full_user_id() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let other = server.login("alice", "password123").await;
    let path = format!("{V3}/devices/{}", other.device_id);
    let session = assert_uia_challenge(
        &server.delete(&path, alice.token(), Some(json!({}))).await,
        "m.login.password",
    );
    let resp = server
        .delete(
            &path,
            alice.token(),
            Some(json!({"auth": legacy_password_auth(&alice.user_id, "password123", &session)})),
        )
        .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn legacy_user_field_naming_another_user_is_refused() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let other = server.login("alice", "password123").await;
    let path = format!("{V3}/devices/{}", other.device_id);
    let session = assert_uia_challenge(
        &server.delete(&path, alice.token(), Some(json!({}))).await,
        "m.login.password",
    );
    // bob's own (correct) password does not delete alice's device: 403, as
    // Synapse (authenticating as another user is no retryable stage).
    let resp = server
        .delete(
            &path,
            alice.token(),
            Some(json!({"auth": legacy_password_auth("bob", "password123", &session)})),
        )
        .await;
    assert_eq!(resp.0, StatusCode::FORBIDDEN, "{}", resp.1);
    assert_eq!(resp.1["errcode"], "M_FORBIDDEN", "{}", resp.1);
    let (st, _) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn change_password_with_legacy_user_field() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("{V3}/account/password");
    let body = json!({"new_password": "a brand new password", "logout_devices": false});
    let session = assert_uia_challenge(
        &server.post(&path, alice.token(), body.clone()).await,
        "m.login.password",
    );
    let mut with_auth = body.clone();
    with_auth["auth"] = legacy_password_auth("alice", "password123", &session);
    let (st, resp) = server.post(&path, alice.token(), with_auth).await;
    assert_eq!(st, StatusCode::OK, "legacy user auth refused: {resp}");

    server.login("alice", "a brand new password").await;
    let (st, _) = server
        .post(
            &format!("{V3}/login"),
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "password123"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "old password still works");
}

#[tokio::test]
async fn register_auth_without_type_gets_the_challenge() {
    let server = TestServer::start().await;
    let path = format!("{V3}/register");
    let body = json!({"username": "carol", "password": "carols password", "auth": {}});
    let session = assert_uia_challenge(&server.post(&path, None, body).await, "m.login.dummy");

    // An auth dict holding only the session is no attempt either.
    let body =
        json!({"username": "carol", "password": "carols password", "auth": {"session": session}});
    let session = assert_uia_challenge(&server.post(&path, None, body).await, "m.login.dummy");
    // carol does not exist yet.
    let (st, avail) = server
        .get(&format!("{V3}/register/available?username=carol"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{avail}");
    assert_eq!(avail["available"], true, "{avail}");

    // Completing the stage with the session registers.
    let body = json!({
        "username": "carol",
        "password": "carols password",
        "auth": {"type": "m.login.dummy", "session": session},
    });
    let (st, resp) = server.post(&path, None, body).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["user_id"], "@carol:test.local", "{resp}");
}

#[tokio::test]
async fn delete_devices_auth_without_type_gets_the_challenge() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let other = server.login("alice", "password123").await;
    let path = format!("{V3}/delete_devices");
    let devices = json!([other.device_id]);
    let resp = server
        .post(
            &path,
            alice.token(),
            json!({"devices": devices, "auth": {}}),
        )
        .await;
    let session = assert_uia_challenge(&resp, "m.login.password");
    assert!(
        resp.1.get("errcode").is_none_or(Value::is_null),
        "a type-less auth is no failed attempt: {}",
        resp.1
    );
    let resp = server
        .post(
            &path,
            alice.token(),
            json!({"devices": devices, "auth": {"session": session}}),
        )
        .await;
    let session = assert_uia_challenge(&resp, "m.login.password");
    let (st, _) = server
        .get(&format!("{V3}/devices/{}", other.device_id), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "device deleted without authentication");

    let (st, body) = server
        .post(
            &path,
            alice.token(),
            json!({
                "devices": devices,
                "auth": {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "alice"},
                    "password": "password123",
                    "session": session,
                },
            }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server
            .get(&format!("{V3}/devices/{}", other.device_id), alice.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn delete_device_auth_without_type_gets_the_challenge() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let other = server.login("alice", "password123").await;
    let path = format!("{V3}/devices/{}", other.device_id);
    let resp = server
        .request(
            Method::DELETE,
            &path,
            alice.token(),
            Some(json!({"auth": {}})),
        )
        .await;
    assert_uia_challenge(&resp, "m.login.password");
    let (st, _) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK);
}

fn rules<'a>(ruleset: &'a Value, kind: &str) -> &'a Vec<Value> {
    ruleset[kind]
        .as_array()
        .unwrap_or_else(|| panic!("{kind} not an array: {ruleset}"))
}

fn position(list: &[Value], id: &str) -> Option<usize> {
    list.iter().position(|r| r["rule_id"] == id)
}

#[track_caller]
fn assert_highlights(rule: &Value) {
    let actions = rule["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("actions: {rule}"));
    assert!(actions.iter().any(|a| a == "notify"), "{rule}");
    assert!(
        actions
            .iter()
            .any(|a| a["set_tweak"] == "highlight" && a.get("value").is_none_or(|v| v == true)),
        "no highlight tweak: {rule}"
    );
    assert_eq!(rule["default"], true, "{rule}");
    assert_eq!(rule["enabled"], true, "{rule}");
}

#[track_caller]
fn assert_legacy_rules(ruleset: &Value, localpart: &str) {
    let overrides = rules(ruleset, "override");
    let user_mention = position(overrides, ".m.rule.is_user_mention")
        .unwrap_or_else(|| panic!("no .m.rule.is_user_mention: {ruleset}"));
    let display_name = position(overrides, ".m.rule.contains_display_name")
        .unwrap_or_else(|| panic!("no .m.rule.contains_display_name: {ruleset}"));
    assert_eq!(
        display_name,
        user_mention + 1,
        "contains_display_name not right after is_user_mention"
    );
    let rule = &overrides[display_name];
    assert_eq!(
        rule["conditions"],
        json!([{"kind": "contains_display_name"}]),
        "{rule}"
    );
    assert_highlights(rule);
    assert!(
        rule["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["set_tweak"] == "sound" && a["value"] == "default"),
        "{rule}"
    );

    let room_mention = position(overrides, ".m.rule.is_room_mention")
        .unwrap_or_else(|| panic!("no .m.rule.is_room_mention: {ruleset}"));
    let roomnotif = position(overrides, ".m.rule.roomnotif")
        .unwrap_or_else(|| panic!("no .m.rule.roomnotif: {ruleset}"));
    assert_eq!(
        roomnotif,
        room_mention + 1,
        "roomnotif not right after is_room_mention"
    );
    let rule = &overrides[roomnotif];
    let conditions = rule["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("{rule}"));
    assert!(
        conditions
            .contains(&json!({"kind": "event_match", "key": "content.body", "pattern": "@room"})),
        "{rule}"
    );
    assert!(
        conditions.contains(&json!({"kind": "sender_notification_permission", "key": "room"})),
        "{rule}"
    );
    assert_highlights(rule);
    // The master rule still comes first, and each rule appears once.
    assert_eq!(overrides[0]["rule_id"], ".m.rule.master");
    for id in [".m.rule.contains_display_name", ".m.rule.roomnotif"] {
        assert_eq!(
            overrides.iter().filter(|r| r["rule_id"] == id).count(),
            1,
            "{id}"
        );
    }

    let content = rules(ruleset, "content");
    let idx = position(content, ".m.rule.contains_user_name")
        .unwrap_or_else(|| panic!("no .m.rule.contains_user_name in content: {ruleset}"));
    let rule = &content[idx];
    assert_eq!(rule["pattern"], localpart, "{rule}");
    assert_highlights(rule);
}

#[tokio::test]
async fn pushrules_include_the_pre_mentions_rules() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (st, body) = server.get(&format!("{V3}/pushrules/"), alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_legacy_rules(&body["global"], "alice");
    let (st, body) = server
        .get(&format!("{V3}/pushrules/global/"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_legacy_rules(&body, "alice");
}

#[tokio::test]
async fn pushrules_contains_user_name_uses_the_users_own_localpart() {
    let server = TestServer::start().await;
    let bob = server.user("bob_the.builder").await;
    let (st, body) = server.get(&format!("{V3}/pushrules/"), bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_legacy_rules(&body["global"], "bob_the.builder");
    // r0 too (what older clients call).
    let (st, body) = server
        .get("/_matrix/client/r0/pushrules/", bob.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_legacy_rules(&body["global"], "bob_the.builder");
}
