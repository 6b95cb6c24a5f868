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
