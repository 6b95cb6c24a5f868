//! The `database` strategy on Redis Sentinel (with a failover mid-traffic)
//! and Redis Cluster, and OIDC back-channel logout ending sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::support::fake_idp::FakeIdp;
use crate::support::redis::{RedisCluster, RedisConn, RedisOpts, RedisSentinel, RedisServer};
use crate::support::*;

fn db_conf(redis_url: &str) -> Conf {
    Conf::default().extra(&format!(
        "session:\n  strategy: database\nstore:\n  redis_url: \"{redis_url}\"\n  timeout: 1s\n"
    ))
}

async fn ready(pc: &Portcullis) {
    pc.wait_readyz(StatusCode::OK).await;
}

async fn signed_in(pc: &Portcullis, who: &str) -> Browser {
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), who, PASSWORD, "/").await;
    assert_eq!(r.location(), "/", "{}", pc.logs());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_mid_traffic_keeps_sessions_and_lets_nothing_through_unchecked() {
    let mut sentinel = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap();
    let up = Upstream::start().await;
    let pc = Portcullis::start(db_conf(&sentinel.sentinel_url()).upstream(&up.url())).await;
    ready(&pc).await;
    let alice = signed_in(&pc, ALICE.0).await;
    // The session reached the replica before the master dies.
    let master = sentinel.master_port();
    let replica = sentinel
        .data_ports()
        .into_iter()
        .find(|p| *p != master)
        .unwrap();
    let mut replicated = false;
    for _ in 0..100 {
        if sentinel
            .cli(replica, &["--scan", "--pattern", "portcullis:s:*"])
            .lines()
            .count()
            == 1
        {
            replicated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(replicated, "the session never reached the replica");

    // Traffic with Alice's session and without one, all through the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let mut traffic = Vec::new();
    for with_session in [true, false] {
        let (url, jar, stop) = (pc.url("/app"), alice.jar.clone(), stop.clone());
        traffic.push(tokio::spawn(async move {
            let mut b = Browser::api();
            if with_session {
                b.jar = jar;
            }
            let mut seen = Vec::new();
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                seen.push(b.get(&url).await.status);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = sentinel.kill_master();
    let new_master = tokio::task::spawn_blocking(move || {
        let m = sentinel.wait_failover(Duration::from_secs(30));
        (sentinel, m)
    })
    .await
    .unwrap();
    let (sentinel, new_master) = new_master;
    assert_ne!(killed, new_master);

    // The session written before the kill works on the new master.
    let mut b = Browser::api();
    b.jar = alice.jar.clone();
    let back = b
        .get_until(
            &pc.url("/auth/session"),
            StatusCode::OK,
            100,
            Duration::from_millis(100),
        )
        .await;
    assert!(back, "no recovery after the failover:\n{}", pc.logs());
    assert_eq!(
        b.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        ALICE.0
    );
    // New sign-ins work.
    let mut bob = signed_in(&pc, BOB.0).await;
    assert_eq!(
        bob.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        BOB.0
    );

    stop.store(true, Ordering::Relaxed);
    let with = traffic.remove(0).await.unwrap();
    let without = traffic.remove(0).await.unwrap();
    assert!(
        with.iter().all(|s| matches!(s.as_u16(), 200 | 503)),
        "{with:?}"
    );
    assert!(
        without.iter().all(|s| matches!(s.as_u16(), 401 | 503)),
        "a request without a session got {without:?}"
    );
    let unchecked = up
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.header("x-auth-request-email") != Some(ALICE.0))
        .count();
    assert_eq!(
        unchecked, 0,
        "requests reached the upstream without Alice's identity"
    );
    drop(sentinel);
}

#[tokio::test]
async fn a_redis_cluster_serves_sessions_across_slots() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let url = format!("redis+cluster://{}", cluster.addrs().join(","));
    let pc = Portcullis::start(db_conf(&url)).await;
    ready(&pc).await;
    let mut users = Vec::new();
    for who in [ALICE.0, ALICE.0, BOB.0] {
        users.push(signed_in(&pc, who).await);
    }
    for (b, who) in users.iter_mut().zip([ALICE.0, ALICE.0, BOB.0]) {
        assert_eq!(
            b.get(&pc.url("/auth/session")).await.json()["user"]["email"],
            who
        );
    }
    // Sign-out everywhere crosses slots (the index and the sessions).
    let page = users[0].get(&pc.url("/auth/signout")).await;
    let token = page.hidden("csrfToken").unwrap();
    users[0]
        .post_form(
            &pc.url("/auth/signout?everywhere=1"),
            &[("csrfToken", &token), ("callbackUrl", "/")],
        )
        .await;
    assert_eq!(users[1].get(&pc.url("/auth/session")).await.body, "null");
    assert_eq!(
        users[2].get(&pc.url("/auth/session")).await.json()["user"]["email"],
        BOB.0
    );
    let dump = cluster.dump_all();
    assert!(!dump.contains(ALICE.0) && !dump.contains(BOB.0), "{dump}");
}

#[tokio::test]
async fn back_channel_logout_ends_the_subjects_sessions() {
    let redis = RedisServer::start(RedisOpts::default());
    let idp = FakeIdp::start().await;
    let conf = db_conf(&redis.url()).provider(&idp.provider_yaml(""));
    let pc = Portcullis::start(conf).await;
    ready(&pc).await;
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
    assert_eq!(b.get(&cb).await.location(), "/");
    assert_eq!(
        b.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        "fay@example.com"
    );

    let url = pc.url("/auth/backchannel-logout/fake");
    let mut idp_client = Browser::api();
    // Forgeries change nothing.
    let forged = [
        idp.logout_token("user-1", true, |_| {}),
        idp.logout_token("user-1", false, |c| c["nonce"] = "n".into()),
        idp.logout_token("user-1", false, |c| c["events"] = serde_json::json!({})),
        idp.logout_token("user-1", false, |c| c["aud"] = "other".into()),
        idp.logout_token("user-1", false, |c| c["exp"] = 1_000_000_000.into()),
        // A sid-only token would end nothing (sessions are indexed by sub):
        // refused rather than answered 200.
        idp.logout_token("user-1", false, |c| {
            c.as_object_mut().unwrap().remove("sub");
            c["sid"] = "s-1".into();
        }),
    ];
    for t in forged {
        let r = idp_client.post_form(&url, &[("logout_token", &t)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    }
    assert_eq!(
        b.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        "fay@example.com"
    );

    let r = idp_client
        .post_form(
            &url,
            &[("logout_token", &idp.logout_token("user-1", false, |_| {}))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        b.get(&pc.url("/auth/session")).await.body,
        "null",
        "the session survived back-channel logout"
    );

    // With stateless sessions there is nothing to end: 501, said plainly.
    let jwt = Portcullis::start(Conf::default().provider(&idp.provider_yaml(""))).await;
    ready(&jwt).await;
    let r = idp_client
        .post_form(
            &jwt.url("/auth/backchannel-logout/fake"),
            &[("logout_token", &idp.logout_token("user-1", false, |_| {}))],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_failover_keeps_sessions() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start_with_replicas)
        .await
        .unwrap();
    let url = format!("redis+cluster://{}", cluster.addrs().join(","));
    let pc = Portcullis::start(db_conf(&url)).await;
    ready(&pc).await;
    let alice = signed_in(&pc, ALICE.0).await;
    // Find the master holding Alice's session; wait until its replica has it.
    let key = cluster.keys("portcullis:s:*").pop().expect("a session key");
    let owner = cluster
        .master_ports()
        .into_iter()
        .find(|p| cluster.cmd(*p, &["EXISTS", &key]).is_ok_and(|r| r == "1"))
        .expect("owner");
    let mut replicated = false;
    for _ in 0..100 {
        let on_replica = cluster.replica_ports().iter().any(|p| {
            // READONLY is per connection: ask on the same one.
            RedisConn::connect(*p, None).is_ok_and(|mut c| {
                c.cmd(&["READONLY"]).is_ok() && c.cmd(&["EXISTS", &key]).is_ok_and(|r| r == "1")
            })
        });
        if on_replica {
            replicated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(replicated, "the session never reached a replica");
    cluster.kill_node(owner);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    })
    .await
    .unwrap();
    let mut b = Browser::api();
    b.jar = alice.jar.clone();
    let mut back = false;
    for _ in 0..100 {
        let r = b.get(&pc.url("/auth/session")).await;
        assert!(matches!(r.status.as_u16(), 200 | 503), "{}", r.status);
        if r.status == StatusCode::OK {
            assert_eq!(
                r.json()["user"]["email"],
                ALICE.0,
                "the session was lost in the failover"
            );
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "no recovery after the cluster failover:\n{}",
        pc.logs()
    );
    let mut bob = signed_in(&pc, BOB.0).await;
    assert_eq!(
        bob.get(&pc.url("/auth/session")).await.json()["user"]["email"],
        BOB.0
    );
    drop(cluster);
}
