//! Test scaffolding the replicator crates share, used only as a
//! dev-dependency (`publish = false`):
//!
//! - [`SimNet`]: the seeded faulty network of the deterministic
//!   simulations (`tests/sim` of the leader-follower, multi-leader and
//!   leaderless crates): messages dropped, duplicated, delayed (so
//!   reordered) and cut by partitions, every choice drawn from the
//!   simulation's own seeded generator, so a seed replays exactly;
//! - [`PeerHost`]: one node's QUIC side in the driver tests (real
//!   processes' transport on 127.0.0.1 with mutual TLS): a server that
//!   outlives driver restarts and hands peer connections to the running
//!   driver's bus, and [`cluster_certs`] for the nodes' certificates;
//! - [`unordered`] and [`eq_by_fingerprint!`]: states of the stateright
//!   models compared by a fingerprint;
//! - [`hex`]: bytes as lowercase hex, for pinned encodings.
//!
//! What each simulation checks (its invariants, workloads, disks) stays
//! in its crate; only what was the same code, to the letter, lives here.

mod model;
mod peer_host;
mod sim_net;

pub use model::unordered;
pub use peer_host::{cluster_certs, PeerHost};
pub use sim_net::{LinkFaults, SimNet};

/// `bytes` as lowercase hex, two digits a byte: how tests pin encodings.
pub fn hex(bytes: impl IntoIterator<Item = u8>) -> String {
    bytes.into_iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_two_lowercase_digits_a_byte() {
        assert_eq!(super::hex([0x00, 0x0a, 0xff]), "000aff");
    }
}
