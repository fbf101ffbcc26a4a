//! Criterion benchmarks of the causality types:
//!
//! - `dvvset/update`: a read-modify-write (the write carries the set's
//!   own context, so it replaces every sibling), on a key whose history
//!   names 3, 5 or 32 nodes and that holds 1, 10 or 100 siblings;
//! - `dvvset/join`: merging two replicas of such a key, one of which has
//!   one more concurrent sibling (the result has siblings + 1);
//! - `hlc/tick` and `hlc/observe`;
//! - `orset/merge`: two replicas of a 10,000-element set that diverged by
//!   100 removes and 100 adds.
//!
//! Run with `cargo bench -p mimeo-causality`; results are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BatchSize, BenchmarkId, Criterion};
use mimeo_causality::{DvvSet, Hlc, NodeId, OrSet, SiblingLimits, Timestamp, VersionVector};

const NODES: [usize; 3] = [3, 5, 32];
const SIBLINGS: [usize; 3] = [1, 10, 100];

fn node_ids(nodes: usize) -> Vec<NodeId> {
    (1..=nodes).map(|i| NodeId::new(format!("n{i}"))).collect()
}

/// A key whose history names every node (ten writes each, all
/// superseded) and that holds `siblings` concurrent values, written blind
/// through the nodes in turn. Values are 64-byte payloads.
fn key(nodes: &[NodeId], siblings: usize) -> DvvSet<Vec<u8>> {
    let limits = SiblingLimits::new(1_000, 1_000).expect("valid");
    let history: VersionVector = nodes.iter().map(|n| (n.clone(), 10)).collect();
    let mut key = DvvSet::new();
    key.discard(&history);
    for i in 0..siblings {
        key.update_with(
            &limits,
            &VersionVector::new(),
            &nodes[i % nodes.len()],
            vec![i as u8; 64],
        )
        .expect("under the cap");
    }
    key
}

fn dvvset(c: &mut Criterion) {
    let mut group = c.benchmark_group("dvvset/update");
    for nodes in NODES {
        let ids = node_ids(nodes);
        for siblings in SIBLINGS {
            let key = key(&ids, siblings);
            let context = key.context();
            group.bench_with_input(
                BenchmarkId::new(format!("{nodes}n"), format!("{siblings}s")),
                &key,
                |b, key| {
                    b.iter_batched(
                        || key.clone(),
                        |mut key| {
                            key.update(&context, &ids[0], vec![0u8; 64])
                                .expect("replaces all");
                            key
                        },
                        BatchSize::SmallInput,
                    )
                },
            );
        }
    }
    group.finish();

    let mut group = c.benchmark_group("dvvset/join");
    let limits = SiblingLimits::new(1_000, 1_000).expect("valid");
    for nodes in NODES {
        let ids = node_ids(nodes);
        for siblings in SIBLINGS {
            let a = key(&ids, siblings);
            let mut b = a.clone();
            b.update_with(
                &limits,
                &VersionVector::new(),
                &ids[nodes - 1],
                vec![7u8; 64],
            )
            .expect("under the cap");
            group.bench_with_input(
                BenchmarkId::new(format!("{nodes}n"), format!("{siblings}s")),
                &(a, b),
                |bench, (a, b)| {
                    bench.iter_batched(
                        || a.clone(),
                        |mut a| {
                            a.merge(black_box(b));
                            a
                        },
                        BatchSize::SmallInput,
                    )
                },
            );
        }
    }
    group.finish();
}

fn hlc(c: &mut Criterion) {
    let mut group = c.benchmark_group("hlc");
    let mut clock = Hlc::new("n1", Duration::from_millis(500));
    let mut now = 1_700_000_000_000u64;
    group.bench_function("tick", |b| {
        b.iter(|| {
            // Physical time advances every 4th call: both branches run.
            now += u64::from(now % 4 == 0);
            clock.tick(black_box(now))
        })
    });
    let mut clock = Hlc::new("n1", Duration::from_millis(500));
    let mut remote = Timestamp::new(1_700_000_000_000, 0, "n2");
    group.bench_function("observe", |b| {
        b.iter(|| {
            remote.physical_ms += 1;
            clock.observe(black_box(remote.physical_ms - 1), black_box(&remote))
        })
    });
    group.finish();
}

fn orset(c: &mut Criterion) {
    let mut group = c.benchmark_group("orset/merge");
    let mut a = OrSet::new();
    for i in 0..10_000u64 {
        a.add("n1", i);
    }
    let mut b = a.clone();
    for i in 0..100u64 {
        b.remove(&(i * 97));
        b.add("n2", 10_000 + i);
    }
    a.add("n1", 20_000);
    group.bench_function("10000", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut a| {
                a.merge(black_box(&b));
                a
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The benchmark group (what `criterion_group!` generates, written out so
/// it needs no `pub` item without docs).
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    dvvset(&mut criterion);
    hlc(&mut criterion);
    orset(&mut criterion);
}

criterion_main!(benches);
