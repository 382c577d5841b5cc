//! Hand-made mutation review of the index file (`src/index/file.rs`:
//! encoding the index and its checkpoint, and every check `decode` makes
//! before a file is trusted) and of the batch frame and record codec
//! (`src/log/frame.rs`). tests/index_mutants_review.rs covered the stream
//! count bound of `file.rs`; this one covers the rest. Each test builds its
//! bytes from docs/FORMAT.md (CRCs recomputed as the document says), so
//! that only the one thing it breaks can get them refused.
//!
//! Mutants (F: file.rs, R: frame.rs); those that got past the lib tests
//! were run against recovery, recovery_review, index_mutants_review,
//! bitflips, format_cleanroom_review, bad_input, model and crash_sim.
//! Killed here (each survived all of those):
//! - F1 index magic check removed; F3 version `!=` made `>`: foreign magic
//!   or unknown version under a valid header CRC accepted.
//! - F9 empty stream name check removed; F10 zero-event stream check
//!   removed; F13 trailing bytes after the last stream allowed (one byte).
//! - F21 the position scramble made linear (xor-shift dropped): positions
//!   held twice with the right count and plain sum accepted.
//! - R1 batch magic check removed; R2 magic checked after the header
//!   length (stray bytes reported as a batch cut short).
//! - R3 frame length limit doubled; R4 record count limit + 1; R5 record
//!   count `>` made `>=`.
//! - R8 metadata bound against the whole record; R9 empty-name check `||`
//!   made `&&`; R10 event type UTF-8 check removed; R11 version 0 check
//!   removed; R12 frame length may exceed its records (`!=` made `>`).
//!
//! Caught by existing tests (some also by a test here): F2 header CRC
//! check removed, F6 body CRC check removed, F7 scramble sums `!=` made
//! `<`, F15 streams with no events written, F16 last batch CRC not
//! written, F17 body CRC over the header's room, F19 body CRC ignored on
//! the parallel path, F20 stored body CRC read as the computed one, F22
//! streams counted up to `last + 1` (lib tests); F5 table-size check `>=`
//! (recovery_review); R6 `len < fixed` check removed (recovery, a panic);
//! R7 metadata bound `>=` and R14 the reader's metadata bound `>=`
//! (format_cleanroom_review, model); R18 record CRCs gathered 4 bytes
//! short of the buffer (recovery, read_model); R13 record CRC check
//! removed, R15 `batch_holds` `<` made `<=`, R19 record CRC skipping the
//! back-offset, R20 timestamp read from the position field, R21 back-offset
//! `!=` made `>`, R17 the minimum frame length check removed (a panic)
//! (lib tests).
//!
//! Equivalent: F4 file length `!=` made `<` (a longer file makes the
//! decoded body run to the file's end, so the trailing-bytes check refuses
//! it; the test of F13 checks both); F8 the `STREAMS_MAX` bound removed (a
//! u32 count never exceeds 2^32); F18 encoding slices one entry shorter
//! (same bytes); F11 positions' order `>` made `>=`, F12 the range
//! check removed, F14 the count-sum `!=` made `>` (the scramble-sum check
//! refuses what each lets through, barring a 2^-64 accident); R16 the
//! zero record count check removed (such a frame cannot end where its
//! length, at least 72, says). F11, F12, F14 and R16 were run against the
//! lib tests, this file and crash_sim only.
//!
//! No real bug found.

use annal::EventData;
use annal::index::file;
use annal::limits;
use annal::log::frame::{self, FrameError, RecordInput};
use bytes::Bytes;

// ---------------------------------------------------------------------------
// Index files built from docs/FORMAT.md ("Index file"), CRCs and all.
// ---------------------------------------------------------------------------

/// The parts of an index file, as FORMAT.md lays them out.
struct IndexParts<'a> {
    magic: [u8; 8],
    version: u32,
    last_position: u64,
    /// Location table entries (`segment << 40 | offset`).
    locations: Vec<u64>,
    /// Stream entries: name bytes and positions.
    streams: Vec<(&'a [u8], Vec<u64>)>,
    /// Bytes put in the body after the last stream entry.
    body_tail: &'a [u8],
    /// Bytes put after the body CRC.
    file_tail: &'a [u8],
}

/// A well-formed file of `events` events, all in stream `s-1` but every
/// third one (in `t-1`), 64 bytes apart in segment 1.
fn parts(events: u64) -> IndexParts<'static> {
    let s: Vec<u64> = (1..=events).filter(|p| p % 3 != 0).collect();
    let t: Vec<u64> = (1..=events).filter(|p| p % 3 == 0).collect();
    let mut streams: Vec<(&[u8], Vec<u64>)> = Vec::new();
    if !s.is_empty() {
        streams.push((b"s-1", s));
    }
    if !t.is_empty() {
        streams.push((b"t-1", t));
    }
    IndexParts {
        magic: *b"ANNALIDX",
        version: 1,
        last_position: events,
        locations: (1..=events).map(|p| (1 << 40) | (32 + 64 * p)).collect(),
        streams,
        body_tail: b"",
        file_tail: b"",
    }
}

/// The bytes of the file, with valid header and body CRCs.
fn index_bytes(p: &IndexParts<'_>) -> Bytes {
    let mut body = Vec::new();
    for l in &p.locations {
        body.extend_from_slice(&l.to_le_bytes());
    }
    for (name, positions) in &p.streams {
        body.push(name.len() as u8);
        body.extend_from_slice(name);
        body.extend_from_slice(&(positions.len() as u64).to_le_bytes());
        for q in positions {
            body.extend_from_slice(&q.to_le_bytes());
        }
    }
    body.extend_from_slice(p.body_tail);
    let (end_segment, end_offset, last_batch_crc) = if p.last_position == 0 {
        (1u64, 64u64, 0u32)
    } else {
        (1, 64 + 64 * p.last_position, 77)
    };
    let mut h = Vec::with_capacity(80);
    h.extend_from_slice(&p.magic);
    h.extend_from_slice(&p.version.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(annal::Uuid::from_u128(42).as_bytes());
    h.extend_from_slice(&p.last_position.to_le_bytes());
    h.extend_from_slice(&end_segment.to_le_bytes());
    h.extend_from_slice(&end_offset.to_le_bytes());
    h.extend_from_slice(&last_batch_crc.to_le_bytes());
    h.extend_from_slice(&(p.streams.len() as u32).to_le_bytes());
    h.extend_from_slice(&(body.len() as u64).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(h.len(), file::HEADER_BYTES);
    let body_crc = crc32fast::hash(&body);
    h.extend_from_slice(&body);
    h.extend_from_slice(&body_crc.to_le_bytes());
    h.extend_from_slice(p.file_tail);
    Bytes::from(h)
}

/// The built file decodes (the other tests' files differ from it in one
/// thing only, so that one thing is what gets them refused).
#[test]
fn the_built_index_file_decodes() {
    for events in [1, 2, 7] {
        let (index, checkpoint) = file::decode(&index_bytes(&parts(events))).expect("well-formed file");
        assert_eq!(index.last_position(), events);
        assert_eq!(checkpoint.last_position, events);
    }
}

/// Refused with its header CRC valid: a file that is not an index file
/// (another magic), or one of a format version this build does not write
/// ("format version: 1"). Kills F1 (magic check removed) and F3 (version
/// `!=` made `>`).
#[test]
fn a_foreign_magic_or_an_unknown_version_is_refused() {
    let mut p = parts(4);
    p.magic = *b"ANNALSNP";
    assert!(file::decode(&index_bytes(&p)).is_err(), "foreign magic accepted");
    assert!(
        file::decode_checkpoint(&index_bytes(&p)).is_err(),
        "foreign magic accepted"
    );
    for version in [0, 2, u32::MAX] {
        let mut p = parts(4);
        p.version = version;
        assert!(file::decode(&index_bytes(&p)).is_err(), "version {version} accepted");
        assert!(
            file::decode_checkpoint(&index_bytes(&p)).is_err(),
            "version {version} accepted"
        );
    }
}

/// "no bytes left between the last stream entry and the body CRC", the
/// body length and CRCs agreeing; nor after the body CRC ("body length
/// equal to the file length minus 84"). Kills the trailing-bytes check
/// removed (F13), which the file-length check cannot stand in for.
#[test]
fn bytes_after_the_last_stream_entry_are_refused() {
    for tail in [&b"\0"[..], b"\x03s-2", b"\0\0\0\0"] {
        let mut p = parts(4);
        p.body_tail = tail;
        assert!(file::decode(&index_bytes(&p)).is_err(), "{tail:?} after the streams");
        let mut p = parts(4);
        p.file_tail = tail;
        assert!(file::decode(&index_bytes(&p)).is_err(), "{tail:?} after the body CRC");
    }
}

/// "no empty ... stream name": an entry with an empty name is refused.
/// Kills F9 (the empty-name check removed).
#[test]
fn an_empty_stream_name_is_refused() {
    let mut p = parts(4);
    p.streams[1].0 = b"";
    assert!(file::decode(&index_bytes(&p)).is_err());
}

/// "no stream entry with 0 events": refused even when the count of
/// streams stays within `last position`. Kills F10 (that check removed).
#[test]
fn a_stream_entry_with_no_events_is_refused() {
    let mut p = parts(4);
    p.streams.push((b"u-1", Vec::new()));
    assert!(file::decode(&index_bytes(&p)).is_err());
}

/// An empty index ("`last position` 0", no streams, empty body), as the
/// store writes it for an empty store, decodes. Also kills F5 (the early
/// table-size check made `>=`), which recovery_review catches too.
#[test]
fn the_empty_index_file_decodes() {
    let (index, checkpoint) = file::decode(&index_bytes(&parts(0))).expect("the empty index");
    assert_eq!(index.last_position(), 0);
    assert_eq!((checkpoint.end_segment, checkpoint.end_offset), (1, 64));
}

// ---------------------------------------------------------------------------
// Batch frames, edited and then resealed with CRCs computed as FORMAT.md
// ("Batch frame", "Record") says, so that only the edit can get them
// refused.
// ---------------------------------------------------------------------------

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes every record CRC (bytes 0..4, then 8..record length), then
/// the batch CRC (bytes 0..12, 16..32, then each record's CRC field), the
/// header's `record count` records being found by their length fields from
/// byte 32.
fn reseal(frame: &mut [u8]) {
    let count = u32_at(frame, 8);
    let mut batch = crc32fast::Hasher::new();
    batch.update(&frame[0..12]);
    batch.update(&frame[16..32]);
    let mut at = 32;
    for _ in 0..count {
        let len = u32_at(frame, at) as usize;
        let mut record = crc32fast::Hasher::new();
        record.update(&frame[at..at + 4]);
        record.update(&frame[at + 8..at + len]);
        let crc = record.finalize();
        put_u32(frame, at + 4, crc);
        batch.update(&crc.to_le_bytes());
        at += len;
    }
    let crc = batch.finalize();
    put_u32(frame, 12, crc);
}

/// A batch of `events` in stream `stream`, versions from 1, first position 1.
fn batch(stream: &str, events: &[EventData]) -> Vec<u8> {
    let mut buf = Vec::new();
    let inputs = events.iter().enumerate().map(|(i, event)| RecordInput {
        stream,
        version: i as u64 + 1,
        event,
    });
    frame::encode_batch(&mut buf, 1, 1_700_000_000_000_000, inputs);
    buf
}

fn check(frame: &[u8]) -> Result<u32, FrameError> {
    frame::check_batch(frame, |_, _| {}).map(|h| h.record_count)
}

fn invalid(r: Result<u32, FrameError>) -> bool {
    matches!(r, Err(FrameError::Invalid(_)))
}

/// "A frame is accepted only if its magic ... check[s] out": another magic
/// under a valid batch CRC is refused. Kills R1 (magic check removed).
#[test]
fn a_frame_with_another_magic_is_refused() {
    let mut f = batch("s-1", &[EventData::new("T", &b"{}"[..])]);
    assert_eq!(check(&f), Ok(1));
    f[0..4].copy_from_slice(b"ABT2");
    reseal(&mut f);
    assert!(invalid(check(&f)), "{:?}", check(&f));
}

/// Stray non-zero bytes shorter than a header that do not start with the
/// magic are not a batch cut short (`FrameError::Truncated`: a frame that
/// claims more bytes than are left), but invalid. Kills R2 (the magic
/// checked after the length) and R1.
#[test]
fn stray_bytes_shorter_than_a_header_are_invalid_not_truncated() {
    assert!(
        invalid(check(b"\x01\x02\x03\x04\x05")),
        "{:?}",
        check(b"\x01\x02\x03\x04\x05")
    );
    let f = batch("s-1", &[EventData::new("T", &b"{}"[..])]);
    assert_eq!(check(&f[..20]), Err(FrameError::Truncated));
}

/// "record count: 1 to 65,536": a batch of 65,536 records is valid, one of
/// 65,537 is not. Kills R4 (limit + 1) and R5 (`>` made `>=`).
#[test]
fn the_record_count_limit_is_65536() {
    let events: Vec<EventData> = (0..limits::BATCH_EVENTS_MAX + 1)
        .map(|_| EventData::new("T", Bytes::new()))
        .collect();
    let most = batch("s", &events[..limits::BATCH_EVENTS_MAX]);
    assert_eq!(check(&most), Ok(65_536));
    let over = batch("s", &events);
    assert!(invalid(check(&over)), "{:?}", check(&over));
}

/// A record shorter than its fixed part and names, under valid CRCs, is
/// refused (without a panic). Kills R6 (the `len < fixed` check removed:
/// an overflow panic), which recovery's torn-batch test catches too.
#[test]
fn a_record_length_shorter_than_its_names_is_refused() {
    let f = batch("s", &[EventData::new("T", &b"{}"[..])]);
    for len in [41u32, 40, 12] {
        let mut g = f.clone();
        put_u32(&mut g, 32, len);
        put_u32(&mut g, 4, 32 + len);
        g.truncate(32 + len as usize);
        reseal(&mut g);
        assert!(invalid(check(&g)), "length {len}: {:?}", check(&g));
    }
}

/// Metadata may fill the rest of a record (data empty): the batch is valid
/// and the record reads back with its metadata and no data. Kills R7 (the
/// metadata bound made `>=`; model and format_cleanroom_review catch it
/// too) and R14 (the same in the reader's layout).
#[test]
fn metadata_may_fill_the_record() {
    let f = batch("s-1", &[EventData::new("T", Bytes::new()).with_metadata(&b"meta"[..])]);
    assert_eq!(check(&f), Ok(1));
    let e = frame::decode_checked_record(&Bytes::from(f), 32, 1).expect("the record");
    assert_eq!(e.metadata(), b"meta");
    assert!(e.data().is_empty());
}

/// A metadata length past the record's end, under valid CRCs, is refused
/// (reads would then fail on a batch the log walk accepted). Kills R8 (the
/// bound compared with the whole record length).
#[test]
fn a_metadata_length_past_the_record_is_refused() {
    let f = batch("s-1", &[EventData::new("T", &b"data"[..]).with_metadata(&b"meta"[..])]);
    for metadata_len in [9u32, 1000] {
        let mut g = f.clone();
        put_u32(&mut g, 32 + 36, metadata_len);
        reseal(&mut g);
        assert!(invalid(check(&g)), "metadata length {metadata_len}: {:?}", check(&g));
    }
}

/// "stream name length: 1 to 255", "event type length: 1 to 255": a
/// record with either empty is refused. Kills R9 (`||` made `&&`).
#[test]
fn an_empty_stream_name_or_event_type_is_refused() {
    let f = batch("s-1", &[EventData::new("", &b"{}"[..])]);
    assert!(invalid(check(&f)), "empty event type: {:?}", check(&f));
    let f = batch("", &[EventData::new("T", &b"{}"[..])]);
    assert!(invalid(check(&f)), "empty stream name: {:?}", check(&f));
}

/// "event type: UTF-8 (valid on its own)": an event type that is not is
/// refused. Kills R10 (the event type's UTF-8 check removed).
#[test]
fn an_event_type_that_is_not_utf8_is_refused() {
    let mut f = batch("s", &[EventData::new("Tx", &b"{}"[..])]);
    assert_eq!(check(&f), Ok(1));
    f[32 + 40 + 1 + 1] = 0xFF;
    reseal(&mut f);
    assert!(invalid(check(&f)), "{:?}", check(&f));
}

/// "stream version: 1 to 2^32 - 1": version 0 is refused. Kills R11 (the
/// version check removed).
#[test]
fn stream_version_0_is_refused() {
    let mut f = batch("s", &[EventData::new("T", &b"{}"[..])]);
    put_u32(&mut f, 32 + 12, 0);
    reseal(&mut f);
    assert!(invalid(check(&f)), "{:?}", check(&f));
}

/// "frame length: 32 + sum of record lengths": bytes in the frame after its
/// records (the frame length and CRCs agreeing) are refused. Kills R12
/// (`offset != frame_len` made `>`).
#[test]
fn bytes_in_the_frame_after_its_records_are_refused() {
    let mut f = batch("s", &[EventData::new("T", &b"{}"[..])]);
    f.extend_from_slice(&[0; 8]);
    let len = f.len() as u32;
    put_u32(&mut f, 4, len);
    reseal(&mut f);
    assert!(invalid(check(&f)), "{:?}", check(&f));
}

/// "frame length: ... at most 32 MiB": a frame of exactly 32 MiB is valid,
/// one byte more is not (whole, with valid CRCs: not a batch cut short).
/// Kills R3 (the limit doubled).
#[test]
fn the_frame_length_limit_is_32_mib() {
    let fixed = 32 + 40 + 1 + 1;
    for (len, valid) in [(limits::BATCH_BYTES_MAX, true), (limits::BATCH_BYTES_MAX + 1, false)] {
        let f = batch("s", &[EventData::new("T", vec![7u8; len - fixed])]);
        assert_eq!(f.len(), len);
        let r = check(&f);
        assert_eq!(r.is_ok(), valid, "{len} bytes: {r:?}");
        if !valid {
            assert!(invalid(r));
        }
    }
}

/// "each claimed by exactly one stream and all of them claimed": two
/// streams holding the same positions are refused even when the count and
/// the plain sum of the positions are those of 1..=last (positions 2 and 3
/// twice, 1 and 4 never: 2 + 3 + 2 + 3 = 1 + 2 + 3 + 4). Kills F21 (the
/// scramble made linear by dropping its xor-shift: a linear scramble's sum
/// is the plain sum's multiple).
#[test]
fn positions_claimed_twice_with_the_right_count_and_sum_are_refused() {
    let mut p = parts(4);
    p.streams = vec![(b"a-1", vec![2, 3]), (b"b-1", vec![2, 3])];
    assert!(file::decode(&index_bytes(&p)).is_err());
    let mut p = parts(6);
    p.streams = vec![(b"a-1", vec![1, 3, 5]), (b"b-1", vec![1, 3, 8])];
    assert!(file::decode(&index_bytes(&p)).is_err(), "position 8 past the last");
    p.streams = vec![(b"a-1", vec![2, 4, 6]), (b"b-1", vec![1, 3, 5])];
    assert!(file::decode(&index_bytes(&p)).is_ok());
}
