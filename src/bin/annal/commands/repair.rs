//! `annal repair`.

use std::io::Write;
use std::path::Path;

use annal::tools;

use super::verify::damage;
use super::{line, require_store, stdout};
use crate::fail::Outcome;
use crate::json::{self, Obj};

pub fn run(dir: &Path) -> Outcome {
    // A repair that removed the store and was stopped before its end
    // left no segment, but side files it finishes moving.
    if let Err(no_store) = require_store(dir)
        && !tools::removal_unfinished(dir)
    {
        return Err(no_store);
    }
    let r = tools::repair(dir)?;
    let files = r
        .quarantined_files
        .iter()
        .map(|f| json::quote(&f.display().to_string()));
    let lowered = r.checkpoints_lowered.iter().map(|(name, was)| {
        Obj::new()
            .str("name", name)
            .num("was", *was)
            .num("now", r.kept_events)
            .finish()
    });
    let dropped = r
        .snapshots_dropped
        .iter()
        .map(|(stream, version)| Obj::new().str("stream", stream).num("version", *version).finish());
    let text = Obj::new()
        .bool("repaired", r.repaired)
        .num("kept_events", r.kept_events)
        .num("quarantined_events", r.quarantined_events)
        .num("quarantined_bytes", r.quarantined_bytes)
        .num("unreadable_bytes", r.unreadable_bytes)
        .str("quarantine", &r.quarantine_dir.display().to_string())
        .raw("quarantined_files", &json::array(files))
        .bool("index_rebuilt", r.index_rebuilt)
        .bool("checkpoints_quarantined", r.checkpoints_quarantined)
        .raw("checkpoints_lowered", &json::array(lowered))
        .raw(
            "headers_rebuilt",
            &json::array(r.headers_rebuilt.iter().map(|id| id.to_string())),
        )
        .raw("snapshots_dropped", &json::array(dropped))
        .raw("damage", &damage(r.damage.as_ref()))
        .finish();
    let mut out = stdout();
    // The store has changed whatever happens to the output: the notes
    // below go to stderr all the same, and a failed output says so, so
    // that a script that sees exit 1 does not think nothing was done.
    let printed = line(&mut out, &text).and_then(|()| Ok(out.flush()?));
    for id in &r.headers_rebuilt {
        note!(
            "annal: the header of segment {id} was damaged and was written anew from the file name, the store's id and its first batch (the old bytes are in quarantine)"
        );
    }
    if r.store_removed {
        note!(
            "annal: the first segment's header was lost, so no event could be kept and {} holds no store now; its checkpoints and snapshot files went into quarantine with the log (the next append or import creates a new store)",
            r.quarantine_dir.parent().unwrap_or(&r.quarantine_dir).display()
        );
    } else if r.checkpoints_quarantined {
        note!(
            "annal: the checkpoints file was unreadable and moved into quarantine: every consumer starts again from its first event"
        );
    }
    for (name, was) in &r.checkpoints_lowered {
        note!(
            "annal: checkpoint '{name}' was at {was}, past the kept log; it is now at {} (rebuild its read model if it used the lost events)",
            r.kept_events
        );
    }
    if !r.snapshots_dropped.is_empty() {
        note!(
            "annal: removed {} of versions the kept log does not hold (the old snapshot file is in {})",
            match r.snapshots_dropped.len() {
                1 => "1 snapshot".to_string(),
                n => format!("{n} snapshots"),
            },
            r.quarantine_dir.display()
        );
    }
    if r.repaired && r.quarantined_bytes == 0 {
        // The damage left no log bytes to move (a segment file that is
        // gone, a damaged index or checkpoints file): say what happened
        // rather than "moved 0 events".
        let reason = r
            .damage
            .as_ref()
            .map_or_else(String::new, |d| format!(" ({})", d.reason));
        note!(
            "annal: kept {}; no log bytes to move{reason}; {} moved into {}",
            events(r.kept_events),
            match r.quarantined_files.len() {
                1 => "1 file".to_string(),
                n => format!("{n} files"),
            },
            r.quarantine_dir.display()
        );
    } else if r.repaired {
        note!(
            "annal: kept {}; moved {} ({} bytes, {} of them unreadable) into {}",
            events(r.kept_events),
            events(r.quarantined_events),
            r.quarantined_bytes,
            r.unreadable_bytes,
            r.quarantine_dir.display()
        );
    } else {
        note!(
            "annal: no damage found; nothing was changed ({})",
            events(r.kept_events)
        );
    }
    printed.map_err(|f| {
        if r.repaired {
            f.summary_lost("the repair was made (as said above)")
        } else {
            f
        }
    })
}

fn events(n: u64) -> String {
    if n == 1 {
        "1 event".into()
    } else {
        format!("{n} events")
    }
}
