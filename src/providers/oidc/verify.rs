//! ID token validation, step by step as OpenID Connect Core 1.0 §3.1.3.7
//! lists it (numbers in comments are the spec's), with an injected time.

use serde_json::{Map, Value};

use super::jwks::{Jwks, SUPPORTED};
use crate::crypto::{b64_decode, ct_eq};

/// What a valid ID token must say.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce of this sign-in; `None` for a logout token, which must
    /// not carry one (Back-Channel Logout 1.0 §2.4).
    pub nonce: Option<&'a str>,
    /// Algorithms this provider may sign with (config or discovery).
    pub algorithms: &'a [String],
    /// Audiences besides ours that we accept in `aud` (§3.1.3.7 step 3).
    pub trusted_audiences: &'a [String],
    pub now: u64,
    /// Allowed clock skew for `exp` and `iat`.
    pub skew: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the ID token is not a signed JWT")]
    Malformed,
    #[error("encrypted ID tokens are not supported")]
    Encrypted,
    #[error("algorithm {0:?} is not allowed")]
    Algorithm(String),
    #[error("no signing key with kid {0:?}")]
    UnknownKey(String),
    #[error("bad signature: {0}")]
    Signature(String),
    #[error("issuer {0:?} is not the provider's")]
    Issuer(String),
    #[error("audience does not name this client, or names untrusted ones")]
    Audience,
    #[error("azp {0:?} is not this client")]
    AuthorizedParty(String),
    #[error("the ID token expired")]
    Expired,
    #[error("the ID token was issued in the future or has no iat")]
    IssuedAt,
    #[error("nonce mismatch (replay or a token for another sign-in)")]
    Nonce,
    #[error("the ID token has no subject")]
    Subject,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A check of a signed JWT: [`verify`] (ID tokens) or [`verify_logout`].
pub type VerifyFn = fn(&str, &Jwks, &Expect<'_>) -> Result<Map<String, Value>, VerifyError>;

/// The event a logout token carries (Back-Channel Logout 1.0 §2.4).
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Checks a back-channel logout token (§2.6): signed as an ID token, no
/// nonce, the logout event, and a `sub` or `sid` to name the sessions.
pub fn verify_logout(
    token: &str,
    jwks: &Jwks,
    e: &Expect<'_>,
) -> Result<Map<String, Value>, VerifyError> {
    let claims = verify(token, jwks, e)?;
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|ev| ev.get(BACKCHANNEL_EVENT).is_some_and(Value::is_object));
    if !event || claims.get("jti").and_then(Value::as_str).is_none() {
        return Err(VerifyError::Malformed);
    }
    if claims.get("sub").and_then(Value::as_str).is_none()
        && claims.get("sid").and_then(Value::as_str).is_none()
    {
        return Err(VerifyError::Subject);
    }
    Ok(claims)
}

/// Checks a JWT presented as `Authorization: Bearer` (an ID token or a
/// JWT access token, RFC 9068 §4): signed as an ID token (steps 1, 6, 7),
/// the issuer exactly (step 2), an audience that is `client_id` or one of
/// `trusted_audiences` (an access token names its resource, and may name
/// others: RFC 9068 §4 step 3), not expired and not before `nbf` (step 9),
/// a subject. No nonce: no sign-in of ours asked for this token.
pub fn verify_bearer(
    token: &str,
    jwks: &Jwks,
    e: &Expect<'_>,
) -> Result<Map<String, Value>, VerifyError> {
    let claims = signed_claims(token, jwks, e)?;
    // A security event token (a back-channel logout token, RFC 8417 §2.3)
    // is signed and addressed like an ID token: never a credential.
    if claims.contains_key("events") {
        return Err(VerifyError::Malformed);
    }
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if iss != e.issuer {
        return Err(VerifyError::Issuer(iss.into()));
    }
    let ours = |a: &str| a == e.client_id || e.trusted_audiences.iter().any(|t| t == a);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => ours(a),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).any(ours),
        _ => false,
    };
    if !aud_ok {
        return Err(VerifyError::Audience);
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(VerifyError::Expired)?;
    if e.now >= exp.saturating_add(e.skew) {
        return Err(VerifyError::Expired);
    }
    // Neither issued nor valid from a time in the future (RFC 7519 §4.1.5).
    for k in ["nbf", "iat"] {
        if let Some(t) = claims.get(k)
            && t.as_u64().is_none_or(|t| t > e.now + e.skew)
        {
            return Err(VerifyError::IssuedAt);
        }
    }
    has_subject(&claims)?;
    Ok(claims)
}

/// Checks `token` against `jwks` and `e`; returns its claims.
pub fn verify(token: &str, jwks: &Jwks, e: &Expect<'_>) -> Result<Map<String, Value>, VerifyError> {
    let claims = signed_claims(token, jwks, e)?;
    checked_claims(claims, e)
}

/// Steps 1, 6 and 7: a JWS (not a JWE) with an allowed algorithm, whose
/// signature the key it names verifies; its claims, not yet checked.
fn signed_claims(
    token: &str,
    jwks: &Jwks,
    e: &Expect<'_>,
) -> Result<Map<String, Value>, VerifyError> {
    let parts: Vec<&str> = token.split('.').collect();
    // Step 1: an encrypted ID token (JWE, five parts) was not asked for.
    if parts.len() == 5 {
        return Err(VerifyError::Encrypted);
    }
    let [h, p, s] = parts[..] else {
        return Err(VerifyError::Malformed);
    };
    let header: Header = b64_decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(VerifyError::Malformed)?;
    // Step 7 (and 6): the alg is one we allow and can check; never `none`
    // or a MAC keyed with something an attacker may know.
    if header.crit.is_some()
        || !SUPPORTED.contains(&header.alg.as_str())
        || !e.algorithms.iter().any(|a| a == &header.alg)
    {
        return Err(VerifyError::Algorithm(header.alg));
    }
    // Step 6: the signature, with the key the header names.
    if let Some(kid) = &header.kid
        && !jwks.has_kid(kid)
    {
        return Err(VerifyError::UnknownKey(kid.clone()));
    }
    let sig = b64_decode(s).ok_or(VerifyError::Malformed)?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    jwks.verify(
        &header.alg,
        header.kid.as_deref(),
        signing_input.as_bytes(),
        &sig,
    )
    .map_err(VerifyError::Signature)?;
    b64_decode(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(VerifyError::Malformed)
}

/// Steps 2 to 11 of an ID token.
fn checked_claims(
    claims: Map<String, Value>,
    e: &Expect<'_>,
) -> Result<Map<String, Value>, VerifyError> {
    // Step 2: the issuer, exactly.
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if iss != e.issuer {
        return Err(VerifyError::Issuer(iss.into()));
    }
    // Step 3: we are an audience, and every other audience is trusted.
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !auds.contains(&e.client_id)
        || auds
            .iter()
            .any(|a| *a != e.client_id && !e.trusted_audiences.iter().any(|t| t == a))
    {
        return Err(VerifyError::Audience);
    }
    // Steps 4 and 5: with several audiences azp must be present, and azp,
    // when present, must be us.
    let azp = claims.get("azp").and_then(Value::as_str);
    match azp {
        Some(a) if a != e.client_id => return Err(VerifyError::AuthorizedParty(a.into())),
        None if auds.len() > 1 => return Err(VerifyError::AuthorizedParty(String::new())),
        _ => {}
    }
    // Step 9: not expired (with skew).
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(VerifyError::Expired)?;
    if e.now >= exp.saturating_add(e.skew) {
        return Err(VerifyError::Expired);
    }
    // Step 10: issued, and not in the future.
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(VerifyError::IssuedAt)?;
    if iat > e.now + e.skew {
        return Err(VerifyError::IssuedAt);
    }
    // Step 11: the nonce we sent for this very sign-in.
    let nonce = claims.get("nonce").and_then(Value::as_str);
    let Some(expected) = e.nonce else {
        return if nonce.is_some() {
            Err(VerifyError::Nonce)
        } else {
            Ok(claims)
        };
    };
    if !ct_eq(nonce.unwrap_or("").as_bytes(), expected.as_bytes()) || expected.is_empty() {
        return Err(VerifyError::Nonce);
    }
    has_subject(&claims)?;
    Ok(claims)
}

/// A non-empty `sub` (OIDC Core §2; RFC 7519 §4.1.2 for bearer tokens).
fn has_subject(claims: &Map<String, Value>) -> Result<(), VerifyError> {
    match claims.get("sub").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(()),
        _ => Err(VerifyError::Subject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tests/vectors/jwt/bearer.json: tokens made by PyJWT (an independent
    /// implementation) and the result each must have.
    #[test]
    fn bearer_golden_vectors_give_their_expected_results() {
        let v: Value =
            serde_json::from_str(include_str!("../../../tests/vectors/jwt/bearer.json")).unwrap();
        let jwks = Jwks::parse(&v["jwks"]).unwrap();
        let strings = |k: &str| -> Vec<String> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let (algorithms, audiences) = (strings("algorithms"), strings("bearer_audiences"));
        let e = Expect {
            issuer: v["issuer"].as_str().unwrap(),
            client_id: v["client_id"].as_str().unwrap(),
            nonce: None,
            algorithms: &algorithms,
            trusted_audiences: &audiences,
            now: v["now"].as_u64().unwrap(),
            skew: v["skew"].as_u64().unwrap(),
        };
        let vectors = v["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 15);
        for t in vectors {
            let (name, token) = (t["name"].as_str().unwrap(), t["token"].as_str().unwrap());
            let got = match verify_bearer(token, &jwks, &e) {
                Ok(c) => {
                    assert_eq!(c["sub"], "svc-1", "{name}");
                    "ok".to_string()
                }
                Err(err) => format!("{err:?}").split('(').next().unwrap().to_string(),
            };
            assert_eq!(got, t["expect"].as_str().unwrap(), "{name}");
        }
    }
}
