//! Keys and primitives: randomness, base64url, constant-time comparison,
//! and the secret newtype every key is derived from.
//!
//! The JWE that seals Auth.js session cookies lives in [`jwe`].

pub mod jwe;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A configured secret (`secrets:`). Keys for cookies and CSRF tokens are
/// derived from it; whoever learns it can forge every session.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string; the caller has checked its length.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The raw secret. Only key derivation may call this: printing or
    /// logging it hands out every session.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// When the OS has no randomness to give: we cannot run safely then.
pub fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fill_random(&mut buf);
    b64(&buf)
}

/// A random version-4 UUID string (the `jti` Auth.js puts in every token).
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// SHA-256 over length-prefixed parts then groups: ("ab","c") and
/// ("a","bc") differ. The cache key of what a token says about a session.
pub fn digest_parts(parts: &[&str], groups: &[String]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts
        .iter()
        .copied()
        .chain(groups.iter().map(String::as_str))
    {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Compares two byte strings in time that depends only on their lengths:
/// eight bytes at a time folded into one word, no early exit, then
/// `subtle`'s comparison of that word. (`subtle` on the slices goes byte
/// by byte behind a barrier each: ~1 us for the 1.2 kB session cookie
/// compared on every request.)
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, ta) = a.as_chunks::<8>();
    let (wb, tb) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in wa.iter().zip(wb) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in ta.iter().zip(tb) {
        diff |= u64::from(x ^ y);
    }
    bool::from(diff.ct_eq(&0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_sees_every_byte() {
        for len in [0usize, 1, 7, 8, 9, 64, 1250] {
            let a: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            assert!(ct_eq(&a, &a.clone()), "{len}");
            for i in 0..len {
                let mut b = a.clone();
                b[i] ^= 0x80;
                assert!(!ct_eq(&a, &b), "{len} {i}");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!ct_eq(&a, &longer));
        }
    }

    #[test]
    fn uuid_has_version_and_variant() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, random_uuid());
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2hunter2hunter2hunter2hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }
}
