//! Credentials sign-in: the form posts e-mail and password with the CSRF
//! token; argon2 runs off the async threads, a bounded number at a time,
//! behind the regulation (brute-force bans) of [`super::regulation`].

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
    // Nobody's address: refused before it reaches a log line or a store
    // key (a failure of the client address only).
    let malformed = email.len() > 320 || email.chars().any(char::is_control);
    let email = if malformed { String::new() } else { email };
    let refuse = |outcome| {
        app.metrics.signin(provider, outcome);
        Ok(go(
            &parts.headers,
            &error_target(app, ErrorCode::CredentialsSignin, &callback),
        ))
    };
    // Checked and recorded while holding a password-check permit: at most
    // that many attempts per instance slip past a ban that is starting.
    let permit = app
        .password_checks
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    if let Err(banned) = app.regulation.check(&email, client.client_ip).await? {
        app.regulation
            .log_refusal(&banned, &email, client.client_ip, provider);
        // As slow as a wrong password (see `regulation`), without the work;
        // until one check has been timed (a fresh replica), one real check.
        match app.regulation.pace() {
            Some(d) => {
                drop(permit);
                tokio::time::sleep(d).await;
            }
            None => {
                check_password(app, creds.clone(), email, password).await?;
                drop(permit);
            }
        }
        return refuse("banned");
    }
    let user = check_password(app, creds.clone(), email.clone(), password).await?;
    let Some(user) = user else {
        app.regulation
            .record_failure(&email, client.client_ip)
            .await?;
        drop(permit);
        tracing::info!(provider, client_ip = %client.client_ip, "sign-in failed: CredentialsSignin");
        return refuse("failure");
    };
    app.regulation.record_success(&email).await?;
    drop(permit);
    establish(
        app,
        &parts.headers,
        client,
        claims_for(&user, provider),
        &callback,
    )
    .await
}

/// Runs argon2 off the async threads (the caller holds a permit of
/// `password_checks`); notes how long it took for [`Regulator::pace`].
///
/// [`Regulator::pace`]: super::regulation::Regulator::pace
async fn check_password(
    app: &App,
    creds: Credentials,
    email: String,
    password: String,
) -> Result<Option<User>, Error> {
    if email.len() > 320 || password.len() > 1024 {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let user = tokio::task::spawn_blocking(move || creds.verify(&email, &password))
        .await
        .map_err(|e| Error::Internal(format!("password check task: {e}")))?;
    app.regulation.observe(started.elapsed());
    Ok(user)
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
