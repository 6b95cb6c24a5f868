//! The `jwt` strategy: the whole session in an Auth.js v5 JWE cookie.
//!
//! Keys are derived once at start (HKDF per secret, salt = cookie name);
//! loading a session is base64 + one HMAC + one AES-CBC decryption + one
//! JSON parse, no network and no lock. A cookie that fails any check is
//! no session: never an error page, never a pass. The claims of cookies
//! that opened are remembered by their exact text in a small lock-free
//! table, so a browser's next requests with the same cookie skip the
//! decryption (never the expiry check).

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use http::HeaderMap;

use super::{Claims, Loaded, Session};
use crate::clock::Clock;
use crate::config::SessionConfig;
use crate::crypto::jwe::JweKeys;
use crate::crypto::{Secret, random_uuid};
use crate::http::cookies::{self, CookieNames, SameSite, SetCookie};

/// Seals and opens session cookies.
pub struct CookieStore {
    keys: JweKeys,
    name: String,
    secure: bool,
    max_age: u64,
    update_age: u64,
    clock: Clock,
    /// Opened cookies: (the cookie's exact text, its claims), direct-mapped
    /// by the cookie's authentication tag.
    opened: Box<[ArcSwapOption<(String, Claims)>]>,
}

/// Slots in the table of opened cookies.
const OPENED: usize = 1024;

impl CookieStore {
    pub fn new(secrets: &[Secret], names: &CookieNames, cfg: &SessionConfig, clock: Clock) -> Self {
        CookieStore {
            keys: JweKeys::derive(secrets, &names.session),
            name: names.session.clone(),
            secure: names.secure,
            max_age: cfg.max_age.as_secs(),
            update_age: cfg.update_age.as_secs(),
            clock,
            opened: (0..OPENED).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// The slot of a token: the JWE's last part is its authentication tag,
    /// random-looking and unique per cookie.
    fn slot(&self, token: &str) -> &ArcSwapOption<(String, Claims)> {
        let n = token.bytes().rev().take(8).fold(0usize, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(b as usize)
        });
        &self.opened[n % OPENED]
    }

    pub fn cookie_name(&self) -> &str {
        &self.name
    }

    /// The session on a request, if its cookie opens and is live.
    pub fn load(&self, headers: &HeaderMap) -> Loaded {
        let (value, chunks) = cookies::get_chunked(headers, &self.name);
        let present = value.is_some() || chunks > 0;
        let session = value.and_then(|v| self.open(&v)).map(|claims| {
            let now = self.clock.now();
            Session {
                needs_refresh: now.saturating_sub(claims.iat) >= self.update_age,
                claims,
                handle: None,
                via: crate::session::Via::Cookie,
            }
        });
        Loaded {
            session,
            chunks,
            present,
        }
    }

    /// Opens a token and checks it is live; `None` for anything else.
    pub fn open(&self, token: &str) -> Option<Claims> {
        let now = self.clock.now();
        let slot = self.slot(token);
        // Constant time: the slot may hold another user's cookie.
        if let Some(hit) = slot.load().as_ref()
            && crate::crypto::ct_eq(hit.0.as_bytes(), token.as_bytes())
        {
            return hit.1.is_live(now).then(|| hit.1.clone());
        }
        let plain = self.keys.open(token).ok()?;
        let claims: Claims = serde_json::from_slice(&plain).ok()?;
        if !claims.is_live(now) {
            return None;
        }
        slot.store(Some(Arc::new((token.to_string(), claims.clone()))));
        Some(claims)
    }

    /// Seals `claims` with fresh `iat`, `exp` and `jti`, as Auth.js's
    /// `encode` does; every other claim is kept.
    pub fn seal(&self, claims: &mut Claims) -> String {
        let now = self.clock.now();
        claims.iat = now;
        claims.exp = now + self.max_age;
        claims.jti = Some(random_uuid());
        let json = serde_json::to_vec(claims).unwrap_or_default();
        self.keys.seal(&json)
    }

    /// `Set-Cookie` values that store `claims` (chunked when large).
    pub fn issue(
        &self,
        claims: &mut Claims,
        seen_chunks: usize,
        domain: Option<&str>,
    ) -> Vec<String> {
        let token = self.seal(claims);
        let exp = claims.exp;
        let attrs = |n: &str, v: &str| {
            SetCookie {
                name: n,
                value: v,
                expires: Some(exp),
                max_age: None,
                domain,
                http_only: true,
                secure: self.secure,
                path: "/",
                same_site: SameSite::Lax,
            }
            .render()
        };
        let clear = |n: &str| cookies::clear(n, domain, self.secure);
        cookies::write_chunked(&self.name, &token, seen_chunks, &attrs, &clear)
    }

    /// `Set-Cookie` values that delete the session in every form.
    pub fn clear(&self, seen_chunks: usize, domain: Option<&str>) -> Vec<String> {
        // At least `.0` too: a chunked cookie the request did not show.
        cookies::clear_chunked(&self.name, seen_chunks.max(1), domain, self.secure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CookieConfig;
    use http::HeaderValue;
    use std::time::Duration;

    fn store(clock: Clock) -> CookieStore {
        let names = CookieNames::new(&CookieConfig::default());
        let cfg = SessionConfig {
            strategy: crate::config::SessionStrategy::Jwt,
            max_age: Duration::from_secs(3600),
            update_age: Duration::from_secs(600),
        };
        CookieStore::new(
            &[Secret::new("s".repeat(16) + "-a-long-enough-secret")],
            &names,
            &cfg,
            clock,
        )
    }

    fn request_with(set_cookies: &[String]) -> HeaderMap {
        let pairs: Vec<&str> = set_cookies
            .iter()
            .map(|c| c.split(';').next().unwrap())
            .collect();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&pairs.join("; ")).unwrap(),
        );
        h
    }

    #[test]
    fn issued_session_loads_then_expires() {
        let clock = Clock::fixed(1_000_000);
        let s = store(clock.clone());
        let mut c = Claims {
            email: Some("a@x.io".into()),
            sub: Some("a".into()),
            ..Claims::default()
        };
        let set = s.issue(&mut c, 0, None);
        let h = request_with(&set);
        let loaded = s.load(&h).session.unwrap();
        assert_eq!(loaded.claims.email.as_deref(), Some("a@x.io"));
        assert!(!loaded.needs_refresh);
        clock.advance(601);
        assert!(s.load(&h).session.unwrap().needs_refresh);
        clock.advance(3600);
        assert!(s.load(&h).session.is_none());
    }

    #[test]
    fn a_remembered_cookie_still_expires_and_a_tampered_one_never_hits() {
        let clock = Clock::fixed(1_000_000);
        let s = store(clock.clone());
        let mut c = Claims {
            sub: Some("a".into()),
            ..Claims::default()
        };
        let token = s.seal(&mut c);
        assert!(s.open(&token).is_some());
        assert!(s.opened.iter().any(|slot| slot.load().is_some()));
        // Same slot (same tag), other text: opened afresh, and refused.
        let mut forged = token.clone().into_bytes();
        forged[10] ^= 1;
        assert!(s.open(std::str::from_utf8(&forged).unwrap()).is_none());
        assert!(s.open(&token).is_some());
        clock.advance(3600 + crate::session::CLOCK_SKEW);
        assert!(s.open(&token).is_none());
    }

    #[test]
    fn large_sessions_are_chunked_and_reordered_chunks_fail() {
        let s = store(Clock::fixed(1_000_000));
        let mut c = Claims {
            sub: Some("a".into()),
            groups: (0..400).map(|i| format!("group-{i}")).collect(),
            ..Claims::default()
        };
        let set = s.issue(&mut c, 0, None);
        assert!(set.len() >= 3, "expected chunks, got {}", set.len());
        let chunks: Vec<String> = set
            .iter()
            .filter(|c| c.contains(".session-token."))
            .cloned()
            .collect();
        let h = request_with(&chunks);
        assert_eq!(s.load(&h).session.unwrap().claims.groups.len(), 400);
        // swap the values of chunk 0 and 1
        let v0 = chunks[0]
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string();
        let v1 = chunks[1]
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string();
        let mut swapped = chunks.clone();
        swapped[0] = format!("authjs.session-token.0={v1}");
        swapped[1] = format!("authjs.session-token.1={v0}");
        assert!(s.load(&request_with(&swapped)).session.is_none());
        // drop the last chunk
        assert!(
            s.load(&request_with(&chunks[..chunks.len() - 1]))
                .session
                .is_none()
        );
    }
}
