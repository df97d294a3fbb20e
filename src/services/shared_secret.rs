//! Shared-secret registration (Synapse's `/_synapse/admin/v1/register`):
//! single-use nonces that expire after 60 s (at most `caches.registration_nonces`
//! outstanding, the oldest forgotten first), and the HMAC-SHA1 check.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::distr::{Alphanumeric, SampleString};

use crate::services::expiring::ExpiringSet;

pub const NONCE_TTL: Duration = Duration::from_secs(60);

pub struct SharedSecret {
    secret: String,
    nonces: ExpiringSet,
}

impl SharedSecret {
    pub fn new(secret: String, max_nonces: usize) -> Self {
        Self {
            secret,
            nonces: ExpiringSet::new(NONCE_TTL, max_nonces),
        }
    }

    pub fn new_nonce(&self) -> String {
        let nonce = Alphanumeric.sample_string(&mut rand::rng(), 32);
        self.nonces.insert(nonce.clone());
        nonce
    }

    /// Removes the nonce; true if it existed and had not expired.
    pub fn consume_nonce(&self, nonce: &str) -> bool {
        self.nonces.remove(nonce)
    }

    /// Checks the hex MAC over nonce \0 username \0 password \0 admin|notadmin
    /// [\0 user_type], in constant time.
    pub fn verify_mac(
        &self,
        mac_hex: &str,
        nonce: &str,
        username: &str,
        password: &str,
        admin: bool,
        user_type: Option<&str>,
    ) -> bool {
        let Ok(given) = hex::decode(mac_hex.trim()) else {
            return false;
        };
        compute_mac(&self.secret, nonce, username, password, admin, user_type)
            .verify_slice(&given)
            .is_ok()
    }
}

fn compute_mac(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> Hmac<sha1::Sha1> {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(username.as_bytes());
    mac.update(b"\x00");
    mac.update(password.as_bytes());
    mac.update(b"\x00");
    mac.update(if admin {
        b"admin".as_slice()
    } else {
        b"notadmin".as_slice()
    });
    if let Some(t) = user_type {
        mac.update(b"\x00");
        mac.update(t.as_bytes());
    }
    mac
}

impl crate::services::workers::CacheSizes for SharedSecret {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("nonces", self.nonces.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "759f047f312b99ff428b21d581256f8592b8976e58bc1b543972dc6147e529a79657605b52d7becd160ff5137f3de11975684319187e06901955f79e5a6c5a79";

    #[test]
    fn dendrite_and_synapse_vectors() {
        let s = SharedSecret::new("dendritetest".into(), 10);
        assert!(s.verify_mac(
            "f1ba8d37123866fd659b40de4bad9b0f8965c565",
            NONCE,
            "alice",
            "wonderland",
            false,
            None
        ));
        assert!(s.verify_mac(
            "24dca3bba410e43fe64b9b5c28306693bf3baa9f",
            NONCE,
            "alice",
            "wonderland",
            true,
            None
        ));
        // Flipping one byte of the MAC makes it invalid.
        assert!(!s.verify_mac(
            "01ba8d37123866fd659b40de4bad9b0f8965c565",
            NONCE,
            "alice",
            "wonderland",
            false,
            None
        ));
        assert!(!s.verify_mac(
            "f1ba8d37123866fd659b40de4bad9b0f8965c565",
            NONCE,
            "alice",
            "wonderland",
            true,
            None
        ));
        assert!(!s.verify_mac("not hex", NONCE, "alice", "wonderland", false, None));
    }

    #[test]
    fn nonces_are_single_use() {
        let s = SharedSecret::new("k".into(), 10);
        let n = s.new_nonce();
        assert!(s.consume_nonce(&n));
        assert!(!s.consume_nonce(&n));
        assert!(!s.consume_nonce("never-issued"));
    }
}
