//! The root key ring of biscuit tokens: the first key signs, every key
//! verifies (rotation). Keys come from `tokens.keys` (Ed25519 PEM files,
//! or public-only entries that only verify), else one key per configured
//! secret, derived by HKDF so every replica with the same secrets agrees.
//!
//! Every token names its root key id; [`KeyRing`] is the
//! [`RootKeyProvider`] that resolves it, and an unknown id (or none) fails.

use biscuit_auth::builder::Algorithm;
use biscuit_auth::{KeyPair, PrivateKey, PublicKey, RootKeyProvider, error};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::crypto::Secret;

/// The HKDF label of the derived root keys. Changing it changes every
/// derived key: tokens minted before would stop verifying.
const DERIVE_INFO: &[u8] = b"portcullis biscuit root key v1";
const DERIVE_SALT: &[u8] = b"portcullis";

/// One configured key, loaded.
#[derive(Clone)]
pub struct KeySpec {
    pub id: u32,
    /// Only the signing key (the first) needs it.
    pub private: Option<PrivateKey>,
    pub public: PublicKey,
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySpec")
            .field("id", &self.id)
            .field("private", &self.private.as_ref().map(|_| "<redacted>"))
            .field("public", &self.public.to_bytes_hex())
            .finish()
    }
}

/// Reads an Ed25519 private key (PKCS#8 PEM, as `openssl genpkey
/// -algorithm ed25519` writes it).
pub fn load_private_pem(text: &str) -> Result<PrivateKey, String> {
    KeyPair::from_private_key_pem_with_algorithm(text, Algorithm::Ed25519)
        .map(|k| k.private())
        .map_err(|_| "not an Ed25519 private key in PEM (PKCS#8)".to_string())
}

/// Reads a public key: hex, optionally prefixed `ed25519/`.
pub fn parse_public(text: &str) -> Result<PublicKey, String> {
    let hex = text.trim();
    let hex = hex.strip_prefix("ed25519/").unwrap_or(hex);
    PublicKey::from_bytes_hex(hex, Algorithm::Ed25519)
        .map_err(|_| "not an Ed25519 public key (64 hex digits)".to_string())
}

/// The key derived from one secret, and its id (from its public key, so
/// it is stable and needs no config).
pub fn derive(secret: &Secret) -> KeySpec {
    let hk = Hkdf::<Sha256>::new(Some(DERIVE_SALT), secret.expose().as_bytes());
    let mut seed = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: cannot fail.
    let _ = hk.expand(DERIVE_INFO, &mut seed);
    #[allow(clippy::expect_used)]
    let private = PrivateKey::from_bytes(&seed, Algorithm::Ed25519)
        .expect("any 32 bytes are an Ed25519 seed");
    let public = private.public();
    KeySpec {
        id: derived_id(&public),
        private: Some(private),
        public,
    }
}

/// An id for a derived key: 31 bits of its public key's hash (ids of
/// configured keys are small numbers; these rarely collide with them).
pub fn derived_id(public: &PublicKey) -> u32 {
    let h = Sha256::digest(public.to_bytes());
    u32::from_be_bytes([h[0] & 0x7f, h[1], h[2], h[3]])
}

/// The ring in force: built once per config.
pub struct KeyRing {
    signing: KeyPair,
    signing_id: u32,
    keys: Vec<(u32, PublicKey)>,
}

impl KeyRing {
    /// From `tokens.keys` when set (the first signs), else from the
    /// secrets (the first secret's key signs). `None` only without any.
    pub fn new(keys: &[KeySpec], secrets: &[Secret]) -> Option<Self> {
        let specs: Vec<KeySpec> = if keys.is_empty() {
            secrets.iter().map(derive).collect()
        } else {
            keys.to_vec()
        };
        let first = specs.first()?;
        let signing = KeyPair::from(first.private.as_ref()?);
        Some(KeyRing {
            signing,
            signing_id: first.id,
            keys: specs.iter().map(|k| (k.id, k.public)).collect(),
        })
    }

    pub fn signing(&self) -> (&KeyPair, u32) {
        (&self.signing, self.signing_id)
    }

    pub fn public_keys(&self) -> &[(u32, PublicKey)] {
        &self.keys
    }

    /// `{base}/keys`: the public keys with their ids, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|(id, k)| {
                serde_json::json!({
                    "id": id,
                    "algorithm": "ed25519",
                    "public_key": k.to_bytes_hex(),
                    "key": k.to_string(),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

impl RootKeyProvider for &KeyRing {
    fn choose(&self, key_id: Option<u32>) -> Result<PublicKey, error::Format> {
        // A token without an id, or with one we do not hold: no key.
        let id = key_id.ok_or(error::Format::UnknownPublicKey)?;
        self.keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, k)| *k)
            .ok_or(error::Format::UnknownPublicKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_deterministic_and_differ_per_secret() {
        let a = derive(&Secret::new("a".repeat(40)));
        let a2 = derive(&Secret::new("a".repeat(40)));
        let b = derive(&Secret::new("b".repeat(40)));
        assert_eq!(a.public.to_bytes(), a2.public.to_bytes());
        assert_eq!(a.id, a2.id);
        assert_ne!(a.public.to_bytes(), b.public.to_bytes());
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn unknown_or_missing_key_id_has_no_key() {
        let ring = KeyRing::new(&[], &[Secret::new("s".repeat(40))]).unwrap();
        let id = ring.signing().1;
        assert!((&ring).choose(Some(id)).is_ok());
        assert!((&ring).choose(Some(id ^ 1)).is_err());
        assert!((&ring).choose(None).is_err());
    }
}
