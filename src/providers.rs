//! Ways to sign in. Each provider has an id (its URL segment), a display
//! name, and a kind holding what that kind needs. This issue ships the
//! credentials provider; OIDC, OAuth and e-mail providers join [`ProviderKind`].

pub mod credentials;

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
}

impl ProviderConfig {
    /// The Auth.js `type` shown by `{base}/providers`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ProviderKind::Credentials(_) => "credentials",
        }
    }
}
