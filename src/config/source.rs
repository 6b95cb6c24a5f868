//! Where config values come from: a YAML file, then `PORTCULLIS_*`
//! environment variables on top (flag > env > file > default).
//!
//! Both land in one JSON tree, and every key path remembers where it came
//! from (file line, or the variable's name), so every error can point at
//! the place to fix. The environment is a trait so tests pass a map.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

/// The environment variables to read config from.
pub trait EnvSource {
    /// Every `(name, value)` pair; only names starting `PORTCULLIS_` matter.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl EnvSource for HashMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl EnvSource for [(&str, &str)] {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }
}

/// Variables that configure the CLI, not the config tree.
const NOT_CONFIG: &[&str] = &["PORTCULLIS_CONFIG", "PORTCULLIS_LOG"];

/// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_4180_TCP`
/// and friends for a Service named `portcullis`: not ours, never errors.
fn is_service_link(name: &str) -> bool {
    let rest = &name[ENV_PREFIX.len()..];
    rest.starts_with("SERVICE_") || rest == "PORT" || rest.starts_with("PORT_")
}
pub const ENV_PREFIX: &str = "PORTCULLIS_";

/// Where one key's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File {
        file: String,
        line: u64,
        column: u64,
    },
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { file, line, column } => write!(f, "{file} line {line} column {column}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// The merged config tree and the origin of every key path in it.
#[derive(Debug, Default)]
pub struct Document {
    pub value: Value,
    origins: HashMap<String, Origin>,
    pub file: Option<String>,
    /// The file's text: positions inside a value (a Datalog policy's
    /// error) are computed from it.
    pub text: String,
}

impl Document {
    /// Where `path` (`upstream.url`, `providers[0].id`) was set; for a key
    /// that was never set, where its closest parent was.
    pub fn origin(&self, path: &str) -> Option<&Origin> {
        let mut p = path;
        loop {
            if let Some(o) = self.origins.get(p) {
                return Some(o);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// A YAML value that remembers the position of each node.
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A problem reading the sources, before any key is checked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Reads YAML text into a [`Document`]. `file` names it in messages.
pub fn from_yaml(text: &str, file: &str) -> Result<Document, SourceError> {
    if text.trim().is_empty() {
        return Ok(Document {
            value: Value::Object(Map::new()),
            origins: HashMap::new(),
            file: Some(file.into()),
            text: String::new(),
        });
    }
    let root: Spanned<Node> = serde_saphyr::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        SourceError(format!("{file}{at}: not valid YAML: {e}"))
    })?;
    let mut doc = Document {
        value: Value::Null,
        origins: HashMap::new(),
        file: Some(file.into()),
        text: text.to_string(),
    };
    doc.value = flatten(root, String::new(), file, &mut doc.origins);
    if doc.value.is_null() {
        doc.value = Value::Object(Map::new());
    }
    if !doc.value.is_object() {
        return Err(SourceError(format!(
            "{file}: the config must be a mapping of keys (like `listen: 127.0.0.1:4180`)"
        )));
    }
    Ok(doc)
}

/// Records where each key path was written: a map entry at its key, a
/// list item at the item.
fn flatten(
    node: Spanned<Node>,
    path: String,
    file: &str,
    origins: &mut HashMap<String, Origin>,
) -> Value {
    if !path.is_empty() {
        origins.entry(path.clone()).or_insert(Origin::File {
            file: file.into(),
            line: node.referenced.line(),
            column: node.referenced.column(),
        });
    }
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::from(i),
        Node::UInt(u) => Value::from(u),
        Node::Float(f) => Value::from(f),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, n)| flatten(n, format!("{path}[{i}]"), file, origins))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut m = Map::new();
            for (k, n) in entries {
                let p = if path.is_empty() {
                    k.value.clone()
                } else {
                    format!("{path}.{}", k.value)
                };
                origins.insert(
                    p.clone(),
                    Origin::File {
                        file: file.into(),
                        line: k.referenced.line(),
                        column: k.referenced.column(),
                    },
                );
                m.insert(k.value, flatten(n, p, file, origins));
            }
            Value::Object(m)
        }
    }
}

impl Document {
    /// Lays `PORTCULLIS_*` variables over the tree. `__` separates levels
    /// and numbers index lists: `PORTCULLIS_SESSION__MAX_AGE=7d`,
    /// `PORTCULLIS_PROVIDERS__0__USERS_FILE=/etc/users.yaml`. A value in
    /// `[...]` or `{...}` is read as YAML flow; anything else is a string.
    pub fn apply_env(&mut self, env: &(impl EnvSource + ?Sized)) -> Result<(), SourceError> {
        let mut vars: Vec<(String, String)> = env
            .vars()
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with(ENV_PREFIX)
                    && !NOT_CONFIG.contains(&k.as_str())
                    && !is_service_link(k)
            })
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let segments: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            if segments.iter().any(String::is_empty) {
                return Err(SourceError(format!(
                    "environment variable {name}: empty key segment; separate levels with `__`, as in PORTCULLIS_SESSION__MAX_AGE"
                )));
            }
            let trimmed = raw.trim();
            let value = if trimmed.starts_with('[') || trimmed.starts_with('{') {
                serde_saphyr::from_str::<Value>(trimmed).map_err(|e| {
                    SourceError(format!(
                        "environment variable {name}: not a valid YAML list or map: {e}"
                    ))
                })?
            } else {
                Value::String(raw)
            };
            let path = set_path(&mut self.value, &segments, value)
                .map_err(|why| SourceError(format!("environment variable {name}: {why}")))?;
            // Parents the variable created point at it too (a misspelt
            // section is reported at its own path).
            let mut cut = path.len();
            while let Some(i) = path[..cut].rfind(['.', '[']) {
                cut = i;
                self.origins
                    .entry(path[..cut].to_string())
                    .or_insert_with(|| Origin::Env(name.clone()));
            }
            self.origins.insert(path, Origin::Env(name));
        }
        Ok(())
    }
}

/// Sets `value` at `segments` (creating maps and list slots on the way) and
/// returns the key path in the `a.b[0].c` form errors use.
fn set_path(root: &mut Value, segments: &[String], value: Value) -> Result<String, String> {
    let mut cur = root;
    let mut path = String::new();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if let Ok(idx) = seg.parse::<usize>() {
            if idx > 64 {
                return Err(format!("list index {idx} is too large"));
            }
            if cur.is_null() {
                *cur = Value::Array(Vec::new());
            }
            let Value::Array(items) = cur else {
                return Err(format!("`{path}` is not a list"));
            };
            while items.len() <= idx {
                items.push(Value::Object(Map::new()));
            }
            path.push_str(&format!("[{idx}]"));
            cur = &mut items[idx];
        } else {
            if cur.is_null() {
                *cur = Value::Object(Map::new());
            }
            let Value::Object(map) = cur else {
                return Err(format!("`{path}` is not a map"));
            };
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(seg);
            cur = map.entry(seg.clone()).or_insert(Value::Null);
        }
        if last {
            *cur = value;
            return Ok(path);
        }
    }
    Err("empty variable name".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_lines_of_nested_keys() {
        let doc = from_yaml(
            "listen: 1.2.3.4:5\nupstream:\n  url: http://x\nproviders:\n  - type: credentials\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(doc.value["upstream"]["url"], "http://x");
        assert!(matches!(
            doc.origin("upstream.url"),
            Some(Origin::File { line: 3, .. })
        ));
        assert!(matches!(
            doc.origin("providers[0].type"),
            Some(Origin::File { line: 5, .. })
        ));
        // an unset key reports its parent
        assert!(matches!(
            doc.origin("upstream.timeout"),
            Some(Origin::File { line: 2, .. })
        ));
    }

    #[test]
    fn env_overrides_file_and_builds_paths() {
        let mut doc = from_yaml("session:\n  max_age: 1d\n", "c.yaml").unwrap();
        let env: &[(&str, &str)] = &[
            ("PORTCULLIS_SESSION__MAX_AGE", "7d"),
            ("PORTCULLIS_PROVIDERS__0__TYPE", "credentials"),
            ("PORTCULLIS_SECRETS", "[a, b]"),
            ("PORTCULLIS_CONFIG", "ignored.yaml"),
            ("HOME", "/root"),
        ];
        doc.apply_env(env).unwrap();
        assert_eq!(doc.value["session"]["max_age"], "7d");
        assert_eq!(doc.value["providers"][0]["type"], "credentials");
        assert_eq!(doc.value["secrets"], serde_json::json!(["a", "b"]));
        assert!(doc.value.get("config").is_none());
        assert_eq!(
            doc.origin("session.max_age"),
            Some(&Origin::Env("PORTCULLIS_SESSION__MAX_AGE".into()))
        );
    }

    #[test]
    fn bad_yaml_names_the_line() {
        let err = from_yaml("listen: [\n", "c.yaml").unwrap_err();
        assert!(err.0.contains("c.yaml"), "{}", err.0);
        assert!(from_yaml("- a\n- b\n", "c.yaml").is_err());
    }
}
