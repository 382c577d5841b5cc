//! The store directories this process holds locked, so that an open that
//! finds a directory locked can say whether the holder is a handle of this
//! very process (a closed `Store` whose clones are still alive) rather than
//! another process.

use std::path::Path;

use parking_lot::Mutex;

/// What tells a directory apart: on Unix its device and inode (the same
/// through any path to it, and after a rename), elsewhere its canonical
/// path.
#[cfg(unix)]
type Key = (u64, u64);
#[cfg(not(unix))]
type Key = std::path::PathBuf;

#[cfg(unix)]
fn key(dir: &Path) -> Option<Key> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn key(dir: &Path) -> Option<Key> {
    std::fs::canonicalize(dir).ok()
}

/// Held directories with the number of lock holders on each.
static HELD: Mutex<Vec<(Key, usize)>> = Mutex::new(Vec::new());

/// A directory's place in the registry while its locks are held; leaves it
/// when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    key: Key,
}

/// Registers `dir` as locked by this process. `None` when it cannot be
/// looked at (a simulated file system's directory).
pub(crate) fn hold(dir: &Path) -> Option<Held> {
    let key = key(dir)?;
    // (`Copy` on Unix, a path elsewhere.)
    #[allow(clippy::clone_on_copy)]
    let entry = key.clone();
    let mut held = HELD.lock();
    match held.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => held.push((entry, 1)),
    }
    Some(Held { key })
}

/// Whether this process holds `dir` locked.
pub(crate) fn is_held(dir: &Path) -> bool {
    key(dir).is_some_and(|key| HELD.lock().iter().any(|(k, _)| *k == key))
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = HELD.lock();
        if let Some(i) = held.iter().position(|(k, _)| *k == self.key) {
            held[i].1 -= 1;
            if held[i].1 == 0 {
                held.swap_remove(i);
            }
        }
    }
}
