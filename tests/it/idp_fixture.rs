//! The IdP fixture itself (tests/fixtures/idp, the real `oidc-provider`),
//! driven by hand as a relying party would: these tests document what the
//! OIDC tests can rely on.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::idp::*;
use crate::support::*;

const VERIFIER: &str = "fixture-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A client callback URL on a port where nothing listens: the tests stop
/// at the redirect and never follow it.
fn callback() -> String {
    format!("http://127.0.0.1:{}/auth/callback/oidc", free_port())
}

fn authorize_url(idp: &Idp, redirect_uri: &str, extra: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid email profile groups")
        .append_pair("state", "st-123")
        .append_pair("nonce", "n-456")
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    format!("{}/auth?{}", idp.issuer, q.finish())
}

fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// A POST to the token endpoint with client_secret_basic.
async fn token(idp: &Idp, fields: &[(&str, &str)]) -> Resp {
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    Browser::api()
        .post_form_with(&idp.url("/token"), fields, &[("authorization", &basic)])
        .await
}

/// A JWT's (header, payload), not verified.
fn jwt_parts(jwt: &str) -> (serde_json::Value, serde_json::Value) {
    let mut it = jwt.split('.');
    let mut part = || {
        let b = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()
    };
    let h = part();
    (h, part())
}

/// Signs alice in; the code from the redirect back.
async fn alice_code(b: &mut Browser, idp: &Idp, cb: &str) -> String {
    let r = idp_login(b, &authorize_url(idp, cb, &[]), "alice").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        r.location().starts_with(&format!("{cb}?")),
        "{}",
        r.location()
    );
    let q = query(r.location());
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], idp.issuer);
    q["code"].clone()
}

#[tokio::test]
async fn code_flow_with_pkce_then_refresh_and_counters() {
    let cb = callback();
    let idp = Idp::start(Idp::default_config(&cb, &[])).await;

    let d = Browser::api()
        .get(&idp.url("/.well-known/openid-configuration"))
        .await
        .json();
    assert_eq!(d["issuer"], idp.issuer);
    assert_eq!(d["authorization_endpoint"], idp.url("/auth"));
    assert_eq!(d["token_endpoint"], idp.url("/token"));
    assert_eq!(d["end_session_endpoint"], idp.url("/session/end"));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert!(
        d["response_modes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("form_post"))
    );

    let mut b = Browser::new();
    let code = alice_code(&mut b, &idp, &cb).await;
    assert!(
        b.jar.keys().any(|k| k.starts_with("_session")),
        "IdP session cookie: {:?}",
        b.jar
    );

    let r = token(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &cb),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert!(
        t["access_token"].is_string() && t["refresh_token"].is_string(),
        "{t}"
    );
    let (h, claims) = jwt_parts(t["id_token"].as_str().unwrap());
    assert_eq!(h["alg"], "RS256");
    let jwks = Browser::api().get(&idp.url("/jwks")).await.json();
    assert_eq!(jwks["keys"][0]["kid"], h["kid"]);
    assert!(jwks["keys"][0].get("d").is_none(), "private key published");
    assert_eq!(claims["iss"], idp.issuer);
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], "alice-sub");
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["groups"], json!(["admins", "staff"]));

    let at = format!("Bearer {}", t["access_token"].as_str().unwrap());
    let r = Browser::api()
        .get_with(&idp.url("/me"), &[("authorization", &at)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["groups"], json!(["admins", "staff"]));

    assert_eq!(
        idp.counters().await,
        json!({"authorization_code": 1, "refresh_token": 0})
    );

    let r = token(
        &idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t2 = r.json();
    assert_ne!(t2["access_token"], t["access_token"]);
    assert_eq!(
        jwt_parts(t2["id_token"].as_str().unwrap()).1["groups"],
        json!(["admins", "staff"])
    );

    // A code is single-use; failed requests are counted too.
    let r = token(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &cb),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(
        idp.counters().await,
        json!({"authorization_code": 2, "refresh_token": 1})
    );
    idp.reset_counters().await;
    assert_eq!(
        idp.counters().await,
        json!({"authorization_code": 0, "refresh_token": 0})
    );
}

#[tokio::test]
async fn pkce_s256_is_required_and_checked() {
    let cb = callback();
    let idp = Idp::start(Idp::default_config(&cb, &[])).await;
    let mut b = Browser::new();

    // No challenge: straight back to the client with an error.
    let url = authorize_url(&idp, &cb, &[])
        .replace("code_challenge=", "x_code_challenge=")
        .replace("code_challenge_method=", "x_code_challenge_method=");
    let r = b.get(&url).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let q = query(r.location());
    assert_eq!(q["error"], "invalid_request", "{}", r.location());

    // `plain` is not accepted.
    let url = authorize_url(&idp, &cb, &[])
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    let r = b.get(&url).await;
    assert_eq!(
        query(r.location())["error"],
        "invalid_request",
        "{}",
        r.location()
    );

    // A wrong verifier is refused at the token endpoint.
    let code = alice_code(&mut b, &idp, &cb).await;
    let r = token(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &cb),
            (
                "code_verifier",
                "another-verifier-0123456789-abcdefghijklmnopq",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn login_page_refuses_a_wrong_password_then_accepts_the_right_one() {
    let cb = callback();
    let idp = Idp::start(Idp::default_config(&cb, &[])).await;
    let mut b = Browser::new();

    let r = b.get(&authorize_url(&idp, &cb, &[])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let interaction = idp.url(r.location());
    assert!(
        r.location().starts_with("/interaction/"),
        "{}",
        r.location()
    );
    let uid = r.location().trim_start_matches("/interaction/").to_string();
    let page = b.get(&interaction).await;
    assert_eq!(page.status, StatusCode::OK);
    let action = format!("/interaction/{uid}/login");
    assert!(
        page.body
            .contains(&format!("<form method=\"post\" action=\"{action}\">"))
            && page.body.contains("<input name=\"login\"")
            && page
                .body
                .contains("<input name=\"password\" type=\"password\">"),
        "{}",
        page.body
    );

    let r = b
        .post_form(
            &idp.url(&action),
            &[("login", "alice"), ("password", "wrong")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body
            .contains("<p class=\"error\">Invalid login or password</p>")
            && r.body.contains(&action),
        "{}",
        r.body
    );

    // The e-mail works as the login too, in any case.
    let r = b
        .post_form(
            &idp.url(&action),
            &[("login", "Alice@Example.com"), ("password", IDP_PASSWORD)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("{}/auth/{uid}", idp.issuer));
    let r = b.get(r.location()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        r.location().starts_with(&format!("{cb}?code=")),
        "{}",
        r.location()
    );
}

#[tokio::test]
async fn form_post_answers_and_the_idp_session_skips_the_form() {
    let cb = callback();
    let idp = Idp::start(Idp::default_config(&cb, &[])).await;
    let mut b = Browser::new();

    let r = idp_login(
        &mut b,
        &authorize_url(&idp, &cb, &[("response_mode", "form_post")]),
        "bob",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (action, fields) = form_post_fields(&r);
    assert_eq!(action, cb);
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["code", "state", "iss"], "{fields:?}");
    assert_eq!(fields[1].1, "st-123");
    assert_eq!(fields[2].1, idp.issuer);

    // Signed in at the IdP: the next authorization comes straight back.
    let r = b.get(&authorize_url(&idp, &cb, &[])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        r.location().starts_with(&format!("{cb}?code=")),
        "{}",
        r.location()
    );
    // prompt=login asks again (idp_login fills the form); another account
    // logging in first signs the previous one out (a self-posting form).
    let r = idp_login(
        &mut b,
        &authorize_url(&idp, &cb, &[("prompt", "login")]),
        "alice",
    )
    .await;
    assert!(
        r.location().starts_with(&format!("{cb}?code=")),
        "{}",
        r.location()
    );
    // prompt=consent is granted at once, as consent always is here.
    let r = idp_login(
        &mut b,
        &authorize_url(&idp, &cb, &[("prompt", "consent")]),
        "alice",
    )
    .await;
    assert!(
        r.location().starts_with(&format!("{cb}?code=")),
        "{}",
        r.location()
    );
    let code = query(r.location())["code"].clone();
    let r = token(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &cb),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(
        jwt_parts(r.json()["id_token"].as_str().unwrap()).1["sub"],
        "alice-sub"
    );
}

#[tokio::test]
async fn rp_initiated_logout_returns_to_the_client_and_ends_the_idp_session() {
    let cb = callback();
    let after = format!("{}/signed-out", cb.trim_end_matches("/auth/callback/oidc"));
    let idp = Idp::start(Idp::default_config(&cb, &[&after])).await;
    let mut b = Browser::new();

    let code = alice_code(&mut b, &idp, &cb).await;
    let t = token(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &cb),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
    .json();

    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("id_token_hint", t["id_token"].as_str().unwrap())
        .append_pair("post_logout_redirect_uri", &after)
        .append_pair("state", "bye");
    let end = format!("{}/session/end?{}", idp.issuer, q.finish());

    // The confirmation page: a form that posts itself.
    let mut peek = Browser::new();
    peek.jar = b.jar.clone();
    let page = peek.get(&end).await;
    assert_eq!(page.status, StatusCode::OK);
    let (action, fields) = form_post_fields(&page);
    assert_eq!(action, idp.url("/session/end/confirm"));
    assert_eq!(fields[0].0, "xsrf");
    assert_eq!(fields[1], ("logout".to_string(), "yes".to_string()));

    let r = idp_logout(&mut b, &end).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("{after}?state=bye"));

    // The IdP session is gone: the form shows again; the refresh token,
    // bound to that session, is revoked.
    let r = b.get(&authorize_url(&idp, &cb, &[])).await;
    assert!(
        r.location().starts_with("/interaction/"),
        "{}",
        r.location()
    );
    let r = token(
        &idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn es256_keys_short_ttls_delay_and_kill() {
    let cb = callback();
    let mut cfg = Idp::default_config(&cb, &[]);
    cfg["keys_alg"] = json!("ES256");
    cfg["ttl"] = json!({"AccessToken": 2, "IdToken": 60});
    cfg["delay_ms"] = json!(300);
    cfg["rotate_refresh_tokens"] = json!(true);
    cfg["users"][0]["extra"] = json!({"department": "wonderland"});
    cfg["users"][0]["picture"] = json!("http://127.0.0.1/alice.png");
    let mut idp = Idp::start(cfg).await;
    let mut b = Browser::new();

    let started = std::time::Instant::now();
    let code = alice_code(&mut b, &idp, &cb).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(300 * 4));
    idp.set_delay_ms(0).await;
    let t = token(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &cb),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
    .json();
    assert_eq!(t["expires_in"], 2);
    let (h, c) = jwt_parts(t["id_token"].as_str().unwrap());
    assert_eq!(h["alg"], "ES256");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 60);
    assert_eq!(c["department"], "wonderland");
    assert_eq!(c["picture"], "http://127.0.0.1/alice.png");

    // Rotation on: a refresh answers a new refresh token, the old one dies.
    let rt = t["refresh_token"].as_str().unwrap();
    let r = token(
        &idp,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_ne!(r.json()["refresh_token"].as_str().unwrap(), rt);
    let r = token(
        &idp,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    idp.kill();
    assert!(std::net::TcpStream::connect(("127.0.0.1", idp.port)).is_err());
}

#[tokio::test]
async fn a_bad_config_fails_the_start() {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new("node")
            .arg(repo_root().join("tests/fixtures/idp/idp.mjs"))
            .env("IDP_PORT", free_port().to_string())
            .env(
                "IDP_CONFIG",
                json!({"clients": [{"client_id": "x", "client_secret": "s", "redirect_uris": ["not a url"]}]})
                    .to_string(),
            )
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid configuration"), "{err}");
}

#[tokio::test]
async fn refresh_token_policies() {
    for (policy, prompt, expect) in [
        ("never", None, false),
        ("offline_access", None, false),
        ("offline_access", Some("consent"), true),
    ] {
        let cb = callback();
        let mut cfg = Idp::default_config(&cb, &[]);
        cfg["refresh_tokens"] = json!(policy);
        let idp = Idp::start(cfg).await;
        let mut b = Browser::new();
        let mut extra = vec![("scope", "openid offline_access")];
        if let Some(p) = prompt {
            extra.push(("prompt", p));
        }
        let url = authorize_url(&idp, &cb, &[]).replace("scope=openid+email+profile+groups&", "");
        let r = idp_login(&mut b, &format!("{url}&{}", form_encode(&extra)), "alice").await;
        let code = query(r.location())["code"].clone();
        let t = token(
            &idp,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &cb),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
        .json();
        assert_eq!(
            t["refresh_token"].is_string(),
            expect,
            "{policy} {prompt:?}: {t}"
        );
    }
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
