//! OIDC sign-in against a fake provider, for what a certified one will
//! not do: forged ID tokens, replayed nonces and states, a provider that
//! is down or slow. (The real `oidc-provider` flows are in `oidc`.)

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;

use crate::support::fake_idp::{FakeIdp, Scenario};
use crate::support::*;

async fn setup(extra: &str) -> (FakeIdp, Portcullis) {
    let idp = FakeIdp::start().await;
    let pc = Portcullis::start(Conf::default().provider(&idp.provider_yaml(extra))).await;
    wait_ready(&pc).await;
    (idp, pc)
}

/// `/readyz` turns 200 once discovery loaded (bounded wait).
async fn wait_ready(pc: &Portcullis) {
    pc.wait_readyz(StatusCode::OK).await;
}

/// Starts a sign-in: returns the provider's authorization URL.
async fn start(pc: &Portcullis, b: &mut Browser, callback: &str) -> String {
    let page = b
        .get(&pc.url(&format!("/auth/signin?callbackUrl={callback}")))
        .await;
    assert!(page.body.contains("Sign in with Fake IdP"), "{}", page.body);
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &pc.url("/auth/signin/fake"),
            &[("csrfToken", &token), ("callbackUrl", callback)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    r.location().to_string()
}

/// The provider's answer: the callback URL with code and state.
async fn authorize(b: &mut Browser, url: &str) -> String {
    let r = b.get(url).await;
    assert_eq!(r.status, StatusCode::FOUND);
    r.location().to_string()
}

async fn sign_in(pc: &Portcullis, b: &mut Browser) -> Resp {
    let auth = start(pc, b, "/home").await;
    let cb = authorize(b, &auth).await;
    b.get(&cb).await
}

#[tokio::test]
async fn a_good_token_signs_in_with_pkce_state_and_nonce() {
    let (idp, pc) = setup("").await;
    let mut b = Browser::new();
    let auth = start(&pc, &mut b, "/home").await;
    let u = url::Url::parse(&auth).unwrap();
    let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], pc.url("/auth/callback/fake"));
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43 && q["code_challenge"].len() == 43);
    let cb = authorize(&mut b, &auth).await;
    let r = b.get(&cb).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, "/home"),
        "{}",
        pc.logs()
    );
    assert!(b.has_session());
    let s = b.get(&pc.url("/auth/session")).await;
    assert_eq!(s.json()["user"]["email"], "fay@example.com");
    assert_eq!(idp.token_calls(), 1);
}

/// The log written after `from` (bytes), once it shows `needle` (5 s at most).
async fn log_after(pc: &Portcullis, from: usize, needle: &str) -> String {
    for _ in 0..100 {
        let tail = pc.logs().get(from..).unwrap_or("").to_string();
        if tail.contains(needle) {
            return tail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {needle:?} in the log after byte {from}:\n{}", pc.logs());
}

#[tokio::test]
async fn forged_id_tokens_are_refused() {
    let (idp, pc) = setup("").await;
    // Each case with the reason the refusal logs for it.
    let cases = [
        ("wrong key", Scenario::WrongKey, "bad signature"),
        (
            "wrong aud",
            Scenario::Claim("aud", json!("someone-else")),
            "audience does not name this client",
        ),
        (
            "extra untrusted aud",
            Scenario::Claim("aud", json!(["portcullis", "evil-client"])),
            "audience does not name this client, or names untrusted ones",
        ),
        (
            "wrong azp",
            Scenario::Claim("azp", json!("evil-client")),
            "azp \"evil-client\" is not this client",
        ),
        (
            "wrong iss",
            Scenario::Claim("iss", json!("http://evil.example")),
            "issuer \"http://evil.example\" is not the provider's",
        ),
        (
            "expired",
            Scenario::Claim("exp", json!(1_000_000_000)),
            "the ID token expired",
        ),
        (
            "the ID token was issued in the future",
            Scenario::Claim("iat", json!(4_000_000_000u64)),
            "the ID token was issued in the future",
        ),
        ("no nonce", Scenario::RemoveClaim("nonce"), "nonce mismatch"),
        (
            "other nonce",
            Scenario::Claim("nonce", json!("not-the-flows-nonce")),
            "nonce mismatch",
        ),
        (
            "no sub",
            Scenario::RemoveClaim("sub"),
            "the ID token has no subject",
        ),
        (
            "alg none",
            Scenario::AlgNone,
            "algorithm \"none\" is not allowed",
        ),
        (
            "HS256 keyed with the client secret",
            Scenario::Hs256WithClientSecret,
            "algorithm \"HS256\" is not allowed",
        ),
    ];
    for (what, scenario, reason) in cases {
        idp.set(scenario);
        let from = pc.logs().len();
        let mut b = Browser::new();
        let r = sign_in(&pc, &mut b).await;
        assert_eq!(
            r.location(),
            "/auth/error?error=OAuthCallbackError",
            "{what}: {} {}",
            r.status,
            r.body
        );
        assert!(!b.has_session(), "{what} produced a session");
        let tail = log_after(&pc, from, "sign-in refused").await;
        let line = tail
            .lines()
            .find(|l| l.contains("sign-in refused"))
            .unwrap()
            // A JSON log escapes the quotes a reason quotes.
            .replace("\\\"", "\"");
        assert!(
            line.contains(&format!("invalid ID token: {reason}")),
            "{what}: the refusal should say {reason:?}:\n{line}"
        );
    }
}

#[tokio::test]
async fn a_replayed_nonce_is_refused() {
    let (idp, pc) = setup("").await;
    let mut first = Browser::new();
    assert_eq!(sign_in(&pc, &mut first).await.location(), "/home");
    let old = idp.issued().pop().unwrap();
    idp.set(Scenario::Fixed(old));
    let mut second = Browser::new();
    let r = sign_in(&pc, &mut second).await;
    assert_eq!(r.location(), "/auth/error?error=OAuthCallbackError");
    assert!(!second.has_session());
}

#[tokio::test]
async fn state_mismatch_replay_expiry_and_foreign_browsers_fail_cleanly() {
    let (_idp, pc) = setup("").await;

    // A callback whose state matches no flow of this browser.
    let mut b = Browser::new();
    let auth = start(&pc, &mut b, "/x").await;
    let cb = authorize(&mut b, &auth).await;
    let mut u = url::Url::parse(&cb).unwrap();
    let code = u
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let state = u
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let forged = format!("{}{}", &state[..16], "A".repeat(state.len() - 16));
    u.set_query(Some(&format!("code={code}&state={forged}")));
    let r = b.get(u.as_str()).await;
    assert_eq!(r.location(), "/auth/error?error=OAuthCallbackError");
    assert!(!b.has_session());

    // The same callback in another browser (no flow cookie).
    let mut other = Browser::new();
    let r = other.get(&cb).await;
    assert_eq!(r.location(), "/auth/error?error=OAuthCallbackError");
    assert!(!other.has_session());
    let page = other.get(&pc.url(r.location())).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);

    // A used state replayed with a copy of the flow cookie.
    let mut c = Browser::new();
    let auth = start(&pc, &mut c, "/y").await;
    let cb = authorize(&mut c, &auth).await;
    let saved = c.jar.clone();
    assert_eq!(c.get(&cb).await.location(), "/y");
    let mut replay = Browser::new();
    replay.jar = saved
        .into_iter()
        .filter(|(k, _)| k.contains(".flow.") || k.contains("csrf"))
        .collect();
    let r = replay.get(&cb).await;
    assert_eq!(r.location(), "/auth/error?error=OAuthCallbackError");
    assert!(!replay.has_session());
}

#[tokio::test]
async fn an_expired_flow_fails() {
    let idp = FakeIdp::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .provider(&idp.provider_yaml(""))
            .extra("cookies:\n  flow_max_age: 1s\n"),
    )
    .await;
    wait_ready(&pc).await;
    let mut b = Browser::new();
    let auth = start(&pc, &mut b, "/z").await;
    let cb = authorize(&mut b, &auth).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = b.get(&cb).await;
    assert_eq!(r.location(), "/auth/error?error=OAuthCallbackError");
    assert!(!b.has_session());
    assert!(pc.log_shows("expired").await);
}

#[tokio::test]
async fn unverified_emails_are_refused_unless_allowed() {
    let (idp, pc) = setup("").await;
    idp.set_user(
        json!({"sub": "u9", "email": "mallory@example.com", "email_verified": false, "name": "M"}),
    );
    let mut b = Browser::new();
    assert_eq!(
        sign_in(&pc, &mut b).await.location(),
        "/auth/error?error=AccessDenied"
    );
    assert!(!b.has_session());

    let (idp2, lax) = setup("    insecure_accept_unverified_email: true\n").await;
    idp2.set_user(json!({"sub": "u9", "email": "mallory@example.com", "email_verified": false}));
    let mut b = Browser::new();
    assert_eq!(sign_in(&lax, &mut b).await.location(), "/home");
    // The weakened setting is called out at start; the strict one is not.
    assert!(
        lax.log_shows("insecure setting: provider").await,
        "{}",
        lax.logs()
    );
    assert!(!pc.logs().contains("insecure setting"), "{}", pc.logs());
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched_on_its_unknown_kid() {
    let (idp, pc) = setup("").await;
    idp.set(Scenario::RotatedKey);
    let mut b = Browser::new();
    let r = sign_in(&pc, &mut b).await;
    assert_eq!(r.location(), "/home", "{}", pc.logs());
}

#[tokio::test]
async fn a_slow_identity_provider_gives_a_clear_502_within_the_timeout() {
    let (idp, pc) = setup("").await;
    idp.set(Scenario::SlowToken(Duration::from_secs(8)));
    let mut b = Browser::new();
    let auth = start(&pc, &mut b, "/home").await;
    let cb = authorize(&mut b, &auth).await;
    let t = Instant::now();
    let r = b.get(&cb).await;
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.body.contains("identity provider could not be reached"),
        "{}",
        r.body
    );
    assert!(
        r.set_cookies()
            .iter()
            .any(|c| c.contains(".flow.") && c.contains("Max-Age=0")),
        "the spent flow cookie is cleared"
    );
    assert!(!b.has_session());
}

#[tokio::test]
async fn a_provider_that_is_down_makes_readyz_fail_and_sign_in_503() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let item = format!(
        "  - type: oidc\n    id: fake\n    name: Down IdP\n    issuer: {dead}\n    client_id: c\n    client_secret: s\n    timeout: 1s\n"
    );
    let pc = Portcullis::start(Conf::default().provider(&item)).await;
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
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("identity provider"));
    assert!(!b.has_session());
    // The credentials provider still works beside it.
    let r = b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(r.location(), "/");
}

#[tokio::test]
async fn sign_out_ends_the_session_at_the_provider_too() {
    let (idp, pc) = setup("").await;
    let mut b = Browser::new();
    sign_in(&pc, &mut b).await;
    let page = b.get(&pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &pc.url("/auth/signout"),
            &[("csrfToken", &token), ("callbackUrl", "/bye")],
        )
        .await;
    let to = url::Url::parse(r.location()).unwrap();
    assert_eq!(to.path(), "/logout");
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["post_logout_redirect_uri"], pc.url("/bye"));
    assert_eq!(q["client_id"], "portcullis");
    // A cookie session keeps its ID token in the sign-out-only cookie:
    // the hint is the very token the provider issued.
    assert_eq!(
        q.get("id_token_hint"),
        idp.issued().last(),
        "{}",
        r.location()
    );
    assert!(!b.has_session());
    assert!(b.jar.keys().all(|k| !k.contains("id-token")), "{:?}", b.jar);
}

/// Signs in at the fake IdP and signs out; returns the end-session query.
async fn sign_out_query(
    pc: &Portcullis,
    b: &mut Browser,
) -> std::collections::HashMap<String, String> {
    let page = b.get(&pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &pc.url("/auth/signout"),
            &[("csrfToken", &token), ("callbackUrl", "/bye")],
        )
        .await;
    let to = url::Url::parse(r.location())
        .unwrap_or_else(|e| panic!("{e}: {} {}", r.status, r.location()));
    assert_eq!(to.path(), "/logout");
    to.query_pairs().into_owned().collect()
}

/// The ID token cookie is bound to its session: another user's (copied
/// into this browser) is never sent as this session's hint, and with
/// `store_tokens: false` no ID token cookie is written at all.
#[tokio::test]
async fn the_id_token_cookie_serves_only_its_own_session() {
    let (idp, pc) = setup("").await;
    let mut fay = Browser::new();
    assert_eq!(sign_in(&pc, &mut fay).await.location(), "/home");
    let fays = fay.jar["authjs.id-token"].clone();

    idp.set_user(
        json!({"sub": "user-2", "email": "gus@example.com", "email_verified": true, "name": "Gus"}),
    );
    let mut gus = Browser::new();
    assert_eq!(sign_in(&pc, &mut gus).await.location(), "/home");
    let gus_token = idp.issued().last().cloned().unwrap();
    // Gus's browser with Fay's ID token cookie: no hint, the client id only.
    let mut mixed = Browser::new();
    mixed.jar = gus.jar.clone();
    mixed.jar.insert("authjs.id-token".into(), fays);
    let q = sign_out_query(&pc, &mut mixed).await;
    assert!(!q.contains_key("id_token_hint"), "{q:?}");
    assert_eq!(q["client_id"], "portcullis");
    // Gus's own browser gets his own hint.
    let q = sign_out_query(&pc, &mut gus).await;
    assert_eq!(q.get("id_token_hint"), Some(&gus_token));

    let (_idp, lean) = setup("    store_tokens: false\n").await;
    let mut b = Browser::new();
    let r = sign_in(&lean, &mut b).await;
    assert_eq!(r.location(), "/home");
    assert!(
        r.set_cookie("authjs.id-token").is_none(),
        "{:?}",
        r.set_cookies()
    );
    let q = sign_out_query(&lean, &mut b).await;
    assert!(!q.contains_key("id_token_hint"), "{q:?}");
}

#[tokio::test]
async fn database_sessions_send_the_id_token_hint_at_sign_out() {
    let redis =
        crate::support::redis::RedisServer::start(crate::support::redis::RedisOpts::default());
    let idp = FakeIdp::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .provider(&idp.provider_yaml(""))
            .extra(&format!(
                "session:\n  strategy: database\nstore:\n  redis_url: \"{}\"\n",
                redis.url()
            )),
    )
    .await;
    wait_ready(&pc).await;
    let mut b = Browser::new();
    sign_in(&pc, &mut b).await;
    let page = b.get(&pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &pc.url("/auth/signout"),
            &[("csrfToken", &token), ("callbackUrl", "/bye")],
        )
        .await;
    let to = url::Url::parse(r.location()).unwrap();
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["id_token_hint"].split('.').count(), 3);
    assert_eq!(q["client_id"], "portcullis");
}

/// An IdP endpoint that redirects is an error, never a hop (SSRF).
#[tokio::test]
async fn provider_redirects_are_never_followed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = FakeIdp::start().await;
    let to = format!("{}/.well-known/openid-configuration", target.issuer);
    tokio::spawn(async move {
        for _ in 0..200 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let item = format!(
        "  - type: oidc\n    id: fake\n    issuer: http://{addr}\n    client_id: c\n    client_secret: s\n    timeout: 1s\n"
    );
    let pc = Portcullis::start(Conf::default().provider(&item)).await;
    assert!(pc.log_shows("answered 302").await, "{}", pc.logs());
    assert_eq!(
        Browser::api().get(&pc.url("/readyz")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// `POST {base}/signin/{oidc}` without a CSRF token (or with a forged one,
/// or with another browser's) is refused with MissingCSRF: no flow cookie,
/// no trip to the provider, no session.
#[tokio::test]
async fn oidc_sign_in_without_csrf_starts_no_flow() {
    let (idp, pc) = setup("").await;
    let url = pc.url("/auth/signin/fake");
    let other_token = {
        let mut o = Browser::new();
        o.get(&pc.url("/auth/signin"))
            .await
            .hidden("csrfToken")
            .unwrap()
    };
    let mut b = Browser::new();
    let r = b.post_form(&url, &[("callbackUrl", "/home")]).await;
    let mut answers = vec![("no cookie, no token", r)];
    let page = b.get(&pc.url("/auth/signin")).await;
    assert!(page.hidden("csrfToken").is_some());
    let r = b
        .post_form(&url, &[("csrfToken", "0000"), ("callbackUrl", "/home")])
        .await;
    answers.push(("forged token", r));
    let r = b
        .post_form(
            &url,
            &[("csrfToken", &other_token), ("callbackUrl", "/home")],
        )
        .await;
    answers.push(("another browser's token", r));
    let r = b.post_form(&url, &[("callbackUrl", "/home")]).await;
    answers.push(("cookie, no token", r));
    for (what, r) in &answers {
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::FOUND, "/auth/error?error=MissingCSRF"),
            "{what}: {}",
            r.body
        );
        assert!(
            r.set_cookies().iter().all(|c| !c.contains(".flow.")),
            "{what} started a flow: {:?}",
            r.set_cookies()
        );
    }
    // Auth.js clients (X-Auth-Return-Redirect) get the same, as JSON.
    let r = b
        .post_form_with(
            &url,
            &[("callbackUrl", "/home")],
            &[("x-auth-return-redirect", "1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["url"], "/auth/error?error=MissingCSRF");
    assert!(b.jar.keys().all(|k| !k.contains(".flow.")), "{:?}", b.jar);
    assert!(!b.has_session());
    assert_eq!(idp.token_calls(), 0);
    assert!(pc.log_shows("refused: CSRF token missing or wrong").await);
}

/// Starts a sign-in with `callback` as it is posted; returns the answer.
async fn post_start(pc: &Portcullis, b: &mut Browser, callback: &str) -> Resp {
    let page = b.get(&pc.url("/auth/signin")).await;
    let token = page.hidden("csrfToken").unwrap();
    b.post_form(
        &pc.url("/auth/signin/fake"),
        &[("csrfToken", &token), ("callbackUrl", callback)],
    )
    .await
}

/// The flow cookie is bounded in size: a same-origin `callbackUrl` over
/// the flow's bound (1 KiB, src/authn/oauth.rs) or over the redirect
/// policy's (4 KiB) is not stored; the flow still works and lands on the
/// home page. A form over `limits.max_form_bytes` is a 413, with no flow.
#[tokio::test]
async fn oversized_callback_urls_are_refused_cleanly() {
    let (_idp, pc) = setup("").await;
    let home = pc.url("/");
    for len in [1100usize, 5000] {
        let callback = format!("/{}", "a".repeat(len));
        let mut b = Browser::new();
        let r = post_start(&pc, &mut b, &callback).await;
        assert_eq!(r.status, StatusCode::FOUND, "{len}: {}", r.body);
        let flow = r
            .set_cookies()
            .into_iter()
            .find(|c| c.contains(".flow."))
            .expect("a flow cookie");
        assert!(
            flow.len() < 1500,
            "{len}: a flow cookie of {} bytes",
            flow.len()
        );
        assert!(!flow.contains(&"a".repeat(100)));
        let cb = authorize(&mut b, r.location()).await;
        let r = b.get(&cb).await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::FOUND, home.as_str()),
            "{len}: {}",
            pc.logs()
        );
        assert!(b.has_session());
    }
    // Just under the bound, the target is kept.
    let callback = format!("/{}", "b".repeat(1000));
    let mut b = Browser::new();
    let r = post_start(&pc, &mut b, &callback).await;
    let cb = authorize(&mut b, r.location()).await;
    assert_eq!(b.get(&cb).await.location(), callback);
    // Over the form limit (16 KiB by default): refused before any flow.
    let mut b = Browser::new();
    let r = post_start(&pc, &mut b, &format!("/{}", "c".repeat(20_000))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.set_cookies().iter().all(|c| !c.contains(".flow.")));
    assert!(b.jar.keys().all(|k| !k.contains(".flow.")));
}

/// `cookies.max_flows`: a browser with more pending sign-ins than the
/// bound loses the oldest (its callback fails cleanly); the others finish.
#[tokio::test]
async fn max_flows_evicts_the_oldest_flow_end_to_end() {
    let idp = FakeIdp::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .provider(&idp.provider_yaml(""))
            .extra("cookies:\n  max_flows: 2\n"),
    )
    .await;
    wait_ready(&pc).await;
    let mut b = Browser::new();
    let mut callbacks = Vec::new();
    for tab in ["/one", "/two", "/three"] {
        let auth = start(&pc, &mut b, tab).await;
        callbacks.push(authorize(&mut b, &auth).await);
        // Flows started within one second sort by name otherwise.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let flows = b.jar.keys().filter(|k| k.contains(".flow.")).count();
    assert_eq!(flows, 2, "{:?}", b.jar.keys().collect::<Vec<_>>());
    let r = b.get(&callbacks[0]).await;
    assert_eq!(r.location(), "/auth/error?error=OAuthCallbackError");
    assert!(!b.has_session());
    assert!(pc.log_shows("no pending sign-in for this state").await);
    assert_eq!(
        b.get(&callbacks[2]).await.location(),
        "/three",
        "{}",
        pc.logs()
    );
    assert_eq!(
        b.get(&callbacks[1]).await.location(),
        "/two",
        "{}",
        pc.logs()
    );
    assert_eq!(idp.token_calls(), 2);
}
