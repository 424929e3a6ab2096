//! The impression store: what kappe remembers about a pseudonymous visitor, and the one atomic
//! operation that decides and records an impression.
//!
//! The unit is the visitor. A visitor's record holds, per campaign (and per advertiser), the
//! timestamps of the last C admitted impressions (C = the largest cap that applies), the time of
//! the first impression, plus visitor-wide timestamps and "burned until" patterns. Keeping the
//! visitor as the unit makes a report, an erasure and visitor-wide caps one lookup, and makes the
//! Redis backend Cluster-safe (one key per visitor).
//!
//! Backends: [`memory`] (embedded, the default) and [`redis`]. Both implement exactly the rule in
//! [`window`]: admit only when, for every cap (c, W) that applies, fewer than c admitted
//! impressions lie in (now - W, now].

use crate::clock::UnixSecs;
use crate::policy::Cap;

pub mod bench;
pub mod memory;
pub mod pseudonym;
#[cfg(feature = "proxy")]
pub mod redis;
pub mod snapshot;
pub mod window;

pub use memory::{MemoryOptions, MemoryStore, StoreStats, SweepCursor};

/// A pseudonymous visitor: a keyed hash of the visitor id. The raw id never reaches a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VisitorKey(pub u64);

impl VisitorKey {
    /// Lower-case hex, as used in Redis key names and reports.
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// What one impression must pass. Empty slices mean "no rule of that kind".
#[derive(Clone, Copy, Debug)]
pub struct AdmitRequest<'a> {
    pub campaign: &'a str,
    pub campaign_caps: &'a [Cap],
    /// The advertiser, when the policy reads one; its caps count alongside the campaign's.
    pub advertiser: Option<&'a str>,
    pub advertiser_caps: &'a [Cap],
    /// Caps across all capped campaigns of the visitor (anti-stalking).
    pub visitor_caps: &'a [Cap],
    /// A campaign stops retargeting a visitor this long after its first impression.
    pub max_age_secs: Option<u32>,
}

impl<'a> AdmitRequest<'a> {
    /// An impression of `campaign` under its own caps only: no advertiser, no visitor-wide caps,
    /// no maximum age. Add the other rules with struct update syntax.
    pub fn campaign(campaign: &'a str, campaign_caps: &'a [Cap]) -> Self {
        AdmitRequest {
            campaign,
            campaign_caps,
            advertiser: None,
            advertiser_caps: &[],
            visitor_caps: &[],
            max_age_secs: None,
        }
    }
}

/// Which rule denied an impression. Drives the drop answer and the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// A campaign cap.
    Cap,
    /// An advertiser cap.
    AdvertiserCap,
    /// A visitor-wide cap.
    VisitorCap,
    /// The maximum retargeting age has passed since the campaign's first impression.
    MaxAge,
    /// The visitor burned a pattern matching the campaign.
    Burned,
}

impl DenyReason {
    /// The `reason` label of `kappe_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            DenyReason::Cap => "cap",
            DenyReason::AdvertiserCap => "advertiser_cap",
            DenyReason::VisitorCap => "visitor_cap",
            DenyReason::MaxAge => "max_age",
            DenyReason::Burned => "burned",
        }
    }
}

/// A denial: which rule, and when the same request would next be admitted (`None`: never again
/// within retention, as for max age).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    /// The cap that denied, for `Cap`, `AdvertiserCap` and `VisitorCap`.
    pub rule: Option<Cap>,
    pub retry_at: Option<UnixSecs>,
}

/// The outcome of an atomic admit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Recorded; the impression may be shown.
    Admitted,
    /// Not recorded; the response must not be shown.
    Denied(Denial),
}

/// What is stored about one campaign (or advertiser) of a visitor.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CampaignRecord {
    pub campaign: String,
    /// Admitted impressions, oldest first (only the last C are kept).
    pub impressions: Vec<UnixSecs>,
    pub first_seen: UnixSecs,
    /// When this record will be forgotten if nothing new is admitted.
    pub forget_at: UnixSecs,
}

/// A burned pattern and until when it holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BurnRecord {
    pub pattern: String,
    pub until: UnixSecs,
}

/// Everything stored about one visitor: the transparency report.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VisitorReport {
    pub campaigns: Vec<CampaignRecord>,
    pub advertisers: Vec<CampaignRecord>,
    /// Visitor-wide impressions, oldest first.
    pub visitor_impressions: Vec<UnixSecs>,
    pub burns: Vec<BurnRecord>,
}

impl VisitorReport {
    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.campaigns.is_empty()
            && self.advertisers.is_empty()
            && self.visitor_impressions.is_empty()
            && self.burns.is_empty()
    }
}

/// Why a store operation failed (as opposed to denying).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store timed out")]
    Timeout,
    #[error("campaign table is full ({0} campaigns)")]
    CampaignTableFull(usize),
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    /// The `kind` label of `kappe_store_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Timeout => "timeout",
            StoreError::CampaignTableFull(_) => "campaign_table_full",
            StoreError::Other(_) => "other",
        }
    }
}

#[cfg(feature = "proxy")]
/// The store in use: the embedded memory store or a shared one. Dispatch is a `match`, not a
/// trait object, so the memory path stays a direct, inlinable call.
#[derive(Clone)]
pub enum Store {
    Memory(std::sync::Arc<memory::MemoryStore>),
    /// Redis or Redis Cluster; time comes from the Redis server, so `now` is not used.
    Redis(redis::RedisStore),
}

/// The Redis futures are boxed: they are large, and inline they would make every caller's
/// future (up to each request's handler, which hyper and tokio move around) as large as the
/// biggest of them, on the memory store's path too.
#[cfg(feature = "proxy")]
impl Store {
    /// Decides and records one impression atomically.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer (never for a denial).
    pub async fn admit(
        &self,
        v: VisitorKey,
        req: &AdmitRequest<'_>,
        now: UnixSecs,
    ) -> Result<Admission, StoreError> {
        match self {
            Store::Memory(m) => m.admit(v, req, now),
            Store::Redis(r) => Box::pin(r.admit(v, req)).await,
        }
    }

    /// Everything stored about a visitor.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    pub async fn report(&self, v: VisitorKey, now: UnixSecs) -> Result<VisitorReport, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.report(v, now)),
            Store::Redis(r) => Box::pin(r.report(v)).await,
        }
    }

    /// Erases a visitor; true when something was stored.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    pub async fn erase(&self, v: VisitorKey) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.erase(v)),
            Store::Redis(r) => Box::pin(r.erase(v)).await,
        }
    }

    /// Stops campaigns matching `pattern` for `duration_secs` for this visitor.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    pub async fn burn(
        &self,
        v: VisitorKey,
        pattern: &str,
        duration_secs: u32,
        now: UnixSecs,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => m.burn(v, pattern, now + u64::from(duration_secs), now),
            Store::Redis(r) => Box::pin(r.burn(v, pattern, duration_secs)).await,
        }
    }

    /// Checks that the store answers.
    ///
    /// # Errors
    /// [`StoreError`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => Box::pin(r.ping()).await,
        }
    }
}
