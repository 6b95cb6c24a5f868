//! From the merged config tree to [`Config`]: every problem is collected
//! before failing, each naming the key, where it was set, and the fix.
//!
//! This is the config builder, a long list of small checks; keep each one
//! next to the key it reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use url::Url;

use super::raw::{RawConfig, RawProvider};
use super::source::Document;
use super::{
    AccessConfig, AccessTokenHeader, Config, ConfigError, CookieConfig, HeaderConfig, Limits,
    LogConfig, LogFormat, MetricsConfig, PathPattern, Problem, SessionConfig, SessionStrategy,
    Upstream, secret,
};
use crate::providers::oidc::{
    ClaimMap, OAuthEndpoints, OidcConfig, ProfileRequest, ResponseMode, TokenAuth,
};
use crate::providers::profile::Expr;
use crate::providers::{ProviderConfig, ProviderKind, credentials};

/// The embedded default `portcullis` runs with no arguments. The secret
/// and the demo user's password are made fresh at every start.
pub const DEMO_YAML: &str = r#"
listen: 127.0.0.1:4180
public_url: http://127.0.0.1:4180
upstream:
  url: builtin:whoami
session:
  strategy: jwt
providers:
  - type: credentials
    id: credentials
    name: Demo account
"#;

mod jwt;

struct Collector<'a> {
    doc: &'a Document,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn bad(&mut self, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            origin: self.doc.origin(key).cloned(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(v) {
                Some(d) => d,
                None => {
                    self.bad(
                        key,
                        format!("{v:?} is not a duration"),
                        "write a number with a unit: 500ms, 30s, 15m, 24h, 30d",
                    );
                    default
                }
            },
        }
    }

    fn header(&mut self, key: &str, value: Option<&str>, default: &'static str) -> HeaderName {
        let v = value.unwrap_or(default);
        HeaderName::from_bytes(v.as_bytes()).unwrap_or_else(|_| {
            self.bad(
                key,
                format!("{v:?} is not a valid header name"),
                "use letters, digits and dashes, like X-Auth-Request-User",
            );
            HeaderName::from_static(default_lower(default))
        })
    }
}

fn default_lower(s: &'static str) -> &'static str {
    // Header defaults below are written in lower case already; keep the
    // fallback total without allocating.
    if s.bytes().all(|b| !b.is_ascii_uppercase()) {
        s
    } else {
        "x-invalid"
    }
}

/// `500ms`, `30s`, `15m`, `24h`, `30d`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Turns the merged tree into a [`Config`]; `base_dir` resolves relative
/// file paths (the config file's folder).
pub fn validate(doc: &Document, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
    let mut unknown = Vec::new();
    super::raw::unknown_keys(&doc.value, &super::raw::schema(), "", &mut unknown);
    if !unknown.is_empty() {
        return Err(ConfigError {
            problems: unknown
                .into_iter()
                .map(|key| Problem {
                    origin: doc.origin(&key).cloned(),
                    message: format!("unknown key `{}`", key.rsplit(['.', ']']).next().unwrap_or(&key)),
                    fix: "remove the key or correct its spelling (docs/configuration.md lists every key)".into(),
                    key,
                })
                .collect(),
        });
    }
    let value = with_presets(doc)?;
    let raw: RawConfig = match serde_path_to_error::deserialize(&value) {
        Ok(r) => r,
        Err(e) => {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner().to_string();
            let fix = if inner.starts_with("unknown field") {
                "remove the key or correct its spelling (docs/configuration.md lists every key)"
            } else {
                "give the value the type docs/configuration.md shows for this key"
            };
            return Err(ConfigError {
                problems: vec![Problem {
                    origin: doc.origin(&key).cloned(),
                    key,
                    message: inner,
                    fix: fix.into(),
                }],
            });
        }
    };
    let mut c = Collector {
        doc,
        problems: Vec::new(),
    };
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        match base_dir {
            Some(d) if p.is_relative() && !d.as_os_str().is_empty() => d.join(p),
            _ => p.to_path_buf(),
        }
    };

    let listen_s = raw.listen.as_deref().unwrap_or("127.0.0.1:4180");
    let listen: SocketAddr = listen_s.parse().unwrap_or_else(|_| {
        c.bad(
            "listen",
            format!("{listen_s:?} is not an address:port"),
            "write it like 127.0.0.1:4180 or [::]:4180",
        );
        SocketAddr::from(([127, 0, 0, 1], 4180))
    });

    let workers = raw.workers.map(|n| n as usize);
    if workers.is_some_and(|n| !(1..=256).contains(&n)) {
        c.bad(
            "workers",
            "out of range",
            "use 1 to 256, or remove it for one worker per CPU",
        );
    }

    let default_public = format!("http://{listen}");
    let public_s = raw.public_url.as_deref().unwrap_or(&default_public);
    let public_url = match Url::parse(public_s) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none() =>
        {
            let mut o = u.clone();
            o.set_path("");
            o.set_query(None);
            o.set_fragment(None);
            if u.path() != "/" && !u.path().is_empty() {
                c.bad(
                    "public_url",
                    "public_url must be an origin without a path",
                    "use base_path for a path prefix, e.g. public_url: https://auth.example.com",
                );
            }
            o
        }
        _ => {
            c.bad(
                "public_url",
                format!("{public_s:?} is not an http(s) URL with a host"),
                "write the URL users reach Portcullis at, like https://auth.example.com",
            );
            #[allow(clippy::expect_used)]
            Url::parse("http://127.0.0.1:4180").expect("constant URL")
        }
    };

    let base_path = raw.base_path.clone().unwrap_or_else(|| "/auth".into());
    let base_path = base_path.trim_end_matches('/').to_string();
    if !base_path.starts_with('/')
        || base_path.contains(['?', '#', '%', ' ', '\\'])
        || base_path.contains("//")
    {
        c.bad(
            "base_path",
            format!("{base_path:?} is not a path"),
            "write a path like /auth (the default) or /oauth2",
        );
    }

    // Secrets: inline, then files; the first one seals.
    let mut secret_texts: Vec<(String, String)> = raw
        .secrets
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("secrets[{i}]"), s.clone()))
        .collect();
    for (i, f) in raw.secret_files.iter().enumerate() {
        let key = format!("secret_files[{i}]");
        match secret::read_secret_file(&resolve(f)) {
            Ok(s) => secret_texts.push((key, s)),
            Err(e) => c.bad(&key, e, "point it at a readable file holding one secret"),
        }
    }
    let mut secrets = Vec::new();
    for (key, s) in &secret_texts {
        match secret::check(s) {
            Ok(s) => secrets.push(s),
            Err(e) => c.bad(key, e, "generate one with `portcullis gen-secret`"),
        }
    }
    if secret_texts.is_empty() {
        c.bad("secrets", "no secret is configured", "set secrets: [<output of `portcullis gen-secret`>], or PORTCULLIS_SECRETS, or secret_files");
    }

    let trusted_proxies = match &raw.trusted_proxies {
        None => vec![ip_net("127.0.0.0/8"), ip_net("::1/128")],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let parsed = s
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from));
                if parsed.is_none() {
                    c.bad(
                        &format!("trusted_proxies[{i}]"),
                        format!("{s:?} is not an address or CIDR range"),
                        "write 10.0.0.0/8, 192.168.1.10 or ::1/128",
                    );
                }
                parsed
            })
            .collect(),
    };

    // The closure below borrows the collector; these wait until it is done.
    let mut c_bad_later: Vec<(&str, String)> = Vec::new();
    let upstream = raw.upstream.as_ref().and_then(|u| {
        let connect_timeout = c.duration(
            "upstream.connect_timeout",
            u.connect_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let timeout = c.duration(
            "upstream.timeout",
            u.timeout.as_deref(),
            Duration::from_secs(60),
        );
        let url_s = u.url.as_deref()?;
        if url_s == "builtin:whoami" {
            return Some(Upstream::Whoami { timeout });
        }
        match Url::parse(url_s) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                let ca_file = u.ca_file.as_deref().map(resolve);
                if let Some(ca) = &ca_file
                    && let Err(e) = std::fs::metadata(ca)
                {
                    c.bad(
                        "upstream.ca_file",
                        format!("cannot read {}: {e}", ca.display()),
                        "point it at a PEM file of CA certificates",
                    );
                }
                let client_identity =
                    match (u.client_cert_file.as_deref(), u.client_key_file.as_deref()) {
                        (Some(c), Some(k)) => {
                            for (key, p) in [
                                ("upstream.client_cert_file", c),
                                ("upstream.client_key_file", k),
                            ] {
                                if let Err(e) = std::fs::metadata(resolve(p)) {
                                    c_bad_later.push((key, format!("cannot read {p}: {e}")));
                                }
                            }
                            Some((resolve(c), resolve(k)))
                        }
                        (None, None) => None,
                        _ => {
                            c_bad_later.push((
                                "upstream.client_cert_file",
                                "client_cert_file and client_key_file go together".into(),
                            ));
                            None
                        }
                    };
                Some(Upstream::Url {
                    url,
                    ca_file,
                    client_identity,
                    connect_timeout,
                    timeout,
                })
            }
            _ => {
                c.bad(
                    "upstream.url",
                    format!("{url_s:?} is not an http(s) URL"),
                    "write the app's URL, like http://127.0.0.1:8080, or builtin:whoami",
                );
                None
            }
        }
    });
    for (key, msg) in c_bad_later {
        c.bad(key, msg, "point client_cert_file and client_key_file at the PEM files Portcullis presents to the upstream");
    }
    let tls = match (raw.tls.cert_file.as_deref(), raw.tls.key_file.as_deref()) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let (cert, key) = (resolve(cert), resolve(key));
            if let Err(e) = crate::tls::ReloadingCert::load(&cert, &key) {
                c.bad("tls.cert_file", e, "point tls.cert_file and tls.key_file at a PEM certificate chain and its private key");
            }
            Some(crate::config::TlsFiles {
                cert_file: cert,
                key_file: key,
            })
        }
        _ => {
            c.bad(
                "tls.cert_file",
                "tls.cert_file and tls.key_file go together",
                "set both, or neither for plain HTTP",
            );
            None
        }
    };
    if raw.upstream.as_ref().is_some_and(|u| u.url.is_none()) {
        c.bad(
            "upstream.url",
            "upstream is set but has no url",
            "add url: http://app:8080, or remove upstream to run forward-auth only",
        );
    }

    let strategy = match raw.session.strategy.as_deref().unwrap_or("jwt") {
        "jwt" => SessionStrategy::Jwt,
        "database" => SessionStrategy::Database,
        other => {
            c.bad(
                "session.strategy",
                format!("unknown session strategy {other:?}"),
                "use jwt (stateless) or database (sessions in Redis)",
            );
            SessionStrategy::Jwt
        }
    };
    if raw.store.url.is_some() && raw.store.redis_url.is_some() {
        c.bad(
            "store.redis_url",
            "both store.url and store.redis_url are set",
            "keep one: store.url takes every kind of store",
        );
    }
    let url_key = if raw.store.url.is_some() {
        "store.url"
    } else {
        "store.redis_url"
    };
    // `database` sessions with no store: SQLite in the data directory, so
    // a single node needs no server at all.
    let embedded = (strategy == SessionStrategy::Database
        && raw.store.url.is_none()
        && raw.store.redis_url.is_none())
    .then(|| {
        let dir = resolve(raw.store.data_dir.as_deref().unwrap_or("data"));
        format!("sqlite://{}", dir.join("portcullis.db").display())
    });
    if raw.store.data_dir.is_some() && embedded.is_none() {
        c.bad(
            "store.data_dir",
            "data_dir is for the embedded SQLite store, used only when no store.url is set",
            "remove data_dir, or put the SQLite file in the URL: sqlite:///path/portcullis.db",
        );
    }
    let url = raw
        .store
        .url
        .as_deref()
        .or(raw.store.redis_url.as_deref())
        .or(embedded.as_deref());
    let store = url.and_then(|url| {
        let backend = match crate::store::parse_url(url) {
            Ok(crate::store::Backend::Sql(_)) if raw.store.redis_url.is_some() => {
                c.bad("store.redis_url", format!("{} is not a Redis URL", crate::store::redact_url(url)), "put SQL databases in store.url");
                return None;
            }
            Ok(b) => b,
            Err(e) => {
                c.bad(url_key, format!("{:?}: {e}", crate::store::redact_url(url)), "write redis://host:6379/0 (or rediss://, redis+sentinel://h1:26379,h2:26379/mymaster, redis+cluster://h1:6379,h2:6379), postgres://user@host:5432/db, mysql://user@host:3306/db (MariaDB too) or sqlite:///path/portcullis.db");
                return None;
            }
        };
        let is_sql = matches!(backend, crate::store::Backend::Sql(_));
        if !is_sql && (raw.store.max_connections.is_some() || raw.store.auto_migrate.is_some() || raw.store.sweep_interval.is_some() || raw.store.sweep_batch.is_some()) {
            c.bad("store", "max_connections, auto_migrate, sweep_interval and sweep_batch are for SQL stores", "remove them: Redis multiplexes one connection and expires keys by itself");
        }
        let cluster = matches!(backend, crate::store::Backend::Redis(crate::store::RedisTarget::Cluster { .. }));
        if raw.store.client_cache == Some(true) && (is_sql || cluster) {
            c.bad("store.client_cache", "client-side caching is for Redis standalone and Sentinel", "remove it: SQL stores and Redis Cluster read the store on every request");
        }
        let max_connections = raw.store.max_connections.unwrap_or(10);
        if !(1..=1000).contains(&max_connections) {
            c.bad("store.max_connections", format!("{max_connections} is out of range"), "use 1 to 1000 (10 is the default)");
        }
        let sweep_batch = raw.store.sweep_batch.unwrap_or(1000);
        if !(1..=100_000).contains(&sweep_batch) {
            c.bad("store.sweep_batch", format!("{sweep_batch} is out of range"), "use 1 to 100000 (1000 is the default)");
        }
        let sweep_interval = c.duration("store.sweep_interval", raw.store.sweep_interval.as_deref(), Duration::from_secs(60));
        if sweep_interval < Duration::from_secs(1) {
            c.bad("store.sweep_interval", "shorter than a second", "use 1s or more (60s is the default)");
        }
        let key_prefix = raw.store.key_prefix.clone().unwrap_or_else(|| "portcullis:".into());
        if key_prefix.contains(['{', '}', ' ']) {
            c.bad("store.key_prefix", "key_prefix may not contain braces or spaces (braces are Redis Cluster hash tags)", "use something like portcullis:");
        }
        let timeout = c.duration("store.timeout", raw.store.timeout.as_deref(), Duration::from_secs(2));
        let ca_file = raw.store.ca_file.as_deref().map(resolve);
        if let Some(ca) = &ca_file
            && let Err(e) = std::fs::metadata(ca)
        {
            c.bad("store.ca_file", format!("cannot read {}: {e}", ca.display()), "point it at a PEM file of CA certificates");
        }
        Some(crate::store::StoreConfig {
            backend,
            key_prefix,
            timeout,
            ca_file,
            max_connections: max_connections.clamp(1, 1000) as u32,
            auto_migrate: raw.store.auto_migrate.unwrap_or(true),
            sweep_interval: sweep_interval.max(Duration::from_secs(1)),
            sweep_batch: sweep_batch.clamp(1, 100_000) as u32,
            client_cache: raw.store.client_cache.unwrap_or(true) && !is_sql && !cluster,
        })
    });
    let max_age = c.duration(
        "session.max_age",
        raw.session.max_age.as_deref(),
        Duration::from_secs(30 * 86_400),
    );
    // Auth.js's default is a day; a shorter max_age caps it.
    let update_age = c.duration(
        "session.update_age",
        raw.session.update_age.as_deref(),
        Duration::from_secs(86_400).min(max_age),
    );
    if max_age < Duration::from_secs(60) {
        c.bad(
            "session.max_age",
            "max_age is under a minute",
            "use a value like 30d (the Auth.js default) or 8h",
        );
    }
    if update_age > max_age {
        c.bad(
            "session.update_age",
            "update_age is longer than max_age: sessions would never slide",
            "make update_age shorter than max_age, like 24h",
        );
    }

    let secure = match raw.cookies.secure.as_deref().unwrap_or("auto") {
        "auto" => public_url.scheme() == "https",
        "true" => true,
        "false" => {
            if public_url.scheme() == "https" {
                c.bad(
                    "cookies.secure",
                    "cookies.secure is false but public_url is https",
                    "remove cookies.secure (auto follows public_url)",
                );
            }
            false
        }
        other => {
            c.bad(
                "cookies.secure",
                format!("{other:?} is not auto, true or false"),
                "use auto (the default)",
            );
            false
        }
    };
    let name_prefix = raw
        .cookies
        .name_prefix
        .clone()
        .unwrap_or_else(|| "authjs".into());
    if name_prefix.is_empty()
        || !name_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.bad(
            "cookies.name_prefix",
            format!("{name_prefix:?} cannot start a cookie name"),
            "use letters, digits, - or _, like authjs",
        );
    }
    let mut domains = Vec::new();
    for (i, d) in raw.cookies.domains.iter().enumerate() {
        let key = format!("cookies.domains[{i}]");
        match normalize_domain(d) {
            Some(d) => domains.push(d),
            None => c.bad(
                &key,
                format!("{d:?} is not a domain name"),
                "write a parent domain like .example.com",
            ),
        }
    }

    let flow_max_age = c.duration(
        "cookies.flow_max_age",
        raw.cookies.flow_max_age.as_deref(),
        Duration::from_secs(900),
    );
    let max_flows = raw.cookies.max_flows.unwrap_or(4) as usize;
    if !(1..=16).contains(&max_flows) {
        c.bad(
            "cookies.max_flows",
            format!("{max_flows} is out of range"),
            "use a number from 1 to 16 (default 4)",
        );
    }
    let mut redirect_domains = domains.clone();
    for (i, d) in raw.redirects.allowed_domains.iter().enumerate() {
        let (host, port) = match d.rsplit_once(':') {
            Some((h, p)) if p == "*" || p.parse::<u16>().is_ok() => (h, Some(p)),
            _ => (d.as_str(), None),
        };
        match (normalize_domain(host), port) {
            (Some(h), Some(p)) => redirect_domains.push(format!("{h}:{p}")),
            (Some(h), None) => redirect_domains.push(h),
            (None, _) => c.bad(&format!("redirects.allowed_domains[{i}]"), format!("{d:?} is not a domain name"), "write a domain like app.example.com, .example.com, .example.com:8443 or .example.com:*"),
        }
    }

    let access = AccessConfig {
        allowed_emails: raw
            .access
            .allowed_emails
            .iter()
            .map(|e| e.trim().to_ascii_lowercase())
            .collect(),
        allowed_domains: raw
            .access
            .allowed_domains
            .iter()
            .map(|d| d.trim().trim_start_matches(['@', '.']).to_ascii_lowercase())
            .collect(),
        allowed_groups: raw.access.allowed_groups.clone(),
        public_paths: raw
            .access
            .public_paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let pat = parse_path_pattern(p);
                if pat.is_none() {
                    c.bad(
                        &format!("access.public_paths[{i}]"),
                        format!("{p:?} is not a path pattern"),
                        "write /exact or /prefix/* (starting with /)",
                    );
                }
                pat
            })
            .collect(),
    };

    let providers = providers(&mut c, &raw.providers, &resolve);
    if store.is_none()
        && url.is_none()
        && let Some(i) = raw
            .providers
            .iter()
            .position(|p| p.kind.as_deref() == Some("email"))
    {
        c.bad(
            &format!("providers[{i}].type"),
            "an email provider needs a store: its one-time tokens and rate-limit counters live there",
            "set store.url (redis://127.0.0.1:6379, postgres://..., sqlite:///path/portcullis.db), or session.strategy: database for the embedded SQLite store",
        );
    }
    let (regulation, sign_in) =
        super::guard::build(&raw, &providers, &mut |k, m, f| c.bad(k, m, f));
    let jwt = raw
        .jwt
        .as_ref()
        .and_then(|j| jwt::build(&mut c, j, &resolve));
    let tokens =
        crate::tokens::settings::build(&raw.tokens, store.is_some(), &resolve, &mut |k, m, f| {
            c.bad(k, m, f)
        });

    let h = &raw.headers;
    let headers = HeaderConfig {
        user: c.header("headers.user", h.user.as_deref(), "x-auth-request-user"),
        email: c.header("headers.email", h.email.as_deref(), "x-auth-request-email"),
        preferred_username: c.header(
            "headers.preferred_username",
            h.preferred_username.as_deref(),
            "x-auth-request-preferred-username",
        ),
        groups: c.header(
            "headers.groups",
            h.groups.as_deref(),
            "x-auth-request-groups",
        ),
        forwarded_user: c.header(
            "headers.forwarded_user",
            h.forwarded_user.as_deref(),
            "x-forwarded-user",
        ),
        forwarded_email: c.header(
            "headers.forwarded_email",
            h.forwarded_email.as_deref(),
            "x-forwarded-email",
        ),
        name: c.header("headers.name", h.name.as_deref(), "x-auth-request-name"),
        signin_url: c.header(
            "headers.signin_url",
            h.signin_url.as_deref(),
            "x-auth-signin",
        ),
        pass_cookies: h.pass_cookies.unwrap_or(false),
        access_token: match h.access_token.as_deref().unwrap_or("none") {
            "none" => AccessTokenHeader::None,
            "authorization" => AccessTokenHeader::Authorization,
            "header" => AccessTokenHeader::Header,
            other => {
                c.bad("headers.access_token", format!("{other:?} is not none, authorization or header"), "use authorization (Authorization: Bearer) or header (X-Auth-Request-Access-Token)");
                AccessTokenHeader::None
            }
        },
        claims: h
            .claims
            .iter()
            .filter_map(|(name, path)| match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) if !path.is_empty() => Some((n, path.clone())),
                _ => {
                    c.bad(&format!("headers.claims.{name}"), format!("{name:?} is not a header name, or the claim path is empty"), "map a header name to a claim path, like X-Auth-Request-Department: department");
                    None
                }
            })
            .collect(),
    };

    let l = &raw.limits;
    let limits = Limits {
        max_header_bytes: l.max_header_bytes.unwrap_or(64 * 1024) as usize,
        max_form_bytes: l.max_form_bytes.unwrap_or(16 * 1024) as usize,
        header_read_timeout: c.duration(
            "limits.header_read_timeout",
            l.header_read_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        shutdown_grace: c.duration(
            "limits.shutdown_grace",
            l.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        ),
    };
    if !(8192..=1 << 20).contains(&limits.max_header_bytes) {
        c.bad(
            "limits.max_header_bytes",
            "out of range",
            "use 8192 to 1048576 (default 65536)",
        );
    }
    if !(1024..=1 << 20).contains(&limits.max_form_bytes) {
        c.bad(
            "limits.max_form_bytes",
            "out of range",
            "use 1024 to 1048576 (default 16384)",
        );
    }

    let log = LogConfig {
        format: match raw.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                c.bad(
                    "log.format",
                    format!("unknown log format {other:?}"),
                    "use text or json",
                );
                LogFormat::Text
            }
        },
        level: raw.log.level.clone().unwrap_or_else(|| "info".into()),
        requests: raw.log.requests.unwrap_or(true),
        otlp_endpoint: raw
            .log
            .otlp_endpoint
            .as_deref()
            .and_then(|e| match Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
                _ => {
                    c.bad(
                        "log.otlp_endpoint",
                        format!("{e:?} is not an http(s) URL"),
                        "write the collector's OTLP/HTTP base URL, like http://otel-collector:4318",
                    );
                    None
                }
            }),
    };
    if log.otlp_endpoint.is_some() && !cfg!(feature = "otel") {
        c.bad(
            "log.otlp_endpoint",
            "this build has no OpenTelemetry export",
            "build with `cargo build --release --features otel`, or remove the key",
        );
    }
    let metrics = MetricsConfig {
        listen: raw.metrics.listen.as_deref().and_then(|l| match l.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                c.bad("metrics.listen", format!("{l:?} is not an address:port"), "write it like 127.0.0.1:9090, or remove it to serve /metrics on the main listener");
                None
            }
        }),
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        c.bad(
            "log.level",
            format!("{:?} is not a log filter", log.level),
            "use error, warn, info, debug or a filter like portcullis=debug",
        );
    }

    let routes = crate::authz::policy::load::build(&raw, doc, &mut c.problems);

    if !c.problems.is_empty() {
        return Err(ConfigError {
            problems: c.problems,
        });
    }
    Ok(Config {
        listen,
        workers,
        public_url,
        base_path,
        secrets,
        trusted_proxies,
        upstream,
        session: SessionConfig {
            strategy,
            max_age,
            update_age,
        },
        cookies: CookieConfig {
            name_prefix,
            secure,
            domains,
            flow_max_age,
            max_flows,
        },
        redirect_domains,
        access,
        providers,
        headers,
        limits,
        log,
        store,
        metrics,
        tls,
        demo: None,
        regulation,
        sign_in,
        jwt,
        routes,
        tokens,
    })
}

/// The document with each provider's preset laid under it; unknown
/// presets and missing parameters are problems, all at once.
fn with_presets(doc: &Document) -> Result<serde_json::Value, ConfigError> {
    let mut value = doc.value.clone();
    let mut problems = Vec::new();
    if let Some(serde_json::Value::Array(list)) = value.get_mut("providers") {
        for (i, p) in list.iter_mut().enumerate() {
            let serde_json::Value::Object(entry) = p else {
                continue;
            };
            match crate::providers::presets::apply(entry) {
                Ok(merged) => *entry = merged,
                Err((k, message)) => {
                    let key = format!("providers[{i}].{k}");
                    problems.push(Problem {
                        origin: doc.origin(&key).cloned(),
                        key,
                        message,
                        fix: "docs/configuration.md lists the presets and their params".into(),
                    });
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError { problems })
    }
}

/// The keys of `p` that only `oidc`/`oauth` providers take.
pub(crate) fn remote_only_keys(p: &RawProvider) -> Vec<&'static str> {
    let claims_set = serde_json::to_value(&p.claims).is_ok_and(|v| {
        v.as_object()
            .is_some_and(|m| m.values().any(|x| !x.is_null()))
    });
    [
        ("issuer", p.issuer.is_some()),
        ("client_id", p.client_id.is_some()),
        (
            "client_secret",
            p.client_secret.is_some() || p.client_secret_file.is_some(),
        ),
        ("scopes", p.scopes.is_some()),
        ("response_mode", p.response_mode.is_some()),
        ("authorization_params", !p.authorization_params.is_empty()),
        ("algorithms", !p.algorithms.is_empty()),
        ("trusted_audiences", !p.trusted_audiences.is_empty()),
        ("accept_bearer_tokens", p.accept_bearer_tokens.is_some()),
        ("bearer_audiences", !p.bearer_audiences.is_empty()),
        (
            "insecure_accept_unverified_email",
            p.insecure_accept_unverified_email.is_some(),
        ),
        ("store_tokens", p.store_tokens.is_some()),
        ("ca_file", p.ca_file.is_some()),
        ("timeout", p.timeout.is_some()),
        ("claims", claims_set),
        ("authorization_url", p.authorization_url.is_some()),
        ("token_url", p.token_url.is_some()),
        ("userinfo_url", p.userinfo_url.is_some()),
        ("profile_requests", !p.profile_requests.is_empty()),
        ("pkce", p.pkce.is_some()),
        ("token_auth", p.token_auth.is_some()),
        ("require", !p.require.is_empty()),
        (
            "allow_dangerous_email_account_linking",
            p.allow_dangerous_email_account_linking.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect()
}

fn providers(
    c: &mut Collector<'_>,
    raw: &[RawProvider],
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Vec<ProviderConfig> {
    let mut out: Vec<ProviderConfig> = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let key = |k: &str| format!("providers[{i}].{k}");
        let Some(kind) = p.kind.as_deref() else {
            c.bad(
                &key("type"),
                "a provider needs a type",
                "add type: credentials",
            );
            continue;
        };
        let id = p.id.clone().unwrap_or_else(|| kind.to_string());
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            c.bad(
                &key("id"),
                format!("{id:?} cannot be used in a URL path"),
                "use letters, digits, - or _, like github",
            );
            continue;
        }
        if out.iter().any(|o| o.id == id) {
            c.bad(
                &key("id"),
                format!("two providers have the id {id:?}"),
                "give each provider its own id",
            );
            continue;
        }
        if kind != "email"
            && let Some(k) = crate::providers::email::email_only_key(p)
        {
            c.bad(
                &key(k),
                format!("`{k}` is for email providers"),
                "set type: email, or remove the key",
            );
            continue;
        }
        let kind = match kind {
            "email" => match crate::providers::email::from_raw(p, resolve) {
                Ok(e) => ProviderKind::Email(std::sync::Arc::new(e)),
                Err(problems) => {
                    for (k, message, fix) in problems {
                        c.bad(&key(&k), message, fix);
                    }
                    continue;
                }
            },
            "credentials" => {
                if let Some(k) = remote_only_keys(p).first() {
                    c.bad(
                        &key(k),
                        format!("`{k}` is for oidc and oauth providers"),
                        "set type: oidc or oauth, or remove the key",
                    );
                    continue;
                }
                let users = match (&p.users_file, p.users.as_ref()) {
                    (Some(f), _) => credentials::load_users_file(&resolve(f))
                        .map_err(|e| (key("users_file"), e)),
                    (None, Some(list)) => credentials::users_from_value(list, "inline users")
                        .map_err(|e| (key("users"), e)),
                    (None, None) => Err((
                        key("users_file"),
                        "a credentials provider needs users".to_string(),
                    )),
                };
                match users {
                    Ok(users) => ProviderKind::Credentials(credentials::Credentials::new(users)),
                    Err((k, e)) => {
                        c.bad(&k, e, "point users_file at a YAML file of users with argon2id hashes (`portcullis hash-password`)");
                        continue;
                    }
                }
            }
            "oidc" | "oauth" => match oidc_provider(c, p, &key, resolve, kind == "oauth") {
                Some(o) => ProviderKind::Oidc(std::sync::Arc::new(o)),
                None => continue,
            },
            other => {
                c.bad(
                    &key("type"),
                    format!("unknown provider type {other:?}"),
                    "use credentials, oidc, oauth or email (or a preset: preset: github)",
                );
                continue;
            }
        };
        let name = p.name.clone().unwrap_or_else(|| match &kind {
            ProviderKind::Credentials(_) => "Credentials".into(),
            ProviderKind::Oidc(_) => id.clone(),
            ProviderKind::Email(_) => "Email".into(),
        });
        let auto_redirect = p.auto_redirect.unwrap_or(false);
        if auto_redirect && !matches!(kind, ProviderKind::Oidc(_)) {
            c.bad(
                &key("auto_redirect"),
                "only an oidc or oauth provider can skip the sign-in page",
                "remove auto_redirect",
            );
        }
        out.push(ProviderConfig {
            id,
            name,
            kind,
            auto_redirect,
        });
    }
    if out.len() > 1 && out.iter().any(|p| p.auto_redirect) {
        c.bad(
            "providers",
            "auto_redirect skips the sign-in page, but there are several providers to choose from",
            "keep auto_redirect only with a single provider",
        );
    }
    if out.is_empty() && c.problems.iter().all(|p| !p.key.starts_with("providers")) {
        c.bad(
            "providers",
            "no sign-in provider is configured",
            "add one, like `providers: [{type: credentials, users_file: users.yaml}]`",
        );
    }
    out
}

fn ip_net(s: &str) -> IpNet {
    #[allow(clippy::expect_used)]
    s.parse().expect("constant CIDR")
}

/// `.Example.com` → `example.com`; `None` if it is not a host name.
pub fn normalize_domain(d: &str) -> Option<String> {
    let d = d
        .trim()
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    ok.then_some(d)
}

fn parse_path_pattern(p: &str) -> Option<PathPattern> {
    if !p.starts_with('/') || p.contains(['?', '#', '\\']) {
        return None;
    }
    match p.strip_suffix("/*").or_else(|| p.strip_suffix('*')) {
        Some(prefix) if !prefix.contains('*') => Some(PathPattern::Prefix(if prefix.is_empty() {
            "/".into()
        } else {
            prefix.to_string()
        })),
        Some(_) => None,
        None if p.contains('*') => None,
        None => Some(PathPattern::Exact(p.to_string())),
    }
}

/// Keys that belong to one provider type only.
const CREDENTIALS_ONLY: &[&str] = &["users_file", "users"];

/// An `oidc` or (`oauth`: plain OAuth 2) provider's settings.
fn oidc_provider(
    c: &mut Collector<'_>,
    p: &RawProvider,
    key: &dyn Fn(&str) -> String,
    resolve: &dyn Fn(&str) -> PathBuf,
    oauth: bool,
) -> Option<OidcConfig> {
    let before = c.problems.len();
    let kind = if oauth { "oauth" } else { "oidc" };
    for k in CREDENTIALS_ONLY {
        let set = match *k {
            "users_file" => p.users_file.is_some(),
            _ => p.users.is_some(),
        };
        if set {
            c.bad(
                &key(k),
                format!("`{k}` is for credentials providers"),
                format!("remove it from this {kind} provider"),
            );
        }
    }
    let issuer = p.issuer.clone().unwrap_or_default();
    let endpoints = if oauth {
        if p.issuer.is_some() {
            c.bad(&key("issuer"), "an oauth provider has no issuer", "use type: oidc for an OpenID provider, or set authorization_url, token_url and userinfo_url");
        }
        let mut url = |k: &str, v: &Option<String>| -> String {
            let v = v.clone().unwrap_or_default();
            if v.is_empty() {
                c.bad(
                    &key(k),
                    format!("an oauth provider needs {k}"),
                    "copy it from the provider's OAuth documentation",
                );
            } else {
                remote_url(c, &key(k), &v);
            }
            v
        };
        Some(OAuthEndpoints {
            authorization_url: url("authorization_url", &p.authorization_url),
            token_url: url("token_url", &p.token_url),
            userinfo_url: Some(url("userinfo_url", &p.userinfo_url)),
        })
    } else {
        for (k, set) in [
            ("authorization_url", p.authorization_url.is_some()),
            ("token_url", p.token_url.is_some()),
            ("userinfo_url", p.userinfo_url.is_some()),
        ] {
            if set {
                c.bad(
                    &key(k),
                    format!("an oidc provider discovers {k} from its issuer"),
                    "remove it (or use type: oauth)",
                );
            }
        }
        match Url::parse(&issuer) {
            Ok(_) => remote_url(c, &key("issuer"), &issuer),
            Err(_) => c.bad(&key("issuer"), format!("{issuer:?} is not an issuer URL"), "write the issuer exactly as the provider's discovery document says, like https://accounts.example.com"),
        }
        None
    };
    let client_id = p.client_id.clone().unwrap_or_default();
    if client_id.is_empty() {
        c.bad(
            &key("client_id"),
            format!("an {kind} provider needs a client_id"),
            "copy it from the client registered at the identity provider",
        );
    }
    let secret = match (&p.client_secret, &p.client_secret_file) {
        (Some(s), None) => Some(s.clone()),
        (None, Some(f)) => match secret::read_secret_file(&resolve(f)) {
            Ok(s) => Some(s),
            Err(e) => {
                c.bad(
                    &key("client_secret_file"),
                    e,
                    "point it at a readable file holding the client secret",
                );
                None
            }
        },
        (Some(_), Some(_)) => {
            c.bad(
                &key("client_secret"),
                "both client_secret and client_secret_file are set",
                "keep one of them",
            );
            None
        }
        (None, None) => {
            c.bad(
                &key("client_secret"),
                format!("an {kind} provider needs a client secret"),
                "set client_secret, client_secret_file or PORTCULLIS_PROVIDERS__<n>__CLIENT_SECRET",
            );
            None
        }
    };
    let scopes = p.scopes.clone().unwrap_or_else(|| {
        if oauth {
            Vec::new()
        } else {
            vec!["openid".into(), "email".into(), "profile".into()]
        }
    });
    if !oauth && !scopes.iter().any(|s| s == "openid") {
        c.bad(
            &key("scopes"),
            "the scopes do not include openid",
            "add openid to the scopes",
        );
    }
    let response_mode = match p.response_mode.as_deref().unwrap_or("query") {
        "query" => ResponseMode::Query,
        "form_post" => ResponseMode::FormPost,
        other => {
            c.bad(
                &key("response_mode"),
                format!("unknown response mode {other:?}"),
                "use query (default) or form_post",
            );
            ResponseMode::Query
        }
    };
    for k in p.authorization_params.keys() {
        const RESERVED: &[&str] = &[
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "response_mode",
        ];
        if RESERVED.contains(&k.as_str()) {
            c.bad(
                &key(&format!("authorization_params.{k}")),
                format!("{k} is set by Portcullis itself"),
                "remove it; use scopes or response_mode for those",
            );
        }
    }
    for (i, a) in p.algorithms.iter().enumerate() {
        if !crate::providers::oidc::jwks::SUPPORTED.contains(&a.as_str()) {
            c.bad(
                &key(&format!("algorithms[{i}]")),
                format!("{a:?} is not an accepted ID token algorithm"),
                "use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA",
            );
        }
    }
    let claims = claim_map(c, &p.claims, key, oauth);
    let profile_requests = p
        .profile_requests
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let k = key(&format!("profile_requests[{i}]"));
            match (&r.url, &r.into) {
                (Some(url), Some(into)) if !into.is_empty() => {
                    remote_url(c, &format!("{k}.url"), url);
                    Some(ProfileRequest {
                        url: url.clone(),
                        into: into.clone(),
                    })
                }
                _ => {
                    c.bad(
                        &k,
                        "a profile request needs url and into",
                        "like {url: https://api.github.com/user/emails, into: emails}",
                    );
                    None
                }
            }
        })
        .collect();
    let require = p
        .require
        .iter()
        .filter_map(|(path, want)| match Expr::parse(path) {
            Ok(e) => Some((e, want.clone())),
            Err(e) => {
                c.bad(
                    &key(&format!("require.{path}")),
                    e,
                    "write a claim path, like hd",
                );
                None
            }
        })
        .collect();
    let token_auth = match p.token_auth.as_deref().unwrap_or("auto") {
        "auto" => TokenAuth::Auto,
        "basic" | "client_secret_basic" => TokenAuth::Basic,
        "post" | "client_secret_post" => TokenAuth::Post,
        other => {
            c.bad(
                &key("token_auth"),
                format!("unknown token_auth {other:?}"),
                "use auto (default), basic or post",
            );
            TokenAuth::Auto
        }
    };
    let pkce = p.pkce.unwrap_or(true);
    if oauth && (p.accept_bearer_tokens.is_some() || !p.bearer_audiences.is_empty()) {
        c.bad(
            &key("accept_bearer_tokens"),
            "a plain oauth provider issues no JWTs to verify",
            "use type: oidc (its JWKS verifies the tokens), or remove accept_bearer_tokens and bearer_audiences",
        );
    }
    if !p.bearer_audiences.is_empty() && p.accept_bearer_tokens != Some(true) {
        c.bad(
            &key("bearer_audiences"),
            "bearer_audiences has no effect without accept_bearer_tokens: true",
            "set accept_bearer_tokens: true, or remove bearer_audiences",
        );
    }
    if !oauth && !pkce {
        c.bad(
            &key("pkce"),
            "PKCE is always on for oidc providers",
            "remove pkce",
        );
    }
    let timeout = c.duration(
        &key("timeout"),
        p.timeout.as_deref(),
        Duration::from_secs(10),
    );
    let ca_file = p.ca_file.as_deref().map(resolve);
    if let Some(ca) = &ca_file
        && let Err(e) = std::fs::metadata(ca)
    {
        c.bad(
            &key("ca_file"),
            format!("cannot read {}: {e}", ca.display()),
            "point it at a PEM file of CA certificates",
        );
    }
    if c.problems.len() > before {
        return None;
    }
    Some(OidcConfig {
        issuer: if oauth { String::new() } else { issuer },
        oauth: endpoints,
        preset: p.preset.clone(),
        client_id,
        client_secret: crate::crypto::Secret::new(secret.unwrap_or_default()),
        scopes,
        response_mode,
        authorization_params: p
            .authorization_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        claims,
        profile_requests,
        require,
        pkce,
        token_auth,
        allow_dangerous_email_account_linking: p
            .allow_dangerous_email_account_linking
            .unwrap_or(false),
        algorithms: p.algorithms.clone(),
        trusted_audiences: p.trusted_audiences.clone(),
        accept_bearer_tokens: p.accept_bearer_tokens.unwrap_or(false),
        bearer_audiences: p.bearer_audiences.clone(),
        insecure_accept_unverified_email: p.insecure_accept_unverified_email.unwrap_or(false),
        store_tokens: p.store_tokens.unwrap_or(true),
        timeout,
        ca_file,
    })
}

/// An https URL (http only on loopback, for tests).
fn remote_url(c: &mut Collector<'_>, key: &str, v: &str) {
    match Url::parse(v) {
        Ok(u)
            if u.scheme() == "https"
                || (u.scheme() == "http" && u.host_str().is_some_and(is_loopback_host)) => {}
        Ok(_) => c.bad(
            key,
            format!("{v:?} is not https"),
            "use the https URL (http only for 127.0.0.1/localhost tests)",
        ),
        Err(_) => c.bad(
            key,
            format!("{v:?} is not a URL"),
            "write an absolute https URL",
        ),
    }
}

/// The claim expressions, with the defaults of OIDC's standard claims
/// (plain OAuth 2 profiles also try the common `id`/`login` shapes).
fn claim_map(
    c: &mut Collector<'_>,
    m: &super::raw::RawClaimMap,
    key: &dyn Fn(&str) -> String,
    oauth: bool,
) -> ClaimMap {
    let mut get = |part: &str,
                   given: &Option<Vec<String>>,
                   oidc: &[&str],
                   oauth_default: &[&str]|
     -> Vec<Expr> {
        let defaults = if oauth { oauth_default } else { oidc };
        let list: Vec<String> = match given {
            Some(v) => v.clone(),
            None => defaults.iter().map(|s| s.to_string()).collect(),
        };
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| match Expr::parse(s) {
                Ok(e) => Some(e),
                Err(e) => {
                    c.bad(&key(&format!("claims.{part}[{i}]")), e, "write a claim path like email, realm_access.roles or emails[primary=true].email");
                    None
                }
            })
            .collect()
    };
    ClaimMap {
        id: get("id", &m.id, &["sub"], &["id", "sub"]),
        name: get("name", &m.name, &["name"], &["name"]),
        email: get("email", &m.email, &["email"], &["email"]),
        image: get("image", &m.image, &["picture"], &["picture", "avatar_url"]),
        preferred_username: get(
            "preferred_username",
            &m.preferred_username,
            &["preferred_username"],
            &["preferred_username", "login", "username"],
        ),
        groups: get("groups", &m.groups, &["groups"], &["groups"]),
    }
}

fn is_loopback_host(h: &str) -> bool {
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || (h.starts_with('[')
            && h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}
