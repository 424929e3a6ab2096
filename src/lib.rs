//! kappe: a reverse proxy in front of an ad server that caps how often a visitor sees a
//! retargeting campaign, exactly, and drops retargeting once any opt-out applies.
//!
//! # Modules
//! - [`cli`]: raw command-line arguments (clap), each with a `KAPPE_*` environment twin.
//! - [`config`]: the validated configuration built from arguments and the config file.
//! - [`app`]: wiring: listeners, worker threads, store, metrics, HTTP client; run until
//!   shutdown, then drain.
//! - [`server`]: accept loops, connection limits, timeouts, graceful shutdown, and the HTTP/1
//!   framing guard that refuses ambiguous request heads before hyper parses them.
//! - [`admin`]: the operators' port: `/metrics`, `/healthz`, `/readyz`.
//! - [`metrics`]: every metric family kappe exports, with bounded labels.
//! - [`proxy`]: the request pipeline: identity, privacy signals, forwarding, response decision.
//! - [`policy`]: cap rules and their grammar; pure decisions.
//! - [`store`]: the exact sliding-window impression store and its backends.
//! - [`privacy`]: privacy-signal decoders and the visitor-facing pages.
//! - [`head`]: reading HTTP/1 request and response heads, without I/O.
//! - [`clock`]: injected time.
//! - [`alloc`]: the process allocator and its settings.
//!
//! # Request flow
//! ```text
//! visitor -> server (limits, timeouts, framing guard) -> proxy::handle
//!   -> kappe's own paths (/_kappe/...)      answered locally
//!   -> privacy signals + visitor identity    decide whether this visitor may be counted
//!   -> forward to the upstream (hygiene)     stream the request body
//!   <- response: campaign? retargeting?      policy picks the caps
//!   <- store.admit(visitor, caps, now)       Admitted -> stream the response; Denied -> drop answer
//! ```

#[cfg(feature = "proxy")]
pub mod admin;
pub mod alloc;
#[cfg(feature = "proxy")]
pub mod app;
#[cfg(feature = "proxy")]
pub mod cli;
pub mod clock;
#[cfg(feature = "proxy")]
pub mod config;
#[cfg(feature = "proxy")]
pub mod demo;
pub mod head;
#[cfg(feature = "proxy")]
pub mod metrics;
pub mod policy;
pub mod privacy;
#[cfg(feature = "proxy")]
pub mod proxy;
#[cfg(feature = "proxy")]
pub mod server;
#[cfg(feature = "proxy")]
pub mod status;
pub mod store;
