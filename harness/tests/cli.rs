//! The `mimeo-harness` command line on the golden histories: every file in
//! `histories/` (ours and Jepsen's, in any format) gets the exit code its
//! name promises — 0 `valid-*`, 1 `invalid-*`, 2 `unknown-*` — and bad
//! input gets a usage or data error, never a verdict.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mimeo-harness"))
        .args(args)
        .output()
        .expect("mimeo-harness runs")
}

fn histories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories")
}

/// Extra flags a fixture needs (its README says why).
fn flags_for(dir: &str, name: &str) -> &'static [&'static str] {
    match (dir, name) {
        // Jepsen's cas-register test starts the register at 0.
        (_, "valid-cas-register.edn") => &["--initial", "0"],
        // Session histories are judged by the session guarantees; most are
        // deliberately not linearizable.
        ("session", _) => &["--workload", "session"],
        _ => &[],
    }
}

#[test]
fn every_fixture_exits_with_the_code_its_name_promises() {
    let mut checked = 0;
    for dir in ["register", "jepsen", "set", "session"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(histories().join(dir))
            .unwrap_or_else(|e| panic!("histories/{dir}: {e}"))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e != "md"))
            .collect();
        files.sort();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let expected = match name.split('-').next() {
                Some("valid") => 0,
                Some("invalid") => 1,
                Some("unknown") => 2,
                _ => panic!(
                    "{dir}/{name}: a fixture's name starts with valid-, invalid- or unknown-"
                ),
            };
            let mut args = vec!["check", "--no-report", path.to_str().unwrap()];
            args.extend(flags_for(dir, &name));
            let out = harness(&args);
            assert_eq!(
                out.status.code(),
                Some(expected),
                "{dir}/{name}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} fixtures found");
}

#[test]
fn the_initial_value_decides_a_jepsen_history_that_starts_from_zero() {
    let path = histories().join("jepsen/valid-cas-register.edn");
    let out = harness(&["check", "--no-report", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "without --initial 0 the first read of 0 is unexplained: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn check_writes_a_report_beside_a_history_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.jsonl");
    std::fs::copy(histories().join("register/invalid-stale-read.jsonl"), &file).unwrap();
    let out = harness(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = dir.path().join("h.jsonl.report");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("invalid"), "the page names the verdict");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["verdict"], "invalid");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not-linearizable"), "{stdout}");
}

#[test]
fn export_writes_edn_that_check_reads_back_with_the_same_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let edn = dir.path().join("h.edn");
    for (fixture, code) in [
        ("register/invalid-cas-race.jsonl", 1),
        ("register/valid-multi-key.jsonl", 0),
    ] {
        let source = histories().join(fixture);
        let out = harness(&[
            "export",
            source.to_str().unwrap(),
            "-o",
            edn.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = harness(&["check", "--no-report", edn.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(code), "{fixture} through EDN");
    }
}

#[test]
fn bad_input_is_a_usage_or_data_error_not_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(
        &garbage,
        "{\"index\":0,\"time_ns\":1,\"process\":1,\"type\":\"ok\"}\n",
    )
    .unwrap();
    let out = harness(&["check", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("garbage.jsonl"), "names the file: {stderr}");

    let missing = dir.path().join("missing.jsonl");
    assert_eq!(
        harness(&["check", missing.to_str().unwrap()]).status.code(),
        Some(65)
    );
    assert_eq!(harness(&["check"]).status.code(), Some(64));
    assert_eq!(
        harness(&["run", "--fsync", "sometimes"]).status.code(),
        Some(64)
    );
    assert_eq!(
        harness(&["run", "--nemesis", "meteor"]).status.code(),
        Some(64)
    );
    let out = harness(&["check", "--initial", "zero", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(harness(&["--help"]).status.success());
}
