//! Who may sign in, beyond the global allow-lists: the static `groups` map
//! (groups given to e-mail addresses by the config, merged into the
//! session at sign-in), each provider's `allowed_groups`, and the ordered
//! `sign_in.rules` (first match wins, else `sign_in.default`).
//!
//! All of it runs once per sign-in, in `authn::establish`, after the
//! `access` allow-lists; a refusal is `AccessDenied` with the reason in the
//! log only.

use std::collections::HashMap;

use serde_json::Value;

use crate::session::Claims;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// One rule: it matches when every selector it sets matches (any of the
/// values listed for a selector). Validation makes sure one is set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    pub name: Option<String>,
    pub effect: Option<Effect>,
    /// Provider ids.
    pub providers: Vec<String>,
    /// Lower-cased e-mail addresses.
    pub emails: Vec<String>,
    /// Lower-cased e-mail domains, exact.
    pub domains: Vec<String>,
    pub groups: Vec<String>,
    /// Claim path → accepted values (a list claim matches if any item does).
    pub claims: Vec<(String, Vec<String>)>,
}

/// The validated sign-in policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInPolicy {
    /// Lower-cased e-mail → groups added at sign-in.
    pub groups: HashMap<String, Vec<String>>,
    /// Provider id → groups one of which a user of it must have.
    pub provider_groups: HashMap<String, Vec<String>>,
    pub rules: Vec<Rule>,
    /// When no rule matches.
    pub default: Effect,
}

impl Default for SignInPolicy {
    fn default() -> Self {
        SignInPolicy {
            groups: HashMap::new(),
            provider_groups: HashMap::new(),
            rules: Vec::new(),
            default: Effect::Allow,
        }
    }
}

/// Why a sign-in was refused, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The provider's `allowed_groups` has none of the user's groups.
    ProviderGroups,
    /// `sign_in.rules[index]` (named `name`) denied.
    Rule { index: usize, name: Option<String> },
    /// No rule matched and `sign_in.default` is deny.
    Default,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ProviderGroups => write!(f, "providers[].allowed_groups"),
            Refusal::Rule {
                index,
                name: Some(n),
            } => write!(f, "sign_in.rules[{index}] ({n})"),
            Refusal::Rule { index, name: None } => write!(f, "sign_in.rules[{index}]"),
            Refusal::Default => write!(f, "sign_in.default"),
        }
    }
}

impl SignInPolicy {
    /// Adds the configured groups of the user's e-mail (no duplicates).
    pub fn enrich(&self, claims: &mut Claims) {
        let Some(email) = claims.email.as_deref() else {
            return;
        };
        let Some(extra) = self.groups.get(&email.trim().to_ascii_lowercase()) else {
            return;
        };
        for g in extra {
            if !claims.groups.contains(g) {
                claims.groups.push(g.clone());
            }
        }
    }

    /// The claim paths the rules read: an OIDC sign-in keeps these.
    pub fn claim_paths(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.claims.iter().map(|(p, _)| p.as_str()))
    }

    /// Decides on a sign-in whose claims are complete (groups enriched).
    pub fn evaluate(&self, claims: &Claims) -> Result<(), Refusal> {
        let provider = claims.provider.as_deref().unwrap_or("");
        if let Some(allowed) = self.provider_groups.get(provider)
            && !claims.groups.iter().any(|g| allowed.contains(g))
        {
            return Err(Refusal::ProviderGroups);
        }
        if self.rules.is_empty() {
            return match self.default {
                Effect::Allow => Ok(()),
                Effect::Deny => Err(Refusal::Default),
            };
        }
        let doc = serde_json::to_value(claims).unwrap_or(Value::Null);
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.matches(claims, &doc) {
                return match rule.effect {
                    Some(Effect::Deny) => Err(Refusal::Rule {
                        index,
                        name: rule.name.clone(),
                    }),
                    _ => Ok(()),
                };
            }
        }
        match self.default {
            Effect::Allow => Ok(()),
            Effect::Deny => Err(Refusal::Default),
        }
    }
}

impl Rule {
    pub fn has_selector(&self) -> bool {
        !(self.providers.is_empty()
            && self.emails.is_empty()
            && self.domains.is_empty()
            && self.groups.is_empty()
            && self.claims.is_empty())
    }

    fn matches(&self, claims: &Claims, doc: &Value) -> bool {
        let email = claims
            .email
            .as_deref()
            .map(|e| e.trim().to_ascii_lowercase());
        let domain = email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d);
        let provider = claims.provider.as_deref();
        (self.providers.is_empty()
            || provider.is_some_and(|p| self.providers.iter().any(|x| x == p)))
            && (self.emails.is_empty()
                || email
                    .as_deref()
                    .is_some_and(|e| self.emails.iter().any(|x| x == e)))
            && (self.domains.is_empty()
                || domain.is_some_and(|d| self.domains.iter().any(|x| x == d)))
            && (self.groups.is_empty() || claims.groups.iter().any(|g| self.groups.contains(g)))
            && self
                .claims
                .iter()
                .all(|(path, want)| claim_matches(claims, doc, path, want))
    }
}

/// The claim at `path`: one kept for the rules (`attrs`, by path), else
/// one of the session's own (`name`, `groups`, `provider`, or an unknown
/// claim kept as it came), dotted paths into objects.
fn claim_matches(claims: &Claims, doc: &Value, path: &str, want: &[String]) -> bool {
    let found = claims.attrs.get(path).or_else(|| {
        doc.as_object()
            .and_then(|m| crate::providers::oidc::claim_at(m, path))
    });
    let hit = |v: &Value| match v {
        Value::String(s) => want.iter().any(|w| w == s),
        Value::Number(_) | Value::Bool(_) => {
            let s = v.to_string();
            want.contains(&s)
        }
        _ => false,
    };
    match found {
        Some(Value::Array(items)) => items.iter().any(hit),
        Some(v) => hit(v),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(email: &str, provider: &str, groups: &[&str]) -> Claims {
        Claims {
            email: Some(email.into()),
            sub: Some(email.into()),
            provider: Some(provider.into()),
            groups: groups.iter().map(|g| (*g).into()).collect(),
            ..Claims::default()
        }
    }

    fn rule(effect: Effect) -> Rule {
        Rule {
            effect: Some(effect),
            ..Rule::default()
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).into()).collect()
    }

    #[test]
    fn no_rules_and_default_allow_let_everyone_in() {
        let p = SignInPolicy::default();
        assert_eq!(p.evaluate(&claims("a@b.c", "x", &[])), Ok(()));
        let deny = SignInPolicy {
            default: Effect::Deny,
            ..SignInPolicy::default()
        };
        assert_eq!(
            deny.evaluate(&claims("a@b.c", "x", &[])),
            Err(Refusal::Default)
        );
    }

    #[test]
    fn first_matching_rule_wins_and_each_selector_counts() {
        let p = SignInPolicy {
            rules: vec![
                Rule {
                    name: Some("no-mallory".into()),
                    emails: s(&["mallory@example.com"]),
                    ..rule(Effect::Deny)
                },
                Rule {
                    domains: s(&["example.com"]),
                    ..rule(Effect::Allow)
                },
                Rule {
                    providers: s(&["corp"]),
                    groups: s(&["staff"]),
                    ..rule(Effect::Allow)
                },
                Rule {
                    claims: vec![("org.tier".into(), s(&["gold", "7"]))],
                    ..rule(Effect::Allow)
                },
            ],
            default: Effect::Deny,
            ..SignInPolicy::default()
        };
        assert_eq!(
            p.evaluate(&claims("Mallory@Example.com", "corp", &["staff"])),
            Err(Refusal::Rule {
                index: 0,
                name: Some("no-mallory".into())
            })
        );
        assert_eq!(p.evaluate(&claims("ann@example.com", "x", &[])), Ok(()));
        // Exact domains: a subdomain or a look-alike is not the domain.
        assert_eq!(
            p.evaluate(&claims("ann@eu.example.com", "x", &[])),
            Err(Refusal::Default)
        );
        assert_eq!(
            p.evaluate(&claims("ann@example.com.evil.io", "x", &[])),
            Err(Refusal::Default)
        );
        // Both selectors of rule 2 must match.
        assert_eq!(p.evaluate(&claims("z@z.io", "corp", &["staff"])), Ok(()));
        assert_eq!(
            p.evaluate(&claims("z@z.io", "corp", &["guests"])),
            Err(Refusal::Default)
        );
        assert_eq!(
            p.evaluate(&claims("z@z.io", "other", &["staff"])),
            Err(Refusal::Default)
        );
        // Claims: dotted paths, lists, numbers; kept attrs by their path.
        let mut c = claims("z@z.io", "x", &[]);
        c.extra.insert(
            "org".into(),
            serde_json::json!({ "tier": ["silver", "gold"] }),
        );
        assert_eq!(p.evaluate(&c), Ok(()));
        let mut c = claims("z@z.io", "x", &[]);
        c.attrs.insert("org.tier".into(), serde_json::json!(7));
        assert_eq!(p.evaluate(&c), Ok(()));
        let mut c = claims("z@z.io", "x", &[]);
        c.extra
            .insert("org".into(), serde_json::json!({ "tier": "silver" }));
        assert_eq!(p.evaluate(&c), Err(Refusal::Default));
    }

    #[test]
    fn a_deny_rule_after_a_matching_allow_does_not_apply() {
        let p = SignInPolicy {
            rules: vec![
                Rule {
                    groups: s(&["admins"]),
                    ..rule(Effect::Allow)
                },
                Rule {
                    domains: s(&["b.c"]),
                    ..rule(Effect::Deny)
                },
            ],
            ..SignInPolicy::default()
        };
        assert_eq!(p.evaluate(&claims("a@b.c", "x", &["admins"])), Ok(()));
        assert_eq!(
            p.evaluate(&claims("a@b.c", "x", &[])),
            Err(Refusal::Rule {
                index: 1,
                name: None
            })
        );
        assert_eq!(p.evaluate(&claims("a@d.e", "x", &[])), Ok(()));
    }

    #[test]
    fn static_groups_merge_and_provider_groups_gate() {
        let p = SignInPolicy {
            groups: HashMap::from([("alice@example.com".into(), s(&["ops", "admins"]))]),
            provider_groups: HashMap::from([("corp".into(), s(&["ops"]))]),
            ..SignInPolicy::default()
        };
        let mut c = claims("Alice@Example.com", "corp", &["admins"]);
        p.enrich(&mut c);
        assert_eq!(c.groups, s(&["admins", "ops"]));
        assert_eq!(p.evaluate(&c), Ok(()));
        let bob = claims("bob@example.com", "corp", &["admins"]);
        assert_eq!(p.evaluate(&bob), Err(Refusal::ProviderGroups));
        // Another provider has no such gate.
        assert_eq!(p.evaluate(&claims("bob@example.com", "other", &[])), Ok(()));
        assert_eq!(
            Refusal::Rule {
                index: 2,
                name: Some("x".into())
            }
            .to_string(),
            "sign_in.rules[2] (x)"
        );
    }
}
