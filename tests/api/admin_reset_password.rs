//! POST /_dendrite/admin/resetPassword/{userID}: Dendrite's
//! TestAdminResetPassword table with our fixed errcodes, plus side effects.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

fn path(user_id: &str) -> String {
    format!("/_dendrite/admin/resetPassword/{user_id}")
}

// ---- Dendrite's table ----

#[tokio::test]
async fn no_auth_header() {
    let server = TestServer::start().await;
    let bob = server.user("bob").await;
    assert_error(
        &server
            .post(
                &path(&bob.user_id),
                None,
                json!({"password": "newpassword"}),
            )
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    // The password is unchanged.
    server.login("bob", "password123").await;
}

#[tokio::test]
async fn non_admin_is_forbidden() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    assert_error(
        &server
            .post(
                &path(&bob.user_id),
                alice.token(),
                json!({"password": "newpassword"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Not even for oneself.
    assert_error(
        &server
            .post(
                &path(&bob.user_id),
                bob.token(),
                json!({"password": "newpassword"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    server.login("bob", "password123").await;
}

#[tokio::test]
async fn admin_resets_password() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    let (st, body) = server
        .post(
            &path(&bob.user_id),
            admin.token(),
            json!({"password": "rand0m8c"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"password_updated": true}));
}

#[tokio::test]
async fn empty_user_id_path_is_unrecognized() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    assert_error(
        &server
            .post(
                "/_dendrite/admin/resetPassword/",
                admin.token(),
                json!({"password": "newpassword"}),
            )
            .await,
        404,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test]
async fn empty_password_is_missing_param() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    assert_error(
        &server
            .post(&path(&bob.user_id), admin.token(), json!({"password": ""}))
            .await,
        400,
        "M_MISSING_PARAM",
    );
    server.login("bob", "password123").await;
}

#[tokio::test]
async fn foreign_domain_is_invalid_param() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    assert_error(
        &server
            .post(
                &path("@doesnotexist:localhost"),
                admin.token(),
                json!({"password": "newpassword"}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn unknown_local_user_is_not_found() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    assert_error(
        &server
            .post(
                &path("@doesnotexist:test.local"),
                admin.token(),
                json!({"password": "newpassword"}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
}

// Dendrite's virtual-host case (@vhuser:vh1) has no equivalent: Myelin has one server name.

#[tokio::test]
async fn no_body_is_not_json() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    assert_error(
        &server
            .request(Method::POST, &path(&bob.user_id), admin.token(), None)
            .await,
        400,
        "M_NOT_JSON",
    );
}

#[tokio::test]
async fn not_a_user_id_is_invalid_param() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    for id in ["!notauserid:test.local", "notauserid"] {
        let resp = server
            .post(&path(id), admin.token(), json!({"password": "newpassword"}))
            .await;
        assert_eq!(resp.0.as_u16(), 400, "{id}: {}", resp.1);
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
}

#[tokio::test]
async fn invalid_json_is_not_json() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    assert_error(
        &server
            .request_raw(
                Method::POST,
                &path(&bob.user_id),
                admin.token(),
                "{invalidJSON}",
            )
            .await,
        400,
        "M_NOT_JSON",
    );
    server.login("bob", "password123").await;
}

#[tokio::test]
async fn wrong_types_are_bad_json() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    for body in [
        json!({"password": 12345678}),
        json!({"password": "newpassword", "logout_devices": "yes"}),
        json!(["newpassword"]),
    ] {
        let resp = server
            .post(&path(&bob.user_id), admin.token(), body.clone())
            .await;
        assert_eq!(resp.0.as_u16(), 400, "{body}: {}", resp.1);
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    server.login("bob", "password123").await;
}

#[tokio::test]
async fn short_password_is_weak() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    for pw in ["abcdef", "abcdefg", "ééé" /* 3 chars, 6 bytes */] {
        let resp = server
            .post(&path(&bob.user_id), admin.token(), json!({"password": pw}))
            .await;
        assert_eq!(resp.0.as_u16(), 400, "{pw:?}: {}", resp.1);
        assert_error(&resp, 400, "M_WEAK_PASSWORD");
    }
    server.login("bob", "password123").await;
}

#[tokio::test]
async fn too_long_password_is_bad_json() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    let ascii = "a".repeat(513);
    // 257 characters but 514 bytes: the limit counts bytes.
    let multibyte = "é".repeat(257);
    for pw in [ascii, multibyte] {
        let resp = server
            .post(&path(&bob.user_id), admin.token(), json!({"password": pw}))
            .await;
        assert_eq!(resp.0.as_u16(), 400, "{} bytes: {}", pw.len(), resp.1);
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    server.login("bob", "password123").await;
}

#[tokio::test]
async fn length_boundaries_are_accepted() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    server.user("bob").await;
    let max = "b".repeat(512);
    // 4 characters, 8 bytes: long enough since length is in bytes.
    for pw in ["exactly8", "éééé", max.as_str()] {
        let (st, body) = server
            .post(
                &path("@bob:test.local"),
                admin.token(),
                json!({"password": pw}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{} bytes: {body}", pw.len());
        server.login("bob", pw).await;
    }
}

// ---- side effects ----

#[tokio::test]
async fn old_password_fails_and_new_one_works() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    let (st, body) = server
        .post(
            &path(&bob.user_id),
            admin.token(),
            json!({"password": "brandnewpass"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server.try_login("bob", "password123").await,
        403,
        "M_FORBIDDEN",
    );
    let s = server.login("bob", "brandnewpass").await;
    assert_eq!(s.user_id, "@bob:test.local");
    // Other users are unaffected.
    server.login("root", "password123").await;
}

#[tokio::test]
async fn logout_devices_true_kills_every_token() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    let bob2 = server.login("bob", "password123").await;
    let carol = server.user("carol").await;

    let (st, body) = server
        .post(
            &path(&bob.user_id),
            admin.token(),
            json!({"password": "brandnewpass", "logout_devices": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"password_updated": true}));

    for s in [&bob, &bob2] {
        assert_error(&server.whoami(s.token()).await, 401, "M_UNKNOWN_TOKEN");
    }
    // The admin and other users keep their sessions.
    for s in [&admin, &carol] {
        let (st, _) = server.whoami(s.token()).await;
        assert_eq!(st, StatusCode::OK);
    }

    let fresh = server.login("bob", "brandnewpass").await;
    let (st, devices) = server
        .get("/_matrix/client/v3/devices", fresh.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{devices}");
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![fresh.device_id.as_str()], "{devices}");
}

#[tokio::test]
async fn logout_devices_false_keeps_tokens() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    let bob2 = server.login("bob", "password123").await;
    let (st, body) = server
        .post(
            &path(&bob.user_id),
            admin.token(),
            json!({"password": "brandnewpass", "logout_devices": false}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    for s in [&bob, &bob2] {
        let (st, who) = server.whoami(s.token()).await;
        assert_eq!(st, StatusCode::OK, "{who}");
        assert_eq!(who["user_id"], "@bob:test.local");
    }
    let (_, devices) = server.get("/_matrix/client/v3/devices", bob.token()).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2, "{devices}");
    // The password did change.
    assert_error(
        &server.try_login("bob", "password123").await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn logout_devices_defaults_to_false() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    let (st, body) = server
        .post(
            &path(&bob.user_id),
            admin.token(),
            json!({"password": "brandnewpass"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _) = server.whoami(bob.token()).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "token died although logout_devices defaults to false"
    );
    server.login("bob", "brandnewpass").await;
}

#[tokio::test]
async fn admin_resetting_own_password_with_logout_loses_own_token() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let (st, body) = server
        .post(
            &path(&admin.user_id),
            admin.token(),
            json!({"password": "brandnewpass", "logout_devices": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(&server.whoami(admin.token()).await, 401, "M_UNKNOWN_TOKEN");
    let again = server.login("root", "brandnewpass").await;
    let (st, _) = server
        .get("/_synapse/admin/v1/registration_tokens", again.token())
        .await;
    assert_eq!(st, StatusCode::OK, "still an admin after the reset");
}

#[tokio::test]
async fn deactivated_user_still_exists_for_reset() {
    // Assumption (Dendrite: "a deactivated account still exists"): the reset
    // succeeds, and login still reports the deactivation.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    server
        .sql("UPDATE accounts SET is_deactivated = 1 WHERE user_id = '@bob:test.local'")
        .await;
    let (st, body) = server
        .post(
            &path(&bob.user_id),
            admin.token(),
            json!({"password": "brandnewpass"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_error(
        &server.try_login("bob", "brandnewpass").await,
        403,
        "M_USER_DEACTIVATED",
    );
}

#[tokio::test]
async fn percent_encoded_user_id() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    server.user("bob").await;
    let (st, body) = server
        .post(
            "/_dendrite/admin/resetPassword/%40bob%3Atest.local",
            admin.token(),
            json!({"password": "brandnewpass"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    server.login("bob", "brandnewpass").await;
}
