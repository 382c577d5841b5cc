//! Unit tests of `verify` and `repair` on real directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::log::segment;
use crate::{Error, EventData, ExpectedVersion, Options, ReadAll, Store};

const SEGMENT: u64 = 16 * 1024;

fn options() -> Options {
    Options::default().with_segment_size_bytes(SEGMENT)
}

/// A closed store of `n` one-event appends, spread over several segments.
fn store_with(dir: &Path, n: u64) -> Vec<crate::Uuid> {
    let store = Store::open(dir, options()).unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let e = EventData::new("Tick", format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(150)));
        ids.push(e.id());
        store
            .append(&format!("s-{}", i % 7), ExpectedVersion::Any, [e])
            .unwrap();
    }
    store.close().unwrap();
    ids
}

/// The ids of every event of the store in `dir`, in global order.
fn all_ids(dir: &Path) -> Vec<crate::Uuid> {
    let store = Store::open(dir, options()).unwrap();
    let ids = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap().id())
        .collect();
    store.close().unwrap();
    ids
}

fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn clean_store_verifies_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let before = files(dir.path());
    let r = verify(dir.path()).unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.events, 300);
    assert_eq!(r.streams, 7);
    assert!(r.segments > 2, "{r:?}");
    assert_eq!(r.index, IndexStatus::Agrees { covers: 300 });
    assert_eq!(r.torn_tail, None);
    assert_eq!(files(dir.path()), before);
    let repaired = repair(dir.path()).unwrap();
    assert!(!repaired.repaired);
    assert_eq!(repaired.kept_events, 300);
    assert!(!dir.path().join(QUARANTINE_DIR).exists());
    assert_eq!(files(dir.path()), before, "repair changed an undamaged store");
}

/// "Nothing was changed" holds for an undamaged store that a crash left
/// with a torn tail, a stale index file and a spare segment file: repair
/// only looks (the next writable open clears them).
#[test]
fn repair_leaves_an_undamaged_store_as_a_crash_left_it() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 20);
    let stale_index = std::fs::read(dir.path().join(crate::index::file::FILE_NAME)).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append("s-1", ExpectedVersion::Any, [EventData::new("Tick", "{}")])
        .unwrap();
    store.close().unwrap();
    std::fs::write(dir.path().join(crate::index::file::FILE_NAME), stale_index).unwrap();
    std::fs::write(dir.path().join("next-segment.tmp"), vec![0u8; 8192]).unwrap();
    let last = segment::path(dir.path(), 1);
    let mut bytes = std::fs::read(&last).unwrap();
    let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[data_end..data_end + 10].copy_from_slice(b"ABT1xxxxxx");
    std::fs::write(&last, &bytes).unwrap();
    let before = files(dir.path());
    let repaired = repair(dir.path()).unwrap();
    assert!(!repaired.repaired, "{repaired:?}");
    assert_eq!(repaired.kept_events, 21);
    assert_eq!(files(dir.path()), before, "repair changed an undamaged store");
}

/// A damaged last batch that the index file's header proves was durable
/// (the store closed cleanly) is damage, not a torn tail: verify blames
/// the segment, and repair copies the batch into quarantine before it
/// cuts it, instead of moving the index file away and letting the next
/// open zero the batch as a torn write.
#[test]
fn a_damaged_last_batch_below_the_durable_floor_is_damage_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let last = *walk::segment_ids(dir.path()).unwrap().last().unwrap();
    let seg = segment::path(dir.path(), last);
    let bytes = std::fs::read(&seg).unwrap();
    let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    flip(&seg, data_end - 20);

    let r = verify(dir.path()).unwrap();
    assert!(!r.is_clean());
    assert_eq!(r.torn_tail, None);
    let damage = r.first_damage().unwrap();
    assert_eq!(damage.file, seg, "{damage}");
    assert!(damage.reason.contains("durable data"), "{damage}");
    assert_eq!(r.events, 299);
    // The library refuses to open it, as before.
    assert!(matches!(
        Store::open(dir.path(), options()),
        Err(Error::Corruption { .. })
    ));

    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired);
    assert_eq!(rep.kept_events, 299);
    let copied: Vec<&PathBuf> = rep
        .quarantined_files
        .iter()
        .filter(|f| f.to_string_lossy().contains(".from-"))
        .collect();
    assert_eq!(copied.len(), 1, "{rep:?}");
    let kept = std::fs::read(copied[0]).unwrap();
    assert!(kept.len() > 20 && kept.iter().any(|&b| b != 0), "{rep:?}");
    assert!(verify(dir.path()).unwrap().is_clean());
}

#[test]
fn torn_tail_is_reported_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 20);
    let last = segment::path(dir.path(), 1);
    // Garbage right after the last batch (the rest of the file is zeros).
    let bytes = std::fs::read(&last).unwrap();
    let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let mut torn = bytes.clone();
    torn[data_end..data_end + 10].copy_from_slice(b"ABT1xxxxxx");
    std::fs::write(&last, &torn).unwrap();
    let r = verify(dir.path()).unwrap();
    assert!(r.is_clean(), "{r:?}");
    let tail = r.torn_tail.unwrap();
    assert_eq!((tail.offset, tail.bytes), (data_end as u64, 10));
    assert_eq!(std::fs::read(&last).unwrap(), torn, "verify must not cut the torn tail");
}

#[test]
fn damage_is_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let ids = store_with(dir.path(), 300);
    let seg = segment::path(dir.path(), 2);
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    flip(&seg, len / 2);
    // With a valid index file, open succeeds and the read finds the damage.
    let opened = Store::open(dir.path(), options()).and_then(|s| s.read_all(ReadAll::forward())?.collect_all());
    let Err(Error::Corruption { file, offset, .. }) = opened else {
        panic!("the damage should be found: {opened:?}")
    };
    let r = verify(dir.path()).unwrap();
    assert!(!r.is_clean());
    let damage = r.damage.clone().unwrap();
    assert_eq!((damage.file.clone(), damage.segment), (seg.clone(), Some(2)));
    assert_eq!((file, offset), (seg.clone(), damage.offset));
    assert!(damage.offset <= len as u64 / 2 && damage.offset > 64);
    assert_eq!(r.index, IndexStatus::PastDamage { covers: 300 });
    let kept = r.events;
    let segments = r.segments;

    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired);
    assert_eq!(rep.damage.as_ref(), Some(&damage));
    assert_eq!(rep.kept_events, kept);
    assert_eq!(
        rep.quarantined_events,
        300 - kept - 1,
        "all but the damaged event counted"
    );
    assert!(rep.unreadable_bytes > 0);
    assert!(rep.index_rebuilt);
    // segment 2's tail, every later segment, the index file
    assert_eq!(rep.quarantined_files.len() as u64, 1 + (segments - 2) + 1);
    for f in &rep.quarantined_files {
        assert!(f.starts_with(dir.path().join(QUARANTINE_DIR)) && f.exists(), "{f:?}");
    }

    let after = verify(dir.path()).unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.events, kept);
    let store = Store::open(dir.path(), options()).unwrap();
    let events = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
    assert_eq!(events.len() as u64, kept);
    for (e, id) in events.iter().zip(&ids) {
        assert_eq!(e.id(), *id);
    }
    // The repaired store takes appends again.
    store
        .append("s-new", ExpectedVersion::NoStream, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
    assert!(verify(dir.path()).unwrap().is_clean());
}

#[test]
fn damaged_header_quarantines_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let before = verify(dir.path()).unwrap();
    // The header and the first batch: nothing tells where the segment
    // starts, so its header cannot be rebuilt.
    flip(&segment::path(dir.path(), 3), 20);
    flip(&segment::path(dir.path(), 3), 64 + 45);
    let r = verify(dir.path()).unwrap();
    let d = r.damage.unwrap();
    assert_eq!((d.segment, d.offset), (Some(3), 0));
    let rep = repair(dir.path()).unwrap();
    assert!(rep.headers_rebuilt.is_empty(), "{rep:?}");
    assert_eq!(rep.quarantined_files.len() as u64, before.segments - 2 + 1);
    // All but the damaged first batch's event are counted.
    assert_eq!(rep.kept_events + rep.quarantined_events, 299);
    assert!(rep.unreadable_bytes > 0);
    assert!(verify(dir.path()).unwrap().is_clean());
}

/// Damage in the first segment's header (one that cannot be rebuilt)
/// leaves no event to keep: every
/// segment goes to quarantine, and with them the checkpoints and snapshots
/// of the store that is gone, so that the store the next append creates
/// (with a new id) starts clean instead of with files of another store.
#[test]
fn a_damaged_first_header_leaves_no_store_and_no_files_of_it() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 100);
    save_checkpoints(dir.path(), 100);
    let store = Store::open(dir.path(), options()).unwrap();
    store.save_snapshot("s-1", 3, 1, b"state").unwrap();
    store.close().unwrap();
    // The header and the first batch: the header cannot be rebuilt.
    flip(&segment::path(dir.path(), 1), 20);
    flip(&segment::path(dir.path(), 1), 64 + 45);

    let rep = repair(dir.path()).unwrap();
    assert!(
        rep.repaired && rep.checkpoints_quarantined && rep.store_removed,
        "{rep:?}"
    );
    assert_eq!(rep.kept_events, 0);
    for name in [crate::CHECKPOINTS_FILE_NAME, crate::snapshot::file::FILE_NAME] {
        assert!(!dir.path().join(name).exists(), "{name}");
        assert!(rep.quarantined_files.iter().any(|f| f.ends_with(name)), "{name}");
    }
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append("s-1", ExpectedVersion::NoStream, [EventData::new("T", "{}")])
        .unwrap();
    assert_eq!(store.checkpoints().load("b").unwrap(), None);
    store.close().unwrap();
    assert!(verify(dir.path()).unwrap().is_clean());
}

/// A repair of a lost first header that is killed after it moved the last
/// segment into quarantine, before the side files: the directory holds no
/// segment, and the next repair finishes the job instead of saying there
/// is no store (the next append would create a new store beside the old
/// store's checkpoints, which verify then reports as damage).
#[test]
fn a_store_removal_stopped_before_the_side_files_is_finished_by_the_next_repair() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 100);
    save_checkpoints(dir.path(), 100);
    let store = Store::open(dir.path(), options()).unwrap();
    store.save_snapshot("s-1", 3, 1, b"state").unwrap();
    store.close().unwrap();
    flip(&segment::path(dir.path(), 1), 20);
    flip(&segment::path(dir.path(), 1), 64 + 45);
    // What the killed repair left: every segment moved, the highest first.
    let q = dir.path().join(QUARANTINE_DIR);
    std::fs::create_dir(&q).unwrap();
    for id in walk::segment_ids(dir.path()).unwrap().into_iter().rev() {
        std::fs::rename(segment::path(dir.path(), id), q.join(segment::file_name(id))).unwrap();
    }
    assert!(removal_unfinished(dir.path()));

    let rep = repair(dir.path()).unwrap();
    assert!(
        rep.repaired && rep.store_removed && rep.checkpoints_quarantined && rep.index_rebuilt,
        "{rep:?}"
    );
    for name in ["index", crate::CHECKPOINTS_FILE_NAME, crate::snapshot::file::FILE_NAME] {
        assert!(!dir.path().join(name).exists(), "{name}");
        assert!(q.join(name).exists(), "{name}");
    }
    assert!(!removal_unfinished(dir.path()));
    // Nothing left to finish: no store, as before.
    assert!(matches!(repair(dir.path()), Err(Error::InvalidInput(_))));
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append("s-1", ExpectedVersion::NoStream, [EventData::new("T", "{}")])
        .unwrap();
    assert_eq!(store.checkpoints().load("b").unwrap(), None);
    store.close().unwrap();
    assert!(verify(dir.path()).unwrap().is_clean());
}

#[test]
fn damaged_index_file_is_reported_and_moved() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 50);
    let index = dir.path().join("index");
    let len = std::fs::metadata(&index).unwrap().len() as usize;
    flip(&index, len - 10);
    let r = verify(dir.path()).unwrap();
    assert!(r.damage.is_none());
    let Some(d) = r.first_damage() else {
        panic!("index damage not reported: {r:?}")
    };
    assert_eq!(d.file, index);
    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired && rep.index_rebuilt);
    assert_eq!((rep.kept_events, rep.quarantined_events), (50, 0));
    assert_eq!(verify(dir.path()).unwrap().index, IndexStatus::Agrees { covers: 50 });
}

#[test]
fn locked_and_missing_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert!(matches!(verify(dir.path()), Err(Error::Locked { .. })));
    assert!(matches!(repair(dir.path()), Err(Error::Locked { .. })));
    store.close().unwrap();
    assert!(verify(dir.path()).unwrap().is_clean());

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(verify(empty.path()), Err(Error::InvalidInput(_))));
    assert!(matches!(repair(empty.path()), Err(Error::InvalidInput(_))));
    assert!(matches!(verify(empty.path().join("nope")), Err(Error::InvalidInput(_))));
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0, "nothing created");
}

#[test]
fn an_older_index_file_agrees_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 40);
    let old = std::fs::read(dir.path().join("index")).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append("s-0", ExpectedVersion::Any, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
    std::fs::write(dir.path().join("index"), old).unwrap();
    let r = verify(dir.path()).unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!((r.events, r.index), (41, IndexStatus::Agrees { covers: 40 }));
}

#[test]
fn a_missing_segment_quarantines_the_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let segments = verify(dir.path()).unwrap().segments;
    assert!(segments >= 4);
    let gone = dir.path().join("gone.seg.bak");
    std::fs::rename(segment::path(dir.path(), 3), &gone).unwrap();
    let r = verify(dir.path()).unwrap();
    let d = r.damage.clone().unwrap();
    assert_eq!(
        (d.file, d.segment, d.offset),
        (segment::path(dir.path(), 3), Some(3), 0)
    );
    let rep = repair(dir.path()).unwrap();
    assert_eq!(rep.kept_events, r.events);
    // segments 4.. and the index file
    assert_eq!(rep.quarantined_files.len() as u64, segments - 3 + 1);
    assert_eq!(rep.unreadable_bytes, 0);
    let after = verify(dir.path()).unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.segments, 2);
}

#[test]
fn a_newer_format_is_an_error_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let seg = segment::path(dir.path(), 2);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        verify(dir.path()),
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
    assert!(matches!(
        repair(dir.path()),
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
    assert!(!dir.path().join(QUARANTINE_DIR).exists());
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}

#[test]
fn verify_checks_the_snapshot_file_without_failing_the_store() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 20);
    assert_eq!(verify(dir.path()).unwrap().snapshots, SnapshotFileStatus::Missing);
    {
        let store = Store::open(dir.path(), options()).unwrap();
        store.save_snapshot("s-1", 2, 1, b"state at 2").unwrap();
        store.save_snapshot("s-2", 3, 1, b"state at 3").unwrap();
        store.close().unwrap();
    }
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.snapshots, SnapshotFileStatus::Clean { records: 2 });
    // Damage the last byte of the first record's payload.
    let path = dir.path().join(crate::snapshot::file::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(10).position(|w| w == b"state at 2").unwrap() + 9;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let before = files(dir.path());
    let report = verify(dir.path()).unwrap();
    match &report.snapshots {
        SnapshotFileStatus::Damaged { records, problems } => {
            assert_eq!(*records, 1);
            assert_eq!(problems[0].file, path);
        }
        other => panic!("{other:?}"),
    }
    assert!(report.is_clean(), "snapshots are a cache: the store itself is clean");
    assert_eq!(files(dir.path()), before, "verify changed nothing");

    // Repair moves the damaged file aside whole (a cache: loads replay),
    // so that verify no longer reports damage repair cannot clear.
    let repaired = repair(dir.path()).unwrap();
    assert!(repaired.repaired, "{repaired:?}");
    assert_eq!(repaired.kept_events, 20);
    assert_eq!(
        std::fs::read(dir.path().join(QUARANTINE_DIR).join(crate::snapshot::file::FILE_NAME)).unwrap(),
        bytes
    );
    assert_eq!(verify(dir.path()).unwrap().snapshots, SnapshotFileStatus::Missing);
    let store = Store::open(dir.path(), options()).unwrap();
    assert!(store.load_snapshot("s-2").snapshot.is_none());
    store.save_snapshot("s-2", 3, 1, b"again").unwrap();
    store.close().unwrap();
    assert_eq!(
        verify(dir.path()).unwrap().snapshots,
        SnapshotFileStatus::Clean { records: 1 }
    );
}

#[test]
fn repair_removes_snapshots_of_quarantined_events_and_keeps_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    // s-3 has 43 events (positions 4, 11, ... 298); snapshots at 2 (kept)
    // and at 40 (built on events the repair will quarantine).
    {
        let store = Store::open(dir.path(), options()).unwrap();
        store.save_snapshot("s-3", 2, 1, b"at 2").unwrap();
        store.save_snapshot("s-3", 40, 1, b"at 40").unwrap();
        store.close().unwrap();
    }
    let seg = segment::path(dir.path(), 2);
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    flip(&seg, len / 2);

    let before = verify(dir.path()).unwrap();
    match &before.snapshots {
        SnapshotFileStatus::Damaged { problems, .. } => {
            assert!(
                problems.iter().any(|p| p.reason.contains("'s-3' at version 40")),
                "{problems:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let rep = repair(dir.path()).unwrap();
    assert_eq!(rep.snapshots_dropped, vec![("s-3".to_string(), 40)]);
    let copy = rep.quarantine_dir.join(crate::snapshot::file::FILE_NAME);
    assert!(rep.quarantined_files.contains(&copy), "{:?}", rep.quarantined_files);
    assert!(std::fs::read(&copy).unwrap().windows(5).any(|w| w == b"at 40"));
    let after = verify(dir.path()).unwrap();
    assert!(after.is_clean());
    assert!(
        matches!(after.snapshots, SnapshotFileStatus::Clean { records: 1 }),
        "{:?}",
        after.snapshots
    );

    // The stream grows past 40 again: the load finds the snapshot at 2,
    // never the one built on the quarantined events.
    let store = Store::open(dir.path(), options()).unwrap();
    let kept = store.stream_version("s-3").unwrap();
    assert!(kept < 40);
    for _ in kept..45 {
        store
            .append("s-3", ExpectedVersion::Any, [EventData::new("T", "{}")])
            .unwrap();
    }
    let loaded = store.load_snapshot("s-3").snapshot.unwrap();
    assert_eq!((loaded.version, &loaded.data[..]), (2, &b"at 2"[..]));
    store.close().unwrap();
}

/// Saves checkpoints `a` at 10 and `b` at `n` in a closed store of `n` events.
fn save_checkpoints(dir: &Path, n: u64) {
    let store = Store::open(dir, options()).unwrap();
    store.checkpoints().save("a", 10).unwrap();
    store.checkpoints().save("b", n).unwrap();
    store.close().unwrap();
}

#[test]
fn repair_lowers_checkpoints_past_the_kept_log() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    save_checkpoints(dir.path(), 300);
    let seg = segment::path(dir.path(), 2);
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    flip(&seg, len / 2);

    let r = verify(dir.path()).unwrap();
    assert!(!r.is_clean());
    // The checkpoint is past the damage, not past what was written: the
    // message says so, and names the fix.
    match &r.checkpoints {
        CheckpointsFileStatus::Damaged(d) => {
            assert!(
                d.reason.contains("before the log's damage") && d.reason.contains("repair"),
                "{d:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let kept = r.events;
    let rep = repair(dir.path()).unwrap();
    assert_eq!(rep.kept_events, kept);
    assert_eq!(rep.checkpoints_lowered, vec![("b".to_string(), 300)]);
    assert!(!rep.checkpoints_quarantined);
    assert!(verify(dir.path()).unwrap().is_clean());

    // The consumer of `b` resumes at the repaired log's end, so it gets
    // the events appended from now on; `a` is untouched.
    let store = Store::open(dir.path(), options()).unwrap();
    let cps = store.checkpoints();
    assert_eq!((cps.load("a").unwrap(), cps.load("b").unwrap()), (Some(10), Some(kept)));
    store
        .append("s-new", ExpectedVersion::Any, [EventData::new("T", "{}")])
        .unwrap();
    let mut sub = store.subscribe_all(crate::StartFrom::After(kept)).unwrap();
    assert_eq!(
        sub.try_recv().unwrap().map(|e| e.stream().to_string()),
        Some("s-new".into())
    );
    store.close().unwrap();
}

/// A store of 300 events with checkpoints `a` at 10 and `b` at 300 that
/// then lost its last segment and its index file: the log ends early.
fn store_that_lost_its_tail(dir: &Path) {
    store_with(dir, 300);
    save_checkpoints(dir, 300);
    let last = *walk::segment_ids(dir).unwrap().last().unwrap();
    std::fs::remove_file(segment::path(dir, last)).unwrap();
    std::fs::remove_file(dir.join(crate::index::file::FILE_NAME)).unwrap();
}

#[test]
fn a_checkpoint_past_the_log_is_reported_not_resumed_from() {
    let dir = tempfile::tempdir().unwrap();
    store_that_lost_its_tail(dir.path());

    let r = verify(dir.path()).unwrap();
    let CheckpointsFileStatus::Damaged(d) = &r.checkpoints else {
        panic!("checkpoint b is past the log: {r:?}")
    };
    assert!(d.reason.contains("'b' at 300"), "{d}");
    assert!(!r.is_clean());
    let events = r.events;
    assert!(events < 300);

    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.checkpoints().load("a").unwrap(), Some(10));
    assert!(matches!(store.checkpoints().load("b"), Err(Error::Corruption { .. })));
    // Appends are refused: they would take positions up to 300, and `b`'s
    // consumer would skip them, its checkpoint then looking valid.
    let append = |store: &Store| store.append("s-new", ExpectedVersion::Any, [EventData::new("T", "{}")]);
    match append(&store) {
        Err(Error::Corruption { reason, .. }) => assert!(reason.contains("'b' at 300"), "{reason}"),
        other => panic!("expected the append to be refused, got {other:?}"),
    }
    assert_eq!(store.last_position(), events);
    store.close().unwrap();
    // Still refused after a reopen: nothing was appended.
    let store = Store::open(dir.path(), options()).unwrap();
    assert!(matches!(append(&store), Err(Error::Corruption { .. })));
    store.close().unwrap();

    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired);
    assert_eq!(rep.checkpoints_lowered, vec![("b".to_string(), 300)]);
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.checkpoints().load("b").unwrap(), Some(events));
    append(&store).unwrap();
    store.close().unwrap();
    assert!(verify(dir.path()).unwrap().is_clean());
}

/// The consumer may also move its own checkpoint back (or remove it):
/// appends are accepted again as soon as no checkpoint is past the log.
#[test]
fn appends_resume_once_no_checkpoint_is_past_the_log() {
    let dir = tempfile::tempdir().unwrap();
    store_that_lost_its_tail(dir.path());
    let store = Store::open(dir.path(), options()).unwrap();
    let append = || store.append("s-new", ExpectedVersion::Any, [EventData::new("T", "{}")]);
    assert!(matches!(append(), Err(Error::Corruption { .. })));
    store.checkpoints().save("b", 0).unwrap();
    assert_eq!(append().unwrap().first_position, store.last_position());
    store.close().unwrap();
}

#[test]
fn a_damaged_checkpoints_file_is_reported_and_moved_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 50);
    save_checkpoints(dir.path(), 50);
    let path = dir.path().join(crate::CHECKPOINTS_FILE_NAME);
    flip(&path, 20);

    let r = verify(dir.path()).unwrap();
    assert!(!r.is_clean());
    assert_eq!(r.first_damage().map(|d| d.file.clone()), Some(path.clone()));
    let store = Store::open(dir.path(), options()).unwrap();
    assert!(matches!(store.checkpoints().load("a"), Err(Error::Corruption { .. })));
    store.close().unwrap();

    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired && rep.checkpoints_quarantined && !rep.store_removed);
    assert_eq!(rep.kept_events, 50);
    assert!(
        rep.quarantined_files
            .iter()
            .any(|f| f.ends_with(crate::CHECKPOINTS_FILE_NAME))
    );
    assert!(!path.exists());
    assert!(verify(dir.path()).unwrap().is_clean());
    // Consumers start over; checkpoints can be saved again.
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.checkpoints().load("a").unwrap(), None);
    store.checkpoints().save("a", 7).unwrap();
    store.close().unwrap();
}

/// Flips a byte inside the last batch of the last segment of a closed
/// store and removes its index file, so nothing but a checkpoint can tell
/// the damaged batch was durable.
fn damage_last_batch_without_index(dir: &Path) {
    std::fs::remove_file(dir.join(crate::index::file::FILE_NAME)).unwrap();
    let last = *walk::segment_ids(dir).unwrap().last().unwrap();
    let seg = segment::path(dir, last);
    let bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap();
    flip(&seg, end - 5);
}

#[test]
fn a_checkpoint_on_a_damaged_last_batch_makes_it_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 100);
    save_checkpoints(dir.path(), 100);
    damage_last_batch_without_index(dir.path());
    let before = files(dir.path());

    match Store::open(dir.path(), options()) {
        Err(Error::Corruption { reason, .. }) => assert!(reason.contains("checkpoint 'b' at 100"), "{reason}"),
        other => panic!("expected corruption, got {:?}", other.map(|s| s.last_position())),
    }
    let r = verify(dir.path()).unwrap();
    assert_eq!(r.torn_tail, None);
    let damage = r.first_damage().cloned().unwrap();
    assert!(damage.reason.contains("checkpoint 'b' at 100"), "{damage}");
    assert_eq!(r.events, 99);
    let segments = walk::segment_ids(dir.path()).unwrap();
    assert_eq!(damage.segment, segments.last().copied());
    assert_eq!(files(dir.path()), before, "neither open nor verify changed a byte");

    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired);
    assert_eq!(rep.kept_events, 99);
    assert!(rep.quarantined_bytes > 0, "{rep:?}");
    assert_eq!(rep.checkpoints_lowered, vec![("b".to_string(), 100)]);
    assert!(verify(dir.path()).unwrap().is_clean());
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.checkpoints().load("b").unwrap(), Some(99));
    store
        .append("s-new", ExpectedVersion::Any, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
}

/// A snapshot is saved only once the log is durable up to its version, so
/// one on an event of the damaged last batch proves that batch was durable,
/// as a checkpoint does. Cutting it instead would let the snapshot pass
/// for the state of a later, different event at the same version.
#[test]
fn a_snapshot_on_a_damaged_last_batch_makes_it_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 100);
    // Event 100 is version 15 of s-1 (100 appends round-robin over 7).
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.stream_version("s-1"), Some(15));
    store.save_snapshot("s-1", 15, 1, b"state at 15").unwrap();
    store.save_snapshot("s-2", 14, 1, b"state at 14").unwrap();
    store.close().unwrap();
    damage_last_batch_without_index(dir.path());
    let before = files(dir.path());

    let says_snapshot = |reason: &str| {
        assert!(
            reason.contains("snapshot of 's-1' at version 15") && reason.contains("holds 14"),
            "{reason}"
        )
    };
    match Store::open(dir.path(), options()) {
        Err(Error::Corruption { reason, .. }) => says_snapshot(&reason),
        other => panic!("expected corruption, got {:?}", other.map(|s| s.last_position())),
    }
    let r = verify(dir.path()).unwrap();
    assert_eq!(r.torn_tail, None);
    says_snapshot(&r.first_damage().cloned().unwrap().reason);
    assert_eq!(files(dir.path()), before, "neither open nor verify changed a byte");

    // Repair quarantines the batch and drops the snapshot past the log, so
    // that it never loads as the state of a new version 15.
    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired);
    assert_eq!(rep.kept_events, 99);
    assert_eq!(rep.snapshots_dropped, vec![("s-1".to_string(), 15)]);
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append("s-1", ExpectedVersion::Exact(14), [EventData::new("Other", "{}")])
        .unwrap();
    let loaded = store.load_snapshot("s-1").snapshot.map(|s| s.version);
    assert_ne!(loaded, Some(15), "the old snapshot passed for the new version 15");
    assert_eq!(store.load_snapshot("s-2").snapshot.map(|s| s.version), Some(14));
    store.close().unwrap();
}

#[test]
fn a_damaged_last_batch_past_every_checkpoint_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 100);
    save_checkpoints(dir.path(), 99);
    damage_last_batch_without_index(dir.path());

    let r = verify(dir.path()).unwrap();
    assert!(r.is_clean(), "{r:?}");
    let torn = r.torn_tail.clone().unwrap();
    let before = std::fs::read(&torn.file).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.last_position(), 99);
    let report = store.recovery_report();
    assert!(report.torn_tail_bytes > 0);
    // The zeroed bytes are kept, whole, in quarantine/.
    let kept = report.torn_tail_kept.clone().unwrap();
    let name = kept.file_name().unwrap().to_str().unwrap().to_string();
    let torn_name = torn.file.file_name().unwrap().to_str().unwrap();
    assert_eq!(name, format!("{torn_name}.torn-{}", torn.offset));
    let at = torn.offset as usize;
    let copy = std::fs::read(&kept).unwrap();
    assert_eq!(copy.len() as u64, report.torn_tail_bytes);
    assert_eq!(copy, before[at..at + copy.len()]);
    assert!(std::fs::read(&torn.file).unwrap()[at..].iter().all(|&b| b == 0));
    store
        .append("s-new", ExpectedVersion::Any, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
}

/// A directory named like a segment file is reported as what it is, by
/// verify, repair and open alike, and nothing is changed.
#[test]
fn a_directory_named_like_a_segment_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let seg1 = segment::path(dir.path(), 1);
    std::fs::create_dir(&seg1).unwrap();
    std::fs::write(seg1.join("notes.txt"), b"someone's file").unwrap();
    // Damage where the segment should be, named: verify reports it, an
    // open refuses the store.
    let report = verify(dir.path()).unwrap();
    assert!(!report.is_clean());
    let damage = report.damage.expect("a directory for a segment is damage");
    assert_eq!((&damage.file, damage.offset), (&seg1, 0));
    assert!(damage.reason.contains("not a regular file"), "{}", damage.reason);
    let text = Store::open(dir.path(), options()).unwrap_err().to_string();
    assert!(
        text.contains("not a regular file") && text.contains(&*seg1.to_string_lossy()),
        "{text}"
    );
    assert!(seg1.is_dir());
    // Repair moves it aside whole (contents and all), and no store is left.
    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired && rep.store_removed);
    assert!(!seg1.exists());
    let moved = rep.quarantine_dir.join(segment::file_name(1));
    assert_eq!(std::fs::read(moved.join("notes.txt")).unwrap(), b"someone's file");
}

/// A retry that was not recognised (window disabled, a later append to the
/// same stream) writes its event again; verify reports the duplicate id
/// without calling the store damaged.
#[test]
fn verify_reports_duplicate_ids() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options().with_idempotency_window_events(0);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let a = EventData::new("T", "{}");
    store.append("S-1", ExpectedVersion::Any, [a.clone()]).unwrap();
    store
        .append("S-1", ExpectedVersion::Any, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
    assert_eq!(verify(dir.path()).unwrap().duplicate_ids, None);

    let store = Store::open(dir.path(), opts).unwrap();
    store.append("S-1", ExpectedVersion::Any, [a.clone()]).unwrap();
    store.close().unwrap();
    let r = verify(dir.path()).unwrap();
    assert!(r.is_clean(), "{r:?}");
    let d = r.duplicate_ids.unwrap();
    assert_eq!((d.extra_events, d.first), (1, (a.id(), 1, 3)));
}

/// A sealed segment cut short exactly at a batch boundary reads as a clean
/// end; the next segment's first position then says what is missing.
#[test]
fn a_middle_segment_cut_at_a_batch_boundary_is_named_with_the_missing_events() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let seg = segment::path(dir.path(), 2);
    let bytes = std::fs::read(&seg).unwrap();
    // Walk the frames: keep the first two batches, cut the rest.
    let mut at = 64usize;
    for _ in 0..2 {
        at += u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    assert!(at < bytes.len(), "segment 2 holds more than two batches");
    std::fs::write(&seg, &bytes[..at]).unwrap();

    let r = verify(dir.path()).unwrap();
    let damage = r.first_damage().cloned().unwrap();
    assert_eq!(damage.segment, Some(3), "{damage}");
    assert!(
        damage.reason.contains("are missing: segment 2 ends short of them"),
        "{damage}"
    );
}

/// A snapshot ahead of the log by more events than the torn bytes could
/// hold proves nothing about them (its record comes from damage in the
/// snapshot file, or from a log that lost more than its tail): the tail is
/// cut as torn, and kept; `verify` reports the snapshot as a sign of
/// lost events.
#[test]
fn a_snapshot_further_ahead_than_the_torn_bytes_could_hold_is_no_proof() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 100);
    let store = Store::open(dir.path(), options()).unwrap();
    store.save_snapshot("s-2", 14, 1, b"state").unwrap();
    store.close().unwrap();
    // A record claiming version 1,000 of s-1 (which has 15 events).
    let snapshots = dir.path().join(crate::snapshot::file::FILE_NAME);
    let record = crate::snapshot::file::encode_record("s-1", 1000, crate::Uuid::from_u128(1), 1, b"far ahead").unwrap();
    let mut bytes = std::fs::read(&snapshots).unwrap();
    bytes.extend_from_slice(&record);
    std::fs::write(&snapshots, bytes).unwrap();
    damage_last_batch_without_index(dir.path());

    // The damaged batch is a torn tail all the same; the snapshot is the
    // sign of events the log lost, and that makes the store unclean.
    let r = verify(dir.path()).unwrap();
    assert!(r.torn_tail.is_some(), "{r:?}");
    assert_eq!(r.damage, None);
    let lost = r.lost_events.as_ref().expect("the far-ahead snapshot");
    assert_eq!(lost.file, snapshots);
    assert!(lost.reason.contains("'s-1' at version 1000"), "{}", lost.reason);
    assert_eq!(r.first_damage(), Some(lost));
    assert!(!r.is_clean());
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.last_position(), 99);
    assert!(store.recovery_report().torn_tail_kept.is_some());
    store.close().unwrap();
    // `repair` drops it (the torn tail is already cut), and keeps the
    // snapshot of events the log holds.
    let rep = repair(dir.path()).unwrap();
    assert_eq!(rep.snapshots_dropped, vec![("s-1".to_string(), 1000)]);
    let after = verify(dir.path()).unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.snapshots, SnapshotFileStatus::Clean { records: 1 });
}

/// A log that lost its last segment and the index file with it holds
/// nothing that shows the loss: every file left is whole. A snapshot of an
/// event in the lost segment does show it (saves refuse versions the log
/// does not hold, and sync it first): `verify` names it and counts the
/// store unclean, the store still opens (loads pass over the snapshot),
/// and `repair` drops it.
#[test]
fn a_snapshot_of_a_lost_segment_makes_verify_report_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let store = Store::open(dir.path(), options()).unwrap();
    let version = store.stream_version("s-3").unwrap();
    store.save_snapshot("s-3", version, 1, b"state").unwrap();
    store.save_snapshot("s-4", 2, 1, b"early").unwrap();
    store.close().unwrap();
    let ids = walk::segment_ids(dir.path()).unwrap();
    assert!(ids.len() >= 3, "{ids:?}");
    let last = *ids.last().unwrap();
    std::fs::remove_file(segment::path(dir.path(), last)).unwrap();
    std::fs::remove_file(dir.path().join(crate::index::file::FILE_NAME)).unwrap();

    let r = verify(dir.path()).unwrap();
    assert_eq!((r.damage.as_ref(), r.torn_tail.as_ref()), (None, None), "{r:?}");
    assert_eq!(r.index, IndexStatus::Missing);
    let lost = r.lost_events.as_ref().expect("the snapshot of a lost event");
    assert!(
        lost.reason.contains(&format!("'s-3' at version {version}")),
        "{}",
        lost.reason
    );
    assert!(!r.is_clean());
    let kept = r.events;
    assert!(kept < 300);

    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.last_position(), kept);
    assert!(store.load_snapshot("s-3").snapshot.is_none());
    store.close().unwrap();
    let rep = repair(dir.path()).unwrap();
    assert_eq!(rep.snapshots_dropped, vec![("s-3".to_string(), version)]);
    let after = verify(dir.path()).unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.snapshots, SnapshotFileStatus::Clean { records: 1 });
}

/// Keeping a copy of a torn tail is a safety net, not a condition: when
/// it cannot be made (here `quarantine` is a file), the store opens all
/// the same and says why there is no copy.
#[test]
fn a_torn_tail_that_cannot_be_copied_is_cut_all_the_same() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 100);
    damage_last_batch_without_index(dir.path());
    std::fs::write(dir.path().join(QUARANTINE_DIR), b"in the way").unwrap();

    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.last_position(), 99);
    let report = store.recovery_report();
    assert!(report.torn_tail_bytes > 0);
    assert_eq!(report.torn_tail_kept, None);
    assert!(report.torn_tail_not_kept.is_some(), "{report:?}");
    store
        .append("s-new", ExpectedVersion::Any, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
}

/// A snapshot is bound to the event it was taken at: when the log lost
/// that event (cut outside this build's open, say by an older annal) and
/// the stream grew again, the snapshot is never loaded as the state of
/// the new event at its version.
#[test]
fn a_snapshot_of_an_event_the_log_lost_is_never_loaded_for_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    for i in 0..4 {
        store
            .append("s-1", ExpectedVersion::Any, [EventData::new("T", format!("{i}"))])
            .unwrap();
    }
    store.save_snapshot("s-1", 3, 1, b"state at 3").unwrap();
    store.save_snapshot("s-1", 4, 1, b"state at 4").unwrap();
    store.close().unwrap();
    // The last batch zeroed and the index file removed: a log that simply
    // ends after event 3.
    std::fs::remove_file(dir.path().join(crate::index::file::FILE_NAME)).unwrap();
    let seg = segment::path(dir.path(), 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let (mut at, mut last) = (64usize, 64usize);
    while bytes[at..at + 4] != [0; 4] {
        last = at;
        at += u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    bytes[last..at].fill(0);
    std::fs::write(&seg, bytes).unwrap();

    // This build refuses appends while the snapshot at 4 is past the log
    // (the loss it proves would go unnoticed): the stream grows again
    // with the snapshot file set aside, as an older annal, or a repair
    // stopped between its log and side-file steps, would have let it.
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.stream_version("s-1"), Some(3));
    let refused = store.append("s-1", ExpectedVersion::Exact(3), [EventData::new("Other", "{}")]);
    assert!(matches!(refused, Err(crate::Error::Corruption { .. })), "{refused:?}");
    store.close().unwrap();
    let snapshots = dir.path().join(crate::snapshot::file::FILE_NAME);
    let aside = dir.path().join("snapshots.aside");
    std::fs::rename(&snapshots, &aside).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append("s-1", ExpectedVersion::Exact(3), [EventData::new("Other", "{}")])
        .unwrap();
    store.close().unwrap();
    std::fs::rename(&aside, &snapshots).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let load = store.load_snapshot("s-1");
    assert_eq!(load.snapshot.map(|s| s.version), Some(3), "{:?}", load.issues);
    store.close().unwrap();
    // verify reports it, repair removes it (and keeps the one at 3).
    let r = verify(dir.path()).unwrap();
    let problems = match &r.snapshots {
        SnapshotFileStatus::Damaged { problems, .. } => problems.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        problems.iter().any(|p| p.reason.contains("another event")),
        "{problems:?}"
    );
    let rep = repair(dir.path()).unwrap();
    assert_eq!(rep.snapshots_dropped, vec![("s-1".to_string(), 4)]);
    let store = Store::open(dir.path(), options()).unwrap();
    assert!(store.load_snapshot("s-1").issues.is_empty());
    assert!(
        load.issues.iter().any(|i| matches!(
            i,
            crate::snapshot::SnapshotIssue::OtherEvent {
                snapshot_version: 4,
                ..
            }
        )),
        "{:?}",
        load.issues
    );
    store.close().unwrap();
}

/// A segment 1 of another store put among this store's segments (a
/// restore gone wrong) is named as the stray file by open and verify, and
/// repair changes nothing: keeping "the log before the damage" would have
/// thrown out every segment of this store and kept the stray one.
#[test]
fn a_stray_first_segment_of_another_store_is_named_and_repair_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let other = tempfile::tempdir().unwrap();
    store_with(other.path(), 5);
    let first = segment::path(dir.path(), 1);
    std::fs::copy(segment::path(other.path(), 1), &first).unwrap();
    let before = files(dir.path());

    let named = |e: Error| match e {
        Error::Corruption { file, reason, .. } => {
            assert_eq!(file, first, "{reason}");
            assert!(reason.contains("another store"), "{reason}");
            reason
        }
        other => panic!("{other:?}"),
    };
    named(Store::open(dir.path(), options()).map(|_| ()).unwrap_err());
    named(
        Store::open(dir.path(), options().with_read_only(true))
            .map(|_| ())
            .unwrap_err(),
    );
    let r = verify(dir.path()).unwrap();
    let damage = r.damage.expect("verify found nothing");
    assert_eq!((damage.file, damage.offset), (first.clone(), 0));
    let reason = named(repair(dir.path()).unwrap_err());
    assert!(reason.contains("changed nothing"), "{reason}");
    assert_eq!(files(dir.path()), before, "repair changed the store");
    assert!(!dir.path().join(QUARANTINE_DIR).exists());
}

/// Directories where the index, checkpoints and snapshot files belong are
/// damage that verify reports and repair moves aside, not I/O errors that
/// stop both.
#[test]
fn directories_in_place_of_side_files_are_reported_and_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 30);
    let names = [
        crate::index::file::FILE_NAME,
        crate::CHECKPOINTS_FILE_NAME,
        crate::snapshot::file::FILE_NAME,
    ];
    for name in names {
        let path = dir.path().join(name);
        let _ = std::fs::remove_file(&path);
        std::fs::create_dir(&path).unwrap();
    }
    let r = verify(dir.path()).unwrap();
    assert!(r.damage.is_none(), "{r:?}");
    assert!(
        matches!(&r.index, IndexStatus::Damaged(d) if d.reason.contains("not a file")),
        "{r:?}"
    );
    assert!(!r.is_clean(), "{r:?}");
    let repaired = repair(dir.path()).unwrap();
    assert!(repaired.repaired);
    assert_eq!(repaired.kept_events, 30);
    for name in names {
        assert!(!dir.path().join(name).is_dir(), "{name} still a directory");
        assert!(
            dir.path().join(QUARANTINE_DIR).join(name).is_dir(),
            "{name} not in quarantine"
        );
    }
    assert!(verify(dir.path()).unwrap().is_clean());
}

/// A file named like segment 0 (annal numbers segments from 1) is not part
/// of the store: the store opens, verifies and repairs as if it were not
/// there, and it is left alone.
#[test]
fn a_file_named_like_segment_zero_is_not_part_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 100);
    let zero = segment::path(dir.path(), 0);
    std::fs::copy(segment::path(dir.path(), 1), &zero).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.last_position(), 100);
    store.close().unwrap();
    assert!(verify(dir.path()).unwrap().is_clean());
    assert!(!repair(dir.path()).unwrap().repaired);
    assert!(zero.exists());
}

/// Segments restored from a copy of the store that went on differently
/// (a backup appended to, say) hold other events where the index file
/// recorded acknowledged ones. A log that reaches the durable floor must
/// hold the very batch recorded there: open, a read-only open and verify
/// report the replacement, instead of rebuilding the index from the other
/// copy's events and so erasing the evidence.
#[test]
fn segments_from_a_diverged_copy_are_corruption_not_a_stale_index() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 110);
    let fork = tempfile::tempdir().unwrap();
    for (path, bytes) in files(dir.path()) {
        std::fs::write(fork.path().join(path.file_name().unwrap()), bytes).unwrap();
    }
    let append = |path: &Path, n: u64, event_type: &str| {
        let store = Store::open(path, options()).unwrap();
        for _ in 0..n {
            store
                .append("s-1", ExpectedVersion::Any, [EventData::new(event_type, "{}")])
                .unwrap();
        }
        store.close().unwrap();
    };
    append(dir.path(), 10, "Acknowledged");
    append(fork.path(), 15, "Forked");
    for (path, bytes) in files(fork.path()) {
        if segment::parse_file_name(path.file_name().unwrap().to_str().unwrap()).is_some() {
            std::fs::write(dir.path().join(path.file_name().unwrap()), bytes).unwrap();
        }
    }
    let before = files(dir.path());
    let replaced = |e: Error| match e {
        Error::Corruption { reason, .. } => assert!(reason.contains("were replaced"), "{reason}"),
        other => panic!("{other:?}"),
    };
    replaced(
        Store::open(dir.path(), options().with_read_only(true))
            .map(|_| ())
            .unwrap_err(),
    );
    replaced(Store::open(dir.path(), options()).map(|_| ()).unwrap_err());
    let r = verify(dir.path()).unwrap();
    let damage = r.damage.expect("verify found nothing");
    assert!(damage.reason.contains("were replaced"), "{damage:?}");
    assert_eq!(files(dir.path()), before, "the refused opens changed the store");
}

/// Two segments, one of another store: the segments alone tie, so the
/// store's other files (here its index file) tell which one belongs. With
/// no other file to tell, the reason says that nothing tells, and names no
/// file as the one to move.
#[test]
fn a_tie_between_segments_of_two_stores_is_settled_by_the_other_files_or_said() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 100);
    let other = tempfile::tempdir().unwrap();
    store_with(other.path(), 100);
    assert_eq!(walk::segment_ids(dir.path()).unwrap(), [1, 2]);
    let first = segment::path(dir.path(), 1);
    std::fs::copy(segment::path(other.path(), 1), &first).unwrap();
    match Store::open(dir.path(), options()).map(|_| ()).unwrap_err() {
        Error::Corruption { file, reason, .. } => {
            assert_eq!(file, first, "{reason}");
            assert!(
                reason.contains("1 of the 2 segments and 1 of the store's other files"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    let damage = verify(dir.path()).unwrap().damage.expect("verify found nothing");
    assert_eq!(damage.file, first);

    std::fs::remove_file(dir.path().join(crate::index::file::FILE_NAME)).unwrap();
    let before = files(dir.path());
    for err in [
        Store::open(dir.path(), options()).map(|_| ()).unwrap_err(),
        repair(dir.path()).map(|_| ()).unwrap_err(),
    ] {
        match err {
            Error::Corruption { reason, .. } => assert!(reason.contains("do not tell which belongs"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(files(dir.path()), before);
}

/// A segment header damaged on its own (one flipped bit, the reserved bytes
/// included) is written anew from what is known elsewhere: the file name,
/// the store's id, the position the segment's first batch holds. The
/// segment and every later one stay in the store; the old header's bytes
/// go to quarantine. Also for segment 1, whose store id the other segments
/// and side files agree on.
#[test]
fn a_header_damaged_on_its_own_is_rebuilt_and_its_events_kept() {
    for (segment_id, at) in [(3, 20), (3, 50), (3, 58), (1, 20), (1, 60)] {
        let dir = tempfile::tempdir().unwrap();
        let ids = store_with(dir.path(), 300);
        let path = segment::path(dir.path(), segment_id);
        let original = std::fs::read(&path).unwrap();
        flip(&path, at);
        let d = verify(dir.path()).unwrap().damage.expect("verify found nothing");
        assert_eq!((d.segment, d.offset), (Some(segment_id), 0));

        let rep = repair(dir.path()).unwrap();
        assert!(rep.repaired, "{rep:?}");
        assert_eq!(rep.headers_rebuilt, [segment_id]);
        assert_eq!((rep.kept_events, rep.quarantined_events), (300, 0), "{rep:?}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            original,
            "the header is as it was written"
        );
        let copy = dir
            .path()
            .join(QUARANTINE_DIR)
            .join(format!("{}.header", segment::file_name(segment_id)));
        assert_eq!(std::fs::read(copy).unwrap().len(), 64);
        assert!(verify(dir.path()).unwrap().is_clean());
        assert_eq!(all_ids(dir.path()), ids);
    }
}

/// Bytes added after the last batch of a sealed segment (which ends at its
/// last batch) hold no event of the log when the next segment starts right
/// after it: repair cuts them (copied into quarantine) and keeps every
/// segment. A damaged last batch of a sealed segment is not cut that way:
/// the next segment then does not follow on from the valid log.
#[test]
fn bytes_added_to_a_sealed_segment_are_cut_and_later_segments_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ids = store_with(dir.path(), 300);
    let path = segment::path(dir.path(), 1);
    let original = std::fs::read(&path).unwrap();
    let mut grown = original.clone();
    grown.extend_from_slice(&[1u8; 100]);
    std::fs::write(&path, &grown).unwrap();
    let d = verify(dir.path()).unwrap().damage.expect("verify found nothing");
    assert_eq!((d.segment, d.offset), (Some(1), original.len() as u64));

    let rep = repair(dir.path()).unwrap();
    assert!(rep.repaired, "{rep:?}");
    assert_eq!(
        (rep.kept_events, rep.quarantined_events, rep.unreadable_bytes),
        (300, 0, 100)
    );
    assert_eq!(std::fs::read(&path).unwrap(), original);
    assert!(verify(dir.path()).unwrap().is_clean());
    assert_eq!(all_ids(dir.path()), ids);

    // Bytes added that hold a valid copy of the segment's first batch (a
    // misdirected write of log bytes): its positions are the log's
    // already, it continues nothing, and it is cut the same way.
    let mut grown = original.clone();
    grown.extend_from_slice(&original[64..64 + 400]);
    std::fs::write(&path, &grown).unwrap();
    let d = verify(dir.path()).unwrap().damage.expect("verify found nothing");
    assert_eq!((d.segment, d.offset), (Some(1), original.len() as u64));
    let rep = repair(dir.path()).unwrap();
    assert_eq!(rep.kept_events, 300, "{rep:?}");
    assert_eq!(std::fs::read(&path).unwrap(), original);
    assert!(verify(dir.path()).unwrap().is_clean());
    assert_eq!(all_ids(dir.path()), ids);

    // The sealed segment's last batch damaged: its events are gone, so
    // the next segment does not follow on; the usual prefix is kept.
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let path = segment::path(dir.path(), 1);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip(&path, len - 3);
    let rep = repair(dir.path()).unwrap();
    assert!(rep.kept_events < 300, "{rep:?}");
    assert!(verify(dir.path()).unwrap().is_clean());
}

/// A header is rebuilt only from bit rot: another store's segment whose
/// header is damaged (its batches cannot tell whose they are) is not taken
/// in under this store's id. Segment 2's header records how the segment
/// before it ends, which the stray one does not: repair refuses, changing
/// nothing, instead of quarantining the whole store behind it.
#[test]
fn a_damaged_header_of_another_stores_segment_is_not_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 300);
    let other = tempfile::tempdir().unwrap();
    store_with(other.path(), 300);
    let first = segment::path(dir.path(), 1);
    std::fs::copy(segment::path(other.path(), 1), &first).unwrap();
    flip(&first, 20);
    let store_files = |dir: &Path| {
        let mut all = files(dir);
        all.remove(&dir.join(crate::LOCK_FILE_NAME));
        all
    };
    let before = store_files(dir.path());
    match repair(dir.path()) {
        Err(Error::Corruption { file, reason, .. }) => {
            assert_eq!(file, segment::path(dir.path(), 2));
            assert!(reason.contains("another copy of the store"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store_files(dir.path()), before);
    assert!(!dir.path().join(QUARANTINE_DIR).exists());
}

/// Two mendable damages at once, in one segment or in neighbours, cost no
/// event either.
#[test]
fn a_damaged_header_and_bytes_added_to_a_sealed_segment_are_both_mended() {
    for (junk_in, header_of) in [(3, 3), (2, 3)] {
        let dir = tempfile::tempdir().unwrap();
        let ids = store_with(dir.path(), 300);
        let junk = segment::path(dir.path(), junk_in);
        let mut bytes = std::fs::read(&junk).unwrap();
        bytes.extend_from_slice(&[7u8; 50]);
        std::fs::write(&junk, bytes).unwrap();
        flip(&segment::path(dir.path(), header_of), 50);
        let rep = repair(dir.path()).unwrap();
        assert_eq!(rep.headers_rebuilt, [header_of], "{rep:?}");
        assert_eq!((rep.kept_events, rep.quarantined_events), (300, 0), "{rep:?}");
        assert!(verify(dir.path()).unwrap().is_clean());
        assert_eq!(all_ids(dir.path()), ids);
    }
}

/// Each segment's header records where the one before it ends and that
/// batch's CRC (FORMAT.md); a header that records nothing (written before
/// annal recorded it) is accepted, one that records another end is damage
/// naming it, for `verify` and every open.
#[test]
fn segments_record_how_the_one_before_ends() {
    let dir = tempfile::tempdir().unwrap();
    let ids = store_with(dir.path(), 300);
    let segments = crate::tools::walk::segment_ids(dir.path()).unwrap();
    assert!(segments.len() >= 3);
    let header_of = |id: u64| {
        let path = segment::path(dir.path(), id);
        segment::SegmentHeader::decode(&std::fs::read(&path).unwrap(), &path).unwrap()
    };
    assert_eq!((header_of(1).previous_end, header_of(1).previous_crc), (0, 0));
    for &id in &segments[1..] {
        let previous = std::fs::read(segment::path(dir.path(), id - 1)).unwrap();
        // The last batch of the previous (sealed) segment, by walking its frames.
        let (mut at, mut last_crc) = (segment::SEGMENT_HEADER_BYTES as usize, 0);
        while let Ok(batch) = crate::log::frame::check_batch(&previous[at..], |_, _| {}) {
            last_crc = batch.crc;
            at += batch.frame_len as usize;
        }
        assert_eq!(at, previous.len(), "a sealed segment ends at its last batch");
        let h = header_of(id);
        assert_eq!(
            (h.previous_end, h.previous_crc),
            (previous.len() as u64, last_crc),
            "segment {id}"
        );
        assert_ne!(last_crc, 0);
    }

    let rewrite = |id: u64, previous_end: u64, previous_crc: u32| {
        let path = segment::path(dir.path(), id);
        let mut bytes = std::fs::read(&path).unwrap();
        let header = segment::SegmentHeader {
            previous_end,
            previous_crc,
            ..header_of(id)
        };
        bytes[..64].copy_from_slice(&header.encode());
        std::fs::write(&path, bytes).unwrap();
    };
    // Not recorded: nothing to check.
    let (end, crc) = (header_of(2).previous_end, header_of(2).previous_crc);
    rewrite(2, 0, 0);
    assert!(verify(dir.path()).unwrap().is_clean());
    assert_eq!(all_ids(dir.path()), ids);
    // Another end, or another CRC: damage at the header, whatever the
    // index file says.
    for (other_end, other_crc) in [(end - 1, crc), (end, crc ^ 1)] {
        rewrite(2, other_end, other_crc);
        let d = verify(dir.path()).unwrap().damage.expect("verify found nothing");
        assert_eq!((d.segment, d.offset), (Some(2), 0));
        assert!(d.reason.contains("another copy of the store"), "{}", d.reason);
        for with_index in [true, false] {
            if !with_index {
                let _ = std::fs::remove_file(dir.path().join(crate::index::file::FILE_NAME));
            }
            for read_only in [true, false] {
                match Store::open(dir.path(), options().with_read_only(read_only)) {
                    Err(Error::Corruption { file, offset, .. }) => {
                        assert_eq!((file, offset), (segment::path(dir.path(), 2), 0));
                    }
                    other => panic!("open gave {:?}", other.map(|_| ())),
                }
            }
        }
    }
    rewrite(2, end, crc);
    assert!(verify(dir.path()).unwrap().is_clean());
    assert_eq!(all_ids(dir.path()), ids);
}

/// Runs `repair` on `dir`, stopped before its step `at` (counting from 0)
/// with an I/O error, or with a panic (a kill: no clean-up) when `kill`.
/// Returns the step it was stopped before, or `None` when it has fewer
/// steps and finished.
fn repair_stopped_at(dir: &Path, at: u32, kill: bool) -> Option<&'static str> {
    repair::STOP_AT.set(Some((at, kill)));
    let result = std::panic::catch_unwind(|| repair(dir));
    let stopped = repair::STOP_AT.get().is_none();
    repair::STOP_AT.set(None);
    match result {
        Ok(Ok(_)) => assert!(!stopped, "a stopped repair reported success"),
        // No store left to repair (the one before removed it).
        Ok(Err(Error::InvalidInput(_))) if !stopped && walk::segment_ids(dir).is_err() => {}
        Ok(Err(e)) => assert!(stopped && !kill, "{e}"),
        Err(_) => assert!(stopped && kill),
    }
    stopped.then(|| repair::STOPPED_BEFORE.get())
}

/// Copies the files of the store directory `from` (and its quarantine
/// folder) into `to`.
fn copy_store(from: &Path, to: &Path) {
    for (path, bytes) in files(from) {
        std::fs::write(to.join(path.file_name().unwrap()), bytes).unwrap();
    }
    let q = from.join(QUARANTINE_DIR);
    if q.is_dir() {
        std::fs::create_dir(to.join(QUARANTINE_DIR)).unwrap();
        for (path, bytes) in files(&q) {
            std::fs::write(to.join(QUARANTINE_DIR).join(path.file_name().unwrap()), bytes).unwrap();
        }
    }
}

/// What a repaired store holds: its events' ids, the ids of the events
/// `salvage` reads back from its quarantine folder, its checkpoints, and
/// the snapshot each of its streams loads.
#[derive(Debug, PartialEq, Eq)]
struct Repaired {
    kept: Vec<crate::Uuid>,
    salvaged: std::collections::BTreeSet<crate::Uuid>,
    checkpoints: BTreeMap<String, u64>,
    snapshots: Vec<(String, Option<u64>)>,
}

fn repaired(dir: &Path) -> Repaired {
    // (A repair that found no event to keep leaves no store to verify.)
    if walk::segment_ids(dir).is_ok() {
        let verified = verify(dir).unwrap();
        assert!(verified.is_clean(), "{verified:?}");
    }
    let mut salvaged = std::collections::BTreeSet::new();
    salvage(&quarantined_log_files(dir).unwrap(), |e| {
        salvaged.insert(e.id());
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let store = Store::open(dir, options()).unwrap();
    let kept: Vec<_> = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap().id())
        .collect();
    let snapshots = (0..7)
        .map(|s| {
            let stream = format!("s-{s}");
            let version = store.load_snapshot(&stream).snapshot.map(|s| s.version);
            (stream, version)
        })
        .collect();
    let checkpoints = store.checkpoints().list().unwrap();
    // It takes appends again.
    store
        .append("after-repair", ExpectedVersion::Any, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
    Repaired {
        kept,
        salvaged,
        checkpoints,
        snapshots,
    }
}

/// A repair stopped before any of the changes it makes to the directory
/// (by an I/O error, or killed there, its clean-up skipped), then run
/// again, ends where a repair that was never stopped does: the same events
/// kept, none of the others lost from quarantine, the same checkpoints and
/// snapshots. In between, the store serves no event it did not hold.
#[test]
fn a_repair_stopped_at_any_step_is_finished_by_the_next_one() {
    type Damager = fn(&Path);
    // Each with the events its damage costs: those of the damaged batch.
    let damages: [(&str, usize, Damager); 3] = [
        ("damage in the middle of the log", 1, |dir| {
            let seg = segment::path(dir, 2);
            let len = std::fs::metadata(&seg).unwrap().len() as usize;
            flip(&seg, len / 2);
        }),
        ("a damaged header and bytes added to a sealed segment", 0, |dir| {
            let junk = segment::path(dir, 2);
            let mut bytes = std::fs::read(&junk).unwrap();
            bytes.extend_from_slice(&[7u8; 50]);
            std::fs::write(&junk, bytes).unwrap();
            flip(&segment::path(dir, 3), 50);
        }),
        ("the first header lost", 1, |dir| {
            flip(&segment::path(dir, 1), 20);
            flip(&segment::path(dir, 1), 64 + 45);
        }),
    ];
    for (what, lost, damage) in damages {
        let template = tempfile::tempdir().unwrap();
        let original = store_with(template.path(), 300);
        save_checkpoints(template.path(), 300);
        let store = Store::open(template.path(), options()).unwrap();
        store.save_snapshot("s-3", 2, 1, b"at 2").unwrap();
        store.save_snapshot("s-3", 40, 1, b"at 40").unwrap();
        store.close().unwrap();
        damage(template.path());

        let whole = tempfile::tempdir().unwrap();
        copy_store(template.path(), whole.path());
        repair(whole.path()).unwrap();
        let expected = repaired(whole.path());
        let kept_or_salvaged = |r: &Repaired| {
            let missing = original
                .iter()
                .filter(|id| !r.kept.contains(id) && !r.salvaged.contains(id))
                .count();
            assert_eq!(missing, lost, "{what}: events lost");
        };
        kept_or_salvaged(&expected);
        // Stops each repair before the step given, one after the other
        // (each later one in the repair that runs again after the stop),
        // then runs one to its end. Returns the step the first stop came
        // before, or `None` when the repair has fewer steps.
        let stopped_and_finished = |stops: &[(u32, bool)]| -> Option<&'static str> {
            let dir = tempfile::tempdir().unwrap();
            copy_store(template.path(), dir.path());
            let mut first = None;
            for &(at, kill) in stops {
                let step = repair_stopped_at(dir.path(), at, kill);
                if first.is_none() {
                    first = Some(step?);
                }
                // Whatever the store serves in between is the log as it was.
                let read = Store::open(dir.path(), options().with_read_only(true))
                    .and_then(|s| s.read_all(ReadAll::forward())?.map(|e| e.map(|e| e.id())).collect());
                if let Ok(ids) = read {
                    let ids: Vec<_> = ids;
                    assert!(
                        original.starts_with(&ids),
                        "{what}: stopped at {stops:?}: serves other events"
                    );
                }
            }
            let context = format!("{what}: stopped before steps {stops:?}, the first {first:?}");
            match repair(dir.path()) {
                Ok(_) => {}
                // The store's removal was done but for a last sync: no store
                // is left to repair, as after a removal that ran to its end.
                Err(Error::InvalidInput(_)) if expected.kept.is_empty() && walk::segment_ids(dir.path()).is_err() => {}
                Err(e) => panic!("{context}: the next repair: {e}"),
            }
            let got = repaired(dir.path());
            assert_eq!(got.kept, expected.kept, "{context}");
            kept_or_salvaged(&got);
            assert_eq!(got.checkpoints, expected.checkpoints, "{context}");
            assert_eq!(got.snapshots, expected.snapshots, "{context}");
            first
        };
        let mut steps = 0;
        while let Some(step) = stopped_and_finished(&[(steps, false)]) {
            // A kill differs from an error (no clean-up) only in the
            // middle of a copy.
            if step.contains("copy") {
                stopped_and_finished(&[(steps, true)]);
            }
            steps += 1;
        }
        // The repair that runs after a stop, stopped too.
        for first in 0..steps {
            for second in 0..steps {
                stopped_and_finished(&[(first, false), (second, false)]);
            }
        }
        // The scenario has steps to stop at.
        assert!(steps > 5, "{what}: {steps} steps");
    }
}
