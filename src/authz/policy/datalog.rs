//! Datalog route policies: biscuit's authorizer language, parsed and
//! checked once at config load, evaluated per request with run limits.
//!
//! A request becomes facts ([`Facts`]); the route's rules, checks and
//! `allow if` / `deny if` policies run over them in a fresh authorizer
//! cloned from the one built at load. The first policy that matches
//! decides (biscuit's order); no match, a failed `check`, an error or a
//! limit hit all deny.

use std::collections::HashSet;
use std::time::Duration;

use std::collections::{BTreeSet, HashMap};

use biscuit_auth::AuthorizerLimits;
use biscuit_auth::builder::{self, CheckKind, Convert, PolicyKind};
use biscuit_auth::datalog::{self as dl, Origin, SymbolTable, TrustedOrigins, World};
use biscuit_auth::error::Execution;

/// The facts Portcullis gives every policy, by name and arity. A policy
/// that reads any other predicate (not made by its own rules) is refused
/// at load: a typo would silently never match.
pub const FACTS: &[(&str, usize)] = &[
    ("user", 1),
    ("email", 1),
    ("domain", 1),
    ("group", 1),
    ("groups", 1),
    ("claim", 2),
    ("auth", 1),
    ("method", 1),
    ("host", 1),
    ("path", 1),
    ("client_ip", 1),
    ("time", 1),
];

/// Run limits of every policy evaluation (`policy_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_facts: u64,
    pub max_iterations: u64,
    pub max_time: Duration,
}

impl Default for Limits {
    /// A route policy is a handful of rules over a few dozen facts, far
    /// below these. Facts and iterations bound the work exactly; the time
    /// is wall-clock and counts the thread being descheduled under load
    /// (5 ms denied requests in `benches/policy` at 64 connections on a
    /// busy 2-core machine), so it is only the backstop.
    fn default() -> Self {
        Limits {
            max_facts: 1000,
            max_iterations: 100,
            max_time: Duration::from_millis(50),
        }
    }
}

impl From<Limits> for AuthorizerLimits {
    fn from(l: Limits) -> Self {
        AuthorizerLimits {
            max_facts: l.max_facts,
            max_iterations: l.max_iterations,
            max_time: l.max_time,
        }
    }
}

/// One statement of the source (policy or check), for explanations.
#[derive(Debug, Clone)]
pub struct Statement {
    pub text: String,
    /// Byte offset in the policy source.
    pub offset: usize,
    /// Where it is in the config file (set at load).
    pub origin: Option<crate::config::Origin>,
}

/// A compiled policy: the Datalog world (the policy's own facts and
/// rules), its checks and policies, already converted to the engine's
/// symbols at load. A request only clones the world, interns its own
/// facts' strings and runs: no parsing, no conversion per request.
#[derive(Clone)]
pub struct DatalogPolicy {
    symbols: SymbolTable,
    world: World,
    /// Symbols of the fact names, in [`FACTS`] order.
    names: Vec<u64>,
    /// Which of [`FACTS`] the policy reads: only those are made per request.
    reads: Vec<bool>,
    compiled_checks: Vec<(CheckKind, Vec<Query>)>,
    compiled_policies: Vec<(PolicyKind, Vec<Query>)>,
    limits: Limits,
    pub policies: Vec<Statement>,
    pub checks: Vec<Statement>,
    /// Decisions remembered by a digest of the request's facts, for a
    /// policy that reads neither `time` nor `client_ip` (its outcome is a
    /// function of the facts the digest covers). `None` otherwise.
    decisions: Option<std::sync::Arc<crate::slots::Slots<Outcome>>>,
}

/// Slots of a policy's decision table.
const DECISIONS: usize = 4096;

/// A query of a check or policy, with the origins it trusts.
#[derive(Clone)]
struct Query {
    rule: dl::Rule,
    trusted: TrustedOrigins,
}

impl std::fmt::Debug for DatalogPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatalogPolicy")
            .field("policies", &self.policies.len())
            .field("checks", &self.checks.len())
            .finish()
    }
}

/// A problem in a policy's source, at a byte offset of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub offset: usize,
    pub message: String,
}

/// The request, as facts.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub user: Option<&'a crate::session::Claims>,
    /// `session`, `token`, `bearer`, or `none` without a session.
    pub auth: &'static str,
    pub method: &'a str,
    pub host: Option<&'a str>,
    /// Canonical ([`super::matcher::canonical_path`]).
    pub path: &'a str,
    pub client_ip: std::net::IpAddr,
    /// Unix seconds (the app's clock).
    pub time: u64,
}

/// What a policy said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The `allow if` policy at this index matched.
    Allow(usize),
    /// The `deny if` policy at this index matched.
    Deny(usize),
    /// No policy matched.
    NoMatch,
    /// The check at this index failed.
    CheckFailed(usize),
    /// Evaluation failed (a limit, an expression error): denies. The text
    /// is for the log, never for the client.
    Error(String),
}

fn offset_in(src: &str, part: &str) -> usize {
    let start = src.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    if p >= start && p <= start + src.len() {
        p - start
    } else {
        0
    }
}

impl DatalogPolicy {
    /// Parses and checks `src`; every problem at once.
    pub fn compile(src: &str, limits: Limits) -> Result<Self, Vec<CompileError>> {
        let parsed = biscuit_auth::parser::parse_source(src).map_err(|errs| {
            errs.into_iter()
                .map(|e| CompileError {
                    offset: offset_in(src, e.input),
                    message: match e.message {
                        Some(m) => format!("not valid Datalog: {m}"),
                        None => format!("not valid Datalog near {:?}", first_line(e.input)),
                    },
                })
                .collect::<Vec<_>>()
        })?;
        let mut errors = Vec::new();
        if parsed.policies.is_empty() {
            errors.push(CompileError {
                offset: 0,
                message: "the policy has no `allow if` or `deny if`: it would deny every request"
                    .into(),
            });
        } else if parsed
            .policies
            .iter()
            .all(|(_, p)| builder::Policy::from(p.clone()).kind == PolicyKind::Deny)
        {
            errors.push(CompileError {
                offset: 0,
                message: "the policy has no `allow if`: it would deny every request".into(),
            });
        }
        // Predicates the policy may read: ours, its own facts and rule heads.
        let mut known: HashSet<(String, usize)> =
            FACTS.iter().map(|(n, a)| ((*n).to_string(), *a)).collect();
        for (_, f) in &parsed.facts {
            known.insert((f.predicate.name.clone(), f.predicate.terms.len()));
        }
        for (_, r) in &parsed.rules {
            known.insert((r.head.name.clone(), r.head.terms.len()));
        }
        let bodies = parsed
            .rules
            .iter()
            .map(|(t, r)| (*t, std::slice::from_ref(r)))
            .chain(
                parsed
                    .checks
                    .iter()
                    .map(|(t, c)| (*t, c.queries.as_slice())),
            )
            .chain(
                parsed
                    .policies
                    .iter()
                    .map(|(t, p)| (*t, p.queries.as_slice())),
            );
        let mut read: HashSet<String> = HashSet::new();
        for (text, rules) in bodies {
            for pred in rules.iter().flat_map(|r| r.body.iter()) {
                read.insert(pred.name.clone());
                if !known.contains(&(pred.name.clone(), pred.terms.len())) {
                    let at = text.find(pred.name.as_str()).map_or(0, |i| i);
                    errors.push(CompileError {
                        offset: offset_in(src, text) + at,
                        message: format!(
                            "unknown fact `{}` with {} term(s): it would never match (facts: {})",
                            pred.name,
                            pred.terms.len(),
                            FACTS
                                .iter()
                                .map(|(n, a)| format!("{n}/{a}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
        // The builder's own checks (parameters, unbound variables).
        if let Err(e) = biscuit_auth::AuthorizerBuilder::new().code(src) {
            errors.push(CompileError {
                offset: 0,
                message: format!("not a valid policy: {e}"),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut symbols = SymbolTable::new();
        let mut world = World::new();
        let mut authorizer = Origin::default();
        authorizer.insert(usize::MAX);
        let no_keys = HashMap::new();
        let trusted =
            TrustedOrigins::from_scopes(&[], &TrustedOrigins::default(), usize::MAX, &no_keys);
        let query = |r: builder::Rule, symbols: &mut SymbolTable| {
            let rule: dl::Rule = r.convert(symbols);
            let trusted = TrustedOrigins::from_scopes(&rule.scopes, &trusted, usize::MAX, &no_keys);
            Query { rule, trusted }
        };
        for (_, f) in &parsed.facts {
            let f: builder::Fact = f.clone().into();
            world.add_fact(&authorizer, f.convert(&mut symbols));
        }
        for (_, r) in &parsed.rules {
            let q = query(r.clone().into(), &mut symbols);
            world.add_rule(usize::MAX, &q.trusted, q.rule);
        }
        let compiled_checks = parsed
            .checks
            .iter()
            .map(|(_, c)| {
                let c: builder::Check = c.clone().into();
                let qs = c
                    .queries
                    .into_iter()
                    .map(|r| query(r, &mut symbols))
                    .collect();
                (c.kind, qs)
            })
            .collect();
        let compiled_policies = parsed
            .policies
            .iter()
            .map(|(_, p)| {
                let p: builder::Policy = p.clone().into();
                let qs = p
                    .queries
                    .into_iter()
                    .map(|r| query(r, &mut symbols))
                    .collect();
                (p.kind, qs)
            })
            .collect();
        let names = FACTS.iter().map(|(n, _)| symbols.insert(n)).collect();
        let reads: Vec<bool> = FACTS.iter().map(|(n, _)| read.contains(*n)).collect();
        let stmt = |t: &str| Statement {
            text: t.trim().to_string(),
            offset: offset_in(src, t),
            origin: None,
        };
        let fact = |n: &str| FACTS.iter().position(|(x, _)| *x == n);
        let varies = ["time", "client_ip"]
            .iter()
            .any(|n| fact(n).is_some_and(|i| reads[i]));
        let decisions = (!varies).then(|| std::sync::Arc::new(crate::slots::Slots::new(DECISIONS)));
        Ok(DatalogPolicy {
            decisions,
            symbols,
            world,
            names,
            reads,
            compiled_checks,
            compiled_policies,
            limits,
            policies: parsed.policies.iter().map(|(t, _)| stmt(t)).collect(),
            checks: parsed.checks.iter().map(|(t, _)| stmt(t)).collect(),
        })
    }

    /// Runs the policy over `facts`, within its run limits: rules to a
    /// fixpoint, then every check, then the policies in order (biscuit's
    /// authorizer semantics).
    ///
    /// `max_time` is checked between rule iterations (where unbounded work
    /// could be), as biscuit does; it is wall-clock, so it is not checked
    /// again after the checks and policies: on a starved machine that
    /// denied requests whose policy had already finished (seen in
    /// `benches/policy` while other builds ran).
    pub fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let Some(table) = &self.decisions else {
            return self.run(facts);
        };
        let key = facts_digest(facts);
        if let Some(hit) = table.get(&key) {
            return hit.1.clone();
        }
        let outcome = self.run(facts);
        // Errors (limits hit) are not remembered: the next request runs again.
        if !matches!(outcome, Outcome::Error(_)) {
            table.put(key, outcome.clone());
        }
        outcome
    }

    /// One evaluation, no memory.
    fn run(&self, facts: &Facts<'_>) -> Outcome {
        let mut symbols = self.symbols.clone();
        let mut world = self.world.clone();
        add_facts(&mut world, &mut symbols, &self.names, &self.reads, facts);
        if world.facts.len() as u64 >= self.limits.max_facts {
            return Outcome::Error("run limit: too many facts generated".into());
        }
        if !world.rules.inner.is_empty()
            && let Err(e) = world.run_with_limits(&symbols, self.limits.into())
        {
            return Outcome::Error(match e {
                Execution::RunLimit(l) => format!("run limit: {l}"),
                other => other.to_string(),
            });
        }
        // By reference: `World::query_match` would clone each rule.
        let matches = |q: &Query| {
            q.rule.find_match(
                &world.facts,
                usize::MAX,
                &q.trusted,
                &symbols,
                &world.extern_funcs,
            )
        };
        for (i, (kind, queries)) in self.compiled_checks.iter().enumerate() {
            let mut ok = false;
            for q in queries {
                let r = match kind {
                    CheckKind::One => matches(q),
                    CheckKind::All => q.rule.check_match_all(
                        &world.facts,
                        &q.trusted,
                        &symbols,
                        &world.extern_funcs,
                    ),
                    CheckKind::Reject => matches(q).map(|m| !m),
                };
                match r {
                    Ok(true) => {
                        ok = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => return Outcome::Error(e.to_string()),
                }
            }
            if !ok {
                return Outcome::CheckFailed(i);
            }
        }
        for (i, (kind, queries)) in self.compiled_policies.iter().enumerate() {
            for q in queries {
                match matches(q) {
                    Ok(true) => {
                        return match kind {
                            PolicyKind::Allow => Outcome::Allow(i),
                            PolicyKind::Deny => Outcome::Deny(i),
                        };
                    }
                    Ok(false) => {}
                    Err(e) => return Outcome::Error(e.to_string()),
                }
            }
        }
        Outcome::NoMatch
    }
}

/// Every fact a request can give a policy except `time` and `client_ip`
/// (policies reading those are never remembered), as one digest.
fn facts_digest(f: &Facts<'_>) -> [u8; 32] {
    let none = "\u{0}";
    let mut parts = vec![f.auth, f.method, f.host.unwrap_or(none), f.path];
    let mut attrs = String::new();
    if let Some(c) = f.user {
        for v in [
            Some(c.user_id()),
            c.email.as_deref(),
            c.sub.as_deref(),
            c.name.as_deref(),
            c.preferred_username.as_deref(),
            c.provider.as_deref(),
            c.uid.as_deref(),
        ] {
            parts.push(v.unwrap_or(none));
        }
        for (k, v) in &c.attrs {
            attrs.push_str(&format!("{}:{k}={v}\u{0}", k.len()));
        }
        parts.push(&attrs);
    } else {
        parts.push("\u{0}no user");
    }
    let groups = f.user.map(|c| c.groups.as_slice()).unwrap_or_default();
    crate::crypto::digest_parts(&parts, groups)
}

fn first_line(s: &str) -> &str {
    let l = s.lines().next().unwrap_or("").trim();
    match l.char_indices().nth(40) {
        Some((i, _)) => &l[..i],
        None => l,
    }
}

/// Adds the request's facts; `names` are the fact names' symbols in
/// [`FACTS`] order.
fn add_facts(
    world: &mut World,
    symbols: &mut SymbolTable,
    names: &[u64],
    reads: &[bool],
    f: &Facts<'_>,
) {
    let mut origin = Origin::default();
    origin.insert(usize::MAX);
    let index = |n: &str| FACTS.iter().position(|(x, _)| *x == n).unwrap_or(0);
    let name = |n: &str| names[index(n)];
    let wants = |n: &str| reads[index(n)];
    let str_fact = |world: &mut World, symbols: &mut SymbolTable, n: &str, v: &str| {
        if wants(n) {
            let t = dl::Term::Str(symbols.insert(v));
            world.add_fact(&origin, dl::Fact::new(name(n), &[t]));
        }
    };
    str_fact(world, symbols, "auth", f.auth);
    str_fact(world, symbols, "method", f.method);
    str_fact(world, symbols, "path", f.path);
    if wants("client_ip") {
        str_fact(world, symbols, "client_ip", &f.client_ip.to_string());
    }
    if let Some(h) = f.host {
        str_fact(world, symbols, "host", h);
    }
    let mut origin2 = Origin::default();
    origin2.insert(usize::MAX);
    world.add_fact(
        &origin2,
        dl::Fact::new(name("time"), &[dl::Term::Date(f.time)]),
    );
    let Some(c) = f.user else { return };
    str_fact(world, symbols, "user", c.user_id());
    if let Some(e) = &c.email {
        let e = e.to_ascii_lowercase();
        if let Some((_, d)) = e.rsplit_once('@') {
            str_fact(world, symbols, "domain", d);
        }
        str_fact(world, symbols, "email", &e);
    }
    let mut set = BTreeSet::new();
    for g in &c.groups {
        let t = dl::Term::Str(symbols.insert(g));
        set.insert(t.clone());
        world.add_fact(&origin2, dl::Fact::new(name("group"), &[t]));
    }
    // All groups as one set, for negation: `!$gs.contains("admins")`
    // (Datalog here has no negated facts).
    world.add_fact(
        &origin2,
        dl::Fact::new(name("groups"), &[dl::Term::Set(set)]),
    );
    for (n, value) in claims(c) {
        let terms = [
            dl::Term::Str(symbols.insert(n)),
            dl::Term::Str(symbols.insert(&value)),
        ];
        world.add_fact(&origin2, dl::Fact::new(name("claim"), &terms));
    }
}

/// The `claim($name, $value)` facts: the session's string claims `sub`,
/// `name`, `preferred_username`, `provider`, `uid`, and each claim kept by
/// `headers.claims` (`attrs`) whose value is a string, number or boolean
/// (lists: one fact per string item). Never tokens.
pub fn claims(c: &crate::session::Claims) -> Vec<(&str, std::borrow::Cow<'_, str>)> {
    use std::borrow::Cow;
    let mut out: Vec<(&str, Cow<'_, str>)> = [
        ("sub", &c.sub),
        ("name", &c.name),
        ("preferred_username", &c.preferred_username),
        ("provider", &c.provider),
        ("uid", &c.uid),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| (k, Cow::Borrowed(v))))
    .collect();
    for (k, v) in &c.attrs {
        match v {
            serde_json::Value::String(s) => out.push((k, Cow::Borrowed(s))),
            serde_json::Value::Number(n) => out.push((k, Cow::Owned(n.to_string()))),
            serde_json::Value::Bool(b) => out.push((k, Cow::Owned(b.to_string()))),
            serde_json::Value::Array(items) => out.extend(
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(|s| (k.as_str(), Cow::Borrowed(s)))),
            ),
            _ => {}
        }
    }
    out
}
