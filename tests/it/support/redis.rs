//! Launchers for real Redis topologies on loopback ports: a standalone
//! server (optionally persistent, password-protected or TLS), a Sentinel
//! set (one master, one replica, three sentinels) and a Cluster (three
//! masters, optionally with one replica each).
//!
//! Every process runs in the foreground from a temp dir, logs to a file
//! there, and is killed (SIGKILL) when its owner is dropped, also while a
//! test unwinds. Every wait is bounded and polls; a failure panics with the
//! logs of the processes involved.
//!
//! The API is blocking (std::process, a tiny RESP client over a plain
//! `TcpStream`). From an async test, call the slow parts (`start`,
//! `wait_failover`, `wait_ok`) through `tokio::task::spawn_blocking` when
//! in-process servers (`Upstream`, a fake IdP) must keep serving meanwhile;
//! every launcher is `Send`.
//!
//! A missing `redis-server` is a failure, not a skip: `tests/run` installs
//! it (Debian package redis-server, which also provides redis-cli).

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port, test_certs};

/// The master name the Sentinel set monitors.
pub const SENTINEL_MASTER: &str = "mymaster";

/// How long one process may take to answer PING after it is spawned.
const READY_WITHIN: Duration = Duration::from_secs(15);
/// Read/write timeout of one RESP connection (`WAIT 1 1000` fits).
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A redis-cli run.
const CLI_WITHIN: Duration = Duration::from_secs(20);
/// Poll interval of every wait.
const POLL: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------------
// Binaries and bounded subprocesses

fn binary(name: &str) -> PathBuf {
    std::iter::once(PathBuf::from("/usr/bin").join(name))
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join(name)),
        )
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run the test suite with `tests/run`, which installs it \
                 (Debian package redis-server)"
            )
        })
}

pub fn redis_server_bin() -> PathBuf {
    binary("redis-server")
}

pub fn redis_cli_bin() -> PathBuf {
    binary("redis-cli")
}

/// The output of a bounded subprocess run.
#[derive(Debug)]
pub struct Ran {
    /// Exited with status 0 (false when killed at the deadline).
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (stdin closed), killing it if it is still running after
/// `within`.
pub fn run_bounded(mut cmd: Command, within: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + within;
    let ok = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    };
    let mut stderr = err.join().unwrap_or_default();
    if !ok && Instant::now() >= deadline {
        stderr += &format!("\n(killed after {within:?})");
    }
    Ran {
        ok,
        stdout: out.join().unwrap_or_default(),
        stderr,
    }
}

/// Polls `check` every few milliseconds until it returns `Some`, for at
/// most `within`; `None` at the deadline.
pub fn poll<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// A tiny RESP2 client

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    /// `None`: the nil bulk string.
    Bulk(Option<String>),
    /// `None`: the nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// As `redis-cli` prints it without a TTY: one line per element,
    /// nested arrays flattened, nil as an empty string.
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) | Reply::Bulk(Some(s)) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(None) | Reply::Array(None) => String::new(),
            Reply::Array(Some(items)) => {
                items.iter().map(Reply::text).collect::<Vec<_>>().join("\n")
            }
        }
    }

    /// The elements of an array reply (empty for anything else).
    pub fn items(&self) -> Vec<Reply> {
        match self {
            Reply::Array(Some(items)) => items.clone(),
            _ => vec![],
        }
    }

    /// A flat `[k1, v1, k2, v2, ...]` array (a `SENTINEL replicas` entry,
    /// `HGETALL`) as pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.items()
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].text(), c[1].text()))
            .collect()
    }

    /// The value of `key` in a flat key/value array.
    pub fn field(&self, key: &str) -> Option<String> {
        self.pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// One connection to a Redis (or Sentinel) on a loopback port.
pub struct RedisConn {
    r: BufReader<TcpStream>,
    port: u16,
}

impl RedisConn {
    /// Connects (1 s) and, with `password`, authenticates.
    pub fn connect(port: u16, password: Option<&str>) -> Result<Self, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut c = RedisConn {
            r: BufReader::new(s),
            port,
        };
        if let Some(p) = password {
            c.cmd(&["AUTH", p])?;
        }
        Ok(c)
    }

    /// Sends one command; an error reply is `Ok(Reply::Error)`, an I/O or
    /// protocol failure is `Err`.
    pub fn query(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        self.r
            .get_mut()
            .write_all(&buf)
            .map_err(|e| format!("127.0.0.1:{} {args:?}: write: {e}", self.port))?;
        read_reply(&mut self.r).map_err(|e| format!("127.0.0.1:{} {args:?}: {e}", self.port))
    }

    /// Sends one command; its reply as [`Reply::text`], or `Err` with the
    /// error reply (or the I/O failure).
    pub fn cmd(&mut self, args: &[&str]) -> Result<String, String> {
        match self.query(args)? {
            Reply::Error(e) => Err(e),
            r => Ok(r.text()),
        }
    }
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .map_err(|e| format!("read: {e}"))?;
    if !line.ends_with(b"\r\n") {
        return Err(format!(
            "connection closed mid-reply: {:?}",
            String::from_utf8_lossy(&line)
        ));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("bad RESP length {s:?}"))
    };
    match line[0] {
        b'+' => Ok(Reply::Status(body)),
        b'-' => Ok(Reply::Error(body)),
        b':' => Ok(Reply::Int(int(&body)?)),
        b'$' => {
            let n = int(&body)?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0; usize::try_from(n).unwrap_or(0) + 2];
            r.read_exact(&mut data)
                .map_err(|e| format!("read bulk: {e}"))?;
            data.truncate(data.len() - 2);
            Ok(Reply::Bulk(Some(
                String::from_utf8_lossy(&data).into_owned(),
            )))
        }
        b'*' => {
            let n = int(&body)?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            (0..n)
                .map(|_| read_reply(r))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Reply::Array(Some(v)))
        }
        other => Err(format!(
            "not RESP2 (first byte {:?}): {:?}",
            other as char,
            String::from_utf8_lossy(&line)
        )),
    }
}

/// One command on a fresh connection to 127.0.0.1:`port` (no password).
pub fn redis_query(port: u16, args: &[&str]) -> Result<Reply, String> {
    RedisConn::connect(port, None)?.query(args)
}

/// One command on a fresh connection; the reply's text, or `Err` with the
/// error reply or the I/O failure.
pub fn redis_cmd(port: u16, args: &[&str]) -> Result<String, String> {
    RedisConn::connect(port, None)?.cmd(args)
}

/// The `key:value` lines of an `INFO` section.
pub fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Every key (sorted) with its type, PTTL and value, one line each; an
/// unknown type shows no value.
fn dump_all_on(c: &mut RedisConn) -> Result<String, String> {
    let mut keys: Vec<String> = c
        .query(&["KEYS", "*"])?
        .items()
        .iter()
        .map(Reply::text)
        .collect();
    keys.sort();
    let mut out = String::new();
    for k in &keys {
        let t = c.cmd(&["TYPE", k])?;
        let ttl = c.cmd(&["PTTL", k])?;
        let value = match t.as_str() {
            "string" => c.query(&["GET", k])?,
            "hash" => c.query(&["HGETALL", k])?,
            "set" => c.query(&["SMEMBERS", k])?,
            "zset" => c.query(&["ZRANGE", k, "0", "-1", "WITHSCORES"])?,
            "list" => c.query(&["LRANGE", k, "0", "-1"])?,
            "stream" => c.query(&["XRANGE", k, "-", "+"])?,
            _ => Reply::Bulk(None),
        };
        let value = match value {
            Reply::Array(Some(items)) => {
                let mut v: Vec<String> = items.iter().map(Reply::text).collect();
                if t == "set" {
                    v.sort();
                }
                format!("{v:?}")
            }
            r => r.text(),
        };
        out += &format!("{k} ({t}, pttl {ttl}): {value}\n");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// One redis-server process

/// How a redis-server process failed to start.
enum StartErr {
    /// A port we picked was taken meanwhile: pick others.
    PortInUse(String),
    Other(String),
}

/// One redis-server (or sentinel) process, restartable with the same
/// arguments and ports.
struct Node {
    what: String,
    child: Option<Child>,
    /// The plain-TCP port: health checks, and what URLs name unless TLS.
    port: u16,
    /// A second port: the cluster bus, or the TLS port.
    extra_port: u16,
    args: Vec<String>,
    dir: PathBuf,
    log: PathBuf,
    password: Option<String>,
}

impl Node {
    /// Starts `redis-server` with `build(dir, port, extra_port)` as its
    /// arguments (it may write files into `dir`, a fresh directory under
    /// `parent`), on two free ports (picked again if taken meanwhile), and
    /// waits until it answers.
    fn launch(
        what: &str,
        parent: &Path,
        password: Option<&str>,
        mut build: impl FnMut(&Path, u16, u16) -> Vec<String>,
    ) -> Node {
        let dir = parent.join(what);
        let mut last = String::new();
        for _ in 0..6 {
            let (port, extra_port) = (free_port(), free_port());
            if port == extra_port {
                continue;
            }
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut n = Node {
                what: what.to_string(),
                child: None,
                port,
                extra_port,
                args: build(&dir, port, extra_port),
                log: dir.join("redis.log"),
                dir: dir.clone(),
                password: password.map(str::to_owned),
            };
            match n.spawn_ready() {
                Ok(()) => return n,
                Err(StartErr::PortInUse(logs)) => last = logs,
                Err(StartErr::Other(why)) => panic!("{why}"),
            }
        }
        panic!("{what}: could not get free ports in 6 attempts:\n{last}");
    }

    fn spawn_ready(&mut self) -> Result<(), StartErr> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(redis_server_bin())
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn redis-server ({}): {e}", self.what));
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let logs = self.logs();
                return Err(if logs.contains("Address already in use") {
                    StartErr::PortInUse(logs)
                } else {
                    StartErr::Other(format!(
                        "{} exited ({status}) at start, args {:?}:\n{logs}",
                        self.what, self.args
                    ))
                });
            }
            // Our own process answering (not another test's on a reused port).
            let mine = self
                .conn()
                .and_then(|mut c| c.cmd(&["INFO", "server"]))
                .is_ok_and(|i| info_field(&i, "process_id") == Some(pid.to_string()));
            if mine {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartErr::Other(format!(
                    "{} did not answer on 127.0.0.1:{} within {READY_WITHIN:?}, args {:?}:\n{}",
                    self.what,
                    self.port,
                    self.args,
                    self.logs()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    fn conn(&self) -> Result<RedisConn, String> {
        RedisConn::connect(self.port, self.password.as_deref())
    }

    /// One command; panics on an I/O failure (not on an error reply).
    fn query(&self, args: &[&str]) -> Reply {
        self.conn()
            .and_then(|mut c| c.query(args))
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", self.what, self.logs()))
    }

    fn logs(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- {} (port {}) ---\n{t}\n", self.what, self.port)
    }

    fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// SIGTERM (an AOF is flushed, a save point saved), then a bounded
    /// wait; SIGKILL after 10 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same command again, on the same ports (stopping it first
    /// if it runs). Retries for a few seconds if a port is still busy.
    fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.spawn_ready() {
                Ok(()) => return,
                Err(StartErr::PortInUse(logs)) if Instant::now() >= deadline => {
                    panic!("{}: port still in use at restart:\n{logs}", self.what)
                }
                Err(StartErr::PortInUse(_)) => std::thread::sleep(Duration::from_millis(200)),
                Err(StartErr::Other(why)) => panic!("restart: {why}"),
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| (*a).to_string()).collect()
}

// ---------------------------------------------------------------------------
// Standalone

/// TLS material for a server (PEM files; copied into its temp dir).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Require client certificates (`tls-auth-clients yes`, Redis's
    /// default). Off: `tls-auth-clients no`.
    pub client_auth: bool,
}

/// Options of a standalone server.
#[derive(Clone, Debug, Default)]
pub struct RedisOpts {
    /// AOF with `appendfsync always` in the temp dir (survives SIGKILL).
    /// Off: `--appendonly no` (and never an RDB: `--save ""` either way).
    pub persistence: bool,
    pub password: Option<String>,
    pub tls: Option<TlsFiles>,
    /// Appended to the command line (`--maxmemory`, `10mb`, ...).
    pub extra_args: Vec<String>,
}

impl RedisOpts {
    pub fn persistent(mut self) -> Self {
        self.persistence = true;
        self
    }
    pub fn password(mut self, p: &str) -> Self {
        self.password = Some(p.into());
        self
    }
    pub fn tls(mut self, cert: &Path, key: &Path, ca: &Path) -> Self {
        self.tls = Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
            client_auth: false,
        });
        self
    }
    /// Require client certificates (after [`RedisOpts::tls`]); the server
    /// certificate has no EKU, so it serves as the client's too.
    pub fn tls_client_auth(mut self) -> Self {
        self.tls.as_mut().expect("RedisOpts::tls first").client_auth = true;
        self
    }
    pub fn args(mut self, a: &[&str]) -> Self {
        self.extra_args.extend(s(a));
        self
    }
}

/// One `redis-server` on loopback.
pub struct RedisServer {
    node: Node,
    /// The port [`RedisServer::url`] names (the TLS port with TLS).
    pub port: u16,
    /// A plain-TCP port for the fixture's own checks (`keys`, `dump_all`,
    /// `cmd`): equal to `port` without TLS; with TLS a second, plaintext
    /// listener (give the product only [`RedisServer::url`]).
    pub admin_port: u16,
    pub opts: RedisOpts,
    /// With TLS: the copied CA, cert and key.
    tls: Option<TlsFiles>,
    dir: TempDir,
}

impl RedisServer {
    pub fn start(opts: RedisOpts) -> Self {
        let dir = TempDir::new("redis");
        // TLS files live with the server, so a restart finds them.
        let tls = opts.tls.as_ref().map(|t| {
            let copy = |from: &Path, name: &str| {
                let to = dir.path().join(name);
                std::fs::copy(from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
                to
            };
            TlsFiles {
                cert: copy(&t.cert, "tls-cert.pem"),
                key: copy(&t.key, "tls-key.pem"),
                ca: copy(&t.ca, "tls-ca.pem"),
                client_auth: t.client_auth,
            }
        });
        let o = opts.clone();
        let t = tls.clone();
        let node = Node::launch(
            "redis",
            dir.path(),
            opts.password.as_deref(),
            |d, port, extra| {
                let mut a = data_node_args(d, port);
                if o.persistence {
                    a.extend(s(&["--appendonly", "yes", "--appendfsync", "always"]));
                }
                if let Some(p) = &o.password {
                    a.extend(["--requirepass".to_string(), p.clone()]);
                }
                if let Some(t) = &t {
                    a.extend([
                        "--tls-port".to_string(),
                        extra.to_string(),
                        "--tls-cert-file".into(),
                        t.cert.display().to_string(),
                        "--tls-key-file".into(),
                        t.key.display().to_string(),
                        "--tls-ca-cert-file".into(),
                        t.ca.display().to_string(),
                        "--tls-auth-clients".into(),
                        if t.client_auth { "yes" } else { "no" }.into(),
                    ]);
                }
                a.extend(o.extra_args.iter().cloned());
                a
            },
        );
        let port = if tls.is_some() {
            node.extra_port
        } else {
            node.port
        };
        RedisServer {
            admin_port: node.port,
            port,
            node,
            opts,
            tls,
            dir,
        }
    }

    /// TLS only for clients: `rediss://` on [`RedisServer::port`], no
    /// client certificate required.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        Self::start(RedisOpts::default().tls(cert, key, ca))
    }

    /// TLS with a fresh throwaway CA and a server certificate for
    /// 127.0.0.1 and localhost (`test_certs`); the CA is
    /// [`RedisServer::ca_file`].
    pub fn start_tls_generated() -> Self {
        let certs = TempDir::new("redis-certs");
        let (ca, cert, key) = test_certs(&certs);
        Self::start_tls(&cert, &key, &ca)
    }

    /// `redis://127.0.0.1:PORT`, `redis://:PASSWORD@...` with a password,
    /// `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let auth = self
            .opts
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA (with TLS) that signed the server certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// The server's working directory (the AOF is under `appendonlydir/`).
    pub fn dir(&self) -> &Path {
        &self.node.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.node.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.node.is_running()
    }

    /// SIGTERM and wait: the AOF is flushed. Without persistence, the
    /// data is gone.
    pub fn stop(&mut self) {
        self.node.stop();
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts again on the same port(s), dir and options (stops it first
    /// if it runs); returns when it answers (its AOF loaded).
    pub fn restart(&mut self) {
        self.node.restart();
    }

    /// One command over RESP on the admin port (authenticated); panics on
    /// an I/O failure, not on an error reply.
    pub fn query(&self, args: &[&str]) -> Reply {
        self.node.query(args)
    }

    /// One command over RESP; the reply's text, or `Err` with the error.
    pub fn cmd(&self, args: &[&str]) -> Result<String, String> {
        self.node.conn()?.cmd(args)
    }

    /// A write as another client (a replica, an operator) makes it, then a
    /// `PING` answered: Redis sends a write's invalidations to tracking
    /// clients (Portcullis's record cache) in the event-loop turn it
    /// answers the write, possibly just after the answer; by the `PING`'s
    /// answer they are in those clients' sockets.
    pub fn change(&self, args: &[&str]) -> String {
        let out = self.cmd(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        self.cmd(&["PING"]).unwrap();
        out
    }

    /// A connection for several commands (`SET` then `WAIT`, `MULTI`...).
    pub fn conn(&self) -> RedisConn {
        self.node.conn().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `redis-cli` against [`RedisServer::url`]'s port (with TLS:
    /// over TLS, verifying against the CA); stdout trimmed, or stderr when
    /// stdout is empty.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut c = Command::new(redis_cli_bin());
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(p) = &self.opts.password {
            c.args(["-a", p, "--no-auth-warning"]);
        }
        if let Some(t) = &self.tls {
            c.arg("--tls").arg("--cacert").arg(&t.ca);
            if t.client_auth {
                c.arg("--cert").arg(&t.cert).arg("--key").arg(&t.key);
            }
        }
        c.args(args);
        cli_output(c)
    }

    /// Every key matching `pattern`, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut k: Vec<String> = self
            .query(&["KEYS", pattern])
            .items()
            .iter()
            .map(Reply::text)
            .collect();
        k.sort();
        k
    }

    /// Every key with its type, PTTL and value, one line each (to assert
    /// that no raw token or session id is stored).
    pub fn dump_all(&self) -> String {
        self.node
            .conn()
            .and_then(|mut c| dump_all_on(&mut c))
            .unwrap_or_else(|e| panic!("dump_all: {e}\n{}", self.logs()))
    }

    pub fn logs(&self) -> String {
        self.node.logs()
    }

    /// The temp dir holding everything (removed on drop).
    pub fn temp_dir(&self) -> &TempDir {
        &self.dir
    }
}

/// The common arguments of a data node: loopback only, in `dir`, no RDB
/// (no save points, so SIGTERM does not write one either), no AOF, and a
/// replica's initial sync without the 5 s diskless delay.
fn data_node_args(dir: &Path, port: u16) -> Vec<String> {
    let mut a = s(&["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    a.extend(["--dir".to_string(), dir.display().to_string()]);
    a.extend(s(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",
        "0",
        "--loglevel",
        "verbose",
    ]));
    a
}

fn cli_output(c: Command) -> String {
    let r = run_bounded(c, CLI_WITHIN);
    let out = r.stdout.trim_end_matches('\n');
    if out.is_empty() {
        r.stderr.trim_end_matches('\n').to_string()
    } else {
        out.to_string()
    }
}

// ---------------------------------------------------------------------------
// Sentinel

/// One master, one replica and three sentinels (quorum 2,
/// down-after 1 s, failover-timeout 5 s), all on loopback.
pub struct RedisSentinel {
    /// Data nodes by port (the master and the replica at start).
    data: Vec<Node>,
    sentinels: Vec<Node>,
    /// The master as the sentinels last agreed on it.
    known_master: u16,
    dir: TempDir,
}

impl RedisSentinel {
    pub fn start() -> Self {
        let dir = TempDir::new("redis-sentinel");
        let master = Node::launch("master", dir.path(), None, |d, p, _| data_node_args(d, p));
        let mp = master.port;
        let replica = Node::launch("replica", dir.path(), None, |d, p, _| {
            let mut a = data_node_args(d, p);
            a.extend(s(&["--replicaof", "127.0.0.1", &mp.to_string()]));
            a
        });
        let rp = replica.port;
        let mut me = RedisSentinel {
            data: vec![master, replica],
            sentinels: vec![],
            known_master: mp,
            dir,
        };
        // The replica in sync before the sentinels start: their first INFO
        // of the master then lists it (the next comes 10 s later).
        me.wait_for("the replica to sync", Duration::from_secs(15), |me| {
            let info = me.data[0].query(&["INFO", "replication"]).text();
            let rinfo = me.data[1].query(&["INFO", "replication"]).text();
            (info_field(&info, "connected_slaves").as_deref() == Some("1")
                && info_field(&info, "slave0").is_some_and(|v| {
                    v.contains(&format!("port={rp},")) && v.contains("state=online")
                })
                && info_field(&rinfo, "master_link_status").as_deref() == Some("up"))
            .then_some(())
        });
        for i in 0..3 {
            let sentinel = Node::launch(&format!("sentinel{i}"), me.dir.path(), None, |d, p, _| {
                let conf = format!(
                    "port {p}\n\
                     bind 127.0.0.1\n\
                     dir {}\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {mp} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
                     sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                    d.display()
                );
                let path = d.join("sentinel.conf");
                std::fs::write(&path, conf).unwrap();
                vec![
                    path.display().to_string(),
                    "--sentinel".into(),
                    "--loglevel".into(),
                    "verbose".into(),
                ]
            });
            me.sentinels.push(sentinel);
        }
        // Each sentinel knows the master, the replica and the two others.
        me.wait_for(
            "the sentinels to know the set",
            Duration::from_secs(20),
            |me| {
                me.sentinels
                    .iter()
                    .all(|s| {
                        let m = s.query(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER]);
                        let replicas = s.query(&["SENTINEL", "replicas", SENTINEL_MASTER]).items();
                        let others = s.query(&["SENTINEL", "sentinels", SENTINEL_MASTER]).items();
                        m.text() == format!("127.0.0.1\n{mp}")
                            && replicas.iter().any(|r| {
                                r.field("port") == Some(rp.to_string())
                                    && r.field("flags").as_deref() == Some("slave")
                                    && r.field("master-link-status").as_deref() == Some("ok")
                            })
                            && others.len() == 2
                    })
                    .then_some(())
            },
        );
        me
    }

    /// Polls `check` until `Some`, panicking with every log after `within`.
    fn wait_for<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&mut Self) -> Option<T>,
    ) -> T {
        let t0 = Instant::now();
        match poll(within, || check(self)) {
            Some(v) => v,
            None => panic!(
                "timed out after {:?} waiting for {what}:\n{}\n{}",
                t0.elapsed(),
                self.state(),
                self.logs()
            ),
        }
    }

    /// What each sentinel reports (for failure messages).
    pub fn state(&self) -> String {
        let mut out = String::new();
        for s in &self.sentinels {
            let m = s
                .conn()
                .and_then(|mut c| c.query(&["SENTINEL", "master", SENTINEL_MASTER]))
                .map(|r| format!("{:?}", r.pairs()))
                .unwrap_or_else(|e| e);
            out += &format!("{} (port {}): {m}\n", s.what, s.port);
        }
        out
    }

    pub fn master_name(&self) -> &'static str {
        SENTINEL_MASTER
    }

    /// `127.0.0.1:P` of each sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster`.
    pub fn sentinel_url(&self) -> String {
        format!(
            "redis+sentinel://{}/{SENTINEL_MASTER}",
            self.sentinel_addrs().join(",")
        )
    }

    /// `redis://127.0.0.1:P` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_addrs()
            .iter()
            .map(|a| format!("redis://{a}"))
            .collect()
    }

    /// The master's port as the first sentinel that answers reports it.
    pub fn master_port(&self) -> u16 {
        if let Some(p) = self.sentinels.iter().find_map(reported_master) {
            return p;
        }
        panic!("no sentinel reports a master:\n{}", self.logs())
    }

    /// `redis://127.0.0.1:P` of the current master.
    pub fn master_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.master_port())
    }

    /// Ports of every data node (master and replicas, dead or alive).
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|n| n.port).collect()
    }

    fn data_node(&self, port: u16) -> &Node {
        self.data
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    fn data_node_mut(&mut self, port: u16) -> &mut Node {
        self.data
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// One command on the data node at `port`; the reply's text or `Err`.
    pub fn cmd(&self, port: u16, args: &[&str]) -> Result<String, String> {
        self.data_node(port).conn()?.cmd(args)
    }

    /// A connection to the data node at `port`.
    pub fn conn(&self, port: u16) -> RedisConn {
        self.data_node(port)
            .conn()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `redis-cli -p PORT args` (a data node or a sentinel).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut c = Command::new(redis_cli_bin());
        c.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        c.args(args);
        cli_output(c)
    }

    /// SIGKILLs the current master (as the sentinels report it); its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        self.data_node_mut(port).kill();
        port
    }

    /// SIGKILLs the data node at `port`.
    pub fn kill_node(&mut self, port: u16) {
        self.data_node_mut(port).kill();
    }

    /// Starts a killed data node again with its first arguments (a killed
    /// master comes back as a master; the sentinels then turn it into a
    /// replica of the new one).
    pub fn restart_node(&mut self, port: u16) {
        self.data_node_mut(port).restart();
    }

    /// Waits until every sentinel reports the same master, other than the
    /// one they agreed on before, and that node answers `ROLE` as a
    /// master. Its port.
    pub fn wait_failover(&mut self, within: Duration) -> u16 {
        let old = self.known_master;
        let new = self.wait_for("a failover", within, |me| {
            let ports: Vec<Option<u16>> = me.sentinels.iter().map(reported_master).collect();
            let first = ports.first().copied().flatten()?;
            if first == old || ports.iter().any(|p| *p != Some(first)) {
                return None;
            }
            let node = me.data.iter().find(|n| n.port == first)?;
            let role = node.conn().and_then(|mut c| c.query(&["ROLE"])).ok()?;
            (role.items().first()?.text() == "master").then_some(first)
        });
        self.known_master = new;
        new
    }

    /// The temp dir holding everything: `master/`, `replica/`,
    /// `sentinel0/sentinel.conf` (rewritten by the sentinel), ...
    pub fn temp_dir(&self) -> &TempDir {
        &self.dir
    }

    /// Every process's log.
    pub fn logs(&self) -> String {
        self.data
            .iter()
            .chain(&self.sentinels)
            .map(Node::logs)
            .collect()
    }
}

/// The master's port as one sentinel reports it (`None` if it does not
/// answer).
fn reported_master(sentinel: &Node) -> Option<u16> {
    let r = sentinel
        .conn()
        .and_then(|mut c| c.query(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER]))
        .ok()?;
    r.items().get(1)?.text().parse().ok()
}

// ---------------------------------------------------------------------------
// Cluster

/// A Redis Cluster on loopback: three masters, or three masters with one
/// replica each. Node timeout 2 s; no persistence.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Ports of nodes killed with [`RedisCluster::kill_node`].
    killed: Vec<u16>,
    dir: TempDir,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub flags: Vec<String>,
    /// The master's id, for a replica.
    pub master: Option<String>,
    pub connected: bool,
    /// Slot ranges (`0-5460`).
    pub slots: Vec<String>,
}

impl ClusterNode {
    pub fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }
    pub fn failed(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }
}

pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            Some(ClusterNode {
                id: f[0].into(),
                port,
                flags: f[2].split(',').map(str::to_owned).collect(),
                master: (f[3] != "-").then(|| f[3].to_string()),
                connected: f[7] == "connected",
                slots: f[8..].iter().map(|s| (*s).to_string()).collect(),
            })
        })
        .collect()
}

impl RedisCluster {
    /// Three masters, no replicas.
    pub fn start() -> Self {
        Self::start_n(3, 0)
    }

    /// Three masters with one replica each (six nodes).
    pub fn start_with_replicas() -> Self {
        Self::start_n(6, 1)
    }

    fn start_n(n: usize, replicas: usize) -> Self {
        let dir = TempDir::new("redis-cluster");
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                Node::launch(&format!("node{i}"), dir.path(), None, |d, p, bus| {
                    let mut a = data_node_args(d, p);
                    a.extend([
                        "--cluster-enabled".to_string(),
                        "yes".into(),
                        "--cluster-port".into(),
                        bus.to_string(),
                        "--cluster-config-file".into(),
                        d.join("nodes.conf").display().to_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ]);
                    a
                })
            })
            .collect();
        let me = RedisCluster {
            nodes,
            killed: vec![],
            dir,
        };
        let mut c = Command::new(redis_cli_bin());
        c.arg("--cluster").arg("create");
        c.args(me.addrs());
        c.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let r = run_bounded(c, Duration::from_secs(30));
        assert!(
            r.ok,
            "redis-cli --cluster create failed:\n{}\n{}\n{}",
            r.stdout,
            r.stderr,
            me.logs()
        );
        me.wait_ok(Duration::from_secs(20));
        // Every node sees the same shape: `masters` masters holding slots,
        // the rest replicas, every link up, each replica in sync.
        let masters = n / (1 + replicas);
        let t0 = Instant::now();
        let settled = poll(Duration::from_secs(15), || {
            me.nodes
                .iter()
                .all(|node| {
                    let view = parse_cluster_nodes(&node.query(&["CLUSTER", "NODES"]).text());
                    let info = node.query(&["INFO", "replication"]).text();
                    view.len() == n
                        && view.iter().all(|v| v.connected && !v.failed())
                        && view
                            .iter()
                            .filter(|v| v.is_master() && !v.slots.is_empty())
                            .count()
                            == masters
                        && view.iter().filter(|v| v.master.is_some()).count() == n - masters
                        && (info_field(&info, "role").as_deref() == Some("master")
                            || info_field(&info, "master_link_status").as_deref() == Some("up"))
                })
                .then_some(())
        });
        assert!(
            settled.is_some(),
            "cluster not settled after {:?}:\n{}\n{}",
            t0.elapsed(),
            me.nodes[0].query(&["CLUSTER", "NODES"]).text(),
            me.logs()
        );
        me
    }

    /// Every node's port (dead or alive), in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `127.0.0.1:P` of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// `redis://127.0.0.1:P` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.addrs()
            .iter()
            .map(|a| format!("redis://{a}"))
            .collect()
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// `CLUSTER NODES` as the first live node sees it.
    pub fn cluster_nodes(&self) -> Vec<ClusterNode> {
        let n = self.live().next().expect("no live cluster node");
        parse_cluster_nodes(&n.query(&["CLUSTER", "NODES"]).text())
    }

    /// Ports of the masters that are not failed.
    pub fn master_ports(&self) -> Vec<u16> {
        self.cluster_nodes()
            .iter()
            .filter(|n| n.is_master() && !n.failed())
            .map(|n| n.port)
            .collect()
    }

    /// Ports of the replicas that are not failed.
    pub fn replica_ports(&self) -> Vec<u16> {
        self.cluster_nodes()
            .iter()
            .filter(|n| !n.is_master() && !n.failed())
            .map(|n| n.port)
            .collect()
    }

    /// One command on the node at `port` (no redirect following).
    pub fn cmd(&self, port: u16, args: &[&str]) -> Result<String, String> {
        self.node(port).conn()?.cmd(args)
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// `redis-cli -c` (following redirects) against the first live node.
    pub fn cli(&self, args: &[&str]) -> String {
        let n = self.live().next().expect("no live cluster node");
        let mut c = Command::new(redis_cli_bin());
        c.args(["-c", "-h", "127.0.0.1", "-p", &n.port.to_string()]);
        c.args(args);
        cli_output(c)
    }

    /// Every key matching `pattern` on every live master, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut k: Vec<String> = self
            .master_ports()
            .iter()
            .flat_map(|p| self.node(*p).query(&["KEYS", pattern]).items())
            .map(|r| r.text())
            .collect();
        k.sort();
        k
    }

    /// As [`RedisServer::dump_all`], over every live master.
    pub fn dump_all(&self) -> String {
        let mut lines: Vec<String> = self
            .master_ports()
            .iter()
            .flat_map(|p| {
                let n = self.node(*p);
                n.conn()
                    .and_then(|mut c| dump_all_on(&mut c))
                    .unwrap_or_else(|e| panic!("dump_all: {e}"))
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        lines.sort();
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// SIGKILLs the node at `port`.
    pub fn kill_node(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
            .kill();
        self.killed.push(port);
    }

    /// Waits until every live node says `cluster_state:ok` and flags every
    /// killed node as failed (so, after killing a master, its replica has
    /// taken over its slots).
    pub fn wait_ok(&self, within: Duration) {
        let t0 = Instant::now();
        let ok = poll(within, || {
            self.live()
                .all(|n| {
                    let Ok(mut c) = n.conn() else { return false };
                    let info = c.cmd(&["CLUSTER", "INFO"]).unwrap_or_default();
                    let nodes =
                        parse_cluster_nodes(&c.cmd(&["CLUSTER", "NODES"]).unwrap_or_default());
                    info_field(&info, "cluster_state").as_deref() == Some("ok")
                        && self.killed.iter().all(|k| {
                            nodes
                                .iter()
                                .any(|c| c.port == *k && c.flags.iter().any(|f| f == "fail"))
                        })
                })
                .then_some(())
        });
        if ok.is_none() {
            let states: String = self
                .live()
                .map(|n| format!("{}: {}\n", n.what, n.query(&["CLUSTER", "NODES"]).text()))
                .collect();
            panic!(
                "cluster not ok after {:?}:\n{states}\n{}",
                t0.elapsed(),
                self.logs()
            );
        }
    }

    pub fn logs(&self) -> String {
        self.nodes.iter().map(Node::logs).collect()
    }

    pub fn temp_dir(&self) -> &TempDir {
        &self.dir
    }
}
