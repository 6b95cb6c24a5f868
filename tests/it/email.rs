//! E-mail sign-in (magic links) against a real SMTP server (aiosmtpd,
//! `tests/fixtures/smtp/server.py`, STARTTLS or implicit TLS, with AUTH)
//! and real Redis: the whole loop from the form to the upstream, one use
//! per link, expiry, another address, no enumeration, header injection,
//! rate limits shared by replicas, Redis down, and the open-redirect
//! corpus through the form's `callbackUrl`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::redis::{RedisOpts, RedisServer};
use crate::support::*;

const SMTP_USER: &str = "mailer";
const SMTP_PASSWORD: &str = "smtp-pass-word";

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    StartTls,
    Tls,
}

/// The real SMTP server, saving each message as `<n>.json` in its dir.
pub(crate) struct Smtp {
    child: Child,
    port: u16,
    mode: Mode,
    out: TempDir,
    certs: TempDir,
}

impl Smtp {
    pub(crate) fn start(mode: Mode) -> Self {
        let certs = TempDir::new("smtp-certs");
        let (_, cert, key) = test_certs(&certs);
        let out = TempDir::new("smtp-out");
        let port = free_port();
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/fixtures/smtp/server.py"))
            .args(["--port", &port.to_string(), "--dir"])
            .arg(out.path())
            .args(["--mode", if mode == Mode::Tls { "tls" } else { "starttls" }])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--user", SMTP_USER, "--password", SMTP_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP fixture");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert!(line.starts_with("READY"), "SMTP fixture: {line:?}");
        Smtp {
            child,
            port,
            mode,
            out,
            certs,
        }
    }

    fn ca(&self) -> PathBuf {
        self.certs.path().join("ca.pem")
    }

    fn url(&self) -> String {
        match self.mode {
            Mode::StartTls => format!("smtp://127.0.0.1:{}", self.port),
            Mode::Tls => format!("smtps://127.0.0.1:{}", self.port),
        }
    }

    /// The messages received so far, in order.
    pub(crate) fn mails(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(self.out.path())
            .unwrap()
            .filter_map(|e| {
                let p = e.ok()?.path();
                let n = p.file_stem()?.to_str()?.parse().ok()?;
                (p.extension()? == "json").then_some((n, p))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|(_, p)| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits (bounded, 10 s) until `n` messages arrived.
    pub(crate) async fn wait_mails(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.mails();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who the received messages went to, sorted (sends run concurrently).
fn recipients(smtp: &Smtp) -> Vec<String> {
    let mut to: Vec<String> = smtp
        .mails()
        .iter()
        .map(|m| m["rcpt_tos"][0].as_str().unwrap().to_string())
        .collect();
    to.sort();
    to
}

/// The provider item: the server, AUTH, the test CA, and `more` settings.
pub(crate) fn provider(smtp: &Smtp, more: &str) -> String {
    format!(
        "  - type: email\n    name: E-mail\n    server: {}\n    from: \"Portcullis <no-reply@example.com>\"\n    username: {SMTP_USER}\n    password: {SMTP_PASSWORD}\n    ca_file: {}\n    timeout: 5s\n{more}",
        smtp.url(),
        smtp.ca().display()
    )
}

fn store(redis: &RedisServer) -> String {
    format!(
        "store:\n  redis_url: \"{}\"\n  key_prefix: \"it:\"\n  timeout: 1s\n",
        redis.url()
    )
}

/// Real Redis, a real SMTP server in `mode`, and Portcullis with `conf`
/// plus the e-mail provider (`more` under its entry) and the store.
async fn email_site(mode: Mode, more: &str, conf: Conf) -> (RedisServer, Smtp, Portcullis) {
    let redis = RedisServer::start(RedisOpts::default());
    let smtp = Smtp::start(mode);
    let pc = Portcullis::start(conf.provider(&provider(&smtp, more)).extra(&store(&redis))).await;
    (redis, smtp, pc)
}

/// The CSRF token and a posted e-mail form.
pub(crate) async fn ask_link(
    b: &mut Browser,
    pc: &Portcullis,
    email: &str,
    callback: &str,
) -> Resp {
    let page = b.get(&pc.url("/auth/signin")).await;
    let csrf = page.hidden("csrfToken").unwrap();
    b.post_form(
        &pc.url("/auth/signin/email"),
        &[
            ("csrfToken", &csrf),
            ("callbackUrl", callback),
            ("email", email),
        ],
    )
    .await
}

/// The sign-in link in a received message, on the test's own origin.
pub(crate) fn link_in(mail: &serde_json::Value, pc: &Portcullis) -> String {
    let text = mail["text"].as_str().unwrap();
    let start = text
        .find("/auth/callback/email?")
        .expect("a link in the mail");
    let end = text[start..]
        .find(|c: char| c.is_whitespace())
        .map_or(text.len(), |e| start + e);
    pc.url(&text[start..end])
}

fn with_email(link: &str, email: &str) -> String {
    let mut url = url::Url::parse(link).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "email" {
                email.into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

pub(crate) async fn assert_verification_error(b: &mut Browser, pc: &Portcullis, r: &Resp) {
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert_eq!(r.location(), "/auth/error?error=Verification");
    let page = b.get(&pc.url(r.location())).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("no longer valid"), "{}", page.body);
}

async fn full_loop(mode: Mode) {
    let up = Upstream::start().await;
    let (redis, smtp, pc) = email_site(mode, "", Conf::default().upstream(&up.url())).await;
    let mut b = Browser::new();
    let page = b.get(&pc.url("/auth/signin")).await;
    assert!(
        page.body.contains("action=\"/auth/signin/email\"") && page.body.contains("type=\"email\""),
        "{}",
        page.body
    );
    let providers = Browser::api().get(&pc.url("/auth/providers")).await.json();
    assert_eq!(providers["email"]["type"], "email");

    let r = ask_link(&mut b, &pc, "  Alice@Example.COM ", "/app/page?x=1").await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert_eq!(
        r.location(),
        "/auth/verify-request?provider=email&type=email"
    );
    let page = b.get(&pc.url(r.location())).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Check your e-mail"), "{}", page.body);

    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails.len(), 1, "{}", pc.logs());
    let m = &mails[0];
    assert_eq!(m["rcpt_tos"], serde_json::json!(["alice@example.com"]));
    assert_eq!(m["to"], serde_json::json!(["alice@example.com"]));
    assert_eq!(m["mail_from"], "no-reply@example.com");
    assert_eq!(m["tls"], true, "the mail went over TLS");
    assert_eq!(m["login"], SMTP_USER, "AUTH as the configured user");
    let link = link_in(m, &pc);
    assert!(link.contains("email=alice%40example.com"), "{link}");
    // The store holds only the token's hash: neither token nor address.
    let token = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .unwrap()
        .1
        .into_owned();
    let dump = redis.dump_all();
    assert!(dump.contains("it:vt:"), "{dump}");
    assert!(!dump.contains(&token) && !dump.contains("alice@"), "{dump}");

    // The link, opened in another browser (the mail app's).
    let mut reader = Browser::new();
    let r = reader.get(&link).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}\n{}", r.body, pc.logs());
    assert_eq!(r.location(), "/app/page?x=1");
    assert!(reader.has_session());
    let me = reader.get(&pc.url("/auth/session")).await.json();
    assert_eq!(me["user"]["email"], "alice@example.com");
    assert_eq!(
        reader.get(&pc.url("/app/page")).await.status,
        StatusCode::OK
    );
    let seen = up.last();
    assert_eq!(
        seen.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(
        seen.header("x-auth-request-user"),
        Some("alice@example.com")
    );

    // Once only.
    let mut again = Browser::new();
    let r = again.get(&link).await;
    assert_verification_error(&mut again, &pc, &r).await;
    assert!(!again.has_session());
    assert!(redis.keys("it:vt:*").is_empty());
}

#[tokio::test]
async fn email_link_over_starttls_with_auth_signs_in_once() {
    full_loop(Mode::StartTls).await;
}

#[tokio::test]
async fn email_link_over_implicit_tls_signs_in_once() {
    full_loop(Mode::Tls).await;
}

#[tokio::test]
async fn email_link_expired_or_for_another_address_fails() {
    let (_redis, smtp, pc) = email_site(Mode::StartTls, "    max_age: 2\n", Conf::default()).await;
    let mut b = Browser::new();
    ask_link(&mut b, &pc, "alice@example.com", "/").await;
    ask_link(&mut b, &pc, "bob@other.org", "/").await;
    let mails = smtp.wait_mails(2).await;
    assert_eq!(mails.len(), 2, "{}", pc.logs());
    let to = |who: &str| {
        let m = mails.iter().find(|m| m["rcpt_tos"][0] == who).unwrap();
        link_in(m, &pc)
    };
    let (alice, bob) = (to("alice@example.com"), to("bob@other.org"));

    // Alice's token with Bob's (or any other) address: refused.
    for other in ["bob@other.org", "mallory@example.com", "alice@example.co"] {
        let r = b.get(&with_email(&alice, other)).await;
        assert_verification_error(&mut b, &pc, &r).await;
        assert!(!b.has_session());
    }
    // The same address written differently is the same address.
    let r = Browser::new()
        .get(&with_email(&bob, " BOB@Other.Org"))
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", pc.logs());
    assert_eq!(r.location(), "/");

    // Past max_age: refused.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let mut late = Browser::new();
    let r = late.get(&alice).await;
    assert_verification_error(&mut late, &pc, &r).await;
    assert!(!late.has_session());
    // A malformed link never reaches the store's answer.
    let r = late
        .get(&pc.url("/auth/callback/email?token=x&email=alice@example.com"))
        .await;
    assert_verification_error(&mut late, &pc, &r).await;
}

#[tokio::test]
async fn email_form_answers_the_same_for_every_address() {
    let (_redis, smtp, pc) = email_site(
        Mode::StartTls,
        "",
        Conf::default().extra("access:\n  allowed_domains: [example.com]\n"),
    )
    .await;
    let mut answers = Vec::new();
    for who in [
        "alice@example.com",
        "nobody-known@example.com",
        "eve@evil.test",
    ] {
        let mut b = Browser::new();
        let r = ask_link(&mut b, &pc, who, "/").await;
        answers.push((r.status, r.location().to_string(), r.body.clone()));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "answers differ: {answers:?}"
    );
    // Two mails (the allowed domain), none to the refused address.
    let mails = smtp.wait_mails(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to = recipients(&smtp);
    assert_eq!(mails.len(), 2);
    assert_eq!(to, ["alice@example.com", "nobody-known@example.com"]);
    assert!(pc.log_shows("the access rules refuse this address").await);
}

#[tokio::test]
async fn email_answer_never_waits_on_smtp() {
    // An SMTP server that accepts and then says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let redis = RedisServer::start(RedisOpts::default());
    let pc = Portcullis::start(
        Conf::default()
            .provider(&format!(
                "  - type: email\n    server: smtp://127.0.0.1:{port}\n    from: no-reply@example.com\n    timeout: 2s\n"
            ))
            .extra(&store(&redis)),
    )
    .await;
    let mut b = Browser::new();
    let started = Instant::now();
    let r = ask_link(&mut b, &pc, "alice@example.com", "/").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the answer took {:?}",
        started.elapsed()
    );
    // The send gives up on its own (twice `timeout`: 4 s), and says so.
    assert!(
        pc.log_shows("sign-in e-mail NOT sent").await,
        "{}",
        pc.logs()
    );
    drop(silent);
}

#[tokio::test]
async fn email_header_injection_attempts_are_refused_and_send_nothing() {
    let (redis, smtp, pc) = email_site(Mode::StartTls, "", Conf::default()).await;
    let long = format!("{}@example.com", "a".repeat(250));
    let attempts = [
        "alice@example.com\r\nBcc: eve@evil.test",
        "alice@example.com\nBcc: eve@evil.test",
        "alice@example.com\rBcc: eve@evil.test",
        "alice@example.com, eve@evil.test",
        "alice@example.com;eve@evil.test",
        "Alice <alice@example.com>",
        "<eve@evil.test>",
        "\"Alice\" alice@example.com",
        "alice@example.com <eve@evil.test>",
        "alice@example.com%0d%0abcc:eve@evil.test",
        "alice@example.com\0eve@evil.test",
        "",
        long.as_str(),
    ];
    for bad in attempts {
        let mut b = Browser::new();
        let r = ask_link(&mut b, &pc, bad, "/").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.body);
        assert!(r.body.contains("e-mail address"), "{bad:?}: {}", r.body);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(smtp.mails().is_empty(), "{:?}", smtp.mails());
    assert!(redis.keys("it:vt:*").is_empty());
    // No CSRF token, no mail either.
    let mut b = Browser::new();
    let r = b
        .post_form(
            &pc.url("/auth/signin/email"),
            &[("email", "alice@example.com"), ("callbackUrl", "/")],
        )
        .await;
    assert_eq!(r.location(), "/auth/error?error=MissingCSRF");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(smtp.mails().is_empty());
}

#[tokio::test]
async fn email_rate_limits_by_address_and_by_ip_across_replicas() {
    let redis = RedisServer::start(RedisOpts::default());
    let smtp = Smtp::start(Mode::StartTls);
    let conf = || {
        Conf::default()
            .provider(&provider(
                &smtp,
                "    rate_limit:\n      per_email: 2\n      per_ip: 4\n      window: 1h\n",
            ))
            .extra(&store(&redis))
    };
    let one = Portcullis::start(conf()).await;
    let two = Portcullis::start(conf()).await;
    let mut b = Browser::new();
    let mut answers = Vec::new();
    // Alice three times, on both replicas: the third is over her limit.
    for pc in [&one, &two, &one] {
        let r = ask_link(&mut b, pc, "alice@example.com", "/").await;
        answers.push((r.status, r.location().to_string()));
    }
    // Two more addresses: the fifth request from this IP is over its limit.
    for (pc, who) in [(&two, "bob@other.org"), (&one, "carol@example.com")] {
        let r = ask_link(&mut b, pc, who, "/").await;
        answers.push((r.status, r.location().to_string()));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(
        answers[0].1,
        "/auth/verify-request?provider=email&type=email"
    );
    smtp.wait_mails(3).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let to = recipients(&smtp);
    assert_eq!(
        to,
        ["alice@example.com", "alice@example.com", "bob@other.org"]
    );
    // The log lines an operator alerts on (they arrive through a pipe).
    for limit in ["email", "ip"] {
        let needle =
            format!("rate limit exceeded: no mail sent provider=\"email\" limit=\"{limit}\"");
        assert!(log_line(&one, &needle).await, "{needle}\n{}", one.logs());
    }
}

/// Whether a log line shows `needle` within 5 s, colours removed.
async fn log_line(pc: &Portcullis, needle: &str) -> bool {
    for _ in 0..100 {
        let mut plain = String::new();
        let mut esc = false;
        for c in pc.logs().chars() {
            match (esc, c) {
                (false, '\u{1b}') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => plain.push(c),
            }
        }
        if plain.contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn email_sign_in_fails_closed_when_redis_is_down() {
    let (mut redis, smtp, pc) = email_site(Mode::StartTls, "", Conf::default()).await;
    let mut b = Browser::new();
    ask_link(&mut b, &pc, "alice@example.com", "/").await;
    let link = link_in(&smtp.wait_mails(1).await[0], &pc);
    redis.stop();
    let r = ask_link(&mut b, &pc, "bob@other.org", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let r = Browser::new().get(&link).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(smtp.mails().len(), 1, "no mail while Redis is down");
}

#[tokio::test]
async fn email_callback_url_from_the_open_redirect_corpus_never_leaves_the_site() {
    const ALLOWED: &str = "www.whitelisteddomain.tld";
    let (redis, smtp, pc) = email_site(
        Mode::StartTls,
        "    rate_limit:\n      per_email: 0\n      per_ip: 0\n",
        Conf::default()
            .public_url(&format!("http://{ALLOWED}"))
            .extra(&format!(
                "redirects:\n  allowed_domains: [{ALLOWED}]\naccess:\n  allowed_emails: [alice@example.com]\n"
            )),
    )
    .await;
    let corpus = open_redirect_corpus();
    assert!(corpus.len() >= 559);
    let mut b = Browser::new();
    let page = b.get(&pc.url("/auth/signin")).await;
    let csrf = page.hidden("csrfToken").unwrap();
    // Every line, through the form: the answer is the verify-request
    // page, and the target kept with the token is safe. The address is
    // refused by the access rules, so no mail goes out for these.
    for payload in &corpus {
        let r = b
            .post_form(
                &pc.url("/auth/signin/email"),
                &[
                    ("csrfToken", &csrf),
                    ("callbackUrl", payload),
                    ("email", "eve@example.org"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{payload:?}: {}", r.body);
        assert_eq!(
            r.location(),
            "/auth/verify-request?provider=email&type=email"
        );
    }
    let keys = redis.keys("it:vt:*");
    assert_eq!(keys.len(), corpus.len());
    for k in &keys {
        let stored: serde_json::Value =
            serde_json::from_str(&redis.cmd(&["GET", k]).unwrap()).unwrap();
        crate::redirects::assert_safe(
            stored["callback"].as_str().unwrap(),
            "stored callback",
            &stored.to_string(),
        );
    }
    // A sample, end to end through the mail and the link.
    let sample: Vec<&String> = corpus.iter().step_by(37).collect();
    for payload in &sample {
        b.post_form(
            &pc.url("/auth/signin/email"),
            &[
                ("csrfToken", &csrf),
                ("callbackUrl", payload),
                ("email", "alice@example.com"),
            ],
        )
        .await;
    }
    let mails = smtp.wait_mails(sample.len()).await;
    assert_eq!(mails.len(), sample.len(), "{}", pc.logs());
    for (m, payload) in mails.iter().zip(&sample) {
        let text = m["text"].as_str().unwrap();
        assert!(
            text.contains(&format!("http://{ALLOWED}/auth/callback/email?")),
            "{text}"
        );
        let r = Browser::new().get(&link_in(m, &pc)).await;
        assert_eq!(r.status, StatusCode::FOUND, "{payload:?}: {}", r.body);
        crate::redirects::assert_safe(r.location(), "e-mail link", payload);
    }
}

/// `portcullis check` on a config with `provider` (and `store` unless
/// `no_store`): (exit code, stdout, stderr).
fn check(provider: &str, no_store: bool) -> (i32, String, String) {
    let dir = TempDir::new("email-check");
    let mut yaml = format!(
        "listen: 127.0.0.1:4180\npublic_url: https://auth.example.com\nsecrets: [\"{SECRET}\"]\nproviders:\n{provider}"
    );
    if !no_store {
        yaml += "store:\n  redis_url: redis://127.0.0.1:6379\n";
    }
    let cfg = dir.write("portcullis.yaml", &yaml);
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn email_provider_config_check_redacts_the_smtp_password() {
    let (code, out, err) = check(
        "  - type: email\n    server: smtp://mailer:s3cret-pass%40word@smtp.example.com\n    from: \"Example <no-reply@example.com>\"\n    max_age: 1h\n",
        false,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v["providers"][0];
    assert_eq!(p["type"], "email");
    assert_eq!(p["server"], "smtp://smtp.example.com:587");
    assert_eq!(p["starttls"], "required");
    assert_eq!(p["username"], "mailer");
    assert_eq!(p["password"], "<redacted>");
    assert_eq!(p["max_age"], "3600s");
    assert_eq!(p["rate_limit"]["per_email"], 5);
    assert!(!out.contains("s3cret") && !err.contains("s3cret"), "{out}");
}

#[test]
fn email_provider_config_problems_name_the_key_and_the_fix() {
    let ok =
        "  - type: email\n    server: smtp://smtp.example.com\n    from: no-reply@example.com\n";
    let cases: &[(String, bool, &[&str])] = &[
        (
            ok.into(),
            true,
            &["providers[0].type", "needs a store", "store.url"],
        ),
        (
            ok.replace("smtp://smtp.example.com", "http://smtp.example.com"),
            false,
            &["providers[0].server", "smtps://"],
        ),
        (
            format!("{ok}    starttls: sometimes\n"),
            false,
            &["providers[0].starttls", "opportunistic"],
        ),
        (
            ok.replace("smtp://", "smtps://") + "    starttls: required\n",
            false,
            &["providers[0].starttls", "does not apply"],
        ),
        (
            ok.replace("no-reply@example.com", "\"a, b <x>\""),
            false,
            &["providers[0].from"],
        ),
        (
            format!("{ok}    username: u\n"),
            false,
            &["providers[0].password", "no password"],
        ),
        (
            format!("{ok}    max_age: soon\n"),
            false,
            &["providers[0].max_age", "duration"],
        ),
        (
            format!("{ok}    issuer: https://idp.example.com\n"),
            false,
            &["providers[0].issuer", "not a setting of email providers"],
        ),
        (
            "  - type: credentials\n    users: []\n    server: smtp://x\n".into(),
            false,
            &["providers[0].server", "is for email providers"],
        ),
    ];
    for (provider, no_store, needles) in cases {
        let (code, _, err) = check(provider, *no_store);
        assert_ne!(code, 0, "{provider}");
        for n in *needles {
            assert!(err.contains(n), "{provider}: {n:?} not in\n{err}");
        }
    }
}

/// Guessing links is brute force like guessing passwords: after
/// `max_retries` wrong tokens for one address, that address is banned
/// (regulation) — its real link is refused, and the form sends it no mail.
#[tokio::test]
async fn email_link_guessing_is_banned_by_regulation() {
    let (_redis, smtp, pc) = email_site(
        Mode::StartTls,
        "",
        Conf::default().extra("regulation:\n  max_retries: 3\n  find_time: 1m\n  ban_time: 1m\n"),
    )
    .await;
    let mut b = Browser::new();
    ask_link(&mut b, &pc, "alice@example.com", "/").await;
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails.len(), 1, "{}", pc.logs());
    let real = link_in(&mails[0], &pc);
    let guess = |n: usize| {
        pc.url(&format!(
            "/auth/callback/email?token={}&email=alice%40example.com",
            &format!("{n:x}").repeat(43)[..43]
        ))
    };
    for n in 1..=3 {
        let r = b.get(&guess(n)).await;
        assert_verification_error(&mut b, &pc, &r).await;
    }
    // Banned: the real link is refused too (and stays unused).
    let r = b.get(&real).await;
    assert_verification_error(&mut b, &pc, &r).await;
    assert!(!b.has_session());
    assert!(pc.log_shows("banned by regulation").await, "{}", pc.logs());
    // The form answers as ever, but sends nothing while the ban lasts.
    let r = ask_link(&mut Browser::new(), &pc, "alice@example.com", "/").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.location().contains("/auth/verify-request"),
        "{}",
        r.location()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.mails().len(), 1);
    // Another address is not affected.
    ask_link(&mut Browser::new(), &pc, "bob@other.org", "/").await;
    assert_eq!(smtp.wait_mails(2).await.len(), 2);
}

/// The sign-in policy is applied before a mail goes out: an address the
/// `sign_in` rules refuse gets the same answer and no mail.
#[tokio::test]
async fn email_form_sends_nothing_to_addresses_the_sign_in_rules_refuse() {
    let (_redis, smtp, pc) = email_site(
        Mode::StartTls,
        "",
        Conf::default().extra(
            "sign_in:\n  default: deny\n  rules:\n    - effect: allow\n      domains: [example.com]\n",
        ),
    )
    .await;
    let refused = ask_link(&mut Browser::new(), &pc, "bob@other.org", "/").await;
    let allowed = ask_link(&mut Browser::new(), &pc, "alice@example.com", "/").await;
    assert_eq!(refused.status, allowed.status);
    assert_eq!(refused.location(), allowed.location());
    assert_eq!(smtp.wait_mails(1).await.len(), 1, "{}", pc.logs());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recipients(&smtp), vec!["alice@example.com".to_string()]);
    assert!(pc.log_shows("the sign-in policy").await, "{}", pc.logs());
}
