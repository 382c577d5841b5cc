//! `annal read` and `annal read-all`.

use std::io::Write;

use annal::{Events, ReadAll, ReadStream};

use super::{close, line, open_read_only, stdout};
use crate::args::{ReadAllArgs, ReadArgs};
use crate::fail::Outcome;
use crate::json;

pub fn stream(a: ReadArgs) -> Outcome {
    let store = open_read_only(&a.dir)?;
    let mut options = if a.backward {
        ReadStream::backward()
    } else {
        ReadStream::forward()
    };
    if let Some(v) = a.from {
        options = options.from_version(v);
    }
    if let Some(n) = a.limit {
        options = options.limit(n);
    }
    print(store.read_stream(&a.stream, options)?)?;
    close(store)
}

pub fn all(a: ReadAllArgs) -> Outcome {
    let store = open_read_only(&a.dir)?;
    let mut options = if a.backward {
        ReadAll::backward()
    } else {
        ReadAll::forward()
    };
    if let Some(p) = a.from {
        options = options.from_position(p);
    }
    if let Some(n) = a.limit {
        options = options.limit(n);
    }
    for t in a.event_types {
        options = options.event_type(t);
    }
    if let Some(c) = &a.category {
        options = options.category(c);
    }
    print(store.read_all(options)?)?;
    close(store)
}

/// Prints events as JSON lines.
fn print(events: Events) -> Outcome {
    let mut out = stdout();
    for e in events {
        line(&mut out, &json::event_line(&e?))?;
    }
    out.flush()?;
    Ok(())
}
