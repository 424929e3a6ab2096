//! Privacy signals and the visitor-facing privacy pages.
//!
//! This module owns the decision "may this request's visitor be retargeted, and may kappe keep
//! per-visitor counters?" as a pure function of the request's headers, query string and the
//! time: [`evaluate`] returns a [`Verdict`]. It reads kappe's own opt-out cookie, `Sec-GPC`,
//! `DNT`, GPP (`gpp` + `gpp_sid`), US Privacy (`us_privacy`, cookie `usprivacy`) and the TCF TC
//! string (`gdpr` + `gdpr_consent`, GPP section 2, cookie `euconsent-v2`). The rule is "any
//! opt-out wins": a TCF consent never overrides GPC, DNT, a GPP/USP opt-out or kappe's cookie.
//!
//! The decoders ([`tcf`], [`gpp`], [`usp`], [`cookie`]) are written for hostile input: length
//! caps before decoding, vendor ranges checked without expanding them, every malformed string an
//! error and never a panic; each has a fuzz target under `fuzz/`. The renderers in [`page`] draw
//! what the store reports. HTTP routing, issuing cookies, store calls and metrics belong to the
//! proxy; this module gives it values ([`Verdict`], [`Signal::label`]) and strings.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};

use crate::clock::UnixSecs;

mod bits;
pub mod cookie;
pub mod gpp;
pub mod page;
pub mod tcf;
pub mod usp;

pub use cookie::{Cookies, Jar, cookies, strip_cookies};
pub use page::{Lang, PageView, esc, gpc_json, me_json, negotiate, render_page};

/// Why a privacy string did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty string or segment")]
    Empty,
    #[error("longer than {max} bytes")]
    TooLong { max: usize },
    #[error("invalid character at byte {at}")]
    BadCharacter { at: usize },
    #[error("truncated at bit {at}")]
    Truncated { at: usize },
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    #[error("segment appears twice")]
    DuplicateSegment,
    #[error("too many segments or sections")]
    TooManySegments,
    #[error("number of sections differs from the header")]
    SectionCount,
    #[error("wrong length")]
    BadLength,
}

/// The name of the TCF consent cookie CMPs write first-party.
pub const TCF_COOKIE: &str = "euconsent-v2";
/// The name of the US Privacy cookie recommended by the USP API.
pub const USP_COOKIE: &str = "usprivacy";
/// Default name of kappe's own opt-out cookie.
pub const DEFAULT_OPTOUT_COOKIE: &str = "kappe_optout";
/// Query values longer than this are not percent-decoded (decoders cap lengths at 16 KiB, and a
/// percent-encoded byte takes three).
const MAX_QUERY_VALUE: usize = 3 * 16 * 1024;

/// Which signals kappe honours (`--honor`). A signal that is not honoured is not read at all.
/// With `tcf` off, `gdpr=1` imposes no consent requirement (the ad server is trusted to handle
/// TCF); `--consent-mode opt-in` still requires a TC string, since that mode is a requirement,
/// not a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HonorSet {
    pub cookie: bool,
    pub gpc: bool,
    pub dnt: bool,
    pub gpp: bool,
    pub usp: bool,
    pub tcf: bool,
}

impl HonorSet {
    pub const ALL: HonorSet = HonorSet {
        cookie: true,
        gpc: true,
        dnt: true,
        gpp: true,
        usp: true,
        tcf: true,
    };
    pub const NONE: HonorSet = HonorSet {
        cookie: false,
        gpc: false,
        dnt: false,
        gpp: false,
        usp: false,
        tcf: false,
    };

    /// Parses `all` or a comma list of `cookie`, `gpc`, `dnt`, `gpp`, `usp`, `tcf`.
    ///
    /// # Errors
    /// A message naming the unknown item, or saying the list is empty.
    pub fn parse(s: &str) -> Result<HonorSet, String> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(HonorSet::ALL);
        }
        let mut set = HonorSet::NONE;
        let mut any = false;
        for item in s.split(',').map(str::trim) {
            let slot = match item.to_ascii_lowercase().as_str() {
                "cookie" => &mut set.cookie,
                "gpc" => &mut set.gpc,
                "dnt" => &mut set.dnt,
                "gpp" => &mut set.gpp,
                "usp" => &mut set.usp,
                "tcf" => &mut set.tcf,
                _ => {
                    return Err(format!(
                        "unknown signal `{item}`: expected `all` or a comma list of cookie, gpc, \
                         dnt, gpp, usp, tcf"
                    ));
                }
            };
            *slot = true;
            any = true;
        }
        if !any {
            return Err("empty signal list".to_owned());
        }
        Ok(set)
    }
}

impl Default for HonorSet {
    fn default() -> Self {
        HonorSet::ALL
    }
}

/// Where the TCF consent requirement applies (`--consent-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsentMode {
    /// Only where `gdpr=1` (or GPP names section 2 as applicable).
    #[default]
    OptOut,
    /// On every request: strict EU setups.
    OptIn,
}

impl ConsentMode {
    /// Parses `opt-out` or `opt-in`.
    ///
    /// # Errors
    /// A message naming the value when it is neither.
    pub fn parse(s: &str) -> Result<ConsentMode, String> {
        match s.trim() {
            "opt-out" => Ok(ConsentMode::OptOut),
            "opt-in" => Ok(ConsentMode::OptIn),
            other => Err(format!(
                "unknown consent mode `{other}`: expected opt-in or opt-out"
            )),
        }
    }
}

/// The privacy part of kappe's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivacyConfig {
    pub honor: HonorSet,
    /// kappe's GVL vendor id: when set, vendor consent for it is required too.
    pub tcf_vendor_id: Option<u16>,
    pub consent_mode: ConsentMode,
    pub optout_cookie: String,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            honor: HonorSet::ALL,
            tcf_vendor_id: None,
            consent_mode: ConsentMode::OptOut,
            optout_cookie: DEFAULT_OPTOUT_COOKIE.to_owned(),
        }
    }
}

/// A privacy signal seen on a request. The first five are opt-outs; the `Tcf*` ones say how a
/// required TCF consent turned out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// kappe's own opt-out cookie.
    OwnCookie,
    /// `Sec-GPC: 1`.
    Gpc,
    /// `DNT: 1…`.
    Dnt,
    /// A GPP US section opting out (sale, sharing, targeted ads, GPC, or uspv1 `Y`).
    Gpp,
    /// A US Privacy string with opt-out-of-sale `Y`.
    UsPrivacy,
    /// A required TC string that permits retargeting.
    Tcf,
    /// A required TC string that is valid but lacks a purpose, vendor consent, or is restricted.
    TcfInsufficient,
    /// A required TC string that is malformed or not valid under TCF 2.2/2.3.
    TcfInvalid,
    /// TCF applies and there is no TC string.
    TcfMissing,
}

impl Signal {
    /// Every signal, in label order.
    pub const ALL: [Signal; 9] = [
        Signal::OwnCookie,
        Signal::Gpc,
        Signal::Dnt,
        Signal::Gpp,
        Signal::UsPrivacy,
        Signal::Tcf,
        Signal::TcfInsufficient,
        Signal::TcfInvalid,
        Signal::TcfMissing,
    ];

    /// The `signal` label of `kappe_privacy_signals_total`: a small fixed set.
    pub fn label(self) -> &'static str {
        match self {
            Signal::OwnCookie => "own_cookie",
            Signal::Gpc => "gpc",
            Signal::Dnt => "dnt",
            Signal::Gpp => "gpp",
            Signal::UsPrivacy => "us_privacy",
            Signal::Tcf => "tcf",
            Signal::TcfInsufficient => "tcf_insufficient",
            Signal::TcfInvalid => "tcf_invalid",
            Signal::TcfMissing => "tcf_missing",
        }
    }

    /// True for the signals that opt the visitor out.
    pub fn is_opt_out(self) -> bool {
        matches!(
            self,
            Signal::OwnCookie | Signal::Gpc | Signal::Dnt | Signal::Gpp | Signal::UsPrivacy
        )
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A small set of [`Signal`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Signals(u16);

impl Signals {
    pub fn insert(&mut self, s: Signal) {
        self.0 |= s.bit();
    }

    pub fn contains(&self, s: Signal) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The signals present, in [`Signal::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Signal> + use<> {
        let bits = self.0;
        // Most requests carry no signal: then there is nothing to walk.
        let all = if bits == 0 { 0 } else { Signal::ALL.len() };
        Signal::ALL
            .into_iter()
            .take(all)
            .filter(move |s| bits & s.bit() != 0)
    }

    /// True when any opt-out signal is present.
    pub fn any_opt_out(&self) -> bool {
        self.iter().any(Signal::is_opt_out)
    }
}

impl FromIterator<Signal> for Signals {
    fn from_iter<I: IntoIterator<Item = Signal>>(iter: I) -> Self {
        let mut s = Signals::default();
        for x in iter {
            s.insert(x);
        }
        s
    }
}

/// The privacy decision for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// An opt-out signal is present: drop retargeting, keep no per-visitor state.
    pub opted_out: bool,
    /// What was seen (only honoured signals).
    pub signals: Signals,
    /// Retargeting responses may be served. Implies `storage_allowed`: kappe only serves
    /// retargeting it is allowed to count, since an uncounted impression could break a cap.
    pub retargeting_allowed: bool,
    /// Per-visitor counters (and a visitor id cookie) are allowed.
    pub storage_allowed: bool,
    /// kappe's own opt-out cookie is present: the proxy inserts `Sec-GPC: 1` upstream.
    pub own_cookie: bool,
}

/// `Sec-GPC`: any header line, or any comma-separated item of one, that is exactly `1` after
/// trimming whitespace.
fn gpc(headers: &HeaderMap) -> bool {
    static SEC_GPC: HeaderName = HeaderName::from_static("sec-gpc");
    headers.get_all(&SEC_GPC).iter().any(|v| {
        v.as_bytes()
            .split(|&c| c == b',')
            .any(|item| item.trim_ascii() == b"1")
    })
}

/// `DNT`: the first DNT header's first non-blank character is `1`.
fn dnt(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::DNT)
        .is_some_and(|v| v.as_bytes().trim_ascii_start().first() == Some(&b'1'))
}

/// Percent-decodes a query value (and `+` as space) when it needs it; borrows otherwise.
fn query_value(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') || raw.len() > MAX_QUERY_VALUE {
        return Cow::Borrowed(raw);
    }
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The raw inputs of one request, borrowed where possible.
#[derive(Default)]
struct Inputs<'a> {
    own_cookie: bool,
    gdpr_applies: bool,
    gdpr_consent: Option<Cow<'a, str>>,
    gpp: Option<Cow<'a, str>>,
    gpp_sid: Option<Cow<'a, str>>,
    us_privacy: Option<Cow<'a, str>>,
}

fn first<'a>(slot: &mut Option<Cow<'a, str>>, value: impl FnOnce() -> Cow<'a, str>) {
    if slot.is_none() {
        *slot = Some(value());
    }
}

/// Decides what a request's privacy signals allow. See the module documentation for the rule.
/// Cheap when no signal is present: no allocation unless a query value is percent-encoded.
pub fn evaluate(
    cfg: &PrivacyConfig,
    headers: &HeaderMap,
    query: Option<&str>,
    now: UnixSecs,
) -> Verdict {
    evaluate_with(cfg, headers, &Jar::parse(headers), query, now)
}

/// [`evaluate`] with the request's cookies already parsed into `jar`.
pub fn evaluate_with(
    cfg: &PrivacyConfig,
    headers: &HeaderMap,
    jar: &Jar<'_>,
    query: Option<&str>,
    now: UnixSecs,
) -> Verdict {
    let h = cfg.honor;
    let mut signals = Signals::default();
    if h.gpc && gpc(headers) {
        signals.insert(Signal::Gpc);
    }
    if h.dnt && dnt(headers) {
        signals.insert(Signal::Dnt);
    }

    let mut input = Inputs::default();
    // The query string first: an explicit parameter from the publisher beats a stored cookie.
    for pair in query.unwrap_or("").split('&') {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            // Any `gdpr=1` makes GDPR apply: a duplicate `gdpr=0` cannot switch it off.
            "gdpr" => input.gdpr_applies |= query_value(raw).trim() == "1",
            "gdpr_consent" => first(&mut input.gdpr_consent, || query_value(raw)),
            "gpp" => first(&mut input.gpp, || query_value(raw)),
            "gpp_sid" => first(&mut input.gpp_sid, || query_value(raw)),
            "us_privacy" => first(&mut input.us_privacy, || query_value(raw)),
            _ => {}
        }
    }
    let mut tc_cookie = None;
    for (name, value) in jar.iter() {
        if name == cfg.optout_cookie {
            input.own_cookie = true;
        } else {
            match name {
                TCF_COOKIE => tc_cookie = tc_cookie.or(Some(value)),
                USP_COOKIE => first(&mut input.us_privacy, || Cow::Borrowed(value)),
                "gpp" => first(&mut input.gpp, || Cow::Borrowed(value)),
                "gpp_sid" => first(&mut input.gpp_sid, || Cow::Borrowed(value)),
                _ => {}
            }
        }
    }
    let own_cookie = h.cookie && input.own_cookie;
    if own_cookie {
        signals.insert(Signal::OwnCookie);
    }

    let mut tc_from_gpp: Option<&str> = None;
    if h.gpp
        && let Some(g) = input.gpp.as_deref()
    {
        // An unparseable gpp_sid is treated as absent: every section is read for opt-outs.
        let sid = input
            .gpp_sid
            .as_deref()
            .and_then(|s| gpp::parse_sid(s).ok());
        if sid.is_some_and(|s| s.contains(gpp::SECTION_TCFEUV2)) && h.tcf {
            input.gdpr_applies = true;
        }
        if let Ok(parsed) = gpp::decode(g) {
            for (id, text) in parsed.sections() {
                // Without gpp_sid, opt-outs in any US section still count (most protective),
                // but the TCF section is used only when gpp_sid names it.
                if !sid.is_none_or(|s| s.contains(id)) {
                    continue;
                }
                let opted_out = match id {
                    gpp::SECTION_TCFEUV2 => {
                        if sid.is_some() {
                            tc_from_gpp = Some(text);
                        }
                        false
                    }
                    gpp::SECTION_USPV1 => usp::decode(text).is_ok_and(|u| u.opted_out()),
                    gpp::SECTION_USNAT => gpp::decode_usnat(text).is_ok_and(|u| u.opted_out()),
                    gpp::SECTION_USCA => gpp::decode_usca(text).is_ok_and(|u| u.opted_out()),
                    9..=gpp::SECTION_US_LAST => {
                        gpp::decode_us_state_gpc(text).is_ok_and(|u| u.opted_out())
                    }
                    _ => false,
                };
                if opted_out {
                    signals.insert(Signal::Gpp);
                }
            }
        }
    }

    if h.usp
        && input
            .us_privacy
            .as_deref()
            .is_some_and(|s| usp::decode(s).is_ok_and(|u| u.opted_out()))
    {
        signals.insert(Signal::UsPrivacy);
    }

    let tcf_required = cfg.consent_mode == ConsentMode::OptIn || (h.tcf && input.gdpr_applies);
    let permission = if tcf_required {
        let candidate = input.gdpr_consent.as_deref().or(tc_from_gpp).or(tc_cookie);
        let (signal, permission) = tcf_outcome(candidate, cfg.tcf_vendor_id, now);
        signals.insert(signal);
        permission
    } else {
        tcf::Permission {
            retargeting: true,
            storage: true,
        }
    };

    let opted_out = signals.any_opt_out();
    let storage_allowed = !opted_out && permission.storage;
    Verdict {
        opted_out,
        signals,
        retargeting_allowed: storage_allowed && permission.retargeting,
        storage_allowed,
        own_cookie,
    }
}

fn tcf_outcome(
    candidate: Option<&str>,
    vendor: Option<u16>,
    now: UnixSecs,
) -> (Signal, tcf::Permission) {
    const NOTHING: tcf::Permission = tcf::Permission {
        retargeting: false,
        storage: false,
    };
    let Some(s) = candidate.map(str::trim).filter(|s| !s.is_empty()) else {
        return (Signal::TcfMissing, NOTHING);
    };
    match tcf::decode(s).map(|tc| tc.permission(vendor, now)) {
        Ok(Ok(p)) if p.retargeting && p.storage => (Signal::Tcf, p),
        Ok(Ok(p)) => (Signal::TcfInsufficient, p),
        Ok(Err(_)) | Err(_) => (Signal::TcfInvalid, NOTHING),
    }
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
