//! Hostile input and the security features: request smuggling over raw TCP, cookie bombs and
//! invalid header bytes, isolation between visitors, TLS termination with HTTP/2 by ALPN, and the
//! admin token. Limits already covered in `proxy.rs` (413, 431, the connection limit, slow
//! headers, CONNECT) are not repeated here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

/// The status line of a raw answer.
fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// The `kappe_id` cookie kappe set on a response, if any.
fn kappe_cookie(h: &http::HeaderMap) -> Option<String> {
    h.get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("kappe_id="))
        .map(str::to_owned)
}

/// Each smuggling shape is refused with 400 and none reaches the upstream; a normal request on
/// a fresh connection is served afterwards.
#[tokio::test]
async fn smuggling_attempts_are_rejected_and_never_forwarded() {
    let up = Upstream::ok("ok").await;
    let k = Kappe::start(&up.url(), &[]).await;
    let cases: [(&str, &[u8]); 10] = [
        (
            "duplicate content-length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "equal duplicate content-length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
        ),
        (
            "content-length then transfer-encoding",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "transfer-encoding then content-length",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        ),
        (
            "content-length list",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "transfer-encoding not ending in chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "space before the colon",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "transfer-encoding in HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "bare line feeds, content-length with transfer-encoding",
            b"POST / HTTP/1.1\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\n\n",
        ),
    ];
    for (what, bytes) in cases {
        let answer = raw(k.addr, bytes).await;
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 400"),
            "{what}: {answer:?}"
        );
    }
    assert_eq!(up.count(), 0, "a smuggling attempt reached the upstream");
    assert_eq!(get(&k.url("/")).await.0, StatusCode::OK);
}

/// Content-Length together with Transfer-Encoding, in either order, is answered 400 by kappe
/// and nothing reaches the upstream: neither the front request (which hyper alone would read as
/// chunked) nor the request smuggled in its body. The refusal is counted as a 4xx answer.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    let up = Upstream::ok("ok").await;
    let k = Kappe::start(&up.url(), &[]).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let refused_before = k.metric("kappe_http_requests_total{code=\"4xx\"}").await;
    for order in [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked",
            5 + smuggled.len()
        ),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}",
            5 + smuggled.len()
        ),
    ] {
        let head = format!("POST /front HTTP/1.1\r\nHost: x\r\n{order}\r\n\r\n0\r\n\r\n{smuggled}");
        let answer = raw(k.addr, head.as_bytes()).await;
        assert!(status_line(&answer).starts_with("HTTP/1.1 400"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    }
    assert_eq!(up.count(), 0, "a request reached the upstream");
    assert_eq!(
        k.metric("kappe_http_requests_total{code=\"4xx\"}").await,
        refused_before + 2.0
    );
}

/// A good request pipelined before a refused one on a keep-alive connection is answered 200,
/// then the refused one 400; the upstream sees only the first.
#[tokio::test]
async fn pipelined_request_before_a_refused_one_is_served() {
    let up = Upstream::ok("ok").await;
    let k = Kappe::start(&up.url(), &[]).await;
    let stream = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
0\r\n\r\nGET /third HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = raw(k.addr, stream).await;
    // Bodies are not line-terminated, so the status lines are found anywhere in the answer.
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{answer}");
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri.path(), "/first");
}

/// A chunked request with extensions and trailers whose data looks like request heads is
/// forwarded whole, and the request pipelined after it on the same connection is served too.
#[tokio::test]
async fn chunked_requests_keep_their_framing() {
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("body={}", String::from_utf8_lossy(&body))))
    })
    .await;
    let k = Kappe::start(&up.url(), &[]).await;
    let data = "GET /smuggled HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
    let stream = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
5;name=value\r\nhello\r\n{:X}\r\n{data}\r\n0\r\nX-Trailer: 1\r\n\r\n\
GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        data.len()
    );
    let answer = raw(k.addr, stream.as_bytes()).await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert!(answer.contains(&format!("body=hello{data}")), "{answer}");
    let seen = up.seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.uri.path()).collect();
    assert_eq!(paths, ["/upload", "/next"]);
}

/// A cookie bomb (thousands of cookies, many `kappe_id` among them) just under the head limit is
/// served without an id being issued from it; one over the limit gets 431; kappe keeps serving.
#[tokio::test]
async fn cookie_bombs_are_bounded() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "1/1d"]).await;
    let mut bomb = String::new();
    for i in 0..2_500 {
        bomb.push_str(&format!("c{i}=v; kappe_id=; "));
    }
    bomb.truncate(30_000);
    let (status, headers, _) =
        get_with(&k.url("/ad?c=rt-shoes&rt=1"), &[("cookie", bomb.as_str())]).await;
    assert_eq!(status, StatusCode::OK);
    // Empty ids are no ids: kappe issues a fresh random one.
    let issued: Vec<_> = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|c| c.starts_with("kappe_id="))
        .collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0].split([';', '=']).nth(1).unwrap().len(), 32);

    let huge = "c=v; ".repeat(10_000);
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: {huge}\r\n\r\n");
    assert!(status_line(&raw(k.addr, head.as_bytes()).await).starts_with("HTTP/1.1 431"));
    assert_eq!(get(&k.url("/")).await.0, StatusCode::OK);
}

/// Control bytes in a header get 400 and are not forwarded; high (obs-text) bytes in the cookie,
/// the privacy headers and the Host are served without being taken for an id or a signal, and
/// kappe keeps serving.
#[tokio::test]
async fn invalid_header_bytes_are_refused_or_ignored() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "1/1d"]).await;
    for bad in [
        &b"X-Bad: a\x00b"[..],
        b"X-Bad: a\x01b",
        b"X-Bad: a\rb",
        b"X\x7fBad: 1",
    ] {
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        head.extend_from_slice(bad);
        head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let answer = raw(k.addr, &head).await;
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 400"),
            "{:?}: {answer:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(up.count(), 0);
    let head = b"GET /ad?c=rt-shoes&rt=1 HTTP/1.1\r\nHost: pub\xe9.example\r\n\
Cookie: kappe_id=\xff\xfe\xfd; kappe_optout=\xc3\r\nSec-GPC: \xff\r\nDNT: \xe9\r\n\
Connection: close\r\n\r\n";
    let answer = raw(k.addr, head).await;
    assert!(status_line(&answer).starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.contains("kappe_id=\u{fffd}"),
        "an invalid id was echoed: {answer}"
    );
    assert_eq!(get(&k.url("/")).await.0, StatusCode::OK);
}

/// Visitor ids that kappe issues are 128 random bits, distinct for every new visitor.
#[tokio::test]
async fn issued_ids_are_random_and_unguessable() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "3/1d"]).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        let (_, h, _) = visit(&k, "/ad?c=rt-shoes&rt=1", "", &[]).await;
        let id = kappe_cookie(&h)
            .and_then(|c| c.strip_prefix("kappe_id=").map(str::to_owned))
            .and_then(|c| c.split(';').next().map(str::to_owned))
            .expect("an id is issued");
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(seen.insert(id), "an id was issued twice");
    }
}

/// A response on which kappe issues a visitor id is never cacheable by a shared cache: a CDN in
/// front would otherwise hand the same id, and so the same counters, to every visitor.
#[tokio::test]
async fn responses_issuing_an_id_are_private() {
    let up = Upstream::start(|_req| async {
        Response::builder()
            .header("x-campaign-id", "rt-shoes")
            .header("x-retargeting", "1")
            .header("cache-control", "public, max-age=600")
            .header("expires", "Thu, 01 Jan 2099 00:00:00 GMT")
            .body(full("banner"))
            .unwrap()
    })
    .await;
    let k = Kappe::start(&up.url(), &["--cap", "3/1d"]).await;
    let (status, h, _) = visit(&k, "/ad", "", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kappe_cookie(&h).is_some());
    let cc = h["cache-control"].to_str().unwrap();
    assert!(
        cc.contains("private") && cc.contains("no-store") && !cc.contains("public"),
        "{cc}"
    );
    assert!(!h.contains_key("expires"));
    // Without an id to issue, the upstream's caching is left alone.
    let (_, h, _) = visit(&k, "/ad", "known-visitor", &[]).await;
    assert!(kappe_cookie(&h).is_none());
    assert_eq!(h["cache-control"], "public, max-age=600");
}

/// One visitor's pages show only their own data, and erasing or burning through them changes
/// nobody else's counters; an id that was never issued shows nothing.
#[tokio::test]
async fn visitors_cannot_read_or_change_each_others_data() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "2/1d"]).await;
    visit(&k, "/ad?c=rt-alice&rt=1", "alice-0123456789", &[]).await;
    visit(&k, "/ad?c=rt-bob&rt=1", "bob-0123456789", &[]).await;
    let (_, _, mallory) = visit(&k, "/_kappe/me", "mallory-0123456789", &[]).await;
    assert!(!mallory.contains("rt-alice") && !mallory.contains("rt-bob"));
    let (_, _, bob) = visit(&k, "/_kappe/me", "bob-0123456789", &[]).await;
    assert!(bob.contains("rt-bob") && !bob.contains("rt-alice"), "{bob}");
    // Mallory erases and burns: only her own (empty) record is touched.
    let req = Request::delete(k.url("/_kappe/me"))
        .header("cookie", "kappe_id=mallory-0123456789")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::NO_CONTENT);
    visit(&k, "/_kappe/burn?c=rt-*", "mallory-0123456789", &[]).await;
    let (_, _, alice) = visit(&k, "/_kappe/me", "alice-0123456789", &[]).await;
    assert!(alice.contains("rt-alice"), "{alice}");
    let v: serde_json::Value = serde_json::from_str(&alice).unwrap();
    assert!(
        v["burns"].as_array().is_none_or(|b| b.is_empty()),
        "{alice}"
    );
    // Alice's counter still holds: one more is served, the next is capped.
    assert_eq!(
        visit(&k, "/ad?c=rt-alice&rt=1", "alice-0123456789", &[])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        visit(&k, "/ad?c=rt-alice&rt=1", "alice-0123456789", &[])
            .await
            .0,
        StatusCode::NO_CONTENT
    );
}

/// A cross-site page cannot opt a visitor in, erase their data or read their report into the
/// page: state-changing requests are refused and the report is never shared across origins.
#[tokio::test]
async fn cross_site_requests_cannot_change_or_read_state() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "1/1d"]).await;
    visit(&k, "/ad?c=rt-shoes&rt=1", "victim-0123456789", &[]).await;
    for (method, path) in [("POST", "/_kappe/opt-in"), ("DELETE", "/_kappe/me")] {
        for cross in [
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
            ("origin", "null"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(k.url(path))
                .header("cookie", "kappe_id=victim-0123456789; kappe_optout=1")
                .header(cross.0, cross.1)
                .body(Full::default())
                .unwrap();
            let (status, h, _) = send(req).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} {cross:?}");
            assert!(!h.contains_key("set-cookie"));
        }
    }
    let (_, h, body) = visit(
        &k,
        "/_kappe/me",
        "victim-0123456789",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert!(
        !h.contains_key("access-control-allow-origin"),
        "the report is readable cross-origin"
    );
    assert_eq!(h["cache-control"], "no-store");
    assert!(body.contains("rt-shoes"));
    // The victim is still capped: nothing was erased.
    assert_eq!(
        visit(&k, "/ad?c=rt-shoes&rt=1", "victim-0123456789", &[])
            .await
            .0,
        StatusCode::NO_CONTENT
    );
}

/// A self-signed certificate for `localhost`, written as PEM files.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.der().to_vec())
}

/// A TLS client trusting only `der`, offering `alpn`.
fn tls_connector(der: Vec<u8>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.into()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_stream(
    k: &Kappe,
    connector: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(k.addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// `GET /page` over HTTP/1.1 on an established TLS stream.
async fn h1_get_page(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> http::Response<hyper::body::Incoming> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
        .send_request(
            Request::get("/page")
                .header("host", "localhost")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap()
}

/// With --tls-cert and --tls-key kappe terminates TLS: HTTP/2 when the client offers h2 by ALPN,
/// HTTP/1.1 otherwise; the upstream learns the visitor came over https, and issued ids are
/// Secure cookies.
#[tokio::test]
async fn tls_termination_with_h2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    let up = ad_server().await;
    let k = Kappe::start(
        &up.url(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--cap",
            "3/1d",
        ],
    )
    .await;

    let h2 = tls_connector(der.clone(), &[b"h2", b"http/1.1"]);
    let stream = tls_stream(&k, &h2).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("https://localhost/ad?c=rt-shoes&rt=1")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = kappe_cookie(resp.headers()).expect("an id is issued");
    assert!(cookie.contains("; Secure"), "{cookie}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"<a href"));
    assert_eq!(up.last().headers["x-forwarded-proto"], "https");
    assert_eq!(up.last().headers["via"], "2 kappe");

    let h1 = tls_connector(der.clone(), &[b"http/1.1"]);
    let resp = h1_get_page(tls_stream(&k, &h1).await).await;
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.status(), StatusCode::OK);

    // Plain HTTP on the TLS port and a failed handshake do not bring kappe down.
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        raw(k.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await
    .unwrap();
    assert!(!answer.starts_with("HTTP/1.1 200"));
    let stream = tls_stream(&k, &h2).await;
    drop(stream);
    let resp = h1_get_page(tls_stream(&k, &h1).await).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Under TLS, HTTP/1.1 requests are checked for ambiguous framing like plain ones: a head with
/// Content-Length and Transfer-Encoding is answered 400 and not forwarded.
#[tokio::test]
async fn smuggling_is_refused_under_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    let up = Upstream::ok("ok").await;
    let k = Kappe::start(
        &up.url(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let h1 = tls_connector(der, &[b"http/1.1"]);
    let mut stream = tls_stream(&k, &h1).await;
    stream
        .write_all(
            b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n\
POST /second HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("HTTP/1.1 400"), "{answer}");
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().uri.path(), "/first");
}

/// A certificate or key file that is missing or holds no PEM stops start-up with an error
/// naming the file.
#[tokio::test]
async fn bad_tls_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path());
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a pem\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (c, k) in [(&empty, &key), (&cert, &empty), (&missing, &key)] {
        let err = match kappe::app::tls_acceptor(c, k) {
            Ok(_) => panic!("{} / {} accepted", c.display(), k.display()),
            Err(e) => e.to_string(),
        };
        let named = if c == &cert { k } else { c };
        assert!(err.contains(&named.display().to_string()), "{err}");
    }
}

/// With --admin-token, /metrics, / and /reload need the bearer token (a wrong or missing one
/// gets 401); the health probes stay open for the orchestrator.
#[tokio::test]
async fn admin_token_protects_the_admin_port() {
    let up = Upstream::ok("ok").await;
    let token = "s3cret-token-0123456789";
    let k = Kappe::start(&up.url(), &["--admin-token", token]).await;
    let with = |auth: Option<String>, method: &str, path: &str| {
        let mut b = Request::builder().method(method).uri(k.admin_url(path));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Full::<Bytes>::default()).unwrap()
    };
    for (method, path) in [("GET", "/metrics"), ("GET", "/"), ("POST", "/reload")] {
        for auth in [
            None,
            Some("Bearer wrong-token-0123456789".to_owned()),
            Some(format!("Bearer {token}x")),
            Some(format!("Basic {token}")),
            Some(token.to_owned()),
        ] {
            let (status, h, body) = send(with(auth.clone(), method, path)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
            assert!(h.contains_key("www-authenticate"));
            assert!(!String::from_utf8_lossy(&body).contains("kappe_"));
        }
        let (status, _, _) = send(with(Some(format!("Bearer {token}")), method, path)).await;
        assert_eq!(status, StatusCode::OK, "{method} {path} with the token");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            send(with(None, "GET", path)).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
}

/// The admin port listens on loopback unless told otherwise, and a short admin token is refused
/// at start-up.
#[test]
fn admin_port_is_loopback_by_default() {
    use clap::Parser;
    let cli =
        kappe::cli::Cli::try_parse_from(["kappe", "--upstream", "http://127.0.0.1:9"]).unwrap();
    let cfg = kappe::config::Config::from_args(cli.args).unwrap();
    assert!(cfg.admin_listen.ip().is_loopback(), "{}", cfg.admin_listen);
    assert!(cfg.admin_token.is_none());
    let cli = kappe::cli::Cli::try_parse_from([
        "kappe",
        "--upstream",
        "http://127.0.0.1:9",
        "--admin-token",
        "short",
    ])
    .unwrap();
    let err = kappe::config::Config::from_args(cli.args)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--admin-token") || err.contains("admin-token"),
        "{err}"
    );
}
