//! Review of the OS-buffered append changes (e175bc0): the writable map's
//! pages dropped before write-back (`WritableMap::release`), the spare
//! asked for at each roll-over and, in the periodic and buffered modes,
//! reserved (`fallocate`) instead of zero-written, and `fill_holes`
//! reserving holes.
//!
//! Set `TMPDIR=/dev/shm` to run everything on tmpfs. The full-disk tests
//! are ignored unless asked for (`cargo test --test spare_review --
//! --ignored full_disk`) with `ANNAL_REVIEW_SMALL_FS` naming a directory
//! on a small, otherwise empty file system (a loop-mounted ext4 or a
//! `size=` tmpfs): they fill it up.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use annal::{EventData, ExpectedVersion, Options, ReadAll, Store};
use common::child::{self, Ack};
use common::files::segment_files;

const CHILD_DIR: &str = "ANNAL_REVIEW_CHILD_DIR";
const CHILD_MODE: &str = "ANNAL_REVIEW_CHILD_MODE";
const CHILD_SEGMENT: &str = "ANNAL_REVIEW_CHILD_SEGMENT";
const CHILD_PAYLOAD: &str = "ANNAL_REVIEW_CHILD_PAYLOAD";
const SPARE_NAME: &str = "next-segment.tmp";

fn options(mode: &str, segment: u64) -> Options {
    Options::default()
        .with_segment_size_bytes(segment)
        .with_durability(child::durability(mode))
}

/// The child's workload: two threads appending batches of 1 to 5 events
/// of `payload` bytes each; every acknowledged append printed afterwards.
#[test]
fn review_child_workload() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let mode = std::env::var(CHILD_MODE).unwrap();
    let segment: u64 = std::env::var(CHILD_SEGMENT).unwrap().parse().unwrap();
    let payload: usize = std::env::var(CHILD_PAYLOAD).unwrap().parse().unwrap();
    let store = Store::open(&dir, options(&mode, segment)).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let n = (i % 5 + 1) as usize;
                    let events: Vec<_> = (0..n)
                        .map(|k| {
                            let mut data = format!("{t} {i} {n} {k} ").into_bytes();
                            data.resize(payload, (i as u8).wrapping_add(k as u8));
                            EventData::new("Tick", data)
                        })
                        .collect();
                    let ids: Vec<String> = events.iter().map(|e| e.id().to_string()).collect();
                    let r = store.append(&format!("K-{t}"), ExpectedVersion::Any, events).unwrap();
                    println!("ack {} {} {}", r.first_position, r.last_position, ids.join(","));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Checks that every acknowledged append is in the store at `dir`, whole,
/// with gapless positions, and the payload bytes intact.
fn check_acks(store: &Store, acks: &[Ack], what: &str) -> u64 {
    let events: Vec<_> = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position(), i as u64 + 1, "{what}: positions are gapless");
        // Payload: "t i n k " then fill bytes (i + k) as u8.
        let data = e.data();
        let head: Vec<&[u8]> = data.splitn(5, |&b| b == b' ').collect();
        let i: u64 = std::str::from_utf8(head[1]).unwrap().parse().unwrap();
        let k: u64 = std::str::from_utf8(head[3]).unwrap().parse().unwrap();
        let fill = (i as u8).wrapping_add(k as u8);
        let prefix = head[..4].iter().map(|p| p.len() + 1).sum::<usize>();
        assert!(
            data[prefix..].iter().all(|&b| b == fill),
            "{what}: position {} has damaged payload bytes",
            e.position()
        );
    }
    for (first, last, ids) in acks {
        for (k, p) in (*first..=*last).enumerate() {
            let e = events
                .get(p as usize - 1)
                .unwrap_or_else(|| panic!("{what}: acknowledged position {p} lost"));
            assert_eq!(e.id().to_string(), ids[k], "{what}: position {p} holds another event");
        }
    }
    events.len() as u64
}

/// Starts the child over `dir`, lets it run for `run`, SIGKILLs it and
/// returns its acknowledged appends.
fn run_and_kill(dir: &Path, mode: &str, segment: u64, payload: usize, run: Duration) -> Vec<Ack> {
    let lines = child::run_and_kill(
        "review_child_workload",
        &[
            (CHILD_DIR, &dir),
            (CHILD_MODE, &mode),
            (CHILD_SEGMENT, &segment.to_string()),
            (CHILD_PAYLOAD, &payload.to_string()),
        ],
        run,
    );
    child::acks(&lines)
}

/// Kill rounds over one directory, at least `rounds` of them; after
/// each, a reopen in `reopen_mode` must hold every acknowledged append.
/// With `until_adopted`, rounds go on (up to [`ADOPTION_ROUNDS_MAX`])
/// until one was killed with an adopted spare as its active segment (its
/// whole size long): whether the background thread made the spare before
/// the roll-over that took it depends on how busy the machine is. Returns
/// whether any round ended so.
fn kill_rounds(mode: &str, reopen_mode: &str, segment: u64, payload: usize, rounds: u64, until_adopted: bool) -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut all_acks = Vec::new();
    let mut adopted = false;
    for round in 0.. {
        let enough = round >= rounds && (!until_adopted || adopted || round >= ADOPTION_ROUNDS_MAX);
        if enough {
            break;
        }
        let run = Duration::from_millis(300 + 100 * (round % 4));
        let acks = run_and_kill(&dir, mode, segment, payload, run);
        assert!(!acks.is_empty(), "round {round}: the child acknowledged nothing");
        let files = segment_files(&dir);
        adopted |= files.len() > 1 && files.last().unwrap().1 == segment;
        all_acks.extend(acks);
        let store = Store::open(&dir, options(reopen_mode, segment))
            .unwrap_or_else(|e| panic!("{mode} round {round}: reopen failed: {e}"));
        check_acks(&store, &all_acks, &format!("{mode} round {round}"));
        store.close().unwrap();
    }
    adopted
}

/// Most kill rounds run to end one with an adopted spare active.
const ADOPTION_ROUNDS_MAX: u64 = 12;

/// Buffered mode promises survival of a process crash. Small segments:
/// many roll-overs, each adopting a reserved spare when it is ready.
#[test]
fn killed_buffered_writer_across_reserved_spares_loses_nothing() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let adopted = kill_rounds("buffered", "buffered", 2 * 1024 * 1024, 2000, 3, true);
    assert!(
        adopted,
        "no active segment was an adopted spare in {ADOPTION_ROUNDS_MAX} rounds: the test proves nothing"
    );
}

/// Segments larger than the 8 MiB write-back step, so that the writable
/// map's pages are dropped (`MADV_DONTNEED`) before each write-back while
/// appends go on in the same segment.
#[test]
fn killed_buffered_writer_with_released_pages_loses_nothing() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    kill_rounds("buffered", "buffered", 24 * 1024 * 1024, 16 * 1024, 3, false);
}

/// The same in periodic mode, reopened in durable mode each time.
#[test]
fn killed_periodic_writer_reopened_durable_loses_nothing() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    kill_rounds("periodic", "durable", 2 * 1024 * 1024, 4000, 2, false);
}

fn batch(round: u64, size: usize) -> Vec<EventData> {
    (0..8)
        .map(|k| {
            let mut data = format!("0 {round} 8 {k} ").into_bytes();
            data.resize(size, (round as u8).wrapping_add(k as u8));
            EventData::new("Filled", data)
        })
        .collect()
}

/// Data copied through the writable map before and after its pages were
/// dropped reads back the same, live (readers' maps), after close and
/// reopen, at every byte: the release never drops bytes still to be
/// copied nor the page taking appends.
#[test]
fn released_pages_keep_every_byte() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    const SEGMENT: u64 = 40 * 1024 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, options("buffered", SEGMENT)).unwrap();
    let mut round = 0u64;
    // Odd sizes so batch ends fall anywhere within pages; 3 segments.
    let mut expected = 0;
    while segment_files(&dir).len() < 3 {
        let size = 1000 + (round as usize * 7919) % 60_000;
        store.append("S-1", ExpectedVersion::Any, batch(round, size)).unwrap();
        expected += 8;
        round += 1;
        if round.is_multiple_of(97) {
            // A live read across released ranges.
            let n = check_acks(&store, &[], "live");
            assert_eq!(n, expected);
        }
    }
    assert_eq!(check_acks(&store, &[], "before close"), expected);
    store.close().unwrap();
    let store = Store::open(&dir, options("buffered", SEGMENT).with_read_only(true)).unwrap();
    assert_eq!(check_acks(&store, &[], "read-only reopen"), expected);
}

/// Fills a buffered store with `segment`-sized segments until its active
/// segment is an adopted (reserved) spare holding some data, and closes it.
fn buffered_store_on_adopted_spare(dir: &Path, segment: u64) -> u64 {
    let store = Store::open(dir, options("buffered", segment)).unwrap();
    let mut round = 0u64;
    let mut events = 0;
    loop {
        store.append("S-1", ExpectedVersion::Any, batch(round, 1500)).unwrap();
        events += 8;
        round += 1;
        let files = segment_files(dir);
        if files.len() >= 3 && files.last().unwrap().1 == segment {
            break;
        }
        assert!(round < 100_000, "no spare adopted");
    }
    for _ in 0..10 {
        store.append("S-1", ExpectedVersion::Any, batch(round, 1500)).unwrap();
        events += 8;
        round += 1;
    }
    store.close().unwrap();
    events
}

/// A buffered store whose active segment is a reserved spare, reopened in
/// durable mode and appended to across roll-overs (durable mode's own
/// spares are written zeros), then read-only: every event there.
#[test]
fn buffered_store_reopened_in_durable_mode_keeps_everything() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    const SEGMENT: u64 = 1024 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut events = buffered_store_on_adopted_spare(&dir, SEGMENT);
    let store = Store::open(&dir, options("durable", SEGMENT)).unwrap();
    assert_eq!(store.last_position(), events);
    let segments = segment_files(&dir).len();
    let mut round = 10_000;
    while segment_files(&dir).len() < segments + 2 {
        store.append("S-2", ExpectedVersion::Any, batch(round, 1500)).unwrap();
        events += 8;
        round += 1;
    }
    store.close().unwrap();
    assert!(!dir.join(SPARE_NAME).exists());
    let store = Store::open(&dir, options("durable", SEGMENT).with_read_only(true)).unwrap();
    assert_eq!(check_acks(&store, &[], "read-only"), events);
    drop(store);
    // And back in buffered mode.
    let store = Store::open(&dir, options("buffered", SEGMENT)).unwrap();
    assert_eq!(check_acks(&store, &[], "buffered again"), events);
}

/// `annal verify`, `backup` and `repair` on a buffered store whose active
/// segment is a reserved spare (its end unwritten, maybe a hole).
#[test]
fn tools_accept_a_store_on_a_reserved_spare() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let Some(bin) = option_env!("CARGO_BIN_EXE_annal") else {
        eprintln!("no annal binary (feature cli): skipped");
        return;
    };
    const SEGMENT: u64 = 1024 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let events = buffered_store_on_adopted_spare(&dir, SEGMENT);
    let before: Vec<(String, Vec<u8>)> = segment_files(&dir)
        .into_iter()
        .map(|(n, _)| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect();
    // Out of the page cache, so ext4 reports the reserved end as a hole.
    for (n, _) in &before {
        drop_cache(&dir.join(n));
    }
    let run = |args: &[&str]| {
        let o = Command::new(bin).args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let d = dir.to_str().unwrap();
    let (code, out, err) = run(&["verify", d]);
    assert_eq!(code, Some(0), "verify: {out} {err}");
    let dest = tmp.path().join("backup");
    let (code, out, err) = run(&["backup", d, dest.to_str().unwrap()]);
    assert_eq!(code, Some(0), "backup: {out} {err}");
    let (code, out, err) = run(&["repair", d]);
    assert_eq!(code, Some(0), "repair: {out} {err}");
    let (code, out, err) = run(&["verify", d]);
    assert_eq!(code, Some(0), "verify after repair: {out} {err}");
    for (n, bytes) in &before {
        assert!(std::fs::read(dir.join(n)).unwrap() == *bytes, "repair changed {n}");
    }
    let store = Store::open(&dest, options("buffered", SEGMENT)).unwrap();
    assert_eq!(check_acks(&store, &[], "backup"), events);
    drop(store);
    let store = Store::open(&dir, options("buffered", SEGMENT)).unwrap();
    assert_eq!(check_acks(&store, &[], "after tools"), events);
}

/// Drops a file's clean pages from the page cache (as a reboot would).
fn drop_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: `posix_fadvise` on a file open for the call.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

// ---- Full disks (ignored unless asked for, with ANNAL_REVIEW_SMALL_FS) ----

/// The small file system's directory, and a guard that keeps the two
/// full-disk tests from filling it at the same time.
fn small_fs() -> (PathBuf, std::sync::MutexGuard<'static, ()>) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let dir = PathBuf::from(
        std::env::var_os("ANNAL_REVIEW_SMALL_FS")
            .expect("ANNAL_REVIEW_SMALL_FS names a directory on a small, otherwise empty file system"),
    );
    (
        dir,
        ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Removes the filler file when dropped (also when a test panics).
struct Filler(PathBuf);

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Fills the file system holding `dir` with a filler file, to the last
/// block.
fn fill_disk(dir: &Path) -> Filler {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let chunk = vec![0xAAu8; 64 * 1024];
    for size in [64 * 1024, 4096, 512, 1] {
        loop {
            match f.write(&chunk[..size]) {
                Ok(n) if n == size => {}
                _ => break,
            }
        }
    }
    let _ = f.sync_all();
    Filler(path)
}

/// A buffered store whose active segment is a reserved spare, on a disk
/// that then fills up: a writable reopen (which reserves the reserved
/// end's "holes" again) must not fail for lack of space, nor SIGBUS.
#[test]
#[ignore = "fills the small file system named by ANNAL_REVIEW_SMALL_FS"]
fn full_disk_a_buffered_store_on_a_reserved_spare_reopens() {
    let (base, _one) = small_fs();
    const SEGMENT: u64 = 4 * 1024 * 1024;
    let dir = base.join(format!("reopen-{}", std::process::id()));
    let events = buffered_store_on_adopted_spare(&dir, SEGMENT);
    for (n, _) in segment_files(&dir) {
        drop_cache(&dir.join(n));
    }
    let filler = fill_disk(&base);
    let opened = Store::open(&dir, options("buffered", SEGMENT));
    let outcome = opened.as_ref().map(|s| s.last_position()).map_err(ToString::to_string);
    if let Ok(store) = opened {
        // Appends into the reserved end need no new space.
        for round in 0..20 {
            store
                .append("S-1", ExpectedVersion::Any, batch(50_000 + round, 1500))
                .expect("append into reserved space on a full disk");
        }
        // (Close may fail to save the index on the full disk: not this change.)
        drop(store);
    }
    drop(filler);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(outcome, Ok(events), "writable reopen on a full disk");
}

/// A buffered writer running into a full disk across roll-overs (spares
/// reserved with `fallocate`): appends fail with an error, never a
/// SIGBUS, every acknowledged append survives, and the store reopens once
/// space is freed.
#[test]
#[ignore = "fills the small file system named by ANNAL_REVIEW_SMALL_FS"]
fn full_disk_buffered_appends_fail_cleanly() {
    let (base, _one) = small_fs();
    const SEGMENT: u64 = 2 * 1024 * 1024;
    let dir = base.join(format!("fill-{}", std::process::id()));
    // Leave only some space: the store fills the rest.
    let mut ok = 0u64;
    let store = Store::open(&dir, options("buffered", SEGMENT)).unwrap();
    let mut err = None;
    for round in 0..1_000_000u64 {
        match store.append("S-1", ExpectedVersion::Any, batch(round, 4000)) {
            Ok(_) => ok += 8,
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        }
    }
    drop(store);
    let err = err.expect("never ran out of space");
    let leftover_spare = dir.join(SPARE_NAME).exists();
    let reopened = Store::open(&dir, options("buffered", SEGMENT).with_read_only(true))
        .map(|s| check_acks(&s, &[], "after full disk"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!leftover_spare, "a spare was left after the store was dropped");
    assert_eq!(reopened.map_err(|e| e.to_string()), Ok(ok), "append error was: {err}");
}

// ---- Power loss on the simulated disk, buffered mode, reserved spares ----

#[cfg(feature = "sim")]
mod sim_support;

/// Buffered mode with `Store::sync` after each append: what a sync
/// acknowledged survives a power loss at each call of a roll-over that
/// adopts a spare whose space was only reserved (the simulated disk's
/// `reserve`), and the store takes appends afterwards.
#[cfg(feature = "sim")]
#[test]
fn sim_power_loss_around_adopting_a_reserved_spare_in_buffered_mode() {
    use annal::io::sim::SimFs;
    use annal::{Durability, StreamAppend};
    use sim_support::{Ledger, check, dir, record_attempt_into, wait_for_spare_made};
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    const SEGMENT: u64 = 64 * 1024;
    let options = || {
        Options::default()
            .with_segment_size_bytes(SEGMENT)
            .with_durability(Durability::Buffered)
    };
    let append = |store: &Store<SimFs>, ledger: &mut Ledger, round: u64| -> bool {
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
        if store.sync().is_err() {
            return false;
        }
        for (i, id) in (0u64..).zip(ids) {
            let r = &results[0];
            ledger
                .acked
                .insert(id, (stream.clone(), r.first_version + i, r.first_position + i));
        }
        true
    };
    let mut adopted = 0;
    for n in 0..40 {
        let fs = SimFs::new(n);
        let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
        let mut ledger = Ledger::default();
        let mut round = 0;
        while store.last_position() * 1000 < SEGMENT * 6 / 10 {
            assert!(append(&store, &mut ledger, round));
            round += 1;
        }
        wait_for_spare_made(&store, Duration::from_secs(30));
        assert_eq!(store.stats().spare_segment_bytes, SEGMENT, "no spare was made");
        fs.crash_after(n);
        let segments = store.stats().segments;
        for _ in 0..40 {
            if !append(&store, &mut ledger, round) {
                break;
            }
            round += 1;
        }
        if store.stats().segments > segments {
            adopted += 1;
        }
        fs.crash_now();
        let image = fs.image().expect("crashed");
        drop(store);
        let store = Store::open_with(SimFs::from_image(&image, n), dir(), options())
            .unwrap_or_else(|e| panic!("crash before call {n}: reopen failed: {e}"));
        check(&store, &ledger);
        store
            .append("After-1", ExpectedVersion::NoStream, [EventData::new("Fine", "{}")])
            .unwrap_or_else(|e| panic!("crash before call {n}: append after recovery failed: {e}"));
    }
    assert!(adopted > 0, "no run got through a roll-over");
}
