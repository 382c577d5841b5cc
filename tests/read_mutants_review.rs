//! Mutation review of the read path: `src/read/mod.rs` (stream reads both
//! ways from a version with a limit; global reads both ways from a
//! position, with limits and filters; a read stopping at damage) and
//! `src/read/category.rs` (category reads, windows, the merge of a limited
//! category read, the window check of filtered reads), against the
//! promises of `ReadStream`, `ReadAll`, `Events`, `Store::read_*`,
//! DESIGN.md ("The read path") and DURABILITY.md (7: damage reported,
//! never skipped). Each mutant was run against `--lib read::` and the
//! suite modules `read_errors`, `filtered_damage`, `smoke`, `semantics`,
//! `contract_review`, `new_api_review` and `read_model` (the heavy
//! `category_windows*`, `category_backward_review` and `model` took too
//! long in the dev profile to run per mutant; `category_backward_review`
//! was run for the three mutants that survived the others, and catches
//! each of them in one to five minutes: the tests here kill them in about
//! a second).
//!
//! Mutants (caught: by an existing test; killed: by a test here):
//! - M01 backward stream start not clamped to the stream's count: caught (semantics)
//! - M02 forward `from_version` taken as exclusive: caught (semantics)
//! - M03 forward stream end not clamped to the count: caught (semantics, snapshot)
//! - M04 backward stream page not reversed: caught (semantics)
//! - M05 backward `from_position` taken as inclusive: caught (semantics)
//! - M06 forward range page not bounded by the read's end: caught (filtered_damage)
//! - M07 backward range page not bounded by its bound: caught (read_model)
//! - M08 forward range done one early (`>=`): caught (semantics)
//! - M09 event types filter `all` for `any`: caught (semantics)
//! - M10 category filter as a name prefix: caught (semantics)
//! - M11 a category-only filter taken as no filter: caught (filtered_damage)
//! - M12 the filtered path not marking the read failed after an error:
//!   survived the quick modules (caught by category_backward_review); killed
//!   by `a_read_that_met_damage_yields_nothing_more`
//! - M13 the filtered path not counting the limit: caught (semantics)
//! - M14 forward probe scan one short of its edge: caught (read_model); also
//!   killed by `category_filtered_reads_from_every_start_match_the_model`
//! - M15 backward probe scan reaching its edge: caught (read_model); also
//!   killed by the same test
//! - M16 backward window not reversed: caught (read_model)
//! - M17 backward scan of an unchecked window reaching the next window's
//!   top: survived the quick modules (caught by category_backward_review);
//!   killed by `backward_filtered_reads_across_windows_read_each_event_once`
//! - M18 filtered reads listing windows unchecked: caught (filtered_damage)
//! - M19 backward probe scan never marked done: caught (read_model); also
//!   killed by `category_filtered_reads_from_every_start_match_the_model`
//! - M20 a backward read's listing choice over `(0, last]` instead of
//!   `(0, start)`: equivalent (which way, and the probe's size: cost only), not run
//! - M21 the unfiltered path not marking the read failed: caught
//!   (contract_review); also killed by `a_read_that_met_damage_yields_nothing_more`
//! - M22 forward listing from the start's position, not after it: caught
//!   (filtered_damage); also killed by `category_filtered_reads_from_every_start_match_the_model`
//! - M23 a listed window's page advancing one short: caught (filtered_damage);
//!   also killed by every test here
//! - C01 forward window not capped at the read's last position: caught (lib)
//! - C02 window listing skipping the position after its start: caught (lib)
//! - C03 window positions not sorted: caught (semantics)
//! - C04 one stream in 256 skipped per slice: caught (semantics)
//! - C05 the merge dropping a stream whose head is the read's last
//!   position: caught (lib); also killed by `category_reads_from_every_start_match_the_model`
//! - C06 the merge keeping `limit - 1` candidate streams: caught (lib); also
//!   killed by the same test
//! - C07 a record at the watermark taken as checked (`<=`): equivalent (a
//!   watermark is a batch's start, a record follows its 32-byte batch header)
//! - C08 the "watermark itself must pass the record" test dropped: caught
//!   (filtered_damage); also killed by `a_read_that_met_damage_yields_nothing_more`
//! - C09 a window's first segment not checked: caught (filtered_damage)
//! - C10 a window's last segment not checked: caught (filtered_damage)
//! - C11 the probe of a limited read halved: equivalent (cost only), not run
//! - C12 the next backward window starting one below the window's low end:
//!   survived the quick modules (caught by category_backward_review); killed
//!   by `backward_filtered_reads_across_windows_read_each_event_once`
//! - C13 the merge taking `limit + 1` positions: caught (lib); equivalent
//!   through the API (the iterator's limit)
//! - S01 `read_position` of the last position answered `None`: caught (contract_review)
//!
//! No real bug found.

mod common;

use std::path::Path;

use annal::{Durability, Error, EventData, ExpectedVersion, Options, ReadAll, ReadStream, Store};

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(16 * 1024)
}

/// A store of one-event appends, each its own batch, with the data
/// `payload-NNNNNN` (its position): every tenth event (positions 10, 20,
/// ...) in `A-1`, the others in `Other-1`; appended until the log has
/// rolled over to segment 2 and `extra` more events are in it. Closed; its
/// last position is returned.
fn build(dir: &Path, extra: u64) -> u64 {
    let store = Store::open(dir, options()).unwrap();
    let mut position = 0;
    let append = |position: &mut u64| {
        *position += 1;
        let stream = if position.is_multiple_of(10) { "A-1" } else { "Other-1" };
        let data = format!("payload-{:06}", *position);
        let r = store
            .append(stream, ExpectedVersion::Any, [EventData::new("T", data)])
            .unwrap();
        assert_eq!(r.first_position, *position);
    };
    while !common::files::seg(dir, 2).exists() {
        append(&mut position);
    }
    for _ in 0..extra {
        append(&mut position);
    }
    store.close().unwrap();
    position
}

/// The segment number holding the event at `position` (by its payload).
fn segment_of(dir: &Path, position: u64) -> u64 {
    let needle = format!("payload-{position:06}");
    common::files::segment_ids(dir)
        .into_iter()
        .find(|&n| {
            let bytes = std::fs::read(common::files::seg(dir, n)).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .unwrap()
}

/// Flips one bit in the payload of the event at `position`, on disk.
fn flip(dir: &Path, position: u64) {
    let needle = format!("payload-{position:06}");
    let path = common::files::seg(dir, segment_of(dir, position));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap();
    bytes[at + 3] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
}

/// Opens without an id window, so that open reads no event: the damage is
/// met by the reads under test.
fn reopen(dir: &Path) -> Store {
    Store::open(dir, options().with_idempotency_window_events(0)).unwrap()
}

/// What a read gives: the positions of the events before its first error,
/// and whether it ended with a corruption error (and nothing after it).
fn outcome(events: annal::Events) -> (Vec<u64>, bool) {
    let mut positions = Vec::new();
    let mut events = events;
    for e in events.by_ref() {
        match e {
            Ok(e) => positions.push(e.position()),
            Err(Error::Corruption { .. }) => {
                assert!(events.next().is_none(), "a read went on after its error");
                return (positions, true);
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    (positions, false)
}

/// "Yields an error (and then stops) when it meets corruption", filtered
/// or not, and filters never hide damage, also once it is known (a read
/// past damage checks its own batch only, so a window past it must not be
/// listed). Kills the filtered (M12) and unfiltered (M21) paths going on
/// after their error, and C08.
#[test]
fn a_read_that_met_damage_yields_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let last = build(dir.path(), 30);
    let q = 35;
    assert_eq!(segment_of(dir.path(), q), 1);
    flip(dir.path(), q);
    let store = reopen(dir.path());
    let want: Vec<u64> = (10..q).step_by(10).collect();
    for _ in 0..3 {
        let got = outcome(store.read_all(ReadAll::forward().category("A")).unwrap());
        assert_eq!(got, (want.clone(), true));
    }
    // Unfiltered reads stop at the damage too, and yield nothing after it.
    let all = outcome(store.read_all(ReadAll::forward()).unwrap());
    assert_eq!(all, ((1..q).collect(), true));
    let back = outcome(store.read_all(ReadAll::backward()).unwrap());
    assert_eq!(back, ((q + 1..=last).rev().collect(), true));
    let other: Vec<u64> = (1..q).filter(|p| !p.is_multiple_of(10)).collect();
    let stream = outcome(store.read_stream("Other-1", ReadStream::forward()).unwrap());
    assert_eq!(stream, (other, true));
    // The category read reads its own events only, all intact.
    let own = outcome(store.read_category("A", 0, None).unwrap());
    assert_eq!(own, ((10..=last).step_by(10).collect(), false));
}

/// A small store for the filter and probe edges: 301 events, one append
/// each, of streams `A-1`, `A-2`, `A` (category `A`), `AB-1` (category
/// `AB`, sharing `A`'s prefix) and `B-1`..`B-3`, of types `T0`..`T2`,
/// placed by a fixed pseudo-random rule, the last of `A-2`; returns
/// (stream, type) per position.
fn small_store(dir: &Path) -> (Store, Vec<(String, String)>) {
    let store = Store::open(dir, options()).unwrap();
    let mut rng = common::rng::Rng::new(7);
    let mut log = Vec::new();
    for _ in 0..300 {
        let stream = match rng.below(10) {
            0 | 1 => "A-1".to_string(),
            2 => "A-2".to_string(),
            3 => "A".to_string(),
            4 => "AB-1".to_string(),
            n => format!("B-{}", n % 3 + 1),
        };
        let event_type = format!("T{}", rng.below(3));
        store
            .append(&stream, ExpectedVersion::Any, [EventData::new(&event_type, "{}")])
            .unwrap();
        log.push((stream, event_type));
    }
    // The log's last event is the category's.
    store
        .append("A-2", ExpectedVersion::Any, [EventData::new("T0", "{}")])
        .unwrap();
    log.push(("A-2".to_string(), "T0".to_string()));
    (store, log)
}

/// Category-filtered global reads, forward and backward, from every start
/// and with limits around the few positions a limited read scans before
/// it lists the category's windows (16 per stream of the category): each
/// returns exactly the model's positions, in order, no gap, no duplicate.
/// Kills the forward probe's scan stopping one short of its edge (M14),
/// the backward probe's scan reaching its edge, which the window below
/// lists again (M15), a backward probe's scan never marked done (M19), and
/// a forward listing from the start's position rather than after it (M22).
#[test]
fn category_filtered_reads_from_every_start_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = small_store(dir.path());
    let last = log.len() as u64;
    let of_a = |p: u64| annal::category_of(&log[p as usize - 1].0) == "A";
    let positions = |o: ReadAll| -> Vec<u64> { store.read_all(o).unwrap().map(|e| e.unwrap().position()).collect() };
    for start in 0..=last + 1 {
        for limit in [None, Some(1), Some(2), Some(3), Some(5), Some(40)] {
            let take = limit.unwrap_or(usize::MAX);
            let forward: Vec<u64> = (start + 1..=last).filter(|&p| of_a(p)).take(take).collect();
            let backward: Vec<u64> = (1..start.min(last + 1)).rev().filter(|&p| of_a(p)).take(take).collect();
            let (mut f, mut b) = (
                ReadAll::forward().from_position(start).category("A"),
                ReadAll::backward().from_position(start).category("A"),
            );
            if let Some(n) = limit {
                (f, b) = (f.limit(n), b.limit(n));
            }
            assert_eq!(positions(f), forward, "forward from {start}, limit {limit:?}");
            assert_eq!(positions(b), backward, "backward from {start}, limit {limit:?}");
        }
    }
    let all_a: Vec<u64> = (1..=last).filter(|&p| of_a(p)).collect();
    let mut newest_first = all_a.clone();
    newest_first.reverse();
    assert_eq!(positions(ReadAll::forward().category("A")), all_a);
    assert_eq!(positions(ReadAll::backward().category("A")), newest_first);
}

/// Category reads (`read_category`) from every start, with small limits
/// (the merge of the category's streams) and none (windows): the model's
/// positions, including the log's last event, which is the category's.
/// Kills the merge dropping a head at the read's last position (C05).
#[test]
fn category_reads_from_every_start_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = small_store(dir.path());
    let last = log.len() as u64;
    let of_a = |p: u64| annal::category_of(&log[p as usize - 1].0) == "A";
    for after in 0..=last + 1 {
        for limit in [None, Some(0), Some(1), Some(2), Some(3), Some(5), Some(40), Some(5000)] {
            let want: Vec<u64> = (after + 1..=last)
                .filter(|&p| of_a(p))
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            let got: Vec<u64> = store
                .read_category("A", after, limit)
                .unwrap()
                .map(|e| e.unwrap().position())
                .collect();
            assert_eq!(got, want, "after {after}, limit {limit:?}");
        }
    }
}

/// A backward category-filtered read over two windows (a window spans at
/// least 65,536 positions) returns the category's events newest first,
/// each once, no gap: listed (no damage), and scanned (damage low in
/// segment 1 stops the window check), down to the damaged batch, then the
/// error. Kills the next backward window starting one below the window's
/// low end (C12) and the scan of an unchecked window reaching down to the
/// next window's top, which that window reads again (M17).
#[test]
fn backward_filtered_reads_across_windows_read_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(1 << 20);
    let store = Store::open(dir.path(), options.clone()).unwrap();
    // Batches of 1,000 events: positions 1-1000 (batch 0) of `A-1`, then
    // batches of `B-1` and `A-1` in turn; 70 batches.
    for batch in 0..70u64 {
        let stream = if batch.is_multiple_of(2) { "A-1" } else { "B-1" };
        let events = (1..=1000).map(|i| EventData::new("T", format!("payload-{:06}", batch * 1000 + i)));
        store.append(stream, ExpectedVersion::Any, events).unwrap();
    }
    // Without damage, the windows are listed: each position once, no gap
    // at the windows' edge (4464).
    let of_a = |p: &u64| ((p - 1) / 1000).is_multiple_of(2);
    for start in [None, Some(70_001), Some(70_000), Some(69_999), Some(65_537)] {
        let mut read = ReadAll::backward().category("A");
        if let Some(start) = start {
            read = read.from_position(start);
        }
        let below = start.unwrap_or(70_001);
        let want: Vec<u64> = (1..below).rev().filter(of_a).collect();
        let got = outcome(store.read_all(read).unwrap());
        assert!(!got.1 && got.0 == want, "a listed backward read from {start:?}");
    }
    store.close().unwrap();
    // The first window read backward from the end is (4464, 70000]; its
    // lowest position and the next window's top, 4464, is `A-1`'s. The
    // damage is in batch 3 (`B-1`), below both, in the same segment.
    assert_eq!(segment_of(dir.path(), 3500), segment_of(dir.path(), 4464));
    flip(dir.path(), 3500);
    let store = Store::open(dir.path(), options.with_idempotency_window_events(0)).unwrap();
    let want: Vec<u64> = (4001..=70_000u64).rev().filter(of_a).collect();
    let got = outcome(store.read_all(ReadAll::backward().category("A")).unwrap());
    assert!(got.1, "the damage was not reported");
    assert_eq!(got.0.len(), want.len(), "events returned");
    assert!(got.0 == want, "not the category's events newest first, each once");
}
