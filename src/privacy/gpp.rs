//! The IAB Global Privacy Platform string (`DBABM~…`): the header, the applicable-section list
//! (`gpp_sid`), and the sections kappe reads: tcfeuv2 (2, handed to [`super::tcf`]), uspv1 (6,
//! handed to [`super::usp`]), usnat (7), usca (8), and the GPC sub-section of the other US state
//! sections (9 to 27, whose cores are not decoded).
//!
//! Everything is decoded into fixed-size values: no allocation, and a header naming more than
//! [`MAX_SECTIONS`] sections (there are 27 section ids) is an error rather than a large list.

use super::DecodeError;
use super::bits::BitReader;

/// The longest GPP string decoded.
pub const MAX_GPP_LEN: usize = 16 * 1024;
/// The most section ids a header or a `gpp_sid` list may name.
pub const MAX_SECTIONS: usize = 32;

pub const SECTION_TCFEUV2: u16 = 2;
pub const SECTION_USPV1: u16 = 6;
pub const SECTION_USNAT: u16 = 7;
pub const SECTION_USCA: u16 = 8;
/// The last US state section id (usri).
pub const SECTION_US_LAST: u16 = 27;

/// A short list of section ids, held inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionIds {
    ids: [u16; MAX_SECTIONS],
    len: usize,
}

impl Default for SectionIds {
    fn default() -> Self {
        SectionIds {
            ids: [0; MAX_SECTIONS],
            len: 0,
        }
    }
}

impl SectionIds {
    pub fn as_slice(&self) -> &[u16] {
        &self.ids[..self.len]
    }

    pub fn contains(&self, id: u16) -> bool {
        self.as_slice().contains(&id)
    }

    fn push(&mut self, id: u16) -> Result<(), DecodeError> {
        if self.len == MAX_SECTIONS {
            return Err(DecodeError::TooManySegments);
        }
        self.ids[self.len] = id;
        self.len += 1;
        Ok(())
    }
}

/// Parses `gpp_sid`: comma-separated section ids; `-1` (alone or listed) means none applies.
///
/// # Errors
/// [`DecodeError`] for anything but comma-separated integers, or more than [`MAX_SECTIONS`].
pub fn parse_sid(s: &str) -> Result<SectionIds, DecodeError> {
    let mut out = SectionIds::default();
    for part in s.split(',') {
        let part = part.trim();
        if part == "-1" {
            continue;
        }
        let id: u16 = part
            .parse()
            .map_err(|_| DecodeError::OutOfRange("gpp_sid"))?;
        out.push(id)?;
    }
    Ok(out)
}

/// A decoded GPP string: its section ids and the matching section texts.
#[derive(Clone, Copy, Debug)]
pub struct Gpp<'a> {
    ids: SectionIds,
    sections: &'a str,
}

/// Decodes the header of a GPP string and pairs its ids with the `~`-separated sections.
///
/// # Errors
/// [`DecodeError`] when the string is too long, the header is not type 3 version 1, its
/// Fibonacci range is malformed, or the number of sections differs from the header's.
pub fn decode(s: &str) -> Result<Gpp<'_>, DecodeError> {
    if s.len() > MAX_GPP_LEN {
        return Err(DecodeError::TooLong { max: MAX_GPP_LEN });
    }
    let (header, sections) = s.split_once('~').unwrap_or((s, ""));
    let mut r = BitReader::new(header)?;
    let kind = r.read_u8(6)?;
    if kind != 3 {
        return Err(DecodeError::OutOfRange("GPP header type"));
    }
    let version = r.read_u8(6)?;
    if version != 1 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let count = r.read_u16(12)?;
    let mut ids = SectionIds::default();
    let mut last: u16 = 0;
    for _ in 0..count {
        let group = r.read_bool()?;
        let start = last
            .checked_add(r.read_fibonacci()?)
            .ok_or(DecodeError::OutOfRange("section id"))?;
        let end = if group {
            start
                .checked_add(r.read_fibonacci()?)
                .ok_or(DecodeError::OutOfRange("section id"))?
        } else {
            start
        };
        // Offsets are >= 1, so ids strictly increase; the push bound stops a huge group early.
        for id in start..=end {
            ids.push(id)?;
        }
        last = end;
    }
    let n = if sections.is_empty() {
        0
    } else {
        sections.split('~').count()
    };
    if n != ids.len {
        return Err(DecodeError::SectionCount);
    }
    Ok(Gpp { ids, sections })
}

impl<'a> Gpp<'a> {
    /// The section ids of the header, in order.
    pub fn section_ids(&self) -> &[u16] {
        self.ids.as_slice()
    }

    /// `(id, section text)` pairs, in order.
    pub fn sections(&self) -> impl Iterator<Item = (u16, &'a str)> + '_ {
        let texts = if self.sections.is_empty() {
            None
        } else {
            Some(self.sections.split('~'))
        };
        self.section_ids()
            .iter()
            .copied()
            .zip(texts.into_iter().flatten())
    }

    /// The text of section `id`, if present.
    pub fn section(&self, id: u16) -> Option<&'a str> {
        self.sections().find(|&(i, _)| i == id).map(|(_, t)| t)
    }
}

/// The opt-out fields kappe reads from a US section. Each is true only for the value 1
/// ("opted out"); 0 (not applicable) and 2 (did not opt out) are false.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsOptOut {
    pub sale: bool,
    pub sharing: bool,
    pub targeted_advertising: bool,
    /// The GPC sub-section's `Gpc` bit.
    pub gpc: bool,
}

impl UsOptOut {
    /// Any of the four means: no retargeting.
    pub fn opted_out(&self) -> bool {
        self.sale || self.sharing || self.targeted_advertising || self.gpc
    }
}

/// Reads a 2-bit MSPA opt-out field: 0 N/A, 1 opted out, 2 did not opt out. The value 3 is
/// undefined; it is read as "not opted out" by this field rather than as an error, so that one
/// odd field cannot hide an opt-out in another (iabgpp-es's own test vectors encode 3).
fn opt_out_field(r: &mut BitReader<'_>) -> Result<bool, DecodeError> {
    Ok(r.read_u8(2)? == 1)
}

/// Reads the optional sub-sections after the core: type 1 is GPC.
fn gpc_subsection<'a>(mut rest: impl Iterator<Item = &'a str>) -> Result<bool, DecodeError> {
    let mut gpc = false;
    for sub in rest.by_ref() {
        let mut r = BitReader::new(sub)?;
        if r.read_u8(2)? == 1 {
            gpc |= r.read_bool()?;
        }
    }
    Ok(gpc)
}

/// Decodes a usnat section (id 7), versions 1 and 2.
///
/// # Errors
/// [`DecodeError`] for a bad version or a truncated core or sub-section.
pub fn decode_usnat(s: &str) -> Result<UsOptOut, DecodeError> {
    let mut parts = s.split('.');
    let mut r = BitReader::new(parts.next().unwrap_or(""))?;
    let version = r.read_u8(6)?;
    let (sensitive, child) = match version {
        1 => (12, 2),
        2 => (16, 3),
        v => return Err(DecodeError::UnsupportedVersion(v)),
    };
    r.skip(6 * 2)?; // six notice fields
    let sale = opt_out_field(&mut r)?;
    let sharing = opt_out_field(&mut r)?;
    let targeted_advertising = opt_out_field(&mut r)?;
    // SensitiveDataProcessing, KnownChildSensitiveDataConsents, PersonalDataConsents and the
    // three MSPA fields: not needed for the decision, but a core missing them is truncated.
    r.skip(2 * (sensitive + child) + 2 + 3 * 2)?;
    Ok(UsOptOut {
        sale,
        sharing,
        targeted_advertising,
        gpc: gpc_subsection(parts)?,
    })
}

/// Decodes a usca section (id 8). California has no targeted-advertising field: "sharing"
/// covers cross-context behavioural advertising.
///
/// # Errors
/// [`DecodeError`] for a version other than 1 or a truncated core or sub-section.
pub fn decode_usca(s: &str) -> Result<UsOptOut, DecodeError> {
    let mut parts = s.split('.');
    let mut r = BitReader::new(parts.next().unwrap_or(""))?;
    let version = r.read_u8(6)?;
    if version != 1 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    r.skip(3 * 2)?; // SaleOptOutNotice, SharingOptOutNotice, SensitiveDataLimitUseNotice
    let sale = opt_out_field(&mut r)?;
    let sharing = opt_out_field(&mut r)?;
    r.skip(2 * (9 + 2) + 2 + 3 * 2)?;
    Ok(UsOptOut {
        sale,
        sharing,
        targeted_advertising: false,
        gpc: gpc_subsection(parts)?,
    })
}

/// For US state sections whose core kappe does not decode (9 to 27): only the GPC sub-section.
///
/// # Errors
/// [`DecodeError`] when a sub-section is not base64url or is truncated.
pub fn decode_us_state_gpc(s: &str) -> Result<UsOptOut, DecodeError> {
    let mut parts = s.split('.');
    BitReader::new(parts.next().unwrap_or(""))?;
    Ok(UsOptOut {
        gpc: gpc_subsection(parts)?,
        ..UsOptOut::default()
    })
}

#[cfg(test)]
#[path = "gpp_tests.rs"]
pub(crate) mod tests;
