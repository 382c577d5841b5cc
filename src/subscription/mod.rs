//! Subscriptions: catch-up then live delivery of events, in global order.
//!
//! A [`Subscription`] reads events *from the log*, by position, exactly as
//! [`Store::read_all`] does: pages of up to [`SUBSCRIPTION_PAGE_EVENTS`] events, decoded
//! from the segment maps without copying payloads. Writers never push
//! events to subscribers; after a group commit publishes its events they
//! only wake them (see `hub.rs`). So catching up and following live events
//! are one code path: the subscription remembers the last position it has
//! examined and reads what comes after it. There is no switch, hence no gap
//! and no duplicate at the switch, whatever the writers do.
//!
//! A slow subscriber costs writers one coalesced wake-up token and nothing
//! else: it buffers at most one page, and when it falls behind it simply
//! reads further pages from the log until it has caught up again.
//!
//! Subscribers see published events only. With [`Durability::Sync`] events
//! are published after their sync, so a subscriber never sees an event a
//! crash could take away. With [`Durability::Periodic`] and
//! [`Durability::Buffered`] events are published once written to the
//! operating system: a subscriber may see an event that a power loss (not
//! a process crash) takes away.
//!
//! A subscription does not keep the store open: once the store is closed
//! (or its last handle dropped) [`Subscription::recv`] returns `Ok(None)`.
//!
//! [`Durability::Sync`]: crate::Durability::Sync
//! [`Durability::Periodic`]: crate::Durability::Periodic
//! [`Durability::Buffered`]: crate::Durability::Buffered

mod dispatcher;
pub(crate) mod hub;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::error::{Error, Result};
use crate::event::{RecordedEvent, category_of};
use crate::io::{FileSystem, StdFs};
use crate::read::{CHECK_BYTES_PER_CALL, Events, ReadStream, Window, WindowAt, next_window, worth_listing};
use crate::store::{Core, Store};
use hub::Hub;

pub use dispatcher::{Dispatcher, DispatcherBuilder, DispatcherError, HandlerStatus};

/// Most events a subscription reads from the log per page (and so the most
/// it buffers).
pub const SUBSCRIPTION_PAGE_EVENTS: usize = 256;

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// From the first event of the store.
    Start,
    /// After the events that exist when the subscription is made: only new
    /// events are delivered.
    End,
    /// After this global position (a checkpoint: "processed up to P"), so
    /// the first event delivered is the first matching one after `P`. A
    /// position beyond the store's last is refused.
    After(u64),
}

impl StartFrom {
    /// The position a consumer starting here has examined already, given
    /// the store's last position `head`; a position past `head` is refused.
    fn resolve(self, head: u64) -> Result<u64> {
        match self {
            StartFrom::Start => Ok(0),
            StartFrom::End => Ok(head),
            StartFrom::After(p) if p <= head => Ok(p),
            StartFrom::After(p) => Err(Error::InvalidInput(format!(
                "cannot start after position {p}: the store's last position is {head}"
            ))),
        }
    }
}

/// What a subscription delivers: every event, one stream's, or one
/// category's, optionally narrowed to some event types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionFilter {
    target: Target,
    event_types: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    All,
    Stream(String),
    Category(String),
}

impl SubscriptionFilter {
    /// Every event of the store.
    pub fn all() -> Self {
        SubscriptionFilter {
            target: Target::All,
            event_types: Vec::new(),
        }
    }

    /// The events of one stream.
    pub fn stream(stream: impl Into<String>) -> Self {
        SubscriptionFilter {
            target: Target::Stream(stream.into()),
            event_types: Vec::new(),
        }
    }

    /// The events of every stream of a category: streams whose name, up to
    /// its first `-`, is `category` (see [`crate::category_of`]).
    pub fn category(category: impl Into<String>) -> Self {
        SubscriptionFilter {
            target: Target::Category(category.into()),
            event_types: Vec::new(),
        }
    }

    /// Keeps only events of this type (call again to allow several types).
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_types.push(event_type.into());
        self
    }

    /// Refuses a filter that breaks a limit or could never match: a bad
    /// stream name, a category holding a `-`, an empty event type.
    pub(crate) fn validate(&self) -> Result<()> {
        match &self.target {
            Target::All => {}
            Target::Stream(name) => crate::writer::validate_stream_name(name)?,
            Target::Category(category) => crate::writer::validate_category(category)?,
        }
        self.event_types
            .iter()
            .try_for_each(|t| crate::writer::validate_event_type(t))
    }

    /// The category this filter follows, if it follows one.
    fn followed_category(&self) -> Option<&str> {
        match &self.target {
            Target::Category(category) => Some(category),
            _ => None,
        }
    }

    fn accepts(&self, e: &RecordedEvent) -> bool {
        let target_ok = match &self.target {
            Target::All => true,
            Target::Stream(s) => e.stream() == s,
            Target::Category(c) => category_of(e.stream()) == c,
        };
        target_ok && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == e.event_type()))
    }
}

/// Whether a subscription is reading history or following new events, as
/// of its last read: not whether its consumer keeps up (a `Live`
/// subscription that is not read stays `Live` while events pile up; see
/// [`SubscriptionStatus::lag`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionState {
    /// Its last read of the log stopped at a full page (or, before its
    /// first read, it starts before the store's head): more events are
    /// waiting in the log.
    CatchingUp,
    /// Its last read of the log reached the store's head (or, before its
    /// first read, it starts there): it delivers events as they are
    /// published.
    Live,
    /// The store was closed; nothing more will be delivered.
    Closed,
}

/// Where a subscription is (see [`Subscription::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionStatus {
    /// Every matching event at or before this global position has been
    /// delivered: the position to save as a checkpoint.
    pub position: u64,
    /// Global position of the last event delivered (0 when none yet).
    pub last_delivered: u64,
    /// The store's last published position (also once it is closed: the
    /// events past `position` were published but not delivered; once
    /// every handle on the store is dropped, the last head this
    /// subscription read).
    pub head: u64,
    /// `head - position`: positions not yet examined.
    pub lag: u64,
    /// Events read from the log and not yet delivered.
    pub buffered: usize,
    /// Catching up, live, or closed.
    pub state: SubscriptionState,
}

/// A subscription to the events of a store, in global-position order,
/// first from history and then live. Made by [`Store::subscribe`] and its
/// shorthands; see `docs/SUBSCRIPTIONS.md` for its guarantees.
///
/// Dropping it unregisters it.
pub struct Subscription<F: FileSystem = StdFs> {
    core: Weak<Core<F>>,
    hub: Arc<Hub>,
    id: u64,
    wake: Receiver<()>,
    filter: SubscriptionFilter,
    buffer: VecDeque<RecordedEvent>,
    /// Every position up to this one has been read from the log.
    scanned: u64,
    /// Stream subscriptions: the stream version up to which it was read.
    stream_version: u64,
    /// Category subscriptions catching up: the positions of the window
    /// listed from the index (see `read/category.rs`), from
    /// `listed_next` on still to read, and the window's last position
    /// (every position of the category up to it is in the list).
    listed: Vec<u64>,
    listed_next: usize,
    listed_end: u64,
    /// The next window's span (none before the first).
    listed_span: Option<u64>,
    last_delivered: u64,
    /// The highest head this subscription has read (for `status` once the
    /// store's memory is gone).
    head_seen: u64,
    live: bool,
    closed: bool,
}

/// How long a receive may wait for new events.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Until(Instant),
    Forever,
}

/// Why a receive returned without an event.
enum Nothing {
    NotYet,
    Closed,
}

impl<F: FileSystem> Subscription<F> {
    pub(crate) fn new(core: &Arc<Core<F>>, filter: SubscriptionFilter, from: StartFrom) -> Result<Self> {
        filter.validate()?;
        // Register before the first read of the log, so that no publish
        // after that read can go unnoticed (see hub.rs).
        let (id, wake) = core.subscriptions.register().ok_or(Error::Closed)?;
        let mut sub = Subscription {
            core: Arc::downgrade(core),
            hub: core.subscriptions.clone(),
            id,
            wake,
            filter,
            buffer: VecDeque::new(),
            scanned: 0,
            stream_version: 0,
            listed: Vec::new(),
            listed_next: 0,
            listed_end: 0,
            listed_span: None,
            last_delivered: 0,
            head_seen: 0,
            live: false,
            closed: false,
        };
        let published = core.published.read();
        sub.head_seen = published.index.last_position();
        let start = from.resolve(published.index.last_position())?;
        // Before its first read: live when it starts at the head.
        sub.live = start >= published.index.last_position();
        if let Target::Stream(name) = &sub.filter.target {
            sub.stream_version = published.index.stream(name).map_or(0, |e| e.count_up_to(start)) as u64;
        }
        sub.scanned = start;
        drop(published);
        Ok(sub)
    }

    /// The next event, waiting as long as it takes. `Ok(None)` once the
    /// store is closed; an error when the log cannot be read (corruption,
    /// I/O), after which the subscription can be asked again.
    pub fn recv(&mut self) -> Result<Option<RecordedEvent>> {
        match self.next(Wait::Forever)? {
            Ok(e) => Ok(Some(e)),
            Err(_) => Ok(None),
        }
    }

    /// The next event, waiting at most `timeout` (plus one read of the
    /// log: a page, or for a category subscription catching up through the
    /// index, the listing of its next window, a few milliseconds):
    /// `Ok(None)` when none came in time, [`Error::Closed`] once the store
    /// is closed. Reading history that the filter skips counts against the
    /// timeout; the scan goes on at the next call.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        let wait = Instant::now().checked_add(timeout).map_or(Wait::Forever, Wait::Until);
        self.receive(wait)
    }

    /// The next event if one is published and not yet delivered, without
    /// waiting: `Ok(None)` when caught up, [`Error::Closed`] once the store
    /// is closed. May read the log (several pages for a narrow filter).
    pub fn try_recv(&mut self) -> Result<Option<RecordedEvent>> {
        self.receive(Wait::No)
    }

    /// Every matching event at or before this position has been delivered:
    /// the checkpoint to save after handling the events received so far.
    pub fn position(&self) -> u64 {
        self.buffer
            .front()
            .map_or(self.scanned, |e| e.position().saturating_sub(1))
    }

    /// Where the subscription is: position, last delivered event, the
    /// store's head, lag, and whether it is catching up or live.
    pub fn status(&self) -> SubscriptionStatus {
        let position = self.position();
        // Also once the store is closed: what it published stays readable
        // through other clones, and a consumer that stopped short of it
        // is behind by that much.
        let head = match self.core.upgrade() {
            Some(core) => core.published.read().index.last_position(),
            None => self.head_seen,
        }
        .max(position);
        let state = if self.is_closed() {
            SubscriptionState::Closed
        } else if self.live {
            SubscriptionState::Live
        } else {
            SubscriptionState::CatchingUp
        };
        SubscriptionStatus {
            position,
            last_delivered: self.last_delivered,
            head,
            lag: head.saturating_sub(position),
            buffered: self.buffer.len(),
            state,
        }
    }

    /// Whether the store was closed (nothing more will be delivered).
    pub fn is_closed(&self) -> bool {
        self.closed || self.hub.is_closed()
    }

    /// A new subscription with the same filter and store, from `from`.
    pub(crate) fn resubscribe(&self, from: StartFrom) -> Result<Self> {
        let core = self.core.upgrade().ok_or(Error::Closed)?;
        Subscription::new(&core, self.filter.clone(), from)
    }

    /// The filter this subscription applies.
    pub fn filter(&self) -> &SubscriptionFilter {
        &self.filter
    }

    fn receive(&mut self, wait: Wait) -> Result<Option<RecordedEvent>> {
        match self.next(wait)? {
            Ok(e) => Ok(Some(e)),
            Err(Nothing::NotYet) => Ok(None),
            Err(Nothing::Closed) => Err(Error::Closed),
        }
    }

    fn next(&mut self, wait: Wait) -> Result<Result<RecordedEvent, Nothing>> {
        loop {
            if self.is_closed() {
                self.closed = true;
                self.live = false;
                return Ok(Err(Nothing::Closed));
            }
            if let Some(e) = self.buffer.pop_front() {
                self.last_delivered = e.position();
                return Ok(Ok(e));
            }
            if !self.refill()? {
                // A full page: more to read, or closed. A page the filter
                // skipped whole counts against the deadline: a narrow
                // filter over a long history returns in time, its scan
                // kept for the next call.
                if let Wait::Until(deadline) = wait
                    && self.buffer.is_empty()
                    && Instant::now() >= deadline
                    && !self.is_closed()
                {
                    return Ok(Err(Nothing::NotYet));
                }
                continue;
            }
            if !self.buffer.is_empty() {
                continue;
            }
            // Caught up with the head as of the read: wait for a wake-up.
            // A token taken here is always followed by another read.
            let woke = match wait {
                Wait::No => return Ok(Err(Nothing::NotYet)),
                Wait::Forever => self.wake.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Wait::Until(deadline) => self.wake.recv_deadline(deadline),
            };
            match woke {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => return Ok(Err(Nothing::NotYet)),
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    /// Reads the next page from the log into the buffer. Returns whether
    /// the read reached the head (`live`).
    fn refill(&mut self) -> Result<bool> {
        let Some(core) = self.core.upgrade() else {
            self.closed = true;
            return Ok(false);
        };
        // Drain a pending wake-up: this read sees what it announced.
        if let Err(TryRecvError::Disconnected) = self.wake.try_recv() {
            self.closed = true;
            return Ok(false);
        }
        let head = core.published.read().index.last_position();
        self.head_seen = self.head_seen.max(head);
        // A category of few streams for the history left: its next window
        // listed from the index (see `read/category.rs`), unless the
        // window's batches are not all checked yet (this read checks a few
        // MiB more and scans a page) or hold damage, which the scan then
        // reports where it lies.
        let mut listing = self.listed_end > self.scanned;
        if !listing
            && let Target::Category(category) = &self.filter.target
            && head > self.scanned
            && worth_listing(&core, category, self.scanned, head).is_some()
        {
            let reuse = std::mem::take(&mut self.listed);
            if let Window::Listed {
                positions,
                end,
                next_span,
            } = next_window(
                &core,
                category,
                WindowAt::After {
                    after: self.scanned,
                    last: head,
                },
                self.listed_span,
                Some(CHECK_BYTES_PER_CALL),
                reuse,
            ) {
                self.listed = positions;
                self.listed_next = 0;
                self.listed_end = end;
                self.listed_span = Some(next_span);
                listing = true;
            }
        }
        if !listing && self.listed.capacity() > 0 {
            // Read to its end: not kept while the subscription scans or
            // follows new events.
            self.listed = Vec::new();
            self.listed_next = 0;
        }
        let mut last_seen = self.scanned;
        let (filter, buffer) = (&self.filter, &mut self.buffer);
        let live = match &filter.target {
            Target::Stream(name) => {
                let options = ReadStream::forward()
                    .from_version(self.stream_version + 1)
                    .limit(SUBSCRIPTION_PAGE_EVENTS);
                let stream_version = &mut self.stream_version;
                read_page(Events::stream(core.clone(), name, options), |e| {
                    *stream_version = e.version();
                    last_seen = last_seen.max(e.position());
                    if filter.accepts(&e) {
                        buffer.push_back(e);
                    }
                })?
            }
            Target::Category(_) if listing => {
                // A page is the next SUBSCRIPTION_PAGE_EVENTS positions of
                // the window's list.
                let take = (self.listed.len() - self.listed_next).min(SUBSCRIPTION_PAGE_EVENTS);
                let page = self.listed[self.listed_next..self.listed_next + take].to_vec();
                let events = Events::listed(core.clone(), page, filter.event_types.clone());
                let whole = buffer_page(events, buffer, &mut last_seen)?;
                if whole {
                    self.listed_next += take;
                    last_seen = if self.listed_next == self.listed.len() {
                        self.listed_end
                    } else {
                        self.listed[self.listed_next - 1]
                    };
                } else {
                    // Stopped by damage after some events: the next read
                    // starts at the damaged one, and reports it.
                    self.listed_next = self.listed.partition_point(|&p| p <= last_seen);
                }
                whole && last_seen == head
            }
            Target::All | Target::Category(_) => {
                // A page is the next SUBSCRIPTION_PAGE_EVENTS positions; the
                // read skips the events the filter turns away without
                // making events of them.
                let up_to = head.min(self.scanned.saturating_add(SUBSCRIPTION_PAGE_EVENTS as u64));
                let category = match &filter.target {
                    Target::Category(c) => Some(c.clone()),
                    Target::All | Target::Stream(_) => None,
                };
                let events = Events::scan(core.clone(), self.scanned, up_to, category, filter.event_types.clone());
                let whole = buffer_page(events, buffer, &mut last_seen)?;
                if whole {
                    last_seen = up_to;
                }
                whole && up_to == head
            }
        };
        // A short page read everything published when it started, which
        // includes everything up to `head`.
        self.scanned = if live { last_seen.max(head) } else { last_seen };
        self.live = live;
        Ok(live)
    }
}

/// Hands `each` the events of one page read, in order. Returns how many
/// it read, or `None` when a read error ended the page early.
///
/// A read error after some events ends the page there, without an error:
/// those events are delivered first, and the next read, which starts at
/// the damaged record, reports it. An error on the page's first event is
/// returned.
fn read_events<F: FileSystem>(events: Events<F>, mut each: impl FnMut(RecordedEvent)) -> Result<Option<usize>> {
    let mut read = 0usize;
    for event in events {
        match event {
            Ok(event) => {
                read += 1;
                each(event);
            }
            Err(_) if read > 0 => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(read))
}

/// [`read_events`] into `buffer`, moving `last_seen` to each event's
/// position: returns whether the page was read whole (no damage ended it).
fn buffer_page<F: FileSystem>(
    events: Events<F>,
    buffer: &mut VecDeque<RecordedEvent>,
    last_seen: &mut u64,
) -> Result<bool> {
    let whole = read_events(events, |e| {
        *last_seen = e.position();
        buffer.push_back(e);
    })?;
    Ok(whole.is_some())
}

/// [`read_events`] of a read limited to [`SUBSCRIPTION_PAGE_EVENTS`]
/// events: returns whether it reached the head (it came back short, with
/// no damage).
fn read_page<F: FileSystem>(events: Events<F>, each: impl FnMut(RecordedEvent)) -> Result<bool> {
    Ok(read_events(events, each)?.is_some_and(|read| read < SUBSCRIPTION_PAGE_EVENTS))
}

impl<F: FileSystem> Drop for Subscription<F> {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

impl<F: FileSystem> fmt::Debug for Subscription<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .field("status", &self.status())
            .finish()
    }
}

impl<F: FileSystem> Store<F> {
    /// Subscribes to the events `filter` selects, from `from`: history
    /// first, then live, in global order, each event once. Fails with
    /// [`Error::Closed`] on a closed store.
    pub fn subscribe(&self, filter: SubscriptionFilter, from: StartFrom) -> Result<Subscription<F>> {
        Subscription::new(self.core_arc(), filter, from)
    }

    /// Subscribes to every event of the store.
    pub fn subscribe_all(&self, from: StartFrom) -> Result<Subscription<F>> {
        self.subscribe(SubscriptionFilter::all(), from)
    }

    /// Subscribes to the events of one stream.
    pub fn subscribe_stream(&self, stream: &str, from: StartFrom) -> Result<Subscription<F>> {
        self.subscribe(SubscriptionFilter::stream(stream), from)
    }

    /// Subscribes to the events of a category's streams (see
    /// [`SubscriptionFilter::category`]).
    pub fn subscribe_category(&self, category: &str, from: StartFrom) -> Result<Subscription<F>> {
        self.subscribe(SubscriptionFilter::category(category), from)
    }

    /// Number of consumers currently registered with the store: each live
    /// [`Subscription`] counts once, and so does each started
    /// [`Dispatcher`], whatever its number of handlers.
    pub fn subscriber_count(&self) -> usize {
        self.core_arc().subscriptions.len()
    }
}
