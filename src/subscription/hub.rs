//! The wake-up hub: how writers tell subscribers that new events exist.
//!
//! Writers never hand events to subscribers. After a group commit has made
//! its events visible to readers (the published index is updated), the
//! leader calls [`Hub::notify`], which `try_send`s a unit token into each
//! subscriber's `bounded(1)` channel. A full channel already holds a token
//! the subscriber has not taken yet, so the new one is coalesced with it:
//! a writer never blocks on a subscriber and a subscriber costs at most one
//! token of memory, however far behind it is.
//!
//! No wake-up is lost. A subscriber registers *before* its first read of
//! the log and, after taking a token, always reads the log again. Take any
//! publish P, with index update U(P) followed by notify N(P):
//! - if the channel is empty at N(P), the token N(P) puts is taken later,
//!   and the read that follows it comes after U(P);
//! - if it is full at N(P), the token in it is taken after N(P), so again
//!   the read that follows comes after U(P).
//!
//! So every publish is followed by a read of the log that sees it, and a
//! subscriber blocks only after a read that found nothing new; `Hub`'s
//! lock orders registration against notification (a subscriber registered
//! after N(P) reads the log after U(P) anyway). The protocol is modelled
//! and checked with shuttle in `tests/subscriptions.rs`.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

/// The registered subscribers of one store.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    closed: AtomicBool,
    /// Held shared by dispatcher threads for each handler call, from the
    /// check that the store is open until the handler returns; taken
    /// exclusively by [`Hub::wait_for_handler_calls`]. Shared with
    /// `read_recursive`, never `read`: a call starts beside the calls in
    /// progress even while a close waits for them (a fair lock would queue
    /// it behind that close), as one of them may be waiting for it (a
    /// handler of another dispatcher stopping this one). Calls after the
    /// close check the flag first and never take it.
    handler_calls: RwLock<()>,
}

thread_local! {
    /// The hub (its address) of the store this thread dispatches for, 0 on
    /// other threads: its user code runs inside a handler call of that
    /// store, which a close of that store from there must not wait for.
    /// (The dispatcher thread holds the hub, so the address stays its.)
    static DISPATCHING_FOR: Cell<usize> = const { Cell::new(0) };
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    subscribers: Vec<(u64, Sender<()>)>,
}

impl Hub {
    /// Registers a subscriber: returns its id and the receiving end of its
    /// wake-up channel, or `None` once the store is closed.
    pub(crate) fn register(&self) -> Option<(u64, Receiver<()>)> {
        let mut inner = self.inner.lock();
        // Checked under the lock: `close` sets the flag and then empties
        // the list under the same lock, so no sender is left behind.
        if self.is_closed() {
            return None;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        inner.next_id += 1;
        let id = inner.next_id;
        inner.subscribers.push((id, tx));
        Some((id, rx))
    }

    /// Forgets a subscriber (its channel disconnects).
    pub(crate) fn unregister(&self, id: u64) {
        self.inner.lock().subscribers.retain(|(i, _)| *i != id);
    }

    /// Wakes every subscriber; never blocks on one.
    pub(crate) fn notify(&self) {
        let inner = self.inner.lock();
        for (_, tx) in &inner.subscribers {
            match tx.try_send(()) {
                // Full: a wake-up is already pending (coalesced).
                // Disconnected: the subscription is being dropped.
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }

    /// Ends every subscription: their channels disconnect, so blocked
    /// receivers wake up and see the store closed.
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock();
        self.closed.store(true, Ordering::Release);
        inner.subscribers.clear();
    }

    /// Starts a handler call: `None` once the store is closed. Hold the
    /// guard until the handler returns.
    pub(crate) fn handler_call(&self) -> Option<RwLockReadGuard<'_, ()>> {
        if self.is_closed() {
            return None;
        }
        let call = self.handler_calls.read_recursive();
        (!self.is_closed()).then_some(call)
    }

    /// Marks the calling thread as a dispatcher of this hub's store.
    pub(crate) fn mark_dispatcher_thread(&self) {
        DISPATCHING_FOR.with(|on| on.set(self.address()));
    }

    /// Waits until no handler call started before [`Hub::close`] is still
    /// running, so that none runs once the store's close has returned.
    /// From a thread dispatching for this store (one of its handlers
    /// closing it) it does not wait: that would wait for the caller
    /// itself, or deadlock with a concurrent close from another thread.
    pub(crate) fn wait_for_handler_calls(&self) {
        if DISPATCHING_FOR.with(Cell::get) != self.address() {
            drop(self.handler_calls.write());
        }
    }

    fn address(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Whether the store was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Number of registered subscribers.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().subscribers.len()
    }
}
