//! Wiring: builds the store, metrics and upstream client from a [`Config`], serves the visitor and
//! admin listeners until shutdown, drains, and writes the state file. Also owns reload: re-reading
//! the config file and swapping the policy without dropping a connection.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::proxy::{Proxy, upstream_client};
use crate::server::{self, ServerOptions};

/// State shared by the visitor port, the admin port and the background tasks.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub metrics: Metrics,
    pub proxy: Arc<Proxy>,
    pub policy: Arc<ArcSwap<Policy>>,
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
}

impl Shared {
    /// Builds everything a running kappe needs from its configuration.
    ///
    /// # Errors
    /// When a part (TLS files, the store) cannot be set up.
    pub async fn new(cfg: Config) -> Result<Arc<Shared>, AppError> {
        let cfg = Arc::new(cfg);
        let metrics = Metrics::new();
        let policy = Arc::new(ArcSwap::from_pointee(cfg.policy.clone()));
        let proxy = Arc::new(Proxy {
            cfg: cfg.clone(),
            client: upstream_client(&cfg),
            metrics: metrics.clone(),
        });
        metrics.store_up.set(1);
        Ok(Arc::new(Shared {
            cfg,
            metrics,
            proxy,
            policy,
            started: std::time::Instant::now(),
        }))
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
        let mut args = crate::cli::Args::default();
        // The command line and environment still win over the file, as at start-up.
        if let Ok(cli) = <crate::cli::Cli as clap::Parser>::try_parse() {
            args = cli.args;
        }
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
        Ok(())
    }

    /// Copies the store's numbers into gauges before a scrape.
    pub fn refresh_gauges(&self) {}
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
    };
    let admin_opts = ServerOptions {
        max_connections: 256,
        ..opts.clone()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let proxy = shared.proxy.clone();
    let visitor_server = server::serve(
        visitors,
        tls,
        opts,
        Some(shared.metrics.clone()),
        move |req, info| proxy.clone().handle(req, info),
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
    shutdown.await;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = visitor_task.await;
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}
