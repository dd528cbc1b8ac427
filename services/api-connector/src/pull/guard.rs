//! Pull requests go to the public internet only, unless an endpoint says
//! otherwise (`allow_private_network: true`): a page or download URL that
//! names, or resolves to, a loopback, private, link-local (cloud metadata,
//! `169.254.169.254`), shared or unspecified address is refused before any
//! connection is made. Otherwise a facility's page could make the connector
//! fetch internal services into the raw zone (SSRF).
//!
//! Names are checked where they are resolved (a [`reqwest::dns::Resolve`]
//! that drops refused addresses), so a name that resolves to an internal
//! address at connect time is caught too, not only at a first look.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether pulls may connect to `ip`.
pub fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        // 0.0.0.0/8, 100.64.0.0/10 (shared, carrier NAT), 192.0.0.0/24,
        // 198.18.0.0/15 (benchmarking), 240.0.0.0/4 (reserved).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240
}

fn refused_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local (AWS's metadata fd00:ec2::254 among them),
        // fe80::/10 link-local, 2001:db8::/32 documentation, 64:ff9b::/96
        // NAT64 (it reaches IPv4 hosts, private ones included).
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)
}

/// A URL's host is an address literal that pulls may not reach (`None`:
/// allowed, or a name, which [`GuardedResolver`] checks).
pub fn refused_literal(url: &url::Url) -> Option<IpAddr> {
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    is_refused(ip).then_some(ip)
}

/// The system resolver, keeping only the addresses pulls may reach; a name
/// with none left fails to resolve, saying why.
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| !is_refused(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback, private or link-local addresses, \
                     which pull endpoints may not reach (allow_private_network: true allows it)"
                )
                .into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused_and_public_ones_allowed() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_refused(refused.parse().unwrap()), "{refused}");
        }
        for allowed in ["8.8.8.8", "172.32.0.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(!is_refused(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn address_literals_in_urls_are_checked() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(refused_literal(&url("http://169.254.169.254/latest/meta-data/")).is_some());
        assert!(refused_literal(&url("http://[::1]:8080/x")).is_some());
        assert!(
            refused_literal(&url("http://0x7f000001/x")).is_some(),
            "hex form"
        );
        assert!(refused_literal(&url("https://8.8.8.8/x")).is_none());
        assert!(
            refused_literal(&url("https://api.example/x")).is_none(),
            "names: resolver"
        );
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_fail_to_resolve() {
        let name: Name = "localhost".parse().unwrap();
        let error = match GuardedResolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("allow_private_network"), "{error}");
    }
}
