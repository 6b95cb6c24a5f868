//! Session cookies: Auth.js interoperability both ways with the real
//! `@auth/core`, rotation, tampering, chunking, attributes, domains.

use http::StatusCode;
use serde_json::json;

use crate::support::*;

fn authjs(input: serde_json::Value) -> (i32, String, String) {
    node(
        &repo_root().join("tests/fixtures/authjs/jwt.mjs"),
        &[],
        &input.to_string(),
    )
}

/// Signs Alice in and returns the browser.
async fn signed_in(pc: &Portcullis) -> Browser {
    let mut b = Browser::api();
    let r = b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(r.location(), "/", "{}", r.body);
    b
}

#[tokio::test]
async fn auth_js_reads_our_cookie_and_we_read_theirs() {
    let pc = Portcullis::start(Conf::default()).await;
    let b = signed_in(&pc).await;
    let ours = b.jar["authjs.session-token"].clone();
    let (code, out, err) = authjs(
        json!({"op": "decode", "secret": SECRET, "salt": "authjs.session-token", "token": ours}),
    );
    assert_eq!(code, 0, "@auth/core could not decode our cookie: {err}");
    let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims["email"], ALICE.0);
    assert_eq!(claims["name"], ALICE.1);
    assert_eq!(claims["sub"], ALICE.0);
    assert!(claims["jti"].as_str().unwrap().len() == 36);
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());

    // A token @auth/core made, with a claim we do not know.
    let (code, theirs, err) = authjs(
        json!({"op": "encode", "secret": SECRET, "salt": "authjs.session-token",
        "token": {"name": "Nina Next", "email": "nina@example.com", "picture": "https://img.example.com/n.png", "sub": "u-42", "role": "editor"}}),
    );
    assert_eq!(code, 0, "{err}");
    let mut nb = Browser::api();
    nb.jar
        .insert("authjs.session-token".into(), theirs.trim().into());
    let s = nb.get(&pc.url("/auth/session")).await.json();
    assert_eq!(
        s,
        json!({"user": {"name": "Nina Next", "email": "nina@example.com", "image": "https://img.example.com/n.png"}, "expires": s["expires"]})
    );

    // When we re-issue it (update), the unknown claim survives, and Auth.js still reads it.
    let csrf = nb.get(&pc.url("/auth/csrf")).await.json()["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    let r = nb
        .post_form(&pc.url("/auth/session"), &[("csrfToken", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let reissued = nb.jar["authjs.session-token"].clone();
    assert_ne!(reissued, theirs.trim());
    let (code, out, _) = authjs(
        json!({"op": "decode", "secret": SECRET, "salt": "authjs.session-token", "token": reissued}),
    );
    assert_eq!(code, 0);
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(c["role"], "editor");
    assert_eq!(c["sub"], "u-42");
}

#[tokio::test]
async fn a_next_js_app_with_another_secret_or_cookie_name_cannot_be_read() {
    let pc = Portcullis::start(Conf::default()).await;
    for (secret, salt) in [
        (
            "some-other-secret-of-enough-length-000",
            "authjs.session-token",
        ),
        (SECRET, "__Secure-authjs.session-token"),
    ] {
        let (code, token, _) = authjs(
            json!({"op": "encode", "secret": secret, "salt": salt, "token": {"email": "mallory@example.com", "sub": "m"}}),
        );
        assert_eq!(code, 0);
        let mut b = Browser::api();
        b.jar
            .insert("authjs.session-token".into(), token.trim().into());
        assert_eq!(b.get(&pc.url("/auth/session")).await.body, "null");
    }
    // An expired token from Auth.js is no session either.
    let (_, expired, _) = authjs(
        json!({"op": "encode", "secret": SECRET, "salt": "authjs.session-token", "maxAge": -60, "token": {"email": "a@b.c", "sub": "x"}}),
    );
    let mut b = Browser::api();
    b.jar
        .insert("authjs.session-token".into(), expired.trim().into());
    assert_eq!(b.get(&pc.url("/auth/session")).await.body, "null");
}

#[tokio::test]
async fn rotated_secrets_keep_users_signed_in() {
    let old = Portcullis::start(Conf::default().secrets(&[OLD_SECRET])).await;
    let b = signed_in(&old).await;
    let cookie = b.jar["authjs.session-token"].clone();
    drop(old);
    let new = Portcullis::start(Conf::default().secrets(&[SECRET, OLD_SECRET])).await;
    let mut nb = Browser::api();
    nb.jar.insert("authjs.session-token".into(), cookie.clone());
    assert_eq!(
        nb.get(&new.url("/auth/session")).await.json()["user"]["email"],
        ALICE.0
    );
    // Retired secret: the old cookie is gone, cleanly.
    let newest = Portcullis::start(Conf::default().secrets(&[SECRET])).await;
    let mut gone = Browser::api();
    gone.jar.insert("authjs.session-token".into(), cookie);
    let r = gone.get(&newest.url("/auth/session")).await;
    assert_eq!(r.body, "null");
    assert!(
        r.set_cookie("authjs.session-token")
            .unwrap()
            .contains("Max-Age=0"),
        "a dead cookie is cleared"
    );
}

#[tokio::test]
async fn tampered_truncated_or_foreign_cookies_are_no_session() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let good = signed_in(&pc).await.jar["authjs.session-token"].clone();
    let mut flipped = good.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let parts: Vec<&str> = good.split('.').collect();
    let swapped_iv = format!(
        "{}.{}.{}.{}.{}",
        parts[0], parts[1], parts[3], parts[2], parts[4]
    );
    let cases = [
        String::from_utf8(flipped).unwrap(),
        good[..good.len() - 10].to_string(),
        swapped_iv,
        format!("{}.{}.{}.{}.", parts[0], parts[1], parts[2], parts[3]),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.".to_string(),
        "garbage".to_string(),
        String::new(),
    ];
    for bad in cases {
        let mut b = Browser::api();
        b.jar.insert("authjs.session-token".into(), bad.clone());
        let r = b.get(&pc.url("/private")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "cookie {bad:?} passed");
        assert_eq!(b.get(&pc.url("/auth/session")).await.body, "null");
    }
    assert_eq!(up.count(), 0, "no forged session may reach the upstream");
}

#[tokio::test]
async fn large_sessions_are_chunked_and_reordered_chunks_fail() {
    let pc = Portcullis::start(Conf::default()).await;
    // A big foreign token from Auth.js: 800 groups-worth of claims.
    let big: Vec<String> = (0..800).map(|i| format!("team-{i:04}")).collect();
    let (_, token, _) = authjs(
        json!({"op": "encode", "secret": SECRET, "salt": "authjs.session-token", "token": {"email": "big@example.com", "sub": "big", "groups": big}}),
    );
    let token = token.trim().to_string();
    assert!(token.len() > 3936 * 2, "token of {} bytes", token.len());
    let chunks: Vec<&str> = token
        .as_bytes()
        .chunks(3936)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let mut b = Browser::api();
    for (i, c) in chunks.iter().enumerate() {
        b.jar
            .insert(format!("authjs.session-token.{i}"), (*c).into());
    }
    assert_eq!(
        b.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        "big@example.com"
    );

    // Our re-issue writes chunks too, each under the browser's limit.
    let csrf = b.get(&pc.url("/auth/csrf")).await.json()["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    let r = b
        .post_form(&pc.url("/auth/session"), &[("csrfToken", &csrf)])
        .await;
    let written: Vec<&str> = r
        .set_cookies()
        .into_iter()
        .filter(|c| c.starts_with("authjs.session-token."))
        .collect();
    assert!(written.len() >= 3, "{written:?}");
    assert!(written.iter().all(|c| c.len() < 4096));

    let mut swapped = Browser::api();
    swapped
        .jar
        .insert("authjs.session-token.0".into(), chunks[1].into());
    swapped
        .jar
        .insert("authjs.session-token.1".into(), chunks[0].into());
    for (i, c) in chunks.iter().enumerate().skip(2) {
        swapped
            .jar
            .insert(format!("authjs.session-token.{i}"), (*c).into());
    }
    assert_eq!(swapped.get(&pc.url("/auth/session")).await.body, "null");
    let mut missing = Browser::api();
    missing
        .jar
        .insert("authjs.session-token.0".into(), chunks[0].into());
    missing
        .jar
        .insert("authjs.session-token.2".into(), chunks[2].into());
    assert_eq!(missing.get(&pc.url("/auth/session")).await.body, "null");
}

#[tokio::test]
async fn https_public_urls_get_secure_prefixed_cookies() {
    let pc = Portcullis::start(Conf::default().public_url("https://auth.example.com")).await;
    let mut b = Browser::new();
    let page = b.get(&pc.url("/auth/signin")).await;
    let csrf = page
        .set_cookie("__Host-authjs.csrf-token")
        .expect("__Host- CSRF cookie");
    assert!(
        csrf.contains("Secure")
            && csrf.contains("HttpOnly")
            && csrf.contains("Path=/")
            && !csrf.contains("Domain="),
        "{csrf}"
    );
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &pc.url("/auth/callback/credentials"),
            &[
                ("csrfToken", &token),
                ("email", ALICE.0),
                ("password", PASSWORD),
                ("callbackUrl", "/"),
            ],
        )
        .await;
    let s = r
        .set_cookie("__Secure-authjs.session-token")
        .expect("__Secure- session cookie");
    assert!(
        s.contains("Secure") && s.contains("HttpOnly") && s.contains("SameSite=Lax"),
        "{s}"
    );
    assert!(r.set_cookie("authjs.session-token").is_none());
    // The https cookie's key uses its own name as salt: Auth.js on https reads it.
    let (code, _, err) = authjs(
        json!({"op": "decode", "secret": SECRET, "salt": "__Secure-authjs.session-token", "token": b.jar["__Secure-authjs.session-token"]}),
    );
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn each_host_gets_the_cookie_domain_it_falls_under() {
    let pc = Portcullis::start(
        Conf::default().extra("cookies:\n  domains: [.corp.test, tools.example.org]\n"),
    )
    .await;
    for (host, domain) in [
        ("auth.corp.test", Some("corp.test")),
        ("a.b.tools.example.org", Some("tools.example.org")),
        ("127.0.0.1", None),
        ("evilcorp.test", None),
    ] {
        let mut b = Browser::new();
        let page = b.get_with(&pc.url("/auth/signin"), &[("host", host)]).await;
        let token = page.hidden("csrfToken").unwrap();
        let r = b
            .post_form_with(
                &pc.url("/auth/callback/credentials"),
                &[
                    ("csrfToken", &token),
                    ("email", ALICE.0),
                    ("password", PASSWORD),
                    ("callbackUrl", "/"),
                ],
                &[("host", host)],
            )
            .await;
        let sc = r
            .set_cookie("authjs.session-token")
            .unwrap_or_else(|| panic!("{host}: {}", r.body));
        match domain {
            Some(d) => assert!(sc.contains(&format!("Domain={d}")), "{host}: {sc}"),
            None => assert!(!sc.contains("Domain="), "{host}: {sc}"),
        }
    }
}

#[tokio::test]
async fn sessions_slide_after_update_age() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("session:\n  max_age: 1h\n  update_age: 1s\n"),
    )
    .await;
    let mut b = signed_in(&pc).await;
    let first = b.jar["authjs.session-token"].clone();
    let r = b.get(&pc.url("/a")).await;
    assert!(
        r.set_cookie("authjs.session-token").is_none(),
        "no re-issue within update_age"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = b.get(&pc.url("/a")).await;
    assert_eq!(r.status, StatusCode::OK);
    let sc = r
        .set_cookie("authjs.session-token")
        .expect("re-issued after update_age");
    assert!(sc.contains("Expires="));
    assert_ne!(b.jar["authjs.session-token"], first);
}

/// `POST {base}/session` (Auth.js `update()`) without its CSRF token, or
/// with another browser's, is refused with MissingCSRF and re-issues
/// nothing; the same request with the token does re-issue.
#[tokio::test]
async fn session_update_without_csrf_is_refused_and_changes_nothing() {
    let pc = Portcullis::start(Conf::default()).await;
    let mut b = signed_in(&pc).await;
    let before = b.jar["authjs.session-token"].clone();
    let url = pc.url("/auth/session");
    let json_body = |token: Option<&str>| {
        let v = match token {
            Some(t) => json!({"csrfToken": t, "data": {"name": "Mallory"}}),
            None => json!({"data": {"name": "Mallory"}}),
        };
        ("application/json", v.to_string().into_bytes())
    };
    let other_token = Browser::api().get(&pc.url("/auth/csrf")).await.json()["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = [
        b.request(http::Method::POST, &url, &[], Some(json_body(None)))
            .await,
        b.request(
            http::Method::POST,
            &url,
            &[],
            Some(json_body(Some(&other_token))),
        )
        .await,
        b.post_form(&url, &[]).await,
        b.post_form(&url, &[("csrfToken", "0000")]).await,
    ];
    for (i, r) in refused.iter().enumerate() {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "case {i}: {}", r.body);
        assert!(r.body.contains("MissingCSRF"), "case {i}: {}", r.body);
        assert!(
            r.set_cookies().iter().all(|c| !c.contains("session-token")),
            "case {i} touched the session: {:?}",
            r.set_cookies()
        );
    }
    assert_eq!(b.jar["authjs.session-token"], before, "session unchanged");
    let s = b.get(&url).await.json();
    assert_eq!(s["user"]["email"], ALICE.0);
    // With this browser's own token, the same update goes through.
    let csrf = b.get(&pc.url("/auth/csrf")).await.json()["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    let r = b
        .request(http::Method::POST, &url, &[], Some(json_body(Some(&csrf))))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.set_cookie("authjs.session-token").is_some());
}
