//! Mimeo leaderless replication (docs below).

mod config;
mod core;
mod message;
mod output;
mod record;
mod ring;
mod state;
mod tree;
mod types;

#[doc(hidden)]
pub use crate::config::Sabotage;
pub use crate::config::{Config, ConfigError, Policy, ReadRepair};
pub use crate::core::Core;
pub use crate::message::Message;
pub use crate::output::{Metrics, Output, Status};
pub use crate::record::{DurableState, Hint, HintChange, Persist, StoredKey, FORMAT_VERSION};
pub use crate::ring::{Ring, RingError, HASH_VERSION};
pub use crate::state::KeyState;
pub use crate::types::{
    ClientError, ClientOp, KeyType, Millis, Quorum, ReadValue, Reply, RequestId, Tally,
};
pub use mimeo_causality::{Dot, NodeId, Timestamp, VersionVector};

#[cfg(test)]
mod tests;
