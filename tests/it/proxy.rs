//! The proxy core through real HTTP: hygiene, streaming, limits, timeouts, h2c, drain, metrics.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

use crate::support::*;

/// The upstream sees no hop-by-hop header, an appended X-Forwarded-For, X-Forwarded-Proto/Host,
/// Via, and its own Host; the visitor's response loses hop-by-hop headers and gains Via.
#[tokio::test]
async fn forwarding_hygiene_rewrites_headers_both_ways() {
    let up = Upstream::start(|_req| async {
        Response::builder()
            .header("connection", "x-up-secret")
            .header("x-up-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-up", "kept")
            .body(full("hi"))
            .unwrap()
    })
    .await;
    let k = Kappe::start(&up.url(), &[]).await;
    let (status, headers, _) = get_with(
        &k.url("/ad?slot=top&x=1"),
        &[
            ("host", "publisher.example"),
            ("connection", "x-secret"),
            ("x-secret", "s"),
            ("keep-alive", "timeout=1"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-visitor", "kept"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = up.last();
    assert_eq!(
        seen.uri.path_and_query().unwrap().as_str(),
        "/ad?slot=top&x=1"
    );
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
        "connection",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "publisher.example");
    assert_eq!(seen.headers["via"], "1.1 kappe");
    assert_eq!(seen.headers["host"], up.addr.to_string());
    assert_eq!(seen.headers["x-visitor"], "kept");
    assert!(!headers.contains_key("x-up-secret") && !headers.contains_key("keep-alive"));
    assert_eq!(headers["x-up"], "kept");
    assert_eq!(headers["via"], "1.1 kappe");
}

/// The answer's fields kappe neither reads nor changes reach the visitor as the upstream sent
/// them, each line once and repeated lines in their order, over HTTP/1.1 and HTTP/2; the
/// upstream's Date is the only one, and the fields kappe changes are still changed.
#[tokio::test]
async fn untouched_answer_fields_pass_as_they_came() {
    let up = Upstream::start(|_req| async {
        Response::builder()
            .header("server", "ads/1.0")
            .header("date", "Mon, 07 Dec 2026 03:00:00 GMT")
            .header("x-up-list", "first")
            .header("content-type", "text/html; charset=utf-8")
            .header("x-up-list", "second")
            .header("via", "1.1 cdn")
            .header("keep-alive", "timeout=5")
            .body(full("banner"))
            .unwrap()
    })
    .await;
    let k = Kappe::start(&up.url(), &[]).await;
    let answer = raw(
        k.addr,
        b"GET /ad HTTP/1.1\r\nHost: publisher.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    assert_eq!(body, "banner");
    let lines: Vec<String> = head.lines().skip(1).map(str::to_ascii_lowercase).collect();
    let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    for field in [
        "server: ads/1.0",
        "date: mon, 07 dec 2026 03:00:00 gmt",
        "content-type: text/html; charset=utf-8",
    ] {
        assert_eq!(count(field), 1, "{field} in {head}");
    }
    assert_eq!(count("date:"), 1, "{head}");
    let list: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("x-up-list:"))
        .collect();
    assert_eq!(list, ["x-up-list: first", "x-up-list: second"]);
    let via: Vec<&String> = lines.iter().filter(|l| l.starts_with("via:")).collect();
    assert_eq!(via, ["via: 1.1 cdn", "via: 1.1 kappe"]);
    assert_eq!(count("keep-alive:"), 0, "{head}");
    assert_eq!(count("content-length: 6"), 1, "{head}");

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = client
        .request(Request::get(k.url("/ad")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let h = resp.headers();
    assert_eq!(h["server"], "ads/1.0");
    assert_eq!(h["date"], "Mon, 07 Dec 2026 03:00:00 GMT");
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let list: Vec<_> = h.get_all("x-up-list").iter().collect();
    assert_eq!(list, ["first", "second"]);
    let via: Vec<_> = h.get_all("via").iter().collect();
    assert_eq!(via, ["1.1 cdn", "2 kappe"]);
    assert!(!h.contains_key("keep-alive"));
}

/// A visitor's fields kappe neither reads nor changes reach the upstream as the visitor sent
/// them, each line once and repeated lines in their order; the fields kappe reads or replaces
/// are still read and replaced.
#[tokio::test]
async fn untouched_request_fields_pass_as_the_visitor_sent_them() {
    let up = Upstream::ok("banner").await;
    let k = Kappe::start(&up.url(), &[]).await;
    let answer = raw(
        k.addr,
        b"GET /ad?slot=top HTTP/1.1\r\nHost: publisher.example\r\n\
          User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\
          Accept-Language: de-DE,de;q=0.9\r\nX-List: a\r\nSec-Fetch-Mode: no-cors\r\n\
          X-List: b\r\nX-Forwarded-For: 203.0.113.7\r\nVia: 1.1 cdn\r\n\
          X-Kappe-Exclude: campaignid:1\r\nKeep-Alive: timeout=5\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.last();
    let h = &seen.headers;
    assert_eq!(h["user-agent"], "Mozilla/5.0 (X11; Linux x86_64)");
    assert_eq!(h["accept-language"], "de-DE,de;q=0.9");
    assert_eq!(h["sec-fetch-mode"], "no-cors");
    for name in ["accept-language", "sec-fetch-mode", "user-agent", "host"] {
        assert_eq!(h.get_all(name).iter().count(), 1, "{name}");
    }
    let list: Vec<_> = h.get_all("x-list").iter().collect();
    assert_eq!(list, ["a", "b"]);
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    let via: Vec<_> = h.get_all("via").iter().collect();
    assert_eq!(via, ["1.1 cdn", "1.1 kappe"]);
    assert_eq!(h["host"], up.addr.to_string());
    assert_eq!(h["x-forwarded-host"], "publisher.example");
    for gone in ["x-kappe-exclude", "keep-alive", "connection"] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream");
    }
}

/// With --preserve-host the visitor's Host travels upstream.
#[tokio::test]
async fn preserve_host_keeps_the_visitors_host() {
    let up = Upstream::ok("ok").await;
    let k = Kappe::start(&up.url(), &["--preserve-host"]).await;
    get_with(&k.url("/"), &[("host", "publisher.example")]).await;
    assert_eq!(up.last().headers["host"], "publisher.example");
}

/// Methods, query and request bodies are forwarded; the body arrives whole.
#[tokio::test]
async fn methods_and_bodies_are_forwarded() {
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let method = req.method().to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("{method} {}", body.len())))
    })
    .await;
    let k = Kappe::start(&up.url(), &[]).await;
    let req = Request::post(k.url("/bid?x=1"))
        .body(Full::new(Bytes::from(vec![7u8; 100_000])))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "POST 100000");
    assert_eq!(up.last().uri.query(), Some("x=1"));
}

/// A response body far larger than anything kappe could buffer streams through while the
/// process's resident memory stays flat.
#[tokio::test]
async fn large_response_streams_without_buffering() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 384;
    let up = Upstream::start(|_req| async {
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let stream = futures_util::stream::iter((0..CHUNKS).map(move |_| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk.clone()))
        }));
        Response::new(BodyExt::boxed(StreamBody::new(stream)))
    })
    .await;
    let k = Kappe::start(&up.url(), &[]).await;
    let before = rss_bytes();
    let resp = client()
        .request(Request::get(k.url("/video")).body(Full::default()).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let (mut total, mut peak) = (0usize, before);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
        }
        peak = peak.max(rss_bytes());
    }
    assert_eq!(total, CHUNK * CHUNKS);
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 128 << 20,
        "resident memory grew by {grew} bytes for a 384 MiB body"
    );
}

/// A declared body over --max-body-size gets 413 and never reaches the upstream; so does a
/// chunked body that grows past it.
#[tokio::test]
async fn oversized_request_bodies_get_413() {
    // An upstream that reads the whole request body before it answers, as servers do.
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let _ = req.into_body().collect().await;
        Response::new(full("ok"))
    })
    .await;
    let k = Kappe::start(&up.url(), &["--max-body-size", "1KiB"]).await;
    let req = Request::post(k.url("/"))
        .body(Full::new(Bytes::from(vec![1u8; 4096])))
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(up.count(), 0);
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n{}\r\n0\r\n\r\n",
        "a".repeat(4096)
    );
    let answer = raw(k.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The proxy keeps serving.
    assert_eq!(get(&k.url("/")).await.0, StatusCode::OK);
}

/// A request head over --max-header-size gets 431.
#[tokio::test]
async fn huge_headers_get_431() {
    let up = Upstream::ok("ok").await;
    let k = Kappe::start(&up.url(), &["--max-header-size", "8KiB"]).await;
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let answer = raw(k.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(get(&k.url("/")).await.0, StatusCode::OK);
}

/// An upstream slower than --upstream-timeout gets 504 with a plain-text reason.
#[tokio::test]
async fn slow_upstream_gets_504() {
    let up = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("late"))
    })
    .await;
    let k = Kappe::start(&up.url(), &["--upstream-timeout", "200ms"]).await;
    let (status, body) = get(&k.url("/")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.contains("did not answer in time"), "{body}");
    assert_eq!(
        k.metric("kappe_upstream_errors_total{kind=\"timeout\"}")
            .await,
        1.0
    );
}

/// An upstream that refuses connections gets 502; one that never accepts gets 504.
#[tokio::test]
async fn refused_and_unreachable_upstreams() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let k = Kappe::start(&format!("http://127.0.0.1:{port}"), &[]).await;
    let (status, body) = get(&k.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("refused"), "{body}");
    assert_eq!(
        k.metric("kappe_upstream_errors_total{kind=\"connect\"}")
            .await,
        1.0
    );
    let (ready, _) = get(&k.admin_url("/readyz")).await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);

    // A listener whose accept queue is full never completes new handshakes.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let full_addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(full_addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let k2 = Kappe::start(
        &format!("http://{full_addr}"),
        &["--upstream-connect-timeout", "300ms"],
    )
    .await;
    let (status, _) = get(&k2.url("/")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

/// HTTP/2 with prior knowledge (h2c) works on the visitor port.
#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let up = Upstream::ok("over h2").await;
    let k = Kappe::start(&up.url(), &[]).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = client
        .request(Request::get(k.url("/x")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "over h2"
    );
    assert_eq!(up.last().headers["via"], "2 kappe");
}

/// CONNECT and absolute-form requests for other hosts are refused: kappe is never an open proxy.
#[tokio::test]
async fn never_an_open_proxy() {
    let up = Upstream::ok("ok").await;
    let k = Kappe::start(&up.url(), &[]).await;
    let answer = raw(
        k.addr,
        b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let answer = raw(
        k.addr,
        b"GET http://other.example/steal HTTP/1.1\r\nHost: publisher.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(up.count(), 0);
}

/// The admin port's paths are not reachable through the visitor port.
#[tokio::test]
async fn admin_paths_are_not_on_the_visitor_port() {
    let up = Upstream::start(|_req| async {
        Response::builder()
            .status(404)
            .body(full("upstream 404"))
            .unwrap()
    })
    .await;
    let k = Kappe::start(&up.url(), &[]).await;
    for path in ["/metrics", "/healthz", "/readyz", "/reload"] {
        let (status, body) = get(&k.url(path)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "upstream 404"),
            "{path}"
        );
    }
    let (status, body) = get(&k.admin_url("/healthz")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    assert_eq!(get(&k.admin_url("/readyz")).await.0, StatusCode::OK);
}

/// Metrics on the admin port count requests by class and expose the baseline families.
#[tokio::test]
async fn metrics_are_scraped_from_the_admin_port() {
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let status = if req.uri().path() == "/missing" {
            404
        } else {
            200
        };
        Response::builder().status(status).body(full("x")).unwrap()
    })
    .await;
    let k = Kappe::start(&up.url(), &[]).await;
    for _ in 0..3 {
        get(&k.url("/a")).await;
    }
    get(&k.url("/missing")).await;
    assert_eq!(
        k.metric("kappe_http_requests_total{code=\"2xx\"}").await,
        3.0
    );
    assert_eq!(
        k.metric("kappe_http_requests_total{code=\"4xx\"}").await,
        1.0
    );
    assert_eq!(k.metric("kappe_request_duration_seconds_count").await, 4.0);
    assert_eq!(k.metric("kappe_upstream_duration_seconds_count").await, 4.0);
    // A connection is counted until its task has seen the visitor's close, which can come just
    // after the visitor has its answer.
    let mut active = k.metric("kappe_connections_active").await;
    for _ in 0..100 {
        if active == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        active = k.metric("kappe_connections_active").await;
    }
    assert_eq!(active, 0.0);
    assert_eq!(k.metric("kappe_build_info{version=\"0.1.0\"}").await, 1.0);
}

/// With --max-connections N, connection N+1 is refused with 503 and the others keep working. The
/// limit is the process's: three worker threads accepting on one listener share it.
#[tokio::test]
async fn connection_limit_refuses_the_excess_cleanly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::ok("ok").await;
    let k = Kappe::start(&up.url(), &["--max-connections", "2", "--threads", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(k.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let answer = raw(k.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(k.metric("kappe_connections_rejected_total").await, 1.0);
    drop(held);
    // Once the held connections close, new ones are served again.
    let mut ok = false;
    for _ in 0..50 {
        if raw(
            k.addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .starts_with("HTTP/1.1 200")
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "kappe serves again after the held connections close");
}

/// A client that never finishes its headers is disconnected after --header-read-timeout.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::ok("ok").await;
    let k = Kappe::start(&up.url(), &["--header-read-timeout", "300ms"]).await;
    let mut s = tokio::net::TcpStream::connect(k.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(up.count(), 0);
}

/// On shutdown a request in flight finishes, and new connections are refused.
#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let up = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Response::new(full("finished"))
    })
    .await;
    let mut k = Kappe::start(&up.url(), &["--shutdown-grace", "10s"]).await;
    let url = k.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    while up.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = k.addr;
    let done = k.begin_shutdown();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "finished"));
    done.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
