//! Compaction: folding the closed segments and the old snapshot into a new
//! snapshot, then removing them.
//!
//! Memory stays bounded by the key index: the fold keeps, per key, where
//! its latest state is (as the index does), and values are copied one at a
//! time from the old files into the new snapshot, which is written in
//! chunks.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::backend::BackendFile;
use crate::error::{io_err, Error};
use crate::format::{
    encode_snapshot_header, push_frame, snapshot_name, SnapshotEntry, SnapshotHeader, TMP_SUFFIX,
};
use crate::record::{LogPosition, Mutation, RecordMeta};
use crate::recovery::{read_segment, read_snapshot};
use crate::state::{read_value_at, Loc, SnapshotInfo};
use crate::store::{lock, read, write, CompactionStats, Inner};

/// A file folded into the new snapshot.
struct Input {
    name: String,
    file: Arc<dyn BackendFile>,
    /// `Loc::Snapshot` for the old snapshot, `Loc::Segment(first)` for a
    /// closed segment.
    loc: Loc,
    /// Bytes in use (for a segment; a snapshot is read to its end).
    len: u64,
}

/// What one compaction works on, fixed when it starts.
struct Plan {
    /// The old snapshot (if any) first, then the closed segments in order.
    inputs: Vec<Input>,
    /// The newest closed segment: every segment starting at or before it
    /// is folded in.
    last_covered: u64,
    segments_removed: usize,
    old_floor: LogPosition,
    /// The new floor: the last record of the newest closed segment.
    floor: LogPosition,
    bytes_before: u64,
}

/// Where a key's latest state is among the inputs, and where it goes.
struct Source {
    input: usize,
    offset: u64,
    frame_len: u64,
    tombstone: bool,
    meta: RecordMeta,
    /// Offset and length of its frame in the new snapshot.
    placed: (u64, u64),
}

/// Snapshot bytes buffered before each write.
const WRITE_CHUNK: usize = 1 << 20;

impl Inner {
    /// Compacts; `seal` first closes the active segment so that everything
    /// written so far is folded in (explicit compaction); otherwise only the
    /// already closed segments are (automatic compaction). With `below`,
    /// only the closed segments whose records are all below that index
    /// are (a prefix discard).
    pub(crate) fn compact(&self, seal: bool, below: Option<u64>) -> Result<CompactionStats, Error> {
        let _maintenance = lock(&self.maintenance);
        self.check_poisoned()?;
        if seal {
            self.seal_active()?;
        }
        let Some(plan) = self.plan_compaction(below) else {
            let st = read(&self.state);
            return Ok(CompactionStats {
                floor: st.floor(),
                segments_removed: 0,
                entries: st.index.len(),
                bytes_before: st.disk_bytes(),
                bytes_after: st.disk_bytes(),
            });
        };

        let mut image = self.fold(&plan)?;
        let entries = image.len();
        let (name, file, len) = self.write_snapshot(&plan, &mut image)?;

        // Point the index at the new snapshot. Keys written since the plan
        // was made keep pointing at the active segment, and their snapshot
        // entries count as garbage.
        let bytes_after = {
            let mut st = write(&self.state);
            let mut garbage = 0;
            for (key, source) in image {
                let (offset, frame_len) = source.placed;
                match st.index.get_mut(&key) {
                    Some(slot)
                        if match slot.loc {
                            Loc::Snapshot => true,
                            Loc::Segment(first) => first <= plan.last_covered,
                        } =>
                    {
                        debug_assert_eq!(slot.meta, source.meta, "compacted state of {key:?}");
                        slot.loc = Loc::Snapshot;
                        slot.offset = offset;
                        slot.frame_len = frame_len;
                    }
                    _ => garbage += frame_len,
                }
            }
            st.segments.retain(|&first, _| first > plan.last_covered);
            st.snapshot = Some(SnapshotInfo {
                name,
                file,
                floor: plan.floor,
                len,
                garbage,
            });
            st.disk_bytes()
        };
        self.compactions.fetch_add(1, Ordering::Relaxed);

        // Remove what the snapshot replaced. Open handles (a reader that
        // found a slot before the switch) keep working; a crash before the
        // directory is synced leaves files the next open removes.
        for input in &plan.inputs {
            if let Err(e) = self.backend.remove(&input.name) {
                tracing::warn!(file = %self.path(&input.name).display(), error = %e, "could not remove a compacted file; the next open removes it");
            }
        }
        if let Err(e) = self.backend.sync_dir() {
            tracing::warn!(dir = %self.path("").display(), error = %e, "could not fsync the data directory after removing compacted files; the next open removes any that come back");
        }
        tracing::info!(
            floor = plan.floor.index,
            segments_removed = plan.segments_removed,
            entries,
            bytes_before = plan.bytes_before,
            bytes_after,
            "compaction finished"
        );
        Ok(CompactionStats {
            floor: plan.floor,
            segments_removed: plan.segments_removed,
            entries,
            bytes_before: plan.bytes_before,
            bytes_after,
        })
    }

    /// Closes the active segment (fsyncing it) if it holds records, so the
    /// next append starts a new one.
    fn seal_active(&self) -> Result<(), Error> {
        let mut writer = lock(&self.writer);
        self.check_poisoned()?;
        let Some(active) = writer.active.as_ref().filter(|a| a.records > 0) else {
            return Ok(());
        };
        if let Err(err) = self.close_segment_file(active) {
            self.poison(&err);
            return Err(err);
        }
        self.segment_closed(writer.last.index);
        writer.active = None;
        write(&self.state).active_first = None;
        Ok(())
    }

    /// The closed segments (only those wholly below `below`, if given) and
    /// the old snapshot, or `None` if there is no such segment.
    fn plan_compaction(&self, below: Option<u64>) -> Option<Plan> {
        let st = read(&self.state);
        let closed: Vec<_> = st
            .segments
            .values()
            .filter(|s| Some(s.first) != st.active_first)
            .take_while(|s| below.is_none_or(|b| s.last.is_none_or(|last| last.index < b)))
            .collect();
        let last = closed.last()?;
        let floor = last.last.filter(|f| f.index > st.floor().index)?;
        let mut inputs = Vec::with_capacity(closed.len() + 1);
        if let Some(snap) = &st.snapshot {
            inputs.push(Input {
                name: snap.name.clone(),
                file: Arc::clone(&snap.file),
                loc: Loc::Snapshot,
                len: snap.len,
            });
        }
        inputs.extend(closed.iter().map(|s| Input {
            name: s.name.clone(),
            file: Arc::clone(&s.file),
            loc: Loc::Segment(s.first),
            len: s.len,
        }));
        Some(Plan {
            inputs,
            last_covered: last.first,
            segments_removed: closed.len(),
            old_floor: st.floor(),
            floor,
            bytes_before: st.disk_bytes(),
        })
    }

    /// The latest state of every key in the inputs, as of the new floor.
    fn fold(&self, plan: &Plan) -> Result<BTreeMap<Vec<u8>, Source>, Error> {
        let mut image = BTreeMap::new();
        for (input, file) in plan.inputs.iter().enumerate() {
            let path = self.path(&file.name);
            match file.loc {
                Loc::Snapshot => {
                    read_snapshot(&*file.file, &path, |offset, frame_len, entry| {
                        let source = Source {
                            input,
                            offset,
                            frame_len,
                            tombstone: entry.value.is_none(),
                            meta: entry.meta,
                            placed: (0, 0),
                        };
                        image.insert(entry.key, source);
                        Ok(())
                    })?;
                }
                Loc::Segment(_) => {
                    read_segment(&*file.file, &path, file.len, |offset, frame_len, record| {
                        if record.meta.position.index <= plan.old_floor.index {
                            return Ok(());
                        }
                        let (key, tombstone) = match record.mutation {
                            Mutation::Put { key, .. } => (key, false),
                            Mutation::Delete { key } => (key, true),
                        };
                        let source = Source {
                            input,
                            offset,
                            frame_len,
                            tombstone,
                            meta: record.meta,
                            placed: (0, 0),
                        };
                        image.insert(key, source);
                        Ok(())
                    })?;
                }
            }
        }
        Ok(image)
    }

    /// Writes the snapshot of `image` to a temporary file, fsyncs it,
    /// renames it into place and fsyncs the directory; records in `image`
    /// where each entry went. Returns the snapshot's name, file and length.
    fn write_snapshot(
        &self,
        plan: &Plan,
        image: &mut BTreeMap<Vec<u8>, Source>,
    ) -> Result<(String, Arc<dyn BackendFile>, u64), Error> {
        let name = snapshot_name(plan.floor.index);
        let tmp = format!("{name}{TMP_SUFFIX}");
        let tmp_path = self.path(&tmp);
        let mut write_tmp = || -> Result<(Arc<dyn BackendFile>, u64), Error> {
            let file = self
                .backend
                .create(&tmp)
                .map_err(io_err("create snapshot", tmp_path.clone()))?;
            let mut out = Vec::with_capacity(WRITE_CHUNK + (WRITE_CHUNK >> 3));
            out.extend_from_slice(&encode_snapshot_header(SnapshotHeader {
                floor: plan.floor,
                entries: image.len() as u64,
            }));
            let mut written = 0u64;
            for (key, source) in image.iter_mut() {
                let input = &plan.inputs[source.input];
                let value = if source.tombstone {
                    None
                } else {
                    read_value_at(
                        &*input.file,
                        &self.path(&input.name),
                        input.loc,
                        source.offset,
                        source.frame_len,
                        (key, source.meta.position),
                    )?
                };
                let entry = SnapshotEntry {
                    key: key.clone(),
                    value,
                    meta: source.meta.clone(),
                };
                let payload = postcard::to_allocvec(&entry).map_err(|e| Error::Encode {
                    what: "snapshot entry",
                    reason: e.to_string(),
                })?;
                let at = written + out.len() as u64;
                push_frame(&mut out, &payload);
                source.placed = (at, written + out.len() as u64 - at);
                if out.len() >= WRITE_CHUNK {
                    file.write_at(&out, written)
                        .map_err(io_err("write snapshot", tmp_path.clone()))?;
                    written += out.len() as u64;
                    out.clear();
                }
            }
            file.write_at(&out, written)
                .map_err(io_err("write snapshot", tmp_path.clone()))?;
            written += out.len() as u64;
            file.sync_data()
                .map_err(io_err("fsync snapshot", tmp_path.clone()))?;
            Ok((file, written))
        };
        let (file, len) = match write_tmp() {
            Ok(done) => done,
            Err(e) => {
                // Best effort: the next open removes it anyway.
                let _ = self.backend.remove(&tmp);
                return Err(e);
            }
        };
        self.backend
            .rename(&tmp, &name)
            .map_err(io_err("rename snapshot into place", tmp_path))?;
        if let Err(source) = self.backend.sync_dir() {
            // The snapshot may or may not be in the durable directory, and
            // a later truncation could contradict it: stop writing.
            let err = Error::Io {
                op: "fsync data directory",
                path: self.path(""),
                source,
            };
            self.poison(&err);
            return Err(err);
        }
        Ok((name, file, len))
    }

    /// Writes a snapshot holding exactly `state` at `floor` (temporary
    /// file, fsync, rename, directory fsync).
    pub(crate) fn write_state_snapshot(
        &self,
        floor: LogPosition,
        state: Vec<(Vec<u8>, crate::record::Entry)>,
    ) -> Result<(), Error> {
        let mut state = state;
        state.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = state.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::Encode {
                what: "snapshot",
                reason: format!("key {:?} appears twice in the state", w[0].0),
            });
        }
        let name = snapshot_name(floor.index);
        let tmp = format!("{name}{TMP_SUFFIX}");
        let tmp_path = self.path(&tmp);
        let mut out = Vec::new();
        out.extend_from_slice(&encode_snapshot_header(SnapshotHeader {
            floor,
            entries: state.len() as u64,
        }));
        for (key, entry) in state {
            let entry = SnapshotEntry {
                key,
                value: entry.value,
                meta: entry.meta,
            };
            let payload = postcard::to_allocvec(&entry).map_err(|e| Error::Encode {
                what: "snapshot entry",
                reason: e.to_string(),
            })?;
            push_frame(&mut out, &payload);
        }
        let file = self
            .backend
            .create(&tmp)
            .map_err(io_err("create snapshot", tmp_path.clone()))?;
        file.write_at(&out, 0)
            .map_err(io_err("write snapshot", tmp_path.clone()))?;
        file.sync_data()
            .map_err(io_err("fsync snapshot", tmp_path.clone()))?;
        drop(file);
        self.backend
            .rename(&tmp, &name)
            .map_err(io_err("rename snapshot into place", tmp_path))?;
        self.backend
            .sync_dir()
            .map_err(io_err("fsync data directory", self.path("")))
    }
}
