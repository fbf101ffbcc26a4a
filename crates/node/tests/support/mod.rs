//! Helpers to run real `mimeo` processes in tests.

#![allow(dead_code)] // each test binary uses its own subset

pub(crate) mod lf;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub(crate) fn mimeo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mimeo"))
}

/// A free UDP port on loopback (the kernel picks it; there is a small race
/// until the node binds it, acceptable in tests).
pub(crate) fn free_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// Runs `mimeo` with args and returns its output.
pub(crate) fn run(dir: &Path, args: &[&str]) -> Output {
    mimeo()
        .current_dir(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// A node process that is SIGKILLed when dropped.
pub(crate) struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes certificates for node n1 into `dir/certs`.
pub(crate) fn init_certs(dir: &Path) {
    let out = run(dir, &["certs", "init", "--dir", "certs", "--nodes", "n1"]);
    assert!(
        out.status.success(),
        "certs init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `dir/node.toml` for n1 with the given fsync mode and extra TOML.
pub(crate) fn write_config(dir: &Path, addr: SocketAddr, fsync: &str, extra: &str) -> PathBuf {
    let path = dir.join("node.toml");
    let text = format!(
        "node_id = \"n1\"\nlisten = \"{addr}\"\ndata_dir = \"data\"\n{extra}\n[tls]\ndir = \"certs\"\n[storage]\nfsync = \"{fsync}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `mimeo serve` and waits (bounded) for its "serving" line. The
/// node logs warnings, or what `MIMEO_TEST_LOG` asks for (a `RUST_LOG`
/// filter, e.g. `mimeo_leader_follower=debug`).
pub(crate) fn start_node(config: &Path, addr: SocketAddr) -> Node {
    let mut child = mimeo()
        .args(["serve", "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("MIMEO_TEST_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    let node = Node {
        child,
        addr,
        config: config.to_path_buf(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("node did not print its serving line within 30 s");
        if line.contains("serving") {
            return node;
        }
    }
}

/// The lines a child prints on its (piped) stdout, read on a thread of
/// their own so a test can wait for one with a bound. The thread reads to
/// the end even once nobody listens, so the child never writes into a
/// full or closed pipe.
pub(crate) fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Runs a `mimeo` client command (`put`, `get`...) against the node at
/// `addr`, in `dir`, where the certificates are.
pub(crate) fn cli(dir: &Path, addr: SocketAddr, args: &[&str]) -> Output {
    let mut all = client_args(addr);
    all.extend(args.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run(dir, &all)
}

/// Client arguments pointing at a node.
pub(crate) fn client_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "--node".into(),
        addr.to_string(),
        "--certs".into(),
        "certs".into(),
    ]
}

/// Starts `mimeo bench` writing unique keys to the node at `addr` with 8
/// workers for up to 60 s, logging every acknowledged key to `ack_log`
/// (run in `dir`, where the certificates are).
pub(crate) fn spawn_write_load(dir: &Path, addr: SocketAddr, ack_log: &Path) -> Child {
    mimeo()
        .current_dir(dir)
        .args(client_args(addr))
        .args([
            "bench",
            "--unique-keys",
            "--concurrency",
            "8",
            "--duration",
            "60s",
            "--quiet",
        ])
        .arg("--ack-log")
        .arg(ack_log)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
