//! Mimeo multi-leader replication: every node accepts writes and streams
//! them to every other; replicas catch up on exactly what they missed and
//! converge once the network heals and writes stop.
//!
//! This crate holds the **core**: a state machine without I/O, in the
//! shape of quinn-proto and raft-rs, and its thin tokio [`driver`] (the
//! store, the peer bus over QUIC, the clocks; see its module docs for the
//! on-disk layout and how a persist is made atomic).
//! A driver feeds it inputs, each with the monotonic time as [`Millis`]
//! and, where the HLC needs it, the physical (wall-clock) time in ms:
//!
//! | input | when |
//! |---|---|
//! | [`Core::handle_client`] | a client request arrived |
//! | [`Core::handle_peer`] | a [`Message`] arrived from a peer |
//! | [`Core::connected`] | a connection to a peer came up |
//! | [`Core::persisted`] | a [`Persist`] (and every earlier one) is durable |
//! | [`Core::loaded`] | writes an [`Output::Load`] asked for were read from storage |
//! | [`Core::tick`] | the time [`Core::next_timeout`] named has come |
//!
//! and drains [`Output`]s with [`Core::poll_output`]: send a message,
//! persist a record (atomically: writes, key states and the applied
//! vector together), load old writes from storage, reply to a client. A
//! node restarts with [`Core::restore`] from its [`DurableState`].
//!
//! # What the mode promises
//!
//! - **Every node accepts writes**, acknowledged per [`AckMode`]: `local`
//!   (the origin holds it durably), `quorum` or `all` (that many nodes
//!   do). A `local` write can be lost with its origin's disk before it was
//!   shipped; `quorum` and `all` writes survive the loss of fewer nodes.
//! - **Convergence**: once writes stop and every pair of nodes can talk
//!   (directly or through others), every replica holds byte-identical key
//!   states.
//! - **Conflicts** ([`Policy`]): `lww` keeps the write with the largest
//!   HLC timestamp and silently drops concurrent ones (under clock skew it
//!   may keep the write that was earlier in real time); `siblings` keeps
//!   every concurrent value and loses no acknowledged write: each is in
//!   the final state or superseded by a write whose context covered it.
//!   Counters and sets merge by their type in both policies.
//! - **Deletes** are tombstones, collected only when causally stable;
//!   nothing deleted comes back.
//! - **Bounded memory**: writes waiting for acknowledgements
//!   ([`Config::max_pending_ack_bytes`]) and tombstones waiting for
//!   collection ([`Config::max_tombstone_bytes`]) are bounded in bytes;
//!   beyond them a new write (or delete) is refused with an error naming
//!   the setting, and is taken again once peers catch up. The memory log,
//!   the data in flight to each peer and waiting session reads are bounded
//!   too, and so is one write ([`Config::max_write_bytes`]: it carries its
//!   key's whole state, siblings included, and must fit a peer message).
//! - **Session reads** (read-your-writes, monotonic reads) on any node:
//!   pass the `session` vector of the last reply.
//!
//! What it does **not** promise: linearizability (two nodes can accept
//! conflicting writes at the same time; `cas` is refused), any bound on
//! how stale a non-session read is, or that LWW keeps the "latest" write
//! in real time.
//!
//! # Three cores in a loop
//!
//! The driver below delivers every message at once and has an instant
//! disk. Two clients write the same key at two nodes concurrently: both
//! values are kept as siblings, and a read-then-write resolves them.
//!
//! ```
//! use mimeo_multi_leader::{ClientOp, Config, Core, Millis, Output, ReadValue, Reply};
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
//!                     // The memory log holds everything here.
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
//! let put = |value: &str, context| ClientOp::Put {
//!     key: b"k".to_vec(),
//!     value: value.into(),
//!     context,
//! };
//! // Concurrent blind writes at n1 and n2 (neither has seen the other's).
//! nodes[0].handle_client(Millis(0), 1_000, 1, put("red", None), None);
//! nodes[1].handle_client(Millis(0), 1_000, 2, put("blue", None), None);
//! let replies = settle(&mut nodes);
//! assert!(replies.iter().all(|(_, r)| matches!(r, Reply::Written { .. })));
//!
//! // Every replica holds both, with the context to resolve them.
//! let get = ClientOp::Get { key: b"k".to_vec(), session: None, timeout_ms: None };
//! nodes[2].handle_client(Millis(0), 1_000, 3, get.clone(), None);
//! let replies = settle(&mut nodes);
//! let Reply::Value { value: ReadValue::Register { values, context, .. }, .. } = &replies[0].1
//! else { panic!("{replies:?}") };
//! assert_eq!(values, &[b"red".to_vec(), b"blue".to_vec()]);
//!
//! // A write with that context supersedes both, everywhere.
//! nodes[2].handle_client(Millis(0), 1_000, 4, put("purple", Some(context.clone())), None);
//! settle(&mut nodes);
//! for node in &nodes {
//!     assert_eq!(node.record(b"k"), nodes[0].record(b"k"));
//! }
//! nodes[0].handle_client(Millis(0), 1_000, 5, get, None);
//! let replies = settle(&mut nodes);
//! assert!(matches!(&replies[0].1,
//!     Reply::Value { value: ReadValue::Register { values, .. }, .. } if values == &[b"purple".to_vec()]));
//!
//! // cas needs a single leader.
//! let cas = ClientOp::Cas { key: b"k".to_vec(), expected: None, value: b"x".to_vec() };
//! nodes[0].handle_client(Millis(0), 1_000, 6, cas, None);
//! let replies = settle(&mut nodes);
//! assert!(matches!(&replies[0].1, Reply::Failed(e) if e.to_string().contains("leader-follower")));
//! ```
//!
//! # Two vectors, kept apart
//!
//! Each write has two identities. Its **origin dot** ([`Write::id`]:
//! origin node, sequence number from 1 without gaps) places it in its
//! origin's replication stream; the **applied vector** of a node holds,
//! per origin, the contiguous prefix it has applied, and catch-up is
//! "send the peer what its vector lacks". Siblings have a **key dot**
//! ([`Reply::Written::key_dot`]): the dot of the value in the key's
//! [`DvvSet`](mimeo_causality::DvvSet), counted per key and per
//! coordinating node, and read contexts are vectors of key dots. Session
//! tokens are applied vectors; read contexts are key contexts: a client
//! must not mix them.
//!
//! # Incarnations: a node that lost its disk is a new origin
//!
//! The origin of a node's writes (and the actor of its key dots, counter
//! and set entries) is its **actor** id, [`Core::actor`]: one incarnation
//! of the node, never reused by a node that lost its state (a wiped node
//! numbering its writes from 1 again under its old id would mint dots
//! that already exist with other values: peers would drop its new writes
//! as duplicates yet count themselves as holding them). A driver opening
//! an empty data directory starts the incarnation `<id>.<epoch>`, the
//! epoch being the wall clock in microseconds ([`Config::fresh_epoch`]);
//! every [`Persist`] records the actor, and a restart keeps it. A data
//! directory written before incarnations existed (format version 1) keeps
//! writing as the plain id. [`Config::member_of`] maps an origin back to
//! its node and incarnation; [`Status::origins`] lists every incarnation.
//!
//! What counts **nodes**, not origins: acknowledgements (`quorum`/`all`
//! count peers, each once), tombstone stability (every *node's* durable
//! vector must cover the tombstone's causal past, entries of retired
//! incarnations included) and the stable vector. A peer is counted for
//! what its latest status says it holds, so a wiped node counts for
//! nothing it lost until it has it again. No write is withheld from a
//! peer because of its name: a wiped node gets the writes of its old
//! incarnation back from the others (and a peer that reports lacking
//! writes it was believed to hold is sent them again). Session tokens are
//! applied vectors and may name several incarnations of one node.
//!
//! **Known limit.** The writes a wiped node gets back are those some peer
//! still holds in its memory log or its store's write index; a driver
//! forgets writes every node held ([`Status::stable`]), and a node wiped
//! after that cannot get those back (there is no transfer of key states
//! yet). Its vector then stays behind for the old incarnation: it lacks
//! the keys only those writes carried, the stable vector stops advancing
//! for that incarnation (tombstones whose causal past includes those
//! writes are never collected), and session tokens naming
//! them wait on it until they time out. Status shows it (`behind_writes`
//! of the old incarnation on the wiped node, a `stable` vector that does
//! not move). And a wiped node re-applies its lost past (old writes, in
//! each origin's order) interleaved with newer writes and its own new
//! ones: a write its key's record already reflects changes nothing, but
//! an old tombstone applied to a key it then writes itself can outlive
//! its collection everywhere else (the seeded simulation with wipes finds
//! this on 2 seeds of 100, `tests/sim/main.rs`, ignored). The way out of
//! both is a state transfer to a wiped node (key states, not old writes),
//! to build.
//!
//! # Durable records
//!
//! [`Persist`], [`Write`], [`KeyRecord`] and [`DurableState`] are
//! serde types with deterministic encodings, versioned by
//! [`FORMAT_VERSION`] (see the [`Persist`] docs for the atomicity rule and
//! the module docs of `record` for versioning).
//!
//! # What is tested
//!
//! `src/tests.rs` feeds one input and asserts the exact outputs.
//! `tests/sim/` runs seeded 3- and 5-node clusters with message drops,
//! duplicates, reordering, partitions, crashes (unpersisted records lost)
//! and clock skew, checking one invariant per file (convergence, no
//! acknowledged write lost, LWW winner, HLC monotonic, no resurrection),
//! each shown to catch a deliberately broken core. `tests/model.rs`
//! model-checks a small cluster with stateright. `tests/driver.rs` runs
//! three drivers on 127.0.0.1 (real stores, QUIC with mutual TLS), writing
//! on every node until they converge, and restarts one from its store.

mod config;
mod core;
pub mod driver;
mod lag;
mod log;
mod message;
mod output;
mod record;
mod state;
mod types;

#[doc(hidden)]
pub use crate::config::Sabotage;
pub use crate::config::{AckMode, Config, ConfigError, Policy};
pub use crate::core::Core;
pub use crate::lag::{LagHistogram, LAG_BOUNDS_MS};
pub use crate::message::Message;
pub use crate::output::{OriginLag, Output, Status};
pub use crate::record::{DurableState, KeyChange, Persist, Write, FORMAT_VERSION};
pub use crate::state::{KeyRecord, KeyState};
pub use crate::types::{ClientError, ClientOp, KeyType, Millis, ReadValue, Reply, RequestId};
pub use mimeo_causality::{Dot, NodeId, Timestamp, VersionVector};

#[cfg(test)]
mod tests;
