//! `annal append`.

use std::io::Write;

use annal::{Durability, EventData, StreamAppend};

use super::{close_after_acknowledging, line, open_or_create, refuse_in_no_store, stdout};
use crate::args::AppendArgs;
use crate::fail::{Failure, Outcome};
use crate::json;

pub fn run(a: AppendArgs) -> Outcome {
    let data = match (a.data, a.data_base64) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(bytes)) => bytes.0,
        (None, None) => b"{}".to_vec(),
    };
    let metadata = match (a.metadata, a.metadata_base64) {
        // As in import lines: `null` means no metadata (`read` prints
        // empty metadata as `null`, so the two must not differ).
        (Some(text), _) if text.trim() == "null" => Vec::new(),
        (Some(text), _) => text.into_bytes(),
        (None, Some(bytes)) => bytes.0,
        (None, None) => Vec::new(),
    };
    let mut event = EventData::new(a.event_type, data).with_metadata(metadata);
    if let Some(id) = a.id {
        event = event.with_id(id);
    }
    let id = event.id();
    // Checked before the store is opened, so that input the append would
    // refuse creates no store.
    let append = StreamAppend::new(a.stream, a.expected, [event]);
    append.validate()?;
    refuse_in_no_store(&a.dir, &append.stream, append.expected)?;
    let store = open_or_create(&a.dir, Durability::Sync)?;
    let result = store.append(&append.stream, append.expected, append.events)?;
    // Durable now (`Durability::Sync`): print the result before closing,
    // whose failure would not undo the append.
    let mut out = stdout();
    let written = line(&mut out, &json::result_line(&append.stream, &result)).and_then(|()| Ok(out.flush()?));
    close_after_acknowledging(store);
    // The event is stored whatever happens to the output: say so, with its
    // id, so that a retry can pass `--id` and not write it twice.
    written.map_err(|f| {
        Failure::new(format!(
            "event {id} was appended at position {}, but writing the result failed{}",
            result.first_position,
            if f.message.is_empty() {
                String::new()
            } else {
                format!(": {}", f.message)
            }
        ))
    })
}
