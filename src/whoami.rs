//! The built-in demo app (`upstream.url: builtin:whoami`): a real HTTP
//! server on a loopback port that echoes the identity headers and the
//! request it received, so the demo shows exactly what an app would see.

use std::fmt::Write;
use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::http::pages::{esc, layout};
use crate::http::{self as web, Body, wants_html};

/// Headers shown first: the identity Portcullis forwards.
const IDENTITY: [&str; 7] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-name",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-forwarded-user",
    "x-forwarded-email",
];

fn render(req: &Request<Incoming>, signout: &str) -> Response<Body> {
    let h = req.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut lines = String::new();
    for n in IDENTITY {
        let _ = writeln!(lines, "{}: {}", canonical(n), get(n));
    }
    let mut all = String::new();
    let _ = writeln!(all, "{} {} {:?}", req.method(), req.uri(), req.version());
    for (k, v) in h {
        let _ = writeln!(all, "{}: {}", k, String::from_utf8_lossy(v.as_bytes()));
    }
    if !wants_html(h) {
        return web::text_owned(StatusCode::OK, format!("{lines}\n{all}"));
    }
    let who = match get("x-auth-request-email") {
        "" => "nobody (a public path)".to_string(),
        e => e.to_string(),
    };
    let body = format!(
        "<h1>whoami</h1><p>Signed in as <strong>{}</strong>. This is the built-in demo app: it shows what Portcullis forwarded to it.</p><pre style=\"white-space:pre-wrap;font-size:.8rem\">{}</pre><details><summary>The whole request</summary><pre style=\"white-space:pre-wrap;font-size:.75rem\">{}</pre></details><p><a href=\"{}\">Sign out</a></p>",
        esc(&who),
        esc(&lines),
        esc(&all),
        esc(signout)
    );
    let page = layout("whoami", &body).replace("max-width:24rem", "max-width:48rem");
    web::html(StatusCode::OK, page)
}

fn canonical(n: &str) -> String {
    n.split('-')
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Starts the whoami app on a loopback port and returns its address.
pub async fn start(signout_path: String) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let signout = signout_path.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let r = render(&req, &signout);
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
