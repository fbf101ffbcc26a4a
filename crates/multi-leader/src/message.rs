//! Messages between peers.

use mimeo_causality::VersionVector;
use serde::{Deserialize, Serialize};

use crate::record::Write;

/// A message from one core to another. Best effort: cores tolerate loss,
/// duplication and reordering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// The sender's vectors. Sent every
    /// [`status_interval_ms`](crate::Config::status_interval_ms), when the
    /// sender's durable vector advances, and on a gap. The receiver sends
    /// back the writes `applied` lacks (catch-up), counts `durable`
    /// towards acknowledgements, and uses it for tombstone stability.
    Status {
        /// What the sender has applied (contiguous per origin).
        applied: VersionVector,
        /// What the sender has applied durably.
        durable: VersionVector,
    },
    /// Writes, each origin's in sequence order.
    Writes(Vec<Write>),
}
