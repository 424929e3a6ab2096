//! The visitor-facing privacy pages: `GET {privacy_path}/privacy` (HTML, English or German),
//! `GET {privacy_path}/me` (the same as JSON) and `/.well-known/gpc.json`.
//!
//! Pure renderers: the proxy routes, reads the store and handles the POSTs; this module turns a
//! [`PageView`] into text. The HTML has no external assets and no JavaScript, uses only forms
//! for the three actions, fits a phone screen, and escapes every value it did not write itself
//! (campaign ids come from the ad server). "Delete my data" is a form POST to
//! `{privacy_path}/me` with a hidden `_method=DELETE` field, so the same resource answers a real
//! `DELETE {privacy_path}/me` from scripts.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Signal, Verdict};
use crate::clock::UnixSecs;
use crate::policy::Cap;
use crate::store::{CampaignRecord, VisitorReport};

/// The page language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
}

/// Items of `Accept-Language` looked at; the header is visitor-controlled.
const MAX_LANGUAGE_ITEMS: usize = 32;

/// Picks German or English from `Accept-Language` by quality (`q`), first listed on a tie;
/// English when neither is acceptable or the header is absent.
pub fn negotiate(accept_language: Option<&str>) -> Lang {
    let mut best: Option<(Lang, u16)> = None;
    for item in accept_language
        .unwrap_or("")
        .split(',')
        .take(MAX_LANGUAGE_ITEMS)
    {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let primary = tag.split('-').next().unwrap_or("");
        let lang = if primary.eq_ignore_ascii_case("de") {
            Lang::De
        } else if primary.eq_ignore_ascii_case("en") {
            Lang::En
        } else {
            continue;
        };
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(1000, parse_q);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((lang, q));
        }
    }
    best.map_or(Lang::En, |(l, _)| l)
}

/// A quality value in thousandths; malformed values count as 0 (not acceptable).
fn parse_q(s: &str) -> u16 {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole = match int {
        "0" => 0u16,
        "1" => 1000,
        _ => return 0,
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let mut thousandths = 0u16;
    for b in frac.bytes().chain(std::iter::repeat(b'0')).take(3) {
        thousandths = thousandths * 10 + u16::from(b - b'0');
    }
    (whole + thousandths).min(1000)
}

/// Everything a privacy page shows.
pub struct PageView<'a> {
    pub verdict: &'a Verdict,
    pub report: &'a VisitorReport,
    /// The caps that apply to a campaign (from the policy).
    pub caps_for: &'a dyn Fn(&str) -> Vec<Cap>,
    pub visitor_caps: &'a [Cap],
    pub now: UnixSecs,
    /// `--privacy-path`, such as `/_kappe`.
    pub privacy_path: &'a str,
    /// The request carried a visitor id cookie.
    pub has_visitor_id: bool,
}

/// Impressions in the cap's window `(now - W, now]`, the window the store admits by.
fn in_window(impressions: &[UnixSecs], cap: Cap, now: UnixSecs) -> usize {
    let from = now.saturating_sub(u64::from(cap.window_secs));
    impressions
        .iter()
        .filter(|&&t| t > from && t <= now)
        .count()
}

fn cap_json(impressions: &[UnixSecs], caps: &[Cap], now: UnixSecs) -> Value {
    caps.iter()
        .map(|&c| {
            json!({
                "limit": c.limit,
                "window_secs": c.window_secs,
                "window": crate::policy::format_duration(c.window_secs),
                "in_window": in_window(impressions, c, now),
            })
        })
        .collect()
}

/// `GET {privacy_path}/me`: what is stored about the visitor, and the privacy verdict, as JSON.
pub fn me_json(view: &PageView<'_>) -> Value {
    let v = view.verdict;
    let now = view.now;
    let record = |r: &CampaignRecord, caps: &[Cap]| {
        json!({
            "campaign": r.campaign,
            "impressions": r.impressions,
            "caps": cap_json(&r.impressions, caps, now),
            "first_seen": r.first_seen,
            "forget_at": r.forget_at,
        })
    };
    let campaigns: Vec<Value> = view
        .report
        .campaigns
        .iter()
        .map(|r| record(r, &(view.caps_for)(&r.campaign)))
        .collect();
    let advertisers: Vec<Value> = view
        .report
        .advertisers
        .iter()
        .map(|r| record(r, &[]))
        .collect();
    json!({
        "opted_out": v.opted_out,
        "signals": v.signals.iter().map(Signal::label).collect::<Vec<_>>(),
        "retargeting_allowed": v.retargeting_allowed,
        "storage_allowed": v.storage_allowed,
        "has_visitor_id": view.has_visitor_id,
        "campaigns": campaigns,
        "advertisers": advertisers,
        "visitor_impressions": view.report.visitor_impressions,
        "visitor_caps": cap_json(&view.report.visitor_impressions, view.visitor_caps, now),
        "burns": view.report.burns,
        "now": now,
    })
}

/// `GET /.well-known/gpc.json`: kappe honours GPC.
pub fn gpc_json() -> &'static str {
    r#"{"gpc": true, "lastUpdate": "2026-11-29"}"#
}

/// Escapes text for HTML element content and double- or single-quoted attributes.
/// Escapes text for HTML element content and quoted attributes; borrows when nothing needs it.
pub fn esc(s: &str) -> Cow<'_> {
    if !s
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\''))
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
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
    std::borrow::Cow::Owned(out)
}

type Cow<'a> = std::borrow::Cow<'a, str>;

/// Texts of the page, per language.
struct Texts {
    lang: &'static str,
    title: &'static str,
    intro: &'static str,
    opted_out_by: &'static str,
    not_opted_out: &'static str,
    no_consent: &'static str,
    nothing_stored: &'static str,
    campaign: &'static str,
    shown: &'static str,
    forgotten: &'static str,
    advertisers: &'static str,
    all_campaigns: &'static str,
    paused: &'static str,
    until: &'static str,
    stop: &'static str,
    allow: &'static str,
    allow_note: &'static str,
    delete: &'static str,
    delete_note: &'static str,
    window: &'static str,
}

const EN: Texts = Texts {
    lang: "en",
    title: "Your privacy and personalised ads",
    intro: "This page shows everything this site's ad frequency limiter stores about your browser. \
            It stores no name and no address: only a random id in a cookie and when you saw which \
            campaign, so that no ad follows you too often.",
    opted_out_by: "Personalised ads are off for you, because of:",
    not_opted_out: "Personalised ads are allowed.",
    no_consent: "Personalised ads are off: there is no valid consent for them.",
    nothing_stored: "Nothing is stored about you.",
    campaign: "Campaign",
    shown: "shown",
    forgotten: "Forgotten",
    advertisers: "Advertisers",
    all_campaigns: "All campaigns together",
    paused: "Paused campaigns",
    until: "until",
    stop: "Stop personalised ads",
    allow: "Allow again",
    allow_note: "This only removes your choice made on this page; signals your browser sends \
                 (such as Global Privacy Control) still apply.",
    delete: "Delete my data",
    delete_note: "Deletes everything listed above and the id cookie.",
    window: "in",
};

const DE: Texts = Texts {
    lang: "de",
    title: "Ihre Privatsphäre und personalisierte Werbung",
    intro: "Diese Seite zeigt alles, was die Werbe-Häufigkeitsbegrenzung dieser Website über Ihren \
            Browser speichert. Sie speichert weder Namen noch Adresse: nur eine zufällige Kennung \
            in einem Cookie und wann Sie welche Kampagne gesehen haben, damit Ihnen keine Werbung \
            zu oft folgt.",
    opted_out_by: "Personalisierte Werbung ist für Sie abgeschaltet, wegen:",
    not_opted_out: "Personalisierte Werbung ist erlaubt.",
    no_consent: "Personalisierte Werbung ist abgeschaltet: Es liegt keine gültige Einwilligung vor.",
    nothing_stored: "Über Sie ist nichts gespeichert.",
    campaign: "Kampagne",
    shown: "gezeigt",
    forgotten: "Vergessen",
    advertisers: "Werbetreibende",
    all_campaigns: "Alle Kampagnen zusammen",
    paused: "Pausierte Kampagnen",
    until: "bis",
    stop: "Personalisierte Werbung beenden",
    allow: "Wieder erlauben",
    allow_note: "Das hebt nur Ihre Wahl auf dieser Seite auf; Signale Ihres Browsers (etwa Global \
                 Privacy Control) gelten weiter.",
    delete: "Meine Daten löschen",
    delete_note: "Löscht alles oben Aufgeführte und das Kennungs-Cookie.",
    window: "in",
};

fn signal_text(lang: Lang, s: Signal) -> &'static str {
    match (lang, s) {
        (Lang::En, Signal::OwnCookie) => "your choice on this page",
        (Lang::De, Signal::OwnCookie) => "Ihrer Wahl auf dieser Seite",
        (Lang::En, Signal::Gpc) => "Global Privacy Control (sent by your browser)",
        (Lang::De, Signal::Gpc) => "Global Privacy Control (von Ihrem Browser gesendet)",
        (Lang::En, Signal::Dnt) => "Do Not Track (sent by your browser)",
        (Lang::De, Signal::Dnt) => "Do Not Track (von Ihrem Browser gesendet)",
        (Lang::En, Signal::Gpp) => "an opt-out in your consent settings (GPP)",
        (Lang::De, Signal::Gpp) => "eines Widerspruchs in Ihren Einwilligungseinstellungen (GPP)",
        (Lang::En, Signal::UsPrivacy) => "an opt-out of sale (US Privacy)",
        (Lang::De, Signal::UsPrivacy) => "eines Widerspruchs gegen den Verkauf (US Privacy)",
        (Lang::En, _) => "your consent settings (TCF)",
        (Lang::De, _) => "Ihrer Einwilligungseinstellungen (TCF)",
    }
}

/// Days since the epoch to (year, month, day), proleptic Gregorian (Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-11-29 14:05 UTC`.
fn utc(t: UnixSecs) -> String {
    let secs = i64::try_from(t).unwrap_or(i64::MAX / 2);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60
    )
}

/// "in 3 days" / "in 3 Tagen", always plural (smaller units below two of a larger one).
fn relative(lang: Lang, now: UnixSecs, at: UnixSecs) -> String {
    let d = at.saturating_sub(now);
    let (n, en, de) = if d >= 2 * 86_400 {
        (d / 86_400, "days", "Tagen")
    } else if d >= 2 * 3600 {
        (d / 3600, "hours", "Stunden")
    } else if d >= 120 {
        (d / 60, "minutes", "Minuten")
    } else {
        return match lang {
            Lang::En => "in about a minute".to_owned(),
            Lang::De => "in etwa einer Minute".to_owned(),
        };
    };
    match lang {
        Lang::En => format!("in {n} {en}"),
        Lang::De => format!("in {n} {de}"),
    }
}

/// A bar of `count` against `limit`, with the numbers as text (the bar is decoration).
fn bar(out: &mut String, t: &Texts, count: usize, cap: Cap) {
    let pct = (count as u64 * 100 / u64::from(cap.limit.max(1))).min(100);
    let full = if count as u64 >= u64::from(cap.limit) {
        " full"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<div class=\"cap\"><span>{count}/{limit} {shown} {win} {dur}</span>\
         <div class=\"bar\" role=\"img\" aria-label=\"{count}/{limit}\">\
         <div class=\"fill{full}\" style=\"width:{pct}%\"></div></div></div>",
        limit = cap.limit,
        shown = t.shown,
        win = t.window,
        dur = crate::policy::format_duration(cap.window_secs),
    );
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:0 auto;\
padding:1rem;line-height:1.45;color:#222;background:#fff}h1{font-size:1.4rem}\
h2{font-size:1.1rem;margin-top:1.5rem}.status{padding:.75rem;border-radius:.4rem;\
background:#eef4ff}.status.off{background:#e8f6ec}ul.camp{list-style:none;padding:0}\
ul.camp>li{border:1px solid #ddd;border-radius:.4rem;padding:.6rem;margin:.5rem 0;\
overflow-wrap:anywhere}.cap{margin:.3rem 0}.bar{height:.6rem;background:#eee;\
border-radius:.3rem;overflow:hidden}.fill{height:100%;background:#4a7bd0}.fill.full{\
background:#c0392b}small{color:#555}form{margin:.6rem 0}button{font-size:1rem;\
padding:.6rem 1rem;border-radius:.4rem;border:1px solid #888;background:#f6f6f6;\
width:100%;max-width:22rem}";

/// `GET {privacy_path}/privacy`: the HTML page in `lang`.
pub fn render_page(lang: Lang, view: &PageView<'_>) -> String {
    let t = match lang {
        Lang::En => &EN,
        Lang::De => &DE,
    };
    let v = view.verdict;
    let path = esc(view.privacy_path.trim_end_matches('/'));
    let mut o = String::with_capacity(4096);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{}</title><style>{STYLE}</style>\
         </head><body><h1>{}</h1><p>{}</p>",
        t.lang, t.title, t.title, t.intro
    );

    if v.opted_out {
        let _ = write!(o, "<div class=\"status off\"><p>{}</p><ul>", t.opted_out_by);
        for s in v.signals.iter().filter(|s| s.is_opt_out()) {
            let _ = write!(o, "<li>{}</li>", signal_text(lang, s));
        }
        o.push_str("</ul></div>");
    } else if !v.retargeting_allowed {
        let _ = write!(o, "<div class=\"status off\"><p>{}</p></div>", t.no_consent);
    } else {
        let _ = write!(o, "<div class=\"status\"><p>{}</p></div>", t.not_opted_out);
    }

    let r = view.report;
    if r.is_empty() {
        let _ = write!(o, "<p>{}</p>", t.nothing_stored);
    }
    if !r.campaigns.is_empty() {
        let _ = write!(o, "<h2>{}</h2><ul class=\"camp\">", t.campaign);
        for c in &r.campaigns {
            let _ = write!(o, "<li><strong>{}</strong>", esc(&c.campaign));
            let caps = (view.caps_for)(&c.campaign);
            for cap in &caps {
                bar(&mut o, t, in_window(&c.impressions, *cap, view.now), *cap);
            }
            forget_line(&mut o, t, lang, view.now, c.forget_at);
            o.push_str("</li>");
        }
        o.push_str("</ul>");
    }
    if !r.visitor_impressions.is_empty() && !view.visitor_caps.is_empty() {
        let _ = write!(o, "<h2>{}</h2><ul class=\"camp\"><li>", t.all_campaigns);
        for cap in view.visitor_caps {
            bar(
                &mut o,
                t,
                in_window(&r.visitor_impressions, *cap, view.now),
                *cap,
            );
        }
        o.push_str("</li></ul>");
    }
    if !r.advertisers.is_empty() {
        let _ = write!(o, "<h2>{}</h2><ul class=\"camp\">", t.advertisers);
        for a in &r.advertisers {
            let _ = write!(
                o,
                "<li><strong>{}</strong> <small>{} {}</small>",
                esc(&a.campaign),
                a.impressions.len(),
                t.shown
            );
            forget_line(&mut o, t, lang, view.now, a.forget_at);
            o.push_str("</li>");
        }
        o.push_str("</ul>");
    }
    if !r.burns.is_empty() {
        let _ = write!(o, "<h2>{}</h2><ul class=\"camp\">", t.paused);
        for b in &r.burns {
            let _ = write!(
                o,
                "<li><strong>{}</strong> <small>{} {}</small></li>",
                esc(&b.pattern),
                t.until,
                utc(b.until)
            );
        }
        o.push_str("</ul>");
    }

    if v.own_cookie {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"{path}/opt-in\"><button type=\"submit\">{}</button>\
             </form><p><small>{}</small></p>",
            t.allow, t.allow_note
        );
    } else {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"{path}/opt-out\"><button type=\"submit\">{}</button>\
             </form>",
            t.stop
        );
    }
    if view.has_visitor_id || !r.is_empty() {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"{path}/me\"><input type=\"hidden\" name=\"_method\" \
             value=\"DELETE\"><button type=\"submit\">{}</button></form><p><small>{}</small></p>",
            t.delete, t.delete_note
        );
    }
    o.push_str("</body></html>");
    o
}

fn forget_line(o: &mut String, t: &Texts, lang: Lang, now: UnixSecs, at: UnixSecs) {
    let _ = write!(
        o,
        "<p><small>{}: {} ({})</small></p>",
        t.forgotten,
        relative(lang, now, at),
        utc(at)
    );
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
