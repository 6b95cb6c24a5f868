//! `portcullis check`: a bad config names the key, the line and the fix,
//! and never prints a secret.

use std::process::Command;

use crate::support::*;

fn check(yaml: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = TempDir::new("check");
    dir.write("users.yaml", &users_file_yaml(&[ALICE]));
    let cfg = dir.write("portcullis.yaml", yaml);
    let mut cmd = Command::new(bin());
    cmd.arg("check")
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = "listen: 127.0.0.1:4180\npublic_url: https://auth.example.com\nsecrets: [\"it-secret-0123456789-abcdefghij-KLMNOP\"]\nupstream:\n  url: http://app:8080\nproviders:\n  - type: credentials\n    users_file: users.yaml\n";

#[test]
fn a_good_config_prints_the_effective_one_with_secrets_redacted() {
    let (code, out, err) = check(GOOD, &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["secrets"], "<1 redacted>");
    assert_eq!(v["session"]["max_age"], "2592000s");
    assert_eq!(v["cookies"]["secure"], true);
    assert_eq!(v["upstream"]["url"], "http://app:8080/");
    // Not set: one per CPU, decided at start.
    assert_eq!(v["workers"], serde_json::Value::Null);
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    let (code, out, err) = check(&format!("{GOOD}workers: 3\n"), &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["workers"], 3);
}

#[test]
fn each_mistake_names_key_line_and_fix() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            &GOOD.replace("upstream:", "upstreams:"),
            "unknown key `upstreams`",
            &["upstreams", "line 4", "fix:"],
        ),
        (
            &GOOD.replace("http://app:8080", "app:8080:x"),
            "upstream.url",
            &["line 5", "not an http(s) URL", "fix:"],
        ),
        (
            &GOOD.replace("it-secret-0123456789-abcdefghij-KLMNOP", "short"),
            "secrets[0]",
            &["line 3", "at least 32", "gen-secret"],
        ),
        (
            &GOOD.replace("users.yaml", "missing.yaml"),
            "providers[0].users_file",
            &["line 8", "cannot read users file"],
        ),
        (
            &GOOD.replace("listen: 127.0.0.1:4180", "listen: nowhere"),
            "listen",
            &["line 1", "address:port"],
        ),
        (
            &format!("{GOOD}session:\n  max_age: forever\n"),
            "session.max_age",
            &["line 10", "not a duration", "30d"],
        ),
        (
            &format!("{GOOD}access:\n  public_paths: [\"no-slash\"]\n"),
            "access.public_paths[0]",
            &["line 10", "path pattern"],
        ),
        (
            &format!("{GOOD}workers: 0\n"),
            "workers",
            &["line 9", "out of range", "one worker per CPU"],
        ),
        (
            &format!("{GOOD}workers: 257\n"),
            "workers",
            &["line 9", "out of range"],
        ),
    ];
    for (yaml, key, needles) in cases {
        let (code, out, err) = check(yaml, &[]);
        assert_eq!(code, 2, "{key}: expected failure, got {out}");
        assert!(err.contains(key), "{key} not named in: {err}");
        for n in *needles {
            assert!(err.contains(n), "{key}: {n:?} missing from: {err}");
        }
        assert!(!err.contains(SECRET));
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = GOOD
        .replace("https://auth.example.com", "not a url")
        .replace("http://app:8080", "ftp://x")
        + "cookies:\n  secure: maybe\n";
    let (code, _, err) = check(&yaml, &[]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("3 problems") || err.contains("3 problems"),
        "{err}"
    );
    for k in ["public_url", "upstream.url", "cookies.secure"] {
        assert!(err.contains(k), "{k}: {err}");
    }
}

#[test]
fn the_environment_overrides_the_file_and_is_named_in_errors() {
    let (code, out, err) = check(
        GOOD,
        &[
            ("PORTCULLIS_SESSION__MAX_AGE", "8h"),
            (
                "PORTCULLIS_ACCESS__ALLOWED_DOMAINS",
                "[example.com, example.org]",
            ),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["session"]["max_age"], "28800s");
    assert_eq!(
        v["access"]["allowed_domains"],
        serde_json::json!(["example.com", "example.org"])
    );

    let (code, _, err) = check(GOOD, &[("PORTCULLIS_UPSTREAM__URL", "nope")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("environment variable PORTCULLIS_UPSTREAM__URL"),
        "{err}"
    );
    let (code, _, err) = check(GOOD, &[("PORTCULLIS_SESION__MAX_AGE", "8h")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("sesion") && err.contains("PORTCULLIS_SESION__MAX_AGE"),
        "{err}"
    );
}

#[test]
fn secrets_come_from_files_and_env_too() {
    let dir = TempDir::new("secret");
    let f = dir.write("secret", &format!("{SECRET}\n"));
    let yaml = GOOD.replace(
        "secrets: [\"it-secret-0123456789-abcdefghij-KLMNOP\"]\n",
        "",
    );
    let (code, out, err) = check(&yaml, &[("PORTCULLIS_SECRET_FILES", f.to_str().unwrap())]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("<1 redacted>"));
    let (code, out, err) = check(
        &yaml,
        &[(
            "PORTCULLIS_SECRETS",
            "[\"it-secret-0123456789-abcdefghij-KLMNOP\", \"it-old-secret-9876543210-zyxwvutsrq-P\"]",
        )],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("<2 redacted>"));
    let (code, _, err) = check(&yaml, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("no secret is configured"), "{err}");
}

#[test]
fn hash_password_and_gen_secret_work() {
    use std::io::Write;
    let mut child = Command::new(bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let out = Command::new(bin()).arg("gen-secret").output().unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.trim().len() >= 43);
}

#[test]
fn every_unknown_key_is_reported_at_once_with_its_line() {
    let yaml = format!("{GOOD}sesion:\n  max_age: 1d\nproviders_extra: 1\n").replace(
        "    users_file: users.yaml\n",
        "    users_file: users.yaml\n    usres: x\n",
    );
    let (code, _, err) = check(&yaml, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("3 problems"), "{err}");
    for (k, line) in [
        ("providers[0].usres", "line 9"),
        ("sesion", "line 10"),
        ("providers_extra", "line 12"),
    ] {
        let row = err
            .lines()
            .find(|l| l.starts_with(&format!("- {k} ")))
            .unwrap_or_else(|| panic!("{k} missing: {err}"));
        assert!(row.contains(line), "{row}");
    }
}

#[test]
fn plain_yaml_numbers_and_booleans_are_accepted() {
    let yaml = format!("{GOOD}session:\n  max_age: 3600\ncookies:\n  secure: true\n");
    let (code, out, err) = check(&yaml, &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["session"]["max_age"], "3600s");
    assert_eq!(
        v["session"]["update_age"], "3600s",
        "update_age defaults to min(24h, max_age)"
    );
}

#[test]
fn kubernetes_service_link_variables_are_not_config() {
    let env = [
        ("PORTCULLIS_PORT", "tcp://10.0.0.7:4180"),
        ("PORTCULLIS_PORT_4180_TCP_ADDR", "10.0.0.7"),
        ("PORTCULLIS_SERVICE_HOST", "10.0.0.7"),
        ("PORTCULLIS_SERVICE_PORT_HTTP", "4180"),
    ];
    let (code, _, err) = check(GOOD, &env);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn oidc_keys_on_a_credentials_provider_are_refused() {
    for extra in [
        "    response_mode: form_post\n",
        "    algorithms: [RS256]\n",
        "    claims:\n      email: mail\n",
        "    store_tokens: false\n",
        "    token_url: https://idp.example/token\n",
        "    profile_requests: [{url: https://api.example/emails, into: emails}]\n",
    ] {
        let yaml = GOOD.replace(
            "    users_file: users.yaml\n",
            &format!("    users_file: users.yaml\n{extra}"),
        );
        let (code, _, err) = check(&yaml, &[]);
        assert_eq!(code, 2, "{extra}");
        assert!(
            err.contains("is for oidc and oauth providers"),
            "{extra}: {err}"
        );
    }
}

#[test]
fn presets_need_their_params_and_auto_redirect_needs_a_single_provider() {
    let (code, _, err) = check(
        "secrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - preset: entra-id\n    client_id: c\n    client_secret: s\n",
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("providers[0].params.tenant"), "{err}");
    assert!(err.contains("needs params.tenant"), "{err}");
    let (code, _, err) = check(
        "secrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - preset: gitbub\n    client_id: c\n    client_secret: s\n",
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown preset \"gitbub\"") && err.contains("github"),
        "{err}"
    );
    let (code, out, err) = check(
        "secrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - preset: github\n    client_id: c\n    client_secret: s\n    auto_redirect: true\n  - preset: google\n    client_id: c\n    client_secret: s\n",
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("auto_redirect"), "{err}");
    // A preset's every field stays overridable; check shows the result.
    let (code, out, err) = check(
        "secrets: [0123456789abcdef0123456789abcdef]\nproviders:\n  - preset: github\n    params: {base_url: \"https://ghe.example.com\", api_url: \"https://ghe.example.com/api/v3\"}\n    client_id: c\n    client_secret: s\n    claims: {name: login}\n",
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("https://ghe.example.com/login/oauth/authorize"),
        "{out}"
    );
    assert!(
        out.contains("https://ghe.example.com/api/v3/user/emails?per_page=100"),
        "{out}"
    );
    assert!(!out.contains("\"s\""), "the client secret leaked: {out}");
}
