//! GET /pushrules/ and filters (POST/GET /user/{userId}/filter).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// Checks a server-default ruleset. The spec (v1.7+) replaced
/// `.m.rule.contains_display_name` by `.m.rule.is_user_mention`, and later
/// versions dropped the legacy rule; either is accepted.
#[track_caller]
fn assert_default_ruleset(ruleset: &Value) {
    for kind in KINDS {
        assert!(ruleset[kind].is_array(), "{kind} missing: {ruleset}");
    }
    let overrides = rule_ids(ruleset, "override");
    assert_eq!(
        overrides.first().map(String::as_str),
        Some(".m.rule.master"),
        "{overrides:?}"
    );
    assert!(
        overrides
            .iter()
            .any(|id| id == ".m.rule.is_user_mention" || id == ".m.rule.contains_display_name"),
        "no mention rule in {overrides:?}"
    );
    for id in [
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
    ] {
        assert!(
            overrides.iter().any(|o| o == id),
            "{id} missing in {overrides:?}"
        );
    }
    let underride = rule_ids(ruleset, "underride");
    for id in [".m.rule.call", ".m.rule.room_one_to_one", ".m.rule.message"] {
        assert!(
            underride.iter().any(|o| o == id),
            "{id} missing in {underride:?}"
        );
    }
    // The master rule is a server default and disabled by default.
    let master = &ruleset["override"][0];
    assert_eq!(master["default"], true, "{master}");
    assert_eq!(master["enabled"], false, "{master}");
    assert!(master["actions"].is_array(), "{master}");
    // Every rule is marked default and has actions.
    for kind in KINDS {
        for rule in ruleset[kind].as_array().unwrap() {
            assert_eq!(rule["default"], true, "{rule}");
            assert!(rule["enabled"].is_boolean(), "{rule}");
            assert!(rule["actions"].is_array(), "{rule}");
        }
    }
}

#[tokio::test]
async fn pushrules_returns_server_default_ruleset() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let (st, body) = server
        .get("/_matrix/client/v3/pushrules/", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_default_ruleset(&body["global"]);

    // The mention rule is about this user: invite_for_me matches alice's id.
    let invite = body["global"]["override"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule_id"] == ".m.rule.invite_for_me")
        .cloned()
        .unwrap();
    assert!(invite.to_string().contains("@alice:test.local"), "{invite}");

    let (st, global) = server
        .get("/_matrix/client/v3/pushrules/global/", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{global}");
    assert_default_ruleset(&global);
    assert_eq!(global, body["global"]);

    let (st, r0) = server
        .get("/_matrix/client/r0/pushrules/", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(r0, body);
}

#[tokio::test]
async fn pushrules_requires_token() {
    let server = TestServer::start().await;
    assert_error(
        &server.get("/_matrix/client/v3/pushrules/", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .get("/_matrix/client/v3/pushrules/", Some("nope"))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn filter_create_and_get_roundtrip() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let filter = json!({
        "event_fields": ["type", "content.body"],
        "event_format": "client",
        "presence": {"not_types": ["*"]},
        "room": {
            "rooms": ["!abc:test.local"],
            "timeline": {"limit": 10, "types": ["m.room.message"]},
            "state": {"lazy_load_members": true}
        }
    });
    let path = format!("/_matrix/client/v3/user/{}/filter", alice.user_id);
    let (st, body) = server.post(&path, alice.token(), filter.clone()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["filter_id"]
        .as_str()
        .unwrap_or_else(|| panic!("filter_id is not a string: {body}"))
        .to_owned();
    assert!(!id.is_empty());
    assert!(
        !id.starts_with('{'),
        "spec: filter ids must not start with {{"
    );

    let (st, got) = server.get(&format!("{path}/{id}"), alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{got}");
    assert_eq!(
        got["event_fields"],
        json!(["type", "content.body"]),
        "{got}"
    );
    assert_eq!(got["presence"]["not_types"], json!(["*"]), "{got}");
    assert_eq!(got["room"]["rooms"], json!(["!abc:test.local"]), "{got}");
    assert_eq!(got["room"]["timeline"]["limit"], 10, "{got}");
    assert_eq!(
        got["room"]["timeline"]["types"],
        json!(["m.room.message"]),
        "{got}"
    );
    assert_eq!(got["room"]["state"]["lazy_load_members"], true, "{got}");

    // A second, different filter gets a different id and keeps its own content.
    let (st, body2) = server
        .post(
            &path,
            alice.token(),
            json!({"room": {"timeline": {"limit": 3}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body2}");
    let id2 = body2["filter_id"].as_str().unwrap().to_owned();
    assert_ne!(id, id2);
    let (_, got2) = server.get(&format!("{path}/{id2}"), alice.token()).await;
    assert_eq!(got2["room"]["timeline"]["limit"], 3, "{got2}");
    let (_, got1) = server.get(&format!("{path}/{id}"), alice.token()).await;
    assert_eq!(got1["room"]["timeline"]["limit"], 10, "{got1}");

    // r0 alias reads the same filter.
    let r0 = format!("/_matrix/client/r0/user/{}/filter/{id}", alice.user_id);
    let (st, got_r0) = server.get(&r0, alice.token()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got_r0["room"]["timeline"]["limit"], 10);
}

#[tokio::test]
async fn empty_filter_is_accepted() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/user/{}/filter", alice.user_id);
    let (st, body) = server.post(&path, alice.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["filter_id"].as_str().unwrap();
    let (st, got) = server.get(&format!("{path}/{id}"), alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{got}");
    assert!(got.is_object(), "{got}");
}

#[tokio::test]
async fn filter_of_another_user_is_forbidden() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let bob_path = format!("/_matrix/client/v3/user/{}/filter", bob.user_id);

    // Creating a filter for someone else.
    assert_error(
        &server
            .post(
                &bob_path,
                alice.token(),
                json!({"room": {"timeline": {"limit": 1}}}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );

    // Reading someone else's filter through their path.
    let (st, body) = server
        .post(
            &bob_path,
            bob.token(),
            json!({"room": {"timeline": {"limit": 1}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["filter_id"].as_str().unwrap().to_owned();
    assert_error(
        &server.get(&format!("{bob_path}/{id}"), alice.token()).await,
        403,
        "M_FORBIDDEN",
    );
    // Bob can still read it.
    let (st, _) = server.get(&format!("{bob_path}/{id}"), bob.token()).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn filters_are_scoped_per_user() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let alice_path = format!("/_matrix/client/v3/user/{}/filter", alice.user_id);
    let (st, body) = server
        .post(
            &alice_path,
            alice.token(),
            json!({"room": {"timeline": {"limit": 7}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["filter_id"].as_str().unwrap().to_owned();
    // Bob has no filter with that id under his own path.
    let bob_path = format!("/_matrix/client/v3/user/{}/filter/{id}", bob.user_id);
    assert_error(
        &server.get(&bob_path, bob.token()).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn unknown_filter_is_not_found() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for id in ["999999", "nosuchfilter"] {
        let path = format!("/_matrix/client/v3/user/{}/filter/{id}", alice.user_id);
        assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn invalid_filter_body_is_bad_json() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/user/{}/filter", alice.user_id);
    for bad in [
        json!({"room": {"timeline": {"limit": "ten"}}}),
        json!({"event_fields": "type"}),
        json!({"room": "not an object"}),
        json!({"presence": {"types": [1, 2]}}),
        json!([1, 2, 3]),
    ] {
        let resp = server.post(&path, alice.token(), bad.clone()).await;
        assert_eq!(resp.0.as_u16(), 400, "filter {bad} accepted: {}", resp.1);
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    assert_error(
        &server
            .request_raw(Method::POST, &path, alice.token(), "{\"room\":")
            .await,
        400,
        "M_NOT_JSON",
    );
}

#[tokio::test]
async fn filters_require_token() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let path = format!("/_matrix/client/v3/user/{}/filter", alice.user_id);
    assert_error(
        &server.post(&path, None, json!({})).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server.get(&format!("{path}/0"), None).await,
        401,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn guests_may_use_pushrules_and_filters() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let guest = server.guest().await;
    let token = guest.access_token.as_str();
    let user_id = guest.user_id.as_str();

    let (st, body) = server
        .get("/_matrix/client/v3/pushrules/", Some(token))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_default_ruleset(&body["global"]);

    let path = format!("/_matrix/client/v3/user/{user_id}/filter");
    let (st, body) = server
        .post(
            &path,
            Some(token),
            json!({"room": {"timeline": {"limit": 5}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["filter_id"].as_str().unwrap();
    let (st, got) = server.get(&format!("{path}/{id}"), Some(token)).await;
    assert_eq!(st, StatusCode::OK, "{got}");
    assert_eq!(got["room"]["timeline"]["limit"], 5);
}
