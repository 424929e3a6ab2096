//! The `kappe` binary: parse arguments into a validated configuration, start telemetry, run the
//! chosen command, and map failures to exit codes (0 ok, 1 runtime failure, 2 bad configuration).

use std::process::ExitCode;

/// mimalloc instead of the system allocator: a proxy allocates and frees small buffers and header
/// maps on every request, from several threads.
#[global_allocator]
static GLOBAL: kappe::alloc::Allocator = mimalloc::MiMalloc;

use clap::Parser;
use kappe::app::{self, Shared};
use kappe::cli::{Cli, Command};
use kappe::config::{Config, LogFormat};

fn init_tracing(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A single-threaded runtime. The proxy runs one per worker thread (`--threads`): this one is
/// worker 0, and [`app::run`] starts the others.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The process signals kappe acts on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Called before the listeners are bound: until a handler exists, a
    /// SIGHUP (a reload sent as soon as the port answers) would kill the process by default.
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves when SIGTERM or SIGINT arrives; SIGHUP reloads the policy meanwhile.
    async fn until_shutdown(mut self, shared: std::sync::Arc<Shared>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => { tracing::info!("SIGTERM received"); return; }
                _ = self.int.recv() => { tracing::info!("SIGINT received"); return; }
                _ = self.hup.recv() => { let _ = shared.reload(); }
            }
        }
    }
}

fn fail(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("kappe: {msg}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    kappe::alloc::configure();
    let cli = Cli::parse();
    match cli.command.clone() {
        None => run_proxy(cli.args, None),
        Some(Command::Check) => match Config::from_args(cli.args) {
            Ok(cfg) => {
                print!("{}", cfg.describe());
                println!("\nconfiguration ok");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e, 2),
        },
        Some(Command::Demo {
            demo_upstream_listen,
        }) => run_demo(cli.args, &demo_upstream_listen),
        Some(Command::DemoUpstream { listen }) => run_demo_upstream(&listen),
        Some(Command::BenchStore {
            visitors,
            campaigns,
            bench_threads,
            seconds,
            bench_cap,
            pipeline,
            snapshot_dir,
        }) => {
            let mut caps = Vec::new();
            for c in &bench_cap {
                match kappe::policy::parse_cap_list(c) {
                    Ok(list) => caps.extend(list),
                    Err(e) => {
                        return fail(format!("invalid value '{c}' for '--bench-cap': {e}"), 2);
                    }
                }
            }
            let mut opts = kappe::store::bench::BenchOptions {
                visitors,
                campaigns,
                threads: bench_threads.max(1),
                seconds,
                pipeline,
                snapshot_dir,
                ..Default::default()
            };
            if !caps.is_empty() {
                opts.caps = caps;
            }
            print!("{}", kappe::store::bench::run(&opts));
            ExitCode::SUCCESS
        }
        Some(Command::Healthcheck { admin_url }) => healthcheck(&admin_url),
    }
}

fn run_proxy(args: kappe::cli::Args, banner: Option<String>) -> ExitCode {
    let cfg = match Config::from_args(args) {
        Ok(cfg) => cfg,
        Err(e) => return fail(e, 2),
    };
    init_tracing(&cfg.log_filter, cfg.log_format);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}"), 1),
    };
    let result = rt.block_on(async move {
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => return Err(app::AppError::Signals(e)),
        };
        let (visitors, admin) = app::bind(&cfg).await?;
        if !cfg.admin_listen.ip().is_loopback() && cfg.admin_token.is_none() {
            // Not refused: a private network may be the operator's choice. But say it loudly.
            tracing::warn!(
                admin = %cfg.admin_listen,
                "the admin port listens beyond loopback without --admin-token: /metrics, the \
                 status page and /reload are open to anyone who can reach it"
            );
        }
        let shared = Shared::new(cfg).await?;
        tracing::info!(
            listen = %visitors.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            admin = %admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            upstream = %shared.cfg.upstream,
            "kappe serving"
        );
        if let Some(b) = banner {
            println!("{b}");
        }
        app::run(
            shared.clone(),
            visitors,
            admin,
            signals.until_shutdown(shared),
        )
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e, 1),
    }
}

fn run_demo(args: kappe::cli::Args, upstream_listen: &str) -> ExitCode {
    let std_listener = match std::net::TcpListener::bind(upstream_listen) {
        Ok(l) => l,
        Err(e) => {
            return fail(
                format!("cannot bind the demo ad server on {upstream_listen}: {e}"),
                1,
            );
        }
    };
    let upstream_addr = match std_listener.local_addr() {
        Ok(a) => a,
        Err(e) => return fail(e, 1),
    };
    let _ = std_listener.set_nonblocking(true);
    // The sample ad server runs on its own thread with its own small runtime.
    std::thread::spawn(move || {
        let rt = runtime().expect("a current-thread runtime starts");
        rt.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(std_listener).expect("listener from std");
            serve_demo_upstream(listener).await;
        });
    });
    let args = args.or_from(kappe::demo::demo_defaults(&format!(
        "http://{upstream_addr}"
    )));
    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let admin = args
        .admin_listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    let banner = format!(
        "\nkappe demo is running.\n\
         \x20 publisher page through kappe:  http://{listen}/\n\
         \x20 your privacy page:             http://{listen}/_kappe/privacy\n\
         \x20 what kappe stores about you:   http://{listen}/_kappe/me\n\
         \x20 operator status page:          http://{admin}/\n\
         \x20 Prometheus metrics:            http://{admin}/metrics\n\
         \x20 sample ad server (direct):     http://{upstream_addr}/\n\
         Reload the publisher page a few times: each retargeting campaign is shown at most 3 times\n\
         an hour, and at most 5 retargeting ads an hour in all. Press Ctrl-C to stop.\n"
    );
    run_proxy(args, Some(banner))
}

async fn serve_demo_upstream(listener: tokio::net::TcpListener) {
    let opts = kappe::server::ServerOptions {
        header_read_timeout: std::time::Duration::from_secs(10),
        max_header_size: 32 * 1024,
        max_connections: 4096,
        shutdown_grace: std::time::Duration::from_secs(1),
        request_fields: None,
    };
    kappe::server::serve(
        listener,
        None,
        opts,
        None,
        kappe::demo::handle,
        std::future::pending(),
    )
    .await;
}

fn run_demo_upstream(listen: &str) -> ExitCode {
    init_tracing("info", LogFormat::Text);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e, 1),
    };
    rt.block_on(async move {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => {
                tracing::info!(listen, "sample ad server serving");
                tokio::select! {
                    () = serve_demo_upstream(l) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("cannot bind {listen}: {e}"), 1),
        }
    })
}

/// A tiny HTTP/1.1 GET for container health checks (the runtime image has no curl).
fn healthcheck(url: &str) -> ExitCode {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return fail(
            format!("invalid value '{url}' for '--admin-url': expected http://host:port/path"),
            2,
        );
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let timeout = std::time::Duration::from_secs(3);
    let addr = match std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()
        .and_then(|mut a| a.next())
    {
        Some(a) => a,
        None => return fail(format!("cannot resolve {authority}"), 1),
    };
    let result = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.take(4096).read_to_string(&mut buf)?;
        Ok(buf)
    })();
    match result {
        Ok(resp) if resp.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(resp) => fail(
            format!("unhealthy: {}", resp.lines().next().unwrap_or("")),
            1,
        ),
        Err(e) => fail(format!("unhealthy: {e}"), 1),
    }
}
