//! Snapshots with real processes: three `mimeo serve` nodes in
//! leader-follower mode taking a snapshot every 50 entries. A follower is
//! stopped while a few hundred keys are written, so the leader drops the
//! entries it missed; restarted, it catches up (from the leader's
//! snapshot, then the log) and serves every key, and the leader's log on
//! disk no longer starts at index 1.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use mimeo_wire::ReadConsistency;
use support::lf::*;
use support::*;

/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(30);

/// What the nodes of this file add to their `[storage]` and `[replication]`
/// sections: small segments, and a snapshot every 50 entries.
const STORAGE: &str = "segment_bytes = 4096\n";
const REPLICATION: &str = "snapshot_every = 50\nsnapshot_keep = 10\n";

/// The first index of the oldest log segment in a node's data directory.
fn first_segment_index(data: &Path) -> u64 {
    std::fs::read_dir(data)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .min()
        .expect("the node has a log segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_missed_compacted_entries_catches_up_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, all) = start_lf_cluster(dir.path(), STORAGE, REPLICATION);
    let client = connect(dir.path(), all.clone()).await;

    for i in 0..10 {
        put_until_acknowledged(&client, &format!("before-{i}"), &i.to_string()).await;
    }
    let leader_addr = leader(&client, &all).await;
    let stopped = all.iter().position(|a| *a != leader_addr).unwrap();
    let config = nodes[stopped].as_ref().unwrap().config.clone();
    drop(nodes[stopped].take()); // SIGKILL

    let keys: Vec<String> = (0..300).map(|i| format!("while-down-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        put_until_acknowledged(&client, key, &i.to_string()).await;
    }
    // The leader dropped the log the stopped follower lacks, on disk too.
    let current = leader(&client, &all).await;
    let leader_index = all.iter().position(|a| *a == current).unwrap();
    let leader_data = dir.path().join("data").join(LF_IDS[leader_index]);
    let first = first_segment_index(&leader_data);
    assert!(first > 1, "the leader's log still starts at index {first}");
    assert!(leader_data.join("leader-follower.snapshot").exists());

    nodes[stopped] = Some(start_node(&config, all[stopped]));
    let follower = connect(dir.path(), vec![all[stopped]]).await;
    let deadline = Instant::now() + WAIT;
    let mut session = None;
    for (i, key) in keys.iter().enumerate().rev() {
        loop {
            let read = follower
                .get_with(
                    key,
                    ReadConsistency::Follower {
                        max_staleness_ms: None,
                    },
                )
                .await;
            match read {
                Ok(r) if r.value.as_deref() == Some(i.to_string().as_bytes()) => {
                    session.get_or_insert(r);
                    break;
                }
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "{key} missing on the restarted follower: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    for i in 0..10 {
        let r = follower
            .get_with(
                &format!("before-{i}"),
                ReadConsistency::Follower {
                    max_staleness_ms: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(r.value.as_deref(), Some(i.to_string().as_bytes()));
    }
    // A session read at the newest position seen is served by the follower.
    let seen = session.expect("read above");
    let r = follower
        .get_with(
            &keys[0],
            ReadConsistency::Session {
                after: seen.position,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.value.as_deref(), Some(&b"0"[..]));
    assert_eq!(r.node, all[stopped]);
    let status = follower.status_of(all[stopped]).await.unwrap();
    assert_eq!(status.role, mimeo_client::NodeRole::Follower);
    assert!(
        status.commit_index >= 310,
        "the follower has everything: {status:?}"
    );
}
