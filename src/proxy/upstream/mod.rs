//! The HTTP/1.1 client to the upstream: one per worker thread, with a pool of keep-alive
//! connections, driven inside the request's own task. There is no connection task, no channel
//! and no dispatcher between kappe and the socket: a request takes an idle connection (or opens
//! one), writes its head in one call, reads the answer's head, and gives the connection back as
//! soon as the body has been read.
//!
//! An idle connection the upstream closed is noticed when it is taken from the pool and passed
//! over. A request whose connection is closed under it before any byte of an answer arrived is
//! sent once more on a new connection when it has no body and a method that may be repeated
//! (RFC 9110 section 9.2.2); any other failure is the caller's 502.

mod body;
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::uri::Authority;
use http::{Method, Request, Response, request};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

pub use self::body::ResponseBody;
use self::wire::{BodyFraming, Framing};
use super::body::{BodyTooLarge, UpstreamBody};
use super::error::ProxyError;
use super::forward::Forwarding;
use crate::config::Config;

/// How long an idle connection is kept before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most idle connections a worker keeps.
const MAX_IDLE: usize = 1024;
/// The read buffer a new connection starts with; a banner's answer fits.
const READ_BUFFER: usize = 8 * 1024;

/// One worker's client to the upstream.
#[derive(Clone, Debug)]
pub struct Upstream {
    authority: Authority,
    connect_timeout: Duration,
    /// How long an answer's head may take, from the request's start (`--upstream-timeout`).
    response_timeout: Duration,
    max_body: u64,
    /// The answer's fields kappe reads: set aside or mapped, while the others pass verbatim.
    fields: Arc<wire::KnownFields>,
    pool: Arc<Pool>,
}

/// An open connection and the bytes read from it but not used yet.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// The connection's one timer for answers that take too long. Arming a timer for every
    /// request costs two changes to the runtime's timer wheel; this one is left where it was
    /// and, when it fires before the current request's deadline, moved to that deadline.
    timer: Pin<Box<Sleep>>,
}

impl Conn {
    fn new(io: TcpStream) -> Self {
        Conn {
            io,
            buf: BytesMut::with_capacity(READ_BUFFER),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

/// `work`, unless `deadline` passes first (`None`), timed by a connection's `timer`.
async fn by<T>(
    timer: &mut Pin<Box<Sleep>>,
    deadline: tokio::time::Instant,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return Some(done),
            () = timer.as_mut() => {
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// Idle connections, most recently used last, each with the instant it expires. They were
/// pushed in time order and are taken from the end, so the vector stays sorted by expiry and
/// the expired ones are a prefix. (Expiry instants rather than idle-since instants: comparing
/// two instants is cheaper than the difference of two, which a binary search takes several of.)
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl Pool {
    fn take(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let (conn, expires) = idle.pop()?;
        if now < expires {
            return Some(conn);
        }
        // This one and all older are expired.
        idle.clear();
        None
    }

    /// The most recently used idle connection the upstream has not closed. A close (or stray
    /// bytes) that arrived while the connection was idle is seen without a system call when the
    /// runtime has already noted the socket readable, and costs one read otherwise.
    fn take_open(&self, now: Instant) -> Option<Conn> {
        loop {
            let conn = self.take(now)?;
            let mut probe = [0u8; 1];
            match conn.io.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn),
                // End of stream, bytes nobody asked for, or an error: not reusable.
                _ => {}
            }
        }
    }

    /// Keeps a connection whose last answer was read completely.
    fn put(&self, conn: Conn) {
        if !conn.buf.is_empty() {
            // The upstream sent more than it framed: never reuse such a connection.
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = idle.partition_point(|(_, expires)| *expires <= now);
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push((conn, now + IDLE_TIMEOUT));
        }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// How one exchange on a connection failed.
enum Failure {
    /// The connection failed before any byte of an answer arrived: on a pooled connection, the
    /// upstream most likely closed it while it was idle.
    Unanswered,
    Fatal(ProxyError),
}

impl Upstream {
    /// The client for `cfg`'s upstream, with an empty pool.
    pub fn new(cfg: &Config) -> Self {
        Upstream {
            authority: cfg.upstream_authority.clone(),
            connect_timeout: cfg.upstream_connect_timeout,
            response_timeout: cfg.upstream_timeout,
            max_body: cfg.max_body_size,
            fields: Arc::new(super::answer_fields(&cfg.enforcement)),
            pool: Arc::default(),
        }
    }

    /// A client for the upstream at `authority`, with the defaults tests need.
    #[cfg(test)]
    pub(crate) fn to(authority: Authority) -> Self {
        Upstream {
            authority,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
            fields: Arc::default(),
            pool: Arc::default(),
        }
    }

    /// Sends a request whose head is ready for the upstream and returns the answer's head, with
    /// a body that reads the rest. The answer's head must arrive within the response timeout
    /// of the call, connecting and retrying included.
    ///
    /// # Errors
    /// Connecting failed or timed out, the visitor's body went over the limit, the upstream
    /// broke the exchange, or its answer took too long.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let (mut resp, addressed) = self.send_at(&mut parts, body, None, Instant::now()).await?;
        let verbatim = resp.body_mut().take_verbatim();
        verbatim.restore(resp.headers_mut());
        addressed.restore(resp.headers_mut());
        Ok(resp)
    }

    /// [`send`](Self::send) for a request of `parts` and `body` that started at `start`: the
    /// caller's clock reading stands for the client's own. The head carries `forwarding`'s
    /// fields, and the answer's fields addressed to kappe come apart from it. `parts` are
    /// borrowed, not moved, so that each layer of the proxy does not copy them on the way; their
    /// map is taken, to be reused once the head is written.
    pub(crate) async fn send_at(
        &self,
        parts: &mut request::Parts,
        body: UpstreamBody,
        forwarding: Option<&Forwarding>,
        start: Instant,
    ) -> Result<(Response<ResponseBody>, wire::Addressed), ProxyError> {
        let framing = match &body {
            UpstreamBody::Empty if wire::expects_body(&parts.method) => BodyFraming::Length(0),
            UpstreamBody::Empty => BodyFraming::None,
            UpstreamBody::Limited { inner, .. } => inner
                .size_hint()
                .exact()
                .map_or(BodyFraming::Chunked, BodyFraming::Length),
        };
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut head = BytesMut::new();
        wire::encode_head(
            &parts.method,
            target,
            &parts.headers,
            forwarding,
            framing,
            &mut head,
        );
        wire::recycle(std::mem::take(&mut parts.headers));
        let head_request = parts.method == Method::HEAD;
        let repeatable = matches!(body, UpstreamBody::Empty)
            && matches!(
                parts.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            );
        let deadline = tokio::time::Instant::from_std(start + self.response_timeout);
        let mut body = Some(body);
        loop {
            let pooled = self.pool.take_open(start);
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                // Boxed, like the body writer below: both are rare, and inline they would
                // enlarge every request's future, which hyper moves into place.
                None => tokio::time::timeout_at(deadline, Box::pin(self.connect()))
                    .await
                    .map_err(|_| ProxyError::UpstreamTimeout)??,
            };
            let this_body = body.take().unwrap_or(UpstreamBody::Empty);
            match self
                .exchange(&mut conn, deadline, &head, this_body, framing, head_request)
                .await
            {
                Ok(answer) => return Ok(self.response(conn, answer)),
                Err(Failure::Unanswered) if reused && repeatable => {
                    body = Some(UpstreamBody::Empty);
                }
                Err(Failure::Unanswered) => return Err(ProxyError::UpstreamBroken),
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
    }

    async fn connect(&self) -> Result<Conn, ProxyError> {
        let host = self
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = self.authority.port_u16().unwrap_or(80);
        let attempt = async {
            let addrs = tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| ProxyError::UpstreamConnect)?;
            for addr in addrs {
                if let Ok(io) = TcpStream::connect(addr).await {
                    return Ok(io);
                }
            }
            Err(ProxyError::UpstreamConnect)
        };
        let io = tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .map_err(|_| ProxyError::UpstreamConnectTimeout)??;
        // Heads are written whole; Nagle would only hold them back.
        let _ = io.set_nodelay(true);
        Ok(Conn::new(io))
    }

    /// Writes the request and reads the answer's head, by `deadline`.
    async fn exchange(
        &self,
        conn: &mut Conn,
        deadline: tokio::time::Instant,
        head: &[u8],
        body: UpstreamBody,
        framing: BodyFraming,
        head_request: bool,
    ) -> Result<wire::Head, Failure> {
        const LATE: Failure = Failure::Fatal(ProxyError::UpstreamTimeout);
        match by(&mut conn.timer, deadline, conn.io.write_all(head)).await {
            Some(Ok(())) => {}
            Some(Err(_)) => return Err(Failure::Unanswered),
            None => return Err(LATE),
        }
        if let UpstreamBody::Limited { .. } = body {
            let write = Box::pin(Self::write_body(&mut conn.io, self.max_body, body, framing));
            by(&mut conn.timer, deadline, write)
                .await
                .ok_or(LATE)?
                .map_err(Failure::Fatal)?;
        }
        let mut read_any = false;
        loop {
            if read_any
                && let Some(answer) = wire::parse_head(&mut conn.buf, head_request, &self.fields)
                    .map_err(|_| Failure::Fatal(ProxyError::UpstreamBroken))?
            {
                return Ok(answer);
            }
            if conn.buf.capacity() - conn.buf.len() < 1024 {
                conn.buf.reserve(READ_BUFFER);
            }
            let read = by(&mut conn.timer, deadline, conn.io.read_buf(&mut conn.buf));
            match read.await.ok_or(LATE)? {
                Ok(0) | Err(_) if !read_any => return Err(Failure::Unanswered),
                Ok(0) | Err(_) => return Err(Failure::Fatal(ProxyError::UpstreamBroken)),
                Ok(_) => read_any = true,
            }
        }
    }

    /// Streams the visitor's body upstream, as `framing` announced it.
    async fn write_body(
        io: &mut TcpStream,
        max_body: u64,
        mut body: UpstreamBody,
        framing: BodyFraming,
    ) -> Result<(), ProxyError> {
        let mut sent = 0u64;
        let mut chunk = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<BodyTooLarge>() {
                    ProxyError::BodyTooLarge(max_body)
                } else {
                    ProxyError::UpstreamBroken
                }
            })?;
            let Ok(data) = frame.into_data() else {
                // Trailers of a visitor's body are not forwarded.
                continue;
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            let write = if framing == BodyFraming::Chunked {
                chunk.clear();
                wire::encode_chunk(&data, &mut chunk);
                io.write_all(&chunk).await
            } else {
                io.write_all(&data).await
            };
            write.map_err(|_| ProxyError::UpstreamBroken)?;
        }
        match framing {
            BodyFraming::Chunked => io
                .write_all(wire::LAST_CHUNK)
                .await
                .map_err(|_| ProxyError::UpstreamBroken),
            BodyFraming::Length(n) if n != sent => Err(ProxyError::UpstreamBroken),
            _ => Ok(()),
        }
    }

    /// The answer as a response whose body reads the rest of it; a body that arrived with the
    /// head is taken whole, and the connection goes straight back to the pool.
    fn response(
        &self,
        mut conn: Conn,
        answer: wire::Head,
    ) -> (Response<ResponseBody>, wire::Addressed) {
        let mut body = match answer.framing {
            Framing::Length(n) if n <= conn.buf.len() as u64 => {
                let data = conn.buf.split_to(n as usize).freeze();
                if answer.keep_alive {
                    self.pool.put(conn);
                }
                ResponseBody::full(data)
            }
            framing => ResponseBody::stream(conn, framing, answer.keep_alive, self.pool.clone()),
        };
        body.set_verbatim(answer.verbatim);
        let mut resp = Response::new(body);
        *resp.status_mut() = answer.status;
        *resp.version_mut() = answer.version;
        *resp.headers_mut() = answer.headers;
        (resp, answer.addressed)
    }
}

#[cfg(test)]
mod tests;
