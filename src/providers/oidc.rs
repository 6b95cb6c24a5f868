//! The `oidc` and `oauth` providers: discovery (cached, refreshed in the
//! background), authorization code flow with PKCE S256, `state` and
//! `nonce` always on, ID tokens verified as OIDC Core §3.1.3.7 lists
//! ([`verify`]), JWKS cached with a refetch on an unknown `kid`, userinfo
//! merged, claims mapped by config ([`super::profile`] expressions),
//! `email_verified: false` refused unless allowed.
//!
//! A plain OAuth 2 provider (`type: oauth`, GitHub, Discord...) is the same
//! machine with its endpoints configured instead of discovered, no ID
//! token, the profile read from userinfo and any extra profile requests.

pub mod jwks;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::outbound::{ClientAuth, Outbound, OutboundError};
use super::profile::{Expr, first_of, union_of};
use crate::clock::Clock;
use crate::crypto::{Secret, b64, ct_eq};
use jwks::Jwks;

/// Where to read each part of the profile from: expressions tried in
/// order (the first that finds something wins; groups take them all).
#[derive(Debug, Clone)]
pub struct ClaimMap {
    pub id: Vec<Expr>,
    pub name: Vec<Expr>,
    pub email: Vec<Expr>,
    pub image: Vec<Expr>,
    pub preferred_username: Vec<Expr>,
    pub groups: Vec<Expr>,
}

impl ClaimMap {
    /// The OIDC standard claims.
    pub fn standard() -> [(&'static str, &'static str); 6] {
        [
            ("id", "sub"),
            ("name", "name"),
            ("email", "email"),
            ("image", "picture"),
            ("preferred_username", "preferred_username"),
            ("groups", "groups"),
        ]
    }
}

/// The endpoints of a plain OAuth 2 provider (nothing to discover).
#[derive(Debug, Clone)]
pub struct OAuthEndpoints {
    pub authorization_url: String,
    pub token_url: String,
    pub userinfo_url: Option<String>,
}

/// An extra GET (with the access token) whose JSON joins the profile
/// document under `into`: GitHub's e-mails and teams.
#[derive(Debug, Clone)]
pub struct ProfileRequest {
    pub url: String,
    pub into: String,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    /// `client_secret_basic`, unless discovery says only `post` works.
    Auto,
    Basic,
    Post,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    Query,
    FormPost,
}

/// An OIDC provider as configured.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Compared byte for byte with the discovery document and `iss`
    /// (empty for plain OAuth 2).
    pub issuer: String,
    /// Set for plain OAuth 2: no discovery, no ID token.
    pub oauth: Option<OAuthEndpoints>,
    /// The preset this provider started from, if any.
    pub preset: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub response_mode: ResponseMode,
    /// Extra authorization parameters (`prompt`, `acr_values`, `login_hint`, `hd`).
    pub authorization_params: Vec<(String, String)>,
    pub claims: ClaimMap,
    /// Fetched after userinfo, each into its own key of the profile document.
    pub profile_requests: Vec<ProfileRequest>,
    /// Claims that must have these values (Google's `hd`), else AccessDenied.
    pub require: Vec<(Expr, String)>,
    /// PKCE (RFC 7636); always on for OIDC, per provider for OAuth 2.
    pub pkce: bool,
    pub token_auth: TokenAuth,
    /// Let this provider sign in to an existing user with the same e-mail
    /// (Auth.js `allowDangerousEmailAccountLinking`).
    pub allow_dangerous_email_account_linking: bool,
    /// Empty: what discovery says (asymmetric ones only), else RS256.
    pub algorithms: Vec<String>,
    pub trusted_audiences: Vec<String>,
    /// Accept this provider's JWTs as `Authorization: Bearer` (oauth2-proxy
    /// `skip_jwt_bearer_tokens`), with `aud` = `client_id` or one of
    /// `bearer_audiences` (oauth2-proxy `extra_jwt_issuers`).
    pub accept_bearer_tokens: bool,
    pub bearer_audiences: Vec<String>,
    pub insecure_accept_unverified_email: bool,
    /// Keep access, refresh and ID tokens in the session.
    pub store_tokens: bool,
    pub timeout: Duration,
    pub ca_file: Option<std::path::PathBuf>,
}

/// The parts of a discovery document we use (OIDC Discovery 1.0 §3).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

/// Why a sign-in with this provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the identity provider refused: {0}")]
    Refused(String),
    #[error("invalid ID token: {0}")]
    IdToken(#[from] verify::VerifyError),
    #[error("the e-mail address is not verified by the identity provider")]
    UnverifiedEmail,
    /// A `require`d claim is missing or has another value.
    #[error("claim {0} does not have the required value")]
    Required(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<OutboundError> for OidcError {
    fn from(e: OutboundError) -> Self {
        if e.is_unavailable() {
            OidcError::Unavailable(e.to_string())
        } else {
            OidcError::Refused(e.to_string())
        }
    }
}

/// Tokens from the token endpoint.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    pub expires_at: Option<u64>,
    /// When to refresh: shortly before `expires_at`.
    pub refresh_at: Option<u64>,
}

/// What a sign-in established about the user.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub image: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Vec<String>,
    /// All claims (ID token, then userinfo), for claim headers.
    pub claims: Map<String, Value>,
}

/// A configured provider and what it learned at run time.
pub struct OidcProvider {
    pub cfg: OidcConfig,
    outbound: Outbound,
    meta: ArcSwapOption<Metadata>,
    jwks: ArcSwap<Jwks>,
    /// Unix time of the last refetch for an unknown `kid` (at most one
    /// every 30 s, so forged kids cannot make us hammer the provider).
    jwks_refetched: AtomicU64,
    clock: Clock,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OidcProvider({})", self.cfg.issuer)
    }
}

/// A value at a dotted path (`realm_access.roles`) in a claim set.
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// `email_verified: false`, or `"false"`: Apple sends the claim as a
/// string or a boolean.
fn email_unverified(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("false") || s == "0",
        Some(Value::Number(n)) => n.as_u64() == Some(0),
        _ => false,
    }
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    b64(&Sha256::digest(verifier.as_bytes()))
}

impl OidcProvider {
    pub fn new(cfg: OidcConfig, clock: Clock) -> Result<Self, String> {
        let outbound = Outbound::new(cfg.ca_file.as_deref(), cfg.timeout)?;
        // Plain OAuth 2: the configured endpoints are the whole metadata.
        let meta = cfg.oauth.as_ref().map(|o| {
            Arc::new(Metadata {
                issuer: String::new(),
                authorization_endpoint: o.authorization_url.clone(),
                token_endpoint: o.token_url.clone(),
                userinfo_endpoint: o.userinfo_url.clone(),
                jwks_uri: String::new(),
                end_session_endpoint: None,
                id_token_signing_alg_values_supported: Vec::new(),
                token_endpoint_auth_methods_supported: Vec::new(),
            })
        });
        Ok(OidcProvider {
            cfg,
            outbound,
            meta: ArcSwapOption::new(meta),
            jwks: ArcSwap::from_pointee(Jwks::default()),
            jwks_refetched: AtomicU64::new(0),
            clock,
        })
    }

    /// Latency and failures of calls to this provider.
    pub fn stats(&self) -> &crate::metrics::Dependency {
        &self.outbound.stats
    }

    pub fn metadata(&self) -> Option<Arc<Metadata>> {
        self.meta.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.meta.load().is_some()
    }

    /// Fetches and checks the discovery document, then the JWKS.
    pub async fn discover(&self) -> Result<(), String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let doc = self
            .outbound
            .get_json(&url, None)
            .await
            .map_err(|e| e.to_string())?;
        let meta: Metadata = serde_json::from_value(doc)
            .map_err(|e| format!("{url}: not a discovery document: {e}"))?;
        // Discovery §4.3: the issuer in the document is the one we asked.
        if meta.issuer != self.cfg.issuer {
            return Err(format!(
                "{url}: issuer {:?} differs from the configured {:?}",
                meta.issuer, self.cfg.issuer
            ));
        }
        let jwks = self
            .outbound
            .get_json(&meta.jwks_uri, None)
            .await
            .map_err(|e| e.to_string())?;
        let jwks = Jwks::parse(&jwks).map_err(|e| format!("{}: {e}", meta.jwks_uri))?;
        self.jwks.store(Arc::new(jwks));
        self.meta.store(Some(Arc::new(meta)));
        Ok(())
    }

    /// Loads discovery now and keeps retrying (1 s doubling to 60 s) until
    /// it works, then refreshes it every `refresh`.
    /// The task holds a weak reference: it ends once the provider is
    /// dropped (a config reload replaced it).
    pub fn spawn_discovery(self: &Arc<Self>, refresh: Duration) {
        if self.is_oauth() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let Some(me) = weak.upgrade() else { return };
                let pause = match me.discover().await {
                    Ok(()) => {
                        tracing::info!(issuer = %me.cfg.issuer, "OIDC discovery loaded");
                        backoff = Duration::from_secs(1);
                        refresh
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %me.cfg.issuer, error = %e, retry_in = ?backoff, "OIDC discovery failed");
                        let b = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        b
                    }
                };
                drop(me);
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// Plain OAuth 2 (no discovery, no ID token).
    pub fn is_oauth(&self) -> bool {
        self.cfg.oauth.is_some()
    }

    /// The authorization request (OIDC Core §3.1.2.1) for one flow.
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Option<url::Url> {
        let meta = self.meta.load_full()?;
        let mut url = url::Url::parse(&meta.authorization_endpoint).ok()?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.cfg.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.cfg.scopes.join(" "))
                .append_pair("state", state);
            if !self.is_oauth() {
                q.append_pair("nonce", nonce);
            }
            if self.cfg.pkce {
                q.append_pair("code_challenge", &pkce_challenge(verifier))
                    .append_pair("code_challenge_method", "S256");
            }
            if self.cfg.response_mode == ResponseMode::FormPost {
                q.append_pair("response_mode", "form_post");
            }
            for (k, v) in &self.cfg.authorization_params {
                q.append_pair(k, v);
            }
        }
        Some(url)
    }

    fn client_auth(&self, meta: &Metadata) -> ClientAuth<'_> {
        let methods = &meta.token_endpoint_auth_methods_supported;
        let post = match self.cfg.token_auth {
            TokenAuth::Post => true,
            TokenAuth::Basic => false,
            TokenAuth::Auto => {
                !methods.is_empty()
                    && !methods.iter().any(|m| m == "client_secret_basic")
                    && methods.iter().any(|m| m == "client_secret_post")
            }
        };
        if post {
            ClientAuth::InBody
        } else {
            ClientAuth::Basic {
                id: &self.cfg.client_id,
                secret: self.cfg.client_secret.expose(),
            }
        }
    }

    /// Calls the token endpoint with `fields` (+ client authentication).
    async fn token_request(&self, mut fields: Vec<(&str, &str)>) -> Result<TokenSet, OidcError> {
        let meta = self
            .meta
            .load_full()
            .ok_or_else(|| OidcError::Unavailable("discovery is not loaded".into()))?;
        let auth = self.client_auth(&meta);
        if matches!(auth, ClientAuth::InBody) {
            fields.push(("client_id", &self.cfg.client_id));
            fields.push(("client_secret", self.cfg.client_secret.expose()));
        }
        let v = self
            .outbound
            .post_form(&meta.token_endpoint, &fields, auth)
            .await?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        // RFC 6749 §5.1 requires token_type, but some providers' answers
        // (Atlassian's documented one) leave it out: absent means Bearer.
        if s("token_type").is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
            && s("access_token").is_some()
        {
            return Err(OidcError::Invalid(
                "the token endpoint answered a token type other than Bearer".into(),
            ));
        }
        Ok(TokenSet {
            access_token: s("access_token"),
            refresh_token: s("refresh_token"),
            id_token: s("id_token"),
            expires_at: v
                .get("expires_in")
                .and_then(Value::as_u64)
                .map(|e| self.clock.now().saturating_add(e)),
            // Refresh a minute early, or a quarter of the lifetime for
            // short-lived tokens (never on every request).
            refresh_at: v.get("expires_in").and_then(Value::as_u64).map(|e| {
                self.clock
                    .now()
                    .saturating_add(e)
                    .saturating_sub((e / 4).min(60))
            }),
        })
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3 + RFC 7636 §4.5).
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet, OidcError> {
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        if self.cfg.pkce {
            fields.push(("code_verifier", verifier));
        }
        self.token_request(fields).await
    }

    /// Uses a refresh token (RFC 6749 §6).
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, OidcError> {
        self.token_request(vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    fn algorithms(&self, meta: &Metadata) -> Vec<String> {
        if !self.cfg.algorithms.is_empty() {
            return self.cfg.algorithms.clone();
        }
        let advertised: Vec<String> = meta
            .id_token_signing_alg_values_supported
            .iter()
            .filter(|a| jwks::SUPPORTED.contains(&a.as_str()))
            .cloned()
            .collect();
        if advertised.is_empty() {
            vec!["RS256".into()]
        } else {
            advertised
        }
    }

    /// Verifies an ID token; on an unknown `kid` refetches the JWKS once
    /// (at most every 30 s) and tries again.
    pub async fn verify_id_token(
        &self,
        token: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        self.verify_jwt(
            token,
            Some(nonce),
            &self.cfg.trusted_audiences,
            verify::verify,
        )
        .await
    }

    /// Verifies a JWT presented as a bearer token (`accept_bearer_tokens`).
    pub async fn verify_bearer_token(&self, token: &str) -> Result<Map<String, Value>, OidcError> {
        self.verify_jwt(
            token,
            None,
            &self.cfg.bearer_audiences,
            verify::verify_bearer,
        )
        .await
    }

    /// Verifies a back-channel logout token (Back-Channel Logout 1.0 §2.6).
    pub async fn verify_logout_token(&self, token: &str) -> Result<Map<String, Value>, OidcError> {
        self.verify_jwt(
            token,
            None,
            &self.cfg.trusted_audiences,
            verify::verify_logout,
        )
        .await
    }

    async fn verify_jwt(
        &self,
        token: &str,
        nonce: Option<&str>,
        audiences: &[String],
        verify_fn: verify::VerifyFn,
    ) -> Result<Map<String, Value>, OidcError> {
        let meta = self
            .meta
            .load_full()
            .ok_or_else(|| OidcError::Unavailable("discovery is not loaded".into()))?;
        let algorithms = self.algorithms(&meta);
        let check = |jwks: &Jwks| {
            verify_fn(
                token,
                jwks,
                &verify::Expect {
                    issuer: &self.cfg.issuer,
                    client_id: &self.cfg.client_id,
                    nonce,
                    algorithms: &algorithms,
                    trusted_audiences: audiences,
                    now: self.clock.now(),
                    skew: crate::session::CLOCK_SKEW,
                },
            )
        };
        match check(&self.jwks.load()) {
            Err(verify::VerifyError::UnknownKey(kid)) => {
                let now = self.clock.now();
                let last = self.jwks_refetched.load(Ordering::Relaxed);
                if last != 0 && now.saturating_sub(last) < 30 {
                    return Err(verify::VerifyError::UnknownKey(kid).into());
                }
                self.jwks_refetched.store(now, Ordering::Relaxed);
                let fresh = self.outbound.get_json(&meta.jwks_uri, None).await?;
                let fresh = Jwks::parse(&fresh).map_err(OidcError::Invalid)?;
                let result = check(&fresh);
                self.jwks.store(Arc::new(fresh));
                Ok(result?)
            }
            other => Ok(other?),
        }
    }

    /// Userinfo (OIDC Core §5.3); its `sub` must be the ID token's
    /// (§5.3.2). Plain OAuth 2 has no ID token: `sub` is `None` and
    /// userinfo is the profile.
    pub async fn userinfo(
        &self,
        access_token: &str,
        sub: Option<&str>,
    ) -> Result<Map<String, Value>, OidcError> {
        let Some(url) = self
            .meta
            .load()
            .as_ref()
            .and_then(|m| m.userinfo_endpoint.clone())
        else {
            return Ok(Map::new());
        };
        let v = self.outbound.get_json(&url, Some(access_token)).await?;
        let Value::Object(mut m) = v else {
            return Err(OidcError::Invalid("userinfo is not a JSON object".into()));
        };
        if let Some(sub) = sub
            && !m
                .get("sub")
                .and_then(Value::as_str)
                .is_some_and(|s| ct_eq(s.as_bytes(), sub.as_bytes()))
        {
            return Err(OidcError::Invalid("userinfo names another subject".into()));
        }
        for r in &self.cfg.profile_requests {
            let extra = self.outbound.get_json(&r.url, Some(access_token)).await?;
            m.insert(r.into.clone(), extra);
        }
        Ok(m)
    }

    /// The profile from the ID token's claims with userinfo laid over them.
    pub fn profile(
        &self,
        mut claims: Map<String, Value>,
        userinfo: Map<String, Value>,
    ) -> Result<Profile, OidcError> {
        for (k, v) in userinfo {
            claims.insert(k, v);
        }
        let c = &self.cfg.claims;
        let email = first_of(&c.email, &claims).map(|e| e.trim().to_ascii_lowercase());
        if email.is_some()
            && !self.cfg.insecure_accept_unverified_email
            && email_unverified(claims.get("email_verified"))
        {
            return Err(OidcError::UnverifiedEmail);
        }
        for (expr, want) in &self.cfg.require {
            if !expr
                .all(&claims)
                .iter()
                .any(|got| ct_eq(got.as_bytes(), want.as_bytes()))
            {
                return Err(OidcError::Required(expr.to_string()));
            }
        }
        let id = first_of(&c.id, &claims).ok_or_else(|| {
            OidcError::Invalid(format!(
                "no value at {} for the user id",
                c.id.iter()
                    .map(Expr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let groups = union_of(&c.groups, &claims);
        if groups.is_empty()
            && claims
                .get("_claim_names")
                .and_then(|n| n.get("groups"))
                .is_some()
        {
            // OIDC Core §5.6.2 distributed claims (Entra's groups overage):
            // the groups live elsewhere and are not fetched.
            tracing::warn!(provider = %self.cfg.client_id, "the token names its groups as a distributed claim (too many groups, e.g. Entra ID overage); they are not fetched: assign groups to the application or use app roles");
        }
        Ok(Profile {
            id,
            name: first_of(&c.name, &claims),
            email,
            image: first_of(&c.image, &claims),
            preferred_username: first_of(&c.preferred_username, &claims),
            groups,
            claims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn email_verified_false_is_a_boolean_or_apples_string() {
        use serde_json::json;
        for (v, unverified) in [
            (json!(false), true),
            (json!("false"), true),
            (json!(true), false),
            (json!("true"), false),
        ] {
            assert_eq!(email_unverified(Some(&v)), unverified, "{v}");
        }
        assert!(!email_unverified(None));
    }

    #[test]
    fn claims_are_read_at_dotted_paths() {
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"realm_access":{"roles":["a","b"]},"dotted.key":"x"}"#)
                .unwrap();
        assert_eq!(claim_at(&c, "realm_access.roles").unwrap()[1], "b");
        assert_eq!(claim_at(&c, "dotted.key").unwrap(), "x");
        assert!(claim_at(&c, "realm_access.nope").is_none());
    }
}
