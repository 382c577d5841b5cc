//! Store configuration, with documented defaults.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::limits;

/// When an append is acknowledged, and so what a crash can take away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `append` returns only after the events are on stable storage
    /// (fdatasync). Concurrent appends share one sync (group commit).
    /// Nothing acknowledged is lost to a crash or power loss. The default.
    Sync,
    /// `append` returns once the events are handed to the operating system;
    /// a background thread syncs every interval. A process crash loses
    /// nothing; a power loss loses at most the last interval's appends
    /// (always whole appends, never part of one).
    Periodic(Duration),
    /// `append` returns once the events are handed to the operating system,
    /// which writes them when it chooses (the store syncs the log only
    /// when something needs it durable: sealing a segment, saving the
    /// index, a checkpoint or a snapshot, a backup, [`crate::Store::sync`],
    /// opening, closing). A process crash loses
    /// nothing; a power loss may lose recent appends (whole appends only).
    Buffered,
}

/// Options for [`crate::Store::open`]. Build with [`Options::default`] and
/// the `with_*` methods.
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) segment_size_bytes: u64,
    pub(crate) idempotency_window_events: usize,
    pub(crate) index_checkpoint_bytes: u64,
    pub(crate) create_if_missing: bool,
    pub(crate) read_only: bool,
    pub(crate) group_commit_spin: bool,
}

impl Default for Options {
    /// Durable appends, 64 MiB segments, a 10,000-event idempotency window,
    /// an index file saved at least every 64 MiB of log, creation of the
    /// directory when it is missing, and group-commit waits that yield
    /// before they sleep ([`Options::with_group_commit_spin`]).
    fn default() -> Self {
        Options {
            durability: Durability::Sync,
            segment_size_bytes: 64 * 1024 * 1024,
            idempotency_window_events: 10_000,
            index_checkpoint_bytes: 64 * 1024 * 1024,
            create_if_missing: true,
            read_only: false,
            group_commit_spin: true,
        }
    }
}

impl Options {
    /// Sets the durability mode (default [`Durability::Sync`]).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the size at which the log rolls to a new segment file (default
    /// 64 MiB; between 4 KiB and 1 TiB). One append must fit in a segment.
    /// While a writable store is open, its directory may hold one segment
    /// size more than its log: the next segment, made ahead once the active
    /// one is half full or was reached by a roll-over (see
    /// `Stats::spare_segment_bytes`), and removed at close. A smaller size bounds that, at the cost of more files.
    pub fn with_segment_size_bytes(mut self, bytes: u64) -> Self {
        self.segment_size_bytes = bytes;
        self
    }

    /// Sets how many recent event ids are remembered to detect retried
    /// appends under `ExpectedVersion::Any`/`StreamExists` (default 10,000;
    /// about 40 bytes of memory each, so 0.4 MB by default; 0 disables it).
    /// A retry of a stream's latest append is recognised beyond the window
    /// too, by the ids of the stream's last events; a retry of an older
    /// append after later appends to its stream is recognised only within
    /// it (retries with `ExpectedVersion::Exact` always are): beyond it,
    /// such a retry writes its events again, under the same ids, and a
    /// later retry of the original append under `Any` then finds those
    /// copies in the window and gets their result, writing nothing (under
    /// `Exact` it still gets the original result). At most
    /// `u32::MAX` ids are remembered, whatever is asked.
    pub fn with_idempotency_window_events(mut self, events: usize) -> Self {
        self.idempotency_window_events = events;
        self
    }

    /// Sets how much log may be written before the index file is saved
    /// again (default 64 MiB), at least: once the index file is larger than
    /// this, the index is saved after as many bytes of log as the file
    /// holds, so saving it never writes more than the log does. Open
    /// replays at most about that much log.
    pub fn with_index_checkpoint_bytes(mut self, bytes: u64) -> Self {
        self.index_checkpoint_bytes = bytes;
        self
    }

    /// Whether `open` creates a missing store (default true). When false,
    /// opening a directory without a store fails.
    pub fn with_create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Opens the store read-only (default false): the open writes nothing
    /// to the directory, so it works on read-only media and beside other
    /// read-only opens.
    ///
    /// - The store must exist (`create_if_missing` is ignored).
    /// - It takes a shared lock, which excludes a writable open (and is
    ///   excluded by one) but not other read-only opens. A directory
    ///   without a lock file has never been opened writable and is read
    ///   under the directory's own lock alone (on Unix; elsewhere without
    ///   a lock).
    /// - Open checks the log as usual and refuses the same damage, but
    ///   leaves a torn tail in place (readers stop before it; see
    ///   [`crate::RecoveryReport::torn_tail_bytes`]), leaves `*.tmp` files,
    ///   and never saves the index file: a stale index file makes every
    ///   read-only open replay the log after it.
    /// - Appends, checkpoint and snapshot saves, and
    ///   [`crate::Store::save_index`] fail with [`Error::ReadOnly`]; reads,
    ///   subscriptions (which catch up and then see nothing new), and
    ///   checkpoint and snapshot loads work.
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// How a durable append waits for a group commit that another thread
    /// leads (default true: yield, then sleep). With `true`, the waiting
    /// thread first gives up its CPU in a loop (`yield_now`), checking
    /// whether the commit is done, for at most twice the recent sync time
    /// (and never more than 1 ms), and sleeps only after that; with
    /// `false` it sleeps at once, to be woken by the leader. Likewise a
    /// leader waiting for the appends of its group to arrive (at most
    /// half a sync time) yields instead of sleeping. Yielding
    /// spares each waiter a sleep and a wake-up, which on a machine with
    /// few cores are most of a group commit's time besides the sync: 16
    /// threads appending durably ran 40 % faster on 2 cores (see
    /// docs/PERFORMANCE.md), for about 50 % more CPU per append. A
    /// yielding thread gives way to any other thread ready to run on its
    /// CPU. Only concurrent durable appends wait this way: a lone writer
    /// leads its own commits, and the other modes never wait for another
    /// thread's write. (A thread that saw its commit done while yielding
    /// may still be unparked by the leader afterwards, so its next
    /// `std::thread::park` can return at once: a spurious wake-up, which
    /// `park`'s contract allows.)
    pub fn with_group_commit_spin(mut self, spin: bool) -> Self {
        self.group_commit_spin = spin;
        self
    }

    /// Whether the store is opened read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The segment size.
    pub fn segment_size_bytes(&self) -> u64 {
        self.segment_size_bytes
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let size = self.segment_size_bytes;
        if !(limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_MAX).contains(&size) {
            return Err(Error::InvalidInput(format!(
                "segment size {size} must be between {} and {} bytes",
                limits::SEGMENT_BYTES_MIN,
                limits::SEGMENT_BYTES_MAX
            )));
        }
        if let Durability::Periodic(interval) = self.durability
            && interval.is_zero()
        {
            return Err(Error::InvalidInput("periodic sync interval must not be zero".into()));
        }
        Ok(())
    }

    /// Largest batch frame that fits in one segment.
    pub(crate) fn batch_bytes_max(&self) -> usize {
        let room = self.segment_size_bytes - crate::log::segment::SEGMENT_HEADER_BYTES;
        usize::try_from(room).unwrap_or(usize::MAX).min(limits::BATCH_BYTES_MAX)
    }
}
