//! Where the agent may connect for an upstream backend: public addresses only, unless the endpoint opts in with
//! `allowPrivateNetwork` (an in-cluster Service, a server on this machine).
//!
//! ```text
//!  upstream URL ─▶ host is an IP literal? ─▶ checked here before the request
//!              └▶ host name ─▶ PublicOnly resolver (the client's DNS): private answers are dropped, none left
//!                              is an error, so a name that resolves (or re-resolves) to 169.254.169.254 is
//!                              never connected to
//! ```
//! "Private" means loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, where clouds serve instance
//! credentials; fe80::/10), the private ranges (10/8, 172.16/12, 192.168/16, fc00::/7), carrier-grade NAT
//! (100.64/10) and the unspecified address.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether `ip` is outside every range an endpoint must opt in to.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let carrier_nat = a == 100 && (64..128).contains(&b);
    !(ip.is_loopback() || ip.is_link_local() || ip.is_private() || ip.is_unspecified() || carrier_nat)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || unique_local || link_local)
}

/// The refusal text for an upstream address an endpoint has not opted in to.
pub fn private_target_message(what: &str) -> String {
    format!(
        "upstream {what} is a loopback, link-local or private address; set backend.upstream.allowPrivateNetwork: true \
         on the InferenceEndpoint if that is intended"
    )
}

/// A DNS resolver that answers only public addresses.
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = resolved.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> =
                    private_target_message(&format!("host {host}")).into();
                return Err(error);
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:4860::8888", "1.1.1.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_only_to_loopback_is_refused() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let error = match PublicOnly.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("allowPrivateNetwork"), "{error}");
    }
}
