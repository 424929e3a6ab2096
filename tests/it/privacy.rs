//! Privacy end to end: every signal drops retargeting and stores nothing, what travels upstream,
//! and the visitor's own pages (privacy page, JSON report, erase, opt-out, opt-in, gpc.json).

use http::StatusCode;

use crate::support::*;

const RT: &str = "/ad?c=rt-shoes&rt=1";
const CTX: &str = "/ad?c=ctx-news";

/// A big-endian bit writer for building TC and GPP strings the way CMPs encode them.
#[derive(Default)]
struct Bits(Vec<bool>);

impl Bits {
    fn int(&mut self, v: u64, n: usize) -> &mut Self {
        for i in (0..n).rev() {
            self.0.push(v >> i & 1 == 1);
        }
        self
    }
    fn fib(&mut self, v: u64) -> &mut Self {
        let mut fibs = vec![1u64, 2];
        while *fibs.last().unwrap() <= v {
            let n = fibs[fibs.len() - 1] + fibs[fibs.len() - 2];
            fibs.push(n);
        }
        let mut bits = vec![false; fibs.len()];
        let mut rest = v;
        for i in (0..fibs.len()).rev() {
            if fibs[i] <= rest {
                bits[i] = true;
                rest -= fibs[i];
            }
        }
        while bits.last() == Some(&false) {
            bits.pop();
        }
        self.0.extend(bits);
        self.0.push(true);
        self
    }
    fn b64(&self) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        self.0
            .chunks(6)
            .map(|c| {
                let mut v = 0;
                for i in 0..6 {
                    v = v << 1 | usize::from(c.get(i).copied().unwrap_or(false));
                }
                A[v] as char
            })
            .collect()
    }
}

/// A TC string (core only, created 2025-06-01, policy 4, service-specific) with these purpose
/// consents and consenting vendors.
fn tc_string(purposes: &[u32], vendors: &[u64]) -> String {
    let mut b = Bits::default();
    let created = 1_748_736_000u64 * 10;
    b.int(2, 6)
        .int(created, 36)
        .int(created, 36)
        .int(300, 12)
        .int(1, 12)
        .int(1, 6);
    b.int(4, 6).int(13, 6); // "EN"
    b.int(100, 12).int(4, 6).int(1, 1).int(0, 1).int(0, 12);
    let mut pc = 0u64;
    for p in purposes {
        pc |= 1 << (24 - p);
    }
    b.int(pc, 24).int(0, 24).int(0, 1).int(3, 6).int(4, 6); // PLI none, CC "DE"
    let max = vendors.iter().copied().max().unwrap_or(0);
    b.int(max, 16).int(0, 1);
    for v in 1..=max {
        b.int(u64::from(vendors.contains(&v)), 1);
    }
    b.int(0, 16).int(0, 1); // no vendor LI
    b.int(0, 12); // no publisher restrictions
    b.b64()
}

/// A GPP string with one usnat section (id 7); `opt_out` sets SaleOptOut.
fn gpp_usnat(opt_out: bool) -> String {
    let mut h = Bits::default();
    h.int(3, 6).int(1, 6).int(1, 12).int(0, 1).fib(7);
    let mut s = Bits::default();
    s.int(1, 6);
    for _ in 0..6 {
        s.int(1, 2); // notices provided
    }
    s.int(if opt_out { 1 } else { 2 }, 2).int(2, 2).int(2, 2);
    s.int(0, 24)
        .int(0, 4)
        .int(0, 2)
        .int(2, 2)
        .int(2, 2)
        .int(2, 2);
    format!("{}~{}", h.b64(), s.b64())
}

fn set_cookies(h: &http::HeaderMap) -> Vec<String> {
    h.get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Every opt-out signal drops retargeting (reason optout), issues no id, sends no visitor id
/// upstream, stores nothing, and still lets contextual ads through.
#[tokio::test]
async fn opted_out_visitor_is_never_stored() {
    let gpp = format!("/ad?c=rt-shoes&rt=1&gpp={}&gpp_sid=7", gpp_usnat(true));
    type Case<'a> = (&'a str, String, Vec<(&'a str, String)>);
    let cases: Vec<Case<'_>> = vec![
        ("gpc", RT.into(), vec![("sec-gpc", "1".into())]),
        ("dnt", RT.into(), vec![("dnt", "1".into())]),
        (
            "own_cookie",
            RT.into(),
            vec![("cookie", "kappe_optout=1".into())],
        ),
        ("us_privacy", format!("{RT}&us_privacy=1YYN"), vec![]),
        (
            "us_privacy",
            RT.into(),
            vec![("cookie", "usprivacy=1NYN".into())],
        ),
        ("gpp", gpp, vec![]),
        ("tcf_missing", format!("{RT}&gdpr=1"), vec![]),
        (
            "tcf_invalid",
            format!("{RT}&gdpr=1&gdpr_consent=COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA"),
            vec![],
        ),
    ];
    for (signal, path, headers) in cases {
        let up = ad_server().await;
        let k = Kappe::start(&up.url(), &["--cap", "3/1d"]).await;
        let hdrs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // A new visitor and a known one.
        for id in ["", "known-1"] {
            let (s, h, body) = visit(&k, &path, id, &hdrs).await;
            assert_eq!((s, body.as_str()), (StatusCode::NO_CONTENT, ""), "{signal}");
            assert!(
                set_cookies(&h).iter().all(|c| !c.starts_with("kappe_id")),
                "{signal}: no id cookie"
            );
            let seen = up.last();
            let cookie = seen
                .headers
                .get("cookie")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            assert!(
                !cookie.contains("kappe_id"),
                "{signal}: upstream saw {cookie}"
            );
        }
        let (s, _, body) = visit(&k, CTX, "known-1", &hdrs).await;
        assert_eq!(s, StatusCode::OK, "{signal}: contextual ads are served");
        assert!(body.contains("ctx-news"));
        assert_eq!(
            k.metric("kappe_dropped_total{reason=\"optout\"}").await,
            2.0,
            "{signal}"
        );
        assert_eq!(k.metric("kappe_impressions_total").await, 0.0, "{signal}");
        assert_eq!(
            k.metric("kappe_store_visitors").await,
            0.0,
            "{signal}: nothing stored"
        );
        assert!(
            k.metric(&format!(
                "kappe_privacy_signals_total{{signal=\"{signal}\"}}"
            ))
            .await
                >= 1.0
        );
    }
}

/// Values that are not opt-outs change nothing: `Sec-GPC: 0`, `DNT: 0`, `us_privacy=1YNN`,
/// a GPP usnat section without opt-out.
#[tokio::test]
async fn non_opt_out_values_are_ignored() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "3/1d"]).await;
    let gpp = format!("{RT}&gpp={}&gpp_sid=7", gpp_usnat(false));
    for (i, (path, hdrs)) in [
        (RT.to_owned(), vec![("sec-gpc", "0")]),
        (RT.to_owned(), vec![("dnt", "0")]),
        (format!("{RT}&us_privacy=1YNN"), vec![]),
        (gpp, vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("fine-{i}");
        assert_eq!(
            visit(&k, &path, &id, &hdrs).await.0,
            StatusCode::OK,
            "{path} {hdrs:?}"
        );
    }
}

/// Where GDPR applies, a valid TC string with consent for purposes 1, 3 and 4 (and the vendor)
/// allows retargeting; without the vendor, or with a purpose missing, it does not. The string
/// travels upstream unmodified. `--consent-mode opt-in` requires it on every request.
#[tokio::test]
async fn tcf_consent_gates_retargeting() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "3/1d", "--tcf-vendor-id", "42"]).await;
    let good = tc_string(&[1, 2, 3, 4, 7], &[42]);
    let path = format!("{RT}&gdpr=1&gdpr_consent={good}");
    assert_eq!(visit(&k, &path, "eu", &[]).await.0, StatusCode::OK);
    assert_eq!(
        up.last().uri.query().unwrap(),
        path.split_once('?').unwrap().1,
        "forwarded unmodified"
    );
    let no_vendor = tc_string(&[1, 2, 3, 4], &[7]);
    assert_eq!(
        visit(
            &k,
            &format!("{RT}&gdpr=1&gdpr_consent={no_vendor}"),
            "eu2",
            &[]
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let no_p4 = tc_string(&[1, 2, 3], &[42]);
    assert_eq!(
        visit(&k, &format!("{RT}&gdpr=1&gdpr_consent={no_p4}"), "eu3", &[])
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    // The CMP's first-party cookie works as well as the query.
    let cookie = format!("euconsent-v2={good}");
    assert_eq!(
        visit(&k, &format!("{RT}&gdpr=1"), "eu4", &[("cookie", &cookie)])
            .await
            .0,
        StatusCode::OK
    );
    // Any opt-out wins over a consent.
    assert_eq!(
        visit(&k, &path, "eu5", &[("sec-gpc", "1")]).await.0,
        StatusCode::NO_CONTENT
    );

    let strict = Kappe::start(&up.url(), &["--cap", "3/1d", "--consent-mode", "opt-in"]).await;
    assert_eq!(visit(&strict, RT, "s", &[]).await.0, StatusCode::NO_CONTENT);
    let consented = format!("{RT}&gdpr_consent={}", tc_string(&[1, 2, 3, 4], &[]));
    assert_eq!(visit(&strict, &consented, "s", &[]).await.0, StatusCode::OK);
}

/// For kappe's own opt-out cookie kappe inserts `Sec-GPC: 1` upstream, strips the tracking cookies
/// named by --strip-cookies and keeps every other cookie; it never adds DNT.
#[tokio::test]
async fn own_opt_out_cookie_shapes_the_upstream_request() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "3/1d", "--strip-cookies", "_ga,_fbp"]).await;
    let cookie = "session=login42; _ga=GA1.2.3; kappe_optout=1; _fbp=fb.1; kappe_id=abc";
    visit(&k, CTX, "", &[("cookie", cookie)]).await;
    let seen = up.last();
    assert_eq!(seen.headers["sec-gpc"], "1");
    assert!(!seen.headers.contains_key("dnt"));
    let sent = seen.headers["cookie"].to_str().unwrap();
    assert!(
        sent.contains("session=login42") && sent.contains("kappe_optout=1"),
        "{sent}"
    );
    assert!(
        !sent.contains("_ga") && !sent.contains("_fbp") && !sent.contains("kappe_id"),
        "{sent}"
    );
    // A visitor who did not opt out keeps every cookie and gets no Sec-GPC.
    visit(&k, CTX, "", &[("cookie", "session=login42; _ga=GA1.2.3")]).await;
    let seen = up.last();
    assert!(seen.headers["cookie"].to_str().unwrap().contains("_ga"));
    assert!(!seen.headers.contains_key("sec-gpc"));
}

/// The privacy page shows what is stored, in English or German, with the three buttons; the
/// JSON report has the documented shape.
#[tokio::test]
async fn privacy_page_and_report_show_what_is_stored() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "3/1d", "--visitor-cap", "10/1d"]).await;
    visit(&k, RT, "me", &[]).await;
    visit(&k, RT, "me", &[]).await;
    let (s, h, html) = visit(
        &k,
        "/_kappe/privacy",
        "me",
        &[("accept-language", "en-US,en;q=0.9")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    for needle in [
        "rt-shoes",
        "Stop personalised ads",
        "Delete my data",
        "/_kappe/opt-out",
    ] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("<script"),
        "no external assets"
    );
    let (_, _, de) = visit(
        &k,
        "/_kappe/privacy",
        "me",
        &[("accept-language", "de-DE,de;q=0.9,en;q=0.5")],
    )
    .await;
    assert!(de.contains("Personalisierte Werbung beenden") && de.contains("Meine Daten löschen"));

    let (s, _, json) = visit(&k, "/_kappe/me", "me", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["opted_out"], false);
    assert!(v["signals"].as_array().unwrap().is_empty());
    let c = &v["campaigns"][0];
    assert_eq!(c["campaign"], "rt-shoes");
    assert_eq!(c["impressions"].as_array().unwrap().len(), 2);
    assert_eq!(c["caps"][0]["limit"], 3);
    assert!(c["forget_at"].as_u64().unwrap() > c["impressions"][1].as_u64().unwrap());
    assert!(v["visitor_caps"].is_array());
    // Nothing of another visitor is shown.
    let (_, _, other) = visit(&k, "/_kappe/me", "someone-else", &[]).await;
    assert!(!other.contains("rt-shoes"));
}

/// `DELETE /_kappe/me` and the form post erase the visitor's data; cross-site requests are refused.
#[tokio::test]
async fn delete_erases_and_refuses_cross_site() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "1/1d"]).await;
    visit(&k, RT, "del", &[]).await;
    assert_eq!(visit(&k, RT, "del", &[]).await.0, StatusCode::NO_CONTENT);
    // Cross-site attempts change nothing.
    let req = http::Request::delete(k.url("/_kappe/me"))
        .header("cookie", "kappe_id=del")
        .header("sec-fetch-site", "cross-site")
        .body(Default::default())
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::FORBIDDEN);
    let req = http::Request::delete(k.url("/_kappe/me"))
        .header("cookie", "kappe_id=del")
        .header("origin", "https://evil.example")
        .body(Default::default())
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        visit(&k, RT, "del", &[]).await.0,
        StatusCode::NO_CONTENT,
        "still capped"
    );
    // A same-origin form post erases and redirects back to the page.
    let req = http::Request::post(k.url("/_kappe/me"))
        .header("cookie", "kappe_id=del")
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::from("_method=DELETE"))
        .unwrap();
    let (s, h, _) = send(req).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/_kappe/privacy");
    assert!(
        set_cookies(&h)
            .iter()
            .any(|c| c.starts_with("kappe_id=;") && c.contains("Max-Age=0"))
    );
    let (_, _, json) = visit(&k, "/_kappe/me", "del", &[]).await;
    assert!(!json.contains("rt-shoes"), "{json}");
    // A script's DELETE gets 204.
    let req = http::Request::delete(k.url("/_kappe/me"))
        .header("cookie", "kappe_id=del")
        .body(Default::default())
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::NO_CONTENT);
}

/// Opting out sets the opt-out cookie, expires the id and erases what was stored; opting in
/// clears it but refuses cross-site requests.
#[tokio::test]
async fn opt_out_and_opt_in() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "3/1d"]).await;
    visit(&k, RT, "oo", &[]).await;
    let req = http::Request::post(k.url("/_kappe/opt-out"))
        .header("cookie", "kappe_id=oo")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Default::default())
        .unwrap();
    let (s, h, _) = send(req).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let cookies = set_cookies(&h);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("kappe_optout=1") && c.contains("HttpOnly")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("kappe_id=;") && c.contains("Max-Age=0"))
    );
    assert!(!h.contains_key("clear-site-data"));
    let (_, _, json) = visit(&k, "/_kappe/me", "oo", &[]).await;
    assert!(!json.contains("rt-shoes"), "erased: {json}");
    let (_, _, json) = visit(&k, "/_kappe/me", "", &[("cookie", "kappe_optout=1")]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["opted_out"], true);
    assert_eq!(v["signals"][0], "own_cookie");

    let cross = http::Request::post(k.url("/_kappe/opt-in"))
        .header("cookie", "kappe_optout=1")
        .header("sec-fetch-site", "cross-site")
        .body(Default::default())
        .unwrap();
    assert_eq!(send(cross).await.0, StatusCode::FORBIDDEN);
    let same = http::Request::post(k.url("/_kappe/opt-in"))
        .header("cookie", "kappe_optout=1")
        .header("sec-fetch-site", "same-origin")
        .body(Default::default())
        .unwrap();
    let (s, h, _) = send(same).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(
        set_cookies(&h)
            .iter()
            .any(|c| c.starts_with("kappe_optout=;") && c.contains("Max-Age=0"))
    );
}

/// `/.well-known/gpc.json` declares that kappe honours GPC.
#[tokio::test]
async fn gpc_json_is_published() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &[]).await;
    let (s, h, body) = get_with(&k.url("/.well-known/gpc.json"), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["gpc"], true);
    assert!(v["lastUpdate"].is_string());
    assert_eq!(up.count(), 0, "answered by kappe");
}
