//! Shared-secret registration: GET/POST /_synapse/admin/v1/register.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const PATH: &str = "/_synapse/admin/v1/register";

/// A correctly signed registration body for a fresh nonce.
async fn signed_body(server: &TestServer, username: &str, password: &str, admin: bool) -> Value {
    let nonce = server.nonce().await;
    let mac = shared_secret_mac(SHARED_SECRET, &nonce, username, password, admin, None);
    json!({"nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac})
}

const ADMIN_ONLY: &str = "/_synapse/admin/v1/registration_tokens";

#[test]
fn shared_secret_mac_reproduces_reference_vectors() {
    let nonce = "759f047f312b99ff428b21d581256f8592b8976e58bc1b543972dc6147e529a79657605b52d7becd160ff5137f3de11975684319187e06901955f79e5a6c5a79";
    assert_eq!(
        shared_secret_mac("dendritetest", nonce, "alice", "wonderland", false, None),
        "f1ba8d37123866fd659b40de4bad9b0f8965c565"
    );
    assert_eq!(
        shared_secret_mac("dendritetest", nonce, "alice", "wonderland", true, None),
        "24dca3bba410e43fe64b9b5c28306693bf3baa9f"
    );
    // The optional 5th field changes the MAC.
    assert_ne!(
        shared_secret_mac(
            "dendritetest",
            nonce,
            "alice",
            "wonderland",
            false,
            Some("bot")
        ),
        "f1ba8d37123866fd659b40de4bad9b0f8965c565"
    );
}

#[tokio::test]
async fn nonce_shape() {
    let server = TestServer::start().await;
    let (st, body) = server.get(PATH, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let obj = body.as_object().unwrap();
    assert_eq!(obj.len(), 1, "only a nonce expected: {body}");
    let n1 = body["nonce"].as_str().unwrap().to_owned();
    assert!(n1.len() >= 16, "nonce too short to be unguessable: {n1}");
    assert!(n1.chars().all(|c| c.is_ascii_alphanumeric()), "{n1}");
    let n2 = server.nonce().await;
    assert_ne!(n1, n2, "nonces must be fresh");
}

#[tokio::test]
async fn register_success() {
    let server = TestServer::start().await;
    let body = signed_body(&server, "alice", "wonderland", false).await;
    let (st, resp) = server.post(PATH, None, body).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["user_id"], "@alice:test.local");
    assert_eq!(resp["home_server"], "test.local");
    let token = resp["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let device = resp["device_id"].as_str().expect("device_id").to_owned();
    assert!(!token.is_empty() && !device.is_empty());

    let (st, who) = server
        .get("/_matrix/client/v3/account/whoami", Some(&token))
        .await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], "@alice:test.local");
    assert_eq!(who["device_id"], device.as_str());

    // Display name defaults to the username.
    let (st, profile) = server
        .get("/_matrix/client/v3/profile/@alice:test.local", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{profile}");
    assert_eq!(profile["displayname"], "alice");

    // The password works for login, and the account is not an admin.
    let s = server.login("alice", "wonderland").await;
    assert_error(&server.get(ADMIN_ONLY, s.token()).await, 403, "M_FORBIDDEN");
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@alice:test.local' AND account_type = 1").await,
        1
    );
}

#[tokio::test]
async fn register_with_displayname() {
    let server = TestServer::start().await;
    let mut body = signed_body(&server, "alice", "wonderland", false).await;
    body["displayname"] = json!("Rabbit");
    let (st, resp) = server.post(PATH, None, body).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    let (_, profile) = server
        .get("/_matrix/client/v3/profile/@alice:test.local", None)
        .await;
    assert_eq!(profile["displayname"], "Rabbit");
}

#[tokio::test]
async fn register_admin_makes_an_admin() {
    let server = TestServer::start().await;
    let body = signed_body(&server, "root", "wonderland", true).await;
    let (st, resp) = server.post(PATH, None, body).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    let token = resp["access_token"].as_str().unwrap();
    let (st, list) = server.get(ADMIN_ONLY, Some(token)).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert!(list["registration_tokens"].is_array(), "{list}");
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@root:test.local' AND account_type = 3").await,
        1
    );
}

#[tokio::test]
async fn admin_flag_is_covered_by_the_mac() {
    // A MAC computed for notadmin must not register an admin.
    let server = TestServer::start().await;
    let mut body = signed_body(&server, "mallory", "wonderland", false).await;
    body["admin"] = json!(true);
    assert_error(&server.post(PATH, None, body).await, 403, "M_FORBIDDEN");
    assert_eq!(
        server
            .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@mallory:test.local'")
            .await,
        0
    );
}

#[tokio::test]
async fn user_type_fifth_mac_field_accepted() {
    let server = TestServer::start().await;
    let n = server.nonce().await;
    let mac = shared_secret_mac(SHARED_SECRET, &n, "botty", "wonderland", false, Some("bot"));
    let (st, resp) = server
        .post(
            PATH,
            None,
            json!({"nonce": n, "username": "botty", "password": "wonderland", "admin": false, "user_type": "bot", "mac": mac}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["user_id"], "@botty:test.local");
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@botty:test.local' AND user_type = 'bot'").await,
        1
    );
}

#[tokio::test]
async fn user_type_not_in_mac_is_rejected() {
    let server = TestServer::start().await;
    // MAC over the 4 fields, but user_type sent: the MAC no longer matches.
    let mut body = signed_body(&server, "botty", "wonderland", false).await;
    body["user_type"] = json!("bot");
    assert_error(&server.post(PATH, None, body).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn nonce_cannot_be_reused() {
    let server = TestServer::start().await;
    let n = server.nonce().await;
    let mac = shared_secret_mac(SHARED_SECRET, &n, "alice", "wonderland", false, None);
    let (st, resp) = server
        .post(PATH, None, json!({"nonce": n, "username": "alice", "password": "wonderland", "admin": false, "mac": mac}))
        .await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    let mac2 = shared_secret_mac(SHARED_SECRET, &n, "alice2", "wonderland", false, None);
    assert_error(
        &server
            .post(PATH, None, json!({"nonce": n, "username": "alice2", "password": "wonderland", "admin": false, "mac": mac2}))
            .await,
        400,
        "M_UNKNOWN",
    );
    assert_eq!(
        server
            .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@alice2:test.local'")
            .await,
        0
    );
}

#[tokio::test]
async fn unknown_nonce_is_rejected() {
    let server = TestServer::start().await;
    let n = "thisnonceisnotknowntotheserver";
    let mac = shared_secret_mac(SHARED_SECRET, n, "alice", "wonderland", false, None);
    assert_error(
        &server
            .post(PATH, None, json!({"nonce": n, "username": "alice", "password": "wonderland", "admin": false, "mac": mac}))
            .await,
        400,
        "M_UNKNOWN",
    );
    assert_eq!(
        server
            .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id LIKE '%lice%'")
            .await,
        0
    );
}

#[tokio::test]
async fn bad_mac_is_forbidden() {
    let server = TestServer::start().await;
    // Wrong secret.
    let n = server.nonce().await;
    let mac = shared_secret_mac("not-the-secret", &n, "alice", "wonderland", false, None);
    assert_error(
        &server
            .post(PATH, None, json!({"nonce": n, "username": "alice", "password": "wonderland", "admin": false, "mac": mac}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Right secret, one byte flipped (as Dendrite's TestSharedSecretRegister).
    let n = server.nonce().await;
    let good = shared_secret_mac(SHARED_SECRET, &n, "alice", "wonderland", false, None);
    let flipped = format!(
        "{}{}",
        if good.starts_with('0') { '1' } else { '0' },
        &good[1..]
    );
    assert_error(
        &server
            .post(PATH, None, json!({"nonce": n, "username": "alice", "password": "wonderland", "admin": false, "mac": flipped}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    // MAC over a different password.
    let n = server.nonce().await;
    let mac = shared_secret_mac(SHARED_SECRET, &n, "alice", "otherpassword", false, None);
    assert_error(
        &server
            .post(PATH, None, json!({"nonce": n, "username": "alice", "password": "wonderland", "admin": false, "mac": mac}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        server
            .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id LIKE '%lice%'")
            .await,
        0
    );
}

#[tokio::test]
async fn invalid_username_is_rejected() {
    let server = TestServer::start().await;
    for username in ["al ice", "alice!", "_alice", "ali:ce", "al@ice", "ålice"] {
        let body = signed_body(&server, username, "wonderland", false).await;
        let resp = server.post(PATH, None, body).await;
        assert_eq!(
            resp.0.as_u16(),
            400,
            "username {username:?} accepted: {}",
            resp.1
        );
        assert_error(&resp, 400, "M_INVALID_USERNAME");
    }
    assert_eq!(
        server
            .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id LIKE '%lice%'")
            .await,
        0
    );
}

#[tokio::test]
async fn uppercase_username_is_lowercased() {
    // Assumption (Synapse and Dendrite both lowercase; the contract does so
    // for /register): the MAC covers the username as sent.
    let server = TestServer::start().await;
    let body = signed_body(&server, "Carol", "wonderland", false).await;
    let (st, resp) = server.post(PATH, None, body).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["user_id"], "@carol:test.local");
}

#[tokio::test]
async fn taken_username_is_user_in_use() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let body = signed_body(&server, "alice", "anotherpassword", false).await;
    assert_error(&server.post(PATH, None, body).await, 400, "M_USER_IN_USE");
    // The original password still works.
    server.login("alice", "password123").await;
}

#[tokio::test]
async fn password_policy() {
    let server = TestServer::start().await;
    let body = signed_body(&server, "alice", "short", false).await;
    assert_error(&server.post(PATH, None, body).await, 400, "M_WEAK_PASSWORD");
    let body = signed_body(&server, "alice", "", false).await;
    assert_error(&server.post(PATH, None, body).await, 400, "M_MISSING_PARAM");
    let long = "a".repeat(513);
    let body = signed_body(&server, "alice", &long, false).await;
    assert_error(&server.post(PATH, None, body).await, 400, "M_BAD_JSON");
    assert_eq!(
        server
            .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id LIKE '%lice%'")
            .await,
        0
    );
}

#[tokio::test]
async fn missing_or_mistyped_field_is_bad_json() {
    let server = TestServer::start().await;
    for field in ["nonce", "username", "mac"] {
        let mut body = signed_body(&server, "alice", "wonderland", false).await;
        body.as_object_mut().unwrap().remove(field);
        let resp = server.post(PATH, None, body).await;
        assert_eq!(resp.0.as_u16(), 400, "without {field}: {}", resp.1);
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    let mut body = signed_body(&server, "alice", "wonderland", false).await;
    body["admin"] = json!("yes");
    assert_error(&server.post(PATH, None, body).await, 400, "M_BAD_JSON");
    let mut body = signed_body(&server, "alice", "wonderland", false).await;
    body["username"] = json!(12);
    assert_error(&server.post(PATH, None, body).await, 400, "M_BAD_JSON");
    assert_eq!(
        server
            .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id LIKE '%lice%'")
            .await,
        0
    );
}

#[tokio::test]
async fn malformed_json_is_not_json() {
    let server = TestServer::start().await;
    assert_error(
        &server
            .request_raw(Method::POST, PATH, None, "{\"nonce\": ")
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &server
            .request_raw(Method::POST, PATH, None, "not json at all")
            .await,
        400,
        "M_NOT_JSON",
    );
}

#[tokio::test]
async fn works_when_open_registration_is_disabled() {
    // Assumption (Synapse/Dendrite): shared-secret registration is independent
    // of registration.enabled.
    let server = TestServer::start_with(|c| c.registration.enabled = false).await;
    let alice = server.user("alice").await;
    assert_eq!(alice.user_id, "@alice:test.local");
}

#[tokio::test]
async fn endpoint_absent_without_shared_secret() {
    let server = TestServer::start_with(|c| c.registration.shared_secret = None).await;
    assert_error(&server.get(PATH, None).await, 404, "M_UNRECOGNIZED");
    let mac = shared_secret_mac(SHARED_SECRET, "n", "alice", "wonderland", false, None);
    assert_error(
        &server
            .post(PATH, None, json!({"nonce": "n", "username": "alice", "password": "wonderland", "admin": false, "mac": mac}))
            .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_eq!(
        server
            .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id LIKE '%lice%'")
            .await,
        0
    );
}
