//! The tokio driver, run for real: a one-node cluster over a real store,
//! hard-state file and peer bus on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_leader_follower::driver::{self, Driver, Handle, NodeNames};
use mimeo_leader_follower::{ClientOp, Config, Millis, Reply, Role};
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
    let certs = dir.path().join("certs");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let request = CertRequest {
        nodes: vec!["n1".into()],
        ..CertRequest::default()
    };
    generate_certs(&certs, &request, false).unwrap();
    let identity = TlsIdentity::from_dir(&certs, "node-n1").unwrap();
    let transport = TransportConfig::default();
    let endpoint = client_endpoint(&identity, &transport).unwrap();
    let (bus, _bus_inbound) =
        PeerBus::new(endpoint, "n1".into(), Vec::new(), "test".into(), transport).unwrap();

    let names = NodeNames::new(vec!["n1".into()]);
    let store = Arc::new(Store::open(&data.join("log"), Options::default()).unwrap());
    let config = Config::new(names.id("n1").unwrap(), Vec::new());
    let origin = Instant::now();
    let core = driver::recover(config, &store, &data, Millis(0)).unwrap();
    let (driver, handle) = Driver::new(core, names, Arc::new(bus), inbound, store, data, origin);
    tokio::spawn(async move {
        if let Err(e) = driver.run().await {
            panic!("driver stopped: {e}");
        }
    });
    (handle, dir)
}

/// Waits (bounded) until the node leads.
async fn until_leader(handle: &Handle) {
    let deadline = Instant::now() + WAIT;
    while handle.status().await.unwrap().role != Role::Leader {
        assert!(Instant::now() < deadline, "no leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_peer_channel_neither_stops_the_node_nor_spins() {
    let (senders, inbound) = mpsc::channel(16);
    drop(senders);
    let (handle, _dir) = start(inbound);
    until_leader(&handle).await;

    // Idle for a second: heartbeats to nobody cost next to nothing, a loop
    // on a closed channel costs a whole core.
    let (wall, cpu) = (Instant::now(), cpu_time());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_time() - cpu;
    assert!(
        used < wall.elapsed() / 4,
        "{used:?} of CPU in {:?} of idling",
        wall.elapsed()
    );

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
