//! Multi-leader runs against real `mimeo` processes on 127.0.0.1: every
//! node takes writes; the verdicts the harness must reach under faults.
//!
//! - siblings keep every concurrent write: nothing acknowledged is lost
//!   under partitions, kills, pauses and clock skew, and the replicas
//!   converge after the heal;
//! - last-writer-wins drops concurrent writes: the same workload finds
//!   acknowledged writes lost (exit 1), and the replicas still converge;
//! - counters merge by type: no increment is lost;
//! - observed-remove sets merge by type: no add is lost that no remove
//!   could have seen, no element a remove saw every add of comes back,
//!   and the replicas converge.

use std::path::Path;

use mimeo_harness::nemesis::Fault;
use mimeo_harness::run::{self, Interrupt, RunArgs};
use mimeo_harness::workload::Workload;
use mimeo_harness::{CheckResult, Verdict};

fn args(
    store: &Path,
    workload: Workload,
    conflicts: &str,
    nemesis: &[Fault],
    seed: u64,
) -> RunArgs {
    RunArgs {
        mode: "multi-leader".into(),
        acks: None,
        reads: None,
        conflicts: Some(conflicts.into()),
        quorum: Default::default(),
        workload,
        nemesis: nemesis.to_vec(),
        nemesis_interval: 1.2,
        time_limit: 10.0,
        nodes: 3,
        concurrency: 6,
        seed: Some(seed),
        nemesis_order: Default::default(),
        fsync: "always".into(),
        keys: 4,
        ops_per_key: 100,
        read_fraction: 0.5,
        op_timeout: 1.0,
        check_budget: 60.0,
        node_config: Vec::new(),
        store: store.to_path_buf(),
        run_id: Some(format!("{workload}-{conflicts}")),
        mimeo_bin: None,
    }
}

fn result<'o>(outcome: &'o run::RunOutcome, checker: &str) -> &'o CheckResult {
    outcome
        .results
        .iter()
        .find(|r| r.checker == checker)
        .unwrap_or_else(|| panic!("no {checker} result: {:#?}", outcome.results))
}

/// Every requested fault was injected, and the replicas agreed on every
/// key after the heal.
fn assert_faults_then_convergence(outcome: &run::RunOutcome, nemesis: &[Fault]) {
    for f in nemesis {
        assert!(
            outcome.injected.contains_key(f),
            "{} never injected: {:?}",
            f.name(),
            outcome.injected
        );
    }
    let convergence = result(outcome, "convergence");
    assert_eq!(convergence.verdict, Verdict::Valid, "{convergence:#?}");
    assert!(convergence.details["converged"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn siblings_lose_no_acknowledged_write_under_partitions_kills_pauses_and_skew() {
    let store = tempfile::tempdir().unwrap();
    let nemesis = [Fault::Partition, Fault::Kill, Fault::Pause, Fault::Clock];
    let args = RunArgs {
        nemesis_interval: 1.0,
        time_limit: 12.0,
        ..args(store.path(), Workload::Siblings, "siblings", &nemesis, 21)
    };
    let outcome = run::run(args, Interrupt::never()).await.unwrap();
    let siblings = result(&outcome, "siblings");
    assert_eq!(outcome.verdict, Verdict::Valid, "{:#?}", outcome.results);
    // What survived: hundreds of acknowledged writes, every one accounted
    // for, and the final reads saw concurrent values kept side by side.
    assert!(
        siblings.details["acknowledged"].as_u64().unwrap() > 100,
        "{siblings:#?}"
    );
    assert_eq!(siblings.details["lost"], 0);
    assert_faults_then_convergence(&outcome, &nemesis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_writer_wins_loses_acknowledged_writes_that_siblings_keep() {
    let store = tempfile::tempdir().unwrap();
    let nemesis = [Fault::Partition, Fault::Clock];
    let outcome = run::run(
        args(store.path(), Workload::Siblings, "lww", &nemesis, 22),
        Interrupt::never(),
    )
    .await
    .unwrap();
    let siblings = result(&outcome, "siblings");
    assert_eq!(siblings.verdict, Verdict::Invalid, "{siblings:#?}");
    assert!(
        siblings
            .anomalies
            .iter()
            .any(|a| a.kind == "lost" || a.kind == "lost-to-earlier"),
        "{siblings:#?}"
    );
    // LWW keeps one value per key: no siblings in the end.
    let histogram = siblings.details["final_siblings_histogram"]
        .as_object()
        .unwrap();
    assert!(
        histogram.keys().all(|n| n == "0" || n == "1"),
        "{histogram:?}"
    );
    assert_faults_then_convergence(&outcome, &nemesis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_lose_no_increment_under_partitions_and_kills() {
    let store = tempfile::tempdir().unwrap();
    let nemesis = [Fault::Partition, Fault::Kill];
    let outcome = run::run(
        args(store.path(), Workload::Counter, "lww", &nemesis, 23),
        Interrupt::never(),
    )
    .await
    .unwrap();
    let counter = result(&outcome, "counter");
    assert_eq!(outcome.verdict, Verdict::Valid, "{:#?}", outcome.results);
    // What survived: every key was read finally on every node, within the
    // bounds the acknowledged increments set.
    let keys = counter.details["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert_eq!(key["final_values"].as_array().unwrap().len(), 3, "{key}");
        assert!(key["acknowledged"].as_u64().unwrap() > 0, "{key}");
    }
    assert_faults_then_convergence(&outcome, &nemesis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn observed_remove_sets_lose_no_add_under_partitions_kills_pauses_and_skew() {
    let store = tempfile::tempdir().unwrap();
    let nemesis = [Fault::Partition, Fault::Kill, Fault::Pause, Fault::Clock];
    let args = RunArgs {
        nemesis_interval: 1.0,
        time_limit: 12.0,
        ..args(store.path(), Workload::OrSet, "siblings", &nemesis, 24)
    };
    let outcome = run::run(args, Interrupt::never()).await.unwrap();
    let orset = result(&outcome, "orset");
    assert_eq!(outcome.verdict, Verdict::Valid, "{:#?}", outcome.results);
    // What survived: adds and removes acknowledged on every side, every
    // one accounted for, and members left at the end.
    assert!(
        orset.details["acknowledged_adds"].as_u64().unwrap() > 50,
        "{orset:#?}"
    );
    assert!(
        orset.details["acknowledged_removes"].as_u64().unwrap() > 10,
        "{orset:#?}"
    );
    assert_eq!(orset.details["lost"], 0);
    assert_faults_then_convergence(&outcome, &nemesis);
}
