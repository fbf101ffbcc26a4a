//! Three real `mimeo serve` processes in multi-leader mode on 127.0.0.1:
//! every node takes writes, and every node ends with every write; a node
//! killed with SIGKILL comes back from its disk and catches up; the status
//! (`mimeo status --json`) and the metrics show each node's applied
//! vector, its lag behind a stopped peer and the tombstones it holds.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_client::Client;
use mimeo_wire::{NodeStatus, ReadConsistency};
use support::lf::connect;
use support::*;

/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(30);
const IDS: [&str; 3] = ["n1", "n2", "n3"];

/// Writes `dir/<id>.toml` for a multi-leader node of `addrs`.
fn write_ml_config(dir: &Path, id: &str, addrs: &[(String, SocketAddr)], extra: &str) -> PathBuf {
    let me = addrs.iter().find(|(n, _)| n == id).unwrap().1;
    let mut text = format!(
        "node_id = \"{id}\"\nlisten = \"{me}\"\ndata_dir = \"data/{id}\"\nmode = \"multi-leader\"\n\
         [tls]\ndir = \"certs\"\n[storage]\nfsync = \"batch\"\n\
         [replication]\n{extra}"
    );
    for (peer, addr) in addrs.iter().filter(|(n, _)| n != id) {
        text += &format!("[[replication.peers]]\nid = \"{peer}\"\naddr = \"{addr}\"\n");
    }
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn start_cluster(dir: &Path, extra: &str) -> (Vec<Option<Node>>, Vec<SocketAddr>) {
    start_cluster_with(dir, extra, "")
}

/// [`start_cluster`], with `n1_top` (top-level settings) in n1's config.
fn start_cluster_with(
    dir: &Path,
    extra: &str,
    n1_top: &str,
) -> (Vec<Option<Node>>, Vec<SocketAddr>) {
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
    let nodes = addrs
        .iter()
        .map(|(id, addr)| {
            let config = write_ml_config(dir, id, &addrs, extra);
            if id == "n1" {
                let text = std::fs::read_to_string(&config).unwrap();
                std::fs::write(&config, format!("{n1_top}{text}")).unwrap();
            }
            Some(start_node(&config, *addr))
        })
        .collect();
    (nodes, addrs.into_iter().map(|(_, a)| a).collect())
}

/// Puts `key` through `client`'s node, retrying (bounded) while it is not
/// acknowledged.
async fn put(client: &Client, key: &str, value: &str) {
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

/// Each node's applied vector, as its status reports it (its own writes in
/// `last_position`, each peer's in `match_index`).
fn applied(status: &NodeStatus) -> Vec<(String, u64)> {
    let mut vector: Vec<(String, u64)> = status
        .peers
        .iter()
        .map(|p| (p.node_id.clone(), p.match_index))
        .collect();
    vector.push((status.node_id.clone(), status.last_position.index));
    vector.sort();
    vector
}

/// Waits (bounded) until every node has applied the same writes, at least
/// `writes_per_node` of each origin, and reads the same values for `keys`.
async fn until_converged(
    clients: &[Arc<Client>],
    addrs: &[SocketAddr],
    writes_per_node: u64,
    keys: &[String],
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut vectors = Vec::new();
        let mut values = Vec::new();
        for (client, addr) in clients.iter().zip(addrs) {
            let status = client.status_of(*addr).await;
            vectors.push(status.as_ref().ok().map(applied));
            let mut mine = Vec::new();
            for key in keys {
                let read = client
                    .get_with(
                        key,
                        ReadConsistency::Follower {
                            max_staleness_ms: None,
                        },
                    )
                    .await;
                mine.push(read.ok().map(|r| r.value));
            }
            values.push(mine);
        }
        let done = vectors.iter().all(|v| {
            v.as_ref()
                .is_some_and(|v| v.iter().all(|(_, n)| *n >= writes_per_node))
        }) && vectors.windows(2).all(|w| w[0] == w[1])
            && values.windows(2).all(|w| w[0] == w[1])
            && values[0].iter().all(Option::is_some);
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not converged within {WAIT:?}: vectors {vectors:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_takes_writes_and_every_node_ends_with_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = start_cluster(dir.path(), "acks = \"quorum\"\n");
    let clients: Vec<Arc<Client>> = {
        let mut clients = Vec::new();
        for addr in &addrs {
            clients.push(Arc::new(connect(dir.path(), vec![*addr]).await));
        }
        clients
    };
    // Ten keys of its own through each node, written concurrently.
    let mut writers = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = Arc::clone(client);
        writers.spawn(async move {
            for j in 0..10 {
                put(&client, &format!("k{i}-{j}"), &format!("v{i}-{j}")).await;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let keys: Vec<String> = (0..3)
        .flat_map(|i| (0..10).map(move |j| format!("k{i}-{j}")))
        .collect();
    until_converged(&clients, &addrs, 10, &keys).await;
    for client in &clients {
        let read = client.get("k2-9").await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"v2-9"[..]));
    }
    let status = clients[0].status_of(addrs[0]).await.unwrap();
    assert_eq!(
        (status.mode.as_str(), status.role.as_str()),
        ("multi-leader", "origin")
    );

    // n3 is killed (SIGKILL) while the others write; it comes back from
    // its disk and catches up.
    let config = nodes[2].as_ref().unwrap().config.clone();
    drop(nodes[2].take());
    for j in 10..15 {
        put(&clients[0], &format!("k0-{j}"), &format!("v0-{j}")).await;
        put(&clients[1], &format!("k1-{j}"), &format!("v1-{j}")).await;
    }
    nodes[2] = Some(start_node(&config, addrs[2]));
    let restarted = Instant::now();
    // A fresh client: the old one's connection to the killed process
    // would look up until its own idle timeout.
    let mut clients = clients;
    clients[2] = Arc::new(connect(dir.path(), vec![addrs[2]]).await);
    put(&clients[2], "k2-10", "v2-10").await;
    let mut keys = keys;
    keys.extend((10..15).flat_map(|j| [format!("k0-{j}"), format!("k1-{j}")]));
    keys.push("k2-10".into());
    until_converged(&clients, &addrs, 11, &keys).await;
    // n1 and n2 noticed n3's new process when it dialed them, rather than
    // sending it what it missed into their links to the killed process
    // until the QUIC idle timeout (10 s) closed them.
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "n3 caught up only {took:?} after its restart"
    );
    // Its sequence went on from its disk (a put the client retried after
    // a timeout, while the peers' links to the killed process expired,
    // may have taken a number too).
    let status = clients[2].status_of(addrs[2]).await.unwrap();
    assert!(
        status.last_position.index >= 11,
        "n3 kept its sequence: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_leader_settings_are_checked_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<(String, SocketAddr)> =
        IDS.iter().map(|id| (id.to_string(), free_addr())).collect();
    for (extra, field) in [
        ("acks = \"async\"\n", "replication.acks"),
        ("conflicts = \"newest\"\n", "replication.conflicts"),
        ("heartbeat_ms = 10\n", "replication.heartbeat_ms"),
        ("max_drift_ms = 0\n", "replication.max_drift_ms"),
    ] {
        let config = write_ml_config(dir.path(), "n1", &addrs, extra);
        let out = run(dir.path(), &["serve", "--config", config.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}");
        assert!(stderr.contains(field), "{extra}: {stderr}");
    }
}

#[test]
fn bad_multi_leader_cluster_arguments_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--conflicts", "lww"],
            "--conflicts applies to --mode multi-leader only",
        ),
        (
            &["--mode", "multi-leader", "--acks", "async"],
            "--acks \"async\" is not one of local, quorum, all",
        ),
        (
            &["--mode", "multi-leader", "--conflicts", "newest"],
            "--conflicts \"newest\" is not one of lww, siblings",
        ),
        (
            &["--mode", "multi-leader", "--nodes", "1"],
            "at least 2 nodes",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["cluster", "--dir", "never"];
        all.extend_from_slice(args);
        let out = run(dir.path(), &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !dir.path().join("never").exists(),
            "{args:?} left a directory"
        );
    }
}

fn out(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn err(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// The token printed after `what: ` on stderr.
fn printed_token(output: &std::process::Output, what: &str) -> String {
    err(output)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{what}: ")))
        .unwrap_or_else(|| panic!("no {what} token printed: {}", err(output)))
        .to_string()
}

/// Runs `mimeo get KEY` on `addr` until it prints `expected` (bounded).
fn get_until(dir: &Path, addr: SocketAddr, key: &str, expected: &str) -> std::process::Output {
    let deadline = Instant::now() + WAIT;
    loop {
        let output = cli(dir, addr, &["get", key]);
        if output.status.success() && out(&output) == expected {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "{key} on {addr}: {:?} / {}",
            out(&output),
            err(&output)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_cli_shows_siblings_and_contexts_counters_sets_and_session_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = start_cluster(dir.path(), "acks = \"all\"\n");
    let d = dir.path();
    let ok = |output: std::process::Output| {
        assert!(output.status.success(), "{}", err(&output));
        output
    };
    // n1 reads blue and keeps the context; meanwhile n2 replaces blue by
    // green; n1 then writes purple with its stale context: purple
    // supersedes blue only, so purple and green are siblings.
    // The first command retries (bounded) while the loaded machine has not
    // finished the node's QUIC handshake in time (nothing was sent).
    let deadline = Instant::now() + WAIT;
    loop {
        let first = cli(d, addrs[1], &["put", "k", "blue"]);
        if first.status.success() {
            break;
        }
        assert!(
            err(&first).contains("no node reachable") && Instant::now() < deadline,
            "{}",
            err(&first)
        );
    }
    let read = get_until(d, addrs[0], "k", "blue");
    let stale = printed_token(&read, "context");
    ok(cli(d, addrs[1], &["put", "k", "green"]));
    get_until(d, addrs[0], "k", "green");
    ok(cli(
        d,
        addrs[0],
        &["put", "k", "purple", "--context", &stale],
    ));
    let read = get_until(d, addrs[2], "k", "purple\ngreen");
    assert!(err(&read).contains("2 concurrent values"), "{}", err(&read));
    // A write with the context of that read resolves them, everywhere.
    let context = printed_token(&read, "context");
    ok(cli(
        d,
        addrs[2],
        &["put", "k", "mauve", "--context", &context],
    ));
    get_until(d, addrs[0], "k", "mauve");

    // Counters and sets merge by their type.
    ok(cli(d, addrs[0], &["incr", "c", "5"]));
    ok(cli(d, addrs[1], &["incr", "c", "-2"]));
    ok(cli(d, addrs[2], &["incr", "c"]));
    get_until(d, addrs[0], "c", "4");
    ok(cli(d, addrs[0], &["sadd", "s", "x"]));
    ok(cli(d, addrs[1], &["sadd", "s", "y"]));
    get_until(d, addrs[2], "s", "x\ny");
    ok(cli(d, addrs[2], &["srem", "s", "x"]));
    get_until(d, addrs[0], "s", "y");
    // A mismatched type is refused, naming both types (exit 1).
    let refused = cli(d, addrs[0], &["put", "c", "1"]);
    assert_eq!(refused.status.code(), Some(1), "{}", err(&refused));
    assert!(err(&refused).contains("counter"), "{}", err(&refused));

    // Read-your-writes on another node with the session token.
    let written = ok(cli(d, addrs[0], &["incr", "mine", "7"]));
    let session = printed_token(&written, "session");
    let read = ok(cli(
        d,
        addrs[2],
        &["get", "mine", "--read", "session", "--after", &session],
    ));
    assert_eq!(out(&read), "7");

    // With two of three nodes gone, an `all` write cannot be acknowledged:
    // its outcome is unknown (exit 3), not a failure.
    drop(nodes[1].take());
    drop(nodes[2].take());
    let unknown = cli(d, addrs[0], &["put", "z", "1"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", err(&unknown));
}

/// The body of `GET /metrics` at `addr`.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of the sample `name{labels}` in `text`.
fn metric(text: &str, sample: &str) -> f64 {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(sample).map(str::trim))
        .unwrap_or_else(|| panic!("no {sample} in {text}"));
    line.parse().unwrap()
}

/// `mimeo status --json` of the node at `addr`: its one entry.
fn status_json(dir: &Path, addr: SocketAddr) -> serde_json::Value {
    let out = cli(dir, addr, &["status", "--json"]);
    assert!(out.status.success(), "{}", err(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    all[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_show_the_applied_vector_the_lag_behind_a_stopped_peer_and_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (mut nodes, addrs) = start_cluster_with(
        d,
        "conflicts = \"siblings\"\n",
        &format!("metrics_listen = \"{metrics}\"\n"),
    );
    let clients: Vec<Arc<Client>> = {
        let mut clients = Vec::new();
        for addr in &addrs {
            clients.push(Arc::new(connect(d, vec![*addr]).await));
        }
        clients
    };

    // A burst of ten writes through each node, no partition.
    for j in 0..10 {
        for (i, client) in clients.iter().enumerate() {
            put(client, &format!("k{i}-{j}"), &format!("v{i}-{j}")).await;
        }
    }
    // n3's last write was acknowledged by now: n1's lag behind n3 is at
    // least the time since.
    let n3_last_write = Instant::now();
    let keys: Vec<String> = (0..3)
        .flat_map(|i| (0..10).map(move |j| format!("k{i}-{j}")))
        .collect();
    until_converged(&clients, &addrs, 10, &keys).await;

    // n3 stops; n1 writes five more and deletes one of its keys: the
    // tombstone waits for n3, which cannot have it.
    drop(nodes[2].take());
    for j in 10..15 {
        put(&clients[0], &format!("k0-{j}"), &format!("v0-{j}")).await;
    }
    clients[0].delete("k0-0").await.unwrap();

    // Taken before the status: the node's lag at its (later) reading is at
    // least this.
    let since_n3 = n3_last_write.elapsed().as_millis() as u64;
    let status = status_json(d, addrs[0]);
    let ml = &status["multi_leader"];
    // Origins are incarnations, `<node>.<epoch>` (a fresh data directory
    // starts one): compared here by the node they belong to.
    let node_of = |origin: &str| {
        origin
            .rsplit_once('.')
            .map_or(origin, |(n, _)| n)
            .to_string()
    };
    let applied: std::collections::BTreeMap<String, serde_json::Value> = ml["applied"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(origin, n)| (node_of(origin), n.clone()))
        .collect();
    assert_eq!(
        serde_json::json!(applied),
        serde_json::json!({ "n1": 16, "n2": 10, "n3": 10 }),
        "n1's applied vector: {status:#}"
    );
    let origin = |id: &str| {
        ml["origins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| node_of(o["origin"].as_str().unwrap()) == id)
            .unwrap_or_else(|| panic!("no origin {id}: {status:#}"))
            .clone()
    };
    let n3 = origin("n3");
    assert_eq!(
        (n3["applied"].as_u64(), n3["behind_writes"].as_u64()),
        (Some(10), Some(0))
    );
    assert!(
        n3["behind_ms"].as_u64().unwrap() >= since_n3,
        "n1 is at least {since_n3} ms behind n3's latest write: {status:#}"
    );
    assert_eq!(origin("n2")["applied"].as_u64(), Some(10));
    assert_eq!(ml["tombstones_pending"].as_u64(), Some(1), "{status:#}");
    assert!(ml["tombstone_bytes"].as_u64().unwrap() > 0, "{status:#}");
    assert_eq!(
        ml["siblings_per_key"],
        serde_json::json!([{ "siblings": 1, "keys": 34 }]),
        "34 live keys with one value each: {status:#}"
    );
    assert_eq!(ml["drift_refusals"].as_u64(), Some(0));
    let n3_link = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == "n3")
        .unwrap()
        .clone();
    assert_eq!(n3_link["match_index"].as_u64(), Some(10), "{status:#}");

    // The human status says the same.
    let human = cli(d, addrs[0], &["status"]);
    assert!(human.status.success(), "{}", err(&human));
    let human = out(&human);
    assert!(
        human.contains("tombstones pending collection 1 (")
            && human.contains("siblings per key: 1: 34 keys")
            && human.contains("HLC drift refusals 0"),
        "{human}"
    );

    // And the metrics.
    // Their `origin` labels are incarnations too: looked up by node.
    let raw = scrape(metrics);
    let mut scraped = raw.clone();
    for origin in ml["applied"].as_object().unwrap().keys() {
        assert!(raw.contains(&format!("origin=\"{origin}\"")), "{raw}");
        scraped = scraped.replace(
            &format!("origin=\"{origin}\""),
            &format!("origin=\"{}\"", node_of(origin)),
        );
    }
    let sample = |name: &str| metric(&scraped, name);
    assert_eq!(
        sample("mimeo_multi_leader_applied{node=\"n1\",origin=\"n1\"}"),
        16.0
    );
    assert_eq!(
        sample("mimeo_multi_leader_applied{node=\"n1\",origin=\"n2\"}"),
        10.0
    );
    assert_eq!(
        sample("mimeo_multi_leader_applied{node=\"n1\",origin=\"n3\"}"),
        10.0
    );
    assert_eq!(
        sample("mimeo_multi_leader_behind_writes{node=\"n1\",origin=\"n3\"}"),
        0.0
    );
    let behind = sample("mimeo_multi_leader_behind_seconds{node=\"n1\",origin=\"n3\"}");
    assert!(behind * 1000.0 >= since_n3 as f64, "{behind} s: {scraped}");
    assert_eq!(
        sample("mimeo_multi_leader_tombstones_pending{node=\"n1\"}"),
        1.0
    );
    assert!(sample("mimeo_multi_leader_tombstone_bytes{node=\"n1\"}") > 0.0);
    assert_eq!(
        sample("mimeo_multi_leader_keys_by_siblings{node=\"n1\",siblings=\"1\"}"),
        34.0
    );
    assert_eq!(
        sample("mimeo_multi_leader_drift_refusals_total{node=\"n1\"}"),
        0.0
    );
    // Every write of n2 and n3 applied on n1 was timed; n1's own are not.
    for peer in ["n2", "n3"] {
        assert_eq!(
            sample(&format!(
                "mimeo_multi_leader_apply_lag_seconds_count{{node=\"n1\",origin=\"{peer}\"}}"
            )),
            10.0,
            "{scraped}"
        );
        assert_eq!(
            sample(&format!(
                "mimeo_multi_leader_apply_lag_seconds_bucket{{node=\"n1\",origin=\"{peer}\",le=\"+Inf\"}}"
            )),
            10.0
        );
    }
    assert!(
        !scraped.contains("mimeo_multi_leader_apply_lag_seconds_count{node=\"n1\",origin=\"n1\"}")
    );
    assert!(scraped.contains("mimeo_peer_connected{node=\"n1\",peer=\"n3\"}"));
}
