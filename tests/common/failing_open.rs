//! A file system whose opens of one path fail.

use std::path::{Path, PathBuf};

use annal::io::{DirectoryLock, FileSystem, OpenMode, StdFs};

/// The file system of the directory, with opens of one path failing with
/// a given OS error (as a file without read permission, or a process out
/// of file descriptors, makes them fail, which running as root cannot
/// show); everything else is the real file system's.
pub struct FailingOpen {
    /// The path whose opens fail.
    pub path: PathBuf,
    /// The OS error they fail with.
    pub errno: i32,
}

impl FileSystem for FailingOpen {
    type File = <StdFs as FileSystem>::File;
    const MAP_IS_LIVE: bool = <StdFs as FileSystem>::MAP_IS_LIVE;

    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        StdFs.create_dir_all(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Self::File> {
        if path == self.path {
            return Err(std::io::Error::from_raw_os_error(self.errno));
        }
        StdFs.open(path, mode)
    }
    fn try_lock_dir(&self, dir: &Path, shared: bool) -> std::io::Result<Option<DirectoryLock>> {
        StdFs.try_lock_dir(dir, shared)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        StdFs.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        StdFs.sync_dir(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        StdFs.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        StdFs.exists(path)
    }
}
