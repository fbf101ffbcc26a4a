//! The session checker's verdicts on the fixtures in `histories/session/`:
//! every file gets the verdict its name promises (`valid-*` or
//! `invalid-*`), an invalid one exactly the anomalies listed here; and the
//! staleness checker measures every fixture without failing it.

use std::path::{Path, PathBuf};

use mimeo_harness::check::{session, staleness};
use mimeo_harness::{History, Verdict};

fn session_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories/session")
}

fn fixtures() -> Vec<(String, History)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(session_dir())
        .expect("histories/session exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let history = History::read_jsonl(path).unwrap_or_else(|e| panic!("{e}"));
            (name, history)
        })
        .collect()
}

/// An anomaly's kind and indices.
type Expected = (&'static str, &'static [u64]);

/// The anomalies each invalid fixture must report: `(file, [(kind,
/// indices)])`, in the checker's order (read-your-writes, then
/// monotonic-reads, then monotonic-writes).
const ANOMALIES: &[(&str, &[Expected])] = &[
    (
        "invalid-read-your-writes.jsonl",
        &[("read-your-writes", &[0, 1, 2, 3, 4, 5])],
    ),
    (
        "invalid-read-your-writes-absent.jsonl",
        &[("read-your-writes", &[0, 1, 2, 3])],
    ),
    (
        "invalid-read-your-writes-cas.jsonl",
        &[("read-your-writes", &[0, 1, 2, 3, 4, 5])],
    ),
    (
        "invalid-monotonic-reads.jsonl",
        &[("monotonic-reads", &[0, 1, 2, 3, 4, 5, 6, 7])],
    ),
    // A reorder of process 0's writes shows only through an observer whose
    // view must move forward: process 1's reads also break monotonic reads.
    (
        "invalid-monotonic-writes.jsonl",
        &[
            ("monotonic-reads", &[0, 1, 2, 3, 4, 5, 6, 7]),
            ("monotonic-writes", &[0, 1, 2, 3, 4, 5, 6, 7]),
        ],
    ),
];

#[test]
fn every_session_fixture_gets_the_verdict_its_name_promises() {
    let (mut valid, mut invalid) = (0, 0);
    for (name, history) in fixtures() {
        let result = session::check(&history);
        assert_eq!(result.checker, "session");
        if name.starts_with("valid-") {
            valid += 1;
            assert_eq!(result.verdict, Verdict::Valid, "{name}: {result:#?}");
            assert!(result.anomalies.is_empty(), "{name}: {result:#?}");
        } else if name.starts_with("invalid-") {
            invalid += 1;
            assert_eq!(result.verdict, Verdict::Invalid, "{name}: {result:#?}");
            let (_, expected) = ANOMALIES
                .iter()
                .find(|(file, _)| *file == name)
                .unwrap_or_else(|| panic!("{name}: add its expected anomalies to ANOMALIES"));
            let found: Vec<(&str, &[u64])> = result
                .anomalies
                .iter()
                .map(|a| (a.kind.as_str(), a.indices.as_slice()))
                .collect();
            assert_eq!(found, *expected, "{name}: {:#?}", result.anomalies);
            for anomaly in &result.anomalies {
                assert!(
                    anomaly.message.starts_with("key \"x\": process "),
                    "{name}: {}",
                    anomaly.message
                );
            }
        } else {
            panic!("{name}: a fixture's name starts with valid- or invalid-");
        }
    }
    assert!(
        valid >= 5 && invalid >= 5,
        "{valid} valid and {invalid} invalid fixtures found"
    );
}

#[test]
fn details_count_each_guarantee() {
    let history = History::read_jsonl(&session_dir().join("invalid-monotonic-writes.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"));
    let result = session::check(&history);
    let g = &result.details["guarantees"];
    assert_eq!(g["read-your-writes"]["checked"], 0);
    assert_eq!(g["monotonic-reads"]["checked"], 1);
    assert_eq!(g["monotonic-reads"]["violations"], 1);
    assert_eq!(g["monotonic-writes"]["checked"], 1);
    assert_eq!(g["monotonic-writes"]["violations"], 1);
    assert_eq!(result.details["sessions"], 1);
    assert_eq!(result.details["reads"], 2);
    let message = &result.anomalies[1].message;
    assert!(
        message.contains(
            "process 0's write of 1 (indices 0-1) came before its write of 2 (indices 2-3), \
             yet process 1, after it read 2 (indices 4-5), read 1 (indices 6-7)"
        ),
        "{message}"
    );
}

#[test]
fn the_ambiguous_repeated_value_is_not_flagged_but_counted() {
    let history = History::read_jsonl(&session_dir().join("valid-ambiguous-repeated-value.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"));
    let result = session::check(&history);
    assert_eq!(result.verdict, Verdict::Valid, "{result:#?}");
    // Process 1's read of 1 after writing 2 was checked and passed: a
    // concurrent write of 1 by process 2 may have produced it.
    assert_eq!(
        result.details["guarantees"]["read-your-writes"]["checked"],
        1
    );
    assert_eq!(
        result.details["guarantees"]["monotonic-reads"]["checked"],
        1
    );
    assert_eq!(
        result.details["guarantees"]["read-your-writes"]["violations"],
        0
    );
}

#[test]
fn staleness_measures_every_fixture_and_fails_none() {
    for (name, history) in fixtures() {
        let result = staleness::check(&history);
        assert_eq!(result.checker, "staleness");
        assert_eq!(result.verdict, Verdict::Valid, "{name}: {result:#?}");
        assert!(
            result.anomalies.iter().all(|a| a.kind == "stale-read"),
            "{name}: {:#?}",
            result.anomalies
        );
    }
}

#[test]
fn staleness_of_a_follower_read_in_the_sessions_fixture() {
    // Process 2 reads a=0 at index 11 on n3 while the cas 0->1 (indices
    // 4-5) completed 6 ms before: one version behind.
    let history = History::read_jsonl(&session_dir().join("valid-sessions.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"));
    let result = staleness::check(&history);
    assert_eq!(result.anomalies.len(), 1, "{:#?}", result.anomalies);
    assert_eq!(result.anomalies[0].indices, [0, 1, 4, 5, 11, 12]);
    let n3 = &result.details["by_node"]["n3"];
    assert_eq!(n3["reads"], 2);
    assert_eq!(n3["stale"], 1);
    assert_eq!(n3["versions_behind"]["max"], 1);
    assert_eq!(n3["ms_behind"]["max"], 6.0);
    assert_eq!(result.details["overall"]["stale"], 1);
}
