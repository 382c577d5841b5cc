//! Tests written by a hand-made mutation review of the write path's
//! group commit and recent-id window: `src/writer/commit.rs` (the leader
//! that writes and syncs the queued batches, publishes them, wakes the
//! waiters, and poisons the store after a failed write or sync),
//! `src/writer/mod.rs` (`enqueue`, `append`, `failure_for`) and
//! `src/idempotency.rs`. Each test kills a mutant that the existing tests
//! let through, and asserts the promise the mutant breaks (DESIGN.md,
//! "The write path"; DURABILITY.md), not how the code keeps it.
//!
//! Mutants run (each applied alone, run against `suite`'s
//! `commit_mutants_review:: group_commit:: group_commit_model::
//! id_window:: decide_mutants_review:: semantics:: stress::`, the
//! `io_errors` binary and `--lib writer:: idempotency::`; `crash_sim` too
//! where marked; those the focused run let through also against
//! `crash_sim` and `suite`'s `spare_segment:: torture_review::
//! chain_review:: segment_mutants_review:: recovery:: model:: layout::
//! mutation_review:: smoke:: contract_review::
//! aggregates_idempotency_review:: new_api_review::`):
//!
//! 1. commit.rs:26, `w.done_seq >= seq` → `>` in `wait_seq`: every
//!    append leads empty groups forever. KILLED (every append hangs).
//! 2. commit.rs:54, `committed_seq >= seq` → `>` after a wake-up:
//!    EQUIVALENT (the appender retakes the lock and finds `done_seq`).
//! 3. commit.rs:142, `committed_seq` stored as `next_seq` (waiters of a
//!    later group woken as done). KILLED by
//!    `group_commit::a_failed_sync_fails_every_append_of_its_group` and
//!    others.
//! 4. commit.rs:134, no `poison` after a failed write or sync. KILLED by
//!    `group_commit::a_failed_sync_fails_every_append_of_its_group`,
//!    `io_errors::a_failed_sync_is_never_retried_into_success` (hang).
//! 5. commit.rs:136, the failed group's last sequence number taken with
//!    `min` (its first chunk's) instead of `max`. SURVIVED; killed by
//!    `every_append_of_a_failed_group_spanning_a_roll_gets_its_io_error`.
//! 6. mod.rs:199, `failure_for`: `seq <= last` → `<` (the failed group's
//!    last appender gets `Poisoned`). KILLED by
//!    `group_commit::a_failed_sync_fails_every_append_of_its_group`,
//!    `io_errors::a_full_disk_refuses_appends_and_recovers_after_space_is_freed`.
//! 7. commit.rs:134, poisoned but the failed group acknowledged
//!    (`done_seq = next_seq` after `poison`). KILLED by
//!    `io_errors::a_failed_sync_is_never_retried_into_success` and others.
//! 8. commit.rs:340, `publish` puts the segment views in reverse order.
//!    Let through by the focused run; KILLED by `crash_sim` (three tests)
//!    and `read_model::reads_and_subscriptions_match_a_model`; also by
//!    `a_group_spanning_a_roll_is_published_whole_and_in_log_order`.
//! 9. commit.rs:360, `publish` indexes the chunks in reverse order.
//!    Let through by the focused run; KILLED by
//!    `chain_review::concurrent_appends_across_roll_overs_keep_the_chain_in_every_mode`,
//!    `smoke::concurrent_appends_with_rollover_survive_reopen`,
//!    `torture_review::torture_sync`; also by
//!    `a_group_spanning_a_roll_is_published_whole_and_in_log_order`.
//! 10. commit.rs:385, `done_seq` taken with `min` over the group's chunks
//!     (the second chunk's appender never returns). Let through by the
//!     focused run; KILLED (hang) by
//!     `chain_review::concurrent_appends_across_roll_overs_keep_the_chain_in_every_mode`;
//!     also by `a_group_spanning_a_roll_is_published_whole_and_in_log_order`
//!     (within its deadline).
//! 11. commit.rs:381, `published_position = last_position + 1`. KILLED by
//!     `id_window::racing_single_event_retries_with_a_window_of_one`; also
//!     by `a_retry_of_an_append_being_synced_gets_its_result_once_written`.
//! 12. commit.rs:381, `published_position = last_position - 1`
//!     (saturating). KILLED by
//!     `decide_mutants_review::a_retry_found_in_the_window_gets_the_original_result`
//!     (hang).
//! 13. commit.rs:391, pending view kept when its last event is the last
//!     published (`pos > last` → `>=`). KILLED by
//!     `writer::tests::the_pending_view_is_empty_once_everything_is_published`.
//! 14. mod.rs:366, chunk-join test `c.offset + len != offset` inverted
//!     (each batch a chunk, and a write call, of its own). SURVIVED;
//!     killed by `a_group_writes_its_batches_to_one_segment_with_one_write_call`.
//! 15. mod.rs:366, the same test off by one (`!= offset + 1`). SURVIVED;
//!     killed by `a_group_writes_its_batches_to_one_segment_with_one_write_call`.
//! 16. mod.rs:352, roll-over test `tail_offset + size > segment_size` →
//!     `>=`. Let through by the focused run; KILLED by
//!     `chain_review::batches_exactly_filling_segments_keep_the_chain`;
//!     also by `a_batch_ending_exactly_at_the_segment_end_stays_in_that_segment`.
//! 17. mod.rs:457, `last_batch_crc` not updated in `enqueue` (crash_sim
//!     run). KILLED by `crash_sim::crash_at_random_points_loses_nothing_acknowledged`,
//!     `io_errors`, `--lib` and others.
//! 18. mod.rs:452, only the first id of each batch put in the recent-id
//!     window. KILLED by
//!     `decide_mutants_review::a_retry_found_in_the_window_gets_the_original_result`,
//!     `semantics::a_retry_half_forgotten_by_the_window_is_still_a_retry`.
//! 19. idempotency.rs:108, the floor after an eviction left at the evicted
//!     id's position (`old.position + 1` → `old.position`). KILLED by
//!     `idempotency::tests::matches_the_last_inserts`, `id_window::capacity_one`.
//! 20. idempotency.rs:97, an id evicted one early (`ring.len() + 1 <
//!     capacity`). KILLED by `idempotency::tests::evicts_oldest`.
//! 21. commit.rs:145, `written.notify_all()` removed (a retry waiting for
//!     an append being written is never woken). KILLED by
//!     `id_window::racing_single_event_retries_with_a_window_of_one`
//!     (hang); also by
//!     `a_retry_of_an_append_being_synced_gets_its_result_once_written`.
//! 22. commit.rs:298, `unwrite` skips the active segment's chunks
//!     (`>=` → `>`). KILLED by
//!     `io_errors::events_recovered_from_the_page_cache_are_synced_before_anything_counts_on_them`.
//! 23. commit.rs:260, a failed durable-mode sync ignored (crash_sim run).
//!     KILLED by `io_errors::a_failed_sync_is_never_retried_into_success`,
//!     `crash_sim`, `group_commit`.
//! 24. commit.rs:427, `last_batch_before_roll` filters `!=` the sealed
//!     segment (crash_sim run). KILLED by `crash_sim`, `io_errors`, `--lib`.
//! 25. mod.rs:446, the pending view's version not advanced by a queued
//!     append. KILLED by
//!     `writer::tests::the_pending_view_is_empty_once_everything_is_published`.
//! 26. commit.rs:162, `gather` returns only when the queue holds *more*
//!     than the previous group (`>=` → `>`). EQUIVALENT (the wait loop
//!     itself still stops once the group is complete; at most a gathering
//!     flag set and cleared): performance only, not tested.
//! 27. mod.rs:452, only the *last* id of each batch put in the recent-id
//!     window (an append of a batch's first event alone is written again,
//!     its id twice in the log). Let through by the focused run; KILLED by
//!     `contract_review::retries_of_parts_and_runs_of_earlier_appends_are_recognised`;
//!     also by `the_first_id_of_a_two_event_batch_is_never_written_again`.
//! 28. mod.rs:333, `tracks_pending` inverted (durable mode keeps the
//!     writer lock through its write and sync, the other modes release it).
//!     KILLED by
//!     `decide_mutants_review::appends_decided_while_an_append_is_queued_see_its_version_and_ids`
//!     (hang); also by this file's group tests (their appends never
//!     queue behind a held sync).
//!
//! Survivors of every test run before this file: 5, 14 and 15. No
//! mutant showed a real bug: the new tests all pass against the code as
//! it is, the exact fill of a segment included.
#![cfg(feature = "sim")]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use annal::io::sim::{Fault, FaultError, OpKind, SimFs};
use annal::log::frame::{BATCH_HEADER_BYTES, record_len};
use annal::log::segment::SEGMENT_HEADER_BYTES;
use annal::{AppendResult, Durability, Error, EventData, ExpectedVersion, Options, ReadAll, Store};

/// The segment size of the scenarios that roll: the smallest allowed.
const SEGMENT: u64 = 4096;

/// How long a scenario may take before it counts as hung (a mutant can
/// leave an appender parked forever). The real code takes milliseconds.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `f` on a thread of its own; fails if it has not returned within
/// [`LIMIT`], so that a thread parked forever fails the test instead of
/// hanging it.
fn within(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => t.join().expect("scenario"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("still waiting after {LIMIT:?}: an appender never returned"),
    }
}

/// A durable store on a simulated disk with 4 KiB segments, one small
/// event written (`W-1`).
fn durable_sim(seed: u64) -> (SimFs, Store<SimFs>) {
    let fs = SimFs::new(seed);
    let options = Options::default()
        .with_durability(Durability::Sync)
        .with_segment_size_bytes(SEGMENT);
    let store = Store::open_with(fs.clone(), "/sim/store", options).unwrap();
    store
        .append("W-1", ExpectedVersion::Any, [EventData::new("E", "w")])
        .unwrap();
    (fs, store)
}

/// The version `stream` will have once everything queued is written, as
/// the writer sees it (queued appends included): asked with an expected
/// version no stream here reaches, so the append is refused and changes
/// nothing.
fn version_with_queued(store: &Store<SimFs>, stream: &str) -> Option<u64> {
    match store.append(
        stream,
        ExpectedVersion::Exact(1_000_000),
        [EventData::new("Probe", "p")],
    ) {
        Err(Error::WrongExpectedVersion { actual, .. }) => actual,
        other => panic!("the probe of {stream} was not refused: {other:?}"),
    }
}

/// Waits until the append to `stream` (a new stream) is queued.
fn wait_queued(store: &Store<SimFs>, stream: &str) {
    while version_with_queued(store, stream).is_none() {
        std::thread::yield_now();
    }
}

/// Appends `events` to `stream` (under `Any`).
fn append(store: &Store<SimFs>, stream: &str, events: &[EventData]) -> annal::Result<AppendResult> {
    store.append(stream, ExpectedVersion::Any, events.to_vec())
}

/// Appends one event to `A-1` and holds its sync; once it is held, runs
/// `meanwhile`, then appends `others` (stream and events) from threads of
/// their own and waits until every one of them is queued behind A's group
/// (no timing: the writer's own view says so), then runs `before_release`
/// and releases the sync. Returns A's outcome and the others', in order.
fn around_a_held_sync(
    fs: &SimFs,
    store: &Store<SimFs>,
    others: &[(&str, Vec<EventData>)],
    before_release: impl FnOnce(),
) -> (annal::Result<AppendResult>, Vec<annal::Result<AppendResult>>) {
    let hold = fs.hold_next_sync();
    std::thread::scope(|scope| {
        let a = scope.spawn(|| append(store, "A-1", &[EventData::new("E", "a")]));
        hold.wait_held();
        let threads: Vec<_> = others
            .iter()
            .map(|(stream, events)| scope.spawn(move || append(store, stream, events)))
            .collect();
        for (stream, _) in others {
            wait_queued(store, stream);
        }
        before_release();
        hold.release();
        let a = a.join().unwrap();
        (a, threads.into_iter().map(|t| t.join().unwrap()).collect())
    })
}

/// An event whose payload makes its batch (of one event to `stream`)
/// exactly `bytes` long.
fn event_of_batch_size(stream: &str, bytes: u64) -> EventData {
    let empty = BATCH_HEADER_BYTES + record_len(stream, &EventData::new("E", Vec::<u8>::new()));
    let event = EventData::new("E", vec![b'y'; bytes as usize - empty]);
    assert_eq!((BATCH_HEADER_BYTES + record_len(stream, &event)) as u64, bytes);
    event
}

/// The size of the batch of `event` appended alone to `stream`.
fn batch_size(stream: &str, event: &EventData) -> u64 {
    (BATCH_HEADER_BYTES + record_len(stream, event)) as u64
}

/// Mutant: the roll-over test in `enqueue`, `w.tail_offset + size >
/// segment_size` turned into `>=`. Promise: a batch goes to the next
/// segment only when it does not fit in the active one; one that ends
/// exactly at the segment's end stays in it, and the store reads it back
/// (before and after a reopen) in order, gapless.
#[test]
fn a_batch_ending_exactly_at_the_segment_end_stays_in_that_segment() {
    for durability in [Durability::Sync, Durability::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default()
            .with_durability(durability)
            .with_segment_size_bytes(SEGMENT);
        let store = Store::open(dir.path(), options.clone()).unwrap();
        let first = EventData::new("E", "x");
        let used = SEGMENT_HEADER_BYTES + batch_size("S", &first);
        let filling = event_of_batch_size("S", SEGMENT - used);
        let last = EventData::new("E", "z");
        for e in [&first, &filling, &last] {
            store.append("S", ExpectedVersion::Any, [e.clone()]).unwrap();
        }
        store.close().unwrap();
        let lens = common::files::segment_lens(dir.path());
        assert_eq!(lens.len(), 2, "{durability:?}: segments {lens:?}");
        assert_eq!(
            lens[0], SEGMENT,
            "{durability:?}: the batch that fills segment 1 exactly went elsewhere"
        );
        common::files::assert_sealed_segments_end_at_their_data(dir.path());
        let store = Store::open(dir.path(), options).unwrap();
        let read: Vec<_> = common::all(&store)
            .iter()
            .map(|e| (e.position(), e.version(), e.id()))
            .collect();
        assert_eq!(
            read,
            [(1, 1, first.id()), (2, 2, filling.id()), (3, 3, last.id())],
            "{durability:?}"
        );
    }
}

/// Every event as (position, stream, version, id), in log order.
fn log_of(store: &Store<SimFs>) -> Vec<(u64, String, u64, annal::Uuid)> {
    store
        .read_all(ReadAll::forward())
        .unwrap()
        .collect_all()
        .unwrap()
        .iter()
        .map(|e| (e.position(), e.stream().to_string(), e.version(), e.id()))
        .collect()
}

/// Two appends too big to share what is left of segment 1, queued while
/// A's sync is held: they form one group whose first batch ends segment 1
/// and whose second starts segment 2 (two chunks).
fn two_appends_across_a_roll() -> Vec<(&'static str, Vec<EventData>)> {
    ["B-1", "C-1"]
        .into_iter()
        .map(|s| (s, vec![EventData::new("E", vec![b'b'; 2000])]))
        .collect()
}

/// Mutants 8, 9 and 10, which only a group of two chunks (one per
/// segment) reaches: segment views, or chunks, published in reverse
/// order; `done_seq` taken as the *smallest* of the group's sequence
/// numbers (the second chunk's appender is never acknowledged). The
/// focused run let them through; broader tests catch them when their
/// concurrent appenders happen to form such a group; this one forms it
/// every time. Promise: once its append returns Ok, each appender's events are
/// readable where its result says, the log is gapless and in order, and
/// a power loss right after keeps them.
#[test]
fn a_group_spanning_a_roll_is_published_whole_and_in_log_order() {
    within(|| {
        let (fs, store) = durable_sim(11);
        let others = two_appends_across_a_roll();
        let (a, results) = around_a_held_sync(&fs, &store, &others, || {});
        let a = a.unwrap();
        let results: Vec<AppendResult> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(store.stats().segments, 2, "the group did not roll");
        let mut expected = vec![
            (1, "W-1".to_string(), 1, None),
            (a.first_position, "A-1".to_string(), 1, None),
        ];
        for ((stream, events), r) in others.iter().zip(&results) {
            expected.push((
                r.first_position,
                stream.to_string(),
                r.first_version,
                Some(events[0].id()),
            ));
        }
        expected.sort_by_key(|e| e.0);
        let positions: Vec<u64> = expected.iter().map(|e| e.0).collect();
        assert_eq!(positions, [1, 2, 3, 4], "results not gapless");
        // A power loss right after: the acknowledged group is durable.
        let image = fs.durable_image();
        let options = Options::default().with_segment_size_bytes(SEGMENT);
        let reopened = Store::open_with(SimFs::from_image(&image, 1), "/sim/store", options).unwrap();
        for log in [log_of(&store), log_of(&reopened)] {
            assert_eq!(log.len(), 4, "{log:?}");
            for (got, want) in log.iter().zip(&expected) {
                assert_eq!((got.0, &got.1, got.2), (want.0, &want.1, want.2), "{log:?}");
                if let Some(id) = want.3 {
                    assert_eq!(got.3, id, "{log:?}");
                }
            }
        }
        // Every event reads back whole, payload included.
        for ((_, events), r) in others.iter().zip(&results) {
            let e = store.read_position(r.first_position).unwrap().unwrap();
            assert_eq!(e.data(), events[0].data());
        }
        store
            .append("D-1", ExpectedVersion::NoStream, [EventData::new("E", "d")])
            .unwrap();
    });
}

/// Mutant: the failed group's last sequence number taken from its first
/// chunk (`min` instead of `max` in `lead`). Promise: each appender of the
/// group commit that failed gets that group's I/O error, also the one
/// whose batch went to the next segment; nothing of the group is
/// readable, and the store takes no more appends.
#[test]
fn every_append_of_a_failed_group_spanning_a_roll_gets_its_io_error() {
    within(|| {
        let (fs, store) = durable_sim(12);
        let others = two_appends_across_a_roll();
        let (a, results) = around_a_held_sync(&fs, &store, &others, || {
            fs.inject(Fault {
                kind: OpKind::Sync,
                nth: 0,
                error: FaultError::Eio,
                sticky: true,
            });
        });
        a.unwrap();
        for ((stream, _), r) in others.iter().zip(&results) {
            assert!(
                matches!(r, Err(Error::Io { .. })),
                "{stream}, an append of the failed group: {r:?}"
            );
        }
        assert_eq!(store.last_position(), 2);
        let late = store.append("D-1", ExpectedVersion::Any, [EventData::new("E", "d")]);
        assert!(matches!(late, Err(Error::Poisoned(_))), "{late:?}");
    });
}

/// Mutants: `published_position` set one past the index's last position
/// (a retry of an append still being written returns before it is
/// published, and its content check reads nothing), and `lead` not
/// notifying `written` (the retry waits forever). Promise: a retry (same
/// event ids) of an append whose group is being synced gets the original
/// result once it is written, and writes nothing.
#[test]
fn a_retry_of_an_append_being_synced_gets_its_result_once_written() {
    within(|| {
        let (fs, store) = durable_sim(13);
        let events = vec![EventData::new("E", "r1")];
        let hold = fs.hold_next_sync();
        let (original, retried) = std::thread::scope(|scope| {
            let original = scope.spawn(|| append(&store, "R-1", &events));
            hold.wait_held();
            let retried = scope.spawn(|| append(&store, "R-1", &events));
            // Room for the retry to run while the sync is held (the result
            // asserted holds either way).
            std::thread::sleep(Duration::from_millis(200));
            hold.release();
            (original.join().unwrap(), retried.join().unwrap())
        });
        let original = original.unwrap();
        assert_eq!(retried.unwrap(), original);
        assert_eq!(store.last_position(), 2, "the retry wrote events");
        assert_eq!(store.stream_version("R-1"), Some(1));
    });
}

/// Mutants: the chunk-join test in `enqueue` (`c.offset + c.bytes.len()
/// != offset`) inverted or off by one, so that each queued batch starts a
/// chunk of its own. Promise (module doc of `writer::commit`, DESIGN.md
/// step 4): a group commit writes every queued batch with one write call
/// per segment; the batches queued during a sync share one write.
#[test]
fn a_group_writes_its_batches_to_one_segment_with_one_write_call() {
    within(|| {
        let (fs, store) = durable_sim(14);
        let others: Vec<(&str, Vec<EventData>)> = ["B-1", "C-1", "D-1"]
            .into_iter()
            .map(|s| (s, vec![EventData::new("E", "small")]))
            .collect();
        let mut writes_before = 0;
        let (a, results) = around_a_held_sync(&fs, &store, &others, || writes_before = fs.count(OpKind::Write));
        a.unwrap();
        results.into_iter().for_each(|r| {
            r.unwrap();
        });
        assert_eq!(store.stats().segments, 1);
        assert_eq!(
            fs.count(OpKind::Write) - writes_before,
            1,
            "three batches queued together, one segment: one write"
        );
    });
}

/// Mutant: `enqueue` remembering in the recent-id window only the last id
/// of each batch. Promise: an id already written is never written again:
/// an append of the first event of an earlier two-event batch alone (to
/// its stream, or to another) is either recognised as that event (its
/// original place) or refused with `IdempotencyConflict`, and writes
/// nothing.
#[test]
fn the_first_id_of_a_two_event_batch_is_never_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let (first, second) = (EventData::new("E", "1"), EventData::new("E", "2"));
    let original = store
        .append("S", ExpectedVersion::Any, [first.clone(), second])
        .unwrap();
    store
        .append("Other", ExpectedVersion::Any, [EventData::new("E", "o")])
        .unwrap();
    for (stream, expected) in [
        ("S", ExpectedVersion::Any),
        ("S", ExpectedVersion::StreamExists),
        ("T", ExpectedVersion::Any),
    ] {
        match store.append(stream, expected, [first.clone()]) {
            Ok(r) => assert_eq!(
                (stream, r.first_position, r.first_version),
                ("S", original.first_position, original.first_version),
                "{expected:?}: the id was placed elsewhere"
            ),
            Err(Error::IdempotencyConflict { .. }) => {}
            Err(e) => panic!("{stream} {expected:?}: {e}"),
        }
        let ids = common::all(&store);
        assert_eq!(ids.len(), 3, "{stream} {expected:?}: the id was written again");
    }
}
