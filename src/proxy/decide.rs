//! Decisions are values: what happened to a response (served and counted, passed through,
//! dropped and why), which drives the answer, the metric label and the explain header.

use http::HeaderValue;

use crate::clock::UnixSecs;
use crate::store::Denial;

/// Why a response was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A cap, visitor cap, advertiser cap, maximum age or burn denied it.
    Denied(Denial),
    /// The visitor has no id and `--no-id drop` is set.
    NoId,
    /// An opt-out signal applies, or the consent does not cover retargeting.
    OptOut,
    /// The store could not be reached and `--store-failure closed` is set.
    StoreUnavailable,
}

impl DropReason {
    /// The `reason` label of `kappe_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Denied(d) => d.reason.label(),
            DropReason::NoId => "no_id",
            DropReason::OptOut => "optout",
            DropReason::StoreUnavailable => "store_unavailable",
        }
    }
}

/// What happened to one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No campaign, or not subject to the policy: streamed as it came.
    PassThrough,
    /// Admitted and counted.
    Served,
    /// Subject to the policy but not counted: the store failed open, the visitor has no id and
    /// `--no-id serve` is set, or storage is not allowed for a non-retargeting response.
    ServedUncounted(&'static str),
    /// Not shown to the visitor.
    Dropped(DropReason),
}

impl Decision {
    /// The `X-Kappe-Decision` value.
    pub fn explain(&self, now: UnixSecs) -> HeaderValue {
        let text = match self {
            Decision::PassThrough => "passthrough".to_owned(),
            Decision::Served => "served".to_owned(),
            Decision::ServedUncounted(why) => format!("served; uncounted={why}"),
            Decision::Dropped(reason) => {
                let mut s = format!("dropped; reason={}", reason.label());
                if let DropReason::Denied(d) = reason {
                    if let Some(rule) = d.rule {
                        s += &format!("; rule={rule}");
                    }
                    if let Some(at) = d.retry_at {
                        s += &format!("; retry-after={}", at.saturating_sub(now));
                    }
                }
                s
            }
        };
        HeaderValue::from_str(&text).expect("decision text is ASCII")
    }
}
