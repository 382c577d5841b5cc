//! Maintenance tools that work on a store directory without opening it as
//! a [`crate::Store`]: [`verify()`] (read-only check of every byte),
//! [`repair()`] (salvage a log damaged in the middle) and [`salvage()`] (read
//! back the events of the bytes `repair` quarantined).
//!
//! The `annal` command-line tool's `verify` and `repair` commands are thin
//! wrappers around these functions; applications can call them directly.
//!
//! `verify` and `repair` take the store directory's lock (`verify` a shared
//! one, `repair` an exclusive one), so they fail with
//! [`crate::Error::Locked`]: `repair` while any [`crate::Store`] has the
//! directory open, `verify` while a writable one does (read-only stores
//! share the lock with it). `salvage` only reads the files it is given
//! (those of the quarantine folder, listed by [`quarantined_log_files`])
//! and takes no lock.

mod lock;
mod repair;
mod salvage;
mod verify;
mod walk;

use std::path::PathBuf;

pub use repair::{QUARANTINE_DIR, RepairReport, removal_unfinished, repair};
pub use salvage::{SalvagedFile, quarantined_log_files, salvage};
pub use verify::{
    CheckpointsFileStatus, DuplicateIds, IndexStatus, SnapshotFileStatus, VerifyReport, verify, verify_with_progress,
};
pub use walk::TornTail;

/// Whether `dir` holds no segment file but a store's index, checkpoints or
/// snapshots file (one that starts with its magic, FORMAT.md): a store
/// whose log is missing (deleted, or left out of a restore), which every
/// open, [`verify()`] and [`repair()`] refuse as [`crate::Error::Corruption`],
/// rather than a directory without a store. False when `dir` cannot be
/// listed.
pub fn log_missing(dir: &std::path::Path) -> bool {
    use crate::io::{FileSystem, StdFs};
    let Ok(names) = StdFs.list_dir(dir) else {
        return false;
    };
    !names.iter().any(|n| crate::log::segment::parse_file_name(n).is_some())
        && crate::recovery::missing_log(&StdFs, dir, &names).is_some()
}

/// The first place where a store's files hold bytes that a crash cannot
/// explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The damaged (or missing) file.
    pub file: PathBuf,
    /// The segment number when the file is a segment (`None` for the index
    /// file).
    pub segment: Option<u64>,
    /// Byte offset in that file of the first bad batch (0 for a bad or
    /// missing segment header).
    pub offset: u64,
    /// What check failed.
    pub reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "corruption in {} at byte offset {}: {}",
            self.file.display(),
            self.offset,
            self.reason
        )
    }
}

/// How far a long-running tool has got, for progress displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of segment files processed so far.
    pub bytes_done: u64,
    /// Bytes of all segment files.
    pub bytes_total: u64,
    /// Events checked so far.
    pub events: u64,
}

#[cfg(test)]
mod tests;
