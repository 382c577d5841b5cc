//! Tests written by a tool-driven mutation review of snapshots and
//! checkpoints (`cargo mutants` over `src/snapshot/file.rs`,
//! `src/snapshot/store.rs`, part of `src/checkpoint.rs` and
//! `src/snapshot/mod.rs`): each one kills a mutant that the rest of the
//! suite let through, and asserts the promise that the mutant breaks (every
//! length of a snapshot record is checked against the limits
//! docs/FORMAT.md gives, and the limits themselves are usable; a load
//! never returns a record other than the one its map names, nor another
//! store's; compaction and the kept-bytes count follow the documented
//! options; a checkpoints file tells which segments belong to the store
//! only when it checks out), not how the code keeps it.

mod common;

use annal::limits::STREAM_NAME_BYTES_MAX;
use annal::snapshot::file::{self, FILE_HEADER_BYTES, RECORD_HEADER_BYTES, RecordError, SNAPSHOT_BYTES_MAX};
use annal::{Options, SnapshotIssue, SnapshotOptions, Store, Uuid};

/// The bytes of a snapshot record with the given fields, laid out as
/// docs/FORMAT.md says ("Record"), its length field the sum of its parts
/// and its CRC correct: whatever is wrong with it is in its fields.
fn crafted_record(stream_len_field: u16, stream: &[u8], version: u64, data_len: usize) -> Vec<u8> {
    let len = RECORD_HEADER_BYTES + stream.len() + data_len;
    let mut r = vec![0u8; len];
    r[0..4].copy_from_slice(b"SNP2");
    r[8..12].copy_from_slice(&u32::try_from(len).expect("record length fits u32").to_le_bytes());
    r[12..14].copy_from_slice(&stream_len_field.to_le_bytes());
    r[16..24].copy_from_slice(&version.to_le_bytes());
    r[24..28].copy_from_slice(&1u32.to_le_bytes());
    r[28..32].copy_from_slice(&u32::try_from(data_len).expect("data length fits u32").to_le_bytes());
    r[32..48].copy_from_slice(Uuid::from_u128(9).as_bytes());
    r[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + stream.len()].copy_from_slice(stream);
    let crc = crc32fast::hash(&r[8..]);
    r[4..8].copy_from_slice(&crc.to_le_bytes());
    r
}

fn is_invalid(r: Result<file::RecordRef<'_>, RecordError>) -> bool {
    matches!(r, Err(RecordError::Invalid { .. }))
}

// ------------------------------------------------------------ file.rs

/// A stream name of the longest length a stream may have (255 bytes) is
/// saved and read back: the limit is inclusive in encoding and decoding.
/// (Mutants: `stream.len() > STREAM_NAME_BYTES_MAX` turned into `>=` or
/// `==` in `record_len`, and `stream_len > STREAM_NAME_BYTES_MAX` into
/// `>=` or `==` in `decode_record`.)
#[test]
fn a_snapshot_of_a_stream_with_the_longest_name_round_trips() {
    let stream = "s".repeat(STREAM_NAME_BYTES_MAX);
    let r = file::encode_record(&stream, 3, Uuid::from_u128(7), 2, b"state").expect("a 255-byte name is allowed");
    let d = file::decode_record(&r).expect("a 255-byte name decodes");
    assert_eq!((d.stream, d.version, d.data), (stream.as_str(), 3, &b"state"[..]));
}

/// A snapshot of exactly the size limit (64 MiB) is saved and read back,
/// one byte more is refused: the limit is inclusive and enforced.
/// (Mutants: `data_len > SNAPSHOT_BYTES_MAX` turned into `>=` in
/// `record_len`, and into `>=` or `==` in `decode_record`.)
#[test]
fn a_snapshot_of_exactly_the_size_limit_round_trips_and_one_byte_more_is_refused() {
    let data = vec![0xA5u8; SNAPSHOT_BYTES_MAX];
    let r = file::encode_record("A-1", 1, Uuid::from_u128(7), 1, &data).expect("64 MiB is allowed");
    let d = file::decode_record(&r).expect("a 64 MiB snapshot decodes");
    assert_eq!(d.data.len(), SNAPSHOT_BYTES_MAX);
    assert!(d.data == &data[..]);
    drop(r);
    let over = vec![0u8; SNAPSHOT_BYTES_MAX + 1];
    assert!(file::record_len("A-1", over.len()).is_err());
    assert!(file::encode_record("A-1", 1, Uuid::from_u128(7), 1, &over).is_err());
}

/// A checksum-correct record whose fields break the format's limits (an
/// empty stream name, a name longer than 255 bytes, data over 64 MiB) is
/// invalid: the CRC is not the only check. (Mutants: the `||` of
/// `stream_len == 0 || stream_len > MAX || data_len > MAX` in
/// `decode_record` turned into `&&`, `data_len > MAX` into `==`.)
#[test]
fn a_checksum_correct_record_breaking_the_length_limits_is_invalid() {
    let empty_name = crafted_record(0, b"", 1, 4);
    assert!(
        is_invalid(file::decode_record(&empty_name)),
        "an empty stream name was accepted"
    );

    let long = vec![b's'; STREAM_NAME_BYTES_MAX + 1];
    let long_name = crafted_record(u16::try_from(long.len()).expect("fits"), &long, 1, 4);
    assert!(
        is_invalid(file::decode_record(&long_name)),
        "a 256-byte stream name was accepted"
    );

    let big_data = crafted_record(3, b"A-1", 1, SNAPSHOT_BYTES_MAX + 1);
    assert!(
        is_invalid(file::decode_record(&big_data)),
        "data over 64 MiB was accepted"
    );

    // The same records within the limits are valid: the crafting is right.
    assert!(file::decode_record(&crafted_record(3, b"A-1", 1, 4)).is_ok());
}

/// Fewer bytes than a record header is a record cut short, however few
/// (nothing here panics on any input); a whole header-only record is not
/// cut short but invalid, and skippable by its length. (Mutants:
/// `bytes.len() < RECORD_HEADER_BYTES` turned into `==` or `<=` in
/// `decode_record`.)
#[test]
fn input_shorter_than_a_record_header_is_cut_short_and_a_whole_header_only_record_is_invalid() {
    let record = file::encode_record("A-1", 1, Uuid::from_u128(7), 1, b"a").expect("encode");
    for n in 0..RECORD_HEADER_BYTES {
        assert_eq!(
            file::decode_record(&record[..n]),
            Err(RecordError::Truncated),
            "{n} bytes"
        );
    }
    let header_only = crafted_record(0, b"", 1, 0);
    assert_eq!(header_only.len(), RECORD_HEADER_BYTES);
    assert!(
        matches!(
            file::decode_record(&header_only),
            Err(RecordError::Invalid { len: 48, .. })
        ),
        "{:?}",
        file::decode_record(&header_only)
    );
    // And a scan of a file ending in a few stray bytes stops there.
    let mut bytes = file::encode_header(Uuid::from_u128(1)).to_vec();
    bytes.extend_from_slice(&record);
    bytes.extend_from_slice(&[1, 2, 3]);
    let s = file::scan(&bytes);
    assert_eq!((s.records.len(), s.end as usize), (1, FILE_HEADER_BYTES + record.len()));
}

/// A record length one past the largest a record can have (48 + 255 +
/// 64 MiB) makes no sense: the record is unreadable (the scan cannot step
/// over it), not merely cut short or invalid. (Mutant: the upper bound
/// `RECORD_HEADER_BYTES + STREAM_NAME_BYTES_MAX + SNAPSHOT_BYTES_MAX`
/// turned into `RECORD_HEADER_BYTES * STREAM_NAME_BYTES_MAX + ...`.)
#[test]
fn a_record_length_past_the_largest_record_is_unreadable() {
    let largest = RECORD_HEADER_BYTES + STREAM_NAME_BYTES_MAX + SNAPSHOT_BYTES_MAX;
    let mut record = file::encode_record("A-1", 1, Uuid::from_u128(7), 1, b"a").expect("encode");
    record[8..12].copy_from_slice(&u32::try_from(largest + 1).expect("fits u32").to_le_bytes());
    assert!(
        matches!(file::decode_record(&record), Err(RecordError::Unreadable(_))),
        "{:?}",
        file::decode_record(&record)
    );
    // The largest length itself is plausible: cut short here, not unreadable.
    record[8..12].copy_from_slice(&u32::try_from(largest).expect("fits u32").to_le_bytes());
    assert_eq!(file::decode_record(&record), Err(RecordError::Truncated));
}

/// A bad record at the end of the file (whole, but failing its checks)
/// ends the scan there with a reason: the scan reports why the file's
/// valid part ends before its end; a file that ends cleanly has no such
/// reason. (Mutants in `scan`: `!pending_skips.is_empty()` turned into
/// `pending_skips.is_empty()`; `while at < bytes.len()` into `<=`.)
#[test]
fn a_damaged_last_record_ends_the_scan_with_a_reason() {
    let good = file::encode_record("A-1", 1, Uuid::from_u128(7), 1, b"a").expect("encode");
    let mut bad = file::encode_record("A-1", 2, Uuid::from_u128(7), 1, b"b").expect("encode");
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut bytes = file::encode_header(Uuid::from_u128(1)).to_vec();
    bytes.extend_from_slice(&good);
    bytes.extend_from_slice(&bad);
    let s = file::scan(&bytes);
    assert_eq!(s.records.len(), 1);
    assert_eq!(s.end as usize, FILE_HEADER_BYTES + good.len());
    assert!(
        s.cut_reason.is_some(),
        "the scan stopped short of the end without saying why"
    );

    // And a file that ends cleanly has no reason to be cut.
    bytes.truncate(FILE_HEADER_BYTES + good.len());
    let s = file::scan(&bytes);
    assert_eq!((s.records.len(), s.cut_reason), (1, None));
}

// ----------------------------------------------------------- store.rs

/// A store in a temporary directory with `n` events in stream `A-1`.
fn store_with_events(n: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), Options::default()).expect("open");
    common::append_n(&store, "A-1", "E", n);
    (dir, store)
}

/// A load reads the record its map points at and checks it is the one the
/// map was built from: a record changed on disk since the file was opened
/// (another stream, version, event or schema in its place, checksum
/// correct) is reported as damaged and never returned. (Mutants: each `||`
/// of the four comparisons in `read_record` turned into `&&`.)
#[test]
fn a_snapshot_record_changed_on_disk_since_the_file_was_opened_is_reported_never_returned() {
    let (dir, store) = store_with_events(2);
    store.save_snapshot("A-1", 1, 1, b"state").expect("save");
    let path = dir.path().join(file::FILE_NAME);
    let original = std::fs::read(&path).expect("read the snapshot file");
    let saved = file::decode_record(&original[FILE_HEADER_BYTES..]).expect("the saved record");
    let (event_id, len) = (saved.event_id, saved.len as usize);
    let variants = [
        ("another stream", file::encode_record("A-2", 1, event_id, 1, b"state")),
        ("another version", file::encode_record("A-1", 2, event_id, 1, b"state")),
        (
            "another event",
            file::encode_record("A-1", 1, Uuid::from_u128(1234), 1, b"state"),
        ),
        ("another schema", file::encode_record("A-1", 1, event_id, 2, b"state")),
    ];
    for (what, record) in variants {
        let record = record.expect("encode");
        assert_eq!(
            record.len(),
            len,
            "{what}: same length, so the map's entry spans it exactly"
        );
        let mut changed = original.clone();
        changed[FILE_HEADER_BYTES..FILE_HEADER_BYTES + len].copy_from_slice(&record);
        std::fs::write(&path, &changed).expect("change the record in place");
        let load = store.load_snapshot("A-1");
        assert_eq!(
            load.snapshot, None,
            "{what}: a record other than the one saved was returned"
        );
        assert!(
            matches!(load.issues[..], [SnapshotIssue::Corrupt { offset, .. }] if offset == FILE_HEADER_BYTES as u64),
            "{what}: {:?}",
            load.issues
        );
    }
    std::fs::write(&path, &original).expect("restore the record");
    let load = store.load_snapshot("A-1");
    assert_eq!(load.snapshot.map(|s| (s.version, s.event_id)), Some((1, event_id)));
}

/// Snapshot stats: the number of compactions made by saves.
fn compactions(store: &Store) -> u64 {
    store.snapshot_stats().expect("stats").compactions
}

/// A save compacts the file only once it is larger than
/// `compact_min_bytes` and superseded records take more bytes than kept
/// ones (docs: "when superseded records make up most of the file"; the
/// option: "once it is larger than this"), both strictly. (Mutant in
/// `save_snapshot`: `open.end > compact_min_bytes` turned into `>=`; the
/// test also pins the other side of each comparison.)
#[test]
fn a_save_compacts_only_when_the_file_is_past_its_minimum_and_superseded_bytes_exceed_kept_ones() {
    // Each record: 48 + 3 ("A-1") + 4 bytes of data = 55 bytes.
    const RECORD: u64 = 55;
    let header = FILE_HEADER_BYTES as u64;

    // No minimum: superseded bytes equal to kept ones are not enough.
    let (_dir, store) = store_with_events(4);
    store.set_snapshot_options(
        SnapshotOptions::default()
            .with_keep_per_stream(1)
            .with_compact_min_bytes(0),
    );
    store.save_snapshot("A-1", 1, 1, b"one.").expect("save 1");
    store.save_snapshot("A-1", 2, 1, b"two.").expect("save 2");
    let stats = store.snapshot_stats().expect("stats");
    assert_eq!((stats.file_bytes, stats.live_bytes), (header + 2 * RECORD, RECORD));
    assert_eq!(
        stats.compactions, 0,
        "compacted with as many superseded bytes as kept ones"
    );
    store.save_snapshot("A-1", 3, 1, b"thr.").expect("save 3");
    assert_eq!(compactions(&store), 1, "superseded bytes exceed kept ones: compacted");
    assert_eq!(store.snapshot_stats().expect("stats").file_bytes, header + RECORD);

    // A minimum of exactly the file's size after three saves: not larger.
    let (_dir, store) = store_with_events(4);
    let min = header + 3 * RECORD;
    store.set_snapshot_options(
        SnapshotOptions::default()
            .with_keep_per_stream(1)
            .with_compact_min_bytes(min),
    );
    for (v, data) in [(1, b"one."), (2, b"two."), (3, b"thr.")] {
        store.save_snapshot("A-1", v, 1, data).expect("save");
    }
    assert_eq!(store.snapshot_stats().expect("stats").file_bytes, min);
    assert_eq!(
        compactions(&store),
        0,
        "compacted a file no larger than compact_min_bytes"
    );
    store.save_snapshot("A-1", 4, 1, b"fou.").expect("save 4");
    assert_eq!(
        compactions(&store),
        1,
        "a file past compact_min_bytes, mostly superseded: compacted"
    );
    assert_eq!(store.load_snapshot("A-1").snapshot.map(|s| s.version), Some(4));
}

/// Options set with `keep_per_stream` 0 through the struct itself keep 1
/// snapshot per stream, as `with_keep_per_stream` does ("at least 1"): a
/// compaction then keeps the newest snapshot, not none. (Mutant: the
/// `keep_per_stream: options.keep_per_stream.max(1)` field deleted from
/// `set_snapshot_options`.)
#[test]
fn snapshot_options_with_zero_kept_per_stream_keep_one() {
    let (_dir, store) = store_with_events(2);
    store.set_snapshot_options(SnapshotOptions {
        keep_per_stream: 0,
        compact_min_bytes: u64::MAX,
    });
    assert_eq!(store.snapshot_options().keep_per_stream, 1);
    store.save_snapshot("A-1", 1, 1, b"one").expect("save 1");
    store.save_snapshot("A-1", 2, 1, b"two").expect("save 2");
    store.compact_snapshots().expect("compact");
    let load = store.load_snapshot("A-1");
    assert_eq!(load.snapshot.map(|s| s.version), Some(2), "{:?}", load.issues);
    assert_eq!(store.snapshot_stats().expect("stats").records, 1);
}

/// Changing how many snapshots are kept per stream counts the kept bytes
/// again at once: `live_bytes` is the bytes of the newest
/// `keep_per_stream` records of each stream under the options in force
/// (which the compaction rule weighs superseded bytes against). (Mutant:
/// `Open::recount` turned into a no-op.)
#[test]
fn changing_the_snapshots_kept_per_stream_recounts_the_kept_bytes() {
    const RECORD: u64 = 55;
    let (_dir, store) = store_with_events(3);
    let options = SnapshotOptions::default().with_compact_min_bytes(u64::MAX);
    store.set_snapshot_options(options.with_keep_per_stream(4));
    for (v, data) in [(1, b"one."), (2, b"two."), (3, b"thr.")] {
        store.save_snapshot("A-1", v, 1, data).expect("save");
    }
    let live = |store: &Store| store.snapshot_stats().expect("stats").live_bytes;
    assert_eq!(live(&store), 3 * RECORD);
    store.set_snapshot_options(options.with_keep_per_stream(1));
    assert_eq!(live(&store), RECORD, "one kept per stream now");
    store.set_snapshot_options(options.with_keep_per_stream(2));
    assert_eq!(live(&store), 2 * RECORD, "two kept per stream now");
}

/// A snapshot file of another store (its header whole and valid) is not
/// this store's cache: the first use starts it afresh and says so, rather
/// than reading its records. (Mutant: the guard `id == store_id` in
/// `check_header` turned into `true`.)
#[test]
fn another_stores_snapshot_file_is_started_afresh_not_read() {
    let (other_dir, other) = store_with_events(2);
    other.save_snapshot("A-1", 2, 1, b"other store").expect("save");
    other.close().expect("close");
    let (dir, store) = store_with_events(2);
    store.close().expect("close");
    let path = dir.path().join(file::FILE_NAME);
    std::fs::copy(other_dir.path().join(file::FILE_NAME), &path).expect("copy the other store's file");

    let store = Store::open(dir.path(), Options::default()).expect("reopen");
    let load = store.load_snapshot("A-1");
    assert_eq!(load.snapshot, None);
    assert!(
        matches!(load.issues[..], [SnapshotIssue::FileReplaced { .. }]),
        "{:?}",
        load.issues
    );
    store.close().expect("close");
    let bytes = std::fs::read(&path).expect("read the snapshot file");
    assert_eq!(
        bytes.len(),
        FILE_HEADER_BYTES,
        "the file was started afresh, with just its header"
    );
}

/// A snapshot save whose sync fails leaves the file ending where the
/// failed record would have ended (zeros over the record, which the next
/// open cuts as a torn tail), never longer: the failure costs no disk
/// space beyond the record. The store keeps working, and the snapshot
/// saved before the failure still loads. (Mutant in `save_snapshot`: the
/// zeros' end `offset + record.len()` turned into `offset * record.len()`,
/// which wrote as many zeros as the product, a gigabyte for a kilobyte
/// record a megabyte into the file.)
#[cfg(feature = "sim")]
#[test]
fn a_failed_snapshot_save_leaves_the_file_no_longer_than_its_record_would_have() {
    use annal::io::sim::{Fault, FaultError, OpKind, SimFs};
    use annal::io::{FileHandle, FileSystem, OpenMode};
    use annal::{Durability, ExpectedVersion};

    let fs = SimFs::new(11);
    let dir = std::path::PathBuf::from("/store");
    let options = Options::default().with_durability(Durability::Sync);
    let store = Store::open_with(fs.clone(), &dir, options).expect("open");
    for i in 0..4u64 {
        store
            .append("A-1", ExpectedVersion::Any, [common::event("E", i)])
            .expect("append");
    }
    let state = vec![7u8; 300];
    for version in 1..=3 {
        store.save_snapshot("A-1", version, 1, &state).expect("save");
    }
    let path = dir.join(file::FILE_NAME);
    let len = |fs: &SimFs| {
        fs.open(&path, OpenMode::Read)
            .and_then(|f| f.len())
            .expect("the snapshot file's length")
    };
    let before = len(&fs);
    let record = file::record_len("A-1", state.len()).expect("record length") as u64;
    assert!(before > 2 * FILE_HEADER_BYTES as u64, "three records saved");

    fs.inject(Fault {
        kind: OpKind::Sync,
        nth: 0,
        error: FaultError::Eio,
        sticky: false,
    });
    store
        .save_snapshot("A-1", 4, 1, &state)
        .expect_err("the snapshot's sync failed");
    assert_eq!(
        len(&fs),
        before + record,
        "the file after a failed save: its records, then zeros over the failed one"
    );
    let load = store.load_snapshot("A-1");
    assert_eq!(load.snapshot.map(|s| s.version), Some(3), "{:?}", load.issues);
    store
        .save_snapshot("A-1", 4, 1, &state)
        .expect("a save after the failure");
    assert_eq!(store.load_snapshot("A-1").snapshot.map(|s| s.version), Some(4));
}

// --------------------------------------------------------- checkpoint.rs

/// A closed store in 16 KiB segments, two of them, with a checkpoint
/// saved and no index file; and a fresh store of its own.
fn two_segment_store_and_another() -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), common::small_segments()).expect("open");
    common::append_until_segment(&store, dir.path(), 2, "S", &mut 0);
    store.checkpoints().save("c", 1).expect("save a checkpoint");
    store.close().expect("close");
    std::fs::remove_file(dir.path().join("index")).expect("remove the index");
    let other = tempfile::tempdir().expect("temp dir");
    Store::open(other.path(), common::small_segments())
        .expect("open another store")
        .close()
        .expect("close");
    (dir, other)
}

/// The checkpoints file is one of the store's files that tell which of two
/// stores' segments belongs, as long as its CRC, magic and version check
/// out, and only then: with segment 1 another store's and no index, a
/// whole checkpoints file names segment 1 as the stray; a damaged one
/// tells nothing. (Mutants in `store_id_of`: the whole function turned
/// into `None` or `Some(nil)`; each `&&` of its checks turned into `||`.)
#[test]
fn a_whole_checkpoints_file_tells_which_segment_belongs_and_a_damaged_one_does_not() {
    let (dir, other) = two_segment_store_and_another();
    let segment_1 = annal::log::segment::path(dir.path(), 1);
    std::fs::copy(annal::log::segment::path(other.path(), 1), &segment_1).expect("another store's segment 1");
    let err = Store::open(dir.path(), common::small_segments()).expect_err("a foreign segment");
    assert!(
        err.to_string().contains("segment belongs to another store"),
        "the checkpoints file did not tell which store the segments belong to: {err}"
    );

    let checkpoints = dir.path().join(annal::CHECKPOINTS_FILE_NAME);
    let mut bytes = std::fs::read(&checkpoints).expect("read the checkpoints file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF; // the CRC
    std::fs::write(&checkpoints, &bytes).expect("damage the checkpoints file");
    let err = Store::open(dir.path(), common::small_segments()).expect_err("a foreign segment");
    assert!(
        err.to_string().contains("do not tell which belongs"),
        "a checkpoints file failing its CRC was taken as a witness: {err}"
    );
}
