//! Cluster and node settings.

use std::time::Duration;

use mimeo_causality::{NodeId, SiblingLimits};
use serde::{Deserialize, Serialize};

use crate::types::Quorum;

/// How concurrent writes to one key are resolved (one setting for the
/// whole cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// Last writer wins by HLC timestamp: concurrent writes are silently
    /// dropped, and under clock skew the one kept may be the earlier.
    Lww,
    /// Keep every concurrent value (dotted version vector sets): reads
    /// return all siblings and a context; a write with that context
    /// supersedes exactly what the read saw.
    Siblings,
}

/// What a read does when the replicas it heard from disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadRepair {
    /// Nothing (anti-entropy alone converges the replicas).
    Off,
    /// Reply at once; write the merged state back to the stale replicas
    /// when every target has answered (or the request timed out).
    Background,
    /// Write the merged state back to the stale replicas among the first
    /// `r` to answer, and reply once they hold it durably (or at the
    /// request's deadline).
    Blocking,
}

/// Test-only ways to break the core on purpose, so that the simulation's
/// invariants can be shown to reject a broken core. Not part of the API.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Sabotage {
    /// A replica replaces its state with a received one instead of merging.
    ReplaceOnStore,
    /// A read answers with the first reply, whatever `r` says (R = 1
    /// with W = 2 of N = 3: reads can miss acknowledged writes).
    ReadOne,
    /// Hints are dropped instead of delivered.
    DropHints,
    /// Anti-entropy exchanges compare roots only and never ship keys.
    SkipAntiEntropy,
    /// A delete writes a blind tombstone on the coordinator only and drops
    /// the key's state there instead of superseding what the read saw.
    ForgetOnDelete,
}

/// A node's configuration. Every node of a cluster must agree on `nodes`,
/// `vnodes`, `n` and `policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every node of the cluster, this one included (static membership).
    pub nodes: Vec<NodeId>,
    /// Tokens per node on the ring.
    pub vnodes: u32,
    /// Replicas per key (the preference list's length).
    pub n: usize,
    /// Default quorums (a request may override each).
    pub w: usize,
    /// Default read quorum.
    pub r: usize,
    /// Default primary write quorum.
    pub pw: usize,
    /// Default primary read quorum.
    pub pr: usize,
    /// Default durable write quorum.
    pub dw: usize,
    /// Whether fallback nodes stand in for unreachable primaries (with
    /// hints) and count towards `w` and `r`.
    pub sloppy: bool,
    /// The conflict policy for plain values.
    pub policy: Policy,
    /// Read repair.
    pub read_repair: ReadRepair,
    /// How long a request waits for its quorum, in ms.
    pub request_timeout_ms: u64,
    /// How far ahead of the local physical clock a remote HLC timestamp
    /// may be before the clock refuses to follow it.
    pub max_drift_ms: u64,
    /// Sibling cap (siblings policy).
    pub sibling_limits: SiblingLimits,
    /// Hints held for other nodes, in bytes at most (a hint beyond it is
    /// refused: the fallback does not acknowledge the write).
    pub hint_max_bytes: usize,
    /// Hints older than this (wall clock) are dropped, in ms.
    pub hint_max_age_ms: u64,
    /// How often hints are offered to reachable owners, in ms.
    pub hint_interval_ms: u64,
    /// Hints sent per owner per interval, at most (the throttle).
    pub hint_batch: usize,
    /// How often an anti-entropy exchange starts, in ms (0: never).
    pub anti_entropy_interval_ms: u64,
    /// Segments per anti-entropy tree (a power of two, at least 32).
    pub tree_segments: u32,
    /// Bytes of key lists, and of states, one anti-entropy message carries
    /// at most (one key is always allowed): a larger difference is shipped
    /// over several exchanges.
    pub ae_max_bytes: usize,
    /// Requests this node coordinates or forwarded and waits on, at most;
    /// more are refused ([`ClientError::Busy`](crate::ClientError::Busy)).
    pub max_pending_requests: usize,
    /// The epoch a node with an empty data directory starts from. Writer
    /// ids are `<node>.<epoch>`: a node whose disk was wiped must not
    /// reuse one its old disk issued (a reused dot would make replicas
    /// drop a new value as already seen), so a driver passes a value
    /// above any epoch the node id used before: the wall clock in
    /// microseconds does (a node mints at most one epoch per new key it
    /// coordinates). 0 in tests.
    pub fresh_epoch: u64,
    #[doc(hidden)]
    pub sabotage: Option<Sabotage>,
}

impl Config {
    /// A configuration with the defaults: 64 vnodes, N = 3 (or every node
    /// if fewer), W = R = 2 (1 for N = 1), PW = PR = 0, DW = W, strict
    /// quorums (`sloppy = false`), siblings, background read repair,
    /// 1 s request timeout, 500 ms max drift; hints up to 64 MiB and 3 h,
    /// offered every 100 ms, 64 per owner at a time; anti-entropy every
    /// second over trees of 1024 segments, at most 1 MiB per message; at
    /// most 4096 requests pending.
    pub fn new(
        id: impl Into<NodeId>,
        nodes: impl IntoIterator<Item = impl Into<NodeId>>,
    ) -> Config {
        let nodes: Vec<NodeId> = nodes.into_iter().map(Into::into).collect();
        let n = nodes.len().clamp(1, 3);
        let q = n / 2 + 1;
        Config {
            id: id.into(),
            nodes,
            vnodes: 64,
            n,
            w: q,
            r: q,
            pw: 0,
            pr: 0,
            dw: q,
            sloppy: false,
            policy: Policy::Siblings,
            read_repair: ReadRepair::Background,
            request_timeout_ms: 1_000,
            max_drift_ms: 500,
            sibling_limits: SiblingLimits::default(),
            hint_max_bytes: 64 << 20,
            hint_max_age_ms: 3 * 3600 * 1000,
            hint_interval_ms: 100,
            hint_batch: 64,
            anti_entropy_interval_ms: 1_000,
            tree_segments: 1024,
            ae_max_bytes: 1 << 20,
            max_pending_requests: 4096,
            fresh_epoch: 0,
            sabotage: None,
        }
    }

    /// The maximum drift as a duration.
    pub fn max_drift(&self) -> Duration {
        Duration::from_millis(self.max_drift_ms)
    }

    /// The quorums of a request: its overrides, else the defaults, checked.
    ///
    /// # Errors
    ///
    /// A message naming the setting out of range.
    pub fn quorum(&self, q: &Quorum) -> Result<Quorum, String> {
        let out = Quorum {
            w: Some(q.w.unwrap_or(self.w)),
            r: Some(q.r.unwrap_or(self.r)),
            pw: Some(q.pw.unwrap_or(self.pw)),
            pr: Some(q.pr.unwrap_or(self.pr)),
            dw: Some(q.dw.unwrap_or(self.dw).min(q.w.unwrap_or(self.w))),
        };
        check_quorum(self.n, &out)?;
        Ok(out)
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.nodes.contains(&self.id) {
            return Err(ConfigError::NotAMember {
                id: self.id.clone(),
            });
        }
        if self.n == 0 || self.n > self.nodes.len() {
            return Err(ConfigError::Invalid {
                field: "n",
                reason: format!(
                    "{} replicas on {} nodes; n must be between 1 and the number of nodes",
                    self.n,
                    self.nodes.len()
                ),
            });
        }
        let defaults = Quorum {
            w: Some(self.w),
            r: Some(self.r),
            pw: Some(self.pw),
            pr: Some(self.pr),
            dw: Some(self.dw),
        };
        check_quorum(self.n, &defaults).map_err(|reason| ConfigError::Invalid {
            field: "w, r, pw, pr, dw",
            reason,
        })?;
        for (field, value) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("hint_interval_ms", self.hint_interval_ms),
            ("hint_batch", self.hint_batch as u64),
            ("vnodes", u64::from(self.vnodes)),
            ("ae_max_bytes", self.ae_max_bytes as u64),
            ("max_pending_requests", self.max_pending_requests as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "it is 0; it must be at least 1".into(),
                });
            }
        }
        if !self.tree_segments.is_power_of_two() || self.tree_segments < 32 {
            return Err(ConfigError::Invalid {
                field: "tree_segments",
                reason: format!(
                    "{} is not a power of two of at least 32",
                    self.tree_segments
                ),
            });
        }
        Ok(())
    }
}

fn check_quorum(n: usize, q: &Quorum) -> Result<(), String> {
    let (w, r, pw, pr, dw) = (
        q.w.unwrap_or(0),
        q.r.unwrap_or(0),
        q.pw.unwrap_or(0),
        q.pr.unwrap_or(0),
        q.dw.unwrap_or(0),
    );
    if w == 0 || w > n {
        return Err(format!("w = {w}; it must be between 1 and n = {n}"));
    }
    if r == 0 || r > n {
        return Err(format!("r = {r}; it must be between 1 and n = {n}"));
    }
    if pw > w {
        return Err(format!("pw = {pw} is more than w = {w}"));
    }
    if pr > r {
        return Err(format!("pr = {pr} is more than r = {r}"));
    }
    if dw > w {
        return Err(format!("dw = {dw} is more than w = {w}"));
    }
    Ok(())
}

/// A configuration the core cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `id` is not in `nodes`.
    #[error("node id {id} is not in `nodes`; list every node of the cluster, this one included")]
    NotAMember {
        /// The node's id.
        id: NodeId,
    },
    /// A setting is out of range.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The ring cannot be built or changed since the data was written.
    #[error(transparent)]
    Ring(#[from] crate::ring::RingError),
}
