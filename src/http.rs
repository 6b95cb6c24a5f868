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

use crate::metrics::{Outcome, Route};

/// `/metrics` in the Prometheus text format.
pub fn metrics_response(app: &App) -> Response<Body> {
    with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        full(app.render_metrics()),
    )
}
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
    let started = std::time::Instant::now();
    let route = route_of(&app, req.uri().path());
    let method = req.method().clone();
    // Probes and scrapes are neither counted nor logged.
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics")
        && !matches!(route, Route::Proxy);
    let path = if app.config.log.requests {
        req.uri().path().to_string()
    } else {
        String::new()
    };
    let id = request_id(&app, &req, peer);
    #[cfg(feature = "otel")]
    let span = crate::otel::enabled().then(|| {
        tracing::info_span!(
            "request",
            otel.name = %format!("{method} {}", route.as_str()),
            http.request.method = %method,
            url.path = %req.uri().path(),
            http.route = route.as_str(),
            http.response.status_code = tracing::field::Empty,
            portcullis.decision = tracing::field::Empty,
            portcullis.request_id = %id,
            enduser.id = tracing::field::Empty,
        )
    });
    #[cfg(feature = "otel")]
    let mut resp = {
        use tracing::Instrument as _;
        let work = REQUEST_ID.scope(id.clone(), dispatch(&app, req, peer));
        match &span {
            Some(s) => work.instrument(s.clone()).await,
            None => work.await,
        }
    };
    #[cfg(not(feature = "otel"))]
    let mut resp = REQUEST_ID
        .scope(id.clone(), dispatch(&app, req, peer))
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    let info = resp.extensions_mut().remove::<Decided>();
    let outcome = match &info {
        Some(d) => d.outcome,
        None if resp.status().is_server_error() => Outcome::Error,
        None => Outcome::None,
    };
    let took = started.elapsed();
    #[cfg(feature = "otel")]
    if let Some(s) = &span {
        s.record("http.response.status_code", resp.status().as_u16());
        s.record("portcullis.decision", outcome.as_str());
        if let Some(u) = info.as_ref().and_then(|d| d.user.as_deref()) {
            s.record("enduser.id", u);
        }
    }
    if !probe {
        app.metrics.request(route, outcome, took);
    }
    if app.config.log.requests && !probe {
        tracing::info!(
            target: "portcullis::request",
            request_id = %id,
            method = %method,
            path,
            route = route.as_str(),
            decision = outcome.as_str(),
            status = resp.status().as_u16(),
            user = info.as_ref().and_then(|d| d.user.as_deref()).unwrap_or(""),
            latency_ms = took.as_secs_f64() * 1000.0,
            "request"
        );
    }
    resp
}

/// Set on a response by the handler that decided: the request log and
/// the metrics read it (and remove it).
#[derive(Clone, Debug)]
pub struct Decided {
    pub outcome: Outcome,
    /// The user id, when a session was involved.
    pub user: Option<String>,
}

impl Decided {
    pub fn mark(r: &mut Response<Body>, outcome: Outcome, user: Option<&str>) {
        r.extensions_mut().insert(Decided {
            outcome,
            user: user.map(str::to_owned),
        });
    }
}

pub const X_REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    /// The id of the request being answered: on its log line, its error
    /// page, the response, and the request to the upstream.
    pub static REQUEST_ID: String;
}

/// A trusted proxy's `X-Request-Id` (if sane), else a new one: a random
/// per-process prefix and a counter (no syscall per request).
fn request_id(app: &App, req: &Request<Incoming>, peer: SocketAddr) -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if forwarded::is_trusted(peer.ip(), &app.config.trusted_proxies)
        && let Some(v) = req
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return v.to_string();
    }
    let prefix = PREFIX.get_or_init(|| crate::crypto::random_token(6));
    format!("{prefix}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The current request's id, or a fresh one outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| crate::crypto::random_token(9))
}

fn route_of(app: &App, path: &str) -> Route {
    let Some(rest) = path
        .strip_prefix(app.config.base_path.as_str())
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return if app.proxy.is_some() && !matches!(path, "/healthz" | "/readyz" | "/metrics") {
            Route::Proxy
        } else {
            Route::Other
        };
    };
    match rest {
        "/forward-auth" => Route::ForwardAuth,
        "/auth-request" => Route::AuthRequest,
        "/session" => Route::Session,
        "/signout" => Route::SignOut,
        r if r.starts_with("/callback/") => Route::Callback,
        r if r == "/signin" || r.starts_with("/signin/") => Route::SignIn,
        _ => Route::Other,
    }
}

async fn dispatch(app: &Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
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
        // On the main listener only for trusted peers (loopback by default):
        // request counts are nobody else's business. Else it is the app's path.
        // The end client (after trusted hops) must itself be trusted: an
        // ingress forwarding someone else's request does not make it ours.
        "/metrics"
            if app.config.metrics.on_main_listener()
                && forwarded::is_trusted(client.client_ip, &app.config.trusted_proxies) =>
        {
            return metrics_response(app);
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix(app.config.base_path.as_str())
        && (rest.is_empty() || rest.starts_with('/'))
    {
        let rest = rest.to_string();
        return crate::authn::route(app, req, &client, &rest).await;
    }
    match &app.proxy {
        Some(proxy) => proxy.serve(app, req, &client).await,
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
