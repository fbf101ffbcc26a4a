//! Rebuilding the in-memory state from the files on disk: at open, and after
//! a truncation.

use std::path::Path;
use std::sync::Arc;

use crate::backend::{Backend, BackendFile};
use crate::error::{corrupt, io_err, Error};
use crate::format::{
    classify, decode_segment_header, decode_snapshot_header, parse_frame, segment_name,
    snapshot_name, split_log_payload, FileKind, Frame, FrameReader, ReadFrame, SnapshotEntry,
    SnapshotHeader, FILLER, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, SNAPSHOT_HEADER_LEN,
    SYNCED_THROUGH_LEN,
};
use crate::record::{LogPosition, Mutation, Record};
use crate::state::{Loc, SegmentInfo, Slot, SnapshotInfo, State};

/// The segment appends go to.
pub(crate) struct Active {
    pub(crate) first: u64,
    pub(crate) name: String,
    pub(crate) file: Arc<dyn BackendFile>,
    /// Bytes in use: header plus every frame.
    pub(crate) len: u64,
    /// The file's length: `len` plus the filler written ahead of the
    /// records ([`Options::preallocate_bytes`](crate::Options::preallocate_bytes)).
    pub(crate) allocated: u64,
    pub(crate) records: u64,
    /// What is written ahead of the records: [`FILLER`] in a version 2
    /// segment, zeros in a version 1 segment (which keeps its format).
    pub(crate) filler: u8,
}

/// The result of [`load`].
pub(crate) struct Loaded {
    pub(crate) state: State,
    pub(crate) active: Option<Active>,
    pub(crate) truncated_tail_bytes: u64,
}

fn remove(backend: &dyn Backend, name: &str, why: &str) -> Result<(), Error> {
    tracing::info!(file = %backend.path(name).display(), "removing {why}");
    backend
        .remove(name)
        .map_err(io_err("remove file", backend.path(name)))
}

fn file_len(file: &dyn BackendFile, path: &Path) -> Result<u64, Error> {
    file.len().map_err(io_err("stat file", path.to_path_buf()))
}

/// Loads the newest snapshot and replays the segments after it. Removes
/// leftovers of interrupted operations (temporary files, superseded
/// snapshots, segments a snapshot covers) and truncates a torn write at the
/// tail of the last segment. Refuses, with [`Error::Corrupt`], anything else
/// that is damaged or missing.
pub(crate) fn load(backend: &dyn Backend) -> Result<Loaded, Error> {
    load_vouched(backend, 0)
}

/// Like [`load`], knowing that every record up to `vouched` had been
/// fsynced (the synced-through file of a poisoned store): damage or the
/// end of the log at or below it is corruption, never a torn write.
pub(crate) fn load_vouched(backend: &dyn Backend, vouched: u64) -> Result<Loaded, Error> {
    let names = backend
        .list()
        .map_err(io_err("list data directory", backend.path("")))?;
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    let mut dir_changed = false;
    for name in names {
        match classify(&name) {
            FileKind::Segment(first) => segments.push(first),
            FileKind::Snapshot(floor) => snapshots.push(floor),
            FileKind::Temp => {
                remove(backend, &name, "an unfinished temporary file")?;
                dir_changed = true;
            }
            FileKind::Other => {}
        }
    }
    segments.sort_unstable();
    snapshots.sort_unstable();

    let mut state = State::new();
    if let Some((&newest, older)) = snapshots.split_last() {
        load_snapshot(backend, newest, &mut state)?;
        for &old in older {
            remove(backend, &snapshot_name(old), "a superseded snapshot")?;
            dir_changed = true;
        }
    }
    let floor = state.floor();

    // The base segment is the newest one starting at or before floor + 1;
    // the ones before it hold only records the snapshot covers (compaction
    // was interrupted before removing them).
    let base = match segments.iter().rposition(|&f| f <= floor.index + 1) {
        Some(base) => base,
        None if segments.is_empty() => 0,
        None => {
            let first = segments[0];
            let covered = if floor.index == 0 {
                "there is no snapshot, so it must start at index 1".to_owned()
            } else {
                format!("the snapshot only covers up to index {}", floor.index)
            };
            return Err(corrupt(
                backend.path(&segment_name(first)),
                0,
                format!("the log starts at index {first} but {covered}; a segment file is missing"),
            ));
        }
    };
    for &first in &segments[..base] {
        remove(
            backend,
            &segment_name(first),
            "a segment covered by the snapshot",
        )?;
        dir_changed = true;
    }

    let live = &segments[base..];
    let mut truncated_tail_bytes = 0;
    let mut active = None;
    for (i, &first) in live.iter().enumerate() {
        let is_last = i + 1 == live.len();
        let expected = state.last.index + 1;
        if i > 0 && first != expected {
            return Err(corrupt(
                backend.path(&segment_name(first)),
                0,
                format!(
                    "segment starts at index {first} but the log before it ends at index {}; a segment file is missing",
                    expected - 1
                ),
            ));
        }
        match replay_segment(backend, first, is_last, vouched, &mut state)? {
            Replayed::Kept { active: a, torn } => {
                truncated_tail_bytes += torn;
                active = Some(a);
            }
            Replayed::Covered => {
                remove(
                    backend,
                    &segment_name(first),
                    "a segment covered by the snapshot",
                )?;
                dir_changed = true;
            }
            Replayed::TornCreation { bytes } => {
                truncated_tail_bytes += bytes;
                dir_changed = true;
            }
        }
    }
    state.active_first = active.as_ref().map(|a| a.first);
    if dir_changed {
        backend
            .sync_dir()
            .map_err(io_err("fsync data directory", backend.path("")))?;
    }
    Ok(Loaded {
        state,
        active,
        truncated_tail_bytes,
    })
}

fn load_snapshot(backend: &dyn Backend, floor: u64, state: &mut State) -> Result<(), Error> {
    let name = snapshot_name(floor);
    let path = backend.path(&name);
    let file = backend
        .open(&name)
        .map_err(io_err("open snapshot", path.clone()))?;
    let mut previous: Option<Vec<u8>> = None;
    let (header, len) = read_snapshot(&*file, &path, |offset, frame_len, entry| {
        if previous.as_ref().is_some_and(|p| *p >= entry.key) {
            return Err(corrupt(
                path.clone(),
                offset,
                "snapshot keys are not in strictly increasing order",
            ));
        }
        previous = Some(entry.key.clone());
        state.apply(
            entry.key,
            Slot {
                meta: entry.meta,
                tombstone: entry.value.is_none(),
                loc: Loc::Snapshot,
                offset,
                frame_len,
            },
        );
        Ok(())
    })?;
    if header.floor.index != floor {
        return Err(corrupt(
            path,
            0,
            format!(
                "snapshot header says it covers up to index {} but its name says {floor}",
                header.floor.index
            ),
        ));
    }
    state.snapshot = Some(SnapshotInfo {
        name,
        file,
        floor: header.floor,
        len,
        garbage: 0,
    });
    state.last = header.floor;
    Ok(())
}

/// Streams the entries of a snapshot file to `each` (with the offset and
/// length of their frames), checking every frame. Returns the header and
/// the file's length.
pub(crate) fn read_snapshot(
    file: &dyn BackendFile,
    path: &Path,
    mut each: impl FnMut(u64, u64, SnapshotEntry) -> Result<(), Error>,
) -> Result<(SnapshotHeader, u64), Error> {
    let len = file_len(file, path)?;
    if len < SNAPSHOT_HEADER_LEN {
        return Err(corrupt(
            path.to_path_buf(),
            0,
            format!("snapshot is {len} bytes, shorter than its {SNAPSHOT_HEADER_LEN}-byte header"),
        ));
    }
    let mut header = [0u8; SNAPSHOT_HEADER_LEN as usize];
    file.read_at(&mut header, 0)
        .map_err(io_err("read snapshot", path.to_path_buf()))?;
    let header = decode_snapshot_header(&header).map_err(|r| corrupt(path.to_path_buf(), 0, r))?;
    let mut reader = FrameReader::new(file, len, SNAPSHOT_HEADER_LEN);
    for _ in 0..header.entries {
        let offset = reader.position();
        let payload = match reader
            .next_frame()
            .map_err(io_err("read snapshot", path.to_path_buf()))?
        {
            ReadFrame::Ok(payload) => payload,
            ReadFrame::End => {
                return Err(corrupt(
                    path.to_path_buf(),
                    offset,
                    format!(
                        "the snapshot ends before its last entry (its header promises {})",
                        header.entries
                    ),
                ))
            }
            ReadFrame::Bad(bad) => return Err(corrupt(path.to_path_buf(), offset, bad.describe())),
        };
        let entry: SnapshotEntry = postcard::from_bytes(payload).map_err(|e| {
            corrupt(
                path.to_path_buf(),
                offset,
                format!("snapshot entry does not decode although its checksum matches: {e}"),
            )
        })?;
        each(offset, reader.position() - offset, entry)?;
    }
    let end = reader.position();
    if end != len {
        return Err(corrupt(
            path.to_path_buf(),
            end,
            format!(
                "{} unexpected bytes after the last of the {} snapshot entries",
                len - end,
                header.entries
            ),
        ));
    }
    Ok((header, len))
}

/// Streams the records of a closed segment (`len` bytes, all of them
/// well formed) to `each`, with the offset and length of their frames.
pub(crate) fn read_segment(
    file: &dyn BackendFile,
    path: &Path,
    len: u64,
    mut each: impl FnMut(u64, u64, Record) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut reader = FrameReader::new(file, len, SEGMENT_HEADER_LEN);
    loop {
        let offset = reader.position();
        let payload = match reader
            .next_frame()
            .map_err(io_err("read segment", path.to_path_buf()))?
        {
            ReadFrame::Ok(payload) => payload,
            ReadFrame::End => return Ok(()),
            ReadFrame::Bad(bad) => return Err(corrupt(path.to_path_buf(), offset, bad.describe())),
        };
        let record =
            decode_record(payload).map_err(|reason| corrupt(path.to_path_buf(), offset, reason))?;
        each(offset, reader.position() - offset, record)?;
    }
}

/// What [`replay_segment`] did with a segment.
enum Replayed {
    /// Its records are in the state; `torn` bytes were cut from its tail.
    Kept { active: Active, torn: u64 },
    /// Every record in it is in the snapshot; the caller removes it.
    Covered,
    /// It was the last segment and its header never fully reached the disk;
    /// it has been removed.
    TornCreation { bytes: u64 },
}

/// Replays one segment into `state`, whose `last` is the position before
/// the segment's first record (or the snapshot floor, for the first one).
fn replay_segment(
    backend: &dyn Backend,
    first: u64,
    is_last: bool,
    vouched: u64,
    state: &mut State,
) -> Result<Replayed, Error> {
    let name = segment_name(first);
    let path = backend.path(&name);
    let file = backend
        .open(&name)
        .map_err(io_err("open segment", path.clone()))?;
    let len = file_len(&*file, &path)?;

    let mut header = vec![0u8; SEGMENT_HEADER_LEN.min(len) as usize];
    file.read_at(&mut header, 0)
        .map_err(io_err("read segment", path.clone()))?;
    let filler = match decode_segment_header(&header) {
        Ok(h) if h.first == first => h.filler(),
        Ok(h) => {
            return Err(corrupt(
                path,
                0,
                format!(
                    "segment header says it starts at index {} but its name says {first}",
                    h.first
                ),
            ))
        }
        Err(reason) => {
            // Segments are created with their header fsynced before any
            // record is written, so a bad header is a torn creation only in
            // the last segment and only if no record follows it.
            let whole = FrameReader::new(&*file, len, 0)
                .rest()
                .map_err(io_err("read segment", path.clone()))?;
            if is_last && find_intact_frame(&whole, 0, 0).is_none() {
                tracing::warn!(
                    file = %path.display(),
                    bytes_dropped = len,
                    %reason,
                    "removing the last segment: its header never fully reached the disk (a power cut while it was being created) and it holds no record"
                );
                backend
                    .remove(&name)
                    .map_err(io_err("remove torn segment", path.clone()))?;
                return Ok(Replayed::TornCreation { bytes: len });
            }
            return Err(corrupt(path, 0, reason));
        }
    };

    let floor = state.floor().index;
    let mut offsets = Vec::new();
    let mut last: Option<LogPosition> = None;
    let mut index = first;
    let mut reader = FrameReader::new(&*file, len, SEGMENT_HEADER_LEN);
    let mut torn = 0;
    let mut allocated = None;
    loop {
        let offset = reader.position();
        let payload = match reader
            .next_frame()
            .map_err(io_err("read segment", path.clone()))?
        {
            ReadFrame::Ok(payload) => payload,
            ReadFrame::End => break,
            ReadFrame::Bad(bad) => {
                let why = bad.describe();
                let rest = reader
                    .rest()
                    .map_err(io_err("read segment", path.clone()))?;
                if rest.iter().all(|&b| b == filler) {
                    // What the store writes ahead of its records: the clean
                    // end of the segment (no frame starts with it: a length
                    // field of zeros or of 0xFF bytes is no frame's).
                    // Usually only the last segment has it (a closed one is
                    // cut back before its fsync), but one before a torn
                    // creation may too. It hides no record: the next
                    // segment must start right after this one's last
                    // record.
                    if is_last && index <= vouched {
                        return Err(corrupt(
                            path,
                            offset,
                            format!(
                                "the log ends here, before record {index}, but the synced-through file says every record up to index {vouched} had been fsynced: acknowledged records are missing"
                            ),
                        ));
                    }
                    allocated = Some(len);
                    break;
                }
                let why = if filler == FILLER && rest.starts_with(&[0; FRAME_HEADER_LEN as usize]) {
                    format!(
                        "zeros where record {index} belongs (this segment keeps 0x{FILLER:02X} bytes, not zeros, ahead of its records, so a record was written here and is gone)"
                    )
                } else {
                    why
                };
                if index <= vouched {
                    return Err(corrupt(
                        path,
                        offset,
                        format!(
                            "{why}; this is not a torn write: the synced-through file says every record up to index {vouched} had been fsynced"
                        ),
                    ));
                }
                if !is_last {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("{why}; only the last segment can end in a torn write (a segment is fsynced before the next one is created)"),
                    ));
                }
                if let Some(proof) = find_intact_frame(&rest, 1, index) {
                    return Err(corrupt(
                        path,
                        offset,
                        format!(
                            "{why}, where record {index} belongs; this is not a torn write: record {} at byte offset {}, written later, says every record up to index {} had already been fsynced",
                            proof.index,
                            offset + proof.at as u64,
                            proof.synced_through
                        ),
                    ));
                }
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    bytes_dropped = rest.len(),
                    first_lost_index = index,
                    reason = %why,
                    "truncating a torn write at the tail of the log: no later record shows it was ever fsynced"
                );
                file.set_len(offset)
                    .map_err(io_err("truncate torn tail", path.clone()))?;
                file.sync_data()
                    .map_err(io_err("fsync segment", path.clone()))?;
                torn = rest.len() as u64;
                break;
            }
        };
        let record =
            decode_record(payload).map_err(|reason| corrupt(path.clone(), offset, reason))?;
        let p = record.meta.position;
        if p.index != index {
            return Err(corrupt(
                path,
                offset,
                format!(
                    "record has log index {} where index {index} belongs",
                    p.index
                ),
            ));
        }
        if p.index > floor {
            if p.term < state.last.term {
                return Err(corrupt(
                    path,
                    offset,
                    format!(
                        "record {} has term {}, lower than the term {} before it",
                        p.index, p.term, state.last.term
                    ),
                ));
            }
            let (key, tombstone) = match record.mutation {
                Mutation::Put { key, .. } => (key, false),
                Mutation::Delete { key } => (key, true),
            };
            state.apply(
                key,
                Slot {
                    meta: record.meta,
                    tombstone,
                    loc: Loc::Segment(first),
                    offset,
                    frame_len: reader.position() - offset,
                },
            );
            state.last = p;
        }
        offsets.push(offset);
        last = Some(p);
        index += 1;
    }

    if first <= floor && index <= floor + 1 {
        // Every record in it is in the snapshot (a compaction was cut short
        // before removing it). Nothing was applied from it.
        return Ok(Replayed::Covered);
    }
    let end = reader.position();
    let records = offsets.len() as u64;
    state.segments.insert(
        first,
        SegmentInfo {
            name: name.clone(),
            file: Arc::clone(&file),
            first,
            offsets,
            len: end,
            last,
            garbage: 0,
        },
    );
    Ok(Replayed::Kept {
        active: Active {
            first,
            name,
            file,
            len: end,
            allocated: allocated.unwrap_or(end),
            records,
            filler,
        },
        torn,
    })
}

/// Decodes a log frame's payload.
pub(crate) fn decode_record(payload: &[u8]) -> Result<Record, String> {
    let (_, encoded) = split_log_payload(payload)
        .ok_or_else(|| format!("log frame payload of {} bytes is too short", payload.len()))?;
    postcard::from_bytes(encoded).map_err(|e| {
        format!("record does not decode although its checksum matches ({e}); was it written by an incompatible version?")
    })
}

/// An intact log frame found after damage.
struct IntactFrame {
    /// Its offset in the searched buffer.
    at: usize,
    index: u64,
    synced_through: u64,
}

/// The first intact log frame starting at or after byte `from` of `buf`
/// whose `synced_through` watermark is at least `min_synced`: proof that
/// records up to `min_synced` had been fsynced before it was written.
///
/// Every byte offset is tried, since damage can hide where frames start.
/// The watermark is checked before the checksum: a candidate must claim a
/// watermark in `min_synced..=min_synced + buf.len()` (no record after the
/// damage can have a larger one), which random bytes almost never do, so
/// the search costs little more than one pass over `buf`.
fn find_intact_frame(buf: &[u8], from: usize, min_synced: u64) -> Option<IntactFrame> {
    let header = FRAME_HEADER_LEN as usize;
    let plausible = min_synced..=min_synced.saturating_add(buf.len() as u64);
    let mut watermark = [0u8; SYNCED_THROUGH_LEN];
    (from..buf.len().saturating_sub(header + SYNCED_THROUGH_LEN)).find_map(|at| {
        watermark.copy_from_slice(&buf[at + header..at + header + SYNCED_THROUGH_LEN]);
        if !plausible.contains(&u64::from_le_bytes(watermark)) {
            return None;
        }
        let Frame::Ok { payload, .. } = parse_frame(buf, at) else {
            return None;
        };
        let (synced_through, _) = split_log_payload(payload)?;
        let record = decode_record(payload).ok()?;
        let index = record.meta.position.index;
        (synced_through < index).then_some(IntactFrame {
            at,
            index,
            synced_through,
        })
    })
}
