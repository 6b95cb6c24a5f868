//! Cookies: reading the `Cookie` header, writing `Set-Cookie`, the names
//! Auth.js uses, and chunking of values over the browser's size limit.
//!
//! Names follow Auth.js: `authjs.session-token`, with `__Secure-` when the
//! site is https, and `__Host-authjs.csrf-token`. A session value longer
//! than [`CHUNK_SIZE`] is written as `<name>.0`, `<name>.1`, ...

use http::HeaderMap;
use http::header::COOKIE;

use crate::clock::{UnixTime, http_date};
use crate::config::CookieConfig;

/// Auth.js: 4096 bytes a cookie, minus ~160 for its name and attributes.
pub const CHUNK_SIZE: usize = 3936;
/// At most this many chunks are read or written (~31 KiB).
pub const MAX_CHUNKS: usize = 8;

/// The cookie names one instance uses, computed once at start.
#[derive(Debug, Clone)]
pub struct CookieNames {
    pub session: String,
    pub csrf: String,
    /// Prefix of per-flow cookies: `<flow_prefix><flow id>`.
    pub flow_prefix: String,
    /// The ID token of a `jwt` session (sent only to the sign-out path).
    pub id_token: String,
    pub secure: bool,
}

impl CookieNames {
    pub fn new(cfg: &CookieConfig) -> Self {
        let p = &cfg.name_prefix;
        let (secure_prefix, host_prefix) = if cfg.secure {
            ("__Secure-", "__Host-")
        } else {
            ("", "")
        };
        CookieNames {
            session: format!("{secure_prefix}{p}.session-token"),
            csrf: format!("{host_prefix}{p}.csrf-token"),
            flow_prefix: format!("{secure_prefix}{p}.flow."),
            id_token: format!("{secure_prefix}{p}.id-token"),
            secure: cfg.secure,
        }
    }

    /// Whether a cookie name is one of ours (stripped before the upstream).
    pub fn is_ours(&self, name: &str) -> bool {
        name == self.csrf
            || name == self.id_token
            || name.starts_with(self.flow_prefix.as_str())
            || name
                .strip_prefix(self.session.as_str())
                .is_some_and(|rest| rest.is_empty() || chunk_index(rest).is_some())
    }
}

/// `.3` → `Some(3)`.
fn chunk_index(suffix: &str) -> Option<usize> {
    let n = suffix.strip_prefix('.')?;
    if n.is_empty() || n.len() > 2 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Every `name=value` pair of every `Cookie` header, in order.
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((n.trim(), v))
        })
}

/// The first cookie named `name`.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    pairs(headers).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// A possibly chunked value: `<name>` itself, or `<name>.0..n` joined in
/// index order. Returns the value and the chunk count seen (0 = unchunked).
/// A gap in the indices, a duplicate, or too many chunks gives `None`.
pub fn get_chunked(headers: &HeaderMap, name: &str) -> (Option<String>, usize) {
    let mut whole = None;
    let mut chunks: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
    let mut count = 0;
    let mut broken = false;
    for (n, v) in pairs(headers) {
        let Some(rest) = n.strip_prefix(name) else {
            continue;
        };
        if rest.is_empty() {
            whole.get_or_insert(v);
        } else if let Some(i) = chunk_index(rest) {
            match chunks.get_mut(i) {
                Some(slot @ None) => {
                    *slot = Some(v);
                    count = count.max(i + 1);
                }
                _ => broken = true,
            }
        }
    }
    if count > 0 {
        if broken || chunks[..count].iter().any(Option::is_none) {
            return (None, count);
        }
        let joined: String = chunks[..count].iter().flatten().copied().collect();
        return (Some(joined), count);
    }
    (whole.map(str::to_owned), 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    /// Only for cookies a cross-site POST must carry (`form_post`); needs `Secure`.
    None,
}

/// Attributes of a `Set-Cookie` we write.
pub struct SetCookie<'a> {
    pub name: &'a str,
    pub value: &'a str,
    /// `None`: a browser-session cookie.
    pub expires: Option<UnixTime>,
    pub max_age: Option<u64>,
    pub domain: Option<&'a str>,
    pub http_only: bool,
    pub secure: bool,
    pub path: &'a str,
    pub same_site: SameSite,
}

impl SetCookie<'_> {
    pub fn render(&self) -> String {
        let mut s = format!("{}={}; Path={}", self.name, self.value, self.path);
        if let Some(d) = self.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if let Some(e) = self.expires {
            s.push_str("; Expires=");
            s.push_str(&http_date(e));
        }
        if let Some(m) = self.max_age {
            s.push_str(&format!("; Max-Age={m}"));
        }
        if self.http_only {
            s.push_str("; HttpOnly");
        }
        if self.secure {
            s.push_str("; Secure");
        }
        s.push_str(match self.same_site {
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
        s
    }
}

/// A `Set-Cookie` that deletes `name`.
pub fn clear(name: &str, domain: Option<&str>, secure: bool) -> String {
    SetCookie {
        name,
        value: "",
        expires: Some(0),
        max_age: Some(0),
        domain,
        http_only: true,
        secure,
        path: "/",
        same_site: SameSite::Lax,
    }
    .render()
}

/// `Set-Cookie` values that delete `name` and its first `chunks` chunks.
pub fn clear_chunked(name: &str, chunks: usize, domain: Option<&str>, secure: bool) -> Vec<String> {
    std::iter::once(clear(name, domain, secure))
        .chain((0..chunks).map(|i| clear(&format!("{name}.{i}"), domain, secure)))
        .collect()
}

/// Splits `value` into the `Set-Cookie` values for `name`, chunked when it
/// is long, clearing the other form left from before (`seen_chunks` is what
/// the request carried: 0 means unchunked or none).
pub fn write_chunked(
    name: &str,
    value: &str,
    seen_chunks: usize,
    attrs: &dyn Fn(&str, &str) -> String,
    clear_one: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    if value.len() <= CHUNK_SIZE {
        out.push(attrs(name, value));
        for i in 0..seen_chunks {
            out.push(clear_one(&format!("{name}.{i}")));
        }
        return out;
    }
    let mut n = 0;
    for (i, part) in value.as_bytes().chunks(CHUNK_SIZE).enumerate() {
        // The value is base64url and dots: ASCII, so byte chunks are str.
        let part = std::str::from_utf8(part).unwrap_or("");
        out.push(attrs(&format!("{name}.{i}"), part));
        n = i + 1;
    }
    for i in n..seen_chunks {
        out.push(clear_one(&format!("{name}.{i}")));
    }
    if seen_chunks == 0 {
        out.push(clear_one(name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    #[test]
    fn reads_whole_and_chunked_values() {
        let h = headers("a=1; s=whole; x=2");
        assert_eq!(get_chunked(&h, "s"), (Some("whole".into()), 0));
        let h = headers("s.1=BB; s.0=AA; s.2=CC");
        assert_eq!(get_chunked(&h, "s"), (Some("AABBCC".into()), 3));
    }

    #[test]
    fn gaps_and_duplicates_in_chunks_are_no_value() {
        assert_eq!(get_chunked(&headers("s.0=AA; s.2=CC"), "s").0, None);
        assert_eq!(get_chunked(&headers("s.0=AA; s.0=BB"), "s").0, None);
        assert_eq!(get_chunked(&headers("s.99=AA"), "s").0, None);
    }

    #[test]
    fn long_values_are_chunked_and_stale_chunks_cleared() {
        let attrs = |n: &str, v: &str| format!("{n}={v}");
        let clear = |n: &str| format!("{n}=;clear");
        let long = "x".repeat(CHUNK_SIZE * 2 + 5);
        let out = write_chunked("s", &long, 0, &attrs, &clear);
        assert_eq!(out.len(), 4);
        assert!(out[2].starts_with("s.2=xxxxx"));
        assert_eq!(out[3], "s=;clear");
        let out = write_chunked("s", "short", 3, &attrs, &clear);
        assert_eq!(
            out,
            vec!["s=short", "s.0=;clear", "s.1=;clear", "s.2=;clear"]
        );
    }

    #[test]
    fn names_follow_auth_js_and_prefixes_apply_on_https() {
        let mut cfg = CookieConfig::default();
        let n = CookieNames::new(&cfg);
        assert_eq!(n.session, "authjs.session-token");
        assert_eq!(n.csrf, "authjs.csrf-token");
        cfg.secure = true;
        let n = CookieNames::new(&cfg);
        assert_eq!(n.session, "__Secure-authjs.session-token");
        assert_eq!(n.csrf, "__Host-authjs.csrf-token");
        assert!(n.is_ours("__Secure-authjs.session-token.1"));
        assert_eq!(n.id_token, "__Secure-authjs.id-token");
        assert!(n.is_ours("__Secure-authjs.id-token"));
        assert!(!n.is_ours("__Secure-authjs.session-tokenx"));
        assert!(!n.is_ours("app_session"));
    }
}
