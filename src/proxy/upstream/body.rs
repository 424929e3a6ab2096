//! The upstream response's body: either bytes that arrived with the head (an ad banner nearly
//! always does), or a stream read off the pooled connection as the visitor takes it. The
//! connection goes back to its pool the moment the body's last byte has been read, and is closed
//! if the body is dropped before that.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncReadExt;

use super::wire::{Chunk, ChunkedDecoder, Framing, Verbatim, WireError};
use super::{Conn, Pool};

/// Bytes read from the upstream at a time while streaming.
const READ_CHUNK: usize = 16 * 1024;

/// A response body from the upstream.
#[derive(Debug)]
pub struct ResponseBody {
    state: State,
    /// The answer's fields that pass through untouched, for the head written to the visitor.
    verbatim: Verbatim,
}

#[derive(Debug)]
enum State {
    Done,
    /// The whole body, already read.
    Full(Bytes),
    /// Boxed: streaming is the rare case, and the common one should not carry its size.
    Stream(Box<Streaming>),
}

#[derive(Debug)]
struct Streaming {
    conn: Conn,
    reading: Reading,
    keep_alive: bool,
    pool: Arc<Pool>,
}

#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
}

impl ResponseBody {
    pub(super) fn empty() -> Self {
        ResponseBody {
            state: State::Done,
            verbatim: Verbatim::default(),
        }
    }

    /// Carries the answer's `verbatim` fields again.
    pub fn set_verbatim(&mut self, verbatim: Verbatim) {
        self.verbatim = verbatim;
    }

    /// Takes the answer's fields that pass through untouched (see [`Verbatim`]), leaving none.
    pub fn take_verbatim(&mut self) -> Verbatim {
        std::mem::take(&mut self.verbatim)
    }

    pub(super) fn full(b: Bytes) -> Self {
        if b.is_empty() {
            Self::empty()
        } else {
            ResponseBody {
                state: State::Full(b),
                verbatim: Verbatim::default(),
            }
        }
    }

    pub(super) fn stream(conn: Conn, framing: Framing, keep_alive: bool, pool: Arc<Pool>) -> Self {
        let reading = match framing {
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(ChunkedDecoder::default()),
            Framing::Close => Reading::Close,
        };
        ResponseBody {
            state: State::Stream(Box::new(Streaming {
                conn,
                reading,
                keep_alive,
                pool,
            })),
            verbatim: Verbatim::default(),
        }
    }

    /// The body has been read to its end: the connection goes back to the pool if it can carry
    /// another request.
    fn finish(&mut self) {
        if let State::Stream(s) = std::mem::replace(&mut self.state, State::Done)
            && s.keep_alive
        {
            s.pool.put(s.conn);
        }
    }
}

impl Streaming {
    /// The next frame from what is buffered, `Ok(None)` when more must be read, or the end.
    fn next_buffered(&mut self) -> Result<Option<Step>, WireError> {
        let buf = &mut self.conn.buf;
        Ok(match &mut self.reading {
            Reading::Length(0) => Some(Step::End),
            Reading::Length(_) | Reading::Close if buf.is_empty() => None,
            Reading::Length(rem) => {
                let n = usize::try_from(*rem).unwrap_or(usize::MAX).min(buf.len());
                *rem -= n as u64;
                Some(Step::Data(buf.split_to(n).freeze()))
            }
            Reading::Close => Some(Step::Data(buf.split().freeze())),
            Reading::Chunked(d) => match d.decode(buf)? {
                Chunk::Data(b) => Some(Step::Data(b)),
                Chunk::More => None,
                Chunk::End => Some(Step::End),
            },
        })
    }
}

enum Step {
    Data(Bytes),
    End,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let s = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Full(_) => {
                    let State::Full(b) = std::mem::replace(&mut this.state, State::Done) else {
                        unreachable!("matched above")
                    };
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                State::Stream(s) => s,
            };
            match s.next_buffered() {
                Err(e) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))));
                }
                Ok(Some(Step::End)) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Some(Step::Data(b))) => {
                    if matches!(s.reading, Reading::Length(0)) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Ok(None) => {}
            }
            s.conn.buf.reserve(READ_CHUNK);
            let read = {
                let conn = &mut s.conn;
                let fut = pin!(conn.io.read_buf(&mut conn.buf));
                ready!(fut.poll(cx))
            };
            match read {
                Ok(0) if matches!(s.reading, Reading::Close) => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
                }
                Ok(_) => {}
                Err(e) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Done => true,
            State::Full(_) => false,
            State::Stream(s) => matches!(s.reading, Reading::Length(0)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Done => SizeHint::with_exact(0),
            State::Full(b) => SizeHint::with_exact(b.len() as u64),
            State::Stream(s) => match s.reading {
                Reading::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
    }
}
