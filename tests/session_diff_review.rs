//! Review of the change 091b725..: store creation refused over "another
//! program's" files, and a sealed segment cut short told from another
//! copy's segment (`recovery::chain::length_damage`).

mod common;

use std::fs;
use std::path::Path;

use annal::log::segment;
use annal::tools::repair;
use annal::{Error, EventData, ExpectedVersion, Options, Store};

fn opts() -> Options {
    Options::default().with_segment_size_bytes(4096)
}

fn seg(dir: &Path, id: u64) -> std::path::PathBuf {
    segment::path(dir, id)
}

fn xor(path: &Path, at: usize, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= mask;
    fs::write(path, bytes).unwrap();
}

/// An event of `len` bytes of data, its content told by `fill`.
fn sized(fill: u8, len: usize) -> EventData {
    EventData::new("E", vec![fill; len])
}

/// A store killed while it saved its index file leaves `index.tmp` (a
/// whole copy, just before the rename); `repair` then removes the store
/// (segment 1's header and first batch damaged: no header to rebuild),
/// whose own temporary file it leaves. `RepairReport::store_removed`
/// says "the next append creates a new store", and before the change the
/// next open removed `index.tmp` as the store's own leftover and created
/// one; now the directory is refused as another program's.
#[test]
fn a_store_removed_by_repair_beside_its_own_index_tmp_can_be_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for i in 0..30 {
        store
            .append("s-1", ExpectedVersion::Any, [common::event("T", i)])
            .unwrap();
    }
    store.close().unwrap();
    // Killed between writing the new index file and renaming it.
    fs::copy(dir.path().join("index"), dir.path().join("index.tmp")).unwrap();
    xor(&seg(dir.path(), 1), 20, 0x40);
    xor(&seg(dir.path(), 1), 64 + 45, 0x40);
    let r = repair(dir.path()).unwrap();
    assert!(r.store_removed, "{r:?}");
    assert!(dir.path().join("index.tmp").exists());

    let store = Store::open(dir.path(), opts()).expect("the next append creates a new store");
    store
        .append("s-1", ExpectedVersion::NoStream, [EventData::new("T", "{}")])
        .unwrap();
    store.close().unwrap();
}

/// The same through the CLI: `annal append` after the removal.
#[test]
fn cli_append_after_repair_removed_a_store_beside_its_index_tmp() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    for i in 0..30 {
        store
            .append("s-1", ExpectedVersion::Any, [common::event("T", i)])
            .unwrap();
    }
    store.close().unwrap();
    fs::write(dir.path().join("checkpoints.tmp"), b"").unwrap();
    xor(&seg(dir.path(), 1), 20, 0x40);
    xor(&seg(dir.path(), 1), 64 + 45, 0x40);
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
/// segment 1, shorter, put in place of this store's: FORMAT.md says a
/// shorter file whose batches lie elsewhere than the index has them is
/// another copy's segment, corruption at offset 0 of the next segment; the
/// other copy's batches lie exactly where this store's did, so the open
/// blames segment 1 as "cut short" instead.
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
/// finishes it "as if never stopped". `removal_unfinished` now counts only
/// side files that start with their magic, so the next repair says there
/// is no store and leaves the store's own checkpoints file, and every open
/// then refuses to create a store beside it as "another program's".
#[test]
fn a_killed_store_removal_with_a_damaged_checkpoints_magic_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for i in 0..30 {
        store
            .append("s-1", ExpectedVersion::Any, [common::event("T", i)])
            .unwrap();
    }
    store.checkpoints().save("c", 10).unwrap();
    store.close().unwrap();
    let checkpoints = dir.path().join(annal::CHECKPOINTS_FILE_NAME);
    xor(&checkpoints, 0, 0x01);
    xor(&seg(dir.path(), 1), 20, 0x40);
    xor(&seg(dir.path(), 1), 64 + 45, 0x40);
    // What the killed repair left: the log and the index file moved, the
    // damaged checkpoints file not yet.
    let q = dir.path().join(annal::tools::QUARANTINE_DIR);
    fs::create_dir(&q).unwrap();
    let mut ids: Vec<u64> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| segment::parse_file_name(&e.unwrap().file_name().to_string_lossy()))
        .collect();
    ids.sort_unstable();
    for id in ids.into_iter().rev() {
        fs::rename(seg(dir.path(), id), q.join(segment::file_name(id))).unwrap();
    }
    fs::rename(dir.path().join("index"), q.join("index")).unwrap();

    let r = repair(dir.path()).expect("the next repair finishes the removal");
    assert!(r.store_removed && r.checkpoints_quarantined, "{r:?}");
    assert!(!checkpoints.exists());
    Store::open(dir.path(), opts()).expect("a new store");
}
