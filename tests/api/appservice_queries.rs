//! What the homeserver asks application services, against the fake one:
//! the user query (`GET /_matrix/app/v1/users/{userId}`) for an unknown
//! namespaced user looked up or invited, the alias query (`GET
//! /_matrix/app/v1/rooms/{alias}`) for an unknown namespaced alias, and
//! the client's `/thirdparty/*` routed to the services listing the
//! protocol, answers checked and merged.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const REGISTER: &str = "/_matrix/client/v3/register";

async fn server_and_bridge() -> (TestServer, RegistrationFiles, FakeAppService) {
    let fake = FakeAppService::start().await;
    fake.ignore_transactions();
    let (s, files) = server_with_bridge(&format!("\"{}\"", fake.url)).await;
    (s, files, fake)
}

async fn ghost(s: &TestServer, localpart: &str) -> String {
    let body = json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true});
    let (st, b) = s.post(REGISTER, Some(AS_TOKEN), body).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["user_id"].as_str().unwrap().to_owned()
}

fn assert_hs_token(r: &AsRequest) {
    assert_eq!(r.method, "GET");
    assert_eq!(
        r.authorization.as_deref(),
        Some(format!("Bearer {HS_TOKEN}").as_str())
    );
}

#[tokio::test]
async fn a_profile_lookup_of_an_unknown_namespaced_user_asks_the_service_which_creates_it() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let release = fake.hold_next();
    let lookup = s.get(
        "/_matrix/client/v3/profile/@bridge_new:test.local",
        alice.token(),
    );
    let service = async {
        let r = fake.next().await;
        assert_hs_token(&r);
        assert_eq!(r.path, "/_matrix/app/v1/users/@bridge_new:test.local");
        ghost(&s, "bridge_new").await;
        release.send((200, json!({}))).unwrap();
    };
    let ((st, b), ()) = tokio::join!(lookup, service);
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["displayname"], "bridge_new");
}

#[tokio::test]
async fn a_service_that_does_not_know_the_user_leaves_it_unknown() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    fake.answer_next(404, json!({"errcode": "M_NOT_FOUND"}));
    let r = s
        .get(
            "/_matrix/client/v3/profile/@bridge_nobody:test.local",
            alice.token(),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    assert_eq!(
        fake.next().await.path,
        "/_matrix/app/v1/users/@bridge_nobody:test.local"
    );
    // 200 without creating it: still unknown.
    let r = s
        .get(
            "/_matrix/client/v3/profile/@bridge_liar:test.local",
            alice.token(),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    // A user in no namespace: no service is asked.
    let r = s
        .get(
            "/_matrix/client/v3/profile/@stranger:test.local",
            alice.token(),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    let seen = fake.next().await;
    assert_eq!(seen.path, "/_matrix/app/v1/users/@bridge_liar:test.local");
    assert!(fake.next_within(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn inviting_an_unknown_namespaced_user_asks_the_service() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    let release = fake.hold_next();
    let invite_path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let invite = s.post(
        &invite_path,
        alice.token(),
        json!({"user_id": "@bridge_inv:test.local"}),
    );
    let service = async {
        let r = fake.next().await;
        assert_eq!(r.path, "/_matrix/app/v1/users/@bridge_inv:test.local");
        ghost(&s, "bridge_inv").await;
        release.send((200, json!({}))).unwrap();
    };
    let ((st, b), ()) = tokio::join!(invite, service);
    assert_eq!(st, StatusCode::OK, "{b}");
    // Refused by the service: 404 as before.
    fake.answer_next(404, json!({}));
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            alice.token(),
            json!({"user_id": "@bridge_none:test.local"}),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn resolving_an_unknown_namespaced_alias_asks_the_service_which_creates_it() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let release = fake.hold_next();
    let alias = "#bridge_portal:test.local";
    let resolve_path = format!("/_matrix/client/v3/directory/room/{}", enc(alias));
    let resolve = s.get(&resolve_path, alice.token());
    let service = async {
        let r = fake.next().await;
        assert_hs_token(&r);
        assert_eq!(r.path, "/_matrix/app/v1/rooms/%23bridge_portal:test.local");
        // The bridge makes the portal room and its alias, then answers.
        let (st, b) = s
            .post(
                "/_matrix/client/v3/createRoom",
                Some(AS_TOKEN),
                json!({"room_alias_name": "bridge_portal", "preset": "public_chat"}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        release.send((200, json!({}))).unwrap();
        b["room_id"].as_str().unwrap().to_owned()
    };
    let ((st, b), room) = tokio::join!(resolve, service);
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["room_id"], room);
    // Joining by an alias the service does not know: 404.
    fake.answer_next(404, json!({}));
    let r = s
        .post(
            &format!("/_matrix/client/v3/join/{}", enc("#bridge_gone:test.local")),
            alice.token(),
            json!({}),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    assert_eq!(
        fake.next().await.path,
        "/_matrix/app/v1/rooms/%23bridge_gone:test.local"
    );
    // Outside every alias namespace: nobody is asked.
    let r = s
        .get(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                enc("#other:test.local")
            ),
            alice.token(),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    assert!(fake.next_within(Duration::from_millis(200)).await.is_none());
}

fn gitter_protocol(network: &str) -> Value {
    json!({
        "user_fields": ["username"],
        "location_fields": ["room"],
        "icon": "mxc://example.org/gitter",
        "field_types": {
            "username": {"regexp": "[a-z]+", "placeholder": "name"},
            "room": {"regexp": "[a-z/]+", "placeholder": "org/room"}
        },
        "instances": [{"desc": "Gitter", "network_id": network, "fields": {}}]
    })
}

/// Protocol metadata comes from the services that list the protocol,
/// checked; a usable answer is then kept for an hour (as Synapse: sytest's
/// "HS can provide query metadata on a single protocol" relies on it), a
/// failure is not.
#[tokio::test]
async fn thirdparty_protocols_come_from_the_services_that_list_them() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    // A protocol nobody lists, and a service answering nonsense or failing:
    // unknown, and asked again next time.
    let r = s
        .get("/_matrix/client/v3/thirdparty/protocol/irc", alice.token())
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    fake.answer_next(200, json!({"instances": "not a list"}));
    let r = s
        .get(
            "/_matrix/client/v3/thirdparty/protocol/gitter",
            alice.token(),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    fake.next().await;
    fake.answer_next(500, json!({}));
    let (st, b) = s
        .get("/_matrix/client/v3/thirdparty/protocols", alice.token())
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!({})));
    fake.next().await;

    fake.answer_next(200, gitter_protocol("gitter-main"));
    let (st, b) = s
        .get("/_matrix/client/v3/thirdparty/protocols", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let r = fake.next().await;
    assert_hs_token(&r);
    assert_eq!(r.path, "/_matrix/app/v1/thirdparty/protocol/gitter");
    let mut want = gitter_protocol("gitter-main");
    want["instances"][0]["instance_id"] = json!("bridge|gitter-main");
    assert_eq!(b, json!({"gitter": want}));
    // Kept: the single-protocol lookup does not ask the service again.
    let (st, b) = s
        .get(
            "/_matrix/client/v3/thirdparty/protocol/gitter",
            alice.token(),
        )
        .await;
    assert_eq!((st, b), (StatusCode::OK, want));
    assert!(
        fake.next_within(Duration::from_millis(300)).await.is_none(),
        "answered from memory"
    );
}

#[tokio::test]
async fn thirdparty_lookups_pass_the_query_on_and_keep_valid_results() {
    let (s, _files, fake) = server_and_bridge().await;
    let alice = s.user("alice").await;
    let good =
        json!({"alias": "#bridge_x:test.local", "protocol": "gitter", "fields": {"room": "a/b"}});
    fake.answer_next(
        200,
        json!([good, {"alias": 3, "protocol": "gitter", "fields": {}}]),
    );
    let (st, b) = s
        .get(
            "/_matrix/client/v3/thirdparty/location/gitter?room=a%2Fb",
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b, json!([good]));
    let r = fake.next().await;
    assert_hs_token(&r);
    assert_eq!(r.path, "/_matrix/app/v1/thirdparty/location/gitter");
    assert_eq!(r.query, "room=a%2Fb");
    let user = json!({"userid": "@bridge_x:test.local", "protocol": "gitter", "fields": {"username": "x"}});
    fake.answer_next(200, json!([user]));
    let (st, b) = s
        .get(
            "/_matrix/client/v3/thirdparty/user/gitter?username=x",
            alice.token(),
        )
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!([user])));
    assert_eq!(
        fake.next().await.path,
        "/_matrix/app/v1/thirdparty/user/gitter"
    );
    // Reverse lookups go to the services with protocols.
    fake.answer_next(200, json!([user]));
    let (st, b) = s
        .get(
            &format!(
                "/_matrix/client/v3/thirdparty/user?userid={}",
                enc("@bridge_x:test.local")
            ),
            alice.token(),
        )
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!([user])));
    let r = fake.next().await;
    assert_eq!(r.path, "/_matrix/app/v1/thirdparty/user");
    assert!(r.query.starts_with("userid="), "{}", r.query);
    // A protocol no service lists: nobody is asked.
    let (st, b) = s
        .get(
            "/_matrix/client/v3/thirdparty/location/irc?room=x",
            alice.token(),
        )
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!([])));
    // A failing service: nothing found.
    fake.answer_next(500, json!({}));
    let (st, b) = s
        .get(
            "/_matrix/client/v3/thirdparty/location/gitter",
            alice.token(),
        )
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!([])));
    let _ = fake.next().await;
    assert!(fake.next_within(Duration::from_millis(200)).await.is_none());
}
