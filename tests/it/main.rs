//! kappe's integration tests: one binary, real sockets on port 0, a mock upstream, and kappe
//! started in-process (or as its binary, for the command line).

mod browser;
mod caps;
mod cli;
mod faults;
mod observe;
mod privacy;
mod process;
mod proxy;
mod redis;
mod security;
mod shared;
mod support;
