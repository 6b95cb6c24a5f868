//! Secrets from the config, the environment, or files (`secret_files`,
//! e.g. a mounted Kubernetes Secret): checked for length, never printed.

use crate::crypto::Secret;

/// Auth.js asks for 32 random bytes; we refuse anything shorter than 32
/// characters, which `portcullis gen-secret` always exceeds.
pub const MIN_SECRET_LEN: usize = 32;

/// Reads one secret file: its content without surrounding white space.
pub fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text.trim().to_string())
}

/// Checks one secret's strength; the message never repeats the secret.
pub fn check(secret: &str) -> Result<Secret, String> {
    if secret.chars().count() < MIN_SECRET_LEN {
        return Err(format!(
            "a secret is {} characters long; at least {MIN_SECRET_LEN} are needed",
            secret.chars().count()
        ));
    }
    if secret
        .chars()
        .all(|c| c == secret.chars().next().unwrap_or(' '))
    {
        return Err("a secret repeats one character; it must be random".into());
    }
    Ok(Secret::new(secret.to_string()))
}

/// A fresh random secret (`portcullis gen-secret`, the demo).
pub fn generate() -> String {
    crate::crypto::random_token(32)
}
