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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

pub use self::body::{Http1Body, VisitorBody};
use self::guard::Guarded;
use self::io::{Io, Rewind};
use crate::metrics::Metrics;
use crate::proxy::body::ProxyBody;
use crate::proxy::upstream::wire::KnownFields;

/// What a request handler learns about the connection it came on.
///
/// Aligned to 8 bytes so that, as an argument of an async handler, it is laid out next to the
/// request at the front of the handler's future rather than after the space of everything the
/// future awaits: a new future is moved into place by copying the span its arguments occupy,
/// and that span was the whole 3.8 kB future rather than its first 0.3 kB.
#[derive(Clone, Copy, Debug)]
#[repr(align(8))]
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
    /// The request fields the handler reads: the others pass verbatim, outside the request's
    /// map (`proxy::upstream::wire::Verbatim`, in its extensions). `None`: every field is mapped.
    pub request_fields: Option<Arc<KnownFields>>,
}

/// The server's stop signal as one HTTP/1 connection waits on it, between requests and after
/// each. Once `wait` has been polled it stays registered with the connection's task, which the
/// stop wakes; so a later poll first asks `probe`, with one atomic load, whether the channel
/// changed at all, and polls `wait` (which locks the channel's list of waiters) only then.
struct Stopped<F> {
    /// A receiver of the same channel, which has seen no change yet.
    probe: watch::Receiver<bool>,
    wait: Pin<Box<F>>,
    /// Whether `wait` has been polled, and so holds the task's waker.
    armed: bool,
}

impl<F: Future<Output = ()>> Future for Stopped<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // The connection is one task, polled with one waker: the registration stays good.
        if self.armed && matches!(self.probe.has_changed(), Ok(false)) {
            return Poll::Pending;
        }
        self.armed = true;
        self.wait.as_mut().poll(cx)
    }
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
    let accept = Accept::Listener(listener, Vec::new());
    serve_limited(accept, tls, opts, metrics, handler, limit, shutdown).await;
}

/// A connection accepted by one worker thread and handed to another, with its place under the
/// connection limit.
#[derive(Debug)]
pub struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
}

/// Where a worker's connections come from.
#[derive(Debug)]
pub enum Accept {
    /// Accepted here from the listener. Each new connection goes, in turn, to this worker or
    /// to one of the others through its sender: the kernel would otherwise hand a burst of
    /// connections to whichever thread woke first, and keep-alive connections would then load
    /// one thread for their whole life while the others idle.
    Listener(TcpListener, Vec<mpsc::UnboundedSender<Handoff>>),
    /// Handed over by the worker that owns the listener. The channel is unbounded, but what it
    /// holds is bounded by the connection limit, whose permits travel with the connections.
    Handed(mpsc::UnboundedReceiver<Handoff>),
}

/// A channel for handing connections to a worker.
pub fn handoff() -> (
    mpsc::UnboundedSender<Handoff>,
    mpsc::UnboundedReceiver<Handoff>,
) {
    mpsc::unbounded_channel()
}

/// As [`serve`], for one of several worker threads: connections come from `accept` and count
/// against `limit`, which all workers share, so that `--max-connections` holds for the process.
/// `opts.max_connections` is not used.
pub async fn serve_limited<H, Fut>(
    accept: Accept,
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
        request_fields: opts.request_fields,
        // Shared once here, so that each connection takes a reference count, not a copy of
        // every metric handle.
        metrics: metrics.map(Arc::new),
        handler,
    });
    // Every connection holds a receiver: the sender tells them to stop, then learns when the
    // last one has ended.
    let (stop, _) = watch::channel(false);
    tokio::pin!(shutdown);

    match accept {
        Accept::Listener(listener, peers) => {
            let mut turn = 0usize;
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
                        let write = stream.write_all(OVER_LIMIT);
                        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
                        let _ = stream.shutdown().await;
                    });
                    continue;
                };
                turn = (turn + 1) % (peers.len() + 1);
                let (stream, permit) = match turn.checked_sub(1).map(|w| &peers[w]) {
                    None => (stream, permit),
                    Some(peer_worker) => match hand(peer_worker, stream, peer, permit) {
                        Ok(()) => continue,
                        // That worker is gone (shutting down): served here instead.
                        Err(Some(back)) => back,
                        Err(None) => continue,
                    },
                };
                shared.start(stream, peer, permit, &tls, &stop);
            }
            // Stop accepting now, not once the connections have drained.
            drop(listener);
        }
        Accept::Handed(mut handed) => loop {
            let h = tokio::select! {
                biased;
                () = &mut shutdown => break,
                h = handed.recv() => match h {
                    Some(h) => h,
                    None => break,
                },
            };
            match TcpStream::from_std(h.stream) {
                Ok(stream) => shared.start(stream, h.peer, h.permit, &tls, &stop),
                Err(e) => tracing::warn!(error = %e, "cannot take over a handed connection"),
            }
        },
    }
    let _ = stop.send(true);
    tokio::select! {
        () = stop.closed() => tracing::debug!("all connections drained"),
        () = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::warn!(grace = ?opts.shutdown_grace, "shutdown grace ran out; closing connections");
        }
    }
}

/// Hands an accepted connection to another worker. `Err(Some(..))`: that worker has stopped
/// taking connections, and the connection is given back; `Err(None)`: it could not be moved off
/// this thread's runtime and is closed.
fn hand(
    to: &mpsc::UnboundedSender<Handoff>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> Result<(), Option<(TcpStream, OwnedSemaphorePermit)>> {
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand a connection to another worker");
            return Err(None);
        }
    };
    match to.send(Handoff {
        stream,
        peer,
        permit,
    }) {
        Ok(()) => Ok(()),
        Err(mpsc::error::SendError(h)) => match TcpStream::from_std(h.stream) {
            Ok(stream) => Err(Some((stream, h.permit))),
            Err(_) => Err(None),
        },
    }
}

/// What every connection of one accept loop shares.
struct Shared<H> {
    h2: http2::Builder<TokioExecutor>,
    limits: h1::Limits,
    request_fields: Option<Arc<KnownFields>>,
    metrics: Option<Arc<Metrics>>,
    handler: H,
}

impl<H, Fut> Shared<H>
where
    H: Fn(Request<VisitorBody>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    /// Serves an accepted connection in a task of its own, under `permit`, until it ends or
    /// `stop` tells it to.
    fn start(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        tls: &Option<tokio_rustls::TlsAcceptor>,
        stop: &watch::Sender<bool>,
    ) {
        let info = ConnInfo {
            peer,
            tls: tls.is_some(),
        };
        let shared = self.clone();
        let stop = stop.subscribe();
        match tls {
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

    /// Serves a connection that speaks HTTP/1.1, or HTTP/2 with prior knowledge.
    async fn connection(&self, io: Io, info: ConnInfo, mut stop: watch::Receiver<bool>) {
        let probe = stop.clone();
        let wait = Box::pin(async {
            drop(stop.wait_for(|s| *s).await);
        });
        let stopped = Stopped {
            probe,
            wait,
            armed: false,
        };
        let ended = h1::serve(
            io,
            info,
            self.limits,
            self.request_fields.as_deref(),
            &self.handler,
            stopped,
        )
        .await;
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
            async move {
                // hyper writes the map alone: the fields that would pass through verbatim go
                // into it.
                let (mut parts, mut body) = fut.await.into_parts();
                body.take_verbatim().restore(&mut parts.headers);
                Ok::<_, Infallible>(Response::from_parts(parts, body))
            }
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// The worker that owns the listener hands every other connection to its peer, which
    /// serves them on its own runtime; each connection is answered once, by one worker.
    #[tokio::test]
    async fn connections_are_handed_out_in_turn() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (to_peer, mut handed) = handoff();
        let opts = ServerOptions {
            header_read_timeout: Duration::from_secs(5),
            max_header_size: 16 * 1024,
            max_connections: 16,
            shutdown_grace: Duration::from_secs(1),
            request_fields: None,
        };
        let answer = |_req, _info| async { Response::new(ProxyBody::full("here")) };
        let limit = Arc::new(Semaphore::new(16));
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve_limited(
            Accept::Listener(listener, vec![to_peer]),
            None,
            opts,
            None,
            answer,
            limit.clone(),
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        let mut conns = Vec::new();
        for _ in 0..4 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            conns.push(s);
        }
        // Two of the four were handed over, with their permits, and not answered here.
        let mut taken = Vec::new();
        for _ in 0..2 {
            let h = tokio::time::timeout(Duration::from_secs(2), handed.recv())
                .await
                .expect("a connection is handed over")
                .unwrap();
            taken.push(h);
        }
        assert!(
            handed.try_recv().is_err(),
            "only every other connection is handed"
        );
        assert_eq!(limit.available_permits(), 12);
        let mut answered = 0;
        for s in &mut conns {
            let mut buf = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
                && buf[..n].starts_with(b"HTTP/1.1 200")
            {
                answered += 1;
            }
        }
        assert_eq!(answered, 2);
        let _ = stop_tx.send(true);
        server.await.unwrap();
    }
}
