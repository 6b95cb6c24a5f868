//! `routes:` and `policy_limits:` from the config file to [`Routes`]:
//! every problem at once, each with its key, its place and a fix. A
//! Datalog error points at its own line and column in the file, inside
//! the block scalar.

use std::time::Duration;

use super::datalog::{CompileError, DatalogPolicy, Limits};
use super::matcher::{HostMatch, PathMatch};
use super::{Route, Routes, Rule};
use crate::config::raw::{RawConfig, RawRoute};
use crate::config::source::Document;
use crate::config::validate::parse_duration;
use crate::config::{Origin, Problem};

/// Builds the routes; the problems go to the caller's list.
pub fn build(raw: &RawConfig, doc: &Document, problems: &mut Vec<Problem>) -> Routes {
    let mut bad = |key: &str, origin: Option<Origin>, message: String, fix: &str| {
        problems.push(Problem {
            origin: origin.or_else(|| doc.origin(key).cloned()),
            key: key.into(),
            message,
            fix: fix.into(),
        });
    };
    let limits = limits(raw, &mut bad);
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        if let Some(route) = route(i, r, limits, doc, &mut bad) {
            if routes.iter().any(|o: &Route| o.name == route.name) {
                bad(
                    &format!("routes[{i}].name"),
                    None,
                    format!("two routes are named {:?}", route.name),
                    "give each route its own name (logs and `portcullis policy test` name the route that decided)",
                );
            }
            routes.push(route);
        }
    }
    Routes { routes, limits }
}

type Bad<'a> = dyn FnMut(&str, Option<Origin>, String, &str) + 'a;

fn limits(raw: &RawConfig, bad: &mut Bad<'_>) -> Limits {
    let d = Limits::default();
    let l = &raw.policy_limits;
    let mut count = |key: &str, v: Option<u64>, default: u64, max: u64| match v {
        None => default,
        Some(n) if (1..=max).contains(&n) => n,
        Some(n) => {
            bad(
                key,
                None,
                format!("{n} is out of range"),
                &format!("use 1 to {max}"),
            );
            default
        }
    };
    let max_facts = count("policy_limits.max_facts", l.max_facts, d.max_facts, 100_000);
    let max_iterations = count(
        "policy_limits.max_iterations",
        l.max_iterations,
        d.max_iterations,
        10_000,
    );
    let max_time = match l.max_time.as_deref() {
        None => d.max_time,
        Some(v) => match parse_duration(v) {
            Some(t) if t >= Duration::from_millis(1) && t <= Duration::from_millis(1000) => t,
            _ => {
                bad(
                    "policy_limits.max_time",
                    None,
                    format!("{v:?} is not a duration from 1ms to 1000ms"),
                    "write milliseconds like 50ms (every request waits for the policy)",
                );
                d.max_time
            }
        },
    };
    Limits {
        max_facts,
        max_iterations,
        max_time,
    }
}

fn route(
    i: usize,
    r: &RawRoute,
    limits: Limits,
    doc: &Document,
    bad: &mut Bad<'_>,
) -> Option<Route> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let mut ok = true;
    let mut hosts = Vec::new();
    for (j, h) in r.host.iter().enumerate() {
        match HostMatch::parse(h) {
            Some(m) => hosts.push(m),
            None => {
                ok = false;
                bad(
                    &key(&format!("host[{j}]")),
                    None,
                    format!("{h:?} is not a host name"),
                    "write app.example.com, or *.example.com for every subdomain",
                );
            }
        }
    }
    let mut paths = Vec::new();
    for (j, p) in r.path.iter().enumerate() {
        match PathMatch::parse(p) {
            Some(m) => paths.push(m),
            None => {
                ok = false;
                bad(
                    &key(&format!("path[{j}]")),
                    None,
                    format!("{p:?} is not a path pattern"),
                    "write /exact, /prefix/* or a glob like /users/*/settings (* within a segment, ** across), starting with /",
                );
            }
        }
    }
    let mut methods = Vec::new();
    for (j, m) in r.methods.iter().enumerate() {
        let up = m.trim().to_ascii_uppercase();
        if up.is_empty() || !up.bytes().all(|b| b.is_ascii_alphabetic()) {
            ok = false;
            bad(
                &key(&format!("methods[{j}]")),
                None,
                format!("{m:?} is not an HTTP method"),
                "write methods like GET, POST, DELETE",
            );
        } else {
            methods.push(up);
        }
    }
    let lists = !(r.allowed_emails.is_empty()
        && r.allowed_domains.is_empty()
        && r.allowed_groups.is_empty());
    let rule = match (r.access.as_deref(), lists, r.datalog.as_deref()) {
        (Some(a), true, _) | (Some(a), _, Some(_)) => {
            bad(
                &key("access"),
                None,
                format!("access: {a} and a policy (allowed_* or datalog) on one route"),
                "remove `access`: a route with allowed_* or datalog is decided by that policy",
            );
            None
        }
        (_, true, Some(_)) => {
            bad(
                &key("datalog"),
                None,
                "a route has both allowed_* lists and datalog".into(),
                "keep one: in Datalog, write the lists as `allow if group(\"admins\");`, `allow if domain(\"example.com\");`",
            );
            None
        }
        (Some("public"), false, None) => Some(Rule::Public),
        (Some("authenticated") | None, false, None) => Some(Rule::Authenticated),
        (Some(a), false, None) => {
            bad(
                &key("access"),
                None,
                format!("{a:?} is not public or authenticated"),
                "use public (no session needed) or authenticated (any session); for rules use allowed_emails/allowed_domains/allowed_groups or datalog",
            );
            None
        }
        (None, true, None) => Some(Rule::AllowList {
            emails: r
                .allowed_emails
                .iter()
                .map(|e| e.trim().to_ascii_lowercase())
                .collect(),
            domains: r
                .allowed_domains
                .iter()
                .map(|d| d.trim().trim_start_matches(['@', '.']).to_ascii_lowercase())
                .collect(),
            groups: r.allowed_groups.clone(),
        }),
        (None, false, Some(src)) => {
            datalog(&key("datalog"), src, limits, doc, bad).map(|p| Rule::Datalog(Box::new(p)))
        }
    };
    let rule = rule?;
    if !ok {
        return None;
    }
    Some(Route {
        name: r.name.clone().unwrap_or_else(|| format!("routes[{i}]")),
        origin: doc.origin(&format!("routes[{i}]")).cloned(),
        hosts,
        paths,
        methods,
        rule,
    })
}

fn datalog(
    key: &str,
    src: &str,
    limits: Limits,
    doc: &Document,
    bad: &mut Bad<'_>,
) -> Option<DatalogPolicy> {
    match DatalogPolicy::compile(src, limits) {
        Ok(mut p) => {
            for s in p.policies.iter_mut().chain(p.checks.iter_mut()) {
                s.origin = position(doc, key, src, s.offset);
            }
            Some(p)
        }
        Err(errors) => {
            for CompileError { offset, message } in errors {
                bad(
                    key,
                    position(doc, key, src, offset),
                    message,
                    "correct the policy: biscuit's Datalog, statements end with `;`, strings in double quotes (docs/configuration.md#routes)",
                );
            }
            None
        }
    }
}

/// Where byte `offset` of the string at `key` is in the file: exact for
/// block scalars (`|`, the form the docs use) and one-line values; for
/// other multi-line forms, the key's own place. From the environment: the
/// variable.
pub fn position(doc: &Document, key: &str, src: &str, offset: usize) -> Option<Origin> {
    let origin = doc.origin(key)?.clone();
    let Origin::File { file, line, column } = &origin else {
        return Some(origin);
    };
    let (line, column) = (*line as usize, *column as usize);
    let lines: Vec<&str> = doc.text.lines().collect();
    let key_line = lines.get(line.checked_sub(1)?)?;
    // What follows `key:` on its line.
    let after_key = key_line
        .char_indices()
        .nth(column.saturating_sub(1))
        .map(|(b, _)| &key_line[b..])?;
    let colon = after_key.find(':')?;
    let rest = &after_key[colon + 1..];
    let value = rest.trim_start();
    let value_col = column + colon + 1 + (rest.chars().count() - value.chars().count());
    let offset = offset.min(src.len());
    let before = src.get(..offset)?;
    let nth_line = before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col_in_line = before[line_start..].chars().count();
    let at = |line: usize, column: usize| Origin::File {
        file: file.clone(),
        line: line as u64,
        column: column as u64,
    };
    if value.starts_with('|') {
        // Content starts on the next line, indented like its first
        // non-empty line; YAML keeps the lines as they are.
        let content = &lines[line..];
        let indent = content
            .iter()
            .find(|l| !l.trim().is_empty())
            .map_or(0, |l| l.len() - l.trim_start().len());
        return Some(at(line + 1 + nth_line, indent + col_in_line + 1));
    }
    if nth_line == 0 && !src.contains('\n') {
        let quoted = usize::from(value.starts_with(['"', '\'']));
        return Some(at(line, value_col + quoted + col_in_line));
    }
    Some(origin)
}

/// The routes as `portcullis check` prints them.
pub fn effective(r: &Routes, v: &mut serde_json::Value) {
    use serde_json::json;
    v["routes"] = r
        .routes
        .iter()
        .map(|r| {
            let rule = match &r.rule {
                Rule::Public => json!({ "access": "public" }),
                Rule::Authenticated => json!({ "access": "authenticated" }),
                Rule::AllowList { emails, domains, groups } => json!({
                    "allowed_emails": emails, "allowed_domains": domains, "allowed_groups": groups,
                }),
                Rule::Datalog(p) => json!({
                    "datalog": p.policies.iter().chain(&p.checks).map(|s| s.text.clone()).collect::<Vec<_>>(),
                }),
            };
            let mut o = json!({
                "name": r.name,
                "host": r.hosts.iter().map(HostMatch::as_config).collect::<Vec<_>>(),
                "path": r.paths.iter().map(PathMatch::as_config).collect::<Vec<_>>(),
                "methods": r.methods,
            });
            if let (Some(o), serde_json::Value::Object(rule)) = (o.as_object_mut(), rule) {
                o.extend(rule);
            }
            o
        })
        .collect();
    v["policy_limits"] = json!({
        "max_facts": r.limits.max_facts,
        "max_iterations": r.limits.max_iterations,
        "max_time": format!("{}ms", r.limits.max_time.as_millis()),
    });
}
