//! The status page at `GET /` on the admin port, in the spirit of HAProxy's stats page: request
//! and drop counts, store size, upstream and store health, and the policy in force. Plain HTML
//! with no external assets; it refreshes itself every five seconds.

use std::fmt::Write;

use crate::app::Shared;
use crate::metrics::DROP_REASONS;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the page from the live metrics.
pub fn render(shared: &Shared) -> String {
    shared.refresh_gauges();
    let m = &shared.metrics;
    let uptime = shared.started.elapsed().as_secs().max(1);
    let impressions = m.impressions.get();
    let passthrough = m.passthrough.get();
    let mut drops = String::new();
    let mut total_drops = 0;
    for reason in DROP_REASONS {
        let n = m.dropped.with_label_values(&[reason]).get();
        total_drops += n;
        let _ = write!(drops, "<tr><td>{reason}</td><td>{n}</td></tr>");
    }
    let health = |up: i64| {
        if up == 1 {
            "<b class=ok>up</b>"
        } else {
            "<b class=bad>down</b>"
        }
    };
    let policy = shared.policy.load();
    format!(
        r#"<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1">
<meta http-equiv=refresh content=5><title>kappe status</title>
<style>body{{font:14px system-ui,sans-serif;margin:1.5em;max-width:60em}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:.3em .8em;text-align:left}}th{{background:#eee}}.ok{{color:#070}}.bad{{color:#b00}}
pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>kappe {version}</h1>
<p>Up {uptime} s. Upstream {upstream}: {up_up}. Store {store}: {store_up}.</p>
<h2>Traffic</h2><table><tr><th>what</th><th>total</th><th>per second (average)</th></tr>
<tr><td>impressions admitted</td><td>{impressions}</td><td>{imp_rate:.2}</td></tr>
<tr><td>responses dropped</td><td>{total_drops}</td><td>{drop_rate:.2}</td></tr>
<tr><td>passed through</td><td>{passthrough}</td><td>{pass_rate:.2}</td></tr>
<tr><td>open connections</td><td>{conns}</td><td></td></tr></table>
<h2>Drops by reason</h2><table><tr><th>reason</th><th>total</th></tr>{drops}</table>
<h2>Store</h2><table><tr><td>visitors</td><td>{visitors} of {max_visitors}</td></tr>
<tr><td>estimated bytes</td><td>{bytes}</td></tr></table>
<h2>Policy in force</h2><pre>{policy}</pre>
<p><a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a></p></body></html>"#,
        version = env!("CARGO_PKG_VERSION"),
        upstream = esc(shared.cfg.upstream_authority.as_str()),
        up_up = health(m.upstream_up.get()),
        store = esc(&shared.cfg.store.url),
        store_up = health(m.store_up.get()),
        imp_rate = impressions as f64 / uptime as f64,
        drop_rate = total_drops as f64 / uptime as f64,
        pass_rate = passthrough as f64 / uptime as f64,
        conns = m.connections_active.get(),
        visitors = m.store_visitors.get(),
        max_visitors = m.store_max_visitors.get(),
        bytes = m.store_bytes.get(),
        policy = esc(&policy.describe()),
    )
}
