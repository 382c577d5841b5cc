//! Adversarial review of startup and recovery: files replaced by other
//! kinds of files, ranges zeroed in the middle of the log, side files cut
//! or swapped, and processes killed mid-append with multi-stream batches
//! retried across the reopen.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use annal::{
    Durability, Error, EventData, ExpectedVersion, Options, ReadAll, RecordedEvent, Store, StreamAppend, Uuid,
};
use common::{EventSummary, summary};

const BIN: &str = env!("CARGO_BIN_EXE_annal");

fn seg(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

/// The number of the last of the segments numbered from 1 in `dir`.
fn last_segment(dir: &Path) -> u64 {
    let mut last = 1;
    while seg(dir, last + 1).exists() {
        last += 1;
    }
    last
}

fn small() -> Options {
    Options::default().with_segment_size_bytes(16 * 1024)
}

/// A store of `n` single-event appends over three streams, closed (so its
/// index file covers everything).
fn build(dir: &Path, options: Options, n: u64) -> Vec<EventSummary> {
    let store = Store::open(dir, options).unwrap();
    for i in 0..n {
        store
            .append(&format!("S-{}", i % 3), ExpectedVersion::Any, [common::event("E", i)])
            .unwrap();
    }
    let s = summary(&common::all(&store));
    store.close().unwrap();
    s
}

fn mkfifo(path: &Path) {
    let _ = fs::remove_file(path);
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo failed");
}

/// Runs `f` on a thread; `None` when it has not returned within `limit`.
/// A FIFO that blocks the thread is then opened for writing (and closed)
/// so that the thread can finish and does not outlive the test.
fn within<T: Send + 'static>(
    limit: Duration,
    unblock: Option<PathBuf>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            h.join().unwrap();
            Some(v)
        }
        Err(_) => {
            if let Some(p) = unblock {
                // Opening the write end releases a reader blocked in open(2)
                // (non-blocking: with no reader left it fails at once).
                use std::os::unix::fs::OpenOptionsExt;
                let _ = fs::OpenOptions::new().write(true).custom_flags(0o4000).open(&p);
            }
            let _ = rx.recv_timeout(Duration::from_secs(5));
            None
        }
    }
}

/// Runs the CLI; `None` when it had to be killed after `limit`.
fn cli(args: &[&str], limit: Duration) -> Option<Output> {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(Output {
                status,
                stdout: o.join().unwrap(),
                stderr: e.join().unwrap(),
            });
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the CLI, output dropped, and kills it (SIGKILL) after `delay`
/// unless it has finished by then; returns its exit status.
fn cli_killed_after(args: &[&str], delay: Duration) -> std::process::ExitStatus {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap()
}

fn cli_ok(args: &[&str]) -> Output {
    let out = cli(args, Duration::from_secs(20)).unwrap_or_else(|| panic!("annal {args:?} hung"));
    no_panic(&out, args);
    out
}

fn no_panic(out: &Output, args: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace") && !err.contains("RUST_BACKTRACE"),
        "annal {args:?} panicked: {err}"
    );
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or(serde_json::Value::Null)
}

// ---------------------------------------------------------------------------
// Something other than a regular file under a store file's name: a FIFO.
// The store checks "not a regular file" only after open(2), and open(2) of a
// FIFO for reading blocks until a writer comes: every open then hangs.
// ---------------------------------------------------------------------------

#[test]
fn a_fifo_named_index_is_refused_or_rebuilt_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path(), Options::default(), 20);
    let index = dir.path().join("index");
    mkfifo(&index);
    let path = dir.path().to_path_buf();
    let got = within(Duration::from_secs(3), Some(index.clone()), move || {
        Store::open(&path, Options::default().with_read_only(true)).map(|s| summary(&common::all(&s)))
    });
    let got = got.expect("a read-only open with a FIFO named `index` hangs in open(2)");
    // The index file is a cache: the log is intact, so every event is read.
    assert_eq!(got.unwrap(), expected);
}

#[test]
fn a_fifo_named_checkpoints_does_not_hang_open_or_verify() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), Options::default(), 20);
    let ck = dir.path().join("checkpoints");
    mkfifo(&ck);
    // verify reads side files with a metadata check first: it reports.
    let out = cli(&["verify", s(dir.path())], Duration::from_secs(5)).expect("verify hangs on a FIFO checkpoints");
    no_panic(&out, &["verify"]);
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
    // A read-only open (the `read-all` command) should not wait for a writer.
    let out = cli(&["read-all", s(dir.path())], Duration::from_secs(3));
    let out = out.expect("`annal read-all` hangs when `checkpoints` is a FIFO");
    no_panic(&out, &["read-all"]);
}

#[test]
fn a_fifo_in_place_of_a_middle_segment_is_reported_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), small(), 600);
    assert!(seg(dir.path(), 3).exists());
    let two = seg(dir.path(), 2);
    mkfifo(&two);
    let out = cli(&["verify", s(dir.path())], Duration::from_secs(3));
    let out = out.expect("`annal verify` hangs when a segment is a FIFO");
    no_panic(&out, &["verify"]);
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
    let corruption = &json(&out)["corruption"];
    assert_eq!(corruption["file"].as_str(), Some(s(&two)));
    assert_eq!(corruption["offset"].as_u64(), Some(0));
    assert!(
        corruption["reason"].as_str().unwrap().contains("not a regular file"),
        "{corruption}"
    );
    for read_only in [false, true] {
        let path = dir.path().to_path_buf();
        let got = within(Duration::from_secs(3), Some(two.clone()), move || {
            Store::open(&path, small().with_read_only(read_only))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let got = got.expect("Store::open hangs when a segment is a FIFO");
        let message = got.expect_err("a store with a FIFO for a segment opened");
        assert!(
            message.contains("not a regular file") && message.contains(s(&two)),
            "{message}"
        );
    }

    // `repair` keeps segment 1 and moves the rest aside; `salvage` names
    // what it cannot read instead of waiting on it.
    let out = cli_ok(&["repair", s(dir.path())]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli_ok(&["verify", s(dir.path())]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let store = Store::open(dir.path(), small()).unwrap();
    assert!(store.last_position() > 0);
    drop(store);
    let out = cli_ok(&["salvage", s(dir.path())]);
    assert_ne!(code(&out), 101);
}

/// A writable open opens the last segment and `LOCK` for writing, which a
/// FIFO would not block: each must still be refused as no regular file
/// (not used as a segment or a lock).
#[test]
fn a_fifo_in_place_of_the_last_segment_or_lock_is_refused_by_a_writable_open() {
    for name in ["last segment", "LOCK"] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), small(), 600);
        let path = match name {
            "LOCK" => dir.path().join("LOCK"),
            _ => {
                let last = (1..).take_while(|&n| seg(dir.path(), n).exists()).last().unwrap();
                seg(dir.path(), last)
            }
        };
        mkfifo(&path);
        let dir_path = dir.path().to_path_buf();
        let got = within(Duration::from_secs(3), Some(path.clone()), move || {
            Store::open(&dir_path, small()).map(|_| ()).map_err(|e| e.to_string())
        });
        let message = got
            .unwrap_or_else(|| panic!("a writable open hangs on a FIFO {name}"))
            .expect_err("opened with a FIFO");
        assert!(message.contains("not a regular file"), "{name}: {message}");
    }
}

#[test]
fn a_fifo_named_lock_does_not_hang_a_reading_command() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), Options::default(), 5);
    let lock = dir.path().join("LOCK");
    mkfifo(&lock);
    let out = cli(&["stats", s(dir.path())], Duration::from_secs(3));
    let out = out.expect("`annal stats` hangs when LOCK is a FIFO");
    no_panic(&out, &["stats"]);
}

// ---------------------------------------------------------------------------
// Zeros over a range in the middle of the log. A zero frame magic is the
// documented end of a segment's log; what follows must still be checked.
// ---------------------------------------------------------------------------

/// Offsets of the batch frames (magic `ABT1`) of a segment.
fn frames(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 64;
    while at + 8 <= bytes.len() && &bytes[at..at + 4] == b"ABT1" {
        out.push(at);
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += len;
    }
    out
}

#[test]
fn zeros_over_a_middle_batch_of_the_last_segment_are_reported_without_an_index_file() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), Options::default(), 30);
    fs::remove_file(dir.path().join("index")).unwrap();
    let path = seg(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let f = frames(&bytes);
    assert_eq!(f.len(), 30);
    // Zero batch 10 (positions 11), whole, as a lost page would.
    bytes[f[10]..f[11]].fill(0);
    fs::write(&path, &bytes).unwrap();
    let out = cli_ok(&["verify", s(dir.path())]);
    assert_eq!(code(&out), 4, "verify: {}", String::from_utf8_lossy(&out.stdout));
    let err = Store::open(dir.path(), Options::default().with_read_only(true)).err();
    assert!(matches!(err, Some(Error::Corruption { .. })), "read-only open: {err:?}");
    let err = Store::open(dir.path(), Options::default()).err();
    assert!(matches!(err, Some(Error::Corruption { .. })), "open: {err:?}");
    // The events after the zeros are untouched by the refused open.
    assert_eq!(frames(&fs::read(&path).unwrap()[..]).len(), 10);
    assert_eq!(&fs::read(&path).unwrap()[f[11]..f[11] + 4], b"ABT1");
}

#[test]
fn zeros_over_the_middle_of_a_sealed_segment_are_reported_without_an_index_file() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), small(), 600);
    fs::remove_file(dir.path().join("index")).unwrap();
    for (which, label) in [(1usize, "middle"), (usize::MAX, "last batches")] {
        let work = tempfile::tempdir().unwrap();
        common::files::copy_files(dir.path(), work.path());
        let path = seg(work.path(), 2);
        let mut bytes = fs::read(&path).unwrap();
        let f = frames(&bytes);
        if which == usize::MAX {
            // Zeros over the last three batches, up to the file's end.
            let n = bytes.len();
            bytes[f[f.len() - 3]..n].fill(0);
        } else {
            let mid = f.len() / 2;
            bytes[f[mid]..f[mid + which]].fill(0);
        }
        fs::write(&path, &bytes).unwrap();
        let out = cli_ok(&["verify", s(work.path())]);
        assert_eq!(
            code(&out),
            4,
            "{label}: verify {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = Store::open(work.path(), small()).err();
        assert!(matches!(err, Some(Error::Corruption { .. })), "{label}: open {err:?}");
    }
}

// ---------------------------------------------------------------------------
// The index file: cut, flipped, swapped, linked, ahead of the log.
// ---------------------------------------------------------------------------

#[test]
fn an_index_file_cut_or_flipped_anywhere_is_reported_by_verify_and_never_changes_reads() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path(), small(), 200);
    let good = fs::read(dir.path().join("index")).unwrap();
    let mut cuts: Vec<usize> = (0..good.len()).step_by(37).collect();
    cuts.extend([good.len() - 1, 79, 80, 84]);
    for cut in cuts {
        fs::write(dir.path().join("index"), &good[..cut]).unwrap();
        let store = Store::open(dir.path(), small().with_read_only(true)).unwrap();
        assert!(!store.recovery_report().index_loaded, "cut at {cut}");
        assert_eq!(summary(&common::all(&store)), expected, "cut at {cut}");
    }
    for at in (0..good.len()).step_by(53) {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        fs::write(dir.path().join("index"), &bad).unwrap();
        let store = Store::open(dir.path(), small().with_read_only(true)).unwrap();
        assert!(!store.recovery_report().index_loaded, "flip at {at}");
        assert_eq!(summary(&common::all(&store)), expected, "flip at {at}");
        drop(store);
        if at % 5 == 0 {
            let out = cli_ok(&["verify", s(dir.path())]);
            assert_eq!(code(&out), 4, "flip at {at}: {}", String::from_utf8_lossy(&out.stdout));
            assert_eq!(json(&out)["index"]["status"], "damaged", "flip at {at}");
        }
    }
    // A writable open rebuilds it; verify is clean again.
    fs::write(dir.path().join("index"), &good[..good.len() / 2]).unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(summary(&common::all(&store)), expected);
    store.close().unwrap();
    assert_eq!(code(&cli_ok(&["verify", s(dir.path())])), 0);
}

#[test]
fn an_index_symlinked_from_elsewhere_is_judged_by_its_contents_and_never_written_through() {
    let base = tempfile::tempdir().unwrap();
    let expected = build(base.path(), Options::default(), 20);
    let other = tempfile::tempdir().unwrap();
    build(other.path(), Options::default(), 40);
    let other_index = other.path().join("index");
    let before = fs::read(&other_index).unwrap();
    for target in ["other", "segment", "dangling"] {
        let work = tempfile::tempdir().unwrap();
        common::files::copy_files(base.path(), work.path());
        let index = work.path().join("index");
        let target = match target {
            "other" => other_index.clone(),
            "segment" => seg(work.path(), 1),
            _ => work.path().join("nothing-here"),
        };
        fs::remove_file(&index).unwrap();
        std::os::unix::fs::symlink(&target, &index).unwrap();
        let store = Store::open(work.path(), Options::default()).unwrap();
        assert!(!store.recovery_report().index_loaded, "{}", target.display());
        assert_eq!(summary(&common::all(&store)), expected);
        store
            .append("S-new", ExpectedVersion::NoStream, [common::event("N", 1)])
            .unwrap();
        store.close().unwrap();
        // The save replaced the link; the target is as it was.
        assert!(!fs::symlink_metadata(&index).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&other_index).unwrap(), before);
        let store = Store::open(work.path(), Options::default()).unwrap();
        assert!(store.recovery_report().index_loaded);
        let n = summary(&common::all(&store));
        assert_eq!(&n[..expected.len()], &expected[..]);
        assert_eq!(n.len(), expected.len() + 1);
    }
}

#[test]
fn an_index_ahead_of_a_log_cut_back_at_a_batch_boundary_is_reported_and_repair_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path(), Options::default(), 30);
    let path = seg(dir.path(), 1);
    let bytes = fs::read(&path).unwrap();
    let f = frames(&bytes);
    for cut_batch in [29usize, 15, 1, 0] {
        let work = tempfile::tempdir().unwrap();
        common::files::copy_files(dir.path(), work.path());
        // The log as it was before batch `cut_batch`, zeros after (as a
        // restored older copy of the segment would be).
        let mut older = bytes.clone();
        older[f[cut_batch]..].fill(0);
        fs::write(seg(work.path(), 1), &older).unwrap();
        let err = Store::open(work.path(), Options::default()).err();
        assert!(
            matches!(err, Some(Error::Corruption { .. })),
            "cut {cut_batch}: {err:?}"
        );
        let err = Store::open(work.path(), Options::default().with_read_only(true)).err();
        assert!(
            matches!(err, Some(Error::Corruption { .. })),
            "cut {cut_batch} read-only: {err:?}"
        );
        let out = cli_ok(&["verify", s(work.path())]);
        assert_eq!(
            code(&out),
            4,
            "cut {cut_batch}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let out = cli_ok(&["repair", s(work.path())]);
        assert_eq!(
            code(&out),
            0,
            "cut {cut_batch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = json(&out);
        assert_eq!(r["kept_events"], cut_batch as u64, "cut {cut_batch}: {r}");
        let store = Store::open(work.path(), Options::default()).unwrap();
        assert_eq!(summary(&common::all(&store)), expected[..cut_batch].to_vec());
        store.close().unwrap();
        assert_eq!(code(&cli_ok(&["verify", s(work.path())])), 0);
    }
}

#[test]
fn a_lost_last_segment_with_an_index_saved_over_it_is_reported_not_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path(), small(), 600);
    let last = last_segment(dir.path());
    assert!(last >= 3);
    fs::remove_file(seg(dir.path(), last)).unwrap();
    let err = Store::open(dir.path(), small()).err();
    assert!(matches!(err, Some(Error::Corruption { .. })), "{err:?}");
    let out = cli_ok(&["verify", s(dir.path())]);
    assert_eq!(code(&out), 4);
    // The last segment duplicated under the next number (a restore gone
    // wrong) is refused as well.
    let work = tempfile::tempdir().unwrap();
    common::files::copy_files(dir.path(), work.path());
    fs::copy(seg(work.path(), last - 1), seg(work.path(), last)).unwrap();
    let err = Store::open(work.path(), small()).err();
    assert!(matches!(err, Some(Error::Corruption { .. })), "duplicate: {err:?}");
    let out = cli_ok(&["verify", s(work.path())]);
    assert_eq!(code(&out), 4);
    let _ = expected;
}

// ---------------------------------------------------------------------------
// The checkpoints file: another store's, older, cut.
// ---------------------------------------------------------------------------

#[test]
fn checkpoints_files_swapped_or_cut_are_reported_never_read_as_values() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), Options::default(), 30);
    let ck = dir.path().join("checkpoints");
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.checkpoints().save("proj", 10).unwrap();
        store.checkpoints().save("other", 3).unwrap();
    }
    let old = fs::read(&ck).unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.checkpoints().save("proj", 25).unwrap();
    }
    let good = fs::read(&ck).unwrap();
    // An older copy is a valid older state (documented: old or new value).
    fs::write(&ck, &old).unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.checkpoints().load("proj").unwrap(), Some(10));
    drop(store);
    // Every cut: Corruption on load, never a value; appends still work.
    for cut in 0..good.len() {
        fs::write(&ck, &good[..cut]).unwrap();
        let store = Store::open(dir.path(), Options::default().with_read_only(true)).unwrap();
        let got = store.checkpoints().load("proj");
        assert!(matches!(got, Err(Error::Corruption { .. })), "cut {cut}: {got:?}");
    }
    // Another store's checkpoints file.
    let other = tempfile::tempdir().unwrap();
    build(other.path(), Options::default(), 5);
    {
        let store = Store::open(other.path(), Options::default()).unwrap();
        store.checkpoints().save("proj", 2).unwrap();
    }
    fs::copy(other.path().join("checkpoints"), &ck).unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let got = store.checkpoints().load("proj");
    assert!(matches!(got, Err(Error::Corruption { .. })), "foreign: {got:?}");
    store
        .append("S-x", ExpectedVersion::Any, [common::event("X", 1)])
        .unwrap();
    store.close().unwrap();
    let out = cli_ok(&["verify", s(dir.path())]);
    assert_eq!(code(&out), 4);
    assert_eq!(json(&out)["checkpoints"]["status"], "damaged");
    let out = cli_ok(&["repair", s(dir.path())]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out)["checkpoints_quarantined"], true);
    assert_eq!(json(&out)["kept_events"], 31);
    assert_eq!(code(&cli_ok(&["verify", s(dir.path())])), 0);
}

// ---------------------------------------------------------------------------
// Damage anywhere in a multi-segment store through the CLI: verify names
// it, repair keeps exactly the events before it, nothing panics.
// ---------------------------------------------------------------------------

#[test]
fn a_flip_in_each_segment_is_named_by_verify_and_repair_keeps_exactly_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path(), small(), 600);
    let last = last_segment(dir.path());
    for n in 1..=last {
        let work = tempfile::tempdir().unwrap();
        common::files::copy_files(dir.path(), work.path());
        let path = seg(work.path(), n);
        let mut bytes = fs::read(&path).unwrap();
        let f = frames(&bytes);
        let victim = f[f.len() / 2];
        bytes[victim + 40 + 20] ^= 0x01; // inside a record of the middle batch
        fs::write(&path, &bytes).unwrap();
        let out = cli_ok(&["verify", s(work.path())]);
        assert_eq!(code(&out), 4, "segment {n}");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains(&format!("{n:020}.seg")) && err.contains(&format!("offset {victim}")),
            "segment {n}: {err}"
        );
        // Positions before the damaged batch.
        let first_pos = u64::from_le_bytes(bytes[victim + 16..victim + 24].try_into().unwrap());
        let out = cli_ok(&["repair", s(work.path())]);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(json(&out)["kept_events"], first_pos - 1, "segment {n}");
        let store = Store::open(work.path(), small()).unwrap();
        assert_eq!(
            summary(&common::all(&store)),
            expected[..first_pos as usize - 1].to_vec()
        );
        store.close().unwrap();
        // Salvage gives back the rest, minus the damaged batch's events.
        let out = cli_ok(&["salvage", s(work.path())]);
        assert_eq!(code(&out), 0);
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, expected.len() - first_pos as usize, "segment {n}: salvage");
    }
}

// ---------------------------------------------------------------------------
// SIGKILL during multi-stream appends with retries across the reopen.
// ---------------------------------------------------------------------------

const CHILD_DIR: &str = "ANNAL_REVIEW_KILL_DIR";
const CHILD_MODE: &str = "ANNAL_REVIEW_KILL_MODE";

fn kill_options(mode: &str) -> Options {
    Options::default()
        .with_segment_size_bytes(32 * 1024)
        .with_index_checkpoint_bytes(8 * 1024)
        .with_durability(common::child::durability(mode))
}

/// The batch of thread `t`'s `i`-th append: stream A-t gets i%3+1 events,
/// B-t gets i%2+1; `ids` in that order.
fn batch(t: u64, i: u64, va: u64, vb: u64, ids: &[Uuid]) -> Vec<StreamAppend> {
    let na = (i % 3 + 1) as usize;
    let nb = (i % 2 + 1) as usize;
    assert_eq!(ids.len(), na + nb);
    let ev = |s: &str, k: usize, id: Uuid| EventData::new("Tick", format!("{t} {i} {s} {k}")).with_id(id);
    let a: Vec<_> = (0..na).map(|k| ev("A", k, ids[k])).collect();
    let b: Vec<_> = (0..nb).map(|k| ev("B", k, ids[na + k])).collect();
    let exp = |v: u64| {
        if v == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(v)
        }
    };
    vec![
        StreamAppend::new(format!("A-{t}"), exp(va), a),
        StreamAppend::new(format!("B-{t}"), exp(vb), b),
    ]
}

#[test]
fn review_child_workload() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let mode = std::env::var(CHILD_MODE).unwrap_or_default();
    let store = Store::open(&dir, kill_options(&mode)).unwrap();
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut va = store.stream_version(&format!("A-{t}")).unwrap_or(0);
                let mut vb = store.stream_version(&format!("B-{t}")).unwrap_or(0);
                // Continue the numbering where an earlier round stopped.
                let start = va; // i is unique per append since va grows
                for i in start * 10.. {
                    let n = (i % 3 + 1 + i % 2 + 1) as usize;
                    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
                    let ids_s: Vec<String> = ids.iter().map(|u| u.to_string()).collect();
                    println!("try {t} {i} {va} {vb} {}", ids_s.join(","));
                    let r = store.append_multi(&batch(t, i, va, vb, &ids)).unwrap();
                    va = r[0].last_version;
                    vb = r[1].last_version;
                    println!("ack {t} {i} {} {}", r[0].first_position, r[1].last_position);
                    if i % 7 == 0 {
                        store.checkpoints().save(&format!("c{t}"), r[1].last_position).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

struct Try {
    t: u64,
    i: u64,
    va: u64,
    vb: u64,
    ids: Vec<Uuid>,
    ack: Option<(u64, u64)>,
}

fn kill_round(dir: &Path, mode: &str, millis: u64) -> Vec<Try> {
    let lines = common::child::run_and_kill(
        "review_child_workload",
        &[(CHILD_DIR, &dir), (CHILD_MODE, &mode)],
        Duration::from_millis(millis),
    );
    let mut tries: Vec<Try> = Vec::new();
    let mut by: HashMap<(u64, u64), usize> = HashMap::new();
    for line in lines {
        // The harness prints "test name ... " before the first line.
        let Some(at) = line.find("try ").or_else(|| line.find("ack ")) else {
            continue;
        };
        let p: Vec<&str> = line[at..].split(' ').collect();
        match p.first() {
            Some(&"try") if p.len() == 6 => {
                let t = p[1].parse().unwrap();
                let i = p[2].parse().unwrap();
                by.insert((t, i), tries.len());
                tries.push(Try {
                    t,
                    i,
                    va: p[3].parse().unwrap(),
                    vb: p[4].parse().unwrap(),
                    ids: p[5].split(',').map(|x| x.parse().unwrap()).collect(),
                    ack: None,
                });
            }
            Some(&"ack") if p.len() == 5 => {
                let k = by[&(p[1].parse().unwrap(), p[2].parse().unwrap())];
                tries[k].ack = Some((p[3].parse().unwrap(), p[4].parse().unwrap()));
            }
            _ => {} // a line cut by the kill
        }
    }
    tries
}

fn check_store(store: &Store, all_tries: &[Try], mode: &str) {
    let events: Vec<RecordedEvent> = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let mut seen: HashMap<Uuid, u64> = HashMap::new();
    for (k, e) in events.iter().enumerate() {
        assert_eq!(e.position(), k as u64 + 1, "{mode}: positions gapless");
        assert!(
            seen.insert(e.id(), e.position()).is_none(),
            "{mode}: id {} twice",
            e.id()
        );
    }
    for name in store.stream_names() {
        let evs = common::stream(store, &name);
        for (k, e) in evs.iter().enumerate() {
            assert_eq!(e.version(), k as u64 + 1, "{mode}: versions of {name} gapless");
        }
    }
    // Batches whole: all ids of a try present or none.
    for tr in all_tries {
        let present = tr.ids.iter().filter(|id| seen.contains_key(id)).count();
        assert!(
            present == 0 || present == tr.ids.len(),
            "{mode}: batch {} {} partly present ({present}/{})",
            tr.t,
            tr.i,
            tr.ids.len()
        );
        if let Some((first, last)) = tr.ack {
            assert_eq!(
                present,
                tr.ids.len(),
                "{mode}: acknowledged batch {} {} lost",
                tr.t,
                tr.i
            );
            assert_eq!(seen[&tr.ids[0]], first, "{mode}: acknowledged at another position");
            assert_eq!(seen[tr.ids.last().unwrap()], last);
        }
    }
}

fn kill_and_retry(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut history: Vec<Try> = Vec::new();
    for round in 0..3u64 {
        let tries = kill_round(dir.path(), mode, 200 + 150 * round);
        assert!(
            tries.iter().any(|t| t.ack.is_some()),
            "{mode} round {round}: the child acknowledged nothing"
        );
        let store = Store::open(dir.path(), kill_options(mode))
            .unwrap_or_else(|e| panic!("{mode} round {round}: reopen failed: {e}"));
        check_store(&store, &tries, mode);
        // The in-flight append of each thread, retried with its ids and
        // expected versions: written exactly once, whatever the kill left.
        let mut last_by_thread: BTreeMap<u64, &Try> = BTreeMap::new();
        for tr in &tries {
            last_by_thread.insert(tr.t, tr);
        }
        for tr in last_by_thread.values() {
            let r = store
                .append_multi(&batch(tr.t, tr.i, tr.va, tr.vb, &tr.ids))
                .unwrap_or_else(|e| panic!("{mode} round {round}: retry of {} {} failed: {e}", tr.t, tr.i));
            if let Some((first, last)) = tr.ack {
                assert_eq!((r[0].first_position, r[1].last_position), (first, last));
            }
        }
        // And a retry of an acknowledged older append: the original result.
        if let Some(tr) = tries.iter().filter(|t| t.ack.is_some()).nth(1) {
            let r = store.append_multi(&batch(tr.t, tr.i, tr.va, tr.vb, &tr.ids)).unwrap();
            assert_eq!(
                (r[0].first_position, r[1].last_position),
                tr.ack.unwrap(),
                "{mode}: old retry"
            );
        }
        // Every retried batch is now whole.
        let events = common::all(&store);
        let ids: HashSet<Uuid> = events.iter().map(|e| e.id()).collect();
        for tr in last_by_thread.values() {
            assert!(
                tr.ids.iter().all(|id| ids.contains(id)),
                "{mode}: retried batch missing"
            );
        }
        check_store(&store, &tries, mode);
        // The checkpoints are never past the log.
        for (name, pos) in store.checkpoints().list().unwrap() {
            assert!(
                pos <= store.last_position(),
                "{mode}: checkpoint {name} at {pos} past the log"
            );
        }
        store.close().unwrap();
        let out = cli_ok(&["verify", s(dir.path())]);
        assert_eq!(
            code(&out),
            0,
            "{mode} round {round}: verify {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            json(&out)["duplicate_ids"].is_null(),
            "{mode}: duplicate ids after retries"
        );
        history.extend(tries);
    }
    let store = Store::open(dir.path(), kill_options(mode)).unwrap();
    check_store(&store, &history, mode);
}

#[test]
fn killed_durable_multi_stream_writer_retries_exactly_once() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    kill_and_retry("durable");
}

#[test]
fn killed_periodic_multi_stream_writer_retries_exactly_once() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    kill_and_retry("periodic");
}

#[test]
fn killed_buffered_multi_stream_writer_retries_exactly_once() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    kill_and_retry("buffered");
}

// ---------------------------------------------------------------------------
// The snapshot side-file: another store's, cut, flipped.
// ---------------------------------------------------------------------------

#[test]
fn a_snapshot_file_of_another_store_or_cut_is_never_loaded_and_never_fails_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path(), Options::default(), 30);
    let other = tempfile::tempdir().unwrap();
    build(other.path(), Options::default(), 30);
    {
        let store = Store::open(other.path(), Options::default()).unwrap();
        store.save_snapshot("S-0", 5, 1, b"FOREIGN state").unwrap();
        store.close().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.save_snapshot("S-0", 5, 1, b"own state at 5").unwrap();
        store.save_snapshot("S-1", 7, 1, b"own state at 7").unwrap();
        store.close().unwrap();
    }
    let snap = dir.path().join("snapshots");
    let good = fs::read(&snap).unwrap();
    fs::copy(other.path().join("snapshots"), &snap).unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let load = store.load_snapshot("S-0");
    assert!(
        load.snapshot.is_none(),
        "another store's snapshot was loaded: {:?}",
        load.snapshot
    );
    assert_eq!(summary(&common::all(&store)), expected);
    store.close().unwrap();
    let out = cli_ok(&["verify", s(dir.path())]);
    assert_eq!(
        code(&out),
        0,
        "snapshots are a cache: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Every cut of the store's own file: a load gives the saved state or
    // none, never other bytes; opens never fail.
    for cut in (0..good.len()).step_by(7) {
        fs::write(&snap, &good[..cut]).unwrap();
        let store = Store::open(dir.path(), Options::default().with_read_only(true)).unwrap();
        for (stream, v, data) in [("S-0", 5u64, &b"own state at 5"[..]), ("S-1", 7, b"own state at 7")] {
            if let Some(sn) = store.load_snapshot(stream).snapshot {
                assert_eq!((sn.version, &sn.data[..]), (v, data), "cut {cut}");
            }
        }
        drop(store);
        let out = cli_ok(&["verify", s(dir.path())]);
        assert_eq!(code(&out), 0, "cut {cut}: {}", String::from_utf8_lossy(&out.stdout));
    }
    // Every flipped byte likewise.
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        fs::write(&snap, &bad).unwrap();
        let store = Store::open(dir.path(), Options::default().with_read_only(true)).unwrap();
        for (stream, v, data) in [("S-0", 5u64, &b"own state at 5"[..]), ("S-1", 7, b"own state at 7")] {
            if let Some(sn) = store.load_snapshot(stream).snapshot {
                assert_eq!((sn.version, &sn.data[..]), (v, data), "flip at {at}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// `repair` itself killed at random moments, then run again.
// ---------------------------------------------------------------------------

#[test]
fn a_repair_killed_midway_and_run_again_keeps_the_prefix_and_loses_nothing_to_salvage() {
    let base = tempfile::tempdir().unwrap();
    let opts = Options::default().with_segment_size_bytes(4 * 1024);
    let expected = build(base.path(), opts.clone(), 1500);
    let last = last_segment(base.path());
    assert!(last > 20, "{last} segments");
    // A flipped byte in the middle batch of segment 3.
    let path = seg(base.path(), 3);
    let mut bytes = fs::read(&path).unwrap();
    let f = frames(&bytes);
    let victim = f[f.len() / 2];
    let first_pos = u64::from_le_bytes(bytes[victim + 16..victim + 24].try_into().unwrap());
    bytes[victim + 60] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let mut cut_short = 0;
    for (round, delay_us) in [300u64, 1000, 2500, 5000, 9000, 15000, 25000].into_iter().enumerate() {
        let work = tempfile::tempdir().unwrap();
        common::files::copy_files(base.path(), work.path());
        let status = cli_killed_after(&["repair", s(work.path())], Duration::from_micros(delay_us));
        if status.code().is_none() && work.path().join("quarantine").exists() {
            cut_short += 1;
        }
        // Whatever the kill left, a second repair finishes the job.
        let out = cli_ok(&["repair", s(work.path())]);
        assert_eq!(code(&out), 0, "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        let store = Store::open(work.path(), opts.clone())
            .unwrap_or_else(|e| panic!("round {round}: open after the second repair: {e}"));
        assert_eq!(
            summary(&common::all(&store)),
            expected[..first_pos as usize - 1].to_vec(),
            "round {round}"
        );
        store.close().unwrap();
        let out = cli_ok(&["verify", s(work.path())]);
        assert_eq!(code(&out), 0, "round {round}: {}", String::from_utf8_lossy(&out.stdout));
        // Salvage has every event after the damaged batch, once.
        let out = cli_ok(&["salvage", s(work.path())]);
        assert_eq!(code(&out), 0);
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let want: Vec<String> = expected[first_pos as usize..].iter().map(|e| e.3.to_string()).collect();
        assert_eq!(ids, want, "round {round}: salvage");
    }
    eprintln!("{cut_short} repairs killed after they began quarantining");
}

// ---------------------------------------------------------------------------
// A repair that cannot make its copy changes nothing.
// ---------------------------------------------------------------------------

#[test]
fn a_repair_whose_quarantine_is_a_file_changes_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), small(), 600);
    let path = seg(dir.path(), 2);
    let mut bytes = fs::read(&path).unwrap();
    let f = frames(&bytes);
    bytes[f[f.len() / 2] + 60] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    fs::write(dir.path().join("quarantine"), b"not a directory").unwrap();
    let before = common::files::dir_image(dir.path());
    let out = cli_ok(&["repair", s(dir.path())]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(
        code(&out),
        0,
        "repair claims success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let q = dir.path().join("quarantine");
    assert!(
        err.contains(&format!("{} exists and is not a directory", q.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    let after = common::files::dir_image(dir.path());
    for (name, bytes) in &after {
        if name == "LOCK" {
            continue; // its note names the last writer: repair took the lock
        }
        match before.get(name) {
            None => panic!("a failed repair made {name:?} ({err})"),
            Some(b) if b != bytes => {
                let first = b.iter().zip(bytes).position(|(x, y)| x != y);
                panic!(
                    "a failed repair changed {name:?}: {} -> {} bytes, first difference at {first:?} ({err})",
                    b.len(),
                    bytes.len()
                )
            }
            _ => {}
        }
    }
    for name in before.keys() {
        assert!(after.contains_key(name), "a failed repair removed {name:?} ({err})");
    }
}

// ---------------------------------------------------------------------------
// `backup` killed at random moments: DEST is whole or absent.
// ---------------------------------------------------------------------------

#[test]
fn a_backup_killed_midway_leaves_no_destination_or_a_whole_one() {
    let src = tempfile::tempdir().unwrap();
    let opts = Options::default().with_segment_size_bytes(8 * 1024);
    let expected = build(src.path(), opts.clone(), 1500);
    let parent = tempfile::tempdir().unwrap();
    let mut whole = 0;
    for (round, delay_us) in [200u64, 800, 1500, 3000, 6000, 10000, 20000, 40000]
        .into_iter()
        .enumerate()
    {
        let dest = parent.path().join(format!("b{round}"));
        cli_killed_after(&["backup", s(src.path()), s(&dest)], Duration::from_micros(delay_us));
        if dest.exists() {
            whole += 1;
            let out = cli_ok(&["verify", s(&dest)]);
            assert_eq!(code(&out), 0, "round {round}: {}", String::from_utf8_lossy(&out.stdout));
            let store = Store::open(&dest, opts.clone().with_read_only(true)).unwrap();
            assert_eq!(summary(&common::all(&store)), expected, "round {round}");
        }
    }
    // The source is untouched and opens.
    let store = Store::open(src.path(), opts).unwrap();
    assert_eq!(summary(&common::all(&store)), expected);
    eprintln!("{whole} of 8 killed backups had finished");
}

// ---------------------------------------------------------------------------
// The spare segment damaged while the store runs (bit rot in its zeros).
// ---------------------------------------------------------------------------

#[test]
fn garbage_in_the_spare_segment_costs_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().with_segment_size_bytes(64 * 1024);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut i = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().spare_segment_bytes == 0 {
        store
            .append("S-1", ExpectedVersion::Any, [common::event("E", i)])
            .unwrap();
        i += 1;
        assert!(Instant::now() < deadline, "no spare made");
    }
    let spare = dir.path().join("next-segment.tmp");
    let mut bytes = fs::read(&spare).unwrap();
    // Sprinkle non-zero bytes over the spare (not its first 64 bytes,
    // which the adoption overwrites with the header).
    for k in (200..bytes.len()).step_by(1009) {
        bytes[k] = 0xA5;
    }
    fs::write(&spare, &bytes).unwrap();
    let segments = store.stats().segments;
    while store.stats().segments == segments {
        store
            .append("S-1", ExpectedVersion::Any, [common::event("E", i)])
            .unwrap();
        i += 1;
    }
    for _ in 0..5 {
        store
            .append("S-1", ExpectedVersion::Any, [common::event("E", i)])
            .unwrap();
        i += 1;
    }
    let before = summary(&common::all(&store));
    assert_eq!(before.len() as u64, i);
    store.close().unwrap();
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(summary(&common::all(&store)), before);
    store
        .append("S-1", ExpectedVersion::Exact(i), [common::event("E", i)])
        .unwrap();
    store.close().unwrap();
    let out = cli_ok(&["verify", s(dir.path())]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
}

// ---------------------------------------------------------------------------
// An early segment restored from a copy of the store that went on
// differently (same store id, same positions, same offsets): each
// segment's header records how the one before it ends.
// ---------------------------------------------------------------------------

#[test]
fn an_early_segment_from_a_diverged_copy_is_never_served_as_this_stores_events() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .with_segment_size_bytes(64 * 1024)
        .with_durability(Durability::Buffered);
    {
        let store = Store::open(a.path(), opts.clone()).unwrap();
        store
            .append("Seed-1", ExpectedVersion::Any, [common::event("E", 0)])
            .unwrap();
        store.close().unwrap();
    }
    common::files::copy_files(a.path(), b.path());
    // The same shapes of events in both, to streams of other names.
    for (dir, prefix) in [(a.path(), "X"), (b.path(), "Y")] {
        let store = Store::open(dir, opts.clone()).unwrap();
        for i in 0..1300u64 {
            let events: Vec<_> = (0..10).map(|k| common::event("E", i * 10 + k)).collect();
            store
                .append(&format!("{prefix}-{}", i % 4), ExpectedVersion::Any, events)
                .unwrap();
        }
        store.close().unwrap();
    }
    assert_eq!(
        fs::metadata(seg(a.path(), 1)).unwrap().len(),
        fs::metadata(seg(b.path(), 1)).unwrap().len()
    );
    assert!(seg(a.path(), 4).exists());
    let expected_x0: Vec<_> = {
        let store = Store::open(a.path(), opts.clone().with_read_only(true)).unwrap();
        summary(&common::stream(&store, "X-0"))
    };
    let original = fs::read(seg(a.path(), 1)).unwrap();
    fs::copy(seg(b.path(), 1), seg(a.path(), 1)).unwrap();

    // verify walks every byte: it must see that segment 1 holds other events.
    let out = cli_ok(&["verify", s(a.path())]);
    assert_eq!(code(&out), 4, "verify: {}", String::from_utf8_lossy(&out.stdout));

    // The library: segment 2's header records how segment 1 ended, so
    // every open refuses the store, naming segment 2, with the index file
    // or without it; and so does `verify` without the index file.
    let every_open_refused = || {
        for read_only in [true, false] {
            match Store::open(a.path(), opts.clone().with_read_only(read_only))
                .map(|_| ())
                .unwrap_err()
            {
                Error::Corruption { file, offset, reason } => {
                    assert_eq!((&file, offset), (&seg(a.path(), 2), 0), "{reason}");
                    assert!(reason.contains("comes from another copy of the store"), "{reason}");
                }
                e => panic!("not corruption: {e}"),
            }
        }
    };
    every_open_refused();
    fs::remove_file(a.path().join("index")).unwrap();
    every_open_refused();
    let out = cli_ok(&["verify", s(a.path())]);
    assert_eq!(code(&out), 4, "verify: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out)["corruption"]["file"].as_str(), Some(s(&seg(a.path(), 2))));

    // Its own segment 1 put back, the store is whole again.
    fs::write(seg(a.path(), 1), original).unwrap();
    let store = Store::open(a.path(), opts.clone().with_read_only(true)).unwrap();
    assert_eq!(summary(&common::stream(&store, "X-0")), expected_x0);
    drop(store);
    let out = cli_ok(&["verify", s(a.path())]);
    assert_eq!(code(&out), 0, "verify: {}", String::from_utf8_lossy(&out.stdout));
}
