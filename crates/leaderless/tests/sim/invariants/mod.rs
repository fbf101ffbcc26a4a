//! What the simulation checks, one invariant per file (after openraft's
//! `tests-turmoil/src/invariants/`). Each file says where the property
//! comes from and has a test showing it rejects a violation; `main.rs`
//! shows each one catching a deliberately broken core.

pub(crate) mod acked_writes;
pub(crate) mod convergence;
pub(crate) mod hints_delivered;
pub(crate) mod no_resurrection;
pub(crate) mod no_stale_read;

use mimeo_leaderless::{Dot, Millis, VersionVector};

/// A register write (put or delete) a client sent.
#[derive(Clone, Debug)]
pub(crate) struct MadeWrite {
    pub(crate) key: Vec<u8>,
    /// `None` for a delete.
    pub(crate) value: Option<Vec<u8>>,
    /// The context the client passed (empty: blind).
    pub(crate) context: VersionVector,
    /// The dot of its value (siblings policy), from the reply.
    pub(crate) key_dot: Option<Dot>,
    /// Whether the client got `Written`.
    pub(crate) acked: bool,
    /// When.
    pub(crate) acked_at: Option<Millis>,
}
