//! Mimeo leaderless replication (work in progress).

mod ring;

pub use crate::ring::{Ring, RingError, HASH_VERSION};
pub use mimeo_causality::NodeId;
