//! What the client asked for, as seen through trusted proxies.
//!
//! `X-Forwarded-For/Proto/Host/Uri` and `X-Original-URL` are believed only
//! when the TCP peer is a configured trusted proxy (default: loopback).
//! From anyone else they are ignored: a client cannot pick its own IP,
//! scheme, host or original URL.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::HOST;
use ipnet::IpNet;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";
pub const X_FORWARDED_URI: &str = "x-forwarded-uri";
pub const X_FORWARDED_METHOD: &str = "x-forwarded-method";
pub const X_ORIGINAL_URL: &str = "x-original-url";
pub const X_ORIGINAL_METHOD: &str = "x-original-method";

/// Where a request came from and what it was for.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    /// The peer is a trusted proxy.
    pub trusted: bool,
    /// The client's address: the peer, or the last untrusted hop in
    /// `X-Forwarded-For` when the peer is trusted.
    pub client_ip: IpAddr,
    /// `http` or `https`, as the client used it.
    pub scheme: &'static str,
    /// `host[:port]` as the client used it, lower-cased.
    pub host: Option<String>,
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    trusted.iter().any(|n| n.contains(&ip))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A host header value we accept: `name[:port]`, no path, no userinfo.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

impl ClientInfo {
    /// `default_scheme` is the listener's (or the public URL's) scheme.
    pub fn read(
        headers: &HeaderMap,
        uri_host: Option<&str>,
        peer: SocketAddr,
        trusted_nets: &[IpNet],
        default_scheme: &'static str,
    ) -> Self {
        let trusted = is_trusted(peer.ip(), trusted_nets);
        let mut client_ip = peer.ip();
        let mut scheme = default_scheme;
        let mut host = header(headers, HOST.as_str())
            .or(uri_host)
            .map(str::to_ascii_lowercase);
        if trusted {
            // Walk X-Forwarded-For from the right, skipping trusted hops.
            let hops = headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect::<Vec<_>>();
            for hop in hops.iter().rev() {
                let Ok(ip) = hop.parse::<IpAddr>() else { break };
                client_ip = ip;
                if !is_trusted(ip, trusted_nets) {
                    break;
                }
            }
            match header(headers, X_FORWARDED_PROTO)
                .map(|p| p.split(',').next().unwrap_or("").trim())
            {
                Some(p) if p.eq_ignore_ascii_case("https") => scheme = "https",
                Some(p) if p.eq_ignore_ascii_case("http") => scheme = "http",
                _ => {}
            }
            if let Some(h) =
                header(headers, X_FORWARDED_HOST).map(|h| h.split(',').next().unwrap_or("").trim())
                && valid_host(h)
            {
                host = Some(h.to_ascii_lowercase());
            }
        }
        let host = host.filter(|h| valid_host(h));
        ClientInfo {
            peer,
            trusted,
            client_ip,
            scheme,
            host,
        }
    }

    /// The host without its port.
    pub fn hostname(&self) -> Option<&str> {
        let h = self.host.as_deref()?;
        if h.starts_with('[') {
            return h.split_once(']').map(|(a, _)| &a[1..]);
        }
        Some(h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h))
    }

    /// The URL the client asked for, for forward-auth: `X-Original-URL`
    /// (nginx), or `X-Forwarded-Proto/Host/Uri` (Traefik, Caddy). Only
    /// from trusted peers; `None` when not given.
    pub fn original_url(&self, headers: &HeaderMap) -> Option<url::Url> {
        if !self.trusted {
            return None;
        }
        if let Some(u) = header(headers, X_ORIGINAL_URL)
            && let Ok(url) = url::Url::parse(u)
        {
            return Some(url);
        }
        let uri = header(headers, X_FORWARDED_URI)?;
        if !uri.starts_with('/') || uri.starts_with("//") {
            return None;
        }
        let host = self.host.as_deref()?;
        url::Url::parse(&format!("{}://{host}{uri}", self.scheme)).ok()
    }

    /// The original method for forward-auth (`X-Forwarded-Method` from
    /// Traefik/Caddy, `X-Original-Method` from nginx), from trusted peers.
    pub fn original_method<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        if !self.trusted {
            return None;
        }
        header(headers, X_FORWARDED_METHOD).or_else(|| header(headers, X_ORIGINAL_METHOD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn nets() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap()]
    }

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn untrusted_peers_cannot_set_forwarded_values() {
        let headers = h(&[
            ("host", "app.example.com"),
            (X_FORWARDED_FOR, "1.2.3.4"),
            (X_FORWARDED_PROTO, "https"),
            (X_FORWARDED_HOST, "evil.com"),
            (X_FORWARDED_URI, "/x"),
        ]);
        let c = ClientInfo::read(
            &headers,
            None,
            "203.0.113.9:5000".parse().unwrap(),
            &nets(),
            "http",
        );
        assert_eq!(c.client_ip.to_string(), "203.0.113.9");
        assert_eq!(c.scheme, "http");
        assert_eq!(c.host.as_deref(), Some("app.example.com"));
        assert!(c.original_url(&headers).is_none());
    }

    #[test]
    fn trusted_peers_set_them_and_spoofed_left_hops_are_skipped() {
        let headers = h(&[
            ("host", "portcullis:4180"),
            (X_FORWARDED_FOR, "6.6.6.6, 198.51.100.7, 127.0.0.2"),
            (X_FORWARDED_PROTO, "https"),
            (X_FORWARDED_HOST, "App.Example.com"),
            (X_FORWARDED_URI, "/p?q=1"),
        ]);
        let c = ClientInfo::read(
            &headers,
            None,
            "127.0.0.1:5000".parse().unwrap(),
            &nets(),
            "http",
        );
        assert_eq!(c.client_ip.to_string(), "198.51.100.7");
        assert_eq!(c.scheme, "https");
        assert_eq!(c.hostname(), Some("app.example.com"));
        assert_eq!(
            c.original_url(&headers).unwrap().as_str(),
            "https://app.example.com/p?q=1"
        );
    }

    #[test]
    fn bad_hosts_are_ignored() {
        let headers = h(&[("host", "a.com/evil"), (X_FORWARDED_URI, "//evil.com/")]);
        let c = ClientInfo::read(
            &headers,
            None,
            "127.0.0.1:1".parse().unwrap(),
            &nets(),
            "http",
        );
        assert_eq!(c.host, None);
        assert!(c.original_url(&headers).is_none());
    }
}
