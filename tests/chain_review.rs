//! Adversarial review of the segment chain (FORMAT.md "segment header",
//! DURABILITY.md guarantee 9, DESIGN.md invariant 8): a healthy store,
//! written only by annal and reopened, repaired, backed up, upgraded from
//! headers that record no chain, in every durability mode, is never
//! refused by the chain check; and an early segment from a diverged copy
//! of the store is never served as this store's events.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use annal::log::segment::{self, SEGMENT_HEADER_BYTES, SegmentHeader};
use annal::tools::{repair, verify};
use annal::{Durability, Error, EventData, ExpectedVersion, Options, ReadAll, Store};
use common::files::{seg, segment_ids};

const BIN: &str = env!("CARGO_BIN_EXE_annal");

/// Every segment file of `dir`, by path, with its bytes.
fn segment_images(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    segment_ids(dir)
        .into_iter()
        .map(|id| (seg(dir, id), fs::read(seg(dir, id)).unwrap()))
        .collect()
}

fn header_of(dir: &Path, id: u64) -> SegmentHeader {
    let path = seg(dir, id);
    SegmentHeader::decode(&fs::read(&path).unwrap(), &path).unwrap()
}

fn rewrite_header(dir: &Path, id: u64, f: impl FnOnce(&mut SegmentHeader)) {
    let path = seg(dir, id);
    let mut bytes = fs::read(&path).unwrap();
    let mut h = SegmentHeader::decode(&bytes, &path).unwrap();
    f(&mut h);
    bytes[..64].copy_from_slice(&h.encode());
    fs::write(&path, bytes).unwrap();
}

/// Where the valid data of a segment file ends, and the CRC of its last
/// batch ((64, 0) when it holds none).
fn last_batch(bytes: &[u8]) -> (u64, u32) {
    let mut last = (SEGMENT_HEADER_BYTES, 0);
    segment::scan(bytes, SEGMENT_HEADER_BYTES, |at, h, _| {
        last = (at + u64::from(h.frame_len), h.crc);
    });
    last
}

/// FORMAT.md: every header that records the chain records exactly how
/// the segment before it ends (its last batch's end and CRC); a sealed
/// segment ends at its last batch. Returns how many headers record it.
fn assert_chained(dir: &Path) -> usize {
    let ids = segment_ids(dir);
    let mut recorded = 0;
    for w in ids.windows(2) {
        let h = header_of(dir, w[1]);
        let previous = fs::read(seg(dir, w[0])).unwrap();
        if h.previous_end == 0 {
            assert_eq!(h.previous_crc, 0, "segment {}", w[1]);
            continue;
        }
        recorded += 1;
        assert_eq!(
            (h.previous_end, h.previous_crc),
            last_batch(&previous),
            "segment {}'s header vs segment {}",
            w[1],
            w[0]
        );
    }
    recorded
}

/// Every event (position, stream, version, id, data).
type Summary = Vec<common::EventSummary>;

fn summary(store: &Store) -> Summary {
    common::summary(&common::all(store))
}

/// A healthy store: `verify` (library and CLI) finds it clean, every open
/// (read-only and writable, with and without the index file) takes it and
/// serves `expected`.
fn assert_healthy(dir: &Path, options: &Options, expected: &Summary) {
    let report = verify(dir).unwrap();
    assert!(report.is_clean(), "verify: {:?}", report.first_damage());
    let out = std::process::Command::new(BIN)
        .args(["verify"])
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    for read_only in [true, false] {
        let store = Store::open(dir, options.clone().with_read_only(read_only))
            .unwrap_or_else(|e| panic!("open (read_only {read_only}): {e}"));
        assert_eq!(&summary(&store), expected);
        store.close().unwrap();
    }
    // Without the index file: everything replayed.
    let index = dir.join(annal::index::file::FILE_NAME);
    let saved = fs::read(&index).ok();
    let _ = fs::remove_file(&index);
    {
        let store = Store::open(dir, options.clone().with_read_only(true))
            .unwrap_or_else(|e| panic!("open read-only without index: {e}"));
        assert_eq!(&summary(&store), expected);
    }
    if let Some(saved) = saved {
        fs::write(&index, saved).unwrap();
    }
    assert_chained(dir);
}

/// Appends `n` batches of 1..=5 events of payload `size` to four streams.
fn grow(store: &Store, n: u64, size: usize, tag: &str) {
    for i in 0..n {
        let k = (i % 5 + 1) as usize;
        let events: Vec<_> = (0..k)
            .map(|j| EventData::new("E", format!("{tag}{i}-{j}-{}", "x".repeat(size))))
            .collect();
        store
            .append(&format!("{tag}-{}", i % 4), ExpectedVersion::Any, events)
            .unwrap();
    }
}

fn small(size: u64) -> Options {
    Options::default()
        .with_segment_size_bytes(size)
        .with_durability(Durability::Buffered)
}

/// Opens the store in `dir`, grows it by `batches` appends of `size`-byte
/// events tagged `tag`, closes it and returns every event it holds.
fn grown(dir: &Path, opts: &Options, batches: u64, size: usize, tag: &str) -> Summary {
    let store = Store::open(dir, opts.clone()).unwrap();
    grow(&store, batches, size, tag);
    let s = summary(&store);
    store.close().unwrap();
    s
}

/// Cuts the last segment at the end of its last batch: what a crash
/// between sealing it and creating the next segment leaves.
fn seal_last(dir: &Path) -> u64 {
    let last = *segment_ids(dir).last().unwrap();
    let bytes = fs::read(seg(dir, last)).unwrap();
    let (end, _) = last_batch(&bytes);
    fs::OpenOptions::new()
        .write(true)
        .open(seg(dir, last))
        .unwrap()
        .set_len(end)
        .unwrap();
    last
}

// ---------------------------------------------------------------------------
// Crashes around a roll-over.
// ---------------------------------------------------------------------------

/// A crash between the seal of segment N and the creation of N + 1 leaves
/// N cut at its last batch and no N + 1; the store reopened (with the
/// same segment size, one that makes the next append roll at once, or a
/// larger one) grows on, and stays healthy.
#[test]
fn a_crash_between_a_seal_and_the_next_segment_leaves_a_healthy_store() {
    for (reopen_size, with_index) in [(16 * 1024, true), (0, true), (0, false), (1 << 20, true)] {
        let dir = tempfile::tempdir().unwrap();
        let opts = small(16 * 1024);
        grown(dir.path(), &opts, 150, 40, "A");
        let sealed = seal_last(dir.path());
        if !with_index {
            fs::remove_file(dir.path().join(annal::index::file::FILE_NAME)).unwrap();
        }
        // 0: exactly the sealed segment's length, so the next append rolls.
        let size = if reopen_size == 0 {
            fs::metadata(seg(dir.path(), sealed)).unwrap().len()
        } else {
            reopen_size
        };
        let opts = small(size);
        let expected = grown(dir.path(), &opts, 150, 40, "B");
        assert!(segment_ids(dir.path()).len() as u64 > sealed || reopen_size == 1 << 20);
        assert_healthy(dir.path(), &opts, &expected);
    }
}

/// A crash right after segment N + 1 was created (header written, no
/// batch yet): N sealed, N + 1 empty. Reopened, the store appends into
/// N + 1 (even a batch bigger than a segment) and rolls on from it.
#[test]
fn a_crash_right_after_a_roll_leaves_a_healthy_store() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small(16 * 1024);
    grown(dir.path(), &opts, 150, 40, "A");
    let sealed = seal_last(dir.path());
    let bytes = fs::read(seg(dir.path(), sealed)).unwrap();
    let (end, crc) = last_batch(&bytes);
    let last_position = Store::open(dir.path(), opts.clone().with_read_only(true))
        .unwrap()
        .last_position();
    let h = SegmentHeader {
        segment_id: sealed + 1,
        first_position: last_position + 1,
        previous_end: end,
        previous_crc: crc,
        ..header_of(dir.path(), sealed)
    };
    let mut next = h.encode().to_vec();
    next.resize(16 * 1024, 0);
    fs::write(seg(dir.path(), sealed + 1), next).unwrap();
    let expected = summary(&Store::open(dir.path(), opts.clone().with_read_only(true)).unwrap());
    assert_healthy(dir.path(), &opts, &expected);
    // A backup of this state (its published end is in segment N).
    let backups = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        store.backup(backups.path().join("b")).unwrap();
        store.close().unwrap();
    }
    for (d, size) in [(dir.path().to_path_buf(), 4096), (backups.path().join("b"), 16 * 1024)] {
        let opts = small(size);
        let expected = {
            let store = Store::open(&d, opts.clone()).unwrap();
            // Nearly a whole segment of 4 KiB, into the empty segment.
            grow(&store, 1, 3700, "Big");
            grow(&store, 100, 40, "B");
            grow(&store, 1, 3700, "Big");
            let s = summary(&store);
            store.close().unwrap();
            s
        };
        assert_healthy(&d, &opts, &expected);
    }
}

// ---------------------------------------------------------------------------
// Segment sizes.
// ---------------------------------------------------------------------------

/// The segment size is an option of each open (FORMAT.md): reopening
/// with a smaller one (smaller than the tail already is, or than one
/// batch) or a larger one keeps the chain, oversized batches right after
/// a roll included.
#[test]
fn reopening_with_other_segment_sizes_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for (round, size) in [16 * 1024u64, 4 * 1024, 64 * 1024, 4 * 1024, 16 * 1024]
        .into_iter()
        .enumerate()
    {
        let opts = small(size);
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        grow(&store, 40, 60, &format!("R{round}"));
        grow(&store, 1, 3700, &format!("Big{round}"));
        grow(&store, 1, 3700, &format!("Big{round}b"));
        grow(&store, 10, 60, &format!("R{round}c"));
        expected = summary(&store);
        store.close().unwrap();
        assert_healthy(dir.path(), &opts, &expected);
    }
    let chained = assert_chained(dir.path());
    assert!(chained > 8, "{chained}");
    assert_eq!(
        expected.len() as u64,
        Store::open(dir.path(), small(4096)).unwrap().last_position()
    );
}

/// Batches that fill a segment to its last byte.
#[test]
fn batches_exactly_filling_segments_keep_the_chain() {
    let probe = tempfile::tempdir().unwrap();
    let event = |i: u64| EventData::new("E", format!("{:06}", i));
    let frame_len = {
        let store = Store::open(probe.path(), small(1 << 20)).unwrap();
        store.append("S-1", ExpectedVersion::Any, [event(0)]).unwrap();
        store.close().unwrap();
        last_batch(&fs::read(seg(probe.path(), 1)).unwrap()).0 - SEGMENT_HEADER_BYTES
    };
    let per_segment = 4032 / frame_len + 1;
    let dir = tempfile::tempdir().unwrap();
    let opts = small(SEGMENT_HEADER_BYTES + per_segment * frame_len);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..per_segment * 15 + 3 {
        store.append("S-1", ExpectedVersion::Any, [event(i)]).unwrap();
    }
    let expected = summary(&store);
    store.close().unwrap();
    let ids = segment_ids(dir.path());
    assert!(ids.len() >= 14);
    for &id in &ids[..ids.len() - 1] {
        assert_eq!(
            fs::metadata(seg(dir.path(), id)).unwrap().len(),
            SEGMENT_HEADER_BYTES + per_segment * frame_len,
            "segment {id} is exactly full"
        );
    }
    assert_healthy(dir.path(), &opts, &expected);
}

// ---------------------------------------------------------------------------
// Durability modes, group commits across roll-overs, spare segments.
// ---------------------------------------------------------------------------

/// Several appenders at once (group commits whose chunks span two or
/// more segments), in every durability mode, with spare segments adopted;
/// the store closed, or dropped without a close.
#[test]
fn concurrent_appends_across_roll_overs_keep_the_chain_in_every_mode() {
    for durability in [
        Durability::Sync,
        Durability::Periodic(Duration::from_millis(2)),
        Durability::Buffered,
    ] {
        for close in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let opts = Options::default()
                .with_segment_size_bytes(8 * 1024)
                .with_durability(durability);
            let store = Store::open(dir.path(), opts.clone()).unwrap();
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        for i in 0..60u64 {
                            let k = (i % 7 + 1) as usize;
                            let events: Vec<_> = (0..k)
                                .map(|j| EventData::new("E", format!("{t}-{i}-{j}-{}", "y".repeat(30 * j))))
                                .collect();
                            store.append(&format!("T-{t}"), ExpectedVersion::Any, events).unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let expected = summary(&store);
            if close {
                store.close().unwrap();
            } else {
                drop(store);
            }
            assert!(segment_ids(dir.path()).len() > 10);
            assert!(assert_chained(dir.path()) > 9);
            assert_healthy(dir.path(), &opts, &expected);
        }
    }
}

// ---------------------------------------------------------------------------
// Stores written before the chain was recorded.
// ---------------------------------------------------------------------------

/// Headers written by earlier builds record nothing (zeros, FORMAT.md):
/// such a store opens, and this build continues it, chaining the segments
/// it makes (the first one after an old header included).
#[test]
fn a_store_of_headers_that_record_no_chain_is_continued() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small(16 * 1024);
    grown(dir.path(), &opts, 150, 40, "A");
    let old = segment_ids(dir.path());
    for &id in &old {
        rewrite_header(dir.path(), id, |h| {
            h.previous_end = 0;
            h.previous_crc = 0;
        });
    }
    assert_eq!(assert_chained(dir.path()), 0);
    let expected = summary(&Store::open(dir.path(), opts.clone().with_read_only(true)).unwrap());
    assert_healthy(dir.path(), &opts, &expected);
    let expected = grown(dir.path(), &opts, 150, 40, "B");
    assert!(segment_ids(dir.path()).len() > old.len() + 2);
    assert_eq!(assert_chained(dir.path()), segment_ids(dir.path()).len() - old.len());
    assert_healthy(dir.path(), &opts, &expected);
}

// ---------------------------------------------------------------------------
// Repair, then growth.
// ---------------------------------------------------------------------------

/// `repair` cuts a sealed segment at damage in its middle (the later
/// segments go to quarantine); the store then grows new segments and is
/// healthy.
#[test]
fn a_store_cut_by_repair_grows_on_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small(16 * 1024);
    grown(dir.path(), &opts, 200, 40, "A");
    assert!(segment_ids(dir.path()).len() >= 4);
    let path = seg(dir.path(), 2);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired);
    assert_eq!(segment_ids(dir.path()), vec![1, 2]);
    let expected = grown(dir.path(), &opts, 200, 40, "B");
    assert!(segment_ids(dir.path()).len() >= 4);
    assert_healthy(dir.path(), &opts, &expected);
}

/// Bytes added after the last batch of a sealed segment are cut by
/// `repair` (no event lost); the chain holds, and the store grows on.
#[test]
fn bytes_cut_from_a_sealed_segment_by_repair_keep_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small(16 * 1024);
    let before = grown(dir.path(), &opts, 200, 40, "A");
    let path = seg(dir.path(), 2);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0xAB; 700]);
    fs::write(&path, bytes).unwrap();
    assert!(!verify(dir.path()).unwrap().is_clean());
    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired);
    assert_eq!(rep.kept_events, before.len() as u64);
    assert_healthy(dir.path(), &opts, &before);
    let expected = grown(dir.path(), &opts, 100, 40, "B");
    assert_healthy(dir.path(), &opts, &expected);
}

/// A bit flipped in a header's chain fields (or anywhere in it) is bit
/// rot that `repair` mends without losing an event, in a header that
/// records the chain and in one that does not.
#[test]
fn a_header_rotted_in_its_chain_fields_is_rebuilt_as_it_was() {
    for (old_format, at) in [
        (false, 48),
        (false, 51),
        (false, 57),
        (false, 20),
        (true, 49),
        (true, 58),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = small(16 * 1024);
        let before = grown(dir.path(), &opts, 200, 40, "A");
        if old_format {
            rewrite_header(dir.path(), 3, |h| {
                h.previous_end = 0;
                h.previous_crc = 0;
            });
        }
        let original = header_of(dir.path(), 3);
        let path = seg(dir.path(), 3);
        let mut bytes = fs::read(&path).unwrap();
        bytes[at] ^= 0x10;
        fs::write(&path, bytes).unwrap();
        let rep = repair(dir.path()).unwrap();
        assert_eq!(rep.headers_rebuilt, vec![3], "byte {at}");
        assert_eq!(rep.kept_events, before.len() as u64);
        assert_eq!(header_of(dir.path(), 3), original, "byte {at}");
        assert_healthy(dir.path(), &opts, &before);
    }
}

// ---------------------------------------------------------------------------
// Backups.
// ---------------------------------------------------------------------------

/// A backup taken while appends go on opens, grows and stays healthy; so
/// does the store it was taken from.
#[test]
fn a_backup_taken_during_appends_grows_on_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let opts = Options::default().with_segment_size_bytes(8 * 1024);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    grow(&store, 50, 40, "A");
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || grow(&store, 300, 40, "W"))
    };
    for k in 0..5 {
        store.backup(backups.path().join(format!("b{k}"))).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    writer.join().unwrap();
    let expected = summary(&store);
    store.close().unwrap();
    assert_healthy(dir.path(), &opts, &expected);
    for k in 0..5 {
        let b = backups.path().join(format!("b{k}"));
        let expected = grown(&b, &opts, 60, 40, "C");
        assert_healthy(&b, &opts, &expected);
    }
}

// ---------------------------------------------------------------------------
// False negatives: an early segment from a copy that went on differently.
// ---------------------------------------------------------------------------

/// `dir` holds another copy's segment 1 (its streams named `Y-*`):
/// `verify` sees it, and every open, read-only or writable, refuses the
/// store, naming segment 2.
fn assert_refused_naming_segment_2(dir: &Path, opts: &Options) {
    assert!(!verify(dir).unwrap().is_clean());
    for read_only in [true, false] {
        match Store::open(dir, opts.clone().with_read_only(read_only)) {
            Err(Error::Corruption { file, offset, reason }) => {
                assert_eq!((file, offset), (seg(dir, 2), 0), "read_only {read_only}: {reason}");
            }
            Err(e) => panic!("not corruption: {e}"),
            Ok(store) => {
                let ys = store
                    .read_all(ReadAll::forward())
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .filter(|e| e.stream().starts_with("Y-"))
                    .count();
                panic!("opened (read_only {read_only}); serves {ys} events of the other copy as this store's");
            }
        }
    }
}

/// Two copies of one store that went on differently; `a` has rolled past
/// segment 1 while `b` is still writing it (its tail, preallocated, holds
/// fewer events at the same offsets as `a`'s). `b`'s segment 1 put in
/// place of `a`'s: DURABILITY.md guarantee 9 says every open refuses the
/// store, naming segment 2, with or without an index file. With the
/// index file, the position before segment 2 lands on `b`'s zeros: no
/// valid batch, so the chain check is skipped, and `b`'s events are
/// served as `a`'s.
#[test]
fn an_early_segment_from_a_copy_that_is_still_its_tail_is_refused() {
    // A short idempotency window, so that open reads no event of segment 1
    // to fill it (as in any store much bigger than the window).
    let opts = small(16 * 1024).with_idempotency_window_events(16);
    let (a, b) = common::files::seeded_copies(&opts);
    for (dir, prefix, n) in [(a.path(), "X", 150), (b.path(), "Y", 20)] {
        grown(dir, &opts, n, 40, prefix);
    }
    assert!(seg(a.path(), 3).exists());
    assert!(!seg(b.path(), 2).exists());
    fs::copy(seg(b.path(), 1), seg(a.path(), 1)).unwrap();
    assert_refused_naming_segment_2(a.path(), &opts);
}

/// The same, with `b` having sealed its segment 1 at another length (its
/// events are bigger): the batch at the index's location is no valid
/// batch in `b`'s segment, so the check is skipped again.
#[test]
fn an_early_segment_from_a_copy_sealed_elsewhere_is_refused() {
    // A short idempotency window, so that open reads no event of segment 1
    // to fill it (as in any store much bigger than the window).
    let opts = small(16 * 1024).with_idempotency_window_events(16);
    let (a, b) = common::files::seeded_copies(&opts);
    for (dir, prefix, size) in [(a.path(), "X", 40), (b.path(), "Y", 53)] {
        grown(dir, &opts, 150, size, prefix);
    }
    assert!(seg(b.path(), 2).exists());
    assert_ne!(
        fs::metadata(seg(a.path(), 1)).unwrap().len(),
        fs::metadata(seg(b.path(), 1)).unwrap().len()
    );
    fs::copy(seg(b.path(), 1), seg(a.path(), 1)).unwrap();
    assert_refused_naming_segment_2(a.path(), &opts);
}

/// A chain break says that one of two segments comes from another copy
/// of the store, not which (FORMAT.md). `repair` keeps the log before the
/// segment named (the earlier one, which may be the other copy's) and
/// moves this store's own later segments to quarantine: after it, the
/// other copy's events are served as this store's, which guarantee 9
/// promises never happens. (It refuses a segment of another store id
/// instead: "which store's events to keep is for the user to say".)
#[test]
fn repair_does_not_adopt_an_early_segment_from_a_diverged_copy() {
    let opts = small(16 * 1024);
    let (a, b) = common::files::seeded_copies(&opts);
    // Same shapes (same offsets), other stream names.
    for (dir, prefix) in [(a.path(), "X"), (b.path(), "Y")] {
        grown(dir, &opts, 150, 40, prefix);
    }
    assert_eq!(
        fs::metadata(seg(a.path(), 1)).unwrap().len(),
        fs::metadata(seg(b.path(), 1)).unwrap().len()
    );
    fs::copy(seg(b.path(), 1), seg(a.path(), 1)).unwrap();
    let d = verify(a.path()).unwrap().damage.expect("verify sees the chain break");
    assert_eq!((d.segment, d.offset), (Some(2), 0));
    let before = segment_images(a.path());
    // Refused, as for a segment of another store: which copy's events to
    // keep is for the user to say. Nothing changes.
    match repair(a.path()) {
        Err(Error::Corruption { file, reason, .. }) => {
            assert_eq!(file, seg(a.path(), 2));
            assert!(reason.contains("repair changed nothing"), "{reason}");
        }
        Err(e) => panic!("{e}"),
        Ok(r) => panic!("repair went ahead: {r:?}"),
    }
    let after = segment_images(a.path());
    assert!(before == after, "repair changed segments");
    assert!(!a.path().join("quarantine").exists());
}
