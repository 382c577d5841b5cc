//! Adversarial review of `git diff e29d695..HEAD -- src/`: the next-batch
//! rule after damage (`segment::find_next_batch`) as the offline tools use
//! it (`repair`'s `frames`, `chain_contradicted`, `salvage`), and open's
//! classification of damage in the active segment.
//!
//! The stores hold an event whose data is an archived copy of another
//! store's first batch (positions 1..=N): the very case the rule was made
//! for ("a frame inside an event's payload, an archived copy of a log").
//! A bit flip in the frame-length field of that event's own batch then
//! makes the walk after the damage land on the archived frame, whose
//! positions (1..=N, past the log's last position 0 before it, with room)
//! pass the rule; its last position N then becomes "the log's last", and
//! every real batch after it, whose positions are <= N, is skipped.
//!
//! It found (fixed; those tests failed before): salvage and repair's
//! walks after damage raised "the log's last position" to the archived
//! frame's, then passed over every real batch after it: salvage lost the
//! undamaged events, repair refused a bit flip as a mix of two copies of
//! the store, and its copy of the damaged segment's tail lost a last batch
//! ending in zero bytes. The tools' walks no longer use positions to pass
//! over frames. (Still open, in the notes: with the damaged
//! batch's length field itself damaged, a frame inside its payload is
//! counted and handed over as events: `quarantined_events` then counts
//! the archive's.) The other tests are coverage.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use annal::log::frame;
use annal::log::segment::{self, SEGMENT_HEADER_BYTES};
use annal::tools::{quarantined_log_files, repair, salvage};
use annal::{Error, EventData, ExpectedVersion, Options, Store, Uuid};

fn seg(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

/// The batch frame of another store's first append: `n` events of stream
/// `Old-1` in one batch, positions 1..=n.
fn archived_frame(scratch: &Path, n: usize) -> Vec<u8> {
    let other = scratch.join("other-store");
    let o = Store::open(&other, Options::default()).unwrap();
    o.append(
        "Old-1",
        ExpectedVersion::NoStream,
        (0..n).map(|i| EventData::new("Old", format!("{i:04}"))),
    )
    .unwrap();
    o.close().unwrap();
    let bytes = std::fs::read(seg(&other, 1)).unwrap();
    let h = frame::parse_batch_header(&bytes[SEGMENT_HEADER_BYTES as usize..]).unwrap();
    let at = SEGMENT_HEADER_BYTES as usize;
    let f = bytes[at..at + h.frame_len as usize].to_vec();
    assert!(frame::check_batch(&f, |_, _| {}).is_ok());
    f
}

/// Appends, as the store's first event, one whose data holds `frame`
/// (an archive), then `orders` single-event appends; returns the ids of
/// those later events.
fn store_with_archive(dir: &Path, options: Options, frame: &[u8], orders: usize) -> Vec<Uuid> {
    let s = Store::open(dir, options).unwrap();
    let mut data = b"ARCHIVE:".to_vec();
    data.extend_from_slice(frame);
    data.extend_from_slice(b":END");
    s.append(
        "Archive-1",
        ExpectedVersion::NoStream,
        [EventData::new("Archived", data)],
    )
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..orders {
        let id = Uuid::new_v4();
        s.append(
            &format!("Order-{i}"),
            ExpectedVersion::NoStream,
            [EventData::new("Placed", format!("{{\"order\":{i},\"pad\":\"{}\"}}", "p".repeat(40))).with_id(id)],
        )
        .unwrap();
        ids.push(id);
    }
    s.close().unwrap();
    ids
}

/// Flips one bit of the frame-length field of the first batch of segment
/// 1 (the archive's batch): +1 MiB, a length that no longer says where
/// the batch ends. A single bit flip in acknowledged data.
fn flip_first_batch_length(dir: &Path) {
    let path = seg(dir, 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = SEGMENT_HEADER_BYTES as usize;
    assert!(frame::check_batch(&bytes[at..], |_, _| {}).is_ok());
    bytes[at + 4 + 2] ^= 0x10;
    assert!(frame::check_batch(&bytes[at..], |_, _| {}).is_err());
    std::fs::write(&path, &bytes).unwrap();
}

/// DURABILITY.md guarantee 10: a repair keeps "every event it quarantined
/// still there for `salvage`"; `salvage`'s doc: "Hands `each` every event
/// of the valid batch frames in `files` ... After a damaged stretch, the
/// walk goes on at the valid batch that can follow it ..., never at a
/// frame inside an event's payload that the damage exposed". Here one bit
/// flip damages the first batch (whose event archives another store's
/// batch of positions 1..=300); the 9 batches after it are intact and are
/// quarantined by repair. Salvage must hand over all 9.
///
/// Found (fixed): the `.from-64` copy starts with the damaged batch, so salvage
/// knows no last position (`last = None`): `find_next_batch` accepts the
/// archived frame inside the payload (positions 1..=300, handed over as
/// if they were this store's events), sets `last = 300`, and from then on
/// rejects every real batch (positions 2..=10 <= 300): the 9 undamaged
/// events are never handed over. (Before the diff, `find_valid_batch`
/// resumed at each real batch after the archive.) The same walk in
/// `repair::frames` counts 300 quarantined events instead of 9.
#[test]
fn salvage_hands_over_the_undamaged_events_after_a_damaged_batch_holding_an_archive() {
    let scratch = tempfile::tempdir().unwrap();
    let frame = archived_frame(scratch.path(), 300);
    let dir = scratch.path().join("store");
    let ids = store_with_archive(&dir, Options::default(), &frame, 9);
    flip_first_batch_length(&dir);

    // Open refuses (a valid batch follows): the damage is reported.
    let _ = std::fs::remove_file(dir.join("index"));
    match Store::open(&dir, Options::default()) {
        Err(Error::Corruption { .. }) => {}
        other => panic!("expected corruption at open, got {:?}", other.map(|_| ())),
    }

    let report = repair(&dir).unwrap();
    assert!(report.repaired, "{report:?}");
    assert_eq!(report.kept_events, 0, "{report:?}");
    let files = quarantined_log_files(&dir).unwrap();
    let mut handed = Vec::new();
    salvage(&files, |e| {
        handed.push((e.id(), e.stream().to_string(), e.position()));
        ControlFlow::Continue(())
    })
    .unwrap();
    let missing: Vec<&Uuid> = ids
        .iter()
        .filter(|id| !handed.iter().any(|(h, _, _)| h == *id))
        .collect();
    let phantom = handed.iter().filter(|(_, s, _)| s == "Old-1").count();
    assert!(
        missing.is_empty(),
        "salvage lost {} of the {} undamaged quarantined events (handed over {} events, {} of them from \
         the archive inside the damaged event's payload); repair reported {} quarantined events",
        missing.len(),
        ids.len(),
        handed.len(),
        phantom,
        report.quarantined_events
    );
}

/// DURABILITY.md guarantee 9 and `repair`'s doc: repair refuses a
/// directory whose segment headers record an end of the segment before
/// them "that no valid batch there has, while a valid batch there holds
/// the position before the segment's first or a later one ... (no crash
/// or damage explains it)": two copies of the store. A store whose sealed
/// segment 1 has one bit flipped, and no other change, is damage: repair
/// must move the damaged part to quarantine, not refuse.
///
/// Found (fixed): `chain_contradicted` (src/recovery/chain.rs) walks segment 1
/// past the damage with `find_next_batch`, lands on the archived frame in
/// the damaged event's payload (positions 1..=1000, past the segment's
/// first position - 1 = 0), takes it as a batch "holding a later
/// position" whose end is not the recorded one, then skips every real
/// batch (positions <= 1000), never reaching the recorded last batch:
/// repair refuses the store as a mix of two copies, and changes nothing.
#[test]
fn repair_does_not_refuse_a_bit_flip_in_a_sealed_segment_as_a_diverged_copy() {
    let scratch = tempfile::tempdir().unwrap();
    let frame = archived_frame(scratch.path(), 1000);
    let dir = scratch.path().join("store");
    let options = Options::default().with_segment_size_bytes(128 * 1024);
    store_with_archive(&dir, options, &frame, 1500);
    assert!(seg(&dir, 2).exists(), "segment 1 sealed");
    // Segment 1 holds fewer events than the archive's last position.
    let s2 = std::fs::read(seg(&dir, 2)).unwrap();
    let h2 = segment::SegmentHeader::decode(&s2, &seg(&dir, 2)).unwrap();
    assert!(h2.first_position - 1 < 1000, "{}", h2.first_position);
    flip_first_batch_length(&dir);

    let report = match repair(&dir) {
        Ok(report) => report,
        Err(e) => panic!("repair refused a store that a single bit flip damaged: {e}"),
    };
    assert!(report.repaired, "{report:?}");
    let s = Store::open(&dir, Options::default().with_segment_size_bytes(128 * 1024)).unwrap();
    assert_eq!(s.last_position(), 0);
    s.close().unwrap();
}

/// Coverage of the critical risk (passes now): in the active segment of
/// a store with no index file (nothing else proves the log durable),
/// damage that leaves a later real batch intact is corruption, never a
/// torn tail cut at open, also with archived frames in the payloads
/// around it: each single-bit flip in the frame-length, count and
/// first-position fields of every batch but the last, and a zeroed
/// 4 KiB page at every 512-byte step.
#[test]
fn damage_before_an_intact_batch_in_the_active_segment_is_never_cut() {
    let scratch = tempfile::tempdir().unwrap();
    let frame = archived_frame(scratch.path(), 50);
    let dir = scratch.path().join("store");
    {
        let s = Store::open(&dir, Options::default()).unwrap();
        for i in 0..12u64 {
            let mut data = format!("event {i} ").into_bytes();
            if i % 3 == 0 {
                data.extend_from_slice(&frame);
            }
            s.append(
                &format!("S-{i}"),
                ExpectedVersion::NoStream,
                [EventData::new("T", data)],
            )
            .unwrap();
        }
        s.close().unwrap();
    }
    let _ = std::fs::remove_file(dir.join("index"));
    let original = std::fs::read(seg(&dir, 1)).unwrap();
    let mut starts = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES as usize;
    while let Ok(h) = frame::check_batch(&original[at..], |_, _| {}) {
        starts.push(at);
        at += h.frame_len as usize;
    }
    let end = at;
    assert_eq!(starts.len(), 12);
    let work = scratch.path().join("work");
    let try_open = |bytes: &[u8], what: &str| {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(seg(&work, 1), bytes).unwrap();
        match Store::open(&work, Options::default().with_create_if_missing(false)) {
            Err(Error::Corruption { .. }) => {}
            Ok(s) => {
                let r = format!("{:?}", s.recovery_report());
                let n = s.last_position();
                drop(s);
                panic!("{what}: opened with {n} events, {r:?}");
            }
            Err(e) => panic!("{what}: {e}"),
        }
    };
    let last_start = *starts.last().unwrap();
    for &b in &starts[..starts.len() - 1] {
        for field in [4usize, 8, 16] {
            for bit in 0..32 {
                let mut bytes = original.clone();
                bytes[b + field + bit / 8] ^= 1 << (bit % 8);
                if frame::check_batch(&bytes[b..], |_, _| {}).is_ok() {
                    continue;
                }
                try_open(&bytes, &format!("batch at {b}, field {field}, bit {bit}"));
            }
        }
    }
    let mut page = SEGMENT_HEADER_BYTES as usize;
    while page + 4096 <= last_start {
        let mut bytes = original.clone();
        bytes[page..page + 4096].fill(0);
        if bytes[last_start..end] == original[last_start..end] {
            try_open(&bytes, &format!("page zeroed at {page}"));
        }
        page += 512;
    }
}

/// `repair`'s doc and DURABILITY.md guarantee 10: what repair takes out
/// of a segment it copies to `quarantine/` first, "every event it
/// quarantined still there for `salvage`" (e88f08e: "the copy of a
/// damaged segment's tail keeps a last valid batch whose data ends in
/// zero bytes"). Here the damaged first batch holds an archived frame,
/// and the store's last event's data ends in zero bytes.
///
/// Found (fixed): `repair::frames` (src/tools/repair.rs) walks past the
/// damage onto the archive (positions 1..=300), then skips every real
/// batch, so it never sees the last one end: the copy stops at the last
/// non-zero byte, cutting the last batch short, and the segment is then
/// zeroed: that undamaged, acknowledged event is gone for good (no
/// salvage can give it back).
#[test]
fn repair_copies_the_whole_last_batch_behind_an_archive_in_the_damaged_batch() {
    let scratch = tempfile::tempdir().unwrap();
    let frame = archived_frame(scratch.path(), 300);
    let dir = scratch.path().join("store");
    store_with_archive(&dir, Options::default(), &frame, 5);
    let last_id = Uuid::new_v4();
    {
        let s = Store::open(&dir, Options::default()).unwrap();
        let mut data = b"last event, its data ends in zeros:".to_vec();
        data.extend(std::iter::repeat_n(0u8, 200));
        s.append(
            "Last-1",
            ExpectedVersion::NoStream,
            [EventData::new("Z", data).with_id(last_id)],
        )
        .unwrap();
        s.close().unwrap();
    }
    let original = std::fs::read(seg(&dir, 1)).unwrap();
    let mut at = SEGMENT_HEADER_BYTES as usize;
    while let Ok(h) = frame::check_batch(&original[at..], |_, _| {}) {
        at += h.frame_len as usize;
    }
    let log_end = at;
    flip_first_batch_length(&dir);
    let report = repair(&dir).unwrap();
    let copy = report
        .quarantined_files
        .iter()
        .find(|p| p.to_string_lossy().contains(".seg.from-"))
        .expect("a copy of the damaged segment's tail");
    let copied = std::fs::read(copy).unwrap();
    assert_eq!(
        copied.len(),
        log_end - SEGMENT_HEADER_BYTES as usize,
        "the copy of the damaged segment's tail does not reach the end of its last batch (the segment itself is \
         zeroed now)"
    );
    let mut found = false;
    salvage(std::slice::from_ref(copy), |e| {
        found |= e.id() == last_id;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(found, "the last event is not in quarantine");
}

// ---- dispatcher: shared category reads and wait_for wake-ups (coverage) ----

use annal::{ReadAll, RecordedEvent, StartFrom, SubscriptionFilter};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Seen = Arc<Mutex<Vec<u64>>>;

fn recorder(seen: &Seen) -> impl FnMut(&RecordedEvent) -> Result<(), annal::HandlerError> + Send + 'static {
    let seen = seen.clone();
    move |e| {
        seen.lock().unwrap().push(e.position());
        Ok(())
    }
}

fn mixed(store: &Store, n: u64) {
    for i in 0..n {
        let stream = if i % 7 == 3 {
            format!("Order-{}", i % 11)
        } else {
            format!("Other-{}", i % 5)
        };
        store
            .append(&stream, ExpectedVersion::Any, [EventData::new("E", format!("{i}"))])
            .unwrap();
    }
}

fn positions_of(store: &Store, category: &str, after: u64) -> Vec<u64> {
    store
        .read_all(ReadAll::forward().from_position(after))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.stream().split('-').next() == Some(category))
        .map(|e| e.position())
        .collect()
}

/// `Dispatcher::wait_for`: "Waits until every handler has handled (or
/// passed over ...) every event up to `position`, for at most `timeout`
/// ... Returns whether they got there". With every handler following one
/// category (so the thread reads only its events), waiters on positions
/// of other streams, in the history and in the future, several at once,
/// are all woken: none sleeps to its timeout. Each handler gets its
/// category's events once, in order. (Passes now.)
#[test]
fn waiters_on_positions_outside_the_followed_category_are_woken() {
    let scratch = tempfile::tempdir().unwrap();
    let store = Store::open(
        scratch.path().join("s"),
        Options::default().with_durability(annal::Durability::Buffered),
    )
    .unwrap();
    mixed(&store, 20_000);
    let seen: [Seen; 2] = Default::default();
    let d = store
        .dispatcher()
        .handler(
            "a",
            SubscriptionFilter::category("Order"),
            StartFrom::Start,
            recorder(&seen[0]),
        )
        .unwrap()
        .handler(
            "b",
            SubscriptionFilter::category("Order"),
            StartFrom::After(7_000),
            recorder(&seen[1]),
        )
        .unwrap()
        .start()
        .unwrap();
    let d = Arc::new(d);
    std::thread::scope(|scope| {
        let mut waiters = Vec::new();
        for target in [19_998u64, 5, 12_345, 20_000, 20_500, 21_000, 20_001] {
            let d = d.clone();
            waiters.push(scope.spawn(move || {
                let t = Instant::now();
                let ok = d.wait_for(target, Duration::from_secs(20));
                (target, ok, t.elapsed())
            }));
        }
        std::thread::sleep(Duration::from_millis(50));
        mixed(&store, 1_000);
        for w in waiters {
            let (target, ok, took) = w.join().unwrap();
            assert!(
                ok && took < Duration::from_secs(10),
                "wait_for({target}): {ok} after {took:?}"
            );
        }
    });
    let head = store.last_position();
    assert!(d.wait_for(head, Duration::from_secs(20)));
    assert_eq!(*seen[0].lock().unwrap(), positions_of(&store, "Order", 0));
    assert_eq!(*seen[1].lock().unwrap(), positions_of(&store, "Order", 7_000));
}

/// A handler set that changes while the shared read is on: a handler of
/// all events fails early (the thread then reads the category only), a
/// category handler fails midway; the remaining one still gets each of
/// its events once, in order, and the failed ones stop exactly where
/// they failed. (Passes now.)
#[test]
fn handlers_failing_during_a_category_read_lose_or_repeat_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let store = Store::open(
        scratch.path().join("s"),
        Options::default().with_durability(annal::Durability::Buffered),
    )
    .unwrap();
    mixed(&store, 30_000);
    let seen: [Seen; 3] = Default::default();
    let fail_after = |seen: &Seen, n: usize| {
        let seen = seen.clone();
        move |e: &RecordedEvent| {
            let mut s = seen.lock().unwrap();
            if s.len() == n {
                return Err("enough".into());
            }
            s.push(e.position());
            Ok(())
        }
    };
    let d = store
        .dispatcher()
        .handler(
            "all",
            SubscriptionFilter::all(),
            StartFrom::Start,
            fail_after(&seen[0], 100),
        )
        .unwrap()
        .handler(
            "order-failing",
            SubscriptionFilter::category("Order"),
            StartFrom::Start,
            fail_after(&seen[1], 3_000),
        )
        .unwrap()
        .handler(
            "order",
            SubscriptionFilter::category("Order"),
            StartFrom::Start,
            recorder(&seen[2]),
        )
        .unwrap()
        .start()
        .unwrap();
    mixed(&store, 2_000);
    let head = store.last_position();
    let t = Instant::now();
    assert!(
        !d.wait_for(head, Duration::from_secs(20)),
        "handlers failed before the head"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.status().iter().find(|h| h.name == "order").unwrap().position < head {
        assert!(Instant::now() < deadline, "{:?}", d.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    let orders = positions_of(&store, "Order", 0);
    assert_eq!(*seen[2].lock().unwrap(), orders);
    assert_eq!(seen[1].lock().unwrap()[..], orders[..3_000]);
    assert_eq!(seen[0].lock().unwrap()[..], (1..=100).collect::<Vec<u64>>()[..]);
    let status = d.status();
    assert_eq!(
        status[1].failure.as_ref().map(|f| f.0),
        Some(orders[3_000]),
        "{status:?}"
    );
}
