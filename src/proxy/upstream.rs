//! The upstream client: HTTP/1.1 connections kept in a pool and driven by
//! the task of the request using them, never by a task of their own.
//!
//! hyper's pooled client gives each connection a task: a request then
//! crosses tasks to be written, its response crosses back, and so does
//! each chunk of the body, every crossing a wake-up. Here a request checks
//! a connection out together with hyper's connection future and polls that
//! future itself, first while it waits for the response head, then (from
//! [`UpstreamBody`]) whenever the server polls the response body. When the
//! body has ended the connection goes back to the pool.
//!
//! An idle connection is polled by no one. Checking it out polls it once,
//! which reads what the upstream sent meanwhile: its end-of-file (a
//! keep-alive timeout) or anything else ends that connection, and the next
//! is tried. A request the upstream closed on before it was written is
//! given back by hyper and sent on another connection. One that was
//! written goes again only if it is safe and has no body (GET, HEAD,
//! OPTIONS), its connection had idled [`RACY_IDLE`] or more, and the
//! upstream closed without a byte of an answer: its keep-alive timeout
//! raced the request (Go's and nginx's clients retry there too). A
//! connection goes back only between messages: one
//! whose body was left unread, or whose upload was still going out when
//! the answer ended (the upstream answered early), is closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// One HTTP/1.1 connection: the handle requests are sent on and hyper's
/// state machine, which whoever holds the connection polls.
struct Conn {
    send: http1::SendRequest<ReqBody>,
    /// Boxed: hyper's connection state is ~1.5 KB, and a connection moves
    /// (out of the pool, into a response body, back) several times a
    /// request; a box moves as a pointer.
    driver: Box<http1::Connection<Io, ReqBody>>,
}

/// How long a connection must have idled before a request on it is kept
/// for a second try: about when an upstream's keep-alive timeout (Node
/// and uvicorn 5 s, gunicorn 2 s) can close it just as the request goes
/// out. Under load connections idle far less, and nothing is kept.
const RACY_IDLE: Duration = Duration::from_millis(250);

/// A request body for the upstream: the client's, or none (the second try
/// of a request that had none).
enum ReqBody {
    Client(Incoming),
    Empty,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Client(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Client(b) => b.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Client(b) => b.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A copy of a safe request without a body (GET, HEAD, OPTIONS), to send
/// again should the upstream close without answering; `None` for others.
fn replayable(req: &Request<ReqBody>) -> Option<Request<ReqBody>> {
    let safe = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(ReqBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

impl Conn {
    /// Drives the connection; `true` once it has ended (closed, failed).
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut *self.driver).poll(cx).is_ready()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle connections, the most recently used on top: a stack per worker
/// (see [`crate::server::worker`]), as a connection is registered with the
/// runtime of the worker that opened it and answers fastest there.
struct Pool {
    // Held to push or pop one connection, never across an `.await`, and
    // taken from `Drop` and `poll_frame`, where an async lock cannot be.
    // Only its own worker takes a worker's lock (the rest share stack 0).
    #[allow(clippy::disallowed_types)]
    idle: Box<[std::sync::Mutex<Vec<Idle>>]>,
    /// Per worker, as nginx's `keepalive`.
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// This worker's stack.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let stack = &self.idle[crate::server::worker() % self.idle.len()];
        stack.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection that is still open, polled once with `cx`, and
    /// how long it idled. Run outside tokio's cooperative budget: with the
    /// budget spent, a read answers `Pending` without looking, and a closed
    /// connection would pass for an open one.
    fn checkout(&self, cx: &mut Context<'_>) -> Option<(Conn, Duration)> {
        loop {
            let idle = self.idle().pop()?;
            let idled = idle.since.elapsed();
            if idled >= self.idle_timeout {
                // Older ones are below it: none of them is worth keeping.
                // (Closed after the lock is released.)
                let stale = std::mem::take(&mut *self.idle());
                drop(stale);
                return None;
            }
            let mut conn = idle.conn;
            if !conn.poll_ended(cx) && conn.send.is_ready() {
                return Some((conn, idled));
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        // One clock read, not one per probe of the search below.
        let now = Instant::now();
        let mut idle = self.idle();
        // The bottom of the stack waits longest (oldest first): what has
        // waited too long goes, so a burst's extra connections do not stay
        // open for good.
        let n = idle.partition_point(|i| now.duration_since(i.since) >= self.idle_timeout);
        let stale = (n > 0).then(|| {
            let rest = idle.split_off(n);
            std::mem::replace(&mut *idle, rest)
        });
        let refused = if idle.len() < self.max_idle {
            idle.push(Idle { conn, since: now });
            None
        } else {
            Some(conn)
        };
        // Closed after the lock is released.
        drop(idle);
        drop((stale, refused));
    }
}

/// Why a request to the upstream failed.
pub(crate) enum SendError {
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, e): (&str, &dyn std::error::Error) = match self {
            SendError::Connect(e) => ("connecting", e.as_ref()),
            SendError::Http(e) => ("HTTP", e),
        };
        write!(f, "{what}: {e}")?;
        let mut src = e.source();
        while let Some(inner) = src {
            write!(f, ": {inner}")?;
            src = inner.source();
        }
        Ok(())
    }
}

pub(crate) struct Upstream {
    connector: HttpsConnector<HttpConnector>,
    /// Where connections go: the upstream's scheme and authority.
    origin: Uri,
    pool: Arc<Pool>,
}

impl Upstream {
    /// `workers`: how many workers serve connections (stacks 1 to
    /// `workers`; 0 is for any other thread).
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        origin: Uri,
        workers: usize,
    ) -> Self {
        Upstream {
            connector,
            origin,
            pool: Arc::new(Pool {
                idle: (0..=workers).map(|_| Default::default()).collect(),
                max_idle: 256,
                idle_timeout: Duration::from_secs(90),
            }),
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)?;
        let (send, driver) = http1::handshake(io).await.map_err(SendError::Http)?;
        Ok(Conn {
            send,
            driver: Box::new(driver),
        })
    }

    /// Sends `req` (origin-form URI, `Host` set) on a pooled connection, or
    /// a new one, and answers with the response head; its body drives the
    /// connection and returns it to the pool at its end.
    pub(crate) async fn send(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let mut req = req.map(ReqBody::Client);
        loop {
            let pooled = tokio::task::unconstrained(std::future::poll_fn(|cx| {
                Poll::Ready(self.pool.checkout(cx))
            }))
            .await;
            let reused = pooled.is_some();
            // A connection that idled long may be closed by the upstream
            // just as this request goes out (its keep-alive timeout): a
            // safe request is then sent again, on another connection, as
            // Go's and nginx's clients do. Never one with a body.
            let again = match &pooled {
                Some((_, idled)) if *idled >= RACY_IDLE => replayable(&req),
                _ => None,
            };
            let Conn { mut send, driver } = match pooled {
                Some((c, _)) => c,
                // Boxed: connecting (TLS too) is rare next to reuse.
                None => Box::pin(self.connect()).await?,
            };
            let mut driver = Some(driver);
            let mut head = std::pin::pin!(send.try_send_request(req));
            let answer = std::future::poll_fn(|cx| {
                if let Some(d) = &mut driver
                    && Pin::new(&mut **d).poll(cx).is_ready()
                {
                    // Ended (closed, failed). Dropped at once: hyper then
                    // hands back a request it had not started writing,
                    // which would otherwise wait for the timeout.
                    driver = None;
                }
                head.as_mut().poll(cx)
            })
            .await;
            match answer {
                Ok(resp) => {
                    let conn = driver.map(|driver| Conn { send, driver });
                    let pool = Arc::clone(&self.pool);
                    return Ok(resp.map(|body| UpstreamBody { body, conn, pool }));
                }
                // Not written: a pooled connection the upstream had just
                // closed. Once more, on another (or a new) connection.
                Err(mut e) if reused && e.message().is_some() => {
                    req = e.take_message().expect("checked above");
                }
                Err(e) => {
                    let e = e.into_error();
                    match again {
                        // Closed before a byte of an answer came back.
                        Some(copy) if e.is_incomplete_message() => req = copy,
                        _ => return Err(SendError::Http(e)),
                    }
                }
            }
        }
    }

    /// Sends an upgrade request (WebSocket) on a connection of its own,
    /// driven by a task of its own, so that `hyper::upgrade::on` works on
    /// the response.
    pub(crate) async fn send_upgrade(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        let Conn { mut send, driver } = Box::pin(self.connect()).await?;
        tokio::spawn((*driver).with_upgrades());
        send.send_request(req.map(ReqBody::Client))
            .await
            .map_err(SendError::Http)
    }
}

/// A response body from the upstream. Polling it drives its connection;
/// when it has ended the connection goes back to the pool. Dropped before
/// its end, it closes the connection (the rest of the response would be
/// read as the next one's).
pub(crate) struct UpstreamBody {
    body: Incoming,
    /// `None` once the connection has ended or gone back to the pool.
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl UpstreamBody {
    /// Back to the pool, if the connection is between messages: after an
    /// early answer (the upload still going out) it is not, and closes.
    fn release(&mut self, cx: Option<&mut Context<'_>>) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let ended = cx.is_some_and(|cx| conn.poll_ended(cx));
        if !ended && conn.send.is_ready() {
            self.pool.checkin(conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut frame = Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_pending() {
            // Only the connection can bring more: drive it, look again.
            if let Some(conn) = &mut this.conn
                && conn.poll_ended(cx)
            {
                // Closed after (or while) sending this response: what it
                // read is in the body already, and an error shows there.
                this.conn = None;
            }
            frame = Pin::new(&mut this.body).poll_frame(cx);
        }
        let frame = ready!(frame);
        match &frame {
            None => this.release(Some(cx)),
            // hyper's server stops reading at trailers, or once the body
            // says it has ended.
            Some(Ok(f)) if f.is_trailers() || this.body.is_end_stream() => {
                this.release(Some(cx));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => this.conn = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body nobody read to its end, because it had none (HEAD, 204,
        // 304) or its last frame said so, leaves the connection reusable.
        if self.body.is_end_stream() {
            self.release(None);
        }
    }
}
