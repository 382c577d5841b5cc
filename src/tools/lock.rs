//! Taking the store directory's lock without opening the store, the same
//! way [`crate::Store::open`] takes it.

use std::path::Path;

use crate::error::Result;
use crate::io::{FileSystem, StdFs};
use crate::store;

/// A held lock; released when dropped.
pub(crate) struct DirLock {
    _file: Option<<StdFs as FileSystem>::File>,
}

/// Takes a shared lock, as a read-only open does: it excludes a writable
/// [`crate::Store`] but not other readers. Creates nothing: a directory
/// without a lock file (never opened as a store) is not locked.
pub(crate) fn shared(dir: &Path) -> Result<DirLock> {
    Ok(DirLock {
        _file: store::lock_shared(&StdFs, dir)?,
    })
}

/// Takes the exclusive lock, as a writable open does.
pub(crate) fn exclusive(dir: &Path) -> Result<DirLock> {
    Ok(DirLock {
        _file: Some(store::lock(&StdFs, dir)?),
    })
}
