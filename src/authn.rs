//! The Auth.js REST surface under the base path: the sign-in and sign-out
//! pages, the sign-in flows, and the JSON endpoints Auth.js clients call
//! (`session`, `csrf`, `providers`).
//!
//! Every state-changing POST checks the CSRF double submit first; every
//! redirect target goes through the redirect policy.

pub mod csrf;
pub mod form;

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
use crate::providers::credentials::User;
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
    let result = match rest {
        "" | "/" | "/signin" if is_read => Ok(signin_page(app, &req)),
        "/signout" if is_read => Ok(signout_page(app, &req)),
        "/signout" if m == Method::POST => signout(app, req, client).await,
        "/session" if is_read => Ok(session(app, req.headers(), client)),
        "/session" if m == Method::POST => session_update(app, req, client).await,
        "/csrf" if is_read => Ok(csrf_json(app, req.headers())),
        "/providers" if is_read => Ok(providers(app)),
        "/error" if is_read => Ok(error_page(&req)),
        "/verify-request" if is_read => Ok(web::html(
            StatusCode::OK,
            pages::layout(
                "Check your e-mail",
                "<h1>Check your e-mail</h1><p>A sign-in link has been sent to your e-mail address.</p>",
            ),
        )),
        "/forward-auth" => Ok(forward::forward_auth(app, &req, client)),
        "/auth-request" => Ok(forward::auth_request(app, &req, client)),
        r => match (r.strip_prefix("/signin/"), r.strip_prefix("/callback/")) {
            (Some(provider), _) if m == Method::POST => sign_in(app, req, client, provider).await,
            (_, Some(provider)) if m == Method::POST || m == Method::GET => {
                sign_in(app, req, client, provider).await
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
fn go(headers: &HeaderMap, to: &SafeRedirect) -> Response<Body> {
    if headers.contains_key("x-auth-return-redirect") {
        web::json(StatusCode::OK, &json!({ "url": to.as_str() }))
    } else {
        web::redirect(to)
    }
}

/// Where a sign-in error sends the browser, as Auth.js does: sign-in
/// errors back to the sign-in page, others to the error page.
fn error_target(app: &App, code: ErrorCode, callback: &SafeRedirect) -> SafeRedirect {
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

fn signin_page(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let q = req.uri().query();
    let callback = app
        .redirects
        .check_or_home(query_param(q, "callbackUrl").as_deref());
    let error = query_param(q, "error").map(|e| ErrorCode::parse(&e).message());
    let (token, cookie) = app.csrf.token(req.headers());
    let base = &app.config.base_path;
    let actions: Vec<(String, &str)> = app
        .config
        .providers
        .iter()
        .map(|p| (format!("{base}/callback/{}", p.id), p.name.as_str()))
        .collect();
    let entries = actions
        .iter()
        .zip(&app.config.providers)
        .map(|((action, name), p)| match p.kind {
            ProviderKind::Credentials(_) => SigninEntry::Credentials { action, name },
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
    r
}

/// `POST {base}/signin/{provider}` and `{base}/callback/{provider}`.
async fn sign_in(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &ClientInfo,
    provider: &str,
) -> Result<Response<Body>, Error> {
    let Some(p) = app.config.providers.iter().find(|p| p.id == provider) else {
        return Err(Error::NotFound);
    };
    let ProviderKind::Credentials(creds) = &p.kind;
    if req.method() != Method::POST {
        return Err(Error::MethodNotAllowed);
    }
    let (parts, body) = req.into_parts();
    let form = Form::read(&parts.headers, body, app.config.limits.max_form_bytes).await?;
    let callback = app.redirects.check_or_home(form.get("callbackUrl"));
    if !app.csrf.verify(&parts.headers, form.get("csrfToken")) {
        tracing::info!(provider, client_ip = %client.client_ip, "sign-in refused: CSRF token missing or wrong");
        return Ok(go(
            &parts.headers,
            &error_target(app, ErrorCode::MissingCsrf, &callback),
        ));
    }
    let email = form
        .get("email")
        .or_else(|| form.get("username"))
        .unwrap_or("")
        .to_string();
    let password = form.get("password").unwrap_or("").to_string();
    let user = check_password(app, creds.clone(), email, password).await?;
    let Some(user) = user else {
        tracing::info!(provider, client_ip = %client.client_ip, "sign-in failed: CredentialsSignin");
        return Ok(go(
            &parts.headers,
            &error_target(app, ErrorCode::CredentialsSignin, &callback),
        ));
    };
    let mut claims = claims_for(&user, &p.id);
    if !authz::allowed(&app.config.access, &claims) {
        tracing::info!(provider, user = %user.email, "sign-in refused by access rules: AccessDenied");
        return Ok(go(
            &parts.headers,
            &error_target(app, ErrorCode::AccessDenied, &callback),
        ));
    }
    tracing::info!(provider, user = %user.email, client_ip = %client.client_ip, "signed in");
    let seen = app.sessions.load(&parts.headers).chunks;
    let cookies = app
        .sessions
        .issue(&mut claims, seen, app.cookie_domain(client));
    let mut r = go(&parts.headers, &callback);
    web::set_cookies(&mut r, cookies);
    Ok(r)
}

/// Runs argon2 off the async threads, a bounded number at a time.
async fn check_password(
    app: &App,
    creds: crate::providers::credentials::Credentials,
    email: String,
    password: String,
) -> Result<Option<User>, Error> {
    if email.len() > 320 || password.len() > 1024 {
        return Ok(None);
    }
    let _permit = app
        .password_checks
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || creds.verify(&email, &password))
        .await
        .map_err(|e| Error::Internal(format!("password check task: {e}")))
}

fn claims_for(user: &User, provider: &str) -> Claims {
    Claims {
        name: user.name.clone(),
        email: Some(user.email.clone()),
        picture: user.image.clone(),
        sub: Some(user.email.clone()),
        groups: user.groups.clone(),
        provider: Some(provider.to_string()),
        ..Claims::default()
    }
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
    let (parts, body) = req.into_parts();
    let form = Form::read(&parts.headers, body, app.config.limits.max_form_bytes).await?;
    let callback = app.redirects.check_or_home(form.get("callbackUrl"));
    if !app.csrf.verify(&parts.headers, form.get("csrfToken")) {
        return Ok(go(
            &parts.headers,
            &error_target(app, ErrorCode::MissingCsrf, &callback),
        ));
    }
    let loaded = app.sessions.load(&parts.headers);
    if let Some(s) = &loaded.session {
        tracing::info!(user = %s.claims.user_id(), "signed out");
    }
    let mut r = go(&parts.headers, &callback);
    web::set_cookies(
        &mut r,
        app.sessions.clear(loaded.chunks, app.cookie_domain(client)),
    );
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

fn session(app: &App, headers: &HeaderMap, client: &ClientInfo) -> Response<Body> {
    let loaded = app.sessions.load(headers);
    let Some(mut s) = loaded.session else {
        let mut r = web::json(StatusCode::OK, &Value::Null);
        if loaded.present {
            // A cookie that no longer opens: clear it.
            web::set_cookies(
                &mut r,
                app.sessions.clear(loaded.chunks, app.cookie_domain(client)),
            );
        }
        return r;
    };
    let cookies = s.needs_refresh.then(|| {
        app.sessions
            .issue(&mut s.claims, loaded.chunks, app.cookie_domain(client))
    });
    let mut r = web::json(StatusCode::OK, &session_json(&s.claims));
    web::set_cookies(&mut r, cookies.into_iter().flatten());
    r
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
    let loaded = app.sessions.load(&parts.headers);
    let Some(mut s) = loaded.session else {
        return Ok(web::json(StatusCode::OK, &Value::Null));
    };
    let cookies = app
        .sessions
        .issue(&mut s.claims, loaded.chunks, app.cookie_domain(client));
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
