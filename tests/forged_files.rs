//! Store files that no store writes and that a CRC does not catch: a
//! header whose CRC was computed over forged fields, and files grown
//! (sparse, costing no disk) to sizes past what the store can hold in
//! memory or address. Each gives a typed error or is passed over as the
//! cache it is, never a panic or an aborted process, and nothing of the
//! store is lost. Found by an audit of the arithmetic on lengths read from
//! files.

mod common;

use std::fs;
use std::path::Path;

use annal::tools::{IndexStatus, verify};
use annal::{Error, Options, Store};
use common::files::seg;
use common::*;

/// A closed store with `n` events in one stream.
fn store_with_events(dir: &Path, n: usize) {
    let store = Store::open(dir, Options::default()).expect("open");
    append_n(&store, "Order-1", "Placed", n);
    store.close().expect("close");
}

/// An index file header whose body length makes `80 + body length + 4`
/// wrap round to the header's own 80 bytes, its CRC computed over the
/// forged field (FORMAT.md, "Index file": body length at byte 64, header
/// CRC over bytes 0..76 at byte 76).
fn index_header_with_wrapping_body_length(dir: &Path) -> Vec<u8> {
    let mut header = fs::read(dir.join("index")).expect("index file")[..80].to_vec();
    header[64..72].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    let crc = crc32fast::hash(&header[..76]);
    header[76..80].copy_from_slice(&crc.to_le_bytes());
    header
}

/// A forged index header is a damaged cache: every open rebuilds the index
/// from the log (before, the length check wrapped round and the slice of
/// the body panicked in every open, `verify` and `repair`).
#[test]
fn an_index_file_with_a_forged_body_length_is_rebuilt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    store_with_events(&dir, 5);
    let forged = index_header_with_wrapping_body_length(&dir);
    fs::write(dir.join("index"), &forged).expect("write index");

    let report = verify(&dir).expect("verify");
    assert!(matches!(report.index, IndexStatus::Damaged(_)), "{:?}", report.index);

    let read_only = Store::open(&dir, Options::default().with_read_only(true)).expect("read-only open");
    assert!(!read_only.recovery_report().index_loaded);
    assert_eq!(stream(&read_only, "Order-1").len(), 5);
    drop(read_only);

    let store = Store::open(&dir, Options::default()).expect("open");
    assert!(!store.recovery_report().index_loaded);
    assert_eq!(stream(&store, "Order-1").len(), 5);
    store.close().expect("close");
}

/// A `checkpoints` file grown to 8 TiB (sparse) is an I/O error of kind
/// `OutOfMemory` when it is read, not an aborted process; the store opens
/// and its events are there. Needs a kernel that refuses an allocation
/// larger than its memory (`vm.overcommit_memory` 0 or 2, the default)
/// and a file system that holds an 8 TiB sparse file: where either is
/// missing, the test says so and checks nothing.
#[test]
fn a_side_file_too_large_to_hold_in_memory_is_an_error() {
    let overcommit = fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    if overcommit.trim() == "1" {
        eprintln!("SKIPPED: vm.overcommit_memory is 1, an 8 TiB allocation would not fail");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    store_with_events(&dir, 3);
    let file = fs::File::create(dir.join("checkpoints")).expect("create checkpoints");
    if let Err(e) = file.set_len(8 << 40) {
        eprintln!("SKIPPED: this file system holds no 8 TiB sparse file: {e}");
        return;
    }
    drop(file);

    let store = Store::open(&dir, Options::default()).expect("open");
    match store.checkpoints().load("projection") {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::OutOfMemory, "{source}");
            assert!(
                source.to_string().contains("more than this process can hold"),
                "{source}"
            );
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert_eq!(stream(&store, "Order-1").len(), 3);
    store.close().expect("close");
    assert_eq!(
        fs::metadata(dir.join("checkpoints")).expect("checkpoints").len(),
        8 << 40
    );
}

/// A segment file longer than the largest segment (1 TiB: an index
/// location holds 40 bits of offset) is refused as corruption at open,
/// before anything is done to it (a writable open would otherwise reserve
/// its holes), and the file is left as it was.
#[test]
fn a_segment_file_longer_than_the_largest_segment_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    store_with_events(&dir, 3);
    let path = seg(&dir, 1);
    let len = annal::limits::SEGMENT_BYTES_MAX + 4096;
    let file = fs::OpenOptions::new().write(true).open(&path).expect("open segment");
    if let Err(e) = file.set_len(len) {
        eprintln!("SKIPPED: this file system holds no sparse file past 1 TiB: {e}");
        return;
    }
    drop(file);
    for options in [Options::default().with_read_only(true), Options::default()] {
        match Store::open(&dir, options) {
            Err(Error::Corruption { file, offset, reason }) => {
                assert_eq!(file, path);
                assert_eq!(offset, annal::limits::SEGMENT_BYTES_MAX);
                assert!(reason.contains("longer than the largest segment"), "{reason}");
            }
            other => panic!("expected Corruption, got {:?}", other.map(|_| ())),
        }
        assert_eq!(fs::metadata(&path).expect("segment").len(), len);
    }
}
