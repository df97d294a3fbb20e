//! Presence through `/sync`: syncing marks the user online (`set_presence`),
//! the user sees their own presence, users who share a room see each other's
//! changes, and a newly shared room brings its members' presence.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

fn status_path(user: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(user))
}

async fn presence_of(server: &TestServer, who: &Session, user: &str) -> String {
    let (st, body) = server.get(&status_path(user), who.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["presence"].as_str().unwrap().to_owned()
}

async fn set_status(server: &TestServer, who: &Session, state: &str) {
    let (st, body) = server
        .put(
            &status_path(&who.user_id),
            who.token(),
            json!({"presence": state}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn syncing_marks_the_user_online_unless_told_otherwise() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    assert_eq!(presence_of(&server, &bob, &alice.user_id).await, "offline");
    // `offline` leaves the state as it is.
    sync(&server, &alice, "timeout=0&set_presence=offline").await;
    assert_eq!(presence_of(&server, &bob, &alice.user_id).await, "offline");
    let body = sync(&server, &alice, "timeout=0").await;
    assert_eq!(presence_of(&server, &bob, &alice.user_id).await, "online");
    assert!(
        presences(&body).contains(&(alice.user_id.clone(), "online".into())),
        "the user sees their own presence: {body}"
    );
    sync(&server, &alice, "timeout=0&set_presence=unavailable").await;
    assert_eq!(
        presence_of(&server, &bob, &alice.user_id).await,
        "unavailable"
    );
    let (st, body) = server
        .get(
            "/_matrix/client/v3/sync?timeout=0&set_presence=sleepy",
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_presence_change_reaches_members_of_shared_rooms_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let since = sync_token(&server, &alice).await;
    set_status(&server, &bob, "unavailable").await;
    set_status(&server, &carol, "unavailable").await;
    let body = sync_since(&server, &alice, &since).await;
    let seen = presences(&body);
    assert!(
        seen.contains(&(bob.user_id.clone(), "unavailable".into())),
        "{body}"
    );
    assert!(
        !seen.iter().any(|(u, _)| *u == carol.user_id),
        "carol shares no room: {body}"
    );
}

#[tokio::test]
async fn a_parked_sync_wakes_for_a_room_members_presence() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let since = sync_token(&server, &alice).await;
    let waiting = {
        let url = server.url(&format!(
            "/_matrix/client/v3/sync?since={}&timeout=20000&set_presence=offline",
            enc(&since)
        ));
        let token = alice.token().unwrap().to_owned();
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    server.wait_for_parked_syncs(1).await;
    set_status(&server, &bob, "unavailable").await;
    let body = waiting.await.unwrap();
    assert!(
        presences(&body).contains(&(bob.user_id.clone(), "unavailable".into())),
        "{body}"
    );
}

#[tokio::test]
async fn a_newly_shared_room_brings_its_members_presence() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    set_status(&server, &bob, "unavailable").await;
    set_status(&server, &carol, "unavailable").await;
    let bobs = create_room(&server, &bob, json!({"preset": "public_chat"})).await;
    let alices = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let since = sync_token(&server, &alice).await;
    // Alice joins bob's room: bob's presence (set before) comes with it.
    join(&server, &alice, &bobs).await;
    let body = sync_since(&server, &alice, &since).await;
    assert!(
        presences(&body).contains(&(bob.user_id.clone(), "unavailable".into())),
        "newly joined room: {body}"
    );
    // Carol joins alice's room: her presence comes with her join.
    let since = body["next_batch"].as_str().unwrap().to_owned();
    join(&server, &carol, &alices).await;
    let body = sync_since(&server, &alice, &since).await;
    assert!(
        presences(&body).contains(&(carol.user_id.clone(), "unavailable".into())),
        "newly joined member: {body}"
    );
}

#[tokio::test]
async fn a_filter_without_presence_reads_none() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let filter = enc(r#"{"presence":{"not_types":["*"]}}"#);
    let body = sync(&server, &alice, &format!("timeout=0&filter={filter}")).await;
    assert!(presences(&body).is_empty(), "{body}");
}

/// Waits (up to 10 s of the server's once-a-second timeout pass) until
/// `user`'s presence is `state`.
async fn wait_for_presence(server: &TestServer, who: &Session, user: &str, state: &str) {
    for _ in 0..100 {
        if presence_of(server, who, user).await == state {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{user} did not become {state}");
}

/// A client that stops syncing without setting itself offline does not
/// leave its user online: 30 s after the last sync (or `PUT` of the
/// status), as Synapse, the user goes offline, keeping the status message
/// and the time they were last active; a user who goes on syncing stays.
#[tokio::test]
async fn a_user_who_stops_syncing_goes_offline() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    sync(&server, &alice, "timeout=0").await;
    sync(&server, &bob, "timeout=0").await;
    set_status(&server, &carol, "unavailable").await;
    let (st, body) = server
        .put(
            &status_path(&alice.user_id),
            alice.token(),
            json!({"presence": "online", "status_msg": "lunch"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    server.advance(std::time::Duration::from_secs(20));
    sync(&server, &bob, "timeout=0").await;
    server.advance(std::time::Duration::from_secs(11));

    wait_for_presence(&server, &bob, &alice.user_id, "offline").await;
    wait_for_presence(&server, &bob, &carol.user_id, "offline").await;
    // The pass that took alice and carol offline saw bob, who synced 11 s ago.
    assert_eq!(presence_of(&server, &alice, &bob.user_id).await, "online");
    let (_, body) = server.get(&status_path(&alice.user_id), bob.token()).await;
    assert_eq!(body["status_msg"], "lunch", "{body}");
    assert!(
        body["last_active_ago"].as_u64().unwrap() >= 31_000,
        "going offline is not activity: {body}"
    );

    // Syncing again brings the user back.
    sync(&server, &alice, "timeout=0").await;
    assert_eq!(presence_of(&server, &bob, &alice.user_id).await, "online");
}
