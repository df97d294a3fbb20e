//! Deleting an alias removes it from the room's canonical alias event (its
//! `alias` and `alt_aliases`), as Synapse does.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";

#[tokio::test]
async fn deleting_an_alias_drops_it_from_the_canonical_alias() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let main = "#main:test.local";
    let alt = "#alt:test.local";
    let other = "#other:test.local";
    for alias in [main, alt, other] {
        let (st, body) = server
            .put(
                &format!("{V3}/directory/room/{}", enc(alias)),
                alice.token(),
                json!({"room_id": room}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let state_path = format!("{V3}/rooms/{room}/state/m.room.canonical_alias");
    let (st, body) = server
        .put(
            &state_path,
            alice.token(),
            json!({"alias": main, "alt_aliases": [alt, other]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    for alias in [main, alt] {
        let (st, body) = server
            .delete(
                &format!("{V3}/directory/room/{}", enc(alias)),
                alice.token(),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let (st, content) = server.get(&state_path, alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{content}");
    assert!(content.get("alias").is_none(), "{content}");
    assert_eq!(content["alt_aliases"], json!([other]), "{content}");
}

#[tokio::test]
async fn an_alias_outside_the_canonical_alias_changes_no_state() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let alias = "#loose:test.local";
    server
        .put(
            &format!("{V3}/directory/room/{}", enc(alias)),
            alice.token(),
            json!({"room_id": room}),
        )
        .await;
    let (_, before) = server
        .get(&format!("{V3}/rooms/{room}/state"), alice.token())
        .await;
    let (st, body) = server
        .delete(
            &format!("{V3}/directory/room/{}", enc(alias)),
            alice.token(),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (_, after) = server
        .get(&format!("{V3}/rooms/{room}/state"), alice.token())
        .await;
    let ids = |state: &serde_json::Value| -> Vec<String> {
        state
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&before), ids(&after), "no state event was written");
}
