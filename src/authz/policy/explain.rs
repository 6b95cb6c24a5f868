//! `portcullis policy test`: the decision for one imagined request, and
//! the route and rule that made it, without running the server.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::datalog::{Outcome, Statement};
use super::{Reason, Rule, auth_kind};
use crate::authz::{Decision, Target, evaluate};
use crate::config::Config;
use crate::session::{Claims, Session, Via};

/// The request to decide on.
#[derive(Debug, Clone)]
pub struct Question {
    /// The signed-in user's e-mail; `None`: no session.
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub via: Via,
    pub method: String,
    pub url: url::Url,
    pub client_ip: IpAddr,
    /// Unix seconds.
    pub now: u64,
}

/// Exit status of `policy test`: 0 passes (allowed or public), 1
/// forbidden, 3 sign-in needed (2 is a bad config or bad arguments).
pub fn exit_code(d: Decision) -> i32 {
    match d {
        Decision::Allow | Decision::Public => 0,
        Decision::Forbidden => 1,
        Decision::Unauthenticated => 3,
    }
}

/// The decision and a report of what made it.
pub fn explain(config: &Config, q: &Question) -> (Decision, String) {
    let session = q.email.as_ref().map(|e| Session {
        claims: Claims {
            email: Some(e.clone()),
            sub: Some(e.clone()),
            groups: q.groups.clone(),
            exp: u64::MAX / 2,
            ..Claims::default()
        },
        needs_refresh: false,
        handle: None,
        via: q.via,
    });
    let target = Target {
        host: q.url.host_str(),
        path: q.url.path(),
        method: &q.method,
    };
    let mut out = String::new();
    let who = match &q.email {
        Some(e) => format!(
            "{e} (groups: {}; auth: {})",
            q.groups.join(","),
            auth_kind(session.as_ref())
        ),
        None => "no session".into(),
    };
    let _ = writeln!(out, "request: {} {} as {who}", q.method, q.url);
    let routes = &config.routes;
    let Some(v) = routes.decide(session.as_ref(), &target, q.client_ip, q.now) else {
        let d = evaluate(&config.access, session.as_ref().map(|s| &s.claims), &target);
        let _ = writeln!(out, "decision: {}", name(d));
        let _ = writeln!(
            out,
            "route: none matched; the global `access` rules decided"
        );
        return (d, out);
    };
    let route = &routes.routes[v.route];
    let _ = writeln!(out, "decision: {}", name(v.decision));
    let at = route
        .origin
        .as_ref()
        .map(|o| format!(" ({o})"))
        .unwrap_or_default();
    let _ = writeln!(out, "route: #{} {:?}{at}", v.route, route.name);
    let rule = match (&v.reason, &route.rule) {
        (Reason::Public, _) => "access: public".to_string(),
        (Reason::SignedIn, _) => "access: authenticated (a session)".into(),
        (Reason::NoSession, _) => "a session is needed".into(),
        (Reason::Listed(what), _) => format!("allow-list, matched {what}"),
        (Reason::NotListed, _) => "allow-list: the user is in none of the lists".into(),
        (Reason::Datalog(o), Rule::Datalog(p)) => match o {
            Outcome::Allow(i) => stmt(p.policies.get(*i)),
            Outcome::Deny(i) => stmt(p.policies.get(*i)),
            Outcome::CheckFailed(i) => format!("failed {}", stmt(p.checks.get(*i))),
            Outcome::NoMatch => "no `allow if` matched (deny)".into(),
            Outcome::Error(e) => format!("the policy failed, so it denies: {e}"),
        },
        (Reason::Datalog(_), _) => String::new(),
    };
    let _ = writeln!(out, "rule: {rule}");
    (v.decision, out)
}

fn stmt(s: Option<&Statement>) -> String {
    match s {
        Some(s) => match &s.origin {
            Some(o) => format!("{} ({o})", s.text),
            None => s.text.clone(),
        },
        None => String::new(),
    }
}

fn name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Public => "allow (public, no identity)",
        Decision::Unauthenticated => "deny: sign-in needed",
        Decision::Forbidden => "deny: forbidden",
    }
}
