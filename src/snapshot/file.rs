//! The bytes of the snapshot side-file (docs/FORMAT.md, "Snapshot file").
//!
//! A 32-byte file header, then snapshot records one after another. Each
//! record carries a CRC over everything after its CRC field, its own length
//! included, so a torn or damaged record is recognised and skipped; a
//! snapshot is a cache, so a bad record costs a replay, never the store.
//!
//! Every length is checked against what is left of the input and against
//! [`SNAPSHOT_BYTES_MAX`] before anything is allocated; nothing here panics
//! on any input.

use uuid::Uuid;

use crate::le::{u16_at, u32_at, u64_at};
use crate::limits;

/// Name of the snapshot file in the store directory.
pub const FILE_NAME: &str = "snapshots";
/// Magic number opening the snapshot file.
pub const FILE_MAGIC: [u8; 8] = *b"ANNALSNP";
/// Format version of the snapshot file this build writes and reads (2:
/// records name the event they were taken at; a file of version 1 is
/// started afresh, as any file this build cannot read).
pub const FORMAT_VERSION: u32 = 2;
/// Size of the file header.
pub const FILE_HEADER_BYTES: usize = 32;
/// Magic number opening every snapshot record ("SNP2" as little-endian).
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"SNP2");
/// Size of the fixed part of a record.
pub const RECORD_HEADER_BYTES: usize = 48;
pub use crate::limits::SNAPSHOT_BYTES_MAX;

// File header fields.
const H_MAGIC: usize = 0;
const H_VERSION: usize = H_MAGIC + 8;
const H_STORE_ID: usize = H_VERSION + 4;
const H_CRC: usize = H_STORE_ID + 16;
const _: () = assert!(H_CRC + 4 == FILE_HEADER_BYTES);

// Record fields.
const R_MAGIC: usize = 0;
const R_CRC: usize = R_MAGIC + 4;
const R_LEN: usize = R_CRC + 4;
const R_STREAM_LEN: usize = R_LEN + 4;
const R_RESERVED: usize = R_STREAM_LEN + 2;
const R_VERSION: usize = R_RESERVED + 2;
const R_SCHEMA: usize = R_VERSION + 8;
const R_DATA_LEN: usize = R_SCHEMA + 4;
const R_EVENT_ID: usize = R_DATA_LEN + 4;
const _: () = assert!(R_EVENT_ID + 16 == RECORD_HEADER_BYTES);

/// Why the file header is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than [`FILE_HEADER_BYTES`] bytes.
    #[error("file header cut short")]
    Short,
    /// Wrong magic or header CRC.
    #[error("{0}")]
    Invalid(String),
    /// A format version this build does not read.
    #[error("format version {0}, which this build does not read")]
    Version(u32),
}

/// Why the bytes at some offset are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record claims more bytes than are left (or fewer than a header
    /// are left): a torn write at the end of the file, or a damaged length.
    #[error("record cut short")]
    Truncated,
    /// The record's length is plausible but its bytes are not a valid,
    /// checksum-correct record; the next record starts `len` bytes further.
    #[error("{reason}")]
    Invalid {
        /// Claimed record length (the scan can skip over it).
        len: u32,
        /// What check failed.
        reason: String,
    },
    /// The length field makes no sense: nothing after this point can be
    /// found again.
    #[error("{0}")]
    Unreadable(String),
}

/// One decoded snapshot record, borrowing from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The stream the snapshot belongs to.
    pub stream: &'a str,
    /// The stream version the snapshot reflects (at least 1).
    pub version: u64,
    /// The id of the stream's event at that version when the snapshot was
    /// saved: a log whose event there has another id is not the one the
    /// snapshot was built from.
    pub event_id: Uuid,
    /// The application's schema version of the snapshot payload.
    pub schema_version: u32,
    /// The snapshot payload.
    pub data: &'a [u8],
    /// Total length of the record in bytes.
    pub len: u32,
}

/// Encodes the file header.
pub fn encode_header(store_id: Uuid) -> [u8; FILE_HEADER_BYTES] {
    let mut h = [0u8; FILE_HEADER_BYTES];
    h[H_MAGIC..H_MAGIC + 8].copy_from_slice(&FILE_MAGIC);
    h[H_VERSION..H_VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[H_STORE_ID..H_STORE_ID + 16].copy_from_slice(store_id.as_bytes());
    let crc = crc32fast::hash(&h[..H_CRC]);
    h[H_CRC..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes the file header; returns the store id it names.
pub fn decode_header(bytes: &[u8]) -> Result<Uuid, HeaderError> {
    let h = bytes.get(..FILE_HEADER_BYTES).ok_or(HeaderError::Short)?;
    if h[H_MAGIC..H_MAGIC + 8] != FILE_MAGIC {
        return Err(HeaderError::Invalid("bad magic".into()));
    }
    if crc32fast::hash(&h[..H_CRC]) != u32_at(h, H_CRC) {
        return Err(HeaderError::Invalid("header CRC mismatch".into()));
    }
    let version = u32_at(h, H_VERSION);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[H_STORE_ID..H_STORE_ID + 16]);
    Ok(Uuid::from_bytes(id))
}

/// Checks a record's inputs against the limits; returns its encoded length.
pub fn record_len(stream: &str, data_len: usize) -> Result<usize, String> {
    if stream.is_empty() || stream.len() > limits::STREAM_NAME_BYTES_MAX {
        return Err(format!(
            "a snapshot's stream name must have 1 to {} bytes",
            limits::STREAM_NAME_BYTES_MAX
        ));
    }
    if data_len > SNAPSHOT_BYTES_MAX {
        return Err(format!(
            "a snapshot of {data_len} bytes exceeds the limit of {SNAPSHOT_BYTES_MAX}"
        ));
    }
    Ok(RECORD_HEADER_BYTES + stream.len() + data_len)
}

/// Encodes one snapshot record (checked with [`record_len`] first).
pub fn encode_record(
    stream: &str,
    version: u64,
    event_id: Uuid,
    schema_version: u32,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let len = record_len(stream, data.len())?;
    if version == 0 {
        return Err("a snapshot reflects stream version 1 or later".into());
    }
    let mut buf = vec![0u8; len];
    buf[R_MAGIC..R_MAGIC + 4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    buf[R_LEN..R_LEN + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[R_STREAM_LEN..R_STREAM_LEN + 2].copy_from_slice(&(stream.len() as u16).to_le_bytes());
    buf[R_VERSION..R_VERSION + 8].copy_from_slice(&version.to_le_bytes());
    buf[R_SCHEMA..R_SCHEMA + 4].copy_from_slice(&schema_version.to_le_bytes());
    buf[R_DATA_LEN..R_DATA_LEN + 4].copy_from_slice(&(data.len() as u32).to_le_bytes());
    buf[R_EVENT_ID..R_EVENT_ID + 16].copy_from_slice(event_id.as_bytes());
    let s = RECORD_HEADER_BYTES;
    buf[s..s + stream.len()].copy_from_slice(stream.as_bytes());
    buf[s + stream.len()..].copy_from_slice(data);
    let crc = crc32fast::hash(&buf[R_LEN..]);
    buf[R_CRC..R_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// Decodes the record at the start of `bytes` (which may go on past it).
pub fn decode_record(bytes: &[u8]) -> Result<RecordRef<'_>, RecordError> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(RecordError::Truncated);
    }
    let len = u32_at(bytes, R_LEN);
    let len_usize = len as usize;
    if !(RECORD_HEADER_BYTES..=RECORD_HEADER_BYTES + limits::STREAM_NAME_BYTES_MAX + SNAPSHOT_BYTES_MAX)
        .contains(&len_usize)
    {
        return Err(RecordError::Unreadable(format!("record length {len} out of range")));
    }
    let Some(record) = bytes.get(..len_usize) else {
        return Err(RecordError::Truncated);
    };
    let invalid = |reason: &str| RecordError::Invalid {
        len,
        reason: reason.to_string(),
    };
    if u32_at(record, R_MAGIC) != RECORD_MAGIC {
        return Err(invalid("bad record magic"));
    }
    if crc32fast::hash(&record[R_LEN..]) != u32_at(record, R_CRC) {
        return Err(invalid("record CRC mismatch"));
    }
    let stream_len = u16_at(record, R_STREAM_LEN) as usize;
    let data_len = u32_at(record, R_DATA_LEN) as usize;
    if u16_at(record, R_RESERVED) != 0 {
        return Err(invalid("reserved bytes are not zero"));
    }
    if stream_len == 0 || stream_len > limits::STREAM_NAME_BYTES_MAX || data_len > SNAPSHOT_BYTES_MAX {
        return Err(invalid("field length out of range"));
    }
    if RECORD_HEADER_BYTES + stream_len + data_len != len_usize {
        return Err(invalid("field lengths disagree with the record length"));
    }
    let version = u64_at(record, R_VERSION);
    if version == 0 {
        return Err(invalid("stream version 0"));
    }
    let s = RECORD_HEADER_BYTES;
    let stream = std::str::from_utf8(&record[s..s + stream_len]).map_err(|_| invalid("stream name is not UTF-8"))?;
    let mut event_id = [0u8; 16];
    event_id.copy_from_slice(&record[R_EVENT_ID..R_EVENT_ID + 16]);
    Ok(RecordRef {
        stream,
        version,
        event_id: Uuid::from_bytes(event_id),
        schema_version: u32_at(record, R_SCHEMA),
        data: &record[s + stream_len..],
        len,
    })
}

/// What a record's first bytes say, no CRC checked (see [`peek_record`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek<'a> {
    /// A record of `len` bytes whose magic and stream name are plausible:
    /// a candidate, which may still be damaged ([`decode_record`] tells).
    Record {
        /// Its length field.
        len: usize,
        /// Its stream name.
        stream: &'a str,
        /// Its version field.
        version: u64,
    },
    /// `len` bytes to step over: their magic or stream name is wrong.
    Other {
        /// Its length field.
        len: usize,
    },
    /// No usable length here (out of range, or past the file's end): a
    /// walk of the file ends.
    End,
}

/// Looks at the record starting at `rest[0]` through its first bytes
/// alone: [`RECORD_HEADER_BYTES`] and its stream name (fewer when the
/// file ends first), of the `remaining` bytes the file has from there.
/// A walk from record to record by these lengths visits the offsets that
/// [`scan`] visits and ends where it ends for a length, reading only the
/// first bytes of each record: a cheap look at a large file (the append
/// guard of [`crate::snapshot`]).
pub fn peek_record(rest: &[u8], remaining: u64) -> Peek<'_> {
    let longest = RECORD_HEADER_BYTES + limits::STREAM_NAME_BYTES_MAX + SNAPSHOT_BYTES_MAX;
    if rest.len() < RECORD_HEADER_BYTES {
        return Peek::End;
    }
    let len = u32_at(rest, R_LEN) as usize;
    if !(RECORD_HEADER_BYTES..=longest).contains(&len) || len as u64 > remaining {
        return Peek::End;
    }
    let name_end = RECORD_HEADER_BYTES + u16_at(rest, R_STREAM_LEN) as usize;
    if u32_at(rest, R_MAGIC) != RECORD_MAGIC || name_end > len {
        return Peek::Other { len };
    }
    match rest.get(RECORD_HEADER_BYTES..name_end).map(std::str::from_utf8) {
        Some(Ok(stream)) => Peek::Record {
            len,
            stream,
            version: u64_at(rest, R_VERSION),
        },
        _ => Peek::Other { len },
    }
}

/// Bytes of a record that [`peek_record`] looks at: its fixed part and the
/// longest stream name.
const PEEK_BYTES: usize = RECORD_HEADER_BYTES + limits::STREAM_NAME_BYTES_MAX;

/// How much of the file [`walk_records`] reads at once while its records
/// are small.
const PEEK_CHUNK_BYTES: usize = 64 * 1024;

/// Walks a snapshot file of `len` bytes (header included) record to record
/// with [`peek_record`], reading it through `read_at(offset, buf)` (fill
/// `buf` from `offset`) a chunk at a time: small records are read whole,
/// several at once; after a large one, only the next one's first bytes.
/// Calls `each(offset, stream, version, record length)` for each
/// candidate record. Stops at the first read error, which it returns.
pub fn walk_records<E>(
    len: u64,
    mut read_at: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    mut each: impl FnMut(u64, &str, u64, usize),
) -> Result<(), E> {
    let (mut chunk, mut chunk_at) = (Vec::new(), 0u64);
    let mut at = FILE_HEADER_BYTES as u64;
    let mut last_step = 0usize;
    while at < len {
        let wanted = (at + PEEK_BYTES as u64).min(len);
        if at < chunk_at || wanted > chunk_at + chunk.len() as u64 {
            let size = if last_step > PEEK_CHUNK_BYTES / 8 {
                PEEK_BYTES
            } else {
                PEEK_CHUNK_BYTES
            };
            // At most `size` bytes: no more than fits in memory.
            chunk.resize((len - at).min(size as u64) as usize, 0);
            read_at(at, &mut chunk)?;
            chunk_at = at;
        }
        let rest = &chunk[(at - chunk_at) as usize..];
        let step = match peek_record(rest, len - at) {
            Peek::Record { len, stream, version } => {
                each(at, stream, version, len);
                len
            }
            Peek::Other { len } => len,
            Peek::End => break,
        };
        at += step as u64;
        last_step = step;
    }
    Ok(())
}

/// [`walk_records`] over a whole file in memory: each candidate record's
/// offset, stream and version.
pub fn peek_records(bytes: &[u8], mut each: impl FnMut(u64, &str, u64)) {
    let read_at = |at: u64, buf: &mut [u8]| -> Result<(), std::convert::Infallible> {
        let at = at as usize;
        buf.copy_from_slice(&bytes[at..at + buf.len()]);
        Ok(())
    };
    let Ok(()) = walk_records(bytes.len() as u64, read_at, |at, stream, version, _| {
        each(at, stream, version)
    });
}

/// A valid record found by [`scan`], and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Offset of the record in the file.
    pub offset: u64,
    /// Record length.
    pub len: u32,
    /// Stream name.
    pub stream: String,
    /// Stream version.
    pub version: u64,
    /// The id of the stream's event at that version when it was saved.
    pub event_id: Uuid,
    /// Snapshot schema version.
    pub schema_version: u32,
}

/// A bad record met by [`scan`] and skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Offset of the record in the file.
    pub offset: u64,
    /// What check failed.
    pub reason: String,
}

/// What [`scan`] found in a whole file (header included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Valid records, in file order.
    pub records: Vec<Found>,
    /// Bad records skipped over (their length was plausible).
    pub skipped: Vec<Skipped>,
    /// Where the valid part of the file ends; bytes after it are a torn
    /// tail (or unreadable) and are cut on open.
    pub end: u64,
    /// Why the scan stopped before the end of the input, if it did.
    pub cut_reason: Option<String>,
}

/// Walks the records of a whole snapshot file (`bytes` includes the
/// header, which the caller checked). A bad record whose length fits is
/// skipped when a valid record follows it; a bad record at the end of the
/// file, or one whose length is unusable, ends the scan there.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut out = Scan::default();
    let mut at = FILE_HEADER_BYTES.min(bytes.len());
    let mut pending_skips: Vec<Skipped> = Vec::new();
    let mut valid_end = at;
    while at < bytes.len() {
        let rest = &bytes[at..];
        match decode_record(rest) {
            Ok(r) => {
                out.skipped.append(&mut pending_skips);
                out.records.push(Found {
                    offset: at as u64,
                    len: r.len,
                    stream: r.stream.to_string(),
                    version: r.version,
                    event_id: r.event_id,
                    schema_version: r.schema_version,
                });
                at += r.len as usize;
                valid_end = at;
            }
            Err(RecordError::Invalid { len, reason }) => {
                pending_skips.push(Skipped {
                    offset: at as u64,
                    reason,
                });
                at += len as usize;
            }
            Err(RecordError::Truncated) => {
                out.cut_reason = Some("record cut short".into());
                break;
            }
            Err(RecordError::Unreadable(reason)) => {
                out.cut_reason = Some(reason);
                break;
            }
        }
    }
    if out.cut_reason.is_none() && !pending_skips.is_empty() {
        // Bad records with nothing valid after them: a torn tail.
        out.cut_reason = pending_skips.first().map(|s| s.reason.clone());
    }
    out.end = valid_end as u64;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_format_md() {
        crate::format_doc::assert_layout(
            "### Header (32 bytes)",
            &[H_MAGIC, H_VERSION, H_STORE_ID, H_CRC],
            FILE_HEADER_BYTES,
        );
        crate::format_doc::assert_layout(
            "### Record (one per saved snapshot)",
            &[
                R_MAGIC,
                R_CRC,
                R_LEN,
                R_STREAM_LEN,
                R_RESERVED,
                R_VERSION,
                R_SCHEMA,
                R_DATA_LEN,
                R_EVENT_ID,
            ],
            RECORD_HEADER_BYTES,
        );
    }

    fn file(records: &[Vec<u8>]) -> Vec<u8> {
        let mut f = encode_header(Uuid::nil()).to_vec();
        for r in records {
            f.extend_from_slice(r);
        }
        f
    }

    #[test]
    fn round_trip() {
        let r = encode_record("Account-1", 7, Uuid::from_u128(9), 3, b"state").unwrap();
        let d = decode_record(&r).unwrap();
        assert_eq!(
            (d.stream, d.version, d.event_id, d.schema_version, d.data),
            ("Account-1", 7, Uuid::from_u128(9), 3, &b"state"[..])
        );
        assert_eq!(decode_header(&encode_header(Uuid::nil())).unwrap(), Uuid::nil());
    }

    #[test]
    fn scan_skips_a_bad_middle_record_and_cuts_a_torn_tail() {
        let a = encode_record("A-1", 1, Uuid::from_u128(9), 1, b"a").unwrap();
        let mut b = encode_record("A-1", 2, Uuid::from_u128(9), 1, b"bb").unwrap();
        let c = encode_record("A-2", 1, Uuid::from_u128(9), 1, b"c").unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        let mut bytes = file(&[a.clone(), b.clone(), c.clone()]);
        let s = scan(&bytes);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.skipped.len(), 1);
        assert_eq!(s.end, bytes.len() as u64);
        bytes.truncate(bytes.len() - 3);
        let s = scan(&bytes);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.end as usize, FILE_HEADER_BYTES + a.len());
        assert!(s.cut_reason.is_some());
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(encode_record("", 1, Uuid::from_u128(9), 1, b"").is_err());
        assert!(encode_record("A-1", 0, Uuid::from_u128(9), 1, b"").is_err());
        assert!(decode_header(b"short").is_err());
        assert!(matches!(decode_record(&[0xFF; 64]), Err(RecordError::Unreadable(_))));
    }
}
