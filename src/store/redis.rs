//! The Redis backend: the same exact sliding-window rule as the memory store, shared by any number
//! of kappe instances through Redis or Valkey, standalone or as Redis Cluster.
//!
//! Each pseudonymous visitor is one Redis hash, `<prefix>v:<visitor hex>`, holding per campaign and
//! advertiser the first-seen time and the newest admitted timestamps, the visitor-wide timestamps
//! and the burns (the field layout is documented in `redis/admit.lua`). One Lua script per
//! operation reads the server's clock, checks every rule and records atomically, so instances with
//! skewed clocks agree and the store is Cluster-safe (one key per script). Each key's TTL is the
//! longest retention it needs, never more than `max_retention_secs`, so Redis forgets by itself.
//! Retention wins over any longer need: a burn or max age beyond it is forgotten with the key.
//!
//! This module owns: parsing `--store` ([`StoreUrl`]), connections (a multiplexed
//! [`ConnectionManager`] with reconnection and backoff, or a Cluster connection that follows
//! `MOVED`/`ASK`), the per-operation timeout, the scripts (`EVALSHA`, reloaded on `NOSCRIPT` by
//! [`Script`]), and the local cache of denials that cannot change before their `retry_at`.
//! Applying `--store-failure closed|open` is left to the proxy: this module only returns
//! [`StoreError`] quickly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, IntoConnectionInfo, RedisError, Script};

use super::{
    Admission, AdmitRequest, BurnRecord, CampaignRecord, Denial, DenyReason, StoreError,
    VisitorKey, VisitorReport,
};
use crate::clock::UnixSecs;
use crate::policy::Cap;

/// Where the impression store lives, as given to `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded in-memory store (the default).
    Memory,
    /// One Redis (or Valkey) server: `redis://host:port[/db]` or `rediss://…` for TLS.
    Redis(String),
    /// A Redis Cluster, given by some of its nodes: `redis+cluster://h1:p1,h2:p2`
    /// (`rediss+cluster://` for TLS). Each entry is a `redis://` (or `rediss://`) URL.
    Cluster(Vec<String>),
}

impl StoreUrl {
    /// Parses `memory`, `redis://…`, `rediss://…`, `redis+cluster://…` or `rediss+cluster://…`.
    ///
    /// # Errors
    /// A message naming the value when it is none of those or its URL does not parse.
    pub fn parse(s: &str) -> Result<StoreUrl, String> {
        let s = s.trim();
        let bad = |why: &str| format!("invalid store `{s}`: {why}");
        if s == "memory" {
            return Ok(StoreUrl::Memory);
        }
        let cluster = [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ];
        for (prefix, scheme) in cluster {
            if let Some(rest) = s.strip_prefix(prefix) {
                let nodes: Vec<String> = rest
                    .split(',')
                    .map(|n| format!("{scheme}{}", n.trim()))
                    .collect();
                if rest.trim().is_empty() || nodes.iter().any(|n| n.len() == scheme.len()) {
                    return Err(bad("expected host:port[,host:port…]"));
                }
                for n in &nodes {
                    n.as_str()
                        .into_connection_info()
                        .map_err(|e| bad(&e.to_string()))?;
                }
                return Ok(StoreUrl::Cluster(nodes));
            }
        }
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            s.into_connection_info().map_err(|e| bad(&e.to_string()))?;
            return Ok(StoreUrl::Redis(s.to_owned()));
        }
        Err(bad(
            "expected memory, redis://host:port[/db], rediss://… or redis+cluster://host:port,…",
        ))
    }
}

/// How the Redis store behaves.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Prefix of every key (`--redis-prefix`, default `kappe:`).
    pub prefix: String,
    /// Upper bound on any one operation, including waiting for a connection (`--store-timeout`).
    pub timeout: Duration,
    /// No key lives longer than this after its last write (default 30 days).
    pub max_retention_secs: u32,
    /// How many "denied until T" answers to keep locally (0 disables the cache).
    pub cache_capacity: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "kappe:".to_owned(),
            timeout: Duration::from_millis(50),
            max_retention_secs: 30 * 86_400,
            cache_capacity: 100_000,
        }
    }
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Admits answered from the local denial cache, without a round trip.
    pub cache_hits: u64,
    /// Denials currently cached.
    pub cache_entries: usize,
    /// Admits that went to Redis.
    pub admits_sent: u64,
    /// Operations that failed (unavailable, timeout, other).
    pub errors: u64,
}

const ADMIT_LUA: &str = include_str!("redis/admit.lua");
const BURN_LUA: &str = include_str!("redis/burn.lua");
const REPORT_LUA: &str = include_str!("redis/report.lua");

/// The longest pause between two attempts to reach a Cluster that was down at start.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long one TCP connection attempt may take (independent of the per-operation timeout, so a
/// slow handshake still completes in the background while requests fail fast).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The Redis-backed impression store. Cheap to clone: clones share connections and the cache.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.opts.prefix)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Inner {
    opts: RedisOptions,
    backend: Backend,
    admit: Script,
    burn: Script,
    report: Script,
    cache: DenialCache,
    /// Seconds added to the server's clock by every script; 0 except in tests.
    offset_secs: AtomicI64,
    admits_sent: AtomicU64,
    errors: AtomicU64,
}

enum Backend {
    /// The manager reconnects by itself, with exponential backoff, after a dropped connection.
    Single(ConnectionManager),
    // Boxed: the Cluster client is large and the variant is chosen once.
    Cluster(Box<ClusterSlot>),
}

/// A Cluster connection that may not exist yet: building one needs a reachable node, and kappe
/// must start (and report not ready) while the Cluster is down. Once built, the connection
/// refreshes its slot map and reconnects to nodes by itself.
struct ClusterSlot {
    client: ClusterClient,
    // A std RwLock: it is only held to clone or store the handle, never across an await.
    conn: RwLock<Option<ClusterConnection>>,
    connecting: AtomicBool,
}

/// One connection handle of either kind, so each operation is written once.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a ::redis::Cmd,
    ) -> ::redis::RedisFuture<'a, ::redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> ::redis::RedisFuture<'a, Vec<::redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn map_err(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.is_cluster_error()
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Other(e.to_string())
    }
}

impl RedisStore {
    /// Connects to `url` (which must not be [`StoreUrl::Memory`]).
    ///
    /// Connecting is lazy where it has to be: when Redis is down at start this still returns a
    /// store, whose operations fail with [`StoreError::Unavailable`] or [`StoreError::Timeout`]
    /// until Redis answers, and which then recovers by itself. `connect` waits at most about a
    /// second for the first connection so a healthy store is warm when it returns.
    ///
    /// # Errors
    /// [`StoreError::Other`] when the URL is `memory` or not a valid Redis URL.
    pub async fn connect(url: &StoreUrl, opts: RedisOptions) -> Result<Self, StoreError> {
        let backend = match url {
            StoreUrl::Memory => {
                return Err(StoreError::Other(
                    "the Redis store needs a redis:// URL, not memory".to_owned(),
                ));
            }
            StoreUrl::Redis(u) => {
                let client =
                    Client::open(u.as_str()).map_err(|e| StoreError::Other(e.to_string()))?;
                // No response timeout inside the manager: each operation is bounded by
                // `opts.timeout` from outside, and a response timeout inside would make the
                // manager drop and rebuild a healthy connection under a burst of load.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(MAX_BACKOFF)
                    .set_number_of_retries(8);
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                Backend::Single(manager)
            }
            StoreUrl::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(opts.timeout.max(Duration::from_millis(10)))
                    .build()
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                Backend::Cluster(Box::new(ClusterSlot {
                    client,
                    conn: RwLock::new(None),
                    connecting: AtomicBool::new(false),
                }))
            }
        };
        let store = RedisStore {
            inner: Arc::new(Inner {
                cache: DenialCache::new(opts.cache_capacity),
                opts,
                backend,
                admit: Script::new(ADMIT_LUA),
                burn: Script::new(BURN_LUA),
                report: Script::new(REPORT_LUA),
                offset_secs: AtomicI64::new(0),
                admits_sent: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        };
        store.warm_up().await;
        Ok(store)
    }

    /// Makes the first connection (and loads the scripts) within about a second; failure is
    /// logged, not returned, because the store recovers by itself.
    async fn warm_up(&self) {
        let attempt = async {
            if let Backend::Cluster(slot) = &self.inner.backend {
                let conn = slot.client.get_async_connection().await.map_err(map_err)?;
                *slot.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(conn);
            }
            let mut conn = self.conn()?;
            for script in [&self.inner.admit, &self.inner.burn, &self.inner.report] {
                script.load_async(&mut conn).await.map_err(map_err)?;
            }
            Ok::<(), StoreError>(())
        };
        let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(StoreError::Timeout));
        if let Err(e) = result {
            tracing::warn!(error = %e, "redis store not reachable at start; will keep trying");
            if let Backend::Cluster(slot) = &self.inner.backend {
                slot.spawn_connector(Arc::downgrade(&self.inner));
            }
        }
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        match &self.inner.backend {
            Backend::Single(m) => Ok(Conn::Single(m.clone())),
            Backend::Cluster(slot) => {
                let guard = slot.conn.read().unwrap_or_else(|p| p.into_inner());
                match &*guard {
                    Some(c) => Ok(Conn::Cluster(c.clone())),
                    None => {
                        drop(guard);
                        slot.spawn_connector(Arc::downgrade(&self.inner));
                        Err(StoreError::Unavailable(
                            "no connection to the Redis Cluster yet".to_owned(),
                        ))
                    }
                }
            }
        }
    }

    fn key(&self, v: VisitorKey) -> String {
        format!("{}v:{}", self.inner.opts.prefix, v.to_hex())
    }

    fn offset(&self) -> i64 {
        self.inner.offset_secs.load(Ordering::Relaxed)
    }

    /// Runs one operation under the store timeout and counts its failure.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.inner.opts.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_err(e)),
            Err(_) => Err(StoreError::Timeout),
        };
        if result.is_err() {
            self.inner.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Decides one impression at the Redis server's time and records it when admitted.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Timeout`] (within the store timeout) while
    /// Redis is unreachable or slow; [`StoreError::Other`] for an unexpected reply.
    pub async fn admit(
        &self,
        v: VisitorKey,
        req: &AdmitRequest<'_>,
    ) -> Result<Admission, StoreError> {
        let fingerprint = fingerprint(req);
        if let Some(denial) = self.inner.cache.get(v, fingerprint, req) {
            return Ok(Admission::Denied(denial));
        }
        let mut conn = self.conn().inspect_err(|_| {
            self.inner.errors.fetch_add(1, Ordering::Relaxed);
        })?;
        let mut inv = self.inner.admit.key(self.key(v));
        inv.arg(self.offset())
            .arg(req.campaign)
            .arg(u8::from(req.advertiser.is_some()))
            .arg(req.advertiser.unwrap_or(""))
            .arg(req.max_age_secs.unwrap_or(0))
            .arg(self.inner.opts.max_retention_secs);
        for caps in [req.campaign_caps, req.advertiser_caps, req.visitor_caps] {
            inv.arg(caps.len());
            for cap in caps {
                inv.arg(cap.limit).arg(cap.window_secs);
            }
        }
        self.inner.admits_sent.fetch_add(1, Ordering::Relaxed);
        let generation = self.inner.cache.generation();
        let asked_at = Instant::now();
        let reply: Vec<i64> = self.bounded(inv.invoke_async(&mut conn)).await?;
        let (admitted, now, ttl) = match reply.as_slice() {
            [a, now, ttl, ..] => (*a == 1, *now, *ttl),
            _ => {
                return Err(StoreError::Other(format!(
                    "unexpected admit reply {reply:?}"
                )));
            }
        };
        if admitted {
            return Ok(Admission::Admitted);
        }
        let [reason, retry_at, limit, window] = reply[3..] else {
            return Err(StoreError::Other(format!(
                "unexpected admit reply {reply:?}"
            )));
        };
        let reason = match reason {
            1 => DenyReason::Burned,
            2 => DenyReason::MaxAge,
            3 => DenyReason::Cap,
            4 => DenyReason::AdvertiserCap,
            5 => DenyReason::VisitorCap,
            r => return Err(StoreError::Other(format!("unknown deny reason {r}"))),
        };
        let rule = (limit > 0).then_some(Cap {
            limit: limit as u32,
            window_secs: window as u32,
        });
        let retry_at = (retry_at >= 0).then_some(retry_at as UnixSecs);
        let denial = Denial {
            reason,
            rule,
            retry_at,
        };
        // The denial holds until retry_at (or, with none, until Redis forgets the key), on the
        // server's clock. The script ran at a real time in [now, now + 1) and after `asked_at`,
        // so `asked_at + (until - now - 1)` is a local deadline that never outlives the denial,
        // whatever the skew between this host's clock and the server's.
        let forgotten = now + if ttl > 0 { ttl } else { 0 };
        let until = retry_at.map_or(forgotten, |r| (r as i64).min(forgotten));
        let holds_for = until - now - 1;
        if holds_for > 0 {
            let deadline = asked_at + Duration::from_secs(holds_for as u64);
            self.inner
                .cache
                .insert(v, fingerprint, req, denial, deadline, generation);
        }
        Ok(Admission::Denied(denial))
    }

    /// Everything stored about a visitor. `forget_at` is when Redis will drop the key.
    ///
    /// # Errors
    /// As for [`RedisStore::admit`].
    pub async fn report(&self, v: VisitorKey) -> Result<VisitorReport, StoreError> {
        let mut conn = self.conn()?;
        let mut inv = self.inner.report.key(self.key(v));
        inv.arg(self.offset());
        let (now, ttl, fields): (i64, i64, Vec<String>) =
            self.bounded(inv.invoke_async(&mut conn)).await?;
        let forget_at = match ttl {
            t if t >= 0 => now + t,
            _ => now + i64::from(self.inner.opts.max_retention_secs),
        } as UnixSecs;
        let mut report = VisitorReport::default();
        for pair in fields.chunks_exact(2) {
            let (field, value) = (&pair[0], &pair[1]);
            if let Some(name) = field.strip_prefix("c:") {
                report.campaigns.push(parse_record(name, value, forget_at)?);
            } else if let Some(name) = field.strip_prefix("a:") {
                report
                    .advertisers
                    .push(parse_record(name, value, forget_at)?);
            } else if field == "v" {
                report.visitor_impressions = parse_list(value)?;
            } else if field == "b" {
                let burns: Vec<(String, u64)> = serde_json::from_str(value)
                    .or_else(|_| {
                        // An empty Lua table encodes as an object.
                        (value == "{}").then(Vec::new).ok_or(())
                    })
                    .map_err(|()| StoreError::Other(format!("bad burns field {value:?}")))?;
                report.burns = burns
                    .into_iter()
                    .filter(|(_, until)| *until > now as u64)
                    .map(|(pattern, until)| BurnRecord { pattern, until })
                    .collect();
            }
        }
        report.campaigns.sort_by(|a, b| a.campaign.cmp(&b.campaign));
        report
            .advertisers
            .sort_by(|a, b| a.campaign.cmp(&b.campaign));
        Ok(report)
    }

    /// Forgets everything about a visitor (also what an opt-out does). True when something was
    /// stored.
    ///
    /// # Errors
    /// As for [`RedisStore::admit`].
    pub async fn erase(&self, v: VisitorKey) -> Result<bool, StoreError> {
        // Invalidate before and after: a denial cached while the DEL is in flight must not
        // survive it.
        self.inner.cache.invalidate(v);
        let mut conn = self.conn()?;
        let key = self.key(v);
        let removed: i64 = self
            .bounded(::redis::cmd("DEL").arg(&key).query_async(&mut conn))
            .await?;
        self.inner.cache.invalidate(v);
        Ok(removed > 0)
    }

    /// Stops campaigns matching `pattern` (a glob) for this visitor for `duration_secs`.
    ///
    /// # Errors
    /// As for [`RedisStore::admit`].
    pub async fn burn(
        &self,
        v: VisitorKey,
        pattern: &str,
        duration_secs: u32,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut inv = self.inner.burn.key(self.key(v));
        inv.arg(self.offset())
            .arg(pattern)
            .arg(duration_secs)
            .arg(self.inner.opts.max_retention_secs);
        let _: (i64, i64) = self.bounded(inv.invoke_async(&mut conn)).await?;
        // A burn only adds denials, so cached denials stay true; invalidating anyway keeps the
        // rule simple: any visitor-facing change drops the visitor's cache.
        self.inner.cache.invalidate(v);
        Ok(())
    }

    /// Checks that Redis answers, for `/readyz`.
    ///
    /// # Errors
    /// As for [`RedisStore::admit`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let _: String = self
            .bounded(::redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }

    /// Counters for metrics.
    pub fn stats(&self) -> RedisStats {
        RedisStats {
            cache_hits: self.inner.cache.hits.load(Ordering::Relaxed),
            cache_entries: self.inner.cache.len(),
            admits_sent: self.inner.admits_sent.load(Ordering::Relaxed),
            errors: self.inner.errors.load(Ordering::Relaxed),
        }
    }

    /// Shifts the time every script sees by `secs` (and clears the denial cache, whose deadlines
    /// assumed the old time). For tests that must see a window slide without waiting; keep it 0
    /// in production.
    #[doc(hidden)]
    pub fn set_time_offset(&self, secs: i64) {
        self.inner.offset_secs.store(secs, Ordering::Relaxed);
        self.inner.cache.clear();
    }
}

impl ClusterSlot {
    /// Starts one background task (at most one at a time) that builds the Cluster connection,
    /// retrying with exponential backoff; it ends when connected or when the store is dropped.
    fn spawn_connector(&self, inner: Weak<Inner>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                let Backend::Cluster(slot) = &strong.backend else {
                    return;
                };
                match slot.client.get_async_connection().await {
                    Ok(conn) => {
                        *slot.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(conn);
                        slot.connecting.store(false, Ordering::Release);
                        tracing::info!("connected to the Redis Cluster");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "Redis Cluster still unreachable");
                    }
                }
                drop(strong);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        });
    }
}

fn parse_list(s: &str) -> Result<Vec<UnixSecs>, StoreError> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|_| StoreError::Other(format!("bad timestamp list {s:?}")))
        })
        .collect()
}

fn parse_record(
    name: &str,
    value: &str,
    forget_at: UnixSecs,
) -> Result<CampaignRecord, StoreError> {
    let mut list = parse_list(value)?;
    if list.is_empty() {
        return Err(StoreError::Other(format!("empty record for {name:?}")));
    }
    let first_seen = list.remove(0);
    Ok(CampaignRecord {
        campaign: name.to_owned(),
        impressions: list,
        first_seen,
        forget_at,
    })
}

/// A hash of everything an admit depends on besides the stored record, so a cached denial is
/// only reused for the same question (a policy change asks a different one).
fn fingerprint(req: &AdmitRequest<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.campaign.hash(&mut h);
    req.campaign_caps.hash(&mut h);
    req.advertiser.hash(&mut h);
    req.advertiser_caps.hash(&mut h);
    req.visitor_caps.hash(&mut h);
    req.max_age_secs.hash(&mut h);
    h.finish()
}

/// Local cache of denials that cannot change before a deadline: a cap denial holds until its
/// `retry_at`, a burn until its end, a max-age denial until the key expires. Entries are checked
/// against the full request on a hit, so a fingerprint collision never answers the wrong
/// question. Bounded: when full, expired entries are purged and, if still full, nothing new is
/// cached.
///
/// Erasing or burning on this instance invalidates the visitor's entries. An erase on another
/// instance does not reach this cache, so the visitor may be denied here until the cached
/// deadline: the error is on the side of showing fewer ads, never more.
struct DenialCache {
    capacity: usize,
    // A std Mutex: lookups and inserts are a few map operations, never across an await, and a
    // contended std lock is cheaper than a tokio one for such short sections.
    map: Mutex<CacheMap>,
    hits: AtomicU64,
    /// Bumped (under the lock) by every invalidation, so a denial read from Redis before an
    /// erase on this instance is not cached after it.
    generation: AtomicU64,
}

#[derive(Default)]
struct CacheMap {
    by_visitor: HashMap<VisitorKey, Vec<CachedDenial>>,
    len: usize,
}

struct CachedDenial {
    fingerprint: u64,
    request: OwnedRequest,
    denial: Denial,
    deadline: Instant,
}

#[derive(PartialEq, Eq)]
struct OwnedRequest {
    campaign: Box<str>,
    campaign_caps: Box<[Cap]>,
    advertiser: Option<Box<str>>,
    advertiser_caps: Box<[Cap]>,
    visitor_caps: Box<[Cap]>,
    max_age_secs: Option<u32>,
}

impl OwnedRequest {
    fn new(req: &AdmitRequest<'_>) -> Self {
        OwnedRequest {
            campaign: req.campaign.into(),
            campaign_caps: req.campaign_caps.into(),
            advertiser: req.advertiser.map(Into::into),
            advertiser_caps: req.advertiser_caps.into(),
            visitor_caps: req.visitor_caps.into(),
            max_age_secs: req.max_age_secs,
        }
    }

    fn same(&self, req: &AdmitRequest<'_>) -> bool {
        *self.campaign == *req.campaign
            && *self.campaign_caps == *req.campaign_caps
            && self.advertiser.as_deref() == req.advertiser
            && *self.advertiser_caps == *req.advertiser_caps
            && *self.visitor_caps == *req.visitor_caps
            && self.max_age_secs == req.max_age_secs
    }
}

impl DenialCache {
    fn new(capacity: usize) -> Self {
        DenialCache {
            capacity,
            map: Mutex::new(CacheMap::default()),
            hits: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheMap> {
        // A panic while holding the lock cannot leave the map inconsistent beyond a wrong
        // `len`, which only affects when purging starts.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, v: VisitorKey, fingerprint: u64, req: &AdmitRequest<'_>) -> Option<Denial> {
        if self.capacity == 0 {
            return None;
        }
        let now = Instant::now();
        let map = self.lock();
        let found =
            map.by_visitor.get(&v)?.iter().find(|e| {
                e.fingerprint == fingerprint && e.deadline > now && e.request.same(req)
            })?;
        let denial = found.denial;
        drop(map);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(denial)
    }

    fn insert(
        &self,
        v: VisitorKey,
        fingerprint: u64,
        req: &AdmitRequest<'_>,
        denial: Denial,
        deadline: Instant,
        seen_generation: u64,
    ) {
        if self.capacity == 0 {
            return;
        }
        let entry = CachedDenial {
            fingerprint,
            request: OwnedRequest::new(req),
            denial,
            deadline,
        };
        let now = Instant::now();
        let mut map = self.lock();
        if self.generation.load(Ordering::Acquire) != seen_generation {
            return;
        }
        if map.len >= self.capacity {
            map.purge(now);
            if map.len >= self.capacity {
                return;
            }
        }
        let entries = map.by_visitor.entry(v).or_default();
        let before = entries.len();
        entries
            .retain(|e| e.deadline > now && !(e.fingerprint == fingerprint && e.request.same(req)));
        entries.push(entry);
        let after = entries.len();
        map.len = map.len + after - before;
    }

    fn invalidate(&self, v: VisitorKey) {
        let mut map = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = map.by_visitor.remove(&v) {
            map.len -= entries.len();
        }
    }

    fn clear(&self) {
        let mut map = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        *map = CacheMap::default();
    }

    fn len(&self) -> usize {
        self.lock().len
    }
}

impl CacheMap {
    fn purge(&mut self, now: Instant) {
        let mut len = 0;
        self.by_visitor.retain(|_, entries| {
            entries.retain(|e| e.deadline > now);
            len += entries.len();
            !entries.is_empty()
        });
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The accepted `--store` forms parse, and anything else is refused naming the value.
    #[test]
    fn store_urls_parse_and_bad_ones_name_the_value() {
        assert_eq!(StoreUrl::parse("memory"), Ok(StoreUrl::Memory));
        assert_eq!(
            StoreUrl::parse("redis://127.0.0.1:6379/2"),
            Ok(StoreUrl::Redis("redis://127.0.0.1:6379/2".to_owned()))
        );
        assert!(matches!(
            StoreUrl::parse("rediss://cache.internal:6380"),
            Ok(StoreUrl::Redis(_))
        ));
        assert_eq!(
            StoreUrl::parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7001"),
            Ok(StoreUrl::Cluster(vec![
                "redis://10.0.0.1:7000".to_owned(),
                "redis://10.0.0.2:7001".to_owned()
            ]))
        );
        for bad in [
            "memcached://x:1",
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "",
            "mem",
        ] {
            let err = StoreUrl::parse(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    fn denial() -> Denial {
        Denial {
            reason: DenyReason::Cap,
            rule: None,
            retry_at: Some(10),
        }
    }

    /// A cached denial answers the same question until its deadline, never a question with
    /// other caps, and an erase drops it (even one racing the admit that read the denial).
    #[test]
    fn denial_cache_is_keyed_by_caps_expires_and_is_invalidated() {
        let cache = DenialCache::new(10);
        let v = VisitorKey(7);
        let caps = [Cap {
            limit: 1,
            window_secs: 60,
        }];
        let other = [Cap {
            limit: 2,
            window_secs: 60,
        }];
        let r = AdmitRequest::campaign("rt-shoes", &caps);
        let far = Instant::now() + Duration::from_secs(60);
        cache.insert(v, fingerprint(&r), &r, denial(), far, cache.generation());
        assert_eq!(cache.get(v, fingerprint(&r), &r), Some(denial()));
        let r2 = AdmitRequest::campaign("rt-shoes", &other);
        assert_eq!(cache.get(v, fingerprint(&r2), &r2), None);
        // Right fingerprint, wrong request: the full comparison refuses it.
        assert_eq!(cache.get(v, fingerprint(&r), &r2), None);
        cache.invalidate(v);
        assert_eq!(cache.get(v, fingerprint(&r), &r), None);
        cache.insert(
            v,
            fingerprint(&r),
            &r,
            denial(),
            Instant::now(),
            cache.generation(),
        );
        assert_eq!(cache.get(v, fingerprint(&r), &r), None, "expired");
        // A denial read before an invalidation is not cached after it.
        let before = cache.generation();
        cache.invalidate(VisitorKey(99));
        cache.insert(v, fingerprint(&r), &r, denial(), far, before);
        assert_eq!(cache.get(v, fingerprint(&r), &r), None, "stale generation");
        assert_eq!(cache.hits.load(Ordering::Relaxed), 1);
    }

    /// The cache never holds more than its capacity; expired entries make room.
    #[test]
    fn denial_cache_is_bounded() {
        let cache = DenialCache::new(3);
        let caps = [Cap {
            limit: 1,
            window_secs: 60,
        }];
        let r = AdmitRequest::campaign("rt-shoes", &caps);
        let far = Instant::now() + Duration::from_secs(60);
        for i in 0..10 {
            cache.insert(
                VisitorKey(i),
                fingerprint(&r),
                &r,
                denial(),
                far,
                cache.generation(),
            );
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(VisitorKey(9), fingerprint(&r), &r), None);
        cache.clear();
        for i in 0..3 {
            cache.insert(
                VisitorKey(i),
                fingerprint(&r),
                &r,
                denial(),
                Instant::now(),
                cache.generation(),
            );
        }
        cache.insert(
            VisitorKey(9),
            fingerprint(&r),
            &r,
            denial(),
            far,
            cache.generation(),
        );
        assert_eq!(cache.len(), 1);
        assert!(cache.get(VisitorKey(9), fingerprint(&r), &r).is_some());
    }
}
