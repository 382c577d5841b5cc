//! I/O errors injected at every call site of a workload: each write, sync,
//! allocation, rename, file creation, removal, directory sync, read and
//! opening of a file, one at a time, with EIO (once) and ENOSPC (from then
//! on, as a full disk).
//! (`tests/read_errors.rs` fails the reads of opening a populated store.)
//!
//! For each injection point:
//! - the caller gets a clear error naming what failed;
//! - once an append fails with an I/O error, the store accepts no more
//!   appends until reopened (fail-stop: a failed fsync is never retried
//!   and reported as success);
//! - nothing acknowledged is lost, whether the machine then loses power
//!   (only synced bytes survive) or the fault clears (space freed) and the
//!   store is reopened;
//! - after the fault clears, the reopened store takes appends again.
#![cfg(feature = "sim")]

mod sim_support;

use std::time::Duration;

use annal::io::sim::{Fault, FaultError, OpKind, SimFs, SimRng};
use annal::{Durability, Error, EventData, ExpectedVersion, Options, Store, StreamAppend};
use sim_support::{
    Ledger, check, check_side_files, dir, record_attempt_into, snapshot_bytes, tiny_sync_options as options,
};

/// What the workload saw.
#[derive(Default)]
struct Outcome {
    /// The first error an append or index save returned, as text.
    first_error: Option<String>,
}

/// A deterministic workload: appends with rollovers and index saves. Stops
/// at the first append that fails with an I/O error, after checking that
/// the store then refuses further appends.
fn workload(store: &Store<SimFs>, ledger: &mut Ledger) -> Outcome {
    let mut rng = SimRng::new(7);
    let mut outcome = Outcome::default();
    for i in 0..30u64 {
        if i % 8 == 7 {
            if let Err(e) = store.save_index() {
                outcome.first_error.get_or_insert(e.to_string());
            }
            continue;
        }
        if i % 8 == 5 {
            // A checkpoint and a snapshot, so that their files' call sites
            // are injected too.
            let position = store.last_position();
            ledger
                .checkpoints_attempted
                .entry("p".into())
                .or_default()
                .insert(position);
            match store.checkpoints().save("p", position) {
                Ok(()) => {
                    ledger.checkpoints_acked.insert("p".into(), position);
                }
                Err(e) => {
                    outcome.first_error.get_or_insert(e.to_string());
                }
            }
            if let Some(version) = store.stream_version("Account-1") {
                match store.save_snapshot("Account-1", version, 1, &snapshot_bytes("Account-1", version)) {
                    Ok(()) => {
                        ledger.snapshots_acked.insert("Account-1".into(), version);
                    }
                    Err(e) => {
                        outcome.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            continue;
        }
        let stream = format!("Account-{}", i % 4);
        let events: Vec<EventData> = (0..1 + rng.below(4))
            .map(|k| {
                let len = 100 + rng.below(900) as usize;
                EventData::new("Deposited", vec![(i + k) as u8; len])
            })
            .collect();
        let batch = [StreamAppend::new(stream.clone(), ExpectedVersion::Any, events)];
        record_attempt_into(ledger, &batch);
        match store.append_multi(&batch) {
            Ok(r) => {
                for (k, e) in batch[0].events.iter().enumerate() {
                    let k = k as u64;
                    ledger.acked.insert(
                        e.id(),
                        (stream.clone(), r[0].first_version + k, r[0].first_position + k),
                    );
                }
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::Io { .. } | Error::Poisoned(_)),
                    "an injected fault surfaced as {e:?}"
                );
                outcome.first_error.get_or_insert(e.to_string());
                // Fail-stop: no append gets through any more.
                let retry = store.append("Account-9", ExpectedVersion::Any, [EventData::new("Late", "x")]);
                assert!(
                    matches!(retry, Err(Error::Poisoned(_))),
                    "the store accepted an append after a failed write or sync: {retry:?}"
                );
                return outcome;
            }
        }
    }
    outcome
}

/// Runs the workload with one fault; checks the outcome.
fn run(fault: Option<Fault>) -> Option<String> {
    let fs = SimFs::new(1);
    if let Some(fault) = fault {
        fs.inject(fault);
    }
    let mut ledger = Ledger::default();
    let error = match Store::open_with(fs.clone(), dir(), options()) {
        Ok(store) => {
            let error = workload(&store, &mut ledger).first_error;
            // Power loss now: only what was synced survives.
            let image = fs.durable_image();
            drop(store);
            if image.dirs.contains(&dir()) && image.files.keys().any(|p| p.extension().is_some_and(|x| x == "seg")) {
                let crashed = SimFs::from_image(&image, 2);
                let store = Store::open_with(crashed, dir(), options())
                    .unwrap_or_else(|e| panic!("reopen after a fault and a power loss failed: {e}"));
                check(&store, &ledger);
                check_side_files(&store, &ledger);
            }
            error
        }
        Err(e) => {
            assert!(matches!(e, Error::Io { .. }), "open failed with {e:?}");
            Some(e.to_string())
        }
    };
    // The fault clears (space is freed); the store reopens, keeps every
    // acknowledged event, and takes appends again.
    fs.clear_faults();
    let store =
        Store::open_with(fs.clone(), dir(), options()).unwrap_or_else(|e| panic!("reopen after the fault failed: {e}"));
    check(&store, &ledger);
    check_side_files(&store, &ledger);
    let r = store
        .append("After-1", ExpectedVersion::NoStream, [EventData::new("Fine", "{}")])
        .unwrap_or_else(|e| panic!("append after recovery failed: {e}"));
    assert_eq!(r.first_version, 1);
    store.close().unwrap_or_else(|e| panic!("close failed: {e}"));
    error
}

#[test]
fn every_io_error_is_reported_fails_stop_and_loses_nothing() {
    // Count the calls of each kind the workload makes.
    let counter = SimFs::new(1);
    {
        let store = Store::open_with(counter.clone(), dir(), options()).expect("open");
        let mut ledger = Ledger::default();
        assert!(workload(&store, &mut ledger).first_error.is_none());
        assert!(ledger.acked.len() > 40);
        store.close().expect("close");
    }
    let mut points = 0;
    for kind in OpKind::ALL {
        let calls = counter.count(kind);
        for nth in 0..calls {
            for (error, sticky) in [(FaultError::Eio, false), (FaultError::Enospc, true)] {
                let fault = Fault {
                    kind,
                    nth,
                    error,
                    sticky,
                };
                let seen = std::panic::catch_unwind(|| run(Some(fault)))
                    .unwrap_or_else(|_| panic!("failed with fault {fault:?}"));
                // A fault the workload ran into was reported clearly: it
                // names the injected cause.
                if let Some(message) = seen {
                    assert!(message.contains("injected"), "unclear error for {fault:?}: {message}");
                }
                points += 1;
            }
        }
    }
    assert!(points > 200, "only {points} injection points");
    eprintln!("{points} injection points passed");
}

#[test]
fn a_failed_sync_is_never_retried_into_success() {
    // The PostgreSQL fsync lesson: after a failed sync the data may be
    // gone from the page cache's point of view, so the store must not
    // report a later append (whose sync would succeed) as durable while
    // the failed one's bytes were lost.
    let fs = SimFs::new(3);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    store
        .append("A-1", ExpectedVersion::Any, [EventData::new("E", "1")])
        .expect("append");
    fail_next_sync(&fs, false);
    let err = store
        .append("A-1", ExpectedVersion::Any, [EventData::new("E", "2")])
        .unwrap_err();
    assert!(err.to_string().contains("injected EIO"), "{err}");
    // The next sync would succeed, but the store refuses to try.
    let err = store
        .append("A-1", ExpectedVersion::Any, [EventData::new("E", "3")])
        .unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err:?}");
    // Reads still work.
    assert_eq!(store.stream_version("A-1"), Some(1));
    drop(store);
    let store = Store::open_with(fs, dir(), options()).expect("reopen");
    store
        .append("A-1", ExpectedVersion::Any, [EventData::new("E", "4")])
        .expect("append after reopen");
}

/// After a failed sync, nothing may report the log durable: not
/// `Store::sync`, not a snapshot or checkpoint save (each syncs the log
/// first in this mode, and later opens take a saved one as proof that the
/// log was durable that far).
#[test]
fn a_store_poisoned_by_a_failed_sync_confirms_nothing_durable() {
    // A long period: only the explicit syncs below run.
    for durability in [Durability::Buffered, Durability::Periodic(Duration::from_secs(3600))] {
        let opts = options().with_durability(durability);
        let fs = SimFs::new(5);
        let store = Store::open_with(fs.clone(), dir(), opts).expect("open");
        store
            .append("A-1", ExpectedVersion::Any, [EventData::new("E", "1")])
            .expect("append");
        fail_next_sync(&fs, false);
        assert!(store.sync().is_err(), "the failed sync itself ({durability:?})");
        // The next sync would succeed: the store must not try it.
        assert!(matches!(store.sync(), Err(Error::Poisoned(_))));
        assert!(matches!(
            store.save_snapshot("A-1", 1, 1, b"state"),
            Err(Error::Poisoned(_))
        ));
        assert!(matches!(store.checkpoints().save("c", 1), Err(Error::Poisoned(_))));
    }
}

/// In the non-durable modes a sync runs without holding up appends, one
/// sync at a time. A second sync that comes while a failed one has not
/// yet returned must wait for it, and then refuse (the store is
/// poisoned), never report success by syncing again.
#[test]
fn a_sync_racing_a_failed_sync_is_refused() {
    for durability in [Durability::Buffered, Durability::Periodic(Duration::from_secs(3600))] {
        let fs = SimFs::new(21);
        let store = Store::open_with(fs.clone(), dir(), options().with_durability(durability)).expect("open");
        store
            .append("A-1", ExpectedVersion::Any, [EventData::new("E", "1")])
            .expect("append");
        fail_next_sync(&fs, false);
        let hold = fs.hold_next_sync();
        let first = {
            let store = store.clone();
            std::thread::spawn(move || store.sync())
        };
        hold.wait_held();
        let second = {
            let store = store.clone();
            std::thread::spawn(move || store.sync())
        };
        // The second sync is waiting (or would have synced by now).
        std::thread::sleep(Duration::from_millis(50));
        hold.release();
        let (first, second) = (first.join().expect("first"), second.join().expect("second"));
        assert!(first.is_err(), "{durability:?}: the failed sync");
        assert!(matches!(second, Err(Error::Poisoned(_))), "{durability:?}: {second:?}");
    }
}

/// A sync covers what was published when it began, not what was appended
/// while it ran: a checkpoint saved afterwards at such an append's
/// position must sync the log itself, so that a power loss never leaves a
/// checkpoint past the log.
#[test]
fn a_sync_does_not_cover_an_append_made_while_it_ran() {
    for durability in [Durability::Buffered, Durability::Periodic(Duration::from_secs(3600))] {
        for seed in 0..10 {
            let fs = SimFs::new(seed);
            let opts = options().with_durability(durability);
            let store = Store::open_with(fs.clone(), dir(), opts.clone()).expect("open");
            store
                .append("A-1", ExpectedVersion::Any, [EventData::new("E", "1")])
                .expect("append");
            let hold = fs.hold_next_sync();
            let sync = {
                let store = store.clone();
                std::thread::spawn(move || store.sync())
            };
            hold.wait_held();
            // The sync's work is done; it has not returned yet.
            let during = store
                .append("A-1", ExpectedVersion::Any, [EventData::new("E", "2")])
                .expect("append during the sync");
            hold.release();
            sync.join().expect("sync thread").expect("sync");
            store.checkpoints().save("c", during.last_position).expect("checkpoint");
            fs.crash_now();
            let image = fs.image().expect("crashed");
            drop(store);
            let reopened = Store::open_with(SimFs::from_image(&image, seed), dir(), opts).expect("reopen");
            assert_eq!(
                reopened.last_position(),
                during.last_position,
                "{durability:?}, seed {seed}: the checkpointed append"
            );
            assert_eq!(
                reopened.checkpoints().load("c").expect("load"),
                Some(during.last_position)
            );
        }
    }
}

/// An index save that returned Ok survives a power loss right after it
/// (the next open loads it), and one that failed leaves no temporary file
/// behind (a full disk gets its space back at once).
#[test]
fn index_saves_are_durable_when_they_return_and_leave_nothing_when_they_fail() {
    let fs = SimFs::new(3);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    for i in 0..20 {
        store
            .append(
                &format!("s-{}", i % 3),
                ExpectedVersion::Any,
                [EventData::new("E", "x")],
            )
            .expect("append");
    }
    store.save_index().expect("save index");
    let after_save = Store::open_with(SimFs::from_image(&fs.durable_image(), 3), dir(), options()).expect("reopen");
    assert!(
        after_save.recovery_report().index_loaded,
        "{:?}",
        after_save.recovery_report()
    );
    assert_eq!(after_save.recovery_report().replayed_events, 0);
    drop(after_save);

    store
        .append("s-0", ExpectedVersion::Any, [EventData::new("E", "y")])
        .expect("append");
    fs.inject(Fault {
        kind: OpKind::Write,
        nth: 0,
        error: FaultError::Enospc,
        sticky: true,
    });
    assert!(store.save_index().is_err());
    let leftovers: Vec<_> = fs
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// In the non-durable modes the writer starts the write-back of every
/// 8 MiB written. A write-back that fails in that call (on Linux, a failed
/// delayed allocation: the pages are dropped and only that call hears of
/// it) is a failed write: the append fails, and the store is poisoned, so
/// no later sync can report the lost data durable.
#[test]
fn a_failed_write_back_fails_the_append_and_poisons_the_store() {
    for durability in [Durability::Buffered, Durability::Periodic(Duration::from_secs(3600))] {
        let fs = SimFs::new(11);
        let opts = Options::default().with_durability(durability);
        let store = Store::open_with(fs.clone(), dir(), opts).expect("open");
        fs.inject(Fault {
            kind: OpKind::Writeback,
            nth: 0,
            error: FaultError::Eio,
            sticky: false,
        });
        let data = vec![b'x'; 64 * 1024];
        let mut failed_at = None;
        // 8 MiB is 128 such events: the first write-back comes before 200.
        for i in 0..200 {
            if let Err(e) = store.append("Blob-1", ExpectedVersion::Any, [EventData::new("Blob", data.clone())]) {
                assert!(matches!(e, Error::Io { .. }), "{durability:?}: {e}");
                failed_at = Some(i);
                break;
            }
        }
        assert!(failed_at.is_some(), "{durability:?}: no append failed");
        assert_eq!(fs.count(OpKind::Writeback), 1, "{durability:?}");
        assert!(matches!(
            store.append("Blob-1", ExpectedVersion::Any, [EventData::new("Blob", "later")]),
            Err(Error::Poisoned(_))
        ));
        assert!(matches!(store.sync(), Err(Error::Poisoned(_))), "{durability:?}");
    }
}

/// A batch whose sync failed stays in the page cache, while the failed
/// write-back has left its pages clean (as Linux does, and the simulated
/// disk too): a later sync succeeds without writing them. The writer
/// overwrites the failed group's bytes with zeros, so the next open ends
/// the log before them and a retry of the append writes it anew, synced;
/// an open that published those bytes would acknowledge the retry from
/// events no sync wrote. A snapshot saved of the retried event is taken
/// as proof by later opens. Whatever a power loss then keeps, every reopen
/// succeeds and holds what was acknowledged.
#[test]
fn events_recovered_from_the_page_cache_are_synced_before_anything_counts_on_them() {
    for seed in 0..40 {
        page_cache_round(seed, |fs| fail_next_sync(fs, true), SimFs::clear_faults, 3);
    }
}

/// A process killed between its write and its sync leaves the batch in the
/// page cache, its pages still dirty, and the next open reads it back. That
/// open must make it durable before anything counts on it: in durable
/// mode, a retry of the append is acknowledged from it, and a snapshot
/// saved of it is taken as proof by later opens. Whatever a power loss
/// then keeps, every reopen succeeds and holds what was acknowledged.
#[test]
fn events_a_killed_process_left_in_the_page_cache_are_synced_before_anything_counts_on_them() {
    for seed in 0..40 {
        page_cache_round(seed, |fs| fs.kill_process_at_next(OpKind::Sync), SimFs::revive, 4);
    }
}

/// Three appends and an index save; a fourth append that `stop` makes
/// fail before its sync returns, never acknowledged; `resume`, and a
/// reopen on the same machine, which must find `found` events in the
/// stream. Then the client retries the fourth append (acknowledged, as
/// the one found or written anew), saves a snapshot of it, and the power
/// is cut: the next open must succeed and hold both.
fn page_cache_round(seed: u64, stop: impl Fn(&SimFs), resume: impl Fn(&SimFs), found: u64) {
    let fs = SimFs::new(seed);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    for i in 0..3 {
        store
            .append("s-1", ExpectedVersion::Any, [EventData::new("E", format!("{i}"))])
            .expect("append");
    }
    store.save_index().expect("save index");
    let fourth = EventData::new("E", "3");
    stop(&fs);
    assert!(store.append("s-1", ExpectedVersion::Any, [fourth.clone()]).is_err());
    drop(store);
    resume(&fs);

    let store = Store::open_with(fs.clone(), dir(), options()).expect("reopen");
    assert_eq!(
        store.stream_version("s-1"),
        Some(found),
        "seed {seed}: events found in the page cache"
    );
    let retried = store.append("s-1", ExpectedVersion::Any, [fourth]).expect("retry");
    assert_eq!(retried.last_version, 4, "seed {seed}");
    store.save_snapshot("s-1", 4, 1, b"state at 4").expect("snapshot");
    fs.crash_now();
    drop(store);

    let after = SimFs::from_image(&fs.image().expect("image"), seed);
    let store = Store::open_with(after, dir(), options())
        .unwrap_or_else(|e| panic!("seed {seed}: reopen after the power loss failed: {e}"));
    assert_eq!(
        store.stream_version("s-1"),
        Some(4),
        "seed {seed}: acknowledged retry lost"
    );
    assert_eq!(
        store.load_snapshot("s-1").snapshot.map(|s| s.version),
        Some(4),
        "seed {seed}"
    );
}

/// Makes the next sync fail with EIO (and every later one, when `sticky`).
fn fail_next_sync(fs: &SimFs, sticky: bool) {
    fs.inject(Fault {
        kind: OpKind::Sync,
        nth: 0,
        error: FaultError::Eio,
        sticky,
    });
}

/// From now on every write finds the disk full.
fn fill_disk(fs: &SimFs) {
    fs.inject(Fault {
        kind: OpKind::Write,
        nth: 0,
        error: FaultError::Enospc,
        sticky: true,
    });
}

/// A close whose index save finds the disk full says so (an I/O error of
/// kind `StorageFull`), not that the store was poisoned: the appends were
/// acknowledged and are durable, and the next open refreshes the index.
#[test]
fn a_close_that_cannot_save_the_index_reports_the_io_error() {
    let fs = SimFs::new(5);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    for i in 0..3 {
        store
            .append("A-1", ExpectedVersion::Any, [EventData::new("E", format!("{i}"))])
            .expect("append");
    }
    fill_disk(&fs);
    match store.close() {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull),
        other => panic!("expected the index save's I/O error, got {other:?}"),
    }
    fs.clear_faults();
    let store = Store::open_with(fs, dir(), options()).expect("reopen");
    assert_eq!(store.stream_version("A-1"), Some(3));
}

#[test]
fn a_full_disk_refuses_appends_and_recovers_after_space_is_freed() {
    let fs = SimFs::new(4);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    let before = store
        .append("A-1", ExpectedVersion::Any, [EventData::new("E", "1")])
        .expect("append");
    fill_disk(&fs);
    let big = EventData::new("E", vec![7u8; 2000]);
    let err = store
        .append("A-1", ExpectedVersion::Exact(1), [big.clone()])
        .unwrap_err();
    match &err {
        Error::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    // The failed append is not counted as written.
    let stats = store.stats();
    assert_eq!((stats.appends_written, stats.group_commits), (1, 1));
    drop(store);
    // Still full: reopening works (nothing needs writing) or fails clearly.
    if let Err(e) = Store::open_with(fs.clone(), dir(), options()) {
        assert!(e.to_string().contains("ENOSPC"), "{e}");
    }
    fs.clear_faults();
    let store = Store::open_with(fs, dir(), options()).expect("reopen after freeing space");
    assert_eq!(before.last_version, 1);
    // A failed append's outcome is unknown (its bytes may have reached the
    // disk whole); the documented remedy is to retry it with the same
    // event ids, which writes it once either way.
    let retried = store.append("A-1", ExpectedVersion::Exact(1), [big]).expect("retry");
    assert_eq!((retried.first_version, store.stream_version("A-1")), (2, Some(2)));
    let e = store
        .read_position(retried.first_position)
        .expect("read")
        .expect("event");
    assert_eq!(e.data(), &[7u8; 2000][..]);
}
