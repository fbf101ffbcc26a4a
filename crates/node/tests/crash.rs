//! A standalone node with `fsync = always`, SIGKILLed in the middle of a
//! `mimeo bench` write load, loses no acknowledged write.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_client::{Client, ClientConfig};
use mimeo_node::bench::value_for;
use mimeo_wire::TlsIdentity;
use support::*;

/// Keys of acknowledged writes, ignoring a last line cut short.
fn acked_keys(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete.lines().map(str::to_string).collect()
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    init_certs(dir.path());
    let addr = free_addr();
    let config = write_config(dir.path(), addr, "always", "");
    let mut node = start_node(&config, addr);

    let ack_log = dir.path().join("acks.log");
    let mut bench = spawn_write_load(dir.path(), addr, &ack_log);

    // Wait (bounded) until a good number of writes are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_keys(&ack_log).len() < 300 {
        assert!(
            Instant::now() < deadline,
            "bench acknowledged too few writes in 60 s"
        );
        assert!(bench.try_wait().unwrap().is_none(), "bench exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.child.kill().unwrap(); // SIGKILL, mid-load
    node.child.wait().unwrap();
    bench.kill().unwrap();
    bench.wait().unwrap();
    let acked = acked_keys(&ack_log);
    drop(node);

    let _node = start_node(&config, addr);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lost: Vec<String> = runtime.block_on(async {
        let identity = TlsIdentity::from_dir(&dir.path().join("certs"), "client-cli").unwrap();
        let client = Arc::new(
            Client::connect(ClientConfig::new(vec![addr], "mimeo", identity))
                .await
                .unwrap(),
        );
        let mut lost = Vec::new();
        for key in &acked {
            let value = client.get(key).await.unwrap();
            if value.as_deref() != Some(&value_for(key, 256)[..]) {
                lost.push(key.clone());
            }
        }
        lost
    });
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost after SIGKILL, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}
