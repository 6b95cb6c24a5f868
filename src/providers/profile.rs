//! Where each part of a user's profile comes from: claim expressions,
//! parsed at config load and read against the JSON a provider answered
//! (ID token claims, userinfo, and any extra profile requests).
//!
//! An expression is a path, optionally followed by `|` and a template:
//!
//! - `email`, `realm_access.roles`: a dotted path (a claim whose own name
//!   contains dots, like `https://example.com/roles`, is matched whole first);
//! - `emails[primary=true,verified=true].email`: `[...]` on a segment keeps
//!   the array elements whose fields equal the values (`[]` keeps all,
//!   `[0]` the first);
//! - `teams[] | {organization.login}/{slug}`: each value found fills the
//!   template (a value missing a field gives nothing);
//! - `| https://cdn.example/avatars/{id}/{avatar}.png`: a template over
//!   the whole document.
//!
//! Arrays at the end of a path give each of their scalar elements, so
//! `groups` reads a list or a single string alike.

use serde_json::{Map, Value};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    name: String,
    select: Option<Select>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Select {
    All,
    Index(usize),
    /// Elements whose fields (dotted) equal these values.
    Where(Vec<(String, String)>),
}

/// A parsed claim expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    source: String,
    path: Vec<Segment>,
    template: Option<String>,
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl Expr {
    /// Parses `source`; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Expr, String> {
        let (path, template) = match source.split_once('|') {
            Some((p, t)) => (p.trim(), Some(t.trim().to_string())),
            None => (source.trim(), None),
        };
        if path.is_empty() && template.is_none() {
            return Err("the expression is empty".into());
        }
        if let Some(t) = &template {
            check_template(t)?;
        }
        let path = if path.is_empty() {
            Vec::new()
        } else {
            parse_path(path)?
        };
        Ok(Expr {
            source: source.trim().to_string(),
            path,
            template,
        })
    }

    /// Every value the expression finds in `doc`, as text.
    pub fn all(&self, doc: &Map<String, Value>) -> Vec<String> {
        if self.path.is_empty() {
            let whole = Value::Object(doc.clone());
            return self
                .template
                .as_deref()
                .and_then(|t| fill(t, &whole))
                .into_iter()
                .collect();
        }
        let found = self.values(doc);
        match &self.template {
            None => found.into_iter().flat_map(scalars).collect(),
            Some(t) => found.iter().filter_map(|v| fill(t, v)).collect(),
        }
    }

    /// The first non-empty value.
    pub fn first(&self, doc: &Map<String, Value>) -> Option<String> {
        self.all(doc).into_iter().find(|s| !s.is_empty())
    }

    fn values<'a>(&self, doc: &'a Map<String, Value>) -> Vec<&'a Value> {
        // A claim named with dots (`https://example.com/roles`) whole first.
        if self.template.is_none()
            && let Some(v) = doc.get(&self.source)
        {
            return vec![v];
        }
        let Some((first, rest)) = self.path.split_first() else {
            return Vec::new();
        };
        let mut cur: Vec<&Value> = doc.get(&first.name).into_iter().collect();
        cur = select(cur, first.select.as_ref());
        for seg in rest {
            cur = cur
                .into_iter()
                .filter_map(|v| v.as_object()?.get(&seg.name))
                .collect();
            cur = select(cur, seg.select.as_ref());
        }
        cur
    }
}

/// Reads a profile part: each expression in turn, the first that finds
/// something wins.
pub fn first_of(exprs: &[Expr], doc: &Map<String, Value>) -> Option<String> {
    exprs.iter().find_map(|e| e.first(doc))
}

/// Every value all expressions find, in order, without repeats.
pub fn union_of(exprs: &[Expr], doc: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in exprs {
        for v in e.all(doc) {
            if !v.is_empty() && !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

fn select<'a>(vals: Vec<&'a Value>, sel: Option<&Select>) -> Vec<&'a Value> {
    let Some(sel) = sel else { return vals };
    vals.into_iter()
        .filter_map(Value::as_array)
        .flat_map(|a| match sel {
            Select::All => a.iter().collect::<Vec<_>>(),
            Select::Index(i) => a.get(*i).into_iter().collect(),
            Select::Where(conds) => a
                .iter()
                .filter(|el| {
                    conds
                        .iter()
                        .all(|(k, want)| scalar_at(el, k).is_some_and(|got| &got == want))
                })
                .collect(),
        })
        .collect()
}

/// A scalar as text; `None` for null, objects and arrays.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value and, if it is an array, each scalar element.
fn scalars(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// The scalar at a dotted path inside `v` (`.` alone is `v` itself).
fn scalar_at(v: &Value, path: &str) -> Option<String> {
    if path == "." {
        return scalar(v);
    }
    let mut cur = v;
    for p in path.split('.') {
        cur = cur.as_object()?.get(p)?;
    }
    scalar(cur)
}

/// Fills `{field.path}` placeholders from `v`; `None` if one is missing.
fn fill(template: &str, v: &Value) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let value = scalar_at(v, &rest[open + 1..close])?;
        if value.is_empty() {
            return None;
        }
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn check_template(t: &str) -> Result<(), String> {
    let mut depth = 0;
    for c in t.chars() {
        match c {
            '{' if depth == 0 => depth = 1,
            '}' if depth == 1 => depth = 0,
            '{' | '}' => return Err(format!("unbalanced braces in the template {t:?}")),
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced braces in the template {t:?}"));
    }
    Ok(())
}

fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty() || name.contains(']') {
            return Err(format!("an empty or broken name in the path {path:?}"));
        }
        rest = &rest[end..];
        let mut select = None;
        if let Some(after) = rest.strip_prefix('[') {
            let close = after
                .find(']')
                .ok_or_else(|| format!("a [ without ] in the path {path:?}"))?;
            select = Some(parse_select(&after[..close], path)?);
            rest = &after[close + 1..];
        }
        out.push(Segment {
            name: name.to_string(),
            select,
        });
        match rest.strip_prefix('.') {
            Some("") => return Err(format!("the path {path:?} ends with a dot")),
            Some(r) => rest = r,
            None if rest.is_empty() => {}
            None => return Err(format!("expected . after ] in the path {path:?}")),
        }
    }
    Ok(out)
}

fn parse_select(s: &str, path: &str) -> Result<Select, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Select::All);
    }
    if let Ok(i) = s.parse::<usize>() {
        return Ok(Select::Index(i));
    }
    s.split(',')
        .map(|c| match c.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            }
            _ => Err(format!(
                "{c:?} in the path {path:?} is not field=value (or [] or [n])"
            )),
        })
        .collect::<Result<_, _>>()
        .map(Select::Where)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> Map<String, Value> {
        serde_json::from_str(s).unwrap()
    }

    fn e(s: &str) -> Expr {
        Expr::parse(s).unwrap()
    }

    #[test]
    fn dotted_paths_lists_and_whole_names() {
        let d = doc(
            r#"{"realm_access":{"roles":["a","b"]},"https://x.io/roles":["r"],"n":7,"one":"g"}"#,
        );
        assert_eq!(e("realm_access.roles").all(&d), ["a", "b"]);
        assert_eq!(e("https://x.io/roles").all(&d), ["r"]);
        assert_eq!(e("n").first(&d).as_deref(), Some("7"));
        assert_eq!(e("one").all(&d), ["g"]);
        assert!(e("realm_access.nope").all(&d).is_empty());
    }

    #[test]
    fn github_shapes_verified_primary_email_and_teams() {
        let d = doc(
            r#"{"emails":[{"email":"old@x.io","primary":false,"verified":true},
                          {"email":"Me@X.io","primary":true,"verified":false},
                          {"email":"me@x.io","primary":true,"verified":true}],
                "teams":[{"slug":"ops","organization":{"login":"acme"}},{"slug":"x"}],
                "orgs":[{"login":"acme"},{"login":"umbrella"}]}"#,
        );
        assert_eq!(
            e("emails[primary=true,verified=true].email")
                .first(&d)
                .as_deref(),
            Some("me@x.io")
        );
        let groups = union_of(
            &[
                e("orgs[].login"),
                e("teams[] | {organization.login}/{slug}"),
            ],
            &d,
        );
        assert_eq!(groups, ["acme", "umbrella", "acme/ops"]);
        assert_eq!(e("emails[0].email").first(&d).as_deref(), Some("old@x.io"));
    }

    #[test]
    fn templates_over_the_document_need_every_field() {
        let with = doc(r#"{"id":"42","avatar":"abc"}"#);
        let without = doc(r#"{"id":"42","avatar":null}"#);
        let img = [e("| https://cdn.example/avatars/{id}/{avatar}.png")];
        assert_eq!(
            first_of(&img, &with).as_deref(),
            Some("https://cdn.example/avatars/42/abc.png")
        );
        assert_eq!(first_of(&img, &without), None);
        // The first expression that finds something wins.
        let name = [e("global_name"), e("username")];
        assert_eq!(
            first_of(&name, &doc(r#"{"global_name":null,"username":"u"}"#)).as_deref(),
            Some("u")
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        for bad in ["", "a..b", "a[", "a[x]", "a.", "a]b", "| {x", "a[k=v]b"] {
            assert!(Expr::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
