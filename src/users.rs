//! Users and their linked accounts (Auth.js's adapter model), kept in the
//! store when sessions use the `database` strategy.
//!
//! A user has an id of ours, a profile, and accounts: (provider, the
//! provider's account id) pairs. Signing in with an account finds its
//! user; a new account makes a new user, except that Auth.js's rule holds:
//! an e-mail that already belongs to a user is never joined to it
//! silently (`OAuthAccountNotLinked`), unless the provider is configured
//! with `allow_dangerous_email_account_linking`. A signed-in user links
//! another account explicitly by signing in with it.
//!
//! In Redis the indexes (account → user, e-mail → user) change in one Lua
//! script, so parallel first sign-ins create one user, never two. Keys
//! carry the `{users}` hash tag: in a cluster they share a slot, which the
//! script needs. Records are sealed like sessions; index keys hold hashes,
//! never an e-mail address or account id in the clear.
//!
//! In SQL the same rules run in one transaction over the `users` and
//! `accounts` tables (Auth.js's adapter schema), whose unique keys
//! (account, e-mail) make a parallel duplicate fail and start over.

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, UnixTime};
use crate::crypto::jwe::JweKeys;
use crate::crypto::{Secret, random_token, sha256_hex};
use crate::store::{Store, StoreError};

/// Account → user, e-mail → user, atomically (see the module docs).
/// KEYS: account index, e-mail index (or the account index again when
/// there is no e-mail). ARGV: mode (`signin`/`link`), the new user's id,
/// the signed-in user's id (link), `1` to allow joining by e-mail, `1`
/// when there is an e-mail.
const RESOLVE: &str = r"
local acct = redis.call('GET', KEYS[1])
if ARGV[1] == 'link' then
  if acct then
    if acct == ARGV[3] then return {'existing', acct} end
    return {'taken', acct}
  end
  redis.call('SET', KEYS[1], ARGV[3])
  return {'linked', ARGV[3]}
end
if acct then return {'existing', acct} end
if ARGV[5] == '1' then
  local owner = redis.call('GET', KEYS[2])
  if owner then
    if ARGV[4] == '1' then
      redis.call('SET', KEYS[1], owner)
      return {'linked', owner}
    end
    return {'not_linked', owner}
  end
  redis.call('SET', KEYS[2], ARGV[2])
end
redis.call('SET', KEYS[1], ARGV[2])
return {'created', ARGV[2]}
";

/// One linked account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    pub provider: String,
    pub provider_account_id: String,
}

/// A user record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub accounts: Vec<Account>,
    pub created: UnixTime,
}

/// What signing in with an account came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The account's user (found, new, or joined by e-mail when allowed).
    User(User),
    /// The account was linked to the signed-in user.
    Linked(User),
    /// Its e-mail belongs to another user: `OAuthAccountNotLinked`.
    EmailTaken,
    /// Linking an account that already belongs to another user.
    AccountTaken,
}

/// The profile a sign-in brought.
#[derive(Debug, Clone)]
pub struct Profile<'a> {
    pub provider: &'a str,
    /// Auth.js's account `type`: `oidc`, `oauth` or `email`.
    pub provider_type: &'a str,
    pub account_id: &'a str,
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub image: Option<&'a str>,
    /// Join an existing user with the same e-mail (the provider allows it).
    pub allow_email_linking: bool,
}

pub struct Users {
    store: Store,
    prefix: String,
    keys: JweKeys,
    clock: Clock,
}

impl Users {
    pub fn new(store: Store, prefix: &str, secrets: &[Secret], clock: Clock) -> Self {
        Users {
            store,
            prefix: prefix.to_string(),
            keys: JweKeys::derive(secrets, "portcullis.store.user"),
            clock,
        }
    }

    fn account_key(&self, provider: &str, account_id: &str) -> String {
        let h = sha256_hex(format!("{provider}\0{account_id}").as_bytes());
        format!("{}{{users}}a:{h}", self.prefix)
    }

    fn email_key(&self, email: &str) -> String {
        let h = sha256_hex(email.trim().to_ascii_lowercase().as_bytes());
        format!("{}{{users}}e:{h}", self.prefix)
    }

    fn user_key(&self, id: &str) -> String {
        format!("{}{{users}}u:{id}", self.prefix)
    }

    /// The user with this id, if any.
    pub async fn get(&self, id: &str) -> Result<Option<User>, StoreError> {
        let redis = match &self.store {
            Store::Sql(s) => return s.user_get(id).await,
            Store::Redis(r) => r,
        };
        let sealed: Option<String> = redis.cmd(redis::cmd("GET").arg(self.user_key(id))).await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let bytes = self
            .keys
            .open(&sealed)
            .map_err(|_| StoreError::Corrupt("a user record does not open".into()))?;
        let user: User = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("a user record: {e}")))?;
        Ok((user.id == id).then_some(user))
    }

    async fn put(&self, redis: &crate::store::redis::Redis, user: &User) -> Result<(), StoreError> {
        let sealed = self
            .keys
            .seal(&serde_json::to_vec(user).unwrap_or_default());
        redis
            .cmd::<()>(redis::cmd("SET").arg(self.user_key(&user.id)).arg(sealed))
            .await
    }

    /// Signs in with an account: finds or creates its user, or (with
    /// `signed_in`, the current session's user) links it to that user.
    pub async fn sign_in(
        &self,
        p: &Profile<'_>,
        signed_in: Option<&str>,
    ) -> Result<Outcome, StoreError> {
        let email = p.email.map(|e| e.trim().to_ascii_lowercase());
        let new_id = random_token(16);
        let redis = match &self.store {
            Store::Sql(s) => {
                return s
                    .sign_in(p, email.as_deref(), signed_in, &new_id, self.clock.now())
                    .await;
            }
            Store::Redis(r) => r,
        };
        let account_key = self.account_key(p.provider, p.account_id);
        let email_key = email
            .as_deref()
            .map(|e| self.email_key(e))
            .unwrap_or_else(|| account_key.clone());
        let script = resolve_script();
        let (what, id): (String, String) = redis
            .script(
                script,
                &[&account_key, &email_key],
                &[
                    if signed_in.is_some() {
                        "link"
                    } else {
                        "signin"
                    },
                    &new_id,
                    signed_in.unwrap_or(""),
                    if p.allow_email_linking { "1" } else { "0" },
                    if email.is_some() { "1" } else { "0" },
                ],
            )
            .await?;
        let account = Account {
            provider: p.provider.to_string(),
            provider_account_id: p.account_id.to_string(),
        };
        match what.as_str() {
            "not_linked" => return Ok(Outcome::EmailTaken),
            "taken" => return Ok(Outcome::AccountTaken),
            _ => {}
        }
        // The index is the truth; the record follows it (and is rebuilt
        // if a crash left an index without one).
        let mut user = match self.get(&id).await? {
            Some(u) => u,
            None => User {
                id: id.clone(),
                name: p.name.map(str::to_owned),
                email: email.clone(),
                image: p.image.map(str::to_owned),
                accounts: Vec::new(),
                created: self.clock.now(),
            },
        };
        let fresh = !user.accounts.contains(&account);
        if fresh {
            user.accounts.push(account);
        }
        if fresh || what == "created" {
            self.put(redis, &user).await?;
        }
        Ok(match what.as_str() {
            "linked" if signed_in.is_some() => Outcome::Linked(user),
            _ => Outcome::User(user),
        })
    }
}

fn resolve_script() -> &'static redis::Script {
    static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    S.get_or_init(|| redis::Script::new(RESOLVE))
}
