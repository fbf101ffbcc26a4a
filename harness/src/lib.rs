//! Mimeo's Jepsen-style harness: real `mimeo` processes under faults,
//! recorded histories, model-checked.
//!
//! A run ([`run::run`], or `mimeo-harness run` on the command line) starts
//! node processes on 127.0.0.1 ([`cluster`]), drives client workers against
//! them ([`workload`]) while a [`nemesis`] kills, pauses, power-cuts,
//! partitions and skews them, records every operation in Jepsen's history
//! model ([`history`]), and checks the history ([`check`]): linearizability
//! per key with a Wing–Gong–Lowe search over stateright `SequentialSpec`
//! models, Jepsen's set-full analysis for lost writes, and latency and
//! throughput. [`report`] writes `results.json` and a self-contained
//! `report.html`.
//!
//! The checkers do not depend on the runner: they check any history,
//! including Jepsen's EDN histories and `jepsen.util` logs ([`jepsen`]).
//!
//! # Example: check a history
//!
//! ```
//! use std::time::Duration;
//! use mimeo_harness::{History, Verdict};
//! use mimeo_harness::check::linear::{check, LinearOptions};
//!
//! // Process 0 writes 1; afterwards, process 1 reads 0: a stale read.
//! let jsonl = r#"
//! {"index":0,"time_ns":0,"process":0,"type":"invoke","f":"write","key":"x","value":1}
//! {"index":1,"time_ns":5,"process":0,"type":"ok","f":"write","key":"x","value":1}
//! {"index":2,"time_ns":9,"process":1,"type":"invoke","f":"read","key":"x","value":null}
//! {"index":3,"time_ns":12,"process":1,"type":"ok","f":"read","key":"x","value":0}
//! "#;
//! let history = History::parse_jsonl(jsonl.as_bytes(), "example".as_ref())?;
//! let options = LinearOptions { budget: Duration::from_secs(5), ..Default::default() };
//! let result = check(&history, &options);
//! assert_eq!(result.verdict, Verdict::Invalid);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example: run a test
//!
//! ```text
//! mimeo-harness run --mode standalone --workload set --nemesis power-loss,pause \
//!     --time-limit 60 --nodes 1 --concurrency 10 --seed 7 --fsync never
//! ```
//!
//! exits 0 when every checker says valid, 1 when one found a violation
//! (here: acknowledged adds lost at the power cuts, because nothing was
//! fsynced), 2 when one could not decide.

pub mod bench_cluster;
pub mod check;
pub mod cluster;
pub mod corpus;
pub mod history;
pub mod jepsen;
pub mod local_reads;
pub mod matrix;
pub mod nemesis;
pub mod net;
pub mod recorder;
pub mod report;
pub mod run;
pub mod workload;

pub use check::{Anomaly, CheckResult, Verdict};
pub use history::{History, HistoryError, Op, OpType, Process, Source};
