//! OIDC sign-in against the real, certified `oidc-provider` (Node), in
//! proxy mode: query and form_post responses, groups and claims to
//! headers, several tabs at once, and sign-out at the provider.

use std::time::Duration;

use http::StatusCode;

use crate::support::idp::{CLIENT_ID, CLIENT_SECRET, Idp, form_post_fields, idp_login, idp_logout};
use crate::support::*;

struct Setup {
    idp: Idp,
    pc: Portcullis,
    up: Upstream,
}

/// A real IdP and Portcullis in front of a recording upstream.
async fn setup(provider_extra: &str, extra: &str) -> Setup {
    setup_with_users(&[], provider_extra, extra).await
}

/// [`setup`], with more IdP users beside alice, bob and mallory.
async fn setup_with_users(users: &[serde_json::Value], provider_extra: &str, extra: &str) -> Setup {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut config = Idp::default_config(
        &format!("{origin}/auth/callback/corp"),
        &[&format!("{origin}/"), &format!("{origin}/bye")],
    );
    config["users"]
        .as_array_mut()
        .unwrap()
        .extend(users.iter().cloned());
    let idp = Idp::start(config).await;
    let up = Upstream::start().await;
    let item = format!(
        "  - type: oidc\n    id: corp\n    name: Corp SSO\n    issuer: {}\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    scopes: [openid, email, profile, groups]\n{provider_extra}",
        idp.issuer
    );
    let conf = Conf::default()
        .upstream(&up.url())
        .provider(&item)
        .extra(extra);
    let pc = Portcullis::start_at(conf, &[], port).await;
    let mut b = Browser::api();
    for _ in 0..200 {
        if b.get(&pc.url("/readyz")).await.status == StatusCode::OK {
            return Setup { idp, pc, up };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("discovery never loaded:\n{}", pc.logs());
}

/// Clicks "Sign in with Corp SSO" on the sign-in page for `callback`.
async fn start(s: &Setup, b: &mut Browser, callback: &str) -> String {
    let enc: String = url::form_urlencoded::byte_serialize(callback.as_bytes()).collect();
    let page = b
        .get(&s.pc.url(&format!("/auth/signin?callbackUrl={enc}")))
        .await;
    assert!(page.body.contains("Sign in with Corp SSO"));
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &s.pc.url("/auth/signin/corp"),
            &[("csrfToken", &token), ("callbackUrl", callback)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert!(r.location().starts_with(&s.idp.issuer), "{}", r.location());
    r.location().to_string()
}

#[tokio::test]
async fn a_browser_signs_in_with_the_real_provider_and_the_upstream_sees_groups() {
    let s = setup(
        "",
        "headers:\n  access_token: header\n  claims:\n    X-Auth-Request-Sub: sub\n",
    )
    .await;
    let mut b = Browser::new();
    let r = b.get(&s.pc.url("/reports")).await;
    assert_eq!(r.location(), "/auth/signin?callbackUrl=%2Freports");
    let auth = start(&s, &mut b, "/reports").await;
    let back = idp_login(&mut b, &auth, "alice").await;
    let cb = back.location().to_string();
    assert!(cb.starts_with(&s.pc.url("/auth/callback/corp?")), "{cb}");
    let r = b.get(&cb).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, "/reports"),
        "{}",
        s.pc.logs()
    );
    let r = b.get(&s.pc.url("/reports")).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = s.up.last();
    assert_eq!(seen.header("x-auth-request-user"), Some("alice-sub"));
    assert_eq!(
        seen.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    let tok = b
        .jar
        .get("authjs.session-token")
        .cloned()
        .unwrap_or_default();
    let (_, claims, _) = node(&repo_root().join("tests/fixtures/authjs/jwt.mjs"), &[], &serde_json::json!({"op": "decode", "secret": SECRET, "salt": "authjs.session-token", "token": tok}).to_string());
    assert_eq!(
        seen.header("x-auth-request-groups"),
        Some("admins,staff"),
        "{claims}"
    );
    assert_eq!(
        seen.header("x-auth-request-preferred-username"),
        Some("alice"),
        "{claims}"
    );
    assert_eq!(seen.header("x-auth-request-sub"), Some("alice-sub"));
    let at = seen
        .header("x-auth-request-access-token")
        .expect("access token forwarded");
    assert!(at.len() > 20);
    // The access token is the IdP's: userinfo accepts it.
    let info = Browser::api()
        .get_with(
            &s.idp.url("/me"),
            &[("authorization", &format!("Bearer {at}"))],
        )
        .await;
    assert_eq!(info.json()["sub"], "alice-sub");
    assert_eq!(s.idp.counters().await["authorization_code"], 1);
}

#[tokio::test]
async fn form_post_callbacks_are_accepted() {
    let s = setup("    response_mode: form_post\n", "").await;
    let mut b = Browser::new();
    let auth = start(&s, &mut b, "/fp").await;
    let page = idp_login(&mut b, &auth, "bob").await;
    let (action, fields) = form_post_fields(&page);
    assert_eq!(action, s.pc.url("/auth/callback/corp"));
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = b.post_form(&action, &fields).await;
    assert_eq!(r.location(), "/fp", "{}", s.pc.logs());
    let session = b.get(&s.pc.url("/auth/session")).await.json();
    assert_eq!(session["user"]["email"], "bob@other.org");
}

#[tokio::test]
async fn tabs_sign_in_in_any_order() {
    let s = setup("", "").await;
    let mut b = Browser::new();
    let first = start(&s, &mut b, "/tab-one").await;
    let second = start(&s, &mut b, "/tab-two").await;
    // The second tab finishes first; then the first one.
    let cb2 = idp_login(&mut b, &second, "alice")
        .await
        .location()
        .to_string();
    assert_eq!(b.get(&cb2).await.location(), "/tab-two");
    let cb1 = idp_login(&mut b, &first, "alice")
        .await
        .location()
        .to_string();
    assert_eq!(b.get(&cb1).await.location(), "/tab-one", "{}", s.pc.logs());
}

#[tokio::test]
async fn access_rules_apply_to_provider_users() {
    let s = setup("", "access:\n  allowed_groups: [admins]\n").await;
    let mut bob = Browser::new();
    let auth = start(&s, &mut bob, "/").await;
    let cb = idp_login(&mut bob, &auth, "bob")
        .await
        .location()
        .to_string();
    assert_eq!(
        bob.get(&cb).await.location(),
        "/auth/error?error=AccessDenied"
    );
    assert!(!bob.has_session());
    let mut mallory = Browser::new();
    let auth = start(&s, &mut mallory, "/").await;
    let cb = idp_login(&mut mallory, &auth, "mallory")
        .await
        .location()
        .to_string();
    assert_eq!(
        mallory.get(&cb).await.location(),
        "/auth/error?error=AccessDenied",
        "unverified e-mail"
    );
}

#[tokio::test]
async fn sign_out_ends_the_provider_session_and_comes_back() {
    let s = setup("", "").await;
    let mut b = Browser::new();
    let auth = start(&s, &mut b, "/").await;
    let cb = idp_login(&mut b, &auth, "alice")
        .await
        .location()
        .to_string();
    b.get(&cb).await;
    assert!(b.has_session());
    let page = b.get(&s.pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &s.pc.url("/auth/signout"),
            &[("csrfToken", &token), ("callbackUrl", "/bye")],
        )
        .await;
    assert!(r.location().starts_with(&s.idp.issuer), "{}", r.location());
    assert!(!b.has_session());
    let back = idp_logout(&mut b, r.location()).await;
    assert!(
        back.location().starts_with(&s.pc.url("/bye")),
        "{} {}",
        back.status,
        back.location()
    );
    // The IdP session is gone: the next sign-in asks for the password again.
    let auth = start(&s, &mut b, "/").await;
    let r = b.get(&auth).await;
    assert!(r.location().contains("/interaction/"), "{}", r.location());
}

#[tokio::test]
async fn configured_authorization_params_are_sent_and_only_those() {
    let s = setup(
        "    authorization_params:\n      prompt: login\n      login_hint: alice\n",
        "",
    )
    .await;
    let mut b = Browser::new();
    let auth = start(&s, &mut b, "/").await;
    let q: std::collections::HashMap<String, String> = url::Url::parse(&auth)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q.get("prompt").map(String::as_str), Some("login"));
    assert_eq!(q.get("login_hint").map(String::as_str), Some("alice"));
    assert!(!q.contains_key("acr_values") && !q.contains_key("hd"));
    // The real provider honours prompt=login: it asks for the password.
    let cb = idp_login(&mut b, &auth, "alice")
        .await
        .location()
        .to_string();
    assert_eq!(b.get(&cb).await.location(), "/");
}

#[tokio::test]
async fn store_tokens_false_keeps_only_the_identity_in_the_cookie() {
    let s = setup("    store_tokens: false\n", "").await;
    let mut b = Browser::new();
    let auth = start(&s, &mut b, "/").await;
    let cb = idp_login(&mut b, &auth, "alice")
        .await
        .location()
        .to_string();
    b.get(&cb).await;
    let cookie = b.jar["authjs.session-token"].clone();
    let (_, claims, _) = node(
        &repo_root().join("tests/fixtures/authjs/jwt.mjs"),
        &[],
        &serde_json::json!({"op": "decode", "secret": SECRET, "salt": "authjs.session-token", "token": cookie}).to_string(),
    );
    let claims: serde_json::Value = serde_json::from_str(&claims).unwrap();
    assert_eq!(claims["email"], "alice@example.com");
    for k in ["access_token", "refresh_token", "id_token", "expires_at"] {
        assert!(claims.get(k).is_none(), "{k} kept: {claims}");
    }
    assert!(cookie.len() < 1200, "cookie of {} bytes", cookie.len());
}

/// `auto_redirect` on the only provider: the sign-in page goes straight to
/// the IdP (the flow still works end to end), except when it shows an error.
#[tokio::test]
async fn auto_redirect_skips_the_sign_in_page_for_the_only_provider() {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(Idp::default_config(
        &format!("{origin}/auth/callback/corp"),
        &[],
    ))
    .await;
    let up = Upstream::start().await;
    let item = format!(
        "  - type: oidc\n    id: corp\n    issuer: {}\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    auto_redirect: true\n",
        idp.issuer
    );
    let conf = Conf {
        users: vec![],
        ..Conf::default()
    }
    .upstream(&up.url())
    .provider(&item);
    let pc = Portcullis::start_at(conf, &[], port).await;
    pc.wait_readyz(StatusCode::OK).await;
    let mut b = Browser::new();
    let r = b.get(&pc.url("/reports")).await;
    let r = b.get(&pc.url(r.location())).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert!(
        r.location().starts_with(&format!("{}/auth?", idp.issuer)),
        "{}",
        r.location()
    );
    let back = idp_login(&mut b, r.location(), "alice").await;
    let r = b.get(back.location()).await;
    assert_eq!(r.location(), "/reports", "{}", pc.logs());
    b.get(&pc.url("/reports")).await;
    assert_eq!(
        up.last().header("x-auth-request-email"),
        Some("alice@example.com")
    );
    // With an error to show, the page is shown (no redirect loop).
    let page = Browser::new()
        .get(&pc.url("/auth/signin?error=AccessDenied"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Sign in with corp"), "{}", page.body);
}

/// `headers.access_token: authorization`: after a sign-in at the real
/// provider, the upstream gets `Authorization: Bearer <access token>` (the
/// provider's own token: its userinfo accepts it), in place of whatever
/// Authorization the client sent, and no `X-Auth-Request-Access-Token`.
#[tokio::test]
async fn access_token_as_authorization_bearer_reaches_the_upstream() {
    let s = setup("", "headers:\n  access_token: authorization\n").await;
    let mut b = Browser::new();
    let auth = start(&s, &mut b, "/api").await;
    let cb = idp_login(&mut b, &auth, "alice")
        .await
        .location()
        .to_string();
    assert_eq!(b.get(&cb).await.location(), "/api", "{}", s.pc.logs());
    let r = b
        .get_with(&s.pc.url("/api"), &[("authorization", "Bearer client-own")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = s.up.last();
    assert_eq!(seen.header_count("authorization"), 1);
    let at = seen
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("Authorization: Bearer <access token>");
    assert_ne!(at, "client-own");
    assert!(at.len() > 20, "{at}");
    assert!(seen.header("x-auth-request-access-token").is_none());
    assert_eq!(seen.header("x-auth-request-user"), Some("alice-sub"));
    let info = Browser::api()
        .get_with(
            &s.idp.url("/me"),
            &[("authorization", &format!("Bearer {at}"))],
        )
        .await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    assert_eq!(info.json()["sub"], "alice-sub");
}

/// The claims of a JWT's payload (no check: the test reads what it got).
fn jwt_payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// RP-initiated logout with `id_token_hint` for a `jwt` session: the ID
/// token lives in its own sealed cookie whose Path is the sign-out path,
/// so the session cookie of a user with 10 groups stays under 1,500 bytes
/// and only sign-out receives the ID token; sign-out sends it to the real
/// provider as `id_token_hint` (which the provider accepts, coming back
/// to the registered URL) and clears the cookie.
#[tokio::test]
async fn jwt_sessions_send_the_id_token_hint_from_a_sign_out_only_cookie() {
    let dora = serde_json::json!({
        "sub": "dora-sub",
        "email": "dora@example.com",
        "email_verified": true,
        "name": "Dora Explorer",
        "preferred_username": "dora",
        "groups": (1..=10).map(|i| format!("team-{i:02}")).collect::<Vec<_>>(),
    });
    let s = setup_with_users(&[dora], "", "").await;
    let mut b = Browser::new();
    let auth = start(&s, &mut b, "/reports").await;
    let cb = idp_login(&mut b, &auth, "dora")
        .await
        .location()
        .to_string();
    let r = b.get(&cb).await;
    assert_eq!(r.location(), "/reports", "{}", s.pc.logs());

    // The session cookie: one cookie, small, without the ID token.
    let session = r
        .set_cookie("authjs.session-token")
        .expect("a session cookie")
        .to_string();
    assert!(
        r.set_cookie("authjs.session-token.0").is_none(),
        "chunked: {session}"
    );
    let value = b.jar["authjs.session-token"].clone();
    assert!(
        value.len() < 1500,
        "a session cookie of {} bytes for 10 groups",
        value.len()
    );
    let (_, claims, _) = node(
        &repo_root().join("tests/fixtures/authjs/jwt.mjs"),
        &[],
        &serde_json::json!({"op": "decode", "secret": SECRET, "salt": "authjs.session-token", "token": value}).to_string(),
    );
    let claims: serde_json::Value = serde_json::from_str(&claims).unwrap();
    assert_eq!(claims["groups"].as_array().unwrap().len(), 10, "{claims}");
    assert!(claims.get("id_token").is_none(), "{claims}");

    // The ID token cookie: sealed, HttpOnly, Lax, only for the sign-out path.
    let id_cookie = r
        .set_cookie("authjs.id-token")
        .expect("an ID token cookie")
        .to_string();
    assert_eq!(
        cookie_path(&id_cookie),
        Some("/auth/signout"),
        "{id_cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Lax", "Max-Age="] {
        assert!(id_cookie.contains(attr), "{attr}: {id_cookie}");
    }
    assert!(
        !id_cookie.contains("Secure"),
        "http public URL: {id_cookie}"
    );
    let sealed = b.jar["authjs.id-token"].clone();
    assert_eq!(sealed.split('.').count(), 5, "a JWE: {sealed}");
    assert!(!sealed.contains(&cb), "{sealed}");

    // Normal requests do not carry it; the sign-out path does.
    for path in [
        "/reports",
        "/",
        "/auth/session",
        "/auth/signin",
        "/auth/signoutx",
    ] {
        assert!(
            !b.cookie_header_for(path).contains("authjs.id-token"),
            "{path} would get it"
        );
    }
    assert!(
        b.cookie_header_for("/auth/signout")
            .contains("authjs.id-token=")
    );
    let r = b.get(&s.pc.url("/reports")).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = s.up.last();
    assert!(
        !seen.header("cookie").unwrap_or("").contains("id-token"),
        "{:?}",
        seen.header("cookie")
    );
    assert_eq!(seen.header("x-auth-request-user"), Some("dora-sub"));

    // Sign-out sends it as id_token_hint and clears it.
    let page = b.get(&s.pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &s.pc.url("/auth/signout"),
            &[("csrfToken", &token), ("callbackUrl", "/bye")],
        )
        .await;
    assert!(r.location().starts_with(&s.idp.issuer), "{}", r.location());
    let q: std::collections::HashMap<String, String> = url::Url::parse(r.location())
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let hint = q.get("id_token_hint").expect("id_token_hint");
    let hint_claims = jwt_payload(hint);
    assert_eq!(hint_claims["sub"], "dora-sub");
    assert_eq!(hint_claims["aud"], CLIENT_ID);
    assert_eq!(hint_claims["iss"], s.idp.issuer.as_str());
    assert_eq!(q["post_logout_redirect_uri"], s.pc.url("/bye"));
    let cleared = r
        .set_cookie("authjs.id-token")
        .expect("the ID token cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(cookie_path(cleared), Some("/auth/signout"), "{cleared}");
    assert!(!b.has_session());
    assert!(!b.jar.contains_key("authjs.id-token"));
    // The real provider takes the hint and comes back to /bye.
    let back = idp_logout(&mut b, r.location()).await;
    assert!(
        back.location().starts_with(&s.pc.url("/bye")),
        "{} {}\n{}",
        back.status,
        back.location(),
        s.idp.logs()
    );
    // Its session is gone: the next sign-in asks for the password again.
    let auth = start(&s, &mut b, "/").await;
    let r = b.get(&auth).await;
    assert!(r.location().contains("/interaction/"), "{}", r.location());
}
