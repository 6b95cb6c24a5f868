//! The SMTP side of the `email` provider: one `lettre` transport per
//! provider, built from `server` (`smtp://host:587` with STARTTLS,
//! `smtps://host:465` with TLS from the first byte), the credentials and
//! `ca_file`; rustls over aws-lc-rs, the system's roots plus `ca_file`.
//! Every send is bounded by `timeout`.

use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Problem, problem};
use crate::config::raw::RawProvider;
use crate::config::secret::read_secret_file;
use crate::config::validate::parse_duration;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtps://`: TLS from the first byte (RFC 8314 §3.3).
    Tls,
    /// `smtp://` with `STARTTLS` (RFC 3207), refusing servers without it.
    StartTlsRequired,
    /// `smtp://`, `STARTTLS` when the server offers it (`starttls: opportunistic`).
    StartTlsOpportunistic,
    /// `smtp://` in clear text (`starttls: never`): a relay on the same host.
    Plain,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Tls => "tls",
            Security::StartTlsRequired => "required",
            Security::StartTlsOpportunistic => "opportunistic",
            Security::Plain => "never",
        }
    }
}

/// A built SMTP transport and what it was built from (no secrets).
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `smtp://host:port`, without credentials: for logs and `check`.
    pub server: String,
    pub security: Security,
    pub username: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("security", &self.security)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Sends one message; the whole exchange is bounded by twice `timeout`
    /// (lettre bounds each step by `timeout` already).
    pub async fn send(&self, msg: Message) -> Result<(), String> {
        match tokio::time::timeout(self.timeout * 2, self.transport.send(msg)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Builds the transport from a provider's settings; problems go to `bad`.
    pub(super) fn from_raw(
        p: &RawProvider,
        resolve: &dyn Fn(&str) -> PathBuf,
        bad: &mut Vec<Problem>,
    ) -> Option<Mailer> {
        let before = bad.len();
        let Some(raw) = p.server.as_deref() else {
            bad.push(problem(
                "server",
                "an email provider needs an SMTP server",
                "set server, like smtp://smtp.example.com:587 (STARTTLS) or smtps://smtp.example.com:465 (TLS)",
            ));
            return None;
        };
        let url = match url::Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => u,
            _ => {
                bad.push(problem(
                    "server",
                    "not an SMTP server URL",
                    "write smtp://host:587 (STARTTLS) or smtps://host:465 (TLS)",
                ));
                return None;
            }
        };
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let tls = url.scheme() == "smtps";
        let port = url.port().unwrap_or(if tls { 465 } else { 587 });
        let security = match (tls, p.starttls.as_deref()) {
            (true, None) => Security::Tls,
            (true, Some(_)) => {
                bad.push(problem(
                    "starttls",
                    "smtps:// is TLS from the first byte: starttls does not apply",
                    "remove starttls, or use smtp:// for STARTTLS",
                ));
                Security::Tls
            }
            (false, None | Some("required")) => Security::StartTlsRequired,
            (false, Some("opportunistic")) => Security::StartTlsOpportunistic,
            (false, Some("never")) => Security::Plain,
            (false, Some(other)) => {
                bad.push(problem(
                    "starttls",
                    format!("unknown starttls mode {other:?}"),
                    "use required (default), opportunistic or never",
                ));
                Security::StartTlsRequired
            }
        };
        let (username, password) = credentials(p, &url, resolve, bad);
        let timeout = match p.timeout.as_deref().map(|t| (t, parse_duration(t))) {
            None => Duration::from_secs(10),
            Some((_, Some(d))) if !d.is_zero() => d,
            Some((t, _)) => {
                bad.push(problem(
                    "timeout",
                    format!("{t:?} is not a positive duration"),
                    "write a number with a unit: 5s, 30s",
                ));
                Duration::from_secs(10)
            }
        };
        let params = tls_parameters(&host, p.ca_file.as_deref().map(resolve), bad);
        if bad.len() > before {
            return None;
        }
        let params = params?;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(port)
            .timeout(Some(timeout))
            .tls(match security {
                Security::Tls => Tls::Wrapper(params),
                Security::StartTlsRequired => Tls::Required(params),
                Security::StartTlsOpportunistic => Tls::Opportunistic(params),
                Security::Plain => Tls::None,
            });
        if let (Some(u), Some(pw)) = (&username, password) {
            b = b
                .credentials(Credentials::new(u.clone(), pw))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        let shown_host = url.host_str().unwrap_or_default();
        Some(Mailer {
            transport: b.build(),
            server: format!("{}://{shown_host}:{port}", url.scheme()),
            security,
            username,
            timeout,
        })
    }
}

/// The user name and password: from `username` and `password` /
/// `password_file`, or from the URL's user info (the Auth.js
/// `EMAIL_SERVER` shape, `smtp://user:pass@host:587`), not both.
fn credentials(
    p: &RawProvider,
    url: &url::Url,
    resolve: &dyn Fn(&str) -> PathBuf,
    bad: &mut Vec<Problem>,
) -> (Option<String>, Option<String>) {
    let mut undecodable = false;
    let mut decode = |s: &str| {
        percent_decode(s).unwrap_or_else(|| {
            undecodable = true;
            String::new()
        })
    };
    let url_user = (!url.username().is_empty()).then(|| decode(url.username()));
    let url_pass = url.password().map(&mut decode);
    if undecodable {
        bad.push(problem(
            "server",
            "the user info in the URL is not valid percent-encoded UTF-8",
            "percent-encode special characters (@ as %40, : as %3A)",
        ));
    }
    if url_user.is_some()
        && (p.username.is_some() || p.password.is_some() || p.password_file.is_some())
    {
        bad.push(problem(
            "server",
            "the server URL carries credentials and username/password are set too",
            "keep one of them",
        ));
    }
    let password = match (&p.password, &p.password_file) {
        (Some(pw), None) => Some(pw.clone()),
        (None, Some(f)) => match read_secret_file(&resolve(f)) {
            Ok(s) => Some(s),
            Err(e) => {
                bad.push(problem(
                    "password_file",
                    e,
                    "point it at a readable file holding the SMTP password",
                ));
                None
            }
        },
        (Some(_), Some(_)) => {
            bad.push(problem(
                "password",
                "both password and password_file are set",
                "keep one of them",
            ));
            None
        }
        (None, None) => url_pass,
    };
    let username = p.username.clone().or(url_user);
    match (&username, &password) {
        (Some(_), None) => bad.push(problem(
            "password",
            "username is set but no password",
            "set password, password_file or PORTCULLIS_PROVIDERS__<n>__PASSWORD",
        )),
        (None, Some(_)) => bad.push(problem(
            "username",
            "a password is set but no username",
            "set username",
        )),
        _ => {}
    }
    (username, password)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// TLS for `host`: the system's roots, plus `ca_file`'s certificates.
fn tls_parameters(
    host: &str,
    ca_file: Option<PathBuf>,
    bad: &mut Vec<Problem>,
) -> Option<TlsParameters> {
    let mut b = TlsParameters::builder(host.to_string());
    if let Some(ca) = ca_file {
        match std::fs::read(&ca) {
            Ok(pem) => match Certificate::from_pem(&pem) {
                Ok(c) => b = b.add_root_certificate(c),
                Err(e) => {
                    bad.push(problem(
                        "ca_file",
                        format!("{}: {e}", ca.display()),
                        "point it at a PEM file of CA certificates",
                    ));
                    return None;
                }
            },
            Err(e) => {
                bad.push(problem(
                    "ca_file",
                    format!("cannot read {}: {e}", ca.display()),
                    "point it at a PEM file of CA certificates",
                ));
                return None;
            }
        }
    }
    match b.build_rustls() {
        Ok(p) => Some(p),
        Err(e) => {
            bad.push(problem(
                "server",
                format!("TLS setup for {host} failed: {e}"),
                "check the host name and ca_file",
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_user_info() {
        assert_eq!(percent_decode("a%40b%3Ac").as_deref(), Some("a@b:c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
