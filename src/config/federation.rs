//! `federation`: the Server-Server API's own listener, how other servers
//! are reached (trusted CAs, address ranges never contacted, timeouts) and
//! which key servers are asked for others' keys (`services/federation/`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::net::Cidr;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// The TLS listener other servers reach (every route is served on it;
    /// federation stays served on the plain `listen` too, for a reverse
    /// proxy that terminates TLS). Off when not set.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    pub tls_private_key: Option<PathBuf>,
    /// PEM files of certificate authorities trusted for outgoing federation
    /// besides the system's and `outbound.ca_files` (Synapse's
    /// `federation_custom_ca_list`).
    pub ca_files: Vec<PathBuf>,
    /// Addresses outgoing federation requests (and their `.well-known`
    /// look-ups) may not reach; the default is `outbound`'s: every private,
    /// loopback, link-local, multicast and unspecified range.
    pub ip_range_blocklist: Vec<Cidr>,
    /// Addresses reachable even when the blocklist names them.
    pub ip_range_allowlist: Vec<Cidr>,
    /// Ignore the blocklist (tests and private federations on one network).
    pub allow_private_addresses: bool,
    /// Servers asked for other servers' keys (`POST /_matrix/key/v2/query`)
    /// before the servers themselves. Default none.
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    /// What `GET /.well-known/matrix/server` answers as `m.server`
    /// (`host[:port]`); 404 when not set.
    pub well_known_server: Option<String>,
    /// Seconds an outgoing federation request may take.
    pub request_timeout_secs: u64,
    /// Largest answer read from another server, in bytes.
    pub max_response_bytes: u64,
}

/// A notary (Synapse's `trusted_key_servers` entry): its name, and the keys
/// its answers must be signed with (none: its own published keys, fetched
/// from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyServer {
    pub server_name: String,
    #[serde(default)]
    pub verify_keys: BTreeMap<String, String>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tls_certificate: None,
            tls_private_key: None,
            ca_files: Vec::new(),
            ip_range_blocklist: crate::net::outbound::default_blocklist(),
            ip_range_allowlist: Vec::new(),
            allow_private_addresses: false,
            trusted_key_servers: Vec::new(),
            well_known_server: None,
            request_timeout_secs: 30,
            max_response_bytes: 50 * 1024 * 1024,
        }
    }
}

impl FederationConfig {
    /// The address filter of outgoing federation: none with
    /// `allow_private_addresses`.
    pub fn ip_filter(&self) -> crate::net::outbound::IpFilter {
        if self.allow_private_addresses {
            return crate::net::outbound::IpFilter::default();
        }
        crate::net::outbound::IpFilter::new(
            self.ip_range_blocklist.clone(),
            self.ip_range_allowlist.clone(),
        )
    }

    pub(super) fn validate(&self, client_listen: SocketAddr) -> Result<(), ConfigError> {
        if let Some(f) = self.listen
            && f.port() != 0
            && f == client_listen
        {
            return invalid(
                "federation.listen",
                "must not be the client listener's address",
            );
        }
        if self.listen.is_some() {
            for (key, file) in [
                ("federation.tls_certificate", &self.tls_certificate),
                ("federation.tls_private_key", &self.tls_private_key),
            ] {
                match file {
                    None => return invalid(key, "federation.listen needs it"),
                    Some(f) if !f.is_file() => {
                        return Err(ConfigError::Invalid {
                            key,
                            message: format!("{} is not a readable file", f.display()),
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        for f in &self.ca_files {
            if !f.is_file() {
                return Err(ConfigError::Invalid {
                    key: "federation.ca_files",
                    message: format!("{} is not a readable file", f.display()),
                });
            }
        }
        for k in &self.trusted_key_servers {
            if ruma::ServerName::parse(&k.server_name).is_err() {
                return invalid(
                    "federation.trusted_key_servers",
                    &format!("{:?} is not a server name", k.server_name),
                );
            }
            for (id, key) in &k.verify_keys {
                if ruma::OwnedServerSigningKeyId::try_from(id.as_str()).is_err()
                    || ruma::serde::Base64::<ruma::serde::base64::Standard>::parse(key).is_err()
                {
                    return invalid(
                        "federation.trusted_key_servers",
                        &format!(
                            "verify key {id:?} of {}: not an ed25519 key id with an unpadded base64 key",
                            k.server_name
                        ),
                    );
                }
            }
        }
        if let Some(w) = &self.well_known_server
            && ruma::ServerName::parse(w).is_err()
        {
            return invalid(
                "federation.well_known_server",
                "not a host name with an optional port",
            );
        }
        if !(1..=600).contains(&self.request_timeout_secs) {
            return invalid("federation.request_timeout_secs", "must be 1 to 600");
        }
        if self.max_response_bytes < 64 * 1024 {
            return invalid("federation.max_response_bytes", "must be at least 65536");
        }
        Ok(())
    }

    /// The `federation` section of `generate-config`'s output.
    pub(super) fn commented(&self) -> String {
        format!(
            r#"# Federation (the Server-Server API).
federation:
  # The TLS listener other servers connect to (the port in server_name, or
  # 8448, unless .well-known or SRV records say otherwise), e.g. "0.0.0.0:8448".
  # null: no TLS listener; federation is served on `listen` too, so a
  # reverse proxy that terminates TLS may forward port 8448 (or the
  # .well-known delegation's port) there.
  listen: {listen}
  # PEM certificate chain and private key of that listener (needed with listen).
  tls_certificate: {cert}
  tls_private_key: {key}
  # PEM files of certificate authorities trusted for outgoing federation
  # besides the system's and outbound.ca_files (Synapse's federation_custom_ca_list).
  ca_files: {ca}
  # Address ranges (CIDR) outgoing federation never contacts, the
  # .well-known look-up included. The default is every private, loopback,
  # link-local, shared, multicast, documentation and reserved range of IPv4
  # and IPv6, as Synapse's ip_range_blacklist.
  ip_range_blocklist: {block}
  # Ranges allowed even when the blocklist names them.
  ip_range_allowlist: {allow}
  # true: the blocklist is not applied (federation between servers on one
  # private network, or on loopback for tests).
  allow_private_addresses: {private}
  # Notaries asked for other servers' signing keys before the servers
  # themselves, e.g. [{{server_name: "matrix.org", verify_keys:
  # {{"ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}}}}].
  # Without verify_keys the notary's own published keys are used. Default none.
  trusted_key_servers: {trusted}
  # What GET /.well-known/matrix/server answers as m.server ("host:port"),
  # to delegate federation to another host or port; null: 404.
  well_known_server: {well_known}
  # Seconds an outgoing federation request may take.
  request_timeout_secs: {timeout}
  # Largest answer read from another server, in bytes.
  max_response_bytes: {max}
"#,
            listen = json(&self.listen),
            cert = json(&self.tls_certificate),
            key = json(&self.tls_private_key),
            ca = json(&self.ca_files),
            block = json(&self.ip_range_blocklist),
            allow = json(&self.ip_range_allowlist),
            private = self.allow_private_addresses,
            trusted = json(&self.trusted_key_servers),
            well_known = json(&self.well_known_server),
            timeout = self.request_timeout_secs,
            max = self.max_response_bytes,
        )
    }
}

/// A value as JSON, which YAML reads as flow style.
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("config values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut FederationConfig)) -> Result<(), String> {
        let mut c = FederationConfig::default();
        f(&mut c);
        c.validate("127.0.0.1:8008".parse().unwrap())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_block_private_addresses_and_the_switch_lifts_it() {
        let c = FederationConfig::default();
        assert!(c.listen.is_none() && c.trusted_key_servers.is_empty());
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "ff02::1",
            "0.0.0.0",
        ] {
            assert!(!c.ip_filter().allows(ip.parse().unwrap()), "{ip}");
        }
        assert!(c.ip_filter().allows("8.8.8.8".parse().unwrap()));
        let open = FederationConfig {
            allow_private_addresses: true,
            ..FederationConfig::default()
        };
        assert!(open.ip_filter().allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        assert!(check(|_| {}).is_ok());
        let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/tls");
        let listener = |c: &mut FederationConfig| {
            c.listen = Some("0.0.0.0:8448".parse().unwrap());
            c.tls_certificate = Some(tls.join("gateway.pem"));
            c.tls_private_key = Some(tls.join("gateway.key"));
        };
        assert!(check(listener).is_ok());
        let e = check(|c| {
            listener(c);
            c.tls_private_key = None;
        })
        .unwrap_err();
        assert!(e.contains("federation.tls_private_key"), "{e}");
        let e = check(|c| {
            listener(c);
            c.listen = Some("127.0.0.1:8008".parse().unwrap());
        })
        .unwrap_err();
        assert!(e.contains("federation.listen"), "{e}");
        let e = check(|c| c.well_known_server = Some("not a host".into())).unwrap_err();
        assert!(e.contains("federation.well_known_server"), "{e}");
        assert!(check(|c| c.well_known_server = Some("matrix.example.org:443".into())).is_ok());
        let e = check(|c| {
            c.trusted_key_servers = vec![TrustedKeyServer {
                server_name: "matrix.org".into(),
                verify_keys: [("ed25519:auto".into(), "not base64!".into())].into(),
            }];
        })
        .unwrap_err();
        assert!(e.contains("federation.trusted_key_servers"), "{e}");
        let e = check(|c| c.request_timeout_secs = 0).unwrap_err();
        assert!(e.contains("federation.request_timeout_secs"), "{e}");
    }

    #[test]
    fn the_commented_section_reads_back() {
        let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/tls");
        let mut c = crate::config::Config::default();
        c.federation.listen = Some("0.0.0.0:8448".parse().unwrap());
        c.federation.tls_certificate = Some(tls.join("gateway.pem"));
        c.federation.tls_private_key = Some(tls.join("gateway.key"));
        c.federation.allow_private_addresses = true;
        c.federation.well_known_server = Some("matrix.example.org:443".into());
        c.federation.trusted_key_servers = vec![TrustedKeyServer {
            server_name: "matrix.org".into(),
            verify_keys: [(
                "ed25519:auto".into(),
                "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw".into(),
            )]
            .into(),
        }];
        let back = crate::config::Config::from_yaml(&c.to_commented_yaml()).unwrap();
        assert_eq!(back.federation.listen, c.federation.listen);
        assert_eq!(
            back.federation.tls_certificate,
            c.federation.tls_certificate
        );
        assert!(back.federation.allow_private_addresses);
        assert_eq!(
            back.federation.well_known_server,
            c.federation.well_known_server
        );
        assert_eq!(
            back.federation.trusted_key_servers,
            c.federation.trusted_key_servers
        );
        assert_eq!(
            back.federation.ip_range_blocklist,
            c.federation.ip_range_blocklist
        );
    }
}
