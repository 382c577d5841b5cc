//! `annal stats` and `annal streams`.

use std::io::Write;
use std::path::Path;

use super::{close, line, open_read_only, stdout};
use crate::args::StatsArgs;
use crate::fail::Outcome;
use crate::json::{self, Obj};

pub fn stats(a: StatsArgs) -> Outcome {
    let store = open_read_only(&a.dir)?;
    let s = store.stats();
    let largest = store
        .largest_streams(a.top)
        .into_iter()
        .map(|(stream, events)| Obj::new().str("stream", &stream).num("events", events).finish());
    let report = store.recovery_report();
    let recovery = Obj::new()
        .bool("index_loaded", report.index_loaded)
        .num("replayed_events", report.replayed_events)
        .num("torn_tail_bytes", report.torn_tail_bytes)
        .finish();
    let text = Obj::new()
        .str("store_id", &store.store_id().to_string())
        .num("events", s.events)
        .num("streams", s.streams)
        .num("segments", s.segments)
        .num("disk_bytes", s.disk_bytes)
        .num("last_position", s.last_position)
        .num("index_memory_bytes", s.index_memory_bytes)
        .num("index_mapped_bytes", s.index_mapped_bytes)
        .raw("largest_streams", &json::array(largest))
        .raw("open", &recovery)
        .finish();
    close(store)?;
    let mut out = stdout();
    line(&mut out, &text)?;
    out.flush()?;
    Ok(())
}

pub fn streams(dir: &Path) -> Outcome {
    let store = open_read_only(dir)?;
    let mut out = stdout();
    for name in store.stream_names() {
        let version = store.stream_version(&name).unwrap_or(0);
        line(
            &mut out,
            &Obj::new().str("stream", &name).num("version", version).finish(),
        )?;
    }
    out.flush()?;
    close(store)
}
