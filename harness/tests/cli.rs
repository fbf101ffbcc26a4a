//! The `mimeo-harness` command line on the golden histories: every file in
//! `histories/` (ours and Jepsen's, in any format) gets the exit code its
//! name promises — 0 `valid-*`, 1 `invalid-*`, 2 `unknown-*` — and bad
//! input gets a usage or data error, never a verdict.

use std::collections::BTreeMap;
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

/// The exit code a fixture's name promises.
fn promised(name: &str) -> i32 {
    match name.split('-').next() {
        Some("valid") => 0,
        Some("invalid") => 1,
        Some("unknown") => 2,
        _ => panic!("{name}: a fixture's name starts with valid-, invalid- or unknown-"),
    }
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(histories().join(dir))
        .unwrap_or_else(|e| panic!("histories/{dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md" && e != "toml"))
        .collect();
    files.sort();
    files
}

const DIRS: [&str; 4] = ["register", "jepsen", "set", "session"];

#[test]
fn every_fixture_exits_with_the_code_its_name_promises() {
    let mut checked = 0;
    for dir in DIRS {
        for path in fixtures(dir) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // Alone, with the options its directory's check.toml gives it.
            let out = harness(&["check", "--no-report", path.to_str().unwrap()]);
            assert_eq!(
                out.status.code(),
                Some(promised(&name)),
                "{dir}/{name}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} fixtures found");
}

/// The lines of `check` on many histories: (path, verdict) per history.
fn verdict_lines(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let mut words = l.split_whitespace();
            let verdict = words.next().unwrap().to_owned();
            let path = words.next().unwrap().trim_end_matches(':').to_owned();
            (path, verdict)
        })
        .collect()
}

#[test]
fn the_whole_corpus_is_checked_in_one_call_with_each_files_promised_verdict() {
    let root = histories();
    let out = harness(&["check", root.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // One invalid history makes the whole call invalid.
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // Runs kept locally (`histories/<run-id>/`, ignored by git) are checked
    // too; the fixtures are what this test knows the verdicts of.
    let all = verdict_lines(&stdout);
    let fixture_dirs: Vec<String> = DIRS
        .iter()
        .map(|d| format!("{}/", root.join(d).to_str().unwrap()))
        .collect();
    let lines: BTreeMap<String, String> = all
        .iter()
        .filter(|(path, _)| fixture_dirs.iter().any(|d| path.starts_with(d)))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    let mut expected = BTreeMap::new();
    for dir in DIRS {
        for path in fixtures(dir) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let verdict = ["valid", "invalid", "unknown"][promised(&name) as usize];
            expected.insert(path.to_str().unwrap().to_owned(), verdict.to_owned());
        }
    }
    assert_eq!(lines, expected, "{stdout}");
    let count = |verdict: &str| all.values().filter(|v| *v == verdict).count();
    for (name, n) in [
        ("valid", count("valid")),
        ("invalid", count("invalid")),
        ("unknown", count("unknown")),
        ("unreadable", count("unreadable")),
    ] {
        let row = [name.to_owned(), n.to_string()];
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().eq(row.iter().map(String::as_str))),
            "summary row {name} {n}: {stdout}"
        );
    }
    // The lines come in the order of the paths, whatever finished first.
    let order: Vec<&str> = stdout
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by_key(|p| PathBuf::from(p));
    assert_eq!(order, sorted);
    // No report unless asked for.
    assert!(!histories()
        .join("register/invalid-stale-read.jsonl.report")
        .exists());
}

#[test]
fn an_unreadable_history_is_counted_and_the_others_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, fixture) in [
        ("valid-a.jsonl", "register/valid-multi-key.jsonl"),
        ("valid-b.log", "jepsen/valid-cas-register-spaces.log"),
        ("unknown-c.jsonl", "set/unknown-no-reads.jsonl"),
    ] {
        std::fs::copy(histories().join(fixture), d.join(name)).unwrap();
    }
    std::fs::write(d.join("broken.edn"), "{:type :invoke, :f [1").unwrap();
    let missing = d.join("missing.jsonl");
    let out = harness(&["check", d.to_str().unwrap(), missing.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(65),
        "unreadable over unknown: {stdout}"
    );
    let lines = verdict_lines(&stdout);
    let verdict = |name: &str| lines[d.join(name).to_str().unwrap()].as_str();
    assert_eq!(verdict("valid-a.jsonl"), "valid");
    assert_eq!(verdict("valid-b.log"), "valid");
    assert_eq!(verdict("unknown-c.jsonl"), "unknown");
    assert_eq!(verdict("broken.edn"), "unreadable");
    assert_eq!(verdict("missing.jsonl"), "unreadable");
    assert!(
        stdout.contains("broken.edn:1:"),
        "the error names line and column: {stdout}"
    );

    // Reports when asked for, under --out, by path below the argument.
    let out_dir = dir.path().join("reports");
    let out = harness(&[
        "check",
        "--report",
        "--out",
        out_dir.to_str().unwrap(),
        d.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(65));
    for name in ["valid-a.jsonl", "valid-b.log", "unknown-c.jsonl"] {
        let report = out_dir.join(format!("{name}.report")).join("report.html");
        assert!(report.is_file(), "{}", report.display());
    }
}

#[test]
fn the_initial_value_decides_a_jepsen_history_that_starts_from_zero() {
    // Away from its directory's check.toml, the history has no initial
    // value, and the first read of 0 is unexplained.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.edn");
    std::fs::copy(histories().join("jepsen/valid-cas-register.edn"), &path).unwrap();
    let out = harness(&["check", "--no-report", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "without --initial 0 the first read of 0 is unexplained: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = harness(&[
        "check",
        "--no-report",
        "--initial",
        "0",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    // A check.toml beside it does what the flag does.
    std::fs::write(
        dir.path().join("check.toml"),
        "[files.\"h.edn\"]\ninitial = 0\n",
    )
    .unwrap();
    let out = harness(&["check", "--no-report", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
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
