//! The Auth.js REST surface under the base path: the sign-in and sign-out
//! pages, the sign-in flows, and the JSON endpoints Auth.js clients call
//! (`session`, `csrf`, `providers`).
//!
//! Every state-changing POST checks the CSRF double submit first; every
//! redirect target goes through the redirect policy.

mod accounts;
pub mod bearer;
mod credentials;
pub mod csrf;
pub mod current;
mod email;
pub mod flow;
pub mod form;
mod oauth;
pub mod refresh;
pub mod regulation;

use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use crate::authz::{self, forward};
use crate::clock::rfc3339;
use crate::http::error::{Error, ErrorCode};
use crate::http::forwarded::ClientInfo;
use crate::http::pages::{self, SigninEntry, SigninPage};
use crate::http::redirect::SafeRedirect;
use crate::http::{self as web, Body, wants_html};
use crate::providers::ProviderKind;
use crate::session::Claims;
use crate::state::App;
use form::{Form, query_param};

/// Answers a request under the base path; `rest` is the path after it.
pub async fn route(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &ClientInfo,
    rest: &str,
) -> Response<Body> {
    let html = wants_html(req.headers());
    let m = req.method().clone();
    let is_read = m == Method::GET || m == Method::HEAD;
    // The flows that run once a sign-in (or sign-out) are boxed: a future
    // is as large as its largest branch and is moved whole, so the ones
    // every request takes (the session, forward-auth) stay small without
    // them (the sign-in flow alone was ~12 KiB, this whole future ~26).
    let result = match rest {
        "" | "/" | "/signin" if is_read => signin_page(app, &req),
        "/signout" if is_read => Ok(signout_page(app, &req)),
        "/signout" if m == Method::POST => Box::pin(signout(app, req, client)).await,
        "/session" if is_read => session(app, req.headers(), client).await,
        "/session" if m == Method::POST => Box::pin(session_update(app, req, client)).await,
        "/csrf" if is_read => Ok(csrf_json(app, req.headers())),
        "/providers" if is_read => Ok(providers(app)),
        "/jwks" if is_read => jwks(app),
        "/keys" if is_read => Ok(app.tokens.keys_response()),
        "/error" if is_read => Ok(error_page(&req)),
        "/verify-request" if is_read => Ok(web::html(
            StatusCode::OK,
            pages::verify_request(app.redirects.check_or_home(None).as_str()),
        )),
        "/forward-auth" => Ok(forward::forward_auth(app, &req, client).await),
        "/auth-request" => Ok(forward::auth_request(app, &req, client).await),
        r if r.starts_with("/backchannel-logout/") => match m {
            Method::POST => {
                Box::pin(oauth::backchannel_logout(
                    app,
                    req,
                    &r["/backchannel-logout/".len()..],
                ))
                .await
            }
            _ => Err(Error::MethodNotAllowed),
        },
        r => match (r.strip_prefix("/signin/"), r.strip_prefix("/callback/")) {
            (Some(provider), _) if m == Method::POST => {
                Box::pin(sign_in(app, req, client, provider, false)).await
            }
            (_, Some(provider)) if m == Method::POST || m == Method::GET => {
                Box::pin(sign_in(app, req, client, provider, true)).await
            }
            (Some(_), _) | (_, Some(_)) => Err(Error::MethodNotAllowed),
            _ if matches!(
                r,
                "" | "/"
                    | "/signin"
                    | "/signout"
                    | "/session"
                    | "/csrf"
                    | "/providers"
                    | "/keys"
                    | "/error"
                    | "/verify-request"
            ) =>
            {
                Err(Error::MethodNotAllowed)
            }
            _ => Err(Error::NotFound),
        },
    };
    result.unwrap_or_else(|e| e.respond(html, &app.config.base_path))
}

/// A redirect, or `200 {"url"}` for clients that send
/// `X-Auth-Return-Redirect` (Auth.js's `signIn()`/`signOut()`).
pub(crate) fn go(headers: &HeaderMap, to: &SafeRedirect) -> Response<Body> {
    if headers.contains_key("x-auth-return-redirect") {
        web::json(StatusCode::OK, &json!({ "url": to.as_str() }))
    } else {
        web::redirect(to)
    }
}

/// A state-changing POST whose CSRF double submit checked out: its parts,
/// its form, and its `callbackUrl` as the redirect policy allows it.
pub(crate) struct CheckedPost {
    pub parts: http::request::Parts,
    pub form: Form,
    pub callback: SafeRedirect,
}

/// Reads a POST form and checks its CSRF token: `Ok(Err(response))` is the
/// `MissingCSRF` answer to send instead (logged with `what`).
pub(crate) async fn checked_post(
    app: &App,
    req: Request<Incoming>,
    what: &str,
) -> Result<Result<CheckedPost, Response<Body>>, Error> {
    let (parts, body) = req.into_parts();
    let form = Form::read(&parts.headers, body, app.config.limits.max_form_bytes).await?;
    let callback = app.redirects.check_or_home(form.get("callbackUrl"));
    if !app.csrf.verify(&parts.headers, form.get("csrfToken")) {
        tracing::info!(what, "refused: CSRF token missing or wrong");
        return Ok(Err(go(
            &parts.headers,
            &error_target(app, ErrorCode::MissingCsrf, &callback),
        )));
    }
    Ok(Ok(CheckedPost {
        parts,
        form,
        callback,
    }))
}

/// Where a sign-in error sends the browser, as Auth.js does: sign-in
/// errors back to the sign-in page, others to the error page.
pub(crate) fn error_target(app: &App, code: ErrorCode, callback: &SafeRedirect) -> SafeRedirect {
    let base = &app.config.base_path;
    let path = match code {
        ErrorCode::CredentialsSignin => {
            let cb: String =
                url::form_urlencoded::byte_serialize(callback.as_str().as_bytes()).collect();
            format!(
                "{base}/signin?error={}&code=credentials&callbackUrl={cb}",
                code.as_str()
            )
        }
        _ => format!("{base}/error?error={}", code.as_str()),
    };
    app.redirects.check_or_home(Some(&path))
}

fn signin_page(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let q = req.uri().query();
    // `rd` is oauth2-proxy's name for the same thing.
    let target = query_param(q, "callbackUrl").or_else(|| query_param(q, "rd"));
    let callback = app.redirects.check_or_home(target.as_deref());
    let error = query_param(q, "error").map(|e| ErrorCode::parse(&e).message());
    // The only provider skips the page, unless it is showing an error
    // (going straight back would loop).
    if let [p] = app.config.providers.as_slice()
        && p.auto_redirect
        && error.is_none()
    {
        return oauth::redirect_to_provider(app, req.headers(), &p.id, callback);
    }
    let (token, cookie) = app.csrf.token(req.headers());
    let base = &app.config.base_path;
    let actions: Vec<(String, &str)> = app
        .config
        .providers
        .iter()
        .map(|p| match p.kind {
            ProviderKind::Credentials(_) => (format!("{base}/callback/{}", p.id), p.name.as_str()),
            ProviderKind::Oidc(_) | ProviderKind::Email(_) => {
                (format!("{base}/signin/{}", p.id), p.name.as_str())
            }
        })
        .collect();
    let entries = actions
        .iter()
        .zip(&app.config.providers)
        .map(|((action, name), p)| match p.kind {
            ProviderKind::Credentials(_) => SigninEntry::Credentials { action, name },
            ProviderKind::Oidc(_) => SigninEntry::Button { action, name },
            ProviderKind::Email(_) => SigninEntry::Email { action, name },
        })
        .collect();
    let page = pages::signin(&SigninPage {
        csrf_token: &token,
        callback_url: callback.as_str(),
        error,
        entries,
    });
    let mut r = web::html(StatusCode::OK, page);
    web::set_cookies(&mut r, cookie);
    Ok(r)
}

/// `POST {base}/signin/{provider}` starts a sign-in, `{base}/callback/{provider}`
/// finishes one (credentials sign in directly at either).
async fn sign_in(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &ClientInfo,
    provider: &str,
    is_callback: bool,
) -> Result<Response<Body>, Error> {
    let Some(p) = app.config.providers.iter().find(|p| p.id == provider) else {
        return Err(Error::NotFound);
    };
    match (&p.kind, is_callback, req.method() == Method::POST) {
        (ProviderKind::Credentials(creds), _, true) => {
            credentials::sign_in(app, req, client, &p.id, creds).await
        }
        (ProviderKind::Oidc(_), false, true) => oauth::start(app, req, &p.id).await,
        (ProviderKind::Oidc(_), true, _) => oauth::callback(app, req, client, &p.id).await,
        (ProviderKind::Email(cfg), false, true) => email::start(app, req, client, &p.id, cfg).await,
        (ProviderKind::Email(_), true, false) => email::callback(app, req, client, &p.id).await,
        _ => Err(Error::MethodNotAllowed),
    }
}

/// Whether `claims` may sign in: the static groups merged in, then the
/// access rules and the sign-in policy (provider groups, `sign_in`
/// rules). `Err` says why not, for the log.
pub(crate) fn may_sign_in(app: &App, claims: &mut Claims) -> Result<(), String> {
    app.config.sign_in.enrich(claims);
    if !authz::allowed(&app.config.access, claims) {
        return Err("the access rules".into());
    }
    app.config
        .sign_in
        .evaluate(claims)
        .map_err(|rule| format!("the sign-in policy ({rule})"))
}

/// Issues the session for a signed-in user, unless the access rules or
/// the sign-in policy (provider groups, `sign_in` rules) say no; the
/// configured static groups are merged in first. The response goes to
/// `callback`.
async fn establish(
    app: &App,
    headers: &HeaderMap,
    client: &ClientInfo,
    claims: Claims,
    callback: &SafeRedirect,
) -> Result<Response<Body>, Error> {
    establish_with(app, headers, client, claims, callback, None).await
}

/// [`establish`], and for a `jwt` session from an OIDC provider its ID
/// token in its own sign-out-only cookie (for RP-initiated logout's
/// `id_token_hint`). Any ID token cookie from before is replaced or
/// cleared: it must never outlive the session it was for.
async fn establish_with(
    app: &App,
    headers: &HeaderMap,
    client: &ClientInfo,
    mut claims: Claims,
    callback: &SafeRedirect,
    id_token: Option<&str>,
) -> Result<Response<Body>, Error> {
    let provider = claims.provider.clone().unwrap_or_default();
    if let Err(why) = may_sign_in(app, &mut claims) {
        tracing::info!(provider, user = %claims.user_id(), %why, "sign-in refused: AccessDenied");
        app.metrics.signin(&provider, "denied");
        return Ok(go(
            headers,
            &error_target(app, ErrorCode::AccessDenied, callback),
        ));
    }
    match accounts::resolve(app, headers, &mut claims).await? {
        accounts::Resolved::SignIn => {}
        accounts::Resolved::Linked => {
            app.metrics.signin(&provider, "linked");
            return Ok(go(headers, callback));
        }
        accounts::Resolved::Refused(code) => {
            app.metrics.signin(&provider, "denied");
            return Ok(go(headers, &error_target(app, code, callback)));
        }
    }
    let seen = crate::http::cookies::get_chunked(headers, &app.names.session).1;
    let domain = app.cookie_domain(client);
    let mut cookies = app.sessions.create(&mut claims, seen, domain).await?;
    match id_token.and_then(|t| app.id_tokens.issue(t, &claims, domain)) {
        Some(c) => cookies.push(c),
        None if app.id_tokens.present(headers) => cookies.push(app.id_tokens.clear(domain)),
        None => {}
    }
    tracing::info!(provider, user = %claims.user_id(), client_ip = %client.client_ip, "signed in");
    app.metrics.signin(&provider, "success");
    let mut r = go(headers, callback);
    web::set_cookies(&mut r, cookies);
    crate::http::Decided::mark(
        &mut r,
        crate::metrics::Outcome::None,
        Some(claims.user_id()),
    );
    Ok(r)
}

fn signout_page(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let callback = app
        .redirects
        .check_or_home(query_param(req.uri().query(), "callbackUrl").as_deref());
    let (token, cookie) = app.csrf.token(req.headers());
    let action = format!("{}/signout", app.config.base_path);
    let mut r = web::html(
        StatusCode::OK,
        pages::signout(&action, &token, callback.as_str()),
    );
    web::set_cookies(&mut r, cookie);
    r
}

async fn signout(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &ClientInfo,
) -> Result<Response<Body>, Error> {
    let CheckedPost {
        parts,
        form,
        callback,
    } = match checked_post(app, req, "sign-out").await? {
        Ok(post) => post,
        Err(refused) => return Ok(refused),
    };
    let loaded = app.sessions.load(&parts.headers).await?;
    let domain = app.cookie_domain(client);
    let everywhere = form
        .get("everywhere")
        .or(query_param(parts.uri.query(), "everywhere").as_deref())
        .is_some_and(|v| v == "1" || v == "true");
    let mut to = callback;
    if let Some(s) = &loaded.session {
        if everywhere {
            let Some(db) = app.sessions.database() else {
                return Err(Error::BadRequest(
                    "Signing out everywhere needs the database session strategy.",
                ));
            };
            let n = db
                .destroy_user(s.claims.email.as_deref(), s.claims.user_id())
                .await?;
            tracing::info!(user = %s.claims.user_id(), sessions = n, "signed out everywhere");
        } else {
            tracing::info!(user = %s.claims.user_id(), "signed out");
        }
        let hint = app.id_tokens.read(&parts.headers, &s.claims);
        if let Some(end) = oauth::end_session_url(app, &s.claims, hint.as_deref(), &to) {
            to = end;
        }
    }
    let mut cookies = app.sessions.destroy(&loaded, domain).await?;
    if app.id_tokens.present(&parts.headers) {
        cookies.push(app.id_tokens.clear(domain));
    }
    let mut r = go(&parts.headers, &to);
    web::set_cookies(&mut r, cookies);
    Ok(r)
}

/// The Auth.js v5 session shape; `null` when signed out.
fn session_json(claims: &Claims) -> Value {
    let mut user = Map::new();
    for (k, v) in [
        ("name", &claims.name),
        ("email", &claims.email),
        ("image", &claims.picture),
    ] {
        if let Some(v) = v {
            user.insert(k.into(), Value::String(v.clone()));
        }
    }
    json!({ "user": user, "expires": rfc3339(claims.exp) })
}

async fn session(
    app: &App,
    headers: &HeaderMap,
    client: &ClientInfo,
) -> Result<Response<Body>, Error> {
    let cur = current::current(app, headers, client).await?;
    let body = cur
        .session
        .as_ref()
        .map(|s| session_json(&s.claims))
        .unwrap_or(Value::Null);
    let mut r = web::json(StatusCode::OK, &body);
    web::set_cookies(&mut r, cur.cookies);
    Ok(r)
}

/// `POST {base}/session` (Auth.js `update()`): CSRF-checked re-issue.
async fn session_update(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &ClientInfo,
) -> Result<Response<Body>, Error> {
    let (parts, body) = req.into_parts();
    let token = if parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        let v = form::read_json(body, app.config.limits.max_form_bytes).await?;
        v.get("csrfToken")
            .and_then(Value::as_str)
            .map(str::to_owned)
    } else {
        Form::read(&parts.headers, body, app.config.limits.max_form_bytes)
            .await?
            .get("csrfToken")
            .map(str::to_owned)
    };
    if !app.csrf.verify(&parts.headers, token.as_deref()) {
        return Err(Error::BadRequest(
            "The CSRF token is missing or wrong (MissingCSRF).",
        ));
    }
    let loaded = app.sessions.load(&parts.headers).await?;
    let Some(mut s) = loaded.session else {
        return Ok(web::json(StatusCode::OK, &Value::Null));
    };
    let cookies = app
        .sessions
        .save(&mut s, loaded.chunks, app.cookie_domain(client))
        .await?;
    let mut r = web::json(StatusCode::OK, &session_json(&s.claims));
    web::set_cookies(&mut r, cookies);
    Ok(r)
}

fn csrf_json(app: &App, headers: &HeaderMap) -> Response<Body> {
    let (token, cookie) = app.csrf.token(headers);
    let mut r = web::json(StatusCode::OK, &json!({ "csrfToken": token }));
    web::set_cookies(&mut r, cookie);
    r
}

fn providers(app: &App) -> Response<Body> {
    let map: Map<String, Value> = app
        .config
        .providers
        .iter()
        .map(|p| {
            let v = json!({
                "id": p.id,
                "name": p.name,
                "type": p.type_name(),
                "signinUrl": app.public_auth_url(&format!("/signin/{}", p.id)),
                "callbackUrl": app.public_auth_url(&format!("/callback/{}", p.id)),
            });
            (p.id.clone(), v)
        })
        .collect();
    web::json(StatusCode::OK, &Value::Object(map))
}

/// `{base}/jwks`: the public keys of the JWT assertion (404 without `jwt:`).
fn jwks(app: &App) -> Result<Response<Body>, Error> {
    let jwt = app.jwt.as_ref().ok_or(Error::NotFound)?;
    let mut r = Response::new(web::full(jwt.jwks()));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/jwk-set+json"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    Ok(r)
}

fn error_page(req: &Request<Incoming>) -> Response<Body> {
    let code = ErrorCode::parse(&query_param(req.uri().query(), "error").unwrap_or_default());
    let title = match code {
        ErrorCode::AccessDenied => "Access denied",
        ErrorCode::Verification => "Unable to sign in",
        ErrorCode::Configuration => "Server error",
        _ => "Sign-in error",
    };
    let page = pages::problem(
        title,
        code.message(),
        Some(&format!(
            "{}signin",
            req.uri().path().trim_end_matches("error")
        )),
        code.as_str(),
    );
    web::html(code.status(), page)
}
