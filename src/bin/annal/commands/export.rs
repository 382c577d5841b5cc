//! `annal export`: every event as an import line.

use std::io::Write;
use std::path::Path;

use annal::ReadAll;

use super::{close, line, open_read_only, stdout};
use crate::fail::Outcome;
use crate::json;

pub fn run(dir: &Path) -> Outcome {
    let store = open_read_only(dir)?;
    let mut out = stdout();
    for e in store.read_all(ReadAll::forward())? {
        line(&mut out, &json::export_line(&e?))?;
    }
    out.flush()?;
    close(store)
}
