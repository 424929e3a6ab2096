//! Frequency caps end to end: a mock ad server behind kappe, real HTTP, and an injected clock for
//! everything about windows.

use http::StatusCode;
use kappe::clock::Clock;

use crate::support::*;

const T0: u64 = 1_800_000_000;
const RT: &str = "/ad?c=rt-shoes&rt=1";

/// A visitor over the cap gets a no-fill (204, empty) and the drop is counted with its reason.
#[tokio::test]
async fn capped_visitor_gets_no_fill() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "3/1d"]).await;
    for _ in 0..3 {
        let (s, _, body) = visit(&k, RT, "v1", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("banner rt-shoes"));
    }
    let (s, h, body) = visit(&k, RT, "v1", &[]).await;
    assert_eq!((s, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert!(!h.contains_key("x-campaign-id"));
    // Another visitor is unaffected.
    assert_eq!(visit(&k, RT, "v2", &[]).await.0, StatusCode::OK);
    assert_eq!(k.metric("kappe_impressions_total").await, 4.0);
    assert_eq!(k.metric("kappe_dropped_total{reason=\"cap\"}").await, 1.0);
}

/// The window slides: an impression stops counting exactly W after it was admitted, no earlier
/// and no later, and nothing resets at a calendar boundary.
#[tokio::test]
async fn window_slides_not_resets() {
    let up = ad_server().await;
    let clock = Clock::manual(T0);
    let k = Kappe::start_clock(&up.url(), &["--cap", "2/1h"], clock.clone()).await;
    let status = || async { visit(&k, RT, "slide", &[]).await.0 };
    assert_eq!(status().await, StatusCode::OK); // t0
    clock.set(T0 + 1800);
    assert_eq!(status().await, StatusCode::OK); // t0+30m
    clock.set(T0 + 3599);
    assert_eq!(
        status().await,
        StatusCode::NO_CONTENT,
        "two in the last hour"
    );
    clock.set(T0 + 3600);
    assert_eq!(
        status().await,
        StatusCode::OK,
        "the first stopped counting at t0+1h"
    );
    clock.set(T0 + 5399);
    assert_eq!(
        status().await,
        StatusCode::NO_CONTENT,
        "t0+30m still counts until t0+90m"
    );
    clock.set(T0 + 5400);
    assert_eq!(status().await, StatusCode::OK);
}

/// Many parallel requests for one visitor and campaign admit exactly the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_requests_admit_exactly_the_cap() {
    let up = ad_server().await;
    let k =
        std::sync::Arc::new(Kappe::start(&up.url(), &["--cap", "5/1d", "--threads", "4"]).await);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let k = k.clone();
        tasks.push(tokio::spawn(
            async move { visit(&k, RT, "racer", &[]).await.0 },
        ));
    }
    let mut served = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            served += 1;
        }
    }
    assert_eq!(served, 5);
    assert_eq!(k.metric("kappe_dropped_total{reason=\"cap\"}").await, 195.0);
}

/// `--campaign-cap` replaces the defaults for matching campaigns; the most specific glob wins.
#[tokio::test]
async fn campaign_caps_replace_defaults_most_specific_wins() {
    let up = ad_server().await;
    let k = Kappe::start(
        &up.url(),
        &[
            "--cap",
            "3/1d",
            "--campaign-cap",
            "rt-*=2/1d",
            "--campaign-cap",
            "rt-shoes*=1/1d",
        ],
    )
    .await;
    let served = |path: &'static str| {
        let k = &k;
        async move {
            let mut n = 0;
            for _ in 0..5 {
                if visit(k, path, "globber", &[]).await.0 == StatusCode::OK {
                    n += 1;
                }
            }
            n
        }
    };
    assert_eq!(served("/ad?c=rt-shoes&rt=1").await, 1);
    assert_eq!(served("/ad?c=rt-hats&rt=1").await, 2);
    assert_eq!(served("/ad?c=bags&rt=1").await, 3);
}

/// A visitor cap holds across campaigns (anti-stalking).
#[tokio::test]
async fn visitor_cap_holds_across_campaigns() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "10/1d", "--visitor-cap", "3/1d"]).await;
    let mut served = 0;
    for c in ["a", "b", "c", "d", "e"] {
        let (s, h, _) = visit(&k, &format!("/ad?c=rt-{c}&rt=1"), "stalked", &[]).await;
        if s == StatusCode::OK {
            served += 1;
        } else {
            assert!(!h.contains_key("x-campaign-id"));
        }
    }
    assert_eq!(served, 3);
    assert_eq!(
        k.metric("kappe_dropped_total{reason=\"visitor_cap\"}")
            .await,
        2.0
    );
}

/// A campaign stops retargeting a visitor once the maximum age since its first impression passed.
#[tokio::test]
async fn max_retargeting_age_stops_following() {
    let up = ad_server().await;
    let clock = Clock::manual(T0);
    let k = Kappe::start_clock(
        &up.url(),
        &["--cap", "100/1d", "--max-retargeting-age", "7d"],
        clock.clone(),
    )
    .await;
    assert_eq!(visit(&k, RT, "old", &[]).await.0, StatusCode::OK);
    clock.set(T0 + 6 * 86_400);
    assert_eq!(visit(&k, RT, "old", &[]).await.0, StatusCode::OK);
    clock.set(T0 + 7 * 86_400);
    assert_eq!(visit(&k, RT, "old", &[]).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        k.metric("kappe_dropped_total{reason=\"max_age\"}").await,
        1.0
    );
    // Another campaign still may.
    assert_eq!(
        visit(&k, "/ad?c=rt-new&rt=1", "old", &[]).await.0,
        StatusCode::OK
    );
}

/// By default only retargeting responses are capped; `--cap-scope all` caps every campaign.
/// `--retargeting-campaigns` marks retargeting without the header.
#[tokio::test]
async fn cap_scope_and_retargeting_globs() {
    let up = ad_server().await;
    let k = Kappe::start(
        &up.url(),
        &["--cap", "1/1d", "--retargeting-campaigns", "rt-*"],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            visit(&k, "/ad?c=ctx-news", "s1", &[]).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        visit(&k, "/ad?c=rt-shoes", "s1", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        visit(&k, "/ad?c=rt-shoes", "s1", &[]).await.0,
        StatusCode::NO_CONTENT
    );
    let k = Kappe::start(&up.url(), &["--cap", "1/1d", "--cap-scope", "all"]).await;
    assert_eq!(
        visit(&k, "/ad?c=ctx-news", "s1", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        visit(&k, "/ad?c=ctx-news", "s1", &[]).await.0,
        StatusCode::NO_CONTENT
    );
}

/// Caps the ad server declares (`--policy-header`) apply where no configured rule matches.
#[tokio::test]
async fn declared_caps_apply_when_no_rule_matches() {
    let up = ad_server().await;
    let k = Kappe::start(
        &up.url(),
        &[
            "--policy-header",
            "X-Fcap",
            "--campaign-cap",
            "rt-ruled=5/1d",
        ],
    )
    .await;
    let path = "/ad?c=rt-declared&rt=1&fcap=2/1d";
    let results: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| visit(&k, path, "d", &[]))).await;
    assert_eq!(results.iter().filter(|r| r.0 == StatusCode::OK).count(), 2);
    // A configured rule wins over the declared caps.
    let path = "/ad?c=rt-ruled&rt=1&fcap=1/1d";
    let mut ok = 0;
    for _ in 0..4 {
        let (s, h, _) = visit(&k, path, "d", &[]).await;
        assert!(!h.contains_key("x-fcap"), "policy header removed");
        ok += usize::from(s == StatusCode::OK);
    }
    assert_eq!(ok, 4);
}

/// kappe's upstream headers are removed before the visitor sees them, unless kept; responses
/// without a campaign pass through untouched.
#[tokio::test]
async fn upstream_headers_are_removed_unless_kept() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "3/1d"]).await;
    let (_, h, _) = visit(&k, RT, "h", &[]).await;
    assert!(!h.contains_key("x-campaign-id") && !h.contains_key("x-retargeting"));
    let (s, _, body) = visit(&k, "/page", "h", &[]).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "page"));
    assert_eq!(k.metric("kappe_passthrough_total").await, 1.0);
    let k = Kappe::start(&up.url(), &["--cap", "3/1d", "--keep-upstream-headers"]).await;
    let (_, h, _) = visit(&k, RT, "h", &[]).await;
    assert_eq!(h["x-campaign-id"], "rt-shoes");
    assert_eq!(h["x-retargeting"], "1");
}

/// Campaigns are read from the body with a JSON pointer or a regex; a body over
/// --max-inspect-bytes passes through uncapped and is counted.
#[tokio::test]
async fn campaigns_are_read_from_bodies() {
    let up = Upstream::start(|req: http::Request<hyper::body::Incoming>| async move {
        let body = match req.uri().path() {
            "/openrtb" => r#"{"seatbid":[{"bid":[{"cid":"rt-json","price":1.2}]}]}"#.to_owned(),
            "/tag" => {
                "<a href='https://ads.example/ck.php?campaignid=4711&zone=3'>x</a>".to_owned()
            }
            _ => format!("<a href='?campaignid=99'>{}</a>", "x".repeat(5000)),
        };
        http::Response::new(full(body))
    })
    .await;
    let k = Kappe::start(
        &up.url(),
        &[
            "--cap",
            "1/1d",
            "--campaign-from",
            "json:/seatbid/0/bid/0/cid",
            "--campaign-from",
            r"regex:campaignid=(\d+)",
            "--cap-scope",
            "all",
            "--max-inspect-bytes",
            "1024",
        ],
    )
    .await;
    for path in ["/openrtb", "/tag"] {
        let (s, _, body) = visit(&k, path, "b", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(!body.is_empty());
        assert_eq!(
            visit(&k, path, "b", &[]).await.0,
            StatusCode::NO_CONTENT,
            "{path}"
        );
    }
    let (s, _, body) = visit(&k, "/big", "b", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body.len(),
        5000 + "<a href='?campaignid=99'></a>".len(),
        "the whole body arrives"
    );
    assert_eq!(visit(&k, "/big", "b", &[]).await.0, StatusCode::OK);
    assert_eq!(
        k.metric("kappe_inspect_skipped_total{reason=\"too_large\"}")
            .await,
        2.0
    );
}

/// Advertiser caps count impressions of all of an advertiser's campaigns.
#[tokio::test]
async fn advertiser_caps_span_campaigns() {
    let up = ad_server().await;
    let k = Kappe::start(
        &up.url(),
        &[
            "--cap",
            "10/1d",
            "--advertiser-from",
            "header:X-Advertiser",
            "--advertiser-cap",
            "shoe*=2/1d",
        ],
    )
    .await;
    let mut ok = 0;
    for c in ["a", "b", "c"] {
        ok += usize::from(
            visit(&k, &format!("/ad?c=rt-{c}&rt=1&adv=shoeco"), "adv", &[])
                .await
                .0
                == StatusCode::OK,
        );
    }
    assert_eq!(ok, 2);
    assert_eq!(
        k.metric("kappe_dropped_total{reason=\"advertiser_cap\"}")
            .await,
        1.0
    );
    assert_eq!(
        visit(&k, "/ad?c=rt-d&rt=1&adv=hatco", "adv", &[]).await.0,
        StatusCode::OK
    );
}

/// A visitor without a valid id gets a random 128-bit id cookie with the right attributes, next
/// to the upstream's own cookies, and that id is the one counted.
#[tokio::test]
async fn new_visitors_get_an_id_cookie() {
    let up = ad_server().await;
    let k = Kappe::start(
        &up.url(),
        &["--cap", "1/1d", "--cookie-secure", "--burn-duration", "1d"],
    )
    .await;
    for sent in ["", "bad id!", &"x".repeat(80)] {
        let (s, h, _) = visit(&k, RT, sent, &[]).await;
        assert_eq!(s, StatusCode::OK);
        let cookies: Vec<_> = h
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert!(
            cookies
                .iter()
                .any(|c| c.starts_with("upstream_session=abc")),
            "{cookies:?}"
        );
        let ours = cookies
            .iter()
            .find(|c| c.starts_with("kappe_id="))
            .expect("an id cookie");
        let id = &ours["kappe_id=".len()..ours.find(';').unwrap()];
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        for attr in [
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Secure",
            "Max-Age=86400",
        ] {
            assert!(ours.contains(attr), "{ours}");
        }
        // The issued id is the one counted.
        assert_eq!(visit(&k, RT, id, &[]).await.0, StatusCode::NO_CONTENT);
    }
    // The publisher's page (no campaign) already issues the id, so the ad requests that follow
    // it in parallel share one id; a visitor who opted out gets none.
    let (_, h, _) = visit(&k, "/page", "", &[]).await;
    assert!(
        h.get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("kappe_id="))
    );
    let (_, h, _) = visit(&k, "/page", "", &[("sec-gpc", "1")]).await;
    assert!(
        !h.get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("kappe_id="))
    );
    let (_, h, _) = visit(&k, "/page", "known", &[]).await;
    assert!(
        !h.get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("kappe_id="))
    );
}

/// `--visitor-from header:...` uses the ad server's id; without any id `--no-id` decides, and the
/// ip-ua fallback counts cookieless visitors.
#[tokio::test]
async fn visitor_sources_and_no_id_policy() {
    let up = ad_server().await;
    let k = Kappe::start(
        &up.url(),
        &[
            "--cap",
            "1/1d",
            "--visitor-from",
            "header:X-User",
            "--no-id",
            "drop",
        ],
    )
    .await;
    assert_eq!(
        visit(&k, RT, "", &[("x-user", "u1")]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        visit(&k, RT, "", &[("x-user", "u1")]).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, h, _) = visit(&k, RT, "", &[]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(h.get("set-cookie").is_none());
    assert_eq!(k.metric("kappe_dropped_total{reason=\"no_id\"}").await, 1.0);

    let k = Kappe::start(
        &up.url(),
        &["--cap", "1/1d", "--visitor-from", "header:X-User"],
    )
    .await;
    assert_eq!(visit(&k, RT, "", &[]).await.0, StatusCode::OK);
    assert_eq!(
        visit(&k, RT, "", &[]).await.0,
        StatusCode::OK,
        "served uncounted"
    );

    let k = Kappe::start(
        &up.url(),
        &[
            "--cap",
            "1/1d",
            "--visitor-from",
            "header:X-User",
            "--visitor-fallback",
            "ip-ua",
        ],
    )
    .await;
    assert_eq!(
        visit(&k, RT, "", &[("user-agent", "ua-1")]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        visit(&k, RT, "", &[("user-agent", "ua-1")]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        visit(&k, RT, "", &[("user-agent", "ua-2")]).await.0,
        StatusCode::OK
    );
}

/// `--on-drop file:PATH` answers with a house ad.
#[tokio::test]
async fn house_ad_replaces_dropped_responses() {
    let dir = tempfile::tempdir().unwrap();
    let house = dir.path().join("house.html");
    std::fs::write(&house, "<p>our own house ad</p>").unwrap();
    let up = ad_server().await;
    let on_drop = format!("file:{}", house.display());
    let k = Kappe::start(&up.url(), &["--cap", "1/1d", "--on-drop", &on_drop]).await;
    visit(&k, RT, "house", &[]).await;
    let (s, h, body) = visit(&k, RT, "house", &[]).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "<p>our own house ad</p>")
    );
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
}

/// Refetch asks again with the capped campaign excluded (header and query parameter), serves the
/// next campaign, and stops after --refetch-max extra calls.
#[tokio::test]
async fn refetch_excludes_capped_campaigns_and_is_bounded() {
    let up = ad_server().await;
    let k = Kappe::start(
        &up.url(),
        &[
            "--cap",
            "1/1d",
            "--on-drop",
            "refetch",
            "--exclude-param",
            "exclude",
            "--explain-header",
        ],
    )
    .await;
    visit(&k, RT, "re", &[]).await;
    let before = up.count();
    let (s, h, body) = visit(&k, RT, "re", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("banner ctx-fallback"), "{body}");
    assert_eq!(up.count() - before, 2);
    let last = up.last();
    assert_eq!(last.headers["x-kappe-exclude"], "rt-shoes");
    assert_eq!(
        last.uri.query(),
        Some("c=rt-shoes&rt=1&exclude=campaignid:rt-shoes")
    );
    assert_eq!(h["x-kappe-decision"], "passthrough");

    // An upstream that only ever answers the capped campaign: at most --refetch-max extra calls.
    let stubborn = Upstream::start(|_req| async {
        http::Response::builder()
            .header("x-campaign-id", "rt-same")
            .header("x-retargeting", "1")
            .body(full("same"))
            .unwrap()
    })
    .await;
    let k = Kappe::start(
        &stubborn.url(),
        &[
            "--cap",
            "1/1d",
            "--on-drop",
            "refetch",
            "--refetch-max",
            "2",
        ],
    )
    .await;
    visit(&k, "/ad", "loop", &[]).await;
    let before = stubborn.count();
    assert_eq!(
        visit(&k, "/ad", "loop", &[]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(stubborn.count() - before, 3, "one call plus two refetches");
    assert_eq!(k.metric("kappe_refetch_total").await, 2.0);
}

/// `--hint-capped` tells the ad server which campaigns are capped; a visitor cannot forge it.
#[tokio::test]
async fn hint_capped_lists_capped_campaigns() {
    let up = ad_server().await;
    let k = Kappe::start(&up.url(), &["--cap", "1/1d", "--hint-capped"]).await;
    visit(&k, RT, "hint", &[]).await;
    visit(&k, "/page", "hint", &[("x-kappe-capped", "forged")]).await;
    assert_eq!(up.last().headers["x-kappe-capped"], "rt-shoes");
    visit(
        &k,
        "/page",
        "fresh",
        &[("x-kappe-capped", "forged"), ("x-kappe-exclude", "x")],
    )
    .await;
    assert!(!up.last().headers.contains_key("x-kappe-capped"));
    assert!(!up.last().headers.contains_key("x-kappe-exclude"));
}

/// A burn pixel and an upstream X-Kappe-Burn header stop matching campaigns for the visitor.
#[tokio::test]
async fn burn_stops_matching_campaigns() {
    let up = ad_server().await;
    let clock = Clock::manual(T0);
    let k = Kappe::start_clock(
        &up.url(),
        &["--cap", "10/1d", "--burn-duration", "2d"],
        clock.clone(),
    )
    .await;
    assert_eq!(visit(&k, RT, "buyer", &[]).await.0, StatusCode::OK);
    let (s, h, body) = visit(&k, "/_kappe/burn?c=rt-sh*", "buyer", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "image/gif");
    assert!(body.starts_with("GIF89a"));
    assert_eq!(visit(&k, RT, "buyer", &[]).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        visit(&k, "/ad?c=rt-hats&rt=1", "buyer", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        k.metric("kappe_dropped_total{reason=\"burned\"}").await,
        1.0
    );
    clock.set(T0 + 2 * 86_400);
    assert_eq!(
        visit(&k, RT, "buyer", &[]).await.0,
        StatusCode::OK,
        "the burn ended"
    );

    // The ad server burns through a response header.
    let (_, h, _) = visit(&k, "/ad?c=ctx-thanks&burn=rt-*", "buyer", &[]).await;
    assert!(!h.contains_key("x-kappe-burn"));
    assert_eq!(
        visit(&k, "/ad?c=rt-hats&rt=1", "buyer", &[]).await.0,
        StatusCode::NO_CONTENT
    );
}

/// Dry run decides and counts but never drops; the explain header says what would happen.
#[tokio::test]
async fn dry_run_never_drops() {
    let up = ad_server().await;
    let k = Kappe::start(
        &up.url(),
        &["--cap", "1/1h", "--dry-run", "--explain-header"],
    )
    .await;
    let (_, h, _) = visit(&k, RT, "dry", &[]).await;
    assert_eq!(h["x-kappe-decision"], "served");
    let (s, h, body) = visit(&k, RT, "dry", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("banner rt-shoes"));
    let explain = h["x-kappe-decision"].to_str().unwrap();
    assert!(
        explain.starts_with("dropped; reason=cap; rule=1/1h; retry-after="),
        "{explain}"
    );
    let retry: u64 = explain.rsplit('=').next().unwrap().parse().unwrap();
    assert!((3598..=3600).contains(&retry), "{retry}");
    assert_eq!(
        k.metric("kappe_dry_run_would_drop_total{reason=\"cap\"}")
            .await,
        1.0
    );
    assert_eq!(k.metric("kappe_dropped_total{reason=\"cap\"}").await, 0.0);
}
