//! A node with `simulate_power_loss = true`, SIGKILLed in the middle of a
//! `mimeo bench` write load, loses what a power cut would: acknowledged
//! writes under `fsync = "never"` (nothing fsynced them), none under
//! `fsync = "always"` (DESIGN.md §7: "power loss: kill -9 plus the loss of
//! every byte not yet fsynced"). The plain SIGKILL test (`crash.rs`) is the
//! control: without the setting, even `never` would lose nothing to a kill.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mimeo_client::{Client, ClientConfig};
use mimeo_node::bench::value_for;
use mimeo_wire::TlsIdentity;
use support::*;

/// How many acknowledged writes to wait for before the kill.
const ACKED_BEFORE_KILL: usize = 300;
/// Bounds every wait in these tests.
const WAIT: Duration = Duration::from_secs(60);
/// The warning the node must log when the setting is on.
const WARNING: &str = "test mode: unsynced writes live in memory; SIGKILL simulates a power cut";

/// Writes `dir/node.toml` for n1 with `simulate_power_loss = true`.
fn write_power_loss_config(dir: &Path, addr: SocketAddr, fsync: &str) -> PathBuf {
    let path = dir.join("node.toml");
    let text = format!(
        "node_id = \"n1\"\nlisten = \"{addr}\"\ndata_dir = \"data\"\n\
         [tls]\ndir = \"certs\"\n\
         [storage]\nfsync = \"{fsync}\"\nsimulate_power_loss = true\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `mimeo serve`, waits (bounded) for its serving line, and checks
/// that it logged the test-mode warning first.
fn start_warned_node(config: &Path, addr: SocketAddr) -> Node {
    let mut child = mimeo()
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let serving = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("serving") {
                let _ = serving.send("serving".to_string());
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains(WARNING) {
                assert!(line.contains("WARN"), "not a warning: {line}");
                let _ = tx.send("warned".to_string());
            }
            eprintln!("{line}");
        }
    });
    let node = Node {
        child,
        addr,
        config: config.to_path_buf(),
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(what) => seen.push(what),
            Err(_) => panic!("within {WAIT:?} the node printed only {seen:?}"),
        }
    }
    assert!(seen.contains(&"warned".to_string()), "{seen:?}");
    node
}

/// Keys of acknowledged writes, ignoring a last line cut short.
fn acked_keys(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete.lines().map(str::to_string).collect()
}

/// Runs a write load against a power-loss node under `fsync`, SIGKILLs the
/// node mid-load, restarts it and returns how many writes were
/// acknowledged before the kill and which of them are gone.
fn acknowledged_writes_lost_at_a_power_cut(fsync: &str) -> (usize, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let config = write_power_loss_config(dir.path(), addr, fsync);
    let mut node = start_warned_node(&config, addr);

    let ack_log = dir.path().join("acks.log");
    let mut bench = spawn_write_load(dir.path(), addr, &ack_log);

    let deadline = Instant::now() + WAIT;
    while acked_keys(&ack_log).len() < ACKED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "bench acknowledged too few writes in {WAIT:?}"
        );
        assert!(bench.try_wait().unwrap().is_none(), "bench exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.child.kill().unwrap(); // SIGKILL mid-load: no clean shutdown, no sync
    node.child.wait().unwrap();
    bench.kill().unwrap();
    bench.wait().unwrap();
    let acked = acked_keys(&ack_log);
    drop(node);

    let _node = start_warned_node(&config, addr);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lost = runtime.block_on(async {
        let identity = TlsIdentity::from_dir(&dir.path().join("certs"), "client-cli").unwrap();
        let connect = Client::connect(ClientConfig::new(vec![addr], "mimeo", identity));
        let client = Arc::new(
            tokio::time::timeout(WAIT, connect)
                .await
                .expect("connect to the restarted node in time")
                .unwrap(),
        );
        let mut lost = Vec::new();
        for key in &acked {
            let value = tokio::time::timeout(WAIT, client.get(key))
                .await
                .expect("read from the restarted node in time")
                .unwrap();
            if value.as_deref() != Some(&value_for(key, 256)[..]) {
                lost.push(key.clone());
            }
        }
        lost
    });
    (acked.len(), lost)
}

#[test]
fn without_fsync_a_power_cut_loses_acknowledged_writes() {
    let (acked, lost) = acknowledged_writes_lost_at_a_power_cut("never");
    assert!(
        !lost.is_empty(),
        "none of {acked} writes acknowledged under fsync = never was lost: \
         the power cut was not simulated"
    );
    eprintln!(
        "fsync = never: {} of {acked} acknowledged writes lost",
        lost.len()
    );
}

#[test]
fn with_fsync_always_a_power_cut_loses_no_acknowledged_write() {
    let (acked, lost) = acknowledged_writes_lost_at_a_power_cut("always");
    assert!(
        lost.is_empty(),
        "{} of {acked} acknowledged writes lost under fsync = always, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
