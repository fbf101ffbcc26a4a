//! The in-memory index over the log (Bitcask style): the latest location and
//! metadata of every key, plus the table of segments and the snapshot.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::backend::BackendFile;
use crate::error::{corrupt, io_err, Error};
use crate::format::{parse_frame, Frame, SnapshotEntry};
use crate::record::{LogPosition, Mutation, RecordMeta};
use crate::recovery::decode_record;

/// Which file holds a key's latest frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loc {
    /// The segment whose first index is this.
    Segment(u64),
    /// The current snapshot.
    Snapshot,
}

/// The index entry of one key.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) meta: RecordMeta,
    pub(crate) tombstone: bool,
    pub(crate) loc: Loc,
    /// Offset of the frame (its length field) in the file.
    pub(crate) offset: u64,
    /// Whole frame length, header included.
    pub(crate) frame_len: u64,
}

/// One segment file.
pub(crate) struct SegmentInfo {
    pub(crate) name: String,
    pub(crate) file: Arc<dyn BackendFile>,
    pub(crate) first: u64,
    /// Frame offsets of records `first`, `first + 1`, ...
    pub(crate) offsets: Vec<u64>,
    /// Bytes in use: header plus every frame.
    pub(crate) len: u64,
    /// Position of the last record, if any.
    pub(crate) last: Option<LogPosition>,
    /// Bytes of frames superseded by later records.
    pub(crate) garbage: u64,
}

impl SegmentInfo {
    /// Byte range of the frame of record `index`, which must be in this segment.
    pub(crate) fn frame_range(&self, index: u64) -> (u64, u64) {
        let i = (index - self.first) as usize;
        let start = self.offsets[i];
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.len);
        (start, end)
    }
}

/// The current snapshot file.
pub(crate) struct SnapshotInfo {
    pub(crate) name: String,
    pub(crate) file: Arc<dyn BackendFile>,
    pub(crate) floor: LogPosition,
    pub(crate) len: u64,
    pub(crate) garbage: u64,
}

/// Everything readers need, behind the store's `RwLock`.
pub(crate) struct State {
    pub(crate) index: BTreeMap<Vec<u8>, Slot>,
    pub(crate) segments: BTreeMap<u64, SegmentInfo>,
    pub(crate) snapshot: Option<SnapshotInfo>,
    /// First index of the segment appends go to, if one is open.
    pub(crate) active_first: Option<u64>,
    pub(crate) last: LogPosition,
    pub(crate) live_keys: usize,
}

impl State {
    pub(crate) fn new() -> State {
        State {
            index: BTreeMap::new(),
            segments: BTreeMap::new(),
            snapshot: None,
            active_first: None,
            last: LogPosition::default(),
            live_keys: 0,
        }
    }

    /// The compaction floor: the last position folded into the snapshot.
    pub(crate) fn floor(&self) -> LogPosition {
        self.snapshot.as_ref().map(|s| s.floor).unwrap_or_default()
    }

    /// Records `slot` as the latest state of `key`, charging the frame it
    /// replaces to its file's garbage.
    pub(crate) fn apply(&mut self, key: Vec<u8>, slot: Slot) {
        let live = !slot.tombstone;
        if let Some(old) = self.index.insert(key, slot) {
            if !old.tombstone {
                self.live_keys -= 1;
            }
            match old.loc {
                Loc::Segment(first) => {
                    if let Some(seg) = self.segments.get_mut(&first) {
                        seg.garbage += old.frame_len;
                    }
                }
                Loc::Snapshot => {
                    if let Some(snap) = self.snapshot.as_mut() {
                        snap.garbage += old.frame_len;
                    }
                }
            }
        }
        if live {
            self.live_keys += 1;
        }
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum::<u64>()
            + self.snapshot.as_ref().map_or(0, |s| s.len)
    }

    pub(crate) fn garbage_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.garbage).sum::<u64>()
            + self.snapshot.as_ref().map_or(0, |s| s.garbage)
    }

    /// Whether automatic compaction would reclaim enough: garbage in closed
    /// segments and the snapshot of at least `min_bytes` and at least `ratio`
    /// of their size.
    pub(crate) fn wants_compaction(&self, min_bytes: u64, ratio: f64) -> bool {
        let mut sealed = false;
        let mut bytes = self.snapshot.as_ref().map_or(0, |s| s.len);
        let mut garbage = self.snapshot.as_ref().map_or(0, |s| s.garbage);
        for seg in self.segments.values() {
            if Some(seg.first) != self.active_first {
                sealed = true;
                bytes += seg.len;
                garbage += seg.garbage;
            }
        }
        sealed && garbage >= min_bytes && garbage as f64 >= ratio * bytes as f64
    }
}

/// Reads the frame of `frame_len` bytes at `offset` of `file` and returns
/// the value in it: `None` for a delete or a tombstone. `loc` says what the
/// file is (a log segment or a snapshot); `path` names it in errors.
///
/// The frame must hold `expect`'s key at its
/// `position` (a snapshot entry: the position of the record that wrote
/// it), or the read fails with [`Error::IndexMismatch`]: a checksum only
/// shows the frame is intact, not that it is the one the index meant.
pub(crate) fn read_value_at(
    file: &dyn BackendFile,
    path: &Path,
    loc: Loc,
    offset: u64,
    frame_len: u64,
    expect: (&[u8], LogPosition),
) -> Result<Option<Vec<u8>>, Error> {
    let mut buf = vec![0u8; frame_len as usize];
    file.read_at(&mut buf, offset)
        .map_err(io_err("read value", path.to_path_buf()))?;
    let payload = match parse_frame(&buf, 0) {
        Frame::Ok { payload, .. } => payload,
        bad => return Err(corrupt(path.to_path_buf(), offset, bad.describe())),
    };
    let (key, position, value) = match loc {
        Loc::Segment(_) => {
            let record =
                decode_record(payload).map_err(|r| corrupt(path.to_path_buf(), offset, r))?;
            let position = record.meta.position;
            match record.mutation {
                Mutation::Put { key, value } => (key, position, Some(value)),
                Mutation::Delete { key } => (key, position, None),
            }
        }
        Loc::Snapshot => {
            let entry = postcard::from_bytes::<SnapshotEntry>(payload).map_err(|e| {
                corrupt(
                    path.to_path_buf(),
                    offset,
                    format!("snapshot entry does not decode: {e}"),
                )
            })?;
            (entry.key, entry.meta.position, entry.value)
        }
    };
    let (want_key, want_position) = expect;
    if key != want_key || position != want_position {
        let describe = |key: &[u8], p: LogPosition| {
            format!(
                "key {:?} at log position {}:{}",
                String::from_utf8_lossy(key),
                p.term,
                p.index
            )
        };
        return Err(Error::IndexMismatch {
            path: path.to_path_buf(),
            offset,
            expected: describe(want_key, want_position),
            found: describe(&key, position),
        });
    }
    Ok(value)
}
