//! `kappe demo`: a small built-in sample ad server (an HTML page with ad slots, and campaigns of
//! which some are retargeting, labelled with `X-Campaign-Id` and `X-Retargeting: 1`) and kappe in
//! front of it, so a newcomer sees caps and the privacy page work in one command.
//!
//! The sample ad server honours `X-Kappe-Exclude`, as a cooperating ad server would: after a
//! campaign is capped, kappe asks again and the slot is filled with the next campaign.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::server::VisitorBody;
use http::{Request, Response, StatusCode, header};

use crate::proxy::body::ProxyBody;
use crate::proxy::forward::list_items;
use crate::server::ConnInfo;

/// A campaign of the sample ad server.
struct Campaign {
    id: &'static str,
    retargeting: bool,
    text: &'static str,
    colour: &'static str,
}

const CAMPAIGNS: &[Campaign] = &[
    Campaign {
        id: "rt-shoes",
        retargeting: true,
        text: "Still thinking about those running shoes? They are waiting in your basket.",
        colour: "#fde2e4",
    },
    Campaign {
        id: "rt-travel",
        retargeting: true,
        text: "Your trip to Lisbon: prices for the dates you looked at.",
        colour: "#e2ecfd",
    },
    Campaign {
        id: "ctx-coffee",
        retargeting: false,
        text: "Fresh coffee beans from a local roaster, for everyone reading this page.",
        colour: "#eef5e1",
    },
    Campaign {
        id: "ctx-books",
        retargeting: false,
        text: "New novels this week at the corner bookshop.",
        colour: "#f5efe1",
    },
];

/// Which campaigns each slot tries, in order.
fn slot_order(slot: &str) -> &'static [usize] {
    match slot {
        "top" => &[0, 1, 2, 3],
        "side" => &[1, 0, 3, 2],
        _ => &[2, 3],
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

static SERVED: AtomicU64 = AtomicU64::new(0);

const PAGE: &str = r#"<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1"><title>kappe demo: The Daily Example</title>
<style>body{font:16px Georgia,serif;margin:0 auto;max-width:52em;padding:1em}
iframe{border:1px dashed #999;width:100%;height:7.5em;margin:.5em 0}
.cols{display:flex;gap:1em;flex-wrap:wrap}.cols>*{flex:1 1 20em}
footer{margin-top:2em;font:14px system-ui,sans-serif}</style></head><body>
<h1>The Daily Example</h1>
<p>A sample publisher page. Each box below is an ad slot filled by the sample ad server through kappe.
Reload a few times: a retargeting campaign is shown at most as often as the cap allows, then the slot
gets the next campaign.</p>
<iframe id=slot-top title="ad slot top" src="/ad?slot=top"></iframe>
<div class=cols><article><h2>Local news</h2><p>The town council met on Tuesday to discuss the new bicycle
lanes. Residents welcomed the plans.</p></article>
<aside><iframe id=slot-side title="ad slot side" src="/ad?slot=side"></iframe></aside></div>
<iframe id=slot-bottom title="ad slot bottom" src="/ad?slot=bottom"></iframe>
<footer><a id=privacy-link href="/_kappe/privacy">Your ad privacy: what is stored about you, opt out, delete</a></footer>
</body></html>"#;

fn html(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Answers one request to the sample ad server.
pub async fn handle(req: Request<VisitorBody>, _info: ConnInfo) -> Response<ProxyBody> {
    match req.uri().path() {
        "/" => html(StatusCode::OK, PAGE.to_owned()),
        "/ad" => {
            let query = req.uri().query().unwrap_or("");
            let slot = query_param(query, "slot").unwrap_or("top");
            let excluded: Vec<&str> = list_items(req.headers(), "x-kappe-exclude").collect();
            let Some(c) = slot_order(slot)
                .iter()
                .map(|i| &CAMPAIGNS[*i])
                .find(|c| !excluded.contains(&c.id))
            else {
                let mut resp = Response::new(ProxyBody::Empty);
                *resp.status_mut() = StatusCode::NO_CONTENT;
                return resp;
            };
            let n = SERVED.fetch_add(1, Ordering::Relaxed);
            let kind = if c.retargeting {
                "retargeting"
            } else {
                "contextual"
            };
            let body = format!(
                "<!doctype html><html><body style=\"margin:0;font:15px system-ui,sans-serif\">\
<div class=\"ad {kind}\" data-campaign=\"{id}\" style=\"background:{colour};padding:1em;height:5em\">\
<small>Ad ({kind}, campaign {id}, #{n})</small><p>{text}</p></div></body></html>",
                id = c.id,
                colour = c.colour,
                text = c.text,
            );
            let mut resp = html(StatusCode::OK, body);
            let h = resp.headers_mut();
            h.insert("x-campaign-id", header::HeaderValue::from_static(c.id));
            if c.retargeting {
                h.insert("x-retargeting", header::HeaderValue::from_static("1"));
            }
            resp
        }
        _ => html(StatusCode::NOT_FOUND, "<p>not found</p>".to_owned()),
    }
}

/// The defaults `kappe demo` adds where the operator gave no value: small caps so that a few
/// reloads show them, refetch so that a capped slot gets the next campaign, and the decision
/// header so it can be seen in the browser's developer tools.
pub fn demo_defaults(upstream: &str) -> crate::cli::Args {
    crate::cli::Args {
        upstream: Some(upstream.to_owned()),
        cap: vec!["3/1h".to_owned()],
        visitor_cap: vec!["5/1h".to_owned()],
        on_drop: Some("refetch".to_owned()),
        refetch_max: Some("3".to_owned()),
        explain_header: Some(true),
        ..Default::default()
    }
}
