//! The IAB TCF v2 (2.2 / 2.3) TC string: a decoder written for hostile input, and the legal-basis
//! decision kappe needs from it.
//!
//! Decoding is syntactic: it checks the layout (version 2, every field present, vendor ranges
//! inside `MaxVendorId`, start <= end) and never allocates. Vendor sets and publisher restrictions
//! keep a cursor into the original text and are re-read on lookup, so a crafted string with
//! thousands of ranges up to vendor 65535 costs one linear pass to validate and one per lookup,
//! never a vendor-sized buffer. Policy validity (policy version >= 4, service-specific, TCF 2.3
//! disclosure) and the purposes kappe needs are judged separately by [`TcString::permission`], so
//! the public test vectors with old policy versions still decode and can be asserted field by
//! field. The string itself is never modified or re-encoded: TCF forbids altering it.

use super::DecodeError;
use super::bits::BitReader;
use crate::clock::UnixSecs;

/// The longest TC string decoded (all segments). A full bitfield for vendor 65535 is about
/// 10,900 characters; real strings are 100 to 2,000.
pub const MAX_TC_LEN: usize = 16 * 1024;
/// At most this many `.`-separated segments (core plus three known types, plus slack).
const MAX_SEGMENTS: usize = 8;
/// TCF 2.3: strings created on or after this day (2026-03-01T00:00:00Z, "after 2026-02-28")
/// must carry a DisclosedVendors segment, listing the vendor.
pub const TCF_23_CUTOFF: UnixSecs = 1_772_323_200;
/// The first TCF 2.2 policy version; smaller ones have been invalid since 2023-09-30.
pub const MIN_POLICY_VERSION: u8 = 4;

/// A decoded TC string, borrowing the text it came from.
#[derive(Clone, Debug)]
pub struct TcString<'a> {
    pub version: u8,
    /// Deciseconds since the Unix epoch.
    pub created: u64,
    /// Deciseconds since the Unix epoch.
    pub last_updated: u64,
    pub cmp_id: u16,
    pub cmp_version: u16,
    pub consent_screen: u8,
    consent_language: [u8; 2],
    pub vendor_list_version: u16,
    pub policy_version: u8,
    pub is_service_specific: bool,
    pub use_non_standard_texts: bool,
    /// Bit i-1 (from the most significant of 12) is special feature i.
    pub special_feature_opt_ins: u16,
    /// Bit i-1 (from the most significant of 24) is purpose i.
    pub purposes_consent: u32,
    pub purposes_li_transparency: u32,
    pub purpose_one_treatment: bool,
    publisher_cc: [u8; 2],
    pub vendor_consents: VendorSet<'a>,
    pub vendor_legitimate_interests: VendorSet<'a>,
    pub publisher_restrictions: Restrictions<'a>,
    pub disclosed_vendors: Option<VendorSet<'a>>,
    pub allowed_vendors: Option<VendorSet<'a>>,
    pub publisher_tc: Option<PublisherTc>,
}

/// The PublisherTC segment (type 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublisherTc {
    pub purposes_consent: u32,
    pub purposes_li_transparency: u32,
    pub num_custom_purposes: u8,
    /// Bit i-1 (from the most significant of `num_custom_purposes`) is custom purpose i.
    pub custom_purposes_consent: u64,
    pub custom_purposes_li_transparency: u64,
}

/// A set of vendor ids, as a bitfield or a list of ranges, read lazily from the string.
#[derive(Clone, Copy, Debug)]
pub struct VendorSet<'a> {
    max_vendor_id: u16,
    encoding: Encoding,
    /// Positioned at the first bit of the bitfield or of the first range entry.
    data: BitReader<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    BitField,
    Range { entries: u16 },
}

/// The publisher restrictions of the core segment.
#[derive(Clone, Copy, Debug)]
pub struct Restrictions<'a> {
    count: u16,
    data: BitReader<'a>,
}

/// What a publisher restriction demands of the vendors it lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestrictionType {
    NotAllowed,
    RequireConsent,
    RequireLegitimateInterest,
    Undefined,
}

/// One publisher restriction: a purpose, a type and the vendors it covers.
#[derive(Clone, Copy, Debug)]
pub struct Restriction<'a> {
    pub purpose: u8,
    pub kind: RestrictionType,
    vendors: RangeList<'a>,
}

/// A validated list of `(start, end)` vendor ranges, re-read on demand.
#[derive(Clone, Copy, Debug)]
struct RangeList<'a> {
    entries: u16,
    data: BitReader<'a>,
}

/// Why a decoded string does not count as a valid TCF 2.2+ consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("TCF policy version {0} is below 4")]
    PolicyVersion(u8),
    #[error("IsServiceSpecific is 0")]
    NotServiceSpecific,
    #[error("created after 2026-02-28 without a DisclosedVendors segment listing the vendor")]
    NotDisclosed,
    #[error("created in the future")]
    CreatedInFuture,
}

/// What a valid TC string permits kappe (as vendor `vendor_id`, when configured).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// Purposes 1, 3 and 4 by consent (with vendor consent), no restriction against them.
    pub retargeting: bool,
    /// Purpose 1 by consent and purpose 2 by consent or legitimate interest: a frequency-capping
    /// counter per visitor.
    pub storage: bool,
}

/// Decodes a TC string (all segments).
///
/// # Errors
/// [`DecodeError`] for anything that is not a well-formed version 2 TC string: too long, a byte
/// outside base64url, a field or range list running past the end, a range outside
/// `1..=MaxVendorId` or reversed, a vendor list version of 0, a duplicated segment.
pub fn decode(s: &str) -> Result<TcString<'_>, DecodeError> {
    if s.len() > MAX_TC_LEN {
        return Err(DecodeError::TooLong { max: MAX_TC_LEN });
    }
    let mut segments = s.split('.');
    let core = segments.next().ok_or(DecodeError::Empty)?;
    let mut tc = decode_core(BitReader::new(core)?)?;
    for (i, seg) in segments.enumerate() {
        if i + 1 >= MAX_SEGMENTS {
            return Err(DecodeError::TooManySegments);
        }
        let mut r = BitReader::new(seg)?;
        match r.read_u8(3)? {
            1 => set_once(&mut tc.disclosed_vendors, vendor_set(&mut r)?)?,
            2 => set_once(&mut tc.allowed_vendors, vendor_set(&mut r)?)?,
            3 => {
                let pc = r.read_u32(24)?;
                let pli = r.read_u32(24)?;
                let n = r.read_u8(6)?;
                let cc = r.read(u32::from(n))?;
                let cli = r.read(u32::from(n))?;
                set_once(
                    &mut tc.publisher_tc,
                    PublisherTc {
                        purposes_consent: pc,
                        purposes_li_transparency: pli,
                        num_custom_purposes: n,
                        custom_purposes_consent: cc,
                        custom_purposes_li_transparency: cli,
                    },
                )?;
            }
            // The spec says to ignore unknown segment types; a second core (type 0) is one.
            _ => {}
        }
    }
    Ok(tc)
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateSegment);
    }
    *slot = Some(value);
    Ok(())
}

fn decode_core(mut r: BitReader<'_>) -> Result<TcString<'_>, DecodeError> {
    let version = r.read_u8(6)?;
    if version != 2 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let created = r.read(36)?;
    let last_updated = r.read(36)?;
    let cmp_id = r.read_u16(12)?;
    let cmp_version = r.read_u16(12)?;
    let consent_screen = r.read_u8(6)?;
    let consent_language = letters(&mut r)?;
    let vendor_list_version = r.read_u16(12)?;
    if vendor_list_version == 0 {
        return Err(DecodeError::OutOfRange("VendorListVersion"));
    }
    let policy_version = r.read_u8(6)?;
    let is_service_specific = r.read_bool()?;
    let use_non_standard_texts = r.read_bool()?;
    let special_feature_opt_ins = r.read_u16(12)?;
    let purposes_consent = r.read_u32(24)?;
    let purposes_li_transparency = r.read_u32(24)?;
    let purpose_one_treatment = r.read_bool()?;
    let publisher_cc = letters(&mut r)?;
    let vendor_consents = vendor_set(&mut r)?;
    let vendor_legitimate_interests = vendor_set(&mut r)?;
    let publisher_restrictions = restrictions(&mut r)?;
    Ok(TcString {
        version,
        created,
        last_updated,
        cmp_id,
        cmp_version,
        consent_screen,
        consent_language,
        vendor_list_version,
        policy_version,
        is_service_specific,
        use_non_standard_texts,
        special_feature_opt_ins,
        purposes_consent,
        purposes_li_transparency,
        purpose_one_treatment,
        publisher_cc,
        vendor_consents,
        vendor_legitimate_interests,
        publisher_restrictions,
        disclosed_vendors: None,
        allowed_vendors: None,
        publisher_tc: None,
    })
}

/// Two letters, six bits each, `a`=0 … `z`=25, returned upper-case.
fn letters(r: &mut BitReader<'_>) -> Result<[u8; 2], DecodeError> {
    let mut out = [0u8; 2];
    for c in &mut out {
        let v = r.read_u8(6)?;
        if v > 25 {
            return Err(DecodeError::OutOfRange("letter"));
        }
        *c = b'A' + v;
    }
    Ok(out)
}

fn vendor_set<'a>(r: &mut BitReader<'a>) -> Result<VendorSet<'a>, DecodeError> {
    let max_vendor_id = r.read_u16(16)?;
    if r.read_bool()? {
        let entries = r.read_u16(12)?;
        let data = *r;
        range_entries(r, entries, max_vendor_id)?;
        Ok(VendorSet {
            max_vendor_id,
            encoding: Encoding::Range { entries },
            data,
        })
    } else {
        let data = *r;
        r.skip(usize::from(max_vendor_id))?;
        Ok(VendorSet {
            max_vendor_id,
            encoding: Encoding::BitField,
            data,
        })
    }
}

/// Reads and checks `entries` range entries: 1 <= start <= end <= max.
fn range_entries(r: &mut BitReader<'_>, entries: u16, max: u16) -> Result<(), DecodeError> {
    for _ in 0..entries {
        let (start, end) = range_entry(r)?;
        if start == 0 || end > max {
            return Err(DecodeError::OutOfRange("vendor id"));
        }
        if start > end {
            return Err(DecodeError::OutOfRange("vendor range start after end"));
        }
    }
    Ok(())
}

fn range_entry(r: &mut BitReader<'_>) -> Result<(u16, u16), DecodeError> {
    let is_range = r.read_bool()?;
    let start = r.read_u16(16)?;
    let end = if is_range { r.read_u16(16)? } else { start };
    Ok((start, end))
}

fn restrictions<'a>(r: &mut BitReader<'a>) -> Result<Restrictions<'a>, DecodeError> {
    let count = r.read_u16(12)?;
    let data = *r;
    for _ in 0..count {
        r.skip(8)?; // purpose id, restriction type
        let entries = r.read_u16(12)?;
        // Publisher restriction ranges may span ids of deleted vendors, so only 1 <= start <=
        // end is checked; there is no MaxVendorId here.
        range_entries(r, entries, u16::MAX)?;
    }
    Ok(Restrictions { count, data })
}

/// Iterates validated range entries. Reads cannot fail after validation; if one did, the
/// iterator simply ends.
struct Ranges<'a> {
    left: u16,
    data: BitReader<'a>,
}

impl Iterator for Ranges<'_> {
    type Item = (u16, u16);
    fn next(&mut self) -> Option<(u16, u16)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        range_entry(&mut self.data).ok()
    }
}

impl<'a> RangeList<'a> {
    fn iter(&self) -> Ranges<'a> {
        Ranges {
            left: self.entries,
            data: self.data,
        }
    }

    fn contains(&self, vendor: u16) -> bool {
        self.iter().any(|(s, e)| (s..=e).contains(&vendor))
    }
}

impl<'a> VendorSet<'a> {
    /// The `MaxVendorId` field.
    pub fn max_vendor_id(&self) -> u16 {
        self.max_vendor_id
    }

    /// True when range-encoded.
    pub fn is_range_encoded(&self) -> bool {
        matches!(self.encoding, Encoding::Range { .. })
    }

    /// Whether `vendor` is in the set, without expanding ranges.
    pub fn contains(&self, vendor: u16) -> bool {
        if vendor == 0 || vendor > self.max_vendor_id {
            return false;
        }
        match self.encoding {
            Encoding::BitField => self.data.bit_at(self.data.pos() + usize::from(vendor) - 1),
            Encoding::Range { entries } => RangeList {
                entries,
                data: self.data,
            }
            .contains(vendor),
        }
    }

    /// Every vendor in the set, ascending for bitfields and in entry order for ranges. Lazy: it
    /// never holds more than one range.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        let set = *self;
        let bits = match set.encoding {
            Encoding::BitField => Some((1..=set.max_vendor_id).filter(move |&v| set.contains(v))),
            Encoding::Range { .. } => None,
        };
        let ranges = match set.encoding {
            Encoding::Range { entries } => Some(
                Ranges {
                    left: entries,
                    data: set.data,
                }
                .flat_map(|(s, e)| s..=e),
            ),
            Encoding::BitField => None,
        };
        bits.into_iter()
            .flatten()
            .chain(ranges.into_iter().flatten())
    }
}

impl<'a> Restrictions<'a> {
    /// The number of restriction entries.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The restrictions, in string order.
    pub fn iter(&self) -> impl Iterator<Item = Restriction<'a>> + 'a {
        let mut data = self.data;
        (0..self.count).map_while(move |_| {
            let purpose = data.read_u8(6).ok()?;
            let kind = match data.read_u8(2).ok()? {
                0 => RestrictionType::NotAllowed,
                1 => RestrictionType::RequireConsent,
                2 => RestrictionType::RequireLegitimateInterest,
                _ => RestrictionType::Undefined,
            };
            let entries = data.read_u16(12).ok()?;
            let vendors = RangeList { entries, data };
            for _ in 0..entries {
                range_entry(&mut data).ok()?;
            }
            Some(Restriction {
                purpose,
                kind,
                vendors,
            })
        })
    }
}

impl Restriction<'_> {
    /// Whether this restriction covers `vendor`.
    pub fn covers(&self, vendor: u16) -> bool {
        self.vendors.contains(vendor)
    }
}

/// Purposes for which legitimate interest is never a legal basis (TCF 2.2): 1 and 3 to 6.
fn consent_only(purpose: u8) -> bool {
    purpose == 1 || (3..=6).contains(&purpose)
}

fn has(bits: u32, width: u32, i: u8) -> bool {
    i >= 1 && u32::from(i) <= width && (bits >> (width - u32::from(i))) & 1 == 1
}

impl TcString<'_> {
    /// The consent language, upper-case (`EN`).
    pub fn consent_language(&self) -> &str {
        std::str::from_utf8(&self.consent_language).unwrap_or("??")
    }

    /// The publisher's country code, upper-case (`DE`).
    pub fn publisher_cc(&self) -> &str {
        std::str::from_utf8(&self.publisher_cc).unwrap_or("??")
    }

    /// Created, in whole seconds since the epoch.
    pub fn created_secs(&self) -> UnixSecs {
        self.created / 10
    }

    pub fn purpose_consent(&self, purpose: u8) -> bool {
        has(self.purposes_consent, 24, purpose)
    }

    pub fn purpose_li(&self, purpose: u8) -> bool {
        has(self.purposes_li_transparency, 24, purpose)
    }

    pub fn special_feature(&self, feature: u8) -> bool {
        has(u32::from(self.special_feature_opt_ins), 12, feature)
    }

    /// Checks that the string is a valid TCF 2.2+ signal for `vendor` at `now`.
    ///
    /// # Errors
    /// [`Invalid`] when the policy version is below 4, `IsServiceSpecific` is 0, the string was
    /// created after 2026-02-28 without DisclosedVendors listing the vendor (or without the
    /// segment when no vendor is configured), or it claims a creation day after `now`.
    pub fn validate(&self, vendor: Option<u16>, now: UnixSecs) -> Result<(), Invalid> {
        if self.policy_version < MIN_POLICY_VERSION {
            return Err(Invalid::PolicyVersion(self.policy_version));
        }
        if !self.is_service_specific {
            return Err(Invalid::NotServiceSpecific);
        }
        // Created is day-level; a day of slack keeps time zones and clock skew from mattering.
        if self.created_secs() > now.saturating_add(86_400) {
            return Err(Invalid::CreatedInFuture);
        }
        if self.created_secs() >= TCF_23_CUTOFF {
            let listed = match (&self.disclosed_vendors, vendor) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(d), Some(v)) => d.contains(v),
            };
            if !listed {
                return Err(Invalid::NotDisclosed);
            }
        }
        Ok(())
    }

    /// Whether kappe (as `vendor`, when configured) has a legal basis for `purpose`, following
    /// the Implementation Guidelines: publisher restrictions first, then the purpose signal and
    /// the vendor signal for the resulting legal basis. Without a vendor id only the purpose
    /// signals are checked (restrictions name vendors, so none can apply).
    pub fn legal_basis(&self, purpose: u8, vendor: Option<u16>) -> bool {
        let consent = || {
            self.purpose_consent(purpose) && vendor.is_none_or(|v| self.vendor_consents.contains(v))
        };
        let li = || {
            !consent_only(purpose)
                && self.purpose_li(purpose)
                && vendor.is_none_or(|v| self.vendor_legitimate_interests.contains(v))
        };
        let mut required: Option<RestrictionType> = None;
        if let Some(v) = vendor {
            for r in self.publisher_restrictions.iter() {
                if r.purpose != purpose || !r.covers(v) {
                    continue;
                }
                required = Some(match (required, r.kind) {
                    (None, k) => k,
                    (Some(a), b) if a == b => a,
                    // Contradictory restrictions: take the most protective reading.
                    _ => RestrictionType::NotAllowed,
                });
            }
        }
        match required {
            None => consent() || li(),
            Some(RestrictionType::RequireConsent) => consent(),
            Some(RestrictionType::RequireLegitimateInterest) => li(),
            Some(RestrictionType::NotAllowed | RestrictionType::Undefined) => false,
        }
    }

    /// What this string permits, once valid.
    ///
    /// # Errors
    /// As [`TcString::validate`].
    pub fn permission(&self, vendor: Option<u16>, now: UnixSecs) -> Result<Permission, Invalid> {
        self.validate(vendor, now)?;
        let p1 = self.legal_basis(1, vendor);
        Ok(Permission {
            retargeting: p1 && self.legal_basis(3, vendor) && self.legal_basis(4, vendor),
            storage: p1 && self.legal_basis(2, vendor),
        })
    }
}

#[cfg(test)]
#[path = "tcf_tests.rs"]
pub(crate) mod tests;
