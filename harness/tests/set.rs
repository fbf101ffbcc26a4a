//! The set checker's verdicts on the fixtures in `histories/set/`, as its
//! README lists them.

use std::path::PathBuf;

use mimeo_harness::check::set;
use mimeo_harness::{jepsen, Verdict};

fn check(name: &str) -> mimeo_harness::CheckResult {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../histories/set")
        .join(name);
    let history = jepsen::load(&path).unwrap_or_else(|e| panic!("{e}"));
    set::check(&history)
}

#[test]
fn valid_set() {
    let r = check("valid-set.jsonl");
    assert_eq!(r.verdict, Verdict::Valid, "{}", r.summary);
    assert_eq!(r.details["counts"]["ok"], 3);
    assert_eq!(r.details["recovered"], serde_json::json!([3]));
    assert_eq!(r.details["counts"]["not-added"], 1);
}

#[test]
fn invalid_lost() {
    let r = check("invalid-lost.jsonl");
    assert_eq!(r.verdict, Verdict::Invalid, "{}", r.summary);
    assert_eq!(r.anomalies.len(), 1);
    assert_eq!(r.anomalies[0].kind, "lost");
    assert!(
        r.anomalies[0].message.contains("element 1") && r.anomalies[0].message.contains("on n2")
    );
    assert_eq!(r.details["lost"], serde_json::json!([1]));
}

#[test]
fn invalid_unexpected() {
    let r = check("invalid-unexpected.jsonl");
    assert_eq!(r.verdict, Verdict::Invalid, "{}", r.summary);
    assert_eq!(r.anomalies[0].kind, "unexpected");
    assert_eq!(r.details["unexpected"], serde_json::json!([17]));
}

#[test]
fn unknown_without_reads() {
    assert_eq!(check("unknown-no-reads.jsonl").verdict, Verdict::Unknown);
}

#[test]
fn a_jepsen_edn_set_history() {
    let r = check("valid-set.edn");
    assert_eq!(r.verdict, Verdict::Valid, "{}", r.summary);
    assert_eq!(r.details["counts"]["recovered"], 1);
}
