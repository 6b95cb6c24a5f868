//! Ways to sign in. Each provider has an id (its URL segment), a display
//! name, and a kind holding what that kind needs: [`credentials`] (a users
//! file), [`oidc`] (an OpenID provider, with its run-time state) and
//! [`email`] (magic links over SMTP).

pub mod credentials;
pub mod email;
pub mod oidc;
pub mod outbound;

/// One configured provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
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
        match self.kind {
            ProviderKind::Credentials(_) => "credentials",
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
                v["claims"] = json!({ "id": c.claims.id, "name": c.claims.name, "email": c.claims.email, "image": c.claims.image,
                    "preferred_username": c.claims.preferred_username, "groups": c.claims.groups });
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
