//! Full-text search: `POST /_matrix/client/v3/search` (result shape, paging,
//! ordering, keys, filters, context, state, groupings, edits, redactions,
//! history visibility, errors), the admin reindex job
//! (`/_dendrite/admin/fulltext/reindex`, `/_myelin/admin/v1/jobs/{id}`), and
//! the index being rebuilt at start when it is lost or corrupt on disk.
//!
//! Where the spec leaves room, Synapse's behaviour is the reference.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const SEARCH: &str = "/_matrix/client/v3/search";
const REINDEX: &str = "/_dendrite/admin/fulltext/reindex";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A search request body around one `room_events` criteria object.
fn body(criteria: Value) -> Value {
    json!({"search_categories": {"room_events": criteria}})
}

/// POST /search with `criteria` (and `next_batch` when given).
async fn search_raw(
    server: &TestServer,
    who: &Session,
    criteria: Value,
    next_batch: Option<&str>,
) -> (StatusCode, Value) {
    let path = match next_batch {
        Some(t) => format!("{SEARCH}?next_batch={}", enc(t)),
        None => SEARCH.to_owned(),
    };
    server.post(&path, who.token(), body(criteria)).await
}

/// One page of a search; asserts 200 and the basic shape; returns `room_events`.
async fn search_page(
    server: &TestServer,
    who: &Session,
    criteria: Value,
    next_batch: Option<&str>,
) -> Value {
    let (st, b) = search_raw(server, who, criteria.clone(), next_batch).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "search {criteria} ({next_batch:?}): {b}"
    );
    let re = b["search_categories"]["room_events"].clone();
    assert!(re.is_object(), "no search_categories.room_events: {b}");
    assert!(re["results"].is_array(), "results: {re}");
    assert!(re["count"].is_u64(), "count: {re}");
    assert!(re["highlights"].is_array(), "highlights: {re}");
    for r in re["results"].as_array().unwrap() {
        assert!(r["rank"].is_number(), "rank: {r}");
        assert!(r["result"]["event_id"].is_string(), "result: {r}");
    }
    if let Some(nb) = re.get("next_batch") {
        assert!(nb.is_string(), "next_batch is a string: {re}");
    }
    re
}

/// Searches for `term` (first page only).
async fn search(server: &TestServer, who: &Session, term: &str) -> Value {
    search_page(server, who, json!({"search_term": term}), None).await
}

/// Follows `next_batch` from the first page until it runs out; returns every page.
async fn all_pages(server: &TestServer, who: &Session, criteria: Value) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..50 {
        let page = search_page(server, who, criteria.clone(), next.as_deref()).await;
        next = page["next_batch"].as_str().map(str::to_owned);
        pages.push(page);
        if next.is_none() {
            return pages;
        }
    }
    panic!("next_batch never ran out for {criteria}");
}

/// The result event ids of one page, in order.
fn ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {page}"))
        .iter()
        .map(|r| {
            r["result"]["event_id"]
                .as_str()
                .expect("event_id")
                .to_owned()
        })
        .collect()
}

/// The result event ids of every page, in order.
fn all_ids(pages: &[Value]) -> Vec<String> {
    pages.iter().flat_map(ids).collect()
}

#[track_caller]
fn assert_no_duplicates(list: &[String]) {
    let set: HashSet<&String> = list.iter().collect();
    assert_eq!(set.len(), list.len(), "duplicate results: {list:?}");
}

/// Sends an `m.replace` edit of `target` with the new body; returns its id.
async fn edit(server: &TestServer, who: &Session, room: &str, target: &str, new: &str) -> String {
    send_event(
        server,
        who,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": format!("* {new}"),
            "m.new_content": {"msgtype": "m.text", "body": new},
            "m.relates_to": {"rel_type": "m.replace", "event_id": target},
        }),
    )
    .await
}

/// POST /_dendrite/admin/fulltext/reindex; asserts 200 and returns the job id.
async fn start_reindex(server: &TestServer, admin: &Session) -> String {
    let (st, b) = server.post(REINDEX, admin.token(), json!({})).await;
    assert_eq!(st, StatusCode::OK, "reindex: {b}");
    let id = b["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id: {b}"))
        .to_owned();
    assert!(!id.is_empty(), "{b}");
    id
}

async fn job(server: &TestServer, admin: &Session, id: &str) -> Value {
    let (st, b) = server
        .get(
            &format!("/_myelin/admin/v1/jobs/{}", enc(id)),
            admin.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "job {id}: {b}");
    assert_eq!(b["job_id"], id, "{b}");
    assert_eq!(b["kind"], "reindex", "{b}");
    let status = b["status"]
        .as_str()
        .unwrap_or_else(|| panic!("status: {b}"));
    assert!(
        ["scheduled", "active", "complete", "failed"].contains(&status),
        "{b}"
    );
    assert!(b["processed"].is_u64(), "processed: {b}");
    assert!(b["started_ts"].is_i64(), "started_ts: {b}");
    assert!(b["elapsed_ms"].is_u64(), "elapsed_ms: {b}");
    b
}

/// Polls a reindex job until it is no longer scheduled or active; returns it.
async fn wait_job(server: &TestServer, admin: &Session, id: &str) -> Value {
    wait_until(&format!("job {id}"), Duration::from_secs(30), || async {
        let b = job(server, admin, id).await;
        if b["status"] == "complete" || b["status"] == "failed" {
            return Ok(b);
        }
        assert!(
            b.get("finished_ts").is_none(),
            "running job has finished_ts: {b}"
        );
        Err(b.to_string())
    })
    .await
}

/// Polls a search for `term` until it returns `want` results (the rebuild at
/// start may run in the background); returns the last first page.
async fn wait_for_hits(server: &TestServer, who: &Session, term: &str, want: usize) -> Value {
    let what = format!("search {term:?} returning {want} results");
    wait_until(&what, Duration::from_secs(15), || async {
        let (st, b) = search_raw(server, who, json!({"search_term": term}), None).await;
        if st == StatusCode::OK {
            let re = &b["search_categories"]["room_events"];
            if re["results"].as_array().map(Vec::len) == Some(want) {
                return Ok(re.clone());
            }
        }
        Err(format!("{st} {b}"))
    })
    .await
}

// ---------------------------------------------------------------------------
// Shape
// ---------------------------------------------------------------------------

#[tokio::test]
async fn results_have_the_spec_shape() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"name": "Fruit"})).await;
    let a = send_text(&server, &alice, &room, "apple banana").await;
    let b = send_text(&server, &alice, &room, "Apple cherry").await;
    send_text(&server, &alice, &room, "unrelated words").await;

    let re = search(&server, &alice, "apple").await;
    assert_eq!(set(ids(&re)), set(&[a.clone(), b.clone()]), "{re}");
    assert_eq!(re["count"], 2, "{re}");
    assert!(re.get("next_batch").is_none(), "one page only: {re}");
    let highlights: Vec<&str> = re["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().expect("highlight is a string"))
        .collect();
    assert!(highlights.contains(&"apple"), "{re}");
    for r in re["results"].as_array().unwrap() {
        let ev = &r["result"];
        assert_eq!(ev["room_id"], room.as_str(), "{ev}");
        assert_eq!(ev["type"], "m.room.message", "{ev}");
        assert_eq!(ev["sender"], alice.user_id.as_str(), "{ev}");
        assert!(ev["origin_server_ts"].is_u64(), "{ev}");
        assert!(
            ev["content"]["body"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("apple"),
            "{ev}"
        );
    }
    // Nothing else was asked for.
    assert!(re.get("state").is_none(), "{re}");
    assert!(re.get("groups").is_none(), "{re}");

    // The r0 path answers the same.
    let (st, r0) = server
        .post(
            "/_matrix/client/r0/search",
            alice.token(),
            body(json!({"search_term": "apple"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r0}");
    assert_eq!(
        set(ids(&r0["search_categories"]["room_events"])),
        set(&[a, b])
    );

    // No match: an empty list, count 0.
    let none = search(&server, &alice, "nomatchanywhere").await;
    assert_eq!(none["results"], json!([]), "{none}");
    assert_eq!(none["count"], 0, "{none}");
    assert!(none.get("next_batch").is_none(), "{none}");
}

#[tokio::test]
async fn no_context_unless_requested() {
    // Spec: `context` is "Context for result, if requested"; Synapse computes
    // it only when `event_context` is in the request (and answers `{}` else).
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "before").await;
    send_text(&server, &alice, &room, "the plum result").await;
    send_text(&server, &alice, &room, "after").await;

    let re = search(&server, &alice, "plum").await;
    let results = re["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{re}");
    let ctx = &results[0]["context"];
    assert!(
        ctx.is_null() || ctx == &json!({}),
        "context returned although event_context was not asked for: {re}"
    );
}

// ---------------------------------------------------------------------------
// Paging and ordering
// ---------------------------------------------------------------------------

#[tokio::test]
async fn next_batch_pages_through_everything_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..23 {
        sent.push(send_text(&server, &alice, &room, &format!("needle number {i}")).await);
        if i % 5 == 0 {
            send_text(&server, &alice, &room, &format!("hay {i}")).await;
        }
    }

    for order in ["rank", "recent"] {
        let pages = all_pages(
            &server,
            &alice,
            json!({"search_term": "needle", "order_by": order}),
        )
        .await;
        assert!(pages.len() > 1, "23 results fit one page? {pages:?}");
        for p in &pages {
            assert_eq!(p["count"], 23, "order {order}: {p}");
            assert!(!ids(p).is_empty(), "order {order}: empty page {p}");
        }
        let got = all_ids(&pages);
        assert_no_duplicates(&got);
        assert_eq!(
            set(&got),
            set(&sent),
            "order {order}: missing or extra results"
        );
        if order == "recent" {
            // Newest first, across pages.
            let mut newest_first = sent.clone();
            newest_first.reverse();
            assert_eq!(got, newest_first, "recent is not newest first");
        } else {
            let ranks: Vec<f64> = pages
                .iter()
                .flat_map(|p| p["results"].as_array().unwrap().clone())
                .map(|r| r["rank"].as_f64().unwrap())
                .collect();
            assert!(
                ranks.windows(2).all(|w| w[0] >= w[1]),
                "ranks not descending: {ranks:?}"
            );
        }
    }
}

#[tokio::test]
async fn rank_order_puts_the_best_match_first() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let weak = send_text(
        &server,
        &alice,
        &room,
        "a long message that mentions kiwi only once among many many other words here",
    )
    .await;
    let strong = send_text(&server, &alice, &room, "kiwi kiwi kiwi").await;
    let weak2 = send_text(
        &server,
        &alice,
        &room,
        "another long rambling message with kiwi in it and lots of filler words after",
    )
    .await;

    let re = search_page(
        &server,
        &alice,
        json!({"search_term": "kiwi", "order_by": "rank"}),
        None,
    )
    .await;
    let got = ids(&re);
    assert_eq!(got.len(), 3, "{re}");
    assert_eq!(got[0], strong, "best match not first: {re}");
    assert_eq!(set(&got), set(&[weak, strong, weak2]));
    let ranks: Vec<f64> = re["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_f64().unwrap())
        .collect();
    assert!(ranks[0] > ranks[2], "ranks: {ranks:?}");
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "ranks: {ranks:?}");

    // Default order is rank.
    let default = search(&server, &alice, "kiwi").await;
    assert_eq!(ids(&default)[0], got[0], "{default}");
}

#[tokio::test]
async fn recent_order_is_by_event_not_by_last_edit() {
    // An edit changes the text of the event it replaces, not its place in
    // the room: "recent" still lists the newer event first.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let older = send_text(&server, &alice, &room, "mango one").await;
    let newer = send_text(&server, &alice, &room, "mango two").await;
    edit(&server, &alice, &room, &older, "mango uno").await;

    let re = search_page(
        &server,
        &alice,
        json!({"search_term": "mango", "order_by": "recent"}),
        None,
    )
    .await;
    let got = ids(&re);
    assert_eq!(got.len(), 2, "{re}");
    assert_eq!(got, vec![newer, older], "recent order after an edit: {re}");
    let ts: Vec<u64> = re["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["origin_server_ts"].as_u64().unwrap())
        .collect();
    assert!(ts[0] >= ts[1], "{re}");
}

#[tokio::test]
async fn filter_limit_sets_the_page_size() {
    // RoomEventFilter.limit: "The maximum number of events to return"; Synapse
    // uses it as the page size (default 10).
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..7 {
        sent.push(send_text(&server, &alice, &room, &format!("pebble {i}")).await);
    }
    for order in ["recent", "rank"] {
        let pages = all_pages(
            &server,
            &alice,
            json!({"search_term": "pebble", "order_by": order, "filter": {"limit": 3}}),
        )
        .await;
        for p in &pages {
            assert!(
                ids(p).len() <= 3,
                "order {order}: a page of {} results with filter limit 3 (count {}, next_batch {})",
                ids(p).len(),
                p["count"],
                p["next_batch"]
            );
        }
        let got = all_ids(&pages);
        assert_no_duplicates(&got);
        assert_eq!(set(&got), set(&sent), "order {order}");
    }
}

// ---------------------------------------------------------------------------
// keys, filter
// ---------------------------------------------------------------------------

#[tokio::test]
async fn keys_choose_body_name_or_topic() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "Zebra Lounge", "topic": "all about the zebra"}),
    )
    .await;
    let msg = send_text(&server, &alice, &room, "a zebra walked by").await;

    let types = |re: &Value| -> Vec<String> {
        re["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["result"]["type"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = search(&server, &alice, "zebra").await;
    let mut all_types = types(&all);
    all_types.sort();
    assert_eq!(
        all_types,
        ["m.room.message", "m.room.name", "m.room.topic"],
        "{all}"
    );

    for (key, ty) in [
        ("content.body", "m.room.message"),
        ("content.name", "m.room.name"),
        ("content.topic", "m.room.topic"),
    ] {
        let re = search_page(
            &server,
            &alice,
            json!({"search_term": "zebra", "keys": [key]}),
            None,
        )
        .await;
        assert_eq!(types(&re), vec![ty.to_owned()], "keys [{key}]: {re}");
        if key == "content.body" {
            assert_eq!(ids(&re), vec![msg.clone()]);
        } else {
            let ev = &re["results"][0]["result"];
            assert_eq!(ev["state_key"], "", "{ev}");
            assert_eq!(ev["room_id"], room.as_str(), "{ev}");
        }
    }
    let two = search_page(
        &server,
        &alice,
        json!({"search_term": "zebra", "keys": ["content.name", "content.topic"]}),
        None,
    )
    .await;
    let mut two_types = types(&two);
    two_types.sort();
    assert_eq!(two_types, ["m.room.name", "m.room.topic"], "{two}");
}

#[tokio::test]
async fn filter_rooms_and_not_rooms_restrict_the_search() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room_a = create_room(&server, &alice, json!({})).await;
    let room_b = create_room(&server, &alice, json!({})).await;
    let in_a = send_text(&server, &alice, &room_a, "walnut in a").await;
    let in_b = send_text(&server, &alice, &room_b, "walnut in b").await;

    let both = search(&server, &alice, "walnut").await;
    assert_eq!(set(ids(&both)), set(&[in_a.clone(), in_b.clone()]));

    let only_a = search_page(
        &server,
        &alice,
        json!({"search_term": "walnut", "filter": {"rooms": [room_a]}}),
        None,
    )
    .await;
    assert_eq!(ids(&only_a), vec![in_a.clone()], "{only_a}");
    assert_eq!(only_a["count"], 1, "{only_a}");

    let not_a = search_page(
        &server,
        &alice,
        json!({"search_term": "walnut", "filter": {"not_rooms": [room_a]}}),
        None,
    )
    .await;
    assert_eq!(ids(&not_a), vec![in_b.clone()], "{not_a}");

    let with_limit = search_page(
        &server,
        &alice,
        json!({"search_term": "walnut", "filter": {"rooms": [room_a, room_b], "limit": 5}}),
        None,
    )
    .await;
    assert_eq!(set(ids(&with_limit)), set(&[in_a, in_b]), "{with_limit}");
}

#[tokio::test]
async fn filter_naming_a_room_the_user_is_not_in_returns_nothing() {
    // Synapse intersects the filter's rooms with the user's joined rooms:
    // 200 with no results, never the other room's events.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let bobs = create_room(&server, &bob, json!({"preset": "private_chat"})).await;
    send_text(&server, &bob, &bobs, "hazelnut secret").await;
    let alices = create_room(&server, &alice, json!({})).await;
    let mine = send_text(&server, &alice, &alices, "hazelnut mine").await;

    let re = search_page(
        &server,
        &alice,
        json!({"search_term": "hazelnut", "filter": {"rooms": [bobs]}}),
        None,
    )
    .await;
    assert_eq!(re["results"], json!([]), "{re}");
    assert_eq!(re["count"], 0, "{re}");

    let mixed = search_page(
        &server,
        &alice,
        json!({"search_term": "hazelnut", "filter": {"rooms": [bobs, alices]}}),
        None,
    )
    .await;
    assert_eq!(ids(&mixed), vec![mine], "{mixed}");
}

// ---------------------------------------------------------------------------
// event_context, include_state, groupings
// ---------------------------------------------------------------------------

#[tokio::test]
async fn event_context_returns_events_around_and_profiles() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.member",
        &alice.user_id,
        json!({"membership": "join", "displayname": "Alice A"}),
    )
    .await;
    let mut m = Vec::new();
    for i in 1..=7 {
        let text = if i == 4 {
            "the coconut target".to_owned()
        } else {
            format!("filler {i}")
        };
        m.push(send_text(&server, &alice, &room, &text).await);
    }

    let re = search_page(
        &server,
        &alice,
        json!({
            "search_term": "coconut",
            "event_context": {"before_limit": 2, "after_limit": 1, "include_profile": true},
        }),
        None,
    )
    .await;
    assert_eq!(ids(&re), vec![m[3].clone()], "{re}");
    let ctx = &re["results"][0]["context"];
    assert!(ctx.is_object(), "no context: {re}");
    // Nearest first, as /context's events_before (and Synapse).
    assert_eq!(
        event_ids(&ctx["events_before"]),
        vec![m[2].clone(), m[1].clone()],
        "{ctx}"
    );
    assert_eq!(bodies(&ctx["events_before"]), ["filler 3", "filler 2"]);
    assert_eq!(event_ids(&ctx["events_after"]), vec![m[4].clone()], "{ctx}");
    assert_eq!(bodies(&ctx["events_after"]), ["filler 5"]);
    let start = ctx["start"]
        .as_str()
        .unwrap_or_else(|| panic!("start: {ctx}"));
    let end = ctx["end"].as_str().unwrap_or_else(|| panic!("end: {ctx}"));
    assert_eq!(
        ctx["profile_info"][&alice.user_id]["displayname"], "Alice A",
        "{ctx}"
    );

    // start and end are /messages tokens that continue from the context.
    let back = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=1&from={}", enc(start)),
    )
    .await;
    assert_eq!(event_ids(&back["chunk"]), vec![m[0].clone()], "{back}");
    let fwd = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=1&from={}", enc(end)),
    )
    .await;
    assert_eq!(event_ids(&fwd["chunk"]), vec![m[5].clone()], "{fwd}");

    // Without include_profile: no profile_info; limits of 0: empty lists.
    let re = search_page(
        &server,
        &alice,
        json!({
            "search_term": "coconut",
            "event_context": {"before_limit": 0, "after_limit": 3},
        }),
        None,
    )
    .await;
    let ctx = &re["results"][0]["context"];
    assert_eq!(ctx["events_before"], json!([]), "{ctx}");
    assert_eq!(
        event_ids(&ctx["events_after"]),
        vec![m[4].clone(), m[5].clone(), m[6].clone()],
        "{ctx}"
    );
    assert!(ctx.get("profile_info").is_none(), "{ctx}");
}

#[tokio::test]
async fn profile_info_is_historic() {
    // Spec: profile_info is "the historic profile information of the users
    // that sent the events returned"; Synapse reads it from the state at the
    // last event of the context, not the current state.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let member = |name: &str| json!({"membership": "join", "displayname": name});
    set_state(
        &server,
        &alice,
        &room,
        "m.room.member",
        &alice.user_id,
        member("Alice Before"),
    )
    .await;
    send_text(&server, &alice, &room, "the durian moment").await;
    for i in 0..3 {
        send_text(&server, &alice, &room, &format!("filler {i}")).await;
    }
    set_state(
        &server,
        &alice,
        &room,
        "m.room.member",
        &alice.user_id,
        member("Alice After"),
    )
    .await;

    let re = search_page(
        &server,
        &alice,
        json!({
            "search_term": "durian",
            "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": true},
        }),
        None,
    )
    .await;
    let ctx = &re["results"][0]["context"];
    assert_eq!(
        ctx["profile_info"][&alice.user_id]["displayname"], "Alice Before",
        "{re}"
    );
}

#[tokio::test]
async fn include_state_returns_the_state_of_result_rooms() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "Stateful", "topic": "topic text"}),
    )
    .await;
    let other = create_room(&server, &alice, json!({"name": "Other"})).await;
    send_text(&server, &alice, &room, "cashew here").await;
    send_text(&server, &alice, &other, "nothing relevant").await;

    let re = search_page(
        &server,
        &alice,
        json!({"search_term": "cashew", "include_state": true}),
        None,
    )
    .await;
    let state = re["state"]
        .as_object()
        .unwrap_or_else(|| panic!("no state: {re}"));
    assert_eq!(
        state.keys().cloned().collect::<Vec<_>>(),
        vec![room.clone()],
        "{re}"
    );
    let events = &state[&room];
    for (ty, key) in [
        ("m.room.create", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", alice.user_id.as_str()),
    ] {
        let ev = events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == ty && e["state_key"] == key)
            .unwrap_or_else(|| panic!("{ty} missing from state: {events}"));
        assert_eq!(ev["room_id"], room.as_str(), "{ev}");
        assert!(ev["event_id"].is_string(), "{ev}");
    }
    let name = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .unwrap();
    assert_eq!(name["content"]["name"], "Stateful");

    let without = search(&server, &alice, "cashew").await;
    assert!(without.get("state").is_none(), "{without}");
}

#[tokio::test]
async fn groupings_by_room_and_sender() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room_a = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room_a).await;
    let room_b = create_room(&server, &alice, json!({})).await;
    let a1 = send_text(&server, &alice, &room_a, "almond one").await;
    let a2 = send_text(&server, &alice, &room_a, "almond two").await;
    let b1 = send_text(&server, &bob, &room_a, "almond from bob").await;
    let c1 = send_text(&server, &alice, &room_b, "almond elsewhere").await;

    let re = search_page(
        &server,
        &alice,
        json!({
            "search_term": "almond",
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
        }),
        None,
    )
    .await;
    assert_eq!(
        set(ids(&re)),
        set(&[a1.clone(), a2.clone(), b1.clone(), c1.clone()]),
        "{re}"
    );
    let groups = &re["groups"];
    let group_ids = |g: &Value| -> BTreeSet<String> {
        g["results"]
            .as_array()
            .unwrap_or_else(|| panic!("group results: {g}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let by_room = groups["room_id"]
        .as_object()
        .unwrap_or_else(|| panic!("no room_id groups: {re}"));
    assert_eq!(by_room.len(), 2, "{re}");
    assert_eq!(
        group_ids(&by_room[&room_a]),
        set(&[a1.clone(), a2.clone(), b1.clone()])
    );
    assert_eq!(group_ids(&by_room[&room_b]), set(std::slice::from_ref(&c1)));
    for g in by_room.values() {
        assert!(g["order"].is_number(), "order: {g}");
    }
    let by_sender = groups["sender"]
        .as_object()
        .unwrap_or_else(|| panic!("no sender groups: {re}"));
    assert_eq!(by_sender.len(), 2, "{re}");
    assert_eq!(group_ids(&by_sender[&alice.user_id]), set(&[a1, a2, c1]));
    assert_eq!(group_ids(&by_sender[&bob.user_id]), set(&[b1]));

    // Only the grouping asked for.
    let only_room = search_page(
        &server,
        &alice,
        json!({"search_term": "almond", "groupings": {"group_by": [{"key": "room_id"}]}}),
        None,
    )
    .await;
    assert!(only_room["groups"]["room_id"].is_object(), "{only_room}");
    assert!(only_room["groups"].get("sender").is_none(), "{only_room}");
}

#[tokio::test]
async fn every_word_must_match_and_case_does_not_matter() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let both = send_text(&server, &alice, &room, "Hello big World").await;
    send_text(&server, &alice, &room, "hello alone").await;
    send_text(&server, &alice, &room, "world alone").await;
    let accented = send_text(&server, &alice, &room, "Café au lait").await;

    assert_eq!(
        ids(&search(&server, &alice, "hello world").await),
        vec![both.clone()]
    );
    assert_eq!(
        ids(&search(&server, &alice, "WORLD HELLO").await),
        vec![both]
    );
    assert_eq!(ids(&search(&server, &alice, "café").await), vec![accented]);
}

#[tokio::test]
async fn odd_search_terms_do_not_fail() {
    // Whatever the term, a 200 (never a 500), and never events the user
    // may not see.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let bobs = create_room(&server, &bob, json!({"preset": "private_chat"})).await;
    send_text(&server, &bob, &bobs, "bob private stuff").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(
        &server,
        &alice,
        &room,
        "alice: stuff (and more) \"quoted\" *stars*",
    )
    .await;

    let long = "stuff ".repeat(2000);
    let terms = [
        "",
        " ",
        "*",
        "\"unclosed",
        "(",
        ")",
        "AND OR NOT",
        "-stuff",
        "+stuff",
        "stuff~2",
        "stuff^3",
        "[a TO z]",
        "room_id:*",
        "event_id:*",
        "key:*",
        "stream:*",
        "text:*",
        &format!("room_id:{bobs}"),
        "event_id:$x",
        "text:stuff",
        "stream:>0",
        "\\",
        "😀",
        "alice:",
        long.as_str(),
    ];
    let mut failures = Vec::new();
    for term in terms {
        let (st, b) = search_raw(&server, &alice, json!({"search_term": term}), None).await;
        let short: String = term.chars().take(40).collect();
        if st != StatusCode::OK {
            failures.push(format!("term {short:?}: {st} {b}"));
            continue;
        }
        let re = &b["search_categories"]["room_events"];
        for r in re["results"].as_array().unwrap_or_else(|| panic!("{b}")) {
            assert_eq!(
                r["result"]["room_id"],
                room.as_str(),
                "term {short:?} returned an event from bob's private room: {b}"
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// Edits and redactions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn edit_replaces_the_searchable_text() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let orig = send_text(&server, &alice, &room, "original papaya text").await;
    let edit_id = edit(&server, &alice, &room, &orig, "corrected guava text").await;

    let old = search(&server, &alice, "papaya").await;
    assert_eq!(old["results"], json!([]), "old text still found: {old}");
    let new = search(&server, &alice, "guava").await;
    let got = ids(&new);
    assert_eq!(got.len(), 1, "{new}");
    assert!(
        got[0] == orig || got[0] == edit_id,
        "hit is neither the original nor the edit: {new}"
    );
    // Words the edit kept are found once, not twice.
    let kept = search(&server, &alice, "text").await;
    assert_eq!(ids(&kept).len(), 1, "{kept}");
}

#[tokio::test]
async fn edit_by_another_sender_is_ignored() {
    // Spec (m.replace): the replacement and the original must have the same
    // sender, else the replacement is ignored.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let orig = send_text(&server, &alice, &room, "alice says lemon").await;
    edit(&server, &bob, &room, &orig, "bob says lime").await;

    let lemon = search(&server, &alice, "lemon").await;
    assert_eq!(
        ids(&lemon),
        vec![orig.clone()],
        "original text lost: {lemon}"
    );
    let lime = search(&server, &alice, "lime").await;
    assert!(
        !ids(&lime).contains(&orig),
        "another sender's edit changed alice's message: {lime}"
    );
}

#[tokio::test]
async fn edit_from_another_room_is_ignored() {
    // Spec (m.replace): the replacement and the original must be in the same
    // room. Bob, who is not in alice's room, must not change what her
    // messages are found by.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let alices = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let orig = send_text(&server, &alice, &alices, "alice writes tangerine").await;
    let bobs = create_room(&server, &bob, json!({})).await;
    edit(&server, &bob, &bobs, &orig, "bob writes clementine").await;
    // Alice's own edit sent from another room of hers is ignored too.
    let other = create_room(&server, &alice, json!({})).await;
    edit(&server, &alice, &other, &orig, "alice writes satsuma").await;

    let re = search(&server, &alice, "tangerine").await;
    assert_eq!(ids(&re), vec![orig.clone()], "original text lost: {re}");
    for term in ["clementine", "satsuma"] {
        let re = search(&server, &alice, term).await;
        assert!(
            !ids(&re).contains(&orig),
            "a cross-room edit changed the message's text ({term}): {re}"
        );
    }
}

#[tokio::test]
async fn redacting_an_edit_removes_its_text() {
    // A redacted replacement is as if never sent: its text must not be
    // searchable any more, and the original is shown (and found) again.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let orig = send_text(&server, &alice, &room, "original quince").await;
    let edit_id = edit(&server, &alice, &room, &orig, "regretted persimmon").await;
    assert_eq!(ids(&search(&server, &alice, "persimmon").await).len(), 1);
    redact(&server, &alice, &room, &edit_id).await;

    let mut failures = Vec::new();
    let re = search(&server, &alice, "persimmon").await;
    if re["results"] != json!([]) {
        failures.push(format!(
            "the redacted edit's text still finds {:?}",
            ids(&re)
        ));
    }
    let back = search(&server, &alice, "quince").await;
    if ids(&back) != vec![orig.clone()] {
        failures.push(format!(
            "the original text finds {:?}, not [{orig}]",
            ids(&back)
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn redacted_events_are_not_returned() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"topic": "pistachio talk"})).await;
    let keep = send_text(&server, &alice, &room, "pistachio keep").await;
    let gone = send_text(&server, &alice, &room, "pistachio gone").await;
    assert_eq!(ids(&search(&server, &alice, "pistachio").await).len(), 3);
    redact(&server, &alice, &room, &gone).await;

    let re = search_page(
        &server,
        &alice,
        json!({"search_term": "pistachio", "keys": ["content.body"]}),
        None,
    )
    .await;
    assert_eq!(ids(&re), vec![keep], "{re}");
    assert_eq!(re["count"], 1, "{re}");
    let only_gone = search(&server, &alice, "gone").await;
    assert_eq!(only_gone["results"], json!([]), "{only_gone}");
    assert_eq!(only_gone["count"], 0, "{only_gone}");
}

// ---------------------------------------------------------------------------
// Visibility
// ---------------------------------------------------------------------------

#[tokio::test]
async fn user_not_in_the_room_finds_nothing() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let private = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    send_text(&server, &alice, &private, "secret macadamia").await;
    let public = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("world_readable")}),
    )
    .await;
    send_text(&server, &alice, &public, "public macadamia").await;

    assert_eq!(ids(&search(&server, &alice, "macadamia").await).len(), 2);
    let re = search(&server, &bob, "macadamia").await;
    assert_eq!(re["results"], json!([]), "{re}");
    assert_eq!(re["count"], 0, "{re}");

    // Invited but not joined: still nothing.
    invite(&server, &alice, &private, &bob.user_id).await;
    let re = search(&server, &bob, "secret").await;
    assert_eq!(re["results"], json!([]), "{re}");
}

#[tokio::test]
async fn joined_visibility_hides_events_from_before_the_join() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("joined")}),
    )
    .await;
    let early: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(send_text(&server, &alice, &room, &format!("early kumquat {i}")).await);
        }
        v
    };
    join(&server, &bob, &room).await;
    let late = send_text(&server, &alice, &room, "late kumquat").await;

    let re = search(&server, &bob, "kumquat").await;
    assert_eq!(ids(&re), vec![late.clone()], "{re}");
    let early_only = search(&server, &bob, "early").await;
    assert_eq!(early_only["results"], json!([]), "{early_only}");
    // The same through every page and both orders.
    for order in ["rank", "recent"] {
        let got = all_ids(
            &all_pages(
                &server,
                &bob,
                json!({"search_term": "kumquat", "order_by": order}),
            )
            .await,
        );
        assert_eq!(got, vec![late.clone()], "order {order}");
    }
    // Alice, there from the start, sees everything.
    let mut all = early;
    all.push(late);
    assert_eq!(
        set(ids(&search(&server, &alice, "kumquat").await)),
        set(&all)
    );
}

#[tokio::test]
async fn shared_visibility_shows_history_to_a_new_member() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("shared")}),
    )
    .await;
    let early = send_text(&server, &alice, &room, "early apricot").await;
    join(&server, &bob, &room).await;
    let late = send_text(&server, &alice, &room, "late apricot").await;
    assert_eq!(
        set(ids(&search(&server, &bob, "apricot").await)),
        set(&[early, late])
    );
}

#[tokio::test]
async fn events_after_leaving_are_not_returned() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": hv_state("shared")}),
    )
    .await;
    join(&server, &bob, &room).await;
    let seen = send_text(&server, &alice, &room, "lychee while bob is here").await;
    assert_eq!(ids(&search(&server, &bob, "lychee").await), vec![seen]);
    leave(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "lychee after bob left").await;

    let re = search(&server, &bob, "lychee").await;
    assert!(
        !re["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["result"]["content"]["body"] == "lychee after bob left"),
        "event sent after the leave was returned: {re}"
    );
    let after = search(&server, &bob, "left").await;
    assert_eq!(after["results"], json!([]), "{after}");
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn search_without_token_is_401() {
    let server = TestServer::start().await;
    let resp = server
        .post(SEARCH, None, body(json!({"search_term": "x"})))
        .await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
    let resp = server
        .post(
            SEARCH,
            Some("not-a-token"),
            body(json!({"search_term": "x"})),
        )
        .await;
    assert_error(&resp, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "something").await;

    // No search_categories.
    let resp = server.post(SEARCH, alice.token(), json!({})).await;
    assert_error(&resp, 400, "M_BAD_JSON");
    // search_categories of the wrong type.
    let resp = server
        .post(SEARCH, alice.token(), json!({"search_categories": []}))
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    // No search_term.
    let resp = server
        .post(
            SEARCH,
            alice.token(),
            body(json!({"keys": ["content.body"]})),
        )
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    // Not JSON at all.
    let resp = server
        .request_raw(Method::POST, SEARCH, alice.token(), "{not json")
        .await;
    assert_error(&resp, 400, "M_NOT_JSON");

    // A next_batch this server never issued.
    for bad in ["garbage", "-1", "1.5", "%%%"] {
        let (st, b) = search_raw(
            &server,
            &alice,
            json!({"search_term": "something"}),
            Some(bad),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "next_batch {bad:?}: {b}");
        assert!(
            b["errcode"].as_str().is_some_and(|c| c.starts_with("M_")),
            "{b}"
        );
        assert!(b["error"].is_string(), "{b}");
    }
}

#[tokio::test]
async fn invalid_order_by_or_group_key_is_400() {
    // The spec allows only "recent" and "rank", and grouping by "room_id" or
    // "sender"; Synapse rejects anything else with 400.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "something").await;

    let mut failures = Vec::new();
    for criteria in [
        json!({"search_term": "something", "order_by": "sideways"}),
        json!({"search_term": "something", "groupings": {"group_by": [{"key": "color"}]}}),
    ] {
        let (st, b) = search_raw(&server, &alice, criteria.clone(), None).await;
        if st != StatusCode::BAD_REQUEST || !b["errcode"].is_string() || !b["error"].is_string() {
            failures.push(format!(
                "{criteria}: {st} {}",
                b.to_string().chars().take(120).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn search_disabled_is_400() {
    let server = TestServer::start_with(|c| c.search.enabled = false).await;
    let alice = server.user("alice").await;
    let admin = server.admin("root").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "unsearchable").await;

    let (st, b) = search_raw(
        &server,
        &alice,
        json!({"search_term": "unsearchable"}),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["errcode"].as_str().is_some_and(|c| c.starts_with("M_")),
        "{b}"
    );
    assert!(b["error"].is_string(), "{b}");

    let (st, b) = server.post(REINDEX, admin.token(), json!({})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "reindex with search off: {b}");
    assert!(
        b["errcode"].as_str().is_some_and(|c| c.starts_with("M_")),
        "{b}"
    );
    assert!(b["error"].is_string(), "{b}");
    // Still admin-only when disabled.
    let resp = server.post(REINDEX, alice.token(), json!({})).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------
// Admin reindex
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reindex_is_admin_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let resp = server.post(REINDEX, None, json!({})).await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
    let resp = server.post(REINDEX, alice.token(), json!({})).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    let resp = server.get(REINDEX, alice.token()).await;
    assert_error(&resp, 403, "M_FORBIDDEN");

    let admin = server.admin("root").await;
    let id = start_reindex(&server, &admin).await;
    // The job is admin-only too.
    let resp = server
        .get(
            &format!("/_myelin/admin/v1/jobs/{}", enc(&id)),
            alice.token(),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    wait_job(&server, &admin, &id).await;
}

#[tokio::test]
async fn unknown_job_is_404() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let resp = server
        .get("/_myelin/admin/v1/jobs/nosuchjob", admin.token())
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn reindex_rebuilds_the_index_as_a_job() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let named = create_room(
        &server,
        &alice,
        json!({"name": "Orchard", "topic": "fruit trees"}),
    )
    .await;
    let plain = create_room(&server, &alice, json!({})).await;
    let mut fig = Vec::new();
    for i in 0..30 {
        let room = if i % 2 == 0 { &named } else { &plain };
        fig.push(send_text(&server, &alice, room, &format!("fig number {i}")).await);
    }
    // Events that are not searchable.
    send_event(
        &server,
        &alice,
        &plain,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": fig[1], "key": "fig"}}),
    )
    .await;
    let redacted = send_text(&server, &alice, &named, "fig to be redacted").await;
    redact(&server, &alice, &named, &redacted).await;

    let before = all_ids(&all_pages(&server, &alice, json!({"search_term": "fig"})).await);
    assert_no_duplicates(&before);
    assert_eq!(set(&before), set(&fig));

    // Some more right before the reindex (not yet committed to the index).
    for i in 30..35 {
        fig.push(send_text(&server, &alice, &named, &format!("fig number {i}")).await);
    }

    let id = start_reindex(&server, &admin).await;
    // A second request while the first runs gets the same job.
    let id2 = start_reindex(&server, &admin).await;
    let after_second = now_ms();
    let done = wait_job(&server, &admin, &id).await;
    if id2 != id {
        // Only allowed if the first one had finished by then.
        assert!(
            done["finished_ts"]
                .as_i64()
                .is_some_and(|t| t <= after_second),
            "a second reindex started while {id} ran: {done}"
        );
        let done2 = wait_job(&server, &admin, &id2).await;
        assert_eq!(done2["status"], "complete", "{done2}");
    }
    assert_eq!(done["status"], "complete", "{done}");
    assert!(done["finished_ts"].is_i64(), "{done}");
    assert!(
        done["finished_ts"].as_i64().unwrap() >= done["started_ts"].as_i64().unwrap(),
        "{done}"
    );
    assert!(done.get("error").is_none(), "{done}");
    // 35 messages + the name + the topic; not the redacted message, the
    // redaction, the reaction, nor any membership or other state.
    assert_eq!(done["processed"], 37, "{done}");

    let pages = all_pages(&server, &alice, json!({"search_term": "fig"})).await;
    for p in &pages {
        assert_eq!(p["count"], 35, "{p}");
    }
    let after = all_ids(&pages);
    assert_no_duplicates(&after);
    assert_eq!(set(&after), set(&fig));
    assert_eq!(
        ids(&search_page(
            &server,
            &alice,
            json!({"search_term": "orchard", "keys": ["content.name"]}),
            None
        )
        .await)
        .len(),
        1
    );
    assert_eq!(ids(&search(&server, &alice, "trees").await).len(), 1);
    assert_eq!(
        search(&server, &alice, "redacted").await["results"],
        json!([])
    );

    // New messages are indexed as usual after the rebuild.
    let newer = send_text(&server, &alice, &plain, "fig after reindex").await;
    let got = all_ids(&all_pages(&server, &alice, json!({"search_term": "fig"})).await);
    assert_no_duplicates(&got);
    assert_eq!(got.len(), 36);
    assert!(got.contains(&newer));

    // Dendrite's GET form starts a job too.
    let (st, b) = server.get(REINDEX, admin.token()).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let id3 = b["job_id"].as_str().expect("job_id").to_owned();
    let done3 = wait_job(&server, &admin, &id3).await;
    assert_eq!(done3["status"], "complete", "{done3}");
    assert_eq!(done3["processed"], 38, "{done3}");
}

async fn send_many(
    server: &TestServer,
    who: &Session,
    room: &str,
    text: &str,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(send_text(server, who, room, &format!("{text} {i}")).await);
    }
    ids
}

/// Sends `n` messages "`text` i" into each of three rooms, the rooms in
/// parallel; returns their ids.
async fn send_in_parallel(
    server: &TestServer,
    who: &Session,
    rooms: &[String],
    text: &str,
    n: usize,
) -> Vec<String> {
    let (a, b, c) = tokio::join!(
        send_many(server, who, &rooms[0], text, n),
        send_many(server, who, &rooms[1], text, n),
        send_many(server, who, &rooms[2], text, n),
    );
    [a, b, c].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_while_messages_arrive_loses_and_duplicates_nothing() {
    // Best effort: messages sent (to several rooms at once) while the rebuild
    // runs must end up in the index exactly once. If the rebuild is too fast
    // to overlap them, nothing timing-dependent is checked.
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let mut rooms = Vec::new();
    for _ in 0..3 {
        rooms.push(create_room(&server, &alice, json!({})).await);
    }
    let mut sent = send_in_parallel(&server, &alice, &rooms, "acorn early", 50).await;
    let id = start_reindex(&server, &admin).await;
    let (more, done) = tokio::join!(
        send_in_parallel(&server, &alice, &rooms, "acorn late", 15),
        wait_job(&server, &admin, &id)
    );
    assert_eq!(done["status"], "complete", "{done}");
    sent.extend(more);

    let pages = all_pages(&server, &alice, json!({"search_term": "acorn"})).await;
    let got = all_ids(&pages);
    assert_no_duplicates(&got);
    let (want, have) = (set(&sent), set(&got));
    assert!(
        want == have,
        "missing: {:?}, extra: {:?}",
        want.difference(&have).collect::<Vec<_>>(),
        have.difference(&want).collect::<Vec<_>>()
    );
    assert_eq!(pages[0]["count"], sent.len(), "{}", pages[0]["count"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_during_the_start_rebuild_are_indexed_once() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut rooms = Vec::new();
    for _ in 0..3 {
        rooms.push(create_room(&server, &alice, json!({})).await);
    }
    let mut sent = send_in_parallel(&server, &alice, &rooms, "chestnut early", 50).await;
    if let Some(r) = server.running.take() {
        r.shutdown().await;
    }
    std::fs::remove_dir_all(server.config.data_dir.join("search")).unwrap();
    server.restart().await;
    // At once, while the rebuild (in the background) may still run.
    sent.extend(send_in_parallel(&server, &alice, &rooms, "chestnut late", 15).await);

    let want = set(&sent);
    wait_until("the rebuild at start", Duration::from_secs(15), || async {
        let got = all_ids(&all_pages(&server, &alice, json!({"search_term": "chestnut"})).await);
        assert_no_duplicates(&got);
        let have = set(&got);
        if want == have {
            return Ok(());
        }
        Err(format!(
            "missing {:?}, extra {:?}",
            want.difference(&have).collect::<Vec<_>>(),
            have.difference(&want).collect::<Vec<_>>()
        ))
    })
    .await;
}

#[tokio::test]
async fn reindex_keeps_edits_and_redactions() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let orig = send_text(&server, &alice, &room, "original papaya").await;
    let edit_id = edit(&server, &alice, &room, &orig, "edited guava").await;
    let gone = send_text(&server, &alice, &room, "secret durian").await;
    redact(&server, &alice, &room, &gone).await;
    let kept = send_text(&server, &alice, &room, "plain durian").await;

    let id = start_reindex(&server, &admin).await;
    let done = wait_job(&server, &admin, &id).await;
    assert_eq!(done["status"], "complete", "{done}");

    assert_eq!(
        search(&server, &alice, "papaya").await["results"],
        json!([])
    );
    let guava = ids(&search(&server, &alice, "guava").await);
    assert_eq!(guava.len(), 1, "{guava:?}");
    assert!(guava[0] == orig || guava[0] == edit_id, "{guava:?}");
    assert_eq!(ids(&search(&server, &alice, "durian").await), vec![kept]);
    assert_eq!(
        search(&server, &alice, "secret").await["results"],
        json!([])
    );
}

// ---------------------------------------------------------------------------
// Index lost or corrupt on disk
// ---------------------------------------------------------------------------

/// Starts a server with a few searchable messages; returns it, the user and
/// the message ids (all containing "durian").
async fn server_with_messages() -> (TestServer, Session, Vec<String>) {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"topic": "tropical"})).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send_text(&server, &alice, &room, &format!("durian {i}")).await);
    }
    assert_eq!(
        set(ids(&search(&server, &alice, "durian").await)),
        set(&sent)
    );
    (server, alice, sent)
}

/// Stops the server, lets `damage` act on the index directory, starts it
/// again, and checks that search finds the old messages (and new ones).
async fn damage_and_restart(damage: impl FnOnce(&std::path::Path)) {
    let (mut server, alice, mut sent) = server_with_messages().await;
    let dir = server.config.data_dir.join("search");
    assert!(dir.is_dir(), "no index at {}", dir.display());
    if let Some(r) = server.running.take() {
        r.shutdown().await;
    }
    damage(&dir);
    server.restart().await;

    let re = wait_for_hits(&server, &alice, "durian", sent.len()).await;
    let got = ids(&re);
    assert_no_duplicates(&got);
    assert_eq!(set(&got), set(&sent), "{re}");
    assert_eq!(ids(&search(&server, &alice, "tropical").await).len(), 1);

    // And the index keeps working.
    let room = search(&server, &alice, "tropical").await["results"][0]["result"]["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sent.push(send_text(&server, &alice, &room, "durian after restart").await);
    let got = all_ids(&all_pages(&server, &alice, json!({"search_term": "durian"})).await);
    assert_no_duplicates(&got);
    assert_eq!(set(&got), set(&sent));
}

fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect()
}

#[tokio::test]
async fn index_survives_a_plain_restart() {
    damage_and_restart(|_| {}).await;
}

#[tokio::test]
async fn deleted_index_is_rebuilt_at_start() {
    damage_and_restart(|dir| std::fs::remove_dir_all(dir).unwrap()).await;
}

#[tokio::test]
async fn emptied_index_directory_is_rebuilt_at_start() {
    damage_and_restart(|dir| {
        for f in files_in(dir) {
            std::fs::remove_file(f).unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn garbage_index_files_are_rebuilt_at_start() {
    damage_and_restart(|dir| {
        let files = files_in(dir);
        assert!(!files.is_empty());
        for f in files {
            std::fs::write(f, b"this is not a tantivy index file").unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn corrupt_segment_files_are_rebuilt_at_start() {
    // meta.json intact, every segment file overwritten.
    damage_and_restart(|dir| {
        let mut n = 0;
        for f in files_in(dir) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "meta.json" {
                continue;
            }
            let len = std::fs::metadata(&f).unwrap().len() as usize;
            std::fs::write(&f, vec![0xA5u8; len.max(16)]).unwrap();
            n += 1;
        }
        assert!(n > 0, "no segment files in {}", dir.display());
    })
    .await;
}

#[tokio::test]
async fn truncated_meta_is_rebuilt_at_start() {
    damage_and_restart(|dir| {
        std::fs::write(dir.join("meta.json"), b"{\"segments\": [").unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_index_of_an_older_layout_is_rebuilt_at_start() {
    // The layout before documents were keyed by stream position: the event
    // id indexed as a term. Opening it with today's schema fails, so the
    // server starts a fresh index and rebuilds it from the events.
    damage_and_restart(|dir| {
        use tantivy::schema::{INDEXED, STORED, STRING, Schema, TEXT};
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let mut b = Schema::builder();
        let event_id = b.add_text_field("event_id", STRING | STORED);
        b.add_text_field("room_id", STRING | STORED);
        b.add_text_field("key", STRING);
        let text = b.add_text_field("text", TEXT);
        b.add_i64_field("stream", INDEXED | STORED);
        let index = tantivy::Index::create_in_dir(dir, b.build()).unwrap();
        let mut w: tantivy::IndexWriter = index.writer(15_000_000).unwrap();
        w.add_document(tantivy::doc!(event_id => "$old", text => "durian"))
            .unwrap();
        w.commit().unwrap();
    })
    .await;
}

#[tokio::test]
async fn reindex_ignores_edits_the_live_index_ignores() {
    // A rebuild finds what an edit edits in the database: the same rules as
    // live indexing apply (same sender, an unredacted message, not an edit).
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let lemon = send_text(&server, &alice, &room, "alice says lemon").await;
    edit(&server, &bob, &room, &lemon, "bob says lime").await;
    let first = send_text(&server, &alice, &room, "first fig").await;
    let fig_edit = edit(&server, &alice, &room, &first, "second fig").await;
    edit(
        &server,
        &alice,
        &room,
        &fig_edit,
        "an edit of an edit: kiwi",
    )
    .await;
    let gone = send_text(&server, &alice, &room, "redacted plum").await;
    redact(&server, &alice, &room, &gone).await;
    edit(
        &server,
        &alice,
        &room,
        &gone,
        "edited after redaction: mango",
    )
    .await;

    let before = |term: &'static str| {
        let server = &server;
        let alice = &alice;
        async move { ids(&search(server, alice, term).await) }
    };
    let mut expected = Vec::new();
    for term in ["lemon", "lime", "fig", "second", "kiwi", "plum", "mango"] {
        expected.push((term, before(term).await));
    }
    assert_eq!(expected[0].1, vec![lemon.clone()]);
    assert!(expected[1].1.is_empty() && expected[4].1.is_empty() && expected[6].1.is_empty());

    let id = start_reindex(&server, &admin).await;
    let done = wait_job(&server, &admin, &id).await;
    assert_eq!(done["status"], "complete", "{done}");
    for (term, want) in expected {
        assert_eq!(before(term).await, want, "{term} after the reindex");
    }
}
