//! Outbound calls to identity providers: the pooled hyper client with
//! rustls, a total time limit per call, a cap on response bodies, and no
//! redirect following (an IdP endpoint that redirects is an error, never a
//! hop to wherever it points: SSRF).

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Responses larger than this are refused (discovery, JWKS, tokens).
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("{url}: no answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("{url}: answered {status}")]
    Status {
        url: String,
        status: StatusCode,
        body: Value,
    },
    #[error("{url}: {why}")]
    Invalid { url: String, why: String },
}

impl OutboundError {
    /// The provider could not be reached or did not answer in time (vs. it
    /// answered something we refuse).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            OutboundError::Timeout { .. } | OutboundError::Unreachable { .. }
        )
    }
}

#[derive(Clone)]
pub struct Outbound {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    /// Call latency and failures, for `/metrics`.
    pub stats: std::sync::Arc<crate::metrics::Dependency>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outbound(timeout {:?})", self.timeout)
    }
}

/// How to authenticate a token request.
pub enum ClientAuth<'a> {
    /// `client_secret_basic` (RFC 6749 §2.3.1: form-encode, then base64).
    Basic { id: &'a str, secret: &'a str },
    /// `client_secret_post`: the caller puts both in the form.
    InBody,
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Outbound {
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(ca_file, None)?)
            .https_or_http()
            .enable_http1()
            .build();
        // Idle connections are dropped before the shortest keep-alive of
        // common IdP servers (Node's 5 s): a request reusing a connection
        // the server is closing fails with a reset, and for a token refresh
        // that may be a rotated refresh token lost.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(4))
            .build(https);
        Ok(Outbound {
            client,
            timeout,
            stats: Default::default(),
        })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Value, OutboundError> {
        let started = std::time::Instant::now();
        let result = self.send_once(req).await;
        self.stats.record(started, &result);
        result
    }

    async fn send_once(&self, req: Request<Full<Bytes>>) -> Result<Value, OutboundError> {
        let url = req.uri().to_string();
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| OutboundError::Unreachable {
                    url: url.clone(),
                    why: chain(&e),
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| OutboundError::Invalid {
                    url: url.clone(),
                    why: format!("reading the body: {e}"),
                })?
                .to_bytes();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if !status.is_success() {
                return Err(OutboundError::Status {
                    url: url.clone(),
                    status,
                    body: json,
                });
            }
            if json.is_null() {
                return Err(OutboundError::Invalid {
                    url: url.clone(),
                    why: "the answer is not JSON".into(),
                });
            }
            Ok(json)
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(OutboundError::Timeout {
                    url: url.clone(),
                    secs: self.timeout.as_secs(),
                })
            })
    }

    /// GET a JSON document, with a bearer token when given.
    pub async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, OutboundError> {
        let mut b = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "portcullis");
        if let Some(t) = bearer {
            b = b.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = b
            .body(Full::default())
            .map_err(|e| OutboundError::Invalid {
                url: url.into(),
                why: e.to_string(),
            })?;
        self.send(req).await
    }

    /// POST a form (token endpoint), authenticating the client as asked.
    pub async fn post_form(
        &self,
        url: &str,
        fields: &[(&str, &str)],
        auth: ClientAuth<'_>,
    ) -> Result<Value, OutboundError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(USER_AGENT, "portcullis");
        if let ClientAuth::Basic { id, secret } = auth {
            let creds = STANDARD.encode(format!("{}:{}", form_encode(id), form_encode(secret)));
            b = b.header(AUTHORIZATION, format!("Basic {creds}"));
        }
        let req = b
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| OutboundError::Invalid {
                url: url.into(),
                why: e.to_string(),
            })?;
        self.send(req).await
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// A bare request/response client on the same stack (rustls, time
/// limit, body cap, no redirects), for exporters that bring their own
/// request (OTLP).
#[derive(Clone, Debug)]
pub struct RawClient(Outbound);

impl RawClient {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        Outbound::new(None, timeout).map(RawClient)
    }

    pub async fn send(
        &self,
        req: Request<Bytes>,
    ) -> Result<http::Response<Bytes>, Box<dyn std::error::Error + Send + Sync>> {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Full::new(body));
        let fut = async {
            let resp = self.0.client.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY).collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http::Response::from_parts(
                parts, body,
            ))
        };
        tokio::time::timeout(self.0.timeout, fut)
            .await
            .map_err(|_| "timed out")?
    }
}
