//! The dispatcher: many handlers served by one thread and one read of the
//! log.
//!
//! A [`Subscription`](super::Subscription) is pulled by its own thread.
//! With dozens of subscribers that is dozens of threads woken per commit,
//! each reading the same page of the log; on a small machine the last one
//! runs long after the first. A [`Dispatcher`] instead owns a set of
//! handlers (closures, each with its own filter and start), registers
//! *once* with the wake-up hub, reads each page of the log once, and calls
//! every handler whose filter accepts the event, in the order the handlers
//! were added.
//!
//! Each handler keeps its own position: the shared read starts at the
//! smallest one, and an event is offered to a handler only when it lies
//! past that handler's position. So every handler sees the events its
//! filter selects in global order, each once, catching up and then live,
//! exactly like a subscription; handlers that start further back only make
//! the shared read start further back.
//!
//! The no-lost-wake-up argument is the one in `hub.rs`: the dispatcher
//! registers before its first read, drains its token before every read,
//! and blocks only after a read that reached the head.
//!
//! A handler that returns an error, or panics, is stopped at the event
//! that failed (its position stays just before it) and the others go on.
//! A read error (a damaged log) stops the whole dispatcher: every handler
//! reads the same log.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use parking_lot::{Condvar, Mutex};

use super::{SUBSCRIPTION_PAGE_EVENTS, StartFrom, SubscriptionFilter, hub::Hub, read_events};
use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::io::{FileSystem, StdFs};
use crate::projection::HandlerError;
use crate::read::{Events, ReadAll};
use crate::store::{Core, Store};

/// A dispatcher handler: called with each event its filter selects.
/// Returning an error stops this handler (the others go on).
type Callback = Box<dyn FnMut(&RecordedEvent) -> std::result::Result<(), HandlerError> + Send + 'static>;

/// Adds handlers, then starts the dispatcher thread. Made by
/// [`Store::dispatcher`].
///
/// ```
/// use annal::{EventData, ExpectedVersion, Options, StartFrom, Store, SubscriptionFilter};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), Options::default())?;
/// let paid = Arc::new(AtomicU64::new(0));
/// let counter = paid.clone();
/// let dispatcher = store
///     .dispatcher()
///     .handler("paid-orders", SubscriptionFilter::category("Order").event_type("OrderPaid"), StartFrom::Start, move |_| {
///         counter.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     })?
///     .handler("audit", SubscriptionFilter::all(), StartFrom::Start, |e| {
///         println!("#{} {} {}", e.position(), e.stream(), e.event_type());
///         Ok(())
///     })?
///     .start()?;
/// store.append("Order-1", ExpectedVersion::NoStream, [EventData::new("OrderPaid", "{}")])?;
/// assert!(dispatcher.wait_for(1, std::time::Duration::from_secs(10)));
/// let handlers = dispatcher.stop()?; // where each handler got to
/// assert_eq!(handlers[0].position, 1);
/// assert_eq!(paid.load(Ordering::Relaxed), 1);
/// # Ok(())
/// # }
/// ```
pub struct DispatcherBuilder<F: FileSystem = StdFs> {
    /// Held weakly: a builder does not keep the store open.
    core: Weak<Core<F>>,
    handlers: Vec<Slot>,
}

/// A running dispatcher: one thread that feeds every handler added to its
/// [`DispatcherBuilder`]. Made by [`DispatcherBuilder::start`].
///
/// [`Dispatcher::stop`] stops it once the handler being called returns
/// and reports where each handler got to; dropping it does the same and
/// discards the report. Closing the store ends it too (see
/// [`Dispatcher::join`]): `close` waits for a handler call in progress, and
/// no handler is called once it has returned. The dispatcher itself does
/// not keep the store open, but a handler that owns a [`Store`] clone does,
/// as any other owner of one.
pub struct Dispatcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Why a dispatcher stopped by itself before being asked to: the log could
/// not be read (corruption, I/O). Carries where each handler got to.
#[derive(Debug, thiserror::Error)]
#[error("the dispatcher stopped: {error}")]
#[non_exhaustive]
pub struct DispatcherError {
    /// The read error.
    #[source]
    pub error: Error,
    /// Where each handler got to, in the order they were added.
    pub handlers: Vec<HandlerStatus>,
}

impl From<DispatcherError> for Error {
    fn from(e: DispatcherError) -> Error {
        e.error
    }
}

/// Where one handler of a dispatcher is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlerStatus {
    /// The name the handler was added with.
    pub name: String,
    /// Every matching event at or before this global position has been
    /// handled: the checkpoint to save for this handler.
    pub position: u64,
    /// Set when the handler failed (returned an error or panicked): the
    /// position of the event it failed on, and the error's message. A
    /// failed handler is called no more; its `position` is just before
    /// that event.
    pub failure: Option<(u64, String)>,
}

/// A handler being added or run.
struct Slot {
    filter: SubscriptionFilter,
    callback: Option<Callback>,
    /// Every position up to this one has been offered to the handler.
    scanned: u64,
    shared: Arc<HandlerShared>,
}

/// What the handle can see of a handler while the thread runs it.
#[derive(Debug)]
struct HandlerShared {
    name: String,
    position: AtomicU64,
    failure: Mutex<Option<(u64, String)>>,
}

/// What the handle and the thread share.
#[derive(Debug)]
struct Shared {
    hub: Arc<Hub>,
    hub_id: u64,
    stop: AtomicBool,
    handlers: Vec<Arc<HandlerShared>>,
    /// Set when the thread has ended (whatever the reason).
    ended: AtomicBool,
    /// The smallest position a [`Dispatcher::wait_for`] caller waits for
    /// (`u64::MAX`: none), kept under `progress`: progress is announced
    /// after each event from there on (and after a handler fails), not
    /// only after each page.
    waited: AtomicU64,
    /// Taken to announce progress (positions moved, a handler failed, the
    /// thread ended) and by [`Dispatcher::wait_for`] to check for it, so
    /// that no announcement falls between its check and its wait. Holds
    /// the position each caller waits for.
    progress: Mutex<Vec<u64>>,
    progressed: Condvar,
}

/// The smallest of the positions `wait_for` callers wait for; `u64::MAX`
/// for none.
fn waited(positions: &[u64]) -> u64 {
    positions.iter().copied().min().unwrap_or(u64::MAX)
}

impl Shared {
    /// Wakes [`Dispatcher::wait_for`] callers to look at the positions again.
    fn announce_progress(&self) {
        let _guard = self.progress.lock();
        self.progressed.notify_all();
    }
}

impl<F: FileSystem> Store<F> {
    /// A dispatcher for this store: add handlers with
    /// [`DispatcherBuilder::handler`], then [`DispatcherBuilder::start`]
    /// one thread that serves them all. Prefer it to one
    /// [`Subscription`](super::Subscription) per thread when there are
    /// many consumers: one thread and one read of the log serve them all.
    pub fn dispatcher(&self) -> DispatcherBuilder<F> {
        DispatcherBuilder {
            core: Arc::downgrade(self.core_arc()),
            handlers: Vec::new(),
        }
    }
}

impl<F: FileSystem> DispatcherBuilder<F> {
    /// Adds a handler, called with every event `filter` selects from
    /// `from` on, in global order, each once. Handlers are called in the
    /// order they were added. `StartFrom::End` means the events published
    /// after this call. Fails like [`Store::subscribe`]: a start past the
    /// store's last position, an invalid stream name, a closed store.
    pub fn handler<H>(
        mut self,
        name: impl Into<String>,
        filter: SubscriptionFilter,
        from: StartFrom,
        handler: H,
    ) -> Result<Self>
    where
        H: FnMut(&RecordedEvent) -> std::result::Result<(), HandlerError> + Send + 'static,
    {
        let core = self.core.upgrade().ok_or(Error::Closed)?;
        if core.subscriptions.is_closed() {
            return Err(Error::Closed);
        }
        filter.validate()?;
        let scanned = from.resolve(core.published.read().index.last_position())?;
        self.handlers.push(Slot {
            filter,
            callback: Some(Box::new(handler)),
            scanned,
            shared: Arc::new(HandlerShared {
                name: name.into(),
                position: AtomicU64::new(scanned),
                failure: Mutex::new(None),
            }),
        });
        Ok(self)
    }

    /// Starts the dispatcher thread. Fails with [`Error::Closed`] on a
    /// closed store.
    pub fn start(self) -> Result<Dispatcher> {
        let core = self.core.upgrade().ok_or(Error::Closed)?;
        // Registered before the thread's first read (see hub.rs).
        let (hub_id, wake) = core.subscriptions.register().ok_or(Error::Closed)?;
        let shared = Arc::new(Shared {
            hub: core.subscriptions.clone(),
            hub_id,
            stop: AtomicBool::new(false),
            handlers: self.handlers.iter().map(|h| h.shared.clone()).collect(),
            ended: AtomicBool::new(false),
            waited: AtomicU64::new(u64::MAX),
            progress: Mutex::new(Vec::new()),
            progressed: Condvar::new(),
        });
        drop(core);
        let core = self.core;
        let thread_shared = shared.clone();
        let mut handlers = self.handlers;
        let spawned = std::thread::Builder::new()
            .name("annal-dispatch".into())
            .spawn(move || {
                thread_shared.hub.mark_dispatcher_thread();
                let outcome = run(&core, &wake, &thread_shared, &mut handlers);
                thread_shared.ended.store(true, Ordering::Release);
                thread_shared.announce_progress();
                outcome
            });
        match spawned {
            Ok(thread) => Ok(Dispatcher {
                shared,
                thread: Some(thread),
            }),
            Err(e) => {
                shared.hub.unregister(hub_id);
                Err(Error::io("starting the dispatcher thread", e))
            }
        }
    }
}

impl Dispatcher {
    /// Where each handler is now, in the order they were added.
    pub fn status(&self) -> Vec<HandlerStatus> {
        self.shared
            .handlers
            .iter()
            .map(|h| HandlerStatus {
                name: h.name.clone(),
                position: h.position.load(Ordering::Acquire),
                failure: h.failure.lock().clone(),
            })
            .collect()
    }

    /// Waits until every handler has handled (or passed over, when its
    /// filter turns them away) every event up to `position`, for at most
    /// `timeout`: after an append, for example, to read a read model that
    /// holds it. Returns whether they got there; false as soon as they
    /// cannot: a handler failed before `position`, or the dispatcher ended
    /// (stopped, the store closed, a read failed). From one of its own
    /// handlers it does not wait (their positions move only once the call
    /// returns): it says whether they are there already.
    pub fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        // No deadline for a timeout too large to add (`Duration::MAX`).
        let deadline = Instant::now().checked_add(timeout);
        let shared = &self.shared;
        let own_thread = self
            .thread
            .as_ref()
            .is_some_and(|t| t.thread().id() == std::thread::current().id());
        let mut guard = shared.progress.lock();
        // Known while waiting: the thread then announces each event handled
        // from `position` on, not only each page (see `run`).
        guard.push(position);
        shared.waited.store(waited(&guard), Ordering::SeqCst);
        let there = self.wait_for_locked(position, deadline, own_thread, &mut guard);
        if let Some(at) = guard.iter().position(|&p| p == position) {
            guard.swap_remove(at);
        }
        shared.waited.store(waited(&guard), Ordering::SeqCst);
        there
    }

    fn wait_for_locked(
        &self,
        position: u64,
        deadline: Option<Instant>,
        own_thread: bool,
        guard: &mut parking_lot::MutexGuard<'_, Vec<u64>>,
    ) -> bool {
        let shared = &self.shared;
        let there = || {
            shared
                .handlers
                .iter()
                .all(|h| h.position.load(Ordering::Acquire) >= position)
        };
        loop {
            if there() {
                return true;
            }
            let failed_before = shared
                .handlers
                .iter()
                .any(|h| h.position.load(Ordering::Acquire) < position && h.failure.lock().is_some());
            if failed_before || own_thread || shared.ended.load(Ordering::Acquire) {
                return false;
            }
            let timed_out = match deadline {
                Some(deadline) => shared.progressed.wait_until(guard, deadline).timed_out(),
                None => {
                    shared.progressed.wait(guard);
                    false
                }
            };
            if timed_out {
                return there();
            }
        }
    }

    /// Whether the thread still runs (it ends on [`Dispatcher::stop`], when
    /// the store closes, or on a read error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the dispatcher once the handler being called returns, waits
    /// for its thread, and returns where each handler got to. Fails if the
    /// dispatcher had stopped on a read error (a damaged log); the error
    /// still carries every handler's status.
    ///
    /// Called from one of the dispatcher's own handlers, it does not wait
    /// (the thread is the caller): no handler is called after the current
    /// one returns.
    pub fn stop(mut self) -> std::result::Result<Vec<HandlerStatus>, DispatcherError> {
        self.signal_stop();
        self.wait()
    }

    /// Waits until the dispatcher ends by itself (the store is closed, a
    /// read failed, or every handler failed), then returns where each
    /// handler got to, like [`Dispatcher::stop`].
    pub fn join(mut self) -> std::result::Result<Vec<HandlerStatus>, DispatcherError> {
        self.wait()
    }

    fn signal_stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        // Drops the wake-up sender: a thread blocked waiting wakes up.
        self.shared.hub.unregister(self.shared.hub_id);
    }

    fn wait(&mut self) -> std::result::Result<Vec<HandlerStatus>, DispatcherError> {
        let outcome = match self.thread.take() {
            // From a handler: the thread is this one and stops once the
            // handler returns.
            Some(t) if t.thread().id() == std::thread::current().id() => Ok(()),
            Some(t) => match t.join() {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::Poisoned("the dispatcher thread panicked".into())),
            },
            None => Ok(()),
        };
        let handlers = self.status();
        match outcome {
            Ok(()) => Ok(handlers),
            Err(error) => Err(DispatcherError { error, handlers }),
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.signal_stop();
            let _ = self.wait();
        }
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("handlers", &self.status()).finish()
    }
}

impl<F: FileSystem> std::fmt::Debug for DispatcherBuilder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.handlers.iter().map(|h| h.shared.name.as_str()).collect();
        f.debug_struct("DispatcherBuilder").field("handlers", &names).finish()
    }
}

/// The dispatcher thread: reads pages of the log from the smallest handler
/// position and offers each event to every handler, until stopped, the
/// store closes, or a read fails.
fn run<F: FileSystem>(core: &Weak<Core<F>>, wake: &Receiver<()>, shared: &Shared, handlers: &mut [Slot]) -> Result<()> {
    let mut page = Vec::with_capacity(SUBSCRIPTION_PAGE_EVENTS);
    loop {
        let stopped = || shared.stop.load(Ordering::Acquire) || shared.hub.is_closed();
        if stopped() || handlers.iter().all(|h| h.callback.is_none()) {
            return Ok(());
        }
        // Drain a pending wake-up: the read below sees what it announced.
        if let Err(TryRecvError::Disconnected) = wake.try_recv() {
            return Ok(());
        }
        // The store is held only while the page is read, never while
        // handlers run: closing it releases the directory at once.
        let (head, short) = {
            let Some(core) = core.upgrade() else { return Ok(()) };
            let head = core.published.read().index.last_position();
            let from = handlers
                .iter()
                .filter(|h| h.callback.is_some())
                .map(|h| h.scanned)
                .min();
            let short = match from.filter(|&from| from < head) {
                Some(from) => {
                    let (options, limit) = match shared_category(handlers) {
                        // (Each page of a category merges its streams'
                        // positions from the index anew: larger pages.)
                        Some(category) => (
                            ReadAll::forward()
                                .from_position(from)
                                .limit(CATEGORY_PAGE_EVENTS)
                                .category(category),
                            CATEGORY_PAGE_EVENTS,
                        ),
                        None => (
                            ReadAll::forward().from_position(from).limit(SUBSCRIPTION_PAGE_EVENTS),
                            SUBSCRIPTION_PAGE_EVENTS,
                        ),
                    };
                    // Short: fewer events than asked for, so the read
                    // reached the end of the log as published when it began.
                    read_events(Events::all(core, options), |e| page.push(e))?.is_some_and(|read| read < limit)
                }
                None => true,
            };
            (head, short)
        };
        let mut failed = false;
        for event in page.drain(..) {
            for handler in handlers.iter_mut() {
                // Checked before each call, under the hub's handler-call
                // guard: a stop from a handler skips the handlers after it
                // for this event, and a close waits for the call in
                // progress and prevents any later one.
                let Some(_call) = shared.hub.handler_call() else {
                    return Ok(());
                };
                if shared.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                failed |= handler.offer(&event);
            }
            // Every running handler's position is at the event's now. The
            // positions moved (stored above) before the waited position is
            // read: with the waiter's store of it before its look at them,
            // one of the two sees the other.
            fence(Ordering::SeqCst);
            if std::mem::take(&mut failed) || event.position() >= shared.waited.load(Ordering::SeqCst) {
                shared.announce_progress();
            }
        }
        shared.announce_progress();
        if short && !stopped() {
            // A short page read everything published when it started,
            // which includes everything up to `head`.
            for handler in handlers.iter_mut().filter(|h| h.callback.is_some()) {
                handler.advance(head);
            }
            shared.announce_progress();
            if handlers.iter().all(|h| h.callback.is_none()) {
                return Ok(());
            }
            if wake.recv().is_err() {
                return Ok(());
            }
        }
    }
}

/// Most events of one page when every handler follows one category.
const CATEGORY_PAGE_EVENTS: usize = 16 * SUBSCRIPTION_PAGE_EVENTS;

/// The category every running handler follows, when they all follow the
/// same one: the shared read then reads only its events (through the
/// index, where that pays) instead of every event of the log. Its pages
/// hold every event the handlers' filters can accept, so a short one
/// still read everything published when it started.
fn shared_category(handlers: &[Slot]) -> Option<&str> {
    let mut running = handlers
        .iter()
        .filter(|h| h.callback.is_some())
        .map(|h| h.filter.followed_category());
    let first = running.next()??;
    running.all(|c| c == Some(first)).then_some(first)
}

impl Slot {
    /// Calls the handler with `event` if it is past its position and its
    /// filter accepts it; a failure stops the handler. Returns whether it
    /// failed.
    fn offer(&mut self, event: &RecordedEvent) -> bool {
        let Some(callback) = self.callback.as_mut() else {
            return false;
        };
        let position = event.position();
        if position <= self.scanned {
            return false;
        }
        if self.filter.accepts(event) {
            let failure = match catch_unwind(AssertUnwindSafe(|| callback(event))) {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(panic_message(panic.as_ref())),
            };
            if let Some(message) = failure {
                self.callback = None;
                self.advance(position - 1);
                *self.shared.failure.lock() = Some((position, message));
                return true;
            }
        }
        self.advance(position);
        false
    }

    fn advance(&mut self, position: u64) {
        if position > self.scanned {
            self.scanned = position;
            self.shared.position.store(position, Ordering::Release);
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("handler panicked: {text}")
}
