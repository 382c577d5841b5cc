//! Gaps found by an audit of the order of writes, syncs and renames
//! against the durability promises (docs/DURABILITY.md), each shown on the
//! simulated file system:
//! - a roll-over that failed once the next segment had its name (its
//!   directory sync) zeroed the batches the sealed segment held and the
//!   new segment's header names, and the next open refused the store as
//!   "another copy";
//! - a store created in new directories left their names unsynced: a
//!   power loss could take the whole store, acknowledged appends and all
//!   (the simulated file system now loses a directory whose parent was
//!   not synced after it was made);
//! - a snapshot save acknowledged after an earlier save had failed at its
//!   directory sync went into a file whose name was not durable;
//! - a writable open published and appended into segment files whose
//!   names an earlier process had not made durable (it failed, or died,
//!   before its directory sync): a power loss then took acknowledged
//!   events with the name;
//! - an open that found the last segment's end invalid while the index
//!   file's durable floor lay in a later segment (so the segment had been
//!   sealed) cut those bytes as a torn tail before refusing the store.
#![cfg(feature = "sim")]

use std::time::Duration;

use annal::io::sim::{Fault, FaultError, OpKind, SimFs};
use annal::{Durability, Error, EventData, ExpectedVersion, Options, Store};

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Sync)
        .with_segment_size_bytes(4096)
}

fn append(store: &Store<SimFs>, stream: &str) -> annal::Result<u64> {
    store
        .append(
            stream,
            ExpectedVersion::Any,
            [EventData::new("E", r#"{"n":"0123456789"}"#)],
        )
        .map(|r| r.last_position)
}

fn fail_next_dir_sync(fs: &SimFs) {
    fs.inject(Fault {
        kind: OpKind::SyncDir,
        nth: 0,
        error: FaultError::Eio,
        sticky: false,
    });
}

/// How many of [`append`]'s events (to a stream of a three-letter name)
/// segment 1 holds before the log rolls over.
fn events_per_first_segment() -> u64 {
    let fs = SimFs::new(1);
    let store = Store::open_with(fs, "/sim/probe", options()).expect("open");
    let mut appended = 0;
    while store.stats().segments == 1 {
        append(&store, "P-1").expect("append");
        appended += 1;
    }
    appended - 1
}

/// A group of two appends, the first still fitting in segment 1 and the
/// second rolling over to segment 2, whose roll-over fails at the
/// directory sync after `2.seg` has its name. The seal synced the first
/// append's batch into segment 1 and segment 2's header names it; the
/// failed group must leave it there, so that the store reopens (with every
/// acknowledged event) instead of being refused as damaged.
#[test]
fn a_roll_over_that_fails_after_the_next_segment_is_named_leaves_a_store_that_reopens() {
    let fit = events_per_first_segment();
    assert!(fit >= 3, "segment 1 holds {fit} events");
    for seed in 0..4 {
        let fs = SimFs::new(seed);
        let store = Store::open_with(fs.clone(), "/sim/store", options()).expect("open");
        // Room left in segment 1 for A's event and one more.
        for _ in 0..fit - 2 {
            append(&store, "W-1").expect("append");
        }
        // The next segment made ahead (past half of segment 1) is ready, so
        // that the sync held next is A's, not the spare's.
        let started = std::time::Instant::now();
        while store.stats().spare_segment_bytes == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "seed {seed}: no spare segment"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // The reopen below loads this index and so has no index save of
        // its own to make the directory durable by the way.
        store.save_index().expect("save index");
        let hold = fs.hold_next_sync();
        let (a, others) = std::thread::scope(|scope| {
            let a = scope.spawn(|| append(&store, "A-1"));
            hold.wait_held();
            let others: Vec<_> = ["B-1", "C-1"]
                .into_iter()
                .map(|s| {
                    let store = &store;
                    scope.spawn(move || append(store, s))
                })
                .collect();
            // Both queue behind A's held sync and form the next group.
            std::thread::sleep(Duration::from_millis(500));
            fail_next_dir_sync(&fs);
            hold.release();
            let a = a.join().expect("A");
            (
                a,
                others
                    .into_iter()
                    .map(|t| t.join().expect("B or C"))
                    .collect::<Vec<_>>(),
            )
        });
        let acknowledged = a.expect("A's append, before the failed group");
        assert_eq!(acknowledged, fit - 1, "seed {seed}");
        assert!(others.iter().all(Result::is_err), "seed {seed}: {others:?}");
        drop(store);

        let reopened = Store::open_with(fs.clone(), "/sim/store", options())
            .unwrap_or_else(|e| panic!("seed {seed}: the store must reopen after a failed roll-over: {e}"));
        assert!(reopened.last_position() >= acknowledged, "seed {seed}");
        assert_eq!(reopened.stream_version("A-1"), Some(1), "seed {seed}");
        assert_eq!(reopened.stream_version("W-1"), Some(fit - 2), "seed {seed}");
        // And it takes appends again, durably: a power loss right after
        // one keeps it (the names of the failed roll-over's segment file
        // were made durable by the reopen before anything went into it).
        append(&reopened, "D-1").expect("append after reopening");
        fs.crash_now();
        let image = fs.image().expect("crashed");
        drop(reopened);
        let after = Store::open_with(SimFs::from_image(&image, seed), "/sim/store", options()).expect("open");
        assert_eq!(
            after.stream_version("D-1"),
            Some(1),
            "seed {seed}: an acknowledged append was lost"
        );
        assert_eq!(after.stream_version("A-1"), Some(1), "seed {seed}");
    }
}

/// The last segment's last batch is damaged and the segment after it is
/// gone (left out of a restore), while the index file records durable data
/// in that later segment: the damaged segment was sealed, its bytes
/// synced. The open refuses the store and changes nothing; before, it cut
/// the damaged batch as a torn tail (zeroed, a copy in `quarantine/`)
/// first, which also changed what the next open reported.
#[test]
fn a_sealed_segment_left_last_is_refused_before_anything_is_cut() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let options = Options::default().with_segment_size_bytes(4096);
    let store = Store::open(&dir, options.clone()).expect("open");
    let mut n = 0;
    while store.stats().segments < 2 {
        store
            .append(
                "Order-1",
                ExpectedVersion::Any,
                [EventData::new("E", r#"{"n":"0123456789"}"#)],
            )
            .expect("append");
        n += 1;
    }
    store.close().expect("close");
    assert!(n > 2);
    let first = dir.join(annal::log::segment::file_name(1));
    let second = dir.join(annal::log::segment::file_name(2));
    let mut bytes = std::fs::read(&first).expect("segment 1");
    // Sealed: the file ends with its last batch; a byte of its payload.
    let at = bytes.len() - 5;
    bytes[at] ^= 0x40;
    std::fs::write(&first, &bytes).expect("damage");
    std::fs::rename(&second, tmp.path().join("aside.seg")).expect("move segment 2 away");

    match Store::open(&dir, options.clone()) {
        Err(Error::Corruption { file, reason, .. }) => {
            assert_eq!(file, first, "{reason}");
            assert!(reason.contains("durable data in segment 2"), "{reason}");
        }
        other => panic!("expected Corruption, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        std::fs::read(&first).expect("segment 1"),
        bytes,
        "the refused open changed segment 1"
    );
    assert!(!dir.join("quarantine").exists(), "the refused open kept a torn tail");
}

/// A store created in directories that did not exist survives a power
/// loss right after its first acknowledged append: the new directories'
/// names are synced before the open returns.
#[test]
fn a_store_created_in_new_directories_survives_a_power_loss() {
    for seed in 0..4 {
        let fs = SimFs::new(seed);
        let store = Store::open_with(fs.clone(), "/sim/apps/orders/events", options()).expect("open");
        let position = append(&store, "Order-1").expect("append");
        fs.crash_now();
        let image = fs.image().expect("crashed");
        drop(store);
        let booted = SimFs::from_image(&image, seed);
        let reopened = Store::open_with(
            booted,
            "/sim/apps/orders/events",
            options().with_create_if_missing(false),
        )
        .unwrap_or_else(|e| panic!("seed {seed}: the store is gone after a power loss: {e}"));
        assert_eq!(reopened.last_position(), position, "seed {seed}");
    }
}

/// The first snapshot save makes the snapshot file (written whole, then
/// renamed into place) and fails at the directory sync. A later save that
/// returns Ok must be durable: its file's name is synced first.
#[test]
fn a_snapshot_saved_after_a_failed_directory_sync_survives_a_power_loss() {
    for seed in 0..4 {
        let fs = SimFs::new(seed);
        let store = Store::open_with(fs.clone(), "/sim/store", options()).expect("open");
        append(&store, "S-1").expect("append");
        fail_next_dir_sync(&fs);
        let failed = store.save_snapshot("S-1", 1, 1, b"first");
        assert!(matches!(failed, Err(Error::Io { .. })), "seed {seed}: {failed:?}");
        append(&store, "S-1").expect("append");
        store.save_snapshot("S-1", 2, 1, b"second").expect("second save");
        fs.crash_now();
        let image = fs.image().expect("crashed");
        drop(store);
        let reopened = Store::open_with(SimFs::from_image(&image, seed), "/sim/store", options()).expect("reopen");
        let load = reopened.load_snapshot("S-1");
        let snapshot = load
            .snapshot
            .unwrap_or_else(|| panic!("seed {seed}: the acknowledged snapshot is gone: {:?}", load.issues));
        assert_eq!(
            (snapshot.version, snapshot.data.as_ref()),
            (2, &b"second"[..]),
            "seed {seed}"
        );
    }
}
