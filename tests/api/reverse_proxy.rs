//! Behind a reverse proxy: `trusted_proxies`. The client address forwarded in
//! `X-Forwarded-For` / `Forwarded` is believed only from a trusted peer (the
//! test client connects from 127.0.0.1); it keys the login rate limit and is
//! the device's last-seen IP (in /devices and whois).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const V3: &str = "/_matrix/client/v3";
const LOGIN: &str = "/_matrix/client/v3/login";

/// Sends a request with extra headers (e.g. `X-Forwarded-For`).
async fn send_with(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = s.client.request(method, s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let value = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, value)
}

/// The last-seen IP of the caller's device, after one request made with
/// `headers` (the /devices request itself).
async fn seen_ip(s: &TestServer, who: &Session, headers: &[(&str, &str)]) -> Value {
    let (st, body) = send_with(
        s,
        reqwest::Method::GET,
        &format!("{V3}/devices/{}", who.device_id),
        who.token(),
        None,
        headers,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["last_seen_ip"].clone()
}

const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.9"),
    ("forwarded", "for=198.51.100.1"),
];

#[tokio::test]
async fn forwarded_headers_ignored_without_trusted_proxies() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    assert_eq!(seen_ip(&s, &alice, SPOOFED).await, "127.0.0.1");
}

#[tokio::test]
async fn forwarded_headers_ignored_from_an_untrusted_peer() {
    let s = TestServer::start_with(|c| {
        c.trusted_proxies = vec![
            myelin::net::Cidr::parse("10.0.0.0/8").unwrap(),
            myelin::net::Cidr::parse("::1/128").unwrap(),
        ];
    })
    .await;
    let alice = s.user("alice").await;
    assert_eq!(seen_ip(&s, &alice, SPOOFED).await, "127.0.0.1");
}

fn trust_localhost(c: &mut myelin::config::Config) {
    c.trusted_proxies = vec![myelin::net::Cidr::parse("127.0.0.0/8").unwrap()];
}

#[tokio::test]
async fn last_seen_ip_is_the_forwarded_client() {
    let s = TestServer::start_with(trust_localhost).await;
    let alice = s.user("alice").await;
    // The right-most address that is not a trusted proxy: what the client
    // itself put to the left is not believed.
    let xff = [("x-forwarded-for", "192.0.2.1, 203.0.113.9, 127.0.0.5")];
    assert_eq!(seen_ip(&s, &alice, &xff).await, "203.0.113.9");
    // RFC 7239 Forwarded, when there is no X-Forwarded-For.
    let fwd = [("forwarded", "for=\"[2001:db8::5]:4711\";proto=https")];
    assert_eq!(seen_ip(&s, &alice, &fwd).await, "2001:db8::5");
    // No header: the proxy itself.
    assert_eq!(seen_ip(&s, &alice, &[]).await, "127.0.0.1");

    // Whois shows the forwarded address too.
    let admin = s.admin("root").await;
    seen_ip(&s, &alice, &xff).await;
    let (st, body) = s
        .get(
            &format!("/_synapse/admin/v1/whois/{}", alice.user_id),
            admin.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let ips: Vec<&Value> = body["devices"]
        .as_object()
        .unwrap_or_else(|| panic!("devices: {body}"))
        .values()
        .flat_map(|d| d["sessions"].as_array().unwrap())
        .flat_map(|sess| sess["connections"].as_array().unwrap())
        .map(|c| &c["ip"])
        .collect();
    assert_eq!(ips, [&json!("203.0.113.9")], "{body}");
}

async fn login_attempt(s: &TestServer, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    send_with(
        s,
        reqwest::Method::POST,
        LOGIN,
        None,
        Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "password123"})),
        headers,
    )
    .await
}

fn login_burst_2(c: &mut myelin::config::Config) {
    c.rate_limits.enabled = true;
    c.rate_limits.login_per_second = 0.01;
    c.rate_limits.login_burst = 2;
}

#[tokio::test]
async fn login_limit_buckets_are_per_forwarded_client() {
    let s = TestServer::start_with(|c| {
        login_burst_2(c);
        trust_localhost(c);
    })
    .await;
    let a = [("x-forwarded-for", "203.0.113.1")];
    // Client A spoofing B on the left is still A.
    let a_spoofing_b = [("x-forwarded-for", "203.0.113.2, 203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    assert_error(&login_attempt(&s, &a).await, 403, "M_FORBIDDEN");
    assert_error(&login_attempt(&s, &a_spoofing_b).await, 403, "M_FORBIDDEN");
    let limited = login_attempt(&s, &a).await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    assert!(
        limited.1["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0)
    );
    // Another client behind the same proxy is not locked out, nor the proxy's own bucket.
    assert_error(&login_attempt(&s, &b).await, 403, "M_FORBIDDEN");
    assert_error(&login_attempt(&s, &[]).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn login_limit_ignores_forwarded_headers_from_an_untrusted_peer() {
    let s = TestServer::start_with(login_burst_2).await;
    // Changing the claimed address buys no new bucket.
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    assert_error(&login_attempt(&s, &a).await, 403, "M_FORBIDDEN");
    assert_error(&login_attempt(&s, &b).await, 403, "M_FORBIDDEN");
    let c = [("forwarded", "for=203.0.113.3")];
    assert_error(&login_attempt(&s, &c).await, 429, "M_LIMIT_EXCEEDED");
}
