//! End to end through the real edge proxies, each running the `deploy/`
//! snippet users copy: nginx with `auth_request`, Caddy with
//! `forward_auth`. Portcullis runs forward-auth only (no upstream of its
//! own) with its public URL on the edge's origin; the browser talks only to
//! the edge; the recording upstream says what the app really received.

use std::sync::OnceLock;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::edge::{Caddy, Nginx, deploy_file, fill};
use crate::support::*;

/// Identity headers a client tries to slip to the app: every name
/// Portcullis sends (one of them twice), an underscore twin, and names
/// other setups trust.
const FORGED: [(&str, &str); 14] = [
    ("X-Auth-Request-User", "ceo"),
    ("X-Auth-Request-Email", "ceo@example.com"),
    ("x-auth-request-email", "cfo@example.com"),
    ("X-Auth-Request-Preferred-Username", "ceo"),
    ("X-Auth-Request-Groups", "admins,board"),
    ("X-Auth-Request-Name", "The CEO"),
    ("X-Forwarded-User", "ceo"),
    ("X-Forwarded-Email", "ceo@example.com"),
    ("X_Auth_Request_Email", "ceo@example.com"),
    ("X-Auth-Request-Access-Token", "forged"),
    ("X-Forwarded-Groups", "admins"),
    ("X-Forwarded-Preferred-Username", "ceo"),
    ("Remote-User", "ceo"),
    ("Remote-Email", "ceo@example.com"),
];

/// Every header name of [`FORGED`], as the upstream would see it.
fn forged_names() -> Vec<String> {
    FORGED.iter().map(|(k, _)| k.to_ascii_lowercase()).collect()
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Nginx,
    Caddy,
}

enum Edge {
    Nginx(Nginx),
    Caddy(Caddy),
}

/// An edge proxy in front of the recording app, Portcullis behind it.
struct Site {
    edge: Edge,
    pc: Portcullis,
    app: Upstream,
}

impl Site {
    /// The edge running its `deploy/` snippet; `extra` goes into
    /// Portcullis's config; the users are Alice and Bob.
    async fn start(kind: Kind, extra: &str) -> Site {
        Self::start_with(kind, extra, vec![ALICE, BOB]).await
    }

    async fn start_with(kind: Kind, extra: &str, users: Vec<TestUser>) -> Site {
        let port = free_port();
        let mut conf = Conf {
            users,
            ..Conf::default()
        };
        if !extra.is_empty() {
            conf = conf.extra(extra);
        }
        Self::start_on(kind, port, conf).await
    }

    /// The edge on `port` (known beforehand, e.g. by an IdP's redirect
    /// URI), Portcullis with `conf` and its public URL on the edge.
    async fn start_on(kind: Kind, port: u16, conf: Conf) -> Site {
        let app = Upstream::start().await;
        let conf = conf.public_url(&format!("http://127.0.0.1:{port}"));
        let pc = Portcullis::start(conf).await;
        let vars = [
            ("PORTCULLIS", format!("127.0.0.1:{}", pc.port)),
            ("UPSTREAM", app.addr.to_string()),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let edge = match kind {
            Kind::Nginx => {
                let conf = fill(&deploy_file("nginx/portcullis.conf"), &vars);
                Edge::Nginx(Nginx::start_on(port, &conf).await)
            }
            Kind::Caddy => {
                let conf = fill(&deploy_file("caddy/Caddyfile"), &vars);
                Edge::Caddy(Caddy::start_on(port, &conf).await)
            }
        };
        Site { edge, pc, app }
    }

    fn port(&self) -> u16 {
        match &self.edge {
            Edge::Nginx(n) => n.port,
            Edge::Caddy(c) => c.port,
        }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Both sides' logs, for failure messages.
    fn logs(&self) -> String {
        let edge = match &self.edge {
            Edge::Nginx(n) => n.logs(),
            Edge::Caddy(c) => c.logs(),
        };
        format!("{edge}\n--- portcullis ---\n{}", self.pc.logs())
    }

    /// A browser, signed in as `user` the way a person would: the app
    /// sends it to the sign-in page, it posts the form, it comes back.
    /// Everything through the edge.
    async fn signed_in(&self, user: &TestUser) -> Browser {
        let mut b = Browser::new();
        let r = b.get(&self.url("/app?x=1")).await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", self.logs());
        let back = self.url("/app?x=1");
        let enc: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
        assert_eq!(
            r.location(),
            format!("{}/auth/signin?callbackUrl={enc}", self.origin()),
            "to the sign-in page on the edge's origin, coming back to the app"
        );
        let page = b.get(r.location()).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.hidden("callbackUrl").as_deref(), Some(back.as_str()));
        let csrf = page.hidden("csrfToken").expect("csrfToken");
        let r = b
            .post_form(
                &self.url("/auth/callback/credentials"),
                &[
                    ("csrfToken", &csrf),
                    ("callbackUrl", &back),
                    ("email", user.0),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
        assert_eq!(r.location(), back);
        assert!(b.has_session(), "session cookie set through the edge");
        b
    }

    /// The app received exactly `user`'s identity, once per header, and
    /// nothing a client forged.
    fn assert_app_saw(&self, user: &TestUser) {
        let got = self.app.last();
        let one = |name: &str, want: &str| {
            assert_eq!(got.header(name), Some(want), "{name}: {:?}", got.headers);
            assert_eq!(got.header_count(name), 1, "{name}: {:?}", got.headers);
        };
        one("x-auth-request-user", user.0);
        one("x-auth-request-email", user.0);
        one("x-auth-request-groups", &user.2.join(","));
        one("x-auth-request-name", user.1);
        one("x-forwarded-user", user.0);
        one("x-forwarded-email", user.0);
        assert_nothing_forged(&got, &SET);
    }
}

/// The identity headers Portcullis sets for a signed-in user.
const SET: [&str; 6] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-name",
    "x-forwarded-user",
    "x-forwarded-email",
];

/// No forged header reached the app, nor a placeholder's literal text;
/// of the identity names only those in `set` are present (the caller
/// checks their values).
fn assert_nothing_forged(got: &Recorded, set: &[&str]) {
    for n in forged_names() {
        if !set.contains(&n.as_str()) {
            assert!(
                got.header(&n).is_none(),
                "{n} reached the app: {:?}",
                got.headers
            );
        }
    }
    for (k, v) in &got.headers {
        let v = String::from_utf8_lossy(v.as_bytes());
        assert!(
            !["ceo", "cfo", "board", "forged", "{"]
                .iter()
                .any(|m| v.contains(m)),
            "{k}: {v} reached the app"
        );
    }
}

/// The session cookie pair (`name=value`) a browser holds.
fn session_pair(b: &Browser) -> String {
    let (k, v) = b
        .jar
        .iter()
        .find(|(k, _)| k.contains("session-token"))
        .expect("a session cookie");
    format!("{k}={v}")
}

/// What the app receives in `Cookie` for what the browser sends: ours
/// gone, the app's own kept in order (`None`: no Cookie header at all).
fn cookie_cases(session: &str) -> Vec<(String, Option<&'static str>)> {
    vec![
        (session.to_string(), None),
        (format!("{session}; theme=dark"), Some("theme=dark")),
        (format!("theme=dark; {session}"), Some("theme=dark")),
        (
            format!("a=1; authjs.csrf-token=c|h; {session}; b=2"),
            Some("a=1; b=2"),
        ),
        (
            format!("{session}; __Host-authjs.csrf-token=x; authjs.flow.abc=y; lang=fr"),
            Some("lang=fr"),
        ),
        (
            format!("myauthjs.session-token=keep; {session}; xauthjs.x=keep"),
            Some("myauthjs.session-token=keep; xauthjs.x=keep"),
        ),
    ]
}

// ---- The flows, the same through every edge -------------------------------

const PUBLIC: &str = "access:\n  public_paths: [/public/*]\n";

/// Sign-in through the edge, then the app gets the identity, and neither
/// Portcullis's cookies nor anything before sign-in.
async fn browsers_sign_in_and_the_app_gets_the_identity(kind: Kind) {
    let site = Site::start(kind, PUBLIC).await;
    // Portcullis's own pages, bare base path included, never reach the app.
    for path in ["/auth", "/auth/", "/auth/session"] {
        let r = Browser::new().get(&site.url(path)).await;
        assert!(r.status.is_success() || r.status.is_redirection(), "{path}");
        assert!(r.header("x-upstream").is_none(), "{path} is Portcullis's");
    }
    let mut b = site.signed_in(&ALICE).await;
    assert_eq!(
        site.app.count(),
        0,
        "nothing reached the app before sign-in"
    );
    let r = b.get(&site.url("/app?x=1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", site.logs());
    assert_eq!(r.body, "upstream ok 0");
    let got = site.app.last();
    assert_eq!(got.uri, "/app?x=1");
    let host = format!("127.0.0.1:{}", site.port());
    assert_eq!(got.header("host"), Some(host.as_str()));
    site.assert_app_saw(&ALICE);
    assert_eq!(got.header("cookie"), None, "Portcullis's cookies stay out");
}

/// A client's identity headers never reach the app: not on a public
/// path without a session, not as a session, not beside a real identity.
async fn forged_identity_headers_never_reach_the_app(kind: Kind) {
    let site = Site::start(kind, PUBLIC).await;
    let mut b = site.signed_in(&ALICE).await;
    let r = Browser::new()
        .get_with(&site.url("/public/page"), &FORGED)
        .await;
    assert_eq!(r.status, StatusCode::OK, "public path: {}", r.body);
    assert_nothing_forged(&site.app.last(), &[]);

    let before = site.app.count();
    let r = Browser::new().get_with(&site.url("/app"), &FORGED).await;
    assert_eq!(r.status, StatusCode::FOUND, "forged headers are no session");
    assert_eq!(site.app.count(), before, "the app was not asked");

    let r = b.get_with(&site.url("/app?x=1"), &FORGED).await;
    assert_eq!(r.status, StatusCode::OK);
    site.assert_app_saw(&ALICE);
}

/// Only the edge says which URL is being checked: a client naming a public
/// path in any header Portcullis reads for it (nginx's X-Original-URL,
/// Traefik's and Caddy's X-Forwarded-*) is still sent to sign in, and the
/// app is not asked.
async fn clients_cannot_choose_the_url_being_checked(kind: Kind) {
    let site = Site::start(kind, PUBLIC).await;
    let public = site.url("/public/x");
    let spoofs: [&[(&str, &str)]; 3] = [
        &[("x-original-url", &public), ("x-original-method", "GET")],
        &[
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-method", "GET"),
        ],
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "elsewhere.example"),
            ("x-forwarded-uri", "/public/x"),
        ],
    ];
    let back: String =
        url::form_urlencoded::byte_serialize(site.url("/app/secret").as_bytes()).collect();
    for headers in spoofs {
        let r = Browser::new()
            .get_with(&site.url("/app/secret"), headers)
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{headers:?}: {}", r.body);
        assert_eq!(
            r.location(),
            format!("{}/auth/signin?callbackUrl={back}", site.origin()),
            "{headers:?}"
        );
    }
    assert_eq!(site.app.count(), 0, "the app was not asked");
}

/// Portcullis's cookies are cut out of `Cookie` wherever they sit; the
/// app's own stay, in order.
async fn portcullis_cookies_are_stripped_and_the_apps_kept(kind: Kind) {
    let site = Site::start(kind, "").await;
    let mut b = site.signed_in(&ALICE).await;
    let session = session_pair(&b);
    for (sent, want) in cookie_cases(&session) {
        let r = b.get_with(&site.url("/app"), &[("cookie", &sent)]).await;
        assert_eq!(r.status, StatusCode::OK, "{sent}: {}", r.body);
        let got = site.app.last();
        assert_eq!(got.header("cookie"), want, "sent {sent}");
    }
}

/// An API client without a session: 401, no redirect, the app not asked.
async fn api_clients_without_a_session_get_401(kind: Kind) {
    let site = Site::start(kind, "").await;
    for method in [Method::GET, Method::POST] {
        let r = Browser::api()
            .request(method.clone(), &site.url("/api/items"), &[], None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method}: {}", r.body);
        assert!(r.header("location").is_none(), "{method}: no redirect");
    }
    assert_eq!(site.app.count(), 0);
}

/// Bob is not in `admins`: he cannot sign in at all, so his cookie comes
/// from an instance without the rule (same secret, same public URL).
async fn users_denied_by_allowed_groups_get_403(kind: Kind) {
    let site = Site::start(kind, "access:\n  allowed_groups: [admins]\n").await;
    let open = Portcullis::start(Conf::default().public_url(&site.origin())).await;
    let mut bob = Browser::new();
    bob.sign_in(&open.url(""), BOB.0, PASSWORD, "/").await;
    assert!(bob.has_session());
    let r = bob.get(&site.url("/app")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.header("location").is_none());
    assert_eq!(site.app.count(), 0, "the app was not asked");

    let mut alice = site.signed_in(&ALICE).await;
    let r = alice.get(&site.url("/app")).await;
    assert_eq!(r.status, StatusCode::OK, "admins pass");
}

/// A WebSocket-style upgrade reaches the app for a signed-in browser and
/// bytes flow both ways.
async fn upgrades_pass_for_signed_in_users(kind: Kind) {
    let site = Site::start(kind, "").await;
    let b = site.signed_in(&ALICE).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", site.port()))
        .await
        .unwrap();
    let req = format!(
        "GET /echo-upgrade HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: Upgrade\r\n\
         Upgrade: echo\r\nAccept: text/html\r\nCookie: {}\r\n\r\n",
        site.port(),
        b.cookie_header()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        assert_eq!(n, 1, "closed before the head ended: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&echo, b"ping");
    assert_eq!(
        site.app.last().header("x-auth-request-email"),
        Some(ALICE.0)
    );
}

/// 250 groups: a session in two cookies (Auth.js chunking) and a long
/// groups header.
fn crowded() -> TestUser {
    static GROUPS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let groups = GROUPS.get_or_init(|| {
        (0..250)
            .map(|i| &*Box::leak(format!("team-{i:03}-of-the-directory").into_boxed_str()))
            .collect()
    });
    TestUser("crowded@example.com", "Crowded", groups.as_slice())
}

/// A chunked session works through the edge, and reaching its refresh age
/// on the app never leaves the browser with mismatched chunks: the edge
/// cannot pass several Set-Cookie lines of a check, so the session is
/// refreshed on Portcullis's own pages.
async fn chunked_sessions_work_and_survive_their_refresh(kind: Kind) {
    let user = crowded();
    let site = Site::start_with(kind, "session:\n  update_age: 1s\n", vec![crowded()]).await;
    let mut b = site.signed_in(&user).await;
    assert!(
        b.jar.contains_key("authjs.session-token.1"),
        "the session is chunked: {:?}",
        b.jar.keys()
    );
    let r = b.get(&site.url("/app")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", site.logs());
    site.assert_app_saw(&user);
    assert_eq!(site.app.last().header("cookie"), None);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    for i in 0..2 {
        let r = b.get(&site.url("/app")).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "request {i} after the refresh age"
        );
        assert!(
            r.set_cookies().iter().all(|c| !c.contains("session-token")),
            "no partial session reaches the browser: {:?}",
            r.set_cookies()
        );
    }
    let r = b.get(&site.url("/auth/session")).await;
    assert_eq!(r.json()["user"]["email"], user.0);
    assert!(r.set_cookie("authjs.session-token.0").is_some());
    assert!(r.set_cookie("authjs.session-token.1").is_some());
    let r = b.get(&site.url("/app")).await;
    assert_eq!(r.status, StatusCode::OK, "the refreshed chunks work");
}

// ---- nginx (deploy/nginx/portcullis.conf) --------------------------------

#[tokio::test]
async fn nginx_sends_browsers_to_sign_in_and_the_app_gets_the_identity() {
    browsers_sign_in_and_the_app_gets_the_identity(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_never_lets_a_client_forge_identity_headers() {
    forged_identity_headers_never_reach_the_app(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_never_lets_a_client_choose_the_url_being_checked() {
    clients_cannot_choose_the_url_being_checked(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_strips_portcullis_cookies_and_keeps_the_apps() {
    portcullis_cookies_are_stripped_and_the_apps_kept(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_answers_api_clients_without_a_session_with_401() {
    api_clients_without_a_session_get_401(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_answers_users_denied_by_allowed_groups_with_403() {
    users_denied_by_allowed_groups_get_403(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_passes_upgrades_for_signed_in_users() {
    upgrades_pass_for_signed_in_users(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_carries_chunked_sessions_and_never_splits_their_refresh() {
    chunked_sessions_work_and_survive_their_refresh(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_passes_a_refreshed_session_cookie_to_the_browser() {
    let site = Site::start(Kind::Nginx, "session:\n  update_age: 1s\n").await;
    let mut b = site.signed_in(&ALICE).await;
    let before = session_pair(&b);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = b.get(&site.url("/app")).await;
    assert_eq!(r.status, StatusCode::OK);
    let sc = r
        .set_cookie("authjs.session-token")
        .expect("the check's Set-Cookie reaches the browser");
    assert!(sc.contains("HttpOnly") && sc.contains("Path=/"), "{sc}");
    assert_ne!(session_pair(&b), before, "the browser holds the new cookie");
    let r = b.get(&site.url("/app")).await;
    assert_eq!(r.status, StatusCode::OK, "and it works");
}

// ---- Caddy (deploy/caddy/Caddyfile) --------------------------------------

#[tokio::test]
async fn caddy_sends_browsers_to_sign_in_and_the_app_gets_the_identity() {
    browsers_sign_in_and_the_app_gets_the_identity(Kind::Caddy).await;
}

#[tokio::test]
async fn caddy_never_lets_a_client_forge_identity_headers() {
    forged_identity_headers_never_reach_the_app(Kind::Caddy).await;
}

#[tokio::test]
async fn caddy_never_lets_a_client_choose_the_url_being_checked() {
    clients_cannot_choose_the_url_being_checked(Kind::Caddy).await;
}

#[tokio::test]
async fn caddy_strips_portcullis_cookies_and_keeps_the_apps() {
    portcullis_cookies_are_stripped_and_the_apps_kept(Kind::Caddy).await;
}

#[tokio::test]
async fn caddy_answers_api_clients_without_a_session_with_401() {
    api_clients_without_a_session_get_401(Kind::Caddy).await;
}

#[tokio::test]
async fn caddy_answers_users_denied_by_allowed_groups_with_403() {
    users_denied_by_allowed_groups_get_403(Kind::Caddy).await;
}

#[tokio::test]
async fn caddy_passes_upgrades_for_signed_in_users() {
    upgrades_pass_for_signed_in_users(Kind::Caddy).await;
}

#[tokio::test]
async fn caddy_carries_chunked_sessions_and_never_splits_their_refresh() {
    chunked_sessions_work_and_survive_their_refresh(Kind::Caddy).await;
}

/// Caddy drops the Set-Cookie of a 2xx check (the Caddyfile says so); a
/// session still slides when the browser loads a Portcullis page.
#[tokio::test]
async fn caddy_drops_the_checks_set_cookie_and_sessions_slide_on_portcullis_pages() {
    let site = Site::start(Kind::Caddy, "session:\n  update_age: 1s\n").await;
    let mut b = site.signed_in(&ALICE).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = b.get(&site.url("/app")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.set_cookie("authjs.session-token").is_none(),
        "Caddy now passes the check's Set-Cookie on: update deploy/caddy/Caddyfile's note"
    );
    let r = b.get(&site.url("/auth/session")).await;
    assert_eq!(r.json()["user"]["email"], ALICE.0);
    assert!(r.set_cookie("authjs.session-token").is_some());
}

// ---- OIDC through the edge, with the real oidc-provider ---------------------

/// A person signs in with the real IdP through the edge: the app sends
/// the browser to Portcullis's sign-in page (on the edge's origin), the
/// button goes to the IdP, the IdP comes back to the edge's callback, and
/// the app then receives the IdP user's identity with groups.
async fn oidc_users_sign_in_through_the_edge(kind: Kind) {
    use crate::support::idp::{CLIENT_ID, CLIENT_SECRET, Idp, idp_login};
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(Idp::default_config(
        &format!("{origin}/auth/callback/corp"),
        &[&format!("{origin}/")],
    ))
    .await;
    let item = format!(
        "  - type: oidc\n    id: corp\n    name: Corp SSO\n    issuer: {}\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    scopes: [openid, email, profile, groups]\n",
        idp.issuer
    );
    let site = Site::start_on(kind, port, Conf::default().provider(&item)).await;
    let mut ready = false;
    for _ in 0..200 {
        if Browser::api().get(&site.pc.url("/readyz")).await.status == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "{}", site.logs());

    let mut b = Browser::new();
    let r = b.get(&site.url("/reports?q=1")).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", site.logs());
    let page = b.get(r.location()).await;
    assert!(page.body.contains("Sign in with Corp SSO"), "{}", page.body);
    let csrf = page.hidden("csrfToken").unwrap();
    let back = page.hidden("callbackUrl").unwrap();
    assert_eq!(back, site.url("/reports?q=1"));
    let r = b
        .post_form(
            &site.url("/auth/signin/corp"),
            &[("csrfToken", &csrf), ("callbackUrl", &back)],
        )
        .await;
    assert!(
        r.location().starts_with(&idp.issuer),
        "{} {}",
        r.status,
        r.location()
    );
    let cb = idp_login(&mut b, r.location(), "alice")
        .await
        .location()
        .to_string();
    assert!(cb.starts_with(&site.url("/auth/callback/corp?")), "{cb}");
    let r = b.get(&cb).await;
    assert_eq!(r.location(), back, "{}", site.logs());
    let r = b.get(&back).await;
    assert_eq!(r.status, StatusCode::OK, "{}", site.logs());
    let got = site.app.last();
    assert_eq!(got.uri, "/reports?q=1");
    assert_eq!(got.header("x-auth-request-user"), Some("alice-sub"));
    assert_eq!(
        got.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(got.header("x-auth-request-groups"), Some("admins,staff"));
    assert_eq!(idp.counters().await["authorization_code"], 1);
    // The same browser, asking as an API client, is let through now...
    let json = [("accept", "application/json")];
    let r = b.get_with(&site.url("/reports"), &json).await;
    assert_eq!(r.status, StatusCode::OK, "{}", site.logs());
    // ...and the IdP user signs out through the edge: the same browser,
    // with the cookies the sign-out left it, is refused again.
    let page = b.get(&site.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &site.url("/auth/signout"),
            &[("csrfToken", &token), ("callbackUrl", "/")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert!(r.location().starts_with(&idp.issuer), "{}", r.location());
    assert!(
        r.set_cookies()
            .iter()
            .any(|c| c.starts_with("authjs.session-token=") && c.contains("Max-Age=0")),
        "{:?}",
        r.set_cookies()
    );
    assert!(!b.has_session(), "{:?}", b.jar);
    let seen = site.app.count();
    let r = b.get_with(&site.url("/reports"), &json).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let r = b.get(&site.url("/reports")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(r.location().contains("/auth/signin"), "{}", r.location());
    assert_eq!(
        site.app.count(),
        seen,
        "the app saw a request after sign-out"
    );
}

#[tokio::test]
async fn nginx_signs_oidc_users_in_with_the_real_provider() {
    oidc_users_sign_in_through_the_edge(Kind::Nginx).await;
}

#[tokio::test]
async fn caddy_signs_oidc_users_in_with_the_real_provider() {
    oidc_users_sign_in_through_the_edge(Kind::Caddy).await;
}
