//! Adversarial review of the offline tools `verify` and `repair`
//! (src/tools/{repair,verify,walk,salvage}.rs, docs/DURABILITY.md, the doc
//! comment of `annal::tools::repair`): damaged stores built through the
//! public API, then byte edits, truncations and file moves.
//!
//! It found (each fixed, the tests marked "Found:" failed before):
//! - the `<N>.seg.from-<offset>` copy stopped at the last non-zero byte,
//!   cutting off a valid last batch whose event data ends in zero bytes;
//!   the segment was then zeroed, so the event was lost and
//!   `quarantined_events` was one batch short;
//! - a mix of two copies of the store was refused only when the first walk
//!   reached the broken chain: not behind a header that repair mends (the
//!   walk after the mending was not checked), nor behind earlier damage,
//!   nor when the other copy's segment starts at a position the log
//!   already holds (the position check comes before the chain check).
//!
//! The other tests are coverage.

mod common;

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use annal::log::segment::{self, SEGMENT_HEADER_BYTES};
use annal::tools::{QUARANTINE_DIR, quarantined_log_files, repair, salvage, verify};
use annal::{EventData, ExpectedVersion, Options, Store, Uuid};
use common::files::{seg, segment_ids};
use common::ids_in;

fn opts(segment_size: u64) -> Options {
    Options::default().with_segment_size_bytes(segment_size)
}

/// A scratch directory, removed when dropped (also when a test fails).
struct Dir(PathBuf);

impl std::ops::Deref for Dir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Dir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tmp(name: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("annal-repair-review-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    Dir(p)
}

/// (offset, frame length, first position, record count) of each valid
/// batch of a segment file, in order.
fn batches(path: &Path) -> Vec<(u64, u64, u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    segment::scan(&bytes, SEGMENT_HEADER_BYTES, |at, h, _| {
        out.push((at, u64::from(h.frame_len), h.first_position, u64::from(h.record_count)));
    });
    out
}

/// Appends one event per append; `data(i)` is event i's payload (i from 1).
fn build(dir: &Path, options: Options, n: u64, data: impl Fn(u64) -> Vec<u8>) -> Vec<Uuid> {
    let store = Store::open(dir, options).unwrap();
    let mut ids = Vec::new();
    for i in 1..=n {
        let e = EventData::new("Tick", data(i));
        ids.push(e.id());
        store
            .append(&format!("s-{}", i % 5), ExpectedVersion::Any, [e])
            .unwrap();
    }
    store.close().unwrap();
    ids
}

fn padded(i: u64) -> Vec<u8> {
    format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(150)).into_bytes()
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path, len: u64) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// Every event id salvage reads back from the quarantine folder.
fn salvaged_ids(dir: &Path) -> Vec<Uuid> {
    let files = quarantined_log_files(dir).unwrap();
    let mut out = Vec::new();
    salvage(&files, |e| {
        out.push(e.id());
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

/// After a repair: the store opens, takes an append, verifies clean, and a
/// second repair changes nothing and keeps as many events.
fn assert_healthy_after(dir: &Path, options: Options, kept: u64) {
    let v = verify(dir).unwrap();
    assert!(v.is_clean(), "verify after repair: {v:?}");
    assert_eq!(v.events, kept, "verify after repair: {v:?}");
    let store = Store::open(dir, options.clone()).unwrap();
    assert_eq!(store.last_position(), kept);
    store
        .append("after", ExpectedVersion::Any, [EventData::new("After", "{}")])
        .unwrap();
    store.close().unwrap();
    let again = repair(dir).unwrap();
    assert!(!again.repaired, "second repair changed the store: {again:?}");
    assert_eq!(again.kept_events, kept + 1, "{again:?}");
    let v = verify(dir).unwrap();
    assert!(v.is_clean(), "verify after second repair: {v:?}");
}

/// Found: the last quarantined batch of a damaged segment whose event
/// data ends in zero bytes. `repair` copied the segment's bytes "from the
/// damaged batch on" only up to the last non-zero byte, leaving the valid
/// batch's trailing zeros out of `<N>.seg.from-<offset>`, then zeroed the
/// segment: the batch was neither counted in `quarantined_events` nor
/// readable by `salvage`, an undamaged event after the damage lost
/// although repair promises to move it into quarantine and delete nothing.
#[test]
fn last_quarantined_batch_ending_in_zero_bytes_is_kept_in_quarantine() {
    let dir = tmp("zeros-active");
    let n = 10;
    let ids = build(&dir, Options::default(), n, |i| {
        let mut d = padded(i);
        if i == n {
            d.extend_from_slice(&[0u8; 8]);
        }
        d
    });
    let b = batches(&seg(&dir, 1));
    assert_eq!(b.len(), n as usize);
    // Damage batch 5 (its record's data), so batches 6..=10 follow it.
    let (at, len, _, _) = b[4];
    flip(&seg(&dir, 1), at + len - 10);
    let r = repair(&dir).unwrap();
    assert!(r.repaired, "{r:?}");
    assert_eq!(r.kept_events, 4, "{r:?}");
    assert_eq!(r.quarantined_events, 5, "valid batches after the damage: {r:?}");
    let salvaged = salvaged_ids(&dir);
    assert_eq!(
        salvaged,
        ids[5..].to_vec(),
        "salvage must read back every valid batch after the damage"
    );
    assert_healthy_after(&dir, Options::default(), 4);
    fs::remove_dir_all(&dir).unwrap();
}

/// Found (same root cause, sealed segment): the damaged segment is a
/// sealed one whose last batch's data ends in zeros.
#[test]
fn last_batch_of_a_damaged_sealed_segment_ending_in_zeros_is_kept_in_quarantine() {
    let dir = tmp("zeros-sealed");
    let options = opts(4096);
    // Every event data ends in zeros, so whatever batch is last in
    // segment 1 does.
    let ids = build(&dir, options.clone(), 60, |i| {
        let mut d = padded(i);
        d.extend_from_slice(&[0u8; 4]);
        d
    });
    assert!(segment_ids(&dir).len() >= 3);
    let b = batches(&seg(&dir, 1));
    let (at, len, first, _) = b[1];
    flip(&seg(&dir, 1), at + len - 10);
    let r = repair(&dir).unwrap();
    assert!(r.repaired, "{r:?}");
    assert_eq!(r.kept_events, first - 1);
    let total = ids.len() as u64;
    assert_eq!(r.quarantined_events, total - first, "{r:?}");
    let salvaged = salvaged_ids(&dir);
    assert_eq!(salvaged, ids[first as usize..].to_vec());
    assert_healthy_after(&dir, options, first - 1);
    fs::remove_dir_all(&dir).unwrap();
}

/// Coverage: damage in several segments plus a stale index file; repair
/// keeps everything before the first damage, counts the rest, and a
/// second run is a no-op.
#[test]
fn damage_in_several_segments_with_a_stale_index() {
    let dir = tmp("several");
    let options = opts(4096);
    let ids = build(&dir, options.clone(), 40, padded);
    let stale = fs::read(dir.join(annal::index::file::FILE_NAME)).unwrap();
    let store = Store::open(&dir, options.clone()).unwrap();
    let mut ids = ids;
    for i in 41..=80 {
        let e = EventData::new("Tick", padded(i));
        ids.push(e.id());
        store.append("s-x", ExpectedVersion::Any, [e]).unwrap();
    }
    store.close().unwrap();
    fs::write(dir.join(annal::index::file::FILE_NAME), stale).unwrap();
    let segs = segment_ids(&dir);
    assert!(segs.len() >= 5, "{segs:?}");
    // Damage the middle batch of segment 3 and of the last segment.
    let b3 = batches(&seg(&dir, 3));
    let (at, len, first, _) = b3[b3.len() / 2];
    flip(&seg(&dir, 3), at + len - 10);
    let last = *segs.last().unwrap();
    let bl = batches(&seg(&dir, last));
    let (at2, len2, _, _) = bl[bl.len() / 2];
    flip(&seg(&dir, last), at2 + len2 - 10);
    let v = verify(&dir).unwrap();
    assert!(!v.is_clean());
    assert_eq!(v.events, first - 1);
    let r = repair(&dir).unwrap();
    assert_eq!(r.kept_events, first - 1, "{r:?}");
    // Two damaged batches of one event each.
    assert_eq!(r.quarantined_events, ids.len() as u64 - first - 1, "{r:?}");
    assert_eq!(ids_in(&dir, options.clone()), ids[..first as usize - 1].to_vec());
    assert_healthy_after(&dir, options, first - 1);
    fs::remove_dir_all(&dir).unwrap();
}

/// Coverage: a middle segment cut shorter than a header, then exactly a
/// header; a last segment cut the same ways.
#[test]
fn segments_cut_to_odd_lengths() {
    for (which, len) in [
        ("middle", 30u64),
        ("middle", 64),
        ("last", 30),
        ("last", 64),
        ("last", 0),
        ("middle", 0),
        ("middle", 100),
        ("last", 100),
    ] {
        let dir = tmp(&format!("cut-{which}-{len}"));
        let options = opts(4096);
        let ids = build(&dir, options.clone(), 60, padded);
        let segs = segment_ids(&dir);
        assert!(segs.len() >= 4);
        let target = if which == "middle" { 2 } else { *segs.last().unwrap() };
        let first = batches(&seg(&dir, target))[0].2;
        truncate(&seg(&dir, target), len);
        let v = verify(&dir).unwrap();
        assert!(!v.is_clean(), "{which} {len}: {v:?}");
        let r = repair(&dir).unwrap();
        assert!(r.repaired, "{which} {len}: {r:?}");
        assert_eq!(r.kept_events, first - 1, "{which} {len}: {r:?}");
        assert_eq!(ids_in(&dir, options.clone()), ids[..first as usize - 1].to_vec());
        // Everything after the cut segment is in quarantine.
        let salvaged = salvaged_ids(&dir);
        let later_first = if which == "middle" {
            batches(&dir.join(QUARANTINE_DIR).join(segment::file_name(3)))[0].2
        } else {
            ids.len() as u64 + 1
        };
        assert_eq!(salvaged, ids[later_first as usize - 1..].to_vec(), "{which} {len}");
        assert_healthy_after(&dir, options, first - 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// Coverage: damage in the very first batch; checkpoints lowered to 0.
#[test]
fn damage_in_the_first_batch_with_checkpoints() {
    let dir = tmp("first-batch");
    let options = opts(4096);
    let ids = build(&dir, options.clone(), 30, padded);
    let store = Store::open(&dir, options.clone()).unwrap();
    store.checkpoints().save("c", 20).unwrap();
    store.close().unwrap();
    let (at, len, _, _) = batches(&seg(&dir, 1))[0];
    flip(&seg(&dir, 1), at + len - 10);
    let v = verify(&dir).unwrap();
    assert!(!v.is_clean());
    let r = repair(&dir).unwrap();
    assert_eq!(r.kept_events, 0, "{r:?}");
    assert_eq!(r.checkpoints_lowered, vec![("c".to_string(), 20)], "{r:?}");
    assert_eq!(r.quarantined_events, 29, "{r:?}");
    assert_eq!(salvaged_ids(&dir), ids[1..].to_vec());
    assert_healthy_after(&dir, options, 0);
    fs::remove_dir_all(&dir).unwrap();
}

fn files(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() && p.file_name().unwrap() != annal::LOCK_FILE_NAME {
            out.insert(p.clone(), fs::read(&p).unwrap());
        }
    }
    out
}

/// Coverage: undamaged stores of odd shapes (4 KiB segments, batches that
/// nearly fill a segment, multi-event batches, a segment size changed
/// between opens, checkpoints and snapshots at the end): verify finds
/// them clean and repair leaves every byte as it was.
#[test]
fn clean_stores_of_odd_shapes_verify_clean_and_are_left_untouched() {
    let dir = tmp("clean-shapes");
    let store = Store::open(&dir, opts(4096)).unwrap();
    let mut n = 0u64;
    for round in 0..40u64 {
        // Sizes from tiny to nearly a whole segment.
        let size = [10usize, 3000, 3900, 4096 - 64 - 32 - 40 - 3 - 4 - 1, 200][round as usize % 5];
        let events: Vec<EventData> = (0..(1 + round % 3))
            .map(|k| EventData::new("T", vec![b'a' + (k as u8); if k == 0 { size } else { 5 }]))
            .collect();
        let total: usize = events.iter().map(|e| e.data().len() + 40 + 3 + 1).sum::<usize>() + 32;
        if total > 4096 - 64 {
            continue;
        }
        n += events.len() as u64;
        store
            .append(&format!("s-{}", round % 4), ExpectedVersion::Any, events)
            .unwrap();
    }
    store.checkpoints().save("c", n).unwrap();
    store.close().unwrap();
    // Reopen with a bigger segment size and go on.
    let store = Store::open(&dir, opts(64 * 1024)).unwrap();
    for i in 0..30 {
        store
            .append("big", ExpectedVersion::Any, [EventData::new("T", padded(i))])
            .unwrap();
        n += 1;
    }
    store.save_snapshot("big", 30, 1, b"state").unwrap();
    store.close().unwrap();
    // And with a smaller one again.
    let store = Store::open(&dir, opts(4096)).unwrap();
    for i in 0..30 {
        store
            .append("small", ExpectedVersion::Any, [EventData::new("T", padded(i))])
            .unwrap();
        n += 1;
    }
    store.close().unwrap();
    let v = verify(&dir).unwrap();
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(v.events, n);
    let before = files(&dir);
    let r = repair(&dir).unwrap();
    assert!(!r.repaired, "{r:?}");
    assert_eq!(r.kept_events, n);
    assert_eq!(files(&dir), before, "repair changed an undamaged store");
    assert!(!dir.join(QUARANTINE_DIR).exists());
    fs::remove_dir_all(&dir).unwrap();
}

/// Coverage: snapshots of quarantined versions are dropped (a copy kept),
/// the others stay; verify is clean afterwards and a second repair is a
/// no-op.
#[test]
fn snapshots_past_the_kept_log_are_dropped_and_the_rest_kept() {
    let dir = tmp("snapshots");
    let options = opts(4096);
    let store = Store::open(&dir, options.clone()).unwrap();
    for i in 1..=60u64 {
        store
            .append(
                &format!("s-{}", i % 3),
                ExpectedVersion::Any,
                [EventData::new("T", padded(i))],
            )
            .unwrap();
    }
    store.save_snapshot("s-1", 5, 1, b"early").unwrap();
    store.save_snapshot("s-2", 19, 1, b"late").unwrap();
    store.checkpoints().save("c", 60).unwrap();
    store.close().unwrap();
    // Damage segment 3's first batch.
    let (at, len, first, _) = batches(&seg(&dir, 3))[0];
    flip(&seg(&dir, 3), at + len - 10);
    let r = repair(&dir).unwrap();
    assert_eq!(r.kept_events, first - 1, "{r:?}");
    assert!(first - 1 < 57, "{first}");
    assert_eq!(r.snapshots_dropped, vec![("s-2".to_string(), 19)], "{r:?}");
    assert_eq!(r.checkpoints_lowered, vec![("c".to_string(), 60)], "{r:?}");
    assert!(dir.join(QUARANTINE_DIR).join(annal::snapshot::file::FILE_NAME).exists());
    let store = Store::open(&dir, options.clone()).unwrap();
    assert!(store.load_snapshot("s-1").snapshot.is_some());
    assert_eq!(store.checkpoints().load("c").unwrap(), Some(first - 1));
    store.close().unwrap();
    assert_healthy_after(&dir, options, first - 1);
    fs::remove_dir_all(&dir).unwrap();
}

/// Coverage: a one-bit header damage in segment 3 (rebuilt, no event lost)
/// plus a damaged batch in segment 5.
#[test]
fn rebuilt_header_then_later_damage() {
    let dir = tmp("header-then-batch");
    let options = opts(4096);
    let ids = build(&dir, options.clone(), 100, padded);
    assert!(segment_ids(&dir).len() >= 6);
    flip(&seg(&dir, 3), 20);
    let b5 = batches(&seg(&dir, 5));
    let (at, len, first, _) = b5[2];
    flip(&seg(&dir, 5), at + len - 10);
    let r = repair(&dir).unwrap();
    assert_eq!(r.headers_rebuilt, vec![3], "{r:?}");
    assert_eq!(r.kept_events, first - 1, "{r:?}");
    assert_eq!(r.quarantined_events, 100 - first, "{r:?}");
    assert_eq!(ids_in(&dir, options.clone()), ids[..first as usize - 1].to_vec());
    assert_eq!(salvaged_ids(&dir), ids[first as usize..].to_vec());
    assert_healthy_after(&dir, options, first - 1);
    fs::remove_dir_all(&dir).unwrap();
}

/// Coverage: a missing middle segment with a stale (valid) index file.
#[test]
fn missing_middle_segment_with_a_stale_index() {
    let dir = tmp("gap");
    let options = opts(4096);
    let ids = build(&dir, options.clone(), 30, padded);
    let stale = fs::read(dir.join(annal::index::file::FILE_NAME)).unwrap();
    let store = Store::open(&dir, options.clone()).unwrap();
    let mut ids = ids;
    for i in 31..=90 {
        let e = EventData::new("Tick", padded(i));
        ids.push(e.id());
        store.append("s-x", ExpectedVersion::Any, [e]).unwrap();
    }
    store.close().unwrap();
    fs::write(dir.join(annal::index::file::FILE_NAME), stale).unwrap();
    let segs = segment_ids(&dir);
    assert!(segs.len() >= 6);
    let first4 = batches(&seg(&dir, 4))[0].2;
    let moved = tmp("gap-aside");
    fs::rename(seg(&dir, 4), moved.join("4.seg")).unwrap();
    let v = verify(&dir).unwrap();
    assert!(!v.is_clean());
    assert_eq!(v.events, first4 - 1);
    let r = repair(&dir).unwrap();
    assert_eq!(r.kept_events, first4 - 1, "{r:?}");
    assert_eq!(ids_in(&dir, options.clone()), ids[..first4 as usize - 1].to_vec());
    let first5 = batches(&dir.join(QUARANTINE_DIR).join(segment::file_name(5)))[0].2;
    assert_eq!(salvaged_ids(&dir), ids[first5 as usize - 1..].to_vec());
    assert_healthy_after(&dir, options, first4 - 1);
    fs::remove_dir_all(&dir).unwrap();
    fs::remove_dir_all(&moved).unwrap();
}

/// Coverage: a sealed segment extended with zeros (no event touched): not
/// damage; verify clean, repair untouched, the store opens with every event.
#[test]
fn sealed_segment_extended_with_zeros_is_not_damage() {
    let dir = tmp("zero-extended");
    let options = opts(4096);
    let ids = build(&dir, options.clone(), 60, padded);
    let path = seg(&dir, 2);
    let len = fs::metadata(&path).unwrap().len();
    truncate(&path, len + 100);
    let v = verify(&dir).unwrap();
    let before = files(&dir);
    let r = repair(&dir).unwrap();
    if v.is_clean() {
        assert!(!r.repaired, "{r:?}");
        assert_eq!(files(&dir), before);
    }
    assert_eq!(r.kept_events, 60, "{v:?} {r:?}");
    assert_eq!(ids_in(&dir, options.clone()), ids);
    fs::remove_dir_all(&dir).unwrap();
}

/// Coverage: garbage after the last batch of a sealed segment (next one
/// follows on): cut, copied to quarantine, no event lost.
#[test]
fn garbage_after_a_sealed_segment_costs_no_event() {
    let dir = tmp("sealed-garbage");
    let options = opts(4096);
    let ids = build(&dir, options.clone(), 60, padded);
    let path = seg(&dir, 2);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"garbage garbage garbage");
    fs::write(&path, bytes).unwrap();
    assert!(!verify(&dir).unwrap().is_clean());
    let r = repair(&dir).unwrap();
    assert!(r.repaired);
    assert_eq!(r.kept_events, 60, "{r:?}");
    assert_eq!(ids_in(&dir, options.clone()), ids);
    assert_healthy_after(&dir, options, 60);
    fs::remove_dir_all(&dir).unwrap();
}

fn all_files_recursive(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_files_recursive(&p));
        } else if p.file_name().unwrap() != annal::LOCK_FILE_NAME {
            out.insert(p.clone(), fs::read(&p).unwrap());
        }
    }
    out
}

/// Two copies of one store that went on differently after 10 events, with
/// the same event sizes (so their segments line up position for
/// position). Returns (copy A, copy B, number of segments of A).
fn diverged_copies(name: &str, options: &Options) -> (Dir, Dir, u64) {
    diverged_copies_sized(name, options, 150, 150)
}

fn diverged_copies_sized(name: &str, options: &Options, pad_a: usize, pad_b: usize) -> (Dir, Dir, u64) {
    let a = tmp(&format!("{name}-a"));
    let b = tmp(&format!("{name}-b"));
    build(&a, options.clone(), 10, padded);
    for entry in fs::read_dir(&a).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() && p.file_name().unwrap() != annal::LOCK_FILE_NAME {
            fs::copy(&p, b.join(p.file_name().unwrap())).unwrap();
        }
    }
    for (dir, pad) in [(&a, pad_a), (&b, pad_b)] {
        let store = Store::open(dir, options.clone()).unwrap();
        for i in 11..=100u64 {
            let data = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(pad));
            store
                .append(
                    &format!("s-{}", i % 5),
                    ExpectedVersion::Any,
                    [EventData::new("Tick", data)],
                )
                .unwrap();
        }
        store.close().unwrap();
    }
    let n = *segment_ids(&a).last().unwrap().min(segment_ids(&b).last().unwrap());
    (a, b, n)
}

/// Repair refused a mix of two copies of the store, saying so.
fn assert_refused(r: annal::Result<annal::tools::RepairReport>) {
    match r {
        Err(annal::Error::Corruption { reason, .. }) => {
            assert!(reason.contains("another copy of the store"), "{reason}");
            assert!(reason.contains("repair changed nothing"), "{reason}");
        }
        other => panic!("repair must refuse a mix of two copies: {other:?}"),
    }
}

/// Puts copy B's segments from `from` on in place of copy A's.
fn mix(a: &Path, b: &Path, from: u64, n: u64) {
    for id in from..=n {
        fs::copy(seg(b, id), seg(a, id)).unwrap();
    }
    let _ = fs::remove_file(a.join(annal::index::file::FILE_NAME));
}

/// Coverage: the plain case, segments of two diverged copies mixed:
/// repair refuses and changes nothing.
#[test]
fn diverged_copies_mixed_are_refused() {
    let options = opts(4096);
    let (a, b, n) = diverged_copies("diverged-plain", &options);
    assert!(n >= 7, "{n}");
    mix(&a, &b, 5, n);
    let before = all_files_recursive(&a);
    let v = verify(&a).unwrap();
    assert!(!v.is_clean());
    assert_refused(repair(&a));
    assert_eq!(all_files_recursive(&a), before, "a refused repair changed files");
    fs::remove_dir_all(&a).unwrap();
    fs::remove_dir_all(&b).unwrap();
}

/// Found: segments of two diverged copies mixed, plus a one-bit damage
/// in the header of an earlier segment (which repair rebuilds). The
/// refusal was checked only on the first walk, before the header was
/// mended, so the second walk's broken chain was quarantined like any
/// damage instead of refused: repair rewrote a header and moved the other
/// copy's segments into this store's quarantine.
#[test]
fn diverged_copies_mixed_behind_a_rebuildable_header_are_refused() {
    let options = opts(4096);
    let (a, b, n) = diverged_copies("diverged-header", &options);
    mix(&a, &b, 5, n);
    flip(&seg(&a, 3), 20);
    let before = all_files_recursive(&a);
    assert_refused(repair(&a));
    assert_eq!(all_files_recursive(&a), before, "a refused repair changed files");
    fs::remove_dir_all(&a).unwrap();
    fs::remove_dir_all(&b).unwrap();
}

/// Found: segments of two diverged copies mixed, plus a damaged batch in
/// an earlier segment, where the walk stops. Repair did not refuse: it cut
/// the log there and moved the other copy's segments into quarantine,
/// where salvage served them as this store's events.
#[test]
fn diverged_copies_mixed_behind_a_damaged_batch_are_refused() {
    let options = opts(4096);
    let (a, b, n) = diverged_copies("diverged-batch", &options);
    mix(&a, &b, 5, n);
    let (at, len, _, _) = batches(&seg(&a, 2))[1];
    flip(&seg(&a, 2), at + len - 10);
    let before = all_files_recursive(&a);
    assert_refused(repair(&a));
    assert_eq!(all_files_recursive(&a), before, "a refused repair changed files");
    fs::remove_dir_all(&a).unwrap();
    fs::remove_dir_all(&b).unwrap();
}

/// Found: two diverged copies whose later events differ in size, so their
/// segments do not line up: copy B's segment 5 starts at a position copy
/// A's log already holds (it cannot be A's own segment 5 with events
/// missing before it). The position check came before the chain check, so
/// this was taken for damage: repair did not refuse, it moved B's segments
/// into A's quarantine.
#[test]
fn diverged_copies_that_do_not_line_up_are_refused() {
    let options = opts(4096);
    // B's events are bigger: its segment 5 starts at a position that A's
    // segment 4 holds.
    let (a, b, n) = diverged_copies_sized("diverged-sizes", &options, 150, 300);
    let a_last = *segment_ids(&a).last().unwrap();
    for id in n + 1..=a_last {
        fs::remove_file(seg(&a, id)).unwrap();
    }
    mix(&a, &b, 5, n);
    let b5 = batches(&seg(&a, 5))[0].2;
    let a4_end = {
        let b = batches(&seg(&a, 4));
        let l = *b.last().unwrap();
        l.2 + l.3
    };
    assert!(
        b5 < a4_end,
        "B's segment 5 must start inside A's segment 4: {b5} {a4_end}"
    );
    let before = all_files_recursive(&a);
    assert_refused(repair(&a));
    assert_eq!(all_files_recursive(&a), before, "a refused repair changed files");
    fs::remove_dir_all(&a).unwrap();
    fs::remove_dir_all(&b).unwrap();
}

/// Coverage: a repair stopped part-way (simulated: the damaged segment's
/// tail copied and the last segment moved into quarantine, nothing else
/// done; then the same with the damaged bytes zeroed too, index still in
/// place): running repair again keeps the same events, and salvage still
/// reads back every valid event after the damage.
#[test]
fn repair_stopped_part_way_then_run_again() {
    for zeroed in [false, true] {
        let dir = tmp(&format!("interrupted-{zeroed}"));
        let options = opts(4096);
        let ids = build(&dir, options.clone(), 60, padded);
        let segs = segment_ids(&dir);
        let last = *segs.last().unwrap();
        let (at, len, first, _) = batches(&seg(&dir, 2))[1];
        flip(&seg(&dir, 2), at + len - 10);
        let q = dir.join(QUARANTINE_DIR);
        fs::create_dir_all(&q).unwrap();
        let bytes = fs::read(seg(&dir, 2)).unwrap();
        fs::write(
            q.join(format!("{}.from-{at}", segment::file_name(2))),
            &bytes[at as usize..],
        )
        .unwrap();
        for id in (if zeroed { 3 } else { last })..=last {
            fs::rename(seg(&dir, id), q.join(segment::file_name(id))).unwrap();
        }
        if zeroed {
            let mut b = bytes.clone();
            for x in &mut b[at as usize..] {
                *x = 0;
            }
            fs::write(seg(&dir, 2), b).unwrap();
        }
        let r = repair(&dir).unwrap();
        assert_eq!(r.kept_events, first - 1, "{r:?}");
        assert_eq!(ids_in(&dir, options.clone()), ids[..first as usize - 1].to_vec());
        assert_eq!(salvaged_ids(&dir), ids[first as usize..].to_vec());
        assert_healthy_after(&dir, options, first - 1);
    }
}

/// Coverage: several mendable problems and a real damage in a row:
/// garbage after sealed segment 2, a one-bit flip in segment 3's header,
/// a damaged batch in segment 4.
#[test]
fn mended_problems_then_damage() {
    let dir = tmp("mended-then-damage");
    let options = opts(4096);
    let ids = build(&dir, options.clone(), 80, padded);
    let mut b2 = fs::read(seg(&dir, 2)).unwrap();
    b2.extend_from_slice(b"trailing garbage");
    fs::write(seg(&dir, 2), b2).unwrap();
    flip(&seg(&dir, 3), 45);
    let (at, len, first, _) = batches(&seg(&dir, 4))[1];
    flip(&seg(&dir, 4), at + len - 10);
    let r = repair(&dir).unwrap();
    assert_eq!(r.headers_rebuilt, vec![3], "{r:?}");
    assert_eq!(r.kept_events, first - 1, "{r:?}");
    assert_eq!(r.quarantined_events, 80 - first, "{r:?}");
    assert_eq!(ids_in(&dir, options.clone()), ids[..first as usize - 1].to_vec());
    assert_eq!(salvaged_ids(&dir), ids[first as usize..].to_vec());
    assert_healthy_after(&dir, options, first - 1);
}
