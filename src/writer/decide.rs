//! The decision for each stream of an append, under the writer lock: its
//! expected version against the stream's current one (queued appends
//! included), and whether the append is a retry of one already written
//! (idempotency: by the recent-id window, or by the stream's own events).

use std::sync::Arc;

use uuid::Uuid;

use super::{AppendRef, WriterState};
use crate::error::{Error, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion};
use crate::idempotency::Written;
use crate::io::FileSystem;
use crate::limits;
use crate::store::Core;

/// Where a stream's event at some version is (see `Core::event_at`).
enum At {
    /// In the queued range: its id and position, if the version exists.
    Queued(Option<(Uuid, u64)>),
    /// Published (or absent): its position, if the version exists.
    Published(Option<u64>),
}

/// What the checks decided for one stream of an append.
#[derive(Debug)]
pub(super) enum Decision {
    /// Write the events after `version`.
    Write { name: Arc<str>, version: u64 },
    /// An exact retry: return this result without writing.
    Duplicate(AppendResult),
}

impl<F: FileSystem> Core<F> {
    /// A retry matched by ids must also carry the same events: the stored
    /// type, data and schema version must equal the retried ones, or the
    /// caller reused an id for another event, which is refused rather
    /// than acknowledged without being written. Metadata is not compared:
    /// it often carries details of each attempt (a send time, a trace id).
    /// Runs only for retries, after their events are published.
    pub(super) fn check_retried_content(&self, appends: &[AppendRef<'_>], results: &[AppendResult]) -> Result<()> {
        for (a, r) in appends.iter().zip(results) {
            for (position, e) in (r.first_position..).zip(a.events) {
                let stored = self.read_position(position)?;
                if stored.event_type() != e.event_type()
                    || stored.data() != e.data()
                    || stored.schema_version() != e.schema_version
                {
                    return Err(Error::IdempotencyConflict {
                        stream: a.stream.to_string(),
                        id: e.id,
                    });
                }
            }
        }
        Ok(())
    }

    /// The stream's version including queued appends, its name, and the
    /// position of its last event.
    fn current(&self, w: &WriterState, stream: &str) -> (Option<Arc<str>>, u64, Option<u64>) {
        if !w.pending.is_empty()
            && let Some(p) = w.pending.get(stream)
        {
            return (Some(p.name.clone()), p.version, p.events.last().map(|&(_, at)| at));
        }
        match self.published.read().index.stream_key(stream) {
            Some((key, version, last)) => (Some(key), version, last),
            None => (None, 0, None),
        }
    }

    /// Checks one stream's expected version and idempotency.
    pub(super) fn decide(&self, w: &WriterState, a: &AppendRef<'_>) -> Result<Decision> {
        let (name, version, last_position) = self.current(w, a.stream);
        let exact = match a.expected {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::StreamExists => None,
            ExpectedVersion::Exact(n) => Some(n),
        };
        if let Some(n) = exact {
            if version == n {
                return self.fresh_ids(w, a, name, version);
            }
            if version > n
                && let Some(result) = self.retry_after(w, a, n)?
            {
                return Ok(Decision::Duplicate(result));
            }
            return Err(wrong_version(a, version));
        }
        if let Some(result) = self.retry_in_window(w, a)? {
            return Ok(Decision::Duplicate(result));
        }
        if let Some(result) = self.retry_at_stream_end(w, a, version, last_position)? {
            return Ok(Decision::Duplicate(result));
        }
        if a.expected == ExpectedVersion::StreamExists && version == 0 {
            return Err(wrong_version(a, version));
        }
        version_room(a, version)?;
        let name = name.unwrap_or_else(|| Arc::from(a.stream));
        Ok(Decision::Write { name, version })
    }

    /// Accepts a write whose ids are not already known in the window.
    fn fresh_ids(&self, w: &WriterState, a: &AppendRef<'_>, name: Option<Arc<str>>, version: u64) -> Result<Decision> {
        if let Some(e) = a.events.iter().find(|e| w.window.get(&e.id).is_some()) {
            return Err(Error::IdempotencyConflict {
                stream: a.stream.to_string(),
                id: e.id,
            });
        }
        version_room(a, version)?;
        let name = name.unwrap_or_else(|| Arc::from(a.stream));
        Ok(Decision::Write { name, version })
    }

    /// With `Exact(n)`: are the events right after version `n` these very
    /// events? `Some(result)` when all match, an error when some do.
    fn retry_after(&self, w: &WriterState, a: &AppendRef<'_>, n: u64) -> Result<Option<AppendResult>> {
        let mut matched = Vec::with_capacity(a.events.len());
        for (i, e) in a.events.iter().enumerate() {
            let version = n + 1 + i as u64;
            match self.id_at(w, a.stream, version)? {
                Some((id, position)) if id == e.id => matched.push(position),
                _ => break,
            }
        }
        if matched.is_empty() {
            return Ok(None);
        }
        if matched.len() < a.events.len() {
            return Err(Error::IdempotencyConflict {
                stream: a.stream.to_string(),
                id: reused_id(w, &a.events[matched.len()], &a.events[0]),
            });
        }
        Ok(Some(AppendResult {
            first_version: n + 1,
            last_version: n + a.events.len() as u64,
            first_position: matched[0],
            last_position: matched[matched.len() - 1],
        }))
    }

    /// The id and position of `stream`'s event at `version`, queued or
    /// published.
    fn id_at(&self, w: &WriterState, stream: &str, version: u64) -> Result<Option<(Uuid, u64)>> {
        match self.event_at(w, stream, version) {
            At::Queued(found) => Ok(found),
            At::Published(None) => Ok(None),
            At::Published(Some(position)) => {
                let event = self.read_position(position)?;
                Ok(Some((event.id(), position)))
            }
        }
    }

    /// Whether `stream` holds the event at `written.position` as its
    /// version `written.version` (queued or published): then an id the
    /// window places there was written to this stream.
    fn stream_holds(&self, w: &WriterState, stream: &str, written: Written) -> bool {
        let position = match self.event_at(w, stream, written.version) {
            At::Queued(found) => found.map(|(_, position)| position),
            At::Published(position) => position,
        };
        position == Some(written.position)
    }

    /// Where `stream`'s event at `version` is: among the queued appends
    /// (with its id and position, when the version is in the queued
    /// range), or in the published index (its position, if any).
    fn event_at(&self, w: &WriterState, stream: &str, version: u64) -> At {
        if !w.pending.is_empty()
            && let Some(p) = w.pending.get(stream)
        {
            let first_pending = p.version + 1 - p.events.len() as u64;
            if version >= first_pending {
                let i = usize::try_from(version - first_pending).unwrap_or(usize::MAX);
                return At::Queued(p.events.get(i).copied());
            }
        }
        let published = self.published.read();
        let i = usize::try_from(version.wrapping_sub(1)).unwrap_or(usize::MAX);
        At::Published(published.index.stream(stream).and_then(|e| e.get(i)))
    }

    /// With `Any`/`StreamExists`: is this append a retry of one in the
    /// recent-id window? The first of its ids the window holds places the
    /// whole append; ids before it that the window has forgotten (a batch
    /// larger than the window, or one the window is halfway done with) are
    /// looked up in the stream.
    fn retry_in_window(&self, w: &WriterState, a: &AppendRef<'_>) -> Result<Option<AppendResult>> {
        let Some((i, found)) = (0u64..)
            .zip(a.events)
            .find_map(|(i, e)| Some((i, w.window.get(&e.id)?)))
        else {
            return Ok(None);
        };
        let conflict = |e: &EventData| Error::IdempotencyConflict {
            stream: a.stream.to_string(),
            id: reused_id(w, e, &a.events[i as usize]),
        };
        let (Some(version), Some(position)) = (found.version.checked_sub(i), found.position.checked_sub(i)) else {
            return Err(conflict(&a.events[i as usize]));
        };
        if version == 0 || position == 0 {
            return Err(conflict(&a.events[i as usize]));
        }
        for (j, e) in (0u64..).zip(a.events) {
            let expected = Written {
                version: version + j,
                position: position + j,
            };
            let same = match w.window.get(&e.id) {
                // The window does not keep streams: the stream must hold
                // the event there.
                Some(x) => x == expected && self.stream_holds(w, a.stream, expected),
                // Forgotten by the window (only ids before the first one
                // it holds can be): the stream must hold it there.
                None if j < i => self.id_at(w, a.stream, expected.version)? == Some((e.id, expected.position)),
                None => false,
            };
            if !same {
                return Err(conflict(e));
            }
        }
        let k = a.events.len() as u64;
        Ok(Some(AppendResult {
            first_version: version,
            last_version: version + k - 1,
            first_position: position,
            last_position: position + k - 1,
        }))
    }

    /// With `Any`/`StreamExists`, once the window has forgotten the ids (or
    /// never held them: a window of 0): are these events the stream's last
    /// ones, queued or published? So a retry of a stream's latest append
    /// is found however long ago it was written, and while it is still
    /// queued. Reads the log only when the stream's candidate events are
    /// older than the window (newer ones would have been found in it).
    /// `version` and `last_position` are the stream's version and the
    /// position of its last event (see `Core::current`).
    fn retry_at_stream_end(
        &self,
        w: &WriterState,
        a: &AppendRef<'_>,
        version: u64,
        last_position: Option<u64>,
    ) -> Result<Option<AppendResult>> {
        let k = a.events.len() as u64;
        if version < k {
            return Ok(None);
        }
        let first_version = version - k + 1;
        let first_position = match (k, last_position) {
            // The stream's last event, known already: no look-up (the
            // common case of one event).
            (1, Some(position)) => position,
            _ => match self.event_at(w, a.stream, first_version) {
                At::Queued(Some((_, position))) | At::Published(Some(position)) => position,
                At::Queued(None) | At::Published(None) => return Ok(None),
            },
        };
        if w.window.covers(first_position)
            || self.id_at(w, a.stream, first_version)? != Some((a.events[0].id, first_position))
        {
            return Ok(None);
        }
        for (i, e) in (1u64..).zip(&a.events[1..]) {
            if self.id_at(w, a.stream, first_version + i)? != Some((e.id, first_position + i)) {
                return Err(Error::IdempotencyConflict {
                    stream: a.stream.to_string(),
                    id: reused_id(w, e, &a.events[0]),
                });
            }
        }
        Ok(Some(AppendResult {
            first_version,
            last_version: version,
            first_position,
            last_position: first_position + k - 1,
        }))
    }
}

/// The id to name in an [`Error::IdempotencyConflict`] found at event
/// `at` of a retry whose event `stored` is known to be stored: `at`'s own
/// id when the recent-id window holds it (it is stored, elsewhere), else
/// `stored`'s (`at` may be new: the error names an id that was written).
fn reused_id(w: &WriterState, at: &EventData, stored: &EventData) -> Uuid {
    if w.window.get(&at.id).is_some() {
        at.id
    } else {
        stored.id
    }
}

/// Refuses with the stream's actual version.
fn wrong_version(a: &AppendRef<'_>, version: u64) -> Error {
    Error::WrongExpectedVersion {
        stream: a.stream.to_string(),
        expected: a.expected,
        actual: (version > 0).then_some(version),
    }
}

/// Refuses a write that would take its stream past
/// [`limits::STREAM_VERSION_MAX`] (versions are 32 bits on disk), before
/// anything is queued.
fn version_room(a: &AppendRef<'_>, version: u64) -> Result<()> {
    let last = version.saturating_add(a.events.len() as u64);
    if last > limits::STREAM_VERSION_MAX {
        return Err(Error::InvalidInput(format!(
            "stream '{}' is at version {version}: {} more events would pass the highest stream version, {}",
            a.stream,
            a.events.len(),
            limits::STREAM_VERSION_MAX
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_may_reach_the_highest_version_but_not_pass_it() {
        let events = [EventData::new("E", "{}"), EventData::new("E", "{}")];
        let append = |n: usize| AppendRef {
            stream: "S-1",
            expected: ExpectedVersion::Any,
            events: &events[..n],
        };
        let max = limits::STREAM_VERSION_MAX;
        assert!(version_room(&append(1), max - 1).is_ok());
        assert!(version_room(&append(2), max - 2).is_ok());
        assert!(matches!(version_room(&append(2), max - 1), Err(Error::InvalidInput(_))));
        assert!(matches!(version_room(&append(1), max), Err(Error::InvalidInput(_))));
        assert!(matches!(
            version_room(&append(1), u64::MAX),
            Err(Error::InvalidInput(_))
        ));
    }
}
