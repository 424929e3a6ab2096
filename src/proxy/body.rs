//! Body types of the proxy. Responses stream the upstream's body through untouched unless kappe
//! had to read a prefix of it to find a campaign; requests stream the visitor's body upstream and
//! stop at `--max-body-size`. Enums rather than boxed bodies keep the hot path free of allocation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::server::VisitorBody;

use super::upstream::ResponseBody;
use super::upstream::wire::Verbatim;

/// An error from a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response kappe sends.
#[derive(Debug)]
pub enum ProxyBody {
    /// Nothing.
    Empty,
    /// A complete body kappe built or read in full.
    Full(Option<Bytes>),
    /// The upstream's body, streamed.
    Stream(ResponseBody),
    /// A prefix kappe already read, then the rest of the upstream's body.
    Prefixed(Option<Bytes>, ResponseBody),
}

impl ProxyBody {
    /// Takes the upstream answer's fields that pass through untouched, leaving none: the head
    /// written to the visitor carries them.
    pub fn take_verbatim(&mut self) -> Verbatim {
        match self {
            ProxyBody::Stream(b) | ProxyBody::Prefixed(_, b) => b.take_verbatim(),
            ProxyBody::Empty | ProxyBody::Full(_) => Verbatim::default(),
        }
    }

    /// Gives the upstream answer's `verbatim` fields to the body that goes on reading the
    /// answer, or, when the body was read whole, puts them into `headers`.
    pub fn keep_verbatim(&mut self, verbatim: Verbatim, headers: &mut http::HeaderMap) {
        match self {
            ProxyBody::Stream(b) | ProxyBody::Prefixed(_, b) => b.set_verbatim(verbatim),
            ProxyBody::Empty | ProxyBody::Full(_) => verbatim.restore(headers),
        }
    }

    /// A complete body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() {
            ProxyBody::Empty
        } else {
            ProxyBody::Full(Some(b))
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            ProxyBody::Prefixed(prefix, inner) => match prefix.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Stream(inner) => inner.is_end_stream(),
            ProxyBody::Prefixed(p, inner) => p.is_none() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(inner) => inner.size_hint(),
            ProxyBody::Prefixed(p, inner) => {
                let extra = p.as_ref().map_or(0, |b| b.len() as u64);
                let h = inner.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + extra);
                if let Some(u) = h.upper() {
                    out.set_upper(u + extra);
                }
                out
            }
        }
    }
}

/// The request body sent upstream: the visitor's, cut off at the limit, or nothing.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    Limited { inner: VisitorBody, remaining: u64 },
}

/// The visitor's body went over `--max-body-size` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the limit")]
pub struct BodyTooLarge;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Limited { inner, remaining } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let n = data.len() as u64;
                        if n > *remaining {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                        }
                        *remaining -= n;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                other => other,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Limited { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Limited { inner, .. } => inner.size_hint(),
        }
    }
}
