//! The HTTP clients Myelin uses to reach the outside world (push gateways,
//! URL previews): TLS verified against the system's CA certificates plus
//! the configured CA files (and `SSL_CERT_FILE`), every resolved address
//! checked against an IP blocklist (an allowlist wins over it), addresses
//! in URLs and redirects checked the same way, timeouts, no proxy from the
//! environment, and bodies read with a size cap.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use super::Cidr;

/// The `User-Agent` of every outgoing request.
const USER_AGENT: &str = "Myelin (bot; Matrix homeserver)";

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;

/// Seconds a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The ranges blocked unless configured otherwise: Synapse's
/// `url_preview_ip_range_blacklist` example list (its default
/// `ip_range_blacklist`) plus "this network", the reserved 240/4 with the
/// broadcast address, the IPv6 unspecified address and the discard prefix.
const DEFAULT_BLOCKLIST: &[&str] = &[
    // This network, and the unspecified address.
    "0.0.0.0/8",
    // Loopback.
    "127.0.0.0/8",
    // Private networks.
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    // Shared address space (carrier-grade NAT).
    "100.64.0.0/10",
    // IETF protocol assignments.
    "192.0.0.0/24",
    // Link-local.
    "169.254.0.0/16",
    // The former 6to4 relay anycast.
    "192.88.99.0/24",
    // Benchmarking.
    "198.18.0.0/15",
    // Documentation.
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    // Multicast.
    "224.0.0.0/4",
    // Reserved, and the limited broadcast address.
    "240.0.0.0/4",
    // IPv6 unspecified and loopback.
    "::/128",
    "::1/128",
    // Discard-only.
    "100::/64",
    // Link-local.
    "fe80::/10",
    // Unique local.
    "fc00::/7",
    // Documentation.
    "2001:db8::/32",
    // Multicast.
    "ff00::/8",
    // Site-local (deprecated).
    "fec0::/10",
];

/// The default blocklist (see [`DEFAULT_BLOCKLIST`]).
pub fn default_blocklist() -> Vec<Cidr> {
    DEFAULT_BLOCKLIST
        .iter()
        .map(|c| Cidr::parse(c).expect("the default ranges parse"))
        .collect()
}

/// Which addresses may be contacted: any the allowlist names, else any
/// the blocklist does not. IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Default)]
pub struct IpFilter {
    block: Vec<Cidr>,
    allow: Vec<Cidr>,
}

impl IpFilter {
    pub fn new(block: Vec<Cidr>, allow: Vec<Cidr>) -> Self {
        Self { block, allow }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip)) || !self.block.iter().any(|c| c.contains(ip))
    }
}

/// Why an outgoing request did not get an answer to use.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("not an http or https URL")]
    BadUrl,
    /// The URL (or a redirect) names a blocked IP address.
    #[error("IP address {0} blocked")]
    BlockedAddress(IpAddr),
    /// The name resolves to no address that may be contacted (none at
    /// all, or only blocked ones).
    #[error("{0}")]
    Unresolvable(String),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the server answered {0}")]
    Status(StatusCode),
    /// No answer within the client's timeout.
    #[error("timed out")]
    TimedOut,
    /// Connection, TLS or protocol failure.
    #[error("{0}")]
    Failed(String),
}

/// A refusal made inside reqwest (by the resolver or the redirect
/// policy), found again in the error's source chain.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("IP address {0} blocked")]
    Address(IpAddr),
    #[error("{0}")]
    Name(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    Redirects,
    #[error("redirect to a URL that is not http or https")]
    Scheme,
}

impl OutboundError {
    fn of(e: &reqwest::Error) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(r) = err.downcast_ref::<Refusal>() {
                return match r {
                    Refusal::Address(ip) => Self::BlockedAddress(*ip),
                    Refusal::Name(m) => Self::Unresolvable(m.clone()),
                    Refusal::Redirects | Refusal::Scheme => Self::Failed(r.to_string()),
                };
            }
            source = err.source();
        }
        if e.is_timeout() {
            return Self::TimedOut;
        }
        Self::Failed(e.to_string())
    }
}

/// An answer read whole: where it came from after redirects, its type
/// and its body.
#[derive(Debug)]
pub struct Fetched {
    pub url: Url,
    pub content_type: Option<String>,
    /// The answer's `Cache-Control` header, when it is text.
    pub cache_control: Option<String>,
    pub body: Bytes,
}

/// One outgoing HTTP client with its address filter.
#[derive(Debug, Clone)]
pub struct Outbound {
    client: reqwest::Client,
    filter: Arc<IpFilter>,
}

/// The certificate authorities trusted besides the system's: those in
/// `ca_files` (an error if one cannot be read or holds none) and in the
/// file `SSL_CERT_FILE` names (a warning if that fails).
pub fn extra_roots(ca_files: &[PathBuf]) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let mut roots = Vec::new();
    for file in ca_files {
        roots.extend(read_pem(file)?);
    }
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        match read_pem(Path::new(&file)) {
            Ok(certs) => roots.extend(certs),
            Err(e) => tracing::warn!("SSL_CERT_FILE not used: {e}"),
        }
    }
    Ok(roots)
}

fn read_pem(file: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(file)
        .map_err(|e| anyhow::anyhow!("cannot read CA file {}: {e}", file.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| anyhow::anyhow!("CA file {}: {e}", file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("CA file {} holds no PEM certificate", file.display());
    }
    Ok(certs)
}

impl Outbound {
    /// A client trusting the system's CAs and `roots`, reaching only
    /// addresses `filter` allows, each request bounded by `timeout`.
    pub fn new(
        roots: &[reqwest::Certificate],
        filter: IpFilter,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let filter = Arc::new(filter);
        let redirects = filter.clone();
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .no_proxy()
            .tls_built_in_native_certs(true)
            .dns_resolver(Arc::new(FilteringResolver {
                filter: filter.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(Refusal::Redirects);
                }
                if !matches!(attempt.url().scheme(), "http" | "https") {
                    return attempt.error(Refusal::Scheme);
                }
                match literal_ip(attempt.url()) {
                    Some(ip) if !redirects.allows(ip) => attempt.error(Refusal::Address(ip)),
                    _ => attempt.follow(),
                }
            }));
        for root in roots {
            builder = builder.add_root_certificate(root.clone());
        }
        Ok(Self {
            client: builder.build()?,
            filter,
        })
    }

    /// `url` parsed, when it is http(s) and names no blocked address.
    pub fn check(&self, url: &str) -> Result<Url, OutboundError> {
        let url = Url::parse(url).map_err(|_| OutboundError::BadUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(OutboundError::BadUrl);
        }
        match literal_ip(&url) {
            Some(ip) if !self.filter.allows(ip) => Err(OutboundError::BlockedAddress(ip)),
            _ => Ok(url),
        }
    }

    /// POSTs `body` as JSON to `url`; any status is returned.
    pub async fn post_json<T: serde::Serialize + ?Sized>(
        &self,
        url: &str,
        body: &T,
    ) -> Result<reqwest::Response, OutboundError> {
        self.post(url, None, body).await
    }

    /// [`Self::post_json`] with `Authorization: Bearer <token>`.
    pub async fn post_json_bearer<T: serde::Serialize + ?Sized>(
        &self,
        url: &str,
        token: &str,
        body: &T,
    ) -> Result<reqwest::Response, OutboundError> {
        self.post(url, Some(token), body).await
    }

    /// PUTs `body` as JSON to `url` with `Authorization: Bearer <token>`;
    /// any status is returned.
    pub async fn put_json_bearer<T: serde::Serialize + ?Sized>(
        &self,
        url: &str,
        token: &str,
        body: &T,
    ) -> Result<reqwest::Response, OutboundError> {
        let request = self.client.put(self.check(url)?).json(body);
        request
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| OutboundError::of(&e))
    }

    /// GETs `url` (with these query pairs) with `Authorization: Bearer
    /// <token>`; any status is returned.
    pub async fn get_bearer(
        &self,
        url: &str,
        token: &str,
        query: &[(String, String)],
    ) -> Result<reqwest::Response, OutboundError> {
        let request = self.client.get(self.check(url)?).query(query);
        request
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| OutboundError::of(&e))
    }

    async fn post<T: serde::Serialize + ?Sized>(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: &T,
    ) -> Result<reqwest::Response, OutboundError> {
        let mut request = self.client.post(self.check(url)?).json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.map_err(|e| OutboundError::of(&e))
    }

    /// GETs `url` and reads its body, at most `max` bytes (more:
    /// [`OutboundError::TooLarge`], found while streaming). An answer that is
    /// not 2xx is [`OutboundError::Status`].
    pub async fn get_capped(
        &self,
        url: &str,
        max: u64,
        accept_language: Option<&str>,
    ) -> Result<Fetched, OutboundError> {
        let url = self.check(url)?;
        let mut request = self.client.get(url);
        if let Some(lang) = accept_language {
            request = request.header(http::header::ACCEPT_LANGUAGE, lang);
        }
        let mut response = request.send().await.map_err(|e| OutboundError::of(&e))?;
        if response.content_length().is_some_and(|l| l > max) {
            return Err(OutboundError::TooLarge(max));
        }
        if !response.status().is_success() {
            return Err(OutboundError::Status(response.status()));
        }
        let url = response.url().clone();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let cache_control = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| OutboundError::of(&e))? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(OutboundError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            url,
            content_type,
            cache_control,
            body: body.freeze(),
        })
    }
}

/// The address a URL names literally, if it does.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
        url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
        url::Host::Domain(_) => None,
    }
}

/// Resolves names with the system resolver and keeps only the addresses the
/// filter allows; none left is an error (as Synapse, which then answers
/// a DNS failure).
struct FilteringResolver {
    filter: Arc<IpFilter>,
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let filter = self.filter.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Refusal::Name(format!("cannot resolve {host}: {e}")))?
                .collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| filter.allows(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(Refusal::Name(format!(
                    "{host} resolves to no address that may be contacted"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_blocklist_blocks_every_special_range() {
        let f = IpFilter::new(default_blocklist(), Vec::new());
        for blocked in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "169.254.169.254",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "100::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "2001:db8::1",
            "ff02::1",
            "fec0::1",
            // IPv4-mapped IPv6 counts as its IPv4 address.
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
        ] {
            assert!(!f.allows(ip(blocked)), "{blocked} should be blocked");
        }
        for allowed in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(f.allows(ip(allowed)), "{allowed} should be allowed");
        }
    }

    #[test]
    fn the_allowlist_wins() {
        let f = IpFilter::new(default_blocklist(), vec![Cidr::parse("127.0.0.1").unwrap()]);
        assert!(f.allows(ip("127.0.0.1")));
        assert!(!f.allows(ip("127.0.0.2")));
        assert!(IpFilter::default().allows(ip("127.0.0.1")));
    }

    #[test]
    fn urls_naming_blocked_addresses_are_refused() {
        let out = Outbound::new(
            &[],
            IpFilter::new(default_blocklist(), Vec::new()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(matches!(
            out.check("http://127.0.0.1:8080/x"),
            Err(OutboundError::BlockedAddress(_))
        ));
        assert!(matches!(
            out.check("https://[::1]/"),
            Err(OutboundError::BlockedAddress(_))
        ));
        assert!(matches!(
            out.check("ftp://example.org/"),
            Err(OutboundError::BadUrl)
        ));
        assert!(matches!(out.check("not a url"), Err(OutboundError::BadUrl)));
        assert!(out.check("https://example.org/page").is_ok());
        assert!(out.check("http://8.8.8.8/").is_ok());
    }

    #[tokio::test]
    async fn nothing_is_sent_to_a_blocked_address() {
        let out = Outbound::new(
            &[],
            IpFilter::new(default_blocklist(), Vec::new()),
            Duration::from_secs(1),
        )
        .unwrap();
        let sent = out.post_json("http://127.0.0.1:9/notify", &1).await;
        assert!(matches!(sent, Err(OutboundError::BlockedAddress(_))));
        let fetched = out.get_capped("http://[::1]:9/", 10, None).await;
        assert!(matches!(fetched, Err(OutboundError::BlockedAddress(_))));
        // A name resolving to loopback only: no address left.
        let named = out.get_capped("http://localhost:9/", 10, None).await;
        assert!(
            matches!(named, Err(OutboundError::Unresolvable(_))),
            "{named:?}"
        );
    }

    #[test]
    fn ca_files_are_read_and_bad_ones_refused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/tls");
        assert_eq!(read_pem(&dir.join("ca.pem")).unwrap().len(), 1);
        assert!(read_pem(&dir.join("missing.pem")).is_err());
        // A key is no certificate.
        assert!(read_pem(&dir.join("gateway.key")).is_err());
    }
}
