//! Taking the store directory's lock without opening the store, the same
//! way [`crate::Store::open`] takes it.

use std::path::Path;

use crate::dir_lock;
use crate::error::Result;
use crate::io::StdFs;

/// A held lock; released when dropped.
pub(crate) struct DirLock {
    _locks: dir_lock::Locks<StdFs>,
}

/// Takes a shared lock, as a read-only open does: it excludes a writable
/// [`crate::Store`] but not other readers. Creates nothing: a directory
/// without a lock file (never opened as a store) gets the directory's own
/// lock alone.
pub(crate) fn shared(dir: &Path) -> Result<DirLock> {
    Ok(DirLock {
        _locks: dir_lock::lock_shared(&StdFs, dir)?,
    })
}

/// Takes the exclusive lock, as a writable open does.
pub(crate) fn exclusive(dir: &Path) -> Result<DirLock> {
    Ok(DirLock {
        _locks: dir_lock::lock(&StdFs, dir)?,
    })
}
