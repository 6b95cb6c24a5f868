//! Config reload on SIGHUP and when the config file changes: the new
//! config is validated and built into a new app, which must become ready
//! (OIDC discovery, Redis) before it replaces the running one. A bad
//! config is refused with a log line and the old app keeps serving.
//! Listen addresses and log settings change only with a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::config::{self, ProcessEnv};
use crate::server::Apps;
use crate::state::App;

/// How long a new app may take to become ready before the reload is refused.
const READY_WITHIN: Duration = Duration::from_secs(10);

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches `path` (polled every 2 s) and SIGHUP; reloads on either.
pub async fn watch(apps: Apps, path: PathBuf, upstream_override: Option<url::Url>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last = modified(&path);
    loop {
        #[cfg(unix)]
        let by_signal = match hup.as_mut() {
            Some(h) => tokio::select! {
                _ = h.recv() => true,
                () = tokio::time::sleep(Duration::from_secs(2)) => false,
            },
            None => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                false
            }
        };
        #[cfg(not(unix))]
        let by_signal = {
            tokio::time::sleep(Duration::from_secs(2)).await;
            false
        };
        let now = modified(&path);
        if !by_signal && now == last {
            continue;
        }
        last = now;
        reload(&apps, &path, upstream_override.clone()).await;
    }
}

/// One reload attempt; returns whether the new config is now serving.
pub async fn reload(apps: &Apps, path: &Path, upstream_override: Option<url::Url>) -> bool {
    let mut cfg = match config::load(path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "config reload refused, the running config stays: {}",
                e.to_string().replace('\n', " ")
            );
            return false;
        }
    };
    for w in cfg.insecure_settings() {
        tracing::warn!("insecure setting: {w}");
    }
    let old = apps.load_full();
    if cfg.listen != old.config.listen || cfg.metrics.listen != old.config.metrics.listen {
        tracing::warn!(
            "listen addresses change only with a restart; the new ones are ignored until then"
        );
    }
    if cfg.workers != old.config.workers {
        tracing::warn!("workers changes only with a restart; the new number is ignored until then");
        // The running threads' number: what per-worker state is sized by.
        cfg.workers = old.config.workers;
    }
    let app = match App::new(cfg, Clock::System, upstream_override) {
        Ok(mut a) => {
            a.regulation.carry_over(&old.regulation);
            Arc::new(a)
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload refused, the running config stays");
            return false;
        }
    };
    app.start_background();
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    while !app.is_ready() {
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(
                "config reload refused: the new config did not become ready (OIDC discovery or Redis) within 10 s; the running config stays"
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.spawn_session_count();
    apps.store(app);
    tracing::info!(path = %path.display(), "config reloaded");
    true
}
