//! Tests written by a tool-driven mutation review of crash recovery
//! (`cargo mutants` over `src/recovery/{chain,replay,mod}.rs`,
//! `src/writer/decide.rs` and `src/idempotency.rs`): each one kills a
//! mutant that the rest of the suite let through, and asserts the promise
//! that the mutant breaks (acknowledged events survive or the open says
//! where they were lost; another copy's log is never served as this
//! store's), not how the code keeps it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use annal::log::segment::{self, SEGMENT_HEADER_BYTES, SegmentHeader};
use annal::tools::verify;
use annal::{Error, EventData, ExpectedVersion, Options, ReadAll, Store};
use common::failing_open::FailingOpen;

fn seg(dir: &Path, n: u64) -> PathBuf {
    segment::path(dir, n)
}

fn header_of(dir: &Path, n: u64) -> SegmentHeader {
    let path = seg(dir, n);
    SegmentHeader::decode(&fs::read(&path).unwrap(), &path).unwrap()
}

/// A closed store in 16 KiB segments whose streams `S-0` to `S-2` took
/// small appends until the log rolled over to segment `n`.
fn store_rolled_to_segment(n: u64) -> (tempfile::TempDir, Options) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().with_segment_size_bytes(16 * 1024);
    let store = Store::open(dir.path(), options.clone()).unwrap();
    common::append_until_segment(&store, dir.path(), n, "S", &mut 0);
    store.close().unwrap();
    (dir, options)
}

/// Every valid batch of a segment file's bytes: (start, end, CRC field).
fn batches(bytes: &[u8]) -> Vec<(u64, u64, u32)> {
    let mut out = Vec::new();
    segment::scan(bytes, SEGMENT_HEADER_BYTES, |at, h, _| {
        out.push((at, at + u64::from(h.frame_len), h.crc));
    });
    out
}

/// Asserts that every open of `dir` (read-only and writable) refuses it as
/// corruption in `file` at `offset`, with a reason holding `why`; an open
/// that succeeds fails the test, naming the streams it serves.
#[track_caller]
fn assert_refused(dir: &Path, options: &Options, file: &Path, offset: u64, why: &str) {
    for read_only in [true, false] {
        match Store::open(dir, options.clone().with_read_only(read_only)) {
            Err(Error::Corruption {
                file: f,
                offset: o,
                reason,
            }) => {
                assert_eq!((f.as_path(), o), (file, offset), "read_only {read_only}: {reason}");
                assert!(reason.contains(why), "read_only {read_only}: {reason}");
            }
            Err(e) => panic!("read_only {read_only}: not corruption: {e}"),
            Ok(store) => {
                let mut streams: Vec<String> = store
                    .read_all(ReadAll::forward())
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .map(|e| e.stream().to_string())
                    .collect();
                streams.dedup();
                panic!("opened (read_only {read_only}), serving the streams {streams:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The segment chain (`recovery/chain.rs`: `chain_broken`, `last_batch_start`).
// ---------------------------------------------------------------------------

/// Builds a store in `mixed` whose segments 1 and 2 come from copy `b` and
/// whose segment 3 comes from copy `a`, at the very position where `b`'s
/// log ends: `b`'s segment 1 holds every event before `a`'s segment 3,
/// and `b`'s segment 2 holds none (a tail made by a roll, nothing appended
/// to it yet), `pad` bytes long (zeros after its header). Returns the path
/// of segment 3.
fn mix_with_an_empty_segment_2(pad: impl Fn(u64) -> u64, mixed: &Path) -> PathBuf {
    let options = Options::default().with_segment_size_bytes(16 * 1024);
    let (a, b) = common::files::seeded_copies(&options);
    // `a` rolls to segment 3 in the course of small appends.
    let store = Store::open(a.path(), options.clone()).unwrap();
    common::append_until_segment(&store, a.path(), 3, "A", &mut 0);
    store.close().unwrap();
    let third = header_of(a.path(), 3);
    assert!(seg(a.path(), 3).exists() && !seg(a.path(), 4).exists());
    // `b`, in larger segments, holds other events up to the position
    // before `a`'s segment 3, all in its segment 1.
    let big = options.clone().with_segment_size_bytes(1 << 20);
    let store = Store::open(b.path(), big).unwrap();
    while store.last_position() + 1 < third.first_position {
        store
            .append("B-other", ExpectedVersion::Any, [EventData::new("E", "another copy")])
            .unwrap();
    }
    store.close().unwrap();
    assert!(!seg(b.path(), 2).exists());
    let b1 = fs::read(seg(b.path(), 1)).unwrap();
    let (_, b_end, b_crc) = *batches(&b1).last().unwrap();

    fs::create_dir_all(mixed).unwrap();
    // `b`'s segment 1, sealed at its last batch.
    fs::write(seg(mixed, 1), &b1[..b_end as usize]).unwrap();
    // `b`'s segment 2: linked to its segment 1, starting where `a`'s
    // segment 3 does, empty.
    let header = SegmentHeader {
        store_id: third.store_id,
        segment_id: 2,
        first_position: third.first_position,
        previous_end: b_end,
        previous_crc: b_crc,
    };
    let mut second = header.encode().to_vec();
    second.resize(pad(third.previous_end) as usize, 0);
    fs::write(seg(mixed, 2), second).unwrap();
    // `a`'s segment 3, whose header records how `a`'s segment 2 ended.
    fs::copy(seg(a.path(), 3), seg(mixed, 3)).unwrap();
    assert_ne!((third.previous_end, third.previous_crc), (SEGMENT_HEADER_BYTES, 0));
    seg(mixed, 3)
}

/// A store made of segments 1 and 2 of one copy, whose log holds other
/// events up to the very position before segment 3 (positions and
/// versions all follow on), and segment 3 of another copy. Segment 3's
/// header records a batch that segment 2 does not end with (it holds
/// none): DURABILITY.md guarantee 9 says every open refuses the store,
/// naming segment 3, and `verify` reports it; never are the other copy's
/// events served as this store's. Segment 2 is tried as a bare header,
/// and as long as segment 3's header says its segment 2 was (zeros after
/// the header, as a segment made ahead holds): its length proves nothing
/// either. In the second case the position before segment 3 lies in
/// segment 1, so segment 2's bytes at that event's offset are no batch of
/// its own: read there, they look like a damaged batch in a file of the
/// recorded length, which the chain check leaves to reads (and no read
/// would ever meet it).
/// (Mutants: `chain_broken`, `(SEGMENT_HEADER_BYTES, 0) != recorded` turned
/// into `==` for a previous segment that holds no batch; `open_segments`,
/// `len < SEGMENT_HEADER_BYTES` turned into `<=`: the bare header refused
/// as shorter than its header, so the store is refused naming the wrong
/// segment; `last_batch_start`, the guard `l.segment == previous` replaced
/// by `true`: the event's offset in an earlier segment read in this one.)
#[test]
fn a_segment_after_an_empty_segment_of_another_copy_is_refused() {
    for recorded_length in [false, true] {
        let what = if recorded_length {
            "the recorded length"
        } else {
            "a bare header"
        };
        let pad = move |recorded_end| {
            if recorded_length {
                recorded_end
            } else {
                SEGMENT_HEADER_BYTES
            }
        };
        let tmp = tempfile::tempdir().unwrap();
        let mixed = tmp.path().join("mixed");
        let third = mix_with_an_empty_segment_2(pad, &mixed);
        assert!(
            !verify(&mixed).unwrap().is_clean(),
            "segment 2 as {what}: verify finds the mixed store clean"
        );
        let options = Options::default().with_segment_size_bytes(16 * 1024);
        assert_refused(&mixed, &options, &third, 0, "another copy of the store");
    }
}

// ---------------------------------------------------------------------------
// The durable floor (`recovery/chain.rs`: `log_holds_batch`).
// ---------------------------------------------------------------------------

/// Two copies of one store go on differently: `a` appends a small event,
/// `b` a larger one at the same position, and then both logs end with
/// the very same batch, byte for byte (same position, ids, timestamp and
/// CRC), which ends further on in `b`. `a`'s index file, put next to
/// `b`'s log, records that batch as durable at its end in `a`: the log
/// reaches that point and holds a batch with the recorded last position
/// and CRC, but it ends elsewhere, so what comes before it changed: `a`'s
/// acknowledged event was replaced. Every open must refuse the store,
/// naming the segment and the batch; never serve `b`'s event as `a`'s.
/// (Mutant: `log_holds_batch`, `last != … || end != …` turned into `&&`:
/// a batch with the right CRC and last position is taken wherever it ends.)
#[test]
fn the_index_files_last_batch_ending_elsewhere_in_the_log_is_refused_as_replaced() {
    let options = Options::default();
    let (a, b) = common::files::seeded_copies(&options);
    let store = Store::open(a.path(), options.clone()).unwrap();
    store
        .append("Fork", ExpectedVersion::NoStream, [EventData::new("E", "a")])
        .unwrap();
    store
        .append(
            "Last",
            ExpectedVersion::NoStream,
            [EventData::new("E", "the same batch")],
        )
        .unwrap();
    store.close().unwrap();
    let store = Store::open(b.path(), options.clone()).unwrap();
    store
        .append(
            "Fork",
            ExpectedVersion::NoStream,
            [EventData::new("E", "b".repeat(300))],
        )
        .unwrap();
    store.close().unwrap();

    // `a`'s last batch, copied byte for byte after `b`'s last one.
    let a1 = fs::read(seg(a.path(), 1)).unwrap();
    let &(start, end, _) = batches(&a1).last().unwrap();
    let last_batch = &a1[start as usize..end as usize];
    let mut b1 = fs::read(seg(b.path(), 1)).unwrap();
    let &(_, b_end, _) = batches(&b1).last().unwrap();
    assert!(b_end > start, "the batch must land further on in b");
    let at = b_end as usize;
    if b1.len() < at + last_batch.len() {
        b1.resize(at + last_batch.len(), 0);
    }
    b1[at..at + last_batch.len()].copy_from_slice(last_batch);
    fs::write(seg(b.path(), 1), &b1).unwrap();
    // `b`'s log is whole: it opens on its own and holds both batches.
    fs::remove_file(b.path().join(annal::index::file::FILE_NAME)).unwrap();
    {
        let store = Store::open(b.path(), options.clone().with_read_only(true)).unwrap();
        let events = common::all(&store);
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].data(), "b".repeat(300).as_bytes());
        assert_eq!(events[2].stream(), "Last");
    }
    fs::copy(
        a.path().join(annal::index::file::FILE_NAME),
        b.path().join(annal::index::file::FILE_NAME),
    )
    .unwrap();
    assert_refused(b.path(), &options, &seg(b.path(), 1), b_end, "replaced");
}

// ---------------------------------------------------------------------------
// The torn tail (`recovery/replay.rs`: `durable_proof`, `keep_torn_tail`).
// ---------------------------------------------------------------------------

/// A store whose stream `S` holds two single-event batches, with a
/// snapshot of `S` at version 2, closed, its index file removed (so that
/// only the snapshot speaks for the second batch). Returns the directory,
/// the segment's path and where the second batch starts and ends.
fn store_with_a_snapshot_of_the_last_batch() -> (tempfile::TempDir, PathBuf, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store
        .append("S", ExpectedVersion::NoStream, [EventData::new("E", "first")])
        .unwrap();
    store
        .append("S", ExpectedVersion::Exact(1), [EventData::new("E", "second")])
        .unwrap();
    store.save_snapshot("S", 2, 1, b"state at 2").unwrap();
    store.close().unwrap();
    fs::remove_file(dir.path().join(annal::index::file::FILE_NAME)).unwrap();
    let path = seg(dir.path(), 1);
    let found = batches(&fs::read(&path).unwrap());
    assert_eq!(found.len(), 2);
    let (start, end, _) = found[1];
    (dir, path, start, end)
}

/// DURABILITY.md guarantee 8: a snapshot counts as proof that invalid
/// bytes at the log's end held durable events only when the events it is
/// ahead by could fit in them, at least 42 bytes each. The last batch
/// (the event a snapshot of its stream is at) replaced by 41 non-zero
/// bytes: too few to hold that event, so the snapshot, one event ahead,
/// proves nothing: a torn tail, cut and kept, and the store opens with
/// the first event. With 42 bytes, the same open is refused as
/// corruption where the valid log ends.
/// (Mutants: `MIN_RECORD_BYTES = RECORD_HEADER_BYTES + 2` with `-` (38:
/// 41 bytes taken as proof) or `*` (80: 42 bytes not taken); in
/// `durable_proof`, `*version - have` turned into `/` (2 / 1: two events
/// ahead, 42 bytes not taken); in `replay`, the torn bytes handed to the
/// proof `dirty_end - data_end` turned into `+` (41 bytes taken as
/// thousands).)
#[test]
fn a_snapshot_ahead_by_one_event_proves_damage_only_in_42_bytes_or_more() {
    for (garbage, refused) in [(41usize, false), (42, true)] {
        let (dir, path, start, end) = store_with_a_snapshot_of_the_last_batch();
        let mut bytes = fs::read(&path).unwrap();
        bytes[start as usize..end as usize].fill(0);
        bytes[start as usize..start as usize + garbage].fill(0xAB);
        fs::write(&path, &bytes).unwrap();
        match Store::open(dir.path(), Options::default()) {
            Err(Error::Corruption { file, offset, reason }) if refused => {
                assert_eq!((file, offset), (path.clone(), start), "{reason}");
                assert!(reason.contains("snapshot"), "{reason}");
            }
            Ok(store) if !refused => {
                let report = store.recovery_report();
                assert_eq!(report.torn_tail_bytes, garbage as u64);
                let kept = report.torn_tail_kept.clone().expect("a copy is kept");
                assert_eq!(fs::read(kept).unwrap(), vec![0xAB; garbage]);
                assert_eq!(store.stream_version("S"), Some(1));
                assert_eq!(common::stream(&store, "S")[0].data(), b"first");
            }
            Err(e) => panic!("{garbage} invalid bytes: {e}"),
            Ok(_) => panic!("{garbage} invalid bytes under a snapshot one event ahead: opened"),
        }
    }
}

/// Torn tails met by one open after another at the same offset of the
/// same segment: each open keeps its own copy in `quarantine/` (FORMAT.md:
/// `<N>.seg.torn-<offset>`, the name taken by an earlier copy left alone),
/// none overwritten, each holding the bytes that open cut.
/// (Mutant: `keep_torn_tail`, `n += 1` turned into `n *= 1`: the third
/// copy's name search never ends, and the open hangs.)
#[test]
fn torn_tails_at_the_same_offset_are_each_kept_none_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    common::append_n(&store, "S", "E", 3);
    store.close().unwrap();
    let path = seg(dir.path(), 1);
    let (_, end, _) = *batches(&fs::read(&path).unwrap()).last().unwrap();
    let mut kept = Vec::new();
    for round in 0..4u8 {
        let garbage = vec![0xE0 + round; 10 + usize::from(round)];
        let mut bytes = fs::read(&path).unwrap();
        if bytes.len() < end as usize + garbage.len() {
            bytes.resize(end as usize + garbage.len(), 0);
        }
        bytes[end as usize..end as usize + garbage.len()].copy_from_slice(&garbage);
        fs::write(&path, &bytes).unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let report = store.recovery_report().clone();
        assert_eq!(report.torn_tail_bytes, garbage.len() as u64, "round {round}");
        let copy = report.torn_tail_kept.expect("a copy is kept");
        assert!(
            !kept.iter().any(|(k, _)| k == &copy),
            "round {round}: {copy:?} taken again"
        );
        kept.push((copy, garbage));
        assert_eq!(store.last_position(), 3);
        store.close().unwrap();
    }
    for (copy, garbage) in &kept {
        assert_eq!(&fs::read(copy).unwrap(), garbage, "{copy:?}");
        let name = copy.file_name().unwrap().to_string_lossy().to_string();
        let base = format!("{}.torn-{end}", segment::file_name(1));
        assert!(name.starts_with(&base), "{name}");
    }
}

// ---------------------------------------------------------------------------
// The recovery report (`recovery/replay.rs`: `replay`).
// ---------------------------------------------------------------------------

/// Every valid batch of every segment of `dir`: (segment, start, end).
fn all_batches(dir: &Path) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut n = 1;
    while seg(dir, n).exists() {
        for (start, end, _) in batches(&fs::read(seg(dir, n)).unwrap()) {
            out.push((n, start, end));
        }
        n += 1;
    }
    out
}

/// `Store::recovery_report` says what open found and did: the number of
/// segment files, and the events and log bytes it replayed: those after
/// the point a stale index file covers (every batch from there, across
/// segments), and all of them without an index file.
/// (Mutants in `replay`: the `segments` field left out (0), and
/// `report.replayed_bytes += data_end - from` turned into `-=`, `*=`,
/// `data_end + from` or `data_end / from`.)
#[test]
fn the_recovery_report_counts_the_segments_and_the_bytes_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().with_segment_size_bytes(16 * 1024);
    let index = dir.path().join(annal::index::file::FILE_NAME);
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let mut i = 0;
    common::append_until_segment(&store, dir.path(), 2, "S", &mut i);
    store.close().unwrap();
    let stale = fs::read(&index).unwrap();
    let (covered, _, _) = annal::index::file::decode_checkpoint(&stale).unwrap();
    let store = Store::open(dir.path(), options.clone()).unwrap();
    common::append_until_segment(&store, dir.path(), 4, "S", &mut i);
    let last = store.last_position();
    store.close().unwrap();
    let all = all_batches(dir.path());
    let bytes = |batches: &[(u64, u64, u64)]| batches.iter().map(|(_, start, end)| end - start).sum::<u64>();

    // A stale index file: the batches after the point it covers replayed.
    fs::write(&index, &stale).unwrap();
    let after: Vec<_> = all
        .iter()
        .copied()
        .filter(|&(n, start, _)| (n, start) >= (covered.end_segment, covered.end_offset))
        .collect();
    assert!(after.iter().any(|&(n, ..)| n > covered.end_segment));
    let store = Store::open(dir.path(), options.clone().with_read_only(true)).unwrap();
    let report = store.recovery_report();
    assert!(report.index_loaded, "{report:?}");
    assert_eq!(report.segments, 4);
    assert_eq!(report.replayed_events, last - covered.last_position);
    assert_eq!(report.replayed_bytes, bytes(&after));
    drop(store);

    // No index file: everything replayed.
    fs::remove_file(&index).unwrap();
    let store = Store::open(dir.path(), options.with_read_only(true)).unwrap();
    let report = store.recovery_report();
    assert!(!report.index_loaded, "{report:?}");
    assert_eq!(report.segments, 4);
    assert_eq!(report.replayed_events, last);
    assert_eq!(report.replayed_bytes, bytes(&all));
}

// ---------------------------------------------------------------------------
// Read-only opens (`recovery/mod.rs`: `recover`).
// ---------------------------------------------------------------------------

/// The store's files that this process holds open for writing: each
/// descriptor under `dir` whose access mode (`/proc/self/fdinfo`) is not
/// read-only.
#[cfg(target_os = "linux")]
fn open_for_writing_under(dir: &Path) -> Vec<PathBuf> {
    let dir = fs::canonicalize(dir).unwrap();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc/self/fd").unwrap() {
        let fd = entry.unwrap().file_name();
        let Ok(target) = fs::read_link(Path::new("/proc/self/fd").join(&fd)) else {
            continue;
        };
        if !target.starts_with(&dir) {
            continue;
        }
        let Ok(info) = fs::read_to_string(Path::new("/proc/self/fdinfo").join(&fd)) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        // O_ACCMODE: O_RDONLY is 0.
        if flags & 0o3 != 0 {
            out.push(target);
        }
    }
    out
}

/// README.md: read-only opens write nothing, "also on read-only media",
/// whatever durability mode the options name (an application may share
/// one set of options between its writer and its readers). So a
/// read-only store holds none of the store's files open for writing, where
/// read-only media would refuse it: not the last segment (the periodic and
/// buffered modes' second handle, for syncs, is a writer's).
/// (Mutants in `recover`: `!options.read_only && options.durability !=
/// Sync` turned into `||`, or its `!` deleted: the read-only store opens
/// the last segment for writing; in `open_segments`, `last && !read_only`
/// turned into `||`: the same in every mode.)
#[cfg(target_os = "linux")]
#[test]
fn a_read_only_open_holds_no_file_open_for_writing_in_any_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    common::append_n(&store, "S", "E", 3);
    store.close().unwrap();
    for durability in [
        annal::Durability::Sync,
        annal::Durability::Periodic(std::time::Duration::from_millis(5)),
        annal::Durability::Buffered,
    ] {
        let options = Options::default().with_durability(durability).with_read_only(true);
        let store = Store::open(dir.path(), options).unwrap();
        assert_eq!(common::all(&store).len(), 3);
        let writable = open_for_writing_under(dir.path());
        assert!(writable.is_empty(), "{durability:?}: open for writing: {writable:?}");
        drop(store);
    }
}

// ---------------------------------------------------------------------------
// A reopened store's syncs (`recovery/mod.rs`: `recover`).
// ---------------------------------------------------------------------------

/// DESIGN.md, DURABILITY.md guarantee 4: in the periodic and buffered
/// modes a sync of the log runs on a second handle of the active segment
/// without holding the tail, so appends go on while it runs; a store
/// reopened from an existing log (not only one just created) must give
/// its tail that handle too. An append made while a `Store::sync` of the
/// reopened store is held on its way out (`SimFs::hold_next_sync`) returns
/// before the sync is let go. (The wait is bounded only so that the
/// failure, an append stuck behind the held sync, ends the test rather
/// than hanging it.)
/// (Mutant in `recover`: `options.durability != Durability::Sync` turned
/// into `==`: no second handle after a reopen, the sync holds the tail.)
#[test]
#[cfg(feature = "sim")]
fn appends_go_on_during_a_sync_of_a_reopened_periodic_or_buffered_store() {
    use annal::io::sim::SimFs;
    let dir = PathBuf::from("/sim/store");
    for durability in [
        annal::Durability::Buffered,
        annal::Durability::Periodic(std::time::Duration::from_secs(3600)),
    ] {
        let fs = SimFs::new(7);
        let options = Options::default().with_durability(durability);
        let store = Store::open_with(fs.clone(), &dir, options.clone()).unwrap();
        for n in 1..=2 {
            store
                .append("S", ExpectedVersion::Exact(n - 1), [EventData::new("E", "before")])
                .unwrap();
        }
        store.close().unwrap();
        let store = Store::open_with(fs.clone(), &dir, options.clone()).unwrap();
        assert!(!store.recovery_report().created);
        store
            .append("S", ExpectedVersion::Exact(2), [EventData::new("E", "reopened")])
            .unwrap();
        let hold = fs.hold_next_sync();
        let sync = {
            let store = store.clone();
            std::thread::spawn(move || store.sync())
        };
        hold.wait_held();
        let (done, appended) = std::sync::mpsc::channel();
        let append = {
            let store = store.clone();
            std::thread::spawn(move || {
                let result = store.append("S", ExpectedVersion::Exact(3), [EventData::new("E", "during")]);
                let _ = done.send(result.is_ok());
            })
        };
        let during = appended.recv_timeout(std::time::Duration::from_secs(60));
        hold.release();
        sync.join().unwrap().unwrap();
        append.join().unwrap();
        assert_eq!(
            during,
            Ok(true),
            "{durability:?}: the append waited for the held sync of a reopened store"
        );
        assert_eq!(store.stream_version("S"), Some(4));
        store.close().unwrap();
    }
}

// ---------------------------------------------------------------------------
// A missing segment (`recovery/mod.rs`: `check_contiguous`).
// ---------------------------------------------------------------------------

/// A segment missing from the middle of the log is reported as
/// `Error::Corruption` naming that very file (the one to restore), at
/// offset 0, by every open; not the segment before it, nor one that never
/// existed.
/// (Mutants in `check_contiguous`: `pair[0] + 1` in the path of the
/// missing file turned into `pair[0] - 1` or `pair[0] * 1`.)
#[test]
fn a_missing_middle_segment_is_reported_naming_that_file() {
    let (dir, options) = store_rolled_to_segment(4);
    for missing in [2, 3] {
        let copy = tempfile::tempdir().unwrap();
        common::files::copy_files_but_lock(dir.path(), copy.path());
        fs::remove_file(seg(copy.path(), missing)).unwrap();
        assert_refused(copy.path(), &options, &seg(copy.path(), missing), 0, "missing");
    }
}

/// A directory in place of a segment file is damage to the store, not an
/// I/O failure to retry: every open reports `Error::Corruption` naming
/// that path at offset 0 (as `verify` does).
/// (Mutant in `open_segments`: the guard `is_not_a_regular_file(&e)`
/// replaced by `false`: the open fails with `Error::Io` instead.)
#[test]
fn a_directory_in_place_of_a_segment_is_reported_as_corruption_naming_it() {
    let (dir, options) = store_rolled_to_segment(3);
    for replaced in [2, 3] {
        let copy = tempfile::tempdir().unwrap();
        common::files::copy_files_but_lock(dir.path(), copy.path());
        fs::remove_file(seg(copy.path(), replaced)).unwrap();
        fs::create_dir(seg(copy.path(), replaced)).unwrap();
        assert_refused(
            copy.path(),
            &options,
            &seg(copy.path(), replaced),
            0,
            "not a regular file",
        );
    }
}

// ---------------------------------------------------------------------------
// Loading the index file (`recovery/mod.rs`: `load_index`).
// ---------------------------------------------------------------------------

/// An index file that covers the log up to the very end of its segment's
/// file (the last segment cut at its last batch, as a crash between
/// sealing it and creating the next one leaves it) is loaded, not rebuilt:
/// nothing replayed, and the store grows on from there.
/// (Mutants in `load_index`: `checkpoint.end_offset > map.len()` turned
/// into `==` or `>=`: such an index file refused as ending past its
/// segment.)
#[test]
fn an_index_file_ending_at_the_end_of_its_segments_file_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default();
    let store = Store::open(dir.path(), options.clone()).unwrap();
    common::append_n(&store, "S", "E", 5);
    store.close().unwrap();
    let path = seg(dir.path(), 1);
    let (_, end, _) = *batches(&fs::read(&path).unwrap()).last().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(end)
        .unwrap();
    let (covered, _, _) =
        annal::index::file::decode_checkpoint(&fs::read(dir.path().join(annal::index::file::FILE_NAME)).unwrap())
            .unwrap();
    assert_eq!((covered.end_segment, covered.end_offset), (1, end));
    for read_only in [true, false] {
        let store = Store::open(dir.path(), options.clone().with_read_only(read_only)).unwrap();
        let report = store.recovery_report();
        assert!(report.index_loaded, "read_only {read_only}: {report:?}");
        assert_eq!((report.replayed_events, report.replayed_bytes), (0, 0));
        assert_eq!(store.last_position(), 5);
        if !read_only {
            common::append_n(&store, "S", "E", 1);
            assert_eq!(common::stream(&store, "S").len(), 6);
        }
        store.close().unwrap();
    }
}

// ---------------------------------------------------------------------------
// Errors an open meets on the way (`recovery/mod.rs`: `remove_leftovers`,
// `open_segments`).
// ---------------------------------------------------------------------------

/// A temporary file the store left behind (`index.tmp`, from a save cut
/// short) is removed by the next writable open; if that removal fails
/// with an I/O error, the open fails with `Error::Io` naming the file,
/// rather than going on with a directory it could not tidy. With the
/// fault gone, the same directory opens with every event in it and the
/// leftover removed.
/// (Mutant in `remove_leftovers`: the guard for a directory of that name,
/// `e.kind() == IsADirectory`, replaced by `true`: any error ignored.)
#[test]
#[cfg(feature = "sim")]
fn an_io_error_removing_a_leftover_temporary_file_fails_the_open() {
    use annal::io::sim::{Fault, FaultError, OpKind, SimFs};
    let dir = PathBuf::from("/sim/store");
    let fs = SimFs::new(11);
    let options = Options::default();
    let store = Store::open_with(fs.clone(), &dir, options.clone()).unwrap();
    for n in 0..3 {
        store
            .append("S", ExpectedVersion::Exact(n), [EventData::new("E", "kept")])
            .unwrap();
    }
    store.close().unwrap();
    let leftover = dir.join(format!("{}.tmp", annal::index::file::FILE_NAME));
    fs.write_durable(&leftover, b"a save cut short");

    fs.inject(Fault {
        kind: OpKind::Remove,
        nth: 0,
        error: FaultError::Eio,
        sticky: true,
    });
    match Store::open_with(fs.clone(), &dir, options.clone()) {
        Err(Error::Io { context, .. }) => assert!(
            context.contains(&leftover.display().to_string()),
            "the error does not name the leftover: {context}"
        ),
        Err(other) => panic!("expected an I/O error naming the leftover, got {other}"),
        Ok(_) => panic!("the open went on past a failed removal of {}", leftover.display()),
    }
    assert!(
        fs.read(&leftover).is_some(),
        "the failed open removed the leftover anyway"
    );

    fs.clear_faults();
    let store = Store::open_with(fs.clone(), &dir, options).unwrap();
    assert_eq!(store.stream_version("S"), Some(3));
    assert!(fs.read(&leftover).is_none(), "the leftover is still there");
    store.close().unwrap();
}

/// An error opening a segment file that is there (permission denied, too
/// many open files) is an I/O failure, worth retrying once the cause is
/// fixed: every open reports `Error::Io` with the OS error as its source,
/// naming the file, never `Error::Corruption` (which tells the user to
/// restore or repair the store). Once the file opens again, so does the
/// store, with every event.
/// (Mutant in `open_segments`: the guard `is_not_a_regular_file(&e)`
/// replaced by `true`: every open error reported as "not a regular
/// file" corruption.)
#[test]
fn an_error_opening_a_segment_file_is_an_io_error_not_corruption() {
    let (dir, options) = store_rolled_to_segment(3);
    let events = Store::open(dir.path(), options.clone().with_read_only(true))
        .unwrap()
        .last_position();
    assert!(events > 0);
    // EACCES and EMFILE, for a sealed segment and for the active one.
    for (errno, failing) in [(13, 2), (24, 2), (13, 3), (24, 3)] {
        for read_only in [true, false] {
            let fs = FailingOpen {
                path: seg(dir.path(), failing),
                errno,
            };
            match Store::open_with(fs, dir.path(), options.clone().with_read_only(read_only)) {
                Err(Error::Io { context, source }) => {
                    assert_eq!(source.raw_os_error(), Some(errno), "{context}: {source}");
                    assert!(
                        context.contains(&seg(dir.path(), failing).display().to_string()),
                        "the error does not name segment {failing}: {context}"
                    );
                }
                Err(other) => panic!("errno {errno} opening segment {failing}: expected Error::Io, got {other}"),
                Ok(_) => panic!("the store opened without segment {failing}"),
            }
        }
    }
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(common::all(&store).len() as u64, events);
    store.close().unwrap();
}
