//! Read-only opens (`Options::with_read_only`): they read everything a
//! writable open would, refuse the same damage, write nothing at all (not
//! the torn-tail cut, not the index file, not the lock note), share the
//! directory with each other and exclude a writer.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[cfg(feature = "sim")]
use annal::io::sim::SimFs;
use annal::{Error, EventData, ExpectedVersion, Options, StartFrom, Store};
use common::{all, event, stream};

fn read_only() -> Options {
    Options::default().with_read_only(true)
}

/// Every file of a directory: its bytes and modification time.
fn files(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            (path, (bytes, modified))
        })
        .collect()
}

fn segment_path(dir: &Path) -> PathBuf {
    dir.join(annal::log::segment::file_name(1))
}

/// Appends one event in its own open and close; returns where its batch
/// lies in the segment file (the bytes that changed).
fn append_alone(path: &Path, n: u64) -> (usize, usize) {
    let before = std::fs::read(segment_path(path)).unwrap();
    let store = Store::open(path, Options::default()).unwrap();
    store
        .append("Order-9", ExpectedVersion::Any, [event("Late", n)])
        .unwrap();
    store.close().unwrap();
    let after = std::fs::read(segment_path(path)).unwrap();
    let first = (0..after.len()).find(|&i| before.get(i) != Some(&after[i])).unwrap();
    let last = (0..after.len())
        .rev()
        .find(|&i| before.get(i) != Some(&after[i]))
        .unwrap();
    (first, last + 1)
}

/// A store of 20 events with a snapshot and a checkpoint, whose index file
/// covers those 20; then one more event (21) the index file does not
/// cover, and a 22nd whose batch is damaged past the index file's durable
/// floor (a torn tail); and a leftover temp file.
fn store_with_torn_tail(path: &Path) -> Vec<annal::RecordedEvent> {
    let store = Store::open(path, Options::default()).unwrap();
    for i in 0..20u64 {
        let name = format!("Order-{}", i % 3);
        store.append(&name, ExpectedVersion::Any, [event("Placed", i)]).unwrap();
    }
    store.save_snapshot("Order-1", 3, 1, b"state at 3").unwrap();
    store.checkpoints().save("report", 15).unwrap();
    store.close().unwrap();
    let index = std::fs::read(path.join("index")).unwrap();
    append_alone(path, 21);
    let expected = {
        let store = Store::open(path, Options::default()).unwrap();
        let events = all(&store);
        store.close().unwrap();
        events
    };
    let (start, end) = append_alone(path, 22);
    std::fs::write(path.join("index"), index).unwrap();
    let mut segment = std::fs::read(segment_path(path)).unwrap();
    segment[(start + end) / 2] ^= 0x5A;
    std::fs::write(segment_path(path), segment).unwrap();
    std::fs::write(path.join("index.tmp"), b"half a save").unwrap();
    assert_eq!(expected.len(), 21);
    expected
}

#[test]
fn a_read_only_open_reads_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let expected = store_with_torn_tail(&path);
    let before = files(&path);

    let store = Store::open(&path, read_only()).unwrap();
    assert!(store.is_read_only());
    let report = store.recovery_report().clone();
    assert!(report.index_loaded, "{report:?}");
    assert_eq!(report.replayed_events, 1);
    assert!(report.torn_tail_bytes > 0);
    assert_eq!(store.last_position(), 21);
    let got = all(&store);
    assert_eq!(got.len(), expected.len());
    for (a, b) in got.iter().zip(&expected) {
        assert_eq!((a.position(), a.id(), a.data()), (b.position(), b.id(), b.data()));
    }
    assert_eq!(stream(&store, "Order-1").len(), 7);
    assert_eq!(store.stream_version("Order-9"), Some(1));
    let snapshot = store.load_snapshot("Order-1").snapshot.unwrap();
    assert_eq!((snapshot.version, &snapshot.data[..]), (3, &b"state at 3"[..]));
    assert_eq!(store.checkpoints().load("report").unwrap(), Some(15));
    let mut subscription = store.subscribe_all(StartFrom::After(19)).unwrap();
    let positions: Vec<u64> = std::iter::from_fn(|| subscription.try_recv().unwrap())
        .map(|e| e.position())
        .collect();
    assert_eq!(positions, [20, 21]);

    let read_only = |r: annal::Result<()>| matches!(r, Err(Error::ReadOnly { .. }));
    let append = store.append("Order-1", ExpectedVersion::Any, [EventData::new("E", "x")]);
    assert!(matches!(append, Err(Error::ReadOnly { .. })), "{append:?}");
    assert!(read_only(store.save_index()));
    assert!(read_only(store.checkpoints().save("report", 21)));
    assert!(read_only(store.checkpoints().remove("report")));
    assert!(read_only(store.save_snapshot("Order-1", 7, 1, b"x")));
    assert!(read_only(store.save_snapshot("No-such-stream", 1, 1, b"x")));
    assert!(read_only(store.compact_snapshots()));
    // A projection runner, which saves checkpoints, is refused up front
    // (it would apply the same events again on every run).
    struct Nothing;
    impl annal::Projection for Nothing {
        fn apply(&mut self, _: &annal::RecordedEvent) -> Result<(), annal::HandlerError> {
            Ok(())
        }
    }
    let runner = annal::ProjectionRunner::new(&store, "report", annal::SubscriptionFilter::all(), Nothing);
    assert!(matches!(
        runner,
        Err(annal::ProjectionError::Store(Error::ReadOnly { .. }))
    ));
    store.sync().unwrap();
    store.close().unwrap();
    assert_eq!(files(&path), before, "a read-only open changed the directory");

    // A writable open then does what the read-only one left undone.
    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(store.recovery_report().torn_tail_bytes, report.torn_tail_bytes);
    assert_eq!(store.last_position(), 21);
    store.close().unwrap();
    assert!(!path.join("index.tmp").exists());
}

#[test]
fn read_only_opens_share_the_store_and_exclude_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, Options::default()).unwrap();
    store.append("A-1", ExpectedVersion::NoStream, [event("E", 1)]).unwrap();
    // A writer excludes readers.
    assert!(matches!(Store::open(&path, read_only()), Err(Error::Locked { .. })));
    store.close().unwrap();

    let first = Store::open(&path, read_only()).unwrap();
    let second = Store::open(&path, read_only()).unwrap();
    assert_eq!(all(&first).len(), 1);
    assert_eq!(all(&second).len(), 1);
    assert!(matches!(
        Store::open(&path, Options::default()),
        Err(Error::Locked { .. })
    ));
    drop(first);
    assert!(matches!(
        Store::open(&path, Options::default()),
        Err(Error::Locked { .. })
    ));
    drop(second);
    Store::open(&path, Options::default()).unwrap().close().unwrap();
}

#[test]
fn a_read_only_open_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(matches!(
        Store::open(&missing, read_only()),
        Err(Error::InvalidInput(_))
    ));
    assert!(!missing.exists());
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(Store::open(&empty, read_only()), Err(Error::InvalidInput(_))));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

#[test]
fn a_read_only_open_refuses_damage_as_a_writable_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // Damage inside the first batch, valid batches after it: no torn write
    // explains it. Without the index file, both opens replay that batch.
    damaged_store(&path, 10, annal::log::segment::SEGMENT_HEADER_BYTES as usize + 40);
    std::fs::remove_file(path.join("index")).unwrap();
    assert_both_opens_refuse(&path);
}

/// A closed store of `events` one-event appends, with the byte at
/// `offset` of its segment flipped.
fn damaged_store(path: &Path, events: u64, offset: usize) {
    let store = Store::open(path, Options::default()).unwrap();
    for i in 0..events {
        store.append("A-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    store.close().unwrap();
    let mut segment = std::fs::read(segment_path(path)).unwrap();
    segment[offset] ^= 0xFF;
    std::fs::write(segment_path(path), &segment).unwrap();
}

fn assert_both_opens_refuse(path: &Path) {
    let ro = Store::open(path, read_only());
    assert!(matches!(ro, Err(Error::Corruption { .. })), "{ro:?}");
    let rw = Store::open(path, Options::default());
    assert!(matches!(rw, Err(Error::Corruption { .. })), "{rw:?}");
}

#[test]
fn with_an_index_file_both_opens_refuse_damage_in_the_last_events_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // The index file covers the damaged batch, so no replay checks it:
    // the check of the last events' batches (the idempotency window's)
    // does, in both kinds of open.
    damaged_store(&path, 51, 200);
    assert_both_opens_refuse(&path);
}

#[test]
fn a_directory_named_like_a_temporary_file_does_not_block_an_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    Store::open(&path, Options::default()).unwrap().close().unwrap();
    std::fs::create_dir(path.join("index.tmp")).unwrap();
    Store::open(&path, Options::default()).unwrap().close().unwrap();
    assert!(path.join("index.tmp").is_dir());
}

/// Only the temporary files the store itself makes are removed at open:
/// a store created in a directory that already held files (a mistyped
/// path) leaves the user's own `*.tmp` files alone.
#[test]
fn an_open_removes_only_its_own_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("report.tmp"), b"precious").unwrap();
    std::fs::write(path.join("00000000000000000007.seg.tmp"), b"half a segment").unwrap();
    std::fs::write(path.join("next-segment.tmp"), [0u8; 64]).unwrap();
    Store::open(&path, Options::default()).unwrap().close().unwrap();
    assert_eq!(std::fs::read(path.join("report.tmp")).unwrap(), b"precious");
    assert!(!path.join("00000000000000000007.seg.tmp").exists());
    assert!(!path.join("next-segment.tmp").exists());
}

#[cfg(feature = "sim")]
#[test]
fn a_read_only_open_makes_no_mutating_call() {
    // On the simulated disk, which counts every mutating call.
    let fs = SimFs::new(7);
    let store = Store::open_with(fs.clone(), "/db", Options::default()).unwrap();
    for i in 0..50u64 {
        let name = format!("S-{}", i % 5);
        store.append(&name, ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    store.save_snapshot("S-1", 2, 1, b"snap").unwrap();
    drop(store);
    // Lose the index file, so the read-only open must rebuild from the log.
    fs.remove_durable(Path::new("/db/index"));
    let ops = fs.ops();
    let contents: Vec<_> = fs.files().into_iter().map(|p| (fs.read(&p), p)).collect();
    let store = Store::open_with(fs.clone(), "/db", read_only()).unwrap();
    assert!(!store.recovery_report().index_loaded);
    assert_eq!(store.last_position(), 50);
    assert_eq!(store.load_snapshot("S-1").snapshot.map(|s| s.version), Some(2));
    assert_eq!(store.checkpoints().load("x").unwrap(), None);
    store.close().unwrap();
    assert_eq!(fs.ops(), ops, "a read-only open made a mutating call");
    let after: Vec<_> = fs.files().into_iter().map(|p| (fs.read(&p), p)).collect();
    assert_eq!(after, contents);
}

#[test]
fn a_read_only_open_reports_snapshot_file_damage_and_repairs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, Options::default()).unwrap();
    store
        .append("A-1", ExpectedVersion::Any, [event("E", 1), event("E", 2)])
        .unwrap();
    store.save_snapshot("A-1", 2, 1, b"two").unwrap();
    store.close().unwrap();
    let snapshots = path.join("snapshots");
    let mut torn = std::fs::read(&snapshots).unwrap();
    torn.extend_from_slice(&[0x55; 9]);
    std::fs::write(&snapshots, &torn).unwrap();

    let store = Store::open(&path, read_only()).unwrap();
    assert_eq!(store.load_snapshot("A-1").snapshot.map(|s| s.version), Some(2));
    let issues = store.snapshot_issues();
    assert!(
        issues
            .iter()
            .any(|i| matches!(i, annal::SnapshotIssue::TornTail { bytes: 9, .. })),
        "{issues:?}"
    );
    drop(store);
    assert_eq!(std::fs::read(&snapshots).unwrap(), torn, "the torn tail stays");

    let mut foreign = torn.clone();
    foreign[0] ^= 0xFF;
    std::fs::write(&snapshots, &foreign).unwrap();
    let store = Store::open(&path, read_only()).unwrap();
    assert!(store.load_snapshot("A-1").snapshot.is_none());
    let issues = store.snapshot_issues();
    assert!(
        issues
            .iter()
            .any(|i| matches!(i, annal::SnapshotIssue::Corrupt { offset: 0, .. })),
        "{issues:?}"
    );
    drop(store);
    assert_eq!(std::fs::read(&snapshots).unwrap(), foreign, "not replaced");
}
