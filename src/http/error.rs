//! The one place errors become responses.
//!
//! Every failure a handler can meet is an [`Error`]; [`Error::respond`]
//! picks the status and the body (HTML page for browsers, JSON for API
//! clients) with an exhaustive match. Bodies never carry internals: those
//! go to the log line, which shares a request id with the page.

use http::{Response, StatusCode};

use super::{Body, pages};

/// Auth.js error codes users see by name; anything else shows as
/// `Configuration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Configuration,
    AccessDenied,
    Verification,
    CredentialsSignin,
    MissingCsrf,
    OAuthCallbackError,
    OAuthAccountNotLinked,
    AccountNotLinked,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Configuration => "Configuration",
            ErrorCode::AccessDenied => "AccessDenied",
            ErrorCode::Verification => "Verification",
            ErrorCode::CredentialsSignin => "CredentialsSignin",
            ErrorCode::MissingCsrf => "MissingCSRF",
            ErrorCode::OAuthCallbackError => "OAuthCallbackError",
            ErrorCode::OAuthAccountNotLinked => "OAuthAccountNotLinked",
            ErrorCode::AccountNotLinked => "AccountNotLinked",
        }
    }

    /// Reads `?error=`; unknown codes show as `Configuration`, like Auth.js.
    pub fn parse(s: &str) -> Self {
        [
            ErrorCode::AccessDenied,
            ErrorCode::Verification,
            ErrorCode::CredentialsSignin,
            ErrorCode::MissingCsrf,
            ErrorCode::OAuthCallbackError,
            ErrorCode::OAuthAccountNotLinked,
            ErrorCode::AccountNotLinked,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .unwrap_or(ErrorCode::Configuration)
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Configuration => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::AccessDenied | ErrorCode::Verification | ErrorCode::MissingCsrf => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::CredentialsSignin
            | ErrorCode::OAuthCallbackError
            | ErrorCode::OAuthAccountNotLinked
            | ErrorCode::AccountNotLinked => StatusCode::BAD_REQUEST,
        }
    }

    /// What the page says; never anything from the request.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Configuration => {
                "There is a problem with the server configuration. Check the server logs for more information."
            }
            ErrorCode::AccessDenied => "You do not have permission to sign in.",
            ErrorCode::Verification => {
                "The sign in link is no longer valid. It may have been used already or it may have expired."
            }
            ErrorCode::CredentialsSignin => {
                "Sign in failed. Check the details you provided are correct."
            }
            ErrorCode::MissingCsrf => {
                "The sign-in form expired or was sent from another site. Go back, reload the page and try again."
            }
            ErrorCode::OAuthCallbackError => {
                "The sign-in with the identity provider did not complete. Try again."
            }
            ErrorCode::OAuthAccountNotLinked => {
                "To confirm your identity, sign in with the same account you used originally."
            }
            ErrorCode::AccountNotLinked => "This account is linked to another user.",
        }
    }
}

/// Everything that can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not signed in")]
    Unauthenticated,
    #[error("access denied")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("identity provider unreachable: {0}")]
    IdentityProvider(String),
}

/// Who failed: drives the status class, the log level and (later) metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Upstream,
    Internal,
}

impl Error {
    pub fn source(&self) -> Source {
        match self {
            Error::Unauthenticated
            | Error::Forbidden
            | Error::NotFound
            | Error::MethodNotAllowed
            | Error::BadRequest(_)
            | Error::PayloadTooLarge => Source::Client,
            Error::UpstreamUnreachable(_)
            | Error::UpstreamTimeout
            | Error::Unavailable(_)
            | Error::Store(_)
            | Error::IdentityProvider(_) => Source::Upstream,
            Error::Internal(_) => Source::Internal,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UpstreamUnreachable(_) | Error::IdentityProvider(_) => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::Unavailable(_) | Error::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short public explanation; internals stay in the log.
    fn public_message(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "You need to sign in to see this page.",
            Error::Forbidden => "You are signed in, but not allowed to see this page.",
            Error::NotFound => "There is nothing here.",
            Error::MethodNotAllowed => "This address does not accept that method.",
            Error::BadRequest(why) => why,
            Error::PayloadTooLarge => "The request was too large.",
            Error::UpstreamUnreachable(_) => {
                "The application behind the sign-in could not be reached."
            }
            Error::UpstreamTimeout => "The application behind the sign-in did not answer in time.",
            Error::Unavailable(why) => why,
            Error::IdentityProvider(_) => {
                "The identity provider could not be reached. Try signing in again in a moment."
            }
            Error::Store(_) => {
                "Sign-in is unavailable for a moment: the session store cannot be reached. Try again shortly."
            }
            Error::Internal(_) => "Something went wrong on our side.",
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "Unauthenticated",
            Error::Forbidden => "AccessDenied",
            Error::NotFound => "NotFound",
            Error::MethodNotAllowed => "MethodNotAllowed",
            Error::BadRequest(_) => "BadRequest",
            Error::PayloadTooLarge => "PayloadTooLarge",
            Error::UpstreamUnreachable(_) => "BadGateway",
            Error::UpstreamTimeout => "GatewayTimeout",
            Error::Unavailable(_) | Error::Store(_) => "Unavailable",
            Error::IdentityProvider(_) => "IdentityProviderUnavailable",
            Error::Internal(_) => "Internal",
        }
    }

    /// The response for this error: a page for browsers, JSON otherwise.
    pub fn respond(&self, wants_html: bool, base_path: &str) -> Response<Body> {
        let status = self.status();
        let request_id = super::current_request_id();
        match self.source() {
            Source::Client => {
                tracing::debug!(%status, request_id, error = %self, "request refused")
            }
            Source::Upstream => {
                tracing::warn!(%status, request_id, error = %self, "upstream failure")
            }
            Source::Internal => {
                tracing::error!(%status, request_id, error = %self, "internal error")
            }
        }
        if wants_html {
            let title = status.canonical_reason().unwrap_or("Error");
            let signin = matches!(self, Error::Unauthenticated | Error::Forbidden)
                .then(|| format!("{base_path}/signin"));
            super::html(
                status,
                pages::problem(title, self.public_message(), signin.as_deref(), &request_id),
            )
        } else {
            super::json(
                status,
                &serde_json::json!({ "error": self.code(), "message": self.public_message(), "requestId": request_id }),
            )
        }
    }
}
