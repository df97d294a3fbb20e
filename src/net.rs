//! Who the client is behind a reverse proxy: CIDR ranges of trusted proxies
//! (`trusted_proxies` in the config) and the client address they forward in
//! `X-Forwarded-For` or RFC 7239 `Forwarded`. The requests the server
//! makes itself are in [`outbound`].

pub mod outbound;

use std::fmt;
use std::net::IpAddr;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

/// An IPv4 or IPv6 network, `address/prefix` (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self {
            addr: addr.to_canonical(),
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits - prefix);
    shift >= u32::from(bits) || (a >> shift) == (b >> shift)
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn trusted(proxies: &[Cidr], ip: IpAddr) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The client's address: the TCP peer, or, when the peer is a trusted
/// proxy, the address the proxies forwarded. `X-Forwarded-For` is read when
/// present, else `Forwarded`; in either, the right-most address that is not
/// itself a trusted proxy (what a client put to the left is not believed).
/// A malformed entry stops the walk at the last trusted hop.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    if proxies.is_empty() || !trusted(proxies, peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = if headers.contains_key("x-forwarded-for") {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("!").split(','))
            .map(|s| s.trim().parse::<IpAddr>().ok())
            .collect()
    } else {
        headers
            .get_all(http::header::FORWARDED)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("!").split(','))
            .map(forwarded_for)
            .collect()
    };
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop else { break };
        client = ip.to_canonical();
        if !trusted(proxies, client) {
            break;
        }
    }
    client
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.1`,
/// `for="[2001:db8::1]:4711"`); `None` for none, `unknown` or an
/// obfuscated identifier.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let value = value.trim_matches('"');
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    value
        .parse()
        .ok()
        .or_else(|| value.rsplit_once(':')?.0.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| Cidr::parse(s).unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        let c = Cidr::parse("fd00::/8").unwrap();
        assert!(c.contains(ip("fd12::1")));
        assert!(!c.contains(ip("fe80::1")));
        assert!(!c.contains(ip("10.1.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert_eq!(one.to_string(), "127.0.0.1/32");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "example.org",
            "10.0.0/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn untrusted_peer_headers_ignored() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        let proxies = cidrs(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &proxies), ip("9.9.9.9"));
    }

    #[test]
    fn right_most_untrusted_forwarded_address() {
        let proxies = cidrs(&["10.0.0.0/8", "fd00::/8"]);
        let peer = ip("10.0.0.1");
        // The client's own claim (1.1.1.1) is to the left of what the proxies saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.5")]);
        assert_eq!(client_ip(peer, &h, &proxies), ip("2.2.2.2"));
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2001:db8::7"),
        ]);
        assert_eq!(client_ip(peer, &h, &proxies), ip("2001:db8::7"));
        // Every hop trusted: the furthest one.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, fd00::1")]);
        assert_eq!(client_ip(peer, &h, &proxies), ip("10.9.9.9"));
        // Garbage stops the walk at the last trusted hop.
        let h = headers(&[("x-forwarded-for", "3.3.3.3, nonsense")]);
        assert_eq!(client_ip(peer, &h, &proxies), peer);
        let h = headers(&[("x-forwarded-for", "nonsense, 10.0.0.7")]);
        assert_eq!(client_ip(peer, &h, &proxies), ip("10.0.0.7"));
        // No header: the peer.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &proxies), peer);
    }

    #[test]
    fn rfc7239_forwarded() {
        let proxies = cidrs(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https",
        )]);
        assert_eq!(client_ip(peer, &h, &proxies), ip("2001:db8:cafe::17"));
        let h = headers(&[(
            "forwarded",
            "proto=http;For=\"192.0.2.43:47011\";by=10.0.0.1",
        )]);
        assert_eq!(client_ip(peer, &h, &proxies), ip("192.0.2.43"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_ip(peer, &h, &proxies), peer);
        // X-Forwarded-For wins when both are present.
        let h = headers(&[("forwarded", "for=1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]);
        assert_eq!(client_ip(peer, &h, &proxies), ip("2.2.2.2"));
    }
}
