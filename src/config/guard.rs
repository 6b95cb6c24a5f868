//! The sign-in guards' config: `regulation` (brute-force bans), the static
//! `groups` map, each provider's `allowed_groups`, and `sign_in` rules.
//! Like the rest of validation, every problem is reported (key, message,
//! fix) and nothing touches the network.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::raw::{RawConfig, RawSignInRule};
use super::validate::{normalize_domain, parse_duration};
use crate::authn::regulation::RegulationConfig;
use crate::authz::signin::{Effect, Rule, SignInPolicy};
use crate::providers::ProviderConfig;

/// Reports one problem: key, message, fix.
pub type Bad<'a> = &'a mut dyn FnMut(&str, String, &str);

/// Builds the guards from the raw config; `providers` are the valid ones.
pub fn build(
    raw: &RawConfig,
    providers: &[ProviderConfig],
    bad: Bad<'_>,
) -> (RegulationConfig, SignInPolicy) {
    let regulation = regulation(raw, bad);
    let ids: Vec<&str> = providers.iter().map(|p| p.id.as_str()).collect();
    let mut policy = SignInPolicy {
        groups: static_groups(raw, bad),
        ..SignInPolicy::default()
    };
    for (i, p) in raw.providers.iter().enumerate() {
        if p.allowed_groups.is_empty() {
            continue;
        }
        if p.allowed_groups.iter().any(|g| g.trim().is_empty()) {
            bad(
                &format!("providers[{i}].allowed_groups"),
                "a group name is empty".into(),
                "list group names, like [admins, ops]",
            );
        }
        let id = p.id.clone().or_else(|| p.kind.clone()).unwrap_or_default();
        policy.provider_groups.insert(id, p.allowed_groups.clone());
    }
    policy.default = match raw.sign_in.default.as_deref().unwrap_or("allow") {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        other => {
            bad(
                "sign_in.default",
                format!("{other:?} is not allow or deny"),
                "use allow (the default) or deny",
            );
            Effect::Allow
        }
    };
    for (i, r) in raw.sign_in.rules.iter().enumerate() {
        let key = format!("sign_in.rules[{i}]");
        if let Some(rule) = rule(&key, r, &ids, bad) {
            if rule.name.is_some() && policy.rules.iter().any(|o| o.name == rule.name) {
                bad(
                    &format!("{key}.name"),
                    format!(
                        "two rules are named {:?}",
                        rule.name.as_deref().unwrap_or("")
                    ),
                    "give each rule its own name (the log names the rule that denied)",
                );
            }
            policy.rules.push(rule);
        }
    }
    if !policy.rules.is_empty()
        && policy.default == Effect::Allow
        && policy.rules.iter().all(|r| r.effect == Some(Effect::Allow))
    {
        bad(
            "sign_in.default",
            "every rule allows and the default is allow: the rules change nothing".into(),
            "set sign_in.default: deny, so only users a rule allows may sign in",
        );
    }
    (regulation, policy)
}

fn regulation(raw: &RawConfig, bad: Bad<'_>) -> RegulationConfig {
    let d = RegulationConfig::default();
    let r = &raw.regulation;
    let mut count = |key: &str, v: Option<u64>, default: u32| -> u32 {
        match v {
            None => default,
            Some(n) if n <= 1000 => n as u32,
            Some(n) => {
                bad(key, format!("{n} is out of range"), "use 0 (off) to 1000");
                default
            }
        }
    };
    let max_retries = count("regulation.max_retries", r.max_retries, d.max_retries);
    let ip_max_retries = count(
        "regulation.ip_max_retries",
        r.ip_max_retries,
        d.ip_max_retries,
    );
    let mut time = |key: &str, v: Option<&str>, default: Duration| -> Duration {
        let Some(v) = v else { return default };
        match parse_duration(v) {
            Some(t) if t >= Duration::from_secs(1) && t <= Duration::from_secs(30 * 86_400) => {
                Duration::from_secs(t.as_secs())
            }
            _ => {
                bad(
                    key,
                    format!("{v:?} is not a duration from 1s to 30d"),
                    "write whole seconds or more with a unit: 30s, 2m, 1h",
                );
                default
            }
        }
    };
    RegulationConfig {
        max_retries,
        ip_max_retries,
        find_time: time("regulation.find_time", r.find_time.as_deref(), d.find_time),
        ban_time: time("regulation.ban_time", r.ban_time.as_deref(), d.ban_time),
    }
}

fn static_groups(raw: &RawConfig, bad: Bad<'_>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (email, groups) in &raw.groups {
        let key = format!("groups.{email}");
        let e = email.trim().to_ascii_lowercase();
        if !e.contains('@') || e.contains(char::is_whitespace) {
            bad(
                &key,
                format!("{email:?} is not an e-mail address"),
                "map e-mail addresses to group lists, like \"alice@example.com\": [admins, ops]",
            );
            continue;
        }
        if groups.iter().any(|g| g.trim().is_empty()) {
            bad(
                &key,
                "a group name is empty".into(),
                "list group names, like [admins, ops]",
            );
            continue;
        }
        if out.contains_key(&e) {
            bad(
                &key,
                format!("{e} is listed twice (e-mail addresses are compared case-insensitively)"),
                "merge the two entries",
            );
            continue;
        }
        out.insert(e, groups.clone());
    }
    out
}

fn rule(key: &str, r: &RawSignInRule, ids: &[&str], bad: Bad<'_>) -> Option<Rule> {
    let effect = match r.effect.as_deref() {
        Some("allow") => Some(Effect::Allow),
        Some("deny") => Some(Effect::Deny),
        Some(other) => {
            bad(
                &format!("{key}.effect"),
                format!("{other:?} is not allow or deny"),
                "use allow or deny",
            );
            None
        }
        None => {
            bad(
                &format!("{key}.effect"),
                "a rule needs an effect".into(),
                "add effect: allow or effect: deny",
            );
            None
        }
    };
    let mut ok = effect.is_some();
    for (j, p) in r.providers.iter().enumerate() {
        if !ids.contains(&p.as_str()) {
            ok = false;
            bad(
                &format!("{key}.providers[{j}]"),
                format!("no provider has the id {p:?}"),
                &format!("use a configured provider id: {}", ids.join(", ")),
            );
        }
    }
    let emails: Vec<String> = r
        .emails
        .iter()
        .map(|e| e.trim().to_ascii_lowercase())
        .collect();
    for (j, e) in emails.iter().enumerate() {
        if !e.contains('@') || e.contains(char::is_whitespace) {
            ok = false;
            bad(
                &format!("{key}.emails[{j}]"),
                format!("{e:?} is not an e-mail address"),
                "write whole addresses like alice@example.com (use domains for a whole domain)",
            );
        }
    }
    let mut domains = Vec::new();
    for (j, d) in r.domains.iter().enumerate() {
        match normalize_domain(d.trim().trim_start_matches('@')) {
            Some(d) => domains.push(d),
            None => {
                ok = false;
                bad(
                    &format!("{key}.domains[{j}]"),
                    format!("{d:?} is not a domain name"),
                    "write an e-mail domain like example.com",
                );
            }
        }
    }
    if r.groups.iter().any(|g| g.trim().is_empty()) {
        ok = false;
        bad(
            &format!("{key}.groups"),
            "a group name is empty".into(),
            "list group names, like [admins, ops]",
        );
    }
    let mut claims = Vec::new();
    for (path, v) in &r.claims {
        let values = match v {
            Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
            v => scalar(v).map(|s| vec![s]),
        };
        match values {
            Some(values) if !path.trim().is_empty() && !values.is_empty() => {
                claims.push((path.clone(), values));
            }
            _ => {
                ok = false;
                bad(
                    &format!("{key}.claims.{path}"),
                    "a claim selector needs a claim path and a value or a list of values".into(),
                    "map a claim path to values, like claims: { \"realm_access.roles\": [admin] }",
                );
            }
        }
    }
    let rule = Rule {
        name: r.name.clone().filter(|n| !n.trim().is_empty()),
        effect,
        providers: r.providers.clone(),
        emails,
        domains,
        groups: r.groups.clone(),
        claims,
    };
    if !rule.has_selector() {
        bad(
            key,
            "a rule with no selector would match everyone".into(),
            "set providers, emails, domains, groups or claims; for everyone, use sign_in.default",
        );
        return None;
    }
    ok.then_some(rule)
}

/// For `portcullis check`: the guards in force, added to the effective
/// config `v` (and each provider's `allowed_groups`).
pub fn effective(c: &super::Config, v: &mut Value) {
    use serde_json::json;
    let r = &c.regulation;
    v["regulation"] = json!({
        "max_retries": r.max_retries, "ip_max_retries": r.ip_max_retries,
        "find_time": format!("{}s", r.find_time.as_secs()), "ban_time": format!("{}s", r.ban_time.as_secs()),
    });
    let p = &c.sign_in;
    let groups: std::collections::BTreeMap<_, _> = p.groups.iter().collect();
    v["groups"] = json!(groups);
    v["sign_in"] = json!({
        "default": p.default.as_str(),
        "rules": p.rules.iter().map(|r| json!({
            "name": r.name, "effect": r.effect.map(Effect::as_str), "providers": r.providers, "emails": r.emails,
            "domains": r.domains, "groups": r.groups,
            "claims": r.claims.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        })).collect::<Vec<_>>(),
    });
    if let Some(list) = v.get_mut("providers").and_then(Value::as_array_mut) {
        for item in list {
            let id = item["id"].as_str().unwrap_or_default().to_string();
            item["allowed_groups"] = json!(p.provider_groups.get(&id).cloned().unwrap_or_default());
        }
    }
}

/// A claim value as text: strings, numbers and booleans.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    const NO_ENV: [(&str, &str); 0] = [];

    const BASE: &str = "secrets: [\"0123456789abcdef0123456789abcdef0123456789ab\"]\nproviders:\n  - type: credentials\n    users: []\n";

    fn load(extra: &str) -> Result<crate::config::Config, String> {
        crate::config::load_str(&format!("{BASE}{extra}"), "t.yaml", &NO_ENV[..])
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_on_and_sane() {
        let c = load("").unwrap();
        assert_eq!(c.regulation, Default::default());
        assert_eq!(c.regulation.max_retries, 3);
        assert_eq!(c.sign_in, Default::default());
    }

    #[test]
    fn a_full_guard_config_loads() {
        let c = load(
            "regulation: { max_retries: 5, ip_max_retries: 0, find_time: 1m, ban_time: 10s }\ngroups:\n  \"Alice@Example.com\": [ops]\nsign_in:\n  default: deny\n  rules:\n    - { name: no-bob, effect: deny, emails: [BOB@x.io] }\n    - { effect: allow, providers: credentials, domains: [\"@Example.com\"], groups: [ops], claims: { \"org.tier\": [gold, 3] } }\n",
        )
        .unwrap();
        assert_eq!(c.regulation.max_retries, 5);
        assert_eq!(c.regulation.ip_max_retries, 0);
        assert_eq!(c.regulation.ban_time.as_secs(), 10);
        assert_eq!(c.sign_in.groups["alice@example.com"], vec!["ops"]);
        assert_eq!(c.sign_in.rules[0].emails, vec!["bob@x.io"]);
        assert_eq!(c.sign_in.rules[1].domains, vec!["example.com"]);
        assert_eq!(c.sign_in.rules[1].claims[0].1, vec!["gold", "3"]);
    }

    #[test]
    fn bad_guards_are_all_reported_with_key_and_fix() {
        let err = load(
            "regulation: { max_retries: 5000, find_time: soon, ban_time: 0s }\ngroups:\n  nobody: [x]\nsign_in:\n  default: maybe\n  rules:\n    - { effect: perhaps, emails: [x] }\n    - { effect: deny }\n    - { effect: allow, providers: [github], domains: [\"not a domain\"], claims: { \"a.b\": { nested: 1 } } }\n    - { name: twin, effect: deny, groups: [a] }\n    - { name: twin, effect: deny, groups: [b] }\n",
        )
        .unwrap_err();
        for want in [
            "regulation.max_retries",
            "regulation.find_time",
            "regulation.ban_time",
            "groups.nobody",
            "sign_in.default",
            "sign_in.rules[0].effect",
            "sign_in.rules[0].emails[0]",
            "sign_in.rules[1] (t.yaml line 12 column 7): a rule with no selector",
            "sign_in.rules[2].providers[0]",
            "use a configured provider id: credentials",
            "sign_in.rules[2].domains[0]",
            "sign_in.rules[2].claims.a.b",
            "sign_in.rules[4].name",
        ] {
            assert!(err.contains(want), "{want:?} missing from:\n{err}");
        }
        let err = load("sign_in:\n  rules:\n    - { effect: allow, groups: [a] }\n").unwrap_err();
        assert!(err.contains("the rules change nothing"), "{err}");
        let err = load("sign_in:\n  rules:\n    - { effect: deny, emial: [a@b.c] }\n").unwrap_err();
        assert!(err.contains("sign_in.rules[0].emial"), "{err}");
        let err = crate::config::load_str(
            "secrets: [\"0123456789abcdef0123456789abcdef0123456789ab\"]\nproviders:\n  - { type: credentials, users: [], allowed_groups: [\"\"] }\n",
            "t.yaml",
            &NO_ENV[..],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("providers[0].allowed_groups"), "{err}");
    }
}
