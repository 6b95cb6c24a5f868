//! The credentials provider: users from a YAML file with argon2id hashes.
//!
//! Defends against user enumeration: an unknown e-mail is checked against
//! a dummy hash with the same cost, so known and unknown users take the
//! same time and get the same answer.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use serde::Deserialize;

/// A user who can sign in with a password.
#[derive(Clone)]
pub struct User {
    /// Lower-cased, trimmed.
    pub email: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub groups: Vec<String>,
    password_hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    password_hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("email", &self.email)
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// The users of one credentials provider.
#[derive(Clone)]
pub struct Credentials {
    users: Arc<HashMap<String, User>>,
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} users)", self.users.len())
    }
}

/// Normalises an e-mail address for comparison and storage.
pub fn normalize_email(e: &str) -> String {
    e.trim().to_ascii_lowercase()
}

/// Reads a users file (`users: [{email, name, groups, password_hash}]`).
pub fn load_users_file(path: &std::path::Path) -> Result<Vec<User>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read users file {}: {e}", path.display()))?;
    let file: UsersFile = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" line {}", l.line()))
            .unwrap_or_default();
        format!("users file {}{at}: {e}", path.display())
    })?;
    check_users(file.users, &path.display().to_string())
}

/// Users given inline in the config, in the users-file shape.
pub fn users_from_value(v: &serde_json::Value, what: &str) -> Result<Vec<User>, String> {
    let users: Vec<RawUser> =
        serde_json::from_value(v.clone()).map_err(|e| format!("{what}: {e}"))?;
    check_users(users, what)
}

fn check_users(raw: Vec<RawUser>, what: &str) -> Result<Vec<User>, String> {
    let mut out: Vec<User> = Vec::with_capacity(raw.len());
    for (i, u) in raw.into_iter().enumerate() {
        let email = normalize_email(&u.email);
        if !email.contains('@') || email.contains(|c: char| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "{what}: users[{i}].email {:?} is not an e-mail address",
                u.email
            ));
        }
        let ok = PasswordHash::new(&u.password_hash)
            .map(|h| h.algorithm.as_str() == "argon2id")
            .unwrap_or(false);
        if !ok {
            return Err(format!(
                "{what}: users[{i}] ({email}) has a password_hash that is not an argon2id PHC string; make one with `portcullis hash-password`"
            ));
        }
        if out.iter().any(|o| o.email == email) {
            return Err(format!("{what}: {email} is listed twice"));
        }
        out.push(User {
            email,
            name: u.name,
            image: u.image,
            groups: u.groups,
            password_hash: u.password_hash,
        });
    }
    Ok(out)
}

/// Hashes a password as argon2id with the crate's recommended parameters.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

impl Credentials {
    pub fn new(users: Vec<User>) -> Self {
        // A hash of a random password, checked for unknown users so that
        // they take as long as known ones: with the cost the users' own
        // hashes use (the first user's), else the default.
        let params = users
            .first()
            .and_then(|u| PasswordHash::new(&u.password_hash).ok())
            .and_then(|h| argon2::Params::try_from(&h).ok())
            .unwrap_or_default();
        let dummy = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(crate::crypto::random_token(16).as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default();
        Credentials {
            users: Arc::new(users.into_iter().map(|u| (u.email.clone(), u)).collect()),
            dummy_hash: dummy.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a password; CPU-heavy (argon2), call from a blocking thread.
    /// Returns the user only when the password matches.
    pub fn verify(&self, email: &str, password: &str) -> Option<User> {
        let email = normalize_email(email);
        let user = self.users.get(&email);
        let hash = user
            .map(|u| u.password_hash.as_str())
            .unwrap_or(&self.dummy_hash);
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        match (ok, user) {
            (true, Some(u)) => Some(u.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        let h = hash_password("correct horse").unwrap();
        let v = serde_json::json!([{ "email": " Alice@Example.com ", "name": "Alice", "groups": ["admins"], "password_hash": h }]);
        Credentials::new(users_from_value(&v, "test").unwrap())
    }

    #[test]
    fn right_password_signs_in_wrong_ones_do_not() {
        let c = creds();
        assert_eq!(
            c.verify("alice@example.com", "correct horse")
                .unwrap()
                .groups,
            vec!["admins"]
        );
        assert!(c.verify("ALICE@example.com ", "correct horse").is_some());
        assert!(c.verify("alice@example.com", "wrong").is_none());
        assert!(c.verify("bob@example.com", "correct horse").is_none());
        assert!(c.verify("", "").is_none());
    }

    #[test]
    fn rejects_plain_text_and_duplicate_users() {
        let v = serde_json::json!([{ "email": "a@b.c", "password_hash": "hunter2" }]);
        assert!(users_from_value(&v, "t").unwrap_err().contains("argon2id"));
        let h = hash_password("x").unwrap();
        let v = serde_json::json!([{ "email": "a@b.c", "password_hash": h }, { "email": "A@b.c", "password_hash": h }]);
        assert!(users_from_value(&v, "t").unwrap_err().contains("twice"));
    }
}
