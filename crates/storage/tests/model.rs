//! Invariant: the store behaves like a log plus a `BTreeMap` folded over it.
//!
//! Random sequences of appends (puts, deletes, batches), acknowledgements,
//! truncations, compactions, clean reopens and power cuts run against the
//! store and against a model: the list of records appended. After every
//! operation the store's state, log and positions must match the model.
//! After a power cut (on the simulated disk) the log must be a prefix of
//! the model's that keeps at least every acknowledged record: under
//! `always` every appended one, under `batch` every one `wait_durable`
//! returned for, and under any mode everything `durable_index` reported.
//!
//! Background compaction may run at any time, so the compaction floor is
//! read from the store; the model checks that it only moves forward and
//! that the log below it answers `Compacted`.

mod common;

use std::sync::Arc;

use mimeo_storage::sim::{SimBackend, Unsynced};
use mimeo_storage::{Backend, Error, FsBackend, FsyncMode, Mutation, Options, Record, Store};
use proptest::prelude::*;

use common::{assert_state, fold, record};

const KEYS: u8 = 6;

#[derive(Clone, Debug)]
enum Op {
    /// One append of one or more mutations; `ack` waits for durability.
    Append {
        writes: Vec<(u8, Option<Vec<u8>>)>,
        ack: bool,
    },
    /// `truncate_from(last + 1 - back)`.
    Truncate {
        back: u8,
    },
    Compact,
    Sync,
    Reopen,
    PowerCut {
        torn: Option<u64>,
    },
}

fn op(power_cuts: bool) -> impl Strategy<Value = Op> {
    let write = (
        0..KEYS,
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..48)),
    );
    let cut = if power_cuts { 2 } else { 0 };
    prop_oneof![
        12 => (prop::collection::vec(write, 1..4), any::<bool>())
            .prop_map(|(writes, ack)| Op::Append { writes, ack }),
        2 => (0u8..6).prop_map(|back| Op::Truncate { back }),
        1 => Just(Op::Compact),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        cut => prop::option::of(any::<u64>()).prop_map(|torn| Op::PowerCut { torn }),
    ]
}

fn options(segment_bytes: Vec<u64>) -> impl Strategy<Value = Options> {
    (
        prop::sample::select(FsyncMode::ALL.to_vec()),
        prop::sample::select(segment_bytes),
        prop::sample::select(vec![u64::MAX, 300, 0]),
        prop::sample::select(vec![0, 100, 1 << 20]),
    )
        .prop_map(
            |(fsync, segment_bytes, compact_min_bytes, preallocate_bytes)| Options {
                fsync,
                segment_bytes,
                compact_min_garbage_ratio: 0.3,
                compact_min_bytes,
                preallocate_bytes,
            },
        )
}

/// Where the store under test keeps its files.
enum Disk {
    Sim(Arc<SimBackend>),
    Fs {
        backend: Arc<FsBackend>,
        /// Removes the directory when the test ends.
        _dir: tempfile::TempDir,
    },
}

impl Disk {
    fn backend(&self) -> Arc<dyn Backend> {
        match self {
            Disk::Sim(sim) => sim.clone(),
            Disk::Fs { backend, .. } => backend.clone(),
        }
    }
}

struct Harness {
    disk: Disk,
    options: Options,
    store: Option<Store>,
    /// Every record in the log, from index 1 (compacted ones included).
    log: Vec<Record>,
    /// Records up to here must survive a power cut.
    acked: u64,
    /// The compaction floor last seen.
    floor: u64,
    term: u64,
}

impl Harness {
    fn new(disk: Disk, options: Options) -> Harness {
        let store = Store::open_with_backend(disk.backend(), options.clone()).unwrap();
        Harness {
            disk,
            options,
            store: Some(store),
            log: Vec::new(),
            acked: 0,
            floor: 0,
            term: 1,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn last(&self) -> u64 {
        self.log.len() as u64
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { writes, ack } => {
                let first = self.last() + 1;
                let records: Vec<Record> = writes
                    .iter()
                    .enumerate()
                    .map(|(i, (key, value))| {
                        let key = format!("k{key}").into_bytes();
                        let mutation = match value {
                            Some(value) => Mutation::Put {
                                key,
                                value: value.clone(),
                            },
                            None => Mutation::Delete { key },
                        };
                        record(self.term, first + i as u64, mutation)
                    })
                    .collect();
                let last = self.store().append(&records).unwrap();
                assert_eq!(last, records.last().unwrap().meta.position);
                self.log.extend(records);
                match self.options.fsync {
                    FsyncMode::Always => {
                        assert!(self.store().durable_index() >= last.index);
                        self.acked = last.index;
                    }
                    FsyncMode::Batch if *ack => {
                        self.store().wait_durable(last.index).unwrap();
                        assert!(self.store().durable_index() >= last.index);
                        self.acked = last.index;
                    }
                    _ => self.store().wait_durable(last.index).unwrap(),
                }
            }
            Op::Truncate { back } => {
                let from = (self.last() + 1).saturating_sub(u64::from(*back));
                match self.store().truncate_from(from) {
                    Ok(removed) => {
                        let keep = from.max(1) - 1;
                        assert_eq!(removed, self.last().saturating_sub(keep));
                        if removed > 0 {
                            self.log.truncate(keep as usize);
                            // Everything left is durable.
                            self.acked = self.last();
                        }
                        // A new leader continues the log.
                        self.term += 1;
                    }
                    Err(Error::Compacted {
                        requested,
                        first_available,
                    }) => {
                        assert_eq!(requested, from);
                        assert!(from < first_available, "{from} >= {first_available}");
                    }
                    Err(e) => panic!("truncate_from({from}): {e}"),
                }
            }
            Op::Compact => {
                let stats = self.store().compact().unwrap();
                assert_eq!(stats.floor.index, self.last());
                assert_eq!(self.store().first_index(), self.last() + 1);
                self.acked = self.last();
            }
            Op::Sync => {
                self.store().sync().unwrap();
                assert_eq!(self.store().durable_index(), self.last());
                self.acked = self.last();
            }
            Op::Reopen => {
                drop(self.store.take());
                self.store = Some(
                    Store::open_with_backend(self.disk.backend(), self.options.clone()).unwrap(),
                );
                assert_eq!(self.store().stats().truncated_tail_bytes_at_open, 0);
                assert_eq!(self.store().durable_index(), self.last());
            }
            Op::PowerCut { torn } => {
                let Disk::Sim(sim) = &self.disk else {
                    unreachable!("power cuts only run on the simulated disk")
                };
                let durable = self.store().durable_index().max(self.acked);
                let unsynced = match torn {
                    Some(seed) => Unsynced::Torn { seed: *seed },
                    None => Unsynced::Lost,
                };
                let rebooted = Arc::new(sim.reboot(unsynced));
                drop(self.store.take());
                self.disk = Disk::Sim(rebooted);
                self.store = Some(
                    Store::open_with_backend(self.disk.backend(), self.options.clone()).unwrap(),
                );
                let survived = self.store().last_position().index;
                assert!(
                    durable <= survived && survived <= self.last(),
                    "after a power cut the log ends at {survived}; it must keep every durable record (up to {durable}) and invent none (the model ends at {})",
                    self.last()
                );
                self.log.truncate(survived as usize);
                self.acked = survived;
            }
        }
        self.check(op);
    }

    fn check(&mut self, op: &Op) {
        let context = format!("after {op:?}");
        let store = self.store();
        let last = self.log.last().map(|r| r.meta.position).unwrap_or_default();
        let floor = store.first_index() - 1;
        assert!(
            floor >= self.floor,
            "{context}: the floor moved back from {} to {floor}",
            self.floor
        );
        assert!(
            floor <= self.last(),
            "{context}: floor {floor} past the log"
        );
        // Compaction does not move the end of the log.
        assert_eq!(store.last_position(), last, "{context}");
        assert_state(store, &fold(&self.log), &context);

        // The log from a few indexes: the records, or Compacted below the
        // floor (which background compaction may raise meanwhile).
        let mut froms = vec![
            0,
            1,
            floor,
            floor + 1,
            self.last() / 2,
            self.last(),
            self.last() + 1,
        ];
        froms.dedup();
        for from in froms {
            match store.read_log(from, 1000) {
                Ok(records) => assert_eq!(
                    records,
                    self.log[from.max(1) as usize - 1..],
                    "{context}: read_log({from})"
                ),
                Err(Error::Compacted {
                    first_available, ..
                }) => assert!(from < first_available, "{context}: read_log({from})"),
                Err(e) => panic!("{context}: read_log({from}): {e}"),
            }
        }
        let stats = store.stats();
        assert_eq!(stats.last_position.index, store.last_position().index);
        assert!(stats.durable_index <= self.last());
        self.floor = store.first_index() - 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// On the simulated disk, with power cuts.
    #[test]
    fn store_matches_the_model_across_power_cuts(
        options in options(vec![200, 600, 4096]),
        ops in prop::collection::vec(op(true), 1..60),
    ) {
        let mut harness = Harness::new(Disk::Sim(Arc::new(SimBackend::new())), options);
        for op in &ops {
            harness.apply(op);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// On the real file system, with clean reopens (fewer cases and larger
    /// segments: every segment costs real fsyncs).
    #[test]
    fn store_matches_the_model_on_the_file_system(
        options in options(vec![1000, 1 << 20]),
        ops in prop::collection::vec(op(false), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(FsBackend::new(dir.path()).unwrap());
        let mut harness = Harness::new(Disk::Fs { backend: fs, _dir: dir }, options);
        for op in &ops {
            harness.apply(op);
        }
    }
}
