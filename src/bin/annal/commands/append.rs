//! `annal append`.

use std::io::Write;

use annal::{Durability, EventData};

use super::{close, line, open_or_create, stdout};
use crate::args::AppendArgs;
use crate::fail::Outcome;
use crate::json;

pub fn run(a: AppendArgs) -> Outcome {
    let data = match (a.data, a.data_base64) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(bytes)) => bytes.0,
        (None, None) => b"{}".to_vec(),
    };
    let metadata = match (a.metadata, a.metadata_base64) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(bytes)) => bytes.0,
        (None, None) => Vec::new(),
    };
    let mut event = EventData::new(a.event_type, data).with_metadata(metadata);
    if let Some(id) = a.id {
        event = event.with_id(id);
    }
    let store = open_or_create(&a.dir, Durability::Sync)?;
    let result = store.append(&a.stream, a.expected, [event])?;
    close(store)?;
    let mut out = stdout();
    line(&mut out, &json::result_line(&a.stream, &result))?;
    out.flush()?;
    Ok(())
}
