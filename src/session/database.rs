//! The `database` strategy: the cookie holds only an opaque random id;
//! the session lives in the store (Redis or SQL), sealed (the same JWE as
//! cookies, its own key), under the SHA-256 of the id, so a dump of the
//! store hands out neither live cookies nor tokens. A request costs one
//! read (`GET`, or one `SELECT` by primary key): the cookie carries the
//! time it was issued, so only once per `update_age` does a second command
//! slide the record and a new cookie go out.

use std::sync::Arc;

use http::HeaderMap;
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::store::Store;
use crate::store::sql::{NewSession, SessionIndex};

use super::{Claims, Loaded, Session};
use crate::clock::{Clock, UnixTime};
use crate::config::SessionConfig;
use crate::crypto::jwe::JweKeys;
use crate::crypto::{Secret, random_token, sha256_hex};
use crate::http::cookies::{self, CookieNames, SameSite, SetCookie};
use crate::store::StoreError;

/// What a record holds (sealed).
#[derive(Serialize, Deserialize)]
struct Record {
    /// The id hash the record was written under: a record copied to
    /// another key does not open there.
    h: String,
    c: Claims,
    created: UnixTime,
}

/// One session as `portcullis sessions list` shows it: no secrets.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub id_hash_prefix: String,
    pub user: String,
    pub provider: Option<String>,
    pub created: UnixTime,
    pub expires_in_secs: i64,
}

pub struct DatabaseStore {
    store: Store,
    keys: JweKeys,
    prefix: String,
    cookie: String,
    secure: bool,
    max_age: u64,
    update_age: u64,
    clock: Clock,
    /// Opened records by id hash (direct-mapped, lock-free reads).
    opened: Box<[arc_swap::ArcSwapOption<(String, Claims)>]>,
}

/// An id as we mint them: 43 base64url characters (256 bits).
fn valid_id(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The cookie value `<id>.<issued at, hex>`: the id, and when this cookie
/// was issued (a client can only make its own session slide sooner).
fn parse_cookie(v: &str) -> Option<(&str, u64)> {
    let (id, t) = v.split_once('.')?;
    if !valid_id(id) || t.is_empty() || t.len() > 16 {
        return None;
    }
    Some((id, u64::from_str_radix(t, 16).ok()?))
}

impl DatabaseStore {
    pub fn new(
        store: Store,
        prefix: &str,
        secrets: &[Secret],
        names: &CookieNames,
        cfg: &SessionConfig,
        clock: Clock,
    ) -> Self {
        DatabaseStore {
            store,
            keys: JweKeys::derive(secrets, "portcullis.store.session"),
            prefix: prefix.to_string(),
            cookie: names.session.clone(),
            secure: names.secure,
            max_age: cfg.max_age.as_secs(),
            update_age: cfg.update_age.as_secs(),
            clock,
            opened: (0..1024)
                .map(|_| arc_swap::ArcSwapOption::empty())
                .collect(),
        }
    }

    fn session_key(&self, hash: &str) -> String {
        format!("{}s:{hash}", self.prefix)
    }

    /// Who a user's sessions are indexed by: the hash of the e-mail, else
    /// of the user id (a Redis set's key; a SQL column).
    fn user_hash(email: Option<&str>, user_id: &str) -> String {
        let who = match email {
            Some(e) => format!("email:{}", e.trim().to_ascii_lowercase()),
            None => format!("id:{user_id}"),
        };
        sha256_hex(who.as_bytes())
    }

    /// The index of sessions by provider subject (back-channel logout).
    fn subject_hash(provider: &str, sub: &str) -> String {
        sha256_hex(format!("{provider}\0{sub}").as_bytes())
    }

    fn user_key_for(&self, email: Option<&str>, user_id: &str) -> String {
        format!("{}u:{}", self.prefix, Self::user_hash(email, user_id))
    }

    fn user_key(&self, c: &Claims) -> String {
        self.user_key_for(c.email.as_deref(), c.user_id())
    }

    fn subject_key(&self, provider: &str, sub: &str) -> String {
        format!("{}x:{}", self.prefix, Self::subject_hash(provider, sub))
    }

    /// The sealed record stored under `hash`, if live. Redis may answer
    /// from its client-side cache (invalidated by push, see store/redis.rs).
    async fn read(&self, hash: &str) -> Result<Option<String>, StoreError> {
        match &self.store {
            Store::Redis(r) => r.get(self.session_key(hash)).await,
            Store::Sql(s) => s.session_get(hash, self.clock.now()).await,
        }
    }

    /// [`Self::read`] from the store itself, never from memory: for what
    /// must see another replica's write the moment it learns of it by
    /// another way (a released refresh lock), before Redis's push arrives.
    async fn read_fresh(&self, hash: &str) -> Result<Option<String>, StoreError> {
        match &self.store {
            Store::Redis(r) => r.cmd(redis::cmd("GET").arg(self.session_key(hash))).await,
            Store::Sql(s) => s.session_get(hash, self.clock.now()).await,
        }
    }

    fn seal(&self, hash: &str, claims: &Claims, created: UnixTime) -> String {
        let rec = Record {
            h: hash.to_string(),
            c: claims.clone(),
            created,
        };
        self.keys
            .seal(&serde_json::to_vec(&rec).unwrap_or_default())
    }

    fn open(&self, hash: &str, sealed: &str) -> Option<Record> {
        let rec: Record = serde_json::from_slice(&self.keys.open(sealed).ok()?).ok()?;
        (rec.h == hash).then_some(rec)
    }

    /// [`Self::open`], remembering the last record each slot opened: the
    /// store is still read on every request (revocation is immediate);
    /// only decrypting the very same sealed bytes again is skipped.
    fn open_cached(&self, hash: &str, sealed: String) -> Option<Claims> {
        let slot =
            &self.opened[usize::from_str_radix(&hash[..8], 16).unwrap_or(0) % self.opened.len()];
        if let Some(hit) = slot.load().as_ref()
            && crate::crypto::ct_eq(hit.0.as_bytes(), sealed.as_bytes())
        {
            return Some(hit.1.clone());
        }
        let claims = self.open(hash, &sealed)?.c;
        slot.store(Some(Arc::new((sealed, claims.clone()))));
        Some(claims)
    }

    fn set_cookie(&self, id: &str, domain: Option<&str>) -> String {
        let now = self.clock.now();
        let exp = now + self.max_age;
        let value = format!("{id}.{now:x}");
        SetCookie {
            name: &self.cookie,
            value: &value,
            expires: Some(exp),
            max_age: None,
            domain,
            http_only: true,
            secure: self.secure,
            path: "/",
            same_site: SameSite::Lax,
        }
        .render()
    }

    pub async fn load(&self, headers: &HeaderMap) -> Result<Loaded, StoreError> {
        let (value, chunks) = cookies::get_chunked(headers, &self.cookie);
        let present = value.is_some() || chunks > 0;
        let Some((id, issued)) = value.as_deref().and_then(parse_cookie) else {
            return Ok(Loaded {
                session: None,
                chunks,
                present,
            });
        };
        let hash = sha256_hex(id.as_bytes());
        let now = self.clock.now();
        let sealed = self.read(&hash).await?;
        let Some(mut claims) = sealed.and_then(|s| self.open_cached(&hash, s)) else {
            return Ok(Loaded {
                session: None,
                chunks,
                present,
            });
        };
        let due = now.saturating_sub(issued) >= self.update_age;
        if due {
            // Slide the record with the cookie (once per update_age).
            match &self.store {
                Store::Redis(r) => {
                    // (The cached TTL is the old one: forgotten too.)
                    let key = self.session_key(&hash);
                    r.write::<i64>(&key, redis::cmd("EXPIRE").arg(&key).arg(self.max_age))
                        .await?;
                }
                Store::Sql(s) => s.session_touch(&hash, now + self.max_age).await?,
            }
        }
        // The record's life is the session's: `exp` follows it.
        claims.exp = now + self.max_age;
        let session = Some(Session {
            claims,
            needs_refresh: due,
            handle: Some(id.to_string()),
            via: crate::session::Via::Cookie,
        });
        Ok(Loaded {
            session,
            chunks,
            present,
        })
    }

    /// Stores a new session; returns its cookie.
    pub async fn create(
        &self,
        claims: &mut Claims,
        seen_chunks: usize,
        domain: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let id = random_token(32);
        let hash = sha256_hex(id.as_bytes());
        let now = self.clock.now();
        claims.iat = now;
        claims.exp = now + self.max_age;
        claims.jti = None;
        let sealed = self.seal(&hash, claims, now);
        match &self.store {
            Store::Redis(r) => {
                // One pipeline per key: in a cluster each key has its own slot.
                let key = self.session_key(&hash);
                r.write::<()>(
                    &key,
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&sealed)
                        .arg("EX")
                        .arg(self.max_age),
                )
                .await?;
                let mut indexes = vec![self.user_key(claims)];
                if let (Some(provider), Some(sub)) = (&claims.provider, &claims.sub) {
                    indexes.push(self.subject_key(provider, sub));
                }
                for index in indexes {
                    let mut p = redis::pipe();
                    p.cmd("SADD").arg(&index).arg(&hash).ignore();
                    p.cmd("EXPIRE").arg(&index).arg(self.max_age).ignore();
                    r.pipe::<()>(&p).await?;
                }
            }
            Store::Sql(s) => {
                let subject = match (&claims.provider, &claims.sub) {
                    (Some(provider), Some(sub)) => Some(Self::subject_hash(provider, sub)),
                    _ => None,
                };
                s.session_insert(&NewSession {
                    token_hash: &hash,
                    // Our user's id when the sign-in has one (`users.id`).
                    user_id: claims.uid.as_deref().unwrap_or(claims.user_id()),
                    user_key: &Self::user_hash(claims.email.as_deref(), claims.user_id()),
                    subject_key: subject.as_deref(),
                    data: &sealed,
                    created: now,
                    expires: now + self.max_age,
                })
                .await?;
            }
        }
        let mut out = vec![self.set_cookie(&id, domain)];
        for i in 0..seen_chunks {
            out.push(cookies::clear(
                &format!("{}.{i}", self.cookie),
                domain,
                self.secure,
            ));
        }
        Ok(out)
    }

    /// `Set-Cookie` values that delete the id cookie (and stale chunks).
    pub fn clear(&self, seen_chunks: usize, domain: Option<&str>) -> Vec<String> {
        cookies::clear_chunked(&self.cookie, seen_chunks, domain, self.secure)
    }

    /// Re-issues the cookie (its expiry slides; the record already did).
    pub fn reissue(&self, session: &Session, domain: Option<&str>) -> Vec<String> {
        session
            .handle
            .as_deref()
            .map(|id| vec![self.set_cookie(id, domain)])
            .unwrap_or_default()
    }

    /// Writes changed claims (refreshed tokens, `update()`), keeping the TTL.
    pub async fn save(&self, session: &Session) -> Result<(), StoreError> {
        let Some(id) = &session.handle else {
            return Ok(());
        };
        let hash = sha256_hex(id.as_bytes());
        let sealed = self.seal(&hash, &session.claims, session.claims.iat);
        match &self.store {
            // XX: only a session that still exists (not one signed out
            // meanwhile); KEEPTTL: the expiry stays where it slid to.
            Store::Redis(r) => {
                let key = self.session_key(&hash);
                r.write::<Option<String>>(
                    &key,
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&sealed)
                        .arg("XX")
                        .arg("KEEPTTL"),
                )
                .await
                .map(|_| ())
            }
            Store::Sql(s) => s.session_save(&hash, &sealed, self.clock.now()).await,
        }
    }

    /// Reads the current record again (after another request refreshed
    /// it), from the store itself.
    pub async fn reload(&self, session: &Session) -> Result<Option<Claims>, StoreError> {
        let Some(id) = &session.handle else {
            return Ok(None);
        };
        let hash = sha256_hex(id.as_bytes());
        let sealed = self.read_fresh(&hash).await?;
        Ok(sealed.and_then(|s| self.open(&hash, &s)).map(|r| r.c))
    }

    /// Takes the refresh lock of the session `hash` for `ms` unless another
    /// request (or replica) holds it; the key and token to release it with.
    pub async fn lock(&self, hash: &str, ms: u64) -> Result<Option<(String, String)>, StoreError> {
        let key = format!("{}l:{hash}", self.prefix);
        let token = random_token(16);
        let held = match &self.store {
            Store::Redis(r) => r
                .cmd::<Option<String>>(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(ms),
                )
                .await?
                .is_some(),
            Store::Sql(s) => s.set_nx(&key, &token, ms as i64).await?,
        };
        Ok(held.then_some((key, token)))
    }

    /// Releases a lock only if it is still ours (compare and delete).
    pub async fn unlock(&self, key: &str, token: &str) {
        let done = match &self.store {
            Store::Redis(r) => {
                let script = Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                );
                r.script::<i64>(&script, &[key], &[token]).await.map(|_| ())
            }
            Store::Sql(s) => s.kv_del_if(key, token).await,
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "releasing a refresh lock failed (it expires by itself)");
        }
    }

    /// Deletes one session (sign-out): the cookie is dead everywhere.
    pub async fn destroy(&self, session: &Session) -> Result<(), StoreError> {
        let Some(id) = &session.handle else {
            return Ok(());
        };
        let hash = sha256_hex(id.as_bytes());
        match &self.store {
            Store::Redis(r) => {
                let key = self.session_key(&hash);
                r.write::<i64>(&key, redis::cmd("DEL").arg(&key)).await?;
                r.cmd::<i64>(
                    redis::cmd("SREM")
                        .arg(self.user_key(&session.claims))
                        .arg(&hash),
                )
                .await?;
            }
            Store::Sql(s) => {
                s.session_delete(&hash).await?;
            }
        }
        Ok(())
    }

    /// Ends every session under one index: `hash` is the user's or the
    /// subject's hash.
    async fn destroy_index(&self, index: SessionIndex, hash: &str) -> Result<usize, StoreError> {
        let r = match &self.store {
            Store::Sql(s) => {
                let n = s.sessions_delete(index, hash).await?;
                return Ok(usize::try_from(n).unwrap_or(usize::MAX));
            }
            Store::Redis(r) => r,
        };
        let index = match index {
            SessionIndex::User => format!("{}u:{hash}", self.prefix),
            SessionIndex::Subject => format!("{}x:{hash}", self.prefix),
        };
        let hashes: Vec<String> = r.cmd(redis::cmd("SMEMBERS").arg(&index)).await?;
        // One DEL per key (cluster slots differ); sign-out everywhere is rare.
        let mut ended = 0;
        for h in &hashes {
            let key = self.session_key(h);
            ended += r.write::<i64>(&key, redis::cmd("DEL").arg(&key)).await?;
        }
        r.cmd::<i64>(redis::cmd("DEL").arg(&index)).await?;
        Ok(usize::try_from(ended).unwrap_or(0))
    }

    /// Ends every session of the user `claims` names (sign-out everywhere).
    pub async fn destroy_user(
        &self,
        email: Option<&str>,
        user_id: &str,
    ) -> Result<usize, StoreError> {
        self.destroy_index(SessionIndex::User, &Self::user_hash(email, user_id))
            .await
    }

    /// Ends every session a provider subject has (back-channel logout).
    pub async fn destroy_subject(&self, provider: &str, sub: &str) -> Result<usize, StoreError> {
        self.destroy_index(SessionIndex::Subject, &Self::subject_hash(provider, sub))
            .await
    }

    /// How many sessions the store holds (SCAN, bounded); `None` on a
    /// cluster (SCAN there covers one node) or when the store is down.
    pub async fn count(&self) -> Option<i64> {
        let redis = match &self.store {
            Store::Sql(s) => return s.sessions_count(self.clock.now()).await.ok(),
            Store::Redis(r) if r.is_cluster() => return None,
            Store::Redis(r) => r,
        };
        let pattern = format!("{}s:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut n: i64 = 0;
        for _ in 0..10_000 {
            let (next, keys): (u64, Vec<String>) = redis
                .cmd(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await
                .ok()?;
            n += i64::try_from(keys.len()).unwrap_or(0);
            cursor = next;
            if cursor == 0 {
                return Some(n);
            }
        }
        Some(n)
    }

    /// The user's live sessions, without any secret.
    pub async fn list_user(&self, email: &str) -> Result<Vec<Summary>, StoreError> {
        let summary = |h: &str, rec: Record, ttl: i64| Summary {
            id_hash_prefix: h.chars().take(12).collect(),
            user: rec
                .c
                .email
                .clone()
                .unwrap_or_else(|| rec.c.user_id().to_string()),
            provider: rec.c.provider.clone(),
            created: rec.created,
            expires_in_secs: ttl,
        };
        let user_hash = Self::user_hash(Some(email), "");
        let r = match &self.store {
            Store::Sql(s) => {
                let now = self.clock.now();
                let rows = s.sessions_list(&user_hash, now).await?;
                return Ok(rows
                    .into_iter()
                    .filter_map(|row| {
                        let rec = self.open(&row.token_hash, &row.data)?;
                        let ttl = row.expires.saturating_sub(now) as i64;
                        Some(summary(&row.token_hash, rec, ttl))
                    })
                    .collect());
            }
            Store::Redis(r) => r,
        };
        let index = self.user_key_for(Some(email), "");
        let hashes: Vec<String> = r.cmd(redis::cmd("SMEMBERS").arg(&index)).await?;
        let mut out = Vec::new();
        for h in hashes {
            let key = self.session_key(&h);
            let mut p = redis::pipe();
            p.cmd("GET").arg(&key).cmd("TTL").arg(&key);
            let (sealed, ttl): (Option<String>, i64) = r.pipe(&p).await?;
            match sealed.and_then(|s| self.open(&h, &s)) {
                Some(rec) => out.push(summary(&h, rec, ttl)),
                None => {
                    // Expired: prune the index.
                    r.cmd::<i64>(redis::cmd("SREM").arg(&index).arg(&h)).await?;
                }
            }
        }
        Ok(out)
    }
}
