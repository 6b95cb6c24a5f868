//! The running instance: the config and everything built from it once at
//! start (cookie names, derived keys, the redirect policy, header names,
//! the upstream client), shared by every request without locks.

use std::sync::atomic::AtomicBool;

use tokio::sync::Semaphore;

use crate::authn::csrf::Csrf;
use crate::clock::Clock;
use crate::config::{Config, Upstream};
use crate::http::cookies::CookieNames;
use crate::http::forwarded::ClientInfo;
use crate::http::redirect::RedirectPolicy;
use crate::identity::IdentityHeaders;
use crate::proxy::Proxy;
use crate::session::SessionStore;

pub struct App {
    pub config: Config,
    pub names: CookieNames,
    pub sessions: SessionStore,
    pub csrf: Csrf,
    pub redirects: RedirectPolicy,
    pub identity: IdentityHeaders,
    pub proxy: Option<Proxy>,
    pub clock: Clock,
    /// `/readyz`: everything the instance depends on is loaded.
    pub ready: AtomicBool,
    /// Bounds concurrent password checks (argon2 takes ~19 MiB each).
    pub password_checks: Semaphore,
    scheme: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("upstream TLS setup failed: {0}")]
    Tls(String),
}

impl App {
    /// Builds the instance; `upstream_override` replaces the configured
    /// upstream URL (the built-in whoami app's address is known only once
    /// it listens).
    pub fn new(
        config: Config,
        clock: Clock,
        upstream_override: Option<url::Url>,
    ) -> Result<Self, BuildError> {
        let names = CookieNames::new(&config.cookies);
        let sessions = SessionStore::new(&config.secrets, &names, &config.session, clock.clone());
        let csrf = Csrf::new(&config.secrets, &names);
        let redirects =
            RedirectPolicy::new(config.public_url.clone(), config.redirect_domains.clone());
        let identity = IdentityHeaders::new(&config.headers);
        let proxy = match (&config.upstream, upstream_override) {
            (
                Some(Upstream::Url {
                    url,
                    ca_file,
                    connect_timeout,
                    timeout,
                }),
                _,
            ) => Some(
                Proxy::new(url.clone(), ca_file.as_deref(), *connect_timeout, *timeout)
                    .map_err(BuildError::Tls)?,
            ),
            (Some(Upstream::Whoami { timeout }), Some(url)) => Some(
                Proxy::new(url, None, std::time::Duration::from_secs(2), *timeout)
                    .map_err(BuildError::Tls)?,
            ),
            _ => None,
        };
        let scheme = if config.public_url.scheme() == "https" {
            "https"
        } else {
            "http"
        };
        let checks = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            * 2;
        Ok(App {
            names,
            sessions,
            csrf,
            redirects,
            identity,
            proxy,
            clock,
            // Nothing asynchronous to load yet; OIDC discovery will gate this.
            ready: AtomicBool::new(true),
            password_checks: Semaphore::new(checks),
            scheme,
            config,
        })
    }

    /// The scheme a request came in with when no trusted proxy says.
    pub fn listener_scheme(&self) -> &'static str {
        self.scheme
    }

    /// The cookie domain for a request: the configured domain its host
    /// falls under, or `None` for a host-only cookie.
    pub fn cookie_domain(&self, client: &ClientInfo) -> Option<&str> {
        let host = client.hostname()?;
        self.config
            .cookies
            .domains
            .iter()
            .find(|d| host == d.as_str() || host.ends_with(&format!(".{d}")))
            .map(String::as_str)
    }

    /// An absolute URL under the base path on the public origin.
    pub fn public_auth_url(&self, sub: &str) -> String {
        let origin = self.config.public_url.as_str().trim_end_matches('/');
        format!("{origin}{}{sub}", self.config.base_path)
    }
}
