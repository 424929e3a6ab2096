//! kappe's HTTP/1.1 server connection: reads request heads, calls the handler in the
//! connection's own task, and writes each response with its framing. There is no dispatcher,
//! channel or second task between the socket and the handler.
//!
//! - Heads are read by [`crate::head::read_request`] (httparse's rules); the request target and
//!   header values are slices of the head, shared rather than copied. A head over
//!   `--max-header-size` gets 431, a malformed one 400, one not complete within
//!   `--header-read-timeout` 408; each closes the connection. Ambiguous framing never gets this
//!   far: the guard (`guard.rs`) has cut the stream.
//! - A body is read only as the handler asks for it ([`super::body`]). `Expect: 100-continue`
//!   is answered when the handler first asks for the body, so an answer that needs none (413, a
//!   refusal) spares the visitor the upload.
//! - A response's framing follows its body: a known length is sent as `content-length`, an open
//!   body chunked (or, to an HTTP/1.0 visitor, until the connection closes). A banner's head and
//!   body leave in one write.
//! - Pipelined requests are answered in order. An idle connection closes after
//!   `--header-read-timeout` or when the server shuts down; a request in flight at shutdown is
//!   answered with `connection: close`.
//! - A connection whose first bytes are the HTTP/2 preface is handed back to the caller with
//!   those bytes, for the HTTP/2 server.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::ConnInfo;
use super::body::{Http1Body, Left, Reader, VisitorBody, take_back};
use super::io::Io;
use crate::head::{self, HeadError as ReadError};
use crate::proxy::body::ProxyBody;
use crate::proxy::forward::list_items;
use crate::proxy::upstream::wire::{
    self, Addressed, ChunkedDecoder, ConnectionTokens, KnownFields, LAST_CHUNK, Verbatim,
    encode_chunk,
};

/// The most header lines a request may have.
const MAX_HEADERS: usize = 128;
/// A connection's first read buffer; a typical request head fits.
const READ_BUFFER: usize = 8 * 1024;
/// Response body bytes gathered behind the head before a write.
const WRITE_INLINE: usize = 64 * 1024;
/// The start of the HTTP/2 connection preface (RFC 9113 section 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
/// How long a refused connection's answer is given to be written and the rest of the visitor's
/// bytes to be read and discarded, so that the close does not reset the answer away.
const LINGER: Duration = Duration::from_millis(500);
/// The interim answer to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Limits of a connection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) header_read_timeout: Duration,
    pub(super) max_header_size: usize,
}

/// How a connection ended.
pub(super) enum Ended {
    /// Closed.
    Closed,
    /// Its first bytes were the HTTP/2 preface: the stream and the bytes already read from it.
    Http2(Io, Bytes),
}

/// Why no request head could be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    Malformed,
    TooLarge,
    Timeout,
    /// The connection broke or closed inside a head: nobody to answer.
    Gone,
    Http2,
}

/// A parsed request head, before its body is attached.
struct Head {
    req: Request<()>,
    left: Left,
    keep_alive: bool,
    expect_continue: bool,
}

/// Serves HTTP/1.1 requests on `io` until it closes, a request asks to close it, or `stopped`
/// completes.
pub(super) async fn serve<H, Fut, S>(
    io: Io,
    info: ConnInfo,
    limits: Limits,
    fields: Option<&KnownFields>,
    handler: &H,
    stopped: S,
) -> Ended
where
    H: Fn(Request<VisitorBody>, ConnInfo) -> Fut,
    Fut: Future<Output = Response<ProxyBody>>,
    S: Future<Output = ()>,
{
    tokio::pin!(stopped);
    // One timer for the connection's whole life, moved forward only when it fires early.
    let idle = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(idle);
    let mut reader = Reader {
        io,
        buf: BytesMut::with_capacity(READ_BUFFER),
        left: Left::Done,
        interim: b"",
        flush: false,
    };
    let mut out = BytesMut::with_capacity(READ_BUFFER);
    let mut first = true;
    loop {
        let head = match read_head(
            &mut reader,
            limits,
            fields,
            idle.as_mut(),
            stopped.as_mut(),
            first,
        )
        .await
        {
            Ok(Some(head)) => head,
            Ok(None) | Err(HeadError::Gone) => return Ended::Closed,
            Err(HeadError::Http2) => return Ended::Http2(reader.io, reader.buf.freeze()),
            Err(e) => {
                let status = match e {
                    HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    HeadError::Timeout => StatusCode::REQUEST_TIMEOUT,
                    _ => StatusCode::BAD_REQUEST,
                };
                refuse(&mut reader.io, &mut out, status).await;
                return Ended::Closed;
            }
        };
        first = false;
        let Head {
            req,
            left,
            mut keep_alive,
            expect_continue,
        } = head;
        let head_request = req.method() == Method::HEAD;
        let version = req.version();
        let resp = if matches!(left, Left::Done) {
            handler(req.map(|()| VisitorBody::Empty), info).await
        } else {
            // Asked for only when the handler first reads the body: an answer that needs no
            // body (413, a refusal) spares the visitor sending it.
            reader.interim = if expect_continue && reader.buf.is_empty() {
                CONTINUE
            } else {
                b""
            };
            let length = match left {
                Left::Length(n) => Some(n),
                _ => None,
            };
            reader.left = left;
            let lent = Arc::new(Mutex::new(Some(reader)));
            let body = Http1Body::new(lent.clone(), length);
            let resp = handler(req.map(|()| VisitorBody::Http1(body)), info).await;
            reader = take_back(&lent).expect("only the connection takes its reader back");
            // Unread body bytes stand between this request and the next.
            if !matches!(reader.left, Left::Done) {
                keep_alive = false;
            }
            resp
        };
        if keep_alive && futures_util::poll!(stopped.as_mut()).is_ready() {
            keep_alive = false;
        }
        match write_response(
            &mut reader.io,
            &mut out,
            resp,
            head_request,
            version,
            keep_alive,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                let _ = reader.io.shutdown().await;
                return Ended::Closed;
            }
            Err(e) => {
                tracing::debug!(error = %e, "response to a visitor broke off");
                return Ended::Closed;
            }
        }
    }
}

/// Waits for the next complete request head. `Ok(None)`: the connection closed, idled out or
/// the server is stopping, between requests.
///
/// The head must be complete within `--header-read-timeout` of the wait's start. `idle` is the
/// connection's one timer: rather than arming a timer for every wait, which costs two changes
/// to the runtime's timer wheel per request, it is left where it was and, when it fires before
/// the current deadline, moved to that deadline.
async fn read_head<S: Future<Output = ()>>(
    r: &mut Reader,
    limits: Limits,
    fields: Option<&KnownFields>,
    mut idle: Pin<&mut Sleep>,
    mut stopped: Pin<&mut S>,
    first: bool,
) -> Result<Option<Head>, HeadError> {
    let mut deadline = None;
    loop {
        if !r.buf.is_empty() {
            if first && r.buf[0] == b'P' {
                let n = r.buf.len().min(HTTP2_PREFACE.len());
                if r.buf[..n] == HTTP2_PREFACE[..n] {
                    if n == HTTP2_PREFACE.len() {
                        return Err(HeadError::Http2);
                    }
                } else if let Some(head) = parse(&mut r.buf, limits.max_header_size, fields)? {
                    return Ok(Some(head));
                }
            } else if let Some(head) = parse(&mut r.buf, limits.max_header_size, fields)? {
                return Ok(Some(head));
            }
        }
        if r.buf.capacity() - r.buf.len() < READ_BUFFER / 4 {
            r.buf.reserve(READ_BUFFER);
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + limits.header_read_timeout);
        let between = r.buf.is_empty();
        let read = loop {
            // The read first: when the connection is woken by data, nothing else is polled.
            tokio::select! {
                biased;
                read = r.io.read_buf(&mut r.buf) => break read,
                () = idle.as_mut() => {
                    if Instant::now() >= deadline {
                        return if between { Ok(None) } else { Err(HeadError::Timeout) };
                    }
                    idle.as_mut().reset(deadline);
                }
                () = stopped.as_mut(), if between => return Ok(None),
            }
        };
        match read {
            Ok(0) if r.buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(HeadError::Gone),
            Ok(_) => {}
        }
    }
}

/// Parses one request head from the front of `buf`, removing it. `Ok(None)`: not complete yet.
fn parse(
    buf: &mut BytesMut,
    max: usize,
    fields: Option<&KnownFields>,
) -> Result<Option<Head>, HeadError> {
    // The request line, and the offsets of the header names and values, to slice them out of
    // the head once it is split off the buffer.
    let mut spans = wire::spare_spans();
    let line = match head::read_request(buf, MAX_HEADERS, &mut spans) {
        Ok(Some(line)) => line,
        Ok(None) if buf.len() >= max => return Err(HeadError::TooLarge),
        Ok(None) => {
            wire::give_back_spans(spans);
            return Ok(None);
        }
        Err(ReadError::TooManyFields) => return Err(HeadError::TooLarge),
        Err(ReadError::Malformed) => return Err(HeadError::Malformed),
    };
    let len = line.len;
    if len > max {
        return Err(HeadError::TooLarge);
    }
    let (at, n) = line.method;
    let method = Method::from_bytes(&buf[at..at + n]).map_err(|_| HeadError::Malformed)?;
    let version = head::version_of(line.minor);
    let target = line.target;
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1))
        .map_err(|_| HeadError::Malformed)?;
    // Room for the fields the proxy adds (forwarding, Via, hints), so that the map does not
    // grow and rehash on the way upstream.
    let mut connection = ConnectionTokens::default();
    let wire::Fields {
        headers,
        verbatim,
        length,
        coding,
    } = wire::fields_map(
        head,
        spans,
        8,
        fields,
        &mut connection,
        None,
        &mut Addressed::default(),
    )
    .map_err(|_| HeadError::Malformed)?;

    let left = if !length && !coding {
        // Neither field: no body, and nothing in the map to look for.
        Left::Done
    } else if coding {
        // The guard has already refused a coding with a length, in HTTP/1.0, or not ending in
        // chunked; this is the last line of that defence.
        let chunked = list_items(&headers, header::TRANSFER_ENCODING)
            .next_back()
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        if !chunked || version == Version::HTTP_10 || length {
            return Err(HeadError::Malformed);
        }
        Left::Chunked(ChunkedDecoder::default())
    } else {
        match wire::content_length(&headers).map_err(|_| HeadError::Malformed)? {
            None | Some(0) => Left::Done,
            Some(n) => Left::Length(n),
        }
    };
    let keep_alive = !connection.close && (version == Version::HTTP_11 || connection.keep_alive);
    let expect_continue = version == Version::HTTP_11
        && !matches!(left, Left::Done)
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));

    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    if !verbatim.is_empty() {
        // For the proxy to write upstream after the map's fields (`Forwarding`).
        req.extensions_mut().insert(verbatim);
    }
    Ok(Some(Head {
        req,
        left,
        keep_alive,
        expect_continue,
    }))
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

/// Writes `resp`. `Ok(false)`: the connection must close after it.
async fn write_response(
    io: &mut Io,
    out: &mut BytesMut,
    resp: Response<ProxyBody>,
    head_request: bool,
    version: Version,
    mut keep_alive: bool,
) -> io::Result<bool> {
    let (mut parts, mut body) = resp.into_parts();
    let status = parts.status;
    let h = &mut parts.headers;
    if list_items(h, header::CONNECTION).any(|t| t.eq_ignore_ascii_case("close")) {
        keep_alive = false;
    }
    // The framing fields are written from `framing`, not kept in the map: a banner's answer
    // thus costs no change to the map on its way out.
    let framing = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::None
    } else if let Some(n) = body.size_hint().exact() {
        Framing::Length(n)
    } else if let Ok(Some(n)) = wire::content_length(h) {
        Framing::Length(n)
    } else if version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::Close
    };
    if !keep_alive {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else if version == Version::HTTP_10 {
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }

    let verbatim = body.take_verbatim();
    out.clear();
    encode_head(status, h, &verbatim, framing, out);
    drop(verbatim);
    wire::recycle(std::mem::take(h));
    if framing == Framing::None {
        io.write_all(out).await?;
        return Ok(keep_alive);
    }
    let mut sent = 0u64;
    loop {
        // What the body has ready is gathered behind the head; what was gathered is written
        // before waiting for more.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers and empty frames are not sent.
                _ => continue,
            },
        };
        sent += data.len() as u64;
        match framing {
            Framing::Length(n) if sent > n => {
                return Err(io::Error::other("response body longer than its length"));
            }
            Framing::Chunked => encode_chunk(&data, out),
            _ if out.len() + data.len() <= WRITE_INLINE => out.extend_from_slice(&data),
            _ => {
                io.write_all(out).await?;
                out.clear();
                io.write_all(&data).await?;
            }
        }
        if out.len() >= WRITE_INLINE {
            io.write_all(out).await?;
            out.clear();
        }
    }
    match framing {
        Framing::Length(n) if sent != n => {
            return Err(io::Error::other("response body shorter than its length"));
        }
        Framing::Chunked => out.extend_from_slice(LAST_CHUNK),
        _ => {}
    }
    if !out.is_empty() {
        io.write_all(out).await?;
    }
    Ok(keep_alive && framing != Framing::Close)
}

/// The status line, the upstream answer's fields that pass through untouched (`verbatim`), the
/// header fields in the order the handler left them, then the framing fields for `framing` and
/// a Date field when there was none. With a body to delimit, the map's own Content-Length and
/// Transfer-Encoding are left out: `framing` says how the body is sent. Without one (HEAD, 1xx,
/// 204, 304), they are sent as the handler left them.
fn encode_head(
    status: StatusCode,
    headers: &HeaderMap,
    verbatim: &Verbatim,
    framing: Framing,
    out: &mut BytesMut,
) {
    out.reserve(256 + headers.len() * 48);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    verbatim.write(out);
    let delimited = framing != Framing::None;
    let mut dated = verbatim.has_date();
    for (name, value) in headers {
        if delimited && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING) {
            continue;
        }
        dated |= name == header::DATE;
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => wire::put_content_length(n, out),
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if !dated {
        out.put_slice(b"date: ");
        date::write(out);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// Answers a request that cannot be served with `status` and no body, then closes: the rest of
/// what the visitor sent is read and dropped for a moment, so that closing with unread bytes
/// does not reset the answer away before the visitor reads it.
async fn refuse(io: &mut Io, out: &mut BytesMut, status: StatusCode) {
    let mut h = HeaderMap::with_capacity(1);
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    out.clear();
    encode_head(status, &h, &Verbatim::default(), Framing::Length(0), out);
    let _ = tokio::time::timeout(LINGER, async {
        io.write_all(out).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match io.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// The `Date` field, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    use bytes::BytesMut;

    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    /// Writes the current time as an HTTP date, formatted once a second per thread.
    pub(super) fn write(out: &mut BytesMut) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHE.with_borrow_mut(|c| {
            if c.0 != secs || c.1.is_empty() {
                c.1.clear();
                c.1.push_str(&httpdate::fmt_http_date(now));
                c.0 = secs;
            }
            out.extend_from_slice(c.1.as_bytes());
        });
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
