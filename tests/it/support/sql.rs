//! Stores for the store conformance suite: each test gets a FRESH, empty
//! one of its kind: its own `redis-server` (see [`super::redis`]), its own
//! PostgreSQL or MariaDB database (a random name, created through sqlx on
//! the machine's servers, dropped at the end), or its own SQLite file in a
//! temp dir. Plus helpers to look inside (row counts, every stored value)
//! and a TCP forwarder to cut a store off and bring it back.
//!
//! The servers: PostgreSQL on 127.0.0.1:5432 (trust, user `postgres`),
//! MariaDB on 127.0.0.1:3306 (`root`, empty password). `tests/run` starts
//! them (installing them when absent). One that does not answer is a test
//! FAILURE with a message saying so, never a skip. `IT_PG_ADMIN_URL`
//! / `IT_MARIADB_ADMIN_URL` point the suite at other servers (an
//! admin URL of a database that exists; the fresh databases go beside it).
//! Not `PORTCULLIS_*`: the binary reads those as config and refuses
//! unknown keys.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use tokio::net::{TcpListener, TcpStream};

use super::TempDir;
use super::redis::{RedisOpts, RedisServer};

/// Prefix of every database the suite creates (`pcit_<pid>_<n>`): a
/// leftover whose process is gone is dropped by the next run.
const DB_PREFIX: &str = "pcit_";

/// How long connecting to a server may take before the test fails.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Redis,
    Postgres,
    MariaDb,
    Sqlite,
}

impl StoreKind {
    pub fn is_sql(self) -> bool {
        self != StoreKind::Redis
    }
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Redis => "redis",
            StoreKind::Postgres => "postgres",
            StoreKind::MariaDb => "mariadb",
            StoreKind::Sqlite => "sqlite",
        }
    }
}

fn pg_admin_url() -> String {
    std::env::var("IT_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn mariadb_admin_url() -> String {
    std::env::var("IT_MARIADB_ADMIN_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// `url` with its database (the path) replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// `url` with its host and port replaced by 127.0.0.1:`port`.
fn with_port(url: &str, port: u16) -> String {
    let mut u = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
    u.set_host(Some("127.0.0.1")).unwrap();
    u.set_port(Some(port)).unwrap();
    u.to_string()
}

fn install_drivers() {
    static DRIVERS: std::sync::Once = std::sync::Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
}

/// A pool on `url`, connected now; a server that does not answer fails
/// the test with `what` and how to start it.
async fn connect(url: &str, what: &str) -> AnyPool {
    install_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(CONNECT_WITHIN)
        .connect(url);
    match tokio::time::timeout(CONNECT_WITHIN, pool).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => panic!(
            "{what} at {url} is not reachable: {e}\n(run the suite with tests/run, which starts it; this is a failure, not a skip)"
        ),
        Err(_) => panic!(
            "{what} at {url} did not answer within {CONNECT_WITHIN:?}\n(run the suite with tests/run, which starts it; this is a failure, not a skip)"
        ),
    }
}

fn fresh_db_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{DB_PREFIX}{}_{}_{nanos:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a database name of ours belongs to a process that is gone.
fn is_orphan(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(DB_PREFIX)
        .and_then(|r| r.split('_').next())
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs `f` on a runtime of its own in a thread, bounded by `within`
/// (for cleanup in `Drop`, where the test's runtime may be gone).
fn blocking_bounded<F>(within: Duration, f: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async move {
                let _ = tokio::time::timeout(within, f).await;
            });
        }
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(within + Duration::from_secs(1));
}

/// One fresh store, and what the test needs to look inside it.
pub struct TestStore {
    pub kind: StoreKind,
    redis: Option<RedisServer>,
    /// The server's admin URL and the fresh database's name.
    db: Option<(String, String)>,
    /// The SQLite file's directory.
    dir: TempDir,
    pool: Option<AnyPool>,
}

impl TestStore {
    /// A fresh, empty store of `kind`.
    pub async fn fresh(kind: StoreKind) -> Self {
        let dir = TempDir::new(&format!("store-{}", kind.name()));
        let mut me = TestStore {
            kind,
            redis: None,
            db: None,
            dir,
            pool: None,
        };
        match kind {
            StoreKind::Redis => {
                me.redis = Some(
                    tokio::task::spawn_blocking(|| RedisServer::start(RedisOpts::default()))
                        .await
                        .unwrap(),
                );
            }
            StoreKind::Postgres => {
                let admin = pg_admin_url();
                let name = fresh_db_name();
                let pool = connect(&admin, "PostgreSQL").await;
                let old: Vec<String> = sqlx::query(
                    "SELECT datname::text FROM pg_database WHERE datname LIKE 'pcit\\_%'",
                )
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .filter_map(|r| r.try_get::<String, _>(0).ok())
                .collect();
                for o in old.iter().filter(|o| is_orphan(o)) {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{o}\" WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                }
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on PostgreSQL: {e}"));
                pool.close().await;
                me.db = Some((admin, name));
            }
            StoreKind::MariaDb => {
                let admin = mariadb_admin_url();
                let name = fresh_db_name();
                let pool = connect(&admin, "MariaDB").await;
                let old: Vec<String> = sqlx::query("SHOW DATABASES LIKE 'pcit\\_%'")
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                    .iter()
                    .filter_map(|r| text_of(r, 0))
                    .collect();
                for o in old.iter().filter(|o| is_orphan(o)) {
                    let _ = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{o}`")))
                        .execute(&pool)
                        .await;
                }
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
                )))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on MariaDB: {e}"));
                pool.close().await;
                me.db = Some((admin, name));
            }
            StoreKind::Sqlite => {}
        }
        me
    }

    /// The URL Portcullis is given (`store.url`).
    pub fn url(&self) -> String {
        match self.kind {
            StoreKind::Redis => self.redis.as_ref().unwrap().url(),
            StoreKind::Postgres => {
                let (admin, name) = self.db.as_ref().unwrap();
                with_database(admin, name)
            }
            StoreKind::MariaDb => {
                let (admin, name) = self.db.as_ref().unwrap();
                // The scheme the contract names for MariaDB.
                with_database(admin, name).replacen("mysql://", "mariadb://", 1)
            }
            StoreKind::Sqlite => format!("sqlite://{}", self.sqlite_file().display()),
        }
    }

    /// The URL through a forwarder on `port` (not for SQLite).
    pub fn url_via(&self, port: u16) -> String {
        assert_ne!(self.kind, StoreKind::Sqlite, "SQLite has no server");
        with_port(&self.url(), port)
    }

    /// The server's address (not for SQLite).
    pub fn server_addr(&self) -> SocketAddr {
        let u = url::Url::parse(&self.url()).unwrap();
        let port = u.port().unwrap_or(match self.kind {
            StoreKind::Postgres => 5432,
            StoreKind::MariaDb => 3306,
            _ => 6379,
        });
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub fn sqlite_file(&self) -> std::path::PathBuf {
        self.dir.path().join("portcullis.db")
    }

    /// The `store:` block for `url` with the suite's settings: a short
    /// timeout, and for SQL stores a pool and a sweeper; `more` is added
    /// under it (indented two spaces).
    pub fn yaml_for(&self, url: &str, more: &str) -> String {
        let mut y = format!("store:\n  url: \"{url}\"\n  key_prefix: \"it:\"\n  timeout: 1s\n");
        if self.kind.is_sql() {
            y += "  max_connections: 10\n";
        }
        y += more;
        y
    }

    /// [`Self::yaml_for`] the store's own URL.
    pub fn yaml(&self, more: &str) -> String {
        self.yaml_for(&self.url(), more)
    }

    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("a Redis store")
    }

    /// The test's own pool on the database (SQL stores).
    pub async fn pool(&mut self) -> AnyPool {
        if let Some(p) = &self.pool {
            return p.clone();
        }
        let url = match self.kind {
            StoreKind::Redis => panic!("Redis has no SQL pool"),
            StoreKind::Sqlite => format!("sqlite://{}?mode=rwc", self.sqlite_file().display()),
            StoreKind::MariaDb => self.url().replacen("mariadb://", "mysql://", 1),
            StoreKind::Postgres => self.url(),
        };
        let p = connect(&url, self.kind.name()).await;
        self.pool = Some(p.clone());
        p
    }

    /// Runs one statement (SQL stores); rows affected.
    pub async fn exec(&mut self, sql: &str) -> u64 {
        let pool = self.pool().await;
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .rows_affected()
    }

    /// `SELECT COUNT(*) FROM table` (SQL stores).
    pub async fn count(&mut self, table: &str) -> i64 {
        self.count_where(table, "1=1").await
    }

    pub async fn count_where(&mut self, table: &str, cond: &str) -> i64 {
        let pool = self.pool().await;
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {cond}");
        let row = sqlx::query(AssertSqlSafe(sql.clone()))
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.try_get::<i64, _>(0)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of every row of `sql`, as text (SQL stores).
    pub async fn column(&mut self, sql: &str) -> Vec<String> {
        let pool = self.pool().await;
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| text_of(r, 0).unwrap_or_default())
            .collect()
    }

    /// The names of the tables in the database (SQL stores), sorted.
    pub async fn tables(&mut self) -> Vec<String> {
        let sql = match self.kind {
            StoreKind::Postgres => {
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'"
            }
            StoreKind::MariaDb => {
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
            }
            StoreKind::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            }
            StoreKind::Redis => panic!("Redis has no tables"),
        };
        let mut t = self.column(sql).await;
        t.sort();
        t
    }

    /// Everything the store holds, as text: for SQL every value of every
    /// column of every row of every table (`table: col=value, ...`), for
    /// Redis every key with its value.
    pub async fn dump(&mut self) -> String {
        if self.kind == StoreKind::Redis {
            return self.redis().dump_all();
        }
        let pool = self.pool().await;
        let mut out = String::new();
        for t in self.tables().await {
            let rows = sqlx::query(AssertSqlSafe(format!("SELECT * FROM {t}")))
                .fetch_all(&pool)
                .await
                .unwrap_or_else(|e| panic!("SELECT * FROM {t}: {e}"));
            for r in &rows {
                let cols: Vec<String> = (0..r.columns().len())
                    .map(|i| {
                        format!(
                            "{}={}",
                            sqlx::Column::name(&r.columns()[i]),
                            text_of(r, i).unwrap_or_else(|| "NULL".into())
                        )
                    })
                    .collect();
                out += &format!("{t}: {}\n", cols.join(", "));
            }
        }
        out
    }

    /// Users and accounts as the store counts them: SQL rows, or for
    /// Redis the user records and the account index entries.
    pub async fn users_and_accounts(&mut self) -> (i64, i64) {
        if self.kind == StoreKind::Redis {
            let r = self.redis();
            return (
                r.keys("it:{users}u:*").len() as i64,
                r.keys("it:{users}a:*").len() as i64,
            );
        }
        (self.count("users").await, self.count("accounts").await)
    }
}

/// Column `i` of a row as text (text, integer or bytes); `None` for NULL.
pub fn text_of(r: &sqlx::any::AnyRow, i: usize) -> Option<String> {
    if let Ok(v) = r.try_get::<Option<String>, _>(i) {
        return v;
    }
    if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
        return v.map(|v| v.to_string());
    }
    if let Ok(v) = r.try_get::<Option<Vec<u8>>, _>(i) {
        return v.map(|v| String::from_utf8_lossy(&v).into_owned());
    }
    if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
        return v.map(|v| v.to_string());
    }
    if let Ok(v) = r.try_get::<Option<bool>, _>(i) {
        return v.map(|v| v.to_string());
    }
    Some("<undecodable>".into())
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            blocking_bounded(Duration::from_secs(3), async move { p.close().await });
        }
        let Some((admin, name)) = self.db.take() else {
            return;
        };
        let kind = self.kind;
        blocking_bounded(Duration::from_secs(10), async move {
            install_drivers();
            let Ok(pool) = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&admin)
                .await
            else {
                return;
            };
            let sql = match kind {
                StoreKind::Postgres => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                _ => format!("DROP DATABASE IF EXISTS `{name}`"),
            };
            let _ = sqlx::query(AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
        });
    }
}

// ---------------------------------------------------------------------------
// A TCP forwarder: the store's network, cut and restored by the test.

/// Listens on a loopback port and pipes every connection to `target`.
/// [`Forwarder::cut`] closes every open connection and resets new ones
/// (the store is "down"); [`Forwarder::restore`] lets them through again.
pub struct Forwarder {
    pub port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, cs) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    // Down: the connection is closed at once.
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    let mut inbound = inbound;
                    let Ok(Ok(mut outbound)) =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target))
                            .await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut l = cs.lock().unwrap();
                l.retain(|h| !h.is_finished());
                l.push(task.abort_handle());
            }
        });
        Forwarder {
            port,
            cut,
            conns,
            accept,
        }
    }

    /// The store goes away: open connections are closed, new ones reset.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// The store is back.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}
