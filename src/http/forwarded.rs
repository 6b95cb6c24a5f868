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

/// Which edge-proxy protocol a forward-auth request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeProtocol {
    /// nginx `auth_request`: `X-Original-URL`, `X-Original-Method`.
    Nginx,
    /// Traefik `forwardAuth`, Caddy `forward_auth`: `X-Forwarded-*`.
    Forwarded,
}

/// The request an edge proxy asks about.
#[derive(Debug, Clone)]
pub struct Original {
    /// Parsed (WHATWG: dot segments resolved).
    pub url: url::Url,
    /// The path as the client sent it, before any normalisation: what the
    /// app will see.
    pub raw_path: String,
    pub method: String,
}

/// A path segment that is `.` or `..` once `%2e`, `%2f`, `%5c` and `\`
/// are decoded: such a path means different things to us and to the app.
pub fn has_dot_segment(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if !(lower.contains('.') || lower.contains("%2e")) {
        return false;
    }
    let decoded = lower
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    decoded.split('/').any(|seg| seg == "." || seg == "..")
}

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

    /// The request an edge proxy asks about, read only from the headers
    /// that proxy's protocol uses (a client may add the other protocol's
    /// headers, and Traefik and Caddy pass them through): nginx sends
    /// `X-Original-URL`/`-Method`; Traefik and Caddy `X-Forwarded-Proto/
    /// Host/Uri/Method`. Only from trusted peers; `None` when not given.
    pub fn original(&self, headers: &HeaderMap, protocol: EdgeProtocol) -> Option<Original> {
        if !self.trusted {
            return None;
        }
        let (raw, url) = match protocol {
            EdgeProtocol::Nginx => {
                let u = header(headers, X_ORIGINAL_URL)?;
                let url = url::Url::parse(u).ok()?;
                let raw = u
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                    .unwrap_or("/");
                (raw.to_string(), url)
            }
            EdgeProtocol::Forwarded => {
                let uri = header(headers, X_FORWARDED_URI)?;
                if !uri.starts_with('/') || uri.starts_with("//") {
                    return None;
                }
                let host = self.host.as_deref()?;
                (
                    uri.to_string(),
                    url::Url::parse(&format!("{}://{host}{uri}", self.scheme)).ok()?,
                )
            }
        };
        let method = match protocol {
            EdgeProtocol::Nginx => header(headers, X_ORIGINAL_METHOD),
            EdgeProtocol::Forwarded => header(headers, X_FORWARDED_METHOD),
        }
        .unwrap_or("GET")
        .to_string();
        let raw_path = raw.split(['?', '#']).next().unwrap_or("/").to_string();
        Some(Original {
            url,
            raw_path,
            method,
        })
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
        assert!(c.original(&headers, EdgeProtocol::Forwarded).is_none());
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
        let o = c.original(&headers, EdgeProtocol::Forwarded).unwrap();
        assert_eq!(o.url.as_str(), "https://app.example.com/p?q=1");
        assert_eq!(o.raw_path, "/p");
        // The other protocol's header is not read.
        assert!(c.original(&headers, EdgeProtocol::Nginx).is_none());
    }

    #[test]
    fn dot_segments_are_found_in_every_disguise() {
        for p in [
            "/a/../b",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/..%2fb",
            "/a/..%5Cb",
            "/a\\..\\b",
            "/a//../b",
            "/./a",
            "/..",
        ] {
            assert!(has_dot_segment(p), "{p}");
        }
        for p in [
            "/a/b",
            "/a/.well-known/x",
            "/a/..b/c",
            "/a/b..",
            "/group%2Fproject",
            "/",
        ] {
            assert!(!has_dot_segment(p), "{p}");
        }
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
        assert!(c.original(&headers, EdgeProtocol::Forwarded).is_none());
    }
}
