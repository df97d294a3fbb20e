//! Synapse's purge history API: `POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`,
//! `GET /_synapse/admin/v1/purge_history_status/{purgeId}`, and the same job at
//! `GET /_myelin/admin/v1/jobs/{jobId}`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

fn purge_path(room: &str) -> String {
    format!("/_synapse/admin/v1/purge_history/{}", enc(room))
}

/// Starts a purge; returns its id.
async fn start_purge(server: &TestServer, admin: &Session, path: &str, body: Value) -> String {
    let (st, b) = server.post(path, admin.token(), body).await;
    assert_eq!(st, StatusCode::OK, "purge_history: {b}");
    b["purge_id"].as_str().expect("purge_id").to_owned()
}

/// Polls the purge's status until it is no longer active; returns it.
async fn wait_purge(server: &TestServer, admin: &Session, id: &str) -> Value {
    let path = format!("/_synapse/admin/v1/purge_history_status/{}", enc(id));
    server
        .poll_get(&path, admin.token(), Duration::from_secs(20), |b| {
            b["status"] != "active"
        })
        .await
}

async fn event_status(server: &TestServer, who: &Session, room: &str, event: &str) -> StatusCode {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(room),
        enc(event)
    );
    server.get(&path, who.token()).await.0
}

/// The event ids /messages shows, newest first, paging back to the start.
async fn paged_timeline(server: &TestServer, who: &Session, room: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..50 {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=7",
            enc(room)
        );
        if let Some(f) = &from {
            path.push_str(&format!("&from={}", enc(f)));
        }
        let (st, b) = server.get(&path, who.token()).await;
        assert_eq!(st, StatusCode::OK, "messages: {b}");
        for e in b["chunk"].as_array().unwrap() {
            out.push((
                e["event_id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            ));
        }
        match b["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return out,
        }
    }
    panic!("/messages did not end");
}

/// The ids of the messages in an initial sync's timeline of the room.
async fn synced_messages(server: &TestServer, who: &Session, room: &str) -> Vec<String> {
    let body = sync(server, who, "timeout=0").await;
    joined_room(&body, room)["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn purge_up_to_event_removes_older_messages_and_keeps_state() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"name": "History"})).await;
    let m1 = send_text(&server, &alice, &room, "first words").await;
    let m2 = send_text(&server, &alice, &room, "second words").await;
    let topic = set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "kept"}),
    )
    .await;
    let m3 = send_text(&server, &alice, &room, "third words").await;
    let m4 = send_text(&server, &alice, &room, "fourth words").await;
    let m5 = send_text(&server, &alice, &room, "fifth words").await;
    let before = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM events WHERE room_id = '{room}'"
        ))
        .await;

    let id = start_purge(
        &server,
        &admin,
        &format!("{}/{}", purge_path(&room), enc(&m4)),
        json!({"delete_local_events": true}),
    )
    .await;
    let status = wait_purge(&server, &admin, &id).await;
    assert_eq!(status, json!({"status": "complete"}));

    for gone in [&m1, &m2, &m3] {
        assert_eq!(
            event_status(&server, &alice, &room, gone).await,
            StatusCode::NOT_FOUND
        );
    }
    for kept in [&m4, &m5, &topic] {
        assert_eq!(
            event_status(&server, &alice, &room, kept).await,
            StatusCode::OK
        );
    }
    let after = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM events WHERE room_id = '{room}'"
        ))
        .await;
    assert_eq!(before - after, 3, "three messages removed");
    // Their transaction ids went with them; the kept messages keep theirs.
    let txns = |ids: &[&String]| {
        let list = ids
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("SELECT COUNT(*) FROM event_transactions WHERE event_id IN ({list})")
    };
    assert_eq!(server.sql_count(&txns(&[&m1, &m2, &m3])).await, 0);
    assert_eq!(server.sql_count(&txns(&[&m4, &m5])).await, 2);

    // Paging back ends at the purge point: the kept messages only. The
    // state events below it stay in the room's state (and at /event) but
    // leave the timeline, as Synapse makes them outliers (sytest
    // 48admin.pl "/purge_history" finds them in an initial sync's state).
    let seen = paged_timeline(&server, &alice, &room).await;
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [m5.as_str(), m4.as_str()]);

    // The room still works: state, sending, syncing.
    let (st, b) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
                enc(&room)
            ),
            alice.token(),
        )
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!({"topic": "kept"})));
    send_text(&server, &alice, &room, "after the purge").await;

    // The job is visible at Myelin's job endpoint too, with its count.
    let (st, job) = server
        .get(
            &format!("/_myelin/admin/v1/jobs/{}", enc(&id)),
            admin.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{job}");
    assert_eq!(job["kind"], "purge_history");
    assert_eq!(job["status"], "complete");
    assert_eq!(job["processed"], 3);
    assert_eq!(job["room_id"], room.as_str());
    assert!(job["elapsed_ms"].is_u64() && job["finished_ts"].is_i64());
}

/// `delete_local_events` left out (sytest sends `{}`): as Synapse, an
/// event stays in the database only when its id names this server (rooms of
/// versions 1 and 2); from version 3 on ids are hashes and every event below
/// the point goes. Kept or not, nothing below the point is in the timeline.
/// (This test said before that local events always stay: Synapse's rule is
/// by event id, and sytest 48admin.pl "/purge_history" needs v10 rooms'
/// local messages gone.)
#[tokio::test]
async fn local_events_stay_only_where_their_ids_name_the_server() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    for (version, kept) in [("10", false), ("1", true)] {
        let room = create_room(&server, &alice, json!({"room_version": version})).await;
        let m1 = send_text(&server, &alice, &room, "one").await;
        let m2 = send_text(&server, &alice, &room, "two").await;
        let id = start_purge(
            &server,
            &admin,
            &purge_path(&room),
            json!({"purge_up_to_event_id": m2}),
        )
        .await;
        assert_eq!(wait_purge(&server, &admin, &id).await["status"], "complete");
        let want = if kept {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(
            event_status(&server, &alice, &room, &m1).await,
            want,
            "v{version}"
        );
        let (_, job) = server
            .get(
                &format!("/_myelin/admin/v1/jobs/{}", enc(&id)),
                admin.token(),
            )
            .await;
        assert_eq!(job["processed"], if kept { 0 } else { 1 }, "v{version}");
        let seen = paged_timeline(&server, &alice, &room).await;
        let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, [m2.as_str()], "v{version}");
    }
}

/// As Synapse: what was sent before the time goes; the first event sent
/// after it stays, and a time in the future never takes the last event
/// (sytest 48admin.pl "/purge_history by ts": the messages after the time
/// are the only ones an initial sync shows).
/// (This test kept the newest event sent before the time until sytest
/// 48admin.pl "/purge_history by ts" showed Synapse purges it.)
#[tokio::test]
async fn purge_up_to_ts_takes_what_was_sent_before_it() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let m1 = send_text(&server, &alice, &room, "old one").await;
    let m2 = send_text(&server, &alice, &room, "old two").await;
    server.advance(Duration::from_millis(30));
    let ts = server.now_ms();
    server.advance(Duration::from_millis(30));
    let m3 = send_text(&server, &alice, &room, "new one").await;
    let m4 = send_text(&server, &alice, &room, "new two").await;

    let id = start_purge(
        &server,
        &admin,
        &purge_path(&room),
        json!({"purge_up_to_ts": ts}),
    )
    .await;
    assert_eq!(wait_purge(&server, &admin, &id).await["status"], "complete");
    for (event, status) in [
        (&m1, StatusCode::NOT_FOUND),
        (&m2, StatusCode::NOT_FOUND),
        (&m3, StatusCode::OK),
        (&m4, StatusCode::OK),
    ] {
        assert_eq!(event_status(&server, &alice, &room, event).await, status);
    }
    assert_eq!(
        synced_messages(&server, &alice, &room).await,
        [m3.clone(), m4.clone()]
    );

    // A time in the future never takes the last message.
    let id = start_purge(
        &server,
        &admin,
        &purge_path(&room),
        json!({"purge_up_to_ts": ts + 3_600_000, "delete_local_events": true}),
    )
    .await;
    assert_eq!(wait_purge(&server, &admin, &id).await["status"], "complete");
    assert_eq!(
        event_status(&server, &alice, &room, &m3).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        event_status(&server, &alice, &room, &m4).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn purged_messages_leave_search_and_redactions_still_hold() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "zebracorn sighting").await;
    let topic = set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "secret topic"}),
    )
    .await;
    // Redact the topic: the redaction is a message event, the topic is state.
    let (st, b) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                enc(&room),
                enc(&topic)
            ),
            alice.token(),
            json!({"reason": "oops"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let last = send_text(&server, &alice, &room, "latest").await;

    let search = |term: &'static str| {
        let server = &server;
        let alice = &alice;
        async move {
            let (st, b) = server
                .post(
                    "/_matrix/client/v3/search",
                    alice.token(),
                    json!({"search_categories": {"room_events": {"search_term": term}}}),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{b}");
            b["search_categories"]["room_events"]["count"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(search("zebracorn").await, 1);

    let id = start_purge(
        &server,
        &admin,
        &format!("{}/{}", purge_path(&room), enc(&last)),
        json!({"delete_local_events": true}),
    )
    .await;
    assert_eq!(wait_purge(&server, &admin, &id).await["status"], "complete");
    assert_eq!(
        search("zebracorn").await,
        0,
        "purged message still searchable"
    );

    // The redaction went with the history, but the topic stays redacted.
    let (st, ev) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(&room),
                enc(&topic)
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["content"], json!({}), "redacted content came back: {ev}");
}

/// (name, path, token, body, status, errcode)
type Case<'a> = (&'a str, String, Option<&'a str>, Value, u16, &'a str);

#[tokio::test]
async fn purge_history_errors() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let other = create_room(&server, &alice, json!({})).await;
    let m1 = send_text(&server, &alice, &room, "one").await;
    let elsewhere = send_text(&server, &alice, &other, "two").await;

    let here = purge_path(&room);
    let (a, u) = (admin.token(), alice.token());
    let cases: Vec<Case> = vec![
        (
            "no token",
            here.clone(),
            None,
            json!({"purge_up_to_event_id": m1}),
            401,
            "M_MISSING_TOKEN",
        ),
        (
            "not an admin",
            here.clone(),
            u,
            json!({"purge_up_to_event_id": m1}),
            403,
            "M_FORBIDDEN",
        ),
        (
            "malformed room",
            purge_path("not-a-room"),
            a,
            json!({"purge_up_to_ts": 1}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "unknown room",
            purge_path("!unknown:test.local"),
            a,
            json!({"purge_up_to_ts": 1}),
            404,
            "M_NOT_FOUND",
        ),
        (
            "unknown event in the path",
            format!("{here}/{}", enc("$nosuchevent")),
            a,
            json!({}),
            404,
            "M_NOT_FOUND",
        ),
        (
            "event of another room",
            here.clone(),
            a,
            json!({"purge_up_to_event_id": elsewhere}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "no purge point",
            here.clone(),
            a,
            json!({}),
            400,
            "M_MISSING_PARAM",
        ),
        (
            "ts not an int",
            here.clone(),
            a,
            json!({"purge_up_to_ts": "yesterday"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "delete_local_events not a bool",
            here.clone(),
            a,
            json!({"purge_up_to_ts": 1, "delete_local_events": "yes"}),
            400,
            "M_BAD_JSON",
        ),
        (
            "event id not a string",
            here.clone(),
            a,
            json!({"purge_up_to_event_id": 5}),
            400,
            "M_INVALID_PARAM",
        ),
        // Nothing was sent before the epoch.
        (
            "nothing before the time",
            here.clone(),
            a,
            json!({"purge_up_to_ts": 1}),
            404,
            "M_NOT_FOUND",
        ),
    ];
    for (name, path, token, body, status, errcode) in cases {
        let r = server.post(&path, token, body).await;
        assert_eq!(
            (r.0.as_u16(), r.1["errcode"].as_str()),
            (status, Some(errcode)),
            "{name}: {}",
            r.1
        );
        assert!(r.1["error"].is_string(), "{name}: {}", r.1);
    }
    let (st, b) = server
        .request_raw(reqwest::Method::POST, &here, a, "{not json")
        .await;
    assert_eq!(
        (st, &b["errcode"]),
        (StatusCode::BAD_REQUEST, &json!("M_NOT_JSON")),
        "{b}"
    );

    // Status of an unknown purge or job.
    for (path, token, status, errcode) in [
        (
            "/_synapse/admin/v1/purge_history_status/nope",
            a,
            404,
            "M_NOT_FOUND",
        ),
        (
            "/_synapse/admin/v1/purge_history_status/nope",
            u,
            403,
            "M_FORBIDDEN",
        ),
        ("/_myelin/admin/v1/jobs/nope", a, 404, "M_NOT_FOUND"),
    ] {
        assert_error(&server.get(path, token).await, status, errcode);
    }

    // Nothing was removed by any of the refused requests.
    assert_eq!(
        event_status(&server, &alice, &room, &m1).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn room_deletion_is_a_job_too() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let (st, b) = server
        .delete(
            &format!("/_synapse/admin/v2/rooms/{}", enc(&room)),
            admin.token(),
            Some(json!({"purge": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let id = b["delete_id"].as_str().unwrap().to_owned();
    let job_path = format!("/_myelin/admin/v1/jobs/{}", enc(&id));
    server
        .poll_get(&job_path, admin.token(), Duration::from_secs(20), |job| {
            assert_eq!(job["kind"], "room_delete");
            assert_eq!(job["room_id"], room.as_str());
            job["status"] == "complete"
        })
        .await;
    // A purge id is not a room deletion id.
    let r = server
        .get(
            &format!("/_synapse/admin/v1/purge_history_status/{}", enc(&id)),
            admin.token(),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
}

/// sytest 48admin.pl "/purge_history": purging up to the last of ten
/// messages with an empty body leaves that message the only one in an
/// initial sync's timeline, and the room's state (create, members, power
/// levels, name) in its `state`; an older sync token still works, and only
/// server admins may purge.
#[tokio::test]
async fn initial_sync_after_a_purge_has_the_last_message_and_the_state() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "A room name"}),
    )
    .await;
    let since = sync_token(&server, &alice).await;
    let mut last = String::new();
    for n in 1..=10 {
        last = send_text(&server, &alice, &room, &format!("Message {n}")).await;
    }
    let path = format!("{}/{}", purge_path(&room), enc(&last));
    assert_error(
        &server.post(&path, alice.token(), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    let id = start_purge(&server, &admin, &path, json!({})).await;
    assert_eq!(
        wait_purge(&server, &admin, &id).await,
        json!({"status": "complete"})
    );

    sync_since(&server, &alice, &since).await;
    assert_eq!(
        synced_messages(&server, &alice, &room).await,
        [last.clone()]
    );
    let body = sync(&server, &alice, "timeout=0").await;
    let joined = joined_room(&body, &room);
    for ty in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.name",
    ] {
        assert!(
            event_of_type(&joined["state"]["events"], ty).is_some(),
            "{ty} in state: {joined}"
        );
    }
    // /messages ends at the purge point too.
    let page = messages_ok(&server, &alice, &room, "dir=b&limit=20").await;
    assert_eq!(event_ids(&page["chunk"]), [last.clone()]);
}

/// `sender` sends "First message", which `reader` marks read, then `n`
/// more; returns the first and the last.
async fn read_then_unread(
    server: &TestServer,
    sender: &Session,
    reader: &Session,
    room: &str,
    n: usize,
) -> (String, String) {
    let first = send_text(server, sender, room, "First message").await;
    post_receipt(server, reader, room, "m.read", &first).await;
    let mut last = String::new();
    for i in 1..=n {
        last = send_text(server, sender, room, &format!("Message {i}")).await;
    }
    (first, last)
}

/// sytest 48admin.pl "After /purge_history users still get pushed for new
/// messages" (its counting part): a reader whose read receipt was purged
/// counts the messages left after the purge point and the new one.
#[tokio::test]
async fn unread_counts_after_a_purge_count_what_is_left() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &admin, &room).await;
    let (_, last) = read_then_unread(&server, &alice, &admin, &room, 10).await;
    let body = sync(&server, &admin, "timeout=0").await;
    let counts = &joined_room(&body, &room)["unread_notifications"];
    assert_eq!(counts["notification_count"], 10, "{counts}");
    let since = next_batch(&body);

    let path = format!("{}/{}", purge_path(&room), enc(&last));
    let id = start_purge(&server, &admin, &path, json!({})).await;
    assert_eq!(wait_purge(&server, &admin, &id).await["status"], "complete");
    let body = sync_since(&server, &admin, &since).await;
    let since = next_batch(&body);
    send_text(&server, &alice, &room, "New Message").await;
    let body = sync_since(&server, &admin, &since).await;
    let counts = &joined_room(&body, &room)["unread_notifications"];
    assert_eq!(counts["notification_count"], 2, "{counts}");
}

/// Messages a purge keeps below its point (a v1 room's local ones, without
/// `delete_local_events`) leave the unread counts with the timeline, even
/// for a reader whose read position did not move and whose counts were
/// made before the purge.
#[tokio::test]
async fn unread_counts_leave_out_what_a_purge_kept_below_its_point() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "room_version": "1"}),
    )
    .await;
    join(&server, &bob, &room).await;
    let (first, last) = read_then_unread(&server, &alice, &bob, &room, 5).await;
    let count = |body: &Value| {
        joined_room(body, &room)["unread_notifications"]["notification_count"].clone()
    };
    let body = sync(&server, &bob, "timeout=0").await;
    assert_eq!(count(&body), 5);

    let path = format!("{}/{}", purge_path(&room), enc(&last));
    let id = start_purge(&server, &admin, &path, json!({})).await;
    assert_eq!(wait_purge(&server, &admin, &id).await["status"], "complete");
    assert_eq!(
        event_status(&server, &bob, &room, &first).await,
        StatusCode::OK
    );
    let body = sync(&server, &bob, "timeout=0").await;
    assert_eq!(count(&body), 1, "{body}");
}

/// As Synapse's task scheduler: a finished job's status can be asked for
/// for a week, then it reads as unknown and its row is deleted (the jobs
/// table does not keep every purge the server ever ran).
#[tokio::test]
async fn finished_jobs_go_after_a_week() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let kept = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &kept, "one").await;
    let last = send_text(&server, &alice, &kept, "two").await;
    let purge = start_purge(
        &server,
        &admin,
        &format!("{}/{}", purge_path(&kept), enc(&last)),
        json!({}),
    )
    .await;
    assert_eq!(
        wait_purge(&server, &admin, &purge).await["status"],
        "complete"
    );
    let doomed = create_room(&server, &alice, json!({})).await;
    let (st, b) = server
        .delete(
            &format!("/_synapse/admin/v2/rooms/{}", enc(&doomed)),
            admin.token(),
            Some(json!({"purge": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let delete = b["delete_id"].as_str().unwrap().to_owned();
    let paths = [
        format!("/_synapse/admin/v1/purge_history_status/{}", enc(&purge)),
        format!("/_myelin/admin/v1/jobs/{}", enc(&purge)),
        format!("/_synapse/admin/v2/rooms/delete_status/{}", enc(&delete)),
        format!("/_synapse/admin/v2/rooms/{}/delete_status", enc(&doomed)),
        format!("/_myelin/admin/v1/jobs/{}", enc(&delete)),
    ];
    server
        .poll_get(&paths[4], admin.token(), Duration::from_secs(20), |job| {
            job["status"] == "complete"
        })
        .await;

    server.advance(Duration::from_secs(6 * 24 * 60 * 60));
    for path in &paths {
        let (st, b) = server.get(path, admin.token()).await;
        assert_eq!(st, StatusCode::OK, "{path} six days on: {b}");
    }
    server.advance(Duration::from_secs(2 * 24 * 60 * 60));
    for path in &paths {
        assert_error_for(
            path,
            &server.get(path, admin.token()).await,
            404,
            "M_NOT_FOUND",
        );
    }
    // The upkeep worker deletes the rows at its next pass.
    let gone = format!("SELECT COUNT(*) FROM jobs WHERE job_id IN ('{purge}', '{delete}')");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.sql_count(&gone).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "finished jobs still stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
