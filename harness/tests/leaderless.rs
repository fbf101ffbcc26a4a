//! Leaderless runs against real `mimeo` processes on 127.0.0.1: 5 nodes,
//! N = 3, and the verdicts the harness must reach (issue 23's harness
//! cases):
//!
//! - strict quorums (W = R = 2): the siblings, counter and set workloads
//!   lose no acknowledged write under partitions, kills and pauses, and
//!   every key's replicas agree after the heal;
//! - strict quorums, register: no read misses a write acknowledged before
//!   it began (`quorum-reads` holds), while linearizability is reported
//!   as a measurement and never fails the run;
//! - sloppy quorums, register, under partitions: a read misses an
//!   acknowledged write although W + R > N (exit 1); strict quorums on the
//!   same seed and schedule find none and count the unavailable requests
//!   instead;
//! - W = R = 1 with read repair off: stale reads are measured, not judged,
//!   and anti-entropy alone makes the replicas agree after the heal;
//! - last-writer-wins under the clock nemesis: lost updates (exit 1).
//!
//! The runs are short (8-10 s each); each test is one or two runs.

use std::path::Path;

use mimeo_harness::nemesis::Fault;
use mimeo_harness::run::{self, Interrupt, QuorumArgs, RunArgs};
use mimeo_harness::workload::Workload;
use mimeo_harness::{CheckResult, Verdict};

fn args(store: &Path, workload: Workload, nemesis: &[Fault], seed: u64, id: &str) -> RunArgs {
    RunArgs {
        mode: "leaderless".into(),
        acks: None,
        reads: None,
        conflicts: None,
        quorum: QuorumArgs::default(),
        workload,
        nemesis: nemesis.to_vec(),
        nemesis_interval: 1.0,
        time_limit: 10.0,
        nodes: 5,
        concurrency: 10,
        seed: Some(seed),
        nemesis_order: Default::default(),
        fsync: "always".into(),
        keys: 5,
        ops_per_key: 100,
        read_fraction: 0.5,
        op_timeout: 1.0,
        check_budget: 60.0,
        node_config: Vec::new(),
        store: store.to_path_buf(),
        run_id: Some(id.into()),
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

/// What `results.json` says of the replicas' final agreement.
fn convergence(outcome: &run::RunOutcome) -> serde_json::Value {
    let text = std::fs::read_to_string(outcome.dir.join("results.json")).unwrap();
    let results: serde_json::Value = serde_json::from_str(&text).unwrap();
    results["convergence"].clone()
}

fn assert_injected(outcome: &run::RunOutcome, nemesis: &[Fault]) {
    for f in nemesis {
        assert!(
            outcome.injected.contains_key(f),
            "{} never injected: {:?}",
            f.name(),
            outcome.injected
        );
    }
}

const FAULTS: [Fault; 3] = [Fault::Partition, Fault::Kill, Fault::Pause];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_quorums_lose_no_sibling_and_replicas_agree_after_the_heal() {
    let store = tempfile::tempdir().unwrap();
    let outcome = run::run(
        args(store.path(), Workload::Siblings, &FAULTS, 31, "siblings"),
        Interrupt::never(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.verdict, Verdict::Valid, "{:#?}", outcome.results);
    let siblings = result(&outcome, "siblings");
    assert!(
        siblings.details["acknowledged"].as_u64().unwrap() > 20,
        "{siblings:#?}"
    );
    assert_eq!(siblings.details["lost"], 0);
    // Judged on the replicas' own copies: 3 per key.
    let converged = result(&outcome, "convergence");
    assert_eq!(converged.verdict, Verdict::Valid, "{converged:#?}");
    assert!(converged.details["converged"].as_u64().unwrap() >= 1);
    assert_eq!(convergence(&outcome)["converged"], true);
    assert_injected(&outcome, &FAULTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_quorums_lose_no_increment_and_no_set_element() {
    let store = tempfile::tempdir().unwrap();
    let counter = run::run(
        args(store.path(), Workload::Counter, &FAULTS, 32, "counter"),
        Interrupt::never(),
    )
    .await
    .unwrap();
    assert_eq!(counter.verdict, Verdict::Valid, "{:#?}", counter.results);
    let keys = result(&counter, "counter").details["keys"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!keys.is_empty());
    for key in &keys {
        // Each key's 3 replicas' own copies at least. A worker's quorum
        // read begun after the key's last increment ended also counts as
        // its coordinator's settled read, so a key can show a 4th or 5th
        // node (seen under load); every one of them must agree.
        let finals = key["final_values"].as_array().unwrap();
        assert!((3..=5).contains(&finals.len()), "{key}");
        assert!(finals.iter().all(|v| v == &finals[0]), "{key}");
    }
    assert_eq!(result(&counter, "convergence").verdict, Verdict::Valid);
    assert_injected(&counter, &FAULTS);

    let set = run::run(
        args(store.path(), Workload::Set, &FAULTS, 33, "set"),
        Interrupt::never(),
    )
    .await
    .unwrap();
    assert_eq!(set.verdict, Verdict::Valid, "{:#?}", set.results);
    let checked = result(&set, "set");
    assert!(
        checked.details["acknowledged"].as_u64().unwrap() > 20,
        "{checked:#?}"
    );
    assert_eq!(checked.details["counts"]["lost"], 0, "{checked:#?}");
    assert_eq!(convergence(&set)["converged"], true);
    assert_injected(&set, &FAULTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_quorum_reads_see_acknowledged_writes_and_linearizability_is_only_measured() {
    let store = tempfile::tempdir().unwrap();
    let args = RunArgs {
        conflicts: Some("lww".into()),
        ..args(store.path(), Workload::Register, &FAULTS, 34, "register")
    };
    let outcome = run::run(args, Interrupt::never()).await.unwrap();
    assert_eq!(outcome.verdict, Verdict::Valid, "{:#?}", outcome.results);
    let quorum = result(&outcome, "quorum-reads");
    assert_eq!(quorum.verdict, Verdict::Valid, "{quorum:#?}");
    assert_eq!(quorum.details["claimed"], true);
    assert!(
        quorum.details["reads"].as_u64().unwrap() > 20,
        "{quorum:#?}"
    );
    let linear = result(&outcome, "linearizable");
    assert_eq!(linear.verdict, Verdict::Valid, "a measurement never votes");
    assert!(
        linear.summary.starts_with("measured, not claimed"),
        "{}",
        linear.summary
    );
    assert!(
        linear.details["measured_verdict"].is_string(),
        "{linear:#?}"
    );
    assert_injected(&outcome, &FAULTS);
}

/// The register workload in these runs: last-writer-wins (a plain get
/// of a key holding siblings is refused, which would hide reads), one
/// partition of `SLOPPY_PARTITION_S` after as long a quiet spell.
fn register_under_one_long_partition(store: &Path, seed: u64, id: &str) -> RunArgs {
    RunArgs {
        conflicts: Some("lww".into()),
        nemesis_interval: SLOPPY_PARTITION_S,
        time_limit: 2.0 * SLOPPY_PARTITION_S + 2.0,
        ..args(store, Workload::Register, &[Fault::Partition], seed, id)
    }
}

/// How long the partition lasts in the sloppy test: a node marks a peer
/// unreachable (and sloppy quorums start using fallbacks) only when the
/// QUIC connection to it times out, 10 s into the partition.
const SLOPPY_PARTITION_S: f64 = 20.0;

/// A seed whose partition is a bridge (two halves sharing one node), so
/// both sides keep taking writes through fallbacks. Measured by hand
/// (20 s partitions): every run whose partition split the nodes (halves,
/// ring or bridge; seeds 2, 6, 7, 8 and this one twice) found 9 to 95 stale
/// reads; with one node isolated (seeds 1, 3, 4, 5) the other four stay
/// consistent among themselves and 1 run of 4 found one.
const SLOPPY_SEED: u64 = 36;

/// The sloppy-quorum stale read, and strict quorums on the same seed and
/// schedule: no stale read, unavailable requests instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sloppy_quorums_read_stale_under_partitions_where_strict_ones_are_unavailable() {
    let store = tempfile::tempdir().unwrap();
    let sloppy = RunArgs {
        quorum: QuorumArgs {
            sloppy: true,
            ..QuorumArgs::default()
        },
        ..register_under_one_long_partition(store.path(), SLOPPY_SEED, "sloppy")
    };
    let outcome = run::run(sloppy, Interrupt::never()).await.unwrap();
    let quorum = result(&outcome, "quorum-reads");
    assert_eq!(quorum.verdict, Verdict::Invalid, "{quorum:#?}");
    assert_eq!(outcome.verdict, Verdict::Invalid);
    assert!(
        quorum
            .anomalies
            .iter()
            .any(|a| a.kind == "stale-quorum-read"),
        "{quorum:#?}"
    );
    assert!(quorum.summary.contains("sloppy"), "{}", quorum.summary);

    let strict = register_under_one_long_partition(store.path(), SLOPPY_SEED, "strict");
    let outcome = run::run(strict, Interrupt::never()).await.unwrap();
    let quorum = result(&outcome, "quorum-reads");
    assert_eq!(quorum.verdict, Verdict::Valid, "{quorum:#?}");
    assert_eq!(quorum.details["stale"], 0);
    // What strict quorums gave up instead: requests refused during the
    // partition.
    let perf = result(&outcome, "perf");
    let during = &perf.details["availability"]["during_faults"];
    assert!(
        during["served_fraction"].as_f64().unwrap() < 1.0,
        "{during:#}"
    );
    assert_eq!(outcome.verdict, Verdict::Valid, "{:#?}", outcome.results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_quorums_measure_stale_reads_and_anti_entropy_alone_converges() {
    let store = tempfile::tempdir().unwrap();
    let partition = [Fault::Partition];
    let args = RunArgs {
        conflicts: Some("lww".into()),
        quorum: QuorumArgs {
            w: Some(1),
            r: Some(1),
            ..QuorumArgs::default()
        },
        node_config: vec![
            "replication.read_repair = \"off\"".into(),
            "replication.anti_entropy_interval_ms = 300".into(),
        ],
        ..args(store.path(), Workload::Register, &partition, 36, "w1r1")
    };
    let outcome = run::run(args, Interrupt::never()).await.unwrap();
    assert_eq!(outcome.verdict, Verdict::Valid, "{:#?}", outcome.results);
    let quorum = result(&outcome, "quorum-reads");
    assert_eq!(quorum.details["claimed"], false, "{quorum:#?}");
    assert!(
        quorum.summary.starts_with("not claimed"),
        "{}",
        quorum.summary
    );
    let staleness = result(&outcome, "staleness");
    assert!(staleness.details["overall"]["reads"].as_u64().unwrap() > 20);
    let wait = convergence(&outcome);
    assert_eq!(wait["converged"], true, "{wait}");
    assert!(wait["waited_ms"].is_u64(), "{wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_writer_wins_under_clock_skew_loses_acknowledged_writes() {
    let store = tempfile::tempdir().unwrap();
    let clock = [Fault::Clock];
    let args = RunArgs {
        conflicts: Some("lww".into()),
        ..args(store.path(), Workload::Siblings, &clock, 37, "lww")
    };
    let outcome = run::run(args, Interrupt::never()).await.unwrap();
    let siblings = result(&outcome, "siblings");
    assert_eq!(siblings.verdict, Verdict::Invalid, "{siblings:#?}");
    assert!(
        siblings
            .anomalies
            .iter()
            .any(|a| a.kind == "lost" || a.kind == "lost-to-earlier"),
        "{siblings:#?}"
    );
    assert_eq!(result(&outcome, "convergence").verdict, Verdict::Valid);
    assert_injected(&outcome, &clock);
}
