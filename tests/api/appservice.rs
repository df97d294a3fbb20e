//! Application services: registration files checked at start (each error
//! names its file and key), the sender created, `as_token` powers on the
//! Client-Server API (masquerading as namespace users and their devices,
//! `m.login.application_service` registration and login, exclusive user
//! and alias namespaces, `ts` massaging, `rate_limited: false`), the ping
//! endpoint against a fake application service, and `appservice_id` in the
//! Synapse user admin API.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const REGISTER: &str = "/_matrix/client/v3/register";
const LOGIN: &str = "/_matrix/client/v3/login";

fn as_register(localpart: &str) -> Value {
    json!({"type": "m.login.application_service", "username": localpart})
}

/// Registers `localpart` through the bridge (no login).
async fn ghost(s: &TestServer, localpart: &str) -> String {
    let mut body = as_register(localpart);
    body["inhibit_login"] = json!(true);
    let (st, b) = s.post(REGISTER, Some(AS_TOKEN), body).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["user_id"].as_str().unwrap().to_owned()
}

fn whoami_as(user_id: &str) -> String {
    format!("{WHOAMI}?user_id={}", enc(user_id))
}

// ------------------------------------------------------ registration files

#[tokio::test]
async fn the_sender_exists_from_the_start_and_the_as_token_acts_as_it() {
    let (s, _files) = server_with_bridge("null").await;
    let (st, b) = s.get(WHOAMI, Some(AS_TOKEN)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user_id"], "@bridgebot:test.local");
    assert!(b.get("device_id").is_none(), "no device: {b}");
    let (st, b) = s
        .get("/_matrix/client/v3/profile/@bridgebot:test.local", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["displayname"], "bridgebot");
}

#[tokio::test]
async fn the_sender_survives_a_restart() {
    let (mut s, _files) = server_with_bridge("null").await;
    s.restart().await;
    let (st, b) = s.get(WHOAMI, Some(AS_TOKEN)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user_id"], "@bridgebot:test.local");
}

#[tokio::test]
async fn bad_registration_files_stop_the_start_naming_file_and_key() {
    let good = bridge_registration("null");
    let other = good
        .replace("id: bridge", "id: other")
        .replace(AS_TOKEN, "as-other")
        .replace(HS_TOKEN, "hs-other")
        .replace("sender_localpart: bridgebot", "sender_localpart: otherbot");
    assert_eq!(start_error(&[&good]).await, None);
    assert_eq!(
        start_error(&[
            &good,
            &other
                .replace("@bridge_", "@other_")
                .replace("#bridge_", "#other_")
        ])
        .await,
        None
    );
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (
            "missing as_token".into(),
            vec![good.replace(&format!("as_token: {AS_TOKEN}\n"), "")],
            "`as_token`: is required",
        ),
        (
            "missing url".into(),
            vec![good.replace("url: null\n", "")],
            "`url`: is required",
        ),
        (
            "bad regex".into(),
            vec![good.replace("\"@bridge_.*:test.local\"", "\"@bridge_(:test.local\"")],
            "`namespaces.users[0].regex`: not a valid regex",
        ),
        (
            "exclusive not a bool".into(),
            vec![good.replace("exclusive: false", "exclusive: maybe")],
            "`namespaces.users[1].exclusive`",
        ),
        (
            "not YAML".into(),
            vec!["id: [unclosed".into()],
            "not valid YAML",
        ),
        (
            "same id twice".into(),
            vec![good.clone(), other.replace("id: other", "id: bridge")],
            "`id`: \"bridge\" is also the id in",
        ),
        (
            "same as_token twice".into(),
            vec![good.clone(), other.replace("as-other", AS_TOKEN)],
            "`as_token`: the same token is used in",
        ),
        (
            "missing hs_token".into(),
            vec![good.replace(&format!("hs_token: {HS_TOKEN}\n"), "")],
            "`hs_token`: is required",
        ),
        (
            "the same exclusive namespace twice".into(),
            vec![good.clone(), other.clone()],
            "`namespaces.users`: \"@bridge_.*:test.local\" can name the same ids as \"@bridge_.*:test.local\" of bridge",
        ),
        (
            "exclusive namespaces that overlap".into(),
            vec![
                good.clone(),
                other
                    .replace("@bridge_.*:test.local", "@bridge_irc_[a-z]+:test.local")
                    .replace("#bridge_", "#other_"),
            ],
            "`namespaces.users`: \"@bridge_irc_[a-z]+:test.local\" can name the same ids as \"@bridge_.*:test.local\" of bridge",
        ),
        (
            "a sender in another's exclusive namespace".into(),
            vec![
                good.clone(),
                other
                    .replace("@bridge_", "@other_")
                    .replace("#bridge_", "#other_")
                    .replace("sender_localpart: otherbot", "sender_localpart: bridge_bot"),
            ],
            "`sender_localpart`: @bridge_bot:test.local is in an exclusive user namespace of bridge",
        ),
    ];
    for (what, files, expected) in cases {
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let err = start_error(&refs)
            .await
            .unwrap_or_else(|| panic!("{what}: the server started"));
        assert!(
            err.contains("registration-"),
            "{what}: no file named: {err}"
        );
        assert!(err.contains(expected), "{what}: {err}");
    }
}

#[tokio::test]
async fn a_missing_registration_file_stops_the_start() {
    let reg = RegistrationFiles::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.data_dir = dir.path().to_owned();
    config.app_services = vec![reg.dir().join("absent.yaml")];
    let err = match myelin::server::start(config).await {
        Ok(_) => panic!("the server started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("absent.yaml") && err.contains("cannot read it"),
        "{err}"
    );
}

// ------------------------------------------------------------ masquerading

#[tokio::test]
async fn an_as_token_acts_as_registered_users_of_its_namespace_only() {
    let (s, _files) = server_with_bridge("null").await;
    let alice = s.user("alice").await;
    let ghost_id = ghost(&s, "bridge_alice").await;
    let (st, b) = s.get(&whoami_as(&ghost_id), Some(AS_TOKEN)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user_id"], ghost_id);
    // The sender named explicitly.
    let (st, b) = s
        .get(&whoami_as("@bridgebot:test.local"), Some(AS_TOKEN))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // Outside the namespace, and not registered yet: 403 M_FORBIDDEN (Synapse).
    assert_error(
        &s.get(&whoami_as(&alice.user_id), Some(AS_TOKEN)).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(&whoami_as("@bridge_nobody:test.local"), Some(AS_TOKEN))
            .await,
        403,
        "M_FORBIDDEN",
    );
    // A user's own token ignores user_id.
    let (st, b) = s.get(&whoami_as(&ghost_id), alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user_id"], alice.user_id);
    // A non-exclusive namespace may be masqueraded as too.
    let shared = ghost(&s, "shared_bob").await;
    let (st, b) = s.get(&whoami_as(&shared), Some(AS_TOKEN)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user_id"], shared);
}

#[tokio::test]
async fn an_as_token_acts_on_an_existing_device_of_its_user() {
    let (s, _files) = server_with_bridge("null").await;
    let (st, b) = s
        .post(REGISTER, Some(AS_TOKEN), json!({"type": "m.login.application_service", "username": "bridge_dev", "device_id": "GHOSTDEV"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["device_id"], "GHOSTDEV");
    let user = b["user_id"].as_str().unwrap().to_owned();
    let path = format!("{}&org.matrix.msc3202.device_id=GHOSTDEV", whoami_as(&user));
    let (st, b) = s.get(&path, Some(AS_TOKEN)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user_id"], user);
    assert_eq!(b["device_id"], "GHOSTDEV");
    // A device the user does not have: 400 M_EXCLUSIVE (Synapse, MSC3202).
    let path = format!("{}&org.matrix.msc3202.device_id=NOPE", whoami_as(&user));
    assert_error(&s.get(&path, Some(AS_TOKEN)).await, 400, "M_EXCLUSIVE");
}

// ------------------------------------------------------ register and login

#[tokio::test]
async fn application_service_registration() {
    let (s, _files) = server_with_bridge("null").await;
    // With a login, unless inhibited.
    let (st, b) = s
        .post(REGISTER, Some(AS_TOKEN), as_register("bridge_one"))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let session = Session::from_answer(&b);
    assert_eq!(session.user_id, "@bridge_one:test.local");
    let (st, b) = s.get(WHOAMI, session.token()).await;
    assert_eq!(
        (st, b["user_id"].clone()),
        (StatusCode::OK, json!("@bridge_one:test.local"))
    );
    let mut inhibited = as_register("bridge_two");
    inhibited["inhibit_login"] = json!(true);
    let (st, b) = s.post(REGISTER, Some(AS_TOKEN), inhibited).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"user_id": "@bridge_two:test.local"}));
    // Taken.
    assert_error(
        &s.post(REGISTER, Some(AS_TOKEN), as_register("bridge_one"))
            .await,
        400,
        "M_USER_IN_USE",
    );
    // Outside the namespace.
    assert_error(
        &s.post(REGISTER, Some(AS_TOKEN), as_register("carol")).await,
        400,
        "M_EXCLUSIVE",
    );
    // No username, no token, an unknown token.
    assert_error(
        &s.post(
            REGISTER,
            Some(AS_TOKEN),
            json!({"type": "m.login.application_service"}),
        )
        .await,
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &s.post(REGISTER, None, as_register("bridge_three")).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &s.post(REGISTER, Some("not-a-token"), as_register("bridge_three"))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    // A user's access token is no application service's.
    assert_error(
        &s.post(REGISTER, session.token(), as_register("bridge_three"))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn application_service_registration_works_with_registration_closed() {
    let files = RegistrationFiles::new(&[&bridge_registration("null")]);
    let paths = files.paths.clone();
    let s = TestServer::start_with(|c| {
        c.app_services = paths;
        c.registration.enabled = false;
    })
    .await;
    let (st, b) = s
        .post(REGISTER, Some(AS_TOKEN), as_register("bridge_one"))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn exclusive_user_names_are_refused_to_everyone_else() {
    let (s, _files) = server_with_bridge("null").await;
    for name in ["bridge_mallory", "bridgebot"] {
        let (st, b) = s
            .post(
                REGISTER,
                None,
                json!({"username": name, "password": "a-long-passphrase"}),
            )
            .await;
        assert_eq!(
            (st.as_u16(), b["errcode"].clone()),
            (400, json!("M_EXCLUSIVE")),
            "{name}: {b}"
        );
        assert_error(
            &s.get(
                &format!("/_matrix/client/v3/register/available?username={name}"),
                None,
            )
            .await,
            400,
            "M_EXCLUSIVE",
        );
    }
    // A non-exclusive namespace is open to all.
    let (st, b) = s
        .post(REGISTER, None, json!({"username": "shared_zed", "password": "a-long-passphrase", "auth": {"type": "m.login.dummy"}}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn application_service_login() {
    let (s, _files) = server_with_bridge("null").await;
    let (st, b) = s.get(LOGIN, None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(
        b["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.application_service"),
        "{b}"
    );
    let user = ghost(&s, "bridge_login").await;
    let login = |user: &str| json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": user}});
    let (st, b) = s.post(LOGIN, Some(AS_TOKEN), login(&user)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let session = Session::from_answer(&b);
    assert_eq!(session.user_id, user);
    // The legacy `user` field, by localpart.
    let (st, b) = s
        .post(
            LOGIN,
            Some(AS_TOKEN),
            json!({"type": "m.login.application_service", "user": "bridge_login"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let alice = s.user("alice").await;
    // Outside its namespaces: M_EXCLUSIVE, as the spec says.
    assert_error(
        &s.post(LOGIN, Some(AS_TOKEN), login(&alice.user_id)).await,
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &s.post(LOGIN, Some(AS_TOKEN), login("@bridge_absent:test.local"))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.post(LOGIN, None, login(&user)).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &s.post(LOGIN, alice.token(), login(&user)).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn without_application_services_login_offers_no_such_flow() {
    let s = TestServer::start().await;
    let (_, b) = s.get(LOGIN, None).await;
    assert!(
        !b["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.application_service"),
        "{b}"
    );
}

// ---------------------------------------------------------------- aliases

/// Both ways of making `#{local}:test.local` (`PUT /directory/room`,
/// `createRoom`'s `room_alias_name`) are 400 `M_EXCLUSIVE` for `token`.
async fn alias_refused(s: &TestServer, token: Option<&str>, local: &str, room: &str) {
    let path = format!(
        "/_matrix/client/v3/directory/room/{}",
        enc(&format!("#{local}:test.local"))
    );
    let put = s.put(&path, token, json!({"room_id": room})).await;
    assert_error_for(&format!("PUT {local}"), &put, 400, "M_EXCLUSIVE");
    let create = s
        .post(
            "/_matrix/client/v3/createRoom",
            token,
            json!({"room_alias_name": local}),
        )
        .await;
    assert_error_for(&format!("createRoom {local}"), &create, 400, "M_EXCLUSIVE");
}

#[tokio::test]
async fn exclusive_aliases_are_the_services_own() {
    let (s, _files) = server_with_bridge("null").await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let alias_path = |a: &str| format!("/_matrix/client/v3/directory/room/{}", enc(a));
    alias_refused(&s, alice.token(), "bridge_x", &room).await;
    // Others are free; the service may take its own.
    let (st, b) = s
        .put(
            &alias_path("#alice:test.local"),
            alice.token(),
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, created) = s
        .post(
            "/_matrix/client/v3/createRoom",
            Some(AS_TOKEN),
            json!({"room_alias_name": "bridge_y"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let (st, b) = s
        .get(&alias_path("#bridge_y:test.local"), Some(AS_TOKEN))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["room_id"], created["room_id"]);

    // The service's token makes no alias outside its alias namespace, by
    // either way of making one.
    alias_refused(&s, Some(AS_TOKEN), "other", &room).await;
    let (st, _) = s.get(&alias_path("#other:test.local"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // An alias the service made for alice's room: alice (who may change the
    // room's canonical alias) cannot delete it; the service cannot delete
    // alice's alias; each deletes its own.
    let (st, b) = s
        .put(
            &alias_path("#bridge_z:test.local"),
            Some(AS_TOKEN),
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_error(
        &s.delete(&alias_path("#bridge_z:test.local"), alice.token(), None)
            .await,
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &s.delete(&alias_path("#alice:test.local"), Some(AS_TOKEN), None)
            .await,
        400,
        "M_EXCLUSIVE",
    );
    for (alias, token) in [
        ("#bridge_z:test.local", Some(AS_TOKEN)),
        ("#alice:test.local", alice.token()),
    ] {
        let (st, b) = s.delete(&alias_path(alias), token, None).await;
        assert_eq!(st, StatusCode::OK, "{alias}: {b}");
        let (st, _) = s.get(&alias_path(alias), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{alias}");
    }
    // The service's own namespace, unknown alias: 404.
    assert_error(
        &s.delete(&alias_path("#bridge_gone:test.local"), Some(AS_TOKEN), None)
            .await,
        404,
        "M_NOT_FOUND",
    );
}

// -------------------------------------------------------------- timestamps

#[tokio::test]
async fn application_services_set_the_timestamp_of_what_they_send() {
    let (s, _files) = server_with_bridge("null").await;
    let user = ghost(&s, "bridge_ts").await;
    let (st, b) = s
        .post(
            &format!("/_matrix/client/v3/createRoom?user_id={}", enc(&user)),
            Some(AS_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let room = b["room_id"].as_str().unwrap().to_owned();
    let send = format!(
        "{}?user_id={}&ts=1234567890",
        room_path(&room, &format!("/send/m.room.message/{}", next_txn())),
        enc(&user)
    );
    let (st, b) = s
        .put(&send, Some(AS_TOKEN), text_content("from the past"))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let event_id = b["event_id"].as_str().unwrap().to_owned();
    let state = format!(
        "{}?user_id={}&ts=1234567999",
        room_path(&room, "/state/m.room.topic"),
        enc(&user)
    );
    let (st, b) = s.put(&state, Some(AS_TOKEN), json!({"topic": "old"})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let topic_id = b["event_id"].as_str().unwrap().to_owned();
    let get = |id: &str| room_path(&room, &format!("/event/{}", enc(id)));
    let (_, ev) = s
        .get(
            &format!("{}?user_id={}", get(&event_id), enc(&user)),
            Some(AS_TOKEN),
        )
        .await;
    assert_eq!(ev["origin_server_ts"], 1234567890, "{ev}");
    assert_eq!(ev["sender"], user);
    let (_, ev) = s
        .get(
            &format!("{}?user_id={}", get(&topic_id), enc(&user)),
            Some(AS_TOKEN),
        )
        .await;
    assert_eq!(ev["origin_server_ts"], 1234567999, "{ev}");
    // Anyone else's `ts` is ignored.
    let alice = s.user("alice").await;
    let own = create_room(&s, &alice, json!({})).await;
    let send = format!(
        "{}?ts=1234567890",
        room_path(&own, &format!("/send/m.room.message/{}", next_txn()))
    );
    let (st, b) = s.put(&send, alice.token(), text_content("now")).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, ev) = s
        .get(
            &room_path(
                &own,
                &format!("/event/{}", enc(b["event_id"].as_str().unwrap())),
            ),
            alice.token(),
        )
        .await;
    assert!(
        ev["origin_server_ts"].as_i64().unwrap() > 1_600_000_000_000,
        "{ev}"
    );
}

// ------------------------------------------------------------- rate limits

#[tokio::test]
async fn rate_limited_false_lifts_the_client_limit() {
    let limited = bridge_registration("null").replace("rate_limited: false", "rate_limited: true");
    for (registration, expect_limit) in [(bridge_registration("null"), false), (limited, true)] {
        let files = RegistrationFiles::new(&[&registration]);
        let paths = files.paths.clone();
        let s = TestServer::start_with(|c| {
            c.app_services = paths;
            c.rate_limits.enabled = true;
            c.rate_limits.per_second = 0.001;
            c.rate_limits.burst = 3;
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(s.get(WHOAMI, Some(AS_TOKEN)).await.0.as_u16());
        }
        assert_eq!(statuses.contains(&429), expect_limit, "{statuses:?}");
    }
}

// -------------------------------------------------------------------- ping

#[tokio::test]
async fn ping_reaches_the_application_service() {
    let fake = FakeAppService::start().await;
    let (s, _files) = server_with_bridge(&format!("\"{}\"", fake.url)).await;
    let path = "/_matrix/client/v1/appservice/bridge/ping";
    let (st, b) = s
        .post(path, Some(AS_TOKEN), json!({"transaction_id": "t1"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(b["duration_ms"].as_u64().is_some(), "{b}");
    let seen = fake.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/_matrix/app/v1/ping")
    );
    assert_eq!(
        seen.authorization.as_deref(),
        Some(&*format!("Bearer {HS_TOKEN}"))
    );
    assert_eq!(seen.body, json!({"transaction_id": "t1"}));
    // Without a transaction id.
    let (st, b) = s.post(path, Some(AS_TOKEN), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(fake.next().await.body, json!({}));
    // The service answers an error: 502 M_BAD_STATUS with its status and body.
    fake.answer_next(500, json!({"errcode": "M_UNKNOWN", "error": "down"}));
    let (st, b) = s.post(path, Some(AS_TOKEN), json!({})).await;
    assert_eq!(
        (st.as_u16(), b["errcode"].clone()),
        (502, json!("M_BAD_STATUS")),
        "{b}"
    );
    assert_eq!(b["status"], 500, "{b}");
    assert!(b["body"].as_str().unwrap().contains("down"), "{b}");
    // Another service's id, a user's token, no token.
    assert_error(
        &s.post(
            "/_matrix/client/v1/appservice/other/ping",
            Some(AS_TOKEN),
            json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let alice = s.user("alice").await;
    assert_error(
        &s.post(path, alice.token(), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&s.post(path, None, json!({})).await, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn ping_without_a_url_or_a_listener() {
    let (s, _files) = server_with_bridge("null").await;
    let path = "/_matrix/client/v1/appservice/bridge/ping";
    assert_error(
        &s.post(path, Some(AS_TOKEN), json!({})).await,
        400,
        "M_URL_NOT_SET",
    );
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("\"http://{}\"", closed.local_addr().unwrap());
    drop(closed);
    let (s, _files) = server_with_bridge(&url).await;
    assert_error(
        &s.post(path, Some(AS_TOKEN), json!({})).await,
        502,
        "M_CONNECTION_FAILED",
    );
}

// ------------------------------------------------------------------- admin

#[tokio::test]
async fn the_admin_user_list_names_the_application_service() {
    let (s, _files) = server_with_bridge("null").await;
    let admin = s.admin("root").await;
    let ghost_id = ghost(&s, "bridge_listed").await;
    let shared = ghost(&s, "shared_listed").await;
    let (st, b) = s
        .get("/_synapse/admin/v2/users?limit=100", admin.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let of = |id: &str| -> Value {
        b["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {b}"))["appservice_id"]
            .clone()
    };
    assert_eq!(of(&ghost_id), "bridge");
    assert_eq!(of("@bridgebot:test.local"), "bridge");
    // Registered in a non-exclusive namespace: not the service's (Synapse).
    assert_eq!(of(&shared), Value::Null);
    assert_eq!(of(&admin.user_id), Value::Null);
    let (st, b) = s
        .get(
            &format!("/_synapse/admin/v2/users/{}", enc(&ghost_id)),
            admin.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["appservice_id"], "bridge");
}

// ------------------------------------------------------ network room lists

const PUBLIC_ROOMS: &str = "/_matrix/client/v3/publicRooms";

fn network_list(network: &str, room: &str) -> String {
    format!(
        "/_matrix/client/v3/directory/list/appservice/{}/{}",
        enc(network),
        enc(room)
    )
}

/// The room ids of a `/publicRooms` answer, in its order.
fn listed(b: &Value) -> Vec<String> {
    b["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk: {b}"))
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn public_rooms_post(s: &TestServer, token: Option<&str>, body: Value) -> Vec<String> {
    let (st, b) = s.post(PUBLIC_ROOMS, token, body).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    listed(&b)
}

/// The rooms of one network's list (`third_party_instance_id`).
async fn network_rooms(s: &TestServer, token: Option<&str>, instance: &str) -> Vec<String> {
    public_rooms_post(s, token, json!({"third_party_instance_id": instance})).await
}

#[tokio::test]
async fn a_service_publishes_rooms_in_its_network_lists_apart_from_the_main_one() {
    let (s, _files) = server_with_bridge("null").await;
    let alice = s.user("alice").await;
    let token = alice.token();
    let bridged = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "name": "Bridged", "topic": "from gitter"}),
    )
    .await;
    let main = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "name": "Main"}),
    )
    .await;

    let (st, b) = s
        .put(
            &network_list("gitter", &bridged),
            Some(AS_TOKEN),
            json!({"visibility": "public"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b, json!({}));

    // Not in the main list, by GET or POST (sytest: "AS and main public
    // room lists are separate").
    let (st, b) = s.get(PUBLIC_ROOMS, None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(listed(&b), std::slice::from_ref(&main));
    assert_eq!(
        public_rooms_post(&s, token, json!({})).await,
        std::slice::from_ref(&main)
    );
    // In its network's list, shaped as the main list's rooms.
    let (st, b) = s
        .post(
            PUBLIC_ROOMS,
            token,
            json!({"third_party_instance_id": "bridge|gitter"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(listed(&b), std::slice::from_ref(&bridged));
    assert_eq!(b["total_room_count_estimate"], 1, "{b}");
    let room = &b["chunk"][0];
    assert_eq!(room["name"], "Bridged", "{b}");
    assert_eq!(room["topic"], "from gitter", "{b}");
    assert_eq!(room["num_joined_members"], 1, "{b}");
    assert_eq!(room["join_rule"], "public", "{b}");
    // Another network of the service, or another service: empty.
    for other in ["bridge|irc", "other|gitter", "bridge|"] {
        assert_eq!(
            network_rooms(&s, token, other).await,
            Vec::<String>::new(),
            "{other}"
        );
    }
    // Every network: both, each once, the search term applying.
    let mut all = public_rooms_post(&s, token, json!({"include_all_networks": true})).await;
    all.sort();
    let mut both = vec![bridged.clone(), main.clone()];
    both.sort();
    assert_eq!(all, both);
    assert_eq!(
        public_rooms_post(
            &s,
            token,
            json!({"include_all_networks": true, "filter": {"generic_search_term": "gitter"}})
        )
        .await,
        std::slice::from_ref(&bridged)
    );
    // `include_all_networks: false` is the main list.
    assert_eq!(
        public_rooms_post(&s, token, json!({"include_all_networks": false})).await,
        std::slice::from_ref(&main)
    );

    // Published in the main directory too: in both lists, once in all.
    let (st, b) = s
        .put(
            &format!("/_matrix/client/v3/directory/list/room/{}", enc(&bridged)),
            token,
            json!({"visibility": "public"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(
        public_rooms_post(&s, token, json!({}))
            .await
            .contains(&bridged)
    );
    let (_, b) = s
        .post(PUBLIC_ROOMS, token, json!({"include_all_networks": true}))
        .await;
    assert_eq!(b["total_room_count_estimate"], 2, "{b}");

    // Publishing twice is no change; an empty body means public (Synapse).
    let (st, b) = s
        .put(&network_list("gitter", &bridged), Some(AS_TOKEN), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        network_rooms(&s, token, "bridge|gitter").await,
        std::slice::from_ref(&bridged)
    );
    // `private` takes it off that list only; DELETE does the same, twice too.
    let (st, b) = s
        .put(
            &network_list("gitter", &bridged),
            Some(AS_TOKEN),
            json!({"visibility": "private"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        network_rooms(&s, token, "bridge|gitter").await,
        Vec::<String>::new()
    );
    assert!(
        public_rooms_post(&s, token, json!({}))
            .await
            .contains(&bridged)
    );
    let (st, _) = s
        .put(&network_list("irc", &bridged), Some(AS_TOKEN), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    for _ in 0..2 {
        let (st, b) = s
            .delete(&network_list("irc", &bridged), Some(AS_TOKEN), None)
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        assert_eq!(b, json!({}));
    }
    assert_eq!(
        network_rooms(&s, token, "bridge|irc").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_service_acting_as_its_user_publishes_in_the_service_s_list() {
    let (s, _files) = server_with_bridge("null").await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let ghost_id = ghost(&s, "bridge_publisher").await;
    let path = format!(
        "{}?user_id={}",
        network_list("gitter", &room),
        enc(&ghost_id)
    );
    let (st, b) = s
        .put(&path, Some(AS_TOKEN), json!({"visibility": "public"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        network_rooms(&s, alice.token(), "bridge|gitter").await,
        [room]
    );
}

#[tokio::test]
async fn only_a_service_edits_network_lists_and_bad_requests_change_nothing() {
    let (s, _files) = server_with_bridge("null").await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let path = network_list("gitter", &room);
    let public = json!({"visibility": "public"});

    assert_error(
        &s.put(&path, None, public.clone()).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &s.put(&path, Some("not-a-token"), public.clone()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    // A user, even one who may publish the room in the main directory.
    assert_error(
        &s.put(&path, alice.token(), public.clone()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.delete(&path, alice.token(), None).await,
        403,
        "M_FORBIDDEN",
    );
    for bad in [json!({"visibility": "secret"}), json!({"visibility": 1})] {
        assert_error(
            &s.put(&path, Some(AS_TOKEN), bad.clone()).await,
            400,
            "M_BAD_JSON",
        );
    }
    assert_error(
        &s.request_raw(reqwest::Method::PUT, &path, Some(AS_TOKEN), "{nope")
            .await,
        400,
        "M_NOT_JSON",
    );
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        assert_error(
            &s.request(
                method.clone(),
                &network_list("gitter", "!unknown:test.local"),
                Some(AS_TOKEN),
                Some(public.clone()),
            )
            .await,
            404,
            "M_NOT_FOUND",
        );
        assert_error(
            &s.request(
                method,
                &network_list("gitter", "not-a-room-id"),
                Some(AS_TOKEN),
                Some(public.clone()),
            )
            .await,
            400,
            "M_INVALID_PARAM",
        );
    }
    // Nothing was published by any of them.
    assert_eq!(
        public_rooms_post(&s, alice.token(), json!({"include_all_networks": true})).await,
        Vec::<String>::new()
    );
    assert_eq!(
        s.sql_count("SELECT COUNT(*) FROM appservice_room_list")
            .await,
        0
    );

    // /publicRooms: a third_party_instance_id that is not `service|network`,
    // or one beside include_all_networks (Synapse: 400).
    for bad in ["gitter", "a|b|c"] {
        assert_error(
            &s.post(
                PUBLIC_ROOMS,
                alice.token(),
                json!({"third_party_instance_id": bad}),
            )
            .await,
            400,
            "M_INVALID_PARAM",
        );
    }
    let (st, b) = s
        .post(
            PUBLIC_ROOMS,
            alice.token(),
            json!({"include_all_networks": true, "third_party_instance_id": "bridge|gitter"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
}

#[tokio::test]
async fn a_purged_room_leaves_the_network_lists() {
    let (s, _files) = server_with_bridge("null").await;
    let admin = s.admin("root").await;
    let alice = s.user("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let kept = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    for r in [&room, &kept] {
        let (st, b) = s
            .put(&network_list("gitter", r), Some(AS_TOKEN), json!({}))
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
    }
    let (st, b) = s
        .post(
            &format!("/_dendrite/admin/purgeRoom/{room}"),
            admin.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    s.poll_get(
        &format!("/_synapse/admin/v2/rooms/{room}/delete_status"),
        admin.token(),
        std::time::Duration::from_secs(20),
        |body| body["results"][0]["status"] == "complete",
    )
    .await;
    assert_eq!(
        network_rooms(&s, alice.token(), "bridge|gitter").await,
        [kept]
    );
    assert_eq!(
        s.sql_count(&format!(
            "SELECT COUNT(*) FROM appservice_room_list WHERE room_id = '{room}'"
        ))
        .await,
        0
    );
}
