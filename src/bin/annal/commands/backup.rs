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
    // The backup is complete whatever happens to the output: say so, so
    // that a script does not retry into a DEST that now exists.
    line(&mut out, &text)
        .and_then(|()| Ok(out.flush()?))
        .map_err(|f| f.summary_lost(format_args!("the backup {} is complete", a.dest.display())))
}
