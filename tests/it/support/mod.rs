//! Test support: a mock upstream on port 0 that records what it received, kappe started
//! in-process on port 0, and small HTTP helpers. Nothing here uses a fixed port.

#![allow(dead_code, unreachable_pub)]

pub mod redis;

/// True when every program in `progs` runs (`PROG --version`). Under `CI=true` a missing program
/// fails the test instead of skipping it; locally the test skips with the printed reason.
pub fn require_programs(test: &str, progs: &[&str], install: &str) -> bool {
    let runs = |prog: &str| {
        std::process::Command::new(prog)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if progs.iter().all(|p| runs(p)) {
        return true;
    }
    let why = format!("{} not found ({install})", progs.join(" or "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}");
    }
    eprintln!("skipping {test}: {why}");
    false
}

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kappe::app::{self, Shared};
use kappe::cli::Cli;
use kappe::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>
        + Send
        + Sync,
>;

/// A full body for responses of mock servers.
pub fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// What the mock upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
}

/// A mock upstream on a free port.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts a mock upstream answering with `f`.
    pub async fn start<F, Fut>(f: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(move |req| Box::pin(f(req)));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        seen.lock().unwrap().push(Seen {
                            method: req.method().clone(),
                            uri: req.uri().clone(),
                            headers: req.headers().clone(),
                        });
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen, task }
    }

    /// An upstream answering every request with 200 and `body`.
    pub async fn ok(body: &'static str) -> Upstream {
        Upstream::start(move |_req| async move { Response::new(full(body)) }).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// kappe running in-process on free ports.
pub struct Kappe {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Kappe {
    /// Starts kappe with these flags (besides --listen and --admin-listen, which are port 0).
    pub async fn start(upstream: &str, flags: &[&str]) -> Kappe {
        let cfg = config(upstream, flags).expect("valid test configuration");
        Kappe::start_config(cfg).await
    }

    /// Starts kappe on a manual clock that the test moves.
    pub async fn start_clock(upstream: &str, flags: &[&str], clock: kappe::clock::Clock) -> Kappe {
        let cfg = config(upstream, flags).expect("valid test configuration");
        Kappe::start_full(cfg, clock).await
    }

    pub async fn start_config(cfg: Config) -> Kappe {
        Kappe::start_full(cfg, kappe::clock::Clock::System).await
    }

    pub async fn start_full(cfg: Config, clock: kappe::clock::Clock) -> Kappe {
        let (visitors, admin_listener) = app::bind(&cfg).await.expect("bind port 0");
        let addr = visitors.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let shared = Shared::with_clock(cfg, clock).await.expect("kappe starts");
        let (tx, rx) = oneshot::channel::<()>();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            app::run(s, visitors, admin_listener, async {
                let _ = rx.await;
            })
            .await
            .expect("kappe runs");
        });
        Kappe {
            addr,
            admin,
            shared,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Signals shutdown and waits for kappe to finish draining.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// Starts shutdown without waiting.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running")
    }

    /// One metric's value from the admin port's /metrics.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = get(&self.admin_url("/metrics")).await.1;
        metric_value(&text, series).unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }
}

impl Drop for Kappe {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Builds a configuration from flags, with both listeners on port 0.
pub fn config(upstream: &str, flags: &[&str]) -> Result<Config, kappe::config::ConfigError> {
    let mut argv = vec![
        "kappe",
        "--upstream",
        upstream,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    argv.extend_from_slice(flags);
    let cli = Cli::try_parse_from(argv).expect("flags parse");
    Config::from_args(cli.args)
}

/// Finds `series` (name with labels, as printed) in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request, returns status, headers and the whole body.
pub async fn send(req: Request<Full<Bytes>>) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let resp = client().request(req).await.expect("request completes");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body completes").to_bytes();
    (parts.status, parts.headers, body)
}

/// GET a URL: status and body as text.
pub async fn get(url: &str) -> (http::StatusCode, String) {
    let (s, _, b) = send(Request::get(url).body(Full::default()).unwrap()).await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// GET with headers: status, headers and body.
pub async fn get_with(
    url: &str,
    headers: &[(&str, &str)],
) -> (http::StatusCode, http::HeaderMap, String) {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (s, h, body) = send(b.body(Full::default()).unwrap()).await;
    (s, h, String::from_utf8_lossy(&body).into_owned())
}

/// Writes raw bytes on a fresh connection and reads until the server closes or `limit` bytes.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The test process's resident memory in bytes (kappe runs in-process).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A mock ad server: `/ad?c=CAMPAIGN[&rt=1][&adv=A][&fcap=3/1d][&burn=GLOB]` answers a banner of
/// that campaign with kappe's headers; a campaign named in `X-Kappe-Exclude` is replaced by the
/// contextual campaign `ctx-fallback`. Other paths answer 200 "page".
pub async fn ad_server() -> Upstream {
    Upstream::start(|req: Request<Incoming>| async move {
        let q = req.uri().query().unwrap_or("").to_owned();
        let param = |name: &str| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        };
        if req.uri().path() != "/ad" {
            return Response::new(full("page"));
        }
        let excluded: Vec<String> = req
            .headers()
            .get("x-kappe-exclude")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut c = param("c").unwrap_or_else(|| "rt-shoes".into());
        let mut rt = param("rt").is_some();
        if excluded.contains(&c) {
            c = "ctx-fallback".into();
            rt = false;
        }
        let mut b = Response::builder()
            .header("x-campaign-id", c.as_str())
            .header("set-cookie", "upstream_session=abc; Path=/");
        if rt {
            b = b.header("x-retargeting", "1");
        }
        if let Some(a) = param("adv") {
            b = b.header("x-advertiser", a);
        }
        if let Some(f) = param("fcap") {
            b = b.header("x-fcap", f.replace("%2C", ","));
        }
        if let Some(g) = param("burn") {
            b = b.header("x-kappe-burn", g);
        }
        b.body(full(format!(
            "<a href=\"/click?campaignid={c}\">banner {c}</a>"
        )))
        .unwrap()
    })
    .await
}

/// GET as a visitor with cookie `kappe_id=ID` (no cookie when `id` is empty), plus headers.
pub async fn visit(
    k: &Kappe,
    path: &str,
    id: &str,
    extra: &[(&str, &str)],
) -> (http::StatusCode, http::HeaderMap, String) {
    let cookie = format!("kappe_id={id}");
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if !id.is_empty() {
        headers.push(("cookie", &cookie));
    }
    get_with(&k.url(path), &headers).await
}
