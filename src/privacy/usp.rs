//! The IAB US Privacy string (CCPA, `1YNN`): four ASCII characters. Deprecated by IAB in 2024
//! in favour of GPP, still sent, so still honoured.

use super::DecodeError;

/// One of the three flag positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    Yes,
    No,
    /// `-`: not applicable or unknown.
    NotApplicable,
}

/// A decoded US Privacy string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsPrivacy {
    pub notice: Flag,
    pub opt_out_sale: Flag,
    pub lspa: Flag,
}

impl UsPrivacy {
    /// The visitor opted out of sale (third character `Y`).
    pub fn opted_out(&self) -> bool {
        self.opt_out_sale == Flag::Yes
    }

    /// CCPA applies to this visitor: not `1---`.
    pub fn applies(&self) -> bool {
        self.opt_out_sale != Flag::NotApplicable
    }
}

/// Decodes a US Privacy string.
///
/// # Errors
/// [`DecodeError`] unless the string is exactly four characters, version `1`, then three of
/// `Y`, `N`, `-`.
pub fn decode(s: &str) -> Result<UsPrivacy, DecodeError> {
    let b = s.as_bytes();
    if b.len() != 4 {
        return Err(DecodeError::BadLength);
    }
    if b[0] != b'1' {
        return Err(DecodeError::UnsupportedVersion(b[0].wrapping_sub(b'0')));
    }
    let flag = |at: usize| match b[at] {
        b'Y' => Ok(Flag::Yes),
        b'N' => Ok(Flag::No),
        b'-' => Ok(Flag::NotApplicable),
        _ => Err(DecodeError::BadCharacter { at }),
    };
    Ok(UsPrivacy {
        notice: flag(1)?,
        opt_out_sale: flag(2)?,
        lspa: flag(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The four examples of the US Privacy spec decode to what the spec says they mean.
    #[test]
    fn spec_examples_decode() {
        let a = decode("1YNN").unwrap();
        assert_eq!(
            (a.notice, a.opt_out_sale, a.lspa),
            (Flag::Yes, Flag::No, Flag::No)
        );
        assert!(!a.opted_out() && a.applies());
        assert!(decode("1NYN").unwrap().opted_out());
        assert!(decode("1-Y-").unwrap().opted_out());
        let na = decode("1---").unwrap();
        assert!(!na.opted_out() && !na.applies());
    }

    /// Wrong length, version or characters are errors.
    #[test]
    fn malformed_strings_are_errors() {
        for s in [
            "1YN", "2YNN", "1X NN", "1YNX", "", "1YNNN", "1ynn", "\u{e9}YN",
        ] {
            assert!(decode(s).is_err(), "{s:?} must be rejected");
        }
    }
}
