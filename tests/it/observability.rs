//! `/metrics` and the request log: what an operator alerts and debugs on.

use std::time::Duration;

use http::StatusCode;

use crate::support::*;

/// The value of one sample line (`name{labels} value`).
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_decision_and_sign_ins_by_outcome() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("access:\n  public_paths: [/public/*]\n"),
    )
    .await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    b.sign_in(&pc.url(""), ALICE.0, "wrong", "/").await;
    b.get(&pc.url("/app")).await;
    b.get(&pc.url("/app")).await;
    Browser::api().get(&pc.url("/app")).await;
    Browser::api().get(&pc.url("/public/x")).await;
    Browser::api()
        .get_with(
            &pc.url("/auth/forward-auth"),
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "a.test"),
                ("x-forwarded-uri", "/x"),
            ],
        )
        .await;

    let r = Browser::api().get(&pc.url("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let t = r.body;
    assert_eq!(
        sample(
            &t,
            "portcullis_requests_total{route=\"proxy\",decision=\"allow\"}"
        ),
        Some(2.0),
        "{t}"
    );
    assert_eq!(
        sample(
            &t,
            "portcullis_requests_total{route=\"proxy\",decision=\"unauthenticated\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &t,
            "portcullis_requests_total{route=\"proxy\",decision=\"public\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &t,
            "portcullis_requests_total{route=\"forward_auth\",decision=\"unauthenticated\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &t,
            "portcullis_signins_total{provider=\"credentials\",outcome=\"success\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &t,
            "portcullis_signins_total{provider=\"credentials\",outcome=\"failure\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &t,
            "portcullis_request_duration_seconds_count{route=\"proxy\"}"
        ),
        Some(4.0)
    );
    // Every histogram's buckets are cumulative and end at the count.
    let inf = sample(
        &t,
        "portcullis_request_duration_seconds_bucket{route=\"proxy\",le=\"+Inf\"}",
    );
    assert_eq!(inf, Some(4.0));
    assert!(
        !t.contains(SECRET) && !t.contains(ALICE.0),
        "metrics carry no secrets or users"
    );
}

#[tokio::test]
async fn upstream_failures_are_counted() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let pc = Portcullis::start(Conf::default().upstream(&dead)).await;
    let mut b = Browser::api();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(b.get(&pc.url("/x")).await.status, StatusCode::BAD_GATEWAY);
    let t = Browser::api().get(&pc.url("/metrics")).await.body;
    assert_eq!(
        sample(&t, "portcullis_upstream_errors_total{kind=\"unreachable\"}"),
        Some(1.0),
        "{t}"
    );
}

#[tokio::test]
async fn one_json_log_line_per_request_with_an_id_shared_with_the_upstream() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("log:\n  format: json\n  level: info\n"),
    )
    .await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    let r = b.get(&pc.url("/reports?token=should-not-be-logged")).await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r
        .header("x-request-id")
        .expect("x-request-id on the response")
        .to_string();
    assert_eq!(
        up.last().header("x-request-id"),
        Some(id.as_str()),
        "the upstream gets the same id"
    );
    assert!(pc.log_shows(&id).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = pc.logs();
    let line = logs
        .lines()
        .find(|l| l.contains(&id) && l.contains("\"route\""))
        .unwrap_or_else(|| panic!("no request line for {id}:\n{logs}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let f = &v["fields"];
    assert_eq!(f["route"], "proxy");
    assert_eq!(f["decision"], "allow");
    assert_eq!(f["status"], 200);
    assert_eq!(f["user"], ALICE.0);
    assert_eq!(f["path"], "/reports");
    assert!(f["latency_ms"].as_f64().unwrap() >= 0.0);
    for secret in [
        "should-not-be-logged",
        b.jar["authjs.session-token"].as_str(),
        PASSWORD,
        SECRET,
    ] {
        assert!(!logs.contains(secret), "the log holds {secret:?}");
    }
    // A trusted proxy's request id is kept.
    let r = b
        .get_with(&pc.url("/reports"), &[("x-request-id", "edge-1234")])
        .await;
    assert_eq!(r.header("x-request-id"), Some("edge-1234"));
}

#[tokio::test]
async fn a_separate_admin_listener_serves_metrics_and_the_main_one_does_not() {
    let up = Upstream::start().await;
    let admin = free_port();
    let pc = Portcullis::start(Conf::default().upstream(&up.url()).extra(&format!(
        "metrics:\n  listen: 127.0.0.1:{admin}\naccess:\n  public_paths: [/metrics]\n"
    )))
    .await;
    let r = Browser::api()
        .get(&format!("http://127.0.0.1:{admin}/metrics"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("portcullis_requests_total")
            || r.body.contains("# TYPE portcullis_requests_total")
    );
    // On the main listener /metrics is the app's (proxied).
    let r = Browser::api().get(&pc.url("/metrics")).await;
    assert_eq!(r.header("x-upstream"), Some("yes"));
}

/// A reload applies a good config without a restart; a bad one is
/// refused with a log line and the old one keeps serving.
#[tokio::test]
async fn config_reload_applies_good_configs_and_refuses_bad_ones() {
    let up = Upstream::start().await;
    let pc = Portcullis::start(Conf::default().upstream(&up.url())).await;
    let mut api = Browser::api();
    assert_eq!(
        api.get(&pc.url("/open/x")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let path = pc.dir.path().join("portcullis.yaml");
    let original = std::fs::read_to_string(&path).unwrap();

    // A good change, applied on SIGHUP; `workers` waits for a restart.
    std::fs::write(
        &path,
        format!("{original}workers: 7\naccess:\n  public_paths: [/open/*]\n"),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pc.pid().to_string()])
        .status()
        .unwrap();
    assert!(pc.log_shows("config reloaded").await, "{}", pc.logs());
    assert_eq!(api.get(&pc.url("/open/x")).await.status, StatusCode::OK);
    assert!(
        pc.logs().contains("workers changes only with a restart"),
        "{}",
        pc.logs()
    );

    // A bad change (found by the file watcher): refused, the old config serves on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(
        &path,
        format!("{original}access:\n  public_paths: [no-slash]\n"),
    )
    .unwrap();
    assert!(pc.log_shows("config reload refused").await, "{}", pc.logs());
    assert_eq!(api.get(&pc.url("/open/x")).await.status, StatusCode::OK);
    assert!(
        pc.logs().contains("access.public_paths[0]"),
        "the log names the key"
    );
    // Sessions survive reloads (same secret).
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    std::fs::write(
        &path,
        format!("{original}access:\n  public_paths: [/open/*, /more/*]\n"),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pc.pid().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.get(&pc.url("/app")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_on_the_main_listener_are_for_trusted_peers_only() {
    let up = Upstream::start().await;
    // Loopback is not trusted here: /metrics is then the app's path.
    let pc = Portcullis::start(
        Conf::default()
            .upstream(&up.url())
            .extra("trusted_proxies: [10.9.9.9]\naccess:\n  public_paths: [/metrics]\n"),
    )
    .await;
    let r = Browser::api().get(&pc.url("/metrics")).await;
    assert_eq!(
        r.header("x-upstream"),
        Some("yes"),
        "an untrusted peer read the metrics"
    );
}

/// With the `otel` feature and `log.otlp_endpoint`, each request is a span
/// exported by OTLP/HTTP (protobuf) to the collector.
#[cfg(feature = "otel")]
#[tokio::test]
async fn requests_are_exported_as_opentelemetry_spans() {
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    type Posts = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;
    let got: Posts = Arc::default();
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let ctype = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes().to_vec())
                                .unwrap_or_default();
                            sink.lock().unwrap().push((path, ctype, body));
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let up = Upstream::start().await;
    let pc = Portcullis::start_env(
        Conf::default().upstream(&up.url()).extra(&format!(
            "log:\n  level: info\n  otlp_endpoint: http://{collector}\n"
        )),
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let mut b = Browser::new();
    b.sign_in(&pc.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(b.get(&pc.url("/traced")).await.status, StatusCode::OK);
    let mut found = false;
    for _ in 0..100 {
        {
            let g = got.lock().unwrap();
            let traced = g.iter().any(|(p, c, body)| {
                let text = String::from_utf8_lossy(body);
                p == "/v1/traces"
                    && c == "application/x-protobuf"
                    && text.contains("GET proxy")
                    && text.contains("/traced")
                    && text.contains(ALICE.0)
            });
            if traced {
                found = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        found,
        "no span for GET /traced reached the collector: {} posts\n{}",
        got.lock().unwrap().len(),
        pc.logs()
    );
}

/// The server re-executes itself once with mimalloc's options set (argon2's
/// 19 MiB is then returned after each password check and arenas are
/// committed as used: idle RSS after a sign-in ~15 MB instead of ~45, see
/// `tune_allocator` in src/main.rs), keeping its pid; an option set by the
/// operator is left alone, and then so are the others.
#[tokio::test]
async fn the_server_runs_with_its_allocator_options() {
    let environ = |pid: u32| std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let has = |env: &[u8], pair: &str| env.split(|b| *b == 0).any(|kv| kv == pair.as_bytes());
    let pc = Portcullis::start(Conf::default()).await;
    let env = environ(pc.pid());
    assert!(has(&env, "MIMALLOC_ARENA_MAX_OBJECT_SIZE=8192"));
    assert!(has(&env, "MIMALLOC_ARENA_EAGER_COMMIT=0"));
    // An operator's own choice is kept (and the other default not forced).
    let own = Portcullis::start_env(Conf::default(), &[("MIMALLOC_ARENA_EAGER_COMMIT", "1")]).await;
    let env = environ(own.pid());
    assert!(has(&env, "MIMALLOC_ARENA_EAGER_COMMIT=1"));
    assert!(!has(&env, "MIMALLOC_ARENA_MAX_OBJECT_SIZE=8192"));
}
