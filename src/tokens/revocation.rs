//! The deny list of API tokens: revocation ids (hex), one per block of a
//! revoked token. Revoking a token's first block revokes every token
//! attenuated from it, since they share that block.
//!
//! Kept in Redis when a store is configured (one set, shared by every
//! replica), else in a file (`tokens.revocation_file`, one id a line),
//! re-read when it changes (checked at most once a second), without a
//! restart. A list that cannot be read denies (fail closed).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::store::Store;
use crate::store::StoreError;

/// How often the file's modification time is looked at.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("the revocation list cannot be read: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub enum Revocation {
    /// No deny list configured: nothing is revoked.
    None,
    File(FileList),
    /// A set in the store (Redis, or SQL's `portcullis_set`).
    Store {
        store: Store,
        key: String,
    },
}

/// The name of the set holding revoked ids, under the store's key prefix.
pub fn store_key(prefix: &str) -> String {
    format!("{prefix}biscuit-revoked")
}

impl Revocation {
    /// Whether any of `ids` is revoked. `Err` means "cannot tell": deny.
    pub async fn any_revoked(&self, ids: &[String]) -> Result<bool, RevocationError> {
        match self {
            Revocation::None => Ok(false),
            Revocation::File(f) => f.any_revoked(ids).await,
            Revocation::Store {
                store: Store::Redis(redis),
                key,
            } => {
                let mut cmd = redis::cmd("SMISMEMBER");
                cmd.arg(key);
                for id in ids {
                    cmd.arg(id);
                }
                let found: Vec<i64> = redis.cmd(&cmd).await?;
                Ok(found.contains(&1))
            }
            Revocation::Store {
                store: Store::Sql(s),
                key,
            } => Ok(s.set_any(key, ids).await?),
        }
    }

    /// Adds ids to the list (`portcullis token revoke`).
    pub async fn add(&self, ids: &[String]) -> Result<(), RevocationError> {
        match self {
            Revocation::None => Err(RevocationError::Unreadable(
                "no deny list: configure `store` or `tokens.revocation_file`".into(),
            )),
            Revocation::File(f) => append_file(&f.path, ids),
            Revocation::Store {
                store: Store::Redis(redis),
                key,
            } => {
                let mut cmd = redis::cmd("SADD");
                cmd.arg(key);
                for id in ids {
                    cmd.arg(id);
                }
                let _: i64 = redis.cmd(&cmd).await?;
                Ok(())
            }
            Revocation::Store {
                store: Store::Sql(s),
                key,
            } => Ok(s.set_add(key, ids).await?),
        }
    }
}

/// A deny list in a file, re-read when its modification time or size
/// changes.
pub struct FileList {
    path: PathBuf,
    loaded: ArcSwap<Loaded>,
    /// Milliseconds since the epoch of the last look at the file.
    checked_ms: AtomicU64,
}

#[derive(Default)]
struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    ids: HashSet<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl FileList {
    pub fn new(path: PathBuf) -> Self {
        FileList {
            path,
            loaded: ArcSwap::from_pointee(Loaded::default()),
            checked_ms: AtomicU64::new(0),
        }
    }

    async fn any_revoked(&self, ids: &[String]) -> Result<bool, RevocationError> {
        let now = now_ms();
        let last = self.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= FILE_CHECK_EVERY.as_millis() as u64
            && self
                .checked_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            && let Err(e) = self.reload().await
        {
            // Look again on the next request, and deny this one.
            self.checked_ms.store(0, Ordering::Relaxed);
            return Err(e);
        }
        let loaded = self.loaded.load();
        Ok(ids.iter().any(|id| loaded.ids.contains(id)))
    }

    async fn reload(&self) -> Result<(), RevocationError> {
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(m) => m,
            // Nothing revoked yet: `token revoke` creates the file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.loaded.store(Arc::new(Loaded::default()));
                return Ok(());
            }
            Err(e) => return Err(RevocationError::Unreadable(e.to_string())),
        };
        let stamp = Some((meta.modified().unwrap_or(UNIX_EPOCH), meta.len()));
        if self.loaded.load().stamp == stamp {
            return Ok(());
        }
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| RevocationError::Unreadable(e.to_string()))?;
        let ids = parse(&text);
        tracing::info!(
            path = %self.path.display(),
            revoked = ids.len(),
            "token revocation list loaded"
        );
        self.loaded.store(Arc::new(Loaded { stamp, ids }));
        Ok(())
    }
}

/// One hex id a line; blank lines and `#` comments skipped.
fn parse(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_ascii_lowercase)
        .collect()
}

fn append_file(path: &Path, ids: &[String]) -> Result<(), RevocationError> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| RevocationError::Unreadable(format!("{}: {e}", path.display())))?;
    let mut text = String::new();
    for id in ids {
        text.push_str(id);
        text.push('\n');
    }
    f.write_all(text.as_bytes())
        .map_err(|e| RevocationError::Unreadable(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_format_skips_comments_and_blank_lines() {
        let ids = parse("# revoked\n\nABCD\n  ef01  \n");
        assert_eq!(ids.len(), 2);
        assert!(ids.contains("abcd") && ids.contains("ef01"));
    }
}
