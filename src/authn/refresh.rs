//! Access-token refresh (RFC 6749 §6), single-flight: concurrent requests
//! of one session trigger one refresh, in this process (a lock per
//! session) and across replicas (a short lock in the store; the others
//! wait for the new record). A rotated refresh token is never lost: every waiter
//! adopts the winner's tokens. A refresh the provider refuses ends the
//! session (sign in again), it does not loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::config::AccessTokenHeader;
use crate::crypto::sha256_hex;
use crate::providers::oidc::{OidcError, TokenSet};
use crate::session::{Claims, Session};
use crate::state::App;

/// Refresh this long before the access token expires (when the session
/// has no `refresh_at`, e.g. a cookie Auth.js made).
const LEEWAY: u64 = 60;
/// How long a store refresh lock lives (longer than any IdP call).
const LOCK_MS: u64 = 15_000;

pub enum Outcome {
    Unchanged,
    /// This request refreshed: save the session.
    Refreshed,
    /// Another request (or replica) refreshed; the session now has its tokens.
    Adopted,
    /// The provider refused the refresh token, or the session was ended
    /// meanwhile (signed out elsewhere): the session is over.
    Ended,
}

/// In-process single-flight state.
#[derive(Default)]
pub struct Refresher {
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// jwt: old refresh-token hash → the tokens it was exchanged for.
    recent: Mutex<HashMap<String, (TokenSet, u64)>>,
}

fn due(app: &App, c: &Claims) -> bool {
    let at = c
        .refresh_at
        .or(c.expires_at.map(|e| e.saturating_sub(LEEWAY)));
    app.config.headers.access_token != AccessTokenHeader::None
        && c.refresh_token.is_some()
        && at.is_some_and(|at| app.clock.now() >= at)
}

fn apply(c: &mut Claims, t: &TokenSet) {
    if t.access_token.is_some() {
        c.access_token.clone_from(&t.access_token);
    }
    if t.refresh_token.is_some() {
        c.refresh_token.clone_from(&t.refresh_token);
    }
    if t.id_token.is_some() {
        c.id_token.clone_from(&t.id_token);
    }
    c.expires_at = t.expires_at;
    c.refresh_at = t.refresh_at;
}

fn adopt(c: &mut Claims, fresh: &Claims) {
    c.access_token.clone_from(&fresh.access_token);
    c.refresh_token.clone_from(&fresh.refresh_token);
    c.id_token.clone_from(&fresh.id_token);
    c.expires_at = fresh.expires_at;
    c.refresh_at = fresh.refresh_at;
}

/// The session's record as the store holds it now (`database`): another
/// request or replica refreshed (`Adopted`), or signed it out (`Ended`:
/// refreshing it would bring it back to life at the IdP for nothing).
async fn recheck(
    app: &App,
    db: &crate::session::database::DatabaseStore,
    session: &mut Session,
) -> Option<Outcome> {
    match db.reload(session).await {
        Ok(None) => Some(Outcome::Ended),
        Ok(Some(fresh)) if !due(app, &fresh) => {
            adopt(&mut session.claims, &fresh);
            Some(Outcome::Adopted)
        }
        _ => None,
    }
}

impl Refresher {
    async fn lock_for(&self, key: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().await;
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.to_string()).or_default().clone()
    }
}

/// Refreshes `session`'s tokens if they are about to expire.
pub async fn ensure_fresh(app: &App, session: &mut Session) -> Outcome {
    if !due(app, &session.claims) {
        return Outcome::Unchanged;
    }
    // Boxed: every request awaits `ensure_fresh`, few refresh; the refresh
    // future (locks, the store, the IdP) would make every request's
    // future that much larger, and it is moved around whole.
    Box::pin(refresh(app, session)).await
}

async fn refresh(app: &App, session: &mut Session) -> Outcome {
    let Some(provider) = session
        .claims
        .provider
        .as_deref()
        .and_then(|p| app.oidc.get(p))
        .cloned()
    else {
        return Outcome::Unchanged;
    };
    let old_rt = session.claims.refresh_token.clone().unwrap_or_default();
    let key = match &session.handle {
        Some(id) => sha256_hex(id.as_bytes()),
        None => sha256_hex(old_rt.as_bytes()),
    };
    let local = app.refresher.lock_for(&key).await;
    let _held = local.lock().await;

    // Someone in this process may have refreshed while we waited.
    if let Some(db) = app.sessions.database() {
        if let Some(done) = recheck(app, db, session).await {
            return done;
        }
    } else if let Some((tokens, at)) = app.refresher.recent.lock().await.get(&key).cloned()
        && app.clock.now() < at + 60
    {
        apply(&mut session.claims, &tokens);
        return Outcome::Adopted;
    }

    // Across replicas: one lock per session in the store; the others wait
    // for the record to change.
    let mut store_lock = None;
    if let Some(db) = app.sessions.database() {
        match db.lock(&key, LOCK_MS).await {
            Ok(Some(held)) => {
                // Another replica may have refreshed (or signed out) and
                // released the lock between our read and our taking it.
                if let Some(done) = recheck(app, db, session).await {
                    db.unlock(&held.0, &held.1).await;
                    return done;
                }
                store_lock = Some(held);
            }
            Ok(None) => {
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Some(done) = recheck(app, db, session).await {
                        return done;
                    }
                }
                tracing::warn!(
                    "token refresh by another replica did not finish in time; forwarding the current token"
                );
                return Outcome::Unchanged;
            }
            Err(e) => {
                tracing::warn!(error = %e, "token refresh lock unavailable; forwarding the current token");
                return Outcome::Unchanged;
            }
        }
    }

    let result = provider.refresh(&old_rt).await;
    let outcome = match result {
        Ok(tokens) => {
            tracing::debug!(user = %session.claims.user_id(), "access token refreshed");
            apply(&mut session.claims, &tokens);
            if app.sessions.database().is_none() {
                let mut recent = app.refresher.recent.lock().await;
                let now = app.clock.now();
                recent.retain(|_, (_, at)| now < *at + 60);
                recent.insert(key, (tokens, now));
            }
            Outcome::Refreshed
        }
        Err(OidcError::Unavailable(why)) => {
            tracing::warn!(error = %why, "token refresh failed: provider unavailable; forwarding the current token");
            Outcome::Unchanged
        }
        Err(e) => {
            tracing::info!(user = %session.claims.user_id(), reason = %e, "token refresh refused: session ended");
            Outcome::Ended
        }
    };
    if let (Some(db), Some((lock_key, token))) = (app.sessions.database(), store_lock) {
        // Save before releasing, so waiters see the new record.
        if matches!(outcome, Outcome::Refreshed)
            && let Err(e) = db.save(session).await
        {
            tracing::warn!(error = %e, "saving refreshed tokens failed");
        }
        db.unlock(&lock_key, &token).await;
    }
    outcome
}
