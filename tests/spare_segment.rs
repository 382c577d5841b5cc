//! The next segment made ahead of need (docs/DESIGN.md, "Segments made
//! ahead"): made once the active segment is half full or was reached by a
//! roll-over, its space reserved rather than written in the periodic and
//! buffered modes, adopted whole at
//! the roll-over, removed at close, optional when it cannot be made, and
//! safe under a power loss at every step of its adoption.

mod common;
#[cfg(feature = "sim")]
mod sim_support;

use std::path::Path;
use std::time::{Duration, Instant};

use annal::{Durability, EventData, ExpectedVersion, Options, ReadAll, Store};
use common::files::{assert_sealed_segments_end_at_their_data, segment_lens};

const SEGMENT: u64 = 4 * 1024 * 1024;
const SPARE_NAME: &str = "next-segment.tmp";

fn options() -> Options {
    Options::default()
        .with_segment_size_bytes(SEGMENT)
        .with_durability(Durability::Buffered)
}

/// 64 events of 1 KiB: 64 KiB and a little more per append.
const BATCH_BYTES: u64 = 64 * 1024;

fn batch(round: u64) -> Vec<EventData> {
    (0..64)
        .map(|i| EventData::new("Filled", vec![(round + i) as u8; 1024]))
        .collect()
}

/// Appends until the store has `segments` segment files.
fn fill_until(store: &Store, dir: &Path, segments: usize, round: &mut u64) {
    while segment_lens(dir).len() < segments {
        store
            .append("Fill-1", ExpectedVersion::Any, batch(*round))
            .expect("append");
        *round += 1;
    }
}

/// Waits (bounded) until the store reports a spare ready.
fn wait_for_spare(store: &Store) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes = store.stats().spare_segment_bytes;
        if bytes > 0 || Instant::now() > deadline {
            return bytes;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_next_segment_is_made_ahead_adopted_whole_and_removed_at_close() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, options()).unwrap();
    let mut round = 0;
    // Under half of the first segment: nothing is made yet.
    store.append("Fill-1", ExpectedVersion::Any, batch(round)).unwrap();
    round += 1;
    assert_eq!(store.stats().spare_segment_bytes, 0);
    assert!(!dir.join(SPARE_NAME).exists());
    // Past half: the spare appears, whole.
    while round * BATCH_BYTES < SEGMENT * 6 / 10 {
        store.append("Fill-1", ExpectedVersion::Any, batch(round)).unwrap();
        round += 1;
    }
    assert_eq!(wait_for_spare(&store), SEGMENT, "no spare was made");
    assert_eq!(std::fs::metadata(dir.join(SPARE_NAME)).unwrap().len(), SEGMENT);
    // The roll-over adopts it: the new segment has its whole size from
    // the start (a segment created on the spot starts with 1 MiB) and the
    // sealed one ends at its data. (The next spare is asked for at once:
    // `a_roll_over_asks_for_the_next_spare_at_once`.)
    fill_until(&store, &dir, 2, &mut round);
    let lens = segment_lens(&dir);
    assert!(lens[0] < SEGMENT, "the first segment was not sealed: {lens:?}");
    assert_eq!(lens[1], SEGMENT, "the second segment was not the spare: {lens:?}");
    // Once more, for the next roll-over.
    let rolled_at = round;
    while (round - rolled_at) * BATCH_BYTES < SEGMENT * 6 / 10 {
        store.append("Fill-1", ExpectedVersion::Any, batch(round)).unwrap();
        round += 1;
    }
    assert_eq!(wait_for_spare(&store), SEGMENT);
    store.close().unwrap();
    assert!(!dir.join(SPARE_NAME).exists(), "close left the spare behind");
    // Every event is there, in order, after a reopen.
    let store = Store::open(&dir, options()).unwrap();
    let events: Vec<_> = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
    assert_eq!(events.len() as u64, round * 64);
    for (i, e) in events.iter().enumerate() {
        let (r, k) = (i as u64 / 64, i as u64 % 64);
        assert_eq!(e.data(), &vec![(r + k) as u8; 1024][..], "event {}", i + 1);
    }
}

/// After a roll-over the next spare is asked for at once, not half a
/// segment later: a writer fast enough to fill half a segment before a
/// spare is made would otherwise never find one ready.
#[test]
fn a_roll_over_asks_for_the_next_spare_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, options()).unwrap();
    let mut round = 0;
    fill_until(&store, &dir, 2, &mut round);
    let rolled_at = round;
    // Wait for the spare without appending: the segment stays under half.
    assert_eq!(wait_for_spare(&store), SEGMENT, "no spare asked for at the roll-over");
    assert!(
        (round - rolled_at + 1) * BATCH_BYTES < SEGMENT / 2,
        "the new segment is past half: the test proves nothing"
    );
    fill_until(&store, &dir, 3, &mut round);
    assert_eq!(segment_lens(&dir)[2], SEGMENT, "the third segment was not the spare");
    store.close().unwrap();
}

/// Where the file system reports space reserved and never written as a
/// hole (ext4), the periodic and buffered modes' spare shows it: its
/// space was reserved, not zero-filled. A writing open reserves such
/// holes again instead of writing their bytes back (which would rewrite
/// up to a whole segment of zeros at each open), and changes no byte.
#[cfg(target_os = "linux")]
#[test]
fn a_reserved_spare_is_not_rewritten_by_a_reopen() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, options()).unwrap();
    let mut round = 0;
    // Past half, then wait for the spare: a fast writer would otherwise
    // roll over before it is made.
    while round * BATCH_BYTES < SEGMENT * 6 / 10 {
        store.append("Fill-1", ExpectedVersion::Any, batch(round)).unwrap();
        round += 1;
    }
    assert_eq!(wait_for_spare(&store), SEGMENT, "no spare was made");
    fill_until(&store, &dir, 2, &mut round);
    store.append("Fill-1", ExpectedVersion::Any, batch(round)).unwrap();
    round += 1;
    store.close().unwrap();
    let seg = dir.join("00000000000000000002.seg");
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        SEGMENT,
        "not adopted from a spare"
    );
    // Where the reserved space starts, as the file system reports it with
    // the file's clean pages out of the page cache (ext4 reports reserved
    // space it holds pages of as data), as after a reboot.
    let first_hole = |path: &Path| -> u64 {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        file.sync_all().unwrap();
        // SAFETY: `posix_fadvise` and `lseek` on a file open for the call.
        let at = unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE)
        };
        u64::try_from(at).unwrap()
    };
    let bytes = std::fs::read(&seg).unwrap();
    let hole = first_hole(&seg);
    // SAFETY: `statfs` fills the struct it is given, for a path that is a
    // valid C string.
    let ext4 = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        let path = std::ffi::CString::new(seg.as_os_str().as_encoded_bytes()).unwrap();
        libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type == 0xEF53
    };
    if ext4 {
        assert!(hole < SEGMENT, "the spare's zeros were written, not reserved");
    }
    let store = Store::open(&dir, options()).unwrap();
    assert_eq!(store.last_position(), round * 64);
    assert!(
        std::fs::metadata(&seg).unwrap().blocks() * 512 >= SEGMENT,
        "holes left unfilled"
    );
    store.close().unwrap();
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "the reopen changed bytes");
    if hole < SEGMENT {
        // Reserved and reported as a hole: still one after the reopen.
        assert_eq!(first_hole(&seg), hole, "the reopen wrote the reserved space");
    }
}

/// Segments created on the spot (no spare can be made here) grow a step at
/// a time, the next step's zeros written ahead by the background thread
/// (`log/ahead.rs`): none of them ever lands on data. Batches of every
/// size, some larger than a step, read back whole while writing and after
/// a reopen; each sealed segment ends at its data.
#[test]
fn zeros_written_ahead_never_land_on_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // A directory in the spare's place: every segment is created on the spot.
    std::fs::create_dir_all(dir.join(SPARE_NAME)).unwrap();
    let store = Store::open(&dir, options()).unwrap();
    let sizes = [1usize, 7, 64, 300, 1500, 40, 2800, 3];
    let mut expected: Vec<Vec<u8>> = Vec::new();
    let mut round = 0u64;
    while segment_lens(&dir).len() < 12 {
        let n = sizes[(round % sizes.len() as u64) as usize];
        let events: Vec<EventData> = (0..n)
            .map(|i| {
                let k = expected.len() + i;
                EventData::new("Filled", vec![(k % 251) as u8 + 1; 700 + k % 300])
            })
            .collect();
        expected.extend(events.iter().map(|e| e.data().to_vec()));
        store.append("Fill-1", ExpectedVersion::Any, events).unwrap();
        round += 1;
        if round.is_multiple_of(25) {
            let read: Vec<_> = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
            assert_eq!(read.len(), expected.len());
            for (e, want) in read.iter().zip(&expected) {
                assert_eq!(e.data(), &want[..], "event {} while writing", e.position());
            }
        }
    }
    store.close().unwrap();
    // Each sealed segment is exactly as long as the next one's header says
    // its last batch ends: no zero landed after its cut.
    assert_sealed_segments_end_at_their_data(&dir);
    let store = Store::open(&dir, options()).unwrap();
    let read: Vec<_> = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
    assert_eq!(read.len(), expected.len());
    for (e, want) in read.iter().zip(&expected) {
        assert_eq!(e.data(), &want[..], "event {} after reopening", e.position());
    }
}

#[test]
fn a_spare_that_cannot_be_made_leaves_appends_and_roll_overs_working() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // A directory in the spare's place: making the spare fails each time.
    std::fs::create_dir_all(dir.join(SPARE_NAME)).unwrap();
    let store = Store::open(&dir, options()).unwrap();
    let mut round = 0;
    fill_until(&store, &dir, 3, &mut round);
    assert_eq!(store.stats().spare_segment_bytes, 0);
    let lens = segment_lens(&dir);
    // Created on the spot: a first preallocation, not the whole segment.
    assert!(lens[2] < SEGMENT, "{lens:?}");
    store.close().unwrap();
    assert!(dir.join(SPARE_NAME).is_dir(), "someone else's directory was touched");
    let store = Store::open(&dir, options()).unwrap();
    assert_eq!(store.last_position(), round * 64);
}

/// A spare that could not be made is not asked for again before the next
/// roll-over, but is after it: the roll-over makes the spare askable again
/// whatever it finds (a failed one included), or no spare would be made
/// until the next open.
#[test]
fn a_spare_that_failed_is_asked_for_again_after_the_roll_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // A directory in the spare's place: making the spare fails.
    std::fs::create_dir_all(dir.join(SPARE_NAME)).unwrap();
    let store = Store::open(&dir, options()).unwrap();
    let mut round = 0u64;
    let append = |round: &mut u64| {
        store.append("Fill-1", ExpectedVersion::Any, batch(*round)).unwrap();
        *round += 1;
    };
    // Past half of the first segment: the spare is asked for, and fails.
    while round * BATCH_BYTES < SEGMENT * 6 / 10 {
        append(&mut round);
    }
    // Time for the background thread to fail (at once: it cannot remove a
    // directory), so that the roll-over finds the spare failed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(store.stats().spare_segment_bytes, 0);
    // The obstacle goes: the spare could be made now, but is not asked for
    // again before the roll-over.
    std::fs::remove_dir(dir.join(SPARE_NAME)).unwrap();
    while (round + 1) * BATCH_BYTES < SEGMENT * 9 / 10 {
        append(&mut round);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        store.stats().spare_segment_bytes,
        0,
        "a failed spare was asked for again"
    );
    fill_until(&store, &dir, 2, &mut round);
    assert_eq!(
        wait_for_spare(&store),
        SEGMENT,
        "no spare asked for after the roll-over"
    );
    fill_until(&store, &dir, 3, &mut round);
    let lens = segment_lens(&dir);
    assert_eq!(lens[2], SEGMENT, "the third segment was not the spare: {lens:?}");
    store.close().unwrap();
}

#[test]
fn a_read_only_open_leaves_a_spare_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, options()).unwrap();
    store.append("A-1", ExpectedVersion::Any, batch(0)).unwrap();
    store.close().unwrap();
    // As a crash would leave it.
    std::fs::write(dir.join(SPARE_NAME), vec![0u8; 4096]).unwrap();
    let reader = Store::open(&dir, options().with_read_only(true)).unwrap();
    assert_eq!(reader.last_position(), 64);
    reader.close().unwrap();
    assert!(dir.join(SPARE_NAME).exists());
    // A writable open removes it with the other leftovers.
    let store = Store::open(&dir, options()).unwrap();
    assert!(!dir.join(SPARE_NAME).exists());
    assert_eq!(store.last_position(), 64);
}

/// A power loss at each call of a roll-over that adopts a spare (header,
/// sync, rename, directory sync, first write and sync in the new segment)
/// keeps every acknowledged append and every batch whole.
#[cfg(feature = "sim")]
mod power_loss {
    use super::sim_support::{Ledger, check, dir, record_attempt_into, wait_for_spare_made};
    use annal::io::sim::SimFs;
    use annal::{Durability, EventData, ExpectedVersion, Options, Store, StreamAppend};

    use super::Duration;

    const SEGMENT: u64 = 64 * 1024;

    fn options() -> Options {
        Options::default()
            .with_segment_size_bytes(SEGMENT)
            .with_durability(Durability::Sync)
    }

    fn append(store: &Store<SimFs>, ledger: &mut Ledger, round: u64) -> bool {
        let events: Vec<EventData> = (0..4)
            .map(|i| EventData::new("Filled", vec![(round * 4 + i) as u8; 1000]))
            .collect();
        let stream = format!("S-{}", round % 3);
        let ids: Vec<_> = events.iter().map(EventData::id).collect();
        let appends = vec![StreamAppend::new(stream.clone(), ExpectedVersion::Any, events)];
        record_attempt_into(ledger, &appends);
        let Ok(results) = store.append_multi(&appends) else {
            return false;
        };
        for (i, id) in (0u64..).zip(ids) {
            let r = &results[0];
            ledger
                .acked
                .insert(id, (stream.clone(), r.first_version + i, r.first_position + i));
        }
        true
    }

    /// On a disk that holds the spare but not the rest of the active
    /// segment's growth, the spare gives its space back: appends go on,
    /// through the roll-over, instead of failing with `StorageFull`.
    #[test]
    fn the_spare_gives_way_when_the_log_needs_the_space() {
        const BIG: u64 = 16 * 1024 * 1024;
        let fs = SimFs::new(7);
        let options = Options::default()
            .with_segment_size_bytes(BIG)
            .with_durability(Durability::Buffered);
        let store = Store::open_with(fs.clone(), dir(), options).expect("open");
        let payload = vec![5u8; 256 * 1024];
        let append = |n: u64| {
            store
                .append(
                    "Big-1",
                    ExpectedVersion::Any,
                    [EventData::new("Filled", payload.clone())],
                )
                .unwrap_or_else(|e| panic!("append {n}: {e}"))
        };
        // Just past half: the spare is asked for, and made whole.
        let mut n = 0;
        while n * 256 * 1024 < BIG / 2 + 512 * 1024 {
            append(n);
            n += 1;
        }
        wait_for_spare_made(&store, Duration::from_secs(60));
        assert_eq!(store.stats().spare_segment_bytes, BIG, "no spare was made");
        // The disk holds what is there now and 1 MiB more: the active
        // segment cannot finish growing while the spare holds its space.
        let used: u64 = fs
            .files()
            .iter()
            .map(|p| fs.read(p).map_or(0, |b| b.len() as u64))
            .sum();
        fs.set_capacity(Some(used + 1024 * 1024));
        let segments = store.stats().segments;
        while store.stats().segments == segments {
            append(n);
            n += 1;
        }
        for _ in 0..4 {
            append(n);
            n += 1;
        }
        assert_eq!(store.stats().spare_segment_bytes, 0);
        assert!(
            !fs.files().iter().any(|p| p.ends_with("next-segment.tmp")),
            "the spare is still there"
        );
        // No spare is made again before a reopen, however far it goes.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(store.stats().spare_segment_bytes, 0);
        store.close().expect("close");
        fs.set_capacity(None);
        let store = Store::open_with(fs, dir(), Options::default().with_segment_size_bytes(BIG)).expect("reopen");
        assert_eq!(store.last_position(), n);
    }

    #[test]
    fn a_power_loss_at_each_step_of_adopting_a_spare_loses_nothing_acknowledged() {
        let mut adopted = 0;
        for n in 0..48 {
            let fs = SimFs::new(n);
            let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
            let mut ledger = Ledger::default();
            let mut round = 0;
            // Past half of the first segment, then wait for the spare.
            while store.last_position() * 1000 < SEGMENT * 6 / 10 {
                assert!(append(&store, &mut ledger, round));
                round += 1;
            }
            wait_for_spare_made(&store, Duration::from_secs(30));
            assert_eq!(store.stats().spare_segment_bytes, SEGMENT, "no spare was made");
            // Power loss before the n-th mutating call from here; keep
            // appending through the roll-over.
            fs.crash_after(n);
            let segments = store.stats().segments;
            for _ in 0..40 {
                if !append(&store, &mut ledger, round) {
                    break;
                }
                round += 1;
            }
            if store.stats().segments > segments && store.stats().spare_segment_bytes == 0 {
                adopted += 1;
            }
            fs.crash_now();
            let image = fs.image().expect("crashed");
            drop(store);
            let store = Store::open_with(SimFs::from_image(&image, n), dir(), options())
                .unwrap_or_else(|e| panic!("crash before call {n}: reopen failed: {e}"));
            check(&store, &ledger);
            let r = store
                .append("After-1", ExpectedVersion::NoStream, [EventData::new("Fine", "{}")])
                .unwrap_or_else(|e| panic!("crash before call {n}: append after recovery failed: {e}"));
            assert_eq!(r.first_version, 1);
        }
        assert!(adopted > 0, "no run got through a roll-over");
    }
}
