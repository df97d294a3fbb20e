//! Threads: `GET /_matrix/client/v1/rooms/{roomId}/threads` (order, include,
//! paging, visibility, errors), thread summaries
//! (`unsigned.m.relations.m.thread`) in every event answer, thread-aware
//! receipts (`thread_id`) and unread counts by thread
//! (`unread_thread_notifications`).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

fn threads_path(room: &str, query: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/threads?{query}", enc(room))
}

async fn threads(server: &TestServer, who: &Session, room: &str, query: &str) -> Value {
    let (st, b) = server.get(&threads_path(room, query), who.token()).await;
    assert_eq!(st, StatusCode::OK, "threads ?{query}: {b}");
    assert!(b["chunk"].is_array(), "{b}");
    b
}

/// A reply in the thread under `root`; its event id.
async fn reply(server: &TestServer, who: &Session, room: &str, root: &str, body: &str) -> String {
    let relation = json!({"rel_type": "m.thread", "event_id": root});
    let content = json!({"msgtype": "m.text", "body": body, "m.relates_to": relation});
    send_event(server, who, room, "m.room.message", content).await
}

/// The ids of a `/threads` page's roots.
fn roots(page: &Value) -> Vec<String> {
    event_ids(&page["chunk"])
}

/// The thread summary an event carries.
fn summary(event: &Value) -> &Value {
    &event["unsigned"]["m.relations"]["m.thread"]
}

/// Checks a summary: its count, its latest event (id and body, in client
/// form) and whether the viewer took part.
fn assert_summary(event: &Value, count: u64, latest: &str, latest_body: &str, participated: bool) {
    let s = summary(event);
    assert_eq!(s["count"], count, "{event}");
    assert_eq!(s["latest_event"]["event_id"], latest, "{event}");
    assert_eq!(s["latest_event"]["content"]["body"], latest_body, "{event}");
    assert_eq!(s["latest_event"]["type"], "m.room.message", "{event}");
    assert!(s["latest_event"]["unsigned"]["age"].is_u64(), "{event}");
    assert_eq!(s["current_user_participated"], participated, "{event}");
}

#[tokio::test]
async fn threads_lists_roots_by_latest_activity_with_paging_and_include() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let a = send_text(&server, &alice, &room, "root a").await;
    let b = send_text(&server, &bob, &room, "root b").await;
    let c = send_text(&server, &alice, &room, "root c (no replies)").await;
    // No thread yet.
    let page = threads(&server, &alice, &room, "").await;
    assert_eq!(page["chunk"], json!([]), "{page}");
    assert!(page.get("next_batch").is_none(), "{page}");

    reply(&server, &bob, &room, &a, "a1").await;
    let b1 = reply(&server, &alice, &room, &b, "b1").await;
    let a2 = reply(&server, &alice, &room, &a, "a2").await;

    // Newest activity first: a (a2), then b (b1); c has no thread.
    let page = threads(&server, &alice, &room, "").await;
    assert_eq!(roots(&page), vec![a.clone(), b.clone()], "{page}");
    assert!(!roots(&page).contains(&c));
    // The roots carry their summaries.
    assert_summary(&page["chunk"][0], 2, &a2, "a2", true);
    assert_summary(&page["chunk"][1], 1, &b1, "b1", true);

    // Paging: one at a time, the token leads to the next, the last page
    // has no token.
    let first = threads(&server, &alice, &room, "limit=1").await;
    assert_eq!(roots(&first), vec![a.clone()], "{first}");
    let token = first["next_batch"].as_str().expect("next_batch").to_owned();
    let second = threads(
        &server,
        &alice,
        &room,
        &format!("limit=1&from={}", enc(&token)),
    )
    .await;
    assert_eq!(roots(&second), vec![b.clone()], "{second}");
    if let Some(t) = second["next_batch"].as_str() {
        let third = threads(&server, &alice, &room, &format!("limit=1&from={}", enc(t))).await;
        assert_eq!(third["chunk"], json!([]), "{third}");
        assert!(third.get("next_batch").is_none(), "{third}");
    }

    // A new reply moves its thread to the front.
    reply(&server, &bob, &room, &b, "b2").await;
    let page = threads(&server, &alice, &room, "include=all").await;
    assert_eq!(roots(&page), vec![b.clone(), a.clone()], "{page}");

    // participated: the threads the user started or replied to.
    let carol = server.user("carol").await;
    join(&server, &carol, &room).await;
    let page = threads(&server, &carol, &room, "include=participated").await;
    assert_eq!(page["chunk"], json!([]), "{page}");
    reply(&server, &carol, &room, &a, "carol in a").await;
    let page = threads(&server, &carol, &room, "include=participated").await;
    assert_eq!(roots(&page), vec![a.clone()], "{page}");
    // Bob started b and replied in a.
    let page = threads(&server, &bob, &room, "include=participated").await;
    assert_eq!(roots(&page), vec![a.clone(), b.clone()], "{page}");
    let page = threads(&server, &carol, &room, "include=all").await;
    assert_eq!(roots(&page), vec![a.clone(), b.clone()], "{page}");
}

#[tokio::test]
async fn threads_hides_roots_history_visibility_hides_and_answers_errors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    set_history_visibility(&server, &alice, &room, "joined").await;
    let early = send_text(&server, &alice, &room, "before bob").await;
    reply(&server, &alice, &room, &early, "early reply").await;
    join(&server, &bob, &room).await;
    let late = send_text(&server, &alice, &room, "after bob").await;
    reply(&server, &alice, &room, &late, "late reply").await;

    let page = threads(&server, &alice, &room, "").await;
    assert_eq!(roots(&page), vec![late.clone(), early.clone()], "{page}");
    // Bob joined after the first root: only the second is his to see.
    let page = threads(&server, &bob, &room, "").await;
    assert_eq!(roots(&page), vec![late.clone()], "{page}");

    // Not a member: 403 (as Synapse); an unknown room too.
    let (st, b) = server.get(&threads_path(&room, ""), carol.token()).await;
    assert_error(&(st, b), 403, "M_FORBIDDEN");
    let unknown = format!(
        "!nowhere:{}",
        server.user_id("x").split(':').nth(1).unwrap()
    );
    let resp = server.get(&threads_path(&unknown, ""), alice.token()).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    // A bad include or token: 400 M_INVALID_PARAM.
    let resp = server
        .get(&threads_path(&room, "include=mine"), alice.token())
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let resp = server
        .get(&threads_path(&room, "from=nonsense"), alice.token())
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    // No token: 401.
    let resp = server.get(&threads_path(&room, ""), None).await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
    // The unstable path answers the same.
    let (st, b) = server
        .get(
            &format!(
                "/_matrix/client/unstable/org.matrix.msc3856/rooms/{}/threads",
                enc(&room)
            ),
            bob.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(roots(&b), vec![late], "{b}");
}

/// The thread root in a list of events.
fn find<'a>(events: &'a Value, id: &str) -> &'a Value {
    events
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {events}"))
        .iter()
        .find(|e| e["event_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {events}"))
}

/// GET /context/{event}; asserts 200.
async fn context(server: &TestServer, who: &Session, room: &str, event: &str) -> Value {
    let path = room_path(room, &format!("/context/{}?limit=10", enc(event)));
    let (st, ctx) = server.get(&path, who.token()).await;
    assert_eq!(st, StatusCode::OK, "{ctx}");
    ctx
}

#[tokio::test]
async fn thread_roots_carry_their_summary_in_every_answer() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = shared_room(&server, &alice, &[&bob, &carol]).await;
    let root = send_text(&server, &alice, &room, "the root").await;
    let plain = send_text(&server, &alice, &room, "no thread here").await;
    reply(&server, &bob, &room, &root, "first").await;
    let second = reply(&server, &bob, &room, &root, "second").await;

    // /event: Bob replied, Carol did not; Alice sent the root.
    let ev = get_event_ok(&server, &bob, &room, &root).await;
    assert_summary(&ev, 2, &second, "second", true);
    let ev = get_event_ok(&server, &carol, &room, &root).await;
    assert_summary(&ev, 2, &second, "second", false);
    let ev = get_event_ok(&server, &alice, &room, &root).await;
    assert_summary(&ev, 2, &second, "second", true);
    // The latest event is in the viewer's client form: Bob sent it, so
    // his device sees its transaction id.
    assert!(
        summary(&ev)["latest_event"]["unsigned"]
            .get("transaction_id")
            .is_none(),
        "{ev}"
    );
    let ev = get_event_ok(&server, &bob, &room, &root).await;
    assert!(
        summary(&ev)["latest_event"]["unsigned"]["transaction_id"].is_string(),
        "{ev}"
    );
    // An event without a thread carries none.
    let ev = get_event_ok(&server, &carol, &room, &plain).await;
    assert!(ev["unsigned"].get("m.relations").is_none(), "{ev}");

    // /messages
    let page = messages_ok(&server, &carol, &room, "dir=b&limit=50").await;
    assert_summary(find(&page["chunk"], &root), 2, &second, "second", false);
    assert!(
        find(&page["chunk"], &plain)["unsigned"]
            .get("m.relations")
            .is_none()
    );

    // /context (the event itself and around it)
    let ctx = context(&server, &carol, &room, &root).await;
    assert_summary(&ctx["event"], 2, &second, "second", false);
    let ctx = context(&server, &carol, &room, &plain).await;
    let before = find(&ctx["events_before"], &root);
    assert_summary(before, 2, &second, "second", false);

    // /sync
    let body = sync(&server, &carol, "timeout=0").await;
    let timeline = &joined_room(&body, &room)["timeline"]["events"];
    assert_summary(find(timeline, &root), 2, &second, "second", false);

    // (An event that relates to another cannot start a thread, as Synapse:
    // `relations_the_spec_refuses_on_send`; so no /relations child carries
    // a thread summary when made through the client API.)

    // Search results
    let (st, found) = server
        .post(
            "/_matrix/client/v3/search",
            carol.token(),
            json!({"search_categories": {"room_events": {"search_term": "root"}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{found}");
    let results = &found["search_categories"]["room_events"]["results"];
    let hit = results
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["result"]["event_id"] == root)
        .unwrap_or_else(|| panic!("root not found: {found}"));
    assert_summary(&hit["result"], 2, &second, "second", false);

    // Sliding sync timelines
    let (st, ss) = server
        .post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0",
            carol.token(),
            json!({"lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 20}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{ss}");
    assert_summary(
        find(&ss["rooms"][&room]["timeline"], &root),
        2,
        &second,
        "second",
        false,
    );

    // A redacted reply leaves its thread: the count and latest event go
    // back to what is left.
    redact(&server, &bob, &room, &second).await;
    let ev = get_event_ok(&server, &carol, &room, &root).await;
    assert_eq!(summary(&ev)["count"], 1, "{ev}");
    assert_eq!(
        summary(&ev)["latest_event"]["content"]["body"],
        "first",
        "{ev}"
    );
}

fn threaded_receipt(thread: &str) -> Value {
    json!({"thread_id": thread})
}

#[tokio::test]
async fn threaded_receipts_are_checked_stored_per_thread_and_synced() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let other_root = send_text(&server, &alice, &room, "other root").await;
    let in_thread = reply(&server, &alice, &room, &root, "reply").await;
    let in_other = reply(&server, &alice, &room, &other_root, "other reply").await;
    let reaction = send_event(
        &server,
        &alice,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": in_thread, "key": "+1"}}),
    )
    .await;
    let since = sync_token(&server, &bob).await;

    let post = |event: String, body: Value, ty: &'static str| {
        let path = receipt_path(&room, ty, &event);
        let server = &server;
        let bob = &bob;
        async move { server.post(&path, bob.token(), body).await }
    };
    // Valid: the thread's reply, its root, something relating to a reply;
    // the main timeline on a root (an event in no thread).
    for (event, thread) in [
        (&in_thread, &root),
        (&root, &root),
        (&reaction, &root),
        (&root, &"main".to_owned()),
        (&other_root, &"main".to_owned()),
    ] {
        let (st, b) = post(event.clone(), threaded_receipt(thread), "m.read").await;
        assert_eq!(st, StatusCode::OK, "{event} in {thread}: {b}");
    }
    let (st, b) = post(
        in_other.clone(),
        threaded_receipt(&other_root),
        "m.read.private",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // Invalid (as Synapse): the event is in another thread, a thread reply
    // is not main, empty, and any thread on m.fully_read.
    for (event, body, ty) in [
        (&in_other, threaded_receipt(&root), "m.read"),
        (&in_thread, threaded_receipt("main"), "m.read"),
        (&root, threaded_receipt(""), "m.read"),
        (&root, threaded_receipt("main"), "m.fully_read"),
        (&root, threaded_receipt("$nowhere"), "m.read"),
        (&root, threaded_receipt("nonsense"), "m.read"),
    ] {
        let resp = post(event.clone(), body.clone(), ty).await;
        assert_error_for(
            &format!("{ty} {body} on {event}"),
            &resp,
            400,
            "M_INVALID_PARAM",
        );
    }

    // Alice sees Bob's public receipts with their thread ids, each kept
    // (one per thread): the thread's on the reaction (it moved forward),
    // main's on the other root.
    let body = sync_since(&server, &alice, &since).await;
    let receipt = event_of_type(
        &joined_room(&body, &room)["ephemeral"]["events"],
        "m.receipt",
    )
    .unwrap_or_else(|| panic!("no receipt: {body}"))
    .clone();
    let content = &receipt["content"];
    assert_eq!(
        content[&reaction]["m.read"][&bob.user_id]["thread_id"],
        root.as_str(),
        "{receipt}"
    );
    assert_eq!(
        content[&other_root]["m.read"][&bob.user_id]["thread_id"], "main",
        "{receipt}"
    );
    // The private one is for Bob only.
    assert!(content.get(&in_other).is_none(), "{receipt}");
    let body = sync_since(&server, &bob, &since).await;
    let receipt = event_of_type(
        &joined_room(&body, &room)["ephemeral"]["events"],
        "m.receipt",
    )
    .unwrap_or_else(|| panic!("no receipt: {body}"))
    .clone();
    assert_eq!(
        receipt["content"][&in_other]["m.read.private"][&bob.user_id]["thread_id"],
        other_root.as_str(),
        "{receipt}"
    );
}

fn counts(room: &Value) -> (u64, u64) {
    let n = &room["unread_notifications"];
    (
        n["notification_count"]
            .as_u64()
            .unwrap_or_else(|| panic!("{room}")),
        n["highlight_count"]
            .as_u64()
            .unwrap_or_else(|| panic!("{room}")),
    )
}

fn thread_counts(room: &Value, root: &str) -> Option<(u64, u64)> {
    let n = room.get("unread_thread_notifications")?.get(root)?;
    Some((
        n["notification_count"].as_u64()?,
        n["highlight_count"].as_u64()?,
    ))
}

#[tokio::test]
async fn unread_counts_by_thread_with_the_filter_flag() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let flag = format!(
        "timeout=0&filter={}",
        enc(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#)
    );
    let root = send_text(&server, &alice, &room, "root").await;
    let plain = send_text(&server, &alice, &room, "plain").await;
    reply(&server, &alice, &room, &root, "r1").await;
    let mention = json!({
        "msgtype": "m.text",
        "body": "r2 for bob",
        "m.mentions": {"user_ids": [bob.user_id]},
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    });
    let r2 = send_event(&server, &alice, &room, "m.room.message", mention).await;
    let other = send_text(&server, &alice, &room, "other root").await;
    let o1 = reply(&server, &alice, &room, &other, "o1").await;

    // Without the flag: every event counts in the room's counts, and
    // there is no per-thread map (as before).
    let body = sync(&server, &bob, "timeout=0").await;
    let joined = joined_room(&body, &room);
    assert_eq!(counts(joined), (6, 1), "{joined}");
    assert!(
        joined.get("unread_thread_notifications").is_none(),
        "{joined}"
    );

    // With it: the main timeline has the two roots and the plain message;
    // each thread its replies (r2 mentions Bob: a highlight).
    let body = sync(&server, &bob, &flag).await;
    let joined = joined_room(&body, &room);
    assert_eq!(counts(joined), (3, 0), "{joined}");
    assert_eq!(thread_counts(joined, &root), Some((2, 1)), "{joined}");
    assert_eq!(thread_counts(joined, &other), Some((1, 0)), "{joined}");

    // A threaded receipt clears its thread only.
    let (st, b) = server
        .post(
            &receipt_path(&room, "m.read", &r2),
            bob.token(),
            threaded_receipt(&root),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let body = sync(&server, &bob, &flag).await;
    let joined = joined_room(&body, &room);
    assert_eq!(counts(joined), (3, 0), "{joined}");
    assert_eq!(thread_counts(joined, &root), None, "{joined}");
    assert_eq!(thread_counts(joined, &other), Some((1, 0)), "{joined}");

    // A main receipt clears the main timeline up to it, not the threads.
    let (st, b) = server
        .post(
            &receipt_path(&room, "m.read", &plain),
            bob.token(),
            threaded_receipt("main"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let body = sync(&server, &bob, &flag).await;
    let joined = joined_room(&body, &room);
    assert_eq!(counts(joined), (1, 0), "{joined}");
    assert_eq!(thread_counts(joined, &other), Some((1, 0)), "{joined}");

    // An unthreaded receipt reads everything up to it.
    post_receipt(&server, &bob, &room, "m.read", &o1).await;
    let body = sync(&server, &bob, &flag).await;
    let joined = joined_room(&body, &room);
    assert_eq!(counts(joined), (0, 0), "{joined}");
    assert!(
        joined.get("unread_thread_notifications").is_none(),
        "{joined}"
    );
    let body = sync(&server, &bob, "timeout=0").await;
    assert_eq!(counts(joined_room(&body, &room)), (0, 0));
}

/// GET /relations/{event} with `recurse`; asserts 200.
async fn relations(server: &TestServer, who: &Session, room: &str, rest: &str) -> Value {
    let path = format!("/_matrix/client/v1/rooms/{}/relations/{rest}", enc(room));
    let (st, b) = server.get(&path, who.token()).await;
    assert_eq!(st, StatusCode::OK, "relations {rest}: {b}");
    b
}

#[tokio::test]
async fn relations_recurse_follows_three_levels_as_synapse() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let in_thread = reply(&server, &alice, &room, &root, "in thread").await;
    let annotate = |target: &str, key: &str| json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}});
    let level2 = send_event(
        &server,
        &alice,
        &room,
        "m.reaction",
        annotate(&in_thread, "2"),
    )
    .await;
    let edit = json!({
        "msgtype": "m.text", "body": "* edited", "m.new_content": {"msgtype": "m.text", "body": "edited"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": in_thread},
    });
    let edit = send_event(&server, &alice, &room, "m.room.message", edit).await;
    let level3 = send_event(&server, &alice, &room, "m.reaction", annotate(&edit, "3")).await;
    let level4 = send_event(&server, &alice, &room, "m.reaction", annotate(&level3, "4")).await;

    // Without recurse: the direct relations only, and no recursion_depth.
    let root_enc = enc(&root);
    let direct = relations(&server, &alice, &room, &root_enc).await;
    assert_eq!(
        event_ids(&direct["chunk"]),
        vec![in_thread.clone()],
        "{direct}"
    );
    assert!(direct.get("recursion_depth").is_none(), "{direct}");
    let off = relations(&server, &alice, &room, &format!("{root_enc}?recurse=false")).await;
    assert_eq!(event_ids(&off["chunk"]), vec![in_thread.clone()], "{off}");

    // With it: three levels down, newest first; the fourth is left out.
    let all = relations(&server, &alice, &room, &format!("{root_enc}?recurse=true")).await;
    assert_eq!(
        event_ids(&all["chunk"]),
        vec![
            level3.clone(),
            edit.clone(),
            level2.clone(),
            in_thread.clone()
        ],
        "{all}"
    );
    assert!(!event_ids(&all["chunk"]).contains(&level4));
    assert_eq!(all["recursion_depth"], 3, "{all}");
    // The rel_type (and event type) filter applies at every level.
    let path = format!("{root_enc}/m.annotation?recurse=true");
    let annotations = relations(&server, &alice, &room, &path).await;
    assert_eq!(
        event_ids(&annotations["chunk"]),
        vec![level3.clone(), level2.clone()],
        "{annotations}"
    );
    assert_eq!(annotations["recursion_depth"], 3, "{annotations}");
    let path = format!("{root_enc}/m.annotation/m.reaction?recurse=true&limit=1");
    let first = relations(&server, &alice, &room, &path).await;
    assert_eq!(event_ids(&first["chunk"]), vec![level3], "{first}");
    let next = first["next_batch"].as_str().expect("next_batch");
    let path = format!(
        "{root_enc}/m.annotation/m.reaction?recurse=true&limit=1&from={}",
        enc(next)
    );
    let second = relations(&server, &alice, &room, &path).await;
    assert_eq!(event_ids(&second["chunk"]), vec![level2], "{second}");
}

/// PUT /send with any content; the answer as it is.
async fn try_send(
    server: &TestServer,
    who: &Session,
    room: &str,
    ty: &str,
    content: Value,
) -> (StatusCode, Value) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/{}/{}",
        enc(room),
        enc(ty),
        enc(&next_txn())
    );
    server.put(&path, who.token(), content).await
}

/// As Synapse: a thread cannot start from an event that relates to another
/// (400 `M_UNKNOWN`), though a reply may be a thread's root (spec v1.10);
/// an annotation needs a key of at most 500 bytes, and the same sender's
/// second annotation with the same type and key is 400
/// `M_DUPLICATE_ANNOTATION` until the first is redacted.
#[tokio::test]
async fn relations_the_spec_refuses_on_send() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let in_thread = reply(&server, &alice, &room, &root, "in the thread").await;

    // A thread from a thread reply, or from an edit: refused.
    let thread_on = |parent: &str| {
        json!({"msgtype": "m.text", "body": "nested",
               "m.relates_to": {"rel_type": "m.thread", "event_id": parent}})
    };
    let r = try_send(
        &server,
        &bob,
        &room,
        "m.room.message",
        thread_on(&in_thread),
    )
    .await;
    assert_error(&r, 400, "M_UNKNOWN");
    let edit = send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* root!", "m.new_content": {"msgtype": "m.text", "body": "root!"},
               "m.relates_to": {"rel_type": "m.replace", "event_id": root}}),
    )
    .await;
    let r = try_send(&server, &bob, &room, "m.room.message", thread_on(&edit)).await;
    assert_error(&r, 400, "M_UNKNOWN");
    // A reply may start one; so may a plain message (the root).
    let plain_reply = send_event(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "a reply",
               "m.relates_to": {"m.in_reply_to": {"event_id": root}}}),
    )
    .await;
    reply(&server, &alice, &room, &plain_reply, "thread on a reply").await;
    reply(&server, &bob, &room, &root, "another in the thread").await;

    // Annotations.
    let react = |key: Value| json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": key}});
    let first = send_event(&server, &bob, &room, "m.reaction", react(json!("👍"))).await;
    let r = try_send(&server, &bob, &room, "m.reaction", react(json!("👍"))).await;
    assert_error(&r, 400, "M_DUPLICATE_ANNOTATION");
    // Another key, another sender, another event type: fine.
    send_event(&server, &bob, &room, "m.reaction", react(json!("🎉"))).await;
    send_event(&server, &alice, &room, "m.reaction", react(json!("👍"))).await;
    send_event(&server, &bob, &room, "org.example.vote", react(json!("👍"))).await;
    // Without a key, or a key over 500 bytes.
    let r = try_send(&server, &bob, &room, "m.reaction", react(Value::Null)).await;
    assert_error(&r, 400, "M_UNKNOWN");
    let r = try_send(
        &server,
        &bob,
        &room,
        "m.reaction",
        react(json!("x".repeat(501))),
    )
    .await;
    assert_error(&r, 400, "M_UNKNOWN");
    send_event(
        &server,
        &bob,
        &room,
        "m.reaction",
        react(json!("y".repeat(500))),
    )
    .await;
    // Once the first is redacted, the same reaction can be sent again.
    let (st, b) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/{}",
                enc(&room),
                enc(&first),
                enc(&next_txn())
            ),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    send_event(&server, &bob, &room, "m.reaction", react(json!("👍"))).await;
}
