//! Every provider preset signs a user in through the real binary: the
//! `oauth` ones against an in-process fake of that provider's documented
//! API (`support/fake_oauth.rs`), the `oidc` ones against the real
//! `oidc-provider` configured like that IdP: its issuer's shape, its claim
//! names, its client authentication and response mode. Each test asserts
//! the identity the upstream receives.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use crate::support::fake_oauth::{self, FakeOAuth};
use crate::support::idp::{Idp, form_post_fields, idp_login};
use crate::support::*;

/// What a sign-in came to: the callback's answer and, when it let the
/// user in, the request the upstream then received.
struct Outcome {
    authorize_url: String,
    callback: Resp,
    seen: Option<Recorded>,
}

impl Outcome {
    fn identity(&self) -> [Option<&str>; 5] {
        let seen = self.seen.as_ref().unwrap_or_else(|| {
            panic!(
                "not signed in: the callback answered {} {}",
                self.callback.status,
                self.callback.location()
            )
        });
        [
            "x-auth-request-user",
            "x-auth-request-email",
            "x-auth-request-name",
            "x-auth-request-preferred-username",
            "x-auth-request-groups",
        ]
        .map(|h| seen.header(h))
    }

    fn refused_with(&self) -> &str {
        assert!(self.seen.is_none(), "signed in");
        self.callback.location()
    }
}

/// Clicks the provider's button, plays the user at the provider (`login`
/// at a real IdP) and comes back; then asks the upstream for `/app`.
async fn sign_in(pc: &Portcullis, up: &Upstream, id: &str, login: Option<&str>) -> Outcome {
    let mut b = Browser::new();
    let page = b.get(&pc.url("/auth/signin?callbackUrl=%2Fapp")).await;
    let token = page.hidden("csrfToken").expect("a sign-in page");
    let r = b
        .post_form(
            &pc.url(&format!("/auth/signin/{id}")),
            &[("csrfToken", &token), ("callbackUrl", "/app")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    let authorize_url = r.location().to_string();
    let back = match login {
        Some(login) => idp_login(&mut b, &authorize_url, login).await,
        None => b.get(&authorize_url).await,
    };
    let callback = if back.status.is_redirection() {
        b.get(back.location()).await
    } else if back.body.contains("<form") {
        // response_mode=form_post: post what the page's script would.
        let (action, fields) = form_post_fields(&back);
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        b.post_form(&action, &fields).await
    } else {
        panic!("the provider answered {}: {}", back.status, back.body);
    };
    let seen = if callback.location() == "/app" {
        let r = b.get(&pc.url("/app")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        Some(up.last())
    } else {
        None
    };
    Outcome {
        authorize_url,
        callback,
        seen,
    }
}

// --- plain OAuth 2 presets, against their providers' API shapes.

struct OAuth {
    fake: FakeOAuth,
    pc: Portcullis,
    up: Upstream,
    id: String,
}

impl OAuth {
    /// The fake of `preset`'s API (`edit` changes its data) and Portcullis
    /// with the preset pointed at it, plus `extra` provider keys.
    async fn start(preset: &str, extra: &str, edit: impl FnOnce(&FakeOAuth)) -> Self {
        let port = free_port();
        let id = preset.to_string();
        let fake = FakeOAuth::start(
            fake_oauth::shape(preset),
            &format!("http://127.0.0.1:{port}/auth/callback/{id}"),
        )
        .await;
        edit(&fake);
        let up = Upstream::start().await;
        let item = format!(
            "  - preset: {preset}\n    params: {}\n    client_id: {}\n    client_secret: {}\n{extra}",
            fake.params_yaml(),
            fake_oauth::CLIENT_ID,
            fake_oauth::CLIENT_SECRET,
        );
        let pc = Portcullis::start_at(
            Conf::default().upstream(&up.url()).provider(&item),
            &[],
            port,
        )
        .await;
        OAuth { fake, pc, up, id }
    }

    async fn sign_in(&self) -> Outcome {
        let o = sign_in(&self.pc, &self.up, &self.id, None).await;
        assert!(
            o.authorize_url.starts_with(&self.fake.url),
            "{}",
            o.authorize_url
        );
        if o.seen.is_none() && !self.fake.refusals().is_empty() {
            eprintln!(
                "the fake refused: {:?}\n{}",
                self.fake.refusals(),
                self.pc.logs()
            );
        }
        o
    }

    /// Signs in and checks what the preset must have asked for.
    async fn expect(&self, scope: &str, identity: [Option<&str>; 5]) -> Outcome {
        let o = self.sign_in().await;
        assert_eq!(
            o.identity(),
            identity,
            "{:?}\n{}",
            self.fake.refusals(),
            self.pc.logs()
        );
        let q = self.fake.authorize_queries().pop().unwrap();
        assert_eq!(q.get("scope").map(String::as_str), Some(scope));
        let shape = fake_oauth::shape(&self.id);
        assert_eq!(q.contains_key("code_challenge"), shape.pkce, "PKCE: {q:?}");
        assert!(!q.contains_key("nonce"), "a nonce without OIDC: {q:?}");
        assert!(
            self.fake.refusals().is_empty(),
            "{:?}",
            self.fake.refusals()
        );
        o
    }
}

#[tokio::test]
async fn github_takes_the_verified_primary_email_and_orgs_and_teams_as_groups() {
    let gh = OAuth::start("github", "", |_| {}).await;
    gh.expect(
        "read:user user:email read:org",
        [
            Some("583231"),
            Some("octocat@octo.example"),
            Some("The Octocat"),
            Some("octocat"),
            Some("acme,umbrella,acme/ops,umbrella/blue-team"),
        ],
    )
    .await;
}

#[tokio::test]
async fn github_without_a_name_or_a_verified_primary_email_falls_back_to_the_login() {
    let gh = OAuth::start("github", "", |f| {
        f.set_api("/user", json!({"login": "hubot", "id": 7, "name": null, "avatar_url": "https://a.example/7"}));
        f.set_api("/user/emails?per_page=100", json!([
            {"email": "hubot@x.example", "verified": false, "primary": true, "visibility": "private"},
            {"email": "other@x.example", "verified": true, "primary": false, "visibility": null}
        ]));
        f.set_api("/user/orgs?per_page=100", json!([]));
        f.set_api("/user/teams?per_page=100", json!([]));
    })
    .await;
    let o = gh.sign_in().await;
    assert_eq!(
        o.identity(),
        [Some("7"), None, Some("hubot"), Some("hubot"), None]
    );
}

#[tokio::test]
async fn a_preset_field_set_in_the_config_wins() {
    let gh = OAuth::start(
        "github",
        "    name: GitHub Enterprise\n    claims: {name: login}\n    scopes: [\"read:user\", \"user:email\"]\n",
        |_| {},
    )
    .await;
    let page = Browser::new().get(&gh.pc.url("/auth/signin")).await;
    assert!(
        page.body.contains("Sign in with GitHub Enterprise"),
        "{}",
        page.body
    );
    // claims merge key by key: name is ours, the rest still the preset's.
    gh.expect(
        "read:user user:email",
        [
            Some("583231"),
            Some("octocat@octo.example"),
            Some("octocat"),
            Some("octocat"),
            Some("acme,umbrella,acme/ops,umbrella/blue-team"),
        ],
    )
    .await;
}

#[tokio::test]
async fn overriding_the_token_auth_of_a_preset_is_sent_as_configured() {
    // Box wants the secret in the body: basic is refused, which the
    // sign-in reports as a callback error.
    let bx = OAuth::start("box", "    token_auth: basic\n", |_| {}).await;
    let o = bx.sign_in().await;
    assert_eq!(o.refused_with(), "/auth/error?error=OAuthCallbackError");
    assert!(
        bx.fake.refusals()[0].starts_with("client authentication is not Post"),
        "{:?}",
        bx.fake.refusals()
    );
}

#[tokio::test]
async fn discord_signs_in_a_verified_account_and_refuses_an_unverified_one() {
    let dc = OAuth::start("discord", "", |_| {}).await;
    dc.expect(
        "identify email",
        [
            Some("80351110224678912"),
            Some("nelly@discord.com"),
            Some("Nelly"),
            Some("nelly"),
            None,
        ],
    )
    .await;
    dc.fake.set_api(
        "/api/users/@me",
        json!({"id": "80351110224678913", "username": "newbie", "discriminator": "0", "global_name": null,
               "avatar": null, "verified": false, "email": "newbie@discord.com", "flags": 0, "public_flags": 0}),
    );
    let o = dc.sign_in().await;
    assert_eq!(o.refused_with(), "/auth/error?error=AccessDenied");
}

#[tokio::test]
async fn bitbucket_takes_the_confirmed_primary_email_from_the_paginated_list() {
    let bb = OAuth::start("bitbucket", "", |_| {}).await;
    bb.expect(
        "account email",
        [
            Some("{d301aafa-d676-4ee0-88be-962be7417567}"),
            Some("erik@bb.example"),
            Some("Erik van Zijst"),
            Some("evzijst"),
            None,
        ],
    )
    .await;
}

#[tokio::test]
async fn facebook_signs_in_without_pkce_with_the_secret_in_the_body() {
    let fb = OAuth::start("facebook", "", |_| {}).await;
    fb.expect(
        "email public_profile",
        [
            Some("10158791234567890"),
            Some("mark@fb.example"),
            Some("Mark Page"),
            None,
            None,
        ],
    )
    .await;
}

#[tokio::test]
async fn spotify_signs_in_with_basic_client_auth() {
    let sp = OAuth::start("spotify", "", |_| {}).await;
    sp.expect(
        "user-read-email",
        [
            Some("wizzler"),
            Some("jane@spotify.example"),
            Some("Jane Spotify"),
            None,
            None,
        ],
    )
    .await;
}

#[tokio::test]
async fn atlassian_signs_in_with_its_audience_and_a_token_answer_without_token_type() {
    let at = OAuth::start("atlassian", "", |_| {}).await;
    at.expect(
        "read:me",
        [
            Some("112233aa-bb11-cc22-33dd-445566abcabc"),
            Some("mia@atl.example"),
            Some("Mia Krystof"),
            Some("mkrystof"),
            None,
        ],
    )
    .await;
    let q = at.fake.authorize_queries().pop().unwrap();
    assert_eq!(q["audience"], "api.atlassian.com");
    assert_eq!(q["prompt"], "consent");
}

#[tokio::test]
async fn zoom_builds_the_name_from_first_and_last_when_display_name_is_empty() {
    let zm = OAuth::start("zoom", "", |_| {}).await;
    zm.expect(
        "user:read",
        [
            Some("KDcuGIm1QgePTO8WbOqwIQ"),
            Some("jchill@zoom.example"),
            Some("Jill Chill"),
            None,
            None,
        ],
    )
    .await;
}

#[tokio::test]
async fn box_reads_the_email_from_login() {
    let bx = OAuth::start("box", "", |_| {}).await;
    bx.expect(
        "",
        [
            Some("11446498"),
            Some("ceo@box.example"),
            Some("Aaron Levie"),
            // Box has no user name: its login (the e-mail) serves.
            Some("ceo@box.example"),
            None,
        ],
    )
    .await;
}

#[tokio::test]
async fn mattermost_signs_in_against_a_self_hosted_server() {
    let mm = OAuth::start("mattermost", "", |_| {}).await;
    mm.expect(
        "",
        [
            Some("mm8q1ww8a3b5pk3kxh4ygm6dyc"),
            Some("sam@mm.example"),
            Some("Sam Vimes"),
            Some("sam"),
            None,
        ],
    )
    .await;
}

#[tokio::test]
async fn twitter_signs_in_without_an_email_reading_the_data_envelope() {
    let x = OAuth::start("twitter", "", |_| {}).await;
    x.expect(
        "users.read tweet.read",
        [
            Some("2244994945"),
            None,
            Some("X Dev"),
            Some("XDevelopers"),
            None,
        ],
    )
    .await;
}

// --- OIDC presets, against the real oidc-provider shaped like each IdP.

const OIDC_SECRET: &str = "preset-client-secret-0123456789abcdef";

/// The IdP as that provider runs it.
struct IdpShape {
    /// Its issuer's path (`/realms/corp`), `/` for a trailing slash.
    issuer_path: String,
    /// `client_secret_basic` or `client_secret_post`.
    token_auth: &'static str,
    /// The IdP's users (see `tests/fixtures/idp/idp.mjs`).
    users: Value,
    /// More of `IDP_CONFIG` (its scope -> claims map...).
    config: Value,
}

impl Default for IdpShape {
    fn default() -> Self {
        IdpShape {
            issuer_path: String::new(),
            token_auth: "client_secret_basic",
            users: json!([alice(json!({}))]),
            config: json!({}),
        }
    }
}

/// Alice; `more` adds or replaces her fields (`extra` holds other claims).
fn alice(more: Value) -> Value {
    let mut u = json!({
        "sub": "alice-sub", "email": "alice@example.com", "email_verified": true,
        "name": "Alice Liddell", "preferred_username": "alice", "groups": ["admins", "staff"],
    });
    for (k, v) in more.as_object().unwrap() {
        u[k] = v.clone();
    }
    u
}

const ALICE_ID: [Option<&str>; 5] = [
    Some("alice-sub"),
    Some("alice@example.com"),
    Some("Alice Liddell"),
    Some("alice"),
    None,
];

const ALICE_GROUPS: [Option<&str>; 5] = [
    Some("alice-sub"),
    Some("alice@example.com"),
    Some("Alice Liddell"),
    Some("alice"),
    Some("admins,staff"),
];

struct Oidc {
    idp: Idp,
    pc: Portcullis,
    up: Upstream,
    id: String,
}

impl Oidc {
    /// The IdP shaped as `shape`, then Portcullis with `preset` and the
    /// params `params(idp_origin)` (plus `extra` provider keys), once its
    /// discovery of the IdP has loaded.
    async fn start(
        preset: &str,
        shape: IdpShape,
        params: impl FnOnce(&str) -> String,
        extra: &str,
    ) -> Self {
        let port = free_port();
        let id = preset.to_string();
        let mut config = json!({
            "issuer_path": shape.issuer_path,
            "clients": [{
                "client_id": preset,
                "client_secret": OIDC_SECRET,
                "redirect_uris": [format!("http://127.0.0.1:{port}/auth/callback/{id}")],
                "token_endpoint_auth_method": shape.token_auth,
            }],
            "users": shape.users,
        });
        for (k, v) in shape.config.as_object().unwrap() {
            config[k] = v.clone();
        }
        let idp = Idp::start(config).await;
        let origin = format!("http://127.0.0.1:{}", idp.port);
        let item = format!(
            "  - preset: {preset}\n    params: {}\n    client_id: {preset}\n    client_secret: {OIDC_SECRET}\n{extra}",
            params(&origin)
        );
        let up = Upstream::start().await;
        let pc = Portcullis::start_at(
            Conf::default().upstream(&up.url()).provider(&item),
            &[],
            port,
        )
        .await;
        let mut b = Browser::api();
        for _ in 0..200 {
            if b.get(&pc.url("/readyz")).await.status == StatusCode::OK {
                return Oidc { idp, pc, up, id };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "discovery of {} never loaded:\n{}\n{}",
            idp.issuer,
            pc.logs(),
            idp.logs()
        );
    }

    async fn sign_in(&self, login: &str) -> Outcome {
        let o = sign_in(&self.pc, &self.up, &self.id, Some(login)).await;
        assert!(
            o.authorize_url
                .starts_with(&format!("{}/", self.idp.issuer.trim_end_matches('/'))),
            "{} is not at {}",
            o.authorize_url,
            self.idp.issuer
        );
        o
    }

    async fn expect(&self, login: &str, identity: [Option<&str>; 5]) -> Outcome {
        let o = self.sign_in(login).await;
        if o.seen.is_none() {
            panic!(
                "{login} not signed in: {}\n{}\n{}",
                o.callback.location(),
                self.pc.logs(),
                self.idp.logs()
            );
        }
        assert_eq!(o.identity(), identity);
        o
    }
}

fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn gitlab_reads_nickname_and_groups_and_groups_direct() {
    let shape = IdpShape {
        users: json!([alice(
            json!({"groups": ["acme"], "extra": {"nickname": "alice-gl", "groups_direct": ["acme/ops"]}})
        )]),
        // GitLab: the group claims come with openid.
        config: json!({"claims": {"openid": ["sub", "groups", "groups_direct"], "email": ["email", "email_verified"], "profile": ["name", "nickname", "preferred_username", "picture"]}}),
        ..IdpShape::default()
    };
    let gl = Oidc::start("gitlab", shape, |o| format!("{{base_url: {o}}}"), "").await;
    gl.expect(
        "alice",
        [
            Some("alice-sub"),
            Some("alice@example.com"),
            Some("Alice Liddell"),
            Some("alice-gl"),
            Some("acme,acme/ops"),
        ],
    )
    .await;
}

#[tokio::test]
async fn google_asks_for_the_hosted_domain_and_refuses_accounts_of_another() {
    let shape = IdpShape {
        users: json!([
            alice(json!({"extra": {"hd": "example.com"}})),
            {"sub": "bob-sub", "email": "bob@other.org", "email_verified": true, "name": "Bob", "preferred_username": "bob", "extra": {"hd": "other.org"}},
            {"sub": "gmail-sub", "email": "carol@gmail.example", "email_verified": true, "name": "Carol", "preferred_username": "carol"},
        ]),
        ..IdpShape::default()
    };
    let g = Oidc::start(
        "google",
        shape,
        |o| format!("{{issuer: {o}, hosted_domain: example.com}}"),
        "",
    )
    .await;
    let o = g.expect("alice", ALICE_ID).await;
    assert_eq!(query_of(&o.authorize_url)["hd"], "example.com");
    assert_eq!(
        g.sign_in("bob").await.refused_with(),
        "/auth/error?error=AccessDenied"
    );
    assert_eq!(
        g.sign_in("carol").await.refused_with(),
        "/auth/error?error=AccessDenied"
    );
}

#[tokio::test]
async fn entra_id_uses_the_tenant_issuer_and_takes_groups_and_app_roles() {
    let tenant = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let shape = IdpShape {
        issuer_path: format!("/{tenant}/v2.0"),
        users: json!([alice(
            json!({"groups": ["5f8c1b4e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"], "extra": {"roles": ["Portal.Admin"]}})
        )]),
        config: json!({"claims": {"openid": ["sub", "groups", "roles"], "email": ["email", "email_verified"], "profile": ["name", "preferred_username"]}}),
        ..IdpShape::default()
    };
    let e = Oidc::start(
        "entra-id",
        shape,
        |o| format!("{{tenant: {tenant}, base_url: {o}}}"),
        "",
    )
    .await;
    e.expect(
        "alice",
        [
            Some("alice-sub"),
            Some("alice@example.com"),
            Some("Alice Liddell"),
            Some("alice"),
            Some("5f8c1b4e-2c3d-4e5f-8a9b-0c1d2e3f4a5b,Portal.Admin"),
        ],
    )
    .await;
}

#[tokio::test]
async fn keycloak_uses_the_realm_issuer_and_takes_realm_roles_as_groups() {
    let shape = IdpShape {
        issuer_path: "/realms/corp".into(),
        users: json!([alice(
            json!({"extra": {"realm_access": {"roles": ["offline_access", "portal-admin"]}}})
        )]),
        ..IdpShape::default()
    };
    let k = Oidc::start(
        "keycloak",
        shape,
        |o| format!("{{base_url: {o}, realm: corp}}"),
        "",
    )
    .await;
    k.expect(
        "alice",
        [
            Some("alice-sub"),
            Some("alice@example.com"),
            Some("Alice Liddell"),
            Some("alice"),
            Some("offline_access,portal-admin"),
        ],
    )
    .await;
}

#[tokio::test]
async fn okta_uses_the_default_authorization_server_and_asks_for_groups() {
    let shape = IdpShape {
        issuer_path: "/oauth2/default".into(),
        ..IdpShape::default()
    };
    let ok = Oidc::start(
        "okta",
        shape,
        |o| {
            format!(
                "{{domain: \"{}\", scheme: http}}",
                o.trim_start_matches("http://")
            )
        },
        "",
    )
    .await;
    let o = ok.expect("alice", ALICE_GROUPS).await;
    assert_eq!(
        query_of(&o.authorize_url)["scope"],
        "openid email profile groups"
    );
}

#[tokio::test]
async fn auth0_uses_the_issuer_with_a_trailing_slash() {
    let shape = IdpShape {
        issuer_path: "/".into(),
        ..IdpShape::default()
    };
    let a = Oidc::start(
        "auth0",
        shape,
        |o| {
            format!(
                "{{domain: \"{}\", scheme: http}}",
                o.trim_start_matches("http://")
            )
        },
        "",
    )
    .await;
    assert!(a.idp.issuer.ends_with('/'));
    a.expect("alice", ALICE_ID).await;
}

#[tokio::test]
async fn authentik_uses_the_per_application_issuer() {
    let shape = IdpShape {
        issuer_path: "/application/o/portal/".into(),
        // authentik sends groups with the profile scope.
        config: json!({"claims": {"openid": ["sub"], "email": ["email", "email_verified"], "profile": ["name", "preferred_username", "groups"]}}),
        ..IdpShape::default()
    };
    let a = Oidc::start(
        "authentik",
        shape,
        |o| format!("{{base_url: {o}, slug: portal}}"),
        "",
    )
    .await;
    a.expect("alice", ALICE_GROUPS).await;
}

#[tokio::test]
async fn slack_takes_the_workspace_id_as_the_group() {
    let shape = IdpShape {
        users: json!([alice(
            json!({"extra": {"https://slack.com/team_id": "T0R7GR", "https://slack.com/user_id": "U0R7JM"}})
        )]),
        ..IdpShape::default()
    };
    let s = Oidc::start("slack", shape, |o| format!("{{issuer: {o}}}"), "").await;
    s.expect(
        "alice",
        [
            Some("alice-sub"),
            Some("alice@example.com"),
            Some("Alice Liddell"),
            Some("alice"),
            Some("T0R7GR"),
        ],
    )
    .await;
}

#[tokio::test]
async fn apple_uses_form_post_and_client_secret_post_and_refuses_a_string_false_email_verified() {
    // Apple: e-mail claims only (no name in the ID token), email_verified
    // as a string, the secret in the body, the code posted back.
    let shape = IdpShape {
        token_auth: "client_secret_post",
        users: json!([
            {"sub": "001234.abcd.0987", "email": "alice@example.com", "email_verified": "true", "extra": {"is_private_email": "false"}},
            {"sub": "005678.efgh.0123", "email": "mallory@example.com", "email_verified": "false"},
        ]),
        config: json!({"claims": {"openid": ["sub"], "email": ["email", "email_verified", "is_private_email"], "name": []}}),
        ..IdpShape::default()
    };
    let a = Oidc::start("apple", shape, |o| format!("{{issuer: {o}}}"), "").await;
    let o = a
        .expect(
            "001234.abcd.0987",
            [
                Some("001234.abcd.0987"),
                Some("alice@example.com"),
                None,
                None,
                None,
            ],
        )
        .await;
    let q = query_of(&o.authorize_url);
    assert_eq!(
        (q["response_mode"].as_str(), q["scope"].as_str()),
        ("form_post", "openid email name")
    );
    assert_eq!(
        a.sign_in("005678.efgh.0123").await.refused_with(),
        "/auth/error?error=AccessDenied"
    );
}

#[tokio::test]
async fn linkedin_uses_its_oauth_issuer_path_and_client_secret_post() {
    let shape = IdpShape {
        issuer_path: "/oauth".into(),
        token_auth: "client_secret_post",
        ..IdpShape::default()
    };
    let l = Oidc::start("linkedin", shape, |o| format!("{{issuer: {o}/oauth}}"), "").await;
    l.expect("alice", ALICE_ID).await;
}

#[tokio::test]
async fn overriding_token_auth_of_an_oidc_preset_reaches_the_idp() {
    // LinkedIn only takes client_secret_post: basic, set here, is refused.
    let shape = IdpShape {
        issuer_path: "/oauth".into(),
        token_auth: "client_secret_post",
        ..IdpShape::default()
    };
    let l = Oidc::start(
        "linkedin",
        shape,
        |o| format!("{{issuer: {o}/oauth}}"),
        "    token_auth: basic\n",
    )
    .await;
    assert_eq!(
        l.sign_in("alice").await.refused_with(),
        "/auth/error?error=OAuthCallbackError"
    );
    // The IdP's log line can trail its answer: wait for it (bounded).
    let want = "is registered with client_secret_post, not client_secret_basic";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !l.idp.logs().contains(want) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(l.idp.logs().contains(want), "{}", l.idp.logs());
}

#[tokio::test]
async fn twitch_asks_for_its_claims_with_the_claims_parameter() {
    // Twitch releases e-mail and profile claims only when the claims
    // parameter asks for them.
    let shape = IdpShape {
        issuer_path: "/oauth2".into(),
        token_auth: "client_secret_post",
        config: json!({
            "claims_parameter": true,
            "claims": {"openid": ["sub"], "user:read:email": [], "email": null, "email_verified": null, "picture": null, "preferred_username": null},
        }),
        ..IdpShape::default()
    };
    let t = Oidc::start("twitch", shape, |o| format!("{{issuer: {o}/oauth2}}"), "").await;
    t.expect(
        "alice",
        [
            Some("alice-sub"),
            Some("alice@example.com"),
            None,
            Some("alice"),
            None,
        ],
    )
    .await;
}

#[tokio::test]
async fn cognito_uses_the_user_pool_issuer_and_cognito_groups() {
    let pool = "eu-west-1_AbCdEf123";
    let shape = IdpShape {
        issuer_path: format!("/{pool}"),
        users: json!([alice(
            json!({"extra": {"cognito:username": "alice-c", "cognito:groups": ["portal-admins"]}})
        )]),
        ..IdpShape::default()
    };
    let c = Oidc::start(
        "cognito",
        shape,
        |o| format!("{{region: eu-west-1, user_pool_id: {pool}, base_url: {o}}}"),
        "",
    )
    .await;
    c.expect(
        "alice",
        [
            Some("alice-sub"),
            Some("alice@example.com"),
            Some("Alice Liddell"),
            Some("alice-c"),
            Some("portal-admins"),
        ],
    )
    .await;
}

#[tokio::test]
async fn zitadel_signs_in() {
    let z = Oidc::start(
        "zitadel",
        IdpShape::default(),
        |o| format!("{{base_url: {o}}}"),
        "",
    )
    .await;
    z.expect("alice", ALICE_ID).await;
}

#[tokio::test]
async fn onelogin_uses_the_oidc_2_issuer_and_asks_for_groups() {
    let shape = IdpShape {
        issuer_path: "/oidc/2".into(),
        ..IdpShape::default()
    };
    let ol = Oidc::start(
        "onelogin",
        shape,
        |o| format!("{{subdomain: acme, base_url: {o}}}"),
        "",
    )
    .await;
    ol.expect("alice", ALICE_GROUPS).await;
}

#[tokio::test]
async fn salesforce_takes_the_user_id_as_the_id() {
    let shape = IdpShape {
        users: json!([alice(
            json!({"sub": "https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9P", "extra": {"user_id": "005x00000012Q9P", "organization_id": "00Dx0000000BV7z"}})
        )]),
        ..IdpShape::default()
    };
    let s = Oidc::start("salesforce", shape, |o| format!("{{issuer: {o}}}"), "").await;
    s.expect(
        "alice",
        [
            Some("005x00000012Q9P"),
            Some("alice@example.com"),
            Some("Alice Liddell"),
            Some("alice"),
            None,
        ],
    )
    .await;
}

#[tokio::test]
async fn dex_asks_for_groups() {
    let shape = IdpShape {
        issuer_path: "/dex".into(),
        ..IdpShape::default()
    };
    let d = Oidc::start("dex", shape, |o| format!("{{issuer: {o}/dex}}"), "").await;
    d.expect("alice", ALICE_GROUPS).await;
}

#[tokio::test]
async fn authelia_asks_for_groups() {
    let a = Oidc::start(
        "authelia",
        IdpShape::default(),
        |o| format!("{{base_url: {o}}}"),
        "",
    )
    .await;
    a.expect("alice", ALICE_GROUPS).await;
}

#[tokio::test]
async fn kanidm_uses_the_per_client_issuer() {
    let shape = IdpShape {
        issuer_path: "/oauth2/openid/portal".into(),
        ..IdpShape::default()
    };
    let k = Oidc::start(
        "kanidm",
        shape,
        |o| format!("{{base_url: {o}, client: portal}}"),
        "",
    )
    .await;
    k.expect("alice", ALICE_ID).await;
}

#[tokio::test]
async fn fusionauth_takes_roles_as_groups() {
    let shape = IdpShape {
        users: json!([alice(json!({"extra": {"roles": ["admin", "user"]}}))]),
        ..IdpShape::default()
    };
    let f = Oidc::start("fusionauth", shape, |o| format!("{{base_url: {o}}}"), "").await;
    f.expect(
        "alice",
        [
            Some("alice-sub"),
            Some("alice@example.com"),
            Some("Alice Liddell"),
            Some("alice"),
            Some("admin,user"),
        ],
    )
    .await;
}

#[tokio::test]
async fn gitea_uses_the_issuer_with_a_trailing_slash_and_asks_for_groups() {
    let shape = IdpShape {
        issuer_path: "/".into(),
        ..IdpShape::default()
    };
    let g = Oidc::start("gitea", shape, |o| format!("{{base_url: {o}}}"), "").await;
    g.expect("alice", ALICE_GROUPS).await;
}

#[tokio::test]
async fn pingone_uses_the_environment_issuer() {
    let env = "2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d";
    let shape = IdpShape {
        issuer_path: format!("/{env}/as"),
        ..IdpShape::default()
    };
    let p = Oidc::start(
        "pingone",
        shape,
        |o| format!("{{environment_id: {env}, base_url: {o}}}"),
        "",
    )
    .await;
    p.expect("alice", ALICE_ID).await;
}

#[tokio::test]
async fn jumpcloud_uses_the_issuer_with_a_trailing_slash() {
    let shape = IdpShape {
        issuer_path: "/".into(),
        ..IdpShape::default()
    };
    let j = Oidc::start("jumpcloud", shape, |o| format!("{{issuer: \"{o}/\"}}"), "").await;
    j.expect("alice", ALICE_ID).await;
}

/// Every preset in presets.yaml has a test above (a new preset without
/// one fails here).
#[test]
fn every_preset_is_exercised_by_a_test_in_this_file() {
    let src: String = include_str!("presets.rs")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    for name in portcullis::providers::presets::all().keys() {
        assert!(
            src.contains(&format!("OAuth::start(\"{name}\""))
                || src.contains(&format!("Oidc::start(\"{name}\"")),
            "no sign-in test for the {name} preset"
        );
    }
}
