//! Upcasters: old event payloads brought to the current shape on read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

type UpcastFn = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// An upcaster failed on a stored payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("upcasting {event_type} from schema version {from_version}: {reason}")]
pub struct UpcastError {
    /// The event type.
    pub event_type: String,
    /// The schema version the failing upcaster starts from.
    pub from_version: u16,
    /// Its message.
    pub reason: String,
}

/// Upcasters registered per (event type, schema version): each turns a
/// payload of version `v` into one of version `v + 1`. On read, a payload
/// goes through every upcaster from its stored version up, one after the
/// other (v1 -> v2 -> v3), until no upcaster is registered for the version
/// reached. Stored events are never rewritten.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u16), UpcastFn>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.steps.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Upcasters::default()
    }

    /// Registers the step from `from_version` to `from_version + 1` for
    /// `event_type`, on the codec's bytes (replacing an earlier one).
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        from_version: u16,
        step: impl Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    ) -> Self {
        self.steps.insert((event_type.into(), from_version), Arc::new(step));
        self
    }

    /// Registers a step on JSON payloads (for [`super::JsonCodec`]): the
    /// function receives the stored payload as a JSON value and returns it
    /// in the next version's shape.
    pub fn register_json(
        self,
        event_type: impl Into<String>,
        from_version: u16,
        step: impl Fn(serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.register(event_type, from_version, move |bytes| {
            let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            serde_json::to_vec(&step(value)).map_err(|e| e.to_string())
        })
    }

    /// Whether any step is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs the chain of steps on a payload stored at `schema_version`;
    /// returns the version reached and the payload in that version's shape.
    pub fn upcast<'a>(
        &self,
        event_type: &str,
        schema_version: u16,
        payload: &'a [u8],
    ) -> Result<(u16, Cow<'a, [u8]>), UpcastError> {
        let mut version = schema_version;
        let mut bytes = Cow::Borrowed(payload);
        if self.steps.is_empty() {
            return Ok((version, bytes));
        }
        // Each step raises the version by one, so the chain ends.
        while let Some(step) = self.steps.get(&(event_type.to_string(), version)) {
            let next = step(&bytes).map_err(|reason| UpcastError {
                event_type: event_type.to_string(),
                from_version: version,
                reason,
            })?;
            bytes = Cow::Owned(next);
            match version.checked_add(1) {
                Some(v) => version = v,
                None => break,
            }
        }
        Ok((version, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_steps() {
        let u = Upcasters::new()
            .register("E", 1, |b| Ok([b, b"2"].concat()))
            .register("E", 2, |b| Ok([b, b"3"].concat()))
            .register("F", 1, |_| Err("no".into()));
        assert_eq!(u.upcast("E", 1, b"x").unwrap(), (3, Cow::Owned(b"x23".to_vec())));
        assert_eq!(u.upcast("E", 2, b"x").unwrap().1.as_ref(), b"x3");
        assert_eq!(u.upcast("E", 3, b"x").unwrap().1.as_ref(), b"x");
        assert_eq!(u.upcast("G", 1, b"x").unwrap().0, 1);
        assert!(u.upcast("F", 1, b"x").is_err());
    }
}
