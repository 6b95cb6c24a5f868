//! `store.client_cache` against real Redis: a session record read once is
//! answered from memory while Redis tracks it (`CLIENT TRACKING`), and
//! memory is never trusted past what Redis says: an invalidation, the
//! key's TTL, a Redis gone silent, a server that refuses tracking.

use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::redis::{RedisOpts, RedisServer, info_field};
use crate::support::*;

fn conf(redis_url: &str, extra: &str) -> Conf {
    Conf::default().extra(&format!("session:\n  strategy: database\n  update_age: 1h\nstore:\n  redis_url: \"{redis_url}\"\n  key_prefix: \"it:\"\n  timeout: 1s\n{extra}"))
}

/// `MGET`s Redis has answered so far (the batched session reads).
fn mgets(redis: &RedisServer) -> u64 {
    let info = redis.query(&["INFO", "commandstats"]).text();
    info_field(&info, "cmdstat_mget")
        .and_then(|v| {
            v.split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn cache_hits(pc: &Portcullis) -> Option<u64> {
    let body = Browser::api().get(&pc.url("/metrics")).await.body;
    body.lines()
        .find_map(|l| l.strip_prefix("portcullis_redis_cache_hits_total "))
        .map(|n| n.trim().parse().unwrap())
}

async fn signed_in(pc: &Portcullis, who: &str) -> Browser {
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), who, PASSWORD, "/").await;
    assert_eq!(r.location(), "/", "{}\n{}", r.body, pc.logs());
    let mut api = Browser::api();
    api.jar = b.jar.clone();
    api
}

async fn email(b: &mut Browser, pc: &Portcullis) -> String {
    let r = b.get(&pc.url("/auth/session")).await;
    match r.body.as_str() {
        "null" => "null".into(),
        _ => r.json()["user"]["email"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
    }
}

#[tokio::test]
async fn a_record_is_read_once_then_from_memory_until_redis_says_it_changed() {
    let redis = RedisServer::start(RedisOpts::default());
    let pc = Portcullis::start(conf(&redis.url(), "")).await;
    pc.wait_readyz(StatusCode::OK).await;
    let mut alice = signed_in(&pc, ALICE.0).await;
    assert_eq!(email(&mut alice, &pc).await, ALICE.0);
    let (reads, hits) = (mgets(&redis), cache_hits(&pc).await.unwrap());
    for _ in 0..20 {
        assert_eq!(email(&mut alice, &pc).await, ALICE.0);
    }
    assert_eq!(mgets(&redis), reads, "answered from memory: no read");
    assert_eq!(cache_hits(&pc).await.unwrap(), hits + 20);

    // Another client (a replica, an operator) changes the record: Redis
    // pushes the invalidation, the next request reads it.
    let key = redis.keys("it:s:*").pop().unwrap();
    let mut bob = signed_in(&pc, BOB.0).await;
    assert_eq!(email(&mut bob, &pc).await, BOB.0);
    let bob_key = redis
        .keys("it:s:*")
        .into_iter()
        .find(|k| *k != key)
        .unwrap();
    let alice_record = redis.cmd(&["GET", &key]).unwrap();
    let bob_record = redis.cmd(&["GET", &bob_key]).unwrap();
    let alice_cookie = alice.jar["authjs.session-token"].clone();
    redis.change(&["SET", &key, &bob_record, "KEEPTTL"]);
    assert_eq!(
        email(&mut alice, &pc).await,
        "null",
        "a copied record {}",
        pc.logs()
    );
    redis.change(&["SET", &key, &alice_record, "KEEPTTL"]);
    // (The refusal cleared the cookie in this client's jar.)
    alice
        .jar
        .insert("authjs.session-token".into(), alice_cookie);
    assert_eq!(email(&mut alice, &pc).await, ALICE.0);
    assert_eq!(email(&mut alice, &pc).await, ALICE.0);
    // Deleted (a sign-out elsewhere, `sessions revoke`), flushed.
    redis.change(&["DEL", &key]);
    assert_eq!(email(&mut alice, &pc).await, "null", "a deleted record");
    assert_eq!(email(&mut bob, &pc).await, BOB.0);
    assert_eq!(email(&mut bob, &pc).await, BOB.0);
    redis.change(&["FLUSHALL"]);
    assert_eq!(email(&mut bob, &pc).await, "null", "after FLUSHALL");
}

#[tokio::test]
async fn a_cached_record_dies_with_its_key_even_before_redis_purges_it() {
    // Active expiry off: an expired key stays in Redis's memory (and no
    // invalidation is pushed) until something reads it.
    let redis = RedisServer::start(RedisOpts::default().args(&["--enable-debug-command", "yes"]));
    redis.cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]).unwrap();
    let pc = Portcullis::start(conf(&redis.url(), "")).await;
    pc.wait_readyz(StatusCode::OK).await;
    let mut alice = signed_in(&pc, ALICE.0).await;
    let key = redis.keys("it:s:*").pop().unwrap();
    // A short TTL (its change invalidates the cached record), read again.
    redis.change(&["PEXPIRE", &key, "1500"]);
    assert_eq!(email(&mut alice, &pc).await, ALICE.0);
    let reads = mgets(&redis);
    assert_eq!(email(&mut alice, &pc).await, ALICE.0);
    assert_eq!(mgets(&redis), reads, "the record is cached");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        email(&mut alice, &pc).await,
        "null",
        "served past its key's TTL"
    );
}

#[tokio::test]
async fn a_redis_gone_silent_stops_answers_from_memory_and_fails_closed() {
    let redis = RedisServer::start(RedisOpts::default());
    let up = Upstream::start().await;
    let pc = Portcullis::start(conf(&redis.url(), "").upstream(&up.url())).await;
    pc.wait_readyz(StatusCode::OK).await;
    let alice = signed_in(&pc, ALICE.0).await;
    let mut c = Browser::api();
    c.jar = alice.jar.clone();
    assert_eq!(c.get(&pc.url("/app")).await.status, StatusCode::OK);
    assert_eq!(c.get(&pc.url("/app")).await.status, StatusCode::OK);
    // SIGSTOP: the connections stay open, nothing answers (a partition).
    let pid = redis.pid().unwrap().to_string();
    let stop = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    stop("-STOP");
    let stopped = Instant::now();
    let mut last_ok = None;
    let mut statuses = Vec::new();
    while stopped.elapsed() < Duration::from_secs(6) {
        let s = c.get(&pc.url("/app")).await.status;
        if s == StatusCode::OK {
            last_ok = Some(stopped.elapsed());
        }
        statuses.push(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop("-CONT");
    // Memory is trusted for 2 s after Redis last answered (pinged every
    // second): never past 3 s after it went silent.
    if let Some(t) = last_ok {
        assert!(
            t < Duration::from_secs(3),
            "a 200 {t:?} after Redis went silent"
        );
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    // Redis answers again: so do we, without a restart.
    let back = c
        .get_until(
            &pc.url("/app"),
            StatusCode::OK,
            100,
            Duration::from_millis(100),
        )
        .await;
    assert!(back, "{}", pc.logs());
}

#[tokio::test]
async fn a_server_that_refuses_tracking_is_read_on_every_request() {
    let redis = RedisServer::start(RedisOpts::default());
    // A user without CLIENT (as a locked-down managed Redis may have).
    redis
        .cmd(&[
            "ACL",
            "SETUSER",
            "pc",
            "on",
            ">pc-secret",
            "~*",
            "&*",
            "+@all",
            "-client",
        ])
        .unwrap();
    let url = format!("redis://pc:pc-secret@{}", redis.addr());
    let pc = Portcullis::start(conf(&url, "")).await;
    pc.wait_readyz(StatusCode::OK).await;
    let mut alice = signed_in(&pc, ALICE.0).await;
    each_request_reads_redis(&mut alice, &pc, &redis).await;
    assert_eq!(cache_hits(&pc).await, Some(0), "configured, turned off");
    assert!(
        pc.log_shows("Redis refused client-side caching").await,
        "{}",
        pc.logs()
    );
    // Sign-out still ends the session.
    redis.change(&["DEL", &redis.keys("it:s:*").pop().unwrap()]);
    assert_eq!(email(&mut alice, &pc).await, "null");
}

#[tokio::test]
async fn client_cache_off_reads_every_request() {
    let redis = RedisServer::start(RedisOpts::default());
    let pc = Portcullis::start(conf(&redis.url(), "  client_cache: false\n")).await;
    pc.wait_readyz(StatusCode::OK).await;
    let mut alice = signed_in(&pc, ALICE.0).await;
    each_request_reads_redis(&mut alice, &pc, &redis).await;
    assert_eq!(cache_hits(&pc).await, None, "not configured");
}

/// Without the cache: every request reads Redis.
async fn each_request_reads_redis(alice: &mut Browser, pc: &Portcullis, redis: &RedisServer) {
    let before = mgets(redis);
    for _ in 0..5 {
        assert_eq!(email(alice, pc).await, ALICE.0, "{}", pc.logs());
    }
    assert!(mgets(redis) >= before + 5, "every request reads Redis");
}
