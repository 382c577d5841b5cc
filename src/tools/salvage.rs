//! Reading back the events of quarantined log bytes.
//!
//! `repair` and a writable open move log bytes they cannot keep into
//! `quarantine/` (docs/FORMAT.md, "Quarantine"). Batches in them that still
//! pass their CRC checks hold events the store no longer serves; [`salvage`]
//! hands them over, so that they can be appended again (the `annal
//! salvage` command prints them as import lines).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::log::frame;
use crate::log::segment::{self, SEGMENT_HEADER_BYTES};
use crate::tools::walk::map_file;

use super::QUARANTINE_DIR;

/// What [`salvage`] found in one quarantined file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalvagedFile {
    /// The file.
    pub file: PathBuf,
    /// Events handed over from it.
    pub events: u64,
    /// Events of valid batches skipped because they were handed over
    /// already, the same id at the same stream and version (from an
    /// earlier file, or an earlier batch of this one).
    pub duplicates: u64,
    /// Non-zero bytes outside valid batch frames (damage), skipped.
    pub unreadable_bytes: u64,
}

/// The log files in `dir`'s quarantine folder, in log order: whole
/// segments (`<N>.seg`), the tail of a damaged segment
/// (`<N>.seg.from-<offset>`) and copies of torn tails
/// (`<N>.seg.torn-<offset>`), each possibly with a `.<k>` suffix. Other
/// files there (headers, index, checkpoints, snapshots) hold no events.
/// Empty when there is no quarantine folder.
pub fn quarantined_log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let q = dir.join(QUARANTINE_DIR);
    let entries = match std::fs::read_dir(&q) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", q.display()), e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", q.display()), e))?;
        let name = entry.file_name();
        let Some(key) = name.to_str().and_then(log_file_key) else {
            continue;
        };
        // Following links; a directory or a device holds no log bytes.
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            files.push((key, entry.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// Hands `each` every event of the valid batch frames in `files` (as
/// listed by [`quarantined_log_files`], or any files in that format), in
/// file order and log order within a file, skipping damaged stretches and
/// events already handed over (the same id, stream and version: copies
/// of the same bytes; an id the store holds twice, a retry written again
/// at another version, is handed over twice). After a damaged batch whose
/// header and record lengths still agree on where it ends, the walk goes
/// on there (see [`segment::find_next_batch`]), not at a frame inside its
/// payload; otherwise at the next valid frame found, which may be one
/// inside a payload. Each event keeps the position,
/// stream, version, id and timestamp it had in the log. `each` may stop
/// the walk by returning [`ControlFlow::Break`].
///
/// A file's frames start at byte 64 when its name ends in `.seg` or
/// `.seg.<k>` (a whole segment with its header) and at byte 0 otherwise.
/// Every file is opened before the first event is handed over: a file
/// that cannot be read (missing, not a regular file) fails the call
/// before `each` is called. Returns what was found in each file visited.
pub fn salvage(files: &[PathBuf], mut each: impl FnMut(RecordedEvent) -> ControlFlow<()>) -> Result<Vec<SalvagedFile>> {
    let mut maps = Vec::with_capacity(files.len());
    for path in files {
        let metadata = std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if !metadata.is_file() {
            return Err(Error::InvalidInput(format!("{} is not a regular file", path.display())));
        }
        maps.push(map_file(path)?);
    }
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    for (path, bytes) in files.iter().zip(maps) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let start = if is_whole_segment(name) {
            SEGMENT_HEADER_BYTES as usize
        } else {
            0
        };
        let mut file = SalvagedFile {
            file: path.clone(),
            events: 0,
            duplicates: 0,
            unreadable_bytes: 0,
        };
        let mut stopped = false;
        segment::walk_valid_frames(&bytes, start, |step| {
            match step {
                segment::Frame::Valid(at, header, records) => {
                    for (i, record) in records.iter().enumerate() {
                        let position = header.first_position.saturating_add(i as u64);
                        let at = at + record.offset as usize;
                        let Some(event) = frame::decode_checked_record(&bytes, at, position) else {
                            continue;
                        };
                        if !seen.insert((event.id(), event.version(), event.stream().to_string())) {
                            file.duplicates += 1;
                            continue;
                        }
                        file.events += 1;
                        if each(event).is_break() {
                            stopped = true;
                            return ControlFlow::Break(());
                        }
                    }
                }
                segment::Frame::Skipped(range) => {
                    file.unreadable_bytes += bytes[range].iter().filter(|&&b| b != 0).count() as u64;
                }
            }
            ControlFlow::Continue(())
        });
        found.push(file);
        if stopped {
            break;
        }
    }
    Ok(found)
}

/// Whether a file named `name` is a whole segment: `*.seg`, or `*.seg.<k>`
/// (a copy numbered by a later repair).
fn is_whole_segment(name: &str) -> bool {
    let base = match name.rsplit_once('.') {
        Some((base, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    base.ends_with(".seg")
}

/// Whether a quarantined file named `name` is segment `id` moved whole
/// (`<N>.seg`, or `<N>.seg.<k>` when a later repair numbered the copy).
pub(crate) fn is_whole_segment_numbered(name: &str, id: u64) -> bool {
    is_whole_segment(name) && log_file_key(name).is_some_and(|(segment, offset, _)| segment == id && offset == 0)
}

/// Sort key of a quarantined log file's name: (segment number, offset in
/// the segment where its bytes start (0 for a whole segment), copy number);
/// `None` for names that are not log files.
fn log_file_key(name: &str) -> Option<(u64, u64, u64)> {
    let mut parts = name.split('.');
    let segment: u64 = parts
        .next()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()?;
    if parts.next() != Some("seg") {
        return None;
    }
    let mut offset = 0;
    let mut copy = 0;
    match parts.next() {
        None => {}
        Some(p) if p.starts_with("from-") || p.starts_with("torn-") => {
            offset = p[5..].parse().ok()?;
            if let Some(k) = parts.next() {
                copy = k.parse().ok()?;
            }
        }
        Some(k) => copy = k.parse().ok()?,
    }
    parts.next().is_none().then_some((segment, offset, copy))
}

#[cfg(test)]
mod tests {
    use super::{is_whole_segment, log_file_key};

    #[test]
    fn whole_segments_by_name() {
        for whole in [
            "00000000000000000003.seg",
            "00000000000000000003.seg.2",
            "copy.seg",
            "x.seg.10",
        ] {
            assert!(is_whole_segment(whole), "{whole}");
        }
        for part in [
            "00000000000000000003.seg.from-64",
            "00000000000000000003.seg.torn-64.1",
            "a.seg.bak",
            "a.bin",
            "seg",
            "a.seg.",
        ] {
            assert!(!is_whole_segment(part), "{part}");
        }
    }

    #[test]
    fn names_of_log_files() {
        let seg = "00000000000000000003.seg";
        assert_eq!(log_file_key(seg), Some((3, 0, 0)));
        assert_eq!(log_file_key(&format!("{seg}.2")), Some((3, 0, 2)));
        assert_eq!(log_file_key(&format!("{seg}.from-176")), Some((3, 176, 0)));
        assert_eq!(log_file_key(&format!("{seg}.torn-9000.1")), Some((3, 9000, 1)));
        for other in [
            format!("{seg}.header"),
            format!("{seg}.from-x"),
            format!("{seg}.from-1.2.3"),
            "index".to_string(),
            "snapshots".to_string(),
            "checkpoints.1".to_string(),
            "x3.seg".to_string(),
            ".seg".to_string(),
        ] {
            assert_eq!(log_file_key(&other), None, "{other}");
        }
    }
}
