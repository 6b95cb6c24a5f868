//! The reverse proxy: a pool of upstream connections ([`upstream`]),
//! requests and responses streamed through, hop-by-hop headers removed,
//! `X-Forwarded-*` set, identity headers stripped then set, WebSocket
//! upgrades passed through.
//!
//! Only requests [`crate::authz::evaluate`] lets through reach the upstream.

mod upstream;

use std::time::Duration;

use http::header::{CONNECTION, COOKIE, HOST, SET_COOKIE, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use url::Url;

use crate::authz::{Decision, Target, decide, forward, forward_identity};
use crate::http::cookies;
use crate::http::forwarded::{
    ClientInfo, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, has_dot_segment,
};
use crate::http::{self as web, Body, Decided, Error, wants_html};
use crate::metrics::Outcome;
use crate::state::App;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded. Names, not
/// strings: a string is parsed into a name on every lookup.
static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
];

pub struct Proxy {
    upstream: upstream::Upstream,
    /// The upstream's `host[:port]`: the `Host` of a request that had none.
    authority: HeaderValue,
    /// The upstream URL's path, without a trailing `/` (`""` for root).
    prefix: String,
    timeout: Duration,
}

impl Proxy {
    pub fn new(
        url: Url,
        ca_file: Option<&std::path::Path>,
        identity: Option<(&std::path::Path, &std::path::Path)>,
        connect_timeout: Duration,
        timeout: Duration,
        workers: usize,
    ) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(ca_file, identity)?)
            .https_or_http()
            .enable_http1()
            .build();
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|e| format!("upstream URL: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err("upstream URL needs a scheme and host".into());
        };
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("upstream URL: {e}"))?;
        Ok(Proxy {
            upstream: upstream::Upstream::new(https, origin, workers),
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|e| format!("upstream URL: {e}"))?,
            prefix: url.path().trim_end_matches('/').to_string(),
            timeout,
        })
    }

    /// Checks the session, then forwards or answers with sign-in/denial.
    pub async fn serve(
        &self,
        app: &App,
        mut req: Request<Incoming>,
        client: &ClientInfo,
    ) -> Response<Body> {
        // Dot segments (`/public/../admin`, `/%2e%2e/`) would let a public
        // prefix vouch for another path once the app normalises it.
        if has_dot_segment(req.uri().path()) {
            return Error::BadRequest("The request path has dot segments.")
                .respond(wants_html(req.headers()), &app.config.base_path);
        }
        let html = wants_html(req.headers());
        let target = Target {
            host: client.hostname(),
            path: req.uri().path(),
            method: req.method().as_str(),
        };
        let (decision, cur) = match decide(app, req.headers(), client, &target).await {
            Ok(d) => d,
            Err(e) => return e.respond(html, &app.config.base_path),
        };
        match decision {
            Decision::Unauthenticated
                if html
                    && (req.method() == http::Method::GET
                        || req.method() == http::Method::HEAD) =>
            {
                let back = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let mut r = web::redirect(&forward::signin_redirect(app, back));
                web::set_cookies(&mut r, cur.cookies);
                Decided::mark(&mut r, Outcome::Unauthenticated, None);
                return r;
            }
            Decision::Unauthenticated => {
                let mut r = Error::Unauthenticated.respond(html, &app.config.base_path);
                web::set_cookies(&mut r, cur.cookies);
                Decided::mark(&mut r, Outcome::Unauthenticated, None);
                return r;
            }
            Decision::Forbidden => {
                let mut r = Error::Forbidden.respond(html, &app.config.base_path);
                Decided::mark(
                    &mut r,
                    Outcome::Forbidden,
                    cur.session.as_ref().map(|s| s.claims.user_id()),
                );
                return r;
            }
            Decision::Public | Decision::Allow => {}
        }
        let user = match (decision, &cur.session) {
            (Decision::Allow, Some(s)) => Some(s.claims.user_id().to_string()),
            _ => None,
        };
        let headers = req.headers_mut();
        app.identity.strip(headers);
        if let (Decision::Allow, Some(s)) = (decision, &cur.session) {
            // An API token was for us: the upstream gets the identity token.
            if s.via == crate::session::Via::ApiToken {
                headers.remove(http::header::AUTHORIZATION);
            }
            forward_identity(app, headers, s);
        }
        if !app.config.headers.pass_cookies {
            strip_our_cookies(headers, &app.names);
        }
        let mut resp = match self.forward(req, client, &app.names).await {
            Ok(r) => r,
            Err(e) => {
                let counter = if matches!(e, Error::UpstreamTimeout) {
                    &app.metrics.upstream_timeouts
                } else {
                    &app.metrics.upstream_errors
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                e.respond(html, &app.config.base_path)
            }
        };
        web::set_cookies(&mut resp, cur.cookies);
        let outcome = if decision == Decision::Allow {
            Outcome::Allow
        } else {
            Outcome::Public
        };
        Decided::mark(&mut resp, outcome, user.as_deref());
        resp
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        client: &ClientInfo,
        names: &cookies::CookieNames,
    ) -> Result<Response<Body>, Error> {
        let upgrade = upgrade_protocol(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        // The client's own host (HTTP/2's `:authority`), else the upstream's.
        let host = req
            .headers()
            .get(HOST)
            .cloned()
            .or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            })
            .unwrap_or_else(|| self.authority.clone());
        *req.uri_mut() = self.upstream_uri(req.uri())?;
        *req.version_mut() = Version::HTTP_11;
        let h = req.headers_mut();
        remove_hop_by_hop(h);
        h.insert(HOST, host);
        set_forwarded(h, client);
        if let Ok(v) = HeaderValue::from_str(&web::current_request_id()) {
            h.insert(web::X_REQUEST_ID, v);
        }
        if let Some(proto) = &upgrade {
            h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(UPGRADE, proto.clone());
        }
        let Some(client_upgrade) = client_upgrade else {
            let resp = timed(tokio::time::timeout(self.timeout, self.upstream.send(req)).await)?;
            return Ok(from_upstream(resp, names));
        };
        let sent = tokio::time::timeout(self.timeout, self.upstream.send_upgrade(req));
        let mut resp = timed(sent.await)?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) else {
                    return;
                };
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, web::empty()));
        }
        Ok(from_upstream(resp, names))
    }

    /// The request target for the upstream, in origin form (`/path?query`),
    /// under the upstream URL's path.
    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, Error> {
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let pq = if self.prefix.is_empty() {
            pq.to_string()
        } else {
            format!("{}{pq}", self.prefix)
        };
        Uri::builder()
            .path_and_query(pq)
            .build()
            .map_err(|_| Error::BadRequest("The request path is not valid."))
    }
}

/// The upstream's response head, or why there is none: `sent` was bounded
/// by `upstream.timeout`. (Not an async wrapper around the timeout: that
/// future would hold the request's future twice, as its argument and
/// inside the timeout, and be moved at twice the size.)
fn timed<T>(
    sent: Result<Result<T, upstream::SendError>, tokio::time::error::Elapsed>,
) -> Result<T, Error> {
    match sent {
        Err(_) => Err(Error::UpstreamTimeout),
        Ok(Err(e)) => Err(Error::UpstreamUnreachable(e.to_string())),
        Ok(Ok(r)) => Ok(r),
    }
}

/// An upstream response as the client gets it: without hop-by-hop headers
/// or the upstream's attempts at Portcullis's cookies.
fn from_upstream<B>(mut resp: Response<B>, names: &cookies::CookieNames) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes, Error = hyper::Error> + Send + 'static,
{
    remove_hop_by_hop(resp.headers_mut());
    strip_our_set_cookies(resp.headers_mut(), names);
    resp.map(|b| b.map_err(|e| Box::new(e) as web::BoxError).boxed_unsync())
}

/// The protocol of an HTTP/1.1 upgrade request (`Upgrade: websocket`).
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let conn_upgrade = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    conn_upgrade
        .then(|| req.headers().get(UPGRADE).cloned())
        .flatten()
}

/// Removes hop-by-hop headers and those the `Connection` header names.
fn remove_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    h.remove(UPGRADE);
}

/// `X-Forwarded-For` appends the client (kept only from trusted peers);
/// `-Proto` and `-Host` say what the client used.
fn set_forwarded(h: &mut HeaderMap, client: &ClientInfo) {
    let prior = if client.trusted {
        h.get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let peer = client.peer.ip().to_string();
    let xff = if prior.is_empty() {
        peer
    } else {
        format!("{prior}, {peer}")
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.scheme));
    match client
        .host
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        Some(v) => h.insert(X_FORWARDED_HOST, v),
        None => h.remove(X_FORWARDED_HOST),
    };
    h.remove("forwarded");
}

/// The upstream may not set (or clear) Portcullis's cookies.
fn strip_our_set_cookies(h: &mut HeaderMap, names: &cookies::CookieNames) {
    if !h.contains_key(SET_COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = h
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v
                .to_str()
                .ok()
                .and_then(|s| s.split('=').next())
                .map(str::trim)
                .unwrap_or("");
            !names.is_ours(name)
        })
        .cloned()
        .collect();
    h.remove(SET_COOKIE);
    for v in kept {
        h.append(SET_COOKIE, v);
    }
}

/// Removes Portcullis's cookies from the `Cookie` header(s), keeping the rest.
fn strip_our_cookies(h: &mut HeaderMap, names: &cookies::CookieNames) {
    if !h.contains_key(COOKIE) {
        return;
    }
    let rebuilt: Vec<String> = h
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter(|p| !names.is_ours(p.split_once('=').map(|(n, _)| n.trim()).unwrap_or(p)))
        .map(str::to_owned)
        .collect();
    h.remove(COOKIE);
    if !rebuilt.is_empty()
        && let Ok(v) = HeaderValue::from_str(&rebuilt.join("; "))
    {
        h.insert(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CookieConfig;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-app"));
    }

    #[test]
    fn only_our_cookies_are_stripped() {
        let names = cookies::CookieNames::new(&CookieConfig::default());
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("app=1; authjs.session-token=abc; authjs.csrf-token=x"),
        );
        h.append(
            COOKIE,
            HeaderValue::from_static("authjs.session-token.0=a; theme=dark"),
        );
        strip_our_cookies(&mut h, &names);
        assert_eq!(h.get(COOKIE).unwrap(), "app=1; theme=dark");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(COOKIE, HeaderValue::from_static("authjs.session-token=abc"));
        strip_our_cookies(&mut only_ours, &names);
        assert!(only_ours.get(COOKIE).is_none());
    }
}
