//! An outside review of backward and limited category-filtered global
//! reads (`read/category.rs`, `window_below`; the probe a limited read
//! scans before it lists): checked against a model over a log of several
//! windows and many small segments, for categories of no stream, one,
//! few (one of them a stream named as the category) and thousands, with
//! batches mixing categories; from starts placed so that the probe's edge
//! and the windows' edges fall on the category's own events; with type
//! and prefix filters, limits around the probe's count, `limit(0)` and
//! `limit(usize::MAX)`; starts 0, 1, past the end and `u64::MAX`; on a
//! read-only open and after a crash that replays the tail; while appends
//! race a read (snapshots); and with damage in the probe range, at the
//! windows' edges and at segment edges, in other categories' batches and
//! the category's own: a backward or limited read returns what a plain
//! scan returns before the damage, then the error, then nothing.
#![cfg(feature = "sim")]

mod category_model;
mod common;
mod sim_support;

use std::sync::OnceLock;

use annal::io::sim::{SimFs, SimImage};
use annal::{Durability, Error, Options, ReadAll, Store, category_of};
use category_model::{Filt, Model, NONE, append_batch};
use common::rng::Rng;
use sim_support::{dir, flip_payload, open_without_id_window, same};

/// Events in the base image.
const EVENTS: u64 = 180_000;

/// Positions of log a listing costs per stream (`SPAN_PER_STREAM`): the
/// probe a limited read scans first is this many per stream.
const PER_STREAM: u64 = 16;

/// A window's smallest span (`SPAN_MIN`).
const SPAN_MIN: u64 = 65_536;

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(128 * 1024)
}

const TYPES: [&str; 3] = ["T0", "T1", "T2"];

/// The next batch: `A` (streams `A-0`..`A-2` and `A`), `AB-1` (another
/// category sharing a prefix), `S-1` (one stream, rare), `F` (40
/// streams, `more` more when given), batches mixing `A`, `B`, `F` and
/// `S`, and filler of `B` (5,000 streams).
fn next_batch(rng: &mut Rng, more: u64) -> Vec<(String, &'static str)> {
    let ty = |rng: &mut Rng| TYPES[rng.below(3) as usize];
    let roll = rng.below(100);
    let mut out = Vec::new();
    if roll < 14 {
        let s = ["A-0", "A-1", "A-2", "A"][rng.below(4) as usize].to_string();
        for _ in 0..1 + rng.below(30) {
            out.push((s.clone(), ty(rng)));
        }
    } else if roll < 15 {
        out.push(("AB-1".to_string(), ty(rng)));
    } else if roll < 16 {
        out.push(("S-1".to_string(), ty(rng)));
    } else if roll < 22 {
        let s = format!("F-{}", rng.below(40 + more));
        for _ in 0..1 + rng.below(5) {
            out.push((s.clone(), ty(rng)));
        }
    } else if roll < 26 {
        out.push((format!("A-{}", rng.below(3)), ty(rng)));
        out.push((format!("B-{}", rng.below(5000)), ty(rng)));
        out.push((format!("F-{}", rng.below(40)), ty(rng)));
        if rng.below(2) == 0 {
            out.push(("S-1".to_string(), ty(rng)));
        }
        out.push(("A".to_string(), ty(rng)));
    } else {
        let base = rng.below(5000);
        for i in 0..1 + rng.below(24) {
            out.push((format!("B-{}", (base + i) % 5000), ty(rng)));
        }
    }
    out
}

fn append_until(store: &Store<SimFs>, model: &mut Model, rng: &mut Rng, until: u64, more: u64) {
    while model.head() < until {
        let batch = next_batch(rng, more);
        append_batch(store, model, &batch);
    }
}

/// The base image (a closed store) and its model.
fn base() -> &'static (SimImage, Model) {
    static BASE: OnceLock<(SimImage, Model)> = OnceLock::new();
    BASE.get_or_init(|| {
        let fs = SimFs::new(31);
        let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
        let mut model = Model::default();
        let mut rng = Rng::new(0x00c0_ffee_0bad_cafe);
        // The category's event at position 1, the last a backward read
        // lists, in a batch mixing categories.
        let first: Vec<(String, &'static str)> = ["A-0", "F-1", "S-1", "B-1"]
            .iter()
            .map(|s| (s.to_string(), "T0"))
            .collect();
        append_batch(&store, &mut model, &first);
        append_until(&store, &mut model, &mut rng, EVENTS, 0);
        assert_eq!(store.last_position(), model.head());
        store.close().unwrap();
        (fs.durable_image(), model)
    })
}

fn open(image: &SimImage, options: Options) -> Store<SimFs> {
    Store::open_with(SimFs::from_image(image, 5), dir(), options).unwrap()
}

/// What a read returned: its events' positions up to its first error,
/// whether it ended with one, after which it must yield nothing.
fn run(store: &Store<SimFs>, options: ReadAll, what: &str) -> (Vec<u64>, bool) {
    let mut read = store.read_all(options).unwrap();
    let mut got = Vec::new();
    for e in read.by_ref() {
        match e {
            Ok(e) => got.push(e.position()),
            Err(Error::Corruption { .. }) => {
                assert!(read.next().is_none(), "{what}: the read goes on after its error");
                return (got, true);
            }
            Err(other) => panic!("{what}: {other:?}"),
        }
    }
    (got, false)
}

/// A backward read's options: category, filters, start, limit.
fn backward(category: &str, f: &Filt, start: Option<u64>, limit: Option<usize>) -> ReadAll {
    filtered(ReadAll::backward(), category, f, start, limit)
}

fn filtered(mut options: ReadAll, category: &str, f: &Filt, start: Option<u64>, limit: Option<usize>) -> ReadAll {
    options = options.category(category);
    for t in f.types {
        options = options.event_type(*t);
    }
    if let Some(prefix) = f.prefix {
        options = options.stream_prefix(prefix);
    }
    if let Some(start) = start {
        options = options.from_position(start);
    }
    if let Some(limit) = limit {
        options = options.limit(limit);
    }
    options
}

/// The first position a backward read from `start` reads.
fn first_down(start: Option<u64>, head: u64) -> u64 {
    start.map_or(head, |p| p.saturating_sub(1).min(head))
}

/// Starts for `category`: fixed ones, and ones placing the probe's edge
/// (16 positions per stream below the first read) and the first window's
/// lower edge (at least 65,536 below) on, just above and just below some
/// of the category's own events.
fn starts(model: &Model, category: &str, rng: &mut Rng) -> Vec<Option<u64>> {
    let head = model.head();
    let mut s: Vec<Option<u64>> = [
        None,
        Some(0),
        Some(1),
        Some(2),
        Some(3),
        Some(SPAN_MIN),
        Some(SPAN_MIN + 1),
        Some(SPAN_MIN + 2),
        Some(2 * SPAN_MIN + 1),
        Some(head - 1),
        Some(head),
        Some(head + 1),
        Some(u64::MAX),
    ]
    .into();
    let probe = model.streams(category) * PER_STREAM;
    if let Some(ps) = model.by_category.get(category) {
        for _ in 0..3 {
            let q = ps[rng.below(ps.len() as u64) as usize];
            // A read from `p` reads first `p - 1`; its probe ends at
            // `p - 1 - probe` (excluded), its first window without a
            // probe at `p - 1 - span`.
            for edge in [probe.max(1), SPAN_MIN.max(probe)] {
                for d in [0u64, 1, 2] {
                    let p = q + edge + d;
                    if p <= head + 1 {
                        s.push(Some(p));
                    }
                }
            }
        }
    }
    s
}

/// Checks backward reads (and forward limited ones) of every category
/// from every start against the model.
fn check_reads(store: &Store<SimFs>, model: &Model, seed: u64) {
    let head = model.head();
    assert_eq!(store.last_position(), head);
    let mut rng = Rng::new(seed);
    for category in ["A", "AB", "B", "S", "F", "Z"] {
        let probe = model.streams(category) * PER_STREAM;
        let prefix_dash = format!("{category}-");
        let filters = [
            NONE,
            Filt {
                types: &["T0", "T2"],
                prefix: None,
            },
            Filt {
                types: &[],
                prefix: Some(&prefix_dash),
            },
            Filt {
                types: &["T1"],
                prefix: Some(category),
            },
        ];
        for start in starts(model, category, &mut rng) {
            let next = first_down(start, head);
            for f in &filters {
                let want = model.want_down(category, f, 0, next);
                // Matches in the probe: limits around them end the read
                // at its probe's edge.
                let k = model.want(category, f, next.saturating_sub(probe), next).len();
                let mut limits = vec![None, Some(0), Some(1), Some(k), Some(k + 1), Some(usize::MAX)];
                if k > 0 {
                    limits.push(Some(k - 1));
                }
                if f.types.is_empty() && f.prefix.is_none() {
                    limits.extend([Some(20), Some(k + 2), Some(want.len()), Some(want.len() + 1)]);
                }
                for limit in limits {
                    let what = format!("backward {category} {f:?} from {start:?} limit {limit:?}");
                    let (got, failed) = run(store, backward(category, f, start, limit), &what);
                    assert!(!failed, "{what}: an error");
                    same(&got, &want[..want.len().min(limit.unwrap_or(usize::MAX))], &what);
                }
            }
            // Forward with limits around the probe's edge, from the same
            // start (forward: after it).
            let after = start.unwrap_or(0).min(head);
            let want = model.want(category, &NONE, after, head);
            let k = model.want(category, &NONE, after, after.saturating_add(probe)).len();
            for limit in [k.saturating_sub(1), k, k + 1, usize::MAX] {
                let what = format!("forward {category} after {start:?} limit {limit}");
                let options = filtered(ReadAll::forward(), category, &NONE, start, Some(limit));
                let (got, failed) = run(store, options, &what);
                assert!(!failed, "{what}: an error");
                same(&got, &want[..want.len().min(limit)], &what);
            }
        }
    }
}

#[test]
fn backward_and_limited_reads_match_the_model() {
    let (image, model) = base();
    assert_eq!(model.streams("A"), 4);
    assert_eq!(model.streams("S"), 1);
    assert_eq!(model.streams("F"), 40);
    assert!(model.streams("B") > 4_900);
    let store = open(image, options());
    check_reads(&store, model, 1);
}

/// The windows a backward read of `category` from `next` lists (after a
/// probe of `probe` positions), replaying the span rule: their lower
/// edges, highest first.
fn window_lows(model: &Model, category: &str, next: u64, probe: u64) -> Vec<u64> {
    let streams = model.streams(category);
    let mut lows = Vec::new();
    let mut span: Option<u64> = None;
    let mut high = next - probe;
    while high > 0 {
        let s = span.unwrap_or(streams * PER_STREAM).clamp(SPAN_MIN, 1 << 20);
        let low = high.saturating_sub(s);
        let listed = model.want(category, &NONE, low, high).len() as u64;
        span = Some(s * (1 << 16) / listed.max(1));
        lows.push(low);
        high = low;
    }
    lows
}

/// Read-only, and reopened after more appends (new streams of `F` and
/// `A`'s stream `A`) and a crash whose tail the open replays.
#[test]
fn read_only_and_replayed_tail_match_the_model() {
    let (image, model) = base();
    let store = open(image, options().with_read_only(true));
    check_reads(&store, model, 2);
    drop(store);
    let fs = SimFs::from_image(image, 9);
    let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
    let mut model = model.clone();
    let mut rng = Rng::new(0x7777_1111_2222_3333);
    append_until(&store, &mut model, &mut rng, EVENTS + 25_000, 60);
    let crashed = fs.durable_image();
    drop(store);
    let store = open(&crashed, options());
    let head = store.last_position();
    assert!(head > EVENTS + 15_000, "the crash took {} events", model.head() - head);
    assert!(model.batches.iter().any(|&(_, last)| last == head));
    model.truncate(head);
    assert!(model.streams("F") > 40);
    check_reads(&store, &model, 3);
}

/// `limit(0)` returns nothing and `limit(usize::MAX)` everything, either
/// way; a backward read's windows' edges (replayed from the span rule)
/// fall where the model says, and a start at each edge reads the same.
#[test]
fn limits_zero_and_max_and_window_edges() {
    let (image, model) = base();
    let store = open(image, options());
    let head = model.head();
    for category in ["A", "F", "S", "B"] {
        for options in [ReadAll::backward(), ReadAll::forward()] {
            let (got, _) = run(&store, options.clone().category(category).limit(0), "limit 0");
            assert!(got.is_empty());
        }
        let lows = window_lows(model, category, head, 0);
        assert!(category == "B" || lows.len() >= 2, "{category}: windows {lows:?}");
        for &low in &lows {
            for p in [low, low + 1, low + 2] {
                if p == 0 {
                    continue;
                }
                let want = model.want_down(category, &NONE, 0, p.saturating_sub(1));
                for limit in [None, Some(usize::MAX), Some(want.len() / 2)] {
                    let what = format!("{category} before {p}, limit {limit:?}");
                    let (got, failed) = run(&store, backward(category, &NONE, Some(p), limit), &what);
                    assert!(!failed);
                    same(&got, &want[..want.len().min(limit.unwrap_or(usize::MAX))], &what);
                }
            }
        }
    }
}

/// A read made before appends is a snapshot: backward and limited reads
/// return the log as it was when they were made, however far they had
/// gone when the appends came (new streams of the category included);
/// reads made while a writer appends are a snapshot of some moment
/// between their call's start and end.
#[test]
fn appends_racing_backward_reads() {
    let (image, model) = base();
    let store = open(image, options());
    let head = model.head();
    let cases: Vec<(&str, Option<u64>, Option<usize>)> = vec![
        ("A", None, None),
        ("A", None, Some(500)),
        ("A", Some(head / 2), None),
        ("F", None, Some(100_000)),
        ("S", None, Some(3)),
        ("B", None, None),
    ];
    let mut reads: Vec<_> = cases
        .iter()
        .map(|&(c, s, l)| {
            let mut read = store.read_all(backward(c, &NONE, s, l)).unwrap();
            // One taken before the appends, the rest after.
            let first = read.next().map(|e| e.unwrap().position());
            (read, first)
        })
        .collect();
    let mut model2 = model.clone();
    let mut snapshots = Vec::new();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut rng = Rng::new(0x4444_5555_6666_7777);
            append_until(&store, &mut model2, &mut rng, EVENTS + 30_000, 100);
        });
        while !writer.is_finished() {
            let before = store.last_position();
            let a = run(&store, ReadAll::backward().category("F").limit(400), "racing F").0;
            let all = run(&store, ReadAll::backward().category("A"), "racing A").0;
            let after = store.last_position();
            snapshots.push((before, after, a, all));
        }
        writer.join().unwrap();
    });
    for ((read, first), &(c, s, l)) in reads.iter_mut().zip(&cases) {
        let mut got: Vec<u64> = first.iter().copied().collect();
        got.extend(read.map(|e| e.unwrap().position()));
        let want = model.want_down(c, &NONE, 0, first_down(s, head));
        same(
            &got,
            &want[..want.len().min(l.unwrap_or(usize::MAX))],
            &format!("{c} from {s:?} limit {l:?}"),
        );
    }
    assert!(!snapshots.is_empty());
    for (before, after, f, a) in &snapshots {
        for (got, category, limit) in [(f, "F", 400usize), (a, "A", usize::MAX)] {
            // Newest first: the read as of a moment in `before..=after`
            // is the category's events up to then, so it is the tail of
            // the events up to `after` holding those up to `before`.
            let up_to_after = model2.want_down(category, &NONE, 0, *after);
            let up_to_before = model2.want_down(category, &NONE, 0, *before);
            let skipped = up_to_after.len() - up_to_before.len();
            let ok = (0..=skipped).any(|i| {
                let tail = &up_to_after[i..];
                got[..] == tail[..tail.len().min(limit)]
            });
            assert!(
                ok,
                "{category}: a read made between {before} and {after} is no snapshot"
            );
        }
    }
}

/// What a plain scan down from `next` returns with the batch `(first,
/// last)` damaged: the matches above the batch, newest first, then the
/// error when the limit is not reached before it (none when the read
/// starts below the batch).
fn expected_with_damage(
    model: &Model,
    category: &str,
    f: &Filt,
    next: u64,
    limit: usize,
    (first, last): (u64, u64),
) -> (Vec<u64>, bool) {
    if next < first {
        let want = model.want_down(category, f, 0, next);
        return (want[..want.len().min(limit)].to_vec(), false);
    }
    let above = model.want_down(category, f, last.min(next), next);
    if above.len() >= limit {
        (above[..limit].to_vec(), false)
    } else {
        (above, true)
    }
}

/// Damage at `at`: backward reads of `category` from each of `starts`,
/// with and without limits and a type filter, and forward limited reads,
/// return what a plain scan does.
fn check_damage(image: &SimImage, model: &Model, at: u64, category: &str, starts: &[Option<u64>]) {
    let batch = model.batch_of(at);
    let mut damaged = image.clone();
    flip_payload(&mut damaged, at);
    let Some(store) = open_without_id_window(&damaged, options()) else {
        return;
    };
    let head = model.head();
    let own = model.holds(batch, category);
    let probe = model.streams(category) * PER_STREAM;
    for &start in starts {
        let next = first_down(start, head);
        for f in [
            NONE,
            Filt {
                types: &["T1"],
                prefix: None,
            },
        ] {
            let (above, _) = expected_with_damage(model, category, &f, next, usize::MAX, batch);
            let k = model.want(category, &f, next.saturating_sub(probe), next).len();
            for limit in [
                None,
                Some(usize::MAX),
                Some(1),
                Some(k),
                Some(k + 1),
                Some(above.len()),
                Some(above.len() + 1),
            ] {
                let what = format!(
                    "backward {category} {f:?} from {start:?} limit {limit:?}, damage at {at} (batch {batch:?}, own {own})"
                );
                let want = expected_with_damage(model, category, &f, next, limit.unwrap_or(usize::MAX), batch);
                let (got, failed) = run(&store, backward(category, &f, start, limit), &what);
                same(&got, &want.0, &what);
                assert_eq!(failed, want.1, "{what}: error");
            }
        }
        // Forward from the same start (after it), limited: the matches
        // before the batch, then the error.
        let after = start.unwrap_or(0).min(head);
        let all = model.want(category, &NONE, after, head);
        let before = model.want(category, &NONE, after, batch.0 - 1);
        for limit in [before.len(), before.len() + 1, usize::MAX] {
            let what = format!("forward {category} after {after} limit {limit}, damage at {at}");
            let (got, failed) = run(
                &store,
                filtered(ReadAll::forward(), category, &NONE, Some(after), Some(limit)),
                &what,
            );
            let (want, fails) = if batch.1 <= after {
                (all[..all.len().min(limit)].to_vec(), false)
            } else if limit <= before.len() {
                (before[..limit].to_vec(), false)
            } else {
                (before.clone(), true)
            };
            same(&got, &want, &what);
            assert_eq!(failed, fails, "{what}: error");
        }
    }
}

/// The nearest position at or below `p` (`down`) or at or above it whose
/// batch holds no event of `category` (`other`), or of the category's
/// own events (not `other`).
fn find(model: &Model, category: &str, p: u64, down: bool, other: bool) -> Option<u64> {
    let ok = |q: u64| {
        let own = category_of(model.stream(q)) == category;
        if other {
            !model.holds(model.batch_of(q), category)
        } else {
            own
        }
    };
    if down {
        (1..=p).rev().find(|&q| ok(q))
    } else {
        (p.max(1)..=model.head()).find(|&q| ok(q))
    }
}

/// Damage in the probe range of a limited read from the end, and at the
/// edges of the probe and the first windows below, in other categories'
/// batches and the category's own.
#[test]
fn damage_in_the_probe_and_at_window_edges() {
    let (image, model) = base();
    let head = model.head();
    let mut cases = Vec::new();
    for (category, start) in [("A", None), ("F", Some(150_001)), ("S", None)] {
        let next = first_down(start, head);
        let probe = model.streams(category) * PER_STREAM;
        let lows = window_lows(model, category, next, 0);
        let limited_lows = window_lows(model, category, next, probe);
        let mut edges = vec![next - probe / 2, next - probe, next - probe + 1];
        edges.extend(lows.iter().take(2).flat_map(|&l| [l, l + 1]));
        edges.extend(limited_lows.iter().take(1).flat_map(|&l| [l, l + 1]));
        for edge in edges {
            for (down, other) in [(true, true), (false, true), (true, false)] {
                if let Some(at) = find(model, category, edge, down, other) {
                    cases.push((category, start, at));
                }
            }
        }
    }
    cases.sort_unstable();
    cases.dedup();
    for (category, start, at) in cases {
        let next = first_down(start, head);
        let starts = [start, Some(next - 100), Some(at + 1), Some(at), Some(u64::MAX)];
        check_damage(image, model, at, category, &starts);
    }
    // A category of thousands of streams: its probe (80,000 positions)
    // is wider than a first window.
    let probe = model.streams("B") * PER_STREAM;
    for edge in [head - probe / 2, head - probe, head - probe + 1] {
        for (down, other) in [(true, true), (false, true)] {
            if let Some(at) = find(model, "B", edge, down, other) {
                check_damage(image, model, at, "B", &[None, Some(at + 1)]);
            }
        }
    }
}

/// The first position of each segment, from the files' contents (the
/// first payload in each).
fn segment_starts(image: &SimImage) -> Vec<u64> {
    let mut segments: Vec<_> = image
        .files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort_by(|a, b| a.0.cmp(b.0));
    let needle = b"payload-";
    segments
        .iter()
        .filter_map(|(_, bytes)| {
            let at = bytes.windows(needle.len()).position(|w| w == needle)?;
            std::str::from_utf8(&bytes[at + needle.len()..at + needle.len() + 6])
                .ok()?
                .parse()
                .ok()
        })
        .collect()
}

/// Damage in the first and the last batch of segments (many small ones),
/// for backward reads from above and limited reads.
#[test]
fn damage_at_segment_edges() {
    let (image, model) = base();
    let firsts = segment_starts(image);
    assert!(firsts.len() > 50, "{} segments", firsts.len());
    assert!(firsts.windows(2).all(|w| w[0] < w[1]));
    for &seg_first in [firsts[5], firsts[firsts.len() / 2], firsts[firsts.len() - 3]].iter() {
        for (category, at) in [
            ("A", seg_first),
            ("A", seg_first - 1),
            ("F", seg_first),
            ("F", seg_first - 1),
        ] {
            let head = model.head();
            let starts = [None, Some(at + 70_000), Some(at + 65), Some(at + 1), Some(at + 700)];
            let starts: Vec<_> = starts.into_iter().filter(|s| s.is_none_or(|p| p <= head + 1)).collect();
            check_damage(image, model, at, category, &starts);
        }
    }
}

/// Damage just below the lower edge of a backward read's first listed
/// window, in the same segment (whose watermark it stops), with one of
/// the category's own events at the window's lowest position: the window
/// is scanned instead of listed, down to that lowest position, then the
/// read reports the damage.
#[test]
fn damage_just_below_a_window_edge() {
    let (image, model) = base();
    let head = model.head();
    let firsts = segment_starts(image);
    let same_segment = |a: u64, b: u64| firsts.partition_point(|&f| f <= a) == firsts.partition_point(|&f| f <= b);
    for category in ["A", "F"] {
        let probe = model.streams(category) * PER_STREAM;
        let ps = &model.by_category[category];
        // Own events `q` after another category's batch, in one segment.
        let qs: Vec<u64> = ps
            .iter()
            .copied()
            .filter(|&q| q > 1 && q + SPAN_MIN + probe < head)
            .filter(|&q| {
                let below = model.batch_of(q - 1);
                !model.holds(below, category) && same_segment(below.0, q) && model.batch_of(q).0 == q
            })
            .step_by(97)
            .take(3)
            .collect();
        assert_eq!(qs.len(), 3, "{category}");
        for q in qs {
            // Unlimited from `q + SPAN_MIN`: the first window is `(q - 1,
            // q + SPAN_MIN - 1]`; limited, the probe first.
            let starts = [Some(q + SPAN_MIN), Some(q + SPAN_MIN + probe)];
            check_damage(image, model, q - 1, category, &starts);
        }
    }
}
