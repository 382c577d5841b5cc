//! A hand-made mutation review of opening, closing and locking a store:
//! `src/io/std_fs.rs` (opens, syncs, renames, directory locks),
//! `src/dir_lock.rs` and `src/held_locks.rs` (one writer, shared read-only
//! opens, the in-process registry behind `Error::Locked`'s
//! `by_this_process`), the open / close / drop / read-only paths of
//! `src/store.rs`, and the temp file, sync, rename and directory sync of
//! `write_atomic_streamed` in `src/io/mod.rs`. Each test pins a documented
//! promise that a mutant broke while every existing test still passed.
//!
//! 60 mutants, each behind an environment variable in one build, run
//! against the suite modules `read_only`, `smoke`, `semantics`,
//! `contract_review`, `bad_input`, `new_api_review`, `app_review`,
//! `spare_segment`, `checkpoints`, `open_mutants_review`, `layout`,
//! `snapshots`, `session_review`, the `io_errors` and `recovery_review`
//! binaries and the lib tests `io::std_fs`; survivors then against
//! `crash_sim`, `kill`, `spare_review`, `subscriptions_review`,
//! `index_mutants_review` and the suite modules `recovery`,
//! `recovery_mutants_review`, `index_file_mutants_review`,
//! `commit_mutants_review`, `group_commit`, `projections`, `backup`,
//! `tools_review`, `tools_mutants_review`, `checkpoint_backup_mutants_review`
//! and `mutation_review`.
//!
//! 44 were caught by existing tests: a read-only open opening files for
//! writing (`recovery_mutants_review`); the directory lock's shared flag
//! inverted, skipped, or a held one taken as free; read-write opens with
//! `O_TRUNC`; `O_NONBLOCK` dropped; the regular-file check and the
//! `EISDIR` mapping removed; `exists` not following links; the lock note
//! not written; a read-only open creating `LOCK`; no retry of a held lock;
//! `by_this_process` wrong four ways; `NotADirectory` not mapped;
//! `create_if_missing` ignored or applied to read-only opens; the no-store
//! check skipped; read-only opens taking the writer's lock, starting the
//! threads or skipping the id window; close not closing the writer or the
//! subscriptions, not removing the spare, not saving the index, syncing
//! and saving on a read-only store; `Drop` not closing; the closed and
//! writable checks and `is_read_only` negated; the index save's read-only,
//! closed and nothing-new checks and its sync of the log removed; the
//! background thread never saving; the empty path and dangling link
//! checks; in `write_atomic_streamed` the `sync_all` skipped or moved
//! after the rename, the directory sync skipped or its error dropped, the
//! temp file left after a failed rename.
//!
//! 7 survived and are killed here: the lock note not cutting a longer
//! lock file; no index save requested after an open that rebuilt the
//! index; a second close running shutdown again; `background_error`
//! always `None`; the background save's error dropped; `Store::sync`
//! syncing a read-only store; the periodic sync thread not started.
//!
//! 9 survivors are equivalent, or show only in a power loss on real
//! hardware: `StdFs::sync_dir` and `StdFile::sync_all` made no-ops; the
//! lock file's exclusive or shared lock taken as free, or the lock file
//! ignored by a read-only open (on Linux the directory's own lock excludes
//! the same holders); `create` instead of `create_new` (every caller
//! removes the name first); the registry pushing a second entry instead of
//! counting (each drop removes one); close ignoring poison (its
//! `sync_tail` refuses with the same `Poisoned`); close skipping its log
//! sync (the index save syncs the log unless the index file already
//! covers the published end, synced when that file was saved).
//!
//! No real bug found.

mod common;
#[cfg(feature = "sim")]
mod sim_support;

#[cfg(feature = "sim")]
use annal::ExpectedVersion;
#[cfg(feature = "sim")]
use annal::io::sim::{Fault, FaultError, OpKind, SimFs};
use annal::{Options, Store};
#[cfg(feature = "sim")]
use common::event;

/// A simulated store of `n` one-event appends to `A-1`, opened with
/// `options`.
#[cfg(feature = "sim")]
fn sim_store(fs: &SimFs, options: Options, n: u64) -> Store<SimFs> {
    let store = Store::open_with(fs.clone(), sim_support::dir(), options).unwrap();
    for i in 0..n {
        store.append("A-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    store
}

/// A full disk for every call of `kind` from now on.
#[cfg(feature = "sim")]
fn disk_full_at(fs: &SimFs, kind: OpKind) {
    fs.inject(Fault {
        kind,
        nth: 0,
        error: FaultError::Enospc,
        sticky: true,
    });
}

/// Whether `r` is the I/O error of a full disk.
#[cfg(feature = "sim")]
fn is_storage_full(r: &annal::Result<()>) -> bool {
    matches!(r, Err(annal::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::StorageFull)
}

/// A close through one clone decides the outcome for every clone: closing
/// another one afterwards repeats that outcome (the full disk's kind
/// kept) and writes nothing (`Store::save_index`: close saves the index
/// file, "and nothing is written after it"), even once space is freed.
#[cfg(feature = "sim")]
#[test]
fn a_second_close_repeats_the_first_outcome_and_writes_nothing() {
    let fs = SimFs::new(21);
    let store = sim_store(&fs, Options::default(), 5);
    let other = store.clone();
    disk_full_at(&fs, OpKind::Rename);
    let first = store.close();
    assert!(is_storage_full(&first), "{first:?}");
    fs.clear_faults();
    let ops = fs.ops();
    let second = other.close();
    assert!(is_storage_full(&second), "{second:?}");
    assert_eq!(fs.ops(), ops, "a close after close wrote");
}

/// An open that had to rebuild the index saves the index file in the
/// background (docs/DESIGN.md, "after an open that had to rebuild"); when
/// that save fails, `Store::background_error` reports it. Closing a
/// clone joins the index thread, so its save has been tried by then.
#[cfg(feature = "sim")]
#[test]
fn a_failed_background_index_save_after_a_rebuild_is_reported() {
    let fs = SimFs::new(31);
    sim_store(&fs, Options::default(), 5).close().unwrap();
    fs.remove_durable(&sim_support::dir().join("index"));
    disk_full_at(&fs, OpKind::Rename);
    let store = Store::open_with(fs.clone(), sim_support::dir(), Options::default()).unwrap();
    assert!(!store.recovery_report().index_loaded);
    let other = store.clone();
    assert!(is_storage_full(&store.close()));
    let error = other.background_error();
    assert!(
        error.as_deref().is_some_and(|e| e.contains("injected ENOSPC")),
        "{error:?}"
    );
}

/// `Store::sync` on a read-only store does nothing (its doc): no call
/// that changes the disk.
#[cfg(feature = "sim")]
#[test]
fn sync_on_a_read_only_store_makes_no_mutating_call() {
    let fs = SimFs::new(41);
    sim_store(&fs, Options::default(), 5).close().unwrap();
    let store = Store::open_with(fs.clone(), sim_support::dir(), Options::default().with_read_only(true)).unwrap();
    let ops = fs.ops();
    store.sync().unwrap();
    store.close().unwrap();
    assert_eq!(fs.ops(), ops, "a read-only sync made a mutating call");
}

/// `Durability::Periodic`: a background thread syncs every interval, so
/// an append becomes durable with no further call. (The interval is a
/// millisecond; the wait, for a loaded machine, up to a minute.)
#[cfg(feature = "sim")]
#[test]
fn the_periodic_mode_syncs_in_the_background() {
    let fs = SimFs::new(61);
    let interval = std::time::Duration::from_millis(1);
    let options = Options::default().with_durability(annal::Durability::Periodic(interval));
    let store = Store::open_with(fs.clone(), sim_support::dir(), options).unwrap();
    let payload = b"periodic-payload";
    store
        .append(
            "A-1",
            ExpectedVersion::Any,
            [annal::EventData::new("E", "periodic-payload")],
        )
        .unwrap();
    let durable = || {
        fs.durable_image()
            .files
            .values()
            .any(|bytes| bytes.windows(payload.len()).any(|w| w == payload))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !durable() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(durable(), "no background sync made the append durable");
    store.close().unwrap();
}

/// The lock file holds the writer's note alone, 40 bytes: a longer lock
/// file (left by another program, or damaged) is cut to it rather than
/// keeping its old tail after the note.
#[test]
fn the_lock_note_replaces_a_longer_lock_file() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("store");
    Store::open(&path, Options::default()).unwrap().close().unwrap();
    let lock = path.join(annal::LOCK_FILE_NAME);
    std::fs::write(&lock, "x".repeat(100)).unwrap();
    let store = Store::open(&path, Options::default()).unwrap();
    let note = String::from_utf8(std::fs::read(&lock).unwrap()).unwrap();
    assert_eq!(note.len(), 40, "{note:?}");
    assert_eq!(
        note.trim_end(),
        format!("annal store lock, pid {}", std::process::id()),
        "{note:?}"
    );
    store.close().unwrap();
}
