//! A real, certified OpenID provider for the OIDC tests: the npm package
//! `oidc-provider`, run by `tests/fixtures/idp/idp.mjs` (see the head of
//! that file for its whole contract), plus helpers that play the user's
//! part at the IdP: [`idp_login`], [`idp_logout`], [`form_post_fields`].

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use super::{Browser, Resp, free_port, html_unescape, repo_root};

/// The password of every IdP user.
pub const IDP_PASSWORD: &str = "idp-password";
pub const CLIENT_ID: &str = "portcullis";
pub const CLIENT_SECRET: &str = "portcullis-client-secret-0123456789";

/// The IdP, running; killed on drop.
pub struct Idp {
    /// `http://127.0.0.1:<port>` and the config's `issuer_path` (none by
    /// default: no trailing slash).
    pub issuer: String,
    pub port: u16,
    child: Child,
    logs: Arc<Mutex<String>>,
}

impl Idp {
    /// Starts the IdP with `config` (the `IDP_CONFIG` JSON) on a free port;
    /// waits (20 s at most) for its ready line.
    pub async fn start(config: serde_json::Value) -> Self {
        let dir = repo_root().join("tests/fixtures/idp");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "tests/fixtures/idp/node_modules is missing: run tests/run, or npm ci --prefix tests/fixtures/idp"
        );
        let issuer_path = config["issuer_path"].as_str().unwrap_or("").to_string();
        let config = config.to_string();
        // The port was free a moment ago; if someone took it since, try another.
        let mut last_logs = String::new();
        for _ in 0..3 {
            match tokio::task::spawn_blocking({
                let config = config.clone();
                let script = dir.join("idp.mjs");
                move || spawn(&script, &config)
            })
            .await
            .unwrap()
            {
                Ok(mut idp) => {
                    idp.issuer.push_str(&issuer_path);
                    return idp;
                }
                Err((logs, retry)) => {
                    last_logs = logs;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("the IdP did not start:\n{last_logs}");
    }

    /// `{client_id: portcullis}` with [`CLIENT_SECRET`], the given redirect
    /// and post-logout URIs, and three users: alice, bob and mallory
    /// (whose e-mail is not verified).
    pub fn default_config(redirect_uri: &str, post_logout: &[&str]) -> serde_json::Value {
        json!({
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [redirect_uri],
                "post_logout_redirect_uris": post_logout,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }],
            "users": [
                {
                    "sub": "alice-sub",
                    "email": "alice@example.com",
                    "email_verified": true,
                    "name": "Alice Liddell",
                    "preferred_username": "alice",
                    "groups": ["admins", "staff"],
                },
                {
                    "sub": "bob-sub",
                    "email": "bob@other.org",
                    "email_verified": true,
                    "name": "Bob",
                    "preferred_username": "bob",
                    "groups": ["staff"],
                },
                {
                    "sub": "mallory-sub",
                    "email": "mallory@example.com",
                    "email_verified": false,
                    "name": "Mallory",
                    "preferred_username": "mallory",
                    "groups": [],
                },
            ],
        })
    }

    /// `path` under the issuer (where the test hooks are too).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }

    /// Requests to the token endpoint so far, by grant type:
    /// `{"authorization_code": n, "refresh_token": n}` (failed ones too).
    pub async fn counters(&self) -> serde_json::Value {
        let r = Browser::api().get(&self.url("/test/counters")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.json()
    }

    pub async fn reset_counters(&self) {
        let r = Browser::api()
            .post_form(&self.url("/test/counters/reset"), &[])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// Delays every later response (but the test hooks') by `ms`.
    pub async fn set_delay_ms(&self, ms: u64) {
        let r = Browser::api()
            .post_form(&self.url(&format!("/test/delay?ms={ms}")), &[])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// What the IdP printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Kills the IdP (SIGKILL) and waits for it: the IdP going down.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts one IdP process; on failure (logs, whether another port may help).
fn spawn(script: &std::path::Path, config: &str) -> Result<Idp, (String, bool)> {
    let port = free_port();
    let mut child = Command::new("node")
        .arg(script)
        .env("IDP_PORT", port.to_string())
        .env("IDP_CONFIG", config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is installed");
    let logs = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
    let pipe = |stream: Box<dyn Read + Send>, ready: bool| {
        let sink = logs.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if ready && line.starts_with("idp listening on http://") {
                    let _ = tx.send(Some(line.clone()));
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
            // End of stream: the process is gone (or closed it).
            let _ = tx.send(None);
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()), true);
    let err = pipe(Box::new(child.stderr.take().unwrap()), false);
    drop(tx);
    let issuer = format!("http://127.0.0.1:{port}");
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Some(line)) => {
            assert_eq!(line, format!("idp listening on {issuer}"));
            Ok(Idp {
                issuer,
                port,
                child,
                logs,
            })
        }
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = out.join();
            let _ = err.join();
            let logs = logs.lock().unwrap().clone();
            let retry = logs.contains("EADDRINUSE");
            Err((logs, retry))
        }
    }
}

/// `scheme://host:port` of an absolute URL.
fn origin_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap_or_else(|e| panic!("not an absolute URL ({e}): {url}"));
    u.origin().ascii_serialization()
}

/// `location` resolved against `base`.
fn resolve(base: &str, location: &str) -> String {
    url::Url::parse(base)
        .unwrap()
        .join(location)
        .unwrap_or_else(|e| panic!("bad Location ({e}): {location}"))
        .to_string()
}

/// Plays the user at the IdP: from `authorize_url` (the Location that the
/// client sent), follows the IdP's redirects, fills its login form with
/// `login` and [`IDP_PASSWORD`] when it shows one, and returns the first
/// response that leaves the IdP without following it: a redirect whose
/// Location points back at the client (code or error), or, for
/// `response_mode=form_post`, the auto-submitting form page (read it with
/// [`form_post_fields`]). With an IdP session already there, no form shows
/// and the redirects lead straight back. Panics on anything else (an IdP
/// error page, a refused login), with the page.
pub async fn idp_login(b: &mut Browser, authorize_url: &str, login: &str) -> Resp {
    let origin = origin_of(authorize_url);
    let mut url = authorize_url.to_string();
    let mut r = b.get(&url).await;
    let mut posted = false;
    for _ in 0..20 {
        if r.status.is_redirection() {
            let next = resolve(&url, r.location());
            if origin_of(&next) != origin {
                return r;
            }
            url = next;
            r = b.get(&url).await;
            continue;
        }
        if let Some(action) = login_form_action(&r) {
            assert!(
                !posted,
                "the IdP refused the login {login:?} ({}): {}",
                r.status, r.body
            );
            posted = true;
            url = resolve(&url, &action);
            r = b
                .post_form(&url, &[("login", login), ("password", IDP_PASSWORD)])
                .await;
            continue;
        }
        if r.body.contains("<form") {
            // An auto-submitting form: back to the client (form_post), or
            // to the IdP itself (signing the previous account out when
            // another one logs in): post it as its script would.
            let (action, fields) = form_post_fields(&r);
            let next = resolve(&url, &action);
            if origin_of(&next) != origin {
                return r;
            }
            let fields: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            url = next;
            r = b.post_form(&url, &fields).await;
            continue;
        }
        panic!(
            "unexpected answer from the IdP at {url} ({}): {}",
            r.status, r.body
        );
    }
    panic!("too many redirects at the IdP, last at {url}");
}

/// Plays the user at the IdP's end-session endpoint: from `end_session_url`
/// (the Location that the client sent), confirms the sign-out form (it posts
/// its hidden inputs, as its script would), follows the IdP's redirects and
/// returns the first redirect leaving the IdP (to the
/// post_logout_redirect_uri), or the IdP's own "Signed out" page when there
/// is nowhere to go back to.
pub async fn idp_logout(b: &mut Browser, end_session_url: &str) -> Resp {
    let origin = origin_of(end_session_url);
    let mut url = end_session_url.to_string();
    let mut r = b.get(&url).await;
    for _ in 0..10 {
        if r.status.is_redirection() {
            let next = resolve(&url, r.location());
            if origin_of(&next) != origin {
                return r;
            }
            url = next;
            r = b.get(&url).await;
            continue;
        }
        // Our sign-out page, or the library's own when there is no session:
        // both a form with the hidden inputs xsrf and logout=yes.
        if r.body.contains("name=\"xsrf\"") {
            let (action, fields) = form_post_fields(&r);
            let fields: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            url = resolve(&url, &action);
            r = b.post_form(&url, &fields).await;
            continue;
        }
        assert_eq!(
            r.status,
            StatusCode::OK,
            "IdP sign-out at {url}: {}",
            r.body
        );
        return r;
    }
    panic!("too many redirects at the IdP, last at {url}");
}

/// The action of the IdP's login form on a page, if it shows one.
fn login_form_action(r: &Resp) -> Option<String> {
    if !r.body.contains("name=\"password\"") {
        return None;
    }
    let (action, _) = form_post_fields(r);
    action.contains("/interaction/").then_some(action)
}

/// The first form on a page: its `action` (as written, HTML-unescaped) and
/// its hidden inputs, in order. For oidc-provider's `form_post` answers and
/// its sign-out page: post the fields to the action to do what their
/// script would.
pub fn form_post_fields(r: &Resp) -> (String, Vec<(String, String)>) {
    let start = r
        .body
        .find("<form")
        .unwrap_or_else(|| panic!("no form on the page ({}): {}", r.status, r.body));
    let form = &r.body[start..];
    let form = &form[..form.find("</form>").unwrap_or(form.len())];
    let tag = &form[..form.find('>').unwrap_or(form.len())];
    let action = attr(tag, "action").unwrap_or_default();
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        rest = &rest[i..];
        let end = rest.find('>').unwrap_or(rest.len());
        let input = &rest[..end];
        if attr(input, "type").as_deref() == Some("hidden")
            && let Some(name) = attr(input, "name")
        {
            fields.push((name, attr(input, "value").unwrap_or_default()));
        }
        rest = &rest[end..];
    }
    (action, fields)
}

/// The value of `name="..."` in one tag, HTML-unescaped.
fn attr(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(html_unescape(&tag[start..end]))
}
