//! A store directory's files: copies, images to compare, segment files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Copies every regular file of the directory `from` into `to` (made if
/// missing): a copy of a store as a restore would make it, side files
/// included.
pub fn copy_files(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Copies every entry of the directory `from` but the lock file into `to`
/// (made if missing); `from` must hold only files.
pub fn copy_files_but_lock(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != annal::LOCK_FILE_NAME {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Every entry of the directory by name, each file with its bytes, each
/// directory as `name/` with none: compare two to see what changed.
pub fn dir_image(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type().unwrap().is_file() {
            out.insert(name, fs::read(entry.path()).unwrap_or_default());
        } else {
            out.insert(format!("{name}/"), Vec::new());
        }
    }
    out
}

/// The directory's entry names, sorted (what a refused command must
/// leave as it was).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A closed store of 20 events in stream `Order-1` in `dir` (durable, one
/// segment), with all three side files: index, checkpoints (`reader` at
/// 15) and snapshots (`Order-1` at 10).
pub fn store_with_side_files(dir: &Path) {
    let store = annal::Store::open(dir, annal::Options::default()).unwrap();
    for i in 0..20 {
        store
            .append("Order-1", annal::ExpectedVersion::Any, [super::event("E", i)])
            .unwrap();
    }
    store.checkpoints().save("reader", 15).unwrap();
    store.save_snapshot("Order-1", 10, 1, b"state").unwrap();
    store.close().unwrap();
    for name in ["index", annal::CHECKPOINTS_FILE_NAME, "snapshots"] {
        assert!(dir.join(name).exists(), "{name} was not written");
    }
}

/// The path of segment `n` in `dir`.
pub fn seg(dir: &Path, n: u64) -> PathBuf {
    annal::log::segment::path(dir, n)
}

/// The numbers of the segment files in `dir`, sorted.
pub fn segment_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| annal::log::segment::parse_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    ids.sort_unstable();
    ids
}

/// The names of the segment files (`*.seg`) in `dir`, in order.
pub fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

/// The segment files of `dir` in order, each with its length.
pub fn segment_files(dir: &Path) -> Vec<(String, u64)> {
    segment_names(dir)
        .into_iter()
        .map(|n| {
            let len = fs::metadata(dir.join(&n)).unwrap().len();
            (n, len)
        })
        .collect()
}

/// The lengths of the segment files of `dir`, in order.
pub fn segment_lens(dir: &Path) -> Vec<u64> {
    segment_files(dir).into_iter().map(|(_, len)| len).collect()
}

/// Asserts that each sealed segment of `dir` is exactly as long as the
/// next one's header says its last batch ends (FORMAT.md: `previous end`,
/// bytes 48..56): no zero landed after its cut.
pub fn assert_sealed_segments_end_at_their_data(dir: &Path) {
    let names = segment_names(dir);
    for pair in names.windows(2) {
        let next = fs::read(dir.join(&pair[1])).unwrap();
        let previous_end = u64::from_le_bytes(next[48..56].try_into().unwrap());
        let len = fs::metadata(dir.join(&pair[0])).unwrap().len();
        assert_eq!(len, previous_end, "{} is longer than its data", pair[0]);
    }
}

/// Two copies of one store (default options but `options`' segment size
/// and durability as given) holding one event, `Seed` version 1, to go
/// on differently.
pub fn seeded_copies(options: &annal::Options) -> (tempfile::TempDir, tempfile::TempDir) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let store = annal::Store::open(a.path(), options.clone()).unwrap();
    store
        .append("Seed", annal::ExpectedVersion::NoStream, [super::event("E", 0)])
        .unwrap();
    store.close().unwrap();
    copy_files_but_lock(a.path(), b.path());
    (a, b)
}

/// Where the batches of a segment's bytes start (FORMAT.md: a 64-byte
/// header, then frames whose length is the `u32` at offset 4 of each),
/// up to the first frame that is not whole.
pub fn batch_starts(bytes: &[u8]) -> Vec<usize> {
    let mut at = annal::log::segment::SEGMENT_HEADER_BYTES as usize;
    let mut starts = Vec::new();
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if len == 0 || at + len > bytes.len() {
            break;
        }
        starts.push(at);
        at += len;
    }
    starts
}
