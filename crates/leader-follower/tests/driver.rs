//! The tokio driver, run for real: a one-node cluster over a real store,
//! hard-state file and peer bus on 127.0.0.1.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_leader_follower::driver::{self, Driver, Handle, NodeNames};
use mimeo_leader_follower::{ClientOp, Config, Millis, NodeId, Reply, Role};
use mimeo_storage::{Options, Store};
use mimeo_wire::{
    client_endpoint, generate_certs, CertRequest, PeerBus, PeerMessage, TlsIdentity,
    TransportConfig,
};
use tokio::sync::mpsc;

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// A one-node cluster's driver, started with `inbound` as its peer
/// messages; returns its handle and the directories it lives in.
fn start(inbound: mpsc::Receiver<PeerMessage>) -> (Handle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), inbound, Config::new, Options::default());
    (node.handle, dir)
}

/// A running one-node cluster.
struct Node {
    handle: Handle,
    store: Arc<Store>,
    driver: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Starts (or restarts) the node living in `dir`, with the
    /// configuration `config` makes for its id and no peers.
    fn start(
        dir: &Path,
        inbound: mpsc::Receiver<PeerMessage>,
        config: impl FnOnce(NodeId, Vec<NodeId>) -> Config,
        options: Options,
    ) -> Node {
        let certs = dir.join("certs");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        if !certs.exists() {
            let request = CertRequest {
                nodes: vec!["n1".into()],
                ..CertRequest::default()
            };
            generate_certs(&certs, &request, false).unwrap();
        }
        let identity = TlsIdentity::from_dir(&certs, "node-n1").unwrap();
        let transport = TransportConfig::default();
        let endpoint = client_endpoint(&identity, &transport).unwrap();
        let (bus, _bus_inbound) =
            PeerBus::new(endpoint, "n1".into(), Vec::new(), "test".into(), transport).unwrap();

        let names = NodeNames::new(vec!["n1".into()]);
        let store =
            Arc::new(Store::open(&data.join("log"), driver::store_options(options)).unwrap());
        // The hard state and snapshots beside the log, through its backend.
        let backend = Arc::clone(store.backend());
        let config = config(names.id("n1").unwrap(), Vec::new());
        let origin = Instant::now();
        let core = driver::recover(config, &store, &*backend, Millis(0)).unwrap();
        let (driver, handle) = Driver::new(
            core,
            names,
            Arc::new(bus),
            inbound,
            Arc::clone(&store),
            backend,
            origin,
        );
        let driver = tokio::spawn(async move {
            if let Err(e) = driver.run().await {
                panic!("driver stopped: {e}");
            }
        });
        Node {
            handle,
            store,
            driver,
        }
    }

    /// Drops the handle and waits (bounded) for the driver to finish.
    async fn stop(self) {
        drop(self.handle);
        tokio::time::timeout(WAIT, self.driver)
            .await
            .expect("the driver stops once its handles are gone")
            .unwrap();
    }
}

/// Waits (bounded) until the node leads.
async fn until_leader(handle: &Handle) {
    let deadline = Instant::now() + WAIT;
    while handle.status().await.unwrap().role != Role::Leader {
        assert!(Instant::now() < deadline, "no leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_node_cluster_elects_itself_and_acknowledges_writes() {
    let (_keep, inbound) = mpsc::channel(16);
    let (handle, _dir) = start(inbound);
    until_leader(&handle).await;
    let put = ClientOp::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    };
    let reply = tokio::time::timeout(WAIT, handle.request(put, None))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(matches!(reply, Reply::Written { .. }), "{reply:?}");
}

/// At most this many wake-ups of an idle one-node driver's loop in a
/// second: ten times what its 50 ms heartbeat timer needs, so a slow
/// machine does not fail it, and far below the millions of a spin.
const MAX_IDLE_WAKEUPS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_peer_channel_neither_stops_the_node_nor_spins() {
    let (senders, inbound) = mpsc::channel(16);
    drop(senders);
    let (handle, _dir) = start(inbound);
    until_leader(&handle).await;

    // Idle for a second: the loop wakes for its timers (a heartbeat every
    // 50 ms, to nobody), about 20 times; a loop on a closed channel wakes
    // without end (millions of times). Counted by this driver itself, so
    // the other tests of this binary, running beside it, do not count.
    let (wall, before) = (Instant::now(), handle.wakeups());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let woke = handle.wakeups() - before;
    assert!(
        woke <= MAX_IDLE_WAKEUPS,
        "the driver loop woke {woke} times in {:?} of idling (at most {MAX_IDLE_WAKEUPS})",
        wall.elapsed()
    );
    eprintln!("idle for {:?}: {woke} wake-ups", wall.elapsed());

    let get = ClientOp::Get {
        key: b"k".to_vec(),
        consistency: None,
    };
    let reply = tokio::time::timeout(WAIT, handle.request(get, None))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(
        matches!(reply, Reply::Value { value: None, .. }),
        "{reply:?}"
    );
}

/// Waits (bounded) until `done` holds, polling every 20 ms.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_writes_go_on_are_what_a_restart_recovers_from() {
    const WRITES: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let config = |id, peers| {
        let mut config = Config::new(id, peers);
        config.snapshot_every = 100;
        config.snapshot_keep = 10;
        config
    };
    // Small segments, so that discarding the log before a snapshot removes
    // whole segments.
    let options = || Options {
        segment_bytes: 4096,
        ..Options::default()
    };
    let value = |i: usize| format!("value {i}").into_bytes();
    let key = |i: usize| format!("key {}", i % 250).into_bytes();

    let (_keep, inbound) = mpsc::channel(16);
    let node = Node::start(dir.path(), inbound, config, options());
    until_leader(&node.handle).await;
    // Sixteen writers at once, so snapshots are written while appends wait
    // for their fsyncs.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16 {
        let handle = node.handle.clone();
        writers.spawn(async move {
            for i in (w..WRITES).step_by(16) {
                let put = ClientOp::Put {
                    key: key(i),
                    value: value(i),
                };
                let reply = tokio::time::timeout(WAIT, handle.request(put, None))
                    .await
                    .expect("answered in time")
                    .unwrap();
                assert!(matches!(reply, Reply::Written { .. }), "{reply:?}");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    // Every write was acknowledged; the snapshots and the discards that
    // follow them finish in the background.
    let backend = Arc::clone(node.store.backend());
    until("a snapshot of at least 500 entries", || {
        driver::read_snapshot(&*backend)
            .unwrap()
            .is_some_and(|s| s.last.index >= 500)
    })
    .await;
    let store = Arc::clone(&node.store);
    until("the log before the snapshot discarded", || {
        store.first_index() > 100
    })
    .await;
    drop(store);
    node.stop().await;

    // The restarted node holds every key's last value.
    let (_keep, inbound) = mpsc::channel(16);
    let node = Node::start(dir.path(), inbound, config, options());
    until_leader(&node.handle).await;
    for i in WRITES - 250..WRITES {
        let get = ClientOp::Get {
            key: key(i),
            consistency: None,
        };
        let reply = tokio::time::timeout(WAIT, node.handle.request(get, None))
            .await
            .expect("answered in time")
            .unwrap();
        match reply {
            Reply::Value { value: Some(v), .. } => assert_eq!(v, value(i), "key {}", i % 250),
            other => panic!("key {}: {other:?}", i % 250),
        }
    }
    node.stop().await;
}
