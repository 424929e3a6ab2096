//! Wiring: builds the store, metrics and upstream client from a [`Config`], serves the visitor and
//! admin listeners until shutdown (visitors on one single-threaded runtime per worker thread),
//! drains, and writes the state file. Also owns reload: re-reading
//! the config file and swapping the policy without dropping a connection.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::proxy::Proxy;
use crate::proxy::upstream::Upstream;
use crate::server::{self, ServerOptions};
use crate::store::memory::{MemoryOptions, MemoryStore, SweepCursor};
use crate::store::pseudonym::{Pseudonymizer, load_or_create_secret};
use crate::store::redis::{RedisOptions, RedisStore, StoreUrl};
use crate::store::{Store, snapshot};

/// How often the memory store sweeps each visitor for records that have expired: one pass in
/// this period, as long as that takes no step above [`SWEEP_MAX_STEP`] (up to about four million
/// visitors); a larger store's pass takes longer.
const SWEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the sweeper takes a step.
const SWEEP_TICK: std::time::Duration = std::time::Duration::from_millis(10);
/// How often the sweeper looks again while the store holds no visitor: an idle kappe, or one
/// without caps, wakes once a second for it instead of a hundred times.
const SWEEP_IDLE_TICK: std::time::Duration = std::time::Duration::from_secs(1);
/// The fewest and the most index buckets one step walks. A step runs on worker 0 between
/// requests and holds one shard's write lock: at most 4096 buckets keeps it to tens of
/// microseconds (`cargo bench --bench store -- sweep`).
const SWEEP_MIN_STEP: usize = 256;
const SWEEP_MAX_STEP: usize = 4096;
/// How much larger the steps are while the store is near its bound and they evict: a pass then
/// takes a quarter of the time, so room is made ahead of new visitors arriving.
const SWEEP_EVICT_FACTOR: usize = 4;

/// The buckets a sweep step walks in a store of `buckets` index buckets: one pass per
/// [`SWEEP_PERIOD`], within the step's bounds.
fn sweep_step_size(buckets: usize) -> usize {
    let ticks = SWEEP_PERIOD.as_millis() / SWEEP_TICK.as_millis();
    buckets
        .div_ceil(usize::try_from(ticks).unwrap_or(1))
        .clamp(SWEEP_MIN_STEP, SWEEP_MAX_STEP)
}

/// Where the memory store's sweeper is in its pass, and the size of the pass's steps.
#[derive(Default)]
struct Sweeper {
    cursor: SweepCursor,
    step: usize,
}

impl Sweeper {
    /// Takes one step over `m` at `now` and says how long to wait before the next: a step every
    /// [`SWEEP_TICK`], or only a look every [`SWEEP_IDLE_TICK`] while a pass would start on an
    /// empty store.
    fn tick(&mut self, m: &MemoryStore, now: crate::clock::UnixSecs) -> std::time::Duration {
        // Each pass sizes its steps to the store as it then is.
        if self.cursor.at_start() {
            if m.is_empty() {
                return SWEEP_IDLE_TICK;
            }
            self.step = sweep_step_size(m.bucket_count());
        }
        // Near the store's bound, larger steps make room ahead of new visitors.
        let budget = if self.cursor.evicting() {
            self.step * SWEEP_EVICT_FACTOR
        } else {
            self.step
        };
        m.sweep_step(&mut self.cursor, budget, now);
        SWEEP_TICK
    }
}

/// State shared by the visitor port, the admin port and the background tasks.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub metrics: Metrics,
    pub proxy: Arc<Proxy>,
    pub policy: Arc<ArcSwap<Policy>>,
    pub store: Store,
    pub clock: Clock,
    pub started: std::time::Instant,
}

/// Why kappe could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Secret(#[from] crate::store::pseudonym::SecretError),
    #[error("{0}")]
    State(#[from] snapshot::SnapshotError),
    #[error("store: {0}")]
    Store(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
}

impl Shared {
    /// Builds everything a running kappe needs from its configuration, on the system clock.
    ///
    /// # Errors
    /// When a part (the secret, the state file, the store) cannot be set up.
    pub async fn new(cfg: Config) -> Result<Arc<Shared>, AppError> {
        Self::with_clock(cfg, Clock::System).await
    }

    /// As [`Shared::new`], with an injected clock (tests move time by hand).
    ///
    /// # Errors
    /// When a part (the secret, the state file, the store) cannot be set up.
    pub async fn with_clock(cfg: Config, clock: Clock) -> Result<Arc<Shared>, AppError> {
        let cfg = Arc::new(cfg);
        let metrics = Metrics::new();
        let st = &cfg.store;
        let key = load_or_create_secret(
            st.secret.as_deref(),
            st.secret_file.as_deref(),
            st.state_file.as_deref(),
        )?;
        let store = Self::open_store(&cfg, &clock).await?;
        let policy = Arc::new(ArcSwap::from_pointee(cfg.policy.clone()));
        let proxy = Arc::new(Proxy {
            cfg: cfg.clone(),
            upstream: Upstream::new(&cfg),
            metrics: metrics.clone(),
            policy: policy.clone(),
            store: store.clone(),
            pseudo: Pseudonymizer::new(key),
            clock: clock.clone(),
        });
        metrics.store_up.set(1);
        metrics.store_max_visitors.set(st.max_visitors as i64);
        Ok(Arc::new(Shared {
            cfg,
            metrics,
            proxy,
            policy,
            store,
            clock,
            started: std::time::Instant::now(),
        }))
    }

    async fn open_store(cfg: &Config, clock: &Clock) -> Result<Store, AppError> {
        let st = &cfg.store;
        let opts = MemoryOptions {
            max_visitors: st.max_visitors,
            max_campaigns: st.max_campaigns,
            max_retention_secs: st.max_retention_secs,
        };
        if let url @ (StoreUrl::Redis(_) | StoreUrl::Cluster(_)) =
            StoreUrl::parse(&st.url).map_err(AppError::Store)?
        {
            let opts = RedisOptions {
                prefix: st.redis_prefix.clone(),
                timeout: st.timeout,
                max_retention_secs: st.max_retention_secs,
                ..RedisOptions::default()
            };
            let redis = RedisStore::connect(&url, opts)
                .await
                .map_err(|e| AppError::Store(e.to_string()))?;
            return Ok(Store::Redis(redis));
        }
        let memory = match &st.state_file {
            None => MemoryStore::new(opts),
            Some(path) => {
                let (store, aside) =
                    snapshot::load_at_start(path, opts, st.discard_corrupt_state, clock.now())?;
                if let Some(aside) = aside {
                    tracing::warn!(moved_to = %aside.display(), "corrupt state file moved aside; starting empty");
                }
                tracing::info!(visitors = store.len(), path = %path.display(), "state loaded");
                store
            }
        };
        Ok(Store::Memory(Arc::new(memory)))
    }

    /// Writes the state file, if one is configured and the store is the memory store.
    pub fn write_state(&self) {
        let (Some(path), Store::Memory(m)) = (&self.cfg.store.state_file, &self.store) else {
            return;
        };
        match snapshot::write(m, path, self.clock.now()) {
            Ok(summary) => tracing::debug!(?summary, "state written"),
            Err(e) => tracing::error!(error = %e, "cannot write the state file"),
        }
    }

    /// The background work of a running kappe: sweeping expired records (every visitor once per
    /// [`SWEEP_PERIOD`], in short steps) and writing snapshots. Runs until `stop` turns true.
    async fn background(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let sweep = tokio::time::sleep(SWEEP_TICK);
        tokio::pin!(sweep);
        let mut sweeper = Sweeper::default();
        let mut snap = tokio::time::interval(self.cfg.store.snapshot_interval);
        snap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snap.tick().await;
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
                () = &mut sweep, if matches!(self.store, Store::Memory(_)) => {
                    if let Store::Memory(m) = &self.store {
                        let wait = sweeper.tick(m, self.clock.now());
                        sweep.as_mut().reset(tokio::time::Instant::now() + wait);
                    }
                }
                _ = snap.tick(), if self.cfg.store.state_file.is_some() => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || me.write_state()).await;
                }
            }
        }
    }

    /// Re-reads the config file and swaps in its policy. An invalid file keeps the old policy.
    ///
    /// # Errors
    /// Why the new file was refused.
    pub fn reload(&self) -> Result<String, ConfigError> {
        let result = self.try_reload();
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(_) => tracing::info!("configuration reloaded; new policy in force"),
            Err(e) => tracing::error!(error = %e, "reload refused; the old policy stays in force"),
        }
        result
    }

    fn try_reload(&self) -> Result<String, ConfigError> {
        let Some(path) = &self.cfg.config_file else {
            return Ok("no --config file; nothing to reload\n".to_owned());
        };
        let file = crate::config::read_file(path)?;
        let args = self.cfg.given.clone();
        let policy = Config::policy(&args.or_from(file))?;
        let summary = policy.describe();
        self.policy.store(Arc::new(policy));
        Ok(summary)
    }

    /// Checks that the store answers.
    ///
    /// # Errors
    /// The store's error.
    pub async fn store_ping(&self) -> Result<(), String> {
        let result = tokio::time::timeout(
            self.cfg
                .store
                .timeout
                .max(std::time::Duration::from_millis(500)),
            self.store.ping(),
        )
        .await
        .unwrap_or(Err(crate::store::StoreError::Timeout));
        self.metrics.store_up.set(i64::from(result.is_ok()));
        result.map_err(|e| e.to_string())
    }

    /// Copies the store's numbers into gauges before a scrape.
    pub fn refresh_gauges(&self) {
        if let Store::Memory(m) = &self.store {
            let s = m.stats();
            let m = &self.metrics;
            m.store_visitors.set(s.visitors as i64);
            m.store_bytes.set(s.estimated_bytes as i64);
            let set = |reason: &str, total: u64| {
                let c = m.store_evictions.with_label_values(&[reason]);
                c.inc_by(total.saturating_sub(c.get()));
            };
            set("expired", s.evictions_expired);
            set("capacity", s.evictions_capacity);
        }
    }
}

/// Builds the TLS acceptor from PEM files (HTTP/2 and HTTP/1.1 offered by ALPN).
///
/// # Errors
/// When the files cannot be read or hold no usable certificate or key.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, AppError> {
    use rustls_pemfile::Item;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| AppError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(cert)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AppError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(AppError::Tls(format!(
            "{}: no certificate found",
            cert.display()
        )));
    }
    let key_pem = read(key)?;
    let key_der = rustls_pemfile::read_all(&mut key_pem.as_slice())
        .filter_map(Result::ok)
        .find_map(|item| match item {
            Item::Pkcs8Key(k) => Some(k.into()),
            Item::Pkcs1Key(k) => Some(k.into()),
            Item::Sec1Key(k) => Some(k.into()),
            _ => None,
        })
        .ok_or_else(|| AppError::Tls(format!("{}: no private key found", key.display())))?;
    let mut config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| AppError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Binds both listeners of a configuration.
///
/// # Errors
/// [`AppError::Bind`] naming the address.
pub async fn bind(cfg: &Config) -> Result<(TcpListener, TcpListener), AppError> {
    let visitors = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| AppError::Bind {
            what: "--listen",
            addr: cfg.listen,
            source,
        })?;
    let admin = TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|source| AppError::Bind {
            what: "--admin-listen",
            addr: cfg.admin_listen,
            source,
        })?;
    Ok((visitors, admin))
}

/// What a worker thread needs besides its listener and its proxy.
struct Worker {
    tls: Option<tokio_rustls::TlsAcceptor>,
    opts: ServerOptions,
    metrics: Metrics,
    limit: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// Starts worker thread `i`: a single-threaded runtime serving the visitor connections handed
/// to it until the stop signal, then draining. The receiver completes when the thread has
/// finished.
fn spawn_worker(
    i: usize,
    handed: mpsc::UnboundedReceiver<server::Handoff>,
    proxy: Arc<Proxy>,
    w: Worker,
) -> Result<oneshot::Receiver<()>, AppError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::Workers)?;
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("kappe-worker-{i}"))
        .spawn(move || {
            rt.block_on(async move {
                let mut stop = w.stop;
                server::serve_limited(
                    server::Accept::Handed(handed),
                    w.tls,
                    w.opts,
                    Some(w.metrics),
                    move |req, info| proxy.clone().handle(req, info),
                    w.limit,
                    async move {
                        let _ = stop.wait_for(|v| *v).await;
                    },
                )
                .await;
            });
            let _ = done_tx.send(());
        })
        .map_err(AppError::Workers)?;
    Ok(done_rx)
}

/// Serves both ports until `shutdown` completes, then drains in-flight requests (up to the
/// shutdown grace) and writes the state.
///
/// # Errors
/// When TLS cannot be set up.
pub async fn run(
    shared: Arc<Shared>,
    visitors: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let cfg = shared.cfg.clone();
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let opts = ServerOptions {
        header_read_timeout: cfg.header_read_timeout,
        max_header_size: cfg.max_header_size,
        max_connections: cfg.max_connections,
        shutdown_grace: cfg.shutdown_grace,
        request_fields: Some(Arc::new(crate::proxy::request_fields(&cfg.enforcement))),
    };
    let admin_opts = ServerOptions {
        max_connections: 256,
        request_fields: None,
        ..opts.clone()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    // One single-threaded runtime per worker thread, each with its own upstream pool: a request
    // is served start to end on one thread, with no work stealing and no cross-thread wake-ups.
    // This runtime is worker 0: it accepts every connection and hands them out in turn (to
    // itself too), and it also runs the admin port, the background work and the Redis
    // connections.
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    let mut workers = Vec::new();
    let mut peers = Vec::new();
    if cfg.threads > 1 {
        for i in 1..cfg.threads {
            let (to_worker, handed) = server::handoff();
            peers.push(to_worker);
            workers.push(spawn_worker(
                i,
                handed,
                Arc::new(shared.proxy.with_own_client()),
                Worker {
                    tls: tls.clone(),
                    opts: opts.clone(),
                    metrics: shared.metrics.clone(),
                    limit: limit.clone(),
                    stop: stop_rx.clone(),
                },
            )?);
        }
    }
    let proxy = shared.proxy.clone();
    let visitor_server = server::serve_limited(
        server::Accept::Listener(visitors, peers),
        tls,
        opts,
        Some(shared.metrics.clone()),
        move |req, info| proxy.clone().handle(req, info),
        limit,
        stopped(stop_rx.clone()),
    );
    let admin_shared = shared.clone();
    let admin_server = server::serve(
        admin,
        None,
        admin_opts,
        None,
        move |req, info| crate::admin::handle(admin_shared.clone(), req, info),
        stopped(stop_rx.clone()),
    );
    let visitor_task = tokio::spawn(visitor_server);
    let admin_task = tokio::spawn(admin_server);
    let background = tokio::spawn(shared.clone().background(stop_rx.clone()));
    shutdown.await;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = visitor_task.await;
    for done in workers {
        let _ = done.await;
    }
    let _ = admin_task.await;
    let _ = background.await;
    let me = shared.clone();
    let _ = tokio::task::spawn_blocking(move || me.write_state()).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass takes one sweep period while its steps stay within bounds; beyond, the steps stay
    /// at the most and the pass takes longer.
    #[test]
    fn sweep_steps_spread_a_pass_over_the_period() {
        assert_eq!(sweep_step_size(0), SWEEP_MIN_STEP);
        assert_eq!(sweep_step_size(2_097_152), 2_098);
        assert_eq!(sweep_step_size(4_096_000), SWEEP_MAX_STEP);
        assert_eq!(sweep_step_size(33_554_432), SWEEP_MAX_STEP);
    }

    /// An empty store is only looked at once a second; a visitor brings back a step every tick
    /// until a pass has removed what expired, and then the empty store is idle again.
    #[test]
    fn the_sweeper_rests_while_the_store_is_empty() {
        use crate::store::AdmitRequest;
        use crate::store::VisitorKey;

        let m = MemoryStore::new(MemoryOptions {
            max_visitors: 10_000,
            max_campaigns: 100,
            max_retention_secs: 30 * 86_400,
        });
        let t0 = 1_700_000_000;
        let mut sweeper = Sweeper::default();
        assert_eq!(sweeper.tick(&m, t0), SWEEP_IDLE_TICK);
        assert!(sweeper.cursor.at_start());

        let caps = [crate::policy::Cap {
            limit: 3,
            window_secs: 60,
        }];
        m.admit(VisitorKey(7), &AdmitRequest::campaign("c", &caps), t0)
            .unwrap();
        // Two days on the visitor's record has expired; the pass that starts now removes it.
        let later = t0 + 2 * 86_400;
        let mut steps = 0;
        loop {
            assert_eq!(sweeper.tick(&m, later), SWEEP_TICK);
            steps += 1;
            if sweeper.cursor.at_start() {
                break;
            }
        }
        assert!(
            steps > 1,
            "a pass over a store of {} buckets took one step",
            m.bucket_count()
        );
        assert!(m.is_empty());
        assert_eq!(sweeper.tick(&m, later), SWEEP_IDLE_TICK);
    }
}
