//! Observability under real use: reloading the policy while clients hammer kappe (no request
//! fails, a bad file is refused and counted), the access log of the binary in text and JSON (no
//! visitor id, no query string), and the operator's status page seen in a real browser.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantoccini::Locator;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::browser::{self, Browser};
use crate::support::{self, Kappe, ad_server, visit};

const RT: &str = "/ad?c=rt-load&rt=1";

/// Writes the config file whole, so a reload never reads half of it.
fn write_config(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn reload(k: &Kappe) -> (StatusCode, String) {
    let (s, _, b) = support::send(
        Request::post(k.admin_url("/reload"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// Statuses a fresh visitor gets for `n` retargeting requests.
async fn fresh_visitor(k: &Kappe, id: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(visit(k, RT, id, &[]).await.0.as_u16());
    }
    out
}

/// Eight clients send 4000 requests while the config file is rewritten and reloaded seven times,
/// once with an invalid file: no request fails, the bad file gets 422 and is counted while the
/// old policy stays, and the last cap written is the one visitors get afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_and_applies_the_new_cap() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 500;
    const TOTAL: usize = CLIENTS * PER_CLIENT;
    let up = ad_server().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kappe.toml");
    write_config(&file, "cap = [\"100/1h\"]\n");
    let k = Kappe::start(&up.url(), &["--config", file.to_str().unwrap()]).await;
    assert_eq!(fresh_visitor(&k, "before", 3).await, [200, 200, 200]);
    let errors_before = k
        .metric("kappe_config_reloads_total{result=\"error\"}")
        .await;

    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let url = k.url(RT);
    let mut load = Vec::new();
    for client in 0..CLIENTS {
        let (done, failed, url) = (done.clone(), failed.clone(), url.clone());
        load.push(tokio::spawn(async move {
            // One keep-alive client per load task, as a browser or an ad tag would have.
            let http = support::client();
            for i in 0..PER_CLIENT {
                let req = Request::get(&url)
                    .header("cookie", format!("kappe_id=load-{client}-{}", i % 25))
                    .body(Full::<Bytes>::default())
                    .unwrap();
                let ok = match http.request(req).await {
                    // A cap drop is a 204: a normal answer, not a failure.
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.into_body().collect().await;
                        body.is_ok()
                            && (status == StatusCode::OK || status == StatusCode::NO_CONTENT)
                    }
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let mut reloads = 0;
    for step in 1..=7usize {
        // Reload at evenly spaced points of the load, so every reload meets requests in flight.
        while done.load(Ordering::Relaxed) < TOTAL * step / 8 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            done.load(Ordering::Relaxed) < TOTAL,
            "the load finished before reload {step}"
        );
        if step == 4 {
            write_config(&file, "cap = [\"3/xyz\"]\n");
            let (s, body) = reload(&k).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(body.contains("old policy kept"), "{body}");
            let kept = k.shared.policy.load().describe();
            assert!(kept.contains(&format!("{}/1h", 100 + step - 1)), "{kept}");
        } else {
            let cap = format!("{}/1h", 100 + step);
            write_config(&file, &format!("cap = [\"{cap}\"]\n"));
            let (s, body) = reload(&k).await;
            assert_eq!(s, StatusCode::OK, "{body}");
            assert!(
                body.contains(&cap),
                "the reload answers the new policy: {body}"
            );
            reloads += 1;
        }
    }
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), TOTAL);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert_eq!(
        k.metric("kappe_config_reloads_total{result=\"ok\"}").await,
        f64::from(reloads)
    );
    assert_eq!(
        k.metric("kappe_config_reloads_total{result=\"error\"}")
            .await,
        errors_before + 1.0
    );

    // The cap in force before the last reload lets a fresh visitor see 3; the new one, 2.
    assert_eq!(fresh_visitor(&k, "between", 3).await, [200, 200, 200]);
    write_config(&file, "cap = [\"2/1h\"]\n");
    assert_eq!(reload(&k).await.0, StatusCode::OK);
    assert_eq!(fresh_visitor(&k, "after", 3).await, [200, 200, 204]);
    k.shutdown().await;
}

/// Runs the kappe binary with `--access-log FORMAT` in front of the mock ad server, sends requests
/// carrying a visitor id in a cookie and in a query string, stops it with SIGTERM, and returns
/// (stdout, stderr, requests sent).
async fn access_log_of_binary(format: &str) -> (String, String, usize) {
    const SECRET: &str = "SECRETID123";
    let up = ad_server().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kappe"))
        .args([
            "--upstream",
            &up.url(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--cap",
            "2/1h",
            "--log-format",
            "json",
            "--access-log",
            format,
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the kappe binary starts");
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        BufReader::new(stdout).read_to_string(&mut s).unwrap();
        s
    });
    // Stderr is read line by line until kappe says where it listens, then to the end.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let fields = v.get("fields").unwrap_or(&v);
                if let Some(listen) = fields.get("listen").and_then(|l| l.as_str()) {
                    let _ = addr_tx.send(listen.to_owned());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let listen = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("kappe logs its listen address");
    let base = format!("http://{listen}");
    let cookie = format!("kappe_id={SECRET}");
    let mut sent = 0;
    let mut statuses = Vec::new();
    for path in [
        "/ad?c=rt-log&rt=1",
        "/ad?c=rt-log&rt=1",
        "/ad?c=rt-log&rt=1",
        "/_kappe/me",
        &format!("/page?kappe_id={SECRET}&uid={SECRET}"),
    ] {
        let (s, _, _) = support::get_with(&format!("{base}{path}"), &[("cookie", &cookie)]).await;
        statuses.push(s.as_u16());
        sent += 1;
    }
    assert_eq!(
        statuses,
        [200, 200, 204, 200, 200],
        "served, served, capped, own page, page"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kappe did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "kappe exits 0 on SIGTERM: {status}");
    (out_reader.join().unwrap(), err_reader.join().unwrap(), sent)
}

/// `--access-log json` writes one JSON object per request on stdout with the documented fields,
/// and the visitor id (sent in a cookie and in a query string) appears in no output at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_line_per_request_and_no_visitor_id() {
    let (out, err, sent) = access_log_of_binary("json").await;
    assert!(!out.contains("SECRETID123"), "stdout: {out}");
    assert!(!err.contains("SECRETID123"), "stderr: {err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), sent, "{out}");
    for line in &lines {
        for field in [
            "client",
            "method",
            "path",
            "status",
            "duration_us",
            "decision",
        ] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["method"], "GET");
        assert!(!line["path"].as_str().unwrap().contains('?'), "{line}");
    }
    let decisions: Vec<&str> = lines
        .iter()
        .map(|l| l["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions[..3], ["served", "served", "dropped:cap"], "{out}");
    assert_eq!(lines[2]["status"], 204);
    assert_eq!(lines[3]["decision"], "local");
    assert_eq!(lines[4]["path"], "/page");
}

/// `--access-log text` writes one line per request (client, method, path, status, duration,
/// decision) and never the visitor id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_log_has_one_line_per_request_and_no_visitor_id() {
    let (out, err, sent) = access_log_of_binary("text").await;
    assert!(!out.contains("SECRETID123"), "stdout: {out}");
    assert!(!err.contains("SECRETID123"), "stderr: {err}");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), sent, "{out}");
    for l in &lines {
        assert_eq!(l.len(), 6, "six fields: {l:?}");
        assert_eq!(l[0], "127.0.0.1");
        assert_eq!(l[1], "GET");
        assert!(!l[2].contains('?'), "{l:?}");
        assert!(l[4].ends_with("us"), "{l:?}");
    }
    assert_eq!(lines[2][3], "204");
    assert_eq!(lines[2][5], "dropped:cap");
    assert_eq!(lines[4][2], "/page");
}

/// The status page, loaded in Chromium after a visitor browsed the demo until caps applied,
/// shows the live figures: impressions, drops by reason, store size, health and the policy, and
/// rates over the last interval once it has refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_a_browser_shows_live_figures() {
    if !browser::require("status_page_in_a_browser_shows_live_figures") {
        return;
    }
    let (k, upstream) = browser::demo().await;
    let b = Browser::start(false).await;
    let c = &b.client;
    // Four loads of three slots pass the demo's caps (3 per campaign, 5 retargeting per visitor).
    for _ in 0..4 {
        c.goto(&k.url("/")).await.expect("open the publisher page");
        browser::ads_on_page(c).await;
    }
    let impressions = k.metric("kappe_impressions_total").await;
    let visitor_drops = k
        .metric("kappe_dropped_total{reason=\"visitor_cap\"}")
        .await;
    assert!(impressions > 0.0 && visitor_drops > 0.0);

    c.goto(&k.admin_url("/"))
        .await
        .expect("open the status page");
    b.screenshot("status").await;
    // Each table row as "label=value" of its first two cells.
    let rows = c
        .execute(
            "return [...document.querySelectorAll('tr')].map(r => \
             [...r.cells].slice(0, 2).map(td => td.textContent.trim()).join('='));",
            vec![],
        )
        .await
        .expect("read the tables");
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    let has = |row: &str| rows.iter().any(|r| r == row);
    assert!(
        has(&format!("impressions admitted={impressions}")),
        "{rows:?}"
    );
    assert!(has(&format!("visitor_cap={visitor_drops}")), "{rows:?}");
    // The demo's three frames load in parallel before the visitor has an id cookie, so one
    // browser may be counted under more than one id on its first page view.
    let visitors: u64 = rows
        .iter()
        .find_map(|r| r.strip_prefix("visitors="))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no store size in {rows:?}"));
    assert!((1..=3).contains(&visitors), "{rows:?}");
    let text = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("3/1h") && text.contains("5/1h"),
        "policy: {text}"
    );
    let healthy = c.find_all(Locator::Css("b.ok")).await.unwrap().len();
    let unhealthy = c.find_all(Locator::Css("b.bad")).await.unwrap().len();
    assert_eq!(
        (healthy, unhealthy),
        (2, 0),
        "upstream and store up: {text}"
    );

    // The page refreshes to a URL carrying the counters it showed; after one more page view
    // that next view shows live rates over the interval instead of a dash.
    let first_live = live_requests_cell(c).await;
    assert_eq!(first_live, "–", "the first view has no earlier sample");
    let refresh = c
        .execute(
            "return document.querySelector('meta[http-equiv=refresh]').content;",
            vec![],
        )
        .await
        .unwrap();
    let next = refresh
        .as_str()
        .and_then(|r| r.split_once(";url="))
        .map(|(_, url)| url.to_owned())
        .unwrap_or_else(|| panic!("no refresh URL in {refresh}"));
    c.goto(&k.url("/")).await.expect("one more page view");
    browser::ads_on_page(c).await;
    c.goto(&format!("{}{next}", k.admin_url("/")))
        .await
        .expect("follow the refresh");
    b.screenshot("status-live").await;
    let live: f64 = live_requests_cell(c)
        .await
        .parse()
        .expect("a live rate after the refresh");
    assert!(live > 0.0, "four requests in the interval give a rate");

    b.close().await;
    k.shutdown().await;
    upstream.abort();
}

/// The "last interval" rate of requests answered, as the status page shows it.
async fn live_requests_cell(c: &fantoccini::Client) -> String {
    let cell = c
        .execute(
            "return [...document.querySelectorAll('#traffic tr')]\
             .find(r => r.cells[0].textContent === 'requests answered').cells[2].textContent;",
            vec![],
        )
        .await
        .expect("read the traffic table");
    cell.as_str().expect("text").to_owned()
}
