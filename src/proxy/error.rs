//! Errors of the request path and the one place ([`rescue`]) where they become HTTP responses:
//! a status chosen by where the error came from, and a short plain-text body saying what went
//! wrong. Decisions (served, dropped) are not errors and never pass through here.

use http::{Response, StatusCode, header};

use super::body::ProxyBody;

/// A failure while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method not allowed: kappe is a reverse proxy, not a forward proxy")]
    Connect,
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("cross-site request refused")]
    CrossSite,
    #[error("upstream refused the connection")]
    UpstreamConnect,
    #[error("upstream did not accept the connection in time")]
    UpstreamConnectTimeout,
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("upstream answered with something that is not valid HTTP or closed early")]
    UpstreamBroken,
    #[error("the impression store is unavailable")]
    StoreUnavailable,
}

impl ProxyError {
    /// The status that tells the visitor (or the operator) whose fault this was.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Connect | ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::CrossSite => StatusCode::FORBIDDEN,
            ProxyError::UpstreamConnect | ProxyError::UpstreamBroken => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamConnectTimeout | ProxyError::UpstreamTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `kind` label of `kappe_upstream_errors_total`, for upstream errors.
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ProxyError::UpstreamConnect => Some("connect"),
            ProxyError::UpstreamConnectTimeout | ProxyError::UpstreamTimeout => Some("timeout"),
            ProxyError::UpstreamBroken => Some("broken"),
            _ => None,
        }
    }
}

/// Turns an error into the response the visitor gets.
pub fn rescue(err: &ProxyError) -> Response<ProxyBody> {
    let status = err.status();
    if status.is_server_error() {
        tracing::warn!(error = %err, status = status.as_u16(), "request failed");
    } else {
        tracing::debug!(error = %err, status = status.as_u16(), "request refused");
    }
    let mut resp = Response::new(ProxyBody::full(format!("{err}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("static"),
    );
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    if matches!(err, ProxyError::BodyTooLarge(_)) {
        // The rest of the body is not read: the connection cannot carry another request.
        h.insert(header::CONNECTION, "close".parse().expect("static"));
    }
    if matches!(err, ProxyError::Connect | ProxyError::MethodNotAllowed) {
        h.insert(
            header::ALLOW,
            "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"
                .parse()
                .expect("static"),
        );
    }
    resp
}
