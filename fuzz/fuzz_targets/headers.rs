//! Fuzzes what kappe reads from a visitor's request head: the input is header lines
//! (`name: value`, one per line) plus an optional query after a first line starting with `?`.
//! Runs the privacy evaluation, cookie parsing and cookie stripping, and checks their
//! invariants. (Identity and forwarding hygiene live in the proxy feature, which the fuzz build
//! leaves out to stay small; unit and integration tests cover them.)
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use kappe::privacy::{PrivacyConfig, evaluate, strip_cookies};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let mut query = None;
    let mut headers = HeaderMap::new();
    let first = lines.next().unwrap_or_default();
    match first.strip_prefix(b"?") {
        Some(q) => query = std::str::from_utf8(q).ok(),
        None => add(&mut headers, first),
    }
    for line in lines.take(64) {
        add(&mut headers, line);
    }
    let cfg = PrivacyConfig::default();
    let now = 1_780_000_000;
    let v = evaluate(&cfg, &headers, query, now);
    assert!(!v.retargeting_allowed || v.storage_allowed);
    assert!(!v.opted_out || !v.storage_allowed);

    if let Some(stripped) = strip_cookies(&headers, &["kappe_id", "kappe_optout"]) {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, stripped);
        assert!(kappe::privacy::cookies(&h).all(|(n, _)| n != "kappe_id" && n != "kappe_optout"));
    }
});

fn add(headers: &mut HeaderMap, line: &[u8]) {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let value = value.strip_prefix(b" ").unwrap_or(value);
    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
        headers.append(n, v);
    }
}
