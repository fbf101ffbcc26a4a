//! The node configuration file (`node.toml`).
//!
//! Every field has a default, so an empty file is a valid standalone node
//! listening on 127.0.0.1:7001. Unknown fields and invalid values are refused
//! with an error that names the field.
//!
//! ```toml
//! node_id = "n1"
//! cluster_id = "mimeo"
//! listen = "127.0.0.1:7001"
//! data_dir = "data/n1"
//! mode = "standalone"
//! metrics_listen = "127.0.0.1:9101"  # optional: Prometheus metrics over HTTP
//!
//! [tls]
//! dir = "certs"            # ca.pem, node-<node_id>.pem, node-<node_id>.key
//!
//! [storage]
//! fsync = "batch"          # always | batch | never
//! segment_bytes = 67108864
//! simulate_power_loss = false  # test mode: SIGKILL loses unsynced writes
//! inject_fsync_errors = false  # test mode: fsyncs fail (EIO) while <data_dir>/fail-fsync exists
//!
//! [limits]
//! max_frame_bytes = 4194304
//! max_key_bytes = 1024
//! max_value_bytes = 1048576
//! max_connections = 1024   # open at once, beyond which new ones are refused
//! max_connections_per_identity = 64   # per certificate (a client, admin or node)
//! ```
//!
//! A leader-follower node also lists its peers (every other node of the
//! cluster) and may set the replication knobs:
//!
//! ```toml
//! mode = "leader-follower"
//!
//! [replication]
//! acks = "quorum"          # async | semi-sync:K | quorum | all
//! reads = "leader"         # leader | follower (default read mode of gets)
//! heartbeat_ms = 50
//! election_timeout_min_ms = 300
//! election_timeout_max_ms = 600
//! probe_leader = true      # a refused probe of a silent leader: elect at once
//! write_timeout_ms = 2000
//! read_timeout_ms = 2000
//! snapshot_every = 100000  # applied entries between snapshots; 0 = never
//! snapshot_keep = 1000     # log entries kept behind a snapshot
//! snapshot_bytes = 67108864  # or after this many bytes of entries; 0 = by count only
//! bootstrap = false        # true only for the first start of a brand-new cluster
//!
//! [[replication.peers]]
//! id = "n2"
//! addr = "127.0.0.1:7002"          # where this node sends n2 peer traffic
//! client_addr = "127.0.0.1:7002"   # n2's client address, for redirects
//! ```
//!
//! A multi-leader node lists its peers the same way; every node takes
//! writes, and its knobs are:
//!
//! ```toml
//! mode = "multi-leader"
//!
//! [replication]
//! acks = "quorum"          # local | quorum | all (durable on this many nodes)
//! conflicts = "siblings"   # siblings (keep every concurrent value) | lww
//! max_drift_ms = 500       # a peer's clock further ahead is not followed
//! read_timeout_ms = 2000   # how long a session read waits for replication
//! ```
//!
//! A leaderless node lists its peers the same way; any node coordinates
//! any request, each key lives on `n` nodes of a consistent-hash ring
//! (`mimeo-leaderless`), and its knobs are:
//!
//! ```toml
//! mode = "leaderless"
//!
//! [replication]
//! n = 3                    # replicas per key (default: 3, or every node if fewer)
//! w = 2                    # replicas that must receive a write (default n/2+1)
//! r = 2                    # replicas that must answer a read (default n/2+1)
//! pw = 0                   # of the w, primary owners (not fallbacks)
//! pr = 0                   # of the r, primary owners
//! dw = 2                   # of the w, replicas holding it durably (default w)
//! sloppy = false           # true: fallbacks take writes for unreachable owners (hints)
//! read_repair = "background"  # background | blocking | off
//! vnodes = 64              # ring tokens per node (a change is refused at restart)
//! hint_max_bytes = 67108864
//! hint_max_age_ms = 10800000
//! hint_interval_ms = 100
//! hint_batch = 64
//! anti_entropy_interval_ms = 1000  # 0: no anti-entropy
//! conflicts = "siblings"   # siblings | lww
//! max_drift_ms = 500
//! ```
//!
//! W + R > N with `sloppy = false` means a read that begins after a write
//! was acknowledged returns it or a later version; it is not
//! linearizable, and with `sloppy = true` it no longer holds at all.
//!
//! `metrics_listen` is off unless set: when it is, the node serves
//! `GET /metrics` over plain HTTP on that TCP address in the Prometheus text
//! format (role, term, indexes, elections, per-follower lag, peer links,
//! storage). There is no TLS or authentication on it: bind it to loopback or
//! a private network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mimeo_storage::FsyncMode;
use serde::{Deserialize, Serialize};

/// The largest `storage.segment_bytes` allowed with
/// `simulate_power_loss = true` and `fsync = "never"`, where up to a whole
/// segment of unsynced writes is held in memory.
const MAX_POWER_LOSS_SEGMENT_BYTES: u64 = 1 << 30;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped field.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, naming the field and line.
        message: String,
    },
    /// A field has a value outside its allowed range.
    #[error("invalid config: `{field}` {problem}")]
    Invalid {
        /// The dotted name of the field, e.g. `storage.segment_bytes`.
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

/// How a node replicates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One node, no replication: linearizable by construction.
    #[default]
    Standalone,
    /// One leader per term streams its log to followers
    /// (`mimeo-leader-follower`); see the `[replication]` section.
    LeaderFollower,
    /// Every node takes writes and streams them to the others
    /// (`mimeo-multi-leader`); concurrent writes are resolved by
    /// `replication.conflicts`.
    MultiLeader,
    /// Any node coordinates any request; each key lives on `n` nodes of a
    /// consistent-hash ring, with per-request quorums
    /// (`mimeo-leaderless`).
    Leaderless,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Standalone => f.write_str("standalone"),
            Mode::LeaderFollower => f.write_str("leader-follower"),
            Mode::MultiLeader => f.write_str("multi-leader"),
            Mode::Leaderless => f.write_str("leaderless"),
        }
    }
}

impl From<Mode> for mimeo_wire::NodeMode {
    /// The mode as a node reports it in its status.
    fn from(mode: Mode) -> mimeo_wire::NodeMode {
        match mode {
            Mode::Standalone => mimeo_wire::NodeMode::Standalone,
            Mode::LeaderFollower => mimeo_wire::NodeMode::LeaderFollower,
            Mode::MultiLeader => mimeo_wire::NodeMode::MultiLeader,
            Mode::Leaderless => mimeo_wire::NodeMode::Leaderless,
        }
    }
}

/// The storage's fsync mode as a node reports it in its status.
pub(crate) fn fsync_policy(mode: FsyncMode) -> mimeo_wire::FsyncPolicy {
    match mode {
        FsyncMode::Always => mimeo_wire::FsyncPolicy::Always,
        FsyncMode::Batch => mimeo_wire::FsyncPolicy::Batch,
        FsyncMode::Never => mimeo_wire::FsyncPolicy::Never,
    }
}

/// A whole node configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's id; its certificate must be `node-<node_id>.pem`.
    pub node_id: String,
    /// The cluster id every client and peer must present in its hello.
    pub cluster_id: String,
    /// The UDP address the QUIC endpoint listens on.
    pub listen: SocketAddr,
    /// Where the storage engine keeps its files. A running node locks it
    /// (`LOCK`: a second node on it is refused, naming the holder's pid),
    /// and it records the mode, cluster and node that created it
    /// (`mimeo-node.json`): a config asking for others is refused.
    pub data_dir: PathBuf,
    /// The replication mode.
    pub mode: Mode,
    /// The TCP address of the Prometheus metrics endpoint (`GET /metrics`,
    /// plain HTTP, no authentication). Default: none, no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Certificates.
    pub tls: TlsSection,
    /// Storage engine settings.
    pub storage: StorageSection,
    /// Request and frame size limits.
    pub limits: LimitsSection,
    /// Replication settings (replicated modes only).
    pub replication: ReplicationSection,
}

/// Every knob of [`ReplicationSection`], as written in the section and as
/// named in errors (a test checks that none is missing).
const REPLICATION_FIELDS: [(&str, &str); 29] = [
    ("acks", "replication.acks"),
    ("reads", "replication.reads"),
    ("heartbeat_ms", "replication.heartbeat_ms"),
    (
        "election_timeout_min_ms",
        "replication.election_timeout_min_ms",
    ),
    (
        "election_timeout_max_ms",
        "replication.election_timeout_max_ms",
    ),
    ("probe_leader", "replication.probe_leader"),
    ("write_timeout_ms", "replication.write_timeout_ms"),
    ("read_timeout_ms", "replication.read_timeout_ms"),
    ("snapshot_every", "replication.snapshot_every"),
    ("snapshot_keep", "replication.snapshot_keep"),
    ("snapshot_bytes", "replication.snapshot_bytes"),
    ("bootstrap", "replication.bootstrap"),
    ("peers", "replication.peers"),
    ("conflicts", "replication.conflicts"),
    ("max_drift_ms", "replication.max_drift_ms"),
    ("n", "replication.n"),
    ("w", "replication.w"),
    ("r", "replication.r"),
    ("pw", "replication.pw"),
    ("pr", "replication.pr"),
    ("dw", "replication.dw"),
    ("sloppy", "replication.sloppy"),
    ("read_repair", "replication.read_repair"),
    ("vnodes", "replication.vnodes"),
    ("hint_max_bytes", "replication.hint_max_bytes"),
    ("hint_max_age_ms", "replication.hint_max_age_ms"),
    ("hint_interval_ms", "replication.hint_interval_ms"),
    ("hint_batch", "replication.hint_batch"),
    (
        "anti_entropy_interval_ms",
        "replication.anti_entropy_interval_ms",
    ),
];

/// The knobs only leaderless uses.
const LEADERLESS_ONLY: [&str; 14] = [
    "n",
    "w",
    "r",
    "pw",
    "pr",
    "dw",
    "sloppy",
    "read_repair",
    "vnodes",
    "hint_max_bytes",
    "hint_max_age_ms",
    "hint_interval_ms",
    "hint_batch",
    "anti_entropy_interval_ms",
];

/// The knobs only leader-follower uses: set in multi-leader mode, they are
/// refused rather than ignored (`bootstrap` is left out: `mimeo cluster`
/// sets it for every mode, and a multi-leader node ignores it).
const LEADER_FOLLOWER_ONLY: [&str; 9] = [
    "reads",
    "heartbeat_ms",
    "election_timeout_min_ms",
    "election_timeout_max_ms",
    "probe_leader",
    "write_timeout_ms",
    "snapshot_every",
    "snapshot_keep",
    "snapshot_bytes",
];

/// The knobs only multi-leader uses.
const MULTI_LEADER_ONLY: [&str; 2] = ["conflicts", "max_drift_ms"];

/// Replication settings of the replicated modes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    /// When a write is acknowledged: `async` (the leader has it durably),
    /// `semi-sync:K` (and K followers), `quorum` (a majority including the
    /// leader: never lost) or `all`.
    pub acks: String,
    /// The read mode of gets that do not ask for one: `leader`
    /// (linearizable) or `follower` (any replica, possibly stale).
    pub reads: String,
    /// How often a leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time between these
    /// two starts an election.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// Whether a follower probes a leader it has not heard from for one
    /// and a half heartbeats, and elects a new one at once (within a
    /// heartbeat) when the leader's host refuses the probe because no
    /// process holds its port: a crashed leader is replaced in about
    /// 100 ms instead of the election timeout. A paused or partitioned
    /// leader refuses nothing and is replaced after the timeout. Default
    /// on.
    pub probe_leader: bool,
    /// How long a write waits for its acknowledgement before the client is
    /// told the outcome is unknown.
    pub write_timeout_ms: u64,
    /// How long a read waits (for leadership confirmation, or for a
    /// replica to catch up to a session's position).
    pub read_timeout_ms: u64,
    /// Take a snapshot of the applied key-value state every this many
    /// applied entries (0: never, and the log grows without bound). Once a
    /// snapshot is durable the log before it is dropped, in memory and on
    /// disk (whole storage segments), and a follower that needs dropped
    /// entries is sent the snapshot instead. At least 10; default 100,000
    /// (a snapshot writes the whole state, so a small value costs more I/O
    /// than the log it saves).
    pub snapshot_every: u64,
    /// Log entries kept at and below a snapshot's index, so that a follower
    /// slightly behind catches up from the log rather than the whole
    /// snapshot. At most 1,000,000.
    pub snapshot_keep: u64,
    /// Take a snapshot also once this many bytes of log entries have been
    /// applied since the last one (0: by count only). With large values
    /// this is what bounds the log a node holds in memory and replays at
    /// a restart: about this much, plus a kept tail of at most a quarter
    /// of it. 0 or at least 1 MiB; default 64 MiB.
    pub snapshot_bytes: u64,
    /// Whether this node, started with an empty data directory, founds a
    /// new cluster and votes at once. Without it (the default), a node
    /// with an empty data directory may be one whose data was lost: it
    /// starts as a learner that neither votes nor counts towards any
    /// quorum until it has caught up from the cluster's leader, then
    /// records that it votes. Set it for the first start of every node of
    /// a brand-new cluster only (`mimeo cluster` does, for directories it
    /// creates); never for a node whose data was removed. Ignored when the
    /// data directory holds state.
    pub bootstrap: bool,
    /// Every other node of the cluster.
    pub peers: Vec<PeerConfig>,
    /// Multi-leader only: how concurrent writes to one value are resolved,
    /// the same on every node. `siblings` (the default) keeps every
    /// concurrent value (reads return them all, with a context to pass
    /// back on the next write): no acknowledged write is lost. `lww`
    /// keeps the write with the largest hybrid-logical-clock timestamp
    /// (node id breaking ties) and silently drops the others; under clock
    /// skew that can be the earlier write in real time.
    pub conflicts: String,
    /// Multi-leader only: how far ahead of this node's clock a peer's
    /// timestamp may be before the clock refuses to follow it (the write
    /// is applied anyway, and the refusal counted).
    pub max_drift_ms: u64,
    /// Leaderless only: replicas per key (default 3, or every node if
    /// fewer).
    pub n: Option<usize>,
    /// Leaderless only: replicas that must have received a write before it
    /// is acknowledged (default `n / 2 + 1`); a client may override it per
    /// request.
    pub w: Option<usize>,
    /// Leaderless only: replicas whose answers a read merges (default
    /// `n / 2 + 1`); per request too.
    pub r: Option<usize>,
    /// Leaderless only: of the `w`, how many must be primary owners
    /// (default 0).
    pub pw: Option<usize>,
    /// Leaderless only: of the `r`, how many must be primary owners
    /// (default 0).
    pub pr: Option<usize>,
    /// Leaderless only: of the `w`, how many must hold the write durably
    /// (default `w`).
    pub dw: Option<usize>,
    /// Leaderless only: whether the next reachable nodes of the ring take
    /// writes (and answer reads) for unreachable primary owners, keeping
    /// hints to hand the writes over later. Keeps requests available, and
    /// voids what W + R > N promises.
    pub sloppy: bool,
    /// Leaderless only: `background` (a read that saw replicas disagree
    /// writes the merge back after replying), `blocking` (before
    /// replying) or `off` (anti-entropy alone converges replicas).
    pub read_repair: String,
    /// Leaderless only: ring tokens per node. The ring is fixed once data
    /// is written: a changed node list or `vnodes` is refused at start.
    pub vnodes: u32,
    /// Leaderless only: bytes of hints a node holds at most; hinted
    /// writes beyond it are refused.
    pub hint_max_bytes: u64,
    /// Leaderless only: a hint older than this is dropped (counted as
    /// expired; anti-entropy repairs the owner instead).
    pub hint_max_age_ms: u64,
    /// Leaderless only: how often hints are offered to reachable owners.
    pub hint_interval_ms: u64,
    /// Leaderless only: hints offered to one owner at a time.
    pub hint_batch: usize,
    /// Leaderless only: how often a node runs an anti-entropy exchange
    /// with one of its replica peers (0: never).
    pub anti_entropy_interval_ms: u64,
}

/// Another node of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id (its certificate is `node-<id>.pem`).
    pub id: String,
    /// Where this node sends it replication traffic (its listen address,
    /// or a proxy in front of it).
    pub addr: SocketAddr,
    /// Its client address, given to clients that this node redirects to
    /// it. Default: `addr`.
    #[serde(default)]
    pub client_addr: Option<SocketAddr>,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            acks: "quorum".into(),
            reads: "leader".into(),
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            probe_leader: true,
            write_timeout_ms: 2_000,
            read_timeout_ms: 2_000,
            snapshot_every: 100_000,
            snapshot_keep: 1_000,
            snapshot_bytes: 64 << 20,
            bootstrap: false,
            peers: Vec::new(),
            conflicts: "siblings".into(),
            max_drift_ms: 500,
            n: None,
            w: None,
            r: None,
            pw: None,
            pr: None,
            dw: None,
            sloppy: false,
            read_repair: "background".into(),
            vnodes: 64,
            hint_max_bytes: 64 << 20,
            hint_max_age_ms: 3 * 3600 * 1000,
            hint_interval_ms: 100,
            hint_batch: 64,
            anti_entropy_interval_ms: 1_000,
        }
    }
}

impl ReplicationSection {
    /// The ack mode named by `acks`.
    pub fn ack_mode(&self) -> Result<mimeo_leader_follower::AckMode, ConfigError> {
        use mimeo_leader_follower::AckMode;
        let invalid = |problem: String| ConfigError::Invalid {
            field: "replication.acks",
            problem,
        };
        match self.acks.as_str() {
            "async" => Ok(AckMode::Async),
            "quorum" => Ok(AckMode::Quorum),
            "all" => Ok(AckMode::All),
            other => match other.strip_prefix("semi-sync:") {
                Some(k) => {
                    let k: usize = k.parse().map_err(|_| {
                        invalid(format!("{other:?}: K in semi-sync:K must be a number"))
                    })?;
                    if k == 0 || k > self.peers.len() {
                        return Err(invalid(format!(
                            "{other:?}: K must be between 1 and the number of followers ({})",
                            self.peers.len()
                        )));
                    }
                    Ok(AckMode::SemiSync(k))
                }
                None => Err(invalid(format!(
                    "{other:?} is not one of async, semi-sync:K, quorum, all"
                ))),
            },
        }
    }

    /// Multi-leader: the ack mode named by `acks` (`local`, `quorum` or
    /// `all`).
    pub fn multi_leader_acks(&self) -> Result<mimeo_multi_leader::AckMode, ConfigError> {
        use mimeo_multi_leader::AckMode;
        match self.acks.as_str() {
            "local" => Ok(AckMode::Local),
            "quorum" => Ok(AckMode::Quorum),
            "all" => Ok(AckMode::All),
            other => Err(ConfigError::Invalid {
                field: "replication.acks",
                problem: format!(
                    "{other:?} is not one of local, quorum, all (mode \"multi-leader\": every \
                     node is an origin; `local` acknowledges once the node that took the write \
                     holds it durably)"
                ),
            }),
        }
    }

    /// Multi-leader: the conflict policy named by `conflicts`.
    pub fn conflict_policy(&self) -> Result<mimeo_multi_leader::Policy, ConfigError> {
        use mimeo_multi_leader::Policy;
        match self.conflicts.as_str() {
            "siblings" => Ok(Policy::Siblings),
            "lww" => Ok(Policy::Lww),
            other => Err(ConfigError::Invalid {
                field: "replication.conflicts",
                problem: format!("{other:?} is not one of lww, siblings"),
            }),
        }
    }

    /// Leaderless: the core's configuration for node `node_id` of a
    /// cluster whose other nodes are the peers, checked.
    pub fn leaderless_config(
        &self,
        node_id: &str,
    ) -> Result<mimeo_leaderless::Config, ConfigError> {
        use mimeo_leaderless::{Policy, ReadRepair};
        let nodes = self
            .peers
            .iter()
            .map(|p| p.id.clone())
            .chain(std::iter::once(node_id.to_string()));
        let mut config = mimeo_leaderless::Config::new(node_id.to_string(), nodes);
        if let Some(n) = self.n {
            config.n = n;
            let q = n / 2 + 1;
            config.w = q;
            config.r = q;
            config.dw = q;
        }
        if let Some(w) = self.w {
            config.w = w;
            config.dw = w;
        }
        config.r = self.r.unwrap_or(config.r);
        config.pw = self.pw.unwrap_or(0);
        config.pr = self.pr.unwrap_or(0);
        config.dw = self.dw.unwrap_or(config.dw);
        config.sloppy = self.sloppy;
        config.read_repair = match self.read_repair.as_str() {
            "background" => ReadRepair::Background,
            "blocking" => ReadRepair::Blocking,
            "off" => ReadRepair::Off,
            other => {
                return Err(ConfigError::Invalid {
                    field: "replication.read_repair",
                    problem: format!("{other:?} is not one of background, blocking, off"),
                })
            }
        };
        config.policy = match self.conflict_policy()? {
            mimeo_multi_leader::Policy::Lww => Policy::Lww,
            _ => Policy::Siblings,
        };
        config.vnodes = self.vnodes;
        config.hint_max_bytes = usize::try_from(self.hint_max_bytes).unwrap_or(usize::MAX);
        config.hint_max_age_ms = self.hint_max_age_ms;
        config.hint_interval_ms = self.hint_interval_ms;
        config.hint_batch = self.hint_batch;
        config.anti_entropy_interval_ms = self.anti_entropy_interval_ms;
        config.max_drift_ms = self.max_drift_ms;
        config.validate().map_err(|e| ConfigError::Invalid {
            field: "replication",
            problem: format!("(mode \"leaderless\") {e}"),
        })?;
        Ok(config)
    }

    fn validate_leaderless(&self, node_id: &str) -> Result<(), ConfigError> {
        if let Some(field) = self
            .first_set_of(&LEADER_FOLLOWER_ONLY)
            .or_else(|| self.first_set_of(&["acks"]))
        {
            return Err(ConfigError::Invalid {
                field,
                problem: "is not a leaderless setting (quorums are n, w, r, pw, pr and dw, \
                          per request or in [replication]): remove it"
                    .into(),
            });
        }
        if self.max_drift_ms == 0 {
            return Err(ConfigError::Invalid {
                field: "replication.max_drift_ms",
                problem: "must be at least 1".into(),
            });
        }
        self.leaderless_config(node_id).map(|_| ())
    }

    /// The read mode named by `reads`.
    pub fn read_mode(&self) -> Result<mimeo_leader_follower::ReadMode, ConfigError> {
        use mimeo_leader_follower::ReadMode;
        match self.reads.as_str() {
            "leader" => Ok(ReadMode::Leader),
            "follower" => Ok(ReadMode::Follower {
                max_staleness_ms: None,
            }),
            other => Err(ConfigError::Invalid {
                field: "replication.reads",
                problem: format!(
                    "{other:?} is not one of leader, follower (session reads are asked for per \
                     request by clients that carry a position)"
                ),
            }),
        }
    }

    /// The first knob set to something other than its default, as
    /// `replication.<name>`.
    fn first_set_field(&self) -> Option<&'static str> {
        self.first_set_of(&REPLICATION_FIELDS.map(|(name, _)| name))
    }

    /// The first of `names` set to something other than its default, as
    /// `replication.<name>`.
    fn first_set_of(&self, names: &[&str]) -> Option<&'static str> {
        let table = |section: &ReplicationSection| {
            toml::Value::try_from(section)
                .ok()
                .and_then(|v| v.as_table().cloned())
                .unwrap_or_default()
        };
        let (set, default) = (table(self), table(&ReplicationSection::default()));
        REPLICATION_FIELDS
            .iter()
            .filter(|(name, _)| names.contains(name))
            .find(|(name, _)| set.get(*name) != default.get(*name))
            .map(|(_, field)| *field)
    }

    fn validate_multi_leader(&self) -> Result<(), ConfigError> {
        if let Some(field) = self.first_set_of(&LEADER_FOLLOWER_ONLY) {
            return Err(ConfigError::Invalid {
                field,
                problem: "is a leader-follower setting; mode \"multi-leader\" does not use it \
                          (its reads are always local, with session reads per request): remove it"
                    .into(),
            });
        }
        self.multi_leader_acks()?;
        self.conflict_policy()?;
        if self.max_drift_ms == 0 {
            return Err(ConfigError::Invalid {
                field: "replication.max_drift_ms",
                problem: "must be at least 1".into(),
            });
        }
        if self.read_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                field: "replication.read_timeout_ms",
                problem: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    fn validate(&self, mode: Mode, node_id: &str) -> Result<(), ConfigError> {
        let invalid = |field, problem: String| Err(ConfigError::Invalid { field, problem });
        if mode == Mode::Standalone {
            if !self.peers.is_empty() {
                return invalid(
                    "replication.peers",
                    "is set but mode is \"standalone\": set mode = \"leader-follower\" or remove the peers".into(),
                );
            }
            // A standalone node does not replicate: a knob set here would be
            // ignored without a word (and a typo in it never noticed).
            if let Some(field) = self.first_set_field() {
                return invalid(
                    field,
                    "is set but mode is \"standalone\", which does not replicate: set mode = \
                     \"leader-follower\" or remove the [replication] section"
                        .into(),
                );
            }
            return Ok(());
        }
        if self.peers.is_empty() {
            return invalid(
                "replication.peers",
                format!("must list the other nodes of the cluster for mode \"{mode}\""),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for peer in &self.peers {
            if peer.id == node_id {
                return invalid(
                    "replication.peers",
                    format!("lists this node ({node_id}) itself; list only the others"),
                );
            }
            if !seen.insert(peer.id.as_str()) {
                return invalid("replication.peers", format!("lists {} twice", peer.id));
            }
        }
        if mode == Mode::Leaderless {
            return self.validate_leaderless(node_id);
        }
        if let Some(field) = self.first_set_of(&LEADERLESS_ONLY) {
            return invalid(
                field,
                format!(
                    "is a leaderless setting; mode \"{mode}\" does not use it: remove it, or \
                     set mode = \"leaderless\""
                ),
            );
        }
        if mode == Mode::MultiLeader {
            return self.validate_multi_leader();
        }
        if let Some(field) = self.first_set_of(&MULTI_LEADER_ONLY) {
            return invalid(
                field,
                format!(
                    "is a multi-leader setting; mode \"{mode}\" has one leader, which orders \
                     every write: remove it, or set mode = \"multi-leader\""
                ),
            );
        }
        self.ack_mode()?;
        self.read_mode()?;
        if self.heartbeat_ms == 0 {
            return invalid("replication.heartbeat_ms", "must be at least 1".into());
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return invalid(
                "replication.election_timeout_min_ms",
                format!(
                    "must exceed heartbeat_ms ({}) and be below election_timeout_max_ms ({})",
                    self.heartbeat_ms, self.election_timeout_max_ms
                ),
            );
        }
        if self.write_timeout_ms == 0 || self.read_timeout_ms == 0 {
            return invalid(
                "replication.write_timeout_ms",
                "write_timeout_ms and read_timeout_ms must be at least 1".into(),
            );
        }
        if (1..10).contains(&self.snapshot_every) {
            return invalid(
                "replication.snapshot_every",
                format!(
                    "{} would snapshot the whole state every few writes: use 0 (never) or at \
                     least 10",
                    self.snapshot_every
                ),
            );
        }
        if (1..1 << 20).contains(&self.snapshot_bytes) {
            return invalid(
                "replication.snapshot_bytes",
                format!(
                    "{} would snapshot the whole state every few writes: use 0 (by count \
                     only) or at least 1048576 (1 MiB)",
                    self.snapshot_bytes
                ),
            );
        }
        if self.snapshot_keep > 1_000_000 {
            return invalid(
                "replication.snapshot_keep",
                format!(
                    "{} entries would stay in memory behind every snapshot: use at most 1000000",
                    self.snapshot_keep
                ),
            );
        }
        Ok(())
    }
}

/// Where the node's certificates are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Directory written by `mimeo certs init`.
    pub dir: PathBuf,
}

/// Storage engine settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// When writes reach the disk: `always` (fsync per write), `batch`
    /// (group commit: one fsync covers concurrent writers) or `never`.
    pub fsync: FsyncMode,
    /// Size at which the log rolls over to a new segment file.
    pub segment_bytes: u64,
    /// Test mode, off by default: keep every byte not yet fsynced in
    /// process memory ([`mimeo_storage::PowerLossBackend`]), so that killing
    /// the node with SIGKILL loses exactly what a power cut would. A plain
    /// SIGKILL loses nothing that reached the OS page cache, so it cannot
    /// show an fsync bug; the harness's `power-loss` fault turns this on.
    /// Only file contents are held back (creating, renaming and removing
    /// files takes effect at once), and a clean shutdown (SIGTERM, SIGINT,
    /// admin shutdown) still syncs everything. Under `fsync = "never"` the node holds
    /// up to about `segment_bytes` of unsynced writes in memory, until the
    /// segment is closed. Never use it in production.
    pub simulate_power_loss: bool,
    /// Test mode, off by default: while a file named `fail-fsync` exists in
    /// the data directory, every fsync of a log segment fails with `EIO`
    /// ([`mimeo_storage::FsyncFaultBackend`]), so that tests can watch the
    /// node meet a failing disk (it stops, and its next start drops what
    /// was never fsynced). Never use it in production.
    pub inject_fsync_errors: bool,
    /// Off by default: accept `fsync = "never"` in a replicated mode whose
    /// acknowledgement promises more than one durable copy (`quorum`,
    /// `all`, `semi-sync:K`), knowing that a power cut of those nodes loses
    /// acknowledged writes anyway (benchmarks, tests). Logged at start-up.
    pub allow_unsynced_acks: bool,
}

/// Limits that protect the node from oversized input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest frame accepted on any stream.
    pub max_frame_bytes: usize,
    /// Largest key accepted.
    pub max_key_bytes: usize,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// How long the node lets a single request take before answering with
    /// a timeout (outcome unknown).
    pub request_timeout_ms: u64,
    /// Connections open at once (any certificate); beyond it, new ones are
    /// refused before their TLS handshake.
    pub max_connections: usize,
    /// Connections open at once with one certificate; beyond it, a new one
    /// is closed after its handshake, with the reason.
    pub max_connections_per_identity: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: "n1".into(),
            cluster_id: "mimeo".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            data_dir: PathBuf::from("data/n1"),
            mode: Mode::Standalone,
            metrics_listen: None,
            tls: TlsSection::default(),
            storage: StorageSection::default(),
            limits: LimitsSection::default(),
            replication: ReplicationSection::default(),
        }
    }
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            dir: PathBuf::from("certs"),
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            fsync: FsyncMode::Batch,
            segment_bytes: 64 * 1024 * 1024,
            simulate_power_loss: false,
            inject_fsync_errors: false,
            allow_unsynced_acks: false,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_frame_bytes: mimeo_wire::DEFAULT_MAX_FRAME,
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            request_timeout_ms: 10_000,
            max_connections: 1024,
            max_connections_per_identity: 64,
        }
    }
}

impl NodeConfig {
    /// Reads, parses and validates a config file. Relative paths in the
    /// file are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = NodeConfig::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        if let Some(base) = path.parent() {
            config.data_dir = base.join(&config.data_dir);
            config.tls.dir = base.join(&config.tls.dir);
        }
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks value ranges that the types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.to_string(),
            })
        };
        if self.node_id.is_empty()
            || !self
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid(
                "node_id",
                "must be non-empty and use only letters, digits, '-' and '_'",
            );
        }
        if self.cluster_id.is_empty() {
            return invalid("cluster_id", "must not be empty");
        }
        if self.metrics_listen.is_some_and(|addr| addr.port() == 0) {
            return invalid(
                "metrics_listen",
                "has port 0, which picks a random port Prometheus cannot be pointed at: \
                 give a fixed port, e.g. \"127.0.0.1:9101\", or remove the field",
            );
        }
        if self.storage.segment_bytes < 4096 {
            return invalid("storage.segment_bytes", "must be at least 4096");
        }
        if self.storage.simulate_power_loss
            && self.storage.fsync == FsyncMode::Never
            && self.storage.segment_bytes > MAX_POWER_LOSS_SEGMENT_BYTES
        {
            return invalid(
                "storage.simulate_power_loss",
                "with fsync = \"never\" keeps up to one segment of unsynced writes in memory: \
                 set storage.segment_bytes to at most 1073741824 (1 GiB)",
            );
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_identity == 0 {
            return invalid(
                if self.limits.max_connections == 0 {
                    "limits.max_connections"
                } else {
                    "limits.max_connections_per_identity"
                },
                "must be at least 1",
            );
        }
        if self.limits.max_frame_bytes < 1024 {
            return invalid("limits.max_frame_bytes", "must be at least 1024");
        }
        if self.limits.max_key_bytes == 0 {
            return invalid("limits.max_key_bytes", "must be at least 1");
        }
        if self.limits.max_key_bytes + self.limits.max_value_bytes + 64
            > self.limits.max_frame_bytes
        {
            return invalid(
                "limits.max_value_bytes",
                "plus max_key_bytes must fit in limits.max_frame_bytes (with 64 bytes of framing)",
            );
        }
        if self.mode == Mode::LeaderFollower {
            // A write is replicated in an append: the largest one must fit
            // a peer frame with the append's header, or it could never
            // reach the followers.
            let needed = mimeo_leader_follower::single_put_append_bytes(
                self.limits.max_key_bytes,
                self.limits.max_value_bytes,
            );
            let room = mimeo_wire::max_peer_payload(self.limits.max_frame_bytes, &self.node_id);
            if needed > room {
                return invalid(
                    "limits.max_value_bytes",
                    &format!(
                        "({}) plus max_key_bytes ({}) needs {needed} bytes in a replication \
                         message, but limits.max_frame_bytes ({}) leaves {room}: lower \
                         max_value_bytes or raise max_frame_bytes",
                        self.limits.max_value_bytes,
                        self.limits.max_key_bytes,
                        self.limits.max_frame_bytes
                    ),
                );
            }
        }
        if self.limits.max_key_bytes + self.limits.max_value_bytes + 64
            > mimeo_storage::MAX_RECORD_BYTES
        {
            return invalid(
                "limits.max_value_bytes",
                &format!(
                    "plus max_key_bytes must fit a storage record ({} bytes, with 64 of \
                     framing): lower max_value_bytes",
                    mimeo_storage::MAX_RECORD_BYTES
                ),
            );
        }
        if self.limits.request_timeout_ms == 0 {
            return invalid("limits.request_timeout_ms", "must be at least 1");
        }
        self.replication.validate(self.mode, &self.node_id)?;
        let unsynced_acks_promise = match self.mode {
            Mode::Standalone => false,
            Mode::LeaderFollower => self.replication.acks != "async",
            Mode::MultiLeader => self.replication.acks != "local",
            // dw of the w replicas hold an acknowledged write durably.
            Mode::Leaderless => true,
        };
        if unsynced_acks_promise
            && self.storage.fsync == FsyncMode::Never
            && !self.storage.allow_unsynced_acks
        {
            return invalid(
                "storage.fsync",
                &format!(
                    "is \"never\", but replication.acks = \"{}\" promises that an \
                     acknowledged write survives a crash of a minority of the nodes, and \
                     without fsync a power cut of every node holding it loses it: use \
                     fsync = \"batch\" (group commit), or set storage.allow_unsynced_acks = \
                     true to accept the loss (benchmarks, tests)",
                    self.replication.acks
                ),
            );
        }
        Ok(())
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.request_timeout_ms)
    }

    /// The config as TOML text (for `mimeo cluster` and the harness).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a NodeConfig always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_replication_knob_is_named_for_errors() {
        let default = toml::Value::try_from(ReplicationSection::default()).unwrap();
        let mut keys: Vec<&str> = default
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // An empty array of tables is not written, nor are unset options.
        keys.push("peers");
        keys.extend(["n", "w", "r", "pw", "pr", "dw"]);
        keys.sort_unstable();
        keys.dedup();
        let mut named: Vec<&str> = REPLICATION_FIELDS.iter().map(|(k, _)| *k).collect();
        named.sort_unstable();
        assert_eq!(keys, named);
        for (key, field) in REPLICATION_FIELDS {
            assert_eq!(field, format!("replication.{key}"));
        }
    }

    #[test]
    fn settings_that_contradict_their_own_promises_are_refused() {
        let refused = |text: &str, field: &str, words: &str| match NodeConfig::parse(text) {
            Err(ConfigError::Invalid { field: f, problem }) => {
                assert_eq!(f, field, "{text}: {problem}");
                assert!(problem.contains(words), "{text}: {problem}");
            }
            other => panic!("{text}: {other:?}"),
        };
        // A standalone node ignores replication knobs: refused, not ignored.
        refused(
            "[replication]\nacks = \"bogus\"\n",
            "replication.acks",
            "does not replicate",
        );
        refused(
            "[replication]\nheartbeat_ms = 10\n",
            "replication.heartbeat_ms",
            "does not replicate",
        );
        // Quorum acks without fsync promise what a power cut breaks.
        let lf = "node_id = \"n1\"\nmode = \"leader-follower\"\n\
                  [[replication.peers]]\nid = \"n2\"\naddr = \"127.0.0.1:7002\"\n";
        refused(
            &format!("{lf}[storage]\nfsync = \"never\"\n"),
            "storage.fsync",
            "allow_unsynced_acks",
        );
        // ...unless asked for in so many words, and async promises no copy.
        NodeConfig::parse(&format!(
            "{lf}[storage]\nfsync = \"never\"\nallow_unsynced_acks = true\n"
        ))
        .unwrap();
        let lf_async = lf.replace(
            "[[replication.peers]]",
            "[replication]\nacks = \"async\"\n[[replication.peers]]",
        );
        NodeConfig::parse(&format!("{lf_async}[storage]\nfsync = \"never\"\n")).unwrap();
        // A value larger than a storage record can hold.
        refused(
            "[limits]\nmax_frame_bytes = 134217728\nmax_value_bytes = 100000000\n",
            "limits.max_value_bytes",
            "storage record",
        );
        // The defaults are fine.
        NodeConfig::parse("").unwrap();
    }

    #[test]
    fn the_largest_value_must_fit_a_replication_message() {
        let lf = |limits: &str| {
            NodeConfig::parse(&format!(
                "mode = \"leader-follower\"\n[limits]\n{limits}\n[[replication.peers]]\n\
                 id = \"n2\"\naddr = \"127.0.0.1:7002\"\n"
            ))
        };
        // The defaults (1 MiB values in 4 MiB frames) fit.
        lf("").unwrap();
        // A value that fits a client frame but not an append around it.
        let err = lf("max_frame_bytes = 100000\nmax_key_bytes = 100\nmax_value_bytes = 99800")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.max_value_bytes") && err.contains("replication message"),
            "{err}"
        );
        lf("max_frame_bytes = 100000\nmax_key_bytes = 100\nmax_value_bytes = 99000").unwrap();
    }

    #[test]
    fn empty_file_is_a_valid_default_node() {
        let config = NodeConfig::parse("").unwrap();
        assert_eq!(config, NodeConfig::default());
    }

    #[test]
    fn round_trips_through_toml() {
        let mut config = NodeConfig {
            node_id: "n7".into(),
            ..NodeConfig::default()
        };
        config.storage.fsync = FsyncMode::Always;
        assert_eq!(NodeConfig::parse(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = NodeConfig::parse("[storage]\nfsycn = \"always\"\n").unwrap_err();
        assert!(err.to_string().contains("fsycn"), "{err}");
    }

    #[test]
    fn bad_fsync_value_is_named() {
        let err = NodeConfig::parse("[storage]\nfsync = \"sometimes\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sometimes") || text.contains("fsync"),
            "{text}"
        );
    }

    #[test]
    fn simulate_power_loss_is_off_by_default_and_parsed() {
        assert!(!NodeConfig::default().storage.simulate_power_loss);
        let config =
            NodeConfig::parse("[storage]\nfsync = \"never\"\nsimulate_power_loss = true\n")
                .unwrap();
        assert!(config.storage.simulate_power_loss);
        assert_eq!(NodeConfig::parse(&config.to_toml()).unwrap(), config);

        let err = NodeConfig::parse("[storage]\nsimulate_power_loss = \"yes\"\n").unwrap_err();
        assert!(err.to_string().contains("simulate_power_loss"), "{err}");
    }

    #[test]
    fn simulate_power_loss_under_never_refuses_huge_segments() {
        let text = |fsync: &str, power_loss: bool| {
            format!(
                "[storage]\nfsync = \"{fsync}\"\nsegment_bytes = {}\nsimulate_power_loss = {power_loss}\n",
                MAX_POWER_LOSS_SEGMENT_BYTES + 1
            )
        };
        let err = NodeConfig::parse(&text("never", true)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("storage.simulate_power_loss"), "{message}");
        assert!(message.contains("segment_bytes"), "{message}");
        // Only that combination holds unsynced writes for a whole segment.
        NodeConfig::parse(&text("never", false)).unwrap();
        NodeConfig::parse(&text("batch", true)).unwrap();
        let mut config = NodeConfig::parse(&text("never", false)).unwrap();
        config.storage.simulate_power_loss = true;
        config.storage.segment_bytes = MAX_POWER_LOSS_SEGMENT_BYTES;
        config.validate().unwrap();
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_validated() {
        assert_eq!(NodeConfig::default().metrics_listen, None);
        let config = NodeConfig::parse("metrics_listen = \"127.0.0.1:9101\"\n").unwrap();
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9101".parse().unwrap())
        );
        assert_eq!(NodeConfig::parse(&config.to_toml()).unwrap(), config);

        let err = NodeConfig::parse("metrics_listen = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(err.to_string().contains("metrics_listen"), "{err}");
        let err = NodeConfig::parse("metrics_listen = \"localhost\"\n").unwrap_err();
        assert!(err.to_string().contains("metrics_listen"), "{err}");
    }

    #[test]
    fn out_of_range_value_names_the_field() {
        let err = NodeConfig::parse("[storage]\nsegment_bytes = 10\n").unwrap_err();
        assert!(err.to_string().contains("storage.segment_bytes"), "{err}");
        let err = NodeConfig::parse("node_id = \"n 1\"\n").unwrap_err();
        assert!(err.to_string().contains("node_id"), "{err}");
    }

    #[test]
    fn snapshot_settings_are_validated() {
        let text = |every: u64, keep: u64| {
            format!(
                "mode = \"leader-follower\"\n[replication]\nsnapshot_every = {every}\n\
                 snapshot_keep = {keep}\n[[replication.peers]]\nid = \"n2\"\n\
                 addr = \"127.0.0.1:7002\"\n"
            )
        };
        let config = NodeConfig::parse(&text(50, 10)).unwrap();
        assert_eq!(config.replication.snapshot_every, 50);
        assert_eq!(config.replication.snapshot_keep, 10);
        NodeConfig::parse(&text(0, 0)).unwrap();
        let err = NodeConfig::parse(&text(3, 10)).unwrap_err().to_string();
        assert!(err.contains("replication.snapshot_every"), "{err}");
        let err = NodeConfig::parse(&text(50, 2_000_000))
            .unwrap_err()
            .to_string();
        assert!(err.contains("replication.snapshot_keep"), "{err}");
        assert_eq!(ReplicationSection::default().snapshot_every, 100_000);
        let bytes = |value: u64| {
            NodeConfig::parse(&format!(
                "mode = \"leader-follower\"\n[replication]\nsnapshot_bytes = {value}\n\
                 [[replication.peers]]\nid = \"n2\"\naddr = \"127.0.0.1:7002\"\n"
            ))
        };
        let err = bytes(1000).unwrap_err().to_string();
        assert!(err.contains("replication.snapshot_bytes"), "{err}");
        bytes(0).unwrap();
        assert_eq!(bytes(1 << 20).unwrap().replication.snapshot_bytes, 1 << 20);
    }
}
