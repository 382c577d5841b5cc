//! Tests written by a mutation review of the core engine: each one fails
//! with a small, plausible bug that the rest of the suite let through.

mod common;

use std::fs;

use annal::{Error, EventData, ExpectedVersion, Options, Store};
use common::*;

/// Two copies of one store go on differently by one batch of the very same
/// size and position: the index file of one, put next to the other's log,
/// matches its last position and end offset, and only the last batch's
/// CRC tells them apart. It must be refused (the open reports it as
/// replaced acknowledged events), never trusted: it would place the last
/// event in the wrong stream.
/// (Mutation: `log_holds_batch` without the `last_batch_crc` comparison.)
#[test]
fn an_index_file_of_a_fork_with_the_same_end_is_refused_by_its_last_batch_crc() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let store = Store::open(&a, Options::default()).unwrap();
    append_n(&store, "base-1", "E", 3);
    store.close().unwrap();
    files::copy_files_but_lock(&a, &b);

    for (dir, name) in [(&a, "fork-a"), (&b, "fork-b")] {
        let store = Store::open(dir, Options::default()).unwrap();
        store
            .append(name, ExpectedVersion::NoStream, [EventData::new("T", "xyz")])
            .unwrap();
        store.close().unwrap();
    }
    // Same length, same end, other content.
    assert_eq!(
        fs::metadata(a.join(annal::log::segment::file_name(1))).unwrap().len(),
        fs::metadata(b.join(annal::log::segment::file_name(1))).unwrap().len()
    );
    fs::copy(
        a.join(annal::index::file::FILE_NAME),
        b.join(annal::index::file::FILE_NAME),
    )
    .unwrap();

    // The index file also records its end as durable, so the right answer
    // is a refusal: the log holds other data where acknowledged events were.
    match Store::open(&b, Options::default()) {
        Err(Error::Corruption { reason, .. }) => assert!(reason.contains("replaced"), "{reason}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(store) => panic!(
            "a fork's index file was trusted: index loaded {}, stream fork-a holds {:?}, fork-b holds {} events",
            store.recovery_report().index_loaded,
            stream(&store, "fork-a")
                .iter()
                .map(|e| e.stream().to_string())
                .collect::<Vec<_>>(),
            stream(&store, "fork-b").len()
        ),
    }
}
