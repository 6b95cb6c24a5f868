//! An in-process fake of a plain OAuth 2 provider's real API, one route
//! table per preset ([`shape`]): the authorization endpoint (a 302 back with
//! `code` and `state`), the token endpoint and the profile endpoints at the
//! exact paths the preset uses, answering the JSON shapes recorded from
//! each provider's public API documentation.
//!
//! It is strict where the provider is: the client id and redirect URI
//! must be the registered ones, the code single-use, the PKCE verifier
//! must hash to the challenge (when the preset uses PKCE), the client
//! must authenticate the way the provider documents (`Basic` or in the
//! body; the other way is refused) and every API call needs the issued
//! Bearer token. What it refused is kept in [`FakeOAuth::refusals`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "fake-oauth-client";
pub const CLIENT_SECRET: &str = "fake-oauth-secret-0123456789abcdef";

/// How the provider wants the client to authenticate at its token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` (RFC 6749 §2.3.1), secret never in the body.
    Basic,
    /// `client_id` and `client_secret` in the form body, no `Authorization`.
    Post,
}

/// One provider's API, as its documentation shows it.
#[derive(Clone, Debug)]
pub struct Shape {
    /// The preset's parameters that hold host names (all point at the fake).
    pub url_params: &'static [&'static str],
    pub authorize: &'static str,
    pub token: &'static str,
    pub pkce: bool,
    pub auth: ClientAuth,
    /// The token endpoint's answer; `{at}` stands for the access token.
    pub token_reply: Value,
    /// Path and query, exactly as the preset asks, and the answer.
    pub api: Vec<(&'static str, Value)>,
}

struct Grant {
    challenge: Option<String>,
    redirect_uri: String,
}

struct State {
    shape: Shape,
    redirect_uri: String,
    codes: HashMap<String, Grant>,
    tokens: HashSet<String>,
    authorize_queries: Vec<HashMap<String, String>>,
    refusals: Vec<String>,
    n: usize,
}

/// The fake, serving on `127.0.0.1`; stops with the test's runtime.
pub struct FakeOAuth {
    /// `http://127.0.0.1:<port>`: every host parameter of the preset.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeOAuth {
    /// Serves `shape` for a client registered with `redirect_uri`.
    pub async fn start(shape: Shape, redirect_uri: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            shape,
            redirect_uri: redirect_uri.into(),
            codes: HashMap::new(),
            tokens: HashSet::new(),
            authorize_queries: Vec::new(),
            refusals: Vec::new(),
            n: 0,
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, st.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeOAuth { url, state }
    }

    /// `params: {base_url: <fake>, ...}` for the provider entry.
    pub fn params_yaml(&self) -> String {
        let s = self.state.lock().unwrap();
        let kv: Vec<String> = s
            .shape
            .url_params
            .iter()
            .map(|p| format!("{p}: {}", self.url))
            .collect();
        format!("{{{}}}", kv.join(", "))
    }

    /// Replaces the answer of one API path (it must be in the table).
    pub fn set_api(&self, path: &str, body: Value) {
        let mut s = self.state.lock().unwrap();
        let slot = s
            .shape
            .api
            .iter_mut()
            .find(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("{path} is not in the route table"));
        slot.1 = body;
    }

    /// The query of each authorization request, in order.
    pub fn authorize_queries(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().authorize_queries.clone()
    }

    /// Why each refused request was refused.
    pub fn refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().refusals.clone()
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn refuse(st: &Mutex<State>, status: StatusCode, why: String) -> Response<Full<Bytes>> {
    st.lock().unwrap().refusals.push(why.clone());
    reply(
        status,
        &json!({"error": "invalid_request", "error_description": why}),
    )
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let path_query = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.as_str().to_string());
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let (authorize, token) = {
        let s = st.lock().unwrap();
        (s.shape.authorize, s.shape.token)
    };
    let r = if path == authorize && req.method() == http::Method::GET {
        authorization(&st, query)
    } else if path == token && req.method() == http::Method::POST {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        token_endpoint(&st, &form, auth.as_deref())
    } else {
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        api(&st, &path_query, bearer.as_deref())
    };
    Ok(r)
}

/// The authorization endpoint: the user consents at once.
fn authorization(st: &Mutex<State>, q: HashMap<String, String>) -> Response<Full<Bytes>> {
    let (pkce, registered) = {
        let mut s = st.lock().unwrap();
        s.authorize_queries.push(q.clone());
        (s.shape.pkce, s.redirect_uri.clone())
    };
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code" {
        return refuse(
            st,
            StatusCode::BAD_REQUEST,
            "response_type is not code".into(),
        );
    }
    if get("client_id") != CLIENT_ID {
        return refuse(
            st,
            StatusCode::BAD_REQUEST,
            format!("unknown client_id {:?}", get("client_id")),
        );
    }
    if get("redirect_uri") != registered {
        return refuse(
            st,
            StatusCode::BAD_REQUEST,
            format!("redirect_uri {:?} is not registered", get("redirect_uri")),
        );
    }
    if get("state").is_empty() {
        return refuse(st, StatusCode::BAD_REQUEST, "no state".into());
    }
    let challenge = if pkce {
        if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
            return refuse(
                st,
                StatusCode::BAD_REQUEST,
                "PKCE S256 challenge missing".into(),
            );
        }
        Some(get("code_challenge"))
    } else {
        None
    };
    let code = {
        let mut s = st.lock().unwrap();
        s.n += 1;
        let code = format!(
            "code-{}-{}",
            s.n,
            &get("state")[..8.min(get("state").len())]
        );
        s.codes.insert(
            code.clone(),
            Grant {
                challenge,
                redirect_uri: get("redirect_uri"),
            },
        );
        code
    };
    let mut to = url::Url::parse(&registered).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"));
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert("location", to.as_str().parse().unwrap());
    r
}

/// The token endpoint (RFC 6749 §4.1.3, RFC 7636 §4.6).
fn token_endpoint(
    st: &Mutex<State>,
    form: &HashMap<String, String>,
    auth: Option<&str>,
) -> Response<Full<Bytes>> {
    let (method, reply_shape) = {
        let s = st.lock().unwrap();
        (s.shape.auth, s.shape.token_reply.clone())
    };
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let client_ok = match method {
        ClientAuth::Basic => auth == Some(basic.as_str()) && !form.contains_key("client_secret"),
        ClientAuth::Post => {
            auth.is_none() && get("client_id") == CLIENT_ID && get("client_secret") == CLIENT_SECRET
        }
    };
    if !client_ok {
        return refuse(
            st,
            StatusCode::UNAUTHORIZED,
            format!(
                "client authentication is not {method:?} (Authorization: {auth:?}, body keys: {:?})",
                form.keys().collect::<Vec<_>>()
            ),
        );
    }
    if get("grant_type") != "authorization_code" {
        return refuse(
            st,
            StatusCode::BAD_REQUEST,
            format!("grant_type {:?}", get("grant_type")),
        );
    }
    let Some(grant) = st.lock().unwrap().codes.remove(&get("code")) else {
        return refuse(
            st,
            StatusCode::BAD_REQUEST,
            format!("unknown or used code {:?}", get("code")),
        );
    };
    if get("redirect_uri") != grant.redirect_uri {
        return refuse(
            st,
            StatusCode::BAD_REQUEST,
            "redirect_uri differs from the authorization request's".into(),
        );
    }
    match grant.challenge {
        Some(c) if B64.encode(Sha256::digest(get("code_verifier").as_bytes())) != c => {
            return refuse(
                st,
                StatusCode::BAD_REQUEST,
                "code_verifier does not match the challenge".into(),
            );
        }
        None if form.contains_key("code_verifier") => {
            return refuse(
                st,
                StatusCode::BAD_REQUEST,
                "a code_verifier without a challenge".into(),
            );
        }
        _ => {}
    }
    let at = {
        let mut s = st.lock().unwrap();
        s.n += 1;
        let at = format!(
            "at-{}-{}",
            s.n,
            B64.encode(Sha256::digest(get("code").as_bytes()))
        );
        s.tokens.insert(at.clone());
        at
    };
    let body = reply_shape.to_string().replace("{at}", &at);
    reply(StatusCode::OK, &serde_json::from_str(&body).unwrap())
}

/// The profile endpoints: the access token in `Authorization: Bearer`.
fn api(st: &Mutex<State>, path_query: &str, bearer: Option<&str>) -> Response<Full<Bytes>> {
    let found = {
        let s = st.lock().unwrap();
        let known = bearer.is_some_and(|t| s.tokens.contains(t));
        let body = s
            .shape
            .api
            .iter()
            .find(|(p, _)| *p == path_query)
            .map(|(_, v)| v.clone());
        (known, body)
    };
    match found {
        (_, None) => refuse(st, StatusCode::NOT_FOUND, format!("no route {path_query}")),
        (false, Some(_)) => refuse(
            st,
            StatusCode::UNAUTHORIZED,
            format!("{path_query} without a valid Bearer token"),
        ),
        (true, Some(v)) => reply(StatusCode::OK, &v),
    }
}

/// The route table of a preset's provider, with documentation-shaped data.
pub fn shape(preset: &str) -> Shape {
    let base_api: &'static [&'static str] = &["base_url", "api_url"];
    match preset {
        // docs.github.com: "Authorizing OAuth apps", REST "Users", "Emails",
        // "Organizations", "Teams". The primary address here is unverified
        // and a verified one is not primary: only the third may be taken.
        "github" => Shape {
            url_params: base_api,
            authorize: "/login/oauth/authorize",
            token: "/login/oauth/access_token",
            pkce: true,
            auth: ClientAuth::Post,
            token_reply: json!({"access_token": "{at}", "scope": "read:org,read:user,user:email", "token_type": "bearer"}),
            api: vec![
                (
                    "/user",
                    json!({
                        "login": "octocat", "id": 583231, "node_id": "MDQ6VXNlcjE=",
                        "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
                        "type": "User", "site_admin": false, "name": "The Octocat",
                        "company": "@github", "email": "octocat@public.example",
                        "created_at": "2011-01-25T18:44:36Z"
                    }),
                ),
                (
                    "/user/emails?per_page=100",
                    json!([
                        {"email": "old@octo.example", "verified": true, "primary": false, "visibility": "public"},
                        {"email": "Unverified@Octo.example", "verified": false, "primary": true, "visibility": "private"},
                        {"email": "Octocat@Octo.example", "verified": true, "primary": true, "visibility": "private"}
                    ]),
                ),
                (
                    "/user/orgs?per_page=100",
                    json!([
                        {"login": "acme", "id": 1, "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=", "url": "https://api.github.com/orgs/acme", "description": "A great organization"},
                        {"login": "umbrella", "id": 2, "node_id": "MDEyOk9yZ2FuaXphdGlvbjI=", "url": "https://api.github.com/orgs/umbrella", "description": null}
                    ]),
                ),
                (
                    "/user/teams?per_page=100",
                    json!([
                        {"id": 1, "node_id": "MDQ6VGVhbTE=", "name": "Ops", "slug": "ops", "privacy": "closed", "permission": "admin",
                         "organization": {"login": "acme", "id": 1, "node_id": "MDEyOk9yZ2FuaXphdGlvbjE="}},
                        {"id": 2, "node_id": "MDQ6VGVhbTI=", "name": "Blue Team", "slug": "blue-team", "privacy": "closed", "permission": "pull",
                         "organization": {"login": "umbrella", "id": 2, "node_id": "MDEyOk9yZ2FuaXphdGlvbjI="}}
                    ]),
                ),
            ],
        },
        // discord.com/developers/docs: OAuth2 (token response) and User object.
        "discord" => Shape {
            url_params: &["base_url", "cdn_url"],
            authorize: "/oauth2/authorize",
            token: "/api/oauth2/token",
            pkce: true,
            auth: ClientAuth::Basic,
            token_reply: json!({"access_token": "{at}", "token_type": "Bearer", "expires_in": 604800, "refresh_token": "D43f5y0ahjqew82jZ4NViEr2YafMKhue", "scope": "identify email"}),
            api: vec![(
                "/api/users/@me",
                json!({
                    "id": "80351110224678912", "username": "nelly", "discriminator": "0",
                    "global_name": "Nelly", "avatar": "8342729096ea3675442027381ff50dfe",
                    "verified": true, "email": "nelly@discord.com", "flags": 64,
                    "banner": null, "accent_color": null, "premium_type": 1, "public_flags": 64,
                    "mfa_enabled": true, "locale": "en-US"
                }),
            )],
        },
        // developer.atlassian.com/cloud/bitbucket: OAuth 2.0, GET /2.0/user,
        // GET /2.0/user/emails (a paginated list).
        "bitbucket" => Shape {
            url_params: base_api,
            authorize: "/site/oauth2/authorize",
            token: "/site/oauth2/access_token",
            pkce: true,
            auth: ClientAuth::Basic,
            token_reply: json!({"access_token": "{at}", "scopes": "account email", "expires_in": 7200, "refresh_token": "r3fr3sh", "token_type": "bearer", "state": "authorization_code"}),
            api: vec![
                (
                    "/2.0/user",
                    json!({
                        "type": "user", "uuid": "{d301aafa-d676-4ee0-88be-962be7417567}",
                        "account_id": "557058:c0b72ad0-1cb5-4018-9cdc-0cde8492c443",
                        "nickname": "evzijst", "display_name": "Erik van Zijst",
                        "account_status": "active", "created_on": "2010-06-17T04:09:25.374563+00:00",
                        "links": {"avatar": {"href": "https://bitbucket.org/account/evzijst/avatar/"},
                                  "html": {"href": "https://bitbucket.org/evzijst/"}}
                    }),
                ),
                (
                    "/2.0/user/emails",
                    json!({
                        "pagelen": 10, "page": 1, "size": 3,
                        "values": [
                            {"is_primary": false, "is_confirmed": true, "type": "email", "email": "old@bb.example", "links": {}},
                            {"is_primary": true, "is_confirmed": false, "type": "email", "email": "unconfirmed@bb.example", "links": {}},
                            {"is_primary": true, "is_confirmed": true, "type": "email", "email": "erik@bb.example", "links": {}}
                        ]
                    }),
                ),
            ],
        },
        // developers.facebook.com: Manually Build a Login Flow; Graph API /me.
        "facebook" => Shape {
            url_params: &["base_url", "graph_url"],
            authorize: "/v19.0/dialog/oauth",
            token: "/v19.0/oauth/access_token",
            pkce: false,
            auth: ClientAuth::Post,
            token_reply: json!({"access_token": "{at}", "token_type": "bearer", "expires_in": 5183944}),
            api: vec![(
                "/v19.0/me?fields=id,name,email,picture",
                json!({
                    "id": "10158791234567890", "name": "Mark Page", "email": "mark@fb.example",
                    "picture": {"data": {"height": 50, "is_silhouette": false, "url": "https://platform-lookaside.fbsbx.com/p/10158791234567890", "width": 50}}
                }),
            )],
        },
        // developer.spotify.com: Authorization Code flow; Get Current User's Profile.
        "spotify" => Shape {
            url_params: base_api,
            authorize: "/authorize",
            token: "/api/token",
            pkce: true,
            auth: ClientAuth::Basic,
            token_reply: json!({"access_token": "{at}", "token_type": "Bearer", "scope": "user-read-email", "expires_in": 3600, "refresh_token": "AQB..."}),
            api: vec![(
                "/v1/me",
                json!({
                    "country": "SE", "display_name": "Jane Spotify", "email": "jane@spotify.example",
                    "explicit_content": {"filter_enabled": false, "filter_locked": false},
                    "external_urls": {"spotify": "https://open.spotify.com/user/wizzler"},
                    "followers": {"href": null, "total": 3829},
                    "href": "https://api.spotify.com/v1/users/wizzler", "id": "wizzler",
                    "images": [{"url": "https://i.scdn.co/image/ab67757000003b82", "height": 300, "width": 300}],
                    "product": "premium", "type": "user", "uri": "spotify:user:wizzler"
                }),
            )],
        },
        // developer.atlassian.com/cloud/confluence/oauth-2-3lo-apps: the token
        // answer documented there has no token_type.
        "atlassian" => Shape {
            url_params: base_api,
            authorize: "/authorize",
            token: "/oauth/token",
            pkce: true,
            auth: ClientAuth::Post,
            token_reply: json!({"access_token": "{at}", "expires_in": 3600, "scope": "read:me"}),
            api: vec![(
                "/me",
                json!({
                    "account_type": "atlassian", "account_id": "112233aa-bb11-cc22-33dd-445566abcabc",
                    "email": "mia@atl.example", "name": "Mia Krystof",
                    "picture": "https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/112233aa/1234abcd-9876-54aa-33aa-1234dfsade9487ds",
                    "account_status": "active", "nickname": "mkrystof", "zoneinfo": "Australia/Sydney",
                    "locale": "en-US", "extended_profile": {"job_title": "Designer", "organization": "mia@example.com", "department": "Design team", "location": "Sydney"}
                }),
            )],
        },
        // developers.zoom.us: OAuth 2.0 (Basic client auth); GET /v2/users/me.
        "zoom" => Shape {
            url_params: base_api,
            authorize: "/oauth/authorize",
            token: "/oauth/token",
            pkce: true,
            auth: ClientAuth::Basic,
            token_reply: json!({"access_token": "{at}", "token_type": "bearer", "refresh_token": "eyJhbGciOiJIUzUxMiJ9", "expires_in": 3599, "scope": "user:read"}),
            api: vec![(
                "/v2/users/me",
                json!({
                    "id": "KDcuGIm1QgePTO8WbOqwIQ", "first_name": "Jill", "last_name": "Chill",
                    "display_name": "", "email": "jchill@zoom.example", "type": 1, "pmi": 3542471135_i64,
                    "timezone": "Asia/Shanghai", "verified": 1, "dept": "", "pic_url": "https://example.com/photo.jpg",
                    "status": "active", "account_id": "Hm4Ldz0mQVusX1Ds4kxEQg", "role_name": "Owner"
                }),
            )],
        },
        // developer.box.com: OAuth 2.0 (client_id/secret in the body), GET /2.0/users/me.
        "box" => Shape {
            url_params: base_api,
            authorize: "/api/oauth2/authorize",
            token: "/oauth2/token",
            pkce: false,
            auth: ClientAuth::Post,
            token_reply: json!({"access_token": "{at}", "expires_in": 3600, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "refresh_token": "c3FIOG9vSGV4VHz", "restricted_to": [], "token_type": "bearer"}),
            api: vec![(
                "/2.0/users/me",
                json!({
                    "id": "11446498", "type": "user", "name": "Aaron Levie", "login": "ceo@box.example",
                    "avatar_url": "https://www.box.com/api/avatar/large/181216415", "status": "active",
                    "language": "en", "timezone": "Africa/Bujumbura", "space_amount": 11345156112_i64,
                    "created_at": "2012-12-12T10:53:43-08:00", "job_title": "CEO"
                }),
            )],
        },
        // api.mattermost.com: OAuth 2.0 service provider; GET /api/v4/users/me.
        "mattermost" => Shape {
            url_params: &["base_url"],
            authorize: "/oauth/authorize",
            token: "/oauth/access_token",
            pkce: true,
            auth: ClientAuth::Post,
            token_reply: json!({"access_token": "{at}", "token_type": "bearer", "expires_in": 31536000, "scope": "user", "refresh_token": "9kd8rbq4tfr8mjwh3chb7i3qeo"}),
            api: vec![(
                "/api/v4/users/me",
                json!({
                    "id": "mm8q1ww8a3b5pk3kxh4ygm6dyc", "create_at": 1700000000000_i64, "username": "sam",
                    "auth_service": "", "email": "sam@mm.example", "email_verified": true,
                    "nickname": "", "first_name": "Sam", "last_name": "Vimes", "position": "",
                    "roles": "system_user", "locale": "en", "timezone": {"useAutomaticTimezone": "true"}
                }),
            )],
        },
        // docs.x.com: OAuth 2.0 Authorization Code with PKCE (confidential
        // clients use Basic); GET /2/users/me.
        "twitter" => Shape {
            url_params: base_api,
            authorize: "/i/oauth2/authorize",
            token: "/2/oauth2/token",
            pkce: true,
            auth: ClientAuth::Basic,
            token_reply: json!({"token_type": "bearer", "expires_in": 7200, "access_token": "{at}", "scope": "users.read tweet.read"}),
            api: vec![(
                "/2/users/me?user.fields=profile_image_url",
                json!({
                    "data": {"id": "2244994945", "name": "X Dev", "username": "XDevelopers",
                             "profile_image_url": "https://pbs.twimg.com/profile_images/1445764922474827784/W2zEPN7U_normal.jpg"}
                }),
            )],
        },
        other => panic!("no fake for the {other} preset"),
    }
}
