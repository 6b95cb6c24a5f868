//! The signed JWT assertion for upstreams that only speak JWT: an
//! `X-Auth-Request-Jwt` header (name configurable) on every request
//! Portcullis lets through, signed with EdDSA (Ed25519) or ES256 (RFC 7515,
//! RFC 8037), and the public keys as a JWKS at `{base}/jwks` (RFC 7517).
//!
//! Keys come from PKCS#8 PEM files, or are derived from the `secrets` with
//! HKDF-SHA256 when none are given, so replicas with the same secrets
//! agree. Each key's `kid` is its RFC 7638 thumbprint: the first key signs,
//! every key is published, so a rotation (a new first file or secret)
//! keeps tokens signed with the old key verifiable until they expire.
//!
//! An assertion is minted once per session and reused until a quarter of
//! its lifetime is left: a direct-mapped cache of [`CACHE_SLOTS`] slots,
//! each an `ArcSwapOption` (lock-free, bounded; a collision only costs a
//! new signature).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::crypto::{Secret, b64};
use crate::session::Session;

/// Slots of the assertion cache (one live session each, at most).
pub const CACHE_SLOTS: usize = 4096;

/// The signature algorithm (JWA names, RFC 7518 §3.1 and RFC 8037 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    EdDsa,
    Es256,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" | "Ed25519" => Some(Algorithm::EdDsa),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Es256 => "ES256",
        }
    }
}

/// A private key file's PKCS#8 DER, read at config load.
#[derive(Clone)]
pub struct KeyFile {
    pub path: PathBuf,
    pub pkcs8: Arc<[u8]>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyFile({}, [redacted])", self.path.display())
    }
}

/// The `jwt:` block as validated.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub header: HeaderName,
    pub algorithm: Algorithm,
    /// `aud` of every assertion (none when empty, a string when one).
    pub audience: Vec<String>,
    pub ttl: Duration,
    /// Empty: keys derived from the secrets.
    pub key_files: Vec<KeyFile>,
}

enum Pair {
    Ed(Ed25519KeyPair),
    Es(EcdsaKeyPair),
}

struct SigningKey {
    kid: String,
    pair: Pair,
    jwk: Value,
}

impl SigningKey {
    fn from_pkcs8(alg: Algorithm, der: &[u8]) -> Result<Self, String> {
        let pair = match alg {
            Algorithm::EdDsa => Pair::Ed(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| format!("not an Ed25519 PKCS#8 private key: {e}"))?,
            ),
            Algorithm::Es256 => Pair::Es(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|e| format!("not a P-256 PKCS#8 private key: {e}"))?,
            ),
        };
        Ok(Self::new(pair))
    }

    /// A key derived from a secret: HKDF-SHA256 (RFC 5869) with a label
    /// per algorithm, so the same secret never yields related keys.
    fn derive(alg: Algorithm, secret: &Secret) -> Result<Self, String> {
        let hk = hkdf::Hkdf::<Sha256>::new(
            Some(b"portcullis jwt assertion"),
            secret.expose().as_bytes(),
        );
        for attempt in 0u8..16 {
            let mut okm = [0u8; 32];
            let info = [alg.as_str().as_bytes(), &[attempt]].concat();
            hk.expand(&info, &mut okm)
                .map_err(|_| "HKDF output length".to_string())?;
            let pair = match alg {
                Algorithm::EdDsa => Ed25519KeyPair::from_seed_unchecked(&okm).map(Pair::Ed),
                // RFC 5915 ECPrivateKey with the P-256 OID; the public key
                // is computed. A scalar >= n (chance 2^-32) is rejected:
                // the next attempt derives another.
                Algorithm::Es256 => {
                    let mut der = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
                    der.extend_from_slice(&okm);
                    der.extend_from_slice(&[
                        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                    ]);
                    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                        .map(Pair::Es)
                }
            };
            if let Ok(pair) = pair {
                return Ok(Self::new(pair));
            }
        }
        Err("no valid key could be derived".into())
    }

    fn new(pair: Pair) -> Self {
        // RFC 7638 §3.2: the required members, in lexicographic order.
        let (alg, thumb_input, jwk) = match &pair {
            Pair::Ed(k) => {
                let x = b64(k.public_key().as_ref());
                (
                    "EdDSA",
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                )
            }
            Pair::Es(k) => {
                let p = k.public_key().as_ref();
                let (x, y) = (b64(&p[1..33]), b64(&p[33..65]));
                (
                    "ES256",
                    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                    json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                )
            }
        };
        let kid = b64(&Sha256::digest(thumb_input.as_bytes()));
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(alg);
        SigningKey { kid, pair, jwk }
    }

    fn sign(&self, msg: &[u8]) -> Option<Vec<u8>> {
        match &self.pair {
            Pair::Ed(k) => Some(k.sign(msg).as_ref().to_vec()),
            Pair::Es(k) => k
                .sign(&SystemRandom::new(), msg)
                .ok()
                .map(|s| s.as_ref().to_vec()),
        }
    }
}

/// One minted assertion and when to mint the next.
struct Cached {
    value: HeaderValue,
    renew_at: u64,
}

/// The assertion signer of a running instance.
pub struct Assertions {
    pub header: HeaderName,
    alg: Algorithm,
    issuer: String,
    audience: Option<Value>,
    ttl: u64,
    /// The first signs; all are published.
    keys: Vec<SigningKey>,
    /// `{base}/jwks`, serialized once.
    jwks: Bytes,
    cache: crate::slots::Slots<Cached>,
    minted: AtomicU64,
    clock: Clock,
}

impl Assertions {
    /// Builds the keys: from the files, else one per secret (the first
    /// secret's signs; the others stay published for rotation).
    pub fn new(
        cfg: &JwtConfig,
        secrets: &[Secret],
        issuer: &str,
        clock: Clock,
    ) -> Result<Self, String> {
        let keys: Vec<SigningKey> = if cfg.key_files.is_empty() {
            secrets
                .iter()
                .map(|s| SigningKey::derive(cfg.algorithm, s))
                .collect::<Result<_, _>>()?
        } else {
            cfg.key_files
                .iter()
                .map(|f| {
                    SigningKey::from_pkcs8(cfg.algorithm, &f.pkcs8)
                        .map_err(|e| format!("{}: {e}", f.path.display()))
                })
                .collect::<Result<_, _>>()?
        };
        if keys.is_empty() {
            return Err("no signing key (no key_files and no secrets)".into());
        }
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        let audience = match cfg.audience.as_slice() {
            [] => None,
            [one] => Some(json!(one)),
            many => Some(json!(many)),
        };
        Ok(Assertions {
            header: cfg.header.clone(),
            alg: cfg.algorithm,
            issuer: issuer.trim_end_matches('/').to_string(),
            audience,
            ttl: cfg.ttl.as_secs().max(1),
            keys,
            jwks: Bytes::from(jwks.to_string()),
            cache: crate::slots::Slots::new(CACHE_SLOTS),
            minted: AtomicU64::new(0),
            clock,
        })
    }

    /// The JWKS document served at `{base}/jwks`.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// How many assertions were signed since start (a metric, and the
    /// proof in tests that they are not signed per request).
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// The `kid` of the signing key.
    pub fn kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// The assertion for `session`: the cached one while more than a
    /// quarter of its lifetime is left, else a new one.
    pub fn for_session(&self, session: &Session) -> Option<HeaderValue> {
        let key = digest(session);
        let now = self.clock.now();
        if let Some(c) = self.cache.get(&key)
            && now < c.1.renew_at
        {
            return Some(c.1.value.clone());
        }
        let (value, exp) = self.mint(session, now)?;
        // Capped by the session (a bearer token's expiry): a new one would
        // not live longer, so it is kept until then.
        let renew_at = if exp < now + self.ttl {
            exp
        } else {
            exp.saturating_sub(self.ttl / 4)
        };
        self.cache.put(
            key,
            Cached {
                value: value.clone(),
                renew_at,
            },
        );
        Some(value)
    }

    fn mint(&self, session: &Session, now: u64) -> Option<(HeaderValue, u64)> {
        let claims = self.claims(session, now, crate::crypto::random_token(16));
        let exp = claims["exp"].as_u64()?;
        let token = self.sign(&claims)?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&token).ok().map(|v| (v, exp))
    }

    /// The assertion's claims (docs/configuration.md, `jwt`). It never
    /// outlives the session it speaks for.
    fn claims(&self, session: &Session, now: u64, jti: String) -> Value {
        let c = &session.claims;
        let exp = if c.exp > now {
            (now + self.ttl).min(c.exp)
        } else {
            now + self.ttl
        };
        let mut claims = json!({
            "iss": self.issuer,
            "sub": c.user_id(),
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": jti,
        });
        if let Some(aud) = &self.audience {
            claims["aud"] = aud.clone();
        }
        if let Some(sid) = session_id(session) {
            claims["sid"] = json!(crate::crypto::sha256_hex(sid.as_bytes())[..32]);
        }
        for (k, v) in [
            ("email", &c.email),
            ("name", &c.name),
            ("preferred_username", &c.preferred_username),
            ("provider", &c.provider),
        ] {
            if let Some(v) = v {
                claims[k] = json!(v);
            }
        }
        claims["groups"] = json!(c.groups);
        claims
    }

    /// A compact JWS (RFC 7515 §7.1) of `claims` with the signing key.
    fn sign(&self, claims: &Value) -> Option<String> {
        let key = &self.keys[0];
        let header = json!({"alg": self.alg.as_str(), "kid": key.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = key.sign(input.as_bytes())?;
        Some(format!("{input}.{}", b64(&sig)))
    }
}

/// What identifies the session: its store handle, else the token id.
fn session_id(s: &Session) -> Option<&str> {
    s.handle.as_deref().or(s.claims.jti.as_deref())
}

/// A digest of everything an assertion says about the session: a change
/// of identity (groups refreshed, another user) never reuses one.
fn digest(s: &Session) -> [u8; 32] {
    let c = &s.claims;
    let parts = [
        session_id(s),
        Some(c.user_id()),
        c.email.as_deref(),
        c.name.as_deref(),
        c.preferred_username.as_deref(),
        c.provider.as_deref(),
    ]
    .map(|p| p.unwrap_or(""));
    crate::crypto::digest_parts(&parts, &c.groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::oidc::jwks::Jwks;
    use crate::session::{Claims, Via};

    fn cfg(alg: Algorithm) -> JwtConfig {
        JwtConfig {
            header: HeaderName::from_static("x-auth-request-jwt"),
            algorithm: alg,
            audience: vec!["app".into()],
            ttl: Duration::from_secs(300),
            key_files: Vec::new(),
        }
    }

    fn session(sub: &str, jti: &str) -> Session {
        Session {
            claims: Claims {
                sub: Some(sub.into()),
                email: Some(format!("{sub}@example.com")),
                groups: vec!["staff".into()],
                jti: Some(jti.into()),
                ..Claims::default()
            },
            needs_refresh: false,
            handle: None,
            via: Via::Cookie,
        }
    }

    fn secrets(s: &[&str]) -> Vec<Secret> {
        s.iter().map(|s| Secret::new((*s).into())).collect()
    }

    /// Checks `token` with our own JWS verifier against the published JWKS.
    fn verify(a: &Assertions, token: &str) -> Value {
        let jwks = Jwks::parse(&serde_json::from_slice(&a.jwks()).unwrap()).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let header: Value = serde_json::from_slice(
            &crate::crypto::b64_decode(input.split('.').next().unwrap()).unwrap(),
        )
        .unwrap();
        jwks.verify(
            header["alg"].as_str().unwrap(),
            header["kid"].as_str(),
            input.as_bytes(),
            &crate::crypto::b64_decode(sig).unwrap(),
        )
        .unwrap();
        serde_json::from_slice(
            &crate::crypto::b64_decode(input.split('.').nth(1).unwrap()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn both_algorithms_sign_what_the_jwks_verifies() {
        for alg in [Algorithm::EdDsa, Algorithm::Es256] {
            let a = Assertions::new(
                &cfg(alg),
                &secrets(&["s1"]),
                "https://auth.example.com/",
                Clock::fixed(1000),
            )
            .unwrap();
            let v = a.for_session(&session("u1", "j1")).unwrap();
            let claims = verify(&a, v.to_str().unwrap());
            assert_eq!(claims["iss"], "https://auth.example.com");
            assert_eq!(claims["sub"], "u1");
            assert_eq!(claims["aud"], "app");
            assert_eq!(claims["exp"], 1300);
            assert_eq!(claims["groups"], json!(["staff"]));
            assert_eq!(claims["email"], "u1@example.com");
        }
    }

    #[test]
    fn derived_keys_agree_across_replicas_and_rotate_with_the_secrets() {
        let one = Assertions::new(
            &cfg(Algorithm::Es256),
            &secrets(&["old"]),
            "x",
            Clock::System,
        )
        .unwrap();
        let two = Assertions::new(
            &cfg(Algorithm::Es256),
            &secrets(&["old"]),
            "x",
            Clock::System,
        )
        .unwrap();
        assert_eq!(one.jwks(), two.jwks());
        let rotated = Assertions::new(
            &cfg(Algorithm::Es256),
            &secrets(&["new", "old"]),
            "x",
            Clock::System,
        )
        .unwrap();
        assert_ne!(rotated.kid(), one.kid());
        // The old key stays published: tokens it signed still verify.
        let old_token = one.for_session(&session("u", "j")).unwrap();
        verify(&rotated, old_token.to_str().unwrap());
        let ed = Assertions::new(
            &cfg(Algorithm::EdDsa),
            &secrets(&["old"]),
            "x",
            Clock::System,
        )
        .unwrap();
        assert_ne!(ed.kid(), one.kid());
    }

    #[test]
    fn minted_once_per_session_and_renewed_near_expiry() {
        let clock = Clock::fixed(1000);
        let a =
            Assertions::new(&cfg(Algorithm::EdDsa), &secrets(&["s"]), "x", clock.clone()).unwrap();
        let s = session("u1", "j1");
        let first = a.for_session(&s).unwrap();
        for _ in 0..100 {
            assert_eq!(a.for_session(&s).unwrap(), first);
        }
        assert_eq!(a.minted(), 1);
        // Another session, or the same one with other groups: its own token.
        let other = a.for_session(&session("u2", "j2")).unwrap();
        assert_ne!(other, first);
        let mut regrouped = s.clone();
        regrouped.claims.groups.push("admins".into());
        assert_ne!(a.for_session(&regrouped).unwrap(), first);
        assert_eq!(a.minted(), 3);
        // 224 s into a 300 s token: still reused; at 225 s (a quarter
        // left), a new one.
        clock.advance(224);
        assert_eq!(a.for_session(&s).unwrap(), first);
        clock.advance(1);
        let renewed = a.for_session(&s).unwrap();
        assert_ne!(renewed, first);
        assert_eq!(verify(&a, renewed.to_str().unwrap())["exp"], 1525);
    }

    #[test]
    fn an_assertion_never_outlives_its_session() {
        let clock = Clock::fixed(1000);
        let a =
            Assertions::new(&cfg(Algorithm::EdDsa), &secrets(&["s"]), "x", clock.clone()).unwrap();
        let mut s = session("u1", "j1");
        s.claims.exp = 1100; // a bearer token with 100 s left
        let v = a.for_session(&s).unwrap();
        assert_eq!(verify(&a, v.to_str().unwrap())["exp"], 1100);
        clock.advance(99);
        assert_eq!(a.for_session(&s).unwrap(), v, "kept until the session ends");
        assert_eq!(a.minted(), 1);
    }

    #[test]
    fn key_files_must_match_the_algorithm() {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let mut c = cfg(Algorithm::EdDsa);
        c.key_files = vec![KeyFile {
            path: "k.pem".into(),
            pkcs8: Arc::from(doc.as_ref()),
        }];
        assert!(Assertions::new(&c, &[], "x", Clock::System).is_ok());
        c.algorithm = Algorithm::Es256;
        let e = Assertions::new(&c, &[], "x", Clock::System).err().unwrap();
        assert!(e.contains("k.pem") && e.contains("P-256"), "{e}");
    }

    /// tests/vectors/jwt/assertion.json: keys derived from a fixed secret
    /// (replicas and versions must agree), and assertions they signed.
    #[test]
    fn assertion_golden_vectors_still_hold() {
        let v: Value =
            serde_json::from_str(include_str!("../tests/vectors/jwt/assertion.json")).unwrap();
        let secret = v["secret"].as_str().unwrap();
        for case in v["cases"].as_array().unwrap() {
            let alg = Algorithm::parse(case["algorithm"].as_str().unwrap()).unwrap();
            let a = Assertions::new(
                &cfg(alg),
                &secrets(&[secret]),
                v["issuer"].as_str().unwrap(),
                Clock::System,
            )
            .unwrap();
            let jwks: Value = serde_json::from_slice(&a.jwks()).unwrap();
            assert_eq!(jwks, case["jwks"], "{alg:?}: the derived key changed");
            let token = case["token"].as_str().unwrap();
            assert_eq!(verify(&a, token), case["claims"], "{alg:?}");
        }
    }

    /// Prints the vectors file (run with `--ignored` after a deliberate change).
    #[test]
    #[ignore]
    fn print_assertion_vectors() {
        let secret = "golden-vector-secret-0123456789-abcdefghijklmnop";
        let issuer = "https://auth.example.com";
        let mut s = session("alice-sub", "session-jti-1");
        s.claims.name = Some("Alice".into());
        let cases: Vec<Value> = [Algorithm::EdDsa, Algorithm::Es256]
            .into_iter()
            .map(|alg| {
                let a = Assertions::new(&cfg(alg), &secrets(&[secret]), issuer, Clock::System).unwrap();
                let claims = a.claims(&s, 1_800_000_000, "golden-jti".into());
                let token = a.sign(&claims).unwrap();
                json!({"algorithm": alg.as_str(), "jwks": serde_json::from_slice::<Value>(&a.jwks()).unwrap(), "token": token, "claims": claims})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"secret": secret, "issuer": issuer, "audience": "app", "ttl": 300, "cases": cases})).unwrap());
    }
}
