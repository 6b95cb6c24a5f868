//! The session behind a request, as every protected path needs it: loaded
//! (failing closed when the store is down), a dead cookie cleared, the
//! expiry slid, and the provider's access token refreshed when it is
//! about to expire and the upstream gets it.

use http::HeaderMap;

use super::refresh;
use crate::http::Error;
use crate::http::forwarded::ClientInfo;
use crate::session::Session;
use crate::state::App;

/// The outcome: the live session, if any, and the `Set-Cookie` values the
/// response must carry (a slid or refreshed session, or a cleared one).
pub struct Current {
    pub session: Option<Session>,
    pub cookies: Vec<String>,
}

/// Resolves the request's session. `Err` only when the session store is
/// unreachable: never a pass without a checked session.
pub async fn current(
    app: &App,
    headers: &HeaderMap,
    client: &ClientInfo,
) -> Result<Current, Error> {
    let loaded = app.sessions.load(headers).await?;
    let domain = app.cookie_domain(client);
    let Some(mut session) = loaded.session else {
        let cookies = if loaded.present {
            app.sessions.clear(loaded.chunks, domain)
        } else {
            Vec::new()
        };
        return Ok(Current {
            session: None,
            cookies,
        });
    };
    let mut cookies = Vec::new();
    match refresh::ensure_fresh(app, &mut session).await {
        refresh::Outcome::Unchanged => {}
        refresh::Outcome::Refreshed | refresh::Outcome::Adopted => {
            // `database`: the record holds the new tokens already; `jwt`:
            // they travel in a new cookie.
            if app.sessions.database().is_none() {
                cookies = app
                    .sessions
                    .save(&mut session, loaded.chunks, domain)
                    .await?;
                session.needs_refresh = false;
            }
        }
        refresh::Outcome::Ended => {
            let ended = crate::session::Loaded {
                session: Some(session),
                chunks: loaded.chunks,
                present: true,
            };
            let cookies = app.sessions.destroy(&ended, domain).await?;
            return Ok(Current {
                session: None,
                cookies,
            });
        }
    }
    if session.needs_refresh {
        cookies.extend(app.sessions.slide(&mut session, loaded.chunks, domain));
    }
    Ok(Current {
        session: Some(session),
        cookies,
    })
}
