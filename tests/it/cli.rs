//! The binary's command line: bad values exit non-zero naming the flag and value; `kappe check`
//! validates and prints the effective configuration.

use std::process::Command;

fn kappe(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kappe"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the kappe binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each bad value stops start-up with exit code 2 and a message naming the flag and the value.
#[test]
fn bad_flags_exit_non_zero_naming_flag_and_value() {
    for (flag, value) in [
        ("--cap", "3/xyz"),
        ("--cap", "-1/1d"),
        ("--campaign-cap", "rt-*"),
        ("--listen", "localhost"),
        ("--upstream-timeout", "soon"),
        ("--max-connections", "many"),
        ("--store", "mongodb://db"),
        ("--on-drop", "explode"),
        ("--log-format", "xml"),
    ] {
        let (code, _, err) = kappe(&["--upstream", "http://127.0.0.1:9", flag, value]);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(
            err.contains(flag) && err.contains(value),
            "{flag} {value}: {err}"
        );
    }
    let (code, _, err) = kappe(&["--upstream", "ftp://x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--upstream"), "{err}");
}

/// The environment twin of a flag is read and validated like the flag.
#[test]
fn environment_twins_are_validated() {
    let out = Command::new(env!("CARGO_BIN_EXE_kappe"))
        .args(["check", "--upstream", "http://127.0.0.1:9"])
        .env("KAPPE_CAP", "5/2h")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("5/2h"));
    let out = Command::new(env!("CARGO_BIN_EXE_kappe"))
        .args(["check", "--upstream", "http://127.0.0.1:9"])
        .env("KAPPE_VISITOR_CAP", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--visitor-cap"));
}

/// `kappe check` prints the effective configuration and policy and exits 0; a bad one exits 2.
#[test]
fn check_prints_the_effective_policy() {
    let (code, out, err) = kappe(&[
        "check",
        "--upstream",
        "http://127.0.0.1:9",
        "--cap",
        "3/1h",
        "--cap",
        "10/1d",
        "--campaign-cap",
        "rt-*=1/1h",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3/1h,10/1d"), "{out}");
    assert!(out.contains("rt-*=1/1h"), "{out}");
    assert!(out.contains("configuration ok"));
    let (code, _, err) = kappe(&["check", "--upstream", "http://127.0.0.1:9", "--cap", "3"]);
    assert_eq!(code, 2);
    assert!(err.contains("--cap"), "{err}");
}

/// `kappe healthcheck` (the container's health check) exits 0 against a live admin port, 1 when
/// nothing answers, and 2 for a malformed URL.
#[tokio::test]
async fn healthcheck_probes_the_admin_port() {
    let up = crate::support::Upstream::ok("ok").await;
    let k = crate::support::Kappe::start(&up.url(), &[]).await;
    let url = k.admin_url("/healthz");
    let live = tokio::task::spawn_blocking(move || kappe(&["healthcheck", "--admin-url", &url]))
        .await
        .unwrap();
    assert_eq!(live.0, 0, "{}", live.2);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/healthz", closed.local_addr().unwrap());
    drop(closed);
    let (code, _, err) = kappe(&["healthcheck", "--admin-url", &dead]);
    assert_eq!(code, 1);
    assert!(err.contains("unhealthy"), "{err}");
    let (code, _, err) = kappe(&["healthcheck", "--admin-url", "ftp://x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--admin-url"), "{err}");
}

/// `kappe bench-store` drives the store and reports throughput, latency, bytes per key and
/// snapshot times, with the prefetch pipeline it was given; a bad cap names its flag.
#[test]
fn bench_store_reports_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = kappe(&[
        "bench-store",
        "--visitors",
        "2000",
        "--seconds",
        "0.2",
        "--bench-cap",
        "2/1h",
        "--pipeline",
        "3",
        "--snapshot-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for field in [
        "throughput:",
        "admits/s",
        "latency:",
        "bytes per key",
        "snapshot:",
        "2/1h",
        "pipeline 3",
    ] {
        assert!(out.contains(field), "no {field} in\n{out}");
    }
    let (code, _, err) = kappe(&["bench-store", "--bench-cap", "2/xyz"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--bench-cap") && err.contains("2/xyz"),
        "{err}"
    );
}
