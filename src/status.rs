//! The status page at `GET /` on the admin port, in the spirit of HAProxy's stats page: request,
//! impression and drop counts with live and average rates, drops by reason, store size, upstream
//! and store health, and the policy in force. Plain HTML with no external assets and no script;
//! it refreshes itself every five seconds, carrying the counters it showed in the refresh URL so
//! that the next view can show the rates of the last few seconds.

use std::fmt::Write;

use crate::app::Shared;
use crate::metrics::DROP_REASONS;
use crate::privacy::esc;

/// The counters behind the page's rates at one moment. The page carries the sample in its refresh
/// URL, so the next view shows rates over the last few seconds ("live") without kappe keeping any
/// state per viewer; the first view, or one after kappe restarted, shows averages only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Milliseconds since this kappe started (monotonic, so wall-clock jumps do not matter).
    pub at_ms: u64,
    pub requests: u64,
    pub impressions: u64,
    pub drops: u64,
    pub passthrough: u64,
}

/// Per-second rates between two samples, in the order of [`Sample`]'s counters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub requests: f64,
    pub impressions: f64,
    pub drops: f64,
    pub passthrough: f64,
}

impl Sample {
    /// The sample as a query string (without `?`).
    pub fn to_query(&self) -> String {
        format!(
            "at={}&req={}&imp={}&drop={}&pass={}",
            self.at_ms, self.requests, self.impressions, self.drops, self.passthrough
        )
    }

    /// Reads a sample from a query string; `None` unless all five numbers are there. The query
    /// is whatever the viewer sends, so anything malformed simply means "no earlier sample".
    pub fn from_query(query: &str) -> Option<Sample> {
        let get = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        Some(Sample {
            at_ms: get("at")?,
            requests: get("req")?,
            impressions: get("imp")?,
            drops: get("drop")?,
            passthrough: get("pass")?,
        })
    }

    /// Rates from `earlier` to `self`; `None` when `earlier` is not strictly earlier or a counter
    /// went backwards (kappe restarted between the two views, or the query was made up).
    pub fn rates_since(&self, earlier: &Sample) -> Option<Rates> {
        if earlier.at_ms >= self.at_ms
            || earlier.requests > self.requests
            || earlier.impressions > self.impressions
            || earlier.drops > self.drops
            || earlier.passthrough > self.passthrough
        {
            return None;
        }
        let secs = (self.at_ms - earlier.at_ms) as f64 / 1000.0;
        let rate = |now: u64, then: u64| (now - then) as f64 / secs;
        Some(Rates {
            requests: rate(self.requests, earlier.requests),
            impressions: rate(self.impressions, earlier.impressions),
            drops: rate(self.drops, earlier.drops),
            passthrough: rate(self.passthrough, earlier.passthrough),
        })
    }
}

/// Bytes in the largest binary unit that keeps the number at least 1.
fn human_bytes(n: i64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.max(0) as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Renders the page from the live metrics. `query` is the request's query string: the previous
/// view's [`Sample`], from which the live rates are computed.
pub fn render(shared: &Shared, query: Option<&str>) -> String {
    shared.refresh_gauges();
    let m = &shared.metrics;
    let elapsed = shared.started.elapsed();
    let uptime = elapsed.as_secs_f64().max(1.0);
    let impressions = m.impressions.get();
    let passthrough = m.passthrough.get();
    let requests = m.request_duration.get_sample_count();
    let mut drops = String::new();
    let mut total_drops = 0;
    for reason in DROP_REASONS {
        let n = m.dropped.with_label_values(&[reason]).get();
        total_drops += n;
        let _ = write!(drops, "<tr><td>{reason}</td><td>{n}</td></tr>");
    }
    let upstream_errors: u64 = ["connect", "timeout", "broken"]
        .iter()
        .map(|kind| m.upstream_errors.with_label_values(&[kind]).get())
        .sum();
    let now = Sample {
        at_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        requests,
        impressions,
        drops: total_drops,
        passthrough,
    };
    let live = query
        .and_then(Sample::from_query)
        .and_then(|earlier| Some((now.rates_since(&earlier)?, now.at_ms - earlier.at_ms)));
    let live_head = match live {
        Some((_, ms)) => format!("per second, last {:.1} s", ms as f64 / 1000.0),
        None => "per second, last view".to_owned(),
    };
    let live_cell = |pick: fn(&Rates) -> f64| match &live {
        Some((r, _)) => format!("{:.2}", pick(r)),
        None => "–".to_owned(),
    };
    let health = |up: i64| {
        if up == 1 {
            "<b class=ok>up</b>"
        } else {
            "<b class=bad>down</b>"
        }
    };
    // The upstream gauge is 0 until the first exchange or readiness probe: say so rather than
    // call an upstream nobody has asked yet "down".
    let upstream_health = if m.upstream_up.get() == 0
        && upstream_errors == 0
        && m.upstream_duration.get_sample_count() == 0
    {
        "<b class=idle>not asked yet</b>"
    } else {
        health(m.upstream_up.get())
    };
    let policy = shared.policy.load();
    format!(
        r#"<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1">
<meta http-equiv=refresh content="5;url=?{next}"><title>kappe status</title>
<style>body{{font:14px system-ui,sans-serif;margin:1em 1.5em;max-width:64em}}h1{{margin:.2em 0}}h2{{font-size:1.1em;margin:.8em 0 .2em}}
table{{border-collapse:collapse;margin:.3em 0 .8em}}td,th{{border:1px solid #ccc;padding:.2em .7em;text-align:left}}th{{background:#eee}}
td:nth-child(n+2){{text-align:right}}.ok{{color:#070}}.bad{{color:#b00}}.idle{{color:#666}}
.cols{{display:flex;gap:0 2.5em;flex-wrap:wrap;align-items:flex-start}}pre{{background:#f6f6f6;padding:.6em 1em;margin:.3em 0}}</style></head><body>
<h1>kappe {version}</h1>
<p>Up {uptime_s} s. Upstream {upstream}: {up_up}. Store {store}: {store_up}.</p>
<h2>Traffic</h2><table id=traffic><tr><th>what</th><th>total</th><th>{live_head}</th><th>per second, average</th></tr>
<tr><td>requests answered</td><td>{requests}</td><td>{req_live}</td><td>{req_rate:.2}</td></tr>
<tr><td>impressions admitted</td><td>{impressions}</td><td>{imp_live}</td><td>{imp_rate:.2}</td></tr>
<tr><td>responses dropped</td><td>{total_drops}</td><td>{drop_live}</td><td>{drop_rate:.2}</td></tr>
<tr><td>passed through</td><td>{passthrough}</td><td>{pass_live}</td><td>{pass_rate:.2}</td></tr>
<tr><td>upstream errors</td><td>{upstream_errors}</td><td></td><td></td></tr>
<tr><td>open connections</td><td>{conns}</td><td></td><td></td></tr></table>
<div class=cols><div><h2>Drops by reason</h2><table id=drops><tr><th>reason</th><th>total</th></tr>{drops}</table></div>
<div><h2>Store</h2><table id=store><tr><td>visitors</td><td>{visitors} of {max_visitors}</td></tr>
<tr><td>estimated size</td><td>{bytes}</td></tr></table>
<h2>Policy in force</h2><pre id=policy>{policy}</pre></div></div>
<p><a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a></p></body></html>"#,
        version = env!("CARGO_PKG_VERSION"),
        next = now.to_query(),
        uptime_s = elapsed.as_secs(),
        upstream = esc(shared.cfg.upstream_authority.as_str()),
        up_up = upstream_health,
        store = esc(&shared.cfg.store.url),
        store_up = health(m.store_up.get()),
        req_live = live_cell(|r| r.requests),
        imp_live = live_cell(|r| r.impressions),
        drop_live = live_cell(|r| r.drops),
        pass_live = live_cell(|r| r.passthrough),
        req_rate = requests as f64 / uptime,
        imp_rate = impressions as f64 / uptime,
        drop_rate = total_drops as f64 / uptime,
        pass_rate = passthrough as f64 / uptime,
        conns = m.connections_active.get(),
        visitors = m.store_visitors.get(),
        max_visitors = m.store_max_visitors.get(),
        bytes = human_bytes(m.store_bytes.get()),
        policy = esc(&policy.describe()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, n: u64) -> Sample {
        Sample {
            at_ms,
            requests: n,
            impressions: n / 2,
            drops: n / 4,
            passthrough: n / 8,
        }
    }

    /// The sample written into the refresh URL reads back unchanged.
    #[test]
    fn sample_round_trips_through_the_refresh_query() {
        let s = sample(12_345, 800);
        assert_eq!(Sample::from_query(&s.to_query()), Some(s));
    }

    /// Rates are the counters' growth over the time between two views.
    #[test]
    fn rates_are_growth_over_the_interval() {
        let r = sample(7_000, 800).rates_since(&sample(5_000, 400)).unwrap();
        assert_eq!(r.requests, 200.0);
        assert_eq!(r.impressions, 100.0);
        assert_eq!(r.drops, 50.0);
        assert_eq!(r.passthrough, 25.0);
    }

    /// After a restart the counters and the clock start again: no rate rather than a wrong one.
    #[test]
    fn no_rate_after_a_restart_or_from_a_made_up_query() {
        let now = sample(2_000, 100);
        assert_eq!(now.rates_since(&sample(9_000, 50)), None);
        assert_eq!(now.rates_since(&sample(1_000, 5_000)), None);
        assert_eq!(now.rates_since(&now), None);
        assert_eq!(Sample::from_query("at=1&req=2&imp=x&drop=4&pass=5"), None);
        assert_eq!(Sample::from_query("at=1&req=2"), None);
        assert_eq!(Sample::from_query(""), None);
    }

    /// Store sizes are shown in binary units.
    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(543_163_518), "518.0 MiB");
    }
}
