//! Reporting (event, room, user reports through the client API) and
//! Synapse's event report admin API (`/_synapse/admin/v1/event_reports`):
//! Dendrite's TestReportEvent, TestAdminQueryEventReports and
//! TestEventReportsGetDelete with Myelin's fixed errors, plus the admin
//! authorization matrix for every admin endpoint of the contract.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const REPORTS: &str = "/_synapse/admin/v1/event_reports";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn report_path(room: &str, event: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/report/{}",
        enc(room),
        enc(event)
    )
}

async fn report(
    server: &TestServer,
    who: &Session,
    room: &str,
    event: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .post(&report_path(room, event), who.token(), body)
        .await
}

#[track_caller]
fn assert_ok_empty(resp: &(StatusCode, Value)) {
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(resp.1, json!({}), "{}", resp.1);
}

/// GET the report list with a raw query string; asserts 200 and that
/// `event_reports` is an array (never null).
async fn list(server: &TestServer, admin: &Session, query: &str) -> Value {
    let (st, body) = server
        .get(&format!("{REPORTS}?{query}"), admin.token())
        .await;
    assert_eq!(st, StatusCode::OK, "?{query}: {body}");
    assert!(
        body["event_reports"].is_array(),
        "?{query}: event_reports must be an array: {body}"
    );
    body
}

fn items(body: &Value) -> &Vec<Value> {
    body["event_reports"].as_array().expect("event_reports")
}

fn report_event_ids(body: &Value) -> Vec<String> {
    items(body)
        .iter()
        .map(|r| r["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

/// Dendrite's TestAdminQueryEventReports set-up: alice sends 10 messages in
/// each of two rooms and bob reports all 20 (reason "baaad", score -100),
/// room1 first. room2 is named "Testing" with the alias #testing.
struct Reported {
    admin: Session,
    alice: Session,
    bob: Session,
    room1: String,
    room2: String,
    /// Event ids in the order they were reported.
    events1: Vec<String>,
    events2: Vec<String>,
}

async fn twenty_reports(server: &TestServer, room2_first: bool) -> Reported {
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room1 = create_room(server, &alice, json!({"preset": "public_chat"})).await;
    let room2 = create_room(
        server,
        &alice,
        json!({"preset": "public_chat", "name": "Testing", "room_alias_name": "testing"}),
    )
    .await;
    join(server, &bob, &room1).await;
    join(server, &bob, &room2).await;
    let mut events1 = Vec::new();
    let mut events2 = Vec::new();
    for i in 0..10 {
        events1.push(send_text(server, &alice, &room1, &format!("room1 {i}")).await);
        events2.push(send_text(server, &alice, &room2, &format!("room2 {i}")).await);
    }
    let order: [(&String, &Vec<String>); 2] = if room2_first {
        [(&room2, &events2), (&room1, &events1)]
    } else {
        [(&room1, &events1), (&room2, &events2)]
    };
    for (room, events) in order {
        for ev in events {
            assert_ok_empty(
                &report(
                    server,
                    &bob,
                    room,
                    ev,
                    json!({"reason": "baaad", "score": -100}),
                )
                .await,
            );
        }
    }
    Reported {
        admin,
        alice,
        bob,
        room1,
        room2,
        events1,
        events2,
    }
}

// ---------------------------------------------------------------------------
// POST /rooms/{roomId}/report/{eventId}
// ---------------------------------------------------------------------------

#[tokio::test]
async fn report_event_port_of_dendrite() {
    // TestReportEvent: bob not joined -> 404; charlie joined, unknown event
    // -> 404; charlie joined, real event -> 200.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &charlie, &room).await;
    let ev = send_text(&server, &alice, &room, "offensive").await;

    let body = json!({"reason": "baaad", "score": -100});
    assert_error(
        &report(&server, &bob, &room, &ev, body.clone()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &report(&server, &charlie, &room, "$doesNotExist", body.clone()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_ok_empty(&report(&server, &charlie, &room, &ev, body).await);
}

#[tokio::test]
async fn report_event_is_listed_with_its_details() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let ev = send_text(&server, &alice, &room, "offensive").await;
    let before = now_ms();
    assert_ok_empty(
        &report(
            &server,
            &bob,
            &room,
            &ev,
            json!({"reason": "spam", "score": -50}),
        )
        .await,
    );

    let body = list(&server, &admin, "").await;
    assert_eq!(body["total"], 1, "{body}");
    assert!(body.get("next_token").is_none(), "{body}");
    let r = &items(&body)[0];
    assert!(r["id"].is_i64(), "{r}");
    assert_eq!(r["room_id"], room.as_str(), "{r}");
    assert_eq!(r["event_id"], ev.as_str(), "{r}");
    assert_eq!(r["user_id"], bob.user_id.as_str(), "reporter: {r}");
    assert_eq!(r["sender"], alice.user_id.as_str(), "event sender: {r}");
    assert_eq!(r["reason"], "spam", "{r}");
    assert_eq!(r["score"], -50, "{r}");
    let ts = r["received_ts"].as_i64().expect("received_ts integer");
    assert!(
        ts >= before - 5_000 && ts <= before + 60_000,
        "received_ts {ts} near {before}"
    );
    // No name or alias set.
    assert!(r["name"].is_null(), "{r}");
    assert!(r["canonical_alias"].is_null(), "{r}");
}

#[tokio::test]
async fn report_event_needs_current_membership_and_the_right_room() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let other = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &bob, &other).await;
    let ev = send_text(&server, &alice, &room, "offensive").await;
    let body = json!({"reason": "r"});

    // The event exists, but not in the room named in the path.
    assert_error(
        &report(&server, &bob, &other, &ev, body.clone()).await,
        404,
        "M_NOT_FOUND",
    );
    // Unknown room.
    assert_error(
        &report(&server, &bob, "!nope:test.local", &ev, body.clone()).await,
        404,
        "M_NOT_FOUND",
    );
    // Invited but not joined.
    let carol = server.user("carol").await;
    let (st, b) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            alice.token(),
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_error(
        &report(&server, &carol, &room, &ev, body.clone()).await,
        404,
        "M_NOT_FOUND",
    );
    // Left.
    leave(&server, &bob, &room).await;
    assert_error(
        &report(&server, &bob, &room, &ev, body.clone()).await,
        404,
        "M_NOT_FOUND",
    );
    // Nothing was stored.
    let listed = list(&server, &admin, "").await;
    assert_eq!(listed["total"], 0, "{listed}");
    assert_eq!(listed["event_reports"], json!([]), "{listed}");
}

#[tokio::test]
async fn report_event_score_validation() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let ev = send_text(&server, &alice, &room, "x").await;

    for bad in [1, 100, -101, -1000] {
        assert_error(
            &report(&server, &alice, &room, &ev, json!({"score": bad})).await,
            400,
            "M_INVALID_PARAM",
        );
    }
    assert_error(
        &report(&server, &alice, &room, &ev, json!({"score": "bad"})).await,
        400,
        "M_BAD_JSON",
    );
    assert_eq!(list(&server, &admin, "").await["total"], 0);

    // The bounds are allowed, and both fields are optional.
    for ok in [
        json!({"score": 0}),
        json!({"score": -100}),
        json!({"reason": "only a reason"}),
        json!({}),
    ] {
        assert_ok_empty(&report(&server, &alice, &room, &ev, ok).await);
    }
    let body = list(&server, &admin, "dir=f").await;
    assert_eq!(body["total"], 4, "{body}");
    let scores: Vec<&Value> = items(&body).iter().map(|r| &r["score"]).collect();
    assert_eq!(scores[0], 0, "{body}");
    assert_eq!(scores[1], -100, "{body}");
    assert_eq!(items(&body)[2]["reason"], "only a reason", "{body}");
}

#[tokio::test]
async fn reports_need_a_token_and_refuse_guests() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let ev = send_text(&server, &alice, &room, "x").await;
    let guest = server.guest().await;
    let guest_token = guest.access_token.clone();

    let paths = [
        report_path(&room, &ev),
        format!("/_matrix/client/v3/rooms/{}/report", enc(&room)),
        format!("/_matrix/client/v3/users/{}/report", enc(&alice.user_id)),
    ];
    for path in &paths {
        let body = json!({"reason": "r"});
        assert_error(
            &server.post(path, None, body.clone()).await,
            401,
            "M_MISSING_TOKEN",
        );
        assert_error(
            &server.post(path, Some("not-a-token"), body.clone()).await,
            401,
            "M_UNKNOWN_TOKEN",
        );
        assert_error(
            &server.post(path, Some(&guest_token), body).await,
            403,
            "M_GUEST_ACCESS_FORBIDDEN",
        );
    }
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM event_reports").await,
        0
    );
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM room_reports").await,
        0
    );
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM user_reports").await,
        0
    );
}

// ---------------------------------------------------------------------------
// Room and user reports
// ---------------------------------------------------------------------------

#[tokio::test]
async fn report_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let path = format!("/_matrix/client/v3/rooms/{}/report", enc(&room));

    assert_ok_empty(
        &server
            .post(&path, bob.token(), json!({"reason": "bad room"}))
            .await,
    );
    assert_eq!(
        server
            .sql_count(&format!(
                "SELECT COUNT(*) FROM room_reports WHERE room_id = '{room}' \
                 AND reporter = '{}' AND reason = 'bad room'",
                bob.user_id
            ))
            .await,
        1
    );

    // Unknown room: 404.
    assert_error(
        &server
            .post(
                "/_matrix/client/v3/rooms/!nope:test.local/report",
                bob.token(),
                json!({"reason": "x"}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM room_reports").await,
        1
    );
    // Missing reason: 400 M_BAD_JSON (required since spec v1.14; ruma's
    // request type defaults it to "").
    assert_error(
        &server.post(&path, bob.token(), json!({})).await,
        400,
        "M_BAD_JSON",
    );
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM room_reports").await,
        1
    );
}

#[tokio::test]
async fn report_user() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let path = format!("/_matrix/client/v3/users/{}/report", enc(&alice.user_id));

    assert_ok_empty(
        &server
            .post(&path, bob.token(), json!({"reason": "harassment"}))
            .await,
    );
    assert_eq!(
        server
            .sql_count(&format!(
                "SELECT COUNT(*) FROM user_reports WHERE target_user_id = '{}' \
                 AND reporter = '{}' AND reason = 'harassment'",
                alice.user_id, bob.user_id
            ))
            .await,
        1
    );

    assert_error(
        &server.post(&path, bob.token(), json!({})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .post(
                &format!(
                    "/_matrix/client/v3/users/{}/report",
                    enc("@nobody:test.local")
                ),
                bob.token(),
                json!({"reason": "x"}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM user_reports").await,
        1
    );
}

// ---------------------------------------------------------------------------
// GET /_synapse/admin/v1/event_reports
// ---------------------------------------------------------------------------

#[tokio::test]
async fn event_reports_query_port_of_dendrite() {
    let server = TestServer::start().await;
    let r = twenty_reports(&server, false).await;
    let admin = &r.admin;

    // No filter: all 20.
    let body = list(&server, admin, "").await;
    assert_eq!(items(&body).len(), 20, "{body}");
    assert_eq!(body["total"], 20, "{body}");
    assert!(body.get("next_token").is_none(), "{body}");
    let ids: HashSet<i64> = items(&body)
        .iter()
        .map(|x| x["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids.len(), 20, "distinct ids: {body}");

    // room_id=room1: its 10.
    let body = list(&server, admin, &format!("room_id={}", enc(&r.room1))).await;
    assert_eq!(items(&body).len(), 10, "{body}");
    assert_eq!(body["total"], 10, "{body}");
    for item in items(&body) {
        assert_eq!(item["room_id"], r.room1.as_str(), "{item}");
        assert!(item["name"].is_null(), "{item}");
        assert!(item["canonical_alias"].is_null(), "{item}");
    }

    // An unknown reporter: an empty page, [] not null, total 0.
    let body = list(
        &server,
        admin,
        &format!("user_id={}", enc("@doesnotexist:test.local")),
    )
    .await;
    assert_eq!(body["event_reports"], json!([]), "{body}");
    assert_eq!(body["total"], 0, "{body}");
    assert!(body.get("next_token").is_none(), "{body}");

    // dir=f: oldest first; the first item is the first event reported.
    let body = list(&server, admin, &format!("room_id={}&dir=f", enc(&r.room1))).await;
    assert_eq!(report_event_ids(&body), r.events1, "{body}");
    // Default (dir=b): newest first.
    let body = list(&server, admin, &format!("room_id={}", enc(&r.room1))).await;
    let mut newest_first = r.events1.clone();
    newest_first.reverse();
    assert_eq!(report_event_ids(&body), newest_first, "{body}");
    let body = list(&server, admin, &format!("room_id={}&dir=b", enc(&r.room1))).await;
    assert_eq!(report_event_ids(&body), newest_first, "{body}");

    // room2 carries its name and alias, and the details.
    let body = list(&server, admin, &format!("room_id={}", enc(&r.room2))).await;
    assert_eq!(body["total"], 10, "{body}");
    for item in items(&body) {
        assert_eq!(item["room_id"], r.room2.as_str(), "{item}");
        assert_eq!(item["name"], "Testing", "{item}");
        assert_eq!(item["canonical_alias"], "#testing:test.local", "{item}");
        assert_eq!(item["user_id"], r.bob.user_id.as_str(), "{item}");
        assert_eq!(item["sender"], r.alice.user_id.as_str(), "{item}");
        assert_eq!(item["reason"], "baaad", "{item}");
        assert_eq!(item["score"], -100, "{item}");
    }
}

#[tokio::test]
async fn event_reports_paging() {
    let server = TestServer::start().await;
    let r = twenty_reports(&server, false).await;
    let admin = &r.admin;
    let room2 = enc(&r.room2);

    let page1 = list(&server, admin, &format!("room_id={room2}&limit=5&from=0")).await;
    assert_eq!(items(&page1).len(), 5, "{page1}");
    assert_eq!(page1["total"], 10, "{page1}");
    assert!(
        page1["next_token"].is_i64(),
        "next_token is an integer: {page1}"
    );
    assert_eq!(page1["next_token"], 5, "{page1}");

    let page2 = list(&server, admin, &format!("room_id={room2}&limit=5&from=5")).await;
    assert_eq!(items(&page2).len(), 5, "{page2}");
    assert_eq!(page2["total"], 10, "{page2}");
    assert!(
        page2.get("next_token").is_none(),
        "from + len == total ends paging: {page2}"
    );

    // The two pages are the room's ten reports, newest first, no overlap.
    let mut all = report_event_ids(&page1);
    all.extend(report_event_ids(&page2));
    let mut expected = r.events2.clone();
    expected.reverse();
    assert_eq!(all, expected);

    // Following next_token over everything, 7 at a time.
    let mut seen = Vec::new();
    let mut from = 0;
    loop {
        let page = list(&server, admin, &format!("limit=7&from={from}")).await;
        assert_eq!(page["total"], 20, "{page}");
        seen.extend(report_event_ids(&page));
        match page.get("next_token") {
            Some(t) => from = t.as_i64().expect("integer next_token"),
            None => break,
        }
        assert!(seen.len() < 40, "paging does not end");
    }
    assert_eq!(seen.len(), 20);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 20);

    // Past the end: an empty page with the real total.
    let body = list(&server, admin, &format!("room_id={room2}&from=10")).await;
    assert_eq!(body["event_reports"], json!([]), "{body}");
    assert_eq!(body["total"], 10, "{body}");
    assert!(body.get("next_token").is_none(), "{body}");
    let body = list(&server, admin, "from=100").await;
    assert_eq!(body["event_reports"], json!([]), "{body}");
    assert_eq!(body["total"], 20, "{body}");
    // limit=0: nothing, but the real total.
    let body = list(&server, admin, "limit=0").await;
    assert_eq!(body["event_reports"], json!([]), "{body}");
    assert_eq!(body["total"], 20, "{body}");
}

#[tokio::test]
async fn event_reports_filters() {
    let server = TestServer::start().await;
    let r = twenty_reports(&server, false).await;
    let admin = &r.admin;
    let carol = server.user("carol").await;
    join(&server, &carol, &r.room1).await;
    let carols = send_text(&server, &carol, &r.room1, "carol says").await;
    // Alice reports carol's message.
    assert_ok_empty(
        &report(
            &server,
            &r.alice,
            &r.room1,
            &carols,
            json!({"reason": "meh"}),
        )
        .await,
    );

    let total = |b: &Value| b["total"].as_i64().unwrap();
    // user_id is the reporter.
    let b = list(&server, admin, &format!("user_id={}", enc(&r.bob.user_id))).await;
    assert_eq!(total(&b), 20, "{b}");
    let b = list(
        &server,
        admin,
        &format!("user_id={}", enc(&r.alice.user_id)),
    )
    .await;
    assert_eq!(total(&b), 1, "{b}");
    assert_eq!(items(&b)[0]["event_id"], carols.as_str(), "{b}");
    // Substring matches, as in Synapse.
    let b = list(&server, admin, "user_id=bob").await;
    assert_eq!(total(&b), 20, "{b}");
    // event_sender_user_id is the reported event's sender.
    let b = list(
        &server,
        admin,
        &format!("event_sender_user_id={}", enc(&carol.user_id)),
    )
    .await;
    assert_eq!(total(&b), 1, "{b}");
    assert_eq!(items(&b)[0]["sender"], carol.user_id.as_str(), "{b}");
    let b = list(&server, admin, "event_sender_user_id=alice").await;
    assert_eq!(total(&b), 20, "{b}");
    let b = list(&server, admin, "event_sender_user_id=nobody").await;
    assert_eq!(total(&b), 0, "{b}");
    assert_eq!(b["event_reports"], json!([]), "{b}");
    // Filters combine.
    let b = list(
        &server,
        admin,
        &format!("room_id={}&user_id={}", enc(&r.room1), enc(&r.bob.user_id)),
    )
    .await;
    assert_eq!(total(&b), 10, "{b}");
    // An unknown room: nothing (Dendrite crashes with 500 here).
    let b = list(
        &server,
        admin,
        &format!("room_id={}", enc("!unknown:test.local")),
    )
    .await;
    assert_eq!(total(&b), 0, "{b}");
    assert_eq!(b["event_reports"], json!([]), "{b}");
    // Unknown parameters are ignored.
    let b = list(&server, admin, "order_by=received_ts&foo=bar").await;
    assert_eq!(total(&b), 21, "{b}");
}

#[tokio::test]
async fn event_reports_duplicate_reports_of_one_event() {
    // Dendrite fails the whole page with 500 when one event is reported
    // twice; both reports must be listed.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let ev = send_text(&server, &alice, &room, "x").await;
    assert_ok_empty(&report(&server, &bob, &room, &ev, json!({"reason": "one"})).await);
    assert_ok_empty(&report(&server, &bob, &room, &ev, json!({"reason": "two"})).await);
    assert_ok_empty(&report(&server, &alice, &room, &ev, json!({"reason": "three"})).await);
    let body = list(&server, &admin, "dir=f").await;
    assert_eq!(body["total"], 3, "{body}");
    let reasons: Vec<&str> = items(&body)
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["one", "two", "three"], "{body}");
}

#[tokio::test]
async fn event_reports_bad_parameters_are_400() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    for q in ["from=abc", "from=-1", "limit=abc", "limit=-5", "from=1.5"] {
        assert_error(
            &server.get(&format!("{REPORTS}?{q}"), admin.token()).await,
            400,
            "M_INVALID_PARAM",
        );
    }
    for q in ["dir=x", "dir=forwards"] {
        let resp = server.get(&format!("{REPORTS}?{q}"), admin.token()).await;
        assert_eq!(resp.0, StatusCode::BAD_REQUEST, "?{q}: {}", resp.1);
        assert!(resp.1["errcode"].is_string(), "?{q}: {}", resp.1);
    }
    // Good values still work on an empty server.
    let body = list(&server, &admin, "from=0&limit=10&dir=f").await;
    assert_eq!(body["event_reports"], json!([]), "{body}");
    assert_eq!(body["total"], 0, "{body}");
}

// ---------------------------------------------------------------------------
// GET / DELETE /_synapse/admin/v1/event_reports/{id}
// ---------------------------------------------------------------------------

#[tokio::test]
async fn event_report_get_and_delete_port_of_dendrite() {
    // TestEventReportsGetDelete: report 1 is in the room named "Testing".
    let server = TestServer::start().await;
    let r = twenty_reports(&server, true).await;
    let admin = &r.admin;

    assert_error(
        &server.get(&format!("{REPORTS}/abc"), admin.token()).await,
        400,
        "M_INVALID_PARAM",
    );

    let (st, one) = server.get(&format!("{REPORTS}/1"), admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{one}");
    assert_eq!(one["id"], 1, "{one}");
    assert_eq!(one["event_id"], r.events2[0].as_str(), "{one}");
    assert_eq!(one["room_id"], r.room2.as_str(), "{one}");
    assert_eq!(one["name"], "Testing", "{one}");
    assert_eq!(one["canonical_alias"], "#testing:test.local", "{one}");
    assert_eq!(one["user_id"], r.bob.user_id.as_str(), "{one}");
    assert_eq!(one["sender"], r.alice.user_id.as_str(), "{one}");
    assert_eq!(one["reason"], "baaad", "{one}");
    assert_eq!(one["score"], -100, "{one}");
    assert!(one["received_ts"].is_i64(), "{one}");
    // The stored PDU.
    let pdu = &one["event_json"];
    assert!(pdu.is_object(), "event_json is an object: {one}");
    assert_eq!(pdu["type"], "m.room.message", "{pdu}");
    assert_eq!(pdu["room_id"], r.room2.as_str(), "{pdu}");
    assert_eq!(pdu["sender"], r.alice.user_id.as_str(), "{pdu}");
    assert_eq!(pdu["content"]["body"], "room2 0", "{pdu}");
    for field in [
        "signatures",
        "hashes",
        "auth_events",
        "prev_events",
        "depth",
    ] {
        assert!(pdu.get(field).is_some(), "PDU field {field} missing: {pdu}");
    }

    // The single report equals its list entry (minus event_json).
    let listed = list(&server, admin, "dir=f&limit=1").await;
    let mut without = one.clone();
    without.as_object_mut().unwrap().remove("event_json");
    assert_eq!(items(&listed)[0], without, "{listed}");

    let (st, body) = server
        .delete(&format!("{REPORTS}/1"), admin.token(), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}), "{body}");

    // Gone: 404 (Dendrite: 500), and out of the list.
    assert_error(
        &server.get(&format!("{REPORTS}/1"), admin.token()).await,
        404,
        "M_NOT_FOUND",
    );
    let body = list(&server, admin, "").await;
    assert_eq!(body["total"], 19, "{body}");
    assert!(items(&body).iter().all(|x| x["id"] != 1), "{body}");
    // Deleting again or an unknown id: 404 (Dendrite: 200).
    assert_error(
        &server
            .delete(&format!("{REPORTS}/1"), admin.token(), None)
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .delete(&format!("{REPORTS}/999999"), admin.token(), None)
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .get(&format!("{REPORTS}/999999"), admin.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Non-numeric ids: 400 for DELETE too.
    for bad in ["abc", "-1", "1.0"] {
        assert_error(
            &server
                .delete(&format!("{REPORTS}/{bad}"), admin.token(), None)
                .await,
            400,
            "M_INVALID_PARAM",
        );
    }
    // The event itself is untouched.
    let (st, ev) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(&r.room2),
                enc(&r.events2[0])
            ),
            r.bob.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{ev}");
}

// ---------------------------------------------------------------------------
// Admin authorization on every admin endpoint of the contract
// ---------------------------------------------------------------------------

fn endpoints(room: &str, victim: &str, notice_user: &str) -> Vec<Endpoint> {
    let notice = json!({"user_id": notice_user, "content": {"msgtype": "m.text", "body": "hi"}});
    vec![
        Endpoint {
            method: Method::POST,
            path: format!("/_dendrite/admin/evacuateRoom/{}", enc(room)),
            body: Some(json!({})),
        },
        Endpoint {
            method: Method::POST,
            path: format!("/_dendrite/admin/evacuateUser/{}", enc(victim)),
            body: Some(json!({})),
        },
        Endpoint {
            method: Method::GET,
            path: REPORTS.into(),
            body: None,
        },
        Endpoint {
            method: Method::GET,
            path: format!("{REPORTS}/1"),
            body: None,
        },
        Endpoint {
            method: Method::POST,
            path: "/_synapse/admin/v1/send_server_notice".into(),
            body: Some(notice.clone()),
        },
        Endpoint {
            method: Method::PUT,
            path: "/_synapse/admin/v1/send_server_notice/txn-auth-1".into(),
            body: Some(notice),
        },
        Endpoint {
            method: Method::POST,
            path: "/_myelin/admin/v1/broadcast_server_notice".into(),
            body: Some(json!({"content": {"msgtype": "m.text", "body": "all"}})),
        },
        // Last, so that the GET above still finds the report.
        Endpoint {
            method: Method::DELETE,
            path: format!("{REPORTS}/1"),
            body: None,
        },
    ]
}

#[tokio::test]
async fn admin_endpoints_authorization_matrix() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let victim = server.user("victim").await;
    let former = server.admin("former").await;
    server
        .sql("UPDATE accounts SET is_deactivated = 1 WHERE user_id = '@former:test.local'")
        .await;
    let guest = server.guest().await;
    let guest_token = guest.access_token.clone();

    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &victim, &room).await;
    let ev = send_text(&server, &alice, &room, "x").await;
    assert_ok_empty(&report(&server, &victim, &room, &ev, json!({"reason": "r"})).await);

    let eps = endpoints(&room, &victim.user_id, &bob.user_id);
    for ep in &eps {
        let what = format!("{} {}", ep.method, ep.path);
        // No token: 401 M_MISSING_TOKEN, with CORS.
        let mut req = server
            .client
            .request(ep.method.clone(), server.url(&ep.path));
        if let Some(b) = &ep.body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            resp.headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("*"),
            "{what}: CORS header"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errcode"], "M_MISSING_TOKEN", "{what}: {body}");
        assert!(body["error"].is_string(), "{what}: {body}");

        let resp = call(&server, ep, Some("definitely-not-a-token")).await;
        assert_eq!(resp.0, StatusCode::UNAUTHORIZED, "{what}: {}", resp.1);
        assert_eq!(resp.1["errcode"], "M_UNKNOWN_TOKEN", "{what}: {}", resp.1);

        let resp = call(&server, ep, Some(&guest_token)).await;
        assert_eq!(resp.0, StatusCode::FORBIDDEN, "{what}: {}", resp.1);
        assert_eq!(
            resp.1["errcode"], "M_GUEST_ACCESS_FORBIDDEN",
            "{what}: {}",
            resp.1
        );

        let resp = call(&server, ep, alice.token()).await;
        assert_eq!(resp.0, StatusCode::FORBIDDEN, "{what}: {}", resp.1);
        assert_eq!(resp.1["errcode"], "M_FORBIDDEN", "{what}: {}", resp.1);
        assert!(resp.1["error"].is_string(), "{what}: {}", resp.1);

        // A deactivated admin's token is dead.
        let resp = call(&server, ep, former.token()).await;
        assert_eq!(resp.0, StatusCode::UNAUTHORIZED, "{what}: {}", resp.1);
        let code = resp.1["errcode"].as_str().unwrap_or_default();
        assert!(
            code == "M_UNKNOWN_TOKEN" || code == "M_USER_DEACTIVATED",
            "{what}: {}",
            resp.1
        );
    }

    // Nothing happened: alice and the victim are still joined, the report is
    // there, bob got no notice.
    let (st, members) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{members}");
    assert!(members["joined"][&alice.user_id].is_object(), "{members}");
    assert!(members["joined"][&victim.user_id].is_object(), "{members}");
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM event_reports").await,
        1
    );
    let (_, sync) = server
        .get("/_matrix/client/v3/sync?timeout=0", bob.token())
        .await;
    assert!(
        sync["rooms"]["invite"].as_object().unwrap().is_empty(),
        "{sync}"
    );

    // CORS preflight: 200 without a token, with the CORS headers.
    for ep in &eps {
        let resp = server
            .client
            .request(Method::OPTIONS, server.url(&ep.path))
            .header("Origin", "https://client.example")
            .header("Access-Control-Request-Method", ep.method.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "OPTIONS {}", ep.path);
        assert_eq!(
            resp.headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("*"),
            "OPTIONS {}",
            ep.path
        );
    }

    // The admin gets through everywhere.
    for ep in &eps {
        let (st, body) = call(&server, ep, admin.token()).await;
        assert_eq!(st, StatusCode::OK, "{} {}: {body}", ep.method, ep.path);
    }

    // Promotion through the database takes effect on the next request.
    server
        .sql("UPDATE accounts SET account_type = 3 WHERE user_id = '@alice:test.local'")
        .await;
    let (st, body) = server.get(REPORTS, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn event_reports_filter_wildcards_are_literal() {
    // "Substring filters": `%` and `_` are characters, not LIKE wildcards.
    let server = TestServer::start().await;
    let r = twenty_reports(&server, false).await;
    for q in [
        "user_id=%25",
        "user_id=_",
        "event_sender_user_id=%25",
        "room_id=%25",
    ] {
        let b = list(&server, &r.admin, q).await;
        assert_eq!(b["total"], 0, "?{q}: {b}");
        assert_eq!(b["event_reports"], json!([]), "?{q}: {b}");
    }
}

#[tokio::test]
async fn event_reports_filters_are_case_sensitive() {
    // Matrix ids are case-sensitive; both backends must agree.
    let server = TestServer::start().await;
    let r = twenty_reports(&server, false).await;
    let upper = r.bob.user_id.to_uppercase();
    for q in [
        format!("user_id={}", enc(&upper)),
        "user_id=BOB".to_owned(),
        format!(
            "event_sender_user_id={}",
            enc(&r.alice.user_id.to_uppercase())
        ),
    ] {
        let b = list(&server, &r.admin, &q).await;
        assert_eq!(b["total"], 0, "?{q}: {b}");
    }
    let b = list(&server, &r.admin, "user_id=bob").await;
    assert_eq!(b["total"], 20, "{b}");
}
