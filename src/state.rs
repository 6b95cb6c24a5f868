//! The running instance: the config and everything built from it once at
//! start (cookie names, derived keys, the redirect policy, header names,
//! the upstream client), shared by every request without locks.

use std::sync::atomic::AtomicBool;

use tokio::sync::Semaphore;

use std::collections::HashMap;
use std::sync::Arc;

use crate::authn::csrf::Csrf;
use crate::authn::flow::Flows;
use crate::clock::Clock;
use crate::config::{Config, Upstream};
use crate::http::cookies::CookieNames;
use crate::http::forwarded::ClientInfo;
use crate::http::redirect::RedirectPolicy;
use crate::identity::IdentityHeaders;
use crate::providers::ProviderKind;
use crate::providers::oidc::OidcProvider;
use crate::proxy::Proxy;
use crate::session::SessionStore;

pub struct App {
    pub config: Config,
    pub names: CookieNames,
    pub sessions: SessionStore,
    /// The configured store (shared with `database` sessions): users,
    /// accounts, verification tokens and shared counters live here.
    pub store: Option<crate::store::Store>,
    /// Users and linked accounts (with `database` sessions).
    pub users: Option<crate::users::Users>,
    pub csrf: Csrf,
    pub flows: Flows,
    /// The ID token of a `jwt` session, in its own sign-out-only cookie.
    pub id_tokens: crate::session::id_token::IdTokenCookie,
    pub metrics: crate::metrics::Metrics,
    /// Single-flight state for access-token refreshes.
    pub refresher: crate::authn::refresh::Refresher,
    /// Run-time state of each OIDC provider, by provider id.
    pub oidc: HashMap<String, Arc<OidcProvider>>,
    pub redirects: RedirectPolicy,
    pub identity: IdentityHeaders,
    pub proxy: Option<Proxy>,
    pub clock: Clock,
    /// Set once start-up work is done (`/readyz` also needs every OIDC
    /// provider's discovery loaded).
    pub ready: AtomicBool,
    /// Bounds concurrent password checks (argon2 takes ~19 MiB each).
    pub password_checks: Semaphore,
    /// Brute-force bans for the sign-in forms (in the store, if any).
    pub regulation: crate::authn::regulation::Regulator,
    /// The signed JWT assertion to upstreams (`jwt:`), and `{base}/jwks`.
    pub jwt: Option<crate::jwt::Assertions>,
    /// Biscuit root keys, identity tokens, API tokens and their deny list.
    pub tokens: crate::tokens::Tokens,
    scheme: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("upstream TLS setup failed: {0}")]
    Tls(String),
    #[error("provider {0}: {1}")]
    Provider(String, String),
    #[error("store: {0}")]
    Store(String),
    #[error("jwt: {0}")]
    Jwt(String),
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
        let jwt = || {
            crate::session::cookie::CookieStore::new(
                &config.secrets,
                &names,
                &config.session,
                clock.clone(),
            )
        };
        let store = match &config.store {
            Some(cfg) => Some(crate::store::Store::new(cfg).map_err(BuildError::Store)?),
            None => None,
        };
        let sessions = match (config.session.strategy, &config.store, &store) {
            (crate::config::SessionStrategy::Database, Some(cfg), Some(store)) => {
                SessionStore::Database(crate::session::database::DatabaseStore::new(
                    store.clone(),
                    &cfg.key_prefix,
                    &config.secrets,
                    &names,
                    &config.session,
                    clock.clone(),
                ))
            }
            _ => SessionStore::Jwt(jwt()),
        };
        let users = match (&sessions, &store, &config.store) {
            (SessionStore::Database(_), Some(store), Some(cfg)) => Some(crate::users::Users::new(
                store.clone(),
                &cfg.key_prefix,
                &config.secrets,
                clock.clone(),
            )),
            _ => None,
        };
        let csrf = Csrf::new(&config.secrets, &names);
        let flows = Flows::new(
            &config.secrets,
            &names,
            &config.base_path,
            config.cookies.flow_max_age,
            config.cookies.max_flows,
            clock.clone(),
        );
        let id_tokens = crate::session::id_token::IdTokenCookie::new(
            &config.secrets,
            &names,
            &config.base_path,
            config.session.max_age,
            clock.clone(),
        );
        let mut oidc = HashMap::new();
        for p in &config.providers {
            if let ProviderKind::Oidc(cfg) = &p.kind {
                let provider = OidcProvider::new((**cfg).clone(), clock.clone())
                    .map_err(|e| BuildError::Provider(p.id.clone(), e))?;
                oidc.insert(p.id.clone(), Arc::new(provider));
            }
        }
        let redirects =
            RedirectPolicy::new(config.public_url.clone(), config.redirect_domains.clone());
        let mut identity = IdentityHeaders::new(&config.headers);
        let jwt = match &config.jwt {
            Some(cfg) => {
                identity.also_strip(cfg.header.clone());
                Some(
                    crate::jwt::Assertions::new(
                        cfg,
                        &config.secrets,
                        config.public_url.as_str(),
                        clock.clone(),
                    )
                    .map_err(BuildError::Jwt)?,
                )
            }
            None => None,
        };
        if let Some(h) = &config.tokens.identity_header {
            identity.also_strip(h.clone());
        }
        let tokens = crate::tokens::Tokens::new(&config, store.as_ref(), clock.clone());
        let workers = crate::server::worker_count(config.workers);
        let proxy = match (&config.upstream, upstream_override) {
            (
                Some(Upstream::Url {
                    url,
                    ca_file,
                    client_identity,
                    connect_timeout,
                    timeout,
                }),
                _,
            ) => Some(
                Proxy::new(
                    url.clone(),
                    ca_file.as_deref(),
                    client_identity
                        .as_ref()
                        .map(|(c, k)| (c.as_path(), k.as_path())),
                    *connect_timeout,
                    *timeout,
                    workers,
                )
                .map_err(BuildError::Tls)?,
            ),
            (Some(Upstream::Whoami { timeout }), Some(url)) => Some(
                Proxy::new(
                    url,
                    None,
                    None,
                    std::time::Duration::from_secs(2),
                    *timeout,
                    workers,
                )
                .map_err(BuildError::Tls)?,
            ),
            _ => None,
        };
        let scheme = if config.public_url.scheme() == "https" {
            "https"
        } else {
            "http"
        };
        let regulation = crate::authn::regulation::Regulator::new(
            config.regulation.clone(),
            store
                .clone()
                .zip(config.store.as_ref().map(|s| s.key_prefix.clone())),
            clock.clone(),
        );
        let checks = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            * 2;
        Ok(App {
            names,
            sessions,
            store,
            users,
            csrf,
            flows,
            id_tokens,
            refresher: Default::default(),
            metrics: crate::metrics::Metrics::new(config.providers.iter().map(|p| p.id.clone())),
            oidc,
            redirects,
            identity,
            proxy,
            clock,
            // Nothing asynchronous to load yet; OIDC discovery will gate this.
            ready: AtomicBool::new(true),
            password_checks: Semaphore::new(checks),
            regulation,
            jwt,
            tokens,
            scheme,
            config,
        })
    }

    /// Starts background work: OIDC discovery (retried until it loads,
    /// then refreshed hourly).
    pub fn start_background(&self) {
        for p in self.oidc.values() {
            p.spawn_discovery(std::time::Duration::from_secs(3600));
        }
        if let Some(store) = &self.store {
            store.spawn_background();
        }
    }

    /// Samples the number of stored sessions for `/metrics` every 30 s.
    pub fn spawn_session_count(self: &Arc<Self>) {
        if self.sessions.database().is_none() {
            return;
        }
        // A weak reference: the task ends when a reload replaced the app.
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { return };
                if let Some(db) = me.sessions.database()
                    && let Some(n) = db.count().await
                {
                    me.metrics
                        .active_sessions
                        .store(n, std::sync::atomic::Ordering::Relaxed);
                }
                drop(me);
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            }
        });
    }

    /// `/metrics`: the request metrics and those of each dependency.
    pub fn render_metrics(&self) -> String {
        let mut deps: Vec<(String, &crate::metrics::Dependency)> = Vec::new();
        if let Some(store) = &self.store {
            deps.push((store.kind().into(), store.stats()));
        }
        for (id, p) in &self.oidc {
            deps.push((format!("idp_{}", id.replace('-', "_")), p.stats()));
        }
        let mut out = self.metrics.render(&deps);
        if let Some(crate::store::Store::Redis(r)) = &self.store
            && let Some(hits) = r.cache_hits()
        {
            out.push_str("# HELP portcullis_redis_cache_hits_total Session records answered from memory while Redis tracks them (store.client_cache).\n# TYPE portcullis_redis_cache_hits_total counter\n");
            out.push_str(&format!("portcullis_redis_cache_hits_total {hits}\n"));
        }
        out
    }

    /// `/readyz`: started, and every OIDC provider's discovery is loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
            && self.oidc.values().all(|p| p.is_ready())
            && self.store.as_ref().is_none_or(|s| s.is_healthy())
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
