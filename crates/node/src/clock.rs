//! The node's clock offset: the admin protocol can shift a node's view of
//! wall-clock time, so the harness can inject clock skew into one node
//! without touching the machine's time. Standalone mode only reports it;
//! time-based replicators read their time through it.

use std::sync::atomic::{AtomicI64, Ordering};

/// An adjustable offset from the system clock, in milliseconds.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// The current offset from the system clock.
    pub(crate) fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Sets the offset from the system clock (0 restores the true time).
    pub(crate) fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }
}
