//! A small Matrix client for the scenarios: any homeserver, by base URL.

use std::time::Duration;

use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// What shared-secret registration answers.
#[derive(Debug, Clone)]
#[allow(dead_code)] // the load scenarios use the token and device
pub struct Registered {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

impl Client {
    /// `base` is the homeserver's client URL, e.g. `http://127.0.0.1:8008`.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Loopback benchmarks must not go through a proxy from the environment.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /_matrix/client/versions`: Ok(true) for a 200 whose body lists
    /// versions, Ok(false) for any other answer; Err when nothing answered
    /// (connection refused, reset, timeout).
    pub async fn versions_ok(&self) -> Result<bool, reqwest::Error> {
        let resp = self
            .http
            .get(self.url("/_matrix/client/versions"))
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Ok(false);
        }
        let body: Value = resp.json().await?;
        Ok(body.get("versions").is_some_and(Value::is_array))
    }

    /// Creates an account through `GET`/`POST /_synapse/admin/v1/register`
    /// (Synapse's shared-secret registration, which Myelin and Dendrite also serve).
    pub async fn register_shared_secret(
        &self,
        shared_secret: &str,
        username: &str,
        password: &str,
        admin: bool,
    ) -> anyhow::Result<Registered> {
        let url = self.url("/_synapse/admin/v1/register");
        let nonce_resp = self.http.get(&url).send().await?;
        let status = nonce_resp.status();
        let body: Value = nonce_resp.json().await.unwrap_or(Value::Null);
        let Some(nonce) = body.get("nonce").and_then(Value::as_str) else {
            bail!("GET {url}: {status}, no nonce in {body}");
        };
        let mac = shared_secret_mac(shared_secret, nonce, username, password, admin);
        let resp = self
            .http
            .post(&url)
            .json(&json!({
                "nonce": nonce,
                "username": username,
                "password": password,
                "admin": admin,
                "mac": mac,
            }))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url} for {username}: {status} {body}");
        }
        let field = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("POST {url}: no `{k}` in {body}"))
        };
        Ok(Registered {
            user_id: field("user_id")?,
            access_token: field("access_token")?,
            device_id: field("device_id")?,
        })
    }
}

/// Hex HMAC-SHA1 over `nonce \0 username \0 password \0 admin|notadmin`, as
/// Synapse's `register_new_matrix_user` computes it.
pub fn shared_secret_mac(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    for (i, part) in [
        nonce,
        username,
        password,
        if admin { "admin" } else { "notadmin" },
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Dendrite's test vectors (shared secret "dendritetest"), which Synapse agrees with.
    const NONCE: &str = "759f047f312b99ff428b21d581256f8592b8976e58bc1b543972dc6147e529a79657605b52d7becd160ff5137f3de11975684319187e06901955f79e5a6c5a79";

    #[test]
    fn mac_matches_dendrite_and_synapse_vectors() {
        assert_eq!(
            shared_secret_mac("dendritetest", NONCE, "alice", "wonderland", false),
            "f1ba8d37123866fd659b40de4bad9b0f8965c565"
        );
        assert_eq!(
            shared_secret_mac("dendritetest", NONCE, "alice", "wonderland", true),
            "24dca3bba410e43fe64b9b5c28306693bf3baa9f"
        );
    }

    #[test]
    fn base_url_trailing_slash_is_dropped() {
        let c = Client::new("http://127.0.0.1:8008/").unwrap();
        assert_eq!(
            c.url("/_matrix/client/versions"),
            "http://127.0.0.1:8008/_matrix/client/versions"
        );
    }
}
