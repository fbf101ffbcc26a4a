//! The matrix outputs: `matrix.json`, `matrix.md` and `matrix.html`.
//!
//! A grid square gathers every workload and seed of one row × fault. Its
//! status is the worst of its runs: **broken** (a claim said invalid),
//! **error** (a run could not be carried out), **undecided** (a claim
//! said unknown, or its checker did not run), **held** (every claim made
//! there said valid), or **not claimed** (nothing was claimed there: the
//! square says what happened). Beside the status, the worst figure over
//! the runs: lost writes, stale reads, availability while the fault was
//! in force, the longest gap without a successful write, p99 latency and
//! throughput outside faults.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use super::{Column, MatrixError, Outcome, Spec};

/// What a grid square (or one run) came to, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// A claim was broken.
    Broken,
    /// A run could not be carried out.
    Error,
    /// A claim could not be decided.
    Undecided,
    /// Every claim held.
    Held,
    /// Nothing was claimed.
    NotClaimed,
}

impl Status {
    /// The word in tables.
    pub fn word(self) -> &'static str {
        match self {
            Status::Broken => "BROKEN",
            Status::Error => "error",
            Status::Undecided => "undecided",
            Status::Held => "held",
            Status::NotClaimed => "not claimed",
        }
    }

    /// The status of one run.
    pub fn of(outcome: &Outcome) -> Status {
        if outcome.broken() {
            Status::Broken
        } else if outcome.error.is_some() && outcome.verdicts.is_empty() {
            Status::Error
        } else if outcome.claims.iter().any(|c| c.verdict != "valid") {
            Status::Undecided
        } else if outcome.claims.is_empty() {
            Status::NotClaimed
        } else {
            Status::Held
        }
    }
}

/// The worst status of `runs` (`NotClaimed` for none).
fn status(runs: &[&Outcome]) -> Status {
    runs.iter()
        .map(|o| Status::of(o))
        .min()
        .unwrap_or(Status::NotClaimed)
}

fn numbers<'a>(runs: &'a [&Outcome], key: &'a str) -> impl Iterator<Item = f64> + 'a {
    runs.iter().filter_map(move |o| o.figures[key].as_f64())
}

fn max(runs: &[&Outcome], key: &str) -> Option<f64> {
    numbers(runs, key).reduce(f64::max)
}

fn min(runs: &[&Outcome], key: &str) -> Option<f64> {
    numbers(runs, key).reduce(f64::min)
}

/// The figures of a square, worst over its runs, as short phrases.
fn phrases(runs: &[&Outcome], column: Column) -> Vec<String> {
    let mut out = Vec::new();
    let broken: Vec<String> = runs
        .iter()
        .flat_map(|o| o.claims.iter().filter(|c| c.broken()))
        .map(|c| c.checker.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !broken.is_empty() {
        out.push(format!("broke: {}", broken.join(", ")));
    }
    let held: std::collections::BTreeSet<&str> = runs
        .iter()
        .flat_map(|o| o.claims.iter().filter(|c| c.verdict == "valid"))
        .map(|c| c.checker.as_str())
        .filter(|c| !broken.iter().any(|b| b == c))
        .collect();
    if !held.is_empty() {
        out.push(format!(
            "held: {}",
            held.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    // What the checkers found where nothing was claimed.
    let found: std::collections::BTreeSet<&str> = runs
        .iter()
        .flat_map(|o| {
            o.verdicts
                .iter()
                .filter(|(c, v)| *v == "invalid" && !o.claims.iter().any(|cl| &cl.checker == *c))
                .map(|(c, _)| c.as_str())
        })
        .collect();
    if !found.is_empty() {
        let found: Vec<String> = found.into_iter().map(|c| format!("{c} invalid")).collect();
        out.push(format!("found (not claimed): {}", found.join(", ")));
    }
    if let Some(lost) = max(runs, "lost_writes").filter(|l| *l > 0.0) {
        let share = max(runs, "lost_fraction").unwrap_or(0.0);
        out.push(format!("lost {lost:.0} acked writes ({})", percent(share)));
    }
    if let Some(stale) = max(runs, "stale_fraction").filter(|s| *s > 0.0) {
        out.push(format!("stale reads {}", percent(stale)));
    }
    if column.0.is_some() {
        if let Some(a) = min(runs, "ok_fraction_during_faults") {
            out.push(format!("available {:.0}% during fault", a * 100.0));
        }
    }
    if let Some(gap) = max(runs, "longest_write_gap_ms").filter(|g| *g >= 1000.0) {
        out.push(format!("no write for {:.1} s", gap / 1000.0));
    }
    if let Some(p99) = max(runs, "p99_ms_outside") {
        out.push(format!("p99 {p99:.1} ms"));
    }
    if let Some(tput) = min(runs, "ok_per_s_outside") {
        out.push(format!("{tput:.0} ok/s"));
    }
    for o in runs {
        if let Some(e) = &o.error {
            out.push(format!("{}: {}", o.cell.id(), first_line(e)));
        }
    }
    out
}

/// A share as a percentage that never rounds a non-zero share to 0.
fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p > 0.0 && p < 0.1 {
        "<0.1%".into()
    } else {
        format!("{p:.1}%")
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// One line for the progress output about a finished run.
pub fn cell_line(outcome: &Outcome) -> String {
    let runs = [outcome];
    let mut line = Status::of(outcome).word().to_string();
    let phrases = phrases(&runs, outcome.cell.fault);
    if !phrases.is_empty() {
        line.push_str(" · ");
        line.push_str(&phrases.join(" · "));
    }
    line
}

/// A grid square: its column and its runs.
type Square<'a> = (Column, Vec<&'a Outcome>);

/// The grid: for every row, its columns (in spec order) with their runs.
fn grid<'a>(spec: &'a Spec, outcomes: &'a [Outcome]) -> Vec<(&'a str, Vec<Square<'a>>)> {
    let mut columns: Vec<Column> = Vec::new();
    for o in outcomes {
        if !columns.contains(&o.cell.fault) {
            columns.push(o.cell.fault);
        }
    }
    columns.sort();
    spec.rows
        .iter()
        .filter(|r| outcomes.iter().any(|o| o.cell.row == r.name))
        .map(|row| {
            let squares = columns
                .iter()
                .map(|&c| {
                    let runs = outcomes
                        .iter()
                        .filter(|o| o.cell.row == row.name && o.cell.fault == c)
                        .collect();
                    (c, runs)
                })
                .collect();
            (row.name.as_str(), squares)
        })
        .collect()
}

/// `matrix.md`: the table.
pub fn markdown(spec: &Spec, outcomes: &[Outcome]) -> String {
    let grid = grid(spec, outcomes);
    let Some((_, first)) = grid.first() else {
        return "No cells were run.\n".into();
    };
    let mut md = String::new();
    md.push_str("| setting |");
    for (c, _) in first {
        let _ = write!(md, " {} |", c.name());
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(first.len()));
    md.push('\n');
    for (row, squares) in &grid {
        let _ = write!(md, "| **{row}** |");
        for (c, runs) in squares {
            if runs.is_empty() {
                md.push_str(" – |");
                continue;
            }
            let text = std::iter::once(status(runs).word().to_string())
                .chain(phrases(runs, *c))
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = write!(md, " {} |", text.replace('|', "\\|"));
        }
        md.push('\n');
    }
    let broken = outcomes.iter().filter(|o| o.broken()).count();
    let _ = write!(
        md,
        "\n{} run(s); {broken} broke a claim. Each square: the worst of its runs (workloads × \
         seeds); `held` lists the claims that held, `broke` those that did not.\n",
        outcomes.len()
    );
    md
}

/// The textbook table: per setting, what it costs without faults and what
/// it lost or kept under each fault, in the words of the usual trade-offs,
/// with the measured numbers beside them.
pub fn textbook(spec: &Spec, outcomes: &[Outcome]) -> String {
    let mut md = String::from(
        "| setting | what it is | cost without faults | claims that held | what the faults did |\n\
         |---|---|---|---|---|\n",
    );
    for (row, squares) in grid(spec, outcomes) {
        let about = spec
            .rows
            .iter()
            .find(|r| r.name == row)
            .and_then(|r| r.about.as_deref())
            .unwrap_or("");
        let quiet: Vec<&Outcome> = squares
            .iter()
            .filter(|(c, _)| c.0.is_none())
            .flat_map(|(_, runs)| runs.iter().copied())
            .collect();
        let cost = match (max(&quiet, "p50_ms_outside"), max(&quiet, "p99_ms_outside")) {
            (Some(p50), Some(p99)) => {
                let tput = min(&quiet, "ok_per_s_outside").unwrap_or(0.0);
                format!("p50 {p50:.1} ms, p99 {p99:.1} ms, {tput:.0} ops/s")
            }
            _ => "not measured".into(),
        };
        let mut held = std::collections::BTreeSet::new();
        let mut faults = Vec::new();
        for (c, runs) in &squares {
            for o in runs {
                held.extend(
                    o.claims
                        .iter()
                        .filter(|cl| cl.verdict == "valid")
                        .map(|cl| cl.checker.as_str()),
                );
            }
            let Some(fault) = c.0.filter(|_| !runs.is_empty()) else {
                continue;
            };
            let mut said = Vec::new();
            if status(runs) == Status::Broken {
                said.push("**broke a claim**".to_string());
            }
            if let Some(lost) = max(runs, "lost_writes").filter(|l| *l > 0.0) {
                let share = max(runs, "lost_fraction").unwrap_or(0.0);
                said.push(format!(
                    "lost {lost:.0} acknowledged writes ({})",
                    percent(share)
                ));
            }
            if let Some(stale) = max(runs, "stale_fraction").filter(|s| *s > 0.0) {
                said.push(format!("{} of reads stale", percent(stale)));
            }
            if let Some(a) = min(runs, "ok_fraction_during_faults") {
                said.push(format!("{:.0}% of requests served during it", a * 100.0));
            }
            faults.push(format!("{}: {}", fault.name(), said.join(", ")));
        }
        let held: Vec<&str> = held.into_iter().collect();
        let _ = writeln!(
            md,
            "| **{row}** | {about} | {cost} | {} | {} |",
            if held.is_empty() {
                "none claimed".to_string()
            } else {
                held.join(", ")
            },
            faults.join("<br>").replace('|', "\\|")
        );
    }
    md
}

/// The markers between which [`splice_readme`] writes the textbook table.
pub const README_MARKERS: (&str, &str) = ("<!-- matrix:begin -->", "<!-- matrix:end -->");

/// `readme` with the text between [`README_MARKERS`] replaced by `table`;
/// an error naming the missing marker if it lacks one.
pub fn splice_readme(readme: &str, table: &str) -> Result<String, String> {
    let (begin, end) = README_MARKERS;
    let (Some(a), Some(b)) = (readme.find(begin), readme.find(end)) else {
        return Err(format!(
            "the file has no `{begin}` ... `{end}` section to write the table into"
        ));
    };
    if b < a {
        return Err(format!("`{end}` comes before `{begin}`"));
    }
    Ok(format!("{}{begin}\n{table}{}", &readme[..a], &readme[b..]))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `matrix.html`: the grid, self-contained, each square linking to its
/// runs' reports.
pub fn html(spec: &Spec, outcomes: &[Outcome]) -> String {
    let grid = grid(spec, outcomes);
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Mimeo matrix</title><style>\
         body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse}\
         th,td{border:1px solid #bbb;padding:.4em .5em;vertical-align:top;max-width:16em}\
         td.broken{background:#f6b3b3}td.held{background:#bfe8c0}td.error{background:#ccc}\
         td.undecided{background:#f7e3a1}td.not-claimed{background:#eef}\
         .s{font-weight:bold;display:block}.f{display:block;font-size:12px}a{font-size:12px}\
         .legend span{padding:.2em .6em;margin-right:.5em}</style></head><body>\
         <h1>Mimeo: every setting under every fault</h1><p class=\"legend\">\
         <span style=\"background:#bfe8c0\">claimed and held</span>\
         <span style=\"background:#f6b3b3\">claimed and broken</span>\
         <span style=\"background:#eef\">not claimed: what happened</span>\
         <span style=\"background:#f7e3a1\">undecided</span>\
         <span style=\"background:#ccc\">could not run</span></p>",
    );
    if let Some((_, first)) = grid.first() {
        h.push_str("<table id=\"grid\"><tr><th>setting</th>");
        for (c, _) in first {
            let _ = write!(h, "<th>{}</th>", c.name());
        }
        h.push_str("</tr>");
        for (row, squares) in &grid {
            let about = spec
                .rows
                .iter()
                .find(|r| r.name == *row)
                .and_then(|r| r.about.as_deref())
                .unwrap_or("");
            let _ = write!(
                h,
                "<tr><th title=\"{}\">{}</th>",
                escape(about),
                escape(row)
            );
            for (c, runs) in squares {
                if runs.is_empty() {
                    h.push_str("<td>–</td>");
                    continue;
                }
                let s = status(runs);
                let class = s.word().to_lowercase().replace(' ', "-");
                let _ = write!(
                    h,
                    "<td class=\"{class}\"><span class=\"s\">{}</span>",
                    s.word()
                );
                for p in phrases(runs, *c) {
                    let _ = write!(h, "<span class=\"f\">{}</span>", escape(&p));
                }
                for o in runs {
                    let _ = write!(
                        h,
                        "<a href=\"{}/report.html\">{} s{}</a> ",
                        escape(&o.run_dir),
                        o.cell.workload,
                        o.cell.seed
                    );
                }
                h.push_str("</td>");
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    } else {
        h.push_str("<p>No cells were run.</p>");
    }
    h.push_str("</body></html>\n");
    h
}

/// Writes the three outputs into `dir`, each replaced atomically (a
/// reader never sees half a table).
pub fn write_all(dir: &Path, spec: &Spec, outcomes: &[Outcome]) -> Result<(), MatrixError> {
    let json = json!({
        "spec": spec,
        "broken": outcomes.iter().filter(|o| o.broken()).count(),
        "errors": outcomes.iter().filter(|o| o.error.is_some()).count(),
        "cells": outcomes,
    });
    let text = serde_json::to_string_pretty(&json).expect("plain JSON values serialize") + "\n";
    for (name, body) in [
        ("matrix.json", text),
        ("matrix.md", markdown(spec, outcomes)),
        ("matrix.html", html(spec, outcomes)),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| MatrixError::Io { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{Cell, Claim};
    use crate::nemesis::Fault;
    use crate::workload::Workload;
    use serde_json::Value;

    fn outcome(row: &str, fault: Option<Fault>, claim: Option<&str>, figures: Value) -> Outcome {
        Outcome {
            cell: Cell {
                row: row.into(),
                fault: Column(fault),
                workload: Workload::Set,
                seed: 1,
            },
            run_dir: format!("runs/{row}"),
            verdicts: [("set".to_string(), claim.unwrap_or("invalid").to_string())].into(),
            claims: claim
                .map(|v| Claim {
                    checker: "set".into(),
                    verdict: v.into(),
                })
                .into_iter()
                .collect(),
            error: None,
            figures,
        }
    }

    fn spec() -> Spec {
        Spec::parse(
            r#"
            [[row]]
            name = "quorum"
            mode = "leader-follower"
            workloads = ["set"]
            faults = ["none", "kill"]
            claims = ["set"]
            [[row]]
            name = "async"
            mode = "leader-follower"
            workloads = ["set"]
            faults = ["none", "kill"]
            "#,
            "t",
        )
        .unwrap()
    }

    #[test]
    fn squares_show_held_broken_and_what_happened_where_nothing_was_claimed() {
        let outcomes = vec![
            outcome(
                "quorum",
                None,
                Some("valid"),
                json!({"p99_ms_outside": 4.0}),
            ),
            outcome("quorum", Some(Fault::Kill), Some("invalid"), json!({})),
            outcome("async", None, None, json!({})),
            outcome(
                "async",
                Some(Fault::Kill),
                None,
                json!({"lost_writes": 3, "lost_fraction": 0.03, "ok_fraction_during_faults": 0.5}),
            ),
        ];
        let md = markdown(&spec(), &outcomes);
        assert!(md.starts_with("| setting | none | kill |"), "{md}");
        assert!(
            md.contains("| **quorum** | held<br>held: set<br>p99 4.0 ms | BROKEN<br>broke: set |"),
            "{md}"
        );
        assert!(
            md.contains("not claimed<br>found (not claimed): set invalid<br>lost 3 acked writes (3.0%)<br>available 50% during fault"),
            "{md}"
        );
        assert!(md.contains("1 broke a claim"), "{md}");
        let html = html(&spec(), &outcomes);
        assert!(html.contains("<td class=\"broken\">"));
        assert!(html.contains("<td class=\"held\">"));
        assert!(html.contains("href=\"runs/async/report.html\""));
    }

    #[test]
    fn the_textbook_table_says_cost_claims_and_losses_and_goes_between_the_markers() {
        let outcomes = vec![
            outcome(
                "async",
                None,
                None,
                json!({"p50_ms_outside": 1.0, "p99_ms_outside": 6.0, "ok_per_s_outside": 2900.0}),
            ),
            outcome(
                "async",
                Some(Fault::Kill),
                None,
                json!({"lost_writes": 7, "lost_fraction": 0.07, "ok_fraction_during_faults": 0.9}),
            ),
        ];
        let table = textbook(&spec(), &outcomes);
        assert!(
            table.contains(
                "| **async** |  | p50 1.0 ms, p99 6.0 ms, 2900 ops/s | none claimed | kill: lost 7 \
                 acknowledged writes (7.0%), 90% of requests served during it |"
            ),
            "{table}"
        );
        let readme = "intro\n<!-- matrix:begin -->\nold\n<!-- matrix:end -->\nrest\n";
        let new = splice_readme(readme, "T\n").unwrap();
        assert_eq!(
            new,
            "intro\n<!-- matrix:begin -->\nT\n<!-- matrix:end -->\nrest\n"
        );
        assert!(splice_readme("no markers", "T")
            .unwrap_err()
            .contains("matrix:begin"));
    }

    #[test]
    fn an_error_run_is_shown_and_is_not_broken() {
        let mut o = outcome("quorum", None, None, Value::Null);
        o.verdicts.clear();
        o.error = Some("the cluster served nothing\nmore".into());
        assert_eq!(Status::of(&o), Status::Error);
        assert!(!o.broken());
        assert!(
            cell_line(&o).contains("the cluster served nothing"),
            "{}",
            cell_line(&o)
        );
    }
}
