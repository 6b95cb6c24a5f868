//! IdP bearer tokens (`providers[].accept_bearer_tokens`): a real ID token
//! from the real `oidc-provider` passes in proxy mode and both forward-auth
//! endpoints; forged, expired and foreign tokens from the fake IdP are 401
//! and never reach the upstream, and never fall back to the cookie.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::fake_idp::{FakeIdp, Forge};
use crate::support::idp::{self, Idp, idp_login};
use crate::support::*;

const VERIFIER: &str = "bearer-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

/// What Traefik and Caddy send: the original request in X-Forwarded-*.
const TRAEFIK: [(&str, &str); 4] = [
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "app.example.com"),
    ("x-forwarded-uri", "/api/items"),
    ("x-forwarded-method", "GET"),
];
/// What nginx `auth_request` sends.
const NGINX: [(&str, &str); 2] = [
    ("x-original-url", "https://app.example.com/api/items"),
    ("x-original-method", "GET"),
];

async fn wait_ready(pc: &Portcullis) {
    let mut b = Browser::api();
    for _ in 0..200 {
        if b.get(&pc.url("/readyz")).await.status == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("discovery never loaded:\n{}", pc.logs());
}

/// An ID token for alice from the real IdP: the code flow driven by hand,
/// as a machine client's own sign-in would.
async fn real_id_token(idp: &Idp, cb: &str) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", idp::CLIENT_ID)
        .append_pair("redirect_uri", cb)
        .append_pair("scope", "openid email profile groups")
        .append_pair("state", "st")
        .append_pair("nonce", "n")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let auth = format!("{}/auth?{}", idp.issuer, q.finish());
    let mut b = Browser::new();
    let r = idp_login(&mut b, &auth, "alice").await;
    let code: String = url::Url::parse(r.location())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", idp::CLIENT_ID, idp::CLIENT_SECRET))
    );
    let t = Browser::api()
        .post_form_with(
            &idp.url("/token"),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", cb),
                ("code_verifier", VERIFIER),
            ],
            &[("authorization", &basic)],
        )
        .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    t.json()["id_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_real_idp_id_token_as_bearer_passes_with_identity_headers_everywhere() {
    let cb = format!("http://127.0.0.1:{}/cb", free_port());
    let idp = Idp::start(Idp::default_config(&cb, &[])).await;
    let up = Upstream::start().await;
    let item = format!(
        "  - type: oidc\n    id: corp\n    issuer: {}\n    client_id: {}\n    client_secret: {}\n    scopes: [openid, email, profile, groups]\n    accept_bearer_tokens: true\n",
        idp.issuer,
        idp::CLIENT_ID,
        idp::CLIENT_SECRET
    );
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).provider(&item)).await;
    wait_ready(&pc).await;
    let token = real_id_token(&idp, &cb).await;
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];

    let r = Browser::api().get_with(&pc.url("/api/items"), &auth).await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.body, pc.logs());
    assert!(
        r.set_cookies().is_empty(),
        "a bearer request sets no cookie"
    );
    let got = up.last();
    assert_eq!(got.header("x-auth-request-user"), Some("alice-sub"));
    assert_eq!(
        got.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(got.header("x-auth-request-groups"), Some("admins,staff"));
    assert_eq!(
        got.header("x-auth-request-preferred-username"),
        Some("alice")
    );

    let mut h: Vec<(&str, &str)> = TRAEFIK.to_vec();
    h.extend(auth);
    let r = Browser::api()
        .get_with(&pc.url("/auth/forward-auth"), &h)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-auth-request-email"), Some("alice@example.com"));
    let mut h: Vec<(&str, &str)> = NGINX.to_vec();
    h.extend(auth);
    let r = Browser::api()
        .get_with(&pc.url("/auth/auth-request"), &h)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-auth-request-user"), Some("alice-sub"));
}

/// The fake IdP behind Portcullis (proxy mode) accepting bearer tokens.
async fn fake(extra: &str) -> (FakeIdp, Upstream, Portcullis) {
    let idp = FakeIdp::start().await;
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .provider(&idp.provider_yaml(&format!("    accept_bearer_tokens: true\n{extra}"))),
    )
    .await;
    wait_ready(&pc).await;
    (idp, up, pc)
}

/// The status of a bearer request through the proxy and both forward-auth
/// endpoints (a browser Accept: a failed bearer is still a 401, never a
/// redirect to sign in).
async fn statuses(pc: &Portcullis, token: &str) -> [StatusCode; 3] {
    let bearer = format!("Bearer {token}");
    let mut b = Browser::new();
    let proxy = b
        .get_with(&pc.url("/api/items"), &[("authorization", &bearer)])
        .await
        .status;
    let mut h: Vec<(&str, &str)> = TRAEFIK.to_vec();
    h.push(("authorization", &bearer));
    let fwd = b.get_with(&pc.url("/auth/forward-auth"), &h).await.status;
    let mut h: Vec<(&str, &str)> = NGINX.to_vec();
    h.push(("authorization", &bearer));
    let nginx = b.get_with(&pc.url("/auth/auth-request"), &h).await.status;
    [proxy, fwd, nginx]
}

#[tokio::test]
async fn forged_expired_and_foreign_bearer_tokens_get_401_and_never_reach_the_upstream() {
    let (idp, up, pc) = fake("").await;
    let ok = StatusCode::OK;
    let no = StatusCode::UNAUTHORIZED;
    // The control: a good token passes (so the refusals below mean something).
    let good = idp.bearer(Forge::None, |_, _| {});
    assert_eq!(statuses(&pc, &good).await, [ok; 3], "{}", pc.logs());
    assert_eq!(up.count(), 1);
    assert_eq!(
        up.last().header("x-auth-request-email"),
        Some("fay@example.com")
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let other_issuer = FakeIdp::start().await;
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong issuer",
            idp.bearer(Forge::None, |_, c| {
                c["iss"] = json!("https://evil.example.com")
            }),
        ),
        (
            "issuer with a trailing slash",
            idp.bearer(Forge::None, |_, c| {
                c["iss"] = json!(format!("{}/", idp.issuer))
            }),
        ),
        (
            "another IdP's token, its own issuer and key",
            other_issuer.bearer(Forge::None, |_, _| {}),
        ),
        (
            "wrong audience",
            idp.bearer(Forge::None, |_, c| c["aud"] = json!("another-client")),
        ),
        (
            "audience list without us",
            idp.bearer(Forge::None, |_, c| c["aud"] = json!(["a", "b"])),
        ),
        (
            "no audience",
            idp.bearer(Forge::None, |_, c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "expired",
            idp.bearer(Forge::None, |_, c| {
                c["iat"] = json!(now - 600);
                c["exp"] = json!(now - 60);
            }),
        ),
        (
            "no exp",
            idp.bearer(Forge::None, |_, c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "not yet valid",
            idp.bearer(Forge::None, |_, c| c["nbf"] = json!(now + 600)),
        ),
        (
            "issued in the future",
            idp.bearer(Forge::None, |_, c| c["iat"] = json!(now + 600)),
        ),
        (
            "no subject",
            idp.bearer(Forge::None, |_, c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        (
            "bad signature (a key not in the JWKS)",
            idp.bearer(Forge::WrongKey, |_, _| {}),
        ),
        ("alg none", idp.bearer(Forge::AlgNone, |_, _| {})),
        (
            "HS256 keyed with the public key",
            idp.bearer(Forge::Hs256WithPublicKey, |_, _| {}),
        ),
        ("unknown kid", idp.bearer(Forge::UnknownKid, |_, _| {})),
        (
            "crit header",
            idp.bearer(Forge::None, |h, _| h["crit"] = json!(["exp"])),
        ),
        (
            "ES384 claimed over an ES256 key",
            idp.bearer(Forge::None, |h, _| h["alg"] = json!("ES384")),
        ),
        ("claims edited after signing", {
            let t = idp.bearer(Forge::None, |_, _| {});
            let mut parts: Vec<String> = t.split('.').map(String::from).collect();
            let mut c: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
            c["email"] = json!("boss@example.com");
            parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
            parts.join(".")
        }),
        (
            "five parts (a JWE)",
            format!("{}.x.y", idp.bearer(Forge::None, |_, _| {})),
        ),
        (
            "a back-channel logout token",
            idp.logout_token("user-1", false, |_| {}),
        ),
        ("garbage in JWT shape", "abc.def.ghi".into()),
    ];
    for (what, token) in &cases {
        assert_eq!(statuses(&pc, token).await, [no; 3], "{what}");
    }
    assert_eq!(up.count(), 1, "a refused token reached the upstream");
    let logs = pc.logs();
    assert!(logs.contains("bearer token refused"), "{logs}");
    // The refusal says why in the log, never the token itself.
    assert!(!logs.contains(&cases[0].1), "a token was logged");
}

#[tokio::test]
async fn a_failed_bearer_never_falls_back_to_the_session_cookie() {
    let (idp, up, pc) = fake("").await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert!(b.has_session());
    assert_eq!(b.get(&pc.url("/app")).await.status, StatusCode::OK);
    let forged = idp.bearer(Forge::WrongKey, |_, _| {});
    let r = b
        .get_with(
            &pc.url("/app"),
            &[("authorization", &format!("Bearer {forged}"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(up.count(), 1);
    // A valid bearer wins over the cookie: the request is the token's user.
    let good = idp.bearer(Forge::None, |_, _| {});
    let r = b
        .get_with(
            &pc.url("/app"),
            &[("authorization", &format!("Bearer {good}"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        up.last().header("x-auth-request-email"),
        Some("fay@example.com")
    );
}

#[tokio::test]
async fn two_authorization_headers_with_a_jwt_among_them_are_refused() {
    let (idp, up, pc) = fake("").await;
    let good = idp.bearer(Forge::None, |_, _| {});
    let r = Browser::api()
        .get_with(
            &pc.url("/app"),
            &[
                ("authorization", &format!("Bearer {good}")),
                ("authorization", "Basic YWxpY2U6cHc="),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn bearer_audiences_admit_access_tokens_for_an_api() {
    let (idp, up, pc) = fake("    bearer_audiences: [https://api.example.com]\n").await;
    let api = idp.bearer(Forge::None, |_, c| {
        c["aud"] = json!(["https://api.example.com", "https://other.example.com"]);
        c["azp"] = json!("some-machine-client");
    });
    assert_eq!(statuses(&pc, &api).await, [StatusCode::OK; 3]);
    assert_eq!(up.last().header("x-auth-request-user"), Some("user-1"));
    let elsewhere = idp.bearer(Forge::None, |_, c| {
        c["aud"] = json!("https://other.example.com")
    });
    assert_eq!(
        statuses(&pc, &elsewhere).await,
        [StatusCode::UNAUTHORIZED; 3]
    );
}

#[tokio::test]
async fn bearer_identities_pass_the_same_sign_in_rules_and_access_lists() {
    // The provider admits only `admins`; fay is `staff`: a 403, not a pass.
    let (idp, up, pc) = fake("    allowed_groups: [admins]\n").await;
    let staff = idp.bearer(Forge::None, |_, _| {});
    assert_eq!(statuses(&pc, &staff).await, [StatusCode::FORBIDDEN; 3]);
    let admin = idp.bearer(Forge::None, |_, c| c["groups"] = json!(["admins"]));
    assert_eq!(statuses(&pc, &admin).await, [StatusCode::OK; 3]);
    assert_eq!(up.count(), 1);
    // An unverified e-mail is refused as at sign-in.
    let unverified = idp.bearer(Forge::None, |_, c| {
        c["groups"] = json!(["admins"]);
        c["email_verified"] = json!(false);
    });
    assert_eq!(statuses(&pc, &unverified).await, [StatusCode::FORBIDDEN; 3]);
}

#[tokio::test]
async fn bearer_headers_are_left_alone_when_no_provider_accepts_them() {
    let idp = FakeIdp::start().await;
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .provider(&idp.provider_yaml("")),
    )
    .await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    // The app's own bearer JWT rides along with the session: not ours.
    let apps_own = idp.bearer(Forge::WrongKey, |_, _| {});
    let bearer = format!("Bearer {apps_own}");
    let r = b
        .get_with(&pc.url("/app"), &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let got = up.last();
    assert_eq!(got.header("x-auth-request-email"), Some(ALICE.0));
    assert_eq!(got.header("authorization"), Some(bearer.as_str()));
    // And a bearer alone is no identity.
    let r = Browser::api()
        .get_with(
            &pc.url("/app"),
            &[(
                "authorization",
                &format!("Bearer {}", idp.bearer(Forge::None, |_, _| {})),
            )],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn accept_bearer_tokens_is_refused_on_a_plain_oauth_provider() {
    let dir = TempDir::new("bearer-oauth");
    let cfg = dir.write(
        "p.yaml",
        "public_url: https://auth.example.com\nsecrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - type: oauth\n    id: gh\n    client_id: x\n    client_secret: y\n    authorization_url: https://github.com/login/oauth/authorize\n    token_url: https://github.com/login/oauth/access_token\n    userinfo_url: https://api.github.com/user\n    accept_bearer_tokens: true\n  - type: oidc\n    id: corp\n    issuer: https://idp.example.com\n    client_id: c\n    client_secret: s\n    bearer_audiences: [https://api.example.com]\n",
    );
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("providers[0].accept_bearer_tokens"), "{err}");
    assert!(err.contains("providers[1].bearer_audiences"), "{err}");
}
