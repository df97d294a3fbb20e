//! /register (UIA dummy, registration tokens, guests), /register/available,
//! the registration-token validity endpoint and the Synapse registration
//! tokens admin API.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const REGISTER: &str = "/_matrix/client/v3/register";
const AVAILABLE: &str = "/_matrix/client/v3/register/available";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const TOKENS: &str = "/_synapse/admin/v1/registration_tokens";
const VALIDITY: &str = "/_matrix/client/v1/register/m.login.registration_token/validity";

/// POST /register; when the server answers 401 with a UIA session, completes
/// the m.login.dummy stage with that session. (The contract does not say
/// whether body validation happens before or after UIA, so this works both ways.)
async fn register_dummy(s: &TestServer, body: Value) -> (StatusCode, Value) {
    let first = s.post(REGISTER, None, body.clone()).await;
    if first.0 != StatusCode::UNAUTHORIZED {
        return first;
    }
    let session = first.1["session"]
        .as_str()
        .unwrap_or_else(|| panic!("UIA session: {}", first.1))
        .to_owned();
    let mut body = body;
    body["auth"] = json!({"type": "m.login.dummy", "session": session});
    s.post(REGISTER, None, body).await
}

/// POST /register with a registration token stage (starting a fresh session).
async fn register_with_token(s: &TestServer, username: &str, token: &str) -> (StatusCode, Value) {
    let mut body = json!({"username": username, "password": "password123"});
    let (_, session) = uia_start(s, REGISTER, None, &body).await;
    body["auth"] =
        json!({"type": "m.login.registration_token", "token": token, "session": session});
    s.post(REGISTER, None, body).await
}

fn token_start_config(c: &mut myelin::config::Config) {
    c.registration.requires_token = true;
}

async fn new_token(s: &TestServer, admin: &Session, body: Value) -> Value {
    let (st, resp) = s.post(&format!("{TOKENS}/new"), admin.token(), body).await;
    assert_eq!(st, StatusCode::OK, "create token: {resp}");
    resp
}

#[track_caller]
fn assert_uia_body(body: &Value, stage: &str) {
    let flows = body["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("flows: {body}"));
    assert!(!flows.is_empty(), "{body}");
    assert!(
        flows.iter().any(|f| f["stages"]
            .as_array()
            .is_some_and(|st| st.iter().any(|x| x == stage))),
        "no flow with stage {stage}: {body}"
    );
    assert!(body["params"].is_object(), "{body}");
    assert!(
        body["session"].as_str().is_some_and(|x| !x.is_empty()),
        "{body}"
    );
}

// ---------------------------------------------------------------- disabled

#[tokio::test]
async fn register_disabled_is_403_forbidden() {
    let s = TestServer::start_with(|c| c.registration.enabled = false).await;
    let r = s
        .post(
            REGISTER,
            None,
            json!({"username": "bob", "password": "password123"}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let r = s
        .post(
            REGISTER,
            None,
            json!({"username": "bob", "password": "password123", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    // Nothing was created.
    let n = s
        .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@bob:test.local'")
        .await;
    assert_eq!(n, 0);
}

// ---------------------------------------------------------------- UIA dummy

#[tokio::test]
async fn register_uia_dummy_flow() {
    let s = TestServer::start().await;
    let mut body = json!({"username": "bob", "password": "password123"});
    let (uia, session) = uia_start(&s, REGISTER, None, &body).await;
    assert_eq!(
        uia["flows"],
        json!([{"stages": ["m.login.dummy"]}]),
        "{uia}"
    );
    assert_eq!(uia["params"], json!({}), "{uia}");

    body["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (st, resp) = s.post(REGISTER, None, body).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["user_id"], "@bob:test.local");
    // The spec dropped `home_server` from /register (ruma has no field for it).
    assert!(resp.get("home_server").is_none(), "{resp}");
    let token = resp["access_token"].as_str().expect("access_token");
    let device = resp["device_id"].as_str().expect("device_id");
    let (st, who) = s.get(WHOAMI, Some(token)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], "@bob:test.local");
    assert_eq!(who["device_id"], device);
    // `is_guest` defaults to false and may be omitted (spec).
    assert_ne!(who["is_guest"], true, "{who}");
    // The password works for login.
    let sess = s.login("bob", "password123").await;
    assert_eq!(sess.user_id, "@bob:test.local");
}

#[tokio::test]
async fn register_with_device_id_and_display_name() {
    // Spec: device_id and initial_device_display_name are honoured at registration.
    let s = TestServer::start().await;
    let (st, resp) = register_dummy(
        &s,
        json!({"username": "bob", "password": "password123", "device_id": "BOBDEV", "initial_device_display_name": "Bob's phone"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["device_id"], "BOBDEV");
    let (st, dev) = s
        .get(
            "/_matrix/client/v3/devices/BOBDEV",
            resp["access_token"].as_str(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{dev}");
    assert_eq!(dev["display_name"], "Bob's phone");
}

#[tokio::test]
async fn register_unknown_session_is_rejected() {
    // Contract silent: a dummy stage with a session the server never issued
    // must not create the account. Spec: unknown session -> 4xx; we only
    // require that it is not 200 and the name stays available.
    let s = TestServer::start().await;
    let (st, resp) = s
        .post(
            REGISTER,
            None,
            json!({"username": "bob", "password": "password123", "auth": {"type": "m.login.dummy", "session": "no-such-session"}}),
        )
        .await;
    assert!(st.is_client_error(), "{st} {resp}");
    let (st, body) = s.get(&format!("{AVAILABLE}?username=bob"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["available"], true);
}

#[tokio::test]
async fn register_inhibit_login() {
    let s = TestServer::start().await;
    let (st, resp) = register_dummy(
        &s,
        json!({"username": "bob", "password": "password123", "inhibit_login": true}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["user_id"], "@bob:test.local");
    // The spec dropped `home_server` from /register (ruma has no field for it).
    assert!(resp.get("home_server").is_none(), "{resp}");
    assert!(resp["access_token"].is_null(), "{resp}");
    assert!(resp["device_id"].is_null(), "{resp}");
    // The account exists and can log in.
    let sess = s.login("bob", "password123").await;
    assert_eq!(sess.user_id, "@bob:test.local");
    // Assumption (spec: inhibit_login means no access token/device is
    // returned; Synapse creates no device): only the login's device exists.
    let (st, devices) = s.get("/_matrix/client/v3/devices", sess.token()).await;
    assert_eq!(st, StatusCode::OK, "{devices}");
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
}

#[tokio::test]
async fn register_username_taken_is_user_in_use() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = register_dummy(&s, json!({"username": "alice", "password": "password123"})).await;
    assert_error(&r, 400, "M_USER_IN_USE");
    // Upper case is lowercased, so it collides too.
    let r = register_dummy(&s, json!({"username": "ALICE", "password": "password123"})).await;
    assert_error(&r, 400, "M_USER_IN_USE");
    // The original password is unchanged.
    s.login("alice", "password123").await;
}

#[tokio::test]
async fn register_uppercase_is_lowercased() {
    let s = TestServer::start().await;
    let (st, resp) =
        register_dummy(&s, json!({"username": "Carol", "password": "password123"})).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["user_id"], "@carol:test.local");
}

#[tokio::test]
async fn register_invalid_username() {
    let s = TestServer::start().await;
    for name in [
        "bad name",
        "bob!",
        "_leading",
        "héllo",
        "bob:test.local",
        "@bob",
    ] {
        let r = register_dummy(&s, json!({"username": name, "password": "password123"})).await;
        assert_error(&r, 400, "M_INVALID_USERNAME");
    }
    // All allowed characters are accepted.
    let (st, resp) = register_dummy(
        &s,
        json!({"username": "a.b_c=d-e/f+g9", "password": "password123"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["user_id"], "@a.b_c=d-e/f+g9:test.local");
}

#[tokio::test]
async fn register_missing_password_is_missing_param() {
    let s = TestServer::start().await;
    let r = register_dummy(&s, json!({"username": "bob"})).await;
    assert_error(&r, 400, "M_MISSING_PARAM");
    let r = register_dummy(&s, json!({"username": "bob", "password": ""})).await;
    assert_error(&r, 400, "M_MISSING_PARAM");
    let (st, body) = s.get(&format!("{AVAILABLE}?username=bob"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["available"], true);
}

#[tokio::test]
async fn register_weak_password() {
    let s = TestServer::start().await;
    let r = register_dummy(&s, json!({"username": "bob", "password": "short"})).await;
    assert_error(&r, 400, "M_WEAK_PASSWORD");
    // 7 bytes is still too short, 8 is fine.
    let r = register_dummy(&s, json!({"username": "bob", "password": "1234567"})).await;
    assert_error(&r, 400, "M_WEAK_PASSWORD");
    let (st, resp) = register_dummy(&s, json!({"username": "bob", "password": "12345678"})).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn register_too_long_password_is_bad_json() {
    let s = TestServer::start().await;
    let r = register_dummy(&s, json!({"username": "bob", "password": "p".repeat(513)})).await;
    assert_error(&r, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn register_without_username_generates_one() {
    let s = TestServer::start().await;
    let (st, resp) = register_dummy(&s, json!({"password": "password123"})).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    let user_id = resp["user_id"].as_str().expect("user_id");
    assert!(
        user_id.starts_with('@') && user_id.ends_with(":test.local"),
        "{user_id}"
    );
    let local = &user_id[1..user_id.len() - ":test.local".len()];
    assert!(!local.is_empty(), "{user_id}");
    let (st, who) = s.get(WHOAMI, resp["access_token"].as_str()).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], user_id);
    // A second one gets a different id.
    let (st, resp2) = register_dummy(&s, json!({"password": "password123"})).await;
    assert_eq!(st, StatusCode::OK, "{resp2}");
    assert_ne!(resp2["user_id"], resp["user_id"]);
    // The generated user can log in with its password.
    let sess = s.login(local, "password123").await;
    assert_eq!(sess.user_id, user_id);
}

// ---------------------------------------------------------------- guests

#[tokio::test]
async fn register_guest_allowed() {
    let s = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let (st, resp) = s
        .post(&format!("{REGISTER}?kind=guest"), None, json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    let user_id = resp["user_id"].as_str().expect("user_id");
    assert!(user_id.ends_with(":test.local"), "{resp}");
    assert!(resp["device_id"].is_string(), "{resp}");
    let token = resp["access_token"].as_str().expect("access_token");
    let (st, who) = s.get(WHOAMI, Some(token)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], user_id);
    assert_eq!(who["is_guest"], true);
    // Stored as account_type 2.
    let n = s
        .sql_count(&format!(
            "SELECT COUNT(*) FROM accounts WHERE user_id = '{user_id}' AND account_type = 2"
        ))
        .await;
    assert_eq!(n, 1);
    // Two guests are distinct.
    let (st, resp2) = s
        .post(&format!("{REGISTER}?kind=guest"), None, json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{resp2}");
    assert_ne!(resp2["user_id"], resp["user_id"]);
}

#[tokio::test]
async fn register_guest_denied() {
    let s = TestServer::start_with(|c| c.registration.allow_guests = false).await;
    let r = s
        .post(&format!("{REGISTER}?kind=guest"), None, json!({}))
        .await;
    assert_error(&r, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let n = s
        .sql_count("SELECT COUNT(*) FROM accounts WHERE account_type = 2")
        .await;
    assert_eq!(n, 0);
}

// ---------------------------------------------------------------- registration tokens

#[tokio::test]
async fn requires_token_flow_advertises_token_stage() {
    let s = TestServer::start_with(token_start_config).await;
    let (uia, _) = uia_start(
        &s,
        REGISTER,
        None,
        &json!({"username": "bob", "password": "password123"}),
    )
    .await;
    assert_eq!(
        uia["flows"],
        json!([{"stages": ["m.login.registration_token"]}]),
        "{uia}"
    );
    assert_eq!(uia["params"], json!({}), "{uia}");
}

#[tokio::test]
async fn requires_token_rejects_dummy() {
    // Contract: with requires_token the only flow is the token stage, so the
    // dummy stage alone cannot complete registration (spec: 401 UIA body).
    let s = TestServer::start_with(token_start_config).await;
    let mut body = json!({"username": "bob", "password": "password123"});
    let (_, session) = uia_start(&s, REGISTER, None, &body).await;
    body["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (st, resp) = s.post(REGISTER, None, body).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{resp}");
    let n = s
        .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@bob:test.local'")
        .await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn requires_token_bad_token_is_401_forbidden() {
    let s = TestServer::start_with(token_start_config).await;
    let admin = s.admin("root").await;
    new_token(&s, &admin, json!({"token": "goodtoken"})).await;
    let (st, resp) = register_with_token(&s, "bob", "badtoken").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{resp}");
    assert_eq!(resp["errcode"], "M_FORBIDDEN", "{resp}");
    assert!(resp["error"].is_string(), "{resp}");
    assert_uia_body(&resp, "m.login.registration_token");
    let n = s
        .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@bob:test.local'")
        .await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn requires_token_good_token_registers() {
    let s = TestServer::start_with(token_start_config).await;
    let admin = s.admin("root").await;
    new_token(&s, &admin, json!({"token": "goodtoken"})).await;
    let (st, resp) = register_with_token(&s, "bob", "goodtoken").await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    assert_eq!(resp["user_id"], "@bob:test.local");
    // The spec dropped `home_server` from /register (ruma has no field for it).
    assert!(resp.get("home_server").is_none(), "{resp}");
    let (st, who) = s.get(WHOAMI, resp["access_token"].as_str()).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], "@bob:test.local");
    // The use is counted.
    let (st, tok) = s.get(&format!("{TOKENS}/goodtoken"), admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert_eq!(tok["completed"], 1, "{tok}");
    assert_eq!(tok["pending"], 0, "{tok}");
}

#[tokio::test]
async fn requires_token_uses_allowed_respected() {
    let s = TestServer::start_with(token_start_config).await;
    let admin = s.admin("root").await;
    let tok = new_token(&s, &admin, json!({"token": "onceonly", "uses_allowed": 1})).await;
    assert_eq!(tok["uses_allowed"], 1, "{tok}");
    let (st, resp) = register_with_token(&s, "bob", "onceonly").await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    // Second use: the token is used up.
    let (st, resp) = register_with_token(&s, "carol", "onceonly").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{resp}");
    assert_eq!(resp["errcode"], "M_FORBIDDEN", "{resp}");
    let n = s
        .sql_count("SELECT COUNT(*) FROM accounts WHERE user_id = '@carol:test.local'")
        .await;
    assert_eq!(n, 0);
    let (st, tok) = s.get(&format!("{TOKENS}/onceonly"), admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert_eq!(tok["completed"], 1, "{tok}");
    // Raising uses_allowed makes it usable again.
    let (st, tok) = s
        .put(
            &format!("{TOKENS}/onceonly"),
            admin.token(),
            json!({"uses_allowed": 2}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    let (st, resp) = register_with_token(&s, "carol", "onceonly").await;
    assert_eq!(st, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn requires_token_zero_uses_allowed_is_rejected() {
    let s = TestServer::start_with(token_start_config).await;
    let admin = s.admin("root").await;
    new_token(&s, &admin, json!({"token": "zerouses", "uses_allowed": 0})).await;
    let (st, resp) = register_with_token(&s, "bob", "zerouses").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{resp}");
    assert_eq!(resp["errcode"], "M_FORBIDDEN", "{resp}");
}

#[tokio::test]
async fn validity_endpoint() {
    let s = TestServer::start_with(token_start_config).await;
    let admin = s.admin("root").await;
    new_token(
        &s,
        &admin,
        json!({"token": "validtoken", "uses_allowed": 1}),
    )
    .await;
    new_token(&s, &admin, json!({"token": "usedup", "uses_allowed": 0})).await;
    let (st, body) = s.get(&format!("{VALIDITY}?token=validtoken"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"valid": true}));
    let (st, body) = s.get(&format!("{VALIDITY}?token=nosuchtoken"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"valid": false}));
    let (st, body) = s.get(&format!("{VALIDITY}?token=usedup"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"valid": false}));
    // After its one use, the token is no longer valid.
    let (st, resp) = register_with_token(&s, "bob", "validtoken").await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    let (st, body) = s.get(&format!("{VALIDITY}?token=validtoken"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"valid": false}));
}

#[tokio::test]
async fn validity_endpoint_missing_token_param() {
    // Contract silent; Synapse answers a missing `token` query parameter with
    // 400 M_MISSING_PARAM. We only require a 400.
    let s = TestServer::start().await;
    let (st, body) = s.get(VALIDITY, None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errcode"].is_string(), "{body}");
}

// ---------------------------------------------------------------- /register/available

#[tokio::test]
async fn register_available_cases() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let (st, body) = s.get(&format!("{AVAILABLE}?username=bob"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"available": true}));
    let r = s.get(&format!("{AVAILABLE}?username=alice"), None).await;
    assert_error(&r, 400, "M_USER_IN_USE");
    let r = s
        .get(&format!("{AVAILABLE}?username=bad%20name"), None)
        .await;
    assert_error(&r, 400, "M_INVALID_USERNAME");
    let r = s.get(&format!("{AVAILABLE}?username=_leading"), None).await;
    assert_error(&r, 400, "M_INVALID_USERNAME");
    // After registering bob he is taken.
    let (st, resp) =
        register_dummy(&s, json!({"username": "bob", "password": "password123"})).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    let r = s.get(&format!("{AVAILABLE}?username=bob"), None).await;
    assert_error(&r, 400, "M_USER_IN_USE");
    // r0 alias.
    let r = s
        .get("/_matrix/client/r0/register/available?username=bob", None)
        .await;
    assert_error(&r, 400, "M_USER_IN_USE");
}

// ---------------------------------------------------------------- registration tokens admin API

#[tokio::test]
async fn registration_tokens_create_shapes() {
    let s = TestServer::start().await;
    let admin = s.admin("root").await;
    // Explicit token, defaults for the rest.
    let tok = new_token(&s, &admin, json!({"token": "abcd"})).await;
    assert_eq!(
        tok,
        json!({"token": "abcd", "uses_allowed": null, "pending": 0, "completed": 0, "expiry_time": null}),
        "{tok}"
    );
    // Every field given.
    let expiry = 4_102_444_800_000i64; // year 2100, in ms
    let tok = new_token(
        &s,
        &admin,
        json!({"token": "full", "uses_allowed": 3, "expiry_time": expiry}),
    )
    .await;
    assert_eq!(
        tok,
        json!({"token": "full", "uses_allowed": 3, "pending": 0, "completed": 0, "expiry_time": expiry}),
        "{tok}"
    );
    // Generated token; Synapse's alphabet is [A-Za-z0-9._~-], default length 16.
    let tok = new_token(&s, &admin, json!({})).await;
    let t = tok["token"].as_str().expect("generated token");
    assert!(!t.is_empty(), "{tok}");
    assert!(
        t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c)),
        "{tok}"
    );
    // Generated with a length.
    let tok = new_token(&s, &admin, json!({"length": 10})).await;
    assert_eq!(
        tok["token"].as_str().expect("generated token").len(),
        10,
        "{tok}"
    );
    assert_ne!(tok["token"], t);
}

#[tokio::test]
async fn registration_tokens_duplicate_is_invalid_param() {
    let s = TestServer::start().await;
    let admin = s.admin("root").await;
    new_token(&s, &admin, json!({"token": "dup"})).await;
    let r = s
        .post(
            &format!("{TOKENS}/new"),
            admin.token(),
            json!({"token": "dup"}),
        )
        .await;
    assert_error(&r, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn registration_tokens_list_get_update_delete() {
    let s = TestServer::start().await;
    let admin = s.admin("root").await;
    let (st, list) = s.get(TOKENS, admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list, json!({"registration_tokens": []}));

    new_token(&s, &admin, json!({"token": "one", "uses_allowed": 5})).await;
    new_token(&s, &admin, json!({"token": "two"})).await;
    new_token(&s, &admin, json!({"token": "spent", "uses_allowed": 0})).await;

    let (st, list) = s.get(TOKENS, admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v["registration_tokens"]
            .as_array()
            .unwrap_or_else(|| panic!("registration_tokens: {v}"))
            .iter()
            .map(|t| t["token"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&list), vec!["one", "spent", "two"], "{list}");
    let one = list["registration_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["token"] == "one")
        .unwrap();
    assert_eq!(one["uses_allowed"], 5);
    assert_eq!(one["pending"], 0);
    assert_eq!(one["completed"], 0);
    assert!(one["expiry_time"].is_null());

    // valid filter: a token with uses_allowed 0 is not valid (Synapse semantics).
    let (st, list) = s.get(&format!("{TOKENS}?valid=true"), admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(names(&list), vec!["one", "two"], "{list}");
    let (st, list) = s.get(&format!("{TOKENS}?valid=false"), admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(names(&list), vec!["spent"], "{list}");

    // GET one.
    let (st, tok) = s.get(&format!("{TOKENS}/one"), admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert_eq!(
        tok,
        json!({"token": "one", "uses_allowed": 5, "pending": 0, "completed": 0, "expiry_time": null})
    );

    // PUT updates and returns the token.
    let expiry = 4_102_444_800_000i64;
    let (st, tok) = s
        .put(
            &format!("{TOKENS}/one"),
            admin.token(),
            json!({"uses_allowed": 7, "expiry_time": expiry}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert_eq!(tok["token"], "one");
    assert_eq!(tok["uses_allowed"], 7);
    assert_eq!(tok["expiry_time"], expiry);
    let (st, tok) = s.get(&format!("{TOKENS}/one"), admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert_eq!(tok["uses_allowed"], 7);
    assert_eq!(tok["expiry_time"], expiry);
    // null lifts the limit; an omitted field is left alone (Synapse semantics).
    let (st, tok) = s
        .put(
            &format!("{TOKENS}/one"),
            admin.token(),
            json!({"uses_allowed": null}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert!(tok["uses_allowed"].is_null(), "{tok}");
    assert_eq!(tok["expiry_time"], expiry, "{tok}");

    // DELETE.
    let (st, body) = s
        .delete(&format!("{TOKENS}/one"), admin.token(), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let r = s.get(&format!("{TOKENS}/one"), admin.token()).await;
    assert_error(&r, 404, "M_NOT_FOUND");
    let (st, list) = s.get(TOKENS, admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(names(&list), vec!["spent", "two"], "{list}");
}

#[tokio::test]
async fn registration_tokens_unknown_is_404() {
    let s = TestServer::start().await;
    let admin = s.admin("root").await;
    let r = s.get(&format!("{TOKENS}/nope"), admin.token()).await;
    assert_error(&r, 404, "M_NOT_FOUND");
    let r = s
        .put(
            &format!("{TOKENS}/nope"),
            admin.token(),
            json!({"uses_allowed": 1}),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    let r = s
        .delete(&format!("{TOKENS}/nope"), admin.token(), None)
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn registration_tokens_need_admin() {
    let s = TestServer::start().await;
    let admin = s.admin("root").await;
    new_token(&s, &admin, json!({"token": "exists"})).await;
    let user = s.user("alice").await;
    let r = s.get(TOKENS, user.token()).await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let r = s
        .post(
            &format!("{TOKENS}/new"),
            user.token(),
            json!({"token": "mine"}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let r = s.get(&format!("{TOKENS}/exists"), user.token()).await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let r = s
        .put(
            &format!("{TOKENS}/exists"),
            user.token(),
            json!({"uses_allowed": 1}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let r = s
        .delete(&format!("{TOKENS}/exists"), user.token(), None)
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    // No token / bad token.
    let r = s.get(TOKENS, None).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = s.get(TOKENS, Some("bogus")).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    // Nothing changed: "mine" was not created and "exists" still exists.
    let (st, list) = s.get(TOKENS, admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let toks = list["registration_tokens"].as_array().unwrap();
    assert_eq!(toks.len(), 1, "{list}");
    assert_eq!(toks[0]["token"], "exists");
    assert!(toks[0]["uses_allowed"].is_null(), "{list}");
}

#[tokio::test]
async fn registration_tokens_promoted_admin_at_once() {
    let s = TestServer::start().await;
    let user = s.user("alice").await;
    let r = s.get(TOKENS, user.token()).await;
    assert_error(&r, 403, "M_FORBIDDEN");
    s.sql("UPDATE accounts SET account_type = 3 WHERE user_id = '@alice:test.local'")
        .await;
    let (st, list) = s.get(TOKENS, user.token()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert!(list["registration_tokens"].is_array(), "{list}");
}

/// Dendrite's registration-token paths serve the same tokens (update by POST).
#[tokio::test]
async fn dendrite_registration_token_paths() {
    let s = TestServer::start().await;
    let admin = s.admin("root").await;
    let user = s.user("plain").await;
    let base = "/_dendrite/admin/registrationTokens";
    let (st, body) = s
        .post(
            &format!("{base}/new"),
            admin.token(),
            json!({"token": "dtok", "uses_allowed": 2}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["token"], "dtok");
    assert_eq!(body["uses_allowed"], 2);
    let (st, body) = s.get(base, admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["registration_tokens"][0]["token"], "dtok");
    let (st, body) = s
        .post(
            &format!("{base}/dtok"),
            admin.token(),
            json!({"uses_allowed": 5}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["uses_allowed"], 5);
    // The Synapse path sees the same token.
    let (st, body) = s
        .get("/_synapse/admin/v1/registration_tokens/dtok", admin.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["uses_allowed"], 5);
    assert_error(&s.get(base, user.token()).await, 403, "M_FORBIDDEN");
    assert_error(&s.get(base, None).await, 401, "M_MISSING_TOKEN");
    let (st, _) = s.delete(&format!("{base}/dtok"), admin.token(), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_error(
        &s.get(&format!("{base}/dtok"), admin.token()).await,
        404,
        "M_NOT_FOUND",
    );
}
