//! The operators' port: `GET /metrics` (Prometheus text format), `GET /healthz` (alive),
//! `GET /readyz` (503 while the upstream or the store cannot be reached), `GET /` (the status
//! page) and `POST /reload`. Nothing here is reachable through the visitor port. With
//! `--admin-token`, everything but the health probes needs `Authorization: Bearer TOKEN`.

use std::sync::Arc;
use std::time::Duration;

use crate::server::VisitorBody;
use http::{Method, Request, Response, StatusCode, header};

use crate::app::Shared;
use crate::proxy::body::ProxyBody;
use crate::server::ConnInfo;

fn text(
    status: StatusCode,
    body: impl Into<bytes::Bytes>,
    content_type: &'static str,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn authorized(shared: &Shared, req: &Request<VisitorBody>) -> bool {
    let Some(token) = shared.cfg.admin_token.as_deref() else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare in constant time so the token cannot be guessed byte by byte.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Answers one admin request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<VisitorBody>,
    _info: ConnInfo,
) -> Response<ProxyBody> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n", PLAIN),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            let problems = readiness(&shared).await;
            if problems.is_empty() {
                text(StatusCode::OK, "ready\n", PLAIN)
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    problems.join("\n") + "\n",
                    PLAIN,
                )
            }
        }
        _ if !authorized(&shared, &req) => {
            let mut resp = text(StatusCode::UNAUTHORIZED, "admin token required\n", PLAIN);
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"kappe\""),
            );
            resp
        }
        (&Method::GET, "/metrics") => {
            shared.refresh_gauges();
            text(
                StatusCode::OK,
                shared.metrics.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
        (&Method::GET, "/") => text(
            StatusCode::OK,
            crate::status::render(&shared, req.uri().query()),
            "text/html; charset=utf-8",
        ),
        (&Method::POST, "/reload") => match shared.reload() {
            Ok(summary) => text(StatusCode::OK, format!("reloaded\n{summary}"), PLAIN),
            Err(e) => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("reload refused, old policy kept: {e}\n"),
                PLAIN,
            ),
        },
        (_, "/metrics" | "/" | "/reload" | "/healthz" | "/readyz") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
            PLAIN,
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n", PLAIN),
    }
}

/// What keeps kappe from being ready, one line each; empty when ready.
pub async fn readiness(shared: &Shared) -> Vec<String> {
    let mut problems = Vec::new();
    let authority = shared.cfg.upstream_authority.as_str().to_owned();
    let probe = tokio::time::timeout(
        shared
            .cfg
            .upstream_connect_timeout
            .min(Duration::from_secs(2)),
        tokio::net::TcpStream::connect(authority.clone()),
    )
    .await;
    match probe {
        Ok(Ok(_)) => shared.metrics.upstream_up.set(1),
        _ => {
            shared.metrics.upstream_up.set(0);
            problems.push(format!("upstream {authority} cannot be reached"));
        }
    }
    if let Err(e) = shared.store_ping().await {
        problems.push(format!("store: {e}"));
    }
    problems
}
