//! `annal salvage`: the events of quarantined log bytes, as import lines.

use std::io::Write;
use std::ops::ControlFlow;

use annal::tools::{QUARANTINE_DIR, quarantined_log_files, salvage};

use super::{line, stdout};
use crate::args::SalvageArgs;
use crate::fail::{Failure, Outcome};
use crate::json::export_line;

pub fn run(a: SalvageArgs) -> Outcome {
    if !a.dir.is_dir() {
        let why = if a.dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(Failure::new(format!("{} {why}", a.dir.display())));
    }
    let files = if a.files.is_empty() {
        quarantined_log_files(&a.dir)?
    } else {
        a.files
    };
    if files.is_empty() {
        note!(
            "annal: nothing to salvage: no quarantined log files in {}",
            a.dir.join(QUARANTINE_DIR).display()
        );
        return Ok(());
    }
    let mut out = stdout();
    let mut failed = None;
    let found = salvage(&files, |event| match line(&mut out, &export_line(&event)) {
        Ok(()) => ControlFlow::Continue(()),
        Err(f) => {
            failed = Some(f);
            ControlFlow::Break(())
        }
    })?;
    if let Some(f) = failed {
        return Err(f);
    }
    out.flush()?;
    for f in &found {
        let mut skipped = Vec::new();
        if f.duplicates > 0 {
            skipped.push(format!("{} whose id was printed already", f.duplicates));
        }
        if f.unreadable_bytes > 0 {
            skipped.push(format!("{} unreadable bytes", f.unreadable_bytes));
        }
        let skipped = if skipped.is_empty() {
            String::new()
        } else {
            format!(" (skipped: {})", skipped.join(", "))
        };
        let events = if f.events == 1 { "event" } else { "events" };
        note!("annal: {}: {} {events}{skipped}", f.file.display(), f.events);
    }
    Ok(())
}
