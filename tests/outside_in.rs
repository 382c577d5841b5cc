//! An outside-in review of the CLI against its documented contract, by a
//! new user who reads README.md and docs/CLI.md and tries what they
//! promise. Each test here failed when it was written (thirty-sixth
//! session); each names the sentence of the docs it holds the tool to.
//! What they found, since fixed:
//!
//! - CLI.md, "Store creation": a store whose log is missing is refused by
//!   every command, which "changes nothing"; a writable open created a
//!   `LOCK` file there, and removed the store's temporary files, before it
//!   found the log missing.
//! - CLI.md, "Store creation": creating a store beside another program's
//!   `index` file overwrote it, and beside another program's `checkpoints`
//!   file made a store that failed `verify` at once (no store is created
//!   over such files now).
//! - CLI.md, exit code 4: "the message names the file and byte offset of
//!   the first damaged record". A sealed segment cut short in a store with
//!   an `index` file made every command but `verify` name the *next*
//!   segment's header, at offset 0, as "another copy of the store".
//! - CLI.md, `repair`: "finds the first damage, as verify does" and keeps
//!   the log before it. Bytes lost inside one sealed segment made `repair`
//!   refuse the store as another copy's, although the segment's last batch
//!   was the very batch (same CRC) the next header records, only moved.
//! - CLI.md, `import`: a line "longer than 128 MiB" stops the import; a
//!   line of exactly 128 MiB was refused when it ended with a line break.
#![cfg(feature = "cli")]

mod cli_support;
mod common;

use std::fs;
use std::path::Path;

use annal::{ExpectedVersion, Options, ReadAll, Store};
use cli_support::*;
use common::files::{batch_starts, listing, store_with_side_files};
use common::*;

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
    store_with_side_files(&store_dir);
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
    store_with_side_files(&store_dir);
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

/// A closed store of 4 KiB segments, at least five of them, with its
/// `index` file; returns the number of events.
fn build_segments(dir: &Path) -> u64 {
    let store = Store::open(dir, Options::default().with_segment_size_bytes(4096)).unwrap();
    let mut n = 0;
    while store.stats().segments < 6 {
        store
            .append(&format!("Acc-{}", n % 5), ExpectedVersion::Any, [event("E", n)])
            .unwrap();
        n += 1;
    }
    store.close().unwrap();
    assert!(dir.join("index").exists());
    n
}

/// A sealed segment cut short in the middle of a batch: `verify` names it
/// (and the offset of the batch cut short); every other command must name
/// the same file, not the intact next segment's header, and must not
/// blame a copy of another store.
#[test]
fn a_sealed_segment_cut_short_is_named_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    build_segments(&store_dir);
    let seg2 = annal::log::segment::path(&store_dir, 2);
    let starts = batch_starts(&fs::read(&seg2).unwrap());
    assert!(starts.len() >= 4, "{starts:?}");
    let cut_batch = starts[starts.len() / 2];
    let f = fs::OpenOptions::new().write(true).open(&seg2).unwrap();
    f.set_len(cut_batch as u64 + 20).unwrap();
    drop(f);
    let d = s(&store_dir);
    let v = run(&["verify", d]);
    assert_eq!(code(&v), 4, "{}", stderr(&v));
    let seg2_name = annal::log::segment::file_name(2);
    assert!(
        stderr(&v).contains(&seg2_name) && stderr(&v).contains(&format!("offset {cut_batch}")),
        "verify: {}",
        stderr(&v)
    );
    // The library says the same as the CLI below.
    let err = Store::open(&store_dir, Options::default().with_read_only(true)).err();
    match &err {
        Some(annal::Error::Corruption { file, .. }) => {
            assert_eq!(
                file, &seg2,
                "Store::open names another file than the one cut short: {err:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    for args in [
        vec!["stats", d],
        vec!["read-all", d],
        vec!["export", d],
        vec!["read", d, "Acc-1"],
        vec!["append", d, "Acc-1", "E"],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&seg2_name) && !err.contains("another copy of the store"),
            "{args:?} names the wrong damage for a segment cut short: {err}"
        );
    }
}

/// Ten bytes lost from the middle of a sealed segment (the rest of the
/// segment intact, its last batch whole: the batch the next segment's
/// header records, with its CRC, ten bytes earlier). `verify` reports the
/// first damage there; `repair` must keep the log before it, as for any
/// damage in the middle of the log, not refuse the store as a mix of two
/// copies.
#[test]
fn repair_mends_a_sealed_segment_that_lost_bytes_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    let n = build_segments(&store_dir);
    let seg3 = annal::log::segment::path(&store_dir, 3);
    let starts = batch_starts(&fs::read(&seg3).unwrap());
    assert!(starts.len() >= 4, "{starts:?}");
    let at = starts[starts.len() / 2] + 30;
    let mut bytes = fs::read(&seg3).unwrap();
    bytes.drain(at..at + 10);
    fs::write(&seg3, &bytes).unwrap();
    let d = s(&store_dir);
    let v = run(&["verify", d]);
    assert_eq!(code(&v), 4, "{}", stderr(&v));
    let report: serde_json::Value = serde_json::from_str(stdout(&v).trim()).unwrap();
    let before_damage = report["events"].as_u64().unwrap();
    assert!(before_damage > 0 && before_damage < n, "{report}");
    assert!(
        report["corruption"]["file"]
            .as_str()
            .unwrap()
            .ends_with(&annal::log::segment::file_name(3)),
        "{report}"
    );
    let r = run(&["repair", d]);
    assert_eq!(
        code(&r),
        0,
        "repair refused a store damaged inside one segment: {}",
        stderr(&r)
    );
    let repaired: serde_json::Value = serde_json::from_str(stdout(&r).trim()).unwrap();
    assert_eq!(repaired["kept_events"].as_u64(), Some(before_damage), "{repaired}");
    let store = Store::open(&store_dir, Options::default()).unwrap();
    assert_eq!(
        store.read_all(ReadAll::forward()).unwrap().count() as u64,
        before_damage
    );
    store.close().unwrap();
}

/// CLI.md: a line "longer than 128 MiB" stops the import. A line of
/// exactly 128 MiB (a valid object padded with spaces, JSON's own
/// whitespace) is not longer, and is imported with or without its line
/// break; it was refused with one.
#[test]
fn an_import_line_of_exactly_128_mib_is_not_longer_than_128_mib() {
    let dir = tempfile::tempdir().unwrap();
    let object = br#"{"stream":"S","type":"T"}"#;
    let mut line = object.to_vec();
    line.resize(128 << 20, b' ');
    for (name, ending) in [("no-break", &b""[..]), ("lf", &b"\n"[..])] {
        let file = dir.path().join(format!("{name}.jsonl"));
        let mut bytes = line.clone();
        bytes.extend_from_slice(ending);
        fs::write(&file, &bytes).unwrap();
        drop(bytes);
        let store_dir = dir.path().join(name);
        let o = run(&["import", s(&store_dir), s(&file)]);
        assert_eq!(code(&o), 0, "{name}: a line of exactly 128 MiB: {}", stderr(&o));
        fs::remove_file(&file).unwrap();
    }
}

/// A sealed segment cut between two batches: nothing tells a cut from
/// another copy's shorter segment (even the index file's offsets, which
/// another copy's events of the same sizes share), so the message says
/// both (or names the events missing), rather than blaming a copy alone;
/// with or without the index file.
#[test]
fn a_sealed_segment_cut_between_batches_is_not_only_blamed_on_another_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    build_segments(&store_dir);
    let seg2 = annal::log::segment::path(&store_dir, 2);
    let starts = batch_starts(&fs::read(&seg2).unwrap());
    let cut = starts[starts.len() / 2];
    let f = fs::OpenOptions::new().write(true).open(&seg2).unwrap();
    f.set_len(cut as u64).unwrap();
    drop(f);
    let d = s(&store_dir);
    let seg2_name = annal::log::segment::file_name(2);
    let o = run(&["stats", d]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&seg2_name) && stderr(&o).contains("cut short"),
        "with the index file: {}",
        stderr(&o)
    );
    fs::remove_file(store_dir.join("index")).unwrap();
    for args in [vec!["stats", d], vec!["verify", d]] {
        let o = run(&args);
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("cut short") || err.contains("segment 2 ends short"),
            "{args:?}: {err}"
        );
    }
}
