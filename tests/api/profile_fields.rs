//! Custom profile fields (spec v1.16, MSC4133): `GET/PUT/DELETE
//! /profile/{userId}/{keyName}`, at the stable and unstable paths, with
//! the spec's limits; `displayname` and `avatar_url` through the same paths.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const UNSTABLE: &str = "/_matrix/client/unstable/uk.tcpip.msc4133";

fn field_path(user: &str, key: &str) -> String {
    format!("/_matrix/client/v3/profile/{}/{key}", enc(user))
}

#[tokio::test]
async fn custom_fields_are_set_read_listed_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t = alice.token();
    let tz = field_path(&alice.user_id, "m.tz");

    // Not set yet: 404.
    assert_error(&server.get(&tz, None).await, 404, "M_NOT_FOUND");

    let (st, body) = server.put(&tz, t, json!({"m.tz": "Europe/London"})).await;
    assert_eq!((st, body), (StatusCode::OK, json!({})));
    let (st, body) = server.get(&tz, None).await;
    assert_eq!(
        (st, body),
        (StatusCode::OK, json!({"m.tz": "Europe/London"}))
    );

    // Any JSON value, replaced in place; other keys of the body are ignored.
    let pronouns = field_path(&alice.user_id, "io.fsky.nyx.pronouns");
    let value = json!([{"summary": "she/her", "language": "en"}]);
    let (st, _) = server
        .put(
            &pronouns,
            t,
            json!({"io.fsky.nyx.pronouns": value, "other": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = server.put(&tz, t, json!({"m.tz": "Europe/Paris"})).await;
    assert_eq!(st, StatusCode::OK);

    // The whole profile lists them beside the display name.
    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"displayname": "alice", "m.tz": "Europe/Paris", "io.fsky.nyx.pronouns": value})
    );

    // The unstable paths serve the same fields.
    let unstable = format!("{UNSTABLE}/profile/{}/m.tz", enc(&alice.user_id));
    let (st, body) = server.get(&unstable, None).await;
    assert_eq!(
        (st, body),
        (StatusCode::OK, json!({"m.tz": "Europe/Paris"}))
    );
    let (st, _) = server.put(&unstable, t, json!({"m.tz": "UTC"})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(server.get(&tz, None).await.1, json!({"m.tz": "UTC"}));

    // DELETE removes it (twice is fine).
    for _ in 0..2 {
        let (st, body) = server.delete(&tz, t, None).await;
        assert_eq!((st, body), (StatusCode::OK, json!({})));
    }
    assert_error(&server.get(&tz, None).await, 404, "M_NOT_FOUND");
    let (st, _) = server.delete(&unstable, t, None).await;
    assert_eq!(st, StatusCode::OK);
    let body = server
        .get(
            &format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)),
            None,
        )
        .await
        .1;
    assert_eq!(
        body,
        json!({"displayname": "alice", "io.fsky.nyx.pronouns": value})
    );
}

#[tokio::test]
async fn displayname_and_avatar_url_through_the_generic_paths() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t = alice.token();
    let room = create_room(&server, &alice, json!({})).await;

    // The unstable path reaches the display name, and the member event follows.
    let unstable = format!("{UNSTABLE}/profile/{}/displayname", enc(&alice.user_id));
    let (st, _) = server
        .put(&unstable, t, json!({"displayname": "Alice A"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let member = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(&room),
        enc(&alice.user_id)
    );
    let (st, content) = server.get(&member, t).await;
    assert_eq!(st, StatusCode::OK, "{content}");
    assert_eq!(content["displayname"], "Alice A", "{content}");

    // Display names and avatars are strings.
    assert_error(
        &server.put(&unstable, t, json!({"displayname": 5})).await,
        400,
        "M_INVALID_PARAM",
    );
    let avatar = field_path(&alice.user_id, "avatar_url");
    // At most 1000 bytes, as Synapse (its own path too).
    let long = format!("mxc://test.local/{}", "a".repeat(1000));
    assert_error(
        &server.put(&avatar, t, json!({"avatar_url": long})).await,
        400,
        "M_BAD_JSON",
    );
    let (st, _) = server
        .put(&avatar, t, json!({"avatar_url": "mxc://test.local/abc"}))
        .await;
    assert_eq!(st, StatusCode::OK);

    // DELETE at their own paths clears them (v1.16), in the rooms too.
    let name = field_path(&alice.user_id, "displayname");
    for path in [&name, &avatar] {
        let (st, body) = server.delete(path, t, None).await;
        assert_eq!((st, body), (StatusCode::OK, json!({})), "{path}");
    }
    let (_, profile) = server
        .get(
            &format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)),
            None,
        )
        .await;
    assert_eq!(profile, json!({}));
    let (_, content) = server.get(&member, t).await;
    assert!(
        content.get("displayname").is_none_or(Value::is_null),
        "{content}"
    );
    assert!(
        content.get("avatar_url").is_none_or(Value::is_null),
        "{content}"
    );
    let (st, body) = server.get(&unstable, None).await;
    assert_eq!((st, body), (StatusCode::OK, json!({"displayname": null})));
}

#[tokio::test]
async fn field_errors_as_the_spec_and_synapse() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let t = alice.token();
    let tz = field_path(&alice.user_id, "m.tz");

    // Someone else's profile: 403.
    assert_error(
        &server.put(&tz, bob.token(), json!({"m.tz": "UTC"})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.delete(&tz, bob.token(), None).await,
        403,
        "M_FORBIDDEN",
    );
    // No token.
    assert_error(
        &server.put(&tz, None, json!({"m.tz": "UTC"})).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server.delete(&tz, None, None).await,
        401,
        "M_MISSING_TOKEN",
    );

    // The body must carry the key, not null.
    assert_error(
        &server.put(&tz, t, json!({"m.other": "UTC"})).await,
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &server.put(&tz, t, json!({"m.tz": null})).await,
        400,
        "M_INVALID_PARAM",
    );
    let resp = server.request_raw(Method::PUT, &tz, t, "{not json").await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{resp:?}");

    // Key names: the namespaced grammar, at most 255 bytes.
    for bad in ["Bad", "1abc", "a%20b", "a%C3%A9"] {
        let path = field_path(&alice.user_id, bad);
        assert_error_for(bad, &server.get(&path, None).await, 400, "M_INVALID_PARAM");
        assert_error_for(
            bad,
            &server.put(&path, t, json!({bad: 1})).await,
            400,
            "M_INVALID_PARAM",
        );
        assert_error_for(
            bad,
            &server.delete(&path, t, None).await,
            400,
            "M_INVALID_PARAM",
        );
    }
    let long = format!("a.{}", "b".repeat(254));
    let path = field_path(&alice.user_id, &long);
    assert_error(&server.get(&path, None).await, 400, "M_KEY_TOO_LARGE");
    assert_error(
        &server.put(&path, t, json!({long.clone(): 1})).await,
        400,
        "M_KEY_TOO_LARGE",
    );
    let longest = format!("a.{}", "b".repeat(253));
    let path = field_path(&alice.user_id, &longest);
    let (st, body) = server.put(&path, t, json!({longest.clone(): 1})).await;
    assert_eq!(st, StatusCode::OK, "255 bytes is allowed: {body}");

    // An invalid or unknown user.
    assert_error(
        &server
            .get("/_matrix/client/v3/profile/notauser/m.tz", None)
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .get(&field_path("@nobody:test.local", "m.tz"), None)
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Guests keep to their display name.
    let guest = server.guest().await;
    let gpath = field_path(&guest.user_id, "m.tz");
    assert_error(
        &server
            .put(&gpath, guest.token(), json!({"m.tz": "UTC"}))
            .await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    let (st, _) = server
        .put(
            &field_path(&guest.user_id, "displayname"),
            guest.token(),
            json!({"displayname": "G"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn the_whole_profile_stays_under_64_kib() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let t = alice.token();
    let big = field_path(&alice.user_id, "org.example.big");
    // {"displayname":"alice","org.example.big":"xxx..."} is 44 bytes
    // besides the value's characters.
    let fits = 64 * 1024 - 44;
    let (st, body) = server
        .put(&big, t, json!({"org.example.big": "x".repeat(fits)}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // One byte more is too large, and nothing changes.
    assert_error(
        &server
            .put(&big, t, json!({"org.example.big": "x".repeat(fits + 1)}))
            .await,
        400,
        "M_PROFILE_TOO_LARGE",
    );
    let (_, body) = server.get(&big, None).await;
    assert_eq!(body["org.example.big"].as_str().unwrap().len(), fits);
    // Another field does not fit beside it either.
    let small = field_path(&alice.user_id, "org.example.small");
    assert_error(
        &server.put(&small, t, json!({"org.example.small": 1})).await,
        400,
        "M_PROFILE_TOO_LARGE",
    );
    assert_error(&server.get(&small, None).await, 404, "M_NOT_FOUND");
    // Replacing the big one with a small one makes room.
    let (st, _) = server.put(&big, t, json!({"org.example.big": 1})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = server.put(&small, t, json!({"org.example.small": 1})).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn erasure_removes_custom_fields() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let tz = field_path(&alice.user_id, "m.tz");
    let (st, _) = server.put(&tz, alice.token(), json!({"m.tz": "UTC"})).await;
    assert_eq!(st, StatusCode::OK);
    deactivate_with(&server, &alice, "alice", json!({"erase": true})).await;
    assert_error(&server.get(&tz, None).await, 404, "M_NOT_FOUND");
    assert_eq!(
        server
            .sql_count("SELECT COUNT(*) FROM profile_fields")
            .await,
        0
    );
}
