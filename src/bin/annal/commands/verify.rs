//! `annal verify`.

use std::io::Write;

use annal::tools::{self, CheckpointsFileStatus, Damage, IndexStatus, SnapshotFileStatus, VerifyReport};

use super::{line, require_store, stdout};
use crate::args::VerifyArgs;
use crate::fail::{CORRUPTION, Failure, Outcome};
use crate::json::Obj;
use crate::progress::Progress;

pub fn run(a: VerifyArgs) -> Outcome {
    require_store(&a.dir)?;
    let mut progress = Progress::new(a.progress, "events");
    let report = tools::verify_with_progress(&a.dir, &mut |p| {
        let fraction = (p.bytes_total > 0).then(|| p.bytes_done as f64 / p.bytes_total as f64);
        progress.update(p.events, fraction);
    })?;
    progress.finish(report.events, Some(1.0));
    let mut out = stdout();
    let printed = line(&mut out, &summary(&report)).and_then(|()| Ok(out.flush()?));
    // Damage is the finding that matters: reported with its exit code even
    // when the report line cannot be written.
    match (report.first_damage(), printed) {
        (None, printed) => printed,
        (Some(d), Ok(())) => Err(Failure {
            code: CORRUPTION,
            message: d.to_string(),
        }),
        (Some(d), Err(f)) => Err(Failure {
            code: CORRUPTION,
            message: if f.message.is_empty() {
                d.to_string()
            } else {
                format!("{d} (and writing the report failed: {})", f.message)
            },
        }),
    }
}

fn summary(r: &VerifyReport) -> String {
    let torn = match &r.torn_tail {
        None => "null".to_string(),
        Some(t) => Obj::new()
            .str("file", &t.file.display().to_string())
            .num("offset", t.offset)
            .num("bytes", t.bytes)
            .finish(),
    };
    let index = match &r.index {
        IndexStatus::Missing => Obj::new().str("status", "missing"),
        IndexStatus::Agrees { covers } => Obj::new().str("status", "agrees").num("covers", *covers),
        IndexStatus::PastDamage { covers } => Obj::new().str("status", "past-damage").num("covers", *covers),
        IndexStatus::Damaged(_) => Obj::new().str("status", "damaged"),
    }
    .finish();
    let snapshots = match &r.snapshots {
        SnapshotFileStatus::Missing => Obj::new().str("status", "missing"),
        SnapshotFileStatus::Clean { records } => Obj::new().str("status", "clean").num("records", *records),
        SnapshotFileStatus::Damaged { records, problems } => Obj::new()
            .str("status", "damaged")
            .num("records", *records)
            .raw("first_problem", &damage(problems.first())),
        _ => Obj::new().str("status", "unknown"),
    }
    .finish();
    let checkpoints = match &r.checkpoints {
        CheckpointsFileStatus::Missing => Obj::new().str("status", "missing"),
        CheckpointsFileStatus::Clean { checkpoints } => {
            Obj::new().str("status", "clean").num("checkpoints", *checkpoints)
        }
        CheckpointsFileStatus::Damaged(d) => Obj::new().str("status", "damaged").raw("problem", &damage(Some(d))),
        _ => Obj::new().str("status", "unknown"),
    }
    .finish();
    let duplicates = match &r.duplicate_ids {
        None => "null".to_string(),
        Some(d) => Obj::new()
            .num("extra_events", d.extra_events)
            .str("first_id", &d.first.0.to_string())
            .raw("first_positions", &format!("[{},{}]", d.first.1, d.first.2))
            .finish(),
    };
    Obj::new()
        .bool("clean", r.is_clean())
        .num("segments", r.segments)
        .num("events", r.events)
        .num("streams", r.streams)
        .num("bytes_checked", r.bytes_checked)
        .raw("torn_tail", &torn)
        .raw("index", &index)
        .raw("snapshots", &snapshots)
        .raw("checkpoints", &checkpoints)
        .raw("duplicate_ids", &duplicates)
        .raw("corruption", &damage(r.first_damage()))
        .finish()
}

/// A damage as JSON (`null` for none).
pub fn damage(d: Option<&Damage>) -> String {
    match d {
        None => "null".into(),
        Some(d) => Obj::new()
            .str("file", &d.file.display().to_string())
            .num("offset", d.offset)
            .str("reason", &d.reason)
            .finish(),
    }
}
