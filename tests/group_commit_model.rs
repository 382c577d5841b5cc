//! A shuttle model of the group-commit protocol (`src/writer.rs`):
//! appenders queue under the writer lock; whoever finds no leader becomes
//! the leader, yields with the lock released while its queue holds fewer
//! appends than the previous group (a bounded number of times: the
//! gathering step), takes the queue, writes and syncs it outside the lock, then
//! publishes `done_seq`, bumps the commit generation and unparks the
//! appenders that registered to wait for it; a waiting appender yields a
//! few times, then parks, until the generation moves, and returns if its
//! sequence number is covered, or takes the lock again (and possibly
//! lead).
//!
//! This models the protocol with the same steps and the same
//! synchronization (mutex, atomics, park/unpark by thread, generation
//! counter), not the store's code itself: shuttle needs its own
//! primitives. Shuttle explores thousands of random interleavings and
//! fails on a deadlock or a broken assertion. Checked:
//! - an append returns Ok only once the sync covering it completed;
//! - every append returns (no lost wake-up, no deadlock);
//! - groups are synced in sequence order, with no gap;
//! - after a failed sync (poison), the appenders of that group and every
//!   later one get an error, and none waits forever.

use shuttle::sync::atomic::{AtomicU64, Ordering};
use shuttle::sync::{Arc, Mutex};
use shuttle::thread::{self, Thread};

#[derive(Default)]
struct State {
    next_seq: u64,
    queue: Vec<u64>,
    leader_active: bool,
    /// Appends the previous group carried.
    last_group: usize,
    done_seq: u64,
    poisoned: bool,
    waiters: Vec<Thread>,
}

struct Writer {
    state: Mutex<State>,
    committed_seq: AtomicU64,
    generation: AtomicU64,
    /// The model disk: the highest sequence number made durable.
    durable: AtomicU64,
    /// Sync number that fails (0: none).
    fail_sync: u64,
    syncs: AtomicU64,
}

impl Writer {
    fn new(fail_sync: u64) -> Writer {
        Writer {
            state: Mutex::new(State::default()),
            committed_seq: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            fail_sync,
            syncs: AtomicU64::new(0),
        }
    }

    fn append(&self) -> Result<u64, ()> {
        let mut w = self.state.lock().expect("lock");
        if w.poisoned {
            return Err(());
        }
        w.next_seq += 1;
        let seq = w.next_seq;
        w.queue.push(seq);
        loop {
            if w.done_seq >= seq {
                return Ok(seq);
            }
            if w.poisoned {
                return Err(());
            }
            if !w.leader_active {
                w = self.lead(w);
                continue;
            }
            let generation = self.generation.load(Ordering::Acquire);
            w.waiters.push(thread::current());
            drop(w);
            // Yield a while before parking (the store bounds it by time;
            // here by a count): the leader's unpark may come meanwhile
            // and leave a token that the park below consumes.
            for _ in 0..2 {
                if self.generation.load(Ordering::Acquire) != generation {
                    break;
                }
                thread::yield_now();
            }
            while self.generation.load(Ordering::Acquire) == generation {
                thread::park();
            }
            if self.committed_seq.load(Ordering::Acquire) >= seq {
                return Ok(seq);
            }
            w = self.state.lock().expect("lock");
        }
    }

    fn lead<'a>(&'a self, mut w: shuttle::sync::MutexGuard<'a, State>) -> shuttle::sync::MutexGuard<'a, State> {
        w.leader_active = true;
        // Gather (durable mode with `group_commit_spin`): while the queue
        // holds fewer appends than the previous group, yield with the lock
        // released for appenders to queue (the store bounds it by time;
        // here by a count).
        for _ in 0..2 {
            if w.queue.len() >= w.last_group {
                break;
            }
            drop(w);
            thread::yield_now();
            w = self.state.lock().expect("lock");
        }
        let group = std::mem::take(&mut w.queue);
        w.last_group = group.len();
        drop(w);
        // Write and sync outside the lock.
        let sync_number = self.syncs.fetch_add(1, Ordering::AcqRel) + 1;
        let last = group.iter().copied().max().unwrap_or(0);
        let ok = sync_number != self.fail_sync;
        if ok && last > 0 {
            let before = self.durable.load(Ordering::Acquire);
            assert_eq!(
                group.first().copied(),
                Some(before + 1),
                "a group was skipped or reordered"
            );
            self.durable.store(last, Ordering::Release);
        }
        let mut w = self.state.lock().expect("lock");
        if ok {
            w.done_seq = w.done_seq.max(last);
        } else {
            w.poisoned = true;
            w.queue.clear();
        }
        w.leader_active = false;
        self.committed_seq.store(w.done_seq, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let waiters = std::mem::take(&mut w.waiters);
        drop(w);
        for t in &waiters {
            t.unpark();
        }
        self.state.lock().expect("lock")
    }
}

fn scenario(threads: u64, appends: u64, fail_sync: u64) {
    let writer = Arc::new(Writer::new(fail_sync));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let writer = writer.clone();
            thread::spawn(move || {
                let mut acked = Vec::new();
                for _ in 0..appends {
                    match writer.append() {
                        Ok(seq) => {
                            assert!(
                                writer.durable.load(Ordering::Acquire) >= seq,
                                "acknowledged before its sync"
                            );
                            acked.push(seq);
                        }
                        Err(()) => break,
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<u64> = handles.into_iter().flat_map(|h| h.join().expect("appender")).collect();
    acked.sort_unstable();
    let durable = writer.durable.load(Ordering::Acquire);
    if fail_sync == 0 {
        assert_eq!(acked, (1..=threads * appends).collect::<Vec<_>>());
    }
    assert!(acked.iter().all(|&s| s <= durable));
}

#[test]
fn group_commit_acknowledges_only_synced_appends_and_never_hangs() {
    shuttle::check_random(|| scenario(3, 3, 0), 3000);
}

#[test]
fn group_commit_with_a_failed_sync_fails_the_group_and_later_appends() {
    for fail in 1..=3 {
        shuttle::check_random(move || scenario(3, 2, fail), 1000);
    }
}

#[test]
fn group_commit_exhaustive_small() {
    shuttle::check_pct(|| scenario(2, 2, 0), 2000, 3);
}
