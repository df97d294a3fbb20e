//! What operators watch: Prometheus metrics on their own listener
//! (`metrics.listen`), `GET /health`, request ids (`X-Request-Id`), JSON log
//! lines and log levels reloaded on SIGHUP (the real binary).
//!
//! `promtool check metrics` (Debian's `prometheus` package) checks the
//! output after a load of every kind of request: `MYELIN_PROMTOOL`, else
//! `promtool` on `PATH` (`scripts/install-promtool`). Without it that test
//! prints SKIPPED and passes, unless `MYELIN_REQUIRE_PROMTOOL=1`
//! (`scripts/test` sets it).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{
    Session, TestServer, assert_error, create_room, enc, join, next_batch, room_path, send_text,
    spawn_poll, sync, sync_token, upload, wait_until,
};

/// A server with its metrics listener on a free port.
async fn with_metrics() -> TestServer {
    TestServer::start_with(|c| c.metrics.listen = Some("127.0.0.1:0".parse().unwrap())).await
}

/// The metrics listener's answer: content type and body.
async fn scrape_raw(server: &TestServer) -> (String, String) {
    let at = server
        .running
        .as_ref()
        .and_then(|r| r.metrics_addr)
        .expect("a metrics listener");
    let resp = server
        .client
        .get(format!("http://{at}/metrics"))
        .send()
        .await
        .expect("scrape sent");
    assert_eq!(resp.status(), StatusCode::OK);
    let ty = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    (ty, resp.text().await.expect("scrape body"))
}

/// Every sample of a scrape: (name, labels) -> value.
pub(crate) type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

pub(crate) async fn scrape(server: &TestServer) -> Samples {
    parse(&scrape_raw(server).await.1)
}

/// Parses the text format's sample lines (`name{k="v",...} value`).
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("closing brace");
                (name.to_owned(), parse_labels(rest))
            }
        };
        out.insert((name, labels), value);
    }
    out
}

/// `k="v",k2="v2"` (values may hold commas and braces, not quotes).
fn parse_labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=");
        let (value, after) = after.split_once('"').expect("closing quote");
        labels.insert(key.to_owned(), value.to_owned());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    labels
}

/// The value of `name` with exactly these labels (0 when absent: a series
/// appears with its first observation).
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .get(&(name.to_owned(), labels))
        .copied()
        .unwrap_or(0.0)
}

const SEND_ROUTE: &str = "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}";

#[tokio::test]
async fn metrics_listener_serves_the_text_format_and_is_off_by_default() {
    let plain = TestServer::start().await;
    assert!(
        plain.running.as_ref().unwrap().metrics_addr.is_none(),
        "no metrics listener unless metrics.listen is set"
    );
    // Never on the client listener.
    let resp = plain.get("/metrics", None).await;
    assert_error(&resp, 404, "M_UNRECOGNIZED");

    let server = with_metrics().await;
    let resp = server.get("/metrics", None).await;
    assert_error(&resp, 404, "M_UNRECOGNIZED");
    let (ty, text) = scrape_raw(&server).await;
    assert!(ty.starts_with("text/plain; version=0.0.4"), "{ty}");
    for family in [
        "# TYPE myelin_http_requests_total counter",
        "# TYPE myelin_http_request_duration_seconds histogram",
        "# TYPE myelin_events_persisted_total counter",
        "# TYPE myelin_event_commit_batch_size histogram",
        "# TYPE myelin_sync_long_polls gauge",
        "# TYPE myelin_sync_wakeups_total counter",
        "# TYPE myelin_cache_entries gauge",
        "# TYPE myelin_db_pool_connections gauge",
        "# TYPE myelin_search_index_lag_events gauge",
        "# TYPE myelin_push_queue_depth gauge",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_cpu_seconds_total counter",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    let samples = parse(&text);
    assert!(value(&samples, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&samples, "process_open_fds", &[]) > 0.0);
    assert!(value(&samples, "process_cpu_seconds_total", &[]) > 0.0);
    assert!(value(&samples, "myelin_db_pool_max_connections", &[]) >= 1.0);
    // The metrics listener serves nothing else.
    let at = server.running.as_ref().unwrap().metrics_addr.unwrap();
    let resp = server
        .client
        .get(format!("http://{at}/_matrix/client/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn counters_move_with_requests_labelled_by_route_template() {
    let server = with_metrics().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let before = scrape(&server).await;
    let labels = [("route", SEND_ROUTE), ("method", "PUT"), ("status", "200")];
    let sent_before = value(&before, "myelin_http_requests_total", &labels);
    let events_before = value(&before, "myelin_events_persisted_total", &[]);
    for i in 0..3 {
        send_text(&server, &alice, &room, &format!("hello {i}")).await;
    }
    // An error answer and a path no route matches.
    let resp = server
        .put(
            &room_path(&room, "/send/m.room.message/t1"),
            Some("not-a-token"),
            json!({}),
        )
        .await;
    assert_error(&resp, 401, "M_UNKNOWN_TOKEN");
    let resp = server.get("/_matrix/client/v3/no/such/thing", None).await;
    assert_error(&resp, 404, "M_UNRECOGNIZED");

    let after = scrape(&server).await;
    assert_eq!(
        value(&after, "myelin_http_requests_total", &labels) - sent_before,
        3.0
    );
    assert_eq!(
        value(
            &after,
            "myelin_http_requests_total",
            &[("route", SEND_ROUTE), ("method", "PUT"), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "myelin_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "myelin_http_request_duration_seconds_count",
            &[("route", SEND_ROUTE), ("method", "PUT")]
        ) >= 4.0
    );
    assert_eq!(
        value(&after, "myelin_events_persisted_total", &[]) - events_before,
        3.0
    );
    assert!(value(&after, "myelin_event_commit_batch_size_count", &[]) >= 1.0);
    assert!(value(&after, "myelin_event_commit_duration_seconds_count", &[]) >= 1.0);
    // Templates, never raw paths: no label names a user, room or
    // transaction.
    for (name, labels) in after.keys() {
        for v in labels.values() {
            assert!(
                !v.contains('!') && !v.contains('@') && !v.contains("/t1"),
                "{name} has a raw path label: {labels:?}"
            );
        }
    }
}

/// The sum of `name` over every label set whose `label` is `value`
/// (every series of `name` when `label` is empty).
pub(crate) fn total(samples: &Samples, name: &str, label: &str, value: &str) -> f64 {
    samples
        .iter()
        .filter(|((n, labels), _)| {
            n == name && (label.is_empty() || labels.get(label).is_some_and(|v| v == value))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The database pool's waits and every query's latency, labelled with the
/// storage function that made it; the group-commit queue's wait; cache
/// hits and misses.
#[tokio::test]
async fn database_writer_and_cache_metrics_move_with_requests() {
    let server = with_metrics().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let before = scrape(&server).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(send_text(&server, &alice, &room, &format!("hello {i}")).await);
    }
    // A new token: its first request misses the token cache, the next hit it.
    let again = server.login("alice", "password123").await;
    for _ in 0..2 {
        let (st, _) = server.whoami(again.token()).await;
        assert_eq!(st, StatusCode::OK);
    }
    // A sent event is in the event cache.
    let (st, body) = server
        .get(
            &room_path(&room, &format!("/event/{}", enc(&sent[0]))),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let after = scrape(&server).await;
    let moved = |name: &str, label: &str, v: &str| {
        total(&after, name, label, v) - total(&before, name, label, v)
    };

    assert!(moved("myelin_db_pool_acquire_seconds_count", "", "") >= 5.0);
    assert!(
        total(&after, "myelin_db_pool_connections", "", "") >= 1.0,
        "idle and in use"
    );
    assert!(moved("myelin_db_query_seconds_count", "", "") >= 5.0);
    // The group commits (one statement batch each) and the login's
    // transaction, by their storage functions.
    assert!(moved("myelin_db_query_seconds_count", "query", "batch.run_batch") >= 1.0);
    assert!(
        moved(
            "myelin_db_query_seconds_count",
            "query",
            "devices.create_session"
        ) >= 1.0
    );
    assert!(moved("myelin_db_query_seconds_sum", "query", "batch.run_batch") > 0.0);
    // Every query is labelled `module.function` of src/storage.
    for ((name, labels), _) in after.iter() {
        if let Some(q) = labels.get("query") {
            assert!(name.starts_with("myelin_db_query_seconds"), "{name}");
            let (module, function) = q.split_once('.').expect("module.function");
            assert!(!module.is_empty() && !function.is_empty(), "{q}");
            assert_ne!(q, "other", "a query outside src/storage");
        }
    }
    assert_eq!(
        moved("myelin_event_writer_queue_wait_seconds_count", "", ""),
        3.0
    );

    let hits = |c: &str| moved("myelin_cache_hits_total", "cache", c);
    let misses = |c: &str| moved("myelin_cache_misses_total", "cache", c);
    assert!(
        misses("sessions.tokens") >= 1.0,
        "the new token's first use"
    );
    assert!(
        hits("sessions.tokens") >= 2.0,
        "alice's sends, the second whoami"
    );
    assert!(hits("rooms.events") >= 1.0, "the sent event read back");
    assert!(hits("rooms.versions") + hits("rooms.heads") >= 1.0);
    assert!(
        hits("rooms.state_entries") + misses("rooms.state_entries") >= 1.0,
        "the event's visibility reads the state at it"
    );
}

/// The caches that count their lookups beside their entries: unread counts
/// (a sync resumes the room's count), presence (a state that stands costs no
/// read) and the to-device send path (recipients' device lists, send bodies).
#[tokio::test]
async fn unread_presence_and_to_device_caches_count_hits_and_misses() {
    let server = with_metrics().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "one").await;
    let before = scrape(&server).await;

    // Bob's first sync counts the room afresh and reads his presence; the
    // second resumes the count and finds his state standing.
    let since = sync_token(&server, &bob).await;
    send_text(&server, &alice, &room, "two").await;
    for txn in ["d1", "d2"] {
        let (st, body) = server
            .put(
                &format!("/_matrix/client/v3/sendToDevice/my.test/{txn}"),
                alice.token(),
                json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"n": txn}}}}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let b = sync(&server, &bob, &format!("since={}&timeout=0", enc(&since))).await;
    assert_eq!(
        b["to_device"]["events"].as_array().map(Vec::len),
        Some(2),
        "{b}"
    );
    let b = sync(&server, &bob, &format!("since={}&timeout=0", enc(&since))).await;
    assert_eq!(
        b["to_device"]["events"].as_array().map(Vec::len),
        Some(2),
        "{b}"
    );

    let after = scrape(&server).await;
    let moved =
        |name: &str, c: &str| total(&after, name, "cache", c) - total(&before, name, "cache", c);
    let hits = |c: &str| moved("myelin_cache_hits_total", c);
    let misses = |c: &str| moved("myelin_cache_misses_total", c);
    assert!(
        misses("unread.counts") >= 1.0,
        "bob's first count of the room"
    );
    assert!(hits("unread.counts") >= 1.0, "the later syncs resume it");
    assert!(
        misses("presence.known_states") >= 1.0,
        "bob's first sync reads it"
    );
    assert!(hits("presence.known_states") >= 1.0, "then it stands");
    assert_eq!(
        misses("to_device.device_lists"),
        1.0,
        "bob's devices read once"
    );
    assert_eq!(hits("to_device.device_lists"), 1.0, "the second send");
    assert!(
        hits("to_device.send_bodies") >= 2.0,
        "both sends, from memory"
    );
    assert_eq!(misses("to_device.send_bodies"), 0.0);
    assert!(
        total(
            &after,
            "myelin_cache_bytes",
            "cache",
            "to_device.send_bodies"
        ) > 0.0
    );
}

/// The search index's lag is the indexer's set of stored events not yet
/// indexed: an event held pending shows as lag until it is indexed; sent
/// messages are indexed and leave none.
#[tokio::test]
async fn search_index_lag_shows_events_waiting_for_the_indexer() {
    let server = with_metrics().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "indexed soon").await;
    let lag = |s: &Samples| value(s, "myelin_search_index_lag_events", &[]);
    wait_until(
        "the sent message is indexed",
        Duration::from_secs(10),
        || async {
            match lag(&scrape(&server).await) {
                0.0 => Ok(()),
                n => Err(format!("lag {n}")),
            }
        },
    )
    .await;
    // What the indexer notes when a batch is handed to it, and when done.
    let search = server.services().search.clone().expect("search is on");
    search.note_pending(i64::MAX - 1);
    search.note_pending(i64::MAX);
    assert_eq!(lag(&scrape(&server).await), 2.0);
    search.note_indexed(i64::MAX - 1);
    assert_eq!(lag(&scrape(&server).await), 1.0);
    search.note_indexed(i64::MAX);
    assert_eq!(lag(&scrape(&server).await), 0.0);
}

/// A push gateway that fails: each failed delivery is counted, and the
/// notification waits in the queue until the gateway takes it.
#[tokio::test]
async fn push_failures_and_the_queue_depth_are_counted() {
    let server = with_metrics().await;
    let gateway = crate::harness::FakeGateway::start().await;
    let (_alice, bob, room) = crate::push::pushed_pair(&server, &gateway, None).await;
    let before = scrape(&server).await;
    gateway.set_down(true);
    let event_id = send_text(&server, &bob, &room, "while down").await;
    assert_eq!(gateway.next_for(&event_id).await.status, 500);
    let down = scrape(&server).await;
    assert!(
        value(&down, "myelin_push_failures_total", &[])
            > value(&before, "myelin_push_failures_total", &[])
    );
    assert!(value(&down, "myelin_push_queue_depth", &[]) >= 1.0);
    gateway.set_down(false);
    while gateway.next_for(&event_id).await.status != 200 {}
    wait_until("the push queue empty", Duration::from_secs(30), || async {
        let n = value(&scrape(&server).await, "myelin_push_queue_depth", &[]);
        if n == 0.0 {
            Ok(())
        } else {
            Err(format!("{n} waiting"))
        }
    })
    .await;
}

/// A running admin job (the binary, its reindex held at its first step)
/// shows in `myelin_jobs_running` and its progress in
/// `myelin_job_processed_items`.
#[tokio::test]
async fn a_running_job_and_its_progress_are_shown() {
    let pause = tempfile::tempdir().unwrap();
    let (mut bin, (root, room)) = crate::harness::Binary::start(
        async |s: &TestServer| {
            let root = s.admin("root").await;
            let room = create_room(s, &root, json!({})).await;
            for i in 0..5 {
                send_text(s, &root, &room, &format!("jobword {i}")).await;
            }
            (root, room)
        },
        None,
    )
    .await;
    assert!(bin.terminate().await.success(), "{}", bin.log());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    bin.server.config.metrics.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    bin.spawn(Some(pause.path())).await;
    let (st, b) = bin
        .server
        .post("/_dendrite/admin/fulltext/reindex", root.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let job = b["job_id"].as_str().unwrap().to_owned();
    wait_until("the job held", Duration::from_secs(60), || async {
        match pause.path().join(&job).exists() {
            true => Ok(()),
            false => Err("not yet".to_owned()),
        }
    })
    .await;
    let text = bin
        .server
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse(&text);
    let kind = samples
        .keys()
        .find(|(n, l)| n == "myelin_job_processed_items" && l.get("job") == Some(&job))
        .and_then(|(_, l)| l.get("kind").cloned())
        .unwrap_or_else(|| panic!("no progress of {job}:\n{text}"));
    assert!(
        value(
            &samples,
            "myelin_job_processed_items",
            &[("job", job.as_str()), ("kind", kind.as_str())]
        ) >= 5.0,
        "the first batch's events: {text}"
    );
    assert_eq!(
        value(&samples, "myelin_jobs_running", &[("kind", kind.as_str())]),
        1.0
    );
    let _ = room;
}

/// Every metric the Grafana dashboard (`contrib/grafana/myelin.json`)
/// queries is one the server exports (after a load of every kind of
/// request; the job metrics appear only while a job runs).
#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let server = with_metrics().await;
    load_of_every_kind(&server).await;
    let (_, text) = scrape_raw(&server).await;
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/myelin.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("myelin_") || word.starts_with("process_") {
                    queried.insert(word.to_owned());
                }
            }
        }
    }
    assert!(queried.len() >= 20, "{queried:?}");
    for name in &queried {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(*s))
            .filter(|f| exported.contains(f))
            .unwrap_or(name.as_str());
        let only_while_a_job_runs = ["myelin_jobs_running", "myelin_job_processed_items"];
        assert!(
            exported.contains(family) || only_while_a_job_runs.contains(&family),
            "the dashboard queries {name}, which is not exported:\n{text}"
        );
    }
    // The cache hit ratio panel's series are there.
    assert!(exported.contains("myelin_cache_hits_total"), "{text}");
    assert!(exported.contains("myelin_cache_bytes"), "{text}");
}

#[tokio::test]
async fn sync_long_polls_and_wake_ups_are_counted() {
    let server = with_metrics().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = sync_token(&server, &alice).await;
    let before = scrape(&server).await;
    let poll = spawn_poll(&server, &alice, &since, 30_000);
    server.wait_for_parked_syncs(1).await;
    let parked = scrape(&server).await;
    assert!(value(&parked, "myelin_sync_long_polls", &[]) >= 1.0);
    assert!(value(&parked, "myelin_http_requests_in_flight", &[]) >= 1.0);
    send_text(&server, &alice, &room, "wake up").await;
    let (status, body, _) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body["rooms"]["join"].get(&room).is_some(), "{body}");
    let after = scrape(&server).await;
    assert!(
        value(&after, "myelin_sync_wakeups_total", &[])
            > value(&before, "myelin_sync_wakeups_total", &[])
    );
    assert_eq!(value(&after, "myelin_sync_long_polls", &[]), 0.0);
    assert_eq!(
        value(
            &after,
            "myelin_http_requests_total",
            &[
                ("route", "/_matrix/client/v3/sync"),
                ("method", "GET"),
                ("status", "200")
            ]
        ) - value(
            &before,
            "myelin_http_requests_total",
            &[
                ("route", "/_matrix/client/v3/sync"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        1.0
    );
    // Caches report their entries: the room's head is loaded.
    assert!(value(&after, "myelin_cache_entries", &[("cache", "rooms.heads")]) >= 1.0);
}

#[tokio::test]
async fn health_answers_ok_as_text() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(resp.text().await.unwrap(), "OK");
    // Only GET (and HEAD).
    let resp = server
        .request(Method::POST, "/health", None, Some(json!({})))
        .await;
    assert_error(&resp, 405, "M_UNRECOGNIZED");
}

/// PostgreSQL only: the server's database stops taking connections and its
/// sessions are cut (as when the database server goes down), /health says
/// 503; once it takes connections again, 200. (On SQLite the database is
/// a file the process holds open: there is no outage to cause.)
#[tokio::test]
async fn health_fails_while_the_database_is_unreachable() {
    if crate::harness::backend() != "postgres" {
        eprintln!("SKIPPED on SQLite: the outage is a PostgreSQL database refusing connections");
        return;
    }
    let server = TestServer::start().await;
    let admin_url = std::env::var("MYELIN_TEST_DATABASE_URL").unwrap();
    let url = server.config.database_url();
    let name = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap();
    let run = |sql: String| {
        let admin = admin.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .unwrap();
        }
    };
    let health = || async {
        server
            .client
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(health().await, StatusCode::OK);
    run(format!(
        "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false"
    ))
    .await;
    run(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
    let resp = server.get("/health", None).await;
    assert_error(&resp, 503, "M_UNKNOWN");
    run(format!(
        "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true"
    ))
    .await;
    wait_until("health back", Duration::from_secs(30), || async {
        match health().await {
            StatusCode::OK => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    admin.close().await;
}

#[tokio::test]
async fn request_ids_are_answered_and_taken_from_trusted_proxies_only() {
    let server = TestServer::start().await;
    let id_of = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .expect("X-Request-Id")
            .to_str()
            .unwrap()
            .to_owned()
    };
    let get = |id: Option<&str>| {
        let mut req = server.client.get(server.url("/_matrix/client/versions"));
        if let Some(id) = id {
            req = req.header("X-Request-Id", id);
        }
        req.send()
    };
    let a = id_of(&get(None).await.unwrap());
    let b = id_of(&get(None).await.unwrap());
    assert_eq!(a.len(), 16, "{a}");
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    assert_ne!(a, b, "each request its own id");
    // Errors carry one too.
    let resp = server
        .client
        .get(server.url("/_matrix/client/v3/account/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(id_of(&resp).len(), 16);
    // The peer is no trusted proxy: its id is not taken.
    assert_ne!(
        id_of(&get(Some("from-client")).await.unwrap()),
        "from-client"
    );

    let proxied = TestServer::start_with(|c| {
        c.trusted_proxies = vec![myelin::net::Cidr::parse("127.0.0.1/32").unwrap()];
    })
    .await;
    let get = |id: &str| {
        proxied
            .client
            .get(proxied.url("/_matrix/client/versions"))
            .header("X-Request-Id", id)
            .send()
    };
    assert_eq!(id_of(&get("proxy-7.a_B").await.unwrap()), "proxy-7.a_B");
    // Not a plain token, or too long: a new id.
    for bad in ["has space", "semi;colon", &"x".repeat(65)] {
        let id = id_of(&get(bad).await.unwrap());
        assert_ne!(id, bad);
        assert_eq!(id.len(), 16);
    }
}

/// The server's commands for a checker: every kind of request, answered.
async fn load_of_every_kind(server: &TestServer) {
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let admin = server.admin("root").await;
    let room = create_room(server, &alice, json!({"preset": "public_chat"})).await;
    join(server, &bob, &room).await;
    let since = sync_token(server, &bob).await;
    send_text(server, &alice, &room, "hello").await;
    sync(server, &bob, &format!("since={}&timeout=0", enc(&since))).await;
    let b = sync(server, &alice, "timeout=0").await;
    let _ = next_batch(&b);
    let t = |p: &str| p.to_owned();
    let requests: Vec<(Method, String, Option<Value>, &Session)> = vec![
        (Method::GET, t("/_matrix/client/versions"), None, &alice),
        (
            Method::GET,
            t("/_matrix/client/v3/account/whoami"),
            None,
            &alice,
        ),
        (
            Method::GET,
            t("/_matrix/client/v3/capabilities"),
            None,
            &alice,
        ),
        (
            Method::GET,
            room_path(&room, "/messages?dir=b"),
            None,
            &alice,
        ),
        (Method::GET, room_path(&room, "/state"), None, &alice),
        (Method::GET, room_path(&room, "/members"), None, &alice),
        (
            Method::GET,
            t("/_matrix/client/v3/joined_rooms"),
            None,
            &alice,
        ),
        (
            Method::PUT,
            room_path(&room, &format!("/typing/{}", enc(&alice.user_id))),
            Some(json!({"typing": true, "timeout": 1000})),
            &alice,
        ),
        (
            Method::PUT,
            format!(
                "/_matrix/client/v3/user/{}/account_data/m.x",
                enc(&alice.user_id)
            ),
            Some(json!({"a": 1})),
            &alice,
        ),
        (
            Method::PUT,
            format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            Some(json!({"displayname": "Alice"})),
            &alice,
        ),
        (
            Method::GET,
            t("/_matrix/client/v3/pushrules/"),
            None,
            &alice,
        ),
        (
            Method::POST,
            t("/_matrix/client/v3/keys/upload"),
            Some(json!({"one_time_keys": {"signed_curve25519:AAAA": {"key": "k"}}})),
            &alice,
        ),
        (
            Method::POST,
            t("/_matrix/client/v3/keys/query"),
            Some(json!({"device_keys": {bob.user_id.clone(): []}})),
            &alice,
        ),
        (
            Method::PUT,
            t("/_matrix/client/v3/sendToDevice/m.x/txn1"),
            Some(json!({"messages": {bob.user_id.clone(): {"*": {"a": 1}}}})),
            &alice,
        ),
        (
            Method::POST,
            t("/_matrix/client/v3/search"),
            Some(json!({"search_categories": {"room_events": {"search_term": "hello"}}})),
            &alice,
        ),
        (
            Method::POST,
            t("/_matrix/client/v3/user_directory/search"),
            Some(json!({"search_term": "bob"})),
            &alice,
        ),
        (
            Method::GET,
            t("/_matrix/client/v3/publicRooms"),
            None,
            &alice,
        ),
        (Method::GET, t("/_matrix/client/v3/devices"), None, &alice),
        (Method::GET, t("/_synapse/admin/v2/users"), None, &admin),
        (
            Method::GET,
            t("/_synapse/admin/v1/server_version"),
            None,
            &admin,
        ),
        (Method::GET, t("/_matrix/key/v2/server"), None, &alice),
        (Method::GET, t("/health"), None, &alice),
        (
            Method::DELETE,
            t("/_matrix/client/v3/no/such"),
            None,
            &alice,
        ),
        (Method::OPTIONS, t("/_matrix/client/v3/sync"), None, &alice),
    ];
    for (method, path, body, who) in requests {
        let mut req = server.client.request(method.clone(), server.url(&path));
        req = req.bearer_auth(&who.access_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(
            !resp.status().is_server_error(),
            "{method} {path}: {}",
            resp.status()
        );
    }
    upload(server, &alice, b"some bytes", Some("text/plain"), None).await;
}

#[tokio::test]
async fn promtool_accepts_the_metrics_after_every_kind_of_request() {
    let promtool = std::env::var_os("MYELIN_PROMTOOL")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::process::Command::new("promtool")
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| "promtool".into())
        });
    let Some(promtool) = promtool else {
        assert!(
            !matches!(std::env::var("MYELIN_REQUIRE_PROMTOOL").as_deref(), Ok("1")),
            "MYELIN_REQUIRE_PROMTOOL=1 but promtool was not found: set MYELIN_PROMTOOL=$(scripts/install-promtool)"
        );
        eprintln!(
            "SKIPPED promtool check: no promtool (set MYELIN_PROMTOOL=$(scripts/install-promtool), or put it on PATH)"
        );
        return;
    };
    let server = with_metrics().await;
    load_of_every_kind(&server).await;
    let (_, text) = scrape_raw(&server).await;
    assert!(
        text.contains("route=\"/_matrix/client/v3/keys/query\""),
        "{text}"
    );
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const BIN: &str = env!("CARGO_BIN_EXE_myelin");

/// The real binary on a fresh data dir with `log.format: json`, its stdout
/// and stderr in a file.
struct Logged {
    child: std::process::Child,
    dir: tempfile::TempDir,
    server: TestServer,
}

impl Logged {
    async fn start(levels: &[(&str, &str)]) -> Self {
        let mut server = TestServer::start().await;
        server.running.take().unwrap().shutdown().await;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        server.config.listen = format!("127.0.0.1:{port}").parse().unwrap();
        server.addr = server.config.listen;
        server.config.log_level = "info".into();
        server.config.log.format = myelin::config::LogFormat::Json;
        let mut logged = Self {
            child: std::process::Command::new("true").spawn().unwrap(),
            dir,
            server,
        };
        logged.write_config(levels);
        let log = std::fs::File::create(logged.log_path()).unwrap();
        logged.child = std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(logged.config_path())
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("binary starts");
        let s = &logged.server;
        wait_until("the binary answering", Duration::from_secs(60), || async {
            match s.client.get(s.url("/_matrix/client/versions")).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        logged
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("myelin.yaml")
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("log")
    }

    fn write_config(&mut self, levels: &[(&str, &str)]) {
        self.server.config.log.levels = levels
            .iter()
            .map(|(t, l)| ((*t).to_owned(), (*l).to_owned()))
            .collect();
        std::fs::write(
            self.config_path(),
            serde_norway::to_string(&self.server.config).unwrap(),
        )
        .unwrap();
    }

    /// Sends the binary SIGHUP.
    fn hangup(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Every log line so far, each parsed as JSON (asserted).
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log_path())
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect()
    }

    /// A request's id (from its answer's `X-Request-Id`).
    async fn request(&self) -> String {
        let resp = self
            .server
            .client
            .get(self.server.url("/_matrix/client/v3/account/whoami"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        resp.headers()["x-request-id"].to_str().unwrap().to_owned()
    }

    /// The log lines of the request with this id.
    fn lines_of(&self, id: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["span"]["request_id"] == id)
            .collect()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn json_log_lines_carry_the_request_id() {
    let logged = Logged::start(&[("tower_http", "debug")]).await;
    let id = logged.request().await;
    let lines = wait_until(
        "the request's log lines",
        Duration::from_secs(10),
        || async {
            let lines = logged.lines_of(&id);
            if lines.len() >= 2 {
                Ok(lines)
            } else {
                Err(format!("{lines:?}"))
            }
        },
    )
    .await;
    for l in &lines {
        assert_eq!(
            l["span"]["path"], "/_matrix/client/v3/account/whoami",
            "{l}"
        );
        assert_eq!(l["span"]["method"], "GET", "{l}");
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "finished processing request"
                && l["fields"]["status"] == 401),
        "{lines:?}"
    );
    // Lines outside requests are JSON too (start-up; `lines` parses every
    // line so far).
    wait_until("the start-up line", Duration::from_secs(10), || async {
        let lines = logged.lines();
        match lines
            .iter()
            .any(|l| l["fields"]["message"] == "Myelin is listening")
        {
            true => Ok(()),
            false => Err(format!("{lines:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads_the_log_levels() {
    let mut logged = Logged::start(&[]).await;
    // At info, a request logs nothing.
    let quiet = logged.request().await;
    // Made debug for tower_http, then SIGHUP.
    logged.write_config(&[("tower_http", "debug")]);
    let reloads = |logged: &Logged| {
        logged
            .lines()
            .iter()
            .filter(|l| l["fields"]["message"] == "log levels reloaded")
            .count()
    };
    assert_eq!(reloads(&logged), 0);
    logged.hangup();
    wait_until("the reload", Duration::from_secs(10), || async {
        match reloads(&logged) {
            1 => Ok(()),
            n => Err(format!("{n} reloads")),
        }
    })
    .await;
    let loud = logged.request().await;
    wait_until("the request's lines", Duration::from_secs(10), || async {
        match logged.lines_of(&loud).len() {
            0 => Err("none".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    assert!(
        logged.lines_of(&quiet).is_empty(),
        "logged at info: {:?}",
        logged.lines_of(&quiet)
    );
    // And back: a config without the level makes requests quiet again.
    logged.write_config(&[]);
    logged.hangup();
    wait_until("the second reload", Duration::from_secs(10), || async {
        match reloads(&logged) {
            2 => Ok(()),
            n => Err(format!("{n} reloads")),
        }
    })
    .await;
    let quiet_again = logged.request().await;
    // The answer came after the request's lines would have been written.
    assert!(logged.lines_of(&quiet_again).is_empty());
}
