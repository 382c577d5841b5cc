//! An adversarial review of the thirty-sixth session's change (store
//! creation refused over another program's files; a sealed segment cut
//! short told from another copy's, `recovery::chain::length_damage`;
//! `repair` finishing a removal only over side files with their magic).
//! Each test failed on that change's first version; each holds what was
//! fixed (or, for the last, taken back).

mod common;

use std::fs;
use std::path::Path;

use annal::log::segment;
use annal::tools::repair;
use annal::{Error, EventData, ExpectedVersion, Options, Store};
use common::files::{seg, segment_ids};

fn opts() -> Options {
    Options::default().with_segment_size_bytes(4096)
}

fn xor(path: &Path, at: usize, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= mask;
    fs::write(path, bytes).unwrap();
}

/// A closed store of 30 events in stream `s-1` in `dir`, with checkpoint
/// `c` at 10 when `checkpoint` says so.
fn store_of_30(dir: &Path, options: Options, checkpoint: bool) {
    let store = Store::open(dir, options).unwrap();
    for i in 0..30 {
        store
            .append("s-1", ExpectedVersion::Any, [common::event("T", i)])
            .unwrap();
    }
    if checkpoint {
        store.checkpoints().save("c", 10).unwrap();
    }
    store.close().unwrap();
}

/// Damages segment 1's header and its first batch: `repair` has no header
/// to rebuild, and removes the store into quarantine.
fn lose_first_header(dir: &Path) {
    xor(&seg(dir, 1), 20, 0x40);
    xor(&seg(dir, 1), 64 + 45, 0x40);
}

/// An event of `len` bytes of data, its content told by `fill`.
fn sized(fill: u8, len: usize) -> EventData {
    EventData::new("E", vec![fill; len])
}

/// A store killed while it saved its index file leaves `index.tmp` (a
/// whole copy, just before the rename); `repair` then removes the store,
/// leaving that temporary file. `RepairReport::store_removed` says "the
/// next append creates a new store": the next open removes `index.tmp` as
/// the store's own leftover (it starts with the index file's magic) and
/// creates one, rather than refusing it as another program's file.
#[test]
fn a_store_removed_by_repair_beside_its_own_index_tmp_can_be_created_again() {
    let dir = tempfile::tempdir().unwrap();
    store_of_30(dir.path(), opts(), false);
    // Killed between writing the new index file and renaming it.
    fs::copy(dir.path().join("index"), dir.path().join("index.tmp")).unwrap();
    lose_first_header(dir.path());
    let r = repair(dir.path()).unwrap();
    assert!(r.store_removed, "{r:?}");
    assert!(dir.path().join("index.tmp").exists());

    let store = Store::open(dir.path(), opts()).expect("the next append creates a new store");
    store
        .append("s-1", ExpectedVersion::NoStream, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
}

/// The same through the CLI: `annal append` after the removal, beside an
/// empty `checkpoints.tmp` (a save stopped before its first byte).
#[test]
fn cli_append_after_repair_removed_a_store_beside_its_index_tmp() {
    let dir = tempfile::tempdir().unwrap();
    store_of_30(dir.path(), Options::default(), false);
    fs::write(dir.path().join("checkpoints.tmp"), b"").unwrap();
    lose_first_header(dir.path());
    let r = repair(dir.path()).unwrap();
    assert!(r.store_removed, "{r:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("append")
        .arg(dir.path())
        .arg("s-1")
        .arg("T")
        .arg("--data")
        .arg("{}")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two copies of one store (seeded with the same first event) that went
/// on with events of the same sizes, in the same stream, one copy rolling
/// to segment 2 earlier (a larger event). The other copy's sealed
/// segment 1, shorter, put in place of this store's: its batches lie
/// exactly where this store's did, so the index file's offsets cannot tell
/// it from a cut, but it ends with a whole batch (no invalid bytes), and
/// the open reports it at offset 0 of the next segment, as another copy's
/// may be, not as segment 1 cut short.
#[test]
fn another_copys_shorter_segment_of_the_same_layout_is_not_taken_for_a_cut() {
    let (a, b) = common::files::seeded_copies(&opts());
    let store = Store::open(a.path(), opts()).unwrap();
    let mut i = 0;
    while !seg(a.path(), 3).exists() {
        store.append("s", ExpectedVersion::Any, [sized(b'a', 200)]).unwrap();
        i += 1;
        assert!(i < 100);
    }
    store.close().unwrap();
    let store = Store::open(b.path(), opts()).unwrap();
    for _ in 0..3 {
        store.append("s", ExpectedVersion::Any, [sized(b'b', 200)]).unwrap();
    }
    store.append("s", ExpectedVersion::Any, [sized(b'b', 3600)]).unwrap();
    assert!(seg(b.path(), 2).exists());
    store.close().unwrap();
    let theirs = fs::read(seg(b.path(), 1)).unwrap();
    let ours = fs::read(seg(a.path(), 1)).unwrap();
    assert!(theirs.len() < ours.len(), "{} {}", theirs.len(), ours.len());
    assert_ne!(&theirs[..], &ours[..theirs.len()]);
    fs::write(seg(a.path(), 1), &theirs).unwrap();

    match Store::open(a.path(), opts().with_create_if_missing(false)) {
        Err(Error::Corruption { file, offset, reason }) => {
            assert!(
                file == seg(a.path(), 2) && offset == 0,
                "another copy's segment 1 reported as damage in {} at {offset}: {reason}",
                file.display()
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened"),
    }
}

/// A repair that removes a store (segment 1's header lost) whose
/// checkpoints file is damaged in its first bytes (its magic), killed
/// after it moved the log and the index file into quarantine but before
/// the checkpoints file: DURABILITY.md guarantee 10 says the next repair
/// finishes it "as if never stopped". It does because `removal_unfinished`
/// goes by the side files' names: one that counted only files starting
/// with their magic left the store's own checkpoints file behind, and
/// every open then refused to create a store beside it.
#[test]
fn a_killed_store_removal_with_a_damaged_checkpoints_magic_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    store_of_30(dir.path(), opts(), true);
    let checkpoints = dir.path().join(annal::CHECKPOINTS_FILE_NAME);
    xor(&checkpoints, 0, 0x01);
    lose_first_header(dir.path());
    // What the killed repair left: the log and the index file moved, the
    // damaged checkpoints file not yet.
    let q = dir.path().join(annal::tools::QUARANTINE_DIR);
    fs::create_dir(&q).unwrap();
    for id in segment_ids(dir.path()).into_iter().rev() {
        fs::rename(seg(dir.path(), id), q.join(segment::file_name(id))).unwrap();
    }
    fs::rename(dir.path().join("index"), q.join("index")).unwrap();

    let r = repair(dir.path()).expect("the next repair finishes the removal");
    assert!(r.store_removed && r.checkpoints_quarantined, "{r:?}");
    assert!(!checkpoints.exists());
    Store::open(dir.path(), opts()).expect("a new store");
}
