//! /versions, /.well-known/matrix/client, CORS, 404/405, r0 aliases,
//! capabilities, token handling on authenticated endpoints, JSON body errors
//! and the request size limit.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// Sends a request through the raw client and returns (status, headers, body text).
async fn raw(
    s: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = s.client.request(method, s.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body read");
    (status, headers, text)
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().expect("header is ASCII"))
}

/// Parses a body as JSON, failing the test with the raw text if it is not.
fn json_body(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

// ---------------------------------------------------------------- versions

#[tokio::test]
async fn versions_lists_spec_versions_without_auth() {
    let s = TestServer::start().await;
    let (st, body) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let versions: Vec<&str> = body["versions"]
        .as_array()
        .expect("versions array")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(versions.contains(&"r0.6.1"), "{body}");
    assert!(versions.contains(&"v1.1"), "{body}");
    assert!(body["unstable_features"].is_object(), "{body}");
}

// ---------------------------------------------------------------- well-known

#[tokio::test]
async fn well_known_client_has_homeserver_base_url() {
    let s = TestServer::start().await;
    let (st, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let base = body["m.homeserver"]["base_url"]
        .as_str()
        .expect("base_url string");
    assert!(
        base.starts_with("http://") || base.starts_with("https://"),
        "{body}"
    );
}

#[tokio::test]
async fn well_known_client_uses_public_baseurl() {
    let s =
        TestServer::start_with(|c| c.public_baseurl = Some("https://matrix.example.org".into()))
            .await;
    let (st, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body["m.homeserver"]["base_url"], "https://matrix.example.org",
        "{body}"
    );
}

#[tokio::test]
async fn well_known_support_is_404_when_nothing_is_configured() {
    let s = TestServer::start().await;
    let (st, body) = s.get("/.well-known/matrix/support", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND", "{body}");
}

#[tokio::test]
async fn well_known_support_lists_the_configured_contacts_and_page() {
    use myelin::config::SupportContact;
    let s = TestServer::start_with(|c| {
        c.support.contacts = vec![
            SupportContact {
                role: "m.role.admin".into(),
                matrix_id: Some("@admin:example.org".into()),
                email_address: Some("admin@example.org".into()),
            },
            SupportContact {
                role: "m.role.security".into(),
                matrix_id: None,
                email_address: Some("security@example.org".into()),
            },
            SupportContact {
                role: "org.example.role.moderator".into(),
                matrix_id: Some("@mod:elsewhere.example".into()),
                email_address: None,
            },
        ];
        c.support.support_page = Some("https://example.org/help".into());
    })
    .await;
    // No access token needed.
    let (st, body) = s.get("/.well-known/matrix/support", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "contacts": [
                {"role": "m.role.admin", "matrix_id": "@admin:example.org", "email_address": "admin@example.org"},
                {"role": "m.role.security", "email_address": "security@example.org"},
                {"role": "org.example.role.moderator", "matrix_id": "@mod:elsewhere.example"},
            ],
            "support_page": "https://example.org/help",
        })
    );
}

#[tokio::test]
async fn well_known_support_with_a_page_only() {
    let s = TestServer::start_with(|c| {
        c.support.support_page = Some("https://example.org/help".into());
    })
    .await;
    let (st, body) = s.get("/.well-known/matrix/support", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"support_page": "https://example.org/help"}));
}

// ---------------------------------------------------------------- CORS

#[tokio::test]
async fn cors_header_on_normal_response() {
    let s = TestServer::start().await;
    // Without an Origin header: the contract says every response carries it.
    let (st, h, text) = raw(&s, Method::GET, "/_matrix/client/versions", &[], None).await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("*"),
        "{h:?}"
    );
    // With an Origin header, as a browser sends it.
    let (st, h, text) = raw(
        &s,
        Method::GET,
        "/_matrix/client/versions",
        &[("Origin", "https://app.example")],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("*"),
        "{h:?}"
    );
}

#[tokio::test]
async fn cors_header_on_authenticated_response() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let auth = format!("Bearer {}", alice.access_token);
    let (st, h, text) = raw(
        &s,
        Method::GET,
        WHOAMI,
        &[("Authorization", &auth), ("Origin", "https://app.example")],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("*"),
        "{h:?}"
    );
}

#[tokio::test]
async fn cors_header_on_error_responses() {
    let s = TestServer::start().await;
    // 404
    let (st, h, text) = raw(
        &s,
        Method::GET,
        "/_matrix/client/v3/no_such_endpoint",
        &[("Origin", "https://app.example")],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{text}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("*"),
        "404: {h:?}"
    );
    // 401 (missing token)
    let (st, h, text) = raw(
        &s,
        Method::GET,
        WHOAMI,
        &[("Origin", "https://app.example")],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{text}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("*"),
        "401: {h:?}"
    );
    // 403 (bad login)
    let (st, h, text) = raw(
        &s,
        Method::POST,
        "/_matrix/client/v3/login",
        &[
            ("Origin", "https://app.example"),
            ("Content-Type", "application/json"),
        ],
        Some(password_login("nobody", "wrongpassword").to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{text}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("*"),
        "403: {h:?}"
    );
    // 400 (not JSON)
    let (st, h, text) = raw(
        &s,
        Method::POST,
        "/_matrix/client/v3/login",
        &[
            ("Origin", "https://app.example"),
            ("Content-Type", "application/json"),
        ],
        Some("{nope".into()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("*"),
        "400: {h:?}"
    );
}

#[tokio::test]
async fn cors_preflight_needs_no_auth() {
    let s = TestServer::start().await;
    let (st, h, text) = raw(
        &s,
        Method::OPTIONS,
        WHOAMI,
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "GET"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("*"),
        "{h:?}"
    );
    // The spec recommends "GET, POST, PUT, DELETE, OPTIONS" and
    // "X-Requested-With, Content-Type, Authorization"; a wildcard is accepted too.
    let methods = header(&h, "access-control-allow-methods")
        .expect("allow-methods header")
        .to_uppercase();
    assert!(
        methods == "*"
            || (methods.contains("GET")
                && methods.contains("POST")
                && methods.contains("PUT")
                && methods.contains("DELETE")),
        "{methods}"
    );
    let allowed = header(&h, "access-control-allow-headers")
        .expect("allow-headers header")
        .to_lowercase();
    assert!(
        allowed == "*" || (allowed.contains("authorization") && allowed.contains("content-type")),
        "{allowed}"
    );
}

#[tokio::test]
async fn cors_preflight_on_post_endpoint_and_unknown_path() {
    let s = TestServer::start().await;
    for path in [
        "/_matrix/client/v3/login",
        "/_matrix/client/v3/account/password",
        "/_matrix/client/v3/no_such_thing",
    ] {
        let (st, h, text) = raw(
            &s,
            Method::OPTIONS,
            path,
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "OPTIONS {path}: {text}");
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("*"),
            "OPTIONS {path}: {h:?}"
        );
    }
}

// ---------------------------------------------------------------- 404 / 405

#[tokio::test]
async fn unknown_path_is_404_unrecognized() {
    let s = TestServer::start().await;
    let r = s.get("/_matrix/client/v3/no_such_endpoint", None).await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
    let r = s
        .post("/_matrix/client/v3/no/such/thing", None, json!({}))
        .await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
    let r = s.get("/totally/unknown", None).await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
    // An unknown path under a known prefix, even with a valid token.
    let alice = s.user("alice").await;
    let r = s
        .get("/_matrix/client/v3/account/no_such_thing", alice.token())
        .await;
    assert_error(&r, 404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn wrong_method_is_405_unrecognized() {
    let s = TestServer::start().await;
    let r = s.post("/_matrix/client/versions", None, json!({})).await;
    assert_error(&r, 405, "M_UNRECOGNIZED");
    let r = s.put("/_matrix/client/v3/login", None, json!({})).await;
    assert_error(&r, 405, "M_UNRECOGNIZED");
    let r = s
        .delete(
            "/_matrix/client/v3/register/available?username=x",
            None,
            None,
        )
        .await;
    assert_error(&r, 405, "M_UNRECOGNIZED");
}

// ---------------------------------------------------------------- r0 aliases

#[tokio::test]
async fn r0_whoami_alias_works() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (st, body) = s
        .get("/_matrix/client/r0/account/whoami", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice.user_id);
    assert_eq!(body["device_id"], alice.device_id);
    // Auth errors are the same under r0.
    let r = s.get("/_matrix/client/r0/account/whoami", None).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn r0_login_alias_works() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let (st, body) = s.get("/_matrix/client/r0/login", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(
        body["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.password"),
        "{body}"
    );
    let (st, body) = s
        .post(
            "/_matrix/client/r0/login",
            None,
            password_login("alice", "password123"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    let token = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let (st, who) = s.get(WHOAMI, Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], "@alice:test.local");
    let r = s
        .post(
            "/_matrix/client/r0/login",
            None,
            password_login("alice", "wrongpassword"),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn r0_capabilities_alias_works() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (st, body) = s
        .get("/_matrix/client/r0/capabilities", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body["capabilities"]["m.change_password"]["enabled"], true,
        "{body}"
    );
}

// ---------------------------------------------------------------- capabilities

#[tokio::test]
async fn capabilities_shape() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (st, body) = s
        .get("/_matrix/client/v3/capabilities", alice.token())
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let caps = &body["capabilities"];
    assert_eq!(
        caps["m.change_password"],
        json!({"enabled": true}),
        "{body}"
    );
    assert_eq!(
        caps["m.set_displayname"],
        json!({"enabled": true}),
        "{body}"
    );
    assert_eq!(caps["m.set_avatar_url"], json!({"enabled": true}), "{body}");
    assert_eq!(caps["m.3pid_changes"], json!({"enabled": false}), "{body}");
}

#[tokio::test]
async fn capabilities_requires_auth() {
    let s = TestServer::start().await;
    let r = s.get("/_matrix/client/v3/capabilities", None).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = s
        .get("/_matrix/client/v3/capabilities", Some("bogus"))
        .await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn missing_token_is_401_missing_token() {
    let s = TestServer::start().await;
    let r = s.get(WHOAMI, None).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    let r = s.post("/_matrix/client/v3/logout", None, json!({})).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn unknown_token_is_401_unknown_token() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let r = s.get(WHOAMI, Some("syt_this_is_not_a_token")).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    let r = s
        .post(
            "/_matrix/client/v3/logout",
            Some("syt_this_is_not_a_token"),
            json!({}),
        )
        .await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn token_in_query_string_works() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (st, body) = s
        .get(
            &format!("{WHOAMI}?access_token={}", alice.access_token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice.user_id);
    assert_eq!(body["device_id"], alice.device_id);
    let r = s.get(&format!("{WHOAMI}?access_token=bogus"), None).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn malformed_json_is_400_not_json() {
    let s = TestServer::start().await;
    s.user("alice").await;
    // Without a Content-Type header.
    let r = s
        .request_raw(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            "{\"type\": \"m.login.password\",",
        )
        .await;
    assert_error(&r, 400, "M_NOT_JSON");
    // With Content-Type: application/json.
    let (st, _, text) = raw(
        &s,
        Method::POST,
        "/_matrix/client/v3/login",
        &[("Content-Type", "application/json")],
        Some("this is not json".into()),
    )
    .await;
    let r = (st, json_body(&text));
    assert_error(&r, 400, "M_NOT_JSON");
}

#[tokio::test]
async fn malformed_json_on_authenticated_endpoint_is_400_not_json() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    let r = s
        .request_raw(Method::PUT, &path, alice.token(), "{\"displayname\": ")
        .await;
    assert_error(&r, 400, "M_NOT_JSON");
}

#[tokio::test]
async fn wrong_types_are_400_bad_json() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    // password must be a string
    let r = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": 12345678}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    // identifier must be an object
    let r = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": 5, "password": "password123"}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    // displayname must be a string
    let path = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    let r = s.put(&path, alice.token(), json!({"displayname": 5})).await;
    assert_error(&r, 400, "M_BAD_JSON");
}

// ---------------------------------------------------------------- size limit

#[tokio::test]
async fn body_over_limit_is_413_too_large() {
    let s = TestServer::start_with(|c| c.limits.max_request_bytes = 2048).await;
    s.user("alice").await;
    // A small body still works.
    let (st, body) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            password_login("alice", "password123"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // A valid JSON body larger than the limit.
    let big = password_login("alice", &"x".repeat(4096)).to_string();
    assert!(big.len() > 2048);
    let (st, h, text) = raw(
        &s,
        Method::POST,
        "/_matrix/client/v3/login",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "https://app.example"),
        ],
        Some(big),
    )
    .await;
    let r = (st, json_body(&text));
    assert_error(&r, 413, "M_TOO_LARGE");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("*"),
        "{h:?}"
    );
}

#[tokio::test]
async fn body_over_limit_on_authenticated_endpoint_is_413() {
    let s = TestServer::start_with(|c| c.limits.max_request_bytes = 1024).await;
    let alice = s.user("alice").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    let r = s
        .put(
            &path,
            alice.token(),
            json!({"displayname": "y".repeat(3000)}),
        )
        .await;
    assert_error(&r, 413, "M_TOO_LARGE");
}

// ---- connections (src/http/serve.rs) ----

/// Writes `request` on a raw TCP connection and reads until `responses`
/// complete HTTP responses (each with a Content-Length body) have arrived.
async fn raw_http(addr: std::net::SocketAddr, request: &str, responses: usize) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < responses {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed after {} responses", out.len());
        buf.extend_from_slice(&chunk[..n]);
        // Take every complete response off the front of the buffer.
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            let Some(head_end) = text.find("\r\n\r\n") else {
                break;
            };
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a Content-Length header");
            if buf.len() < head_end + 4 + len {
                break;
            }
            out.push(String::from_utf8_lossy(&buf[..head_end + 4 + len]).into_owned());
            buf.drain(..head_end + 4 + len);
        }
    }
    out
}

#[tokio::test]
async fn one_connection_serves_requests_one_after_another() {
    let s = TestServer::start().await;
    // Two requests written at once (pipelined) on one keep-alive connection:
    // both are answered, in order.
    let req = "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n\
               GET /_matrix/client/v3/nowhere HTTP/1.1\r\nHost: x\r\n\r\n";
    let resps = raw_http(s.addr, req, 2).await;
    assert!(resps[0].starts_with("HTTP/1.1 200"), "{}", resps[0]);
    assert!(resps[0].contains("\"versions\""), "{}", resps[0]);
    assert!(resps[1].starts_with("HTTP/1.1 404"), "{}", resps[1]);
    assert!(resps[1].contains("M_UNRECOGNIZED"), "{}", resps[1]);
}

#[tokio::test]
async fn a_malformed_request_line_is_400_and_the_server_carries_on() {
    let s = TestServer::start().await;
    let resps = raw_http(s.addr, "NOT HTTP AT ALL\r\n\r\n", 1).await;
    assert!(resps[0].starts_with("HTTP/1.1 400"), "{}", resps[0]);
    let (st, _) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_answers_a_long_poll_in_flight_and_stops_accepting() {
    let mut s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (st, body) = s.get("/_matrix/client/v3/sync", alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let since = body["next_batch"].as_str().unwrap().to_owned();
    let poll = spawn_poll(&s, &alice, &since, 1500);
    s.wait_for_parked_syncs(1).await;
    let addr = s.addr;
    let running = s.running.take().unwrap();
    let shutdown = tokio::spawn(running.shutdown());
    // The parked long-poll is answered (at its timeout), not cut off.
    let (st, body, _) = poll.await.expect("long-poll answered");
    assert_eq!(st, StatusCode::OK);
    assert!(body["next_batch"].is_string(), "{body}");
    tokio::time::timeout(std::time::Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown completes")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}
