//! Credentials sign-in: the form posts e-mail and password with the CSRF
//! token; argon2 runs off the async threads, a bounded number at a time.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::{CheckedPost, checked_post, error_target, establish, go};
use crate::http::forwarded::ClientInfo;
use crate::http::{Body, Error, ErrorCode};
use crate::providers::credentials::{Credentials, User};
use crate::session::Claims;
use crate::state::App;

pub(super) async fn sign_in(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &ClientInfo,
    provider: &str,
    creds: &Credentials,
) -> Result<Response<Body>, Error> {
    let CheckedPost {
        parts,
        form,
        callback,
    } = match checked_post(app, req, "credentials sign-in").await? {
        Ok(post) => post,
        Err(refused) => return Ok(refused),
    };
    let email = form
        .get("email")
        .or_else(|| form.get("username"))
        .unwrap_or("")
        .to_string();
    let password = form.get("password").unwrap_or("").to_string();
    let Some(user) = check_password(app, creds.clone(), email, password).await? else {
        tracing::info!(provider, client_ip = %client.client_ip, "sign-in failed: CredentialsSignin");
        app.metrics.signin(provider, "failure");
        return Ok(go(
            &parts.headers,
            &error_target(app, ErrorCode::CredentialsSignin, &callback),
        ));
    };
    establish(
        app,
        &parts.headers,
        client,
        claims_for(&user, provider),
        &callback,
    )
    .await
}

async fn check_password(
    app: &App,
    creds: Credentials,
    email: String,
    password: String,
) -> Result<Option<User>, Error> {
    if email.len() > 320 || password.len() > 1024 {
        return Ok(None);
    }
    let _permit = app
        .password_checks
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || creds.verify(&email, &password))
        .await
        .map_err(|e| Error::Internal(format!("password check task: {e}")))
}

fn claims_for(user: &User, provider: &str) -> Claims {
    Claims {
        name: user.name.clone(),
        email: Some(user.email.clone()),
        picture: user.image.clone(),
        sub: Some(user.email.clone()),
        groups: user.groups.clone(),
        provider: Some(provider.to_string()),
        ..Claims::default()
    }
}
