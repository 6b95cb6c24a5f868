//! The TLS listener: HTTPS with HTTP/2 by ALPN, and a certificate renewed
//! on disk is picked up without a restart and without dropping open
//! connections. Also mTLS from the proxy to an upstream that asks for it.

use std::time::Duration;

use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<bytes::Bytes>,
>;

/// A client trusting only `ca`.
fn client(ca: &std::path::Path) -> HttpsClient {
    let tls = portcullis::tls::client_config(Some(ca), None).unwrap();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

async fn get(c: &HttpsClient, url: &str) -> Result<(StatusCode, http::Version, String), String> {
    let req = http::Request::get(url).body(Full::default()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), c.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let (status, version) = (resp.status(), resp.version());
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, version, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn https_with_h2_and_a_certificate_renewed_on_disk() {
    let first = TempDir::new("tls1");
    let (ca1, cert1, key1) = test_certs(&first);
    let live = TempDir::new("tls-live");
    let (cert, key) = (live.path().join("tls.crt"), live.path().join("tls.key"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let pc = Portcullis::start(
        Conf::default()
            .public_url("https://localhost:{port}")
            .extra(&format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n",
                cert.display(),
                key.display()
            )),
    )
    .await;
    let url = format!("https://localhost:{}/auth/session", pc.port);

    let old = client(&ca1);
    let (status, version, body) = get(&old, &url).await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "null"));
    assert_eq!(version, http::Version::HTTP_2, "HTTP/2 by ALPN");
    // Plain HTTP on the TLS port gets nowhere.
    let plain = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        plain.request(
            http::Request::get(format!("http://localhost:{}/healthz", pc.port))
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert!(r.is_err() || !r.unwrap().status().is_success());

    // Renew: a new CA and certificate written over the files.
    let second = TempDir::new("tls2");
    let (ca2, cert2, key2) = test_certs(&second);
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&cert2, &cert).unwrap();
    assert!(
        pc.log_shows("TLS certificate reloaded").await,
        "{}",
        pc.logs()
    );
    // New handshakes get the new certificate...
    let (status, _, _) = get(&client(&ca2), &url).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        get(&client(&ca1), &url).await.is_err(),
        "a new connection still got the old certificate"
    );
    // ...and the connection opened before the renewal still works.
    let (status, _, _) = get(&old, &url).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // A broken renewal is refused; the current certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(pc.log_shows("TLS certificate reload refused").await);
    assert_eq!(get(&client(&ca2), &url).await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn mtls_to_an_upstream_that_asks_for_a_client_certificate() {
    let dir = TempDir::new("mtls");
    let (ca, cert, key) = test_certs(&dir);
    let up = Upstream::start_mtls(&cert, &key, &ca).await;
    let url = format!("https://localhost:{}", up.addr.port());

    let with = Portcullis::start(
        Conf::default()
            .upstream(&url)
            .upstream_ca(&ca)
            .upstream_identity(&cert, &key),
    )
    .await;
    let mut b = Browser::new();
    b.sign_in(&with.url(""), ALICE.0, PASSWORD, "/").await;
    let r = b.get(&with.url("/over-mtls")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", with.logs());
    assert_eq!(up.last().header("x-auth-request-email"), Some(ALICE.0));

    let without = Portcullis::start(Conf::default().upstream(&url).upstream_ca(&ca)).await;
    let before = up.count();
    let mut b = Browser::new();
    b.sign_in(&without.url(""), ALICE.0, PASSWORD, "/").await;
    assert_eq!(
        b.get(&without.url("/over-mtls")).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(up.count(), before);
}
