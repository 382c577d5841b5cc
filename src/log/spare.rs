//! The next segment file, made ahead of need.
//!
//! Preallocation keeps a durable append to one data sync, but the zeros
//! have to be written and synced by someone. Without help, the appender
//! that crosses a preallocation step or fills a segment does it while its
//! caller waits: megabytes of zeros and a full sync, milliseconds (tens of
//! them with the 32 MiB steps this replaced) in the middle of a stream of
//! 100-microsecond appends.
//!
//! Instead, once the active segment is half full, or as soon as a
//! roll-over has made it the active one (a store that filled a segment is
//! likely to fill the next, and a fast writer fills half of one before a
//! spare is made), a background thread makes a spare file,
//! [`SPARE_FILE_NAME`], the whole segment size long and synced (size and
//! blocks included). In durable mode its zeros are written; in the
//! periodic and buffered modes, where no append waits for a data sync,
//! its space is only reserved where the file system can
//! ([`FileHandle::reserve`]) and its pages read into the page cache
//! ([`FileHandle::prefetch`]): no zeros go to the disk, and the appender's
//! copies into them find their pages there. The roll-over that follows
//! adopts it: header written over its first bytes, data sync, rename to
//! the segment's name, directory sync ([`super::tail::LogTail::adopt`]).
//! The new segment then needs no preallocation at all. When the spare is
//! not ready in time (or could not be made), the roll-over creates the
//! segment itself, as without a spare.
//!
//! The spare never competes with the log for space: when the active
//! segment cannot grow, or the next one cannot be created, for lack of
//! space, the spare is stopped and removed and the operation tried again
//! ([`Spare::give_way`]); no spare is made again until the next open.
//!
//! The spare is a `*.tmp` file: a crash leaves at most an unfinished or
//! unused one, which the next writable open removes with other leftovers,
//! and a clean close removes it. While a store is open, its directory may
//! hold up to one segment size more than its segments.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::ahead::ZeroJob;
use super::tail::write_zeros;
use crate::io::{FileHandle, FileSystem, OpenMode, SYNC_PIECE_BYTES};

/// Name of the spare file in the store directory.
pub const SPARE_FILE_NAME: &str = "next-segment.tmp";

/// What the background thread is asked for.
pub(crate) enum Request<H> {
    /// A spare (see [`Spare::ask`]).
    Spare,
    /// Zeros ahead of the appender in the active segment (see
    /// [`Spare::zero_ahead`]).
    Zeros(Arc<H>, Arc<ZeroJob>),
}

/// The spare's life: asked for by the appender, made by the background
/// thread, taken by the roll-over.
enum State<H> {
    /// Nothing made or asked for.
    Idle,
    /// The background thread was asked for one.
    Asked,
    /// Made and synced: `len` zero bytes.
    Ready { file: H, len: u64 },
    /// Making it failed (a full disk, say): not asked again before the
    /// next roll-over, which creates its segment itself and reports its
    /// own errors.
    Failed,
    /// Given up for the rest of this open, to leave the disk's space to
    /// the log (see [`Spare::give_way`]).
    Disabled,
}

/// The spare segment file, shared by the appenders and the background
/// thread that makes it ([`serve`]).
pub(crate) struct Spare<H> {
    path: PathBuf,
    /// Size of the spare to make (the segment size).
    len: u64,
    /// Whether the spare's zeros are written rather than its space only
    /// reserved (see [`Spare::new`]).
    zero_fill: bool,
    state: Mutex<State<H>>,
    /// True whenever `state` may be `Idle` (changed with it, under its
    /// lock): [`Spare::ask`], called after every write past half of a
    /// segment, returns at once without the lock when it is false.
    may_be_idle: AtomicBool,
    /// Signalled by the background thread whenever it leaves `Asked`.
    settled: Condvar,
    /// Wakes the background thread; `None` before it starts and after
    /// [`Spare::stop`].
    requests: Mutex<Option<Sender<Request<H>>>>,
    /// Set at close: a spare being zero-filled stops early.
    stop: AtomicBool,
    /// Set by [`Spare::give_way`]: a spare being made stops early, and no
    /// other is made.
    abandon: AtomicBool,
    /// The last job of zeros asked for ahead of the appender, until it is
    /// claimed (see [`super::ahead`]).
    zero_job: Mutex<Option<Arc<ZeroJob>>>,
}

impl<H: FileHandle> Spare<H> {
    /// A spare for segments of `segment_size` bytes in `dir`. Nothing is
    /// made until a thread runs [`serve`] and [`Spare::ask`] is called.
    /// With `zero_fill` (durable mode) its zeros are written and synced,
    /// so that an append's data sync has no block allocation to flush;
    /// without, its space is reserved where the file system can.
    pub fn new(dir: &Path, segment_size: u64, zero_fill: bool) -> Spare<H> {
        Spare {
            path: dir.join(SPARE_FILE_NAME),
            len: segment_size,
            zero_fill,
            state: Mutex::new(State::Idle),
            may_be_idle: AtomicBool::new(true),
            settled: Condvar::new(),
            requests: Mutex::new(None),
            stop: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            zero_job: Mutex::new(None),
        }
    }

    /// Connects the background thread: returns the receiver that
    /// [`serve`] takes.
    pub fn connect(&self) -> Receiver<Request<H>> {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.requests.lock() = Some(tx);
        rx
    }

    /// Asks for a spare unless one is made, being made, already asked for,
    /// or failed since the last roll-over. Cheap: the appender calls it
    /// after each roll-over and each write past half of a segment.
    pub fn ask(&self) {
        if !self.may_be_idle.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.state.lock();
        if !matches!(*state, State::Idle) {
            self.may_be_idle.store(false, Ordering::Release);
            return;
        }
        if let Some(tx) = &*self.requests.lock()
            && tx.send(Request::Spare).is_ok()
        {
            *state = State::Asked;
            self.may_be_idle.store(false, Ordering::Release);
        }
    }

    /// Asks the background thread to write zeros over `range` of segment
    /// `segment`, the active one, whose preallocation ends at
    /// `range.start` (see [`super::ahead`]). The caller claims the job
    /// ([`Spare::claim_zeros`]) before it writes anything there.
    pub fn zero_ahead(&self, file: Arc<H>, segment: u64, range: Range<u64>) {
        let job = Arc::new(ZeroJob::new(segment, range));
        let mut last = self.zero_job.lock();
        if let Some(tx) = &*self.requests.lock()
            && tx.send(Request::Zeros(file, Arc::clone(&job))).is_ok()
        {
            *last = Some(job);
        }
    }

    /// Takes back the last job of zeros (see [`super::ahead`]): returns the
    /// range written whole when it was one of segment `segment`'s. After
    /// this returns, no zero is written there any more.
    pub fn claim_zeros(&self, segment: u64) -> Option<Range<u64>> {
        let job = self.zero_job.lock().take()?;
        let end = job.claim()?;
        (job.segment == segment).then(|| job.range.start..end)
    }

    /// Takes the spare if it is ready: its path, file and length. `None`
    /// when it is not (the caller creates the segment itself).
    pub fn take(&self) -> Option<(PathBuf, H, u64)> {
        let mut state = self.state.lock();
        self.may_be_idle.store(true, Ordering::Release);
        match std::mem::replace(&mut *state, State::Idle) {
            State::Ready { file, len } => Some((self.path.clone(), file, len)),
            State::Asked => {
                // Still being made: the next roll-over may take it.
                *state = State::Asked;
                None
            }
            State::Disabled => {
                *state = State::Disabled;
                None
            }
            State::Idle | State::Failed => None,
        }
    }

    /// Leaves the disk's space to the log: called when the active segment
    /// could not grow, or a new one could not be created, for lack of
    /// space. Stops a spare being made, removes the file, and makes no
    /// other until the store is opened again. Returns whether a file was
    /// removed (space may have been freed: worth trying again).
    pub fn give_way<F: FileSystem<File = H>>(&self, fs: &F) -> bool {
        self.abandon.store(true, Ordering::Release);
        let mut state = self.state.lock();
        // The thread checks `abandon` between 1 MiB pieces; bounded all the
        // same, should it be stuck in a slow call.
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(*state, State::Asked) {
            if self.settled.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        let had_spare = matches!(std::mem::replace(&mut *state, State::Disabled), State::Ready { .. });
        drop(state);
        let on_disk = fs.exists(&self.path);
        if on_disk {
            let _ = fs.remove_file(&self.path);
        }
        had_spare || on_disk
    }

    /// Bytes of the spare when it is made and waiting for the next
    /// roll-over; 0 otherwise.
    pub fn ready_bytes(&self) -> u64 {
        match &*self.state.lock() {
            State::Ready { len, .. } => *len,
            State::Idle | State::Asked | State::Failed | State::Disabled => 0,
        }
    }

    /// Tells the background thread to stop (a spare being made stops
    /// early); the caller joins the thread, then calls
    /// [`Spare::remove`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        drop(self.requests.lock().take());
    }

    /// Removes the spare file, once the thread has stopped. Best effort:
    /// a file left behind is a leftover that the next writable open
    /// removes.
    pub fn remove<F: FileSystem<File = H>>(&self, fs: &F) {
        *self.state.lock() = State::Disabled;
        if fs.exists(&self.path) {
            let _ = fs.remove_file(&self.path);
        }
    }
}

/// The background thread's loop: makes a spare for each request, and
/// writes the zeros asked for ahead of the appender, until
/// [`Spare::stop`].
pub(crate) fn serve<F: FileSystem>(fs: &F, spare: &Spare<F::File>, requests: &Receiver<Request<F::File>>) {
    while let Ok(request) = requests.recv() {
        if spare.stop.load(Ordering::Acquire) {
            break;
        }
        if let Request::Zeros(file, job) = request {
            job.run(&*file, &spare.stop);
            continue;
        }
        let made = if spare.abandon.load(Ordering::Acquire) {
            Ok(None)
        } else {
            make(fs, spare)
        };
        let mut state = spare.state.lock();
        // `give_way` gave up waiting for this spare (a call stuck for
        // seconds) and disabled spares: the file it made is not to be
        // used (its name may have been removed under it), and spares stay
        // off until the store is opened again.
        let disabled = matches!(*state, State::Disabled);
        match made {
            Ok(Some(file)) if !disabled => *state = State::Ready { file, len: spare.len },
            made => {
                // Stopped midway, failed, or given up: free the space. The
                // state changes only after the file is gone, so that a new
                // request never races this removal.
                let failed = made.is_err();
                drop(made);
                if fs.exists(&spare.path) {
                    let _ = fs.remove_file(&spare.path);
                }
                if !disabled {
                    *state = if failed { State::Failed } else { State::Idle };
                    spare.may_be_idle.store(true, Ordering::Release);
                }
            }
        }
        spare.settled.notify_all();
    }
    // Stopped: nobody waits for a spare any more, but wake a waiter all
    // the same.
    spare.settled.notify_all();
}

/// Makes and syncs the spare file; `None` when stopped midway.
fn make<F: FileSystem>(fs: &F, spare: &Spare<F::File>) -> std::io::Result<Option<F::File>> {
    if fs.exists(&spare.path) {
        fs.remove_file(&spare.path)?;
    }
    let file = fs.open(&spare.path, OpenMode::CreateNew)?;
    if !spare.zero_fill && file.reserve(0..spare.len)? {
        file.sync_all()?;
        file.prefetch(0..spare.len);
        return Ok(Some(file));
    }
    // Synced piece by piece (see `SYNC_PIECE_BYTES`).
    let mut at = 0;
    while at < spare.len {
        let end = spare.len.min(at + SYNC_PIECE_BYTES);
        if spare.abandon.load(Ordering::Acquire) || spare.stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        write_zeros(&file, at, end)?;
        file.sync_data()?;
        at = end;
    }
    file.sync_all()?;
    Ok(Some(file))
}
