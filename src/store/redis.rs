//! One Redis handle for every topology: a multiplexed, auto-reconnecting
//! connection (standalone), the same to the master a Sentinel names
//! (re-resolved after a failover), or a cluster connection. Every command
//! has a time limit; any failure is `StoreError::Unavailable` (the caller
//! fails closed). A background ping keeps `/readyz` honest.
//!
//! Session records (standalone and Sentinel, `store.client_cache`) are
//! read over a connection of their own with Redis's server-assisted
//! client-side caching (`CLIENT TRACKING`, RESP3): Redis pushes an
//! invalidation the moment a record read here changes or goes (a
//! sign-out on another replica, a refresh, an expiry), so a record read
//! once is answered from memory until then. See [`Cache`] for when memory
//! is trusted and when it is not (fail closed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::AsyncConnectionConfig;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, FromRedisValue, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo,
    PushKind, RedisFuture, Script, TlsCertificates, Value,
};
use tokio::sync::Mutex;

use super::{RedisTarget, StoreConfig, StoreError};

/// A live connection of either kind; cheap to clone (both multiplex).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    /// The tracked reads' connection: not reconnected behind our back (a
    /// new connection is one we made, and know to empty the cache for),
    /// and its pushes handled by its driver as it reads them.
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Kind {
    Single(redis::Client),
    Sentinel(Mutex<SentinelClient>),
    Cluster(redis::cluster::ClusterClient),
}

/// One unit of work against Redis.
enum Op<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
    Script(&'a Script, &'a [&'a str], &'a [&'a str]),
}

impl Op<'_> {
    async fn exec<T: FromRedisValue + Send>(&self, c: &mut Conn) -> redis::RedisResult<T> {
        match self {
            Op::Cmd(cmd) => cmd.query_async(c).await,
            Op::Pipe(p) => p.query_async(c).await,
            Op::Script(s, keys, args) => {
                let mut inv = s.prepare_invoke();
                for k in *keys {
                    inv.key(*k);
                }
                for a in *args {
                    inv.arg(*a);
                }
                inv.invoke_async(c).await
            }
        }
    }
}

/// A request waiting for its part of a batched read.
type Waiter = tokio::sync::oneshot::Sender<Result<Option<String>, StoreError>>;

/// One waiting read: the key and who waits.
type Read = (String, Waiter);

/// Reads of concurrent requests, gathered into one `MGET` (standalone and
/// Sentinel; a cluster reads key by key, as keys live in different
/// slots). Each read is still sent after its request asked for it:
/// nothing is cached; only the round trip is shared. At most
/// [`BATCHES_IN_FLIGHT`] batches are out at once: under load, the reads
/// that arrive meanwhile wait for one of them to come back and go out
/// together (fewer, larger batches; at most one extra round trip of wait).
#[derive(Default)]
struct Gets {
    // Held only to push one read or take the batch, never across an
    // `.await`: a tokio Mutex would cost an allocation-heavy async lock on
    // every request for nothing.
    #[allow(clippy::disallowed_types)]
    queue: std::sync::Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    reads: Vec<Read>,
    /// Running flush loops (each has at most one batch out).
    flushers: usize,
}

const BATCHES_IN_FLIGHT: usize = 2;

impl Gets {
    /// Queues a read; `true` when the caller must start a flush loop.
    fn push(&self, read: Read) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.reads.push(read);
        let start = q.flushers < BATCHES_IN_FLIGHT;
        if start {
            q.flushers += 1;
        }
        start
    }

    /// The next batch, or `None` (and one flush loop fewer, in the same
    /// lock: a read queued after it starts a loop of its own) when no read
    /// waits.
    fn next(&self, running: &mut Running<'_>) -> Option<Vec<Read>> {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.reads.is_empty() {
            q.flushers -= 1;
            running.0 = None;
            return None;
        }
        Some(std::mem::take(&mut q.reads))
    }
}

/// A running flush loop; should it unwind, it still counts itself out
/// (else reads could queue with no loop left to send them).
struct Running<'a>(Option<&'a Gets>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .flushers -= 1;
        }
    }
}

/// How long memory is trusted after the reads' connection last answered.
/// The health loop pings that connection every second, so one that went
/// silent (a partition: no reset, no error yet) stops serving hits within
/// this; reads then go to Redis and fail closed like any other.
const CACHE_TRUSTED_FOR: Duration = Duration::from_secs(2);

/// Slots of the record cache (direct-mapped by key: bounded memory; a
/// collision only costs a read).
const CACHE_SLOTS: usize = 4096;

/// Milliseconds since the first call (a monotonic clock for atomics).
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    // +1: 0 means "never answered".
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Session records as Redis last answered them, while Redis tracks them
/// for this process. Trusted only because:
/// - a record is filled only from a read on a connection with tracking on
///   (`CLIENT TRACKING ON` and the `MGET` go out as one pipeline, so on one
///   connection), and a hit takes it only if it was read after the last
///   invalidation of its slot and the last clear (epochs: each
///   invalidation takes the next one; a read remembers the one current
///   when it was sent);
/// - every invalidation Redis pushes (a change, a deletion, an expiry, a
///   flush), a lost connection (the driver's `Disconnection` push), a
///   connection dropped or made by us, and every write of this process to
///   a session key ([`Redis::write`]) empties what it concerns;
/// - a hit needs an answer on that connection to a command sent within
///   [`CACHE_TRUSTED_FOR`] (Redis sends a connection's pushes before the
///   answers after them): a push the network holds up (a retransmit, a
///   partition) delays hits' end by at most that;
/// - an entry dies with its key: the key's TTL (`PTTL`, read with the
///   value) counted from before the read was sent, so never later than
///   Redis's own expiry, which may purge the key (and push) later.
struct Cache {
    slots: Box<[Slot]>,
    /// The epoch of the last [`Cache::clear`]: entries read before it are
    /// dead.
    cleared: AtomicU64,
    /// The socket of the reads' connection: no hit while it holds bytes
    /// the driver has not taken (an invalidation may be among them).
    watch: ArcSwapOption<Watch>,
    epoch: AtomicU64,
    /// The key a new connection writes to see that Redis's invalidations
    /// reach us (see [`Link::connect_watched`]), and whether one did.
    canary: ArcSwapOption<String>,
    canary_seen: AtomicBool,
    /// Prepended to the canary's key (`store.key_prefix`).
    prefix: String,
    /// When the reads' connection last answered ([`now_ms`]; 0: never).
    answered: AtomicU64,
    hits: AtomicU64,
}

impl Cache {
    fn new(prefix: &str) -> Self {
        Cache {
            canary: ArcSwapOption::empty(),
            canary_seen: AtomicBool::new(false),
            prefix: prefix.to_string(),
            slots: (0..CACHE_SLOTS).map(|_| Slot::default()).collect(),
            cleared: AtomicU64::new(0),
            watch: ArcSwapOption::empty(),
            epoch: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    fn slot(&self, key: &str) -> &Slot {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(key);
        &self.slots[(h as usize) % self.slots.len()]
    }

    fn trusted(&self) -> bool {
        let at = self.answered.load(Ordering::SeqCst);
        at != 0 && now_ms().saturating_sub(at) < CACHE_TRUSTED_FOR.as_millis() as u64
    }

    /// The record for `key` if memory may answer for it: see [`Watch`].
    /// While the reads' connection has bytes in flight (other reads'
    /// answers, perhaps an invalidation), waits for its driver to have
    /// handled them (microseconds), then looks again.
    async fn hit(&self, key: &str) -> Option<String> {
        if !self.trusted() {
            return None;
        }
        let slot = self.slot(key);
        self.live(slot, key, |_| ())?;
        if !self.watch.load().as_deref().is_some_and(Watch::idle) {
            let watch = self.watch.load_full()?;
            if !watch.settle().await {
                return None;
            }
        }
        // Again: an invalidation may have come while we looked or waited.
        let v = self.live(slot, key, |e| e.value.clone())?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(v)
    }

    /// `f` of `slot`'s entry, if it is `key`'s, alive and current.
    fn live<T>(&self, slot: &Slot, key: &str, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        let entry = slot.entry.load();
        let e = entry.as_deref()?;
        (e.key == key && now_ms() < e.expires && self.current(slot, e.read_at)).then(|| f(e))
    }

    /// Whether a read sent at `epoch` is newer than every invalidation of
    /// its slot and every clear: checked when a hit reads the entry, so no
    /// interleaving of a fill and an invalidation serves what the
    /// invalidation killed.
    fn current(&self, slot: &Slot, epoch: u64) -> bool {
        epoch >= slot.invalidated.load(Ordering::SeqCst)
            && epoch >= self.cleared.load(Ordering::SeqCst)
    }

    /// Caches what a read `sent` answered: `value`, `ttl_ms` to live (the
    /// key's `PTTL`: -1 no expiry, -2 gone).
    fn fill(&self, key: &str, value: &str, ttl_ms: i64, sent: Sent) {
        let expires = match ttl_ms {
            -1 => u64::MAX,
            t if t > 0 => sent.at_ms.saturating_add(t as u64),
            _ => return,
        };
        let slot = self.slot(key);
        if !self.current(slot, sent.epoch) {
            return;
        }
        let entry = Arc::new(Entry {
            key: key.to_string(),
            value: value.to_string(),
            expires,
            read_at: sent.epoch,
        });
        slot.entry.store(Some(entry.clone()));
        if !self.current(slot, sent.epoch) {
            // Dead already (hits would refuse it): do not keep it.
            slot.entry.compare_and_swap(&Some(entry), None);
        }
    }

    /// The next epoch (each invalidation and clear takes one).
    fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn invalidate(&self, key: &str) {
        let slot = self.slot(key);
        slot.invalidated
            .fetch_max(self.next_epoch(), Ordering::SeqCst);
        let cur = slot.entry.load_full();
        if cur.as_deref().is_some_and(|e| e.key == key) {
            slot.entry.compare_and_swap(&cur, None);
        }
    }

    fn clear(&self) {
        self.cleared.fetch_max(self.next_epoch(), Ordering::SeqCst);
        for slot in &self.slots {
            slot.entry.store(None);
        }
    }

    /// The reads' connection is gone (or replaced): nothing is trusted
    /// until a new one answers.
    fn reset(&self) {
        self.answered.store(0, Ordering::SeqCst);
        self.watch.store(None);
        self.clear();
    }

    /// An invalidation pushed by Redis for `key`.
    fn invalidated(&self, key: &str) {
        if self.canary.load().as_deref().is_some_and(|c| c == key) {
            self.canary_seen.store(true, Ordering::SeqCst);
        }
        self.invalidate(key);
    }

    /// A push from Redis (or the driver) on the reads' connection `from`.
    fn on_push(&self, push: &PushInfo, from: &Arc<Watch>) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for k in keys {
                        match k {
                            Value::BulkString(b) => self.invalidated(&String::from_utf8_lossy(b)),
                            Value::SimpleString(s) => self.invalidated(s),
                            // Not a key we can name: forget everything.
                            _ => self.clear(),
                        }
                    }
                }
                // `invalidate` with nil: FLUSHALL / FLUSHDB.
                _ => self.clear(),
            },
            // Connection lost: its invalidations can no longer arrive.
            // (A connection replaced already only empties the slots: the
            // new one's watch stays.)
            PushKind::Disconnection => {
                let current = self.watch.load();
                if current.as_ref().is_some_and(|w| Arc::ptr_eq(w, from)) {
                    self.reset();
                } else {
                    self.clear();
                }
            }
            _ => {}
        }
    }
}

/// What a hit asks of the reads' connection before trusting memory:
/// that its socket holds no byte its driver has not taken, and that the
/// driver is not between taking bytes and handling them. Redis writes an
/// invalidation before it answers the command that caused it, so a
/// change whose answer reached anyone before our request did is, by then,
/// in that socket or handled.
///
/// `draining` is set before each read of the socket and cleared only when
/// a read finds nothing: the driver reads again only after handling every
/// whole message of the last read. A hit peeks first, then looks at
/// `draining`: bytes taken after the peek were seen by the peek; bytes
/// taken before it keep `draining` set until handled.
///
/// Not idle (under load the connection carries other reads' answers), a
/// hit [settles](Watch::settle): it waits for a read that *started* after
/// it looked to find nothing, with the socket then found empty by a peek
/// (tokio may answer "nothing" from stale readiness). Every byte there
/// when the hit looked was taken by an earlier read, and the driver reads
/// again only after handling the whole messages it took.
///
/// This rests on how the driver reads (redis-rs 1.8's `PipelineSink` over
/// tokio-util's `Framed`: every whole frame in its buffer is handled, push
/// callbacks inline, before it reads the socket again) and on tokio-rustls
/// returning "nothing" only with no plaintext left; both are pinned in
/// `Cargo.lock`. `tests/it/redis_cache.rs` fails if hits stop waiting for
/// the driver (checked by removing the check).
struct Watch {
    /// A second handle to the socket (dup), non-blocking, for `peek`.
    socket: std::net::TcpStream,
    draining: AtomicBool,
    /// Reads of the socket started so far (each gets the next number).
    started: AtomicU64,
    /// The number of the latest read that found the socket empty.
    drained: AtomicU64,
    drained_now: tokio::sync::Notify,
}

/// How long a hit waits for the driver to settle before reading Redis.
const SETTLE_WITHIN: Duration = Duration::from_millis(50);

impl Watch {
    fn new(socket: std::net::TcpStream) -> Self {
        Watch {
            socket,
            draining: AtomicBool::new(false),
            started: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            drained_now: tokio::sync::Notify::new(),
        }
    }

    fn empty(&self) -> bool {
        matches!(
            self.socket.peek(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    fn idle(&self) -> bool {
        self.empty() && !self.draining.load(Ordering::SeqCst)
    }

    /// Waits until a read started after this call found the socket empty;
    /// `false` if that took longer than [`SETTLE_WITHIN`].
    async fn settle(&self) -> bool {
        let after = self.started.load(Ordering::SeqCst);
        let settled = async {
            loop {
                let drained = self.drained_now.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if self.drained.load(Ordering::SeqCst) > after {
                    return;
                }
                drained.await;
            }
        };
        tokio::time::timeout(SETTLE_WITHIN, settled).await.is_ok()
    }
}

/// The reads' connection's stream, telling its [`Watch`] when the driver
/// reads.
struct Watched<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.watch.started.fetch_add(1, Ordering::SeqCst) + 1;
        self.watch.draining.store(true, Ordering::SeqCst);
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_pending() {
            self.watch.draining.store(false, Ordering::SeqCst);
            if self.watch.empty() {
                self.watch.drained.fetch_max(n, Ordering::SeqCst);
                self.watch.drained_now.notify_waiters();
            }
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Default)]
struct Slot {
    entry: ArcSwapOption<Entry>,
    /// The epoch of the slot's last invalidation: entries read before it
    /// are dead.
    invalidated: AtomicU64,
}

struct Entry {
    key: String,
    value: String,
    /// [`now_ms`] from which the key may be gone.
    expires: u64,
    /// The epoch the read that brought it was sent at.
    read_at: u64,
}

/// When a tracked read was sent: the cache's epoch and the clock.
#[derive(Clone, Copy)]
struct Sent {
    epoch: u64,
    at_ms: u64,
}

/// redis-rs's multiplexed connection over `inner`, watched by `watch`;
/// its driver spawned.
async fn multiplex<S>(
    settings: &redis::RedisConnectionInfo,
    inner: S,
    watch: &Arc<Watch>,
    config: AsyncConnectionConfig,
) -> redis::RedisResult<MultiplexedConnection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stream = Watched {
        inner,
        watch: watch.clone(),
    };
    let (conn, driver) = MultiplexedConnection::new_with_config(settings, stream, config).await?;
    tokio::spawn(driver);
    Ok(conn)
}

/// One connection (standalone: auto-reconnecting; Sentinel: to the
/// master, re-resolved when forgotten; cluster: the cluster connection).
struct Link {
    kind: Kind,
    config: ConnectionManagerConfig,
    /// `Some`: a plain multiplexed connection whose pushes go to the cache.
    pushes_to: Option<Arc<Cache>>,
    /// For the reads' connection to a `rediss://` server.
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: ArcSwapOption<Conn>,
    /// Serialises (re)connecting, so a stampede makes one attempt.
    connecting: Mutex<()>,
    /// Counts [`Link::drop_conn`]s.
    generation: AtomicU64,
    timeout: Duration,
}

impl Link {
    fn new(
        kind: Kind,
        config: ConnectionManagerConfig,
        pushes_to: Option<Arc<Cache>>,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Self {
        Link {
            kind,
            config,
            pushes_to,
            tls,
            conn: ArcSwapOption::empty(),
            connecting: Mutex::new(()),
            generation: AtomicU64::new(0),
            timeout,
        }
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        if let Some(cache) = &self.pushes_to {
            let client = match &self.kind {
                Kind::Single(client) => client.clone(),
                Kind::Sentinel(s) => s.lock().await.async_get_client().await?,
                Kind::Cluster(_) => unreachable!("no tracked reads in a cluster"),
            };
            return self.connect_watched(&client, cache).await.map(Conn::Plain);
        }
        Ok(match &self.kind {
            Kind::Single(client) => Conn::Single(
                ConnectionManager::new_with_config(client.clone(), self.config.clone()).await?,
            ),
            Kind::Sentinel(s) => {
                let client = s.lock().await.async_get_client().await?;
                Conn::Single(ConnectionManager::new_with_config(client, self.config.clone()).await?)
            }
            Kind::Cluster(c) => Conn::Cluster(c.get_async_connection().await?),
        })
    }

    /// The reads' connection: our own socket (so its [`Watch`] can peek at
    /// it), redis-rs's handshake (`HELLO 3`, `AUTH`, `SELECT`) and driver,
    /// whose pushes go to the cache as it reads them.
    async fn connect_watched(
        &self,
        client: &redis::Client,
        cache: &Arc<Cache>,
    ) -> Result<MultiplexedConnection, Failure> {
        let info = client.get_connection_info();
        let (host, port, tls_addr) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host, *port, false),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                ..
            } => (host, *port, true),
            other => {
                return Err(Failure::Untracked(format!(
                    "client-side caching needs a TCP or verified TLS connection, not {other}"
                )));
            }
        };
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        // A second handle to the same socket, for peeking.
        let std = tcp.into_std()?;
        let watch = Arc::new(Watch::new(std.try_clone()?));
        let tcp = tokio::net::TcpStream::from_std(std)?;
        let (pushed, from) = (cache.clone(), watch.clone());
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(move |p: PushInfo| {
                pushed.on_push(&p, &from);
                Ok::<(), std::convert::Infallible>(())
            });
        let settings = info.redis_settings();
        let conn = match (tls_addr, &self.tls) {
            (false, _) => multiplex(settings, tcp, &watch, config).await?,
            // Never plain text to a TLS server (AUTH would go in clear).
            (true, None) => {
                return Err(Failure::Untracked(
                    "no TLS settings for the tracking connection".into(),
                ));
            }
            (true, Some(tls)) => {
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await?;
                multiplex(settings, stream, &watch, config).await?
            }
        };
        // Tracking must work end to end: a proxy in between or a
        // "compatible" server may answer OK and never push. Read a canary
        // key with tracking on, write it, and see its invalidation come
        // (before the answer to the PING after the write, on this
        // connection), or turn the cache off.
        let canary = format!(
            "{}cache-canary:{}",
            cache.prefix,
            crate::crypto::random_token(9)
        );
        cache.canary_seen.store(false, Ordering::SeqCst);
        cache.canary.store(Some(Arc::new(canary.clone())));
        let mut probe = redis::pipe();
        probe.cmd("CLIENT").arg("TRACKING").arg("ON").ignore();
        probe.cmd("GET").arg(&canary).ignore();
        probe
            .cmd("SET")
            .arg(&canary)
            .arg("1")
            .arg("PX")
            .arg(10_000)
            .ignore();
        probe.cmd("PING").ignore();
        let mut c = conn.clone();
        probe.query_async::<()>(&mut c).await?;
        if !cache.canary_seen.load(Ordering::SeqCst) {
            return Err(Failure::Untracked(
                "Redis did not push the invalidation of a tracked key (a proxy in between?)".into(),
            ));
        }
        cache.watch.store(Some(watch));
        Ok(conn)
    }

    /// The connection, connecting first if there is none; `true` when it
    /// was made just now.
    async fn conn(&self) -> Result<(Conn, bool), Failure> {
        if let Some(c) = self.conn.load_full() {
            return Ok(((*c).clone(), false));
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok(((*c).clone(), false));
        }
        for _ in 0..2 {
            let generation = self.generation.load(Ordering::SeqCst);
            let c = tokio::time::timeout(self.timeout, self.connect())
                .await
                .map_err(|_| Failure::Timeout)??;
            if self.generation.load(Ordering::SeqCst) == generation {
                self.conn.store(Some(Arc::new(c.clone())));
                return Ok((c, true));
            }
            // Dropped while we connected (the master moved): this one may
            // lead to the old master. Again.
            if let Some(cache) = &self.pushes_to {
                cache.reset();
            }
        }
        Err(Failure::Timeout)
    }

    /// Drops the connection; one being made meanwhile is not kept.
    fn drop_conn(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.conn.store(None);
    }

    /// After an error that may mean the master moved (Sentinel) or the
    /// connection is dead, the next call connects afresh. `true` when the
    /// connection was dropped.
    fn forget(&self, e: &redis::RedisError) -> bool {
        let moved = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.code() == Some("READONLY");
        let reconnects_itself = matches!(self.kind, Kind::Single(_)) && self.pushes_to.is_none();
        let drop = moved && !reconnects_itself;
        if drop {
            self.drop_conn();
        }
        drop
    }

    /// `op` with one retry after a dropped connection or a demoted master.
    /// `fresh` runs on each connection made meanwhile (before `op`).
    async fn run<T: FromRedisValue + Send>(
        &self,
        op: &Op<'_>,
        fresh: impl Fn(),
    ) -> Result<T, Failure> {
        for attempt in 0..2 {
            let (mut c, new) = self.conn().await?;
            if new {
                fresh();
            }
            // Every connection kind is built with a response timeout of
            // `timeout`: no second timer per command here.
            match op.exec(&mut c).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if self.forget(&e) {
                        fresh();
                    }
                    if attempt == 1
                        || !(e.is_io_error()
                            || e.is_connection_dropped()
                            || e.code() == Some("READONLY"))
                    {
                        return Err(Failure::Redis(e));
                    }
                }
            }
        }
        unreachable!("the second attempt returns")
    }
}

/// Why a [`Link`] failed.
enum Failure {
    Timeout,
    Redis(redis::RedisError),
    /// The tracked reads' connection cannot do its job: nothing to watch
    /// (a Unix socket, unverified TLS), or no invalidation came for the
    /// canary. The cache turns itself off.
    Untracked(String),
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        Failure::Redis(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Redis(e.into())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("connecting timed out"),
            Failure::Redis(e) => e.fmt(f),
            Failure::Untracked(why) => f.write_str(why),
        }
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        unavailable(f)
    }
}

impl Failure {
    /// The server will not do what tracking needs: `CLIENT TRACKING`
    /// denied by an ACL or unknown, or `HELLO 3` (RESP3) unknown (Redis
    /// before 6, some compatible servers). Connection troubles and
    /// passing states (`LOADING`, `READONLY`, ...) are not.
    fn is_refusal(&self) -> bool {
        let e = match self {
            Failure::Untracked(_) => return true,
            Failure::Timeout => return false,
            Failure::Redis(e) => e,
        };
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            return false;
        }
        let text = e.to_string().to_ascii_lowercase();
        e.code() == Some("NOPERM")
            || e.code() == Some("NOPROTO")
            || (e.code() == Some("ERR")
                && (text.contains("unknown")
                    || text.contains("tracking")
                    || text.contains("hello")))
            || text.contains("resp3")
    }
}

/// Session reads with tracking: their own RESP3 connection (pushes need
/// RESP3; the main connection stays as the URL says) and the cache.
struct Reads {
    link: Link,
    cache: Arc<Cache>,
    /// `false` once the server refused `CLIENT TRACKING` (an ACL, an older
    /// or a compatible server): reads then go uncached, as without it.
    on: AtomicBool,
}

impl Reads {
    /// The server refused tracking: off for good, warned once.
    fn turn_off(&self, why: &Failure) {
        if self.on.swap(false, Ordering::SeqCst) {
            self.cache.clear();
            tracing::warn!(
                error = %why,
                "Redis refused client-side caching (CLIENT TRACKING over RESP3): session records are read from Redis on every request"
            );
        }
    }
}

pub struct Redis {
    main: Link,
    reads: Option<Reads>,
    healthy: AtomicBool,
    /// Command latency and failures, for `/metrics`.
    pub stats: crate::metrics::Dependency,
    gets: Gets,
}

fn tls_certs(cfg: &StoreConfig) -> Result<TlsCertificates, String> {
    let root_cert = match &cfg.ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    Ok(TlsCertificates {
        client_tls: None,
        root_cert,
    })
}

fn addr(hostport: &str, tls: bool) -> Result<ConnectionAddr, String> {
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("{hostport}: expected host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("{hostport}: bad port"))?;
    let host = host.trim_matches(['[', ']']).to_string();
    Ok(if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    })
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// How to reach the target; `resp3` for the tracked reads' connection.
fn kind(target: &RedisTarget, cfg: &StoreConfig, resp3: bool) -> Result<Kind, String> {
    Ok(match target {
        RedisTarget::Standalone(url) => {
            let mut info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| e.to_string())?;
            if resp3 {
                let redis = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                info = info.set_redis_settings(redis);
            }
            let client = if url.starts_with("rediss://") {
                redis::Client::build_with_tls(info, tls_certs(cfg)?)
            } else {
                redis::Client::open(info)
            };
            Kind::Single(client.map_err(|e| e.to_string())?)
        }
        RedisTarget::Sentinel {
            sentinels,
            master,
            tls,
            password,
        } => {
            let addrs = sentinels
                .iter()
                .map(|s| addr(s, false))
                .collect::<Result<Vec<_>, _>>()?;
            let mut b =
                SentinelClientBuilder::new(addrs, master.clone(), SentinelServerType::Master)
                    .map_err(|e| e.to_string())?;
            if *tls {
                b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                if cfg.ca_file.is_some() {
                    b = b.set_client_to_redis_certificates(tls_certs(cfg)?);
                }
            }
            if let Some(pw) = password {
                b = b.set_client_to_redis_password(pw);
            }
            if resp3 {
                b = b.set_client_to_redis_protocol(ProtocolVersion::RESP3);
            }
            Kind::Sentinel(Mutex::new(b.build().map_err(|e| e.to_string())?))
        }
        RedisTarget::Cluster {
            nodes,
            tls,
            password,
        } => {
            let scheme = if *tls { "rediss" } else { "redis" };
            let urls: Vec<String> = nodes
                .iter()
                .map(|n| match password {
                    Some(pw) => format!(
                        "{scheme}://:{}@{n}",
                        url::form_urlencoded::byte_serialize(pw.as_bytes()).collect::<String>()
                    ),
                    None => format!("{scheme}://{n}"),
                })
                .collect();
            let mut b = ClusterClientBuilder::new(urls)
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout)
                .retries(2);
            if *tls {
                b = b.certs(tls_certs(cfg)?);
            }
            Kind::Cluster(b.build().map_err(|e| e.to_string())?)
        }
    })
}

impl Redis {
    /// Builds the client; connecting happens on first use (and again after
    /// failures), so Portcullis starts (and answers 503) while Redis is down.
    pub fn new(cfg: &StoreConfig) -> Result<Self, String> {
        let super::Backend::Redis(target) = &cfg.backend else {
            return Err("not a Redis URL".into());
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let reads = match target {
            RedisTarget::Cluster { .. } => None,
            // A Unix socket or unverified TLS: nothing to watch (see `Watch`).
            RedisTarget::Standalone(url)
                if !matches!(
                    url.as_str()
                        .into_connection_info()
                        .map(|i| i.addr().clone()),
                    Ok(ConnectionAddr::Tcp(..)
                        | ConnectionAddr::TcpTls {
                            insecure: false,
                            ..
                        })
                ) =>
            {
                None
            }
            _ if !cfg.client_cache => None,
            _ => {
                let cache = Arc::new(Cache::new(&cfg.key_prefix));
                Some(Reads {
                    link: Link::new(
                        kind(target, cfg, true)?,
                        config.clone(),
                        Some(cache.clone()),
                        Some(Arc::new(crate::tls::client_config(
                            cfg.ca_file.as_deref(),
                            None,
                        )?)),
                        cfg.timeout,
                    ),
                    cache,
                    on: AtomicBool::new(true),
                })
            }
        };
        Ok(Redis {
            main: Link::new(kind(target, cfg, false)?, config, None, None, cfg.timeout),
            reads,
            healthy: AtomicBool::new(false),
            stats: Default::default(),
            gets: Gets::default(),
        })
    }

    async fn run<T: FromRedisValue + Send>(&self, op: &Op<'_>) -> Result<T, StoreError> {
        let started = Instant::now();
        // A master that moved (Sentinel) moved for the reads too: they
        // follow at once, and memory starts over.
        let moved = || {
            if let Some(reads) = &self.reads {
                reads.link.drop_conn();
                reads.cache.reset();
            }
        };
        let result = self.main.run(op, moved).await.map_err(StoreError::from);
        self.stats.record(started, &result);
        result
    }

    pub async fn cmd<T: FromRedisValue + Send>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        self.run(&Op::Cmd(cmd)).await
    }

    /// `GET key`, sent with the reads other requests make at the same
    /// moment: one `MGET`, one round trip (standalone and Sentinel). The
    /// read is sent after the caller asked; it fails closed like
    /// [`Self::cmd`] (the batch's one time limit applies).
    ///
    /// With `store.client_cache`, a record Redis tracks for us is answered
    /// from memory (see [`Cache`]); only session records are read here.
    pub async fn get(self: &Arc<Self>, key: String) -> Result<Option<String>, StoreError> {
        if self.is_cluster() {
            return self.cmd(redis::cmd("GET").arg(key)).await;
        }
        if let Some(reads) = &self.reads
            && let Some(v) = reads.cache.hit(&key).await
        {
            return Ok(Some(v));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.gets.push((key, tx)) {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                let mut running = Running(Some(&me.gets));
                // Let the requests that are ready now join the first batch.
                tokio::task::yield_now().await;
                while let Some(batch) = me.gets.next(&mut running) {
                    me.flush(batch).await;
                }
            });
        }
        rx.await
            .unwrap_or_else(|_| Err(unavailable("the batched read was dropped")))
    }

    /// Sends a batch of reads as one `MGET` and hands each its value.
    /// A key asked for twice (concurrent requests of one session: a page
    /// and its assets) is read once; MGET is atomic, so each asker gets
    /// what it would have got from a key of its own in the same MGET.
    async fn flush(&self, batch: Vec<Read>) {
        let mut cmd = redis::cmd("MGET");
        let mut index: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(batch.len());
        let of: Vec<usize> = batch
            .iter()
            .map(|(key, _)| {
                let next = index.len();
                *index.entry(key.as_str()).or_insert_with(|| {
                    cmd.arg(key);
                    next
                })
            })
            .collect();
        let unique = index.len();
        let mut keys = vec![""; unique];
        for (k, i) in index {
            keys[i] = k;
        }
        let (answer, tracked) = match self.reads.as_ref().filter(|r| r.on.load(Ordering::SeqCst)) {
            Some(reads) => self.tracked_mget(reads, &cmd, &keys).await,
            None => (self.cmd::<Vec<Option<Vec<u8>>>>(&cmd).await, None),
        };
        match answer {
            Ok(values) if values.len() == unique => {
                let values: Vec<Result<Option<String>, StoreError>> = values
                    .into_iter()
                    .map(|v| {
                        v.map(String::from_utf8).transpose().map_err(|_| {
                            StoreError::Corrupt("a session record is not UTF-8".into())
                        })
                    })
                    .collect();
                if let (Some(reads), Some((sent, ttls))) = (&self.reads, tracked) {
                    for ((k, v), ttl) in keys.iter().zip(&values).zip(ttls) {
                        if let Ok(Some(v)) = v {
                            reads.cache.fill(k, v, ttl, sent);
                        }
                    }
                }
                for ((_, waiter), i) in batch.into_iter().zip(of) {
                    let _ = waiter.send(values[i].clone());
                }
            }
            Ok(values) => {
                let why = format!("MGET of {unique} keys answered {}", values.len());
                for (_, waiter) in batch {
                    let _ = waiter.send(Err(StoreError::Corrupt(why.clone())));
                }
            }
            Err(e) => {
                let why = match e {
                    StoreError::Unavailable(m) | StoreError::Corrupt(m) => m,
                };
                for (_, waiter) in batch {
                    let _ = waiter.send(Err(unavailable(&why)));
                }
            }
        }
    }

    /// `CLIENT TRACKING ON`, the `MGET` and each key's `PTTL`, pipelined
    /// on the reads' connection (so tracking is on where the read is
    /// made); with the answer, when it was sent and the TTLs, for filling
    /// the cache. A server that refuses tracking turns it off for good
    /// (warned once) and the read goes out untracked.
    async fn tracked_mget(
        &self,
        reads: &Reads,
        mget: &Cmd,
        keys: &[&str],
    ) -> (
        Result<Vec<Option<Vec<u8>>>, StoreError>,
        Option<(Sent, Vec<i64>)>,
    ) {
        let sent = Sent {
            epoch: reads.cache.epoch.load(Ordering::SeqCst),
            at_ms: now_ms(),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("TRACKING").arg("ON").ignore();
        pipe.add_command(mget.clone());
        for k in keys {
            pipe.cmd("PTTL").arg(*k);
        }
        let started = Instant::now();
        let answer = reads
            .link
            .run::<Vec<Value>>(&Op::Pipe(&pipe), || reads.cache.clear())
            .await
            .map(|answers| {
                // [MGET's array, PTTL, PTTL, ...]
                let mut answers = answers.into_iter();
                let values = answers
                    .next()
                    .and_then(|v| redis::from_redis_value::<Vec<Option<Vec<u8>>>>(v).ok());
                let ttls: Vec<i64> = answers
                    .map_while(|v| redis::from_redis_value::<i64>(v).ok())
                    .collect();
                (values.unwrap_or_default(), ttls)
            });
        match answer {
            Ok((values, ttls)) if ttls.len() == keys.len() => {
                self.stats.record(started, &Ok::<_, ()>(()));
                reads.cache.answered.fetch_max(sent.at_ms, Ordering::SeqCst);
                (Ok(values), Some((sent, ttls)))
            }
            Ok((values, _)) => {
                self.stats.record(started, &Ok::<_, ()>(()));
                (Ok(values), None)
            }
            Err(e) if e.is_refusal() => {
                reads.turn_off(&e);
                (self.cmd(mget).await, None)
            }
            Err(e) => {
                let e = StoreError::from(e);
                self.stats.record(started, &Err::<(), _>(&e));
                // The reads' connection failed, the main one answers pings:
                // read there, uncached (a Redis that is down fails both).
                if self.is_healthy() {
                    return (self.cmd(mget).await, None);
                }
                (Err(e), None)
            }
        }
    }

    /// A command that writes the session record `key`: once it is done,
    /// whatever its outcome, memory no longer answers for `key` (Redis's
    /// own invalidation arrives a moment later).
    pub async fn write<T: FromRedisValue + Send>(
        &self,
        key: &str,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        let done = self.cmd(cmd).await;
        if let Some(reads) = &self.reads {
            reads.cache.invalidate(key);
        }
        done
    }

    /// Session records answered from memory (`/metrics`).
    pub fn cache_hits(&self) -> Option<u64> {
        self.reads
            .as_ref()
            .map(|r| r.cache.hits.load(Ordering::Relaxed))
    }

    pub async fn pipe<T: FromRedisValue + Send>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        self.run(&Op::Pipe(pipe)).await
    }

    /// EVALSHA (loading the script on NOSCRIPT) with `keys` and `args`.
    pub async fn script<T: FromRedisValue + Send>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, StoreError> {
        self.run(&Op::Script(script, keys, args)).await
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.main.kind, Kind::Cluster(_))
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Pings every second; `/readyz` reads the result.
    /// The task ends once the handle is dropped (a config reload).
    pub fn spawn_health(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut was = None;
            loop {
                let Some(me) = weak.upgrade() else { return };
                let ok = me.cmd::<String>(&redis::cmd("PING")).await.is_ok();
                me.healthy.store(ok, Ordering::Relaxed);
                if let Some(reads) = me.reads.as_ref().filter(|r| r.on.load(Ordering::SeqCst)) {
                    // Keeps the cache trusted: pushes come before this answer.
                    let sent = now_ms();
                    match reads
                        .link
                        .run::<String>(&Op::Cmd(&redis::cmd("PING")), || reads.cache.clear())
                        .await
                    {
                        Ok(_) => {
                            reads.cache.answered.fetch_max(sent, Ordering::SeqCst);
                        }
                        Err(e) if e.is_refusal() => reads.turn_off(&e),
                        Err(_) => {}
                    }
                }
                if was != Some(ok) {
                    if ok {
                        tracing::info!("session store reachable");
                    } else {
                        tracing::warn!(
                            "session store unreachable: failing closed (503) until it returns"
                        );
                    }
                    was = Some(ok);
                }
                drop(me);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
