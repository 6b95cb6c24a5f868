//! JSON Web Key sets and JWS signature checks (RFC 7515, 7517, 7518),
//! with aws-lc-rs: RSA (PKCS#1 v1.5 and PSS), ECDSA P-256/P-384, Ed25519.
//! `none` and the HMAC algorithms are never accepted for ID tokens.

use aws_lc_rs::signature::{
    self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};
use serde::Deserialize;

use crate::crypto::b64_decode;

/// The asymmetric algorithms we verify.
pub const SUPPORTED: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

#[derive(Debug, Clone, Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Debug, Clone)]
enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point, with its curve name.
    Ec {
        crv: String,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    alg: Option<String>,
    key: KeyMaterial,
}

/// A provider's signing keys.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// Reads a key set; keys we cannot use (encryption keys, unknown types)
    /// are skipped, not fatal.
    pub fn parse(v: &serde_json::Value) -> Result<Self, String> {
        let set: RawSet =
            serde_json::from_value(v.clone()).map_err(|e| format!("not a JWK set: {e}"))?;
        let keys = set
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<RawJwk>(k).ok())
            .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
            .filter_map(|k| {
                let key = match k.kty.as_str() {
                    "RSA" => KeyMaterial::Rsa {
                        n: b64_decode(k.n.as_deref()?)?,
                        e: b64_decode(k.e.as_deref()?)?,
                    },
                    "EC" => {
                        let (x, y) = (b64_decode(k.x.as_deref()?)?, b64_decode(k.y.as_deref()?)?);
                        let mut point = vec![4u8];
                        point.extend_from_slice(&x);
                        point.extend_from_slice(&y);
                        KeyMaterial::Ec {
                            crv: k.crv.clone()?,
                            point,
                        }
                    }
                    "OKP" if k.crv.as_deref() == Some("Ed25519") => {
                        KeyMaterial::Ed25519(b64_decode(k.x.as_deref()?)?)
                    }
                    _ => return None,
                };
                Some(Jwk {
                    kid: k.kid,
                    alg: k.alg,
                    key,
                })
            })
            .collect();
        Ok(Jwks { keys })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `sig` over `signing_input` with the key named `kid` (or, with
    /// no `kid`, any key that fits `alg`).
    pub fn verify(
        &self,
        alg: &str,
        kid: Option<&str>,
        signing_input: &[u8],
        sig: &[u8],
    ) -> Result<(), String> {
        let candidates: Vec<&Jwk> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => self.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(format!("no key with kid {kid:?}"));
        }
        for k in candidates {
            if k.alg.as_deref().is_some_and(|a| a != alg) {
                continue;
            }
            if verify_with(&k.key, alg, signing_input, sig)? {
                return Ok(());
            }
        }
        Err("the signature does not verify".into())
    }
}

/// `Ok(true)` verified, `Ok(false)` this key does not fit or does not verify.
fn verify_with(key: &KeyMaterial, alg: &str, msg: &[u8], sig: &[u8]) -> Result<bool, String> {
    let rsa: Option<&'static signature::RsaParameters> = match alg {
        "RS256" => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => Some(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => Some(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => Some(&signature::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    Ok(match (key, rsa) {
        (KeyMaterial::Rsa { n, e }, Some(params)) => RsaPublicKeyComponents { n, e }
            .verify(params, msg, sig)
            .is_ok(),
        (KeyMaterial::Ec { crv, point }, None) => {
            let algo: &'static dyn VerificationAlgorithm = match (alg, crv.as_str()) {
                ("ES256", "P-256") => &signature::ECDSA_P256_SHA256_FIXED,
                ("ES384", "P-384") => &signature::ECDSA_P384_SHA384_FIXED,
                _ => return Ok(false),
            };
            UnparsedPublicKey::new(algo, point).verify(msg, sig).is_ok()
        }
        (KeyMaterial::Ed25519(x), None) if alg == "EdDSA" => {
            UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(msg, sig)
                .is_ok()
        }
        _ => false,
    })
}
