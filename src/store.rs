//! Server-side state: where `database` sessions, users and linked
//! accounts, e-mail verification tokens, refresh locks, shared counters
//! and the token deny list live. Redis (standalone, TLS, Sentinel or
//! Cluster) or SQL (PostgreSQL, MySQL/MariaDB, SQLite), chosen by the URL.
//!
//! [`Store`] is the handle the rest of the code holds; each consumer asks
//! it in its own terms and each backend answers in its own (Redis
//! commands and Lua, SQL tables close to Auth.js's adapter schema).

pub mod redis;
pub mod sql;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `store:` config block, validated.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: Backend,
    /// Prepended to every Redis key (`portcullis:`), so one Redis can serve
    /// several apps (SQL: every row lives in Portcullis's own tables).
    pub key_prefix: String,
    /// Bound on every command or query (and on connecting).
    pub timeout: Duration,
    /// CA bundle for `rediss://` servers with a private CA.
    pub ca_file: Option<PathBuf>,
    /// SQL: the connection pool's size.
    pub max_connections: u32,
    /// SQL: create or upgrade the schema at start (else `portcullis migrate`).
    pub auto_migrate: bool,
    /// SQL: how often expired rows are deleted, and how many per statement.
    pub sweep_interval: Duration,
    pub sweep_batch: u32,
    /// Redis (standalone, Sentinel): session records are cached in memory
    /// while Redis tracks them for us (`CLIENT TRACKING`, invalidated by
    /// push the moment they change or go).
    pub client_cache: bool,
}

/// Which server holds the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Redis(RedisTarget),
    Sql(SqlTarget),
}

/// A SQL database: its dialect and the URL its driver reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTarget {
    pub kind: SqlKind,
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlKind {
    Postgres,
    /// MySQL and MariaDB (one dialect).
    MySql,
    Sqlite,
}

impl SqlKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SqlKind::Postgres => "postgres",
            SqlKind::MySql => "mysql",
            SqlKind::Sqlite => "sqlite",
        }
    }
}

/// The store a running instance talks to; cheap to clone.
#[derive(Clone)]
pub enum Store {
    Redis(Arc<redis::Redis>),
    Sql(Arc<sql::Sql>),
}

impl Store {
    /// Builds the client; connecting happens on first use (and again after
    /// failures), so Portcullis starts, and answers 503, while it is down.
    pub fn new(cfg: &StoreConfig) -> Result<Self, String> {
        Ok(match &cfg.backend {
            Backend::Redis(_) => Store::Redis(Arc::new(redis::Redis::new(cfg)?)),
            Backend::Sql(_) => Store::Sql(Arc::new(sql::Sql::new(cfg)?)),
        })
    }

    /// The name `/metrics` gives this dependency.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Redis(_) => "redis",
            Store::Sql(s) => s.kind().as_str(),
        }
    }

    pub fn is_healthy(&self) -> bool {
        match self {
            Store::Redis(r) => r.is_healthy(),
            Store::Sql(s) => s.is_healthy(),
        }
    }

    /// Health checks (and, for SQL, auto-migration and sweeping) in the
    /// background; the tasks end when the handle is dropped.
    pub fn spawn_background(&self) {
        match self {
            Store::Redis(r) => r.spawn_health(),
            Store::Sql(s) => s.spawn_background(),
        }
    }

    /// Counts a hit against `key` in a window of `window` that starts
    /// with the first hit; the count so far (atomic on every backend).
    pub async fn incr_window(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
        match self {
            Store::Redis(r) => {
                static COUNT: std::sync::LazyLock<::redis::Script> =
                    std::sync::LazyLock::new(|| {
                        ::redis::Script::new(
                            "local n = redis.call('INCR', KEYS[1]) \
                         if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
                         return n",
                        )
                    });
                r.script(&COUNT, &[key], &[&ms.to_string()]).await
            }
            Store::Sql(s) => s.incr_window(key, ms).await.map(|n| n.max(0) as u64),
        }
    }

    /// Makes the store usable: SQL checks its schema (and migrates it
    /// when `auto_migrate` is on); Redis needs nothing.
    pub async fn prepare(&self) -> Result<(), String> {
        match self {
            Store::Redis(_) => Ok(()),
            Store::Sql(s) => s.prepare().await.map_err(|e| e.to_string()),
        }
    }

    pub fn stats(&self) -> &crate::metrics::Dependency {
        match self {
            Store::Redis(r) => &r.stats,
            Store::Sql(s) => s.stats.as_ref(),
        }
    }
}

/// Which Redis topology, from the URL's scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://host:port/db` or `rediss://...` (TLS).
    Standalone(String),
    /// `redis+sentinel://h1:p1,h2:p2/master` (or `rediss+sentinel://`).
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        tls: bool,
        password: Option<String>,
    },
    /// `redis+cluster://h1:p1,h2:p2` (or `rediss+cluster://`).
    Cluster {
        nodes: Vec<String>,
        tls: bool,
        password: Option<String>,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store is unreachable, timed out or refused: fail closed (503).
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    #[error("the session store answered something unexpected: {0}")]
    Corrupt(String),
}

/// Parses a store URL of any backend; the message names what is wrong.
pub fn parse_url(url: &str) -> Result<Backend, String> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    let kind = match scheme {
        "postgres" | "postgresql" => SqlKind::Postgres,
        "mysql" | "mariadb" => SqlKind::MySql,
        "sqlite" => SqlKind::Sqlite,
        _ => return parse_redis_url(url).map(Backend::Redis),
    };
    if kind == SqlKind::Sqlite {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or("");
        let path = path.split('?').next().unwrap_or("");
        if path.is_empty() {
            return Err(
                "name the database file: sqlite:///var/lib/portcullis/portcullis.db".into(),
            );
        }
        return Ok(Backend::Sql(SqlTarget {
            kind,
            url: url.to_string(),
        }));
    }
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "name the server: {scheme}://user@host:port/database"
        ));
    }
    if parsed.path().trim_matches('/').is_empty() {
        return Err(format!(
            "name the database: {scheme}://user@host:port/database"
        ));
    }
    // sqlx reads `mysql://` for both MySQL and MariaDB.
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_string(),
    };
    Ok(Backend::Sql(SqlTarget { kind, url }))
}

/// A URL for logs and `portcullis check`: no password.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Parses a Redis URL; the message names what is wrong.
pub fn parse_redis_url(url: &str) -> Result<RedisTarget, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("expected a URL like redis://127.0.0.1:6379")?;
    let userinfo_password = |authority: &str| -> Option<String> {
        let (userinfo, _) = authority.rsplit_once('@')?;
        let pw = userinfo.split_once(':').map(|(_, p)| p).unwrap_or(userinfo);
        (!pw.is_empty()).then(|| {
            url::form_urlencoded::parse(format!("p={pw}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
    };
    let hosts = |list: &str| -> Result<Vec<String>, String> {
        let list = list.rsplit_once('@').map(|(_, h)| h).unwrap_or(list);
        let hosts: Vec<String> = list
            .split(',')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        if hosts.is_empty() || hosts.iter().any(|h| !h.contains(':')) {
            return Err("list each node as host:port, separated by commas".to_string());
        }
        Ok(hosts)
    };
    match scheme {
        "redis" | "rediss" => {
            url::Url::parse(url).map_err(|e| e.to_string())?;
            Ok(RedisTarget::Standalone(url.to_string()))
        }
        "redis+sentinel" | "rediss+sentinel" => {
            let (list, master) = rest
                .split_once('/')
                .ok_or("add the master name: redis+sentinel://h1:26379,h2:26379/mymaster")?;
            let master = master.trim_matches('/');
            if master.is_empty() {
                return Err("add the master name after the hosts: .../mymaster".into());
            }
            Ok(RedisTarget::Sentinel {
                sentinels: hosts(list)?,
                master: master.into(),
                tls: scheme.starts_with("rediss"),
                password: userinfo_password(list),
            })
        }
        "redis+cluster" | "rediss+cluster" => {
            let list = rest.trim_end_matches('/');
            Ok(RedisTarget::Cluster {
                nodes: hosts(list)?,
                tls: scheme.starts_with("rediss"),
                password: userinfo_password(list),
            })
        }
        other => Err(format!(
            "unknown scheme {other:?}: use redis://, rediss://, redis+sentinel:// or redis+cluster://"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_topology() {
        assert_eq!(
            parse_redis_url("redis://127.0.0.1:6379/0").unwrap(),
            RedisTarget::Standalone("redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(
            parse_redis_url("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster").unwrap(),
            RedisTarget::Sentinel {
                sentinels: vec!["10.0.0.1:26379".into(), "10.0.0.2:26379".into()],
                master: "mymaster".into(),
                tls: false,
                password: Some("pw".into())
            }
        );
        assert_eq!(
            parse_redis_url("rediss+cluster://a:1,b:2").unwrap(),
            RedisTarget::Cluster {
                nodes: vec!["a:1".into(), "b:2".into()],
                tls: true,
                password: None
            }
        );
        assert!(parse_redis_url("redis+sentinel://a:1").is_err());
        assert!(parse_redis_url("memcached://x").is_err());
        assert!(parse_redis_url("redis+cluster://nohostport").is_err());
    }

    #[test]
    fn urls_pick_the_backend() {
        let sql = |u: &str| match parse_url(u) {
            Ok(Backend::Sql(t)) => Some((t.kind, t.url)),
            _ => None,
        };
        assert_eq!(
            sql("postgres://pc@127.0.0.1:5432/test"),
            Some((
                SqlKind::Postgres,
                "postgres://pc@127.0.0.1:5432/test".into()
            ))
        );
        assert_eq!(
            sql("mariadb://root@127.0.0.1:3306/test"),
            Some((SqlKind::MySql, "mysql://root@127.0.0.1:3306/test".into()))
        );
        assert_eq!(
            sql("sqlite:///var/lib/portcullis/p.db"),
            Some((SqlKind::Sqlite, "sqlite:///var/lib/portcullis/p.db".into()))
        );
        assert!(matches!(
            parse_url("redis://127.0.0.1:6379"),
            Ok(Backend::Redis(_))
        ));
        assert!(
            parse_url("postgres://127.0.0.1:5432").is_err(),
            "no database"
        );
        assert!(parse_url("sqlite://").is_err(), "no file");
        assert!(parse_url("oracle://x/y").is_err());
        assert_eq!(
            redact_url("postgres://u:secret@h:1/d"),
            "postgres://u:redacted@h:1/d"
        );
    }
}

#[cfg(test)]
mod client_cache_config {
    const NO_ENV: [(&str, &str); 0] = [];

    fn load(store: &str) -> Result<crate::config::Config, String> {
        let yaml = format!(
            "secrets: [\"0123456789abcdef0123456789abcdef0123456789ab\"]\nproviders:\n  - type: credentials\n    users: []\nsession:\n  strategy: database\nstore:\n{store}"
        );
        crate::config::load_str(&yaml, "t.yaml", &NO_ENV[..]).map_err(|e| e.to_string())
    }

    fn cached(store: &str) -> bool {
        load(store).unwrap().store.unwrap().client_cache
    }

    #[test]
    fn on_by_default_for_redis_off_where_it_cannot_be() {
        assert!(cached("  url: redis://127.0.0.1:6379\n"));
        assert!(cached("  url: redis+sentinel://127.0.0.1:26379/mymaster\n"));
        assert!(!cached(
            "  url: redis://127.0.0.1:6379\n  client_cache: false\n"
        ));
        assert!(!cached(
            "  url: redis+cluster://127.0.0.1:7000,127.0.0.1:7001\n"
        ));
        assert!(!cached("  url: postgres://u@127.0.0.1:5432/db\n"));
    }

    #[test]
    fn asked_for_where_it_cannot_be_is_refused_with_the_key() {
        for store in [
            "  url: redis+cluster://127.0.0.1:7000\n  client_cache: true\n",
            "  url: postgres://u@127.0.0.1:5432/db\n  client_cache: true\n",
        ] {
            let e = load(store).unwrap_err();
            assert!(e.contains("store.client_cache"), "{e}");
        }
    }
}
