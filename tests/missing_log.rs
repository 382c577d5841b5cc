//! A store whose segment files are all gone (deleted, or left behind by a
//! restore that copied the rest) while its index, checkpoints or snapshots
//! file is still there: every open, read-only or writable, and every CLI
//! command refuses it as damage naming the missing first segment, and
//! creates nothing. Before, a writable open took the directory for one
//! without a store and started a new, empty one beside the old files.
//! Files of those names (or a `LOCK` file) that are another program's make
//! no store, and no store is created over them.
#![cfg(feature = "cli")]

mod cli_support;
mod common;

use std::fs;
use std::path::Path;

use annal::{Error, ExpectedVersion, Options, Store};
use cli_support::*;
use common::files::{listing, store_with_side_files};
use common::*;

const SIDE_FILES: [&str; 3] = ["index", "checkpoints", "snapshots"];

fn assert_missing_log(err: Option<Error>, dir: &Path, kept: &[&str], what: &str) {
    match err {
        Some(Error::Corruption { file, reason, .. }) => {
            assert_eq!(file, dir.join(annal::log::segment::file_name(1)), "{what}");
            assert!(reason.contains("no segment file"), "{what}: {reason}");
            for name in kept {
                assert!(reason.contains(name), "{what}: {reason} does not name {name}");
            }
        }
        other => panic!("{what}: expected Corruption naming the missing segment, got {other:?}"),
    }
}

#[test]
fn opens_refuse_a_store_whose_segments_are_all_gone_and_create_nothing() {
    // Each side file alone, and all three.
    let cases: Vec<Vec<&str>> = vec![
        vec!["index"],
        vec!["checkpoints"],
        vec!["snapshots"],
        SIDE_FILES.to_vec(),
    ];
    for kept in cases {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("s");
        store_with_side_files(&store_dir);
        let segment = store_dir.join(annal::log::segment::file_name(1));
        let saved_segment = fs::read(&segment).unwrap();
        fs::remove_file(&segment).unwrap();
        for name in SIDE_FILES.iter().filter(|n| !kept.contains(n)) {
            fs::remove_file(store_dir.join(name)).unwrap();
        }
        let before = listing(&store_dir);
        let what = format!("{kept:?} kept");
        assert!(annal::tools::log_missing(&store_dir), "{what}");
        for options in [
            Options::default(),
            Options::default().with_create_if_missing(false),
            Options::default().with_read_only(true),
        ] {
            let err = Store::open(&store_dir, options.clone()).err();
            assert_missing_log(err, &store_dir, &kept, &format!("{what}, {options:?}"));
            assert_eq!(
                listing(&store_dir),
                before,
                "{what}, {options:?}: the open changed the directory"
            );
        }
        // The segment restored, the store opens with everything.
        fs::write(&segment, &saved_segment).unwrap();
        let store = Store::open(&store_dir, Options::default()).unwrap();
        assert_eq!(store.last_position(), 20, "{what}");
        assert_eq!(all(&store).len(), 20, "{what}");
        store.close().unwrap();
    }
}

#[test]
fn a_directory_with_only_a_lock_file_is_still_one_without_a_store() {
    // A store's first open takes its lock before it creates segment 1: a
    // crash in between leaves only `LOCK`, and the next open creates it.
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    fs::create_dir(&store_dir).unwrap();
    fs::write(store_dir.join("LOCK"), b"").unwrap();
    let err = Store::open(&store_dir, Options::default().with_read_only(true)).err();
    assert!(
        matches!(&err, Some(Error::InvalidInput(m)) if m.contains("no annal store")),
        "{err:?}"
    );
    let store = Store::open(&store_dir, Options::default()).unwrap();
    store
        .append("Order-1", ExpectedVersion::NoStream, [event("E", 1)])
        .unwrap();
    store.close().unwrap();
}

/// Files of those names that are not a store's (another program's
/// `checkpoints` folder, an `index` file of other bytes) do not make a
/// directory a store with its log missing: reads say there is no store.
/// Nor is a store created over them (it would rename its own files over
/// them): writable opens and the CLI's writing commands refuse the
/// directory, change nothing, and create the store once they are moved
/// away.
#[test]
fn other_programs_files_of_those_names_are_no_store_and_are_not_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    fs::create_dir_all(store_dir.join("checkpoints")).unwrap();
    fs::write(store_dir.join("checkpoints").join("mine"), b"kept").unwrap();
    fs::write(store_dir.join("index"), b"<html>an index of something else</html>").unwrap();
    fs::write(store_dir.join("snapshots"), b"ANNAL").unwrap();
    assert!(!annal::tools::log_missing(&store_dir));
    let err = Store::open(&store_dir, Options::default().with_read_only(true)).err();
    assert!(
        matches!(&err, Some(Error::InvalidInput(m)) if m.contains("no annal store")),
        "{err:?}"
    );
    let before = listing(&store_dir);
    let err = Store::open(&store_dir, Options::default()).err();
    match &err {
        Some(Error::InvalidInput(m)) => {
            for name in ["`index`", "`checkpoints`", "`snapshots`", "none is created"] {
                assert!(m.contains(name), "{m} does not say {name}");
            }
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_eq!(listing(&store_dir), before, "a refused open changed the directory");
    let d = s(&store_dir);
    let o = run(&["read", d, "Order-1"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("no annal store"), "{}", stderr(&o));
    for expected in ["exists", "no-stream"] {
        let o = run(&["append", d, "Order-1", "E", "--data", "{}", "--expected", expected]);
        assert_ne!(code(&o), 0, "{expected}: {}", stderr(&o));
    }
    let o = run_with_stdin(&["import", d], "{\"stream\":\"Order-1\",\"type\":\"E\",\"data\":{}}\n");
    assert_eq!(code(&o), 1, "import: {}", stderr(&o));
    assert!(stderr(&o).contains("none is created"), "{}", stderr(&o));
    assert_eq!(listing(&store_dir), before, "a refused command changed the directory");
    assert_eq!(
        fs::read(store_dir.join("index")).unwrap(),
        b"<html>an index of something else</html>"
    );
    assert_eq!(fs::read(store_dir.join("snapshots")).unwrap(), b"ANNAL");
    assert_eq!(fs::read(store_dir.join("checkpoints").join("mine")).unwrap(), b"kept");
    // Moved away, the directory starts a store.
    for name in SIDE_FILES {
        fs::rename(store_dir.join(name), dir.path().join(name)).unwrap();
    }
    let o = run(&["append", d, "Order-1", "E", "--data", "{}", "--expected", "no-stream"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(store_dir.join(annal::log::segment::file_name(1)).exists());
}

/// Another program's `LOCK` file (of other bytes) would be cut and written
/// over by the store's lock note, and a file named like a side file's
/// temporary (`index.tmp`) removed: no store is created over them. An empty
/// one, or one holding the store's note (a first open stopped before it
/// created the log), is the store's own.
#[test]
fn another_programs_lock_or_temporary_file_is_not_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    fs::create_dir(&store_dir).unwrap();
    fs::write(store_dir.join("LOCK"), b"12345\n").unwrap();
    let err = Store::open(&store_dir, Options::default()).err();
    assert!(
        matches!(&err, Some(Error::InvalidInput(m)) if m.contains("`LOCK`") && m.contains("none is created")),
        "{err:?}"
    );
    let o = run(&["append", s(&store_dir), "Order-1", "E", "--data", "{}"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(fs::read(store_dir.join("LOCK")).unwrap(), b"12345\n");
    assert_eq!(listing(&store_dir), vec!["LOCK".to_string()]);
    // Nor over a file named like a side file's temporary file that holds
    // another program's bytes, which open would remove as its own.
    fs::remove_file(store_dir.join("LOCK")).unwrap();
    let theirs = b"another program's temporary file".to_vec();
    fs::write(store_dir.join("index.tmp"), &theirs).unwrap();
    let err = Store::open(&store_dir, Options::default()).err();
    assert!(
        matches!(&err, Some(Error::InvalidInput(m)) if m.contains("`index.tmp`")),
        "{err:?}"
    );
    assert_eq!(fs::read(store_dir.join("index.tmp")).unwrap(), theirs);
    assert_eq!(listing(&store_dir), vec!["index.tmp".to_string()]);
    // One a store could have left (its magic, or shorter) is removed.
    fs::write(store_dir.join("index.tmp"), b"ANNALIDX and more").unwrap();
    fs::write(store_dir.join("checkpoints.tmp"), b"ANN").unwrap();
    fs::write(store_dir.join("LOCK"), b"annal store lock, pid 7\n").unwrap();
    let store = Store::open(&store_dir, Options::default()).unwrap();
    store
        .append("Order-1", ExpectedVersion::NoStream, [event("E", 1)])
        .unwrap();
    store.close().unwrap();
    assert!(!store_dir.join("index.tmp").exists() && !store_dir.join("checkpoints.tmp").exists());
    // A store that exists keeps opening whatever its lock file holds.
    fs::write(store_dir.join("LOCK"), b"12345\n").unwrap();
    let store = Store::open(&store_dir, Options::default()).unwrap();
    assert_eq!(store.last_position(), 1);
    store.close().unwrap();
}

#[test]
fn every_cli_command_refuses_a_store_whose_segments_are_all_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    store_with_side_files(&store_dir);
    fs::remove_file(store_dir.join(annal::log::segment::file_name(1))).unwrap();
    let d = s(&store_dir);
    let before = listing(&store_dir);
    let backup = dir.path().join("backup");
    let b = s(&backup);
    let commands: Vec<Vec<&str>> = vec![
        vec!["read", d, "Order-1"],
        vec!["read-all", d],
        vec!["streams", d],
        vec!["stats", d],
        vec!["export", d],
        vec!["verify", d],
        vec!["backup", d, b],
        vec!["repair", d],
        vec!["append", d, "Order-1", "E", "--data", "{}"],
        vec!["append", d, "Order-1", "E", "--data", "{}", "--expected", "exists"],
    ];
    for args in &commands {
        let o = run(args);
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("00000000000000000001.seg") && err.contains("no segment file"),
            "{args:?}: {err}"
        );
        assert_eq!(listing(&store_dir), before, "{args:?} changed the directory");
    }
    let o = run_with_stdin(&["import", d], "{\"stream\":\"Order-1\",\"type\":\"E\",\"data\":{}}\n");
    assert_eq!(code(&o), 4, "import: {}", stderr(&o));
    assert_eq!(listing(&store_dir), before, "import changed the directory");
    assert!(!backup.exists());
    // Once the old store's files are moved away, the directory starts a
    // new store, as the message says.
    let old = dir.path().join("old");
    fs::create_dir(&old).unwrap();
    for name in SIDE_FILES {
        fs::rename(store_dir.join(name), old.join(name)).unwrap();
    }
    let o = run(&["append", d, "Order-1", "E", "--data", "{}", "--expected", "no-stream"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}
