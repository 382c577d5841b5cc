//! Tests written by a tool-driven mutation review of the append decision
//! (`cargo mutants` over `src/writer/decide.rs` and
//! `src/writer/validate.rs`): each one kills a mutant that the rest of the
//! suite let through, or caught only by a test timing out, and asserts the
//! promise that the mutant breaks (idempotent retries are acknowledged
//! with the original result and never duplicate events), not how the code
//! keeps it.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use annal::{AppendResult, EventData, ExpectedVersion, Options, Store, Uuid};

/// Two events with ids of their own.
fn two_events() -> Vec<EventData> {
    (0..2).map(|n| common::event("E", n).with_id(Uuid::new_v4())).collect()
}

/// Retries `events` on `stream` under `expected` from a thread of its own
/// and returns its result. The wait is bounded only so that a retry that
/// never returns fails the test instead of hanging it; the real code
/// returns at once.
fn retry(store: &Store, stream: &str, expected: ExpectedVersion, events: &[EventData]) -> annal::Result<AppendResult> {
    let (tx, rx) = mpsc::channel();
    let (store, stream, events) = (store.clone(), stream.to_string(), events.to_vec());
    std::thread::spawn(move || {
        let _ = tx.send(store.append(&stream, expected, events));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the retry did not return: it waits for events that will never be written")
}

/// Idempotent retries under `Any` and `StreamExists`, recognised by the
/// recent-id window: retrying a two-event append (not the stream's first)
/// returns the original append's result, versions and positions, and
/// writes nothing.
/// (Mutants in `retry_in_window`: `last_position: position + k - 1`
/// turned into `position + k + 1`, `position + k / 1` or `position * k -
/// 1`: the retry waits for a position past the log's end; the suite
/// caught them only by timing out.)
#[test]
fn a_retry_found_in_the_window_gets_the_original_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    common::append_n(&store, "Other", "O", 3);
    store
        .append("S", ExpectedVersion::Any, [common::event("E", 9)])
        .unwrap();
    for expected in [ExpectedVersion::Any, ExpectedVersion::StreamExists] {
        let events = two_events();
        let original = store.append("S", expected, events.clone()).unwrap();
        let before = common::all(&store).len();
        assert_eq!(retry(&store, "S", expected, &events).unwrap(), original, "{expected:?}");
        assert_eq!(
            common::all(&store).len(),
            before,
            "{expected:?}: the retry wrote events"
        );
        assert_eq!(store.stream_version("S"), Some(original.last_version));
    }
}

/// Idempotent retries of a stream's latest append beyond the window (here
/// a window of 0 ids): retrying a two-event append under `Any` returns the
/// original result, at once, and writes nothing.
/// (Mutants in `retry_at_stream_end`: `last_position:
/// first_position + k - 1` turned into `first_position + k + 1` or
/// `first_position + k / 1`: the retry waits for a position past the
/// log's end; the suite caught them only by timing out.)
#[test]
fn a_retry_of_the_streams_last_append_beyond_the_window_gets_the_original_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_idempotency_window_events(0)).unwrap();
    common::append_n(&store, "Other", "O", 3);
    let events = two_events();
    let original = store.append("S", ExpectedVersion::Any, events.clone()).unwrap();
    assert_eq!(retry(&store, "S", ExpectedVersion::Any, &events).unwrap(), original);
    assert_eq!(common::stream(&store, "S").len(), 2, "the retry wrote events");
    assert_eq!(common::all(&store).len(), 5);
}

/// Optimistic concurrency and reused ids against an append still queued:
/// in durable mode an append whose sync has not returned is not yet
/// published, and appends decided meanwhile must see its version and ids.
/// While `S`'s first append (two events, `NoStream`) is held in its sync,
/// an `Exact(0)` append repeating its first id with another event is
/// refused as a reused id (naming that id), not as a wrong version; and an
/// `Exact(5)` append is refused with the queued version, 2, as the
/// stream's actual one. Both are refused at once, without waiting for the
/// held sync, so the test does not depend on timing. The stream ends up
/// with the two events of its first append only.
/// (Mutants in `event_at`: its queued-range arithmetic,
/// `p.version + 1 - p.events.len()` turned into `p.version + 1 + …`,
/// `p.version - 1 - …`, `p.version * 1 - …` or `p.version + 1 / …`,
/// `version >= first_pending` into `<`, `version - first_pending` into
/// `+` or `/`, and `!w.pending.is_empty()` into `w.pending.is_empty()`;
/// in `current`, `!w.pending.is_empty()` into `w.pending.is_empty()`. The
/// suite caught the `event_at` ones only with a racing test, which does
/// not race on every run.)
#[cfg(feature = "sim")]
#[test]
fn appends_decided_while_an_append_is_queued_see_its_version_and_ids() {
    use annal::io::sim::SimFs;
    use annal::{Durability, Error};

    let fs = SimFs::new(11);
    let options = Options::default().with_durability(Durability::Sync);
    let store = Store::open_with(fs.clone(), "/sim/store", options).unwrap();
    store
        .append("Other", ExpectedVersion::Any, [EventData::new("O", "x")])
        .unwrap();
    let queued = two_events();
    let hold = fs.hold_next_sync();
    let (first, partial, wrong) = std::thread::scope(|scope| {
        let first = scope.spawn(|| store.append("S", ExpectedVersion::NoStream, queued.clone()));
        let release = Release(&hold);
        hold.wait_held();
        let partial = store.append(
            "S",
            ExpectedVersion::Exact(0),
            [queued[0].clone(), EventData::new("E", "another")],
        );
        let wrong = store.append("S", ExpectedVersion::Exact(5), [EventData::new("E", "late")]);
        drop(release);
        (first.join().unwrap(), partial, wrong)
    });
    let first = first.unwrap();
    assert_eq!((first.first_version, first.last_version), (1, 2));
    match partial {
        Err(Error::IdempotencyConflict { stream, id }) => assert_eq!((stream.as_str(), id), ("S", queued[0].id())),
        other => panic!("a reused id of a queued append: {other:?}"),
    }
    match wrong {
        Err(Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(
                (stream.as_str(), expected, actual),
                ("S", ExpectedVersion::Exact(5), Some(2))
            );
        }
        other => panic!("Exact(5) against a queued version 2: {other:?}"),
    }
    let ids: Vec<Uuid> = store
        .read_stream("S", annal::ReadStream::forward())
        .unwrap()
        .collect_all()
        .unwrap()
        .iter()
        .map(|e| e.id())
        .collect();
    assert_eq!(ids, queued.iter().map(EventData::id).collect::<Vec<_>>());
    store.close().unwrap();
}

/// The batch-size limit is inclusive: an append that encodes to exactly
/// the largest batch a segment holds (`Options::with_segment_size_bytes`
/// less the segment header) is written, and reads back whole after a
/// reopen; one byte more is refused with `Error::InvalidInput`, writing
/// nothing.
/// (Mutant in `validate`: `bytes > batch_bytes_max` turned into `>=`.)
#[test]
fn an_append_exactly_as_large_as_a_segment_holds_is_written() {
    use annal::log::frame::{self, BATCH_HEADER_BYTES};
    use annal::log::segment::SEGMENT_HEADER_BYTES;

    let segment = 16 * 1024;
    let room = usize::try_from(segment - SEGMENT_HEADER_BYTES).unwrap();
    let sized = |len: usize| EventData::new("E", vec![7u8; len]);
    let fixed = BATCH_HEADER_BYTES + frame::record_len("S", &sized(0));
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().with_segment_size_bytes(segment);
    let store = Store::open(dir.path(), options.clone()).unwrap();

    let too_large = store.append("S", ExpectedVersion::NoStream, [sized(room - fixed + 1)]);
    assert!(
        matches!(too_large, Err(annal::Error::InvalidInput(_))),
        "one byte over: {too_large:?}"
    );
    assert_eq!(store.stream_version("S"), None);

    let exact = sized(room - fixed);
    assert_eq!(BATCH_HEADER_BYTES + frame::record_len("S", &exact), room);
    let written = store.append("S", ExpectedVersion::NoStream, [exact]).unwrap();
    assert_eq!((written.first_version, written.last_version), (1, 1));
    store.close().unwrap();

    let store = Store::open(dir.path(), options).unwrap();
    let events = common::stream(&store, "S");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data(), vec![7u8; room - fixed].as_slice());
    store.close().unwrap();
}

/// Releases a held sync when dropped: also when a check panics, so that
/// the held append's thread ends and the test fails instead of hanging.
#[cfg(feature = "sim")]
struct Release<'a>(&'a annal::io::sim::SyncHold);

#[cfg(feature = "sim")]
impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}
