//! Sessions: what a signed-in user carries, and where it is kept.
//!
//! [`Claims`] are the Auth.js v5 JWT claims (`name`, `email`, `picture`,
//! `sub`, `iat`, `exp`, `jti`) plus ours (`groups`, `provider`), and any
//! claim we do not know is kept when we re-issue. [`SessionStore`] is the
//! one entry point; today it has the stateless store ([`cookie`]), the
//! `database` strategy adds a server-side one beside it.

pub mod cookie;
pub mod database;
pub mod id_token;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::UnixTime;
use crate::store::StoreError;

/// Clock skew allowed when checking `exp` (Auth.js allows 15 s).
pub const CLOCK_SKEW: u64 = 15;

/// The claims of a session token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Group names (ours; Auth.js ignores it, so do Next.js apps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The provider id the user signed in with (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// Our user id, when users and accounts are stored (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Claims the config maps to headers (`headers.claims`), by claim path.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attrs: Map<String, Value>,
    /// Provider tokens, named as in Auth.js's refresh-token guide. Only
    /// when the provider keeps tokens (`store_tokens`); the cookie is
    /// encrypted, so they are never readable by the browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixTime>,
    /// When Portcullis refreshes the access token (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_at: Option<UnixTime>,
    #[serde(default)]
    pub iat: UnixTime,
    #[serde(default)]
    pub exp: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Claims we do not know, kept as they were (Auth.js keeps them too).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Claims {
    /// Valid at `now`, with the skew Auth.js allows.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.exp.saturating_add(CLOCK_SKEW) > now && (self.sub.is_some() || self.email.is_some())
    }

    /// The id forwarded as the user: `sub`, else the e-mail.
    pub fn user_id(&self) -> &str {
        self.sub.as_deref().or(self.email.as_deref()).unwrap_or("")
    }
}

/// A session found on a request.
#[derive(Debug, Clone)]
pub struct Session {
    pub claims: Claims,
    /// Re-issue the cookie (sliding expiry) on this response.
    pub needs_refresh: bool,
    /// The opaque id (`database` strategy); `None` for `jwt`.
    pub handle: Option<String>,
    /// How the request proved it: a session cookie, or a bearer token.
    pub via: Via,
}

/// What identified a request (route policies see it as a fact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Via {
    /// A browser session (the session cookie).
    #[default]
    Cookie,
    /// A Portcullis API token (`Authorization: Bearer <biscuit>`).
    ApiToken,
    /// An identity provider's JWT (`Authorization: Bearer <JWT>`).
    IdpBearer,
}

/// What a request carried: the session, if any, and how its cookie was
/// chunked (so a re-issue can clear what would go stale).
#[derive(Debug, Default)]
pub struct Loaded {
    pub session: Option<Session>,
    pub chunks: usize,
    /// A session cookie was present (valid or not).
    pub present: bool,
}

/// Where sessions live: the one entry point every handler uses.
pub enum SessionStore {
    /// `jwt`: everything in the sealed cookie.
    Jwt(cookie::CookieStore),
    /// `database`: an opaque id in the cookie, the session in Redis.
    Database(database::DatabaseStore),
}

impl SessionStore {
    /// The session on a request. `Err` only when the store is down: the
    /// caller fails closed.
    pub async fn load(&self, headers: &http::HeaderMap) -> Result<Loaded, StoreError> {
        match self {
            SessionStore::Jwt(s) => Ok(s.load(headers)),
            // Boxed: a store read is a ~6 KB future, and every request's
            // future would be that much larger (and copied) without it.
            SessionStore::Database(s) => Box::pin(s.load(headers)).await,
        }
    }

    /// Starts a session (sign-in); returns its `Set-Cookie` values.
    pub async fn create(
        &self,
        claims: &mut Claims,
        seen_chunks: usize,
        domain: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            SessionStore::Jwt(s) => Ok(s.issue(claims, seen_chunks, domain)),
            SessionStore::Database(s) => s.create(claims, seen_chunks, domain).await,
        }
    }

    /// The cookie for a session whose expiry slides (`needs_refresh`).
    pub fn slide(
        &self,
        session: &mut Session,
        seen_chunks: usize,
        domain: Option<&str>,
    ) -> Vec<String> {
        match self {
            SessionStore::Jwt(s) => s.issue(&mut session.claims, seen_chunks, domain),
            SessionStore::Database(s) => s.reissue(session, domain),
        }
    }

    /// Persists changed claims (refreshed tokens, `update()`); returns the
    /// cookies to send (a new JWE for `jwt`, none for `database`).
    pub async fn save(
        &self,
        session: &mut Session,
        seen_chunks: usize,
        domain: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            SessionStore::Jwt(s) => Ok(s.issue(&mut session.claims, seen_chunks, domain)),
            // Boxed, as in `load`.
            SessionStore::Database(s) => Box::pin(s.save(session)).await.map(|()| Vec::new()),
        }
    }

    /// Ends a session; returns the cookies that clear it.
    pub async fn destroy(
        &self,
        loaded: &Loaded,
        domain: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let clear = match self {
            SessionStore::Jwt(s) => s.clear(loaded.chunks, domain),
            SessionStore::Database(s) => {
                if let Some(session) = &loaded.session {
                    Box::pin(s.destroy(session)).await?; // as in `load`
                }
                s.clear(loaded.chunks, domain)
            }
        };
        Ok(clear)
    }

    /// The cookies that clear a dead session cookie.
    pub fn clear(&self, seen_chunks: usize, domain: Option<&str>) -> Vec<String> {
        match self {
            SessionStore::Jwt(s) => s.clear(seen_chunks, domain),
            SessionStore::Database(s) => s.clear(seen_chunks, domain),
        }
    }

    pub fn database(&self) -> Option<&database::DatabaseStore> {
        match self {
            SessionStore::Jwt(_) => None,
            SessionStore::Database(s) => Some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_claims_survive_a_round_trip() {
        let json = r#"{"name":"A","email":"a@x.io","sub":"1","iat":1,"exp":2,"jti":"j","role":"admin","nested":{"k":[1,2]}}"#;
        let c: Claims = serde_json::from_str(json).unwrap();
        assert_eq!(c.extra["role"], "admin");
        let back: Value = serde_json::to_value(&c).unwrap();
        assert_eq!(back["nested"]["k"][1], 2);
        assert_eq!(back["role"], "admin");
    }

    #[test]
    fn liveness_allows_fifteen_seconds_of_skew() {
        let c = Claims {
            sub: Some("1".into()),
            exp: 100,
            ..Claims::default()
        };
        assert!(c.is_live(114));
        assert!(!c.is_live(115));
        let anonymous = Claims {
            exp: 100,
            ..Claims::default()
        };
        assert!(!anonymous.is_live(0));
    }
}
