//! Forward-auth adapters: read the target from the edge proxy's headers,
//! ask [`super::evaluate`], shape the answer for the protocol.
//!
//! - `{base}/forward-auth` (Traefik `forwardAuth`, Caddy `forward_auth`):
//!   200 + identity headers; a browser without a session gets a 302 to the
//!   sign-in page with the original URL as `callbackUrl`, an API client a 401.
//! - `{base}/auth-request` (nginx `auth_request`): only 200, 401 or 403;
//!   the 401 carries the sign-in URL in a header (`X-Auth-Signin` by
//!   default) for `auth_request_set` + `error_page`.

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Decision, Target, evaluate};
use crate::http::forwarded::ClientInfo;
use crate::http::redirect::SafeRedirect;
use crate::http::{self as web, Body, Error, wants_html};
use crate::session::Session;
use crate::state::App;

/// What the edge proxy asked about, and what we decided.
struct Checked {
    decision: Decision,
    session: Option<Session>,
    chunks: usize,
    original: Option<url::Url>,
}

fn check(app: &App, req: &Request<Incoming>, client: &ClientInfo) -> Checked {
    let original = client.original_url(req.headers());
    let method = client.original_method(req.headers()).unwrap_or("GET");
    // Without a (trusted) original URL the target is unknown: "" matches
    // no public path, so the request needs a session (fail closed).
    let path = original.as_ref().map(|u| u.path()).unwrap_or("");
    let loaded = app.sessions.load(req.headers());
    // The sign-in surface itself is always reachable: no redirect loop
    // when an edge proxy protects Portcullis's own paths too.
    let own = original.as_ref().is_some_and(|u| {
        u.host_str() == app.config.public_url.host_str()
            && (u.path() == app.config.base_path
                || u.path().starts_with(&format!("{}/", app.config.base_path)))
    });
    let target = Target {
        host: original.as_ref().and_then(|u| u.host_str()),
        path,
        method,
    };
    let decision = if own {
        Decision::Public
    } else {
        evaluate(
            &app.config.access,
            loaded.session.as_ref().map(|s| &s.claims),
            &target,
        )
    };
    Checked {
        decision,
        session: loaded.session,
        chunks: loaded.chunks,
        original,
    }
}

/// The sign-in URL on the public origin, returning to `original` when the
/// redirect policy allows it.
fn signin_url(app: &App, original: Option<&url::Url>) -> String {
    let mut url = app.public_auth_url("/signin");
    if let Some(cb) = original.and_then(|u| app.redirects.check(u.as_str())) {
        url.push_str("?callbackUrl=");
        url.extend(url::form_urlencoded::byte_serialize(cb.as_str().as_bytes()));
    }
    url
}

/// 200 with identity headers, and the refreshed cookie when it slid.
fn allow(app: &App, client: &ClientInfo, checked: Checked) -> Response<Body> {
    let mut r = Response::new(web::empty());
    if let Some(mut s) = checked.session
        && checked.decision == Decision::Allow
    {
        app.identity.set(r.headers_mut(), &s.claims);
        if s.needs_refresh {
            let cookies =
                app.sessions
                    .issue(&mut s.claims, checked.chunks, app.cookie_domain(client));
            web::set_cookies(&mut r, cookies);
        }
    }
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

pub fn forward_auth(app: &App, req: &Request<Incoming>, client: &ClientInfo) -> Response<Body> {
    let checked = check(app, req, client);
    let html = wants_html(req.headers());
    match checked.decision {
        Decision::Public | Decision::Allow => allow(app, client, checked),
        Decision::Unauthenticated if html => {
            let to = signin_url(app, checked.original.as_ref());
            // The sign-in URL is on the public origin: always allowed.
            web::redirect(
                &app.redirects
                    .check(&to)
                    .unwrap_or_else(|| app.redirects.home()),
            )
        }
        Decision::Unauthenticated => Error::Unauthenticated.respond(false, &app.config.base_path),
        Decision::Forbidden => Error::Forbidden.respond(html, &app.config.base_path),
    }
}

pub fn auth_request(app: &App, req: &Request<Incoming>, client: &ClientInfo) -> Response<Body> {
    let checked = check(app, req, client);
    match checked.decision {
        Decision::Public | Decision::Allow => allow(app, client, checked),
        Decision::Unauthenticated => {
            let to = signin_url(app, checked.original.as_ref());
            let mut r = Response::new(web::empty());
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut()
                    .insert(app.config.headers.signin_url.clone(), v);
            }
            r
        }
        Decision::Forbidden => {
            let mut r = Response::new(web::empty());
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        }
    }
}

/// The proxy's sign-in redirect for a browser: back to `relative` (the
/// path and query it asked for) after sign-in.
pub fn signin_redirect(app: &App, relative: &str) -> SafeRedirect {
    let mut path = format!("{}/signin?callbackUrl=", app.config.base_path);
    path.extend(url::form_urlencoded::byte_serialize(relative.as_bytes()));
    app.redirects
        .check(&path)
        .unwrap_or_else(|| app.redirects.home())
}
