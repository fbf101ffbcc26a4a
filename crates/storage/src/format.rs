//! The on-disk byte layout: file names, headers and frames, and a
//! sequential frame reader. The crate documentation describes the layout
//! for users; this module is its single implementation. Every integer is
//! little-endian.

use std::io;

use serde::{Deserialize, Serialize};

use crate::backend::BackendFile;
use crate::record::{LogPosition, RecordMeta};

/// The largest encoded record (or snapshot entry) the store accepts, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"MIMEOLOG";
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"MIMEOSNP";
/// The version of snapshot and synced-through files.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// The version of segments this build writes. Version 2 keeps the space
/// ahead of the records filled with [`FILLER`]; version 1 kept zeros there.
/// Both are read.
pub(crate) const SEGMENT_VERSION: u32 = 2;
/// What a version 2 segment holds where no frame was ever written: a frame
/// header of these bytes announces a length no frame has, and zeros where
/// a frame belongs are then damage, never unwritten space.
pub(crate) const FILLER: u8 = 0xFF;
pub(crate) const SEGMENT_HEADER_LEN: u64 = 32;
pub(crate) const SNAPSHOT_HEADER_LEN: u64 = 48;
/// `len u32 | crc32c u32`.
pub(crate) const FRAME_HEADER_LEN: u64 = 8;
/// A log frame's payload starts with the `synced_through` watermark.
pub(crate) const SYNCED_THROUGH_LEN: usize = 8;
/// The largest payload length a frame header may announce.
const MAX_PAYLOAD: usize = MAX_RECORD_BYTES + SYNCED_THROUGH_LEN;

/// `seg-<first index, 20 digits>.log`
pub(crate) fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

/// `snap-<floor index, 20 digits>.snap`
pub(crate) fn snapshot_name(floor: u64) -> String {
    format!("snap-{floor:020}.snap")
}

/// Written when the store is poisoned: the index up to which every record
/// had been fsynced then (see [`encode_synced_through`]).
pub(crate) const SYNCED_THROUGH_FILE: &str = "synced-through";
pub(crate) const SYNCED_THROUGH_MAGIC: [u8; 8] = *b"MIMEOSYN";
pub(crate) const SYNCED_THROUGH_FILE_LEN: usize = 32;

/// `magic "MIMEOSYN" | version u32 (1) | reserved u32 | synced-through
/// index u64 | crc32c(bytes 0..24) u32 | reserved u32`
pub(crate) fn encode_synced_through(index: u64) -> [u8; SYNCED_THROUGH_FILE_LEN] {
    let mut b = [0u8; SYNCED_THROUGH_FILE_LEN];
    b[0..8].copy_from_slice(&SYNCED_THROUGH_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&index.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The index in a synced-through file, or why it is invalid.
pub(crate) fn decode_synced_through(b: &[u8]) -> Result<u64, String> {
    if b.len() != SYNCED_THROUGH_FILE_LEN {
        return Err(format!(
            "synced-through file is {} bytes, expected {SYNCED_THROUGH_FILE_LEN}",
            b.len()
        ));
    }
    if b[0..8] != SYNCED_THROUGH_MAGIC {
        return Err("not a mimeo synced-through file (bad magic)".into());
    }
    if u32_at(b, 24) != crc32c::crc32c(&b[0..24]) {
        return Err("synced-through file checksum mismatch".into());
    }
    let version = u32_at(b, 8);
    if version != FORMAT_VERSION {
        return Err(format!(
            "synced-through format version {version} is not supported (this build reads version {FORMAT_VERSION})"
        ));
    }
    Ok(u64_at(b, 16))
}

/// Appended to a snapshot's name while it is being written.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// What a file in the data directory is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment(u64),
    Snapshot(u64),
    /// An unfinished snapshot (or segment) left by a crash.
    Temp,
    /// Not ours; left alone.
    Other,
}

pub(crate) fn classify(name: &str) -> FileKind {
    if name.ends_with(TMP_SUFFIX) && (name.starts_with("seg-") || name.starts_with("snap-")) {
        return FileKind::Temp;
    }
    let number = |prefix: &str, suffix: &str| -> Option<u64> {
        let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().ok()
        } else {
            None
        }
    };
    if let Some(first) = number("seg-", ".log") {
        FileKind::Segment(first)
    } else if let Some(floor) = number("snap-", ".snap") {
        FileKind::Snapshot(floor)
    } else {
        FileKind::Other
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// `magic(8) | version u32 | reserved u32 | first index u64 |
/// crc32c(bytes 0..24) u32 | reserved u32`
pub(crate) fn encode_segment_header(first: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// The index of the segment's first record.
    pub(crate) first: u64,
    /// The format version: 1 or 2.
    pub(crate) version: u32,
}

impl SegmentHeader {
    /// What the segment holds where no frame was written yet: zeros in
    /// version 1, [`FILLER`] in version 2.
    pub(crate) fn filler(&self) -> u8 {
        if self.version >= 2 {
            FILLER
        } else {
            0
        }
    }
}

/// Returns what a segment header says, or why it is invalid.
pub(crate) fn decode_segment_header(h: &[u8]) -> Result<SegmentHeader, String> {
    if h.len() < SEGMENT_HEADER_LEN as usize {
        return Err(format!(
            "segment header is {} bytes, expected {SEGMENT_HEADER_LEN}",
            h.len()
        ));
    }
    if h[0..8] != SEGMENT_MAGIC {
        return Err("not a mimeo segment (bad magic)".into());
    }
    if u32_at(h, 24) != crc32c::crc32c(&h[0..24]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32_at(h, 8);
    if !(1..=SEGMENT_VERSION).contains(&version) {
        return Err(format!(
            "segment format version {version} is not supported (this build reads versions 1 to {SEGMENT_VERSION})"
        ));
    }
    Ok(SegmentHeader {
        first: u64_at(h, 16),
        version,
    })
}

/// The fixed-size header at the start of a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotHeader {
    /// The last log position folded into the snapshot.
    pub(crate) floor: LogPosition,
    /// How many entry frames follow.
    pub(crate) entries: u64,
}

/// `magic(8) | version u32 | flags u32 | floor index u64 | floor term u64 |
/// entry count u64 | crc32c(bytes 0..40) u32 | reserved u32`
pub(crate) fn encode_snapshot_header(h: SnapshotHeader) -> [u8; SNAPSHOT_HEADER_LEN as usize] {
    let mut b = [0u8; SNAPSHOT_HEADER_LEN as usize];
    b[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&h.floor.index.to_le_bytes());
    b[24..32].copy_from_slice(&h.floor.term.to_le_bytes());
    b[32..40].copy_from_slice(&h.entries.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..40]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

pub(crate) fn decode_snapshot_header(b: &[u8]) -> Result<SnapshotHeader, String> {
    if b.len() < SNAPSHOT_HEADER_LEN as usize {
        return Err(format!(
            "snapshot is {} bytes, shorter than its {SNAPSHOT_HEADER_LEN}-byte header",
            b.len()
        ));
    }
    if b[0..8] != SNAPSHOT_MAGIC {
        return Err("not a mimeo snapshot (bad magic)".into());
    }
    if u32_at(b, 40) != crc32c::crc32c(&b[0..40]) {
        return Err("snapshot header checksum mismatch".into());
    }
    let version = u32_at(b, 8);
    if version != FORMAT_VERSION {
        return Err(format!(
            "snapshot format version {version} is not supported (this build reads version {FORMAT_VERSION})"
        ));
    }
    Ok(SnapshotHeader {
        floor: LogPosition::new(u64_at(b, 24), u64_at(b, 16)),
        entries: u64_at(b, 32),
    })
}

/// One key's state in a snapshot (the payload of a snapshot frame).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotEntry {
    pub(crate) key: Vec<u8>,
    /// `None` for a tombstone.
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) meta: RecordMeta,
}

/// Appends `len u32 | crc32c(payload) u32 | payload` to `out` (a snapshot
/// frame).
pub(crate) fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends a log frame to `out`: a frame whose payload is
/// `synced_through u64 | record`, where `record` is the postcard encoding
/// of a [`Record`](crate::Record) and `synced_through` is an index up to
/// which every record had been fsynced before this one was written.
///
/// Recovery uses the watermark to tell a torn write from corruption: a
/// damaged record at index `k` followed by an intact record whose watermark
/// is `k` or more had been fsynced, so it cannot have been torn by a power
/// cut.
pub(crate) fn push_log_frame(out: &mut Vec<u8>, synced_through: u64, record: &[u8]) {
    let watermark = synced_through.to_le_bytes();
    let len = (SYNCED_THROUGH_LEN + record.len()) as u32;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&watermark), record);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&watermark);
    out.extend_from_slice(record);
}

/// Splits a log frame's payload into its watermark and encoded record.
pub(crate) fn split_log_payload(payload: &[u8]) -> Option<(u64, &[u8])> {
    if payload.len() <= SYNCED_THROUGH_LEN {
        return None;
    }
    Some((u64_at(payload, 0), &payload[SYNCED_THROUGH_LEN..]))
}

/// The outcome of reading one frame from a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A well-formed frame; the next one starts at `next`.
    Ok { payload: &'a [u8], next: usize },
    /// The buffer ends inside the frame header or payload.
    Truncated,
    /// The length field is zero or larger than any frame the store writes.
    BadLength(u32),
    /// The payload does not match its checksum.
    BadChecksum,
}

/// Parses the frame starting at `pos` in `buf`.
pub(crate) fn parse_frame(buf: &[u8], pos: usize) -> Frame<'_> {
    let header = FRAME_HEADER_LEN as usize;
    if buf.len() < pos + header {
        return Frame::Truncated;
    }
    let len = u32_at(buf, pos);
    if len == 0 || len as usize > MAX_PAYLOAD {
        return Frame::BadLength(len);
    }
    let end = pos + header + len as usize;
    if buf.len() < end {
        return Frame::Truncated;
    }
    let payload = &buf[pos + header..end];
    if crc32c::crc32c(payload) != u32_at(buf, pos + 4) {
        return Frame::BadChecksum;
    }
    Frame::Ok { payload, next: end }
}

impl Frame<'_> {
    /// Why the frame is unusable, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Frame::Ok { .. } => "valid frame".into(),
            Frame::Truncated => "the file ends inside this record".into(),
            Frame::BadLength(len) => {
                format!("record length field is {len}, outside 1..={MAX_PAYLOAD}")
            }
            Frame::BadChecksum => "record checksum (CRC32C) mismatch".into(),
        }
    }
}

/// Reads the frames of a file in order without loading the whole file:
/// recovery and compaction stream snapshots far larger than memory should
/// hold at once through it.
pub(crate) struct FrameReader<'f> {
    file: &'f dyn BackendFile,
    /// The file's length when the reader was created.
    len: u64,
    /// Bytes `buf_start..buf_start + buf.len()` of the file.
    buf: Vec<u8>,
    buf_start: u64,
    /// The offset of the next frame.
    pos: u64,
}

/// What [`FrameReader::next_frame`] found at [`FrameReader::position`].
pub(crate) enum ReadFrame<'a> {
    /// A well-formed frame.
    Ok(&'a [u8]),
    /// The file ends exactly here.
    End,
    /// Something unusable (never `Frame::Ok`).
    Bad(Frame<'a>),
}

const READ_CHUNK: usize = 1 << 20;

impl<'f> FrameReader<'f> {
    pub(crate) fn new(file: &'f dyn BackendFile, len: u64, start: u64) -> Self {
        FrameReader {
            file,
            len,
            buf: Vec::new(),
            buf_start: start,
            pos: start,
        }
    }

    /// The offset of the frame the next call to `next_frame` reads (after a
    /// `Bad` frame: the offset of that frame).
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Makes `buf` hold at least `want` bytes from `pos` (fewer at the end
    /// of the file).
    fn fill(&mut self, want: usize) -> io::Result<()> {
        let have = (self.buf_start + self.buf.len() as u64).saturating_sub(self.pos) as usize;
        if have >= want {
            return Ok(());
        }
        let consumed = (self.pos - self.buf_start) as usize;
        self.buf.drain(..consumed);
        self.buf_start = self.pos;
        let end = (self.pos + want.max(READ_CHUNK) as u64).min(self.len);
        let read_from = self.buf_start + self.buf.len() as u64;
        if end > read_from {
            let old = self.buf.len();
            self.buf.resize(old + (end - read_from) as usize, 0);
            self.file.read_at(&mut self.buf[old..], read_from)?;
        }
        Ok(())
    }

    /// Reads the frame at `position()` and, if it is well formed, moves past it.
    pub(crate) fn next_frame(&mut self) -> io::Result<ReadFrame<'_>> {
        if self.pos >= self.len {
            return Ok(ReadFrame::End);
        }
        self.fill(FRAME_HEADER_LEN as usize)?;
        let at = (self.pos - self.buf_start) as usize;
        if self.buf.len() >= at + FRAME_HEADER_LEN as usize {
            let len = u32_at(&self.buf, at) as usize;
            if len <= MAX_PAYLOAD {
                self.fill(FRAME_HEADER_LEN as usize + len)?;
            }
        }
        let at = (self.pos - self.buf_start) as usize;
        match parse_frame(&self.buf, at) {
            Frame::Ok { payload, next } => {
                self.pos = self.buf_start + next as u64;
                Ok(ReadFrame::Ok(payload))
            }
            bad => Ok(ReadFrame::Bad(bad)),
        }
    }

    /// Everything from `position()` to the end of the file.
    pub(crate) fn rest(&mut self) -> io::Result<Vec<u8>> {
        let want = (self.len - self.pos) as usize;
        self.fill(want)?;
        let at = (self.pos - self.buf_start) as usize;
        Ok(self.buf[at..at + want].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimBackend;
    use crate::Backend;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(1), "seg-00000000000000000001.log");
        assert_eq!(classify(&segment_name(42)), FileKind::Segment(42));
        assert_eq!(classify(&snapshot_name(7)), FileKind::Snapshot(7));
        assert_eq!(
            classify("snap-00000000000000000007.snap.tmp"),
            FileKind::Temp
        );
        assert_eq!(classify("seg-1.log"), FileKind::Other);
        assert_eq!(classify("LOCK"), FileKind::Other);
        assert_eq!(classify(SYNCED_THROUGH_FILE), FileKind::Other);
    }

    #[test]
    fn headers_round_trip_and_detect_damage() {
        let h = encode_segment_header(99);
        assert_eq!(
            decode_segment_header(&h),
            Ok(SegmentHeader {
                first: 99,
                version: 2
            })
        );
        // Pinned: version 2, little-endian.
        assert_eq!(&h[0..16], b"MIMEOLOG\x02\0\0\0\0\0\0\0");
        // Version 1 segments (zeros ahead of the records) are still read.
        let mut v1 = h;
        v1[8] = 1;
        let crc = crc32c::crc32c(&v1[0..24]);
        v1[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_segment_header(&v1).map(|h| h.filler()), Ok(0));
        assert_eq!(decode_segment_header(&h).map(|h| h.filler()), Ok(FILLER));
        for i in 0..28 {
            let mut bad = h;
            bad[i] ^= 0x40;
            assert!(decode_segment_header(&bad).is_err(), "byte {i}");
        }
        let sh = SnapshotHeader {
            floor: LogPosition::new(3, 77),
            entries: 5,
        };
        let b = encode_snapshot_header(sh);
        assert_eq!(decode_snapshot_header(&b), Ok(sh));
        for i in 0..44 {
            let mut bad = b;
            bad[i] ^= 1;
            assert!(decode_snapshot_header(&bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn the_synced_through_file_is_pinned_and_checked() {
        let b = encode_synced_through(0x0102);
        assert_eq!(&b[0..16], b"MIMEOSYN\x01\0\0\0\0\0\0\0");
        assert_eq!(&b[16..24], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_synced_through(&b), Ok(0x0102));
        for i in 0..28 {
            let mut bad = b;
            bad[i] ^= 4;
            assert!(decode_synced_through(&bad).is_err(), "byte {i}");
        }
        assert!(decode_synced_through(&b[..31]).is_err());
    }

    #[test]
    fn frames_parse_and_detect_damage() {
        let mut buf = Vec::new();
        push_frame(&mut buf, b"hello");
        push_frame(&mut buf, b"world!");
        assert_eq!(&buf[0..4], &5u32.to_le_bytes());
        let Frame::Ok { payload, next } = parse_frame(&buf, 0) else {
            panic!("first frame")
        };
        assert_eq!(payload, b"hello");
        assert_eq!(next, 13);
        assert!(matches!(
            parse_frame(&buf, next),
            Frame::Ok {
                payload: b"world!",
                ..
            }
        ));
        assert_eq!(parse_frame(&buf[..buf.len() - 1], next), Frame::Truncated);
        assert_eq!(parse_frame(&buf[..3], 0), Frame::Truncated);
        let mut bad = buf.clone();
        bad[10] ^= 1;
        assert_eq!(parse_frame(&bad, 0), Frame::BadChecksum);
        assert_eq!(parse_frame(&[0u8; 16], 0), Frame::BadLength(0));
    }

    #[test]
    fn log_frames_carry_a_checksummed_watermark() {
        let mut buf = Vec::new();
        push_log_frame(&mut buf, 41, b"record");
        let Frame::Ok { payload, .. } = parse_frame(&buf, 0) else {
            panic!("log frame does not parse")
        };
        assert_eq!(split_log_payload(payload), Some((41, &b"record"[..])));
        // The checksum covers the watermark too.
        buf[FRAME_HEADER_LEN as usize] ^= 1;
        assert_eq!(parse_frame(&buf, 0), Frame::BadChecksum);
    }

    #[test]
    fn frame_reader_streams_frames_larger_than_its_buffer() {
        let backend = SimBackend::new();
        let file = backend.create("f").unwrap();
        let big = vec![7u8; READ_CHUNK * 2 + 3];
        let mut buf = vec![0xAA; 5]; // a header to skip
        push_frame(&mut buf, b"a");
        push_frame(&mut buf, &big);
        push_frame(&mut buf, b"c");
        buf.extend_from_slice(&[1, 2, 3]); // a torn tail
        file.write_at(&buf, 0).unwrap();

        let mut reader = FrameReader::new(&*file, buf.len() as u64, 5);
        assert!(matches!(reader.next_frame().unwrap(), ReadFrame::Ok(b"a")));
        assert!(matches!(reader.next_frame().unwrap(), ReadFrame::Ok(p) if p == &big[..]));
        assert!(matches!(reader.next_frame().unwrap(), ReadFrame::Ok(b"c")));
        let tail_at = reader.position();
        assert_eq!(tail_at, buf.len() as u64 - 3);
        assert!(matches!(
            reader.next_frame().unwrap(),
            ReadFrame::Bad(Frame::Truncated)
        ));
        assert_eq!(reader.position(), tail_at);
        assert_eq!(reader.rest().unwrap(), vec![1, 2, 3]);

        let mut exact = FrameReader::new(&*file, tail_at, tail_at);
        assert!(matches!(exact.next_frame().unwrap(), ReadFrame::End));
    }
}
