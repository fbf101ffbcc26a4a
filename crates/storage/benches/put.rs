//! Put throughput of the storage engine: acknowledged 256-byte puts per
//! second with 1, 8 and 64 concurrent writers, under each fsync mode.
//!
//! A put is acknowledged the way a replicator does it: writers take turns
//! (under one mutex) to choose the next index and append, then wait for
//! durability outside the mutex, so that under `batch` concurrent writers
//! share fsyncs (group commit). Under `always` the append itself fsyncs,
//! inside the mutex, so writers fsync one after another and more threads
//! do not help; under `never` nothing waits.
//!
//! Run with `cargo bench -p mimeo-storage`. The store lives in a temporary
//! directory under `std::env::temp_dir()` (set `TMPDIR` to measure another
//! disk); fsync cost dominates `always` and `batch`, so results say as much
//! about the disk as about the engine.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use mimeo_storage::{FsyncMode, LogPosition, Mutation, Options, Record, RecordMeta, Store};

const VALUE_BYTES: usize = 256;
const KEYS: u64 = 10_000;

fn record(index: u64, value: &[u8]) -> Record {
    Record {
        meta: RecordMeta {
            position: LogPosition::new(1, index),
            origin: 1,
            seq: index,
            version: Vec::new(),
        },
        mutation: Mutation::Put {
            key: format!("key-{:05}", index % KEYS).into_bytes(),
            value: value.to_vec(),
        },
    }
}

/// One acknowledged put.
fn put(store: &Store, order: &Mutex<()>, value: &[u8]) {
    let index = {
        let _turn = order.lock().unwrap();
        let index = store.last_position().index + 1;
        store.append(&[record(index, value)]).unwrap();
        index
    };
    store.wait_durable(index).unwrap();
}

/// Runs `puts` acknowledged puts spread over `threads` writers; returns the
/// wall time.
fn run(store: &Store, threads: u64, puts: u64) -> Duration {
    let order = Mutex::new(());
    let value = vec![0xA5u8; VALUE_BYTES];
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let share = puts / threads + u64::from(t < puts % threads);
            let (store, order, value) = (store, &order, &value);
            s.spawn(move || {
                for _ in 0..share {
                    put(store, order, value);
                }
            });
        }
    });
    start.elapsed()
}

fn put_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("put_256B");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for fsync in FsyncMode::ALL {
        for threads in [1u64, 8, 64] {
            let dir = tempfile::tempdir().expect("temporary directory");
            let options = Options {
                fsync,
                ..Options::default()
            };
            let store = Store::open(dir.path(), options).expect("open the store");
            group.bench_with_input(
                BenchmarkId::new(fsync.as_str(), format!("{threads}_writers")),
                &threads,
                |b, &threads| b.iter_custom(|puts| run(&store, threads, puts)),
            );
        }
    }
    group.finish();
}

/// The benchmark group (what `criterion_group!` generates, written out so
/// it needs no `pub` item without docs).
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    put_throughput(&mut criterion);
}

criterion_main!(benches);
