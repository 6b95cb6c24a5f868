//! No open redirect: the shared corpus, every line, through every door
//! that takes a redirect target.

use http::StatusCode;

use crate::support::*;

const ALLOWED: &str = "www.whitelisteddomain.tld";

/// A target is fine when it is a same-site path or on the allowed host.
pub(crate) fn assert_safe(target: &str, what: &str, payload: &str) {
    if target.is_empty() {
        return;
    }
    let lower = target.to_ascii_lowercase();
    assert!(
        !lower.starts_with("javascript:") && !lower.starts_with("data:"),
        "{what} for {payload:?} gave {target:?}"
    );
    if target.starts_with('/') {
        let b = target.as_bytes();
        assert!(
            b.len() == 1 || (b[1] != b'/' && b[1] != b'\\'),
            "{what} for {payload:?} gave a network path {target:?}"
        );
        return;
    }
    let url = url::Url::parse(target)
        .unwrap_or_else(|e| panic!("{what} for {payload:?} gave unparsable {target:?}: {e}"));
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{what} for {payload:?} gave userinfo {target:?}"
    );
    assert_eq!(
        url.host_str(),
        Some(ALLOWED),
        "{what} for {payload:?} sent the browser to {target:?}"
    );
}

async fn portcullis() -> Portcullis {
    Portcullis::start(
        Conf::default()
            .public_url("http://www.whitelisteddomain.tld")
            .extra("redirects:\n  allowed_domains: [www.whitelisteddomain.tld]\n"),
    )
    .await
}

#[tokio::test]
async fn the_corpus_never_escapes_through_callback_url_or_rd() {
    let pc = portcullis().await;
    let corpus = open_redirect_corpus();
    assert!(corpus.len() >= 559, "corpus of {} lines", corpus.len());
    let mut b = Browser::new();
    let page = b.get(&pc.url("/auth/signin")).await;
    let token = page.hidden("csrfToken").unwrap();
    for payload in &corpus {
        let enc: String = url::form_urlencoded::byte_serialize(payload.as_bytes()).collect();
        for param in ["callbackUrl", "rd"] {
            let page = b.get(&pc.url(&format!("/auth/signin?{param}={enc}"))).await;
            assert_eq!(page.status, StatusCode::OK);
            assert_safe(
                &page.hidden("callbackUrl").unwrap(),
                "sign-in form",
                payload,
            );
        }
        let r = b
            .post_form(
                &pc.url("/auth/signout"),
                &[("csrfToken", &token), ("callbackUrl", payload)],
            )
            .await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert_safe(r.location(), "sign-out redirect", payload);
    }
    // And through a real sign-in for a sample of the nastiest (argon2 is slow by design).
    for payload in corpus.iter().filter(|p| p.contains(ALLOWED)).take(40) {
        let mut fresh = Browser::new();
        let page = fresh.get(&pc.url("/auth/signin")).await;
        let token = page.hidden("csrfToken").unwrap();
        let r = fresh
            .post_form(
                &pc.url("/auth/callback/credentials"),
                &[
                    ("csrfToken", &token),
                    ("callbackUrl", payload),
                    ("email", ALICE.0),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert_safe(r.location(), "sign-in redirect", payload);
    }
}

#[tokio::test]
async fn the_corpus_never_escapes_through_forwarded_uris() {
    let pc = portcullis().await;
    let mut b = Browser::new();
    for payload in open_redirect_corpus() {
        if payload.bytes().any(|c| c.is_ascii_control()) {
            continue; // not a valid header value; hyper refuses to send it
        }
        for headers in [
            vec![
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", ALLOWED),
                ("x-forwarded-uri", payload.as_str()),
            ],
            vec![("x-original-url", payload.as_str())],
        ] {
            let r = b.get_with(&pc.url("/auth/forward-auth"), &headers).await;
            if r.status == StatusCode::FOUND {
                let loc = r.location();
                assert_safe(loc, "forward-auth redirect", &payload);
                let cb = url::Url::parse(loc)
                    .unwrap()
                    .query_pairs()
                    .find(|(k, _)| k == "callbackUrl")
                    .map(|(_, v)| v.into_owned());
                if let Some(cb) = cb {
                    assert_safe(&cb, "forward-auth callbackUrl", &payload);
                }
            }
            let r = b.get_with(&pc.url("/auth/auth-request"), &headers).await;
            // 403 for paths with dot segments (refused outright), else 401.
            assert!(
                matches!(r.status.as_u16(), 401 | 403),
                "{payload:?}: {}",
                r.status
            );
            if r.status == StatusCode::UNAUTHORIZED {
                let signin = r.header("x-auth-signin").unwrap();
                assert_safe(signin, "auth-request sign-in URL", &payload);
            }
        }
    }
}
