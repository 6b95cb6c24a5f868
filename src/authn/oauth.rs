//! OIDC sign-in: start (a flow cookie, then off to the provider) and
//! callback (consume the flow, exchange the code, verify the ID token,
//! merge userinfo, map claims, establish the session), and RP-initiated
//! logout at sign-out.

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::form::Form;
use super::{CheckedPost, checked_post, error_target, establish_with, go};
use crate::http::forwarded::ClientInfo;
use crate::http::redirect::SafeRedirect;
use crate::http::{self as web, Body, Error, ErrorCode, wants_html};
use crate::providers::oidc::{OidcError, OidcProvider, Profile, ResponseMode, TokenSet};
use crate::session::Claims;
use crate::state::App;

fn provider<'a>(app: &'a App, id: &str) -> Result<&'a Arc<OidcProvider>, Error> {
    app.oidc.get(id).ok_or(Error::NotFound)
}

fn redirect_uri(app: &App, id: &str) -> String {
    app.public_auth_url(&format!("/callback/{id}"))
}

/// `POST {base}/signin/{id}`: CSRF-checked, then a 302 to the provider.
pub(super) async fn start(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, Error> {
    provider(app, id)?;
    let CheckedPost {
        parts, callback, ..
    } = match checked_post(app, req, "OIDC sign-in").await? {
        Ok(post) => post,
        Err(refused) => return Ok(refused),
    };
    redirect_to_provider(app, &parts.headers, id, callback)
}

/// A new flow and the 302 to the provider's authorization endpoint (also
/// the sign-in page's answer when its only provider has `auto_redirect`).
pub(super) fn redirect_to_provider(
    app: &App,
    headers: &http::HeaderMap,
    id: &str,
    callback: SafeRedirect,
) -> Result<Response<Body>, Error> {
    let p = provider(app, id)?;
    // The flow cookie must stay well under 4 KiB: a huge target goes home.
    let callback = if callback.as_str().len() > 1024 {
        app.redirects.home()
    } else {
        callback
    };
    let form_post = p.cfg.response_mode == ResponseMode::FormPost;
    let (flow, cookies) = app.flows.start(headers, id, callback.as_str(), form_post);
    let Some(url) = p.authorize_url(
        &redirect_uri(app, id),
        &flow.state,
        &flow.nonce,
        &flow.verifier,
    ) else {
        return Err(Error::Unavailable(
            "The identity provider is not reachable right now. Try again in a moment.",
        ));
    };
    let mut r = go(headers, &SafeRedirect::to_identity_provider(&url));
    web::set_cookies(&mut r, cookies);
    Ok(r)
}

/// The parameters of a callback: the query, or a `form_post` body.
async fn callback_params(
    app: &App,
    req: Request<Incoming>,
) -> Result<(http::request::Parts, Form), Error> {
    let (parts, body) = req.into_parts();
    let form = if parts.method == Method::POST {
        Form::read(&parts.headers, body, app.config.limits.max_form_bytes).await?
    } else {
        Form::parse(parts.uri.query().unwrap_or("").as_bytes())
    };
    Ok((parts, form))
}

/// `GET|POST {base}/callback/{id}`.
pub(super) async fn callback(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &ClientInfo,
    id: &str,
) -> Result<Response<Body>, Error> {
    let p = provider(app, id)?;
    let (parts, params) = callback_params(app, req).await?;
    let h = &parts.headers;
    let home = app.redirects.home();
    let (flow, clear) = app
        .flows
        .finish(h, params.get("state").unwrap_or(""), id)
        .await;
    let fail = |code: ErrorCode, callback: &SafeRedirect| {
        app.metrics.signin(
            id,
            if code == ErrorCode::AccessDenied {
                "denied"
            } else {
                "failure"
            },
        );
        let mut r = go(h, &error_target(app, code, callback));
        web::set_cookies(&mut r, clear.clone());
        r
    };
    let flow = match flow {
        Ok(f) => f,
        Err(e) => {
            tracing::info!(provider = id, client_ip = %client.client_ip, reason = %e, "sign-in callback refused: OAuthCallbackError");
            return Ok(fail(ErrorCode::OAuthCallbackError, &home));
        }
    };
    let callback = app.redirects.check_or_home(Some(&flow.callback));
    if let Some(err) = params.get("error") {
        let code = if err == "access_denied" {
            ErrorCode::AccessDenied
        } else {
            ErrorCode::OAuthCallbackError
        };
        let desc: String = params
            .get("error_description")
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        tracing::info!(provider = id, error = %err.chars().take(64).collect::<String>(), description = %desc, "the identity provider returned an error");
        return Ok(fail(code, &callback));
    }
    let Some(code) = params
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= 2048)
    else {
        tracing::info!(
            provider = id,
            "sign-in callback without a code: OAuthCallbackError"
        );
        return Ok(fail(ErrorCode::OAuthCallbackError, &callback));
    };
    match complete(app, p, code, &flow.verifier, &flow.nonce, id).await {
        Ok((claims, id_token)) => {
            let mut r =
                establish_with(app, h, client, claims, &callback, id_token.as_deref()).await?;
            web::set_cookies(&mut r, clear);
            Ok(r)
        }
        Err(OidcError::Unavailable(why)) => {
            // The flow is spent either way (its code is single-use): clear it.
            let mut r = Error::IdentityProvider(why).respond(wants_html(h), &app.config.base_path);
            web::set_cookies(&mut r, clear);
            Ok(r)
        }
        Err(e) => {
            let code = if matches!(e, OidcError::UnverifiedEmail | OidcError::Required(_)) {
                ErrorCode::AccessDenied
            } else {
                ErrorCode::OAuthCallbackError
            };
            tracing::info!(provider = id, reason = %e, code = code.as_str(), "sign-in refused");
            Ok(fail(code, &callback))
        }
    }
}

/// Code → tokens → verified ID token → userinfo → session claims, and
/// the ID token to keep beside a `jwt` session (see [`claims_for`]).
async fn complete(
    app: &App,
    p: &OidcProvider,
    code: &str,
    verifier: &str,
    nonce: &str,
    id: &str,
) -> Result<(Claims, Option<String>), OidcError> {
    let tokens = p.exchange(code, verifier, &redirect_uri(app, id)).await?;
    let (id_claims, userinfo) = if p.is_oauth() {
        // Plain OAuth 2: no ID token; the profile is what userinfo says.
        let at = tokens
            .access_token
            .as_deref()
            .ok_or_else(|| OidcError::Invalid("the token response has no access_token".into()))?;
        (serde_json::Map::new(), p.userinfo(at, None).await?)
    } else {
        let id_token = tokens
            .id_token
            .as_deref()
            .ok_or_else(|| OidcError::Invalid("the token response has no id_token".into()))?;
        let id_claims = p.verify_id_token(id_token, nonce).await?;
        let sub = id_claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let userinfo = match tokens.access_token.as_deref() {
            Some(at) => p.userinfo(at, Some(&sub)).await?,
            None => serde_json::Map::new(),
        };
        (id_claims, userinfo)
    };
    let profile = p.profile(id_claims, userinfo)?;
    Ok(claims_for(app, p, id, profile, tokens))
}

/// A provider's profile as session claims (a sign-in, or a bearer
/// token): the profile, the provider, and the claims that headers and
/// sign-in rules read, kept as `attrs`.
pub(crate) fn profile_claims(app: &App, id: &str, profile: Profile) -> Claims {
    let attrs = app
        .config
        .headers
        .claims
        .iter()
        .map(|(_, path)| path.as_str())
        // The claims the sign-in rules read are kept too.
        .chain(app.config.sign_in.claim_paths())
        .filter_map(|path| {
            crate::providers::oidc::claim_at(&profile.claims, path)
                .map(|v| (path.to_string(), v.clone()))
        })
        .collect();
    Claims {
        name: profile.name,
        email: profile.email,
        picture: profile.image,
        sub: Some(profile.id),
        groups: profile.groups,
        provider: Some(id.to_string()),
        preferred_username: profile.preferred_username,
        attrs,
        ..Claims::default()
    }
}

/// The session claims of a sign-in, and the ID token to keep beside the
/// session rather than in it.
fn claims_for(
    app: &App,
    p: &OidcProvider,
    id: &str,
    profile: Profile,
    tokens: TokenSet,
) -> (Claims, Option<String>) {
    let keep = p.cfg.store_tokens;
    // The ID token (~1 KB) is only for RP-initiated logout's hint: a
    // server-side session keeps it; a `jwt` session keeps it in a sealed
    // cookie of its own that only the sign-out path receives, so the
    // session cookie stays under 1.5 KB (session::id_token).
    let id_token = tokens.id_token.filter(|_| keep);
    let (in_session, beside) = if app.sessions.database().is_some() {
        (id_token, None)
    } else {
        (None, id_token)
    };
    let claims = Claims {
        access_token: tokens.access_token.filter(|_| keep),
        refresh_token: tokens.refresh_token.filter(|_| keep),
        id_token: in_session,
        expires_at: tokens.expires_at.filter(|_| keep),
        refresh_at: tokens.refresh_at.filter(|_| keep),
        ..profile_claims(app, id, profile)
    };
    (claims, beside)
}

/// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2): when
/// the session came from a provider with an `end_session_endpoint`, sign
/// out there too and come back to `after` (made absolute on the public
/// origin; it must be registered at the provider).
/// `id_token_hint` is the session's ID token: kept in the session
/// (`database`) or in its sign-out cookie (`jwt`); without one the client
/// id names the RP instead.
pub(super) fn end_session_url(
    app: &App,
    claims: &Claims,
    id_token_hint: Option<&str>,
    after: &SafeRedirect,
) -> Option<SafeRedirect> {
    let p = app.oidc.get(claims.provider.as_deref()?)?;
    let meta = p.metadata()?;
    let mut url = url::Url::parse(meta.end_session_endpoint.as_deref()?).ok()?;
    let back = app.config.public_url.join(after.as_str()).ok()?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(t) = claims.id_token.as_deref().or(id_token_hint) {
            q.append_pair("id_token_hint", t);
        }
        q.append_pair("client_id", &p.cfg.client_id);
        q.append_pair("post_logout_redirect_uri", back.as_str());
    }
    Some(SafeRedirect::to_identity_provider(&url))
}

/// `POST {base}/backchannel-logout/{id}` (OpenID Connect Back-Channel
/// Logout 1.0 §2.5): a valid logout token from the provider ends every
/// session of its subject. Needs the `database` strategy: a stateless
/// cookie cannot be recalled.
pub(super) async fn backchannel_logout(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, Error> {
    let p = provider(app, id)?;
    let (parts, body) = req.into_parts();
    let form = Form::read(&parts.headers, body, app.config.limits.max_form_bytes).await?;
    let Some(db) = app.sessions.database() else {
        let mut r = web::json(
            http::StatusCode::NOT_IMPLEMENTED,
            &serde_json::json!({"error": "unsupported", "error_description": "back-channel logout needs session.strategy: database"}),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        return Ok(r);
    };
    let token = form.get("logout_token").unwrap_or("");
    let claims = match p.verify_logout_token(token).await {
        Ok(c) => c,
        Err(OidcError::Unavailable(why)) => return Err(Error::UpstreamUnreachable(why)),
        Err(e) => {
            tracing::info!(provider = id, reason = %e, "back-channel logout token refused");
            return Ok(web::json(
                http::StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_request", "error_description": "the logout token is not valid"}),
            ));
        }
    };
    let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("");
    if sub.is_empty() {
        // Sessions are indexed by subject only: a `sid`-only token would
        // end nothing, and a 200 would tell the provider it did.
        tracing::info!(
            provider = id,
            "back-channel logout token without sub refused"
        );
        return Ok(web::json(
            http::StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "invalid_request", "error_description": "logout tokens without sub are not supported"}),
        ));
    }
    let ended = db.destroy_subject(id, sub).await?;
    tracing::info!(provider = id, sessions = ended, "back-channel logout");
    let mut r = Response::new(web::empty());
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}
