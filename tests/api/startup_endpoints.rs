//! The small endpoints Element Web and Element X call at start-up: the
//! account's 3PIDs, `/thirdparty`, OpenID tokens (and the federation
//! `/openid/userinfo` that checks them), `/voip/turnServer`, and what
//! `/capabilities` and `/versions` say about them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";

#[tokio::test]
async fn account_3pids_are_empty_and_changes_refused_as_synapse_without_email() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t = alice.token();

    let (st, body) = server.get(&format!("{V3}/account/3pid"), t).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"threepids": []}));
    // r0 too, and only with a token.
    let (st, body) = server.get("/_matrix/client/r0/account/3pid", t).await;
    assert_eq!((st, body), (StatusCode::OK, json!({"threepids": []})));
    assert_error(
        &server.get(&format!("{V3}/account/3pid"), None).await,
        401,
        "M_MISSING_TOKEN",
    );

    // requestToken: the medium is refused before the body is read, with or
    // without a token, empty body or full one.
    let full = json!({"client_secret": "secret1", "email": "a@example.org", "send_attempt": 1});
    for path in [
        "account/3pid/email/requestToken",
        "register/email/requestToken",
        "account/password/email/requestToken",
    ] {
        for body in [json!({}), full.clone()] {
            let resp = server.post(&format!("{V3}/{path}"), None, body).await;
            assert_error_for(path, &resp, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
        }
    }
    let msisdn = json!({"client_secret": "secret1", "country": "GB", "phone_number": "07700900001", "send_attempt": 1});
    for path in [
        "account/3pid/msisdn/requestToken",
        "register/msisdn/requestToken",
        "account/password/msisdn/requestToken",
    ] {
        let resp = server
            .post(&format!("{V3}/{path}"), t, msisdn.clone())
            .await;
        assert_error_for(path, &resp, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    }

    // add: user-interactive auth first, then no validated session exists.
    let add = format!("{V3}/account/3pid/add");
    let body = json!({"client_secret": "secret1", "sid": "sid1"});
    let resp = with_uia(
        &server,
        FirstRound::Challenge,
        UiaRequest::post(&add, t, body.clone()),
        "alice",
        "password123",
    )
    .await;
    assert_error(&resp, 400, "M_THREEPID_AUTH_FAILED");
    assert_error(&server.post(&add, None, body).await, 401, "M_MISSING_TOKEN");

    // The deprecated POST /account/3pid.
    let old = format!("{V3}/account/3pid");
    let creds = json!({"three_pid_creds": {"client_secret": "secret1", "sid": "sid1", "id_server": "id.example.org"}});
    assert_error(
        &server.post(&old, t, creds).await,
        400,
        "M_THREEPID_AUTH_FAILED",
    );
    let camel = json!({"threePidCreds": {"client_secret": "secret1", "sid": "sid1"}});
    assert_error(
        &server.post(&old, t, camel).await,
        400,
        "M_THREEPID_AUTH_FAILED",
    );
    assert_error(
        &server.post(&old, t, json!({})).await,
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &server
            .post(&old, t, json!({"three_pid_creds": {"client_secret": "s"}}))
            .await,
        400,
        "M_MISSING_PARAM",
    );

    // bind goes through an identity server: refused.
    let bind = json!({"client_secret": "secret1", "id_access_token": "tok", "id_server": "id.example.org", "sid": "sid1"});
    assert_error(
        &server
            .post(&format!("{V3}/account/3pid/bind"), t, bind)
            .await,
        403,
        "M_THREEPID_DENIED",
    );

    // delete and unbind of a 3PID the account does not have: success,
    // nothing was unbound anywhere.
    for path in ["account/3pid/delete", "account/3pid/unbind"] {
        let (st, body) = server
            .post(
                &format!("{V3}/{path}"),
                t,
                json!({"medium": "email", "address": "a@example.org"}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{path}: {body}");
        assert_eq!(
            body,
            json!({"id_server_unbind_result": "no-support"}),
            "{path}"
        );
        let resp = server
            .post(
                &format!("{V3}/{path}"),
                t,
                json!({"medium": "carrier-pigeon", "address": "a"}),
            )
            .await;
        assert_error_for(path, &resp, 400, "M_BAD_JSON");
        let resp = server
            .post(&format!("{V3}/{path}"), t, json!({"medium": "email"}))
            .await;
        assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{path}: {}", resp.1);
        let resp = server
            .post(
                &format!("{V3}/{path}"),
                None,
                json!({"medium": "email", "address": "a@example.org"}),
            )
            .await;
        assert_error_for(path, &resp, 401, "M_MISSING_TOKEN");
    }

    // Nothing can be added, and /capabilities says so.
    let (st, caps) = server.get(&format!("{V3}/capabilities"), t).await;
    assert_eq!(st, StatusCode::OK, "{caps}");
    assert_eq!(
        caps["capabilities"]["m.3pid_changes"],
        json!({"enabled": false})
    );
}

#[tokio::test]
async fn thirdparty_lookups_answer_as_synapse_without_application_services() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let guest = server.guest().await;
    for t in [alice.token(), guest.token()] {
        let (st, body) = server.get(&format!("{V3}/thirdparty/protocols"), t).await;
        assert_eq!((st, body), (StatusCode::OK, json!({})));
        let resp = server
            .get(&format!("{V3}/thirdparty/protocol/irc"), t)
            .await;
        assert_error(&resp, 404, "M_NOT_FOUND");
        for path in [
            "thirdparty/location/irc?searchFields=x",
            "thirdparty/location?alias=%23a%3Aexample.org",
            "thirdparty/location",
            "thirdparty/user/irc",
            "thirdparty/user?userid=%40a%3Aexample.org",
            "thirdparty/user",
        ] {
            let (st, body) = server.get(&format!("{V3}/{path}"), t).await;
            assert_eq!(st, StatusCode::OK, "{path}: {body}");
            assert_eq!(body, json!([]), "{path}");
        }
    }
    for path in [
        "thirdparty/protocols",
        "thirdparty/protocol/irc",
        "thirdparty/location/irc",
        "thirdparty/location",
        "thirdparty/user/irc",
        "thirdparty/user",
    ] {
        let resp = server.get(&format!("{V3}/{path}"), None).await;
        assert_error_for(path, &resp, 401, "M_MISSING_TOKEN");
    }
}

async fn userinfo(server: &TestServer, token: &str) -> (StatusCode, Value) {
    server
        .get(
            &format!("/_matrix/federation/v1/openid/userinfo?access_token={token}"),
            None,
        )
        .await
}

#[tokio::test]
async fn openid_tokens_are_issued_to_yourself_and_expire_after_an_hour() {
    let server = TestServer::start_with_mock_clock(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let path = format!("{V3}/user/{}/openid/request_token", enc(&alice.user_id));

    let (st, body) = server.post(&path, alice.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["matrix_server_name"], "test.local", "{body}");
    assert_eq!(body["expires_in"], 3600, "{body}");
    let token = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    assert!(token.len() >= 16, "{body}");

    let (st, info) = userinfo(&server, &token).await;
    assert_eq!(st, StatusCode::OK, "{info}");
    assert_eq!(info, json!({"sub": alice.user_id}));

    // The token is not an access token, and an access token not an OpenID one.
    assert_error(&server.whoami(Some(&token)).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &userinfo(&server, &alice.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    // Errors: another user, no token, a guest, unknown token, missing token.
    assert_error(
        &server.post(&path, bob.token(), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.post(&path, None, json!({})).await,
        401,
        "M_MISSING_TOKEN",
    );
    let guest = server.guest().await;
    let guest_path = format!("{V3}/user/{}/openid/request_token", enc(&guest.user_id));
    assert_error(
        &server.post(&guest_path, guest.token(), json!({})).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    assert_error(&userinfo(&server, "nope").await, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &server
            .get("/_matrix/federation/v1/openid/userinfo", None)
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    // Valid through the hour, unknown after it.
    server.advance(Duration::from_secs(3600));
    assert_eq!(userinfo(&server, &token).await.0, StatusCode::OK);
    server.advance(Duration::from_secs(1));
    assert_error(&userinfo(&server, &token).await, 401, "M_UNKNOWN_TOKEN");

    // A new token is stored and the expired one is gone from the table.
    let (st, body) = server.post(&path, alice.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM openid_tokens").await,
        1
    );

    // Deactivation takes the account's tokens with it.
    let fresh = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(userinfo(&server, &fresh).await.0, StatusCode::OK);
    deactivate(&server, &alice, "alice").await;
    assert_error(&userinfo(&server, &fresh).await, 401, "M_UNKNOWN_TOKEN");
}

async fn turn_server(server: &TestServer, token: Option<&str>) -> (StatusCode, Value) {
    server.get(&format!("{V3}/voip/turnServer"), token).await
}

#[tokio::test]
async fn turn_server_is_empty_without_config() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (st, body) = turn_server(&server, alice.token()).await;
    assert_eq!((st, body), (StatusCode::OK, json!({})));
    assert_error(&turn_server(&server, None).await, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn turn_server_gives_coturn_rest_credentials_from_the_shared_secret() {
    let uris = vec![
        "turn:turn.example.org:3478?transport=udp".to_owned(),
        "turns:turn.example.org:5349?transport=tcp".to_owned(),
    ];
    let server = TestServer::start_with_mock_clock(|c| {
        c.registration.allow_guests = true;
        c.turn.uris = uris.clone();
        c.turn.shared_secret = Some("Jefe".into());
        c.turn.user_lifetime_secs = 86_400;
    })
    .await;
    let alice = server.user("alice").await;
    let (st, body) = turn_server(&server, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let expiry = server.now_ms() / 1000 + 86_400;
    let username = format!("{expiry}:{}", alice.user_id);
    assert_eq!(body["username"], username.as_str(), "{body}");
    assert_eq!(body["uris"], json!(uris));
    assert_eq!(body["ttl"], 86_400);
    // base64(HMAC-SHA1("Jefe", username)), computed independently here.
    assert_eq!(
        body["password"],
        coturn_password("Jefe", &username),
        "{body}"
    );

    // Guests get them too by default.
    let guest = server.guest().await;
    let (st, body) = turn_server(&server, guest.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(
        body["username"].as_str().unwrap().ends_with(&guest.user_id),
        "{body}"
    );
}

/// RFC 2104 HMAC over SHA-1, then base64: the test's own derivation of
/// coturn's password (the server uses the `hmac` crate). Checked against
/// RFC 2202's test case 2 below.
fn coturn_password(secret: &str, username: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[test]
fn coturn_password_matches_rfc_2202() {
    // HMAC-SHA1("Jefe", "what do ya want for nothing?") =
    // effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
    assert_eq!(
        coturn_password("Jefe", "what do ya want for nothing?"),
        "7/zfauXrL6LSdBbV8YTfnCWafHk="
    );
}

#[tokio::test]
async fn turn_server_static_credentials_and_guests_refused_when_configured() {
    let server = TestServer::start_with(|c| {
        c.registration.allow_guests = true;
        c.turn.uris = vec!["turn:turn.example.org".into()];
        c.turn.username = Some("myelin".into());
        c.turn.password = Some("p4ss".into());
        c.turn.allow_guests = false;
    })
    .await;
    let alice = server.user("alice").await;
    let (st, body) = turn_server(&server, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"username": "myelin", "password": "p4ss", "uris": ["turn:turn.example.org"], "ttl": 3600})
    );
    let guest = server.guest().await;
    assert_error(
        &turn_server(&server, guest.token()).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
}

#[tokio::test]
async fn versions_and_capabilities_name_profile_fields() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (st, body) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body["unstable_features"]["uk.tcpip.msc4133"], true,
        "{body}"
    );
    assert_eq!(
        body["unstable_features"]["uk.tcpip.msc4133.stable"], true,
        "{body}"
    );
    let (st, caps) = server
        .get(&format!("{V3}/capabilities"), alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{caps}");
    assert_eq!(
        caps["capabilities"]["m.profile_fields"]["enabled"], true,
        "{caps}"
    );
}
