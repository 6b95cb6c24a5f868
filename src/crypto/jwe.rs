//! Auth.js v5 session tokens: compact JWE, `alg` `dir`, `enc`
//! `A256CBC-HS512` (RFC 7518 §5.2.2), key by HKDF-SHA256 from the secret
//! with the cookie name as salt, `kid` the RFC 7638 thumbprint of the key.
//!
//! Keys are derived once per (secret, salt) at start; sealing and opening
//! do no key derivation. Opening also accepts `A256GCM` (Auth.js does), and
//! picks the secret by `kid`; with no `kid` only the first secret is tried.

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};

use super::{Secret, b64, b64_decode, ct_eq, fill_random};

const ENC_CBC: &str = "A256CBC-HS512";
const ENC_GCM: &str = "A256GCM";

/// One secret's keys for one salt.
struct KeyPair {
    cbc: [u8; 64],
    /// HMAC-SHA512 keyed with the first half of `cbc` once: each use
    /// clones it instead of hashing the key again.
    cbc_mac: Hmac<Sha512>,
    cbc_kid: String,
    gcm: [u8; 32],
    gcm_kid: String,
}

/// The keys of every configured secret for one salt (cookie name).
pub struct JweKeys {
    keys: Vec<KeyPair>,
    /// The protected header of tokens we seal, base64url: it never changes.
    header_b64: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("not a compact JWE")]
    Malformed,
    #[error("unsupported JWE header")]
    Unsupported,
    #[error("no key matches the token's kid")]
    UnknownKey,
    #[error("authentication tag mismatch")]
    BadTag,
}

#[derive(Deserialize)]
struct Header<'a> {
    alg: &'a str,
    enc: &'a str,
    #[serde(default)]
    kid: Option<&'a str>,
    #[serde(default)]
    zip: Option<&'a str>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

fn derive(secret: &Secret, salt: &str, len: usize) -> Vec<u8> {
    let info = format!("Auth.js Generated Encryption Key ({salt})");
    let hk = Hkdf::<Sha256>::new(Some(salt.as_bytes()), secret.expose().as_bytes());
    let mut okm = vec![0u8; len];
    #[allow(clippy::expect_used)]
    hk.expand(info.as_bytes(), &mut okm)
        .expect("64 bytes is a valid HKDF-SHA256 length");
    okm
}

/// RFC 7638 thumbprint of `{"k":..,"kty":"oct"}`, hashed with SHA-(8 * key length)
/// as Auth.js does (SHA-512 for the 64-byte key, SHA-256 for the 32-byte one).
fn thumbprint(key: &[u8]) -> String {
    let jwk = format!(r#"{{"k":"{}","kty":"oct"}}"#, b64(key));
    if key.len() == 64 {
        b64(&Sha512::digest(jwk.as_bytes()))
    } else {
        b64(&Sha256::digest(jwk.as_bytes()))
    }
}

impl JweKeys {
    /// Derives the keys of every secret for `salt`; the first secret seals.
    pub fn derive(secrets: &[Secret], salt: &str) -> Self {
        let keys: Vec<KeyPair> = secrets
            .iter()
            .map(|s| {
                let mut cbc = [0u8; 64];
                cbc.copy_from_slice(&derive(s, salt, 64));
                let mut gcm = [0u8; 32];
                gcm.copy_from_slice(&derive(s, salt, 32));
                KeyPair {
                    cbc_mac: mac_for(&cbc[..32]),
                    cbc_kid: thumbprint(&cbc),
                    gcm_kid: thumbprint(&gcm),
                    cbc,
                    gcm,
                }
            })
            .collect();
        let kid = keys.first().map(|k| k.cbc_kid.as_str()).unwrap_or("");
        let header = format!(r#"{{"alg":"dir","enc":"{ENC_CBC}","kid":"{kid}"}}"#);
        JweKeys {
            header_b64: b64(header.as_bytes()),
            keys,
        }
    }

    /// Seals `plaintext` with the first secret's key.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let Some(key) = self.keys.first() else {
            return String::new();
        };
        let mut iv = [0u8; 16];
        fill_random(&mut iv);
        let enc_key = &key.cbc[32..];
        #[allow(clippy::expect_used)]
        let ct = cbc::Encryptor::<Aes256>::new_from_slices(enc_key, &iv)
            .expect("32-byte key and 16-byte IV")
            .encrypt_padded_vec::<Pkcs7>(plaintext);
        let tag = cbc_tag(&key.cbc_mac, self.header_b64.as_bytes(), &iv, &ct);
        let mut out = String::with_capacity(self.header_b64.len() + (ct.len() + 48) * 4 / 3 + 8);
        out.push_str(&self.header_b64);
        out.push_str("..");
        out.push_str(&b64(&iv));
        out.push('.');
        out.push_str(&b64(&ct));
        out.push('.');
        out.push_str(&b64(&tag));
        out
    }

    /// Opens a compact JWE sealed by any configured secret.
    pub fn open(&self, token: &str) -> Result<Vec<u8>, OpenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(ek), Some(iv), Some(ct), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(OpenError::Malformed);
        };
        if !ek.is_empty() {
            return Err(OpenError::Unsupported);
        }
        // Our own header (what seal writes: dir, A256CBC-HS512, the first
        // key's kid): no need to decode and parse it.
        if h == self.header_b64
            && let Some(key) = self.keys.first()
        {
            let iv = b64_decode(iv).ok_or(OpenError::Malformed)?;
            let ct = b64_decode(ct).ok_or(OpenError::Malformed)?;
            let tag = b64_decode(tag).ok_or(OpenError::Malformed)?;
            return open_cbc(key, h.as_bytes(), &iv, &ct, &tag);
        }
        let header_json = b64_decode(h).ok_or(OpenError::Malformed)?;
        let header: Header<'_> =
            serde_json::from_slice(&header_json).map_err(|_| OpenError::Malformed)?;
        if header.alg != "dir" || header.zip.is_some() || header.crit.is_some() {
            return Err(OpenError::Unsupported);
        }
        let iv = b64_decode(iv).ok_or(OpenError::Malformed)?;
        let ct = b64_decode(ct).ok_or(OpenError::Malformed)?;
        let tag = b64_decode(tag).ok_or(OpenError::Malformed)?;
        match header.enc {
            ENC_CBC => {
                let key = self.pick(header.kid, |k| &k.cbc_kid)?;
                open_cbc(key, h.as_bytes(), &iv, &ct, &tag)
            }
            ENC_GCM => {
                let key = self.pick(header.kid, |k| &k.gcm_kid)?;
                open_gcm(&key.gcm, h.as_bytes(), &iv, &ct, &tag)
            }
            _ => Err(OpenError::Unsupported),
        }
    }

    fn pick(
        &self,
        kid: Option<&str>,
        kid_of: impl Fn(&KeyPair) -> &String,
    ) -> Result<&KeyPair, OpenError> {
        match kid {
            None => self.keys.first(),
            Some(kid) => self.keys.iter().find(|k| kid_of(k) == kid),
        }
        .ok_or(OpenError::UnknownKey)
    }
}

/// RFC 7518 §5.2.2.1 step 5: HMAC-SHA512 over AAD ‖ IV ‖ C ‖ AL, first 32 bytes.
fn mac_for(mac_key: &[u8]) -> Hmac<Sha512> {
    #[allow(clippy::expect_used)]
    <Hmac<Sha512> as hmac::KeyInit>::new_from_slice(mac_key).expect("HMAC takes any key length")
}

fn cbc_tag(keyed: &Hmac<Sha512>, aad: &[u8], iv: &[u8], ct: &[u8]) -> [u8; 32] {
    let mut mac = keyed.clone();
    mac.update(aad);
    mac.update(iv);
    mac.update(ct);
    mac.update(&((aad.len() as u64) * 8).to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; 32];
    tag.copy_from_slice(&full[..32]);
    tag
}

fn open_cbc(
    key: &KeyPair,
    aad: &[u8],
    iv: &[u8],
    ct: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, OpenError> {
    if iv.len() != 16 || tag.len() != 32 {
        return Err(OpenError::Malformed);
    }
    let enc_key = &key.cbc[32..];
    // RFC 7518 §5.2.2.2: check the tag before decrypting, in constant time.
    if !ct_eq(&cbc_tag(&key.cbc_mac, aad, iv, ct), tag) {
        return Err(OpenError::BadTag);
    }
    cbc::Decryptor::<Aes256>::new_from_slices(enc_key, iv)
        .map_err(|_| OpenError::Malformed)?
        .decrypt_padded_vec::<Pkcs7>(ct)
        .map_err(|_| OpenError::BadTag)
}

fn open_gcm(
    key: &[u8; 32],
    aad: &[u8],
    iv: &[u8],
    ct: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, OpenError> {
    if iv.len() != 12 || tag.len() != 16 {
        return Err(OpenError::Malformed);
    }
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| OpenError::Malformed)?;
    let mut msg = Vec::with_capacity(ct.len() + 16);
    msg.extend_from_slice(ct);
    msg.extend_from_slice(tag);
    let nonce = Nonce::try_from(iv).map_err(|_| OpenError::Malformed)?;
    cipher
        .decrypt(&nonce, Payload { msg: &msg, aad })
        .map_err(|_| OpenError::BadTag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secrets: &[&str]) -> JweKeys {
        let s: Vec<Secret> = secrets.iter().map(|s| Secret::new((*s).into())).collect();
        JweKeys::derive(&s, "authjs.session-token")
    }

    /// RFC 7518 Appendix B.3: AES_256_CBC_HMAC_SHA_512 test vector.
    #[test]
    fn rfc7518_b3_vector() {
        let k: Vec<u8> = (0u8..64).collect();
        let p = b"A cipher system must not be required to be secret, and it must be able to fall into the hands of the enemy without inconvenience";
        let iv = [
            0x1a, 0xf3, 0x8c, 0x2d, 0xc2, 0xb9, 0x6f, 0xfd, 0xd8, 0x66, 0x94, 0x09, 0x23, 0x41,
            0xbc, 0x04,
        ];
        let a = b"The second principle of Auguste Kerckhoffs";
        let (mac_key, enc_key) = k.split_at(32);
        let ct = cbc::Encryptor::<Aes256>::new_from_slices(enc_key, &iv)
            .unwrap()
            .encrypt_padded_vec::<Pkcs7>(p);
        assert_eq!(
            crate::crypto::hex(&ct[..16]),
            "4affaaadb78c31c5da4b1b590d10ffbd"
        );
        let tag = cbc_tag(&mac_for(mac_key), a, &iv, &ct);
        assert_eq!(
            crate::crypto::hex(&tag),
            "4dd3b4c088a7f45c216839645b2012bf2e6269a8c56a816dbc1b267761955bc5"
        );
        let mut cbc = [0u8; 64];
        cbc.copy_from_slice(&k);
        let key = KeyPair {
            cbc_mac: mac_for(mac_key),
            cbc,
            cbc_kid: String::new(),
            gcm: [0; 32],
            gcm_kid: String::new(),
        };
        assert_eq!(open_cbc(&key, a, &iv, &ct, &tag).unwrap(), p.to_vec());
    }

    #[test]
    fn seal_then_open_round_trips() {
        let k = keys(&["a-secret-of-at-least-thirty-two-chars!!"]);
        let t = k.seal(br#"{"sub":"1"}"#);
        assert_eq!(t.split('.').count(), 5);
        assert_eq!(k.open(&t).unwrap(), br#"{"sub":"1"}"#);
    }

    #[test]
    fn rotated_secret_still_opens_by_kid() {
        let old = keys(&["old-secret-old-secret-old-secret-old"]);
        let t = old.seal(b"{}");
        let new = keys(&[
            "new-secret-new-secret-new-secret-new",
            "old-secret-old-secret-old-secret-old",
        ]);
        assert_eq!(new.open(&t).unwrap(), b"{}");
        let other = keys(&["new-secret-new-secret-new-secret-new"]);
        assert_eq!(other.open(&t), Err(OpenError::UnknownKey));
    }

    #[test]
    fn tampering_anywhere_fails() {
        let k = keys(&["a-secret-of-at-least-thirty-two-chars!!"]);
        let t = k.seal(br#"{"email":"a@example.com"}"#);
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            if b[i] == b'.' {
                continue;
            }
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(b).unwrap();
            if s == t {
                continue;
            }
            assert!(k.open(&s).is_err(), "flipped byte {i} still opened");
        }
        assert!(k.open(&t[..t.len() - 3]).is_err());
        assert!(k.open("").is_err());
        assert!(k.open("a.b.c.d.e.f").is_err());
    }

    #[test]
    fn other_salt_cannot_open() {
        let s = vec![Secret::new(
            "a-secret-of-at-least-thirty-two-chars!!".into(),
        )];
        let a = JweKeys::derive(&s, "authjs.session-token");
        let b = JweKeys::derive(&s, "__Secure-authjs.session-token");
        assert!(b.open(&a.seal(b"{}")).is_err());
    }
}
