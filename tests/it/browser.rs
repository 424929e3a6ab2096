//! Browser tests: a real headless Chromium, driven over WebDriver (Debian's `chromedriver`, with
//! `fantoccini`), loads the demo publisher page through kappe in front of the demo ad server, uses
//! the privacy page as a visitor would, and loads the operator's status page. Each test saves
//! screenshots under `target/screenshots/`.
//!
//! Under `CI=true` a missing Chromium or ChromeDriver fails the tests; elsewhere they are skipped
//! with a printed reason. The extra `Sec-GPC` header is set through ChromeDriver's CDP bridge
//! (`POST /session/{id}/goog/cdp/execute`), and kappe's own counter of GPC signals proves the
//! header arrived, so the GPC test cannot pass because the header silently went missing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::{self, Kappe};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// True when Chromium and ChromeDriver can run; see [`support::require_programs`].
pub(crate) fn require(test: &str) -> bool {
    support::require_programs(
        test,
        &[CHROMIUM, CHROMEDRIVER],
        "apt-get install chromium chromium-driver",
    )
}

/// Where screenshots go: `target/screenshots/` of the checkout (ignored by git).
pub(crate) fn save_screenshot(name: &str, png: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "{name}: the screenshot is not a PNG"
    );
    eprintln!("screenshot {} ({} bytes)", path.display(), png.len());
    path
}

/// The chromedriver process; killed and reaped on drop so no test leaves one behind.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with a fresh profile.
pub(crate) struct Browser {
    pub(crate) client: Client,
    session: String,
    driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session. `gpc` makes every request of the
    /// page (and its same-origin frames) carry `Sec-GPC: 1`.
    pub(crate) async fn start(gpc: bool) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver { child, port };
        let base = format!("http://127.0.0.1:{port}");
        // Waiting for a child process to listen is readiness, not a timing assertion.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = support::client()
                .request(
                    Request::get(format!("{base}/status"))
                        .body(Full::default())
                        .unwrap(),
                )
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("a temporary profile directory");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1000,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::native()
            .capabilities(caps)
            .connect(&base)
            .await
            .expect("a WebDriver session opens");
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a W3C session has an id");
        let browser = Browser {
            client,
            session,
            driver,
            _profile: profile,
        };
        if gpc {
            browser.cdp("Network.enable", json!({})).await;
            browser
                .cdp(
                    "Network.setExtraHTTPHeaders",
                    json!({ "headers": { "Sec-GPC": "1" } }),
                )
                .await;
        }
        browser
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver's bridge.
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/session/{}/goog/cdp/execute",
            self.driver.port, self.session
        );
        let body = json!({ "cmd": cmd, "params": params }).to_string();
        let (status, _, body) = support::send(
            Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await;
        let body: Value = serde_json::from_slice(&body).expect("chromedriver answers JSON");
        assert!(status.is_success(), "CDP {cmd} failed: {status} {body}");
        body
    }

    /// Saves a screenshot of the whole viewport.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        save_screenshot(name, &png)
    }

    /// Closes the session (the browser exits) and then chromedriver.
    pub(crate) async fn close(self) {
        let Browser { client, driver, .. } = self;
        let _ = client.close().await;
        drop(driver);
    }
}

/// One ad as the browser shows it inside its slot's iframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ad {
    pub(crate) retargeting: bool,
    pub(crate) campaign: String,
}

/// Reads the ad in every iframe of the current page. Panics if a slot shows no ad within 10 s.
pub(crate) async fn ads_on_page(c: &Client) -> Vec<Ad> {
    let frames = c
        .find_all(Locator::Css("iframe"))
        .await
        .expect("find iframes")
        .len();
    assert!(frames > 0, "the page has no ad slots");
    let mut ads = Vec::new();
    for i in 0..frames {
        c.enter_frame(u16::try_from(i).expect("few frames"))
            .await
            .expect("enter the slot's frame");
        let deadline = Instant::now() + Duration::from_secs(10);
        let ad = loop {
            let found = c
                .execute(
                    "const a = document.querySelector('.ad');\
                     return a ? [a.classList.contains('retargeting'), a.dataset.campaign] : null;",
                    vec![],
                )
                .await
                .expect("read the slot");
            if let Some([rt, campaign]) = found.as_array().map(Vec::as_slice) {
                break Ad {
                    retargeting: rt.as_bool().expect("a boolean"),
                    campaign: campaign.as_str().unwrap_or("").to_owned(),
                };
            }
            assert!(Instant::now() < deadline, "slot {i} shows no ad");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ads.push(ad);
        c.enter_parent_frame().await.expect("back to the page");
    }
    ads
}

/// The demo ad server (`kappe demo`'s sample upstream) on a free port, with kappe in front of it
/// using the demo defaults.
pub(crate) async fn demo() -> (Kappe, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let opts = kappe::server::ServerOptions {
        header_read_timeout: Duration::from_secs(10),
        max_header_size: 32 * 1024,
        max_connections: 1024,
        shutdown_grace: Duration::from_secs(1),
        request_fields: None,
    };
    let server = tokio::spawn(kappe::server::serve(
        listener,
        None,
        opts,
        None,
        kappe::demo::handle,
        std::future::pending(),
    ));
    let args = kappe::cli::Args {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    }
    .or_from(kappe::demo::demo_defaults(&upstream));
    let cfg = kappe::config::Config::from_args(args).expect("the demo configuration is valid");
    (Kappe::start_config(cfg).await, server)
}

/// A visitor sees a retargeting ad, presses "Stop personalised ads" on the privacy page, reloads
/// the publisher page and sees only contextual ads, while the site's own cookie survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opting_out_in_the_browser_hides_retargeting_and_keeps_other_cookies() {
    if !require("opting_out_in_the_browser_hides_retargeting_and_keeps_other_cookies") {
        return;
    }
    let (k, upstream) = demo().await;
    let b = Browser::start(false).await;
    let c = &b.client;

    c.goto(&k.url("/")).await.expect("open the publisher page");
    let before = ads_on_page(c).await;
    b.screenshot("demo-before-opt-out").await;
    assert!(
        before.iter().any(|a| a.retargeting),
        "a new visitor sees a retargeting ad: {before:?}"
    );

    // A first-party cookie of the publisher's own, which opting out must leave alone.
    c.execute("document.cookie = 'session=login42; path=/'", vec![])
        .await
        .expect("set a cookie");

    c.goto(&k.url("/_kappe/privacy"))
        .await
        .expect("open the privacy page");
    b.screenshot("privacy-before-opt-out").await;
    c.find(Locator::Css("form[action$='/opt-out'] button"))
        .await
        .expect("the privacy page offers \"Stop personalised ads\"")
        .click()
        .await
        .expect("press it");
    // The form answers with a redirect back to the page, which then offers "Allow again".
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("form[action$='/opt-in'] button"))
        .await
        .expect("after opting out the page offers \"Allow again\"");
    b.screenshot("privacy-opted-out").await;

    c.goto(&k.url("/"))
        .await
        .expect("reload the publisher page");
    let after = ads_on_page(c).await;
    b.screenshot("demo-after-opt-out").await;
    assert_eq!(after.len(), before.len(), "every slot is still filled");
    assert!(
        after.iter().all(|a| !a.retargeting),
        "an opted-out visitor sees no retargeting ad: {after:?}"
    );

    let session = c
        .get_named_cookie("session")
        .await
        .expect("the site's own cookie survives opting out");
    assert_eq!(session.value(), "login42");
    let optout = &k.shared.cfg.privacy.signals.optout_cookie;
    let kept = c
        .get_named_cookie(optout)
        .await
        .expect("the opt-out cookie is set");
    assert_eq!(kept.value(), "1");
    let own = k
        .metric("kappe_privacy_signals_total{signal=\"own_cookie\"}")
        .await;
    assert!(own >= 1.0, "kappe saw the opt-out cookie on the reload");

    b.close().await;
    k.shutdown().await;
    upstream.abort();
}

/// A browser that sends `Sec-GPC: 1` on every request never sees a retargeting ad, over several
/// page loads, and kappe counted the signal (so the header really arrived).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sending_gpc_never_sees_retargeting() {
    if !require("browser_sending_gpc_never_sees_retargeting") {
        return;
    }
    let (k, upstream) = demo().await;
    let b = Browser::start(true).await;
    let c = &b.client;

    let mut seen = Vec::new();
    for load in 0..3 {
        c.goto(&k.url("/")).await.expect("open the publisher page");
        let ads = ads_on_page(c).await;
        assert!(!ads.is_empty(), "load {load}: the slots are filled");
        seen.extend(ads);
    }
    b.screenshot("demo-with-gpc").await;
    assert!(
        seen.iter().all(|a| !a.retargeting),
        "a GPC browser never sees a retargeting ad: {seen:?}"
    );
    let gpc = k
        .metric("kappe_privacy_signals_total{signal=\"gpc\"}")
        .await;
    assert!(
        gpc >= seen.len() as f64,
        "kappe saw Sec-GPC on every ad request ({gpc} for {} ads)",
        seen.len()
    );

    c.goto(&k.url("/_kappe/privacy"))
        .await
        .expect("open the privacy page");
    let text = c
        .find(Locator::Css("body"))
        .await
        .expect("body")
        .text()
        .await
        .expect("page text");
    b.screenshot("privacy-with-gpc").await;
    assert!(
        text.contains("Global Privacy Control"),
        "the privacy page names GPC as the reason: {text}"
    );

    b.close().await;
    k.shutdown().await;
    upstream.abort();
}
