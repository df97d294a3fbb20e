//! /profile/{userId} and its displayname / avatar_url fields.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

/// Registers through the client API (`POST /register` with the m.login.dummy stage).
async fn client_register(server: &TestServer, username: &str) -> Session {
    let path = "/_matrix/client/v3/register";
    let body = json!({"username": username, "password": "password123"});
    let (_, session) = uia_start(server, path, None, &body).await;
    let mut body = body;
    body["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (st, resp) = server.post(path, None, body).await;
    assert_eq!(st, StatusCode::OK, "{resp}");
    Session::from_answer(&resp)
}

#[tokio::test]
async fn profile_readable_without_auth_and_defaults_to_localpart() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/profile/{}", alice.user_id),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "alice", "{body}");
    // No avatar set: the field is absent or null.
    assert!(body["avatar_url"].is_null(), "{body}");

    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "alice");

    // r0 alias
    let (st, body) = server
        .get(
            &format!("/_matrix/client/r0/profile/{}", alice.user_id),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "alice");
}

#[tokio::test]
async fn client_registration_defaults_displayname_to_localpart() {
    let server = TestServer::start().await;
    let carol = client_register(&server, "carol").await;
    assert_eq!(carol.user_id, "@carol:test.local");
    let (st, body) = server
        .get("/_matrix/client/v3/profile/@carol:test.local", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "carol", "{body}");
}

#[tokio::test]
async fn profile_accepts_percent_encoded_user_id() {
    // Assumption (spec): path parameters are URL-encoded by clients.
    let server = TestServer::start().await;
    server.user("alice").await;
    let (st, body) = server
        .get("/_matrix/client/v3/profile/%40alice%3Atest.local", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "alice");
}

#[tokio::test]
async fn set_displayname_and_read_back() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    let (st, body) = server
        .put(
            &path,
            alice.token(),
            json!({"displayname": "Alice Liddell"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    let (st, body) = server.get(&path, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["displayname"], "Alice Liddell");
    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/profile/{}", alice.user_id),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["displayname"], "Alice Liddell");

    // Unicode survives the round trip.
    let (st, _) = server
        .put(&path, alice.token(), json!({"displayname": "Алиса 🐇"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = server.get(&path, None).await;
    assert_eq!(body["displayname"], "Алиса 🐇");
}

#[tokio::test]
async fn set_avatar_url_and_read_back() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id);
    let (st, body) = server
        .put(
            &path,
            alice.token(),
            json!({"avatar_url": "mxc://test.local/rabbit"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    let (st, body) = server.get(&path, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["avatar_url"], "mxc://test.local/rabbit");

    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/profile/{}", alice.user_id),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["avatar_url"], "mxc://test.local/rabbit");
    // Setting the avatar does not clobber the display name.
    assert_eq!(body["displayname"], "alice");
}

#[tokio::test]
async fn profile_changes_are_per_user() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (st, _) = server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            alice.token(),
            json!({"displayname": "Only Alice"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = server
        .get(&format!("/_matrix/client/v3/profile/{}", bob.user_id), None)
        .await;
    assert_eq!(body["displayname"], "bob");
}

#[tokio::test]
async fn set_profile_of_another_user_is_forbidden() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id);
    assert_error(
        &server
            .put(&path, alice.token(), json!({"displayname": "pwned"}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    let path_av = format!("/_matrix/client/v3/profile/{}/avatar_url", bob.user_id);
    assert_error(
        &server
            .put(
                &path_av,
                alice.token(),
                json!({"avatar_url": "mxc://test.local/x"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    let (_, body) = server
        .get(&format!("/_matrix/client/v3/profile/{}", bob.user_id), None)
        .await;
    assert_eq!(body["displayname"], "bob");
    assert!(body["avatar_url"].is_null(), "{body}");
}

#[tokio::test]
async fn unknown_user_profile_is_not_found() {
    let server = TestServer::start().await;
    server.user("alice").await;
    for path in [
        "/_matrix/client/v3/profile/@nobody:test.local",
        "/_matrix/client/v3/profile/@nobody:test.local/displayname",
        "/_matrix/client/v3/profile/@nobody:test.local/avatar_url",
    ] {
        assert_error(&server.get(path, None).await, 404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn invalid_user_id_is_invalid_param() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for path in [
        "/_matrix/client/v3/profile/notauserid",
        "/_matrix/client/v3/profile/!room:test.local",
        "/_matrix/client/v3/profile/notauserid/displayname",
    ] {
        assert_error(
            &server.get(path, alice.token()).await,
            400,
            "M_INVALID_PARAM",
        );
    }
}

#[tokio::test]
async fn set_profile_requires_token() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    assert_error(
        &server
            .put(&path, None, json!({"displayname": "anon"}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .put(&path, Some("bogus-token"), json!({"displayname": "anon"}))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let path_av = format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id);
    assert_error(
        &server
            .put(&path_av, None, json!({"avatar_url": "mxc://test.local/x"}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    let (_, body) = server.get(&path, None).await;
    assert_eq!(body["displayname"], "alice");
}

#[tokio::test]
async fn set_displayname_bad_bodies() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    assert_error(
        &server
            .request_raw(Method::PUT, &path, alice.token(), "{nope")
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &server
            .put(&path, alice.token(), json!({"displayname": 17}))
            .await,
        400,
        "M_BAD_JSON",
    );
    let (_, body) = server.get(&path, None).await;
    assert_eq!(body["displayname"], "alice");
}
