//! Tests of `evaluate`: each signal, the precedence "any opt-out wins", consent modes and the
//! honour set.

use super::*;
use crate::privacy::gpp::tests::{Us, header};
use crate::privacy::tcf::tests::{NOW, T12, Tc, V, Vendors};
use http::HeaderValue;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn eval(pairs: &[(&'static str, &str)], query: Option<&str>) -> Verdict {
    evaluate(&PrivacyConfig::default(), &headers(pairs), query, NOW)
}

fn with(cfg: &PrivacyConfig, pairs: &[(&'static str, &str)], query: Option<&str>) -> Verdict {
    evaluate(cfg, &headers(pairs), query, NOW)
}

fn labels(v: &Verdict) -> Vec<&'static str> {
    v.signals.iter().map(Signal::label).collect()
}

fn good_tc() -> String {
    Tc::good().encode()
}

const OPEN: Verdict = Verdict {
    opted_out: false,
    signals: Signals(0),
    retargeting_allowed: true,
    storage_allowed: true,
    own_cookie: false,
};

/// A request with no privacy signal at all may be retargeted and counted (outside the EU).
#[test]
fn no_signal_allows_everything() {
    assert_eq!(eval(&[], None), OPEN);
    assert_eq!(eval(&[("cookie", "a=b")], Some("x=1&y")), OPEN);
}

/// `Sec-GPC` counts only when a value (or comma item) is exactly `1`.
#[test]
fn gpc_exactly_one() {
    for v in ["1", " 1 ", "0, 1"] {
        let got = eval(&[("sec-gpc", v)], None);
        assert!(
            got.opted_out && !got.retargeting_allowed && !got.storage_allowed,
            "{v:?}"
        );
        assert_eq!(labels(&got), vec!["gpc"]);
    }
    for v in ["0", "true", "yes", "11", ""] {
        assert_eq!(eval(&[("sec-gpc", v)], None), OPEN, "{v:?}");
    }
    let two = eval(&[("sec-gpc", "0"), ("sec-gpc", "1")], None);
    assert!(two.opted_out);
}

/// `DNT` opts out when its first character is `1`; `0` is not consent, `null` is nothing.
#[test]
fn dnt_first_character() {
    assert!(eval(&[("dnt", "1")], None).opted_out);
    assert_eq!(labels(&eval(&[("dnt", "1xyz")], None)), vec!["dnt"]);
    assert_eq!(eval(&[("dnt", "0")], None), OPEN);
    assert_eq!(eval(&[("dnt", "null")], None), OPEN);
}

/// kappe's own cookie opts out and asks the proxy to insert Sec-GPC; its name is configurable.
#[test]
fn own_cookie_opts_out() {
    let v = eval(&[("cookie", "x=1; kappe_optout=1")], None);
    assert!(v.opted_out && v.own_cookie && !v.storage_allowed);
    assert_eq!(labels(&v), vec!["own_cookie"]);
    let cfg = PrivacyConfig {
        optout_cookie: "__Host-adchoice".into(),
        ..PrivacyConfig::default()
    };
    assert!(with(&cfg, &[("cookie", "__Host-adchoice=optout")], None).own_cookie);
    assert!(!with(&cfg, &[("cookie", "kappe_optout=1")], None).opted_out);
}

/// US Privacy from the query or the `usprivacy` cookie: only opt-out-of-sale `Y` opts out.
#[test]
fn us_privacy_query_and_cookie() {
    assert_eq!(eval(&[], Some("us_privacy=1YNN")), OPEN);
    assert_eq!(
        labels(&eval(&[], Some("us_privacy=1NYN"))),
        vec!["us_privacy"]
    );
    assert!(eval(&[("cookie", "usprivacy=1-Y-")], None).opted_out);
    assert_eq!(eval(&[], Some("us_privacy=1---")), OPEN);
    assert_eq!(eval(&[], Some("us_privacy=1X%20NN")), OPEN);
}

/// GPP: only applicable sections are read; a usnat opt-out opts out; `DBAA` and `-1` are none.
#[test]
fn gpp_sections_by_sid() {
    let s = format!(
        "{}~{}",
        header(&[7]),
        Us {
            sale: 1,
            ..Us::NONE
        }
        .usnat()
    );
    let q = format!("gpp={s}&gpp_sid=7");
    assert_eq!(labels(&eval(&[], Some(&q))), vec!["gpp"]);
    let q = format!("gpp={s}&gpp_sid=8");
    assert_eq!(eval(&[], Some(&q)), OPEN, "section 7 is not applicable");
    let q = format!("gpp={s}");
    assert!(
        eval(&[], Some(&q)).opted_out,
        "without gpp_sid opt-outs still count"
    );
    assert_eq!(eval(&[], Some("gpp=DBAA&gpp_sid=-1")), OPEN);
    assert_eq!(eval(&[("cookie", "gpp=DBAA; gpp_sid=-1")], None), OPEN);
    let ca = format!(
        "{}~{}",
        header(&[8]),
        Us {
            gpc: Some(true),
            ..Us::NONE
        }
        .usca()
    );
    let q = format!("gpp={ca}&gpp_sid=8");
    assert!(eval(&[], Some(&q)).opted_out);
    let usp = format!("gpp={}~1YYN&gpp_sid=6", header(&[6]));
    assert!(eval(&[], Some(&usp)).opted_out);
    let q = format!("gpp={s}&gpp_sid=2%2C7");
    assert!(eval(&[], Some(&q)).opted_out, "percent-encoded sid list");
    assert_eq!(eval(&[], Some("gpp=garbage&gpp_sid=7")), OPEN);
}

/// Where `gdpr=1`, only a valid TC string with purposes 1, 3, 4 (and 2) allows anything.
#[test]
fn gdpr_requires_valid_consent() {
    let v = eval(&[], Some("gdpr=1"));
    assert!(!v.retargeting_allowed && !v.storage_allowed && !v.opted_out);
    assert_eq!(labels(&v), vec!["tcf_missing"]);

    let q = format!("gdpr=1&gdpr_consent={}", good_tc());
    let v = eval(&[], Some(&q));
    assert!(v.retargeting_allowed && v.storage_allowed);
    assert_eq!(labels(&v), vec!["tcf"]);

    let weak = Tc {
        pc: vec![1, 2],
        ..Tc::good()
    };
    let v = eval(&[], Some(&format!("gdpr=1&gdpr_consent={}", weak.encode())));
    assert!(!v.retargeting_allowed && v.storage_allowed);
    assert_eq!(labels(&v), vec!["tcf_insufficient"]);

    let v = eval(&[], Some(&format!("gdpr=1&gdpr_consent={T12}")));
    assert!(!v.retargeting_allowed && !v.storage_allowed);
    assert_eq!(labels(&v), vec!["tcf_invalid"]);
    assert_eq!(
        labels(&eval(&[], Some("gdpr=1&gdpr_consent=xx+"))),
        vec!["tcf_invalid"]
    );

    let cookie = format!("euconsent-v2={}", good_tc());
    assert!(eval(&[("cookie", &cookie)], Some("gdpr=1")).retargeting_allowed);
    assert_eq!(eval(&[], Some("gdpr=0")), OPEN);
    assert_eq!(eval(&[], Some("gdpr=0&gdpr=1")).signals.iter().count(), 1);
}

/// The configured vendor id needs vendor consent.
#[test]
fn vendor_id_needs_vendor_consent() {
    let cfg = PrivacyConfig {
        tcf_vendor_id: Some(V + 1),
        ..PrivacyConfig::default()
    };
    let q = format!("gdpr=1&gdpr_consent={}", good_tc());
    assert!(!with(&cfg, &[], Some(&q)).retargeting_allowed);
    let cfg = PrivacyConfig {
        tcf_vendor_id: Some(V),
        ..cfg
    };
    assert!(with(&cfg, &[], Some(&q)).retargeting_allowed);
}

/// A TC string inside GPP (section 2, named in gpp_sid) makes TCF apply and is used.
#[test]
fn tcf_inside_gpp() {
    let q = format!("gpp={}~{}&gpp_sid=2", header(&[2]), good_tc());
    assert_eq!(labels(&eval(&[], Some(&q))), vec!["tcf"]);
    let bad = Tc {
        policy: 3,
        ..Tc::good()
    };
    let q = format!("gpp={}~{}&gpp_sid=2", header(&[2]), bad.encode());
    let v = eval(&[], Some(&q));
    assert!(!v.retargeting_allowed);
    assert_eq!(labels(&v), vec!["tcf_invalid"]);
}

/// Any opt-out wins over a TCF consent.
#[test]
fn opt_out_beats_tcf_consent() {
    let q = format!("gdpr=1&gdpr_consent={}", good_tc());
    for h in [
        ("sec-gpc", "1"),
        ("dnt", "1"),
        ("cookie", "kappe_optout=1"),
        ("cookie", "usprivacy=1NYN"),
    ] {
        let v = eval(&[h], Some(&q));
        assert!(
            v.opted_out && !v.retargeting_allowed && !v.storage_allowed,
            "{h:?}"
        );
        assert!(v.signals.contains(Signal::Tcf));
    }
}

/// Consent mode opt-in requires a valid TC string on every request, gdpr=1 or not.
#[test]
fn opt_in_mode_requires_tcf_everywhere() {
    let cfg = PrivacyConfig {
        consent_mode: ConsentMode::OptIn,
        ..PrivacyConfig::default()
    };
    let v = with(&cfg, &[], None);
    assert!(!v.retargeting_allowed && !v.storage_allowed);
    assert_eq!(labels(&v), vec!["tcf_missing"]);
    let cookie = format!("euconsent-v2={}", good_tc());
    assert!(with(&cfg, &[("cookie", &cookie)], None).retargeting_allowed);
    // The honour set cannot switch the requirement off.
    let cfg = PrivacyConfig {
        honor: HonorSet::parse("gpc").unwrap(),
        ..cfg
    };
    assert!(!with(&cfg, &[], Some("gdpr=0")).storage_allowed);
}

/// Signals left out of `--honor` are not read.
#[test]
fn honor_set_switches_signals_off() {
    let cfg = |s: &str| PrivacyConfig {
        honor: HonorSet::parse(s).unwrap(),
        ..PrivacyConfig::default()
    };
    let all_signals: &[(&'static str, &str)] = &[
        ("sec-gpc", "1"),
        ("dnt", "1"),
        ("cookie", "kappe_optout=1; usprivacy=1NYN"),
    ];
    let gpp = format!(
        "gpp={}~{}&gpp_sid=7",
        header(&[7]),
        Us {
            sale: 1,
            ..Us::NONE
        }
        .usnat()
    );
    assert_eq!(
        labels(&with(&cfg("all"), all_signals, Some(&gpp))),
        vec!["own_cookie", "gpc", "dnt", "gpp", "us_privacy"]
    );
    for (only, label) in [
        ("cookie", "own_cookie"),
        ("gpc", "gpc"),
        ("dnt", "dnt"),
        ("gpp", "gpp"),
        ("usp", "us_privacy"),
    ] {
        assert_eq!(
            labels(&with(&cfg(only), all_signals, Some(&gpp))),
            vec![label]
        );
    }
    assert_eq!(with(&cfg("tcf"), all_signals, Some(&gpp)), OPEN);
    // Without tcf, gdpr=1 imposes no requirement.
    assert_eq!(with(&cfg("gpc,dnt"), &[], Some("gdpr=1")), OPEN);
}

/// `--honor` and `--consent-mode` parse their documented values and reject others.
#[test]
fn cli_values_parse() {
    assert_eq!(HonorSet::parse("all"), Ok(HonorSet::ALL));
    assert_eq!(
        HonorSet::parse("gpc,dnt,cookie,gpp,usp,tcf"),
        Ok(HonorSet::ALL)
    );
    let s = HonorSet::parse(" gpc , tcf").unwrap();
    assert!(s.gpc && s.tcf && !s.dnt && !s.cookie);
    assert!(HonorSet::parse("gpc,foo").unwrap_err().contains("foo"));
    assert!(HonorSet::parse("").is_err());
    assert_eq!(ConsentMode::parse("opt-in"), Ok(ConsentMode::OptIn));
    assert_eq!(ConsentMode::parse("opt-out"), Ok(ConsentMode::OptOut));
    assert!(ConsentMode::parse("maybe").is_err());
}

/// Signal labels are a fixed set of distinct snake_case names.
#[test]
fn signal_labels_are_bounded_and_distinct() {
    let mut l: Vec<_> = Signal::ALL.iter().map(|s| s.label()).collect();
    assert!(
        l.iter()
            .all(|s| s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
    l.sort_unstable();
    l.dedup();
    assert_eq!(l.len(), Signal::ALL.len());
    let all: Signals = Signal::ALL.into_iter().collect();
    assert_eq!(all.iter().count(), 9);
}

/// Query values are percent-decoded only when needed; malformed escapes stay literal.
#[test]
fn query_values_percent_decode() {
    assert!(matches!(query_value("abc"), Cow::Borrowed("abc")));
    assert_eq!(query_value("2%2C7"), "2,7");
    assert_eq!(query_value("a+b%"), "a b%");
    assert_eq!(query_value("%zz%4"), "%zz%4");
    assert_eq!(query_value("%C3%A9"), "é");
}

/// Range-encoded vendors in a gdpr_consent from the query are honoured.
#[test]
fn range_vendor_consent_from_query() {
    let tc = Tc {
        vc: Vendors::Ranges(1000, vec![(700, 800)]),
        ..Tc::good()
    };
    let cfg = PrivacyConfig {
        tcf_vendor_id: Some(V),
        ..PrivacyConfig::default()
    };
    let q = format!("gdpr=1&gdpr_consent={}", tc.encode());
    assert!(with(&cfg, &[], Some(&q)).retargeting_allowed);
}
