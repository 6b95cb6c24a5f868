//! Ways to sign in. Each provider has an id (its URL segment), a display
//! name, and a kind holding what that kind needs: [`credentials`] (a users
//! file), [`oidc`] (an OpenID provider, with its run-time state) and
//! [`email`] (magic links over SMTP).

pub mod credentials;
pub mod email;
pub mod oidc;
pub mod outbound;
pub mod presets;
pub mod profile;

/// One configured provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    /// The only provider, and the sign-in page goes straight to it.
    pub auto_redirect: bool,
}

#[derive(Debug, Clone)]
pub enum ProviderKind {
    Credentials(credentials::Credentials),
    /// The provider's settings; its run-time state lives in the app.
    Oidc(std::sync::Arc<oidc::OidcConfig>),
    Email(std::sync::Arc<email::EmailConfig>),
}

impl ProviderConfig {
    /// The Auth.js `type` shown by `{base}/providers`.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            ProviderKind::Credentials(_) => "credentials",
            ProviderKind::Oidc(c) if c.oauth.is_some() => "oauth",
            ProviderKind::Oidc(_) => "oidc",
            ProviderKind::Email(_) => "email",
        }
    }

    /// For `portcullis check`: the settings in force, secrets redacted.
    pub fn effective(&self) -> serde_json::Value {
        use serde_json::json;
        let mut v = json!({ "id": self.id, "name": self.name, "type": self.type_name() });
        match &self.kind {
            ProviderKind::Credentials(c) => v["users"] = json!(c.len()),
            ProviderKind::Oidc(c) => {
                v["issuer"] = json!(c.issuer);
                v["client_id"] = json!(c.client_id);
                v["client_secret"] = json!("<redacted>");
                v["scopes"] = json!(c.scopes);
                v["response_mode"] = json!(match c.response_mode {
                    oidc::ResponseMode::Query => "query",
                    oidc::ResponseMode::FormPost => "form_post",
                });
                v["authorization_params"] = json!(
                    c.authorization_params
                        .iter()
                        .cloned()
                        .collect::<std::collections::BTreeMap<_, _>>()
                );
                let exprs =
                    |e: &[profile::Expr]| e.iter().map(ToString::to_string).collect::<Vec<_>>();
                v["claims"] = json!({ "id": exprs(&c.claims.id), "name": exprs(&c.claims.name), "email": exprs(&c.claims.email),
                    "image": exprs(&c.claims.image), "preferred_username": exprs(&c.claims.preferred_username), "groups": exprs(&c.claims.groups) });
                if let Some(o) = &c.oauth {
                    v["authorization_url"] = json!(o.authorization_url);
                    v["token_url"] = json!(o.token_url);
                    v["userinfo_url"] = json!(o.userinfo_url);
                    v["pkce"] = json!(c.pkce);
                }
                v["preset"] = json!(c.preset);
                v["profile_requests"] = json!(
                    c.profile_requests
                        .iter()
                        .map(|r| json!({"url": r.url, "into": r.into}))
                        .collect::<Vec<_>>()
                );
                v["require"] = json!(
                    c.require
                        .iter()
                        .map(|(e, want)| (e.to_string(), want.clone()))
                        .collect::<std::collections::BTreeMap<_, _>>()
                );
                v["allow_dangerous_email_account_linking"] =
                    json!(c.allow_dangerous_email_account_linking);
                v["algorithms"] = json!(c.algorithms);
                v["trusted_audiences"] = json!(c.trusted_audiences);
                v["insecure_accept_unverified_email"] = json!(c.insecure_accept_unverified_email);
                v["store_tokens"] = json!(c.store_tokens);
                v["timeout"] = json!(format!("{}s", c.timeout.as_secs()));
            }
            ProviderKind::Email(c) => {
                v["server"] = json!(c.mailer.server);
                v["starttls"] = json!(c.mailer.security.as_str());
                v["from"] = json!(c.from.to_string());
                v["username"] = json!(c.mailer.username);
                v["password"] = json!(c.mailer.username.as_ref().map(|_| "<redacted>"));
                v["max_age"] = json!(format!("{}s", c.max_age.as_secs()));
                v["rate_limit"] = json!({ "per_email": c.rate_limit.per_email, "per_ip": c.rate_limit.per_ip,
                    "window": format!("{}s", c.rate_limit.window.as_secs()) });
                v["timeout"] = json!(format!("{}s", c.mailer.timeout.as_secs()));
            }
        }
        v
    }
}
