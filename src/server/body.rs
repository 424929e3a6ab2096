//! The visitor's request body as handlers see it: nothing, the rest of an HTTP/1.1 request read
//! from its connection as the handler asks for it, or an HTTP/2 stream's body.
//!
//! While an HTTP/1.1 handler runs, the connection's reading side (socket, read buffer and how
//! much body is left) is lent to the body. When the handler returns, the connection takes it
//! back; a body the handler did not read to its end means the connection cannot carry another
//! request, and it is closed after the response.

use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};

use super::io::Io;
use crate::proxy::body::BoxError;
use crate::proxy::upstream::wire::{Chunk, ChunkedDecoder};

/// How many bytes a body read asks the socket for at least.
const READ_CHUNK: usize = 16 * 1024;

/// The body of a visitor's request.
#[derive(Debug, Default)]
pub enum VisitorBody {
    /// No body (no length field, or a length of zero).
    #[default]
    Empty,
    /// An HTTP/1.1 body, read from the connection on demand.
    Http1(Http1Body),
    /// An HTTP/2 stream's body.
    Http2(Incoming),
}

/// How much of an HTTP/1.1 request body is still to be read.
#[derive(Debug)]
pub(super) enum Left {
    /// All of it has been read.
    Done,
    /// This many bytes.
    Length(u64),
    /// Chunks, up to the last one and its trailers.
    Chunked(ChunkedDecoder),
}

/// The reading side of an HTTP/1.1 connection: the stream, the bytes read but not used yet, and
/// what is left of the current request's body. Lent to an [`Http1Body`] while a handler runs.
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) io: Io,
    pub(super) buf: BytesMut,
    pub(super) left: Left,
    /// What is still to be written of an interim `100 Continue` before the body is read.
    pub(super) interim: &'static [u8],
    /// The interim answer has been written and is still to be flushed.
    pub(super) flush: bool,
}

/// The connection's reading side, shared between the connection and the request body.
pub(super) type Lent = Arc<Mutex<Option<Reader>>>;

/// An HTTP/1.1 request body streamed from its connection.
#[derive(Debug)]
pub struct Http1Body {
    reader: Lent,
    /// The declared length, for the size hint.
    length: Option<u64>,
}

impl Http1Body {
    pub(super) fn new(reader: Lent, length: Option<u64>) -> Self {
        Http1Body { reader, length }
    }
}

impl Body for VisitorBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            VisitorBody::Empty => Poll::Ready(None),
            VisitorBody::Http1(b) => b.poll_data(cx).map(|o| o.map(|r| r.map(Frame::data))),
            VisitorBody::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            VisitorBody::Empty => true,
            // An empty HTTP/1.1 body is `Empty`; this one has bytes still to come.
            VisitorBody::Http1(_) => false,
            VisitorBody::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            VisitorBody::Empty => SizeHint::with_exact(0),
            VisitorBody::Http1(b) => b.length.map(SizeHint::with_exact).unwrap_or_default(),
            VisitorBody::Http2(b) => b.size_hint(),
        }
    }
}

impl Http1Body {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let mut slot = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(r) = slot.as_mut() else {
            // The connection took its reader back: the handler has already answered, and what
            // was not read of the body is gone with the connection.
            return Poll::Ready(Some(Err(io::Error::other(
                "the request body was read after the request was answered",
            )
            .into())));
        };
        // The visitor waits for leave to send the body.
        while !r.interim.is_empty() {
            let n = ready!(Pin::new(&mut r.io).poll_write(cx, r.interim))?;
            if n == 0 {
                return Poll::Ready(Some(Err(io::Error::from(io::ErrorKind::WriteZero).into())));
            }
            r.interim = &r.interim[n..];
            r.flush = r.interim.is_empty();
        }
        if r.flush {
            ready!(Pin::new(&mut r.io).poll_flush(cx))?;
            r.flush = false;
        }
        loop {
            match &mut r.left {
                Left::Done => return Poll::Ready(None),
                Left::Length(n) => {
                    if !r.buf.is_empty() {
                        let take = usize::try_from(*n).unwrap_or(usize::MAX).min(r.buf.len());
                        let data = r.buf.split_to(take).freeze();
                        *n -= take as u64;
                        if *n == 0 {
                            r.left = Left::Done;
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Left::Chunked(decoder) => match decoder.decode(&mut r.buf) {
                    Ok(Chunk::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Chunk::End) => {
                        r.left = Left::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Chunk::More) => {}
                    Err(e) => {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            e,
                        )
                        .into())));
                    }
                },
            }
            if r.buf.capacity() - r.buf.len() < READ_CHUNK / 4 {
                r.buf.reserve(READ_CHUNK);
            }
            let read = {
                let fut = pin!(r.io.read_buf(&mut r.buf));
                ready!(fut.poll(cx))
            };
            match read {
                Ok(0) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the visitor closed the connection inside a request body",
                    )
                    .into())));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }
}

/// Takes the reading side back from a request's body once the handler has answered.
pub(super) fn take_back(lent: &Lent) -> Option<Reader> {
    lent.lock().unwrap_or_else(PoisonError::into_inner).take()
}
