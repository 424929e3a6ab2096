//! Forwarding hygiene (RFC 9110 section 7.6): hop-by-hop headers removed in both directions,
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Via` set, and the request target
//! rewritten to the configured upstream whatever the visitor asked for, so kappe is never an open
//! proxy.

use std::cell::RefCell;
use std::io::Write;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Uri, Version};

use super::error::ProxyError;
use crate::server::ConnInfo;

/// Headers that describe one hop and never travel on (besides those `Connection` names).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The elements of a list-valued field (RFC 9110 section 5.6.1) over all its lines, trimmed,
/// empty elements skipped. A line that is not visible ASCII counts as one element,
/// `"\u{fffd}"`, which equals no token, header name or id.
pub fn list_items(
    headers: &HeaderMap,
    name: impl header::AsHeaderName,
) -> impl DoubleEndedIterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are removed first; most requests have no Connection header,
    // so the common path allocates nothing.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = list_items(headers, header::CONNECTION)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(&PROXY_CONNECTION);
}

fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 kappe",
        Version::HTTP_2 => "2 kappe",
        _ => "1.1 kappe",
    })
}

/// Appends `Via` for this hop.
pub fn add_via(headers: &mut HeaderMap, version: Version) {
    headers.append(header::VIA, via_value(version));
}

/// The host the visitor addressed: the `Host` header, or the authority of an HTTP/2 request.
///
/// # Errors
/// [`ProxyError::BadRequest`] for an HTTP/1.1 request in absolute form whose authority differs
/// from its `Host`: such a request asks kappe to act as a forward proxy.
pub fn visitor_host(
    uri: &Uri,
    headers: &HeaderMap,
    version: Version,
) -> Result<Option<HeaderValue>, ProxyError> {
    let host = headers.get(header::HOST).cloned();
    if version == Version::HTTP_2 {
        return Ok(host.or_else(|| {
            uri.authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        }));
    }
    if let Some(auth) = uri.authority() {
        let same = host
            .as_ref()
            .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(auth.as_str().as_bytes()));
        if !same {
            return Err(ProxyError::BadRequest(
                "absolute-form request for another host refused",
            ));
        }
    }
    Ok(host)
}

/// The `Host` value for the upstream, built once per thread and then cloned (a reference count)
/// instead of validated and copied on every request.
fn upstream_host(upstream: &Authority) -> HeaderValue {
    thread_local! {
        static CACHED: RefCell<Option<(Authority, HeaderValue)>> = const { RefCell::new(None) };
    }
    CACHED.with_borrow_mut(|cached| match cached {
        Some((a, v)) if *a == *upstream => v.clone(),
        _ => {
            let v = HeaderValue::from_str(upstream.as_str())
                .expect("an authority is a valid header value");
            *cached = Some((upstream.clone(), v.clone()));
            v
        }
    })
}

/// Rewrites a request's head for the upstream.
pub fn prepare_request(
    parts: &mut http::request::Parts,
    upstream: &Authority,
    preserve_host: bool,
    info: &ConnInfo,
    visitor_host: Option<HeaderValue>,
) {
    let version = parts.version;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);

    // The value is written into one stack buffer (a visitor's own XFF chain is rare and goes
    // through the heap): this runs on every request.
    let mut buf = [0u8; 64];
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            HeaderValue::from_str(&format!("{prev}, {}", info.peer.ip())).ok()
        }
        _ => {
            let mut w = &mut buf[..];
            // 64 bytes hold the longest IPv6 address (45 characters), so the write succeeds.
            let _ = write!(w, "{}", info.peer.ip());
            let n = 64 - w.len();
            HeaderValue::from_bytes(&buf[..n]).ok()
        }
    };
    // All XFF lines are folded into the one appended value.
    headers.remove(&X_FORWARDED_FOR);
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if info.tls { "https" } else { "http" }),
    );
    match &visitor_host {
        Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    add_via(headers, version);
    let host = match (preserve_host, visitor_host) {
        (true, Some(h)) => h,
        _ => upstream_host(upstream),
    };
    headers.insert(header::HOST, host);

    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(upstream.clone());
    uri.path_and_query = Some(pq);
    parts.uri = Uri::from_parts(uri).expect("scheme, authority and path are all valid");
    parts.version = Version::HTTP_11;
}

/// Cleans the upstream's response head for the visitor.
pub fn prepare_response(headers: &mut HeaderMap, version: Version) {
    strip_hop_by_hop(headers);
    add_via(headers, version);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connection and the headers it names are removed along with the fixed hop-by-hop set.
    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    /// List fields read across lines, trimmed, without empty elements; a line that is not text
    /// is one element that matches nothing.
    #[test]
    fn list_items_read_every_line() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "close, , x-a".parse().unwrap());
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        h.append(header::CONNECTION, " keep-alive ".parse().unwrap());
        let items: Vec<&str> = list_items(&h, header::CONNECTION).collect();
        assert_eq!(items, ["close", "x-a", "\u{fffd}", "keep-alive"]);
        assert_eq!(
            list_items(&h, header::CONNECTION).next_back(),
            Some("keep-alive")
        );
        assert_eq!(list_items(&h, header::TE).count(), 0);
    }

    /// An absolute-form request for another host is refused; for the same host it is fine.
    #[test]
    fn absolute_form_for_other_hosts_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "ads.example".parse().unwrap());
        let other: Uri = "http://other.example/x".parse().unwrap();
        assert!(visitor_host(&other, &h, Version::HTTP_11).is_err());
        let same: Uri = "http://ads.example/x".parse().unwrap();
        assert!(visitor_host(&same, &h, Version::HTTP_11).is_ok());
    }
}
