//! The validated configuration. [`Config::from_args`] merges flags and environment (from
//! [`crate::cli::Args`]) over the config file over built-in defaults, checks every value and names
//! the flag and value of the first one that is wrong. Nothing downstream re-validates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Uri};

use crate::cli::Args;
use crate::policy::{CapScope, Glob, GlobRule, Policy, Source, parse_cap_list, parse_duration};

/// A bad value, named by its flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value '{value}' for '--{flag}': {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("'--{0}' is required")]
    Missing(&'static str),
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn invalid(flag: &'static str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What a dropped response is replaced with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// 204 with an empty body.
    NoFill,
    /// A house ad read from this file at start-up.
    File { path: PathBuf, body: bytes::Bytes },
    /// Ask the ad server again with the capped campaigns excluded.
    Refetch,
}

/// What a capped response to a visitor without any id gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoId {
    Serve,
    Drop,
}

/// Behaviour while the store cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFailure {
    /// Drop capped responses (`reason="store_unavailable"`); serve uncapped ones.
    Closed,
    /// Serve capped responses uncounted.
    Open,
}

/// Where a visitor id is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VisitorSource {
    Cookie(String),
    Header(HeaderName),
}

impl VisitorSource {
    /// The cookie's name, when the id is read from a cookie.
    #[must_use]
    pub fn cookie(&self) -> Option<&str> {
        match self {
            VisitorSource::Cookie(name) => Some(name),
            VisitorSource::Header(_) => None,
        }
    }

    /// The header's name, when the id is read from a header.
    #[must_use]
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            VisitorSource::Header(name) => Some(name),
            VisitorSource::Cookie(_) => None,
        }
    }
}

/// Everything about reading the ad server's answer and answering the visitor.
#[derive(Clone, Debug)]
pub struct Enforcement {
    pub campaign_from: Vec<Source>,
    pub advertiser_from: Vec<Source>,
    pub retargeting_header: HeaderName,
    pub policy_header: Option<HeaderName>,
    pub keep_upstream_headers: bool,
    pub max_inspect_bytes: usize,
    pub visitor_cookie: String,
    pub visitor_from: Vec<VisitorSource>,
    pub visitor_fallback_ip_ua: bool,
    pub no_id: NoId,
    pub cookie_secure: bool,
    pub on_drop: OnDrop,
    pub exclude_param: Option<String>,
    pub refetch_max: u32,
    pub hint_capped: bool,
    pub dry_run: bool,
    pub explain_header: bool,
}

/// Privacy settings as configured (the signal logic lives in [`crate::privacy`]).
#[derive(Clone, Debug)]
pub struct PrivacySettings {
    pub signals: crate::privacy::PrivacyConfig,
    /// The `--honor` value as given, for `kappe check`.
    pub honor: String,
    pub strip_cookies: Vec<String>,
    pub privacy_path: String,
}

/// The store's settings.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub url: String,
    pub redis_prefix: String,
    pub timeout: Duration,
    pub failure: StoreFailure,
    pub state_file: Option<PathBuf>,
    pub snapshot_interval: Duration,
    pub discard_corrupt_state: bool,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub max_visitors: usize,
    pub max_campaigns: usize,
    pub max_retention_secs: u32,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub upstream: Uri,
    /// The flags and environment as given, before the config file filled the gaps: a reload
    /// merges them over the new file again, so the command line keeps winning.
    pub given: Args,
    /// `host:port` of the upstream, for Host and the connector.
    pub upstream_authority: http::uri::Authority,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub config_file: Option<PathBuf>,
    pub threads: usize,
    pub preserve_host: bool,
    pub header_read_timeout: Duration,
    pub max_header_size: usize,
    pub max_body_size: u64,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub access_log: Option<LogFormat>,
    pub admin_token: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub store: StoreSettings,
    pub policy: Policy,
    pub enforcement: Enforcement,
    pub privacy: PrivacySettings,
}

/// Parses `50ms`, `2s`, `1m`, `1h` into a duration.
///
/// # Errors
/// A reason when the value is not a number followed by one of those units.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let reason = || "expected a duration such as 50ms, 2s, 1m or 1h".to_owned();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| reason());
    }
    parse_duration(s)
        .map(|secs| Duration::from_secs(secs.into()))
        .map_err(|_| reason())
}

/// Parses `65536`, `64KiB`, `1MiB`, `1GiB` (also `k`, `m`, `g`) into bytes.
///
/// # Errors
/// A reason when the value is not a size.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a size such as 65536, 64KiB or 1MiB".to_owned())?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return Err("unknown unit; use KiB, MiB or GiB".to_owned()),
    };
    n.checked_mul(mult).ok_or_else(|| "too large".to_owned())
}

fn number<T>(flag: &'static str, v: Option<&str>, default: T, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(v) = v else { return Ok(default) };
    let n: T = v
        .trim()
        .parse()
        .map_err(|_| invalid(flag, v, "expected a whole number"))?;
    if n < min {
        return Err(invalid(flag, v, format!("must be at least {min}")));
    }
    Ok(n)
}

fn timeout(
    flag: &'static str,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) => match parse_timeout(v) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(invalid(flag, v, "must be more than zero")),
            Err(e) => Err(invalid(flag, v, e)),
        },
    }
}

fn size(flag: &'static str, v: Option<&str>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) => match parse_size(v) {
            Ok(0) => Err(invalid(flag, v, "must be more than zero")),
            Ok(n) => Ok(n),
            Err(e) => Err(invalid(flag, v, e)),
        },
    }
}

fn addr(flag: &'static str, v: Option<&str>, default: &str) -> Result<SocketAddr, ConfigError> {
    let v = v.unwrap_or(default);
    v.trim()
        .parse()
        .map_err(|_| invalid(flag, v, "expected IP:PORT such as 127.0.0.1:8080"))
}

fn header_name(flag: &'static str, v: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(v.trim().as_bytes()).map_err(|_| invalid(flag, v, "not a header name"))
}

fn cookie_name(flag: &'static str, v: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(invalid(flag, v, "a cookie name of letters, digits, - _ ."))
    }
}

fn switch(v: Option<bool>) -> bool {
    v.unwrap_or(false)
}

/// Reads the config file into raw arguments. Numbers are accepted where flags take strings, and a
/// single string where a flag is repeatable.
///
/// # Errors
/// [`ConfigError::File`] when the file cannot be read or has unknown keys or wrong types.
pub fn read_file(path: &Path) -> Result<Args, ConfigError> {
    let err = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    const LISTS: &[&str] = &[
        "cap",
        "campaign-cap",
        "visitor-cap",
        "retargeting-campaigns",
        "campaign-from",
        "advertiser-from",
        "advertiser-cap",
        "visitor-from",
        "strip-cookies",
    ];
    for (key, value) in table.iter_mut() {
        let scalar = |v: &toml::Value| match v {
            toml::Value::Integer(i) => toml::Value::String(i.to_string()),
            toml::Value::Float(f) => toml::Value::String(f.to_string()),
            other => other.clone(),
        };
        let normalised = match &*value {
            toml::Value::Array(items) => toml::Value::Array(items.iter().map(scalar).collect()),
            v if LISTS.contains(&key.as_str()) => toml::Value::Array(vec![scalar(v)]),
            v => scalar(v),
        };
        *value = normalised;
    }
    table
        .try_into()
        .map_err(|e: toml::de::Error| err(e.to_string()))
}

impl Config {
    /// Validates `args`, filling gaps from the config file they name.
    ///
    /// # Errors
    /// The first invalid value, naming its flag, or an unreadable config file.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let config_file = args.config.clone();
        let given = args.clone();
        let args = match &config_file {
            Some(path) => args.or_from(read_file(path)?),
            None => args,
        };
        Self::validate(args, given, config_file)
    }

    fn validate(a: Args, given: Args, config_file: Option<PathBuf>) -> Result<Config, ConfigError> {
        let upstream_raw = a
            .upstream
            .as_deref()
            .ok_or(ConfigError::Missing("upstream"))?;
        let upstream: Uri = upstream_raw
            .trim()
            .parse()
            .map_err(|e| invalid("upstream", upstream_raw, e))?;
        if upstream.scheme_str() != Some("http") {
            return Err(invalid(
                "upstream",
                upstream_raw,
                "expected http://host:port",
            ));
        }
        let upstream_authority = upstream
            .authority()
            .cloned()
            .ok_or_else(|| invalid("upstream", upstream_raw, "expected http://host:port"))?;
        if upstream.path() != "/" && !upstream.path().is_empty() {
            return Err(invalid(
                "upstream",
                upstream_raw,
                "give only scheme, host and port; paths are forwarded as requested",
            ));
        }

        let threads = match a.threads.as_deref() {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            v => number("threads", v, 1usize, 1)?,
        };
        let log_format = match a.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(v) => return Err(invalid("log-format", v, "expected text or json")),
        };
        let access_log = match a.access_log.as_deref() {
            None | Some("off") => None,
            Some("text") => Some(LogFormat::Text),
            Some("json") => Some(LogFormat::Json),
            Some(v) => return Err(invalid("access-log", v, "expected text, json or off")),
        };
        let log_filter = a
            .log
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".to_owned());
        tracing_subscriber::EnvFilter::try_new(&log_filter)
            .map_err(|e| invalid("log", &log_filter, e))?;
        let tls = match (a.tls_cert.clone(), a.tls_key.clone()) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::Missing("tls-key")),
            (None, Some(_)) => return Err(ConfigError::Missing("tls-cert")),
        };
        if let Some(t) = &a.admin_token
            && t.len() < 16
        {
            return Err(invalid(
                "admin-token",
                "(hidden)",
                "use at least 16 characters",
            ));
        }

        let store = Self::store(&a)?;
        let policy = Self::policy(&a)?;
        let enforcement = Self::enforcement(&a)?;
        let privacy = Self::privacy(&a)?;

        Ok(Config {
            upstream,
            given,
            upstream_authority,
            listen: addr("listen", a.listen.as_deref(), "127.0.0.1:8080")?,
            admin_listen: addr("admin-listen", a.admin_listen.as_deref(), "127.0.0.1:9090")?,
            config_file,
            threads,
            preserve_host: switch(a.preserve_host),
            header_read_timeout: timeout(
                "header-read-timeout",
                a.header_read_timeout.as_deref(),
                Duration::from_secs(10),
            )?,
            max_header_size: size("max-header-size", a.max_header_size.as_deref(), 32 * 1024)?
                .max(8192) as usize,
            max_body_size: size("max-body-size", a.max_body_size.as_deref(), 1024 * 1024)?,
            upstream_connect_timeout: timeout(
                "upstream-connect-timeout",
                a.upstream_connect_timeout.as_deref(),
                Duration::from_secs(2),
            )?,
            upstream_timeout: timeout(
                "upstream-timeout",
                a.upstream_timeout.as_deref(),
                Duration::from_secs(10),
            )?,
            max_connections: number("max-connections", a.max_connections.as_deref(), 10_000, 1)?,
            shutdown_grace: timeout(
                "shutdown-grace",
                a.shutdown_grace.as_deref(),
                Duration::from_secs(30),
            )?,
            log_format,
            log_filter,
            access_log,
            admin_token: a.admin_token.clone(),
            tls,
            store,
            policy,
            enforcement,
            privacy,
        })
    }

    fn store(a: &Args) -> Result<StoreSettings, ConfigError> {
        let url = a.store.clone().unwrap_or_else(|| "memory".to_owned());
        crate::store::redis::StoreUrl::parse(&url).map_err(|e| invalid("store", &url, e))?;
        let failure = match a.store_failure.as_deref() {
            None | Some("closed") => StoreFailure::Closed,
            Some("open") => StoreFailure::Open,
            Some(v) => return Err(invalid("store-failure", v, "expected closed or open")),
        };
        let max_retention_secs = match a.max_retention.as_deref() {
            None => 30 * 86_400,
            Some(v) => parse_duration(v).map_err(|e| invalid("max-retention", v, e))?,
        };
        if let Some(s) = &a.secret
            && s.len() < 16
        {
            return Err(invalid("secret", "(hidden)", "use at least 16 characters"));
        }
        Ok(StoreSettings {
            url,
            redis_prefix: a
                .redis_prefix
                .clone()
                .unwrap_or_else(|| "kappe:".to_owned()),
            timeout: timeout(
                "store-timeout",
                a.store_timeout.as_deref(),
                Duration::from_millis(50),
            )?,
            failure,
            state_file: a.state_file.clone(),
            snapshot_interval: timeout(
                "snapshot-interval",
                a.snapshot_interval.as_deref(),
                Duration::from_secs(30),
            )?,
            discard_corrupt_state: switch(a.discard_corrupt_state),
            secret: a.secret.clone(),
            secret_file: a.secret_file.clone(),
            max_visitors: number("max-visitors", a.max_visitors.as_deref(), 10_000_000, 1)?,
            max_campaigns: number("max-campaigns", a.max_campaigns.as_deref(), 100_000, 1)?,
            max_retention_secs,
        })
    }

    /// Builds the cap policy; also used by reload.
    ///
    /// # Errors
    /// The first invalid policy value, naming its flag.
    pub fn policy(a: &Args) -> Result<Policy, ConfigError> {
        let caps = |flag: &'static str, vals: &[String]| {
            let mut all = Vec::new();
            for v in vals {
                all.extend(parse_cap_list(v).map_err(|e| invalid(flag, v, e))?);
            }
            all.sort();
            all.dedup();
            Ok::<_, ConfigError>(all)
        };
        let rules = |flag: &'static str, vals: &[String]| {
            let mut out = vals
                .iter()
                .map(|v| GlobRule::parse(v).map_err(|e| invalid(flag, v, e)))
                .collect::<Result<Vec<_>, _>>()?;
            Policy::sort_rules(&mut out);
            Ok::<_, ConfigError>(out)
        };
        let duration = |flag: &'static str, v: Option<&str>| {
            v.map(|v| parse_duration(v).map_err(|e| invalid(flag, v, e)))
                .transpose()
        };
        let scope = match a.cap_scope.as_deref() {
            None | Some("retargeting") => CapScope::Retargeting,
            Some("all") => CapScope::All,
            Some(v) => return Err(invalid("cap-scope", v, "expected retargeting or all")),
        };
        let retargeting_campaigns = a
            .retargeting_campaigns
            .iter()
            .map(|g| Glob::new(g).ok_or_else(|| invalid("retargeting-campaigns", g, "empty glob")))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            default_caps: caps("cap", &a.cap)?,
            campaign_rules: rules("campaign-cap", &a.campaign_cap)?,
            advertiser_rules: rules("advertiser-cap", &a.advertiser_cap)?,
            visitor_caps: caps("visitor-cap", &a.visitor_cap)?,
            max_age_secs: duration("max-retargeting-age", a.max_retargeting_age.as_deref())?,
            scope,
            retargeting_campaigns,
            burn_secs: duration("burn-duration", a.burn_duration.as_deref())?
                .unwrap_or(30 * 86_400),
        })
    }

    fn enforcement(a: &Args) -> Result<Enforcement, ConfigError> {
        let sources = |flag: &'static str, vals: &[String]| {
            vals.iter()
                .map(|v| Source::parse(v).map_err(|e| invalid(flag, v, e)))
                .collect::<Result<Vec<_>, _>>()
        };
        let campaign_header = header_name(
            "campaign-header",
            a.campaign_header.as_deref().unwrap_or("x-campaign-id"),
        )?;
        let mut campaign_from = sources("campaign-from", &a.campaign_from)?;
        if campaign_from.is_empty() {
            campaign_from.push(Source::Header(campaign_header));
        }
        let visitor_cookie = cookie_name(
            "visitor-cookie",
            a.visitor_cookie.as_deref().unwrap_or("kappe_id"),
        )?;
        let mut visitor_from = Vec::new();
        for v in &a.visitor_from {
            visitor_from.push(match v.split_once(':') {
                Some(("cookie", name)) => VisitorSource::Cookie(cookie_name("visitor-from", name)?),
                Some(("header", name)) => VisitorSource::Header(header_name("visitor-from", name)?),
                _ => {
                    return Err(invalid(
                        "visitor-from",
                        v,
                        "expected cookie:NAME or header:NAME",
                    ));
                }
            });
        }
        if visitor_from.is_empty() {
            visitor_from.push(VisitorSource::Cookie(visitor_cookie.clone()));
        }
        let on_drop = match a.on_drop.as_deref() {
            None | Some("no-fill") => OnDrop::NoFill,
            Some("refetch") => OnDrop::Refetch,
            Some(v) => match v.strip_prefix("file:") {
                Some(path) => {
                    let body = std::fs::read(path).map_err(|e| invalid("on-drop", v, e))?;
                    OnDrop::File {
                        path: path.into(),
                        body: body.into(),
                    }
                }
                None => {
                    return Err(invalid(
                        "on-drop",
                        v,
                        "expected no-fill, file:PATH or refetch",
                    ));
                }
            },
        };
        Ok(Enforcement {
            campaign_from,
            advertiser_from: sources("advertiser-from", &a.advertiser_from)?,
            retargeting_header: header_name(
                "retargeting-header",
                a.retargeting_header.as_deref().unwrap_or("x-retargeting"),
            )?,
            policy_header: a
                .policy_header
                .as_deref()
                .map(|h| header_name("policy-header", h))
                .transpose()?,
            keep_upstream_headers: switch(a.keep_upstream_headers),
            max_inspect_bytes: size(
                "max-inspect-bytes",
                a.max_inspect_bytes.as_deref(),
                64 * 1024,
            )? as usize,
            visitor_cookie,
            visitor_from,
            visitor_fallback_ip_ua: match a.visitor_fallback.as_deref() {
                None | Some("off") => false,
                Some("ip-ua") => true,
                Some(v) => return Err(invalid("visitor-fallback", v, "expected off or ip-ua")),
            },
            no_id: match a.no_id.as_deref() {
                None | Some("serve") => NoId::Serve,
                Some("drop") => NoId::Drop,
                Some(v) => return Err(invalid("no-id", v, "expected serve or drop")),
            },
            cookie_secure: switch(a.cookie_secure),
            on_drop,
            exclude_param: a.exclude_param.clone(),
            refetch_max: number("refetch-max", a.refetch_max.as_deref(), 1u32, 0)?.min(10),
            hint_capped: switch(a.hint_capped),
            dry_run: switch(a.dry_run),
            explain_header: switch(a.explain_header),
        })
    }

    fn privacy(a: &Args) -> Result<PrivacySettings, ConfigError> {
        let honor = a.honor.clone().unwrap_or_else(|| "all".to_owned());
        let honor_set =
            crate::privacy::HonorSet::parse(&honor).map_err(|e| invalid("honor", &honor, e))?;
        let consent_mode = match a.consent_mode.as_deref() {
            None => crate::privacy::ConsentMode::OptOut,
            Some(v) => {
                crate::privacy::ConsentMode::parse(v).map_err(|e| invalid("consent-mode", v, e))?
            }
        };
        let privacy_path = a
            .privacy_path
            .clone()
            .unwrap_or_else(|| "/_kappe".to_owned());
        let path_ok = privacy_path.starts_with('/')
            && privacy_path.len() > 1
            && !privacy_path.ends_with('/')
            && privacy_path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
        if !path_ok {
            return Err(invalid(
                "privacy-path",
                &privacy_path,
                "expected a path such as /_kappe",
            ));
        }
        Ok(PrivacySettings {
            signals: crate::privacy::PrivacyConfig {
                honor: honor_set,
                tcf_vendor_id: a
                    .tcf_vendor_id
                    .as_deref()
                    .map(|v| number("tcf-vendor-id", Some(v), 1u16, 1))
                    .transpose()?,
                consent_mode,
                optout_cookie: cookie_name(
                    "optout-cookie",
                    a.optout_cookie.as_deref().unwrap_or("kappe_optout"),
                )?,
            },
            honor,
            strip_cookies: a
                .strip_cookies
                .iter()
                .map(|c| cookie_name("strip-cookies", c))
                .collect::<Result<_, _>>()?,
            privacy_path,
        })
    }

    /// The effective configuration, as `kappe check` prints it.
    pub fn describe(&self) -> String {
        let e = &self.enforcement;
        let mut out = String::new();
        let mut line = |k: &str, v: String| out += &format!("{k:<21}{v}\n");
        line("upstream:", self.upstream.to_string());
        line("listen:", self.listen.to_string());
        line("admin listen:", self.admin_listen.to_string());
        line("threads:", self.threads.to_string());
        line("tls:", if self.tls.is_some() { "on" } else { "off" }.into());
        line("store:", self.store.url.clone());
        line(
            "state file:",
            self.store
                .state_file
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
        );
        line("max visitors:", self.store.max_visitors.to_string());
        line(
            "max retention:",
            crate::policy::format_duration(self.store.max_retention_secs),
        );
        line(
            "campaign from:",
            e.campaign_from
                .iter()
                .map(Source::describe)
                .collect::<Vec<_>>()
                .join(", "),
        );
        line("retargeting header:", e.retargeting_header.to_string());
        line("on drop:", format!("{:?}", e.on_drop).to_lowercase());
        line("dry run:", e.dry_run.to_string());
        line("honor:", self.privacy.honor.clone());
        line("privacy path:", self.privacy.privacy_path.clone());
        out + "\npolicy:\n" + &self.policy.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli =
            crate::cli::Cli::try_parse_from(std::iter::once("kappe").chain(args.iter().copied()))
                .expect("clap accepts the shape");
        Config::from_args(cli.args)
    }

    /// Bad policy values stop start-up and name the flag and the value.
    #[test]
    fn bad_values_name_flag_and_value() {
        for (args, flag, value) in [
            (vec!["--cap", "3/xyz"], "--cap", "3/xyz"),
            (vec!["--cap", "-1/1d"], "--cap", "-1/1d"),
            (vec!["--cap", "3"], "--cap", "'3'"),
            (vec!["--campaign-cap", "rt-*"], "--campaign-cap", "rt-*"),
            (vec!["--listen", "nowhere"], "--listen", "nowhere"),
            (vec!["--store", "mongodb://x"], "--store", "mongodb://x"),
            (vec!["--store-timeout", "fast"], "--store-timeout", "fast"),
        ] {
            let mut full = vec!["--upstream", "http://127.0.0.1:1"];
            full.extend(args);
            let err = parse(&full).unwrap_err().to_string();
            assert!(err.contains(flag) && err.contains(value), "{err}");
        }
    }

    /// Flags win over the config file, the file over defaults; numbers and single strings work.
    #[test]
    fn flags_win_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kappe.toml");
        std::fs::write(
            &path,
            "upstream = \"http://127.0.0.1:9\"\nthreads = 3\ncap = \"3/1d\"\nlisten = \"127.0.0.1:1111\"\ndry-run = true\n",
        )
        .unwrap();
        let cfg = parse(&[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2222",
        ])
        .unwrap();
        assert_eq!(cfg.listen.port(), 2222);
        assert_eq!(cfg.threads, 3);
        assert_eq!(cfg.policy.default_caps.len(), 1);
        assert!(cfg.enforcement.dry_run);
        assert_eq!(cfg.admin_listen.port(), 9090);
        std::fs::write(
            &path,
            "upstream = \"http://127.0.0.1:9\"\nno-such-key = 1\n",
        )
        .unwrap();
        assert!(parse(&["--config", path.to_str().unwrap()]).is_err());
    }

    /// Timeouts and sizes accept the usual units.
    #[test]
    fn units_parse() {
        assert_eq!(parse_timeout("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_timeout("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert!(parse_size("1 parsec").is_err());
    }
}
