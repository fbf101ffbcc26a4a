//! A node whose disk fails an fsync (issue 19, item 5): it stops with an
//! error that says what failed and what to do, and when it starts again it
//! does not serve, as durable, the write whose fsync failed (the page cache
//! still holds it, and an fsync at open would now succeed).

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn a_node_whose_fsync_fails_exits_and_its_restart_drops_the_unsynced_write() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"n1\"\nlisten = \"{addr}\"\ndata_dir = \"data\"\n[tls]\ndir = \"certs\"\n\
             [storage]\nfsync = \"batch\"\ninject_fsync_errors = true\n"
        ),
    )
    .unwrap();
    let mut child = mimeo()
        .args(["serve", "--config"])
        .arg(&config)
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
    let node = Node {
        child,
        addr,
        config: config.clone(),
    };
    let serving = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(serving.contains("serving"), "{serving}");

    assert!(cli(dir.path(), addr, &["put", "kept", "1"])
        .status
        .success());
    // The disk starts failing fsyncs with EIO.
    let trigger = dir.path().join("data/fail-fsync");
    std::fs::write(&trigger, b"").unwrap();
    let out = cli(dir.path(), addr, &["put", "unsynced", "2"]);
    assert!(
        !out.status.success(),
        "a write whose fsync failed was acknowledged"
    );

    // The node exits, non-zero, saying what failed and what to do.
    let mut node = node;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node still runs 15 s after its fsync failed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}");
    let log: Vec<String> = err_rx.try_iter().collect();
    let last = log.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("error:")
            && last.contains("fsync")
            && last.contains("Check the disk")
            && last.contains("after index 1"),
        "the exit error does not say what failed and what to do:\n{}",
        log.join("\n")
    );
    drop(node);

    // The disk works again; the node restarts on the same directory.
    std::fs::remove_file(&trigger).unwrap();
    let _node = start_node(&config, addr);
    let out = cli(dir.path(), addr, &["get", "kept"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let out = cli(dir.path(), addr, &["get", "unsynced"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "the write whose fsync failed is served after the restart"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(absent)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Writes go on.
    assert!(cli(dir.path(), addr, &["put", "after", "3"])
        .status
        .success());
}
