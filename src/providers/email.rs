//! The `email` provider (Auth.js magic links): its settings, the rules an
//! e-mail address must pass before anything is stored or sent, the
//! one-time token (only its hash is ever stored) and the message that
//! carries the link. Sending over SMTP is in [`smtp`]; the HTTP flow, the
//! store and the rate limits are in `crate::authn::email`.

pub mod smtp;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

use crate::config::raw::RawProvider;
use crate::config::validate::parse_duration;
use crate::crypto::{random_token, sha256_hex};

/// An `email` provider, validated; its SMTP transport is built once.
#[derive(Debug)]
pub struct EmailConfig {
    pub from: Mailbox,
    /// How long a link stays valid (Auth.js `maxAge`, 24 h by default).
    pub max_age: Duration,
    pub rate_limit: RateLimit,
    pub mailer: smtp::Mailer,
}

/// Sign-in e-mails allowed per address and per client IP in one window;
/// `0` turns that limit off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_email: u64,
    pub per_ip: u64,
    pub window: Duration,
}

/// Why an address was refused; the message is shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    Empty,
    TooLong,
    NotPlain,
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl AddressError {
    pub fn message(self) -> &'static str {
        match self {
            AddressError::Empty => "Enter your e-mail address.",
            AddressError::TooLong => "The e-mail address is too long.",
            AddressError::NotPlain => {
                "Enter one plain e-mail address, like name@example.com: no name, no angle brackets, no commas, no spaces."
            }
        }
    }
}

/// Trims and lower-cases an address, and accepts only one plain ASCII
/// `local@domain` (RFC 5321 §4.1.2 dot-atom, §4.5.3.1 lengths): no display
/// name, no brackets, no list, no quoting, no comments, no control
/// characters. Whatever passes can go into a mail header as it is.
pub fn normalize_address(raw: &str) -> Result<String, AddressError> {
    let a = raw.trim().to_ascii_lowercase();
    if a.is_empty() {
        return Err(AddressError::Empty);
    }
    if a.len() > 254 {
        return Err(AddressError::TooLong);
    }
    let (local, domain) = a.split_once('@').ok_or(AddressError::NotPlain)?;
    // RFC 5322 atext, less the characters no real mailbox needs and some
    // mail software treats specially (`%`, `!` source routes; `|`, backtick).
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"+-_.=#$&'*/?^{}~".contains(&b);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.bytes().all(atext)
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain_ok = domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if local_ok && domain_ok {
        Ok(a)
    } else {
        Err(AddressError::NotPlain)
    }
}

/// A fresh one-time token: 256 random bits. Not `Clone`: it goes into one
/// link, and only its hash is kept.
pub struct Token(String);

impl Token {
    pub fn generate() -> Self {
        Token(random_token(32))
    }

    /// The token for the link. Whoever reads it can sign in as the
    /// address it was sent to, until it is used or expires.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A token as we mint them: 43 base64url characters.
pub fn well_formed_token(t: &str) -> bool {
    t.len() == 43
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The store key part for a token sent to `email`: SHA-256 over both, so
/// the store holds neither, and a token is only found together with the
/// address it was sent to (Auth.js keys tokens by identifier and token).
pub fn token_hash(email: &str, token: &str) -> String {
    sha256_hex(format!("portcullis.email\0{email}\0{token}").as_bytes())
}

/// The message carrying the link, to one normalised address.
pub fn message(cfg: &EmailConfig, to: &str, link: &str, site: &str) -> Result<Message, String> {
    let to = Mailbox::from_str(to).map_err(|e| e.to_string())?;
    let minutes = cfg.max_age.as_secs() / 60;
    let valid = if minutes >= 120 {
        format!("{} hours", minutes / 60)
    } else {
        format!("{minutes} minutes")
    };
    let text = format!(
        "Sign in to {site}\r\n\r\n{link}\r\n\r\nThe link works once, for {valid}.\r\nIf you did not ask for it, ignore this e-mail.\r\n"
    );
    let esc = crate::http::pages::esc;
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Sign in to <strong>{}</strong></p><p><a href=\"{}\">Sign in</a></p><p>The link works once, for {valid}. If you did not ask for it, ignore this e-mail.</p></body></html>",
        esc(site),
        esc(link)
    );
    Message::builder()
        .from(cfg.from.clone())
        .to(to)
        .subject(format!("Sign in to {site}"))
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| e.to_string())
}

/// Keys only an `email` provider has: the first one set, if any.
pub fn email_only_key(p: &RawProvider) -> Option<&'static str> {
    let r = &p.rate_limit;
    [
        ("server", p.server.is_some()),
        ("from", p.from.is_some()),
        ("username", p.username.is_some()),
        ("password", p.password.is_some()),
        ("password_file", p.password_file.is_some()),
        ("starttls", p.starttls.is_some()),
        ("max_age", p.max_age.is_some()),
        (
            "rate_limit",
            r.per_email.is_some() || r.per_ip.is_some() || r.window.is_some(),
        ),
    ]
    .into_iter()
    .find(|(_, set)| *set)
    .map(|(k, _)| k)
}

/// Keys of the other provider types, which an `email` provider refuses
/// (it shares `ca_file` and `timeout` with them).
fn foreign_key(p: &RawProvider) -> Option<&'static str> {
    if p.users_file.is_some() {
        return Some("users_file");
    }
    if p.users.is_some() {
        return Some("users");
    }
    crate::config::validate::remote_only_keys(p)
        .into_iter()
        .find(|k| !matches!(*k, "ca_file" | "timeout"))
}

/// One config problem: (key under the provider, message, fix).
pub type Problem = (String, String, String);

fn problem(key: &str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
    (key.to_string(), message.into(), fix.into())
}

/// An `email` provider's settings, or every problem with them.
pub fn from_raw(
    p: &RawProvider,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<EmailConfig, Vec<Problem>> {
    let mut bad: Vec<Problem> = Vec::new();
    if let Some(k) = foreign_key(p) {
        bad.push(problem(
            k,
            format!("`{k}` is not a setting of email providers"),
            "remove it, or give it its own provider of the right type",
        ));
    }
    let from = match p.from.as_deref() {
        None => {
            bad.push(problem(
                "from",
                "an email provider needs a from address",
                "set from, like `Portcullis <no-reply@example.com>`",
            ));
            None
        }
        Some(f) if f.contains(['\r', '\n']) => {
            bad.push(problem(
                "from",
                "the from address spans lines",
                "write it on one line",
            ));
            None
        }
        Some(f) => match Mailbox::from_str(f.trim()) {
            Ok(m) => Some(m),
            Err(e) => {
                bad.push(problem(
                    "from",
                    format!("{f:?} is not an address: {e}"),
                    "write no-reply@example.com or `Name <no-reply@example.com>`",
                ));
                None
            }
        },
    };
    let duration = |bad: &mut Vec<Problem>, k: &str, v: Option<&str>, default: Duration| match v {
        None => default,
        Some(v) => match parse_duration(v) {
            Some(d) if !d.is_zero() => d,
            _ => {
                bad.push(problem(
                    k,
                    format!("{v:?} is not a positive duration"),
                    "write a number with a unit: 30s, 15m, 24h",
                ));
                default
            }
        },
    };
    let max_age = duration(
        &mut bad,
        "max_age",
        p.max_age.as_deref(),
        Duration::from_secs(86_400),
    );
    let window = duration(
        &mut bad,
        "rate_limit.window",
        p.rate_limit.window.as_deref(),
        Duration::from_secs(3600),
    );
    let rate_limit = RateLimit {
        per_email: p.rate_limit.per_email.unwrap_or(5),
        per_ip: p.rate_limit.per_ip.unwrap_or(30),
        window,
    };
    let mailer = smtp::Mailer::from_raw(p, resolve, &mut bad);
    match (from, mailer) {
        (Some(from), Some(mailer)) if bad.is_empty() => Ok(EmailConfig {
            from,
            max_age,
            rate_limit,
            mailer,
        }),
        _ => Err(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalize_address("  Alice.Liddell+x@Example.COM \t").unwrap(),
            "alice.liddell+x@example.com"
        );
    }

    #[test]
    fn anything_but_one_plain_address_is_refused() {
        for bad in [
            "alice@example.com\r\nBcc: eve@evil.test",
            "alice@example.com\nbcc:eve@evil.test",
            "alice@example.com,eve@evil.test",
            "alice@example.com;eve@evil.test",
            "Alice <alice@example.com>",
            "<alice@example.com>",
            "\"alice\"@example.com",
            "alice@example.com (Alice)",
            "alice@@example.com",
            "alice@example.com@evil.test",
            "alice",
            "@example.com",
            "alice@",
            "alice@exa mple.com",
            ".alice@example.com",
            "al..ice@example.com",
            "alice@-example.com",
            "alice@example..com",
            "alice@[127.0.0.1]",
            "al\0ice@example.com",
            "élise@example.com",
        ] {
            assert_eq!(
                normalize_address(bad),
                Err(AddressError::NotPlain),
                "{bad:?}"
            );
        }
        assert_eq!(normalize_address("  "), Err(AddressError::Empty));
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(200));
        assert_eq!(normalize_address(&long), Err(AddressError::TooLong));
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(normalize_address(&long_local), Err(AddressError::NotPlain));
    }

    #[test]
    fn a_token_hash_binds_the_address() {
        let t = Token::generate();
        assert!(well_formed_token(t.expose()));
        assert_ne!(
            token_hash("a@example.com", t.expose()),
            token_hash("b@example.com", t.expose())
        );
        assert_eq!(token_hash("a@example.com", "x").len(), 64, "hex SHA-256");
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(!well_formed_token("short"));
    }
}
