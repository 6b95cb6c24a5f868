//! Who may sign in, through the real credentials form: `sign_in` rules by
//! each selector (groups from the users file), first match wins, the
//! default, the static `groups` map (seen by the upstream), and a
//! provider's `allowed_groups`.

use std::process::Command;

use http::StatusCode;

use crate::support::*;

const CAROL: TestUser = TestUser("carol@example.com", "Carol", &["guests"]);

fn conf(extra: &str) -> Conf {
    let mut c = Conf::default().extra(extra);
    c.users.push(CAROL);
    c
}

/// Signs in; `true` when a session was made, `false` on `AccessDenied`.
async fn admitted(pc: &Portcullis, email: &str) -> bool {
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), email, PASSWORD, "/").await;
    match r.location() {
        "/" => {
            assert!(b.has_session());
            true
        }
        "/auth/error?error=AccessDenied" => {
            assert!(!b.has_session());
            false
        }
        other => panic!("{email}: unexpected answer {other}\n{}", pc.logs()),
    }
}

#[tokio::test]
async fn sign_in_rules_allow_and_deny_by_each_selector() {
    // (rules, [alice, bob, carol] admitted?)
    let cases: [(&str, [bool; 3]); 9] = [
        (
            "default: deny\n  rules:\n    - { effect: allow, providers: [credentials] }",
            [true, true, true],
        ),
        (
            "rules:\n    - { effect: deny, providers: credentials }",
            [false, false, false],
        ),
        (
            "rules:\n    - { effect: deny, emails: [BOB@other.org] }",
            [true, false, true],
        ),
        (
            "default: deny\n  rules:\n    - { effect: allow, emails: [alice@example.com, carol@example.com] }",
            [true, false, true],
        ),
        (
            "default: deny\n  rules:\n    - { effect: allow, domains: [example.com] }",
            [true, false, true],
        ),
        (
            "rules:\n    - { effect: deny, domains: [\"@other.org\"] }",
            [true, false, true],
        ),
        (
            "rules:\n    - { effect: deny, groups: [staff] }",
            [false, false, true],
        ),
        (
            "default: deny\n  rules:\n    - { effect: allow, groups: [admins, guests] }",
            [true, false, true],
        ),
        (
            "default: deny\n  rules:\n    - { effect: allow, claims: { name: [Carol, Bob] } }",
            [false, true, true],
        ),
    ];
    for (rules, want) in cases {
        let pc = Portcullis::start(conf(&format!("sign_in:\n  {rules}\n"))).await;
        let mut got = [false; 3];
        for (i, u) in [ALICE.0, BOB.0, CAROL.0].into_iter().enumerate() {
            got[i] = admitted(&pc, u).await;
        }
        assert_eq!(got, want, "sign_in:\n  {rules}");
    }
}

#[tokio::test]
async fn first_matching_rule_wins_and_the_log_names_the_denying_rule() {
    let pc = Portcullis::start(conf(
        "sign_in:\n  default: deny\n  rules:\n    - { name: admins-first, effect: allow, groups: [admins] }\n    - { name: no-example-staff, effect: deny, domains: [example.com] }\n    - { effect: allow, claims: { groups: staff, provider: credentials } }\n",
    ))
    .await;
    // Alice is at example.com, but rule 0 (admins) matched first.
    assert!(admitted(&pc, ALICE.0).await);
    // Carol: rule 1 denies. Bob: rule 2 (both claims) allows.
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), CAROL.0, PASSWORD, "/").await;
    assert_eq!(r.location(), "/auth/error?error=AccessDenied");
    let page = b.get(&pc.url(r.location())).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("You do not have permission to sign in."));
    assert!(
        !page.body.contains("no-example-staff"),
        "the page names no rule"
    );
    assert!(
        pc.log_shows("sign_in.rules[1] (no-example-staff)").await,
        "{}",
        pc.logs()
    );
    assert!(admitted(&pc, BOB.0).await);
}

#[tokio::test]
async fn static_groups_reach_the_upstream_and_the_rules() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        conf("groups:\n  \"Bob@Other.org\": [ops, auditors]\n  \"carol@example.com\": [staff]\nsign_in:\n  default: deny\n  rules:\n    - { effect: allow, groups: [ops, admins] }\n")
            .upstream(&up.url()),
    )
    .await;
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), BOB.0, PASSWORD, "/").await;
    assert_eq!(r.location(), "/", "{}", pc.logs());
    assert_eq!(b.get(&pc.url("/app")).await.status, StatusCode::OK);
    let groups = up
        .last()
        .header("x-auth-request-groups")
        .unwrap()
        .to_string();
    let list: Vec<&str> = groups.split(',').map(str::trim).collect();
    assert_eq!(list, ["staff", "ops", "auditors"], "{groups}");
    // Carol's static group (staff) is not one the rule allows.
    assert!(!admitted(&pc, CAROL.0).await);
    assert!(admitted(&pc, ALICE.0).await);
}

#[tokio::test]
async fn provider_allowed_groups_refuse_users_without_one() {
    let env = [("PORTCULLIS_PROVIDERS__0__ALLOWED_GROUPS", "[admins, ops]")];
    let pc = Portcullis::start_env(conf("groups:\n  carol@example.com: [ops]\n"), &env).await;
    assert!(admitted(&pc, ALICE.0).await);
    assert!(!admitted(&pc, BOB.0).await);
    // A static group counts.
    assert!(admitted(&pc, CAROL.0).await);
    assert!(pc.log_shows("providers[].allowed_groups").await);
}

#[test]
fn bad_sign_in_rules_are_refused_at_load_with_key_and_fix() {
    let dir = TempDir::new("rules");
    dir.write("users.yaml", &users_file_yaml(&[ALICE]));
    let cfg = dir.write(
        "portcullis.yaml",
        &format!("secrets: [\"{SECRET}\"]\nproviders:\n  - type: credentials\n    users_file: users.yaml\nsign_in:\n  rules:\n    - {{ effect: deny, providers: [github] }}\n    - {{ effect: allow }}\nregulation:\n  ban_time: forever\n"),
    );
    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "sign_in.rules[0].providers[0]",
        "no provider has the id \"github\"",
        "fix: use a configured provider id: credentials",
        "sign_in.rules[1]",
        "would match everyone",
        "regulation.ban_time",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
}

/// A claim selector with a dotted path, through the real `oidc-provider`:
/// the rule's claim is kept from the ID token/userinfo and matched there.
#[tokio::test]
async fn claim_rules_read_dotted_paths_from_the_real_identity_provider() {
    use crate::support::idp::{CLIENT_ID, CLIENT_SECRET, Idp, idp_login};
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut cfg = Idp::default_config(&format!("{origin}/auth/callback/corp"), &[]);
    cfg["users"][0]["extra"] =
        serde_json::json!({ "realm_access": { "roles": ["viewer", "gold"] } });
    cfg["users"][1]["extra"] = serde_json::json!({ "realm_access": { "roles": ["silver"] } });
    let idp = Idp::start(cfg).await;
    let item = format!(
        "  - type: oidc\n    id: corp\n    issuer: {}\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    scopes: [openid, email, profile, groups]\n",
        idp.issuer
    );
    let rules = "sign_in:\n  default: deny\n  rules:\n    - { name: gold-sso, effect: allow, providers: [corp], claims: { realm_access.roles: gold } }\n";
    let pc = Portcullis::start_at(conf(rules).provider(&item), &[], port).await;
    pc.wait_readyz(StatusCode::OK).await;
    let mut answers = Vec::new();
    for login in ["alice", "bob"] {
        let mut b = Browser::new();
        let page = b.get(&pc.url("/auth/signin?callbackUrl=%2F")).await;
        let token = page.hidden("csrfToken").unwrap();
        let r = b
            .post_form(
                &pc.url("/auth/signin/corp"),
                &[("csrfToken", &token), ("callbackUrl", "/")],
            )
            .await;
        let back = idp_login(&mut b, r.location(), login).await;
        let r = b.get(back.location()).await;
        answers.push((r.location().to_string(), b.has_session()));
    }
    assert_eq!(
        answers,
        [
            ("/".to_string(), true),
            ("/auth/error?error=AccessDenied".to_string(), false)
        ],
        "{}",
        pc.logs()
    );
    // Credentials users match no rule: the default (deny) applies.
    assert!(!admitted(&pc, ALICE.0).await);
    assert!(pc.log_shows("sign_in.default").await);
}
