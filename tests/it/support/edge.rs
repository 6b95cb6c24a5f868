//! Launchers for the real edge proxies (nginx, Caddy), run in the
//! foreground from a temp dir on a loopback port, stopped on drop; and the
//! `deploy/` snippets they run, placeholders filled in.
//!
//! A missing binary is a failure, not a skip: `tests/run` installs them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port, repo_root};

/// A `deploy/` file as the repository holds it.
pub fn deploy_file(rel: &str) -> String {
    let p = repo_root().join("deploy").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `text` with each `{{NAME}}` of `vars` replaced.
pub fn fill(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

/// Panics if a `{{NAME}}` is left, so a snippet's new placeholder cannot
/// go untested.
fn assert_filled(text: &str) {
    if let Some(at) = text.find("{{") {
        let end = text[at..].find("}}").map_or(text.len(), |e| at + e + 2);
        panic!("placeholder {} is not filled in", &text[at..end]);
    }
}

/// The path of a system binary, or a panic saying how to get it.
fn binary(name: &str, candidates: &[&str], package: &str) -> PathBuf {
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join(name)),
        )
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: run the test suite with `tests/run`, which installs it \
             (Debian package {package})"
        )
    })
}

/// A child process serving on a loopback port, with its log in a file.
struct Served {
    child: Child,
    port: u16,
    dir: TempDir,
    log: PathBuf,
    what: &'static str,
}

impl Served {
    fn spawn(mut cmd: Command, port: u16, dir: TempDir, log: PathBuf, what: &'static str) -> Self {
        let out = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Served {
            child,
            port,
            dir,
            log,
            what,
        }
    }

    /// Everything the process logged.
    fn logs(&self) -> String {
        let mut s = String::new();
        for f in [self.dir.path().join("stdout.log"), self.log.clone()] {
            if let Ok(t) = std::fs::read_to_string(&f) {
                s += &format!("--- {} ---\n{t}\n", f.display());
            }
        }
        s
    }

    /// Waits (bounded) until the port accepts connections.
    async fn ready(mut self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) at start:\n{}", self.what, self.logs());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return self;
            }
            // (Dropped while unwinding: the process is stopped.)
            assert!(
                Instant::now() < deadline,
                "{} did not listen within 10 s:\n{}",
                self.what,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers (a SIGKILL
        // would orphan them, still holding the port).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real nginx, serving one site (an http-context snippet).
pub struct Nginx {
    served: Served,
    pub port: u16,
}

impl Nginx {
    /// Runs `site` (http-context text; `{{LISTEN}}` is filled with the
    /// port) on a free port.
    pub async fn start(site: &str) -> Self {
        Self::start_on(free_port(), site).await
    }

    /// As [`Nginx::start`], on `port` (chosen beforehand, so that other
    /// configs can name this origin).
    pub async fn start_on(port: u16, site: &str) -> Self {
        let bin = binary("nginx", &["/usr/sbin/nginx"], "nginx-light");
        let dir = TempDir::new("nginx");
        let d = dir.path().display().to_string();
        let site = fill(site, &[("LISTEN", &format!("127.0.0.1:{port}"))]);
        assert_filled(&site);
        let site_path = dir.write("site.conf", &site);
        let conf = format!(
            "worker_processes 1;\n\
             daemon off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   include {};\n\
             }}\n",
            site_path.display()
        );
        let conf_path = dir.write("nginx.conf", &conf);
        let log = dir.path().join("error.log");
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(format!("{d}/"))
            .arg("-e")
            .arg(&log)
            .arg("-c")
            .arg(&conf_path);
        let served = Served::spawn(cmd, port, dir, log, "nginx").ready().await;
        Nginx { served, port }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// The error log (and anything nginx printed).
    pub fn logs(&self) -> String {
        self.served.logs()
    }

    pub fn dir(&self) -> &Path {
        self.served.dir.path()
    }
}

/// The real Caddy, serving one Caddyfile (site blocks, no global options).
pub struct Caddy {
    served: Served,
    pub port: u16,
}

impl Caddy {
    /// Runs `caddyfile` (`{{LISTEN}}` is filled with the site address) on
    /// a free port.
    pub async fn start(caddyfile: &str) -> Self {
        Self::start_on(free_port(), caddyfile).await
    }

    /// As [`Caddy::start`], on `port` chosen beforehand.
    pub async fn start_on(port: u16, caddyfile: &str) -> Self {
        let bin = binary("caddy", &["/usr/bin/caddy"], "caddy");
        let dir = TempDir::new("caddy");
        let d = dir.path().display().to_string();
        // Global options: no admin endpoint, no certificates, nothing
        // written outside the temp dir.
        let site = fill(
            caddyfile,
            &[("LISTEN", &format!("http://127.0.0.1:{port}"))],
        );
        assert_filled(&site);
        let text = format!(
            "{{\n\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n\
             \tstorage file_system {d}/storage\n\tlog {{\n\t\toutput file {d}/caddy.log\n\t\tlevel DEBUG\n\t}}\n}}\n\n{site}"
        );
        let file = dir.write("Caddyfile", &text);
        let log = dir.path().join("caddy.log");
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", &d)
            .env("XDG_CONFIG_HOME", format!("{d}/config"))
            .env("XDG_DATA_HOME", format!("{d}/data"))
            .env("XDG_CACHE_HOME", format!("{d}/cache"));
        let served = Served::spawn(cmd, port, dir, log, "caddy").ready().await;
        Caddy { served, port }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    pub fn logs(&self) -> String {
        self.served.logs()
    }
}
