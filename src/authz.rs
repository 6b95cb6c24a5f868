//! Who may see what. One core, [`evaluate`], decides for every protocol;
//! the proxy and the forward-auth adapters ([`forward`]) only read the
//! target from their request and shape the answer.

pub mod forward;
pub mod policy;
pub mod signin;

use http::HeaderMap;

use crate::authn::current::{Current, current};
use crate::config::AccessConfig;
use crate::http::Error;
use crate::http::forwarded::ClientInfo;
use crate::session::{Claims, Session};
use crate::state::App;

/// What a request is for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A public path: pass, with no identity.
    Public,
    /// Signed in and allowed.
    Allow,
    /// No (valid) session.
    Unauthenticated,
    /// Signed in, but the rules say no.
    Forbidden,
}

/// Who is asking and what the rules say about `target`: the one decision
/// the proxy and both forward-auth endpoints make. `Err` when a store the
/// answer depends on is down (never a pass).
pub async fn decide(
    app: &App,
    headers: &HeaderMap,
    client: &ClientInfo,
    target: &Target<'_>,
) -> Result<(Decision, Current), Error> {
    let cur = identify(app, headers, client, target).await?;
    // Route policies first (the first matching route decides); a request
    // no route matches keeps the global `access` rules.
    let decision = match app.config.routes.decide(
        cur.session.as_ref(),
        target,
        client.client_ip,
        app.clock.now(),
    ) {
        Some(v) => v.decision,
        None => evaluate(
            &app.config.access,
            cur.session.as_ref().map(|s| &s.claims),
            target,
        ),
    };
    Ok((decision, cur))
}

/// The request's identity: an API token (`Authorization: Bearer`, when
/// enabled), else its session cookie.
pub async fn identify(
    app: &App,
    headers: &HeaderMap,
    client: &ClientInfo,
    target: &Target<'_>,
) -> Result<Current, Error> {
    // IdP bearer JWTs (`accept_bearer_tokens`): verified or refused, never
    // a fallback to the cookie.
    match crate::authn::bearer::presented(app, headers) {
        crate::authn::bearer::Presented::Jwt(token) => {
            // Boxed, like the API token below: rare paths kept out of the
            // future every request carries (see `authn::route`).
            let session = Box::pin(crate::authn::bearer::identify(app, token)).await?;
            return Ok(Current {
                session: Some(session),
                cookies: Vec::new(),
            });
        }
        crate::authn::bearer::Presented::Ambiguous => return Err(Error::Unauthenticated),
        crate::authn::bearer::Presented::None => {}
    }
    // API tokens (src/tokens): a presented token decides alone, never
    // the cookie beside it.
    if app.tokens.api_enabled() {
        match crate::tokens::bearer(headers) {
            crate::tokens::Bearer::One(token) if !crate::authn::bearer::looks_like_jwt(token) => {
                return Box::pin(api_token(app, token, target)).await;
            }
            crate::tokens::Bearer::Ambiguous => return Err(Error::Unauthenticated),
            _ => {}
        }
    }
    current(app, headers, client).await
}

/// Verifies an API token: a session `via: ApiToken`, or none (401).
async fn api_token(app: &App, token: &str, target: &Target<'_>) -> Result<Current, Error> {
    let facts = crate::tokens::api::RequestFacts {
        method: target.method,
        host: target.host,
        path: target.path,
        now: app.clock.now(),
    };
    let session = match app.tokens.verify_api(token, &facts).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(why)) => {
            tracing::info!(reason = %why, "API token rejected");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "API token revocation list unavailable");
            return Err(Error::Unavailable(
                "The token revocation list is unavailable.",
            ));
        }
    };
    Ok(Current {
        session,
        cookies: Vec::new(),
    })
}

/// Sets the identity headers of an allowed request (to the upstream, or
/// in a forward-auth answer), after the client's copies were stripped.
pub fn forward_identity(app: &App, headers: &mut HeaderMap, session: &Session) {
    app.identity.set(headers, &session.claims);
    // The signed JWT assertion (`jwt:`), minted once per session.
    if let Some(jwt) = &app.jwt
        && let Some(v) = jwt.for_session(session)
    {
        headers.insert(jwt.header.clone(), v);
    }
    app.tokens.set_identity(headers, session);
}

/// Decides on a request: public paths pass, everything else needs a
/// session whose user passes the access rules.
pub fn evaluate(access: &AccessConfig, claims: Option<&Claims>, target: &Target<'_>) -> Decision {
    if access.public_paths.iter().any(|p| p.matches(target.path)) {
        return Decision::Public;
    }
    match claims {
        None => Decision::Unauthenticated,
        Some(c) if allowed(access, c) => Decision::Allow,
        Some(_) => Decision::Forbidden,
    }
}

/// The global allow-lists (`allowed_emails`, `allowed_domains`,
/// `allowed_groups`): when any is set, the user must match one of them.
pub fn allowed(access: &AccessConfig, claims: &Claims) -> bool {
    if access.allowed_emails.is_empty()
        && access.allowed_domains.is_empty()
        && access.allowed_groups.is_empty()
    {
        return true;
    }
    let email = claims.email.as_deref().map(str::to_ascii_lowercase);
    if let Some(e) = &email {
        if access.allowed_emails.iter().any(|a| a == e) {
            return true;
        }
        if let Some((_, domain)) = e.rsplit_once('@')
            && access.allowed_domains.iter().any(|d| d == domain)
        {
            return true;
        }
    }
    claims
        .groups
        .iter()
        .any(|g| access.allowed_groups.contains(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PathPattern;

    fn claims(email: &str, groups: &[&str]) -> Claims {
        Claims {
            email: Some(email.into()),
            sub: Some(email.into()),
            groups: groups.iter().map(|g| (*g).into()).collect(),
            ..Claims::default()
        }
    }

    const T: Target<'static> = Target {
        host: None,
        path: "/app",
        method: "GET",
    };

    #[test]
    fn no_rules_means_any_signed_in_user() {
        let a = AccessConfig::default();
        assert_eq!(evaluate(&a, None, &T), Decision::Unauthenticated);
        assert_eq!(
            evaluate(&a, Some(&claims("x@y.z", &[])), &T),
            Decision::Allow
        );
    }

    #[test]
    fn allow_lists_match_email_domain_or_group() {
        let a = AccessConfig {
            allowed_emails: vec!["boss@other.org".into()],
            allowed_domains: vec!["example.com".into()],
            allowed_groups: vec!["admins".into()],
            public_paths: vec![PathPattern::Prefix("/public".into())],
        };
        assert_eq!(
            evaluate(&a, Some(&claims("Boss@Other.org", &[])), &T),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&a, Some(&claims("a@example.com", &[])), &T),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&a, Some(&claims("a@evil.com", &["admins"])), &T),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&a, Some(&claims("a@example.com.evil.com", &[])), &T),
            Decision::Forbidden
        );
        assert_eq!(
            evaluate(&a, Some(&claims("a@evil.com", &["users"])), &T),
            Decision::Forbidden
        );
        let public = Target {
            path: "/public/x.css",
            ..T
        };
        assert_eq!(evaluate(&a, None, &public), Decision::Public);
        let not_public = Target {
            path: "/publicity",
            ..T
        };
        assert_eq!(evaluate(&a, None, &not_public), Decision::Unauthenticated);
    }
}
