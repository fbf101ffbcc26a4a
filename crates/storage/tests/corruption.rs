//! Invariant: data on disk is never silently dropped (DESIGN.md §3,
//! "Recovery"). A torn write at the tail of the log is cut off, reported
//! and counted, and every record before it survives; damage anywhere else
//! refuses start-up with [`Error::Corrupt`] naming the file and the byte
//! offset, and a message saying what to do.

mod common;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use mimeo_storage::{Error, FsyncMode, Options, Store};

use common::{assert_state, fold, put};

const SEGMENT_HEADER: u64 = 32;

/// Files hold exactly their records (no zeros written ahead of them), so
/// the tests can cut and damage them by frame offsets.
fn options(segment_bytes: u64) -> Options {
    Options {
        fsync: FsyncMode::Always,
        segment_bytes,
        preallocate_bytes: 0,
        ..Options::default()
    }
}

/// Writes `count` puts (one append each) and closes the store.
fn write_log(dir: &Path, segment_bytes: u64, count: u64) -> Vec<mimeo_storage::Record> {
    let store = Store::open(dir, options(segment_bytes)).unwrap();
    let records: Vec<_> = (1..=count)
        .map(|i| put(i, &format!("k{}", i % 7), &format!("value {i}")))
        .collect();
    for r in &records {
        store.append(std::slice::from_ref(r)).unwrap();
    }
    records
}

/// Segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Offsets of the frames in a segment file.
fn frame_offsets(segment: &Path) -> Vec<u64> {
    let bytes = fs::read(segment).unwrap();
    let mut offsets = Vec::new();
    let mut pos = SEGMENT_HEADER as usize;
    while pos + 8 <= bytes.len() {
        offsets.push(pos as u64);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
    }
    offsets
}

fn flip_byte(file: &Path, offset: u64) {
    let mut bytes = fs::read(file).unwrap();
    bytes[offset as usize] ^= 0x20;
    fs::write(file, bytes).unwrap();
}

fn set_len(file: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Opens `dir` expecting `Error::Corrupt` at `file` and `offset`; returns
/// the message.
fn expect_corrupt(dir: &Path, file: &Path, offset: u64) -> String {
    let err = Store::open(dir, options(1 << 20)).unwrap_err();
    let message = err.to_string();
    match err {
        Error::Corrupt {
            path,
            offset: at,
            reason,
        } => {
            assert_eq!(path, file, "{message}");
            assert_eq!(at, offset, "{message}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains(&format!("offset {offset}")), "{message}");
    assert!(message.contains("restore"), "says what to do: {message}");
    message
}

#[test]
fn a_flipped_byte_in_an_earlier_segment_refuses_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 300, 40);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    let frame = frame_offsets(&segs[0])[2];
    flip_byte(&segs[0], frame + 12); // inside the payload
    let message = expect_corrupt(dir.path(), &segs[0], frame);
    assert!(message.contains("checksum"), "{message}");
}

#[test]
fn a_flipped_byte_mid_way_through_the_last_segment_refuses_start_up() {
    // fsync = always: every record is written after its predecessors were
    // fsynced, and says so, so damage with records after it is not a torn
    // write even in the last segment.
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 1 << 20, 30);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1);
    let frame = frame_offsets(&segs[0])[10];
    flip_byte(&segs[0], frame + 20);
    let message = expect_corrupt(dir.path(), &segs[0], frame);
    assert!(message.contains("not a torn write"), "{message}");
}

#[test]
fn a_damaged_length_field_mid_log_refuses_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 1 << 20, 30);
    let seg = &segments(dir.path())[0];
    let frame = frame_offsets(seg)[5];
    flip_byte(seg, frame + 1);
    expect_corrupt(dir.path(), seg, frame);
}

#[test]
fn a_damaged_segment_header_refuses_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 300, 40);
    let segs = segments(dir.path());
    flip_byte(&segs[1], 17);
    let message = expect_corrupt(dir.path(), &segs[1], 0);
    assert!(message.contains("header"), "{message}");
}

#[test]
fn a_cut_tail_is_truncated_and_every_earlier_record_survives() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 300, 40);
    let segs = segments(dir.path());
    let last = segs.last().unwrap();
    let frames = frame_offsets(last);
    let file_len = fs::metadata(last).unwrap().len();
    let last_frame = *frames.last().unwrap();
    // Keep 5 bytes of the last record: a torn write.
    set_len(last, last_frame + 5);

    let store = Store::open(dir.path(), options(300)).unwrap();
    assert_eq!(store.stats().truncated_tail_bytes_at_open, 5);
    assert_eq!(store.last_position().index, 39);
    assert_eq!(store.read_log(1, usize::MAX).unwrap(), records[..39]);
    assert_state(&store, &fold(&records[..39]), "after the torn tail");
    assert_eq!(fs::metadata(last).unwrap().len(), last_frame);
    assert!(file_len > last_frame + 5);

    // The cut is durable and the log continues where it now ends.
    store.append(&[put(40, "k5", "rewritten")]).unwrap();
    drop(store);
    let store = Store::open(dir.path(), options(300)).unwrap();
    assert_eq!(store.stats().truncated_tail_bytes_at_open, 0);
    assert_eq!(
        store.get(b"k5").unwrap().unwrap().value.as_deref(),
        Some(&b"rewritten"[..])
    );
}

/// Rewrites a segment's header as format version 1, which kept zeros (not
/// 0xFF filler) ahead of its records.
fn make_version_1(segment: &Path) {
    let mut bytes = fs::read(segment).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    fs::write(segment, bytes).unwrap();
}

#[test]
fn zeros_after_the_last_record_are_reported_and_cut() {
    // A power cut after the file grew but before its data reached the
    // disk, or a record that was written and then zeroed: a segment keeps
    // 0xFF bytes, not zeros, ahead of its records, so zeros are never taken
    // for unwritten space. Nothing vouches for a record there, so this is
    // a torn write: cut, counted and logged, and the log goes on.
    let dir = tempfile::tempdir().unwrap();
    let mut records = write_log(dir.path(), 1 << 20, 10);
    let seg = &segments(dir.path())[0];
    let len = fs::metadata(seg).unwrap().len();
    set_len(seg, len + 4096);

    let store = Store::open(dir.path(), options(1 << 20)).unwrap();
    assert_eq!(store.stats().truncated_tail_bytes_at_open, 4096);
    assert_eq!(store.read_log(1, 100).unwrap(), records);
    records.push(put(11, "k4", "after the zeros"));
    store.append(&records[10..]).unwrap();
    drop(store);
    let store = Store::open(dir.path(), options(1 << 20)).unwrap();
    assert_eq!(store.stats().truncated_tail_bytes_at_open, 0);
    assert_eq!(store.read_log(1, 100).unwrap(), records);
}

#[test]
fn zeros_after_the_last_record_of_a_version_1_segment_are_its_end() {
    // Version 1 segments kept zeros ahead of their records: there they are
    // the clean end of the log, as they always were.
    let dir = tempfile::tempdir().unwrap();
    let mut records = write_log(dir.path(), 1 << 20, 10);
    let seg = &segments(dir.path())[0];
    make_version_1(seg);
    let len = fs::metadata(seg).unwrap().len();
    set_len(seg, len + 4096);

    let store = Store::open(dir.path(), options(1 << 20)).unwrap();
    assert_eq!(store.stats().truncated_tail_bytes_at_open, 0);
    assert_eq!(store.read_log(1, 100).unwrap(), records);
    records.push(put(11, "k4", "after the zeros"));
    store.append(&records[10..]).unwrap();
    drop(store);
    let store = Store::open(dir.path(), options(1 << 20)).unwrap();
    assert_eq!(store.stats().truncated_tail_bytes_at_open, 0);
    assert_eq!(store.read_log(1, 100).unwrap(), records);
}

#[test]
fn a_torn_record_before_the_filler_written_ahead_is_a_torn_write() {
    // A power cut while a record was being written over the filler the
    // store keeps ahead of its records: its first bytes landed, its last
    // did not.
    let dir = tempfile::tempdir().unwrap();
    let preallocating = Options {
        preallocate_bytes: 64 << 10,
        ..options(1 << 20)
    };
    let store = Store::open(dir.path(), preallocating.clone()).unwrap();
    let records: Vec<_> = (1..=10)
        .map(|i| put(i, &format!("k{i}"), &"v".repeat(100)))
        .collect();
    for r in &records {
        store.append(std::slice::from_ref(r)).unwrap();
    }
    drop(store);
    let seg = &segments(dir.path())[0];
    let len = fs::metadata(seg).unwrap().len();
    let mut bytes = fs::read(seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0xFF).unwrap() + 1;
    assert!(len >= end as u64 + (32 << 10), "filler is kept ahead");
    // The record is 100+ bytes; zero its last 20, as if they never landed.
    bytes[end - 20..end].fill(0);
    fs::write(seg, &bytes).unwrap();

    let store = Store::open(dir.path(), preallocating).unwrap();
    assert!(store.stats().truncated_tail_bytes_at_open > 100);
    assert_eq!(store.read_log(1, 100).unwrap(), records[..9]);
}

#[test]
fn damage_to_the_very_last_record_is_a_torn_write() {
    // No later record vouches for it, so it cannot be told from a write
    // the power cut tore; it is dropped, with a warning and a count.
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 1 << 20, 10);
    let seg = &segments(dir.path())[0];
    let frame = *frame_offsets(seg).last().unwrap();
    let len = fs::metadata(seg).unwrap().len();
    flip_byte(seg, frame + 9);

    let store = Store::open(dir.path(), options(1 << 20)).unwrap();
    assert_eq!(store.stats().truncated_tail_bytes_at_open, len - frame);
    assert_eq!(store.read_log(1, 100).unwrap(), records[..9]);
}

#[test]
fn a_torn_tail_in_an_earlier_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 300, 40);
    let segs = segments(dir.path());
    let frames = frame_offsets(&segs[0]);
    let cut = frames[frames.len() - 1] + 3;
    set_len(&segs[0], cut);
    let message = expect_corrupt(dir.path(), &segs[0], frames[frames.len() - 1]);
    assert!(message.contains("only the last segment"), "{message}");
}

#[test]
fn a_missing_segment_refuses_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 300, 40);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[1]).unwrap();
    let message = expect_corrupt(dir.path(), &segs[2], 0);
    assert!(message.contains("missing"), "{message}");
}

#[test]
fn a_damaged_snapshot_refuses_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 300, 40);
    let store = Store::open(dir.path(), options(300)).unwrap();
    store.compact().unwrap();
    drop(store);
    let snapshot = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .expect("a snapshot");
    let first_entry = 48;
    flip_byte(&snapshot, first_entry + 10);
    expect_corrupt(dir.path(), &snapshot, first_entry);
}

#[test]
fn foreign_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 300, 12);
    fs::write(dir.path().join("NOTES.txt"), b"operator notes").unwrap();
    let store = Store::open(dir.path(), options(300)).unwrap();
    assert_eq!(store.read_log(1, 100).unwrap(), records);
    assert!(dir.path().join("NOTES.txt").exists());
}
