//! Route policies (`routes:`): which rule applies to a request, by host,
//! path and method, and what that rule says.
//!
//! Routes are tried in order and the first that matches decides; a request
//! that matches none falls back to the global `access` rules. A route is
//! `public`, `authenticated`, an allow-list (e-mails, domains, groups) or a
//! Datalog policy ([`datalog`]). Everything is compiled at config load;
//! per request there is matching, and for Datalog one authorizer run
//! within run limits. An error or a limit hit denies, and is logged (with
//! the route) but never shown to the client.

pub mod datalog;
pub mod explain;
pub mod load;
pub mod matcher;

use std::borrow::Cow;
use std::net::IpAddr;

use super::{Decision, Target};
use crate::config::Origin;
use crate::session::{Session, Via};
use datalog::{DatalogPolicy, Facts, Limits, Outcome};
use matcher::{HostMatch, PathMatch, canonical_path};

/// Every route, in config order.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub routes: Vec<Route>,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// `name`, else `routes[i]`: what logs and `policy test` print.
    pub name: String,
    /// Where the route was written.
    pub origin: Option<Origin>,
    /// Any of these hosts (none: any host).
    pub hosts: Vec<HostMatch>,
    /// Any of these paths (none: any path).
    pub paths: Vec<PathMatch>,
    /// Any of these methods, upper case (none: any method).
    pub methods: Vec<String>,
    pub rule: Rule,
}

#[derive(Debug, Clone)]
pub enum Rule {
    /// Pass with no identity, session or not.
    Public,
    /// Any session.
    Authenticated,
    /// A session whose e-mail, e-mail domain or a group is listed.
    AllowList {
        emails: Vec<String>,
        domains: Vec<String>,
        groups: Vec<String>,
    },
    Datalog(Box<DatalogPolicy>),
}

/// Why a route decided as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Public,
    SignedIn,
    /// The rule needs a session and there is none.
    NoSession,
    /// The allow-list entry that matched (`email:`, `domain:`, `group:`).
    Listed(String),
    NotListed,
    Datalog(Outcome),
}

/// A route's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// Index into [`Routes::routes`].
    pub route: usize,
    pub reason: Reason,
}

/// The `auth` fact of a request: how it was proven.
pub fn auth_kind(session: Option<&Session>) -> &'static str {
    match session.map(|s| s.via) {
        None => "none",
        Some(Via::Cookie) => "session",
        Some(Via::ApiToken) => "token",
        Some(Via::IdpBearer) => "bearer",
    }
}

impl Route {
    fn matches(&self, target: &Target<'_>, path: &str) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(target.host)))
            && (self.methods.is_empty()
                || self
                    .methods
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(target.method)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
    }
}

impl Routes {
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first route matching `target`, and its canonical path.
    pub fn find<'t>(&self, target: &Target<'t>) -> Option<(usize, Cow<'t, str>)> {
        if self.routes.is_empty() {
            return None;
        }
        let path = canonical_path(target.path);
        let i = self.routes.iter().position(|r| r.matches(target, &path))?;
        Some((i, path))
    }

    /// The decision of the first route that matches, or `None` when no
    /// route does (then the global `access` rules decide). `now` is Unix
    /// seconds. A policy that errors denies and is logged here.
    pub fn decide(
        &self,
        session: Option<&Session>,
        target: &Target<'_>,
        client_ip: IpAddr,
        now: u64,
    ) -> Option<Verdict> {
        let (i, path) = self.find(target)?;
        let route = &self.routes[i];
        let claims = session.map(|s| &s.claims);
        let (decision, reason) = match &route.rule {
            Rule::Public => (Decision::Public, Reason::Public),
            Rule::Authenticated => match claims {
                Some(_) => (Decision::Allow, Reason::SignedIn),
                None => (Decision::Unauthenticated, Reason::NoSession),
            },
            Rule::AllowList {
                emails,
                domains,
                groups,
            } => match claims {
                None => (Decision::Unauthenticated, Reason::NoSession),
                Some(c) => match listed(emails, domains, groups, c) {
                    Some(why) => (Decision::Allow, Reason::Listed(why)),
                    None => (Decision::Forbidden, Reason::NotListed),
                },
            },
            Rule::Datalog(policy) => {
                let facts = Facts {
                    user: claims,
                    auth: auth_kind(session),
                    method: target.method,
                    host: target.host,
                    path: &path,
                    client_ip,
                    time: now,
                };
                let outcome = policy.evaluate(&facts);
                if let Outcome::Error(why) = &outcome {
                    tracing::warn!(route = %route.name, error = %why, "route policy failed; the request is denied");
                }
                let decision = match (&outcome, claims) {
                    (Outcome::Allow(_), Some(_)) => Decision::Allow,
                    // A policy may let requests without a session through
                    // (`allow if path($p), $p.starts_with("/pub")`): they
                    // pass with no identity, as public ones do.
                    (Outcome::Allow(_), None) => Decision::Public,
                    // Denied without a session: sign in first (a browser is
                    // sent to the sign-in page, as for `authenticated`).
                    (_, None) => Decision::Unauthenticated,
                    (_, Some(_)) => Decision::Forbidden,
                };
                (decision, Reason::Datalog(outcome))
            }
        };
        tracing::debug!(route = %route.name, ?decision, ?reason, "route decided");
        Some(Verdict {
            decision,
            route: i,
            reason,
        })
    }
}

/// The allow-list entry `c` matches, if any (e-mails compared in lower
/// case; the domain is what follows the last `@`, exactly).
fn listed(
    emails: &[String],
    domains: &[String],
    groups: &[String],
    c: &crate::session::Claims,
) -> Option<String> {
    if let Some(e) = c.email.as_deref().map(str::to_ascii_lowercase) {
        if emails.contains(&e) {
            return Some(format!("email: {e}"));
        }
        if let Some((_, d)) = e.rsplit_once('@')
            && domains.iter().any(|x| x == d)
        {
            return Some(format!("domain: {d}"));
        }
    }
    c.groups
        .iter()
        .find(|g| groups.contains(g))
        .map(|g| format!("group: {g}"))
}

#[cfg(test)]
mod tests;
