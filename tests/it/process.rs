//! The `kappe` binary as a process: SIGTERM and SIGHUP under load, SIGKILL and restart from the
//! state file, corrupt and truncated state files, and resident memory under a flood of random
//! visitor ids. Upstreams are in-process mocks; kappe's ports are 0 and read from its log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};
use kappe::store::memory::MemoryOptions;
use kappe::store::snapshot;

use crate::support::*;

/// A running `kappe` binary; killed on drop.
struct Proc {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    stderr: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `sig` (a `kill` signal name) to `pid`. The crate forbids unsafe code, so this goes
/// through kill(1) rather than libc::kill.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(ok.success(), "kill -{sig} {pid}");
}

impl Proc {
    /// Starts kappe with `flags` on port 0 and waits until it logs that it is serving.
    fn start(upstream: &str, flags: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kappe"));
        cmd.args([
            "--upstream",
            upstream,
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log",
            "info",
        ]);
        if !flags.contains(&"--admin-listen") {
            cmd.args(["--admin-listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(flags)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the kappe binary starts");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("kappe serving") {
                    let _ = tx.send(line.clone());
                }
                keep.lock().unwrap().push(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("kappe did not start: {:?}", lines.lock().unwrap());
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = v["fields"]["listen"].as_str().unwrap().parse().unwrap();
        let admin = v["fields"]["admin"].as_str().unwrap().parse().unwrap();
        Proc {
            child,
            addr,
            admin,
            stderr: lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = get(&format!("http://{}/metrics", self.admin)).await.1;
        metric_value(&text, series).unwrap_or(0.0)
    }

    /// Waits for the process to exit (bounded) and returns its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kappe did not exit: {:?}", self.stderr.lock().unwrap());
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

/// An ad server answering retargeting banners of campaign `rt-shoes` after `delay`.
async fn slow_ad_server(delay: Duration) -> Upstream {
    Upstream::start(move |_req| async move {
        tokio::time::sleep(delay).await;
        Response::builder()
            .header("x-campaign-id", "rt-shoes")
            .header("x-retargeting", "1")
            .body(full("banner"))
            .unwrap()
    })
    .await
}

fn state_visitors(path: &Path) -> Option<usize> {
    snapshot::load(path, MemoryOptions::default())
        .ok()
        .map(|s| s.len())
}

/// SIGTERM while 24 requests are in flight: every one is answered 200, kappe exits 0, and the
/// state file it writes on the way out holds all 24 counted visitors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_nothing_and_writes_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let up = slow_ad_server(Duration::from_millis(500)).await;
    let mut k = Proc::start(
        &up.url(),
        &[
            "--state-file",
            state.to_str().unwrap(),
            "--cap",
            "5/1d",
            "--shutdown-grace",
            "20s",
        ],
    );
    let mut tasks = Vec::new();
    for i in 0..24 {
        let url = k.url("/ad");
        tasks.push(tokio::spawn(async move {
            get_with(&url, &[("cookie", &format!("kappe_id=visitor-{i}"))])
                .await
                .0
        }));
    }
    while up.count() < 24 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(k.pid(), "TERM");
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let code = tokio::task::block_in_place(|| k.wait_exit());
    assert_eq!(code, Some(0), "{:?}", k.stderr.lock().unwrap());
    assert_eq!(state_visitors(&state), Some(24));
}

/// SIGHUP reloads while four clients keep sending: no request fails and every reload is counted
/// as ok; the edited policy is in force afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_under_load_fails_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kappe.toml");
    std::fs::write(&config, "cap = [\"1/1d\"]\n").unwrap();
    let up = slow_ad_server(Duration::from_millis(5)).await;
    let k = Proc::start(&up.url(), &["--config", config.to_str().unwrap()]);
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, stop, served, failed) =
            (k.url("/page"), stop.clone(), served.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url).body(Default::default()).unwrap();
                match client.request(req).await {
                    Ok(r) if r.status() == StatusCode::OK => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for n in 1..=5 {
        let cap = if n % 2 == 0 { "1/1d" } else { "2/1d" };
        std::fs::write(&config, format!("cap = [\"{cap}\"]\n")).unwrap();
        signal(k.pid(), "HUP");
        let mut counted = 0.0;
        for _ in 0..500 {
            counted = k.metric("kappe_config_reloads_total{result=\"ok\"}").await;
            if counted >= f64::from(n) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counted, f64::from(n), "reload {n} was not counted");
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(served.load(Ordering::Relaxed) > 0);
    assert_eq!(
        k.metric("kappe_config_reloads_total{result=\"error\"}")
            .await,
        0.0
    );
    // The last file said 2/1d: a visitor gets two banners, not one.
    let ad = k.url("/ad");
    for want in [StatusCode::OK, StatusCode::OK, StatusCode::NO_CONTENT] {
        let got = get_with(&ad, &[("cookie", "kappe_id=after-reload")])
            .await
            .0;
        assert_eq!(got, want);
    }
}

/// A SIGHUP the moment kappe says it is serving reloads instead of killing the process (the
/// handlers are installed before the port is bound).
#[tokio::test]
async fn sighup_right_after_start_does_not_kill() {
    let up = Upstream::ok("ok").await;
    for _ in 0..3 {
        let mut k = Proc::start(&up.url(), &[]);
        signal(k.pid(), "HUP");
        assert_eq!(get(&k.url("/")).await.0, StatusCode::OK);
        assert!(
            k.child.try_wait().unwrap().is_none(),
            "kappe died on SIGHUP"
        );
    }
}

/// SIGKILL after a snapshot: the restarted kappe remembers what the snapshot held, so a visitor
/// at their cap stays capped. At most the impressions of the last interval can be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart_keeps_the_last_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let up = slow_ad_server(Duration::ZERO).await;
    let flags = [
        "--state-file",
        state.to_str().unwrap(),
        "--snapshot-interval",
        "200ms",
        "--cap",
        "1/1d",
    ];
    let mut k = Proc::start(&up.url(), &flags);
    let cookie = [("cookie", "kappe_id=survivor")];
    assert_eq!(get_with(&k.url("/ad"), &cookie).await.0, StatusCode::OK);
    // Wait for the outcome (a snapshot holding the visitor), not for a fixed time.
    let mut snapped = false;
    for _ in 0..500 {
        if state_visitors(&state) == Some(1) {
            snapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(snapped, "no snapshot was written");
    signal(k.pid(), "KILL");
    tokio::task::block_in_place(|| k.wait_exit());
    drop(k);
    let k = Proc::start(&up.url(), &flags);
    assert_eq!(
        get_with(&k.url("/ad"), &cookie).await.0,
        StatusCode::NO_CONTENT,
        "the restarted kappe forgot the capped visitor"
    );
    assert_eq!(
        get_with(&k.url("/ad"), &[("cookie", "kappe_id=newcomer")])
            .await
            .0,
        StatusCode::OK
    );
}

/// Runs the binary to completion with a state file and returns (exit code, stderr).
fn run_with_state(upstream: &str, state: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kappe"))
        .args([
            "--upstream",
            upstream,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--state-file",
            state.to_str().unwrap(),
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A state file written by a clean shutdown, for damaging.
async fn good_state(dir: &Path, upstream: &str) -> PathBuf {
    let state = dir.join("state");
    let mut k = Proc::start(
        upstream,
        &["--state-file", state.to_str().unwrap(), "--cap", "3/1d"],
    );
    for i in 0..10 {
        get_with(&k.url("/ad"), &[("cookie", &format!("kappe_id=v{i}"))]).await;
    }
    signal(k.pid(), "TERM");
    assert_eq!(tokio::task::block_in_place(|| k.wait_exit()), Some(0));
    assert_eq!(state_visitors(&state), Some(10));
    state
}

/// A truncated and a corrupt state file each stop start-up with a message naming the file and
/// the way out, and the file is left byte for byte as it was; --discard-corrupt-state moves it
/// aside (keeping its bytes) and starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_files_stop_start_up_and_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let up = slow_ad_server(Duration::ZERO).await;
    let state = good_state(dir.path(), &up.url()).await;
    let good = std::fs::read(&state).unwrap();
    let truncated = good[..good.len() / 2].to_vec();
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x5a;
    for (what, bytes) in [("truncated", &truncated), ("corrupt", &corrupt)] {
        std::fs::write(&state, bytes).unwrap();
        let (code, err) = run_with_state(&up.url(), &state, &[]);
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(
            err.contains(what)
                && err.contains(&state.display().to_string())
                && err.contains("--discard-corrupt-state"),
            "{what}: {err}"
        );
        assert_eq!(
            &std::fs::read(&state).unwrap(),
            bytes,
            "{what}: file changed"
        );
    }
    // The operator decides to discard: the file is moved aside, never overwritten.
    let mut k = Proc::start(
        &up.url(),
        &[
            "--state-file",
            state.to_str().unwrap(),
            "--discard-corrupt-state",
        ],
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), corrupt);
    assert_eq!(k.metric("kappe_store_visitors").await, 0.0);
    signal(k.pid(), "TERM");
    assert_eq!(tokio::task::block_in_place(|| k.wait_exit()), Some(0));
}

/// A flood of random visitor ids against --max-visitors 1000: the store holds at most 1000 and
/// kappe's resident memory stays bounded (the numbers are printed; run with --nocapture).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_id_flood_stays_within_the_visitor_bound() {
    const MAX: usize = 1_000;
    const FLOOD: usize = 8_000;
    let up = slow_ad_server(Duration::ZERO).await;
    let k = Proc::start(
        &up.url(),
        &["--max-visitors", &MAX.to_string(), "--cap", "3/1d"],
    );
    let flood = |n: usize, seed: usize| {
        let url = k.url("/ad");
        async move {
            let mut tasks = Vec::new();
            for t in 0..16 {
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let client = client();
                    for i in (t..n).step_by(16) {
                        let id: u128 = rand::random();
                        let req = http::Request::get(&url)
                            .header("cookie", format!("kappe_id={id:x}{seed}{i}"))
                            .body(Default::default())
                            .unwrap();
                        let resp = client.request(req).await.expect("kappe answers");
                        assert_eq!(resp.status(), StatusCode::OK);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    flood(2 * MAX, 0).await;
    let warm = k.rss_kib();
    flood(FLOOD, 1).await;
    let after = k.rss_kib();
    let visitors = k.metric("kappe_store_visitors").await;
    let bytes = k.metric("kappe_store_bytes").await;
    println!(
        "random-id flood: {FLOOD} new ids, --max-visitors {MAX}: {visitors} stored, store \
         estimate {bytes} bytes, resident {warm} KiB after warm-up -> {after} KiB"
    );
    assert!(visitors <= MAX as f64, "{visitors} visitors stored");
    assert!(
        after <= warm + 32 * 1024,
        "resident memory grew from {warm} KiB to {after} KiB"
    );
}

/// An admin port on a wide address without --admin-token is allowed but warned about at start;
/// on loopback, or with a token, there is no warning.
#[tokio::test]
async fn wide_admin_port_without_token_is_warned_about() {
    let up = Upstream::ok("ok").await;
    let warned = |k: &Proc| {
        k.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("without --admin-token"))
    };
    let k = Proc::start(&up.url(), &["--admin-listen", "0.0.0.0:0"]);
    assert!(warned(&k), "{:?}", k.stderr.lock().unwrap());
    let k = Proc::start(
        &up.url(),
        &[
            "--admin-listen",
            "0.0.0.0:0",
            "--admin-token",
            "0123456789abcdef",
        ],
    );
    assert!(!warned(&k));
    let k = Proc::start(&up.url(), &[]);
    assert!(!warned(&k));
}
