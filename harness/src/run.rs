//! `mimeo-harness run`: one test run from start to verdict.
//!
//! 1. locate (or build) `mimeo`, write certificates and node configs into
//!    `<store>/<run-id>/` (for a replicated mode, first start the fault
//!    network the nodes' peer traffic goes through), start the nodes and
//!    wait (bounded) until they serve;
//! 2. run the workload's client workers until the time limit while the
//!    nemesis injects faults, with a progress line on the terminal;
//! 3. heal everything, wait for the nodes, do the workload's final reads
//!    (leaderless: every replica's own copy of every touched key, in
//!    rounds until they agree; see [`local_reads`](crate::local_reads));
//! 4. stop the nodes, close `history.jsonl.zst` (written as the run goes:
//!    see [`Recorder`]; and, for a replicated mode, write `net-stats.json`:
//!    what each directed link forwarded and dropped), check the history,
//!    write `results.json` and `report.html`.
//!
//! The seed of every random choice is random unless `--seed` gives one; it
//! is printed at the start and kept in `config.json`, so any run can be
//! replayed. A run in which no client operation succeeded is a failed run
//! (the cluster served nothing), never a valid one.
//!
//! Whatever happens (an error, a panic, Ctrl-C), no node process outlives
//! the run: the cluster kills its children when dropped.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::Mutex;

use mimeo_node::config::Mode;
use mimeo_storage::FsyncMode;

use crate::check::{CheckResult, Verdict};
use crate::cluster::{is_replicated, locate_binary, Cluster, ClusterSpec};
use crate::local_reads::final_local_reads;
use crate::nemesis::{Fault, Injected, Nemesis, Order, RESTART_BOUND};
use crate::net::FaultNet;
use crate::recorder::Recorder;
use crate::workload::{
    await_convergence, final_set_reads, final_versioned_reads, run_worker, Reads, Shared, Workload,
    WorkloadSpec,
};

/// Every knob of a run; written to `config.json`.
#[derive(Clone, Debug, Serialize, clap::Args)]
pub struct RunArgs {
    /// Replication mode of the nodes (passed to their configs). Any mode
    /// but `standalone` runs the nodes' peer traffic through the fault
    /// network.
    #[arg(long, default_value = "standalone")]
    pub mode: String,
    /// Write acknowledgement of a replicated mode: `async`, `semi-sync:K`
    /// (K followers), `quorum` or `all`; written as `replication.acks`.
    /// Default: the node's own.
    #[arg(long, value_name = "async|semi-sync:K|quorum|all")]
    pub acks: Option<String>,
    /// How a replicated mode serves the workload's reads: `leader`
    /// (linearizable, wherever redirects lead), `follower` (each worker
    /// reads its own node's local state) or `session` (each worker reads
    /// its own node, no older than what its session has seen). `leader`
    /// and `follower` are also written as `replication.reads`; `session` is
    /// asked for per read (a node has no session default). Default: the
    /// node's own.
    #[arg(long, value_name = "leader|follower|session")]
    pub reads: Option<String>,
    /// Multi-leader and leaderless: how concurrent writes are resolved,
    /// `lww` (the largest hybrid-logical-clock timestamp wins, the others
    /// are dropped) or `siblings` (every concurrent value is kept); written
    /// as `replication.conflicts`. Default: the node's own (`siblings`).
    #[arg(long, value_name = "lww|siblings")]
    pub conflicts: Option<String>,
    /// Leaderless: replicas per key and quorums (`--n --w --r --pw --pr
    /// --sloppy`).
    #[command(flatten)]
    #[serde(flatten)]
    pub quorum: QuorumArgs,
    /// The workload: `register` (linearizability; leaderless: fresh quorum
    /// reads, linearizability measured), `set` (lost writes), `session`
    /// (read-your-writes, monotonic reads and writes), or, where every
    /// node takes writes (multi-leader, leaderless), `siblings` (reads,
    /// then writes passing their context: lost writes, false concurrency,
    /// convergence) and `counter` (increments: lost or phantom ones,
    /// convergence).
    #[arg(long, value_enum, default_value_t = Workload::Register)]
    pub workload: Workload,
    /// Faults, comma-separated: partition, isolate-leader, kill,
    /// power-loss, pause, clock, loss, latency. Empty: no faults.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub nemesis: Vec<Fault>,
    /// Seconds between fault changes: quiet for this long, then one fault
    /// for this long.
    #[arg(long, default_value_t = 5.0)]
    pub nemesis_interval: f64,
    /// How the next fault is picked: `round-robin` injects every requested
    /// fault once per round (in a seeded order), `random` draws each time.
    #[arg(long, value_enum, default_value_t = Order::RoundRobin)]
    pub nemesis_order: Order,
    /// Seconds of workload.
    #[arg(long, default_value_t = 60.0)]
    pub time_limit: f64,
    /// Number of node processes.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Seed of every random choice (workload and nemesis). Default: a
    /// random one, printed at the start and kept in `config.json`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The nodes' fsync mode: always, batch or never.
    #[arg(long, default_value = "always")]
    pub fsync: String,
    /// Register: keys in use at a time.
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// Register: operations per key before a fresh key replaces it.
    #[arg(long, default_value_t = 200)]
    pub ops_per_key: u64,
    /// Register: fraction of reads (the rest: half writes, half cas).
    #[arg(long, default_value_t = 0.5)]
    pub read_fraction: f64,
    /// Seconds before an operation without an answer is recorded as `info`.
    #[arg(long, default_value_t = 1.0)]
    pub op_timeout: f64,
    /// Seconds the linearizability checker may spend before answering
    /// `unknown`.
    #[arg(long, default_value_t = 120.0)]
    pub check_budget: f64,
    /// Extra node config lines, `key = value` or `table.key = value`
    /// (repeatable): the mode's own knobs.
    #[arg(long = "node-config", value_name = "KEY=VALUE")]
    pub node_config: Vec<String>,
    /// Where runs are stored; the run goes to `<store>/<run-id>/`.
    #[arg(long, default_value = "histories")]
    pub store: PathBuf,
    /// The run id (default: `<workload>-<mode>-<UTC time>`).
    #[arg(long)]
    pub run_id: Option<String>,
    /// The `mimeo` binary (default: $MIMEO_BIN, else next to this
    /// executable, else built with cargo).
    #[arg(long)]
    pub mimeo_bin: Option<PathBuf>,
}

/// The leaderless knobs of a run, written into every node's config
/// (`replication.n`, `w`, `r`, `pw`, `pr`, `sloppy`) through the node's own
/// [`NodeConfig`](mimeo_node::config::NodeConfig). Each `None` takes the
/// node's default (N = 3, W = R = N / 2 + 1, no primaries required,
/// strict quorums).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, clap::Args)]
pub struct QuorumArgs {
    /// Leaderless: replicas per key (default 3).
    #[arg(long = "n", value_name = "N")]
    pub n: Option<usize>,
    /// Leaderless: replicas that must take a write before it is
    /// acknowledged (default N / 2 + 1).
    #[arg(long = "w", value_name = "W")]
    pub w: Option<usize>,
    /// Leaderless: replicas a read merges (default N / 2 + 1).
    #[arg(long = "r", value_name = "R")]
    pub r: Option<usize>,
    /// Leaderless: of the W, how many must be primary owners (default 0).
    #[arg(long = "pw", value_name = "PW")]
    pub pw: Option<usize>,
    /// Leaderless: of the R, how many must be primary owners (default 0).
    #[arg(long = "pr", value_name = "PR")]
    pub pr: Option<usize>,
    /// Leaderless: sloppy quorums (fallback nodes take writes and answer
    /// reads for unreachable primaries, with hints), which void what
    /// W + R > N promises. Default: strict.
    #[arg(long)]
    pub sloppy: bool,
}

impl QuorumArgs {
    /// True when any knob is given.
    fn any(&self) -> bool {
        *self != QuorumArgs::default()
    }

    /// The quorums the nodes of a `nodes`-node cluster run with: each
    /// knob, or the node's default for it.
    pub fn resolve(&self, nodes: usize) -> crate::check::quorum::Quorums {
        let n = self.n.unwrap_or(3.min(nodes.max(1)));
        crate::check::quorum::Quorums {
            n,
            w: self.w.unwrap_or(n / 2 + 1),
            r: self.r.unwrap_or(n / 2 + 1),
            sloppy: self.sloppy,
        }
    }
}

/// Ctrl-C, seen by every phase of a run. The first Ctrl-C asks the run to
/// stop (the partial history is still written and checked); a second one
/// kills every node process at once and exits with status 130.
#[derive(Clone, Debug)]
pub struct Interrupt {
    rx: tokio::sync::watch::Receiver<bool>,
}

impl Interrupt {
    /// Starts listening for Ctrl-C (call inside the tokio runtime).
    pub fn install() -> Interrupt {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            let _ = tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nsecond Ctrl-C: killing the nodes and exiting");
                crate::cluster::kill_all_live();
                std::process::exit(130);
            }
        });
        Interrupt { rx }
    }

    /// An interrupt that never fires (for library callers and tests).
    pub fn never() -> Interrupt {
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(tx);
        Interrupt { rx }
    }

    /// True once Ctrl-C was pressed.
    pub fn is_set(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when Ctrl-C is pressed.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|set| *set).await;
    }
}

/// A boxed error from the harness's own phases (cluster, workload,
/// report), its chain of causes kept.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Run arguments that cannot mean anything together; the message says which
/// flags and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArgs(pub String);

/// Refuses the run's arguments with a formatted reason.
macro_rules! invalid {
    ($($reason:tt)*) => {
        return Err(InvalidArgs(format!($($reason)*)))
    };
}

/// Why [`run`] produced no outcome. Each message names what failed (the
/// phase, file or directory); the cause, where there is one, is the
/// error's [`source`](std::error::Error::source) rather than part of the
/// message, so print the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The arguments were refused before anything started.
    #[error(transparent)]
    InvalidArgs(#[from] InvalidArgs),
    /// The run directory is already taken.
    #[error("{} already exists; pick another --run-id", dir.display())]
    RunDirExists {
        /// The run directory.
        dir: PathBuf,
    },
    /// A file or directory of the run could not be written.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done (`creating`, `writing`...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS (or the encoder) reported.
        #[source]
        source: std::io::Error,
    },
    /// The `mimeo` binary could not be found or built.
    #[error("locating the mimeo binary")]
    Binary(#[source] BoxError),
    /// The cluster could not be prepared, started or made ready.
    #[error("{phase} the cluster")]
    Cluster {
        /// What was being done (`preparing`, `starting`...).
        phase: &'static str,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// Ctrl-C arrived before the nodes served.
    #[error("interrupted by Ctrl-C during start-up")]
    Interrupted,
    /// The workload or nemesis failed and the run stopped early (its
    /// partial history was still checked and reported).
    #[error("the run stopped early")]
    Stopped(#[source] BoxError),
    /// `results.json` or `report.html` could not be written.
    #[error("writing the report into {}", dir.display())]
    Report {
        /// The run directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// No client operation succeeded: the cluster served nothing, so the run
    /// says nothing about it (its history and report are still written).
    #[error(
        "the cluster served nothing: no client operation succeeded in {time_limit} s \
         ({failed} failed, {unknown} unknown); see the nodes' logs in {}",
        nodes_dir.display()
    )]
    ServedNothing {
        /// The run's `--time-limit`, in seconds.
        time_limit: f64,
        /// Operations that failed.
        failed: u64,
        /// Operations whose outcome is unknown.
        unknown: u64,
        /// Where the nodes' logs are.
        nodes_dir: PathBuf,
    },
}

/// Writes `value` as pretty JSON (and a newline) to `path`.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), RunError> {
    let io = |source| RunError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_string_pretty(value).map_err(|e| io(e.into()))?;
    std::fs::write(path, text + "\n").map_err(io)
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The run directory.
    pub dir: PathBuf,
    /// The overall verdict.
    pub verdict: Verdict,
    /// Each checker's result.
    pub results: Vec<CheckResult>,
    /// The seed the run used (`--seed`, or the random one drawn).
    pub seed: u64,
    /// How many times each requested fault was injected.
    pub injected: Injected,
    /// The requested faults that were never injected (the time limit was
    /// too short for them).
    pub never_injected: Vec<Fault>,
}

/// The history file a run writes into its directory.
pub const HISTORY_FILE: &str = "history.jsonl.zst";

/// What the runner knows of a run beyond its history: written to
/// `results.json` and shown in the report.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    /// Every knob, the seed resolved.
    pub config: RunArgs,
    /// How many times each requested fault was injected.
    pub injected: Injected,
    /// The requested faults that were never injected.
    pub never_injected: Vec<Fault>,
    /// How the replicas' final wait went (set workload), if there was one.
    pub convergence: Option<serde_json::Value>,
}

impl RunArgs {
    /// Refuses combinations that cannot mean anything, with the reason.
    pub fn validate(&self) -> Result<(), InvalidArgs> {
        if self.nodes == 0 {
            invalid!("--nodes must be at least 1");
        }
        if self.concurrency == 0 {
            invalid!("--concurrency must be at least 1");
        }
        self.fsync_mode()?;
        if is_replicated(self.node_mode()?) {
            self.validate_replication()?;
        } else {
            if self.nodes > 1 {
                invalid!(
                    "standalone nodes do not replicate, so a history over {} of them is not one \
                     register; use --nodes 1 or a replicated --mode",
                    self.nodes
                );
            }
            if let Some(f) = self.nemesis.iter().find(|f| f.is_network()) {
                invalid!(
                    "--nemesis {} acts on node-to-node links, and standalone nodes have none; \
                     use a replicated --mode",
                    f.name()
                );
            }
            for (flag, given) in [("--acks", &self.acks), ("--reads", &self.reads)] {
                if given.is_some() {
                    invalid!(
                        "{flag} is a replication setting, and standalone nodes do not \
                         replicate; drop it or use a replicated --mode"
                    );
                }
            }
        }
        for (name, v) in [
            ("--time-limit", self.time_limit),
            ("--nemesis-interval", self.nemesis_interval),
            ("--op-timeout", self.op_timeout),
            ("--check-budget", self.check_budget),
        ] {
            if !(v.is_finite() && v > 0.0) {
                invalid!("{name} must be a positive number of seconds, not {v}");
            }
        }
        if !(0.0..=1.0).contains(&self.read_fraction) {
            invalid!("--read-fraction must be between 0 and 1");
        }
        if self.keys == 0 || self.ops_per_key == 0 {
            invalid!("--keys and --ops-per-key must be at least 1");
        }
        Ok(())
    }

    /// The replication knobs: well-formed, possible with `--nodes`, and not
    /// also given with `--node-config` (the TOML would hold the key twice).
    fn validate_replication(&self) -> Result<(), InvalidArgs> {
        if let Some(f) = self.nemesis.iter().find(|f| f.is_network()) {
            if self.nodes < 2 {
                invalid!(
                    "--nemesis {} acts on node-to-node links, and one node has none; \
                     use --nodes 3 or more",
                    f.name()
                );
            }
        }
        let multi_leader = self.mode == "multi-leader";
        let leaderless = self.mode == "leaderless";
        if self.workload.is_versioned() && !multi_leader && !leaderless {
            invalid!(
                "--workload {} needs a mode in which every node takes writes: --mode \
                 multi-leader or leaderless",
                self.workload
            );
        }
        if leaderless {
            self.validate_leaderless()?;
        } else if self.quorum.any() {
            invalid!(
                "--n, --w, --r, --pw, --pr and --sloppy are leaderless settings; use --mode \
                 leaderless or drop them"
            );
        }
        if multi_leader {
            if let Some(acks) = self.acks.as_deref() {
                if !matches!(acks, "local" | "quorum" | "all") {
                    invalid!(
                        "--acks must be local, quorum or all in multi-leader mode, not {acks:?}"
                    );
                }
            }
            if self.reads.is_some() {
                invalid!(
                    "--reads is a leader-follower setting: a multi-leader node answers every \
                     read from its own replica; drop it"
                );
            }
            if self.nemesis.contains(&Fault::IsolateLeader) {
                invalid!(
                    "--nemesis isolate-leader needs a leader; in multi-leader mode use partition"
                );
            }
            if matches!(self.workload, Workload::Register | Workload::Session) {
                invalid!(
                    "--workload {} checks one leader's guarantees; with several nodes taking \
                     writes use --workload siblings, counter, or-set or set",
                    self.workload
                );
            }
        } else if self.conflicts.is_some() && !leaderless {
            invalid!(
                "--conflicts is a multi-leader and leaderless setting; use one of those modes \
                 or drop it"
            );
        }
        if let Some(c) = self.conflicts.as_deref() {
            if !matches!(c, "lww" | "siblings") {
                invalid!("--conflicts must be lww or siblings, not {c:?}");
            }
        }
        if let Some(acks) = self
            .acks
            .as_deref()
            .filter(|_| !multi_leader && !leaderless)
        {
            match acks.split_once(':') {
                None if matches!(acks, "async" | "quorum" | "all") => {}
                Some(("semi-sync", k)) => {
                    let followers = self.nodes - 1;
                    match k.parse::<usize>() {
                        Ok(k) if (1..=followers).contains(&k) => {}
                        _ => invalid!(
                            "--acks {acks}: K must be a number of followers from 1 to {followers} \
                             (--nodes {} has {followers} followers)",
                            self.nodes
                        ),
                    }
                }
                _ => invalid!("--acks must be async, semi-sync:K, quorum or all, not {acks:?}"),
            }
        }
        Reads::from_flag(self.reads.as_deref()).map_err(InvalidArgs)?;
        for (flag, key, given) in [
            ("--acks", "replication.acks", &self.acks),
            ("--reads", "replication.reads", &self.reads_line()),
            ("--conflicts", "replication.conflicts", &self.conflicts),
        ] {
            let also = self
                .node_config
                .iter()
                .find(|line| line.split_once('=').is_some_and(|(k, _)| k.trim() == key));
            if let (Some(_), Some(line)) = (given, also) {
                invalid!("{flag} and --node-config {line:?} both set {key}; keep one");
            }
        }
        Ok(())
    }

    /// Leaderless: the flags that have no meaning there are refused, and
    /// the quorums must fit the cluster (the node checks them again).
    fn validate_leaderless(&self) -> Result<(), InvalidArgs> {
        if self.acks.is_some() {
            invalid!(
                "--acks is not a leaderless setting: a write is acknowledged by W replicas; \
                 use --w (and --pw)"
            );
        }
        if self.reads.is_some() {
            invalid!(
                "--reads is not a leaderless setting: a read merges R replicas' answers; use \
                 --r (and --pr)"
            );
        }
        if self.nemesis.contains(&Fault::IsolateLeader) {
            invalid!("--nemesis isolate-leader needs a leader; in leaderless mode use partition");
        }
        if self.workload == Workload::Session {
            invalid!(
                "--workload session checks session reads, which leaderless nodes do not serve; \
                 use --workload register (quorum reads) or siblings, counter, set"
            );
        }
        let q = self.quorum.resolve(self.nodes);
        if q.n > self.nodes {
            invalid!(
                "--n {} replicas per key needs at least {} nodes (--nodes {})",
                q.n,
                q.n,
                self.nodes
            );
        }
        for (flag, v) in [
            ("--w", q.w),
            ("--r", q.r),
            ("--pw", self.quorum.pw.unwrap_or(0)),
            ("--pr", self.quorum.pr.unwrap_or(0)),
        ] {
            if v > q.n || (v == 0 && matches!(flag, "--w" | "--r")) {
                invalid!(
                    "{flag} {v} must be between 1 and N = {} (0 allowed for --pw, --pr)",
                    q.n
                );
            }
        }
        for key in ["n", "w", "r", "pw", "pr", "sloppy"] {
            let field = format!("replication.{key}");
            if let Some(line) = self
                .node_config
                .iter()
                .find(|line| line.split_once('=').is_some_and(|(k, _)| k.trim() == field))
            {
                invalid!(
                    "--node-config {line:?} sets {field}; use --{key} instead (the run records \
                     and checks the quorums it gives)"
                );
            }
        }
        Ok(())
    }

    /// The quorums of a leaderless run (`None` for another mode).
    pub fn leaderless_quorums(&self) -> Option<crate::check::quorum::Quorums> {
        (self.mode == "leaderless").then(|| self.quorum.resolve(self.nodes))
    }

    /// `--mode` as the node's config type.
    fn node_mode(&self) -> Result<Mode, InvalidArgs> {
        toml::Value::String(self.mode.clone())
            .try_into()
            .map_err(|e| InvalidArgs(format!("--mode {:?}: {e}", self.mode)))
    }

    /// `--fsync` as the storage engine's type.
    fn fsync_mode(&self) -> Result<FsyncMode, InvalidArgs> {
        self.fsync.parse().map_err(|_| {
            InvalidArgs(format!(
                "--fsync must be always, batch or never, not {:?}",
                self.fsync
            ))
        })
    }

    /// The node default `--reads` sets, if any: session reads are asked
    /// for per request, and a node refuses `session` as its default.
    fn reads_line(&self) -> Option<String> {
        self.reads.clone().filter(|reads| reads != "session")
    }

    fn run_id(&self) -> String {
        self.run_id.clone().unwrap_or_else(|| {
            format!(
                "{}-{}-{}",
                self.workload,
                self.mode,
                utc_stamp(SystemTime::now())
            )
        })
    }
}

/// Runs the test described by `args` and checks it. Ctrl-C stops the
/// workload early; the partial history is still checked and reported.
pub async fn run(mut args: RunArgs, interrupt: Interrupt) -> Result<RunOutcome, RunError> {
    args.validate()?;
    let seed = *args.seed.get_or_insert_with(rand::random);
    let dir = args.store.join(args.run_id());
    if dir.exists() {
        return Err(RunError::RunDirExists { dir });
    }
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { what, path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let dir = dir.canonicalize().map_err(io("resolving", &dir))?;
    write_json(&dir.join("config.json"), &args)?;
    eprintln!("run directory: {}", dir.display());
    eprintln!("seed: {seed} (pass --seed {seed} to replay this run's choices)");

    let binary =
        locate_binary(args.mimeo_bin.as_deref()).map_err(|e| RunError::Binary(e.into()))?;
    let spec = ClusterSpec {
        dir: dir.clone(),
        binary,
        nodes: args.nodes,
        cluster_id: "harness".into(),
        mode: args.node_mode()?,
        fsync: args.fsync_mode()?,
        simulate_power_loss: args.nemesis.contains(&Fault::PowerLoss),
        acks: args.acks.clone(),
        reads: args.reads_line(),
        leaderless: (args.mode == "leaderless").then(|| args.quorum.clone()),
        extra_config: args
            .conflicts
            .iter()
            .map(|c| format!("replication.conflicts = \"{c}\""))
            .chain(args.node_config.iter().cloned())
            .collect(),
        seed,
    };
    let cluster_error = |phase| {
        move |e: anyhow::Error| RunError::Cluster {
            phase,
            source: e.into(),
        }
    };
    let mut cluster = Cluster::prepare(spec)
        .await
        .map_err(cluster_error("preparing"))?;
    let net = cluster.net();
    cluster
        .start_all()
        .await
        .map_err(cluster_error("starting"))?;
    tokio::select! {
        ready = cluster.wait_all_ready(RESTART_BOUND) => ready.map_err(cluster_error("waiting for"))?,
        _ = interrupt.wait() => return Err(RunError::Interrupted),
    }
    eprintln!(
        "{} node(s) serving: {}",
        cluster.nodes.len(),
        cluster
            .nodes
            .iter()
            .map(|n| format!("{} {}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let history_file = dir.join(HISTORY_FILE);
    let recorder = Arc::new(
        Recorder::to_file(&history_file).map_err(io("creating the history", &history_file))?,
    );
    // Puts the history on disk at least once a second, however quiet.
    let flusher = tokio::spawn({
        let recorder = Arc::clone(&recorder);
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                recorder.flush();
            }
        }
    });
    let workload = Arc::new(WorkloadSpec {
        workload: args.workload,
        nodes: cluster.addrs(),
        node_ids: cluster.nodes.iter().map(|n| n.id.clone()).collect(),
        cluster_id: cluster.cluster_id().to_owned(),
        certs: cluster.certs().to_path_buf(),
        op_timeout: Duration::from_secs_f64(args.op_timeout),
        keys: args.keys,
        ops_per_key: args.ops_per_key,
        // Leaderless registers write (nearly) unique values: without cas
        // there is nothing to match, and a read's value then names the
        // one write it came from, so a stale read can be proven.
        values: if args.mode == "leaderless" {
            1_000_000
        } else {
            5
        },
        read_fraction: args.read_fraction,
        reads: Reads::from_flag(args.reads.as_deref()).map_err(InvalidArgs)?,
        seed,
        every_node_writes: args.mode == "multi-leader",
        cas: args.mode != "leaderless",
    });
    let cluster = Arc::new(Mutex::new(cluster));
    let mut driven = Driven::default();
    let result = drive(
        &args,
        &workload,
        &cluster,
        &net,
        &recorder,
        &interrupt,
        &mut driven,
    )
    .await;
    cluster.lock().await.stop_all().await;
    flusher.abort();
    if let Err(e) = &result {
        eprintln!("the run stopped early: {e:#}");
    }
    if let Some(net) = &net {
        write_json(&dir.join("net-stats.json"), &net.stats())?;
    }

    recorder
        .finish()
        .map_err(io("closing the history", &history_file))?;
    let history = recorder.history();
    let mut results = crate::report::check(
        &history,
        args.workload,
        &crate::report::CheckOptions {
            initial: None,
            budget: Duration::from_secs_f64(args.check_budget),
            threads: 0,
            quorums: args.leaderless_quorums(),
        },
    );
    let served = history
        .pairs()
        .iter()
        .any(|p| p.outcome() == crate::history::OpType::Ok);
    if !served {
        results.push(CheckResult {
            checker: "served".into(),
            verdict: Verdict::Unknown,
            summary: "no client operation succeeded: the cluster served nothing".into(),
            anomalies: Vec::new(),
            details: serde_json::Value::Null,
        });
    }
    let verdict = Verdict::combine(results.iter().map(|r| r.verdict));
    let injected = driven.injected.clone();
    let never_injected: Vec<Fault> = args
        .nemesis
        .iter()
        .copied()
        .filter(|f| !injected.contains_key(f))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !never_injected.is_empty() && result.is_ok() {
        eprintln!(
            "warning: never injected: {} (a round of every fault takes {:.0} s at \
             --nemesis-interval {}; raise --time-limit)",
            never_injected
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(", "),
            2.0 * args.nemesis_interval * args.nemesis.len() as f64,
            args.nemesis_interval,
        );
    }
    let info = RunInfo {
        config: args.clone(),
        injected: injected.clone(),
        never_injected: never_injected.clone(),
        convergence: driven.convergence.take(),
    };
    crate::report::write(&dir, &history, &results, Some(&info)).map_err(|e| RunError::Report {
        dir: dir.clone(),
        source: e.into(),
    })?;
    result.map_err(|e| RunError::Stopped(e.into()))?;
    if !served {
        let c = &recorder.counts;
        return Err(RunError::ServedNothing {
            time_limit: args.time_limit,
            failed: c.fail.load(Ordering::Relaxed),
            unknown: c.info.load(Ordering::Relaxed),
            nodes_dir: dir.join("nodes"),
        });
    }
    Ok(RunOutcome {
        dir,
        verdict,
        results,
        seed,
        injected,
        never_injected,
    })
}

/// What [`drive`] learned on the way, kept even when it fails.
#[derive(Debug, Default)]
struct Driven {
    injected: Injected,
    convergence: Option<serde_json::Value>,
}

/// The workload, nemesis and progress line, then healing and final reads.
async fn drive(
    args: &RunArgs,
    workload: &Arc<WorkloadSpec>,
    cluster: &Arc<Mutex<Cluster>>,
    net: &Option<Arc<FaultNet>>,
    recorder: &Arc<Recorder>,
    interrupt: &Interrupt,
    driven: &mut Driven,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.time_limit);
    let shared = Arc::new(Shared::new(args.concurrency, args.keys));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        workers.spawn(run_worker(
            w,
            Arc::clone(workload),
            Arc::clone(&shared),
            Arc::clone(recorder),
            deadline,
        ));
    }
    let nemesis = Nemesis::new(
        Arc::clone(cluster),
        net.clone(),
        Arc::clone(recorder),
        args.nemesis.clone(),
        args.nemesis_order,
        Duration::from_secs_f64(args.nemesis_interval),
        workload.seed,
    );
    let current = Arc::clone(&nemesis.current);
    let injected = Arc::clone(&nemesis.injected);
    let read_injected = move || {
        injected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    };
    let nemesis = tokio::spawn(nemesis.run(deadline));
    let progress = tokio::spawn(progress(
        Arc::clone(recorder),
        current,
        Duration::from_secs_f64(args.time_limit),
    ));

    let interrupted = tokio::select! {
        _ = async { while workers.join_next().await.is_some() {} } => false,
        _ = interrupt.wait() => true,
    };
    progress.abort();
    driven.injected = read_injected();
    if interrupted {
        eprintln!("\ninterrupted: stopping the workload and healing");
        workers.abort_all();
        nemesis.abort();
        let mut cluster = cluster.lock().await;
        for i in 0..cluster.nodes.len() {
            cluster.resume(i)?;
        }
        anyhow::bail!("interrupted by Ctrl-C");
    }
    eprintln!();
    let nemesis = nemesis.await.context("the nemesis task panicked");
    driven.injected = read_injected();
    nemesis?.context("the nemesis failed")?;
    let crashed = cluster.lock().await.reap_crashed();
    if !crashed.is_empty() {
        anyhow::bail!("{}", crashed.join("\n"));
    }
    if args.mode == "leaderless" {
        return leaderless_final_reads(args, workload, &shared, recorder, driven).await;
    }
    if args.workload == Workload::Set {
        let elements = shared.elements();
        eprintln!(
            "final reads of {elements} elements from {} node(s)",
            workload.nodes.len()
        );
        let convergence = await_convergence(workload, RESTART_BOUND).await;
        driven.convergence = Some(serde_json::json!({
            "converged": convergence.converged,
            "waited_ms": convergence.waited.as_millis() as u64,
            "nodes": convergence.nodes,
        }));
        if convergence.converged {
            eprintln!(
                "replicas converged in {} ms: {}",
                convergence.waited.as_millis(),
                convergence.nodes.join(", ")
            );
        } else {
            eprintln!(
                "warning: replicas did not converge within {} s; a replica still behind will \
                 show acknowledged adds as lost: {}",
                convergence.waited.as_secs(),
                convergence.nodes.join(", ")
            );
        }
        let first = shared.reserve_processes(workload.nodes.len() as u64);
        final_set_reads(workload, elements, recorder, first, RESTART_BOUND).await;
    }
    if args.workload.is_versioned() {
        let keys = shared.touched_keys();
        eprintln!(
            "final reads of {} key(s) from {} node(s), until they agree",
            keys.len(),
            workload.nodes.len()
        );
        let first = shared.reserve_processes(workload.nodes.len() as u64);
        let reads = final_versioned_reads(workload, &keys, recorder, first, RESTART_BOUND).await;
        driven.convergence = Some(serde_json::json!({
            "converged": reads.agreed,
            "waited_ms": reads.waited.as_millis() as u64,
            "rounds": reads.rounds,
        }));
        if reads.agreed {
            eprintln!(
                "replicas agreed on every key after {} round(s), {} ms",
                reads.rounds,
                reads.waited.as_millis()
            );
        } else {
            eprintln!(
                "warning: replicas still differ after {} round(s), {} s: the convergence \
                 checker names the keys",
                reads.rounds,
                reads.waited.as_secs()
            );
        }
    }
    Ok(())
}

/// A leaderless run's final reads ([`final_local_reads`]): every replica's
/// own copy of every key the workload touched, in rounds until they agree.
/// The versioned workloads record them (their convergence and siblings
/// checkers judge where each replica settled); the register and set
/// workloads only wait on them (a lagging replica's copy is not a client
/// read), and the set workload then reads its elements through quorums
/// from every node. How long agreement took goes into the results.
async fn leaderless_final_reads(
    args: &RunArgs,
    workload: &Arc<WorkloadSpec>,
    shared: &Shared,
    recorder: &Arc<Recorder>,
    driven: &mut Driven,
) -> anyhow::Result<()> {
    let keys: Vec<String> = match args.workload {
        Workload::Set => (0..shared.elements()).map(|e| format!("set/{e}")).collect(),
        Workload::Register | Workload::Session => shared.register_keys(args.ops_per_key),
        Workload::Siblings | Workload::Counter | Workload::OrSet => shared.touched_keys(),
    };
    eprintln!(
        "final local reads of {} key(s) from each of their replicas, until they agree",
        keys.len()
    );
    let record = args.workload.is_versioned().then(|| {
        let first = shared.reserve_processes(workload.nodes.len() as u64);
        (recorder, first)
    });
    let reads = final_local_reads(workload, &keys, record, RESTART_BOUND).await;
    driven.convergence = Some(serde_json::json!({
        "converged": reads.agreed,
        "waited_ms": reads.waited.as_millis() as u64,
        "rounds": reads.rounds,
        "keys": keys.len(),
        "how": "local reads of every replica (no quorum, no read repair)",
    }));
    if reads.agreed {
        eprintln!(
            "every key's replicas agreed after {} round(s), {} ms",
            reads.rounds,
            reads.waited.as_millis()
        );
    } else {
        eprintln!(
            "warning: replicas still differ after {} round(s), {} s",
            reads.rounds,
            reads.waited.as_secs()
        );
    }
    if args.workload == Workload::Set {
        let first = shared.reserve_processes(workload.nodes.len() as u64);
        final_set_reads(workload, shared.elements(), recorder, first, RESTART_BOUND).await;
    }
    Ok(())
}

/// Prints elapsed time, operation counts and the current fault: rewritten
/// in place on a terminal, every 10 s otherwise.
async fn progress(recorder: Arc<Recorder>, current: Arc<crate::nemesis::Current>, limit: Duration) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let start = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let c = &recorder.counts;
        let line = format!(
            "[{:>4.0}s/{:.0}s] ok {} fail {} info {} | {}",
            start.elapsed().as_secs_f64(),
            limit.as_secs_f64(),
            c.ok.load(Ordering::Relaxed),
            c.fail.load(Ordering::Relaxed),
            c.info.load(Ordering::Relaxed),
            current.get().unwrap_or_else(|| "no fault".into()),
        );
        if tty {
            eprint!("\r{line:<78}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// `YYYYMMDDTHHMMSSZ` for a time (UTC, civil calendar).
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The history a `check` argument names: a run directory holds
/// [`HISTORY_FILE`] (or, written by older versions, `history.jsonl`).
pub fn history_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        let compressed = path.join(HISTORY_FILE);
        let plain = path.join("history.jsonl");
        if !compressed.exists() && plain.exists() {
            plain
        } else {
            compressed
        }
    } else {
        path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(flags: &str) -> RunArgs {
        let argv = std::iter::once("run").chain(flags.split_whitespace());
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{flags}: {e}"))
            .run
    }

    /// A run that fails before any node starts names the failing step, and
    /// keeps its cause as the source; a taken run directory is refused.
    #[tokio::test]
    async fn run_errors_name_what_failed_and_keep_the_cause() {
        let store = tempfile::tempdir().unwrap();
        let missing = store.path().join("no-such-mimeo");
        let flags = format!(
            "--store {} --run-id r1 --mimeo-bin {}",
            store.path().display(),
            missing.display()
        );
        let error = run(parse(&flags), Interrupt::never()).await.unwrap_err();
        assert!(matches!(error, RunError::Binary(_)), "{error:?}");
        let chain = format!("{:#}", anyhow::Error::from(error));
        assert!(chain.starts_with("locating the mimeo binary: "), "{chain}");
        assert!(chain.contains("no-such-mimeo"), "{chain}");

        // r1's directory was created by the failed run.
        let error = run(parse(&flags), Interrupt::never()).await.unwrap_err();
        match error {
            RunError::RunDirExists { dir } => assert!(dir.ends_with("r1"), "{}", dir.display()),
            other => panic!("expected RunDirExists, got {other:?}"),
        }
        let error = run(parse(&format!("{flags} --nodes 0")), Interrupt::never())
            .await
            .unwrap_err();
        assert!(matches!(error, RunError::InvalidArgs(_)), "{error:?}");
    }

    fn refusal(flags: &str) -> String {
        match parse(flags).validate() {
            Ok(()) => panic!("{flags}: accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn replicated_modes_take_several_nodes_network_faults_and_replication_flags() {
        for flags in [
            "--mode leader-follower --nodes 3 --nemesis partition",
            "--mode leader-follower --nodes 5 --nemesis partition,loss,latency,kill",
            "--mode leader-follower --nodes 3 --acks quorum --reads leader",
            "--mode leader-follower --nodes 3 --acks async --reads follower",
            "--mode leader-follower --nodes 3 --acks all --reads session",
            // Session reads are per request: the node default is free.
            "--mode leader-follower --nodes 3 --reads session \
             --node-config replication.reads=\"follower\"",
            "--mode leader-follower --nodes 3 --acks semi-sync:1",
            "--mode leader-follower --nodes 3 --acks semi-sync:2",
            "--mode leader-follower --nodes 3 --node-config replication.acks=\"all\"",
            "--nodes 1 --nemesis kill,pause",
        ] {
            parse(flags)
                .validate()
                .unwrap_or_else(|e| panic!("{flags}: {e}"));
        }
    }

    #[test]
    fn standalone_refuses_replication_flags_several_nodes_and_network_faults() {
        for (flags, expected) in [
            ("--acks quorum", "--acks is a replication setting"),
            ("--reads leader", "--reads is a replication setting"),
            ("--nodes 3", "standalone nodes do not replicate"),
            (
                "--nemesis kill,partition",
                "--nemesis partition acts on node-to-node links",
            ),
            ("--mode standalone --nemesis loss", "--nemesis loss acts on"),
        ] {
            let err = refusal(flags);
            assert!(err.contains(expected), "{flags}: {err}");
        }
    }

    #[test]
    fn malformed_replication_flags_are_refused_with_the_reason() {
        let lf = "--mode leader-follower --nodes 3";
        for (flags, expected) in [
            ("--acks majority", "--acks must be async, semi-sync:K, quorum or all"),
            ("--acks semi-sync", "--acks must be"),
            ("--acks sync:1", "--acks must be"),
            ("--acks Quorum", "--acks must be"),
            ("--acks semi-sync:0", "K must be a number of followers from 1 to 2"),
            ("--acks semi-sync:3", "K must be a number of followers from 1 to 2"),
            ("--acks semi-sync:x", "K must be a number of followers"),
            ("--reads any", "--reads must be leader, follower or session"),
            (
                "--acks quorum --node-config replication.acks=\"all\"",
                "--acks and --node-config \"replication.acks=\\\"all\\\"\" both set replication.acks",
            ),
            (
                "--reads leader --node-config replication.reads=\"session\"",
                "both set replication.reads",
            ),
        ] {
            let err = refusal(&format!("{lf} {flags}"));
            assert!(err.contains(expected), "{flags}: {err}");
        }
        let err = refusal("--mode paxos --nodes 3");
        // The node's own list of modes.
        assert!(err.contains("--mode \"paxos\""), "{err}");
        assert!(err.contains("leader-follower"), "{err}");
        let err = refusal("--fsync sometimes");
        assert!(
            err.contains("--fsync must be always, batch or never"),
            "{err}"
        );
        let err = refusal("--mode leader-follower --nodes 1 --nemesis kill,latency");
        assert!(
            err.contains("--nemesis latency acts on node-to-node links, and one node has none"),
            "{err}"
        );
    }

    #[test]
    fn leaderless_takes_quorums_and_refuses_what_has_no_meaning_there() {
        let ll = "--mode leaderless --nodes 5";
        for flags in [
            "",
            " --n 3 --w 2 --r 2 --sloppy --conflicts lww",
            " --w 1 --r 1 --pw 1 --pr 0 --workload siblings",
            " --workload counter --nemesis partition,kill,pause,clock",
            " --workload set --node-config replication.read_repair=\"off\"",
        ] {
            parse(&format!("{ll}{flags}"))
                .validate()
                .unwrap_or_else(|e| panic!("{flags}: {e}"));
        }
        for (flags, expected) in [
            (" --acks quorum", "--acks is not a leaderless setting"),
            (" --reads leader", "--reads is not a leaderless setting"),
            (" --nemesis isolate-leader", "needs a leader"),
            (" --workload session", "leaderless nodes do not serve"),
            (" --w 4", "--w 4 must be between 1 and N = 3"),
            (" --r 0", "--r 0 must be between 1 and N = 3"),
            (" --n 6", "--n 6 replicas per key needs at least 6 nodes"),
            (
                " --node-config replication.w=1",
                "sets replication.w; use --w instead",
            ),
        ] {
            let err = refusal(&format!("{ll}{flags}"));
            assert!(err.contains(expected), "{flags}: {err}");
        }
        let err = refusal("--mode leader-follower --nodes 3 --sloppy");
        assert!(err.contains("are leaderless settings"), "{err}");
        let q = parse(&format!("{ll} --w 1")).leaderless_quorums().unwrap();
        assert_eq!((q.n, q.w, q.r, q.sloppy), (3, 1, 2, false));
        assert_eq!(
            parse("--mode leader-follower --nodes 3").leaderless_quorums(),
            None
        );
    }

    #[test]
    fn session_reads_are_asked_per_request_not_set_as_the_node_default() {
        let reads = |flags: &str| parse(flags).reads_line();
        assert_eq!(
            reads("--mode leader-follower --nodes 3 --reads session"),
            None
        );
        assert_eq!(
            reads("--mode leader-follower --nodes 3 --reads follower").as_deref(),
            Some("follower")
        );
        assert_eq!(reads(""), None);
    }

    #[test]
    fn utc_stamps_match_known_dates() {
        let at = |s: u64| utc_stamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_795_484_826), "20261124T014706Z");
    }
}
