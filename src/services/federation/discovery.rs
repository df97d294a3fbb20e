//! Server discovery (spec v1.19, "Resolving server names"): where requests
//! to a server name go, which certificate name they check (SNI) and which
//! `Host` header they carry.
//!
//! 1. An IP literal: that address, its port or 8448.
//! 2. A host name with a port: its A/AAAA addresses on that port.
//! 3. `https://<host>/.well-known/matrix/server` (cached by its
//!    `Cache-Control`, within [`WELL_KNOWN_MIN`]..[`WELL_KNOWN_MAX`]; a failure
//!    for [`WELL_KNOWN_FAILURE`]): its `m.server` is resolved by 1 and 2, else
//!    through SRV `_matrix-fed._tcp`, then `_matrix._tcp`, else port 8448,
//!    with the delegated name as `Host` and certificate name.
//! 4. SRV `_matrix-fed._tcp.<host>`, then `_matrix._tcp.<host>`.
//! 5. `<host>:8448`.
//!
//! Every resolved address passes the federation address filter; a name
//! left with none is refused. The answers are kept for the reqwest
//! resolver ([`Overrides`]), which hands them to the connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use ruma::{OwnedServerName, ServerName};

use super::FederationError;
use crate::net::outbound::{IpFilter, Outbound};

/// The port when nothing names one.
pub const DEFAULT_PORT: u16 = 8448;

/// How long a `.well-known` answer is kept without a `Cache-Control`
/// max-age (Synapse's defaults), at least and at most.
const WELL_KNOWN_DEFAULT: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_MIN: Duration = Duration::from_secs(5 * 60);
const WELL_KNOWN_MAX: Duration = Duration::from_secs(48 * 3600);
/// How long a missing or invalid `.well-known` is remembered.
const WELL_KNOWN_FAILURE: Duration = Duration::from_secs(3600);
/// Largest `.well-known` body read.
const WELL_KNOWN_MAX_BYTES: u64 = 50 * 1024;
/// How long a resolution without `.well-known` (SRV or A/AAAA) is kept.
const RESOLUTION_TTL: Duration = Duration::from_secs(3600);
/// Server names whose resolution is remembered at most.
const MAX_CACHED: usize = 10_000;

/// Where requests to one server go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The URL's host: the name the certificate must match (sent as SNI),
    /// or an IP literal (IPv6 without brackets).
    pub tls_host: String,
    pub port: u16,
    /// The `Host` header.
    pub host_header: String,
    /// The addresses to connect to (all allowed by the filter).
    pub addrs: Vec<IpAddr>,
}

impl Destination {
    /// `https://host:port`, IPv6 in brackets.
    pub fn base_url(&self) -> String {
        match self.tls_host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("https://[{}]:{}", self.tls_host, self.port),
            _ => format!("https://{}:{}", self.tls_host, self.port),
        }
    }
}

/// A server name split into host and port: the host without IPv6
/// brackets, parsed as an address when it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl HostPort {
    pub fn of(name: &ServerName) -> Self {
        let raw = name.host();
        let host = raw
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(raw);
        Self {
            host: host.to_owned(),
            ip: host.parse().ok(),
            port: name.port(),
        }
    }
}

/// The `m.server` of a `.well-known/matrix/server` body, when it is a JSON
/// object naming a valid server name; anything else is no delegation.
pub fn parse_well_known(body: &[u8]) -> Option<OwnedServerName> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let server = value.as_object()?.get("m.server")?.as_str()?;
    ServerName::parse(server).ok()
}

/// How long to keep a `.well-known` answer given its `Cache-Control`.
pub fn well_known_ttl(cache_control: Option<&str>) -> Duration {
    let Some(cc) = cache_control else {
        return WELL_KNOWN_DEFAULT;
    };
    let mut ttl = WELL_KNOWN_DEFAULT;
    for directive in cc.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return WELL_KNOWN_MIN;
        }
        if let Some(secs) = lower.strip_prefix("max-age=")
            && let Ok(secs) = secs.trim_matches('"').parse::<u64>()
        {
            ttl = Duration::from_secs(secs);
        }
    }
    ttl.clamp(WELL_KNOWN_MIN, WELL_KNOWN_MAX)
}

/// One SRV record: where it points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub target: String,
    pub port: u16,
}

/// SRV records in the order they are tried: lowest priority first, the
/// heaviest first within one (RFC 2782's weighted choice made
/// deterministic); a lone target of `.` means "no service here".
pub fn order_srv(mut records: Vec<SrvTarget>) -> Vec<SrvTarget> {
    for r in &mut records {
        r.target = r.target.trim_end_matches('.').to_owned();
    }
    if records.len() == 1 && records[0].target.is_empty() {
        return Vec::new();
    }
    records.retain(|r| !r.target.is_empty());
    records.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.weight.cmp(&a.weight))
            .then(a.target.cmp(&b.target))
    });
    records
}

/// The addresses found for each URL host, for [`Overrides`]'s resolver.
#[derive(Default)]
pub struct Overrides {
    map: Mutex<HashMap<String, Vec<SocketAddr>>>,
    filter: IpFilter,
}

impl Overrides {
    pub fn new(filter: IpFilter) -> Arc<Self> {
        Arc::new(Self {
            map: Mutex::default(),
            filter,
        })
    }

    fn set(&self, dest: &Destination) {
        let addrs = dest
            .addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, dest.port))
            .collect();
        let mut map = self.map.lock();
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(dest.tls_host.to_ascii_lowercase(), addrs);
    }
}

/// reqwest's resolver for federation: the addresses discovery found for the
/// host, else the system's answer, filtered.
pub struct OverrideResolver(pub Arc<Overrides>);

impl Resolve for OverrideResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let overrides = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            if let Some(addrs) = overrides.map.lock().get(&host).cloned() {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            let addrs = lookup(&host, 0, &overrides.filter)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0))) as Addrs)
        })
    }
}

/// A/AAAA addresses of `host` that the filter allows; none is an error.
async fn lookup(host: &str, port: u16, filter: &IpFilter) -> Result<Vec<IpAddr>, FederationError> {
    let found: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| FederationError::Unreachable(format!("cannot resolve {host}: {e}")))?
        .map(|a| a.ip())
        .collect();
    allowed(host, found, filter)
}

fn allowed(
    host: &str,
    found: Vec<IpAddr>,
    filter: &IpFilter,
) -> Result<Vec<IpAddr>, FederationError> {
    if found.is_empty() {
        return Err(FederationError::Unreachable(format!(
            "{host} has no address"
        )));
    }
    let ok: Vec<IpAddr> = found
        .iter()
        .copied()
        .filter(|ip| filter.allows(*ip))
        .collect();
    if ok.is_empty() {
        return Err(FederationError::Blocked(format!(
            "{host} resolves only to blocked addresses ({})",
            found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(ok)
}

/// Finds destinations, with the caches of `.well-known` answers and of
/// resolutions.
pub struct Discovery {
    filter: IpFilter,
    overrides: Arc<Overrides>,
    /// Fetches `.well-known/matrix/server` (same roots and filter).
    well_known_http: Outbound,
    srv: Option<hickory_resolver::TokioResolver>,
    well_known: Mutex<HashMap<String, (Option<OwnedServerName>, Instant)>>,
    resolved: Mutex<HashMap<OwnedServerName, (Destination, Instant)>>,
}

impl Discovery {
    pub fn new(filter: IpFilter, overrides: Arc<Overrides>, well_known_http: Outbound) -> Self {
        let srv = match hickory_resolver::TokioResolver::builder_tokio() {
            Ok(b) => Some(b.build()),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS configuration: SRV records are not looked up");
                None
            }
        };
        Self {
            filter,
            overrides,
            well_known_http,
            srv,
            well_known: Mutex::default(),
            resolved: Mutex::default(),
        }
    }

    /// Where requests to `name` go (cached), registered with the resolver.
    pub async fn resolve(&self, name: &ServerName) -> Result<Destination, FederationError> {
        let now = Instant::now();
        if let Some((dest, until)) = self.resolved.lock().get(name)
            && *until > now
        {
            self.overrides.set(dest);
            return Ok(dest.clone());
        }
        let (dest, ttl) = self.discover(name).await?;
        self.overrides.set(&dest);
        let mut resolved = self.resolved.lock();
        if resolved.len() >= MAX_CACHED {
            resolved.retain(|_, (_, until)| *until > now);
        }
        resolved.insert(name.to_owned(), (dest.clone(), now + ttl));
        Ok(dest)
    }

    async fn discover(
        &self,
        name: &ServerName,
    ) -> Result<(Destination, Duration), FederationError> {
        let hp = HostPort::of(name);
        if let Some(dest) = self.direct(&hp, name.as_str()).await? {
            return Ok((dest, RESOLUTION_TTL));
        }
        let (delegated, ttl) = self.well_known(&hp.host).await;
        if let Some(delegated) = delegated {
            let dhp = HostPort::of(&delegated);
            if let Some(dest) = self.direct(&dhp, delegated.as_str()).await? {
                return Ok((dest, ttl));
            }
            let dest = self.srv_or_default(&dhp.host).await?;
            return Ok((dest, ttl));
        }
        Ok((self.srv_or_default(&hp.host).await?, RESOLUTION_TTL))
    }

    /// Steps 1 and 2: an IP literal, or a host name with a port.
    async fn direct(
        &self,
        hp: &HostPort,
        host_header: &str,
    ) -> Result<Option<Destination>, FederationError> {
        if let Some(ip) = hp.ip {
            let addrs = allowed(&hp.host, vec![ip], &self.filter)?;
            return Ok(Some(Destination {
                tls_host: hp.host.clone(),
                port: hp.port.unwrap_or(DEFAULT_PORT),
                host_header: host_header.to_owned(),
                addrs,
            }));
        }
        let Some(port) = hp.port else {
            return Ok(None);
        };
        Ok(Some(Destination {
            tls_host: hp.host.clone(),
            port,
            host_header: host_header.to_owned(),
            addrs: lookup(&hp.host, port, &self.filter).await?,
        }))
    }

    /// SRV `_matrix-fed._tcp`, then `_matrix._tcp`, else port 8448; the
    /// certificate name and `Host` stay `host`.
    async fn srv_or_default(&self, host: &str) -> Result<Destination, FederationError> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            for target in self.srv_records(&format!("{service}.{host}.")).await {
                match lookup(&target.target, target.port, &self.filter).await {
                    Ok(addrs) => {
                        return Ok(Destination {
                            tls_host: host.to_owned(),
                            port: target.port,
                            host_header: host.to_owned(),
                            addrs,
                        });
                    }
                    Err(e) => {
                        tracing::debug!(%host, target = %target.target, error = %e, "SRV target unusable")
                    }
                }
            }
        }
        Ok(Destination {
            tls_host: host.to_owned(),
            port: DEFAULT_PORT,
            host_header: host.to_owned(),
            addrs: lookup(host, DEFAULT_PORT, &self.filter).await?,
        })
    }

    async fn srv_records(&self, name: &str) -> Vec<SrvTarget> {
        let Some(resolver) = &self.srv else {
            return Vec::new();
        };
        match resolver.srv_lookup(name).await {
            Ok(lookup) => order_srv(
                lookup
                    .iter()
                    .map(|r| SrvTarget {
                        priority: r.priority(),
                        weight: r.weight(),
                        target: r.target().to_utf8(),
                        port: r.port(),
                    })
                    .collect(),
            ),
            Err(_) => Vec::new(),
        }
    }

    /// The delegation `.well-known/matrix/server` of `host` names (cached),
    /// with how long it holds.
    async fn well_known(&self, host: &str) -> (Option<OwnedServerName>, Duration) {
        let now = Instant::now();
        if let Some((answer, until)) = self.well_known.lock().get(host)
            && *until > now
        {
            return (answer.clone(), *until - now);
        }
        let url = format!("https://{host}/.well-known/matrix/server");
        let (answer, ttl) = match self
            .well_known_http
            .get_capped(&url, WELL_KNOWN_MAX_BYTES, None)
            .await
        {
            Ok(fetched) => match parse_well_known(&fetched.body) {
                Some(server) => (
                    Some(server),
                    well_known_ttl(fetched.cache_control.as_deref()),
                ),
                None => (None, WELL_KNOWN_FAILURE),
            },
            Err(e) => {
                tracing::debug!(%host, error = %e, "no .well-known/matrix/server");
                (None, WELL_KNOWN_FAILURE)
            }
        };
        let mut cache = self.well_known.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, until)| *until > now);
        }
        cache.insert(host.to_owned(), (answer.clone(), now + ttl));
        (answer, ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str, port: u16) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            target: target.into(),
            port,
        }
    }

    #[test]
    fn well_known_bodies() {
        let name = |b: &str| parse_well_known(b.as_bytes()).map(|s| s.to_string());
        assert_eq!(
            name(r#"{"m.server": "matrix.example.org"}"#).as_deref(),
            Some("matrix.example.org")
        );
        assert_eq!(
            name(r#"{"m.server": "matrix.example.org:443"}"#).as_deref(),
            Some("matrix.example.org:443")
        );
        assert_eq!(
            name(r#"{"m.server": "1.2.3.4:8448", "other": 1}"#).as_deref(),
            Some("1.2.3.4:8448")
        );
        assert_eq!(
            name(r#"{"m.server": "[::1]:8448"}"#).as_deref(),
            Some("[::1]:8448")
        );
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"m.server": 5}"#,
            r#"{"m.server": ""}"#,
            r#"{"m.server": "bad host/name"}"#,
            r#"{"m.server": "example.org:notaport"}"#,
            r#"{"server": "example.org"}"#,
            r#""example.org""#,
        ] {
            assert_eq!(name(bad), None, "{bad}");
        }
    }

    #[test]
    fn well_known_cache_periods() {
        assert_eq!(well_known_ttl(None), WELL_KNOWN_DEFAULT);
        assert_eq!(
            well_known_ttl(Some("max-age=7200")),
            Duration::from_secs(7200)
        );
        assert_eq!(
            well_known_ttl(Some("public, Max-Age=3600")),
            Duration::from_secs(3600)
        );
        // Within the limits.
        assert_eq!(well_known_ttl(Some("max-age=1")), WELL_KNOWN_MIN);
        assert_eq!(well_known_ttl(Some("max-age=99999999")), WELL_KNOWN_MAX);
        assert_eq!(well_known_ttl(Some("no-store")), WELL_KNOWN_MIN);
        assert_eq!(well_known_ttl(Some("max-age=junk")), WELL_KNOWN_DEFAULT);
    }

    #[test]
    fn srv_order() {
        let ordered = order_srv(vec![
            srv(20, 100, "c.example.org.", 8448),
            srv(10, 5, "b.example.org.", 443),
            srv(10, 50, "a.example.org.", 8443),
        ]);
        let targets: Vec<(&str, u16)> = ordered
            .iter()
            .map(|r| (r.target.as_str(), r.port))
            .collect();
        assert_eq!(
            targets,
            vec![
                ("a.example.org", 8443),
                ("b.example.org", 443),
                ("c.example.org", 8448)
            ]
        );
        // "." alone: the service is decidedly not available.
        assert!(order_srv(vec![srv(0, 0, ".", 0)]).is_empty());
        assert!(order_srv(Vec::new()).is_empty());
    }

    #[test]
    fn host_and_port_of_server_names() {
        let hp = |s: &str| HostPort::of(&ServerName::parse(s).unwrap());
        assert_eq!(
            hp("example.org"),
            HostPort {
                host: "example.org".into(),
                ip: None,
                port: None
            }
        );
        assert_eq!(hp("example.org:8000").port, Some(8000));
        let v4 = hp("127.0.0.1:8448");
        assert_eq!(
            (v4.ip, v4.port),
            (Some("127.0.0.1".parse().unwrap()), Some(8448))
        );
        let v6 = hp("[::1]");
        assert_eq!(
            (v6.host.as_str(), v6.ip, v6.port),
            ("::1", Some("::1".parse().unwrap()), None)
        );
    }

    #[tokio::test]
    async fn ip_literals_and_ports_need_no_lookup_and_are_filtered() {
        let filter = IpFilter::new(crate::net::outbound::default_blocklist(), Vec::new());
        let out = Outbound::new(&[], filter.clone(), Duration::from_secs(1)).unwrap();
        let d = Discovery::new(filter, Overrides::new(IpFilter::default()), out);
        let dest = d
            .resolve(&ServerName::parse("8.8.8.8").unwrap())
            .await
            .unwrap();
        assert_eq!(dest.base_url(), "https://8.8.8.8:8448");
        assert_eq!(dest.host_header, "8.8.8.8");
        let dest = d
            .resolve(&ServerName::parse("[2001:4860::1]:443").unwrap())
            .await
            .unwrap();
        assert_eq!(dest.base_url(), "https://[2001:4860::1]:443");
        assert_eq!(dest.host_header, "[2001:4860::1]:443");
        let blocked = d
            .resolve(&ServerName::parse("127.0.0.1:8448").unwrap())
            .await;
        assert!(
            matches!(blocked, Err(FederationError::Blocked(_))),
            "{blocked:?}"
        );
        // A name that resolves to loopback only.
        let blocked = d
            .resolve(&ServerName::parse("localhost:8448").unwrap())
            .await;
        assert!(
            matches!(blocked, Err(FederationError::Blocked(_))),
            "{blocked:?}"
        );
    }
}
