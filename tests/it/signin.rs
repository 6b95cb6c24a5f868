//! The credentials sign-in flow end to end through the proxy.

use http::StatusCode;

use crate::support::*;

#[tokio::test]
async fn browser_signs_in_and_upstream_sees_identity_not_our_cookies() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = Browser::new();

    let r = b.get(&pc.url("/reports?q=1")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.location(), "/auth/signin?callbackUrl=%2Freports%3Fq%3D1");
    assert_eq!(
        up.count(),
        0,
        "an unauthenticated request reached the upstream"
    );

    let r = b
        .sign_in(&pc.url(""), "Alice@Example.com ", PASSWORD, "/reports?q=1")
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert_eq!(r.location(), "/reports?q=1");
    let sc = r
        .set_cookie("authjs.session-token")
        .expect("session cookie");
    assert!(
        sc.contains("HttpOnly") && sc.contains("SameSite=Lax") && sc.contains("Path=/"),
        "{sc}"
    );
    assert!(
        !sc.contains("Secure"),
        "plain http must not set Secure: {sc}"
    );

    let r = b
        .get_with(
            &pc.url("/reports?q=1"),
            &[("cookie", &format!("{}; app_pref=dark", b.cookie_header()))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "upstream ok 0");
    let seen = up.last();
    assert_eq!(seen.uri, "/reports?q=1");
    assert_eq!(
        seen.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(
        seen.header("x-auth-request-user"),
        Some("alice@example.com")
    );
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@example.com"));
    assert_eq!(seen.header("x-auth-request-groups"), Some("admins,staff"));
    assert_eq!(seen.header("x-auth-request-name"), Some("Alice Liddell"));
    assert_eq!(
        seen.header("cookie"),
        Some("app_pref=dark"),
        "our cookies must not reach the upstream"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(
        seen.header("x-forwarded-host")
            .is_some_and(|h| h.starts_with("127.0.0.1:"))
    );
}

#[tokio::test]
async fn wrong_and_unknown_users_get_the_same_answer_and_no_session() {
    let pc = Portcullis::start(Conf::default()).await;
    let mut wrong = Browser::new();
    let a = wrong
        .sign_in(&pc.url(""), ALICE.0, "not the password", "/x")
        .await;
    let mut unknown = Browser::new();
    let b = unknown
        .sign_in(&pc.url(""), "nobody@example.com", PASSWORD, "/x")
        .await;
    for r in [&a, &b] {
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(
            r.location(),
            "/auth/signin?error=CredentialsSignin&code=credentials&callbackUrl=%2Fx"
        );
        assert!(r.set_cookie("authjs.session-token").is_none());
    }
    assert!(!wrong.has_session() && !unknown.has_session());
    // The page then says so, without naming which part was wrong.
    let page = wrong.get(&pc.url(a.location())).await;
    assert!(
        page.body
            .contains("Sign in failed. Check the details you provided are correct.")
    );
    assert_eq!(page.hidden("callbackUrl").as_deref(), Some("/x"));
}

#[tokio::test]
async fn sign_in_without_a_valid_csrf_pair_is_refused() {
    let pc = Portcullis::start(Conf::default()).await;
    let url = pc.url("/auth/callback/credentials");
    let creds = [
        ("email", ALICE.0),
        ("password", PASSWORD),
        ("callbackUrl", "/"),
    ];

    // No cookie, no token.
    let mut b = Browser::new();
    let r = b.post_form(&url, &creds).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::FOUND, "/auth/error?error=MissingCSRF")
    );

    // A real cookie, a forged token.
    let page = b.get(&pc.url("/auth/signin")).await;
    let token = page.hidden("csrfToken").unwrap();
    let forged = [("csrfToken", "0000"), creds[0], creds[1], creds[2]];
    let r = b.post_form(&url, &forged).await;
    assert_eq!(r.location(), "/auth/error?error=MissingCSRF");

    // A real token from another browser's cookie.
    let mut other = Browser::new();
    let r = other
        .post_form(&url, &[("csrfToken", &token), creds[0], creds[1], creds[2]])
        .await;
    assert_eq!(r.location(), "/auth/error?error=MissingCSRF");

    assert!(!b.has_session() && !other.has_session());
    let e = b.get(&pc.url("/auth/error?error=MissingCSRF")).await;
    assert_eq!(e.status, StatusCode::FORBIDDEN);

    // And the same browser with its own pair succeeds.
    let r = b
        .post_form(&url, &[("csrfToken", &token), creds[0], creds[1], creds[2]])
        .await;
    assert_eq!(r.location(), "/");
    assert!(b.has_session());
}

#[tokio::test]
async fn several_tabs_sign_in_without_breaking_each_other() {
    let pc = Portcullis::start(Conf::default()).await;
    let mut b = Browser::new();
    let tab1 = b.get(&pc.url("/auth/signin?callbackUrl=%2Fone")).await;
    let tab2 = b.get(&pc.url("/auth/signin?callbackUrl=%2Ftwo")).await;
    assert!(
        tab2.set_cookie("authjs.csrf-token").is_none(),
        "the second tab must not replace the first tab's CSRF cookie"
    );
    let post = |page: &Resp| {
        [
            ("csrfToken", page.hidden("csrfToken").unwrap()),
            ("callbackUrl", page.hidden("callbackUrl").unwrap()),
        ]
    };
    let [t1, c1] = post(&tab1);
    let r = b
        .post_form(
            &pc.url("/auth/callback/credentials"),
            &[
                (t1.0, &t1.1),
                (c1.0, &c1.1),
                ("email", ALICE.0),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.location(), "/one");
    let [t2, c2] = post(&tab2);
    let r = b
        .post_form(
            &pc.url("/auth/callback/credentials"),
            &[
                (t2.0, &t2.1),
                (c2.0, &c2.1),
                ("email", ALICE.0),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.location(), "/two");
}

#[tokio::test]
async fn auth_js_clients_get_json_urls_with_x_auth_return_redirect() {
    let pc = Portcullis::start(Conf::default()).await;
    let mut b = Browser::api();
    let csrf = b.get(&pc.url("/auth/csrf")).await.json()["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    let r = b
        .post_form_with(
            &pc.url("/auth/callback/credentials"),
            &[
                ("csrfToken", &csrf),
                ("callbackUrl", "/dash"),
                ("email", ALICE.0),
                ("password", PASSWORD),
            ],
            &[("x-auth-return-redirect", "1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["url"], "/dash");
    let s = b.get(&pc.url("/auth/session")).await.json();
    assert_eq!(s["user"]["email"], ALICE.0);
    assert_eq!(s["user"]["name"], ALICE.1);
    assert!(s["expires"].as_str().unwrap().ends_with('Z'));

    let r = b
        .post_form_with(
            &pc.url("/auth/signout"),
            &[("csrfToken", &csrf), ("callbackUrl", "/bye")],
            &[("x-auth-return-redirect", "1")],
        )
        .await;
    assert_eq!(r.json()["url"], "/bye");
    assert_eq!(b.get(&pc.url("/auth/session")).await.body, "null");
}

#[tokio::test]
async fn sign_out_needs_csrf_and_clears_the_session() {
    let pc = Portcullis::start(Conf::default()).await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    let before = b.jar.clone();

    let r = b
        .post_form(&pc.url("/auth/signout"), &[("callbackUrl", "/")])
        .await;
    assert_eq!(r.location(), "/auth/error?error=MissingCSRF");
    assert_eq!(b.jar, before, "a sign-out without CSRF must change nothing");

    let page = b.get(&pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &pc.url("/auth/signout"),
            &[("csrfToken", &token), ("callbackUrl", "/after")],
        )
        .await;
    assert_eq!(r.location(), "/after");
    let cleared = r.set_cookie("authjs.session-token").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(!b.has_session());
}

#[tokio::test]
async fn access_rules_deny_at_sign_in_with_access_denied() {
    let pc =
        Portcullis::start(Conf::default().extra("access:\n  allowed_domains: [example.com]\n"))
            .await;
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), BOB.0, PASSWORD, "/").await;
    assert_eq!(r.location(), "/auth/error?error=AccessDenied");
    assert!(!b.has_session());
    let page = b.get(&pc.url(r.location())).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("You do not have permission to sign in."));
    let r = b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(r.location(), "/");
}

#[tokio::test]
async fn the_rest_surface_has_auth_js_shapes() {
    let pc = Portcullis::start(Conf::default()).await;
    let mut b = Browser::api();
    assert_eq!(b.get(&pc.url("/auth/session")).await.body, "null");
    let p = b.get(&pc.url("/auth/providers")).await.json();
    assert_eq!(p["credentials"]["type"], "credentials");
    assert_eq!(
        p["credentials"]["callbackUrl"],
        pc.url("/auth/callback/credentials")
    );
    assert_eq!(
        p["credentials"]["signinUrl"],
        pc.url("/auth/signin/credentials")
    );
    let c = b.get(&pc.url("/auth/csrf")).await;
    assert_eq!(c.json()["csrfToken"].as_str().unwrap().len(), 64);
    assert!(
        c.set_cookie("authjs.csrf-token")
            .unwrap()
            .contains("HttpOnly")
    );
    for (code, status) in [
        ("Configuration", 500),
        ("AccessDenied", 403),
        ("Verification", 403),
        ("Nonsense", 500),
    ] {
        assert_eq!(
            b.get(&pc.url(&format!("/auth/error?error={code}")))
                .await
                .status
                .as_u16(),
            status,
            "{code}"
        );
    }
    assert_eq!(
        b.get(&pc.url("/auth/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.request(http::Method::DELETE, &pc.url("/auth/session"), &[], None)
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // GET is never a way to start a flow (login CSRF).
    assert_eq!(
        b.get(&pc.url("/auth/signin/credentials")).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(b.get(&pc.url("/healthz")).await.status, StatusCode::OK);
    assert_eq!(b.get(&pc.url("/readyz")).await.status, StatusCode::OK);
}

/// User enumeration by timing: an unknown e-mail costs the same argon2
/// work as a known one with a wrong password. Interleaved runs, medians,
/// and a 3x band: without the dummy hash the gap is ~100x.
#[tokio::test]
async fn unknown_users_take_as_long_as_known_ones() {
    // Regulation off: every attempt must reach the password check (banned
    // answers have their own timing test in `regulation`).
    let pc = Portcullis::start(Conf::default().extra("regulation:\n  max_retries: 0")).await;
    let mut b = Browser::new();
    let page = b.get(&pc.url("/auth/signin")).await;
    let token = page.hidden("csrfToken").unwrap();
    let url = pc.url("/auth/callback/credentials");
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..9 {
        for (email, times) in [(ALICE.0, &mut known), ("ghost@example.com", &mut unknown)] {
            let t = std::time::Instant::now();
            let r = b
                .post_form(
                    &url,
                    &[
                        ("csrfToken", &token),
                        ("email", email),
                        ("password", &format!("wrong-{i}")),
                    ],
                )
                .await;
            times.push(t.elapsed().as_secs_f64());
            assert!(r.location().contains("error=CredentialsSignin"));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (k, u) = (median(&mut known), median(&mut unknown));
    let ratio = k / u;
    assert!(
        (1.0 / 3.0..3.0).contains(&ratio),
        "known {k:.4}s vs unknown {u:.4}s (ratio {ratio:.2})"
    );
}

/// Every tag of an HTML page as (name, the tag's text up to its `>`).
fn tags(page: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == ':')
            .collect();
        if !name.is_empty() {
            out.push((name.to_ascii_lowercase(), tag));
        }
        rest = &rest[end..];
    }
    out
}

/// The value of `attr="..."` or `attr='...'` in one tag.
fn attr_value<'a>(tag: &'a str, attr: &str) -> Option<&'a str> {
    for quote in ['"', '\''] {
        let marker = format!(" {attr}={quote}");
        if let Some(i) = tag.find(&marker) {
            let v = &tag[i + marker.len()..];
            return Some(&v[..v.find(quote).unwrap_or(v.len())]);
        }
    }
    None
}

/// The sign-in, sign-out and error pages load nothing from elsewhere:
/// a CSP of `default-src 'none'` (no script at all, inline styles and
/// same-origin or data: images only, no framing), and HTML that names no
/// script, stylesheet, image or frame by an http(s) or protocol-relative URL.
#[tokio::test]
async fn own_pages_carry_a_strict_csp_and_no_external_assets() {
    let pc = Portcullis::start(Conf::default()).await;
    let mut b = Browser::new();
    let pages = [
        "/auth/signin?callbackUrl=%2Fdash",
        "/auth/signin?error=CredentialsSignin&code=credentials",
        "/auth/signout",
        "/auth/error?error=AccessDenied",
        "/auth/error?error=Configuration",
        "/auth/error?error=MissingCSRF",
        "/auth/verify-request",
        "/auth/no-such-page",
    ];
    for path in pages {
        let r = b.get(&pc.url(path)).await;
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}: {:?}",
            r.header("content-type")
        );
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"));
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        assert_eq!(directives[0], "default-src 'none'", "{path}: {csp}");
        assert!(
            directives.contains(&"frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        for d in &directives {
            let name = d.split_whitespace().next().unwrap_or("");
            assert!(
                !matches!(
                    name,
                    "script-src" | "script-src-elem" | "connect-src" | "font-src"
                ),
                "{path}: {csp} allows {name}"
            );
            if matches!(name, "style-src" | "img-src") {
                assert!(
                    !d.contains("http") && !d.contains('*'),
                    "{path}: {name} allows remote sources: {csp}"
                );
            }
        }
        let page = r.body.to_ascii_lowercase();
        assert!(
            page.contains("<html") || page.contains("<!doctype html"),
            "{path}: {}",
            r.body
        );
        for tag in [
            "<script", "<link", "<iframe", "<object", "<embed", "@import",
        ] {
            assert!(!page.contains(tag), "{path} has {tag}: {}", r.body);
        }
        // What the page loads: any src-like attribute, and href on
        // anything but a link the user follows (<a>, <form action>).
        for (name, tag) in tags(&page) {
            for attr in [
                "src",
                "srcset",
                "poster",
                "background",
                "data",
                "href",
                "xlink:href",
            ] {
                if attr == "href" && name == "a" {
                    continue;
                }
                if let Some(v) = attr_value(tag, attr) {
                    let v = v.trim();
                    assert!(
                        !(v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//")),
                        "{path}: <{name} {attr}={v:?}> loads from elsewhere"
                    );
                }
            }
        }
        let mut rest = page.as_str();
        while let Some(i) = rest.find("url(") {
            rest = &rest[i + 4..];
            let v = rest.trim_start_matches(['"', '\'', ' ']);
            assert!(
                !(v.starts_with("http") || v.starts_with("//")),
                "{path}: CSS url({}) points elsewhere",
                &v[..v.len().min(40)]
            );
        }
    }
}
