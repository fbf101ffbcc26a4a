//! The trade-off of asynchronous replication, shown on real histories: a
//! 3-node leader-follower cluster whose leader is cut off from its
//! followers loses writes it acknowledged with `acks = async` (it keeps
//! acknowledging until it notices it lost its majority, the new leader never
//! saw those writes, and the old one rolls them back when it rejoins), and
//! loses none with `acks = quorum` under the same faults.
//!
//! Real `mimeo` processes on 127.0.0.1 (`cargo build -p mimeo-node` first,
//! or let the harness build it).

use std::collections::BTreeSet;
use std::path::Path;

use mimeo_harness::nemesis::Fault;
use mimeo_harness::run::{self, Interrupt, RunArgs, RunOutcome};
use mimeo_harness::workload::Workload;
use mimeo_harness::{History, OpType, Verdict};

/// The set workload against three leader-follower nodes while the nemesis
/// isolates the leader: quiet 0–4 s, leader cut off 4–8 s, quiet 8–12 s,
/// cut off again from 12 s to the end; default election timeouts
/// (300–600 ms), so the deposed leader acknowledges for up to 600 ms.
fn args(store: &Path, acks: &str) -> RunArgs {
    RunArgs {
        mode: "leader-follower".into(),
        acks: Some(acks.into()),
        reads: Some("leader".into()),
        conflicts: None,
        quorum: Default::default(),
        workload: Workload::Set,
        nemesis: vec![Fault::IsolateLeader],
        nemesis_interval: 4.0,
        time_limit: 13.0,
        nodes: 3,
        concurrency: 10,
        seed: Some(7),
        nemesis_order: Default::default(),
        fsync: "batch".into(),
        keys: 4,
        ops_per_key: 100,
        read_fraction: 0.5,
        op_timeout: 1.0,
        check_budget: 60.0,
        node_config: Vec::new(),
        store: store.to_path_buf(),
        run_id: Some(format!("set-lf-{acks}")),
        mimeo_bin: None,
    }
}

/// The set checker's count of `kind` elements (`lost`, `ok`...), from its
/// details: its anomaly list names only the first few.
fn count(outcome: &RunOutcome, kind: &str) -> u64 {
    let set = outcome
        .results
        .iter()
        .find(|r| r.checker == "set")
        .expect("a set result");
    set.details["counts"][kind]
        .as_u64()
        .unwrap_or_else(|| panic!("no {kind} count in {:#}", set.details))
}

/// The leaders the nemesis cut off, read back from the history.
fn isolated_leaders(outcome: &RunOutcome) -> Vec<String> {
    let history = History::read_jsonl(&outcome.dir.join(run::HISTORY_FILE)).unwrap();
    history
        .nemesis()
        .filter(|op| op.f == "partition" && op.value["kind"] == "isolate-leader")
        .map(|op| op.value["leader"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The nodes that acknowledged the adds the set checker found lost.
fn acknowledgers_of_lost(outcome: &RunOutcome) -> BTreeSet<String> {
    let set = outcome
        .results
        .iter()
        .find(|r| r.checker == "set")
        .expect("a set result");
    let lost: BTreeSet<u64> = set.details["lost"]
        .as_array()
        .unwrap_or_else(|| panic!("no lost elements in {:#}", set.details))
        .iter()
        .map(|e| e.as_u64().expect("elements are integers"))
        .collect();
    let history = History::read_jsonl(&outcome.dir.join(run::HISTORY_FILE)).unwrap();
    history
        .ops
        .iter()
        .filter(|op| op.f == "add" && op.kind == OpType::Ok)
        .filter(|op| op.value.as_u64().is_some_and(|e| lost.contains(&e)))
        .map(|op| op.node.clone().unwrap_or_else(|| "?".into()))
        .collect()
}

/// The adds acknowledged in the history.
fn acknowledged_adds(outcome: &RunOutcome) -> usize {
    let history = History::read_jsonl(&outcome.dir.join(run::HISTORY_FILE)).unwrap();
    history
        .ops
        .iter()
        .filter(|op| op.f == "add" && op.kind == OpType::Ok)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_acks_lose_acknowledged_writes_when_the_leader_is_cut_off_and_quorum_acks_do_not() {
    let store = tempfile::tempdir().unwrap();

    let asynchronous = run::run(args(store.path(), "async"), Interrupt::never())
        .await
        .unwrap();
    let leaders = isolated_leaders(&asynchronous);
    assert!(!leaders.is_empty(), "the nemesis never isolated a leader");
    assert!(
        acknowledged_adds(&asynchronous) > 100,
        "too few adds acknowledged to mean anything: {:#?}",
        asynchronous.results
    );
    let lost = count(&asynchronous, "lost");
    assert_eq!(
        asynchronous.verdict,
        Verdict::Invalid,
        "acks = async must lose acknowledged adds when the leader ({leaders:?}) is cut off: {:#?}",
        asynchronous.results
    );
    assert!(lost > 0, "{:#?}", asynchronous.results);
    // The lost adds are the ones a leader acknowledged while cut off.
    let acknowledgers = acknowledgers_of_lost(&asynchronous);
    assert!(
        acknowledgers.iter().all(|node| leaders.contains(node)),
        "lost adds acknowledged by {acknowledgers:?}, but only {leaders:?} were cut off"
    );

    let quorum = run::run(args(store.path(), "quorum"), Interrupt::never())
        .await
        .unwrap();
    let leaders = isolated_leaders(&quorum);
    assert!(!leaders.is_empty(), "the nemesis never isolated a leader");
    assert!(
        acknowledged_adds(&quorum) > 100,
        "too few adds acknowledged to mean anything: {:#?}",
        quorum.results
    );
    assert_eq!(count(&quorum, "lost"), 0, "{:#?}", quorum.results);
    assert_eq!(
        quorum.verdict,
        Verdict::Valid,
        "acks = quorum must lose nothing under the same faults (async lost {lost}): {:#?}",
        quorum.results
    );
}
