//! The reverse proxy: transparency, hop-by-hop headers, spoofing,
//! streaming, upgrades, failures and shutdown.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn signed_in(pc: &Portcullis) -> Browser {
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(r.location(), "/");
    b
}

/// A connection of its own to Portcullis, on which `GET path` with `b`'s
/// cookies (and the `extra` header lines) has been sent.
async fn raw_get(pc: &Portcullis, b: &Browser, path: &str, extra: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", pc.port))
        .await
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Cookie: {}\r\n\r\n",
        b.cookie_header()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Identity headers a client might try to forge, in odd cases and twice.
const SPOOFS: &[(&str, &str)] = &[
    ("X-Auth-Request-User", "root"),
    ("x-auth-request-email", "ceo@example.com"),
    ("X-AUTH-REQUEST-GROUPS", "admins"),
    ("X-Auth-Request-Groups", "superusers"),
    ("X-Forwarded-User", "root"),
    ("X-Forwarded-Email", "ceo@example.com"),
    ("X-Auth-Request-Preferred-Username", "root"),
    ("X-Auth-Request-Name", "CEO"),
    ("X-Auth-Request-Access-Token", "forged"),
    ("Remote-User", "root"),
];

#[tokio::test]
async fn forged_identity_headers_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("access:\n  public_paths: [/public/*]\n"),
    )
    .await;

    // A public path: passes with no identity at all.
    let mut anon = Browser::new();
    let r = anon.get_with(&pc.url("/public/page"), SPOOFS).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = up.last();
    for (name, _) in SPOOFS {
        assert_eq!(
            seen.header_count(name),
            0,
            "{name} reached the upstream on a public path"
        );
    }

    // Signed in as Bob: only Bob's identity arrives, once each.
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), BOB.0, PASSWORD, "/").await;
    let r = b.get_with(&pc.url("/app"), SPOOFS).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = up.last();
    assert_eq!(seen.header("x-auth-request-user"), Some(BOB.0));
    assert_eq!(seen.header_count("x-auth-request-groups"), 1);
    assert_eq!(seen.header("x-auth-request-groups"), Some("staff"));
    assert_eq!(seen.header("x-forwarded-email"), Some(BOB.0));
    for name in [
        "x-auth-request-access-token",
        "remote-user",
        "x-auth-request-preferred-username",
    ] {
        assert_eq!(seen.header_count(name), 0, "{name} reached the upstream");
    }
}

#[tokio::test]
async fn untrusted_clients_cannot_choose_their_forwarded_address() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("trusted_proxies: [10.1.2.3/32]\naccess:\n  public_paths: [/p]\n"),
    )
    .await;
    let mut b = Browser::new();
    b.get_with(
        &pc.url("/p"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.com"),
            ("forwarded", "for=6.6.6.6"),
        ],
    )
    .await;
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_ne!(seen.header("x-forwarded-host"), Some("evil.com"));
    assert_eq!(seen.header_count("forwarded"), 0);

    // From a trusted proxy (loopback by default) the chain is kept.
    let pc2 = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("access:\n  public_paths: [/p]\n"),
    )
    .await;
    b.get_with(
        &pc2.url("/p"),
        &[
            ("x-forwarded-for", "203.0.113.5"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
        ],
    )
    .await;
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.5, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.example.com"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = signed_in(&pc).await;
    let r = b
        .get_with(
            &pc.url("/h"),
            &[
                ("connection", "x-drop-me"),
                ("x-drop-me", "1"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic eA=="),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert!(
        r.header("keep-alive").is_none(),
        "the upstream's keep-alive header leaked"
    );
    let seen = up.last();
    for h in ["x-drop-me", "te", "proxy-authorization"] {
        assert_eq!(seen.header_count(h), 0, "{h} was forwarded");
    }
}

#[tokio::test]
async fn request_bodies_stream_through_intact() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = signed_in(&pc).await;
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = b
        .request(
            Method::PUT,
            &pc.url("/upload"),
            &[],
            Some(("application/octet-stream", body.clone())),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, format!("upstream ok {}", body.len()));
    assert_eq!(up.last().body.as_ref(), body.as_slice());
}

#[tokio::test]
async fn upgrades_pass_through_as_a_byte_stream() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let b = signed_in(&pc).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", pc.port))
        .await
        .unwrap();
    let head = send_echo_upgrade(&mut s, &b.cookie_header()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut got = vec![0u8; 23];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"ping through the tunnel");
    assert_eq!(up.last().header("x-auth-request-email"), Some(ALICE.0));
}

#[tokio::test]
async fn http2_clients_are_served() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let b = signed_in(&pc).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::get(pc.url("/over-h2"))
        .header("cookie", b.cookie_header())
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = up.last();
    assert_eq!(seen.uri, "/over-h2");
    assert_eq!(seen.header("x-auth-request-email"), Some(ALICE.0));
    assert!(
        seen.header("host")
            .is_some_and(|h| h.starts_with("127.0.0.1:"))
    );
}

#[tokio::test]
async fn upstream_down_or_slow_gives_502_or_504_without_internals() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let pc = Portcullis::start(Conf::default().upstream(&dead)).await;
    let mut b = signed_in(&pc).await;
    let r = b.get(&pc.url("/x")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.body.contains("could not be reached"));
    assert!(
        !r.body.contains("127.0.0.1") && !r.body.to_lowercase().contains("refused"),
        "internals leaked: {}",
        r.body
    );

    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = Browser::api();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    let t = Instant::now();
    let r = b.get(&pc.url("/hang")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the 3 s upstream timeout was not applied"
    );
    assert_eq!(r.json()["error"], "GatewayTimeout");
}

#[tokio::test]
async fn api_clients_get_401_json_never_a_redirect() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("access:\n  allowed_emails: [alice@example.com]\n"),
    )
    .await;
    let mut api = Browser::api();
    let r = api.get(&pc.url("/api/items")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("location").is_none());
    assert_eq!(r.json()["error"], "Unauthenticated");
    // A POST from a browser without a session is not redirected either.
    let mut b = Browser::new();
    let r = b
        .request(
            Method::POST,
            &pc.url("/form"),
            &[],
            Some(("text/plain", b"x".to_vec())),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_signed_in_user_the_rules_exclude_gets_403_not_a_loop() {
    let up = Upstream::start().await;
    // Bob signs in while the rules allow him...
    let open = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = Browser::new();
    b.sign_in(&open.url(""), BOB.0, PASSWORD, "/").await;
    let cookie = b.jar.clone();
    drop(open);
    // ...and the rules change.
    let strict = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("access:\n  allowed_groups: [admins]\n"),
    )
    .await;
    let mut html = Browser::new();
    html.jar = cookie.clone();
    let r = html.get(&strict.url("/app")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.header("location").is_none());
    assert!(r.body.contains("not allowed"));
    let mut api = Browser::api();
    api.jar = cookie;
    let r = api.get(&strict.url("/app")).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("AccessDenied"))
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let up = Upstream::start().await;
    let mut pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = signed_in(&pc).await;
    let url = pc.url("/slow");
    let slow = tokio::spawn(async move { b.get(&url).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(up.count(), 1, "the slow request is in flight");
    pc.terminate();
    let r = slow.await.unwrap();
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the in-flight request was cut: {}",
        r.body
    );
    assert!(
        pc.wait_exit(Duration::from_secs(10)),
        "did not exit after draining"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", pc.port))
            .await
            .is_err(),
        "still accepting after SIGTERM"
    );
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    let certs = TempDir::new("tls");
    let (ca, cert, key) = test_certs(&certs);
    let up = Upstream::start_tls(&cert, &key).await;
    let url = format!("https://localhost:{}", up.addr.port());

    let trusting = Portcullis::start(Conf::default().upstream(&url).upstream_ca(&ca)).await;
    let mut b = signed_in(&trusting).await;
    let r = b.get(&trusting.url("/over-tls")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(up.last().header("x-auth-request-email"), Some(ALICE.0));

    // Without the CA, the platform roots do not know this certificate.
    let strict = Portcullis::start(Conf::default().upstream(&url)).await;
    let before = up.count();
    let mut b = signed_in(&strict).await;
    let r = b.get(&strict.url("/over-tls")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        up.count(),
        before,
        "a request went to an unverified upstream"
    );
    assert!(
        strict.log_shows("upstream").await,
        "the log says what failed"
    );
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = signed_in(&pc).await;
    for i in 0..10 {
        // A HEAD's response has no body to read to its end: its
        // connection goes back to the pool all the same.
        let method = if i % 2 == 0 {
            Method::GET
        } else {
            Method::HEAD
        };
        let r = b
            .request(method.clone(), &pc.url(&format!("/n/{i}")), &[], None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{method} /n/{i}");
    }
    let peers: std::collections::HashSet<_> =
        up.requests.lock().unwrap().iter().map(|r| r.peer).collect();
    assert_eq!(
        peers.len(),
        1,
        "10 sequential requests used {} upstream connections",
        peers.len()
    );
}

/// An upstream on raw sockets: it answers each request with `answer(n,
/// k)` (n counts requests over all connections, k on this connection; an
/// empty answer closes the connection instead) and closes a connection
/// after `close_after` of idleness, the way a keep-alive timeout does,
/// without saying so in the response. Returns its URL and the number of
/// connections it accepted.
async fn scripted_upstream(
    close_after: Duration,
    answer: fn(usize, usize) -> Vec<u8>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let accepted = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for k in 0.. {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tokio::time::timeout(close_after, s.read(&mut chunk)).await {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return, // idle too long (or gone): close
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let answer = answer(requests.fetch_add(1, Ordering::SeqCst), k);
                    if answer.is_empty() || s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, conns)
}

/// A pooled connection the upstream has closed meanwhile (its keep-alive
/// timeout) is noticed when it is checked out and never used: every
/// request still gets the upstream's answer, none a 502.
#[tokio::test]
async fn connections_the_upstream_closed_while_pooled_are_not_used() {
    let (url, conns) = scripted_upstream(Duration::from_millis(100), |_, _| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
    })
    .await;
    let pc = Portcullis::start(Conf::default().upstream(&url)).await;
    let mut b = signed_in(&pc).await;
    for i in 0..4 {
        let r = b.get(&pc.url(&format!("/n/{i}"))).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::OK, "ok"),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 4);
}

/// An upstream that closes a connection just as a request arrives on it
/// (its keep-alive timeout racing the request): a GET is sent again on a
/// new connection and answered; a POST is never sent twice, its client
/// gets a 502.
#[tokio::test]
async fn a_safe_request_the_upstream_closed_on_is_sent_again_a_post_never() {
    let (url, conns) = scripted_upstream(Duration::from_secs(10), |n, k| {
        if k == 0 {
            format!("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nanswer {n:02}").into_bytes()
        } else {
            Vec::new() // the second request on a connection: closed unanswered
        }
    })
    .await;
    let pc = Portcullis::start(Conf::default().upstream(&url)).await;
    let mut b = signed_in(&pc).await;
    assert_eq!(b.get(&pc.url("/first")).await.body, "answer 00");
    // Idle long enough for a keep-alive timeout to be in play.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = b.get(&pc.url("/again")).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "answer 02"));
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = b
        .request(
            Method::POST,
            &pc.url("/once"),
            &[],
            Some(("text/plain", b"pay".to_vec())),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A response the client stops reading half way leaves its connection in
/// the middle of a body: that connection is closed, never pooled, so the
/// next request's answer is its own and not the rest of the last body.
#[tokio::test]
async fn a_response_left_half_read_never_leaks_into_the_next() {
    let (url, conns) = scripted_upstream(Duration::from_secs(10), |n, _| {
        if n == 0 {
            // Promises 100 kB, sends a bit, and stays open.
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
            r.extend(std::iter::repeat_n(b'x', 1000));
            r
        } else {
            format!("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nanswer {n:02}").into_bytes()
        }
    })
    .await;
    let pc = Portcullis::start(Conf::default().upstream(&url)).await;
    let mut b = signed_in(&pc).await;
    let mut s = raw_get(&pc, &b, "/big", "").await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no response head")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(s); // the client leaves with the body unread
    for i in 1..4 {
        let r = b.get(&pc.url("/next")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.body.starts_with("answer "),
            "request {i} got {:?}",
            r.body
        );
    }
    assert!(conns.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

/// An upstream that answers before it has read the upload leaves its
/// connection mid-request: that connection is closed, never pooled, and
/// the next request gets its own answer on another one.
#[tokio::test]
async fn a_connection_answered_before_its_upload_ended_is_not_reused() {
    let (url, conns) = scripted_upstream(Duration::from_secs(2), |n, _| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nanswer {n:02}").into_bytes()
    })
    .await;
    let pc = Portcullis::start(Conf::default().upstream(&url)).await;
    let mut b = signed_in(&pc).await;
    // Far more than the socket buffers hold: still going out when the
    // answer comes.
    let upload = vec![b'x'; 16 << 20];
    let r = b
        .request(
            Method::POST,
            &pc.url("/upload"),
            &[],
            Some(("application/octet-stream", upload)),
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "answer 00"));
    for i in 1..3 {
        let r = b.get(&pc.url("/next")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.body, format!("answer {i:02}"), "request {i}");
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Many requests at once each get their own answer (no connection is
/// shared between two requests in flight).
#[tokio::test]
async fn concurrent_requests_each_get_their_own_answer() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let b = signed_in(&pc).await;
    let cookie = b.cookie_header();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64usize {
        let (url, cookie) = (pc.url(&format!("/c/{i}")), cookie.clone());
        tasks.spawn(async move {
            let mut b = Browser::new();
            let r = b
                .request(
                    Method::POST,
                    &url,
                    &[("cookie", &cookie)],
                    Some(("application/octet-stream", vec![b'x'; i * 100])),
                )
                .await;
            (i, r.status, r.body)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, status, body) = done.unwrap();
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(body, format!("upstream ok {}", i * 100), "request {i}");
    }
}

#[tokio::test]
async fn oversized_headers_and_forms_are_refused() {
    let pc = Portcullis::start(Conf::default()).await;
    let mut b = Browser::new();
    let huge = "x".repeat(80 * 1024);
    let r = b
        .get_with(&pc.url("/auth/session"), &[("x-big", &huge)])
        .await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let page = b.get(&pc.url("/auth/signin")).await;
    let token = page.hidden("csrfToken").unwrap();
    let big = "p".repeat(20 * 1024);
    let r = b
        .post_form(
            &pc.url("/auth/callback/credentials"),
            &[
                ("csrfToken", &token),
                ("email", ALICE.0),
                ("password", &big),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!b.has_session());
}

#[tokio::test]
async fn dot_segments_cannot_borrow_a_public_prefix() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("access:\n  public_paths: [/public/*]\n"),
    )
    .await;
    let mut b = Browser::api();
    for path in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2E/private",
        "/public/./x/../../admin",
    ] {
        let r = b.get(&pc.url(path)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(up.count(), 0);
    assert_eq!(b.get(&pc.url("/public/ok")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn underscore_and_renamed_identity_headers_are_stripped_too() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("headers:\n  user: X-Remote-User\naccess:\n  public_paths: [/p]\n"),
    )
    .await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    let r = b
        .get_with(
            &pc.url("/app"),
            &[
                ("X_Auth_Request_User", "root"),
                ("x_forwarded_email", "ceo@example.com"),
                ("X-Auth-Request-User", "root"),
                ("X-Remote-User", "root"),
                ("x_remote_user", "root"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = up.last();
    assert_eq!(
        seen.header("x-remote-user"),
        Some(ALICE.0),
        "the renamed header carries the identity"
    );
    for h in [
        "x_auth_request_user",
        "x_forwarded_email",
        "x-auth-request-user",
        "x_remote_user",
    ] {
        assert_eq!(seen.header_count(h), 0, "{h} reached the upstream");
    }
}

#[tokio::test]
async fn the_upstream_cannot_set_our_cookies() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut b = signed_in(&pc).await;
    let session = b.jar["authjs.session-token"].clone();
    let r = b.get(&pc.url("/set-cookies")).await;
    assert_eq!(r.status, StatusCode::OK);
    let set: Vec<&str> = r.set_cookies();
    assert_eq!(
        set,
        vec!["app_theme=dark; Path=/"],
        "only the app's own cookie passes"
    );
    assert_eq!(b.jar["authjs.session-token"], session);
}

/// Response bodies stream: an upstream that sends a first chunk and then
/// waits (here: until the client has that chunk, 10 s at most) gets the
/// chunk to the client while it is still waiting. A proxy that buffered
/// the whole response would deliver nothing until the upstream finished.
#[tokio::test]
async fn response_bodies_stream_before_the_upstream_finishes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<bool>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy closed before sending a request");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nc\r\nfirst-chunk\n\r\n",
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        // Paused: the rest comes only once the client saw the first chunk.
        let released = tokio::time::timeout(Duration::from_secs(10), release_rx)
            .await
            .is_ok();
        let _ = s.write_all(b"b\r\nlast-chunk\n\r\n0\r\n\r\n").await;
        let _ = done_tx.send(released);
    });
    let pc = Portcullis::start(Conf::default().upstream(&format!("http://{up_addr}"))).await;
    let b = signed_in(&pc).await;
    let mut s = raw_get(&pc, &b, "/events", "Accept: text/event-stream\r\n").await;
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first-chunk") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the first chunk did not arrive while the upstream paused; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            })
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("last-chunk"), "{text}");
    release_tx.send(()).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), done_rx)
            .await
            .unwrap()
            .unwrap(),
        "the upstream was not released by the client"
    );
    while !String::from_utf8_lossy(&got).contains("\r\n0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the rest of the body")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("last-chunk"));
}
