//! Route policies: matching, each rule, Datalog facts, failures that deny.

use std::net::{IpAddr, Ipv4Addr};

use super::datalog::{CompileError, DatalogPolicy, Limits, Outcome};
use super::*;
use crate::config::load_str;
use crate::session::{Claims, Session, Via};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
/// 2026-01-01T00:00:00Z
const NOW: u64 = 1_767_225_600;

fn session(email: &str, groups: &[&str], via: Via) -> Session {
    Session {
        claims: Claims {
            email: Some(email.into()),
            sub: Some(format!("id-{email}")),
            groups: groups.iter().map(|g| (*g).into()).collect(),
            provider: Some("oidc".into()),
            exp: NOW + 3600,
            ..Claims::default()
        },
        needs_refresh: false,
        handle: None,
        via,
    }
}

fn target<'a>(host: &'a str, method: &'a str, path: &'a str) -> Target<'a> {
    Target {
        host: Some(host),
        path,
        method,
    }
}

fn routes(yaml: &str) -> Routes {
    let env: &[(&str, &str)] = &[];
    let text = format!(
        "secrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - type: credentials\n    users: []\n{yaml}"
    );
    match load_str(&text, "p.yaml", env) {
        Ok(c) => c.routes,
        Err(e) => panic!("{e}"),
    }
}

fn config_error(yaml: &str) -> String {
    let env: &[(&str, &str)] = &[];
    let text = format!(
        "secrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - type: credentials\n    users: []\n{yaml}"
    );
    match load_str(&text, "p.yaml", env) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn decide(r: &Routes, s: Option<&Session>, t: &Target<'_>) -> Option<Decision> {
    r.decide(s, t, IP, NOW).map(|v| v.decision)
}

const ADMIN_POLICY: &str = r#"
routes:
  - name: health
    path: /healthz
    access: public
  - name: admin
    host: app.example.com
    path: /admin/*
    datalog: |
      allow if group("admins");
      deny if path($p), $p.starts_with("/admin"), groups($gs), !$gs.contains("admins");
  - name: reports
    path: /reports/*
    methods: [GET]
    allowed_domains: [example.com]
    allowed_groups: [auditors]
  - name: app
    host: "*.example.com"
    access: authenticated
"#;

#[test]
fn first_matching_route_decides_and_unmatched_requests_fall_through() {
    let r = routes(ADMIN_POLICY);
    let alice = session("alice@example.com", &["admins"], Via::Cookie);
    let bob = session("bob@example.com", &["staff"], Via::Cookie);
    let eve = session("eve@evil.org", &[], Via::Cookie);
    let admin = target("app.example.com", "GET", "/admin/users");
    assert_eq!(decide(&r, Some(&alice), &admin), Some(Decision::Allow));
    assert_eq!(decide(&r, Some(&bob), &admin), Some(Decision::Forbidden));
    assert_eq!(decide(&r, None, &admin), Some(Decision::Unauthenticated));
    // Public route before anything else, with or without a session.
    let health = target("app.example.com", "GET", "/healthz");
    assert_eq!(decide(&r, None, &health), Some(Decision::Public));
    // Allow-lists: domain or group; method restricts the route.
    let reports = target("other.org", "GET", "/reports/q1");
    assert_eq!(decide(&r, Some(&bob), &reports), Some(Decision::Allow));
    assert_eq!(decide(&r, Some(&eve), &reports), Some(Decision::Forbidden));
    let post = target("other.org", "POST", "/reports/q1");
    assert_eq!(decide(&r, Some(&eve), &post), None, "methods: [GET] only");
    // Wildcard host route.
    let app = target("x.example.com", "GET", "/");
    assert_eq!(decide(&r, Some(&eve), &app), Some(Decision::Allow));
    assert_eq!(decide(&r, None, &app), Some(Decision::Unauthenticated));
    assert_eq!(decide(&r, None, &target("example.com", "GET", "/")), None);
    let v = r.decide(Some(&bob), &admin, IP, NOW).unwrap();
    assert_eq!(r.routes[v.route].name, "admin");
    assert_eq!(v.reason, Reason::Datalog(Outcome::Deny(1)));
}

#[test]
fn disguised_paths_and_methods_cannot_dodge_a_route() {
    let r = routes(ADMIN_POLICY);
    let bob = session("bob@example.com", &["staff"], Via::Cookie);
    for path in [
        "/%61dmin/users",
        "//admin/users",
        "/admin%2Fusers",
        "/%41dmin",
    ] {
        let t = target("app.example.com", "GET", path);
        let d = decide(&r, Some(&bob), &t);
        if path == "/%41dmin" {
            // `/Admin` is another path: the next route (any *.example.com) decides.
            assert_eq!(d, Some(Decision::Allow), "{path}");
        } else {
            assert_eq!(d, Some(Decision::Forbidden), "{path}");
        }
    }
    let eve = session("eve@evil.org", &[], Via::Cookie);
    let lower = target("other.org", "get", "/reports/q1");
    assert_eq!(
        decide(&r, Some(&eve), &lower),
        Some(Decision::Forbidden),
        "methods compare case-insensitively"
    );
    let host = target("APP.Example.COM", "GET", "/admin/x");
    assert_eq!(decide(&r, Some(&eve), &host), Some(Decision::Forbidden));
}

#[test]
fn datalog_sees_every_request_fact() {
    let r = routes(
        r#"
routes:
  - datalog: |
      allow if user("id-Alice@Example.com"), email("alice@example.com"), domain("example.com"),
        group("admins"), claim("provider", "oidc"), claim("sub", "id-Alice@Example.com"),
        auth("session"), method("DELETE"), host("app.example.com"), path("/a/b"),
        client_ip("10.1.2.3"), time($t), $t == 2026-01-01T00:00:00Z;
"#,
    );
    let alice = session("Alice@Example.com", &["admins"], Via::Cookie);
    let t = target("app.example.com", "DELETE", "/a//b");
    assert_eq!(decide(&r, Some(&alice), &t), Some(Decision::Allow));
    let t = target("app.example.com", "GET", "/a/b");
    assert_eq!(decide(&r, Some(&alice), &t), Some(Decision::Forbidden));
}

#[test]
fn datalog_auth_fact_tells_tokens_from_sessions() {
    let r = routes(
        r#"
routes:
  - path: /api/*
    datalog: |
      allow if auth("token"), method("GET");
      allow if auth("bearer"), claim("provider", "oidc");
      allow if auth("session");
"#,
    );
    let get = target("h", "GET", "/api/x");
    let put = target("h", "PUT", "/api/x");
    let token = session("ci@bots", &[], Via::ApiToken);
    assert_eq!(decide(&r, Some(&token), &get), Some(Decision::Allow));
    assert_eq!(decide(&r, Some(&token), &put), Some(Decision::Forbidden));
    let bearer = session("m@x", &[], Via::IdpBearer);
    assert_eq!(decide(&r, Some(&bearer), &put), Some(Decision::Allow));
    let browser = session("b@x", &[], Via::Cookie);
    assert_eq!(decide(&r, Some(&browser), &put), Some(Decision::Allow));
    assert_eq!(auth_kind(None), "none");
}

#[test]
fn datalog_without_session_has_no_user_facts() {
    let r = routes(
        r#"
routes:
  - datalog: |
      allow if auth("none"), path($p), $p.starts_with("/pub/");
      allow if user($u);
"#,
    );
    // Allowed without a session: passes with no identity, like public.
    assert_eq!(
        decide(&r, None, &target("h", "GET", "/pub/x")),
        Some(Decision::Public)
    );
    // Denied without a session: sign in first.
    assert_eq!(
        decide(&r, None, &target("h", "GET", "/x")),
        Some(Decision::Unauthenticated)
    );
    let s = session("a@b.c", &[], Via::Cookie);
    assert_eq!(
        decide(&r, Some(&s), &target("h", "GET", "/x")),
        Some(Decision::Allow)
    );
}

#[test]
fn a_policy_that_hits_a_limit_denies() {
    // Every pair of groups: 30 groups make 900 facts, over max_facts 100.
    let r = routes(
        r#"
policy_limits:
  max_facts: 100
routes:
  - datalog: |
      pair($a, $b) <- group($a), group($b);
      allow if pair("g1", "g2");
"#,
    );
    let groups: Vec<String> = (0..30).map(|i| format!("g{i}")).collect();
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let s = session("a@b.c", &refs, Via::Cookie);
    let v = r
        .decide(Some(&s), &target("h", "GET", "/"), IP, NOW)
        .unwrap();
    assert_eq!(v.decision, Decision::Forbidden);
    match v.reason {
        Reason::Datalog(Outcome::Error(e)) => assert!(e.contains("too many facts"), "{e}"),
        other => panic!("{other:?}"),
    }
    // The same policy with few groups allows: the limit made the difference.
    let s = session("a@b.c", &["g1", "g2"], Via::Cookie);
    assert_eq!(
        decide(&r, Some(&s), &target("h", "GET", "/")),
        Some(Decision::Allow)
    );
    // Without a session a failed policy means sign-in, never a pass.
    let v = r.decide(None, &target("h", "GET", "/"), IP, NOW).unwrap();
    assert_eq!(v.decision, Decision::Unauthenticated);
}

#[test]
fn a_policy_that_errors_denies() {
    let p = DatalogPolicy::compile(
        "allow if path($p), $p.length() / 0 == 1;\nallow if path($p);",
        Limits::default(),
    )
    .unwrap();
    let facts = datalog::Facts {
        user: None,
        auth: "none",
        method: "GET",
        host: None,
        path: "/x",
        client_ip: IP,
        time: NOW,
    };
    match p.evaluate(&facts) {
        Outcome::Error(e) => assert!(!e.is_empty()),
        other => panic!("an expression error must deny, got {other:?}"),
    }
}

#[test]
fn iteration_limit_denies() {
    let p = DatalogPolicy::compile(
        "step(0);\nstep($n) <- step($m), $m < 1000, $n == $m + 1;\nallow if step(1000);",
        Limits::default(),
    );
    // `$n == ...` does not bind in Datalog: the rule is refused at load.
    assert!(p.is_err());
    let p = DatalogPolicy::compile(
        "a(\"x\"); b($x) <- a($x); c($x) <- b($x); d($x) <- c($x); e($x) <- d($x);\nallow if e(\"x\");",
        Limits { max_iterations: 2, ..Limits::default() },
    )
    .unwrap();
    let facts = datalog::Facts {
        user: None,
        auth: "none",
        method: "GET",
        host: None,
        path: "/",
        client_ip: IP,
        time: NOW,
    };
    match p.evaluate(&facts) {
        Outcome::Error(e) => assert!(e.contains("iterations"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn compile_refuses_typos_and_policies_that_never_allow() {
    let e =
        DatalogPolicy::compile("allow if groups(\"admins\", 1);", Limits::default()).unwrap_err();
    assert!(
        e[0].message
            .contains("unknown fact `groups` with 2 term(s)"),
        "{e:?}"
    );
    assert_eq!(e[0].offset, 9);
    let e = DatalogPolicy::compile("deny if true;", Limits::default()).unwrap_err();
    assert!(e[0].message.contains("no `allow if`"), "{e:?}");
    let e = DatalogPolicy::compile("check if true;", Limits::default()).unwrap_err();
    assert!(e[0].message.contains("would deny every request"), "{e:?}");
    let e = DatalogPolicy::compile(
        "allow if group(\"a\");\nallow if group(\"a\" ;",
        Limits::default(),
    )
    .unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].offset >= 21, "{e:?}");
    let ok = DatalogPolicy::compile(
        "admin($u) <- user($u), group(\"admins\");\nallow if admin($u);",
        Limits::default(),
    );
    assert!(ok.is_ok(), "own rule heads are known");
    let _: Option<CompileError> = None;
}

#[test]
fn datalog_errors_point_at_line_and_column_in_the_file() {
    // The providers block is 4 lines; `routes:` is line 5.
    let err = config_error(
        r#"routes:
  - name: ok
    path: /a/*
    datalog: |
      allow if group("admins");
      allow if groupz("x");
"#,
    );
    assert!(
        err.contains("routes[0].datalog (p.yaml line 10 column 16)"),
        "{err}"
    );
    assert!(err.contains("unknown fact `groupz`"), "{err}");
    assert!(err.contains("fix: correct the policy"), "{err}");
    let err = config_error("routes:\n  - datalog: 'allow if user($u) oops;'\n");
    assert!(err.contains("(p.yaml line 6 column"), "{err}");
    let err = config_error("routes:\n  - datalog: |\n        allow if true;\n        deny if (;\n");
    assert!(err.contains("p.yaml line 8 column 17"), "{err}");
}

#[test]
fn route_config_problems_are_all_reported() {
    let err = config_error(
        r#"routes:
  - host: "bad host"
    path: admin
    methods: [G3T]
  - access: public
    allowed_groups: [a]
  - allowed_groups: [a]
    datalog: "allow if true;"
  - access: everyone
  - name: dup
  - name: dup
policy_limits:
  max_time: 5s
  max_facts: 0
"#,
    );
    for needle in [
        "routes[0].host[0]",
        "routes[0].path[0]",
        "routes[0].methods[0]",
        "routes[1].access",
        "routes[2].datalog",
        "routes[3].access",
        "routes[5].name",
        "policy_limits.max_time",
        "policy_limits.max_facts",
    ] {
        assert!(err.contains(needle), "{needle} missing in:\n{err}");
    }
}

/// Decisions are remembered per exact set of facts: a second user, method
/// or auth kind is decided afresh (never another's answer), and a policy
/// that reads `time` or `client_ip` is never remembered.
#[test]
fn remembered_decisions_never_cross_users_requests_or_clocks() {
    let r = routes(
        r#"
routes:
  - path: /admin/*
    datalog: |
      allow if group("admins"), method("GET"), auth("session");
"#,
    );
    let alice = session("alice@example.com", &["admins"], Via::Cookie);
    let bob = session("bob@example.com", &["staff"], Via::Cookie);
    let token = session("alice@example.com", &["admins"], Via::ApiToken);
    let get = target("h", "GET", "/admin/x");
    let post = target("h", "POST", "/admin/x");
    for _ in 0..3 {
        assert_eq!(decide(&r, Some(&alice), &get), Some(Decision::Allow));
        assert_eq!(decide(&r, Some(&bob), &get), Some(Decision::Forbidden));
        assert_eq!(decide(&r, Some(&alice), &post), Some(Decision::Forbidden));
        assert_eq!(decide(&r, Some(&token), &get), Some(Decision::Forbidden));
        assert_eq!(decide(&r, None, &get), Some(Decision::Unauthenticated));
    }
    // Reads time: decided at each request's own time.
    let timed = routes(
        r#"
routes:
  - datalog: |
      allow if time($t), $t < 2026-01-01T00:00:01Z;
"#,
    );
    let t = target("h", "GET", "/");
    assert_eq!(
        timed.decide(Some(&alice), &t, IP, NOW).map(|v| v.decision),
        Some(Decision::Allow)
    );
    assert_eq!(
        timed
            .decide(Some(&alice), &t, IP, NOW + 5)
            .map(|v| v.decision),
        Some(Decision::Forbidden)
    );
}
