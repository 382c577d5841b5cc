//! Category reads and subscriptions over a history long enough for
//! several windows listed from the index (`read/category.rs`: at least
//! 65,536 positions each): the same events as a filter over every event,
//! from starts at and around the windows' edges, with and without a type
//! filter, for a category of few streams (listed) and one of many (whose
//! windows are wider); while appends go on; and with damage in records
//! the category does not hold, which a filtered read still reports where
//! it lies (a window is listed only once all of its batches passed their
//! checks).
#![cfg(feature = "sim")]

mod sim_support;

use std::sync::OnceLock;

use annal::io::sim::{SimFs, SimImage};
use annal::{
    Durability, Error, EventData, ExpectedVersion, Options, ReadAll, StartFrom, Store, StreamAppend, SubscriptionFilter,
};
use sim_support::{deliveries_before_damage, dir, flip_payload, open_without_id_window, same};

const EVENTS: u64 = 200_000;

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(1 << 20)
}

/// Events are appended in blocks of twenty positions, one append each.
const BLOCK: u64 = 20;

/// The block of `position`, counted from 0.
fn block(position: u64) -> u64 {
    (position - 1) / BLOCK
}

/// One block in seven is of category `A`: twenty events of one of its
/// three streams. The others are of `B`, twenty of its 5,000 streams each.
fn category(position: u64) -> &'static str {
    if block(position).is_multiple_of(7) { "A" } else { "B" }
}

/// The stream of the event at `position`.
fn stream(position: u64) -> String {
    match category(position) {
        "A" => format!("A-{}", block(position) % 3),
        _ => format!("B-{}", position % 5000),
    }
}

fn event_type(position: u64) -> &'static str {
    if position.is_multiple_of(2) { "T0" } else { "T1" }
}

/// A closed store of [`EVENTS`] events, the event at position `p` in
/// [`stream`]`(p)` with type [`event_type`]`(p)` and the data
/// `payload-NNNNNN` (`p`).
fn image() -> &'static SimImage {
    static IMAGE: OnceLock<SimImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let fs = SimFs::new(7);
        let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
        append_blocks(&store, 1..=EVENTS);
        store.close().unwrap();
        fs.durable_image()
    })
}

/// Appends the events at `positions` (whole blocks), a block at a time.
fn append_blocks(store: &Store<SimFs>, positions: std::ops::RangeInclusive<u64>) {
    let event = |p: u64| EventData::new(event_type(p), format!("payload-{p:06}"));
    for first in positions.step_by(BLOCK as usize) {
        let block = first..first + BLOCK;
        let appends: Vec<StreamAppend> = if category(first) == "A" {
            vec![StreamAppend::new(stream(first), ExpectedVersion::Any, block.map(event))]
        } else {
            block
                .map(|p| StreamAppend::new(stream(p), ExpectedVersion::Any, [event(p)]))
                .collect()
        };
        store.append_multi(&appends).unwrap();
    }
}

fn open(image: &SimImage) -> Store<SimFs> {
    Store::open_with(SimFs::from_image(image, 3), dir(), options()).unwrap()
}

/// Positions after `after` up to `last` of `cat`, of type `ty` when given.
fn want(cat: &str, ty: Option<&str>, after: u64, last: u64) -> Vec<u64> {
    (after + 1..=last)
        .filter(|&p| category(p) == cat && ty.is_none_or(|t| event_type(p) == t))
        .collect()
}

/// Everything a subscription delivers until it has nothing more.
fn drain(store: &Store<SimFs>, filter: SubscriptionFilter, from: StartFrom) -> Vec<u64> {
    let mut sub = store.subscribe(filter, from).unwrap();
    let mut got = Vec::new();
    while let Some(e) = sub.try_recv().unwrap() {
        got.push(e.position());
    }
    assert_eq!(sub.position(), EVENTS, "position after catching up");
    got
}

const STARTS: [u64; 10] = [0, 1, 65_535, 65_536, 65_537, 80_000, 131_072, 150_001, 199_990, EVENTS];

#[test]
fn subscriptions_deliver_what_a_filter_over_every_event_keeps() {
    let store = open(image());
    for start in STARTS {
        let from = StartFrom::After(start);
        for (cat, ty) in [("A", None), ("A", Some("T1")), ("B", None), ("B", Some("T0"))] {
            let mut filter = SubscriptionFilter::category(cat);
            if let Some(t) = ty {
                filter = filter.event_type(t);
            }
            let got = drain(&store, filter, from);
            same(
                &got,
                &want(cat, ty, start, EVENTS),
                &format!("{cat} {ty:?} after {start}"),
            );
        }
        let got = drain(&store, SubscriptionFilter::category("C"), from);
        assert!(got.is_empty());
    }
}

#[test]
fn reads_return_what_a_filter_over_every_event_keeps() {
    let store = open(image());
    for start in STARTS {
        for cat in ["A", "B", "C"] {
            let all: Vec<u64> = store
                .read_all(ReadAll::forward().from_position(start).category(cat))
                .unwrap()
                .map(|e| e.unwrap().position())
                .collect();
            same(
                &all,
                &want(cat, None, start, EVENTS),
                &format!("read_all {cat} after {start}"),
            );
            let typed: Vec<u64> = store
                .read_all(ReadAll::forward().from_position(start).category(cat).event_type("T1"))
                .unwrap()
                .map(|e| e.unwrap().position())
                .collect();
            same(
                &typed,
                &want(cat, Some("T1"), start, EVENTS),
                &format!("typed {cat} after {start}"),
            );
            let listed: Vec<u64> = store
                .read_category(cat, start, None)
                .unwrap()
                .map(|e| e.unwrap().position())
                .collect();
            same(
                &listed,
                &want(cat, None, start, EVENTS),
                &format!("read_category {cat} after {start}"),
            );
            // Up to 4,096 a merge of the streams, past it windows.
            for limit in [1, 100, 4_096, 4_097, 9_000, 20_000] {
                let limited: Vec<u64> = store
                    .read_category(cat, start, Some(limit))
                    .unwrap()
                    .map(|e| e.unwrap().position())
                    .collect();
                let mut expected = want(cat, None, start, EVENTS);
                expected.truncate(limit);
                same(
                    &limited,
                    &expected,
                    &format!("read_category {cat} after {start}, limit {limit}"),
                );
                let limited: Vec<u64> = store
                    .read_all(ReadAll::forward().from_position(start).category(cat).limit(limit))
                    .unwrap()
                    .map(|e| e.unwrap().position())
                    .collect();
                same(
                    &limited,
                    &expected,
                    &format!("read_all {cat} after {start}, limit {limit}"),
                );
            }
        }
    }
}

/// Positions before `before` (all when `None`) of `cat`, of type `ty`
/// when given, newest first: what a backward read returns.
fn want_backward(cat: &str, ty: Option<&str>, before: Option<u64>) -> Vec<u64> {
    let last = before.map_or(EVENTS, |b| b.saturating_sub(1).min(EVENTS));
    let mut want = want(cat, ty, 0, last);
    want.reverse();
    want
}

/// Backward reads filtered by category list their windows from the index
/// too (going down from their start), and a read with a limit scans its
/// first positions before it lists: the same events, newest first, as a
/// filter over every event, from the end and from starts at and around
/// the windows' edges, with a type filter and with limits.
#[test]
fn backward_reads_return_what_a_filter_over_every_event_keeps() {
    let store = open(image());
    let starts = STARTS
        .iter()
        .map(|&s| Some(s))
        .chain([None, Some(EVENTS - 65_536), Some(EVENTS + 5)]);
    for start in starts {
        let read = |options: ReadAll| -> Vec<u64> {
            let options = match start {
                Some(p) => options.from_position(p),
                None => options,
            };
            store
                .read_all(options)
                .unwrap()
                .map(|e| e.unwrap().position())
                .collect()
        };
        for cat in ["A", "B", "C"] {
            let all = read(ReadAll::backward().category(cat));
            same(
                &all,
                &want_backward(cat, None, start),
                &format!("backward {cat} before {start:?}"),
            );
            let typed = read(ReadAll::backward().category(cat).event_type("T0"));
            same(
                &typed,
                &want_backward(cat, Some("T0"), start),
                &format!("backward typed {cat} before {start:?}"),
            );
            for limit in [1, 47, 48, 49, 9_000, 20_000] {
                let limited = read(ReadAll::backward().category(cat).limit(limit));
                let mut expected = want_backward(cat, None, start);
                expected.truncate(limit);
                same(
                    &limited,
                    &expected,
                    &format!("backward {cat} before {start:?}, limit {limit}"),
                );
            }
        }
    }
}

/// A read made before more appends sees the category as it was; a
/// subscription catching up across windows while appends go on delivers
/// every event of its category once, in order, then the new ones live.
#[test]
fn appends_during_a_catch_up_are_delivered_once() {
    let store = open(image());
    let before = store.read_category("A", 0, None).unwrap();
    let mut sub = store.subscribe_category("A", StartFrom::Start).unwrap();
    let more = 30_000;
    let mut got = Vec::new();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| append_blocks(&store, EVENTS + 1..=EVENTS + more));
        while got.len() < want("A", None, 0, EVENTS + more).len() {
            match sub.recv_timeout(std::time::Duration::from_secs(30)).unwrap() {
                Some(e) => got.push(e.position()),
                None => panic!("nothing for 30 s after {:?}", got.last()),
            }
        }
        writer.join().unwrap();
    });
    same(&got, &want("A", None, 0, EVENTS + more), "positions");
    let before: Vec<u64> = before.map(|e| e.unwrap().position()).collect();
    same(&before, &want("A", None, 0, EVENTS), "positions");
}

/// The position of the first event after `at` in category `cat`.
fn first_of(cat: &str, at: u64) -> u64 {
    (at..).find(|&p| category(p) == cat).unwrap()
}

/// The first and last positions of the block (the batch) of `position`.
fn block_ends(position: u64) -> (u64, u64) {
    let first = block(position) * BLOCK + 1;
    (first, first + BLOCK - 1)
}

/// Damage in a `B` batch (in the first window, the second, the last): a
/// subscription to `A` delivers `A`'s events before it, then reports it
/// every time it is asked, staying before it; a filtered read returns the
/// events before it, then the error; a category read, which reads `A`'s
/// records only, reads them all. Started past the damage, in the same
/// segment (whose watermark the damage stopped), both deliver everything
/// after the start.
#[test]
fn damage_a_category_does_not_hold_is_reported_by_filtered_reads() {
    for at in [
        first_of("B", 100_000),
        first_of("B", 65_537),
        first_of("B", EVENTS - 50),
    ] {
        let (first, last) = block_ends(at);
        let mut damaged = image().clone();
        flip_payload(&mut damaged, at);
        let store = open_without_id_window(&damaged, options()).expect("damage found at open");
        let mut sub = store.subscribe_category("A", StartFrom::Start).unwrap();
        let got = deliveries_before_damage(&mut sub, 3, first, &format!("damage at {at}"));
        same(&got, &want("A", None, 0, at - 1), &format!("damage at {at}"));

        let mut read = store.read_all(ReadAll::forward().category("A"));
        let read: Vec<_> = read.as_mut().unwrap().collect();
        let (ok, err): (Vec<_>, Vec<_>) = read.into_iter().partition(Result::is_ok);
        assert_eq!(err.len(), 1, "read_all category A, damage at {at}");
        let ok: Vec<u64> = ok.into_iter().map(|e| e.unwrap().position()).collect();
        same(
            &ok,
            &want("A", None, 0, at - 1),
            &format!("read_all category A, damage at {at}"),
        );

        let listed: Vec<u64> = store
            .read_category("A", 0, None)
            .unwrap()
            .map(|e| e.unwrap().position())
            .collect();
        same(
            &listed,
            &want("A", None, 0, EVENTS),
            &format!("read_category A, damage at {at}"),
        );

        // Backward, with and without a limit past the damage: the events
        // after it, newest first, then the error.
        for limit in [None, Some(usize::MAX)] {
            let mut options = ReadAll::backward().category("A");
            if let Some(limit) = limit {
                options = options.limit(limit);
            }
            let mut read = store.read_all(options).unwrap();
            let ok: Vec<u64> = read.by_ref().map_while(Result::ok).map(|e| e.position()).collect();
            let mut after = want("A", None, at, EVENTS);
            after.reverse();
            same(&ok, &after, &format!("backward read_all category A, damage at {at}"));
            assert!(read.next().is_none(), "a read goes on after its error");
        }
        let mut read = store.read_all(ReadAll::backward().category("A")).unwrap();
        assert!(
            read.any(|e| matches!(e, Err(Error::Corruption { .. }))),
            "backward read_all category A hides the damage at {at}"
        );

        let start = last;
        let got = drain(&store, SubscriptionFilter::category("A"), StartFrom::After(start));
        same(
            &got,
            &want("A", None, start, EVENTS),
            &format!("after the damage at {at}"),
        );
        let all: Vec<u64> = store
            .read_all(ReadAll::forward().from_position(start).category("A"))
            .unwrap()
            .map(|e| e.unwrap().position())
            .collect();
        same(
            &all,
            &want("A", None, start, EVENTS),
            &format!("read_all after the damage at {at}"),
        );
    }
}

/// Damage in one of the category's own records: every read of the
/// category stops there with the error, after the events before it.
#[test]
fn damage_in_the_category_stops_its_reads_there() {
    // The fifth event of the first `A` block after 120,000.
    let first = first_of("A", 120_001);
    assert_eq!(block_ends(first).0, first);
    let at = first + 5;
    let mut damaged = image().clone();
    flip_payload(&mut damaged, at);
    let store = open_without_id_window(&damaged, options()).expect("damage found at open");
    let mut sub = store.subscribe_category("A", StartFrom::After(1_000)).unwrap();
    let mut got = Vec::new();
    loop {
        match sub.try_recv() {
            Ok(Some(e)) => got.push(e.position()),
            Ok(None) => panic!("damage at {at} hidden"),
            Err(Error::Corruption { .. }) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    same(&got, &want("A", None, 1_000, first - 1), "positions");
    assert!(sub.position() < first);
    assert!(matches!(sub.try_recv(), Err(Error::Corruption { .. })));
    for mut read in [
        store.read_category("A", 0, None).unwrap(),
        store.read_all(ReadAll::forward().category("A")).unwrap(),
    ] {
        let ok: Vec<u64> = read.by_ref().map_while(Result::ok).map(|e| e.position()).collect();
        same(&ok, &want("A", None, 0, first - 1), "positions");
        assert!(read.next().is_none(), "a read goes on after its error");
    }
    for limit in [None, Some(100_000)] {
        let mut options = ReadAll::backward().category("A");
        if let Some(limit) = limit {
            options = options.limit(limit);
        }
        let mut read = store.read_all(options).unwrap();
        let ok: Vec<u64> = read.by_ref().map_while(Result::ok).map(|e| e.position()).collect();
        // The damaged batch is reported whole: its events after the
        // damaged one are not returned either.
        let mut after = want("A", None, block_ends(at).1, EVENTS);
        after.reverse();
        same(&ok, &after, "positions, backward");
        assert!(read.next().is_none(), "a read goes on after its error");
    }
}
