//! Server-side state: where `database` sessions (and later users,
//! accounts and verification tokens) live. Today: Redis, standalone,
//! TLS, Sentinel or Cluster, chosen by the URL.

pub mod redis;

use std::path::PathBuf;
use std::time::Duration;

/// The `store:` config block, validated.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub redis: RedisTarget,
    /// Prepended to every key (`portcullis:`), so one Redis can serve several apps.
    pub key_prefix: String,
    /// Bound on every command (and on connecting).
    pub timeout: Duration,
    /// CA bundle for `rediss://` servers with a private CA.
    pub ca_file: Option<PathBuf>,
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis is unreachable, timed out or refused: fail closed (503).
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    #[error("the session store answered something unexpected: {0}")]
    Corrupt(String),
}

/// Parses a store URL; the message names what is wrong.
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
}
