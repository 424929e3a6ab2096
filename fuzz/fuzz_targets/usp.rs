//! Fuzzes the US Privacy decoder and `evaluate` with the input as the whole query string.
#![no_main]

use http::HeaderMap;
use kappe::privacy::{PrivacyConfig, evaluate, usp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = usp::decode(s) {
        assert_eq!(s.len(), 4);
        let _ = u.opted_out();
    }
    let v = evaluate(
        &PrivacyConfig::default(),
        &HeaderMap::new(),
        Some(s),
        1_780_000_000,
    );
    assert!(!v.retargeting_allowed || v.storage_allowed);
    assert!(!v.opted_out || !v.storage_allowed);
});
