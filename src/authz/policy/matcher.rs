//! What a route matches: a host (exact or `*.example.com`), a path (exact,
//! `/prefix/*`, or a glob) and methods, all compiled once at config load.
//!
//! Paths are compared in a canonical form ([`canonical_path`]) so that a
//! request cannot dodge a route by spelling its path differently from the
//! way the app will read it: `%61dmin`, `//admin` and `/admin%2Fx` all
//! match `/admin/*`.

use std::borrow::Cow;

use crate::config::PathPattern;

/// The host part of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `app.example.com` (compared case-insensitively, port ignored).
    Exact(String),
    /// `*.example.com`: any subdomain at any depth, not the apex. Holds
    /// `.example.com`.
    Subdomains(String),
}

impl HostMatch {
    /// `None` when `s` is not a host name or `*.` wildcard.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s),
        };
        let ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return None;
        }
        Some(if wild {
            HostMatch::Subdomains(format!(".{name}"))
        } else {
            HostMatch::Exact(name)
        })
    }

    /// `host` as the request named it (lower case, no port): see
    /// [`super::Target`]. A request with no host matches no host rule.
    pub fn matches(&self, host: Option<&str>) -> bool {
        let Some(h) = host else { return false };
        let h = h.trim_end_matches('.');
        match self {
            HostMatch::Exact(e) => h.eq_ignore_ascii_case(e),
            HostMatch::Subdomains(suffix) => {
                h.len() > suffix.len()
                    && h.as_bytes()[h.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }

    pub fn as_config(&self) -> String {
        match self {
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Subdomains(s) => format!("*{s}"),
        }
    }
}

/// The path part of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `/exact` or `/prefix/*`, as `access.public_paths` reads them.
    Simple(PathPattern),
    /// A glob: `*` is any run of characters but `/`, `**` any run at all,
    /// `?` one character but `/`. The whole path must match.
    Glob(String),
}

impl PathMatch {
    /// `None` when `s` does not start with `/`, or has more than 16 `*`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if !s.starts_with('/') || s.contains(['\\', '#']) || s.matches('*').count() > 16 {
            return None;
        }
        let simple_prefix = s
            .strip_suffix("/*")
            .is_some_and(|p| !p.contains(['*', '?']));
        if !s.contains(['*', '?']) {
            return Some(PathMatch::Simple(PathPattern::Exact(s.to_string())));
        }
        if simple_prefix {
            let p = s.trim_end_matches('*');
            let p = if p == "/" {
                "/"
            } else {
                p.trim_end_matches('/')
            };
            return Some(PathMatch::Simple(PathPattern::Prefix(p.to_string())));
        }
        Some(PathMatch::Glob(s.to_string()))
    }

    /// `path` must be canonical ([`canonical_path`]).
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Simple(p) => p.matches(path),
            PathMatch::Glob(g) => glob(g.as_bytes(), path.as_bytes()),
        }
    }

    pub fn as_config(&self) -> String {
        match self {
            PathMatch::Simple(PathPattern::Exact(e)) => e.clone(),
            PathMatch::Simple(PathPattern::Prefix(p)) => {
                format!("{}/*", p.trim_end_matches('/'))
            }
            PathMatch::Glob(g) => g.clone(),
        }
    }
}

/// Glob match without recursion: `**` backtracks over anything, `*` over
/// anything but `/`. Linear in practice; quadratic at worst (16 stars at
/// most, header-sized paths), never exponential.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // The last star seen: (pattern index after it, string index, deep).
    let mut star: Option<(usize, usize, bool)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            let deep = pat.get(p + 1) == Some(&b'*');
            p += if deep { 2 } else { 1 };
            star = Some((p, i, deep));
            continue;
        }
        if p < pat.len() && (pat[p] == s[i] || (pat[p] == b'?' && s[i] != b'/')) {
            p += 1;
            i += 1;
            continue;
        }
        match star {
            // The star takes one more character (a single star never a `/`).
            Some((sp, si, deep)) if deep || s[si] != b'/' => {
                star = Some((sp, si + 1, deep));
                p = sp;
                i = si + 1;
            }
            _ => return false,
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// The path as an app may read it, for matching and for the `path` fact:
/// percent-encoded unreserved characters decoded (RFC 3986 §6.2.2.2: the
/// same resource), `%2F`/`%5C` read as `/` (many apps decode them), and
/// runs of `/` merged (nginx's `merge_slashes` is on by default). Other
/// escapes stay as they are. Borrowed when nothing changes (the usual case).
pub fn canonical_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') && !path.contains("//") {
        return Cow::Borrowed(path);
    }
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let mut c = b[i];
        let mut step = 1;
        if c == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|x| hex(*x)),
                b.get(i + 2).and_then(|x| hex(*x)),
            )
        {
            let d = h * 16 + l;
            if d.is_ascii_alphanumeric() || matches!(d, b'-' | b'.' | b'_' | b'~') {
                c = d;
                step = 3;
            } else if d == b'/' || d == b'\\' {
                c = b'/';
                step = 3;
            }
        }
        if !(c == b'/' && out.last() == Some(&b'/')) {
            out.push(c);
        }
        i += step;
    }
    // Only ASCII was decoded, so the bytes are still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| path.to_string()))
}

fn hex(x: u8) -> Option<u8> {
    match x {
        b'0'..=b'9' => Some(x - b'0'),
        b'a'..=b'f' => Some(x - b'a' + 10),
        b'A'..=b'F' => Some(x - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_exactly_or_as_subdomains() {
        let exact = HostMatch::parse("App.Example.com.").unwrap();
        assert!(exact.matches(Some("app.example.com")));
        assert!(exact.matches(Some("APP.example.COM")));
        assert!(!exact.matches(Some("xapp.example.com")));
        assert!(!exact.matches(None));
        let wild = HostMatch::parse("*.example.com").unwrap();
        assert!(wild.matches(Some("a.example.com")));
        assert!(wild.matches(Some("a.b.example.com")));
        assert!(!wild.matches(Some("example.com")));
        assert!(!wild.matches(Some("evilexample.com")));
        assert!(!wild.matches(Some("example.com.evil.org")));
        for bad in ["", "*", "*.", "a..b", "a b", "a/b", "*.*.x"] {
            assert_eq!(HostMatch::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_match_exact_prefix_and_glob() {
        let p = |s| PathMatch::parse(s).unwrap();
        assert!(p("/admin").matches("/admin"));
        assert!(!p("/admin").matches("/admin/x"));
        assert!(p("/api/*").matches("/api"));
        assert!(p("/api/*").matches("/api/v1/x"));
        assert!(!p("/api/*").matches("/apix"));
        assert!(p("/*").matches("/anything/at/all"));
        let g = p("/users/*/settings");
        assert!(matches!(g, PathMatch::Glob(_)));
        assert!(g.matches("/users/42/settings"));
        assert!(!g.matches("/users/42/x/settings"));
        assert!(!g.matches("/users/42/settings/x"));
        let deep = p("/files/**.pdf");
        assert!(deep.matches("/files/a/b/c.pdf"));
        assert!(!deep.matches("/files/a/b/c.pdfx"));
        assert!(p("/v?/x").matches("/v1/x"));
        assert!(!p("/v?/x").matches("/v//x"));
        for bad in ["admin", "", "/a\\b", "/x#y"] {
            assert_eq!(PathMatch::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn glob_is_not_exponential() {
        let g = PathMatch::parse("/**a**a**a**a**a**a**a**b").unwrap();
        let path = format!("/{}", "a".repeat(4000));
        let t = std::time::Instant::now();
        assert!(!g.matches(&path));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn disguised_paths_are_canonical() {
        for (raw, want) in [
            ("/admin/x", "/admin/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/%41DMIN", "/ADMIN"),
            ("//admin///x", "/admin/x"),
            ("/admin%2Fx", "/admin/x"),
            ("/admin%2fx", "/admin/x"),
            ("/admin%5Cx", "/admin/x"),
            ("/a%20b", "/a%20b"),
            ("/a%zz", "/a%zz"),
            ("/a%", "/a%"),
            ("/caf%C3%A9", "/caf%C3%A9"),
        ] {
            assert_eq!(canonical_path(raw), want, "{raw}");
        }
        assert!(matches!(canonical_path("/plain/path"), Cow::Borrowed(_)));
    }
}
