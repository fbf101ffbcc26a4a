//! The report a person opens: it renders in a real browser (headless
//! Chromium, which `ci/setup.sh` installs), and its size does not grow with
//! the number of successful operations, so a long run's report still opens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mimeo_harness::report::{self, CheckOptions};
use mimeo_harness::workload::Workload;
use mimeo_harness::{History, Op, OpType, Process};
use serde_json::{json, Value};

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let found = Command::new("which").arg(name).output().ok()?;
            found
                .status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&found.stdout).trim()))
        })
        .expect("headless Chromium is needed to check the report renders: run `bash ci/setup.sh`")
}

/// Runs headless Chromium on `page` with `flags`, bounded in time; returns
/// its standard output.
fn headless(page: &Path, profile: &Path, flags: &[&str]) -> String {
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--timeout=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(flags)
        .arg(format!("file://{}", page.display()));
    let out = command.output().expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn op(index: u64, time_ns: u64, process: u64, kind: OpType, f: &str, value: Value) -> Op {
    Op {
        index,
        time_ns,
        process: Process::Client(process),
        kind,
        f: f.into(),
        key: Some(format!("k{}", process % 3)),
        value,
        node: Some("n1".into()),
        error: (kind == OpType::Info).then(|| "timeout".into()),
    }
}

/// Writes from 10 processes spread over `seconds`: every 500th one unknown
/// (`info`), every 5th failed (as a cluster electing a leader fails them),
/// the rest `ok`; and a pause in the middle.
fn history(ops: u64, seconds: u64) -> History {
    let step = seconds * 1_000_000_000 / ops;
    let mut out = Vec::new();
    let mut process_of = [0u64; 10];
    for (w, p) in process_of.iter_mut().enumerate() {
        *p = w as u64;
    }
    let mut next_process = 10;
    for i in 0..ops {
        let w = (i % 10) as usize;
        let t = i * step;
        let kind = if i % 500 == 499 {
            OpType::Info
        } else if i % 5 == 4 {
            OpType::Fail
        } else {
            OpType::Ok
        };
        let index = out.len() as u64;
        out.push(op(
            index,
            t,
            process_of[w],
            OpType::Invoke,
            "write",
            json!(i),
        ));
        out.push(op(
            index + 1,
            t + step / 2,
            process_of[w],
            kind,
            "write",
            json!(i),
        ));
        if kind == OpType::Info {
            process_of[w] = next_process;
            next_process += 1;
        }
        if i == ops / 2 {
            let index = out.len() as u64;
            for (j, f) in ["pause", "resume"].iter().enumerate() {
                out.push(Op {
                    index: index + j as u64,
                    time_ns: t + step / 2 + j as u64,
                    process: Process::Nemesis,
                    kind: OpType::Info,
                    f: (*f).into(),
                    key: None,
                    value: json!(["n2"]),
                    node: None,
                    error: None,
                });
            }
        }
    }
    History::new(out)
}

fn report_of(history: &History, dir: &Path) -> PathBuf {
    let results = report::check(
        history,
        Workload::Register,
        &CheckOptions {
            initial: None,
            budget: Duration::from_secs(60),
            threads: 0,
            quorums: None,
        },
    );
    report::write(dir, history, &results, None).unwrap();
    dir.join("report.html")
}

#[test]
fn the_report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let page = report_of(&history(5_000, 10), dir.path());
    let dom = headless(&page, &dir.path().join("profile-dom"), &["--dump-dom"]);
    assert!(dom.contains("badge valid"), "the verdict is shown");
    assert!(dom.matches("<svg").count() >= 3, "the plots are there");
    assert!(dom.contains("pause"), "the fault is named");

    let png = dir.path().join("report.png");
    headless(
        &page,
        &dir.path().join("profile-png"),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,1400",
            "--hide-scrollbars",
        ],
    );
    let bytes = std::fs::read(&png).expect("a screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    // A blank page of that size compresses to a few kB; plots do not.
    assert!(
        bytes.len() > 20_000,
        "{} bytes: nothing drawn?",
        bytes.len()
    );
}

#[test]
fn a_reports_size_does_not_grow_with_successful_operations() {
    let dir = tempfile::tempdir().unwrap();
    let size = |ops: u64, seconds: u64, name: &str| {
        let out = dir.path().join(name);
        std::fs::create_dir_all(&out).unwrap();
        std::fs::metadata(report_of(&history(ops, seconds), &out))
            .unwrap()
            .len()
    };
    let small = size(10_000, 60, "small");
    let large = size(200_000, 600, "large");
    // Twenty times the operations (40,000 of them failed, and 400 unknown
    // ones drawn one by one): well under twice the bytes, and under the
    // 5 MB a 10-minute run's report may take.
    assert!(large < 2 * small, "{small} bytes, then {large}");
    assert!(large < 5_000_000, "{large} bytes");
}

#[test]
fn the_matrix_grid_renders_in_headless_chromium() {
    use mimeo_harness::matrix::{render, Cell, Claim, Column, Outcome, Spec};
    use mimeo_harness::nemesis::Fault;
    let spec = Spec::parse(
        r#"
        [[row]]
        name = "lf-quorum-leader"
        mode = "leader-follower"
        workloads = ["set"]
        faults = ["none", "kill"]
        claims = ["set"]
        [[row]]
        name = "lf-async-leader"
        mode = "leader-follower"
        workloads = ["set"]
        faults = ["none", "kill"]
        "#,
        "test",
    )
    .unwrap();
    let outcome = |row: &str, fault: Option<Fault>, verdict: &str, claimed: bool| Outcome {
        cell: Cell {
            row: row.into(),
            fault: Column(fault),
            workload: Workload::Set,
            seed: 1,
        },
        run_dir: format!("runs/{row}"),
        verdicts: [("set".to_string(), verdict.to_string())].into(),
        claims: claimed
            .then(|| Claim {
                checker: "set".into(),
                verdict: verdict.into(),
            })
            .into_iter()
            .collect(),
        error: None,
        figures: json!({"lost_writes": 3, "lost_fraction": 0.02, "p99_ms_outside": 7.5}),
    };
    let outcomes = vec![
        outcome("lf-quorum-leader", None, "valid", true),
        outcome("lf-quorum-leader", Some(Fault::Kill), "invalid", true),
        outcome("lf-async-leader", None, "valid", false),
        outcome("lf-async-leader", Some(Fault::Kill), "invalid", false),
    ];
    let dir = tempfile::tempdir().unwrap();
    render::write_all(dir.path(), &spec, &outcomes).unwrap();
    let page = dir.path().join("matrix.html");
    let dom = headless(&page, &dir.path().join("profile-dom"), &["--dump-dom"]);
    assert!(dom.contains("id=\"grid\""), "the grid is there");
    assert_eq!(dom.matches("<td class=\"broken\"").count(), 1, "{dom}");
    assert_eq!(dom.matches("<td class=\"held\"").count(), 1, "{dom}");
    assert_eq!(dom.matches("<td class=\"not-claimed\"").count(), 2, "{dom}");

    let png = dir.path().join("matrix.png");
    headless(
        &page,
        &dir.path().join("profile-png"),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=900,500",
            "--hide-scrollbars",
        ],
    );
    let bytes = std::fs::read(&png).expect("a screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        bytes.len() > 10_000,
        "{} bytes: nothing drawn?",
        bytes.len()
    );
}
