//! User-interactive auth sessions are bound to the operation (method, path,
//! body) and the caller that opened them; registration sessions remember
//! their first request's parameters and are idempotent; 401 bodies carry
//! `completed`; authenticating as another user is 403.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";
const REGISTER: &str = "/_matrix/client/v3/register";

fn password_auth_as(user_id: &str, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    });
    if let Some(s) = session {
        auth["session"] = json!(s);
    }
    auth
}

/// Continues a registration session with only `m.login.dummy` (the
/// session supplies the parameters).
async fn continue_registration(server: &TestServer, session: &str) -> (StatusCode, Value) {
    server
        .post(
            REGISTER,
            None,
            json!({"auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await
}

/// The 401 challenge's session, after checking the challenge's shape.
fn challenge_session(resp: &(StatusCode, Value)) -> String {
    assert_eq!(resp.0, StatusCode::UNAUTHORIZED, "{}", resp.1);
    assert!(resp.1["flows"].is_array(), "flows: {}", resp.1);
    assert!(resp.1["params"].is_object(), "params: {}", resp.1);
    assert!(resp.1["completed"].is_array(), "completed: {}", resp.1);
    resp.1["session"]
        .as_str()
        .unwrap_or_else(|| panic!("session: {}", resp.1))
        .to_owned()
}

async fn device_exists(server: &TestServer, who: &Session, device: &str) -> bool {
    let (st, body) = server
        .get(&format!("{V3}/devices/{device}"), who.token())
        .await;
    match st {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("GET device {device}: {other} {body}"),
    }
}

#[tokio::test]
async fn a_session_opened_for_one_device_cannot_delete_another() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let first = server.login("alice", "password123").await;
    let second = server.login("alice", "password123").await;
    let first_path = format!("{V3}/devices/{}", first.device_id);
    let second_path = format!("{V3}/devices/{}", second.device_id);
    let session = challenge_session(
        &server
            .delete(&first_path, alice.token(), Some(json!({})))
            .await,
    );
    let auth = password_auth_as(&alice.user_id, "password123", Some(&session));
    let resp = server
        .delete(&second_path, alice.token(), Some(json!({"auth": auth})))
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    assert!(device_exists(&server, &alice, &second.device_id).await);
    assert!(device_exists(&server, &alice, &first.device_id).await);
    // The session still completes the operation it was opened for.
    let resp = server
        .delete(&first_path, alice.token(), Some(json!({"auth": auth})))
        .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert!(!device_exists(&server, &alice, &first.device_id).await);
    // A completed session cannot be carried to another operation either.
    let resp = server
        .delete(&second_path, alice.token(), Some(json!({"auth": auth})))
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    assert!(device_exists(&server, &alice, &second.device_id).await);
}

#[tokio::test]
async fn a_bulk_delete_session_is_bound_to_its_device_list() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let a = server.login("alice", "password123").await;
    let b = server.login("alice", "password123").await;
    let path = format!("{V3}/delete_devices");
    let session = challenge_session(
        &server
            .post(&path, alice.token(), json!({"devices": [a.device_id]}))
            .await,
    );
    let auth = password_auth_as(&alice.user_id, "password123", Some(&session));
    let resp = server
        .post(
            &path,
            alice.token(),
            json!({"devices": [a.device_id, b.device_id], "auth": auth}),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    assert!(device_exists(&server, &alice, &a.device_id).await);
    assert!(device_exists(&server, &alice, &b.device_id).await);
    let resp = server
        .post(
            &path,
            alice.token(),
            json!({"devices": [a.device_id], "auth": auth}),
        )
        .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert!(!device_exists(&server, &alice, &a.device_id).await);
    assert!(device_exists(&server, &alice, &b.device_id).await);
}

#[tokio::test]
async fn a_session_cannot_move_to_another_endpoint_or_caller() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let change = json!({"new_password": "a brand new password", "logout_devices": false});
    let session = challenge_session(
        &server
            .post(&format!("{V3}/account/password"), alice.token(), change)
            .await,
    );
    // Alice's password-change session does not deactivate her account.
    let auth = password_auth_as(&alice.user_id, "password123", Some(&session));
    let resp = server
        .post(
            &format!("{V3}/account/deactivate"),
            alice.token(),
            json!({"auth": auth}),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    // Nor does bob complete it with his own credentials.
    let bob_auth = password_auth_as(&bob.user_id, "password123", Some(&session));
    let resp = server
        .post(
            &format!("{V3}/account/password"),
            bob.token(),
            json!({"new_password": "a brand new password", "logout_devices": false, "auth": bob_auth}),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    // Nor is a different new password accepted in the session.
    let resp = server
        .post(
            &format!("{V3}/account/password"),
            alice.token(),
            json!({"new_password": "another password entirely", "logout_devices": false, "auth": auth}),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    let (st, who) = server
        .get(&format!("{V3}/account/whoami"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "alice is still active: {who}");
    server.login("alice", "password123").await;
    server.login("bob", "password123").await;
}

#[tokio::test]
async fn wrong_password_is_401_with_completed_and_another_user_is_403() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let other = server.login("alice", "password123").await;
    let path = format!("{V3}/devices/{}", other.device_id);
    let resp = server
        .delete(
            &path,
            alice.token(),
            Some(json!({"auth": password_auth_as(&alice.user_id, "wrong", None)})),
        )
        .await;
    challenge_session(&resp);
    assert_eq!(resp.1["errcode"], "M_FORBIDDEN", "{}", resp.1);
    assert_eq!(resp.1["completed"], json!([]), "{}", resp.1);
    // Bob's correct password does not authenticate alice.
    let resp = server
        .delete(
            &path,
            alice.token(),
            Some(json!({"auth": password_auth_as(&bob.user_id, "password123", None)})),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    assert!(device_exists(&server, &alice, &other.device_id).await);
    let resp = server
        .post(
            &format!("{V3}/account/deactivate"),
            alice.token(),
            json!({"auth": password_auth_as(&alice.user_id, "wrong", None)}),
        )
        .await;
    challenge_session(&resp);
    assert_eq!(resp.1["errcode"], "M_FORBIDDEN", "{}", resp.1);
    // A session never issued is 400.
    let resp = server
        .delete(
            &path,
            alice.token(),
            Some(json!({"auth": password_auth_as(&alice.user_id, "password123", Some("nope"))})),
        )
        .await;
    assert_error(&resp, 400, "M_UNKNOWN");
}

#[tokio::test]
async fn register_with_no_parameters_answers_the_flows() {
    let server = TestServer::start().await;
    let resp = server.post(REGISTER, None, json!({})).await;
    challenge_session(&resp);
    assert_eq!(
        resp.1["flows"][0]["stages"],
        json!(["m.login.dummy"]),
        "{}",
        resp.1
    );
    // Completing it without a password is 400 M_MISSING_PARAM.
    let session = resp.1["session"].as_str().unwrap().to_owned();
    let resp = continue_registration(&server, &session).await;
    assert_error(&resp, 400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn registration_remembers_the_first_requests_parameters() {
    let server = TestServer::start().await;
    let resp = server
        .post(
            REGISTER,
            None,
            json!({
                "username": "remembered",
                "password": "sUp3rs3kr1t",
                "device_id": "xyzzy",
                "initial_device_display_name": "display_name",
            }),
        )
        .await;
    let session = challenge_session(&resp);
    let resp = continue_registration(&server, &session).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(resp.1["user_id"], server.user_id("remembered"));
    assert_eq!(resp.1["device_id"], "xyzzy");
    let token = resp.1["access_token"].as_str().unwrap();
    let (st, device) = server
        .get(&format!("{V3}/devices/xyzzy"), Some(token))
        .await;
    assert_eq!(st, StatusCode::OK, "{device}");
    assert_eq!(device["display_name"], "display_name");
    server.login("remembered", "sUp3rs3kr1t").await;
}

#[tokio::test]
async fn registration_is_idempotent_within_its_session() {
    let server = TestServer::start().await;
    for body in [
        json!({"password": "sUp3rs3kr1t"}),
        json!({"username": "again", "password": "sUp3rs3kr1t"}),
    ] {
        let session = challenge_session(&server.post(REGISTER, None, body.clone()).await);
        let mut with_auth = body.clone();
        with_auth["auth"] = json!({"type": "m.login.dummy", "session": session});
        let first = server.post(REGISTER, None, with_auth.clone()).await;
        assert_eq!(first.0, StatusCode::OK, "{}", first.1);
        let second = server.post(REGISTER, None, with_auth).await;
        assert_eq!(second.0, StatusCode::OK, "{}", second.1);
        assert_eq!(first.1["user_id"], second.1["user_id"]);
        assert_ne!(first.1["access_token"], second.1["access_token"]);
        assert!(second.1["access_token"].is_string(), "{}", second.1);
    }
    // The session registered one account, not two.
    let (_, users) = server
        .get(
            "/_synapse/admin/v2/users?guests=true&deactivated=true",
            server.admin("root").await.token(),
        )
        .await;
    assert_eq!(
        users["total"], 3,
        "two registrations and the admin: {users}"
    );
}

#[tokio::test]
async fn a_registration_session_cannot_register_another_name() {
    let server = TestServer::start().await;
    let body = json!({"username": "first", "password": "sUp3rs3kr1t"});
    let session = challenge_session(&server.post(REGISTER, None, body).await);
    let resp = server
        .post(
            REGISTER,
            None,
            json!({
                "username": "second",
                "password": "sUp3rs3kr1t",
                "auth": {"type": "m.login.dummy", "session": session},
            }),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    let (st, body) = server
        .get(&format!("{V3}/register/available?username=second"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "second was not registered: {body}");
}

#[tokio::test]
async fn a_remembered_inhibit_login_inhibits_the_login() {
    let server = TestServer::start().await;
    let body = json!({"username": "quiet", "password": "sUp3rs3kr1t", "inhibit_login": true});
    let session = challenge_session(&server.post(REGISTER, None, body).await);
    let resp = continue_registration(&server, &session).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(resp.1["user_id"], server.user_id("quiet"));
    assert!(resp.1.get("access_token").is_none(), "{}", resp.1);
    assert!(resp.1.get("device_id").is_none(), "{}", resp.1);
}
