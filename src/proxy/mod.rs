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
pub mod decide;
pub mod error;
pub mod forward;
pub mod identity;
pub mod inspect;
pub mod local;
pub mod upstream;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Body;

use self::body::{ProxyBody, UpstreamBody};
use self::decide::{Decision, DropReason};
use self::error::{ProxyError, rescue};
use self::identity::Identity;
use self::inspect::Inspected;
use self::upstream::wire::{Addressed, Verbatim};
use crate::clock::{Clock, UnixSecs};
use crate::config::{Config, Enforcement, LogFormat, NoId, OnDrop, StoreFailure, VisitorSource};
use crate::metrics::Metrics;
use crate::policy::{Policy, Source};
use crate::privacy::{self, Verdict};
use crate::server::{ConnInfo, VisitorBody};
use crate::store::pseudonym::Pseudonymizer;
use crate::store::{Admission, AdmitRequest, Store, StoreError, window};

/// Everything a request needs; shared by all connections.
#[derive(Clone)]
pub struct Proxy {
    pub cfg: Arc<Config>,
    pub upstream: upstream::Upstream,
    pub metrics: Metrics,
    pub policy: Arc<ArcSwap<Policy>>,
    pub store: Store,
    pub pseudo: Pseudonymizer,
    pub clock: Clock,
}

/// What the request phase learned that the response phase needs.
struct Ctx {
    version: Version,
    now: UnixSecs,
    verdict: Verdict,
    identity: Identity,
    /// The upstream request head, kept when a drop may be answered by asking again.
    replay: Option<http::request::Parts>,
    /// The forwarding fields written with it.
    forwarding: forward::Forwarding,
}

static X_KAPPE_BURN: HeaderName = HeaderName::from_static("x-kappe-burn");
static X_KAPPE_DECISION: HeaderName = HeaderName::from_static("x-kappe-decision");
/// `X-Kappe-Exclude` and `X-Kappe-Capped` are how kappe talks to the ad server: a visitor must not
/// be able to send them upstream.
static X_KAPPE_EXCLUDE: HeaderName = HeaderName::from_static("x-kappe-exclude");
static X_KAPPE_CAPPED: HeaderName = HeaderName::from_static("x-kappe-capped");
static SEC_GPC: HeaderName = HeaderName::from_static("sec-gpc");

/// The fields of the upstream's answer that kappe reads: the retargeting header, `X-Kappe-Burn`,
/// the policy header and the headers campaigns and advertisers are read from. Unless
/// `--keep-upstream-headers`, they are addressed to kappe and never reach the visitor: the
/// upstream client sets them aside as it reads an answer ([`Addressed`]). Fields kappe does
/// not read pass through as they came ([`upstream::wire::Verbatim`]).
pub(crate) fn answer_fields(e: &Enforcement) -> upstream::wire::KnownFields {
    let mut names = vec![e.retargeting_header.clone(), X_KAPPE_BURN.clone()];
    names.extend(e.policy_header.clone());
    for source in e.campaign_from.iter().chain(&e.advertiser_from) {
        if let Source::Header(name) = source
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    upstream::wire::KnownFields::new(names, !e.keep_upstream_headers)
}

/// The request fields kappe reads besides a fixed set (`upstream::wire::KnownFields`): the
/// headers a visitor id is read from. The others pass upstream as the visitor sent them.
pub(crate) fn request_fields(e: &Enforcement) -> upstream::wire::KnownFields {
    let names = e.visitor_from.iter().filter_map(VisitorSource::header);
    upstream::wire::KnownFields::request(names.cloned().collect())
}

impl Proxy {
    /// The same proxy with a connection pool of its own, for another worker thread: an
    /// upstream connection is registered with the runtime that opened it, so sharing a pool
    /// across threads would drive sockets from a runtime that is not polling them.
    #[must_use]
    pub fn with_own_client(&self) -> Proxy {
        Proxy {
            upstream: upstream::Upstream::new(&self.cfg),
            ..self.clone()
        }
    }

    /// Answers one visitor request. Never fails: errors are rescued into responses.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<VisitorBody>,
        info: ConnInfo,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = self
            .cfg
            .access_log
            .map(|_| req.uri().path().to_owned())
            .unwrap_or_default();
        let (resp, decision) = match self.pipeline(req, &info).await {
            Ok(pair) => pair,
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
                (rescue(&err), None)
            }
        };
        let elapsed = start.elapsed();
        self.metrics.count_status(resp.status());
        self.metrics.request_duration.observe(elapsed.as_secs_f64());
        if let Some(format) = self.cfg.access_log {
            access_log(
                format,
                &method,
                &path,
                resp.status(),
                elapsed,
                &info,
                decision,
            );
        }
        resp
    }

    async fn pipeline(
        &self,
        req: Request<VisitorBody>,
        info: &ConnInfo,
    ) -> Result<(Response<ProxyBody>, Option<Decision>), ProxyError> {
        // request_filter
        if req.method() == Method::CONNECT {
            return Err(ProxyError::Connect);
        }
        let host = forward::visitor_host(req.uri(), req.headers(), req.version())?;
        if local::is_local(req.uri().path(), &self.cfg.privacy.privacy_path) {
            // kappe's own pages read fields the proxy does not: all go into the map.
            let mut req = req;
            if let Some(passing) = req.extensions_mut().remove::<Verbatim>() {
                passing.restore(req.headers_mut());
            }
            // Boxed: kappe's own pages are rare, and inline their future would enlarge every
            // request's.
            return Ok((Box::pin(self.local(req, info)).await?, None));
        }
        let max = self.cfg.max_body_size;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ProxyError::BodyTooLarge(max));
        }

        // privacy and identity, from one parse of the cookies
        let now = self.clock.now();
        let (verdict, identity) = {
            let jar = privacy::Jar::parse(req.headers());
            let verdict = privacy::evaluate_with(
                &self.cfg.privacy.signals,
                req.headers(),
                &jar,
                req.uri().query(),
                now,
            );
            let identity = if verdict.storage_allowed {
                identity::identify_with(
                    req.headers(),
                    &jar,
                    &self.cfg.enforcement,
                    &self.pseudo,
                    info.peer.ip(),
                    now,
                )
            } else {
                Identity::None
            };
            (verdict, identity)
        };
        for signal in verdict.signals.iter() {
            self.metrics
                .privacy_signals
                .with_label_values(&[signal.label()])
                .inc();
        }

        // upstream_request
        let (mut parts, body) = req.into_parts();
        let version = parts.version;
        self.upstream_headers(&mut parts.headers, &verdict, &identity, now)
            .await;
        let forwarding = forward::prepare_request(
            &mut parts,
            &self.cfg.upstream_authority,
            self.cfg.preserve_host,
            info,
            host,
        );
        let bodiless = declared == Some(0) || (declared.is_none() && body.is_end_stream());
        let replay =
            (self.cfg.enforcement.on_drop == OnDrop::Refetch && bodiless).then(|| parts.clone());
        let body = if bodiless {
            UpstreamBody::Empty
        } else {
            UpstreamBody::Limited {
                inner: body,
                remaining: max,
            }
        };
        let resp = self.send(&mut parts, body, &forwarding).await?;
        let ctx = Ctx {
            version,
            now,
            verdict,
            identity,
            replay,
            forwarding,
        };

        // response_filter, with at most --refetch-max further asks
        let (mut resp, mut decision, mut campaign) = self.response_filter(resp, &ctx, info).await?;
        let mut excluded: Vec<String> = Vec::new();
        let mut refetches = 0;
        while let (Decision::Dropped(_), Some(c), Some(replay)) =
            (decision, campaign.take(), ctx.replay.as_ref())
        {
            if refetches >= self.cfg.enforcement.refetch_max || self.cfg.enforcement.dry_run {
                break;
            }
            refetches += 1;
            self.metrics.refetch.inc();
            excluded.push(c);
            let mut again = self.refetch_request(replay, &excluded);
            let upstream = self
                .send(&mut again, UpstreamBody::Empty, &ctx.forwarding)
                .await?;
            (resp, decision, campaign) = self.response_filter(upstream, &ctx, info).await?;
        }
        let mut resp = match decision {
            Decision::Dropped(_) if !self.cfg.enforcement.dry_run => {
                drain(resp.into_body());
                self.drop_answer()
            }
            _ => resp,
        };
        if self.cfg.enforcement.explain_header {
            resp.headers_mut()
                .insert(X_KAPPE_DECISION.clone(), decision.explain(now));
        }
        Ok((resp, Some(decision)))
    }

    /// Privacy and hint headers of the upstream request.
    async fn upstream_headers(
        &self,
        headers: &mut http::HeaderMap,
        verdict: &Verdict,
        identity: &Identity,
        now: UnixSecs,
    ) {
        // Static names: removing by &str would parse and hash the name on every request.
        forward::remove_where(headers, |n| *n == X_KAPPE_CAPPED || *n == X_KAPPE_EXCLUDE);
        let e = &self.cfg.enforcement;
        if !verdict.storage_allowed {
            // No visitor id travels upstream for a visitor who may not be tracked.
            let mut strip: Vec<&str> = e
                .visitor_from
                .iter()
                .filter_map(VisitorSource::cookie)
                .collect();
            strip.push(e.visitor_cookie.as_str());
            if verdict.opted_out {
                strip.extend(self.cfg.privacy.strip_cookies.iter().map(String::as_str));
            }
            if headers.contains_key(header::COOKIE) {
                match privacy::strip_cookies(headers, &strip) {
                    Some(v) => headers.insert(header::COOKIE, v),
                    None => headers.remove(header::COOKIE),
                };
            }
            for h in e.visitor_from.iter().filter_map(VisitorSource::header) {
                headers.remove(h);
            }
        }
        if verdict.own_cookie {
            headers.insert(SEC_GPC.clone(), HeaderValue::from_static("1"));
        }
        if e.hint_capped
            && let Identity::Known { key, .. } = identity
        {
            match Box::pin(self.store.report(*key, now)).await {
                Ok(report) => {
                    let policy = self.policy.load();
                    let capped = window::capped_campaigns(
                        &report,
                        |c| policy.caps_for(c, None).to_vec(),
                        &policy.visitor_caps,
                        now,
                    );
                    if !capped.is_empty()
                        && let Ok(v) = HeaderValue::from_str(&capped.join(","))
                    {
                        headers.insert(X_KAPPE_CAPPED.clone(), v);
                    }
                }
                Err(e) => {
                    self.store_failed(&e);
                }
            }
        }
    }

    /// The replayed request with the excluded campaigns named in a header and, with
    /// `--exclude-param`, in the query (`exclude=campaignid:1,campaignid:2`).
    fn refetch_request(
        &self,
        replay: &http::request::Parts,
        excluded: &[String],
    ) -> http::request::Parts {
        let mut parts = replay.clone();
        if let Ok(v) = HeaderValue::from_str(&excluded.join(",")) {
            parts.headers.insert(X_KAPPE_EXCLUDE.clone(), v);
        }
        if let Some(param) = &self.cfg.enforcement.exclude_param {
            let list: Vec<String> = excluded.iter().map(|c| format!("campaignid:{c}")).collect();
            let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let sep = if pq.contains('?') { '&' } else { '?' };
            let new = format!("{pq}{sep}{param}={}", list.join(","));
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.path_and_query = new.parse().ok().or(uri_parts.path_and_query);
            if let Ok(uri) = Uri::from_parts(uri_parts) {
                parts.uri = uri;
            }
        }
        parts
    }

    /// Cleans the upstream's answer and decides what the visitor gets. Returns the response as it
    /// would be served, the decision, and the campaign of a dropped answer (for refetch
    /// exclusion).
    async fn response_filter(
        &self,
        (resp, addressed): (Response<upstream::ResponseBody>, Addressed),
        ctx: &Ctx,
        info: &ConnInfo,
    ) -> Result<(Response<ProxyBody>, Decision, Option<String>), ProxyError> {
        let e = &self.cfg.enforcement;
        let (mut parts, mut body) = resp.into_parts();
        // Fields kappe does not read: they go back with the body that is served.
        let verbatim = body.take_verbatim();
        forward::prepare_response(&mut parts.headers, ctx.version);
        // The fields addressed to kappe: set aside as the answer was read, or, with
        // --keep-upstream-headers, in its map, travelling on.
        let field = |name: &HeaderName| {
            if e.keep_upstream_headers {
                parts.headers.get(name)
            } else {
                addressed.get(name)
            }
        };
        // Borrowed from the answer's fields; ids read from a body are owned.
        let mut campaign = e
            .campaign_from
            .iter()
            .find_map(|s| s.from_field(field))
            .map(Cow::Borrowed);
        let mut advertiser = e
            .advertiser_from
            .iter()
            .find_map(|s| s.from_field(field))
            .map(Cow::Borrowed);
        let needs_body = (campaign.is_none() && e.campaign_from.iter().any(Source::needs_body))
            || (advertiser.is_none() && e.advertiser_from.iter().any(Source::needs_body));
        let mut body = if needs_body {
            // Boxed: inspecting bodies is rarer than not, and every request's future would
            // carry this one's size.
            let read = Box::pin(tokio::time::timeout(
                self.cfg.upstream_timeout,
                inspect::read_prefix(body, e.max_inspect_bytes),
            ));
            match read.await {
                Err(_) => return Err(ProxyError::UpstreamTimeout),
                Ok(Err(_)) => return Err(ProxyError::UpstreamBroken),
                Ok(Ok(Inspected::TooLarge(prefix, rest))) => {
                    self.metrics
                        .inspect_skipped
                        .with_label_values(&["too_large"])
                        .inc();
                    ProxyBody::Prefixed(Some(prefix), rest)
                }
                Ok(Ok(Inspected::Complete(bytes))) => {
                    let any_json = e
                        .campaign_from
                        .iter()
                        .chain(&e.advertiser_from)
                        .any(|s| matches!(s, Source::Json(_)));
                    let json = any_json
                        .then(|| serde_json::from_slice(&bytes).ok())
                        .flatten();
                    campaign = campaign.or_else(|| {
                        e.campaign_from
                            .iter()
                            .find_map(|s| s.from_body(&bytes, json.as_ref()))
                            .map(Cow::Owned)
                    });
                    advertiser = advertiser.or_else(|| {
                        e.advertiser_from
                            .iter()
                            .find_map(|s| s.from_body(&bytes, json.as_ref()))
                            .map(Cow::Owned)
                    });
                    if campaign.is_none() {
                        self.metrics
                            .inspect_skipped
                            .with_label_values(&["no_match"])
                            .inc();
                    }
                    ProxyBody::full(bytes)
                }
            }
        } else {
            ProxyBody::Stream(body)
        };

        let policy = self.policy.load();
        let retargeting = field(&e.retargeting_header).is_some_and(|v| {
            let v = v.as_bytes();
            v == b"1" || v.eq_ignore_ascii_case(b"true") || v.eq_ignore_ascii_case(b"yes")
        }) || campaign
            .as_deref()
            .is_some_and(|c| policy.is_retargeting_campaign(c));
        let declared = e
            .policy_header
            .as_ref()
            .and_then(field)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::policy::parse_cap_list(v).ok());
        let burn = field(&X_KAPPE_BURN)
            .and_then(|v| v.to_str().ok())
            .filter(|g| local::valid_glob(g))
            .map(str::to_owned);
        if let (Some(glob), Identity::Known { key, .. }) = (&burn, &ctx.identity)
            && let Err(err) = Box::pin(self.store.burn(*key, glob, policy.burn_secs, ctx.now)).await
        {
            self.store_failed(&err);
        }

        // A visitor id issued with a counted impression, set once the campaign's borrow of the
        // answer's fields has ended.
        let mut issue = None;
        let decision = match &campaign {
            None => Decision::PassThrough,
            Some(_) if !policy.applies(retargeting) => Decision::PassThrough,
            Some(_) if retargeting && !ctx.verdict.retargeting_allowed => {
                Decision::Dropped(DropReason::OptOut)
            }
            Some(_) if !ctx.verdict.storage_allowed => Decision::ServedUncounted("no_consent"),
            Some(c) => {
                let (key, issued) = match &ctx.identity {
                    Identity::Known { key, .. } => (Some(*key), None),
                    Identity::Issuable => {
                        let id = identity::new_id();
                        (Some(self.pseudo.key(id.as_bytes())), Some(id))
                    }
                    Identity::None => (None, None),
                };
                match key {
                    None if e.no_id == NoId::Drop => Decision::Dropped(DropReason::NoId),
                    None => Decision::ServedUncounted("no_id"),
                    Some(key) => {
                        let admit = AdmitRequest {
                            campaign: c,
                            campaign_caps: policy.caps_for(c, declared.as_deref()),
                            advertiser: advertiser.as_deref(),
                            advertiser_caps: advertiser
                                .as_deref()
                                .map_or(&[][..], |a| policy.advertiser_caps_for(a)),
                            visitor_caps: &policy.visitor_caps,
                            max_age_secs: policy.max_age_secs,
                        };
                        // The memory store answers without waiting; the Redis store bounds
                        // each operation by --store-timeout itself.
                        match self.store.admit(key, &admit, ctx.now).await {
                            Ok(Admission::Admitted) => {
                                self.metrics.store_up.set(1);
                                issue = issued;
                                Decision::Served
                            }
                            Ok(Admission::Denied(d)) => Decision::Dropped(DropReason::Denied(d)),
                            Err(err) => {
                                self.store_failed(&err);
                                match self.cfg.store.failure {
                                    StoreFailure::Closed => {
                                        Decision::Dropped(DropReason::StoreUnavailable)
                                    }
                                    StoreFailure::Open => {
                                        Decision::ServedUncounted("store_unavailable")
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        // Only a dropped answer's campaign is asked about again.
        let campaign = match decision {
            Decision::Dropped(_) => campaign.map(Cow::into_owned),
            _ => None,
        };
        if let Some(id) = issue {
            self.issue_id(&mut parts.headers, &id, &policy, info);
        }
        if decision == Decision::PassThrough && ctx.identity == Identity::Issuable {
            // A visitor without an id gets one on the first answer (the publisher's page), so the
            // ad requests that follow it, often in parallel, all carry the same id.
            self.issue_id(&mut parts.headers, &identity::new_id(), &policy, info);
        }
        match decision {
            Decision::PassThrough | Decision::ServedUncounted(_) => self.metrics.passthrough.inc(),
            Decision::Served => self.metrics.impressions.inc(),
            Decision::Dropped(r) if e.dry_run => {
                self.metrics
                    .dry_run_would_drop
                    .with_label_values(&[r.label()])
                    .inc();
            }
            Decision::Dropped(r) => self.metrics.dropped.with_label_values(&[r.label()]).inc(),
        }
        body.keep_verbatim(verbatim, &mut parts.headers);
        Ok((Response::from_parts(parts, body), decision, campaign))
    }

    /// Adds the `Set-Cookie` that issues visitor id `id`, living as long as the policy needs.
    fn issue_id(&self, headers: &mut http::HeaderMap, id: &str, policy: &Policy, info: &ConnInfo) {
        let e = &self.cfg.enforcement;
        let max_age = u64::from(
            policy
                .longest_need_secs()
                .clamp(86_400, self.cfg.store.max_retention_secs),
        );
        let secure = info.tls || e.cookie_secure;
        headers.append(
            header::SET_COOKIE,
            identity::set_cookie(&e.visitor_cookie, id, max_age, secure),
        );
        // A shared cache must never keep this answer: it would hand the same id, and so one
        // visitor's counters, to everyone.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        headers.remove(header::EXPIRES);
    }

    /// The answer that replaces a dropped response (`--on-drop`).
    fn drop_answer(&self) -> Response<ProxyBody> {
        let mut resp = match &self.cfg.enforcement.on_drop {
            OnDrop::File { path, body } => {
                let mut resp = Response::new(ProxyBody::full(body.clone()));
                let ct = match path.extension().and_then(|e| e.to_str()) {
                    Some("html" | "htm") => "text/html; charset=utf-8",
                    Some("json") => "application/json",
                    Some("xml") => "application/xml",
                    Some("gif") => "image/gif",
                    Some("png") => "image/png",
                    Some("svg") => "image/svg+xml",
                    _ => "application/octet-stream",
                };
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
                resp
            }
            // Refetch that found nothing servable ends in no-fill too.
            OnDrop::NoFill | OnDrop::Refetch => {
                let mut resp = Response::new(ProxyBody::Empty);
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
        };
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// Counts a store failure and marks the store down until it answers again.
    pub(crate) fn store_failed(&self, err: &StoreError) -> ProxyError {
        tracing::warn!(error = %err, "store operation failed");
        self.metrics
            .store_errors
            .with_label_values(&[err.kind()])
            .inc();
        self.metrics.store_up.set(0);
        ProxyError::StoreUnavailable
    }

    /// Sends one request upstream, `parts` and `body`; the client bounds it by
    /// `--upstream-timeout`. The head is written from `parts`, whose map goes back to be reused.
    async fn send(
        &self,
        parts: &mut http::request::Parts,
        body: UpstreamBody,
        forwarding: &forward::Forwarding,
    ) -> Result<(Response<upstream::ResponseBody>, Addressed), ProxyError> {
        let started = Instant::now();
        let result = self
            .upstream
            .send_at(parts, body, Some(forwarding), started)
            .await;
        self.metrics
            .upstream_duration
            .observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            self.metrics.upstream_up.set(1);
        }
        result
    }
}

/// Reads a dropped response's body to its end in the background (up to a bound), so its pooled
/// upstream connection can be reused instead of closed.
fn drain(body: ProxyBody) {
    const MAX_DRAIN: u64 = 256 * 1024;
    if body.is_end_stream() {
        return;
    }
    if body.size_hint().upper().is_some_and(|n| n > MAX_DRAIN) {
        return;
    }
    tokio::spawn(async move {
        let mut body = body;
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len() as u64);
            if read > MAX_DRAIN {
                break;
            }
        }
    });
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
    decision: Option<Decision>,
) {
    let decision = match decision {
        None => "local".to_owned(),
        Some(Decision::PassThrough) => "passthrough".to_owned(),
        Some(Decision::Served) => "served".to_owned(),
        Some(Decision::ServedUncounted(why)) => format!("uncounted:{why}"),
        Some(Decision::Dropped(r)) => format!("dropped:{}", r.label()),
    };
    use std::io::Write;
    let micros = elapsed.as_micros();
    let line = match format {
        LogFormat::Text => format!(
            "{} {method} {path} {} {micros}us {decision}\n",
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
                "decision": decision,
            })
            .to_string();
            s.push('\n');
            s
        }
    };
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}
