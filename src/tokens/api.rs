//! API tokens for machines: biscuits minted by `portcullis token mint`,
//! sent as `Authorization: Bearer <token>`, attenuable offline by their
//! holder. A request passes only if the token is signed by a key of the
//! ring, is an API token (not a forwarded identity token), is not
//! revoked, and every check of every block holds with the request's
//! facts, under run limits. Anything else is a 401: never a pass.

use std::time::{Duration, UNIX_EPOCH};

use biscuit_auth::builder::{date, fact, string};
use biscuit_auth::{AuthorizerLimits, Biscuit, BlockBuilder};

use super::keys::KeyRing;
use crate::clock::UnixTime;
use crate::session::{Claims, Session, Via};

/// Bounds on a token's Datalog: a token is attacker input. The time
/// bound is wall-clock: 5 ms denied a few honest requests of a loaded
/// 2-core machine (thread preemption), 25 ms still stops a runaway token.
pub fn run_limits() -> AuthorizerLimits {
    AuthorizerLimits {
        max_facts: 1000,
        max_iterations: 100,
        max_time: Duration::from_millis(25),
    }
}

/// Longer bearer values are refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a request is, as the token's checks see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub now: UnixTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    #[error("not a valid token: {0}")]
    Invalid(biscuit_auth::error::Token),
    #[error("the token is too long")]
    TooLong,
    #[error("not an API token")]
    NotApi,
    #[error("the token was revoked")]
    Revoked,
    #[error("the token forbids this request: {0}")]
    Denied(biscuit_auth::error::Token),
    #[error("the token has no subject")]
    NoSubject,
}

fn at(t: UnixTime) -> biscuit_auth::builder::Term {
    date(&(UNIX_EPOCH + Duration::from_secs(t)))
}

/// A statement as typed on the command line, with its final `;`.
fn statement(s: &str) -> String {
    let s = s.trim();
    if s.ends_with(';') {
        s.to_string()
    } else {
        format!("{s};")
    }
}

/// Mints an API token for `sub`, valid until `exp`, with `groups` and
/// extra `checks` (Datalog, e.g. `check if method("GET")`).
pub fn mint(
    ring: &KeyRing,
    sub: &str,
    groups: &[String],
    checks: &[String],
    exp: UnixTime,
) -> Result<Biscuit, biscuit_auth::error::Token> {
    let (key, id) = ring.signing();
    let mut b = Biscuit::builder()
        .root_key_id(id)
        .fact(fact("kind", &[string("api")]))?
        .fact(fact("user", &[string(sub)]))?;
    for g in groups {
        b = b.fact(fact("group", &[string(g)]))?;
    }
    b = b.code_with_params(
        "check if time($t), $t <= {exp};",
        [("exp".to_string(), at(exp))].into_iter().collect(),
        Default::default(),
    )?;
    for c in checks {
        b = b.code(statement(c))?;
    }
    b.build(key)
}

/// Appends a block of checks, offline: no key needed, and the narrowed
/// token can only do less.
pub fn attenuate(token: &str, checks: &[String]) -> Result<String, biscuit_auth::error::Token> {
    let t = biscuit_auth::UnverifiedBiscuit::from_base64(token.trim())?;
    let mut block = BlockBuilder::new();
    for c in checks {
        block = block.code(statement(c))?;
    }
    t.append(block)?.to_base64()
}

/// Every block as Datalog, with the root key id and revocation ids.
pub fn inspect(token: &str) -> Result<String, biscuit_auth::error::Token> {
    let t = biscuit_auth::UnverifiedBiscuit::from_base64(token.trim())?;
    let mut out = format!(
        "root key id: {}\n",
        t.root_key_id()
            .map_or_else(|| "none".to_string(), |i| i.to_string())
    );
    let ids = t.revocation_identifiers();
    for i in 0..t.block_count() {
        out.push_str(&format!(
            "\nblock {i} (revocation id {}):\n{}\n",
            ids.get(i)
                .map(|b| crate::crypto::hex(b))
                .unwrap_or_default(),
            t.print_block_source(i)?
        ));
    }
    Ok(out)
}

/// The revocation ids of a token, hex (one per block).
pub fn revocation_ids(t: &Biscuit) -> Vec<String> {
    t.revocation_identifiers()
        .iter()
        .map(|b| crate::crypto::hex(b))
        .collect()
}

/// Step 1 of verifying: the signatures, against the ring.
pub fn parse(ring: &KeyRing, token: &str) -> Result<Biscuit, ApiTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ApiTokenError::TooLong);
    }
    Biscuit::from_base64(token, ring).map_err(ApiTokenError::Invalid)
}

/// Step 2 (after the revocation check): every block's checks with the
/// request's facts, and the authority must say it is an API token.
/// Returns the session it stands for.
pub fn authorize(t: &Biscuit, req: &RequestFacts<'_>) -> Result<Session, ApiTokenError> {
    let mut code =
        String::from("time({now}); method({method}); path({path});\nallow if kind(\"api\");\n");
    let mut params: std::collections::HashMap<String, biscuit_auth::builder::Term> = [
        ("now".to_string(), at(req.now)),
        ("method".to_string(), string(req.method)),
        ("path".to_string(), string(req.path)),
    ]
    .into_iter()
    .collect();
    if let Some(h) = req.host {
        code.push_str("host({host});\n");
        params.insert("host".into(), string(h));
    }
    let mut a = biscuit_auth::AuthorizerBuilder::new()
        .code_with_params(code, params, Default::default())
        .map_err(ApiTokenError::Invalid)?
        .set_limits(run_limits())
        .build(t)
        .map_err(ApiTokenError::Invalid)?;
    a.authorize().map_err(|e| match e {
        biscuit_auth::error::Token::FailedLogic(biscuit_auth::error::Logic::NoMatchingPolicy {
            ..
        }) => ApiTokenError::NotApi,
        e => ApiTokenError::Denied(e),
    })?;
    // Only the authority block's facts are trusted by these queries: a
    // holder's block cannot add a user or a group.
    let users: Vec<(String,)> = a
        .query_with_limits("u($u) <- user($u)", run_limits())
        .map_err(ApiTokenError::Invalid)?;
    let groups: Vec<(String,)> = a
        .query_with_limits("g($g) <- group($g)", run_limits())
        .map_err(ApiTokenError::Invalid)?;
    let [(sub,)] = <[(String,); 1]>::try_from(users).map_err(|_| ApiTokenError::NoSubject)?;
    let revocation = revocation_ids(t).into_iter().next().unwrap_or_default();
    Ok(Session {
        claims: Claims {
            sub: Some(sub),
            groups: groups.into_iter().map(|(g,)| g).collect(),
            provider: Some("api_token".into()),
            jti: Some(revocation),
            ..Claims::default()
        },
        needs_refresh: false,
        handle: None,
        via: Via::ApiToken,
    })
}
