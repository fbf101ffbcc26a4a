//! A client holding a valid certificate that misbehaves: it opens every
//! stream it may, announces the largest frames and sends part of them,
//! opens connection after connection, or never says hello. The node keeps
//! serving a well-behaved client throughout, and stays within a stated
//! memory bound.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mimeo_wire::{client_endpoint, connect, Protocol, TlsIdentity, TransportConfig};
use support::*;

/// What the node may hold (resident memory) under the attacks below: one
/// connection's request budget and receive window (8 + 4 MiB by default)
/// on top of an idle node's few tens of MiB, with room to spare.
const RSS_BOUND_KIB: u64 = 150 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// A put and a get through the CLI, as a well-behaved client.
fn well_behaved(dir: &Path, addr: SocketAddr, key: &str) {
    let out = cli(dir, addr, &["put", key, "v"]);
    assert!(
        out.status.success(),
        "put {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(dir, addr, &["get", key]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_client_cannot_exhaust_the_node_and_others_keep_being_served() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let config = write_config(dir.path(), addr, "batch", "");
    let node = start_node(&config, addr);
    let pid = node.child.id();
    let certs = dir.path().join("certs");
    let transport = TransportConfig::default();

    // 1. One connection: as many request streams as it may open, each
    // announcing a 4 MiB frame and sending 256 KiB of it, then nothing.
    let hostile = TlsIdentity::from_dir(&certs, "client-bench").unwrap();
    let endpoint = client_endpoint(&hostile, &transport).unwrap();
    let (conn, _) = connect(&endpoint, addr, "mimeo", Protocol::Client, &transport)
        .await
        .unwrap();
    let mut streams = Vec::new();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..1024 {
        let Ok(Ok((mut send, recv))) =
            tokio::time::timeout(Duration::from_millis(200), conn.open_bi()).await
        else {
            break;
        };
        streams.push(recv);
        senders.spawn(async move {
            let announced = (mimeo_wire::DEFAULT_MAX_FRAME as u32).to_be_bytes();
            let part = vec![7u8; 256 * 1024];
            let _ = send.write_all(&announced).await;
            let _ = send.write_all(&part).await;
            // Hold the stream open, sending nothing more.
            std::future::pending::<()>().await;
        });
    }
    let opened = streams.len();
    assert!(
        opened <= transport.max_concurrent_streams as usize,
        "{opened} streams opened"
    );
    // Whatever the node takes in, it takes while the senders push: watch
    // its memory the whole time (2 s), not only at the end.
    let watch_until = std::time::Instant::now() + Duration::from_secs(2);
    let mut peak = 0;
    while std::time::Instant::now() < watch_until {
        peak = peak.max(rss_kib(pid));
        assert!(
            peak < RSS_BOUND_KIB,
            "the node holds {peak} KiB with {opened} half-sent 4 MiB frames"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || well_behaved(&dir_path, addr, "during-streams"))
        .await
        .unwrap();

    // 2. Connection after connection with one certificate: the node takes
    // limits.max_connections_per_identity (64) of them and refuses the
    // rest, with the reason.
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..80 {
        match connect(&endpoint, addr, "mimeo", Protocol::Client, &transport).await {
            Ok((conn, _)) => held.push(conn),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    // The first hostile connection counts too.
    assert_eq!(
        held.len() + 1,
        64,
        "connections accepted for one certificate"
    );
    let refused = refused.expect("the 65th connection is refused");
    assert!(
        refused.contains("max_connections_per_identity"),
        "{refused}"
    );
    // Another certificate is served all the while.
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || well_behaved(&dir_path, addr, "during-connections"))
        .await
        .unwrap();

    // 3. A connection that never says hello is closed by the node.
    drop(held);
    let admin = TlsIdentity::from_dir(&certs, "admin-ops").unwrap();
    let silent = client_endpoint(&admin, &transport)
        .unwrap()
        .connect(addr, mimeo_wire::NODE_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(15), silent.closed())
        .await
        .expect("a silent connection is closed within the hello timeout");
    assert!(closed.to_string().contains("no hello"), "{closed}");

    let rss = rss_kib(pid);
    assert!(rss < RSS_BOUND_KIB, "the node holds {rss} KiB at the end");
    drop(streams);
    senders.abort_all();
}
