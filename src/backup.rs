//! Online backups: a consistent copy of an open store, taken while it
//! keeps accepting appends.
//!
//! A backup is a prefix of the log. The side files are read first, then the
//! published log end is fixed: every position a checkpoint names and every
//! version a snapshot holds was in the log when they were read, so the
//! later end covers them. In the non-durable modes the log is then synced,
//! so that a backup never holds events a power loss could still take from
//! the store (a read-only store cannot sync: see `Store::backup`).
//! Segments are append-only below the published end, so they are copied
//! from the readers' maps without stopping the writer; each
//! batch is CRC-checked on the way (and the checkpoints file decoded), so
//! damage is reported and never copied. The copy is built in a temporary
//! directory of its own beside the destination, synced, and renamed into
//! place: the destination appears complete or not at all.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::{self, CHECKPOINTS_FILE_NAME};
use crate::dir_lock::LOCK_FILE_NAME;
use crate::error::{Error, IoContext, Result};
use crate::index::file as index_file;
use crate::io::{self, FileSystem, StdFs};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, ScanEnd};
use crate::log::view::SegmentView;
use crate::options::Durability;
use crate::recovery::LogEnd;
use crate::snapshot::file as snapshot_file;
use crate::store::Store;

/// What [`Store::backup`] copied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// The backup holds the events at positions 1 to this one.
    pub last_position: u64,
    /// Segment files copied.
    pub segments: u64,
    /// Bytes written: segments, index file, checkpoints and snapshots.
    pub bytes: u64,
}

/// Everything a backup copies, captured from the running store.
struct Image {
    end: LogEnd,
    last_position: u64,
    /// What the copy's index file covers: the state at `end` (encoded
    /// from the live index while the copy is written, a piece at a time).
    checkpoint: index_file::Checkpoint,
    checkpoints: Option<Vec<u8>>,
    snapshots: Option<Vec<u8>>,
    views: Vec<Arc<SegmentView>>,
}

impl<F: FileSystem> Store<F> {
    /// Copies the store, as it is now, to the new directory `dest` (on the
    /// local file system; its parent must exist, `dest` must not). Appends
    /// may go on meanwhile: the backup holds every event published when it
    /// started, and none after; its checkpoints and snapshots are the ones
    /// saved by then. Open it like any store. Also works on a read-only
    /// store.
    ///
    /// In the periodic and buffered modes the log is synced first, so the
    /// backup never holds an event that a power loss could still take from
    /// the store. A read-only store cannot sync: its backup may hold the
    /// last events of a writer that died before its sync, which are in the
    /// page cache but may not survive a power loss (DURABILITY.md,
    /// guarantee 17).
    ///
    /// Every batch copied is CRC-checked, and the checkpoints file decoded:
    /// damage fails the backup with [`Error::Corruption`]. (The snapshot
    /// file is a cache and is copied as it is.) `dest` must not exist, its
    /// parent must, and it must not lie inside the store's own directory
    /// ([`Error::InvalidInput`] otherwise, nothing written). The copy is
    /// built in a temporary directory of its own beside `dest`
    /// (`.annal-backup-<uuid>.partial`), synced, then renamed to `dest`, so
    /// `dest` appears whole or not at all; after a failure the temporary
    /// directory is removed (after a crash, it is left: remove it). The
    /// one failure after `dest` appeared, the sync of its parent directory,
    /// says that the backup is complete. The
    /// backup shares the store's id: it is the same store at an earlier
    /// point, meant to replace it, not to run beside it.
    ///
    /// ```
    /// use annal::{EventData, ExpectedVersion, Options, Store};
    ///
    /// # fn main() -> Result<(), annal::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path().join("events"), Options::default())?;
    /// store.append("Order-1", ExpectedVersion::NoStream, [EventData::new("Placed", "{}")])?;
    /// let report = store.backup(dir.path().join("backup"))?;
    /// assert_eq!(report.last_position, 1);
    ///
    /// let copy = Store::open(dir.path().join("backup"), Options::default())?;
    /// assert_eq!(copy.stream_version("Order-1"), Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport> {
        let dest = destination(dest.as_ref())?;
        outside_store(&dest, self.path())?;
        let tmp = parent_of(&dest).join(format!(".annal-backup-{}.partial", uuid::Uuid::new_v4().simple()));
        let image = self.capture()?;
        let core = self.core();
        let mut read_index = |f: &mut dyn FnMut(&crate::index::Index)| f(&core.published.read().index);
        let result = write_image(&image, &tmp, &mut read_index).and_then(|bytes| {
            // `rename` would replace an empty directory made meanwhile.
            if dest.symlink_metadata().is_ok() {
                return Err(Error::InvalidInput(format!(
                    "backup destination {} appeared while the backup ran",
                    dest.display()
                )));
            }
            fs::rename(&tmp, &dest).ctx(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
            // The backup is complete from here: a failure says so, since
            // DEST now exists and a retry to it is refused.
            let parent = parent_of(&dest);
            StdFs.sync_dir(parent).ctx(|| {
                format!(
                    "syncing {} after the backup {} was complete (its contents are whole and synced, \
                     but its name may not survive a power loss until the directory is synced)",
                    parent.display(),
                    dest.display()
                )
            })?;
            Ok(bytes)
        });
        match result {
            Ok(bytes) => Ok(BackupReport {
                last_position: image.last_position,
                segments: image.views.len() as u64,
                bytes,
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    /// Reads the side files, then fixes the log end and encodes the index
    /// as of that end.
    fn capture(&self) -> Result<Image> {
        let core = self.core();
        let snapshots = core.snapshots.file_bytes(&core.fs, &core.dir)?;
        let checkpoints_path = core.dir.join(CHECKPOINTS_FILE_NAME);
        let checkpoints = io::read_if_exists(&core.fs, &checkpoints_path)
            .ctx(|| format!("reading {}", checkpoints_path.display()))?;
        if let Some(bytes) = &checkpoints {
            checkpoint::decode(bytes, core.store_id)
                .map_err(|(offset, reason)| Error::corruption(&checkpoints_path, offset, reason))?;
        }
        let (end, checkpoint) = {
            let p = core.published.read();
            (p.end, core.checkpoint_of(&p))
        };
        let last_position = checkpoint.last_position;
        if core.options.durability != Durability::Sync && !core.options.read_only {
            // Everything published by `end` is written; make it durable.
            core.sync_tail()?;
        }
        // Maps are published before the index entries that point into
        // them, so every segment up to the end has its view by now.
        let views = {
            let segments = core.segments.read();
            (1..=end.segment)
                .map(|id| segments.get(id).cloned())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::corruption(&core.dir, 0, "a segment of the published log has no view"))?
        };
        Ok(Image {
            end,
            last_position,
            checkpoint,
            checkpoints,
            snapshots,
            views,
        })
    }
}

/// `dest` as a parent and a plain last name (`a/b/.` becomes `a/b`);
/// refuses a `dest` that exists (even as a dangling link) or whose parent
/// does not.
fn destination(dest: &Path) -> Result<PathBuf> {
    let name = match dest.components().next_back() {
        Some(std::path::Component::Normal(name)) => name,
        _ => {
            return Err(Error::InvalidInput(format!(
                "backup destination {} does not end in a directory name",
                dest.display()
            )));
        }
    };
    let given = dest;
    let parent = parent_of(dest);
    let dest = parent.join(name);
    // Messages name the path as given.
    if dest.symlink_metadata().is_ok() {
        return Err(Error::InvalidInput(format!(
            "backup destination {} already exists",
            given.display()
        )));
    }
    if !parent.is_dir() {
        let what = if parent.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(Error::InvalidInput(format!(
            "{} (to hold the backup {}) {what}",
            parent.display(),
            given.display()
        )));
    }
    Ok(dest)
}

/// Refuses a `dest` inside the store's own directory `store` (links
/// resolved): losing or replacing that directory would take the backup
/// with it. (`dest` does not exist yet; its parent does, see
/// [`destination`].)
fn outside_store(dest: &Path, store: &Path) -> Result<()> {
    let parent = parent_of(dest);
    let inside = fs::canonicalize(parent).ctx(|| format!("resolving {}", parent.display()))?;
    // A store on another file system than the real one (`Store::open_with`)
    // has no real directory for the backup to be inside of.
    let Ok(store) = fs::canonicalize(store) else {
        return Ok(());
    };
    if inside.starts_with(&store) {
        return Err(Error::InvalidInput(format!(
            "backup destination {} is inside the store directory {}: losing that directory would lose the backup too",
            dest.display(),
            store.display()
        )));
    }
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes the captured store into `tmp` and syncs it, reading the live
/// index through `read_index` for the index file; returns the bytes
/// written.
fn write_image(image: &Image, tmp: &Path, read_index: &mut index_file::ReadIndex<'_>) -> Result<u64> {
    fs::create_dir(tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let mut bytes = 0;
    for view in &image.views {
        let limit = if view.id == image.end.segment {
            image.end.offset
        } else {
            view.map.len() as u64
        };
        let data = checked_data(view, limit)?;
        write_synced(&tmp.join(segment::file_name(view.id)), data)?;
        bytes += data.len() as u64;
    }
    // Written a piece at a time (never whole in memory), as the store
    // saves its own.
    bytes += crate::io::write_atomic_streamed(&StdFs, tmp, index_file::FILE_NAME, &mut |emit| {
        index_file::encode_streamed(&image.checkpoint, read_index, emit)
    })
    .ctx(|| format!("writing {}", tmp.join(index_file::FILE_NAME).display()))?;
    let side_files = [
        (CHECKPOINTS_FILE_NAME, image.checkpoints.as_ref()),
        (snapshot_file::FILE_NAME, image.snapshots.as_ref()),
    ];
    for (name, content) in side_files {
        if let Some(content) = content {
            write_synced(&tmp.join(name), content)?;
            bytes += content.len() as u64;
        }
    }
    // An empty lock file: read-only opens of the backup lock it too (a
    // directory without one is read under the directory's lock alone).
    write_synced(&tmp.join(LOCK_FILE_NAME), &[])?;
    sync_dir(tmp)?;
    Ok(bytes)
}

/// The bytes of a segment up to its last valid batch at or before `limit`,
/// after checking every batch; damage is an error, and so is a segment
/// that does not end cleanly at `limit` (the published end, for the last).
fn checked_data(view: &SegmentView, limit: u64) -> Result<&[u8]> {
    let bytes = usize::try_from(limit)
        .ok()
        .and_then(|l| view.map.get(..l))
        .ok_or_else(|| Error::corruption(&view.path, limit, "the published log ends past the segment's map"))?;
    match segment::scan(bytes, SEGMENT_HEADER_BYTES, |_, _, _| {}) {
        ScanEnd::Clean { offset } => Ok(&bytes[..offset as usize]),
        ScanEnd::TornTail { offset, reason, .. } => Err(Error::corruption(&view.path, offset, reason)),
        ScanEnd::Corrupt { offset, reason, next } => Err(Error::corruption(
            &view.path,
            offset,
            format!("{reason} (valid data follows at offset {next})"),
        )),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let ctx = || format!("writing {}", path.display());
    let mut file = File::create_new(path).ctx(ctx)?;
    std::io::Write::write_all(&mut file, bytes).ctx(ctx)?;
    file.sync_all().ctx(ctx)
}

/// Makes the directory's entries durable, as the store does its own.
fn sync_dir(dir: &Path) -> Result<()> {
    StdFs.sync_dir(dir).ctx(|| format!("syncing {}", dir.display()))
}
