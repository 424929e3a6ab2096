//! The request pipeline of the visitor port, as named phases:
//!
//! 1. `request_filter`: refuse what a reverse proxy must not serve (CONNECT, absolute-form
//!    requests for other hosts, bodies over the limit) and answer kappe's own paths.
//! 2. `upstream_request`: forwarding hygiene, then the pooled keep-alive client.
//! 3. `response_filter`: clean the upstream's head and decide (see [`decide`]) whether the
//!    response is served, dropped or passed through.
//! 4. `logging`: metrics and the access log.
//!
//! Errors from any phase become a response in exactly one place ([`error::rescue`]).

pub mod body;
pub mod error;
pub mod forward;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use self::body::{BodyTooLarge, ProxyBody, UpstreamBody};
use self::error::{ProxyError, rescue};
use crate::config::{Config, LogFormat};
use crate::metrics::Metrics;
use crate::server::ConnInfo;

/// The pooled HTTP/1.1 client to the upstream.
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// Builds the keep-alive client pool to the upstream.
pub fn upstream_client(cfg: &Config) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(cfg.upstream_connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// Everything a request needs; shared by all connections.
pub struct Proxy {
    pub cfg: Arc<Config>,
    pub client: UpstreamClient,
    pub metrics: Metrics,
}

impl Proxy {
    /// Answers one visitor request. Never fails: errors are rescued into responses.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        info: ConnInfo,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = self
            .cfg
            .access_log
            .map(|_| req.uri().path().to_owned())
            .unwrap_or_default();
        let resp = match self.pipeline(req, &info).await {
            Ok(resp) => resp,
            Err(err) => {
                if let Some(kind) = err.upstream_kind() {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&[kind])
                        .inc();
                    if kind != "broken" {
                        self.metrics.upstream_up.set(0);
                    }
                }
                rescue(&err)
            }
        };
        let elapsed = start.elapsed();
        self.metrics.count_status(resp.status());
        self.metrics.request_duration.observe(elapsed.as_secs_f64());
        if let Some(format) = self.cfg.access_log {
            access_log(format, &method, &path, resp.status(), elapsed, &info);
        }
        resp
    }

    async fn pipeline(
        &self,
        req: Request<Incoming>,
        info: &ConnInfo,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // request_filter
        if req.method() == Method::CONNECT {
            return Err(ProxyError::Connect);
        }
        let host = forward::visitor_host(req.uri(), req.headers(), req.version())?;
        let max = self.cfg.max_body_size;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ProxyError::BodyTooLarge(max));
        }

        // upstream_request
        let (mut parts, body) = req.into_parts();
        let visitor_version = parts.version;
        forward::prepare_request(
            &mut parts,
            &self.cfg.upstream_authority,
            self.cfg.preserve_host,
            info,
            host,
        );
        let body = UpstreamBody::Limited {
            inner: body,
            remaining: max,
        };
        let resp = self.send(Request::from_parts(parts, body)).await?;

        // response_filter
        let (mut parts, body) = resp.into_parts();
        forward::prepare_response(&mut parts.headers, visitor_version);
        self.metrics.passthrough.inc();
        Ok(Response::from_parts(parts, ProxyBody::Stream(body)))
    }

    /// Sends one request upstream, bounded by the response timeout.
    async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, ProxyError> {
        let started = Instant::now();
        let result =
            tokio::time::timeout(self.cfg.upstream_timeout, self.client.request(req)).await;
        self.metrics
            .upstream_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(Ok(resp)) => {
                self.metrics.upstream_up.set(1);
                Ok(resp)
            }
            Ok(Err(e)) => Err(classify(&e, self.cfg.max_body_size)),
        }
    }
}

/// Maps a client error to what went wrong, by walking its sources.
fn classify(e: &hyper_util::client::legacy::Error, max_body: u64) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<BodyTooLarge>() {
            return ProxyError::BodyTooLarge(max_body);
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
            && e.is_connect()
        {
            return ProxyError::UpstreamConnectTimeout;
        }
        source = s.source();
    }
    if e.is_connect() {
        ProxyError::UpstreamConnect
    } else {
        ProxyError::UpstreamBroken
    }
}

/// One access-log line: never a visitor id, never a query string (it may carry ids or consent
/// strings).
fn access_log(
    format: LogFormat,
    method: &Method,
    path: &str,
    status: http::StatusCode,
    elapsed: Duration,
    info: &ConnInfo,
) {
    use std::io::Write;
    let micros = elapsed.as_micros();
    let line = match format {
        LogFormat::Text => format!(
            "{} {method} {path} {} {micros}us\n",
            info.peer.ip(),
            status.as_u16()
        ),
        LogFormat::Json => {
            let mut s = serde_json::json!({
                "client": info.peer.ip().to_string(),
                "method": method.as_str(),
                "path": path,
                "status": status.as_u16(),
                "duration_us": micros as u64,
            })
            .to_string();
            s.push('\n');
            s
        }
    };
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}
