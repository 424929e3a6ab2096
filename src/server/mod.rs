//! Accept loops for both ports: HTTP/1.1 (kappe's own, `h1.rs`) and HTTP/2 (hyper's, by h2c
//! prior knowledge or ALPN under TLS) on one listener, the connection limit, the header read
//! timeout and the maximum header size, and graceful shutdown. A server takes a bound listener
//! and a shutdown future, never an address, so that tests bind port 0.
//!
//! Every HTTP/1 connection's stream is read through a guard (`guard.rs`) that follows the
//! framing (`framing.rs`) and cuts the stream before a request head that could be framed two
//! ways (request smuggling), which is then answered 400.

mod body;
mod framing;
mod guard;
mod h1;
mod io;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use self::body::{Http1Body, VisitorBody};
use self::guard::Guarded;
use self::io::{Io, Rewind};
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
    H: Fn(Request<VisitorBody>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
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
    H: Fn(Request<VisitorBody>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(opts.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let shared = Arc::new(Shared {
        h2,
        limits: h1::Limits {
            header_read_timeout: opts.header_read_timeout,
            max_header_size: opts.max_header_size,
        },
        // Shared once here, so that each connection takes a reference count, not a copy of
        // every metric handle.
        metrics: metrics.map(Arc::new),
        handler,
    });
    // Every connection holds a receiver: the sender tells them to stop, then learns when the
    // last one has ended.
    let (stop, _) = watch::channel(false);
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
            if let Some(m) = &shared.metrics {
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
        let info = ConnInfo {
            peer,
            tls: tls.is_some(),
        };
        let shared = shared.clone();
        let stop = stop.subscribe();
        match &tls {
            None => {
                let io = Io::Plain(Guarded::new(stream, shared.metrics.clone()));
                tokio::spawn(async move {
                    let _active = Active::new(&shared.metrics);
                    shared.connection(io, info, stop).await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let timeout = shared.limits.header_read_timeout;
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let _active = Active::new(&shared.metrics);
                    // A connection that negotiated h2 has no HTTP/1 framing to check.
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        shared.http2(stream, info, stop).await;
                    } else {
                        let io = Io::Tls(Box::new(Guarded::new(stream, shared.metrics.clone())));
                        shared.connection(io, info, stop).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    tokio::select! {
        () = stop.closed() => tracing::debug!("all connections drained"),
        () = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::warn!(grace = ?opts.shutdown_grace, "shutdown grace ran out; closing connections");
        }
    }
}

/// What every connection of one accept loop shares.
struct Shared<H> {
    h2: http2::Builder<TokioExecutor>,
    limits: h1::Limits,
    metrics: Option<Arc<Metrics>>,
    handler: H,
}

impl<H, Fut> Shared<H>
where
    H: Fn(Request<VisitorBody>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    /// Serves a connection that speaks HTTP/1.1, or HTTP/2 with prior knowledge.
    async fn connection(&self, io: Io, info: ConnInfo, mut stop: watch::Receiver<bool>) {
        let stopped = async {
            drop(stop.wait_for(|s| *s).await);
        };
        let ended = h1::serve(io, info, self.limits, &self.handler, stopped).await;
        if let h1::Ended::Http2(io, prefix) = ended {
            self.http2(Rewind { prefix, inner: io }, info, stop).await;
        }
    }

    /// Serves an HTTP/2 connection with hyper; at shutdown it is told to finish its streams.
    async fn http2<S>(&self, io: S, info: ConnInfo, mut stop: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.handler.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let fut = handler(req.map(VisitorBody::Http2), info);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = self.h2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = async { drop(stop.wait_for(|s| *s).await) } => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
        }
    }
}

/// Counts an open connection in `kappe_connections_active` while it lives.
struct Active<'a>(&'a Option<Arc<Metrics>>);

impl<'a> Active<'a> {
    fn new(metrics: &'a Option<Arc<Metrics>>) -> Self {
        if let Some(m) = metrics {
            m.connections_active.inc();
        }
        Active(metrics)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0 {
            m.connections_active.dec();
        }
    }
}
