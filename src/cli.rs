//! Raw command-line arguments, exactly as the operator typed them (clap derive). Every flag has a
//! `KAPPE_*` environment twin and a key of the same name in the config file. Nothing here is
//! validated beyond its shape: [`crate::config`] turns these into a typed `Config` and names the
//! flag and value of anything wrong.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kappe: a reverse proxy that caps retargeting exactly and honours every opt-out.
#[derive(Parser, Debug, Clone, Default)]
#[command(name = "kappe", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: Args,
}

/// What to run. Without a subcommand kappe runs the proxy.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Validate the configuration, print the effective configuration and policy, exit 0 or 1.
    Check,
    /// Start a built-in sample ad server and kappe in front of it, and print the URLs to open.
    Demo {
        /// Where the sample ad server listens (default: a free port on localhost).
        #[arg(
            long,
            env = "KAPPE_DEMO_UPSTREAM_LISTEN",
            default_value = "127.0.0.1:0"
        )]
        demo_upstream_listen: String,
    },
    /// Serve only the built-in sample ad server (for containers and trials).
    DemoUpstream {
        /// Where the sample ad server listens.
        #[arg(long = "listen", default_value = "127.0.0.1:8081")]
        listen: String,
    },
    /// Drive the in-memory store to size a machine: admits per second, latency, bytes per key.
    BenchStore {
        /// Number of distinct visitors.
        #[arg(long, default_value_t = 1_000_000)]
        visitors: usize,
        /// Campaigns per visitor.
        #[arg(long, default_value_t = 1)]
        campaigns: usize,
        /// Worker threads driving the store (the global --threads is the proxy's).
        #[arg(long = "bench-threads", default_value_t = 1)]
        bench_threads: usize,
        /// How long to drive it, in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// The cap policy to drive, N/DURATION (repeatable) [default: 3/1d].
        #[arg(long = "bench-cap")]
        bench_cap: Vec<String>,
        /// Admits ahead whose index entries are prefetched, like `redis-benchmark -P` (0: each
        /// admit on its own).
        #[arg(long, default_value_t = 0)]
        pipeline: usize,
        /// Where the snapshot is written [default: the system's temporary directory].
        #[arg(long)]
        snapshot_dir: Option<std::path::PathBuf>,
    },
    /// Probe the admin port's /healthz and exit 0 when it answers 200 (for container health checks).
    Healthcheck {
        /// The URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        admin_url: String,
    },
}

/// Every flag of the proxy. Options are `Option`s (or empty lists) so that a value from the config
/// file can fill what the command line and environment left out.
#[derive(clap::Args, Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Args {
    // ---- core ----
    /// The ad server to forward to, e.g. `http://ads.internal:8080`.
    #[arg(long, env = "KAPPE_UPSTREAM", global = true)]
    pub upstream: Option<String>,
    /// Address for visitors [default: 127.0.0.1:8080].
    #[arg(long, env = "KAPPE_LISTEN", global = true)]
    pub listen: Option<String>,
    /// Address for operators: metrics, health, status page [default: 127.0.0.1:9090].
    #[arg(long, env = "KAPPE_ADMIN_LISTEN", global = true)]
    pub admin_listen: Option<String>,
    /// A TOML file whose keys mirror these flags; flags and environment win over it.
    #[arg(long, env = "KAPPE_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Worker threads [default: one per available core].
    #[arg(long, env = "KAPPE_THREADS", global = true, allow_hyphen_values = true)]
    pub threads: Option<String>,
    /// Send the visitor's Host header upstream instead of the upstream's.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, env = "KAPPE_PRESERVE_HOST", global = true)]
    pub preserve_host: Option<bool>,
    /// Time a client may take to send its request headers [default: 10s].
    #[arg(long, env = "KAPPE_HEADER_READ_TIMEOUT", global = true)]
    pub header_read_timeout: Option<String>,
    /// Largest request head in bytes; larger gets 431 [default: 32768].
    #[arg(long, env = "KAPPE_MAX_HEADER_SIZE", global = true)]
    pub max_header_size: Option<String>,
    /// Largest request body in bytes; larger gets 413 [default: 1048576].
    #[arg(long, env = "KAPPE_MAX_BODY_SIZE", global = true)]
    pub max_body_size: Option<String>,
    /// Time to connect to the upstream; longer gets 504 [default: 2s].
    #[arg(long, env = "KAPPE_UPSTREAM_CONNECT_TIMEOUT", global = true)]
    pub upstream_connect_timeout: Option<String>,
    /// Time for the upstream to answer with its headers; longer gets 504 [default: 10s].
    #[arg(long, env = "KAPPE_UPSTREAM_TIMEOUT", global = true)]
    pub upstream_timeout: Option<String>,
    /// Concurrent visitor connections; more are refused with 503 [default: 10000].
    #[arg(long, env = "KAPPE_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<String>,
    /// Time in-flight requests get to finish on SIGTERM or SIGINT [default: 30s].
    #[arg(long, env = "KAPPE_SHUTDOWN_GRACE", global = true)]
    pub shutdown_grace: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "KAPPE_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Log filter in RUST_LOG syntax [default: RUST_LOG, else info].
    #[arg(long, env = "KAPPE_LOG", global = true)]
    pub log: Option<String>,
    /// Log one line per request: text or json (never a raw visitor id) [default: off].
    #[arg(long, env = "KAPPE_ACCESS_LOG", global = true)]
    pub access_log: Option<String>,
    /// Bearer token required for /metrics, /reload and the status page.
    #[arg(long, env = "KAPPE_ADMIN_TOKEN", global = true)]
    pub admin_token: Option<String>,
    /// PEM certificate chain: terminate TLS on the visitor port (HTTP/2 by ALPN).
    #[arg(long, env = "KAPPE_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "KAPPE_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,

    // ---- store ----
    /// Where impressions are counted: memory, redis://host:port[/db], rediss://..., or
    /// redis+cluster://host1:port1,host2:port2 [default: memory].
    #[arg(long, env = "KAPPE_STORE", global = true)]
    pub store: Option<String>,
    /// Prefix of every Redis key [default: kappe:].
    #[arg(long, env = "KAPPE_REDIS_PREFIX", global = true)]
    pub redis_prefix: Option<String>,
    /// Time a store operation may take [default: 50ms].
    #[arg(long, env = "KAPPE_STORE_TIMEOUT", global = true)]
    pub store_timeout: Option<String>,
    /// While the store is unreachable: closed drops capped responses, open serves them uncounted
    /// [default: closed].
    #[arg(long, env = "KAPPE_STORE_FAILURE", global = true)]
    pub store_failure: Option<String>,
    /// Snapshot file for the memory store: loaded at start, written periodically and on shutdown.
    #[arg(long, env = "KAPPE_STATE_FILE", global = true)]
    pub state_file: Option<PathBuf>,
    /// How often the state file is written [default: 30s].
    #[arg(long, env = "KAPPE_SNAPSHOT_INTERVAL", global = true)]
    pub snapshot_interval: Option<String>,
    /// Move a corrupt state file aside and start empty instead of refusing to start.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, env = "KAPPE_DISCARD_CORRUPT_STATE", global = true)]
    pub discard_corrupt_state: Option<bool>,
    /// The key that pseudonymises visitor ids (at least 16 characters).
    #[arg(long, env = "KAPPE_SECRET", global = true, hide_env_values = true)]
    #[serde(skip)]
    pub secret: Option<String>,
    /// A file holding the pseudonymisation key.
    #[arg(long, env = "KAPPE_SECRET_FILE", global = true)]
    pub secret_file: Option<PathBuf>,
    /// Most visitors the memory store holds; the least recently seen are evicted [default: 10000000].
    #[arg(
        long,
        env = "KAPPE_MAX_VISITORS",
        global = true,
        allow_hyphen_values = true
    )]
    pub max_visitors: Option<String>,
    /// Most distinct campaign and advertiser ids the memory store interns [default: 100000].
    #[arg(long, env = "KAPPE_MAX_CAMPAIGNS", global = true)]
    pub max_campaigns: Option<String>,
    /// Nothing about a visitor is kept longer than this [default: 30d].
    #[arg(long, env = "KAPPE_MAX_RETENTION", global = true)]
    pub max_retention: Option<String>,

    // ---- cap policy ----
    /// Default caps for every capped campaign, N/DURATION (repeatable: all apply).
    #[arg(
        long,
        env = "KAPPE_CAP",
        global = true,
        allow_hyphen_values = true,
        value_delimiter = ','
    )]
    pub cap: Vec<String>,
    /// Caps for campaigns matching a glob, GLOB=N/DUR[,N/DUR...], replacing the defaults
    /// (repeatable; the most specific glob wins, then the first given).
    #[arg(
        long,
        env = "KAPPE_CAMPAIGN_CAP",
        global = true,
        allow_hyphen_values = true,
        value_delimiter = ';'
    )]
    pub campaign_cap: Vec<String>,
    /// Caps across all capped campaigns of one visitor, N/DURATION (repeatable).
    #[arg(
        long,
        env = "KAPPE_VISITOR_CAP",
        global = true,
        allow_hyphen_values = true,
        value_delimiter = ','
    )]
    pub visitor_cap: Vec<String>,
    /// A campaign stops retargeting a visitor this long after its first impression.
    #[arg(
        long,
        env = "KAPPE_MAX_RETARGETING_AGE",
        global = true,
        allow_hyphen_values = true
    )]
    pub max_retargeting_age: Option<String>,
    /// Which responses are capped: retargeting or all [default: retargeting].
    #[arg(long, env = "KAPPE_CAP_SCOPE", global = true)]
    pub cap_scope: Option<String>,
    /// A response header in which the ad server may declare caps (X-Fcap: 3/1d,10/7d).
    #[arg(long, env = "KAPPE_POLICY_HEADER", global = true)]
    pub policy_header: Option<String>,
    /// Response header naming the campaign [default: X-Campaign-Id].
    #[arg(long, env = "KAPPE_CAMPAIGN_HEADER", global = true)]
    pub campaign_header: Option<String>,
    /// Response header marking retargeting (1, true or yes) [default: X-Retargeting].
    #[arg(long, env = "KAPPE_RETARGETING_HEADER", global = true)]
    pub retargeting_header: Option<String>,
    /// Campaigns matching this glob are retargeting campaigns (repeatable).
    #[arg(
        long,
        env = "KAPPE_RETARGETING_CAMPAIGNS",
        global = true,
        value_delimiter = ','
    )]
    pub retargeting_campaigns: Vec<String>,
    /// Pass the upstream's kappe headers (campaign, retargeting, policy, burn) on to the visitor.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, env = "KAPPE_KEEP_UPSTREAM_HEADERS", global = true)]
    pub keep_upstream_headers: Option<bool>,
    /// Where the campaign id is read: header:NAME, json:/pointer or regex:PATTERN (repeatable,
    /// tried in order) [default: header:X-Campaign-Id].
    #[arg(long, env = "KAPPE_CAMPAIGN_FROM", global = true)]
    pub campaign_from: Vec<String>,
    /// Where the advertiser id is read (same sources as --campaign-from).
    #[arg(long, env = "KAPPE_ADVERTISER_FROM", global = true)]
    pub advertiser_from: Vec<String>,
    /// Caps per advertiser, GLOB=N/DUR[,N/DUR...] (repeatable).
    #[arg(
        long,
        env = "KAPPE_ADVERTISER_CAP",
        global = true,
        allow_hyphen_values = true,
        value_delimiter = ';'
    )]
    pub advertiser_cap: Vec<String>,
    /// Most bytes of a response body read to find a campaign [default: 65536].
    #[arg(long, env = "KAPPE_MAX_INSPECT_BYTES", global = true)]
    pub max_inspect_bytes: Option<String>,
    /// Cookie holding kappe's visitor id [default: kappe_id].
    #[arg(long, env = "KAPPE_VISITOR_COOKIE", global = true)]
    pub visitor_cookie: Option<String>,
    /// Where the visitor id comes from, tried in order: cookie:NAME or header:NAME
    /// (default: `cookie:` followed by --visitor-cookie).
    #[arg(long, env = "KAPPE_VISITOR_FROM", global = true, value_delimiter = ',')]
    pub visitor_from: Vec<String>,
    /// Id for visitors without one: off or ip-ua (keyed hash of address and User-Agent, salt
    /// changes daily) [default: off].
    #[arg(long, env = "KAPPE_VISITOR_FALLBACK", global = true)]
    pub visitor_fallback: Option<String>,
    /// What a capped response to a visitor without any id gets: serve or drop [default: serve].
    #[arg(long, env = "KAPPE_NO_ID", global = true)]
    pub no_id: Option<String>,
    /// Mark the visitor cookie Secure even over plain HTTP (behind a TLS terminator).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, env = "KAPPE_COOKIE_SECURE", global = true)]
    pub cookie_secure: Option<bool>,
    /// The answer for a dropped response: no-fill (204), file:PATH, or refetch [default: no-fill].
    #[arg(long, env = "KAPPE_ON_DROP", global = true)]
    pub on_drop: Option<String>,
    /// With refetch: also name the excluded campaigns in this query parameter
    /// (exclude=campaignid:1,campaignid:2).
    #[arg(long, env = "KAPPE_EXCLUDE_PARAM", global = true)]
    pub exclude_param: Option<String>,
    /// With refetch: most extra upstream calls per request [default: 1].
    #[arg(
        long,
        env = "KAPPE_REFETCH_MAX",
        global = true,
        allow_hyphen_values = true
    )]
    pub refetch_max: Option<String>,
    /// Tell the ad server which campaigns are capped for the visitor (X-Kappe-Capped).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, env = "KAPPE_HINT_CAPPED", global = true)]
    pub hint_capped: Option<bool>,
    /// How long a burn stops retargeting of matching campaigns [default: 30d].
    #[arg(long, env = "KAPPE_BURN_DURATION", global = true)]
    pub burn_duration: Option<String>,
    /// Decide and count as usual but never drop.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, env = "KAPPE_DRY_RUN", global = true)]
    pub dry_run: Option<bool>,
    /// Add X-Kappe-Decision to responses.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, env = "KAPPE_EXPLAIN_HEADER", global = true)]
    pub explain_header: Option<bool>,

    // ---- privacy ----
    /// kappe's own opt-out cookie [default: kappe_optout].
    #[arg(long, env = "KAPPE_OPTOUT_COOKIE", global = true)]
    pub optout_cookie: Option<String>,
    /// Signals honoured: all, or a list of cookie,gpc,dnt,gpp,usp,tcf [default: all].
    #[arg(long, env = "KAPPE_HONOR", global = true)]
    pub honor: Option<String>,
    /// Our IAB TCF vendor id: its consent is required too.
    #[arg(long, env = "KAPPE_TCF_VENDOR_ID", global = true)]
    pub tcf_vendor_id: Option<String>,
    /// opt-out: require TCF consent where gdpr=1; opt-in: on every request [default: opt-out].
    #[arg(long, env = "KAPPE_CONSENT_MODE", global = true)]
    pub consent_mode: Option<String>,
    /// Cookies removed from upstream requests of opted-out visitors (repeatable).
    #[arg(
        long,
        env = "KAPPE_STRIP_COOKIES",
        global = true,
        value_delimiter = ','
    )]
    pub strip_cookies: Vec<String>,
    /// Path prefix of the visitor's privacy pages [default: /_kappe].
    #[arg(long, env = "KAPPE_PRIVACY_PATH", global = true)]
    pub privacy_path: Option<String>,
}

impl Args {
    /// Fills every option this set left empty from `file` (flags and environment win).
    pub fn or_from(mut self, file: Args) -> Args {
        macro_rules! fill {
            ($($opt:ident),* ; $($list:ident),*) => {
                $( if self.$opt.is_none() { self.$opt = file.$opt; } )*
                $( if self.$list.is_empty() { self.$list = file.$list; } )*
            };
        }
        fill!(upstream, listen, admin_listen, threads, preserve_host, header_read_timeout, max_header_size, max_body_size, upstream_connect_timeout,
            upstream_timeout, max_connections, shutdown_grace, log_format, log, access_log,
            admin_token, tls_cert, tls_key, store, redis_prefix, store_timeout, store_failure,
            state_file, snapshot_interval, discard_corrupt_state, secret_file, max_visitors,
            max_campaigns, max_retention, max_retargeting_age, cap_scope, policy_header,
            campaign_header, retargeting_header, keep_upstream_headers, max_inspect_bytes,
            visitor_cookie, visitor_fallback, no_id, cookie_secure, on_drop, exclude_param,
            refetch_max, hint_capped, burn_duration, dry_run, explain_header, optout_cookie,
            honor, tcf_vendor_id, consent_mode, privacy_path;
            cap, campaign_cap, visitor_cap, retargeting_campaigns, campaign_from,
            advertiser_from, advertiser_cap, visitor_from, strip_cookies);
        self
    }
}
