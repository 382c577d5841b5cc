//! One module per command (or group of commands), and what they share:
//! opening a store and writing lines to stdout.

mod append;
mod backup;
mod export;
mod import;
mod read;
mod repair;
mod salvage;
mod stats;
mod verify;

use std::io::{BufWriter, StdoutLock, Write};
use std::path::Path;

use annal::{Durability, ExpectedVersion, Options, Store};

use crate::args::Command;
use crate::fail::{Failure, Outcome};

/// Runs a command.
pub fn run(command: Command) -> Outcome {
    match command {
        Command::Append(a) => append::run(a),
        Command::Import(a) => import::run(a),
        Command::Read(a) => read::stream(a),
        Command::ReadAll(a) => read::all(a),
        Command::Export(a) => export::run(&a.dir),
        Command::Stats(a) => stats::stats(a),
        Command::Streams(a) => stats::streams(&a.dir),
        Command::Verify(a) => verify::run(a),
        Command::Repair(a) => repair::run(&a.dir),
        Command::Backup(a) => backup::run(a),
        Command::Salvage(a) => salvage::run(a),
    }
}

/// Fails unless `dir` holds a store (at least one segment file): "no annal
/// store" when it is missing, not a directory or without segments, the
/// I/O error when it cannot be read (which says nothing about a store in
/// it). Checked before opening so that commands other than `append` and
/// `import` never create anything (not even a lock file) in a directory
/// without a store.
pub fn require_store(dir: &Path) -> Outcome {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            if holds_store_files(dir, entries) {
                Ok(())
            } else {
                Err(no_store(dir))
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Err(no_store(dir))
        }
        Err(e) => Err(Failure::new(format!("reading {}: {e}", dir.display()))),
    }
}

/// Whether `dir`, listed as `entries`, holds a segment file, or a store
/// whose log is missing (its index, checkpoints or snapshots file without
/// a segment: see [`annal::tools::log_missing`]), which the library's open
/// reports as damage (exit code 4) rather than taking the directory for one
/// without a store.
fn holds_store_files(dir: &Path, entries: std::fs::ReadDir) -> bool {
    let segment = entries.filter_map(Result::ok).any(|e| {
        e.file_name()
            .to_str()
            .and_then(annal::log::segment::parse_file_name)
            .is_some()
    });
    segment || annal::tools::log_missing(dir)
}

/// Refuses, before a store is created for it, an append that can only
/// fail in an empty store: one that expects its stream to exist (at a
/// version above 0, or any). The failure is the append's own (exit code
/// 3), so that a refused command creates nothing.
pub fn refuse_in_no_store(dir: &Path, stream: &str, expected: ExpectedVersion) -> Outcome {
    let needs_events = match expected {
        ExpectedVersion::StreamExists => true,
        ExpectedVersion::Exact(n) => n > 0,
        ExpectedVersion::Any | ExpectedVersion::NoStream => false,
    };
    // Only where an open would create the store: DIR missing, or a
    // directory without one (not a file in its place, not a directory
    // that cannot be read: the open reports those).
    let would_create = match std::fs::read_dir(dir) {
        Ok(entries) => !holds_store_files(dir, entries),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if needs_events && would_create {
        return Err(annal::Error::WrongExpectedVersion {
            stream: stream.to_string(),
            expected,
            actual: None,
        }
        .into());
    }
    Ok(())
}

/// The failure for a directory without a store.
pub fn no_store(dir: &Path) -> Failure {
    Failure::new(format!("no annal store in {}", dir.display()))
}

/// Opens an existing store read-only, for the commands that only read:
/// they write nothing, run side by side, and work on read-only media.
/// Fails (exit 1) when `dir` holds no store.
pub fn open_read_only(dir: &Path) -> Outcome<Store> {
    require_store(dir)?;
    Ok(Store::open(dir, Options::default().with_read_only(true))?)
}

/// Opens the store in `dir`, creating it when missing. A torn final write
/// that the open cut (invalid bytes at the log's end that nothing proves
/// durable: a crash's unfinished write) is said on stderr as a warning,
/// with where its bytes were kept.
pub fn open_or_create(dir: &Path, durability: Durability) -> Outcome<Store> {
    let store = Store::open(dir, Options::default().with_durability(durability))?;
    let report = store.recovery_report();
    if report.torn_tail_bytes > 0 {
        let copy = match (&report.torn_tail_kept, &report.torn_tail_not_kept) {
            (Some(path), _) => format!("a copy of its bytes is in {}", path.display()),
            (None, Some(why)) => format!("no copy of its bytes could be kept: {why}"),
            (None, None) => "no copy of its bytes was kept".to_string(),
        };
        note!(
            "annal: warning: cut a torn final write of {} bytes (invalid bytes at the end of the log that \
             nothing proves durable: a write a crash left unfinished, never acknowledged, unless the last \
             write was damaged since the index file was saved); {copy}",
            report.torn_tail_bytes
        );
    }
    Ok(store)
}

/// Buffered stdout.
pub fn stdout() -> BufWriter<StdoutLock<'static>> {
    BufWriter::with_capacity(64 * 1024, std::io::stdout().lock())
}

/// Writes one line.
pub fn line(out: &mut impl Write, text: &str) -> Outcome {
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Closes a store, reporting a failure to save its state.
pub fn close(store: Store) -> Outcome {
    Ok(store.close()?)
}

/// Closes a store after every append made through it was synced and its
/// result printed. A failure now (saving the index file, a cache that the
/// next open rebuilds from the log, on a full disk say) takes nothing
/// back: it is a warning on stderr, and the command still succeeds, so
/// that a script does not retry appends that were made.
pub fn close_after_acknowledging(store: Store) {
    if let Err(e) = store.close() {
        note!("annal: warning: every result printed was appended and is durable, but closing the store failed: {e}");
    }
}
