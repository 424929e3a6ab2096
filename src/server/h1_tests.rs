//! The HTTP/1.1 server against raw bytes on loopback sockets: framing of answers, keep-alive
//! rules, 100-continue, request bodies, bodies left unread, and idle connections at shutdown.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::super::{ConnInfo, ServerOptions, VisitorBody, serve};
use crate::proxy::body::{ProxyBody, UpstreamBody};
use crate::proxy::upstream::Upstream;

/// An upstream that answers every request with a chunked body ("hello world"), for an answer
/// whose length kappe does not know.
async fn chunked_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
                    if s.write_all(answer).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Upstream::to(addr.to_string().parse().unwrap())
}

/// What the test handler answers, chosen by the request path.
async fn answer(up: Upstream, req: Request<VisitorBody>) -> Response<ProxyBody> {
    match req.uri().path() {
        // Echoes the body it read.
        "/echo" => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::from_static(b"(broken)"),
            };
            Response::new(ProxyBody::full(body))
        }
        // A body of unknown length.
        "/open" => {
            let get = Request::get("http://up/")
                .body(UpstreamBody::Empty)
                .unwrap();
            let resp = up.send(get).await.expect("the upstream answers");
            resp.map(ProxyBody::Stream)
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Response::new(ProxyBody::full("late"))
        }
        // Framing fields that disagree with the body, and a Date of the handler's own.
        "/stale" => {
            let mut r = Response::new(ProxyBody::full("ok"));
            let h = r.headers_mut();
            h.insert("content-length", "99".parse().unwrap());
            h.insert("transfer-encoding", "chunked".parse().unwrap());
            h.insert("date", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
            r
        }
        "/empty" => {
            let mut r = Response::new(ProxyBody::Empty);
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        // Answers without reading the body.
        _ => Response::new(ProxyBody::full("ok")),
    }
}

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let up = chunked_upstream().await;
    let handler = move |req, _info: ConnInfo| answer(up.clone(), req);
    let opts = ServerOptions {
        header_read_timeout: Duration::from_millis(500),
        max_header_size: 16 * 1024,
        max_connections: 64,
        shutdown_grace: Duration::from_secs(5),
        request_fields: None,
    };
    let done = tokio::spawn(serve(listener, None, opts, None, handler, async {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(tx),
        done,
    }
}

/// Sends `bytes`, then reads until the server closes the connection or `wait` passes quietly.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(wait, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

const QUIET: Duration = Duration::from_millis(300);

/// A known length is sent as content-length, an open body chunked to HTTP/1.1 and until the
/// close to HTTP/1.0; HEAD and 204 carry no body. Each answer has a Date.
#[tokio::test]
async fn answers_are_framed_by_their_bodies() {
    let k = start().await;
    let a = exchange(k.addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", QUIET).await;
    assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    assert!(
        a.contains("content-length: 2\r\n") && a.ends_with("\r\n\r\nok"),
        "{a}"
    );
    assert!(a.contains("date: "), "{a}");

    let a = exchange(k.addr, b"GET /open HTTP/1.1\r\nHost: a\r\n\r\n", QUIET).await;
    assert!(a.contains("transfer-encoding: chunked\r\n"), "{a}");
    assert!(
        a.ends_with("\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"),
        "{a}"
    );

    let a = exchange(k.addr, b"GET /open HTTP/1.0\r\nHost: a\r\n\r\n", QUIET).await;
    assert!(!a.contains("transfer-encoding"), "{a}");
    assert!(
        a.contains("connection: close\r\n") && a.ends_with("hello world"),
        "{a}"
    );

    let a = exchange(k.addr, b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", QUIET).await;
    assert!(
        a.starts_with("HTTP/1.1 200") && a.ends_with("\r\n\r\n"),
        "{a}"
    );

    // The body decides the framing, whatever fields the handler left; its Date is kept.
    let a = exchange(k.addr, b"GET /stale HTTP/1.1\r\nHost: a\r\n\r\n", QUIET).await;
    assert_eq!(a.matches("content-length").count(), 1, "{a}");
    assert!(a.contains("content-length: 2\r\n"), "{a}");
    assert!(!a.contains("transfer-encoding"), "{a}");
    assert_eq!(a.matches("date: ").count(), 1, "{a}");
    assert!(a.contains("date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"), "{a}");
    assert!(a.ends_with("\r\n\r\nok"), "{a}");

    // A HEAD answer keeps the length the handler gave it, for the body it would have had.
    let a = exchange(k.addr, b"HEAD /stale HTTP/1.1\r\nHost: a\r\n\r\n", QUIET).await;
    assert!(a.contains("content-length: 99\r\n"), "{a}");
    assert!(a.ends_with("\r\n\r\n"), "{a}");

    let a = exchange(k.addr, b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n", QUIET).await;
    assert!(
        a.starts_with("HTTP/1.1 204") && a.ends_with("\r\n\r\n"),
        "{a}"
    );
}

/// HTTP/1.1 keeps the connection unless asked to close; HTTP/1.0 closes unless asked to keep
/// it, and is told so.
#[tokio::test]
async fn keep_alive_follows_the_version_and_connection() {
    let k = start().await;
    let two = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    let a = exchange(k.addr, two, QUIET).await;
    assert_eq!(a.matches("HTTP/1.1 200").count(), 2, "{a}");
    assert!(a.contains("connection: close"), "{a}");

    let a = exchange(
        k.addr,
        b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
        QUIET,
    )
    .await;
    assert_eq!(a.matches("HTTP/1.1 200").count(), 1, "{a}");
    let keep = b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
    let a = exchange(k.addr, keep, QUIET).await;
    assert_eq!(a.matches("HTTP/1.1 200").count(), 2, "{a}");
    assert!(a.contains("connection: keep-alive"), "{a}");
}

/// Bodies by length and chunked are read as the handler asks; `Expect: 100-continue` is
/// answered when the handler asks for the body, and not at all when it answers without; a body the handler leaves unread closes the connection
/// after the answer, so that it is never read as a request.
#[tokio::test]
async fn request_bodies_are_read_on_demand() {
    let k = start().await;
    let a = exchange(
        k.addr,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /a HTTP/1.1\r\n\r\n",
        QUIET,
    )
    .await;
    assert!(
        a.contains("\r\n\r\nhello") && a.matches("HTTP/1.1 200").count() == 2,
        "{a}"
    );

    let chunked = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
    let a = exchange(k.addr, chunked, QUIET).await;
    assert!(a.ends_with("\r\n\r\nabcde"), "{a}");

    let mut s = TcpStream::connect(k.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abc").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("abc"));

    // A handler that answers without the body never asks for it.
    let mut s = TcpStream::connect(k.addr).await.unwrap();
    s.write_all(
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let a = String::from_utf8_lossy(&buf[..n]);
    assert!(
        a.starts_with("HTTP/1.1 200 OK\r\n") && a.contains("connection: close"),
        "{a}"
    );

    let unread = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let a = exchange(k.addr, unread, QUIET).await;
    assert_eq!(a.matches("HTTP/1.1 ").count(), 1, "{a}");
    assert!(a.contains("connection: close"), "{a}");
}

/// Garbage gets 400, an oversized head 431, a head cut off mid-way 408; idle connections close
/// quietly after the header read timeout. A name of visible characters that are not a token
/// passes the head reader and is refused where the name is built: 400 too.
#[tokio::test]
async fn bad_heads_are_refused() {
    let k = start().await;
    let a = exchange(k.addr, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", QUIET).await;
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    let a = exchange(
        k.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX(Y: 1\r\n\r\n",
        QUIET,
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "x".repeat(20_000));
    let a = exchange(k.addr, big.as_bytes(), QUIET).await;
    assert!(a.starts_with("HTTP/1.1 431"), "{a}");
    let a = exchange(k.addr, b"GET / HTTP/1.1\r\nX: ", Duration::from_secs(3)).await;
    assert!(a.starts_with("HTTP/1.1 408"), "{a}");
    let a = exchange(k.addr, b"", Duration::from_secs(3)).await;
    assert_eq!(a, "");
}

/// At shutdown an idle keep-alive connection is closed and the server returns.
#[tokio::test]
async fn shutdown_closes_idle_connections() {
    let mut k = start().await;
    let mut s = TcpStream::connect(k.addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    k.stop.take().unwrap().send(()).unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert_eq!(n, 0);
    tokio::time::timeout(Duration::from_secs(2), k.done)
        .await
        .expect("the server returns")
        .unwrap();
}

/// A request in flight when the server stops is answered, with `connection: close`, and then
/// the connection closes.
#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_answered_and_closed() {
    let mut k = start().await;
    let mut s = TcpStream::connect(k.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    k.stop.take().unwrap().send(()).unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer))
        .await
        .expect("the connection closes after the answer")
        .unwrap();
    let a = String::from_utf8_lossy(&answer);
    assert!(
        a.starts_with("HTTP/1.1 200") && a.contains("connection: close"),
        "{a}"
    );
    assert!(a.ends_with("late"), "{a}");
}
