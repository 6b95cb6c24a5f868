//! The HTTP surface: routing, response helpers, and the pieces every
//! handler shares (cookies, safe redirects, forwarded headers, the one
//! error-to-response mapping, the pages).

pub mod cookies;
pub mod error;
pub mod forwarded;
pub mod pages;
pub mod redirect;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

pub use error::{Error, ErrorCode};
use forwarded::ClientInfo;

use crate::state::App;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response we send.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn with_type(status: StatusCode, ctype: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut r = with_type(status, "text/html; charset=utf-8", full(page));
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self' http: https:; frame-ancestors 'none'"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    with_type(
        status,
        "application/json",
        full(serde_json::to_vec(v).unwrap_or_default()),
    )
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", full(body))
}

pub fn text_owned(status: StatusCode, body: String) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", full(body))
}

/// A 302 to a target that passed the redirect policy.
pub fn redirect(to: &redirect::SafeRedirect) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(to.as_str()) {
        r.headers_mut().insert(LOCATION, v);
    }
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Appends `Set-Cookie` values to a response.
pub fn set_cookies(r: &mut Response<Body>, cookies: impl IntoIterator<Item = String>) {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(http::header::SET_COOKIE, v);
        }
    }
}

/// The client reads HTML (a browser), not only JSON (an API client).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// Every request starts here.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let client = ClientInfo::read(
        req.headers(),
        req.uri().host(),
        peer,
        &app.config.trusted_proxies,
        app.listener_scheme(),
    );
    let path = req.uri().path();
    match path {
        "/healthz" => return text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            return if app.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            };
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix(app.config.base_path.as_str())
        && (rest.is_empty() || rest.starts_with('/'))
    {
        let rest = rest.to_string();
        return crate::authn::route(&app, req, &client, &rest).await;
    }
    match &app.proxy {
        Some(proxy) => proxy.serve(&app, req, &client).await,
        None => {
            let html = wants_html(req.headers());
            if req.method() == Method::GET && path == "/" && html {
                // Forward-auth only: the root offers the sign-in page.
                return redirect(
                    &app.redirects
                        .check_or_home(Some(&format!("{}/signin", app.config.base_path))),
                );
            }
            Error::NotFound.respond(html, &app.config.base_path)
        }
    }
}
