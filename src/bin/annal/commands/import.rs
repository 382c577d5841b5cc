//! `annal import`: one append per JSON line, each result printed once the
//! append is durable.
//!
//! Appends are handed to the operating system as they come
//! (`Durability::Buffered`), and made durable with one sync for all the
//! lines read so far whenever the input has no further complete line
//! waiting (or every `SYNC_EVERY_LINES` lines). Only then are their result
//! lines printed and stdout flushed. So a printed line is always durable,
//! a producer that waits for each result gets it without delay, and a fast
//! producer shares one sync among many lines.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

use annal::{Durability, Store};

use super::{close_after_acknowledging, line, open_or_create, refuse_in_no_store, stdout};
use crate::args::ImportArgs;
use crate::fail::{Failure, Outcome};
use crate::input::parse_line;
use crate::json;
use crate::progress::Progress;

/// Most lines acknowledged by one sync.
const SYNC_EVERY_LINES: usize = 1000;
/// Input buffer size.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// Longest input line read: four times what one append can hold (base64
/// takes a third more, and each event has its JSON fields besides), so
/// that no line `export` writes is refused, and a file without line
/// breaks (a binary file given by mistake) is refused before it fills the
/// memory. A line padded with more whitespace than that is refused too.
const LINE_BYTES_MAX: u64 = 4 * annal::limits::BATCH_BYTES_MAX as u64;

pub fn run(a: ImportArgs) -> Outcome {
    let (source, total_bytes): (Box<dyn Read>, Option<u64>) = match &a.file {
        Some(path) if path.as_os_str() != "-" => {
            let cannot = |e: &dyn std::fmt::Display| Failure::new(format!("cannot open {}: {e}", path.display()));
            if path.is_dir() {
                return Err(cannot(&"it is a directory"));
            }
            let file = File::open(path).map_err(|e| cannot(&e))?;
            let len = file.metadata().map(|m| m.len()).ok();
            (Box::new(file), len)
        }
        _ => (Box::new(std::io::stdin()), None),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, source);
    let mut importer = Importer {
        dir: a.dir,
        store: None,
        opening_failed: false,
        out: stdout(),
        pending: Vec::new(),
        pending_from_line: 0,
        pending_through_line: 0,
        events: 0,
        progress: Progress::new(a.progress, "events"),
    };
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut bytes_read = 0u64;
    loop {
        buf.clear();
        // Room for the line break (LF or CRLF), which does not count.
        let n = match (&mut reader).take(LINE_BYTES_MAX + 2).read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) => {
                return Err(importer.stop(Failure::new(format!("reading line {}: {e}", line_no + 1))));
            }
        };
        if n == 0 {
            break;
        }
        line_no += 1;
        bytes_read += n as u64;
        let text = buf
            .strip_suffix(b"\n")
            .map_or(&buf[..], |t| t.strip_suffix(b"\r").unwrap_or(t));
        if text.len() as u64 > LINE_BYTES_MAX {
            return Err(importer.stop(Failure::new(format!(
                "line {line_no}: longer than {} MiB, more than any append can hold",
                LINE_BYTES_MAX >> 20
            ))));
        }
        if let Err(f) = importer.import(&buf, line_no) {
            // A store that cannot be opened is no fault of the line.
            let f = if importer.opening_failed {
                f
            } else {
                f.context(format_args!("line {line_no}"))
            };
            return Err(importer.stop(f));
        }
        let waiting = reader.buffer().contains(&b'\n');
        if !waiting || importer.pending.len() >= SYNC_EVERY_LINES {
            importer.acknowledge()?;
        }
        let fraction = total_bytes.filter(|&t| t > 0).map(|t| bytes_read as f64 / t as f64);
        importer.progress.update(importer.events, fraction);
    }
    importer.acknowledge()?;
    importer.progress.finish(importer.events, total_bytes.map(|_| 1.0));
    // An input without lines still creates the (empty) store.
    importer.store()?;
    if let Some(store) = importer.store.take() {
        close_after_acknowledging(store);
    }
    Ok(())
}

struct Importer {
    dir: PathBuf,
    /// Opened (or created) by the first valid line: an input refused at
    /// its first line (malformed, or an append that breaks the limits)
    /// leaves no store behind.
    store: Option<Store>,
    /// Whether opening (or creating) the store failed: that failure is
    /// reported without the line number of the line that asked for it.
    opening_failed: bool,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    /// Result lines of appends not yet synced.
    pending: Vec<String>,
    /// The input lines of the first and last appends in `pending`.
    pending_from_line: u64,
    pending_through_line: u64,
    events: u64,
    progress: Progress,
}

impl Importer {
    /// Appends input line `line_no` (blank lines are skipped).
    fn import(&mut self, raw: &[u8], line_no: u64) -> Outcome {
        let text = std::str::from_utf8(raw).map_err(|_| Failure::new("not valid UTF-8"))?;
        // A byte-order mark that an editor put at the start of the file.
        let text = if line_no == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        // JSON's own whitespace only (RFC 8259): a line padded with any
        // other character is not JSON, and is refused as such.
        let text = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
        if text.is_empty() {
            return Ok(());
        }
        let append = parse_line(text).map_err(Failure::new)?;
        if self.store.is_none() {
            // Before the store is created, as `append` does.
            append.validate()?;
            refuse_in_no_store(&self.dir, &append.stream, append.expected)?;
        }
        let count = append.events.len() as u64;
        let result = self.store()?.append(&append.stream, append.expected, append.events)?;
        if self.pending.is_empty() {
            self.pending_from_line = line_no;
        }
        self.pending.push(json::result_line(&append.stream, &result));
        self.pending_through_line = line_no;
        self.events += count;
        Ok(())
    }

    /// The store, opened (or created) on first use.
    fn store(&mut self) -> Outcome<&Store> {
        if self.store.is_none() {
            let opened = open_or_create(&self.dir, Durability::Buffered);
            self.opening_failed = opened.is_err();
            self.store = Some(opened?);
        }
        self.store.as_ref().ok_or_else(|| Failure::new("the store is not open"))
    }

    /// Stops the import at `failure`: everything appended before it is
    /// made durable and acknowledged first. When that fails too (the
    /// failure poisoned the store: a full disk), the message still leads
    /// with `failure` (and keeps its exit code), and says which lines were
    /// appended without being acknowledged.
    fn stop(&mut self, failure: Failure) -> Failure {
        let (from, through) = (self.pending_from_line, self.pending_through_line);
        let note = |note: String| {
            if failure.message.is_empty() || note.is_empty() {
                return Failure {
                    code: failure.code,
                    message: failure.message.clone(),
                };
            }
            Failure {
                code: failure.code,
                message: format!("{}; {note}", failure.message),
            }
        };
        if let Some(store) = self.store.as_ref().filter(|_| !self.pending.is_empty())
            && let Err(e) = store.sync()
        {
            return note(format!(
                "input lines {from} to {through} were appended before it but could not be made durable \
                 ({e}): they may or may not be in the store"
            ));
        }
        match self.acknowledge() {
            Ok(()) => failure,
            Err(ack) => note(ack.message),
        }
    }

    /// Makes every append so far durable, then prints their results. When
    /// the output fails, says which input lines are appended all the same,
    /// so that they are not imported twice.
    fn acknowledge(&mut self) -> Outcome {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(store) = &self.store
            && let Err(e) = store.sync()
        {
            let (from, through) = (self.pending_from_line, self.pending_through_line);
            let failed = Failure::from(e);
            let before = if from > 1 {
                format!("; the lines before {from} are durable, and their results were printed")
            } else {
                String::new()
            };
            return Err(Failure {
                code: failed.code,
                message: format!(
                    "{}: input lines {from} to {through} were appended but could not be made durable: \
                     they may or may not be in the store{before}",
                    failed.message
                ),
            });
        }
        let printed = self
            .pending
            .drain(..)
            .try_for_each(|l| line(&mut self.out, &l))
            .and_then(|()| Ok(self.out.flush()?));
        if let Err(f) = printed {
            let why = if f.message.is_empty() {
                "the output was closed".to_string()
            } else {
                f.message
            };
            return Err(Failure::new(format!(
                "input lines 1 to {} are appended and durable, but writing their results failed: {why}",
                self.pending_through_line
            )));
        }
        Ok(())
    }
}
