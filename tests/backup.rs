//! Online backups (`Store::backup`): a consistent prefix of the store,
//! taken while writers go on, checked batch by batch, appearing whole or
//! not at all.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(feature = "sim")]
use annal::io::sim::SimFs;
use annal::{Durability, Error, ExpectedVersion, Options, Store};
use common::{all, event, small_segments};

#[test]
fn a_backup_taken_while_writers_append_is_a_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, small_segments()).unwrap();
    for i in 0..300u64 {
        store
            .append(&format!("Order-{}", i % 7), ExpectedVersion::Any, [event("Placed", i)])
            .unwrap();
    }
    store.save_snapshot("Order-3", 10, 2, b"order 3 at 10").unwrap();
    store.checkpoints().save("billing", 250).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let events = [event("Late", i), event("Late", i + 1)];
                    store
                        .append(&format!("Late-{w}"), ExpectedVersion::Any, events)
                        .unwrap();
                    i += 2;
                }
            })
        })
        .collect();
    let mut reports: Vec<annal::BackupReport> = Vec::new();
    for k in 0..3 {
        // Let the writers get ahead of the previous backup first.
        let floor = reports.last().map_or(300, |r| r.last_position) + 10;
        while store.last_position() < floor {
            std::thread::yield_now();
        }
        let report = store.backup(dir.path().join(format!("backup-{k}"))).unwrap();
        assert!(report.last_position >= floor);
        reports.push(report);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let original = all(&store);
    store.close().unwrap();

    for (k, report) in reports.iter().enumerate() {
        assert!(report.last_position >= 300);
        assert!(report.segments > 1, "small segments: several files");
        let backup = Store::open(dir.path().join(format!("backup-{k}")), Options::default()).unwrap();
        let recovery = backup.recovery_report().clone();
        assert!(recovery.index_loaded && recovery.replayed_events == 0, "{recovery:?}");
        assert_eq!(recovery.torn_tail_bytes, 0);
        let events = all(&backup);
        assert_eq!(events.len() as u64, report.last_position);
        for (b, o) in events.iter().zip(&original) {
            assert_eq!(
                (b.position(), b.id(), b.stream(), b.version(), b.data()),
                (o.position(), o.id(), o.stream(), o.version(), o.data())
            );
        }
        // Every append is whole: a 2-event append is never cut in half.
        for w in 0..2 {
            let late = format!("Late-{w}");
            assert_eq!(backup.stream_version(&late).unwrap_or(0) % 2, 0);
        }
        assert_eq!(backup.checkpoints().load("billing").unwrap(), Some(250));
        let snapshot = backup.load_snapshot("Order-3").snapshot.unwrap();
        assert_eq!((snapshot.version, &snapshot.data[..]), (10, &b"order 3 at 10"[..]));
        // The backup is a store like any other.
        let next = backup
            .append("Order-1", ExpectedVersion::Any, [event("After", 0)])
            .unwrap();
        assert_eq!(next.first_position, report.last_position + 1);
        backup.close().unwrap();
    }
}

#[test]
fn a_backup_refuses_an_existing_destination_and_a_missing_parent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Options::default()).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("E", 1)]).unwrap();
    let taken = dir.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("keep.txt"), b"mine").unwrap();
    assert!(matches!(store.backup(&taken), Err(Error::InvalidInput(_))));
    assert_eq!(std::fs::read(taken.join("keep.txt")).unwrap(), b"mine");
    let orphan = dir.path().join("no-such-parent").join("backup");
    assert!(matches!(store.backup(&orphan), Err(Error::InvalidInput(_))));
    assert!(!dir.path().join("no-such-parent").exists());
}

#[test]
fn a_backup_refuses_a_destination_inside_the_store_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, Options::default()).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("E", 1)]).unwrap();
    let before: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    std::fs::create_dir(path.join("sub")).unwrap();
    // Directly inside, deeper, and through a link to the store.
    #[cfg(unix)]
    std::os::unix::fs::symlink(&path, dir.path().join("link")).unwrap();
    let mut inside = vec![path.join("inner"), path.join("sub").join("inner")];
    if cfg!(unix) {
        inside.push(dir.path().join("link").join("inner"));
    }
    for dest in inside {
        match store.backup(&dest) {
            Err(Error::InvalidInput(m)) => assert!(m.contains("inside the store directory"), "{m}"),
            other => panic!("{}: {other:?}", dest.display()),
        }
    }
    std::fs::remove_dir(path.join("sub")).unwrap();
    let after: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "nothing written into the store directory");
    // Beside it is fine.
    assert_eq!(store.backup(dir.path().join("beside")).unwrap().last_position, 1);
}

#[test]
fn damage_fails_the_backup_and_leaves_no_destination() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, Options::default()).unwrap();
    for i in 0..20 {
        store.append("A-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    // A bit flipped on disk under the open store, inside an early batch.
    let segment = path.join(annal::log::segment::file_name(1));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[annal::log::segment::SEGMENT_HEADER_BYTES as usize + 100] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let dest = dir.path().join("backup");
    let result = store.backup(&dest);
    assert!(matches!(result, Err(Error::Corruption { .. })), "{result:?}");
    assert!(!dest.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["store"], "the temporary directory was removed");
}

#[test]
fn a_read_only_store_and_an_empty_store_back_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    Store::open(&path, Options::default()).unwrap().close().unwrap();
    let reader = Store::open(&path, Options::default().with_read_only(true)).unwrap();
    let report = reader.backup(dir.path().join("empty-backup")).unwrap();
    assert_eq!((report.last_position, report.segments), (0, 1));
    drop(reader);
    let backup = Store::open(dir.path().join("empty-backup"), Options::default()).unwrap();
    assert_eq!(backup.last_position(), 0);
    backup
        .append("A-1", ExpectedVersion::NoStream, [event("E", 1)])
        .unwrap();
}

#[test]
fn a_closed_store_backs_up_what_it_holds_in_every_mode() {
    for durability in [
        Durability::Sync,
        Durability::Periodic(std::time::Duration::from_secs(60)),
        Durability::Buffered,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), small_segments().with_durability(durability)).unwrap();
        for i in 0..200u64 {
            store
                .append(&format!("Order-{}", i % 5), ExpectedVersion::Any, [event("Placed", i)])
                .unwrap();
        }
        store.save_snapshot("Order-1", 10, 1, b"order 1 at 10").unwrap();
        store.checkpoints().save("billing", 150).unwrap();
        let written = all(&store);
        let clone = store.clone();
        store.close().unwrap();
        let store = clone;
        // A read like any other once closed: the copy holds every event
        // (the close synced them), and the copy opens as a whole store.
        let report = store.backup(dir.path().join("backup")).unwrap();
        assert_eq!(report.last_position, 200, "{durability:?}");
        drop(store);
        let copy = Store::open(dir.path().join("backup"), Options::default()).unwrap();
        assert_eq!(all(&copy), written, "{durability:?}");
        assert_eq!(copy.checkpoints().load("billing").unwrap(), Some(150), "{durability:?}");
        let snapshot = copy.load_snapshot("Order-1").snapshot.expect("the snapshot is copied");
        assert_eq!(
            (snapshot.version, &snapshot.data[..]),
            (10, &b"order 1 at 10"[..]),
            "{durability:?}"
        );
    }
}

#[test]
fn concurrent_backups_to_one_destination_never_leave_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("store"),
        small_segments().with_durability(Durability::Buffered),
    )
    .unwrap();
    for i in 0..20_000u64 {
        store
            .append(&format!("S-{}", i % 50), ExpectedVersion::Any, [event("E", i)])
            .unwrap();
    }
    let dest = dir.path().join("backup");
    let results: Vec<_> = std::thread::scope(|scope| {
        let tasks: Vec<_> = (0..2).map(|_| scope.spawn(|| store.backup(&dest))).collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    let backup = Store::open(&dest, Options::default()).unwrap();
    assert_eq!(backup.last_position(), 20_000);
    drop(backup);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(left.iter().all(|n| !n.ends_with(".partial")), "{left:?}");
}

#[test]
fn a_backup_is_locked_like_a_store_and_normalises_its_destination() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Options::default()).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("E", 1)]).unwrap();
    // `backup/.` names the directory `backup`.
    store.backup(dir.path().join("backup").join(".")).unwrap();
    let backup = dir.path().join("backup");
    let reader = Store::open(&backup, Options::default().with_read_only(true)).unwrap();
    assert!(matches!(
        Store::open(&backup, Options::default()),
        Err(Error::Locked { .. })
    ));
    drop(reader);
    Store::open(&backup, Options::default()).unwrap().close().unwrap();
    // A dangling link is refused before anything is copied.
    #[cfg(unix)]
    {
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(matches!(store.backup(&link), Err(Error::InvalidInput(_))));
    }
}

#[cfg(feature = "sim")]
#[test]
fn a_backup_never_holds_events_a_power_loss_can_take_from_the_store() {
    // The store on the simulated disk, in buffered mode: nothing is synced
    // until the backup syncs it.
    let fs = SimFs::new(3);
    let options = Options::default().with_durability(Durability::Buffered);
    let store = Store::open_with(fs.clone(), "/db", options.clone()).unwrap();
    for i in 0..100u64 {
        store.append("A-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let report = store.backup(dir.path().join("backup")).unwrap();
    assert_eq!(report.last_position, 100);
    let image = fs.durable_image();
    std::mem::forget(store);
    let after_power_loss = Store::open_with(SimFs::from_image(&image, 4), "/db", options).unwrap();
    assert!(after_power_loss.last_position() >= report.last_position);
}

#[test]
fn a_damaged_checkpoints_file_fails_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, Options::default()).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("E", 1)]).unwrap();
    store.checkpoints().save("c", 1).unwrap();
    let file = path.join(annal::CHECKPOINTS_FILE_NAME);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&file, bytes).unwrap();
    let dest = dir.path().join("backup");
    let result = store.backup(&dest);
    assert!(matches!(result, Err(Error::Corruption { .. })), "{result:?}");
    assert!(!dest.exists());
}
