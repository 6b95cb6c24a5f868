//! `tokens:` from the config file to [`TokensConfig`]: keys read and
//! checked, durations and header names parsed, every problem reported
//! with its key and fix (through the validator's collector).

use std::path::{Path, PathBuf};

use http::HeaderName;

use super::TokensConfig;
use super::keys::{self, KeySpec};
use crate::config::guard::Bad;
use crate::config::raw::RawTokens;
use crate::config::validate::parse_duration;

/// Builds the section; `has_store`: a store keeps the deny list.
pub fn build(
    raw: &RawTokens,
    has_store: bool,
    resolve: &dyn Fn(&str) -> PathBuf,
    bad: Bad<'_>,
) -> TokensConfig {
    let mut cfg = TokensConfig {
        keys: raw
            .keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| key(i, k, resolve, bad))
            .collect(),
        ..TokensConfig::default()
    };
    if let Some(first) = cfg.keys.first()
        && first.private.is_none()
    {
        bad(
            "tokens.keys[0]",
            "the first key signs tokens, and it has no private key".into(),
            "give the first entry a private_key_file (public-only entries go after it)",
        );
    }
    for (i, k) in cfg.keys.iter().enumerate() {
        if cfg.keys[..i].iter().any(|o| o.id == k.id) {
            bad(
                &format!("tokens.keys[{i}].id"),
                format!("the id {} is used twice", k.id),
                "give every key its own id",
            );
        }
    }
    match raw.identity.header.as_deref().map(str::trim) {
        None => {}
        Some("") => cfg.identity_header = None,
        Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => cfg.identity_header = Some(n),
            Err(_) => bad(
                "tokens.identity.header",
                format!("{h:?} is not a valid header name"),
                "use letters, digits and dashes, like X-Auth-Request-Token, or \"\" to send none",
            ),
        },
    }
    if let Some(t) = raw.identity.ttl.as_deref() {
        match parse_duration(t) {
            Some(d) if d.as_secs() >= 1 && d.as_secs() <= 86_400 => cfg.identity_ttl = d,
            _ => bad(
                "tokens.identity.ttl",
                format!("{t:?} is not a duration from 1s to 24h"),
                "write it like 5m (the default) or 30s",
            ),
        }
    }
    cfg.api_enabled = raw.api.enabled.unwrap_or(false);
    if let Some(f) = raw.revocation_file.as_deref() {
        if has_store {
            bad(
                "tokens.revocation_file",
                "with a store configured, revoked tokens are kept in it (shared by replicas)"
                    .into(),
                "remove tokens.revocation_file, or the store",
            );
        }
        cfg.revocation_file = Some(resolve(f));
    }
    cfg
}

fn key(
    i: usize,
    k: &crate::config::raw::RawTokenKey,
    resolve: &dyn Fn(&str) -> PathBuf,
    bad: Bad<'_>,
) -> Option<KeySpec> {
    let at = |field: &str| format!("tokens.keys[{i}].{field}");
    let id = match k.id.map(u32::try_from) {
        Some(Ok(id)) => id,
        _ => {
            bad(
                &at("id"),
                "every key needs an id from 0 to 4294967295".into(),
                "number your keys (tokens name the id of the key that signed them)",
            );
            return None;
        }
    };
    match (&k.private_key_file, &k.public_key) {
        (Some(file), None) => {
            let path = resolve(file);
            let private = read_private(&path).map_err(|e| {
                bad(
                    &at("private_key_file"),
                    e,
                    "create one with `openssl genpkey -algorithm ed25519 -out key.pem`",
                )
            });
            let private = private.ok()?;
            Some(KeySpec {
                id,
                public: private.public(),
                private: Some(private),
            })
        }
        (None, Some(public)) => match keys::parse_public(public) {
            Ok(public) => Some(KeySpec {
                id,
                private: None,
                public,
            }),
            Err(e) => {
                bad(
                    &at("public_key"),
                    e,
                    "paste the hex key `{base}/keys` lists",
                );
                None
            }
        },
        _ => {
            bad(
                &at("private_key_file"),
                "a key needs exactly one of private_key_file and public_key".into(),
                "give the signing key a private_key_file; old keys only a public_key",
            );
            None
        }
    }
}

fn read_private(path: &Path) -> Result<biscuit_auth::PrivateKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    keys::load_private_pem(&text)
}
