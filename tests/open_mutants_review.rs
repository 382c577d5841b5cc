//! A hand-made mutation review of what an open does with the log's end
//! (`annal::log::segment`: `scan`, `scan_after`, `classify_tail`,
//! `find_next_batch`; `src/recovery/{mod,chain,replay}.rs`: the chain of
//! segments, the replay past the index file's checkpoint, what is cut and
//! what is refused). Each test pins a promise of docs/DURABILITY.md or
//! docs/FORMAT.md ("How a segment is read back") that a mutant broke while
//! the existing tests still passed.
//!
//! Mutants run (33; "existing" means the modules `recovery`,
//! `recovery_review`, `recovery_mutants_review`, `segment_mutants_review`,
//! `chain_review`, `damage_isolation`, `read_only`, `bitflips` and the lib
//! tests `log::` and `recovery::`):
//! - segment.rs: S1 `scan` ignoring the header's position; S2 a torn
//!   tail's `dirty_end` one short; S3 `last_non_zero` taking a block's first
//!   non-zero byte; S4 `scan_after` not following `last` through the
//!   batches; S5 zeros where a batch should start taken as a clean end; S7
//!   `first_position > last` as `>=`; S8 the declared end skipped; S10 the
//!   walk stopping at the first zeros; S11 the header's first position off
//!   by one; S12 no search by magic: all caught by existing tests. S6 a
//!   batch cut short taken as a torn tail without a search for valid data
//!   after it: killed here. S9 `records_end` without its minimum record
//!   length: equivalent (the lengths must still add up to the frame).
//! - replay.rs: R3 `torn_tail_bytes` one short, R4 the in-segment floor
//!   check removed, R5 a segment replayed from the checkpoint marked
//!   verified from its start, R7 one torn byte left unzeroed, R10 a floor
//!   in a missing later segment ignored, R11 the kept copy one byte short,
//!   R12 `floor_batch_replaced` skipped: caught by existing tests. R8 the
//!   sync of the recovered log removed: caught only by `io_errors`. R1 a
//!   segment header's first position not checked, R2 a torn-looking end of
//!   a sealed segment taken as a torn tail, R9 a checkpoint *at* the last
//!   position taken as proof: killed here. R6 the batch position check
//!   removed: equivalent (`Index::push` refuses the same batch, naming its
//!   first record instead of the batch).
//! - chain.rs: C1 the chain compared by end only, C2 `!valid && len ==`
//!   as `||`, C3 `short_of_floor` blind to a later floor segment, C4 the
//!   floor's store id check removed, C5 the floor batch's end not
//!   compared: caught by existing tests.
//! - mod.rs: M1 the header's segment number not compared with the file
//!   name, M3 an empty index file's end not checked: killed here. M2 an
//!   index file ending past its segment not rejected, M4 the index file's
//!   last event in another segment not rejected: equivalent
//!   (`log_holds_batch` rejects the same files).
//!
//! No real bug found.

mod common;

use std::fs;
use std::path::Path;

use annal::log::frame::{RecordInput, encode_batch};
use annal::log::segment::{SEGMENT_HEADER_BYTES, ScanEnd, SegmentHeader, scan};
use annal::{Error, EventData, ExpectedVersion, Options, ReadAll, Store};
use common::files::seg;

/// Positions of every event the store in `dir` serves (opened with
/// `options`, closed again), or the error of the open.
fn positions(dir: &Path, options: Options) -> Result<Vec<u64>, Error> {
    let store = Store::open(dir, options)?;
    let out = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap().position())
        .collect();
    store.close().unwrap();
    Ok(out)
}

/// A closed store in 16 KiB segments that rolled over to segment `n`,
/// and the number of events it holds.
fn store_rolled_to_segment(n: u64) -> (tempfile::TempDir, Options, u64) {
    let dir = tempfile::tempdir().unwrap();
    let options = common::small_segments();
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let mut i = 0;
    common::append_until_segment(&store, dir.path(), n, "S", &mut i);
    store.close().unwrap();
    (dir, options, i)
}

/// Asserts every open of `dir` (read-only and writable) is refused as
/// corruption of `file` at `offset`.
#[track_caller]
fn assert_refused(dir: &Path, options: &Options, file: &Path, offset: u64) {
    for read_only in [true, false] {
        match Store::open(dir, options.clone().with_read_only(read_only)) {
            Err(Error::Corruption { file: f, offset: o, .. }) => {
                assert_eq!((f.as_path(), o), (file, offset), "read_only {read_only}")
            }
            Err(e) => panic!("read_only {read_only}: not corruption: {e}"),
            Ok(store) => panic!(
                "read_only {read_only}: opened, serving {} events",
                store.last_position()
            ),
        }
    }
}

/// Segment 1 (header included) with single-event batches at positions
/// 1..=n, 10 data bytes each, then `zeros` zero bytes; with where each
/// batch starts, and the end of the last.
fn segment_with(n: u64, zeros: usize) -> (Vec<u8>, Vec<usize>) {
    let mut buf = SegmentHeader {
        store_id: annal::Uuid::from_u128(9),
        segment_id: 1,
        first_position: 1,
        previous_end: 0,
        previous_crc: 0,
    }
    .encode()
    .to_vec();
    let mut starts = Vec::new();
    for p in 1..=n {
        starts.push(buf.len());
        let e = EventData::new("T", vec![p as u8; 10]);
        let input = RecordInput {
            stream: "s",
            version: p,
            event: &e,
        };
        encode_batch(&mut buf, p, 0, std::iter::once(input));
    }
    starts.push(buf.len());
    buf.resize(buf.len() + zeros, 0);
    (buf, starts)
}

/// FORMAT.md, "How a segment is read back": a valid batch after invalid
/// bytes makes them damage in the middle of the log, reported, never cut.
/// That holds too when the invalid batch claims to reach past the file's
/// end (its frame length damaged: "cut short"): the batches after it are
/// still the log's, and the scan reports corruption, not a torn tail.
/// (Mutant S6: a batch cut short taken as a torn tail without looking for
/// a valid batch after it.)
#[test]
fn a_batch_claiming_to_reach_past_the_files_end_before_valid_batches_is_damage() {
    let (mut buf, starts) = segment_with(3, 64);
    // Batch 2's frame length now reaches past the end of the file.
    let long = (buf.len() - starts[1] + 1000) as u32;
    buf[starts[1] + 4..starts[1] + 8].copy_from_slice(&long.to_le_bytes());
    let end = scan(&buf, SEGMENT_HEADER_BYTES, |_, _, _| {});
    match end {
        ScanEnd::Corrupt { offset, next, .. } => assert_eq!((offset, next), (starts[1] as u64, starts[2] as u64)),
        other => panic!("batch 3 is valid after the damaged batch 2: {other:?}"),
    }
}

/// A store in a new directory, open with default options, holding three
/// events of stream `S` (positions 1 to 3).
fn store_of_three_events() -> (tempfile::TempDir, Options, Store) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default();
    let store = Store::open(dir.path(), options.clone()).unwrap();
    for n in 0..3 {
        store
            .append("S", ExpectedVersion::Any, [common::event("E", n)])
            .unwrap();
    }
    (dir, options, store)
}

fn rewrite_header(path: &Path, change: impl FnOnce(&mut SegmentHeader)) {
    let mut bytes = fs::read(path).unwrap();
    let mut header = SegmentHeader::decode(&bytes, path).unwrap();
    change(&mut header);
    bytes[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&header.encode());
    fs::write(path, bytes).unwrap();
}

/// The end of the valid data in segment `n` of `dir`.
fn data_end(dir: &Path, n: u64) -> u64 {
    match scan(&fs::read(seg(dir, n)).unwrap(), SEGMENT_HEADER_BYTES, |_, _, _| {}) {
        ScanEnd::Clean { offset } => offset,
        other => panic!("segment {n} does not end clean: {other:?}"),
    }
}

/// FORMAT.md: a segment header's first position is "the global position
/// of the first event this segment holds"; a segment that does not start
/// at the position after the log before it is refused (decision table:
/// positions that do not follow). Shown with a header that records no
/// previous batch (as headers written before annal recorded it), so that
/// the chain check does not speak first, and with the index file removed
/// (the whole log replayed).
/// (Mutant R1: the check of a replayed segment's first position removed.)
#[test]
fn a_segment_whose_header_does_not_start_at_the_next_position_is_refused() {
    let (dir, options, _) = store_rolled_to_segment(2);
    fs::remove_file(dir.path().join(annal::index::file::FILE_NAME)).unwrap();
    rewrite_header(&seg(dir.path(), 2), |h| {
        h.first_position += 1;
        h.previous_end = 0;
        h.previous_crc = 0;
    });
    assert_refused(dir.path(), &options, &seg(dir.path(), 2), 0);
}

/// The same rule when the index file's checkpoint lies inside the last
/// segment, so the open replays it from there, not from its start: the
/// header's first position must be where the index file's events in that
/// segment start. (Left alone after the review above, then checked: a
/// crafted header, its CRC valid, opened unnoticed.)
#[test]
fn a_header_first_position_is_checked_against_the_index_file_too() {
    for shift in [1i64, -1] {
        let (dir, options, _) = store_rolled_to_segment(2);
        let reopened = Store::open(dir.path(), options.clone()).unwrap();
        let report = reopened.recovery_report();
        assert!(report.index_loaded && report.replayed_bytes == 0, "{report:?}");
        reopened.close().unwrap();
        rewrite_header(&seg(dir.path(), 2), |h| {
            h.first_position = h.first_position.checked_add_signed(shift).unwrap();
            h.previous_end = 0;
            h.previous_crc = 0;
        });
        assert_refused(dir.path(), &options, &seg(dir.path(), 2), 0);
    }
}

/// DURABILITY.md / recovery's decision table: invalid bytes after the last
/// batch of a sealed segment are refused, by every open ("it was
/// synced"): only the last segment can hold a torn write. A read-only
/// open, which cuts nothing, must refuse it all the same rather than
/// serve the log as if the bytes were a torn tail.
/// (Mutant R2: a torn-looking end of a sealed segment taken as a torn
/// tail; a writable open still fails on the sealed file, a read-only one
/// opened.)
#[test]
fn invalid_bytes_after_a_sealed_segments_last_batch_are_refused_by_every_open() {
    let (dir, options, _) = store_rolled_to_segment(2);
    fs::remove_file(dir.path().join(annal::index::file::FILE_NAME)).unwrap();
    let path = seg(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let end = bytes.len() as u64;
    assert_eq!(data_end(dir.path(), 1), end, "a sealed segment ends at its last batch");
    bytes.extend([0xAB; 100]);
    fs::write(&path, bytes).unwrap();
    assert_refused(dir.path(), &options, &path, end);
}

/// The same with the index file in place, whose checkpoint lies in segment
/// 2, so that segment 1 is not replayed: the bytes after its last batch
/// (where segment 2's header says it ends) are looked at all the same.
/// (Left alone after the review above, then checked: only a full replay
/// refused them.) Zeros there are no data and change nothing.
#[test]
fn invalid_bytes_after_a_sealed_segments_last_batch_are_refused_with_the_index_file_loaded() {
    let (dir, options, appended) = store_rolled_to_segment(2);
    let path = seg(dir.path(), 1);
    let end = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend([0u8; 100]);
    fs::write(&path, &bytes).unwrap();
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let report = store.recovery_report();
    assert!(report.index_loaded && report.replayed_bytes == 0, "{report:?}");
    assert_eq!(store.last_position(), appended);
    store.close().unwrap();
    bytes.extend([0xAB; 100]);
    fs::write(&path, bytes).unwrap();
    assert_refused(dir.path(), &options, &path, end);
}

/// DURABILITY.md guarantee 8: a saved checkpoint proves the log durable up
/// to its position, so invalid bytes are refused only when a checkpoint
/// lies *past* the log's last valid position. A checkpoint at the last
/// valid position proves nothing of the bytes after it: they are a torn
/// tail, cut (and kept), and the store opens with every event.
/// (Mutant R9: a checkpoint at the last position taken as proof.)
#[test]
fn a_checkpoint_at_the_last_position_does_not_make_a_torn_tail_damage() {
    let (dir, options, store) = store_of_three_events();
    store.checkpoints().save("c", store.last_position()).unwrap();
    store.close().unwrap();
    let path = seg(dir.path(), 1);
    let end = data_end(dir.path(), 1) as usize;
    let mut bytes = fs::read(&path).unwrap();
    bytes[end..end + 50].fill(0xAB);
    fs::write(&path, bytes).unwrap();

    let store = Store::open(dir.path(), options.clone()).unwrap();
    assert_eq!(store.recovery_report().torn_tail_bytes, 50);
    assert_eq!(store.last_position(), 3);
    store.close().unwrap();
    assert_eq!(positions(dir.path(), options).unwrap(), vec![1, 2, 3]);
}

/// FORMAT.md, segment header: the segment number "equals the number in
/// the file name"; recovery's decision table refuses a bad segment header.
/// A segment file whose header names another number (a file renamed, or
/// copied in under the wrong name) is refused by every open, naming it.
/// Shown with the index file removed (the whole log replayed).
/// (Mutant M1: the comparison of the header's number with the file name's
/// removed: the open failed later, naming the store's directory, "index
/// points at a missing segment", not the file to look at.)
#[test]
fn a_segment_whose_header_names_another_number_is_refused() {
    let (dir, options, _) = store_rolled_to_segment(2);
    fs::remove_file(dir.path().join(annal::index::file::FILE_NAME)).unwrap();
    let path = seg(dir.path(), 2);
    rewrite_header(&path, |h| h.segment_id = 3);
    assert_refused(dir.path(), &options, &path, 0);
}

/// The index file is a cache of the log: one that cannot be used is not
/// loaded, and the index is rebuilt from the whole log (decision table).
/// An index file of this store that covers no event (last position 0) but
/// ends past the log's start is such a file ("empty index file with a
/// non-empty checkpoint"): loaded, the log before its end would never be
/// replayed, and every acknowledged event before it lost silently. The
/// open rebuilds and serves every event.
/// (Mutant M3: in `load_index`, the check that an empty index ends at
/// segment 1's header turned from `||` into never: the store opened
/// empty.)
#[test]
fn an_empty_index_file_ending_past_the_logs_start_is_rebuilt_not_trusted() {
    use annal::index::file::{Checkpoint, FILE_NAME, encode};
    let (dir, options, store) = store_of_three_events();
    let store_id = store.store_id();
    store.close().unwrap();
    let checkpoint = Checkpoint {
        store_id,
        last_position: 0,
        end_segment: 1,
        end_offset: data_end(dir.path(), 1),
        last_batch_crc: 0,
    };
    fs::write(
        dir.path().join(FILE_NAME),
        encode(&annal::index::Index::default(), &checkpoint),
    )
    .unwrap();
    for read_only in [true, false] {
        let store = Store::open(dir.path(), options.clone().with_read_only(read_only)).unwrap();
        assert!(!store.recovery_report().index_loaded, "read_only {read_only}");
        assert_eq!(store.last_position(), 3, "read_only {read_only}");
        store.close().unwrap();
    }
}
