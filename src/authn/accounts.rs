//! Sign-in meets the stored users: which user an account belongs to, a
//! new user for a new account, Auth.js's refusal to join accounts by
//! e-mail (`OAuthAccountNotLinked`), and explicit linking when a signed-in
//! user signs in with another account. Without stored users (the `jwt`
//! strategy) every sign-in stands alone, as in Auth.js without an adapter.

use http::HeaderMap;

use crate::http::{Error, ErrorCode};
use crate::providers::ProviderKind;
use crate::session::Claims;
use crate::state::App;
use crate::users::{Outcome, Profile};

pub(super) enum Resolved {
    /// Go on and issue the session (`claims.uid` is set when users are stored).
    SignIn,
    /// The account joined the signed-in user; their session stays.
    Linked,
    Refused(ErrorCode),
}

pub(super) async fn resolve(
    app: &App,
    headers: &HeaderMap,
    claims: &mut Claims,
) -> Result<Resolved, Error> {
    let Some(users) = &app.users else {
        return Ok(Resolved::SignIn);
    };
    let provider = claims.provider.clone().unwrap_or_default();
    let config = app.config.providers.iter().find(|p| p.id == provider);
    let provider_type = config.map(|p| p.type_name()).unwrap_or("oauth");
    let allow_email_linking = match config {
        // Auth.js keeps credentials sign-ins out of the adapter.
        None
        | Some(crate::providers::ProviderConfig {
            kind: ProviderKind::Credentials(_),
            ..
        }) => {
            return Ok(Resolved::SignIn);
        }
        Some(crate::providers::ProviderConfig {
            kind: ProviderKind::Oidc(c),
            ..
        }) => c.allow_dangerous_email_account_linking,
        // The e-mail provider proves the address itself.
        Some(_) => true,
    };
    let Some(account_id) = claims.sub.clone().or_else(|| claims.email.clone()) else {
        return Ok(Resolved::Refused(ErrorCode::OAuthCallbackError));
    };
    let current = app.sessions.load(headers).await?;
    let signed_in = current.session.as_ref().and_then(|s| s.claims.uid.clone());
    let profile = Profile {
        provider: &provider,
        provider_type,
        account_id: &account_id,
        name: claims.name.as_deref(),
        email: claims.email.as_deref(),
        image: claims.picture.as_deref(),
        allow_email_linking,
    };
    Ok(match users.sign_in(&profile, signed_in.as_deref()).await? {
        Outcome::User(user) => {
            claims.uid = Some(user.id);
            Resolved::SignIn
        }
        Outcome::Linked(user) => {
            tracing::info!(provider, user = %user.id, accounts = user.accounts.len(), "account linked");
            Resolved::Linked
        }
        Outcome::EmailTaken => {
            tracing::info!(
                provider,
                "sign-in refused: the e-mail belongs to another user (OAuthAccountNotLinked)"
            );
            Resolved::Refused(ErrorCode::OAuthAccountNotLinked)
        }
        Outcome::AccountTaken => {
            tracing::info!(
                provider,
                "linking refused: the account belongs to another user (OAuthAccountNotLinked)"
            );
            Resolved::Refused(ErrorCode::OAuthAccountNotLinked)
        }
    })
}
