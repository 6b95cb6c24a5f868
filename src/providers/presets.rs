//! Provider presets: data, not code paths. `presets.yaml` holds, per
//! provider (GitHub, Google, Entra ID...), the defaults of an ordinary
//! `oidc` or `oauth` provider entry; `preset: github` in the config lays
//! them under what the entry says, so every field stays overridable.
//!
//! A preset's `params` name its blanks with defaults (`~` = required);
//! `${name}` in any of its strings is replaced by the entry's `params`
//! value or that default. An `authorization_params` or `require` entry
//! whose value comes out empty is dropped (Google's `hd` only when a
//! hosted domain is set). The provider's id defaults to the preset's name.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

const PRESETS: &str = include_str!("presets.yaml");

/// Every preset, by name, as written in `presets.yaml`.
pub fn all() -> &'static Map<String, Value> {
    static P: OnceLock<Map<String, Value>> = OnceLock::new();
    P.get_or_init(|| {
        // A unit test parses the file: a broken one never ships.
        serde_saphyr::from_str::<Value>(PRESETS)
            .ok()
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default()
    })
}

/// The entry `entry` (which names `preset`) with the preset's defaults
/// under it and its `${params}` filled in; the error says what is missing.
pub fn apply(entry: &Map<String, Value>) -> Result<Map<String, Value>, (String, String)> {
    let Some(name) = entry.get("preset") else {
        return Ok(entry.clone());
    };
    let name = name.as_str().unwrap_or_default();
    let Some(Value::Object(preset)) = all().get(name) else {
        let known: Vec<&str> = all().keys().map(String::as_str).collect();
        return Err((
            "preset".into(),
            format!(
                "unknown preset {name:?}; the presets are {}",
                known.join(", ")
            ),
        ));
    };
    let mut params: BTreeMap<String, Option<String>> = BTreeMap::new();
    if let Some(Value::Object(defaults)) = preset.get("params") {
        for (k, v) in defaults {
            params.insert(k.clone(), text(v));
        }
    }
    if let Some(Value::Object(given)) = entry.get("params") {
        for (k, v) in given {
            if !params.contains_key(k) {
                return Err((
                    format!("params.{k}"),
                    format!(
                        "the {name} preset has no parameter {k:?} (it has: {})",
                        params.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            params.insert(k.clone(), text(v));
        }
    }
    if let Some((k, _)) = params.iter().find(|(_, v)| v.is_none()) {
        return Err((
            format!("params.{k}"),
            format!("the {name} preset needs params.{k}"),
        ));
    }
    let mut params: BTreeMap<String, String> = params
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    // A default may use another parameter (`https://${subdomain}.onelogin.com`).
    let snapshot = params.clone();
    for (k, v) in params.iter_mut() {
        if let Value::String(s) =
            fill(&Value::String(v.clone()), &snapshot).map_err(|e| (format!("params.{k}"), e))?
        {
            *v = s;
        }
    }
    let mut merged = Map::new();
    for (k, v) in preset {
        if k != "params" {
            merged.insert(k.clone(), fill(v, &params).map_err(|e| (k.clone(), e))?);
        }
    }
    for key in ["authorization_params", "require"] {
        if let Some(Value::Object(m)) = merged.get_mut(key) {
            m.retain(|_, v| v.as_str() != Some(""));
        }
    }
    lay_over(&mut merged, entry);
    // The provider's id (its callback path) is the preset's name unless
    // set, as Auth.js names its providers: two presets never clash.
    merged
        .entry("id")
        .or_insert_with(|| Value::String(name.to_string()));
    Ok(merged)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// `${name}` in every string of `v`, from `params`.
fn fill(v: &Value, params: &BTreeMap<String, String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(at) = rest.find("${") {
                out.push_str(&rest[..at]);
                let end = rest[at..]
                    .find('}')
                    .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?
                    + at;
                let name = &rest[at + 2..end];
                out.push_str(
                    params
                        .get(name)
                        .ok_or_else(|| format!("{s:?} uses an undeclared parameter {name:?}"))?,
                );
                rest = &rest[end + 1..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| fill(x, params))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), fill(x, params)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// What the entry sets wins; maps (`claims`, `authorization_params`)
/// merge key by key.
fn lay_over(base: &mut Map<String, Value>, entry: &Map<String, Value>) {
    for (k, v) in entry {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(e)) if k != "params" => {
                for (ik, iv) in e {
                    b.insert(ik.clone(), iv.clone());
                }
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_file_parses_and_has_at_least_25_presets() {
        assert!(
            serde_saphyr::from_str::<Value>(PRESETS).is_ok(),
            "presets.yaml does not parse"
        );
        assert!(all().len() >= 25, "{} presets", all().len());
        for (name, p) in all() {
            let t = p.get("type").and_then(Value::as_str);
            assert!(matches!(t, Some("oidc" | "oauth")), "{name}: type {t:?}");
            assert!(p.get("name").is_some(), "{name} has no display name");
        }
    }

    /// Every preset, its required params filled, is a valid provider.
    #[test]
    fn every_preset_loads_as_a_provider() {
        for (name, p) in all() {
            let required: Vec<String> = p
                .get("params")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter(|(_, v)| v.is_null())
                        .map(|(k, _)| {
                            format!(
                                "{k}: {}",
                                if k.contains("url") || k == "issuer" {
                                    "https://p.example"
                                } else {
                                    "p1"
                                }
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let yaml = format!(
                "secrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - preset: {name}\n    params: {{{}}}\n    client_id: c\n    client_secret: s\n",
                required.join(", ")
            );
            let env = std::collections::HashMap::<String, String>::new();
            if let Err(e) = crate::config::load_str(&yaml, "presets.yaml", &env) {
                panic!("preset {name}: {e}");
            }
        }
    }

    #[test]
    fn the_entry_wins_and_params_fill_blanks() {
        let m = apply(&entry(json!({
            "preset": "entra-id", "params": {"tenant": "t-1"},
            "client_id": "c", "claims": {"name": "given_name"}
        })))
        .unwrap();
        assert_eq!(m["issuer"], "https://login.microsoftonline.com/t-1/v2.0");
        assert_eq!(m["claims"]["name"], "given_name");
        assert_eq!(m["claims"]["groups"], json!(["groups", "roles"]));
        assert_eq!(m["client_id"], "c");
        assert_eq!(m["id"], "entra-id");
        let named = apply(&entry(json!({"preset": "github", "id": "gh"}))).unwrap();
        assert_eq!(named["id"], "gh");
    }

    #[test]
    fn missing_or_unknown_params_and_presets_are_errors() {
        assert_eq!(
            apply(&entry(json!({"preset": "entra-id"}))).unwrap_err().0,
            "params.tenant"
        );
        assert_eq!(
            apply(&entry(json!({"preset": "github", "params": {"nope": "x"}})))
                .unwrap_err()
                .0,
            "params.nope"
        );
        assert_eq!(
            apply(&entry(json!({"preset": "gitbub"}))).unwrap_err().0,
            "preset"
        );
    }

    #[test]
    fn optional_params_drop_their_entries_when_empty() {
        let plain = apply(&entry(json!({"preset": "google"}))).unwrap();
        assert!(plain.get("require").is_none_or(|r| r.get("hd").is_none()));
        let hd = apply(&entry(
            json!({"preset": "google", "params": {"hosted_domain": "example.com"}}),
        ))
        .unwrap();
        assert_eq!(hd["require"]["hd"], "example.com");
        assert_eq!(hd["authorization_params"]["hd"], "example.com");
    }
}
