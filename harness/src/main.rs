//! `mimeo-harness`: run real `mimeo` nodes under faults and check what they
//! did, or re-check a recorded history (ours or Jepsen's).
//!
//! Exit codes (Maelstrom's, then sysexits): 0 valid, 1 invalid, 2 unknown,
//! 64 usage error, 65 unreadable history, 70 the run itself failed, 130
//! interrupted by Ctrl-C.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mimeo_harness::report::{self, CheckOptions};
use mimeo_harness::run::{self, history_file, Interrupt, RunArgs};
use mimeo_harness::workload::Workload;
use mimeo_harness::{jepsen, History, Verdict};

/// Usage error (sysexits `EX_USAGE`).
const EXIT_USAGE: u8 = 64;
/// The history could not be read (sysexits `EX_DATAERR`).
const EXIT_DATA: u8 = 65;
/// The run could not be carried out (sysexits `EX_SOFTWARE`).
const EXIT_RUN_FAILED: u8 = 70;
/// Interrupted by Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Jepsen-style tests of Mimeo: real node processes on 127.0.0.1, faults,
/// recorded histories, model-checked verdicts and a readable report.
///
/// Exit codes: 0 valid, 1 invalid, 2 unknown, 64 usage error, 65
/// unreadable history, 70 the run failed, 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "mimeo-harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start nodes, run a workload under faults, record the history, check
    /// it and write `results.json` and `report.html` into
    /// `<store>/<run-id>/`.
    ///
    /// Example: mimeo-harness run --workload set --nemesis power-loss,pause
    /// --time-limit 60 --fsync never --seed 7
    Run(Box<RunArgs>),
    /// Re-check a history and re-render its report. Takes a run directory,
    /// a `history.jsonl`, or a Jepsen history (EDN or `jepsen.util` log
    /// lines); the format is recognised from the content.
    Check(CheckArgs),
    /// Write a history (any format `check` reads) as Jepsen EDN, so
    /// Jepsen's own tools (Knossos, Elle) can check it.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// A run directory, `history.jsonl`, Jepsen `.edn` history or Jepsen log.
    path: PathBuf,
    /// The register's initial value, as JSON (`0`, `"a"`). Default: the key
    /// is absent. Some published Jepsen histories start from 0, others from
    /// nil.
    #[arg(long, value_parser = parse_json)]
    initial: Option<serde_json::Value>,
    /// Which checker to run; default: recognised from the operations
    /// (`add` operations mean `set`, else `register`).
    #[arg(long, value_enum)]
    workload: Option<Workload>,
    /// Seconds the linearizability search may take before answering
    /// `unknown`.
    #[arg(long, default_value_t = 120.0)]
    budget: f64,
    /// Only print the verdict; write no `results.json` or `report.html`.
    #[arg(long)]
    no_report: bool,
    /// Where to write the report (default: the run directory, or
    /// `<file>.report/` beside a history file).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// A run directory or history file in any format `check` reads.
    path: PathBuf,
    /// Output file (default: standard output).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| {
        format!("{text:?} is not a JSON value ({e}); write numbers as 0 and strings as '\"a\"'")
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match cli.command {
        Command::Run(args) => run_command(*args),
        Command::Check(args) => check_command(&args),
        Command::Export(args) => export_command(&args),
    }
}

fn run_command(args: RunArgs) -> ExitCode {
    if let Err(e) = args.validate() {
        eprintln!("mimeo-harness run: {e:#}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mimeo-harness: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUN_FAILED);
        }
    };
    let outcome = runtime.block_on(async {
        let interrupt = Interrupt::install();
        let result = run::run(args, interrupt.clone()).await;
        (result, interrupt.is_set())
    });
    match outcome {
        (Ok(outcome), _) => {
            print_results(&outcome.results);
            println!(
                "verdict: {} (report: {})",
                outcome.verdict,
                outcome.dir.join("report.html").display()
            );
            ExitCode::from(outcome.verdict.exit_code() as u8)
        }
        (Err(e), interrupted) => {
            eprintln!("mimeo-harness run: {e:#}");
            ExitCode::from(if interrupted {
                EXIT_INTERRUPTED
            } else {
                EXIT_RUN_FAILED
            })
        }
    }
}

fn check_command(args: &CheckArgs) -> ExitCode {
    if !(args.budget.is_finite() && args.budget > 0.0) {
        eprintln!(
            "mimeo-harness check: --budget must be a positive number of seconds, not {}",
            args.budget
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let file = history_file(&args.path);
    let history = match load("check", &file) {
        Ok(history) => history,
        Err(code) => return code,
    };
    let workload = args
        .workload
        .unwrap_or_else(|| report::detect_workload(&history));
    eprintln!(
        "{}: {} entries, {:?} format, {workload} workload",
        file.display(),
        history.ops.len(),
        history.source
    );
    let results = report::check(
        &history,
        workload,
        &CheckOptions {
            initial: args.initial.clone(),
            budget: Duration::from_secs_f64(args.budget),
        },
    );
    print_results(&results);
    let verdict = Verdict::combine(results.iter().map(|r| r.verdict));
    if !args.no_report {
        let dir = args
            .out
            .clone()
            .unwrap_or_else(|| report_dir(&args.path, &file));
        let written = std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {}", dir.display()))
            .and_then(|()| report::write(&dir, &history, &results, None));
        match written {
            Ok(()) => eprintln!("report: {}", dir.join("report.html").display()),
            Err(e) => {
                eprintln!("mimeo-harness check: writing the report: {e:#}");
                return ExitCode::from(EXIT_RUN_FAILED);
            }
        }
    }
    println!("verdict: {verdict}");
    ExitCode::from(verdict.exit_code() as u8)
}

/// Reads a history in any format, or says why not and gives the exit code.
fn load(command: &str, file: &Path) -> Result<History, ExitCode> {
    jepsen::load(file).map_err(|e| {
        eprintln!("mimeo-harness {command}: {e}");
        ExitCode::from(EXIT_DATA)
    })
}

/// A run directory keeps its report; a history file gets `<file>.report/`.
fn report_dir(arg: &Path, file: &Path) -> PathBuf {
    if arg.is_dir() {
        arg.to_path_buf()
    } else {
        let mut name = file.as_os_str().to_owned();
        name.push(".report");
        PathBuf::from(name)
    }
}

fn export_command(args: &ExportArgs) -> ExitCode {
    let file = history_file(&args.path);
    let history = match load("export", &file) {
        Ok(history) => history,
        Err(code) => return code,
    };
    let written = match &args.output {
        Some(path) => std::fs::File::create(path)
            .and_then(|f| {
                let mut out = std::io::BufWriter::new(f);
                jepsen::export_edn(&history, &mut out)?;
                out.flush()
            })
            .with_context(|| format!("writing {}", path.display())),
        None => jepsen::export_edn(&history, std::io::stdout().lock()).context("writing stdout"),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mimeo-harness export: {e:#}");
            ExitCode::from(EXIT_RUN_FAILED)
        }
    }
}

/// One line per checker, then its first anomalies.
fn print_results(results: &[mimeo_harness::CheckResult]) {
    for r in results {
        println!("{:<14} {:<8} {}", r.checker, r.verdict, r.summary);
        for a in r.anomalies.iter().take(5) {
            println!("    {}: {}", a.kind, a.message);
        }
        if r.anomalies.len() > 5 {
            println!("    ... {} more in results.json", r.anomalies.len() - 5);
        }
    }
}
