//! Regulation: brute-force protection for the sign-in forms, as Authelia's
//! `regulation` does it. After `max_retries` failures within `find_time`,
//! the user (normalised e-mail, known or not) waits `ban_time`; separately,
//! after `ip_max_retries` failures the client address (an IPv6 client by its
//! /64) waits too.
//!
//! Counters live in the store when one is configured (Redis, one Lua script
//! per subject: INCR, expiry and ban atomically, so replicas share them),
//! else in this process (bounded). A store error is returned to the caller,
//! which fails closed (503): regulation never answers "allow" blind.
//!
//! The credentials form calls [`Regulator::check`] before the password
//! check, then [`Regulator::record_failure`] or
//! [`Regulator::record_success`]; the e-mail form calls the same.
//!
//! Timing: a banned answer does no password check (a ban must not keep
//! costing argon2 CPU and memory), but waits about as long as one
//! ([`Regulator::pace`]), so a ban is not told apart from a wrong
//! password by its speed: an attacker does not learn the threshold, and no
//! one learns that another party is hammering an account.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;
use tokio::sync::Mutex;

use crate::clock::{Clock, UnixTime, rfc3339};
use crate::store::Store;
use crate::store::StoreError;

/// The `regulation:` config block, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegulationConfig {
    /// Failures of one user that start a ban; 0 turns regulation off.
    pub max_retries: u32,
    /// Failures from one client address that start a ban; 0: no IP bans.
    pub ip_max_retries: u32,
    /// The window failures are counted in (from the first one).
    pub find_time: Duration,
    pub ban_time: Duration,
}

impl Default for RegulationConfig {
    /// Authelia's defaults for users; a client address gets more room
    /// (offices and carrier NAT share one).
    fn default() -> Self {
        RegulationConfig {
            max_retries: 3,
            ip_max_retries: 20,
            find_time: Duration::from_secs(120),
            ban_time: Duration::from_secs(300),
        }
    }
}

/// Who is banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    User,
    Ip,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::User => "user",
            Subject::Ip => "ip",
        }
    }
}

/// A refusal: this user or this address waits until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banned {
    pub subject: Subject,
    pub until: UnixTime,
}

/// In-process counters never hold more keys than this (~10 MB).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    window_end: UnixTime,
    banned_until: UnixTime,
}

/// In-process counters by key (`u:<email>`, `ip:<address>`).
#[derive(Debug, Default)]
struct Table {
    map: HashMap<String, Entry>,
}

impl Table {
    fn banned(&self, key: &str, now: UnixTime) -> Option<UnixTime> {
        self.map
            .get(key)
            .map(|e| e.banned_until)
            .filter(|&u| u > now)
    }

    /// Counts a failure; `Some(until)` when it starts a ban.
    fn fail(
        &mut self,
        key: &str,
        max: u32,
        cfg: &RegulationConfig,
        now: UnixTime,
    ) -> Option<UnixTime> {
        if !self.map.contains_key(key) && self.map.len() >= MAX_ENTRIES {
            self.evict(now);
        }
        let e = self.map.entry(key.to_string()).or_default();
        if e.window_end <= now {
            e.failures = 0;
            e.window_end = now + cfg.find_time.as_secs();
        }
        e.failures += 1;
        if e.failures < max {
            return None;
        }
        e.failures = 0;
        e.window_end = now;
        e.banned_until = now + cfg.ban_time.as_secs();
        Some(e.banned_until)
    }

    fn reset(&mut self, key: &str, now: UnixTime) {
        if self.banned(key, now).is_none() {
            self.map.remove(key);
        }
    }

    /// Drops what has expired; if still full, the counters (not bans)
    /// whose window ends first, then the bans that end first: an attacker
    /// flooding fresh names cannot push out a ban while counters remain.
    fn evict(&mut self, now: UnixTime) {
        self.map
            .retain(|_, e| e.window_end > now || e.banned_until > now);
        if self.map.len() < MAX_ENTRIES {
            return;
        }
        let mut order: Vec<(bool, UnixTime, String)> = self
            .map
            .iter()
            .map(|(k, e)| {
                let banned = e.banned_until > now;
                let ends = if banned { e.banned_until } else { e.window_end };
                (banned, ends, k.clone())
            })
            .collect();
        order.sort_unstable();
        for (_, _, k) in order.into_iter().take(MAX_ENTRIES / 8) {
            self.map.remove(&k);
        }
    }
}

enum Backend {
    Memory(Arc<Mutex<Table>>),
    Store { store: Store, prefix: String },
}

/// INCR the failure counter (its expiry set with the first failure), and
/// at the threshold set the ban and drop the counter; `{failures, ban ms}`.
/// Both keys share a hash tag, so this runs on Redis Cluster too.
const FAIL_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], n, 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return {n, tonumber(ARGV[3])}
end
return {n, 0}
";

/// Counts sign-in failures and bans; one per running instance.
pub struct Regulator {
    cfg: RegulationConfig,
    backend: Backend,
    clock: Clock,
    script: Script,
    /// Moving average of a password check, in microseconds (0: none yet).
    pace_micros: AtomicU64,
}

impl std::fmt::Debug for Regulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regulator").field("cfg", &self.cfg).finish()
    }
}

/// A client address as counters see it: IPv4 (also IPv4-mapped) as is,
/// IPv6 by its /64, the block one subscriber usually holds. Bans and the
/// e-mail rate limits count by it alike.
pub(crate) fn ip_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

fn ip_key(ip: IpAddr) -> String {
    format!("ip:{}", ip_bucket(ip))
}

/// The key of a user: the normalised e-mail, bounded.
fn user_key(user: &str) -> Option<String> {
    let mut u = crate::providers::credentials::normalize_email(user);
    if u.is_empty() {
        return None;
    }
    if u.len() > 320 {
        let mut end = 320;
        while !u.is_char_boundary(end) {
            end -= 1;
        }
        u.truncate(end);
    }
    Some(format!("u:{u}"))
}

impl Regulator {
    /// Counters in `redis` (keys under `prefix`) when given, else in process.
    pub fn new(cfg: RegulationConfig, store: Option<(Store, String)>, clock: Clock) -> Self {
        let backend = match store {
            Some((store, prefix)) => Backend::Store { store, prefix },
            None => Backend::Memory(Arc::new(Mutex::new(Table::default()))),
        };
        Regulator {
            cfg,
            backend,
            clock,
            script: Script::new(FAIL_SCRIPT),
            pace_micros: AtomicU64::new(0),
        }
    }

    /// A config reload: in-process counters and bans live on in the new
    /// instance (in the store they are shared anyway).
    pub fn carry_over(&mut self, old: &Regulator) {
        if let (Backend::Memory(new), Backend::Memory(old)) = (&mut self.backend, &old.backend) {
            *new = old.clone();
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.cfg.max_retries > 0
    }

    /// The subjects counted for this attempt, with their thresholds.
    fn subjects(&self, user: &str, ip: IpAddr) -> Vec<(Subject, String, u32)> {
        let mut out = Vec::with_capacity(2);
        if !self.is_enabled() {
            return out;
        }
        if let Some(k) = user_key(user) {
            out.push((Subject::User, k, self.cfg.max_retries));
        }
        if self.cfg.ip_max_retries > 0 {
            out.push((Subject::Ip, ip_key(ip), self.cfg.ip_max_retries));
        }
        out
    }

    fn redis_keys(prefix: &str, key: &str) -> (String, String) {
        (
            format!("{prefix}reg:{{{key}}}:n"),
            format!("{prefix}reg:{{{key}}}:ban"),
        )
    }

    /// Whether this user or this address is banned now. `Err` only when
    /// the store cannot answer: the caller fails closed.
    pub async fn check(&self, user: &str, ip: IpAddr) -> Result<Result<(), Banned>, StoreError> {
        let subjects = self.subjects(user, ip);
        let now = self.clock.now();
        match &self.backend {
            Backend::Memory(t) => {
                let t = t.lock().await;
                for (subject, key, _) in &subjects {
                    if let Some(until) = t.banned(key, now) {
                        return Ok(Err(Banned {
                            subject: *subject,
                            until,
                        }));
                    }
                }
            }
            Backend::Store { store, prefix } => {
                let asks = subjects.iter().map(|(subject, key, _)| async move {
                    let ban = Self::redis_keys(prefix, key).1;
                    let ms: i64 = match store {
                        Store::Redis(r) => r.cmd(redis::cmd("PTTL").arg(&ban)).await?,
                        Store::Sql(s) => s.ttl_ms(&ban).await?.unwrap_or(-2),
                    };
                    Ok::<_, StoreError>((*subject, ms))
                });
                for (subject, ms) in futures_join(asks).await? {
                    // -2: no ban. -1 (no expiry) cannot be written by us:
                    // treat it as a fresh ban rather than as none.
                    let left = match ms {
                        -2 => continue,
                        -1 => self.cfg.ban_time.as_millis() as i64,
                        ms => ms,
                    };
                    let until = now + (left as u64).div_ceil(1000);
                    return Ok(Err(Banned { subject, until }));
                }
            }
        }
        Ok(Ok(()))
    }

    /// Counts a failed sign-in for this user and this address; returns the
    /// ban it started, if any (and logs it).
    pub async fn record_failure(
        &self,
        user: &str,
        ip: IpAddr,
    ) -> Result<Option<Banned>, StoreError> {
        let subjects = self.subjects(user, ip);
        let now = self.clock.now();
        let mut started = Vec::new();
        match &self.backend {
            Backend::Memory(t) => {
                let mut t = t.lock().await;
                for (subject, key, max) in &subjects {
                    if let Some(until) = t.fail(key, *max, &self.cfg, now) {
                        started.push(Banned {
                            subject: *subject,
                            until,
                        });
                    }
                }
            }
            Backend::Store { store, prefix } => {
                let find_ms = self.cfg.find_time.as_millis().to_string();
                let ban_ms = self.cfg.ban_time.as_millis().to_string();
                let runs = subjects.iter().map(|(subject, key, max)| {
                    let (n, ban) = Self::redis_keys(prefix, key);
                    let (find_ms, ban_ms) = (&find_ms, &ban_ms);
                    async move {
                        let ms = match store {
                            Store::Redis(r) => {
                                let r: Vec<i64> = r
                                    .script(
                                        &self.script,
                                        &[&n, &ban],
                                        &[&max.to_string(), find_ms, ban_ms],
                                    )
                                    .await?;
                                r.get(1).copied().unwrap_or(0)
                            }
                            // The same steps, one statement each: a race
                            // at the threshold sets the same ban twice.
                            Store::Sql(s) => {
                                let count = store.incr_window(&n, self.cfg.find_time).await?;
                                if count >= u64::from(*max) {
                                    let ms = i64::try_from(self.cfg.ban_time.as_millis())
                                        .unwrap_or(i64::MAX);
                                    s.kv_set(&ban, None, count as i64, ms).await?;
                                    s.kv_del(&n).await?;
                                    ms
                                } else {
                                    0
                                }
                            }
                        };
                        Ok::<_, StoreError>((*subject, ms))
                    }
                });
                for (subject, ms) in futures_join(runs).await? {
                    if ms > 0 {
                        let until = now + (ms as u64).div_ceil(1000);
                        started.push(Banned { subject, until });
                    }
                }
            }
        }
        for b in &started {
            tracing::warn!(
                subject = b.subject.as_str(),
                user = %crate::providers::credentials::normalize_email(user),
                client_ip = %ip,
                until = %rfc3339(b.until),
                "regulation: ban started"
            );
        }
        Ok(started.first().copied())
    }

    /// A successful sign-in: the user's failure count starts over (the
    /// address's does not: one right password says nothing about the rest).
    pub async fn record_success(&self, user: &str) -> Result<(), StoreError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let Some(key) = user_key(user) else {
            return Ok(());
        };
        match &self.backend {
            Backend::Memory(t) => t.lock().await.reset(&key, self.clock.now()),
            Backend::Store { store, prefix } => {
                let n = Self::redis_keys(prefix, &key).0;
                match store {
                    Store::Redis(r) => {
                        r.cmd::<i64>(redis::cmd("DEL").arg(&n)).await?;
                    }
                    Store::Sql(s) => s.kv_del(&n).await?,
                }
            }
        }
        Ok(())
    }

    /// The warn-level line an operator alerts on; never a password.
    pub fn log_refusal(&self, b: &Banned, user: &str, ip: IpAddr, provider: &str) {
        tracing::warn!(
            provider,
            subject = b.subject.as_str(),
            user = %crate::providers::credentials::normalize_email(user),
            client_ip = %ip,
            until = %rfc3339(b.until),
            "sign-in refused: banned by regulation"
        );
    }

    /// Notes how long a real password check took.
    pub fn observe(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .pace_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    // An exponential moving average, weight 1/8.
                    old - old / 8 + sample / 8
                })
            });
    }

    /// How long a banned answer should take: about one password check.
    /// `None` until one has been observed (the caller then runs one).
    pub fn pace(&self) -> Option<Duration> {
        match self.pace_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// Runs the futures concurrently (at most two: user and address), in order.
async fn futures_join<T, F>(futs: impl Iterator<Item = F>) -> Result<Vec<T>, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut futs: Vec<F> = futs.collect();
    match futs.len() {
        0 => Ok(Vec::new()),
        1 => Ok(vec![futs.remove(0).await?]),
        _ => {
            let b = futs.remove(1);
            let a = futs.remove(0);
            let (a, b) = tokio::join!(a, b);
            Ok(vec![a?, b?])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: u32, ip_max: u32) -> RegulationConfig {
        RegulationConfig {
            max_retries: max,
            ip_max_retries: ip_max,
            find_time: Duration::from_secs(120),
            ban_time: Duration::from_secs(300),
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn n_failures_within_the_window_ban_the_user_until_ban_time_ends() {
        rt().block_on(async {
            let clock = Clock::fixed(1_000);
            let r = Regulator::new(cfg(3, 0), None, clock.clone());
            for _ in 0..2 {
                assert_eq!(
                    r.record_failure("Alice@Example.com ", IP).await.unwrap(),
                    None
                );
            }
            assert_eq!(r.check("alice@example.com", IP).await.unwrap(), Ok(()));
            let ban = r.record_failure("alice@example.com", IP).await.unwrap();
            let want = Banned {
                subject: Subject::User,
                until: 1_300,
            };
            assert_eq!(ban, Some(want));
            assert_eq!(r.check(" ALICE@example.com", IP).await.unwrap(), Err(want));
            // Another user from the same address is not concerned.
            assert_eq!(r.check("bob@example.com", IP).await.unwrap(), Ok(()));
            clock.advance(299);
            assert!(r.check("alice@example.com", IP).await.unwrap().is_err());
            clock.advance(1);
            assert_eq!(r.check("alice@example.com", IP).await.unwrap(), Ok(()));
            // After a ban the count starts from zero.
            assert_eq!(
                r.record_failure("alice@example.com", IP).await.unwrap(),
                None
            );
        });
    }

    #[test]
    fn failures_spread_over_more_than_find_time_do_not_ban() {
        rt().block_on(async {
            let clock = Clock::fixed(0);
            let r = Regulator::new(cfg(3, 0), None, clock.clone());
            r.record_failure("a@b.c", IP).await.unwrap();
            r.record_failure("a@b.c", IP).await.unwrap();
            clock.advance(120);
            // The window (from the first failure) is over: this is the first of a new one.
            assert_eq!(r.record_failure("a@b.c", IP).await.unwrap(), None);
            clock.advance(119);
            assert_eq!(r.record_failure("a@b.c", IP).await.unwrap(), None);
            assert!(r.record_failure("a@b.c", IP).await.unwrap().is_some());
        });
    }

    #[test]
    fn success_resets_the_user_count_but_not_the_address_count() {
        rt().block_on(async {
            let r = Regulator::new(cfg(3, 4), None, Clock::fixed(0));
            r.record_failure("a@b.c", IP).await.unwrap();
            r.record_failure("a@b.c", IP).await.unwrap();
            r.record_success("A@b.c").await.unwrap();
            assert_eq!(r.record_failure("a@b.c", IP).await.unwrap(), None);
            assert_eq!(
                r.record_failure("a@b.c", IP).await.unwrap(),
                Some(Banned {
                    subject: Subject::Ip,
                    until: 300
                })
            );
        });
    }

    #[test]
    fn the_address_is_banned_across_users_and_ipv6_by_its_64() {
        rt().block_on(async {
            let r = Regulator::new(cfg(3, 3), None, Clock::fixed(0));
            let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
            let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
            let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
            for u in ["a@x.y", "b@x.y", "c@x.y"] {
                r.record_failure(u, v6a).await.unwrap();
            }
            assert_eq!(
                r.check("d@x.y", v6b).await.unwrap().unwrap_err().subject,
                Subject::Ip
            );
            assert_eq!(r.check("d@x.y", other).await.unwrap(), Ok(()));
            let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
            assert_eq!(ip_key(mapped), ip_key(IP));
        });
    }

    #[test]
    fn max_retries_0_turns_regulation_off() {
        rt().block_on(async {
            let r = Regulator::new(cfg(0, 3), None, Clock::fixed(0));
            for _ in 0..10 {
                assert_eq!(r.record_failure("a@b.c", IP).await.unwrap(), None);
            }
            assert_eq!(r.check("a@b.c", IP).await.unwrap(), Ok(()));
        });
    }

    #[test]
    fn a_full_table_evicts_counters_before_bans() {
        let c = cfg(2, 0);
        let mut t = Table::default();
        assert_eq!(t.fail("u:victim", 2, &c, 0), None);
        assert_eq!(t.fail("u:victim", 2, &c, 0), Some(300));
        for i in 0..MAX_ENTRIES + 10 {
            t.fail(&format!("u:flood{i}"), 2, &c, 1);
        }
        assert!(t.map.len() <= MAX_ENTRIES);
        assert_eq!(t.banned("u:victim", 2), Some(300));
    }

    #[test]
    fn pace_follows_observed_checks() {
        let r = Regulator::new(cfg(3, 0), None, Clock::fixed(0));
        assert_eq!(r.pace(), None);
        r.observe(Duration::from_millis(80));
        assert_eq!(r.pace(), Some(Duration::from_millis(80)));
        for _ in 0..50 {
            r.observe(Duration::from_millis(40));
        }
        let p = r.pace().unwrap();
        assert!(
            p > Duration::from_millis(39) && p < Duration::from_millis(42),
            "{p:?}"
        );
    }
}
