//! Reopening after clean closes, torn tails, corruption and bad index files.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use annal::{Error, ExpectedVersion, Options, Store};
use common::*;

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(annal::log::segment::file_name(id))
}

/// Writes `batches` appends of 1..=3 events and returns the byte range of
/// the last batch in segment 1.
fn build(dir: &Path, batches: u64) -> (u64, u64) {
    let store = Store::open(dir, Options::default()).unwrap();
    for i in 0..batches {
        let events: Vec<_> = (0..(i % 3 + 1)).map(|k| event("E", i * 10 + k)).collect();
        store
            .append(&format!("S-{}", i % 4), ExpectedVersion::Any, events)
            .unwrap();
    }
    let last = store.read_position(store.last_position()).unwrap().unwrap();
    let raw = last.raw_record();
    // The record's back-offset (bytes 8..12) leads to its batch's start.
    let back = u32::from_le_bytes(raw[8..12].try_into().unwrap()) as u64;
    let record_at = find(dir, raw);
    let batch_start = record_at - back;
    let batch_end = record_at + raw.len() as u64;
    store.close().unwrap();
    (batch_start, batch_end)
}

fn find(dir: &Path, needle: &[u8]) -> u64 {
    let bytes = fs::read(segment_path(dir, 1)).unwrap();
    bytes.windows(needle.len()).position(|w| w == needle).unwrap() as u64
}

#[test]
fn clean_reopen_loads_the_index_and_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 30);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let report = store.recovery_report();
    assert!(report.index_loaded, "{report:?}");
    assert_eq!(report.replayed_events, 0);
    assert_eq!(store.last_position(), (0..30).map(|i| i % 3 + 1).sum::<u64>());
}

/// The location table loaded from the index file is read in place from
/// that file; positions appended after open extend it. Reads that cross
/// from the loaded part to the appended one, in both directions, and an
/// index save renamed over the loaded file while the store still reads
/// it, must all see exactly the log's events.
#[test]
fn a_store_reads_and_extends_the_index_it_loaded_across_saves() {
    let dir = tempfile::tempdir().unwrap();
    let options = || small_segments().with_index_checkpoint_bytes(8 * 1024);
    let store = Store::open(dir.path(), options()).unwrap();
    for i in 0..300 {
        store
            .append(&format!("S-{}", i % 7), ExpectedVersion::Any, [event("E", i)])
            .unwrap();
    }
    let expected_first = summary(&all(&store));
    store.close().unwrap();
    for round in 0..3u64 {
        let store = Store::open(dir.path(), options()).unwrap();
        assert!(store.recovery_report().index_loaded, "{:?}", store.recovery_report());
        for i in 0..200 {
            let n = 1_000 * (round + 1) + i;
            store
                .append(&format!("S-{}", n % 7), ExpectedVersion::Any, [event("E", n)])
                .unwrap();
        }
        // Saved while the loaded file is still mapped and read.
        store.save_index().unwrap();
        let forward = summary(&all(&store));
        assert_eq!(forward.len() as u64, 300 + 200 * (round + 1));
        assert_eq!(&forward[..300], &expected_first[..]);
        assert!(forward.iter().enumerate().all(|(i, e)| e.0 == i as u64 + 1));
        let mut backward = summary(
            &store
                .read_all(annal::ReadAll::backward())
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
        );
        backward.reverse();
        assert_eq!(backward, forward);
        for s in 0..7 {
            let name = format!("S-{s}");
            let from_all: Vec<_> = forward.iter().filter(|e| e.1 == name).cloned().collect();
            assert_eq!(summary(&stream(&store, &name)), from_all);
        }
        store.close().unwrap();
    }
}

#[test]
fn torn_last_batch_is_cut_at_every_byte_offset() {
    let base = tempfile::tempdir().unwrap();
    let (start, end) = build(base.path(), 12);
    let full = summary(&all(&Store::open(base.path(), Options::default()).unwrap()));
    let last_count = 11 % 3 + 1; // the last batch (i = 11) has 3 events
    let kept = full.len() - last_count;
    fs::remove_file(base.path().join("index")).unwrap();
    for cut in start..end {
        for zero_fill in [true, false] {
            let work = tempfile::tempdir().unwrap();
            files::copy_files_but_lock(base.path(), work.path());
            let seg = segment_path(work.path(), 1);
            let mut bytes = fs::read(&seg).unwrap();
            if zero_fill {
                // The preallocated file: unsynced bytes come back as zeros.
                bytes[cut as usize..end as usize].fill(0);
            } else {
                bytes.truncate(cut as usize);
            }
            fs::write(&seg, &bytes).unwrap();
            let store = Store::open(work.path(), Options::default())
                .unwrap_or_else(|e| panic!("cut at {cut} (zero fill {zero_fill}): {e}"));
            let got = summary(&all(&store));
            assert_eq!(got, full[..kept], "cut at {cut}");
            // The store goes on: a new append lands right after.
            let r = store
                .append("New-1", ExpectedVersion::NoStream, [event("E", 1)])
                .unwrap();
            assert_eq!(r.first_position, kept as u64 + 1);
            drop(store);
            let store = Store::open(work.path(), Options::default()).unwrap();
            assert_eq!(store.last_position(), kept as u64 + 1);
        }
    }
}

#[test]
fn garbage_after_the_last_batch_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (_, end) = build(dir.path(), 5);
    let seg = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    for (i, b) in bytes[end as usize..end as usize + 100].iter_mut().enumerate() {
        *b = (i * 37 + 11) as u8;
    }
    fs::write(&seg, &bytes).unwrap();
    fs::remove_file(dir.path().join("index")).unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.recovery_report().torn_tail_bytes, 100);
    assert_eq!(store.last_position(), 9); // batches of 1, 2, 3, 1, 2 events
    drop(store);
    // The garbage was zeroed: the next open finds a clean end.
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.recovery_report().torn_tail_bytes, 0);
}

#[test]
fn a_bad_crc_followed_by_valid_data_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 20);
    fs::remove_file(dir.path().join("index")).unwrap();
    let seg = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let at = 64 + 50; // inside the first batch
    bytes[at] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    match &err {
        Error::Corruption { file, offset, .. } => {
            assert_eq!(file, &seg);
            assert_eq!(*offset, 64);
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(err.to_string().contains("00000000000000000001.seg"), "{err}");
}

#[test]
fn corruption_before_the_index_checkpoint_is_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 20);
    let seg = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[64 + 60] ^= 0x01; // in the first batch, which the index covers
    fs::write(&seg, &bytes).unwrap();
    let store = Store::open(dir.path(), Options::default());
    // Open may refuse (it reads the last events for the idempotency window)
    // or succeed; either way the bad event is never returned as data.
    if let Ok(store) = store {
        let first = store.read_all(annal::ReadAll::forward()).unwrap().next().unwrap();
        assert!(matches!(first, Err(Error::Corruption { offset: 64, .. })), "{first:?}");
    }
}

#[test]
fn stale_index_file_is_used_and_the_tail_replayed() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 10);
    let stale = fs::read(dir.path().join("index")).unwrap();
    let expected = {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        for i in 0..7 {
            store.append("Late-1", ExpectedVersion::Any, [event("L", i)]).unwrap();
        }
        summary(&all(&store))
    };
    fs::write(dir.path().join("index"), &stale).unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert!(store.recovery_report().index_loaded);
    assert_eq!(store.recovery_report().replayed_events, 7);
    assert_eq!(summary(&all(&store)), expected);
    assert_eq!(store.stream_version("Late-1"), Some(7));
}

#[test]
fn corrupt_or_foreign_index_files_are_rebuilt_and_a_log_behind_the_index_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 10);
    let expected = summary(&all(&Store::open(dir.path(), Options::default()).unwrap()));
    let good = fs::read(dir.path().join("index")).unwrap();

    // Corrupt: one flipped bit anywhere.
    for at in [0usize, 20, 40, 79, 100, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x08;
        fs::write(dir.path().join("index"), &bad).unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        assert!(!store.recovery_report().index_loaded, "flip at {at}");
        assert_eq!(summary(&all(&store)), expected);
    }

    // Foreign: the index of another store.
    let other = tempfile::tempdir().unwrap();
    build(other.path(), 10);
    fs::copy(other.path().join("index"), dir.path().join("index")).unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert!(!store.recovery_report().index_loaded);
    assert!(
        store
            .recovery_report()
            .index_rejected
            .as_deref()
            .unwrap()
            .contains("another store")
    );
    assert_eq!(summary(&all(&store)), expected);
    store.close().unwrap();

    // Ahead: the index covers a batch the log lost. The store syncs the
    // log before saving an index file, so this is acknowledged data gone
    // missing (files restored from different times, or damage): reported,
    // never silently rebuilt without it.
    let ahead = tempfile::tempdir().unwrap();
    files::copy_files_but_lock(dir.path(), ahead.path());
    {
        let store = Store::open(ahead.path(), Options::default()).unwrap();
        store.append("Lost-1", ExpectedVersion::Any, [event("L", 1)]).unwrap();
    }
    fs::copy(ahead.path().join("index"), dir.path().join("index")).unwrap();
    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    assert!(err.to_string().contains("index file records durable data"), "{err}");
    // Removing the index file is the explicit way to accept the shorter log.
    fs::remove_file(dir.path().join("index")).unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(summary(&all(&store)), expected);
    assert_eq!(store.stream_version("Lost-1"), None);
}

#[test]
fn missing_or_foreign_segments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_segments()).unwrap();
    for i in 0..600 {
        store.append("S-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    assert!(store.stats().segments >= 3);
    store.close().unwrap();
    let work = tempfile::tempdir().unwrap();
    files::copy_files_but_lock(dir.path(), work.path());
    fs::remove_file(segment_path(work.path(), 2)).unwrap();
    let err = Store::open(work.path(), small_segments()).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    // The message names the file after the gap too (a stray file numbered
    // past the last segment looks like a gap).
    let next = segment_path(work.path(), 3);
    let next = next.file_name().unwrap().to_str().unwrap();
    assert!(err.to_string().contains(next), "{err}");

    let other = tempfile::tempdir().unwrap();
    Store::open(other.path(), small_segments()).unwrap().close().unwrap();
    let work = tempfile::tempdir().unwrap();
    files::copy_files_but_lock(dir.path(), work.path());
    fs::copy(segment_path(other.path(), 1), segment_path(work.path(), 1)).unwrap();
    let err = Store::open(work.path(), small_segments()).unwrap_err();
    assert!(err.to_string().contains("another store"), "{err}");
}

#[test]
fn a_sealed_segment_with_a_bad_tail_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_segments()).unwrap();
    for i in 0..600 {
        store.append("S-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    store.close().unwrap();
    fs::remove_file(dir.path().join("index")).unwrap();
    let seg = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff; // inside the sealed segment's last batch
    fs::write(&seg, &bytes).unwrap();
    let err = Store::open(dir.path(), small_segments()).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
}

#[test]
fn reopening_with_another_segment_size_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        for i in 0..100 {
            store.append("S-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
        }
    }
    let store = Store::open(dir.path(), small_segments()).unwrap();
    for i in 0..600 {
        store.append("S-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    drop(store);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.stream_version("S-1"), Some(700));
    assert_eq!(all(&store).len(), 700);
}

/// A damaged record whose back-offset leads to another, valid batch: open
/// (which refills the idempotency window from the last batches) reports
/// corruption instead of walking backwards for ever. Found by the
/// `recovery` fuzz target.
#[test]
fn a_record_pointing_at_another_batch_is_reported_not_looped_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    for i in 0..4 {
        store.append("S-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    // Event 3: not in the last batch, which open checks whole.
    let first = store.read_position(1).unwrap().unwrap();
    let last = store.read_position(3).unwrap().unwrap();
    let (first_raw, last_raw) = (first.raw_record().to_vec(), last.raw_record().to_vec());
    store.close().unwrap();
    let first_back = u32::from_le_bytes(first_raw[8..12].try_into().unwrap()) as u64;
    let first_batch = find(dir.path(), &first_raw) - first_back;
    let last_at = find(dir.path(), &last_raw);
    // Point event 3's record at the first batch (its own CRC then fails,
    // but the batch it leads to is valid and holds position 1).
    let path = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let back = u32::try_from(last_at - first_batch).unwrap();
    bytes[last_at as usize + 8..last_at as usize + 12].copy_from_slice(&back.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let opener = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Store::open(&opener, Options::default()).map(|_| ()));
    });
    let outcome = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("open must not loop");
    assert!(matches!(outcome, Err(Error::Corruption { .. })), "{outcome:?}");
}

/// The position the index file on disk covers (0 when there is none).
fn index_file_position(dir: &Path) -> u64 {
    match fs::read(dir.join(annal::index::file::FILE_NAME)) {
        Ok(bytes) => annal::index::file::decode_checkpoint(&bytes).unwrap().0.last_position,
        Err(_) => 0,
    }
}

/// Once the index file is larger than `index_checkpoint_bytes`, the index
/// is saved after as much log as the file holds, not after every
/// `index_checkpoint_bytes`: saving it never writes more than the log.
#[test]
fn index_saves_are_spaced_by_the_index_file_size_once_it_is_larger() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .with_durability(annal::Durability::Buffered)
        .with_index_checkpoint_bytes(4096);
    let store = Store::open(dir.path(), options.clone()).unwrap();
    // Many small events: an index file far larger than 4 KiB.
    for i in 0..40u64 {
        let events: Vec<_> = (0..100).map(|k| event("E", i * 100 + k)).collect();
        store.append(&format!("S-{i}"), ExpectedVersion::Any, events).unwrap();
    }
    store.close().unwrap();
    // Reopened: nothing written since the save, which was of this size.
    let store = Store::open(dir.path(), options).unwrap();
    let file_bytes = fs::metadata(dir.path().join("index")).unwrap().len();
    assert!(file_bytes > 40 * 1024, "index file of {file_bytes} bytes");
    let saved_at = index_file_position(dir.path());
    assert_eq!(saved_at, 4000);
    // Appends of about 2 KiB: far more than 4 KiB in all, less than the
    // index file's size. No save may start.
    let append_big = || {
        store
            .append(
                "Big-1",
                ExpectedVersion::Any,
                [annal::EventData::new("B", vec![b'x'; 2000])],
            )
            .unwrap()
    };
    let mut written = 0;
    while written + 2200 < file_bytes {
        append_big();
        written += 2100;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        index_file_position(dir.path()),
        saved_at,
        "saved before the file's size of log"
    );
    // Past it: the background save comes.
    for _ in 0..4 {
        append_big();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while index_file_position(dir.path()) == saved_at {
        assert!(
            std::time::Instant::now() < deadline,
            "no save after the file's size of log"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    store.close().unwrap();
}

/// A sparse copy of a store (a copy tool dropped runs of zeros) gets its
/// holes filled by a writing open, so that no map of it lands in a hole:
/// there a copy into the writable map on a full disk (and on tmpfs any
/// access) would kill the process with `SIGBUS` instead of failing. The
/// events are unchanged.
#[cfg(target_os = "linux")]
#[test]
fn a_writing_open_fills_the_holes_of_a_sparse_copy() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 20);
    let open = |options: Options| Store::open(dir.path(), options).unwrap();
    let store = open(Options::default().with_read_only(true));
    let before = summary(&all(&store));
    store.close().unwrap();
    let seg = segment_path(dir.path(), 1);
    let bytes = fs::read(&seg).unwrap();
    if !make_sparse(&seg) {
        return; // this file system keeps no holes
    }
    let allocated = || fs::metadata(&seg).unwrap().blocks() * 512;
    // A read-only open writes nothing. (On tmpfs a read through a map
    // gives a hole a page: the holes are made again there.)
    let reader = open(Options::default().with_read_only(true));
    assert_eq!(summary(&all(&reader)), before);
    reader.close().unwrap();
    if on_tmpfs(&seg) {
        assert!(make_sparse(&seg));
    }
    assert!(allocated() < bytes.len() as u64);

    let store = open(Options::default());
    assert!(
        allocated() >= bytes.len() as u64,
        "{} of {} bytes allocated",
        allocated(),
        bytes.len()
    );
    assert_eq!(summary(&all(&store)), before);
    store
        .append("after-1", ExpectedVersion::NoStream, [event("A", 1)])
        .unwrap();
    assert_eq!(summary(&all(&store))[..before.len()], before[..]);
    store.close().unwrap();
}

/// Whether `path` is on tmpfs.
#[cfg(target_os = "linux")]
fn on_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `statfs` fills the struct it is given, for a valid C string.
    // (`f_type` is `i64` here, narrower on other targets.)
    #[allow(clippy::useless_conversion)]
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut st) == 0 && i64::from(st.f_type) == TMPFS_MAGIC
    }
}

/// Makes a segment sparse from its first page after the data on, as `cp
/// --sparse=always` leaves it; false when the file system keeps no holes.
#[cfg(target_os = "linux")]
fn make_sparse(seg: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let bytes = fs::read(seg).unwrap();
    let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    let keep = data_end.div_ceil(4096) * 4096;
    let file = fs::OpenOptions::new().write(true).open(seg).unwrap();
    file.set_len(keep).unwrap();
    file.set_len(bytes.len() as u64).unwrap();
    file.sync_all().unwrap();
    fs::metadata(seg).unwrap().blocks() * 512 < bytes.len() as u64
}

/// `repair` writes too: it fills the holes of a sparse copy before it maps
/// the segments, as a writing open does.
#[cfg(target_os = "linux")]
#[test]
fn repair_fills_the_holes_of_a_sparse_copy() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 20);
    let seg = segment_path(dir.path(), 1);
    let bytes = fs::read(&seg).unwrap();
    if !make_sparse(&seg) {
        return;
    }
    let report = annal::tools::repair(dir.path()).unwrap();
    assert!(!report.repaired, "nothing to repair: {report:?}");
    assert!(fs::metadata(&seg).unwrap().blocks() * 512 >= bytes.len() as u64);
    assert_eq!(fs::read(&seg).unwrap(), bytes, "the bytes are the same");
}

/// Damage outside what an open checks (a store with an index file and no
/// id window: the open replays and checks nothing) is found when the
/// damaged event is read: reads check each batch's CRCs the first time.
#[test]
fn damage_an_open_does_not_check_is_reported_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().with_idempotency_window_events(0);
    {
        let store = Store::open(dir.path(), options.clone()).unwrap();
        for i in 0..20 {
            store.append("S-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
        }
        store.close().unwrap();
    }
    // One byte of the first event's data.
    let seg = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let first = event("E", 0);
    let at = find(dir.path(), first.data()) as usize;
    bytes[at] ^= 0x20;
    fs::write(&seg, bytes).unwrap();

    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(store.recovery_report().replayed_events, 0, "the index file was loaded");
    let read: Vec<_> = store.read_all(annal::ReadAll::forward()).unwrap().collect();
    assert!(
        matches!(read.first(), Some(Err(Error::Corruption { .. }))),
        "{:?}",
        read.first()
    );
    assert_eq!(read.len(), 1, "the read stops at the damage");
    let err = store
        .read_stream("S-1", annal::ReadStream::forward())
        .unwrap()
        .next()
        .unwrap();
    assert!(matches!(err, Err(Error::Corruption { .. })));
}
