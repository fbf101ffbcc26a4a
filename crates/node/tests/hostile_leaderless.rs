//! A hostile (or unlucky) user against five real `mimeo serve` processes
//! in leaderless mode on 127.0.0.1 (N = 3):
//!
//! - values of 64 KiB and 1 MiB written through one node are read back
//!   intact through every node with R = 3 (every replica answers); one
//!   byte over `limits.max_value_bytes` is refused naming it, and the
//!   node goes on serving;
//! - blind writes piling 1 MiB siblings onto one key. Found and left
//!   `#[ignore]`d: past one peer message the write times out instead of
//!   being refused naming a bound;
//! - a client that opens every stream it may and sends nothing: another
//!   client's requests are still served within a bound;
//! - a second process on a served data directory is refused, naming the
//!   directory and the holder;
//! - a member whose data directory was wiped comes back: no write
//!   acknowledged before or after the wipe may be lost;
//! - a replica whose disk fails an fsync does not acknowledge a write that
//!   needs it (W = 3) and exits saying why.

mod support;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mimeo_client::{Client, ClientConfig, QuorumOverride, VersionedValue};
use mimeo_leaderless::Ring;
use mimeo_wire::{client_endpoint, connect, Protocol, TlsIdentity, TransportConfig};
use support::*;

/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(30);
const IDS: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

/// Writes `dir/<id>.toml` for a leaderless node of `addrs`, with `storage`
/// and `replication` appended to those sections.
fn write_ll_config(
    dir: &Path,
    id: &str,
    addrs: &[(String, SocketAddr)],
    storage: &str,
    replication: &str,
) -> PathBuf {
    let me = addrs.iter().find(|(n, _)| n == id).unwrap().1;
    let mut text = format!(
        "node_id = \"{id}\"\nlisten = \"{me}\"\ndata_dir = \"data/{id}\"\nmode = \"leaderless\"\n\
         [tls]\ndir = \"certs\"\n[storage]\nfsync = \"batch\"\n{storage}\
         [replication]\n{replication}"
    );
    for (peer, addr) in addrs.iter().filter(|(n, _)| n != id) {
        text += &format!("[[replication.peers]]\nid = \"{peer}\"\naddr = \"{addr}\"\n");
    }
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Certificates for n1..n5 and a config for each (`storage` for n1 only);
/// returns the configs and the addresses.
fn configs(dir: &Path, n1_storage: &str, replication: &str) -> (Vec<PathBuf>, Vec<SocketAddr>) {
    let out = run(
        dir,
        &["certs", "init", "--dir", "certs", "--nodes", &IDS.join(",")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addrs: Vec<(String, SocketAddr)> =
        IDS.iter().map(|id| (id.to_string(), free_addr())).collect();
    let configs = addrs
        .iter()
        .map(|(id, _)| {
            let storage = if id == "n1" { n1_storage } else { "" };
            write_ll_config(dir, id, &addrs, storage, replication)
        })
        .collect();
    (configs, addrs.into_iter().map(|(_, a)| a).collect())
}

fn start_all(configs: &[PathBuf], addrs: &[SocketAddr]) -> Vec<Option<Node>> {
    configs
        .iter()
        .zip(addrs)
        .map(|(c, a)| Some(start_node(c, *a)))
        .collect()
}

/// A client of `node` alone (it coordinates every request), asking
/// `quorum` of each.
fn pinned(dir: &Path, node: SocketAddr, quorum: Option<QuorumOverride>) -> Client {
    let identity = TlsIdentity::from_dir(&dir.join("certs"), "client-cli").unwrap();
    let mut config = ClientConfig::new(vec![node], "mimeo", identity);
    config.connect_timeout = Duration::from_millis(500);
    config.max_redirects = 0;
    // Not the client's default 300 ms idle timeout: with it, a 1 MiB
    // write with W = 3 went unacknowledged (debug build; a multi-leader
    // node stalls past 300 ms on such writes, see
    // hostile_multi_leader.rs), and the point here is what arrives.
    config.transport.idle_timeout = Duration::from_secs(3);
    config.transport.keep_alive = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(20);
    config.quorum = quorum;
    Client::new(config).unwrap()
}

/// Every replica answers reads; every replica takes writes.
fn all_three() -> Option<QuorumOverride> {
    Some(QuorumOverride {
        w: Some(3),
        r: Some(3),
        pw: None,
        pr: None,
        dw: None,
    })
}

/// Waits (bounded) until every node of `clients` holds every write of
/// `acknowledged`; fails naming, per node, the keys it lacks or holds
/// otherwise.
async fn until_all_hold(clients: &[Client], acknowledged: &[(String, Vec<u8>)]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut wrong: Vec<String> = Vec::new();
        for (client, id) in clients.iter().zip(IDS) {
            let mut lacking = Vec::new();
            for (key, value) in acknowledged {
                let held = match client.get_versioned(key, None, None).await {
                    Ok(read) => match read.value {
                        VersionedValue::Register { values, .. } => values == [value.clone()],
                        _ => false,
                    },
                    Err(_) => false,
                };
                if !held {
                    lacking.push(key.as_str());
                }
            }
            if !lacking.is_empty() {
                wrong.push(format!("{id} lacks {}", lacking.join(" ")));
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged writes missing {WAIT:?} after the wiped node returned: {}",
            wrong.join("; ")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `len` bytes that are not all alike, so a truncated or shifted copy
/// shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + seed as u64) as u8 ^ (i >> 13) as u8)
        .collect()
}

/// Waits (bounded) until a read of `key` through `client` returns exactly
/// `values` (as siblings, in any order).
async fn until_reads(client: &Client, node: &str, key: &str, values: &[Vec<u8>]) {
    let deadline = Instant::now() + WAIT;
    let mut expected = values.to_vec();
    expected.sort();
    loop {
        let last = match client.get_versioned(key, None, None).await {
            Ok(read) => match read.value {
                VersionedValue::Register { mut values, .. } => {
                    values.sort();
                    if values == expected {
                        return;
                    }
                    format!(
                        "{} sibling(s) of {:?} bytes",
                        values.len(),
                        values.iter().map(Vec::len).collect::<Vec<_>>()
                    )
                }
                other => format!("{other:?}"),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "reading {key} through {node} does not return it intact within {WAIT:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts through `client`, retrying (bounded) while it is not acknowledged.
async fn put(client: &Client, key: &str, value: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.put(key, value).await {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "{key} never acknowledged: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs `mimeo serve` expecting it to refuse to start: its exit status
/// and stderr (the test fails if it serves, or runs on past 30 s).
fn serve_refused(config: &Path) -> (ExitStatus, String) {
    let mut child = mimeo()
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, reader.join().unwrap());
        }
        let serving = lines.try_iter().find(|l| l.contains("serving"));
        if serving.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mimeo serve --config {} was not refused: {}\nstderr:\n{}",
                config.display(),
                serving.unwrap_or_else(|| "still running after 30 s".into()),
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_read_back_intact_through_every_node_and_one_byte_over_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(dir.path(), "", "");
    let _nodes = start_all(&configs, &addrs);
    let clients: Vec<Client> = addrs
        .iter()
        .map(|a| pinned(dir.path(), *a, all_three()))
        .collect();
    let small = pattern(64 << 10, 1);
    let large = pattern(1 << 20, 2);
    put(&clients[0], "v64k", &small).await;
    put(&clients[1], "v1m", &large).await;
    for (client, id) in clients.iter().zip(IDS) {
        until_reads(client, id, "v64k", std::slice::from_ref(&small)).await;
        until_reads(client, id, "v1m", std::slice::from_ref(&large)).await;
    }
    let error = clients[0]
        .put("over", pattern((1 << 20) + 1, 3))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("limits.max_value_bytes"), "{error}");
    for (client, id) in clients.iter().zip(IDS) {
        put(client, &format!("after-{id}"), b"fine").await;
    }
}

/// Blind writes (no context) keep every value beside the others. Piled up
/// 1 MiB at a time, the key's state outgrows one peer message (4 MiB
/// frames): either a write is refused naming what it passes, or what was
/// acknowledged is read back intact.
///
/// Found here: three blind 1 MiB writes are acknowledged; the fourth (a
/// 4 MiB key state, which no longer fits one peer message) is neither
/// refused nor acknowledged: "not acknowledged within 10000 ms". The
/// leaderless mode has no bound on a key's whole state (multi-leader's
/// `max_write_bytes`); sibling limits count values, not bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the fourth 1 MiB sibling on one key times out instead of being refused naming a bound"]
async fn siblings_piled_past_a_peer_message_are_refused_or_kept_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(dir.path(), "", "");
    let _nodes = start_all(&configs, &addrs);
    let clients: Vec<Client> = addrs.iter().map(|a| pinned(dir.path(), *a, None)).collect();
    let mut kept = Vec::new();
    let mut refused = None;
    for i in 0..6u8 {
        let value = pattern(1 << 20, 10 + i);
        match clients[0]
            .put_versioned("pile", Some(value.clone()), None, None)
            .await
        {
            Ok(_) => kept.push(value),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    eprintln!(
        "{} blind 1 MiB write(s) acknowledged, then: {refused:?}",
        kept.len()
    );
    if let Some(refused) = &refused {
        assert!(
            refused.contains("bytes") || refused.contains("siblings"),
            "a refusal that does not say what it passes: {refused}"
        );
    }
    for (client, id) in clients.iter().zip(IDS) {
        until_reads(client, id, "pile", &kept).await;
        put(client, &format!("after-{id}"), b"fine").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_holding_every_stream_idle_does_not_stop_another_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(dir.path(), "", "");
    let _nodes = start_all(&configs, &addrs);
    let transport = TransportConfig::default();
    let certs = dir.path().join("certs");
    let hostile = TlsIdentity::from_dir(&certs, "client-bench").unwrap();
    let endpoint = client_endpoint(&hostile, &transport).unwrap();
    let (conn, _) = connect(&endpoint, addrs[0], "mimeo", Protocol::Client, &transport)
        .await
        .unwrap();
    // As many streams as the node lets one connection open, each sending
    // nothing at all (QUIC opens a stream lazily: write one byte of a
    // frame header so the node sees it, then stop).
    let mut held = Vec::new();
    for _ in 0..1024 {
        let Ok(Ok((mut send, recv))) =
            tokio::time::timeout(Duration::from_millis(200), conn.open_bi()).await
        else {
            break;
        };
        if send.write_all(&[0]).await.is_err() {
            break;
        }
        held.push((send, recv));
    }
    let opened = held.len();
    assert!(opened > 0);
    assert!(
        opened <= transport.max_concurrent_streams as usize,
        "{opened} streams opened"
    );
    // Another client, through the same node, is served within a bound.
    let other = pinned(dir.path(), addrs[0], None);
    let started = Instant::now();
    for i in 0..20 {
        let key = format!("k{i}");
        tokio::time::timeout(Duration::from_secs(5), other.put(&key, b"v"))
            .await
            .unwrap_or_else(|_| panic!("put {key} took over 5 s beside {opened} idle streams"))
            .unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), other.get(&key))
            .await
            .unwrap_or_else(|_| panic!("get {key} took over 5 s beside {opened} idle streams"))
            .unwrap();
        assert_eq!(read.as_deref(), Some(&b"v"[..]));
    }
    eprintln!(
        "40 requests beside {opened} idle streams in {} ms",
        started.elapsed().as_millis()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_served_data_dir_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(dir.path(), "", "");
    let nodes = start_all(&configs, &addrs);
    let n1 = pinned(dir.path(), addrs[0], None);
    put(&n1, "k", b"1").await;
    let text = std::fs::read_to_string(&configs[0])
        .unwrap()
        .replace(&addrs[0].to_string(), &free_addr().to_string());
    let second = dir.path().join("second.toml");
    std::fs::write(&second, text).unwrap();
    let (status, stderr) = serve_refused(&second);
    assert!(!status.success(), "{status}");
    let data_dir = dir.path().join("data/n1").display().to_string();
    let pid = nodes[0].as_ref().unwrap().child.id().to_string();
    assert!(
        stderr.contains(&data_dir) && stderr.contains(&format!("process {pid} holds its lock")),
        "the error names neither {data_dir} nor pid {pid}:\n{stderr}"
    );
    put(&n1, "k", b"2").await;
    assert_eq!(n1.get("k").await.unwrap().as_deref(), Some(&b"2"[..]));
}

/// A member whose disk was replaced: every write acknowledged before the
/// wipe (W = 3: n1 held its share) and after it stays readable, through
/// every node, with every replica answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_member_that_returns_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(dir.path(), "", "");
    let mut nodes = start_all(&configs, &addrs);
    let clients: Vec<Client> = addrs
        .iter()
        .map(|a| pinned(dir.path(), *a, all_three()))
        .collect();
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..20 {
        let (key, value) = (format!("before-{i}"), format!("v{i}").into_bytes());
        put(&clients[0], &key, &value).await;
        acknowledged.push((key, value));
    }
    drop(nodes[0].take());
    std::fs::remove_dir_all(dir.path().join("data/n1")).unwrap();
    nodes[0] = Some(start_node(&configs[0], addrs[0]));
    for i in 0..20 {
        let (key, value) = (format!("after-{i}"), format!("w{i}").into_bytes());
        put(&clients[0], &key, &value).await;
        acknowledged.push((key, value));
    }
    // A key written before the wipe and again after it, through n1: the
    // new write supersedes the old one on every replica.
    put(&clients[0], "before-0", b"rewritten").await;
    acknowledged[0].1 = b"rewritten".to_vec();
    until_all_hold(&clients, &acknowledged).await;
}

#[test]
fn a_replica_whose_fsync_fails_does_not_acknowledge_and_exits_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(dir.path(), "inject_fsync_errors = true\n", "");
    let mut child = mimeo()
        .args(["serve", "--config"])
        .arg(&configs[0])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    let stderr = child.stderr.take().unwrap();
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = err_tx.send(line);
        }
    });
    let mut n1 = Node {
        child,
        addr: addrs[0],
        config: configs[0].clone(),
    };
    let serving = lines.recv_timeout(WAIT).unwrap();
    assert!(serving.contains("serving"), "{serving}");
    let _others: Vec<Node> = configs[1..]
        .iter()
        .zip(&addrs[1..])
        .map(|(c, a)| start_node(c, *a))
        .collect();
    // Keys n1 replicates; written with W = DW = 3, so n1 must hold each
    // durably before the write is acknowledged.
    let ring = Ring::new(&IDS.iter().map(|id| (*id).into()).collect::<Vec<_>>(), 64).unwrap();
    let keys: Vec<String> = (0..)
        .map(|i| format!("f{i}"))
        .filter(|k| ring.preference_list(k.as_bytes(), 3).contains(&"n1".into()))
        .take(2)
        .collect();
    let put = |key: &str, value: &str| {
        cli(
            dir.path(),
            addrs[1],
            &[
                "put",
                key,
                value,
                "--w",
                "3",
                "--dw",
                "3",
                "--timeout",
                "3s",
            ],
        )
    };
    // Until the peer links are up, a W = 3 write is refused as unavailable.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = put(&keys[0], "1");
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(dir.path().join("data/n1/fail-fsync"), b"").unwrap();
    let out = put(&keys[1], "2");
    assert!(
        !out.status.success(),
        "a write with W = DW = 3 whose fsync failed on a replica was acknowledged"
    );
    eprintln!(
        "the W = DW = 3 write beside the failed fsync: exit {:?}, {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = n1.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "n1 still runs 15 s after its fsync failed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}");
    let log: Vec<String> = err_rx.try_iter().collect();
    let last = log.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("error:") && last.contains("fsync"),
        "the exit error does not say what failed:\n{}",
        log.join("\n")
    );
}
