//! server_version, the admin check on every admin endpoint (read from the DB
//! on every request), error shapes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn server_version_needs_no_auth() {
    let server = TestServer::start().await;
    let (st, body) = server.get("/_synapse/admin/v1/server_version", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let v = body["server_version"]
        .as_str()
        .unwrap_or_else(|| panic!("server_version not a string: {body}"));
    assert!(!v.is_empty());
}

fn endpoints(target: &Session) -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::POST,
            path: format!("/_dendrite/admin/resetPassword/{}", target.user_id),
            body: Some(json!({"password": "newpassword1"})),
        },
        Endpoint {
            method: Method::GET,
            path: format!("/_synapse/admin/v1/whois/{}", target.user_id),
            body: None,
        },
        Endpoint {
            method: Method::GET,
            path: "/_synapse/admin/v1/registration_tokens".into(),
            body: None,
        },
    ]
}

#[tokio::test]
async fn admin_endpoints_missing_token() {
    let server = TestServer::start().await;
    let target = server.user("target").await;
    for e in endpoints(&target) {
        assert_error_for(
            &e.name(),
            &call(&server, &e, None).await,
            401,
            "M_MISSING_TOKEN",
        );
    }
}

#[tokio::test]
async fn admin_endpoints_unknown_token() {
    let server = TestServer::start().await;
    let target = server.user("target").await;
    for e in endpoints(&target) {
        assert_error_for(
            &e.name(),
            &call(&server, &e, Some("syt_not_a_real_token")).await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
}

#[tokio::test]
async fn admin_endpoints_forbidden_for_normal_user() {
    let server = TestServer::start().await;
    let target = server.user("target").await;
    let user = server.user("normal").await;
    for e in endpoints(&target) {
        assert_error_for(
            &e.name(),
            &call(&server, &e, user.token()).await,
            403,
            "M_FORBIDDEN",
        );
    }
    // The reset did not happen.
    server.login("target", "password123").await;
}

#[tokio::test]
async fn admin_endpoints_ok_for_admin() {
    let server = TestServer::start().await;
    let target = server.user("target").await;
    let admin = server.admin("root").await;
    let eps = endpoints(&target);

    let (st, body) = call(&server, &eps[0], admin.token()).await;
    assert_eq!(st, StatusCode::OK, "resetPassword: {body}");
    assert_eq!(body, json!({"password_updated": true}));

    let (st, body) = call(&server, &eps[1], admin.token()).await;
    assert_eq!(st, StatusCode::OK, "whois: {body}");
    assert_eq!(body["user_id"], "@target:test.local");
    assert!(body["devices"].is_object(), "{body}");

    let (st, body) = call(&server, &eps[2], admin.token()).await;
    assert_eq!(st, StatusCode::OK, "registration_tokens: {body}");
    assert_eq!(body["registration_tokens"], json!([]), "{body}");
}

#[tokio::test]
async fn admin_token_in_query_parameter() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let path = format!(
        "/_synapse/admin/v1/registration_tokens?access_token={}",
        admin.access_token
    );
    let (st, body) = server.get(&path, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["registration_tokens"].is_array());
}

#[tokio::test]
async fn guest_on_admin_endpoint_is_guest_access_forbidden() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let guest = server.guest().await;
    let token = guest.access_token.as_str();
    assert_error(
        &server
            .get("/_synapse/admin/v1/registration_tokens", Some(token))
            .await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
}

#[tokio::test]
async fn promotion_and_demotion_take_effect_on_the_next_request() {
    let server = TestServer::start().await;
    let target = server.user("target").await;
    let user = server.user("climber").await;
    let eps = endpoints(&target);
    let list = &eps[2];

    assert_error(&call(&server, list, user.token()).await, 403, "M_FORBIDDEN");

    server
        .sql("UPDATE accounts SET account_type = 3 WHERE user_id = '@climber:test.local'")
        .await;
    let (st, body) = call(&server, list, user.token()).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "promotion not seen on the very next request: {body}"
    );
    let (st, body) = call(&server, &eps[1], user.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");

    server
        .sql("UPDATE accounts SET account_type = 1 WHERE user_id = '@climber:test.local'")
        .await;
    assert_error(&call(&server, list, user.token()).await, 403, "M_FORBIDDEN");
    assert_error(
        &call(&server, &eps[0], user.token()).await,
        403,
        "M_FORBIDDEN",
    );
    // Still a working normal session.
    let (st, _) = server
        .get("/_matrix/client/v3/account/whoami", user.token())
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn demoting_a_registered_admin() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let (st, _) = server
        .get("/_synapse/admin/v1/registration_tokens", admin.token())
        .await;
    assert_eq!(st, StatusCode::OK);
    server
        .sql("UPDATE accounts SET account_type = 1 WHERE user_id = '@root:test.local'")
        .await;
    assert_error(
        &server
            .get("/_synapse/admin/v1/registration_tokens", admin.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn deactivated_admin_token_rejected() {
    // Deactivation through the API kills every token (contract).
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    deactivate(&server, &admin, "root").await;
    assert_error(
        &server
            .get("/_synapse/admin/v1/registration_tokens", admin.token())
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn admin_deactivated_behind_the_servers_back_is_rejected() {
    // An operator flips is_deactivated in the DB; the still-existing token must
    // stop working at once. Contract: 401; errcode M_UNKNOWN_TOKEN or
    // M_USER_DEACTIVATED (not fixed by the contract).
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    server
        .sql("UPDATE accounts SET is_deactivated = 1 WHERE user_id = '@root:test.local'")
        .await;
    let (st, body) = server
        .get("/_synapse/admin/v1/registration_tokens", admin.token())
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    let code = body["errcode"].as_str().unwrap_or_default();
    assert!(
        code == "M_UNKNOWN_TOKEN" || code == "M_USER_DEACTIVATED",
        "{body}"
    );
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn admin_errors_are_matrix_json_with_cors() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/_synapse/admin/v1/registration_tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("*".to_owned())
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    assert!(body["error"].is_string());

    // Unknown admin path: 404 M_UNRECOGNIZED; wrong method: 405 M_UNRECOGNIZED.
    assert_error(
        &server
            .get("/_synapse/admin/v1/no_such_endpoint", None)
            .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &server
            .request(
                Method::DELETE,
                "/_synapse/admin/v1/server_version",
                None,
                None,
            )
            .await,
        405,
        "M_UNRECOGNIZED",
    );
}
