//! Forward-auth adapters: read the target from the edge proxy's headers,
//! ask [`super::evaluate`], shape the answer for the protocol.
//!
//! - `{base}/forward-auth` (Traefik `forwardAuth`, Caddy `forward_auth`):
//!   reads only `X-Forwarded-*`; 200 + identity headers; a browser without
//!   a session gets a 302 to the sign-in page with the original URL as
//!   `callbackUrl`, an API client a 401.
//! - `{base}/auth-request` (nginx `auth_request`): reads only
//!   `X-Original-URL`/`-Method`; only 200, 401 or 403; the 401 carries the
//!   sign-in URL in a header (`X-Auth-Signin` by default) for
//!   `auth_request_set` + `error_page`.
//!
//! Each endpoint reads only its own protocol's headers: Traefik and Caddy
//! pass a client's `X-Original-URL` through, so honouring it there would
//! let the client choose which URL is checked.

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Decision, Target, decide, forward_identity};
use crate::http::forwarded::{ClientInfo, EdgeProtocol, Original, has_dot_segment};
use crate::http::{self as web, Body, Decided, Error, wants_html};
use crate::metrics::Outcome;
use crate::session::Session;
use crate::state::App;

/// What the edge proxy asked about, and what we decided.
struct Checked {
    decision: Decision,
    session: Option<Session>,
    cookies: Vec<String>,
    original: Option<Original>,
}

/// Portcullis's own pages (`{base}/...` on the public origin) are always
/// reachable, so an edge that protects them too makes no redirect loop.
fn is_own_page(app: &App, url: &url::Url) -> bool {
    let public = &app.config.public_url;
    url.scheme() == public.scheme()
        && url.host_str() == public.host_str()
        && url.port_or_known_default() == public.port_or_known_default()
        && url
            .path()
            .starts_with(&format!("{}/", app.config.base_path))
}

async fn check(
    app: &App,
    req: &Request<Incoming>,
    client: &ClientInfo,
    protocol: EdgeProtocol,
) -> Result<Checked, Error> {
    let original = client.original(req.headers(), protocol);
    if original
        .as_ref()
        .is_some_and(|o| has_dot_segment(&o.raw_path))
    {
        // We would check one path and the app serve another.
        return Err(Error::BadRequest("The request path has dot segments."));
    }
    // Without a (trusted) original URL the target is unknown: "" matches
    // no public path, so the request needs a session (fail closed).
    let target = Target {
        host: original.as_ref().and_then(|o| o.url.host_str()),
        path: original.as_ref().map(|o| o.url.path()).unwrap_or(""),
        method: original
            .as_ref()
            .map(|o| o.method.as_str())
            .unwrap_or("GET"),
    };
    // Portcullis's own pages pass whoever asks: only the cookie session is
    // read (it slides); no bearer token or route policy is consulted.
    let (decision, cur) = if original.as_ref().is_some_and(|o| is_own_page(app, &o.url)) {
        let cur = crate::authn::current::current(app, req.headers(), client).await?;
        (Decision::Public, cur)
    } else {
        decide(app, req.headers(), client, &target).await?
    };
    Ok(Checked {
        decision,
        session: cur.session,
        cookies: cur.cookies,
        original,
    })
}

/// The sign-in URL on the public origin, returning to the original URL
/// when the redirect policy allows it.
fn signin_url(app: &App, original: Option<&Original>) -> String {
    let mut url = app.public_auth_url("/signin");
    if let Some(cb) = original.and_then(|o| app.redirects.check(o.url.as_str())) {
        url.push_str("?callbackUrl=");
        url.extend(url::form_urlencoded::byte_serialize(cb.as_str().as_bytes()));
    }
    url
}

/// 200 with identity headers, and the session's cookies when they changed.
/// `one_cookie`: nginx relays a single `Set-Cookie` from a subrequest
/// intact, never several (a chunked session would be torn): send none then;
/// the session slides on Portcullis's own pages.
fn allow(app: &App, checked: Checked, one_cookie: bool) -> Response<Body> {
    let mut r = Response::new(web::empty());
    if let (Some(s), Decision::Allow) = (&checked.session, checked.decision) {
        forward_identity(app, r.headers_mut(), s);
    }
    if !one_cookie || checked.cookies.len() == 1 {
        web::set_cookies(&mut r, checked.cookies);
    }
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

pub async fn forward_auth(
    app: &App,
    req: &Request<Incoming>,
    client: &ClientInfo,
) -> Response<Body> {
    let html = wants_html(req.headers());
    let checked = match check(app, req, client, EdgeProtocol::Forwarded).await {
        Ok(c) => c,
        Err(e) => return e.respond(html, &app.config.base_path),
    };
    let (outcome, user) = logged(&checked);
    let mut r = match checked.decision {
        Decision::Public | Decision::Allow => allow(app, checked, false),
        Decision::Unauthenticated if html => {
            let to = signin_url(app, checked.original.as_ref());
            // The sign-in URL is on the public origin: always allowed.
            let mut r = web::redirect(
                &app.redirects
                    .check(&to)
                    .unwrap_or_else(|| app.redirects.home()),
            );
            web::set_cookies(&mut r, checked.cookies);
            r
        }
        Decision::Unauthenticated => Error::Unauthenticated.respond(false, &app.config.base_path),
        Decision::Forbidden => Error::Forbidden.respond(html, &app.config.base_path),
    };
    Decided::mark(&mut r, outcome, user.as_deref());
    r
}

/// What the request log and metrics record for a check.
fn logged(c: &Checked) -> (Outcome, Option<String>) {
    let outcome = match c.decision {
        Decision::Allow => Outcome::Allow,
        Decision::Public => Outcome::Public,
        Decision::Unauthenticated => Outcome::Unauthenticated,
        Decision::Forbidden => Outcome::Forbidden,
    };
    (
        outcome,
        c.session.as_ref().map(|s| s.claims.user_id().to_string()),
    )
}

pub async fn auth_request(
    app: &App,
    req: &Request<Incoming>,
    client: &ClientInfo,
) -> Response<Body> {
    let checked = match check(app, req, client, EdgeProtocol::Nginx).await {
        Ok(c) => c,
        Err(e @ Error::Store(_)) => {
            // nginx turns anything but 2xx/401/403 into a 500 page; say 503
            // anyway so the log is clear, never a pass.
            return e.respond(false, &app.config.base_path);
        }
        // A refused bearer token: 401, without a sign-in URL (a machine
        // client cannot follow one).
        Err(Error::Unauthenticated) => {
            let mut r = Response::new(web::empty());
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            return r;
        }
        Err(_) => {
            let mut r = Response::new(web::empty());
            *r.status_mut() = StatusCode::FORBIDDEN;
            return r;
        }
    };
    let (outcome, user) = logged(&checked);
    let mut r = match checked.decision {
        Decision::Public | Decision::Allow => allow(app, checked, true),
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
    };
    Decided::mark(&mut r, outcome, user.as_deref());
    r
}

/// The proxy's sign-in redirect for a browser: back to `relative` (the
/// path and query it asked for) after sign-in.
pub fn signin_redirect(app: &App, relative: &str) -> crate::http::redirect::SafeRedirect {
    let mut path = format!("{}/signin?callbackUrl=", app.config.base_path);
    path.extend(url::form_urlencoded::byte_serialize(relative.as_bytes()));
    app.redirects
        .check(&path)
        .unwrap_or_else(|| app.redirects.home())
}
