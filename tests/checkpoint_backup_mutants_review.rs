//! A hand-made mutation review of the consumer checkpoints
//! (`src/checkpoint.rs`) and the online backup (`src/backup.rs`), against
//! their doc comments, docs/DURABILITY.md, docs/FORMAT.md (the checkpoints
//! file) and docs/CLI.md (`annal backup`).
//!
//! No real bug found: every new test passes against the code reviewed.
//!
//! Mutants run (each applied alone, against the suite modules `backup`,
//! `checkpoints`, `contract_review` (with `cli_contract_review`),
//! `read_only`, `tools_mutants_review`, `recovery_review` and this file,
//! and for checkpoint.rs also `cargo test --lib checkpoint:: tools::tests::`):
//! 1. [C1] checkpoint.rs:138 (`save`) `position > last` to `>=`: KILLED by
//!    `checkpoints::save_load_remove_and_survive_reopen`,
//!    `contract_review::checkpoint_names_and_positions` and many more.
//! 2. [C2] checkpoint.rs:109 (`load`) `p > last` to `p >= last`: KILLED by
//!    `checkpoints::save_load_remove_and_survive_reopen` and others.
//! 3. [C3] checkpoint.rs:214 (`guard_appends`) `**p > last` to `>=`: KILLED
//!    by `checkpoints::save_load_remove_and_survive_reopen`,
//!    `tools::tests::repair_lowers_checkpoints_past_the_kept_log` and others
//!    (some suite tests hang on it).
//! 4. [C4] checkpoint.rs:214 (`guard_appends`) `**p > last` to
//!    `**p > last + 1`: KILLED by
//!    `contract_review::a_checkpoint_past_the_log_is_reported_and_blocks_appends_until_lowered`
//!    and `cli_contract_review::a_checkpoint_past_the_log_is_found_refused_and_lowered_through_the_cli`.
//! 5. [C5] checkpoint.rs:317 (`decode`) CRC not checked: KILLED by
//!    `checkpoint::tests::round_trip_and_damage`.
//! 6. [C6] checkpoint.rs:352 (`decode`) the first of two entries with one
//!    name kept (`entry().or_insert`): SURVIVED; killed by
//!    `of_two_checkpoint_entries_with_one_name_the_later_wins`.
//! 7. [C7] checkpoint.rs:355 (`decode`) `at != body.len()` to
//!    `at > body.len()` (bytes past the counted entries accepted):
//!    SURVIVED; killed by `an_entry_past_the_count_is_corruption_not_ignored`.
//! 8. [C8] checkpoint.rs:194 (`update`) `*cache = None` before the write
//!    dropped (the old map stays cached after a failed save): SURVIVED;
//!    killed by `sim::after_a_failed_save_a_load_reads_what_the_file_holds`.
//! 9. [C9] checkpoint.rs:178 (`remove`) `guard_appends` not called:
//!    SURVIVED; killed by
//!    `removing_the_checkpoint_past_the_log_ends_the_refusal_of_appends`.
//! 10. [C10] checkpoint.rs:146 (`save`) `sync_through` dropped (the log not
//!     synced before the save): KILLED by
//!     `checkpoints::sim::crash_while_saving_checkpoints_leaves_old_or_new_values_never_ahead_of_the_log`.
//! 11. [C11] checkpoint.rs:271 (`check_name`) `> CHECKPOINT_NAME_BYTES_MAX`
//!     to `>=`: KILLED by `contract_review::checkpoint_names_and_positions`.
//! 12. [C12] checkpoint.rs:150 (`save`) `guard_appends` not called: KILLED
//!     by `contract_review::a_checkpoint_past_the_log_is_reported_and_blocks_appends_until_lowered`
//!     and `tools::tests::appends_resume_once_no_checkpoint_is_past_the_log`.
//! 13. [C13] checkpoint.rs:267 (`furthest_in`) `max_by_key` to `min_by_key`:
//!     KILLED by
//!     `tools::tests::a_checkpoint_on_a_damaged_last_batch_makes_it_corruption_not_a_torn_tail`.
//! 14. [B1] backup.rs:143 (`capture`) the published end fixed before the
//!     side files are read: SURVIVED; killed by
//!     `sim::a_checkpoint_saved_while_a_backup_waits_is_never_past_the_backups_log`.
//! 15. [B2] backup.rs:156 (`capture`) the non-durable modes' sync skipped:
//!     KILLED by
//!     `backup::a_backup_never_holds_events_a_power_loss_can_take_from_the_store`.
//! 16. [B3] backup.rs:296 (`checked_data`) a torn tail (damage in the last
//!     batch) taken as the copy's end: SURVIVED; killed by
//!     `damage_in_the_last_batch_of_the_log_fails_the_backup`.
//! 17. [B4] backup.rs:297 (`checked_data`) damage with valid data after it
//!     taken as the copy's end: KILLED by
//!     `backup::damage_fails_the_backup_and_leaves_no_destination`.
//! 18. [B5] backup.rs:133 the temporary directory not removed after a
//!     failure: KILLED by
//!     `backup::damage_fails_the_backup_and_leaves_no_destination`,
//!     `backup::concurrent_backups_to_one_destination_never_leave_a_broken_one`
//!     and others (also by `damage_in_the_last_batch_of_the_log_fails_the_backup`).
//! 19. [B6] backup.rs:227 (`outside_store`) the store's own path not
//!     resolved: KILLED by
//!     `cli_contract_review::store_paths_with_spaces_unicode_links_and_relative_paths`
//!     (also by `a_store_opened_through_another_path_refuses_a_destination_inside_it`).
//! 20. [B7] backup.rs:224 (`outside_store`) the destination's parent not
//!     resolved: KILLED by
//!     `backup::a_backup_refuses_a_destination_inside_the_store_directory`.
//! 21. [B8] backup.rs:230 (`outside_store`) paths compared as strings:
//!     SURVIVED; killed by
//!     `a_destination_whose_name_extends_the_stores_is_not_inside_it`.
//! 22. [B9] backup.rs:255 (`write_image`) the last segment copied to its
//!     map's end, not the published end: KILLED by
//!     `backup::a_backup_taken_while_writers_append_is_a_consistent_prefix`
//!     and `cli_contract_review::reading_a_store_without_a_lock_file_creates_nothing_in_it`.
//! 23. [B10] backup.rs:129 `BackupReport::segments` one short: KILLED by
//!     `backup::a_read_only_store_and_an_empty_store_back_up` and others.
//! 24. [B11] backup.rs:265 the index file's bytes left out of
//!     `BackupReport::bytes`: SURVIVED; killed by
//!     `the_backup_report_counts_exactly_what_the_copy_holds`.
//! 25. [B12] backup.rs:276 the checkpoints and snapshot files' bytes left
//!     out of `BackupReport::bytes`: SURVIVED; killed by
//!     `the_backup_report_counts_exactly_what_the_copy_holds`.
//! 26. [B13] backup.rs:281 the copy's empty lock file not written: KILLED by
//!     `contract_review::the_lock_file_names_the_writer_in_40_bytes`.
//! 27. [B14] backup.rs:148 the checkpoints file not decoded: KILLED by
//!     `backup::a_damaged_checkpoints_file_fails_the_backup`.
//! 28. [B15] backup.rs:106 the check that `dest` did not appear meanwhile
//!     dropped (`rename` replaces an empty directory): SURVIVED; killed by
//!     `sim::a_destination_made_while_the_backup_runs_is_left_alone`.
//! 29. [B16] backup.rs:155 `last_position` one too many: KILLED by
//!     `backup::a_read_only_store_and_an_empty_store_back_up` and many more.
//!
//! NOT RUN: the sync of the temporary directory (`sync_dir(tmp)`) or of a
//! copied file dropped, which no test can see (backups write through
//! `std::fs`, not the simulated disk, docs/DURABILITY.md 15); the
//! checkpoints file's atomic write (`io::write_atomic`, shared with the
//! index file, reviewed elsewhere).

mod common;

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use annal::{CHECKPOINTS_FILE_NAME, Error, ExpectedVersion, Options, Store};
use common::{all, event, small_segments};

/// The bytes of a checkpoints file of store `store_id` holding `entries`
/// in the order given (docs/FORMAT.md), with a valid CRC.
fn checkpoints_file(store_id: &[u8], entries: &[(&str, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"ANNALCKP");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(store_id);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (name, position) in entries {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&position.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The store id recorded in the checkpoints file in `dir`.
fn store_id_in(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(CHECKPOINTS_FILE_NAME)).unwrap()[12..28].to_vec()
}

/// A store of `n` events of one stream, in `dir`.
fn store_of(dir: &Path, n: u64) -> Store {
    let store = Store::open(dir, Options::default()).unwrap();
    for i in 0..n {
        store.append("A-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    store
}

/// Kills C6 (`decode` keeping the first of two entries with one name).
/// docs/FORMAT.md: "of two entries with the same name the later one wins".
#[test]
fn of_two_checkpoint_entries_with_one_name_the_later_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = store_of(&path, 5);
    store.checkpoints().save("a", 1).unwrap();
    store.close().unwrap();
    let id = store_id_in(&path);
    std::fs::write(
        path.join(CHECKPOINTS_FILE_NAME),
        checkpoints_file(&id, &[("b", 2), ("a", 3), ("a", 4)]),
    )
    .unwrap();
    let store = Store::open(&path, Options::default()).unwrap();
    let cps = store.checkpoints();
    assert_eq!(cps.load("a").unwrap(), Some(4));
    let expect: BTreeMap<String, u64> = [("a".to_string(), 4), ("b".to_string(), 2)].into();
    assert_eq!(cps.list().unwrap(), expect);
    store.close().unwrap();
}

/// Kills C7 (`decode` letting bytes past the last counted entry through).
/// docs/FORMAT.md: a checkpoints file that "has bytes left over after the
/// last entry is reported as Error::Corruption when checkpoints are
/// loaded (never read as values)" -- here a whole entry past the count,
/// under a valid CRC.
#[test]
fn an_entry_past_the_count_is_corruption_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = store_of(&path, 5);
    store.checkpoints().save("a", 1).unwrap();
    store.close().unwrap();
    let id = store_id_in(&path);
    let mut bytes = checkpoints_file(&id, &[("a", 2), ("b", 3)]);
    bytes[28..32].copy_from_slice(&1u32.to_le_bytes());
    let body = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path.join(CHECKPOINTS_FILE_NAME), bytes).unwrap();
    let store = Store::open(&path, Options::default()).unwrap();
    let cps = store.checkpoints();
    assert!(matches!(cps.load("a"), Err(Error::Corruption { .. })));
    assert!(matches!(cps.list(), Err(Error::Corruption { .. })));
    store.close().unwrap();
}

/// Kills C9 (`remove` not re-checking the append guard). `load`'s doc:
/// while a checkpoint is past the log's end appends are refused; "saving
/// it lower or removing it also ends the refusal".
#[test]
fn removing_the_checkpoint_past_the_log_ends_the_refusal_of_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = store_of(&path, 5);
    store.checkpoints().save("keep", 5).unwrap();
    store.close().unwrap();
    let id = store_id_in(&path);
    std::fs::write(
        path.join(CHECKPOINTS_FILE_NAME),
        checkpoints_file(&id, &[("ahead", 7), ("keep", 5)]),
    )
    .unwrap();
    let store = Store::open(&path, Options::default()).unwrap();
    let cps = store.checkpoints();
    assert!(matches!(cps.load("ahead"), Err(Error::Corruption { .. })));
    assert_eq!(cps.load("keep").unwrap(), Some(5), "at the last position: valid");
    assert!(matches!(
        store.append("A-1", ExpectedVersion::Any, [event("E", 5)]),
        Err(Error::Corruption { .. })
    ));
    cps.remove("ahead").unwrap();
    let appended = store.append("A-1", ExpectedVersion::Any, [event("E", 5)]).unwrap();
    assert_eq!(appended.first_position, 6);
    store.close().unwrap();
}

/// Kills B3 (`checked_data` taking a torn tail, a damaged last batch, for
/// the end of the copy). `Store::backup`: "Every batch copied is
/// CRC-checked ...: damage fails the backup with Error::Corruption"; a
/// batch the store acknowledged is not a torn tail to be dropped.
#[test]
fn damage_in_the_last_batch_of_the_log_fails_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = store_of(&path, 20);
    let segment = path.join(annal::log::segment::file_name(1));
    let bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.seek(SeekFrom::Start(end as u64 - 5)).unwrap();
    file.write_all(&[bytes[end - 5] ^ 0x01]).unwrap();
    drop(file);
    let dest = dir.path().join("backup");
    let result = store.backup(&dest);
    assert!(matches!(result, Err(Error::Corruption { .. })), "{result:?}");
    assert!(!dest.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["store"], "the temporary directory was removed");
}

/// Kills B11 and B12 (`BackupReport::bytes` leaving out the index file, or
/// the checkpoints and snapshot files) and checks the other fields:
/// "Bytes written: segments, index file, checkpoints and snapshots",
/// "Segment files copied", "the events at positions 1 to this one". Also
/// a checkpoint at the log's last position is copied and valid in the copy.
#[test]
fn the_backup_report_counts_exactly_what_the_copy_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, small_segments()).unwrap();
    for i in 0..200u64 {
        store
            .append(&format!("Order-{}", i % 3), ExpectedVersion::Any, [event("Placed", i)])
            .unwrap();
    }
    store.save_snapshot("Order-1", 5, 1, b"order 1 at 5").unwrap();
    store.checkpoints().save("at-end", 200).unwrap();
    let dest = dir.path().join("backup");
    let report = store.backup(&dest).unwrap();
    let mut total = 0;
    let mut segments = 0;
    for entry in std::fs::read_dir(&dest).unwrap() {
        let entry = entry.unwrap();
        total += entry.metadata().unwrap().len();
        if entry.file_name().to_string_lossy().ends_with(".seg") {
            segments += 1;
        }
    }
    assert!(segments > 1, "small segments: several files");
    assert_eq!(report.last_position, 200);
    assert_eq!(report.segments, segments);
    assert_eq!(report.bytes, total, "every file of the copy, the empty lock file aside");
    let written = all(&store);
    store.close().unwrap();
    let copy = Store::open(&dest, Options::default()).unwrap();
    assert_eq!(all(&copy), written);
    assert_eq!(copy.checkpoints().load("at-end").unwrap(), Some(200));
    let next = copy
        .append("Order-1", ExpectedVersion::Any, [event("After", 0)])
        .unwrap();
    assert_eq!(next.first_position, 201);
    copy.close().unwrap();
}

/// Kills B8 (`outside_store` comparing the paths as strings): a directory
/// whose name merely starts with the store's is beside it, not inside.
#[test]
fn a_destination_whose_name_extends_the_stores_is_not_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = store_of(&path, 3);
    std::fs::create_dir(dir.path().join("store-copies")).unwrap();
    let report = store.backup(dir.path().join("store-copies").join("b")).unwrap();
    assert_eq!(report.last_position, 3);
    let report = store.backup(dir.path().join("store.bak")).unwrap();
    assert_eq!(report.last_position, 3);
}

/// Kills B6 (`outside_store` resolving the destination's parent but not
/// the store's own path): a store opened through a link, or a path with
/// `..`, still refuses a destination inside its real directory
/// ("must not lie inside the store's own directory", links resolved).
#[test]
fn a_store_opened_through_another_path_refuses_a_destination_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(real.join("store")).unwrap();
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let mut ways = vec![dir.path().join("other").join("..").join("real").join("store")];
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        ways.push(dir.path().join("link").join("store"));
    }
    for way in ways {
        let store = store_of(&way, 2);
        let dest = real.join("store").join("inner");
        match store.backup(&dest) {
            Err(Error::InvalidInput(m)) => assert!(m.contains("inside the store directory"), "{m}"),
            other => panic!("{}: {other:?}", way.display()),
        }
        assert!(!dest.exists());
        store.close().unwrap();
    }
}

#[cfg(feature = "sim")]
mod sim {
    use annal::Durability;
    use annal::io::sim::SimFs;

    use super::*;

    /// Kills B1 (the published end fixed before the side files are read).
    /// `backup.rs`: "The side files are read first, then the published log
    /// end is fixed: every position a checkpoint names ... was in the log
    /// when they were read, so the later end covers them." A snapshot save
    /// held in its sync keeps the backup waiting on the snapshot file;
    /// meanwhile an event is appended and a checkpoint saved at it. The
    /// backup's checkpoints must never be past its own log. (Correct code
    /// passes under any scheduling; the mutant is caught once the backup
    /// thread has reached the snapshot file before the append, which the
    /// rounds and the pause before it make all but certain.)
    #[test]
    fn a_checkpoint_saved_while_a_backup_waits_is_never_past_the_backups_log() {
        for round in 0..4u64 {
            let fs = SimFs::new(round);
            let store = Store::open_with(fs.clone(), "/db", Options::default()).unwrap();
            for i in 0..5 {
                store.append("A-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
            }
            store.checkpoints().save("c", 5).unwrap();
            let hold = fs.hold_next_sync();
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("backup");
            let report = std::thread::scope(|s| {
                let saver = s.spawn(|| store.save_snapshot("A-1", 5, 1, b"at 5").unwrap());
                hold.wait_held();
                let backup = s.spawn(|| store.backup(&dest).unwrap());
                // Not an assertion: room for the backup thread to reach
                // the snapshot file's lock before the append.
                std::thread::sleep(std::time::Duration::from_millis(20));
                // Released before anything is unwrapped: a panic here must
                // not leave the save held.
                let appended = store.append("A-1", ExpectedVersion::Any, [event("E", 6)]);
                let saved = appended.is_ok().then(|| store.checkpoints().save("c", 6));
                hold.release();
                saver.join().unwrap();
                appended.unwrap();
                saved.unwrap().unwrap();
                backup.join().unwrap()
            });
            let copy = Store::open(&dest, Options::default()).unwrap();
            assert_eq!(copy.last_position(), report.last_position);
            let saved = copy.checkpoints().list().unwrap()["c"];
            assert!(
                saved <= report.last_position,
                "round {round}: checkpoint at {saved}, backup ends at {}",
                report.last_position
            );
            copy.checkpoints().load("c").unwrap();
            copy.append("A-1", ExpectedVersion::Any, [event("E", 7)]).unwrap();
            copy.close().unwrap();
            store.close().unwrap();
        }
    }

    /// Kills B15 (the check that `dest` did not appear while the backup
    /// ran dropped): `rename` replaces an empty directory, so without the
    /// check a directory made at `dest` meanwhile would be taken over.
    /// `Store::backup`: "`dest` must not exist ... (Error::InvalidInput
    /// otherwise, nothing written)"; after a failure the temporary
    /// directory is removed. The backup is held in its sync of the log
    /// (buffered mode) while the directory is made.
    #[test]
    fn a_destination_made_while_the_backup_runs_is_left_alone() {
        let fs = SimFs::new(9);
        let options = Options::default().with_durability(Durability::Buffered);
        let store = Store::open_with(fs.clone(), "/db", options).unwrap();
        for i in 0..5 {
            store.append("A-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("backup");
        let hold = fs.hold_next_sync();
        let result = std::thread::scope(|s| {
            let backup = s.spawn(|| store.backup(&dest));
            hold.wait_held();
            std::fs::create_dir(&dest).unwrap();
            hold.release();
            backup.join().unwrap()
        });
        match result {
            Err(Error::InvalidInput(m)) => assert!(m.contains("appeared") || m.contains("exists"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "the directory made is untouched"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["backup"], "no temporary directory left");
        store.close().unwrap();
    }

    /// Kills C8 (`update` keeping the old map cached while the new file is
    /// written). `CheckpointCache`: the cached map is "unknown after a
    /// failed save". A save whose rename took place but whose directory
    /// sync failed leaves the new file; a later load must read what the
    /// file says (what the next open will find), not the value before.
    #[test]
    fn after_a_failed_save_a_load_reads_what_the_file_holds() {
        use annal::io::sim::{Fault, FaultError, OpKind};
        let fs = SimFs::new(11);
        let store = Store::open_with(fs.clone(), "/db", Options::default()).unwrap();
        for i in 0..5 {
            store.append("A-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
        }
        let cps = store.checkpoints();
        cps.save("c", 1).unwrap();
        fs.inject(Fault {
            kind: OpKind::SyncDir,
            nth: 0,
            error: FaultError::Eio,
            sticky: false,
        });
        assert!(cps.save("c", 4).is_err(), "the directory sync failed");
        fs.clear_faults();
        let live = cps.load("c").unwrap();
        store.close().unwrap();
        let reopened = Store::open_with(fs.clone(), "/db", Options::default()).unwrap();
        assert_eq!(live, reopened.checkpoints().load("c").unwrap());
        assert_eq!(live, Some(4), "the rename took place");
        reopened.close().unwrap();
    }
}
