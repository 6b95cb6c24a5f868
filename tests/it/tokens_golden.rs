//! Golden biscuit vectors (tests/data/biscuit, see its README): fixed
//! root keys, tokens minted once, and the decision each must get. The
//! replay fails if a change breaks compatibility with tokens already
//! handed out (a fact renamed, the key derivation or the ids changed).
//!
//! `cargo nextest run -E 'test(regenerate_golden_vectors)' --run-ignored
//! only` rewrites `samples.json` (then review the diff, and say why in the
//! commit: tokens in the wild stop working).

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use biscuit_auth::builder::{Algorithm, date, fact, string};
use biscuit_auth::{Biscuit, PublicKey};
use portcullis::crypto::Secret;
use portcullis::session::{Claims, Session, Via};
use portcullis::tokens::api::{self, RequestFacts};
use portcullis::tokens::identity;
use portcullis::tokens::keys::{self, KeyRing, KeySpec};
use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z: when the vectors are replayed (unless a case
/// says otherwise).
const NOW: u64 = 1_767_225_600;
/// 2030-01-01T00:00:00Z: when the vectors' tokens expire.
const EXP: u64 = 1_893_456_000;
/// The secret of the derived-key vector.
const DERIVE_SECRET: &str = "golden-secret-0123456789-abcdefghijklmnop";

fn dir() -> PathBuf {
    crate::support::repo_root().join("tests/data/biscuit")
}

fn spec(i: u32) -> KeySpec {
    let pem = std::fs::read_to_string(dir().join(format!("root-{i}.pem"))).unwrap();
    let private = keys::load_private_pem(&pem).unwrap();
    KeySpec {
        id: i,
        public: private.public(),
        private: Some(private),
    }
}

/// Key 0 signs; key 1 verifies too.
fn ring() -> KeyRing {
    KeyRing::new(&[spec(0), spec(1)], &[]).unwrap()
}

fn req<'a>(c: &'a Value) -> RequestFacts<'a> {
    RequestFacts {
        method: c["method"].as_str().unwrap(),
        host: c["host"].as_str(),
        path: c["path"].as_str().unwrap(),
        now: c["now"].as_u64().unwrap_or(NOW),
    }
}

/// The decision Portcullis makes on a token for a request.
fn decide(ring: &KeyRing, token: &str, c: &Value, revoked: &[String]) -> Value {
    let t = match api::parse(ring, token) {
        Ok(t) => t,
        Err(_) => return json!({ "decision": "deny", "stage": "signature" }),
    };
    if api::revocation_ids(&t)
        .iter()
        .any(|id| revoked.contains(id))
    {
        return json!({ "decision": "deny", "stage": "revoked" });
    }
    match api::authorize(&t, &req(c)) {
        Ok(s) => json!({ "decision": "allow", "user": s.claims.sub, "groups": s.claims.groups }),
        Err(api::ApiTokenError::NotApi) => json!({ "decision": "deny", "stage": "not_api" }),
        Err(_) => json!({ "decision": "deny", "stage": "checks" }),
    }
}

fn request(method: &str, path: &str) -> Value {
    json!({ "method": method, "host": "app.example.com", "path": path })
}

#[test]
#[ignore = "rewrites tests/data/biscuit/samples.json"]
fn regenerate_golden_vectors() {
    let ring = ring();
    let groups = vec!["deployers".to_string()];
    let plain = api::mint(&ring, "ci-bot", &groups, &[], EXP)
        .unwrap()
        .to_base64()
        .unwrap();
    let get_only = api::mint(
        &ring,
        "ci-bot",
        &groups,
        &["check if method(\"GET\")".into()],
        EXP,
    )
    .unwrap()
    .to_base64()
    .unwrap();
    let narrowed = api::attenuate(&plain, &["check if path(\"/only\")".into()]).unwrap();
    let escalated =
        api::attenuate(&narrowed, &["user(\"root\"); group(\"admins\");".into()]).unwrap();
    let session = Session {
        claims: Claims {
            sub: Some("alice@example.com".into()),
            email: Some("alice@example.com".into()),
            name: Some("Alice".into()),
            groups: vec!["admins".into()],
            provider: Some("credentials".into()),
            jti: Some("session-1".into()),
            ..Claims::default()
        },
        needs_refresh: false,
        handle: None,
        via: Via::Cookie,
    };
    let identity_token = identity::mint(&ring, &session, EXP)
        .unwrap()
        .to_base64()
        .unwrap();
    // Signed by key 1 but naming key 0; and naming a key nobody has.
    let key1 = spec(1);
    let kp1 = biscuit_auth::KeyPair::from(key1.private.as_ref().unwrap());
    let wrong_id = Biscuit::builder()
        .root_key_id(0)
        .fact(fact("kind", &[string("api")]))
        .unwrap()
        .fact(fact("user", &[string("ci-bot")]))
        .unwrap()
        .build(&kp1)
        .unwrap()
        .to_base64()
        .unwrap();
    let unknown_id = Biscuit::builder()
        .root_key_id(7)
        .fact(fact("kind", &[string("api")]))
        .unwrap()
        .fact(fact("user", &[string("ci-bot")]))
        .unwrap()
        .build(&kp1)
        .unwrap()
        .to_base64()
        .unwrap();
    let no_expiry_check = Biscuit::builder()
        .root_key_id(1)
        .fact(fact("kind", &[string("api")]))
        .unwrap()
        .fact(fact("user", &[string("legacy")]))
        .unwrap()
        .code_with_params(
            "check if time($t), $t <= {exp};",
            [(
                "exp".to_string(),
                date(&(UNIX_EPOCH + Duration::from_secs(EXP))),
            )]
            .into_iter()
            .collect(),
            Default::default(),
        )
        .unwrap()
        .build(&kp1)
        .unwrap()
        .to_base64()
        .unwrap();
    let revoked_token = api::mint(&ring, "revoked-bot", &[], &[], EXP).unwrap();
    let revoked = api::revocation_ids(&revoked_token);
    let revoked_narrowed = revoked_token
        .append(
            biscuit_auth::BlockBuilder::new()
                .code("check if method(\"GET\");")
                .unwrap(),
        )
        .unwrap()
        .to_base64()
        .unwrap();
    let revoked_token = revoked_token.to_base64().unwrap();

    let mut cases = Vec::new();
    let mut case = |name: &str, token: &str, r: Value| {
        cases.push(json!({ "name": name, "token": token, "request": r }));
    };
    case("api token, GET", &plain, request("GET", "/x"));
    case(
        "api token, after expiry",
        &plain,
        json!({ "method": "GET", "host": "app.example.com", "path": "/x", "now": EXP + 1 }),
    );
    case("GET-only token, GET", &get_only, request("GET", "/x"));
    case("GET-only token, POST", &get_only, request("POST", "/x"));
    case(
        "attenuated to /only, /only",
        &narrowed,
        request("GET", "/only"),
    );
    case("attenuated to /only, /x", &narrowed, request("GET", "/x"));
    case(
        "holder block claiming root, /only",
        &escalated,
        request("GET", "/only"),
    );
    case(
        "identity token as API token",
        &identity_token,
        request("GET", "/x"),
    );
    case(
        "signed by key 1, naming key 0",
        &wrong_id,
        request("GET", "/x"),
    );
    case("naming unknown key 7", &unknown_id, request("GET", "/x"));
    case(
        "signed by key 1 (rotation)",
        &no_expiry_check,
        request("GET", "/x"),
    );
    case("revoked token", &revoked_token, request("GET", "/x"));
    case(
        "attenuation of a revoked token",
        &revoked_narrowed,
        request("GET", "/x"),
    );
    for c in &mut cases {
        let expected = decide(&ring, c["token"].as_str().unwrap(), &c["request"], &revoked);
        c["expected"] = expected;
    }
    let derived = keys::derive(&Secret::new(DERIVE_SECRET.into()));
    let doc = json!({
        "now": NOW,
        "keys": [
            { "id": 0, "private_key_file": "root-0.pem", "public_key": spec(0).public.to_bytes_hex() },
            { "id": 1, "private_key_file": "root-1.pem", "public_key": spec(1).public.to_bytes_hex() },
        ],
        "derived_key": { "secret": DERIVE_SECRET, "id": derived.id, "public_key": derived.public.to_bytes_hex() },
        "revoked": revoked,
        "identity_token": {
            "token": identity_token,
            "facts": { "kind": ["identity"], "user": ["alice@example.com"], "email": ["alice@example.com"],
                       "name": ["Alice"], "group": ["admins"], "provider": ["credentials"], "via": ["cookie"] },
            "valid_until": EXP,
        },
        "cases": cases,
    });
    std::fs::write(
        dir().join("samples.json"),
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .unwrap();
}

fn samples() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("samples.json")).unwrap()).unwrap()
}

#[test]
fn golden_token_vectors_replay_with_the_recorded_decisions() {
    let doc = samples();
    let ring = ring();
    let revoked: Vec<String> = serde_json::from_value(doc["revoked"].clone()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 13);
    for c in cases {
        let got = decide(&ring, c["token"].as_str().unwrap(), &c["request"], &revoked);
        assert_eq!(got, c["expected"], "{}", c["name"]);
    }
    // The cases the issue names, spelled out (not only "as recorded").
    let by_name = |n: &str| &cases.iter().find(|c| c["name"] == n).unwrap()["expected"]["decision"];
    assert_eq!(by_name("api token, GET"), "allow");
    // A holder's block cannot make itself another user or join a group.
    let esc = &cases
        .iter()
        .find(|c| c["name"] == "holder block claiming root, /only")
        .unwrap()["expected"];
    assert_eq!(
        *esc,
        json!({ "decision": "allow", "user": "ci-bot", "groups": ["deployers"] })
    );
    for deny in [
        "api token, after expiry",
        "GET-only token, POST",
        "attenuated to /only, /x",
        "identity token as API token",
        "signed by key 1, naming key 0",
        "naming unknown key 7",
        "revoked token",
        "attenuation of a revoked token",
    ] {
        assert_eq!(by_name(deny), "deny", "{deny}");
    }
}

#[test]
fn golden_keys_and_key_derivation_are_stable() {
    let doc = samples();
    for k in doc["keys"].as_array().unwrap() {
        let id = k["id"].as_u64().unwrap() as u32;
        assert_eq!(
            spec(id).public.to_bytes_hex(),
            k["public_key"].as_str().unwrap()
        );
        let on_disk = std::fs::read_to_string(dir().join(format!("root-{id}.pub"))).unwrap();
        assert_eq!(on_disk.trim(), k["public_key"].as_str().unwrap());
    }
    let d = &doc["derived_key"];
    let derived = keys::derive(&Secret::new(d["secret"].as_str().unwrap().into()));
    assert_eq!(
        derived.public.to_bytes_hex(),
        d["public_key"].as_str().unwrap()
    );
    assert_eq!(u64::from(derived.id), d["id"].as_u64().unwrap());
}

#[test]
fn golden_identity_token_carries_the_recorded_facts() {
    let doc = samples();
    let it = &doc["identity_token"];
    let public = PublicKey::from_bytes_hex(
        doc["keys"][0]["public_key"].as_str().unwrap(),
        Algorithm::Ed25519,
    )
    .unwrap();
    let t = Biscuit::from_base64(it["token"].as_str().unwrap(), public).unwrap();
    let at = |secs: u64| {
        biscuit_auth::AuthorizerBuilder::new()
            .code_with_params(
                "time({now}); allow if true;",
                [(
                    "now".to_string(),
                    date(&(UNIX_EPOCH + Duration::from_secs(secs))),
                )]
                .into_iter()
                .collect(),
                Default::default(),
            )
            .unwrap()
            .build(&t)
            .unwrap()
    };
    let exp = it["valid_until"].as_u64().unwrap();
    assert!(at(exp).authorize().is_ok());
    assert!(at(exp + 1).authorize().is_err());
    let mut a = at(NOW);
    for (name, want) in it["facts"].as_object().unwrap() {
        let rows: Vec<(String,)> = a.query(format!("v($x) <- {name}($x)").as_str()).unwrap();
        let got: Vec<String> = rows.into_iter().map(|(s,)| s).collect();
        assert_eq!(json!(got), *want, "{name}");
    }
}
