//! The store conformance suite: ONE set of test bodies, instantiated per
//! store by the macros at the end: `store_conformance::redis::*`,
//! `::postgres::*`, `::mariadb::*`, `::sqlite::*`. Every test gets a fresh,
//! empty store (`support::sql::TestStore`: its own redis-server, its own
//! PostgreSQL / MariaDB database, its own SQLite file) and the real
//! binary, real IdP (`oidc-provider`), real SMTP server.
//!
//! Run: `cargo nextest run --features otel -E 'test(conformance)'`; one
//! store: `-E 'test(/conformance::postgres::/)'`. PostgreSQL and MariaDB
//! must run (tests/run starts them); one that does not answer is a failure.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::json;

use crate::email::{Mode, Smtp, ask_link, assert_verification_error, link_in};
use crate::support::fake_idp::FakeIdp;
use crate::support::idp::{CLIENT_ID, CLIENT_SECRET, Idp, idp_login};
use crate::support::sql::{Forwarder, StoreKind, TestStore};
use crate::support::*;

const COOKIE: &str = "authjs.session-token";
const SECOND_ID: &str = "portcullis-second";
const WRONG: &str = "not the password";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `database` sessions in `store` (its URL), plus `extra` top-level blocks.
fn db_conf_at(store: &TestStore, url: &str, store_more: &str) -> Conf {
    Conf::default().extra(&format!(
        "session:\n  strategy: database\n  update_age: 1h\n{}",
        store.yaml_for(url, store_more)
    ))
}

fn db_conf(store: &TestStore) -> Conf {
    db_conf_at(store, &store.url(), "")
}

async fn start(conf: Conf) -> Portcullis {
    let pc = Portcullis::start(conf).await;
    pc.wait_readyz(StatusCode::OK).await;
    pc
}

async fn signed_in(pc: &Portcullis, who: &str) -> Browser {
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), who, PASSWORD, "/").await;
    assert_eq!(r.location(), "/", "{}\n{}", r.body, pc.logs());
    assert!(b.jar.contains_key(COOKIE), "no session cookie");
    b
}

async fn session_email(b: &mut Browser, pc: &Portcullis) -> serde_json::Value {
    let r = b.get(&pc.url("/auth/session")).await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.body, pc.logs());
    if r.body == "null" {
        return serde_json::Value::Null;
    }
    r.json()["user"]["email"].clone()
}

/// Posts the sign-out form (`everywhere`: of every session of the user).
async fn sign_out(b: &mut Browser, pc: &Portcullis, everywhere: bool) {
    let page = b.get(&pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").expect("csrfToken on sign-out");
    let path = if everywhere {
        "/auth/signout?everywhere=1"
    } else {
        "/auth/signout"
    };
    let r = b
        .post_form(
            &pc.url(path),
            &[("csrfToken", &token), ("callbackUrl", "/")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}\n{}", r.body, pc.logs());
}

/// Live session rows (SQL) or session keys (Redis).
async fn live_sessions(store: &mut TestStore) -> i64 {
    if store.kind == StoreKind::Redis {
        return store.redis().keys("it:s:*").len() as i64;
    }
    store
        .count_where("sessions", &format!("expires > {}", now_secs()))
        .await
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_of(pc: &Portcullis) -> String {
    pc.dir
        .path()
        .join("portcullis.yaml")
        .to_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------
// Sessions

/// Credentials sign-in, `database` session: the cookie is an opaque id and
/// works; forged or guessed ids are no session; sign-out kills the old
/// cookie server-side.
async fn signout_kills_cookie(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let up = Upstream::start().await;
    let pc = start(db_conf(&store).upstream(&up.url())).await;
    let mut b = signed_in(&pc, ALICE.0).await;
    let id = b.jar[COOKIE].clone();
    let (opaque, _) = id.split_once('.').unwrap_or_else(|| panic!("{id}"));
    assert_eq!(opaque.len(), 43, "not an opaque id: {id}");
    assert_eq!(b.get(&pc.url("/app")).await.status, StatusCode::OK);
    assert_eq!(up.last().header("x-auth-request-email"), Some(ALICE.0));
    assert_eq!(live_sessions(&mut store).await, 1);

    let mut guess = id.clone().into_bytes();
    guess[5] = if guess[5] == b'A' { b'B' } else { b'A' };
    for bad in [
        String::from_utf8(guess).unwrap(),
        format!("{}.0", "x".repeat(43)),
        format!("{id}x"),
        opaque.to_string(),
        "' OR '1'='1".into(),
        String::new(),
    ] {
        let mut c = Browser::api();
        c.jar.insert(COOKIE.into(), bad.clone());
        assert_eq!(session_email(&mut c, &pc).await, json!(null), "{bad:?}");
        assert_eq!(
            c.get(&pc.url("/app")).await.status,
            StatusCode::UNAUTHORIZED,
            "{bad:?}"
        );
    }

    sign_out(&mut b, &pc, false).await;
    let mut replay = Browser::api();
    replay.jar.insert(COOKIE.into(), id);
    assert_eq!(
        replay.get(&pc.url("/app")).await.status,
        StatusCode::UNAUTHORIZED,
        "the old cookie still works after sign-out"
    );
    assert_eq!(session_email(&mut replay, &pc).await, json!(null));
    assert_eq!(live_sessions(&mut store).await, 0, "{}", store.dump().await);
}

/// Many requests at once, several of one session and several of another,
/// with forged ids among them: each gets its own user or none (a store may
/// answer parallel reads together, never mixed up or dropped).
async fn parallel_reads_each_get_their_own_session(kind: StoreKind) {
    let _store = TestStore::fresh(kind).await;
    let up = Upstream::start().await;
    let pc = start(db_conf(&_store).upstream(&up.url())).await;
    let alice = signed_in(&pc, ALICE.0).await;
    let bob = signed_in(&pc, BOB.0).await;
    let before = up.count();
    for round in 0..3 {
        let tasks: Vec<_> = (0..96)
            .map(|i| {
                let url = pc.url(&format!("/app/{round}/{i}"));
                let mut c = Browser::api();
                c.jar = match i % 3 {
                    0 => alice.jar.clone(),
                    1 => bob.jar.clone(),
                    _ => {
                        let mut forged = alice.jar.clone();
                        let id = forged[COOKIE].clone();
                        forged.insert(COOKIE.into(), format!("{}{}", "Z".repeat(43), &id[43..]));
                        forged
                    }
                };
                tokio::spawn(async move { (i, c.get(&url).await.status) })
            })
            .collect();
        for t in tasks {
            let (i, status) = t.await.unwrap();
            let want = if i % 3 == 2 {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            assert_eq!(status, want, "request {i} of round {round}\n{}", pc.logs());
        }
    }
    let reqs = up.requests.lock().unwrap()[before..].to_vec();
    assert_eq!(reqs.len(), 3 * 64, "only signed-in requests reach the app");
    for r in reqs {
        let i: usize = r.uri.rsplit('/').next().unwrap().parse().unwrap();
        let want = if i.is_multiple_of(3) { ALICE.0 } else { BOB.0 };
        assert_eq!(r.header("x-auth-request-email"), Some(want), "{}", r.uri);
    }
}

/// Two instances on one store: a sign-in on one is one on the other; a
/// sign-out on one is seen by the other.
async fn two_instances_share_sessions(kind: StoreKind) {
    let _store = TestStore::fresh(kind).await;
    let a = start(db_conf(&_store)).await;
    let b = start(db_conf(&_store)).await;
    let mut user = signed_in(&a, ALICE.0).await;
    assert_eq!(session_email(&mut user, &b).await, json!(ALICE.0));
    let mut bob = signed_in(&b, BOB.0).await;
    assert_eq!(session_email(&mut bob, &a).await, json!(BOB.0));

    let saved = user.jar.clone();
    sign_out(&mut user, &b, false).await;
    let mut replay = Browser::api();
    replay.jar = saved;
    assert_eq!(
        session_email(&mut replay, &a).await,
        json!(null),
        "instance A still honours a session signed out on B"
    );
    assert_eq!(session_email(&mut bob, &a).await, json!(BOB.0));
}

/// `signout?everywhere=1` and `portcullis sessions list/revoke --user`.
async fn signout_everywhere_and_cli(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let pc = start(db_conf(&store)).await;
    let mut laptop = signed_in(&pc, ALICE.0).await;
    let mut phone = signed_in(&pc, ALICE.0).await;
    let mut bob = signed_in(&pc, BOB.0).await;
    let mut bob2 = signed_in(&pc, BOB.0).await;
    let cfg = config_of(&pc);

    let (ok, listed, err) = cli(&[
        "sessions",
        "list",
        "--config",
        &cfg,
        "--user",
        "Alice@Example.com",
    ]);
    assert!(ok, "sessions list: {err}");
    assert_eq!(listed.lines().count(), 2, "{listed}\n{err}");
    for secret in [&laptop.jar[COOKIE], &phone.jar[COOKIE]] {
        let opaque = secret.split('.').next().unwrap();
        assert!(!listed.contains(opaque), "the CLI printed a session id");
    }

    sign_out(&mut laptop, &pc, true).await;
    assert_eq!(
        session_email(&mut phone, &pc).await,
        json!(null),
        "the phone is signed out too"
    );
    assert_eq!(session_email(&mut bob, &pc).await, json!(BOB.0));

    let (ok, _, err) = cli(&["sessions", "revoke", "--config", &cfg, "--user", BOB.0]);
    assert!(ok, "sessions revoke: {err}");
    assert!(err.contains("ended 2 session"), "{err}");
    assert_eq!(session_email(&mut bob, &pc).await, json!(null));
    assert_eq!(session_email(&mut bob2, &pc).await, json!(null));
    assert_eq!(live_sessions(&mut store).await, 0, "{}", store.dump().await);
}

// ---------------------------------------------------------------------------
// Users and accounts (OIDC, the real IdP)

/// One IdP, two clients: providers `corp` and `corp2`; `ttl`: access
/// token lifetime (refresh tokens rotate); access tokens forwarded (to
/// `up`, when given).
async fn oidc_site(
    store: &TestStore,
    ttl: Option<u64>,
    up: Option<&Upstream>,
) -> (Idp, Portcullis) {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut cfg = Idp::default_config(
        &format!("{origin}/auth/callback/corp"),
        &[&format!("{origin}/")],
    );
    let mut second = cfg["clients"][0].clone();
    second["client_id"] = json!(SECOND_ID);
    second["redirect_uris"] = json!([format!("{origin}/auth/callback/corp2")]);
    cfg["clients"].as_array_mut().unwrap().push(second);
    if let Some(ttl) = ttl {
        cfg["ttl"] = json!({ "AccessToken": ttl });
        cfg["rotate_refresh_tokens"] = json!(true);
    }
    let idp = Idp::start(cfg).await;
    let entry = |id: &str, client: &str| {
        format!(
            "  - type: oidc\n    id: {id}\n    name: {id}\n    issuer: {}\n    client_id: {client}\n    client_secret: {CLIENT_SECRET}\n    scopes: [openid, email, profile, groups]\n",
            idp.issuer
        )
    };
    let mut conf = db_conf(store)
        .provider(&entry("corp", CLIENT_ID))
        .provider(&entry("corp2", SECOND_ID))
        .extra("headers:\n  access_token: header\n");
    if let Some(up) = up {
        conf = conf.upstream(&up.url());
    }
    let pc = Portcullis::start_at(conf, &[], port).await;
    pc.wait_readyz(StatusCode::OK).await;
    (idp, pc)
}

/// Up to the IdP's answer: a browser that logged in as `login` at the IdP
/// and the callback URL it was sent back to (not yet opened).
async fn to_callback(pc_url: String, provider: &str, login: &str) -> (Browser, String) {
    let mut b = Browser::new();
    let page = b.get(&format!("{pc_url}/auth/signin")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &format!("{pc_url}/auth/signin/{provider}"),
            &[("csrfToken", &token), ("callbackUrl", "/")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    let back = idp_login(&mut b, r.location(), login).await;
    let cb = back.location().to_string();
    assert!(cb.contains(&format!("/auth/callback/{provider}?")), "{cb}");
    (b, cb)
}

async fn oidc_sign_in(pc: &Portcullis, provider: &str, login: &str) -> (Browser, Resp) {
    let (mut b, cb) = to_callback(pc.url(""), provider, login).await;
    let r = b.get(&cb).await;
    (b, r)
}

/// A first OIDC sign-in creates one user and one account; the same e-mail
/// through a second provider is `OAuthAccountNotLinked`.
async fn oidc_one_user_one_account(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let (_idp, pc) = oidc_site(&store, None, None).await;
    let (mut b, r) = oidc_sign_in(&pc, "corp", "alice").await;
    assert_eq!(r.location(), "/", "{}", pc.logs());
    assert_eq!(session_email(&mut b, &pc).await, json!("alice@example.com"));
    assert_eq!(
        store.users_and_accounts().await,
        (1, 1),
        "{}",
        store.dump().await
    );
    if kind.is_sql() {
        assert_eq!(
            store.column("SELECT email FROM users").await,
            ["alice@example.com"]
        );
        assert_eq!(
            store
                .column("SELECT provider FROM accounts WHERE provider_account_id = 'alice-sub'")
                .await,
            ["corp"]
        );
    }
    // Again through corp: the same user, no new rows.
    let (_, r) = oidc_sign_in(&pc, "corp", "alice").await;
    assert_eq!(r.location(), "/");
    assert_eq!(store.users_and_accounts().await, (1, 1));

    let (other, r) = oidc_sign_in(&pc, "corp2", "alice").await;
    assert_eq!(
        r.location(),
        "/auth/error?error=OAuthAccountNotLinked",
        "{}",
        pc.logs()
    );
    assert!(!other.jar.contains_key(COOKIE));
    assert_eq!(store.users_and_accounts().await, (1, 1));
    // Someone else through corp2 is a new user with a new account.
    let (_, r) = oidc_sign_in(&pc, "corp2", "bob").await;
    assert_eq!(r.location(), "/");
    assert_eq!(store.users_and_accounts().await, (2, 2));
}

// ---------------------------------------------------------------------------
// E-mail sign-in

/// A magic link signs in once; the second use is refused; the store never
/// holds the mailed token.
async fn email_link_works_once(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let smtp = Smtp::start(Mode::StartTls);
    let pc = start(db_conf(&store).provider(&crate::email::provider(&smtp, ""))).await;
    let mut b = Browser::new();
    let r = ask_link(&mut b, &pc, "alice@example.com", "/app").await;
    assert_eq!(
        r.location(),
        "/auth/verify-request?provider=email&type=email",
        "{}\n{}",
        r.body,
        pc.logs()
    );
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails.len(), 1, "{}", pc.logs());
    let link = link_in(&mails[0], &pc);
    let token = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .unwrap()
        .1
        .into_owned();
    let dump = store.dump().await;
    assert!(!dump.contains(&token), "the store holds the token:\n{dump}");
    if kind.is_sql() {
        assert_eq!(store.count("verification_tokens").await, 1, "{dump}");
    }

    let mut reader = Browser::new();
    let r = reader.get(&link).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}\n{}", r.body, pc.logs());
    assert_eq!(r.location(), "/app");
    assert_eq!(
        session_email(&mut reader, &pc).await,
        json!("alice@example.com")
    );

    let mut again = Browser::new();
    let r = again.get(&link).await;
    assert_verification_error(&mut again, &pc, &r).await;
    assert!(!again.has_session());
    if kind.is_sql() {
        assert_eq!(store.count("verification_tokens").await, 0);
    }
}

// ---------------------------------------------------------------------------
// Token refresh

/// 50 requests at once, `jars[i % len]` each; (status, forwarded token).
async fn burst(pc: &Portcullis, up: &Upstream, jars: &[Browser]) -> Vec<(StatusCode, String)> {
    let n = 50;
    let before = up.count();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = pc.url(&format!("/app/{i}"));
            let jar = jars[i % jars.len()].jar.clone();
            tokio::spawn(async move {
                let mut c = Browser::api();
                c.jar = jar;
                c.get(&url).await.status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let reqs = up.requests.lock().unwrap()[before..].to_vec();
    statuses
        .into_iter()
        .enumerate()
        .map(|(i, st)| {
            let tok = reqs
                .iter()
                .find(|r| r.uri == format!("/app/{i}"))
                .and_then(|r| r.header("x-auth-request-access-token"))
                .unwrap_or("")
                .to_string();
            (st, tok)
        })
        .collect()
}

const TTL: u64 = 4;
/// Access-token lifetime in the concurrency test: Portcullis refreshes a
/// quarter of it early (at 6 s). Not near 5 s: oidc-provider (Node) closes
/// idle keep-alive connections after 5 s, and a refresh sent on a pooled
/// connection at that moment is reset (no refresh, the current token is
/// forwarded), which is not what this test is about.
const CONCURRENT_TTL: u64 = 8;

/// Refresh single-flight: 50 concurrent requests on an expiring session,
/// one refresh at the IdP, all succeed; the rotated refresh token is kept.
async fn refresh_single_flight(kind: StoreKind) {
    let store = TestStore::fresh(kind).await;
    let up = Upstream::start().await;
    let (idp, pc) = oidc_site(&store, Some(TTL), Some(&up)).await;
    let (b, r) = oidc_sign_in(&pc, "corp", "alice").await;
    assert_eq!(r.location(), "/", "{}", pc.logs());
    let first = burst(&pc, &up, std::slice::from_ref(&b)).await;
    assert!(first.iter().all(|(s, _)| *s == StatusCode::OK), "{first:?}");
    assert_eq!(idp.counters().await["refresh_token"], 0);
    tokio::time::sleep(Duration::from_millis((TTL - 1) * 1000 + 300)).await;

    let results = burst(&pc, &up, std::slice::from_ref(&b)).await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::OK),
        "{results:?}\n{}",
        pc.logs()
    );
    assert_eq!(
        idp.counters().await["refresh_token"],
        1,
        "one refresh at the IdP for 50 concurrent requests"
    );
    let tokens: std::collections::HashSet<&String> = results.iter().map(|(_, t)| t).collect();
    assert_eq!(
        tokens.len(),
        1,
        "every request forwarded the same new token"
    );
    assert!(!tokens.contains(&first[0].1));

    tokio::time::sleep(Duration::from_millis((TTL - 1) * 1000 + 300)).await;
    let again = burst(&pc, &up, std::slice::from_ref(&b)).await;
    assert!(
        again.iter().all(|(s, _)| *s == StatusCode::OK),
        "the rotated refresh token was lost: {again:?}\n{}",
        pc.logs()
    );
    assert_eq!(idp.counters().await["refresh_token"], 2);
}

// ---------------------------------------------------------------------------
// Back-channel logout, API token revocation, regulation

/// A valid back-channel logout token ends the subject's sessions.
async fn backchannel_logout(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let idp = FakeIdp::start().await;
    let pc = start(db_conf(&store).provider(&idp.provider_yaml(""))).await;
    let mut browsers = Vec::new();
    for _ in 0..2 {
        let mut b = Browser::new();
        let page = b.get(&pc.url("/auth/signin")).await;
        let token = page.hidden("csrfToken").unwrap();
        let r = b
            .post_form(
                &pc.url("/auth/signin/fake"),
                &[("csrfToken", &token), ("callbackUrl", "/")],
            )
            .await;
        let cb = b.get(r.location()).await.location().to_string();
        assert_eq!(b.get(&cb).await.location(), "/", "{}", pc.logs());
        assert_eq!(session_email(&mut b, &pc).await, json!("fay@example.com"));
        browsers.push(b);
    }
    let mut alice = signed_in(&pc, ALICE.0).await;
    assert_eq!(live_sessions(&mut store).await, 3);

    let url = pc.url("/auth/backchannel-logout/fake");
    let mut idp_client = Browser::api();
    let forged = idp.logout_token("user-1", true, |_| {});
    let r = idp_client
        .post_form(&url, &[("logout_token", &forged)])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(live_sessions(&mut store).await, 3);

    let r = idp_client
        .post_form(
            &url,
            &[("logout_token", &idp.logout_token("user-1", false, |_| {}))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.body, pc.logs());
    for b in &mut browsers {
        assert_eq!(
            session_email(b, &pc).await,
            json!(null),
            "a session survived back-channel logout"
        );
    }
    assert_eq!(session_email(&mut alice, &pc).await, json!(ALICE.0));
    assert_eq!(live_sessions(&mut store).await, 1, "{}", store.dump().await);
}

/// `portcullis token revoke` puts the token on the deny list in the store:
/// refused from then on, by every instance; other tokens pass.
async fn token_revoke(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let up = Upstream::start().await;
    let conf = || {
        Conf::default()
            .upstream(&up.url())
            .extra(&store.yaml(""))
            .extra("tokens:\n  api:\n    enabled: true\n")
    };
    let a = start(conf()).await;
    let b = start(conf()).await;
    let cfg = config_of(&a);
    let mint = || {
        let (ok, out, err) = cli(&["token", "mint", "--config", &cfg, "--sub", "ci-bot"]);
        assert!(ok, "token mint: {err}");
        out.trim().to_string()
    };
    let (token, other) = (mint(), mint());
    let bearer = |pc: &Portcullis, t: &str| {
        let url = pc.url("/x");
        let h = format!("Bearer {t}");
        async move {
            Browser::api()
                .get_with(&url, &[("authorization", &h)])
                .await
                .status
        }
    };
    assert_eq!(bearer(&a, &token).await, StatusCode::OK);
    let (ok, _, err) = cli(&["token", "revoke", "--config", &cfg, &token]);
    assert!(ok, "token revoke: {err}");
    for pc in [&a, &b] {
        assert_eq!(
            bearer(pc, &token).await,
            StatusCode::UNAUTHORIZED,
            "a revoked token passes: {}",
            pc.logs()
        );
        assert_eq!(bearer(pc, &other).await, StatusCode::OK);
    }
    if kind.is_sql() {
        assert!(
            store.count("portcullis_set").await >= 1,
            "{}",
            store.dump().await
        );
    }
}

/// One failed credentials attempt from a fresh browser; whether it was
/// answered as a refusal.
async fn attempt(pc: &Portcullis, email: &str, password: &str) -> Resp {
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), email, password, "/").await
}

fn refused(r: &Resp) -> bool {
    r.status == StatusCode::FOUND && r.location().contains("error=CredentialsSignin")
}

/// Failed sign-ins counted in the store: two instances share the ban.
async fn regulation_shared(kind: StoreKind) {
    let _store = TestStore::fresh(kind).await;
    let conf = || {
        Conf::default()
            .extra(&_store.yaml(""))
            .extra("regulation:\n  max_retries: 3\n  find_time: 1m\n  ban_time: 1m\n")
    };
    let a = start(conf()).await;
    let b = start(conf()).await;
    for pc in [&a, &b, &a] {
        let r = attempt(pc, ALICE.0, WRONG).await;
        assert!(refused(&r), "{:?} {}", r.status, r.location());
    }
    // Banned on both: the right password is refused.
    for pc in [&b, &a] {
        let r = attempt(pc, ALICE.0, PASSWORD).await;
        assert!(
            refused(&r),
            "the ban is not shared: {:?} {}\n{}",
            r.status,
            r.location(),
            pc.logs()
        );
    }
    assert!(b.log_shows("banned by regulation").await, "{}", b.logs());
    // Others are not.
    assert_eq!(attempt(&b, BOB.0, PASSWORD).await.location(), "/");
    // An address longer than any key column is counted like any other
    // (not a failed store write, which would answer 503).
    let long = format!("{}@example.com", "x".repeat(300));
    let r = attempt(&a, &long, WRONG).await;
    assert!(refused(&r), "{:?} {}\n{}", r.status, r.location(), a.logs());
}

// ---------------------------------------------------------------------------
// What the store holds

/// Scans the whole store: no raw session id (credentials or OIDC) and no
/// access token anywhere.
async fn no_raw_secrets_stored(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let up = Upstream::start().await;
    let (_idp, pc) = oidc_site(&store, None, Some(&up)).await;
    let creds = signed_in(&pc, ALICE.0).await;
    let (mut oidc, r) = oidc_sign_in(&pc, "corp", "bob").await;
    assert_eq!(r.location(), "/", "{}", pc.logs());
    assert_eq!(oidc.get(&pc.url("/app")).await.status, StatusCode::OK);
    let access = up
        .last()
        .header("x-auth-request-access-token")
        .expect("the access token forwarded")
        .to_string();
    let dump = store.dump().await;
    assert!(!dump.is_empty());
    for (what, secret) in [
        ("credentials session id", creds.jar[COOKIE].clone()),
        ("OIDC session id", oidc.jar[COOKIE].clone()),
        ("access token", access),
    ] {
        let raw = secret.split('.').next().unwrap().to_string();
        assert!(raw.len() >= 20, "{what}: {raw}");
        assert!(
            !dump.contains(&raw),
            "the store holds a raw {what} ({raw}):\n{dump}"
        );
    }
}

// ---------------------------------------------------------------------------
// Concurrency

/// 50 parallel first sign-ins of the same OIDC user: exactly one user and
/// one account. Then 50 sessions refreshing at once, twice: 50 refreshes
/// each time, every request served (no rotated refresh token lost).
async fn concurrent_sign_ins_and_refreshes(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let up = Upstream::start().await;
    let (idp, pc) = oidc_site(&store, Some(CONCURRENT_TTL), Some(&up)).await;
    // Everyone through the IdP first (ten at a time), then all at once to us.
    let mut pending = Vec::new();
    for _ in 0..5 {
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let url = pc.url("");
                tokio::spawn(async move { to_callback(url, "corp", "alice").await })
            })
            .collect();
        for t in tasks {
            pending.push(t.await.unwrap());
        }
    }
    let tasks: Vec<_> = pending
        .into_iter()
        .map(|(mut b, cb)| {
            tokio::spawn(async move {
                let r = b.get(&cb).await;
                (b, r.status, r.location().to_string(), r.body)
            })
        })
        .collect();
    let mut jars = Vec::new();
    let mut answers = Vec::new();
    for t in tasks {
        let (b, st, loc, body) = t.await.unwrap();
        answers.push((st, loc, body));
        jars.push(b);
    }
    assert!(
        answers.iter().all(|(_, loc, _)| loc == "/"),
        "{answers:?}\n{}",
        pc.logs()
    );
    assert_eq!(
        store.users_and_accounts().await,
        (1, 1),
        "duplicate users or accounts:\n{}",
        store.dump().await
    );
    assert_eq!(live_sessions(&mut store).await, 50);

    // Every access token was issued by now; none is due yet.
    let mut issued_by = std::time::Instant::now();
    idp.reset_counters().await;
    let mut previous: Vec<String> = burst(&pc, &up, &jars)
        .await
        .into_iter()
        .map(|(s, t)| {
            assert_eq!(s, StatusCode::OK);
            t
        })
        .collect();
    assert_eq!(idp.counters().await["refresh_token"], 0);
    for round in 1..=2 {
        // Until every token is inside the refresh window (a quarter of
        // its lifetime before expiry).
        let due =
            issued_by + Duration::from_millis((CONCURRENT_TTL - CONCURRENT_TTL / 4) * 1000 + 600);
        tokio::time::sleep_until(due.into()).await;
        let results = burst(&pc, &up, &jars).await;
        issued_by = std::time::Instant::now();
        assert!(
            results
                .iter()
                .all(|(s, t)| *s == StatusCode::OK && !t.is_empty()),
            "round {round}: {results:?}\n{}",
            pc.logs()
        );
        for (i, (_, t)) in results.iter().enumerate() {
            assert_ne!(
                t,
                &previous[i],
                "round {round}: session {i} was not refreshed; log lines:\n{}",
                pc.logs()
                    .lines()
                    .filter(|l| l.contains("refresh") || l.contains("WARN"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        assert_eq!(
            idp.counters().await["refresh_token"],
            50 * round,
            "round {round}: one refresh per session"
        );
        previous = results.into_iter().map(|(_, t)| t).collect();
    }
    assert_eq!(store.users_and_accounts().await, (1, 1));
}

// ---------------------------------------------------------------------------
// Outage

/// The store cut off (a TCP forwarder between Portcullis and the server):
/// 503 (page and JSON), `/readyz` 503, nothing let through; back without a
/// restart when the network returns.
async fn store_down_fails_closed_and_recovers(kind: StoreKind) {
    let store = TestStore::fresh(kind).await;
    let fwd = Forwarder::start(store.server_addr()).await;
    let up = Upstream::start().await;
    let pc = start(db_conf_at(&store, &store.url_via(fwd.port), "").upstream(&up.url())).await;
    let mut b = signed_in(&pc, ALICE.0).await;
    assert_eq!(b.get(&pc.url("/app")).await.status, StatusCode::OK);
    let before = up.count();

    fwd.cut();
    let page = b.get(&pc.url("/app")).await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}\n{}",
        page.body,
        pc.logs()
    );
    assert!(page.body.contains("session store"), "{}", page.body);
    let mut api = Browser::api();
    api.jar = b.jar.clone();
    let r = api.get(&pc.url("/app")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "Unavailable");
    let r = api
        .get_with(
            &pc.url("/auth/forward-auth"),
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/x"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(up.count(), before, "a request went through unchecked");
    pc.wait_readyz(StatusCode::SERVICE_UNAVAILABLE).await;

    fwd.restore();
    pc.wait_readyz(StatusCode::OK).await;
    let ok = b
        .get_until(
            &pc.url("/app"),
            StatusCode::OK,
            50,
            Duration::from_millis(100),
        )
        .await;
    assert!(ok, "no recovery after the store returned:\n{}", pc.logs());
    assert_eq!(up.last().header("x-auth-request-email"), Some(ALICE.0));
}

// ---------------------------------------------------------------------------
// SQL only: migrations, sweeping

fn migrate_config(store: &TestStore, dir: &TempDir) -> String {
    let users = dir.write("users.yaml", &users_file_yaml(&[ALICE]));
    dir.write(
        "portcullis.yaml",
        &format!(
            "listen: 127.0.0.1:4180\npublic_url: https://auth.example.com\nsecrets: [\"{SECRET}\"]\nproviders:\n  - type: credentials\n    users_file: {}\nsession:\n  strategy: database\n{}",
            users.display(),
            store.yaml("  auto_migrate: false\n")
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// `portcullis migrate` creates the schema, run again is a no-op, and a
/// schema newer than the binary knows is refused with a clear message.
async fn migrate_twice_and_newer_refused(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let dir = TempDir::new("migrate");
    let cfg = migrate_config(&store, &dir);
    let (ok, out, err) = cli(&["migrate", "--config", &cfg]);
    assert!(ok, "first migrate: {out}\n{err}");
    assert!(out.contains("applied version 1"), "{out}\n{err}");
    let tables = store.tables().await;
    for t in [
        "users",
        "accounts",
        "sessions",
        "verification_tokens",
        "portcullis_kv",
        "portcullis_set",
        "portcullis_schema",
    ] {
        assert!(tables.iter().any(|x| x == t), "no table {t}: {tables:?}");
    }
    let (ok, out, err) = cli(&["migrate", "--config", &cfg]);
    assert!(ok, "second migrate: {out}\n{err}");
    assert!(out.contains("up to date"), "{out}\n{err}");
    assert!(!out.contains("applied"), "{out}");
    assert_eq!(
        store.column("SELECT version FROM portcullis_schema").await,
        ["1"]
    );
    // The server starts on the migrated schema with auto_migrate off.
    let pc = start(Conf::default().extra(&format!(
        "session:\n  strategy: database\n{}",
        store.yaml("  auto_migrate: false\n")
    )))
    .await;
    signed_in(&pc, ALICE.0).await;
    drop(pc);

    store
        .exec("INSERT INTO portcullis_schema (version) VALUES (99)")
        .await;
    let (ok, out, err) = cli(&["migrate", "--config", &cfg]);
    let said = format!("{out}{err}");
    assert!(!ok, "a newer schema was accepted: {said}");
    assert!(said.contains("newer"), "{said}");
    assert!(said.contains("99") && said.contains('1'), "{said}");
    let mut versions = store.column("SELECT version FROM portcullis_schema").await;
    versions.sort();
    assert_eq!(versions, ["1", "99"], "the database was touched");
}

/// Expired rows are swept in the background in batches, live ones stay;
/// an expired row is never read as live meanwhile.
async fn sweeper_deletes_expired_rows(kind: StoreKind) {
    let mut store = TestStore::fresh(kind).await;
    let pc = start(Conf::default().extra(&format!(
        "session:\n  strategy: database\n  update_age: 1h\n{}",
        store.yaml("  sweep_interval: 1s\n  sweep_batch: 100\n")
    )))
    .await;
    let mut old = signed_in(&pc, ALICE.0).await;
    let past = now_secs() - 10;
    assert_eq!(
        store
            .exec(&format!("UPDATE sessions SET expires = {past}"))
            .await,
        1
    );
    assert_eq!(
        session_email(&mut old, &pc).await,
        json!(null),
        "an expired row read as a live session"
    );
    let mut live = signed_in(&pc, BOB.0).await;
    // A backlog larger than one batch in each table that expires.
    let rows = |f: &dyn Fn(usize) -> String| (0..250).map(f).collect::<Vec<_>>().join(", ");
    store
        .exec(&format!(
            "INSERT INTO sessions (session_token, user_id, user_key, subject_key, data, created_at, expires) VALUES {}",
            rows(&|i| format!("('pcit-old-{i}', 'u', 'k', NULL, 'x', 1, {past})"))
        ))
        .await;
    store
        .exec(&format!(
            "INSERT INTO verification_tokens (identifier, token, data, expires) VALUES {}",
            rows(&|i| format!("('pcit', 'pcit-old-{i}', 'x', {past})"))
        ))
        .await;
    store
        .exec(&format!(
            "INSERT INTO portcullis_kv (name, value, counter, expires) VALUES {}",
            rows(&|i| format!("('it:pcit-old-{i}', NULL, 1, {})", past * 1000))
        ))
        .await;
    let (p, pm) = (past + 5, (past + 5) * 1000);
    let mut left = -1;
    for _ in 0..60 {
        left = store
            .count_where("sessions", &format!("expires < {p}"))
            .await
            + store
                .count_where("verification_tokens", &format!("expires < {p}"))
                .await
            + store
                .count_where("portcullis_kv", &format!("expires < {pm}"))
                .await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(left, 0, "expired rows not swept:\n{}", pc.logs());
    assert_eq!(store.count("sessions").await, 1);
    assert_eq!(session_email(&mut live, &pc).await, json!(BOB.0));
}

/// `session.strategy: database` and no store: SQLite at
/// `{data_dir}/portcullis.db` (next to the config file by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_the_default_store_of_database_sessions() {
    let pc = start(Conf::default().extra("session:\n  strategy: database\n")).await;
    let mut b = signed_in(&pc, ALICE.0).await;
    assert_eq!(session_email(&mut b, &pc).await, json!(ALICE.0));
    let file = pc.dir.path().join("data/portcullis.db");
    assert!(file.is_file(), "no {}\n{}", file.display(), pc.logs());
}

// ---------------------------------------------------------------------------
// The instantiations: each test per store.

macro_rules! tests {
    ($kind:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($kind).await;
            }
        )*
    };
}

/// Every store.
macro_rules! common {
    ($kind:expr) => {
        tests!($kind;
            signout_kills_cookie,
            parallel_reads_each_get_their_own_session,
            two_instances_share_sessions,
            signout_everywhere_and_cli,
            oidc_one_user_one_account,
            email_link_works_once,
            refresh_single_flight,
            backchannel_logout,
            token_revoke,
            regulation_shared,
            no_raw_secrets_stored,
            concurrent_sign_ins_and_refreshes,
        );
    };
}

/// Stores behind a server: the outage test cuts the network to it.
macro_rules! served {
    ($kind:expr) => {
        tests!($kind; store_down_fails_closed_and_recovers);
    };
}

/// SQL stores: the schema and the sweeper.
macro_rules! sql_only {
    ($kind:expr) => {
        tests!($kind; migrate_twice_and_newer_refused, sweeper_deletes_expired_rows);
    };
}

mod redis {
    common!(super::StoreKind::Redis);
    served!(super::StoreKind::Redis);
}

mod postgres {
    common!(super::StoreKind::Postgres);
    served!(super::StoreKind::Postgres);
    sql_only!(super::StoreKind::Postgres);
}

mod mariadb {
    common!(super::StoreKind::MariaDb);
    served!(super::StoreKind::MariaDb);
    sql_only!(super::StoreKind::MariaDb);
}

// SQLite has no outage test: it is a file in the process, with no network
// to cut (a missing or unwritable file is a config error, not an outage).
mod sqlite {
    common!(super::StoreKind::Sqlite);
    sql_only!(super::StoreKind::Sqlite);
}
