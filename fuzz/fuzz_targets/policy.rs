//! Fuzzes the policy grammar: caps (`N/DUR`), cap lists, durations, glob rules (`GLOB=caps`),
//! globs against campaign names, and campaign sources (`header:`, `json:`, `regex:`). Whatever
//! parses must print back to something that parses to the same value.
#![no_main]

use kappe::policy::{Cap, GlobRule, Source, parse_cap_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cap) = s.parse::<Cap>() {
        assert!(cap.limit > 0 && cap.window_secs > 0);
        assert_eq!(cap.to_string().parse::<Cap>().ok(), Some(cap));
    }
    if let Ok(caps) = parse_cap_list(s) {
        assert!(!caps.is_empty());
        assert!(
            caps.windows(2).all(|w| w[0] < w[1]),
            "sorted and deduplicated"
        );
        let printed = kappe::policy::join_caps(&caps);
        assert_eq!(parse_cap_list(&printed).ok(), Some(caps));
    }
    if let Ok(rule) = GlobRule::parse(s) {
        let printed = rule.to_string();
        assert_eq!(GlobRule::parse(&printed).ok(), Some(rule.clone()));
        // The glob is matched against the input itself and a few campaign-like names.
        for name in [s, "rt-shoes", "", "a*b?c"] {
            let _ = rule.glob.matches(name);
        }
    }
    if let Ok(source) = Source::parse(s) {
        let _ = source.describe();
        let _ = source.from_body(data, None);
        let json = serde_json::json!({"campaign": {"id": s}, "list": [s, 1, null]});
        let _ = source.from_body(data, Some(&json));
    }
    // Split the input in two: a glob and a text to match, both arbitrary.
    if let Some((pattern, text)) = s.split_once('\n') {
        let _ = kappe::policy::glob_match(pattern.as_bytes(), text.as_bytes());
    }
});
