//! An in-process fake OpenID provider for the tokens a certified one will
//! not produce: wrong keys, wrong audiences, `alg: none`, replayed nonces,
//! slow or broken endpoints. Every answer is shaped by a [`Scenario`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "portcullis";
pub const CLIENT_SECRET: &str = "fake-idp-client-secret-0123456789abcdef";

/// How the next ID token is made (claims are edited after the good ones are set).
#[derive(Clone)]
pub enum Scenario {
    Good,
    /// Signed by a key not in the JWKS, under a kid that is.
    WrongKey,
    Claim(&'static str, Value),
    RemoveClaim(&'static str),
    AlgNone,
    /// HS256 keyed with the client secret (algorithm confusion).
    Hs256WithClientSecret,
    /// Hand out this exact token (e.g. one from an earlier sign-in).
    Fixed(String),
    /// Sign with a new key under a new kid, published in the JWKS.
    RotatedKey,
    /// The token endpoint answers this late.
    SlowToken(Duration),
}

/// How [`FakeIdp::bearer`] signs.
#[derive(Clone, Copy, Debug)]
pub enum Forge {
    /// With the published key: a valid signature.
    None,
    /// With a key not in the JWKS, under a kid that is.
    WrongKey,
    /// With a key not in the JWKS, under a kid that is not either.
    UnknownKid,
    AlgNone,
    Hs256WithPublicKey,
}

struct Key {
    kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    fn new(kid: &str) -> Self {
        Key {
            kid: kid.into(),
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }
    fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
    }
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }
}

/// What the authorization endpoint was asked for one flow.
#[derive(Clone, Debug)]
struct Pending {
    nonce: String,
    challenge: String,
}

pub struct State {
    pub issuer: String,
    keys: Vec<Key>,
    pub scenario: Scenario,
    pending: HashMap<String, Pending>,
    /// Every ID token handed out, in order.
    pub issued: Vec<String>,
    pub user: Value,
    /// Claims only userinfo answers (never in the ID token).
    pub userinfo_only: Value,
    pub token_calls: usize,
    /// Requests by path.
    pub calls: HashMap<String, usize>,
    /// Filler bytes added to the JSON answer of a path.
    pub pad: HashMap<String, usize>,
}

pub struct FakeIdp {
    pub addr: SocketAddr,
    pub issuer: String,
    pub state: Arc<Mutex<State>>,
    /// The plain HTTP twin of a TLS IdP.
    plain: Option<SocketAddr>,
}

/// Serves the IdP on `listener` (behind TLS when given), in the background.
fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    st: Arc<Mutex<State>>,
) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let st = st.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, st.clone()));
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
}

impl FakeIdp {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, None).await
    }

    /// On a port chosen beforehand (e.g. one Portcullis was already told);
    /// `None` if the port is taken.
    pub async fn start_at(port: u16) -> Option<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.ok()?;
        Some(Self::serve(listener, None).await)
    }

    /// Behind TLS with `cert`/`key` (PEM files): the issuer is
    /// `https://127.0.0.1:<port>`. The browser's leg (the authorization
    /// endpoint) is also served over plain HTTP at [`Self::plain_url`].
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
        )
        .await
    }

    async fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let issuer = format!("{scheme}://{addr}");
        let state = Arc::new(Mutex::new(State {
            issuer: issuer.clone(),
            keys: vec![Key::new("k1")],
            scenario: Scenario::Good,
            pending: HashMap::new(),
            issued: Vec::new(),
            user: json!({"sub": "user-1", "email": "fay@example.com", "email_verified": true, "name": "Fay Kidd", "groups": ["staff"]}),
            userinfo_only: json!({}),
            token_calls: 0,
            calls: HashMap::new(),
            pad: HashMap::new(),
        }));
        let plain = if tls.is_some() {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let plain = l.local_addr().unwrap();
            accept_loop(l, None, state.clone());
            Some(plain)
        } else {
            None
        };
        accept_loop(listener, tls, state.clone());
        FakeIdp {
            addr,
            issuer,
            state,
            plain,
        }
    }

    /// Where a browser reaches the IdP: the issuer, or for a TLS IdP its
    /// plain HTTP twin (the test client speaks plain HTTP only).
    pub fn plain_url(&self) -> String {
        match self.plain {
            Some(a) => format!("http://{a}"),
            None => self.issuer.clone(),
        }
    }

    /// Claims that userinfo answers on top of the user's, and that the ID
    /// token never carries.
    pub fn set_userinfo_only(&self, claims: Value) {
        self.state.lock().unwrap().userinfo_only = claims;
    }

    /// Requests so far to `path` (`/.well-known/openid-configuration`,
    /// `/jwks`, `/userinfo`, `/token`, ...).
    pub fn calls(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Pads the JSON answer of `path` with `bytes` of filler (0: none).
    pub fn pad(&self, path: &str, bytes: usize) {
        self.state
            .lock()
            .unwrap()
            .pad
            .insert(path.to_string(), bytes);
    }

    pub fn set(&self, s: Scenario) {
        self.state.lock().unwrap().scenario = s;
    }

    pub fn set_user(&self, user: Value) {
        self.state.lock().unwrap().user = user;
    }

    pub fn issued(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }

    /// A back-channel logout token for `sub`, signed with the published
    /// key (`forge`: with a key the IdP does not publish); `edit` changes
    /// the claims before signing.
    pub fn logout_token(&self, sub: &str, forge: bool, edit: impl FnOnce(&mut Value)) -> String {
        let s = self.state.lock().unwrap();
        let t = now();
        let mut claims = json!({
            "iss": s.issuer, "aud": CLIENT_ID, "iat": t, "exp": t + 120, "jti": format!("jti-{t}-{sub}"), "sub": sub,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        });
        edit(&mut claims);
        let header = json!({"alg": "ES256", "kid": "k1", "typ": "logout+jwt"});
        if forge {
            Key::new("k1").sign(&header, &claims)
        } else {
            s.keys[0].sign(&header, &claims)
        }
    }

    /// A JWT for `Authorization: Bearer`: the user's claims with `iss`,
    /// `aud` (the client), `iat`, `exp` (+300 s), signed as `forge` says;
    /// `edit` changes the header and the claims before signing.
    pub fn bearer(&self, forge: Forge, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let s = self.state.lock().unwrap();
        let t = now();
        let mut claims = s.user.clone();
        claims["iss"] = json!(s.issuer);
        claims["aud"] = json!(CLIENT_ID);
        claims["iat"] = json!(t);
        claims["exp"] = json!(t + 300);
        let mut header = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        match forge {
            Forge::AlgNone => header = json!({"alg": "none"}),
            Forge::Hs256WithPublicKey => header = json!({"alg": "HS256", "kid": "k1"}),
            Forge::UnknownKid => header["kid"] = json!("k-unknown"),
            _ => {}
        }
        edit(&mut header, &mut claims);
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        match forge {
            Forge::None => s.keys[0].sign(&header, &claims),
            Forge::WrongKey | Forge::UnknownKid => Key::new("k1").sign(&header, &claims),
            Forge::AlgNone => format!("{input}."),
            Forge::Hs256WithPublicKey => {
                // Algorithm confusion: the MAC keyed with what a verifier
                // that trusts the header would use, the public key (as its
                // JWK text and as its raw point: both are public).
                use hmac::{KeyInit, Mac};
                let jwk = s.keys[0].jwk().to_string();
                let mut mac =
                    <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(jwk.as_bytes()).unwrap();
                mac.update(input.as_bytes());
                format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
            }
        }
    }

    pub fn token_calls(&self) -> usize {
        self.state.lock().unwrap().token_calls
    }

    /// A provider block for the Portcullis config.
    pub fn provider_yaml(&self, extra: &str) -> String {
        format!(
            "  - type: oidc\n    id: fake\n    name: Fake IdP\n    issuer: {}\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    timeout: 2s\n    scopes: [openid, email, profile]\n{extra}",
            self.issuer
        )
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let (issuer, pad) = {
        let mut s = st.lock().unwrap();
        *s.calls.entry(path.clone()).or_default() += 1;
        (s.issuer.clone(), s.pad.get(&path).copied().unwrap_or(0))
    };
    let padded = |mut v: Value| {
        if pad > 0 {
            v["x_padding"] = json!("p".repeat(pad));
        }
        v
    };
    let r = match path.as_str() {
        "/.well-known/openid-configuration" => reply(
            StatusCode::OK,
            padded(json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "userinfo_endpoint": format!("{issuer}/userinfo"),
                "jwks_uri": format!("{issuer}/jwks"),
                "end_session_endpoint": format!("{issuer}/logout"),
                "id_token_signing_alg_values_supported": ["ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            })),
        ),
        "/jwks" => {
            let s = st.lock().unwrap();
            reply(
                StatusCode::OK,
                padded(json!({"keys": s.keys.iter().map(Key::jwk).collect::<Vec<_>>()})),
            )
        }
        "/authorize" => {
            let state = query.get("state").cloned().unwrap_or_default();
            let code = format!("code-{}", B64.encode(Sha256::digest(state.as_bytes())));
            st.lock().unwrap().pending.insert(
                code.clone(),
                Pending {
                    nonce: query.get("nonce").cloned().unwrap_or_default(),
                    challenge: query.get("code_challenge").cloned().unwrap_or_default(),
                },
            );
            let to = format!(
                "{}?code={code}&state={}",
                query.get("redirect_uri").cloned().unwrap_or_default(),
                url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
            );
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::FOUND;
            r.headers_mut().insert("location", to.parse().unwrap());
            r
        }
        "/token" => {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            token(&st, &form, &auth).await
        }
        "/userinfo" => {
            let s = st.lock().unwrap();
            let mut user = s.user.clone();
            if let (Some(u), Some(only)) = (user.as_object_mut(), s.userinfo_only.as_object()) {
                for (k, v) in only {
                    u.insert(k.clone(), v.clone());
                }
            }
            reply(StatusCode::OK, user)
        }
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    };
    Ok(r)
}

async fn token(
    st: &Arc<Mutex<State>>,
    form: &HashMap<String, String>,
    auth: &str,
) -> Response<Full<Bytes>> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if auth != expected {
        return reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
    }
    let scenario = {
        let mut s = st.lock().unwrap();
        s.token_calls += 1;
        s.scenario.clone()
    };
    if let Scenario::SlowToken(d) = &scenario {
        tokio::time::sleep(*d).await;
    }
    let mut s = st.lock().unwrap();
    let Some(p) = s
        .pending
        .remove(form.get("code").map(String::as_str).unwrap_or(""))
    else {
        return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
    };
    // PKCE (RFC 7636 §4.6): the verifier must hash to the challenge.
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if B64.encode(Sha256::digest(verifier.as_bytes())) != p.challenge {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "PKCE"}),
        );
    }
    let mut claims = s.user.clone();
    let t = now();
    claims["iss"] = json!(s.issuer);
    claims["aud"] = json!(CLIENT_ID);
    claims["iat"] = json!(t);
    claims["exp"] = json!(t + 300);
    claims["nonce"] = json!(p.nonce);
    let header = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
    let id_token = match scenario {
        Scenario::Good | Scenario::SlowToken(_) => s.keys[0].sign(&header, &claims),
        Scenario::WrongKey => Key::new("k1").sign(&header, &claims),
        Scenario::Claim(k, v) => {
            claims[k] = v;
            s.keys[0].sign(&header, &claims)
        }
        Scenario::RemoveClaim(k) => {
            claims.as_object_mut().unwrap().remove(k);
            s.keys[0].sign(&header, &claims)
        }
        Scenario::AlgNone => format!(
            "{}.{}.",
            B64.encode(json!({"alg": "none"}).to_string()),
            B64.encode(claims.to_string())
        ),
        Scenario::Hs256WithClientSecret => {
            use hmac::{KeyInit, Mac};
            let input = format!(
                "{}.{}",
                B64.encode(json!({"alg": "HS256", "kid": "k1"}).to_string()),
                B64.encode(claims.to_string())
            );
            let mut mac =
                <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
        }
        Scenario::Fixed(tok) => tok,
        Scenario::RotatedKey => {
            let k = Key::new("k2");
            let tok = k.sign(&json!({"alg": "ES256", "kid": "k2"}), &claims);
            s.keys.push(k);
            tok
        }
    };
    s.issued.push(id_token.clone());
    reply(
        StatusCode::OK,
        json!({"access_token": format!("at-{}", s.issued.len()), "token_type": "Bearer", "expires_in": 300, "id_token": id_token}),
    )
}
