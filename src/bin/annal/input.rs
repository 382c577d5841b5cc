//! Reading import lines (and export's lines, which are import lines).
//!
//! Payloads are kept byte for byte: `"data": {"b":1, "a":2}` stores the
//! text `{"b":1, "a":2}` exactly as written, so an export re-imported
//! stores the same bytes.
//!
//! The `import_line` fuzz target compiles this file, `expected.rs` and
//! `json.rs` into itself: these three use nothing else of the binary.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use annal::{EventData, ExpectedVersion, StreamAppend, Uuid};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The keys of one JSON object with their raw values. A key given twice
/// is an error: JSON parsers disagree on which value wins, so an import
/// must not pick one silently.
struct Fields<'a>(BTreeMap<String, &'a RawValue>);

impl<'a> std::ops::Deref for Fields<'a> {
    type Target = BTreeMap<String, &'a RawValue>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Fields<'a>, A::Error> {
                let mut map = BTreeMap::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value: &'a RawValue = access.next_value()?;
                    if map.contains_key(&key) {
                        return Err(A::Error::custom(format!("{DUPLICATE} \"{key}\"")));
                    }
                    map.insert(key, value);
                }
                Ok(Fields(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// Start of the error for a key given twice.
const DUPLICATE: &str = "duplicate key";

/// The error for a line (or its `events`) that does not parse, `shape`
/// saying what it must be.
fn json_error(e: serde_json::Error, shape: &str) -> String {
    match e.classify() {
        serde_json::error::Category::Data if e.to_string().starts_with(DUPLICATE) => e.to_string(),
        serde_json::error::Category::Data => shape.to_string(),
        _ => format!("invalid JSON: {e}"),
    }
}

const EVENT_KEYS: [&str; 7] = [
    "type",
    "data",
    "data_base64",
    "metadata",
    "metadata_base64",
    "id",
    "schema_version",
];

/// Parses one import line into an append.
pub fn parse_line(line: &str) -> Result<StreamAppend, String> {
    let fields: Fields = serde_json::from_str(line).map_err(|e| json_error(e, "the line must be a JSON object"))?;
    for key in fields.keys() {
        let known = matches!(key.as_str(), "stream" | "expected" | "events") || EVENT_KEYS.contains(&key.as_str());
        if !known {
            return Err(format!("unknown key \"{key}\""));
        }
    }
    let stream = match fields.get("stream") {
        Some(raw) => string(raw, "stream", "a string")?,
        None => return Err("missing \"stream\"".into()),
    };
    let expected = match fields.get("expected") {
        Some(raw) => expected(raw)?,
        None => ExpectedVersion::Any,
    };
    let events = match fields.get("events") {
        Some(raw) => {
            if let Some(key) = EVENT_KEYS.iter().find(|k| fields.contains_key(**k)) {
                return Err(format!("\"{key}\" belongs inside \"events\" when \"events\" is given"));
            }
            let list: Vec<Fields> =
                serde_json::from_str(raw.get()).map_err(|e| json_error(e, "\"events\" must be an array of objects"))?;
            if list.is_empty() {
                return Err("\"events\" is empty".into());
            }
            let mut events = Vec::with_capacity(list.len());
            for (i, e) in list.iter().enumerate() {
                if let Some(key) = e.keys().find(|k| !EVENT_KEYS.contains(&k.as_str())) {
                    return Err(format!("event {}: unknown key \"{key}\"", i + 1));
                }
                events.push(event(e).map_err(|m| format!("event {}: {m}", i + 1))?);
            }
            events
        }
        None => vec![event(&fields)?],
    };
    Ok(StreamAppend::new(stream, expected, events))
}

/// One event from its fields.
fn event(fields: &Fields) -> Result<EventData, String> {
    let event_type = match fields.get("type") {
        Some(raw) => string(raw, "type", "a string")?,
        None => return Err("missing \"type\"".into()),
    };
    let data = match (fields.get("data"), fields.get("data_base64")) {
        (Some(_), Some(_)) => return Err("give \"data\" or \"data_base64\", not both".into()),
        (Some(raw), None) => raw.get().as_bytes().to_vec(),
        (None, Some(raw)) => base64(raw, "data_base64")?,
        (None, None) => b"{}".to_vec(),
    };
    let metadata = match (fields.get("metadata"), fields.get("metadata_base64")) {
        (Some(_), Some(_)) => return Err("give \"metadata\" or \"metadata_base64\", not both".into()),
        (Some(raw), None) if raw.get() == "null" => Vec::new(),
        (Some(raw), None) => raw.get().as_bytes().to_vec(),
        (None, Some(raw)) => base64(raw, "metadata_base64")?,
        (None, None) => Vec::new(),
    };
    let mut e = EventData::new(event_type, data).with_metadata(metadata);
    if let Some(raw) = fields.get("id") {
        let text = string(raw, "id", "a UUID string")?;
        let id = Uuid::parse_str(&text).map_err(|_| format!("\"id\" is not a UUID: {text}"))?;
        e = e.with_id(id);
    }
    if let Some(raw) = fields.get("schema_version") {
        let v = serde_json::from_str::<serde_json::Value>(raw.get())
            .ok()
            .and_then(|v| v.as_u64())
            .and_then(|v| u16::try_from(v).ok())
            .ok_or("\"schema_version\" must be a number from 0 to 65535")?;
        e = e.with_schema_version(v);
    }
    Ok(e)
}

fn string(raw: &RawValue, key: &str, what: &str) -> Result<String, String> {
    match serde_json::from_str(raw.get()) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(format!("\"{key}\" must be {what}")),
    }
}

fn base64(raw: &RawValue, key: &str) -> Result<Vec<u8>, String> {
    let text = string(raw, key, "a base64 string")?;
    decode_base64(&text).map_err(|e| format!("\"{key}\" is not valid base64: {e}"))
}

/// Standard base64 with its ASCII whitespace left out, wherever it is:
/// `base64` wraps its output in lines of 76 characters. Import lines and
/// `--data-base64`/`--metadata-base64` read base64 the same way.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.bytes().any(|b| b.is_ascii_whitespace()) {
        let packed: String = text.split_ascii_whitespace().collect();
        BASE64.decode(packed)
    } else {
        BASE64.decode(text)
    }
}

fn expected(raw: &RawValue) -> Result<ExpectedVersion, String> {
    let bad = || "\"expected\" must be \"any\", \"no-stream\", \"exists\" or a version number".to_string();
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::String(s)) => match s.as_str() {
            "any" | "no-stream" | "exists" => crate::expected::expected_version(&s).map_err(|_| bad()),
            _ => Err(bad()),
        },
        Ok(serde_json::Value::Number(_)) => {
            // Told apart on the text: an integer past u64 parses as a float.
            crate::expected::version_number(raw.get().trim(), "\"expected\"").unwrap_or_else(|| Err(bad()))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_batch_lines() {
        let a = parse_line(r#"{"stream":"s-1","type":"T","data":{"b":1, "a":2},"expected":3}"#).unwrap();
        assert_eq!(a.stream, "s-1");
        assert_eq!(a.expected, ExpectedVersion::Exact(3));
        assert_eq!(a.events[0].data(), br#"{"b":1, "a":2}"#);
        assert!(a.events[0].metadata().is_empty());

        let b = parse_line(
            r#"{"stream":"s","expected":"no-stream","events":[{"type":"A"},{"type":"B","data_base64":"/w==","metadata":{"m":1},"id":"00000000-0000-0000-0000-000000000007"}]}"#,
        )
        .unwrap();
        assert_eq!(b.expected, ExpectedVersion::NoStream);
        assert_eq!(b.events.len(), 2);
        assert_eq!(b.events[0].data(), b"{}");
        assert_eq!(b.events[1].data(), b"\xff");
        assert_eq!(b.events[1].metadata(), br#"{"m":1}"#);
        assert_eq!(b.events[1].id(), Uuid::from_u128(7));
    }

    #[test]
    fn bad_lines_say_why() {
        let err = |l: &str| parse_line(l).unwrap_err();
        assert!(err("{").contains("invalid JSON"));
        assert!(err("[1]").contains("must be a JSON object"));
        assert!(err(r#"{"type":"T"}"#).contains("missing \"stream\""));
        assert!(err(r#"{"stream":"s"}"#).contains("missing \"type\""));
        assert!(err(r#"{"stream":"s","type":"T","expected":"maybe"}"#).contains("\"expected\""));
        assert!(err(r#"{"stream":"s","type":"T","id":"x"}"#).contains("not a UUID"));
        assert!(err(r#"{"stream":"s","type":"T","colour":1}"#).contains("unknown key \"colour\""));
        assert!(err(r#"{"stream":"s","events":[]}"#).contains("empty"));
        assert!(err(r#"{"stream":"s","type":"T","events":[{"type":"A"}]}"#).contains("inside"));
        assert!(err(r#"{"stream":"s","events":[{"data":1}]}"#).contains("event 1: missing \"type\""));
        assert!(err(r#"{"stream":"s","type":"A","type":"B"}"#).contains("duplicate key \"type\""));
        assert!(err(r#"{"stream":"s","events":[{"type":"A","data":1,"data":2}]}"#).contains("duplicate key \"data\""));
        assert!(err(r#"{"stream":"s","events":[1]}"#).contains("must be an array of objects"));
    }
}
