//! Rate limiting: 429 M_LIMIT_EXCEEDED per (user, device), admins exempt,
//! login attempts per IP.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const LOGIN: &str = "/_matrix/client/v3/login";

/// Tiny per-device budget (burst 3, one more every 10 s); the login limiter is
/// made generous so that setting up users and sessions is never limited.
fn tiny_limits(c: &mut myelin::config::Config) {
    c.rate_limits.enabled = true;
    c.rate_limits.per_second = 0.1;
    c.rate_limits.burst = 3;
    c.rate_limits.login_per_second = 100.0;
    c.rate_limits.login_burst = 1000;
}

#[track_caller]
fn assert_limited(resp: &(StatusCode, Value), per_second: f64) {
    assert_error(resp, 429, "M_LIMIT_EXCEEDED");
    let ms = resp.1["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("integer retry_after_ms: {}", resp.1));
    assert!(ms > 0, "retry_after_ms must be positive: {}", resp.1);
    // At most the time for one token to come back (plus rounding slack).
    let max = (1000.0 / per_second) as u64 + 1000;
    assert!(ms <= max, "retry_after_ms {ms} > {max}: {}", resp.1);
}

/// Sends `n` whoami requests and asserts each is 200.
async fn ok_requests(s: &TestServer, sess: &Session, n: usize) {
    for i in 0..n {
        let (st, body) = s.get(WHOAMI, sess.token()).await;
        assert_eq!(
            st,
            StatusCode::OK,
            "request {} of {n} for {}: {body}",
            i + 1,
            sess.device_id
        );
    }
}

#[tokio::test]
async fn fourth_rapid_request_is_limited() {
    let s = TestServer::start_with(tiny_limits).await;
    let alice = s.user("alice").await;
    ok_requests(&s, &alice, 3).await;
    let r = s.get(WHOAMI, alice.token()).await;
    assert_limited(&r, 0.1);
    // Still limited on the next attempt, on any authenticated client endpoint.
    let r = s
        .get("/_matrix/client/v3/capabilities", alice.token())
        .await;
    assert_limited(&r, 0.1);
}

#[tokio::test]
async fn limit_counts_across_endpoints() {
    let s = TestServer::start_with(tiny_limits).await;
    let alice = s.user("alice").await;
    let (st, b) = s.get(WHOAMI, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = s
        .get("/_matrix/client/v3/capabilities", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = s.get("/_matrix/client/v3/devices", alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let r = s.get(WHOAMI, alice.token()).await;
    assert_limited(&r, 0.1);
}

/// The legacy media endpoints (`/_matrix/media/...`) draw on the same budget.
#[tokio::test]
async fn media_requests_count_too() {
    let s = TestServer::start_with(tiny_limits).await;
    let alice = s.user("alice").await;
    ok_requests(&s, &alice, 1).await;
    let (st, b) = try_upload(&s, &alice, b"picture", Some("image/png"), None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = s.get("/_matrix/media/v3/config", alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let r = s
        .post("/_matrix/media/v1/create", alice.token(), json!({}))
        .await;
    assert_limited(&r, 0.1);
    let r = try_upload(&s, &alice, b"picture", Some("image/png"), None).await;
    assert_limited(&r, 0.1);
}

#[tokio::test]
async fn other_users_are_not_affected() {
    let s = TestServer::start_with(tiny_limits).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    ok_requests(&s, &alice, 3).await;
    assert_limited(&s.get(WHOAMI, alice.token()).await, 0.1);
    ok_requests(&s, &bob, 3).await;
    assert_limited(&s.get(WHOAMI, bob.token()).await, 0.1);
}

#[tokio::test]
async fn admin_is_never_limited() {
    let s = TestServer::start_with(tiny_limits).await;
    let root = s.admin("root").await;
    ok_requests(&s, &root, 20).await;
    for _ in 0..5 {
        let (st, body) = s.get("/_matrix/client/v3/capabilities", root.token()).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn promoted_admin_is_exempt_at_once() {
    // The contract reads the admin flag from the DB on every request.
    let s = TestServer::start_with(tiny_limits).await;
    let alice = s.user("alice").await;
    ok_requests(&s, &alice, 3).await;
    assert_limited(&s.get(WHOAMI, alice.token()).await, 0.1);
    s.sql("UPDATE accounts SET account_type = 3 WHERE user_id = '@alice:test.local'")
        .await;
    ok_requests(&s, &alice, 10).await;
}

#[tokio::test]
async fn devices_of_one_user_have_separate_buckets() {
    let s = TestServer::start_with(tiny_limits).await;
    let a = s.user("alice").await;
    let b = s.login("alice", "password123").await;
    assert_ne!(a.device_id, b.device_id);
    ok_requests(&s, &a, 3).await;
    assert_limited(&s.get(WHOAMI, a.token()).await, 0.1);
    // The second device still has its whole burst.
    ok_requests(&s, &b, 3).await;
    assert_limited(&s.get(WHOAMI, b.token()).await, 0.1);
    // And the first is still limited.
    assert_limited(&s.get(WHOAMI, a.token()).await, 0.1);
}

#[tokio::test]
async fn disabled_rate_limits_limit_nothing() {
    let s = TestServer::start_with(|c| {
        tiny_limits(c);
        c.rate_limits.enabled = false;
        c.rate_limits.login_per_second = 0.1;
        c.rate_limits.login_burst = 3;
    })
    .await;
    let alice = s.user("alice").await;
    ok_requests(&s, &alice, 20).await;
    // Login attempts are not limited either.
    for _ in 0..10 {
        let r = s
            .post(
                LOGIN,
                None,
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrongpassword"}),
            )
            .await;
        assert_error(&r, 403, "M_FORBIDDEN");
    }
    s.login("alice", "password123").await;
}

#[tokio::test]
async fn unauthenticated_requests_are_not_per_user_limited() {
    // Contract: only authenticated /_matrix/client requests count per (user, device).
    let s = TestServer::start_with(tiny_limits).await;
    for i in 0..10 {
        let (st, body) = s.get("/_matrix/client/versions", None).await;
        assert_eq!(st, StatusCode::OK, "versions #{i}: {body}");
    }
}

#[tokio::test]
async fn login_attempts_limited_per_ip() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.per_second = 100.0;
        c.rate_limits.burst = 1000;
        c.rate_limits.login_per_second = 0.1;
        c.rate_limits.login_burst = 3;
    })
    .await;
    // Failed attempts for different (unknown) users from one IP share a bucket.
    for name in ["nobody1", "nobody2", "nobody3"] {
        let r = s
            .post(
                LOGIN,
                None,
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "password123"}),
            )
            .await;
        assert_error(&r, 403, "M_FORBIDDEN");
    }
    let r = s
        .post(
            LOGIN,
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody4"}, "password": "password123"}),
        )
        .await;
    assert_limited(&r, 0.1);
}

#[tokio::test]
async fn successful_logins_are_limited_too() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.per_second = 100.0;
        c.rate_limits.burst = 1000;
        c.rate_limits.login_per_second = 0.1;
        c.rate_limits.login_burst = 3;
    })
    .await;
    // Creating the user (shared-secret registration) may or may not use up a
    // login/register token (contract silent), so only the pattern is checked:
    // at most 3 successes, then 429 for good.
    s.user("alice").await;
    let mut ok = 0;
    let mut limited = None;
    for i in 0..6 {
        let r = s
            .post(
                LOGIN,
                None,
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "password123"}),
            )
            .await;
        if r.0 == StatusCode::OK {
            assert!(
                limited.is_none(),
                "login #{i} succeeded after being limited: {}",
                r.1
            );
            ok += 1;
        } else {
            assert_limited(&r, 0.1);
            limited.get_or_insert(i);
        }
    }
    assert!(ok <= 3, "{ok} logins succeeded with login_burst 3");
    assert!(limited.is_some(), "never limited");
}

/// New media (`POST /upload`, `POST /create`) has its own budget per user,
/// shared by all the user's devices; admins have none; nothing of a
/// refused upload is stored.
#[tokio::test]
async fn media_uploads_are_limited_per_user() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        // The per-device limit stays out of the way.
        c.rate_limits.per_second = 100.0;
        c.rate_limits.burst = 1000;
        c.rate_limits.login_per_second = 100.0;
        c.rate_limits.login_burst = 1000;
        c.rate_limits.media_per_second = 0.1;
        c.rate_limits.media_burst = 2;
    })
    .await;
    let alice = s.user("alice").await;
    let alice_again = s.login("alice", "password123").await;
    let root = s.admin("root").await;
    upload(&s, &alice, b"one", None, None).await;
    let (st, body) = s
        .post("/_matrix/media/v1/create", alice_again.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let bodies = stored_bodies(&s).len();
    // The third from either device is refused.
    for who in [&alice, &alice_again] {
        let r = try_upload(&s, who, b"three", None, None).await;
        assert_limited(&r, 0.1);
    }
    let r = s
        .post("/_matrix/media/v1/create", alice.token(), json!({}))
        .await;
    assert_limited(&r, 0.1);
    assert_eq!(stored_bodies(&s).len(), bodies);
    // Other requests of the user are not limited by it.
    ok_requests(&s, &alice, 1).await;
    // Another user has their own budget; admins have none.
    let bob = s.user("bob").await;
    upload(&s, &bob, b"bob's", None, None).await;
    for i in 0..5u8 {
        upload(&s, &root, &[i], None, None).await;
    }
}
