//! The config file as written: serde shapes only, no I/O, no checks.
//!
//! Every struct denies unknown keys, so a typo is an error that names the
//! key, never a setting silently ignored. [`super::validate`] turns this
//! into [`super::Config`].

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub public_url: Option<String>,
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
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    pub strategy: Option<String>,
    pub max_age: Option<String>,
    pub update_age: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCookies {
    pub name_prefix: Option<String>,
    pub secure: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub domains: Vec<String>,
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
    pub kind: Option<String>,
    pub id: Option<String>,
    pub name: Option<String>,
    pub users_file: Option<String>,
    /// Users inline, in the users-file shape (the demo uses this).
    pub users: Option<serde_json::Value>,
    // oidc
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    #[serde(deserialize_with = "opt_one_or_many")]
    pub scopes: Option<Vec<String>>,
    pub response_mode: Option<String>,
    pub authorization_params: std::collections::BTreeMap<String, String>,
    pub claims: RawClaimMap,
    #[serde(deserialize_with = "one_or_many")]
    pub algorithms: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub trusted_audiences: Vec<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub insecure_accept_unverified_email: Option<bool>,
    #[serde(deserialize_with = "opt_bool")]
    pub store_tokens: Option<bool>,
    pub ca_file: Option<String>,
    pub timeout: Option<String>,
}

/// Which claim (dotted path) fills each part of the profile.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClaimMap {
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub image: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHeaders {
    pub user: Option<String>,
    pub email: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Option<String>,
    pub forwarded_user: Option<String>,
    pub forwarded_email: Option<String>,
    pub name: Option<String>,
    pub signin_url: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub pass_cookies: Option<bool>,
    /// `none`, `authorization` (Bearer) or `header` (X-Auth-Request-Access-Token).
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
    pub header_read_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key path a config can hold, from the serde shapes themselves.
    fn keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        if let serde_json::Value::Object(m) = v {
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
    }

    #[test]
    fn every_key_is_documented_in_docs_configuration_md() {
        let docs = include_str!("../../docs/configuration.md");
        let mut all = Vec::new();
        let mut raw = serde_json::to_value(RawConfig::default()).unwrap();
        raw["upstream"] = serde_json::to_value(RawUpstream::default()).unwrap();
        keys(&raw, "", &mut all);
        keys(
            &serde_json::to_value(RawProvider::default()).unwrap(),
            "providers[]",
            &mut all,
        );
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
