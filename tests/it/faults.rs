//! Upstream faults through real sockets: an upstream that resets mid-body, answers bytes that are
//! not HTTP, or sends a response head larger than any sane limit. Each gets the right answer (a
//! 502, or a visibly broken stream when the head was already forwarded), is counted, and the very
//! next request is served normally. Refusing and slow upstreams are in `proxy.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Guards every exchange so that a hang fails the test instead of stalling the suite.
const GUARD: Duration = Duration::from_secs(10);

/// A raw upstream that answers by path: `/reset-length` and `/reset-chunked` start a body and
/// reset the connection, `/garbage` answers bytes that are not HTTP, `/huge-head` sends a
/// 256 KiB header; anything else gets a proper 200 "fine".
struct RawUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    while let Some(head) = read_head(&mut s).await {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                        let done = match path.as_str() {
                            "/reset-length" => {
                                let _ = s
                                    .write_all(
                                        b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\npartial",
                                    )
                                    .await;
                                true
                            }
                            "/reset-chunked" => {
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\npartial\r\n")
                                    .await;
                                true
                            }
                            "/garbage" => {
                                let _ = s
                                    .write_all(b"\x16\x03\x01 this is not http at all\r\n\r\n")
                                    .await;
                                true
                            }
                            "/huge-head" => {
                                let head = format!(
                                    "HTTP/1.1 200 OK\r\nx-huge: {}\r\ncontent-length: 2\r\n\r\nok",
                                    "h".repeat(256 * 1024)
                                );
                                let _ = s.write_all(head.as_bytes()).await;
                                true
                            }
                            _ => {
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfine")
                                    .await;
                                false
                            }
                        };
                        if done {
                            // Linger 0: close with a reset, not an orderly FIN.
                            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                            return;
                        }
                    }
                });
            }
        });
        RawUpstream {
            addr,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// GET through kappe: the status, and the body or the error that ended it.
async fn fetch(url: &str) -> (StatusCode, Result<Bytes, String>) {
    try_fetch(url).await.expect("kappe answers with a head")
}

/// GET through kappe, where kappe may also close the connection before any head (the upstream
/// failed before a byte of its answer had gone out): that is the `Err`.
async fn try_fetch(url: &str) -> Result<(StatusCode, Result<Bytes, String>), String> {
    let exchange = async {
        let resp = client()
            .request(Request::get(url).body(Full::default()).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| e.to_string());
        Ok((status, body))
    };
    tokio::time::timeout(GUARD, exchange)
        .await
        .expect("kappe answers without hanging")
}

/// An upstream that resets the connection after part of a body (with a Content-Length, and
/// chunked) never lets the visitor take the truncated body for a complete one; the next request
/// is served normally.
#[tokio::test]
async fn upstream_reset_mid_body_breaks_the_visitors_stream_visibly() {
    let up = RawUpstream::start().await;
    let k = Kappe::start(&up.url(), &[]).await;
    for path in ["/reset-length", "/reset-chunked"] {
        match try_fetch(&k.url(path)).await {
            // The head went out before the reset: the body must end in an error.
            Ok((StatusCode::OK, body)) => {
                assert!(body.is_err(), "{path}: truncated body looked complete");
            }
            // The reset came before kappe forwarded the head: a 502, or the connection closed
            // before any head.
            Ok((StatusCode::BAD_GATEWAY, _)) | Err(_) => {}
            Ok((other, _)) => panic!("{path}: unexpected {other}"),
        }
        let (status, body) = fetch(&k.url("/after")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::OK, Bytes::from("fine"))
        );
    }
}

/// An upstream answering bytes that are not HTTP gets the visitor a 502 saying so, counted as a
/// broken upstream; the next request is fine.
#[tokio::test]
async fn upstream_garbage_gets_502() {
    let up = RawUpstream::start().await;
    let k = Kappe::start(&up.url(), &[]).await;
    let (status, body) = fetch(&k.url("/garbage")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.unwrap().starts_with(b"upstream answered"));
    assert_eq!(
        k.metric("kappe_upstream_errors_total{kind=\"broken\"}")
            .await,
        1.0
    );
    let (status, body) = fetch(&k.url("/after")).await;
    assert_eq!(
        (status, body.unwrap()),
        (StatusCode::OK, Bytes::from("fine"))
    );
}

/// A response head far larger than the client's buffer gets a 502, not unbounded buffering; the
/// next request is fine.
#[tokio::test]
async fn upstream_oversized_header_gets_502() {
    let up = RawUpstream::start().await;
    let k = Kappe::start(&up.url(), &[]).await;
    let (status, _) = fetch(&k.url("/huge-head")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (status, body) = fetch(&k.url("/after")).await;
    assert_eq!(
        (status, body.unwrap()),
        (StatusCode::OK, Bytes::from("fine"))
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), 2);
}

/// Many faulty exchanges in parallel with good ones: every good request is served, every faulty
/// one gets a 502 or a broken stream, and kappe's connection gauge returns to zero.
#[tokio::test]
async fn mixed_faults_under_concurrency_leave_good_requests_untouched() {
    let up = RawUpstream::start().await;
    let k = Kappe::start(&up.url(), &[]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let path = ["/garbage", "/reset-length", "/huge-head", "/ok"][i % 4];
        let url = k.url(path);
        tasks.push(tokio::spawn(async move { (path, try_fetch(&url).await) }));
    }
    for t in tasks {
        let (path, outcome) = t.await.unwrap();
        if path == "/ok" {
            let (status, body) = outcome.expect("a good request gets a head");
            assert_eq!(
                (status, body.unwrap()),
                (StatusCode::OK, Bytes::from("fine"))
            );
        } else if let Ok((status, body)) = outcome {
            assert!(
                status == StatusCode::BAD_GATEWAY || body.is_err(),
                "{path}: {status}"
            );
        }
    }
    // Closing is asynchronous: wait for the gauge to settle rather than for a fixed time.
    let mut active = f64::NAN;
    for _ in 0..200 {
        active = k.metric("kappe_connections_active").await;
        if active == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(active, 0.0);
}
