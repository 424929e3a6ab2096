//! Fuzzes the state file loader twice per input: the bytes as a whole file (header, magic,
//! version and checksum checks), and the bytes as records sealed with a valid header and
//! checksum, so that mutations reach the record decoder. Loading must return a store or an
//! error, never panic, and a store it returns must answer reports and survive a sweep.
#![no_main]

use std::path::Path;

use kappe::store::VisitorKey;
use kappe::store::memory::MemoryOptions;
use kappe::store::snapshot::{load_bytes, seal};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_780_000_000;

fuzz_target!(|data: &[u8]| {
    let opts = MemoryOptions {
        max_visitors: 1_000,
        ..MemoryOptions::default()
    };
    let path = Path::new("fuzz.state");
    for bytes in [data.to_vec(), seal(data, NOW)] {
        if let Ok(store) = load_bytes(&bytes, path, opts) {
            let _ = store.report(VisitorKey(0), NOW);
            let _ = store.report(VisitorKey(u64::MAX), NOW);
            store.sweep(NOW);
            store.enforce_bounds(NOW);
            let _ = store.stats();
        }
    }
});
