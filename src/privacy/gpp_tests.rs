//! GPP tests: the spec's header examples, and headers and US sections built by a small encoder.

use super::*;
use crate::privacy::bits::writer::BitWriter;
use crate::privacy::{tcf, usp};

/// Encodes a GPP header listing `ids` one by one (no groups).
pub(crate) fn header(ids: &[u16]) -> String {
    let mut w = BitWriter::new();
    w.int(3, 6).int(1, 6).int(ids.len() as u64, 12);
    let mut last = 0;
    for &id in ids {
        w.bool(false).fibonacci(u32::from(id - last));
        last = id;
    }
    w.finish()
}

/// US section opt-out field values: 0 N/A, 1 opted out, 2 did not opt out.
#[derive(Clone, Copy)]
pub(crate) struct Us {
    pub(crate) version: u64,
    pub(crate) sale: u64,
    pub(crate) sharing: u64,
    pub(crate) targeted: u64,
    pub(crate) gpc: Option<bool>,
}

impl Us {
    pub(crate) const NONE: Us = Us {
        version: 1,
        sale: 2,
        sharing: 2,
        targeted: 2,
        gpc: None,
    };

    fn gpc_sub(&self, s: &mut String) {
        if let Some(g) = self.gpc {
            let mut w = BitWriter::new();
            w.int(1, 2).bool(g);
            s.push('.');
            s.push_str(&w.finish());
        }
    }

    pub(crate) fn usnat(&self) -> String {
        let (sensitive, child) = if self.version == 2 { (16, 3) } else { (12, 2) };
        let mut w = BitWriter::new();
        w.int(self.version, 6);
        for _ in 0..6 {
            w.int(1, 2);
        }
        w.int(self.sale, 2)
            .int(self.sharing, 2)
            .int(self.targeted, 2);
        for _ in 0..sensitive + child {
            w.int(0, 2);
        }
        w.int(0, 2).int(2, 2).int(2, 2).int(1, 2);
        let mut s = w.finish();
        self.gpc_sub(&mut s);
        s
    }

    pub(crate) fn usca(&self) -> String {
        let mut w = BitWriter::new();
        w.int(1, 6).int(1, 2).int(1, 2).int(1, 2);
        w.int(self.sale, 2).int(self.sharing, 2);
        for _ in 0..9 + 2 {
            w.int(0, 2);
        }
        w.int(0, 2).int(2, 2).int(2, 2).int(1, 2);
        let mut s = w.finish();
        self.gpc_sub(&mut s);
        s
    }
}

/// The header examples of the GPP spec and the real-world `DBAA`.
#[test]
fn spec_header_examples() {
    let ids = |s: &'static str| decode(s).unwrap().section_ids().to_vec();
    assert_eq!(decode("DBABM~x").unwrap().section_ids(), &[2]);
    assert_eq!(ids("DBACNY~a~b"), vec![2, 6]);
    assert_eq!(ids("DBABjw~a~b"), vec![5, 6]);
    assert_eq!(ids("DBAA"), Vec::<u16>::new());
}

/// `DBADNZg` is [2, 6, 8] (iab_gpp 0.1.2 decodes it as [2, 6, 6]).
#[test]
fn dbadnzg_is_2_6_8() {
    let g = decode("DBADNZg~a~b~c").unwrap();
    assert_eq!(g.section_ids(), &[2, 6, 8]);
    assert_eq!(g.section(8), Some("c"));
    assert_eq!(g.section(6), Some("b"));
    assert_eq!(header(&[2, 6, 8]), "DBADNZg");
}

/// The header alone is checked for its section count: text and ids must agree.
#[test]
fn section_count_must_match_header() {
    assert_eq!(
        decode("DBADNZg~a~b").unwrap_err(),
        DecodeError::SectionCount
    );
    assert_eq!(decode("DBADNZg").unwrap_err(), DecodeError::SectionCount);
    assert_eq!(decode("DBAA~x").unwrap_err(), DecodeError::SectionCount);
}

/// Malformed headers are errors: wrong type or version, bad characters, huge groups,
/// truncation, over-long input.
#[test]
fn malformed_headers_are_errors() {
    let mut w = BitWriter::new();
    w.int(3, 6)
        .int(1, 6)
        .int(1, 12)
        .bool(true)
        .fibonacci(1)
        .fibonacci(10_000);
    let huge_group = w.finish();
    let long = "A".repeat(MAX_GPP_LEN + 1);
    for s in [
        "CBABM~x",
        "DCABM~x",
        "D+AB~x",
        "",
        "~",
        "DBA",
        "DBAB",
        huge_group.as_str(),
        &long,
    ] {
        assert!(decode(s).is_err(), "{s:?} must be rejected");
    }
}

/// `gpp_sid` lists ids; `-1` means none applies.
#[test]
fn sid_parsing() {
    assert_eq!(parse_sid("-1").unwrap().as_slice(), &[] as &[u16]);
    assert_eq!(parse_sid("2, 6").unwrap().as_slice(), &[2, 6]);
    assert!(parse_sid("7").unwrap().contains(7));
    assert!(parse_sid("x").is_err());
    assert!(parse_sid("").is_err());
    assert!(parse_sid(&"1,".repeat(40)).is_err());
}

/// usnat: each of SaleOptOut, SharingOptOut, TargetedAdvertisingOptOut = 1 or Gpc = 1 opts
/// out; 0 and 2 do not. Versions 1 and 2 both decode.
#[test]
fn usnat_opt_out_fields() {
    for version in [1, 2] {
        let base = Us {
            version,
            ..Us::NONE
        };
        assert!(!decode_usnat(&base.usnat()).unwrap().opted_out());
        let na = Us {
            sale: 0,
            sharing: 0,
            targeted: 0,
            ..base
        };
        assert!(!decode_usnat(&na.usnat()).unwrap().opted_out());
        let sale = decode_usnat(&Us { sale: 1, ..base }.usnat()).unwrap();
        assert!(sale.sale && sale.opted_out());
        let sharing = decode_usnat(&Us { sharing: 1, ..base }.usnat()).unwrap();
        assert!(sharing.sharing && !sharing.sale && sharing.opted_out());
        let targeted = decode_usnat(
            &Us {
                targeted: 1,
                ..base
            }
            .usnat(),
        )
        .unwrap();
        assert!(targeted.targeted_advertising && targeted.opted_out());
        let gpc = decode_usnat(
            &Us {
                gpc: Some(true),
                ..base
            }
            .usnat(),
        )
        .unwrap();
        assert!(gpc.gpc && gpc.opted_out());
        let no_gpc = decode_usnat(
            &Us {
                gpc: Some(false),
                ..base
            }
            .usnat(),
        )
        .unwrap();
        assert!(!no_gpc.opted_out());
    }
}

/// usnat errors: bad version, truncated core or sub-section. An undefined field value (3) is
/// not an error and does not hide an opt-out elsewhere.
#[test]
fn usnat_malformed_is_error() {
    let v3 = Us {
        version: 3,
        ..Us::NONE
    }
    .usnat();
    assert!(decode_usnat(&v3).is_err());
    let full = Us::NONE.usnat();
    assert!(decode_usnat(&full[..full.len() - 2]).is_err());
    let odd = decode_usnat(
        &Us {
            sale: 3,
            sharing: 1,
            ..Us::NONE
        }
        .usnat(),
    )
    .unwrap();
    assert!(!odd.sale && odd.sharing && odd.opted_out());
    assert!(decode_usnat("").is_err());
    assert!(decode_usnat(&format!("{full}.")).is_err());
}

/// usca: SaleOptOut, SharingOptOut or Gpc opt out.
#[test]
fn usca_opt_out_fields() {
    assert!(!decode_usca(&Us::NONE.usca()).unwrap().opted_out());
    assert!(
        decode_usca(
            &Us {
                sale: 1,
                ..Us::NONE
            }
            .usca()
        )
        .unwrap()
        .sale
    );
    assert!(
        decode_usca(
            &Us {
                sharing: 1,
                ..Us::NONE
            }
            .usca()
        )
        .unwrap()
        .sharing
    );
    assert!(
        decode_usca(
            &Us {
                gpc: Some(true),
                ..Us::NONE
            }
            .usca()
        )
        .unwrap()
        .gpc
    );
    let full = Us::NONE.usca();
    assert!(decode_usca(&full[..full.len() - 2]).is_err());
}

/// Other US states: only the GPC sub-section is read.
#[test]
fn us_state_gpc_only() {
    let with = Us {
        gpc: Some(true),
        ..Us::NONE
    }
    .usnat();
    assert!(decode_us_state_gpc(&with).unwrap().opted_out());
    assert!(!decode_us_state_gpc(&Us::NONE.usnat()).unwrap().opted_out());
}

/// A full GPP string with tcfeuv2, uspv1, usnat and usca sections: each section's text reaches
/// its decoder intact.
#[test]
fn full_string_with_tcf_usp_usnat_usca() {
    let tc = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA";
    let s = format!(
        "{}~{tc}~1YNN~{}~{}",
        header(&[2, 6, 7, 8]),
        Us {
            targeted: 1,
            ..Us::NONE
        }
        .usnat(),
        Us::NONE.usca()
    );
    let g = decode(&s).unwrap();
    assert_eq!(g.section_ids(), &[2, 6, 7, 8]);
    assert_eq!(tcf::decode(g.section(2).unwrap()).unwrap().cmp_id, 31);
    assert!(!usp::decode(g.section(6).unwrap()).unwrap().opted_out());
    assert!(decode_usnat(g.section(7).unwrap()).unwrap().opted_out());
    assert!(!decode_usca(g.section(8).unwrap()).unwrap().opted_out());
}

/// A truncated TCF section inside GPP is a TCF decode error (iab_gpp's invalid_tcfeuv2_section).
#[test]
fn truncated_tcf_section_is_error() {
    let s = "DBABMA~CQLvHAAQLvHAAAKA4DENBaFsAP_gAEPgAAwIKxtX_G9_";
    let g = decode(s).unwrap();
    assert!(tcf::decode(g.section(2).unwrap()).is_err());
}

/// Vectors from iabgpp-es's usnat v1 tests: the default string, and one with SaleOptOut 1,
/// SharingOptOut 2, TargetedAdvertisingOptOut 3 and Gpc set.
#[test]
fn iabgpp_es_usnat_vectors() {
    let default = decode_usnat("BAAAAAAAAQA.QA").unwrap();
    assert_eq!(default, UsOptOut::default());
    let set = decode_usnat("BbbbGxsbFbA.YA").unwrap();
    assert!(set.sale && !set.sharing && !set.targeted_advertising && set.gpc);
}
