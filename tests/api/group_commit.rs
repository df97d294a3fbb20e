//! The group commit (src/services/rooms/writer.rs): concurrent sends to one
//! room form one chain, a retried transaction makes one event even while
//! the first is queued, and a write that fails fails only its room's
//! events built on it: the room recovers and the stream does not stall.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";

/// Starts the requests at once, in the order given; returns (status, body)
/// of each, in that order.
async fn start_all(reqs: Vec<reqwest::RequestBuilder>) -> Vec<(StatusCode, Value)> {
    let mut set = JoinSet::new();
    for (i, req) in reqs.into_iter().enumerate() {
        set.spawn(async move {
            let resp = req.send().await.expect("request sent");
            let status = resp.status();
            (i, status, resp.json::<Value>().await.expect("JSON body"))
        });
    }
    let mut out: Vec<(usize, StatusCode, Value)> = set.join_all().await;
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, st, b)| (st, b)).collect()
}

/// `PUT /send` of an m.text (room, txn, body text), built, not sent.
fn send_request(
    client: &reqwest::Client,
    server: &TestServer,
    s: &Session,
    (room, txn, text): &(String, String, String),
) -> reqwest::RequestBuilder {
    let url = server.url(&format!(
        "{V3}/rooms/{}/send/m.room.message/{txn}",
        enc(room)
    ));
    client
        .put(url)
        .bearer_auth(&s.access_token)
        .json(&json!({"msgtype": "m.text", "body": text}))
}

/// Starts `PUT /send` requests at once; returns (status, body) of each, in
/// the order given.
async fn send_all(
    server: &TestServer,
    s: &Session,
    sends: Vec<(String, String, String)>, // (room, txn, body text)
) -> Vec<(StatusCode, Value)> {
    let client = reqwest::Client::new();
    start_all(
        sends
            .iter()
            .map(|send| send_request(&client, server, s, send))
            .collect(),
    )
    .await
}

/// The bodies of the room's m.room.message events, oldest first, as
/// /messages serves them.
async fn message_bodies(server: &TestServer, s: &Session, room: &str) -> Vec<String> {
    timeline(server, s, room)
        .await
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn concurrent_sends_to_one_room_form_one_chain() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let sends = (0..40)
        .map(|i| (room.clone(), format!("c{i}"), format!("m{i}")))
        .collect();
    let results = send_all(&server, &alice, sends).await;
    let mut ids: Vec<&str> = results
        .iter()
        .map(|(st, b)| {
            assert_eq!(*st, StatusCode::OK, "{b}");
            b["event_id"].as_str().unwrap()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "40 distinct events");
    assert_one_chain(&server, &room).await;
    let mut bodies = message_bodies(&server, &alice, &room).await;
    assert_eq!(bodies.len(), 40);
    bodies.sort();
    let mut want: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(bodies, want);
}

#[tokio::test]
async fn concurrent_retries_of_one_transaction_make_one_event() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let sends = (0..6)
        .map(|_| (room.clone(), "same-txn".to_owned(), "once".to_owned()))
        .collect();
    let results = send_all(&server, &alice, sends).await;
    let first = results[0].1["event_id"].as_str().unwrap().to_owned();
    for (st, b) in &results {
        assert_eq!(*st, StatusCode::OK, "{b}");
        assert_eq!(b["event_id"], first.as_str(), "the same event each time");
    }
    assert_eq!(message_bodies(&server, &alice, &room).await, vec!["once"]);
    assert_one_chain(&server, &room).await;
}

/// Takes every unused state group id up to 5,000 (stream positions name
/// new state groups), so the next state events' writes fail on the primary
/// key of `state_groups`: the one way to make a write fail from outside.
/// Messages create no state group and are written as usual.
async fn plant_state_group_clash(server: &TestServer) {
    server
        .sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO state_groups (state_group, room_id, prev_group, chain_length)
             SELECT i, '!planted:clash', NULL, 0 FROM n
             WHERE i NOT IN (SELECT state_group FROM state_groups)",
        )
        .await;
}

async fn remove_state_group_clash(server: &TestServer) {
    server
        .sql("DELETE FROM state_groups WHERE room_id = '!planted:clash'")
        .await;
}

async fn put_topic(
    server: &TestServer,
    s: &Session,
    room: &str,
    topic: &str,
) -> (StatusCode, Value) {
    server
        .put(
            &format!("{V3}/rooms/{}/state/m.room.topic/", enc(room)),
            s.token(),
            json!({"topic": topic}),
        )
        .await
}

#[tokio::test]
async fn a_failed_write_fails_alone_and_the_room_recovers() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let other = create_room(&server, &alice, json!({})).await;
    let (_, body) = server
        .get(&format!("{V3}/sync?timeout=0"), alice.token())
        .await;
    let since = body["next_batch"].as_str().unwrap().to_owned();
    plant_state_group_clash(&server).await;

    assert_error(
        &put_topic(&server, &alice, &room, "lost").await,
        500,
        "M_UNKNOWN",
    );
    // The room goes on from what was written; so does the other one.
    let (st, body) = try_send_text(&server, &alice, &room, "after", "after").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = try_send_text(&server, &alice, &other, "other room", "other room").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_one_chain(&server, &room).await;
    assert_one_chain(&server, &other).await;
    assert_eq!(message_bodies(&server, &alice, &room).await, vec!["after"]);
    let (st, body) = server
        .get(
            &format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room)),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "no topic was set: {body}");

    // The failed event's stream position was given up, not left in
    // flight: an incremental sync sees both rooms' new messages at once.
    let (st, body) = server
        .get(
            &format!("{V3}/sync?timeout=5000&since={since}"),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let bodies = |r: &str| -> Vec<String> {
        body["rooms"]["join"][r]["timeline"]["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(bodies(&room), vec!["after"]);
    assert_eq!(bodies(&other), vec!["other room"]);

    // State events work again once the clash is gone.
    remove_state_group_clash(&server).await;
    let (st, body) = put_topic(&server, &alice, &room, "kept").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = server
        .get(
            &format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room)),
            alice.token(),
        )
        .await;
    assert_eq!((st, &body["topic"]), (StatusCode::OK, &json!("kept")));
    assert_one_chain(&server, &room).await;
}

/// Plants the state-group clash and sends the burst with a topic in
/// `topic_room` in the middle of it; asserts the topic failed (500) and
/// returns the burst's answers.
async fn burst_with_failing_topic(
    server: &TestServer,
    s: &Session,
    sends: Vec<(String, String, String)>,
    topic_room: &str,
) -> Vec<(StatusCode, Value)> {
    plant_state_group_clash(server).await;
    let client = reqwest::Client::new();
    let mut reqs: Vec<reqwest::RequestBuilder> = sends
        .iter()
        .map(|send| send_request(&client, server, s, send))
        .collect();
    // The topic starts in the middle of the burst: after half of its sends.
    let middle = reqs.len() / 2;
    let topic_url = server.url(&format!(
        "{V3}/rooms/{}/state/m.room.topic/",
        enc(topic_room)
    ));
    reqs.insert(
        middle,
        client
            .put(topic_url)
            .bearer_auth(&s.access_token)
            .json(&json!({"topic": "lost"})),
    );
    let mut burst = start_all(reqs).await;
    let topic = burst.remove(middle);
    assert_error(&topic, 500, "M_UNKNOWN");
    burst
}

/// A failure in the middle of a burst: every send answered 200 is stored
/// and served, no other is, and the room is still one chain.
#[tokio::test]
async fn a_failed_write_in_a_burst_keeps_the_chain_whole() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let sends = (0..30)
        .map(|i| (room.clone(), format!("b{i}"), format!("m{i}")))
        .collect();
    let burst = burst_with_failing_topic(&server, &alice, sends, &room).await;
    let mut accepted = Vec::new();
    for (i, (st, b)) in burst.iter().enumerate() {
        match st.as_u16() {
            200 => accepted.push(format!("m{i}")),
            500 => assert_eq!(b["errcode"], "M_UNKNOWN", "{b}"),
            other => panic!("send {i}: unexpected {other}: {b}"),
        }
    }
    let mut bodies = message_bodies(&server, &alice, &room).await;
    bodies.sort();
    accepted.sort();
    assert_eq!(bodies, accepted, "exactly the accepted sends are stored");
    assert_one_chain(&server, &room).await;
    let (st, body) = try_send_text(&server, &alice, &room, "later", "later").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_one_chain(&server, &room).await;
}

/// A failed write fails only its own room's events: the other rooms'
/// events queued with it (in the same group commit, as a burst makes
/// them) are written and answered 200.
#[tokio::test]
async fn a_failed_write_fails_no_other_rooms_events() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(create_room(&server, &alice, json!({})).await);
    }
    let sends = (0..30)
        .map(|i| (others[i % 3].clone(), format!("o{i}"), format!("m{i}")))
        .collect();
    let burst = burst_with_failing_topic(&server, &alice, sends, &room).await;
    for (i, (st, b)) in burst.iter().enumerate() {
        assert_eq!(*st, StatusCode::OK, "send {i} to another room: {b}");
    }
    for (k, other) in others.iter().enumerate() {
        let mut bodies = message_bodies(&server, &alice, other).await;
        bodies.sort();
        let mut expected: Vec<String> = (0..30)
            .filter(|i| i % 3 == k)
            .map(|i| format!("m{i}"))
            .collect();
        expected.sort();
        assert_eq!(bodies, expected);
        assert_one_chain(&server, other).await;
    }
    remove_state_group_clash(&server).await;
}
