//! A hostile (or unlucky) user against three real `mimeo serve` processes
//! in multi-leader mode on 127.0.0.1:
//!
//! - values of 64 KiB and 1 MiB written through one node (`acks =
//!   "local"`) are read back intact from every node; one byte over
//!   `limits.max_value_bytes` is refused naming it; the nodes go on
//!   serving. Found and left `#[ignore]`d: with the default client a 1 MiB
//!   write is never acknowledged, and neither is a second 1 MiB sibling
//!   piled on one key (nor is it refused naming `max_write_bytes`);
//! - a second process on a served data directory is refused, naming the
//!   directory and the holder;
//! - a member whose data directory was wiped comes back: no write
//!   acknowledged before or after the wipe may be lost (found reusing its
//!   origin's sequence numbers, which lost writes; fixed with incarnations);
//! - a node whose disk fails an fsync does not acknowledge the write and
//!   exits saying why.

mod support;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mimeo_client::{Client, ClientConfig, VersionedValue};
use mimeo_wire::TlsIdentity;
use support::*;

/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(30);
const IDS: [&str; 3] = ["n1", "n2", "n3"];

/// Writes `dir/<id>.toml` for a multi-leader node of `addrs`, with
/// `storage` and `replication` appended to those sections.
fn write_ml_config(
    dir: &Path,
    id: &str,
    addrs: &[(String, SocketAddr)],
    storage: &str,
    replication: &str,
) -> PathBuf {
    let me = addrs.iter().find(|(n, _)| n == id).unwrap().1;
    let mut text = format!(
        "node_id = \"{id}\"\nlisten = \"{me}\"\ndata_dir = \"data/{id}\"\nmode = \"multi-leader\"\n\
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

/// Certificates for n1..n3 and a config for each; returns the configs and
/// the addresses.
fn configs(dir: &Path, storage: &str, replication: &str) -> (Vec<PathBuf>, Vec<SocketAddr>) {
    let out = run(
        dir,
        &["certs", "init", "--dir", "certs", "--nodes", "n1,n2,n3"],
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
        .map(|(id, _)| write_ml_config(dir, id, &addrs, storage, replication))
        .collect();
    (configs, addrs.into_iter().map(|(_, a)| a).collect())
}

/// A client of `node` alone: every answer comes from that node.
fn pinned(dir: &Path, node: SocketAddr) -> Client {
    let identity = TlsIdentity::from_dir(&dir.join("certs"), "client-cli").unwrap();
    let mut config = ClientConfig::new(vec![node], "mimeo", identity);
    config.connect_timeout = Duration::from_millis(500);
    config.max_redirects = 0;
    // Not the client's default 300 ms idle timeout: a node of this mode
    // (debug build) spends longer than that on a 512 KiB - 1 MiB write
    // without answering a packet (postcard encodes and decodes the value
    // byte by byte on the async runtime), and the client's connection
    // dies: see `the_default_client_survives_a_1_mib_write`.
    config.transport.idle_timeout = Duration::from_secs(3);
    config.transport.keep_alive = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(20);
    Client::new(config).unwrap()
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

/// Waits (bounded) until `client`'s node holds exactly `values` (as
/// siblings, in any order) for `key`.
async fn until_holds(client: &Client, node: &str, key: &str, values: &[Vec<u8>]) {
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
            "{node} does not hold {key} intact within {WAIT:?}: {last}"
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
async fn large_values_arrive_intact_everywhere_and_oversized_writes_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(
        dir.path(),
        "",
        "conflicts = \"siblings\"\nacks = \"local\"\n",
    );
    let _nodes: Vec<Node> = configs
        .iter()
        .zip(&addrs)
        .map(|(c, a)| start_node(c, *a))
        .collect();
    let clients: Vec<Client> = addrs.iter().map(|a| pinned(dir.path(), *a)).collect();

    // 64 KiB through n1, 1 MiB through n2: every node ends with both,
    // byte for byte.
    let small = pattern(64 << 10, 1);
    let large = pattern(1 << 20, 2);
    put(&clients[0], "v64k", &small).await;
    put(&clients[1], "v1m", &large).await;
    for (client, id) in clients.iter().zip(IDS) {
        until_holds(client, id, "v64k", std::slice::from_ref(&small)).await;
        until_holds(client, id, "v1m", std::slice::from_ref(&large)).await;
    }

    // One byte over limits.max_value_bytes (1 MiB): refused, naming it.
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

/// Found here: blind writes (no context) keep every value beside the
/// others, so 1 MiB siblings pile up on one key. The first is
/// acknowledged; the second (a 2 MiB key state, well under
/// `max_write_bytes`, about 4 MiB) is neither refused nor acknowledged:
/// the node answers "not acknowledged within 10000 ms" even with
/// `acks = "local"`. Ignored until that is mended; it expects what the
/// bound promises: every write acknowledged until one would pass
/// `max_write_bytes`, which is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a second 1 MiB sibling on one key is neither acknowledged nor refused within 10 s"]
async fn siblings_piled_past_max_write_bytes_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(
        dir.path(),
        "",
        "conflicts = \"siblings\"\nacks = \"local\"\n",
    );
    let _nodes: Vec<Node> = configs
        .iter()
        .zip(&addrs)
        .map(|(c, a)| start_node(c, *a))
        .collect();
    let clients: Vec<Client> = addrs.iter().map(|a| pinned(dir.path(), *a)).collect();
    // Blind writes (no context) keep every value beside the others: 1 MiB
    // siblings pile up on one key until its state would not fit one
    // replication message, and the next is refused naming max_write_bytes.
    let mut kept = Vec::new();
    let refused = loop {
        let value = pattern(1 << 20, 10 + kept.len() as u8);
        match clients[2]
            .put_versioned("pile", Some(value.clone()), None, None)
            .await
        {
            Ok(_) => kept.push(value),
            Err(e) => break e.to_string(),
        }
        assert!(kept.len() < 8, "8 MiB of siblings accepted on one key");
    };
    assert!(
        refused.contains("max_write_bytes"),
        "{} sibling(s) kept, then: {refused}",
        kept.len()
    );
    assert!(!kept.is_empty());
    // What was kept reaches every node intact, and every node serves on.
    for (client, id) in clients.iter().zip(IDS) {
        until_holds(client, id, "pile", &kept).await;
        put(client, &format!("after-{id}"), b"fine").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_served_data_dir_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(dir.path(), "", "");
    let nodes: Vec<Node> = configs
        .iter()
        .zip(&addrs)
        .map(|(c, a)| start_node(c, *a))
        .collect();
    let n1 = pinned(dir.path(), addrs[0]);
    put(&n1, "k", b"1").await;
    // The same config (so the same data directory), another port.
    let text = std::fs::read_to_string(&configs[0])
        .unwrap()
        .replace(&addrs[0].to_string(), &free_addr().to_string());
    let second = dir.path().join("second.toml");
    std::fs::write(&second, text).unwrap();
    let (status, stderr) = serve_refused(&second);
    assert!(!status.success(), "{status}");
    let data_dir = dir.path().join("data/n1").display().to_string();
    let pid = nodes[0].child.id().to_string();
    assert!(
        stderr.contains(&data_dir) && stderr.contains(&format!("process {pid} holds its lock")),
        "the error names neither {data_dir} nor pid {pid}:\n{stderr}"
    );
    put(&n1, "k", b"2").await;
    assert_eq!(n1.get("k").await.unwrap().as_deref(), Some(&b"2"[..]));
}

/// Issue 22's durability promise applied to a returning member whose disk
/// was replaced: every write acknowledged anywhere, before or after the
/// wipe, ends up on every node.
///
/// Found here (data loss, fixed): the wiped n1 numbered its writes from 1
/// again under its old origin id. The peers had applied n1's old writes
/// 1..10, so they took n1's new writes 1..10 for those and dropped them,
/// while still counting as holding them: the new writes were
/// acknowledged under `acks = "quorum"` and existed on n1 alone, and n1
/// never got its old writes back. Now a node writes as an incarnation,
/// `n1.<epoch>` with the wall clock in microseconds when its data
/// directory was created, which a wiped node never reuses (the
/// multi-leader crate docs, "Incarnations"), as the leaderless mode's
/// writer epoch does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_member_that_returns_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(dir.path(), "", "");
    let mut nodes: Vec<Option<Node>> = configs
        .iter()
        .zip(&addrs)
        .map(|(c, a)| Some(start_node(c, *a)))
        .collect();
    let clients: Vec<Client> = addrs.iter().map(|a| pinned(dir.path(), *a)).collect();
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..10 {
        let (key, value) = (format!("before-{i}"), format!("n1-{i}").into_bytes());
        put(&clients[0], &key, &value).await;
        acknowledged.push((key, value));
    }
    for (client, id) in clients.iter().zip(IDS) {
        for (key, value) in &acknowledged {
            until_holds(client, id, key, std::slice::from_ref(value)).await;
        }
    }
    // n1 dies and its disk is replaced by an empty one.
    drop(nodes[0].take());
    std::fs::remove_dir_all(dir.path().join("data/n1")).unwrap();
    nodes[0] = Some(start_node(&configs[0], addrs[0]));
    // At once, it takes writes of its own again.
    for i in 0..10 {
        let (key, value) = (format!("after-{i}"), format!("n1-again-{i}").into_bytes());
        put(&clients[0], &key, &value).await;
        acknowledged.push((key, value));
    }
    // Every node ends with every acknowledged write.
    until_all_hold(&clients, &acknowledged).await;
}

#[test]
fn a_node_whose_fsync_fails_does_not_acknowledge_and_exits_saying_why() {
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
    let put = |key: &str, value: &str| cli(dir.path(), addrs[0], &["put", key, value]);
    let out = put("kept", "1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // n1's disk starts failing fsyncs with EIO.
    std::fs::write(dir.path().join("data/n1/fail-fsync"), b"").unwrap();
    let out = put("unsynced", "2");
    assert!(
        !out.status.success(),
        "a write whose fsync failed was acknowledged"
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
    // The write n1 could not make durable is not served by its peers as
    // if it had been: it was never acknowledged, and n1 sent nothing it
    // had not persisted... or if it did, that is reported below.
    let out = cli(dir.path(), addrs[1], &["get", "unsynced"]);
    eprintln!(
        "n2 after n1's failed fsync: get unsynced -> {:?} / {:?}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Found here: with the client's default timers (a connection silent for
/// 300 ms is dead), a 1 MiB write through a node of this mode in a debug
/// build is never acknowledged: the node answers no packet for longer than
/// that while it handles the write (perf shows postcard's per-byte
/// `serialize_u8` / `deserialize_u8` of the value's `Vec<u8>` and the
/// iterator code around them on the node's runtime threads), the client's
/// connection times out, and every retry does the same. A standalone node
/// takes the same 1 MiB put in about 0.25 s. Ignored until values are
/// (de)serialized as bytes (`serde_bytes`) or off the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 1 MiB write stalls the node's runtime past the default client's 300 ms idle timeout (debug build)"]
async fn the_default_client_survives_a_1_mib_write() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, addrs) = configs(dir.path(), "", "");
    let _nodes: Vec<Node> = configs
        .iter()
        .zip(&addrs)
        .map(|(c, a)| start_node(c, *a))
        .collect();
    let client = support::lf::connect(dir.path(), vec![addrs[0]]).await;
    for attempt in 0..3 {
        match client.put("v1m", pattern(1 << 20, 2)).await {
            Ok(_) => return,
            Err(e) => eprintln!("attempt {attempt}: {e}"),
        }
    }
    panic!("a 1 MiB put through the default client was never acknowledged");
}
