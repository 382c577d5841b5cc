//! `annal backup`.

use std::io::Write;

use super::{close, line, open_read_only, stdout};
use crate::args::BackupArgs;
use crate::fail::Outcome;
use crate::json::Obj;

pub fn run(a: BackupArgs) -> Outcome {
    let store = open_read_only(&a.dir)?;
    let report = store.backup(&a.dest)?;
    close(store)?;
    let text = Obj::new()
        .str("backup", &a.dest.display().to_string())
        .num("last_position", report.last_position)
        .num("segments", report.segments)
        .num("bytes", report.bytes)
        .finish();
    let mut out = stdout();
    line(&mut out, &text)?;
    out.flush()?;
    Ok(())
}
