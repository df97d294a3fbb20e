//! Whois: GET /_matrix/client/{v3,r0}/admin/whois/{userId} (self or admin)
//! and GET /_synapse/admin/v1/whois/{userId} (admin only).

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::*;

const CLIENT_PREFIXES: [&str; 2] = [
    "/_matrix/client/v3/admin/whois",
    "/_matrix/client/r0/admin/whois",
];
const SYNAPSE: &str = "/_synapse/admin/v1/whois";
const ALL_PREFIXES: [&str; 3] = [
    "/_matrix/client/v3/admin/whois",
    "/_matrix/client/r0/admin/whois",
    SYNAPSE,
];

/// The single connection recorded for `device_id` in a whois body.
#[track_caller]
fn connection<'a>(body: &'a Value, device_id: &str) -> &'a Value {
    let sessions = body["devices"][device_id]["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions for {device_id}: {body}"));
    assert!(!sessions.is_empty(), "{body}");
    let conns = sessions[0]["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("no connections: {body}"));
    assert!(!conns.is_empty(), "{body}");
    &conns[0]
}

fn device_keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body["devices"]
        .as_object()
        .unwrap_or_else(|| panic!("devices is not an object: {body}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn self_whois_on_client_paths() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for prefix in CLIENT_PREFIXES {
        let (st, body) = server
            .get(&format!("{prefix}/{}", alice.user_id), alice.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{prefix}: {body}");
        assert_eq!(body["user_id"], "@alice:test.local");
        assert_eq!(device_keys(&body), vec![alice.device_id.clone()], "{body}");
    }
}

#[tokio::test]
async fn connections_carry_ip_user_agent_and_recent_last_seen() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let before = now_ms();
    let ua = "WhoisTestClient/3.14 (Linux)";
    let (st, _) = get_with_ua(
        &server,
        "/_matrix/client/v3/account/whoami",
        &alice.access_token,
        ua,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = get_with_ua(
        &server,
        &format!("/_matrix/client/v3/admin/whois/{}", alice.user_id),
        &alice.access_token,
        ua,
    )
    .await;
    let after = now_ms();
    assert_eq!(st, StatusCode::OK, "{body}");
    let conn = connection(&body, &alice.device_id);
    assert_eq!(conn["ip"], "127.0.0.1", "{body}");
    assert_eq!(conn["user_agent"], ua, "{body}");
    let seen = conn["last_seen"]
        .as_i64()
        .unwrap_or_else(|| panic!("last_seen is not an integer: {body}"));
    assert!(
        seen >= before - 1000 && seen <= after + 1000,
        "last_seen {seen} not in [{before}, {after}]"
    );
}

#[tokio::test]
async fn admin_whois_of_another_user_on_every_path() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let bob = server.user("bob").await;
    let bob2 = server.login("bob", "password123").await;
    let ua = "BobAgent/1.0";
    get_with_ua(
        &server,
        "/_matrix/client/v3/account/whoami",
        &bob2.access_token,
        ua,
    )
    .await;

    let mut expected = vec![bob.device_id.clone(), bob2.device_id.clone()];
    expected.sort();
    for prefix in ALL_PREFIXES {
        let (st, body) = server
            .get(&format!("{prefix}/{}", bob.user_id), admin.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{prefix}: {body}");
        assert_eq!(body["user_id"], "@bob:test.local", "{prefix}");
        assert_eq!(device_keys(&body), expected, "{prefix}: {body}");
        // Bob's second device was seen with bob's UA, not the admin's request.
        let conn = connection(&body, &bob2.device_id);
        assert_eq!(conn["user_agent"], ua, "{prefix}: {body}");
        assert_eq!(conn["ip"], "127.0.0.1", "{prefix}: {body}");
    }
}

#[tokio::test]
async fn non_admin_whois_of_another_is_forbidden() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    for prefix in ALL_PREFIXES {
        assert_error(
            &server
                .get(&format!("{prefix}/{}", bob.user_id), alice.token())
                .await,
            403,
            "M_FORBIDDEN",
        );
    }
}

#[tokio::test]
async fn synapse_whois_is_admin_only_even_for_self() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    assert_error(
        &server
            .get(&format!("{SYNAPSE}/{}", alice.user_id), alice.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
    let admin = server.admin("root").await;
    let (st, body) = server
        .get(&format!("{SYNAPSE}/{}", admin.user_id), admin.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@root:test.local");
}

#[tokio::test]
async fn whois_requires_token() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for prefix in ALL_PREFIXES {
        let p = format!("{prefix}/{}", alice.user_id);
        assert_error(&server.get(&p, None).await, 401, "M_MISSING_TOKEN");
        assert_error(
            &server.get(&p, Some("garbage")).await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
}

#[tokio::test]
async fn unknown_local_user_is_not_found() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    for prefix in ALL_PREFIXES {
        assert_error(
            &server
                .get(&format!("{prefix}/@nobody:test.local"), admin.token())
                .await,
            404,
            "M_NOT_FOUND",
        );
    }
}

#[tokio::test]
async fn remote_or_malformed_user_is_invalid_param() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    for prefix in ALL_PREFIXES {
        for id in ["@bob:remote.example", "notauserid", "!room:test.local"] {
            let resp = server.get(&format!("{prefix}/{id}"), admin.token()).await;
            assert_eq!(resp.0.as_u16(), 400, "{prefix}/{id}: {}", resp.1);
            assert_error(&resp, 400, "M_INVALID_PARAM");
        }
    }
}

#[tokio::test]
async fn logged_out_device_disappears_from_whois() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let extra = server.login("alice", "password123").await;
    let p = format!("/_matrix/client/v3/admin/whois/{}", alice.user_id);
    let (_, body) = server.get(&p, alice.token()).await;
    assert!(device_keys(&body).contains(&extra.device_id), "{body}");
    let (st, _) = server
        .post(
            "/_matrix/client/v3/logout",
            extra.token(),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = server.get(&p, alice.token()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(device_keys(&body), vec![alice.device_id.clone()], "{body}");
}

#[tokio::test]
async fn promoted_user_may_whois_others() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let p = format!("/_matrix/client/v3/admin/whois/{}", bob.user_id);
    assert_error(&server.get(&p, alice.token()).await, 403, "M_FORBIDDEN");
    server
        .sql("UPDATE accounts SET account_type = 3 WHERE user_id = '@alice:test.local'")
        .await;
    let (st, body) = server.get(&p, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@bob:test.local");
}
