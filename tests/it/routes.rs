//! Route policies (`routes:`) through the real binary: the same decisions
//! in proxy mode and in both forward-auth endpoints, what the upstream
//! receives, policies that fail, and `portcullis policy test`.

use std::process::Command;

use http::StatusCode;

use crate::support::*;

const ROUTES: &str = r#"routes:
  - name: public
    path: /pub/*
    access: public
  - name: admin
    path: /admin/*
    datalog: |
      allow if group("admins");
      deny if path($p), $p.starts_with("/admin"), groups($gs), !$gs.contains("admins");
  - name: reports
    path: /reports/*
    methods: [GET]
    allowed_domains: [example.com]
"#;

async fn signed_in(pc: &Portcullis, who: &TestUser) -> Browser {
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), who.0, PASSWORD, "/").await;
    assert_eq!(r.location(), "/");
    b
}

#[tokio::test]
async fn route_policies_decide_in_proxy_mode_and_the_upstream_sees_only_allowed_requests() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(ROUTES)).await;
    let mut alice = signed_in(&pc, &ALICE).await;
    let mut bob = signed_in(&pc, &BOB).await;

    let r = alice.get(&pc.url("/admin/users")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.last().header("x-auth-request-user"), Some(ALICE.0));
    let seen = up.count();

    for path in [
        "/admin/users",
        "/%61dmin/users",
        "//admin/users",
        "/admin%2Fusers",
    ] {
        let r = bob.get(&pc.url(path)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    let r = bob.get(&pc.url("/reports/q1")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "bob is not @example.com");
    assert_eq!(up.count(), seen, "no denied request reached the upstream");

    // Without a session: a browser is sent to sign in, an API client 401.
    let r = Browser::new().get(&pc.url("/admin/users")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.location().contains("/auth/signin?callbackUrl="),
        "{}",
        r.location()
    );
    let r = Browser::api().get(&pc.url("/admin/users")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(up.count(), seen);

    // Public: passes without a session, and a session's identity is not sent.
    let r = alice
        .get_with(&pc.url("/pub/x"), &[("x-auth-request-user", "forged")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.last().header("x-auth-request-user"), None);

    // No route matches: the global access rules (any session) decide.
    let r = bob.get(&pc.url("/elsewhere")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.last().header("x-auth-request-user"), Some(BOB.0));
    // methods: [GET]: a POST to /reports is not that route's.
    let r = alice.get(&pc.url("/reports/q1")).await;
    assert_eq!(r.status, StatusCode::OK);
}

fn traefik(path: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-forwarded-proto", "https".into()),
        ("x-forwarded-host", "app.example.com".into()),
        ("x-forwarded-uri", path.into()),
        ("x-forwarded-method", "GET".into()),
    ]
}

fn hdrs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn route_policies_decide_in_both_forward_auth_endpoints() {
    let pc = Portcullis::start(Conf::default().extra(ROUTES)).await;
    let mut alice = signed_in(&pc, &ALICE).await;
    let mut bob = signed_in(&pc, &BOB).await;
    let fa = pc.url("/auth/forward-auth");
    let ar = pc.url("/auth/auth-request");
    let admin = traefik("/admin/users?x=1");
    let nginx = [("x-original-url", "https://app.example.com/admin/users?x=1")];

    let r = alice.get_with(&fa, &hdrs(&admin)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-auth-request-email"), Some(ALICE.0));
    let r = alice.get_with(&ar, &nginx).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-auth-request-user"), Some(ALICE.0));

    let r = bob.get_with(&fa, &hdrs(&admin)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-auth-request-email"), None);
    let r = bob.get_with(&ar, &nginx).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let disguised = traefik("/%61dmin/users");
    let r = bob.get_with(&fa, &hdrs(&disguised)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // No session: 401 to API clients and from auth-request, 302 to browsers.
    let r = Browser::api().get_with(&fa, &hdrs(&admin)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = Browser::new().get_with(&fa, &hdrs(&admin)).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let r = Browser::new().get_with(&ar, &nginx).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The public route passes without a session, from both endpoints.
    let r = Browser::api()
        .get_with(&fa, &hdrs(&traefik("/pub/a.css")))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = Browser::api()
        .get_with(
            &ar,
            &[("x-original-url", "https://app.example.com/pub/a.css")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_policy_that_hits_its_limit_denies_and_says_why_only_in_the_log() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(
        r#"policy_limits:
  max_facts: 100
routes:
  - name: explosive
    path: /x/*
    datalog: |
      n(1); n(2); n(3); n(4); n(5); n(6); n(7); n(8); n(9); n(10); n(11); n(12);
      pair($a, $b) <- n($a), n($b);
      allow if pair(1, 2), group("admins");
"#,
    ))
    .await;
    let mut alice = signed_in(&pc, &ALICE).await;
    let r = alice.get(&pc.url("/x/y")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(up.count(), 0);
    for secret in ["facts", "limit", "explosive", "pair"] {
        assert!(
            !r.body.contains(secret),
            "{secret} leaked to the client: {}",
            r.body
        );
    }
    assert!(pc.log_shows("route policy failed").await, "{}", pc.logs());
    let logs = pc.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("route policy failed"))
        .unwrap();
    assert!(
        line.contains("explosive") && line.contains("too many facts"),
        "{line}"
    );
}

fn policy_test(cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(["policy", "test", "--config"])
        .arg(cfg)
        .args(args)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn policy_test_prints_the_decision_the_route_and_the_rule_with_exit_codes() {
    let dir = TempDir::new("policy-test");
    let head = format!("secrets: [{SECRET}]\nproviders:\n  - type: credentials\n    users: []\n");
    // `routes:` is line 5 of the file.
    let cfg = dir.write("p.yaml", &format!("{head}{ROUTES}"));
    let (code, out, _) = policy_test(
        &cfg,
        &[
            "--as",
            "bob@other.org",
            "--groups",
            "staff",
            "GET",
            "https://app.example.com/admin/users",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("decision: deny: forbidden"), "{out}");
    assert!(out.contains("route: #1 \"admin\""), "{out}");
    assert!(
        out.contains("rule: deny if path($p), $p.starts_with(\"/admin\"), groups($gs), !$gs.contains(\"admins\")"),
        "{out}"
    );
    assert!(
        out.contains("line 13 column 7"),
        "the deny statement's place: {out}"
    );

    let (code, out, _) = policy_test(
        &cfg,
        &[
            "--as",
            "alice@example.com",
            "--groups",
            "admins,staff",
            "GET",
            "https://app.example.com/admin/users",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rule: allow if group(\"admins\")") && out.contains("line 12 column 7"),
        "{out}"
    );

    let (code, out, _) = policy_test(&cfg, &["GET", "https://app.example.com/admin/users"]);
    assert_eq!(code, 3, "no session: sign-in needed: {out}");
    let (code, out, _) = policy_test(&cfg, &["GET", "https://app.example.com/pub/a"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route: #0 \"public\""), "{out}");
    let (code, out, _) = policy_test(
        &cfg,
        &[
            "--as",
            "bob@other.org",
            "--via",
            "token",
            "POST",
            "https://app.example.com/reports/q",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route: none matched"), "{out}");

    let bad = dir.write(
        "bad.yaml",
        &format!("{head}routes:\n  - datalog: |\n      allow if group(\"a\");\n      allow if grup(\"a\");\n"),
    );
    let (code, _, err) = policy_test(&bad, &["GET", "https://a.example.com/"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.yaml line 8 column 16"), "{err}");
    let (code, _, err) = policy_test(&cfg, &["--via", "magic", "GET", "https://a.example.com/"]);
    assert_eq!(code, 2, "{err}");
}
