//! Test support: the real `portcullis` binary on a free loopback port, a
//! recording upstream, a cookie-keeping HTTP client with redirects off,
//! and launchers for the real nginx, Caddy, Node and Chromium.

#![allow(dead_code)]

pub mod edge;
pub mod fake_idp;
pub mod fake_oauth;
pub mod idp;
pub mod redis;
pub mod sql;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub const SECRET: &str = "it-secret-0123456789-abcdefghij-KLMNOP";
pub const OLD_SECRET: &str = "it-old-secret-9876543210-zyxwvutsrq-P";
pub const PASSWORD: &str = "correct horse battery staple";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of `target/pyenv` (tests/run installs tests/requirements.txt
/// there: aiosmtpd, PyJWT, biscuit-python, the Helm engine), or `IT_PYTHON`
/// (a worktree with its own target dir). Not `PORTCULLIS_*`: the binary
/// reads those as config.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("IT_PYTHON") {
        return p.into();
    }
    let venv = repo_root().join("target/pyenv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run tests/run once (it installs tests/requirements.txt)",
        venv.display()
    );
    venv
}

/// Sends the test upstream's `/echo-upgrade` request (`Upgrade: echo`)
/// on a raw connection with `cookie`; the response head that came back.
pub async fn send_echo_upgrade(s: &mut tokio::net::TcpStream, cookie: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET /echo-upgrade HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\nCookie: {cookie}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// A port that was free a moment ago. Chosen below the kernel's
/// ephemeral range, so no outgoing connection (of this or a parallel
/// test) can take it between now and the bind of whoever gets it; the
/// start point is random so parallel test processes rarely try the same.
pub fn free_port() -> u16 {
    static N: AtomicUsize = AtomicUsize::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if low > 12_000 {
        let span = (low - 10_000) as usize;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize);
        let seed = nanos ^ (std::process::id() as usize).wrapping_mul(2_654_435_761);
        let start = seed.wrapping_add(N.fetch_add(7919, Ordering::Relaxed));
        for i in 0..200 {
            let port = 10_000 + (start.wrapping_add(i * 104_729) % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "portcullis-it-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One argon2id hash of [`PASSWORD`], computed once per test binary.
pub fn password_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| portcullis::providers::credentials::hash_password(PASSWORD).unwrap())
}

/// A test user: e-mail, name, groups (password is [`PASSWORD`]).
pub struct TestUser(
    pub &'static str,
    pub &'static str,
    pub &'static [&'static str],
);

pub const ALICE: TestUser = TestUser("alice@example.com", "Alice Liddell", &["admins", "staff"]);
pub const BOB: TestUser = TestUser("bob@other.org", "Bob", &["staff"]);

/// A config, rendered to YAML. `extra` holds whole top-level blocks.
pub struct Conf {
    pub public_url: Option<String>,
    pub upstream: Option<String>,
    pub upstream_ca: Option<PathBuf>,
    /// mTLS: the certificate and key Portcullis presents to the upstream.
    pub upstream_identity: Option<(PathBuf, PathBuf)>,
    pub secrets: Vec<String>,
    pub users: Vec<TestUser>,
    /// More entries of `providers:`, as YAML list items.
    pub providers: Vec<String>,
    pub extra: Vec<String>,
}

impl Default for Conf {
    fn default() -> Self {
        Conf {
            public_url: None,
            upstream: None,
            upstream_ca: None,
            upstream_identity: None,
            secrets: vec![SECRET.into()],
            users: vec![ALICE, BOB],
            providers: vec![],
            extra: vec![],
        }
    }
}

impl Conf {
    pub fn upstream(mut self, url: &str) -> Self {
        self.upstream = Some(url.into());
        self
    }
    pub fn provider(mut self, item: &str) -> Self {
        self.providers.push(item.into());
        self
    }
    pub fn upstream_identity(mut self, cert: &Path, key: &Path) -> Self {
        self.upstream_identity = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }
    pub fn upstream_ca(mut self, ca: &Path) -> Self {
        self.upstream_ca = Some(ca.to_path_buf());
        self
    }
    pub fn extra(mut self, block: &str) -> Self {
        self.extra.push(block.into());
        self
    }
    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.into());
        self
    }
    pub fn secrets(mut self, s: &[&str]) -> Self {
        self.secrets = s.iter().map(|s| (*s).into()).collect();
        self
    }

    fn render(&self, port: u16, users_file: &Path) -> String {
        let mut y = format!("listen: 127.0.0.1:{port}\n");
        let public = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
        y += &format!(
            "public_url: {}\n",
            public.replace("{port}", &port.to_string())
        );
        y += &format!("secrets: [{}]\n", self.secrets.join(", "));
        if let Some(u) = &self.upstream {
            y += &format!("upstream:\n  url: {u}\n  timeout: 3s\n  connect_timeout: 1s\n");
            if let Some((c, k)) = &self.upstream_identity {
                y += &format!(
                    "  client_cert_file: {}\n  client_key_file: {}\n",
                    c.display(),
                    k.display()
                );
            }
            if let Some(ca) = &self.upstream_ca {
                y += &format!("  ca_file: {}\n", ca.display());
            }
        }
        y += "providers:\n";
        // No users: no credentials provider (only the listed ones).
        if !self.users.is_empty() {
            y += &format!(
                "  - type: credentials\n    name: Test users\n    users_file: {}\n",
                users_file.display()
            );
        }
        for p in &self.providers {
            y += p.replace("{port}", &port.to_string()).as_str();
            if !p.ends_with('\n') {
                y.push('\n');
            }
        }
        if !self.extra.iter().any(|e| e.starts_with("log:")) {
            y += "log:\n  level: debug\n";
        }
        for e in &self.extra {
            y += e.replace("{port}", &port.to_string()).as_str();
            if !e.ends_with('\n') {
                y.push('\n');
            }
        }
        y
    }
}

pub fn users_file_yaml(users: &[TestUser]) -> String {
    let mut y = String::from("users:\n");
    for u in users {
        y += &format!(
            "  - email: {}\n    name: {}\n    groups: [{}]\n    password_hash: \"{}\"\n",
            u.0,
            u.1,
            u.2.join(", "),
            password_hash()
        );
    }
    y
}

/// The real binary, running.
pub struct Portcullis {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
    logs: Arc<Mutex<String>>,
}

impl Portcullis {
    pub async fn start(conf: Conf) -> Self {
        Self::start_env(conf, &[]).await
    }

    /// On a free port; should another process take that port before we
    /// bind it, again on another (bounded).
    pub async fn start_env(conf: Conf, env: &[(&str, &str)]) -> Self {
        for _ in 0..4 {
            match Self::try_start_at(&conf, env, free_port()).await {
                Ok(pc) => return pc,
                Err(logs) if logs.contains("Address already in use") => continue,
                Err(logs) => panic!("portcullis did not start:\n{logs}"),
            }
        }
        panic!("portcullis found no free port in 4 tries");
    }

    /// On a port chosen beforehand (when another party must know our URL first).
    pub async fn start_at(conf: Conf, env: &[(&str, &str)], port: u16) -> Self {
        Self::try_start_at(&conf, env, port)
            .await
            .unwrap_or_else(|logs| panic!("portcullis did not start:\n{logs}"))
    }

    async fn try_start_at(conf: &Conf, env: &[(&str, &str)], port: u16) -> Result<Self, String> {
        let dir = TempDir::new("pc");
        let users = dir.write("users.yaml", &users_file_yaml(&conf.users));
        let cfg = dir.write("portcullis.yaml", &conf.render(port, &users));
        let args = ["serve", "--config", cfg.to_str().unwrap()];
        Self::try_spawn(&args, env, dir, port).await
    }

    /// Starts the binary with `args`; waits for its "listening" line.
    pub async fn spawn(args: &[&str], env: &[(&str, &str)], dir: TempDir, port: u16) -> Self {
        Self::try_spawn(args, env, dir, port)
            .await
            .unwrap_or_else(|logs| panic!("portcullis did not start:\n{logs}"))
    }

    /// Like [`Self::spawn`]; a start that fails gives its log.
    pub async fn try_spawn(
        args: &[&str],
        env: &[(&str, &str)],
        dir: TempDir,
        port: u16,
    ) -> Result<Self, String> {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("PORTCULLIS_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn portcullis");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on http") {
                    let _ = tx.send(line.clone());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap();
        if ready.is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(logs.lock().unwrap().clone());
        }
        Ok(Portcullis {
            child,
            port,
            dir,
            logs,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (bounded, 10 s) until `/readyz` answers `want`.
    pub async fn wait_readyz(&self, want: StatusCode) {
        let mut b = Browser::api();
        for _ in 0..200 {
            if b.get(&self.url("/readyz")).await.status == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/readyz never became {want}:\n{}", self.logs());
    }

    /// Whether the log shows `needle` within 5 s (lines arrive through a
    /// pipe, a little after the response).
    pub async fn log_shows(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits (bounded) for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The TCP peer: the same for requests on one pooled connection.
    pub peer: SocketAddr,
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.get_all(name).iter().count()
    }
}

/// An upstream app that records every request. Paths: `/slow` answers
/// after 1.5 s, `/echo-upgrade` switches protocols and echoes bytes,
/// anything else answers `200 upstream ok`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// The same upstream behind TLS with `cert`/`key` (PEM files).
    pub async fn start_tls(cert: &Path, key: &Path) -> Self {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::start_inner(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    /// Behind TLS that requires a client certificate signed by `client_ca`.
    pub async fn start_mtls(cert: &Path, key: &Path, client_ca: &Path) -> Self {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(client_ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        Self::start_inner(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let rec = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let rec = rec.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle_upstream(req, peer, rec.clone()));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = http
                                    .serve_connection(TokioIo::new(s), svc)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                        None => {
                            let _ = http
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        Upstream { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn last(&self) -> Recorded {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

async fn handle_upstream(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    rec: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    if path == "/echo-upgrade" {
        let on = hyper::upgrade::on(&mut req);
        rec.lock().unwrap().push(Recorded {
            peer,
            method: req.method().clone(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
            body: Bytes::new(),
        });
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", HeaderValue::from_static("upgrade"));
        r.headers_mut()
            .insert("upgrade", HeaderValue::from_static("echo"));
        return Ok(r);
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let len = body.len();
    rec.lock().unwrap().push(Recorded {
        peer,
        method: parts.method,
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    if path == "/hang" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let mut r = Response::new(Full::new(Bytes::from(format!("upstream ok {len}"))));
    r.headers_mut()
        .insert("x-upstream", HeaderValue::from_static("yes"));
    r.headers_mut()
        .insert("keep-alive", HeaderValue::from_static("timeout=5"));
    if path == "/set-cookies" {
        // A (compromised) app trying to plant or clear Portcullis's cookies.
        for c in [
            "authjs.session-token=planted; Path=/",
            "authjs.csrf-token=x; Path=/",
            "app_theme=dark; Path=/",
        ] {
            r.headers_mut()
                .append("set-cookie", HeaderValue::from_static(c));
        }
    }
    Ok(r)
}

/// A response, body read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn location(&self) -> &str {
        self.header("location").unwrap_or("")
    }
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
    /// The `Set-Cookie` line for `name` (exact name).
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.split('=').next() == Some(name))
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// The `value` of the hidden input `name` on a page.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(html_unescape(&self.body[start..end]))
    }
}

pub fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// An HTTP client that keeps cookies and never follows redirects. Like a
/// browser, it sends a cookie set with a `Path` other than `/` only to
/// that path and below (RFC 6265 §5.1.4); cookies put in `jar` by hand go
/// everywhere.
pub struct Browser {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    pub jar: BTreeMap<String, String>,
    /// The `Path` of jar cookies set with one other than `/`.
    pub paths: BTreeMap<String, String>,
    /// Sent as `Accept` unless a request sets its own.
    pub accept: &'static str,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            client: HyperClient::builder(TokioExecutor::new()).build_http(),
            jar: BTreeMap::new(),
            paths: BTreeMap::new(),
            accept: "text/html,application/xhtml+xml,*/*;q=0.8",
        }
    }

    /// An API client: `Accept: application/json`.
    pub fn api() -> Self {
        Browser {
            accept: "application/json",
            ..Self::new()
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookie_header_for("/")
    }

    /// The `Cookie` header a request to `path` carries: the jar's cookies
    /// whose `Path` matches it.
    pub fn cookie_header_for(&self, path: &str) -> String {
        self.jar
            .iter()
            .filter(|(k, _)| self.paths.get(*k).is_none_or(|p| path_matches(path, p)))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn request(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(url);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            b = b.header("accept", self.accept);
        }
        let path = url::Url::parse(url)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| "/".into());
        let cookie = self.cookie_header_for(&path);
        if !cookie.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        {
            b = b.header("cookie", cookie);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (ctype, bytes) = body.unwrap_or(("", Vec::new()));
        if !ctype.is_empty() {
            b = b.header("content-type", ctype);
        }
        let req = b.body(Full::new(Bytes::from(bytes))).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        for sc in headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let pair = sc.split(';').next().unwrap_or("");
            if let Some((n, v)) = pair.split_once('=') {
                let cleared = sc.contains("Max-Age=0") || v.is_empty();
                let n = n.trim();
                if cleared {
                    self.jar.remove(n);
                    self.paths.remove(n);
                } else {
                    self.jar.insert(n.into(), v.into());
                    match cookie_path(sc) {
                        Some(p) if p != "/" => self.paths.insert(n.into(), p.into()),
                        _ => self.paths.remove(n),
                    };
                }
            }
        }
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Resp {
        self.request(Method::GET, url, &[], None).await
    }

    /// GETs `url` until it answers `want`: at most `tries` times, `pause`
    /// apart (a recovery, a failover). Whether it did.
    pub async fn get_until(
        &mut self,
        url: &str,
        want: StatusCode,
        tries: u32,
        pause: Duration,
    ) -> bool {
        for _ in 0..tries {
            if self.get(url).await.status == want {
                return true;
            }
            tokio::time::sleep(pause).await;
        }
        false
    }

    pub async fn get_with(&mut self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, url, headers, None).await
    }

    pub async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Resp {
        self.post_form_with(url, fields, &[]).await
    }

    pub async fn post_form_with(
        &mut self,
        url: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.request(
            Method::POST,
            url,
            headers,
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
        .await
    }

    /// Loads the sign-in page at `origin` and posts the credentials form.
    pub async fn sign_in(
        &mut self,
        origin: &str,
        email: &str,
        password: &str,
        callback: &str,
    ) -> Resp {
        self.sign_in_at(origin, "/auth", email, password, callback)
            .await
    }

    pub async fn sign_in_at(
        &mut self,
        origin: &str,
        base: &str,
        email: &str,
        password: &str,
        callback: &str,
    ) -> Resp {
        let enc: String = url::form_urlencoded::byte_serialize(callback.as_bytes()).collect();
        let page = self
            .get(&format!("{origin}{base}/signin?callbackUrl={enc}"))
            .await;
        assert_eq!(page.status, StatusCode::OK, "sign-in page: {}", page.body);
        let csrf = page
            .hidden("csrfToken")
            .expect("csrfToken on the sign-in page");
        let cb = page
            .hidden("callbackUrl")
            .expect("callbackUrl on the sign-in page");
        self.post_form(
            &format!("{origin}{base}/callback/credentials"),
            &[
                ("csrfToken", &csrf),
                ("callbackUrl", &cb),
                ("email", email),
                ("password", password),
            ],
        )
        .await
    }

    /// Whether the jar holds a session cookie (whole or chunked).
    pub fn has_session(&self) -> bool {
        self.jar.keys().any(|k| k.contains("session-token"))
    }
}

/// The `Path` attribute of a `Set-Cookie` line.
pub fn cookie_path(set_cookie: &str) -> Option<&str> {
    set_cookie.split(';').skip(1).find_map(|a| {
        let (k, v) = a.split_once('=')?;
        k.trim().eq_ignore_ascii_case("path").then(|| v.trim())
    })
}

/// RFC 6265 §5.1.4: whether a request to `path` gets a cookie of `cookie_path`.
pub fn path_matches(path: &str, cookie_path: &str) -> bool {
    path == cookie_path
        || (path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || path[cookie_path.len()..].starts_with('/')))
}

/// Runs a Node fixture script with `input` on stdin; (exit code, stdout, stderr).
pub fn node(script: &Path, args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every line of the shared open-redirect corpus.
pub fn open_redirect_corpus() -> Vec<String> {
    let candidates = [
        repo_root().join("tests/data/open-redirects.txt"),
        repo_root().join("../shared/testdata/open-redirects.txt"),
    ];
    let path = candidates
        .iter()
        .find(|p| p.exists())
        .expect("open-redirects.txt (shared/testdata or tests/data)");
    std::fs::read_to_string(path)
        .unwrap()
        .split('\n')
        .map(str::to_owned)
        .collect()
}

/// A throwaway CA and a server certificate for `localhost` and 127.0.0.1,
/// made with the openssl CLI: (ca.pem, server.pem, server.key).
pub fn test_certs(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("the openssl CLI (tests/run installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=portcullis-it-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    dir.write("san.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (d.join("ca.pem"), d.join("server.pem"), d.join("server.key"))
}
