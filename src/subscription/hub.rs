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
    /// exclusively by [`Hub::wait_for_handler_calls`].
    handler_calls: RwLock<()>,
}

thread_local! {
    /// Whether this thread is a dispatcher's: its user code runs inside a
    /// handler call, which a close from there must not wait for.
    static ON_DISPATCHER_THREAD: Cell<bool> = const { Cell::new(false) };
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
        let call = self.handler_calls.read();
        (!self.is_closed()).then_some(call)
    }

    /// Marks the calling thread as a dispatcher's.
    pub(crate) fn mark_dispatcher_thread() {
        ON_DISPATCHER_THREAD.with(|on| on.set(true));
    }

    /// Waits until no handler call started before [`Hub::close`] is still
    /// running, so that none runs once the store's close has returned.
    /// From a dispatcher's thread (a handler closing the store) it does not
    /// wait: that would wait for the caller itself, or deadlock with a
    /// concurrent close from another thread.
    pub(crate) fn wait_for_handler_calls(&self) {
        if !ON_DISPATCHER_THREAD.with(Cell::get) {
            drop(self.handler_calls.write());
        }
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
