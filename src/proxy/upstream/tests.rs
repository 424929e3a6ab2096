//! The upstream client against scripted upstreams on loopback sockets.

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// An upstream that, on every connection, answers each request head it reads with the next of
/// `answers` (cycling), written in pieces of `piece` bytes, and closes the connection after
/// `per_conn` answers. Counts connections accepted.
struct Scripted {
    upstream: Upstream,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn scripted(answers: Vec<&'static [u8]>, per_conn: usize, piece: usize) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (a, h) = (accepted.clone(), heads.clone());
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let mut buf = Vec::new();
            for _ in 0..per_conn {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut b = [0u8; 4096];
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    break;
                };
                let head: Vec<u8> = buf.drain(..end + 4).collect();
                h.lock().unwrap().push(String::from_utf8(head).unwrap());
                let answer = answers[next % answers.len()];
                next += 1;
                for p in answer.chunks(piece) {
                    s.write_all(p).await.unwrap();
                    s.flush().await.unwrap();
                    if piece < answer.len() {
                        tokio::task::yield_now().await;
                    }
                }
            }
            drop(s);
        }
    });
    let upstream = Upstream::to(addr.to_string().parse().unwrap());
    Scripted {
        upstream,
        accepted,
        heads,
    }
}

impl Scripted {
    /// Connections accepted and request heads read so far.
    fn seen(&self) -> (usize, usize) {
        (
            self.accepted.load(Ordering::SeqCst),
            self.heads.lock().unwrap().len(),
        )
    }
}

fn get(method: Method) -> Request<UpstreamBody> {
    Request::builder()
        .method(method)
        .uri("http://ads/ad?x=1")
        .header("host", "ads")
        .body(UpstreamBody::Empty)
        .unwrap()
}

/// The whole body; a body that stalls for 10 s fails the test rather than hanging it.
async fn body_of(resp: Response<ResponseBody>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the body ends within 10 s")
        .unwrap()
        .to_bytes()
        .to_vec()
}

const BANNER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Campaign-Id: c1\r\n\r\nbanner";

/// Requests reuse one pooled connection; the head goes out as kappe wrote it.
#[tokio::test]
async fn connections_are_pooled_and_reused() {
    let s = scripted(vec![BANNER], 100, usize::MAX).await;
    for _ in 0..3 {
        let resp = s.upstream.send(get(Method::GET)).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-campaign-id"], "c1");
        assert_eq!(body_of(resp).await, b"banner");
    }
    assert_eq!(s.seen(), (1, 3));
    assert_eq!(s.upstream.pool.idle(), 1);
    assert_eq!(
        s.heads.lock().unwrap()[0],
        "GET /ad?x=1 HTTP/1.1\r\nhost: ads\r\n\r\n"
    );
}

/// A pooled connection the upstream closed is replaced, and a repeatable request is sent again.
#[tokio::test]
async fn a_closed_pooled_connection_is_replaced_for_a_get() {
    let s = scripted(vec![BANNER], 1, usize::MAX).await;
    for _ in 0..3 {
        let resp = s.upstream.send(get(Method::GET)).await.unwrap();
        assert_eq!(body_of(resp).await, b"banner");
    }
    assert_eq!(s.seen(), (3, 3));
}

/// An idle connection the upstream closed is passed over, so even a POST, which is never sent
/// twice, goes out on a new connection.
#[tokio::test]
async fn an_idle_connection_closed_by_the_upstream_is_passed_over() {
    let s = scripted(vec![BANNER], 1, usize::MAX).await;
    body_of(s.upstream.send(get(Method::GET)).await.unwrap()).await;
    assert_eq!(s.upstream.pool.idle(), 1);
    // Let the upstream's close arrive, so the pooled connection is a closed one.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let resp = s.upstream.send(get(Method::POST)).await.unwrap();
    assert_eq!(body_of(resp).await, b"banner");
    assert_eq!(s.seen(), (2, 2));
}

/// A POST whose connection closes before any answer is a 502, never sent a second time; a GET
/// in the same place on a pooled connection is sent again.
#[tokio::test]
async fn a_post_is_not_repeated() {
    let s = scripted(vec![BANNER, b""], 2, usize::MAX).await;
    body_of(s.upstream.send(get(Method::GET)).await.unwrap()).await;
    let err = s.upstream.send(get(Method::POST)).await.unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamBroken), "{err:?}");
    assert_eq!(s.seen(), (1, 2));

    let s = scripted(vec![BANNER, b"", BANNER], 2, usize::MAX).await;
    body_of(s.upstream.send(get(Method::GET)).await.unwrap()).await;
    let resp = s.upstream.send(get(Method::GET)).await.unwrap();
    assert_eq!(body_of(resp).await, b"banner");
    assert_eq!(s.seen(), (2, 3));
}

/// A chunked answer arriving a few bytes at a time streams whole, and the connection is pooled
/// again once the last chunk has been read.
#[tokio::test]
async fn chunked_answers_stream_and_return_the_connection() {
    const CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;a=b\r\nwiki\r\n5\r\npedia\r\n0\r\nX: y\r\n\r\n";
    let s = scripted(vec![CHUNKED], 100, 3).await;
    for _ in 0..2 {
        let resp = s.upstream.send(get(Method::GET)).await.unwrap();
        assert_eq!(body_of(resp).await, b"wikipedia");
        assert_eq!(s.upstream.pool.idle(), 1);
    }
    assert_eq!(s.seen(), (1, 2));
}

/// A long body streams past the first read; one without a length ends at the close and its
/// connection is not reused; HEAD reads no body.
#[tokio::test]
async fn lengths_closes_and_head() {
    const LONG: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
    let s = scripted(vec![LONG], 100, 7).await;
    let resp = s.upstream.send(get(Method::GET)).await.unwrap();
    assert_eq!(body_of(resp).await, b"0123456789");
    assert_eq!(s.upstream.pool.idle(), 1);

    const UNTIL_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nall of it";
    let s = scripted(vec![UNTIL_CLOSE], 1, 4).await;
    let resp = s.upstream.send(get(Method::GET)).await.unwrap();
    assert_eq!(body_of(resp).await, b"all of it");
    assert_eq!(s.upstream.pool.idle(), 0);

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n";
    let s = scripted(vec![HEAD], 100, usize::MAX).await;
    let resp = s.upstream.send(get(Method::HEAD)).await.unwrap();
    assert_eq!(resp.headers()["content-length"], "6");
    assert!(body_of(resp).await.is_empty());
    assert_eq!(s.upstream.pool.idle(), 1);
}

/// A body dropped before its end closes the connection instead of pooling it.
#[tokio::test]
async fn a_body_dropped_early_closes_its_connection() {
    const LONG: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234";
    let s = scripted(vec![LONG], 100, usize::MAX).await;
    let resp = s.upstream.send(get(Method::GET)).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"01234");
    drop(body);
    assert_eq!(s.upstream.pool.idle(), 0);
}

/// Garbage, a truncated body and a refused connection are errors of the right kind.
#[tokio::test]
async fn broken_upstreams_are_errors() {
    let s = scripted(vec![b"SSH-2.0-OpenSSH\r\n\r\n"], 1, usize::MAX).await;
    let err = s.upstream.send(get(Method::GET)).await.unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamBroken), "{err:?}");

    let s = scripted(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n012"],
        1,
        usize::MAX,
    )
    .await;
    let resp = s.upstream.send(get(Method::GET)).await.unwrap();
    assert!(resp.into_body().collect().await.is_err());

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let refused = Upstream {
        authority: addr.to_string().parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(10),
        max_body: 1,
        fields: Arc::default(),
        pool: Arc::default(),
    };
    let err = refused.send(get(Method::GET)).await.unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamConnect), "{err:?}");
}

/// A connection idle longer than the idle timeout is never handed out: taking one finds none,
/// and returning a connection first closes the expired ones below it.
#[tokio::test]
async fn idle_connections_expire() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = || async { Conn::new(TcpStream::connect(addr).await.unwrap()) };
    // Connections whose idle time ran out a second ago.
    let expired = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
    let pool = Pool::default();
    let (a, b, c) = (open().await, open().await, open().await);
    pool.idle
        .lock()
        .unwrap()
        .extend([(a, expired), (b, expired)]);
    assert!(pool.take(Instant::now()).is_none());
    assert_eq!(pool.idle(), 0);

    pool.idle.lock().unwrap().push((c, expired));
    pool.put(open().await);
    assert_eq!(pool.idle(), 1);
    assert!(pool.take(Instant::now()).is_some());
}

/// An answer followed by bytes its framing does not account for leaves a connection that is
/// never reused.
#[tokio::test]
async fn bytes_beyond_the_answer_keep_a_connection_out_of_the_pool() {
    let s = scripted(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"],
        100,
        usize::MAX,
    )
    .await;
    let resp = s.upstream.send(get(Method::GET)).await.unwrap();
    assert_eq!(body_of(resp).await, b"ok");
    assert_eq!(s.upstream.pool.idle(), 0);
}

/// The answer's head must come within the response timeout of each request, timed by the
/// connection's one timer: a request that outlives the timer's earlier deadline is still
/// served within its own, and one past its own fails as a timeout.
#[tokio::test]
async fn each_request_has_its_own_response_deadline() {
    const TIMEOUT: Duration = Duration::from_millis(400);
    // How long the upstream waits before answering each request, on one connection.
    const DELAYS: [u64; 3] = [0, 300, 800];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        for delay in DELAYS {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut b = [0u8; 4096];
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            buf.drain(..end + 4);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if s.write_all(BANNER).await.is_err() {
                return;
            }
        }
    });
    let up = Upstream {
        response_timeout: TIMEOUT,
        ..Upstream::to(addr.to_string().parse().unwrap())
    };

    let t0 = Instant::now();
    assert_eq!(
        body_of(up.send(get(Method::GET)).await.unwrap()).await,
        b"banner"
    );
    // The connection's timer now runs to about t0 + 400 ms; this answer comes at about
    // t0 + 500 ms, within its own deadline of t0 + 600 ms.
    tokio::time::sleep(Duration::from_millis(200).saturating_sub(t0.elapsed())).await;
    let resp = up
        .send(get(Method::GET))
        .await
        .expect("served within its own deadline");
    assert_eq!(body_of(resp).await, b"banner");
    assert_eq!(up.pool.idle(), 1, "the same connection is kept");

    let asked = Instant::now();
    let err = up.send(get(Method::GET)).await.unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamTimeout), "{err:?}");
    let waited = asked.elapsed();
    assert!(waited >= TIMEOUT, "timed out after {waited:?}");
    assert!(
        waited < Duration::from_millis(800),
        "timed out after {waited:?}"
    );
}
