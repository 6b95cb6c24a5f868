//! Client connections over time: keep-alive across idle parking
//! (`src/server.rs`: an idle HTTP/1 connection gives hyper's buffers back
//! and keeps its socket), the request-head deadline across parks, the
//! connection gauges, and shutdown with parked connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Well past the park delay (a connection parks 20 to 40 ms after its
/// last byte).
const IDLE: Duration = Duration::from_millis(150);

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response (with a `Content-Length` body) from a raw
/// connection: its status and body.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head[9..12].parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or_else(|| panic!("no content-length: {head}"));
            if buf.len() >= end + 4 + len {
                assert_eq!(buf.len(), end + 4 + len, "more than one response");
                return (status, String::from_utf8_lossy(&buf[end + 4..]).to_string());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn get(s: &mut TcpStream, path: &str, cookie: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    read_response(s).await
}

async fn connect(pc: &Portcullis) -> TcpStream {
    TcpStream::connect(("127.0.0.1", pc.port)).await.unwrap()
}

/// A gauge from `/metrics` (asked on a connection of its own).
async fn gauge(pc: &Portcullis, name: &str) -> i64 {
    let body = Browser::api().get(&pc.url("/metrics")).await.body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Whether the server closes `s` within `within` (reading whatever it
/// still sends).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
    false
}

async fn signed_in(pc: &Portcullis) -> Browser {
    let mut b = Browser::new();
    let r = b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(r.location(), "/");
    b
}

#[tokio::test]
async fn idle_connections_park_and_keep_serving() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let b = signed_in(&pc).await;
    let cookie = b.cookie_header();
    let mut s = connect(&pc).await;
    for round in 0..3 {
        let (status, body) = get(&mut s, &format!("/app/{round}"), &cookie).await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_eq!(up.last().uri, format!("/app/{round}"));
        assert_eq!(up.last().header("x-auth-request-email"), Some(ALICE.0));
        tokio::time::sleep(IDLE).await;
        assert!(
            gauge(&pc, "portcullis_parked_connections").await >= 1,
            "round {round}: the idle connection was not parked"
        );
    }
    assert!(gauge(&pc, "portcullis_open_connections").await >= 2);
    // An upgrade on a connection that was parked: the socket is handed to
    // the tunnel by the fresh hyper connection.
    let head = send_echo_upgrade(&mut s, &cookie).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tokio::time::sleep(IDLE).await; // a tunnel is never parked
    s.write_all(b"through the tunnel").await.unwrap();
    let mut got = vec![0u8; 18];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"through the tunnel");
}

#[tokio::test]
async fn a_request_head_cut_across_a_park_is_replayed_whole() {
    let pc = Portcullis::start(Conf::default()).await;
    let mut s = connect(&pc).await;
    assert_eq!(get(&mut s, "/healthz", "x=1").await.0, 200);
    // Half a head, a pause long enough to park with the half in hyper's
    // buffer, then the rest.
    s.write_all(b"GET /auth/session HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(IDLE).await;
    s.write_all(b"st: 127.0.0.1\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut s).await;
    assert_eq!((status, body.as_str()), (200, "null"));
    // Two requests in one write (pipelined), then idle, then one more.
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /auth/session HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&all, b"null").is_none() {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        all.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    tokio::time::sleep(IDLE).await;
    assert_eq!(get(&mut s, "/healthz", "x=1").await.0, 200);
}

#[tokio::test]
async fn request_heads_keep_their_deadline_across_parks() {
    let pc = Portcullis::start(Conf::default().extra("limits:\n  header_read_timeout: 1s\n")).await;
    // A new connection that never finishes its head.
    let mut fresh = connect(&pc).await;
    fresh.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut fresh, Duration::from_secs(3)).await);
    assert!(t.elapsed() >= Duration::from_millis(800), "closed too soon");
    // After a request: a head trickled one byte per 100 ms parks with its
    // bytes again and again; the deadline must not move with it (at most
    // twice the timeout, see the architecture notes).
    let mut slow = connect(&pc).await;
    assert_eq!(get(&mut slow, "/healthz", "x=1").await.0, 200);
    let t = Instant::now();
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*b]).await.is_err() || closed_within(&mut slow, Duration::from_millis(100)).await {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a trickled head held the connection open for {:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "held for {:?}",
        t.elapsed()
    );
    // An idle keep-alive connection (parked) is closed after the timeout.
    let mut idle = connect(&pc).await;
    assert_eq!(get(&mut idle, "/healthz", "x=1").await.0, 200);
    let t = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    assert!(t.elapsed() >= Duration::from_millis(800), "closed too soon");
    assert_eq!(gauge(&pc, "portcullis_parked_connections").await, 0);
}

#[tokio::test]
async fn sigterm_does_not_wait_for_parked_connections() {
    let mut pc = Portcullis::start(Conf::default()).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&pc).await;
        assert_eq!(get(&mut s, "/healthz", "x=1").await.0, 200);
        held.push(s);
    }
    tokio::time::sleep(IDLE).await;
    assert!(gauge(&pc, "portcullis_parked_connections").await >= 3);
    pc.terminate();
    // The grace period is 30 s; parked connections have nothing in flight.
    assert!(
        pc.wait_exit(Duration::from_secs(5)),
        "waited for idle connections"
    );
    for mut s in held {
        assert!(closed_within(&mut s, Duration::from_secs(1)).await);
    }
}

/// `workers`: that many serving threads (named for `ps -L` and `top -H`),
/// each serving connections to the end, proxying through its own upstream
/// connections.
#[tokio::test]
async fn workers_serve_connections_on_threads_of_their_own() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra("workers: 3\n")).await;
    let workers = || {
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", pc.pid()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .filter(|n| n.starts_with("portcullis-w"))
            .collect();
        names.sort();
        names
    };
    // A thread takes its name as it starts: the first worker may already
    // answer while the last is starting.
    let mut names = workers();
    for _ in 0..50 {
        if names.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        names = workers();
    }
    assert_eq!(names, ["portcullis-w1", "portcullis-w2", "portcullis-w3"]);
    let cookie = signed_in(&pc).await.cookie_header();
    // Concurrent keep-alive connections, whichever worker took each: every
    // answer is its own, with the identity of the session.
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..12 {
        let (port, cookie) = (pc.port, cookie.clone());
        clients.spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            for round in 0..3 {
                let (status, body) = get(&mut s, &format!("/w/{i}/{round}"), &cookie).await;
                assert_eq!(status, 200, "{i}/{round}: {body}");
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let seen = up.requests.lock().unwrap().clone();
    let mut uris: Vec<&str> = seen.iter().map(|r| r.uri.as_str()).collect();
    uris.sort_unstable();
    let mut want: Vec<String> = (0..12)
        .flat_map(|i| (0..3).map(move |r| format!("/w/{i}/{r}")))
        .collect();
    want.sort_unstable();
    assert_eq!(uris, want);
    for r in &seen {
        assert_eq!(r.header("x-auth-request-email"), Some(ALICE.0), "{}", r.uri);
    }
}
