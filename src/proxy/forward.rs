//! Forwarding hygiene (RFC 9110 section 7.6): hop-by-hop headers removed in both directions,
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Via` set, and the request target
//! rewritten to the configured upstream whatever the visitor asked for, so kappe is never an open
//! proxy.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Uri, Version};

use super::error::ProxyError;
use super::upstream::wire::Verbatim;
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
    // One pass over the names, comparing without hashing; most requests carry none of them.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names listed in Connection go too. Its usual tokens (close, keep-alive) are options or
    // names already in the fixed set, and cost no name to be built.
    let named: Vec<HeaderName> = list_items(headers, header::CONNECTION)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    remove_where(headers, |name| is_hop_by_hop(name) || named.contains(name));
}

/// Removes the fields whose names `pred` picks. The names are compared in one pass, and only
/// those present are looked up to be removed: a removal costs a hash and a probe, which most
/// fields kappe strips (absent from most messages) are spared.
pub fn remove_where(headers: &mut HeaderMap, mut pred: impl FnMut(&HeaderName) -> bool) {
    // Allocates only when something is found.
    let mut found: Vec<HeaderName> = Vec::new();
    found.extend(headers.keys().filter(|n| pred(n)).cloned());
    for name in found {
        headers.remove(name);
    }
}

pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || *name == PROXY_CONNECTION
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

/// Writes `ip` in its usual text form into `buf` and returns the length. IPv4, nearly every
/// visitor, is written digit by digit: the formatting machinery costs twenty times as much.
fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> usize {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            let mut w = &mut buf[..];
            // 64 bytes hold the longest IPv6 address (45 characters), so the write succeeds.
            let _ = write!(w, "{ip}");
            64 - w.len()
        }
    }
}

/// The `Host` value for the upstream, built once per thread and then cloned (a reference count)
/// instead of validated and copied on every request. The cached authority is compared byte for
/// byte: `Authority`'s own equality ignores case, lowering each byte of both on every request.
fn upstream_host(upstream: &Authority) -> HeaderValue {
    thread_local! {
        static CACHED: RefCell<Option<(Authority, HeaderValue)>> = const { RefCell::new(None) };
    }
    CACHED.with_borrow_mut(|cached| match cached {
        Some((a, v)) if a.as_str() == upstream.as_str() => v.clone(),
        _ => {
            let v = HeaderValue::from_str(upstream.as_str())
                .expect("an authority is a valid header value");
            *cached = Some((upstream.clone(), v.clone()));
            v
        }
    })
}

/// The forwarding fields of an upstream request: `Host`, `X-Forwarded-For`, `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `Via`. They are written straight into the request's head
/// ([`Forwarding::write`], from `wire::encode_head`) rather than set in its map, which cost a
/// hash and a probe per field on every request: the visitor's own lines of the first four stay
/// in the map and are not sent ([`Forwarding::replaces`]); kappe's `Via` follows the visitor's.
#[derive(Clone, Debug)]
pub struct Forwarding {
    host: HeaderValue,
    /// The visitor's `X-Forwarded-Host`: the host it addressed, when it named one.
    forwarded_host: Option<HeaderValue>,
    /// The chain of the visitor's `X-Forwarded-For` lines, folded, that the peer is added to.
    chain: Option<Box<str>>,
    peer: IpAddr,
    tls: bool,
    version: Version,
    /// The visitor's fields kappe neither reads nor changes, as the visitor sent them.
    passing: Verbatim,
}

impl Forwarding {
    /// Whether the field `name` of the request's map is left out of its head: kappe writes its
    /// own line of it.
    #[must_use]
    pub fn replaces(name: &HeaderName) -> bool {
        name == header::HOST
            || name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || name == X_FORWARDED_HOST
    }

    /// Writes `Host` (before the map's fields).
    pub fn write_host(&self, out: &mut BytesMut) {
        out.put_slice(b"host: ");
        out.put_slice(self.host.as_bytes());
        out.put_slice(b"\r\n");
    }

    /// Writes the visitor's fields that pass verbatim, then the other forwarding fields (after
    /// the map's fields).
    pub fn write(&self, out: &mut BytesMut) {
        self.passing.write(out);
        out.put_slice(b"x-forwarded-for: ");
        if let Some(chain) = &self.chain {
            out.put_slice(chain.as_bytes());
            out.put_slice(b", ");
        }
        let mut buf = [0u8; 64];
        let n = format_ip(self.peer, &mut buf);
        out.put_slice(&buf[..n]);
        out.put_slice(if self.tls {
            b"\r\nx-forwarded-proto: https\r\n"
        } else {
            b"\r\nx-forwarded-proto: http\r\n"
        });
        if let Some(h) = &self.forwarded_host {
            out.put_slice(b"x-forwarded-host: ");
            out.put_slice(h.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"via: ");
        out.put_slice(via_value(self.version).as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// Rewrites a request's head for the upstream: hop-by-hop fields go, the target becomes the
/// upstream's, and the forwarding fields to write with it are returned, with the visitor's
/// fields that pass verbatim (taken from the request's extensions, where the server put them).
pub fn prepare_request(
    parts: &mut http::request::Parts,
    upstream: &Authority,
    preserve_host: bool,
    info: &ConnInfo,
    visitor_host: Option<HeaderValue>,
) -> Forwarding {
    let version = parts.version;
    let passing = parts.extensions.remove::<Verbatim>().unwrap_or_default();
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);

    // All XFF lines are folded into the one kappe writes; a visitor's chain is rare.
    let chain = if headers.contains_key(&X_FORWARDED_FOR) {
        let prev: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        (!prev.is_empty()).then(|| prev.join(", ").into_boxed_str())
    } else {
        None
    };
    let host = match (preserve_host, &visitor_host) {
        (true, Some(h)) => h.clone(),
        _ => upstream_host(upstream),
    };

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
    Forwarding {
        host,
        forwarded_host: visitor_host,
        chain,
        peer: info.peer.ip(),
        tls: info.tls,
        version,
        passing,
    }
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

    /// The upstream head of a prepared request without a body, as text.
    fn head(parts: &http::request::Parts, fwd: &Forwarding) -> String {
        let mut out = BytesMut::new();
        crate::proxy::upstream::wire::encode_head(
            &parts.method,
            parts.uri.path_and_query().map_or("/", PathAndQuery::as_str),
            &parts.headers,
            Some(fwd),
            crate::proxy::upstream::wire::BodyFraming::None,
            &mut out,
        );
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// The head kappe sends upstream: its own Host first; the visitor's other fields, less the
    /// hop-by-hop ones and those kappe replaces; then every X-Forwarded-For line the visitor
    /// sent folded, in order, into one value that ends with the peer, kappe's X-Forwarded-Proto
    /// and X-Forwarded-Host, and its Via after the visitor's.
    #[test]
    fn forwarding_fields_are_written_and_hop_by_hop_fields_go() {
        let mut req = http::Request::get("http://shop.example/ad?c=1")
            .body(())
            .unwrap();
        let h = req.headers_mut();
        h.append(header::HOST, "shop.example".parse().unwrap());
        h.append(&X_FORWARDED_FOR, "10.0.0.1".parse().unwrap());
        h.append(&X_FORWARDED_FOR, " , 10.0.0.2".parse().unwrap());
        h.append(&X_FORWARDED_PROTO, "gopher".parse().unwrap());
        h.append(&X_FORWARDED_HOST, "evil.example".parse().unwrap());
        h.append(&PROXY_CONNECTION, "keep-alive".parse().unwrap());
        h.append(header::VIA, "1.1 cdn".parse().unwrap());
        h.append("x-keep", "1".parse().unwrap());
        let (mut parts, ()) = req.into_parts();
        let info = ConnInfo {
            peer: ([192, 0, 2, 7], 5000).into(),
            tls: true,
        };
        let visitor = visitor_host(&parts.uri, &parts.headers, parts.version).unwrap();
        let upstream = "ads:8080".parse().unwrap();
        let fwd = prepare_request(&mut parts, &upstream, false, &info, visitor);
        assert_eq!(parts.uri, "http://ads:8080/ad?c=1");
        assert_eq!(
            head(&parts, &fwd),
            "GET /ad?c=1 HTTP/1.1\r\nhost: ads:8080\r\nx-keep: 1\r\nvia: 1.1 cdn\r\n\
             x-forwarded-for: 10.0.0.1, , 10.0.0.2, 192.0.2.7\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: shop.example\r\nvia: 1.1 kappe\r\n\r\n"
        );

        // --preserve-host keeps the visitor's Host; a visitor without a chain, over plain
        // HTTP/2, gets the peer alone.
        let mut req = http::Request::get("/").body(()).unwrap();
        *req.version_mut() = Version::HTTP_2;
        let (mut parts, ()) = req.into_parts();
        let info = ConnInfo {
            peer: "[2001:db8::1]:5000".parse().unwrap(),
            tls: false,
        };
        let host = HeaderValue::from_static("shop.example");
        let fwd = prepare_request(&mut parts, &upstream, true, &info, Some(host));
        assert_eq!(
            head(&parts, &fwd),
            "GET / HTTP/1.1\r\nhost: shop.example\r\nx-forwarded-for: 2001:db8::1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: shop.example\r\nvia: 2 kappe\r\n\r\n"
        );

        let mut h = HeaderMap::new();
        h.insert("x-a", "1".parse().unwrap());
        h.insert("x-b", "2".parse().unwrap());
        remove_where(&mut h, |n| n == "x-a" || n == "x-c");
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-b"));
    }

    /// Addresses are written as Display writes them.
    #[test]
    fn addresses_are_formatted_like_display() {
        let mut buf = [0u8; 64];
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "192.168.10.250",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let n = format_ip(ip, &mut buf);
            assert_eq!(&buf[..n], ip.to_string().as_bytes());
        }
        for a in 0..=255u8 {
            let ip = IpAddr::from([a, 255 - a, a / 3, a % 7]);
            let n = format_ip(ip, &mut buf);
            assert_eq!(&buf[..n], ip.to_string().as_bytes());
        }
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
