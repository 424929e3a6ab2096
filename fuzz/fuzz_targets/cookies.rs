//! Fuzzes the cookie parser, the cookie stripper and `evaluate` with the input as Cookie header
//! lines (split on newlines), plus Sec-GPC and DNT.
#![no_main]

use http::header::{COOKIE, HeaderMap, HeaderValue};
use kappe::privacy::{PrivacyConfig, cookies, evaluate, strip_cookies};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(16) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, v.clone());
            headers.append("sec-gpc", v.clone());
            headers.append("dnt", v);
        }
    }
    let mut n = 0;
    for (name, _value) in cookies(&headers) {
        assert!(!name.is_empty());
        n += 1;
    }
    assert!(n <= kappe::privacy::cookie::MAX_COOKIES);
    if let Some(v) = strip_cookies(&headers, &["kappe_vid", "kappe_optout"]) {
        let stripped = {
            let mut h = HeaderMap::new();
            h.insert(COOKIE, v);
            h
        };
        assert!(cookies(&stripped).all(|(name, _)| name != "kappe_vid" && name != "kappe_optout"));
    }
    let _ = evaluate(&PrivacyConfig::default(), &headers, None, 1_780_000_000);
});
