//! Listeners and connections: HTTP/1.1 and HTTP/2 (prior knowledge or
//! h2c upgrade-free) on one port, WebSocket upgrades, bounded header sizes
//! and read times, and graceful shutdown that drains in-flight requests.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::state::App;

/// Binds the configured address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn builder(app: &App) -> auto::Builder<TokioExecutor> {
    let limits = &app.config.limits;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
        .max_concurrent_streams(256);
    b
}

/// Serves until `shutdown` resolves, then stops accepting and waits up to
/// `limits.shutdown_grace` for in-flight requests to finish.
/// The running app, swapped whole by a config reload: each request uses
/// the app current when it arrives; requests in flight finish on theirs.
pub type Apps = Arc<ArcSwap<App>>;

/// Serves until `shutdown`; with `tls`, every connection is HTTPS (HTTP/2
/// by ALPN), with a bounded handshake.
pub async fn run(
    apps: Apps,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = builder(&apps.load());
    let graceful = GracefulShutdown::new();
    let handshake_timeout = apps.load().config.limits.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let apps = apps.clone();
                let svc = service_fn(move |req| {
                    let app = apps.load_full();
                    // Boxed: an idle keep-alive connection then holds a
                    // pointer, not a whole request future (~31 KB a
                    // connection at 10k connections before).
                    Box::pin(async move { Ok::<_, Infallible>(crate::http::handle(app, req, peer).await) })
                });
                match &tls {
                    None => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                    Some(acceptor) => {
                        let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
                        tokio::spawn(async move {
                            let Ok(Ok(stream)) = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await else {
                                return;
                            };
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                            let _ = watcher.watch(conn).await;
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(apps.load().config.limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period ended with connections still open");
        }
    }
}

/// The admin listener (`metrics.listen`): `/metrics` only.
pub async fn run_admin(apps: Apps, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let apps = apps.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = apps.load_full();
                let resp = if req.uri().path() == "/metrics" {
                    crate::http::metrics_response(&app)
                } else {
                    crate::http::text(hyper::StatusCode::NOT_FOUND, "not found\n")
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
