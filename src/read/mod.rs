//! The read path: stream, category and global-order reads.
//!
//! A read takes the index lock only briefly, to copy the locations of the
//! next page of events; it then decodes them from the segment maps without
//! any lock, so readers never hold up writers. Events returned point into
//! the memory maps (no payload copies).

mod category;

use std::sync::Arc;

pub(crate) use category::{CHECK_BYTES_PER_CALL, Window, WindowAt, next_window, worth_listing};
use category::{MERGE_LIMIT_MAX, first_positions, limited_first_span};

use crate::error::{Error, Result};
use crate::event::{RecordedEvent, category_of_bytes};
use crate::index::{Location, LocationTable};
use crate::io::{FileSystem, StdFs};
use crate::log::view::SegmentView;
use crate::store::Core;

/// Locations copied per trip to the index.
const PAGE_EVENTS: usize = 512;

/// How many events ahead a read asks the processor to load.
const PREFETCH_AHEAD: usize = 12;

/// Reading direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// How to read a stream: direction, first version (inclusive), limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStream {
    direction: Direction,
    from_version: Option<u64>,
    limit: Option<usize>,
}

impl ReadStream {
    /// From the first version up (the default).
    pub fn forward() -> Self {
        ReadStream::default()
    }

    /// From the last version down.
    pub fn backward() -> Self {
        ReadStream {
            direction: Direction::Backward,
            ..ReadStream::default()
        }
    }

    /// Starts at this version, inclusive, in the chosen direction.
    /// (Versions start at 1: forward from 0 reads the whole stream,
    /// backward from 0 reads nothing.)
    pub fn from_version(mut self, version: u64) -> Self {
        self.from_version = Some(version);
        self
    }

    /// Returns at most `n` events.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }
}

/// How to read all events: direction, start, limit and filters.
///
/// Forward reads return events with position *greater* than the start, so
/// a checkpoint P ("processed up to P") resumes right after it. Backward
/// reads return events with position *less* than the start, so the last
/// position seen pages further back. Without a start, forward begins at the
/// first event and backward at the last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadAll {
    direction: Direction,
    start: Option<u64>,
    limit: Option<usize>,
    event_types: Vec<String>,
    stream_prefix: Option<String>,
    category: Option<String>,
}

impl ReadAll {
    /// From the first event up (the default).
    pub fn forward() -> Self {
        ReadAll::default()
    }

    /// From the last event down.
    pub fn backward() -> Self {
        ReadAll {
            direction: Direction::Backward,
            ..ReadAll::default()
        }
    }

    /// Forward: events after `position`. Backward: events before it.
    pub fn from_position(mut self, position: u64) -> Self {
        self.start = Some(position);
        self
    }

    /// Returns at most `n` events (after filtering).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Keeps only events of this type (call again to allow several types).
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_types.push(event_type.into());
        self
    }

    /// Keeps only events of streams whose name starts with `prefix`.
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefix = Some(prefix.into());
        self
    }

    /// Keeps only events of streams of a category: streams whose name, up
    /// to its first `-`, is `category` (`Order-1`, `Order-2-x` and `Order`
    /// for `"Order"`; see [`crate::category_of`]), as
    /// [`Store::read_category`](crate::Store::read_category) and category
    /// subscriptions select them.
    pub fn category(mut self, category: &str) -> Self {
        self.category = Some(category.to_string());
        self
    }

    /// Refuses filters that break a limit or could never match (a category
    /// holding a `-`, an empty event type), as subscriptions do.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        if let Some(category) = &self.category {
            crate::writer::validate_category(category)?;
        }
        self.event_types
            .iter()
            .try_for_each(|t| crate::writer::validate_event_type(t))
    }
}

/// Where the next positions come from.
enum Source {
    /// Positions listed in order (a page of a subscription's listed
    /// window; a category read's with a small limit; none for a stream
    /// that does not exist).
    List { positions: Vec<u64>, next: usize },
    /// The versions of one stream with indices `low..high` (version
    /// `i + 1` at index `i`), taken from the low end or, backward, from the
    /// high end; each page's positions are copied into `positions`.
    Stream {
        name: Arc<str>,
        low: usize,
        high: usize,
        backward: bool,
        positions: Vec<u64>,
    },
    /// A range of global positions, walked in either direction from
    /// `next` to `bound` (see [`range_page`]).
    Range { next: u64, bound: u64, backward: bool },
    /// A category's positions, listed from the index a window at a time
    /// (see `category.rs`): forward, those after `edge` up to `last`,
    /// oldest first; backward, those up to `edge`, newest first. `edge`
    /// moves past each window as it is listed; `positions[next..]` are the
    /// current window's still to read (in reading order), `span` the next
    /// window's (none before the first). With `checked` (a filtered global
    /// read), a window whose batches have not all passed their checks is
    /// scanned instead: `scan` is the part of it still to scan, `(next,
    /// bound)` for [`range_page`]; a read with a limit also scans the
    /// first positions of its range before it lists any (see
    /// `category::worth_listing`). (An iterator has no deadline: its check of
    /// a window checks all of it at once.)
    Category {
        category: String,
        edge: u64,
        last: u64,
        backward: bool,
        checked: bool,
        positions: Vec<u64>,
        next: usize,
        span: Option<u64>,
        scan: Option<(u64, u64)>,
    },
}

/// Adds the next page of the positions from `next` to `bound`, both
/// included (forward up to `bound`, backward down to it), to `page`,
/// moving `next` past it; [`range_done`] tells when none are left.
fn range_page(locations: &LocationTable, next: &mut u64, bound: u64, backward: bool, page: &mut Vec<(u64, u64)>) {
    // Published positions exist, so the table covers them.
    let len = locations.len() as u64;
    if range_done(*next, bound, backward) || *next > len {
        return;
    }
    let (from, to) = if backward {
        (next.saturating_sub(PAGE_EVENTS as u64 - 1).max(bound).max(1), *next)
    } else {
        (*next, next.saturating_add(PAGE_EVENTS as u64 - 1).min(bound).min(len))
    };
    locations.extend_page((from - 1) as usize..to as usize, backward, page);
    *next = if backward { from - 1 } else { to + 1 };
}

/// Whether a range walked from `next` to `bound` (see [`range_page`]) is
/// done.
fn range_done(next: u64, bound: u64, backward: bool) -> bool {
    if backward {
        next < bound.max(1)
    } else {
        next == 0 || next > bound
    }
}

/// Filters of a global read.
#[derive(Default)]
struct Filter {
    event_types: Vec<String>,
    stream_prefix: Option<String>,
    category: Option<String>,
}

impl Filter {
    /// Whether the filter keeps every event.
    fn is_empty(&self) -> bool {
        self.event_types.is_empty() && self.stream_prefix.is_none() && self.category.is_none()
    }

    /// Whether the filter keeps an event of this stream and type, given as
    /// the record's raw bytes (valid UTF-8, so comparing bytes compares
    /// the strings).
    fn accepts_raw(&self, stream: &[u8], event_type: &[u8]) -> bool {
        let type_ok = self.event_types.is_empty() || self.event_types.iter().any(|t| t.as_bytes() == event_type);
        let prefix_ok = self
            .stream_prefix
            .as_ref()
            .is_none_or(|p| stream.starts_with(p.as_bytes()));
        let category_ok = self
            .category
            .as_ref()
            .is_none_or(|c| category_of_bytes(stream) == c.as_bytes());
        type_ok && prefix_ok && category_ok
    }
}

/// An iterator of events, oldest or newest first. Yields an error (and
/// then stops) when it meets corruption.
///
/// A snapshot of the log as it was when the read was made: events
/// appended later are not yielded (subscribe to follow new events). An
/// iterator keeps the store's files mapped, so the directory stays locked
/// until it is dropped, even after [`Store::close`](crate::Store::close).
pub struct Events<F: FileSystem = StdFs> {
    core: Arc<Core<F>>,
    source: Source,
    /// The current page: positions and packed locations, copied from the
    /// index under its lock; `page[page_next..]` are still to be read.
    page: Vec<(u64, u64)>,
    page_next: usize,
    view: Option<Arc<SegmentView>>,
    /// `None` when the read keeps every event.
    filter: Option<Filter>,
    remaining: usize,
    failed: bool,
}

impl<F: FileSystem> Events<F> {
    pub(crate) fn stream(core: Arc<Core<F>>, stream: &str, options: ReadStream) -> Self {
        // The versions to read, fixed now (later appends are not read);
        // their positions are copied a page at a time, so that a long
        // stream never holds the index lock, which appends need to
        // publish, for more than a page.
        let source = {
            let published = core.published.read();
            published.index.stream_key(stream).map(|(name, count, _)| {
                let count = usize::try_from(count).unwrap_or(usize::MAX);
                let limit = options.limit.unwrap_or(usize::MAX);
                let backward = options.direction == Direction::Backward;
                let (low, high) = if backward {
                    let start = options
                        .from_version
                        .map_or(count, |v| usize::try_from(v).unwrap_or(usize::MAX));
                    let high = start.min(count);
                    (high.saturating_sub(limit), high)
                } else {
                    let start = options.from_version.unwrap_or(1).max(1) - 1;
                    let low = usize::try_from(start).unwrap_or(usize::MAX).min(count);
                    (low, low.saturating_add(limit).min(count))
                };
                Source::Stream {
                    name,
                    low,
                    high,
                    backward,
                    positions: Vec::new(),
                }
            })
        };
        let source = source.unwrap_or(Source::List {
            positions: Vec::new(),
            next: 0,
        });
        Events::new(core, source, Filter::default(), None)
    }

    pub(crate) fn all(core: Arc<Core<F>>, options: ReadAll) -> Self {
        let last = core.published.read().index.last_position();
        let backward = options.direction == Direction::Backward;
        let next = match (backward, options.start) {
            (false, start) => start.unwrap_or(0).saturating_add(1),
            (true, None) => last,
            (true, Some(p)) => p.saturating_sub(1).min(last),
        };
        // Through a category of few streams for the range: its windows
        // listed from the index (each checked for damage first).
        let (low, high) = if backward { (0, next) } else { (next - 1, last) };
        let listing = options
            .category
            .as_ref()
            .and_then(|category| Some((category, worth_listing(&core, category, low, high)?)));
        let source = match listing {
            Some((category, probe)) => {
                // With a limit, the first positions are scanned: the read
                // may be done before a listing would have paid.
                let probe = if options.limit.is_some() { probe } else { 0 };
                let (edge, scan) = match (backward, probe) {
                    (true, 0) => (next, None),
                    (false, 0) => (next - 1, None),
                    (false, probe) => {
                        let edge = last.min(next.saturating_add(probe - 1));
                        (edge, Some((next, edge)))
                    }
                    (true, probe) => {
                        let edge = next.saturating_sub(probe);
                        (edge, Some((next, edge + 1)))
                    }
                };
                Source::Category {
                    category: category.clone(),
                    edge,
                    last,
                    backward,
                    checked: true,
                    positions: Vec::new(),
                    next: 0,
                    span: None,
                    scan,
                }
            }
            _ => Source::Range {
                next,
                bound: if backward { 1 } else { last },
                backward,
            },
        };
        let filter = Filter {
            event_types: options.event_types,
            stream_prefix: options.stream_prefix,
            category: options.category,
        };
        Events::new(core, source, filter, options.limit)
    }

    /// The events at `positions` (ascending, published) of these types
    /// (any when empty): one page of a subscription's listed window.
    pub(crate) fn listed(core: Arc<Core<F>>, positions: Vec<u64>, event_types: Vec<String>) -> Self {
        let filter = Filter {
            event_types,
            ..Filter::default()
        };
        Events::new(core, Source::List { positions, next: 0 }, filter, None)
    }

    /// The events after position `after`, up to `up_to`, of a category
    /// (all streams when `None`) and of some event types (any when empty),
    /// oldest first: one page of a subscription's scan of the log.
    pub(crate) fn scan(
        core: Arc<Core<F>>,
        after: u64,
        up_to: u64,
        category: Option<String>,
        event_types: Vec<String>,
    ) -> Self {
        let source = Source::Range {
            next: after.saturating_add(1),
            bound: up_to,
            backward: false,
        };
        let filter = Filter {
            event_types,
            stream_prefix: None,
            category,
        };
        Events::new(core, source, filter, None)
    }

    pub(crate) fn category(core: Arc<Core<F>>, category: &str, after: u64, limit: Option<usize>) -> Self {
        // The category as of now: its positions up to the log's end,
        // listed a window at a time (each window's streams a slice at a
        // time, so that a category of a million events never holds the
        // index lock, which appends need to publish, for long).
        let last = core.published.read().index.last_position();
        // A small limit: the positions at once, by a merge of the streams.
        if let Some(positions) = limit
            .filter(|&n| n <= MERGE_LIMIT_MAX)
            .and_then(|n| first_positions(&core, category, after, last, n))
        {
            let source = Source::List { positions, next: 0 };
            return Events::new(core, source, Filter::default(), limit);
        }
        let source = Source::Category {
            category: category.to_string(),
            edge: after,
            last,
            backward: false,
            checked: false,
            positions: Vec::new(),
            next: 0,
            span: limit.map(|_| limited_first_span(&core, category)),
            scan: None,
        };
        Events::new(core, source, Filter::default(), limit)
    }

    fn new(core: Arc<Core<F>>, source: Source, filter: Filter, limit: Option<usize>) -> Self {
        Events {
            core,
            source,
            page: Vec::new(),
            page_next: 0,
            view: None,
            filter: (!filter.is_empty()).then_some(filter),
            remaining: limit.unwrap_or(usize::MAX),
            failed: false,
        }
    }

    /// A category read's next window, when the current one is read: the
    /// first with a position, or one to scan.
    fn next_category_window(&mut self) {
        let Source::Category {
            category,
            edge,
            last,
            backward,
            checked,
            positions,
            next,
            span,
            scan,
        } = &mut self.source
        else {
            return;
        };
        if scan.is_some() || *next < positions.len() {
            return;
        }
        while if *backward { *edge > 0 } else { *edge < *last } {
            let check = checked.then_some(u64::MAX);
            let reuse = std::mem::take(positions);
            let at = if *backward {
                WindowAt::Below(*edge)
            } else {
                WindowAt::After {
                    after: *edge,
                    last: *last,
                }
            };
            match next_window(&self.core, category, at, *span, check, reuse) {
                Window::Listed {
                    positions: listed,
                    end,
                    next_span,
                } => {
                    *positions = listed;
                    if *backward {
                        positions.reverse();
                    }
                    *next = 0;
                    *edge = end;
                    *span = Some(next_span);
                    if !positions.is_empty() {
                        return;
                    }
                }
                Window::Unchecked { end } => {
                    *scan = Some(if *backward { (*edge, end + 1) } else { (*edge + 1, end) });
                    *edge = end;
                    return;
                }
            }
        }
    }

    /// Copies the next page of locations under the index lock.
    fn refill(&mut self) {
        self.page.clear();
        self.page_next = 0;
        self.next_category_window();
        let published = self.core.published.read();
        let locations = published.index.locations();
        let packed = |p: u64| locations.get(usize::try_from(p.checked_sub(1)?).ok()?);
        match &mut self.source {
            Source::List { positions, next } => {
                let page = positions.get(*next..).unwrap_or_default();
                let page = &page[..page.len().min(PAGE_EVENTS)];
                self.page.extend(page.iter().filter_map(|&p| Some((p, packed(p)?))));
                *next += page.len();
            }
            Source::Stream {
                name,
                low,
                high,
                backward,
                positions,
            } => {
                let Some(entry) = published.index.stream(name) else {
                    return;
                };
                let take = (*high - *low).min(PAGE_EVENTS);
                let versions = if *backward {
                    *high - take..*high
                } else {
                    *low..*low + take
                };
                positions.clear();
                entry.extend_range(versions, positions);
                if *backward {
                    positions.reverse();
                    *high -= take;
                } else {
                    *low += take;
                }
                self.page
                    .extend(positions.iter().filter_map(|&p| Some((p, packed(p)?))));
            }
            Source::Range { next, bound, backward } => range_page(locations, next, *bound, *backward, &mut self.page),
            Source::Category {
                positions,
                next,
                scan,
                backward,
                ..
            } => match scan {
                Some((from, bound)) => {
                    range_page(locations, from, *bound, *backward, &mut self.page);
                    if range_done(*from, *bound, *backward) {
                        *scan = None;
                    }
                }
                None => {
                    let page = positions.get(*next..).unwrap_or_default();
                    let page = &page[..page.len().min(PAGE_EVENTS)];
                    self.page.extend(page.iter().filter_map(|&p| Some((p, packed(p)?))));
                    *next += page.len();
                }
            },
        }
    }

    /// The view of `segment`, kept from the previous event when it is the
    /// same one (no reference-count traffic per event).
    fn view_for(&mut self, segment: u64) -> Result<&SegmentView> {
        if self.view.as_ref().is_none_or(|v| v.id != segment) {
            let view = self.core.segments.read().get(segment).cloned().ok_or_else(|| {
                Error::corruption(&self.core.dir, 0, format!("index points at missing segment {segment}"))
            })?;
            self.view = Some(view);
        }
        self.view
            .as_deref()
            .ok_or_else(|| Error::corruption(&self.core.dir, 0, "no segment view"))
    }

    /// Reads the record at `location` when the filter keeps it: the filter
    /// looks at the record's names before an event is made of it, so
    /// skipping one costs no reference to the map. Damage is an error
    /// either way.
    fn read_filtered(&mut self, location: Location, position: u64) -> Result<Option<RecordedEvent>> {
        self.view_for(location.segment)?;
        let (Some(view), Some(filter)) = (self.view.as_deref(), self.filter.as_ref()) else {
            return Err(Error::corruption(&self.core.dir, 0, "no segment view"));
        };
        view.read_if(location.offset, position, |stream, event_type| {
            filter.accepts_raw(stream, event_type)
        })
    }

    fn next_event(&mut self) -> Option<Result<RecordedEvent>> {
        loop {
            if self.failed || self.remaining == 0 {
                return None;
            }
            if self.page_next == self.page.len() {
                self.refill();
            }
            let &(position, packed) = self.page.get(self.page_next)?;
            self.page_next += 1;
            let location = Location::unpack(packed);
            if let (Some(&(_, ahead)), Some(view)) = (self.page.get(self.page_next + PREFETCH_AHEAD), &self.view) {
                let ahead = Location::unpack(ahead);
                if ahead.segment == view.id {
                    view.prefetch(ahead.offset);
                }
            }
            if self.filter.is_some() {
                match self.read_filtered(location, position) {
                    Ok(None) => continue,
                    Ok(Some(e)) => {
                        self.remaining -= 1;
                        return Some(Ok(e));
                    }
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
            let event = self
                .view_for(location.segment)
                .and_then(|view| view.read(location.offset, position));
            match event {
                Ok(e) => {
                    self.remaining -= 1;
                    return Some(Ok(e));
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Collects every event, failing on the first error.
    pub fn collect_all(self) -> Result<Vec<RecordedEvent>> {
        self.collect()
    }
}

impl<F: FileSystem> Iterator for Events<F> {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event()
    }
}
