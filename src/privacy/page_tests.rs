//! Renderer tests: language negotiation, escaping, bars against caps, forms, JSON shape.

use super::*;
use crate::privacy::{Signal, Signals, Verdict};
use crate::store::BurnRecord;

const NOW: UnixSecs = 1_780_000_000;

fn verdict(signals: &[Signal], own_cookie: bool) -> Verdict {
    let signals: Signals = signals.iter().copied().collect();
    let opted_out = signals.any_opt_out();
    Verdict {
        opted_out,
        signals,
        retargeting_allowed: !opted_out,
        storage_allowed: !opted_out,
        own_cookie,
    }
}

fn report() -> VisitorReport {
    VisitorReport {
        campaigns: vec![CampaignRecord {
            campaign: "<script>alert('x')</script>&\"".into(),
            // two in the last day, one a week ago
            impressions: vec![NOW - 7 * 86_400, NOW - 3600, NOW - 60],
            first_seen: NOW - 7 * 86_400,
            forget_at: NOW + 3 * 86_400,
        }],
        advertisers: vec![CampaignRecord {
            campaign: "adv<1>".into(),
            impressions: vec![NOW - 60],
            first_seen: NOW - 60,
            forget_at: NOW + 5 * 3600,
        }],
        visitor_impressions: vec![NOW - 3600, NOW - 60],
        burns: vec![BurnRecord {
            pattern: "shoes-*".into(),
            until: NOW + 86_400,
        }],
    }
}

fn caps_for(_: &str) -> Vec<Cap> {
    vec![
        Cap {
            limit: 3,
            window_secs: 86_400,
        },
        Cap {
            limit: 2,
            window_secs: 3600 * 2,
        },
    ]
}

const VISITOR_CAPS: &[Cap] = &[Cap {
    limit: 10,
    window_secs: 86_400,
}];

fn view<'a>(v: &'a Verdict, r: &'a VisitorReport) -> PageView<'a> {
    PageView {
        verdict: v,
        report: r,
        caps_for: &caps_for,
        visitor_caps: VISITOR_CAPS,
        now: NOW,
        privacy_path: "/_kappe",
        has_visitor_id: true,
    }
}

/// Accept-Language picks German or English by quality; English is the fallback.
#[test]
fn negotiates_language() {
    assert_eq!(negotiate(None), Lang::En);
    assert_eq!(negotiate(Some("de-DE,de;q=0.9,en;q=0.8")), Lang::De);
    assert_eq!(negotiate(Some("en-US,en;q=0.9,de;q=0.8")), Lang::En);
    assert_eq!(negotiate(Some("fr-FR, de;q=0.5")), Lang::De);
    assert_eq!(negotiate(Some("en;q=0.4, DE;q=0.6")), Lang::De);
    assert_eq!(negotiate(Some("de;q=0, en")), Lang::En);
    assert_eq!(negotiate(Some("fr")), Lang::En);
    assert_eq!(negotiate(Some("de;q=garbage, en;q=0.1")), Lang::En);
    assert_eq!(negotiate(Some(&"x,".repeat(10_000))), Lang::En);
}

/// Campaign ids from the ad server are escaped; no raw markup reaches the page.
#[test]
fn escapes_campaign_ids() {
    let (v, r) = (verdict(&[], false), report());
    let html = render_page(Lang::En, &view(&v, &r));
    assert!(!html.contains("<script>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
    assert!(html.contains("adv&lt;1&gt;"));
    let odd_path = PageView {
        privacy_path: "/p\"><x",
        ..view(&v, &r)
    };
    assert!(!render_page(Lang::En, &odd_path).contains("\"><x"));
}

/// Each cap is a bar with the count in its window against the limit; a full cap is marked.
#[test]
fn draws_bars_against_caps() {
    let (v, r) = (verdict(&[], false), report());
    let html = render_page(Lang::En, &view(&v, &r));
    assert!(html.contains("2/3 shown in 1d"), "{html}");
    assert!(html.contains("width:66%"));
    assert!(html.contains("2/2 shown in 2h"));
    assert!(html.contains("fill full\" style=\"width:100%"));
    assert!(html.contains("2/10 shown in 1d"), "visitor-wide cap");
    assert!(html.contains("in 3 days (2026-05-31"), "{html}");
    assert!(html.contains("shoes-*"));
}

/// English forms: opt-out, and delete via POST /me with _method=DELETE; no JS, no assets.
#[test]
fn english_page_has_forms_and_no_external_assets() {
    let (v, r) = (verdict(&[], false), report());
    let html = render_page(Lang::En, &view(&v, &r));
    assert!(html.starts_with("<!DOCTYPE html><html lang=\"en\">"));
    assert!(html.contains("action=\"/_kappe/opt-out\""));
    assert!(html.contains(">Stop personalised ads</button>"));
    assert!(html.contains("action=\"/_kappe/me\""));
    assert!(html.contains("name=\"_method\" value=\"DELETE\""));
    assert!(html.contains(">Delete my data</button>"));
    assert!(!html.contains("Allow again"));
    assert!(html.contains("name=\"viewport\""));
    for banned in ["<script", "src=", "http://", "https://", "<link"] {
        assert!(!html.contains(banned), "{banned}");
    }
}

/// German page for an opted-out visitor: the signals by name and "Wieder erlauben".
#[test]
fn german_page_for_opted_out_visitor() {
    let v = verdict(&[Signal::OwnCookie, Signal::Gpc], true);
    let r = VisitorReport::default();
    let html = render_page(
        Lang::De,
        &PageView {
            has_visitor_id: false,
            ..view(&v, &r)
        },
    );
    assert!(html.contains("<html lang=\"de\">"));
    assert!(html.contains("abgeschaltet, wegen:"));
    assert!(html.contains("Ihrer Wahl auf dieser Seite"));
    assert!(html.contains("Global Privacy Control"));
    assert!(html.contains("action=\"/_kappe/opt-in\""));
    assert!(html.contains(">Wieder erlauben</button>"));
    assert!(!html.contains("Personalisierte Werbung beenden</button>"));
    assert!(html.contains("Über Sie ist nichts gespeichert."));
    assert!(!html.contains("Meine Daten löschen"), "nothing to delete");
    let with_id = render_page(Lang::De, &view(&verdict(&[], false), &report()));
    assert!(with_id.contains(">Personalisierte Werbung beenden</button>"));
    assert!(with_id.contains(">Meine Daten löschen</button>"));
}

/// Without consent (TCF) the page says so instead of claiming ads are allowed.
#[test]
fn no_consent_is_stated() {
    let v = Verdict {
        retargeting_allowed: false,
        storage_allowed: false,
        ..verdict(&[Signal::TcfMissing], false)
    };
    let r = VisitorReport::default();
    let html = render_page(Lang::En, &view(&v, &r));
    assert!(html.contains("no valid consent"));
    assert!(!html.contains("Personalised ads are allowed."));
}

/// The JSON has the documented shape, with counts per cap window.
#[test]
fn me_json_shape() {
    let (v, r) = (verdict(&[Signal::Dnt], false), report());
    let j = me_json(&view(&v, &r));
    assert_eq!(j["opted_out"], true);
    assert_eq!(j["signals"], serde_json::json!(["dnt"]));
    let c = &j["campaigns"][0];
    assert_eq!(c["campaign"], "<script>alert('x')</script>&\"");
    assert_eq!(c["impressions"].as_array().unwrap().len(), 3);
    assert_eq!(c["caps"][0]["limit"], 3);
    assert_eq!(c["caps"][0]["window_secs"], 86_400);
    assert_eq!(c["caps"][0]["in_window"], 2);
    assert_eq!(c["forget_at"], NOW + 3 * 86_400);
    assert_eq!(j["visitor_caps"][0]["in_window"], 2);
    assert_eq!(j["burns"][0]["pattern"], "shoes-*");
}

/// gpc.json is valid JSON declaring GPC support.
#[test]
fn gpc_json_is_valid() {
    let v: serde_json::Value = serde_json::from_str(gpc_json()).unwrap();
    assert_eq!(v["gpc"], true);
    assert_eq!(v["lastUpdate"].as_str().unwrap().len(), 10);
}

/// The calendar conversion agrees with known dates.
#[test]
fn utc_dates() {
    assert_eq!(utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
    assert_eq!(utc(1_772_323_200), "2026-03-01 00:00 UTC");
    assert_eq!(relative(Lang::De, 0, 7200), "in 2 Stunden");
    assert_eq!(relative(Lang::En, 100, 50), "in about a minute");
}
