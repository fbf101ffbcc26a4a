//! The golden histories of `histories/register/`: every file is checked
//! and must get the verdict its name promises (`valid-*` or `invalid-*`);
//! an invalid one must come with a counterexample naming the operations
//! that could not be linearized.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mimeo_harness::check::linear::{check, LinearOptions};
use mimeo_harness::{History, Verdict};

fn register_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories/register")
}

/// The frontier each invalid fixture must report: `(file, key, indices)`.
const COUNTEREXAMPLES: &[(&str, &str, &[u64])] = &[
    ("invalid-stale-read.jsonl", "\"x\"", &[4, 5]),
    ("invalid-lost-write.jsonl", "\"x\"", &[6, 7]),
    ("invalid-cas-race.jsonl", "\"x\"", &[3, 5]),
    (
        "invalid-info-write-cannot-explain-read.jsonl",
        "\"x\"",
        &[0, 1],
    ),
    ("invalid-cas-mismatch-contradicts.jsonl", "\"x\"", &[2, 3]),
    ("invalid-read-never-written.jsonl", "\"x\"", &[4, 5]),
    ("invalid-read-older-after-newer.jsonl", "\"x\"", &[3, 4]),
    ("invalid-multi-key-one-bad.jsonl", "\"b\"", &[13, 16]),
];

#[test]
fn every_register_fixture_gets_the_verdict_its_name_promises() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(register_dir())
        .expect("histories/register exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let (mut valid, mut invalid) = (0, 0);
    let options = LinearOptions {
        budget: Duration::from_secs(10),
        ..Default::default()
    };
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let history = History::read_jsonl(path).unwrap_or_else(|e| panic!("{e}"));
        let result = check(&history, &options);
        let expected = if name.starts_with("valid-") {
            valid += 1;
            Verdict::Valid
        } else if name.starts_with("invalid-") {
            invalid += 1;
            Verdict::Invalid
        } else {
            panic!("{name}: a fixture's name starts with valid- or invalid-");
        };
        assert_eq!(result.verdict, expected, "{name}: {result:#?}");
        if expected == Verdict::Invalid {
            let (_, key, indices) = COUNTEREXAMPLES
                .iter()
                .find(|(file, ..)| *file == name)
                .unwrap_or_else(|| {
                    panic!("{name}: add its expected counterexample to COUNTEREXAMPLES")
                });
            assert_eq!(result.anomalies.len(), 1, "{name}: {:#?}", result.anomalies);
            let anomaly = &result.anomalies[0];
            assert_eq!(anomaly.kind, "not-linearizable", "{name}");
            assert!(
                anomaly
                    .message
                    .starts_with(&format!("key {key}: not linearizable")),
                "{name}: {}",
                anomaly.message
            );
            assert_eq!(anomaly.indices, *indices, "{name}: {}", anomaly.message);
        } else {
            assert!(
                result.anomalies.is_empty(),
                "{name}: {:#?}",
                result.anomalies
            );
        }
    }
    assert!(
        valid >= 6 && invalid >= 8,
        "{valid} valid and {invalid} invalid fixtures found"
    );
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("invalid-stale-read.jsonl")),
        "CI's smoke test checks it"
    );
}
