//! The floor of Portcullis's HTTP stack, for `benches/run` (target 8): a
//! reverse proxy on hyper and tokio as Portcullis runs them (one
//! single-threaded runtime per CPU accepting from one socket, HTTP/1.1 to
//! the upstream over pooled keep-alive connections, one pool per thread),
//! and nothing else: no auth, no headers added or removed, no timeouts,
//! no metrics. What it costs a request is what any proxy built on these
//! crates costs before doing its job.
//!
//!     cargo run --release --example bare_proxy -- 127.0.0.1:8080 127.0.0.1:9000
//!
//! Not a product: it trusts the client and the upstream completely.

use std::cell::RefCell;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    /// This thread's idle upstream connections.
    static POOL: RefCell<Vec<client::SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

async fn forward(
    mut req: Request<Incoming>,
    upstream: SocketAddr,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let mut conn = loop {
        match POOL.with(|p| p.borrow_mut().pop()) {
            Some(mut c) => {
                if c.ready().await.is_ok() {
                    break c;
                }
            }
            None => {
                let tcp = tokio::net::TcpStream::connect(upstream).await?;
                tcp.set_nodelay(true)?;
                let (c, driver) = client::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(driver);
                break c;
            }
        }
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path.parse()?;
    let resp = conn.send_request(req).await?;
    // Back at once: hyper queues the next request behind this body.
    POOL.with(|p| p.borrow_mut().push(conn));
    Ok(resp)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: bare_proxy <listen addr:port> <upstream addr:port>".into());
    };
    let upstream: SocketAddr = upstream.parse()?;
    let listener = std::net::TcpListener::bind(listen.parse::<SocketAddr>()?)?;
    listener.set_nonblocking(true)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (0..workers)
        .map(|_| {
            let listener = listener.try_clone()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(std::thread::spawn(move || {
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |r| forward(r, upstream));
                            let _ = server::Builder::new()
                                .serve_connection(TokioIo::new(tcp), svc)
                                .await;
                        });
                        tokio::task::yield_now().await;
                    }
                })
            }))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
