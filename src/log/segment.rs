//! Segment files: names, the 64-byte header, and the scan that finds where
//! a segment's valid data ends.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::frame::{self, BatchHeader, CheckedRecord, FrameError};
use crate::error::{Error, Result};

/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ANNALSEG";
/// On-disk format version of segments written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header; the first batch starts right after it.
pub const SEGMENT_HEADER_BYTES: u64 = 64;

const H_MAGIC: usize = 0;
const H_VERSION: usize = H_MAGIC + 8;
const H_HEADER_LEN: usize = H_VERSION + 4;
const H_STORE_ID: usize = H_HEADER_LEN + 4;
const H_SEGMENT_ID: usize = H_STORE_ID + 16;
const H_FIRST_POSITION: usize = H_SEGMENT_ID + 8;
const H_PREVIOUS_END: usize = H_FIRST_POSITION + 8;
const H_PREVIOUS_CRC: usize = H_PREVIOUS_END + 8;
const H_CRC: usize = H_PREVIOUS_CRC + 4;
const _: () = assert!(H_CRC + 4 == SEGMENT_HEADER_BYTES as usize);

/// File-name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// The decoded header of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The store this segment belongs to.
    pub store_id: Uuid,
    /// Segment number: 1 for the first, consecutive.
    pub segment_id: u64,
    /// Global position of the first event this segment holds (or will).
    pub first_position: u64,
    /// Where the previous segment's last batch ends (the previous
    /// segment's length once sealed; annal never seals one without a
    /// batch), recorded
    /// when this segment was made: 0 when not recorded (segment 1, or a
    /// header written before annal recorded it).
    pub previous_end: u64,
    /// The batch CRC field of the previous segment's last batch (0 when it
    /// holds none, or when `previous_end` is 0). With `previous_end`, it
    /// chains each segment to the one before it: a segment restored from
    /// another copy of the store does not end as the next one records.
    pub previous_crc: u32,
}

/// File name of segment `id`: 20 decimal digits, so names sort by number.
pub fn file_name(id: u64) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

/// The damage of a segment's name held by a directory, FIFO or device.
pub(crate) fn not_a_regular_file(path: &Path) -> crate::Error {
    crate::Error::corruption(path, 0, "not a regular file, where a segment should be")
}

/// Full path of segment `id` in `dir`.
pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(file_name(id))
}

/// Parses a segment file name back into its number. Segments are numbered
/// from 1, so a name with the number 0 is not a segment's (a file of that
/// name is someone else's, and left alone).
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id > 0)
}

/// The segment that does not belong, when segment headers disagree on the
/// store id, with the reason. `headers` holds (segment number, store id)
/// of every header that could be read; `witnesses` gives the store ids in
/// the headers of the store's other files (index, checkpoints, snapshots),
/// asked for only when the segments disagree.
///
/// A store's files all carry its id. A segment of another store put among
/// them (a restore gone wrong) must be named, whichever number it took:
/// taking segment 1's id as the store's would blame every other segment
/// when the stray file is segment 1. Each segment and each other file
/// counts as one vote for the id it carries; the id with the most votes is
/// the store's, and the first segment with another id is named. When two
/// ids tie, nothing tells which files belong: the reason says so, and
/// names no file as the one to move.
pub fn foreign_segment(headers: &[(u64, Uuid)], witnesses: impl FnOnce() -> Vec<Uuid>) -> Option<(u64, String)> {
    let &(first_segment, first_id) = headers.first()?;
    let &(segment, other) = headers.iter().find(|&&(_, id)| id != first_id)?;
    let witnesses = witnesses();
    let mut votes: Vec<(Uuid, usize)> = Vec::new();
    for id in headers.iter().map(|&(_, id)| id).chain(witnesses.iter().copied()) {
        match votes.iter_mut().find(|(v, _)| *v == id) {
            Some((_, n)) => *n += 1,
            None => votes.push((id, 1)),
        }
    }
    votes.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    let segments_with = |id: Uuid| headers.iter().filter(|&&(_, h)| h == id).count();
    let others_with = |id: Uuid| witnesses.iter().filter(|&&w| w == id).count();
    let (store_id, n) = votes[0];
    if votes.get(1).is_some_and(|&(_, m)| m == n) {
        return Some((
            segment,
            format!(
                "segments of different stores: segment {first_segment} has store id {first_id}, segment {segment} \
                 has {other}, and the store's other files do not tell which belongs: move the segments of the \
                 store that does not belong out of the directory"
            ),
        ));
    }
    let &(stray, stray_id) = headers.iter().find(|&&(_, id)| id != store_id)?;
    Some((
        stray,
        format!(
            "segment belongs to another store (its store id is {stray_id}; {} of the {} segments and {} of the \
             store's other files have store id {store_id})",
            segments_with(store_id),
            headers.len(),
            others_with(store_id)
        ),
    ))
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES as usize];
        b[H_MAGIC..H_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        b[H_VERSION..H_HEADER_LEN].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[H_HEADER_LEN..H_STORE_ID].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        b[H_STORE_ID..H_SEGMENT_ID].copy_from_slice(self.store_id.as_bytes());
        b[H_SEGMENT_ID..H_FIRST_POSITION].copy_from_slice(&self.segment_id.to_le_bytes());
        b[H_FIRST_POSITION..H_PREVIOUS_END].copy_from_slice(&self.first_position.to_le_bytes());
        b[H_PREVIOUS_END..H_PREVIOUS_CRC].copy_from_slice(&self.previous_end.to_le_bytes());
        b[H_PREVIOUS_CRC..H_CRC].copy_from_slice(&self.previous_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[..H_CRC]);
        b[H_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header read from `file`.
    pub fn decode(bytes: &[u8], file: &Path) -> Result<SegmentHeader> {
        let corrupt = |why: &str| Error::corruption(file, 0, format!("segment header: {why}"));
        let Some(b) = bytes.get(..SEGMENT_HEADER_BYTES as usize) else {
            return Err(corrupt("file shorter than its header"));
        };
        if b[H_MAGIC..H_VERSION] != SEGMENT_MAGIC {
            return Err(corrupt("not an annal segment (bad magic)"));
        }
        let crc = u32::from_le_bytes(b[H_CRC..].try_into().unwrap_or_default());
        if crc32fast::hash(&b[..H_CRC]) != crc {
            return Err(corrupt("header CRC mismatch"));
        }
        let version = u32::from_le_bytes(b[H_VERSION..H_HEADER_LEN].try_into().unwrap_or_default());
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let header_len = u32::from_le_bytes(b[H_HEADER_LEN..H_STORE_ID].try_into().unwrap_or_default());
        if u64::from(header_len) != SEGMENT_HEADER_BYTES {
            return Err(corrupt("unexpected header length"));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[H_STORE_ID..H_SEGMENT_ID]);
        Ok(SegmentHeader {
            store_id: Uuid::from_bytes(id),
            segment_id: u64::from_le_bytes(b[H_SEGMENT_ID..H_FIRST_POSITION].try_into().unwrap_or_default()),
            first_position: u64::from_le_bytes(b[H_FIRST_POSITION..H_PREVIOUS_END].try_into().unwrap_or_default()),
            previous_end: u64::from_le_bytes(b[H_PREVIOUS_END..H_PREVIOUS_CRC].try_into().unwrap_or_default()),
            previous_crc: u32::from_le_bytes(b[H_PREVIOUS_CRC..H_CRC].try_into().unwrap_or_default()),
        })
    }
}

/// How the scan of a segment's data ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Valid data ends at `offset`, and everything after it is zero.
    Clean {
        /// End of the last valid batch.
        offset: u64,
    },
    /// Valid data ends at `offset`; after it come bytes that are not a
    /// valid batch (up to `dirty_end`), and no valid batch anywhere later:
    /// the signature of a write torn by a crash.
    TornTail {
        /// End of the last valid batch.
        offset: u64,
        /// End of the last non-zero byte after it.
        dirty_end: u64,
        /// What was wrong at `offset`.
        reason: String,
    },
    /// An invalid batch at `offset` is followed by a valid one at `next`:
    /// damage in the middle of the log, never a torn write.
    Corrupt {
        /// Start of the bad batch.
        offset: u64,
        /// Start of a later valid batch.
        next: u64,
        /// What was wrong at `offset`.
        reason: String,
    },
}

/// Walks the batches of a segment's bytes from `start`, checking each one
/// fully and calling `each` for every batch and record, until the data
/// ends. Decides whether what follows the last valid batch is clean, a
/// torn tail or corruption.
///
/// A valid batch later than invalid bytes makes them corruption only when
/// it could be the log's next (see [`find_next_batch`]): the log's last
/// position before `start` is read from the segment's header when `start`
/// is right after it, and followed through the batches scanned.
pub fn scan(bytes: &[u8], start: u64, each: impl FnMut(u64, &BatchHeader, &[CheckedRecord])) -> ScanEnd {
    let last = (start == SEGMENT_HEADER_BYTES)
        .then(|| SegmentHeader::decode(bytes, Path::new("")).ok())
        .flatten()
        .map(|h| h.first_position.saturating_sub(1));
    scan_after(bytes, start, last, each)
}

/// [`scan`] given the log's last position before `start` (`None`:
/// unknown), as replaying a segment from the index file's end knows it.
pub fn scan_after(
    bytes: &[u8],
    start: u64,
    mut last: Option<u64>,
    mut each: impl FnMut(u64, &BatchHeader, &[CheckedRecord]),
) -> ScanEnd {
    let mut offset = start as usize;
    let mut records = Vec::new();
    loop {
        records.clear();
        let rest = bytes.get(offset..).unwrap_or_default();
        let result = frame::check_batch(rest, |r, _| records.push(r));
        match result {
            Ok(header) => {
                each(offset as u64, &header, &records);
                offset += header.frame_len as usize;
                last = Some(last_position_of(&header));
            }
            Err(FrameError::End) => {
                return match classify_tail(bytes, offset, last, "non-zero bytes after the last batch".into()) {
                    // Zeros where a batch should start, a valid one later.
                    ScanEnd::Corrupt { offset, next, .. } => ScanEnd::Corrupt {
                        offset,
                        next,
                        reason: "zeros where a batch should start".into(),
                    },
                    end => end,
                };
            }
            Err(FrameError::Truncated) => {
                return classify_tail(bytes, offset, last, "batch cut short".into());
            }
            Err(FrameError::Invalid(reason)) => return classify_tail(bytes, offset, last, reason),
        }
    }
}

/// Given that no valid batch starts at `offset`, tells whether the bytes
/// after it are all zero (clean end), garbage only (torn tail), or hold a
/// later valid batch (corruption).
fn classify_tail(bytes: &[u8], offset: usize, last: Option<u64>, reason: String) -> ScanEnd {
    let tail = bytes.get(offset..).unwrap_or_default();
    let Some(last_non_zero) = last_non_zero(tail) else {
        return ScanEnd::Clean { offset: offset as u64 };
    };
    if let Some(next) = find_next_batch(bytes, offset, last) {
        return ScanEnd::Corrupt {
            offset: offset as u64,
            next: next as u64,
            reason,
        };
    }
    ScanEnd::TornTail {
        offset: offset as u64,
        dirty_end: (offset + last_non_zero + 1) as u64,
        reason,
    }
}

/// The index of the last non-zero byte. Checks whole blocks first (the
/// preallocated end of an active segment can be tens of MiB of zeros, and
/// a block-wide OR is many times faster than a byte-by-byte search).
fn last_non_zero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 4096;
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &bytes[start..end];
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return block.iter().rposition(|&b| b != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

/// The last position a valid batch holds.
pub fn last_position_of(header: &BatchHeader) -> u64 {
    header
        .first_position
        .saturating_add(u64::from(header.record_count))
        .saturating_sub(1)
}

/// The fewest bytes one event takes in a batch: a record header, a
/// one-byte stream name and a one-byte event type.
const RECORD_BYTES_MIN: u64 = frame::RECORD_HEADER_BYTES as u64 + 2;

/// Where the log may go on after the bytes at `offset`, where no valid
/// batch starts: the first valid batch after them that could be the log's
/// next, rather than a frame inside an event's payload (an archived copy
/// of a log, say). That is the one starting where the invalid batch says
/// it ends (its magic intact, and its frame length agreeing with its
/// records' lengths), else the first found by its magic (see
/// [`find_valid_batch`]). When `last`, the log's last position
/// before `offset`, is known, a batch counts only if it starts past it
/// with room in the bytes between for the events between (at least
/// 42 bytes each: a record header, a one-byte name and type): the log's own next batch always does.
pub fn find_next_batch(bytes: &[u8], offset: usize, last: Option<u64>) -> Option<usize> {
    let follows = |at: usize| {
        let Ok(header) = frame::check_batch(&bytes[at..], |_, _| {}) else {
            return false;
        };
        let Some(last) = last else { return true };
        let between = header.first_position.saturating_sub(last).saturating_sub(1);
        header.first_position > last && between.saturating_mul(RECORD_BYTES_MIN) <= at.saturating_sub(offset) as u64
    };
    let declared_end = frame::parse_batch_header(bytes.get(offset..).unwrap_or_default())
        .ok()
        .and_then(|h| records_end(bytes, offset, &h))
        .filter(|&end| end < bytes.len());
    if let Some(end) = declared_end.filter(|&end| follows(end)) {
        return Some(end);
    }
    let mut from = offset + 1;
    while let Some(found) = find_valid_batch(bytes, from) {
        if follows(found) {
            return Some(found);
        }
        from = found + 1;
    }
    None
}

/// Where the batch at `offset` (its header `header`) ends, when its header
/// and its records' length fields agree on it: the records, walked by
/// their lengths, end exactly where the header's frame length says. (A
/// damaged payload leaves both alone; a damaged length field does not
/// agree with the others.)
fn records_end(bytes: &[u8], offset: usize, header: &BatchHeader) -> Option<usize> {
    let end = offset.checked_add(header.frame_len as usize)?;
    let mut at = offset + frame::BATCH_HEADER_BYTES;
    for _ in 0..header.record_count {
        let len = bytes.get(at..at.checked_add(4)?)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        if len < frame::RECORD_HEADER_BYTES {
            return None;
        }
        at = at.checked_add(len)?;
        if at > end {
            return None;
        }
    }
    (at == end).then_some(end)
}

/// One step of [`walk_valid_frames`].
pub enum Frame<'a> {
    /// A valid batch frame at this offset, with its records.
    Valid(usize, &'a BatchHeader, &'a [CheckedRecord]),
    /// Bytes that are no valid frame, skipped.
    Skipped(std::ops::Range<usize>),
}

/// Walks the valid batch frames of a damaged log's bytes from `start`, as
/// the offline tools read them: past each damaged stretch to the batch
/// that can follow it ([`find_next_batch`], without the log's positions: a
/// frame inside a payload that seemed to continue them would hide the
/// log's own batches after it), until only zeros are left. `each` may stop
/// the walk.
pub fn walk_valid_frames(bytes: &[u8], start: usize, mut each: impl FnMut(Frame<'_>) -> ControlFlow<()>) {
    let mut at = start.min(bytes.len());
    let mut records = Vec::new();
    while at < bytes.len() {
        records.clear();
        let step = match frame::check_batch(&bytes[at..], |r, _| records.push(r)) {
            Ok(header) => {
                let step = each(Frame::Valid(at, &header, &records));
                at += header.frame_len as usize;
                step
            }
            Err(FrameError::End) if bytes[at..].iter().all(|&b| b == 0) => break,
            Err(_) => {
                let next = find_next_batch(bytes, at, None).unwrap_or(bytes.len());
                let step = each(Frame::Skipped(at..next));
                at = next;
                step
            }
        };
        if step.is_break() {
            break;
        }
    }
}

/// Finds the first offset at or after `from` where a fully valid batch
/// frame starts. Used only after an error, to tell corruption (valid data
/// follows) from a torn tail (nothing valid follows): see
/// [`find_next_batch`], which also tells the log's next batch from a frame
/// inside an event's payload.
pub fn find_valid_batch(bytes: &[u8], from: usize) -> Option<usize> {
    let magic = frame::BATCH_MAGIC.to_le_bytes();
    let mut at = from;
    while let Some(found) = bytes
        .get(at..)
        .and_then(|rest| rest.windows(4).position(|w| w == magic))
    {
        let candidate = at + found;
        if frame::check_batch(&bytes[candidate..], |_, _| {}).is_ok() {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_format_md() {
        crate::format_doc::assert_layout(
            "### Segment header (64 bytes)",
            &[
                H_MAGIC,
                H_VERSION,
                H_HEADER_LEN,
                H_STORE_ID,
                H_SEGMENT_ID,
                H_FIRST_POSITION,
                H_PREVIOUS_END,
                H_PREVIOUS_CRC,
                H_CRC,
            ],
            SEGMENT_HEADER_BYTES as usize,
        );
    }
    use crate::event::EventData;
    use crate::log::frame::{RecordInput, encode_batch};

    #[test]
    fn header_round_trip_and_checks() {
        let h = SegmentHeader {
            store_id: Uuid::from_u128(42),
            segment_id: 3,
            first_position: 77,
            previous_end: 4_321,
            previous_crc: 0xdead_beef,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b, Path::new("x")).unwrap(), h);
        for i in 0..b.len() {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(SegmentHeader::decode(&c, Path::new("x")).is_err(), "byte {i}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(file_name(12), "00000000000000000012.seg");
        assert_eq!(parse_file_name(&file_name(12)), Some(12));
        assert_eq!(parse_file_name("12.seg"), None);
        assert_eq!(parse_file_name(&file_name(0)), None, "segments are numbered from 1");
        assert_eq!(parse_file_name("00000000000000000012.seg.tmp"), None);
    }

    fn log_with_batches(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        let mut ends = Vec::new();
        for i in 0..n {
            let e = EventData::new("T", vec![i as u8; 10]);
            let input = RecordInput {
                stream: "s",
                version: i as u64 + 1,
                event: &e,
            };
            encode_batch(&mut buf, i as u64 + 1, 0, std::iter::once(input));
            ends.push(buf.len());
        }
        buf.resize(buf.len() + 256, 0);
        (buf, ends)
    }

    #[test]
    fn scan_classifies_tails() {
        let (buf, ends) = log_with_batches(3);
        let mut count = 0;
        let end = scan(&buf, SEGMENT_HEADER_BYTES, |_, _, _| count += 1);
        assert_eq!(end, ScanEnd::Clean { offset: ends[2] as u64 });
        assert_eq!(count, 3);

        // A torn last batch: cut its second half to zeros.
        let mut torn = buf.clone();
        let mid = (ends[1] + ends[2]) / 2;
        torn[mid..ends[2]].fill(0);
        match scan(&torn, SEGMENT_HEADER_BYTES, |_, _, _| {}) {
            ScanEnd::TornTail { offset, dirty_end, .. } => {
                assert_eq!(offset, ends[1] as u64);
                // The last non-zero byte of what is left of the torn batch.
                let expected = torn[..mid].iter().rposition(|&b| b != 0).map(|i| i + 1);
                assert_eq!(Some(dirty_end as usize), expected);
            }
            other => panic!("expected torn tail, got {other:?}"),
        }

        // A flipped byte in the middle batch, with a valid one after it.
        let mut bad = buf.clone();
        bad[ends[0] + 45] ^= 1;
        match scan(&bad, SEGMENT_HEADER_BYTES, |_, _, _| {}) {
            ScanEnd::Corrupt { offset, next, .. } => {
                assert_eq!(offset, ends[0] as u64);
                assert_eq!(next, ends[1] as u64);
            }
            other => panic!("expected corruption, got {other:?}"),
        }

        // The middle batch zeroed, a valid one after it: said as zeros.
        let mut zeroed = buf.clone();
        zeroed[ends[0]..ends[1]].fill(0);
        match scan(&zeroed, SEGMENT_HEADER_BYTES, |_, _, _| {}) {
            ScanEnd::Corrupt { offset, next, reason } => {
                assert_eq!((offset, next), (ends[0] as u64, ends[1] as u64));
                assert_eq!(reason, "zeros where a batch should start");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    /// A log of batches 1 and 2, then batch 3 whose event data holds a copy
    /// of batch 2's whole frame (an archived log, say), then batch 4; with
    /// where each batch ends and where the copy starts.
    fn log_with_a_frame_in_a_payload() -> (Vec<u8>, Vec<usize>, usize) {
        let (mut buf, mut ends) = log_with_batches(2);
        buf.truncate(ends[1]);
        let copy = buf[ends[0]..ends[1]].to_vec();
        for (position, data) in [
            (3u64, [b"archive:".to_vec(), copy, b"end of archive".to_vec()].concat()),
            (4, b"after".to_vec()),
        ] {
            let e = EventData::new("T", data);
            let input = RecordInput {
                stream: "s",
                version: position,
                event: &e,
            };
            encode_batch(&mut buf, position, 0, std::iter::once(input));
            ends.push(buf.len());
        }
        let copy_at = buf.windows(8).position(|w| w == b"archive:").map(|i| i + 8).unwrap();
        buf.resize(buf.len() + 256, 0);
        (buf, ends, copy_at)
    }

    /// A frame inside an event's payload is not the log's next batch: a
    /// write torn after it is a torn tail, not corruption, and damage
    /// before it resumes at the batch after the damaged one. A damaged
    /// frame length does not hide the log's real next batch.
    #[test]
    fn a_frame_inside_a_payload_is_not_the_logs_next_batch() {
        let (buf, ends, copy_at) = log_with_a_frame_in_a_payload();
        assert!(
            frame::check_batch(&buf[copy_at..], |_, _| {}).is_ok(),
            "the copy is a valid frame"
        );
        assert_eq!(
            scan(&buf, SEGMENT_HEADER_BYTES, |_, _, _| {}),
            ScanEnd::Clean { offset: ends[3] as u64 }
        );

        // Batch 4 never written, batch 3 torn at its end: the copy in its
        // payload is intact, and still no next batch.
        let mut torn = buf.clone();
        torn[ends[2]..].fill(0);
        torn[ends[2] - 3..ends[2]].fill(0);
        let end = scan(&torn, SEGMENT_HEADER_BYTES, |_, _, _| {});
        assert!(
            matches!(end, ScanEnd::TornTail { offset, .. } if offset == ends[1] as u64),
            "{end:?}"
        );
        assert_eq!(
            find_valid_batch(&torn, ends[1] + 1),
            Some(copy_at),
            "what the search finds"
        );
        // (Only the log's last position tells: without it, the copy could
        // be the log's next batch.)
        assert_eq!(find_next_batch(&torn, ends[1], None), Some(copy_at));
        assert_eq!(find_next_batch(&torn, ends[1], Some(2)), None);

        // Batch 3 damaged in its payload, batch 4 after it: corruption,
        // resuming at batch 4 (where batch 3 says it ends), not at the copy.
        let mut damaged = buf.clone();
        damaged[copy_at - 2] ^= 1;
        match scan(&damaged, SEGMENT_HEADER_BYTES, |_, _, _| {}) {
            ScanEnd::Corrupt { offset, next, .. } => assert_eq!((offset, next), (ends[1] as u64, ends[2] as u64)),
            other => panic!("expected corruption, got {other:?}"),
        }
        assert_eq!(find_next_batch(&damaged, ends[1], None), Some(ends[2]));

        // Batch 2's frame length damaged (its header no longer says where
        // it ends): batch 3, which continues the positions, is found.
        let mut long = buf.clone();
        long[ends[0] + 5] ^= 0x01;
        match scan(&long, SEGMENT_HEADER_BYTES, |_, _, _| {}) {
            ScanEnd::Corrupt { offset, next, .. } => assert_eq!((offset, next), (ends[0] as u64, ends[1] as u64)),
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}
