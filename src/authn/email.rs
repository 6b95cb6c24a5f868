//! E-mail sign-in (Auth.js magic links). `POST {base}/signin/{id}` takes
//! an address (CSRF-checked), counts it against the rate limits, stores
//! the hash of a fresh token with the `callbackUrl` (the redirect policy
//! already passed it) for `max_age`, and answers with the
//! `verify-request` page at once: the mail goes out in a spawned task, so
//! the answer is the same, and as fast, for every address. The link,
//! `{base}/callback/{id}?token=...&email=...`, consumes the token
//! atomically (`GETDEL`) and signs the user in through `establish`.
//!
//! Nothing tells addresses apart: unknown, refused by the access rules or
//! over a rate limit, the answer is the verify-request page; only the log
//! says which (and no mail goes out). Redis down fails closed (503).

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::form::query_param;
use super::regulation::ip_bucket;
use super::{CheckedPost, checked_post, error_target, establish, go};
use crate::clock::UnixTime;
use crate::crypto::sha256_hex;
use crate::http::forwarded::ClientInfo;
use crate::http::redirect::SafeRedirect;
use crate::http::{Body, Error, ErrorCode};
use crate::providers::email::{self, EmailConfig, Token, normalize_address, token_hash};
use crate::session::Claims;
use crate::state::App;
use crate::store::Store;

/// What the store keeps under a token's hash: where to go after sign-in
/// and when the link expires. Neither the token nor the address.
#[derive(Serialize, Deserialize)]
struct Pending {
    callback: String,
    exp: UnixTime,
}

/// The session claims for an address that proved it reads its mail. One
/// small function, so user records can take its place.
pub(crate) fn claims_for(email: &str, provider: &str) -> Claims {
    Claims {
        email: Some(email.to_string()),
        sub: Some(email.to_string()),
        provider: Some(provider.to_string()),
        ..Claims::default()
    }
}

fn store(app: &App) -> Result<(&Store, &str), Error> {
    match (&app.store, &app.config.store) {
        (Some(r), Some(cfg)) => Ok((r, cfg.key_prefix.as_str())),
        // Validation requires a store for email providers.
        _ => Err(Error::Unavailable(
            "E-mail sign-in needs the store, and none is configured.",
        )),
    }
}

/// `POST {base}/signin/{id}`: sends the link (or, quietly, does not).
pub(super) async fn start(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &ClientInfo,
    provider: &str,
    cfg: &Arc<EmailConfig>,
) -> Result<Response<Body>, Error> {
    let CheckedPost {
        parts,
        form,
        callback,
    } = match checked_post(app, req, "e-mail sign-in").await? {
        Ok(post) => post,
        Err(refused) => return Ok(refused),
    };
    let email = match normalize_address(form.get("email").unwrap_or("")) {
        Ok(e) => e,
        Err(why) => {
            tracing::info!(provider, client_ip = %client.client_ip, reason = ?why, "e-mail sign-in refused: not one plain address; no mail sent");
            return Err(Error::BadRequest(why.message()));
        }
    };
    let (store, prefix) = store(app)?;
    let who = sha256_hex(email.as_bytes());
    let who = &who[..16];
    if let Some(limit) = over_limit(store, prefix, cfg, who, client.client_ip).await? {
        tracing::warn!(
            provider,
            limit,
            client_ip = %client.client_ip,
            email_hash = who,
            "e-mail sign-in rate limit exceeded: no mail sent"
        );
        app.metrics.signin(provider, "denied");
        return Ok(go(&parts.headers, &verify_request(app, provider)));
    }
    // A banned address or client gets the same answer, and no mail.
    if let Err(b) = app.regulation.check(&email, client.client_ip).await? {
        app.regulation
            .log_refusal(&b, &email, client.client_ip, provider);
        app.metrics.signin(provider, "banned");
        return Ok(go(&parts.headers, &verify_request(app, provider)));
    }
    // Stored for every address, allowed or not: the same work either way.
    let token = Token::generate();
    let exp = app.clock.now() + cfg.max_age.as_secs();
    let pending = serde_json::to_string(&Pending {
        callback: callback.as_str().to_string(),
        exp,
    })
    .map_err(|e| Error::Internal(e.to_string()))?;
    let hash = token_hash(&email, token.expose());
    match store {
        Store::Redis(r) => {
            r.cmd::<()>(
                redis::cmd("SET")
                    .arg(format!("{prefix}vt:{hash}"))
                    .arg(pending)
                    .arg("EX")
                    .arg(cfg.max_age.as_secs().max(1)),
            )
            .await?
        }
        // Auth.js's `verification_tokens`: the identifier is the
        // address's hash, the token a keyed hash of the mailed one.
        Store::Sql(s) => {
            s.token_put(&sha256_hex(email.as_bytes()), &hash, &pending, exp)
                .await?
        }
    }
    // The same rules as at the link's use: no mail to whom they refuse.
    match super::may_sign_in(app, &mut claims_for(&email, provider)) {
        Ok(()) => send_link(app, provider, cfg, email, token, who.to_string()),
        Err(why) => {
            tracing::info!(provider, email_hash = who, client_ip = %client.client_ip, "e-mail sign-in: {why} refuse this address; no mail sent")
        }
    }
    Ok(go(&parts.headers, &verify_request(app, provider)))
}

/// The mail goes out in its own task: the answer never waits on SMTP.
fn send_link(
    app: &App,
    provider: &str,
    cfg: &Arc<EmailConfig>,
    email: String,
    token: Token,
    who: String,
) {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("token", token.expose())
        .append_pair("email", &email);
    let link = app.public_auth_url(&format!("/callback/{provider}?{}", q.finish()));
    let site = app.config.public_url.host_str().unwrap_or("").to_string();
    let cfg = cfg.clone();
    let provider = provider.to_string();
    tokio::spawn(async move {
        let result = match email::message(&cfg, &email, &link, &site) {
            Ok(msg) => cfg.mailer.send(msg).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(provider, email_hash = who, server = %cfg.mailer.server, "sign-in e-mail sent")
            }
            Err(error) => {
                tracing::warn!(provider, email_hash = who, server = %cfg.mailer.server, error, "sign-in e-mail NOT sent")
            }
        }
    });
}

/// Counts one request against the address's and the client's windows;
/// the name of a limit it goes over, if any.
async fn over_limit(
    store: &Store,
    prefix: &str,
    cfg: &EmailConfig,
    who: &str,
    ip: IpAddr,
) -> Result<Option<&'static str>, Error> {
    let rl = &cfg.rate_limit;
    let count = |key: String, limit: u64| async move {
        if limit == 0 {
            return Ok::<bool, Error>(false);
        }
        Ok(store.incr_window(&key, rl.window).await? > limit)
    };
    let (by_email, by_ip) = tokio::join!(
        count(format!("{prefix}rl:e:{who}"), rl.per_email),
        count(format!("{prefix}rl:ip:{}", ip_bucket(ip)), rl.per_ip)
    );
    Ok(match (by_email?, by_ip?) {
        (true, _) => Some("email"),
        (_, true) => Some("ip"),
        _ => None,
    })
}

fn verify_request(app: &App, provider: &str) -> SafeRedirect {
    let base = &app.config.base_path;
    app.redirects.check_or_home(Some(&format!(
        "{base}/verify-request?provider={provider}&type=email"
    )))
}

/// `GET {base}/callback/{id}?token=...&email=...`: the link from the mail.
pub(super) async fn callback(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: &ClientInfo,
    provider: &str,
) -> Result<Response<Body>, Error> {
    let q = req.uri().query();
    let token = query_param(q, "token").unwrap_or_default();
    let email = query_param(q, "email")
        .and_then(|e| normalize_address(&e).ok())
        .unwrap_or_default();
    let headers = req.headers();
    if email.is_empty() || !email::well_formed_token(&token) {
        return Ok(refuse(app, headers, client, provider, "malformed link"));
    }
    // Guessing links counts as failed sign-ins (regulation): a banned
    // address or client is refused before any token is looked at.
    if let Err(b) = app.regulation.check(&email, client.client_ip).await? {
        app.regulation
            .log_refusal(&b, &email, client.client_ip, provider);
        app.metrics.signin(provider, "banned");
        let home = app.redirects.check_or_home(None);
        return Ok(go(
            headers,
            &error_target(app, ErrorCode::Verification, &home),
        ));
    }
    let (store, prefix) = store(app)?;
    let hash = token_hash(&email, &token);
    // Of two uses of one link, exactly one finds it (GETDEL, Redis ≥ 6.2;
    // SQL: the DELETE that removed the row).
    let stored: Option<String> = match store {
        Store::Redis(r) => {
            r.cmd(redis::cmd("GETDEL").arg(format!("{prefix}vt:{hash}")))
                .await?
        }
        Store::Sql(s) => s.token_take(&hash, app.clock.now()).await?,
    };
    let Some(pending) = stored.and_then(|s| serde_json::from_str::<Pending>(&s).ok()) else {
        app.regulation
            .record_failure(&email, client.client_ip)
            .await?;
        return Ok(refuse(
            app,
            headers,
            client,
            provider,
            "unknown, used or expired token",
        ));
    };
    if app.clock.now() >= pending.exp {
        return Ok(refuse(app, headers, client, provider, "expired token"));
    }
    app.regulation.record_success(&email).await?;
    // Checked again: the policy may have changed since the link was sent.
    let callback = app.redirects.check_or_home(Some(&pending.callback));
    establish(
        app,
        headers,
        client,
        claims_for(&email, provider),
        &callback,
    )
    .await
}

fn refuse(
    app: &App,
    headers: &HeaderMap,
    client: &ClientInfo,
    provider: &str,
    why: &str,
) -> Response<Body> {
    tracing::info!(provider, client_ip = %client.client_ip, why, "e-mail sign-in link refused: Verification");
    app.metrics.signin(provider, "failure");
    let home = app.redirects.check_or_home(None);
    go(headers, &error_target(app, ErrorCode::Verification, &home))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(ip_bucket("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            ip_bucket("2001:db8:1:2:aaaa::1".parse().unwrap()),
            ip_bucket("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_eq!(ip_bucket("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }

    #[test]
    fn claims_carry_the_address_as_subject() {
        let c = claims_for("a@example.com", "email");
        assert_eq!(c.email.as_deref(), Some("a@example.com"));
        assert_eq!(c.sub.as_deref(), Some("a@example.com"));
        assert_eq!(c.provider.as_deref(), Some("email"));
    }
}
