//! The SQL store: PostgreSQL, MySQL / MariaDB and SQLite through one
//! `sqlx` pool of the right driver. Statements are written once with `?`
//! placeholders (PostgreSQL's `$n` are filled in when a statement is
//! prepared) and kept prepared per connection.
//!
//! Like Redis, every query has a time limit and any failure is
//! [`StoreError::Unavailable`]: the caller fails closed (503). A background
//! task checks the schema (migrating it when `auto_migrate` is on), pings
//! the server every second for `/readyz`, and sweeps expired rows in
//! bounded batches. Until the schema is known good the store reports
//! itself unhealthy and every call fails.
//!
//! SQLite serialises writers: multi-statement writes of this process take
//! one in-process lock, and other processes (the CLI) wait on SQLite's busy
//! timeout; conflicts of any dialect (unique races, deadlocks, busy) are
//! retried a bounded number of times.

mod lookup;
pub mod schema;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row};

use super::{Backend, SqlKind, StoreConfig, StoreError};
use crate::clock::UnixTime;
use crate::users::{Account, Outcome, Profile, User};

/// Why the schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database schema is at version {found}, newer than this binary knows (version {known}): run a Portcullis release at least as new as the one that migrated it, or point store.url at another database"
    )]
    Newer { found: i64, known: i64 },
    #[error(
        "the database schema is at version {found}, this binary needs version {known}: run `portcullis migrate --config FILE` or set store.auto_migrate: true"
    )]
    Older { found: i64, known: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A session row as `portcullis sessions list` and the store read it.
pub struct SessionRow {
    pub token_hash: String,
    pub data: String,
    pub expires: UnixTime,
}

/// What a new session row holds.
pub struct NewSession<'a> {
    pub token_hash: &'a str,
    pub user_id: &'a str,
    pub user_key: &'a str,
    pub subject_key: Option<&'a str>,
    pub data: &'a str,
    pub created: UnixTime,
    pub expires: UnixTime,
}

/// Which index of sessions to end.
#[derive(Clone, Copy)]
pub enum SessionIndex {
    User,
    Subject,
}

/// Every statement, in the pool's dialect, rendered once.
struct Statements {
    session_touch: SqlText,
    session_insert: SqlText,
    session_save: SqlText,
    session_delete: SqlText,
    sessions_delete_user: SqlText,
    sessions_delete_subject: SqlText,
    sessions_list: SqlText,
    sessions_count: SqlText,
    vt_insert: SqlText,
    vt_get: SqlText,
    vt_delete: SqlText,
    kv_incr: SqlText,
    kv_counter: SqlText,
    kv_ttl: SqlText,
    kv_set: SqlText,
    kv_set_nx: SqlText,
    kv_value: SqlText,
    kv_del: SqlText,
    kv_del_if: SqlText,
    set_add: SqlText,
    user_get: SqlText,
    user_accounts: SqlText,
    user_insert: SqlText,
    account_owner: SqlText,
    account_insert: SqlText,
    email_owner: SqlText,
    version_get: SqlText,
    version_put: SqlText,
    sweep: [SqlText; 3],
}

/// A prepared statement's text, shared by every query that runs it.
type SqlText = Arc<str>;

/// `?` placeholders as the dialect wants them (`$1, $2...` for PostgreSQL).
fn render(kind: SqlKind, sql: &str) -> String {
    if kind != SqlKind::Postgres {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

impl Statements {
    fn new(kind: SqlKind) -> Self {
        let r = |s: &str| -> SqlText { render(kind, s).into() };
        let mysql = kind == SqlKind::MySql;
        // An upsert: MySQL says it its own way.
        let upsert = |insert: &str, key: &str, set: &str, set_mysql: &str| {
            if mysql {
                r(&format!("{insert} ON DUPLICATE KEY UPDATE {set_mysql}"))
            } else {
                r(&format!("{insert} ON CONFLICT ({key}) DO UPDATE SET {set}"))
            }
        };
        let sweep = |table: &str, key: &str| {
            if mysql {
                r(&format!("DELETE FROM {table} WHERE expires <= ? LIMIT ?"))
            } else {
                r(&format!(
                    "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE expires <= ? LIMIT ?)"
                ))
            }
        };
        Statements {
            session_touch: r("UPDATE sessions SET expires = ? WHERE session_token = ?"),
            session_insert: r(
                "INSERT INTO sessions (session_token, user_id, user_key, subject_key, data, created_at, expires) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ),
            session_save: r("UPDATE sessions SET data = ? WHERE session_token = ? AND expires > ?"),
            session_delete: r("DELETE FROM sessions WHERE session_token = ?"),
            sessions_delete_user: r("DELETE FROM sessions WHERE user_key = ?"),
            sessions_delete_subject: r("DELETE FROM sessions WHERE subject_key = ?"),
            sessions_list: r(
                "SELECT session_token, data, expires FROM sessions WHERE user_key = ? AND expires > ? ORDER BY created_at",
            ),
            sessions_count: r("SELECT COUNT(*) FROM sessions WHERE expires > ?"),
            vt_insert: r(
                "INSERT INTO verification_tokens (identifier, token, data, expires) VALUES (?, ?, ?, ?)",
            ),
            vt_get: r("SELECT data, expires FROM verification_tokens WHERE token = ?"),
            vt_delete: r("DELETE FROM verification_tokens WHERE token = ?"),
            // A counter in a window: the first hit (or the first after the
            // window ended) starts it at 1 with a new expiry.
            kv_incr: if mysql {
                // Assignments run left to right: `counter` reads the old
                // `expires`, which is only replaced after it.
                r(
                    "INSERT INTO portcullis_kv (name, value, counter, expires) VALUES (?, NULL, 1, ?) ON DUPLICATE KEY UPDATE counter = IF(expires <= ?, 1, counter + 1), expires = IF(expires <= ?, VALUES(expires), expires)",
                )
            } else {
                r(
                    "INSERT INTO portcullis_kv (name, value, counter, expires) VALUES (?, NULL, 1, ?) ON CONFLICT (name) DO UPDATE SET counter = CASE WHEN portcullis_kv.expires <= ? THEN 1 ELSE portcullis_kv.counter + 1 END, expires = CASE WHEN portcullis_kv.expires <= ? THEN excluded.expires ELSE portcullis_kv.expires END",
                )
            },
            kv_counter: r("SELECT counter FROM portcullis_kv WHERE name = ?"),
            kv_ttl: r("SELECT expires FROM portcullis_kv WHERE name = ? AND expires > ?"),
            kv_set: upsert(
                "INSERT INTO portcullis_kv (name, value, counter, expires) VALUES (?, ?, ?, ?)",
                "name",
                "value = excluded.value, counter = excluded.counter, expires = excluded.expires",
                "value = VALUES(value), counter = VALUES(counter), expires = VALUES(expires)",
            ),
            // Taken only if absent or expired.
            kv_set_nx: if mysql {
                r(
                    "INSERT INTO portcullis_kv (name, value, counter, expires) VALUES (?, ?, 0, ?) ON DUPLICATE KEY UPDATE value = IF(expires <= ?, VALUES(value), value), expires = IF(expires <= ?, VALUES(expires), expires)",
                )
            } else {
                r(
                    "INSERT INTO portcullis_kv (name, value, counter, expires) VALUES (?, ?, 0, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, expires = excluded.expires WHERE portcullis_kv.expires <= ?",
                )
            },
            kv_value: r("SELECT value FROM portcullis_kv WHERE name = ? AND expires > ?"),
            kv_del: r("DELETE FROM portcullis_kv WHERE name = ?"),
            kv_del_if: r("DELETE FROM portcullis_kv WHERE name = ? AND value = ?"),
            set_add: if mysql {
                r("INSERT IGNORE INTO portcullis_set (name, item) VALUES (?, ?)")
            } else {
                r("INSERT INTO portcullis_set (name, item) VALUES (?, ?) ON CONFLICT DO NOTHING")
            },
            user_get: r("SELECT id, name, email, image, created_at FROM users WHERE id = ?"),
            user_accounts: r(
                "SELECT provider, provider_account_id FROM accounts WHERE user_id = ? ORDER BY created_at, id",
            ),
            user_insert: r(
                "INSERT INTO users (id, name, email, email_verified, image, created_at) VALUES (?, ?, ?, NULL, ?, ?)",
            ),
            account_owner: r(
                "SELECT user_id FROM accounts WHERE provider = ? AND provider_account_id = ?",
            ),
            account_insert: r(
                "INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            ),
            email_owner: r("SELECT id FROM users WHERE email = ?"),
            version_get: r("SELECT MAX(version) FROM portcullis_schema"),
            version_put: if mysql {
                r("INSERT IGNORE INTO portcullis_schema (version) VALUES (?)")
            } else {
                r("INSERT INTO portcullis_schema (version) VALUES (?) ON CONFLICT DO NOTHING")
            },
            sweep: [
                sweep("sessions", "session_token"),
                sweep("verification_tokens", "token"),
                sweep("portcullis_kv", "name"),
            ],
        }
    }
}

pub struct Sql {
    pool: AnyPool,
    kind: SqlKind,
    timeout: Duration,
    auto_migrate: bool,
    sweep_interval: Duration,
    sweep_batch: u32,
    st: Statements,
    /// The schema was checked (or migrated) and is this binary's.
    schema_ok: AtomicBool,
    healthy: AtomicBool,
    /// SQLite: one multi-statement writer of this process at a time.
    writer: tokio::sync::Mutex<()>,
    /// Session reads, batched (started on first use, inside the runtime).
    lookups: std::sync::OnceLock<lookup::Lookups>,
    /// Query latency and failures, for `/metrics`.
    pub stats: Arc<crate::metrics::Dependency>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A conflict that a fresh attempt resolves: a unique key taken by a
/// parallel writer, a deadlock, a busy SQLite file.
fn is_conflict(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    if db.is_unique_violation() {
        return true;
    }
    matches!(
        db.code().as_deref(),
        // PostgreSQL: serialization failure, deadlock.
        Some("40001" | "40P01")
        // MySQL / MariaDB: deadlock, lock wait timeout.
        | Some("1213" | "1205")
        // SQLite: busy, locked, busy snapshot.
        | Some("5" | "6" | "517")
    )
}

const ATTEMPTS: usize = 8;

/// A `portcullis_kv` name as stored: names longer than MySQL's indexed
/// column (a counter keyed by a long e-mail address a client typed) go
/// in as their hash, so no input can make a write fail (and sign-in 503).
fn kv_name(name: &str) -> String {
    if name.len() <= 200 {
        name.to_string()
    } else {
        format!("sha256:{}", crate::crypto::sha256_hex(name.as_bytes()))
    }
}

fn sqlite_url(url: &str) -> Result<String, String> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let file = path.split('?').next().unwrap_or(path);
    // A URL that says `mode=ro` or `mode=rw` wants an existing file: then
    // nothing is created here (SQLite reports a missing one).
    let creates = !url.contains("mode=") || url.contains("mode=rwc");
    if !creates || file == ":memory:" {
        return Ok(url.to_string());
    }
    if let Some(dir) = std::path::Path::new(file).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // Sessions and users live in it: readable by this user only.
    #[cfg(unix)]
    if !file.is_empty() && !std::path::Path::new(file).exists() {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file);
    }
    // Create the file when missing (`rwc`), unless the URL says otherwise.
    Ok(if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

impl Sql {
    /// Builds the pool; connecting happens on first use, so Portcullis
    /// starts (and answers 503) while the database is down.
    pub fn new(cfg: &StoreConfig) -> Result<Self, String> {
        let Backend::Sql(target) = &cfg.backend else {
            return Err("not a SQL URL".into());
        };
        static DRIVERS: std::sync::Once = std::sync::Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let kind = target.kind;
        let url = match kind {
            SqlKind::Sqlite => sqlite_url(&target.url)?,
            _ => target.url.clone(),
        };
        let mut opts = AnyPoolOptions::new()
            .max_connections(cfg.max_connections)
            .min_connections(0)
            .acquire_timeout(cfg.timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_before_acquire(false);
        if kind == SqlKind::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                    )
                    .await
                    .map(|_| ())
                })
            });
        }
        let pool = opts
            .connect_lazy(&url)
            .map_err(|e| format!("store.url: {e}"))?;
        Ok(Sql {
            pool,
            kind,
            timeout: cfg.timeout,
            auto_migrate: cfg.auto_migrate,
            sweep_interval: cfg.sweep_interval,
            sweep_batch: cfg.sweep_batch,
            st: Statements::new(kind),
            schema_ok: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            writer: tokio::sync::Mutex::new(()),
            lookups: std::sync::OnceLock::new(),
            stats: Default::default(),
        })
    }

    pub fn kind(&self) -> SqlKind {
        self.kind
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Runs `f` under the time limit, counting it in the stats; refuses
    /// while the schema is not known good.
    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        if !self.schema_ok.load(Ordering::Relaxed) {
            return Err(unavailable("the database schema is not ready"));
        }
        self.timed(f).await
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(unavailable("timed out")),
        };
        self.stats.record(started, &result);
        result
    }

    /// A query of one of our statements (their text is ours, never input:
    /// every value is a bound parameter).
    fn q<'q>(&self, sql: &SqlText) -> Query<'q, Any, AnyArguments> {
        sqlx::query(AssertSqlSafe(sql.clone()))
    }

    fn now_ms() -> i64 {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
        )
        .unwrap_or(i64::MAX)
    }

    // ---- schema ------------------------------------------------------

    /// The schema version the database is at (0: none yet).
    pub async fn version(&self) -> Result<i64, StoreError> {
        self.timed(async {
            sqlx::query(AssertSqlSafe(schema::version_table(self.kind)))
                .execute(&self.pool)
                .await?;
            let row = self.q(&self.st.version_get).fetch_one(&self.pool).await?;
            Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
        })
        .await
    }

    /// Brings the schema to [`schema::LATEST`]; the versions it applied.
    /// A database at a newer version is refused, untouched.
    pub async fn migrate(&self) -> Result<Vec<i64>, SchemaError> {
        let _writer = self.writer.lock().await;
        let mut conn = self.timed(async { self.pool.acquire().await }).await?;
        // One migrator at a time across replicas (SQLite: the file lock).
        let (lock, unlock) = match self.kind {
            SqlKind::Postgres => (
                Some("SELECT pg_advisory_lock(727368)"),
                Some("SELECT pg_advisory_unlock(727368)"),
            ),
            SqlKind::MySql => (
                Some("SELECT GET_LOCK('portcullis_migrate', 60)"),
                Some("SELECT RELEASE_LOCK('portcullis_migrate')"),
            ),
            SqlKind::Sqlite => (None, None),
        };
        if let Some(lock) = lock {
            self.timed(sqlx::query(lock).execute(&mut *conn)).await?;
        }
        let result = async {
            self.timed(
                sqlx::query(AssertSqlSafe(schema::version_table(self.kind))).execute(&mut *conn),
            )
            .await?;
            let row = self
                .timed(self.q(&self.st.version_get).fetch_one(&mut *conn))
                .await?;
            let found = row
                .try_get::<Option<i64>, _>(0)
                .map_err(unavailable)?
                .unwrap_or(0);
            if found > schema::LATEST {
                return Err(SchemaError::Newer {
                    found,
                    known: schema::LATEST,
                });
            }
            let mut applied = Vec::new();
            for v in found + 1..=schema::LATEST {
                for stmt in schema::migration(self.kind, v) {
                    // DDL can take longer than a query: no time limit here.
                    sqlx::query(AssertSqlSafe(stmt))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| unavailable(format!("migration {v}: {e}")))?;
                }
                self.timed(self.q(&self.st.version_put).bind(v).execute(&mut *conn))
                    .await?;
                applied.push(v);
            }
            Ok(applied)
        }
        .await;
        if let Some(unlock) = unlock {
            let _ = sqlx::query(unlock).execute(&mut *conn).await;
        }
        if result.is_ok() {
            self.schema_ok.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Checks (or, with `auto_migrate`, brings) the schema up to date.
    pub async fn prepare(&self) -> Result<(), SchemaError> {
        if self.auto_migrate {
            let applied = self.migrate().await?;
            if !applied.is_empty() {
                tracing::info!(store = self.kind.as_str(), versions = ?applied, "database schema migrated");
            }
            return Ok(());
        }
        let found = self.version().await?;
        match found.cmp(&schema::LATEST) {
            std::cmp::Ordering::Greater => Err(SchemaError::Newer {
                found,
                known: schema::LATEST,
            }),
            std::cmp::Ordering::Less => Err(SchemaError::Older {
                found,
                known: schema::LATEST,
            }),
            std::cmp::Ordering::Equal => {
                self.schema_ok.store(true, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Health (schema, then a ping every second) and sweeping, until the
    /// handle is dropped (a config reload).
    pub fn spawn_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut was: Option<bool> = None;
            let mut last_problem = String::new();
            let mut last_sweep = std::time::Instant::now();
            loop {
                let Some(me) = weak.upgrade() else { return };
                let mut problem = String::new();
                if !me.schema_ok.load(Ordering::Relaxed)
                    && let Err(e) = me.prepare().await
                {
                    problem = e.to_string();
                }
                let ok = problem.is_empty()
                    && me
                        .timed(sqlx::query("SELECT 1").execute(&me.pool))
                        .await
                        .map_err(|e| problem = e.to_string())
                        .is_ok();
                me.healthy.store(ok, Ordering::Relaxed);
                if was != Some(ok) || (!ok && problem != last_problem) {
                    if ok {
                        tracing::info!(store = me.kind.as_str(), "session store reachable");
                    } else {
                        tracing::warn!(store = me.kind.as_str(), error = %problem, "session store unavailable: failing closed (503) until it returns");
                    }
                    was = Some(ok);
                    last_problem = problem;
                }
                if ok && last_sweep.elapsed() >= me.sweep_interval {
                    last_sweep = std::time::Instant::now();
                    match me.sweep().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(rows = n, "expired rows swept"),
                        Err(e) => tracing::warn!(error = %e, "sweeping expired rows failed"),
                    }
                }
                drop(me);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Deletes expired rows, `sweep_batch` per statement, a bounded number
    /// of statements per round; how many went.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let now = crate::clock::Clock::System.now() as i64;
        let now_ms = Self::now_ms();
        let batch = i64::from(self.sweep_batch);
        let mut total = 0;
        for (i, stmt) in self.st.sweep.iter().enumerate() {
            let cutoff = if i == 2 { now_ms } else { now };
            for _ in 0..100 {
                let n = self.write(self.q(stmt).bind(cutoff).bind(batch)).await?;
                total += n;
                if n < self.sweep_batch as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(total)
    }

    /// Runs one writing statement (SQLite: under this process's writer
    /// lock); how many rows it changed.
    async fn write(&self, q: Query<'_, Any, AnyArguments>) -> Result<u64, StoreError> {
        let _w = self.write_guard().await;
        self.run(q.execute(&self.pool))
            .await
            .map(|r| r.rows_affected())
    }

    /// SQLite: hold this process's writer lock (other dialects: nothing).
    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.kind {
            SqlKind::Sqlite => Some(self.writer.lock().await),
            _ => None,
        }
    }

    // ---- sessions ----------------------------------------------------

    pub async fn session_get(
        &self,
        hash: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError> {
        if !self.schema_ok.load(Ordering::Relaxed) {
            return Err(unavailable("the database schema is not ready"));
        }
        self.lookups
            .get_or_init(|| {
                lookup::Lookups::start(
                    self.pool.clone(),
                    self.kind,
                    self.timeout,
                    self.stats.clone(),
                )
            })
            .get(hash, now as i64)
            .await
    }

    pub async fn session_touch(&self, hash: &str, expires: UnixTime) -> Result<(), StoreError> {
        self.write(
            self.q(&self.st.session_touch)
                .bind(expires as i64)
                .bind(hash),
        )
        .await
        .map(|_| ())
    }

    pub async fn session_insert(&self, s: &NewSession<'_>) -> Result<(), StoreError> {
        self.write(
            self.q(&self.st.session_insert)
                .bind(s.token_hash)
                .bind(s.user_id)
                .bind(s.user_key)
                .bind(s.subject_key)
                .bind(s.data)
                .bind(s.created as i64)
                .bind(s.expires as i64),
        )
        .await
        .map(|_| ())
    }

    /// Replaces a live session's data (not one ended meanwhile).
    pub async fn session_save(
        &self,
        hash: &str,
        data: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.write(
            self.q(&self.st.session_save)
                .bind(data)
                .bind(hash)
                .bind(now as i64),
        )
        .await
        .map(|_| ())
    }

    pub async fn session_delete(&self, hash: &str) -> Result<u64, StoreError> {
        self.write(self.q(&self.st.session_delete).bind(hash)).await
    }

    /// Ends every session under one index key; how many.
    pub async fn sessions_delete(&self, index: SessionIndex, key: &str) -> Result<u64, StoreError> {
        let stmt = match index {
            SessionIndex::User => &self.st.sessions_delete_user,
            SessionIndex::Subject => &self.st.sessions_delete_subject,
        };
        self.write(self.q(stmt).bind(key)).await
    }

    pub async fn sessions_list(
        &self,
        user_key: &str,
        now: UnixTime,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let rows = self
            .run(
                self.q(&self.st.sessions_list)
                    .bind(user_key)
                    .bind(now as i64)
                    .fetch_all(&self.pool),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SessionRow {
                    token_hash: r.try_get(0)?,
                    data: r.try_get(1)?,
                    expires: r.try_get::<i64, _>(2)?.max(0) as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    pub async fn sessions_count(&self, now: UnixTime) -> Result<i64, StoreError> {
        let row = self
            .run(
                self.q(&self.st.sessions_count)
                    .bind(now as i64)
                    .fetch_one(&self.pool),
            )
            .await?;
        row.try_get(0)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    // ---- verification tokens ------------------------------------------

    pub async fn token_put(
        &self,
        identifier: &str,
        token_hash: &str,
        data: &str,
        expires: UnixTime,
    ) -> Result<(), StoreError> {
        self.write(
            self.q(&self.st.vt_insert)
                .bind(identifier)
                .bind(token_hash)
                .bind(data)
                .bind(expires as i64),
        )
        .await
        .map(|_| ())
    }

    /// Takes a token: of two parallel takes, exactly one gets its data
    /// (the one whose DELETE removed the row). Expired tokens give nothing.
    pub async fn token_take(
        &self,
        token_hash: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError> {
        let row = self
            .run(
                self.q(&self.st.vt_get)
                    .bind(token_hash)
                    .fetch_optional(&self.pool),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let data: String = row
            .try_get(0)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let expires: i64 = row
            .try_get(1)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let deleted = self
            .write(self.q(&self.st.vt_delete).bind(token_hash))
            .await?;
        Ok((deleted == 1 && expires > now as i64).then_some(data))
    }

    // ---- counters, bans and locks (portcullis_kv) ----------------------

    /// Counts a hit in a window of `window_ms` that starts with the first
    /// hit; the count so far.
    pub async fn incr_window(&self, name: &str, window_ms: i64) -> Result<i64, StoreError> {
        let _w = self.write_guard().await;
        let now = Self::now_ms();
        self.run(async {
            let mut tx = self.pool.begin().await?;
            self.q(&self.st.kv_incr)
                .bind(kv_name(name))
                .bind(now.saturating_add(window_ms))
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let n: i64 = self
                .q(&self.st.kv_counter)
                .bind(kv_name(name))
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            tx.commit().await?;
            Ok(n)
        })
        .await
    }

    /// Milliseconds left of a live entry, if any.
    pub async fn ttl_ms(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let now = Self::now_ms();
        let row = self
            .run(
                self.q(&self.st.kv_ttl)
                    .bind(kv_name(name))
                    .bind(now)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row
            .and_then(|r| r.try_get::<i64, _>(0).ok())
            .map(|exp| (exp - now).max(1)))
    }

    pub async fn kv_set(
        &self,
        name: &str,
        value: Option<&str>,
        counter: i64,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(
            self.q(&self.st.kv_set)
                .bind(kv_name(name))
                .bind(value)
                .bind(counter)
                .bind(Self::now_ms().saturating_add(ttl_ms)),
        )
        .await
        .map(|_| ())
    }

    /// Sets `name` to `value` unless a live entry holds it: whether we
    /// hold it now (a lock).
    pub async fn set_nx(&self, name: &str, value: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let now = Self::now_ms();
        let mut st = self
            .q(&self.st.kv_set_nx)
            .bind(kv_name(name))
            .bind(value)
            .bind(now.saturating_add(ttl_ms))
            .bind(now);
        if self.kind == SqlKind::MySql {
            st = st.bind(now);
        }
        self.write(st).await?;
        let row = self
            .run(
                self.q(&self.st.kv_value)
                    .bind(kv_name(name))
                    .bind(now)
                    .fetch_optional(&self.pool),
            )
            .await?;
        let holder: Option<String> = row.and_then(|r| r.try_get(0).ok());
        Ok(holder.as_deref() == Some(value))
    }

    pub async fn kv_del(&self, name: &str) -> Result<(), StoreError> {
        self.write(self.q(&self.st.kv_del).bind(kv_name(name)))
            .await
            .map(|_| ())
    }

    /// Deletes `name` only while it still holds `value` (a lock's release).
    pub async fn kv_del_if(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.write(self.q(&self.st.kv_del_if).bind(kv_name(name)).bind(value))
            .await
            .map(|_| ())
    }

    // ---- sets (the token deny list) -------------------------------------

    pub async fn set_add(&self, name: &str, items: &[String]) -> Result<(), StoreError> {
        let _w = self.write_guard().await;
        self.run(async {
            let mut tx = self.pool.begin().await?;
            for item in items {
                self.q(&self.st.set_add)
                    .bind(name)
                    .bind(item)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
        .await
    }

    /// Whether any of `items` is in the set.
    pub async fn set_any(&self, name: &str, items: &[String]) -> Result<bool, StoreError> {
        if items.is_empty() {
            return Ok(false);
        }
        let marks = vec!["?"; items.len()].join(", ");
        // Only placeholders are added to the text; the items are bound.
        let sql = render(
            self.kind,
            &format!("SELECT COUNT(*) FROM portcullis_set WHERE name = ? AND item IN ({marks})"),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(name);
        for item in items {
            q = q.bind(item.as_str());
        }
        let row = self.run(q.fetch_one(&self.pool)).await?;
        let n: i64 = row
            .try_get(0)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(n > 0)
    }

    // ---- users and accounts -----------------------------------------------

    fn user_from(row: &AnyRow, accounts: Vec<Account>) -> Result<User, sqlx::Error> {
        Ok(User {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            email: row.try_get(2)?,
            image: row.try_get(3)?,
            accounts,
            created: row.try_get::<i64, _>(4)?.max(0) as u64,
        })
    }

    pub async fn user_get(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.run(async {
            let mut conn = self.pool.acquire().await?;
            Self::user_on(self, &mut conn, id).await
        })
        .await
    }

    /// Signs in with an account (see `crate::users`): finds its user,
    /// joins or refuses by e-mail, creates a user, or links the account to
    /// `signed_in`. One transaction per attempt; a parallel sign-in that
    /// won a unique key makes this one start over and find its rows.
    pub async fn sign_in(
        &self,
        p: &Profile<'_>,
        email: Option<&str>,
        signed_in: Option<&str>,
        new_id: &str,
        now: UnixTime,
    ) -> Result<Outcome, StoreError> {
        if !self.schema_ok.load(Ordering::Relaxed) {
            return Err(unavailable("the database schema is not ready"));
        }
        let _w = self.write_guard().await;
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let result = loop {
            let once = self.sign_in_once(p, email, signed_in, new_id, now);
            match tokio::time::timeout(self.timeout, once).await {
                Err(_) => break Err(unavailable("timed out")),
                Ok(Ok(o)) => break Ok(o),
                Ok(Err(e)) if is_conflict(&e) && attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "sign-in raced a parallel one: starting over");
                    tokio::time::sleep(Duration::from_millis(5 * attempt as u64)).await;
                }
                Ok(Err(e)) => break Err(unavailable(e)),
            }
        };
        self.stats.record(started, &result);
        result
    }

    async fn sign_in_once(
        &self,
        p: &Profile<'_>,
        email: Option<&str>,
        signed_in: Option<&str>,
        new_id: &str,
        now: UnixTime,
    ) -> Result<Outcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let result = async {
            let owner = self.account_owner(&mut tx, p).await?;
            let insert_account = |user: String| {
                self.q(&self.st.account_insert)
                    .bind(crate::crypto::random_token(16))
                    .bind(user)
                    .bind(p.provider_type.to_string())
                    .bind(p.provider.to_string())
                    .bind(p.account_id.to_string())
                    .bind(now as i64)
            };
            let insert_user = |id: &str, email: Option<&str>| {
                self.q(&self.st.user_insert)
                    .bind(id.to_string())
                    .bind(p.name.map(str::to_owned))
                    .bind(email.map(str::to_owned))
                    .bind(p.image.map(str::to_owned))
                    .bind(now as i64)
            };
            // (what happened, whose account it is now)
            let (what, id) = if let Some(me) = signed_in {
                match owner {
                    Some(o) if o == me => ("existing", o),
                    Some(_) => return Ok(None),
                    None => {
                        // A user known only from its session (credentials,
                        // a first link): give it a row to hang accounts on.
                        if self
                            .q(&self.st.user_get)
                            .bind(me)
                            .fetch_optional(&mut *tx)
                            .await?
                            .is_none()
                        {
                            insert_user(me, None).execute(&mut *tx).await?;
                        }
                        insert_account(me.to_string()).execute(&mut *tx).await?;
                        ("linked", me.to_string())
                    }
                }
            } else if let Some(o) = owner {
                ("existing", o)
            } else {
                let by_email: Option<String> = match email {
                    Some(e) => self
                        .q(&self.st.email_owner)
                        .bind(e)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|r| r.try_get(0))
                        .transpose()?,
                    None => None,
                };
                // Seen by e-mail but not by account: a parallel first
                // sign-in of this very account may have committed between
                // the two reads (PostgreSQL's READ COMMITTED gives each
                // statement a fresh snapshot, and it writes both rows in
                // one transaction): look at the account again.
                let owner_now = match by_email {
                    Some(_) => self.account_owner(&mut tx, p).await?,
                    None => None,
                };
                match (by_email, owner_now) {
                    (Some(_), Some(owner)) => ("existing", owner),
                    (Some(o), None) if p.allow_email_linking => {
                        insert_account(o.clone()).execute(&mut *tx).await?;
                        ("linked", o)
                    }
                    (Some(_), None) => return Ok(Some(("not_linked", String::new()))),
                    (None, _) => {
                        insert_user(new_id, email).execute(&mut *tx).await?;
                        insert_account(new_id.to_string()).execute(&mut *tx).await?;
                        ("created", new_id.to_string())
                    }
                }
            };
            Ok(Some((what, id)))
        }
        .await;
        let (what, id) = match result {
            Ok(Some(found)) => found,
            Ok(None) => {
                tx.rollback().await?;
                return Ok(Outcome::AccountTaken);
            }
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        };
        if what == "not_linked" {
            tx.rollback().await?;
            return Ok(Outcome::EmailTaken);
        }
        let user = Self::user_on(self, &mut tx, &id).await?;
        tx.commit().await?;
        let user = user.ok_or(sqlx::Error::RowNotFound)?;
        Ok(match what {
            "linked" if signed_in.is_some() => Outcome::Linked(user),
            _ => Outcome::User(user),
        })
    }

    /// A user and its accounts, read on one connection (or transaction).
    /// Whose the profile's provider account is, if anyone's.
    async fn account_owner(
        &self,
        conn: &mut sqlx::AnyConnection,
        p: &Profile<'_>,
    ) -> Result<Option<String>, sqlx::Error> {
        self.q(&self.st.account_owner)
            .bind(p.provider)
            .bind(p.account_id)
            .fetch_optional(conn)
            .await?
            .map(|r| r.try_get(0))
            .transpose()
    }

    async fn user_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
    ) -> Result<Option<User>, sqlx::Error> {
        let Some(row) = self
            .q(&self.st.user_get)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let accounts = self
            .q(&self.st.user_accounts)
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| {
                Ok(Account {
                    provider: r.try_get(0)?,
                    provider_account_id: r.try_get(1)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(Self::user_from(&row, accounts)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_gets_numbered_placeholders() {
        assert_eq!(
            render(SqlKind::Postgres, "SELECT a FROM t WHERE b = ? AND c > ?"),
            "SELECT a FROM t WHERE b = $1 AND c > $2"
        );
        assert_eq!(render(SqlKind::MySql, "x = ?"), "x = ?");
        assert_eq!(render(SqlKind::Sqlite, "x = ?"), "x = ?");
    }

    #[test]
    fn sqlite_urls_create_the_file() {
        let dir = std::env::temp_dir().join(format!("pc-sqlite-url-{}", std::process::id()));
        let url = format!("sqlite://{}/sub/p.db", dir.display());
        assert_eq!(sqlite_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(dir.join("sub").is_dir());
        let ro = format!("sqlite://{}/ro/p.db?mode=ro", dir.display());
        assert_eq!(sqlite_url(&ro).unwrap(), ro);
        assert!(
            !dir.join("ro").exists(),
            "mode=ro creates neither the file nor its directory"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
