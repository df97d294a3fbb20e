//! TURN credentials for `GET /voip/turnServer` (config `turn`): coturn's
//! REST API scheme with a shared secret, or a static username and password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::TurnConfig;

/// What `/voip/turnServer` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    pub uris: Vec<String>,
    /// Seconds the credentials stay valid.
    pub ttl: u64,
}

/// The credentials for `user_id` at `now_ms`, or `None` when TURN is not
/// configured (no `uris`, or neither a shared secret nor a static username
/// and password), as Synapse answers `{}` then.
pub fn credentials(turn: &TurnConfig, user_id: &str, now_ms: i64) -> Option<TurnCredentials> {
    if turn.uris.is_empty() {
        return None;
    }
    let (username, password) = if let Some(secret) = &turn.shared_secret {
        let expiry = now_ms.max(0) / 1000 + i64::try_from(turn.user_lifetime_secs).ok()?;
        let username = format!("{expiry}:{user_id}");
        (username.clone(), coturn_password(secret, &username))
    } else {
        (turn.username.clone()?, turn.password.clone()?)
    };
    Some(TurnCredentials {
        username,
        password,
        uris: turn.uris.clone(),
        ttl: turn.user_lifetime_secs,
    })
}

/// coturn's `use-auth-secret` password: base64 of HMAC-SHA1(secret, username).
pub fn coturn_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known vector: HMAC-SHA1 of RFC 2202's test case 2
    /// (key "Jefe", data "what do ya want for nothing?") is
    /// effcdf6ae5eb2fa2d27416d5f184df9c259a7c79, here in base64.
    #[test]
    fn coturn_password_is_base64_hmac_sha1() {
        assert_eq!(
            coturn_password("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn shared_secret_credentials_name_the_expiry_and_user() {
        let turn = TurnConfig {
            uris: vec!["turn:turn.example.org?transport=udp".into()],
            shared_secret: Some("s3cret".into()),
            user_lifetime_secs: 86_400,
            ..TurnConfig::default()
        };
        let c = credentials(&turn, "@a:example.org", 1_700_000_000_500).unwrap();
        assert_eq!(c.username, "1700086400:@a:example.org");
        assert_eq!(c.password, coturn_password("s3cret", &c.username));
        assert_eq!(c.ttl, 86_400);
    }

    #[test]
    fn unconfigured_turn_gives_nothing() {
        assert_eq!(credentials(&TurnConfig::default(), "@a:x", 0), None);
        let no_secret = TurnConfig {
            uris: vec!["turn:x".into()],
            ..TurnConfig::default()
        };
        assert_eq!(credentials(&no_secret, "@a:x", 0), None);
    }
}
