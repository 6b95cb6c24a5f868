//! Identity headers to the upstream: header names computed once at start;
//! on every request every identity header is stripped, then ours set, so
//! a client can never forge one.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{AccessTokenHeader, HeaderConfig};
use crate::session::Claims;

pub struct IdentityHeaders {
    cfg: HeaderConfig,
    /// Everything stripped from incoming requests.
    strip: Vec<HeaderName>,
}

/// Header-safe bytes: control characters dropped, everything else kept
/// (UTF-8 passes as obs-text, as oauth2-proxy sends it).
fn value(s: &str) -> Option<HeaderValue> {
    if s.bytes().any(|b| b.is_ascii_control()) {
        let clean: String = s.chars().filter(|c| !c.is_control()).collect();
        return HeaderValue::from_bytes(clean.as_bytes()).ok();
    }
    HeaderValue::from_bytes(s.as_bytes()).ok()
}

impl IdentityHeaders {
    pub fn new(cfg: &HeaderConfig) -> Self {
        let mut strip: Vec<HeaderName> = cfg.identity_names().cloned().collect();
        // The default names (even when renamed) and headers other
        // deployments trust for identity: never from a client.
        for extra in [
            "x-auth-request-user",
            "x-auth-request-email",
            "x-auth-request-preferred-username",
            "x-auth-request-groups",
            "x-auth-request-name",
            "x-forwarded-user",
            "x-forwarded-email",
            "x-auth-request-access-token",
            "x-auth-request-token",
            "x-auth-request-jwt",
            "x-forwarded-preferred-username",
            "x-forwarded-groups",
            "x-forwarded-access-token",
            "remote-user",
            "remote-email",
            "remote-groups",
            "remote-name",
        ] {
            let n = HeaderName::from_static(extra);
            if !strip.contains(&n) {
                strip.push(n);
            }
        }
        IdentityHeaders {
            cfg: cfg.clone(),
            strip,
        }
    }

    /// Also strips `name` from client requests (a header set elsewhere,
    /// like the forwarded identity token's when renamed).
    pub fn also_strip(&mut self, name: HeaderName) {
        if !self.strip.contains(&name) {
            self.strip.push(name);
        }
    }

    /// Removes every identity header, whatever its case or count, and
    /// its underscore spellings (`X_Auth_Request_User`), which servers
    /// that fold `_` into `-` (CGI, some frameworks) would read as ours.
    pub fn strip(&self, headers: &mut HeaderMap) {
        // The request's few names are checked against ours, rather than
        // each of ours looked up in the request (a hash for every name we
        // know, on every request). Allocates only when there is a spoof.
        let spoofs: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                self.strip.contains(k)
                    || (k.as_str().contains('_') && {
                        let folded = k.as_str().replace('_', "-");
                        self.strip.iter().any(|n| n.as_str() == folded)
                    })
            })
            .cloned()
            .collect();
        for n in spoofs {
            headers.remove(n);
        }
    }

    /// Sets the identity of `claims` (after [`Self::strip`]).
    pub fn set(&self, headers: &mut HeaderMap, claims: &Claims) {
        let c = &self.cfg;
        let user = claims.user_id();
        if let Some(v) = value(user) {
            headers.insert(c.user.clone(), v.clone());
            headers.insert(c.forwarded_user.clone(), v);
        }
        if let Some(v) = claims.email.as_deref().and_then(value) {
            headers.insert(c.email.clone(), v.clone());
            headers.insert(c.forwarded_email.clone(), v);
        }
        if let Some(v) = claims.preferred_username.as_deref().and_then(value) {
            headers.insert(c.preferred_username.clone(), v);
        }
        if let Some(v) = claims.name.as_deref().and_then(value) {
            headers.insert(c.name.clone(), v);
        }
        if !claims.groups.is_empty()
            && let Some(v) = value(&claims.groups.join(","))
        {
            headers.insert(c.groups.clone(), v);
        }
        for (name, path) in &c.claims {
            let text = match claims.attrs.get(path) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(a)) => Some(
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    Some(v.to_string())
                }
                _ => None,
            };
            if let Some(v) = text.as_deref().and_then(value) {
                headers.insert(name.clone(), v);
            }
        }
        if let Some(token) = claims.access_token.as_deref() {
            match c.access_token {
                AccessTokenHeader::None => {}
                AccessTokenHeader::Authorization => {
                    if let Some(v) = value(&format!("Bearer {token}")) {
                        headers.insert(http::header::AUTHORIZATION, v);
                    }
                }
                AccessTokenHeader::Header => {
                    if let Some(v) = value(token) {
                        headers.insert(HeaderName::from_static("x-auth-request-access-token"), v);
                    }
                }
            }
        }
    }
}
