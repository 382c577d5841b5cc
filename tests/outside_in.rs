//! An outside-in review of the CLI against its documented contract, by a
//! new user who reads README.md and docs/CLI.md and tries what they
//! promise. Each test here failed when it was written; each names the
//! sentence of the docs it holds the tool to.
//!
//! - CLI.md, "Store creation": a directory that holds no segment file but a
//!   store's `index`, `checkpoints` or `snapshots` file is refused as
//!   damage by every command, `append` and `import` included, which
//!   "changes nothing". A writable open creates a `LOCK` file there, and
//!   removes the store's temporary files, before it finds that the log is
//!   missing.
//! - CLI.md, "Store creation": a directory holding another program's file
//!   named `index` or `checkpoints` (one that does not start with the
//!   store's magic) "does not count" and a store is created there. The
//!   creation overwrites the other program's `index` file, and the new
//!   store fails `verify` at once because of the other program's
//!   `checkpoints` file.
#![cfg(feature = "cli")]

mod cli_support;
mod common;

use std::fs;
use std::path::Path;

use annal::{ExpectedVersion, Options, Store};
use cli_support::*;
use common::*;

/// A closed store of 20 events in `dir` with all three side files.
fn build(dir: &Path) {
    let store = Store::open(dir, Options::default()).unwrap();
    for i in 0..20 {
        store.append("Order-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    store.checkpoints().save("reader", 15).unwrap();
    store.save_snapshot("Order-1", 10, 1, b"state").unwrap();
    store.close().unwrap();
}

/// The directory's file names, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file under `dir`, recursively, with its bytes.
fn all_file_bytes(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_file_bytes(&path));
        } else {
            out.push((path.clone(), fs::read(&path).unwrap()));
        }
    }
    out
}

/// CLI.md: a store whose log is missing is refused by `append` and
/// `import` "as damage (exit code 4 ...) and changes nothing". Restored
/// from a copy that left out the segments (and `LOCK`, which only a store
/// opened for writing has), the directory gets a `LOCK` file from the
/// refused command.
#[test]
fn a_refused_append_to_a_store_whose_log_is_missing_creates_no_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    build(&store_dir);
    fs::remove_file(store_dir.join(annal::log::segment::file_name(1))).unwrap();
    fs::remove_file(store_dir.join("LOCK")).unwrap();
    let before = listing(&store_dir);
    let d = s(&store_dir);
    let o = run(&["append", d, "Order-1", "E", "--data", "{}"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert_eq!(listing(&store_dir), before, "append changed the directory");
    let o = run_with_stdin(&["import", d], "{\"stream\":\"Order-1\",\"type\":\"E\"}\n");
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert_eq!(listing(&store_dir), before, "import changed the directory");
}

/// The same promise with temporary files of the store beside the side
/// files (a checkpoint or snapshot save, or an index save, stopped by a
/// crash): the refused command deletes them before it finds the log
/// missing.
#[test]
fn a_refused_append_to_a_store_whose_log_is_missing_removes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    build(&store_dir);
    fs::remove_file(store_dir.join(annal::log::segment::file_name(1))).unwrap();
    for name in ["checkpoints.tmp", "snapshots.tmp", "index.tmp"] {
        fs::write(store_dir.join(name), b"a save stopped half-way").unwrap();
    }
    let before = listing(&store_dir);
    let d = s(&store_dir);
    let o = run(&["append", d, "Order-1", "E", "--data", "{}"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("no segment file"), "{}", stderr(&o));
    assert_eq!(listing(&store_dir), before, "a refused append changed the directory");
}

/// CLI.md: another program's file named `index` "does not count", and
/// `append` creates a store in that directory. Creating it must not
/// destroy the other program's file: either the append is refused, or the
/// file's bytes are still somewhere in the directory. The store's first
/// index save renames its own `index` over it.
#[test]
fn creating_a_store_keeps_another_programs_index_file() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    fs::create_dir(&store_dir).unwrap();
    let theirs = b"<html>an index of something else</html>".to_vec();
    fs::write(store_dir.join("index"), &theirs).unwrap();
    assert!(!annal::tools::log_missing(&store_dir));
    let o = run(&["append", s(&store_dir), "Order-1", "E", "--data", "{}"]);
    if code(&o) == 0 {
        let kept = all_file_bytes(&store_dir).into_iter().any(|(_, bytes)| bytes == theirs);
        assert!(
            kept,
            "the store was created and the other program's index file is gone: {:?}",
            listing(&store_dir)
        );
    }
}

/// CLI.md: another program's `checkpoints` file "does not count" and a
/// store is created beside it. A store that `annal` has just created, with
/// one event appended, must then verify clean (or not have been created):
/// instead `verify` reports corruption in the other program's file, exit
/// code 4, and every consumer that loads a checkpoint fails.
#[test]
fn a_store_created_beside_another_programs_checkpoints_file_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    fs::create_dir(&store_dir).unwrap();
    fs::write(store_dir.join("checkpoints"), b"page 1\npage 2\n").unwrap();
    assert!(!annal::tools::log_missing(&store_dir));
    let d = s(&store_dir);
    let o = run(&["append", d, "Order-1", "E", "--data", "{}"]);
    if code(&o) == 0 {
        let v = run(&["verify", d]);
        assert_eq!(
            code(&v),
            0,
            "a store annal just created does not verify: {}",
            stderr(&v)
        );
    }
}
