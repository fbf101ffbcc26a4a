//! The load generator behind `mimeo bench`, reusable against other stores.
//!
//! A [`Workload`] says what to do (concurrency, value size, key space, read
//! fraction, how long); a [`Target`] says how to do one get or put on some
//! store. `mimeo bench` runs a workload against a Mimeo node through
//! [`mimeo_client::Client`]; the `bench-compare` crate runs the *same*
//! workload against etcd and Redis, so the figures are comparable.
//!
//! Each worker keeps its own latency histogram (no shared lock on the hot
//! path); they are merged at the end into a [`Report`].

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Why one benchmark operation failed.
#[derive(Debug, Clone)]
pub enum OpError {
    /// It certainly did not take effect.
    Definite(String),
    /// It may or may not have taken effect (a timeout, a lost connection).
    Unknown(String),
}

/// A store the load generator can drive.
pub trait Target: Send + Sync + 'static {
    /// Writes `value` under `key`; returns once the store acknowledged it.
    fn put(&self, key: String, value: Vec<u8>) -> impl Future<Output = Result<(), OpError>> + Send;
    /// Reads `key`.
    fn get(&self, key: String) -> impl Future<Output = Result<Option<Vec<u8>>, OpError>> + Send;
}

impl Target for mimeo_client::Client {
    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), OpError> {
        mimeo_client::Client::put(self, key, value)
            .await
            .map(|_| ())
            .map_err(client_error)
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, OpError> {
        mimeo_client::Client::get(self, key)
            .await
            .map_err(client_error)
    }
}

fn client_error(e: mimeo_client::Error) -> OpError {
    if e.is_definite() {
        OpError::Definite(e.to_string())
    } else {
        OpError::Unknown(e.to_string())
    }
}

/// When a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Stop {
    /// After this much time.
    After(Duration),
    /// After this many operations in total.
    Ops(u64),
}

/// What a benchmark run does.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Concurrent workers, each with one operation in flight.
    pub concurrency: usize,
    /// Bytes per written value.
    pub value_size: usize,
    /// Number of distinct keys reads and writes pick from, uniformly.
    pub key_count: u64,
    /// Fraction of operations that are reads, 0.0 to 1.0.
    pub read_fraction: f64,
    /// When to stop.
    pub stop: Stop,
    /// Write every value to a fresh key (`<prefix>w<worker>-<n>`) instead of
    /// picking from `key_count` keys; with an acknowledgement log this lets a
    /// crash test check that every acknowledged write survived.
    pub unique_keys: bool,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Seed of the key and operation choices (worker `i` uses `seed + i`).
    pub seed: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            concurrency: 16,
            value_size: 256,
            key_count: 10_000,
            read_fraction: 0.0,
            stop: Stop::After(Duration::from_secs(10)),
            unique_keys: false,
            key_prefix: "bench-".into(),
            seed: 1,
        }
    }
}

/// The value a benchmark writes under `key`: the key's bytes repeated to
/// `size`, so a reader can check a value without a record of what was
/// written.
pub fn value_for(key: &str, size: usize) -> Vec<u8> {
    key.bytes().cycle().take(size).collect()
}

/// Options that do not change the workload itself.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Append the key of every acknowledged write to this file, one per
    /// line, flushed before the next operation starts.
    pub ack_log: Option<PathBuf>,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Mean (to compare with the nodes' `mimeo_request_duration_seconds`
    /// and `mimeo_storage_fsync_seconds`, whose sums give exact means).
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest operation.
    pub max_us: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The workload that ran.
    pub workload: Workload,
    /// Wall time of the run.
    pub elapsed_s: f64,
    /// Successful operations.
    pub ok: u64,
    /// Successful reads.
    pub reads: u64,
    /// Successful writes.
    pub writes: u64,
    /// Operations that certainly did not take effect.
    pub failed: u64,
    /// Operations whose outcome is unknown.
    pub unknown: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency of successful operations.
    pub latency: Latency,
    /// The first few error messages, for diagnosis.
    pub sample_errors: Vec<String>,
}

impl Report {
    /// A few lines for a person.
    pub fn to_text(&self) -> String {
        let l = &self.latency;
        format!(
            "ops ok {} (reads {}, writes {}), failed {}, unknown {} in {:.2} s\n\
             throughput {:.0} ops/s\n\
             latency mean {:.0} us  p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us",
            self.ok,
            self.reads,
            self.writes,
            self.failed,
            self.unknown,
            self.elapsed_s,
            self.throughput,
            l.mean_us,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us
        )
    }
}

/// Counters shared by workers and the progress printer.
#[derive(Default)]
struct Counters {
    started: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    unknown: AtomicU64,
}

/// What one worker measured.
struct WorkerResult {
    histogram: Histogram<u64>,
    reads: u64,
    writes: u64,
    errors: Vec<String>,
}

/// Runs `workload` against `target` and reports what it measured.
pub async fn run<T: Target>(
    target: Arc<T>,
    workload: &Workload,
    options: &RunOptions,
) -> std::io::Result<Report> {
    let ack_log = match &options.ack_log {
        Some(path) => Some(Arc::new(Mutex::new(std::fs::File::create(path)?))),
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();

    let progress = options.progress.then(|| {
        let counters = Arc::clone(&counters);
        let done = Arc::clone(&done);
        tokio::spawn(print_progress(counters, done, start))
    });

    let mut workers = Vec::with_capacity(workload.concurrency);
    for worker in 0..workload.concurrency {
        let target = Arc::clone(&target);
        let workload = workload.clone();
        let counters = Arc::clone(&counters);
        let ack_log = ack_log.clone();
        workers.push(tokio::spawn(async move {
            run_worker(worker, &*target, &workload, &counters, start, ack_log).await
        }));
    }

    let mut merged = latency_histogram();
    let (mut reads, mut writes, mut errors) = (0, 0, Vec::new());
    for worker in workers {
        let result = worker.await.map_err(std::io::Error::other)??;
        merged
            .add(&result.histogram)
            .expect("histograms with the same precision merge");
        reads += result.reads;
        writes += result.writes;
        errors.extend(result.errors);
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.await;
    }

    let ok = counters.ok.load(Ordering::Relaxed);
    errors.truncate(5);
    Ok(Report {
        workload: workload.clone(),
        elapsed_s: elapsed.as_secs_f64(),
        ok,
        reads,
        writes,
        failed: counters.failed.load(Ordering::Relaxed),
        unknown: counters.unknown.load(Ordering::Relaxed),
        throughput: ok as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Latency {
            mean_us: merged.mean(),
            p50_us: merged.value_at_quantile(0.50),
            p90_us: merged.value_at_quantile(0.90),
            p99_us: merged.value_at_quantile(0.99),
            p999_us: merged.value_at_quantile(0.999),
            max_us: merged.max(),
        },
        sample_errors: errors,
    })
}

/// The slowest latency a histogram tracks exactly; slower operations are
/// recorded as this (an hour, far beyond any timeout).
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 1 µs to [`MAX_TRACKED_US`], three
/// significant figures. The bounds are explicit: `Histogram::new` starts
/// at a 2 ms ceiling and `saturating_record` does not grow it, which would
/// clamp every slower operation to 2 ms.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("bounds and precision are valid")
}

async fn run_worker<T: Target>(
    worker: usize,
    target: &T,
    workload: &Workload,
    counters: &Counters,
    start: Instant,
    ack_log: Option<Arc<Mutex<std::fs::File>>>,
) -> std::io::Result<WorkerResult> {
    let mut rng = StdRng::seed_from_u64(workload.seed.wrapping_add(worker as u64));
    let mut result = WorkerResult {
        histogram: latency_histogram(),
        reads: 0,
        writes: 0,
        errors: Vec::new(),
    };
    let mut sequence = 0u64;
    loop {
        match workload.stop {
            Stop::After(limit) if start.elapsed() >= limit => break,
            Stop::Ops(limit) if counters.started.fetch_add(1, Ordering::Relaxed) >= limit => break,
            _ => {}
        }
        let is_read = rng.random::<f64>() < workload.read_fraction;
        let key = if workload.unique_keys && !is_read {
            sequence += 1;
            format!("{}w{worker}-{sequence}", workload.key_prefix)
        } else {
            let n = rng.random_range(0..workload.key_count.max(1));
            format!("{}{n:010}", workload.key_prefix)
        };
        let began = Instant::now();
        let outcome = if is_read {
            target.get(key.clone()).await.map(|_| ())
        } else {
            let value = value_for(&key, workload.value_size);
            target.put(key.clone(), value).await
        };
        let micros = began.elapsed().as_micros() as u64;
        match outcome {
            Ok(()) => {
                counters.ok.fetch_add(1, Ordering::Relaxed);
                result.histogram.saturating_record(micros.max(1));
                if is_read {
                    result.reads += 1;
                } else {
                    result.writes += 1;
                    if let Some(log) = &ack_log {
                        // One write(2) per line, so a killed bench leaves
                        // at most its last line incomplete.
                        let line = format!("{key}\n");
                        let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
                        file.write_all(line.as_bytes())?;
                    }
                }
            }
            Err(OpError::Definite(message)) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                result.errors.push(message);
            }
            Err(OpError::Unknown(message)) => {
                counters.unknown.fetch_add(1, Ordering::Relaxed);
                result.errors.push(message);
            }
        }
        result.errors.truncate(5);
    }
    Ok(result)
}

async fn print_progress(counters: Arc<Counters>, done: Arc<AtomicBool>, start: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut last_ok = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    while !done.load(Ordering::Relaxed) {
        ticker.tick().await;
        let ok = counters.ok.load(Ordering::Relaxed);
        let line = format!(
            "[{:6.1}s] {ok} ok  {} ops/s  failed {}  unknown {}",
            start.elapsed().as_secs_f64(),
            ok - last_ok,
            counters.failed.load(Ordering::Relaxed),
            counters.unknown.load(Ordering::Relaxed),
        );
        last_ok = ok;
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An in-memory target that fails every third write with an unknown
    /// outcome.
    #[derive(Default)]
    struct Flaky {
        data: Mutex<HashMap<String, Vec<u8>>>,
        calls: AtomicU64,
    }

    impl Target for Flaky {
        async fn put(&self, key: String, value: Vec<u8>) -> Result<(), OpError> {
            if self.calls.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                return Err(OpError::Unknown("timed out".into()));
            }
            self.data.lock().unwrap().insert(key, value);
            Ok(())
        }

        async fn get(&self, key: String) -> Result<Option<Vec<u8>>, OpError> {
            Ok(self.data.lock().unwrap().get(&key).cloned())
        }
    }

    #[tokio::test]
    async fn counts_ops_and_logs_only_acknowledged_writes() {
        let dir = tempfile::tempdir().unwrap();
        let ack_log = dir.path().join("acks");
        let target = Arc::new(Flaky::default());
        let workload = Workload {
            concurrency: 4,
            stop: Stop::Ops(300),
            unique_keys: true,
            value_size: 16,
            ..Workload::default()
        };
        let options = RunOptions {
            progress: false,
            ack_log: Some(ack_log.clone()),
        };
        let report = run(Arc::clone(&target), &workload, &options).await.unwrap();
        assert_eq!(report.ok + report.unknown + report.failed, 300);
        assert_eq!(report.unknown, 100);
        assert_eq!(report.writes, 200);
        let acked = std::fs::read_to_string(&ack_log).unwrap();
        let data = target.data.lock().unwrap();
        assert_eq!(acked.lines().count(), 200);
        for key in acked.lines() {
            assert_eq!(data.get(key), Some(&value_for(key, 16)), "{key}");
        }
        assert!(report.latency.max_us >= report.latency.p50_us);
    }

    /// A target whose every write takes `delay`.
    struct Slow {
        delay: Duration,
    }

    impl Target for Slow {
        async fn put(&self, _key: String, _value: Vec<u8>) -> Result<(), OpError> {
            tokio::time::sleep(self.delay).await;
            Ok(())
        }

        async fn get(&self, _key: String) -> Result<Option<Vec<u8>>, OpError> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn latencies_above_two_milliseconds_are_measured_not_clamped() {
        let workload = Workload {
            concurrency: 2,
            stop: Stop::Ops(10),
            ..Workload::default()
        };
        let options = RunOptions {
            progress: false,
            ack_log: None,
        };
        let delay = Duration::from_millis(8);
        let report = run(Arc::new(Slow { delay }), &workload, &options)
            .await
            .unwrap();
        let l = &report.latency;
        assert!(l.p50_us >= 8_000, "p50 {} us for 8 ms writes", l.p50_us);
        assert!(l.max_us >= l.p99_us && l.p99_us >= l.p50_us, "{l:?}");
    }

    #[test]
    fn value_for_is_deterministic_and_sized() {
        assert_eq!(value_for("ab", 5), b"ababa".to_vec());
        assert_eq!(value_for("key", 0), Vec::<u8>::new());
    }
}
