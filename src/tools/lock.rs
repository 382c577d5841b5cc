//! Taking the store directory's lock without opening the store.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::store::LOCK_FILE_NAME;

/// A held lock; released when dropped.
pub(crate) struct DirLock {
    _file: Option<File>,
}

/// Takes a shared lock, which excludes an open [`crate::Store`] but not
/// other readers. Creates nothing: a directory without a lock file (never
/// opened as a store) is not locked.
pub(crate) fn shared(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE_NAME);
    if !path.exists() {
        return Ok(DirLock { _file: None });
    }
    let file = File::open(&path).ctx(|| format!("opening lock file {}", path.display()))?;
    match file.try_lock_shared() {
        Ok(()) => Ok(DirLock { _file: Some(file) }),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}

/// Takes the exclusive lock, as [`crate::Store::open`] does.
pub(crate) fn exclusive(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .ctx(|| format!("opening lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: Some(file) }),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}
