//! Biscuit tokens: the root key ring ([`keys`]), the identity token
//! forwarded to upstreams ([`identity`]), API tokens for machines
//! ([`api`]) and their deny list ([`revocation`]).
//!
//! [`TokensConfig`] is the validated `tokens:` section; [`Tokens`] is what
//! runs, built once per config beside the rest of the app.

pub mod api;
pub mod identity;
pub mod keys;
pub mod revocation;
pub mod settings;

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::Clock;
use crate::config::Config;
use crate::session::Session;
use keys::{KeyRing, KeySpec};
use revocation::Revocation;

/// The default header of the forwarded identity token.
pub const DEFAULT_HEADER: &str = "x-auth-request-token";
/// The default lifetime of a forwarded identity token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The `tokens:` section, validated (keys loaded).
#[derive(Debug, Clone)]
pub struct TokensConfig {
    /// `tokens.keys`; empty: keys derived from the secrets.
    pub keys: Vec<KeySpec>,
    /// `tokens.identity.header`; `None` when set to "" (disabled).
    pub identity_header: Option<HeaderName>,
    pub identity_ttl: Duration,
    /// `tokens.api.enabled` (default false: the `Authorization` header
    /// may be the app's own).
    pub api_enabled: bool,
    pub revocation_file: Option<PathBuf>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            keys: Vec::new(),
            identity_header: Some(HeaderName::from_static(DEFAULT_HEADER)),
            identity_ttl: DEFAULT_TTL,
            api_enabled: false,
            revocation_file: None,
        }
    }
}

impl TokensConfig {
    /// `portcullis check`'s view: key ids, never key material paths' content.
    pub fn effective(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": self.keys.iter().map(|k| serde_json::json!({
                "id": k.id, "public_key": k.public.to_bytes_hex(), "signs": k.private.is_some(),
            })).collect::<Vec<_>>(),
            "identity": {
                "header": self.identity_header.as_ref().map_or("", HeaderName::as_str),
                "ttl": format!("{}s", self.identity_ttl.as_secs()),
            },
            "api": { "enabled": self.api_enabled },
            "revocation_file": self.revocation_file.as_ref().map(|p| p.display().to_string()),
        })
    }
}

/// The running token machinery.
pub struct Tokens {
    ring: Option<KeyRing>,
    cfg: TokensConfig,
    cache: identity::IdentityCache,
    revocation: Revocation,
    clock: Clock,
    /// `{base}/keys`, rendered once.
    keys_json: bytes::Bytes,
}

/// Why an API token did not pass (for the log; the client gets a 401).
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error(transparent)]
    Token(#[from] api::ApiTokenError),
    #[error("API tokens need a root key: configure `secrets` or `tokens.keys`")]
    NoKeys,
}

impl Tokens {
    pub fn new(config: &Config, store: Option<&crate::store::Store>, clock: Clock) -> Self {
        let cfg = config.tokens.clone();
        let ring = KeyRing::new(&cfg.keys, &config.secrets);
        let revocation = match (store, &config.store, &cfg.revocation_file) {
            (Some(store), Some(s), _) => Revocation::Store {
                store: store.clone(),
                key: revocation::store_key(&s.key_prefix),
            },
            (_, _, Some(path)) => Revocation::File(revocation::FileList::new(path.clone())),
            _ => Revocation::None,
        };
        let keys_json = ring
            .as_ref()
            .map_or_else(|| serde_json::json!({ "keys": [] }), KeyRing::to_json);
        Tokens {
            ring,
            cfg,
            cache: identity::IdentityCache::default(),
            revocation,
            clock,
            keys_json: serde_json::to_vec(&keys_json).unwrap_or_default().into(),
        }
    }

    pub fn ring(&self) -> Option<&KeyRing> {
        self.ring.as_ref()
    }

    pub fn revocation(&self) -> &Revocation {
        &self.revocation
    }

    pub fn api_enabled(&self) -> bool {
        self.cfg.api_enabled
    }

    /// The identity token header, if enabled (stripped from clients).
    pub fn identity_header(&self) -> Option<&HeaderName> {
        self.cfg.identity_header.as_ref()
    }

    /// Sets the forwarded identity token of an allowed request.
    pub fn set_identity(&self, headers: &mut HeaderMap, session: &Session) {
        let (Some(name), Some(ring)) = (&self.cfg.identity_header, &self.ring) else {
            return;
        };
        let now = self.clock.now();
        if let Some(v) = self
            .cache
            .get(ring, session, now, self.cfg.identity_ttl.as_secs().max(1))
        {
            headers.insert(name.clone(), v);
        }
    }

    /// Verifies an API token for a request: signature and root key,
    /// revocation, then the token's checks with the request's facts.
    /// `Ok(Err(_))`: rejected (401); `Err`: the deny list cannot be read
    /// (503, never a pass).
    pub async fn verify_api(
        &self,
        token: &str,
        req: &api::RequestFacts<'_>,
    ) -> Result<Result<Session, Rejected>, revocation::RevocationError> {
        let Some(ring) = &self.ring else {
            return Ok(Err(Rejected::NoKeys));
        };
        let t = match api::parse(ring, token) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e.into())),
        };
        if self
            .revocation
            .any_revoked(&api::revocation_ids(&t))
            .await?
        {
            return Ok(Err(api::ApiTokenError::Revoked.into()));
        }
        Ok(api::authorize(&t, req).map_err(Rejected::from))
    }

    /// `GET {base}/keys`: the public keys with their ids. Public, and
    /// cacheable for five minutes (a rotation adds the new key first).
    pub fn keys_response(&self) -> http::Response<crate::http::Body> {
        let mut r = http::Response::new(crate::http::full(self.keys_json.clone()));
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        r
    }
}

/// What a request's `Authorization` headers offer as a bearer.
pub enum Bearer<'a> {
    None,
    One(&'a str),
    /// Several `Authorization` headers, a bearer among them: which one the
    /// upstream reads is unknowable, so none is honoured.
    Ambiguous,
}

/// The bearer value of the `Authorization` header, if it has one.
pub fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    fn value(v: &HeaderValue) -> Option<&str> {
        let (scheme, rest) = v.to_str().ok()?.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|t| !t.is_empty())
    }
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = all.next().and_then(value);
    if all.next().is_some()
        && headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .any(|v| value(v).is_some())
    {
        return Bearer::Ambiguous;
    }
    first.map_or(Bearer::None, Bearer::One)
}
