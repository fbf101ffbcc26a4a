//! Mimeo leaderless replication (Dynamo, Riak, Cassandra): no leader, any
//! node coordinates a request, each key lives on N replicas of a
//! consistent-hash ring, and a request succeeds when W (writes) or R
//! (reads) of them have answered.
//!
//! This crate holds the **core**: a state machine without I/O, in the
//! shape of quinn-proto and raft-rs, and a thin tokio [`driver`] (the
//! store, the QUIC peer bus, the clocks). A driver feeds
//! it inputs, each with the monotonic time as [`Millis`] and, where the
//! HLC needs it, the physical (wall-clock) time in ms:
//!
//! | input | when |
//! |---|---|
//! | [`Core::handle_client`] | a client request arrived (with per-request [`Quorum`] overrides) |
//! | [`Core::handle_peer`] | a [`Message`] arrived from a peer |
//! | [`Core::connected`] / [`Core::disconnected`] | a peer became reachable / unreachable |
//! | [`Core::persisted`] | a [`Persist`] (and every earlier one) is durable |
//! | [`Core::tick`] | the time [`Core::next_timeout`] named has come |
//!
//! and drains [`Output`]s with [`Core::poll_output`]: send a message,
//! persist records (keys and hints, atomically), reply to a client. A node
//! restarts with [`Core::restore`] from its [`DurableState`], which refuses
//! data placed by another ring ([`RingError::Changed`]).
//!
//! # Placement
//!
//! [`Ring`]: `vnodes` tokens per node, placed by XXH3-64 (fixed and
//! versioned by [`HASH_VERSION`], pinned by `testdata/placement.txt`). A
//! key's preference list is the first N distinct nodes clockwise from its
//! position; the nodes after them are its fallbacks, in order.
//!
//! # What each setting promises, and what it does not
//!
//! - **`n`** replicas per key. **`w`** / **`r`**: a write is acknowledged
//!   once `w` targets received it (and **`dw`** of them hold it durably);
//!   a read answers with the merge of the first `r` replies. **`pw`** /
//!   **`pr`**: how many of those must be primary owners (Riak's strict
//!   quorums).
//! - **W + R > N with `sloppy = false`** (strict quorums): a read's `r`
//!   replicas overlap every acknowledged write's `w` replicas, so a read
//!   that *begins after* a write was acknowledged returns it or a later
//!   version (or siblings including it), as long as the `w` replicas
//!   keep it (with `dw = w`, the default, they acknowledged it durably;
//!   with a smaller `dw` a crash can lose it from one of them). It is
//!   **not** linearizable: a write that ended `unknown` may be seen by one
//!   read and not by the next, and two concurrent reads may disagree
//!   while a write is in flight. The simulation checks that no
//!   acknowledged write is lost and that no read misses a write
//!   acknowledged before it began; the stateright model checks the same
//!   on three nodes exhaustively within its bound.
//! - **`sloppy = true`**: an unreachable primary is replaced by the next
//!   reachable node of the ring, which keeps the write as a durable
//!   [`Hint`] and hands it to the owner when it is reachable again
//!   (`hint_interval_ms`, `hint_batch` per owner at a time, dropped after
//!   `hint_max_age_ms`, refused beyond `hint_max_bytes`). Writes and reads
//!   stay available when primaries are not; but W + R > N then **no
//!   longer** guarantees that a read sees an acknowledged write (the
//!   write's W and the read's R may be disjoint sets of nodes).
//! - **Timeouts**: a write that cannot gather its quorum within
//!   `request_timeout_ms` ends [`Reply::Unknown`] (it may have landed on
//!   some replicas and may spread from them later); a read ends
//!   [`Reply::Unavailable`]. A request that cannot reach enough targets
//!   at all is refused at once ([`ClientError::NotEnoughReplicas`]: no effect).
//! - **Versions** ([`Policy`]): `lww` keeps the largest HLC timestamp and
//!   silently drops concurrent writes (under clock skew, maybe the later
//!   one in real time); `siblings` keeps every concurrent value (dotted
//!   version vector sets) with a context to resolve them. Counters and
//!   sets merge by type under both. `cas` is refused.
//! - **Read repair** ([`ReadRepair`]): `background` writes the merged
//!   state back to the replicas that answered with less, once every target
//!   answered or the request timed out; `blocking` does it for the first
//!   `r` before replying; `off` leaves it to anti-entropy.
//! - **Anti-entropy** (`anti_entropy_interval_ms`): every node keeps a
//!   Tictac tree per replica set it belongs to, updated on every change; an
//!   exchange compares roots, then branches, then the segments under
//!   differing branches, then the keys of differing segments (with each
//!   key's [`KeyClock`], so a state goes only to the replica that is
//!   behind, where the clocks can tell), and ships only the states of the
//!   keys that differ, at most `ae_max_bytes` per message ([`Metrics`]
//!   counts exchanges, segments compared, keys and bytes shipped: 1.6× the
//!   differing bytes for 0.1% of 10,000 1 KiB keys, tree overhead
//!   included). Once writes stop and the network heals, every replica
//!   converges.
//! - **Deletes** are tombstones (with the read's context under siblings),
//!   kept forever by this core: nothing deleted comes back, and nothing is
//!   collected (tombstone collection is not implemented yet).
//!
//! Writes are coordinated by one of the key's targets (a node that is not
//! one forwards the write): it makes the new version on its own copy and
//! persists it *before* sending it, so a writer id (`<node>.<epoch>`,
//! minted whenever the node has no state for the key) never issues the
//! same dot twice, even across crashes; a node whose disk was wiped
//! starts from [`Config::fresh_epoch`], which its driver sets above any
//! epoch it used before.
//!
//! # Three cores in a loop
//!
//! The driver below delivers every message at once and has an instant
//! disk. Two clients write the same key at two nodes concurrently: both
//! values are kept as siblings, a read returns both with a context, and a
//! write with that context resolves them.
//!
//! ```
//! use mimeo_leaderless::{ClientOp, Config, Core, Millis, Output, Quorum, ReadValue, Reply};
//!
//! let ids = ["n1", "n2", "n3"];
//! let mut nodes: Vec<Core> = ids
//!     .iter()
//!     .map(|id| Core::new(Config::new(*id, ids), Millis(0)).unwrap())
//!     .collect();
//!
//! /// Perform every output until the cluster is quiet; collect the replies.
//! fn settle(nodes: &mut [Core]) -> Vec<(u64, Reply)> {
//!     let mut replies = Vec::new();
//!     loop {
//!         let mut quiet = true;
//!         for i in 0..nodes.len() {
//!             while let Some(output) = nodes[i].poll_output() {
//!                 quiet = false;
//!                 match output {
//!                     Output::Send { to, msg } => {
//!                         let from = nodes[i].id().clone();
//!                         let j = nodes.iter().position(|n| *n.id() == to).unwrap();
//!                         nodes[j].handle_peer(Millis(0), 1_000, from, msg);
//!                     }
//!                     // An instant disk: durable as soon as asked.
//!                     Output::Persist(p) => nodes[i].persisted(Millis(0), p.id),
//!                     Output::Reply { req_id, reply } => replies.push((req_id, reply)),
//!                     _ => unreachable!(),
//!                 }
//!             }
//!         }
//!         if quiet {
//!             return replies;
//!         }
//!     }
//! }
//!
//! let put = |value: &str, context| ClientOp::Put { key: b"k".to_vec(), value: value.into(), context };
//! let get = ClientOp::Get { key: b"k".to_vec() };
//! let q = Quorum::default(); // N = 3, W = R = 2
//!
//! nodes[0].handle_client(Millis(0), 1_000, 1, put("red", None), q);
//! nodes[1].handle_client(Millis(0), 1_000, 2, put("blue", None), q);
//! let replies = settle(&mut nodes);
//! assert!(replies.iter().all(|(_, r)| matches!(r, Reply::Written { .. })));
//!
//! // A read at n3 merges two replies: both siblings, and their context.
//! nodes[2].handle_client(Millis(0), 1_000, 3, get.clone(), q);
//! let replies = settle(&mut nodes);
//! let Reply::Value { value: ReadValue::Register { values, context, .. }, .. } = &replies[0].1
//! else { panic!("{replies:?}") };
//! assert_eq!(values.len(), 2);
//!
//! // A write with that context supersedes both, on every replica.
//! nodes[2].handle_client(Millis(0), 1_000, 4, put("purple", Some(context.clone())), q);
//! settle(&mut nodes);
//! nodes[0].handle_client(Millis(0), 1_000, 5, get, Quorum { r: Some(3), ..q });
//! let replies = settle(&mut nodes);
//! assert!(matches!(&replies[0].1,
//!     Reply::Value { value: ReadValue::Register { values, .. }, .. } if values == &[b"purple".to_vec()]));
//! for node in &nodes {
//!     assert_eq!(node.state(b"k"), nodes[0].state(b"k"));
//! }
//!
//! // cas needs a single leader.
//! let cas = ClientOp::Cas { key: b"k".to_vec(), expected: None, value: b"x".to_vec() };
//! nodes[0].handle_client(Millis(0), 1_000, 6, cas, q);
//! let replies = settle(&mut nodes);
//! assert!(matches!(&replies[0].1, Reply::Failed(e) if e.to_string().contains("leader-follower")));
//! ```
//!
//! # Durable records and messages
//!
//! [`Persist`], [`DurableState`] and [`Message`] are serde types with
//! deterministic postcard encodings, versioned by [`FORMAT_VERSION`] and
//! pinned by golden bytes (`src/tests.rs`).
//!
//! # What is tested
//!
//! `src/tests.rs` feeds one input and asserts the exact outputs (write
//! coordination, forwarding, quorum shortfalls, strict and sloppy
//! targets, read merge and repair, hint storage, delivery, expiry and
//! budget, restarts, anti-entropy shipping one differing key). `src/ring.rs`
//! tests balance (5 nodes × 64 vnodes: no node above 1.3× its share) and
//! `tests/placement.rs` pins a placement table. `tests/sim/` runs seeded
//! 5-node clusters (N = 3) with drops, duplicates, partitions, crashes and
//! clock skew, checking one invariant per file (no acknowledged write
//! lost, convergence by anti-entropy alone, hints delivered, no
//! resurrection, no stale read under strict quorums), each shown to catch
//! a deliberately broken core. `tests/model.rs` model-checks three nodes
//! (two writes, a read, a crash, any delivery order) with stateright:
//! acknowledged writes are durable on W replicas, and a read that began
//! after an acknowledged write returns it. `tests/driver.rs` runs five
//! real drivers (stores with fsync, QUIC with mutual TLS on 127.0.0.1):
//! writes read at another node, restarts, and hinted handoff to a node
//! that was down.
//!
//! # Not done yet
//!
//! Tombstone collection, and persisted trees (they are rebuilt from the
//! keys at restart, once).

mod config;
mod core;
pub mod driver;
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
pub use crate::output::{LocalRead, Metrics, Output, Status};
pub use crate::record::{DurableState, Hint, HintChange, Persist, StoredKey, FORMAT_VERSION};
pub use crate::ring::{Ring, RingError, HASH_VERSION};
pub use crate::state::{KeyClock, KeyState, KeyStateExt};
pub use crate::types::{
    ClientError, ClientOp, KeyType, Millis, Quorum, ReadValue, Reply, RequestId, Tally,
};
pub use mimeo_causality::{Dot, NodeId, Timestamp, VersionVector};

#[cfg(test)]
mod tests;
