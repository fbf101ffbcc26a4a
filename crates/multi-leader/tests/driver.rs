//! The tokio driver, run for real: three nodes on 127.0.0.1, each with a
//! real store (files, fsync) and a peer bus over QUIC with mutual TLS,
//! taking writes on every node; and a node restarted from its store.
//! Memory logs are a few writes long, so catch-up reads the stores.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_multi_leader::driver::{self, Driver, DriverConfig, Handle};
use mimeo_multi_leader::{ClientOp, Config, Millis, ReadValue, Reply, VersionVector};
use mimeo_storage::{Options, Store};
use mimeo_testkit::{cluster_certs, PeerHost};

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);
const IDS: [&str; 3] = ["n1", "n2", "n3"];

/// One node: its QUIC host (kept across driver restarts), its data
/// directory, and the running driver.
struct Node {
    host: PeerHost,
    data: PathBuf,
    running: Option<(Handle, tokio::task::JoinHandle<()>)>,
}

impl Node {
    fn new(dir: &Path, id: &'static str) -> Node {
        Node {
            host: PeerHost::new(dir, id),
            data: dir.join(id),
            running: None,
        }
    }

    /// Starts (or restarts) the driver over the node's store.
    fn start(&mut self, peers: &[(&'static str, SocketAddr)]) {
        let (bus, inbound) = self.host.connect(peers);
        let store =
            Arc::new(Store::open(&self.data, driver::store_options(Options::default())).unwrap());
        let origin = Instant::now();
        let mut config = Config::new(self.host.id(), IDS);
        // A memory log of a few writes: catch-up reads the store.
        config.log_bytes = 512;
        let recovered = driver::recover(config, &store, Millis(0)).unwrap();
        let (driver, handle) = Driver::new(
            recovered,
            bus,
            inbound,
            store,
            origin,
            DriverConfig::default(),
        );
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

    /// Drops the handle and waits (bounded) for the driver to finish,
    /// which closes its store.
    async fn stop(&mut self) {
        let (handle, task) = self.running.take().expect("running");
        self.host.disconnect();
        drop(handle);
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the driver stops once its handles are gone")
            .unwrap();
    }
}

fn cluster(dir: &Path) -> (Vec<Node>, Vec<(&'static str, SocketAddr)>) {
    cluster_certs(dir, &IDS);
    let mut nodes: Vec<Node> = IDS.iter().map(|id| Node::new(dir, id)).collect();
    let addrs: Vec<_> = nodes.iter().map(|n| (n.host.id(), n.host.addr())).collect();
    for node in &mut nodes {
        node.start(&addrs);
    }
    (nodes, addrs)
}

async fn request(handle: &Handle, op: ClientOp) -> Reply {
    tokio::time::timeout(WAIT, handle.request(op, None))
        .await
        .expect("answered in time")
        .expect("driver running")
}

async fn put(handle: &Handle, key: &str, value: &str) -> VersionVector {
    let op = ClientOp::Put {
        key: key.into(),
        value: value.into(),
        context: None,
    };
    match request(handle, op).await {
        Reply::Written { session, .. } => session,
        other => panic!("put {key}: {other:?}"),
    }
}

async fn get(handle: &Handle, key: &str) -> ReadValue {
    let op = ClientOp::Get {
        key: key.into(),
        session: None,
        timeout_ms: None,
    };
    match request(handle, op).await {
        Reply::Value { value, .. } => value,
        other => panic!("get {key}: {other:?}"),
    }
}

/// Waits (bounded) until every running node has applied `vector` and
/// holds the same value for each of `keys`.
async fn until_converged(nodes: &[Node], vector: &VersionVector, keys: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut applied = Vec::new();
        let mut values = Vec::new();
        for node in nodes {
            applied.push(node.handle().status().await.unwrap().applied);
            let mut mine = Vec::new();
            for key in keys {
                mine.push(get(node.handle(), key).await);
            }
            values.push(mine);
        }
        let done = applied.iter().all(|a| a.descends(vector))
            && applied.windows(2).all(|w| w[0] == w[1])
            && values.windows(2).all(|w| w[0] == w[1]);
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not converged within {WAIT:?}: applied {applied:?}, values {values:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn register(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_taking_writes_converge() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = cluster(dir.path());
    let mut all = VersionVector::new();
    for (i, node) in nodes.iter().enumerate() {
        // A key of its own, and one every node writes blind (siblings).
        all.join(&put(node.handle(), &format!("own{i}"), &format!("v{i}")).await);
        all.join(&put(node.handle(), "shared", &format!("s{i}")).await);
        let inc = ClientOp::Increment {
            key: b"count".to_vec(),
            delta: i as i64 + 1,
        };
        let Reply::Written { session, .. } = request(node.handle(), inc).await else {
            panic!("increment refused")
        };
        all.join(&session);
    }
    let keys = ["own0", "own1", "own2", "shared", "count"];
    until_converged(&nodes, &all, &keys).await;
    for node in &nodes {
        assert_eq!(get(node.handle(), "count").await, ReadValue::Counter(6));
        let ReadValue::Register { values, .. } = get(node.handle(), "own2").await else {
            panic!()
        };
        assert_eq!(values, register(&["v2"]));
    }
    // A session read on n3 of what n1 wrote waits for it, bounded.
    let session = put(nodes[0].handle(), "after", "x").await;
    let op = ClientOp::Get {
        key: b"after".to_vec(),
        session: Some(session),
        timeout_ms: Some(10_000),
    };
    let Reply::Value {
        value: ReadValue::Register { values, .. },
        ..
    } = request(nodes[2].handle(), op).await
    else {
        panic!("session read")
    };
    assert_eq!(values, register(&["x"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_writes_and_catches_up_on_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = cluster(dir.path());
    let mut all = VersionVector::new();
    all.join(&put(nodes[2].handle(), "mine", "before").await);
    all.join(&put(nodes[0].handle(), "theirs", "before").await);
    until_converged(&nodes, &all, &["mine", "theirs"]).await;

    // n3 stops; n1 and n2 go on writing.
    nodes[2].stop().await;
    for i in 0..50 {
        all.join(
            &put(
                nodes[i % 2].handle(),
                &format!("k{}", i % 7),
                &format!("w{i}"),
            )
            .await,
        );
    }
    let ReadValue::Register { context, .. } = get(nodes[0].handle(), "theirs").await else {
        panic!("theirs")
    };
    let delete = ClientOp::Delete {
        key: b"theirs".to_vec(),
        context: Some(context),
    };
    let Reply::Written { session, .. } = request(nodes[0].handle(), delete).await else {
        panic!("delete refused")
    };
    all.join(&session);

    // n3 comes back from its store: its own write is there before any
    // peer has spoken, and it catches up on the rest.
    nodes[2].start(&addrs);
    let ReadValue::Register { values, .. } = get(nodes[2].handle(), "mine").await else {
        panic!("n3 lost its write")
    };
    assert_eq!(values, register(&["before"]));
    let status = nodes[2].handle().status().await.unwrap();
    // Its incarnation (`n3.<epoch>`, from its first start) is kept.
    assert!(status.actor.as_str().starts_with("n3."), "{status:?}");
    assert!(status.applied.get(status.actor.as_str()) >= 1, "{status:?}");
    let keys: Vec<String> = (0..7).map(|k| format!("k{k}")).collect();
    let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    keys.extend(["mine", "theirs"]);
    until_converged(&nodes, &all, &keys).await;
    // Deleted: a tombstone, or nothing once every node has it (collected).
    match get(nodes[2].handle(), "theirs").await {
        ReadValue::Absent => {}
        ReadValue::Register {
            deleted: true,
            values,
            ..
        } if values.is_empty() => {}
        other => panic!("theirs was deleted, n3 reads {other:?}"),
    }
    // A write on n3 after the restart continues its sequence.
    let session = put(nodes[2].handle(), "mine", "after").await;
    assert_eq!(session.get(status.actor.as_str()), 2);
}
