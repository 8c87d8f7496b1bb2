//! Where jetask's own HTTP requests may go (CONTRACT §12): endpoints and webhooks are named by
//! token holders, and jetask calls them from inside the operator's network, so every call
//! passes the `[egress]` policy. The policy is checked on the address actually connected to:
//! names are resolved here and only the allowed addresses are handed to the connection (a name
//! that resolves elsewhere on the next lookup gains nothing), literal addresses and redirect
//! targets are checked before they are used.
//!
//! The rules are pure ([`Policy::check_url`], [`Policy::check_addr`]); `engine::egress::Client`
//! is the HTTP client that applies them, with its resolver and redirect policy.

use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// A network in CIDR notation (`10.0.0.0/8`, `fe80::/10`), or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Network {
        Network {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Network {
        let [a, b, c, d, e, f, g, h] = segments;
        Network {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |prefix: u8, width: u8, net: u128, ip: u128| {
            let shift = width - prefix;
            shift == width || net >> shift == ip >> shift
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => bits(self.prefix, 32, u32::from(n).into(), u32::from(i).into()),
            (IpAddr::V6(n), IpAddr::V6(i)) => bits(self.prefix, 128, n.into(), i.into()),
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One entry of `egress.allow` or `egress.deny`: a network, or a host name (`*.example.com`
/// for every name under `example.com`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Rule {
    Network(Network),
    Host(String),
    Subdomains(String),
}

impl FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Rule, String> {
        let bad = || format!("{s:?} is not a network (10.0.0.0/8, fe80::/10, an address) or a host name");
        if let Some((addr, prefix)) = s.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let width = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= width).ok_or_else(bad)?;
            return Ok(Rule::Network(Network { addr, prefix }));
        }
        if let Ok(addr) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Rule::Network(Network { addr, prefix }));
        }
        let (name, subdomains) = match s.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let name = normalize_host(name);
        let label_ok = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(if subdomains {
            Rule::Subdomains(name)
        } else {
            Rule::Host(name)
        })
    }
}

impl TryFrom<String> for Rule {
    type Error = String;
    fn try_from(s: String) -> Result<Rule, String> {
        s.parse()
    }
}

impl Rule {
    fn matches_host(&self, host: &str) -> bool {
        match self {
            Rule::Host(h) => h == host,
            Rule::Subdomains(d) => host.strip_suffix(d.as_str()).is_some_and(|p| p.ends_with('.')),
            Rule::Network(_) => false,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Network(n) => n.fmt(f),
            Rule::Host(h) => f.write_str(h),
            Rule::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

/// Denied whatever the configuration says: addresses that are never a function, and the cloud
/// metadata services, whose answers are credentials.
const DENIED_NETWORKS: [(Network, &str); 6] = [
    (Network::v4(169, 254, 0, 0, 16), "link-local and cloud metadata"),
    (Network::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (Network::v4(100, 100, 100, 200, 32), "Alibaba Cloud metadata"),
    (
        Network::v6([0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254], 128),
        "AWS metadata over IPv6",
    ),
    // 0.0.0.0 and :: are not destinations; connecting to them reaches this machine, by a name
    // that an operator's deny of 127.0.0.0/8 would not catch.
    (Network::v4(0, 0, 0, 0, 8), "unspecified"),
    (Network::v6([0; 8], 128), "unspecified"),
];

const DENIED_HOSTS: [&str; 4] = [
    "metadata.google.internal",
    "metadata",
    "metadata.goog",
    "instance-data.ec2.internal",
];

/// Host names compare without case and without the root's trailing dot
/// (`Metadata.Google.Internal.` is `metadata.google.internal`).
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The address an IPv4-mapped (`::ffff:a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address
/// reaches, checked as that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [_, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d] = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
        v4 => v4,
    }
}

/// A call refused by the egress policy, with the rule that refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the egress policy: {0}")]
pub struct Refused(pub String);

/// The `[egress]` section: where endpoints and webhooks may point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// When not empty, only these networks and hosts may be called (the built-in and `deny`
    /// entries are refused even when listed here).
    pub allow: Vec<Rule>,
    /// Networks and hosts never called, on top of the built-in ones (link-local, metadata).
    pub deny: Vec<Rule>,
    /// Whether a 3xx answer is followed (each hop checked like the first); when not, the 3xx
    /// is the answer.
    pub follow_redirects: bool,
}

/// Hops followed at most when `follow_redirects` is on.
pub const MAX_REDIRECTS: usize = 10;

impl Policy {
    fn denied_host(&self, host: &str) -> Option<String> {
        if DENIED_HOSTS.contains(&host) {
            return Some(format!("{host} is a cloud metadata host (denied by default)"));
        }
        self.deny
            .iter()
            .find(|r| r.matches_host(host))
            .map(|r| format!("{host} is in egress.deny ({r})"))
    }

    fn allowed_host(&self, host: &str) -> bool {
        self.allow.iter().any(|r| r.matches_host(host))
    }

    /// Why `ip` is denied (by default or by `deny`), if it is.
    fn denied_addr(&self, ip: IpAddr) -> Option<String> {
        let ip = canonical(ip);
        if let Some((net, what)) = DENIED_NETWORKS.iter().find(|(n, _)| n.contains(ip)) {
            return Some(format!("{ip} is in {net} ({what}, denied by default)"));
        }
        self.deny
            .iter()
            .find(|r| matches!(r, Rule::Network(n) if n.contains(ip)))
            .map(|r| format!("{ip} is in egress.deny ({r})"))
    }

    /// Whether `allow` admits `ip`, `host` being the name it was resolved from.
    fn allowed_addr(&self, host: Option<&str>, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow.is_empty()
            || host.is_some_and(|h| self.allowed_host(h))
            || self
                .allow
                .iter()
                .any(|r| matches!(r, Rule::Network(n) if n.contains(ip)))
    }

    /// Whether connecting to `ip` is allowed, `host` being the name it was resolved from.
    pub fn check_addr(&self, host: Option<&str>, ip: IpAddr) -> Result<(), Refused> {
        if let Some(why) = self.denied_addr(ip) {
            return Err(Refused(why));
        }
        if self.allowed_addr(host, ip) {
            Ok(())
        } else {
            Err(Refused(format!("{} is not in egress.allow", canonical(ip))))
        }
    }

    /// What can be decided from a URL before any lookup: its host name, or its literal address.
    /// A name passes when an `allow` network could still let its addresses through; the
    /// resolver decides those.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        // The URL parser has already read every spelling of an IPv4 address (2852039166,
        // 0xa9.0xfe.0xa9.0xfe) as the address; IPv6 ones come in brackets.
        let Some(host) = url.host_str() else {
            return Err(Refused(format!("{url} has no host")));
        };
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => self.check_addr(None, ip),
            Err(_) => self.check_name(host),
        }
    }

    /// What can be decided from a host name before any lookup.
    pub fn check_name(&self, name: &str) -> Result<(), Refused> {
        let host = normalize_host(name);
        if let Some(why) = self.denied_host(&host) {
            return Err(Refused(why));
        }
        let networks_allowed = self.allow.iter().any(|r| matches!(r, Rule::Network(_)));
        if self.allow.is_empty() || networks_allowed || self.allowed_host(&host) {
            Ok(())
        } else {
            Err(Refused(format!("{host} is not in egress.allow")))
        }
    }

    /// The addresses of `name` that may be connected to. A name with any denied address is
    /// refused altogether: a name pointing at a public and an internal address at once is how
    /// rebinding gets past a check, and a connection would otherwise fall back on an address
    /// the operator did not mean (`::1` for `localhost` when only `127.0.0.0/8` is denied).
    /// Addresses outside a non-empty `allow` are left out; refused when none remain.
    pub fn filter(&self, name: &str, addrs: impl IntoIterator<Item = SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        self.check_name(name)?;
        let host = normalize_host(name);
        let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        if let Some(why) = addrs.iter().find_map(|a| self.denied_addr(a.ip())) {
            return Err(Refused(format!("{host} resolves to a denied address: {why}")));
        }
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.allowed_addr(Some(&host), a.ip()))
            .collect();
        if allowed.is_empty() && !addrs.is_empty() {
            return Err(Refused(format!("{host} resolves to no address in egress.allow")));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> Policy {
        toml::from_str(toml_text).unwrap()
    }

    fn url(u: &str) -> url::Url {
        url::Url::parse(u).unwrap()
    }

    fn refused(p: &Policy, u: &str) -> String {
        match p.check_url(&url(u)) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{u} allowed"),
        }
    }

    #[test]
    fn the_default_denies_link_local_and_metadata_and_allows_loopback_and_private() {
        let p = Policy::default();
        for u in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.1/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://0.0.0.0:22/",
            "http://[::]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://Metadata.Google.Internal./",
            "http://metadata/",
            // Other spellings of 169.254.169.254.
            "http://2852039166/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
        ] {
            let why = refused(&p, u);
            assert!(why.starts_with("refused by the egress policy: "), "{why}");
            assert!(why.contains("denied by default"), "{why}");
        }
        for u in [
            "http://127.0.0.1:6379/",
            "http://[::1]/",
            "http://10.1.2.3/",
            "http://192.168.0.9/",
            "http://localhost:9000/",
            "https://hooks.example.com/x",
            "http://metadata.example.com/",
        ] {
            assert_eq!(p.check_url(&url(u)), Ok(()), "{u}");
        }
    }

    #[test]
    fn the_operator_denies_more_and_never_less() {
        let p = policy(r#"deny = ["127.0.0.0/8", "::1", "10.0.0.0/8", "*.internal.test", "db.example.com"]"#);
        assert!(refused(&p, "http://127.0.0.1:6379/").contains("egress.deny (127.0.0.0/8)"));
        assert!(refused(&p, "http://[::1]/").contains("egress.deny (::1/128)"));
        assert!(refused(&p, "http://[::ffff:127.0.0.1]/").contains("127.0.0.0/8"));
        assert!(refused(&p, "http://a.b.internal.test/").contains("*.internal.test"));
        assert!(refused(&p, "http://DB.example.com./").contains("db.example.com"));
        assert_eq!(p.check_url(&url("http://internal.test/")), Ok(()));
        assert_eq!(p.check_url(&url("http://192.168.1.1/")), Ok(()));
        let open = policy(r#"allow = ["0.0.0.0/0", "::/0", "metadata.google.internal"]"#);
        assert!(refused(&open, "http://169.254.169.254/").contains("denied by default"));
        assert!(refused(&open, "http://metadata.google.internal/").contains("denied by default"));
    }

    #[test]
    fn an_allow_list_admits_only_its_networks_and_hosts() {
        let p = policy(r#"allow = ["10.0.0.0/8", "*.example.com"]"#);
        assert_eq!(p.check_url(&url("http://10.9.9.9/")), Ok(()));
        assert!(refused(&p, "http://192.168.0.1/").contains("not in egress.allow"));
        // A name may resolve into an allowed network: the resolver decides.
        assert_eq!(p.check_url(&url("http://svc.cluster.test/")), Ok(()));
        let a = |s: &str| SocketAddr::new(s.parse().unwrap(), 80);
        assert_eq!(
            p.filter("svc.cluster.test", [a("192.168.0.1"), a("10.0.0.7")]),
            Ok(vec![a("10.0.0.7")])
        );
        assert_eq!(
            p.filter("api.example.com", [a("192.168.0.1")]),
            Ok(vec![a("192.168.0.1")])
        );
        let e = p.filter("svc.cluster.test", [a("192.168.0.1")]).unwrap_err();
        assert!(
            e.0.contains("svc.cluster.test resolves to no address in egress.allow"),
            "{e}"
        );
        let hosts_only = policy(r#"allow = ["*.example.com"]"#);
        assert!(refused(&hosts_only, "http://other.test/").contains("other.test is not in egress.allow"));
    }

    #[test]
    fn a_name_with_any_denied_address_is_refused_altogether() {
        let p = policy(r#"deny = ["127.0.0.0/8"]"#);
        let a = |s: &str| SocketAddr::new(s.parse().unwrap(), 80);
        let e = p.filter("localhost", [a("::1"), a("127.0.0.1")]).unwrap_err();
        let why = "localhost resolves to a denied address: 127.0.0.1 is in egress.deny (127.0.0.0/8)";
        assert!(e.0.contains(why), "{e}");
        let e = p
            .filter("rebind.test", [a("93.184.216.34"), a("169.254.169.254")])
            .unwrap_err();
        assert!(e.0.contains("rebind.test resolves to a denied address"), "{e}");
        assert_eq!(
            p.filter("example.test", [a("93.184.216.34")]),
            Ok(vec![a("93.184.216.34")])
        );
        assert_eq!(p.filter("nowhere.test", []), Ok(vec![]));
        assert!(p.filter("metadata.google.internal", [a("93.184.216.34")]).is_err());
    }

    #[test]
    fn rules_parse_networks_addresses_and_host_names() {
        assert!("10.0.0.0/33".parse::<Rule>().is_err());
        assert!("fe80::/129".parse::<Rule>().is_err());
        assert!("a b".parse::<Rule>().is_err());
        assert!("".parse::<Rule>().is_err());
        assert!("*.".parse::<Rule>().is_err());
        assert!("http://x".parse::<Rule>().is_err());
        assert_eq!("[::1]".parse::<Rule>().unwrap().to_string(), "::1/128");
        assert_eq!("Example.COM".parse::<Rule>(), Ok(Rule::Host("example.com".into())));
        assert!(Network::v4(0, 0, 0, 0, 0).contains("8.8.8.8".parse().unwrap()));
        assert!(!Network::v4(10, 0, 0, 0, 8).contains("::1".parse().unwrap()));
    }
}
