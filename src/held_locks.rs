//! The store directories this process holds locked, so that an open that
//! finds a directory locked can say whether the holder is a handle of this
//! very process (a closed `Store` whose clones are still alive) rather than
//! another process.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Canonical directory paths with the number of lock holders on each.
static HELD: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

/// A directory's place in the registry while its locks are held; leaves it
/// when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    dir: PathBuf,
}

/// Registers `dir` as locked by this process. `None` when its canonical
/// path cannot be found (a simulated file system's directory).
pub(crate) fn hold(dir: &Path) -> Option<Held> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let mut held = HELD.lock();
    match held.iter_mut().find(|(d, _)| *d == dir) {
        Some((_, n)) => *n += 1,
        None => held.push((dir.clone(), 1)),
    }
    Some(Held { dir })
}

/// Whether this process holds `dir` locked.
pub(crate) fn is_held(dir: &Path) -> bool {
    std::fs::canonicalize(dir).is_ok_and(|dir| HELD.lock().iter().any(|(d, _)| *d == dir))
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = HELD.lock();
        if let Some(i) = held.iter().position(|(d, _)| *d == self.dir) {
            held[i].1 -= 1;
            if held[i].1 == 0 {
                held.swap_remove(i);
            }
        }
    }
}
