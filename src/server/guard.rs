//! The visitor connection's stream as the HTTP/1 server (`h1.rs`) reads it: every received byte
//! is shown to the connection's [`Framing`] tracker in the buffer the server read it into, and
//! what the tracker refuses never reaches the server. Writes pass straight through.
//!
//! A refused head is not answered here. The server is shown the head's harmless beginning
//! followed by a NUL byte, which no request head may contain, and then the end of the stream; so
//! the server answers `400 Bad Request` after the responses to earlier pipelined requests,
//! closes the connection, and never hands the request to kappe's handler.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

use super::framing::{Framing, Verdict};
use super::io::write_through;
use crate::metrics::Metrics;

/// What the server is shown in place of a refused head, from the offending byte on. The
/// server's head reader ([`crate::head`], httparse's rules) fails on the NUL wherever it
/// stands in a head, and so would httparse, even with invalid header lines ignored. The
/// empty line after it lets a head end there for any parser that waits for one before parsing
/// again, so that the refusal is answered rather than met as the end of the stream.
const POISON: &[u8] = b"\0\n\n";

/// How much of the stream is still delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Everything the tracker passes.
    Open,
    /// The stream was refused; this many bytes of [`POISON`] are delivered, then the end.
    Poisoned(usize),
    /// The end of the stream.
    Closed,
}

/// A stream whose reads are checked for ambiguous request framing before the server sees them.
pub(crate) struct Guarded<S> {
    inner: S,
    framing: Framing,
    cut: Cut,
    metrics: Option<Arc<Metrics>>,
}

impl<S> Guarded<S> {
    /// Guards a connection whose protocol its first bytes will tell (HTTP/1, or HTTP/2 with
    /// prior knowledge). Refusals are counted in `metrics`.
    pub(crate) fn new(inner: S, metrics: Option<Arc<Metrics>>) -> Self {
        Guarded {
            inner,
            framing: Framing::new(),
            cut: Cut::Open,
            metrics,
        }
    }

    /// Hands over as much of the rest of [`POISON`] as fits.
    fn poison(&mut self, buf: &mut ReadBuf<'_>) {
        if let Cut::Poisoned(sent) = self.cut {
            let n = buf.remaining().min(POISON.len() - sent);
            buf.put_slice(&POISON[sent..sent + n]);
            self.cut = if sent + n == POISON.len() {
                Cut::Closed
            } else {
                Cut::Poisoned(sent + n)
            };
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.cut {
            Cut::Open => {}
            Cut::Poisoned(_) => {
                this.poison(buf);
                return Poll::Ready(Ok(()));
            }
            // Returning nothing is the end of the stream.
            Cut::Closed => return Poll::Ready(Ok(())),
        }
        if this.framing.is_pass_through() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let start = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        // Only the bytes this read added are looked at, in place.
        match this.framing.scan(&buf.filled()[start..]) {
            Verdict::Pass => {}
            Verdict::Refuse { keep, why } => {
                buf.set_filled(start + keep);
                this.cut = Cut::Poisoned(0);
                // The offending byte was in this read, so at least the NUL fits now.
                this.poison(buf);
                tracing::debug!(
                    reason = why.as_str(),
                    "refused a request head that could be framed two ways"
                );
                if let Some(m) = &this.metrics {
                    // The server answers it with 400; the handler, which counts the others,
                    // never sees it.
                    m.count_status(http::StatusCode::BAD_REQUEST);
                }
            }
            Verdict::Truncate { keep } => {
                buf.set_filled(start + keep);
                this.cut = Cut::Closed;
            }
        }
        Poll::Ready(Ok(()))
    }
}

// Writes pass straight through.
write_through!(Guarded);

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use http_body_util::BodyExt;
    use tokio::io::AsyncWrite;

    use super::super::h1::{self, Limits};
    use super::super::io::Io;
    use super::super::{ConnInfo, VisitorBody};
    use super::*;
    use crate::proxy::body::ProxyBody;

    /// A connection that delivers scripted pieces, one per read, then waits forever (a client
    /// that keeps its connection open), and records what is written to it.
    struct Script {
        reads: VecDeque<Vec<u8>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Script {
        fn new(stream: &[u8], cuts: &[usize]) -> (Self, Arc<Mutex<Vec<u8>>>) {
            let mut reads = VecDeque::new();
            let mut start = 0;
            for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
                // An empty read would be the end of the stream.
                if end > start {
                    reads.push_back(stream[start..end].to_vec());
                }
                start = end;
            }
            let written = Arc::new(Mutex::new(Vec::new()));
            let script = Script {
                reads,
                written: written.clone(),
            };
            (script, written)
        }
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let Some(mut piece) = self.reads.pop_front() else {
                return Poll::Pending;
            };
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                self.reads.push_front(piece.split_off(n));
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Script {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Serves `stream`, delivered in pieces cut at `cuts`, with kappe's HTTP/1 server behind a
    /// guard, until the connection closes or stops making progress. Returns what the server
    /// wrote and the requests the handler saw, as "METHOD path body".
    fn serve(stream: &[u8], cuts: &[usize]) -> (String, Vec<String>) {
        let (script, written) = Script::new(stream, cuts);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handled = seen.clone();
        let handler = move |req: http::Request<VisitorBody>, _info: ConnInfo| {
            let handled = handled.clone();
            async move {
                let line = format!("{} {}", req.method(), req.uri().path());
                let body = match req.into_body().collect().await {
                    Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                    Err(_) => "(broken body)".to_owned(),
                };
                handled.lock().unwrap().push(format!("{line} {body}"));
                http::Response::new(ProxyBody::full("ok"))
            }
        };
        // Timers need a runtime to register with; nothing here waits for one to fire.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _runtime = rt.enter();
        let io = Io::Test(Box::new(Guarded::new(script, None)));
        let limits = Limits {
            header_read_timeout: std::time::Duration::from_secs(60),
            max_header_size: 64 * 1024,
        };
        let info = ConnInfo {
            peer: ([127, 0, 0, 1], 1).into(),
            tls: false,
        };
        let mut conn = std::pin::pin!(h1::serve(
            io,
            info,
            limits,
            None,
            &handler,
            std::future::pending::<()>()
        ));
        // HTTP/1 runs entirely inside the connection's future (the handler too, as it is
        // awaited there), so polling it until nothing changes any more is deterministic.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut progress, mut unchanged) = (0, 0);
        while unchanged < 64 {
            if conn.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            let now = written.lock().unwrap().len() + seen.lock().unwrap().len();
            unchanged = if now == progress { unchanged + 1 } else { 0 };
            progress = now;
        }
        let written = String::from_utf8_lossy(&written.lock().unwrap()).into_owned();
        let seen = seen.lock().unwrap().clone();
        (written, seen)
    }

    fn statuses(written: &str) -> Vec<&str> {
        written
            .match_indices("HTTP/1.1 ")
            .map(|(at, _)| &written[at + 9..at + 12])
            .collect()
    }

    const SMUGGLE: &[u8] = b"POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: 39\r\n\
Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

    /// The server answers a refused head with 400 and the handler never sees it, wherever the
    /// reads happen to cut the request.
    #[test]
    fn refused_head_is_answered_400_at_every_cut() {
        for cut in 0..=SMUGGLE.len() {
            let (written, seen) = serve(SMUGGLE, &[cut]);
            assert_eq!(statuses(&written), ["400"], "cut at {cut}: {written:?}");
            assert!(seen.is_empty(), "cut at {cut}: {seen:?}");
        }
        let bytes: Vec<usize> = (1..SMUGGLE.len()).collect();
        let (written, seen) = serve(SMUGGLE, &bytes);
        assert_eq!(
            statuses(&written),
            ["400"],
            "one byte per read: {written:?}"
        );
        assert!(seen.is_empty());
    }

    /// A good request pipelined before a refused one is answered first; the refused one and
    /// what follows it are not handled.
    #[test]
    fn earlier_pipelined_requests_are_answered_before_the_400() {
        let mut stream = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        stream.extend_from_slice(
            b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
        );
        stream.extend_from_slice(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n");
        for cut in [0, 20, 40, 80, stream.len()] {
            let (written, seen) = serve(&stream, &[cut]);
            assert_eq!(
                statuses(&written),
                ["200", "400"],
                "cut at {cut}: {written}"
            );
            assert_eq!(seen, ["GET /first "], "cut at {cut}");
        }
    }

    /// Chunked and counted bodies whose contents look like bad heads are delivered whole and
    /// the requests after them are served.
    #[test]
    fn bodies_pass_whole_and_keep_the_connection_in_step() {
        let stream = b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
4;ext=1\r\nwiki\r\n1c\r\nContent-Length: 1\r\nX: yy\r\n\r\n\r\n0\r\nTrailer-A: 1\r\n\r\n\
POST /counted HTTP/1.1\r\nHost: x\r\nContent-Length: 21\r\n\r\nContent-Length: 1\r\n\r\n\
GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        for cut in [0, 30, 70, 100, 150, 200] {
            let (written, seen) = serve(stream, &[cut]);
            assert_eq!(
                statuses(&written),
                ["200", "200", "200"],
                "cut at {cut}: {written}"
            );
            assert_eq!(
                seen,
                [
                    "POST /chunked wikiContent-Length: 1\r\nX: yy\r\n\r\n",
                    "POST /counted Content-Length: 1\r\n\r\n",
                    "GET /last ",
                ]
            );
        }
    }

    /// The first `len` bytes a guard delivers.
    async fn read_through(mut guard: Guarded<Script>, len: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut out = vec![0; len];
        guard.read_exact(&mut out).await.unwrap();
        out
    }

    /// An HTTP/2 connection, by preface or by ALPN, is delivered byte for byte.
    #[tokio::test]
    async fn http2_passes_untouched() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend_from_slice(b"\x00\x00\x08\x06\x00\nContent-Length:1\nTransfer-Encoding:x\n");
        for cut in [0, 5, 24, 30] {
            let (script, _) = Script::new(&stream, &[cut]);
            assert_eq!(
                read_through(Guarded::new(script, None), stream.len()).await,
                stream
            );
        }
    }

    /// A chunked body that breaks its framing ends the stream right after the offending byte.
    #[tokio::test]
    async fn broken_chunk_ends_the_stream() {
        use tokio::io::AsyncReadExt;
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = head.to_vec();
        stream.extend_from_slice(b"5\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        let (script, _) = Script::new(&stream, &[head.len() + 1]);
        let mut out = Vec::new();
        Guarded::new(script, None)
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, stream[..head.len() + 2]);
    }

    /// A refusal is counted as an answered 4xx request, and the stream the server reads ends with
    /// the poison, whatever room each read leaves.
    #[tokio::test]
    async fn refusals_are_counted_and_poisoned() {
        let metrics = Arc::new(Metrics::new());
        let (script, _) = Script::new(SMUGGLE, &[]);
        let mut guard = Guarded::new(script, Some(metrics.clone()));
        let keep = SMUGGLE
            .windows(18)
            .position(|w| w == b"Transfer-Encoding:")
            .unwrap()
            + 17;
        // Reads as small as one byte.
        let mut out = Vec::new();
        loop {
            let mut one = [0u8; 1];
            let mut buf = ReadBuf::new(&mut one);
            std::future::poll_fn(|cx| Pin::new(&mut guard).poll_read(cx, &mut buf))
                .await
                .unwrap();
            if buf.filled().is_empty() {
                break;
            }
            out.extend_from_slice(buf.filled());
        }
        let mut expected = SMUGGLE[..keep].to_vec();
        expected.extend_from_slice(POISON);
        assert_eq!(out, expected);
        assert!(
            metrics
                .render()
                .contains("kappe_http_requests_total{code=\"4xx\"} 1"),
            "{}",
            metrics.render()
        );
    }
}
