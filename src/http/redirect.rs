//! Safe redirects: the only way a value reaches a `Location` header.
//!
//! A target is accepted when it is a plain path on this site (`/app?x=1`),
//! or an absolute http(s) URL whose host is the public host (same port) or
//! falls under a configured cookie or redirect domain. Everything else
//! (other hosts, userinfo, backslashes, control characters, encoded
//! slashes at the start, `javascript:`) is refused before parsing, and what
//! is accepted is re-serialised by a WHATWG URL parser, so the browser
//! reads exactly what we checked.

use url::{Host, Url};

/// A redirect target that passed [`RedirectPolicy::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeRedirect(String);

impl SafeRedirect {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An endpoint of a configured identity provider (authorization or
    /// end-session), taken from its discovery document: trusted by
    /// configuration, never built from request input other than the
    /// parameters we append ourselves.
    pub(crate) fn to_identity_provider(url: &Url) -> Self {
        SafeRedirect(url.to_string())
    }
}

/// Which ports an allowed domain may be named with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// No explicit port (the scheme's default), as oauth2-proxy does.
    Default,
    Any,
    Only(u16),
}

/// Where redirects may go, built once from the config.
#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    public: Url,
    /// Lower-case domains; a host equal to one or under it is allowed.
    domains: Vec<(String, Ports)>,
}

impl RedirectPolicy {
    /// `domains` are `example.com`, `example.com:8443` or `example.com:*`
    /// (already normalised by the config).
    pub fn new(public: Url, domains: Vec<String>) -> Self {
        let domains = domains
            .into_iter()
            .map(|d| match d.split_once(':') {
                Some((host, "*")) => (host.to_string(), Ports::Any),
                Some((host, port)) => (
                    host.to_string(),
                    port.parse().map(Ports::Only).unwrap_or(Ports::Default),
                ),
                None => (d, Ports::Default),
            })
            .collect();
        RedirectPolicy { public, domains }
    }

    /// The public origin's root: the fallback for a refused target.
    pub fn home(&self) -> SafeRedirect {
        SafeRedirect(self.public.as_str().to_string())
    }

    /// `target` if it is safe, else `None`.
    pub fn check(&self, target: &str) -> Option<SafeRedirect> {
        if target.is_empty() || target.len() > 4096 {
            return None;
        }
        // WHATWG parsers drop tabs and newlines and read `\` as `/`: refuse
        // anything such a parser would rewrite.
        if target
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\')
        {
            return None;
        }
        if target.starts_with('/') {
            return self.check_path(target);
        }
        let url = Url::parse(target).ok()?;
        self.allows_url(&url).then(|| SafeRedirect(url.to_string()))
    }

    /// A target or the public home; for `callbackUrl` values.
    pub fn check_or_home(&self, target: Option<&str>) -> SafeRedirect {
        target
            .and_then(|t| self.check(t))
            .unwrap_or_else(|| self.home())
    }

    fn check_path(&self, target: &str) -> Option<SafeRedirect> {
        // `//host` and `/\host` are network paths; so are their encodings
        // once a server or browser decodes them.
        let decoded: String =
            url::form_urlencoded::parse(format!("x={}", target.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
        for t in [target, decoded.as_str()] {
            let b = t.as_bytes();
            if b.len() > 1 && (b[1] == b'/' || b[1] == b'\\') {
                return None;
            }
            if t.chars().any(|c| c.is_control() || c == '\\') {
                return None;
            }
        }
        let base = Url::parse("http://relative.invalid/").ok()?;
        let joined = base.join(target).ok()?;
        if joined.host_str() != Some("relative.invalid")
            || joined.port().is_some()
            || !joined.username().is_empty()
        {
            return None;
        }
        let mut out = joined.path().to_string();
        if let Some(q) = joined.query() {
            out.push('?');
            out.push_str(q);
        }
        if let Some(f) = joined.fragment() {
            out.push('#');
            out.push_str(f);
        }
        Some(SafeRedirect(out))
    }

    /// An absolute URL's origin is the public one or under an allowed domain.
    pub fn allows_url(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        match url.host() {
            Some(Host::Domain(d)) => {
                let same = Some(d) == self.public.host_str()
                    && url.port_or_known_default() == self.public.port_or_known_default();
                same || self.domain_allowed(d, url.port())
            }
            Some(h @ (Host::Ipv4(_) | Host::Ipv6(_))) => {
                self.public.host() == Some(h)
                    && url.port_or_known_default() == self.public.port_or_known_default()
            }
            None => false,
        }
    }

    /// A host equal to or under a configured domain, on a port it allows.
    pub fn domain_allowed(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_end_matches('.');
        self.domains.iter().any(|(d, ports)| {
            let port_ok = match ports {
                Ports::Any => true,
                Ports::Default => port.is_none(),
                Ports::Only(p) => port == Some(*p),
            };
            port_ok
                && host.len() >= d.len()
                && host[host.len() - d.len()..].eq_ignore_ascii_case(d)
                && (host.len() == d.len() || host.as_bytes()[host.len() - d.len() - 1] == b'.')
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        RedirectPolicy::new(
            Url::parse("https://auth.example.com").unwrap(),
            vec![
                "example.com".into(),
                "whitelisteddomain.tld".into(),
                "dev.test:*".into(),
                "ops.test:8443".into(),
            ],
        )
    }

    #[test]
    fn accepts_paths_same_origin_and_allowed_domains() {
        let p = policy();
        assert_eq!(p.check("/app?x=1#top").unwrap().as_str(), "/app?x=1#top");
        assert_eq!(p.check("/").unwrap().as_str(), "/");
        assert_eq!(
            p.check("https://auth.example.com/x").unwrap().as_str(),
            "https://auth.example.com/x"
        );
        assert_eq!(p.check("https://app.example.com/a b").map(|s| s.0), None);
        assert!(p.check("https://app.example.com/a%20b").is_some());
        assert!(p.check("http://deep.app.example.com/").is_some());
        assert!(p.check("http://deep.app.example.com:8443/").is_none());
        assert!(p.check("http://a.dev.test:1234/").is_some());
        assert!(p.check("https://ops.test:8443/").is_some());
        assert!(p.check("https://ops.test:8444/").is_none());
    }

    #[test]
    fn refuses_the_classic_tricks() {
        let p = policy();
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https:evil.com",
            "http://evil.com",
            "https://example.com.evil.com/",
            "https://evilexample.com/",
            "https://app.example.com@evil.com/",
            "https://evil.com#@app.example.com",
            "https://user:pw@app.example.com/",
            "javascript:alert(1)",
            "data:text/html,x",
            "/%2f%2fevil.com",
            "/%5cevil.com",
            "/%09/evil.com",
            "\t//evil.com",
            "https://auth.example.com:444/",
            "ftp://app.example.com/",
            "https://ａｐｐ.evil.com/",
            "",
        ] {
            assert_eq!(p.check(bad), None, "{bad:?} was accepted");
        }
    }

    #[test]
    fn full_width_dots_normalise_before_the_domain_check() {
        let p = policy();
        // U+3002 is an ideographic full stop: IDNA maps it to '.'
        assert_eq!(
            p.check("https://www.whitelisteddomain.tld\u{3002}evil.com/"),
            None
        );
        assert!(p.check("https://www.whitelisteddomain.tld/ok").is_some());
    }
}
