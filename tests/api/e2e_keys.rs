//! Device keys (sytest 41end-to-end-keys): `POST /keys/upload`,
//! `/keys/query`, `/keys/claim`, `GET /keys/changes`, and `/sync`'s
//! `device_one_time_keys_count`, `device_unused_fallback_key_types` and
//! `device_lists`.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// Rows of `table` for the session's device.
async fn key_rows(server: &TestServer, table: &str, who: &Session) -> i64 {
    server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM {table} WHERE user_id = '{}' AND device_id = '{}'",
            sql_quote(&who.user_id),
            sql_quote(&who.device_id)
        ))
        .await
}

/// Rows of the session's device in each key table.
async fn all_key_rows(server: &TestServer, who: &Session) -> i64 {
    let mut n = 0;
    for table in ["e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"] {
        n += key_rows(server, table, who).await;
    }
    n
}

/// Uploads device keys, one one-time key and one fallback key for `who`.
async fn upload_everything(server: &TestServer, who: &Session) {
    upload_keys(
        server,
        who,
        json!({
            "device_keys": own_device_keys(who),
            "one_time_keys": {"signed_curve25519:AAAA": {"key": "k1", "signatures": {}}},
            "fallback_keys": {"signed_curve25519:FFFF": {"key": "f1", "fallback": true, "signatures": {}}},
        }),
    )
    .await;
}

/// sytest "Can upload device keys", "Can query device keys using POST",
/// "Can query specific device keys using POST", "query for user with no
/// keys returns empty key dict": the counts per algorithm; the stored keys
/// come back with `unsigned` (the display name only when the device has
/// one); a user of another server is a failure.
#[tokio::test]
async fn upload_then_query() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let bob = server.user("bob").await;
    // A device logged in without a display name.
    let alice = server.login("alice", "password123").await;
    let keys = own_device_keys(&alice);
    let b = upload_keys(
        &server,
        &alice,
        json!({
            "device_keys": keys,
            "one_time_keys": {
                "my_algorithm:my_id_1": "KIhHVkAQi8r41aPNql2zTqQsInpFa8XdslQLC8F8BHc",
                "signed_curve25519:A1": {"key": "a1", "signatures": {}},
                "signed_curve25519:A2": {"key": "a2", "signatures": {}},
            }
        }),
    )
    .await;
    assert_eq!(
        b,
        json!({"one_time_key_counts": {"my_algorithm": 1, "signed_curve25519": 2}})
    );

    for devices in [json!([]), json!([alice.device_id])] {
        let q = query_keys(&server, &bob, json!({alice.user_id.clone(): devices})).await;
        let mut expected = keys.clone();
        expected["unsigned"] = json!({});
        assert_eq!(
            q["device_keys"],
            json!({alice.user_id.clone(): {alice.device_id.clone(): expected}}),
            "{q}"
        );
        assert!(q.get("failures").is_none_or(|f| f == &json!({})), "{q}");
    }
    // Another device named: nothing of alice's; a user without keys: {}.
    let q = query_keys(
        &server,
        &bob,
        json!({alice.user_id.clone(): ["NOPE"], bob.user_id.clone(): [], "@x:elsewhere.example": []}),
    )
    .await;
    assert_eq!(
        q["device_keys"],
        json!({alice.user_id.clone(): {}, bob.user_id.clone(): {}}),
        "{q}"
    );
    assert_eq!(
        q["failures"]["elsewhere.example"]["status"],
        json!(503),
        "{q}"
    );

    // A named device shows its name.
    let (st, _) = server
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            alice.token(),
            json!({"display_name": "Alice's phone"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let q = query_keys(&server, &bob, json!({alice.user_id.clone(): []})).await;
    assert_eq!(
        q["device_keys"][&alice.user_id][&alice.device_id]["unsigned"],
        json!({"device_display_name": "Alice's phone"})
    );
    // A name holding the packed read's separators is read as rows instead.
    let odd = "phone\u{1f}one\u{1e}two";
    let (st, _) = server
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            alice.token(),
            json!({"display_name": odd}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let q = query_keys(&server, &bob, json!({alice.user_id.clone(): []})).await;
    let mut expected = keys.clone();
    expected["unsigned"] = json!({"device_display_name": odd});
    assert_eq!(
        q["device_keys"],
        json!({alice.user_id.clone(): {alice.device_id.clone(): expected}}),
        "{q}"
    );
}

/// sytest "Rejects invalid device keys", "Should reject keys claiming to
/// belong to a different user"; and device keys without algorithms, or
/// different from those stored: each a 400, and nothing of the request is
/// stored. (The self-signature is not checked, as Synapse: see
/// `placeholder_signatures_are_accepted_as_synapse_does`.)
#[tokio::test]
async fn bad_device_keys_are_rejected_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let otk = json!({"signed_curve25519:A1": {"key": "a1", "signatures": {}}});
    let mut no_algorithms = own_device_keys(&alice);
    no_algorithms["algorithms"] = json!([]);
    let cases = [
        (
            "required fields missing",
            json!({"user_id": alice.user_id, "device_id": alice.device_id}),
            "M_BAD_JSON",
        ),
        (
            "another user's device",
            signed_device_keys("@bob:localhost", "BOBDEV"),
            "M_INVALID_PARAM",
        ),
        (
            "another device of hers",
            signed_device_keys(&alice.user_id, "OTHER"),
            "M_INVALID_PARAM",
        ),
        ("no algorithms", no_algorithms, "M_INVALID_PARAM"),
    ];
    for (what, device_keys, errcode) in cases {
        let resp = try_upload_keys(
            &server,
            &alice,
            json!({"device_keys": device_keys, "one_time_keys": otk}),
        )
        .await;
        assert_error_for(what, &resp, 400, errcode);
    }
    let bad_otk = try_upload_keys(
        &server,
        &alice,
        json!({"one_time_keys": {"signed_curve25519:A1": 42}}),
    )
    .await;
    assert_error_for(
        "a one-time key that is a number",
        &bad_otk,
        400,
        "M_BAD_JSON",
    );
    assert_eq!(all_key_rows(&server, &alice).await, 0);

    // The same keys again are fine; different ones are not.
    let keys = own_device_keys(&alice);
    upload_keys(&server, &alice, json!({"device_keys": keys})).await;
    upload_keys(&server, &alice, json!({"device_keys": keys})).await;
    let resp = try_upload_keys(
        &server,
        &alice,
        json!({"device_keys": own_device_keys(&alice), "one_time_keys": otk}),
    )
    .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    assert_eq!(key_rows(&server, "e2e_one_time_keys", &alice).await, 0);
    let q = query_keys(&server, &alice, json!({alice.user_id.clone(): []})).await;
    assert_eq!(
        q["device_keys"][&alice.user_id][&alice.device_id]["keys"],
        keys["keys"]
    );
}

/// A one-time key id uploaded again with the same content changes nothing;
/// with other content it is 400 (and nothing of that upload is stored).
/// Two fallback keys of one algorithm in one upload are 400.
#[tokio::test]
async fn one_time_key_ids_are_idempotent_and_fallback_keys_one_per_algorithm() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let first = json!({"one_time_keys": {"signed_curve25519:A1": {"key": "a1", "signatures": {}}}});
    upload_keys(&server, &alice, first.clone()).await;
    let again = upload_keys(&server, &alice, first).await;
    assert_eq!(
        again,
        json!({"one_time_key_counts": {"signed_curve25519": 1}})
    );
    let resp = try_upload_keys(
        &server,
        &alice,
        json!({"one_time_keys": {
            "signed_curve25519:A1": {"key": "b3RoZXI", "signatures": {}},
            "signed_curve25519:A2": {"key": "a2", "signatures": {}},
        }}),
    )
    .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    assert_eq!(key_rows(&server, "e2e_one_time_keys", &alice).await, 1);
    let resp = try_upload_keys(
        &server,
        &alice,
        json!({"fallback_keys": {
            "signed_curve25519:F1": {"key": "f1", "fallback": true, "signatures": {}},
            "signed_curve25519:F2": {"key": "f2", "fallback": true, "signatures": {}},
        }}),
    )
    .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    assert_eq!(key_rows(&server, "e2e_fallback_keys", &alice).await, 0);
}

/// `n` one-time keys of `algorithm`, ids `{prefix}{i}`.
fn otks(algorithm: &str, prefix: &str, range: std::ops::Range<usize>) -> Value {
    let keys: serde_json::Map<String, Value> = range
        .map(|i| {
            (
                format!("{algorithm}:{prefix}{i:04}"),
                json!({"key": format!("k{i}"), "signatures": {}}),
            )
        })
        .collect();
    Value::Object(keys)
}

/// Two uploads of one device's one-time keys at the same time cannot both
/// pass the 500 cap: each is checked against what the other stored (here
/// 300 + 300 keys, on several devices at once: one upload of each pair is
/// 400 `M_TOO_LARGE`, and no device holds more than 500).
#[tokio::test]
async fn concurrent_uploads_cannot_pass_the_one_time_key_cap_together() {
    let server = TestServer::start().await;
    let mut devices = Vec::new();
    for name in ["u1", "u2", "u3", "u4"] {
        devices.push(server.user(name).await);
    }
    let uploads = devices.iter().flat_map(|who| {
        ["A", "B"].map(|prefix| {
            try_upload_keys(
                &server,
                who,
                json!({"one_time_keys": otks("signed_curve25519", prefix, 0..300)}),
            )
        })
    });
    let answers = futures_util::future::join_all(uploads).await;
    for (who, pair) in devices.iter().zip(answers.chunks(2)) {
        let ok = pair.iter().filter(|(st, _)| *st == StatusCode::OK).count();
        assert_eq!(ok, 1, "exactly one of the pair is stored: {pair:?}");
        let refused = pair.iter().find(|(st, _)| *st != StatusCode::OK).unwrap();
        assert_error(refused, 400, "M_TOO_LARGE");
        assert_eq!(key_rows(&server, "e2e_one_time_keys", who).await, 300);
    }
}

/// A device holds at most 500 one-time keys of an algorithm (Synapse's
/// `MAX_ONE_TIME_KEYS_PER_ALGORITHM_PER_DEVICE`): an upload that would take
/// it over is 400 `M_TOO_LARGE` and stores nothing of itself (its device
/// keys included); keys it holds already do not count again, and each
/// algorithm has its own 500.
#[tokio::test]
async fn a_device_holds_at_most_500_one_time_keys_per_algorithm() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let b = upload_keys(
        &server,
        &alice,
        json!({"one_time_keys": otks("signed_curve25519", "A", 0..499)}),
    )
    .await;
    assert_eq!(
        b,
        json!({"one_time_key_counts": {"signed_curve25519": 499}})
    );
    let over = try_upload_keys(
        &server,
        &alice,
        json!({"device_keys": own_device_keys(&alice),
               "one_time_keys": otks("signed_curve25519", "B", 0..2)}),
    )
    .await;
    assert_error(&over, 400, "M_TOO_LARGE");
    let message = over.1["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("501") && message.contains("500"),
        "{message}"
    );
    assert_eq!(key_rows(&server, "e2e_one_time_keys", &alice).await, 499);
    assert_eq!(key_rows(&server, "e2e_device_keys", &alice).await, 0);
    // The same 499 again plus one new: 500 held, allowed.
    let mut keys = otks("signed_curve25519", "A", 0..499);
    keys.as_object_mut().unwrap().extend(
        otks("signed_curve25519", "B", 0..1)
            .as_object()
            .unwrap()
            .clone(),
    );
    let b = upload_keys(&server, &alice, json!({"one_time_keys": keys})).await;
    assert_eq!(
        b,
        json!({"one_time_key_counts": {"signed_curve25519": 500}})
    );
    // Another algorithm counts on its own.
    upload_keys(
        &server,
        &alice,
        json!({"one_time_keys": otks("curve25519", "C", 0..500)}),
    )
    .await;
    let over = try_upload_keys(
        &server,
        &alice,
        json!({"one_time_keys": otks("curve25519", "D", 0..1)}),
    )
    .await;
    assert_error(&over, 400, "M_TOO_LARGE");
    // A claim frees room for one more.
    let bob = server.user("bob").await;
    let (st, c) = server
        .post(
            "/_matrix/client/v3/keys/claim",
            bob.token(),
            json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    upload_keys(
        &server,
        &alice,
        json!({"one_time_keys": otks("signed_curve25519", "E", 0..1)}),
    )
    .await;
    assert_eq!(key_rows(&server, "e2e_one_time_keys", &alice).await, 1000);
}

/// sytest "Can claim one time key using POST": the key is handed out once,
/// a second claim gets nothing. With a fallback key, a claim once the
/// one-time keys are gone gets the fallback key (every time: it stays),
/// marked used in `/sync`; a new fallback key is unused again.
#[tokio::test]
async fn claim_one_time_keys_then_the_fallback_key() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    upload_keys(
        &server,
        &alice,
        json!({"one_time_keys": {"test_algorithm:test_id": "iDBFAwt4T0ntzaZXwEevrKfmelFUMj8KS6n6kYhBPzU"}}),
    )
    .await;
    let want = json!({alice.user_id.clone(): {alice.device_id.clone(): "test_algorithm"}});
    let c = claim_keys(&server, &bob, want.clone()).await;
    assert_eq!(
        c["one_time_keys"],
        json!({alice.user_id.clone(): {alice.device_id.clone(): {
            "test_algorithm:test_id": "iDBFAwt4T0ntzaZXwEevrKfmelFUMj8KS6n6kYhBPzU"}}}),
        "{c}"
    );
    let c = claim_keys(&server, &bob, want).await;
    assert_eq!(c["one_time_keys"], json!({}), "{c}");

    let s = sync(&server, &alice, "timeout=0").await;
    assert_eq!(
        s["device_one_time_keys_count"],
        json!({"signed_curve25519": 0})
    );
    assert_eq!(s["device_unused_fallback_key_types"], json!([]));
    upload_everything(&server, &alice).await;
    let s = sync(&server, &alice, "timeout=0").await;
    assert_eq!(
        s["device_one_time_keys_count"],
        json!({"signed_curve25519": 1})
    );
    assert_eq!(
        s["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    let want = json!({alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}});
    let key_of = |c: &Value| c["one_time_keys"][&alice.user_id][&alice.device_id].clone();
    let c = claim_keys(&server, &bob, want.clone()).await;
    assert_eq!(
        key_of(&c),
        json!({"signed_curve25519:AAAA": {"key": "k1", "signatures": {}}})
    );
    let fallback =
        json!({"signed_curve25519:FFFF": {"key": "f1", "fallback": true, "signatures": {}}});
    for _ in 0..2 {
        let c = claim_keys(&server, &bob, want.clone()).await;
        assert_eq!(key_of(&c), fallback);
    }
    let s = sync(&server, &alice, "timeout=0").await;
    assert_eq!(
        s["device_one_time_keys_count"],
        json!({"signed_curve25519": 0})
    );
    assert_eq!(s["device_unused_fallback_key_types"], json!([]));
    // The same fallback key again stays used; a new one is unused.
    let same = json!({"fallback_keys": fallback});
    upload_keys(&server, &alice, same).await;
    let s = sync(&server, &alice, "timeout=0").await;
    assert_eq!(s["device_unused_fallback_key_types"], json!([]));
    upload_keys(
        &server,
        &alice,
        json!({"fallback_keys": {"signed_curve25519:GGGG": {"key": "g1", "fallback": true, "signatures": {}}}}),
    )
    .await;
    let s = sync(&server, &alice, "timeout=0").await;
    assert_eq!(
        s["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // A user of another server is a failure; an unknown device is left out.
    let c = claim_keys(
        &server,
        &bob,
        json!({"@x:elsewhere.example": {"D": "signed_curve25519"},
               alice.user_id.clone(): {"NOPE": "signed_curve25519"}}),
    )
    .await;
    assert_eq!(c["one_time_keys"], json!({}), "{c}");
    assert_eq!(
        c["failures"]["elsewhere.example"]["status"],
        json!(503),
        "{c}"
    );
}

/// Concurrent claims never hand out one key twice: 30 claims for 20 keys
/// get the 20 keys once each, and the other 10 the fallback key.
#[tokio::test]
async fn concurrent_claims_hand_out_each_key_once() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let otks: serde_json::Map<String, Value> = (0..20)
        .map(|i| {
            (
                format!("signed_curve25519:K{i:02}"),
                json!({"key": format!("k{i}"), "signatures": {}}),
            )
        })
        .collect();
    upload_keys(
        &server,
        &alice,
        json!({"one_time_keys": otks,
               "fallback_keys": {"signed_curve25519:FB": {"key": "fb", "fallback": true, "signatures": {}}}}),
    )
    .await;
    let want = json!({alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}});
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let server = server.clone();
        let token = bob.access_token.clone();
        let want = want.clone();
        tasks.push(tokio::spawn(async move {
            let (st, b) = server
                .post(
                    "/_matrix/client/v3/keys/claim",
                    Some(&token),
                    json!({"one_time_keys": want}),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{b}");
            b
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        let b = t.await.unwrap();
        let keys = b["one_time_keys"][&alice.user_id][&alice.device_id]
            .as_object()
            .unwrap_or_else(|| panic!("no key: {b}"))
            .clone();
        assert_eq!(keys.len(), 1, "{b}");
        got.extend(keys.keys().cloned());
    }
    let fallback = got.iter().filter(|k| *k == "signed_curve25519:FB").count();
    let distinct: BTreeSet<&String> = got
        .iter()
        .filter(|k| *k != "signed_curve25519:FB")
        .collect();
    assert_eq!((distinct.len(), fallback), (20, 10), "{got:?}");
}

/// Incremental `/sync` `device_lists` and `/keys/changes` (sytest "Local
/// device key changes appear in v2 /sync", "Local new device changes
/// appear in v2 /sync", "Local delete device changes appear in v2 /sync",
/// "Local update device changes appear in v2 /sync", "Local device key
/// changes appear in /keys/changes", "Get left notifs in sync and
/// /keys/changes when other user leaves"): each change of bob's devices
/// reaches alice, who shares a room with him; carol, who shares none,
/// never sees him; bob's leaving makes him `left`.
#[tokio::test]
async fn device_list_changes_reach_those_who_share_a_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let carol_since = sync_token(&server, &carol).await;

    let mut since = sync_token(&server, &alice).await;
    let changed_for_alice = |body: &Value| body["device_lists"]["changed"].clone();
    // Keys uploaded.
    let start = since.clone();
    upload_keys(&server, &bob, json!({"device_keys": own_device_keys(&bob)})).await;
    let b = sync_since(&server, &alice, &since).await;
    assert_eq!(changed_for_alice(&b), json!([bob.user_id]), "{b}");
    since = next_batch(&b);
    let ch = key_changes(&server, &alice, &start, &since).await;
    assert_eq!(ch, json!({"changed": [bob.user_id], "left": []}));
    // A new device, a renamed device, a deleted device.
    let phone = server.login("bob", "password123").await;
    let b = sync_since(&server, &alice, &since).await;
    assert_eq!(changed_for_alice(&b), json!([bob.user_id]), "{b}");
    since = next_batch(&b);
    let (st, _) = server
        .put(
            &format!("/_matrix/client/v3/devices/{}", phone.device_id),
            bob.token(),
            json!({"display_name": "wibble"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let b = sync_since(&server, &alice, &since).await;
    assert_eq!(changed_for_alice(&b), json!([bob.user_id]), "{b}");
    since = next_batch(&b);
    let (st, _) = server
        .post("/_matrix/client/v3/logout", phone.token(), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let b = sync_since(&server, &alice, &since).await;
    assert_eq!(changed_for_alice(&b), json!([bob.user_id]), "{b}");
    since = next_batch(&b);
    // Nothing changed: nothing listed.
    send_text(&server, &alice, &room, "hello").await;
    let b = sync_since(&server, &alice, &since).await;
    assert_eq!(b["device_lists"], json!({"changed": [], "left": []}), "{b}");
    since = next_batch(&b);

    // Carol shares no room: she never hears of bob.
    let c = sync_since(&server, &carol, &carol_since).await;
    assert_eq!(c["device_lists"], json!({"changed": [], "left": []}), "{c}");

    // Bob leaves: he is `left` for alice, in /sync and /keys/changes.
    let before_leave = since.clone();
    leave(&server, &bob, &room).await;
    let b = sync_since(&server, &alice, &since).await;
    assert_eq!(b["device_lists"]["left"], json!([bob.user_id]), "{b}");
    assert_eq!(changed_for_alice(&b), json!([]), "{b}");
    let ch = key_changes(&server, &alice, &before_leave, &next_batch(&b)).await;
    assert_eq!(ch, json!({"changed": [], "left": [bob.user_id]}));
    // Rejoining makes him `changed` again (alice must refetch his keys).
    let since = next_batch(&b);
    join(&server, &bob, &room).await;
    let b = sync_since(&server, &alice, &since).await;
    assert_eq!(changed_for_alice(&b), json!([bob.user_id]), "{b}");
}

/// sytest "Users receive device_list updates for their own devices": a
/// new device of one's own is `changed` for oneself. A parked sync wakes
/// for it.
#[tokio::test]
async fn own_device_changes_wake_a_parked_sync() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let alice = server.user("alice").await;
    let since = sync_token(&server, &alice).await;
    let poll = {
        let server = server.clone();
        let token = alice.access_token.clone();
        tokio::spawn(async move {
            server
                .get(
                    &format!(
                        "/_matrix/client/v3/sync?since={}&timeout=10000",
                        enc(&since)
                    ),
                    Some(&token),
                )
                .await
        })
    };
    server.wait_for_parked_syncs(1).await;
    server.login("alice", "password123").await;
    let (st, b) = poll.await.unwrap();
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["device_lists"]["changed"], json!([alice.user_id]), "{b}");
}

/// Malformed requests are 400: `/keys/changes` with tokens that are not
/// sync tokens, `/keys/query` and `/keys/claim` naming something that is
/// not a user id or with the wrong JSON types, an upload with a key id
/// that is not `algorithm:key_id`; without a token, 401.
#[tokio::test]
async fn malformed_key_requests_are_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let cases = [
        ("query", json!({"device_keys": {"not-a-user": []}})),
        (
            "query",
            json!({"device_keys": {alice.user_id.clone(): "DEV"}}),
        ),
        ("query", json!({})),
        (
            "claim",
            json!({"one_time_keys": {"not-a-user": {"D": "signed_curve25519"}}}),
        ),
        (
            "claim",
            json!({"one_time_keys": {alice.user_id.clone(): ["D"]}}),
        ),
        ("upload", json!({"one_time_keys": {"nocolon": "k"}})),
        ("upload", json!({"device_keys": "keys"})),
    ];
    for (endpoint, body) in cases {
        let path = format!("/_matrix/client/v3/keys/{endpoint}");
        let resp = server.post(&path, alice.token(), body.clone()).await;
        assert_error_for(&format!("{endpoint} {body}"), &resp, 400, "M_BAD_JSON");
    }
    let resp = server
        .post("/_matrix/client/v3/keys/upload", None, json!({}))
        .await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
    let resp = server
        .get(
            "/_matrix/client/v3/keys/changes?from=nope&to=s1",
            alice.token(),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
}

/// A user (`u0`, in a room with `observer`) with cross-signing keys and a
/// second device `d` that has everything a device can leave behind: device
/// keys, a one-time and a fallback key, a signature of its keys by the
/// self-signing key, its own signature of the master key, and a to-device
/// message from `observer` waiting.
async fn fully_keyed_device(
    server: &TestServer,
    observer: &Session,
    localpart: &str,
) -> (Session, Session) {
    let u0 = server.user(localpart).await;
    shared_room(server, observer, &[&u0]).await;
    let d = server.login(localpart, "password123").await;
    let u = u0.user_id.as_str();
    let (master, ssk, device) = (
        SigningKey::generate(),
        SigningKey::generate(),
        SigningKey::generate(),
    );
    let master_key = master.cross_signing_key(u, "master");
    let body = json!({
        "master_key": master_key,
        "self_signing_key": master.sign(u, &ssk.cross_signing_key(u, "self_signing")),
    });
    let r = upload_signing_keys(server, &u0, body).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let unsigned = json!({
        "user_id": u,
        "device_id": d.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("ed25519:{}", d.device_id): device.public,
            format!("curve25519:{}", d.device_id): "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
        },
    });
    upload_keys(
        server,
        &d,
        json!({
            "device_keys": device.sign_as_device(u, &d.device_id, &unsigned),
            "one_time_keys": {"signed_curve25519:AAAA": {"key": "k1", "signatures": {}}},
            "fallback_keys": {"signed_curve25519:FFFF": {"key": "f1", "fallback": true, "signatures": {}}},
        }),
    )
    .await;
    let signatures = json!({ u: {
        &d.device_id: ssk.sign(u, &unsigned),
        &master.public: device.sign_as_device(u, &d.device_id, &master_key),
    }});
    let b = upload_signatures(server, &d, signatures).await;
    assert!(b.get("failures").is_none_or(|f| f == &json!({})), "{b}");
    let message = json!({u: {&d.device_id: {"secret": 1}}});
    send_to_device(server, observer, "m.test", &next_txn(), message).await;
    (u0, d)
}

/// What device `d` has left in the database: rows of its keys, of the
/// cross-signing signatures of it or by it, and of its to-device inbox.
async fn device_leftovers(server: &TestServer, d: &Session) -> (i64, i64, i64) {
    let (u, dev) = (sql_quote(&d.user_id), sql_quote(&d.device_id));
    let signatures = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM e2e_cross_signing_signatures
             WHERE (target_user_id = '{u}' AND target_key_id = '{dev}')
                OR (signer_user_id = '{u}' AND signer_key_id = 'ed25519:{dev}')"
        ))
        .await;
    let inbox = inbox_rows(server, d).await;
    (all_key_rows(server, d).await, signatures, inbox)
}

/// Whether a `/keys/query` answer has device `d`, and its signature of
/// its user's master key.
fn device_and_signature(q: &Value, d: &Session) -> (bool, bool) {
    let u = &d.user_id;
    let by_d = format!("ed25519:{}", d.device_id);
    (
        q["device_keys"][u].get(&d.device_id).is_some(),
        q["master_keys"][u]["signatures"][u].get(&by_d).is_some(),
    )
}

/// Issue 19: every way a device is deleted (the client API, Synapse's and
/// Dendrite's admin APIs, password changes and resets with logout, each
/// deactivation) deletes its keys, one-time and fallback keys, the
/// cross-signing signatures of and by it, and its waiting to-device
/// messages, and tells a user who shares a room: `device_lists.changed`,
/// or `left` where the owner is deactivated (deactivation leaves every
/// room, so no room is shared any more). Each way on a user of its own.
#[tokio::test]
async fn deleting_a_device_deletes_its_keys() {
    let server = TestServer::start().await;
    let root = server.admin("root").await;
    let observer = server.user("observer").await;
    let ways = [
        "logout",
        "/logout/all",
        "DELETE /devices",
        "/delete_devices",
        "password",
        "synapse DELETE device",
        "synapse delete_devices",
        "synapse reset_password",
        "dendrite resetPassword",
        "deactivate",
        "synapse deactivate",
        "synapse PUT deactivated",
    ];
    for (i, way) in ways.into_iter().enumerate() {
        let localpart = format!("u{i}");
        let (u0, d) = fully_keyed_device(&server, &observer, &localpart).await;
        assert_eq!(device_leftovers(&server, &d).await, (3, 2, 1), "{way}");
        // The answer is in memory now; the deletion must move it on.
        let q = query_all(&server, &observer, &u0.user_id).await;
        assert_eq!(device_and_signature(&q, &d), (true, true), "{way}: {q}");
        let since = sync_token(&server, &observer).await;
        let user = enc(&u0.user_id);
        let device_path = format!("/_matrix/client/v3/devices/{}", d.device_id);
        let uia = |req| {
            with_uia(
                &server,
                FirstRound::Challenge,
                req,
                &localpart,
                "password123",
            )
        };
        let (st, b) = match way {
            "logout" => {
                server
                    .post("/_matrix/client/v3/logout", d.token(), json!({}))
                    .await
            }
            "/logout/all" => {
                let path = "/_matrix/client/v3/logout/all";
                server.post(path, d.token(), json!({})).await
            }
            "DELETE /devices" => uia(UiaRequest::delete(&device_path, u0.token(), json!({}))).await,
            "/delete_devices" => {
                let body = json!({"devices": [d.device_id]});
                let path = "/_matrix/client/v3/delete_devices";
                uia(UiaRequest::post(path, u0.token(), body)).await
            }
            "password" => {
                let body = json!({"new_password": "password123"});
                let path = "/_matrix/client/v3/account/password";
                uia(UiaRequest::post(path, u0.token(), body)).await
            }
            "synapse DELETE device" => {
                let path = format!("/_synapse/admin/v2/users/{user}/devices/{}", d.device_id);
                server.delete(&path, root.token(), None).await
            }
            "synapse delete_devices" => {
                let path = format!("/_synapse/admin/v2/users/{user}/delete_devices");
                let body = json!({"devices": [d.device_id]});
                server.post(&path, root.token(), body).await
            }
            "synapse reset_password" => {
                // logout_devices defaults to true.
                let path = format!("/_synapse/admin/v1/reset_password/{user}");
                let body = json!({"new_password": "password123"});
                server.post(&path, root.token(), body).await
            }
            "dendrite resetPassword" => {
                let path = format!("/_dendrite/admin/resetPassword/{user}");
                let body = json!({"password": "password123", "logout_devices": true});
                server.post(&path, root.token(), body).await
            }
            "deactivate" => {
                deactivate(&server, &u0, &localpart).await;
                (StatusCode::OK, json!({}))
            }
            "synapse deactivate" => {
                let path = format!("/_synapse/admin/v1/deactivate/{user}");
                server.post(&path, root.token(), json!({})).await
            }
            _ => {
                let path = format!("/_synapse/admin/v2/users/{user}");
                server
                    .put(&path, root.token(), json!({"deactivated": true}))
                    .await
            }
        };
        assert_eq!(st, StatusCode::OK, "{way}: {b}");
        assert_eq!(device_leftovers(&server, &d).await, (0, 0, 0), "{way}");
        let q = query_all(&server, &observer, &u0.user_id).await;
        assert_eq!(device_and_signature(&q, &d), (false, false), "{way}: {q}");
        let seen = sync_since(&server, &observer, &since).await;
        let field = if way.contains("deactivate") {
            "left"
        } else {
            "changed"
        };
        assert_eq!(
            seen["device_lists"][field],
            json!([u0.user_id]),
            "{way}: {seen}"
        );
    }
}

/// sytest "Get left notifs for other users in sync and /keys/changes when
/// user leaves" and "New users appear in /keys/changes": when the syncing
/// user leaves the only room they share with someone, that someone is
/// `left`; a user who joins a shared room is `changed`.
#[tokio::test]
async fn leaving_makes_the_others_left_and_joining_makes_them_changed() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let from = sync_token(&server, &alice).await;
    join(&server, &bob, &room).await;
    let b = sync_since(&server, &alice, &from).await;
    assert_eq!(b["device_lists"]["changed"], json!([bob.user_id]), "{b}");
    let ch = key_changes(&server, &alice, &from, &next_batch(&b)).await;
    assert_eq!(ch, json!({"changed": [bob.user_id], "left": []}));

    let since = next_batch(&b);
    leave(&server, &alice, &room).await;
    let b = sync_since(&server, &alice, &since).await;
    assert_eq!(
        b["device_lists"],
        json!({"changed": [], "left": [bob.user_id]}),
        "{b}"
    );
}

/// sytest "Can upload device keys" sends placeholder keys and signatures
/// ("ed25519+key", "self+signature"): accepted, as Synapse does (the spec
/// does not ask a server to verify a device's self-signature; clients do),
/// and served back as uploaded.
#[tokio::test]
async fn placeholder_signatures_are_accepted_as_synapse_does() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let dev = alice.device_id.clone();
    let device_keys = json!({
        "user_id": alice.user_id,
        "device_id": dev,
        "algorithms": ["m.olm.curve25519-aes-sha256", "m.megolm.v1.aes-sha"],
        "keys": {format!("curve25519:{dev}"): "curve25519+key", format!("ed25519:{dev}"): "ed25519+key"},
        "signatures": {alice.user_id.clone(): {format!("ed25519:{dev}"): "self+signature"}},
    });
    let resp = try_upload_keys(
        &server,
        &alice,
        json!({"device_keys": device_keys, "one_time_keys": {"my_algorithm:my_id_1": "KIhHVkAQi8r41aPNql2zTqQsInpFa8XdslQLC8F8BHc"}}),
    )
    .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert_eq!(
        resp.1["one_time_key_counts"]["my_algorithm"],
        json!(1),
        "{}",
        resp.1
    );
    let (st, q) = server
        .post(
            "/_matrix/client/v3/keys/query",
            alice.token(),
            json!({"device_keys": {alice.user_id.clone(): []}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{q}");
    assert_eq!(
        q["device_keys"][&alice.user_id][&dev]["signatures"],
        json!({alice.user_id.clone(): {format!("ed25519:{dev}"): "self+signature"}}),
        "{q}"
    );
}

/// Issue 19: `/versions` advertises what encryption Myelin serves (the
/// spec versions, and `org.matrix.e2e_cross_signing` as Synapse) and no
/// other encryption flag; `m.room.encryption` is accepted in `createRoom`'s
/// `initial_state` with each preset and without one, and later as a state
/// event; encrypted events reach the other members as sent.
#[tokio::test]
async fn encryption_is_advertised_and_encrypted_rooms_are_created() {
    let server = TestServer::start().await;
    let (st, v) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The other flags are authenticated media's (MSC3916), custom profile
    // fields' (MSC4133) and sliding sync's (MSC4186).
    assert_eq!(
        v["unstable_features"],
        json!({
            "org.matrix.e2e_cross_signing": true,
            "org.matrix.msc3916.stable": true,
            "org.matrix.simplified_msc3575": true,
            "uk.tcpip.msc4133": true,
            "uk.tcpip.msc4133.stable": true,
        }),
        "{v}"
    );
    // The endpoints behind the flag answer (not 404 M_UNRECOGNIZED).
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let b = upload_signatures(&server, &alice, json!({})).await;
    assert!(b.get("failures").is_none_or(|f| f == &json!({})), "{b}");

    let encryption = json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "rotation_period_ms": 604_800_000,
        "rotation_period_msgs": 100,
    });
    let initial = json!([{"type": "m.room.encryption", "state_key": "", "content": encryption}]);
    for preset in [
        Some("private_chat"),
        Some("trusted_private_chat"),
        Some("public_chat"),
        None,
    ] {
        let mut body = json!({"initial_state": initial, "invite": [bob.user_id]});
        if let Some(p) = preset {
            body["preset"] = json!(p);
        }
        let room = create_room(&server, &alice, body).await;
        let state = current_state_content(&server, &alice, &room, "m.room.encryption", "").await;
        assert_eq!(state, encryption, "{preset:?}");
        join(&server, &bob, &room).await;
        let since = sync_token(&server, &bob).await;
        let ciphertext = json!({
            "algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
            "device_id": alice.device_id,
            "session_id": "SESSION",
            "ciphertext": "AwgAEnAcSeNiK6Ns",
        });
        send_event(
            &server,
            &alice,
            &room,
            "m.room.encrypted",
            ciphertext.clone(),
        )
        .await;
        let b = sync_since(&server, &bob, &since).await;
        let events = &joined_room(&b, &room)["timeline"]["events"];
        let got = event_of_type(events, "m.room.encrypted").unwrap_or_else(|| panic!("{b}"));
        assert_eq!(got["content"], ciphertext, "{preset:?}");
    }

    // Turned on later, as Element's room settings do.
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.encryption",
        "",
        encryption.clone(),
    )
    .await;
    let state = current_state_content(&server, &alice, &room, "m.room.encryption", "").await;
    assert_eq!(state, encryption);
}

/// The same device keys uploaded again with a signature added (as
/// matrix-js-sdk's Rust crypto re-uploads its device signed by its new
/// self-signing key after bootstrapping cross-signing; Synapse stores the
/// new keys): 200, /keys/query serves both signatures, and those who share
/// a room with the device's owner see the change. An upload that lacks the
/// added signature again keeps it.
#[tokio::test]
async fn device_keys_uploaded_again_with_a_new_signature_keep_both() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let keys = own_device_keys(&alice);
    upload_keys(&server, &alice, json!({"device_keys": keys})).await;
    let since = sync_token(&server, &bob).await;

    let mut signed = keys.clone();
    signed["signatures"][&alice.user_id]["ed25519:SelfSigningKeyOfAlice"] = json!("ssk+signature");
    let resp = try_upload_keys(&server, &alice, json!({"device_keys": signed})).await;
    assert_eq!(
        resp.0,
        StatusCode::OK,
        "re-upload with a new signature: {}",
        resp.1
    );
    let b = sync_since(&server, &bob, &since).await;
    assert_eq!(b["device_lists"]["changed"], json!([alice.user_id]), "{b}");

    // Without the new signature again: nothing is lost.
    upload_keys(&server, &alice, json!({"device_keys": keys})).await;
    let q = query_keys(&server, &bob, json!({alice.user_id.clone(): []})).await;
    let served = &q["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(served["signatures"], signed["signatures"], "{q}");
    assert_eq!(served["keys"], keys["keys"], "{q}");
}

/// One claim naming many devices (read in one statement): each device
/// with one-time keys gets its lowest key id, a device with none its
/// fallback key, a device with keys of another algorithm only and an
/// unknown device nothing; the next claim gets each device's next key.
#[tokio::test]
async fn one_claim_for_many_devices_gets_each_its_own_key() {
    let server = TestServer::start().await;
    let claimer = server.user("claimer").await;
    let mut users = Vec::new();
    for (i, name) in ["d0", "d1", "d2", "d3"].iter().enumerate() {
        let who = server.user(name).await;
        let body = match i {
            0 | 1 => json!({"one_time_keys": {
                format!("signed_curve25519:B{i}"): {"key": format!("{name}b"), "signatures": {}},
                format!("signed_curve25519:A{i}"): {"key": format!("{name}a"), "signatures": {}},
            }}),
            2 => json!({"fallback_keys": {
                "signed_curve25519:FB": {"key": "d2fb", "fallback": true, "signatures": {}},
            }}),
            _ => json!({"one_time_keys": {"other_algorithm:X": "d3x"}}),
        };
        upload_keys(&server, &who, body).await;
        users.push(who);
    }
    let mut want = serde_json::Map::new();
    for u in &users {
        want.insert(
            u.user_id.clone(),
            json!({u.device_id.clone(): "signed_curve25519"}),
        );
    }
    want[&users[0].user_id]["NOPE"] = json!("signed_curve25519");
    let want = Value::Object(want);
    let key_of =
        |c: &Value, i: usize| c["one_time_keys"][&users[i].user_id][&users[i].device_id].clone();

    let c = claim_keys(&server, &claimer, want.clone()).await;
    assert_eq!(
        key_of(&c, 0),
        json!({"signed_curve25519:A0": {"key": "d0a", "signatures": {}}}),
        "{c}"
    );
    assert_eq!(
        key_of(&c, 1),
        json!({"signed_curve25519:A1": {"key": "d1a", "signatures": {}}}),
        "{c}"
    );
    assert_eq!(
        key_of(&c, 2),
        json!({"signed_curve25519:FB": {"key": "d2fb", "fallback": true, "signatures": {}}}),
        "{c}"
    );
    assert_eq!(
        c["one_time_keys"].as_object().map(|m| m.len()),
        Some(3),
        "{c}"
    );
    assert!(
        c["one_time_keys"][&users[0].user_id].get("NOPE").is_none(),
        "{c}"
    );

    let c = claim_keys(&server, &claimer, want.clone()).await;
    assert_eq!(
        key_of(&c, 0),
        json!({"signed_curve25519:B0": {"key": "d0b", "signatures": {}}}),
        "{c}"
    );
    assert_eq!(
        key_of(&c, 1),
        json!({"signed_curve25519:B1": {"key": "d1b", "signatures": {}}}),
        "{c}"
    );
    let c = claim_keys(&server, &claimer, want).await;
    assert_eq!(
        c["one_time_keys"].as_object().map(|m| m.len()),
        Some(1),
        "{c}"
    );
    assert_eq!(key_of(&c, 3), Value::Null, "{c}");
    assert_eq!(key_rows(&server, "e2e_one_time_keys", &users[3]).await, 1);
}

/// `who`'s `/keys/query` answer naming `user` (all their devices).
async fn query_all(server: &TestServer, who: &Session, user: &str) -> Value {
    query_keys(server, who, json!({ user: [] })).await
}

/// Renames `who`'s device to `name`; `observer`'s next query sees it.
async fn rename_and_see(server: &TestServer, who: &Session, name: &str, observer: &Session) {
    let path = format!("/_matrix/client/v3/devices/{}", who.device_id);
    let (st, b) = server
        .put(&path, who.token(), json!({"display_name": name}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let q = query_all(server, observer, &who.user_id).await;
    let device = &q["device_keys"][&who.user_id][&who.device_id];
    assert_eq!(device["unsigned"]["device_display_name"], name, "{q}");
}

/// Issue 19: `/keys/query` answers from memory, so each change of what it
/// answers must show in the next query: a query warms the answer, a change
/// follows, and the next query shows it (device keys uploaded and signed
/// again, a rename, a login naming the device, cross-signing keys uploaded
/// and replaced, signatures of the user's own keys, and another user's
/// signature, shown to its signer alone).
#[tokio::test]
async fn query_answers_follow_every_change() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (a, dev) = (alice.user_id.as_str(), alice.device_id.as_str());
    let by_dev = format!("ed25519:{dev}");
    let q = query_all(&server, &bob, a).await;
    assert_eq!(q["device_keys"][a], json!({}), "{q}");

    // Device keys uploaded, then the same keys with another signature.
    let device = SigningKey::generate();
    let unsigned = json!({
        "user_id": a,
        "device_id": dev,
        "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": { &by_dev: device.public },
    });
    let signed = device.sign_as_device(a, dev, &unsigned);
    upload_keys(&server, &alice, json!({"device_keys": signed.clone()})).await;
    let q = query_all(&server, &bob, a).await;
    assert_eq!(q["device_keys"][a][dev]["keys"], unsigned["keys"], "{q}");
    let mut resigned = signed.clone();
    resigned["signatures"][a]["ed25519:OTHER"] = json!("c2lnbmF0dXJl");
    upload_keys(&server, &alice, json!({"device_keys": resigned})).await;
    let q = query_all(&server, &bob, a).await;
    let sigs = &q["device_keys"][a][dev]["signatures"][a];
    assert_eq!(sigs["ed25519:OTHER"], json!("c2lnbmF0dXJl"), "{q}");
    assert_eq!(sigs[&by_dev], signed["signatures"][a][&by_dev], "{q}");

    // A rename, and a login naming the same device.
    let path = format!("/_matrix/client/v3/devices/{dev}");
    rename_and_see(&server, &alice, "Phone", &bob).await;
    let (st, b) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "password123",
                "device_id": dev,
                "initial_device_display_name": "Laptop",
            }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // The login replaced the device's access token.
    let alice = Session::from_answer(&b);
    let (st, listed) = server.get(&path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{listed}");
    let q = query_all(&server, &bob, a).await;
    assert_eq!(
        q["device_keys"][a][dev]["unsigned"]["device_display_name"], listed["display_name"],
        "{q}"
    );

    // Cross-signing keys uploaded, the device signed by the self-signing
    // key and the master key by the device, then the keys replaced.
    let (master, ssk, usk) = (
        SigningKey::generate(),
        SigningKey::generate(),
        SigningKey::generate(),
    );
    let cross = |master: &SigningKey, ssk: &SigningKey, usk: &SigningKey| {
        json!({
            "master_key": master.cross_signing_key(a, "master"),
            "self_signing_key": master.sign(a, &ssk.cross_signing_key(a, "self_signing")),
            "user_signing_key": master.sign(a, &usk.cross_signing_key(a, "user_signing")),
        })
    };
    let r = upload_signing_keys(&server, &alice, cross(&master, &ssk, &usk)).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let q = query_all(&server, &bob, a).await;
    assert_eq!(
        q["master_keys"][a],
        master.cross_signing_key(a, "master"),
        "{q}"
    );
    let by_ssk = format!("ed25519:{}", ssk.public);
    let b = upload_signatures(
        &server,
        &alice,
        json!({ a: {
            dev: ssk.sign(a, &unsigned),
            &master.public: device.sign_as_device(a, dev, &master.cross_signing_key(a, "master")),
        }}),
    )
    .await;
    assert!(b.get("failures").is_none_or(|f| f == &json!({})), "{b}");
    let q = query_all(&server, &bob, a).await;
    assert!(
        q["device_keys"][a][dev]["signatures"][a]
            .get(&by_ssk)
            .is_some(),
        "{q}"
    );
    assert!(
        q["master_keys"][a]["signatures"][a].get(&by_dev).is_some(),
        "{q}"
    );
    let new_master = SigningKey::generate();
    let (st, b) = with_uia(
        &server,
        FirstRound::Challenge,
        UiaRequest::post(
            "/_matrix/client/v3/keys/device_signing/upload",
            alice.token(),
            cross(&new_master, &ssk, &usk),
        ),
        "alice",
        "password123",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let q = query_all(&server, &bob, a).await;
    assert_eq!(
        q["master_keys"][a]["keys"],
        new_master.cross_signing_key(a, "master")["keys"],
        "{q}"
    );

    // Bob signs Alice's master key with his user-signing key: Bob sees
    // it, Carol does not, both having asked before.
    let b_ = bob.user_id.as_str();
    let (bob_master, bob_usk) = (SigningKey::generate(), SigningKey::generate());
    let body = json!({
        "master_key": bob_master.cross_signing_key(b_, "master"),
        "user_signing_key": bob_master.sign(b_, &bob_usk.cross_signing_key(b_, "user_signing")),
    });
    let r = upload_signing_keys(&server, &bob, body).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert!(
        query_all(&server, &bob, a).await["master_keys"][a]["signatures"]
            .get(b_)
            .is_none()
    );
    assert!(
        query_all(&server, &carol, a).await["master_keys"][a]["signatures"]
            .get(b_)
            .is_none()
    );
    let by_bob = bob_usk.sign(b_, &new_master.cross_signing_key(a, "master"));
    let b = upload_signatures(&server, &bob, json!({ a: { &new_master.public: by_bob } })).await;
    assert!(b.get("failures").is_none_or(|f| f == &json!({})), "{b}");
    let q = query_all(&server, &bob, a).await;
    let by_usk = format!("ed25519:{}", bob_usk.public);
    assert!(
        q["master_keys"][a]["signatures"][b_].get(&by_usk).is_some(),
        "{q}"
    );
    let q = query_all(&server, &carol, a).await;
    assert!(
        q["master_keys"][a]["signatures"].get(b_).is_none(),
        "not carol's to see: {q}"
    );
}

/// With room for one user's answer only (`caches.device_keys: 1`),
/// queries naming several users answer them all, and a change still shows.
#[tokio::test]
async fn query_answers_stay_right_with_a_one_user_cache() {
    let server = TestServer::start_with(|c| c.caches.device_keys = 1).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut uploaded = Vec::new();
    for who in [&alice, &bob] {
        let keys = own_device_keys(who);
        upload_keys(&server, who, json!({"device_keys": keys.clone()})).await;
        uploaded.push((who, keys));
    }
    let both = json!({ &alice.user_id: [], &bob.user_id: [] });
    for _ in 0..2 {
        let q = query_keys(&server, &alice, both.clone()).await;
        for (who, keys) in &uploaded {
            assert_eq!(
                q["device_keys"][&who.user_id][&who.device_id]["keys"], keys["keys"],
                "{q}"
            );
        }
    }
    let all = [alice.user_id.as_str(), bob.user_id.as_str()];
    rename_and_see(&server, &bob, "B", &alice).await;
    let q = query_keys(&server, &alice, both).await;
    assert_eq!(
        q["device_keys"].as_object().map(|o| o.len()),
        Some(all.len()),
        "{q}"
    );
    let running = server.running.as_ref().expect("running");
    let report: std::collections::HashMap<String, usize> =
        running.services.cache_report().into_iter().collect();
    assert_eq!(
        report.get("e2e_keys.device_keys.users"),
        Some(&1),
        "{report:?}"
    );
}
