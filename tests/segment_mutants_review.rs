//! A hand-made mutation review of how a segment is read back after damage
//! (`annal::log::segment`: `scan`, `scan_after`, `find_next_batch`,
//! `last_position_of`, `walk_valid_frames`, and their users `salvage` and
//! `repair`): each test here pins a rule of docs/FORMAT.md ("How a segment
//! is read back", "Quarantine") or docs/DURABILITY.md (guarantee 8) that
//! a mutant of that code broke while every other test still passed.

use std::ops::ControlFlow;
use std::path::PathBuf;

use annal::EventData;
use annal::Uuid;
use annal::log::frame::{BatchHeader, RecordInput, encode_batch};
use annal::log::segment::{
    self, Frame, SEGMENT_HEADER_BYTES, ScanEnd, SegmentHeader, find_next_batch, last_position_of, scan, scan_after,
    walk_valid_frames,
};

/// A segment header: segment `segment_id`, starting at `first_position`.
fn header(segment_id: u64, first_position: u64) -> Vec<u8> {
    SegmentHeader {
        store_id: Uuid::from_u128(7),
        segment_id,
        first_position,
        previous_end: 0,
        previous_crc: 0,
    }
    .encode()
    .to_vec()
}

/// Appends a one-event batch at `position` holding `data`; returns where
/// it ends.
fn batch(buf: &mut Vec<u8>, position: u64, data: Vec<u8>) -> usize {
    let e = EventData::new("T", data);
    let input = RecordInput {
        stream: "s",
        version: position,
        event: &e,
    };
    encode_batch(buf, position, 0, std::iter::once(input));
    buf.len()
}

/// What a walk saw, comparable.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Valid(usize, u64),
    Skipped(std::ops::Range<usize>),
}

fn walk(bytes: &[u8], start: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    walk_valid_frames(bytes, start, |step| {
        steps.push(match step {
            Frame::Valid(at, h, _) => Step::Valid(at, h.first_position),
            Frame::Skipped(range) => Step::Skipped(range),
        });
        ControlFlow::Continue(())
    });
    steps
}

/// Segment 1 with batches 1 and 2, then `gap` bytes that are no batch,
/// then a valid batch at `next_position`, then zeros; with where batch 2
/// ends and where the later batch starts.
fn log_then_gap(gap: usize, next_position: u64) -> (Vec<u8>, usize, usize) {
    let mut buf = header(1, 1);
    batch(&mut buf, 1, vec![1; 10]);
    let end = batch(&mut buf, 2, vec![2; 10]);
    buf.extend(std::iter::repeat_n(0xAA, gap));
    let next = buf.len();
    batch(&mut buf, next_position, vec![3; 10]);
    buf.resize(buf.len() + 256, 0);
    (buf, end, next)
}

fn is_corrupt(end: &ScanEnd, offset: usize, next: usize) -> bool {
    matches!(end, ScanEnd::Corrupt { offset: o, next: n, .. } if (*o, *n) == (offset as u64, next as u64))
}

fn is_torn(end: &ScanEnd, offset: usize) -> bool {
    matches!(end, ScanEnd::TornTail { offset: o, .. } if *o == offset as u64)
}

/// FORMAT.md: a frame after invalid bytes counts as the log's next "when
/// it starts past the log's last position with room, 42 bytes an event,
/// in the bytes before it for the events between: the log's own next
/// frame always does". Exactly 42 bytes an event is room; one byte less is
/// not (then the bytes are a torn tail, cut). Without the log's last
/// position, any valid frame counts.
#[test]
fn the_room_rule_is_exactly_42_bytes_an_event_between() {
    for (gap, position, room) in [
        // The log's own next batch, right after one stray byte.
        (1, 3, true),
        (41, 4, false),
        (42, 4, true),
        (83, 5, false),
        (84, 5, true),
        // The log's own next batch needs no room at all.
        (41, 3, true),
    ] {
        let (buf, end, next) = log_then_gap(gap, position);
        let what = format!("{gap} bytes before position {position}");
        let scanned = scan(&buf, SEGMENT_HEADER_BYTES, |_, _, _| {});
        let after = scan_after(&buf, end as u64, Some(2), |_, _, _| {});
        if room {
            assert!(is_corrupt(&scanned, end, next), "{what}: {scanned:?}");
            assert!(is_corrupt(&after, end, next), "{what}: {after:?}");
            assert_eq!(find_next_batch(&buf, end, Some(2)), Some(next), "{what}");
        } else {
            assert!(is_torn(&scanned, end), "{what}: {scanned:?}");
            assert!(is_torn(&after, end), "{what}: {after:?}");
            assert_eq!(find_next_batch(&buf, end, Some(2)), None, "{what}");
        }
        // Not knowing the log's last position, any valid frame may be next.
        assert_eq!(find_next_batch(&buf, end, None), Some(next), "{what}");
        let unknown = scan_after(&buf, end as u64, None, |_, _, _| {});
        assert!(is_corrupt(&unknown, end, next), "{what}: {unknown:?}");
    }
}

/// `scan` from offset 64 takes the log's last position before the
/// segment from its header (`first position` - 1): the segment's own first
/// batch after damage is its next, and a frame of earlier positions inside
/// a torn first batch's payload is not.
#[test]
fn a_scan_from_the_header_knows_the_position_before_the_segment() {
    // Garbage where segment 2's first batch should be, then that batch.
    let mut buf = header(2, 10);
    buf.extend(std::iter::repeat_n(0xAA, 50));
    let next = buf.len();
    batch(&mut buf, 10, vec![5; 10]);
    buf.resize(buf.len() + 256, 0);
    let end = scan(&buf, SEGMENT_HEADER_BYTES, |_, _, _| {});
    assert!(is_corrupt(&end, 64, next), "{end:?}");

    // Segment 2's first batch torn; its payload holds a copy of the frame
    // of position 3 (an archived log): no next batch, a torn tail.
    let mut copy = Vec::new();
    batch(&mut copy, 3, vec![3; 10]);
    let mut buf = header(2, 10);
    let end = batch(&mut buf, 10, [b"archive:".to_vec(), copy, b"end".to_vec()].concat());
    buf[end - 3..end].fill(0);
    buf.resize(buf.len() + 256, 0);
    let copy_at = buf.windows(8).position(|w| w == b"archive:").unwrap() + 8;
    assert_eq!(
        find_next_batch(&buf, 64, None),
        Some(copy_at),
        "the copy is a valid frame"
    );
    assert_eq!(find_next_batch(&buf, 64, Some(9)), None);
    let scanned = scan(&buf, SEGMENT_HEADER_BYTES, |_, _, _| {});
    assert!(is_torn(&scanned, 64), "{scanned:?}");
}

#[test]
fn the_last_position_of_a_batch_is_its_last_events() {
    let h = |first_position, record_count| BatchHeader {
        frame_len: 0,
        record_count,
        crc: 0,
        first_position,
        timestamp_micros: 0,
    };
    assert_eq!(last_position_of(&h(1, 1)), 1);
    assert_eq!(last_position_of(&h(5, 3)), 7);
}

/// Segment 1 with batches 1, 2, 3 (10 bytes of data each), zeros after;
/// with where each batch ends.
fn three_batches() -> (Vec<u8>, Vec<usize>) {
    let mut buf = header(1, 1);
    let ends = (1..=3).map(|p| batch(&mut buf, p, vec![p as u8; 10])).collect();
    buf.resize(buf.len() + 256, 0);
    (buf, ends)
}

/// The tools' walk goes on past zeros where a batch should start (a
/// zeroed batch in the middle of a log is damage, not the log's end), and
/// past a damaged batch to where it says it ends; each skipped stretch is
/// exactly the bytes between the valid frames.
#[test]
fn the_walk_goes_on_past_zeros_and_damage_with_exact_skipped_ranges() {
    let (buf, ends) = three_batches();
    assert_eq!(
        walk(&buf, 64),
        [Step::Valid(64, 1), Step::Valid(ends[0], 2), Step::Valid(ends[1], 3)]
    );

    let mut zeroed = buf.clone();
    zeroed[ends[0]..ends[1]].fill(0);
    assert_eq!(
        walk(&zeroed, 64),
        [
            Step::Valid(64, 1),
            Step::Skipped(ends[0]..ends[1]),
            Step::Valid(ends[1], 3)
        ]
    );

    let mut flipped = buf.clone();
    flipped[ends[1] - 2] ^= 1;
    assert_eq!(
        walk(&flipped, 64),
        [
            Step::Valid(64, 1),
            Step::Skipped(ends[0]..ends[1]),
            Step::Valid(ends[1], 3)
        ]
    );

    // A start past the bytes walks nothing.
    assert_eq!(walk(&buf[..10], 64), []);

    // `salvage` of that segment, moved whole into quarantine, hands over
    // the events on both sides of the zeroed batch.
    let dir = tempfile::tempdir().unwrap();
    let file = write_quarantined(dir.path(), "00000000000000000001.seg", &zeroed);
    let mut handed = Vec::new();
    annal::tools::salvage(std::slice::from_ref(&file), |e| {
        handed.push(e.position());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(handed, [1, 3]);
}

fn write_quarantined(dir: &std::path::Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `salvage` (and the walk under it) stops when told: no event is handed
/// over after `each` returned `Break`.
#[test]
fn a_walk_and_a_salvage_stop_when_told() {
    let (buf, _) = three_batches();
    let mut calls = 0;
    walk_valid_frames(&buf, 64, |_| {
        calls += 1;
        ControlFlow::Break(())
    });
    assert_eq!(calls, 1);

    let dir = tempfile::tempdir().unwrap();
    let file = write_quarantined(dir.path(), "00000000000000000001.seg.from-64", &buf[64..]);
    let mut handed = Vec::new();
    let found = annal::tools::salvage(std::slice::from_ref(&file), |e| {
        handed.push(e.position());
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(handed, [1]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].events, 1);
}

/// A batch cut short by the end of the file (a torn tail's copy ends at
/// its last non-zero byte), its header and record length intact: its
/// declared end lies past the file. Nothing panics (DURABILITY.md,
/// guarantee 11); it is a torn tail reaching to the file's end, skipped
/// by the walk, and `salvage` hands over the batch before it.
#[test]
fn a_batch_cut_short_by_the_end_of_the_file_is_a_torn_tail() {
    let mut buf = header(1, 1);
    let first = batch(&mut buf, 1, vec![0x55; 30]);
    let second = batch(&mut buf, 2, vec![0x55; 30]);
    buf.truncate(second - 10);
    let len = buf.len();
    assert_eq!(find_next_batch(&buf, first, None), None);
    assert_eq!(find_next_batch(&buf, first, Some(1)), None);
    assert_eq!(walk(&buf, 64), [Step::Valid(64, 1), Step::Skipped(first..len)]);
    match scan(&buf, SEGMENT_HEADER_BYTES, |_, _, _| {}) {
        ScanEnd::TornTail { offset, dirty_end, .. } => assert_eq!((offset, dirty_end), (first as u64, len as u64)),
        other => panic!("expected a torn tail, got {other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let file = write_quarantined(dir.path(), "00000000000000000001.seg.torn-64", &buf[64..]);
    let mut handed = Vec::new();
    let found = annal::tools::salvage(std::slice::from_ref(&file), |e| {
        handed.push(e.position());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(handed, [1]);
    let cut = buf[first..].iter().filter(|&&b| b != 0).count() as u64;
    assert_eq!((found[0].events, found[0].unreadable_bytes), (1, cut));
}

/// A torn tail's `dirty_end` is its last non-zero byte + 1 also when that
/// byte lies blocks away (an active segment's preallocated zeros are
/// searched a block at a time): open keeps and zeroes exactly those bytes.
#[test]
fn a_torn_tail_ends_at_its_last_non_zero_byte_blocks_away() {
    let mut buf = header(1, 1);
    let first = batch(&mut buf, 1, vec![1; 10]);
    buf.extend(std::iter::repeat_n(0xAA, 10));
    buf.resize(20_000, 0);
    buf[6_000] = 1;
    match scan(&buf, SEGMENT_HEADER_BYTES, |_, _, _| {}) {
        ScanEnd::TornTail { offset, dirty_end, .. } => assert_eq!((offset, dirty_end), (first as u64, 6_001)),
        other => panic!("expected a torn tail, got {other:?}"),
    }
    assert_eq!(walk(&buf, 64), [Step::Valid(64, 1), Step::Skipped(first..buf.len())]);
    // Only zeros after the batch: a clean end.
    buf[first..].fill(0);
    assert_eq!(
        scan(&buf, SEGMENT_HEADER_BYTES, |_, _, _| {}),
        ScanEnd::Clean { offset: first as u64 }
    );
}

/// Segment 1 of the store in `dir`: its bytes and its valid batches as
/// (start, end).
fn segment_one(dir: &std::path::Path) -> (PathBuf, Vec<u8>, Vec<(usize, usize)>) {
    let path = segment::path(dir, 1);
    let bytes = std::fs::read(&path).unwrap();
    let mut batches = Vec::new();
    walk_valid_frames(&bytes, 64, |step| {
        if let Frame::Valid(at, h, _) = step {
            batches.push((at, at + h.frame_len as usize));
        }
        ControlFlow::Continue(())
    });
    (path, bytes, batches)
}

fn append_one(store: &annal::Store, stream: &str, data: Vec<u8>) {
    store
        .append(stream, annal::ExpectedVersion::Any, [EventData::new("T", data)])
        .unwrap();
}

/// DURABILITY.md, guarantee 8: "A snapshot counts only when the events it
/// is ahead by could fit in the invalid bytes (at least 42 bytes each)".
/// A snapshot one event ahead of the log, over exactly 42 invalid bytes,
/// proves them acknowledged (open refuses to cut them); over 41, it says
/// nothing of them (a torn tail, cut).
#[test]
fn a_snapshot_ahead_by_events_that_just_fit_the_torn_bytes_proves_them() {
    for (invalid, proven) in [(42, true), (41, false)] {
        let dir = tempfile::tempdir().unwrap();
        let store = annal::Store::open(dir.path(), annal::Options::default()).unwrap();
        append_one(&store, "a", b"one".to_vec());
        append_one(&store, "a", b"two".to_vec());
        store.save_snapshot("a", 2, 1, b"state").unwrap();
        store.close().unwrap();
        // Nothing else proves the last batch durable.
        std::fs::remove_file(dir.path().join("index")).unwrap();
        let (path, mut bytes, batches) = segment_one(dir.path());
        let (at, end) = batches[1];
        bytes[at..end].fill(0);
        bytes[at..at + invalid].fill(0xAA);
        std::fs::write(&path, &bytes).unwrap();

        match annal::Store::open(dir.path(), annal::Options::default()) {
            Err(annal::Error::Corruption { offset, .. }) if proven => assert_eq!(offset, at as u64),
            Ok(store) if !proven => {
                assert_eq!(store.last_position(), 1);
                assert_eq!(store.recovery_report().torn_tail_bytes, invalid as u64);
                store.close().unwrap();
            }
            Err(e) => panic!("{invalid} invalid bytes: {e}"),
            Ok(_) => panic!("{invalid} invalid bytes: opened, the snapshot's event cut"),
        }
    }
}

/// FORMAT.md, "Quarantine": `<N>.seg.from-<offset>` holds the bytes "from
/// `offset` (the first damaged batch) to the end of its last valid batch
/// frame or its last non-zero byte, whichever comes later (a frame may end
/// in zero bytes)". A repair of a damaged batch followed by a batch whose
/// event data ends in zeros keeps that batch whole (salvage gets its event
/// back), and keeps stray bytes after it up to the last non-zero one.
#[test]
fn repair_quarantines_to_the_later_of_the_last_frame_end_and_the_last_non_zero_byte() {
    for stray in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = annal::Store::open(dir.path(), annal::Options::default()).unwrap();
        for i in 1..=4u8 {
            append_one(&store, "s", vec![b'a' + i; 8]);
        }
        append_one(&store, "s", b"x\0\0\0\0".to_vec());
        store.close().unwrap();
        let (path, mut bytes, batches) = segment_one(dir.path());
        assert_eq!(batches.len(), 5);
        let (at3, end3) = batches[2];
        let end5 = batches[4].1;
        bytes[end3 - 2] ^= 1;
        let mut unreadable = bytes[at3..end3].iter().filter(|&&b| b != 0).count() as u64;
        let mut end = end5;
        if stray {
            bytes[end5 + 100] = 0x01;
            unreadable += 1;
            end = end5 + 101;
        }
        std::fs::write(&path, &bytes).unwrap();

        let report = annal::tools::repair(dir.path()).unwrap();
        let what = format!("stray byte: {stray}; {report:?}");
        let from = format!("00000000000000000001.seg.from-{at3}");
        let file = report
            .quarantined_files
            .iter()
            .find(|f| f.file_name().is_some_and(|n| n == from.as_str()))
            .unwrap_or_else(|| panic!("{what}"));
        assert!(std::fs::read(file).unwrap() == bytes[at3..end], "{what}");
        assert_eq!(report.quarantined_bytes, (end - at3) as u64, "{what}");
        assert_eq!(report.quarantined_events, 2, "{what}");
        assert_eq!(report.unreadable_bytes, unreadable, "{what}");
        assert_eq!(report.kept_events, 2, "{what}");

        let mut salvaged = Vec::new();
        let files = annal::tools::quarantined_log_files(dir.path()).unwrap();
        annal::tools::salvage(&files, |e| {
            salvaged.push((e.position(), e.data().to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(salvaged, [(4, vec![b'a' + 4; 8]), (5, b"x\0\0\0\0".to_vec())], "{what}");
    }
}
