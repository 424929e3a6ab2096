//! The cap grammar: `N/DURATION` (`3/1h`, `10/1d`, `20/7d`) and plain durations (`30d`, `90s`).
//! Pure parsing; what a cap applies to is decided in [`super::Policy`].

use std::fmt;
use std::str::FromStr;

/// At most `limit` impressions in any interval of `window_secs` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cap {
    pub limit: u32,
    pub window_secs: u32,
}

/// Why a cap or duration did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapError {
    #[error("expected N/DURATION such as 3/1d")]
    MissingSlash,
    #[error("the count must be a whole number from 1 to {max}")]
    BadCount { max: u32 },
    #[error("expected a duration such as 90s, 15m, 1h, 1d or 2w")]
    BadDuration,
    #[error("a duration must be more than zero and at most {max_days} days")]
    DurationRange { max_days: u32 },
}

/// The largest count a single cap may name; larger caps make no sense for retargeting and would
/// make the per-visitor timestamp ring unbounded.
pub const MAX_CAP_LIMIT: u32 = 1000;
/// The longest window or duration: ten years, so seconds fit in a `u32`.
pub const MAX_DURATION_SECS: u32 = 3650 * 86_400;

/// Parses `90s`, `15m`, `1h`, `1d`, `2w` (one number, one unit) into seconds.
///
/// # Errors
/// [`CapError::BadDuration`] for anything else, [`CapError::DurationRange`] for zero or more
/// than ten years.
pub fn parse_duration(s: &str) -> Result<u32, CapError> {
    let s = s.trim();
    if s.len() < 2 || !s.is_ascii() {
        return Err(CapError::BadDuration);
    }
    let (num, unit) = s.split_at(s.len() - 1);
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CapError::BadDuration);
    }
    let mult: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(CapError::BadDuration),
    };
    let range = CapError::DurationRange {
        max_days: MAX_DURATION_SECS / 86_400,
    };
    let n: u64 = num.parse().map_err(|_| range.clone())?;
    let secs = n.checked_mul(mult).ok_or_else(|| range.clone())?;
    if secs == 0 || secs > u64::from(MAX_DURATION_SECS) {
        return Err(range);
    }
    Ok(secs as u32)
}

impl Clone for CapError {
    fn clone(&self) -> Self {
        match self {
            CapError::MissingSlash => CapError::MissingSlash,
            CapError::BadCount { max } => CapError::BadCount { max: *max },
            CapError::BadDuration => CapError::BadDuration,
            CapError::DurationRange { max_days } => CapError::DurationRange {
                max_days: *max_days,
            },
        }
    }
}

/// Formats seconds the way they are written on the command line (`86400` -> `1d`).
pub fn format_duration(secs: u32) -> String {
    for (unit, mult) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs.is_multiple_of(mult) {
            return format!("{}{unit}", secs / mult);
        }
    }
    format!("{secs}s")
}

impl FromStr for Cap {
    type Err = CapError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, d) = s.trim().split_once('/').ok_or(CapError::MissingSlash)?;
        let bad = CapError::BadCount { max: MAX_CAP_LIMIT };
        let n = n.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        let limit: u32 = n.parse().map_err(|_| bad.clone())?;
        if limit == 0 || limit > MAX_CAP_LIMIT {
            return Err(bad);
        }
        Ok(Cap {
            limit,
            window_secs: parse_duration(d)?,
        })
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, format_duration(self.window_secs))
    }
}

/// Parses a comma-separated list of caps (`3/1d,10/7d`), as in `--campaign-cap` and `X-Fcap`.
///
/// # Errors
/// The first cap that does not parse.
pub fn parse_cap_list(s: &str) -> Result<Vec<Cap>, CapError> {
    let mut caps = s
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<Cap>, _>>()?;
    caps.sort();
    caps.dedup();
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grammar the issue names parses, and the values it names as invalid do not.
    #[test]
    fn grammar_accepts_examples_and_rejects_invalid() {
        assert_eq!(
            "3/1h".parse(),
            Ok(Cap {
                limit: 3,
                window_secs: 3600
            })
        );
        assert_eq!(
            "10/1d".parse(),
            Ok(Cap {
                limit: 10,
                window_secs: 86_400
            })
        );
        assert_eq!(
            "20/7d".parse(),
            Ok(Cap {
                limit: 20,
                window_secs: 604_800
            })
        );
        assert_eq!(
            "1/2w".parse(),
            Ok(Cap {
                limit: 1,
                window_secs: 1_209_600
            })
        );
        for bad in [
            "3/xyz", "-1/1d", "3", "0/1d", "3/0d", "3/1", "3/d", "/1d", "3/1y", "3/1.5h", "",
        ] {
            assert!(bad.parse::<Cap>().is_err(), "{bad} must not parse");
        }
    }

    /// Durations print back in the unit an operator would write.
    #[test]
    fn durations_round_trip() {
        for s in ["90s", "15m", "1h", "1d", "2w", "36h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert_eq!(parse_cap_list("10/7d,3/1d").unwrap().len(), 2);
    }
}
