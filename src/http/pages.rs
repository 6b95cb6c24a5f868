//! Server-rendered pages: sign-in, sign-out, errors. Self-contained HTML
//! with inline CSS and no scripts or external assets; every value from a
//! request or the config is escaped.

use std::fmt::Write;

/// Escapes text for HTML content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "*{box-sizing:border-box}body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:#f4f5f7;font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328}main{background:#fff;border:1px solid #d8dee4;border-radius:10px;padding:2rem;width:100%;max-width:24rem;box-shadow:0 1px 3px rgba(0,0,0,.06)}h1{font-size:1.25rem;margin:0 0 1.25rem}label{display:block;font-size:.875rem;font-weight:600;margin:.75rem 0 .25rem}input{width:100%;padding:.6rem .7rem;border:1px solid #d0d7de;border-radius:6px;font:inherit}button{width:100%;margin-top:1.25rem;padding:.65rem;border:0;border-radius:6px;background:#1f6feb;color:#fff;font:inherit;font-weight:600;cursor:pointer}button:hover{background:#1a5fd0}.error{background:#ffebe9;border:1px solid #ff8182;border-radius:6px;padding:.6rem .75rem;margin-bottom:1rem;font-size:.9rem}.muted{color:#57606a;font-size:.8rem;margin-top:1.5rem}hr{border:0;border-top:1px solid #d8dee4;margin:1.5rem 0}a{color:#1f6feb}";

/// Wraps a page body in the common layout.
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"robots\" content=\"noindex\"><title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        esc(title)
    )
}

/// One provider's part of the sign-in page.
pub enum SigninEntry<'a> {
    /// A login form posting to `action`.
    Credentials { action: &'a str, name: &'a str },
    /// A button posting the CSRF token to `action` (OAuth/OIDC).
    Button { action: &'a str, name: &'a str },
    /// An e-mail field posting to `action` (magic link).
    Email { action: &'a str, name: &'a str },
}

pub struct SigninPage<'a> {
    pub csrf_token: &'a str,
    pub callback_url: &'a str,
    pub error: Option<&'a str>,
    pub entries: Vec<SigninEntry<'a>>,
}

pub fn signin(p: &SigninPage<'_>) -> String {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(e) = p.error {
        let _ = write!(body, "<div class=\"error\" role=\"alert\">{}</div>", esc(e));
    }
    for (i, entry) in p.entries.iter().enumerate() {
        if i > 0 {
            body.push_str("<hr>");
        }
        match entry {
            SigninEntry::Credentials { action, name } => {
                let _ = write!(
                    body,
                    "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrfToken\" value=\"{}\"><input type=\"hidden\" name=\"callbackUrl\" value=\"{}\"><label for=\"email\">E-mail</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required autofocus><label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required><button type=\"submit\">Sign in with {}</button></form>",
                    esc(action),
                    esc(p.csrf_token),
                    esc(p.callback_url),
                    esc(name)
                );
            }
            SigninEntry::Email { action, name } => {
                let _ = write!(
                    body,
                    "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrfToken\" value=\"{}\"><input type=\"hidden\" name=\"callbackUrl\" value=\"{}\"><label for=\"email-{i}\">E-mail</label><input id=\"email-{i}\" name=\"email\" type=\"email\" autocomplete=\"email\" maxlength=\"254\" placeholder=\"name@example.com\" required><button type=\"submit\">Sign in with {}</button></form>",
                    esc(action),
                    esc(p.csrf_token),
                    esc(p.callback_url),
                    esc(name)
                );
            }
            SigninEntry::Button { action, name } => {
                let _ = write!(
                    body,
                    "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrfToken\" value=\"{}\"><input type=\"hidden\" name=\"callbackUrl\" value=\"{}\"><button type=\"submit\">Sign in with {}</button></form>",
                    esc(action),
                    esc(p.csrf_token),
                    esc(p.callback_url),
                    esc(name)
                );
            }
        }
    }
    layout("Sign in", &body)
}

pub fn signout(action: &str, csrf_token: &str, callback_url: &str) -> String {
    layout(
        "Sign out",
        &format!(
            "<h1>Sign out</h1><p>Are you sure you want to sign out?</p><form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrfToken\" value=\"{}\"><input type=\"hidden\" name=\"callbackUrl\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            esc(action),
            esc(csrf_token),
            esc(callback_url)
        ),
    )
}

/// After an e-mail sign-in form: the same words whatever the address was
/// (it is not repeated: nothing tells whether a mail went out).
pub fn verify_request(home: &str) -> String {
    layout(
        "Check your e-mail",
        &format!(
            "<h1>Check your e-mail</h1><p>A sign-in link has been sent to your e-mail address. It works once.</p><p class=\"muted\"><a href=\"{}\">Back to the site</a></p>",
            esc(home)
        ),
    )
}

/// An error page; `signin` adds a link to sign in (again).
pub fn problem(title: &str, message: &str, signin: Option<&str>, request_id: &str) -> String {
    let mut body = format!("<h1>{}</h1><p>{}</p>", esc(title), esc(message));
    if let Some(href) = signin {
        let _ = write!(body, "<p><a href=\"{}\">Sign in</a></p>", esc(href));
    }
    let _ = write!(
        body,
        "<p class=\"muted\">Request id: {}</p>",
        esc(request_id)
    );
    layout(title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_break_out() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
        let page = signin(&SigninPage {
            csrf_token: "t",
            callback_url: "\"><script>alert(1)</script>",
            error: Some("<b>"),
            entries: vec![SigninEntry::Credentials {
                action: "/auth/callback/credentials",
                name: "Demo",
            }],
        });
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<b>"));
    }
}
