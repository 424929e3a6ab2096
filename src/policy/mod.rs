//! Cap policy: the grammar of caps and globs, and which caps apply to a response. Pure decisions,
//! no I/O.

mod cap;
mod glob;

pub use cap::{
    Cap, CapError, MAX_CAP_LIMIT, MAX_DURATION_SECS, format_duration, parse_cap_list,
    parse_duration,
};
pub use glob::{Glob, glob_match};
