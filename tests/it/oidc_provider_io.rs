//! Portcullis talking to the identity provider, with the in-process fake
//! IdP counting what it is asked: userinfo merged into the profile, the
//! 1 MiB cap on its answers, a private CA (`providers[].ca_file`),
//! discovery that loads once the IdP comes up, and the JWKS cache.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::support::fake_idp::FakeIdp;
use crate::support::*;

const DISCOVERY: &str = "/.well-known/openid-configuration";

/// Signs in at the fake IdP through Portcullis: start, the IdP's
/// authorization endpoint (at `idp_base`, where the browser reaches it),
/// then the callback. Returns the callback's answer.
async fn sign_in_via(pc: &Portcullis, b: &mut Browser, idp: &FakeIdp, callback: &str) -> Resp {
    let page = b.get(&pc.url("/auth/signin")).await;
    let token = page.hidden("csrfToken").expect("sign-in page");
    let r = b
        .post_form(
            &pc.url("/auth/signin/fake"),
            &[("csrfToken", &token), ("callbackUrl", callback)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}\n{}", r.body, pc.logs());
    let auth = r.location().replacen(&idp.issuer, &idp.plain_url(), 1);
    let r = b.get(&auth).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    let cb = r.location().to_string();
    b.get(&cb).await
}

/// Waits (bounded) until `/readyz` answers `want`; false if it never did.
async fn readyz_becomes(pc: &Portcullis, want: StatusCode, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    let mut b = Browser::api();
    while std::time::Instant::now() < deadline {
        if b.get(&pc.url("/readyz")).await.status == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A claim only userinfo answers (the ID token never has it) reaches the
/// identity headers, and so does a group only userinfo lists: userinfo is
/// merged, not ignored.
#[tokio::test]
async fn claims_only_in_userinfo_reach_the_identity_headers() {
    let idp = FakeIdp::start().await;
    idp.set_userinfo_only(json!({
        "department": "research",
        "groups": ["staff", "from-userinfo"],
        "name": "Fay From Userinfo",
    }));
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .provider(&idp.provider_yaml(""))
            .extra("headers:\n  claims:\n    X-Auth-Request-Department: department\n"),
    )
    .await;
    pc.wait_readyz(StatusCode::OK).await;
    let mut b = Browser::new();
    let r = sign_in_via(&pc, &mut b, &idp, "/home").await;
    assert_eq!(r.location(), "/home", "{}", pc.logs());
    // The ID token the IdP issued does not carry them.
    let id_token = idp.issued().pop().unwrap();
    let payload = id_token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert!(claims.get("department").is_none(), "{claims}");
    assert_eq!(claims["groups"], json!(["staff"]));
    assert_eq!(idp.calls("/userinfo"), 1);

    let r = b.get(&pc.url("/home")).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = up.last();
    assert_eq!(seen.header("x-auth-request-department"), Some("research"));
    assert_eq!(
        seen.header("x-auth-request-groups"),
        Some("staff,from-userinfo")
    );
    assert_eq!(seen.header("x-auth-request-email"), Some("fay@example.com"));
    let session = b.get(&pc.url("/auth/session")).await.json();
    assert_eq!(session["user"]["name"], "Fay From Userinfo");
}

/// A discovery document or JWKS over the 1 MiB cap is refused: `/readyz`
/// stays 503, sign-in answers a clear 503, Portcullis keeps running, and
/// it recovers by itself once the IdP answers sensibly again.
#[tokio::test]
async fn idp_answers_over_one_mebibyte_are_refused() {
    for path in [DISCOVERY, "/jwks"] {
        let idp = FakeIdp::start().await;
        idp.pad(path, (1 << 20) + 1024);
        let pc = Portcullis::start(Conf::default().provider(&idp.provider_yaml(""))).await;
        assert!(
            pc.log_shows("OIDC discovery failed").await,
            "{path}: {}",
            pc.logs()
        );
        let failure = pc
            .logs()
            .lines()
            .find(|l| l.contains("OIDC discovery failed"))
            .unwrap()
            .to_string();
        assert!(failure.contains(path), "{path}: {failure}");
        assert!(failure.contains("length limit"), "{path}: {failure}");
        let mut b = Browser::new();
        assert_eq!(
            b.get(&pc.url("/readyz")).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let page = b.get(&pc.url("/auth/signin")).await;
        let token = page.hidden("csrfToken").unwrap();
        let r = b
            .post_form(
                &pc.url("/auth/signin/fake"),
                &[("csrfToken", &token), ("callbackUrl", "/")],
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.body
        );
        assert!(r.body.contains("identity provider"), "{}", r.body);
        assert!(!b.has_session());
        assert_eq!(b.get(&pc.url("/healthz")).await.status, StatusCode::OK);
        // Back to a normal size: the retry loads it, no restart.
        idp.pad(path, 0);
        assert!(
            readyz_becomes(&pc, StatusCode::OK, Duration::from_secs(20)).await,
            "{path}: never recovered:\n{}",
            pc.logs()
        );
    }
}

/// An IdP behind TLS with a private CA: trusted through
/// `providers[].ca_file`, discovery loads and a user signs in; without
/// the CA file, the certificate is refused and `/readyz` stays 503.
#[tokio::test]
async fn a_private_ca_idp_is_trusted_only_through_ca_file() {
    let dir = TempDir::new("idp-ca");
    let (ca, cert, key) = test_certs(&dir);
    let idp = FakeIdp::start_tls(&cert, &key).await;
    assert!(idp.issuer.starts_with("https://127.0.0.1:"));

    let untrusting = Portcullis::start(Conf::default().provider(&idp.provider_yaml(""))).await;
    assert!(
        untrusting.log_shows("OIDC discovery failed").await,
        "{}",
        untrusting.logs()
    );
    let failure = untrusting
        .logs()
        .lines()
        .find(|l| l.contains("OIDC discovery failed"))
        .unwrap()
        .to_string();
    assert!(
        failure.contains("certificate") || failure.contains("UnknownIssuer"),
        "{failure}"
    );
    assert_eq!(
        Browser::api().get(&untrusting.url("/readyz")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(idp.calls(DISCOVERY), 0, "no request got through TLS");

    let extra = format!("    ca_file: {}\n", ca.display());
    let pc = Portcullis::start(Conf::default().provider(&idp.provider_yaml(&extra))).await;
    pc.wait_readyz(StatusCode::OK).await;
    let mut b = Browser::new();
    let r = sign_in_via(&pc, &mut b, &idp, "/home").await;
    assert_eq!(r.location(), "/home", "{}", pc.logs());
    assert!(b.has_session());
    assert_eq!(idp.token_calls(), 1);
    assert_eq!(idp.calls("/userinfo"), 1);
}

/// An IdP that comes up after Portcullis: `/readyz` is 503, then turns 200
/// by itself (discovery retried, no restart), and sign-in works.
#[tokio::test]
async fn an_idp_that_starts_later_turns_readyz_green_without_a_restart() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let item = format!(
        "  - type: oidc\n    id: fake\n    name: Fake IdP\n    issuer: {issuer}\n    client_id: {}\n    client_secret: {}\n    timeout: 2s\n",
        crate::support::fake_idp::CLIENT_ID,
        crate::support::fake_idp::CLIENT_SECRET
    );
    let pc = Portcullis::start(Conf::default().provider(&item)).await;
    assert!(pc.log_shows("OIDC discovery failed").await, "{}", pc.logs());
    assert_eq!(
        Browser::api().get(&pc.url("/readyz")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let pid = pc.pid();
    let Some(idp) = FakeIdp::start_at(port).await else {
        panic!("port {port} was taken before the IdP could start; rerun");
    };
    assert_eq!(idp.issuer, issuer);
    assert!(
        readyz_becomes(&pc, StatusCode::OK, Duration::from_secs(20)).await,
        "discovery never loaded after the IdP came up:\n{}",
        pc.logs()
    );
    assert_eq!(pc.pid(), pid);
    assert!(pc.logs().contains("OIDC discovery loaded"));
    let mut b = Browser::new();
    let r = sign_in_via(&pc, &mut b, &idp, "/later").await;
    assert_eq!(r.location(), "/later", "{}", pc.logs());
}

/// The JWKS is fetched with discovery and then cached: sign-ins verify
/// their ID tokens without asking the IdP for its keys again.
#[tokio::test]
async fn the_jwks_is_cached_not_fetched_per_sign_in() {
    let idp = FakeIdp::start().await;
    let pc = Portcullis::start(Conf::default().provider(&idp.provider_yaml(""))).await;
    pc.wait_readyz(StatusCode::OK).await;
    assert_eq!(idp.calls(DISCOVERY), 1);
    assert_eq!(idp.calls("/jwks"), 1);
    for i in 0..3 {
        let mut b = Browser::new();
        let r = sign_in_via(&pc, &mut b, &idp, "/home").await;
        assert_eq!(r.location(), "/home", "sign-in {i}: {}", pc.logs());
    }
    assert_eq!(idp.token_calls(), 3);
    assert_eq!(idp.calls("/userinfo"), 3);
    assert_eq!(idp.calls("/jwks"), 1, "the JWKS was fetched again");
    assert_eq!(idp.calls(DISCOVERY), 1);
}
