//! Fuzzes the TC string decoder and every lookup on what it accepts: no input may panic, and
//! lookups on a decoded string must agree with its own iteration.
#![no_main]

use kappe::privacy::tcf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tc) = tcf::decode(s) else {
        return;
    };
    let now = 1_780_000_000;
    for vendor in [None, Some(1), Some(755), Some(65535)] {
        let _ = tc.permission(vendor, now);
        for purpose in 0..=25 {
            let _ = tc.legal_basis(purpose, vendor);
        }
    }
    let sets = [
        Some(tc.vendor_consents),
        Some(tc.vendor_legitimate_interests),
        tc.disclosed_vendors,
    ];
    for set in sets.into_iter().flatten() {
        // Bounded: at most 2,000 ids per set, each checked against `contains`.
        for v in set.iter().take(2_000) {
            assert!(v >= 1 && v <= set.max_vendor_id());
            assert!(set.contains(v));
        }
    }
    for r in tc.publisher_restrictions.iter().take(64) {
        let _ = r.covers(755);
    }
});
