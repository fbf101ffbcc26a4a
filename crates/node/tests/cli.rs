//! The `mimeo` command line against a real standalone node process.

mod support;

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn put_get_delete_and_cas_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let config = write_config(dir.path(), addr, "batch", "");
    let _node = start_node(&config, addr);

    let out = cli(dir.path(), addr, &["put", "colour", "blue"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(dir.path(), addr, &["get", "colour"]);
    assert_eq!(stdout(&out), "blue");

    // A cas against the wrong value writes nothing and exits 1.
    let out = cli(
        dir.path(),
        addr,
        &["cas", "colour", "green", "--expect", "red"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("'blue'"), "{}", stderr(&out));
    assert_eq!(stdout(&cli(dir.path(), addr, &["get", "colour"])), "blue");

    let out = cli(
        dir.path(),
        addr,
        &["cas", "colour", "green", "--expect", "blue"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&cli(dir.path(), addr, &["get", "colour"])), "green");

    let out = cli(dir.path(), addr, &["cas", "--absent", "fresh", "one"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(dir.path(), addr, &["cas", "--absent", "fresh", "two"]);
    assert_eq!(out.status.code(), Some(1));

    let out = cli(dir.path(), addr, &["delete", "colour"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(dir.path(), addr, &["get", "colour"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("(absent)"));

    let out = cli(dir.path(), addr, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status[0]["node_id"], "n1");
    assert_eq!(status[0]["live_keys"], 1);
}

#[test]
fn oversized_values_are_refused_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let config = write_config(dir.path(), addr, "never", "[limits]\nmax_value_bytes = 100");
    let _node = start_node(&config, addr);

    let big = "x".repeat(101);
    let out = cli(dir.path(), addr, &["put", "k", &big]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused write is a definite failure"
    );
    assert!(stderr(&out).contains("max_value_bytes"), "{}", stderr(&out));
    assert_eq!(stdout(&cli(dir.path(), addr, &["get", "k"])), "");

    let out = cli(dir.path(), addr, &["put", "k", "small"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&cli(dir.path(), addr, &["get", "k"])), "small");
}

#[test]
fn a_standalone_node_meets_every_ack_override_but_semi_sync() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let config = write_config(dir.path(), addr, "batch", "");
    let _node = start_node(&config, addr);

    for ack in ["async", "quorum", "all"] {
        let out = cli(dir.path(), addr, &["put", "k", ack, "--ack", ack]);
        assert!(out.status.success(), "--ack {ack}: {}", stderr(&out));
        assert_eq!(stdout(&cli(dir.path(), addr, &["get", "k"])), ack);
    }
    // No followers to wait for: refused, definitely not written.
    let out = cli(dir.path(), addr, &["put", "k", "x", "--ack", "semi-sync:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("semi-sync:1"), "{}", stderr(&out));
    let out = cli(dir.path(), addr, &["delete", "k", "--ack", "semi-sync:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&cli(dir.path(), addr, &["get", "k"])), "all");
    // A misspelt mode is a usage error naming it.
    let out = cli(dir.path(), addr, &["put", "k", "x", "--ack", "majority"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("majority"), "{}", stderr(&out));
}

#[test]
fn a_bad_config_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[storage]\nfsync = \"always\"\nsegmnet_bytes = 10\n",
    )
    .unwrap();
    let out = run(dir.path(), &["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("segmnet_bytes"), "{}", stderr(&out));

    std::fs::write(&config, "[limits]\nmax_key_bytes = 0\n").unwrap();
    let out = run(dir.path(), &["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("limits.max_key_bytes"),
        "{}",
        stderr(&out)
    );
}

/// How many keys the shutdown tests write before stopping the node.
const SHUTDOWN_KEYS: usize = 20;

/// Starts a node with `fsync = "never"` and `simulate_power_loss = true`
/// (unsynced bytes live in the node's memory, so only a flush puts them on
/// disk), writes [`SHUTDOWN_KEYS`] keys through the CLI, stops the node
/// with `signal`, waits (bounded) for it to exit, restarts it and returns
/// how it exited and which keys read back wrong.
///
/// Without the power-loss setting the page cache would keep every write
/// a killed process made, flush or no flush, and a missing flush would go
/// unseen.
fn keys_lost_after(signal: Signal) -> (std::process::ExitStatus, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let config = write_config(dir.path(), addr, "never", "");
    // `[storage]` is the config's last table: add to it.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("simulate_power_loss = true\n");
    std::fs::write(&config, text).unwrap();

    let mut node = start_node(&config, addr);
    for i in 0..SHUTDOWN_KEYS {
        let out = cli(
            dir.path(),
            addr,
            &["put", &format!("k{i}"), &format!("v{i}")],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    kill(Pid::from_raw(node.child.id() as i32), signal).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node ignored {signal} for 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(node);

    let _node = start_node(&config, addr);
    let lost = (0..SHUTDOWN_KEYS)
        .filter(|i| {
            let out = cli(dir.path(), addr, &["get", &format!("k{i}")]);
            stdout(&out) != format!("v{i}")
        })
        .map(|i| format!("k{i}"))
        .collect();
    (status, lost)
}

#[test]
fn sigterm_flushes_so_nothing_is_lost_even_without_fsync() {
    let (status, lost) = keys_lost_after(Signal::SIGTERM);
    assert!(status.success(), "clean shutdown exits 0, got {status}");
    assert!(
        lost.is_empty(),
        "{} of {SHUTDOWN_KEYS} writes lost after SIGTERM: {lost:?}",
        lost.len()
    );
}

/// The control for the test above: the same writes, stopped with SIGKILL
/// (no flush), are lost, so the power-loss setting does hold unsynced
/// writes back and the SIGTERM test can see a missing flush.
#[test]
fn sigkill_without_fsync_loses_what_a_sigterm_would_have_flushed() {
    let (status, lost) = keys_lost_after(Signal::SIGKILL);
    assert!(!status.success(), "SIGKILL cannot exit 0, got {status}");
    assert!(
        !lost.is_empty(),
        "no write was lost to SIGKILL under fsync = never with simulate_power_loss: \
         the setting did not hold unsynced writes back"
    );
}

#[test]
fn admin_operations_need_an_admin_certificate() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let config = write_config(dir.path(), addr, "never", "");
    let _node = start_node(&config, addr);

    let out = cli(
        dir.path(),
        addr,
        &["--identity", "client-cli", "admin", "clock-offset", "5000"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("forbidden") || stderr(&out).contains("admin"),
        "{}",
        stderr(&out)
    );

    let out = cli(dir.path(), addr, &["admin", "clock-offset", "--", "-5000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(dir.path(), addr, &["admin", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["clock_offset_ms"], -5000);
}

#[test]
fn the_ca_key_is_not_handed_out_and_signs_a_client_added_later() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let certs = dir.path().join("certs");
    let ca = dir.path().join("certs-ca");
    // What clients are told to use holds no key that can sign.
    assert!(
        !certs.join("ca.key").exists(),
        "ca.key beside the certificates"
    );
    assert!(ca.join("ca.key").is_file());
    let mode = std::fs::metadata(&ca).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    let addr = free_addr();
    let config = write_config(dir.path(), addr, "batch", "");
    let _node = start_node(&config, addr);
    // A client added after the cluster started, signed by the kept CA.
    let out = run(
        dir.path(),
        &[
            "certs",
            "issue",
            "--ca-dir",
            "certs-ca",
            "--dir",
            "certs",
            "--clients",
            "alice",
            "--valid-days",
            "30",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(
        dir.path(),
        addr,
        &["--identity", "client-alice", "put", "k", "v"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Issuing the same name again needs --force (rotation).
    let args = [
        "certs",
        "issue",
        "--ca-dir",
        "certs-ca",
        "--clients",
        "alice",
    ];
    let out = run(dir.path(), &args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = run(dir.path(), &[&args[..], &["--force"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));

    // One directory for both is refused, and writes nothing.
    let out = run(
        dir.path(),
        &[
            "certs", "init", "--dir", "same", "--ca-dir", "same", "--nodes", "n1",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("must not be handed out"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("same").exists());
}
