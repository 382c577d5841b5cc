//! Projections: read models built from a subscription, resumed from a
//! durable checkpoint.
//!
//! A [`ProjectionRunner`] subscribes from the projection's checkpoint,
//! applies each event to the [`Projection`], and every N events or T
//! milliseconds (and whenever it has caught up) ends the batch
//! ([`Projection::end_batch`], where the projection makes its state
//! durable) and *then* saves the checkpoint.
//!
//! Delivery is **at least once**. A crash after `end_batch` and before the
//! checkpoint is saved, or during a batch, makes the next run apply the
//! events after the last saved checkpoint again. Handlers must therefore be
//! idempotent; see `docs/SUBSCRIPTIONS.md` for how to write one (in short:
//! keep the last applied position with the read model and skip events at
//! or before it, or make every write an upsert keyed by event id or
//! stream version).
//!
//! A handler that fails (returns an error, or panics and the app catches
//! the panic and runs the runner again) sends the runner back to its last
//! saved checkpoint: the event it failed on is applied again, never
//! skipped.

use std::fmt;
use std::time::{Duration, Instant};

use crate::checkpoint::Checkpoints;
use crate::error::Error;
use crate::event::RecordedEvent;
use crate::io::{FileSystem, StdFs};
use crate::store::Store;
use crate::subscription::{StartFrom, Subscription, SubscriptionFilter, SubscriptionStatus};

/// The error a projection's handler returns.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A read model fed by events. Only [`Projection::apply`] is required.
pub trait Projection {
    /// Applies one event. Must be idempotent: after a crash the events
    /// since the last checkpoint are applied again.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError>;

    /// Called before the first event of a batch.
    fn begin_batch(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Called after the last event of a batch, before the checkpoint is
    /// saved at `position`: make the read model's state durable here
    /// (commit a transaction, write a file). Saving the position with the
    /// state lets [`Projection::apply`] skip events it already has. The
    /// log holds every event up to `position` durably by then (the runner
    /// syncs it first in the periodic and buffered modes). Not called
    /// when only events the filter does not match have passed: the
    /// checkpoint then moves on alone.
    fn end_batch(&mut self, position: u64) -> Result<(), HandlerError> {
        let _ = position;
        Ok(())
    }

    /// Forgets all state, for [`ProjectionRunner::rebuild`].
    fn reset(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Why a projection run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading events or saving the checkpoint failed (the store's error;
    /// [`Error::Closed`] once the store is closed).
    #[error(transparent)]
    Store(#[from] Error),
    /// The projection's handler failed. The runner has gone back to its
    /// last saved checkpoint: the next run applies the events after it
    /// again, starting with the one that failed.
    #[error("projection handler failed at position {position}: {source}")]
    Handler {
        /// Global position of the event being handled; for a failed
        /// `begin_batch`, the event that opened the batch; for a failed
        /// `end_batch`, the position the batch ends at (the checkpoint it
        /// would have saved); 0 for a failed `reset`.
        position: u64,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
}

/// Runs a [`Projection`] from a subscription and keeps its checkpoint.
pub struct ProjectionRunner<P, F: FileSystem = StdFs> {
    name: String,
    projection: P,
    subscription: Subscription<F>,
    checkpoints: Checkpoints<F>,
    every_events: u64,
    every: Duration,
    /// Events applied since the last save.
    pending: u64,
    batch_started: Option<Instant>,
    /// The last checkpoint saved (or loaded).
    saved: u64,
    /// A handler call is in progress: still set at the next run only when
    /// the call panicked (and the app caught the panic), and then the
    /// runner goes back to its checkpoint as after a handler error.
    in_handler: bool,
    /// A rebuild's `reset` has not returned Ok (it failed or panicked): the
    /// next run calls it again before applying anything, so that no event
    /// is applied over a half-reset projection.
    reset_pending: bool,
}

impl<P: Projection, F: FileSystem> ProjectionRunner<P, F> {
    /// A runner for `projection`, with checkpoint `name`, fed the events
    /// `filter` selects. Resumes after the saved checkpoint (from the first
    /// event when there is none). Saves the checkpoint every 1,000 events
    /// or second by default (see [`ProjectionRunner::with_checkpoint_every`]).
    /// Fails with [`Error::ReadOnly`] on a read-only store, where no
    /// checkpoint could be saved (every run would apply the same events
    /// again).
    pub fn new(
        store: &Store<F>,
        name: impl Into<String>,
        filter: SubscriptionFilter,
        projection: P,
    ) -> Result<Self, ProjectionError> {
        if store.is_read_only() {
            return Err(Error::ReadOnly {
                path: store.path().to_path_buf(),
            }
            .into());
        }
        let name = name.into();
        let checkpoints = store.checkpoints();
        let saved = checkpoints.load(&name)?;
        let from = saved.map_or(StartFrom::Start, StartFrom::After);
        let subscription = store.subscribe(filter, from)?;
        Ok(ProjectionRunner {
            name,
            projection,
            subscription,
            checkpoints,
            every_events: 1000,
            every: Duration::from_secs(1),
            pending: 0,
            batch_started: None,
            saved: saved.unwrap_or(0),
            in_handler: false,
            reset_pending: false,
        })
    }

    /// Saves the checkpoint after at most `events` events (at least 1) or
    /// `interval` since a batch began, whichever comes first.
    pub fn with_checkpoint_every(mut self, events: u64, interval: Duration) -> Self {
        self.every_events = events.max(1);
        self.every = interval;
        self
    }

    /// Applies every event available now, then ends the batch and saves
    /// the checkpoint. Returns the number of events applied.
    pub fn run_until_caught_up(&mut self) -> Result<u64, ProjectionError> {
        self.recover_from_panic()?;
        let mut applied = 0;
        while let Some(event) = self.subscription.try_recv()? {
            self.handle(&event)?;
            applied += 1;
        }
        self.commit()?;
        Ok(applied)
    }

    /// Applies events as they come until `stop` returns true (checked at
    /// least every `poll`) or the store closes; saves the checkpoint each
    /// time it catches up and before returning. Returns the number of
    /// events applied. A store closing ends the run with `Ok`; events
    /// applied since the last save are applied again by the next run.
    pub fn run(&mut self, poll: Duration, mut stop: impl FnMut(&P) -> bool) -> Result<u64, ProjectionError> {
        match self.recover_from_panic() {
            Err(ProjectionError::Store(Error::Closed)) => return Ok(0),
            other => other?,
        }
        let mut applied = 0;
        loop {
            let step = if stop(&self.projection) {
                self.commit().map(|()| false)
            } else {
                match self.subscription.recv_timeout(poll) {
                    Ok(Some(event)) => self.handle(&event).map(|()| {
                        applied += 1;
                        true
                    }),
                    Ok(None) => self.commit().map(|()| true),
                    Err(e) => Err(e.into()),
                }
            };
            match step {
                Ok(true) => {}
                Ok(false) | Err(ProjectionError::Store(Error::Closed)) => return Ok(applied),
                Err(e) => return Err(e),
            }
        }
    }

    /// Rebuilds from scratch: removes the checkpoint (durably), resets the
    /// projection, and resubscribes from the first event. The next run
    /// applies every event again. When `reset` fails (or panics, and the
    /// app goes on), the next run calls it again before applying anything. (The checkpoint goes first: a crash in
    /// between leaves a projection replayed over its old state, which an
    /// idempotent handler tolerates, never a reset projection that skips
    /// events.)
    pub fn rebuild(&mut self) -> Result<(), ProjectionError> {
        self.checkpoints.remove(&self.name)?;
        self.saved = 0;
        self.pending = 0;
        self.batch_started = None;
        self.in_handler = false;
        self.subscription = self.subscription.resubscribe(StartFrom::Start)?;
        self.reset_pending = true;
        self.reset()
    }

    /// Calls the projection's `reset` (see `reset_pending`).
    fn reset(&mut self) -> Result<(), ProjectionError> {
        self.call_handler(|p| p.reset())
            .map_err(|source| ProjectionError::Handler { position: 0, source })?;
        self.reset_pending = false;
        Ok(())
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The projection, mutably.
    pub fn projection_mut(&mut self) -> &mut P {
        &mut self.projection
    }

    /// Gives the projection back.
    pub fn into_projection(self) -> P {
        self.projection
    }

    /// The checkpoint name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last checkpoint saved (or loaded at start; 0 for none).
    pub fn checkpoint(&self) -> u64 {
        self.saved
    }

    /// The subscription's status: position, head, lag, live or not.
    pub fn status(&self) -> SubscriptionStatus {
        self.subscription.status()
    }

    /// Calls the projection, marking the call in progress until it
    /// returns (see `in_handler`).
    fn call_handler<T>(&mut self, f: impl FnOnce(&mut P) -> T) -> T {
        self.in_handler = true;
        let out = f(&mut self.projection);
        self.in_handler = false;
        out
    }

    /// Before a run: after a handler call that panicked, goes back to the
    /// last checkpoint, as after a handler error, so that the event it
    /// panicked on (already taken from the subscription) and the rest of
    /// its batch are applied again instead of skipped; after a rebuild
    /// whose `reset` failed or panicked, calls `reset` again.
    fn recover_from_panic(&mut self) -> Result<(), ProjectionError> {
        if self.in_handler {
            self.rewind()?;
            self.in_handler = false;
        }
        if self.reset_pending {
            self.reset()?;
        }
        Ok(())
    }

    /// Drops the open batch and resubscribes after the last saved
    /// checkpoint.
    fn rewind(&mut self) -> Result<(), ProjectionError> {
        self.pending = 0;
        self.batch_started = None;
        self.subscription = self.subscription.resubscribe(StartFrom::After(self.saved))?;
        Ok(())
    }

    fn handle(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let position = event.position();
        let result = self.apply_one(event);
        if let Err(source) = result {
            // Go back to the last checkpoint, so that the failed event and
            // the rest of its batch are applied again by the next run.
            self.rewind()?;
            return Err(ProjectionError::Handler { position, source });
        }
        self.pending += 1;
        let due = self.batch_started.is_some_and(|t| t.elapsed() >= self.every);
        if self.pending >= self.every_events || due {
            self.commit()?;
        }
        Ok(())
    }

    fn apply_one(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if self.batch_started.is_none() {
            self.call_handler(|p| p.begin_batch())?;
            self.batch_started = Some(Instant::now());
        }
        self.call_handler(|p| p.apply(event))
    }

    /// Ends the open batch (if any) and saves the checkpoint when it moved.
    /// In the periodic and buffered modes the log is synced first: a read
    /// model that stores its position (`end_batch`) must never be ahead of
    /// what a power loss leaves of the log, or the events that take the
    /// lost positions would be skipped as already applied.
    fn commit(&mut self) -> Result<(), ProjectionError> {
        let position = self.subscription.position();
        if self.batch_started.is_some() {
            self.checkpoints.sync_log()?;
            if let Err(source) = self.call_handler(|p| p.end_batch(position)) {
                self.rewind()?;
                return Err(ProjectionError::Handler { position, source });
            }
            self.batch_started = None;
        }
        if position != self.saved {
            self.checkpoints.save(&self.name, position)?;
            self.saved = position;
        }
        self.pending = 0;
        Ok(())
    }
}

impl<P: fmt::Debug, F: FileSystem> fmt::Debug for ProjectionRunner<P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("name", &self.name)
            .field("projection", &self.projection)
            .field("checkpoint", &self.saved)
            .field("status", &self.subscription.status())
            .finish()
    }
}
