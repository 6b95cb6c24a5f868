//! The `database` session strategy against real Redis: revocation,
//! replicas, restarts, outages (fail closed), what Redis holds, and the
//! CLI. Topologies (Sentinel, Cluster) and token refresh are in
//! `database_topologies` and `refresh`.

use std::process::Command;
use std::time::Duration;

use http::StatusCode;

use crate::support::redis::{RedisOpts, RedisServer};
use crate::support::*;

fn db_conf(redis_url: &str) -> Conf {
    Conf::default().extra(&format!("session:\n  strategy: database\n  update_age: 1h\nstore:\n  redis_url: \"{redis_url}\"\n  key_prefix: \"it:\"\n  timeout: 1s\n"))
}

async fn wait_ready(pc: &Portcullis, want: StatusCode) {
    pc.wait_readyz(want).await;
}

async fn signed_in(pc: &Portcullis, who: &str) -> Browser {
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), who, PASSWORD, "/").await;
    assert_eq!(r.location(), "/", "{}\n{}", r.body, pc.logs());
    b
}

#[tokio::test]
async fn the_cookie_is_an_opaque_id_and_sign_out_kills_it_server_side() {
    let redis = RedisServer::start(RedisOpts::default());
    let up = Upstream::start().await;
    let pc = Portcullis::start(db_conf(&redis.url()).upstream(&up.url())).await;
    wait_ready(&pc, StatusCode::OK).await;
    let mut b = signed_in(&pc, ALICE.0).await;
    let id = b.jar["authjs.session-token"].clone();
    // An opaque id (43 characters) and when the cookie was issued, not a JWE.
    let (opaque, issued) = id.split_once('.').unwrap();
    assert_eq!(opaque.len(), 43, "{id}");
    assert!(u64::from_str_radix(issued, 16).is_ok(), "{id}");
    assert_eq!(b.get(&pc.url("/app")).await.status, StatusCode::OK);
    assert_eq!(up.last().header("x-auth-request-email"), Some(ALICE.0));

    let page = b.get(&pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    b.post_form(
        &pc.url("/auth/signout"),
        &[("csrfToken", &token), ("callbackUrl", "/")],
    )
    .await;
    // The old cookie, replayed: refused, because the record is gone.
    let mut replay = Browser::api();
    replay.jar.insert("authjs.session-token".into(), id);
    assert_eq!(
        replay.get(&pc.url("/app")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(redis.keys("it:s:*").is_empty(), "{:?}", redis.keys("*"));
}

#[tokio::test]
async fn redis_holds_no_raw_session_id_token_or_email() {
    let redis = RedisServer::start(RedisOpts::default());
    let pc = Portcullis::start(db_conf(&redis.url())).await;
    wait_ready(&pc, StatusCode::OK).await;
    let b = signed_in(&pc, ALICE.0).await;
    let id = b.jar["authjs.session-token"]
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let id = &id;
    let dump = redis.dump_all();
    assert!(dump.contains("it:s:"), "{dump}");
    for secret in [id.as_str(), ALICE.0, ALICE.1, "admins"] {
        assert!(!dump.contains(secret), "Redis holds {secret:?}:\n{dump}");
    }
}

#[tokio::test]
async fn forged_guessed_deleted_and_expired_ids_are_no_session() {
    let redis = RedisServer::start(RedisOpts::default());
    let pc = Portcullis::start(db_conf(&redis.url())).await;
    wait_ready(&pc, StatusCode::OK).await;
    let b = signed_in(&pc, ALICE.0).await;
    let id = b.jar["authjs.session-token"].clone();
    let keys = redis.keys("it:s:*");
    assert_eq!(keys.len(), 1);
    let mut guess = id.clone().into_bytes();
    guess[5] = if guess[5] == b'A' { b'B' } else { b'A' };
    for bad in [
        String::from_utf8(guess).unwrap(),
        format!("{}.0", "x".repeat(43)),
        "../../etc".into(),
        format!("{id}x"),
        id.split('.').next().unwrap().to_string(),
        String::new(),
    ] {
        let mut c = Browser::api();
        c.jar.insert("authjs.session-token".into(), bad.clone());
        assert_eq!(
            c.get(&pc.url("/auth/session")).await.body,
            "null",
            "{bad:?}"
        );
    }
    let mut c = Browser::api();
    c.jar.insert("authjs.session-token".into(), id.clone());
    assert_eq!(
        c.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        ALICE.0
    );
    // A record copied under another id's key does not open there, also
    // where that id's own record was opened before (Portcullis remembers
    // opened records: another record under the key is opened afresh).
    let bob = signed_in(&pc, BOB.0).await;
    let bob_key = redis
        .keys("it:s:*")
        .into_iter()
        .find(|k| *k != keys[0])
        .unwrap();
    let alice_record = redis.cmd(&["GET", &keys[0]]).unwrap();
    let bob_record = redis.cmd(&["GET", &bob_key]).unwrap();
    redis.change(&["SET", &keys[0], &bob_record, "KEEPTTL"]);
    assert_eq!(
        c.get(&pc.url("/auth/session")).await.body,
        "null",
        "Bob's record under Alice's key"
    );
    let mut as_bob = Browser::api();
    as_bob.jar = bob.jar.clone();
    assert_eq!(
        as_bob.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        BOB.0
    );
    redis.change(&["SET", &keys[0], &alice_record, "KEEPTTL"]);
    // (The refusal cleared the cookie in this client's jar.)
    c.jar.insert("authjs.session-token".into(), id.clone());
    assert_eq!(
        c.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        ALICE.0
    );
    redis.change(&["EXPIRE", &keys[0], "1"]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        c.get(&pc.url("/auth/session")).await.body,
        "null",
        "expired key"
    );
    let b2 = signed_in(&pc, ALICE.0).await;
    let key = redis
        .keys("it:s:*")
        .into_iter()
        .find(|k| *k != bob_key && *k != keys[0])
        .unwrap();
    let mut c = Browser::api();
    c.jar = b2.jar.clone();
    assert_eq!(
        c.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        ALICE.0
    );
    redis.change(&["DEL", &key]);
    assert_eq!(
        c.get(&pc.url("/auth/session")).await.body,
        "null",
        "deleted key"
    );
}

#[tokio::test]
async fn concurrent_reads_each_get_their_own_session() {
    // Concurrent requests share Redis round trips (one MGET): each must
    // still see its own record, a signed-out one none.
    let redis = RedisServer::start(RedisOpts::default());
    let pc = Portcullis::start(db_conf(&redis.url())).await;
    wait_ready(&pc, StatusCode::OK).await;
    let alice = signed_in(&pc, ALICE.0).await;
    let bob = signed_in(&pc, BOB.0).await;
    let mut gone = signed_in(&pc, ALICE.0).await;
    let gone_jar = gone.jar.clone();
    let page = gone.get(&pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    gone.post_form(
        &pc.url("/auth/signout"),
        &[("csrfToken", &token), ("callbackUrl", "/")],
    )
    .await;
    let url = pc.url("/auth/session");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..150 {
        let (jar, want) = match i % 3 {
            0 => (alice.jar.clone(), serde_json::json!(ALICE.0)),
            1 => (bob.jar.clone(), serde_json::json!(BOB.0)),
            _ => (gone_jar.clone(), serde_json::Value::Null),
        };
        let url = url.clone();
        tasks.spawn(async move {
            let mut b = Browser::api();
            b.jar = jar;
            let got = b.get(&url).await.json();
            let email = got
                .get("user")
                .map(|u| u["email"].clone())
                .unwrap_or(serde_json::Value::Null);
            (email, want)
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (got, want) = r.unwrap();
        assert_eq!(got, want, "{}", pc.logs());
    }
}

#[tokio::test]
async fn two_replicas_share_sessions_and_sign_outs() {
    let redis = RedisServer::start(RedisOpts::default());
    let a = Portcullis::start(db_conf(&redis.url())).await;
    let b = Portcullis::start(db_conf(&redis.url())).await;
    wait_ready(&a, StatusCode::OK).await;
    wait_ready(&b, StatusCode::OK).await;
    let mut user = signed_in(&a, ALICE.0).await;
    assert_eq!(
        user.get(&b.url("/auth/session")).await.json()["user"]["email"],
        ALICE.0
    );
    let page = user.get(&b.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    let saved = user.jar.clone();
    user.post_form(
        &b.url("/auth/signout"),
        &[("csrfToken", &token), ("callbackUrl", "/")],
    )
    .await;
    let mut replay = Browser::api();
    replay.jar = saved;
    assert_eq!(
        replay.get(&a.url("/auth/session")).await.body,
        "null",
        "replica A still honours a session signed out on B"
    );
}

#[tokio::test]
async fn sign_out_everywhere_and_the_cli_end_every_session_of_a_user() {
    let redis = RedisServer::start(RedisOpts::default());
    let pc = Portcullis::start(db_conf(&redis.url())).await;
    wait_ready(&pc, StatusCode::OK).await;
    let mut laptop = signed_in(&pc, ALICE.0).await;
    let mut phone = signed_in(&pc, ALICE.0).await;
    let mut bob = signed_in(&pc, BOB.0).await;
    let cfg = pc.dir.path().join("portcullis.yaml");

    let out = Command::new(bin())
        .args([
            "sessions",
            "list",
            "--config",
            cfg.to_str().unwrap(),
            "--user",
            "Alice@Example.com",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("\"provider\":\"credentials\""));
    for secret in [
        &laptop.jar["authjs.session-token"],
        &phone.jar["authjs.session-token"],
    ] {
        assert!(
            !listed.contains(secret.as_str()),
            "the CLI printed a session id"
        );
    }

    let page = laptop.get(&pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    laptop
        .post_form(
            &pc.url("/auth/signout?everywhere=1"),
            &[("csrfToken", &token), ("callbackUrl", "/")],
        )
        .await;
    assert_eq!(
        phone.get(&pc.url("/auth/session")).await.body,
        "null",
        "the phone is signed out too"
    );
    assert_eq!(
        bob.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        BOB.0,
        "other users are not"
    );

    let out = Command::new(bin())
        .args([
            "sessions",
            "revoke",
            "--config",
            cfg.to_str().unwrap(),
            "--user",
            BOB.0,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ended 1 session"));
    assert_eq!(bob.get(&pc.url("/auth/session")).await.body, "null");
}

#[tokio::test]
async fn a_redis_restart_with_persistence_keeps_users_signed_in_and_without_signs_them_out_cleanly()
{
    for persistent in [true, false] {
        let opts = if persistent {
            RedisOpts::default().persistent()
        } else {
            RedisOpts::default()
        };
        let mut redis = RedisServer::start(opts);
        let pc = Portcullis::start(db_conf(&redis.url())).await;
        wait_ready(&pc, StatusCode::OK).await;
        let mut b = signed_in(&pc, ALICE.0).await;
        redis.restart();
        let mut answer = StatusCode::SERVICE_UNAVAILABLE;
        for _ in 0..60 {
            let r = b.get(&pc.url("/auth/session")).await;
            assert_ne!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
            answer = r.status;
            if answer == StatusCode::OK {
                let signed_in = r.body != "null";
                assert_eq!(signed_in, persistent, "persistent={persistent}: {}", r.body);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(answer, StatusCode::OK, "never recovered:\n{}", pc.logs());
    }
}

#[tokio::test]
async fn redis_down_fails_closed_with_503_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start(RedisOpts::default().persistent());
    let up = Upstream::start().await;
    let pc = Portcullis::start(db_conf(&redis.url()).upstream(&up.url())).await;
    wait_ready(&pc, StatusCode::OK).await;
    let mut b = signed_in(&pc, ALICE.0).await;
    let before = up.count();
    redis.stop();

    let page = b.get(&pc.url("/app")).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
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
    assert_eq!(
        up.count(),
        before,
        "a request went through without a checked session"
    );
    wait_ready(&pc, StatusCode::SERVICE_UNAVAILABLE).await;

    redis.restart();
    wait_ready(&pc, StatusCode::OK).await;
    let ok = b
        .get_until(
            &pc.url("/app"),
            StatusCode::OK,
            40,
            Duration::from_millis(100),
        )
        .await;
    assert!(ok, "no recovery after Redis returned:\n{}", pc.logs());
    assert_eq!(up.last().header("x-auth-request-email"), Some(ALICE.0));
}

#[tokio::test]
async fn tls_redis_with_a_private_ca() {
    let redis = RedisServer::start_tls_generated();
    let ca = redis.ca_file().unwrap().to_path_buf();
    let conf = Conf::default().extra(&format!(
        "session:\n  strategy: database\nstore:\n  redis_url: \"{}\"\n  ca_file: {}\n",
        redis.url(),
        ca.display()
    ));
    let pc = Portcullis::start(conf).await;
    wait_ready(&pc, StatusCode::OK).await;
    let mut b = signed_in(&pc, ALICE.0).await;
    assert_eq!(
        b.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        ALICE.0
    );
    assert!(redis.url().starts_with("rediss://"));
}
