//! Fast random event ids.
//!
//! [`crate::EventData::new`] needs a fresh UUID for every event. Asking the
//! operating system for randomness each time costs a system call per event
//! (about a tenth of a small append's time, measured). Instead each thread
//! seeds a xoshiro256++ generator once from the operating system (256 bits)
//! and draws 122 random bits per id, formatted as a version 4 UUID. Ids
//! need to be unique, not unpredictable: with 256 bits of seed per thread,
//! two threads' sequences overlap with negligible probability.
//!
//! A process forked from one that has made ids inherits the generator's
//! state, and would go on to make the very ids its parent makes next. On
//! Linux a `pthread_atfork` handler counts forks, and a generator seeded
//! before the latest fork seeds itself again; elsewhere the generator
//! remembers its process id and compares it on each id.

use std::cell::RefCell;

use uuid::Uuid;

/// xoshiro256++ (Blackman and Vigna), seeded from the OS.
struct Xoshiro256 {
    s: [u64; 4],
    /// The process it was seeded in (see [`process_mark`]).
    process: u64,
}

impl Xoshiro256 {
    fn from_os() -> Xoshiro256 {
        let process = process_mark();
        let a = Uuid::new_v4().as_u128();
        let b = Uuid::new_v4().as_u128();
        let s = [a as u64, (a >> 64) as u64, b as u64, (b >> 64) as u64];
        // An all-zero state would stay zero; the OS never gives one, but
        // guard anyway.
        if s == [0; 4] {
            return Xoshiro256 {
                s: [1, 2, 3, 4],
                process,
            };
        }
        Xoshiro256 { s, process }
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

thread_local! {
    static GENERATOR: RefCell<Option<Xoshiro256>> = const { RefCell::new(None) };
}

/// A new random (version 4) UUID.
pub(crate) fn new_event_id() -> Uuid {
    let bits = GENERATOR.with(|g| {
        let mut g = g.borrow_mut();
        let g = match &mut *g {
            Some(g) if g.process == process_mark() => g,
            // Never seeded, or seeded in the parent of this process.
            stale => stale.insert(Xoshiro256::from_os()),
        };
        (u128::from(g.next()) << 64) | u128::from(g.next())
    });
    uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid()
}

/// Forks seen by this process's line (Linux): the child handler below
/// counts them. A child starts from its parent's count plus one.
#[cfg(target_os = "linux")]
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(target_os = "linux")]
extern "C" fn count_fork() {
    // Async-signal-safe: one atomic add, no allocation, no lock.
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// A value that changes when the calling process is a fork of the one the
/// last value was read in: the fork count on Linux (an atomic load, no
/// system call; the handler is registered before the first value is
/// read), the process id elsewhere.
#[cfg(target_os = "linux")]
fn process_mark() -> u64 {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `count_fork` is an `extern "C"` function that only adds
        // to an atomic, which is safe in a freshly forked child; passing
        // no prepare or parent handler is allowed. If registration fails
        // (ENOMEM), forks go uncounted, as they were before.
        let _ = unsafe { libc::pthread_atfork(None, None, Some(count_fork)) };
    });
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(not(target_os = "linux"))]
fn process_mark() -> u64 {
    u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_version_4_and_distinct_across_threads() {
        let ids: Vec<Uuid> = (0..4)
            .map(|_| std::thread::spawn(|| (0..10_000).map(|_| new_event_id()).collect::<Vec<_>>()))
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 4));
        assert!(ids.iter().all(|id| id.get_variant() == uuid::Variant::RFC4122));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_forked_child_makes_other_ids_than_its_parent() {
        // Seed this thread's generator, then fork: without reseeding, the
        // child's first id would be the parent's next one.
        let _ = new_event_id();
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes an id (no allocation, no lock another
        // thread could hold), writes it to the pipe and exits at once.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let id = new_event_id().as_u128().to_le_bytes();
            // SAFETY: writes 16 bytes from a live buffer, then exits without
            // running the parent's destructors or the test harness.
            unsafe {
                libc::write(fds[1], id.as_ptr().cast(), id.len());
                libc::_exit(0);
            }
        }
        let parent_id = new_event_id().as_u128();
        let mut buf = [0u8; 16];
        // SAFETY: reads at most 16 bytes into a live buffer; waits for the
        // child forked above.
        let (n, _) = unsafe {
            let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            libc::close(fds[0]);
            libc::close(fds[1]);
            (n, status)
        };
        assert_eq!(n, 16, "the child wrote no id");
        let child_id = u128::from_le_bytes(buf);
        assert_ne!(child_id, parent_id, "the child repeated its parent's next id");
    }

    #[test]
    fn ids_use_all_random_bits() {
        // Every one of the 122 random bits takes both values.
        let mut ones = 0u128;
        let mut zeros = 0u128;
        for _ in 0..1000 {
            let v = new_event_id().as_u128();
            ones |= v;
            zeros |= !v;
        }
        assert_eq!((ones & zeros).count_ones(), 122);
    }
}
