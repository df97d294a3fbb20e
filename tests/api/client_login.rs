//! /login, /logout, /logout/all, whoami, guest restrictions.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const DEVICES: &str = "/_matrix/client/v3/devices";

#[track_caller]
fn assert_login_ok(resp: &(StatusCode, Value), user_id: &str) {
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(resp.1["user_id"], user_id, "{}", resp.1);
    assert!(
        resp.1["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{}",
        resp.1
    );
    assert!(
        resp.1["device_id"].as_str().is_some_and(|d| !d.is_empty()),
        "{}",
        resp.1
    );
    assert_eq!(resp.1["home_server"], "test.local", "{}", resp.1);
}

// ---------------------------------------------------------------- GET /login

#[tokio::test]
async fn get_login_lists_password_flow() {
    let s = TestServer::start().await;
    let (st, body) = s.get(LOGIN, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let flows = body["flows"].as_array().expect("flows array");
    assert!(
        flows.iter().any(|f| f["type"] == "m.login.password"),
        "{body}"
    );
    assert!(flows.iter().all(|f| f["type"].is_string()), "{body}");
}

// ---------------------------------------------------------------- POST /login

#[tokio::test]
async fn login_with_localpart() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = s
        .post(LOGIN, None, password_login("alice", "password123"))
        .await;
    assert_login_ok(&r, "@alice:test.local");
    let token = r.1["access_token"].as_str().unwrap();
    let (st, who) = s.get(WHOAMI, Some(token)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], "@alice:test.local");
    assert_eq!(who["device_id"], r.1["device_id"]);
}

#[tokio::test]
async fn login_with_full_mxid() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = s
        .post(
            LOGIN,
            None,
            password_login("@alice:test.local", "password123"),
        )
        .await;
    assert_login_ok(&r, "@alice:test.local");
}

#[tokio::test]
async fn login_with_uppercase_localpart() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = s
        .post(LOGIN, None, password_login("ALICE", "password123"))
        .await;
    assert_login_ok(&r, "@alice:test.local");
    let r = s
        .post(
            LOGIN,
            None,
            password_login("@Alice:test.local", "password123"),
        )
        .await;
    assert_login_ok(&r, "@alice:test.local");
}

#[tokio::test]
async fn login_with_legacy_user_field() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = s
        .post(
            LOGIN,
            None,
            json!({"type": "m.login.password", "user": "alice", "password": "password123"}),
        )
        .await;
    assert_login_ok(&r, "@alice:test.local");
    let r = s
        .post(LOGIN, None, json!({"type": "m.login.password", "user": "@alice:test.local", "password": "password123"}))
        .await;
    assert_login_ok(&r, "@alice:test.local");
}

#[tokio::test]
async fn login_gives_distinct_tokens_and_devices() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let a = s.login("alice", "password123").await;
    let b = s.login("alice", "password123").await;
    assert_ne!(a.access_token, b.access_token);
    assert_ne!(a.device_id, b.device_id);
}

#[tokio::test]
async fn login_wrong_password_is_403_forbidden() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = s
        .post(LOGIN, None, password_login("alice", "wrongpassword"))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    assert!(r.1.get("access_token").is_none(), "{}", r.1);
}

#[tokio::test]
async fn login_unknown_user_is_403_forbidden() {
    let s = TestServer::start().await;
    let r = s
        .post(LOGIN, None, password_login("nobody", "password123"))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    // A user on another server is unknown too.
    s.user("alice").await;
    let r = s
        .post(
            LOGIN,
            None,
            password_login("@alice:other.example", "password123"),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn login_unknown_type_is_400_unknown() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = s
        .post(
            LOGIN,
            None,
            json!({"type": "m.login.bogus", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "password123"}),
        )
        .await;
    assert_error(&r, 400, "M_UNKNOWN");
}

#[tokio::test]
async fn login_missing_password_is_400_bad_json() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = s.post(LOGIN, None, json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}})).await;
    assert_error(&r, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn login_with_device_id_uses_it() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let mut body = password_login("alice", "password123");
    body["device_id"] = json!("MYDEVICE");
    let r = s.post(LOGIN, None, body.clone()).await;
    assert_login_ok(&r, "@alice:test.local");
    assert_eq!(r.1["device_id"], "MYDEVICE");
    let t1 = r.1["access_token"].as_str().unwrap().to_owned();

    // Logging in again with the same device id reuses the device.
    let r = s.post(LOGIN, None, body).await;
    assert_login_ok(&r, "@alice:test.local");
    assert_eq!(r.1["device_id"], "MYDEVICE");
    let t2 = r.1["access_token"].as_str().unwrap().to_owned();
    assert_ne!(t1, t2);
    let (st, who) = s.get(WHOAMI, Some(&t2)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["device_id"], "MYDEVICE");

    let (st, devices) = s.get(DEVICES, Some(&t2)).await;
    assert_eq!(st, StatusCode::OK, "{devices}");
    let ids = device_ids(&devices);
    assert_eq!(
        ids.iter().filter(|d| *d == "MYDEVICE").count(),
        1,
        "device listed once: {devices}"
    );
}

#[tokio::test]
async fn login_with_existing_device_id_invalidates_old_token() {
    // Contract silent; the spec (Relationship between access tokens and
    // devices) says: "If the client sets the device_id, the server will
    // invalidate any access token previously assigned to that device."
    let s = TestServer::start().await;
    s.user("alice").await;
    let mut body = password_login("alice", "password123");
    body["device_id"] = json!("PHONE");
    let r1 = s.post(LOGIN, None, body.clone()).await;
    assert_login_ok(&r1, "@alice:test.local");
    let r2 = s.post(LOGIN, None, body).await;
    assert_login_ok(&r2, "@alice:test.local");
    let r = s.get(WHOAMI, r1.1["access_token"].as_str()).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    let (st, who) = s.get(WHOAMI, r2.1["access_token"].as_str()).await;
    assert_eq!(st, StatusCode::OK, "{who}");
}

#[tokio::test]
async fn login_initial_device_display_name_visible_in_devices() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let mut body = password_login("alice", "password123");
    body["initial_device_display_name"] = json!("Alice's phone");
    let r = s.post(LOGIN, None, body).await;
    assert_login_ok(&r, "@alice:test.local");
    let token = r.1["access_token"].as_str().unwrap();
    let device_id = r.1["device_id"].as_str().unwrap();
    let (st, devices) = s.get(DEVICES, Some(token)).await;
    assert_eq!(st, StatusCode::OK, "{devices}");
    let dev = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["device_id"] == device_id)
        .unwrap_or_else(|| panic!("new device listed: {devices}"))
        .clone();
    assert_eq!(dev["display_name"], "Alice's phone", "{devices}");
}

#[tokio::test]
async fn login_with_device_id_and_display_name() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let mut body = password_login("alice", "password123");
    body["device_id"] = json!("LAPTOP");
    body["initial_device_display_name"] = json!("Work laptop");
    let r = s.post(LOGIN, None, body).await;
    assert_login_ok(&r, "@alice:test.local");
    assert_eq!(r.1["device_id"], "LAPTOP");
    let (st, dev) = s
        .get(&format!("{DEVICES}/LAPTOP"), r.1["access_token"].as_str())
        .await;
    assert_eq!(st, StatusCode::OK, "{dev}");
    assert_eq!(dev["device_id"], "LAPTOP");
    assert_eq!(dev["display_name"], "Work laptop");
}

// ---------------------------------------------------------------- logout

#[tokio::test]
async fn logout_kills_only_that_token() {
    let s = TestServer::start().await;
    let a = s.user("alice").await;
    let b = s.login("alice", "password123").await;
    let c = s.login("alice", "password123").await;

    let (st, body) = s
        .post("/_matrix/client/v3/logout", b.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    let r = s.get(WHOAMI, b.token()).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    // Logging out again with the dead token fails the same way.
    let r = s
        .post("/_matrix/client/v3/logout", b.token(), json!({}))
        .await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");

    for other in [&a, &c] {
        let (st, who) = s.get(WHOAMI, other.token()).await;
        assert_eq!(st, StatusCode::OK, "{who}");
        assert_eq!(who["device_id"], other.device_id);
    }
    // The logged-out device is gone.
    let (st, devices) = s.get(DEVICES, a.token()).await;
    assert_eq!(st, StatusCode::OK, "{devices}");
    let ids = device_ids(&devices);
    assert!(!ids.contains(&b.device_id), "{devices}");
    assert!(ids.contains(&a.device_id), "{devices}");
    assert!(ids.contains(&c.device_id), "{devices}");
}

#[tokio::test]
async fn logout_does_not_affect_other_users() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let (st, _) = s
        .post("/_matrix/client/v3/logout", alice.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, who) = s.get(WHOAMI, bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], bob.user_id);
}

#[tokio::test]
async fn logout_all_kills_every_token() {
    let s = TestServer::start().await;
    let a = s.user("alice").await;
    let b = s.login("alice", "password123").await;
    let c = s.login("alice", "password123").await;
    let bob = s.user("bob").await;

    let (st, body) = s
        .post("/_matrix/client/v3/logout/all", b.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    for sess in [&a, &b, &c] {
        let r = s.get(WHOAMI, sess.token()).await;
        assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    }
    // Another user is untouched.
    let (st, who) = s.get(WHOAMI, bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    // The user can log in again and sees only the new device.
    let d = s.login("alice", "password123").await;
    let (st, devices) = s.get(DEVICES, d.token()).await;
    assert_eq!(st, StatusCode::OK, "{devices}");
    assert_eq!(device_ids(&devices), vec![d.device_id.clone()], "{devices}");
}

#[tokio::test]
async fn logout_requires_token() {
    let s = TestServer::start().await;
    let r = s.post("/_matrix/client/v3/logout", None, json!({})).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = s
        .post("/_matrix/client/v3/logout/all", None, json!({}))
        .await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = s
        .post("/_matrix/client/v3/logout/all", Some("bogus"), json!({}))
        .await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
}

// ---------------------------------------------------------------- whoami

#[tokio::test]
async fn whoami_shape() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (st, body) = s.get(WHOAMI, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    assert_eq!(body["device_id"], alice.device_id);
    // `is_guest` defaults to false and may be omitted (spec).
    assert_ne!(body["is_guest"], true, "{body}");
    // Two users get their own identity.
    let bob = login_as_new(&s, "bob").await;
    let (st, body) = s.get(WHOAMI, bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@bob:test.local");
    assert_eq!(body["device_id"], bob.device_id);
}

/// Registers `localpart` and logs in once more (so the session is a login one).
async fn login_as_new(s: &TestServer, localpart: &str) -> Session {
    s.user(localpart).await;
    s.login(localpart, "password123").await
}

// ---------------------------------------------------------------- guests

#[tokio::test]
async fn guest_whoami_is_guest() {
    let s = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let guest = s.guest().await;
    let (st, body) = s.get(WHOAMI, guest.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], guest.user_id);
    assert_eq!(body["device_id"], guest.device_id);
    assert_eq!(body["is_guest"], true);
    assert!(guest.user_id.ends_with(":test.local"), "{}", guest.user_id);
}

/// Spec "Guest Access": guests may list, read and rename their devices
/// (GET /devices, GET and PUT /devices/{id}); deleting one stays closed, as
/// in Synapse. (This test expected 403 on the reads before guest access.)
#[tokio::test]
async fn guest_devices_read_only_and_rename() {
    let s = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let guest = s.guest().await;
    let (st, body) = s.get(DEVICES, guest.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["devices"][0]["device_id"], guest.device_id, "{body}");
    let one = format!("{DEVICES}/{}", guest.device_id);
    let (st, body) = s
        .put(&one, guest.token(), json!({"display_name": "visitor"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = s.get(&one, guest.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["display_name"], "visitor", "{body}");
    let r = s.delete(&one, guest.token(), Some(json!({}))).await;
    assert_error(&r, 403, "M_GUEST_ACCESS_FORBIDDEN");
    // Guests are not allowed to change a password either (not on the list).
    let r = s
        .post(
            "/_matrix/client/v3/account/password",
            guest.token(),
            json!({"new_password": "newpassword123"}),
        )
        .await;
    assert_error(&r, 403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn guest_allowed_on_capabilities_and_logout() {
    let s = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let guest = s.guest().await;
    let (st, body) = s
        .get("/_matrix/client/v3/capabilities", guest.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["capabilities"].is_object(), "{body}");
    let (st, body) = s
        .post("/_matrix/client/v3/logout", guest.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let r = s.get(WHOAMI, guest.token()).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
}

/// Tokens are cached after their first use. Every change that ends or
/// limits a session through the API applies to the very next request all
/// the same, and so does a promotion (admin endpoints read the account
/// from the database every time).
#[tokio::test]
async fn a_cached_token_follows_every_change_at_once() {
    let server = TestServer::start().await;
    let root = server.admin("root").await;
    let whoami = "/_matrix/client/v3/account/whoami";
    let alice = server.user("alice").await;
    let second = server.login("alice", "password123").await;
    let third = server.login("alice", "password123").await;
    for s in [&alice, &second, &third] {
        assert_eq!(server.get(whoami, s.token()).await.0, StatusCode::OK);
    }

    // Log out: that token only.
    let (st, _) = server
        .post("/_matrix/client/v3/logout", alice.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_error(
        &server.get(whoami, alice.token()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.get(whoami, second.token()).await.0, StatusCode::OK);

    // Logging in again with a device id replaces that device's token.
    let (st, body) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": "password123", "device_id": second.device_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server.get(whoami, second.token()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let replaced = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.get(whoami, Some(&replaced)).await.0, StatusCode::OK);

    // A non-admin's cached entry does not keep admin endpoints closed after
    // a promotion, nor open after a demotion.
    let users = "/_synapse/admin/v2/users?from=0&limit=10";
    assert_error(&server.get(users, third.token()).await, 403, "M_FORBIDDEN");
    let path = "/_synapse/admin/v2/users/@alice:test.local";
    let (st, _) = server.put(path, root.token(), json!({"admin": true})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(server.get(users, third.token()).await.0, StatusCode::OK);
    let (st, _) = server
        .put(path, root.token(), json!({"admin": false}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_error(&server.get(users, third.token()).await, 403, "M_FORBIDDEN");

    // Locked, unlocked, then deactivated by an admin.
    let (st, _) = server
        .put(path, root.token(), json!({"locked": true}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_error(
        &server.get(whoami, third.token()).await,
        401,
        "M_USER_LOCKED",
    );
    let (st, _) = server
        .put(path, root.token(), json!({"locked": false}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(server.get(whoami, third.token()).await.0, StatusCode::OK);
    let (st, _) = server
        .post(
            "/_synapse/admin/v1/deactivate/@alice:test.local",
            root.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_error(
        &server.get(whoami, third.token()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.get(whoami, Some(&replaced)).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn refresh_tokens_are_never_issued_so_none_is_valid() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    // Login asks for one and gets none.
    let mut body = password_login("alice", "password123");
    body["refresh_token"] = json!(true);
    let (st, login) = server.post(LOGIN, None, body).await;
    assert_eq!(st, StatusCode::OK, "{login}");
    assert!(login.get("refresh_token").is_none(), "{login}");
    assert!(login.get("expires_in_ms").is_none(), "{login}");
    for token in [Some(alice.access_token.as_str()), None] {
        let answer = server
            .post(
                "/_matrix/client/v3/refresh",
                token,
                json!({"refresh_token": "anything"}),
            )
            .await;
        assert_error(&answer, 401, "M_UNKNOWN_TOKEN");
        // `soft_logout` absent means false: log in again.
        assert!(
            answer.1.get("soft_logout").is_none_or(|v| v == false),
            "{}",
            answer.1
        );
    }
    // A missing or malformed field is answered as Synapse answers it.
    let missing = server
        .post("/_matrix/client/v3/refresh", None, json!({}))
        .await;
    assert_error(&missing, 400, "M_MISSING_PARAM");
    for bad in [json!(5), json!(null), json!(["t"])] {
        let answer = server
            .post(
                "/_matrix/client/v3/refresh",
                None,
                json!({"refresh_token": bad}),
            )
            .await;
        assert_error(&answer, 400, "M_INVALID_PARAM");
    }
    let not_an_object = server
        .post("/_matrix/client/v3/refresh", None, json!(["refresh_token"]))
        .await;
    assert_error(&not_an_object, 400, "M_BAD_JSON");
    // The r0 path is the same endpoint.
    let r0 = server
        .post(
            "/_matrix/client/r0/refresh",
            None,
            json!({"refresh_token": "anything"}),
        )
        .await;
    assert_error(&r0, 401, "M_UNKNOWN_TOKEN");
    // The access token still works.
    assert_eq!(server.whoami(alice.token()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn login_with_a_non_boolean_refresh_token_is_refused_as_synapse_does() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for bad in [
        json!("true"),
        json!(1),
        json!(null),
        json!({}),
        json!([true]),
    ] {
        let mut body = password_login("alice", "password123");
        body["refresh_token"] = bad.clone();
        let answer = server.post(LOGIN, None, body).await;
        assert_error(&answer, 400, "M_UNKNOWN");
        assert!(
            answer.1["error"]
                .as_str()
                .is_some_and(|e| e.contains("true or false")),
            "{bad}: {}",
            answer.1
        );
    }
    // Checked before the login type, as Synapse does.
    let answer = server
        .post(LOGIN, None, json!({"refresh_token": "yes"}))
        .await;
    assert_error(&answer, 400, "M_UNKNOWN");
    // None of the refused logins made a device: alice has only her first one.
    let (st, devices) = server.get(DEVICES, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{devices}");
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(1),
        "{devices}"
    );
    // `false` is a boolean: an ordinary login.
    let mut body = password_login("alice", "password123");
    body["refresh_token"] = json!(false);
    let (st, login) = server.post(LOGIN, None, body).await;
    assert_eq!(st, StatusCode::OK, "{login}");
    assert!(login.get("refresh_token").is_none(), "{login}");
}
