//! CSRF protection by double submit, as Auth.js does it: the cookie holds
//! `token|sha256hex(token + secret)`, every state-changing POST carries
//! `csrfToken` in its form. The cookie is reused while valid, so several
//! tabs share one token and none overwrites another's.

use http::HeaderMap;

use crate::crypto::{Secret, ct_eq, sha256_hex};
use crate::http::cookies::{self, CookieNames, SameSite, SetCookie};

pub struct Csrf {
    secrets: Vec<Secret>,
    cookie: String,
    secure: bool,
}

impl Csrf {
    pub fn new(secrets: &[Secret], names: &CookieNames) -> Self {
        Csrf {
            secrets: secrets.to_vec(),
            cookie: names.csrf.clone(),
            secure: names.secure,
        }
    }

    fn hash(token: &str, secret: &Secret) -> String {
        sha256_hex(format!("{token}{}", secret.expose()).as_bytes())
    }

    /// The token in the request's cookie, if its hash checks out.
    fn cookie_token<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        let raw = cookies::get(headers, &self.cookie)?;
        let (token, hash) = raw.split_once("%7C").or_else(|| raw.split_once('|'))?;
        if token.is_empty() || token.len() > 128 {
            return None;
        }
        self.secrets
            .iter()
            .any(|s| ct_eq(Self::hash(token, s).as_bytes(), hash.as_bytes()))
            .then_some(token)
    }

    /// The token for a page, and a `Set-Cookie` when a new one was made.
    pub fn token(&self, headers: &HeaderMap) -> (String, Option<String>) {
        if let Some(t) = self.cookie_token(headers) {
            return (t.to_string(), None);
        }
        let token = crate::crypto::hex(&{
            let mut b = [0u8; 32];
            crate::crypto::fill_random(&mut b);
            b
        });
        let value = match self.secrets.first() {
            Some(s) => format!("{token}%7C{}", Self::hash(&token, s)),
            None => String::new(),
        };
        let cookie = SetCookie {
            name: &self.cookie,
            value: &value,
            expires: None,
            max_age: None,
            domain: None,
            http_only: true,
            secure: self.secure,
            path: "/",
            same_site: SameSite::Lax,
        }
        .render();
        (token, Some(cookie))
    }

    /// The form's token matches the cookie's, and the cookie is ours.
    pub fn verify(&self, headers: &HeaderMap, form_token: Option<&str>) -> bool {
        match (self.cookie_token(headers), form_token) {
            (Some(c), Some(f)) => ct_eq(c.as_bytes(), f.as_bytes()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CookieConfig;
    use http::HeaderValue;

    fn csrf(secret: &str) -> Csrf {
        let names = CookieNames::new(&CookieConfig::default());
        Csrf::new(&[Secret::new(secret.into())], &names)
    }

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(set_cookie.split(';').next().unwrap()).unwrap(),
        );
        h
    }

    #[test]
    fn double_submit_needs_both_halves() {
        let c = csrf("0123456789abcdef0123456789abcdef");
        let (token, cookie) = c.token(&HeaderMap::new());
        let h = with_cookie(&cookie.unwrap());
        assert!(c.verify(&h, Some(&token)));
        assert!(!c.verify(&h, Some("forged")));
        assert!(!c.verify(&h, None));
        assert!(!c.verify(&HeaderMap::new(), Some(&token)));
        // the same cookie is reused, not replaced
        assert_eq!(c.token(&h), (token.clone(), None));
    }

    #[test]
    fn a_cookie_minted_without_the_secret_is_refused() {
        let c = csrf("0123456789abcdef0123456789abcdef");
        let other = csrf("another-secret-another-secret-xx");
        let (token, cookie) = other.token(&HeaderMap::new());
        assert!(!c.verify(&with_cookie(&cookie.unwrap()), Some(&token)));
        let forged = format!("authjs.csrf-token=aaaa%7C{}", sha256_hex(b"aaaa"));
        assert!(!c.verify(&with_cookie(&forged), Some("aaaa")));
    }
}
