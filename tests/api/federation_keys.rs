//! `GET /_matrix/key/v2/server`: the server's signing key, self-signed.

use reqwest::StatusCode;
use ruma::CanonicalJsonValue;
use ruma::signatures::{PublicKeyMap, PublicKeySet};

use crate::harness::*;

#[tokio::test]
async fn server_keys_are_published_and_self_signed() {
    let server = TestServer::start().await;
    let (st, body) = server.get("/_matrix/key/v2/server", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["server_name"], server.server_name.as_str());
    assert_eq!(body["old_verify_keys"], serde_json::json!({}));
    let now = now_ms();
    assert!(body["valid_until_ts"].as_i64().unwrap() > now);
    let keys = body["verify_keys"].as_object().expect("verify_keys");
    assert_eq!(keys.len(), 1, "{body}");
    let (key_id, key) = keys.iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"), "{key_id}");
    let public = key["key"].as_str().expect("key").to_owned();

    // The answer verifies with the key it publishes.
    let mut set = PublicKeySet::new();
    set.insert(key_id.clone(), ruma::serde::Base64::parse(&public).unwrap());
    let mut map = PublicKeyMap::new();
    map.insert(server.server_name.clone(), set);
    let CanonicalJsonValue::Object(obj) = CanonicalJsonValue::try_from(body.clone()).unwrap()
    else {
        panic!("not an object")
    };
    ruma::signatures::verify_json(&map, &obj).expect("the key response verifies");

    // A changed answer does not.
    let mut tampered = obj.clone();
    tampered.insert(
        "server_name".into(),
        CanonicalJsonValue::String("evil.example".into()),
    );
    let mut evil = PublicKeyMap::new();
    evil.insert("evil.example".into(), map[&server.server_name].clone());
    assert!(ruma::signatures::verify_json(&evil, &tampered).is_err());

    // The same key on every request (it is the one events are signed with).
    let (_, again) = server.get("/_matrix/key/v2/server", None).await;
    assert_eq!(again["verify_keys"], body["verify_keys"]);
}
