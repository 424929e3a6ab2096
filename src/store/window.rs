//! The exact sliding-window rule, shared by every backend (the Redis Lua script mirrors it).
//!
//! An impression admitted at `t` counts for every `now` in `[t, t + W)`. A cap `(c, W)` denies
//! when the `c`-th newest stored impression still counts; it admits again at that impression's
//! `t + W`. Because a cap never needs more than its `c` newest impressions, a record keeps only
//! the `C` newest, where `C` is the largest limit that applies to it. This module also owns the
//! forgetting rule (how long a record must be kept) so that every backend forgets identically.
//!
//! Pure functions only: no clock, no I/O, no locks.

use crate::clock::UnixSecs;
use crate::policy::{Cap, glob_match};
use crate::store::VisitorReport;

/// Returns the cap that denies an impression at `now`, and when it would admit again, or `None`
/// when every cap admits. `oldest_first` holds the stored impressions of the record, oldest
/// first. When several caps deny, the one that holds the longest wins (its `retry_at` is when
/// the record admits again, since nothing is recorded while denied); ties go to the first cap.
pub fn check(caps: &[Cap], oldest_first: &[u32], now: UnixSecs) -> Option<(Cap, UnixSecs)> {
    let mut worst: Option<(Cap, UnixSecs)> = None;
    for cap in caps {
        let c = cap.limit as usize;
        if c == 0 || c > oldest_first.len() {
            continue;
        }
        // The c-th newest impression; all newer ones count whenever it counts.
        let t = u64::from(oldest_first[oldest_first.len() - c]);
        let until = t + u64::from(cap.window_secs);
        if until > now && worst.is_none_or(|(_, w)| until > w) {
            worst = Some((*cap, until));
        }
    }
    worst
}

/// The largest limit among `caps`: how many impressions a record under them must keep.
pub fn keep_count(caps: &[Cap]) -> usize {
    caps.iter().map(|c| c.limit as usize).max().unwrap_or(0)
}

/// The longest window among `caps`, in seconds (0 when there are none).
pub fn longest_window(caps: &[Cap]) -> u32 {
    caps.iter().map(|c| c.window_secs).max().unwrap_or(0)
}

/// When a record last updated at `now` (its newest impression) may be forgotten: once its
/// newest impression has left the longest window and, with a maximum age, once the age has
/// passed since `first_seen`; never later than `max_retention` after the update.
pub fn forget_at(
    now: u32,
    first_seen: u32,
    longest_window: u32,
    max_age: Option<u32>,
    max_retention: u32,
) -> u32 {
    let needed = now
        .saturating_add(longest_window)
        .max(max_age.map_or(0, |a| first_seen.saturating_add(a)));
    needed.min(now.saturating_add(max_retention))
}

/// Appends `t` to `oldest_first` and keeps only the `keep` newest entries.
pub fn push_keep(oldest_first: &mut Vec<u32>, t: u32, keep: usize) {
    oldest_first.push(t);
    truncate_oldest(oldest_first, keep);
}

/// Drops the oldest entries so that at most `keep` remain.
pub fn truncate_oldest(oldest_first: &mut Vec<u32>, keep: usize) {
    if oldest_first.len() > keep {
        oldest_first.drain(..oldest_first.len() - keep);
    }
}

/// Converts a time to the stored `u32` form. Real times (after 1970-01-01T00:00:01 and before
/// 2106) are exact; the clamp keeps 0 free as "empty" and keeps far-future test clocks sane.
pub fn to_u32(t: UnixSecs) -> u32 {
    t.clamp(1, u64::from(u32::MAX)) as u32
}

/// The campaigns of a report that would be denied at `now`: by one of their caps
/// (`caps_for(campaign)`), by an active burn, or — for all of them — by a visitor-wide cap.
/// Works on a [`VisitorReport`], so it serves every backend.
pub fn capped_campaigns(
    report: &VisitorReport,
    caps_for: impl Fn(&str) -> Vec<Cap>,
    visitor_caps: &[Cap],
    now: UnixSecs,
) -> Vec<String> {
    let visitor_ts: Vec<u32> = report
        .visitor_impressions
        .iter()
        .map(|t| to_u32(*t))
        .collect();
    let visitor_capped = check(visitor_caps, &visitor_ts, now).is_some();
    report
        .campaigns
        .iter()
        .filter(|rec| {
            let ts: Vec<u32> = rec.impressions.iter().map(|t| to_u32(*t)).collect();
            visitor_capped
                || check(&caps_for(&rec.campaign), &ts, now).is_some()
                || report.burns.iter().any(|b| {
                    b.until > now && glob_match(b.pattern.as_bytes(), rec.campaign.as_bytes())
                })
        })
        .map(|rec| rec.campaign.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BurnRecord, CampaignRecord};

    fn cap(limit: u32, window_secs: u32) -> Cap {
        Cap { limit, window_secs }
    }

    /// An impression at t counts at t and at t+W-1, and no longer at t+W.
    #[test]
    fn impression_counts_for_exactly_its_window() {
        let caps = [cap(1, 10)];
        assert_eq!(check(&caps, &[100], 100), Some((caps[0], 110)));
        assert_eq!(check(&caps, &[100], 109), Some((caps[0], 110)));
        assert_eq!(check(&caps, &[100], 110), None);
    }

    /// The window slides: with 3 per 100 s the fourth impression waits for the first to leave,
    /// not for a fixed window to reset.
    #[test]
    fn window_slides_not_resets() {
        let caps = [cap(3, 100)];
        let ts = [10, 50, 90];
        assert_eq!(check(&caps, &ts, 95), Some((caps[0], 110)));
        assert_eq!(check(&caps, &ts, 110), None);
        assert_eq!(check(&caps, &ts[1..], 95), None);
    }

    /// Of several denying caps, the one that holds longest is reported.
    #[test]
    fn longest_denial_is_reported() {
        let caps = [cap(1, 60), cap(2, 86_400)];
        let ts = [1_000, 1_030];
        assert_eq!(check(&caps, &ts, 1_040), Some((caps[1], 87_400)));
        assert_eq!(check(&caps[..1], &ts, 1_040), Some((caps[0], 1_090)));
    }

    /// Forgetting waits for the longest window and the maximum age, within the retention bound.
    #[test]
    fn forget_time_covers_window_and_age_within_retention() {
        assert_eq!(forget_at(1_000, 900, 100, None, 10_000), 1_100);
        assert_eq!(forget_at(1_000, 900, 100, Some(500), 10_000), 1_400);
        assert_eq!(forget_at(1_000, 900, 100_000, Some(500), 10_000), 11_000);
    }

    /// Only the newest `keep` impressions are kept.
    #[test]
    fn push_keeps_newest() {
        let mut v = vec![1, 2, 3];
        push_keep(&mut v, 4, 2);
        assert_eq!(v, vec![3, 4]);
        push_keep(&mut v, 5, 0);
        assert!(v.is_empty());
    }

    /// The capped list names campaigns over their cap, burned ones, and all under a visitor cap.
    #[test]
    fn capped_campaigns_from_report() {
        let rec = |c: &str, ts: Vec<u64>| CampaignRecord {
            campaign: c.into(),
            first_seen: ts[0],
            impressions: ts,
            forget_at: 0,
        };
        let mut report = VisitorReport {
            campaigns: vec![
                rec("a", vec![100, 110]),
                rec("b", vec![100]),
                rec("rt-c", vec![100]),
            ],
            burns: vec![BurnRecord {
                pattern: "rt-*".into(),
                until: 500,
            }],
            visitor_impressions: vec![100, 100, 110],
            ..VisitorReport::default()
        };
        let caps_for = |_: &str| vec![cap(2, 1_000)];
        assert_eq!(
            capped_campaigns(&report, caps_for, &[], 200),
            vec!["a", "rt-c"]
        );
        assert_eq!(
            capped_campaigns(&report, caps_for, &[cap(3, 50)], 120).len(),
            3
        );
        report.burns.clear();
        assert_eq!(
            capped_campaigns(&report, caps_for, &[], 2_000),
            Vec::<String>::new()
        );
    }
}
