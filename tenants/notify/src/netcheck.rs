//! Which webhook URLs are acceptable: `http(s)://` only, and unless private
//! addresses are allowed, no host that resolves to a loopback, private,
//! link-local, shared, unspecified, multicast or documentation address
//! (server-side request forgery). The check runs at registration and again
//! at every delivery, inside the HTTP client's resolver, so the address
//! connected to is the one checked (no DNS rebinding in between).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("webhook URL {0:?} is not an http:// or https:// URL")]
    Scheme(String),
    #[error("webhook URL {0:?} cannot be parsed: {1}")]
    Parse(String, String),
    #[error("webhook URL host {0:?} does not resolve: {1}")]
    Resolve(String, String),
    #[error("webhook URL host {host:?} resolves to {addr}, a private or loopback address (allowed only with TENANTPLANE_WEBHOOK_ALLOW_PRIVATE=true)")]
    Private { host: String, addr: IpAddr },
}

/// Is `ip` somewhere a webhook must not reach by default?
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                // 100.64.0.0/10, carrier-grade NAT
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // 198.18.0.0/15, benchmarking
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local, 2001:db8::/32
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Parses and checks a webhook URL's form (scheme, host).
pub fn parse(text: &str) -> Result<url::Url, UrlError> {
    let url = url::Url::parse(text).map_err(|e| UrlError::Parse(text.into(), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(text.into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::Parse(text.into(), "no host".into()));
    }
    Ok(url)
}

/// Resolves `host:port` and refuses it when any address is private (unless
/// `allow_private`). Returns the addresses.
pub fn resolve(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, UrlError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| UrlError::Resolve(host.into(), e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(UrlError::Resolve(host.into(), "no address".into()));
    }
    if !allow_private {
        if let Some(a) = addrs.iter().find(|a| is_private(a.ip())) {
            return Err(UrlError::Private {
                host: host.into(),
                addr: a.ip(),
            });
        }
    }
    Ok(addrs)
}

/// The whole check of a URL given at registration.
pub fn check(text: &str, allow_private: bool) -> Result<url::Url, UrlError> {
    let url = parse(text)?;
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    resolve(&host, port, allow_private)?;
    Ok(url)
}

/// ureq's resolver with the check built in.
pub struct CheckedResolver {
    pub allow_private: bool,
}

impl ureq::Resolver for CheckedResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let (host, port) = netloc
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h, p)))
            .ok_or_else(|| std::io::Error::other(format!("bad address {netloc:?}")))?;
        resolve(host, port, self.allow_private).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(matches!(
            check("ftp://x.example/", true),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(check("not a url", true), Err(UrlError::Parse(..))));
        assert!(matches!(
            check("http://127.0.0.1:9/hook", false),
            Err(UrlError::Private { .. })
        ));
        assert!(check("http://127.0.0.1:9/hook", true).is_ok());
        assert!(matches!(
            check("http://[::1]:9/hook", false),
            Err(UrlError::Private { .. })
        ));
    }
}
