//! The store on real, small file systems mounted for the test: a disk that
//! fills up (tmpfs, also with huge pages, and ext4, ext2, XFS and btrfs
//! images on loop devices), and read-only media. `tests/io_errors.rs` injects ENOSPC at every call site through
//! the simulated file system; these tests check the same promises against
//! the kernel's own behaviour, including the writable maps that the
//! buffered and periodic modes copy appends into (a map write that finds no
//! block would kill the process with `SIGBUS`, not fail the append).
//!
//! Mounting needs root, `mount`, and for the images their `mkfs` and a
//! loop device (`tests/real_fs_support/`). Where the machine has none of
//! these, each test says so on
//! stderr and returns without checking anything: run them as root to get
//! their verdict (`cargo test --release --all-features --test suite
//! real_fs:: -- --nocapture`). This machine kind (and its CI) runs as root.

use std::path::Path;
use std::time::Duration;

use annal::{Durability, Error, EventData, ExpectedVersion, Options, Store};

mod real_fs_support;
use real_fs_support::{Ledger, Mount, check, fill_disk, give_back, is_disk_full, skipped};

fn options(durability: Durability) -> Options {
    // Small segments: the disk fills over a few roll-overs, and the spare
    // segment made ahead meets the full disk too. The first segment after
    // an open grows a megabyte at a time, then by its length.
    Options::default()
        .with_durability(durability)
        .with_segment_size_bytes(4 << 20)
}

const MODES: [Durability; 3] = [
    Durability::Sync,
    Durability::Periodic(Duration::from_millis(20)),
    Durability::Buffered,
];

/// The events of append number `k`: 1, 3 or 10 events of about 2 KiB.
fn batch(k: u64) -> Vec<EventData> {
    let n = [1, 3, 10][(k % 3) as usize];
    let pad = "p".repeat(2000);
    (0..n)
        .map(|i| EventData::new("Deposited", format!("{{\"k\":{k},\"i\":{i},\"pad\":\"{pad}\"}}")))
        .collect()
}

fn stream_of(k: u64) -> String {
    format!("Acct-{}", k % 17)
}

/// Appends to `dir` until the disk is full; returns what was acknowledged
/// and the append that failed. With `hog`, a file there takes every free
/// block of the disk once the store has made a few appends (as another
/// program filling the disk would), so the store meets the full disk
/// inside the segment it is writing.
fn fill(dir: &Path, durability: Durability, hog: Option<&Path>) -> (Ledger, (String, Vec<EventData>)) {
    let store = Store::open(dir, options(durability)).unwrap();
    let mut acknowledged = Ledger::new();
    for k in 0..1_000_000u64 {
        if let (Some(hog), 5) = (hog, k) {
            fill_disk(hog);
        }
        let stream = stream_of(k);
        let events = batch(k);
        let ids = events.iter().map(EventData::id).collect();
        match store.append(&stream, ExpectedVersion::Any, events.clone()) {
            Ok(result) => acknowledged.push((stream, ids, result)),
            Err(e) => {
                assert!(
                    is_disk_full(&e),
                    "{durability:?}: append {k} failed with {e:?}, not disk full"
                );
                // Fail-stop: nothing more is accepted from this handle.
                let next = store.append("Other", ExpectedVersion::Any, batch(0));
                assert!(matches!(next, Err(Error::Poisoned(_))), "{durability:?}: {next:?}");
                // A close may fail too (its index save finds no room); it
                // must not panic or lose anything.
                let _ = store.close();
                assert!(!acknowledged.is_empty(), "{durability:?}: the first append failed");
                return (acknowledged, (stream, events));
            }
        }
    }
    panic!("{durability:?}: the disk never filled");
}

/// In each durability mode, on each file system (ext2 has no `fallocate`,
/// so the store writes zeros where it reserves space on the others; XFS
/// and btrfs get write calls, tmpfs and ext2/4 copies into a map in the
/// buffered and periodic modes; btrfs is copy-on-write, so the space the
/// store took is no room for what is written over it): appends fill the
/// disk;
/// the append that finds it full gets an I/O error of kind `StorageFull`
/// and the handle refuses later appends; the store opens again on the full
/// disk (read-only, and writable unless the open itself needs room), with
/// every acknowledged event; once space is freed, the failed append
/// retried with the same ids is written exactly once, and appends go on.
#[test]
fn a_full_disk_fails_the_append_and_loses_nothing_acknowledged() {
    type MountFn = fn(u64) -> Option<Mount>;
    let file_systems: [(&str, MountFn, u64); 7] = [
        ("tmpfs", Mount::tmpfs, 24),
        ("tmpfs, huge=always", |mib| Mount::tmpfs_with(mib, ",huge=always"), 24),
        (
            "tmpfs, huge=within_size",
            |mib| Mount::tmpfs_with(mib, ",huge=within_size"),
            24,
        ),
        ("ext4", |mib| Mount::ext4(mib, &[]), 40),
        ("ext2", |mib| Mount::made_by("mkfs.ext2", &["-q", "-F"], mib), 40),
        ("xfs", |mib| Mount::made_by("mkfs.xfs", &["-q", "-f"], mib), 40),
        (
            "btrfs",
            |mib| Mount::made_by("mkfs.btrfs", &["-q", "-f", "--mixed"], mib),
            40,
        ),
    ];
    let cases = file_systems.into_iter().flat_map(|fs| {
        MODES
            .into_iter()
            .flat_map(move |mode| [(fs, mode, false), (fs, mode, true)])
    });
    for ((name, mount, mib), durability, by_another_program) in cases {
        {
            let what = format!(
                "{name}, {durability:?}, {}",
                if by_another_program {
                    "filled by another program"
                } else {
                    "filled by the store"
                }
            );
            let Some(mount) = mount(mib) else {
                skipped(
                    "real_fs::a_full_disk_fails_the_append_and_loses_nothing_acknowledged",
                    name,
                );
                continue;
            };
            // Room that can be given back once the disk is full.
            let filler = mount.point.join("filler");
            // More than the store itself may take once it is freed: the
            // active segment's next preallocation step and a spare segment
            // made ahead (4 MiB each here), then the index file saved at
            // close.
            std::fs::write(&filler, vec![7u8; 10 << 20]).unwrap();
            let dir = mount.point.join("store");

            let hog = mount.point.join("hog");
            let (acknowledged, failed) = fill(&dir, durability, by_another_program.then_some(hog.as_path()));
            eprintln!(
                "real_fs: {what}: {} appends acknowledged before the disk filled",
                acknowledged.len()
            );

            // On the full disk: a read-only open serves everything
            // acknowledged.
            let store = Store::open(&dir, options(durability).with_read_only(true)).unwrap();
            check(
                &store,
                &acknowledged,
                Some(&failed),
                &format!("{what}, read-only on the full disk"),
            );
            drop(store);
            // A writable open either works or finds no room; either way
            // nothing acknowledged is lost, and a retry of the failed
            // append is written once or refused for lack of room.
            match Store::open(&dir, options(durability)) {
                Ok(store) => {
                    check(
                        &store,
                        &acknowledged,
                        Some(&failed),
                        &format!("{what}, reopened on the full disk"),
                    );
                    match store.append(&failed.0, ExpectedVersion::Any, failed.1.clone()) {
                        Ok(_) => {}
                        Err(e) => assert!(is_disk_full(&e), "{what}: retry on the full disk: {e:?}"),
                    }
                    let _ = store.close();
                }
                Err(e) => assert!(is_disk_full(&e), "{what}: open on the full disk: {e:?}"),
            }

            // Space freed: the retry is written exactly once, and the
            // store takes appends again.
            give_back(&filler);
            if by_another_program {
                give_back(&hog);
            }
            let store = Store::open(&dir, options(durability)).unwrap();
            let retried = store.append(&failed.0, ExpectedVersion::Any, failed.1.clone()).unwrap();
            assert!(
                check(
                    &store,
                    &acknowledged,
                    Some(&failed),
                    &format!("{what}, after space was freed")
                ),
                "{what}: the retried append is not in the store"
            );
            let mut acknowledged = acknowledged;
            acknowledged.push((failed.0.clone(), failed.1.iter().map(EventData::id).collect(), retried));
            for k in 0..20 {
                let events = batch(k);
                let ids = events.iter().map(EventData::id).collect();
                let result = store.append("After-1", ExpectedVersion::Any, events).unwrap();
                acknowledged.push(("After-1".to_string(), ids, result));
            }
            store.close().unwrap();
            let store = Store::open(&dir, options(durability)).unwrap();
            check(
                &store,
                &acknowledged,
                Some(&failed),
                &format!("{what}, reopened at the end"),
            );
            assert_eq!(
                store.last_position(),
                acknowledged.last().map_or(0, |(_, _, r)| r.last_position),
                "{what}: events beyond the acknowledged ones"
            );
            store.close().unwrap();
        }
    }
}

/// A store on media mounted read-only: a read-only open serves every
/// event and writes nothing; a writable open is refused with an error,
/// not a panic, and leaves the files as they were.
#[test]
fn a_store_on_read_only_media_opens_read_only() {
    let Some(mount) = Mount::ext4(16, &[]) else {
        skipped("real_fs::a_store_on_read_only_media_opens_read_only", "ext4");
        return;
    };
    let dir = mount.point.join("store");
    let store = Store::open(&dir, options(Durability::Sync)).unwrap();
    let mut acknowledged = Ledger::new();
    for k in 0..200 {
        let events = batch(k);
        let ids = events.iter().map(EventData::id).collect();
        let result = store.append(&stream_of(k), ExpectedVersion::Any, events).unwrap();
        acknowledged.push((stream_of(k), ids, result));
    }
    store.close().unwrap();
    let listing = |dir: &Path| -> Vec<(String, u64)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = listing(&dir);
    mount.remount_read_only();

    let store = Store::open(&dir, options(Durability::Sync).with_read_only(true)).unwrap();
    check(&store, &acknowledged, None, "read-only media");
    let refused = store.append("Acct-1", ExpectedVersion::Any, batch(1));
    assert!(matches!(refused, Err(Error::ReadOnly { .. })), "{refused:?}");
    store.close().unwrap();

    let writable = Store::open(&dir, options(Durability::Sync));
    assert!(
        matches!(&writable, Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem),
        "a writable open on read-only media: {:?}",
        writable.as_ref().err()
    );
    assert_eq!(listing(&dir), before, "files changed on read-only media");
}

/// Copies the files of `from` into a new directory `to`, leaving out every
/// 4 KiB block of zeros: a hole, as `cp --sparse=always` would make.
fn sparse_copy(from: &Path, to: &Path) {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        let file = std::fs::File::create(to.join(entry.file_name())).unwrap();
        file.set_len(bytes.len() as u64).unwrap();
        for (i, block) in bytes.chunks(4096).enumerate() {
            if block.iter().any(|&b| b != 0) {
                file.write_all_at(block, i as u64 * 4096).unwrap();
            }
        }
        file.sync_all().unwrap();
    }
}

/// Bytes of `dir`'s files without storage behind them.
fn hole_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let m = e.unwrap().metadata().unwrap();
            m.len().saturating_sub(m.blocks() * 512)
        })
        .sum()
}

/// A sparse copy of a store (its zeros left out as holes) on a full disk.
/// On tmpfs even a read of a hole through a map needs a page, and a full
/// tmpfs kills the reader with `SIGBUS`: there a read-only open fails with
/// `StorageFull` instead; on ext4 a hole reads as zeros without storage,
/// and the read-only open serves every event. A writable open gives the
/// holes storage first, so it is refused for lack of room on both. Once
/// space is freed, both opens work and serve the same events.
#[test]
fn a_sparse_copy_on_a_full_disk_is_an_error_not_a_crash() {
    type MountFn = fn(u64) -> Option<Mount>;
    let file_systems: [(&str, MountFn); 2] = [("tmpfs", Mount::tmpfs), ("ext4", |mib| Mount::ext4(mib, &[]))];
    let source = tempfile::tempdir().unwrap();
    let original = source.path().join("store");
    let store = Store::open(&original, options(Durability::Sync)).unwrap();
    let mut acknowledged = Ledger::new();
    for k in 0..300 {
        let events: Vec<EventData> = (0..2)
            .map(|i| EventData::new("Opened", format!("{{\"k\":{k},\"i\":{i}}}")))
            .collect();
        let ids = events.iter().map(EventData::id).collect();
        let result = store.append(&stream_of(k), ExpectedVersion::Any, events).unwrap();
        acknowledged.push((stream_of(k), ids, result));
    }
    store.close().unwrap();

    for (name, mount) in file_systems {
        let Some(mount) = mount(16) else {
            skipped("real_fs::a_sparse_copy_on_a_full_disk_is_an_error_not_a_crash", name);
            continue;
        };
        let dir = mount.point.join("store");
        sparse_copy(&original, &dir);
        assert!(
            hole_bytes(&dir) > 512 << 10,
            "{name}: the copy has no holes to test with"
        );
        let hog = mount.point.join("hog");
        fill_disk(&hog);

        match Store::open(&dir, options(Durability::Sync).with_read_only(true)) {
            Ok(store) => {
                assert_eq!(name, "ext4", "{name}: a read-only open found room to read the holes in");
                check(
                    &store,
                    &acknowledged,
                    None,
                    &format!("{name}, read-only on the full disk"),
                );
                store.close().unwrap();
            }
            Err(e) => {
                assert_eq!(name, "tmpfs", "{name}: {e}");
                assert!(is_disk_full(&e), "{name}: {e:?}");
            }
        }
        let writable = Store::open(&dir, options(Durability::Sync));
        assert!(
            writable.as_ref().is_err_and(is_disk_full),
            "{name}: a writable open of a sparse copy on a full disk: {:?}",
            writable.as_ref().err()
        );
        drop(writable);

        give_back(&hog);
        let store = Store::open(&dir, options(Durability::Sync).with_read_only(true)).unwrap();
        check(
            &store,
            &acknowledged,
            None,
            &format!("{name}, read-only once space was freed"),
        );
        store.close().unwrap();
        let store = Store::open(&dir, options(Durability::Sync)).unwrap();
        check(
            &store,
            &acknowledged,
            None,
            &format!("{name}, writable once space was freed"),
        );
        store.append("Acct-1", ExpectedVersion::Any, batch(1)).unwrap();
        store.close().unwrap();
    }
}
