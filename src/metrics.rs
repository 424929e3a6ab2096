//! Every metric family kappe exports, in one owned registry. Labels come from small fixed sets
//! (status class, reason, signal, kind): never a visitor id, never a campaign name.
//!
//! Counters with a label are resolved to their children once, at start-up, so the request path
//! increments an atomic without hashing label values.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The `reason` labels of drops.
pub const DROP_REASONS: &[&str] = &[
    "cap",
    "advertiser_cap",
    "visitor_cap",
    "max_age",
    "burned",
    "no_id",
    "optout",
    "store_unavailable",
];

/// The metrics of one kappe process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: [IntCounter; 5],
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub upstream_errors: IntCounterVec,
    pub upstream_up: IntGauge,
    pub connections_active: IntGauge,
    pub connections_rejected: IntCounter,
    pub impressions: IntCounter,
    pub dropped: IntCounterVec,
    pub passthrough: IntCounter,
    pub dry_run_would_drop: IntCounterVec,
    pub inspect_skipped: IntCounterVec,
    pub refetch: IntCounter,
    pub privacy_signals: IntCounterVec,
    pub store_visitors: IntGauge,
    pub store_max_visitors: IntGauge,
    pub store_bytes: IntGauge,
    pub store_evictions: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub store_up: IntGauge,
    pub config_reloads: IntCounterVec,
    pub build_info: IntGaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric name");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric name");
    r.register(Box::new(c.clone())).expect("registered once");
    // Touch every label value so the series exist (at zero) from the first scrape.
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric name");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str) -> Histogram {
    let buckets = vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ];
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric name");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family in a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let requests_vec = counter_vec(
            &r,
            "kappe_http_requests_total",
            "Requests answered on the visitor port, by status class.",
            "code",
            &["1xx", "2xx", "3xx", "4xx", "5xx"],
        );
        let requests =
            ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| requests_vec.with_label_values(&[c]));
        let build_info = IntGaugeVec::new(
            Opts::new("kappe_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("valid metric name");
        r.register(Box::new(build_info.clone()))
            .expect("registered once");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            requests,
            request_duration: histogram(
                &r,
                "kappe_request_duration_seconds",
                "Time from request head to response head on the visitor port.",
            ),
            upstream_duration: histogram(
                &r,
                "kappe_upstream_duration_seconds",
                "Time the upstream took to answer with its headers.",
            ),
            upstream_errors: counter_vec(
                &r,
                "kappe_upstream_errors_total",
                "Upstream failures by kind.",
                "kind",
                &["connect", "timeout", "broken"],
            ),
            upstream_up: gauge(
                &r,
                "kappe_upstream_up",
                "1 when the last upstream exchange worked.",
            ),
            connections_active: gauge(&r, "kappe_connections_active", "Open visitor connections."),
            connections_rejected: counter(
                &r,
                "kappe_connections_rejected_total",
                "Visitor connections refused at --max-connections.",
            ),
            impressions: counter(
                &r,
                "kappe_impressions_total",
                "Capped impressions admitted and counted.",
            ),
            dropped: counter_vec(
                &r,
                "kappe_dropped_total",
                "Responses dropped, by reason.",
                "reason",
                DROP_REASONS,
            ),
            passthrough: counter(
                &r,
                "kappe_passthrough_total",
                "Responses passed through without a cap decision.",
            ),
            dry_run_would_drop: counter_vec(
                &r,
                "kappe_dry_run_would_drop_total",
                "Responses that would have been dropped, in --dry-run.",
                "reason",
                DROP_REASONS,
            ),
            inspect_skipped: counter_vec(
                &r,
                "kappe_inspect_skipped_total",
                "Responses whose body could not be inspected for a campaign.",
                "reason",
                &["too_large", "no_match"],
            ),
            refetch: counter(
                &r,
                "kappe_refetch_total",
                "Extra upstream calls made by --on-drop refetch.",
            ),
            privacy_signals: counter_vec(
                &r,
                "kappe_privacy_signals_total",
                "Privacy signals seen on requests, by signal.",
                "signal",
                &[],
            ),
            store_visitors: gauge(&r, "kappe_store_visitors", "Visitors held by the store."),
            store_max_visitors: gauge(&r, "kappe_store_max_visitors", "The store's visitor bound."),
            store_bytes: gauge(
                &r,
                "kappe_store_bytes",
                "Bytes the store estimates it holds.",
            ),
            store_evictions: counter_vec(
                &r,
                "kappe_store_evictions_total",
                "Visitors removed from the store, by reason.",
                "reason",
                &["expired", "capacity"],
            ),
            store_errors: counter_vec(
                &r,
                "kappe_store_errors_total",
                "Store operations that failed, by kind.",
                "kind",
                &["unavailable", "timeout"],
            ),
            store_up: gauge(&r, "kappe_store_up", "1 when the store can be reached."),
            config_reloads: counter_vec(
                &r,
                "kappe_config_reloads_total",
                "Configuration reloads, by result.",
                "result",
                &["ok", "error"],
            ),
            build_info,
            registry: r,
        }
    }

    /// Counts one answered request by its status class.
    pub fn count_status(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[class].inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}
