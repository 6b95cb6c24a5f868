//! One Redis handle for every topology: a multiplexed, auto-reconnecting
//! connection (standalone), the same to the master a Sentinel names
//! (re-resolved after a failover), or a cluster connection. Every command
//! has a time limit; any failure is `StoreError::Unavailable` (the caller
//! fails closed). A background ping keeps `/readyz` honest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, FromRedisValue, Pipeline, RedisFuture, Script, TlsCertificates, Value,
};
use tokio::sync::Mutex;

use super::{RedisTarget, StoreConfig, StoreError};

/// A live connection of either kind; cheap to clone (both multiplex).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
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
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
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

pub struct Redis {
    kind: Kind,
    conn: ArcSwapOption<Conn>,
    /// Serialises (re)connecting, so a stampede makes one attempt.
    connecting: Mutex<()>,
    timeout: Duration,
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

impl Redis {
    /// Builds the client; connecting happens on first use (and again after
    /// failures), so Portcullis starts (and answers 503) while Redis is down.
    pub fn new(cfg: &StoreConfig) -> Result<Self, String> {
        let super::Backend::Redis(target) = &cfg.backend else {
            return Err("not a Redis URL".into());
        };
        let kind = match target {
            RedisTarget::Standalone(url) => {
                let client = if url.starts_with("rediss://") {
                    redis::Client::build_with_tls(url.as_str(), tls_certs(cfg)?)
                } else {
                    redis::Client::open(url.as_str())
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
        };
        Ok(Redis {
            kind,
            conn: ArcSwapOption::empty(),
            connecting: Mutex::new(()),
            timeout: cfg.timeout,
            healthy: AtomicBool::new(false),
            stats: Default::default(),
            gets: Gets::default(),
        })
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1))
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        match &self.kind {
            Kind::Single(client) => {
                ConnectionManager::new_with_config(client.clone(), self.manager_config())
                    .await
                    .map(Conn::Single)
                    .map_err(unavailable)
            }
            Kind::Sentinel(s) => {
                let client = s
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(unavailable)?;
                ConnectionManager::new_with_config(client, self.manager_config())
                    .await
                    .map(Conn::Single)
                    .map_err(unavailable)
            }
            Kind::Cluster(c) => c
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(unavailable),
        }
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let c = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| unavailable("connecting timed out"))??;
        self.conn.store(Some(Arc::new(c.clone())));
        Ok(c)
    }

    /// After an error that may mean the master moved (Sentinel) or the
    /// connection is dead, the next call connects afresh.
    fn forget(&self, e: &redis::RedisError) {
        let moved = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.code() == Some("READONLY");
        if moved && !matches!(self.kind, Kind::Single(_)) {
            self.conn.store(None);
        }
    }

    async fn run<T: FromRedisValue + Send>(&self, op: &Op<'_>) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = self.run_once(op).await;
        self.stats.record(started, &result);
        result
    }

    async fn run_once<T: FromRedisValue + Send>(&self, op: &Op<'_>) -> Result<T, StoreError> {
        for attempt in 0..2 {
            let mut c = self.conn().await?;
            // Every connection kind is built with a response timeout of
            // `timeout`: no second timer per command here.
            match op.exec(&mut c).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.forget(&e);
                    if attempt == 1
                        || !(e.is_io_error()
                            || e.is_connection_dropped()
                            || e.code() == Some("READONLY"))
                    {
                        return Err(unavailable(e));
                    }
                }
            }
        }
        Err(unavailable("retries exhausted"))
    }

    pub async fn cmd<T: FromRedisValue + Send>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        self.run(&Op::Cmd(cmd)).await
    }

    /// `GET key`, sent with the reads other requests make at the same
    /// moment: one `MGET`, one round trip (standalone and Sentinel). The
    /// read is sent after the caller asked; it fails closed like
    /// [`Self::cmd`] (the batch's one time limit applies).
    pub async fn get(self: &Arc<Self>, key: String) -> Result<Option<String>, StoreError> {
        if self.is_cluster() {
            return self.cmd(redis::cmd("GET").arg(key)).await;
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
        drop(index);
        match self.cmd::<Vec<Option<Vec<u8>>>>(&cmd).await {
            Ok(values) if values.len() == unique => {
                let values: Vec<Result<Option<String>, StoreError>> = values
                    .into_iter()
                    .map(|v| {
                        v.map(String::from_utf8).transpose().map_err(|_| {
                            StoreError::Corrupt("a session record is not UTF-8".into())
                        })
                    })
                    .collect();
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
        matches!(self.kind, Kind::Cluster(_))
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
