//! The store directory's lock: one writer, or any number of read-only
//! opens, at a time. A lock file (`LOCK`, holding a note with the
//! holder's pid) and, where the platform has it, a lock on the directory
//! itself, so that deleting the lock file lets no second writer in.

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::io::{FileHandle, FileSystem, OpenMode};

/// Name of the lock file in the store directory.
pub const LOCK_FILE_NAME: &str = "LOCK";
/// How the lock file's note starts (a `LOCK` file that starts otherwise,
/// and is not empty, is another program's).
pub(crate) const LOCK_NOTE_START: &str = "annal store lock";
/// Length of the lock file's note (pids have at most 10 digits).
const LOCK_NOTE_BYTES: usize = 40;

/// An I/O error on the store directory; a path that is a file (the
/// usual mistake) gets a plain message instead of "Not a directory".
pub(crate) fn dir_error(dir: &Path, doing: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotADirectory {
        Error::InvalidInput(format!("{} is not a directory", dir.display()))
    } else {
        Error::io(format!("{doing} {}", dir.display()), e)
    }
}

/// The store directory's locks, held together: the lock file's, and the
/// directory's own where the platform has it (which deleting the lock
/// file cannot drop). Released when dropped.
pub(crate) struct Locks<F: FileSystem> {
    /// Kept in this process's registry of locked directories meanwhile
    /// (first, so that it leaves the registry before the locks are
    /// released: never "held here" while another process may hold them).
    _held: Option<crate::held_locks::Held>,
    /// The open lock file (none for a read-only open of a directory
    /// without one).
    file: Option<F::File>,
    _dir: crate::io::DirectoryLock,
}

/// Takes the directory's exclusive lock (creating the lock file) and
/// writes the lock note.
pub(crate) fn lock<F: FileSystem>(fs: &F, dir: &Path) -> Result<Locks<F>> {
    let path = dir.join(LOCK_FILE_NAME);
    let locks = open_locked(fs, dir, Some(OpenMode::CreateOrOpen), false)?;
    let Some(file) = &locks.file else {
        return Err(Error::InvalidInput("no lock file".into()));
    };
    // A fixed-width note: the next open overwrites it in place, without
    // the truncation (a metadata change) that a shorter pid would need.
    let note = format!(
        "{:<width$}\n",
        format!("{LOCK_NOTE_START}, pid {}", std::process::id()),
        width = LOCK_NOTE_BYTES - 1
    );
    let ctx = || format!("writing {}", path.display());
    if file.len().ctx(ctx)? != note.len() as u64 {
        file.set_len(0).ctx(ctx)?;
    }
    file.write_all_at(note.as_bytes(), 0).ctx(ctx)?;
    Ok(locks)
}

/// Takes the shared lock of a read-only open: it excludes a writable open
/// and not other read-only ones. A directory without a lock file was never
/// opened writable (or was copied without it, or someone deleted it): the
/// directory's own lock is taken alone, where the platform has one.
pub(crate) fn lock_shared<F: FileSystem>(fs: &F, dir: &Path) -> Result<Locks<F>> {
    let mode = fs.exists(&dir.join(LOCK_FILE_NAME)).then_some(OpenMode::Read);
    open_locked(fs, dir, mode, true)
}

/// Opens the lock file in `mode` (none: no lock file) and takes its lock
/// and the directory's, shared or exclusive; [`Error::Locked`] when
/// another holder excludes either.
fn open_locked<F: FileSystem>(fs: &F, dir: &Path, mode: Option<OpenMode>, shared: bool) -> Result<Locks<F>> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = mode
        .map(|mode| fs.open(&path, mode))
        .transpose()
        .map_err(|e| dir_error(dir, "opening the lock file in", e))?;
    // A lock held by someone else is tried again for a moment: a child
    // process forked (by any thread of this process) while the store was
    // open shares the lock file's descriptor, and so holds the lock, until
    // it starts its own program. A store closed just before opening it
    // again would otherwise be reported as locked.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = std::time::Duration::from_micros(500);
    loop {
        let locked = match &file {
            None => Ok(true),
            Some(file) if shared => file.try_lock_shared(),
            Some(file) => file.try_lock(),
        };
        if locked.ctx(|| format!("locking {}", path.display()))?
            && let Some(dir_lock) = fs
                .try_lock_dir(dir, shared)
                .ctx(|| format!("locking {}", dir.display()))?
        {
            return Ok(Locks {
                _held: crate::held_locks::hold(dir),
                file,
                _dir: dir_lock,
            });
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Locked {
                path: dir.to_path_buf(),
                by_this_process: crate::held_locks::is_held(dir),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
}

/// How long an open waits for a lock held elsewhere before it reports
/// [`Error::Locked`].
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
