//! Zeros written ahead of the appender in the active segment (periodic and
//! buffered modes).
//!
//! A segment created on the spot (the first one after an open, or one
//! rolled to when no spare was ready) grows a preallocation step at a
//! time, and each step's zeros are a megabyte or more of writes. Made by
//! the appender, they held up the appends that crossed a step: in a run of
//! OS-buffered appends, the zeros were close to half of the appending
//! thread's time in the first segment. So after each step the appender
//! asks the background thread (the spare's, see [`super::spare`]) to write
//! the next step's zeros, and the next growth finds them written.
//!
//! The invariant: no zero is ever written where the appender may have
//! written data. A job writes only past the preallocated end it was asked
//! at, where the appender writes nothing until it grows there; before it
//! grows (and before it seals the segment, which cuts the file) it
//! *claims* the job: a job not started is cancelled, one running is waited
//! for (one step's zeros: milliseconds), and once the claim returns the
//! job writes nothing more. Durable mode keeps writing and syncing its own
//! zeros (see [`super::tail`]).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};

use super::tail::write_zeros;
use crate::io::FileHandle;

/// Zeros are written in pieces of this size, the stop flag checked
/// between them.
const PIECE_BYTES: u64 = 1024 * 1024;

/// One step of zeros to write ahead, in segment `segment`.
pub(crate) struct ZeroJob {
    /// The segment number.
    pub segment: u64,
    /// The bytes to fill, starting at the preallocated end when asked.
    pub range: Range<u64>,
    state: Mutex<JobState>,
    finished: Condvar,
}

/// A job's life.
#[derive(Clone, Copy)]
enum JobState {
    /// Asked for, not started.
    Queued,
    /// Being written by the background thread.
    Running,
    /// Done; `complete` when every zero of the range was written.
    Finished { complete: bool },
    /// Claimed before it started: never runs.
    Cancelled,
}

impl ZeroJob {
    /// A job for `range` of segment `segment`.
    pub fn new(segment: u64, range: Range<u64>) -> ZeroJob {
        ZeroJob {
            segment,
            range,
            state: Mutex::new(JobState::Queued),
            finished: Condvar::new(),
        }
    }

    /// Writes the zeros (the background thread), unless claimed first;
    /// stops early when `stop` is set (the store is closing).
    pub fn run<H: FileHandle>(&self, file: &H, stop: &AtomicBool) {
        {
            let mut state = self.state.lock();
            if !matches!(*state, JobState::Queued) {
                return;
            }
            *state = JobState::Running;
        }
        let mut at = self.range.start;
        let mut complete = true;
        while at < self.range.end {
            let end = self.range.end.min(at.saturating_add(PIECE_BYTES));
            // A failure (a full disk) leaves the rest to the appender, whose
            // own write reports it.
            if stop.load(Ordering::Acquire) || write_zeros(file, at, end).is_err() {
                complete = false;
                break;
            }
            at = end;
        }
        *self.state.lock() = JobState::Finished { complete };
        self.finished.notify_all();
    }

    /// Takes the job back (the appender): cancels it if it has not
    /// started, waits for it if it is running. Returns the end of the
    /// zeros written from `range.start` on when it finished whole. Once
    /// this returns, the job writes nothing more.
    pub fn claim(&self) -> Option<u64> {
        let mut state = self.state.lock();
        loop {
            match *state {
                JobState::Queued => {
                    *state = JobState::Cancelled;
                    return None;
                }
                JobState::Running => self.finished.wait(&mut state),
                JobState::Finished { complete } => return complete.then_some(self.range.end),
                JobState::Cancelled => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A job claimed before it runs never writes; one that ran reports
    /// its end; a job stopped midway reports nothing.
    #[test]
    fn a_claimed_job_writes_nothing_more() {
        let file = Counting::default();
        let job = ZeroJob::new(1, 0..10);
        assert_eq!(job.claim(), None);
        job.run(&file, &AtomicBool::new(false));
        assert_eq!(job.claim(), None);
        assert_eq!(file.writes.load(Ordering::Relaxed), 0, "a cancelled job wrote");

        let job = ZeroJob::new(1, 0..10);
        job.run(&file, &AtomicBool::new(false));
        assert_eq!(job.claim(), Some(10));
        assert_eq!(file.writes.load(Ordering::Relaxed), 1);

        let job = ZeroJob::new(1, 0..10);
        job.run(&file, &AtomicBool::new(true));
        assert_eq!(job.claim(), None);
        assert_eq!(file.writes.load(Ordering::Relaxed), 1, "a stopped job wrote");
    }

    /// The seal's claim: a roll-over while a job still writes zeros into
    /// the segment being sealed waits for it, so that no zero lands after
    /// the seal's cut. A simulated disk holds the job's write in progress
    /// while a large append rolls the segment over; the sealed segment
    /// must end where the next one's header says its last batch ends
    /// (FORMAT.md, `previous end`), and every event read back.
    #[cfg(feature = "sim")]
    #[test]
    fn a_roll_over_waits_for_zeros_still_being_written() {
        use crate::io::sim::SimFs;
        use crate::log::segment::file_name;
        use crate::{Durability, EventData, ExpectedVersion, Options, ReadAll, Store};

        const MIB: u64 = 1024 * 1024;
        let fs = SimFs::new(7);
        let options = Options::default()
            .with_segment_size_bytes(8 * MIB)
            .with_durability(Durability::Buffered);
        let store = Store::open_with(fs.clone(), "/db", options.clone()).unwrap();
        let first = std::path::Path::new("/db").join(file_name(1));
        let len = |path: &std::path::Path| fs.read(path).map_or(0, |b| b.len() as u64);
        // The first segment starts with a megabyte preallocated; the first
        // growth (to about 2 MiB) asks for the next step's zeros (about
        // 2 to 4 MiB), whose write past 3 MiB is held: the job is running.
        let hold = fs.hold_next_write_from(3 * MIB);
        let start = len(&first);
        let mut written = 0usize;
        while len(&first) == start {
            let data = vec![b'a' + (written % 26) as u8; 64 * 1024];
            store
                .append("s", ExpectedVersion::Any, [EventData::new("Small", data)])
                .unwrap();
            written += 1;
        }
        hold.wait_held();
        let releaser = {
            let hold = hold.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                hold.release();
            })
        };
        // Too large for what is left of the first segment: a roll-over,
        // whose seal must wait for the held job.
        let big = vec![b'B'; 7 * MIB as usize];
        store
            .append("s", ExpectedVersion::Any, [EventData::new("Big", big)])
            .unwrap();
        releaser.join().unwrap();
        store.close().unwrap();
        let second = fs.read(&std::path::Path::new("/db").join(file_name(2))).unwrap();
        let previous_end = u64::from_le_bytes(second[48..56].try_into().unwrap());
        assert_eq!(len(&first), previous_end, "zeros landed after the sealed segment's cut");
        let store = Store::open_with(fs.clone(), "/db", options).unwrap();
        let events = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        assert_eq!(events.len(), written + 1);
        for (i, e) in events[..written].iter().enumerate() {
            assert!(
                e.data().iter().all(|&b| b == b'a' + (i % 26) as u8),
                "event {} damaged",
                i + 1
            );
        }
        assert!(events[written].data().iter().all(|&b| b == b'B'));
    }

    /// A file that counts its writes; nothing else is called.
    #[derive(Default)]
    struct Counting {
        writes: AtomicUsize,
    }

    impl FileHandle for Counting {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
            unreachable!()
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            unreachable!()
        }
        fn sync_all(&self) -> std::io::Result<()> {
            unreachable!()
        }
        fn set_len(&self, _: u64) -> std::io::Result<()> {
            unreachable!()
        }
        fn len(&self) -> std::io::Result<u64> {
            unreachable!()
        }
        fn map(&self, _: u64) -> std::io::Result<bytes::Bytes> {
            unreachable!()
        }
        fn try_lock(&self) -> std::io::Result<bool> {
            unreachable!()
        }
        fn try_lock_shared(&self) -> std::io::Result<bool> {
            unreachable!()
        }
    }
}
