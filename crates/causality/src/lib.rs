//! Mimeo causality: the logical clocks and merge types that the
//! multi-leader and leaderless replicators share.
//!
//! It is a crate of pure data structures: no I/O, no threads, and no clock
//! reads (physical time is always an argument, in milliseconds since the
//! Unix epoch). Every type implements serde's `Serialize` and
//! `Deserialize`, with deterministic encodings (ordered maps only), so the
//! same state always encodes to the same bytes. It depends on serde and
//! thiserror only, and can be embedded on its own.
//!
//! | type | what it is for |
//! |---|---|
//! | [`Hlc`], [`Timestamp`] | timestamps close to physical time that respect causality; a total order for last-writer-wins |
//! | [`VersionVector`], [`Dot`] | what a replica (or a read) has seen; "applied up to" vectors; causal order of histories |
//! | [`DvvSet`] | a key's concurrent values (siblings) with exact causal contexts, Riak's `dvvset` |
//! | [`Lww`] | a last-writer-wins register: cheap, and loses concurrent writes |
//! | [`PnCounter`] | a counter incremented and decremented anywhere, losing no update |
//! | [`OrSet`] | an add-wins observed-remove set |
//! | [`KeyState`], [`KeyType`], [`ReadValue`] | a replicated key: one of the above by its type, how two states of it merge, and what a read returns |
//!
//! # Hybrid logical clocks
//!
//! An [`Hlc`] issues [`Timestamp`]s `(physical_ms, logical, node)` that
//! stay close to physical time, never go backwards (even when the
//! physical clock does), and are larger than every timestamp the node has
//! received. Receiving a timestamp too far in the future is refused
//! rather than followed (see [`Hlc::observe`]).
//!
//! ```
//! use std::time::Duration;
//! use mimeo_causality::{Hlc, Timestamp};
//!
//! let mut n1 = Hlc::new("n1", Duration::from_millis(500));
//! let mut n2 = Hlc::new("n2", Duration::from_millis(500));
//! let sent = n1.tick(10_000);
//! // n2's clock is 200 ms behind; the message still moves it past `sent`,
//! // so a write n2 makes after it is ordered after n1's.
//! let received = n2.observe(9_800, &sent)?;
//! assert_eq!(received, Timestamp::new(10_000, 1, "n2"));
//! assert!(n2.tick(9_801) > sent);
//! # Ok::<(), mimeo_causality::DriftError>(())
//! ```
//!
//! # When last-writer-wins loses a write, and siblings do not
//!
//! Last-writer-wins orders concurrent writes by timestamp. Timestamps order
//! causally related writes correctly, but for *concurrent* writes the
//! "last" one is whichever node's clock ran fast. Below, `n2`'s clock is
//! 300 ms slow; a client writes at `n1`, another writes at `n2` 100 ms
//! later in real time, before the replicas have exchanged anything. LWW
//! keeps the earlier write and drops the later one without telling anyone;
//! a [`DvvSet`] keeps both as siblings and lets the next reader decide.
//!
//! ```
//! use std::time::Duration;
//! use mimeo_causality::{DvvSet, Hlc, Lww, VersionVector};
//!
//! let drift = Duration::from_millis(500);
//! let (mut clock1, mut clock2) = (Hlc::new("n1", drift), Hlc::new("n2", drift));
//!
//! // Real time 1000: a write at n1 (its clock is right).
//! let mut lww1 = Lww::new(clock1.tick(1_000), "from n1 at 1000");
//! // Real time 1100: a write at n2, whose clock reads 800.
//! let mut lww2 = Lww::new(clock2.tick(800), "from n2 at 1100");
//!
//! // The replicas exchange states and converge ... on the earlier write.
//! lww1.merge(&lww2.clone());
//! lww2.merge(&lww1.clone());
//! assert_eq!(lww1, lww2);
//! assert_eq!(lww1.value, "from n1 at 1000"); // the later write is lost
//!
//! // The same two writes as siblings: both blind (their writers read nothing).
//! let mut dvv1 = DvvSet::new();
//! let mut dvv2 = DvvSet::new();
//! dvv1.update(&VersionVector::new(), "n1", "from n1 at 1000")?;
//! dvv2.update(&VersionVector::new(), "n2", "from n2 at 1100")?;
//! dvv1.merge(&dvv2.clone());
//! dvv2.merge(&dvv1.clone());
//! assert_eq!(dvv1, dvv2);
//! assert_eq!(dvv1.values().collect::<Vec<_>>(), [&"from n1 at 1000", &"from n2 at 1100"]);
//!
//! // A reader resolves them and writes back with the read's context: one value left.
//! let context = dvv1.context();
//! dvv1.update(&context, "n1", "both")?;
//! dvv2.merge(&dvv1);
//! assert_eq!(dvv2.values().collect::<Vec<_>>(), [&"both"]);
//! # Ok::<(), mimeo_causality::SiblingError>(())
//! ```
//!
//! Had `n2` received `n1`'s write before its own (as [`Hlc::observe`]),
//! its timestamp would have been larger and LWW would have kept it: LWW
//! loses only concurrent writes, and only those the skew orders wrongly.
//!
//! # Siblings: dotted version vector sets
//!
//! A [`DvvSet`] is one key's state on one replica. A read returns its
//! values and its [`context`](DvvSet::context); a write carries the
//! context of the read it follows and replaces exactly the values that
//! read saw. Replicas that accepted writes independently diverge, and
//! converge once they [`merge`](DvvSet::merge) each other's state:
//!
//! ```
//! use mimeo_causality::{Causality, DvvSet, VersionVector};
//!
//! let mut n1 = DvvSet::new();
//! n1.update(&VersionVector::new(), "n1", "v1")?;
//! let mut n2 = n1.clone(); // replicated
//!
//! // Two clients read v1, then each writes through a different node.
//! let read = n1.context();
//! n1.update(&read, "n1", "v2 from client A")?;
//! n2.update(&read, "n2", "v2 from client B")?;
//! assert_eq!(n1.context().compare(&n2.context()), Causality::Concurrent);
//!
//! // Anti-entropy: each merges the other's state; both hold both siblings, v1 is gone.
//! let from_n2 = n2.clone();
//! n2.merge(&n1);
//! n1.merge(&from_n2);
//! assert_eq!(n1, n2);
//! assert_eq!(n1.len(), 2);
//!
//! // A client reads both, resolves, and writes back: the siblings collapse.
//! let read = n1.context();
//! let written = n1.update(&read, "n1", "v3")?;
//! assert_eq!(written.siblings, 1);
//! n2.merge(&n1);
//! assert_eq!(n2.values().collect::<Vec<_>>(), [&"v3"]);
//! # Ok::<(), mimeo_causality::SiblingError>(())
//! ```
//!
//! Deletes are writes too: store `Option<V>` and write `None` with the
//! read's context: the tombstone supersedes what the read saw, a
//! concurrent write stays beside it as a sibling, and no replica that
//! still holds an old value can bring it back through a merge:
//!
//! ```
//! use mimeo_causality::{DvvSet, VersionVector};
//!
//! let mut n1: DvvSet<Option<&str>> = DvvSet::new();
//! n1.update(&VersionVector::new(), "n1", Some("v1"))?;
//! let mut n2 = n1.clone();
//! let read = n1.context();
//! n1.update(&read, "n1", None)?; // delete what the read saw
//! n2.merge(&n1);
//! assert_eq!(n2.values().collect::<Vec<_>>(), [&None]); // v1 does not come back
//! # Ok::<(), mimeo_causality::SiblingError>(())
//! ```
//!
//! Writers that never read make siblings that somebody must resolve. The
//! set caps them ([`SiblingLimits`]): a write that leaves 25 or more is
//! flagged ([`Written::warn`]), and one that would leave more than 100 is
//! refused with [`SiblingError::TooManySiblings`], whose message says how
//! to resolve: read, merge, write back with the read's context.
//!
//! # Merge types
//!
//! [`PnCounter`] and [`OrSet`] are state-based CRDTs: any replica changes
//! them, and merging states in any order, any number of times, gives the
//! same result as applying every replica's operations.
//!
//! ```
//! use mimeo_causality::{OrSet, PnCounter};
//!
//! // Two replicas count the same kind of event: no increment is lost.
//! let (mut likes1, mut likes2) = (PnCounter::new(), PnCounter::new());
//! likes1.increment("n1", 1);
//! likes2.increment("n2", 1);
//! likes1.merge(&likes2);
//! assert_eq!(likes1.value(), 2); // a register would say 1
//!
//! // A remove deletes only the adds it saw; a concurrent add survives.
//! let mut cart1 = OrSet::new();
//! cart1.add("n1", "book");
//! let mut cart2 = cart1.clone();
//! cart2.remove(&"book");
//! cart1.add("n1", "book"); // concurrently, at n1
//! cart2.merge(&cart1);
//! assert!(cart2.contains(&"book"));
//! ```
//!
//! # Why these are written here, and not taken from `crdts`
//!
//! rust-crdt's [`crdts`](https://crates.io/crates/crdts) (7.3) is well
//! kept and has a `VClock`, a `PNCounter` and an `Orswot` with the
//! semantics we need, and its tests are thorough. We use it as the
//! **independent oracle** in our differential tests, not in production,
//! because:
//!
//! - its `Orswot` keeps `HashMap`s, so its encodings are not deterministic
//!   (we pin encodings with golden bytes), and its `PNCounter` needs the
//!   `num` big-integer crate;
//! - its types are generic over an actor with their own `Dot` and
//!   `VClock`: ours share one [`NodeId`], [`Dot`] and [`VersionVector`]
//!   with the [`DvvSet`], which `crdts` does not have (its `MVReg`
//!   derives a write's dot from the writer's context, so the writer, the
//!   client, must be the actor, and the history grows with the clients);
//! - the types are small (a few hundred lines), so owning them costs
//!   less than adapting to another crate's model, and testing them against
//!   `crdts` keeps them honest.
//!
//! We know of no maintained Rust crate for Riak-style dotted version
//! vector sets. The HLC is ours too: `uhlc` calls a clock function itself
//! (a plain `fn`, so a fake clock needs global state), returns no receipt
//! timestamp from an update, and packs its counter into the 4 low bits of
//! a 64-bit NTP time (16 events in the same instant carry into the time),
//! where we want the physical time as an argument, a receipt timestamp,
//! refusals counted, and whole milliseconds beside a separate counter. It
//! is our HLC's differential oracle instead.
//!
//! # What is tested
//!
//! Property tests, thousands of cases per law: in `tests/laws.rs`, every
//! merge is commutative, associative and idempotent, the causal order is a
//! partial order, and merging replicas' states in any order equals applying
//! the union of their operations (checked against naive reference models
//! that keep every operation); in `tests/hlc.rs`, the HLC is strictly
//! monotonic under any sequence of physical times, refuses (and counts)
//! every timestamp beyond `max_drift` and no other. `tests/differential.rs`
//! runs the same random programs on these types and on `crdts` (and the
//! HLC against `uhlc`), and asserts they agree. `tests/sibling_explosion.rs`
//! shows two clients writing through one node make at most one sibling
//! each, and that a per-key version vector without dots would not.

mod dvvset;
mod hlc;
mod key_state;
mod lww;
mod node;
mod orset;
mod pncounter;
mod version_vector;

pub use dvvset::{DvvSet, LimitsError, SiblingError, SiblingLimits, Written};
pub use hlc::{DriftError, Hlc, Timestamp};
pub use key_state::{KeyState, KeyType, ReadValue};
pub use lww::Lww;
pub use node::NodeId;
pub use orset::OrSet;
pub use pncounter::PnCounter;
pub use version_vector::{Causality, Dot, VersionVector};
