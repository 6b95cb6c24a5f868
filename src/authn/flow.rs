//! Pending sign-ins (OAuth/OIDC flows): one sealed cookie per flow, named
//! after its `state`, so several tabs can sign in at once without one
//! overwriting another's. Flows are bounded in number (the oldest goes)
//! and in age; a flow is consumed once by its callback, and a used `state`
//! is remembered until it would have expired, so replaying a callback
//! (with a copied cookie) fails.

use std::collections::HashMap;
use std::time::Duration;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::crypto::jwe::JweKeys;
use crate::crypto::{Secret, ct_eq, random_token};
use crate::http::cookies::{self, CookieNames, SameSite, SetCookie};

/// How much of the state names the cookie (the rest is checked inside).
const NAME_CHARS: usize = 16;
/// Used states remembered at most (oldest forgotten first).
const MAX_USED: usize = 50_000;

/// What a pending sign-in remembers between start and callback. Not
/// `Clone`: it is consumed once.
#[derive(Debug, Serialize, Deserialize)]
pub struct Flow {
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    /// PKCE code verifier (RFC 7636).
    #[serde(rename = "v")]
    pub verifier: String,
    #[serde(rename = "p")]
    pub provider: String,
    /// Where to go after sign-in; checked by the redirect policy at start.
    #[serde(rename = "c")]
    pub callback: String,
    #[serde(rename = "t")]
    pub created: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlowError {
    #[error("no pending sign-in for this state (another browser, or the flow cookie expired)")]
    Missing,
    #[error("the state does not match the pending sign-in")]
    Mismatch,
    #[error("the pending sign-in expired")]
    Expired,
    #[error("this sign-in was already completed (replayed callback)")]
    Replayed,
    #[error("the callback is for another provider")]
    WrongProvider,
}

pub struct Flows {
    keys: JweKeys,
    prefix: String,
    path: String,
    secure: bool,
    max_age: Duration,
    max_flows: usize,
    clock: Clock,
    used: Mutex<HashMap<String, u64>>,
}

impl Flows {
    pub fn new(
        secrets: &[Secret],
        names: &CookieNames,
        base_path: &str,
        max_age: Duration,
        max_flows: usize,
        clock: Clock,
    ) -> Self {
        Flows {
            keys: JweKeys::derive(secrets, &names.flow_prefix),
            prefix: names.flow_prefix.clone(),
            path: format!("{base_path}/"),
            secure: names.secure,
            max_age,
            max_flows,
            clock,
            used: Mutex::new(HashMap::new()),
        }
    }

    fn cookie_name(&self, state: &str) -> String {
        let short: String = state.chars().take(NAME_CHARS).collect();
        format!("{}{short}", self.prefix)
    }

    fn set(&self, name: &str, value: &str, max_age: u64, same_site: SameSite) -> String {
        SetCookie {
            name,
            value,
            expires: None,
            max_age: Some(max_age),
            domain: None,
            http_only: true,
            secure: self.secure,
            path: &self.path,
            same_site,
        }
        .render()
    }

    /// `form_post` callbacks are cross-site POSTs: their flow cookie must
    /// be `SameSite=None`, which browsers only accept with `Secure`.
    fn same_site(&self, cross_site_post: bool) -> SameSite {
        if cross_site_post && self.secure {
            SameSite::None
        } else {
            SameSite::Lax
        }
    }

    fn open(&self, value: &str) -> Option<Flow> {
        serde_json::from_slice(&self.keys.open(value).ok()?).ok()
    }

    /// Starts a flow: a fresh state, nonce and PKCE verifier, and the
    /// `Set-Cookie` values that store it (and drop the oldest flows).
    pub fn start(
        &self,
        headers: &HeaderMap,
        provider: &str,
        callback: &str,
        cross_site_post: bool,
    ) -> (Flow, Vec<String>) {
        let flow = Flow {
            state: random_token(32),
            nonce: random_token(32),
            verifier: random_token(32),
            provider: provider.to_string(),
            callback: callback.to_string(),
            created: self.clock.now(),
        };
        let mut existing: Vec<(u64, String)> = cookies::pairs(headers)
            .filter(|(n, _)| n.starts_with(self.prefix.as_str()))
            .map(|(n, v)| (self.open(v).map(|f| f.created).unwrap_or(0), n.to_string()))
            .collect();
        existing.sort();
        let mut out = Vec::new();
        let excess = (existing.len() + 1).saturating_sub(self.max_flows);
        for (_, name) in existing.into_iter().take(excess) {
            out.push(self.set(&name, "", 0, SameSite::Lax));
        }
        let sealed = self
            .keys
            .seal(&serde_json::to_vec(&flow).unwrap_or_default());
        out.push(self.set(
            &self.cookie_name(&flow.state),
            &sealed,
            self.max_age.as_secs(),
            self.same_site(cross_site_post),
        ));
        (flow, out)
    }

    /// Consumes the flow `state` names. Returns it and the `Set-Cookie`
    /// that deletes its cookie (send that whatever happens next).
    pub async fn finish(
        &self,
        headers: &HeaderMap,
        state: &str,
        provider: &str,
    ) -> (Result<Flow, FlowError>, Option<String>) {
        if state.is_empty() || state.len() > 128 {
            return (Err(FlowError::Missing), None);
        }
        let name = self.cookie_name(state);
        let Some(value) = cookies::get(headers, &name) else {
            return (Err(FlowError::Missing), None);
        };
        let clear = Some(self.set(&name, "", 0, SameSite::Lax));
        let Some(flow) = self.open(value) else {
            return (Err(FlowError::Missing), clear);
        };
        if !ct_eq(flow.state.as_bytes(), state.as_bytes()) {
            return (Err(FlowError::Mismatch), clear);
        }
        let now = self.clock.now();
        let expires = flow.created + self.max_age.as_secs();
        if now >= expires {
            return (Err(FlowError::Expired), clear);
        }
        if flow.provider != provider {
            return (Err(FlowError::WrongProvider), clear);
        }
        let mut used = self.used.lock().await;
        if used.contains_key(&flow.state) {
            return (Err(FlowError::Replayed), clear);
        }
        if used.len() >= MAX_USED {
            used.retain(|_, exp| *exp > now);
            if used.len() >= MAX_USED
                && let Some(oldest) = used.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
            {
                used.remove(&oldest);
            }
        }
        used.insert(flow.state.clone(), expires);
        (Ok(flow), clear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CookieConfig;
    use http::HeaderValue;

    fn flows(clock: Clock, max: usize) -> Flows {
        let names = CookieNames::new(&CookieConfig::default());
        Flows::new(
            &[Secret::new("flow-secret-flow-secret-flow-secret-x".into())],
            &names,
            "/auth",
            Duration::from_secs(600),
            max,
            clock,
        )
    }

    fn jar(set: &[String]) -> HeaderMap {
        let pairs: Vec<&str> = set
            .iter()
            .map(|c| c.split(';').next().unwrap())
            .filter(|p| !p.ends_with('='))
            .collect();
        let mut h = HeaderMap::new();
        if !pairs.is_empty() {
            h.insert(
                http::header::COOKIE,
                HeaderValue::from_str(&pairs.join("; ")).unwrap(),
            );
        }
        h
    }

    #[tokio::test]
    async fn a_flow_is_consumed_once() {
        let f = flows(Clock::fixed(1000), 4);
        let (flow, set) = f.start(&HeaderMap::new(), "idp", "/back", false);
        let h = jar(&set);
        let (got, clear) = f.finish(&h, &flow.state, "idp").await;
        assert_eq!(got.unwrap().callback, "/back");
        assert!(clear.unwrap().contains("Max-Age=0"));
        assert_eq!(
            f.finish(&h, &flow.state, "idp").await.0.unwrap_err(),
            FlowError::Replayed
        );
    }

    #[tokio::test]
    async fn wrong_state_other_provider_and_expiry_fail() {
        let clock = Clock::fixed(1000);
        let f = flows(clock.clone(), 4);
        let (flow, set) = f.start(&HeaderMap::new(), "idp", "/", false);
        let h = jar(&set);
        let forged = format!("{}{}", &flow.state[..NAME_CHARS], "x".repeat(27));
        assert_eq!(
            f.finish(&h, &forged, "idp").await.0.unwrap_err(),
            FlowError::Mismatch
        );
        assert_eq!(
            f.finish(&h, &flow.state, "other").await.0.unwrap_err(),
            FlowError::WrongProvider
        );
        assert_eq!(
            f.finish(&HeaderMap::new(), &flow.state, "idp")
                .await
                .0
                .unwrap_err(),
            FlowError::Missing
        );
        clock.advance(601);
        assert_eq!(
            f.finish(&h, &flow.state, "idp").await.0.unwrap_err(),
            FlowError::Expired
        );
    }

    #[tokio::test]
    async fn tabs_keep_their_own_flows_and_the_oldest_goes_past_the_bound() {
        let clock = Clock::fixed(1000);
        let f = flows(clock.clone(), 2);
        let (a, set_a) = f.start(&HeaderMap::new(), "idp", "/a", false);
        clock.advance(1);
        let (b, set_b) = f.start(&jar(&set_a), "idp", "/b", false);
        let both: Vec<String> = set_a.iter().chain(&set_b).cloned().collect();
        clock.advance(1);
        let (c, set_c) = f.start(&jar(&both), "idp", "/c", false);
        assert!(
            set_c
                .iter()
                .any(|s| s.starts_with(&f.cookie_name(&a.state)) && s.contains("Max-Age=0")),
            "{set_c:?}"
        );
        let live: Vec<String> = set_b
            .iter()
            .chain(&set_c)
            .filter(|s| !s.contains("Max-Age=0"))
            .cloned()
            .collect();
        let h = jar(&live);
        assert_eq!(
            f.finish(&h, &b.state, "idp").await.0.unwrap().callback,
            "/b"
        );
        assert_eq!(
            f.finish(&h, &c.state, "idp").await.0.unwrap().callback,
            "/c"
        );
    }
}
