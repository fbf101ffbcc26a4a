//! What the simulation checks, one invariant per file (after openraft's
//! `tests-turmoil/src/invariants/`). Each file says where the property
//! comes from and has a test showing it rejects a violation; `main.rs`
//! shows each one catching a deliberately broken core.

pub(crate) mod acked_writes;
pub(crate) mod convergence;
pub(crate) mod hlc_monotonic;
pub(crate) mod lww_winner;
pub(crate) mod no_resurrection;

use mimeo_multi_leader::{Dot, Timestamp, VersionVector};

/// A register write (put or delete) that became durable at its origin.
#[derive(Clone, Debug)]
pub(crate) struct MadeWrite {
    pub(crate) key: Vec<u8>,
    pub(crate) id: Dot,
    pub(crate) ts: Timestamp,
    /// The dot of its value in the key's DVV set (siblings policy).
    pub(crate) key_dot: Option<Dot>,
    /// The context the client passed (empty: blind).
    pub(crate) context: VersionVector,
    /// `None` for a delete.
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) acked: bool,
}
