//! /account/password and /account/deactivate (both behind UIA).

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

const PASSWORD: &str = "/_matrix/client/v3/account/password";
const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const LOGIN: &str = "/_matrix/client/v3/login";

async fn whoami_ok(s: &TestServer, sess: &Session) {
    let (st, who) = s.get(WHOAMI, sess.token()).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "token of {} should work: {who}",
        sess.device_id
    );
    assert_eq!(who["user_id"], sess.user_id);
}

async fn whoami_dead(s: &TestServer, sess: &Session) {
    let r = s.get(WHOAMI, sess.token()).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
}

// ---------------------------------------------------------------- /account/password

#[tokio::test]
async fn password_change_uia_rounds() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let mut body = json!({"new_password": "newpassword456"});
    let (uia, _) = uia_start(&s, PASSWORD, alice.token(), &body).await;
    let session = assert_uia_flow(&uia, "m.login.password");

    // Wrong password: 401 with the UIA body plus M_FORBIDDEN.
    body["auth"] = password_auth("alice", "wrongpassword", &session);
    let (st, resp) = s.post(PASSWORD, alice.token(), body.clone()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{resp}");
    assert_eq!(resp["errcode"], "M_FORBIDDEN", "{resp}");
    assert!(resp["error"].is_string(), "{resp}");
    assert_uia_flow(&resp, "m.login.password");
    // Nothing changed yet.
    let r = s
        .post(LOGIN, None, password_login("alice", "newpassword456"))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");

    // Right password (same session): success.
    body["auth"] = password_auth("alice", "password123", &session);
    let (st, resp) = s.post(PASSWORD, alice.token(), body).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp, json!({}));

    let r = s
        .post(LOGIN, None, password_login("alice", "password123"))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    s.login("alice", "newpassword456").await;
}

#[tokio::test]
async fn password_change_with_full_mxid_identifier() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let r = with_uia(
        &s,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(
            PASSWORD,
            alice.token(),
            json!({"new_password": "newpassword456"}),
        ),
        "@alice:test.local",
        "password123",
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    s.login("alice", "newpassword456").await;
}

#[tokio::test]
async fn password_change_logs_out_other_devices_by_default() {
    let s = TestServer::start().await;
    let a = s.user("alice").await;
    let b = s.login("alice", "password123").await;
    let c = s.login("alice", "password123").await;
    let bob = s.user("bob").await;

    let r = with_uia(
        &s,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(
            PASSWORD,
            a.token(),
            json!({"new_password": "newpassword456"}),
        ),
        "alice",
        "password123",
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1, json!({}));

    // The caller's token survives, the others die.
    whoami_ok(&s, &a).await;
    whoami_dead(&s, &b).await;
    whoami_dead(&s, &c).await;
    whoami_ok(&s, &bob).await;

    // Old password no longer works, the new one does.
    let r = s
        .post(LOGIN, None, password_login("alice", "password123"))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let d = s.login("alice", "newpassword456").await;
    whoami_ok(&s, &d).await;
    // Other devices are deleted too (spec: "all the devices of the user will be
    // logged out"); only the caller's and the new login remain.
    let (st, devices) = s.get("/_matrix/client/v3/devices", a.token()).await;
    assert_eq!(st, StatusCode::OK, "{devices}");
    let mut ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![a.device_id.as_str(), d.device_id.as_str()];
    want.sort();
    assert_eq!(ids, want, "{devices}");
}

#[tokio::test]
async fn password_change_logout_devices_true_explicit() {
    let s = TestServer::start().await;
    let a = s.user("alice").await;
    let b = s.login("alice", "password123").await;
    let r = with_uia(
        &s,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(
            PASSWORD,
            a.token(),
            json!({"new_password": "newpassword456", "logout_devices": true}),
        ),
        "alice",
        "password123",
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    whoami_ok(&s, &a).await;
    whoami_dead(&s, &b).await;
}

#[tokio::test]
async fn password_change_logout_devices_false_keeps_others() {
    let s = TestServer::start().await;
    let a = s.user("alice").await;
    let b = s.login("alice", "password123").await;
    let r = with_uia(
        &s,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(
            PASSWORD,
            a.token(),
            json!({"new_password": "newpassword456", "logout_devices": false}),
        ),
        "alice",
        "password123",
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    whoami_ok(&s, &a).await;
    whoami_ok(&s, &b).await;
    let r = s
        .post(LOGIN, None, password_login("alice", "password123"))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    s.login("alice", "newpassword456").await;
}

#[tokio::test]
async fn password_change_weak_password() {
    let s = TestServer::start().await;
    let a = s.user("alice").await;
    let b = s.login("alice", "password123").await;
    let r = with_uia(
        &s,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(PASSWORD, a.token(), json!({"new_password": "short"})),
        "alice",
        "password123",
    )
    .await;
    assert_error(&r, 400, "M_WEAK_PASSWORD");
    // Nothing changed: old password still works, other device still logged in.
    s.login("alice", "password123").await;
    whoami_ok(&s, &b).await;
}

#[tokio::test]
async fn password_change_empty_and_too_long() {
    let s = TestServer::start().await;
    let a = s.user("alice").await;
    let r = with_uia(
        &s,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(PASSWORD, a.token(), json!({"new_password": ""})),
        "alice",
        "password123",
    )
    .await;
    assert_error(&r, 400, "M_MISSING_PARAM");
    let r = with_uia(
        &s,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(
            PASSWORD,
            a.token(),
            json!({"new_password": "p".repeat(513)}),
        ),
        "alice",
        "password123",
    )
    .await;
    assert_error(&r, 400, "M_BAD_JSON");
    // Exactly 512 bytes is allowed.
    let long = "q".repeat(512);
    let r = with_uia(
        &s,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(PASSWORD, a.token(), json!({"new_password": long})),
        "alice",
        "password123",
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    s.login("alice", &long).await;
}

#[tokio::test]
async fn password_change_requires_token() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = s
        .post(PASSWORD, None, json!({"new_password": "newpassword456"}))
        .await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = s
        .post(
            PASSWORD,
            Some("bogus"),
            json!({"new_password": "newpassword456"}),
        )
        .await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    s.login("alice", "password123").await;
}

#[tokio::test]
async fn password_change_cannot_use_another_users_credentials() {
    // Contract silent. Spec/Synapse: UIA must authenticate the requesting user;
    // bob's password cannot authorise a change on alice's session (Synapse
    // answers 403). We require a 401 or 403 and no change.
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    s.user("bob").await;
    let r = with_uia(
        &s,
        FirstRound::ChallengeOrAnswer,
        UiaRequest::post(
            PASSWORD,
            alice.token(),
            json!({"new_password": "newpassword456"}),
        ),
        "bob",
        "password123",
    )
    .await;
    assert!(
        r.0 == StatusCode::UNAUTHORIZED || r.0 == StatusCode::FORBIDDEN,
        "{} {}",
        r.0,
        r.1
    );
    s.login("alice", "password123").await;
    s.login("bob", "password123").await;
    let r = s
        .post(LOGIN, None, password_login("alice", "newpassword456"))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
}

// ---------------------------------------------------------------- /account/deactivate

#[tokio::test]
async fn deactivate_uia_and_effects() {
    let s = TestServer::start().await;
    let a = s.user("alice").await;
    let b = s.login("alice", "password123").await;
    let bob = s.user("bob").await;

    let mut body = json!({});
    let (uia, _) = uia_start(&s, DEACTIVATE, a.token(), &body).await;
    let session = assert_uia_flow(&uia, "m.login.password");
    // Still active after the first round.
    whoami_ok(&s, &a).await;

    body["auth"] = password_auth("alice", "password123", &session);
    let (st, resp) = s.post(DEACTIVATE, a.token(), body).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp, json!({"id_server_unbind_result": "no-support"}));

    // Every token is dead.
    whoami_dead(&s, &a).await;
    whoami_dead(&s, &b).await;
    whoami_ok(&s, &bob).await;
    // Login is refused as deactivated.
    let r = s
        .post(LOGIN, None, password_login("alice", "password123"))
        .await;
    assert_error(&r, 403, "M_USER_DEACTIVATED");
    // The name stays taken.
    let r = s
        .get("/_matrix/client/v3/register/available?username=alice", None)
        .await;
    assert_error(&r, 400, "M_USER_IN_USE");
    // And cannot be registered again.
    let (st, resp) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "alice", "password": "password123"}),
        )
        .await;
    let r = if st == StatusCode::UNAUTHORIZED {
        let session = resp["session"].as_str().expect("session").to_owned();
        s.post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "alice", "password": "password123", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await
    } else {
        (st, resp)
    };
    assert_error(&r, 400, "M_USER_IN_USE");
    // Stored as deactivated.
    let n = s.sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@alice:test.local' AND is_deactivated = 1").await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn deactivate_wrong_password_keeps_account() {
    let s = TestServer::start().await;
    let a = s.user("alice").await;
    let mut body = json!({});
    let (uia, _) = uia_start(&s, DEACTIVATE, a.token(), &body).await;
    let session = assert_uia_flow(&uia, "m.login.password");
    body["auth"] = password_auth("alice", "wrongpassword", &session);
    let (st, resp) = s.post(DEACTIVATE, a.token(), body).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{resp}");
    assert_eq!(resp["errcode"], "M_FORBIDDEN", "{resp}");
    assert_uia_flow(&resp, "m.login.password");
    whoami_ok(&s, &a).await;
    s.login("alice", "password123").await;
}

#[tokio::test]
async fn deactivate_requires_token() {
    let s = TestServer::start().await;
    let r = s.post(DEACTIVATE, None, json!({})).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = s.post(DEACTIVATE, Some("bogus"), json!({})).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
}
