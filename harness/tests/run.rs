//! Whole runs against real `mimeo` processes on 127.0.0.1: the verdicts the
//! harness must reach, and the clean-up it must do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mimeo_harness::nemesis::Fault;
use mimeo_harness::run::{self, Interrupt, RunArgs};
use mimeo_harness::workload::Workload;
use mimeo_harness::{History, Verdict};

fn args(store: &Path, workload: Workload, nemesis: &[Fault], fsync: &str) -> RunArgs {
    RunArgs {
        mode: "standalone".into(),
        acks: None,
        reads: None,
        conflicts: None,
        quorum: Default::default(),
        workload,
        nemesis: nemesis.to_vec(),
        nemesis_interval: 1.5,
        time_limit: 7.0,
        nodes: 1,
        concurrency: 6,
        seed: Some(11),
        nemesis_order: Default::default(),
        fsync: fsync.into(),
        keys: 4,
        ops_per_key: 100,
        read_fraction: 0.5,
        op_timeout: 1.0,
        check_budget: 60.0,
        node_config: Vec::new(),
        store: store.to_path_buf(),
        run_id: None,
        mimeo_bin: None,
    }
}

fn results_json(outcome: &run::RunOutcome) -> serde_json::Value {
    let text = std::fs::read_to_string(outcome.dir.join("results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = entry.path().join("cmdline");
        if let Ok(bytes) = std::fs::read(&cmdline) {
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if text.contains(needle) && text.contains("serve") {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

fn nemesis_fs(history: &History) -> Vec<String> {
    history.nemesis().map(|op| op.f.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standalone_node_under_kill_and_pause_is_linearizable() {
    let store = tempfile::tempdir().unwrap();
    let outcome = run::run(
        args(
            store.path(),
            Workload::Register,
            &[Fault::Kill, Fault::Pause],
            "always",
        ),
        Interrupt::never(),
    )
    .await
    .unwrap();
    let history = History::read_jsonl(&outcome.dir.join(run::HISTORY_FILE)).unwrap();
    let faults = nemesis_fs(&history);
    assert!(
        faults.iter().any(|f| f == "kill" || f == "pause"),
        "the nemesis acted: {faults:?}"
    );
    let oks = history
        .ops
        .iter()
        .filter(|op| op.kind == mimeo_harness::OpType::Ok)
        .count();
    assert!(oks > 100, "only {oks} operations succeeded");
    assert_eq!(
        outcome.verdict,
        Verdict::Valid,
        "results: {:#?}",
        outcome.results
    );
    // Round-robin: two fault intervals, and each requested fault had one.
    assert_eq!(outcome.seed, 11);
    assert_eq!(
        outcome.injected.keys().copied().collect::<Vec<_>>(),
        [Fault::Kill, Fault::Pause],
        "{:?}",
        outcome.injected
    );
    assert!(outcome.never_injected.is_empty());
    let results = results_json(&outcome);
    assert_eq!(results["nemesis"]["injected"]["kill"], 1, "{results}");
    assert_eq!(results["nemesis"]["injected"]["pause"], 1, "{results}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["seed"], 11);
    for file in [
        run::HISTORY_FILE,
        "results.json",
        "report.html",
        "config.json",
    ] {
        assert!(outcome.dir.join(file).is_file(), "{file} written");
    }
    assert!(processes_mentioning(&outcome.dir.to_string_lossy()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_follower_cluster_with_quorum_acks_is_linearizable_under_partitions_and_kills() {
    let store = tempfile::tempdir().unwrap();
    let args = RunArgs {
        mode: "leader-follower".into(),
        acks: Some("quorum".into()),
        reads: Some("leader".into()),
        conflicts: None,
        nodes: 3,
        time_limit: 10.0,
        ..args(
            store.path(),
            Workload::Register,
            &[Fault::Partition, Fault::Kill],
            "batch",
        )
    };
    let outcome = run::run(args, Interrupt::never()).await.unwrap();
    let history = History::read_jsonl(&outcome.dir.join(run::HISTORY_FILE)).unwrap();
    let faults = nemesis_fs(&history);
    assert!(
        faults.iter().any(|f| f == "partition" || f == "kill"),
        "the nemesis acted: {faults:?}"
    );
    let oks = history
        .ops
        .iter()
        .filter(|op| op.kind == mimeo_harness::OpType::Ok)
        .count();
    assert!(oks > 100, "only {oks} operations succeeded");
    assert_eq!(
        outcome.verdict,
        Verdict::Valid,
        "results: {:#?}",
        outcome.results
    );
    assert!(outcome.dir.join("net-stats.json").is_file());
    assert!(processes_mentioning(&outcome.dir.to_string_lossy()).is_empty());
}

/// A 3-node leader-follower run with quorum acks, `reads` and `workload`
/// under partitions and pauses.
fn leader_follower(store: &Path, reads: &str, workload: Workload, seed: u64) -> RunArgs {
    RunArgs {
        mode: "leader-follower".into(),
        acks: Some("quorum".into()),
        reads: Some(reads.into()),
        conflicts: None,
        quorum: Default::default(),
        nodes: 3,
        time_limit: 10.0,
        seed: Some(seed),
        run_id: Some(format!("{workload}-{reads}-reads")),
        ..args(store, workload, &[Fault::Partition, Fault::Pause], "batch")
    }
}

/// The result of `checker`.
fn result<'o>(outcome: &'o run::RunOutcome, checker: &str) -> &'o mimeo_harness::CheckResult {
    outcome
        .results
        .iter()
        .find(|r| r.checker == checker)
        .unwrap_or_else(|| panic!("no {checker} result: {:#?}", outcome.results))
}

/// Asserts that reads were pinned: all three nodes answered `ok` reads, and
/// each process (one worker's session) read from one node only.
fn assert_reads_pinned(outcome: &run::RunOutcome) {
    let history = History::read_jsonl(&outcome.dir.join(run::HISTORY_FILE)).unwrap();
    let mut nodes_of = std::collections::BTreeMap::<_, std::collections::BTreeSet<_>>::new();
    for op in history
        .ops
        .iter()
        .filter(|op| op.kind == mimeo_harness::OpType::Ok && op.f == "read")
    {
        let node = op.node.clone().expect("an ok read names its node");
        nodes_of.entry(op.process).or_default().insert(node);
    }
    let all: std::collections::BTreeSet<_> = nodes_of.values().flatten().cloned().collect();
    assert_eq!(all.len(), 3, "ok reads came from {all:?}");
    for (process, nodes) in &nodes_of {
        assert_eq!(nodes.len(), 1, "{process:?} read from {nodes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_reads_come_from_each_workers_node_and_are_measured_stale() {
    let store = tempfile::tempdir().unwrap();
    let outcome = run::run(
        leader_follower(store.path(), "follower", Workload::Register, 11),
        Interrupt::never(),
    )
    .await
    .unwrap();
    assert_reads_pinned(&outcome);
    // A follower applies an entry only after the leader's next message says
    // it is committed, and quorum acks leave one follower behind, so even
    // without faults a few percent of follower reads miss an acknowledged
    // write (observed: 260 of 3650 reads with no nemesis, 340 of 2662 with
    // partitions, up to 36 versions and 715 ms behind on an isolated
    // follower). Hundreds per run: zero would mean the reads are not
    // served by followers.
    let staleness = result(&outcome, "staleness");
    let stale = staleness.details["overall"]["stale"].as_u64().unwrap_or(0);
    assert!(stale > 0, "no stale read: {staleness:#?}");
    // A stale read (an acknowledged write completed before the read began,
    // yet the read returned an older version) is itself a proof of
    // non-linearizability.
    assert_eq!(
        result(&outcome, "linearizable").verdict,
        Verdict::Invalid,
        "{:#?}",
        outcome.results
    );
    assert!(processes_mentioning(&outcome.dir.to_string_lossy()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_reads_keep_the_session_guarantees_that_follower_reads_break() {
    let store = tempfile::tempdir().unwrap();
    // The control: follower reads of the session workload. A worker writes
    // through the leader and then reads its own node, which has often not
    // applied the write yet (observed: 526 and 49 read-your-writes
    // violations with seeds 11 and 12).
    let follower = run::run(
        leader_follower(store.path(), "follower", Workload::Session, 11),
        Interrupt::never(),
    )
    .await
    .unwrap();
    assert_reads_pinned(&follower);
    let session = result(&follower, "session");
    assert_eq!(session.verdict, Verdict::Invalid, "{session:#?}");
    let violations = session.details["guarantees"]["read-your-writes"]["violations"]
        .as_u64()
        .unwrap_or(0);
    assert!(violations > 0, "{session:#?}");

    // The same reads, from the same nodes, waiting for what the session
    // has seen.
    let outcome = run::run(
        leader_follower(store.path(), "session", Workload::Session, 11),
        Interrupt::never(),
    )
    .await
    .unwrap();
    assert_reads_pinned(&outcome);
    let history = History::read_jsonl(&outcome.dir.join(run::HISTORY_FILE)).unwrap();
    let faults = nemesis_fs(&history);
    assert!(
        faults.iter().any(|f| f == "partition" || f == "pause"),
        "the nemesis acted: {faults:?}"
    );
    let session = result(&outcome, "session");
    let checked = session.details["guarantees"]["read-your-writes"]["checked"]
        .as_u64()
        .unwrap_or(0);
    assert!(checked > 100, "only {checked} reads checked: {session:#?}");
    assert_eq!(
        outcome.verdict,
        Verdict::Valid,
        "results: {:#?}",
        outcome.results
    );
    assert!(processes_mentioning(&outcome.dir.to_string_lossy()).is_empty());
}

/// The set checker's count of lost elements.
fn lost(outcome: &run::RunOutcome) -> u64 {
    let set = outcome
        .results
        .iter()
        .find(|r| r.checker == "set")
        .expect("a set result");
    // The anomalies name only the first elements; the counts are whole.
    set.details["counts"]["lost"]
        .as_u64()
        .expect("the set checker counts lost elements")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_loss_loses_acknowledged_adds_without_fsync_and_none_with_it() {
    let store = tempfile::tempdir().unwrap();
    let never = run::run(
        args(store.path(), Workload::Set, &[Fault::PowerLoss], "never"),
        Interrupt::never(),
    )
    .await
    .unwrap();
    let history = History::read_jsonl(&never.dir.join(run::HISTORY_FILE)).unwrap();
    assert!(
        nemesis_fs(&history).iter().any(|f| f == "power-loss"),
        "a power cut happened"
    );
    assert_eq!(
        never.verdict,
        Verdict::Invalid,
        "fsync = never must lose acknowledged adds at a power cut: {:#?}",
        never.results
    );
    assert!(lost(&never) > 0, "{:#?}", never.results);
    // A lone node has no replica to wait for: the final reads do not wait
    // (30 s, before) for a durable index that fsync = never never reaches.
    let results = results_json(&never);
    let waited = results["convergence"]["waited_ms"].as_u64().unwrap();
    assert!(
        waited < 5_000,
        "waited {waited} ms: {}",
        results["convergence"]
    );
    assert_eq!(results["convergence"]["converged"], true);

    let always = run::run(
        args(store.path(), Workload::Set, &[Fault::PowerLoss], "always"),
        Interrupt::never(),
    )
    .await
    .unwrap();
    assert_eq!(
        always.verdict,
        Verdict::Valid,
        "fsync = always must lose nothing: {:#?}",
        always.results
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_without_a_seed_draws_one_says_so_and_names_faults_it_never_injected() {
    let store = tempfile::tempdir().unwrap();
    let mut args = args(
        store.path(),
        Workload::Register,
        &[Fault::Kill, Fault::Pause],
        "never",
    );
    args.seed = None;
    // Room for one fault only: the other is never injected.
    args.time_limit = 3.5;
    let outcome = run::run(args, Interrupt::never()).await.unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["seed"], outcome.seed,
        "config.json keeps the seed drawn"
    );
    assert_eq!(
        outcome.injected.values().sum::<u32>(),
        1,
        "{:?}",
        outcome.injected
    );
    assert_eq!(outcome.never_injected.len(), 1);
    let results = results_json(&outcome);
    assert_eq!(
        results["nemesis"]["never_injected"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let page = std::fs::read_to_string(outcome.dir.join("report.html")).unwrap();
    assert!(page.contains("Never injected"), "the report says so");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_that_serves_nothing_is_a_failed_run_not_a_valid_one() {
    let store = tempfile::tempdir().unwrap();
    // No node ever stands for election: no write or leader read succeeds.
    let args = RunArgs {
        mode: "leader-follower".into(),
        nodes: 3,
        time_limit: 3.0,
        node_config: vec![
            "replication.election_timeout_min_ms = 3600000".into(),
            "replication.election_timeout_max_ms = 3600001".into(),
        ],
        ..args(store.path(), Workload::Register, &[], "never")
    };
    let err = run::run(args, Interrupt::never())
        .await
        .expect_err("nothing was served");
    let message = format!("{err:#}");
    assert!(message.contains("the cluster served nothing"), "{message}");
    // The history and the report are still there to look at.
    let dir = std::fs::read_dir(store.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_ne!(results["verdict"], "valid", "{results}");
    let served = results["checkers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["checker"] == "served")
        .expect("a served result");
    assert_eq!(served["verdict"], "unknown");
}

#[test]
fn ctrl_c_stops_the_run_and_leaves_no_node_behind() {
    let store = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mimeo-harness"))
        .args([
            "run",
            "--time-limit",
            "60",
            "--nemesis",
            "pause",
            "--nemesis-interval",
            "1",
        ])
        .arg("--store")
        .arg(store.path())
        .args(["--run-id", "interrupted"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir: PathBuf = store.path().join("interrupted");
    // Wait (bounded) until the harness says the node serves, then press Ctrl-C.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("serving") => break,
            Ok(_) => {}
            Err(e) => panic!("the harness never reported a serving node: {e}"),
        }
    }
    assert!(
        !processes_mentioning(&dir.to_string_lossy()).is_empty(),
        "the node runs"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the harness did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert!(
        processes_mentioning(&dir.to_string_lossy()).is_empty(),
        "node processes left behind"
    );
    // The partial history was still written and checked.
    assert!(dir.join(run::HISTORY_FILE).is_file());
    assert!(dir.join("report.html").is_file());
}
