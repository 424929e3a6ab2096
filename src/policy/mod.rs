//! Cap policy: the grammar of caps and globs, and which caps apply to a response. Pure decisions,
//! no I/O.
//!
//! Which campaign rule wins: of all `--campaign-cap` globs matching a campaign, the most specific
//! (most literal characters) wins; among equally specific globs, the one given first. A matching
//! `--campaign-cap` replaces the `--cap` defaults. For campaigns no `--campaign-cap` matches, caps the
//! ad server declares in `--policy-header` come next, and the `--cap` defaults last.

mod cap;
mod glob;
mod source;

pub use cap::{
    Cap, CapError, MAX_CAP_LIMIT, MAX_DURATION_SECS, format_duration, parse_cap_list,
    parse_duration,
};
pub use glob::{Glob, glob_match};
pub use source::{MAX_ID_LEN, Source, SourceError, valid_id};

/// Which responses are capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapScope {
    /// Only responses marked as retargeting.
    Retargeting,
    /// Every response that names a campaign.
    All,
}

/// A glob and the caps it assigns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobRule {
    pub glob: Glob,
    pub caps: Vec<Cap>,
}

impl GlobRule {
    /// Parses `GLOB=N/DUR[,N/DUR...]`.
    ///
    /// # Errors
    /// A message saying what is wrong with the value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (glob, caps) = s
            .split_once('=')
            .ok_or_else(|| "expected GLOB=N/DUR[,N/DUR...]".to_owned())?;
        let glob = Glob::new(glob.trim()).ok_or_else(|| "the glob is empty".to_owned())?;
        let caps = parse_cap_list(caps).map_err(|e| e.to_string())?;
        Ok(GlobRule { glob, caps })
    }
}

impl std::fmt::Display for GlobRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.glob.as_str(), join_caps(&self.caps))
    }
}

/// `3/1h,10/1d`.
pub fn join_caps(caps: &[Cap]) -> String {
    caps.iter()
        .map(Cap::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The cap policy in force. Swapped whole on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub default_caps: Vec<Cap>,
    /// Sorted: most specific first, then in the order given.
    pub campaign_rules: Vec<GlobRule>,
    pub advertiser_rules: Vec<GlobRule>,
    pub visitor_caps: Vec<Cap>,
    pub max_age_secs: Option<u32>,
    pub scope: CapScope,
    pub retargeting_campaigns: Vec<Glob>,
    pub burn_secs: u32,
}

impl Policy {
    /// Orders glob rules so that the first match is the winner (see the module docs).
    pub fn sort_rules(rules: &mut [GlobRule]) {
        rules.sort_by_key(|r| std::cmp::Reverse(r.glob.specificity()));
    }

    /// The caps for `campaign`: the winning `--campaign-cap`, else the ad server's declared caps,
    /// else the defaults.
    pub fn caps_for<'a>(&'a self, campaign: &str, declared: Option<&'a [Cap]>) -> &'a [Cap] {
        if let Some(rule) = self
            .campaign_rules
            .iter()
            .find(|r| r.glob.matches(campaign))
        {
            return &rule.caps;
        }
        match declared {
            Some(caps) if !caps.is_empty() => caps,
            _ => &self.default_caps,
        }
    }

    /// The caps of `advertiser` (empty when no `--advertiser-cap` matches).
    pub fn advertiser_caps_for(&self, advertiser: &str) -> &[Cap] {
        self.advertiser_rules
            .iter()
            .find(|r| r.glob.matches(advertiser))
            .map_or(&[][..], |r| &r.caps)
    }

    /// True when `--retargeting-campaigns` marks `campaign`.
    pub fn is_retargeting_campaign(&self, campaign: &str) -> bool {
        self.retargeting_campaigns
            .iter()
            .any(|g| g.matches(campaign))
    }

    /// True when a response of this kind is subject to the policy at all.
    pub fn applies(&self, retargeting: bool) -> bool {
        retargeting || self.scope == CapScope::All
    }

    /// The longest time anything under this policy must be remembered.
    pub fn longest_need_secs(&self) -> u32 {
        let windows = self
            .default_caps
            .iter()
            .chain(self.campaign_rules.iter().flat_map(|r| &r.caps))
            .chain(self.advertiser_rules.iter().flat_map(|r| &r.caps))
            .chain(&self.visitor_caps)
            .map(|c| c.window_secs);
        windows
            .chain(self.max_age_secs)
            .chain(std::iter::once(self.burn_secs))
            .max()
            .unwrap_or(0)
    }

    /// The policy printed the way `kappe check` shows it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let none = |v: &[Cap]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                join_caps(v)
            }
        };
        out += &format!("cap scope:           {:?}\n", self.scope).to_lowercase();
        out += &format!("default caps:        {}\n", none(&self.default_caps));
        for r in &self.campaign_rules {
            out += &format!("campaign cap:        {r}\n");
        }
        for r in &self.advertiser_rules {
            out += &format!("advertiser cap:      {r}\n");
        }
        out += &format!("visitor caps:        {}\n", none(&self.visitor_caps));
        out += &format!(
            "max retargeting age: {}\n",
            self.max_age_secs.map_or("none".into(), format_duration)
        );
        if !self.retargeting_campaigns.is_empty() {
            let globs: Vec<_> = self
                .retargeting_campaigns
                .iter()
                .map(Glob::as_str)
                .collect();
            out += &format!("retargeting globs:   {}\n", globs.join(","));
        }
        out += &format!("burn duration:       {}\n", format_duration(self.burn_secs));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> Policy {
        let mut campaign_rules: Vec<_> =
            rules.iter().map(|r| GlobRule::parse(r).unwrap()).collect();
        Policy::sort_rules(&mut campaign_rules);
        Policy {
            default_caps: parse_cap_list("3/1d").unwrap(),
            campaign_rules,
            advertiser_rules: vec![],
            visitor_caps: vec![],
            max_age_secs: None,
            scope: CapScope::Retargeting,
            retargeting_campaigns: vec![],
            burn_secs: 86_400,
        }
    }

    /// The most specific glob wins, then the first given; defaults apply when none matches.
    #[test]
    fn most_specific_glob_wins() {
        let p = policy(&["rt-*=5/1d", "rt-shoes*=1/1h", "*=9/1w", "rt-s*=2/1h"]);
        assert_eq!(
            p.caps_for("rt-shoes-1", None),
            &[Cap {
                limit: 1,
                window_secs: 3600
            }]
        );
        assert_eq!(
            p.caps_for("rt-sun", None),
            &[Cap {
                limit: 2,
                window_secs: 3600
            }]
        );
        assert_eq!(p.caps_for("rt-x", None)[0].limit, 5);
        assert_eq!(p.caps_for("brand", None)[0].limit, 9);
        let p = policy(&["a*=1/1h", "*a=2/1h"]);
        assert_eq!(
            p.caps_for("aa", None)[0].limit,
            1,
            "equal specificity: first given wins"
        );
    }

    /// Caps the ad server declares apply only where no campaign rule matches.
    #[test]
    fn declared_caps_fill_in_for_unmatched_campaigns() {
        let p = policy(&["rt-*=5/1d"]);
        let declared = parse_cap_list("1/1h").unwrap();
        assert_eq!(p.caps_for("rt-a", Some(&declared))[0].limit, 5);
        assert_eq!(p.caps_for("other", Some(&declared))[0].limit, 1);
        assert_eq!(p.caps_for("other", None)[0].limit, 3);
    }

    /// Rules without `=` or with a bad cap are refused with a reason.
    #[test]
    fn glob_rules_reject_bad_values() {
        assert!(GlobRule::parse("rt-*").is_err());
        assert!(GlobRule::parse("=3/1d").is_err());
        assert!(GlobRule::parse("rt-*=3/xyz").is_err());
        assert!(GlobRule::parse("rt-*=3/1d,10/7d").is_ok());
    }
}
