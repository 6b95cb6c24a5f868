//! IdP bearer tokens: `Authorization: Bearer <JWT>` issued by an `oidc`
//! provider that sets `accept_bearer_tokens` (oauth2-proxy's
//! `skip_jwt_bearer_tokens`), for machine clients that already hold an ID
//! token or a JWT access token.
//!
//! The token picks its provider by `iss` (read before verification only
//! to choose which keys to check it with), then is verified by that
//! provider: its JWKS (refetched once on an unknown `kid`), the
//! algorithm allow-list (never `none` nor a MAC), issuer, audience
//! (`client_id` or `bearer_audiences`), expiry with the usual skew. Its
//! claims become a session through the provider's claim map, static
//! groups and sign-in rules, exactly as a sign-in would.
//!
//! A JWT bearer that fails is a 401: the request never falls back to a
//! session cookie. When no provider accepts bearer tokens the header is
//! not ours (it may be the app's own) and is ignored.

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::http::Error;
use crate::providers::oidc::{OidcError, OidcProvider};
use crate::session::{Claims, Session, Via};
use crate::state::App;

/// Longest bearer JWT we look at (the header size limit bounds it too).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the `Authorization` header holds, for bearer-token purposes.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No JWT bearer, or no provider accepts them: not ours to check.
    None,
    /// One `Bearer` JWT (compact JWS shape: two dots).
    Jwt(&'a str),
    /// Several `Authorization` headers with a JWT bearer among them: which
    /// one the upstream reads is unknowable, so none is honoured.
    Ambiguous,
}

/// The JWT bearer of a request, when some provider accepts them.
pub fn presented<'a>(app: &App, headers: &'a HeaderMap) -> Presented<'a> {
    if !app.oidc.values().any(|p| p.cfg.accept_bearer_tokens) {
        return Presented::None;
    }
    parse(headers)
}

fn parse(headers: &HeaderMap) -> Presented<'_> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(first) = all.next() else {
        return Presented::None;
    };
    let more = all.next().is_some();
    if more {
        return if headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .any(|v| jwt(v).is_some())
        {
            Presented::Ambiguous
        } else {
            Presented::None
        };
    }
    match jwt(first) {
        Some(t) => Presented::Jwt(t),
        None => Presented::None,
    }
}

/// The token of a `Bearer` value shaped like a JWT.
fn jwt(v: &http::HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let (scheme, token) = s.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && looks_like_jwt(token)).then_some(token)
}

/// Compact JWS shape: three base64url parts (RFC 7515 §7.1); a JWE has
/// five and is refused by the verifier, so it counts as a JWT here too.
/// A compact JWS or JWE (an IdP's token), not a biscuit.
pub(crate) fn looks_like_jwt(t: &str) -> bool {
    let dots = t.bytes().filter(|b| *b == b'.').count();
    (dots == 2 || dots == 4)
        && t.len() <= MAX_TOKEN_BYTES
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The `iss` a token claims, unverified: only to pick the provider whose
/// keys must verify it.
fn claimed_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let v: Value = serde_json::from_slice(&crate::crypto::b64_decode(payload)?).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

/// Verifies a bearer JWT and turns it into a session. `Err` is a 401
/// (`Unauthenticated`), a 403 (the user may not sign in), or a 502 when
/// the provider cannot be reached for its keys: never a pass.
pub async fn identify(app: &App, token: &str) -> Result<Session, Error> {
    let iss = claimed_issuer(token);
    let Some((id, p)) = app
        .oidc
        .iter()
        .find(|(_, p)| p.cfg.accept_bearer_tokens && iss.as_deref() == Some(&p.cfg.issuer))
    else {
        tracing::info!(
            reason = "no provider accepts bearer tokens from this issuer",
            "bearer token refused"
        );
        return Err(Error::Unauthenticated);
    };
    let claims = match p.verify_bearer_token(token).await {
        Ok(c) => c,
        Err(OidcError::Unavailable(why)) => return Err(Error::IdentityProvider(why)),
        Err(e) => {
            // The reason quotes fields of an unverified token: bounded.
            let reason: String = e.to_string().chars().take(160).collect();
            tracing::info!(provider = %id, reason, "bearer token refused");
            return Err(Error::Unauthenticated);
        }
    };
    let mut claims = session_claims(app, p, id, claims, token)?;
    app.config.sign_in.enrich(&mut claims);
    if let Err(rule) = app.config.sign_in.evaluate(&claims) {
        tracing::info!(provider = %id, user = %claims.user_id(), %rule, "bearer token refused by the sign-in policy");
        return Err(Error::Forbidden);
    }
    Ok(Session {
        claims,
        needs_refresh: false,
        handle: None,
        via: Via::IdpBearer,
    })
}

/// The token's claims through the provider's claim map, like a sign-in
/// (without userinfo: a machine client's token is all there is).
fn session_claims(
    app: &App,
    p: &OidcProvider,
    id: &str,
    token_claims: Map<String, Value>,
    token: &str,
) -> Result<Claims, Error> {
    let (iat, exp) = (
        token_claims.get("iat").and_then(Value::as_u64),
        token_claims.get("exp").and_then(Value::as_u64),
    );
    let profile = p.profile(token_claims, Map::new()).map_err(|e| {
        tracing::info!(provider = %id, reason = %e, "bearer token refused");
        match e {
            OidcError::UnverifiedEmail | OidcError::Required(_) => Error::Forbidden,
            _ => Error::Unauthenticated,
        }
    })?;
    Ok(Claims {
        iat: iat.unwrap_or_else(|| app.clock.now()),
        exp: exp.unwrap_or(0),
        // Names this token (for the assertion's session id), not its text.
        jti: Some(crate::crypto::sha256_hex(token.as_bytes())[..32].to_string()),
        ..crate::authn::oauth::profile_claims(app, id, profile)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_a_bearer_with_a_jwt_shape_is_ours() {
        assert_eq!(parse(&headers(&[])), Presented::None);
        assert_eq!(parse(&headers(&["Bearer a.b.c"])), Presented::Jwt("a.b.c"));
        assert_eq!(
            parse(&headers(&["bearer  a.b.c "])),
            Presented::Jwt("a.b.c")
        );
        assert_eq!(
            parse(&headers(&["Bearer a.b.c.d.e"])),
            Presented::Jwt("a.b.c.d.e")
        );
        // A biscuit, an opaque token, basic auth: somebody else's.
        assert_eq!(
            parse(&headers(&["Bearer En0KEwoEMTIzNBgD"])),
            Presented::None
        );
        assert_eq!(parse(&headers(&["Bearer a.b"])), Presented::None);
        assert_eq!(parse(&headers(&["Basic YTpi"])), Presented::None);
        assert_eq!(parse(&headers(&["Bearer a.b.c<x>"])), Presented::None);
        let huge = format!("Bearer a.b.{}", "c".repeat(MAX_TOKEN_BYTES));
        assert_eq!(parse(&headers(&[&huge])), Presented::None);
    }

    #[test]
    fn a_second_authorization_header_makes_a_jwt_bearer_ambiguous() {
        assert_eq!(
            parse(&headers(&["Bearer a.b.c", "Basic YTpi"])),
            Presented::Ambiguous
        );
        assert_eq!(
            parse(&headers(&["Basic YTpi", "Bearer a.b.c"])),
            Presented::Ambiguous
        );
        assert_eq!(
            parse(&headers(&["Basic YTpi", "Basic YTpj"])),
            Presented::None
        );
    }
}
