//! Accept loops for both ports: HTTP/1.1 and HTTP/2 (h2c prior knowledge, or ALPN under TLS) on
//! one listener, the connection limit, the header read timeout and the maximum header size, and
//! graceful shutdown. A server takes a bound listener and a shutdown future, never an address, so
//! tests bind port 0.
//!
//! Every connection's stream is read through a guard (`guard.rs`) that follows the HTTP/1
//! framing (`framing.rs`) and keeps request heads that could be framed two ways (request
//! smuggling) from hyper, which then answers them with 400.

mod framing;
mod guard;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use self::guard::Guarded;
use crate::metrics::Metrics;
use crate::proxy::body::ProxyBody;

/// What a request handler learns about the connection it came on.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Limits applied to every connection of a listener.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub header_read_timeout: Duration,
    pub max_header_size: usize,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

/// The answer to a connection over the limit: refused cleanly, then closed.
const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 29\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many connections to kappe\n";

/// Serves `listener` until `shutdown` completes, then stops accepting and lets open connections
/// finish their in-flight requests for up to `opts.shutdown_grace`.
///
/// `handler` answers each request; it never fails (errors are already HTTP responses).
pub async fn serve<H, Fut>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    opts: ServerOptions,
    metrics: Option<Metrics>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    serve_limited(listener, tls, opts, metrics, handler, limit, shutdown).await;
}

/// As [`serve`], counting connections against `limit`, which several accept loops on clones of
/// one listener (one per worker thread) share, so that `--max-connections` holds for the
/// process. `opts.max_connections` is not used.
pub async fn serve_limited<H, Fut>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    opts: ServerOptions,
    metrics: Option<Metrics>,
    handler: H,
    limit: Arc<Semaphore>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_size.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(opts.max_header_size as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    // Shared once here, so that each connection takes a reference count, not a copy of every
    // metric handle.
    let metrics = metrics.map(Arc::new);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            if let Some(m) = &metrics {
                m.connections_rejected.inc();
            }
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(OVER_LIMIT))
                    .await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let handler = handler.clone();
        let builder = builder.clone();
        let metrics = metrics.clone();
        let info = ConnInfo {
            peer,
            tls: tls.is_some(),
        };
        let service = service_fn(move |req| {
            let fut = handler(req, info);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        });
        match &tls {
            None => {
                let io = Guarded::new(stream, metrics.clone());
                let conn = builder
                    .serve_connection(TokioIo::new(io), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(run_conn(conn, permit, metrics));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let timeout = opts.header_read_timeout;
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    // hyper-util picks HTTP/2 by the preface, not by ALPN; a connection that
                    // negotiated h2 has no HTTP/1 framing to check.
                    let io = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        Guarded::pass_through(stream)
                    } else {
                        Guarded::new(stream, metrics.clone())
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned();
                    let conn = watcher.watch(conn);
                    run_conn(conn, permit, metrics).await;
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("all connections drained"),
        () = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::warn!(grace = ?opts.shutdown_grace, "shutdown grace ran out; closing connections");
        }
    }
}

async fn run_conn<F>(
    conn: F,
    permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Option<Arc<Metrics>>,
) where
    F: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    if let Some(m) = &metrics {
        m.connections_active.inc();
    }
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    if let Some(m) = &metrics {
        m.connections_active.dec();
    }
    drop(permit);
}
