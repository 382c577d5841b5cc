//! A hand-made mutation review of the offline repair tools:
//! `src/tools/repair.rs`, `src/tools/salvage.rs` and `src/tools/verify.rs`
//! (with `walk.rs` and `mod.rs` for context), against what the doc comment
//! of `annal::tools::repair`, the fields of `RepairReport` and
//! docs/DURABILITY.md promise.
//!
//! Found (the two tests marked "REAL BUG" failed against the code reviewed;
//! both are fixed):
//! - `cut_sealed_tail` counts every non-zero byte it cuts from a sealed
//!   segment's end as `unreadable_bytes` and none of its records in
//!   `quarantined_events`, also when those bytes are a valid batch frame
//!   (a copy of one of the log's batches, which it lets through as
//!   continuing nothing), while `salvage` reads that batch's event back
//!   from the very copy: the report contradicts the quarantined bytes;
//! - the writable open that `repair` makes when it has something to fix
//!   cuts a torn tail of the active segment into
//!   `quarantine/<N>.seg.torn-<offset>`, a file that the report's
//!   `quarantined_files` ("files created in the quarantine folder") does
//!   not list.
//!
//! Mutants run (each applied alone, against `cargo test --lib tools::` and
//! the suite modules that reach the tools; the survivors also
//! against the `recovery_review`, `spare_review` and `index_mutants_review`
//! binaries, in groups), SURVIVED ones killed now by the test named:
//! 1. [R11] repair.rs:583 (`cut_sealed_tail`) `<= expected` to `< expected`:
//!    SURVIVED; killed by
//!    `a_copy_of_a_sealed_segments_last_batch_after_it_costs_no_event`.
//! 2. [R10] repair.rs:520 (`rebuild_header`) `differing > REBUILD_BITS_MAX` to
//!    `>=`: SURVIVED; killed by `a_header_with_one_whole_byte_rotted_is_rebuilt`.
//! 3. [R12] repair.rs:383 (`fix_side_files`) `position > report.kept_events` to
//!    `>=`: SURVIVED; killed by `a_checkpoint_at_the_logs_last_event_is_left_alone`.
//! 4. [R13] repair.rs:291 `checkpoints_quarantined |= had_checkpoints` to `=`:
//!    SURVIVED; killed by
//!    `a_lost_store_whose_checkpoints_file_was_damaged_reports_it_quarantined`.
//! 5. [R14] repair.rs:269 `.or(mended_damage)` dropped from `report.damage`:
//!    SURVIVED; killed by `a_repair_that_only_mended_reports_the_damage_it_mended`.
//! 6. [R19] repair.rs:596 (`cut_sealed_tail`) `unreadable_bytes +=` every byte,
//!    zeros included: SURVIVED; killed by
//!    `zeros_among_bytes_cut_from_a_sealed_segment_are_not_unreadable`.
//! 7. [R21] repair.rs:595 (`cut_sealed_tail`) `quarantined_bytes +=` dropped:
//!    SURVIVED; killed by
//!    `zeros_among_bytes_cut_from_a_sealed_segment_are_not_unreadable`.
//! 8. [S1] salvage.rs:123 `stopped = true` dropped (a `Break` stops one file's
//!    walk only): SURVIVED; killed by `salvage_stops_for_good_at_the_first_break`.
//! 9. [S3] salvage.rs:96 `is_whole_segment(name)` to `name.ends_with(".seg")`:
//!    SURVIVED; killed by
//!    `a_numbered_copy_of_a_whole_segment_is_read_after_its_header`.
//! 10. [R6] repair.rs:686 zeroing from `damage.offset + 1`: KILLED by
//!     `contract_review::repair_of_damage_far_back_lowers_checkpoints_and_drops_snapshots_past_the_kept_log`
//!     and others (also by `a_damaged_segments_tail_is_zeroed_to_its_end`).
//! 11. [R7] repair.rs:688 second `write_zeros` (past the first 4096 bytes)
//!     dropped: KILLED by `chain_review::a_store_cut_by_repair_grows_on_healthy`
//!     and others (also by `a_damaged_segments_tail_is_zeroed_to_its_end`).
//! 12. [R8] repair.rs:739 (`frames`) end `start + i + 1` to `start + i`: KILLED by
//!     `segment_mutants_review::repair_quarantines_to_the_later_of_the_last_frame_end_and_the_last_non_zero_byte`
//!     (also by `garbage_after_the_last_batch_of_a_damaged_segment_is_copied_whole`).
//! 13. [R5] repair.rs:660 whole segments' frames looked for from byte 0: KILLED
//!     by `tools::tests::a_missing_segment_quarantines_the_later_ones` (also by
//!     `damage_in_a_sealed_segment_is_quarantined_and_counted_exactly`).
//! 14. [R3] repair.rs:646 `quarantined_bytes += found.end` (the stretch's end in
//!     the file, not its length): KILLED by `segment_mutants_review::repair_quarantines_to_the_later_of_the_last_frame_end_and_the_last_non_zero_byte`
//!     (also by `damage_in_a_sealed_segment_is_quarantined_and_counted_exactly`).
//! 15. [R2] repair.rs:645 `found.count(report)` dropped for the damaged
//!     segment's copied part: KILLED by
//!     `cli::repair_keeps_the_prefix_and_quarantines_the_rest` and others
//!     (also by `damage_in_a_sealed_segment_is_quarantined_and_counted_exactly`).
//! 16. [R9] repair.rs:750 (`frames`) skipped ranges counted with their zeros:
//!     KILLED by `segment_mutants_review::repair_quarantines_to_the_later_of_the_last_frame_end_and_the_last_non_zero_byte`
//!     (also by `damage_in_a_sealed_segment_is_quarantined_and_counted_exactly`).
//! 17. [R20] repair.rs:201 `hold_to_durable_floor` dropped from repair's walk:
//!     KILLED by `tools::tests::a_damaged_last_batch_below_the_durable_floor_is_damage_not_a_torn_tail`
//!     (also by `a_damaged_last_batch_the_index_shows_durable_is_repaired_as_damage`).
//! 18. [R22] repair.rs:162 (finishing a store removal) the snapshot file left in
//!     place: KILLED by `tools::tests::a_store_removal_stopped_before_the_side_files_is_finished_by_the_next_repair`.
//! 19. [R18] repair.rs:231 `quarantine_log(..)?` to `let _ = quarantine_log(..)`
//!     (an I/O error ignored): KILLED by
//!     `cli::a_repair_that_cannot_write_its_copy_leaves_no_partial_file`.
//! 20. [R4] repair.rs:655 `id >= whole_from` to `>` (the first later segment
//!     left in place): KILLED by `chain_review::a_store_cut_by_repair_grows_on_healthy`
//!     and others.
//! 21. [S5] salvage.rs:118 `duplicates += 1` dropped: KILLED by
//!     `cli::salvage_prints_quarantined_events_as_they_were_exported` (also
//!     by `salvage_counts_the_events_it_skips_as_duplicates`).
//! 22. [V11] verify.rs:148 (`first_damage`) index damage ignored: KILLED by
//!     `tools::tests::damaged_index_file_is_reported_and_moved`.
//! 23. [V1] verify.rs:149 (`first_damage`) checkpoints damage ignored: KILLED by
//!     `cli_contract_review::a_checkpoint_past_the_log_is_found_refused_and_lowered_through_the_cli`.
//! 24. [V12] verify.rs:150 (`first_damage`) `lost_events` ignored: KILLED by
//!     `cli::verify_reports_a_lost_segment_that_only_a_snapshot_shows`.
//! 25. [W1] walk.rs:250 `if last` to `if true` (invalid bytes at a sealed
//!     segment's end taken for a torn tail): KILLED by
//!     `repair_review::garbage_after_a_sealed_segment_costs_no_event` and
//!     others.
//! 26. [V6] verify.rs:210 (`duplicates`) `extra_events` not counted past
//!     the first duplicate: SURVIVED; killed by
//!     `an_id_written_three_times_is_two_extra_events`.
//! 27. [V2] verify.rs:343 snapshot past its stream `r.version > have` to
//!     `>=`: KILLED by
//!     `repair_review::clean_stores_of_odd_shapes_verify_clean_and_are_left_untouched`
//!     and another.
//! 28. [S2] salvage.rs:129 `unreadable_bytes` counted with zeros: KILLED by
//!     `segment_mutants_review::a_batch_cut_short_by_the_end_of_the_file_is_a_torn_tail`.
//! 29. [V10] verify.rs:458 (`check_index`) `min` to `max` of the index's and
//!     the log's events: KILLED by
//!     `cli_contract_review::reading_commands_leave_a_stale_index_and_a_writing_open_refreshes_it`.
//! 30. [R15] repair.rs:296 `!report.repaired &&` dropped (a repaired store
//!     opened read-only, its index not rebuilt): KILLED by
//!     `tools::tests::damaged_index_file_is_reported_and_moved` (also by
//!     `damage_in_a_sealed_segment_is_quarantined_and_counted_exactly`).
//! 31. [V5] verify.rs:500 (`check_index`) the batch the index file's
//!     checkpoint records not compared with the log's: SURVIVED; killed by
//!     `the_index_of_another_copy_of_the_store_does_not_agree_with_the_log`.
//! 32. [R17] repair.rs:170 the exclusive lock not taken before the walk:
//!     SURVIVED (the later writable open still fails with `Locked`, after
//!     files were moved); killed by
//!     `repair_of_a_store_open_elsewhere_is_refused_and_changes_nothing`.
//! 33. [R1] repair.rs:633 `damage.offset >= SEGMENT_HEADER_BYTES` to `>` (a
//!     damaged first batch moves its segment whole): KILLED by
//!     `repair_review::damage_in_the_first_batch_with_checkpoints` and
//!     another.
//! 34. [R16] repair.rs:233 `|| index_damage.is_some()` dropped (a damaged
//!     index file alone not moved aside): KILLED by
//!     `tools::tests::damaged_index_file_is_reported_and_moved` and another.
//!
//! NOT RUN: dropping a `sync_dir`/`sync_all` (repair.rs:526, 534, 593, 603,
//! 648, 672-673, 690): the tools write through the standard file system,
//! so no test through the public API sees a missing sync (only a power cut
//! would).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use annal::log::segment::{self, SEGMENT_HEADER_BYTES};
use annal::tools::{IndexStatus, QUARANTINE_DIR, quarantined_log_files, repair, salvage, verify};
use annal::{CHECKPOINTS_FILE_NAME, EventData, ExpectedVersion, LOCK_FILE_NAME, Options, Store, Uuid};
use common::files::{seg, segment_ids};
use common::ids_in;

/// Small segments, so that a few dozen events fill several.
fn opts() -> Options {
    Options::default().with_segment_size_bytes(4096)
}

/// A store of `n` events of about 200 bytes each, one per append, over
/// five streams; their ids in log order.
fn build(dir: &Path, options: Options, n: u64) -> Vec<Uuid> {
    let store = Store::open(dir, options).unwrap();
    let mut ids = Vec::new();
    for i in 1..=n {
        let data = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(150));
        let e = EventData::new("Tick", data);
        ids.push(e.id());
        store
            .append(&format!("s-{}", i % 5), ExpectedVersion::Any, [e])
            .unwrap();
    }
    store.close().unwrap();
    ids
}

/// A valid batch of a segment file: where it starts, its frame length,
/// its first position and its record count.
#[derive(Clone, Copy, Debug)]
struct Batch {
    at: u64,
    len: u64,
    first: u64,
    count: u64,
}

impl Batch {
    fn end(&self) -> u64 {
        self.at + self.len
    }
}

/// The valid batches of a segment's bytes, in order.
fn batches_of(bytes: &[u8]) -> Vec<Batch> {
    let mut out = Vec::new();
    segment::scan(bytes, SEGMENT_HEADER_BYTES, |at, h, _| {
        out.push(Batch {
            at,
            len: u64::from(h.frame_len),
            first: h.first_position,
            count: u64::from(h.record_count),
        });
    });
    out
}

/// XORs the byte at `at` of the file with `mask`.
fn xor(path: &Path, at: u64, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= mask;
    fs::write(path, bytes).unwrap();
}

fn nonzero(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b != 0).count() as u64
}

/// Every entry of the quarantine folder.
fn quarantine_entries(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir.join(QUARANTINE_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Every file of the store directory but the lock file, with its bytes.
fn store_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != LOCK_FILE_NAME)
        .map(|e| {
            let bytes = if e.file_type().unwrap().is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

/// Every event id `salvage` reads back from the quarantine folder.
fn salvaged_ids(dir: &Path) -> Vec<Uuid> {
    let files = quarantined_log_files(dir).unwrap();
    let mut out = Vec::new();
    salvage(&files, |e| {
        out.push(e.id());
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

/// A store of 60 events over several sealed segments whose segment 2
/// grew, after it was sealed, by a copy of its own last batch (a
/// misdirected write of log bytes): the store, its ids, segment 2's
/// bytes before, and the copied batch.
fn sealed_segment_with_its_last_batch_again(dir: &Path) -> (Vec<Uuid>, Vec<u8>, Batch) {
    let ids = build(dir, opts(), 60);
    assert!(segment_ids(dir).len() >= 3);
    let path = seg(dir, 2);
    let original = fs::read(&path).unwrap();
    let last = *batches_of(&original).last().unwrap();
    assert_eq!(
        last.end(),
        original.len() as u64,
        "a sealed segment ends at its last batch"
    );
    let mut grown = original.clone();
    grown.extend_from_slice(&original[last.at as usize..last.end() as usize]);
    fs::write(&path, grown).unwrap();
    (ids, original, last)
}

/// Kills R11 (`cut_sealed_tail`: a copy of an earlier batch is let through
/// only when it ends strictly before the log's end, `<` for `<=`). Promise
/// (doc of `repair`): bytes after the last batch of a sealed segment whose
/// next segment follows on are cut and cost no event, also when they
/// hold a copy of the log's very last batch (its positions are the log's
/// already: it continues nothing).
#[test]
fn a_copy_of_a_sealed_segments_last_batch_after_it_costs_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, original, _) = sealed_segment_with_its_last_batch_again(dir.path());
    let d = verify(dir.path()).unwrap().damage.expect("verify found nothing");
    assert_eq!((d.segment, d.offset), (Some(2), original.len() as u64));

    let r = repair(dir.path()).unwrap();
    assert!(r.repaired, "{r:?}");
    assert_eq!(r.kept_events, 60, "{r:?}");
    assert_eq!(fs::read(seg(dir.path(), 2)).unwrap(), original);
    assert!(verify(dir.path()).unwrap().is_clean());
    assert_eq!(ids_in(dir.path(), opts()), ids);
}

/// Found (failed before the fix in repair.rs): bytes cut from the end of a
/// sealed segment are all counted as `unreadable_bytes`, also those of a
/// valid batch frame there, whose records are not counted in
/// `quarantined_events`. Promise (`RepairReport`): `quarantined_events`
/// are "records of batch frames that still pass their CRC checks" in the
/// quarantined bytes, and `unreadable_bytes` the non-zero quarantined
/// bytes "outside any valid batch frame"; `salvage` does read the
/// copied batch's event back from the quarantined copy.
#[test]
fn a_valid_batch_cut_from_a_sealed_segments_end_is_counted_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let (_, original, last) = sealed_segment_with_its_last_batch_again(dir.path());
    let r = repair(dir.path()).unwrap();
    assert_eq!(r.kept_events, 60, "{r:?}");
    assert_eq!(r.quarantined_bytes, last.len, "{r:?}");
    // What salvage finds in the copy.
    let copy = dir
        .path()
        .join(QUARANTINE_DIR)
        .join(format!("{}.from-{}", segment::file_name(2), original.len()));
    let found = salvage(std::slice::from_ref(&copy), |_| ControlFlow::Continue(())).unwrap();
    assert_eq!((found[0].events, found[0].unreadable_bytes), (last.count, 0));
    assert_eq!(
        (r.quarantined_events, r.unreadable_bytes),
        (last.count, 0),
        "the report disagrees with the quarantined bytes: {r:?}"
    );
}

/// Kills R19 (`cut_sealed_tail` counts every byte it cuts as unreadable,
/// zeros included) and R21 (it does not add them to `quarantined_bytes`).
/// Promise (`RepairReport::unreadable_bytes`, `quarantined_bytes`): only
/// non-zero bytes are unreadable; `quarantined_bytes` counts every byte
/// copied into quarantine.
#[test]
fn zeros_among_bytes_cut_from_a_sealed_segment_are_not_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let ids = build(dir.path(), opts(), 60);
    let path = seg(dir.path(), 2);
    let original = fs::read(&path).unwrap();
    let mut grown = original.clone();
    grown.extend_from_slice(&[7u8; 30]);
    grown.extend_from_slice(&[0u8; 40]);
    grown.extend_from_slice(&[9u8; 30]);
    fs::write(&path, grown).unwrap();

    let r = repair(dir.path()).unwrap();
    assert!(r.repaired, "{r:?}");
    assert_eq!(
        (
            r.kept_events,
            r.quarantined_events,
            r.quarantined_bytes,
            r.unreadable_bytes
        ),
        (60, 0, 100, 60),
        "{r:?}"
    );
    assert_eq!(fs::read(&path).unwrap(), original);
    assert_eq!(ids_in(dir.path(), opts()), ids);
}

/// Kills R10 (`rebuild_header`: `differing >= REBUILD_BITS_MAX` for `>`).
/// Promise (doc of `rebuild_header`, `RepairReport::headers_rebuilt`): a
/// header that differs from the one repair would write in at most 8 bits
/// ("one byte's worth") is bit rot and is written anew, costing no event.
/// One byte of the store id turned over whole is exactly 8 bits.
#[test]
fn a_header_with_one_whole_byte_rotted_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let ids = build(dir.path(), opts(), 60);
    let path = seg(dir.path(), 3);
    let original = fs::read(&path).unwrap();
    xor(&path, 20, 0xFF);

    let r = repair(dir.path()).unwrap();
    assert_eq!(r.headers_rebuilt, [3], "{r:?}");
    assert_eq!((r.kept_events, r.quarantined_events), (60, 0), "{r:?}");
    assert_eq!(fs::read(&path).unwrap(), original);
    assert_eq!(ids_in(dir.path(), opts()), ids);
}

/// Kills R14 (`report.damage` forgets the damage that repair mended).
/// Promise (`RepairReport::damage`: "the damage that was repaired"): a
/// repair that only rebuilt a header, or only cut a sealed segment's end,
/// reports that damage, as `verify` found it before.
#[test]
fn a_repair_that_only_mended_reports_the_damage_it_mended() {
    // A header.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    xor(&seg(dir.path(), 3), 20, 0x01);
    let found = verify(dir.path()).unwrap().damage.expect("verify found nothing");
    let r = repair(dir.path()).unwrap();
    assert_eq!(r.headers_rebuilt, [3], "{r:?}");
    assert_eq!(r.damage.as_ref(), Some(&found), "{r:?}");

    // A sealed segment's end.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    let path = seg(dir.path(), 2);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"garbage");
    fs::write(&path, bytes).unwrap();
    let found = verify(dir.path()).unwrap().damage.expect("verify found nothing");
    let r = repair(dir.path()).unwrap();
    assert_eq!(r.kept_events, 60, "{r:?}");
    assert_eq!(r.damage.as_ref(), Some(&found), "{r:?}");
}

/// Kills R12 (`fix_side_files`: a checkpoint counts as past the log at
/// `>=` the kept log's end). Promise (`RepairReport::checkpoints_lowered`,
/// doc of `repair`): only checkpoints that name positions past the kept
/// log are lowered; one at its last event is where it belongs, and a
/// store without damage is left untouched (`repaired` false).
#[test]
fn a_checkpoint_at_the_logs_last_event_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    let store = Store::open(dir.path(), opts()).unwrap();
    store.checkpoints().save("end", 60).unwrap();
    store.checkpoints().save("mid", 10).unwrap();
    store.close().unwrap();
    let before = store_files(dir.path());
    let r = repair(dir.path()).unwrap();
    assert!(!r.repaired, "{r:?}");
    assert!(r.checkpoints_lowered.is_empty(), "{r:?}");
    assert_eq!(store_files(dir.path()), before);

    // Damage: a checkpoint at exactly the kept log's end stays, one past
    // it is lowered.
    let path = seg(dir.path(), 2);
    let b = batches_of(&fs::read(&path).unwrap())[2];
    let kept = b.first - 1;
    let store = Store::open(dir.path(), opts()).unwrap();
    store.checkpoints().save("at-kept", kept).unwrap();
    store.close().unwrap();
    xor(&path, b.at + b.len / 2, 0x10);
    let r = repair(dir.path()).unwrap();
    assert_eq!(r.kept_events, kept, "{r:?}");
    assert_eq!(r.checkpoints_lowered, [("end".to_string(), 60)], "{r:?}");
}

/// Kills R13 (`repair`, store removed: `checkpoints_quarantined =` for
/// `|=`, which forgets that a damaged checkpoints file was moved aside
/// already). Promise (`RepairReport::checkpoints_quarantined`): true when
/// the checkpoints file was moved to quarantine.
#[test]
fn a_lost_store_whose_checkpoints_file_was_damaged_reports_it_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    let store = Store::open(dir.path(), opts()).unwrap();
    store.checkpoints().save("c", 10).unwrap();
    store.close().unwrap();
    // Segment 1's header and first batch: the header cannot be rebuilt.
    xor(&seg(dir.path(), 1), 20, 0x40);
    xor(&seg(dir.path(), 1), 64 + 45, 0x40);
    let checkpoints = dir.path().join(CHECKPOINTS_FILE_NAME);
    xor(&checkpoints, 20, 0x40);

    let r = repair(dir.path()).unwrap();
    assert!(r.store_removed, "{r:?}");
    assert!(!checkpoints.exists());
    assert!(
        r.quarantined_files.iter().any(|f| f.ends_with(CHECKPOINTS_FILE_NAME)),
        "{r:?}"
    );
    assert!(r.checkpoints_quarantined, "{r:?}");
}

/// A store of 60 events whose segment 2 (sealed, with later segments) has
/// a damaged payload in its third batch: the store's ids, segment 2's
/// bytes, its batches, and the later segments' data lengths.
fn damaged_middle_batch(dir: &Path) -> (Vec<Uuid>, Vec<u8>, Batch, u64) {
    let ids = build(dir, opts(), 60);
    let later = segment_ids(dir);
    assert!(later.len() >= 4, "{later:?}");
    // The later segments' bytes up to their last batch (what repair moves,
    // header included; the active one's preallocated zeros are not).
    let later_bytes: u64 = later
        .iter()
        .filter(|&&id| id > 2)
        .map(|&id| batches_of(&fs::read(seg(dir, id)).unwrap()).last().unwrap().end())
        .sum();
    let path = seg(dir, 2);
    let original = fs::read(&path).unwrap();
    let b = batches_of(&original)[2];
    xor(&path, b.at + b.len / 2, 0x10);
    (ids, original, b, later_bytes)
}

/// Kills R2 (the cut part's events not counted), R3 (`quarantined_bytes`
/// adds where the stretch ends in the file, not its length), R5 (a whole
/// segment's frames looked for from byte 0: its header counted as
/// unreadable), R9 (zero bytes of a damaged frame counted as unreadable)
/// and R15 (the store opened read-only after a repair, so the index is
/// not rebuilt). Promise (doc of `repair`, `RepairReport`): every batch
/// before the damaged one is kept; the rest is moved or copied into
/// quarantine and counted exactly (`quarantined_events`: records of the
/// valid frames; `quarantined_bytes`: bytes moved or copied, headers
/// included, preallocated zeros not; `unreadable_bytes`: non-zero bytes
/// outside valid frames); the index is rebuilt by opening the store;
/// `salvage` reads back every event after the damaged batch.
#[test]
fn damage_in_a_sealed_segment_is_quarantined_and_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, original, b, later_bytes) = damaged_middle_batch(dir.path());
    let kept = b.first - 1;
    let r = repair(dir.path()).unwrap();
    assert!(r.repaired, "{r:?}");
    assert_eq!(r.kept_events, kept, "{r:?}");
    assert_eq!(r.quarantined_events, 60 - kept - b.count, "{r:?}");
    let mut damaged = original.clone();
    damaged[(b.at + b.len / 2) as usize] ^= 0x10;
    assert_eq!(
        r.unreadable_bytes,
        nonzero(&damaged[b.at as usize..b.end() as usize]),
        "{r:?}"
    );
    assert_eq!(r.quarantined_bytes, original.len() as u64 - b.at + later_bytes, "{r:?}");
    let copy = dir
        .path()
        .join(QUARANTINE_DIR)
        .join(format!("{}.from-{}", segment::file_name(2), b.at));
    assert_eq!(fs::read(copy).unwrap(), &damaged[b.at as usize..]);
    assert_eq!(segment_ids(dir.path()), [1, 2]);
    // Before any other open: repair's own rebuilt the index.
    let v = verify(dir.path()).unwrap();
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(
        v.index,
        IndexStatus::Agrees { covers: kept },
        "the index was not rebuilt"
    );
    assert_eq!(ids_in(dir.path(), opts()), ids[..kept as usize]);
    assert_eq!(salvaged_ids(dir.path()), ids[(kept + b.count) as usize..]);
}

/// Kills R8 (`frames`: the stretch ends one byte before its last non-zero
/// byte). Promise (doc of `repair`: "deleting nothing"): the copy of a
/// damaged segment's bytes from the damaged batch on holds every one of
/// them up to the last non-zero byte, trailing garbage after the last
/// valid batch included, before the segment is zeroed there.
#[test]
fn garbage_after_the_last_batch_of_a_damaged_segment_is_copied_whole() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    let last = *segment_ids(dir.path()).last().unwrap();
    let path = seg(dir.path(), last);
    let mut bytes = fs::read(&path).unwrap();
    let found = batches_of(&bytes);
    assert!(found.len() >= 3, "{found:?}");
    let b = found[1];
    let end = found.last().unwrap().end() as usize;
    bytes[(b.at + b.len / 2) as usize] ^= 0x10;
    if bytes.len() < end + 10 {
        bytes.resize(end + 10, 0);
    }
    bytes[end..end + 10].copy_from_slice(&[0xAB; 10]);
    fs::write(&path, &bytes).unwrap();

    let r = repair(dir.path()).unwrap();
    let copy = dir
        .path()
        .join(QUARANTINE_DIR)
        .join(format!("{}.from-{}", segment::file_name(last), b.at));
    assert_eq!(fs::read(copy).unwrap(), &bytes[b.at as usize..end + 10]);
    assert_eq!(r.quarantined_bytes, (end + 10) as u64 - b.at, "{r:?}");
    assert_eq!(
        r.unreadable_bytes,
        nonzero(&bytes[b.at as usize..b.end() as usize]) + 10,
        "{r:?}"
    );
}

/// Kills R6 (the zeroing of a damaged segment's tail starts one byte past
/// the damage) and R7 (only its first 4096 bytes are zeroed). Promise (doc
/// of `repair`): the damaged segment's bytes from the damaged batch on are
/// zeroed in the segment (it becomes the active segment, whose data ends
/// where zeros begin), and every file repair put into quarantine is in
/// `quarantined_files` (no torn tail left for the next open to cut).
#[test]
fn a_damaged_segments_tail_is_zeroed_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().with_segment_size_bytes(1 << 16);
    build(dir.path(), options.clone(), 100);
    let path = seg(dir.path(), 1);
    let found = batches_of(&fs::read(&path).unwrap());
    let b = found[2];
    assert!(found.last().unwrap().end() - b.at > 3 * 4096, "{found:?}");
    xor(&path, b.at + b.len / 2, 0x10);

    let r = repair(dir.path()).unwrap();
    assert_eq!(r.kept_events, b.first - 1, "{r:?}");
    let bytes = fs::read(&path).unwrap();
    assert!(
        bytes[b.at as usize..].iter().all(|&x| x == 0),
        "non-zero bytes left after the damage"
    );
    let listed: BTreeSet<PathBuf> = r.quarantined_files.iter().cloned().collect();
    assert_eq!(quarantine_entries(dir.path()), listed);
    let v = verify(dir.path()).unwrap();
    assert!(v.is_clean() && v.torn_tail.is_none(), "{v:?}");
}

/// Kills S1 (`salvage` goes on with the next file after `each` returned
/// `Break`). Promise (doc of `salvage`): "`each` may stop the walk by
/// returning `ControlFlow::Break`": it is called no more, and the files
/// after the one it stopped in are not visited.
#[test]
fn salvage_stops_for_good_at_the_first_break() {
    let dir = tempfile::tempdir().unwrap();
    damaged_middle_batch(dir.path());
    repair(dir.path()).unwrap();
    let files = quarantined_log_files(dir.path()).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    let mut calls = 0;
    let found = salvage(&files, |_| {
        calls += 1;
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(calls, 1);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].events, 1, "{found:?}");
}

/// Kills S3 (`salvage` starts after the header only for names ending in
/// `.seg`, not for `<N>.seg.<k>`, the copy a later repair numbers).
/// Promise (doc of `salvage`): a file's frames start at byte 64 when its
/// name ends in `.seg` or `.seg.<k>`: a whole segment's header is no
/// unreadable byte.
#[test]
fn a_numbered_copy_of_a_whole_segment_is_read_after_its_header() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    let events: u64 = batches_of(&fs::read(seg(dir.path(), 2)).unwrap())
        .iter()
        .map(|b| b.count)
        .sum();
    let copies = tempfile::tempdir().unwrap();
    let copy = copies.path().join(format!("{}.1", segment::file_name(2)));
    fs::copy(seg(dir.path(), 2), &copy).unwrap();
    let found = salvage(&[copy], |_| ControlFlow::Continue(())).unwrap();
    assert_eq!((found[0].events, found[0].unreadable_bytes), (events, 0), "{found:?}");
}

/// Kills V6 (`duplicates` counts only the first duplicated pair). Promise
/// (`DuplicateIds::extra_events`: "events whose id an earlier event
/// already has"): an id written three times is two extra events.
#[test]
fn an_id_written_three_times_is_two_extra_events() {
    let dir = tempfile::tempdir().unwrap();
    let options = opts().with_idempotency_window_events(0);
    let a = EventData::new("T", "{}");
    // Each time from another open, after another event (as a retry
    // beyond the id window writes it again).
    for _ in 0..3 {
        let store = Store::open(dir.path(), options.clone()).unwrap();
        store.append("s", ExpectedVersion::Any, [a.clone()]).unwrap();
        store
            .append("s", ExpectedVersion::Any, [EventData::new("T", "{}")])
            .unwrap();
        store.close().unwrap();
    }
    let r = verify(dir.path()).unwrap();
    assert!(r.is_clean(), "{r:?}");
    let d = r.duplicate_ids.clone().expect("no duplicate found");
    assert_eq!((d.extra_events, d.first), (2, (a.id(), 1, 3)), "{r:?}");
}

/// Found (failed before the fix in repair.rs): when repair has something
/// to fix (here only a damaged index file), it opens the store writable,
/// and that open cuts a torn tail of the active segment, keeping a copy
/// in `quarantine/<N>.seg.torn-<offset>`; the report does not list that
/// file. Promise (`RepairReport::quarantined_files`: "Files created in
/// the quarantine folder"): every file a repair puts into quarantine is
/// listed, so that the user knows what to look at or salvage.
#[test]
fn a_torn_tail_cut_by_repairs_own_open_is_listed_among_the_quarantined_files() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    let last = *segment_ids(dir.path()).last().unwrap();
    let path = seg(dir.path(), last);
    let mut bytes = fs::read(&path).unwrap();
    let end = batches_of(&bytes).last().unwrap().end() as usize;
    if bytes.len() < end + 20 {
        bytes.resize(end + 20, 0);
    }
    bytes[end..end + 20].copy_from_slice(&[0xAB; 20]);
    fs::write(&path, &bytes).unwrap();
    let index = dir.path().join(annal::index::file::FILE_NAME);
    let len = fs::metadata(&index).unwrap().len();
    xor(&index, len - 5, 0x40);
    let v = verify(dir.path()).unwrap();
    assert!(
        v.torn_tail.is_some() && matches!(v.index, IndexStatus::Damaged(_)),
        "{v:?}"
    );

    let r = repair(dir.path()).unwrap();
    assert!(r.repaired && r.index_rebuilt, "{r:?}");
    assert_eq!(r.kept_events, 60, "{r:?}");
    let listed: BTreeSet<PathBuf> = r.quarantined_files.iter().cloned().collect();
    assert_eq!(quarantine_entries(dir.path()), listed, "{r:?}");
    // Its 20 torn bytes are counted too: copied, and outside any frame.
    assert_eq!(
        (r.quarantined_events, r.quarantined_bytes, r.unreadable_bytes),
        (0, 20, 20),
        "{r:?}"
    );
}

/// Kills S5 (`salvage` does not count the events it skips as already
/// handed over). Promise (`SalvagedFile::duplicates`): events of valid
/// batches skipped because they were handed over already (from an earlier
/// file) are counted there, not handed over again.
#[test]
fn salvage_counts_the_events_it_skips_as_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    let events: u64 = batches_of(&fs::read(seg(dir.path(), 2)).unwrap())
        .iter()
        .map(|b| b.count)
        .sum();
    let copies = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = [1, 2]
        .iter()
        .map(|k| copies.path().join(format!("{}.{k}", segment::file_name(2))))
        .collect();
    for f in &files {
        fs::copy(seg(dir.path(), 2), f).unwrap();
    }
    let mut handed = 0;
    let found = salvage(&files, |_| {
        handed += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(handed, events);
    assert_eq!((found[0].events, found[0].duplicates), (events, 0), "{found:?}");
    assert_eq!((found[1].events, found[1].duplicates), (0, events), "{found:?}");
}

/// Kills R20 (`repair` does not hold the log to the durable floor the
/// index file records). Promise (doc of `repair`, docs/DURABILITY.md): a
/// damaged last batch that the index file shows was durable is damage,
/// not a torn write: repair reports it as the log's damage and copies the
/// batch into quarantine as `<segment>.from-<offset>`, counted.
#[test]
fn a_damaged_last_batch_the_index_shows_durable_is_repaired_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    let last = *segment_ids(dir.path()).last().unwrap();
    let path = seg(dir.path(), last);
    let b = *batches_of(&fs::read(&path).unwrap()).last().unwrap();
    xor(&path, b.at + b.len / 2, 0x10);
    let v = verify(dir.path()).unwrap();
    assert!(v.torn_tail.is_none() && v.damage.is_some(), "{v:?}");

    let r = repair(dir.path()).unwrap();
    let d = r.damage.clone().expect("no damage reported");
    assert_eq!((d.segment, d.offset), (Some(last), b.at), "{r:?}");
    assert_eq!(r.kept_events, 60 - b.count, "{r:?}");
    let copy = dir
        .path()
        .join(QUARANTINE_DIR)
        .join(format!("{}.from-{}", segment::file_name(last), b.at));
    assert!(r.quarantined_files.contains(&copy), "{r:?}");
    assert!(r.unreadable_bytes > 0 && r.quarantined_bytes == b.len, "{r:?}");
}

/// Kills R17 (`repair` looks for damage and moves files aside without
/// taking the directory's lock). Promise (`annal::tools` docs): `repair`
/// fails with `Error::Locked` while any `Store` has the directory open,
/// and changes nothing then, even where it finds something to move aside
/// (here a damaged checkpoints file, which the live store tolerates).
#[test]
fn repair_of_a_store_open_elsewhere_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(), 60);
    let store = Store::open(dir.path(), opts()).unwrap();
    store.checkpoints().save("c", 10).unwrap();
    let checkpoints = dir.path().join(CHECKPOINTS_FILE_NAME);
    xor(&checkpoints, 20, 0x40);
    let before = store_files(dir.path());
    assert!(matches!(repair(dir.path()), Err(annal::Error::Locked { .. })));
    assert_eq!(store_files(dir.path()), before);
    assert!(!dir.path().join(QUARANTINE_DIR).exists());
    store.close().unwrap();
    let r = repair(dir.path()).unwrap();
    assert!(r.checkpoints_quarantined, "{r:?}");
}

/// Kills V5 (`check_index` does not compare the batch the index file's
/// checkpoint records with the log's). Promise (`IndexStatus::Agrees`:
/// "agrees with the log on every event it covers"): the index file of
/// another copy of the store, whose batches lie where this log's do but
/// hold other events, does not agree.
#[test]
fn the_index_of_another_copy_of_the_store_does_not_agree_with_the_log() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let store = Store::open(a.path(), opts()).unwrap();
    store
        .append("seed", ExpectedVersion::NoStream, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
    for entry in fs::read_dir(a.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != LOCK_FILE_NAME {
            fs::copy(entry.path(), b.path().join(entry.file_name())).unwrap();
        }
    }
    // The two copies go on alike in shape, with other events.
    for dir in [a.path(), b.path()] {
        let store = Store::open(dir, opts()).unwrap();
        for i in 0..5 {
            store
                .append(
                    "s",
                    ExpectedVersion::Any,
                    [EventData::new("T", format!("{{\"i\":{i}}}"))],
                )
                .unwrap();
        }
        store.close().unwrap();
    }
    assert!(verify(b.path()).unwrap().is_clean());
    let index = annal::index::file::FILE_NAME;
    fs::copy(a.path().join(index), b.path().join(index)).unwrap();
    let v = verify(b.path()).unwrap();
    assert!(matches!(v.index, IndexStatus::Damaged(_)), "{v:?}");
    assert!(!v.is_clean(), "{v:?}");
}
