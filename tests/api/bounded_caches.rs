//! Bounded in-memory state (`caches` in the config): the unauthenticated
//! nonce endpoint is rate-limited per IP and keeps a bounded number of
//! nonces, UIA sessions are bounded, and rooms, sync and unread counts stay
//! right when every room cache holds a single entry.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";
const NONCE: &str = "/_synapse/admin/v1/register";
const REGISTER: &str = "/_matrix/client/v3/register";

async fn register_with_nonce(s: &TestServer, nonce: &str, user: &str) -> (StatusCode, Value) {
    let mac = shared_secret_mac(SHARED_SECRET, nonce, user, "password123", false, None);
    s.post(
        NONCE,
        None,
        json!({"nonce": nonce, "username": user, "password": "password123", "mac": mac}),
    )
    .await
}

#[tokio::test]
async fn nonce_endpoint_is_rate_limited_per_ip() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login_per_second = 0.01;
        c.rate_limits.login_burst = 3;
    })
    .await;
    let first = s.nonce().await;
    s.nonce().await;
    s.nonce().await;
    let limited = s.get(NONCE, None).await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    let ms = limited.1["retry_after_ms"].as_u64().unwrap_or(0);
    assert!(ms > 0 && ms <= 101_000, "retry_after_ms: {}", limited.1);
    // The nonces handed out still register, and the login bucket is its own.
    let (st, body) = register_with_nonce(&s, &first, "alice").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    s.login("alice", "password123").await;
}

#[tokio::test]
async fn outstanding_nonces_are_bounded_oldest_first() {
    let s = TestServer::start_with(|c| c.caches.registration_nonces = 2).await;
    let n1 = s.nonce().await;
    let n2 = s.nonce().await;
    let n3 = s.nonce().await;
    assert_error(
        &register_with_nonce(&s, &n1, "alice").await,
        400,
        "M_UNKNOWN",
    );
    for (n, user) in [(&n3, "bob"), (&n2, "carol")] {
        let (st, body) = register_with_nonce(&s, n, user).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    // Single use, as before.
    assert_error(
        &register_with_nonce(&s, &n2, "dave").await,
        400,
        "M_UNKNOWN",
    );
}

/// A registration session opened for `user` (a session is bound to its
/// request's parameters).
async fn uia_session(s: &TestServer, user: &str) -> String {
    let (st, body) = s
        .post(
            REGISTER,
            None,
            json!({"username": user, "password": "password123"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    body["session"].as_str().unwrap().to_owned()
}

async fn register_in_session(s: &TestServer, session: &str, user: &str) -> (StatusCode, Value) {
    s.post(
        REGISTER,
        None,
        json!({"username": user, "password": "password123", "auth": {"type": "m.login.dummy", "session": session}}),
    )
    .await
}

#[tokio::test]
async fn uia_sessions_are_bounded_oldest_first() {
    let s = TestServer::start_with(|c| c.caches.uia_sessions = 2).await;
    let s1 = uia_session(&s, "alice").await;
    let s2 = uia_session(&s, "carol").await;
    let s3 = uia_session(&s, "bob").await;
    assert_error(
        &register_in_session(&s, &s1, "alice").await,
        400,
        "M_UNKNOWN",
    );
    for (session, user) in [(&s3, "bob"), (&s2, "carol")] {
        let (st, body) = register_in_session(&s, session, user).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    // Two more sessions push the completed ones out.
    uia_session(&s, "erin").await;
    uia_session(&s, "frank").await;
    assert_error(
        &register_in_session(&s, &s2, "carol").await,
        400,
        "M_UNKNOWN",
    );
}

fn one_of_each(c: &mut myelin::config::Config) {
    c.caches.room_heads = 1;
    c.caches.rooms = 1;
    c.caches.unread_counts = 1;
}

#[tokio::test]
async fn rooms_stay_right_with_one_entry_caches() {
    let s = TestServer::start_with(one_of_each).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let rooms = [
        create_room(&s, &alice, json!({"preset": "public_chat"})).await,
        create_room(&s, &alice, json!({"preset": "public_chat"})).await,
        create_room(&s, &alice, json!({"preset": "public_chat"})).await,
    ];
    for room in &rooms {
        let (st, body) = s
            .post(&format!("{V3}/join/{}", enc(room)), bob.token(), json!({}))
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let (st, body) = s.get(&format!("{V3}/sync?timeout=0"), bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let since = body["next_batch"].as_str().unwrap().to_owned();

    // Sends to every room at once: heads are evicted and reloaded while
    // other rooms' events are queued.
    let mut set = JoinSet::new();
    for i in 0..24 {
        let room = rooms[i % rooms.len()].clone();
        let url = s.url(&format!(
            "{V3}/rooms/{}/send/m.room.message/t{i}",
            enc(&room)
        ));
        let req = s
            .client
            .put(url)
            .bearer_auth(&alice.access_token)
            .json(&json!({"msgtype": "m.text", "body": format!("m{i}")}));
        set.spawn(async move { req.send().await.expect("sent").status() });
    }
    for st in set.join_all().await {
        assert_eq!(st, StatusCode::OK);
    }
    let (st, body) = s
        .put(
            &format!("{V3}/rooms/{}/state/m.room.topic", enc(&rooms[0])),
            alice.token(),
            json!({"topic": "still here"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    for room in &rooms {
        assert_one_chain(&s, room).await;
    }
    let (st, body) = s
        .get(
            &format!("{V3}/rooms/{}/state/m.room.topic", enc(&rooms[0])),
            bob.token(),
        )
        .await;
    assert_eq!((st, &body["topic"]), (StatusCode::OK, &json!("still here")));

    // Bob's incremental sync sees every room's new messages and counts them.
    let (st, body) = s
        .get(&format!("{V3}/sync?timeout=0&since={since}"), bob.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    for room in &rooms {
        let joined = &body["rooms"]["join"][room];
        let messages = joined["timeline"]["events"]
            .as_array()
            .unwrap_or_else(|| panic!("timeline of {room}: {body}"))
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .count();
        assert_eq!(messages, 8, "{room}: {body}");
        assert_eq!(
            joined["unread_notifications"]["notification_count"], 8,
            "{room}: {body}"
        );
    }
    // Counted again (the cache holds one pair), the same.
    let (st, again) = s
        .get(&format!("{V3}/sync?timeout=0&since={since}"), bob.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{again}");
    for room in &rooms {
        assert_eq!(
            again["rooms"]["join"][room]["unread_notifications"]["notification_count"], 8,
            "{again}"
        );
    }
}
