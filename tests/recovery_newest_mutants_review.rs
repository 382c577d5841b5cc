//! Gaps found by a hand-made mutation review of the newest recovery code
//! (`src/recovery/chain.rs`: `length_damage`, `chain_contradicted`,
//! `chain_broken`, `chain_reason`, `last_batch_start`, `short_of_floor`,
//! `floor_batch_replaced`; `src/recovery/mod.rs`: `missing_log`,
//! `foreign_files` and the checks of the files it finds,
//! `is_own_temp_file`, `remove_leftovers`, `side_file_store_ids`;
//! `src/recovery/replay.rs`: `bytes_after_sealed_end`,
//! `starts_where_indexed`): each test here passes on the code and fails
//! with one of the mutants that the existing tests let through. No real
//! bug was found.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use annal::log::segment::{SEGMENT_HEADER_BYTES, SegmentHeader};
use annal::{Error, EventData, ExpectedVersion, Options, Store};
use common::failing_open::FailingOpen;
use common::files::{batch_starts, copy_files_but_lock, seg};

fn opts() -> Options {
    Options::default().with_segment_size_bytes(4096)
}

fn sized(fill: u8, len: usize) -> EventData {
    EventData::new("E", vec![fill; len])
}

/// Appends events of 200 bytes filled with `fill` to the store in `dir`
/// until segment `until` exists; closes it (the index file then covers
/// the whole log).
fn fill_until(dir: &Path, fill: u8, until: u64) {
    let store = Store::open(dir, opts()).unwrap();
    let mut i = 0;
    while !seg(dir, until).exists() {
        store.append("s", ExpectedVersion::Any, [sized(fill, 200)]).unwrap();
        i += 1;
        assert!(i < 1000);
    }
    store.close().unwrap();
}

/// Rewrites the header of the segment file at `path` (its CRC made anew).
fn edit_header(path: &Path, edit: impl FnOnce(&mut SegmentHeader)) {
    let mut bytes = fs::read(path).unwrap();
    let mut header = SegmentHeader::decode(&bytes[..SEGMENT_HEADER_BYTES as usize], path).unwrap();
    edit(&mut header);
    bytes[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&header.encode());
    fs::write(path, bytes).unwrap();
}

/// The corruption a writable open of `dir` reports: (file, offset, reason).
fn corruption(dir: &Path) -> (PathBuf, u64, String) {
    match Store::open(dir, opts().with_create_if_missing(false)) {
        Err(Error::Corruption { file, offset, reason }) => (file, offset, reason),
        Err(e) => panic!("not corruption: {e}"),
        Ok(_) => panic!("opened"),
    }
}

/// FORMAT.md: a shorter previous segment is damage in it only "when its
/// own valid batches do not contradict the header". Another copy's
/// segment 2 (a copy made once the store was in segment 2, gone on with
/// other events of the same sizes: the same layout) that also lost 10
/// bytes in its middle: its valid last batch, past the damage, holds the
/// position before segment 3's first with another CRC, so the open names
/// segment 3 at offset 0 (the two copies), not segment 2 as cut.
/// (Killed: the `chain_contradicted` check dropped from `length_damage`.)
#[test]
fn another_copys_segment_that_also_lost_bytes_is_named_as_another_copys() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fill_until(a.path(), b'a', 2);
    copy_files_but_lock(a.path(), b.path());
    fill_until(a.path(), b'a', 3);
    fill_until(b.path(), b'b', 3);
    let ours = fs::read(seg(a.path(), 2)).unwrap();
    let mut theirs = fs::read(seg(b.path(), 2)).unwrap();
    assert_eq!(batch_starts(&ours), batch_starts(&theirs), "not the same layout");
    assert_ne!(ours, theirs);
    let starts = batch_starts(&theirs);
    assert!(starts.len() >= 4, "{starts:?}");
    let at = starts[starts.len() / 2] + 30;
    theirs.drain(at..at + 10);
    fs::write(seg(a.path(), 2), &theirs).unwrap();

    let (file, offset, reason) = corruption(a.path());
    assert!(
        file == seg(a.path(), 3) && offset == 0,
        "another copy's segment 2 reported as damage in {} at {offset}: {reason}",
        file.display()
    );
    assert!(reason.contains("another copy"), "{reason}");
}

/// `length_damage` reports a cut only when "the index ... knows the
/// segment as the bytes left show it": the record the index puts last in
/// the segment must be in that segment. A header of segment 3 whose first
/// position is 2 (the position before it lies in segment 1), with segment
/// 2 cut inside its first batch: the index has nothing of segment 2 to
/// say there, so the open names segment 3's header (offset 0), not
/// segment 2 at offset 64. (Killed: `last_indexed.segment == previous`
/// dropped.)
#[test]
fn a_header_naming_a_position_of_an_earlier_segment_is_not_read_as_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    fill_until(dir.path(), b'a', 5);
    edit_header(&seg(dir.path(), 3), |h| h.first_position = 2);
    let mut seg2 = fs::read(seg(dir.path(), 2)).unwrap();
    seg2.truncate(SEGMENT_HEADER_BYTES as usize + 100);
    fs::write(seg(dir.path(), 2), &seg2).unwrap();

    let (file, offset, reason) = corruption(dir.path());
    assert!(
        file == seg(dir.path(), 3) && offset == 0,
        "reported in {} at {offset}: {reason}",
        file.display()
    );
}

/// DESIGN.md (Recovery) and `missing_log`: a file named like a side file
/// "counts when it starts with its magic, or cannot be read (it may be
/// one)". A directory holding only an `index` file that cannot be opened
/// (permission denied) is a store whose log is missing: writable and
/// read-only opens refuse it as `Corruption` naming segment 1, not as a
/// directory without a store. (Killed: `is_side_file` taking a file that
/// cannot be read as none.)
#[test]
fn a_side_file_that_cannot_be_read_counts_as_a_store_whose_log_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("index"), b"ANNALIDX unreadable").unwrap();
    for read_only in [false, true] {
        let fs = FailingOpen {
            path: dir.path().join("index"),
            errno: 13,
        };
        match Store::open_with(fs, dir.path(), Options::default().with_read_only(read_only)) {
            Err(Error::Corruption { file, reason, .. }) => {
                assert_eq!(file, seg(dir.path(), 1), "{reason}");
                assert!(reason.contains("missing"), "{reason}");
            }
            Err(other) => panic!("read_only {read_only}: expected the missing log, got {other}"),
            Ok(_) => panic!("read_only {read_only}: opened"),
        }
    }
    assert_eq!(common::files::listing(dir.path()), vec!["index".to_string()]);
}

/// `foreign_files`: a name of a side file's temporary file "that holds
/// another program's bytes" is not written over, and a store's own
/// temporary files are never directories (`remove_leftovers`): another
/// program's folder named `index.tmp` in a directory without a store makes
/// a writable open refuse to create one (`InvalidInput` naming it), the
/// folder and what it holds left as they are. (Killed: every error
/// reading such a file taken as the store's own leftover.)
#[test]
fn another_programs_folder_named_like_a_temporary_file_is_not_built_over() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("index.tmp")).unwrap();
    fs::write(dir.path().join("index.tmp").join("mine"), b"kept").unwrap();
    match Store::open(dir.path(), Options::default()) {
        Err(Error::InvalidInput(m)) => assert!(m.contains("`index.tmp`") && m.contains("none is created"), "{m}"),
        Err(other) => panic!("expected InvalidInput, got {other}"),
        Ok(_) => panic!("a store was created beside another program's index.tmp folder"),
    }
    assert_eq!(common::files::listing(dir.path()), vec!["index.tmp".to_string()]);
    assert_eq!(fs::read(dir.path().join("index.tmp").join("mine")).unwrap(), b"kept");
}

/// Recovery's decision table: a sealed segment with invalid bytes after
/// its last batch is refused ("it was synced"), by every open, with the
/// index file loaded too (the segment then not scanned: the next
/// segment's header says where its last batch ends). One byte is enough:
/// a single non-zero byte right at that end is refused at that offset.
/// (Killed: the bytes looked at from one past that end.)
#[test]
fn one_byte_right_after_a_sealed_segments_last_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fill_until(dir.path(), b'a', 3);
    let path = seg(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let end = bytes.len() as u64;
    bytes.push(0x01);
    fs::write(&path, &bytes).unwrap();
    for read_only in [false, true] {
        match Store::open(dir.path(), opts().with_read_only(read_only)) {
            Err(Error::Corruption { file, offset, reason }) => {
                assert_eq!((file, offset), (path.clone(), end), "{reason}");
            }
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("read_only {read_only}: opened with a byte after segment 1's last batch"),
        }
    }
}

/// `short_of_floor` (also `verify`'s): a log falls short of the index
/// file's durable floor only when it ends before it, in its segment or an
/// earlier one. An index file saved in segment 1, behind a log that went
/// on into segment 2 (saved, then the store went on and was killed, say:
/// the index file behind the log, which open loads and replays after):
/// the log's end in segment 2 lies at a smaller offset than the floor's
/// in segment 1, and is past it all the same. `verify` finds no damage,
/// and the store opens with every event. (Killed: the floor's offset
/// compared with the end's when they lie in different segments.)
#[test]
fn a_log_ending_in_a_later_segment_at_a_smaller_offset_reaches_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for _ in 0..10 {
        store.append("s", ExpectedVersion::Any, [sized(b'a', 200)]).unwrap();
    }
    store.close().unwrap();
    assert!(!seg(dir.path(), 2).exists());
    let saved = fs::read(dir.path().join("index")).unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    while !seg(dir.path(), 2).exists() {
        store.append("s", ExpectedVersion::Any, [sized(b'a', 200)]).unwrap();
    }
    store.append("s", ExpectedVersion::Any, [sized(b'a', 10)]).unwrap();
    let events = store.last_position();
    store.close().unwrap();
    fs::write(dir.path().join("index"), &saved).unwrap();

    let report = annal::tools::verify(dir.path()).unwrap();
    assert!(report.damage.is_none(), "{:?}", report.damage);
    assert!(report.events == events, "{report:?}");
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.last_position(), events);
    assert!(store.recovery_report().index_loaded);
    store.close().unwrap();
}

/// FORMAT.md (chain): an invalid batch where the previous segment's last
/// batch should be "is damage that the reads report where it lies,
/// provided the previous file is `previous end` bytes long"; otherwise
/// "it is reported at offset 0 of this segment". Segment 2's last batch
/// with its CRC field flipped, and 16 zero bytes after it (the file
/// longer than segment 3's header records): the open refuses it at
/// offset 0 of segment 3, saying segment 2 holds no valid batch there
/// (not naming the damaged batch's fields as a valid one's). (Killed: a
/// file of at least that length taken as damage for the reads; the
/// invalid batch's fields named as the last batch's.)
#[test]
fn an_invalid_last_batch_in_a_longer_file_is_refused_at_the_next_header() {
    let dir = tempfile::tempdir().unwrap();
    fill_until(dir.path(), b'a', 4);
    let path = seg(dir.path(), 2);
    let mut bytes = fs::read(&path).unwrap();
    let last = *batch_starts(&bytes).last().unwrap();
    bytes[last + 12] ^= 0x01;
    bytes.extend([0u8; 16]);
    fs::write(&path, &bytes).unwrap();

    let (file, offset, reason) = corruption(dir.path());
    assert!(
        file == seg(dir.path(), 3) && offset == 0,
        "reported in {} at {offset}: {reason}",
        file.display()
    );
    assert!(reason.contains("holds no valid batch there"), "{reason}");
}

/// DESIGN.md (Recovery): when segments of different stores are found, "the
/// id most of the store's files carry, the index, checkpoints and
/// snapshot headers included, is the store's". Segment 1 of another store
/// put in place of this store's segment 1, beside its segment 2: the
/// segments tie, and each of the three side files, left alone in the
/// directory (the other two absent), is the vote that names segment 1 as
/// the stray one. (Killed: an absent side file taken as an error; the
/// index's or the snapshot file's vote left out, which left a tie that
/// names segment 2.)
#[test]
fn each_side_file_alone_names_another_stores_segment_1() {
    let other = tempfile::tempdir().unwrap();
    let store = Store::open(other.path(), opts()).unwrap();
    store.append("t", ExpectedVersion::Any, [sized(b'x', 100)]).unwrap();
    store.close().unwrap();
    let theirs = fs::read(seg(other.path(), 1)).unwrap();
    for witness in ["index", annal::CHECKPOINTS_FILE_NAME, "snapshots"] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        while !seg(dir.path(), 2).exists() {
            store.append("s", ExpectedVersion::Any, [sized(b'a', 200)]).unwrap();
        }
        store.checkpoints().save("reader", 2).unwrap();
        store.save_snapshot("s", 2, 1, b"state").unwrap();
        store.close().unwrap();
        for name in ["index", annal::CHECKPOINTS_FILE_NAME, "snapshots"] {
            if name != witness {
                fs::remove_file(dir.path().join(name)).unwrap();
            }
        }
        fs::write(seg(dir.path(), 1), &theirs).unwrap();
        let (file, offset, reason) = corruption(dir.path());
        assert!(
            file == seg(dir.path(), 1) && offset == 0 && reason.contains("belongs to another store"),
            "{witness}: reported in {} at {offset}: {reason}",
            file.display()
        );
    }
}

/// FORMAT.md (chain): `previous CRC` is "0 when it holds none". Segment 2
/// left a bare header (it holds no batch), and segment 3's header saying
/// so by its first position (the position before it lies in segment 1)
/// and its previous end (64), but recording a CRC other than 0: the chain
/// does not hold, and every open refuses it at offset 0 of segment 3.
/// (Killed: only the recorded end compared with an empty segment's.)
#[test]
fn an_empty_previous_segment_recorded_with_a_crc_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fill_until(dir.path(), b'a', 4);
    let path2 = seg(dir.path(), 2);
    let first_of_2 = SegmentHeader::decode(&fs::read(&path2).unwrap(), &path2)
        .unwrap()
        .first_position;
    edit_header(&seg(dir.path(), 3), |h| {
        assert_ne!(h.previous_crc, 0);
        h.first_position = first_of_2;
        h.previous_end = SEGMENT_HEADER_BYTES;
    });
    let mut bytes = fs::read(&path2).unwrap();
    bytes.truncate(SEGMENT_HEADER_BYTES as usize);
    fs::write(&path2, &bytes).unwrap();
    for read_only in [false, true] {
        match Store::open(dir.path(), opts().with_read_only(read_only)) {
            Err(Error::Corruption { file, offset, reason }) => {
                assert_eq!((file, offset), (seg(dir.path(), 3), 0), "{reason}");
            }
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("read_only {read_only}: opened"),
        }
    }
}

/// Where the valid batches of a segment's bytes end (after the last one
/// `batch_starts` finds).
fn data_end(bytes: &[u8]) -> u64 {
    let last = *batch_starts(bytes).last().unwrap();
    (last + u32::from_le_bytes(bytes[last + 4..last + 8].try_into().unwrap()) as usize) as u64
}

/// FORMAT.md (chain): the previous segment's last batch is "the one
/// holding the position before this segment's `first position`". Segments
/// of one batch each (events of 3,800 bytes), and segment 3's header
/// saying it starts one position later than it does (the position before
/// that one is segment 3's own first): segment 2 holds no batch there, so
/// the chain does not hold, and every open refuses it at offset 0 of
/// segment 3, though segment 2's only batch is the one the header
/// records. (Killed: the index's record in a later segment looked up in
/// segment 2's bytes, where the same offset is that very batch's record.)
#[test]
fn a_header_starting_one_position_late_is_refused_though_the_batch_before_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    while !seg(dir.path(), 4).exists() {
        store.append("s", ExpectedVersion::Any, [sized(b'a', 3800)]).unwrap();
    }
    store.close().unwrap();
    assert_eq!(batch_starts(&fs::read(seg(dir.path(), 2)).unwrap()).len(), 1);
    edit_header(&seg(dir.path(), 3), |h| h.first_position += 1);
    for read_only in [false, true] {
        match Store::open(dir.path(), opts().with_read_only(read_only)) {
            Err(Error::Corruption { file, offset, reason }) => {
                assert_eq!((file, offset), (seg(dir.path(), 3), 0), "{reason}");
            }
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("read_only {read_only}: opened with segment 3's first position off by one"),
        }
    }
}

/// A copy of a store's index file (events of 100 bytes up to position
/// 6, all in segment 1) put beside the log of another copy of the store
/// (same store id) that went on with bigger events: it reaches past the
/// index file's durable floor in segment 1, but holds fewer positions
/// (`fewer`) or holds the floor's last position only in segment 2. The
/// log reaches the floor but does not hold the batch recorded there:
/// acknowledged events were replaced (FORMAT.md, index file; DESIGN.md,
/// Recovery), refused at the floor's end offset in segment 1. (Killed:
/// a position the log lacks taken as the recorded batch; the record of
/// the position in segment 2 looked up in segment 1's bytes.)
#[test]
fn a_log_past_the_floor_without_the_floors_position_there_is_refused() {
    for fewer in [true, false] {
        let (a, b) = common::files::seeded_copies(&opts());
        let store = Store::open(a.path(), opts()).unwrap();
        for _ in 0..5 {
            store.append("s", ExpectedVersion::Any, [sized(b'a', 100)]).unwrap();
        }
        assert_eq!(store.last_position(), 6);
        store.close().unwrap();
        let floor_end = data_end(&fs::read(seg(a.path(), 1)).unwrap());
        let store = Store::open(b.path(), opts()).unwrap();
        for _ in 0..2 {
            store.append("s", ExpectedVersion::Any, [sized(b'b', 1500)]).unwrap();
        }
        if !fewer {
            while !seg(b.path(), 2).exists() {
                store.append("s", ExpectedVersion::Any, [sized(b'b', 1500)]).unwrap();
            }
            while store.last_position() < 6 {
                store.append("s", ExpectedVersion::Any, [sized(b'b', 10)]).unwrap();
            }
        }
        assert_eq!(store.last_position() < 6, fewer);
        assert_eq!(seg(b.path(), 2).exists(), !fewer);
        store.close().unwrap();
        assert!(data_end(&fs::read(seg(b.path(), 1)).unwrap()) > floor_end);
        fs::copy(a.path().join("index"), b.path().join("index")).unwrap();
        let (file, offset, reason) = corruption(b.path());
        assert!(
            file == seg(b.path(), 1) && offset == floor_end && reason.contains("replaced"),
            "fewer {fewer}: reported in {} at {offset} (floor at {floor_end}): {reason}",
            file.display()
        );
    }
}

/// Recovery's decision table: "a segment header's first position that
/// does not follow (the log before it, or the index file's events in it)"
/// is refused. The index file's end in segment 2, which holds three
/// events, and segment 2's header (an old one, recording no previous end,
/// so the chain tells nothing) saying it starts one position later: the
/// index puts the position before that one in segment 2 itself, so every
/// open refuses the header at offset 0 of segment 2. (Killed: the
/// position before the first allowed in the segment itself; only the
/// first position looked up.)
#[test]
fn a_header_first_position_inside_its_own_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fill_until(dir.path(), b'a', 2);
    let store = Store::open(dir.path(), opts()).unwrap();
    for _ in 0..2 {
        store.append("s", ExpectedVersion::Any, [sized(b'a', 10)]).unwrap();
    }
    store.close().unwrap();
    assert!(!seg(dir.path(), 3).exists());
    assert_eq!(batch_starts(&fs::read(seg(dir.path(), 2)).unwrap()).len(), 3);
    edit_header(&seg(dir.path(), 2), |h| {
        h.first_position += 1;
        h.previous_end = 0;
        h.previous_crc = 0;
    });
    for read_only in [false, true] {
        match Store::open(dir.path(), opts().with_read_only(read_only)) {
            Err(Error::Corruption { file, offset, reason }) => {
                assert_eq!((file, offset), (seg(dir.path(), 2), 0), "{reason}");
            }
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("read_only {read_only}: opened with segment 2's first position off by one"),
        }
    }
}

/// `remove_leftovers`: "the store makes temporary files, never
/// directories: a directory of that name is someone else's". A folder
/// named like a segment's temporary file (`…09.seg.tmp`) in a store's
/// directory is left as it is, and the store opens. (Killed: an error
/// removing a directory failing the open.)
#[test]
fn a_folder_named_like_a_segments_temporary_file_is_left_and_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    fill_until(dir.path(), b'a', 2);
    let events = Store::open(dir.path(), opts().with_read_only(true))
        .unwrap()
        .last_position();
    let folder = dir.path().join(format!("{}.tmp", annal::log::segment::file_name(9)));
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("mine"), b"kept").unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.last_position(), events);
    store.close().unwrap();
    assert_eq!(fs::read(folder.join("mine")).unwrap(), b"kept");
}

/// DESIGN.md (Recovery): the store's own stray temporary files, the spare
/// segment `next-segment.tmp` among them, "are removed" by a writable
/// open. A leftover spare (a whole segment's worth of space, in a real
/// one) is gone once the open returns, not kept until the store makes a
/// spare of its own or closes. (Killed: the spare's name left out of the
/// store's own temporary files.)
#[test]
fn a_leftover_spare_segment_is_removed_by_the_open() {
    let dir = tempfile::tempdir().unwrap();
    fill_until(dir.path(), b'a', 2);
    let spare = dir.path().join("next-segment.tmp");
    fs::write(&spare, b"a spare left by a killed process").unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_ne!(
        fs::read(&spare).ok().as_deref(),
        Some(&b"a spare left by a killed process"[..]),
        "the leftover spare is still there after the open"
    );
    store.close().unwrap();
}

/// DESIGN.md (Recovery): a `LOCK` file "that holds something else than
/// the store's lock note" is another program's, and no store is created
/// over it. One at least as long as the note (so that reading the note's
/// length of it succeeds) and starting otherwise: a writable open refuses
/// the directory (`InvalidInput` naming `LOCK`) and leaves the file's bytes
/// as they were. (Killed: any `LOCK` file long enough taken as the
/// store's.)
#[test]
fn another_programs_long_lock_file_is_not_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = b"pid 4242, held by another program for its own reasons\n".to_vec();
    fs::write(dir.path().join("LOCK"), &theirs).unwrap();
    match Store::open(dir.path(), Options::default()) {
        Err(Error::InvalidInput(m)) => assert!(m.contains("`LOCK`") && m.contains("none is created"), "{m}"),
        Err(other) => panic!("expected InvalidInput, got {other}"),
        Ok(_) => panic!("a store was created over another program's LOCK file"),
    }
    assert_eq!(fs::read(dir.path().join("LOCK")).unwrap(), theirs);
    assert_eq!(common::files::listing(dir.path()), vec!["LOCK".to_string()]);
}

/// FORMAT.md (chain): when the previous segment's last batch differs from
/// what the next header records, "a valid batch there means one of the two
/// files comes from another copy of the store". Another copy's segment 2
/// (the same layout, other events) whole: the open's reason names where
/// its last batch ends and that batch's CRC, not a segment without a
/// valid batch there. (Killed: the reason saying no valid batch is there
/// whatever was found.)
#[test]
fn another_copys_whole_segment_is_named_with_its_last_batch() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fill_until(a.path(), b'a', 2);
    copy_files_but_lock(a.path(), b.path());
    fill_until(a.path(), b'a', 3);
    fill_until(b.path(), b'b', 3);
    let theirs = fs::read(seg(b.path(), 2)).unwrap();
    let last = *batch_starts(&theirs).last().unwrap();
    let crc = u32::from_le_bytes(theirs[last + 12..last + 16].try_into().unwrap());
    fs::write(seg(a.path(), 2), &theirs).unwrap();
    let (file, offset, reason) = corruption(a.path());
    assert_eq!((file, offset), (seg(a.path(), 3), 0), "{reason}");
    let named = format!("its last batch ends at {} with CRC {crc:#010x}", data_end(&theirs));
    assert!(reason.contains(&named), "{reason} does not say {named}");
}

/// FORMAT.md (chain): "an invalid batch there is damage that the reads
/// report where it lies, provided the previous file is `previous end`
/// bytes long". Segment 2's last record with its batch back-offset rotted
/// (it points before the file's start), the file as long as segment 3's
/// header records: the damage is reported where it lies (segment 2, at
/// that record), not as segment 3 coming from another copy. (Killed: a
/// record that cannot be read where the index puts it taken as a segment
/// holding no batch, refused at segment 3's header.)
#[test]
fn an_unreadable_last_record_in_a_whole_segment_is_reported_where_it_lies() {
    let dir = tempfile::tempdir().unwrap();
    fill_until(dir.path(), b'a', 4);
    let path = seg(dir.path(), 2);
    let mut bytes = fs::read(&path).unwrap();
    let record = *batch_starts(&bytes).last().unwrap() + 32;
    bytes[record + 8..record + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let (file, offset, reason) = corruption(dir.path());
    assert_eq!((file, offset), (path, record as u64), "{reason}");
}
