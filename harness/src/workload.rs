//! Client workloads: C concurrent workers, each a logical process that
//! invokes one operation at a time and records it.
//!
//! - `register`: reads, writes and compare-and-sets of small integers on a
//!   few keys at a time. Each key takes at most `ops_per_key` operations and
//!   is then replaced by a fresh one (as Jepsen's independent workloads do),
//!   which keeps every per-key history small enough to check exhaustively.
//! - `set`: unique adds (element `e` is written as key `set/<e>`), then,
//!   after the faults are healed and the replicas have converged
//!   ([`await_convergence`]), one final read of every attempted element from
//!   every node's own state (a follower read: no redirect to the leader), so
//!   a replica that lost or never received an acknowledged add shows it.
//!
//! - `siblings` (multi-leader): each worker, on its own node, reads a key
//!   with its siblings and causal context, then (usually) writes a fresh
//!   unique value, or now and then deletes, passing that context, so the
//!   history says which values each write saw
//!   ([`check::siblings`](crate::check::siblings)).
//! - `counter` (multi-leader): increments of a few counters and reads of
//!   them on the worker's own node ([`check::counter`](crate::check::counter)).
//! - `or-set` (multi-leader): adds of fresh elements, removes of observed
//!   ones and re-adds on a few observed-remove sets (`workload/orset.rs`,
//!   [`check::orset`](crate::check::orset)).
//!
//! The multi-leader workloads end, after the heal, with rounds of reads of
//! every key they touched from every node's own state
//! ([`final_versioned_reads`]) until the replicas agree or a bound passes,
//! which the convergence checker reads.
//!
//! Reads go where `--reads` says ([`Reads`]): through the worker's
//! redirect-following client (which ends up at the leader), or, for
//! follower and session reads, through a second client pinned to the
//! worker's own node, so that the history shows what that replica served.
//! Writes and cas always use the redirect-following client.
//!
//! Outcomes follow the client's errors: an answer is `ok`; an error that
//! certainly did not take effect is `fail`; anything else (a timeout, a
//! connection lost after sending) is `info`, and the worker then continues
//! as a fresh process id, because the old process might still have an
//! operation in flight (Jepsen's rule).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_client::{
    CasOutcome, Client, ClientConfig, Error as ClientError, Position, ReadConsistency,
    VersionedValue,
};
use mimeo_wire::TlsIdentity;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::check::counter::F_INCR;
use crate::check::siblings::F_DELETE;
use crate::cluster::CLIENT_CERT;
use crate::history::{OpType, Process, CAS_MISMATCH, F_ADD, F_CAS, F_READ, F_WRITE};
use crate::recorder::{Event, Recorder};

mod orset;

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Per-key read / write / cas, checked for linearizability (and
    /// measured for staleness).
    Register,
    /// Unique adds and final reads, checked for lost elements.
    Set,
    /// The register's operations, checked for the session guarantees
    /// (read-your-writes, monotonic reads, monotonic writes) instead of
    /// linearizability: for read modes that promise only those.
    Session,
    /// Multi-leader: reads with their context, then writes (or deletes)
    /// that pass it, checked for lost writes, false concurrency and
    /// phantoms (and, under last-writer-wins, lost updates), and for
    /// convergence.
    Siblings,
    /// Multi-leader: counter increments and reads, checked against the
    /// counter bounds and for convergence.
    Counter,
    /// Multi-leader: adds, removes of observed elements and re-adds on
    /// observed-remove sets, checked for lost adds, resurrected removes,
    /// phantoms and convergence.
    OrSet,
}

impl Workload {
    /// True for the workloads of modes in which every node takes writes,
    /// which speak the versioned client messages.
    pub fn is_versioned(self) -> bool {
        matches!(
            self,
            Workload::Siblings | Workload::Counter | Workload::OrSet
        )
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Session => "session",
            Workload::Siblings => "siblings",
            Workload::Counter => "counter",
            Workload::OrSet => "or-set",
        })
    }
}

/// How the workers read (the run's `--reads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// With the node's configured default consistency, through the
    /// redirect-following client.
    Default,
    /// Linearizable reads ([`ReadConsistency::Leader`]) through the
    /// redirect-following client.
    Leader,
    /// Unbounded follower reads ([`ReadConsistency::Follower`]) from the
    /// worker's own node: whatever that replica has applied.
    Follower,
    /// Session reads ([`ReadConsistency::Session`]) from the worker's own
    /// node, after the highest log position the worker's session has seen.
    /// A session lives as long as the worker's process id.
    Session,
}

impl Reads {
    /// The read mode named by `--reads` (`None`: the node's default).
    pub fn from_flag(flag: Option<&str>) -> Result<Reads, String> {
        match flag {
            None => Ok(Reads::Default),
            Some("leader") => Ok(Reads::Leader),
            Some("follower") => Ok(Reads::Follower),
            Some("session") => Ok(Reads::Session),
            Some(other) => Err(format!(
                "--reads must be leader, follower or session, not {other:?}"
            )),
        }
    }

    /// Whether reads go to the worker's own node rather than wherever
    /// redirects lead.
    fn pinned(self) -> bool {
        matches!(self, Reads::Follower | Reads::Session)
    }
}

/// Settings shared by every worker.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Which workload.
    pub workload: Workload,
    /// Node client addresses; worker `w` prefers node `w % len`.
    pub nodes: Vec<SocketAddr>,
    /// Their ids, in the same order (recorded as `node`).
    pub node_ids: Vec<String>,
    /// The cluster id.
    pub cluster_id: String,
    /// The certificate directory (the client certificate is
    /// [`CLIENT_CERT`]).
    pub certs: PathBuf,
    /// Per-operation timeout; past it the outcome is `info`.
    pub op_timeout: Duration,
    /// Register: keys in use at a time.
    pub keys: usize,
    /// Register: operations per key before it is replaced.
    pub ops_per_key: u64,
    /// Register: written values are drawn from `0..values`.
    pub values: u64,
    /// Register: fraction of reads; the rest split evenly into writes and cas.
    pub read_fraction: f64,
    /// Where and how reads are served.
    pub reads: Reads,
    /// Seeds each worker's choices (worker `w` uses `seed + w`).
    pub seed: u64,
    /// Every node takes writes (multi-leader): the replicas have converged
    /// when their applied vectors agree, not their logs.
    pub every_node_writes: bool,
    /// Register: whether the nodes serve `cas` (leaderless nodes refuse
    /// it; without it, the cas share of the operations is writes).
    pub cas: bool,
}

/// Counters shared by the workers of one run.
#[derive(Debug, Default)]
pub struct Shared {
    /// The next fresh process id.
    next_process: AtomicU64,
    /// Register: operations issued per key slot.
    slot_ops: Vec<AtomicU64>,
    /// Set: the next element to add (and the siblings workload's next
    /// unique value).
    next_element: AtomicU64,
    /// The versioned workloads: every key an operation touched, for the
    /// final reads.
    touched: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Shared {
    /// Counters for `workers` workers and `keys` key slots.
    pub fn new(workers: usize, keys: usize) -> Shared {
        Shared {
            next_process: AtomicU64::new(workers as u64),
            slot_ops: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            next_element: AtomicU64::new(0),
            touched: Default::default(),
        }
    }

    /// Every key the versioned workloads touched, in order.
    pub fn touched_keys(&self) -> Vec<String> {
        self.touched
            .lock()
            .expect("no worker panics holding it")
            .iter()
            .cloned()
            .collect()
    }

    /// Every key the register workload used (each slot's generations so
    /// far, `ops_per_key` operations each), in no particular order.
    pub fn register_keys(&self, ops_per_key: u64) -> Vec<String> {
        let slots = self.slot_ops.len() as u64;
        let mut keys = Vec::new();
        for (slot, ops) in self.slot_ops.iter().enumerate() {
            let ops = ops.load(Ordering::Relaxed);
            let generations = ops.div_ceil(ops_per_key.max(1));
            keys.extend((0..generations).map(|g| format!("r{}", g * slots + slot as u64)));
        }
        keys
    }

    /// Reserves `n` fresh process ids; returns the first.
    pub fn reserve_processes(&self, n: u64) -> u64 {
        self.next_process.fetch_add(n, Ordering::Relaxed)
    }

    /// How many set elements were attempted.
    pub fn elements(&self) -> u64 {
        self.next_element.load(Ordering::Relaxed)
    }
}

/// A client preferring node `first` (index into `spec.nodes`).
pub fn client_for(spec: &WorkloadSpec, first: usize) -> Result<Client, ClientError> {
    let mut nodes = spec.nodes.clone();
    let len = nodes.len();
    nodes.rotate_left(first % len);
    let config = ClientConfig::new(nodes, &spec.cluster_id, identity(spec)?);
    client_with(spec, config)
}

/// A client of node `node` alone that follows no redirect: every answer
/// comes from that node, or the operation fails.
pub fn pinned_client(spec: &WorkloadSpec, node: usize) -> Result<Client, ClientError> {
    let mut config = ClientConfig::new(vec![spec.nodes[node]], &spec.cluster_id, identity(spec)?);
    config.max_redirects = 0;
    client_with(spec, config)
}

fn identity(spec: &WorkloadSpec) -> Result<TlsIdentity, ClientError> {
    TlsIdentity::from_dir(&spec.certs, CLIENT_CERT).map_err(|e| {
        ClientError::setup(
            format!(
                "loading certificate {CLIENT_CERT} from {}",
                spec.certs.display()
            ),
            e,
        )
    })
}

fn client_with(spec: &WorkloadSpec, mut config: ClientConfig) -> Result<Client, ClientError> {
    config.request_timeout = spec.op_timeout;
    config.connect_timeout = spec.op_timeout.min(Duration::from_secs(1));
    Client::new(config)
}

/// Runs worker `w` until `deadline`, recording every operation.
///
/// Worker `w` prefers node `w % n` for writes (redirects may move it) and,
/// with pinned reads ([`Reads::Follower`], [`Reads::Session`]), reads from
/// that node only.
pub async fn run_worker(
    w: usize,
    spec: Arc<WorkloadSpec>,
    shared: Arc<Shared>,
    recorder: Arc<Recorder>,
    deadline: Instant,
) -> Result<(), ClientError> {
    if spec.workload == Workload::OrSet {
        return orset::run_worker(w, spec, shared, recorder, deadline).await;
    }
    if spec.workload.is_versioned() {
        return run_versioned_worker(w, spec, shared, recorder, deadline).await;
    }
    let writer = client_for(&spec, w)?;
    let reader = if spec.reads.pinned() {
        Some(pinned_client(&spec, w % spec.nodes.len())?)
    } else {
        None
    };
    let clients = Clients {
        writer: &writer,
        reader: reader.as_ref().unwrap_or(&writer),
    };
    let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_add(w as u64));
    let mut process = w as u64;
    // The highest log position this process has written or read: its
    // session's floor for session reads.
    let mut seen = Position::default();
    while Instant::now() < deadline {
        let op = next_op(&spec, &shared, &mut rng);
        recorder.record(Process::Client(process), op.invoke());
        let outcome = op.run(&clients, read_consistency(spec.reads, seen)).await;
        if let Ok(answer) = &outcome {
            seen = seen.max(answer.position().unwrap_or_default());
        }
        let node = node_id(&spec, &writer, &outcome);
        let event = op.complete(outcome, node);
        let unknown = event.kind == OpType::Info;
        let failed = event.kind == OpType::Fail && event.error.as_deref() != Some(CAS_MISMATCH);
        recorder.record(Process::Client(process), event);
        if unknown {
            // A fresh process is a fresh session: it has seen nothing.
            process = shared.next_process.fetch_add(1, Ordering::Relaxed);
            seen = Position::default();
        }
        if failed {
            // The node refused or could not be reached: do not spin.
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..50))).await;
        }
    }
    Ok(())
}

/// The consistency a worker asks of its reads, given the highest position
/// its session has seen.
fn read_consistency(reads: Reads, seen: Position) -> ReadConsistency {
    match reads {
        Reads::Default => ReadConsistency::Default,
        Reads::Leader => ReadConsistency::Leader,
        Reads::Follower => ReadConsistency::Follower {
            max_staleness_ms: None,
        },
        Reads::Session => ReadConsistency::Session { after: seen },
    }
}

/// A worker's clients: writes (and set adds) follow redirects; reads use
/// `reader`, which is `writer` unless reads are pinned to one node.
struct Clients<'c> {
    writer: &'c Client,
    reader: &'c Client,
}

/// One operation a worker is about to perform.
#[derive(Clone, Debug)]
enum PlannedOp {
    Read {
        key: String,
    },
    Write {
        key: String,
        value: u64,
    },
    Cas {
        key: String,
        expected: u64,
        new: u64,
    },
    Add {
        element: u64,
    },
}

/// What came back.
type Outcome = Result<Answer, ClientError>;

#[derive(Debug)]
enum Answer {
    /// The value, the position of the version read, the node that answered.
    Read(Option<Vec<u8>>, Position, SocketAddr),
    /// Where the write landed in the log.
    Written(Position),
    CasMismatch,
}

impl Answer {
    /// The log position the answer reveals, if any.
    fn position(&self) -> Option<Position> {
        match self {
            Answer::Read(_, position, _) | Answer::Written(position) => Some(*position),
            Answer::CasMismatch => None,
        }
    }
}

fn next_op(spec: &WorkloadSpec, shared: &Shared, rng: &mut StdRng) -> PlannedOp {
    match spec.workload {
        Workload::Siblings | Workload::Counter | Workload::OrSet => {
            unreachable!("the versioned workloads run in their own workers")
        }
        Workload::Set => PlannedOp::Add {
            element: shared.next_element.fetch_add(1, Ordering::Relaxed),
        },
        Workload::Register | Workload::Session => {
            let slot = rng.random_range(0..spec.keys);
            let n = shared.slot_ops[slot].fetch_add(1, Ordering::Relaxed);
            let generation = n / spec.ops_per_key.max(1);
            let key = format!("r{}", generation * spec.keys as u64 + slot as u64);
            let roll: f64 = rng.random();
            if roll < spec.read_fraction {
                PlannedOp::Read { key }
            } else if !spec.cas || roll < spec.read_fraction + (1.0 - spec.read_fraction) / 2.0 {
                PlannedOp::Write {
                    key,
                    value: rng.random_range(0..spec.values),
                }
            } else {
                PlannedOp::Cas {
                    key,
                    expected: rng.random_range(0..spec.values),
                    new: rng.random_range(0..spec.values),
                }
            }
        }
    }
}

impl PlannedOp {
    fn f(&self) -> &'static str {
        match self {
            PlannedOp::Read { .. } => F_READ,
            PlannedOp::Write { .. } => F_WRITE,
            PlannedOp::Cas { .. } => F_CAS,
            PlannedOp::Add { .. } => F_ADD,
        }
    }

    fn key(&self) -> Option<String> {
        match self {
            PlannedOp::Read { key } | PlannedOp::Write { key, .. } | PlannedOp::Cas { key, .. } => {
                Some(key.clone())
            }
            PlannedOp::Add { .. } => None,
        }
    }

    fn argument(&self) -> Value {
        match self {
            PlannedOp::Read { .. } => Value::Null,
            PlannedOp::Write { value, .. } => json!(value),
            PlannedOp::Cas { expected, new, .. } => json!([expected, new]),
            PlannedOp::Add { element } => json!(element),
        }
    }

    fn invoke(&self) -> Event {
        Event {
            key: self.key(),
            ..Event::new(OpType::Invoke, self.f(), self.argument())
        }
    }

    async fn run(&self, clients: &Clients<'_>, consistency: ReadConsistency) -> Outcome {
        let client = clients.writer;
        match self {
            PlannedOp::Read { key } => {
                let read = clients.reader.get_with(key, consistency).await?;
                Ok(Answer::Read(read.value, read.position, read.node))
            }
            PlannedOp::Write { key, value } => {
                Ok(Answer::Written(client.put(key, value.to_string()).await?))
            }
            PlannedOp::Cas { key, expected, new } => {
                match client
                    .cas(key, Some(expected.to_string()), new.to_string())
                    .await?
                {
                    CasOutcome::Swapped { position } => Ok(Answer::Written(position)),
                    CasOutcome::Mismatch { .. } => Ok(Answer::CasMismatch),
                }
            }
            PlannedOp::Add { element } => Ok(Answer::Written(
                client
                    .put(format!("set/{element}"), element.to_string())
                    .await?,
            )),
        }
    }

    fn complete(&self, outcome: Outcome, node: Option<String>) -> Event {
        let base = |kind: OpType, value: Value, error: Option<String>| Event {
            key: self.key(),
            node: node.clone(),
            error,
            ..Event::new(kind, self.f(), value)
        };
        match outcome {
            Ok(Answer::Read(value, ..)) => base(OpType::Ok, decode_value(value.as_deref()), None),
            Ok(Answer::Written(_)) => base(OpType::Ok, self.argument(), None),
            Ok(Answer::CasMismatch) => {
                base(OpType::Fail, self.argument(), Some(CAS_MISMATCH.into()))
            }
            Err(e) if e.is_definite() => base(OpType::Fail, self.argument(), Some(e.to_string())),
            Err(e) => base(OpType::Info, self.argument(), Some(e.to_string())),
        }
    }
}

/// The id of the node that answered (reads know it; writes use the
/// writing client's preferred node, which is the one that answered last).
fn node_id(spec: &WorkloadSpec, writer: &Client, outcome: &Outcome) -> Option<String> {
    let addr = match outcome {
        Ok(Answer::Read(_, _, addr)) => *addr,
        Ok(_) => writer.preferred_node(),
        Err(_) => return None,
    };
    spec.nodes
        .iter()
        .position(|a| *a == addr)
        .map(|i| spec.node_ids[i].clone())
}

/// A stored value as the history records it: an integer when it is one,
/// else the text, `null` when absent.
pub fn decode_value(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            text.parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(text.into_owned()))
        }
    }
}

/// The set workload's final reads: from each node, reads every attempted
/// element and records one `read` whose value is the elements present.
/// Each get is retried (bounded by `bound` for the whole read); if one
/// still fails, the read is recorded as `fail` naming the element.
pub async fn final_set_reads(
    spec: &WorkloadSpec,
    elements: u64,
    recorder: &Recorder,
    first_process: u64,
    bound: Duration,
) {
    for (i, id) in spec.node_ids.iter().enumerate() {
        let process = Process::Client(first_process + i as u64);
        recorder.record(process, Event::new(OpType::Invoke, F_READ, Value::Null));
        let result = read_all_elements(spec, i, elements, bound).await;
        let event = match result {
            Ok(present) => Event {
                node: Some(id.clone()),
                ..Event::new(OpType::Ok, F_READ, json!(present))
            },
            Err(message) => Event {
                node: Some(id.clone()),
                error: Some(message),
                ..Event::new(OpType::Fail, F_READ, Value::Null)
            },
        };
        recorder.record(process, event);
    }
}

/// How far the replicas got: every node's last log position and commit
/// index, once they agree or when the wait gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Convergence {
    /// True when every node holds the same last position and has committed it.
    pub converged: bool,
    /// How long the wait took.
    pub waited: Duration,
    /// Per node (in `node_ids` order): `id last=term/index commit=c`, or the
    /// error its status request got.
    pub nodes: Vec<String>,
}

/// Waits, at most `bound`, until every node reports the same last log
/// position and a commit index that covers it (or, where every node takes
/// writes, the same applied vector): after the heal, followers of
/// an asynchronously replicating leader may still be catching up, and a
/// final read from such a replica would report writes it merely has not
/// received yet as lost. A single node has converged at once.
pub async fn await_convergence(spec: &WorkloadSpec, bound: Duration) -> Convergence {
    let started = Instant::now();
    let clients: Vec<Result<Client, String>> = spec
        .nodes
        .iter()
        .map(|&node| {
            identity(spec)
                .and_then(|id| {
                    client_with(spec, ClientConfig::new(vec![node], &spec.cluster_id, id))
                })
                .map_err(|e| e.to_string())
        })
        .collect();
    loop {
        let mut described = Vec::with_capacity(spec.nodes.len());
        let mut positions = Vec::with_capacity(spec.nodes.len());
        let mut vectors: Vec<Option<Vec<(String, u64)>>> = Vec::new();
        for ((client, &node), id) in clients.iter().zip(&spec.nodes).zip(&spec.node_ids) {
            let status = match client {
                Ok(client) => client.status_of(node).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            };
            match status {
                Ok(s) if spec.every_node_writes => {
                    // The applied vector: its own writes, and how far it has
                    // applied each peer's.
                    let mut applied: Vec<(String, u64)> = s
                        .peers
                        .iter()
                        .map(|p| (p.node_id.clone(), p.match_index))
                        .chain([(s.node_id.clone(), s.last_position.index)])
                        .collect();
                    applied.sort();
                    let text: Vec<String> =
                        applied.iter().map(|(n, i)| format!("{n}:{i}")).collect();
                    described.push(format!("{id} applied={{{}}}", text.join(",")));
                    vectors.push(Some(applied));
                    positions.push(Some((Position::default(), true)));
                }
                Ok(s) => {
                    let last = s.last_position;
                    described.push(format!(
                        "{id} last={}/{} commit={}",
                        last.term, last.index, s.commit_index
                    ));
                    positions.push(Some((last, s.commit_index >= last.index)));
                }
                Err(e) => {
                    described.push(format!("{id}: {e}"));
                    positions.push(None);
                }
            }
        }
        // A lone node has no replica to wait for, and its commit index is
        // what it has fsynced, which with `fsync = never` it never reaches.
        let lone = positions.len() == 1;
        let first = positions[0].map(|(last, _)| last);
        let converged = positions
            .iter()
            .all(|p| p.is_some_and(|(last, committed)| (committed || lone) && Some(last) == first))
            && vectors.iter().all(|v| v.is_some() && *v == vectors[0]);
        if converged || started.elapsed() >= bound {
            return Convergence {
                converged,
                waited: started.elapsed(),
                nodes: described,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_all_elements(
    spec: &WorkloadSpec,
    node: usize,
    elements: u64,
    bound: Duration,
) -> Result<Vec<u64>, String> {
    let client = identity(spec)
        .and_then(|id| {
            client_with(
                spec,
                ClientConfig::new(vec![spec.nodes[node]], &spec.cluster_id, id),
            )
        })
        .map_err(|e| e.to_string())?;
    let client = Arc::new(client);
    let deadline = Instant::now() + bound;
    // Up to 32 gets in flight: the read is over a quiet cluster, and each
    // get is one QUIC stream on the same connection.
    let mut present = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0u64;
    let mut in_flight = 0usize;
    loop {
        while in_flight < 32 && next < elements {
            let client = Arc::clone(&client);
            let element = next;
            tasks.spawn(async move {
                loop {
                    // The node's own state, not the leader's (standalone
                    // nodes ignore the level).
                    let own = ReadConsistency::Follower {
                        max_staleness_ms: None,
                    };
                    match client.get_with(format!("set/{element}"), own).await {
                        Ok(read) => return Ok((element, read.value.is_some())),
                        Err(e) if Instant::now() > deadline => {
                            return Err(format!("reading element {element}: {e}"))
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
            next += 1;
            in_flight += 1;
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        in_flight -= 1;
        match joined {
            Ok(Ok((element, true))) => present.push(element),
            Ok(Ok((_, false))) => {}
            Ok(Err(message)) => return Err(message),
            Err(e) => return Err(format!("read task failed: {e}")),
        }
    }
    present.sort_unstable();
    Ok(present)
}

/// One operation of a versioned workload (`siblings`, `counter`), on the
/// worker's own node.
#[derive(Clone, Debug)]
enum VersionedOp {
    /// Every sibling and the context (siblings), or the counter's value.
    Read { key: String },
    /// A fresh unique value superseding what the previous read saw.
    Write {
        key: String,
        value: u64,
        observed: Vec<Value>,
        context: Vec<u8>,
    },
    /// A delete superseding what the previous read saw.
    Delete {
        key: String,
        observed: Vec<Value>,
        context: Vec<u8>,
    },
    /// A counter increment.
    Incr { key: String, delta: i64 },
}

impl VersionedOp {
    fn key(&self) -> &str {
        match self {
            VersionedOp::Read { key }
            | VersionedOp::Write { key, .. }
            | VersionedOp::Delete { key, .. }
            | VersionedOp::Incr { key, .. } => key,
        }
    }

    fn f(&self) -> &'static str {
        match self {
            VersionedOp::Read { .. } => F_READ,
            VersionedOp::Write { .. } => F_WRITE,
            VersionedOp::Delete { .. } => F_DELETE,
            VersionedOp::Incr { .. } => F_INCR,
        }
    }

    fn argument(&self) -> Value {
        match self {
            VersionedOp::Read { .. } => Value::Null,
            VersionedOp::Write {
                value, observed, ..
            } => json!({"value": value, "observed": observed}),
            VersionedOp::Delete { observed, .. } => json!({ "observed": observed }),
            VersionedOp::Incr { delta, .. } => json!(delta),
        }
    }

    fn event(&self, kind: OpType, value: Value) -> Event {
        Event {
            key: Some(self.key().to_owned()),
            ..Event::new(kind, self.f(), value)
        }
    }

    async fn run(&self, client: &Client) -> Result<Option<VersionedValue>, ClientError> {
        // An empty context (last-writer-wins has none) is a blind write.
        let context = |c: &Vec<u8>| (!c.is_empty()).then(|| c.clone());
        match self {
            VersionedOp::Read { key } => {
                Ok(Some(client.get_versioned(key, None, None).await?.value))
            }
            VersionedOp::Write {
                key,
                value,
                context: c,
                ..
            } => {
                let value = Some(value.to_string().into_bytes());
                client.put_versioned(key, value, context(c), None).await?;
                Ok(None)
            }
            VersionedOp::Delete {
                key, context: c, ..
            } => {
                client.put_versioned(key, None, context(c), None).await?;
                Ok(None)
            }
            VersionedOp::Incr { key, delta } => {
                client.increment(key, *delta, None).await?;
                Ok(None)
            }
        }
    }
}

/// A versioned read as the history records it: a register's siblings and
/// causal context as `{"siblings": [...], "context": "<hex>"}` (the context
/// empty under last-writer-wins), `[]` when the key is absent; a counter's
/// value (0 when absent); a set's members as an array.
pub fn versioned_json(workload: Workload, value: &VersionedValue) -> Value {
    let decoded = |values: &[Vec<u8>]| -> Value {
        Value::Array(values.iter().map(|v| decode_value(Some(v))).collect())
    };
    match value {
        VersionedValue::Absent if workload == Workload::Counter => json!(0),
        VersionedValue::Absent => json!([]),
        VersionedValue::Register {
            values, context, ..
        } => json!({ "siblings": decoded(values), "context": hex(context) }),
        VersionedValue::Counter(n) => {
            i64::try_from(*n).map_or_else(|_| Value::String(n.to_string()), Value::from)
        }
        VersionedValue::Set(members) => decoded(members),
    }
}

/// `bytes` as lower-case hexadecimal (a context token in the history: two
/// format lines do not justify a crate).
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

/// What a versioned worker does next on its own (a siblings write follows
/// the read it passes the context of, and is planned there).
fn plan_versioned(spec: &WorkloadSpec, shared: &Shared, rng: &mut StdRng) -> VersionedOp {
    let slot = rng.random_range(0..spec.keys);
    match spec.workload {
        Workload::Counter => {
            let key = format!("c{slot}");
            if rng.random::<f64>() < spec.read_fraction {
                VersionedOp::Read { key }
            } else {
                VersionedOp::Incr {
                    key,
                    delta: rng.random_range(1..=5),
                }
            }
        }
        _ => {
            let n = shared.slot_ops[slot].fetch_add(1, Ordering::Relaxed);
            let generation = n / spec.ops_per_key.max(1);
            VersionedOp::Read {
                key: format!("s{}", generation * spec.keys as u64 + slot as u64),
            }
        }
    }
}

/// The siblings workload's step after a read that returned `value`: most
/// often a write of a fresh value passing its context, now and then a
/// delete, else nothing (another read).
fn follow_read(
    spec: &WorkloadSpec,
    shared: &Shared,
    rng: &mut StdRng,
    key: &str,
    value: &VersionedValue,
) -> Option<VersionedOp> {
    let (observed, context) = match value {
        VersionedValue::Register {
            values, context, ..
        } => (
            values.iter().map(|v| decode_value(Some(v))).collect(),
            context.clone(),
        ),
        VersionedValue::Absent => (Vec::new(), Vec::new()),
        _ => return None,
    };
    let roll: f64 = rng.random();
    if roll < spec.read_fraction {
        None
    } else if roll < spec.read_fraction + 0.05 {
        Some(VersionedOp::Delete {
            key: key.to_owned(),
            observed,
            context,
        })
    } else {
        Some(VersionedOp::Write {
            key: key.to_owned(),
            value: shared.next_element.fetch_add(1, Ordering::Relaxed),
            observed,
            context,
        })
    }
}

/// A versioned workload's worker: every operation on node `w % n` (each
/// node takes writes; its replica is what the worker reads).
async fn run_versioned_worker(
    w: usize,
    spec: Arc<WorkloadSpec>,
    shared: Arc<Shared>,
    recorder: Arc<Recorder>,
    deadline: Instant,
) -> Result<(), ClientError> {
    let node = w % spec.nodes.len();
    let client = pinned_client(&spec, node)?;
    let node_id = spec.node_ids[node].clone();
    let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_add(w as u64));
    let mut process = w as u64;
    let mut next: Option<VersionedOp> = None;
    while Instant::now() < deadline {
        let op = match next.take() {
            Some(op) => op,
            None => plan_versioned(&spec, &shared, &mut rng),
        };
        shared
            .touched
            .lock()
            .expect("no worker panics holding it")
            .insert(op.key().to_owned());
        recorder.record(Process::Client(process), op.invoke_event());
        let outcome = op.run(&client).await;
        let event = match &outcome {
            Ok(Some(value)) => {
                if spec.workload == Workload::Siblings {
                    next = follow_read(&spec, &shared, &mut rng, op.key(), value);
                }
                op.event(OpType::Ok, versioned_json(spec.workload, value))
            }
            Ok(None) => op.event(OpType::Ok, op.argument()),
            Err(e) => Event {
                error: Some(e.to_string()),
                ..op.event(
                    if e.is_definite() {
                        OpType::Fail
                    } else {
                        OpType::Info
                    },
                    op.argument(),
                )
            },
        };
        let kind = event.kind;
        recorder.record(
            Process::Client(process),
            Event {
                node: Some(node_id.clone()),
                ..event
            },
        );
        if kind == OpType::Info {
            // Jepsen's rule: the old process may still have an operation in
            // flight. The fresh one has read nothing, so it writes nothing
            // on the strength of the old one's read.
            process = shared.next_process.fetch_add(1, Ordering::Relaxed);
            next = None;
        }
        if kind == OpType::Fail {
            next = None;
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..50))).await;
        }
    }
    Ok(())
}

impl VersionedOp {
    fn invoke_event(&self) -> Event {
        self.event(OpType::Invoke, self.argument())
    }
}

/// How the final reads of a versioned workload went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalReads {
    /// Rounds of reads made.
    pub rounds: u32,
    /// True when the last round found every node holding the same value of
    /// every key.
    pub agreed: bool,
    /// From the first round to the last.
    pub waited: Duration,
}

/// The versioned workloads' final reads: rounds in which every node reads
/// every key of `keys` from its own state (node `i` as process
/// `first_process + i`, its reads one after another, the nodes at once),
/// each read recorded, until a round in which all nodes agree on every key
/// or `bound` has passed. A read that fails is recorded as `fail` (a read
/// changes nothing) and that round does not agree.
pub async fn final_versioned_reads(
    spec: &WorkloadSpec,
    keys: &[String],
    recorder: &Arc<Recorder>,
    first_process: u64,
    bound: Duration,
) -> FinalReads {
    let started = Instant::now();
    let clients: Vec<Option<Arc<Client>>> = (0..spec.nodes.len())
        .map(|i| pinned_client(spec, i).ok().map(Arc::new))
        .collect();
    let keys: Arc<Vec<String>> = Arc::new(keys.to_vec());
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, client) in clients.iter().enumerate() {
            let client = client.clone();
            let keys = Arc::clone(&keys);
            let recorder = Arc::clone(recorder);
            let node = spec.node_ids[i].clone();
            let workload = spec.workload;
            tasks.spawn(async move {
                let process = Process::Client(first_process + i as u64);
                let mut values = Vec::with_capacity(keys.len());
                for key in keys.iter() {
                    let read = VersionedOp::Read { key: key.clone() };
                    recorder.record(process, read.invoke_event());
                    let outcome = match &client {
                        Some(client) => read.run(client).await.map_err(|e| e.to_string()),
                        None => Err("no client for this node".to_string()),
                    };
                    let event = match outcome {
                        Ok(Some(value)) => {
                            let json = versioned_json(workload, &value);
                            values.push(Some(crate::check::convergence::canonical(&json)));
                            read.event(OpType::Ok, json)
                        }
                        Ok(None) => unreachable!("a read answers a value"),
                        Err(e) => {
                            values.push(None);
                            Event {
                                error: Some(e),
                                ..read.event(OpType::Fail, Value::Null)
                            }
                        }
                    };
                    recorder.record(
                        process,
                        Event {
                            node: Some(node.clone()),
                            ..event
                        },
                    );
                }
                (i, values)
            });
        }
        let mut by_node: Vec<Vec<Option<Value>>> = vec![Vec::new(); clients.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, values)) = joined {
                by_node[i] = values;
            }
        }
        let agreed = by_node.iter().all(|values| {
            values.len() == keys.len()
                && values.iter().all(Option::is_some)
                && values == &by_node[0]
        });
        if agreed || started.elapsed() >= bound {
            return FinalReads {
                rounds,
                agreed,
                waited: started.elapsed(),
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_as_integers_text_or_null() {
        assert_eq!(decode_value(None), Value::Null);
        assert_eq!(decode_value(Some(b"42")), json!(42));
        assert_eq!(decode_value(Some(b"-3")), json!(-3));
        assert_eq!(decode_value(Some(b"blue")), json!("blue"));
    }
}
