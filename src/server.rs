//! Listeners and connections: HTTP/1.1 and HTTP/2 (prior knowledge on
//! plain TCP, ALPN under TLS) on one port, WebSocket upgrades, bounded
//! header sizes and read times, and graceful shutdown that drains
//! in-flight requests.
//!
//! An idle plain HTTP/1 connection is *parked*: after [`PARK_AFTER`] with
//! nothing read, written or in flight, hyper is told to stop (keeping the
//! socket open) and its read and write buffers (~24 KiB) are freed; the
//! task then waits on the bare socket and starts hyper afresh when bytes
//! arrive, replaying any it had already read. This is what nginx does with
//! its keep-alive buffers: 10,000 idle connections cost little more than
//! their sockets. The keep-alive limit and the header read timeout stay
//! hyper's (`limits.header_read_timeout`, counted from when the connection
//! went idle), parked or not.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::App;

/// Idle time after which a plain HTTP/1 connection gives its buffers back.
/// Short: a client that sends its next request within it (a browser
/// fetching a page's assets, a load generator) never notices; one that
/// idles longer pays a few microseconds to set hyper up again.
pub const PARK_AFTER: Duration = Duration::from_millis(20);

/// The running app, swapped whole by a config reload: each request uses
/// the app current when it arrives; requests in flight finish on theirs.
pub type Apps = Arc<ArcSwap<App>>;

/// Binds the configured address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The protocol settings every connection is served with.
struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
}

impl Protocols {
    fn new(app: &App) -> Self {
        let limits = &app.config.limits;
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            // Also when a head arrives whole in one read (or is replayed
            // after parking): the limit is the head, not the buffer.
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(256);
        Protocols {
            h1,
            h2,
            header_read_timeout: limits.header_read_timeout,
        }
    }
}

/// What a connection's task, its socket wrapper and its service share
/// (all of them run on the connection's one task).
#[derive(Default)]
struct Activity {
    /// Requests whose handler has not returned.
    in_flight: AtomicU32,
    /// Requests started since hyper was (re)started on the connection.
    started: AtomicU32,
    /// Bumped by every read that returned bytes and every write.
    ticks: AtomicU64,
    /// Set when the task parks the connection: hyper's closing
    /// `shutdown` must then leave the socket open.
    parking: AtomicBool,
}

impl Activity {
    fn tick(&self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

/// Marks a request in flight until its response body has been sent (or
/// dropped).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.started.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(a))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.tick();
    }
}

/// The socket as hyper sees it: first the bytes hyper had read before the
/// connection was parked, then the socket; activity counted; no shutdown
/// while parking.
struct ConnIo {
    stream: TcpStream,
    replay: Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if !me.replay.is_empty() {
            let n = me.replay.len().min(buf.remaining());
            buf.put_slice(&me.replay[..n]);
            me.replay.advance(n);
            me.activity.tick();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut me.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            me.activity.tick();
        }
        r
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        me.activity.tick();
        Pin::new(&mut me.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        me.activity.tick();
        Pin::new(&mut me.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.activity.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.stream).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until it ends: a
/// connection streaming a response is not idle, however long the
/// upstream pauses.
struct BusyBody {
    inner: crate::http::Body,
    busy: Option<Busy>,
}

impl hyper::body::Body for BusyBody {
    type Data = Bytes;
    type Error = crate::http::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None | Some(Err(_)))) {
            self.busy = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

type Answer = Result<hyper::Response<crate::http::Body>, Infallible>;

/// The connection's service: each request on the app current when it
/// arrives, counted in flight until its response has been sent.
fn service(
    apps: &Apps,
    peer: SocketAddr,
    activity: Option<Arc<Activity>>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::http::Body>,
    Error = Infallible,
    Future = Pin<Box<dyn Future<Output = Answer> + Send>>,
> + Clone {
    let apps = apps.clone();
    service_fn(move |req| {
        let app = apps.load_full();
        let busy = activity.as_ref().map(Busy::new);
        // Boxed: an idle keep-alive connection then holds a pointer, not a
        // whole request future (~31 KB a connection at 10k connections).
        Box::pin(async move {
            let resp = crate::http::handle(app, req, peer).await;
            Ok::<_, Infallible>(match busy {
                None => resp,
                Some(busy) => resp.map(|inner| {
                    http_body_util::BodyExt::boxed_unsync(BusyBody {
                        inner,
                        busy: Some(busy),
                    })
                }),
            })
        }) as Pin<Box<dyn Future<Output = _> + Send>>
    })
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits for a new connection's first bytes and tells HTTP/2 with prior
/// knowledge from HTTP/1 by peeking (nothing is consumed, so hyper reads
/// the socket itself). `None`: the client closed without a byte.
async fn sniff_h2(stream: &TcpStream) -> io::Result<Option<bool>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(true));
        }
        // Part of the preface so far (rare: it is one segment): peek again,
        // backing off, so a client that stops there costs a few dozen
        // wake-ups, not hundreds a second; the caller bounds the wait.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Drives a connection (pinned) until it ends; on `stop`, lets it finish
/// what is in flight and close.
macro_rules! until_stopped {
    ($conn:expr, $stop:expr) => {{
        let mut conn = $conn;
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = $stop.changed() => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }};
}

/// One plain TCP connection: HTTP/2 with prior knowledge, or HTTP/1 with
/// idle parking (see the module docs).
async fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    apps: Apps,
    protocols: Arc<Protocols>,
    mut stop: watch::Receiver<bool>,
) {
    let _open = crate::metrics::CONNECTIONS.open();
    let timeout = protocols.header_read_timeout;
    // The first request must have started by then, however its bytes
    // trickle in (across parking too).
    let mut head_deadline = Instant::now() + timeout;
    let sniffed = tokio::select! {
        r = tokio::time::timeout_at(head_deadline, sniff_h2(&stream)) => r,
        _ = stop.changed() => return,
    };
    match sniffed {
        Ok(Ok(Some(false))) => {}
        Ok(Ok(Some(true))) => {
            // Boxed like every active phase: the task stays small.
            let svc = service(&apps, peer, None);
            let conn = Box::pin(protocols.h2.serve_connection(TokioIo::new(stream), svc));
            until_stopped!(conn, stop);
            return;
        }
        _ => return,
    }
    let (mut stream, mut replay) = (stream, Bytes::new());
    loop {
        // Boxed: a parked connection's task does not carry hyper's
        // connection or its timers, only what is below.
        let active = serve_h1(
            stream,
            replay,
            head_deadline,
            peer,
            &apps,
            &protocols,
            &mut stop,
        );
        let Some(parked) = Box::pin(active).await else {
            return;
        };
        (stream, replay, head_deadline) = parked;
        if replay.is_empty() {
            // Parked: the socket and this small task are all that remain.
            let _parked = crate::metrics::CONNECTIONS.parked();
            tokio::select! {
                r = stream.readable() => if r.is_err() { return },
                () = tokio::time::sleep_until(head_deadline) => return,
                _ = stop.changed() => return,
            }
        }
    }
}

/// hyper on an HTTP/1 connection until the connection ends (`None`) or
/// idles for [`PARK_AFTER`]: then the socket, the bytes hyper had read
/// but not used, and the deadline of the next request head.
async fn serve_h1(
    stream: TcpStream,
    replay: Bytes,
    mut head_deadline: Instant,
    peer: SocketAddr,
    apps: &Apps,
    protocols: &Protocols,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, Bytes, Instant)> {
    let activity = Arc::new(Activity::default());
    let io = ConnIo {
        stream,
        replay,
        activity: Arc::clone(&activity),
    };
    let svc = service(apps, peer, Some(activity.clone()));
    let mut conn = protocols
        .h1
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let mut check = std::pin::pin!(tokio::time::sleep(PARK_AFTER));
    let mut watchdog = std::pin::pin!(tokio::time::sleep_until(head_deadline));
    let (mut seen, mut last_active) = (activity.ticks.load(Ordering::Relaxed), Instant::now());
    let (mut parking, mut stopping, mut waiting_head) = (false, false, true);
    let result = loop {
        tokio::select! {
            r = &mut conn => break r,
            () = check.as_mut(), if !parking && !stopping => {
                let ticks = activity.ticks.load(Ordering::Relaxed);
                let now = Instant::now();
                // A first request still arriving is hyper's and the
                // watchdog's business, not idleness.
                let busy = activity.in_flight.load(Ordering::Relaxed) > 0
                    || (activity.started.load(Ordering::Relaxed) == 0 && ticks > 0);
                if ticks != seen || busy {
                    (seen, last_active) = (ticks, now);
                    check.as_mut().reset(now + PARK_AFTER);
                } else {
                    parking = true;
                    activity.parking.store(true, Ordering::Relaxed);
                    Pin::new(&mut conn).graceful_shutdown();
                }
            }
            () = watchdog.as_mut(), if waiting_head => {
                if activity.started.load(Ordering::Relaxed) == 0 {
                    return None; // no request head in time: close
                }
                waiting_head = false;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                activity.parking.store(false, Ordering::Relaxed);
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    if result.is_err() || !parking || stopping {
        return None; // closed, failed, or the server is stopping
    }
    // `None`: upgraded (WebSocket), the proxy owns the socket now.
    let parts = conn.into_parts()?;
    let io = parts.io.into_inner();
    // Copied: the read buffer's 8+ KiB allocation must go, even when
    // hyper hands back an empty view of it.
    let replay = match (parts.read_buf.is_empty(), io.replay.is_empty()) {
        (true, true) => Bytes::new(),
        (false, true) => Bytes::copy_from_slice(&parts.read_buf),
        (true, false) => io.replay,
        (false, false) => {
            let mut b = BytesMut::with_capacity(parts.read_buf.len() + io.replay.len());
            b.extend_from_slice(&parts.read_buf);
            b.extend_from_slice(&io.replay);
            b.freeze()
        }
    };
    if activity.started.load(Ordering::Relaxed) > 0 {
        // Idle since about `last_active`: hyper's keep-alive and header
        // clock for the next request start there.
        head_deadline = last_active + protocols.header_read_timeout;
    }
    Some((io.stream, replay, head_deadline))
}

/// One TLS connection: HTTP/2 when ALPN chose it, else HTTP/1.1.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    apps: Apps,
    protocols: Arc<Protocols>,
    mut stop: watch::Receiver<bool>,
) {
    let _open = crate::metrics::CONNECTIONS.open();
    let handshake = tokio::time::timeout(protocols.header_read_timeout, acceptor.accept(stream));
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            _ => return,
        },
        _ = stop.changed() => return,
    };
    let svc = service(&apps, peer, None);
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let conn = protocols.h2.serve_connection(TokioIo::new(stream), svc);
        until_stopped!(std::pin::pin!(conn), stop);
    } else {
        let conn = protocols
            .h1
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        until_stopped!(std::pin::pin!(conn), stop);
    }
}

thread_local! {
    /// Which worker runs on this thread: 1 to `workers`, 0 on any other
    /// thread (the main runtime's, tests').
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The worker serving on this thread (1 and up), or 0 off the workers:
/// what per-worker state (the upstream pool) is indexed by.
pub fn worker() -> usize {
    WORKER.with(std::cell::Cell::get)
}

/// The number of workers `workers` asks for: that many, or one per CPU
/// this process may use (cgroup quotas included), as counted the first
/// time: the CPU limit can change under a running process (a container
/// resized in place), the number of running workers does not, and what is
/// sized per worker (each app's upstream pool, built again at every
/// reload) must match it.
pub fn worker_count(workers: Option<usize>) -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    workers.unwrap_or_else(|| {
        *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Serves `listener` until `shutdown`, then stops accepting and waits up
/// to `limits.shutdown_grace` for in-flight requests to finish. With `tls`,
/// every connection is HTTPS (HTTP/2 by ALPN), with a bounded handshake.
///
/// Connections are served by `workers` threads, each with a
/// single-threaded runtime of its own that accepts from the one listening
/// socket, as nginx's worker processes do. A connection stays on the
/// worker that accepted it, with the upstream connections it uses (see
/// [`worker`]): no task moves between threads and no wake-up crosses one,
/// which a work-stealing runtime pays for on every request (~20% of the
/// proxy's CPU). The caller's runtime keeps the background work (config
/// reload, store connections, the admin listener).
pub async fn run(
    apps: Apps,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let protocols = Arc::new(Protocols::new(&apps.load()));
    // Every connection task holds a receiver: `closed()` is "all done".
    let (stop_tx, stop_rx) = watch::channel(false);
    // Told once draining is over: a worker's runtime (and the connections
    // still on it) lives until then.
    let (done_tx, done_rx) = watch::channel(false);
    let listener = listener.into_std()?;
    let mut threads = Vec::with_capacity(workers);
    for i in 1..=workers.max(1) {
        let listener = listener.try_clone()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (apps, tls, protocols) = (apps.clone(), tls.clone(), protocols.clone());
        let (stop, mut done) = (stop_rx.clone(), done_rx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("portcullis-w{i}"))
            .spawn(move || {
                WORKER.with(|w| w.set(i));
                rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => accept(l, tls, apps, protocols, stop).await,
                        Err(e) => tracing::error!(error = %e, worker = i, "worker cannot listen"),
                    }
                    let _ = done.wait_for(|d| *d).await;
                });
            })?;
        threads.push(thread);
    }
    drop((listener, done_rx));
    shutdown.await;
    drop(stop_rx);
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    tokio::select! {
        () = stop_tx.closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(apps.load().config.limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period ended with connections still open");
        }
    }
    let _ = done_tx.send(true);
    // Each worker then drops its runtime, and what still runs there.
    let join = move || threads.into_iter().for_each(|t| drop(t.join()));
    let _ = tokio::task::spawn_blocking(join).await;
    Ok(())
}

/// One worker's accept loop: spawns each connection on this worker's
/// runtime, until `stop`. Every worker wakes for a new connection and one
/// gets it (tokio waits again on the others' `EAGAIN`): the worker free
/// first takes it, not the one a hash of the address picks
/// (`SO_REUSEPORT`), so a busy worker is not handed more.
async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    apps: Apps,
    protocols: Arc<Protocols>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (apps, protocols, stop) = (apps.clone(), protocols.clone(), stop.clone());
                match &tls {
                    None => tokio::spawn(serve_plain(stream, peer, apps, protocols, stop)),
                    Some(acceptor) => tokio::spawn(serve_tls(acceptor.clone(), stream, peer, apps, protocols, stop)),
                };
                // One at a time, as nginx without `multi_accept`: a burst
                // of new connections (a load balancer's pool filling up)
                // is shared with the other workers, not all taken by the
                // first one awake.
                tokio::task::yield_now().await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// The admin listener (`metrics.listen`): `/metrics` only.
pub async fn run_admin(apps: Apps, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let apps = apps.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = apps.load_full();
                let resp = if req.uri().path() == "/metrics" {
                    crate::http::metrics_response(&app)
                } else {
                    crate::http::text(hyper::StatusCode::NOT_FOUND, "not found\n")
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
