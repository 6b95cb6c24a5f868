//! Access-token refresh against the real `oidc-provider`, both session
//! strategies: single-flight (counted at the IdP), across replicas sharing
//! Redis, rotated refresh tokens kept, and a refused refresh ending the
//! session without a loop.

use std::time::Duration;

use http::StatusCode;

use crate::support::idp::{CLIENT_ID, CLIENT_SECRET, Idp, idp_login, idp_logout};
use crate::support::redis::{RedisOpts, RedisServer};
use crate::support::*;

/// Access tokens live 4 s: Portcullis refreshes them 1 s early.
const TTL: u64 = 4;

struct Setup {
    idp: Idp,
    up: Upstream,
    pcs: Vec<Portcullis>,
    _redis: Option<RedisServer>,
}

async fn setup(database: bool, replicas: usize) -> Setup {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut cfg = Idp::default_config(
        &format!("{origin}/auth/callback/corp"),
        &[&format!("{origin}/")],
    );
    cfg["ttl"] = serde_json::json!({ "AccessToken": TTL });
    cfg["rotate_refresh_tokens"] = serde_json::json!(true);
    let idp = Idp::start(cfg).await;
    let up = Upstream::start().await;
    let redis = database.then(|| RedisServer::start(RedisOpts::default()));
    let item = format!(
        "  - type: oidc\n    id: corp\n    name: Corp\n    issuer: {}\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n",
        idp.issuer
    );
    let mut extra = String::from("headers:\n  access_token: header\n");
    if let Some(r) = &redis {
        extra += &format!(
            "session:\n  strategy: database\nstore:\n  redis_url: \"{}\"\n",
            r.url()
        );
    }
    let mut pcs = Vec::new();
    for i in 0..replicas {
        let conf = Conf::default()
            .upstream(&up.url())
            .provider(&item)
            .extra(&extra);
        let pc = if i == 0 {
            Portcullis::start_at(conf, &[], port).await
        } else {
            Portcullis::start(conf).await
        };
        let mut b = Browser::api();
        let ready = b
            .get_until(
                &pc.url("/readyz"),
                StatusCode::OK,
                200,
                Duration::from_millis(50),
            )
            .await;
        assert!(ready, "{}", pc.logs());
        pcs.push(pc);
    }
    Setup {
        idp,
        up,
        pcs,
        _redis: redis,
    }
}

async fn sign_in(s: &Setup) -> Browser {
    let pc = &s.pcs[0];
    let mut b = Browser::new();
    let page = b.get(&pc.url("/auth/signin")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &pc.url("/auth/signin/corp"),
            &[("csrfToken", &token), ("callbackUrl", "/")],
        )
        .await;
    let cb = idp_login(&mut b, r.location(), "alice")
        .await
        .location()
        .to_string();
    assert_eq!(b.get(&cb).await.location(), "/", "{}", pc.logs());
    b
}

/// The access token the upstream got last.
async fn token_seen(s: &Setup, b: &mut Browser, pc: usize) -> String {
    let r = b.get(&s.pcs[pc].url("/app")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    s.up.last()
        .header("x-auth-request-access-token")
        .unwrap()
        .to_string()
}

/// 50 requests at once with the same session, spread over the replicas.
async fn burst(s: &Setup, b: &Browser) -> Vec<(StatusCode, Vec<String>)> {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = s.pcs[i % s.pcs.len()].url("/app");
        let jar = b.jar.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Browser::api();
            c.jar = jar;
            let r = c.get(&url).await;
            (
                r.status,
                r.set_cookies()
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            )
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn single_flight(database: bool, replicas: usize) {
    let s = setup(database, replicas).await;
    let mut b = sign_in(&s).await;
    let first = token_seen(&s, &mut b, 0).await;
    assert_eq!(s.idp.counters().await["refresh_token"], 0);
    tokio::time::sleep(Duration::from_millis((TTL - 1) * 1000 + 300)).await;

    let results = burst(&s, &b).await;
    assert!(
        results.iter().all(|(st, _)| *st == StatusCode::OK),
        "{results:?}"
    );
    assert_eq!(
        s.idp.counters().await["refresh_token"],
        1,
        "one refresh for 50 concurrent requests"
    );
    let tokens: std::collections::HashSet<String> =
        s.up.requests
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(50)
            .filter_map(|r| r.header("x-auth-request-access-token").map(str::to_owned))
            .collect();
    assert_eq!(
        tokens.len(),
        1,
        "every request forwarded the same, new token"
    );
    assert!(!tokens.contains(&first));
    if let Some(redis) = &s._redis {
        // Redis holds sealed records only: no access token, old or new.
        let dump = redis.dump_all();
        for t in tokens.iter().chain([&first]) {
            assert!(
                !dump.contains(t.as_str()),
                "Redis holds an access token:\n{dump}"
            );
        }
        assert!(!dump.contains("alice"), "{dump}");
    }
    if !database {
        // jwt: every response carries the new tokens in a new cookie.
        assert!(
            results
                .iter()
                .all(|(_, c)| c.iter().any(|c| c.starts_with("authjs.session-token=")))
        );
        let newest = results[0]
            .1
            .iter()
            .find(|c| c.starts_with("authjs.session-token="))
            .unwrap();
        let v = newest.split(';').next().unwrap().split_once('=').unwrap().1;
        b.jar.insert("authjs.session-token".into(), v.into());
    }

    // The rotated refresh token was kept: the next refresh works.
    tokio::time::sleep(Duration::from_millis((TTL - 1) * 1000 + 300)).await;
    let third = token_seen(&s, &mut b, replicas - 1).await;
    assert!(!tokens.contains(&third) && third != first);
    assert_eq!(s.idp.counters().await["refresh_token"], 2);
}

#[tokio::test]
async fn jwt_sessions_refresh_once_for_fifty_concurrent_requests() {
    single_flight(false, 1).await;
}

#[tokio::test]
async fn database_sessions_refresh_once_for_fifty_concurrent_requests() {
    single_flight(true, 1).await;
}

#[tokio::test]
async fn two_replicas_sharing_redis_refresh_once() {
    single_flight(true, 2).await;
}

#[tokio::test]
async fn a_refused_refresh_ends_the_session_without_a_loop() {
    for database in [false, true] {
        let s = setup(database, 1).await;
        let mut b = sign_in(&s).await;
        token_seen(&s, &mut b, 0).await;
        // Signing out at the IdP revokes the grant and its refresh token.
        idp_logout(&mut b, &format!("{}/session/end", s.idp.issuer)).await;
        tokio::time::sleep(Duration::from_millis((TTL - 1) * 1000 + 300)).await;
        let before = s.up.count();
        let r = b.get(&s.pcs[0].url("/app")).await;
        assert_eq!(
            r.status,
            StatusCode::FOUND,
            "database={database}: {}",
            r.body
        );
        assert!(r.location().starts_with("/auth/signin"), "{}", r.location());
        assert!(
            r.set_cookie("authjs.session-token")
                .is_some_and(|c| c.contains("Max-Age=0"))
        );
        assert_eq!(
            s.up.count(),
            before,
            "the request went through after a refused refresh"
        );
        assert_eq!(
            s.idp.counters().await["refresh_token"],
            1,
            "refused once, not retried"
        );
        assert_eq!(b.get(&s.pcs[0].url("/auth/session")).await.body, "null");
    }
}
