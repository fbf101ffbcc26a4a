//! A data directory belongs to one process, and to the mode, cluster and
//! node that created it (issue 19, items 2 and 6), checked with real
//! `mimeo serve` processes.

mod support;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Writes `dir/<name>` for node n1 on `addr` with `data_dir`, in `mode`
/// (leader-follower nodes get two peers that never run).
fn config(dir: &Path, name: &str, addr: SocketAddr, data_dir: &str, mode: &str) -> PathBuf {
    let mut text = format!(
        "node_id = \"n1\"\nlisten = \"{addr}\"\ndata_dir = \"{data_dir}\"\nmode = \"{mode}\"\n\
         [tls]\ndir = \"certs\"\n[storage]\nfsync = \"batch\"\n"
    );
    if mode == "leader-follower" {
        for peer in ["n2", "n3"] {
            text += &format!(
                "[[replication.peers]]\nid = \"{peer}\"\naddr = \"{}\"\n",
                free_addr()
            );
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `mimeo serve` expecting it to refuse to start: returns its exit
/// status and stderr. Fails the test if it starts serving, or is still
/// running after 30 s.
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, reader.join().unwrap());
        }
        let serving = lines.try_iter().find(|l| l.contains("serving"));
        if serving.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = reader.join().unwrap();
            panic!(
                "mimeo serve --config {} was not refused: {}\nstderr:\n{stderr}",
                config.display(),
                serving.unwrap_or_else(|| "still running after 30 s".into())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_node_on_a_served_data_dir_exits_naming_it_and_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let first = config(dir.path(), "first.toml", addr, "data", "standalone");
    let node = start_node(&first, addr);
    assert!(cli(dir.path(), addr, &["put", "k1", "first"])
        .status
        .success());

    let second = config(dir.path(), "second.toml", free_addr(), "data", "standalone");
    let (status, stderr) = serve_refused(&second);
    assert!(!status.success(), "{status}");
    let data_dir = dir.path().join("data").display().to_string();
    let pid = node.child.id().to_string();
    assert!(
        stderr.contains(&data_dir) && stderr.contains(&format!("process {pid} holds its lock")),
        "the error names neither {data_dir} nor pid {pid}:\n{stderr}"
    );

    // The first node goes on serving, and its data is intact.
    assert!(cli(dir.path(), addr, &["put", "k2", "still"])
        .status
        .success());
    for (key, value) in [("k1", "first"), ("k2", "still")] {
        let out = cli(dir.path(), addr, &["get", key]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), value);
    }
}

#[test]
fn a_standalone_data_dir_is_refused_in_leader_follower_mode() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let standalone = config(dir.path(), "standalone.toml", addr, "data", "standalone");
    let node = start_node(&standalone, addr);
    assert!(cli(dir.path(), addr, &["put", "k", "v"]).status.success());
    drop(node);

    let lf = config(dir.path(), "lf.toml", addr, "data", "leader-follower");
    let (status, stderr) = serve_refused(&lf);
    assert!(!status.success(), "{status}");
    assert!(
        stderr.contains("was created for mode standalone, node n1, cluster mimeo")
            && stderr.contains("asks for mode leader-follower, node n1, cluster mimeo"),
        "{stderr}"
    );
    // Refused without a change: the standalone node still finds its key.
    let _node = start_node(&standalone, addr);
    let out = cli(dir.path(), addr, &["get", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
}

#[test]
fn a_leader_follower_data_dir_is_refused_standalone() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let lf = config(dir.path(), "lf.toml", addr, "data", "leader-follower");
    drop(start_node(&lf, addr));

    let standalone = config(dir.path(), "standalone.toml", addr, "data", "standalone");
    let (status, stderr) = serve_refused(&standalone);
    assert!(!status.success(), "{status}");
    assert!(
        stderr.contains("was created for mode leader-follower, node n1, cluster mimeo")
            && stderr.contains("asks for mode standalone"),
        "{stderr}"
    );
    // The leader-follower node starts again on it.
    drop(start_node(&lf, addr));
}

#[test]
fn a_data_dir_from_before_the_identity_file_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let standalone = config(dir.path(), "standalone.toml", addr, "data", "standalone");
    let node = start_node(&standalone, addr);
    assert!(cli(dir.path(), addr, &["put", "k", "v"]).status.success());
    drop(node);
    // What an older mimeo left: data, no identity file.
    let identity = dir.path().join("data/mimeo-node.json");
    std::fs::remove_file(&identity).unwrap();

    let _node = start_node(&standalone, addr);
    let out = cli(dir.path(), addr, &["get", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
    let recorded = std::fs::read_to_string(&identity).unwrap();
    assert!(recorded.contains("\"mode\":\"standalone\""), "{recorded}");
}
