//! The first five minutes in a real browser: `portcullis` with no config
//! (the embedded demo) and headless Chromium signing in with the demo
//! user it prints, ending on the whoami page.

use std::time::{Duration, Instant};

use crate::support::*;

/// The demo user's password from the start banner (`    password: ...`).
async fn demo_password(pc: &Portcullis) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = pc.logs();
        if let Some(p) = logs
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("password:"))
        {
            return p.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no password line in the demo banner:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_demo_signs_in_in_a_real_browser_and_shows_whoami() {
    let dir = TempDir::new("demo");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let public = format!("http://127.0.0.1:{port}");
    let pc = Portcullis::spawn(
        &["serve"],
        &[
            ("PORTCULLIS_LISTEN", &listen),
            ("PORTCULLIS_PUBLIC_URL", &public),
        ],
        dir,
        port,
    )
    .await;
    let password = demo_password(&pc).await;
    assert!(pc.logs().contains("demo@portcullis.local"), "{}", pc.logs());

    // Kept after the run (target/tmp), for a person to look at.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-whoami.png");
    let _ = std::fs::remove_file(&shot);
    let script = repo_root().join("tests/fixtures/browser/signin.mjs");
    let args = [
        format!("{public}/"),
        "demo@portcullis.local".to_string(),
        password,
        shot.display().to_string(),
    ];
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node(&script, &args, "")
    })
    .await
    .unwrap();
    assert_eq!(
        code,
        0,
        "signin.mjs failed\nstdout: {out}\nstderr: {err}\nportcullis:\n{}",
        pc.logs()
    );
    let result: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(result["ok"], true, "{out}");
    assert_eq!(result["finalUrl"], format!("{public}/"), "{out}");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 0,
        "the screenshot {} is empty or missing",
        shot.display()
    );
}

/// `portcullis` with no arguments at all (not `serve`, no environment):
/// the demo on its embedded default, 127.0.0.1:4180, printing the demo
/// user's password, which signs in and reaches the whoami page. Skipped,
/// saying so, only when something else holds 127.0.0.1:4180.
#[tokio::test]
async fn the_binary_with_no_arguments_runs_the_demo_on_4180() {
    const BUSY: &str = "SKIPPED: 127.0.0.1:4180 is taken by another process; the no-argument demo cannot be started here";
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:4180") {
        eprintln!("{BUSY} ({e})");
        return;
    }
    // No PORTCULLIS_* from the test's environment may steer it.
    let stray: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("PORTCULLIS_"))
        .collect();
    assert!(
        stray.is_empty(),
        "the test environment sets {stray:?}: the no-argument start would not be the default"
    );
    let pc = match Portcullis::try_spawn(&[], &[], TempDir::new("demo-noargs"), 4180).await {
        Ok(pc) => pc,
        Err(logs) if logs.contains("Address already in use") => {
            eprintln!("{BUSY} (taken between the check and the start):\n{logs}");
            return;
        }
        Err(logs) => panic!("the no-argument demo did not start:\n{logs}"),
    };
    // The log line arrives through a pipe: wait for it (bounded).
    assert!(
        pc.log_shows("listening on http://127.0.0.1:4180").await,
        "{}",
        pc.logs()
    );
    let password = demo_password(&pc).await;
    assert!(password.len() >= 12, "{password:?}");
    assert!(
        pc.logs().contains("Open http://127.0.0.1:4180/")
            || pc.logs().contains("Open http://127.0.0.1:4180 "),
        "{}",
        pc.logs()
    );
    let origin = "http://127.0.0.1:4180";
    let mut b = Browser::new();
    assert_eq!(
        b.get(&format!("{origin}/healthz")).await.status,
        http::StatusCode::OK
    );
    let r = b.get(&format!("{origin}/")).await;
    assert_eq!(r.status, http::StatusCode::FOUND, "{}", r.body);
    assert!(r.location().starts_with("/auth/signin"), "{}", r.location());
    let r = b
        .sign_in(origin, "demo@portcullis.local", &password, "/")
        .await;
    assert_eq!(r.location(), "/", "{}\n{}", r.body, pc.logs());
    let page = b.get(&format!("{origin}/")).await;
    assert_eq!(page.status, http::StatusCode::OK);
    assert!(page.body.contains("demo@portcullis.local"), "{}", page.body);
    // A wrong password does not sign in (the printed one is the real one).
    let mut other = Browser::new();
    let r = other
        .sign_in(origin, "demo@portcullis.local", "not-the-password", "/")
        .await;
    assert!(!other.has_session(), "{}", r.location());
}
