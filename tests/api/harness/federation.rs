//! Federating test servers: a TLS federation listener on loopback with the
//! test CA's certificate for 127.0.0.1 (`tests/common/tls`), a server name
//! `127.0.0.1:PORT`, the CA trusted for outgoing federation and loopback
//! allowed. Requests signed as a server (`ServerKey`: a server's own key
//! read from its data dir, or a made-up one) test incoming authentication.

use std::path::PathBuf;

use base64::Engine;
use reqwest::{Method, StatusCode};
use ruma::api::federation::authentication::{XMatrix, XMatrixSigningInput};
use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedServerName, ServerName};
use serde_json::Value;

use super::{TestServer, test_ca_file};

/// A port free now (bound and released), for a server name that must be
/// known before the server starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sets up `c` to federate on `127.0.0.1:port` over TLS.
pub fn federating_config(c: &mut myelin::config::Config, port: u16) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/common/tls");
    c.server_name = format!("127.0.0.1:{port}");
    c.federation.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    c.federation.tls_certificate = Some(dir.join("gateway.pem"));
    c.federation.tls_private_key = Some(dir.join("gateway.key"));
    c.federation.ca_files = vec![test_ca_file()];
    c.federation.allow_private_addresses = true;
    c.federation.request_timeout_secs = 10;
}

impl TestServer {
    /// A server federating on loopback ([`federating_config`]).
    pub async fn start_federating() -> Self {
        Self::start_federating_with(|_| {}).await
    }

    /// [`TestServer::start_federating`] after `tweak`.
    pub async fn start_federating_with(tweak: impl FnOnce(&mut myelin::config::Config)) -> Self {
        let port = free_port();
        Self::start_with(|c| {
            federating_config(c, port);
            tweak(c);
        })
        .await
    }

    /// `https://127.0.0.1:PORT{path}` on the federation listener.
    pub fn federation_url(&self, path: &str) -> String {
        let addr = self
            .running
            .as_ref()
            .and_then(|r| r.federation_addr)
            .expect("a running server with a federation listener");
        format!("https://{addr}{path}")
    }

    /// GET on the federation listener, unsigned.
    pub async fn fed_get(&self, path: &str) -> (StatusCode, Value) {
        let resp = fed_client()
            .get(self.federation_url(path))
            .send()
            .await
            .expect("request sent");
        answer(resp).await
    }

    /// POST on the federation listener, unsigned.
    pub async fn fed_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = fed_client()
            .post(self.federation_url(path))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        answer(resp).await
    }

    /// The server's own signing key, read from its data dir.
    pub fn server_key(&self) -> ServerKey {
        let text = std::fs::read_to_string(self.config.data_dir.join("signing.key")).unwrap();
        let mut parts = text.split_whitespace();
        let (_, version, b64) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let der = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .unwrap();
        ServerKey {
            origin: ServerName::parse(&self.server_name).unwrap(),
            pair: Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap(),
        }
    }
}

async fn answer(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body read");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, value)
}

/// An HTTPS client trusting the test CA.
pub fn fed_client() -> reqwest::Client {
    let pem = std::fs::read(test_ca_file()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

/// A server's name and signing key pair, to sign requests as that server.
pub struct ServerKey {
    pub origin: OwnedServerName,
    pub pair: Ed25519KeyPair,
}

impl ServerKey {
    /// A fresh key for `origin` with key id `ed25519:<version>`.
    pub fn generate(origin: &str, version: &str) -> Self {
        let der = Ed25519KeyPair::generate();
        Self {
            origin: ServerName::parse(origin).unwrap(),
            pair: Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap(),
        }
    }
}

/// Which `destination` a signed request names.
pub enum Destination<'a> {
    /// The server it is sent to.
    Target,
    /// Another server (the signature is made for that one).
    Other(&'a str),
    /// None (signed for the target, the field left out, as old servers do).
    Absent,
}

/// `method path` with `body`, signed by `key` with `X-Matrix`, sent to
/// `target`'s federation listener.
pub async fn signed_request(
    target: &TestServer,
    key: &ServerKey,
    method: Method,
    path: &str,
    body: Option<Value>,
    destination: Destination<'_>,
) -> (StatusCode, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let dest_name = match destination {
        Destination::Other(d) => ServerName::parse(d).unwrap(),
        Destination::Target | Destination::Absent => {
            ServerName::parse(&target.server_name).unwrap()
        }
    };
    let request = http::Request::builder()
        .method(method.as_str())
        .uri(path)
        .body(bytes.clone())
        .unwrap();
    let mut header = XMatrix::sign_http_request(
        &request,
        XMatrixSigningInput::new(key.origin.clone(), dest_name, &key.pair),
    )
    .unwrap();
    if matches!(destination, Destination::Absent) {
        header.destination = None;
    }
    let mut req = fed_client()
        .request(method, target.federation_url(path))
        .header(
            http::header::AUTHORIZATION,
            http::HeaderValue::from(&header),
        );
    if !bytes.is_empty() {
        req = req
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes);
    }
    answer(req.send().await.expect("request sent")).await
}
