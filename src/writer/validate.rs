//! Checks of an append made before any lock is taken: names, sizes, and
//! ids repeated within the append. Also the name checks that reads and
//! subscriptions apply to their filters.

use uuid::Uuid;

use super::AppendRef;
use crate::error::{Error, Result};
use crate::event::EventData;
use crate::hash::{FastSet, set_with_capacity};
use crate::limits;
use crate::log::frame::{self, BATCH_HEADER_BYTES};

/// Checks names, sizes and ids of an append before taking any lock.
pub(crate) fn validate(appends: &[AppendRef<'_>], batch_bytes_max: usize) -> Result<()> {
    if appends.is_empty() {
        return Err(Error::InvalidInput("an append needs at least one stream".into()));
    }
    let mut events = 0usize;
    let mut bytes = BATCH_HEADER_BYTES;
    // One stream needs no check for a stream named twice (the common
    // case), and no set (whose hasher costs a seed).
    let mut streams: Option<FastSet<&str>> = (appends.len() > 1).then(|| set_with_capacity(appends.len()));
    for a in appends {
        validate_stream_name(a.stream)?;
        if let Some(streams) = &mut streams
            && !streams.insert(a.stream)
        {
            return Err(Error::InvalidInput(format!(
                "stream '{}' appears twice in one append",
                a.stream
            )));
        }
        if a.events.is_empty() {
            return Err(Error::InvalidInput(format!("no events to append to '{}'", a.stream)));
        }
        for e in a.events {
            validate_event(e)?;
            events += 1;
            bytes += frame::record_len(a.stream, e);
        }
    }
    if events > 1 && events <= limits::BATCH_EVENTS_MAX {
        // Sorting the ids finds a repeated one with a few comparisons each,
        // cheaper than hashing them into a set.
        let mut ids: Vec<u128> = appends
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.id.as_u128()))
            .collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(Error::DuplicateEventId {
                id: Uuid::from_u128(pair[0]),
            });
        }
    }
    if events > limits::BATCH_EVENTS_MAX {
        return Err(Error::InvalidInput(format!(
            "{events} events in one append; the limit is {}",
            limits::BATCH_EVENTS_MAX
        )));
    }
    if bytes > batch_bytes_max {
        let why = if batch_bytes_max < limits::BATCH_BYTES_MAX {
            " (what fits in one segment; see Options::with_segment_size_bytes)"
        } else {
            ""
        };
        return Err(Error::InvalidInput(format!(
            "append encodes to {bytes} bytes; the limit is {batch_bytes_max} bytes{why}"
        )));
    }
    Ok(())
}

/// Checks a stream name against the limits.
#[inline]
pub(crate) fn validate_stream_name(name: &str) -> Result<()> {
    check_name_len("stream name", name, limits::STREAM_NAME_BYTES_MAX)
}

/// Checks a category name: a stream name's part before its first `-`, so
/// one holding a `-` could never match a stream.
pub(crate) fn validate_category(category: &str) -> Result<()> {
    check_name_len("category", category, limits::STREAM_NAME_BYTES_MAX)?;
    if category.contains('-') {
        return Err(Error::InvalidInput(format!(
            "category '{category}' holds a '-': a category is a stream name's part before its first '-'"
        )));
    }
    Ok(())
}

/// Checks an event type used in a filter against the limits.
#[inline]
pub(crate) fn validate_event_type(t: &str) -> Result<()> {
    check_name_len("event type", t, limits::EVENT_TYPE_BYTES_MAX)
}

/// Checks that `name` (a `what`) has 1 to `max` bytes.
#[inline]
fn check_name_len(what: &str, name: &str, max: usize) -> Result<()> {
    if name.is_empty() || name.len() > max {
        return Err(Error::InvalidInput(format!(
            "{what} must be 1 to {max} bytes, got {}",
            name.len()
        )));
    }
    Ok(())
}

fn validate_event(e: &EventData) -> Result<()> {
    if e.id.is_nil() {
        // The usual value of an id that was never set: two such events
        // would pass for retries of each other.
        return Err(Error::InvalidInput(
            "event id is the nil UUID (all zeros); give each event its own id".into(),
        ));
    }
    validate_event_type(&e.event_type)?;
    let payload = e.data.len() + e.metadata.len();
    if payload > limits::EVENT_PAYLOAD_BYTES_MAX {
        return Err(Error::InvalidInput(format!(
            "event data + metadata is {payload} bytes; the limit is {}",
            limits::EVENT_PAYLOAD_BYTES_MAX
        )));
    }
    Ok(())
}
