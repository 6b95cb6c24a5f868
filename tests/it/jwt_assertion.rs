//! The signed JWT assertion (`jwt:`): verified by an independent
//! implementation (PyJWT + cryptography, tests/fixtures/jwt_verify.py)
//! against the JWKS that `{base}/jwks` serves; minted once per session;
//! the client's copy of the header is always stripped.

use std::io::Write;
use std::process::{Command, Stdio};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// Runs the PyJWT verifier: `Ok(claims)` or `Err(its refusal)`.
fn pyjwt(jwks: &Value, token: &str, issuer: &str, audience: Option<&str>) -> Result<Value, String> {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/fixtures/jwt_verify.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tests/run installs the Python venv");
    let input = json!({"jwks": jwks, "token": token, "issuer": issuer, "audience": audience});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn header_of(jwt: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap()
}

async fn setup(jwt_block: &str) -> (Upstream, Portcullis) {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra(jwt_block)
            .extra("access:\n  public_paths: [/public/*]\n"),
    )
    .await;
    (up, pc)
}

async fn jwks(pc: &Portcullis) -> Value {
    let r = Browser::api().get(&pc.url("/auth/jwks")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/jwk-set+json"));
    r.json()
}

#[tokio::test]
async fn the_assertion_verifies_with_pyjwt_against_the_served_jwks_for_both_algorithms() {
    for alg in ["EdDSA", "ES256"] {
        let (up, pc) = setup(&format!(
            "jwt:\n  algorithm: {alg}\n  audience: https://app.example.com\n  ttl: 2m\n"
        ))
        .await;
        let mut b = Browser::new();
        b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
        assert_eq!(b.get(&pc.url("/dash")).await.status, StatusCode::OK);
        let token = up.last().header("x-auth-request-jwt").unwrap().to_string();
        let keys = jwks(&pc).await;
        assert!(
            keys.to_string().find("\"d\"").is_none(),
            "private key published"
        );
        let issuer = pc.url("");
        let issuer = issuer.trim_end_matches('/');
        let claims = pyjwt(&keys, &token, issuer, Some("https://app.example.com"))
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(header_of(&token)["alg"], alg);
        assert_eq!(header_of(&token)["kid"], keys["keys"][0]["kid"]);
        assert_eq!(claims["email"], ALICE.0);
        assert_eq!(claims["sub"], ALICE.0);
        assert_eq!(claims["name"], ALICE.1);
        assert_eq!(claims["groups"], json!(["admins", "staff"]));
        assert_eq!(claims["provider"], "credentials");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            120
        );
        assert_eq!(claims["sid"].as_str().unwrap().len(), 32);

        // The independent verifier refuses what must be refused.
        assert!(
            pyjwt(
                &keys,
                &token,
                "https://evil.example.com",
                Some("https://app.example.com")
            )
            .is_err()
        );
        assert!(pyjwt(&keys, &token, issuer, Some("https://other.example.com")).is_err());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(
                &json!({"sub": "root", "iss": issuer, "iat": 1, "exp": 4_000_000_000u64}),
            )
            .unwrap(),
        );
        parts[1] = &forged;
        assert!(
            pyjwt(&keys, &parts.join("."), issuer, None).is_err(),
            "{alg}: edited claims verified"
        );

        // The same header from the forward-auth endpoint.
        let r = b
            .get_with(
                &pc.url("/auth/auth-request"),
                &[
                    ("x-original-url", "https://app.example.com/x"),
                    ("x-original-method", "GET"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-auth-request-jwt"), Some(token.as_str()));
    }
}

#[tokio::test]
async fn the_assertion_is_minted_once_per_session_not_per_request() {
    let (up, pc) = setup("jwt: {}\n").await;
    let mut alice = Browser::new();
    alice.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    let mut seen = Vec::new();
    for i in 0..20 {
        assert_eq!(
            alice.get(&pc.url(&format!("/p/{i}"))).await.status,
            StatusCode::OK
        );
        seen.push(up.last().header("x-auth-request-jwt").unwrap().to_string());
    }
    assert!(
        seen.iter().all(|t| *t == seen[0]),
        "a new assertion per request"
    );
    let mut bob = Browser::new();
    bob.sign_in(&pc.url(""), BOB.0, PASSWORD, "/").await;
    bob.get(&pc.url("/p")).await;
    let bobs = up.last().header("x-auth-request-jwt").unwrap().to_string();
    assert_ne!(bobs, seen[0]);
    // Alice's second session (another sign-in) has its own assertion.
    let mut alice2 = Browser::new();
    alice2.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    alice2.get(&pc.url("/p")).await;
    let second = up.last().header("x-auth-request-jwt").unwrap().to_string();
    assert_ne!(second, seen[0]);
    let keys = jwks(&pc).await;
    let issuer = pc.url("");
    let a = pyjwt(&keys, &seen[0], issuer.trim_end_matches('/'), None).unwrap();
    let b = pyjwt(&keys, &second, issuer.trim_end_matches('/'), None).unwrap();
    assert_ne!(a["sid"], b["sid"]);
    assert_eq!(a["sub"], b["sub"]);
}

#[tokio::test]
async fn a_client_can_never_send_its_own_assertion() {
    let (up, pc) = setup("jwt:\n  header: X-Identity-Jwt\n").await;
    let fake = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.";
    let spoof = [
        ("x-identity-jwt", fake),
        ("X-Auth-Request-Jwt", fake),
        ("x_identity_jwt", fake),
    ];
    // A public path: no identity, and none of the client's.
    let r = Browser::api().get_with(&pc.url("/public/a"), &spoof).await;
    assert_eq!(r.status, StatusCode::OK);
    let got = up.last();
    for (name, _) in spoof {
        assert_eq!(got.header_count(name), 0, "{name} reached the upstream");
    }
    // Signed in: ours only, under the configured name.
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    b.get_with(&pc.url("/app"), &spoof).await;
    let got = up.last();
    assert_eq!(got.header_count("x-identity-jwt"), 1);
    assert_ne!(got.header("x-identity-jwt"), Some(fake));
    assert_eq!(got.header_count("x-auth-request-jwt"), 0);
    assert_eq!(got.header_count("x_identity_jwt"), 0);
}

fn pem(der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn keys_from_files_rotate_by_kid_and_derived_keys_agree_across_replicas() {
    let dir = TempDir::new("jwt-keys");
    let rng = SystemRandom::new();
    let new = dir.write(
        "new.pem",
        &pem(
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref(),
        ),
    );
    let old = dir.write(
        "old.pem",
        &pem(
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref(),
        ),
    );
    let (up, pc) = setup(&format!(
        "jwt:\n  algorithm: ES256\n  key_files: [{}, {}]\n",
        new.display(),
        old.display()
    ))
    .await;
    let keys = jwks(&pc).await;
    let list = keys["keys"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_ne!(list[0]["kid"], list[1]["kid"]);
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    b.get(&pc.url("/x")).await;
    let token = up.last().header("x-auth-request-jwt").unwrap().to_string();
    assert_eq!(
        header_of(&token)["kid"],
        list[0]["kid"],
        "the first file signs"
    );
    let issuer = pc.url("");
    pyjwt(&keys, &token, issuer.trim_end_matches('/'), None).unwrap();
    // Verified against the old key alone, it fails: the kid matters.
    let only_old = json!({"keys": [list[1].clone()]});
    assert!(pyjwt(&only_old, &token, issuer.trim_end_matches('/'), None).is_err());

    // Derived keys: two replicas with the same secrets publish the same
    // keys; rotating the secrets (new first, old kept) keeps the old key.
    let (_u1, r1) = setup("jwt: {}\n").await;
    let (_u2, r2) = setup("jwt: {}\n").await;
    assert_eq!(jwks(&r1).await, jwks(&r2).await);
    let up3 = Upstream::start().await;
    let rotated = Portcullis::start(
        Conf::default()
            .upstream(&up3.url())
            .secrets(&["it-new-secret-0123456789-abcdefghij-QRSTU", SECRET])
            .extra("jwt: {}\n"),
    )
    .await;
    let before = jwks(&r1).await;
    let after = jwks(&rotated).await;
    assert_eq!(after["keys"].as_array().unwrap().len(), 2);
    assert_eq!(after["keys"][1], before["keys"][0]);
    assert_ne!(after["keys"][0]["kid"], before["keys"][0]["kid"]);
}

#[tokio::test]
async fn jwks_is_not_found_without_the_jwt_block() {
    let pc = Portcullis::start(Conf::default()).await;
    let r = Browser::api().get(&pc.url("/auth/jwks")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[test]
fn a_key_file_of_the_wrong_type_or_a_bad_jwt_block_stops_the_check() {
    let dir = TempDir::new("jwt-check");
    let ed = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = dir.write("ed.pem", &pem(ed.as_ref()));
    let cfg = dir.write(
        "c.yaml",
        &format!(
            "public_url: https://auth.example.com\nsecrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - type: credentials\n    users: []\njwt:\n  algorithm: ES256\n  key_files: [{}, missing.pem]\n  ttl: 2d\n  header: \"bad header\"\n",
            key.display()
        ),
    );
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for k in [
        "jwt.key_files[0]",
        "jwt.key_files[1]",
        "jwt.ttl",
        "jwt.header",
    ] {
        assert!(err.contains(k), "{k} not named: {err}");
    }
    assert!(err.contains("P-256"), "{err}");
    let bad_alg = dir.write(
        "a.yaml",
        "public_url: https://auth.example.com\nsecrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - type: credentials\n    users: []\njwt:\n  algorithm: HS256\n",
    );
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&bad_alg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("jwt.algorithm") && err.contains("EdDSA"),
        "{err}"
    );
}
