//! Biscuit tokens against the real binary: `{base}/keys`, the forwarded
//! identity token (cached per session, verified by an independent
//! implementation, never forgeable by a client), API tokens from the
//! `portcullis token` CLI in proxy mode and both forward-auth endpoints,
//! and every way a token must fail: unknown key, expired, revoked, a
//! failing block, attenuated to forbid the request, an identity token
//! replayed as an API token.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use biscuit_auth::builder::Algorithm;
use biscuit_auth::{Biscuit, PublicKey};
use http::StatusCode;

use crate::support::redis::{RedisOpts, RedisServer};
use crate::support::*;

const API: &str = "tokens:\n  api:\n    enabled: true\n";

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn config_of(pc: &Portcullis) -> PathBuf {
    pc.dir.path().join("portcullis.yaml")
}

fn mint(cfg: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "mint",
        "--config",
        cfg.to_str().unwrap(),
        "--sub",
        "ci-bot",
        "--group",
        "deployers",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(&args);
    assert!(ok, "token mint failed: {err}");
    out
}

fn attenuate(token: &str, check: &str) -> String {
    let (ok, out, err) = cli(&["token", "attenuate", "--token", token, "--check", check]);
    assert!(ok, "token attenuate failed: {err}");
    out
}

async fn bearer_get(pc: &Portcullis, path: &str, token: &str) -> Resp {
    Browser::api()
        .get_with(
            &pc.url(path),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
}

/// The ring `{base}/keys` publishes, as an upstream would load it.
async fn published_keys(pc: &Portcullis) -> Vec<(u32, PublicKey)> {
    let r = Browser::api().get(&pc.url("/auth/keys")).await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_u64().unwrap() as u32,
                PublicKey::from_bytes_hex(k["public_key"].as_str().unwrap(), Algorithm::Ed25519)
                    .unwrap(),
            )
        })
        .collect()
}

fn verify(token: &str, keys: &[(u32, PublicKey)]) -> Biscuit {
    Biscuit::from_base64(token, |id: Option<u32>| {
        keys.iter()
            .find(|(k, _)| Some(*k) == id)
            .map(|(_, k)| *k)
            .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
    })
    .unwrap()
}

fn facts(t: &Biscuit, name: &str) -> Vec<String> {
    let mut a = biscuit_auth::AuthorizerBuilder::new()
        .code("allow if true;")
        .unwrap()
        .build(t)
        .unwrap();
    let rows: Vec<(String,)> = a.query(format!("x($v) <- {name}($v)").as_str()).unwrap();
    let mut v: Vec<String> = rows.into_iter().map(|(s,)| s).collect();
    v.sort();
    v
}

#[tokio::test]
async fn keys_endpoint_publishes_the_derived_key_with_its_id_and_is_cacheable() {
    let pc = Portcullis::start(Conf::default().secrets(&[SECRET, OLD_SECRET])).await;
    let r = Browser::api().get(&pc.url("/auth/keys")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    let keys = r.json()["keys"].as_array().unwrap().clone();
    // One key per secret (rotation): the first signs, both verify.
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0]["algorithm"], "ed25519");
    assert_eq!(keys[0]["public_key"].as_str().unwrap().len(), 64);
    assert_ne!(keys[0]["id"], keys[1]["id"]);
    // Derived from the secret alone: a replica with the same secret agrees.
    let again = Portcullis::start(Conf::default().secrets(&[SECRET])).await;
    let r2 = Browser::api().get(&again.url("/auth/keys")).await;
    assert_eq!(r2.json()["keys"][0], keys[0]);
}

#[tokio::test]
async fn identity_token_is_forwarded_minted_once_per_session_and_renewed_near_expiry() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("tokens:\n  identity:\n    ttl: 2s\n"),
    )
    .await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(b.get(&pc.url("/one")).await.status, StatusCode::OK);
    let first = up
        .last()
        .header("x-auth-request-token")
        .unwrap()
        .to_string();
    assert_eq!(b.get(&pc.url("/two")).await.status, StatusCode::OK);
    let second = up
        .last()
        .header("x-auth-request-token")
        .unwrap()
        .to_string();
    // Ed25519 signatures in biscuits are randomised per block key: equal
    // tokens mean it was not minted again.
    assert_eq!(first, second, "minted per request");

    let keys = published_keys(&pc).await;
    let t = verify(&first, &keys);
    assert_eq!(facts(&t, "email"), vec![ALICE.0]);
    assert_eq!(facts(&t, "name"), vec![ALICE.1]);
    assert_eq!(facts(&t, "group"), vec!["admins", "staff"]);
    assert_eq!(facts(&t, "provider"), vec!["credentials"]);
    assert_eq!(facts(&t, "kind"), vec!["identity"]);
    assert_eq!(facts(&t, "via"), vec!["cookie"]);
    assert_eq!(facts(&t, "session")[0].len(), 32);
    assert_eq!(t.root_key_id(), Some(keys[0].0));

    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(b.get(&pc.url("/three")).await.status, StatusCode::OK);
    let third = up
        .last()
        .header("x-auth-request-token")
        .unwrap()
        .to_string();
    assert_ne!(third, first, "an expired token was reused");
    verify(&third, &keys);
}

#[tokio::test]
async fn identity_token_expires_for_upstreams_that_check_time() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), BOB.0, PASSWORD, "/").await;
    b.get(&pc.url("/x")).await;
    let token = up
        .last()
        .header("x-auth-request-token")
        .unwrap()
        .to_string();
    let t = verify(&token, &published_keys(&pc).await);
    let at = |secs: u64| {
        let mut a = biscuit_auth::AuthorizerBuilder::new()
            .code_with_params(
                "time({now}); allow if true;",
                [(
                    "now".to_string(),
                    biscuit_auth::builder::date(
                        &(std::time::SystemTime::now() + Duration::from_secs(secs)),
                    ),
                )]
                .into_iter()
                .collect(),
                Default::default(),
            )
            .unwrap()
            .build(&t)
            .unwrap();
        a.authorize().is_ok()
    };
    assert!(at(0));
    // The default lifetime is five minutes.
    assert!(at(280));
    assert!(!at(310));
}

#[tokio::test]
async fn clients_cannot_forge_the_identity_token_header() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(
        "access:\n  public_paths: [\"/pub/*\"]\ntokens:\n  identity:\n    header: X-Identity\n",
    ))
    .await;
    let mut b = Browser::new();
    let forged = [
        ("x-identity", "forged"),
        ("x_identity", "forged"),
        ("x-auth-request-token", "forged"),
    ];
    // Public path, no session: nothing forwarded, the forgeries stripped.
    assert_eq!(
        b.get_with(&pc.url("/pub/a"), &forged).await.status,
        StatusCode::OK
    );
    let r = up.last();
    for (h, _) in forged {
        assert_eq!(r.header(h), None, "{h} passed through");
    }
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(
        b.get_with(&pc.url("/app"), &forged).await.status,
        StatusCode::OK
    );
    let r = up.last();
    assert_eq!(r.header_count("x-identity"), 1);
    let ours = r.header("x-identity").unwrap();
    assert_ne!(ours, "forged");
    verify(ours, &published_keys(&pc).await);
    assert_eq!(r.header("x-auth-request-token"), None);
}

#[tokio::test]
async fn an_empty_header_name_turns_the_identity_token_off() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("tokens:\n  identity:\n    header: \"\"\n"),
    )
    .await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    b.get(&pc.url("/x")).await;
    assert_eq!(up.last().header("x-auth-request-email"), Some(ALICE.0));
    assert_eq!(up.last().header("x-auth-request-token"), None);
}

#[tokio::test]
async fn python_biscuit_verifies_the_forwarded_identity_token_with_the_published_keys() {
    let python = python();
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    b.get(&pc.url("/x")).await;
    let token = up
        .last()
        .header("x-auth-request-token")
        .unwrap()
        .to_string();
    let script = repo_root().join("tests/fixtures/biscuit/verify.py");
    let keys_url = pc.url("/auth/keys");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(keys_url)
            .arg(token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(facts["user"], serde_json::json!([ALICE.0]));
    assert_eq!(facts["email"], serde_json::json!([ALICE.0]));
    assert_eq!(facts["name"], serde_json::json!([ALICE.1]));
    assert_eq!(facts["group"], serde_json::json!(["admins", "staff"]));
    assert_eq!(facts["provider"], serde_json::json!(["credentials"]));
    // And the same library refuses a token once a byte is changed.
    let mut bad = up
        .last()
        .header("x-auth-request-token")
        .unwrap()
        .to_string();
    let flip = if bad.ends_with('A') { "B" } else { "A" };
    bad.replace_range(bad.len() - 10..bad.len() - 9, flip);
    let python = super::support::python();
    let script = repo_root().join("tests/fixtures/biscuit/verify.py");
    let keys_url = pc.url("/auth/keys");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(keys_url)
            .arg(bad)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "a tampered token verified");
}

#[tokio::test]
async fn api_token_passes_the_proxy_as_its_subject_and_is_not_forwarded() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(API)).await;
    let token = mint(&config_of(&pc), &["--ttl", "30d"]);
    let r = bearer_get(&pc, "/deploy", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", pc.logs());
    let got = up.last();
    assert_eq!(got.header("x-auth-request-user"), Some("ci-bot"));
    assert_eq!(got.header("x-auth-request-groups"), Some("deployers"));
    assert_eq!(got.header("authorization"), None, "the API token leaked");
    let t = verify(
        got.header("x-auth-request-token").unwrap(),
        &published_keys(&pc).await,
    );
    assert_eq!(facts(&t, "via"), vec!["api_token"]);
    assert_eq!(facts(&t, "user"), vec!["ci-bot"]);
}

#[tokio::test]
async fn api_token_passes_both_forward_auth_endpoints() {
    let pc = Portcullis::start(Conf::default().extra(API)).await;
    let token = mint(&config_of(&pc), &["--check", "check if method(\"GET\")"]);
    let auth = format!("Bearer {token}");
    let traefik = [
        ("authorization", auth.as_str()),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-uri", "/x"),
        ("x-forwarded-method", "GET"),
    ];
    let r = Browser::api()
        .get_with(&pc.url("/auth/forward-auth"), &traefik)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", pc.logs());
    assert_eq!(r.header("x-auth-request-user"), Some("ci-bot"));
    assert!(r.header("x-auth-request-token").is_some());
    let nginx = |method: &'static str| {
        [
            ("authorization", auth.clone()),
            ("x-original-url", "https://app.example.com/x".to_string()),
            ("x-original-method", method.to_string()),
        ]
    };
    let get = nginx("GET");
    let h: Vec<(&str, &str)> = get.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = Browser::api()
        .get_with(&pc.url("/auth/auth-request"), &h)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-auth-request-user"), Some("ci-bot"));
    // The token's own check: GET only.
    let post = nginx("POST");
    let h: Vec<(&str, &str)> = post.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = Browser::api()
        .get_with(&pc.url("/auth/auth-request"), &h)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// Every token that must not pass, against the proxy: 401, and the
/// upstream never sees the request.
#[tokio::test]
async fn bad_api_tokens_never_pass() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(API)).await;
    let cfg = config_of(&pc);
    let good = mint(&cfg, &[]);
    assert_eq!(bearer_get(&pc, "/ok", &good).await.status, StatusCode::OK);
    let seen = up.count();

    // Signed by a key Portcullis does not hold (another secret's).
    let other = Portcullis::start(
        Conf::default()
            .secrets(&["another-secret-0123456789-abcdefghijkl"])
            .extra(API),
    )
    .await;
    let foreign = mint(&config_of(&other), &[]);
    // Expired: one second of life, two seconds ago.
    let expired = mint(&cfg, &["--ttl", "1s"]);
    // A block that fails: the minted check wants POST.
    let post_only = mint(&cfg, &["--check", "check if method(\"POST\")"]);
    // Attenuated by its holder to one path: other paths are forbidden.
    let narrowed = attenuate(&good, "check if path(\"/only\")");
    // The identity token a browser session forwards, replayed as a bearer.
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    b.get(&pc.url("/x")).await;
    let identity = up
        .last()
        .header("x-auth-request-token")
        .unwrap()
        .to_string();
    let seen = seen + 1;
    // A holder's block claiming another user and group changes nothing.
    let escalated = attenuate(
        &narrowed,
        "user(\"root\"); group(\"admins\"); kind(\"api\")",
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let cases: Vec<(&str, String)> = vec![
        ("unknown key", foreign),
        ("expired", expired),
        ("failing block", post_only),
        ("attenuated", narrowed.clone()),
        ("identity token", identity),
        ("escalation block", escalated),
        ("garbage", "not-a-biscuit".into()),
        ("truncated", good[..good.len() / 2].to_string()),
        ("huge", "A".repeat(9000)),
    ];
    for (name, token) in &cases {
        let r = bearer_get(&pc, "/x", token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.body);
    }
    assert_eq!(up.count(), seen, "a bad token reached the upstream");
    // The attenuated token still works where it allows.
    assert_eq!(
        bearer_get(&pc, "/only", &narrowed).await.status,
        StatusCode::OK
    );
    assert_eq!(up.last().header("x-auth-request-user"), Some("ci-bot"));
    // The reasons are in the log, not in the answer.
    assert!(pc.logs().contains("API token rejected"), "{}", pc.logs());
}

#[tokio::test]
async fn a_bad_api_token_beside_a_valid_cookie_does_not_fall_back_to_the_cookie() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(API)).await;
    let mut b = Browser::api();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(b.get(&pc.url("/x")).await.status, StatusCode::OK);
    let r = b
        .get_with(&pc.url("/x"), &[("authorization", "Bearer nope")])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn with_api_tokens_disabled_the_authorization_header_is_the_apps() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let token = mint(&config_of(&pc), &[]);
    // Not ours to honour: no session, so 401.
    assert_eq!(
        bearer_get(&pc, "/x", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // With a session, the app's own header passes through untouched.
    let mut b = Browser::api();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    let r = b
        .get_with(&pc.url("/x"), &[("authorization", "Bearer app-own")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.last().header("authorization"), Some("Bearer app-own"));
}

#[tokio::test]
async fn revoking_into_the_file_denies_the_token_and_its_attenuations_without_restart() {
    let up = Upstream::start().await;
    let dir = TempDir::new("revoked");
    let file = dir.path().join("revoked.txt");
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(&format!(
        "tokens:\n  api:\n    enabled: true\n  revocation_file: {}\n",
        file.display()
    )))
    .await;
    let cfg = config_of(&pc);
    let token = mint(&cfg, &[]);
    let narrowed = attenuate(&token, "check if method(\"GET\")");
    let other = mint(&cfg, &[]);
    assert_eq!(bearer_get(&pc, "/x", &token).await.status, StatusCode::OK);
    assert_eq!(
        bearer_get(&pc, "/x", &narrowed).await.status,
        StatusCode::OK
    );

    let (ok, _, err) = cli(&["token", "revoke", "--config", cfg.to_str().unwrap(), &token]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&file).unwrap().lines().count() >= 1);
    // Re-read within a second or so of the change.
    let mut denied = false;
    for _ in 0..30 {
        if bearer_get(&pc, "/x", &token).await.status == StatusCode::UNAUTHORIZED {
            denied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(denied, "revoked token still passes: {}", pc.logs());
    assert_eq!(
        bearer_get(&pc, "/x", &narrowed).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(bearer_get(&pc, "/x", &other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn revoking_into_redis_is_shared_and_a_store_outage_denies() {
    let mut redis = RedisServer::start(RedisOpts::default());
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(&format!(
        "store:\n  redis_url: \"{}\"\n  key_prefix: \"it:\"\n  timeout: 1s\n{API}",
        redis.url()
    )))
    .await;
    let cfg = config_of(&pc);
    let token = mint(&cfg, &[]);
    let other = mint(&cfg, &[]);
    assert_eq!(bearer_get(&pc, "/x", &token).await.status, StatusCode::OK);
    let (ok, _, err) = cli(&["token", "revoke", "--config", cfg.to_str().unwrap(), &token]);
    assert!(ok, "{err}");
    assert_eq!(
        bearer_get(&pc, "/x", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(bearer_get(&pc, "/x", &other).await.status, StatusCode::OK);
    let seen = up.count();
    redis.kill();
    let r = bearer_get(&pc, "/x", &other).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(up.count(), seen);
}

#[tokio::test]
async fn token_inspect_prints_every_block_and_the_root_key_id() {
    let pc = Portcullis::start(Conf::default().extra(API)).await;
    let token = mint(&config_of(&pc), &["--check", "check if method(\"GET\")"]);
    let narrowed = attenuate(&token, "check if path(\"/only\")");
    let (ok, out, err) = cli(&["token", "inspect", &narrowed]);
    assert!(ok, "{err}");
    let id = published_keys(&pc).await[0].0;
    assert!(out.contains(&format!("root key id: {id}")), "{out}");
    assert!(out.contains("block 0"), "{out}");
    assert!(out.contains("user(\"ci-bot\")"), "{out}");
    assert!(out.contains("check if method(\"GET\")"), "{out}");
    assert!(out.contains("block 1"), "{out}");
    assert!(out.contains("check if path(\"/only\")"), "{out}");
}

#[tokio::test]
async fn configured_keys_rotate_the_old_public_key_still_verifies() {
    let dir = TempDir::new("keys");
    let data = repo_root().join("tests/data/biscuit");
    let new_key = data.join("root-1.pem");
    let old_pub = std::fs::read_to_string(data.join("root-0.pub")).unwrap();
    // A token minted while key 0 signed...
    let users = dir.write("users.yaml", &users_file_yaml(&[ALICE]));
    let old_cfg = dir.write(
        "old.yaml",
        &format!(
            "secrets: [{SECRET}]\nproviders: [{{type: credentials, users_file: {}}}]\ntokens:\n  api:\n    enabled: true\n  keys:\n    - id: 0\n      private_key_file: {}\n",
            users.display(),
            data.join("root-0.pem").display()
        ),
    );
    let old_token = mint(&old_cfg, &[]);
    // ...passes once key 1 signs and key 0 is only a public key.
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(&format!(
        "tokens:\n  api:\n    enabled: true\n  keys:\n    - id: 1\n      private_key_file: {}\n    - id: 0\n      public_key: {}\n",
        new_key.display(),
        old_pub.trim()
    )))
    .await;
    let keys = published_keys(&pc).await;
    assert_eq!(keys.iter().map(|k| k.0).collect::<Vec<_>>(), vec![1, 0]);
    assert_eq!(
        bearer_get(&pc, "/x", &old_token).await.status,
        StatusCode::OK
    );
    let new_token = mint(&config_of(&pc), &[]);
    assert_eq!(
        verify(&new_token, &keys).root_key_id(),
        Some(1),
        "the first key signs"
    );
    assert_eq!(
        bearer_get(&pc, "/x", &new_token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_token_config_is_refused_with_the_key_and_the_fix() {
    let dir = TempDir::new("badtok");
    let cfg = dir.write(
        "p.yaml",
        &format!(
            "secrets: [{SECRET}]\ntokens:\n  identity:\n    ttl: forever\n    header: \"bad header\"\n  keys:\n    - id: 1\n      public_key: ed25519/abcd\n    - private_key_file: /nonexistent.pem\n"
        ),
    );
    let (ok, _, err) = cli(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    for key in [
        "tokens.identity.ttl",
        "tokens.identity.header",
        "tokens.keys[0].public_key",
        "tokens.keys[1].id",
    ] {
        assert!(err.contains(key), "{key} not named:\n{err}");
    }
}

/// A valid API token beside a second `Authorization` header is refused:
/// which of the two the app would read is unknowable.
#[tokio::test]
async fn an_api_token_beside_a_second_authorization_header_is_refused() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(API)).await;
    let token = mint(&config_of(&pc), &["--ttl", "30d"]);
    let bearer = format!("Bearer {token}");
    let r = Browser::api()
        .get_with(
            &pc.url("/deploy"),
            &[("authorization", &bearer), ("authorization", "Basic YTpi")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", pc.logs());
    assert_eq!(up.count(), 0, "the upstream was reached");
    // Alone, the same token passes.
    assert_eq!(
        bearer_get(&pc, "/deploy", &token).await.status,
        StatusCode::OK
    );
}
