//! Request bodies of the sign-in surface: URL-encoded forms and small JSON
//! objects, read with a size cap and a field-count cap.

use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::http::Error;

/// At most this many fields are read from a form.
const MAX_FIELDS: usize = 32;

/// A decoded `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

async fn read_capped(body: Incoming, max: usize) -> Result<bytes::Bytes, Error> {
    Limited::new(body, max)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::PayloadTooLarge
            } else {
                Error::BadRequest("The request body could not be read.")
            }
        })
}

impl Form {
    pub async fn read(headers: &HeaderMap, body: Incoming, max: usize) -> Result<Self, Error> {
        let ok = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        if !ok {
            return Err(Error::BadRequest(
                "Send the form as application/x-www-form-urlencoded.",
            ));
        }
        let bytes = read_capped(body, max).await?;
        Ok(Self::parse(&bytes))
    }

    pub fn parse(bytes: &[u8]) -> Self {
        Form(
            url::form_urlencoded::parse(bytes)
                .take(MAX_FIELDS)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub async fn read_json(body: Incoming, max: usize) -> Result<serde_json::Value, Error> {
    let bytes = read_capped(body, max).await?;
    serde_json::from_slice(&bytes).map_err(|_| Error::BadRequest("The request body is not JSON."))
}

/// The first value of `key` in a query string.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .take(MAX_FIELDS)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}
