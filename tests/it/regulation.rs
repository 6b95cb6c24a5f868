//! Regulation (brute-force bans) through the real credentials form: bans
//! of known and unknown users with the wrong-password answer, the right
//! password refused while banned, expiry, address bans across users,
//! counters shared by two instances on one real Redis, Redis down (503),
//! and banned answers as slow as wrong passwords.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::redis::{RedisOpts, RedisServer};
use crate::support::*;

const WRONG: &str = "not the password";

/// One credentials attempt from a fresh browser, optionally as another
/// client address (the test client is a trusted proxy: loopback).
async fn attempt(pc: &Portcullis, email: &str, password: &str, from: Option<&str>) -> Resp {
    let mut b = Browser::new();
    let page = b.get(&pc.url("/auth/signin?callbackUrl=%2F")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page.hidden("csrfToken").unwrap();
    let headers: Vec<(&str, &str)> = from.map(|ip| ("x-forwarded-for", ip)).into_iter().collect();
    let r = b
        .post_form_with(
            &pc.url("/auth/callback/credentials"),
            &[
                ("csrfToken", &csrf),
                ("callbackUrl", "/"),
                ("email", email),
                ("password", password),
            ],
            &headers,
        )
        .await;
    assert_eq!(
        b.has_session(),
        r.location() == "/",
        "a session exactly when signed in: {:?}",
        r.headers
    );
    r
}

const REFUSED: &str = "/auth/signin?error=CredentialsSignin&code=credentials&callbackUrl=%2F";

fn refused(r: &Resp) -> bool {
    r.status == StatusCode::FOUND && r.location() == REFUSED
}

fn signed_in(r: &Resp) -> bool {
    r.status == StatusCode::FOUND && r.location() == "/"
}

/// The log without colour codes (the text format colours field names).
fn plain(logs: &str) -> String {
    let mut out = String::with_capacity(logs.len());
    let mut chars = logs.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether the log shows `needle` (colour codes aside) within 5 s.
async fn log_has(pc: &Portcullis, needle: &str) -> bool {
    for _ in 0..100 {
        if plain(&pc.logs()).contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn store(redis: &RedisServer) -> String {
    format!(
        "store:\n  redis_url: \"{}\"\n  key_prefix: \"it:\"\n  timeout: 1s\n",
        redis.url()
    )
}

#[tokio::test]
async fn regulation_is_on_by_default_and_refuses_the_right_password_while_banned() {
    let pc = Portcullis::start(Conf::default()).await;
    for _ in 0..3 {
        assert!(refused(&attempt(&pc, ALICE.0, WRONG, None).await));
    }
    // Banned: the right password gets the wrong-password answer, no session.
    let r = attempt(&pc, " Alice@Example.COM", PASSWORD, None).await;
    assert!(refused(&r), "{:?} {}", r.status, r.location());
    assert!(r.set_cookie("authjs.session-token").is_none());
    // Another user from the same address is not concerned.
    assert!(signed_in(&attempt(&pc, BOB.0, PASSWORD, None).await));
    assert!(pc.log_shows("regulation: ban started").await);
    assert!(pc.log_shows("sign-in refused: banned by regulation").await);
    let logs = plain(&pc.logs());
    let line = logs
        .lines()
        .find(|l| l.contains("sign-in refused: banned by regulation"))
        .unwrap();
    for field in [
        "user=alice@example.com",
        "client_ip=127.0.0.1",
        "until=",
        "subject=\"user\"",
    ] {
        assert!(
            line.contains(field) || line.contains(&field.replace('"', "")),
            "{field} missing: {line}"
        );
    }
    assert!(
        !logs.contains(PASSWORD) && !logs.contains(WRONG),
        "a password was logged"
    );
    let metrics = Browser::api().get(&pc.url("/metrics")).await.body;
    for line in [
        "portcullis_signins_total{provider=\"credentials\",outcome=\"failure\"} 3",
        "portcullis_signins_total{provider=\"credentials\",outcome=\"banned\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn unknown_users_are_banned_with_the_same_answer() {
    let pc = Portcullis::start(Conf::default()).await;
    let ghost = "ghost@example.com";
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(attempt(&pc, ghost, WRONG, None).await);
    }
    answers.push(attempt(&pc, ghost, PASSWORD, None).await);
    for _ in 0..3 {
        attempt(&pc, ALICE.0, WRONG, None).await;
    }
    answers.push(attempt(&pc, ALICE.0, PASSWORD, None).await);
    answers.push(attempt(&pc, BOB.0, WRONG, None).await);
    // Banned unknown, banned known, plain wrong password: one answer.
    for r in &answers {
        assert!(refused(r), "{:?} {}", r.status, r.location());
        assert_eq!(r.body, answers[0].body);
    }
    assert!(log_has(&pc, "user=ghost@example.com").await);
}

#[tokio::test]
async fn a_ban_ends_after_ban_time_and_success_resets_the_count() {
    let pc = Portcullis::start(
        Conf::default().extra("regulation:\n  max_retries: 3\n  find_time: 1m\n  ban_time: 2s\n"),
    )
    .await;
    // Two failures, a success, two failures: never three in a row.
    for _ in 0..2 {
        attempt(&pc, ALICE.0, WRONG, None).await;
    }
    assert!(signed_in(&attempt(&pc, ALICE.0, PASSWORD, None).await));
    for _ in 0..2 {
        attempt(&pc, ALICE.0, WRONG, None).await;
    }
    assert!(signed_in(&attempt(&pc, ALICE.0, PASSWORD, None).await));
    for _ in 0..3 {
        attempt(&pc, ALICE.0, WRONG, None).await;
    }
    assert!(refused(&attempt(&pc, ALICE.0, PASSWORD, None).await));
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(signed_in(&attempt(&pc, ALICE.0, PASSWORD, None).await));
}

#[tokio::test]
async fn an_address_is_banned_across_users_and_others_are_not() {
    let pc = Portcullis::start(
        Conf::default().extra("regulation:\n  max_retries: 10\n  ip_max_retries: 3\n"),
    )
    .await;
    let attacker = Some("198.51.100.7");
    for user in [ALICE.0, "ghost@example.com", "nobody@other.org"] {
        assert!(refused(&attempt(&pc, user, WRONG, attacker).await));
    }
    // BOB never failed, but from that address nobody signs in now.
    assert!(refused(&attempt(&pc, BOB.0, PASSWORD, attacker).await));
    assert!(log_has(&pc, "client_ip=198.51.100.7").await);
    let logs = plain(&pc.logs());
    assert!(
        logs.lines().any(|l| l.contains("banned by regulation")
            && l.contains("subject=\"ip\"")
            && l.contains("user=bob@other.org")),
        "{logs}"
    );
    // Other addresses (and the users themselves, 1 failure of 10) are fine.
    assert!(signed_in(
        &attempt(&pc, BOB.0, PASSWORD, Some("198.51.100.8")).await
    ));
    assert!(signed_in(&attempt(&pc, ALICE.0, PASSWORD, None).await));
}

#[tokio::test]
async fn max_retries_0_turns_regulation_off() {
    let pc = Portcullis::start(Conf::default().extra("regulation:\n  max_retries: 0\n")).await;
    for _ in 0..6 {
        assert!(refused(&attempt(&pc, ALICE.0, WRONG, None).await));
    }
    assert!(signed_in(&attempt(&pc, ALICE.0, PASSWORD, None).await));
    assert!(!pc.logs().contains("banned by regulation"));
}

#[tokio::test]
async fn counters_are_shared_by_two_instances_on_one_redis() {
    let redis = RedisServer::start(RedisOpts::default());
    let a = Portcullis::start(Conf::default().extra(&store(&redis))).await;
    let b = Portcullis::start(Conf::default().extra(&store(&redis))).await;
    a.wait_readyz(StatusCode::OK).await;
    b.wait_readyz(StatusCode::OK).await;
    attempt(&a, ALICE.0, WRONG, None).await;
    attempt(&b, ALICE.0, WRONG, None).await;
    assert!(
        redis
            .keys("it:reg:*")
            .iter()
            .any(|k| k == "it:reg:{u:alice@example.com}:n"),
        "{:?}",
        redis.keys("*")
    );
    attempt(&a, ALICE.0, WRONG, None).await;
    // The third failure (on a) banned alice on b too.
    assert!(refused(&attempt(&b, ALICE.0, PASSWORD, None).await));
    assert!(refused(&attempt(&a, ALICE.0, PASSWORD, None).await));
    assert!(b.log_shows("sign-in refused: banned by regulation").await);
    let ttl: i64 = redis
        .cmd(&["PTTL", "it:reg:{u:alice@example.com}:ban"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl > 290_000 && ttl <= 300_000, "{ttl}");
    // Unknown users are counted in Redis the same way.
    for pc in [&a, &b, &a] {
        attempt(pc, "ghost@example.com", WRONG, None).await;
    }
    assert!(
        redis
            .keys("it:reg:*")
            .iter()
            .any(|k| k == "it:reg:{u:ghost@example.com}:ban")
    );
    assert!(signed_in(&attempt(&b, BOB.0, PASSWORD, None).await));
}

#[tokio::test]
async fn redis_down_fails_closed_with_503() {
    let mut redis = RedisServer::start(RedisOpts::default());
    let pc = Portcullis::start(Conf::default().extra(&store(&redis))).await;
    pc.wait_readyz(StatusCode::OK).await;
    assert!(signed_in(&attempt(&pc, ALICE.0, PASSWORD, None).await));
    redis.stop();
    for (user, password) in [
        (ALICE.0, PASSWORD),
        (BOB.0, WRONG),
        ("ghost@example.com", WRONG),
    ] {
        let r = attempt(&pc, user, password, None).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{user}: {}",
            r.body
        );
    }
    redis.restart();
    pc.wait_readyz(StatusCode::OK).await;
    assert!(signed_in(&attempt(&pc, ALICE.0, PASSWORD, None).await));
}

/// Without its pace, a banned answer (no argon2) is ~100x faster than a
/// wrong password: medians of interleaved runs must stay within 3x.
#[tokio::test]
async fn banned_answers_take_as_long_as_wrong_passwords() {
    let pc = Portcullis::start(
        Conf::default().extra("regulation:\n  max_retries: 1\n  ip_max_retries: 0\n"),
    )
    .await;
    attempt(&pc, ALICE.0, WRONG, None).await;
    let (mut banned, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..9 {
        let t = Instant::now();
        assert!(refused(&attempt(&pc, ALICE.0, PASSWORD, None).await));
        banned.push(t.elapsed().as_secs_f64());
        // A fresh user each time: its first failure is a real check.
        let t = Instant::now();
        assert!(refused(
            &attempt(&pc, &format!("fresh{i}@example.com"), WRONG, None).await
        ));
        wrong.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (b, w) = (median(&mut banned), median(&mut wrong));
    let ratio = w / b;
    assert!(
        (1.0 / 3.0..3.0).contains(&ratio),
        "banned {b:.4}s vs wrong password {w:.4}s (ratio {ratio:.2})"
    );
}

#[tokio::test]
async fn a_config_reload_keeps_in_process_bans() {
    let pc = Portcullis::start(Conf::default()).await;
    for _ in 0..3 {
        attempt(&pc, ALICE.0, WRONG, None).await;
    }
    let path = pc.dir.path().join("portcullis.yaml");
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{original}access:\n  public_paths: [/open/*]\n"),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pc.pid().to_string()])
        .status()
        .unwrap();
    assert!(pc.log_shows("config reloaded").await, "{}", pc.logs());
    assert!(refused(&attempt(&pc, ALICE.0, PASSWORD, None).await));
    assert!(signed_in(&attempt(&pc, BOB.0, PASSWORD, None).await));
}

/// On Redis Cluster a subject's two keys share a hash tag (one slot, so
/// the script runs), and the user's and the address's live on any node.
#[tokio::test]
async fn bans_work_on_a_redis_cluster() {
    use crate::support::redis::RedisCluster;
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let url = format!("redis+cluster://{}", cluster.addrs().join(","));
    let conf = || {
        Conf::default().extra(&format!(
            "store:\n  redis_url: \"{url}\"\n  timeout: 2s\nregulation:\n  ip_max_retries: 5\n"
        ))
    };
    let (a, b) = (
        Portcullis::start(conf()).await,
        Portcullis::start(conf()).await,
    );
    a.wait_readyz(StatusCode::OK).await;
    b.wait_readyz(StatusCode::OK).await;
    for (pc, user) in [
        (&a, ALICE.0),
        (&b, ALICE.0),
        (&a, ALICE.0),
        (&b, "ghost@example.com"),
    ] {
        assert!(
            refused(&attempt(pc, user, WRONG, None).await),
            "{}",
            pc.logs()
        );
    }
    assert!(refused(&attempt(&b, ALICE.0, PASSWORD, None).await));
    assert!(
        cluster
            .keys("portcullis:reg:*")
            .contains(&"portcullis:reg:{u:alice@example.com}:ban".to_string()),
        "{:?}",
        cluster.keys("*")
    );
    // Fifth failure from 127.0.0.1: the address is banned on both.
    assert!(refused(&attempt(&a, BOB.0, WRONG, None).await));
    assert!(refused(&attempt(&b, BOB.0, PASSWORD, None).await));
    assert!(signed_in(
        &attempt(&a, BOB.0, PASSWORD, Some("198.51.100.9")).await
    ));
}
