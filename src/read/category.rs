//! A category's positions, listed from the index a window of the log at a
//! time: what category reads walk, and what global reads and
//! subscriptions filtered by category walk instead of every record when
//! the category has few streams for the length of log to cover.
//!
//! A window is a range of global positions `(after, end]`. Its listing is
//! the positions of the category's streams in that range, each stream's
//! found by two binary searches in its position list, merged by a sort.
//! A scan of the same range looks at every record (about 20 ns each, warm),
//! a listing costs a few hundred nanoseconds per stream of the category:
//! so a filtered read lists when the range spans at least
//! [`SPAN_PER_STREAM`] positions per stream, and scans otherwise (a
//! subscription following new events one at a time always scans). A
//! backward read lists the same way, a window below its start at a time
//! ([`WindowAt::Below`]), and returns each newest first. A read with a limit
//! first scans as many positions as a listing would cost, since it may be
//! done before a listing would have paid (see [`worth_listing`]). A
//! category read with a small limit lists no window: it merges the
//! streams that can hold its positions ([`first_positions`]).
//!
//! A filtered scan checks every batch of its range, so damage in a record
//! its filter turns away is reported all the same (DESIGN.md, "The read
//! path"). A listed window keeps that promise: before a filtered read
//! lists a window, every batch holding one of the window's positions must
//! lie below its segment's verification watermark, which the check moves
//! on as a first scan would. A window where that fails (damage, or a
//! segment's watermark stopped by damage before it) is scanned instead,
//! and the scan reports the damage where it lies, after the matches
//! before it. A category read (`Store::read_category`) reads its own
//! events only and lists without this check.

use std::sync::Arc;

use crate::index::Location;
use crate::io::FileSystem;
use crate::log::view::SegmentView;
use crate::store::Core;

/// Streams whose positions a listing copies under one hold of the index
/// lock (appends wait for it to publish).
const SLICE_STREAMS: usize = 256;

/// Positions of the log per stream of the category from which listing a
/// range beats scanning it, and a first window's span per stream.
const SPAN_PER_STREAM: u64 = 16;

/// Fewest positions a window spans (fewer when the range is shorter).
const SPAN_MIN: u64 = 65_536;

/// Most positions a window spans: its list holds at most this many
/// positions (8 MiB).
const SPAN_MAX: u64 = 1 << 20;

/// How many positions a window aims to list (512 KiB): each later
/// window's span is set from the category's share of the window before (a
/// category of a tenth of the log is listed 655,360 positions of log at a
/// time), so that a sparse category is listed in few windows, each costing
/// two binary searches per stream, and no window's sort takes long.
const LISTED_TARGET: u64 = 1 << 16;

/// Most bytes of batches not checked yet that a subscription's window
/// check checks in one call (a few milliseconds): a window that needs more
/// is scanned a page meanwhile and checked further at the next call, so
/// that a receive with a timeout overruns it by little.
pub(crate) const CHECK_BYTES_PER_CALL: u64 = 8 << 20;

/// What a window gave. Its `end` is where the next window starts from:
/// going forward, the window's last position (the next window starts
/// after it); going backward, the position just before its first (the
/// next window ends there).
#[derive(Debug)]
pub(crate) enum Window {
    /// The category's positions in the window, ascending.
    Listed {
        /// The positions.
        positions: Vec<u64>,
        /// Where the next window starts from.
        end: u64,
        /// The span for the next window.
        next_span: u64,
    },
    /// A batch of the window failed its checks, or could not be checked:
    /// the window is to be scanned, and the scan reports it.
    Unchecked {
        /// Where the next window starts from.
        end: u64,
    },
}

/// Whether a filtered read of `(after, last]` lists `category`'s windows
/// rather than scanning the range: it spans at least [`SPAN_PER_STREAM`]
/// positions per stream of the category. If so, the span a listing can
/// cost as much as scanning: a read that wants only a few of the
/// category's events (a limit) scans this many positions first, and lists
/// the rest of its range only if it is not done by then, so that it never
/// takes much more than twice the cheaper way.
pub(crate) fn worth_listing<F: FileSystem>(core: &Core<F>, category: &str, after: u64, last: u64) -> Option<u64> {
    let streams = core.published.read().index.category_stream_count(category) as u64;
    let span = streams.saturating_mul(SPAN_PER_STREAM).max(1);
    (last.saturating_sub(after) >= span).then_some(span)
}

/// Where the next window lies.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WindowAt {
    /// Reading forward: after position `after`, ending at `last` at the
    /// latest (a published position: streams added to the category after
    /// it was published have only later positions).
    After {
        /// The window starts after this position.
        after: u64,
        /// The read's last position.
        last: u64,
    },
    /// Reading backward: ending at this (published) position.
    Below(u64),
}

/// The next window of `category` (see [`WindowAt`]), listed ascending. The
/// window spans `span` positions (the previous window's `next_span`), or,
/// for a first window (`None`), [`SPAN_PER_STREAM`] per stream of the
/// category and at least [`SPAN_MIN`]. With `check` (filtered reads), only
/// a window whose batches all passed their checks is listed, and at most
/// that many bytes of batches not checked yet are checked in this call
/// (see [`CHECK_BYTES_PER_CALL`]). `reuse` is a vector to list into.
pub(crate) fn next_window<F: FileSystem>(
    core: &Core<F>,
    category: &str,
    at: WindowAt,
    span: Option<u64>,
    check: Option<u64>,
    mut reuse: Vec<u64>,
) -> Window {
    let streams = core.published.read().index.category_stream_count(category);
    let span = window_span(streams, span);
    // The window `(after, end]`, and where the next one starts from.
    let (after, end, next) = match at {
        WindowAt::After { after, last } => {
            let end = last.min(after.saturating_add(span));
            (after, end, end)
        }
        WindowAt::Below(high) => {
            let low = high.saturating_sub(span);
            (low, high, low)
        }
    };
    if let Some(budget) = check
        && !batches_checked(core, after, end, budget)
    {
        return Window::Unchecked { end: next };
    }
    reuse.clear();
    for start in (0..streams).step_by(SLICE_STREAMS) {
        let published = core.published.read();
        for (_, entry) in published
            .index
            .category_streams_in(category, start..start + SLICE_STREAMS)
        {
            entry.extend_range(entry.count_up_to(after)..entry.count_up_to(end), &mut reuse);
        }
    }
    reuse.sort_unstable();
    // The category's share of this window sets the next one's span.
    let next_span = span.saturating_mul(LISTED_TARGET) / (reuse.len() as u64).max(1);
    Window::Listed {
        positions: reuse,
        end: next,
        next_span,
    }
}

/// A window's span: the one asked for, or a first window's.
fn window_span(streams: usize, span: Option<u64>) -> u64 {
    match span {
        // A later window's (at least `LISTED_TARGET`), or a limited
        // category read's first.
        Some(span) => span.clamp(1, SPAN_MAX),
        None => (streams as u64)
            .saturating_mul(SPAN_PER_STREAM)
            .clamp(SPAN_MIN, SPAN_MAX),
    }
}

/// Fewest positions a limited category read's first window spans.
const LIMITED_SPAN_MIN: u64 = 4_096;

/// The first window's span for a category read that wants only a few
/// events (a limit): [`SPAN_PER_STREAM`] per stream of the category, at
/// least [`LIMITED_SPAN_MIN`] rather than [`SPAN_MIN`]. Such a read
/// cannot scan first, as a filtered read does (it would check other
/// categories' records, which a category read does not read): a smaller
/// first window sorts fewer positions it would not return (an app paging
/// through a category of 1,000 streams 100 events at a time spent 150 µs
/// a page, most of it sorting a window of 6,500 positions).
pub(crate) fn limited_first_span<F: FileSystem>(core: &Core<F>, category: &str) -> u64 {
    let streams = core.published.read().index.category_stream_count(category) as u64;
    streams
        .saturating_mul(SPAN_PER_STREAM)
        .clamp(LIMITED_SPAN_MIN, SPAN_MAX)
}

/// Most events a category read with a limit finds by merging its streams
/// ([`first_positions`]) rather than listing windows: the merge holds the
/// index lock while it takes them, about 100 ns each.
pub(crate) const MERGE_LIMIT_MAX: usize = 4_096;

/// The first `limit` positions of `category` after `after`, up to `last`
/// (a published position), ascending: what a category read with a small
/// limit returns (an app paging through a category). One binary search
/// per stream finds each stream's first position after `after`, a slice
/// of streams per hold of the index lock; only the streams whose first
/// position is among the `limit` smallest can hold one of the `limit`
/// smallest positions, and a merge of those takes them. A window listing
/// would cost two binary searches per stream and a sort of every position
/// in the window, most of them past the limit. `None` if a stream seen in
/// the first step cannot be found again (streams are never removed, so it
/// does not happen; the caller then lists windows instead).
pub(crate) fn first_positions<F: FileSystem>(
    core: &Core<F>,
    category: &str,
    after: u64,
    last: u64,
    limit: usize,
) -> Option<Vec<u64>> {
    use std::cmp::Reverse;
    if limit == 0 || after >= last {
        return Some(Vec::new());
    }
    let streams = core.published.read().index.category_stream_count(category);
    // (first position after `after`, the stream's number in the category,
    // that position's index in the stream).
    let mut heads: Vec<(u64, usize, usize)> = Vec::new();
    for start in (0..streams).step_by(SLICE_STREAMS) {
        let published = core.published.read();
        let slice = published
            .index
            .category_streams_in(category, start..start + SLICE_STREAMS);
        for (n, (_, entry)) in (start..).zip(slice) {
            let i = entry.count_up_to(after);
            if let Some(position) = entry.get(i).filter(|&p| p <= last) {
                heads.push((position, n, i));
            }
        }
    }
    if heads.len() > limit {
        heads.select_nth_unstable(limit - 1);
        heads.truncate(limit);
    }
    let published = core.published.read();
    // Each candidate's stream, resolved once (streams keep their number).
    let entries: Vec<_> = published
        .index
        .category_streams_numbered(category, heads.iter().map(|&(_, n, _)| n))
        .collect::<Option<_>>()?;
    let mut heap: std::collections::BinaryHeap<Reverse<(u64, usize, usize)>> = heads
        .iter()
        .enumerate()
        .map(|(k, &(position, _, i))| Reverse((position, k, i)))
        .collect();
    let mut positions = Vec::with_capacity(limit.min(heads.len().saturating_mul(4)));
    while positions.len() < limit
        && let Some(Reverse((position, k, i))) = heap.pop()
    {
        positions.push(position);
        if let Some(next) = entries[k].get(i + 1).filter(|&p| p <= last) {
            heap.push(Reverse((next, k, i + 1)));
        }
    }
    Some(positions)
}

/// Whether every batch holding a position in `(after, end]` lies below
/// its segment's verification watermark, checking the batches up to each
/// segment's last record in the range that were not checked yet, at most
/// `budget` bytes of them (false when more are left: a later call goes on
/// from where this one stopped).
fn batches_checked<F: FileSystem>(core: &Core<F>, after: u64, end: u64, mut budget: u64) -> bool {
    if end <= after {
        return true;
    }
    // The last record of the range in each segment it touches, found by
    // binary search: packed locations grow with positions.
    let lasts: Vec<Location> = {
        let published = core.published.read();
        let locations = published.index.locations();
        let packed = |p: u64| locations.get(usize::try_from(p.checked_sub(1)?).ok()?);
        let (Some(first), Some(last)) = (packed(after + 1), packed(end)) else {
            return false;
        };
        let (first, last) = (Location::unpack(first), Location::unpack(last));
        let mut lasts = Vec::new();
        let mut low = after + 1;
        for segment in first.segment..last.segment {
            // The last position of `low..=end` whose segment is `segment`
            // or earlier: the first one past it, less one.
            let bound = Location {
                segment: segment + 1,
                offset: 0,
            }
            .pack();
            let (mut lo, mut hi) = (low, end);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match packed(mid) {
                    Some(at) if at < bound => lo = mid + 1,
                    Some(_) => hi = mid,
                    None => return false,
                }
            }
            if lo > low {
                match packed(lo - 1).map(Location::unpack) {
                    Some(at) if at.segment == segment => lasts.push(at),
                    _ => return false,
                }
            }
            low = lo;
        }
        lasts.push(last);
        lasts
    };
    let views: Option<Vec<Arc<SegmentView>>> = {
        let segments = core.segments.read();
        lasts.iter().map(|at| segments.get(at.segment).cloned()).collect()
    };
    let Some(views) = views else {
        return false;
    };
    for (at, view) in lasts.iter().zip(&views) {
        let verified = view.verified_end();
        if at.offset < verified {
            continue;
        }
        let left = at.offset - verified;
        if left > budget {
            // Part of it now (the batches up to the one holding that
            // offset, all before this record's), the rest at a later call.
            let _ = view.ensure_verified(verified + budget);
            return false;
        }
        budget -= left;
        // A read past damage checks its own batch only and is let through:
        // the watermark itself must pass the record.
        if view.ensure_verified(at.offset).is_err() || at.offset >= view.verified_end() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{Window, WindowAt, first_positions, next_window};
    use crate::{Durability, EventData, ExpectedVersion, Options, Store};

    /// The merge of a limited category read: a stream holding many of the
    /// first positions, streams holding one each, streams ending before
    /// the start, a bound below the log's end, limits past what is there.
    #[test]
    fn first_positions_are_the_smallest_after_the_start_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default().with_durability(Durability::Buffered);
        let store = Store::open(dir.path(), options).unwrap();
        let mut want = Vec::new();
        let mut append = |stream: &str| {
            let e = EventData::new("T", "{}");
            let position = store.append(stream, ExpectedVersion::Any, [e]).unwrap().first_position;
            if stream.starts_with("C-") || stream == "C" {
                want.push(position);
            }
        };
        for i in 0..30 {
            append(&format!("Old-{i}"));
            append(&format!("C-old{i}"));
        }
        for i in 0..200 {
            append("C-many");
            append(&format!("Other-{i}"));
            if i % 4 == 0 {
                append(&format!("C-{i}"));
            }
        }
        append("C");
        let last = store.last_position();
        let core = store.core();
        for after in [0, 1, 59, 60, 61, 200, last - 1, last] {
            for bound in [last, last - 1, 100] {
                for limit in [0, 1, 2, 30, 31, 57, 250, 10_000] {
                    let expected: Vec<u64> = want
                        .iter()
                        .copied()
                        .filter(|&p| p > after && p <= bound)
                        .take(limit)
                        .collect();
                    let got = first_positions(core, "C", after, bound, limit);
                    assert_eq!(got, Some(expected), "after {after}, bound {bound}, limit {limit}");
                }
            }
        }
        assert_eq!(first_positions(core, "None", 0, last, 10), Some(Vec::new()));
    }

    /// A window whose batches were not checked yet (a store just opened)
    /// is checked a budget of bytes per call: not listed until all of its
    /// batches are, then listed whole; a category read does not wait.
    #[test]
    fn a_window_is_checked_a_budget_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default()
            .with_durability(Durability::Buffered)
            .with_segment_size_bytes(1 << 20);
        let store = Store::open(dir.path(), options.clone()).unwrap();
        for i in 0..20_000u64 {
            let stream = if i % 5 == 0 {
                "A-1".to_string()
            } else {
                format!("B-{i}")
            };
            let event = EventData::new("T", vec![b'x'; 100]);
            store.append(&stream, ExpectedVersion::Any, [event]).unwrap();
        }
        store.close().unwrap();
        let store = Store::open(dir.path(), options).unwrap();
        let core = store.core();
        let at = WindowAt::After { after: 0, last: 20_000 };
        let want: Vec<u64> = (1..=20_000).filter(|p| (p - 1) % 5 == 0).collect();
        let listed = |window: Window| match window {
            Window::Listed { positions, end, .. } => Some((positions, end)),
            Window::Unchecked { .. } => None,
        };
        let unchecked = listed(next_window(core, "A", at, None, None, Vec::new())).unwrap();
        assert_eq!(unchecked, (want.clone(), 20_000));
        let mut calls = 0;
        let checked = loop {
            calls += 1;
            assert!(calls < 1_000, "no progress");
            if let Some(window) = listed(next_window(core, "A", at, None, Some(64 << 10), Vec::new())) {
                break window;
            }
        };
        // About 3 MB of log checked 64 KiB at a time.
        assert!(calls > 10, "{calls} calls");
        assert_eq!(checked, (want, 20_000));
    }
}
