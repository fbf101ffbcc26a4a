//! Atomic batches: records that reach the log together, closed by a
//! commit record.
//!
//! An [`append`](Store::append) is not atomic across a crash: the store
//! keeps a prefix of it (torn frames at the tail are dropped on open). A
//! replicator that must change several keys together (a key's state and
//! its metadata, a write and the vector it leads to) ends each batch with
//! a *commit record*: a put of one fixed key (the commit key) whose value
//! says what the batch leads to. On start-up it drops every record after
//! the last commit record, so the store holds whole batches only.
//!
//! - [`CommitBatch`] numbers the records of one batch from a log index and
//!   [`seals`](CommitBatch::seal) it with the commit record, last;
//! - [`Store::append_committed`] appends a [`SealedBatch`] in one append;
//! - [`Store::recover_committed`] drops a batch a crash cut short and
//!   shows the caller every record it keeps, and the latest commit record.
//!
//! Records below the compaction floor are taken to be whole batches: the
//! caller compacts ([`Store::discard_before`], [`Store::compact`]) only
//! after a batch's commit record is durable, and keeps automatic
//! compaction off (it could fold part of a batch whose commit record a
//! crash then loses).
//!
//! The records are ordinary records: this module adds no byte to the
//! format (term 0, an empty `version`, the caller's `origin` and `seq`).

use crate::error::Error;
use crate::record::{Entry, LogPosition, Mutation, Record, RecordMeta};
use crate::store::Store;

/// Records read per call while [`Store::recover_committed`] walks the log.
const RECOVERY_READ_RECORDS: usize = 256;

/// The records of one batch being built, numbered from a log index; close
/// it with [`seal`](CommitBatch::seal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitBatch {
    commit_key: Vec<u8>,
    next: u64,
    records: Vec<Record>,
}

impl CommitBatch {
    /// An empty batch whose first record gets log index `first` and whose
    /// commit record is a put of `commit_key`. In a writer that is the
    /// store's only appender, `first` is `store.last_position().index + 1`
    /// ([`Store::begin_committed`]).
    pub fn new(commit_key: &[u8], first: u64) -> CommitBatch {
        CommitBatch {
            commit_key: commit_key.to_vec(),
            next: first,
            records: Vec::new(),
        }
    }

    /// Room for `records` records (the commit record included).
    pub fn with_capacity(mut self, records: usize) -> CommitBatch {
        self.records.reserve(records);
        self
    }

    /// Adds a record of `mutation` with the replicator's `origin` and
    /// `seq` (0 for none) and returns its log index.
    ///
    /// # Panics
    ///
    /// If `mutation` touches the commit key: only [`seal`](Self::seal)
    /// writes it.
    pub fn push(&mut self, origin: u64, seq: u64, mutation: Mutation) -> u64 {
        assert!(
            mutation.key() != self.commit_key.as_slice(),
            "a batch's records must not touch its commit key {:?}",
            String::from_utf8_lossy(&self.commit_key)
        );
        self.place(origin, seq, mutation)
    }

    fn place(&mut self, origin: u64, seq: u64, mutation: Mutation) -> u64 {
        let index = self.next;
        self.records.push(Record {
            meta: RecordMeta {
                position: LogPosition::new(0, index),
                origin,
                seq,
                version: Vec::new(),
            },
            mutation,
        });
        self.next += 1;
        index
    }

    /// Closes the batch with its commit record: a put of the commit key to
    /// `commit`, last.
    pub fn seal(mut self, commit: Vec<u8>) -> SealedBatch {
        let key = std::mem::take(&mut self.commit_key);
        self.place(0, 0, Mutation::Put { key, value: commit });
        SealedBatch {
            records: self.records,
        }
    }
}

/// A batch closed by its commit record, ready for
/// [`Store::append_committed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedBatch {
    records: Vec<Record>,
}

impl SealedBatch {
    /// The records, the commit record last.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The log index of the commit record.
    pub fn commit_index(&self) -> u64 {
        self.records
            .last()
            .expect("a sealed batch holds its commit record")
            .meta
            .position
            .index
    }
}

/// What [`Store::recover_committed`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitRecovery {
    /// The log index of the last commit record in the log, or the
    /// compaction floor when the log above it holds none.
    pub last_commit: u64,
    /// Records dropped after it: a batch a crash cut short.
    pub dropped: u64,
    /// The latest commit record (from the log or from the snapshot);
    /// `None` if none was ever written.
    pub commit: Option<Entry>,
}

impl Store {
    /// An empty [`CommitBatch`] that continues the log. Only right when
    /// nothing else appends until it is appended (one writer thread).
    pub fn begin_committed(&self, commit_key: &[u8]) -> CommitBatch {
        CommitBatch::new(commit_key, self.last_position().index + 1)
    }

    /// Appends `batch`, its commit record last, in one
    /// [`append`](Store::append) (same durability, errors and poisoning).
    /// A crash may keep only a prefix of it;
    /// [`recover_committed`](Store::recover_committed) then drops that
    /// prefix.
    pub fn append_committed(&self, batch: &SealedBatch) -> Result<LogPosition, Error> {
        self.append(batch.records())
    }

    /// Start-up for a log of atomic batches committed by `commit_key`:
    /// drops every record after the last commit record
    /// ([`truncate_from`](Store::truncate_from), which brings back the
    /// older state of the keys they changed), so the store holds whole
    /// batches only, and returns the latest commit record.
    ///
    /// Calls `visit` with every record it keeps, in log order, commit
    /// records included: records of a batch are held back until its
    /// commit record is read (memory: one batch), so `visit` never sees a
    /// record that is then dropped. Records below the compaction floor are
    /// not visited (they are folded into the snapshot; [`get`](Store::get)
    /// and [`scan`](Store::scan) read them).
    pub fn recover_committed(
        &self,
        commit_key: &[u8],
        mut visit: impl FnMut(&Record),
    ) -> Result<CommitRecovery, Error> {
        let mut last_commit = self.first_index() - 1;
        let mut uncommitted: Vec<Record> = Vec::new();
        let mut next = self.first_index();
        let last = self.last_position().index;
        while next <= last {
            let records = self.read_log(next, RECOVERY_READ_RECORDS)?;
            if records.is_empty() {
                break;
            }
            next += records.len() as u64;
            for record in records {
                if record.mutation.key() == commit_key {
                    last_commit = record.meta.position.index;
                    uncommitted.drain(..).for_each(|r| visit(&r));
                    visit(&record);
                } else {
                    uncommitted.push(record);
                }
            }
        }
        let mut dropped = 0;
        if last > last_commit {
            tracing::warn!(
                dropped = last - last_commit,
                from = last_commit + 1,
                "dropping the records of a batch a crash cut short (no commit record after them)"
            );
            dropped = self.truncate_from(last_commit + 1)?;
        }
        Ok(CommitRecovery {
            last_commit,
            dropped,
            commit: self.get(commit_key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sim::{SimBackend, Unsynced};
    use crate::{FsyncMode, Options};

    const COMMIT: &[u8] = b"m";

    fn options() -> Options {
        Options {
            fsync: FsyncMode::Never,
            segment_bytes: 1 << 20,
            compact_min_bytes: u64::MAX,
            ..Options::default()
        }
    }

    /// Batch `n`: `keys` puts of 200-byte values (so an append spans
    /// several 512-byte sectors and a power cut can tear it), then the
    /// commit record holding `n`.
    fn batch(store: &Store, n: u8, keys: u8) -> SealedBatch {
        let mut batch = store.begin_committed(COMMIT);
        for k in 0..keys {
            batch.push(
                u64::from(n),
                u64::from(k),
                Mutation::Put {
                    key: vec![b'k', k],
                    value: vec![n; 200],
                },
            );
        }
        batch.seal(vec![n])
    }

    #[test]
    fn a_batch_is_numbered_from_its_first_index_and_ends_with_its_commit_record() {
        let mut batch = CommitBatch::new(COMMIT, 7).with_capacity(3);
        assert_eq!(batch.push(2, 5, Mutation::Delete { key: b"a".to_vec() }), 7);
        assert_eq!(batch.push(0, 0, Mutation::Delete { key: b"b".to_vec() }), 8);
        let sealed = batch.seal(b"c".to_vec());
        assert_eq!(sealed.commit_index(), 9);
        let meta = |index, origin, seq| RecordMeta {
            position: LogPosition::new(0, index),
            origin,
            seq,
            version: Vec::new(),
        };
        assert_eq!(
            sealed.records(),
            [
                Record {
                    meta: meta(7, 2, 5),
                    mutation: Mutation::Delete { key: b"a".to_vec() },
                },
                Record {
                    meta: meta(8, 0, 0),
                    mutation: Mutation::Delete { key: b"b".to_vec() },
                },
                Record {
                    meta: meta(9, 0, 0),
                    mutation: Mutation::Put {
                        key: COMMIT.to_vec(),
                        value: b"c".to_vec(),
                    },
                },
            ]
        );
    }

    #[test]
    #[should_panic(expected = "must not touch its commit key")]
    fn a_record_of_the_commit_key_is_refused() {
        CommitBatch::new(COMMIT, 1).push(
            0,
            0,
            Mutation::Delete {
                key: COMMIT.to_vec(),
            },
        );
    }

    #[test]
    fn recovery_drops_a_batch_cut_before_its_commit_record() {
        let disk = Arc::new(SimBackend::new());
        let store = Store::open_with_backend(disk.clone(), options()).unwrap();
        let first = batch(&store, 1, 3);
        store.append_committed(&first).unwrap();
        let second = batch(&store, 2, 3);
        let torn = &second.records()[..second.records().len() - 1];
        store.append(torn).unwrap();
        store.sync().unwrap();
        drop(store);

        let store =
            Store::open_with_backend(Arc::new(disk.reboot(Unsynced::Lost)), options()).unwrap();
        assert_eq!(store.last_position().index, 7, "the torn batch is on disk");
        let mut seen = Vec::new();
        let found = store
            .recover_committed(COMMIT, |r| seen.push(r.clone()))
            .unwrap();
        assert_eq!(found.last_commit, 4);
        assert_eq!(found.dropped, 3);
        assert_eq!(found.commit.unwrap().value, Some(vec![1]));
        assert_eq!(seen, first.records(), "only the whole batch is visited");
        assert_eq!(store.last_position().index, 4);
        assert_eq!(
            store.get(b"k\x00").unwrap().unwrap().value,
            Some(vec![1; 200])
        );
        // Appends go on from the last whole batch.
        store.append_committed(&batch(&store, 3, 1)).unwrap();
        assert_eq!(store.last_position().index, 6);
    }

    #[test]
    fn an_empty_log_and_a_compacted_one_recover_from_the_floor() {
        let store = Store::open_with_backend(Arc::new(SimBackend::new()), options()).unwrap();
        let found = store.recover_committed(COMMIT, |_| panic!()).unwrap();
        assert_eq!(
            (found.last_commit, found.dropped, found.commit),
            (0, 0, None)
        );

        store.append_committed(&batch(&store, 1, 2)).unwrap();
        store.compact().unwrap();
        assert_eq!(store.first_index(), 4, "the batch is in the snapshot");
        let found = store.recover_committed(COMMIT, |_| panic!()).unwrap();
        assert_eq!((found.last_commit, found.dropped), (3, 0));
        assert_eq!(found.commit.unwrap().meta.position.index, 3);
    }

    /// A power cut in the middle of a batch's append (the disk keeps a
    /// random, possibly torn part of what was not fsynced): after
    /// recovery the store holds whole batches only, whatever survived.
    /// Without the truncation some seed leaves part of the second batch.
    #[test]
    fn after_a_power_cut_during_an_append_only_whole_batches_remain() {
        let mut partial_seen = 0;
        for seed in 0..64 {
            let disk = Arc::new(SimBackend::new());
            let store = Store::open_with_backend(disk.clone(), options()).unwrap();
            let first = batch(&store, 1, 4);
            store.append_committed(&first).unwrap();
            store.sync().unwrap();
            let second = batch(&store, 2, 4);
            store.append_committed(&second).unwrap(); // never fsynced
            drop(store);

            let disk = Arc::new(disk.reboot(Unsynced::Torn { seed }));
            let store = Store::open_with_backend(disk, options()).unwrap();
            let survived = store.last_position().index;
            if survived != 5 && survived != 10 {
                partial_seen += 1;
            }
            let mut seen = Vec::new();
            let found = store
                .recover_committed(COMMIT, |r| seen.push(r.clone()))
                .unwrap();
            let whole = if found.last_commit == 10 {
                [first.records(), second.records()].concat()
            } else {
                first.records().to_vec()
            };
            assert_eq!(seen, whole, "seed {seed}");
            assert_eq!(
                store.last_position().index,
                found.last_commit,
                "seed {seed}"
            );
            let n = found.commit.unwrap().value.unwrap()[0];
            for k in 0..4u8 {
                let value = store.get(&[b'k', k]).unwrap().unwrap().value;
                assert_eq!(value, Some(vec![n; 200]), "seed {seed}: key {k}");
            }
        }
        assert!(
            partial_seen > 0,
            "no seed kept part of a batch: the test would not see a missing truncation"
        );
    }
}
