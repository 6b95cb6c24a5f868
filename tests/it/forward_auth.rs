//! The forward-auth endpoints as edge proxies call them (the real nginx
//! and Caddy runs are in `edge`): Traefik/Caddy style and nginx style.

use http::StatusCode;

use crate::support::*;

/// What Traefik and Caddy send: the original request in X-Forwarded-*.
fn traefik(uri: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-forwarded-proto", "https".into()),
        ("x-forwarded-host", "app.example.com".into()),
        ("x-forwarded-uri", uri.into()),
        ("x-forwarded-method", "GET".into()),
    ]
}

fn hdrs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn portcullis() -> Portcullis {
    Portcullis::start(
        Conf::default()
            .public_url("https://auth.example.com")
            .extra("cookies:\n  domains: [example.com]\naccess:\n  public_paths: [/health]\n"),
    )
    .await
}

#[tokio::test]
async fn forward_auth_redirects_browsers_to_sign_in_and_back() {
    let pc = portcullis().await;
    let mut b = Browser::new();
    let h = traefik("/dash?tab=2");
    let r = b.get_with(&pc.url("/auth/forward-auth"), &hdrs(&h)).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.location(),
        "https://auth.example.com/auth/signin?callbackUrl=https%3A%2F%2Fapp.example.com%2Fdash%3Ftab%3D2"
    );

    // Sign in (as the browser would, on auth.example.com) and come back.
    let page = b
        .get_with(
            &pc.url("/auth/signin?callbackUrl=https%3A%2F%2Fapp.example.com%2Fdash%3Ftab%3D2"),
            &[("host", "auth.example.com")],
        )
        .await;
    assert_eq!(
        page.hidden("callbackUrl").as_deref(),
        Some("https://app.example.com/dash?tab=2")
    );
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form_with(
            &pc.url("/auth/callback/credentials"),
            &[
                ("csrfToken", &token),
                ("callbackUrl", "https://app.example.com/dash?tab=2"),
                ("email", ALICE.0),
                ("password", PASSWORD),
            ],
            &[("host", "auth.example.com")],
        )
        .await;
    assert_eq!(r.location(), "https://app.example.com/dash?tab=2");
    let sc = r.set_cookie("__Secure-authjs.session-token").unwrap();
    assert!(
        sc.contains("Domain=example.com"),
        "shared across subdomains: {sc}"
    );

    let r = b.get_with(&pc.url("/auth/forward-auth"), &hdrs(&h)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-auth-request-email"), Some(ALICE.0));
    assert_eq!(r.header("x-auth-request-groups"), Some("admins,staff"));
    assert_eq!(r.header("x-forwarded-user"), Some(ALICE.0));
}

#[tokio::test]
async fn forward_auth_answers_api_clients_with_401_and_public_paths_with_200() {
    let pc = portcullis().await;
    let mut api = Browser::api();
    let r = api
        .get_with(&pc.url("/auth/forward-auth"), &hdrs(&traefik("/api/x")))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("location").is_none());
    let r = api
        .get_with(&pc.url("/auth/forward-auth"), &hdrs(&traefik("/health")))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("x-auth-request-email").is_none());
    // Portcullis's own pages never loop back to sign-in.
    let own = vec![
        ("x-forwarded-proto", "https".to_string()),
        ("x-forwarded-host", "auth.example.com".into()),
        ("x-forwarded-uri", "/auth/signin".into()),
    ];
    let r = Browser::new()
        .get_with(&pc.url("/auth/forward-auth"), &hdrs(&own))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn auth_request_speaks_only_200_401_403_with_the_sign_in_url() {
    let pc = Portcullis::start(
        Conf::default()
            .public_url("https://auth.example.com")
            .extra("cookies:\n  domains: [example.com]\naccess:\n  allowed_groups: [admins]\n"),
    )
    .await;
    let orig = [("x-original-url", "https://app.example.com/admin?x=1")];
    let r = Browser::new()
        .get_with(&pc.url("/auth/auth-request"), &orig)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("x-auth-signin"),
        Some(
            "https://auth.example.com/auth/signin?callbackUrl=https%3A%2F%2Fapp.example.com%2Fadmin%3Fx%3D1"
        )
    );
    assert!(r.header("location").is_none());

    let mut alice = Browser::new();
    alice.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    let r = alice.get_with(&pc.url("/auth/auth-request"), &orig).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-auth-request-user"), Some(ALICE.0));

    let mut bob = Browser::new();
    // Bob is not in admins: he cannot even sign in; give him a cookie
    // minted by an instance without the rule to reach the 403 branch.
    let open = Portcullis::start(Conf::default().public_url("https://auth.example.com")).await;
    bob.sign_in(&open.url(""), BOB.0, PASSWORD, "/").await;
    let r = bob.get_with(&pc.url("/auth/auth-request"), &orig).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    let pc = Portcullis::start(
        Conf::default()
            .public_url("https://auth.example.com")
            .extra("trusted_proxies: [192.0.2.1]\ncookies:\n  domains: [example.com]\n"),
    )
    .await;
    let r = Browser::new()
        .get_with(&pc.url("/auth/forward-auth"), &hdrs(&traefik("/secret")))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.location(),
        "https://auth.example.com/auth/signin",
        "an untrusted peer's X-Forwarded-Uri must not be used"
    );
}

#[tokio::test]
async fn a_sliding_session_is_refreshed_through_forward_auth() {
    let pc = Portcullis::start(Conf::default().extra("session:\n  update_age: 1s\n")).await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = b
        .get_with(
            &pc.url("/auth/auth-request"),
            &[("x-original-url", &pc.url("/x"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.set_cookie("authjs.session-token").is_some(),
        "nginx passes this Set-Cookie on with auth_request_set"
    );
}

#[tokio::test]
async fn without_an_original_url_nothing_is_public() {
    let pc = Portcullis::start(Conf::default().extra("access:\n  public_paths: [\"/*\"]\n")).await;
    // No X-Forwarded-Uri / X-Original-URL: the target is unknown.
    let r = Browser::api().get(&pc.url("/auth/forward-auth")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = Browser::api().get(&pc.url("/auth/auth-request")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // With one, the public rule applies.
    let r = Browser::api()
        .get_with(
            &pc.url("/auth/auth-request"),
            &[("x-original-url", "http://app.test/anything")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn each_endpoint_reads_only_its_own_protocols_headers() {
    let pc =
        Portcullis::start(Conf::default().extra("access:\n  public_paths: [/public/*]\n")).await;
    let mut api = Browser::api();
    // Traefik/Caddy pass a client's X-Original-URL through: it must not
    // make /app/secret look like a public path.
    let r = api
        .get_with(
            &pc.url("/auth/forward-auth"),
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/app/secret"),
                ("x-original-url", "http://app.test/public/x"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // And nginx's endpoint ignores X-Forwarded-Uri.
    let r = api
        .get_with(
            &pc.url("/auth/auth-request"),
            &[
                ("x-original-url", "http://app.test/app/secret"),
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-host", "app.test"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn dot_segments_in_the_original_path_are_refused() {
    let pc =
        Portcullis::start(Conf::default().extra("access:\n  public_paths: [/public/*]\n")).await;
    let mut api = Browser::api();
    for uri in [
        "/public/../app",
        "/public//../app",
        "/public/..%2fapp",
        "/public/%2e%2e/app",
    ] {
        let r = api
            .get_with(
                &pc.url("/auth/forward-auth"),
                &[
                    ("x-forwarded-proto", "http"),
                    ("x-forwarded-host", "app.test"),
                    ("x-forwarded-uri", uri),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        let r = api
            .get_with(
                &pc.url("/auth/auth-request"),
                &[("x-original-url", &format!("http://app.test{uri}"))],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
    }
    let r = api
        .get_with(
            &pc.url("/auth/forward-auth"),
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/public/ok"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn only_paths_under_the_base_on_the_public_origin_count_as_our_own() {
    let pc = Portcullis::start(Conf::default().public_url("https://auth.example.com")).await;
    let mut api = Browser::api();
    for (host, proto, uri, want) in [
        ("auth.example.com", "https", "/auth/signin", 200),
        ("auth.example.com", "https", "/auth", 401),
        ("auth.example.com", "http", "/auth/signin", 401),
        ("auth.example.com:8443", "https", "/auth/signin", 401),
        ("app.example.com", "https", "/auth/signin", 401),
    ] {
        let r = api
            .get_with(
                &pc.url("/auth/forward-auth"),
                &[
                    ("x-forwarded-proto", proto),
                    ("x-forwarded-host", host),
                    ("x-forwarded-uri", uri),
                ],
            )
            .await;
        assert_eq!(r.status.as_u16(), want, "{proto}://{host}{uri}");
    }
}
