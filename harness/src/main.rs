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
use mimeo_harness::report;
use mimeo_harness::run::{self, history_file, Interrupt, RunArgs};
use mimeo_harness::workload::Workload;
use mimeo_harness::{corpus, jepsen, History, Verdict};

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
    /// Re-check histories and re-render their reports. Takes run
    /// directories, history files (`history.jsonl[.zst]`, Jepsen EDN or
    /// `jepsen.util` log lines; the format is recognised from the content)
    /// and directories of them, checked in parallel. One history gets the
    /// checkers' full output and a report; several get a line each and a
    /// summary table, and reports only with `--report`. A `check.toml`
    /// beside histories gives them options (see the `corpus` module docs).
    ///
    /// Exit code: the worst outcome, invalid (1) over unreadable (65) over
    /// unknown (2) over valid (0).
    ///
    /// Example: mimeo-harness check histories/
    Check(CheckArgs),
    /// Write a history (any format `check` reads) as Jepsen EDN, so
    /// Jepsen's own tools (Knossos, Elle) can check it.
    Export(ExportArgs),
    /// Run every setting × fault of a spec (each cell an ordinary run), and
    /// write `matrix.json`, `matrix.md` and `matrix.html` into `--out`.
    /// Resumable: cells already in `--out` are read back, not re-run.
    ///
    /// Exit code: 1 if any claim broke; 70 if a cell could not run at all;
    /// else 0.
    ///
    /// Example: mimeo-harness matrix --spec harness/matrix/ci.toml --out
    /// histories/matrix-ci
    Matrix(MatrixArgs),
    /// Start a cluster for benchmarks and keep it running: every
    /// node-to-node link through the fault network, optionally delayed
    /// (`--delay-ms`, or only one node's links with `--slow`), clients
    /// straight to the nodes. Prints the endpoints, certificate directory
    /// and metrics addresses as one JSON line, then takes commands on stdin
    /// (delay, partition, heal, kill, start, stats) until stdin ends or a
    /// signal comes; see the `bench_cluster` module docs.
    ///
    /// Example: mimeo-harness bench-cluster --mode multi-leader --nodes 3
    /// --delay-ms 50 --dir /var/tmp/regions --acks local
    BenchCluster(mimeo_harness::bench_cluster::BenchClusterArgs),
}

#[derive(Debug, clap::Args)]
struct MatrixArgs {
    /// The spec (TOML; see harness/matrix/default.toml). Default: the
    /// built-in default spec.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Seeds per cell: 1..=N.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Seconds of workload per cell, over the spec's.
    #[arg(long)]
    time_limit: Option<f64>,
    /// Only cells whose id (`<row>--<fault>--<workload>--s<seed>`) contains
    /// this (repeatable: any of them).
    #[arg(long)]
    filter: Vec<String>,
    /// Every fault each row can take, not only the spec's.
    #[arg(long)]
    full: bool,
    /// Run cells again even if `--out` has them.
    #[arg(long)]
    rerun: bool,
    /// Print the cells and the expected time, and run nothing.
    #[arg(long)]
    list: bool,
    /// The matrix directory.
    #[arg(long, default_value = "histories/matrix")]
    out: PathBuf,
    /// The `mimeo` binary (default: $MIMEO_BIN, else next to this
    /// executable, else built with cargo).
    #[arg(long)]
    mimeo_bin: Option<PathBuf>,
    /// Also write the textbook table (each setting's cost and what each
    /// fault did to it) into this file, between `<!-- matrix:begin -->`
    /// and `<!-- matrix:end -->` (README.md's section).
    #[arg(long, value_name = "FILE")]
    readme: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Run directories, history files (`history.jsonl[.zst]`, Jepsen `.edn`
    /// or log) and directories of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
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
    #[arg(long, conflicts_with = "report")]
    no_report: bool,
    /// Write a report for every history when several are checked (one
    /// history gets one unless `--no-report`).
    #[arg(long)]
    report: bool,
    /// Where to write reports (default: the run directory, or
    /// `<file>.report/` beside a history file). With several histories,
    /// each goes to `<out>/<its path below the argument>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Histories checked at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
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
        Command::Matrix(args) => matrix_command(args),
        Command::BenchCluster(args) => bench_cluster_command(args),
    }
}

fn bench_cluster_command(args: mimeo_harness::bench_cluster::BenchClusterArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(mimeo_harness::bench_cluster::run(args));
    // The nodes are stopped by now. Tokio reads stdin on a blocking thread
    // that a runtime cannot interrupt: after a signal (stdin still open,
    // maybe inherited by other processes) a plain drop would wait for it
    // forever.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mimeo-harness bench-cluster: {e:#}");
            ExitCode::from(EXIT_RUN_FAILED)
        }
    }
}

/// The async runtime of `run` and `matrix`, or the exit code that says it
/// could not start.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("mimeo-harness: cannot start the async runtime: {e}");
        ExitCode::from(EXIT_RUN_FAILED)
    })
}

fn matrix_command(args: MatrixArgs) -> ExitCode {
    use mimeo_harness::matrix::{self, Spec};
    let spec = match &args.spec {
        None => Spec::parse(matrix::DEFAULT_SPEC, "the built-in default spec"),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| Spec::parse(&text, &path.display().to_string())),
    };
    let spec = match spec {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("mimeo-harness matrix: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.seeds == 0 || args.time_limit.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
        eprintln!("mimeo-harness matrix: --seeds and --time-limit must be positive");
        return ExitCode::from(EXIT_USAGE);
    }
    let options = matrix::Options {
        out: args.out.clone(),
        seeds: args.seeds,
        time_limit: args.time_limit,
        filter: args.filter.clone(),
        full: args.full,
        rerun: args.rerun,
        mimeo_bin: args.mimeo_bin.clone(),
    };
    let cells = matrix::cells(&spec, &options);
    if cells.is_empty() {
        eprintln!(
            "mimeo-harness matrix: no cell matches --filter {:?}",
            args.filter
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let estimate = matrix::estimate(&spec, &options, cells.len());
    eprintln!(
        "matrix: {} cell(s), at most ~{:.0} min (cells already in {} are read back)",
        cells.len(),
        estimate.as_secs_f64() / 60.0,
        args.out.display()
    );
    if args.list {
        for cell in &cells {
            println!("{}", cell.id());
        }
        return ExitCode::SUCCESS;
    }
    // Every cell's arguments are checked before the first one runs.
    for cell in &cells {
        let row = spec
            .rows
            .iter()
            .find(|r| r.name == cell.row)
            .expect("from the spec");
        if let Err(e) = matrix::run_args(&spec, row, cell, &options) {
            eprintln!("mimeo-harness matrix: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let interrupt = Interrupt::install();
        matrix::run(&spec, &options, &interrupt).await
    });
    match result {
        Ok(outcomes) => {
            print!("{}", matrix::render::markdown(&spec, &outcomes));
            println!("matrix: {}", args.out.join("matrix.html").display());
            if let Some(path) = &args.readme {
                let table = matrix::render::textbook(&spec, &outcomes);
                let written = std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| matrix::render::splice_readme(&text, &table))
                    .and_then(|text| std::fs::write(path, text).map_err(|e| e.to_string()));
                match written {
                    Ok(()) => println!("matrix: the textbook table is in {}", path.display()),
                    Err(e) => {
                        eprintln!("mimeo-harness matrix: {}: {e}", path.display());
                        return ExitCode::from(EXIT_RUN_FAILED);
                    }
                }
            }
            let broken = outcomes.iter().filter(|o| o.broken()).count();
            let errors = outcomes
                .iter()
                .filter(|o| o.verdicts.is_empty() && o.error.is_some())
                .count();
            if broken > 0 {
                eprintln!("matrix: {broken} run(s) broke a claim");
                ExitCode::from(1)
            } else if errors > 0 {
                eprintln!(
                    "matrix: {errors} run(s) could not be carried out; the matrix is incomplete"
                );
                ExitCode::from(EXIT_RUN_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(matrix::MatrixError::Interrupted) => {
            eprintln!("mimeo-harness matrix: interrupted; run the same command to resume");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) => {
            eprintln!("mimeo-harness matrix: {e}");
            ExitCode::from(EXIT_RUN_FAILED)
        }
    }
}

fn run_command(args: RunArgs) -> ExitCode {
    if let Err(e) = args.validate() {
        eprintln!("mimeo-harness run: {e:#}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async {
        let interrupt = Interrupt::install();
        let result = run::run(args, interrupt.clone()).await;
        (result, interrupt.is_set())
    });
    match outcome {
        (Ok(outcome), _) => {
            print_results(&outcome.results);
            if !outcome.injected.is_empty() || !outcome.never_injected.is_empty() {
                let injected: Vec<String> = outcome
                    .injected
                    .iter()
                    .map(|(f, n)| format!("{} ×{n}", f.name()))
                    .collect();
                println!("faults injected: {}", injected.join(", "));
                if !outcome.never_injected.is_empty() {
                    let names: Vec<&str> =
                        outcome.never_injected.iter().map(|f| f.name()).collect();
                    println!(
                        "warning: never injected: {} (nothing is said about them; raise \
                         --time-limit)",
                        names.join(", ")
                    );
                }
            }
            println!(
                "seed: {} (replay: {})",
                outcome.seed,
                replay_command(outcome.seed)
            );
            println!(
                "verdict: {} (report: {})",
                outcome.verdict,
                outcome.dir.join("report.html").display()
            );
            ExitCode::from(outcome.verdict.exit_code() as u8)
        }
        (Err(e), interrupted) => {
            // The error names what failed; its sources say why.
            eprintln!("mimeo-harness run: {:#}", anyhow::Error::from(e));
            ExitCode::from(if interrupted {
                EXIT_INTERRUPTED
            } else {
                EXIT_RUN_FAILED
            })
        }
    }
}

/// This command line with `--seed` set to `seed` and without `--run-id`
/// (the replay needs a directory of its own).
fn replay_command(seed: u64) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut args = std::env::args().peekable();
    while let Some(arg) = args.next() {
        if arg == "--seed" || arg == "--run-id" {
            args.next();
        } else if !(arg.starts_with("--seed=") || arg.starts_with("--run-id=")) {
            words.push(arg);
        }
    }
    words.push(format!("--seed {seed}"));
    words.join(" ")
}

fn check_command(args: &CheckArgs) -> ExitCode {
    if !(args.budget.is_finite() && args.budget > 0.0) {
        eprintln!(
            "mimeo-harness check: --budget must be a positive number of seconds, not {}",
            args.budget
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if args.jobs == Some(0) {
        eprintln!("mimeo-harness check: --jobs must be at least 1");
        return ExitCode::from(EXIT_USAGE);
    }
    let cli = corpus::Options {
        workload: args.workload,
        initial: args.initial.clone(),
        quorums: None,
    };
    let budget = Duration::from_secs_f64(args.budget);
    // One file or run directory: the full output, and a report by default.
    if let [path] = &args.paths[..] {
        if path.is_file() || (path.is_dir() && history_file(path).is_file()) {
            return check_single(args, path, &cli, budget);
        }
    }
    check_many(args, &cli, budget)
}

/// One history: every checker's result, its anomalies, and the report.
fn check_single(
    args: &CheckArgs,
    path: &Path,
    cli: &corpus::Options,
    budget: Duration,
) -> ExitCode {
    let file = history_file(path);
    let target = corpus::Target {
        file: file.clone(),
        root: path.to_path_buf(),
    };
    let outcome = corpus::check_one(target, cli, budget, 0);
    let checked = match outcome.checked {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("mimeo-harness check: {e}");
            return ExitCode::from(EXIT_DATA);
        }
    };
    let history = &checked.history;
    eprintln!(
        "{}: {} entries, {:?} format, {} workload",
        file.display(),
        history.ops.len(),
        history.source,
        checked.workload
    );
    if let Some(cut) = &history.cut {
        eprintln!("warning: {}: {cut}", file.display());
    }
    print_results(&checked.results);
    if !args.no_report {
        let dir = args.out.clone().unwrap_or_else(|| report_dir(path, &file));
        let written = std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {}", dir.display()))
            .and_then(|()| report::write(&dir, history, &checked.results, None));
        match written {
            Ok(()) => eprintln!("report: {}", dir.join("report.html").display()),
            Err(e) => {
                eprintln!("mimeo-harness check: writing the report: {e:#}");
                return ExitCode::from(EXIT_RUN_FAILED);
            }
        }
    }
    println!("verdict: {}", checked.verdict);
    ExitCode::from(checked.verdict.exit_code() as u8)
}

/// Many histories: checked in parallel, a line each in the order given,
/// then a summary table; the exit code is the worst outcome.
fn check_many(args: &CheckArgs, cli: &corpus::Options, budget: Duration) -> ExitCode {
    let started = std::time::Instant::now();
    let mut tally = corpus::Tally::default();
    let mut targets = Vec::new();
    for found in corpus::collect(&args.paths) {
        match found {
            Ok(target) => targets.push(target),
            Err((path, e)) => {
                println!("{:<10} {}: {e}", "unreadable", path.display());
                tally.add(None);
            }
        }
    }
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let total = targets.len();
    eprintln!(
        "checking {total} histories on {} threads",
        jobs.min(total.max(1))
    );
    let tally = std::sync::Mutex::new(tally);
    let report_failures = std::sync::atomic::AtomicUsize::new(0);
    corpus::check_all(targets, cli, budget, jobs, &|_, outcome| {
        let verdict = outcome.checked.as_ref().ok().map(|c| c.verdict);
        tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add(verdict);
        println!("{}", outcome_line(&outcome));
        if let (true, Ok(checked)) = (args.report, &outcome.checked) {
            let dir = match &args.out {
                Some(out) => {
                    let mut name = out.join(outcome.target.relative()).into_os_string();
                    name.push(".report");
                    PathBuf::from(name)
                }
                None => {
                    let file = &outcome.target.file;
                    let run_dir = file.parent().filter(|dir| history_file(dir) == *file);
                    report_dir(run_dir.unwrap_or(file), file)
                }
            };
            let written = std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating {}", dir.display()))
                .and_then(|()| report::write(&dir, &checked.history, &checked.results, None));
            if let Err(e) = written {
                eprintln!(
                    "mimeo-harness check: writing the report of {}: {e:#}",
                    outcome.target.file.display()
                );
                report_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let tally = tally
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    println!();
    println!("{:<12}{:>10}", "outcome", "histories");
    for (name, n) in [
        ("valid", tally.valid),
        ("invalid", tally.invalid),
        ("unknown", tally.unknown),
        ("unreadable", tally.unreadable),
    ] {
        println!("{name:<12}{n:>10}");
    }
    println!(
        "{:<12}{:>10}   in {:.2} s",
        "total",
        tally.total(),
        started.elapsed().as_secs_f64()
    );
    if report_failures.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        return ExitCode::from(EXIT_RUN_FAILED);
    }
    ExitCode::from(tally.exit_code())
}

/// `<verdict> <path>  (<n> ops, <t> s)[: what decided it]`.
fn outcome_line(outcome: &corpus::Outcome) -> String {
    let path = outcome.target.file.display();
    match &outcome.checked {
        Err(e) => format!("{:<10} {path}: {e}", "unreadable"),
        Ok(checked) => {
            let mut line = format!(
                "{:<10} {path}  ({} ops, {} workload, {:.2} s)",
                checked.verdict.to_string(),
                checked.history.ops.len(),
                checked.workload,
                outcome.elapsed.as_secs_f64()
            );
            let deciding: Vec<String> = checked
                .results
                .iter()
                .filter(|r| r.verdict == checked.verdict && r.verdict != Verdict::Valid)
                .map(|r| format!("{}: {}", r.checker, r.summary))
                .collect();
            if !deciding.is_empty() {
                line.push_str(": ");
                line.push_str(&deciding.join("; "));
            }
            if let Some(cut) = &checked.history.cut {
                line.push_str(&format!(" [{cut}]"));
            }
            line
        }
    }
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
