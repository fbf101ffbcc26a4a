//! Crash consistency of the real driver (issue 20, item 1): the tokio
//! [`Driver`] of a one-node cluster, its writer thread and its snapshot
//! thread, run over a [`SimBackend`] that holds the log, the hard state
//! and the snapshots, with the power cut after the `n`-th backend
//! operation, for every `n` from the first operation of the node's start
//! to the last of the workload.
//!
//! The workload: start (open the store, recover, bootstrap), elect itself,
//! then three clients write unique keys under `quorum` while snapshots are
//! taken every few entries and the log below them is discarded; then a
//! clean restart, a second election, and more writes. When the
//! power fails the driver stops with a storage error and the clients get
//! no answer or an error.
//!
//! After the cut the disk reboots holding only what was fsynced (or,
//! on alternate runs, a seeded random part of the rest, torn at sector
//! granularity), and the checks are the persist-ordering rule of
//! [`Persist`](mimeo_leader_follower::Persist), seen from outside:
//!
//! - **the node restarts**: the store opens and [`driver::recover`]
//!   accepts what it finds (no snapshot missing below the log, no hard
//!   state older than the log's terms);
//! - **nothing acknowledged is lost**: every write the driver
//!   acknowledged before the cut is read back, linearizably, after the
//!   restarted node elects itself again;
//! - **no second vote in a term**: the hard state on the rebooted disk is
//!   at least the term of every acknowledged write, of the last entry of
//!   the log and of the snapshot (terms the node voted in and acted on),
//!   and the restarted node's next election is in a later term.
//!
//! Why one node: the driver runs over a real [`PeerBus`] (QUIC), and a
//! one-node cluster needs no peer to elect itself, so the run is quick
//! enough to repeat at every operation. Its election still goes through
//! the hard state (term and vote persisted before the node acts as
//! leader), and its writes through the log, the snapshot and the
//! discards; what a one-node run cannot show (a vote granted to another
//! candidate) is the model checker's (`tests/model.rs`).
//!
//! Every fsync takes a millisecond ([`SlowSync`]), so the event loop runs
//! while the disk works, as it does on a real one.
//!
//! `LF_POWER_CUT_STRIDE=k` cuts at every `k`-th operation only (default
//! 1: every one).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_leader_follower::driver::{self, Driver, Handle, NodeNames};
use mimeo_leader_follower::{
    AckMode, ClientOp, Config, LogPosition, Millis, ReadMode, Reply, Role,
};
use mimeo_storage::sim::{SimBackend, Unsynced};
use mimeo_storage::{Backend, BackendFile, FsyncMode, Options, Store};
use mimeo_wire::{
    client_endpoint, generate_certs, CertRequest, PeerBus, TlsIdentity, TransportConfig,
};
use tokio::sync::mpsc;

/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(10);
/// Writers, and writes each.
const WRITERS: u64 = 3;
const WRITES_EACH: u64 = 12;

fn config() -> Config {
    let mut config = Config::new(1, Vec::new());
    config.bootstrap = true;
    config.seed = 7;
    config.heartbeat_interval_ms = 5;
    config.election_timeout_min_ms = 10;
    config.election_timeout_max_ms = 20;
    // Snapshots (written in the background) and the discards after them,
    // several times per run.
    config.snapshot_every = 6;
    config.snapshot_keep = 1;
    config
}

fn options() -> Options {
    driver::store_options(Options {
        fsync: FsyncMode::Batch,
        segment_bytes: 1024,
        ..Options::default()
    })
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:03}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:03}-{}", "v".repeat(40)).into_bytes()
}

/// How long an fsync takes on [`SlowSync`].
const FSYNC: Duration = Duration::from_millis(1);

/// A disk whose fsyncs take [`FSYNC`], as a real one's do: on an instant
/// disk the driver's event loop hardly ever runs between a write and its
/// fsync, where a driver that acknowledges too early would be caught.
/// (The sleep is the disk's latency, not a synchronisation.)
struct SlowSync(Arc<SimBackend>);

struct SlowFile(Arc<dyn BackendFile>);

impl Backend for SlowSync {
    fn list(&self) -> io::Result<Vec<String>> {
        self.0.list()
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        Ok(Arc::new(SlowFile(self.0.open(name)?)))
    }
    fn create(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        Ok(Arc::new(SlowFile(self.0.create(name)?)))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.0.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
        std::thread::sleep(FSYNC);
        self.0.sync_dir()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }
}

impl BackendFile for SlowFile {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(FSYNC);
        self.0.sync_data()
    }
}

/// A running node over `disk`, or why it could not start.
struct Node {
    handle: Handle,
    driver: tokio::task::JoinHandle<Result<(), driver::DriverError>>,
}

impl Node {
    fn start(disk: Arc<SimBackend>, identity: &TlsIdentity) -> Result<Node, String> {
        let backend: Arc<dyn Backend> = Arc::new(SlowSync(disk));
        let store = Store::open_with_backend(Arc::clone(&backend), options())
            .map_err(|e| format!("the store does not open: {e}"))?;
        let core = driver::recover(config(), &store, &*backend, Millis(0))
            .map_err(|e| format!("recovery fails: {e}"))?;
        let transport = TransportConfig::default();
        let endpoint = client_endpoint(identity, &transport).unwrap();
        let (bus, _inbound_tx) =
            PeerBus::new(endpoint, "n1".into(), Vec::new(), "test".into(), transport).unwrap();
        let (_peers, inbound) = mpsc::channel(1);
        let (driver, handle) = Driver::new(
            core,
            NodeNames::new(vec!["n1".into()]),
            Arc::new(bus),
            inbound,
            Arc::new(store),
            backend,
            Instant::now(),
        );
        Ok(Node {
            handle,
            driver: tokio::spawn(driver.run()),
        })
    }

    /// Waits until the node leads, or its driver stops (`false`).
    async fn until_leader(&self) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.handle.status().await {
                Ok(status) if status.role == Role::Leader => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
            assert!(Instant::now() < deadline, "no leader within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Drops the handle and waits (bounded) for the driver to end.
    async fn stop(self) -> Result<(), driver::DriverError> {
        drop(self.handle);
        tokio::time::timeout(WAIT, self.driver)
            .await
            .expect("the driver stops once its handles are gone")
            .expect("the driver does not panic")
    }
}

/// What the node acknowledged before the cut.
#[derive(Default)]
struct Acked {
    /// Acknowledged writes: (write number, position).
    writes: Vec<(u64, LogPosition)>,
}

/// Runs the workload on `disk` until it ends or the power fails: two
/// lives of the node (a clean restart between them, so the second
/// election, in term 2, happens over a log that already has a segment),
/// each writing half of the keys.
async fn workload(disk: &Arc<SimBackend>, identity: &TlsIdentity) -> Acked {
    let mut acked = Acked::default();
    let writes = WRITERS * WRITES_EACH;
    for life in [0..writes / 2, writes / 2..writes] {
        if disk.is_powered_off() {
            break;
        }
        let Ok(node) = Node::start(Arc::clone(disk), identity) else {
            assert!(
                disk.is_powered_off(),
                "the node fails to start on a powered disk"
            );
            break;
        };
        if node.until_leader().await {
            let mut writers = tokio::task::JoinSet::new();
            for w in 0..WRITERS {
                let handle = node.handle.clone();
                let mine: Vec<u64> = life.clone().filter(|i| i % WRITERS == w).collect();
                writers.spawn(async move {
                    let mut acked = Vec::new();
                    for i in mine {
                        let put = ClientOp::Put {
                            key: key(i),
                            value: value(i),
                        };
                        let reply =
                            tokio::time::timeout(WAIT, handle.request(put, Some(AckMode::Quorum)))
                                .await
                                .expect("answered in time");
                        match reply {
                            Ok(Reply::Written { position }) => acked.push((i, position)),
                            Ok(_) | Err(_) => break, // the power failed
                        }
                    }
                    acked
                });
            }
            while let Some(done) = writers.join_next().await {
                acked.writes.extend(done.unwrap());
            }
        }
        // A cut after the last write may come while the driver shuts
        // down, and go unnoticed; an error without a cut is a bug.
        if let Err(e) = node.stop().await {
            assert!(
                disk.is_powered_off(),
                "the driver failed on a powered disk: {e}"
            );
        }
    }
    acked
}

/// Restarts the node on what survived and checks the rule; `Err` names
/// the violation.
async fn check_after_cut(
    rebooted: Arc<SimBackend>,
    acked: &Acked,
    identity: &TlsIdentity,
) -> Result<(), String> {
    let hard = driver::read_hard_state(&*rebooted).map_err(|e| e.to_string())?;
    if let Some((i, position)) = acked.writes.iter().max_by_key(|(_, p)| p.term) {
        if hard.term < position.term {
            return Err(format!(
                "write {i} was acknowledged at {position:?}, but the hard state after the cut \
                 is {hard:?}: the node would vote again in a term it acted in"
            ));
        }
    }
    // A node that wrote an entry of term T (or a snapshot reaching one)
    // had taken term T, and voted in it: its hard state must say so, or it
    // could vote in T again.
    {
        let backend: Arc<dyn Backend> = rebooted.clone();
        let store = Store::open_with_backend(backend, options())
            .map_err(|e| format!("the store does not open: {e}"))?;
        let snapshot = driver::read_snapshot(&*rebooted).map_err(|e| e.to_string())?;
        let last = store.last_position();
        let snapshot_last = snapshot.map(|s| s.last).unwrap_or_default();
        for (what, position) in [("the log", last), ("the snapshot", snapshot_last)] {
            if hard.term < position.term {
                return Err(format!(
                    "{what} ends at {position:?} but the hard state is {hard:?}: the hard \
                     state of term {} was not durable before the node wrote in that term",
                    position.term
                ));
            }
        }
    }
    let node = Node::start(rebooted, identity)?;
    if !node.until_leader().await {
        return Err(format!(
            "the restarted node stopped: {:?}",
            node.stop().await
        ));
    }
    let term = node.handle.status().await.map_err(|e| e.to_string())?.term;
    for &(i, position) in &acked.writes {
        if term <= position.term {
            return Err(format!(
                "the restarted node leads term {term}, not after the term of write {i} at \
                 {position:?}"
            ));
        }
        let get = ClientOp::Get {
            key: key(i),
            consistency: Some(ReadMode::Leader),
        };
        let reply = tokio::time::timeout(WAIT, node.handle.request(get, None))
            .await
            .expect("answered in time")
            .map_err(|e| e.to_string())?;
        match reply {
            Reply::Value { value: Some(v), .. } if v == value(i) => {}
            other => {
                return Err(format!(
                    "write {i}, acknowledged at {position:?}, is lost: the read gives {other:?}"
                ))
            }
        }
    }
    node.stop()
        .await
        .map_err(|e| format!("the restarted node failed: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_power_cut_at_any_operation_nothing_acknowledged_is_lost_and_no_vote_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let request = CertRequest {
        nodes: vec!["n1".into()],
        ..CertRequest::default()
    };
    generate_certs(&certs, &request, false).unwrap();
    let identity = TlsIdentity::from_dir(&certs, "node-n1").unwrap();
    let stride: u64 = std::env::var("LF_POWER_CUT_STRIDE")
        .map(|s| s.parse().expect("LF_POWER_CUT_STRIDE is a number"))
        .unwrap_or(1)
        .max(1);

    // A run without a cut: how many operations the workload takes, and
    // that it writes everything and takes snapshots.
    let disk = Arc::new(SimBackend::new());
    let acked = workload(&disk, &identity).await;
    assert_eq!(acked.writes.len() as u64, WRITERS * WRITES_EACH);
    let total = disk.operations();
    let names = disk.list().unwrap();
    assert!(
        names.iter().any(|n| n == driver::SNAPSHOT_FILE),
        "the workload takes snapshots: {names:?}"
    );
    check_after_cut(Arc::new(disk.reboot(Unsynced::Lost)), &acked, &identity)
        .await
        .unwrap();

    let mut failures = Vec::new();
    let (mut runs, mut acked_before_cut) = (0, 0);
    let mut cut = 1;
    while cut <= total {
        let disk = Arc::new(SimBackend::new());
        disk.schedule_power_cut(cut);
        let acked = workload(&disk, &identity).await;
        let unsynced = if cut % 2 == 0 {
            Unsynced::Lost
        } else {
            Unsynced::Torn { seed: cut }
        };
        runs += 1;
        acked_before_cut += acked.writes.len();
        if let Err(e) = check_after_cut(Arc::new(disk.reboot(unsynced)), &acked, &identity).await {
            failures.push(format!(
                "cut at operation {cut} of {total} ({unsynced:?}): {e}"
            ));
            if failures.len() >= 5 {
                break;
            }
        }
        cut += stride;
    }
    assert!(
        failures.is_empty(),
        "{} violations, first ones:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        acked_before_cut > 0,
        "{runs} runs, and no write was acknowledged before a cut: nothing was checked"
    );
    eprintln!(
        "{runs} power cuts over {total} operations; {acked_before_cut} acknowledged writes checked"
    );
}
