//! Invariant: every write a process acknowledged under `fsync = always`
//! survives that process being killed with SIGKILL at any moment, and the
//! store reopens (DESIGN.md §3; the harness's kill -9 nemesis in miniature).
//!
//! The test binary re-executes itself as a writer (the `crash_child_writer`
//! test, ignored in a normal run so that it never counts as a pass; the
//! parent runs it alone with `--exact --ignored` and
//! `MIMEO_STORAGE_CRASH_CHILD` naming the data directory). The child
//! appends from several threads, with small segments and automatic
//! compaction, and prints `ack <index>` after each append
//! returns. The parent reads the acknowledgements, kills the child after a
//! few hundred, reopens the store and checks every acknowledged record.
//! Three rounds run on the same directory, each recovering from the last
//! crash before writing more.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use mimeo_storage::{FsyncMode, Mutation, Options, Record, Store};

use common::record;

const CHILD_ENV: &str = "MIMEO_STORAGE_CRASH_CHILD";
/// The child stops on its own after this many records, should the parent
/// never kill it.
const CHILD_MAX_RECORDS: u64 = 100_000;
/// How long the parent waits for the child's acknowledgements, per round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

fn options() -> Options {
    Options {
        fsync: FsyncMode::Always,
        segment_bytes: 16 << 10,
        compact_min_garbage_ratio: 0.3,
        compact_min_bytes: 16 << 10,
        // Zeros ahead of the records, so kills land in them too.
        preallocate_bytes: 4 << 10,
    }
}

fn key_for(index: u64) -> Vec<u8> {
    format!("key-{}", index % 61).into_bytes()
}

fn value_for(index: u64) -> Vec<u8> {
    format!("value-{index:06}|").repeat(8).into_bytes()
}

fn record_for(index: u64) -> Record {
    let mutation = Mutation::Put {
        key: key_for(index),
        value: value_for(index),
    };
    record(1, index, mutation)
}

/// The writer: runs only in the child process that
/// `acknowledged_writes_survive_sigkill` spawns.
#[test]
#[ignore = "the writer child of acknowledged_writes_survive_sigkill, which runs it"]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        panic!(
            "crash_child_writer is the writer child of acknowledged_writes_survive_sigkill \
             and runs only in the process that test spawns ({CHILD_ENV} is unset): \
             run acknowledged_writes_survive_sigkill instead"
        );
    };
    let store = Store::open(Path::new(&dir), options()).expect("child opens the store");
    let next = Mutex::new(store.last_position().index + 1);
    let stop_at = store.last_position().index + CHILD_MAX_RECORDS;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let index = {
                    let mut next = next.lock().unwrap();
                    let index = *next;
                    if index > stop_at {
                        return;
                    }
                    store.append(&[record_for(index)]).expect("child appends");
                    *next += 1;
                    index
                };
                // `always`: the append was durable when it returned.
                let mut out = std::io::stdout().lock();
                writeln!(out, "ack {index}").expect("parent reads acks");
                out.flush().expect("parent reads acks");
            });
        }
    });
}

/// Runs one child until it has acknowledged `target` writes, kills it, and
/// returns every index it acknowledged (including any printed while it was
/// being killed).
fn run_child_until(dir: &Path, target: usize) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(index) = line.strip_prefix("ack ") {
                if tx.send(index.parse::<u64>().expect("ack index")).is_err() {
                    break;
                }
            }
        }
    });

    let deadline = Instant::now() + ROUND_TIMEOUT;
    let mut acked = Vec::new();
    while acked.len() < target {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(index) => acked.push(index),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the writer child acknowledged only {} of {target} writes within {ROUND_TIMEOUT:?} ({e})",
                    acked.len()
                );
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child was killed, not finished");
    // The pipe is closed now; collect what was acknowledged meanwhile.
    reader.join().expect("ack reader");
    acked.extend(rx.try_iter());
    acked
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<u64, ()> = BTreeMap::new();
    let mut compacted = false;
    for (round, target) in [300, 450, 600].into_iter().enumerate() {
        let before = acked.len();
        acked.extend(
            run_child_until(dir.path(), target)
                .into_iter()
                .map(|i| (i, ())),
        );
        assert!(acked.len() >= before + target, "round {round}");

        let store = Arc::new(Store::open(dir.path(), options()).unwrap_or_else(|e| {
            panic!("round {round}: the store does not reopen after SIGKILL: {e}")
        }));
        let last = store.last_position().index;
        let highest = *acked.keys().next_back().unwrap();
        assert!(
            highest <= last,
            "round {round}: index {highest} was acknowledged but the log ends at {last}"
        );
        // The log is exactly the records written, with no holes...
        let first = store.first_index();
        compacted |= first > 1;
        let log = store.read_log(first, usize::MAX).unwrap();
        assert_eq!(log.len() as u64, last + 1 - first, "round {round}");
        for r in &log {
            assert_eq!(*r, record_for(r.meta.position.index), "round {round}");
        }
        // ...and every key holds its latest record, compacted or not.
        let mut latest: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for index in 1..=last {
            latest.insert(key_for(index), index);
        }
        for (key, index) in latest {
            let entry = store.get(&key).unwrap().expect("written key");
            assert_eq!(entry.meta.position.index, index, "round {round}");
            assert_eq!(entry.value, Some(value_for(index)), "round {round}");
        }
    }
    assert!(
        compacted,
        "no automatic compaction completed: the crashes never met a snapshot"
    );
}
