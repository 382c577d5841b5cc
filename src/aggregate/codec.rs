//! Codecs: how events and snapshot states become bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::DomainEvent;
use crate::snapshot::file::SNAPSHOT_BYTES_MAX;

/// A value could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Turns events and aggregate states into bytes and back.
pub trait Codec: Send + Sync {
    /// Encodes an event's payload (stored as the event's data).
    fn encode_event<E: DomainEvent>(&self, event: &E) -> Result<Vec<u8>, CodecError>;
    /// Decodes an event of type `event_type` from its (upcast) payload.
    fn decode_event<E: DomainEvent>(&self, event_type: &str, payload: &[u8]) -> Result<E, CodecError>;
    /// Encodes a snapshot state.
    fn encode_state<S: Serialize>(&self, state: &S) -> Result<Vec<u8>, CodecError>;
    /// Decodes a snapshot state.
    fn decode_state<S: DeserializeOwned>(&self, bytes: &[u8]) -> Result<S, CodecError>;
}

/// JSON (serde_json). An enum event is stored as its variant's content
/// (`{"amount":5}` for `Deposited { amount: 5 }`, `null` for a unit
/// variant) under the variant's name as event type, which keeps stored
/// events readable by other tools and lets upcasters work on plain JSON.
/// JSON has no NaN or infinity: serde_json writes them as `null` (a new
/// event that then fails to decode is refused by
/// [`Repository::execute`](super::Repository::execute)).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

fn err(e: impl std::fmt::Display) -> CodecError {
    CodecError(e.to_string())
}

impl Codec for JsonCodec {
    fn encode_event<E: DomainEvent>(&self, event: &E) -> Result<Vec<u8>, CodecError> {
        let value = serde_json::to_value(event).map_err(err)?;
        let event_type = event.event_type();
        let payload = match value {
            Value::Object(map) if map.len() == 1 && map.contains_key(event_type) => {
                map.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null)
            }
            Value::String(s) if s == event_type => Value::Null,
            other => other,
        };
        serde_json::to_vec(&payload).map_err(err)
    }

    fn decode_event<E: DomainEvent>(&self, event_type: &str, payload: &[u8]) -> Result<E, CodecError> {
        let value: Value = serde_json::from_slice(payload).map_err(err)?;
        let mut wrapped = serde_json::Map::new();
        wrapped.insert(event_type.to_string(), value.clone());
        let first = match serde_json::from_value::<E>(Value::Object(wrapped)) {
            Ok(e) => return Ok(e),
            Err(e) => err(e),
        };
        if value.is_null()
            && let Ok(e) = serde_json::from_value::<E>(Value::String(event_type.to_string()))
        {
            return Ok(e);
        }
        // Not an enum variant's content: a struct event stored whole.
        serde_json::from_value::<E>(value).map_err(|_| first)
    }

    fn encode_state<S: Serialize>(&self, state: &S) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(state).map_err(err)
    }

    fn decode_state<S: DeserializeOwned>(&self, bytes: &[u8]) -> Result<S, CodecError> {
        serde_json::from_slice(bytes).map_err(err)
    }
}

/// bincode (2, standard configuration, serde). Compact and fast; the whole
/// event enum is stored, so variants must only ever be added at the end
/// (bincode records the variant's index, not its name), and fields must
/// never be added to an existing variant without a new schema version and
/// an upcaster (bincode has no optional fields).
#[derive(Clone, Copy, Debug, Default)]
pub struct BincodeCodec;

const BINCODE_LIMIT: usize = SNAPSHOT_BYTES_MAX;

impl Codec for BincodeCodec {
    fn encode_event<E: DomainEvent>(&self, event: &E) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(event, bincode::config::standard()).map_err(err)
    }

    fn decode_event<E: DomainEvent>(&self, _event_type: &str, payload: &[u8]) -> Result<E, CodecError> {
        self.decode_state(payload)
    }

    fn encode_state<S: Serialize>(&self, state: &S) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(state, bincode::config::standard()).map_err(err)
    }

    fn decode_state<S: DeserializeOwned>(&self, bytes: &[u8]) -> Result<S, CodecError> {
        let config = bincode::config::standard().with_limit::<BINCODE_LIMIT>();
        let (value, used) = bincode::serde::decode_from_slice(bytes, config).map_err(err)?;
        if used != bytes.len() {
            return Err(CodecError(format!("{} trailing bytes", bytes.len() - used)));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Ev {
        Opened { owner: String },
        Closed,
        Moved(u32),
    }

    impl DomainEvent for Ev {
        fn event_type(&self) -> &'static str {
            match self {
                Ev::Opened { .. } => "Opened",
                Ev::Closed => "Closed",
                Ev::Moved(_) => "Moved",
            }
        }
    }

    #[test]
    fn json_stores_variant_content() {
        let e = Ev::Opened { owner: "ann".into() };
        let bytes = JsonCodec.encode_event(&e).unwrap();
        assert_eq!(bytes, br#"{"owner":"ann"}"#);
        for e in [e, Ev::Closed, Ev::Moved(3)] {
            let bytes = JsonCodec.encode_event(&e).unwrap();
            assert_eq!(JsonCodec.decode_event::<Ev>(e.event_type(), &bytes).unwrap(), e);
            let bytes = BincodeCodec.encode_event(&e).unwrap();
            assert_eq!(BincodeCodec.decode_event::<Ev>(e.event_type(), &bytes).unwrap(), e);
        }
        assert!(JsonCodec.decode_event::<Ev>("Nope", b"{}").is_err());
        assert!(BincodeCodec.decode_event::<Ev>("Opened", &[0xFF; 9]).is_err());
    }
}
