//! The ID token of a `jwt` session, for RP-initiated logout's
//! `id_token_hint`, in a sealed cookie of its own.
//!
//! The session cookie stays small without the ~1 KB ID token; this one is
//! sealed the same way (Auth.js v5 JWE, key by HKDF from the secrets with
//! its own name as salt), `HttpOnly`, `SameSite=Lax`, `Secure` and
//! `__Secure-` on https, and its `Path` is the sign-out path, so browsers
//! send it only when signing out. It names the session it belongs to (its
//! `sub` and provider): sign-out uses it only for that session.

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::Claims;
use crate::clock::{Clock, UnixTime};
use crate::crypto::Secret;
use crate::crypto::jwe::JweKeys;
use crate::http::cookies::{self, CHUNK_SIZE, CookieNames, SameSite, SetCookie};

/// What the cookie holds.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// The ID token.
    #[serde(rename = "t")]
    token: String,
    /// The session's user id (`Claims::user_id`) and provider.
    #[serde(rename = "u")]
    user: String,
    #[serde(rename = "p")]
    provider: String,
    #[serde(rename = "e")]
    exp: UnixTime,
}

pub struct IdTokenCookie {
    keys: JweKeys,
    name: String,
    path: String,
    secure: bool,
    max_age: u64,
    clock: Clock,
}

impl IdTokenCookie {
    pub fn new(
        secrets: &[Secret],
        names: &CookieNames,
        base_path: &str,
        max_age: std::time::Duration,
        clock: Clock,
    ) -> Self {
        IdTokenCookie {
            keys: JweKeys::derive(secrets, &names.id_token),
            name: names.id_token.clone(),
            path: format!("{base_path}/signout"),
            secure: names.secure,
            max_age: max_age.as_secs(),
            clock,
        }
    }

    fn render(&self, value: &str, max_age: u64, domain: Option<&str>) -> String {
        SetCookie {
            name: &self.name,
            value,
            // A deletion also carries a past Expires (as `cookies::clear`).
            expires: (max_age == 0).then_some(0),
            max_age: Some(max_age),
            domain,
            http_only: true,
            secure: self.secure,
            path: &self.path,
            same_site: SameSite::Lax,
        }
        .render()
    }

    /// The `Set-Cookie` that keeps `id_token` for the session of `claims`
    /// (as long as the session's `max_age`); `None` when it would not fit
    /// in one cookie (sign-out then names the client instead).
    pub fn issue(&self, id_token: &str, claims: &Claims, domain: Option<&str>) -> Option<String> {
        let sealed = Sealed {
            token: id_token.to_string(),
            user: claims.user_id().to_string(),
            provider: claims.provider.clone().unwrap_or_default(),
            exp: self.clock.now() + self.max_age,
        };
        let value = self.keys.seal(&serde_json::to_vec(&sealed).ok()?);
        if value.len() > CHUNK_SIZE {
            tracing::debug!(
                bytes = value.len(),
                "the ID token is too large for its cookie: sign-out will name the client instead"
            );
            return None;
        }
        Some(self.render(&value, self.max_age, domain))
    }

    /// Whether the request carries the cookie (then sign-out clears it).
    pub fn present(&self, headers: &HeaderMap) -> bool {
        cookies::get(headers, &self.name).is_some()
    }

    /// The ID token kept for the session of `claims`, if the request
    /// carries one that opens, is live, and names that session's user and
    /// provider.
    pub fn read(&self, headers: &HeaderMap, claims: &Claims) -> Option<String> {
        let value = cookies::get(headers, &self.name)?;
        let plain = self.keys.open(value).ok()?;
        let sealed: Sealed = serde_json::from_slice(&plain).ok()?;
        let same_session =
            crate::crypto::ct_eq(sealed.user.as_bytes(), claims.user_id().as_bytes())
                && claims.provider.as_deref() == Some(sealed.provider.as_str());
        (same_session && sealed.exp > self.clock.now()).then_some(sealed.token)
    }

    /// The `Set-Cookie` that deletes it.
    pub fn clear(&self, domain: Option<&str>) -> String {
        self.render("", 0, domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CookieConfig;
    use http::HeaderValue;

    fn store(secure: bool, clock: Clock) -> IdTokenCookie {
        let names = CookieNames::new(&CookieConfig {
            secure,
            ..CookieConfig::default()
        });
        IdTokenCookie::new(
            &[Secret::new("id-token-secret-id-token-secret-0123".into())],
            &names,
            "/auth",
            std::time::Duration::from_secs(3600),
            clock,
        )
    }

    fn claims(sub: &str) -> Claims {
        Claims {
            sub: Some(sub.into()),
            provider: Some("corp".into()),
            ..Claims::default()
        }
    }

    fn request(set_cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(set_cookie.split(';').next().unwrap()).unwrap(),
        );
        h
    }

    #[test]
    fn it_is_scoped_to_the_sign_out_path_and_its_session() {
        let clock = Clock::fixed(1_000_000);
        let s = store(false, clock.clone());
        let set = s.issue("h.p.s", &claims("alice"), None).unwrap();
        assert!(set.starts_with("authjs.id-token="), "{set}");
        for attr in [
            "; Path=/auth/signout",
            "; HttpOnly",
            "; SameSite=Lax",
            "; Max-Age=3600",
        ] {
            assert!(set.contains(attr), "{attr} missing: {set}");
        }
        assert!(!set.contains("Secure"));
        let h = request(&set);
        assert_eq!(s.read(&h, &claims("alice")).as_deref(), Some("h.p.s"));
        assert_eq!(s.read(&h, &claims("bob")), None, "another user's");
        let other_provider = Claims {
            provider: Some("other".into()),
            ..claims("alice")
        };
        assert_eq!(s.read(&h, &other_provider), None);
        clock.advance(3600);
        assert_eq!(s.read(&h, &claims("alice")), None, "expired");
        let clear = s.clear(None);
        assert!(
            clear.starts_with("authjs.id-token=; Path=/auth/signout"),
            "{clear}"
        );
        assert!(clear.contains("Max-Age=0"), "{clear}");
    }

    #[test]
    fn https_gets_the_secure_prefix_and_a_tampered_cookie_is_nothing() {
        let s = store(true, Clock::fixed(1_000_000));
        let set = s
            .issue("h.p.s", &claims("alice"), Some("example.com"))
            .unwrap();
        assert!(set.starts_with("__Secure-authjs.id-token="), "{set}");
        assert!(set.contains("; Secure") && set.contains("; Domain=example.com"));
        let mut forged = set.clone().into_bytes();
        let i = forged.iter().position(|&b| b == b'=').unwrap() + 30;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(s.read(&request(&forged), &claims("alice")), None);
        assert!(s.issue(&"x".repeat(4000), &claims("alice"), None).is_none());
    }
}
