//! Test support: helpers that start real external processes on free loopback ports and stop
//! them on drop.

pub(crate) mod redis;
