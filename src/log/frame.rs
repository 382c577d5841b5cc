//! Batch frames and event records: the bytes of the log (docs/FORMAT.md).
//!
//! One append becomes one batch frame: a 32-byte header followed by one
//! record per event. Every record carries a CRC of its own bytes, so a read
//! can check one event without touching its neighbours; the batch header
//! carries a CRC over itself and all record CRCs, so a batch is valid only
//! when every one of its records is, which is what makes appends atomic.

use bytes::Bytes;
use uuid::Uuid;

use crate::event::{EventData, RecordedEvent};
use crate::le::{u32_at, u64_at};
use crate::limits;

/// Magic number opening every batch frame ("ABT1" read as little-endian).
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"ABT1");
/// Size of the batch frame header.
pub const BATCH_HEADER_BYTES: usize = 32;
/// Size of the fixed part of a record.
pub const RECORD_HEADER_BYTES: usize = 40;

// Field offsets of the batch header, each derived from the one before.
const B_MAGIC: usize = 0;
const B_FRAME_LEN: usize = B_MAGIC + 4;
const B_COUNT: usize = B_FRAME_LEN + 4;
const B_CRC: usize = B_COUNT + 4;
const B_FIRST_POSITION: usize = B_CRC + 4;
const B_TIMESTAMP: usize = B_FIRST_POSITION + 8;
const _: () = assert!(B_TIMESTAMP + 8 == BATCH_HEADER_BYTES);

// Field offsets of the record header.
const R_LEN: usize = 0;
const R_CRC: usize = R_LEN + 4;
const R_BATCH_BACK: usize = R_CRC + 4;
const R_VERSION: usize = R_BATCH_BACK + 4;
const R_ID: usize = R_VERSION + 4;
const R_SCHEMA: usize = R_ID + 16;
const R_STREAM_LEN: usize = R_SCHEMA + 2;
const R_TYPE_LEN: usize = R_STREAM_LEN + 1;
const R_METADATA_LEN: usize = R_TYPE_LEN + 1;
const _: () = assert!(R_METADATA_LEN + 4 == RECORD_HEADER_BYTES);

/// Where a record's event id lies, from the record's start (16 bytes).
pub(crate) const RECORD_EVENT_ID_AT: usize = R_ID;

/// Why bytes at some offset are not a valid batch frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are zero: the end of the written log.
    #[error("end of the written log")]
    End,
    /// The frame claims more bytes than are left in the file.
    #[error("batch cut short")]
    Truncated,
    /// The bytes are not a well-formed, checksum-valid frame.
    #[error("{0}")]
    Invalid(String),
}

/// The decoded header of a batch frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Total frame length in bytes.
    pub frame_len: u32,
    /// Number of records in the frame.
    pub record_count: u32,
    /// The CRC stored in the header.
    pub crc: u32,
    /// Global position of the first record.
    pub first_position: u64,
    /// Append time, microseconds since the Unix epoch.
    pub timestamp_micros: i64,
}

/// The decoded fixed part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Record length in bytes, header included.
    pub record_len: u32,
    /// The CRC stored in the record.
    pub crc: u32,
    /// Distance back from this record to the start of its batch frame.
    pub batch_back: u32,
    /// Stream version.
    pub version: u32,
    /// Event id.
    pub id: Uuid,
    /// Schema version of the payload.
    pub schema_version: u16,
    /// Length of the stream name.
    pub stream_len: u8,
    /// Length of the event type.
    pub type_len: u8,
    /// Length of the metadata.
    pub metadata_len: u32,
}

/// One event of a batch being encoded.
pub struct RecordInput<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Stream version.
    pub version: u64,
    /// The event.
    pub event: &'a EventData,
}

/// Encoded size of one record.
#[inline]
pub fn record_len(stream: &str, event: &EventData) -> usize {
    RECORD_HEADER_BYTES + stream.len() + event.event_type.len() + event.metadata.len() + event.data.len()
}

#[inline]
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Appends one encoded batch frame to `buf` and returns its length.
///
/// The caller has validated names, sizes and versions against
/// [`crate::limits`]; this function asserts them (programmer errors).
pub fn encode_batch<'a>(
    buf: &mut Vec<u8>,
    first_position: u64,
    timestamp_micros: i64,
    records: impl IntoIterator<Item = RecordInput<'a>>,
) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; BATCH_HEADER_BYTES]);
    let mut count = 0u32;
    for input in records {
        let record_start = buf.len();
        let event = input.event;
        let len = record_len(input.stream, event);
        assert!(input.stream.len() <= limits::STREAM_NAME_BYTES_MAX);
        assert!(event.event_type.len() <= limits::EVENT_TYPE_BYTES_MAX);
        assert!(input.version <= limits::STREAM_VERSION_MAX);
        let mut r = [0u8; RECORD_HEADER_BYTES];
        put(&mut r, R_LEN, &(len as u32).to_le_bytes());
        // The record CRC covers the length field, then everything after
        // the CRC field: with the length also in the CRC field's place for
        // now, those bytes are contiguous, one call to hash.
        put(&mut r, R_CRC, &(len as u32).to_le_bytes());
        put(&mut r, R_BATCH_BACK, &((record_start - start) as u32).to_le_bytes());
        put(&mut r, R_VERSION, &(input.version as u32).to_le_bytes());
        put(&mut r, R_ID, input.event.id.as_bytes());
        put(&mut r, R_SCHEMA, &event.schema_version.to_le_bytes());
        r[R_STREAM_LEN] = input.stream.len() as u8;
        r[R_TYPE_LEN] = event.event_type.len() as u8;
        put(&mut r, R_METADATA_LEN, &(event.metadata.len() as u32).to_le_bytes());
        buf.reserve(len);
        buf.extend_from_slice(&r);
        buf.extend_from_slice(input.stream.as_bytes());
        buf.extend_from_slice(event.event_type.as_bytes());
        buf.extend_from_slice(&event.metadata);
        buf.extend_from_slice(&event.data);
        let crc = crc_of(&buf[record_start + R_CRC..]);
        debug_assert_eq!(crc, record_crc(&buf[record_start..]));
        put(&mut buf[record_start..], R_CRC, &crc.to_le_bytes());
        count += 1;
    }
    let frame_len = buf.len() - start;
    let h = &mut buf[start..start + BATCH_HEADER_BYTES];
    put(h, B_MAGIC, &BATCH_MAGIC.to_le_bytes());
    put(h, B_FRAME_LEN, &(frame_len as u32).to_le_bytes());
    put(h, B_COUNT, &count.to_le_bytes());
    put(h, B_FIRST_POSITION, &first_position.to_le_bytes());
    put(h, B_TIMESTAMP, &timestamp_micros.to_le_bytes());
    // The header (but its CRC field), then the records' CRCs in order,
    // gathered to be hashed in a few long pieces rather than a few bytes
    // at a time.
    let mut batch_crc = crc_hasher();
    let mut crcs = [0u8; 256];
    put(&mut crcs, 0, &h[..B_CRC]);
    put(&mut crcs, B_CRC, &h[B_FIRST_POSITION..]);
    let mut crcs_len = BATCH_HEADER_BYTES - 4;
    let mut at = start + BATCH_HEADER_BYTES;
    while at < buf.len() {
        if crcs_len == crcs.len() {
            batch_crc.update(&crcs);
            crcs_len = 0;
        }
        put(&mut crcs, crcs_len, &buf[at + R_CRC..at + R_CRC + 4]);
        crcs_len += 4;
        at += u32_at(buf, at + R_LEN) as usize;
    }
    batch_crc.update(&crcs[..crcs_len]);
    let crc = batch_crc.finalize();
    put(&mut buf[start..], B_CRC, &crc.to_le_bytes());
    frame_len
}

/// The CRC field of a batch frame that [`encode_batch`] has just written
/// at the start of `frame` (0 when `frame` is shorter than a header).
#[inline]
pub fn encoded_batch_crc(frame: &[u8]) -> u32 {
    frame
        .get(B_CRC..B_CRC + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A CRC-32 hasher, copied from one made once: making one with
/// `crc32fast::Hasher::new` looks up the CPU's features each time, a
/// tenth of the cost of hashing a small record.
#[inline]
fn crc_hasher() -> crc32fast::Hasher {
    static MADE: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    MADE.get_or_init(crc32fast::Hasher::new).clone()
}

/// CRC-32 of `bytes` (what `crc32fast::hash` gives).
#[inline]
fn crc_of(bytes: &[u8]) -> u32 {
    let mut h = crc_hasher();
    h.update(bytes);
    h.finalize()
}

/// CRC of a record: its length field and everything after its CRC field.
fn record_crc(record: &[u8]) -> u32 {
    let mut h = crc_hasher();
    h.update(&record[R_LEN..R_CRC]);
    h.update(&record[R_BATCH_BACK..]);
    h.finalize()
}

/// Decodes a batch header from the start of `bytes` (no CRC check).
pub fn parse_batch_header(bytes: &[u8]) -> Result<BatchHeader, FrameError> {
    if bytes.len() < 4 || u32_at(bytes, B_MAGIC) == 0 {
        return Err(FrameError::End);
    }
    // The magic first: a few stray bytes at the end of a file are not a
    // batch cut short.
    if u32_at(bytes, B_MAGIC) != BATCH_MAGIC {
        return Err(FrameError::Invalid("bad batch magic".into()));
    }
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(FrameError::Truncated);
    }
    let header = BatchHeader {
        frame_len: u32_at(bytes, B_FRAME_LEN),
        record_count: u32_at(bytes, B_COUNT),
        crc: u32_at(bytes, B_CRC),
        first_position: u64_at(bytes, B_FIRST_POSITION),
        timestamp_micros: u64_at(bytes, B_TIMESTAMP) as i64,
    };
    let min_len = BATCH_HEADER_BYTES + RECORD_HEADER_BYTES;
    if (header.frame_len as usize) < min_len || header.frame_len as usize > limits::BATCH_BYTES_MAX {
        return Err(FrameError::Invalid(format!(
            "batch length {} out of range",
            header.frame_len
        )));
    }
    if header.record_count == 0 || header.record_count as usize > limits::BATCH_EVENTS_MAX {
        return Err(FrameError::Invalid(format!(
            "record count {} out of range",
            header.record_count
        )));
    }
    Ok(header)
}

/// Decodes a record header from the start of `bytes` (no CRC check).
pub fn parse_record_header(bytes: &[u8]) -> Option<RecordHeader> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return None;
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[R_ID..R_ID + 16]);
    Some(RecordHeader {
        record_len: u32_at(bytes, R_LEN),
        crc: u32_at(bytes, R_CRC),
        batch_back: u32_at(bytes, R_BATCH_BACK),
        version: u32_at(bytes, R_VERSION),
        id: Uuid::from_bytes(id),
        schema_version: u16::from_le_bytes([bytes[R_SCHEMA], bytes[R_SCHEMA + 1]]),
        stream_len: bytes[R_STREAM_LEN],
        type_len: bytes[R_TYPE_LEN],
        metadata_len: u32_at(bytes, R_METADATA_LEN),
    })
}

/// A record of a checked batch, as found by [`check_batch`].
#[derive(Clone, Copy, Debug)]
pub struct CheckedRecord {
    /// Offset of the record from the start of the frame.
    pub offset: u32,
    /// Its header.
    pub header: RecordHeader,
}

impl RecordHeader {
    /// Byte range of the stream name within the record.
    pub fn stream_range(&self) -> std::ops::Range<usize> {
        RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + usize::from(self.stream_len)
    }
}

/// Fully checks the batch frame at the start of `bytes`: header, every
/// record's bounds, CRC and names, and the batch CRC. Calls `each` for
/// every record, in order, only once the whole batch is known to be valid.
pub fn check_batch(bytes: &[u8], mut each: impl FnMut(CheckedRecord, &[u8])) -> Result<BatchHeader, FrameError> {
    let header = parse_batch_header(bytes)?;
    let frame_len = header.frame_len as usize;
    let Some(frame) = bytes.get(..frame_len) else {
        return Err(FrameError::Truncated);
    };
    let mut batch_crc = crc_hasher();
    batch_crc.update(&frame[..B_CRC]);
    batch_crc.update(&frame[B_FIRST_POSITION..BATCH_HEADER_BYTES]);
    let mut offset = BATCH_HEADER_BYTES;
    for i in 0..header.record_count {
        let record = check_record(frame, offset, i)?;
        batch_crc.update(&record.crc.to_le_bytes());
        offset += record.record_len as usize;
    }
    if offset != frame_len {
        return Err(FrameError::Invalid(format!(
            "records end at byte {offset} but the batch is {frame_len} bytes"
        )));
    }
    if batch_crc.finalize() != header.crc {
        return Err(FrameError::Invalid("batch CRC mismatch".into()));
    }
    let mut offset = BATCH_HEADER_BYTES;
    for _ in 0..header.record_count {
        // Checked above: every header parses and fits in the frame.
        if let Some(h) = parse_record_header(&frame[offset..]) {
            let record = &frame[offset..offset + h.record_len as usize];
            each(
                CheckedRecord {
                    offset: offset as u32,
                    header: h,
                },
                record,
            );
            offset += h.record_len as usize;
        }
    }
    Ok(header)
}

/// Checks the record at `offset` of a frame: bounds, CRC, names.
fn check_record(frame: &[u8], offset: usize, index: u32) -> Result<RecordHeader, FrameError> {
    let bad = |what: &str| FrameError::Invalid(format!("record {index} of the batch: {what}"));
    let Some(h) = frame.get(offset..).and_then(parse_record_header) else {
        return Err(bad("header runs past the end of the batch"));
    };
    let len = h.record_len as usize;
    let fixed = RECORD_HEADER_BYTES + usize::from(h.stream_len) + usize::from(h.type_len);
    if len < fixed || offset + len > frame.len() {
        return Err(bad("length out of range"));
    }
    let Some(record) = frame.get(offset..offset + len) else {
        return Err(bad("length out of range"));
    };
    if record_crc(record) != h.crc {
        return Err(bad("record CRC mismatch"));
    }
    if h.batch_back as usize != offset {
        return Err(bad("wrong back-offset to its batch"));
    }
    if (h.metadata_len as usize) > len - fixed {
        return Err(bad("metadata length out of range"));
    }
    if h.stream_len == 0 || h.type_len == 0 {
        return Err(bad("empty stream name or event type"));
    }
    // Each on its own: two invalid halves can join into valid UTF-8.
    let stream_end = RECORD_HEADER_BYTES + usize::from(h.stream_len);
    if std::str::from_utf8(&record[RECORD_HEADER_BYTES..stream_end]).is_err() {
        return Err(bad("stream name is not UTF-8"));
    }
    if std::str::from_utf8(&record[stream_end..fixed]).is_err() {
        return Err(bad("event type is not UTF-8"));
    }
    if h.version == 0 {
        return Err(bad("stream version 0"));
    }
    Ok(h)
}

/// The append time in a batch header at the start of `batch` (0 when the
/// bytes are too short, which a checked record's batch never is).
#[inline]
pub fn batch_timestamp(batch: &[u8]) -> i64 {
    batch
        .get(..BATCH_HEADER_BYTES)
        .map_or(0, |b| u64_at(b, B_TIMESTAMP) as i64)
}

/// Builds a [`RecordedEvent`] for the record starting at `offset` of
/// `segment`, whose bytes have been checked (see [`check_batch`]).
///
/// Still bounds-checks everything, so a bug elsewhere cannot cause a panic
/// or an out-of-bounds read; returns `None` when the bytes do not fit or
/// the record's batch does not hold `position`.
#[inline]
pub fn decode_checked_record(segment: &Bytes, offset: usize, position: u64) -> Option<RecordedEvent> {
    let event = Layout::of(segment, offset)?.event(segment, offset, position);
    batch_holds(&event.bytes, position).then_some(event)
}

/// [`decode_checked_record`], building the event only when `keep` accepts
/// its stream name and event type (raw bytes, as written: valid UTF-8):
/// `Some(None)` for a record it turns away, without the cost of an event
/// (a reference to the map, and the names' UTF-8 checks). A record it
/// turns away is checked all the same: damage is reported (`None`)
/// whatever `keep` says.
#[inline]
pub fn decode_checked_record_if(
    segment: &Bytes,
    offset: usize,
    position: u64,
    keep: impl FnOnce(&[u8], &[u8]) -> bool,
) -> Option<Option<RecordedEvent>> {
    let layout = Layout::of(segment, offset)?;
    let record = segment.get(offset..offset + layout.len)?;
    let stream = record.get(RECORD_HEADER_BYTES..layout.stream_end)?;
    let event_type = record.get(layout.stream_end..layout.type_end)?;
    if keep(stream, event_type) {
        // Parses the header again: sharing `layout` here measured 2 %
        // slower on unfiltered reads (`cargo bench --bench read`), which
        // take the other path but lost some of their code layout.
        return decode_checked_record(segment, offset, position).map(Some);
    }
    batch_holds(segment.get(layout.batch_start..)?, position).then_some(None)
}

/// Whether the batch frame at the start of `batch` holds `position`: an
/// index that points at another batch (one copied over this one, CRCs and
/// all) is not read from. (Wrapping: a position before the batch's is far
/// past its count.)
#[inline(always)]
fn batch_holds(batch: &[u8], position: u64) -> bool {
    let Some(b) = batch.first_chunk::<BATCH_HEADER_BYTES>() else {
        return false;
    };
    let first_position = u64_at(b, B_FIRST_POSITION);
    let count = u32_at(b, B_COUNT);
    position.wrapping_sub(first_position) < u64::from(count)
}

/// Where a checked record's parts are, relative to the record.
#[derive(Clone, Copy)]
struct Layout<'a> {
    header: &'a [u8; RECORD_HEADER_BYTES],
    /// Where the record's batch starts in the segment.
    batch_start: usize,
    len: usize,
    batch_back: usize,
    stream_end: usize,
    type_end: usize,
    metadata_end: usize,
}

impl<'a> Layout<'a> {
    /// The layout of the record at `offset`, once every part is known to
    /// fit.
    #[inline(always)]
    fn of(segment: &'a Bytes, offset: usize) -> Option<Self> {
        // A fixed-size header: the field reads below need no bounds checks.
        let header: &[u8; RECORD_HEADER_BYTES] = segment
            .get(offset..offset.checked_add(RECORD_HEADER_BYTES)?)?
            .try_into()
            .ok()?;
        let field = |at: usize| u32_at(header, at) as usize;
        let len = field(R_LEN);
        let batch_back = field(R_BATCH_BACK);
        let stream_end = RECORD_HEADER_BYTES + usize::from(header[R_STREAM_LEN]);
        let type_end = stream_end + usize::from(header[R_TYPE_LEN]);
        let metadata_end = type_end.checked_add(field(R_METADATA_LEN))?;
        if metadata_end > len || batch_back < BATCH_HEADER_BYTES || offset.checked_add(len)? > segment.len() {
            return None;
        }
        // Every offset kept is at most `batch_back + len`: one check covers
        // all.
        u32::try_from(batch_back.checked_add(len)?).ok()?;
        Some(Layout {
            header,
            batch_start: offset.checked_sub(batch_back)?,
            len,
            batch_back,
            stream_end,
            type_end,
            metadata_end,
        })
    }

    /// The event of the record at `offset` of `segment`.
    #[inline(always)]
    fn event(&self, segment: &Bytes, offset: usize, position: u64) -> RecordedEvent {
        let h = self.header;
        let shift = |at: usize| (self.batch_back + at) as u32;
        let mut id = [0u8; 16];
        id.copy_from_slice(&h[R_ID..R_ID + 16]);
        RecordedEvent {
            bytes: segment.slice(self.batch_start..offset + self.len),
            position,
            version: u64::from(u32_at(h, R_VERSION)),
            id: Uuid::from_bytes(id),
            schema_version: u16::from_le_bytes([h[R_SCHEMA], h[R_SCHEMA + 1]]),
            record_at: shift(0),
            stream_end: shift(self.stream_end),
            type_end: shift(self.type_end),
            metadata_end: shift(self.metadata_end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copied hasher starts from CRC-32's initial state: the standard
    /// check value, and `crc32fast::hash` at every length around its
    /// block sizes.
    #[test]
    fn copied_hashers_hash_like_new_ones() {
        assert_eq!(crc_of(b"123456789"), 0xCBF4_3926);
        let bytes: Vec<u8> = (0..600u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in 0..bytes.len() {
            assert_eq!(crc_of(&bytes[..len]), crc32fast::hash(&bytes[..len]), "{len}");
        }
    }

    #[test]
    fn layouts_match_format_md() {
        crate::format_doc::assert_layout(
            "### Batch frame (one per append)",
            &[B_MAGIC, B_FRAME_LEN, B_COUNT, B_CRC, B_FIRST_POSITION, B_TIMESTAMP],
            BATCH_HEADER_BYTES,
        );
        crate::format_doc::assert_layout(
            "### Record (one per event)",
            &[
                R_LEN,
                R_CRC,
                R_BATCH_BACK,
                R_VERSION,
                R_ID,
                R_SCHEMA,
                R_STREAM_LEN,
                R_TYPE_LEN,
                R_METADATA_LEN,
            ],
            RECORD_HEADER_BYTES,
        );
    }

    fn sample() -> (Vec<u8>, Vec<EventData>) {
        let events = vec![
            EventData::new("Created", &b"{\"a\":1}"[..]).with_metadata(&b"{}"[..]),
            EventData::new("Renamed", &b"xyz"[..]).with_schema_version(3),
        ];
        let mut buf = Vec::new();
        let inputs = events.iter().enumerate().map(|(i, e)| RecordInput {
            stream: "Order-1",
            version: i as u64 + 1,
            event: e,
        });
        let len = encode_batch(&mut buf, 10, 1234, inputs);
        assert_eq!(len, buf.len());
        (buf, events)
    }

    #[test]
    fn round_trip() {
        let (buf, events) = sample();
        let mut seen = Vec::new();
        let header = check_batch(&buf, |r, _| seen.push(r)).unwrap();
        assert_eq!(header.first_position, 10);
        assert_eq!(header.record_count, 2);
        assert_eq!(header.timestamp_micros, 1234);
        let bytes = Bytes::from(buf);
        for (i, r) in seen.iter().enumerate() {
            let e = decode_checked_record(&bytes, r.offset as usize, 10 + i as u64).unwrap();
            assert_eq!(e.stream(), "Order-1");
            assert_eq!(e.event_type(), events[i].event_type());
            assert_eq!(e.data(), events[i].data());
            assert_eq!(e.metadata(), events[i].metadata());
            assert_eq!(e.id(), events[i].id());
            assert_eq!(e.version(), i as u64 + 1);
            assert_eq!(e.schema_version(), events[i].schema_version);
            assert_eq!(e.timestamp_micros(), 1234);
        }
    }

    #[test]
    fn a_filter_sees_the_names_and_never_hides_damage() {
        let (buf, _) = sample();
        let mut seen = Vec::new();
        check_batch(&buf, |r, _| seen.push(r)).unwrap();
        let bytes = Bytes::from(buf);
        let at = seen[1].offset as usize;
        let mut names = None;
        let kept = decode_checked_record_if(&bytes, at, 11, |stream, event_type| {
            names = Some((stream.to_vec(), event_type.to_vec()));
            true
        });
        assert_eq!(names, Some((b"Order-1".to_vec(), b"Renamed".to_vec())));
        assert_eq!(
            kept.flatten().map(|e| e.id()),
            Some(decode_checked_record(&bytes, at, 11).unwrap().id())
        );
        assert!(matches!(
            decode_checked_record_if(&bytes, at, 11, |_, _| false),
            Some(None)
        ));
        // Position 12 is not in this batch (10 and 11 are): damage, whatever
        // the filter says.
        assert!(decode_checked_record_if(&bytes, at, 12, |_, _| false).is_none());
        assert!(decode_checked_record_if(&bytes, at, 12, |_, _| true).is_none());
        assert!(decode_checked_record_if(&bytes, at + 1, 11, |_, _| false).is_none());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let (buf, _) = sample();
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut copy = buf.clone();
                copy[byte] ^= 1 << bit;
                assert!(
                    check_batch(&copy, |_, _| {}).is_err(),
                    "flip at {byte}:{bit} undetected"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let (buf, _) = sample();
        for cut in 0..buf.len() {
            let r = check_batch(&buf[..cut], |_, _| {});
            assert!(r.is_err(), "cut at {cut} accepted");
        }
    }

    /// Recomputes a one-record batch's record and batch CRCs after its
    /// bytes were edited.
    fn reseal(buf: &mut [u8]) {
        let at = BATCH_HEADER_BYTES;
        let crc = record_crc(&buf[at..]);
        put(&mut buf[at..], R_CRC, &crc.to_le_bytes());
        let mut batch_crc = crc_hasher();
        batch_crc.update(&buf[..B_CRC]);
        batch_crc.update(&buf[B_FIRST_POSITION..BATCH_HEADER_BYTES]);
        batch_crc.update(&buf[at + R_CRC..at + R_CRC + 4]);
        let crc = batch_crc.finalize();
        put(buf, B_CRC, &crc.to_le_bytes());
    }

    #[test]
    fn stream_name_and_event_type_are_each_checked_for_utf8() {
        // Stream "a", type "éb" (0xC3 0xA9 'b'); then the split moved by
        // one byte: stream "a\xC3", type "\xA9b". Joined, still UTF-8.
        let event = EventData::new("éb", &b"{}"[..]);
        let mut buf = Vec::new();
        let input = RecordInput {
            stream: "a",
            version: 1,
            event: &event,
        };
        encode_batch(&mut buf, 1, 0, [input]);
        assert!(check_batch(&buf, |_, _| {}).is_ok());
        buf[BATCH_HEADER_BYTES + R_STREAM_LEN] = 2;
        buf[BATCH_HEADER_BYTES + R_TYPE_LEN] = 2;
        reseal(&mut buf);
        assert_eq!(
            check_batch(&buf, |_, _| {}),
            Err(FrameError::Invalid(
                "record 0 of the batch: stream name is not UTF-8".into()
            ))
        );
    }

    /// A record whose back offset is wrong but covered by valid CRCs (a
    /// writer bug, or a crafted file) is refused: reads find a record's
    /// batch header through that offset. (Mutation review.)
    #[test]
    fn a_wrong_back_offset_under_valid_crcs_is_refused() {
        let event = EventData::new("T", &b"{}"[..]);
        let mut buf = Vec::new();
        let input = RecordInput {
            stream: "s",
            version: 1,
            event: &event,
        };
        encode_batch(&mut buf, 1, 0, [input]);
        put(&mut buf[BATCH_HEADER_BYTES..], R_BATCH_BACK, &8u32.to_le_bytes());
        reseal(&mut buf);
        assert_eq!(
            check_batch(&buf, |_, _| {}),
            Err(FrameError::Invalid(
                "record 0 of the batch: wrong back-offset to its batch".into()
            ))
        );
    }

    #[test]
    fn zeros_mean_end() {
        assert_eq!(check_batch(&[0u8; 64], |_, _| {}), Err(FrameError::End));
        assert_eq!(check_batch(&[], |_, _| {}), Err(FrameError::End));
    }
}
