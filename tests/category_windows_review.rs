//! An outside review of category windows (`read/category.rs`): category
//! reads, global reads filtered by a category and category subscriptions
//! checked against a model over a log of several windows and many small
//! segments, with categories of few and of many streams, one whose
//! streams start late in the log, one with a stream named as the
//! category, one with no stream, and batches mixing categories; from
//! starts at and around window edges; with type and prefix filters; on a
//! read-only open, after a reopen that loads the index file and appends
//! more, and after a crash that replays the tail; while appends add new
//! streams to the category; and with damage at window edges and segment
//! edges in batches of other categories.
#![cfg(feature = "sim")]

mod category_model;
mod common;
mod sim_support;

use std::sync::OnceLock;
use std::time::Duration;

use annal::io::sim::{SimFs, SimImage};
use annal::{Durability, Error, Options, ReadAll, StartFrom, Store, Subscription, SubscriptionFilter, category_of};
use category_model::{Filt, Model, NONE, append_batch};
use common::rng::Rng;
use sim_support::{deliveries_before_damage, dir, flip_payload, open_without_id_window, same};

/// Events in the base image.
const EVENTS: u64 = 140_000;

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(128 * 1024)
}

const TYPES: [&str; 3] = ["T0", "T1", "T2"];

/// The next batch of the layout, given the next position: mostly filler
/// of `B` (5,000 streams), `A` (three streams), `Order` (streams `Order`,
/// `Order-1`, `Order-x-y`, and `Orders-1`, another category), `Late`
/// (streams only from position 100,000 on), batches mixing `A` and `B`.
fn next_batch(rng: &mut Rng, next: u64, late_streams: u64) -> Vec<(String, &'static str)> {
    let ty = |rng: &mut Rng| TYPES[rng.below(3) as usize];
    let roll = rng.below(100);
    let mut out = Vec::new();
    if roll < 14 {
        let s = format!("A-{}", rng.below(3));
        for _ in 0..1 + rng.below(30) {
            out.push((s.clone(), ty(rng)));
        }
    } else if roll < 17 {
        let s = ["Order", "Order-1", "Order-x-y", "Orders-1"][rng.below(4) as usize].to_string();
        for _ in 0..1 + rng.below(3) {
            out.push((s.clone(), ty(rng)));
        }
    } else if roll < 25 && next > 100_000 {
        let s = format!("Late-{}", rng.below(late_streams));
        for _ in 0..1 + rng.below(10) {
            out.push((s.clone(), ty(rng)));
        }
    } else if roll < 29 {
        out.push((format!("A-{}", rng.below(3)), ty(rng)));
        out.push((format!("B-{}", rng.below(5000)), ty(rng)));
        out.push((format!("A-{}", rng.below(3)), ty(rng)));
    } else {
        let base = rng.below(5000);
        for i in 0..1 + rng.below(24) {
            out.push((format!("B-{}", (base + i) % 5000), ty(rng)));
        }
    }
    out
}

/// Appends batches of the layout until the log holds `until` events.
fn append_until(store: &Store<SimFs>, model: &mut Model, rng: &mut Rng, until: u64, late_streams: u64) {
    while model.head() < until {
        let batch = next_batch(rng, model.head() + 1, late_streams);
        append_batch(store, model, &batch);
    }
}

/// The base image: a closed store, and its model.
fn base() -> &'static (SimImage, Model) {
    static BASE: OnceLock<(SimImage, Model)> = OnceLock::new();
    BASE.get_or_init(|| {
        let fs = SimFs::new(11);
        let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
        let mut model = Model::default();
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        append_until(&store, &mut model, &mut rng, EVENTS, 4);
        // The model agrees with what the store holds.
        let all: Vec<(u64, String, String)> = store
            .read_all(ReadAll::forward())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.data(), format!("payload-{:06}", e.position()).as_bytes());
                (e.position(), e.stream().to_string(), e.event_type().to_string())
            })
            .collect();
        assert_eq!(all.len() as u64, model.head());
        for ((e, m), position) in all.iter().zip(&model.events).zip(1..) {
            assert_eq!((e.0, e.1.as_str(), e.2.as_str()), (position, m.0.as_str(), m.1));
        }
        store.close().unwrap();
        (fs.durable_image(), model)
    })
}

fn open(image: &SimImage, options: Options) -> Store<SimFs> {
    Store::open_with(SimFs::from_image(image, 5), dir(), options).unwrap()
}

/// Receives until `try_recv` has nothing more, checking at each step that
/// `position()` never goes back, never passes the next match to deliver,
/// and ends at the head. `timeouts` mixes in `recv_timeout` calls with a
/// zero timeout (which may return nothing while catching up).
fn drain(sub: &mut Subscription<SimFs>, want: &[u64], head: u64, timeouts: bool, what: &str) -> Vec<u64> {
    let mut got = Vec::new();
    let mut last_position = sub.position();
    let mut calls = 0u64;
    loop {
        calls += 1;
        let next = if timeouts && !calls.is_multiple_of(3) {
            match sub.recv_timeout(Duration::ZERO).unwrap() {
                Some(e) => Some(e),
                None if sub.position() < head => {
                    let p = sub.position();
                    assert!(p >= last_position, "{what}: position went back");
                    last_position = p;
                    continue;
                }
                None => None,
            }
        } else {
            sub.try_recv().unwrap()
        };
        let p = sub.position();
        assert!(
            p >= last_position,
            "{what}: position went back from {last_position} to {p}"
        );
        last_position = p;
        match next {
            Some(e) => {
                got.push(e.position());
                if let Some(&undelivered) = want.get(got.len()) {
                    assert!(
                        p < undelivered,
                        "{what}: position {p} past undelivered match {undelivered}"
                    );
                }
            }
            None => break,
        }
    }
    same(&got, want, what);
    assert_eq!(sub.position(), head, "{what}: position after catching up");
    got
}

/// Starts around the windows' edges: a category's first window ends
/// 65,536 positions (at least) after the start.
fn starts() -> Vec<u64> {
    let mut s = vec![
        0, 1, 2, 19, 65_535, 65_536, 65_537, 70_000, 99_999, 100_001, 131_071, 131_072, 131_073,
    ];
    s.extend([EVENTS - 65_536, EVENTS - 65_535, EVENTS - 20, EVENTS - 1, EVENTS]);
    s
}

const CATEGORIES: [&str; 6] = ["A", "B", "Order", "Late", "Z", "Orders"];

/// Checks reads and subscriptions of every category from every start.
fn check_everything(store: &Store<SimFs>, model: &Model, timeouts: bool) {
    let head = model.head();
    assert_eq!(store.last_position(), head);
    for start in starts().into_iter().filter(|&s| s <= head) {
        for category in CATEGORIES {
            let want = model.want(category, &NONE, start, head);
            let listed: Vec<u64> = store
                .read_category(category, start, None)
                .unwrap()
                .map(|e| e.unwrap().position())
                .collect();
            same(&listed, &want, &format!("read_category {category} after {start}"));
            for limit in [1usize, 300, 513] {
                let limited: Vec<u64> = store
                    .read_category(category, start, Some(limit))
                    .unwrap()
                    .map(|e| e.unwrap().position())
                    .collect();
                same(
                    &limited,
                    &want[..want.len().min(limit)],
                    &format!("read_category {category} after {start} limit {limit}"),
                );
            }
            let all: Vec<u64> = store
                .read_all(ReadAll::forward().from_position(start).category(category))
                .unwrap()
                .map(|e| e.unwrap().position())
                .collect();
            same(&all, &want, &format!("read_all {category} after {start}"));
            let typed: Vec<u64> = store
                .read_all(
                    ReadAll::forward()
                        .from_position(start)
                        .category(category)
                        .event_type("T0")
                        .event_type("T2"),
                )
                .unwrap()
                .map(|e| e.unwrap().position())
                .collect();
            same(
                &typed,
                &model.want(category, &Filt::types(&["T0", "T2"]), start, head),
                &format!("read_all {category} T0|T2 after {start}"),
            );
            let prefix = format!("{category}-");
            let prefixed: Vec<u64> = store
                .read_all(
                    ReadAll::forward()
                        .from_position(start)
                        .category(category)
                        .stream_prefix(prefix.clone()),
                )
                .unwrap()
                .map(|e| e.unwrap().position())
                .collect();
            same(
                &prefixed,
                &model.want(category, &Filt::prefix(&prefix), start, head),
                &format!("read_all {category} prefix after {start}"),
            );
            let mut sub = store
                .subscribe(SubscriptionFilter::category(category), StartFrom::After(start))
                .unwrap();
            drain(
                &mut sub,
                &want,
                head,
                timeouts,
                &format!("subscription {category} after {start}"),
            );
            let mut sub = store
                .subscribe(
                    SubscriptionFilter::category(category).event_type("T1"),
                    StartFrom::After(start),
                )
                .unwrap();
            drain(
                &mut sub,
                &model.want(category, &Filt::types(&["T1"]), start, head),
                head,
                timeouts,
                &format!("subscription {category} T1 after {start}"),
            );
        }
    }
}

#[test]
fn everything_matches_the_model() {
    let (image, model) = base();
    let store = open(image, options());
    check_everything(&store, model, true);
}

#[test]
fn read_only_open_matches_the_model() {
    let (image, model) = base();
    let store = open(image, options().with_read_only(true));
    check_everything(&store, model, false);
}

/// Reopened from the index file (streams' positions read in place), more
/// appended to the same streams and to new ones (positions in the
/// appended part): then a crash, and the tail replayed on the loaded
/// index.
#[test]
fn reopened_and_appended_and_replayed_match_the_model() {
    let (image, model) = base();
    let mut model = model.clone();
    let fs = SimFs::from_image(image, 9);
    let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    append_until(&store, &mut model, &mut rng, EVENTS + 30_000, 9);
    check_everything(&store, &model, false);
    // Not closed: the durable image holds the log; its index file covers
    // the base only, so open replays the rest.
    let crashed = fs.durable_image();
    drop(store);
    let store = open(&crashed, options());
    // Buffered: the crash may take the last appends; whole batches.
    let head = store.last_position();
    assert!(head > EVENTS + 20_000, "the crash took {} events", model.head() - head);
    assert!(model.batches.iter().any(|&(_, last)| last == head));
    model.truncate(head);
    check_everything(&store, &model, false);
}

/// A subscription of `Late` catching up over windows while appends go on,
/// some of them to streams of `Late` created meanwhile, and category reads
/// made meanwhile: each read is the category as of one moment between
/// its call's start and end; the subscription delivers every event once,
/// in order.
#[test]
fn new_streams_of_the_category_during_a_catch_up() {
    let (image, model) = base();
    let store = open(image, options());
    let more = 40_000;
    let mut model2 = model.clone();
    let mut sub = store
        .subscribe(SubscriptionFilter::category("Late"), StartFrom::Start)
        .unwrap();
    let mut typed = store
        .subscribe(
            SubscriptionFilter::category("Late").event_type("T2"),
            StartFrom::After(50_000),
        )
        .unwrap();
    let mut got = Vec::new();
    let mut got_typed = Vec::new();
    let mut reads = Vec::new();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut rng = Rng::new(0xdead_beef_cafe_f00d);
            // `Late` streams 0..40: most of them new.
            append_until(&store, &mut model2, &mut rng, EVENTS + more, 40);
            model2
        });
        let mut rounds = 0u64;
        while !writer.is_finished() || rounds < 3 {
            rounds += 1;
            for _ in 0..50 {
                match sub.recv_timeout(Duration::from_micros(50)).unwrap() {
                    Some(e) => got.push(e.position()),
                    None => break,
                }
            }
            while let Some(e) = typed.try_recv().unwrap() {
                got_typed.push(e.position());
            }
            if rounds.is_multiple_of(20) {
                let before = store.last_position();
                let read: Vec<u64> = store
                    .read_category("Late", 90_000, None)
                    .unwrap()
                    .map(|e| e.unwrap().position())
                    .collect();
                let filtered: Vec<u64> = store
                    .read_all(ReadAll::forward().from_position(90_000).category("Late"))
                    .unwrap()
                    .map(|e| e.unwrap().position())
                    .collect();
                let after = store.last_position();
                reads.push((before, after, read, filtered));
            }
        }
        let model2 = writer.join().unwrap();
        while let Some(e) = sub.try_recv().unwrap() {
            got.push(e.position());
        }
        while let Some(e) = typed.try_recv().unwrap() {
            got_typed.push(e.position());
        }
        let head = model2.head();
        same(&got, &model2.want("Late", &NONE, 0, head), "subscription");
        same(
            &got_typed,
            &model2.want("Late", &Filt::types(&["T2"]), 50_000, head),
            "typed subscription",
        );
        assert!(!reads.is_empty());
        for (before, after, read, filtered) in &reads {
            for got in [read, filtered] {
                let ok = (*before..=*after).any(|last| *got == model2.want("Late", &NONE, 90_000, last));
                assert!(
                    ok,
                    "a read made between {before} and {after} is no snapshot of the category"
                );
            }
        }
    });
}

/// What a filtered reader sees with damage at `at`: a subscription of
/// `category` from `start` delivers the matches before the damaged batch,
/// then reports the damage every time, staying before it; a filtered
/// global read returns the same, then the error; a category read reads
/// its own records only.
fn check_damage(model: &Model, at: u64, category: &str, start: u64) {
    let (image, _) = base();
    let (first, _) = model.batch_of(at);
    let own = model.holds(model.batch_of(at), category);
    let mut damaged = image.clone();
    flip_payload(&mut damaged, at);
    let Some(store) = open_without_id_window(&damaged, options()) else {
        return;
    };
    let head = model.head();
    let what = format!("{category} after {start}, damage at {at} (batch from {first})");
    let before = model.want(category, &NONE, start, first - 1);
    if first <= start {
        // The damaged batch lies before the start, unless the start is
        // inside it.
        return;
    }
    let mut sub = store
        .subscribe(SubscriptionFilter::category(category), StartFrom::After(start))
        .unwrap();
    let got = deliveries_before_damage(&mut sub, 3, first, &what);
    same(&got, &before, &format!("subscription {what}"));

    let mut typed = store
        .subscribe(
            SubscriptionFilter::category(category).event_type("T0"),
            StartFrom::After(start),
        )
        .unwrap();
    let mut got = Vec::new();
    loop {
        match typed.try_recv() {
            Ok(Some(e)) => got.push(e.position()),
            Ok(None) => panic!("{what}: damage hidden from a typed subscription"),
            Err(Error::Corruption { .. }) => break,
            Err(other) => panic!("{what}: {other:?}"),
        }
    }
    same(
        &got,
        &model.want(category, &Filt::types(&["T0"]), start, first - 1),
        &format!("typed subscription {what}"),
    );

    let read: Vec<_> = store
        .read_all(ReadAll::forward().from_position(start).category(category))
        .unwrap()
        .collect();
    let errs = read.iter().filter(|r| r.is_err()).count();
    assert_eq!(errs, 1, "read_all {what}");
    assert!(read.last().unwrap().is_err(), "read_all {what}: the error is last");
    let ok: Vec<u64> = read.into_iter().filter_map(Result::ok).map(|e| e.position()).collect();
    same(&ok, &before, &format!("read_all {what}"));

    let listed: Vec<_> = store.read_category(category, start, None).unwrap().collect();
    if own {
        let ok: Vec<u64> = listed
            .iter()
            .map_while(|r| r.as_ref().ok())
            .map(|e| e.position())
            .collect();
        same(&ok, &before, &format!("read_category {what}"));
        assert!(listed.last().unwrap().is_err());
    } else {
        let ok: Vec<u64> = listed.into_iter().map(|r| r.unwrap().position()).collect();
        same(
            &ok,
            &model.want(category, &NONE, start, head),
            &format!("read_category {what}"),
        );
    }
    // Started after the damaged batch: everything after the start.
    let (_, last) = model.batch_of(at);
    let mut sub = store
        .subscribe(SubscriptionFilter::category(category), StartFrom::After(last))
        .unwrap();
    drain(
        &mut sub,
        &model.want(category, &NONE, last, head),
        head,
        false,
        &format!("after {what}"),
    );
}

/// The first position at or after `p` whose batch holds no event of
/// `category`.
fn other_at_or_after(model: &Model, category: &str, p: u64) -> u64 {
    (p..).find(|&q| !model.holds(model.batch_of(q), category)).unwrap()
}

/// The first position at or before `p` whose batch holds no event of
/// `category`.
fn other_at_or_before(model: &Model, category: &str, p: u64) -> u64 {
    (1..=p)
        .rev()
        .find(|&q| !model.holds(model.batch_of(q), category))
        .unwrap()
}

#[test]
fn damage_at_window_edges_in_other_categories_is_reported() {
    let (_, model) = base();
    let mut cases = Vec::new();
    for (category, start) in [("A", 0u64), ("A", 30_000), ("Order", 0), ("Late", 1_000), ("Z", 10_000)] {
        // Around the first window's end (at least 65,536 positions after
        // the start), and the first position of the range.
        for edge in [start + 1, start + 65_536, start + 65_537] {
            cases.push((category, start, other_at_or_before(model, category, edge)));
            cases.push((category, start, other_at_or_after(model, category, edge)));
        }
    }
    for (category, start, at) in cases {
        check_damage(model, at, category, start);
    }
}

/// Damage in the first and the last batch of a segment, for a category
/// read from the segment before.
#[test]
fn damage_at_segment_edges_is_reported() {
    let (image, model) = base();
    let store = open(image, options());
    // Segment edges: where a batch's segment differs from the one before,
    // found from the files' contents (the first copy of each payload).
    let segments: Vec<(&std::path::PathBuf, &Vec<u8>)> = image
        .files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert!(
        segments.len() > 10,
        "expected many segments: {:?}",
        image.files.keys().collect::<Vec<_>>()
    );
    drop(store);
    let find = |p: u64| {
        let needle = format!("payload-{p:06}");
        segments
            .iter()
            .position(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    // The first batch of segments 3 and 7 (binary search over
    // positions), and the last batch of the segment before each.
    let mut edges = Vec::new();
    for target in [3usize, 7] {
        let (mut lo, mut hi) = (1u64, EVENTS);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if find(mid).unwrap() < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        edges.push(lo);
        edges.push(lo - 1);
    }
    for &edge in &edges {
        for (category, start) in [("A", 0u64), ("Order", 0), ("Z", 0)] {
            let at = other_at_or_after(model, category, edge);
            let at = if find(at) == find(edge) {
                at
            } else {
                other_at_or_before(model, category, edge)
            };
            check_damage(model, at, category, start);
        }
    }
}

/// Damage in a category's own record: every reader of it stops there.
#[test]
fn damage_in_the_category_near_window_edges() {
    let (_, model) = base();
    for edge in [65_536u64, 65_537, 30_000 + 65_536] {
        let at = (edge..).find(|&p| model.holds(model.batch_of(p), "A")).unwrap();
        let at = (at..).find(|&p| category_of(model.stream(p)) == "A").unwrap();
        check_damage(model, at, "A", 0);
        check_damage(model, at, "A", 30_000);
    }
}

/// Events in the dense image.
const DENSE_EVENTS: u64 = 420_000;

/// A store where category `D` (ten streams) holds nine events in ten, in
/// batches of 1 to 40 events of one stream, the rest `E` (50 streams):
/// windows after the first span about 73,000 positions, so that a read
/// from the start meets several windows.
fn dense() -> &'static (SimImage, Model) {
    static DENSE: OnceLock<(SimImage, Model)> = OnceLock::new();
    DENSE.get_or_init(|| {
        let fs = SimFs::new(12);
        let store = Store::open_with(fs.clone(), dir(), options().with_segment_size_bytes(1 << 20)).unwrap();
        let mut model = Model::default();
        let mut rng = Rng::new(0x5555_aaaa_1234_4321);
        while model.head() < DENSE_EVENTS {
            let (stream, n) = if rng.below(10) == 0 {
                (format!("E-{}", rng.below(50)), 1 + rng.below(4))
            } else {
                (format!("D-{}", rng.below(10)), 1 + rng.below(40))
            };
            let batch: Vec<(String, &'static str)> =
                (0..n).map(|_| (stream.clone(), TYPES[rng.below(3) as usize])).collect();
            append_batch(&store, &mut model, &batch);
        }
        store.close().unwrap();
        (fs.durable_image(), model)
    })
}

/// The windows' ends a listing of `category` (with `streams` streams)
/// after `after` meets, replaying `read/category.rs`'s spans.
fn window_ends(model: &Model, category: &str, streams: u64, after: u64) -> Vec<u64> {
    let mut ends = Vec::new();
    let mut span: Option<u64> = None;
    let mut at = after;
    let head = model.head();
    while at < head {
        let s = span.unwrap_or(streams * 16).clamp(65_536, 1 << 20);
        let end = head.min(at + s);
        let listed = model.want(category, &NONE, at, end).len() as u64;
        span = Some(s * (1 << 16) / listed.max(1));
        ends.push(end);
        at = end;
    }
    ends
}

#[test]
fn dense_category_windows_and_their_edges() {
    let (image, model) = dense();
    let head = model.head();
    let ends = window_ends(model, "D", 10, 0);
    assert!(ends.len() >= 3, "windows {ends:?}");
    let store = open(image, options().with_segment_size_bytes(1 << 20));
    let mut starts = vec![0u64, 1];
    for &end in &ends[..ends.len() - 1] {
        starts.extend([end - 1, end, end + 1]);
    }
    for start in starts {
        for (category, types) in [("D", &[][..]), ("D", &["T1"][..]), ("E", &[][..])] {
            let want = model.want(category, &Filt::types(types), start, head);
            let mut read = ReadAll::forward().from_position(start).category(category);
            let mut filter = SubscriptionFilter::category(category);
            for t in types {
                read = read.event_type(*t);
                filter = filter.event_type(*t);
            }
            let all: Vec<u64> = store.read_all(read).unwrap().map(|e| e.unwrap().position()).collect();
            same(&all, &want, &format!("read_all {category} {types:?} after {start}"));
            if types.is_empty() {
                let listed: Vec<u64> = store
                    .read_category(category, start, None)
                    .unwrap()
                    .map(|e| e.unwrap().position())
                    .collect();
                same(&listed, &want, &format!("read_category {category} after {start}"));
            }
            let mut sub = store.subscribe(filter, StartFrom::After(start)).unwrap();
            drain(
                &mut sub,
                &want,
                head,
                start % 2 == 0,
                &format!("subscription {category} {types:?} after {start}"),
            );
        }
    }
    drop(store);
    // Damage at the windows' edges, in `E` batches (other category) and
    // in `D` batches (own).
    for &end in &ends[..ends.len() - 1] {
        let mut cases = Vec::new();
        for p in [end, end + 1] {
            let e_after = (p..).find(|&q| category_of(model.stream(q)) == "E").unwrap();
            let e_before = (1..=p).rev().find(|&q| category_of(model.stream(q)) == "E").unwrap();
            cases.extend([e_after, e_before, p]);
        }
        for at in cases {
            check_dense_damage(model, image, at, end);
        }
    }
}

/// With damage at `at`, near the end `end` of the first window of a read
/// of `D` from the start: every filtered reader of `D` stops before the
/// damaged batch and reports it.
fn check_dense_damage(model: &Model, image: &SimImage, at: u64, end: u64) {
    let (first, last) = model.batch_of(at);
    let own = model.holds(model.batch_of(at), "D");
    let mut damaged = image.clone();
    flip_payload(&mut damaged, at);
    let Some(store) = open_without_id_window(&damaged, options().with_segment_size_bytes(1 << 20)) else {
        return;
    };
    let head = model.head();
    let what = format!("D, damage at {at} (batch {first}..={last}, window end {end})");
    let before = model.want("D", &NONE, 0, first - 1);
    let mut sub = store.subscribe_category("D", StartFrom::Start).unwrap();
    let got = deliveries_before_damage(&mut sub, 2, first, &what);
    same(&got, &before, &format!("subscription {what}"));
    let read: Vec<_> = store.read_all(ReadAll::forward().category("D")).unwrap().collect();
    assert!(read.last().unwrap().is_err(), "read_all {what}: no error");
    let ok: Vec<u64> = read.into_iter().filter_map(Result::ok).map(|e| e.position()).collect();
    same(&ok, &before, &format!("read_all {what}"));
    let listed: Vec<_> = store.read_category("D", 0, None).unwrap().collect();
    let ok: Vec<u64> = listed
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|e| e.position())
        .collect();
    if own {
        same(&ok, &before, &format!("read_category {what}"));
    } else {
        same(&ok, &model.want("D", &NONE, 0, head), &format!("read_category {what}"));
    }
    // From after the damaged batch (same segment: its watermark stopped).
    let all: Vec<u64> = store
        .read_all(ReadAll::forward().from_position(last).category("D"))
        .unwrap()
        .map(|e| e.unwrap().position())
        .collect();
    same(
        &all,
        &model.want("D", &NONE, last, head),
        &format!("read_all after {what}"),
    );
    let mut sub = store.subscribe_category("D", StartFrom::After(last)).unwrap();
    drain(
        &mut sub,
        &model.want("D", &NONE, last, head),
        head,
        false,
        &format!("after {what}"),
    );
}

/// Appends racing a catch-up in each durability mode, on a smaller log:
/// the subscription delivers every event of the category once, in order.
#[test]
fn catch_up_racing_appends_in_every_durability() {
    for durability in [
        Durability::Sync,
        Durability::Periodic(Duration::from_millis(2)),
        Durability::Buffered,
    ] {
        let options = options().with_durability(durability);
        let fs = SimFs::new(21);
        let store = Store::open_with(fs, dir(), options).unwrap();
        let mut model = Model::default();
        let mut rng = Rng::new(0x0bad_f00d_dead_0001);
        append_until(&store, &mut model, &mut rng, 20_000, 3);
        let mut sub = store.subscribe_category("A", StartFrom::Start).unwrap();
        let mut late = store.subscribe_category("Late", StartFrom::After(5)).unwrap();
        let (mut got, mut got_late) = (Vec::new(), Vec::new());
        let model = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let mut model = model.clone();
                append_until(&store, &mut model, &mut rng, 120_000, 30);
                model
            });
            while !writer.is_finished() {
                if let Some(e) = sub.recv_timeout(Duration::from_micros(100)).unwrap() {
                    got.push(e.position());
                }
                if let Some(e) = late.try_recv().unwrap() {
                    got_late.push(e.position());
                }
            }
            writer.join().unwrap()
        });
        while let Some(e) = sub.try_recv().unwrap() {
            got.push(e.position());
        }
        while let Some(e) = late.try_recv().unwrap() {
            got_late.push(e.position());
        }
        let head = model.head();
        same(&got, &model.want("A", &NONE, 0, head), &format!("{durability:?} A"));
        same(
            &got_late,
            &model.want("Late", &NONE, 5, head),
            &format!("{durability:?} Late"),
        );
    }
}
