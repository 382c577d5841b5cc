//! `annal export`: every event as an import line.

use std::io::Write;
use std::path::Path;

use annal::{ReadAll, RecordedEvent};

use super::{close, line, open_read_only, stdout};
use crate::fail::Outcome;
use crate::json::{self, Obj};

pub fn run(dir: &Path) -> Outcome {
    let store = open_read_only(dir)?;
    let mut out = stdout();
    for e in store.read_all(ReadAll::forward())? {
        line(&mut out, &export_line(&e?))?;
    }
    out.flush()?;
    close(store)
}

/// The import line that appends `e` again with the same id, at the same
/// version (the expected version is the one before it), keeping data and
/// metadata byte for byte (base64 when they are not embeddable JSON).
pub fn export_line(e: &RecordedEvent) -> String {
    let obj = Obj::new().str("stream", e.stream());
    let obj = match e.version() {
        1 => obj.str("expected", "no-stream"),
        v => obj.num("expected", v - 1),
    };
    let obj = obj.str("id", &e.id().to_string()).str("type", e.event_type());
    let obj = json::payload(obj, "data", e.data(), false);
    let obj = match e.metadata() {
        [] => obj,
        // "metadata": null imports as no metadata, so these bytes go as base64.
        b"null" => obj.str("metadata_base64", "bnVsbA=="),
        m => json::payload(obj, "metadata", m, false),
    };
    let obj = match e.schema_version() {
        1 => obj,
        v => obj.num("schema_version", u64::from(v)),
    };
    obj.finish()
}
