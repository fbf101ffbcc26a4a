//! Five real `mimeo serve` processes in leaderless mode on 127.0.0.1
//! (N = 3): writes through one node are read through others; a node
//! killed with SIGKILL misses writes that fallbacks take with hints, and
//! once restarted it holds them by hinted handoff alone (anti-entropy and
//! read repair are off, and no read touches the keys).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mimeo_client::{Client, VersionedValue};
use mimeo_leaderless::Ring;
use support::lf::connect;
use support::*;

/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(30);
const IDS: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

/// Writes `dir/<id>.toml` for a leaderless node of `addrs`.
fn write_config(dir: &Path, id: &str, addrs: &[(String, SocketAddr)], extra: &str) -> PathBuf {
    write_config_with(dir, id, addrs, "", extra)
}

/// [`write_config`] with `top` among the top-level settings.
fn write_config_with(
    dir: &Path,
    id: &str,
    addrs: &[(String, SocketAddr)],
    top: &str,
    extra: &str,
) -> PathBuf {
    let me = addrs.iter().find(|(n, _)| n == id).unwrap().1;
    let mut text = format!(
        "node_id = \"{id}\"\nlisten = \"{me}\"\ndata_dir = \"data/{id}\"\nmode = \"leaderless\"\n{top}\
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

/// Waits (bounded) until `client`'s node sees `peer`'s link as `up`.
async fn until_link(client: &Client, node: SocketAddr, peer: &str, up: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(status) = client.status_of(node).await {
            if status
                .peers
                .iter()
                .any(|p| p.node_id == peer && p.connected == up)
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{node} never saw {peer} up = {up}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Hints held for `owner` on every node of `nodes`.
async fn hints_for(client: &Client, nodes: &[SocketAddr], owner: &str) -> u64 {
    let mut total = 0;
    for node in nodes {
        let status = client.status_of(*node).await.unwrap();
        total += status
            .peers
            .iter()
            .filter(|p| p.node_id == owner)
            .map(|p| p.lag_entries)
            .sum::<u64>();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_serve_quorum_requests_and_a_killed_node_gets_its_writes_by_hints() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["certs", "init", "--dir", "certs", "--nodes", &IDS.join(",")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extra = "sloppy = true\nread_repair = \"off\"\nanti_entropy_interval_ms = 0\n";
    let named: Vec<(String, SocketAddr)> =
        IDS.iter().map(|id| (id.to_string(), free_addr())).collect();
    let addrs: Vec<SocketAddr> = named.iter().map(|(_, a)| *a).collect();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut nodes: Vec<Option<Node>> = named
        .iter()
        .map(|(id, addr)| {
            let top = if id == "n1" {
                format!("metrics_listen = \"{metrics}\"\n")
            } else {
                String::new()
            };
            let config = write_config_with(dir.path(), id, &named, &top, extra);
            Some(start_node(&config, *addr))
        })
        .collect();
    let client = connect(dir.path(), addrs.clone()).await;
    for node in &addrs {
        for peer in IDS {
            if client.status_of(*node).await.unwrap().node_id != peer {
                until_link(&client, *node, peer, true).await;
            }
        }
    }
    let status = client.status_of(addrs[0]).await.unwrap();
    assert_eq!(
        (status.mode.as_str(), status.role.as_str()),
        ("leaderless", "replica")
    );

    // Written through n1 with the CLI, read through n4 and n2.
    for i in 0..10 {
        let out = cli(
            dir.path(),
            addrs[0],
            &["put", &format!("k{i}"), &format!("v{i}")],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..10 {
        let out = cli(dir.path(), addrs[3 - i % 2 * 2], &["get", &format!("k{i}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("v{i}"));
    }
    // Per-request quorums, siblings, counters and sets through the CLI.
    let out = cli(dir.path(), addrs[2], &["put", "q", "1", "--w", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(dir.path(), addrs[4], &["get", "q", "--r", "1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    // The diagnostic local read: q was written to all 3 replicas (w = 3),
    // each holds it; the 2 other nodes hold no copy and name the same
    // replicas.
    let mut holders = Vec::new();
    let mut named_replicas = std::collections::BTreeSet::new();
    for (i, node) in addrs.iter().enumerate() {
        let read = client.local_read_of(*node, "q").await.unwrap();
        named_replicas.insert(read.replicas.clone());
        match read.value {
            Some(VersionedValue::Register { values, .. }) => {
                assert_eq!(values, [b"1".to_vec()]);
                holders.push(IDS[i].to_string());
            }
            None => {}
            other => panic!("{}: unexpected local copy {other:?}", IDS[i]),
        }
    }
    assert_eq!(named_replicas.len(), 1, "{named_replicas:?}");
    let mut replicas = named_replicas.into_iter().next().unwrap();
    replicas.sort();
    assert_eq!(holders, replicas);
    let out = cli(dir.path(), addrs[0], &["put", "q", "2", "--w", "4"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("w = 4"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..3 {
        let out = cli(dir.path(), addrs[1], &["incr", "c"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cli(dir.path(), addrs[3], &["get", "c", "--r", "3"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let out = cli(dir.path(), addrs[0], &["sadd", "s", "x"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(dir.path(), addrs[2], &["get", "s"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "x");
    let out = cli(dir.path(), addrs[0], &["status"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("ring: n = 3")
            && printed.contains("hints pending")
            && printed.contains("anti-entropy with"),
        "{printed}"
    );

    // cas is refused, naming leader-follower.
    let out = cli(dir.path(), addrs[1], &["cas", "k0", "--expect", "v0", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("leader-follower"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // n5 is killed; the others notice before the writes.
    let config = nodes[4].as_ref().unwrap().config.clone();
    drop(nodes[4].take());
    for node in &addrs[..4] {
        until_link(&client, *node, "n5", false).await;
    }
    let ring = Ring::new(&IDS.iter().map(|id| (*id).into()).collect::<Vec<_>>(), 64).unwrap();
    let owned_by_n5 = |key: &str| {
        ring.preference_list(key.as_bytes(), 3)
            .contains(&"n5".into())
    };
    let writer = connect(dir.path(), addrs[..4].to_vec()).await;
    let mut missed = 0;
    for i in 0..40 {
        let key = format!("h{i}");
        writer.put(&key, format!("w{i}")).await.unwrap();
        missed += u64::from(owned_by_n5(&key));
    }
    assert!(
        missed > 0,
        "n5 owns some of the keys written while it was down"
    );
    let held = hints_for(&client, &addrs[..4], "n5").await;
    assert_eq!(held, missed, "one hint per write n5 missed");
    let scraped = scrape(metrics);
    let pending = metric(
        &scraped,
        "mimeo_leaderless_hints_pending{node=\"n1\",owner=\"n5\"}",
    );
    let stored = metric(&scraped, "mimeo_leaderless_hints_stored_total{node=\"n1\"}");
    assert!(stored >= pending && stored > 0.0, "{scraped}");
    assert_eq!(
        metric(
            &scraped,
            "mimeo_leaderless_last_exchange_seconds{node=\"n1\",peer=\"n2\"}"
        ),
        f64::INFINITY,
        "anti-entropy is off"
    );
    // `mimeo status --json` carries what the human output shows: the
    // ring, the hints per owner, the last exchange per peer.
    let out = cli(dir.path(), addrs[0], &["status", "--json"]);
    assert!(out.status.success());
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let details = &all[0]["leaderless"];
    assert_eq!(details["n"].as_u64(), Some(3), "{all:#}");
    let ring = details["ring"].as_array().unwrap();
    assert!(
        ring.len() > 1
            && ring
                .iter()
                .all(|r| r["replicas"].as_array().unwrap().len() == 3 && r["end"].is_u64()),
        "{all:#}"
    );
    let n5_hints = details["hints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["owner"] == "n5")
        .unwrap_or_else(|| panic!("no hints for n5: {all:#}"));
    assert_eq!(n5_hints["hints"].as_f64(), Some(pending), "{all:#}");
    assert!(n5_hints["bytes"].as_u64().unwrap() > 0);
    let exchanges = details["exchanges"].as_array().unwrap();
    assert_eq!(exchanges.len(), 4, "one per peer: {all:#}");
    assert!(
        exchanges
            .iter()
            .all(|e| e["last_completed_ms_ago"].is_null()),
        "anti-entropy is off: {all:#}"
    );
    assert!(details["counters"]["hints_stored"].as_u64().unwrap() > 0);
    // A read that needs every primary of a key n5 owns is unavailable at
    // once (exit 1, naming why).
    let key = (0..)
        .map(|i| format!("h{i}"))
        .find(|k| owned_by_n5(k))
        .unwrap();
    let out = cli(
        dir.path(),
        addrs[0],
        &["get", &key, "--r", "3", "--pr", "3"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not enough reachable replicas"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // n5 returns from its disk; the fallbacks hand their hints over.
    let before = (0..10)
        .map(|i| format!("k{i}"))
        .chain(["q", "c", "s"].map(String::from))
        .filter(|k| owned_by_n5(k))
        .count() as u64;
    nodes[4] = Some(start_node(&config, addrs[4]));
    let deadline = Instant::now() + WAIT;
    loop {
        let left = hints_for(&client, &addrs[..4], "n5").await;
        let keys = client.status_of(addrs[4]).await.map(|s| s.live_keys);
        if left == 0 && keys.as_ref().is_ok_and(|k| *k == before + missed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} hints still pending; n5 holds {keys:?} keys, expected {}",
            before + missed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // n5 paused: its peers still count it reachable, so a write that
    // needs all three replicas of a key it owns ends unknown (exit 3).
    let pid = nodes[4].as_ref().unwrap().child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let out = cli(
        dir.path(),
        addrs[0],
        &["--timeout", "20s", "put", &key, "late", "--w", "3"],
    );
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // n5 restarted with another ring (vnodes) is refused: its data was
    // placed by the old one.
    drop(nodes[4].take());
    let changed = write_config(dir.path(), "n5", &named, &format!("{extra}vnodes = 32\n"));
    let out = run(
        dir.path(),
        &["serve", "--config", changed.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the ring changed") && stderr.contains("32 vnodes"),
        "{stderr}"
    );
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
    if line == "+Inf" {
        f64::INFINITY
    } else {
        line.parse().unwrap()
    }
}

#[test]
fn leaderless_settings_are_checked_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<(String, SocketAddr)> =
        IDS.iter().map(|id| (id.to_string(), free_addr())).collect();
    for (extra, says) in [
        ("w = 4\n", "w = 4; it must be between 1 and n = 3"),
        ("n = 6\n", "6 replicas on 5 nodes"),
        ("pr = 3\n", "pr = 3 is more than r = 2"),
        ("read_repair = \"eager\"\n", "replication.read_repair"),
        ("heartbeat_ms = 10\n", "replication.heartbeat_ms"),
        ("acks = \"all\"\n", "replication.acks"),
    ] {
        let config = write_config(dir.path(), "n1", &addrs, extra);
        let out = run(dir.path(), &["serve", "--config", config.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}");
        assert!(stderr.contains(says), "{extra}: {stderr}");
    }
    // A leaderless knob in another mode is refused too.
    let path = dir.path().join("ml.toml");
    let text = std::fs::read_to_string(write_config(dir.path(), "n1", &addrs, "sloppy = true\n"))
        .unwrap()
        .replace("mode = \"leaderless\"", "mode = \"multi-leader\"");
    std::fs::write(&path, text).unwrap();
    let out = run(dir.path(), &["serve", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("replication.sloppy"),
        "{stderr}"
    );
}
