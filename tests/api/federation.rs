//! Federation, first part (issue 22): the TLS listener, `.well-known`,
//! `/version`, other servers' keys (fetched, checked, cached, the notary
//! API), `X-Matrix` authentication of incoming requests, the read-only
//! queries (profile, directory, devices, keys) and remote profiles asked
//! of their server. Two servers federate on loopback over TLS with the
//! test CA (`harness/federation.rs`).

use reqwest::{Method, StatusCode};
use ruma::CanonicalJsonValue;
use ruma::signatures::{PublicKeyMap, PublicKeySet};
use serde_json::{Value, json};

use crate::harness::*;

/// The keys a key answer lists, as a verification map for `server`.
fn key_map(answer: &Value, server: &str) -> PublicKeyMap {
    let mut set = PublicKeySet::new();
    for (id, k) in answer["verify_keys"].as_object().expect("verify_keys") {
        set.insert(
            id.clone(),
            ruma::serde::Base64::parse(k["key"].as_str().unwrap()).unwrap(),
        );
    }
    let mut map = PublicKeyMap::new();
    map.insert(server.to_owned(), set);
    map
}

/// Whether `answer` carries a valid signature of each of `signers`
/// (given as `(name, its own key answer)`).
fn verify(answer: &Value, signers: &[(&str, &Value)]) -> Result<(), String> {
    let mut map = PublicKeyMap::new();
    for (name, keys) in signers {
        map.extend(key_map(keys, name));
    }
    let CanonicalJsonValue::Object(mut obj) = CanonicalJsonValue::try_from(answer.clone()).unwrap()
    else {
        panic!("not an object")
    };
    // Only the signers named are checked.
    if let Some(CanonicalJsonValue::Object(sigs)) = obj.get_mut("signatures") {
        sigs.retain(|k, _| signers.iter().any(|(n, _)| n == k));
    }
    ruma::signatures::verify_json(&map, &obj).map_err(|e| e.to_string())
}

/// `GET /user/devices/{who}` on `target`, signed with `key`.
async fn devices_as(target: &TestServer, key: &ServerKey, who: &Session) -> (StatusCode, Value) {
    let path = format!(
        "/_matrix/federation/v1/user/devices/{}",
        who.user_id.replace('@', "%40").replace(':', "%3A")
    );
    signed_request(target, key, Method::GET, &path, None, Destination::Target).await
}

/// `body` is the Matrix error `errcode` with `status`.
#[track_caller]
fn assert_errcode(st: StatusCode, body: &Value, status: StatusCode, errcode: &str) {
    assert_eq!(
        (st, body["errcode"].as_str()),
        (status, Some(errcode)),
        "{body}"
    );
}

/// Uploads `who`'s device keys (returned), one one-time key
/// `signed_curve25519:AAAAAQ` holding `otk`, and master and self-signing keys.
async fn upload_all_keys(server: &TestServer, who: &Session, otk: &str) -> Value {
    let keys = own_device_keys(who);
    upload_keys(
        server,
        who,
        json!({
            "device_keys": keys,
            "one_time_keys": {"signed_curve25519:AAAAAQ": {"key": otk, "signatures": {}}},
        }),
    )
    .await;
    upload_master_and_self_signing(server, who).await;
    keys
}

/// Uploads master and self-signing keys for `who`.
async fn upload_master_and_self_signing(server: &TestServer, who: &Session) {
    let (master, ssk) = (SigningKey::generate(), SigningKey::generate());
    let user = &who.user_id;
    let (st, body) = upload_signing_keys(
        server,
        who,
        json!({
            "master_key": master.cross_signing_key(user, "master"),
            "self_signing_key": master.sign(user, &ssk.cross_signing_key(user, "self_signing")),
        }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_tls_listener_serves_keys_version_and_well_known() {
    let a = TestServer::start_federating_with(|c| {
        c.federation.well_known_server = Some("matrix.example.org:443".into());
    })
    .await;
    let (st, keys) = a.fed_get("/_matrix/key/v2/server").await;
    assert_eq!(st, StatusCode::OK, "{keys}");
    assert_eq!(keys["server_name"], a.server_name.as_str());
    assert!(
        keys["server_name"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    verify(&keys, &[(&a.server_name, &keys)]).expect("self-signed");
    // The plain listener serves federation too (a reverse proxy's set-up).
    let (st, plain) = a.get("/_matrix/key/v2/server", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(plain["verify_keys"], keys["verify_keys"]);
    // The old path with a key id (sytest calls it): every key, as Synapse.
    let (st, by_id) = a.fed_get("/_matrix/key/v2/server/ed25519%3Aother").await;
    assert_eq!(st, StatusCode::OK, "{by_id}");
    assert_eq!(by_id["verify_keys"], keys["verify_keys"]);

    let (st, v) = a.fed_get("/_matrix/federation/v1/version").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["server"]["name"], "Myelin");
    assert!(v["server"]["version"].is_string());

    let (st, wk) = a.fed_get("/.well-known/matrix/server").await;
    assert_eq!(st, StatusCode::OK, "{wk}");
    assert_eq!(wk, json!({"m.server": "matrix.example.org:443"}));
    // Not configured: 404.
    let b = TestServer::start_federating().await;
    let (st, wk) = b.fed_get("/.well-known/matrix/server").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{wk}");
    assert_eq!(wk["errcode"], "M_NOT_FOUND");
}

#[tokio::test]
async fn signed_requests_are_authenticated() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.user("alice").await;
    let (st, _) = a
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            alice.token(),
            json!({"displayname": "Alice A"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}&field=displayname",
        alice.user_id.replace(':', "%3A").replace('@', "%40")
    );
    let b_key = b.server_key();

    // Signed by B with its published key: A fetches B's keys and answers.
    let (st, body) =
        signed_request(&a, &b_key, Method::GET, &path, None, Destination::Target).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"displayname": "Alice A"}));
    // Without `destination` (older servers): accepted, signed for A.
    let (st, body) =
        signed_request(&a, &b_key, Method::GET, &path, None, Destination::Absent).await;
    assert_eq!(st, StatusCode::OK, "{body}");

    // No header at all.
    let resp = fed_client()
        .get(a.federation_url(&path))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["errcode"],
        "M_UNAUTHORIZED"
    );
    // A header that is not X-Matrix, and one that is garbage.
    for bad in ["Bearer abc", "X-Matrix nonsense", "X-Matrix origin=\"b\""] {
        let resp = fed_client()
            .get(a.federation_url(&path))
            .header("Authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(
            resp.json::<Value>().await.unwrap()["errcode"],
            "M_UNAUTHORIZED"
        );
    }
    // Signed for another destination.
    let (st, body) = signed_request(
        &a,
        &b_key,
        Method::GET,
        &path,
        None,
        Destination::Other("other.example.org"),
    )
    .await;
    assert_errcode(st, &body, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    // B's name and key id, another key: the signature does not verify.
    let forged = ServerKey {
        origin: b_key.origin.clone(),
        pair: {
            let der = ruma::signatures::Ed25519KeyPair::generate();
            ruma::signatures::Ed25519KeyPair::from_der(&der, b_key.pair.version().to_owned())
                .unwrap()
        },
    };
    let (st, body) =
        signed_request(&a, &forged, Method::GET, &path, None, Destination::Target).await;
    assert_errcode(st, &body, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    assert!(
        body["error"].as_str().unwrap().contains("signature"),
        "{body}"
    );
    // A key id B does not publish.
    let unknown = ServerKey::generate(b_key.origin.as_str(), "not_published");
    let (st, body) =
        signed_request(&a, &unknown, Method::GET, &path, None, Destination::Target).await;
    assert_errcode(st, &body, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    // An origin that does not answer.
    let nowhere = ServerKey::generate(&format!("127.0.0.1:{}", free_port()), "k");
    let (st, body) =
        signed_request(&a, &nowhere, Method::GET, &path, None, Destination::Target).await;
    assert_errcode(st, &body, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    // The body is signed too: a changed body fails.
    let keys_path = "/_matrix/federation/v1/user/keys/query";
    let request_body = json!({"device_keys": {alice.user_id.clone(): []}});
    let (st, body) = signed_request(
        &a,
        &b_key,
        Method::POST,
        keys_path,
        Some(request_body.clone()),
        Destination::Target,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let request = http::Request::builder()
        .method("POST")
        .uri(keys_path)
        .body(serde_json::to_vec(&request_body).unwrap())
        .unwrap();
    let header = ruma::api::federation::authentication::XMatrix::sign_http_request(
        &request,
        ruma::api::federation::authentication::XMatrixSigningInput::new(
            b_key.origin.clone(),
            ruma::ServerName::parse(&a.server_name).unwrap(),
            &b_key.pair,
        ),
    )
    .unwrap();
    let resp = fed_client()
        .post(a.federation_url(keys_path))
        .header("Authorization", http::HeaderValue::from(&header))
        .json(&json!({"device_keys": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_queries_answer_for_local_users_and_aliases() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let b_key = b.server_key();
    let alice = a.user("alice").await;
    let get = |path: String| {
        let (a, b_key) = (&a, &b_key);
        async move { signed_request(a, b_key, Method::GET, &path, None, Destination::Target).await }
    };
    let enc = |s: &str| {
        s.replace('@', "%40")
            .replace(':', "%3A")
            .replace('#', "%23")
            .replace('!', "%21")
    };

    // Profile: all of it, a field, an unknown user, another server's user.
    a.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
        alice.token(),
        json!({"displayname": "Alice"}),
    )
    .await;
    a.put(
        &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id),
        alice.token(),
        json!({"avatar_url": "mxc://a/b"}),
    )
    .await;
    let (st, p) = get(format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        enc(&alice.user_id)
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(
        p,
        json!({"displayname": "Alice", "avatar_url": "mxc://a/b"})
    );
    let (st, p) = get(format!(
        "/_matrix/federation/v1/query/profile?user_id={}&field=avatar_url",
        enc(&alice.user_id)
    ))
    .await;
    assert_eq!(
        (st, p),
        (StatusCode::OK, json!({"avatar_url": "mxc://a/b"}))
    );
    let (st, p) = get("/_matrix/federation/v1/query/profile".to_owned()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{p}");

    // Directory.
    let room = create_room(&a, &alice, json!({})).await;
    let alias = format!("#lobby:{}", a.server_name);
    let (st, body) = a
        .put(
            &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
            alice.token(),
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, d) = get(format!(
        "/_matrix/federation/v1/query/directory?room_alias={}",
        enc(&alias)
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{d}");
    assert_eq!(d, json!({"room_id": room, "servers": [a.server_name]}));
    // Unknown users and aliases, and those of other servers.
    let (profile, directory) = (
        "/_matrix/federation/v1/query/profile?user_id=",
        "/_matrix/federation/v1/query/directory?room_alias=",
    );
    for (path, id, status, errcode) in [
        (
            profile,
            a.user_id("nobody"),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            profile,
            "@x:elsewhere.example".into(),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            directory,
            format!("#none:{}", a.server_name),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            directory,
            "#x:elsewhere.example".into(),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
    ] {
        let (st, body) = get(format!("{path}{}", enc(&id))).await;
        assert_errcode(st, &body, status, errcode);
    }

    // Devices and keys: alice's device keys, a one-time key, cross-signing.
    let keys = upload_all_keys(&a, &alice, "b3RrMQ").await;
    let (st, d) = get(format!(
        "/_matrix/federation/v1/user/devices/{}",
        enc(&alice.user_id)
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{d}");
    assert_eq!(d["user_id"], alice.user_id.as_str());
    assert!(d["stream_id"].is_u64(), "{d}");
    let devices = d["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{d}");
    assert_eq!(devices[0]["device_id"], alice.device_id.as_str());
    assert_eq!(devices[0]["keys"]["keys"], keys["keys"]);
    assert!(
        devices[0]["keys"]["unsigned"]
            .get("device_display_name")
            .is_none(),
        "{d}"
    );
    assert_eq!(d["master_key"]["usage"], json!(["master"]), "{d}");
    assert_eq!(
        d["self_signing_key"]["usage"],
        json!(["self_signing"]),
        "{d}"
    );
    // A user with no devices; another server's user.
    let (st, d) = get(format!(
        "/_matrix/federation/v1/user/devices/{}",
        enc(&a.user_id("nobody"))
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{d}");
    assert_eq!(d["devices"], json!([]));
    let (st, d) = get(format!(
        "/_matrix/federation/v1/user/devices/{}",
        enc("@x:elsewhere.example")
    ))
    .await;
    assert_errcode(st, &d, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let (st, q) = signed_request(
        &a,
        &b_key,
        Method::POST,
        "/_matrix/federation/v1/user/keys/query",
        Some(json!({"device_keys": {alice.user_id.clone(): [], "@x:elsewhere.example": []}})),
        Destination::Target,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{q}");
    assert_eq!(
        q["device_keys"][&alice.user_id][&alice.device_id]["keys"], keys["keys"],
        "{q}"
    );
    assert!(
        q["device_keys"].get("@x:elsewhere.example").is_none(),
        "{q}"
    );
    assert_eq!(q["master_keys"][&alice.user_id]["usage"], json!(["master"]));
    assert!(
        q.get("user_signing_keys").is_none() && q.get("failures").is_none(),
        "{q}"
    );

    let claim = |body: Value| {
        let (a, b_key) = (&a, &b_key);
        async move {
            signed_request(
                a,
                b_key,
                Method::POST,
                "/_matrix/federation/v1/user/keys/claim",
                Some(body),
                Destination::Target,
            )
            .await
        }
    };
    let wanted = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let (st, c) = claim(wanted.clone()).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(
        c["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:AAAAAQ"]["key"],
        "b3RrMQ",
        "{c}"
    );
    // Handed out once.
    let (st, c) = claim(wanted).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert!(c["one_time_keys"].get(&alice.user_id).is_none(), "{c}");
    let (st, c) = claim(json!({"nope": 1})).await;
    assert_errcode(st, &c, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

#[tokio::test]
async fn keys_are_fetched_cached_and_served_by_the_notary() {
    let a = TestServer::start_federating().await;
    let mut b = TestServer::start_federating().await;
    let (_, a_keys) = a.fed_get("/_matrix/key/v2/server").await;
    let (_, b_keys) = b.fed_get("/_matrix/key/v2/server").await;
    let b_name = b.server_name.clone();

    // A asks B for its keys, and hands them on signed by both.
    let (st, q) = a.fed_get(&format!("/_matrix/key/v2/query/{b_name}")).await;
    assert_eq!(st, StatusCode::OK, "{q}");
    let list = q["server_keys"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{q}");
    assert_eq!(list[0]["server_name"], b_name.as_str());
    assert_eq!(list[0]["verify_keys"], b_keys["verify_keys"]);
    verify(&list[0], &[(&b_name, &b_keys)]).expect("signed by B");
    verify(&list[0], &[(&a.server_name, &a_keys)]).expect("signed by the notary A");
    // The old path with a key id gives the same.
    let (st, q_id) = a
        .fed_get(&format!("/_matrix/key/v2/query/{b_name}/ed25519%3Aany"))
        .await;
    assert_eq!(st, StatusCode::OK, "{q_id}");
    assert_eq!(q_id["server_keys"][0]["verify_keys"], b_keys["verify_keys"]);
    let bad = a
        .fed_get("/_matrix/key/v2/query/not%20a%20server/ed25519%3Aany")
        .await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
    // Its own keys, and both at once through POST.
    let (st, q) = a
        .fed_post(
            "/_matrix/key/v2/query",
            json!({"server_keys": {b_name.clone(): {}, a.server_name.clone(): {}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{q}");
    let mut names: Vec<&str> = q["server_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["server_name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    let mut expected = vec![a.server_name.as_str(), b_name.as_str()];
    expected.sort_unstable();
    assert_eq!(names, expected);

    // B stops: A answers from what it keeps, and still checks B's signatures.
    let b_key = b.server_key();
    b.running.take().unwrap().shutdown().await;
    let (st, q) = a.fed_get(&format!("/_matrix/key/v2/query/{b_name}")).await;
    assert_eq!(st, StatusCode::OK, "{q}");
    assert_eq!(
        q["server_keys"][0]["verify_keys"], b_keys["verify_keys"],
        "{q}"
    );
    let alice = a.user("alice").await;
    let (st, body) = devices_as(&a, &b_key, &alice).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // After a restart too (the table).
    let mut a = a;
    a.restart().await;
    let (st, body) = devices_as(&a, &b_key, &alice).await;
    assert_eq!(st, StatusCode::OK, "{body}");

    // A server that never answered: nothing.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let (st, q) = a.fed_get(&format!("/_matrix/key/v2/query/{nowhere}")).await;
    assert_eq!((st, q), (StatusCode::OK, json!({"server_keys": []})));
}

#[tokio::test]
async fn trusted_key_servers_are_asked_first() {
    let notary = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let (_, notary_keys) = notary.fed_get("/_matrix/key/v2/server").await;
    let (id, key) = notary_keys["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let trusted = myelin::config::TrustedKeyServer {
        server_name: notary.server_name.clone(),
        verify_keys: [(id.clone(), key["key"].as_str().unwrap().to_owned())].into(),
    };
    let a = TestServer::start_federating_with(|c| c.federation.trusted_key_servers = vec![trusted])
        .await;
    // The notary learns B's keys; then B goes away.
    let (st, q) = notary
        .fed_get(&format!("/_matrix/key/v2/query/{}", b.server_name))
        .await;
    assert_eq!(st, StatusCode::OK, "{q}");
    let b_key = b.server_key();
    let b_name = b.server_name.clone();
    let mut b = b;
    b.running.take().unwrap().shutdown().await;
    // A, never in touch with B, gets B's keys from the notary.
    let alice = a.user("alice").await;
    let (st, body) = devices_as(&a, &b_key, &alice).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, q) = a.fed_get(&format!("/_matrix/key/v2/query/{b_name}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(q["server_keys"][0]["server_name"], b_name.as_str(), "{q}");
}

#[tokio::test]
async fn remote_profiles_are_asked_of_their_server() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    b.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
        bob.token(),
        json!({"displayname": "Bob of B"}),
    )
    .await;
    // A signs, B checks A's key (fetched from A) and answers.
    let (st, p) = a
        .get(
            &format!("/_matrix/client/v3/profile/{}", bob.user_id),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["displayname"], "Bob of B");
    let (st, p) = a
        .get(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            alice.token(),
        )
        .await;
    assert_eq!(
        (st, p),
        (StatusCode::OK, json!({"displayname": "Bob of B"}))
    );
    // B's unknown user: B's 404 comes through.
    let (st, p) = a
        .get(
            &format!("/_matrix/client/v3/profile/{}", b.user_id("nobody")),
            alice.token(),
        )
        .await;
    assert_errcode(st, &p, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // A server that does not answer: 502.
    let nowhere = format!("@x:127.0.0.1:{}", free_port());
    let (st, p) = a
        .get(
            &format!("/_matrix/client/v3/profile/{nowhere}"),
            alice.token(),
        )
        .await;
    assert_errcode(st, &p, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
}

/// The default blocklist refuses loopback both ways: outgoing requests
/// (with an error that says so) and the key fetch an incoming request needs.
#[tokio::test]
async fn the_default_blocklist_refuses_loopback() {
    let b = TestServer::start_federating().await;
    let c = TestServer::start_federating_with(|c| {
        c.federation.allow_private_addresses = false;
        assert!(!c.federation.ip_range_blocklist.is_empty());
    })
    .await;
    let carol = c.user("carol").await;
    let bob = b.user("bob").await;
    let (st, p) = c
        .get(
            &format!("/_matrix/client/v3/profile/{}", bob.user_id),
            carol.token(),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{p}");
    assert!(p["error"].as_str().unwrap().contains("blocked"), "{p}");
    let (st, q) = c
        .fed_get(&format!("/_matrix/key/v2/query/{}", b.server_name))
        .await;
    assert_eq!((st, q), (StatusCode::OK, json!({"server_keys": []})));
    let path = format!(
        "/_matrix/federation/v1/user/devices/{}",
        carol.user_id.replace('@', "%40").replace(':', "%3A")
    );
    let (st, body) = signed_request(
        &c,
        &b.server_key(),
        Method::GET,
        &path,
        None,
        Destination::Target,
    )
    .await;
    assert_errcode(st, &body, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    // The allowlist lets loopback through again.
    let d = TestServer::start_federating_with(|c| {
        c.federation.allow_private_addresses = false;
        c.federation.ip_range_allowlist = vec![myelin::net::Cidr::parse("127.0.0.1").unwrap()];
    })
    .await;
    let dave = d.user("dave").await;
    let (st, p) = d
        .get(
            &format!("/_matrix/client/v3/profile/{}", bob.user_id),
            dave.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
}

/// Remote users in `/keys/query` and `/keys/claim` are asked of their
/// server; `refreshDevices` fetches a remote user's devices now and keeps
/// them, so `/keys/query` answers from them when their server is gone.
#[tokio::test]
async fn remote_keys_and_refresh_devices() {
    let a = TestServer::start_federating().await;
    let mut b = TestServer::start_federating().await;
    let admin = a.admin("admin").await;
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let bob_keys = upload_all_keys(&b, &bob, "Ym9ib3Rr").await;

    // refreshDevices: local users refused, a remote user fetched (never seen before).
    let refresh = |user: String| {
        let (a, admin) = (&a, &admin);
        async move {
            a.post(
                &format!("/_dendrite/admin/refreshDevices/{user}"),
                admin.token(),
                json!({}),
            )
            .await
        }
    };
    let (st, r) = refresh(alice.user_id.clone()).await;
    assert_errcode(st, &r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (st, r) = refresh("not-a-user".into()).await;
    assert_errcode(st, &r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (st, r) = a
        .post(
            &format!("/_dendrite/admin/refreshDevices/{}", bob.user_id),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{r}");
    let (st, r) = refresh(bob.user_id.clone()).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r, json!({"device_ids": [bob.device_id]}));
    let (st, r) = refresh(format!("@x:127.0.0.1:{}", free_port())).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{r}");

    // /keys/query of bob on A: his device and cross-signing keys.
    let q = query_keys(&a, &alice, json!({bob.user_id.clone(): []})).await;
    assert_eq!(
        q["device_keys"][&bob.user_id][&bob.device_id]["keys"], bob_keys["keys"],
        "{q}"
    );
    assert_eq!(
        q["master_keys"][&bob.user_id]["usage"],
        json!(["master"]),
        "{q}"
    );
    assert_eq!(
        q["self_signing_keys"][&bob.user_id]["usage"],
        json!(["self_signing"]),
        "{q}"
    );
    assert!(q.get("failures").is_none_or(|f| f == &json!({})), "{q}");
    // A server that does not answer: failures.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let q = query_keys(&a, &alice, json!({format!("@x:{nowhere}"): []})).await;
    assert_eq!(q["failures"][&nowhere]["status"], 503, "{q}");

    // /keys/claim of bob's one-time key through A.
    let c = claim_keys(
        &a,
        &alice,
        json!({bob.user_id.clone(): {bob.device_id.clone(): "signed_curve25519"}}),
    )
    .await;
    assert_eq!(
        c["one_time_keys"][&bob.user_id][&bob.device_id]["signed_curve25519:AAAAAQ"]["key"],
        "Ym9ib3Rr",
        "{c}"
    );

    // B stops: A answers bob's keys from what refreshDevices stored.
    b.running.take().unwrap().shutdown().await;
    let q = query_keys(&a, &alice, json!({bob.user_id.clone(): []})).await;
    assert_eq!(
        q["device_keys"][&bob.user_id][&bob.device_id]["keys"], bob_keys["keys"],
        "{q}"
    );
    assert!(q.get("failures").is_none_or(|f| f == &json!({})), "{q}");
    let c = claim_keys(
        &a,
        &alice,
        json!({bob.user_id.clone(): {bob.device_id.clone(): "signed_curve25519"}}),
    )
    .await;
    assert_eq!(c["failures"][&b.server_name]["status"], 503, "{c}");
}

/// A server that takes the connection and never answers: the request
/// times out (`federation.request_timeout_secs`), and `/keys/query` gives
/// up after its own `timeout`.
#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let a = TestServer::start_federating_with(|c| c.federation.request_timeout_secs = 1).await;
    let alice = a.user("alice").await;
    let started = std::time::Instant::now();
    let (st, p) = a
        .get(
            &format!("/_matrix/client/v3/profile/@x:127.0.0.1:{port}"),
            alice.token(),
        )
        .await;
    assert_errcode(st, &p, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    assert!(p["error"].as_str().unwrap().contains("timed out"), "{p}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    let started = std::time::Instant::now();
    let (st, q) = a
        .post(
            "/_matrix/client/v3/keys/query",
            alice.token(),
            json!({"device_keys": {format!("@x:127.0.0.1:{port}"): []}, "timeout": 300}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{q}");
    assert_eq!(
        q["failures"][format!("127.0.0.1:{port}")]["status"],
        503,
        "{q}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    hold.abort();
}
