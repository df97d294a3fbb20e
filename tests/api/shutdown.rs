//! Graceful shutdown: SIGTERM (or `RunningServer::shutdown`) stops
//! accepting, answers parked `/sync` long-polls at once, finishes the
//! requests in flight and the writer's queue, and exits 0 within
//! `shutdown_timeout_secs`; past that it gives up and says so. A second
//! signal during the shutdown exits at once.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::harness::*;

/// An initial `/sync` of `who`, then an incremental one with a 120 s
/// long-poll, sent in a task: its answer.
async fn long_poll(
    s: &TestServer,
    who: &Session,
) -> tokio::task::JoinHandle<(StatusCode, serde_json::Value)> {
    let (st, first) = s.get("/_matrix/client/v3/sync", who.token()).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let (client, url, token) = (
        s.client.clone(),
        s.url(&format!(
            "/_matrix/client/v3/sync?since={since}&timeout=120000"
        )),
        who.access_token.clone(),
    );
    tokio::spawn(async move {
        let r = client.get(url).bearer_auth(token).send().await.unwrap();
        let status = r.status();
        (status, r.json::<serde_json::Value>().await.unwrap())
    })
}

/// A `/sync` parked on its long-poll is answered (200, nothing new) as
/// soon as the shutdown begins, and the shutdown completes in time.
#[tokio::test]
async fn a_parked_sync_is_answered_at_shutdown() {
    let mut s = TestServer::start().await;
    let bob = s.user("bob").await;
    let parked = long_poll(&s, &bob).await;
    s.wait_for_parked_syncs(1).await;
    let running = s.running.take().unwrap();
    // Generous against a loaded machine, far below the sync's 120 s.
    assert!(
        running.shutdown_within(Duration::from_secs(60)).await,
        "the shutdown finished in time"
    );
    let (st, body) = parked.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["next_batch"].is_string(), "{body}");
    assert!(
        body["rooms"]["join"]
            .as_object()
            .is_none_or(|j| j.is_empty()),
        "nothing new: {body}"
    );
}

/// A request that does not finish (its body never comes) holds the
/// shutdown only until the timeout; then the shutdown reports it did not
/// finish cleanly, and the server is stopped all the same.
#[tokio::test]
async fn a_stuck_request_is_cut_off_at_the_shutdown_timeout() {
    let mut s = TestServer::start().await;
    let alice = s.user("alice").await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\nsome",
        alice.access_token
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The upload is being read once the server accepted it: a second
    // connection's request is answered after it.
    let (st, _) = s.whoami(alice.token()).await;
    assert_eq!(st, StatusCode::OK);
    let running = s.running.take().unwrap();
    // (The body-read deadline, 30 s, would end it later.)
    assert!(
        !running.shutdown_within(Duration::from_secs(1)).await,
        "the stuck upload outlasted the timeout"
    );
    drop(conn);
}

/// The binary under send load gets SIGTERM while a `/sync` is parked:
/// the sync is answered, the process exits 0, and after a restart every
/// send that was answered 200 is there.
#[tokio::test]
async fn sigterm_under_send_load_keeps_every_acknowledged_send() {
    let (mut bin, (alice, bob, room)) = Binary::start(
        async |s: &TestServer| {
            let alice = s.user("alice").await;
            let bob = s.user("bob").await;
            let room = create_room(s, &alice, json!({})).await;
            (alice, bob, room)
        },
        None,
    )
    .await;
    let load = SendLoad::start(&bin.server, &alice.access_token, &room, "termword", 6);
    load.wait_for(100).await;
    // Bob is in no room: his sync has nothing new and parks.
    let parked = long_poll(&bin.server, &bob).await;
    // More sends answered after the sync went out: the server has read it.
    let sent = load.acked().len();
    load.wait_for(sent + 50).await;
    let status = bin.terminate().await;
    assert!(status.success(), "exit status {status}: {}", bin.log());
    let (st, body) = parked.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["next_batch"].is_string(), "{body}");
    let acked = load.finish().await;
    assert!(acked.len() > sent, "{} acknowledged", acked.len());

    bin.spawn(None).await;
    assert_events_served(&bin.server, alice.token(), &room, &acked).await;
}

/// A stuck upload holds the shutdown (timeout 10 minutes) after the first
/// SIGTERM; a second signal (Ctrl-C) exits at once, non-zero, and says so.
#[tokio::test]
async fn a_second_signal_exits_at_once_during_the_shutdown() {
    let (mut bin, alice) = Binary::start(async |s: &TestServer| s.user("alice").await, None).await;
    assert!(bin.terminate().await.success(), "{}", bin.log());
    bin.server.config.shutdown_timeout_secs = 600;
    bin.spawn(None).await;
    let mut conn = tokio::net::TcpStream::connect(bin.server.addr)
        .await
        .unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\nsome",
        alice.access_token
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (st, _) = bin.server.whoami(alice.token()).await;
    assert_eq!(st, StatusCode::OK);

    bin.signal(libc::SIGTERM);
    // The shutdown has begun once the server takes no new connection.
    let (client, url) = (
        bin.server.client.clone(),
        bin.server.url("/_matrix/client/versions"),
    );
    wait_until("the shutdown begun", Duration::from_secs(30), || {
        let versions = client.get(&url).send();
        async move {
            match versions.await {
                Err(_) => Ok(()),
                Ok(r) => Err(format!("still answering: {}", r.status())),
            }
        }
    })
    .await;
    // The upload holds it: still running a moment later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(bin.running(), "the first signal waits: {}", bin.log());

    bin.signal(libc::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(30), bin.wait())
        .await
        .expect("the second signal exits well before the 600 s timeout");
    assert!(!status.success(), "exit status {status}: {}", bin.log());
    let log = bin.log();
    assert!(
        log.contains("a second signal"),
        "the forced exit is logged: {log}"
    );
    drop(conn);
}
