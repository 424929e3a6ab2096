//! Time, injected. Every piece of window math takes `now` from a [`Clock`], so tests move time
//! by hand instead of sleeping, and the Redis backend can use the server's clock instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch. One-second resolution is all cap windows need.
pub type UnixSecs = u64;

/// A source of the current time.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The system's wall clock.
    System,
    /// A clock that only moves when a test moves it.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at `start`.
    pub fn manual(start: UnixSecs) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(start)))
    }

    /// The current time in whole seconds.
    pub fn now(&self) -> UnixSecs {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward by `secs`; a no-op on the system clock.
    pub fn advance(&self, secs: u64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(secs, Ordering::Relaxed);
        }
    }

    /// Sets a manual clock to `to`; a no-op on the system clock.
    pub fn set(&self, to: UnixSecs) {
        if let Clock::Manual(t) = self {
            t.store(to, Ordering::Relaxed);
        }
    }
}
