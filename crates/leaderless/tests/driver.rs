//! The tokio driver, run for real: five nodes on 127.0.0.1 (N = 3), each
//! with a real store (files, fsync) and a peer bus over QUIC with mutual
//! TLS. Writes at one node are read at another; a node stopped during
//! writes holds them once it is back, by hinted handoff alone (no read
//! touches the keys, anti-entropy and read repair are off); a restarted
//! node reads its data back from its store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_leaderless::driver::{self, Driver, DriverConfig, Handle};
use mimeo_leaderless::{ClientOp, Config, Millis, Quorum, ReadRepair, ReadValue, Reply, Ring};
use mimeo_storage::{Options, Store};
use mimeo_testkit::{cluster_certs, PeerHost};

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);
const IDS: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

struct Node {
    host: PeerHost,
    data: PathBuf,
    running: Option<(Handle, tokio::task::JoinHandle<()>)>,
}

fn config(id: &str) -> Config {
    let mut config = Config::new(id, IDS);
    config.sloppy = true;
    config.read_repair = ReadRepair::Off;
    // Anti-entropy off in effect: hints alone must deliver.
    config.anti_entropy_interval_ms = 3_600_000;
    config.hint_interval_ms = 50;
    config
}

impl Node {
    fn new(dir: &Path, id: &'static str) -> Node {
        Node {
            host: PeerHost::new(dir, id),
            data: dir.join(id),
            running: None,
        }
    }

    fn start(&mut self, peers: &[(&'static str, SocketAddr)]) {
        let (bus, inbound) = self.host.connect(peers);
        let store =
            Arc::new(Store::open(&self.data, driver::store_options(Options::default())).unwrap());
        let origin = Instant::now();
        let core = driver::recover(config(self.host.id()), &store, Millis(0)).unwrap();
        let (driver, handle) =
            Driver::new(core, bus, inbound, store, origin, DriverConfig::default());
        let task = tokio::spawn(async move {
            if let Err(e) = driver.run().await {
                panic!("driver stopped: {e}");
            }
        });
        self.running = Some((handle, task));
    }

    fn handle(&self) -> &Handle {
        &self.running.as_ref().expect("running").0
    }

    async fn stop(&mut self) {
        let (handle, task) = self.running.take().expect("running");
        self.host.disconnect();
        drop(handle);
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the driver stops once its handles are gone")
            .unwrap();
    }

    /// Waits (bounded) until this node sees `peers` reachable.
    async fn until_reachable(&self, peers: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.handle().status().await.unwrap();
            if status.reachable.len() == peers {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "reachable: {:?}",
                status.reachable
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn cluster(dir: &Path) -> (Vec<Node>, Vec<(&'static str, SocketAddr)>) {
    cluster_certs(dir, &IDS);
    let mut nodes: Vec<Node> = IDS.iter().map(|id| Node::new(dir, id)).collect();
    let addrs: Vec<_> = nodes.iter().map(|n| (n.host.id(), n.host.addr())).collect();
    for node in &mut nodes {
        node.start(&addrs);
    }
    for node in &nodes {
        node.until_reachable(IDS.len() - 1).await;
    }
    (nodes, addrs)
}

async fn request(handle: &Handle, op: ClientOp, quorum: Quorum) -> Reply {
    tokio::time::timeout(WAIT, handle.request(op, quorum))
        .await
        .expect("answered in time")
        .expect("driver running")
}

async fn put(handle: &Handle, key: &str, value: &str) {
    let op = ClientOp::Put {
        key: key.into(),
        value: value.into(),
        context: None,
    };
    match request(handle, op, Quorum::default()).await {
        Reply::Written { .. } => {}
        other => panic!("put {key}: {other:?}"),
    }
}

async fn get(handle: &Handle, key: &str, r: usize) -> ReadValue {
    let op = ClientOp::Get { key: key.into() };
    let quorum = Quorum {
        r: Some(r),
        ..Quorum::default()
    };
    match request(handle, op, quorum).await {
        Reply::Value { value, .. } => value,
        other => panic!("get {key}: {other:?}"),
    }
}

fn values(value: &ReadValue) -> Vec<Vec<u8>> {
    match value {
        ReadValue::Register { values, .. } => values.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_at_one_node_are_read_at_another_and_a_restart_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = cluster(dir.path()).await;
    for i in 0..20 {
        put(nodes[i % 5].handle(), &format!("k{i}"), &format!("v{i}")).await;
    }
    for i in 0..20 {
        let read = get(nodes[(i + 2) % 5].handle(), &format!("k{i}"), 2).await;
        assert_eq!(values(&read), [format!("v{i}").into_bytes()], "k{i}");
    }
    // Every node restarts from its store; reads at R = N see every write.
    for node in &mut nodes {
        node.stop().await;
    }
    for node in &mut nodes {
        node.start(&addrs);
    }
    for node in &nodes {
        node.until_reachable(IDS.len() - 1).await;
    }
    for i in 0..20 {
        let read = get(nodes[(i + 1) % 5].handle(), &format!("k{i}"), 3).await;
        assert_eq!(values(&read), [format!("v{i}").into_bytes()], "k{i}");
    }
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_writes_holds_them_after_it_returns_by_hints_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = cluster(dir.path()).await;
    let ring = Ring::new(&config("n1").nodes, config("n1").vnodes).unwrap();
    // n5 goes down; the others notice before the writes.
    nodes[4].stop().await;
    for node in &nodes[..4] {
        node.until_reachable(3).await;
    }
    let mut owned = Vec::new();
    for i in 0..40 {
        let key = format!("h{i}");
        put(nodes[i % 4].handle(), &key, &format!("v{i}")).await;
        if ring
            .preference_list(key.as_bytes(), 3)
            .contains(&"n5".into())
        {
            owned.push((key, format!("v{i}")));
        }
    }
    assert!(!owned.is_empty(), "n5 owns some of the keys");
    let mut pending = 0;
    for node in &nodes[..4] {
        let status = node.handle().status().await.unwrap();
        pending += status.hints_pending.get("n5").map_or(0, |(n, _)| *n);
    }
    assert!(pending > 0, "fallbacks hold hints for n5");
    // n5 returns: the fallbacks hand their hints over, no read involved.
    nodes[4].start(&addrs);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut left = 0;
        for node in &nodes[..4] {
            let status = node.handle().status().await.unwrap();
            left += status.hints_pending.get("n5").map_or(0, |(n, _)| *n);
        }
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} hints still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What n5 holds durably: stop it and read its store.
    nodes[4].stop().await;
    let store = Store::open(&nodes[4].data, driver::store_options(Options::default())).unwrap();
    let core = driver::recover(config("n5"), &store, Millis(0)).unwrap();
    for (key, value) in &owned {
        let state = core
            .state(key.as_bytes())
            .unwrap_or_else(|| panic!("n5 misses {key}"));
        assert_eq!(values(&state.read_value()), [value.clone().into_bytes()]);
    }
    drop(store);
    for node in &mut nodes[..4] {
        node.stop().await;
    }
}
