//! `mimeo cluster`: one command starts a local leader-follower cluster of
//! real node processes that replicates, reports one leader, and stops every
//! node it started on SIGTERM.

mod support;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

/// A first port with `count` free UDP ports from it on, held while checked
/// (the same small race as `free_addr` once they are released).
fn free_port_run(count: u16) -> u16 {
    for _ in 0..50 {
        let first = free_addr().port();
        if first.checked_add(count).is_none() {
            continue;
        }
        let held: Vec<_> = (0..count)
            .map_while(|i| UdpSocket::bind(("127.0.0.1", first + i)).ok())
            .collect();
        if held.len() == count as usize {
            return first;
        }
    }
    panic!("no run of {count} free ports on 127.0.0.1");
}

/// The cluster process; SIGKILLed (with every node under its directory,
/// which `kill_on_drop` would not reach) if a test fails before stopping it.
struct LocalCluster {
    child: Child,
    dir: PathBuf,
    node_pids: Vec<u32>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for pid in node_pids(&self.dir) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mimeo cluster` with `args` and waits (bounded) for its banner;
/// returns the cluster and the banner's lines.
fn start(dir: &Path, args: &[&str]) -> (LocalCluster, Vec<String>) {
    let mut child = mimeo()
        .current_dir(dir)
        .arg("cluster")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut child);
    let mut cluster = LocalCluster {
        child,
        dir: dir.to_path_buf(),
        node_pids: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut banner = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no complete banner within 60 s; got {banner:#?}"));
        let done = line.contains("Ctrl-C stops the cluster");
        banner.push(line);
        if done {
            break;
        }
    }
    cluster.node_pids = node_pids(dir);
    (cluster, banner)
}

/// The pids of the `mimeo serve` processes whose config is under `dir`.
fn node_pids(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" serve ") && cmdline.contains(&*dir.to_string_lossy()) {
            pids.push(pid);
        }
    }
    pids
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent has not reaped it yet.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[test]
fn a_leader_follower_cluster_replicates_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_run(3);
    let cluster_dir = dir.path().join("cl");
    let (mut cluster, banner) = start(
        dir.path(),
        &[
            "--nodes",
            "3",
            "--mode",
            "leader-follower",
            "--dir",
            cluster_dir.to_str().unwrap(),
            "--base-port",
            &base.to_string(),
        ],
    );
    let text = banner.join("\n");
    assert!(text.contains("3 leader-follower node(s) up"), "{text}");
    assert_eq!(
        banner.iter().filter(|l| l.ends_with("(leader)")).count(),
        1,
        "the banner names one leader:\n{text}"
    );
    assert_eq!(cluster.node_pids.len(), 3, "three node processes");

    let nodes: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let certs = cluster_dir.join("certs");
    let cli = |node: &str, args: &[&str]| {
        let mut all = vec!["--node", node, "--certs", certs.to_str().unwrap()];
        all.extend_from_slice(args);
        run(dir.path(), &all)
    };
    // Through any node: a follower redirects the client to the leader.
    let mut last_position = String::new();
    for (i, node) in nodes.iter().enumerate() {
        let out = cli(node, &["put", &format!("k{i}"), &format!("v{i}")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "put via {node}: {stderr}");
        last_position = stderr
            .trim()
            .strip_prefix("ok (position ")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("put prints its position: {stderr}"))
            .to_string();
    }
    // Read-your-writes on every node, followers included: each answers
    // once it has applied the last put.
    for node in &nodes {
        let out = cli(
            node,
            &["get", "k2", "--read", "session", "--after", &last_position],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "session read via {node}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v2", "{node}");
        assert!(stderr.contains(&format!("read from {node}")), "{stderr}");
    }
    let out = cli(&nodes.join(","), &["get", "k2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v2");

    // Every node has the writes durably: all report the same commit index.
    let out = cli(&nodes.join(","), &["status", "--json"]);
    assert!(out.status.success());
    let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses = statuses.as_array().unwrap();
    assert_eq!(statuses.len(), 3);
    let leaders = statuses.iter().filter(|s| s["role"] == "leader").count();
    assert_eq!(leaders, 1, "{statuses:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli(&nodes.join(","), &["status", "--json"]);
        let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let keys: Vec<_> = statuses
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["live_keys"].as_u64())
            .collect();
        if keys.iter().all(|k| *k == Some(3)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not all apply the 3 writes within 10 s: {keys:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Follower reads answer from the node asked, once it has caught up.
    for node in &nodes {
        let args = ["get", "k0", "--read", "follower", "--max-staleness", "10s"];
        let out = cli(node, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v0", "{node}");
    }

    // A follower killed: the cluster reports it and goes on with a majority.
    let leader = banner
        .iter()
        .find(|l| l.ends_with("(leader)"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    let pid = node_pids(&cluster_dir.join(format!("{follower}.toml")))
        .into_iter()
        .next()
        .expect("the follower's process");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let out = cli(&nodes.join(","), &["put", "after-kill", "yes"]);
    assert!(
        out.status.success(),
        "a put with 2 of 3 nodes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        cluster.child.try_wait().unwrap().is_none(),
        "the cluster stopped when one follower died"
    );

    kill(Pid::from_raw(cluster.child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the cluster did not stop within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &cluster.node_pids {
        assert!(!alive(*pid), "node process {pid} outlived the cluster");
    }

    // The directory now belongs to a 3-node leader-follower cluster.
    let out = run(
        dir.path(),
        &[
            "cluster",
            "--nodes",
            "1",
            "--dir",
            cluster_dir.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a reused directory was accepted");
    assert!(stderr.contains("different settings"), "{stderr}");
}

#[test]
fn bad_cluster_arguments_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--mode", "leader-follower", "--nodes", "1"],
            "at least 2 nodes",
        ),
        (
            &["--mode", "leader-follower", "--acks", "most"],
            "--acks \"most\" is not one of",
        ),
        (&["--acks", "all"], "leader-follower only"),
        (&["--metrics-base-port", "0"], "--metrics-base-port"),
        (
            &["--mode", "gossip"],
            "available: standalone, leader-follower",
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
