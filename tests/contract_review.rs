//! A documented-contract audit: each test asserts one promise made by a doc
//! comment or by README.md / docs/*.md, on an edge input nobody else
//! pinned down (empty, zero, beyond the end, `u64::MAX`, after close,
//! read-only).

mod common;

use std::time::Duration;

use annal::{
    Checkpoints, Dispatcher, Durability, Error, EventData, Events, ExpectedVersion, Options, ReadAll, ReadStream,
    SnapshotIssue, SnapshotOptions, StartFrom, Store, StreamAppend, Subscription, SubscriptionFilter,
    SubscriptionState, Uuid, limits,
};
use common::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Options::default()).unwrap();
    (dir, store)
}

fn positions(events: Events) -> Vec<u64> {
    events.map(|e| e.unwrap().position()).collect()
}

fn versions(events: Events) -> Vec<u64> {
    events.map(|e| e.unwrap().version()).collect()
}

fn is_invalid<T>(r: annal::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidInput(_)))
}

/// A store with streams `A-1` (3 events) and `B-1` (2 events), interleaved:
/// positions A-1: 1, 3, 5; B-1: 2, 4.
fn five() -> (tempfile::TempDir, Store) {
    let (d, store) = open();
    for i in 0..5u64 {
        let s = if i % 2 == 0 { "A-1" } else { "B-1" };
        store.append(s, ExpectedVersion::Any, [event("T", i)]).unwrap();
    }
    (d, store)
}

// ---------------------------------------------------------------- types

#[test]
fn public_handles_are_send_and_sync_as_documented() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    // "Cheap to clone and share between threads (Send + Sync)".
    send_sync::<Store>();
    // "Cheap to clone; does not keep the store open" (shared by threads).
    send_sync::<Checkpoints>();
    send::<Subscription>();
    send::<Events>();
    send::<Dispatcher>();
    send_sync::<Error>();
}

// -------------------------------------------------------------- options

#[test]
fn segment_size_bounds_are_enforced_with_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    for bad in [
        0,
        limits::SEGMENT_BYTES_MIN - 1,
        limits::SEGMENT_BYTES_MAX + 1,
        u64::MAX,
    ] {
        let r = Store::open(&p, Options::default().with_segment_size_bytes(bad));
        assert!(is_invalid(r), "segment size {bad}");
        assert!(!p.exists(), "a refused open creates nothing");
    }
    let store = Store::open(
        &p,
        Options::default().with_segment_size_bytes(limits::SEGMENT_BYTES_MIN),
    )
    .unwrap();
    store.append("S", ExpectedVersion::Any, [event("T", 1)]).unwrap();
    store.close().unwrap();
}

#[test]
fn a_zero_periodic_interval_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = Store::open(
        dir.path().join("s"),
        Options::default().with_durability(Durability::Periodic(Duration::ZERO)),
    );
    assert!(is_invalid(r));
}

#[test]
fn an_empty_path_is_invalid_input() {
    assert!(is_invalid(Store::open("", Options::default())));
}

#[test]
fn a_huge_idempotency_window_is_capped_not_allocated() {
    // "At most u32::MAX ids are remembered, whatever is asked."
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("s"),
        Options::default().with_idempotency_window_events(usize::MAX),
    )
    .unwrap();
    let e = event("T", 1);
    let r1 = store.append("S-1", ExpectedVersion::Any, [e.clone()]).unwrap();
    store.append("S-1", ExpectedVersion::Any, [event("T", 2)]).unwrap();
    // An older append retried under Any: recognised within the window.
    let r2 = store.append("S-1", ExpectedVersion::Any, [e]).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(store.last_position(), 2);
}

#[test]
fn a_zero_window_still_recognises_a_retry_of_the_streams_last_append() {
    // "0 disables it. A retry of a stream's latest append is recognised
    // beyond the window too, by the ids of the stream's last events".
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("s"),
        Options::default().with_idempotency_window_events(0),
    )
    .unwrap();
    let e = event("T", 1);
    let r1 = store.append("S-1", ExpectedVersion::Any, [e.clone()]).unwrap();
    let r2 = store.append("S-1", ExpectedVersion::Any, [e.clone()]).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(store.last_position(), 1);
    // Beyond the (empty) window, after a later append: written again.
    store.append("S-1", ExpectedVersion::Any, [event("T", 2)]).unwrap();
    let r3 = store.append("S-1", ExpectedVersion::Any, [e.clone()]).unwrap();
    assert_eq!(r3.first_version, 3);
    // Under Exact, the original result always.
    let r4 = store.append("S-1", ExpectedVersion::Exact(0), [e]).unwrap();
    assert_eq!(r4, r1);
}

#[test]
fn create_if_missing_false_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let r = Store::open(&p, Options::default().with_create_if_missing(false));
    assert!(r.is_err());
    assert!(!p.exists());
    std::fs::create_dir(&p).unwrap();
    let r = Store::open(&p, Options::default().with_create_if_missing(false));
    assert!(is_invalid(r));
    assert_eq!(std::fs::read_dir(&p).unwrap().count(), 0, "not even a LOCK file");
}

#[test]
fn read_only_open_of_a_missing_store_fails_and_creates_nothing() {
    // "The store must exist (create_if_missing is ignored)."
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let r = Store::open(&p, Options::default().with_read_only(true).with_create_if_missing(true));
    assert!(r.is_err());
    assert!(!p.exists());
}

// --------------------------------------------------------------- appends

#[test]
fn an_empty_append_is_invalid_input_and_writes_nothing() {
    let (_d, store) = open();
    assert!(is_invalid(store.append("S", ExpectedVersion::Any, [])));
    assert!(is_invalid(store.append_multi(&[])));
    assert!(is_invalid(store.append_multi(&[StreamAppend::new(
        "S",
        ExpectedVersion::Any,
        []
    )])));
    assert_eq!(store.last_position(), 0);
    assert_eq!(store.stats().appends_written, 0);
}

#[test]
fn a_stream_named_twice_in_append_multi_is_invalid_input() {
    let (_d, store) = open();
    let r = store.append_multi(&[
        StreamAppend::new("S", ExpectedVersion::Any, [event("T", 1)]),
        StreamAppend::new("S", ExpectedVersion::Any, [event("T", 2)]),
    ]);
    assert!(is_invalid(r));
    assert_eq!(store.last_position(), 0);
}

#[test]
fn name_limits_are_1_to_255_bytes_of_utf8() {
    let (_d, store) = open();
    let ok = "é".repeat(127) + "x"; // 255 bytes
    assert_eq!(ok.len(), 255);
    store
        .append(&ok, ExpectedVersion::Any, [EventData::new(ok.clone(), "{}")])
        .unwrap();
    let long = "é".repeat(128); // 256 bytes
    assert!(is_invalid(store.append(&long, ExpectedVersion::Any, [event("T", 1)])));
    assert!(is_invalid(store.append("", ExpectedVersion::Any, [event("T", 1)])));
    assert!(is_invalid(store.append(
        "S",
        ExpectedVersion::Any,
        [EventData::new("", "{}")]
    )));
    assert!(is_invalid(store.append(
        "S",
        ExpectedVersion::Any,
        [EventData::new(long.clone(), "{}")]
    )));
    assert!(is_invalid(store.read_stream(&long, ReadStream::forward())));
    assert_eq!(store.stream_version(&ok), Some(1));
    assert_eq!(store.last_position(), 1);
}

#[test]
fn payload_limit_is_data_plus_metadata() {
    let (_d, store) = open();
    let half = limits::EVENT_PAYLOAD_BYTES_MAX / 2;
    let exact = EventData::new("T", vec![b'x'; half]).with_metadata(vec![b'y'; half]);
    let over = EventData::new("T", vec![b'x'; half]).with_metadata(vec![b'y'; half + 1]);
    assert!(is_invalid(store.append("S", ExpectedVersion::Any, [over])));
    store.append("S", ExpectedVersion::Any, [exact]).unwrap();
}

#[test]
fn more_than_65536_events_in_one_append_is_invalid_input() {
    let (_d, store) = open();
    let events: Vec<EventData> = (0..=limits::BATCH_EVENTS_MAX)
        .map(|_| EventData::new("T", ""))
        .collect();
    assert!(is_invalid(store.append("S", ExpectedVersion::Any, events)));
    assert_eq!(store.last_position(), 0);
}

#[test]
fn nil_and_repeated_ids_are_refused() {
    let (_d, store) = open();
    let nil = EventData::new("T", "{}").with_id(Uuid::nil());
    assert!(is_invalid(store.append("S", ExpectedVersion::Any, [nil])));
    let e = event("T", 1);
    let r = store.append("S", ExpectedVersion::Any, [e.clone(), e.clone()]);
    assert!(matches!(r, Err(Error::DuplicateEventId { id }) if id == e.id()));
    // Across the streams of one append_multi too.
    let r = store.append_multi(&[
        StreamAppend::new("A", ExpectedVersion::Any, [e.clone()]),
        StreamAppend::new("B", ExpectedVersion::Any, [e]),
    ]);
    assert!(matches!(r, Err(Error::DuplicateEventId { .. })));
    assert_eq!(store.last_position(), 0);
}

#[test]
fn exact_zero_means_no_stream_and_huge_versions_are_a_wrong_version() {
    let (_d, store) = open();
    store.append("S", ExpectedVersion::Exact(0), [event("T", 1)]).unwrap();
    let r = store.append("S", ExpectedVersion::Exact(0), [event("T", 2)]);
    assert!(matches!(r, Err(Error::WrongExpectedVersion { actual: Some(1), .. })));
    let r = store.append("S", ExpectedVersion::Exact(u64::MAX), [event("T", 2)]);
    assert!(matches!(r, Err(Error::WrongExpectedVersion { actual: Some(1), .. })));
    let r = store.append("Nope", ExpectedVersion::StreamExists, [event("T", 2)]);
    assert!(matches!(r, Err(Error::WrongExpectedVersion { actual: None, .. })));
    let r = store.append("Nope", ExpectedVersion::Exact(5), [event("T", 2)]);
    assert!(matches!(r, Err(Error::WrongExpectedVersion { actual: None, .. })));
    assert_eq!(store.last_position(), 1);
}

#[test]
fn a_failed_multi_append_writes_no_stream() {
    let (_d, store) = open();
    store.append("B", ExpectedVersion::Any, [event("T", 0)]).unwrap();
    let r = store.append_multi(&[
        StreamAppend::new("A", ExpectedVersion::NoStream, [event("T", 1)]),
        StreamAppend::new("B", ExpectedVersion::NoStream, [event("T", 2)]),
    ]);
    match r {
        Err(Error::WrongExpectedVersion { stream, actual, .. }) => {
            assert_eq!(stream, "B");
            assert_eq!(actual, Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.stream_version("A"), None);
    assert_eq!(store.last_position(), 1);
}

#[test]
fn stream_append_validate_checks_what_an_append_checks() {
    assert!(
        StreamAppend::new("S", ExpectedVersion::Any, [event("T", 1)])
            .validate()
            .is_ok()
    );
    assert!(is_invalid(StreamAppend::new("S", ExpectedVersion::Any, []).validate()));
    assert!(is_invalid(
        StreamAppend::new("", ExpectedVersion::Any, [event("T", 1)]).validate()
    ));
    let e = event("T", 1);
    assert!(matches!(
        StreamAppend::new("S", ExpectedVersion::Any, [e.clone(), e]).validate(),
        Err(Error::DuplicateEventId { .. })
    ));
}

// ----------------------------------------------------------------- reads

#[test]
fn read_stream_edges() {
    let (_d, store) = five();
    let rs = |o: ReadStream| versions(store.read_stream("A-1", o).unwrap());
    assert_eq!(rs(ReadStream::forward()), [1, 2, 3]);
    assert_eq!(rs(ReadStream::forward().from_version(0)), [1, 2, 3]);
    assert_eq!(rs(ReadStream::forward().from_version(2)), [2, 3]);
    assert_eq!(rs(ReadStream::forward().from_version(4)), Vec::<u64>::new());
    assert_eq!(rs(ReadStream::forward().from_version(u64::MAX)), Vec::<u64>::new());
    assert_eq!(rs(ReadStream::backward()), [3, 2, 1]);
    assert_eq!(rs(ReadStream::backward().from_version(0)), Vec::<u64>::new());
    assert_eq!(rs(ReadStream::backward().from_version(2)), [2, 1]);
    assert_eq!(rs(ReadStream::backward().from_version(99)), [3, 2, 1]);
    assert_eq!(rs(ReadStream::backward().from_version(u64::MAX)), [3, 2, 1]);
    assert_eq!(rs(ReadStream::forward().limit(0)), Vec::<u64>::new());
    assert_eq!(rs(ReadStream::backward().limit(2)), [3, 2]);
    assert_eq!(rs(ReadStream::forward().from_version(2).limit(usize::MAX)), [2, 3]);
    // An absent stream reads as empty; an invalid name is refused.
    assert_eq!(
        versions(store.read_stream("Nope", ReadStream::forward()).unwrap()),
        Vec::<u64>::new()
    );
    assert!(is_invalid(store.read_stream("", ReadStream::forward())));
}

#[test]
fn read_all_edges() {
    let (_d, store) = five();
    let ra = |o: ReadAll| positions(store.read_all(o).unwrap());
    assert_eq!(ra(ReadAll::forward()), [1, 2, 3, 4, 5]);
    assert_eq!(ra(ReadAll::forward().from_position(0)), [1, 2, 3, 4, 5]);
    assert_eq!(ra(ReadAll::forward().from_position(4)), [5]);
    assert_eq!(ra(ReadAll::forward().from_position(5)), Vec::<u64>::new());
    assert_eq!(ra(ReadAll::forward().from_position(u64::MAX)), Vec::<u64>::new());
    assert_eq!(ra(ReadAll::backward()), [5, 4, 3, 2, 1]);
    assert_eq!(ra(ReadAll::backward().from_position(0)), Vec::<u64>::new());
    assert_eq!(ra(ReadAll::backward().from_position(1)), Vec::<u64>::new());
    assert_eq!(ra(ReadAll::backward().from_position(3)), [2, 1]);
    assert_eq!(ra(ReadAll::backward().from_position(u64::MAX)), [5, 4, 3, 2, 1]);
    assert_eq!(ra(ReadAll::forward().limit(0)), Vec::<u64>::new());
    // "Returns at most n events (after filtering)."
    assert_eq!(ra(ReadAll::forward().category("B").limit(1)), [2]);
    assert_eq!(ra(ReadAll::backward().category("A").limit(2)), [5, 3]);
    assert_eq!(
        ra(ReadAll::forward().category("A").from_position(u64::MAX)),
        Vec::<u64>::new()
    );
    assert_eq!(ra(ReadAll::forward().stream_prefix("B-")), [2, 4]);
    assert_eq!(ra(ReadAll::forward().stream_prefix("")), [1, 2, 3, 4, 5]);
    assert_eq!(ra(ReadAll::forward().event_type("Nope")), Vec::<u64>::new());
    assert_eq!(
        ra(ReadAll::forward().event_type("Nope").event_type("T")),
        [1, 2, 3, 4, 5]
    );
    // Filters that could never match are refused.
    assert!(is_invalid(store.read_all(ReadAll::forward().category("A-1"))));
    assert!(is_invalid(store.read_all(ReadAll::forward().category(""))));
    assert!(is_invalid(store.read_all(ReadAll::forward().event_type(""))));
    assert!(is_invalid(
        store.read_all(ReadAll::forward().event_type("x".repeat(256)))
    ));
}

#[test]
fn read_category_edges() {
    let (_d, store) = five();
    store.append("A", ExpectedVersion::Any, [event("T", 9)]).unwrap(); // 6
    store.append("AB-1", ExpectedVersion::Any, [event("T", 9)]).unwrap(); // 7
    store.append("-x", ExpectedVersion::Any, [event("T", 9)]).unwrap(); // 8
    let rc = |c: &str, after: u64, limit: Option<usize>| positions(store.read_category(c, after, limit).unwrap());
    assert_eq!(rc("A", 0, None), [1, 3, 5, 6]);
    assert_eq!(rc("A", 3, None), [5, 6]);
    assert_eq!(rc("A", 0, Some(0)), Vec::<u64>::new());
    assert_eq!(rc("A", 0, Some(2)), [1, 3]);
    assert_eq!(rc("A", u64::MAX, None), Vec::<u64>::new());
    assert_eq!(rc("Nope", 0, None), Vec::<u64>::new());
    assert!(is_invalid(store.read_category("", 0, None)));
    assert!(is_invalid(store.read_category("A-1", 0, None)));
    assert_eq!(annal::category_of("-x"), "");
    assert_eq!(annal::category_of("Order-7-b"), "Order");
    assert_eq!(annal::category_of("Order"), "Order");
}

#[test]
fn read_position_edges() {
    let (_d, store) = five();
    assert!(store.read_position(0).unwrap().is_none());
    assert!(store.read_position(6).unwrap().is_none());
    assert!(store.read_position(u64::MAX).unwrap().is_none());
    assert_eq!(store.read_position(5).unwrap().unwrap().stream(), "A-1");
    assert_eq!(store.stream_version(""), None);
    assert_eq!(store.stream_version("Nope"), None);
}

#[test]
fn an_iterator_is_a_snapshot_of_the_log_when_made() {
    let (_d, store) = five();
    let all = store.read_all(ReadAll::forward()).unwrap();
    let back = store.read_all(ReadAll::backward()).unwrap();
    let s = store.read_stream("A-1", ReadStream::forward()).unwrap();
    let c = store.read_category("A", 0, None).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("T", 9)]).unwrap();
    assert_eq!(positions(all), [1, 2, 3, 4, 5]);
    assert_eq!(positions(back), [5, 4, 3, 2, 1]);
    assert_eq!(versions(s), [1, 2, 3]);
    assert_eq!(positions(c), [1, 3, 5]);
}

#[test]
fn largest_streams_and_stream_names() {
    let (_d, store) = five();
    assert!(store.largest_streams(0).is_empty());
    assert_eq!(
        store.largest_streams(usize::MAX),
        [("A-1".to_string(), 3), ("B-1".to_string(), 2)]
    );
    assert_eq!(store.stream_names(), ["A-1", "B-1"]);
}

// ----------------------------------------------------------------- stats

#[test]
fn stats_count_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, small_segments()).unwrap();
    let empty = store.stats();
    assert_eq!((empty.events, empty.streams, empty.last_position), (0, 0, 0));
    assert_eq!(empty.appends_written, 0);
    let e = event("T", 1);
    store
        .append("A-1", ExpectedVersion::Any, [e.clone(), event("T", 2)])
        .unwrap();
    store.append("B-1", ExpectedVersion::Any, [event("T", 3)]).unwrap();
    // A retry writes nothing: "Appends written since open".
    store.append("A-1", ExpectedVersion::Exact(0), [e, event("T", 2)]).ok();
    let s = store.stats();
    assert_eq!((s.events, s.streams, s.last_position), (3, 2, 3));
    assert!(s.group_commits >= 1 && s.group_commits <= s.appends_written);
    assert!(s.appends_written >= 2);
    let segment_files: u64 = std::fs::read_dir(&p)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(s.disk_bytes, segment_files, "disk_bytes counts the segment files");
    assert_eq!(s.segments, 1);
    store.close().unwrap();
    let store = Store::open(&p, small_segments()).unwrap();
    let s = store.stats();
    assert_eq!((s.events, s.streams, s.appends_written, s.group_commits), (3, 2, 0, 0));
}

#[test]
fn an_idempotent_retry_is_not_counted_as_an_append_written() {
    let (_d, store) = open();
    let e = event("T", 1);
    store.append("S", ExpectedVersion::Any, [e.clone()]).unwrap();
    let before = store.stats().appends_written;
    store.append("S", ExpectedVersion::Any, [e.clone()]).unwrap();
    store.append("S", ExpectedVersion::NoStream, [e]).unwrap();
    assert_eq!(store.stats().appends_written, before);
}

// ----------------------------------------------------------------- close

#[test]
fn after_close_every_documented_call_behaves_as_documented() {
    let (_d, store) = five();
    let clone = store.clone();
    let cps = store.checkpoints();
    cps.save("c", 2).unwrap();
    store.save_snapshot("A-1", 2, 1, b"state").unwrap();
    let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
    store.close().unwrap();
    // Writes and new subscriptions: Closed.
    assert!(matches!(
        clone.append("S", ExpectedVersion::Any, [event("T", 1)]),
        Err(Error::Closed)
    ));
    assert!(matches!(
        clone.append_multi(&[StreamAppend::new("S", ExpectedVersion::Any, [event("T", 1)])]),
        Err(Error::Closed)
    ));
    assert!(matches!(clone.subscribe_all(StartFrom::Start), Err(Error::Closed)));
    assert!(matches!(
        clone
            .dispatcher()
            .handler("h", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(())),
        Err(Error::Closed)
    ));
    assert!(matches!(clone.save_index(), Err(Error::Closed)));
    assert!(matches!(clone.save_snapshot("A-1", 3, 1, b"x"), Err(Error::Closed)));
    assert!(matches!(clone.compact_snapshots(), Err(Error::Closed)));
    // "checkpoint calls ... fail with Error::Closed".
    assert!(matches!(cps.save("c", 3), Err(Error::Closed)));
    assert!(matches!(cps.remove("c"), Err(Error::Closed)));
    assert!(matches!(clone.checkpoints().load("c"), Err(Error::Closed)));
    assert!(matches!(clone.checkpoints().list(), Err(Error::Closed)));
    // sync after close: Ok.
    clone.sync().unwrap();
    // Reads, snapshot loads and backups still work.
    assert_eq!(positions(clone.read_all(ReadAll::forward()).unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(clone.read_position(3).unwrap().unwrap().position(), 3);
    assert_eq!(clone.stream_version("A-1"), Some(3));
    assert_eq!(clone.load_snapshot("A-1").snapshot.unwrap().version, 2);
    let dest = _d.path().join("backup");
    assert_eq!(clone.backup(&dest).unwrap().last_position, 5);
    // Subscriptions end at once.
    assert!(sub.recv().unwrap().is_none());
    assert!(matches!(sub.try_recv(), Err(Error::Closed)));
    assert!(matches!(sub.recv_timeout(Duration::from_millis(1)), Err(Error::Closed)));
    assert_eq!(sub.status().state, SubscriptionState::Closed);
    assert!(sub.is_closed());
    // A second close (of a clone) is fine.
    clone.clone().close().unwrap();
}

#[test]
fn a_closed_store_stays_locked_until_its_last_clone_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default()).unwrap();
    let clone = store.clone();
    store.close().unwrap();
    match Store::open(&p, Options::default()) {
        Err(Error::Locked { by_this_process, .. }) => assert!(by_this_process),
        other => panic!("{other:?}"),
    }
    drop(clone);
    Store::open(&p, Options::default()).unwrap().close().unwrap();
}

#[test]
fn a_live_iterator_keeps_the_directory_locked_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default()).unwrap();
    store.append("S", ExpectedVersion::Any, [event("T", 1)]).unwrap();
    let it = store.read_all(ReadAll::forward()).unwrap();
    store.close().unwrap();
    assert!(matches!(
        Store::open(&p, Options::default()),
        Err(Error::Locked {
            by_this_process: true,
            ..
        })
    ));
    assert_eq!(positions(it), [1]);
    Store::open(&p, Options::default()).unwrap();
}

#[test]
fn subscriptions_and_checkpoint_handles_do_not_keep_the_store_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default()).unwrap();
    store.append("S", ExpectedVersion::Any, [event("T", 1)]).unwrap();
    let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
    let cps = store.checkpoints();
    let d = idle_dispatcher(&store);
    drop(store);
    let again = Store::open(&p, Options::default()).unwrap();
    assert!(sub.recv().unwrap().is_none());
    assert!(matches!(cps.load("x"), Err(Error::Closed)));
    d.join().unwrap();
    again.close().unwrap();
}

// ------------------------------------------------------------- read-only

#[test]
fn read_only_refuses_writes_and_serves_reads() {
    let (d, store) = five();
    store.checkpoints().save("c", 4).unwrap();
    store.save_snapshot("A-1", 3, 1, b"s").unwrap();
    let p = store.path().to_path_buf();
    store.close().unwrap();
    let ro = Store::open(&p, Options::default().with_read_only(true)).unwrap();
    let ro2 = Store::open(&p, Options::default().with_read_only(true)).unwrap();
    assert!(ro.is_read_only());
    assert!(matches!(
        ro.append("S", ExpectedVersion::Any, [event("T", 1)]),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(ro.save_index(), Err(Error::ReadOnly { .. })));
    assert!(matches!(ro.checkpoints().save("c", 1), Err(Error::ReadOnly { .. })));
    assert!(matches!(ro.checkpoints().remove("c"), Err(Error::ReadOnly { .. })));
    assert!(matches!(
        ro.save_snapshot("A-1", 1, 1, b"x"),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(ro.compact_snapshots(), Err(Error::ReadOnly { .. })));
    ro.sync().unwrap();
    assert_eq!(ro.checkpoints().load("c").unwrap(), Some(4));
    assert_eq!(ro.load_snapshot("A-1").snapshot.unwrap().version, 3);
    assert_eq!(positions(ro2.read_all(ReadAll::forward()).unwrap()), [1, 2, 3, 4, 5]);
    let mut sub = ro.subscribe_all(StartFrom::Start).unwrap();
    for p in 1..=5 {
        assert_eq!(sub.try_recv().unwrap().unwrap().position(), p);
    }
    assert!(sub.try_recv().unwrap().is_none());
    assert!(ro.backup(d.path().join("b")).is_ok());
    // A writable open is excluded while a reader is open.
    assert!(matches!(Store::open(&p, Options::default()), Err(Error::Locked { .. })));
    drop((sub, ro, ro2));
    Store::open(&p, Options::default()).unwrap();
}

// ----------------------------------------------------------- checkpoints

#[test]
fn checkpoint_names_and_positions() {
    let (_d, store) = five();
    let cps = store.checkpoints();
    let max = "n".repeat(annal::CHECKPOINT_NAME_BYTES_MAX);
    let over = "n".repeat(annal::CHECKPOINT_NAME_BYTES_MAX + 1);
    for bad in ["", over.as_str()] {
        assert!(is_invalid(cps.save(bad, 1)));
        assert!(is_invalid(cps.load(bad)));
        assert!(is_invalid(cps.remove(bad)));
    }
    cps.save(&max, 5).unwrap();
    assert_eq!(cps.load(&max).unwrap(), Some(5));
    assert!(is_invalid(cps.save("x", 6)));
    assert!(is_invalid(cps.save("x", u64::MAX)));
    assert_eq!(cps.load("x").unwrap(), None);
    cps.save("zero", 0).unwrap();
    assert_eq!(cps.load("zero").unwrap(), Some(0));
    cps.remove("absent").unwrap();
    cps.remove("zero").unwrap();
    assert_eq!(cps.load("zero").unwrap(), None);
    let list = cps.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list.get(&max), Some(&5));
}

// ------------------------------------------------------------- snapshots

#[test]
fn snapshot_save_contract() {
    let (_d, store) = five();
    assert!(is_invalid(store.save_snapshot("A-1", 0, 1, b"s")));
    assert!(is_invalid(store.save_snapshot("A-1", 4, 1, b"s")));
    assert!(is_invalid(store.save_snapshot("A-1", u64::MAX, 1, b"s")));
    assert!(is_invalid(store.save_snapshot("Nope", 1, 1, b"s")));
    assert!(is_invalid(store.save_snapshot("", 1, 1, b"s")));
    let too_big = vec![0u8; limits::SNAPSHOT_BYTES_MAX + 1];
    assert!(is_invalid(store.save_snapshot("A-1", 1, 1, &too_big)));
    store.save_snapshot("A-1", 1, 7, b"").unwrap();
    let s = store.load_snapshot("A-1").snapshot.unwrap();
    assert_eq!((s.version, s.schema_version, s.data.len()), (1, 7, 0));
    assert_eq!(s.event_id, store.read_position(1).unwrap().unwrap().id());
    assert!(store.load_snapshot("Nope").snapshot.is_none());
    assert!(store.load_snapshot("").snapshot.is_none());
    assert!(store.load_snapshot_at("A-1", 0).snapshot.is_none());
}

#[test]
fn keep_per_stream_zero_is_taken_as_one_and_loads_as_of_a_version() {
    let (_d, store) = five();
    store.set_snapshot_options(SnapshotOptions::default().with_keep_per_stream(0));
    assert_eq!(store.snapshot_options().keep_per_stream, 1);
    for v in 1..=3 {
        store.save_snapshot("A-1", v, 1, format!("{v}").as_bytes()).unwrap();
    }
    // Superseded snapshots serve loads until a compaction.
    assert_eq!(store.load_snapshot_at("A-1", 2).snapshot.unwrap().version, 2);
    store.compact_snapshots().unwrap();
    assert!(store.load_snapshot_at("A-1", 2).snapshot.is_none());
    assert_eq!(store.load_snapshot("A-1").snapshot.unwrap().version, 3);
    let st = store.snapshot_stats().unwrap();
    assert_eq!((st.streams, st.records), (1, 1));
    assert!(st.compactions >= 1);
}

// --------------------------------------------------------- subscriptions

#[test]
fn subscription_starts_and_refusals() {
    let (_d, store) = five();
    assert!(is_invalid(store.subscribe_all(StartFrom::After(6))));
    assert!(is_invalid(store.subscribe_all(StartFrom::After(u64::MAX))));
    assert!(is_invalid(store.subscribe_stream("", StartFrom::Start)));
    assert!(is_invalid(store.subscribe_category("A-1", StartFrom::Start)));
    assert!(is_invalid(store.subscribe_category("", StartFrom::Start)));
    assert!(is_invalid(
        store.subscribe(SubscriptionFilter::all().event_type(""), StartFrom::Start)
    ));
    assert_eq!(store.subscriber_count(), 0, "refused subscriptions are not registered");
    let mut end = store.subscribe_all(StartFrom::End).unwrap();
    assert_eq!(end.position(), 5);
    assert_eq!(end.status().state, SubscriptionState::Live);
    assert!(end.try_recv().unwrap().is_none());
    let mut after = store.subscribe_all(StartFrom::After(5)).unwrap();
    assert!(after.try_recv().unwrap().is_none());
    let mut start = store.subscribe_all(StartFrom::Start).unwrap();
    assert_eq!(start.status().state, SubscriptionState::CatchingUp);
    assert_eq!(start.try_recv().unwrap().unwrap().position(), 1);
    assert_eq!(store.subscriber_count(), 3);
    drop(after);
    assert_eq!(store.subscriber_count(), 2);
    store.append("A-1", ExpectedVersion::Any, [event("T", 9)]).unwrap();
    assert_eq!(end.recv_timeout(Duration::from_secs(5)).unwrap().unwrap().position(), 6);
}

#[test]
fn subscription_position_counts_only_delivered_events() {
    let (_d, store) = five();
    let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
    assert_eq!(sub.position(), 0);
    let e = sub.try_recv().unwrap().unwrap();
    assert_eq!(e.position(), 1);
    // The rest of the page is buffered, not delivered.
    assert_eq!(sub.position(), 1);
    let st = sub.status();
    assert_eq!((st.position, st.last_delivered, st.head, st.lag), (1, 1, 5, 4));
    assert_eq!(st.buffered, 4);
}

#[test]
fn a_filtered_subscription_position_covers_examined_events() {
    let (_d, store) = five();
    store.append("C-1", ExpectedVersion::Any, [event("T", 9)]).unwrap(); // 6
    let mut sub = store.subscribe_category("B", StartFrom::Start).unwrap();
    assert_eq!(sub.try_recv().unwrap().unwrap().position(), 2);
    assert_eq!(sub.try_recv().unwrap().unwrap().position(), 4);
    assert!(sub.try_recv().unwrap().is_none());
    // Caught up: the non-matching 5 and 6 were examined.
    assert_eq!(sub.position(), 6);
    assert_eq!(sub.status().lag, 0);
    let mut s = store.subscribe_stream("B-1", StartFrom::Start).unwrap();
    assert_eq!(s.try_recv().unwrap().unwrap().version(), 1);
    assert_eq!(s.try_recv().unwrap().unwrap().version(), 2);
    assert!(s.try_recv().unwrap().is_none());
    assert_eq!(s.position(), 6);
    let mut t = store
        .subscribe(SubscriptionFilter::all().event_type("Nope"), StartFrom::Start)
        .unwrap();
    assert!(t.try_recv().unwrap().is_none());
    assert_eq!(t.position(), 6);
}

#[test]
fn a_stream_subscription_after_a_checkpoint() {
    let (_d, store) = five();
    let mut s = store.subscribe_stream("A-1", StartFrom::After(3)).unwrap();
    assert_eq!(s.try_recv().unwrap().unwrap().position(), 5);
    assert!(s.try_recv().unwrap().is_none());
    let mut s = store.subscribe_stream("Nope-1", StartFrom::Start).unwrap();
    assert!(s.try_recv().unwrap().is_none());
    store.append("Nope-1", ExpectedVersion::Any, [event("T", 9)]).unwrap();
    assert_eq!(s.recv_timeout(Duration::from_secs(5)).unwrap().unwrap().position(), 6);
}

// ------------------------------------------------------------ dispatcher

#[test]
fn dispatcher_handler_refusals_and_wait_for() {
    let (_d, store) = five();
    let b = store.dispatcher();
    assert!(is_invalid(store.dispatcher().handler(
        "h",
        SubscriptionFilter::all(),
        StartFrom::After(6),
        |_| Ok(())
    )));
    assert!(is_invalid(store.dispatcher().handler(
        "h",
        SubscriptionFilter::stream(""),
        StartFrom::Start,
        |_| Ok(())
    )));
    let d = b
        .handler("all", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()))
        .unwrap()
        .handler("b", SubscriptionFilter::category("B"), StartFrom::End, |_| Ok(()))
        .unwrap()
        .start()
        .unwrap();
    assert!(d.wait_for(5, Duration::from_secs(5)));
    assert!(d.wait_for(0, Duration::ZERO));
    assert!(!d.wait_for(6, Duration::from_millis(20)));
    let status = d.stop().unwrap();
    assert_eq!(status.iter().map(|h| h.position).collect::<Vec<_>>(), [5, 5]);
    assert_eq!(status[0].name, "all");
    assert!(status.iter().all(|h| h.failure.is_none()));
}

#[test]
fn a_failing_handler_stays_before_the_event_it_failed_on() {
    let (_d, store) = five();
    let d = store
        .dispatcher()
        .handler("bad", SubscriptionFilter::all(), StartFrom::Start, |e| {
            if e.position() == 3 { Err("boom".into()) } else { Ok(()) }
        })
        .unwrap()
        .handler("good", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()))
        .unwrap()
        .start()
        .unwrap();
    assert!(d.wait_for(2, Duration::from_secs(5)));
    assert!(!d.wait_for(5, Duration::from_secs(5)), "a handler failed before 5");
    // "The other handlers go on."
    let t = std::time::Instant::now();
    while d.status()[1].position < 5 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = d.stop().unwrap();
    assert_eq!(status[0].position, 2);
    let failure = status[0].failure.clone().unwrap();
    assert_eq!(failure.0, 3);
    assert!(failure.1.contains("boom"), "{failure:?}");
    assert_eq!(status[1].position, 5);
}

// --------------------------------------------------------------- metadata

#[test]
fn correlation_ids_replace_metadata_that_is_not_an_object() {
    let id = Uuid::new_v4();
    let e = EventData::new("T", "{}").with_metadata("[1,2]").correlation_id(id);
    let v: serde_json::Value = serde_json::from_slice(e.metadata()).unwrap();
    assert_eq!(v["$correlationId"], id.to_string());
    let e = EventData::new("T", "{}").correlation_id(id);
    let v: serde_json::Value = serde_json::from_slice(e.metadata()).unwrap();
    assert_eq!(v["$correlationId"], id.to_string());
    let e = EventData::new("T", "{}").with_metadata(r#"{"a":1}"#).causation_id(id);
    let v: serde_json::Value = serde_json::from_slice(e.metadata()).unwrap();
    assert_eq!(
        (v["a"].as_i64(), v["$causationId"].as_str()),
        (Some(1), Some(id.to_string().as_str()))
    );
}

#[test]
fn caused_by_carries_the_correlation_chain() {
    let (_d, store) = open();
    let root = EventData::new("T", "{}");
    let root_id = root.id();
    store.append("S", ExpectedVersion::Any, [root]).unwrap();
    let first = store.read_position(1).unwrap().unwrap();
    assert_eq!(first.correlation_id(), None);
    store
        .append("S", ExpectedVersion::Any, [EventData::new("T", "{}").caused_by(&first)])
        .unwrap();
    let second = store.read_position(2).unwrap().unwrap();
    assert_eq!(second.causation_id(), Some(root_id));
    assert_eq!(second.correlation_id(), Some(root_id));
    store
        .append(
            "S",
            ExpectedVersion::Any,
            [EventData::new("T", "{}").caused_by(&second)],
        )
        .unwrap();
    let third = store.read_position(3).unwrap().unwrap();
    assert_eq!(third.causation_id(), Some(second.id()));
    assert_eq!(third.correlation_id(), Some(root_id));
}

// -------------------------------------------------------- open and files

#[test]
fn recovery_report_created_says_whether_this_open_made_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default()).unwrap();
    assert!(store.recovery_report().created, "a missing directory");
    store.close().unwrap();
    let store = Store::open(&p, Options::default()).unwrap();
    assert!(!store.recovery_report().created);
    store.close().unwrap();
    let ro = Store::open(&p, Options::default().with_read_only(true)).unwrap();
    assert!(!ro.recovery_report().created);
    drop(ro);
    // An existing, empty directory: the store is made by this open too.
    let q = dir.path().join("empty");
    std::fs::create_dir(&q).unwrap();
    let store = Store::open(&q, Options::default()).unwrap();
    assert!(store.recovery_report().created);
    assert_eq!(store.recovery_report().segments, 1);
}

#[test]
fn the_lock_file_names_the_writer_in_40_bytes() {
    let (d, store) = open();
    let lock = std::fs::read(store.path().join(annal::LOCK_FILE_NAME)).unwrap();
    assert_eq!(lock.len(), 40);
    let text = String::from_utf8(lock).unwrap();
    assert!(
        text.starts_with(&format!("annal store lock, pid {} ", std::process::id())),
        "{text:?}"
    );
    assert!(text.ends_with('\n'));
    store.append("S", ExpectedVersion::Any, [event("T", 1)]).unwrap();
    store.backup(d.path().join("b")).unwrap();
    assert_eq!(
        std::fs::read(d.path().join("b").join(annal::LOCK_FILE_NAME))
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_second_open_waits_a_quarter_second_before_locked() {
    let (_d, store) = open();
    let t = std::time::Instant::now();
    let r = Store::open(store.path(), Options::default());
    assert!(matches!(
        r,
        Err(Error::Locked {
            by_this_process: true,
            ..
        })
    ));
    assert!(t.elapsed() >= Duration::from_millis(240), "{:?}", t.elapsed());
    let r = Store::open(store.path(), Options::default().with_read_only(true));
    assert!(matches!(r, Err(Error::Locked { .. })));
}

#[test]
fn side_files_appear_when_documented_and_foreign_tmp_files_stay() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("notes.tmp"), b"mine").unwrap();
    std::fs::write(p.join("00000000000000000000.seg"), b"not a segment").unwrap();
    let store = Store::open(&p, Options::default()).unwrap();
    store.append("S-1", ExpectedVersion::Any, [event("T", 1)]).unwrap();
    assert!(!p.join(annal::CHECKPOINTS_FILE_NAME).exists());
    assert!(!p.join("snapshots").exists());
    // "created by the first save or removal"
    store.checkpoints().remove("never-saved").unwrap();
    assert!(
        p.join(annal::CHECKPOINTS_FILE_NAME).exists(),
        "a removal creates the checkpoints file"
    );
    // "created ... on the first use of snapshots by a writable handle: a
    // save, a load, ... or snapshot_stats"
    let _ = store.load_snapshot("S-1");
    assert!(p.join("snapshots").exists(), "a load creates the snapshot file");
    store.close().unwrap();
    for leftover in [
        "index.tmp",
        "checkpoints.tmp",
        "snapshots.tmp",
        "00000000000000000002.seg.tmp",
    ] {
        std::fs::write(p.join(leftover), b"x").unwrap();
    }
    let store = Store::open(&p, Options::default()).unwrap();
    for leftover in [
        "index.tmp",
        "checkpoints.tmp",
        "snapshots.tmp",
        "00000000000000000002.seg.tmp",
    ] {
        assert!(!p.join(leftover).exists(), "{leftover} is removed by a writable open");
    }
    assert_eq!(std::fs::read(p.join("notes.tmp")).unwrap(), b"mine");
    assert!(p.join("00000000000000000000.seg").exists());
    assert_eq!(store.last_position(), 1);
}

#[test]
fn a_read_only_open_leaves_temp_files() {
    let (_d, store) = five();
    let p = store.path().to_path_buf();
    store.close().unwrap();
    std::fs::write(p.join("index.tmp"), b"x").unwrap();
    let ro = Store::open(&p, Options::default().with_read_only(true)).unwrap();
    assert_eq!(ro.last_position(), 5);
    drop(ro);
    assert!(p.join("index.tmp").exists());
}

/// The offset after the last batch of segment 1 (of a store with one
/// segment), found as the last non-zero byte + 1 (a batch ends in its CRC,
/// which is non-zero with high probability: the test checks it).
fn end_of_data(seg: &[u8]) -> usize {
    seg.iter().rposition(|&b| b != 0).unwrap() + 1
}

#[test]
fn a_torn_tail_is_cut_and_kept_by_a_writable_open_and_left_by_a_reader() {
    let (_d, store) = five();
    let p = store.path().to_path_buf();
    store.close().unwrap();
    let seg_path = p.join("00000000000000000001.seg");
    let mut seg = std::fs::read(&seg_path).unwrap();
    let end = end_of_data(&seg);
    let garbage = [0xA5u8; 37];
    seg[end..end + garbage.len()].copy_from_slice(&garbage);
    std::fs::write(&seg_path, &seg).unwrap();

    let ro = Store::open(&p, Options::default().with_read_only(true)).unwrap();
    assert_eq!(ro.recovery_report().torn_tail_bytes, garbage.len() as u64);
    assert_eq!(ro.recovery_report().torn_tail_kept, None);
    assert_eq!(positions(ro.read_all(ReadAll::forward()).unwrap()), [1, 2, 3, 4, 5]);
    drop(ro);
    assert_eq!(std::fs::read(&seg_path).unwrap(), seg, "a reader writes nothing");
    assert!(!p.join("quarantine").exists());

    let store = Store::open(&p, Options::default()).unwrap();
    let report = store.recovery_report().clone();
    assert_eq!(report.torn_tail_bytes, garbage.len() as u64);
    let kept = report.torn_tail_kept.expect("a copy is kept");
    assert_eq!(
        kept,
        p.join("quarantine")
            .join(format!("00000000000000000001.seg.torn-{end}"))
    );
    assert_eq!(std::fs::read(&kept).unwrap(), garbage);
    assert_eq!(store.last_position(), 5);
    let r = store.append("S", ExpectedVersion::Any, [event("T", 6)]).unwrap();
    assert_eq!(r.first_position, 6);
}

// ---------------------------------------------------------- segment size

#[test]
fn an_append_must_fit_in_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("s"),
        Options::default().with_segment_size_bytes(limits::SEGMENT_BYTES_MIN),
    )
    .unwrap();
    let big = EventData::new("T", vec![b'x'; limits::SEGMENT_BYTES_MIN as usize]);
    match store.append("S", ExpectedVersion::Any, [big]) {
        Err(Error::InvalidInput(m)) => assert!(m.contains("segment"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Many appends that each fit roll over to new segments.
    for i in 0..40 {
        store
            .append("S", ExpectedVersion::Any, [EventData::new("T", vec![b'y'; 1000 + i])])
            .unwrap();
    }
    assert!(store.stats().segments > 5);
    assert_eq!(store.stream_version("S"), Some(40));
}

#[test]
fn periodic_with_a_huge_interval_still_closes_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(
        &p,
        Options::default().with_durability(Durability::Periodic(Duration::MAX)),
    )
    .unwrap();
    store.append("S", ExpectedVersion::Any, [event("T", 1)]).unwrap();
    store.sync().unwrap();
    let t = std::time::Instant::now();
    store.close().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    let store = Store::open(&p, Options::default()).unwrap();
    assert_eq!(store.last_position(), 1);
}

// --------------------------------------------------------------- backups

#[test]
fn backup_refuses_an_existing_dest_or_a_missing_parent_and_writes_nothing() {
    let (d, store) = five();
    let exists = d.path().join("exists");
    std::fs::create_dir(&exists).unwrap();
    assert!(store.backup(&exists).is_err());
    assert_eq!(std::fs::read_dir(&exists).unwrap().count(), 0);
    assert!(store.backup(d.path().join("no").join("such")).is_err());
    assert!(!d.path().join("no").exists());
    #[cfg(unix)]
    {
        let link = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &link).unwrap();
        assert!(store.backup(&link).is_err(), "not even a dangling link");
        assert!(!d.path().join("nowhere").exists());
    }
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
}

#[test]
fn a_backup_is_the_same_store_with_its_side_files() {
    let (d, store) = five();
    store.checkpoints().save("c", 3).unwrap();
    store.save_snapshot("A-1", 2, 9, b"snap").unwrap();
    let report = store.backup(d.path().join("b")).unwrap();
    assert_eq!((report.last_position, report.segments), (5, 1));
    store.append("A-1", ExpectedVersion::Any, [event("T", 6)]).unwrap();
    let copy = Store::open(d.path().join("b"), Options::default()).unwrap();
    assert_eq!(copy.store_id(), store.store_id());
    assert_eq!(copy.last_position(), 5);
    assert!(copy.recovery_report().index_loaded);
    assert_eq!(
        copy.recovery_report().replayed_events,
        0,
        "its first open replays nothing"
    );
    assert_eq!(copy.checkpoints().load("c").unwrap(), Some(3));
    let s = copy.load_snapshot("A-1").snapshot.unwrap();
    assert_eq!((s.version, s.schema_version, &s.data[..]), (2, 9, &b"snap"[..]));
}

// ----------------------------------------------------------- projections

#[derive(Default)]
struct Log {
    applied: Vec<u64>,
    batches: Vec<u64>,
    begins: usize,
    resets: usize,
}

impl annal::Projection for Log {
    fn apply(&mut self, event: &annal::RecordedEvent) -> Result<(), annal::HandlerError> {
        self.applied.push(event.position());
        Ok(())
    }
    fn begin_batch(&mut self) -> Result<(), annal::HandlerError> {
        self.begins += 1;
        Ok(())
    }
    fn end_batch(&mut self, position: u64) -> Result<(), annal::HandlerError> {
        self.batches.push(position);
        Ok(())
    }
    fn reset(&mut self) -> Result<(), annal::HandlerError> {
        self.resets += 1;
        self.applied.clear();
        Ok(())
    }
}

#[test]
fn projection_runner_contract() {
    let (_d, store) = five();
    let mut r = annal::ProjectionRunner::new(&store, "p", SubscriptionFilter::category("B"), Log::default())
        .unwrap()
        .with_checkpoint_every(0, Duration::from_secs(3600));
    assert_eq!(r.checkpoint(), 0);
    assert_eq!(r.run_until_caught_up().unwrap(), 2);
    // every_events 0 is taken as 1: a batch per event, each ending at the
    // subscription's position (which covers the non-matching events
    // examined: 3 after event 2, 5 after event 4).
    assert_eq!(r.projection().applied, [2, 4]);
    assert_eq!(r.projection().batches, [3, 5]);
    assert_eq!(r.checkpoint(), 5, "the checkpoint covers the non-matching 5");
    assert_eq!(store.checkpoints().load("p").unwrap(), Some(5));
    // Only non-matching events pass: the checkpoint moves without a batch.
    store.append("A-1", ExpectedVersion::Any, [event("T", 6)]).unwrap();
    assert_eq!(r.run_until_caught_up().unwrap(), 0);
    assert_eq!(r.projection().batches, [3, 5]);
    assert_eq!(r.checkpoint(), 6);
    assert_eq!(store.checkpoints().load("p").unwrap(), Some(6));
    // A new runner resumes after the checkpoint.
    drop(r);
    store.append("B-1", ExpectedVersion::Any, [event("T", 7)]).unwrap();
    let mut r = annal::ProjectionRunner::new(&store, "p", SubscriptionFilter::category("B"), Log::default()).unwrap();
    assert_eq!(r.checkpoint(), 6);
    assert_eq!(r.run_until_caught_up().unwrap(), 1);
    assert_eq!(r.projection().applied, [7]);
    assert_eq!(r.projection().batches, [7]);
    // Rebuild: the checkpoint goes, state resets, everything again.
    r.rebuild().unwrap();
    assert_eq!(store.checkpoints().load("p").unwrap(), None);
    assert_eq!(r.projection().resets, 1);
    assert_eq!(r.checkpoint(), 0);
    assert_eq!(r.run_until_caught_up().unwrap(), 3);
    assert_eq!(r.projection().applied, [2, 4, 7]);
    // run() returns once stop says so, saving the checkpoint.
    store.append("B-1", ExpectedVersion::Any, [event("T", 8)]).unwrap();
    let n = r.run(Duration::from_millis(10), |p| p.applied.len() >= 4).unwrap();
    assert_eq!(n, 1);
    assert_eq!(store.checkpoints().load("p").unwrap(), Some(8));
    // A closed store ends a run with Ok.
    let s2 = store.clone();
    store.close().unwrap();
    assert_eq!(r.run(Duration::from_millis(10), |_| false).unwrap(), 0);
    drop(s2);
}

#[test]
fn projection_runner_refuses_a_read_only_store_and_a_bad_name() {
    let (_d, store) = five();
    let p = store.path().to_path_buf();
    assert!(matches!(
        annal::ProjectionRunner::new(&store, "", SubscriptionFilter::all(), Log::default()),
        Err(annal::ProjectionError::Store(Error::InvalidInput(_)))
    ));
    store.close().unwrap();
    let ro = Store::open(&p, Options::default().with_read_only(true)).unwrap();
    assert!(matches!(
        annal::ProjectionRunner::new(&ro, "p", SubscriptionFilter::all(), Log::default()),
        Err(annal::ProjectionError::Store(Error::ReadOnly { .. }))
    ));
}

// ------------------------------------------------------------ aggregates

#[cfg(feature = "aggregate")]
mod aggregate_support;

#[cfg(feature = "aggregate")]
mod typed {
    use super::aggregate_support::{Account, AccountCommand};
    use super::*;
    use annal::aggregate::{CommandMetadata, JsonCodec, Repository, RepositoryError};

    fn repo() -> (tempfile::TempDir, Repository<Account>) {
        let (d, store) = open();
        (d, Repository::<Account>::new(store, JsonCodec))
    }

    #[test]
    fn snapshot_every_saves_when_a_command_passes_a_multiple() {
        let (_d, repo) = repo();
        let repo = repo.with_snapshot_every(3);
        let m = CommandMetadata::new;
        assert_eq!(
            repo.execute("1", AccountCommand::Open("a".into()), m())
                .unwrap()
                .snapshot_saved,
            None
        );
        assert_eq!(
            repo.execute("1", AccountCommand::Deposit(1), m())
                .unwrap()
                .snapshot_saved,
            None
        );
        assert_eq!(
            repo.execute("1", AccountCommand::Deposit(1), m())
                .unwrap()
                .snapshot_saved,
            Some(3)
        );
        assert_eq!(
            repo.execute("1", AccountCommand::Deposit(1), m())
                .unwrap()
                .snapshot_saved,
            None
        );
        let loaded = repo.load("1").unwrap();
        assert_eq!(
            (loaded.version, loaded.snapshot_version, loaded.replayed),
            (4, Some(3), 1)
        );
        // with_snapshot_every(0) turns it off.
        let off = repo.clone().with_snapshot_every(0);
        for _ in 0..5 {
            assert_eq!(
                off.execute("2", AccountCommand::Open("b".into()), m())
                    .ok()
                    .and_then(|e| e.snapshot_saved),
                None
            );
        }
    }

    #[test]
    fn time_travel_edges() {
        let (_d, repo) = repo();
        let m = CommandMetadata::new;
        repo.execute("1", AccountCommand::Open("a".into()), m()).unwrap(); // position 1
        repo.store()
            .append("Other", ExpectedVersion::Any, [event("T", 1)])
            .unwrap(); // 2
        repo.execute("1", AccountCommand::Deposit(5), m()).unwrap(); // 3
        repo.snapshot("1").unwrap();
        let v0 = repo.load_at_version("1", 0).unwrap();
        assert_eq!((v0.version, v0.state.open), (0, false));
        assert_eq!(repo.load_at_version("1", u64::MAX).unwrap().version, 2);
        assert_eq!(repo.load_at_version("1", 1).unwrap().state.balance, 0);
        assert_eq!(repo.load_at_position("1", 0).unwrap().version, 0);
        assert_eq!(repo.load_at_position("1", 2).unwrap().version, 1);
        assert_eq!(repo.load_at_position("1", 3).unwrap().version, 2);
        assert_eq!(repo.load_at_position("1", u64::MAX).unwrap().version, 2);
        // A missing aggregate: version 0, and no snapshot saved.
        assert_eq!(repo.snapshot("nope").unwrap(), 0);
        assert_eq!(repo.store().snapshot_stats().unwrap().streams, 1);
        // An id that makes no valid stream name is refused by loads.
        let long = "x".repeat(300);
        assert!(matches!(
            repo.load(&long),
            Err(RepositoryError::Store(Error::InvalidInput(_)))
        ));
        assert!(matches!(
            repo.snapshot(&long),
            Err(RepositoryError::Store(Error::InvalidInput(_)))
        ));
        assert!(matches!(
            repo.execute(&long, AccountCommand::Open("a".into()), m()),
            Err(RepositoryError::Store(Error::InvalidInput(_)))
        ));
    }

    #[test]
    fn a_command_retried_with_its_id_is_applied_once() {
        let (_d, repo) = repo();
        let open = CommandMetadata::new();
        repo.execute("1", AccountCommand::Open("a".into()), CommandMetadata::new())
            .unwrap();
        let first = repo.execute("1", AccountCommand::Deposit(5), open.clone()).unwrap();
        let again = repo.execute("1", AccountCommand::Deposit(5), open).unwrap();
        assert!(!first.repeated);
        assert!(again.repeated);
        assert_eq!(
            (again.events, again.last_position, again.version, again.state.balance),
            (1, 2, 2, 5)
        );
        assert_eq!(repo.store().last_position(), 2);
    }

    #[test]
    fn a_refused_command_writes_nothing_and_max_retries_zero_is_one_attempt() {
        let (_d, repo) = repo();
        let r = repo.execute("1", AccountCommand::Deposit(5), CommandMetadata::new());
        assert!(matches!(r, Err(RepositoryError::Domain(_))));
        assert_eq!(repo.store().last_position(), 0);
        let repo = repo.with_max_retries(0);
        let e = repo
            .execute("1", AccountCommand::Open("a".into()), CommandMetadata::new())
            .unwrap();
        assert_eq!(e.attempts, 1);
    }
}

// ----------------------------------------------------------- dispatchers

#[test]
fn a_dispatcher_without_handlers_has_nothing_to_wait_for() {
    let (_d, store) = five();
    let d = store.dispatcher().start().unwrap();
    // "waits until every handler is at or past position": none is behind.
    assert!(d.wait_for(5, Duration::from_secs(2)));
    let status = d.stop().unwrap();
    assert!(status.is_empty());
}

#[test]
fn end_for_a_handler_means_after_the_handler_call_not_after_start() {
    let (_d, store) = five();
    let (tx, rx) = std::sync::mpsc::channel();
    let b = store
        .dispatcher()
        .handler("h", SubscriptionFilter::all(), StartFrom::End, move |e| {
            tx.send(e.position()).unwrap();
            Ok(())
        })
        .unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("T", 6)]).unwrap();
    let d = b.start().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 6);
    assert!(d.wait_for(6, Duration::from_secs(5)));
    d.stop().unwrap();
}

#[test]
fn a_dispatcher_whose_handlers_all_failed_ends_by_itself() {
    let (_d, store) = five();
    let d = store
        .dispatcher()
        .handler("a", SubscriptionFilter::all(), StartFrom::Start, |_| Err("no".into()))
        .unwrap()
        .handler("b", SubscriptionFilter::all(), StartFrom::Start, |e| {
            if e.position() == 2 {
                panic!("handler b panics");
            }
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    let t = std::time::Instant::now();
    while d.is_running() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!d.is_running());
    assert!(!d.wait_for(1, Duration::from_secs(5)));
    let status = d.join().unwrap();
    assert_eq!((status[0].position, status[0].failure.as_ref().unwrap().0), (0, 1));
    assert_eq!((status[1].position, status[1].failure.as_ref().unwrap().0), (1, 2));
    assert!(status[1].failure.as_ref().unwrap().1.contains("handler b panics"));
}

// ---------------------------------------------------------------- damage

/// A store whose first batch (events 1..=100, stream `Old-1`) is damaged,
/// followed by a batch of 10,000 events (stream `New-1`), so that open
/// (which checks the last 10,000 events' batches) succeeds.
fn damaged_far_back() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default()).unwrap();
    append_far_back(&store);
    store.close().unwrap();
    flip_in_first_segment(&p, 64 + 500, 0x40);
    (dir, p)
}

/// Appends 100 events to `Old-1` in one batch, then 10,000 to `New-1` in
/// another, so that open (which checks the last 10,000 events' batches)
/// does not reach the first.
fn append_far_back(store: &Store) {
    store
        .append("Old-1", ExpectedVersion::Any, (0..100).map(|i| event("T", i)))
        .unwrap();
    store
        .append(
            "New-1",
            ExpectedVersion::Any,
            (0..10_000).map(|_| EventData::new("U", "")),
        )
        .unwrap();
}

/// Flips the bits of `mask` in the byte at `offset` of the first segment
/// of the closed store at `p`.
fn flip_in_first_segment(p: &std::path::Path, offset: usize, mask: u8) {
    let seg = p.join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offset] ^= mask;
    std::fs::write(&seg, &bytes).unwrap();
}

#[test]
fn damage_far_back_fails_reads_that_reach_it_and_nothing_else() {
    let (_d, p) = damaged_far_back();
    let store = Store::open(&p, Options::default()).unwrap();
    // "Yields an error (and then stops) when it meets corruption."
    let mut it = store.read_all(ReadAll::forward()).unwrap();
    match it.next() {
        Some(Err(Error::Corruption { file, offset, .. })) => {
            assert!(file.ends_with("00000000000000000001.seg"), "{file:?}");
            assert_eq!(offset, 64, "the damaged batch starts after the header");
        }
        other => panic!("{other:?}"),
    }
    assert!(it.next().is_none());
    assert!(matches!(store.read_position(7), Err(Error::Corruption { .. })));
    assert!(
        store
            .read_stream("Old-1", ReadStream::backward())
            .unwrap()
            .next()
            .unwrap()
            .is_err()
    );
    // Reads that start after the damaged batch read on.
    assert_eq!(
        store.read_all(ReadAll::forward().from_position(100)).unwrap().count(),
        10_000
    );
    assert_eq!(
        store
            .read_stream("New-1", ReadStream::forward())
            .unwrap()
            .collect_all()
            .unwrap()
            .len(),
        10_000
    );
    // A filter that skips the damaged events meets the error all the same.
    let r = store.read_all(ReadAll::forward().category("New")).unwrap().next();
    assert!(matches!(r, Some(Err(Error::Corruption { .. }))), "{r:?}");
    // A subscription stays before the damage and reports it again.
    let mut sub = store.subscribe_category("New", StartFrom::Start).unwrap();
    assert!(matches!(sub.try_recv(), Err(Error::Corruption { .. })));
    assert_eq!(sub.position(), 0);
    assert!(matches!(sub.try_recv(), Err(Error::Corruption { .. })));
    let mut after = store.subscribe_all(StartFrom::After(100)).unwrap();
    assert_eq!(after.try_recv().unwrap().unwrap().position(), 101);
    // Appends still work.
    let r = store
        .append("New-1", ExpectedVersion::Exact(10_000), [event("T", 1)])
        .unwrap();
    assert_eq!(r.first_position, 10_101);
    // stats too.
    assert_eq!(store.stats().events, 10_101);
}

// ------------------------------------------------- snapshots, compaction

#[test]
fn saves_compact_once_superseded_records_outweigh_kept_ones() {
    let (_d, store) = five();
    store.set_snapshot_options(
        SnapshotOptions::default()
            .with_keep_per_stream(1)
            .with_compact_min_bytes(0),
    );
    store.save_snapshot("A-1", 1, 1, b"aaaa").unwrap();
    store.save_snapshot("A-1", 2, 1, b"bbbb").unwrap();
    // Superseded (one record) == kept (one record): not more, no compaction.
    assert_eq!(store.snapshot_stats().unwrap().compactions, 0);
    store.save_snapshot("A-1", 3, 1, b"cccc").unwrap();
    let st = store.snapshot_stats().unwrap();
    assert_eq!(st.compactions, 1);
    assert_eq!(st.records, 1);
    assert_eq!(
        st.file_bytes,
        std::fs::metadata(store.path().join("snapshots")).unwrap().len()
    );
    assert_eq!(
        st.live_bytes + 32,
        st.file_bytes,
        "the 32-byte header and the kept record"
    );
}

// ------------------------------------------------------ spare segments

#[test]
fn the_spare_segment_is_made_ahead_and_removed_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, small_segments()).unwrap();
    // Past half of the first 16 KiB segment.
    for i in 0..12 {
        store
            .append("S", ExpectedVersion::Any, [EventData::new("T", vec![b'x'; 700 + i])])
            .unwrap();
    }
    let t = std::time::Instant::now();
    while store.stats().spare_segment_bytes == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = store.stats();
    assert_eq!(s.spare_segment_bytes, 16 * 1024);
    assert_eq!(s.segments, 1);
    assert!(p.join("next-segment.tmp").exists());
    store.close().unwrap();
    assert!(!p.join("next-segment.tmp").exists(), "removed at close");
}

// -------------------------------------------------------- index saving

#[test]
fn save_index_makes_the_next_open_replay_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default()).unwrap();
    append_n(&store, "S-1", "T", 50);
    store.save_index().unwrap();
    // A copy of the files now is what a crash would leave.
    let copy = dir.path().join("copy");
    files::copy_files_but_lock(&p, &copy);
    let reopened = Store::open(&copy, Options::default()).unwrap();
    assert!(reopened.recovery_report().index_loaded);
    assert_eq!(reopened.recovery_report().replayed_events, 0);
    assert_eq!(reopened.last_position(), 50);
    assert!(store.background_error().is_none());
}

#[test]
fn the_index_is_saved_every_index_checkpoint_bytes_of_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default().with_index_checkpoint_bytes(8 * 1024)).unwrap();
    for i in 0..200 {
        store
            .append("S-1", ExpectedVersion::Any, [EventData::new("T", vec![b'x'; 500 + i])])
            .unwrap();
    }
    // The save runs in the background: a copy of the files (what a crash
    // would leave) replays little once it has run.
    let t = std::time::Instant::now();
    for attempt in 0.. {
        let copy = dir.path().join(format!("copy{attempt}"));
        files::copy_files_but_lock(&p, &copy);
        let reopened = Store::open(&copy, Options::default()).unwrap();
        let r = reopened.recovery_report().clone();
        assert_eq!(reopened.last_position(), 200);
        if r.index_loaded && r.replayed_bytes <= 2 * 8 * 1024 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "replayed {} bytes: {r:?}",
            r.replayed_bytes
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ----------------------------------------------------------- locking

#[cfg(unix)]
#[test]
fn a_store_opened_through_another_path_is_locked_by_this_process() {
    let (d, store) = five();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(store.path(), &link).unwrap();
    match Store::open(&link, Options::default()) {
        Err(Error::Locked { by_this_process, .. }) => assert!(by_this_process),
        other => panic!("{other:?}"),
    }
    let dotted = store.path().join("..").join("store");
    assert!(matches!(
        Store::open(&dotted, Options::default().with_read_only(true)),
        Err(Error::Locked {
            by_this_process: true,
            ..
        })
    ));
}

// ----------------------------------------------------------- idempotency

#[test]
fn retries_of_parts_and_runs_of_earlier_appends_are_recognised() {
    let (_d, store) = open();
    let [a, b, c, d] = [1, 2, 3, 4].map(|i| event("T", i));
    let x = event("T", 9);
    let r = store
        .append_multi(&[
            StreamAppend::new("S", ExpectedVersion::NoStream, [a.clone(), b.clone(), c.clone()]),
            StreamAppend::new("X", ExpectedVersion::NoStream, [x.clone()]),
        ])
        .unwrap();
    assert_eq!(r[0].last_position, 3);
    store.append("S", ExpectedVersion::Exact(3), [d.clone()]).unwrap();
    let e = event("T", 5);
    store.append("S", ExpectedVersion::Exact(4), [e.clone()]).unwrap();
    store.append("Y", ExpectedVersion::Any, [event("T", 10)]).unwrap();
    let last = store.last_position();
    // One stream's part of a multi-stream append.
    let r = store.append("X", ExpectedVersion::Any, [x.clone()]).unwrap();
    assert_eq!((r.first_version, r.first_position), (1, 4));
    // A run of consecutive events of it.
    let r = store.append("S", ExpectedVersion::Any, [b.clone(), c.clone()]).unwrap();
    assert_eq!(
        (r.first_version, r.last_version, r.first_position, r.last_position),
        (2, 3, 2, 3)
    );
    // Consecutive earlier appends sent as one.
    let r = store.append("S", ExpectedVersion::Any, [d.clone(), e.clone()]).unwrap();
    assert_eq!(
        (r.first_version, r.last_version, r.first_position, r.last_position),
        (4, 5, 5, 6)
    );
    // ... at consecutive positions too: c (3) and d (5) are not.
    assert!(matches!(
        store.append("S", ExpectedVersion::Any, [c.clone(), d.clone()]),
        Err(Error::IdempotencyConflict { .. })
    ));
    // Under Exact: right after the expected version.
    let r = store
        .append("S", ExpectedVersion::Exact(1), [b.clone(), c.clone()])
        .unwrap();
    assert_eq!(r.first_version, 2);
    // Stored elsewhere in the stream, under an exact expected version the
    // stream has moved past: the concurrency check answers first (the
    // documented behaviour since the review that wrote this test).
    let r0 = store.append("S", ExpectedVersion::Exact(0), [b.clone(), c.clone()]);
    assert!(
        matches!(r0, Err(Error::WrongExpectedVersion { actual: Some(5), .. })),
        "{r0:?}"
    );
    // Under the stream's current version, ids stored elsewhere conflict.
    let r5 = store.append("S", ExpectedVersion::Exact(5), [b.clone(), c.clone()]);
    assert!(matches!(r5, Err(Error::IdempotencyConflict { .. })), "{r5:?}");
    // Some stored, some not; another order; another stream: conflicts.
    assert!(matches!(
        store.append("S", ExpectedVersion::Any, [e.clone(), event("T", 6)]),
        Err(Error::IdempotencyConflict { .. })
    ));
    assert!(matches!(
        store.append("S", ExpectedVersion::Any, [c.clone(), b.clone()]),
        Err(Error::IdempotencyConflict { .. })
    ));
    match store.append("Z", ExpectedVersion::Any, [a.clone()]) {
        Err(Error::IdempotencyConflict { stream, id }) => assert_eq!((stream.as_str(), id), ("Z", a.id())),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.last_position(), last, "nothing written by any of these");
}

#[test]
fn a_retry_must_carry_the_same_type_data_and_schema_but_not_metadata() {
    let (_d, store) = open();
    let e = EventData::new("T", "{\"n\":1}").with_metadata("{\"m\":1}");
    let r = store.append("S", ExpectedVersion::Any, [e.clone()]).unwrap();
    let same_but_metadata = EventData::new("T", "{\"n\":1}")
        .with_id(e.id())
        .with_metadata("{\"m\":2}");
    assert_eq!(store.append("S", ExpectedVersion::Any, [same_but_metadata]).unwrap(), r);
    for other in [
        EventData::new("U", "{\"n\":1}").with_id(e.id()),
        EventData::new("T", "{\"n\":2}").with_id(e.id()),
        EventData::new("T", "{\"n\":1}").with_id(e.id()).with_schema_version(2),
    ] {
        assert!(matches!(
            store.append("S", ExpectedVersion::Any, [other.clone()]),
            Err(Error::IdempotencyConflict { .. })
        ));
        assert!(matches!(
            store.append("S", ExpectedVersion::Exact(0), [other]),
            Err(Error::IdempotencyConflict { .. })
        ));
    }
    assert_eq!(store.last_position(), 1);
}

#[test]
fn exactly_65536_events_fit_in_one_append() {
    let (_d, store) = open();
    let events: Vec<EventData> = (0..limits::BATCH_EVENTS_MAX).map(|_| EventData::new("T", "")).collect();
    let r = store.append("S", ExpectedVersion::Any, events).unwrap();
    assert_eq!(r.last_version, limits::BATCH_EVENTS_MAX as u64);
}

// ------------------------------------------------ dispatchers and close

#[test]
fn close_waits_for_a_handler_call_and_none_follows_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (_d, store) = five();
    let in_call = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (ic, c) = (in_call.clone(), calls.clone());
    let d = store
        .dispatcher()
        .handler("slow", SubscriptionFilter::all(), StartFrom::Start, move |_| {
            ic.store(true, Ordering::SeqCst);
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            ic.store(false, Ordering::SeqCst);
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    let t = std::time::Instant::now();
    while calls.load(Ordering::SeqCst) == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let p = store.path().to_path_buf();
    store.close().unwrap();
    assert!(!in_call.load(Ordering::SeqCst), "close returned during a handler call");
    let after_close = calls.load(Ordering::SeqCst);
    // The directory is released once close returns.
    let again = Store::open(&p, Options::default()).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        after_close,
        "a handler was called after close"
    );
    assert!(after_close < 5);
    assert!(d.join().is_ok());
    again.close().unwrap();
}

#[test]
fn an_unstarted_builder_holds_the_store_weakly() {
    let (_d, store) = five();
    let p = store.path().to_path_buf();
    let b = store
        .dispatcher()
        .handler("h", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()))
        .unwrap();
    drop(store);
    let again = Store::open(&p, Options::default()).unwrap();
    assert!(matches!(b.start(), Err(Error::Closed)));
    again.close().unwrap();
}

// ----------------------------------------------------------------- tools

#[test]
fn verify_and_repair_refuse_what_they_document() {
    let (d, store) = five();
    let p = store.path().to_path_buf();
    // A store open for writing: Locked, for both.
    assert!(matches!(annal::tools::verify(&p), Err(Error::Locked { .. })));
    assert!(matches!(annal::tools::repair(&p), Err(Error::Locked { .. })));
    store.close().unwrap();
    // No store: InvalidInput, and nothing created.
    let none = d.path().join("none");
    assert!(matches!(annal::tools::verify(&none), Err(Error::InvalidInput(_))));
    assert!(!none.exists());
    std::fs::create_dir(&none).unwrap();
    assert!(matches!(annal::tools::verify(&none), Err(Error::InvalidInput(_))));
    assert_eq!(std::fs::read_dir(&none).unwrap().count(), 0);
    // A clean store: verify is clean and repair changes nothing.
    let before = files::dir_image(&p);
    let v = annal::tools::verify(&p).unwrap();
    assert!(v.is_clean());
    assert_eq!((v.events, v.streams, v.segments), (5, 2, 1));
    let r = annal::tools::repair(&p).unwrap();
    assert!(!r.repaired);
    assert_eq!(files::dir_image(&p), before, "repair left a clean store untouched");
    // Readers share verify's lock.
    let ro = Store::open(&p, Options::default().with_read_only(true)).unwrap();
    assert!(annal::tools::verify(&p).unwrap().is_clean());
    drop(ro);
}

#[test]
fn repair_of_damage_far_back_lowers_checkpoints_and_drops_snapshots_past_the_kept_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default()).unwrap();
    store
        .append("Old-1", ExpectedVersion::Any, (0..3).map(|i| event("T", i)))
        .unwrap();
    append_far_back(&store);
    store.checkpoints().save("far", 10_103).unwrap();
    store.checkpoints().save("near", 2).unwrap();
    store.save_snapshot("Old-1", 50, 1, b"s").unwrap();
    store.save_snapshot("Old-1", 3, 1, b"t").unwrap();
    store.close().unwrap();
    // Somewhere in the second batch (the first holds 3 small events).
    flip_in_first_segment(&p, 64 + 1500, 0x10);
    let v = annal::tools::verify(&p).unwrap();
    assert!(!v.is_clean());
    let damage = v.damage.clone().unwrap();
    assert_eq!(damage.segment, Some(1));
    let r = annal::tools::repair(&p).unwrap();
    assert!(r.repaired);
    assert_eq!(r.kept_events, 3);
    assert_eq!(r.quarantined_events, 10_000, "the valid batch after the damage");
    assert_eq!(r.checkpoints_lowered, [("far".to_string(), 10_103)]);
    assert_eq!(r.snapshots_dropped, [("Old-1".to_string(), 50)]);
    assert!(annal::tools::verify(&p).unwrap().is_clean());
    let store = Store::open(&p, Options::default()).unwrap();
    assert_eq!(store.last_position(), 3);
    assert_eq!(store.checkpoints().load("far").unwrap(), Some(3));
    assert_eq!(store.checkpoints().load("near").unwrap(), Some(2));
    assert_eq!(store.load_snapshot("Old-1").snapshot.unwrap().version, 3);
    // Salvage hands back the quarantined, still valid events.
    let files = annal::tools::quarantined_log_files(&p).unwrap();
    let mut n = 0;
    annal::tools::salvage(&files, |_| {
        n += 1;
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(n, 10_000);
}

// ------------------------------------------------------- option extremes

#[test]
fn the_largest_segment_size_opens_and_appends() {
    // "between 4 KiB and 1 TiB": a 1 TiB segment size must not need 1 TiB
    // of disk up front.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(
        &p,
        Options::default().with_segment_size_bytes(limits::SEGMENT_BYTES_MAX),
    )
    .unwrap();
    store.append("S", ExpectedVersion::Any, [event("T", 1)]).unwrap();
    assert!(store.stats().disk_bytes < 1 << 30);
    store.close().unwrap();
    let store = Store::open(
        &p,
        Options::default().with_segment_size_bytes(limits::SEGMENT_BYTES_MAX),
    )
    .unwrap();
    assert_eq!(store.last_position(), 1);
}

#[test]
fn a_zero_index_checkpoint_size_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default().with_index_checkpoint_bytes(0)).unwrap();
    let t = std::time::Instant::now();
    append_n(&store, "S-1", "T", 200);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(store.background_error().is_none());
    store.close().unwrap();
    let store = Store::open(&p, Options::default()).unwrap();
    assert_eq!(store.last_position(), 200);
}

#[test]
fn the_segment_size_may_change_between_opens() {
    // "The segment size is an option of each open, not recorded on disk:
    // segments written by different opens may have different sizes."
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let payload = |i: usize| EventData::new("T", vec![b'a' + (i % 26) as u8; 900]);
    let mut n = 0;
    for (round, size) in [
        64 << 20,
        limits::SEGMENT_BYTES_MIN,
        1 << 20,
        limits::SEGMENT_BYTES_MIN,
        64 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let store = Store::open(&p, Options::default().with_segment_size_bytes(size)).unwrap();
        assert_eq!(store.last_position(), n as u64, "round {round}");
        for _ in 0..60 {
            store
                .append("S-1", ExpectedVersion::Exact(n as u64), [payload(n)])
                .unwrap();
            n += 1;
        }
        let all = store
            .read_stream("S-1", ReadStream::forward())
            .unwrap()
            .collect_all()
            .unwrap();
        assert_eq!(all.len(), n);
        assert!(all.iter().enumerate().all(|(i, e)| e.data() == payload(i).data()));
        store.close().unwrap();
        let v = annal::tools::verify(&p).unwrap();
        assert!(v.is_clean(), "round {round}: {v:?}");
        assert_eq!(v.events, n as u64);
    }
}

#[test]
fn subscription_pages_and_states() {
    let (_d, store) = open();
    let events: Vec<EventData> = (0..600).map(|_| EventData::new("T", "")).collect();
    store.append("S-1", ExpectedVersion::Any, events).unwrap();
    let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
    assert_eq!(sub.status().state, SubscriptionState::CatchingUp);
    assert_eq!(sub.try_recv().unwrap().unwrap().position(), 1);
    let st = sub.status();
    assert_eq!(st.state, SubscriptionState::CatchingUp, "the read filled a page");
    assert_eq!(
        st.buffered,
        annal::SUBSCRIPTION_PAGE_EVENTS - 1,
        "at most one page buffered"
    );
    for p in 2..=600 {
        assert_eq!(sub.try_recv().unwrap().unwrap().position(), p);
        assert!(sub.status().buffered < annal::SUBSCRIPTION_PAGE_EVENTS);
    }
    assert!(sub.try_recv().unwrap().is_none());
    assert_eq!(sub.status().state, SubscriptionState::Live);
    // Live stays Live while events pile up unread; lag shows it.
    store
        .append("S-1", ExpectedVersion::Any, (0..10).map(|_| EventData::new("T", "")))
        .unwrap();
    let st = sub.status();
    assert_eq!((st.state, st.lag, st.head), (SubscriptionState::Live, 10, 610));
}

#[test]
fn a_checkpoint_past_the_log_is_reported_and_blocks_appends_until_lowered() {
    let (d, store) = five();
    let b = d.path().join("b");
    store.backup(&b).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("T", 6)]).unwrap();
    store.checkpoints().save("c", 6).unwrap();
    store.checkpoints().save("ok", 2).unwrap();
    let p = store.path().to_path_buf();
    store.close().unwrap();
    std::fs::copy(
        p.join(annal::CHECKPOINTS_FILE_NAME),
        b.join(annal::CHECKPOINTS_FILE_NAME),
    )
    .unwrap();
    let r = Store::open(&b, Options::default());
    let store = match r {
        Ok(s) => s,
        Err(e) => panic!("the log itself is sound; open: {e}"),
    };
    assert_eq!(store.last_position(), 5);
    let cps = store.checkpoints();
    assert!(matches!(cps.load("c"), Err(Error::Corruption { .. })));
    assert_eq!(cps.load("ok").unwrap(), Some(2));
    assert_eq!(cps.list().unwrap().get("c"), Some(&6), "list is an inventory");
    assert!(matches!(
        store.append("A-1", ExpectedVersion::Any, [event("T", 7)]),
        Err(Error::Corruption { .. })
    ));
    cps.save("c", 5).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("T", 7)]).unwrap();
    assert_eq!(store.last_position(), 6);
}

/// A snapshot past its stream's last event proves the log lost
/// acknowledged events (a snapshot is saved only once the log is durable
/// that far), as a checkpoint past the log does: appends are refused,
/// rather than taking the lost versions, until `repair` removes it.
#[test]
fn a_snapshot_past_the_log_blocks_appends_until_repair_removes_it() {
    let (d, store) = five();
    let b = d.path().join("b");
    store.backup(&b).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("T", 6)]).unwrap();
    store.save_snapshot("A-1", 4, 1, b"state at 4").unwrap();
    store.save_snapshot("B-1", 2, 1, b"state at 2").unwrap();
    let p = store.path().to_path_buf();
    store.close().unwrap();
    let snapshots = "snapshots";
    std::fs::copy(p.join(snapshots), b.join(snapshots)).unwrap();
    let store = Store::open(&b, Options::default()).expect("the log itself is sound");
    assert_eq!((store.last_position(), store.stream_version("A-1")), (5, Some(3)));
    match store.append("B-1", ExpectedVersion::Any, [event("T", 7)]) {
        Err(Error::Corruption { file, reason, .. }) => {
            assert!(file.ends_with(snapshots), "{}", file.display());
            assert!(reason.contains("'A-1' at version 4"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap().len(),
        5
    );
    assert_eq!(store.load_snapshot("B-1").snapshot.unwrap().version, 2);
    let ahead = store.load_snapshot("A-1");
    assert!(ahead.snapshot.is_none());
    assert!(
        matches!(
            ahead.issues[..],
            [SnapshotIssue::AheadOfLog {
                snapshot_version: 4,
                stream_version: 3,
                ..
            }]
        ),
        "{:?}",
        ahead.issues
    );
    store.close().unwrap();
    let report = annal::tools::repair(&b).unwrap();
    assert_eq!(report.snapshots_dropped, [("A-1".to_string(), 4)]);
    let store = Store::open(&b, Options::default()).unwrap();
    let r = store.append("A-1", ExpectedVersion::Exact(3), [event("T", 7)]).unwrap();
    assert_eq!((r.first_version, r.first_position), (4, 6));
    assert_eq!(store.load_snapshot("B-1").snapshot.unwrap().version, 2);
}

/// The guard walks the snapshot file by record lengths (reading large
/// records' first bytes only) and checks only a candidate whole: it finds
/// the one snapshot past the log behind large and many small ones, and a
/// damaged one proves nothing (a load reports it: the last record here,
/// cut as a torn tail).
#[test]
fn the_snapshot_guard_finds_one_past_the_log_among_many_and_trusts_no_damaged_one() {
    let (d, store) = five();
    let b = d.path().join("b");
    for k in 0..3 {
        let s = format!("Big-{k}");
        store.append(&s, ExpectedVersion::Any, [event("T", 10 + k)]).unwrap();
        store
            .save_snapshot(&s, 1, 1, &vec![b'x'; 300 * 1024 + k as usize])
            .unwrap();
    }
    for k in 0..200 {
        let s = format!("Small-{k}");
        store.append(&s, ExpectedVersion::Any, [event("T", 100 + k)]).unwrap();
        store.save_snapshot(&s, 1, 1, b"tiny").unwrap();
    }
    store.backup(&b).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("T", 400)]).unwrap();
    store.save_snapshot("A-1", 4, 1, b"state at 4").unwrap();
    let p = store.path().to_path_buf();
    store.close().unwrap();
    let snapshots = b.join("snapshots");
    std::fs::copy(p.join("snapshots"), &snapshots).unwrap();
    let store = Store::open(&b, Options::default()).unwrap();
    match store.append("Small-1", ExpectedVersion::Any, [event("T", 401)]) {
        Err(Error::Corruption { reason, .. }) => assert!(reason.contains("'A-1' at version 4"), "{reason}"),
        other => panic!("{other:?}"),
    }
    store.close().unwrap();
    let mut bytes = std::fs::read(&snapshots).unwrap();
    let ahead = annal::snapshot::file::scan(&bytes)
        .records
        .into_iter()
        .find(|r| r.stream == "A-1" && r.version == 4)
        .unwrap();
    let last = (ahead.offset + u64::from(ahead.len) - 1) as usize;
    bytes[last] ^= 0x20;
    std::fs::write(&snapshots, &bytes).unwrap();
    let store = Store::open(&b, Options::default()).unwrap();
    store
        .append("Small-1", ExpectedVersion::Any, [event("T", 401)])
        .unwrap();
    let load = store.load_snapshot("A-1");
    assert!(load.snapshot.is_none());
    assert!(
        matches!(load.issues[..], [SnapshotIssue::TornTail { .. }]),
        "{:?}",
        load.issues
    );
    assert_eq!(
        store.load_snapshot("Big-2").snapshot.unwrap().data.len(),
        300 * 1024 + 2
    );
}

#[test]
fn any_utf8_names_round_trip_through_the_index_file_and_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let names = ["a\0b", "\n", "-", "--x", "Ünï-cødé-😀", " ", "A", "\u{feff}B-1"];
    let store = Store::open(&p, Options::default()).unwrap();
    for (i, n) in names.iter().enumerate() {
        store
            .append(n, ExpectedVersion::NoStream, [EventData::new(format!("t\0{i}"), "x")])
            .unwrap();
    }
    store.checkpoints().save("\0é\n", 3).unwrap();
    store.close().unwrap();
    let check = |store: &Store| {
        let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        sorted.sort();
        assert_eq!(store.stream_names(), sorted);
        for (i, n) in names.iter().enumerate() {
            let e = store
                .read_stream(n, ReadStream::forward())
                .unwrap()
                .collect_all()
                .unwrap();
            assert_eq!((e.len(), e[0].event_type()), (1, format!("t\0{i}").as_str()));
            assert_eq!(e[0].stream(), *n);
        }
        assert_eq!(
            positions(
                store
                    .read_category("", 0, None)
                    .unwrap_or_else(|_| store.read_all(ReadAll::forward().limit(0)).unwrap())
            ),
            Vec::<u64>::new()
        );
        assert_eq!(
            positions(store.read_all(ReadAll::forward().category("Ünï")).unwrap()),
            [5]
        );
        assert_eq!(store.checkpoints().load("\0é\n").unwrap(), Some(3));
    };
    let store = Store::open(&p, Options::default()).unwrap();
    assert!(store.recovery_report().index_loaded);
    check(&store);
    store.close().unwrap();
    std::fs::remove_file(p.join("index")).unwrap();
    let store = Store::open(&p, Options::default()).unwrap();
    assert!(!store.recovery_report().index_loaded);
    check(&store);
}

#[cfg(feature = "aggregate")]
mod floats {
    use super::*;
    use annal::aggregate::{Aggregate, CommandMetadata, DomainEvent, JsonCodec, Repository, RepositoryError};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    pub struct Gauge {
        pub last: f64,
        pub count: u64,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub enum GaugeEvent {
        Measured { value: f64 },
    }

    impl DomainEvent for GaugeEvent {
        fn event_type(&self) -> &'static str {
            "Measured"
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub struct Never;

    impl Aggregate for Gauge {
        const CATEGORY: &'static str = "Gauge";
        type Event = GaugeEvent;
        type Command = f64;
        type Error = Never;
        fn apply(&mut self, event: &GaugeEvent) {
            let GaugeEvent::Measured { value } = event;
            self.last = *value;
            self.count += 1;
        }
        fn handle(&self, value: f64) -> Result<Vec<GaugeEvent>, Never> {
            Ok(vec![GaugeEvent::Measured { value }])
        }
    }

    /// AGGREGATES.md: "JsonCodec and BincodeCodec round-trip every value of
    /// the usual types, floats included (f64 exactly)". JSON has no NaN or
    /// infinity: an event holding one must be refused when it is encoded,
    /// never stored as something no load can decode (stored events are
    /// never rewritten: the aggregate could never be loaded again).
    #[test]
    fn json_never_stores_an_event_it_cannot_read_back() {
        let (_d, store) = open();
        let repo = Repository::<Gauge>::new(store, JsonCodec);
        for v in [0.1, -0.0, f64::MAX, f64::MIN_POSITIVE, 5e-324] {
            let e = repo.execute("1", v, CommandMetadata::new()).unwrap();
            assert_eq!(e.state.last.to_bits(), v.to_bits());
            let loaded = repo.load("1").unwrap();
            assert_eq!(loaded.state.last.to_bits(), v.to_bits(), "{v}");
        }
        let before = repo.store().last_position();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let r = repo.execute("1", v, CommandMetadata::new());
            assert!(matches!(r, Err(RepositoryError::Codec { .. })), "{v}: {r:?}");
        }
        assert_eq!(repo.store().last_position(), before, "nothing written");
        assert_eq!(repo.load("1").unwrap().state.count, 5, "the aggregate still loads");
    }

    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    pub struct Notes {
        pub count: u64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub enum NoteEvent {
        Noted { body: serde_json::Value },
    }

    impl DomainEvent for NoteEvent {
        fn event_type(&self) -> &'static str {
            "Noted"
        }
    }

    impl Aggregate for Notes {
        const CATEGORY: &'static str = "Notes";
        type Event = NoteEvent;
        type Command = serde_json::Value;
        type Error = Never;
        fn apply(&mut self, _: &NoteEvent) {
            self.count += 1;
        }
        fn handle(&self, body: serde_json::Value) -> Result<Vec<NoteEvent>, Never> {
            Ok(vec![NoteEvent::Noted { body }])
        }
    }

    /// bincode encodes a `serde_json::Value` but cannot decode one (it needs
    /// `deserialize_any`): such an event is refused, not stored.
    #[test]
    fn bincode_never_stores_an_event_it_cannot_read_back() {
        let (_d, store) = open();
        let repo = Repository::<Notes, _, annal::aggregate::BincodeCodec>::new(store, annal::aggregate::BincodeCodec);
        let r = repo.execute("1", serde_json::json!({"a": 1}), CommandMetadata::new());
        assert!(matches!(r, Err(RepositoryError::Codec { .. })), "{r:?}");
        assert_eq!(repo.store().last_position(), 0);
        assert_eq!(repo.load("1").unwrap().state.count, 0);
        // JSON reads it back: written.
        let json = Repository::<Notes>::new(repo.store().clone(), JsonCodec);
        json.execute("2", serde_json::json!({"a": [1, null]}), CommandMetadata::new())
            .unwrap();
        assert_eq!(json.load("2").unwrap().state.count, 1);
    }
}

#[test]
fn a_dispatcher_meeting_damage_stops_with_a_dispatcher_error() {
    let (_d, p) = damaged_far_back();
    let store = Store::open(&p, Options::default()).unwrap();
    let d = store
        .dispatcher()
        .handler("late", SubscriptionFilter::all(), StartFrom::After(100), |_| Ok(()))
        .unwrap()
        .handler("early", SubscriptionFilter::category("New"), StartFrom::Start, |_| {
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    assert!(
        !d.wait_for(10_100, Duration::from_secs(5)),
        "the dispatcher ended at the damage"
    );
    match d.join() {
        Err(e) => {
            assert!(matches!(e.error, Error::Corruption { .. }), "{e}");
            assert_eq!(e.handlers.len(), 2);
            assert_eq!(e.handlers[1].position, 0, "stays before the damage");
            assert!(e.handlers[0].position >= 100);
        }
        Ok(status) => panic!("no error: {status:?}"),
    }
}

#[test]
fn repositories_are_shared_between_threads() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send_sync_clone::<annal::aggregate::Repository<aggregate_support::Account>>();
}

#[test]
fn dropping_the_last_clone_closes_as_close_does() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let store = Store::open(&p, Options::default().with_durability(Durability::Buffered)).unwrap();
    append_n(&store, "S-1", "T", 30);
    let clone = store.clone();
    drop(store);
    append_n(&clone, "S-1", "T", 3);
    drop(clone);
    assert!(!p.join("next-segment.tmp").exists());
    let store = Store::open(&p, Options::default()).unwrap();
    let r = store.recovery_report();
    assert!(r.index_loaded);
    assert_eq!(
        (r.replayed_events, r.torn_tail_bytes),
        (0, 0),
        "the index was saved at drop"
    );
    assert_eq!(store.last_position(), 33);
}

#[test]
fn documented_defaults() {
    let o = Options::default();
    assert_eq!(o.durability(), Durability::Sync);
    assert_eq!(o.segment_size_bytes(), 64 * 1024 * 1024);
    assert!(!o.read_only());
    let s = SnapshotOptions::default();
    assert_eq!((s.keep_per_stream, s.compact_min_bytes), (4, 64 * 1024));
    let (_d, store) = open();
    assert_eq!(store.snapshot_options(), s);
    assert_eq!(annal::SUBSCRIPTION_PAGE_EVENTS, 256);
}

/// `Store::subscriber_count`: each live subscription counts once, and so
/// does a started dispatcher, whatever its number of handlers; a dropped
/// subscription and a stopped dispatcher no longer count.
#[test]
fn subscriber_count_counts_subscriptions_and_dispatchers() {
    let (_d, store) = five();
    assert_eq!(store.subscriber_count(), 0);
    let sub = store.subscribe_all(StartFrom::Start).unwrap();
    assert_eq!(store.subscriber_count(), 1);
    let builder = store
        .dispatcher()
        .handler("a", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()))
        .unwrap()
        .handler("b", SubscriptionFilter::category("A"), StartFrom::Start, |_| Ok(()))
        .unwrap();
    assert_eq!(store.subscriber_count(), 1, "a builder is not registered");
    let dispatcher = builder.start().unwrap();
    assert_eq!(store.subscriber_count(), 2);
    drop(sub);
    assert_eq!(store.subscriber_count(), 1);
    dispatcher.stop().unwrap();
    assert_eq!(store.subscriber_count(), 0);
}
