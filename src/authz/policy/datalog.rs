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

use biscuit_auth::builder::{self, PolicyKind, Term};
use biscuit_auth::error::{Logic, MatchedPolicy, Token as BiscuitError};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits};

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
    /// A route policy is a handful of rules over a few dozen facts: far
    /// below these, yet a degenerate rule stops within a few milliseconds.
    fn default() -> Self {
        Limits {
            max_facts: 1000,
            max_iterations: 100,
            max_time: Duration::from_millis(5),
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

/// A compiled policy.
#[derive(Clone)]
pub struct DatalogPolicy {
    builder: AuthorizerBuilder,
    pub policies: Vec<Statement>,
    pub checks: Vec<Statement>,
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
        for (text, rules) in bodies {
            for pred in rules.iter().flat_map(|r| r.body.iter()) {
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
        let builder = AuthorizerBuilder::new()
            .code(src)
            .map_err(|e| {
                vec![CompileError {
                    offset: 0,
                    message: format!("not a valid policy: {e}"),
                }]
            })?
            .set_limits(limits.into());
        if !errors.is_empty() {
            return Err(errors);
        }
        let stmt = |t: &str| Statement {
            text: t.trim().to_string(),
            offset: offset_in(src, t),
            origin: None,
        };
        Ok(DatalogPolicy {
            builder,
            policies: parsed.policies.iter().map(|(t, _)| stmt(t)).collect(),
            checks: parsed.checks.iter().map(|(t, _)| stmt(t)).collect(),
        })
    }

    /// Runs the policy over `facts`, within the limits set at load.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let built = add_facts(self.builder.clone(), facts).and_then(|b| b.build_unauthenticated());
        let mut authorizer = match built {
            Ok(a) => a,
            Err(e) => return Outcome::Error(format!("building the authorizer: {e}")),
        };
        match authorizer.authorize() {
            Ok(i) => Outcome::Allow(i),
            Err(BiscuitError::FailedLogic(Logic::Unauthorized { policy, checks })) => {
                match (checks.first(), policy) {
                    (Some(c), _) => Outcome::CheckFailed(check_index(c)),
                    (None, MatchedPolicy::Deny(i)) => Outcome::Deny(i),
                    // Not produced by biscuit (an allow with no failed check
                    // is Ok): deny all the same.
                    (None, MatchedPolicy::Allow(i)) => {
                        Outcome::Error(format!("policy {i} allowed but the authorizer refused"))
                    }
                }
            }
            Err(BiscuitError::FailedLogic(Logic::NoMatchingPolicy { checks })) => {
                match checks.first() {
                    Some(c) => Outcome::CheckFailed(check_index(c)),
                    None => Outcome::NoMatch,
                }
            }
            Err(BiscuitError::RunLimit(l)) => Outcome::Error(format!("run limit: {l}")),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }
}

fn check_index(c: &biscuit_auth::error::FailedCheck) -> usize {
    match c {
        biscuit_auth::error::FailedCheck::Authorizer(a) => a.check_id as usize,
        biscuit_auth::error::FailedCheck::Block(b) => b.check_id as usize,
    }
}

fn first_line(s: &str) -> &str {
    let l = s.lines().next().unwrap_or("").trim();
    match l.char_indices().nth(40) {
        Some((i, _)) => &l[..i],
        None => l,
    }
}

fn add_facts(b: AuthorizerBuilder, f: &Facts<'_>) -> Result<AuthorizerBuilder, BiscuitError> {
    let s = |v: &str| -> [Term; 1] { [builder::string(v)] };
    let mut b = b
        .fact(builder::fact("auth", &s(f.auth)))?
        .fact(builder::fact("method", &s(f.method)))?
        .fact(builder::fact("path", &s(f.path)))?
        .fact(builder::fact("client_ip", &s(&f.client_ip.to_string())))?
        .fact(builder::fact("time", &[Term::Date(f.time)]))?;
    if let Some(h) = f.host {
        b = b.fact(builder::fact("host", &s(h)))?;
    }
    let Some(c) = f.user else { return Ok(b) };
    b = b.fact(builder::fact("user", &s(c.user_id())))?;
    if let Some(e) = &c.email {
        let e = e.to_ascii_lowercase();
        if let Some((_, d)) = e.rsplit_once('@') {
            b = b.fact(builder::fact("domain", &s(d)))?;
        }
        b = b.fact(builder::fact("email", &s(&e)))?;
    }
    for g in &c.groups {
        b = b.fact(builder::fact("group", &s(g)))?;
    }
    // All groups as one set, for negation: `!$gs.contains("admins")`
    // (Datalog here has no negated facts).
    let set = c.groups.iter().map(|g| builder::string(g)).collect();
    b = b.fact(builder::fact("groups", &[Term::Set(set)]))?;
    for (name, value) in claims(c) {
        b = b.fact(builder::fact(
            "claim",
            &[builder::string(name), builder::string(&value)],
        ))?;
    }
    Ok(b)
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
