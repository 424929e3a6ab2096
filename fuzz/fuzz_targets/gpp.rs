//! Fuzzes the GPP header, `gpp_sid` and the US section decoders, and hands section 2 and 6 to
//! the TCF and US Privacy decoders, as `evaluate` does.
#![no_main]

use kappe::privacy::{gpp, tcf, usp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = gpp::parse_sid(s);
    let _ = gpp::decode_usnat(s);
    let _ = gpp::decode_usca(s);
    let _ = gpp::decode_us_state_gpc(s);
    let Ok(g) = gpp::decode(s) else {
        return;
    };
    assert!(g.section_ids().windows(2).all(|w| w[0] < w[1]));
    assert_eq!(g.sections().count(), g.section_ids().len());
    for (id, text) in g.sections() {
        match id {
            gpp::SECTION_TCFEUV2 => {
                let _ = tcf::decode(text).map(|tc| tc.permission(Some(755), 1_780_000_000));
            }
            gpp::SECTION_USPV1 => {
                let _ = usp::decode(text);
            }
            gpp::SECTION_USNAT => {
                let _ = gpp::decode_usnat(text);
            }
            gpp::SECTION_USCA => {
                let _ = gpp::decode_usca(text);
            }
            _ => {
                let _ = gpp::decode_us_state_gpc(text);
            }
        }
    }
});
