//! The Jepsen fixtures in `histories/jepsen/` import as their README says:
//! operations, keys, values, types and pairing. (Verdicts belong to the
//! linearizability checker's tests.)

use std::path::PathBuf;

use mimeo_harness::history::OpType;
use mimeo_harness::jepsen::{self, Format};
use mimeo_harness::{History, Process, Source};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../histories/jepsen")
        .join(name)
}

fn load(name: &str) -> History {
    let history = jepsen::load(&fixture(name)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(history.source, Source::Jepsen, "{name}");
    history.validate().unwrap();
    history
}

/// (process, type, f, key, value) of every client operation.
fn clients(h: &History) -> Vec<(u64, OpType, &str, Option<&str>, Value)> {
    h.ops
        .iter()
        .filter_map(|op| match op.process {
            Process::Client(p) => Some((
                p,
                op.kind,
                op.f.as_str(),
                op.key.as_deref(),
                op.value.clone(),
            )),
            Process::Nemesis => None,
        })
        .collect()
}

#[test]
fn every_fixture_is_recognised_and_imports() {
    let dir = fixture("");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".md") || name == "check.toml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = if name.ends_with(".log") {
            Format::Log
        } else {
            Format::Edn
        };
        assert_eq!(jepsen::detect(&text), Some(expected), "{name}");
        let history = load(&name);
        assert!(!history.pairs().is_empty(), "{name}");
        seen += 1;
    }
    assert_eq!(seen, 7);
}

#[test]
fn valid_cas_register_edn() {
    let h = load("valid-cas-register.edn");
    assert_eq!(h.ops.len(), 20);
    assert_eq!(h.ops[19].time_ns, 20_000_000);
    let nemesis: Vec<&str> = h.nemesis().map(|op| op.f.as_str()).collect();
    assert_eq!(nemesis, ["start", "start", "stop", "stop"]);
    let c = clients(&h);
    assert_eq!(c[2], (0, OpType::Ok, "read", None, json!(0)));
    assert_eq!(c[4], (2, OpType::Invoke, "cas", None, json!([1, 2])));
    assert!(h.ops[11].is_cas_mismatch());
    assert_eq!(
        (h.ops[13].kind, h.ops[13].error.as_deref()),
        (OpType::Info, Some("timed-out"))
    );
    let pairs = h.pairs();
    assert_eq!(pairs.len(), 8);
    assert!(pairs.iter().all(|p| p.complete.is_some()));
}

#[test]
fn invalid_cas_register_edn() {
    let h = load("invalid-cas-register.edn");
    assert_eq!(
        clients(&h),
        [
            (0, OpType::Invoke, "write", None, json!(1)),
            (0, OpType::Ok, "write", None, json!(1)),
            (0, OpType::Invoke, "write", None, json!(2)),
            (0, OpType::Ok, "write", None, json!(2)),
            (1, OpType::Invoke, "read", None, Value::Null),
            (1, OpType::Ok, "read", None, json!(1)),
        ]
    );
}

#[test]
fn valid_cas_register_log() {
    let h = load("valid-cas-register.log");
    assert_eq!(h.ops.len(), 16, "the unrelated lines are skipped");
    assert_eq!(h.nemesis().count(), 2);
    let crashed = &h.ops[8];
    assert_eq!(
        (crashed.kind, &crashed.value, crashed.error.as_deref()),
        (OpType::Info, &json!(0), Some("timed-out"))
    );
    let last = clients(&h).pop().unwrap();
    assert_eq!(last, (4, OpType::Ok, "read", None, json!(0)));
    assert_eq!(h.pairs().len(), 7);
}

#[test]
fn a_log_copied_through_a_terminal_imports_as_the_tab_separated_one() {
    let spaced = load("valid-cas-register-spaces.log");
    let tabbed = load("valid-cas-register.log");
    assert_eq!(spaced.ops, tabbed.ops);
}

#[test]
fn invalid_cas_register_log() {
    let h = load("invalid-cas-register.log");
    let c = clients(&h);
    assert_eq!(c.len(), 6);
    assert_eq!(c[3], (1, OpType::Ok, "cas", None, json!([1, 2])));
    assert_eq!(c[5], (2, OpType::Ok, "read", None, json!(1)));
}

#[test]
fn valid_independent_keys_come_from_tuples() {
    let h = load("valid-independent.edn");
    let c = clients(&h);
    assert_eq!(c[4], (0, OpType::Invoke, "cas", Some("0"), json!([5, 6])));
    assert_eq!(c[5], (1, OpType::Invoke, "read", Some("1"), Value::Null));
    assert_eq!(c[10], (2, OpType::Ok, "read", Some("0"), json!(6)));
    assert!(h.ops[11].is_cas_mismatch());
    assert_eq!(h.ops[11].key.as_deref(), Some("1"));
}

#[test]
fn invalid_independent_keys_come_from_tuple_records() {
    let h = load("invalid-independent.edn");
    let keys: Vec<&str> = h.ops.iter().filter_map(|op| op.key.as_deref()).collect();
    assert_eq!(keys, ["a", "b", "a", "b", "b", "b", "a", "b", "a", "b"]);
    assert_eq!(clients(&h)[9], (2, OpType::Ok, "read", Some("b"), json!(1)));
    assert_eq!(h.ops[9].time_ns, 51);
}

#[test]
fn fixtures_survive_export_and_import() {
    for name in [
        "valid-cas-register.edn",
        "valid-independent.edn",
        "valid-cas-register.log",
    ] {
        let h = load(name);
        let mut out = Vec::new();
        jepsen::export_edn(&h, &mut out).unwrap();
        let back = jepsen::parse_edn(std::str::from_utf8(&out).unwrap(), name.as_ref()).unwrap();
        assert_eq!(back.ops, h.ops, "{name}");
    }
}
