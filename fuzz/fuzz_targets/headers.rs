//! Fuzzes what kappe reads from a visitor's request head: the input is header lines
//! (`name: value`, one per line) plus an optional query after a first line starting with `?`.
//! Runs the privacy evaluation, the visitor identity, cookie stripping and forwarding hygiene,
//! and checks their invariants.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use kappe::privacy::{PrivacyConfig, evaluate, strip_cookies};
use kappe::proxy::forward::{strip_hop_by_hop, visitor_host};
use kappe::proxy::identity::{Identity, identify, valid_id};
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

    let enforcement = &config().enforcement;
    let pseudo = kappe::store::pseudonym::Pseudonymizer::new([7; 16]);
    let peer = std::net::IpAddr::from([192, 0, 2, 1]);
    let id = identify(&headers, enforcement, &pseudo, peer, now);
    if let Identity::Known { key, .. } = id {
        // A key is only ever derived from a valid id sent by the visitor.
        let sent = kappe::privacy::cookies(&headers)
            .filter(|(n, v)| *n == enforcement.visitor_cookie.as_str() && valid_id(v))
            .any(|(_, v)| pseudo.key(v.as_bytes()) == key);
        assert!(sent || enforcement.visitor_fallback_ip_ua);
    }

    if let Some(stripped) = strip_cookies(&headers, &["kappe_id", "kappe_optout"]) {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, stripped);
        assert!(kappe::privacy::cookies(&h).all(|(n, _)| n != "kappe_id" && n != "kappe_optout"));
    }

    for uri in ["/", "http://ads.example/x"] {
        let uri: http::Uri = uri.parse().unwrap();
        let _ = visitor_host(&uri, &headers, http::Version::HTTP_11);
        let _ = visitor_host(&uri, &headers, http::Version::HTTP_2);
    }
    let mut hygienic = headers.clone();
    strip_hop_by_hop(&mut hygienic);
    for gone in [
        "connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    ] {
        assert!(!hygienic.contains_key(gone));
    }
});

/// The default configuration, built once.
fn config() -> &'static kappe::config::Config {
    static CFG: std::sync::OnceLock<kappe::config::Config> = std::sync::OnceLock::new();
    CFG.get_or_init(|| {
        let args = kappe::cli::Args {
            upstream: Some("http://127.0.0.1:9".to_owned()),
            ..Default::default()
        };
        kappe::config::Config::from_args(args).expect("the defaults are valid")
    })
}

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
