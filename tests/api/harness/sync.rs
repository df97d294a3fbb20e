//! `/sync` helpers: one request, tokens, and the parts of a sync body.

use std::time::Instant;

use reqwest::StatusCode;
use serde_json::Value;

use super::{Session, TestServer, enc};

/// GET /sync with a raw query string (already encoded); asserts 200.
pub async fn sync(server: &TestServer, who: &Session, query: &str) -> Value {
    let (st, b) = server
        .get(&format!("/_matrix/client/v3/sync?{query}"), who.token())
        .await;
    assert_eq!(st, StatusCode::OK, "sync ?{query}: {b}");
    b
}

/// A sync token for "now" (an initial sync's next_batch).
pub async fn sync_token(server: &TestServer, who: &Session) -> String {
    let b = sync(server, who, "timeout=0").await;
    b["next_batch"].as_str().expect("next_batch").to_owned()
}

/// rooms.join[room] of a sync body, asserting it is there.
pub fn joined_room<'a>(body: &'a Value, room: &str) -> &'a Value {
    body["rooms"]["join"]
        .get(room)
        .unwrap_or_else(|| panic!("{room} not in rooms.join: {body}"))
}

pub fn next_batch(body: &Value) -> String {
    body["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("next_batch: {body}"))
        .to_owned()
}

/// An incremental sync that returns at once.
pub async fn sync_since(server: &TestServer, who: &Session, since: &str) -> Value {
    sync(server, who, &format!("since={}&timeout=0", enc(since))).await
}

/// The event of type `ty` in a list of `{type, content}` events.
pub fn event_of_type<'a>(events: &'a Value, ty: &str) -> Option<&'a Value> {
    events
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {events}"))
        .iter()
        .find(|e| e["type"] == ty)
}

/// Starts a long-polling `/sync` since `since` in the background; the task
/// answers (status, body, the instant the answer came).
pub fn spawn_poll(
    server: &TestServer,
    who: &Session,
    since: &str,
    timeout_ms: u64,
) -> tokio::task::JoinHandle<(StatusCode, Value, Instant)> {
    let client = server.client.clone();
    let url = server.url(&format!(
        "/_matrix/client/v3/sync?since={}&timeout={timeout_ms}",
        enc(since)
    ));
    let token = who.access_token.clone();
    tokio::spawn(async move {
        let resp = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("sync sent");
        let status = resp.status();
        let body: Value = resp.json().await.expect("sync JSON");
        (status, body, Instant::now())
    })
}

/// The `filter=` query parameter carrying an inline JSON filter.
pub fn filter_param(filter: &serde_json::Value) -> String {
    format!("filter={}", enc(&filter.to_string()))
}

/// PUT /user/{me}/account_data/{type}; asserts 200.
pub async fn put_account_data(
    server: &TestServer,
    who: &Session,
    ty: &str,
    content: serde_json::Value,
) {
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/{}",
        enc(&who.user_id),
        enc(ty)
    );
    let (st, b) = server.put(&path, who.token(), content).await;
    assert_eq!(st, StatusCode::OK, "account data {ty}: {b}");
}

/// The senders of the sync's `m.presence` events, with their state.
pub fn presences(body: &Value) -> Vec<(String, String)> {
    body["presence"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    assert_eq!(e["type"], "m.presence", "{e}");
                    (
                        e["sender"].as_str().unwrap().to_owned(),
                        e["content"]["presence"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
