//! Configuration in two stages: [`raw::RawConfig`] is what the file says
//! (serde, no I/O), [`Config`] holds built values (addresses, URLs,
//! durations, header names, loaded users and secrets).
//!
//! [`load`] reads the file, lays the environment over it
//! ([`source`]), and [`validate`] collects every problem at once, each
//! naming the key, where it was set, and the fix. Nothing here touches the
//! network: reachability belongs to start-up and `/readyz`.

pub mod guard;
pub mod raw;
pub mod secret;
pub mod source;
pub mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use url::Url;

use crate::crypto::Secret;
use crate::providers::ProviderConfig;

pub use source::{EnvSource, Origin, ProcessEnv};

/// The validated configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Threads serving connections; `None`: one per CPU.
    pub workers: Option<usize>,
    /// The external origin users reach Portcullis at (scheme, host, port).
    pub public_url: Url,
    /// `/auth` by default; never ends with `/`.
    pub base_path: String,
    /// The first seals; all open (rotation).
    pub secrets: Vec<Secret>,
    pub trusted_proxies: Vec<IpNet>,
    pub upstream: Option<Upstream>,
    pub session: SessionConfig,
    pub cookies: CookieConfig,
    /// Domains (and their subdomains) that redirect targets may name,
    /// beside the request's own origin. Includes the cookie domains.
    pub redirect_domains: Vec<String>,
    pub access: AccessConfig,
    pub providers: Vec<ProviderConfig>,
    pub headers: HeaderConfig,
    pub limits: Limits,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// Serve HTTPS (HTTP/2 by ALPN) with these files, reloaded on change.
    pub tls: Option<TlsFiles>,
    /// Server-side state (Redis); required by the `database` strategy.
    pub store: Option<crate::store::StoreConfig>,
    /// Set for the embedded demo: what to print at start.
    pub demo: Option<DemoInfo>,
    /// Brute-force protection for the sign-in forms.
    pub regulation: crate::authn::regulation::RegulationConfig,
    /// Static groups, provider `allowed_groups` and `sign_in` rules.
    pub sign_in: crate::authz::signin::SignInPolicy,
    /// The signed JWT assertion to upstreams (`jwt:`), when configured.
    pub jwt: Option<crate::jwt::JwtConfig>,
    /// Route policies (`routes:`): first match decides, else `access`.
    pub routes: crate::authz::policy::Routes,
    /// Biscuit root keys, the forwarded identity token, API tokens.
    pub tokens: crate::tokens::TokensConfig,
}

#[derive(Debug, Clone)]
pub enum Upstream {
    /// Proxy to this URL (http or https).
    Url {
        url: Url,
        ca_file: Option<PathBuf>,
        /// mTLS: the certificate and key Portcullis presents to the upstream.
        client_identity: Option<(PathBuf, PathBuf)>,
        connect_timeout: Duration,
        timeout: Duration,
    },
    /// The built-in app that echoes the identity it receives.
    Whoami { timeout: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStrategy {
    Jwt,
    /// An opaque id in the cookie, the session in the store (revocable).
    Database,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub strategy: SessionStrategy,
    pub max_age: Duration,
    pub update_age: Duration,
}

#[derive(Debug, Clone)]
pub struct CookieConfig {
    /// `authjs` gives `authjs.session-token` (Auth.js's own names).
    pub name_prefix: String,
    pub secure: bool,
    /// Registrable parents (`example.com`) whose subdomains share the session.
    pub domains: Vec<String>,
    /// How long a pending OAuth/OIDC sign-in may take.
    pub flow_max_age: Duration,
    /// Pending sign-ins one browser may have at once (tabs).
    pub max_flows: usize,
}

#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    pub allowed_emails: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub public_paths: Vec<PathPattern>,
}

impl Default for CookieConfig {
    /// Auth.js's names on plain http, no shared domain.
    fn default() -> Self {
        CookieConfig {
            name_prefix: "authjs".into(),
            secure: false,
            domains: Vec::new(),
            flow_max_age: Duration::from_secs(900),
            max_flows: 4,
        }
    }
}

/// `/exact`, `/prefix/*` (the prefix and everything under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len()
                        || p.ends_with('/')
                        || path.as_bytes().get(p.len()) == Some(&b'/'))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeaderConfig {
    pub user: HeaderName,
    pub email: HeaderName,
    pub preferred_username: HeaderName,
    pub groups: HeaderName,
    pub forwarded_user: HeaderName,
    pub forwarded_email: HeaderName,
    pub name: HeaderName,
    /// nginx: the 401 from `auth-request` carries the sign-in URL here.
    pub signin_url: HeaderName,
    /// Pass Portcullis's own cookies to the upstream (default: stripped).
    pub pass_cookies: bool,
    pub access_token: AccessTokenHeader,
    /// Extra identity headers from claims kept in the session.
    pub claims: Vec<(HeaderName, String)>,
}

/// How the upstream gets the user's access token, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTokenHeader {
    None,
    /// `Authorization: Bearer <token>`.
    Authorization,
    /// `X-Auth-Request-Access-Token: <token>`.
    Header,
}

impl HeaderConfig {
    /// Every header name that carries identity: stripped from every request.
    pub fn identity_names(&self) -> impl Iterator<Item = &HeaderName> {
        [
            &self.user,
            &self.email,
            &self.preferred_username,
            &self.groups,
            &self.forwarded_user,
            &self.forwarded_email,
            &self.name,
        ]
        .into_iter()
        .chain(self.claims.iter().map(|(h, _)| h))
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_form_bytes: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// One line per request (request id, route, decision, user, latency).
    pub requests: bool,
    /// OTLP/HTTP collector for traces (cargo feature `otel`).
    pub otlp_endpoint: Option<url::Url>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Where `/metrics` is served.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// A separate admin listener for `/metrics` (then not on the main one).
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    pub fn on_main_listener(&self) -> bool {
        self.listen.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct DemoInfo {
    pub email: String,
    pub password: String,
}

/// Every problem found in a config, each one with where and how to fix it.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub struct Problem {
    /// The key path (`upstream.url`), or empty for the whole file.
    pub key: String,
    /// Where the key was set (file line or environment variable), if known.
    pub origin: Option<Origin>,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{n} problem{} in the config:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            let key = if p.key.is_empty() {
                "(file)"
            } else {
                p.key.as_str()
            };
            match &p.origin {
                Some(o) => writeln!(f, "- {key} ({o}): {}", p.message)?,
                None => writeln!(f, "- {key}: {}", p.message)?,
            }
            if !p.fix.is_empty() {
                writeln!(f, "  fix: {}", p.fix)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn single(key: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                key: key.into(),
                origin: None,
                message: message.into(),
                fix: fix.into(),
            }],
        }
    }
}

/// Reads `path` (YAML), lays `env` over it, and validates.
impl Config {
    /// The settings in force that weaken security, one line each: logged
    /// at `warn` at start and after each reload.
    pub fn insecure_settings(&self) -> Vec<String> {
        use crate::providers::ProviderKind;
        let mut out = Vec::new();
        for p in &self.providers {
            match &p.kind {
                ProviderKind::Oidc(c) => {
                    if c.insecure_accept_unverified_email {
                        out.push(format!("provider {}: insecure_accept_unverified_email accepts e-mail addresses the provider has not verified", p.id));
                    }
                    if c.allow_dangerous_email_account_linking {
                        out.push(format!("provider {}: allow_dangerous_email_account_linking joins existing users by e-mail alone", p.id));
                    }
                }
                ProviderKind::Email(e) => {
                    use crate::providers::email::smtp::Security;
                    if matches!(
                        e.mailer.security,
                        Security::StartTlsOpportunistic | Security::Plain
                    ) {
                        out.push(format!("provider {}: starttls {} may send the SMTP password and the sign-in links in clear text", p.id, e.mailer.security.as_str()));
                    }
                }
                ProviderKind::Credentials(_) => {}
            }
        }
        out
    }
}

pub fn load(
    path: &std::path::Path,
    env: &(impl EnvSource + ?Sized),
) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::single(
            "",
            format!("cannot read config file {name}: {e}"),
            "pass an existing, readable YAML file to --config",
        )
    })?;
    load_str(&text, &name, env)
}

/// Like [`load`], from text already read (`file` names it in messages).
pub fn load_str(
    text: &str,
    file: &str,
    env: &(impl EnvSource + ?Sized),
) -> Result<Config, ConfigError> {
    let mut doc = source::from_yaml(text, file)
        .map_err(|e| ConfigError::single("", e.0, "correct the YAML syntax at that line"))?;
    doc.apply_env(env).map_err(|e| {
        ConfigError::single(
            "",
            e.0,
            "set PORTCULLIS_<KEY>__<SUBKEY>=value, lists as [a, b]",
        )
    })?;
    validate::validate(&doc, std::path::Path::new(file).parent())
}

/// The embedded demo: whoami upstream, one credentials user with a fresh
/// password, a fresh secret. The environment can still override any key.
pub fn demo(env: &(impl EnvSource + ?Sized)) -> Result<Config, ConfigError> {
    let mut doc = source::from_yaml(validate::DEMO_YAML, "<embedded demo>")
        .map_err(|e| ConfigError::single("", e.0, ""))?;
    let email = "demo@portcullis.local".to_string();
    let password = crate::crypto::random_token(12);
    let hash = crate::providers::credentials::hash_password(&password)
        .map_err(|e| ConfigError::single("", e, ""))?;
    doc.value["secrets"] = serde_json::json!([secret::generate()]);
    doc.value["providers"][0]["users"] = serde_json::json!([{
        "email": email, "name": "Demo User", "groups": ["demo"], "password_hash": hash,
    }]);
    doc.apply_env(env)
        .map_err(|e| ConfigError::single("", e.0, "correct the variable"))?;
    let mut cfg = validate::validate(&doc, None)?;
    cfg.demo = Some(DemoInfo { email, password });
    Ok(cfg)
}

/// A URL with its password (if any) replaced.
/// The effective config as `portcullis check` prints it: every key with
/// its value in force, secrets replaced by their count.
pub fn effective(c: &Config) -> String {
    use serde_json::json;
    let secs = |d: Duration| format!("{}s", d.as_secs());
    let upstream = match &c.upstream {
        None => serde_json::Value::Null,
        Some(Upstream::Whoami { timeout }) => {
            json!({ "url": "builtin:whoami", "timeout": secs(*timeout) })
        }
        Some(Upstream::Url {
            url,
            ca_file,
            client_identity,
            connect_timeout,
            timeout,
        }) => json!({
            "url": url.as_str(), "ca_file": ca_file.as_ref().map(|p| p.display().to_string()),
            "client_cert_file": client_identity.as_ref().map(|(c, _)| c.display().to_string()),
            "client_key_file": client_identity.as_ref().map(|(_, k)| k.display().to_string()),
            "connect_timeout": secs(*connect_timeout), "timeout": secs(*timeout),
        }),
    };
    let h = &c.headers;
    let v = json!({
        "listen": c.listen.to_string(),
        "workers": c.workers,
        "public_url": c.public_url.as_str(),
        "base_path": c.base_path,
        "secrets": format!("<{} redacted>", c.secrets.len()),
        "trusted_proxies": c.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "upstream": upstream,
        "session": { "strategy": match c.session.strategy { SessionStrategy::Jwt => "jwt", SessionStrategy::Database => "database" },
                     "max_age": secs(c.session.max_age), "update_age": secs(c.session.update_age) },
        "store": c.store.as_ref().map(|s| json!({
            "url": match &s.backend {
                crate::store::Backend::Redis(crate::store::RedisTarget::Standalone(u)) => crate::store::redact_url(u),
                crate::store::Backend::Redis(crate::store::RedisTarget::Sentinel { sentinels, master, .. }) => format!("redis+sentinel://{}/{master}", sentinels.join(",")),
                crate::store::Backend::Redis(crate::store::RedisTarget::Cluster { nodes, .. }) => format!("redis+cluster://{}", nodes.join(",")),
                crate::store::Backend::Sql(t) => crate::store::redact_url(&t.url),
            },
            "key_prefix": s.key_prefix, "timeout": secs(s.timeout), "ca_file": s.ca_file.as_ref().map(|p| p.display().to_string()),
            "max_connections": s.max_connections, "auto_migrate": s.auto_migrate,
            "sweep_interval": secs(s.sweep_interval), "sweep_batch": s.sweep_batch, "client_cache": s.client_cache,
        })),
        "cookies": { "name_prefix": c.cookies.name_prefix, "secure": c.cookies.secure, "domains": c.cookies.domains,
                     "flow_max_age": secs(c.cookies.flow_max_age), "max_flows": c.cookies.max_flows },
        "redirects": { "allowed_domains": c.redirect_domains },
        "access": { "allowed_emails": c.access.allowed_emails, "allowed_domains": c.access.allowed_domains,
                    "allowed_groups": c.access.allowed_groups,
                    "public_paths": c.access.public_paths.iter().map(|p| match p { PathPattern::Exact(e) => e.clone(), PathPattern::Prefix(p) => format!("{}/*", p.trim_end_matches('/')) }).collect::<Vec<_>>() },
        "providers": c.providers.iter().map(crate::providers::ProviderConfig::effective).collect::<Vec<_>>(),
        "headers": { "user": h.user.as_str(), "email": h.email.as_str(), "preferred_username": h.preferred_username.as_str(),
                     "groups": h.groups.as_str(), "forwarded_user": h.forwarded_user.as_str(), "forwarded_email": h.forwarded_email.as_str(),
                     "name": h.name.as_str(), "signin_url": h.signin_url.as_str(), "pass_cookies": h.pass_cookies,
                     "access_token": format!("{:?}", h.access_token).to_ascii_lowercase(),
                     "claims": h.claims.iter().map(|(k, v)| (k.as_str().to_string(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>() },
        "limits": { "max_header_bytes": c.limits.max_header_bytes, "max_form_bytes": c.limits.max_form_bytes,
                    "header_read_timeout": secs(c.limits.header_read_timeout), "shutdown_grace": secs(c.limits.shutdown_grace) },
        "log": { "format": match c.log.format { LogFormat::Text => "text", LogFormat::Json => "json" }, "level": c.log.level, "requests": c.log.requests,
                 "otlp_endpoint": c.log.otlp_endpoint.as_ref().map(url::Url::as_str) },
        "metrics": { "listen": c.metrics.listen.map(|a| a.to_string()) },
        "tls": c.tls.as_ref().map(|t| json!({ "cert_file": t.cert_file.display().to_string(), "key_file": t.key_file.display().to_string() })),
    });
    let mut v = v;
    guard::effective(c, &mut v);
    crate::authz::policy::load::effective(&c.routes, &mut v);
    v["tokens"] = c.tokens.effective();
    serde_json::to_string_pretty(&v).unwrap_or_default()
}
