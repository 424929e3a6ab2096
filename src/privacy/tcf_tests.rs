//! TCF decoder tests: the public vectors of the reference, the must-reject vectors, and strings
//! built by a small encoder for the validity and legal-basis rules.

use super::*;
use crate::privacy::bits::writer::BitWriter;

const T1: &str = "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA";
const T2: &str =
    "COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA";
const T3_TAIL: &str = ".IBAgAAAgAIAwgAgAAAAEAAAACA.QAagAQAgAIAwgA";
const T4: &str = "COv__-wOv__-wC2AAAENAPCgAAAAAAAAAAAAA_wAQA_gEBABAEAAAA";
const T5: &str = "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAYFfAV-BVkAGBVYFWAAA";
const T6: &str = "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAQFfgUbABAUaAAA";
const T7: &str = "COwxsONOwxsONKpAAAENAdCAAMAAAAAAAAAAAAAAAAAA";
const T8: &str = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA";
const T9_TAIL: &str = ".IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUw.ZAAgH9794ulA";
const T10: &str = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA";
const T11: &str = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA";
pub(crate) const T12: &str = "CQMC4oAQMC4oAPoABABGBaEAAP_gAP_gAAqIKxtX_G__bXlv-X736ftkeY1f99h77sQxBhbJs-4FzLvW_JwX32E7NE36tqYKmRIAu3TBIQNtHJjURVChaogVrTDsaEyUoTtKJ-BkiHMRY2dYCFxvm4tjeQCZ5vr_91d52R_t7dr-3dzyy5hnv3a9_-S1WJidK5-tHfv9bROb-_I-9_x-_4v4_N7pE2_eT1t_tWvt739-8tv_9__99__7_f______3_-_f__f____grG1f8b_9teW_5fvfp-2R5jV_32HvuxDEGFsmz7gXMu9b8nBffYTs0Tfq2pgqZEgC7dMEhA20cmNRFUKFqiBWtMOxoTJShO0on4GSIcxFjZ1gIXG-bi2N5AJnm-v_3V3nZH-3t2v7d3PLLmGe_dr3_5LVYmJ0rn60d-_1tE5v78j73_H7_i_j83ukTb95PW3-1a-3vf37y2__3__33__v9_______f_79__9____-AAA.QKxtX_G__bXlv-X736ftkeY1f99h77sQxBhbJs-4FzLvW_JwX32E7NE36tqYKmRIAu3TBIQNtHJjURVChaogVrTDsaEyUoTtKJ-BkiHMRY2dYCFxvm4tjeQCZ5vr_91d52R_t7dr-3dzyy5hnv3a9_-S1WJidK5-tHfv9bROb-_I-9_x-_4v4_N7pE2_eT1t_tWvt739-8tv_9__99__7_f______3_-_f__f____gAA.IKxtX_G__bXlv-X736ftkeY1f99h77sQxBhbJs-4FzLvW_JwX32E7NE36tqYKmRIAu3TBIQNtHJjURVChaogVrTDsaEyUoTtKJ-BkiHMRY2dYCFxvm4tjeQCZ5vr_91d52R_t7dr-3dzyy5hnv3a9_-S1WJidK5-tHfv9bROb-_I-9_x-_4v4_N7pE2_eT1t_tWvt739-8tv_9__99__7_f______3_-_f__f____gAA";
const T13: &str = "COx3XOeOx3XOeLkAAAENAfCIAAAAAHgAAIAAAAAAAAAA";
const T14: &str =
    "COvcSpYOvcSpYC9AAAENAPCAAAAAAAAAAAAACvwDQABAAIAAYABIAC4AJQAagA9ACEAPgAjIBJoCvAK-AAAAAA";
const T15: &str = "COwJz-rOwJz-rMLAEAFRAPCgAAAAAAAAAAqIAAAAAAAA";
const T16: &str = "CO5dPi4O5dPx2B7DvCENA2CgAAAAAAAAAAAAGewAAM8gAAAA.YAAAAAAAAAAA";

fn ids(set: &VendorSet<'_>) -> Vec<u16> {
    set.iter().collect()
}

fn purposes(bits: u32) -> Vec<u8> {
    (1..=24).filter(|&p| has(bits, 24, p)).collect()
}

/// T1 (iabtcf-java): every asserted core field.
#[test]
fn t1_core_fields() {
    let tc = decode(T1).unwrap();
    assert_eq!(tc.version, 2);
    assert_eq!(tc.created, 15_800_580_600);
    assert_eq!(tc.last_updated, 16_122_852_600);
    assert_eq!((tc.cmp_id, tc.cmp_version, tc.consent_screen), (675, 2, 1));
    assert_eq!(tc.consent_language(), "EN");
    assert_eq!((tc.vendor_list_version, tc.policy_version), (15, 2));
    assert!(!tc.is_service_specific && !tc.use_non_standard_texts);
    assert!(tc.special_feature(1) && !tc.special_feature(2));
    assert_eq!(purposes(tc.purposes_consent), vec![2, 10]);
    assert_eq!(purposes(tc.purposes_li_transparency), vec![2, 9]);
    assert!(tc.purpose_one_treatment);
    assert_eq!(tc.publisher_cc(), "AA");
    assert!(!tc.vendor_consents.is_range_encoded());
    assert_eq!(tc.vendor_consents.max_vendor_id(), 0);
    assert!(ids(&tc.vendor_consents).is_empty());
    assert!(ids(&tc.vendor_legitimate_interests).is_empty());
    assert!(tc.publisher_restrictions.is_empty());
}

/// T2/T3/T3b (iabtcf-java): bitfield vendors, DisclosedVendors, AllowedVendors, PublisherTC
/// with a trailing `=`.
#[test]
fn t2_t3_bitfields_and_segments() {
    let tc = decode(T2).unwrap();
    assert_eq!(tc.created, 15_754_855_800);
    assert_eq!(tc.last_updated, 15_760_039_800);
    assert_eq!((tc.cmp_id, tc.cmp_version, tc.consent_screen), (2, 1, 1));
    assert_eq!((tc.vendor_list_version, tc.policy_version), (7, 2));
    assert!(tc.special_feature(1));
    assert_eq!(purposes(tc.purposes_consent), vec![3, 4, 5, 6, 7, 8, 9]);
    assert!(purposes(tc.purposes_li_transparency).is_empty());
    assert_eq!(tc.publisher_cc(), "AQ");
    assert_eq!(tc.vendor_consents.max_vendor_id(), 98);
    assert_eq!(ids(&tc.vendor_consents), vec![23, 37, 47, 48, 53, 65, 98]);
    assert_eq!(tc.vendor_legitimate_interests.max_vendor_id(), 129);
    assert_eq!(
        ids(&tc.vendor_legitimate_interests),
        vec![37, 47, 48, 53, 65, 98, 129]
    );

    let t3 = format!("{T2}{T3_TAIL}");
    let tc = decode(&t3).unwrap();
    assert_eq!(
        ids(tc.disclosed_vendors.as_ref().unwrap()),
        vec![23, 37, 47, 48, 53, 65, 98, 129]
    );
    assert_eq!(
        ids(tc.allowed_vendors.as_ref().unwrap()),
        vec![12, 23, 37, 47, 48, 53]
    );

    let t3b = format!("{t3}.cAAAAAAAITg=");
    let tc = decode(&t3b).unwrap();
    assert_eq!(tc.publisher_tc.unwrap().purposes_consent.count_ones(), 1);
}

/// T4, T5, T6, T14, T15, T16: range encodings, MaxVendorId 0 and empty range lists.
#[test]
fn range_encoded_vectors() {
    let tc = decode(T4).unwrap();
    assert_eq!(
        (tc.created, tc.last_updated),
        (15_837_691_824, 15_837_691_824)
    );
    assert_eq!(tc.cmp_id, 182);
    assert!(tc.is_service_specific);
    assert!(tc.vendor_consents.is_range_encoded());
    assert_eq!(tc.vendor_consents.max_vendor_id(), 127);
    assert_eq!(ids(&tc.vendor_consents), vec![127]);
    assert_eq!(tc.vendor_legitimate_interests.max_vendor_id(), 128);
    assert_eq!(ids(&tc.vendor_legitimate_interests), vec![128]);

    let tc = decode(T5).unwrap();
    assert_eq!(tc.cmp_id, 746);
    assert_eq!(ids(&tc.vendor_consents), vec![702, 703]);
    assert_eq!(ids(&tc.vendor_legitimate_interests), vec![683, 684]);

    let tc = decode(T6).unwrap();
    assert_eq!(ids(&tc.vendor_consents), vec![703]);
    assert_eq!(ids(&tc.vendor_legitimate_interests), vec![653]);

    let tc = decode(T14).unwrap();
    assert_eq!(tc.created, 15_828_331_096);
    assert_eq!(tc.last_updated, tc.created);
    assert_eq!(tc.cmp_id, 189);
    assert!(tc.vendor_consents.is_range_encoded());
    assert_eq!(tc.vendor_consents.max_vendor_id(), 351);
    assert_eq!(
        ids(&tc.vendor_consents),
        vec![2, 8, 12, 18, 23, 37, 53, 61, 66, 248, 281, 294, 350, 351]
    );

    let tc = decode(T15).unwrap();
    assert_eq!(tc.vendor_consents.max_vendor_id(), 0);
    assert_eq!((tc.vendor_list_version, tc.cmp_id), (15, 779));
    assert_eq!((tc.consent_language(), tc.publisher_cc()), ("FR", "FR"));

    let tc = decode(T16).unwrap();
    assert_eq!(
        (tc.cmp_id, tc.cmp_version, tc.consent_screen),
        (123, 239, 2)
    );
    assert_eq!(tc.vendor_list_version, 54);
    assert!(tc.vendor_consents.is_range_encoded());
    assert_eq!(tc.vendor_consents.max_vendor_id(), 829);
    assert!(ids(&tc.vendor_consents).is_empty());
    assert_eq!(tc.vendor_legitimate_interests.max_vendor_id(), 828);
    assert!(ids(&tc.vendor_legitimate_interests).is_empty());
    let p = tc.publisher_tc.unwrap();
    assert_eq!((p.purposes_consent, p.purposes_li_transparency), (0, 0));
}

/// T7, T8, T10, T13: purposes, vendors, dates, special features.
#[test]
fn purpose_and_metadata_vectors() {
    let tc = decode(T7).unwrap();
    assert_eq!((tc.cmp_id, tc.vendor_list_version), (681, 29));
    assert_eq!(purposes(tc.purposes_consent), vec![1, 2]);
    assert!(!tc.vendor_consents.contains(10));

    let tc = decode(T8).unwrap();
    assert_eq!(tc.created, 15_822_430_593);
    assert_eq!(tc.created_secs(), 1_582_243_059);
    assert_eq!((tc.cmp_id, tc.cmp_version), (27, 0));
    assert_eq!(tc.consent_language(), "EN");
    assert_eq!((tc.vendor_list_version, tc.policy_version), (15, 2));
    assert!(!tc.is_service_specific);
    assert_eq!(purposes(tc.purposes_consent), vec![1, 2, 3]);
    assert_eq!(ids(&tc.vendor_consents), vec![2, 6, 8]);
    assert_eq!(ids(&tc.vendor_legitimate_interests), vec![2, 6, 8]);
    assert_eq!(tc.publisher_cc(), "AA");

    let tc = decode(T10).unwrap();
    assert_eq!(tc.created, 16_504_920_000);
    assert_eq!((tc.cmp_id, tc.cmp_version, tc.consent_screen), (31, 640, 1));
    assert_eq!(tc.consent_language(), "EN");
    assert_eq!((tc.vendor_list_version, tc.policy_version), (126, 2));
    assert!(tc.is_service_specific);
    assert_eq!(tc.publisher_cc(), "DE");
    assert_eq!((tc.purposes_consent, tc.purposes_li_transparency), (0, 0));
    assert!(ids(&tc.vendor_consents).is_empty());

    let tc = decode(T13).unwrap();
    assert!(tc.purpose_one_treatment);
    assert!(tc.special_feature(1) && !tc.special_feature(2));
    assert_eq!(purposes(tc.purposes_li_transparency), vec![2, 3, 4, 5]);
    assert_eq!((tc.cmp_id, tc.vendor_list_version), (740, 31));
}

/// T9 (iab_gpp): DisclosedVendors first, then PublisherTC with custom purposes.
#[test]
fn t9_disclosed_and_publisher_tc() {
    let s = format!("{T8}{T9_TAIL}");
    let tc = decode(&s).unwrap();
    let disclosed = ids(tc.disclosed_vendors.as_ref().unwrap());
    assert_eq!(disclosed.len(), 79);
    assert_eq!(&disclosed[..8], &[2, 6, 8, 12, 18, 23, 37, 42]);
    assert_eq!(disclosed.last(), Some(&720));
    let p = tc.publisher_tc.unwrap();
    assert_eq!(purposes(p.purposes_consent), vec![3, 16]);
    let mut li: Vec<u8> = (1..=7)
        .chain(9..=12)
        .chain(14..=19)
        .chain(21..=24)
        .collect();
    li.sort_unstable();
    assert_eq!(purposes(p.purposes_li_transparency), li);
    let n = u32::from(p.num_custom_purposes);
    let custom =
        |bits: u64| -> Vec<u32> { (1..=n).filter(|i| (bits >> (n - i)) & 1 == 1).collect() };
    assert_eq!(custom(p.custom_purposes_consent), vec![1, 2, 4]);
    assert_eq!(custom(p.custom_purposes_li_transparency), vec![2, 4]);
}

/// T11 (TCF 2.3 spec example) decodes but is not policy-valid: its policy version is 2.
#[test]
fn t11_decodes_but_policy_version_2_is_invalid() {
    let tc = decode(T11).unwrap();
    assert_eq!(tc.created, 17_489_088_000);
    assert_eq!(tc.last_updated, tc.created);
    assert_eq!(
        (tc.cmp_id, tc.vendor_list_version, tc.policy_version),
        (880, 48, 2)
    );
    assert!(tc.is_service_specific);
    assert_eq!(tc.publisher_cc(), "DE");
    assert_eq!(tc.purposes_consent, 0);
    assert_eq!(ids(&tc.vendor_consents), vec![1, 2, 3, 4]);
    assert_eq!(
        ids(tc.disclosed_vendors.as_ref().unwrap()),
        vec![1, 2, 3, 4, 5, 100, 404]
    );
    assert_eq!(tc.publisher_tc.unwrap().purposes_consent, 0);
    assert_eq!(
        tc.validate(Some(1), 1_800_000_000),
        Err(Invalid::PolicyVersion(2))
    );
}

/// T12 (a real 2025 "accept all"): policy 4, 870 consented vendors, LI bits for 3–6 that must
/// not count; it is not service-specific and therefore not valid.
#[test]
fn t12_real_world_accept_all() {
    let tc = decode(T12).unwrap();
    assert_eq!(tc.created, 17_381_952_000);
    assert_eq!((tc.cmp_id, tc.cmp_version), (1000, 1));
    assert_eq!(tc.consent_language(), "BG");
    assert_eq!((tc.vendor_list_version, tc.policy_version), (90, 4));
    assert!(!tc.is_service_specific);
    assert_eq!(purposes(tc.purposes_consent), (1..=11).collect::<Vec<u8>>());
    assert_eq!(
        purposes(tc.purposes_li_transparency),
        (1..=11).collect::<Vec<u8>>()
    );
    assert_eq!(tc.publisher_cc(), "FR");
    assert!(!tc.vendor_consents.is_range_encoded());
    assert_eq!(tc.vendor_consents.max_vendor_id(), 1379);
    assert_eq!(tc.vendor_consents.iter().count(), 870);
    assert!(tc.vendor_consents.contains(755));
    assert_eq!(tc.allowed_vendors.unwrap().iter().count(), 870);
    assert_eq!(tc.disclosed_vendors.unwrap().iter().count(), 870);
    assert_eq!(
        tc.permission(Some(755), 1_800_000_000),
        Err(Invalid::NotServiceSpecific)
    );
}

/// Every must-reject vector of the reference is an error (and nothing panics).
#[test]
fn must_reject_vectors_are_errors() {
    let base = "CONciguONcjGKADACHENAOCIAC0ta__AACiQA";
    let mut bad: Vec<String> = [
        "BONciguONcjGKADACHENAOCIAC0ta__AACiQABgAAYA",
        "CONciguONcjGKADACHENAACIAC0ta__AACiQABgAAYA",
        "CONciguONcjGKADACHENAOCIAC0ta__AACiQAA",
        "CONciguONcjGKADACHENAOCIAC0ta__AACiQAeAA",
        "Bg",
        "CA==",
        "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAA",
        "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA.YA",
        "COtybn4PA+zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA",
        "",
        ".",
        "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for tail in [
        "BwAQQ",
        "BwAYQAC",
        "BwAgABA", // truncated range entries
        "BwAgAAAAA",
        "BwAgACAAA",
        "BwAgABAAAA",
        "BwAgABAAEA", // vendor 0 or > MaxVendorId
        "BwAoABAACA", // start > end
    ] {
        bad.push(format!("{base}{tail}"));
    }
    for s in &bad {
        assert!(decode(s).is_err(), "{s:?} must be rejected");
    }
}

/// Input over the length cap is rejected before decoding.
#[test]
fn overlong_input_is_rejected_up_front() {
    let s = format!("{T1}.{}", "A".repeat(MAX_TC_LEN));
    assert_eq!(
        decode(&s).unwrap_err(),
        DecodeError::TooLong { max: MAX_TC_LEN }
    );
}

// ---- a small encoder for the rules ----

/// 2025-06-01, before the TCF 2.3 cut-off.
pub(crate) const BEFORE_23: u64 = 1_748_736_000;
/// 2026-04-01, after it.
pub(crate) const AFTER_23: u64 = 1_775_001_600;
pub(crate) const NOW: u64 = 1_780_000_000;
pub(crate) const V: u16 = 755;

pub(crate) enum Vendors {
    Bits(Vec<u32>),
    Ranges(u16, Vec<(u16, u16)>),
}

fn vendor_section(w: &mut BitWriter, v: &Vendors) {
    match v {
        Vendors::Bits(set) => {
            let max = set.iter().copied().max().unwrap_or(0);
            w.int(u64::from(max), 16).bool(false).field(set, max);
        }
        Vendors::Ranges(max, ranges) => {
            w.int(u64::from(*max), 16)
                .bool(true)
                .int(ranges.len() as u64, 12);
            range_list(w, ranges);
        }
    }
}

fn range_list(w: &mut BitWriter, ranges: &[(u16, u16)]) {
    for &(s, e) in ranges {
        if s == e {
            w.bool(false).int(u64::from(s), 16);
        } else {
            w.bool(true).int(u64::from(s), 16).int(u64::from(e), 16);
        }
    }
}

/// A publisher restriction to encode: (purpose, type, vendor ranges).
pub(crate) type RestrictionSpec = (u8, u8, Vec<(u16, u16)>);

pub(crate) struct Tc {
    pub(crate) created_secs: u64,
    pub(crate) policy: u8,
    pub(crate) service_specific: bool,
    pub(crate) pc: Vec<u32>,
    pub(crate) pli: Vec<u32>,
    pub(crate) vc: Vendors,
    pub(crate) vli: Vendors,
    /// (purpose, type, vendor ranges)
    pub(crate) restrictions: Vec<RestrictionSpec>,
    pub(crate) disclosed: Option<Vendors>,
}

impl Tc {
    /// A valid string consenting to purposes 1–4 and 7 for vendor V.
    pub(crate) fn good() -> Tc {
        Tc {
            created_secs: BEFORE_23,
            policy: 4,
            service_specific: true,
            pc: vec![1, 2, 3, 4, 7],
            pli: vec![],
            vc: Vendors::Bits(vec![u32::from(V)]),
            vli: Vendors::Bits(vec![]),
            restrictions: vec![],
            disclosed: None,
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut w = BitWriter::new();
        let ds = self.created_secs * 10;
        w.int(2, 6)
            .int(ds, 36)
            .int(ds, 36)
            .int(300, 12)
            .int(1, 12)
            .int(1, 6);
        w.int(3, 6).int(4, 6); // "DE"
        w.int(150, 12).int(u64::from(self.policy), 6);
        w.bool(self.service_specific).bool(false).int(0, 12);
        w.field(&self.pc, 24).field(&self.pli, 24).bool(false);
        w.int(3, 6).int(4, 6);
        vendor_section(&mut w, &self.vc);
        vendor_section(&mut w, &self.vli);
        w.int(self.restrictions.len() as u64, 12);
        for (purpose, kind, ranges) in &self.restrictions {
            w.int(u64::from(*purpose), 6).int(u64::from(*kind), 2);
            w.int(ranges.len() as u64, 12);
            range_list(&mut w, ranges);
        }
        let mut s = w.finish();
        if let Some(d) = &self.disclosed {
            let mut w = BitWriter::new();
            w.int(1, 3);
            vendor_section(&mut w, d);
            s.push('.');
            s.push_str(&w.finish());
        }
        s
    }

    fn permission(&self, vendor: Option<u16>) -> Result<Permission, Invalid> {
        let s = self.encode();
        decode(&s)
            .expect("encoder output decodes")
            .permission(vendor, NOW)
    }
}

const ALL: Permission = Permission {
    retargeting: true,
    storage: true,
};

/// The encoder's base string is valid and grants retargeting and storage.
#[test]
fn full_consent_allows_retargeting() {
    assert_eq!(Tc::good().permission(Some(V)), Ok(ALL));
    assert_eq!(Tc::good().permission(None), Ok(ALL));
}

/// Policy versions below 4 are invalid; 4 and 5 are accepted.
#[test]
fn policy_version_below_4_is_invalid() {
    for (p, ok) in [(2, false), (3, false), (4, true), (5, true)] {
        let tc = Tc {
            policy: p,
            ..Tc::good()
        };
        assert_eq!(tc.permission(Some(V)).is_ok(), ok, "policy {p}");
    }
}

/// IsServiceSpecific=0 makes the string invalid.
#[test]
fn not_service_specific_is_invalid() {
    let tc = Tc {
        service_specific: false,
        ..Tc::good()
    };
    assert_eq!(tc.permission(Some(V)), Err(Invalid::NotServiceSpecific));
}

/// Purposes 1, 3 and 4 each need consent; legitimate interest for 3 and 4 is ignored.
#[test]
fn purposes_1_3_4_need_consent_and_li_does_not_count() {
    for missing in [1u32, 3, 4] {
        let tc = Tc {
            pc: [1, 2, 3, 4].into_iter().filter(|&p| p != missing).collect(),
            pli: vec![1, 2, 3, 4, 5, 6],
            vli: Vendors::Bits(vec![u32::from(V)]),
            ..Tc::good()
        };
        let p = tc.permission(Some(V)).unwrap();
        assert!(
            !p.retargeting,
            "purpose {missing} by LI must not allow retargeting"
        );
        assert_eq!(p.storage, missing != 1, "storage needs purpose 1 consent");
    }
}

/// Purpose 2 may rest on legitimate interest (frequency capping), with vendor LI.
#[test]
fn purpose_2_by_legitimate_interest_allows_storage() {
    let tc = Tc {
        pc: vec![1, 3, 4],
        pli: vec![2],
        vli: Vendors::Bits(vec![u32::from(V)]),
        ..Tc::good()
    };
    assert_eq!(tc.permission(Some(V)), Ok(ALL));
    let no_vendor_li = Tc {
        pc: vec![1, 3, 4],
        pli: vec![2],
        ..Tc::good()
    };
    assert!(!no_vendor_li.permission(Some(V)).unwrap().storage);
}

/// With a vendor id configured, vendor consent is required (bitfield and range encodings).
#[test]
fn vendor_consent_required_when_vendor_id_set() {
    let other = Tc {
        vc: Vendors::Bits(vec![1, 2, 754, 756]),
        ..Tc::good()
    };
    assert!(!other.permission(Some(V)).unwrap().retargeting);
    assert!(other.permission(None).unwrap().retargeting);
    let ranged = Tc {
        vc: Vendors::Ranges(2000, vec![(1, 10), (700, 800)]),
        ..Tc::good()
    };
    assert_eq!(ranged.permission(Some(V)), Ok(ALL));
    assert!(!ranged.permission(Some(801)).unwrap().retargeting);
}

/// A type-0 (not allowed) publisher restriction on purpose 1, 3 or 4 covering the vendor denies
/// retargeting; one covering other vendors does not.
#[test]
fn publisher_restriction_not_allowed_denies() {
    for purpose in [1u8, 3, 4] {
        let tc = Tc {
            restrictions: vec![(purpose, 0, vec![(700, 800)])],
            ..Tc::good()
        };
        assert!(
            !tc.permission(Some(V)).unwrap().retargeting,
            "purpose {purpose}"
        );
        let elsewhere = Tc {
            restrictions: vec![(purpose, 0, vec![(1, 700)])],
            ..Tc::good()
        };
        assert_eq!(elsewhere.permission(Some(V)), Ok(ALL));
    }
    // Require-LI on purpose 3 is impossible to meet: LI never counts there.
    let li = Tc {
        pli: vec![3],
        vli: Vendors::Bits(vec![u32::from(V)]),
        restrictions: vec![(3, 2, vec![(V, V)])],
        ..Tc::good()
    };
    assert!(!li.permission(Some(V)).unwrap().retargeting);
    // Require-consent is met by the consent that is there.
    let consent = Tc {
        restrictions: vec![(4, 1, vec![(V, V)])],
        ..Tc::good()
    };
    assert_eq!(consent.permission(Some(V)), Ok(ALL));
}

/// After 2026-02-28 a DisclosedVendors segment listing the vendor is required.
#[test]
fn tcf_23_requires_disclosed_vendor() {
    let missing = Tc {
        created_secs: AFTER_23,
        ..Tc::good()
    };
    assert_eq!(missing.permission(Some(V)), Err(Invalid::NotDisclosed));
    assert_eq!(missing.permission(None), Err(Invalid::NotDisclosed));
    let unlisted = Tc {
        created_secs: AFTER_23,
        disclosed: Some(Vendors::Bits(vec![1, 2, 3])),
        ..Tc::good()
    };
    assert_eq!(unlisted.permission(Some(V)), Err(Invalid::NotDisclosed));
    let listed = Tc {
        created_secs: AFTER_23,
        disclosed: Some(Vendors::Ranges(900, vec![(700, 900)])),
        ..Tc::good()
    };
    assert_eq!(listed.permission(Some(V)), Ok(ALL));
    // Before the cut-off the segment is optional.
    assert_eq!(Tc::good().permission(Some(V)), Ok(ALL));
}

/// A string claiming to be created well after `now` is not a valid consent.
#[test]
fn created_in_the_future_is_invalid() {
    let tc = Tc {
        created_secs: NOW + 3 * 86_400,
        disclosed: Some(Vendors::Bits(vec![u32::from(V)])),
        ..Tc::good()
    };
    assert_eq!(tc.permission(Some(V)), Err(Invalid::CreatedInFuture));
}

/// Hostile input: 2,800 range entries reaching vendor 65535 (as many as fit under the length
/// cap) decode correctly from the borrowed string: vendor sets are never expanded (`VendorSet`
/// holds a cursor, not a list), so this is one linear pass per lookup.
#[test]
fn thousands_of_ranges_decode_without_expansion() {
    let ranges: Vec<(u16, u16)> = (0..2800u32)
        .map(|i| {
            let s = (i * 23 + 1) as u16;
            (s, if i == 2799 { 65535 } else { s + 7 })
        })
        .collect();
    let tc = Tc {
        vc: Vendors::Ranges(65535, ranges.clone()),
        vli: Vendors::Ranges(65535, ranges[..10].to_vec()),
        restrictions: vec![(2, 1, ranges[..40].to_vec()), (7, 0, ranges[..40].to_vec())],
        created_secs: AFTER_23,
        disclosed: Some(Vendors::Ranges(65535, ranges[..60].to_vec())),
        ..Tc::good()
    };
    let s = tc.encode();
    assert!(
        s.len() > 15_000 && s.len() <= MAX_TC_LEN,
        "{} chars",
        s.len()
    );
    let d = decode(&s).unwrap();
    assert!(std::mem::size_of::<VendorSet<'_>>() <= 64);
    assert!(d.vendor_consents.contains(65535));
    assert!(d.vendor_consents.contains(49_983) && !d.vendor_consents.contains(50_000));
    assert!(d.vendor_consents.contains(1) && d.vendor_consents.contains(8));
    assert!(!d.vendor_consents.contains(9) && !d.vendor_consents.contains(16));
    assert_eq!(d.publisher_restrictions.len(), 2);
    // Vendor 760 lies in 760..=767 (entry 33): consented, disclosed, not restricted for 1/3/4.
    assert_eq!(d.permission(Some(760), NOW), Ok(ALL));
    assert!(!d.legal_basis(7, Some(760)));
    assert_eq!(d.permission(Some(750), NOW), Err(Invalid::NotDisclosed));
}

/// The maximal range list (4,095 entries) does not fit under the length cap: rejected unread.
#[test]
fn maximal_range_list_exceeds_the_cap() {
    let ranges: Vec<(u16, u16)> = (0..4095u32).map(|i| (i as u16 + 1, 65535)).collect();
    let tc = Tc {
        vc: Vendors::Ranges(65535, ranges),
        ..Tc::good()
    };
    assert!(matches!(
        decode(&tc.encode()),
        Err(DecodeError::TooLong { .. })
    ));
}

/// A bitfield of 65535 vendors is skipped, not walked, and looked up by position.
#[test]
fn full_bitfield_lookup() {
    let tc = Tc {
        vc: Vendors::Bits(vec![1, 40_000, 65_535]),
        ..Tc::good()
    };
    let s = tc.encode();
    let d = decode(&s).unwrap();
    assert!(d.vendor_consents.contains(40_000) && d.vendor_consents.contains(65_535));
    assert!(!d.vendor_consents.contains(39_999));
    assert_eq!(ids(&d.vendor_consents), vec![1, 40_000, 65_535]);
}
