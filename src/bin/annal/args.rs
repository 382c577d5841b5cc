//! The command line: commands, arguments and their help texts.

use std::path::PathBuf;

use annal::ExpectedVersion;
use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other error (message on stderr)
  2  usage error
  3  wrong expected version (the message says the stream's actual version)
  4  corruption detected (the message names the file and byte offset)
  5  store locked by another process

Output is JSON lines on stdout; errors go to stderr. See docs/CLI.md.";

/// Inspect, script, import, export, back up, verify and repair annal event stores.
#[derive(Debug, Parser)]
#[command(name = "annal", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append one event to a stream; prints the versions and positions written.
    ///
    /// Creates the store when DIR holds none.
    #[command(after_help = EXIT_CODES)]
    Append(AppendArgs),
    /// Append JSON lines from FILE or stdin, one append per line.
    ///
    /// Each line is {"stream":..,"type":..,"data":<JSON>,"metadata":<JSON>,"id":<uuid>,
    /// "expected":"any"|"no-stream"|"exists"|N,"schema_version":N} (only stream and type are
    /// required), or
    /// {"stream":..,"expected":..,"events":[{"type":..,"data":..,...},...]} for an atomic batch.
    /// "data_base64"/"metadata_base64" may replace "data"/"metadata" for bytes that are not JSON.
    /// Prints each line's result once it is durable. Stops at the first malformed line or failed
    /// append, naming its line number; every line before it stays appended. Creates the store
    /// when DIR holds none.
    #[command(after_help = EXIT_CODES)]
    Import(ImportArgs),
    /// Read one stream, one JSON line per event.
    #[command(after_help = EXIT_CODES)]
    Read(ReadArgs),
    /// Read all events in global order, one JSON line per event.
    #[command(name = "read-all", after_help = EXIT_CODES)]
    ReadAll(ReadAllArgs),
    /// Write every event as an import line, so that `annal export A | annal import B` copies A.
    ///
    /// Ids, stream versions and global order are kept (each line carries the exact expected
    /// version); timestamps are not (an import stamps events with the time of the import).
    #[command(after_help = EXIT_CODES)]
    Export(DirArgs),
    /// Print figures about a store as one JSON object.
    #[command(after_help = EXIT_CODES)]
    Stats(StatsArgs),
    /// List the streams, one JSON line each, with their last version.
    #[command(after_help = EXIT_CODES)]
    Streams(DirArgs),
    /// Check every record's CRC, positions, versions and the index file; changes nothing.
    ///
    /// Prints a JSON summary. Exit code 4 when damage is found, naming the file and byte
    /// offset of the first damage. A torn final write (left by a crash) is reported but is
    /// not damage: the next open cuts it.
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
    /// Salvage a store damaged in the middle of its log.
    ///
    /// Keeps every event before the first damaged batch, moves the rest (the damaged
    /// segment's bytes from that batch on, every later segment file, the index file) into
    /// DIR/quarantine/ without deleting anything, rebuilds the index, and prints how many
    /// events were kept and quarantined. Does nothing to a store without damage.
    #[command(after_help = EXIT_CODES)]
    Repair(DirArgs),
    /// Copy a store to a new directory DEST, checking every record on the way.
    ///
    /// Opens DIR read-only (so it runs beside other readers, not beside a writer; an
    /// application backs up its open store with `Store::backup`). DEST must not exist; it
    /// appears only once the copy is complete and synced. Prints a JSON summary.
    #[command(after_help = EXIT_CODES)]
    Backup(BackupArgs),
    /// Print the events still readable in DIR/quarantine/ as import lines.
    ///
    /// Reads the log bytes that `repair` (or an open cutting a torn tail) moved into
    /// DIR/quarantine/, or only the FILEs given, and prints each event of every batch that
    /// passes its CRC checks, in log order, as `export` would (same id, exact expected
    /// version). `annal salvage DIR | annal import DIR` appends them again; a line whose
    /// version no longer follows on stops the import (exit 3). Changes nothing; a summary per
    /// file goes to stderr.
    #[command(after_help = EXIT_CODES)]
    Salvage(SalvageArgs),
}

/// Arguments of `salvage`.
#[derive(Debug, Args)]
pub struct SalvageArgs {
    /// The store directory whose quarantine folder to read.
    pub dir: PathBuf,
    /// Read only these files (quarantined log files, in any folder) instead.
    pub files: Vec<PathBuf>,
}

/// Arguments of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The store directory.
    pub dir: PathBuf,
    /// The new directory to copy it to (must not exist).
    pub dest: PathBuf,
}

/// Just a store directory.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// The store directory.
    pub dir: PathBuf,
}

/// Arguments of `append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The store directory (created when missing).
    pub dir: PathBuf,
    /// The stream to append to.
    pub stream: String,
    /// The event type.
    #[arg(value_name = "TYPE")]
    pub event_type: String,
    /// The event data, as JSON (stored byte for byte) [default: {}].
    #[arg(long, value_name = "JSON", value_parser = json_text, conflicts_with = "data_base64", allow_hyphen_values = true)]
    pub data: Option<String>,
    /// The event data as standard base64, for bytes that are not JSON.
    #[arg(long, value_name = "BASE64", value_parser = base64_bytes)]
    pub data_base64: Option<Base64Bytes>,
    /// The event metadata, as JSON [default: none; `null` is none too].
    #[arg(long, value_name = "JSON", value_parser = json_text, conflicts_with = "metadata_base64", allow_hyphen_values = true)]
    pub metadata: Option<String>,
    /// The event metadata as standard base64.
    #[arg(long, value_name = "BASE64", value_parser = base64_bytes)]
    pub metadata_base64: Option<Base64Bytes>,
    /// The event id [default: a random UUID]; reusing an id makes a retry idempotent.
    #[arg(long, value_name = "UUID")]
    pub id: Option<annal::Uuid>,
    /// The stream's expected version: any, no-stream, exists, or a version number.
    #[arg(long, value_name = "any|no-stream|exists|N", default_value = "any", value_parser = crate::expected::expected_version, allow_hyphen_values = true)]
    pub expected: ExpectedVersion,
}

/// Arguments of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The store directory (created when missing).
    pub dir: PathBuf,
    /// The JSON-lines file to import (`-` or none: stdin).
    pub file: Option<PathBuf>,
    /// Show progress (events, events/s) on stderr.
    #[arg(long)]
    pub progress: bool,
}

/// Arguments of `read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The store directory.
    pub dir: PathBuf,
    /// The stream to read.
    pub stream: String,
    /// Start at this version, inclusive [default: the first, or the last with --backward].
    #[arg(long, value_name = "V")]
    pub from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    pub backward: bool,
    /// Print at most N events.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// Arguments of `read-all`.
#[derive(Debug, Args)]
pub struct ReadAllArgs {
    /// The store directory.
    pub dir: PathBuf,
    /// Forward: events after position P (a checkpoint). Backward: events before P.
    #[arg(long, value_name = "P")]
    pub from: Option<u64>,
    /// Newest first (starts at the last event without --from).
    #[arg(long)]
    pub backward: bool,
    /// Print at most N events (after filtering).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Only events of this type (repeat to allow several).
    #[arg(long = "type", value_name = "T")]
    pub event_types: Vec<String>,
    /// Only events of streams of this category (the stream named C and streams named C-...).
    #[arg(long, value_name = "C")]
    pub category: Option<String>,
}

/// Arguments of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The store directory.
    pub dir: PathBuf,
    /// How many of the largest streams to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The store directory.
    pub dir: PathBuf,
    /// Show a progress bar on stderr.
    #[arg(long)]
    pub progress: bool,
}

/// Bytes given in standard base64 on the command line.
#[derive(Clone, Debug)]
pub struct Base64Bytes(pub Vec<u8>);

/// Whitespace anywhere is left out: `base64` wraps its output in lines
/// of 76 characters, so `--data-base64 "$(base64 FILE)"` holds line breaks.
fn base64_bytes(s: &str) -> Result<Base64Bytes, String> {
    crate::input::decode_base64(s)
        .map(Base64Bytes)
        .map_err(|e| format!("not valid base64: {e}"))
}

/// Accepts a JSON text, kept as written.
fn json_text(s: &str) -> Result<String, String> {
    serde_json::from_str::<&serde_json::value::RawValue>(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not valid JSON: {e}"))
}
