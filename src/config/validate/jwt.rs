//! The `jwt:` block: header name, algorithm, audience, lifetime, and the
//! private key files (read and checked here, so a bad key stops the start
//! with the key's name and the fix).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

use super::Collector;
use crate::config::raw::RawJwt;
use crate::jwt::{Algorithm, JwtConfig, KeyFile};

/// Longest assertion lifetime: it cannot be revoked, keep it short.
const MAX_TTL: Duration = Duration::from_secs(3600);

pub(super) fn build(
    c: &mut Collector<'_>,
    raw: &RawJwt,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Option<JwtConfig> {
    let before = c.problems.len();
    let header = c.header("jwt.header", raw.header.as_deref(), "x-auth-request-jwt");
    let algorithm = match raw.algorithm.as_deref() {
        None => Algorithm::EdDsa,
        Some(a) => Algorithm::parse(a).unwrap_or_else(|| {
            c.bad(
                "jwt.algorithm",
                format!("unknown algorithm {a:?}"),
                "use EdDSA (Ed25519, the default) or ES256 (P-256)",
            );
            Algorithm::EdDsa
        }),
    };
    let ttl = c.duration("jwt.ttl", raw.ttl.as_deref(), Duration::from_secs(300));
    if ttl < Duration::from_secs(10) || ttl > MAX_TTL {
        c.bad(
            "jwt.ttl",
            format!("{}s is out of range", ttl.as_secs()),
            "use between 10s and 1h (default 5m): an assertion cannot be revoked",
        );
    }
    if raw.audience.iter().any(|a| a.trim().is_empty()) {
        c.bad(
            "jwt.audience",
            "an empty audience",
            "name the upstream, like https://app.example.com",
        );
    }
    let mut key_files = Vec::new();
    for (i, f) in raw.key_files.iter().enumerate() {
        let path = resolve(f);
        match PrivatePkcs8KeyDer::from_pem_file(&path) {
            Ok(der) => {
                let kf = KeyFile {
                    path: path.clone(),
                    pkcs8: Arc::from(der.secret_pkcs8_der()),
                };
                // Parse now: a key of the wrong type is a config error.
                let probe = JwtConfig {
                    header: header.clone(),
                    algorithm,
                    audience: Vec::new(),
                    ttl,
                    key_files: vec![kf.clone()],
                };
                match crate::jwt::Assertions::new(&probe, &[], "", crate::clock::Clock::System) {
                    Ok(_) => key_files.push(kf),
                    Err(e) => c.bad(
                        &format!("jwt.key_files[{i}]"),
                        e,
                        format!(
                            "give a {} key, e.g. `openssl genpkey -algorithm {}`",
                            algorithm.as_str(),
                            match algorithm {
                                Algorithm::EdDsa => "ed25519",
                                Algorithm::Es256 => "EC -pkeyopt ec_paramgen_curve:P-256",
                            }
                        ),
                    ),
                }
            }
            Err(e) => c.bad(
                &format!("jwt.key_files[{i}]"),
                format!(
                    "cannot read a PKCS#8 PEM private key from {}: {e}",
                    path.display()
                ),
                "point it at a file with a -----BEGIN PRIVATE KEY----- block",
            ),
        }
    }
    if c.problems.len() > before {
        return None;
    }
    Some(JwtConfig {
        header,
        algorithm,
        audience: raw.audience.clone(),
        ttl,
        key_files,
    })
}
