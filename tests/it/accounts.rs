//! Users and linked accounts in Redis (`database` sessions), against the
//! real `oidc-provider` registered twice (two providers, same people):
//! a first sign-in creates one user, the same e-mail through another
//! provider is `OAuthAccountNotLinked` unless that provider allows
//! joining by e-mail, a signed-in user links another account explicitly,
//! an account cannot be linked to two users, and parallel first sign-ins
//! make one user.

use http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::idp::{CLIENT_ID, CLIENT_SECRET, Idp, idp_login};
use crate::support::redis::{RedisOpts, RedisServer};
use crate::support::*;

const SECOND_ID: &str = "portcullis-second";

struct Setup {
    _idp: Idp,
    redis: RedisServer,
    pc: Portcullis,
}

/// One IdP, two clients: providers `corp` and `corp2` (`second_extra`
/// goes into corp2's entry).
async fn setup(second_extra: &str) -> Setup {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut cfg = Idp::default_config(&format!("{origin}/auth/callback/corp"), &[]);
    let mut second = cfg["clients"][0].clone();
    second["client_id"] = json!(SECOND_ID);
    second["redirect_uris"] = json!([format!("{origin}/auth/callback/corp2")]);
    cfg["clients"].as_array_mut().unwrap().push(second);
    let idp = Idp::start(cfg).await;
    let redis = RedisServer::start(RedisOpts::default());
    let entry = |id: &str, client: &str, extra: &str| {
        format!(
            "  - type: oidc\n    id: {id}\n    name: {id}\n    issuer: {}\n    client_id: {client}\n    client_secret: {CLIENT_SECRET}\n    scopes: [openid, email, profile, groups]\n{extra}",
            idp.issuer
        )
    };
    let conf = Conf::default()
        .provider(&entry("corp", CLIENT_ID, ""))
        .provider(&entry("corp2", SECOND_ID, second_extra))
        .extra(&format!(
            "session:\n  strategy: database\nstore:\n  redis_url: \"{}\"\n  key_prefix: \"it:\"\n",
            redis.url()
        ));
    let pc = Portcullis::start_at(conf, &[], port).await;
    pc.wait_readyz(StatusCode::OK).await;
    Setup {
        _idp: idp,
        redis,
        pc,
    }
}

/// Signs in with `provider` as `login`; the callback's answer.
async fn sign_in(s: &Setup, b: &mut Browser, provider: &str, login: &str) -> Resp {
    // A fresh session at the IdP (its cookies share the jar with ours).
    b.jar.retain(|name, _| name.starts_with("authjs."));
    let page = b.get(&s.pc.url("/auth/signin?callbackUrl=%2Fhome")).await;
    let token = page.hidden("csrfToken").unwrap();
    let r = b
        .post_form(
            &s.pc.url(&format!("/auth/signin/{provider}")),
            &[("csrfToken", &token), ("callbackUrl", "/home")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    let back = idp_login(b, r.location(), login).await;
    assert!(
        back.location()
            .contains(&format!("/auth/callback/{provider}?")),
        "{}",
        back.location()
    );
    b.get(back.location()).await
}

/// The user id the account index names for (provider, sub).
fn user_of(s: &Setup, provider: &str, sub: &str) -> Option<String> {
    let h: String = Sha256::digest(format!("{provider}\0{sub}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let v = s.redis.cmd(&["GET", &format!("it:{{users}}a:{h}")]).ok()?;
    (!v.is_empty()).then_some(v)
}

fn user_records(s: &Setup) -> usize {
    s.redis.keys("it:{users}u:*").len()
}

#[tokio::test]
async fn the_same_email_through_another_provider_is_not_linked() {
    let s = setup("").await;
    let mut first = Browser::new();
    let r = sign_in(&s, &mut first, "corp", "alice").await;
    assert_eq!(r.location(), "/home", "{}", s.pc.logs());
    let uid = user_of(&s, "corp", "alice-sub")
        .unwrap_or_else(|| panic!("{}\n{}", s.redis.dump_all(), s.pc.logs()));
    assert_eq!(user_records(&s), 1);
    // Nothing in Redis names her e-mail or subject in the clear.
    let dump = s.redis.dump_all();
    assert!(!dump.contains("alice@example.com") && !dump.contains("alice-sub"));

    let mut other = Browser::new();
    let r = sign_in(&s, &mut other, "corp2", "alice").await;
    assert_eq!(
        r.location(),
        "/auth/error?error=OAuthAccountNotLinked",
        "{}",
        s.pc.logs()
    );
    assert!(other.jar.get("authjs.session-token").cloned().is_none());
    assert_eq!(user_of(&s, "corp2", "alice-sub"), None);
    assert_eq!(user_records(&s), 1);
    let page = other.get(&s.pc.url(r.location())).await;
    assert!(page.body.contains("OAuthAccountNotLinked"), "{}", page.body);
    // Her first provider still works, as the same user.
    let r = sign_in(&s, &mut Browser::new(), "corp", "alice").await;
    assert_eq!(r.location(), "/home");
    assert_eq!(user_of(&s, "corp", "alice-sub"), Some(uid));
    // Someone else through corp2 is a new user.
    let r = sign_in(&s, &mut Browser::new(), "corp2", "bob").await;
    assert_eq!(r.location(), "/home");
    assert_eq!(user_records(&s), 2);
}

#[tokio::test]
async fn allow_dangerous_email_account_linking_joins_the_existing_user() {
    let s = setup("    allow_dangerous_email_account_linking: true\n").await;
    sign_in(&s, &mut Browser::new(), "corp", "alice").await;
    let r = sign_in(&s, &mut Browser::new(), "corp2", "alice").await;
    assert_eq!(r.location(), "/home", "{}", s.pc.logs());
    assert_eq!(
        user_of(&s, "corp2", "alice-sub"),
        user_of(&s, "corp", "alice-sub")
    );
    assert_eq!(user_records(&s), 1);
}

#[tokio::test]
async fn a_signed_in_user_links_another_account_and_cannot_take_someone_elses() {
    let s = setup("").await;
    // Bob owns his corp2 account.
    sign_in(&s, &mut Browser::new(), "corp2", "bob").await;
    let bobs = user_of(&s, "corp2", "bob-sub").unwrap();

    let mut b = Browser::new();
    sign_in(&s, &mut b, "corp", "alice").await;
    let session = b.jar.get("authjs.session-token").cloned().unwrap();
    let alices = user_of(&s, "corp", "alice-sub").unwrap();
    // Explicit linking: signed in, she signs in with corp2 as herself.
    let r = sign_in(&s, &mut b, "corp2", "alice").await;
    assert_eq!(r.location(), "/home", "{}", s.pc.logs());
    assert_eq!(user_of(&s, "corp2", "alice-sub"), Some(alices.clone()));
    // Her session stays hers (not replaced by the new account's).
    assert_eq!(b.jar.get("authjs.session-token").cloned().unwrap(), session);
    assert!(s.pc.log_shows("account linked").await);
    // Bob's corp2 account cannot be linked to Alice.
    let r = sign_in(&s, &mut b, "corp2", "bob").await;
    assert_eq!(r.location(), "/auth/error?error=OAuthAccountNotLinked");
    assert_eq!(user_of(&s, "corp2", "bob-sub"), Some(bobs));
    assert_eq!(user_records(&s), 2);
}

#[tokio::test]
async fn parallel_first_sign_ins_create_one_user() {
    let s = setup("").await;
    // Ten browsers each at the IdP's callback, then all at once to us.
    let mut pending = Vec::new();
    for _ in 0..10 {
        let mut b = Browser::new();
        let page = b.get(&s.pc.url("/auth/signin")).await;
        let token = page.hidden("csrfToken").unwrap();
        let r = b
            .post_form(
                &s.pc.url("/auth/signin/corp"),
                &[("csrfToken", &token), ("callbackUrl", "/")],
            )
            .await;
        let back = idp_login(&mut b, r.location(), "alice").await;
        pending.push((b, back.location().to_string()));
    }
    let tasks: Vec<_> = pending
        .into_iter()
        .map(|(mut b, cb)| tokio::spawn(async move { b.get(&cb).await.location().to_string() }))
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|a| a == "/"), "{answers:?}");
    assert_eq!(user_records(&s), 1, "{}", s.redis.dump_all());
    assert!(user_of(&s, "corp", "alice-sub").is_some());
}
