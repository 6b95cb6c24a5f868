//! The config file as written: serde shapes only, no I/O, no checks.
//!
//! Every struct denies unknown keys, so a typo is an error that names the
//! key, never a setting silently ignored. [`super::validate`] turns this
//! into [`super::Config`].

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    #[serde(deserialize_with = "opt_text")]
    pub listen: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub public_url: Option<String>,
    #[serde(deserialize_with = "opt_u64")]
    pub workers: Option<u64>,
    #[serde(deserialize_with = "opt_text")]
    pub base_path: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub secrets: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub secret_files: Vec<String>,
    #[serde(deserialize_with = "opt_one_or_many")]
    pub trusted_proxies: Option<Vec<String>>,
    pub upstream: Option<RawUpstream>,
    pub session: RawSession,
    pub cookies: RawCookies,
    pub redirects: RawRedirects,
    pub access: RawAccess,
    pub providers: Vec<RawProvider>,
    pub headers: RawHeaders,
    pub limits: RawLimits,
    pub log: RawLog,
    pub store: RawStore,
    pub metrics: RawMetrics,
    pub tls: RawTls,
    pub regulation: RawRegulation,
    /// Groups given by the config: e-mail address → group names.
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    pub sign_in: RawSignIn,
    /// The signed JWT assertion to upstreams (on when the block is present).
    pub jwt: Option<RawJwt>,
    /// Route policies, first match decides (`crate::authz::policy`).
    pub routes: Vec<RawRoute>,
    /// Run limits of every Datalog route policy.
    pub policy_limits: RawPolicyLimits,
    /// Biscuit tokens: root keys, the forwarded identity token, API tokens.
    pub tokens: RawTokens,
}

/// One route: what it matches and what it says.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoute {
    #[serde(deserialize_with = "opt_text")]
    pub name: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub host: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub path: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub methods: Vec<String>,
    /// `public` or `authenticated` (the default without a policy).
    #[serde(deserialize_with = "opt_text")]
    pub access: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_emails: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_domains: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_groups: Vec<String>,
    #[serde(deserialize_with = "opt_text")]
    pub datalog: Option<String>,
}

/// `tokens:` (src/tokens.rs).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokens {
    pub keys: Vec<RawTokenKey>,
    pub identity: RawTokenIdentity,
    pub api: RawTokenApi,
    #[serde(deserialize_with = "opt_text")]
    pub revocation_file: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicyLimits {
    #[serde(deserialize_with = "opt_u64")]
    pub max_facts: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub max_iterations: Option<u64>,
    #[serde(deserialize_with = "opt_text")]
    pub max_time: Option<String>,
}

/// The signed JWT assertion (`X-Auth-Request-Jwt`) and its keys.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJwt {
    #[serde(deserialize_with = "opt_text")]
    pub header: Option<String>,
    /// `EdDSA` (default) or `ES256`.
    #[serde(deserialize_with = "opt_text")]
    pub algorithm: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    #[serde(deserialize_with = "opt_text")]
    pub ttl: Option<String>,
    /// PKCS#8 PEM private keys; the first signs. None: derived from `secrets`.
    #[serde(deserialize_with = "one_or_many")]
    pub key_files: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokenKey {
    #[serde(deserialize_with = "opt_u64")]
    pub id: Option<u64>,
    #[serde(deserialize_with = "opt_text")]
    pub private_key_file: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub public_key: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokenIdentity {
    /// `Some("")` disables the header: kept apart from "unset".
    pub header: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokenApi {
    #[serde(deserialize_with = "opt_bool")]
    pub enabled: Option<bool>,
}

/// Brute-force protection for the sign-in forms.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRegulation {
    #[serde(deserialize_with = "opt_u64")]
    pub max_retries: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub ip_max_retries: Option<u64>,
    #[serde(deserialize_with = "opt_text")]
    pub find_time: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub ban_time: Option<String>,
}

/// Sign-in rules: first match wins, else `default`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSignIn {
    #[serde(deserialize_with = "opt_text")]
    pub default: Option<String>,
    pub rules: Vec<RawSignInRule>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSignInRule {
    #[serde(deserialize_with = "opt_text")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub effect: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub providers: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub emails: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub domains: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub groups: Vec<String>,
    /// Claim path → a value or a list of values.
    pub claims: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    #[serde(deserialize_with = "opt_text")]
    pub cert_file: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    #[serde(deserialize_with = "opt_text")]
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    #[serde(deserialize_with = "opt_text")]
    pub url: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub redis_url: Option<String>,
    #[serde(deserialize_with = "opt_u64")]
    pub max_connections: Option<u64>,
    #[serde(deserialize_with = "opt_bool")]
    pub auto_migrate: Option<bool>,
    #[serde(deserialize_with = "opt_text")]
    pub sweep_interval: Option<String>,
    #[serde(deserialize_with = "opt_u64")]
    pub sweep_batch: Option<u64>,
    #[serde(deserialize_with = "opt_bool")]
    pub client_cache: Option<bool>,
    #[serde(deserialize_with = "opt_text")]
    pub data_dir: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub key_prefix: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub timeout: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    #[serde(deserialize_with = "opt_text")]
    pub url: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub ca_file: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub client_cert_file: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub client_key_file: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub connect_timeout: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    #[serde(deserialize_with = "opt_text")]
    pub strategy: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub max_age: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub update_age: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCookies {
    #[serde(deserialize_with = "opt_text")]
    pub name_prefix: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub secure: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub domains: Vec<String>,
    #[serde(deserialize_with = "opt_text")]
    pub flow_max_age: Option<String>,
    #[serde(deserialize_with = "opt_u64")]
    pub max_flows: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedirects {
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_domains: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccess {
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_emails: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_domains: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_groups: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub public_paths: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProvider {
    #[serde(rename = "type")]
    #[serde(deserialize_with = "opt_text")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub id: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub users_file: Option<String>,
    /// Users inline, in the users-file shape (the demo uses this).
    pub users: Option<serde_json::Value>,
    // oidc
    #[serde(deserialize_with = "opt_text")]
    pub issuer: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub client_id: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub client_secret: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub client_secret_file: Option<String>,
    #[serde(deserialize_with = "opt_one_or_many")]
    pub scopes: Option<Vec<String>>,
    #[serde(deserialize_with = "opt_text")]
    pub response_mode: Option<String>,
    pub authorization_params: std::collections::BTreeMap<String, String>,
    pub claims: RawClaimMap,
    #[serde(deserialize_with = "one_or_many")]
    pub algorithms: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub trusted_audiences: Vec<String>,
    /// Accept this provider's JWTs as `Authorization: Bearer`.
    #[serde(deserialize_with = "opt_bool")]
    pub accept_bearer_tokens: Option<bool>,
    /// Audiences besides `client_id` a bearer token may be issued for.
    #[serde(deserialize_with = "one_or_many")]
    pub bearer_audiences: Vec<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub insecure_accept_unverified_email: Option<bool>,
    #[serde(deserialize_with = "opt_bool")]
    pub store_tokens: Option<bool>,
    #[serde(deserialize_with = "opt_text")]
    pub ca_file: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub timeout: Option<String>,
    /// A preset's defaults under this entry (src/providers/presets.yaml).
    #[serde(deserialize_with = "opt_text")]
    pub preset: Option<String>,
    /// The preset's blanks (`tenant`, `base_url`...).
    pub params: std::collections::BTreeMap<String, String>,
    // oauth
    #[serde(deserialize_with = "opt_text")]
    pub authorization_url: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub token_url: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub userinfo_url: Option<String>,
    pub profile_requests: Vec<RawProfileRequest>,
    #[serde(deserialize_with = "opt_bool")]
    pub pkce: Option<bool>,
    #[serde(deserialize_with = "opt_text")]
    pub token_auth: Option<String>,
    /// Claim path → the value it must have.
    pub require: std::collections::BTreeMap<String, String>,
    #[serde(deserialize_with = "opt_bool")]
    pub allow_dangerous_email_account_linking: Option<bool>,
    /// The only provider: skip the sign-in page.
    #[serde(deserialize_with = "opt_bool")]
    pub auto_redirect: Option<bool>,
    // email
    /// `smtp://host:587` (STARTTLS) or `smtps://host:465` (TLS).
    #[serde(deserialize_with = "opt_text")]
    pub server: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub from: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub username: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub password: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub password_file: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub starttls: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub max_age: Option<String>,
    pub rate_limit: RawRateLimit,
    /// Sign-ins from this provider need one of these groups.
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_groups: Vec<String>,
}

/// How many sign-in e-mails an address, or a client IP, may ask for in
/// one window (counters in the store, shared by replicas).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    #[serde(deserialize_with = "opt_u64")]
    pub per_email: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub per_ip: Option<u64>,
    #[serde(deserialize_with = "opt_text")]
    pub window: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProfileRequest {
    #[serde(deserialize_with = "opt_text")]
    pub url: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub into: Option<String>,
}

/// Which claim expressions fill each part of the profile (one, or a
/// list tried in order).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClaimMap {
    #[serde(deserialize_with = "opt_one_or_many")]
    pub id: Option<Vec<String>>,
    #[serde(deserialize_with = "opt_one_or_many")]
    pub name: Option<Vec<String>>,
    #[serde(deserialize_with = "opt_one_or_many")]
    pub email: Option<Vec<String>>,
    #[serde(deserialize_with = "opt_one_or_many")]
    pub image: Option<Vec<String>>,
    #[serde(deserialize_with = "opt_one_or_many")]
    pub preferred_username: Option<Vec<String>>,
    #[serde(deserialize_with = "opt_one_or_many")]
    pub groups: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHeaders {
    #[serde(deserialize_with = "opt_text")]
    pub user: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub email: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub preferred_username: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub groups: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub forwarded_user: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub forwarded_email: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub signin_url: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub pass_cookies: Option<bool>,
    /// `none`, `authorization` (Bearer) or `header` (X-Auth-Request-Access-Token).
    #[serde(deserialize_with = "opt_text")]
    pub access_token: Option<String>,
    /// Extra headers from claims: header name → claim path.
    pub claims: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    #[serde(deserialize_with = "opt_u64")]
    pub max_header_bytes: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub max_form_bytes: Option<u64>,
    #[serde(deserialize_with = "opt_text")]
    pub header_read_timeout: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    #[serde(deserialize_with = "opt_text")]
    pub format: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub level: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub requests: Option<bool>,
    #[serde(deserialize_with = "opt_text")]
    pub otlp_endpoint: Option<String>,
}

/// A list, or a single string meaning a list of one: from the environment,
/// `PORTCULLIS_SECRETS=abc` is one secret and `PORTCULLIS_SECRETS=[a, b]` two.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn opt_one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    one_or_many(d).map(Some)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar<T> {
    Typed(T),
    Text(String),
}

/// Text, also from a YAML number or boolean (`max_age: 3600`,
/// `secure: true`): the validator reads units and words from it.
fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        U(u64),
        I(i64),
        F(f64),
        B(bool),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|t| match t {
        Text::S(s) => s,
        Text::U(n) => n.to_string(),
        Text::I(n) => n.to_string(),
        Text::F(n) => n.to_string(),
        Text::B(b) => b.to_string(),
    }))
}

/// A boolean, also from the strings `true`/`false` (environment values).
fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Scalar::<bool>::deserialize(d)? {
        Scalar::Typed(b) => Ok(Some(b)),
        Scalar::Text(s) => match s.trim() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            other => Err(serde::de::Error::custom(format!(
                "expected true or false, found {other:?}"
            ))),
        },
    }
}

/// A whole number, also from a string (environment values).
fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Scalar::<u64>::deserialize(d)? {
        Scalar::Typed(n) => Ok(Some(n)),
        Scalar::Text(s) => {
            s.trim().parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!("expected a whole number, found {s:?}"))
            })
        }
    }
}

/// The shape of a config: every key, from the serde types themselves.
/// An empty object stands for a map of free keys (`authorization_params`);
/// `providers` holds one item, the shape of every provider.
pub fn schema() -> serde_json::Value {
    let mut raw = serde_json::to_value(RawConfig::default()).unwrap_or_default();
    raw["upstream"] = serde_json::to_value(RawUpstream::default()).unwrap_or_default();
    raw["jwt"] = serde_json::to_value(RawJwt::default()).unwrap_or_default();
    let mut provider = serde_json::to_value(RawProvider::default()).unwrap_or_default();
    provider["profile_requests"] =
        serde_json::json!([serde_json::to_value(RawProfileRequest::default()).unwrap_or_default()]);
    raw["providers"] = serde_json::json!([provider]);
    raw["sign_in"]["rules"] =
        serde_json::json!([serde_json::to_value(RawSignInRule::default()).unwrap_or_default()]);
    raw["routes"] =
        serde_json::json!([serde_json::to_value(RawRoute::default()).unwrap_or_default()]);
    raw["tokens"]["keys"] =
        serde_json::json!([serde_json::to_value(RawTokenKey::default()).unwrap_or_default()]);
    raw
}

/// Every key of `value` that `schema` does not have, as key paths
/// (`upstream.urll`, `providers[1].issuerr`), all at once.
pub fn unknown_keys(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (value, schema) {
        (Value::Object(v), Value::Object(s)) if !s.is_empty() => {
            for (k, child) in v {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match s.get(k) {
                    Some(sub) => unknown_keys(child, sub, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(items), Value::Array(shape)) if shape.len() == 1 => {
            for (i, item) in items.iter().enumerate() {
                unknown_keys(item, &shape[0], &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key path a config can hold, from the serde shapes themselves.
    fn keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, child) in m {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(path.clone());
                    keys(child, &path, out);
                }
            }
            serde_json::Value::Array(a) if a.len() == 1 => keys(&a[0], &format!("{prefix}[]"), out),
            _ => {}
        }
    }

    #[test]
    fn unknown_keys_are_found_at_every_depth() {
        let v = serde_json::json!({"listen": "x", "sesion": {}, "upstream": {"urll": 1}, "providers": [{"type": "oidc"}, {"issuerr": "x"}], "headers": {"claims": {"X-Any": "c"}}});
        let mut out = Vec::new();
        unknown_keys(&v, &schema(), "", &mut out);
        assert_eq!(out, vec!["providers[1].issuerr", "sesion", "upstream.urll"]);
    }

    #[test]
    fn every_key_is_documented_in_docs_configuration_md() {
        let docs = include_str!("../../docs/configuration.md");
        let mut all = Vec::new();
        keys(&schema(), "", &mut all);
        let missing: Vec<&String> = all
            .iter()
            .filter(|k| !docs.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md does not document: {missing:?}"
        );
    }
}
