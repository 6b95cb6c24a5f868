//! Prometheus metrics, lock-free: fixed label sets known at start, atomic
//! counters and histograms, rendered in the text exposition format at
//! `/metrics`. Nothing on the request path allocates or locks.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Where a request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Proxy,
    ForwardAuth,
    AuthRequest,
    SignIn,
    Callback,
    SignOut,
    Session,
    Other,
}

const ROUTES: [Route; 8] = [
    Route::Proxy,
    Route::ForwardAuth,
    Route::AuthRequest,
    Route::SignIn,
    Route::Callback,
    Route::SignOut,
    Route::Session,
    Route::Other,
];

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Proxy => "proxy",
            Route::ForwardAuth => "forward_auth",
            Route::AuthRequest => "auth_request",
            Route::SignIn => "signin",
            Route::Callback => "callback",
            Route::SignOut => "signout",
            Route::Session => "session",
            Route::Other => "other",
        }
    }
}

/// What the access decision was (`none`: no decision was needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Public,
    Unauthenticated,
    Forbidden,
    Error,
    None,
}

const OUTCOMES: [Outcome; 6] = [
    Outcome::Allow,
    Outcome::Public,
    Outcome::Unauthenticated,
    Outcome::Forbidden,
    Outcome::Error,
    Outcome::None,
];

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Public => "public",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::Error => "error",
            Outcome::None => "none",
        }
    }
}

/// Seconds, Prometheus's default-like buckets from 0.25 ms to 10 s.
const BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// A call to a dependency (Redis, an identity provider): latency and errors.
#[derive(Default)]
pub struct Dependency {
    pub latency: Histogram,
    pub errors: AtomicU64,
}

impl Dependency {
    pub fn record<T, E>(&self, started: std::time::Instant, result: &Result<T, E>) {
        self.latency.observe(started.elapsed());
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sign-in outcomes, per provider.
const SIGNIN_OUTCOMES: [&str; 5] = ["success", "failure", "denied", "banned", "linked"];

/// Client connections of the whole process (they outlive a config
/// reload's `Metrics`): open, and of those parked (idle HTTP/1 with its
/// buffers released, see `server.rs`).
pub static CONNECTIONS: Connections = Connections {
    open: AtomicI64::new(0),
    parked: AtomicI64::new(0),
};

pub struct Connections {
    open: AtomicI64,
    parked: AtomicI64,
}

/// Counts one connection (or one parked spell) while it lives.
pub struct Counted(&'static AtomicI64);

impl Connections {
    pub fn open(&'static self) -> Counted {
        self.open.fetch_add(1, Ordering::Relaxed);
        Counted(&self.open)
    }

    pub fn parked(&'static self) -> Counted {
        self.parked.fetch_add(1, Ordering::Relaxed);
        Counted(&self.parked)
    }

    fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP portcullis_open_connections Client connections open.
# TYPE portcullis_open_connections gauge
",
        );
        let _ = writeln!(
            out,
            "portcullis_open_connections {}",
            self.open.load(Ordering::Relaxed)
        );
        out.push_str("# HELP portcullis_parked_connections Idle HTTP/1 client connections whose buffers are released.
# TYPE portcullis_parked_connections gauge
");
        let _ = writeln!(
            out,
            "portcullis_parked_connections {}",
            self.parked.load(Ordering::Relaxed)
        );
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Metrics {
    requests: [[AtomicU64; OUTCOMES.len()]; ROUTES.len()],
    latency: [Histogram; ROUTES.len()],
    signins: Vec<(String, [AtomicU64; SIGNIN_OUTCOMES.len()])>,
    pub upstream_errors: AtomicU64,
    pub upstream_timeouts: AtomicU64,
    /// Live sessions in the store (`database` strategy), sampled.
    pub active_sessions: AtomicI64,
}

impl Metrics {
    pub fn new(providers: impl IntoIterator<Item = String>) -> Self {
        Metrics {
            requests: Default::default(),
            latency: Default::default(),
            signins: providers
                .into_iter()
                .map(|p| (p, Default::default()))
                .collect(),
            upstream_errors: AtomicU64::new(0),
            upstream_timeouts: AtomicU64::new(0),
            active_sessions: AtomicI64::new(-1),
        }
    }

    pub fn request(&self, route: Route, outcome: Outcome, took: Duration) {
        let r = ROUTES
            .iter()
            .position(|x| *x == route)
            .unwrap_or(ROUTES.len() - 1);
        let o = OUTCOMES
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        self.requests[r][o].fetch_add(1, Ordering::Relaxed);
        self.latency[r].observe(took);
    }

    /// `outcome`: "success", "failure" (bad credentials, invalid token),
    /// "denied" (access rules).
    pub fn signin(&self, provider: &str, outcome: &str) {
        let o = SIGNIN_OUTCOMES
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(1);
        if let Some((_, c)) = self.signins.iter().find(|(p, _)| p == provider) {
            c[o].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The text exposition format (version 0.0.4), with each dependency's
    /// latency and errors under its name (`redis`, `idp_<provider>`).
    pub fn render(&self, deps: &[(String, &Dependency)]) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP portcullis_requests_total Requests by route and access decision.\n# TYPE portcullis_requests_total counter\n");
        for (ri, route) in ROUTES.iter().enumerate() {
            for (oi, outcome) in OUTCOMES.iter().enumerate() {
                let n = self.requests[ri][oi].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "portcullis_requests_total{{route=\"{}\",decision=\"{}\"}} {n}",
                        route.as_str(),
                        outcome.as_str()
                    );
                }
            }
        }
        out.push_str("# HELP portcullis_request_duration_seconds Time to answer, by route.\n# TYPE portcullis_request_duration_seconds histogram\n");
        for (ri, route) in ROUTES.iter().enumerate() {
            self.latency[ri].render(
                &mut out,
                "portcullis_request_duration_seconds",
                &format!("route=\"{}\"", route.as_str()),
            );
        }
        out.push_str("# HELP portcullis_signins_total Sign-ins by provider and outcome.\n# TYPE portcullis_signins_total counter\n");
        for (p, counts) in &self.signins {
            for (i, o) in SIGNIN_OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "portcullis_signins_total{{provider=\"{p}\",outcome=\"{o}\"}} {}",
                    counts[i].load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP portcullis_upstream_errors_total Upstream failures (unreachable or timed out).\n# TYPE portcullis_upstream_errors_total counter\n");
        let _ = writeln!(
            out,
            "portcullis_upstream_errors_total{{kind=\"unreachable\"}} {}",
            self.upstream_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "portcullis_upstream_errors_total{{kind=\"timeout\"}} {}",
            self.upstream_timeouts.load(Ordering::Relaxed)
        );
        for (name, dep) in deps {
            let help = if name == "redis" {
                "Session store (Redis) commands"
            } else {
                "Identity provider calls"
            };
            let _ = writeln!(
                out,
                "# HELP portcullis_{name}_duration_seconds {help}: latency.\n# TYPE portcullis_{name}_duration_seconds histogram"
            );
            dep.latency
                .render(&mut out, &format!("portcullis_{name}_duration_seconds"), "");
            let _ = writeln!(
                out,
                "# HELP portcullis_{name}_errors_total {help}: failures.\n# TYPE portcullis_{name}_errors_total counter"
            );
            let _ = writeln!(
                out,
                "portcullis_{name}_errors_total {}",
                dep.errors.load(Ordering::Relaxed)
            );
        }
        CONNECTIONS.render(&mut out);
        let active = self.active_sessions.load(Ordering::Relaxed);
        if active >= 0 {
            out.push_str("# HELP portcullis_active_sessions Sessions in the store (sampled).\n# TYPE portcullis_active_sessions gauge\n");
            let _ = writeln!(out, "portcullis_active_sessions {active}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::new(["credentials".to_string()]);
        m.request(Route::Proxy, Outcome::Allow, Duration::from_micros(300));
        m.request(Route::Proxy, Outcome::Allow, Duration::from_millis(30));
        m.signin("credentials", "success");
        let t = m.render(&[]);
        assert!(
            t.contains("portcullis_requests_total{route=\"proxy\",decision=\"allow\"} 2"),
            "{t}"
        );
        assert!(
            t.contains(
                "portcullis_request_duration_seconds_bucket{route=\"proxy\",le=\"0.0005\"} 1"
            ),
            "{t}"
        );
        assert!(
            t.contains("portcullis_request_duration_seconds_bucket{route=\"proxy\",le=\"0.05\"} 2"),
            "{t}"
        );
        assert!(t.contains("portcullis_request_duration_seconds_count{route=\"proxy\"} 2"));
        assert!(
            t.contains("portcullis_signins_total{provider=\"credentials\",outcome=\"success\"} 1")
        );
        assert!(!t.contains("portcullis_active_sessions"));
    }
}
