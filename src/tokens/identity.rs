//! The identity token forwarded with every allowed request: a biscuit
//! signed by the root key, with the user's facts and a short expiry, so
//! an upstream can verify who is asking offline and narrow it further.
//!
//! Minting costs an Ed25519 signature (~50 µs), so a token is minted once
//! per session and reused until near its expiry: a bounded cache keyed
//! by a hash of everything the token says (the facts and the session).

use biscuit_auth::Biscuit;
use biscuit_auth::builder::{date, fact, string};
use http::HeaderValue;

use super::keys::KeyRing;
use crate::clock::UnixTime;
use crate::session::{Session, Via};

/// Slots of the cache (one live session each, at most).
const CAPACITY: usize = 10_000;

struct Entry {
    value: HeaderValue,
    /// Reused until then (a fifth of the lifetime before its expiry).
    renew_at: UnixTime,
}

/// Minted identity tokens, by the hash of their content.
pub struct IdentityCache {
    entries: crate::slots::Slots<Entry>,
}

impl Default for IdentityCache {
    fn default() -> Self {
        IdentityCache {
            entries: crate::slots::Slots::new(CAPACITY),
        }
    }
}

pub fn via_name(via: Via) -> &'static str {
    match via {
        Via::Cookie => "cookie",
        Via::ApiToken => "api_token",
        Via::IdpBearer => "idp_bearer",
    }
}

/// The session, as the token names it: a hash, never the id itself (the
/// id is a bearer credential for `database` sessions).
fn session_hash(s: &Session) -> Option<String> {
    let id = s.handle.as_deref().or(s.claims.jti.as_deref())?;
    Some(crate::crypto::sha256_hex(id.as_bytes())[..32].to_string())
}

/// Everything the token says, hashed: the cache key.
fn content_key(s: &Session) -> [u8; 32] {
    let c = &s.claims;
    let parts = [
        Some(via_name(s.via)),
        Some(c.user_id()),
        c.email.as_deref(),
        c.name.as_deref(),
        c.provider.as_deref(),
        s.handle.as_deref().or(c.jti.as_deref()),
    ]
    .map(|p| p.unwrap_or("\u{0}"));
    crate::crypto::digest_parts(&parts, &c.groups)
}

/// Mints the identity token of a session, valid until `exp`.
pub fn mint(
    ring: &KeyRing,
    s: &Session,
    exp: UnixTime,
) -> Result<Biscuit, biscuit_auth::error::Token> {
    let c = &s.claims;
    let (key, id) = ring.signing();
    let mut b = Biscuit::builder()
        .root_key_id(id)
        .fact(fact("kind", &[string("identity")]))?
        .fact(fact("user", &[string(c.user_id())]))?
        .fact(fact("via", &[string(via_name(s.via))]))?;
    if let Some(e) = &c.email {
        b = b.fact(fact("email", &[string(e)]))?;
    }
    if let Some(n) = &c.name {
        b = b.fact(fact("name", &[string(n)]))?;
    }
    if let Some(p) = &c.provider {
        b = b.fact(fact("provider", &[string(p)]))?;
    }
    if let Some(h) = session_hash(s) {
        b = b.fact(fact("session", &[string(&h)]))?;
    }
    for g in &c.groups {
        b = b.fact(fact("group", &[string(g)]))?;
    }
    let exp = date(&(std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp)));
    b = b.code_with_params(
        "check if time($t), $t <= {exp};",
        [("exp".to_string(), exp)].into_iter().collect(),
        Default::default(),
    )?;
    b.build(key)
}

impl IdentityCache {
    /// The session's token as a header value: the cached one while it is
    /// fresh, else a new one. `None` if minting failed (logged).
    pub fn get(&self, ring: &KeyRing, s: &Session, now: UnixTime, ttl: u64) -> Option<HeaderValue> {
        let key = content_key(s);
        if let Some(e) = self.entries.get(&key)
            && now < e.1.renew_at
        {
            return Some(e.1.value.clone());
        }
        // Never past the session's own end (a bearer JWT's `exp`).
        let session_end = s.claims.exp;
        let exp = match now.saturating_add(ttl) {
            e if session_end > now => e.min(session_end),
            e => e,
        };
        let value = match mint(ring, s, exp).and_then(|t| t.to_base64()) {
            Ok(t) => HeaderValue::from_str(&t).ok()?,
            Err(e) => {
                tracing::error!(error = %e, "cannot mint the identity token");
                return None;
            }
        };
        let entry = Entry {
            value: value.clone(),
            renew_at: if exp < now.saturating_add(ttl) {
                exp
            } else {
                exp.saturating_sub(ttl / 5)
            },
        };
        self.entries.put(key, entry);
        Some(value)
    }
}
