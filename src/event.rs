//! Events going in ([`EventData`]), events coming out ([`RecordedEvent`]),
//! and the append contract ([`ExpectedVersion`], [`AppendResult`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use uuid::Uuid;

/// Metadata key under which [`EventData::correlation_id`] stores its id.
pub const CORRELATION_ID_KEY: &str = "$correlationId";
/// Metadata key under which [`EventData::causation_id`] stores its id.
pub const CAUSATION_ID_KEY: &str = "$causationId";

/// An event to append: type, opaque data and metadata, and an id.
///
/// The id makes appends idempotent: retrying an append with the same ids
/// never stores the events twice. [`EventData::new`] generates a random
/// (v4) id; set your own with [`EventData::with_id`] when retries may come
/// from a different process than the first attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventData {
    pub(crate) id: Uuid,
    pub(crate) event_type: String,
    pub(crate) schema_version: u16,
    pub(crate) data: Bytes,
    pub(crate) metadata: Bytes,
}

impl EventData {
    /// A new event with a random id, schema version 1 and empty metadata.
    pub fn new(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventData {
            id: crate::id::new_event_id(),
            event_type: event_type.into(),
            schema_version: 1,
            data: data.into(),
            metadata: Bytes::new(),
        }
    }

    /// Sets the event id (use a stable id to make retries idempotent). An
    /// append refuses the nil UUID (all zeros), the usual value of an id
    /// that was never set, with [`Error::InvalidInput`](crate::Error::InvalidInput).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the metadata bytes (opaque to the store; JSON by convention).
    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Sets the schema version of this event's payload (default 1), used by
    /// upcasters to bring old payloads to the current shape.
    pub fn with_schema_version(mut self, schema_version: u16) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Adds `"$correlationId": "<id>"` to the metadata, which must be empty
    /// or a JSON object (other metadata is replaced by a new object).
    pub fn correlation_id(self, id: Uuid) -> Self {
        self.with_metadata_field(CORRELATION_ID_KEY, id)
    }

    /// Adds `"$causationId": "<id>"` to the metadata, which must be empty
    /// or a JSON object (other metadata is replaced by a new object).
    pub fn causation_id(self, id: Uuid) -> Self {
        self.with_metadata_field(CAUSATION_ID_KEY, id)
    }

    /// Marks this event as caused by `cause`: its causation id is the
    /// cause's event id and its correlation id is the cause's correlation
    /// id (or, when it has none, the cause's own id).
    pub fn caused_by(self, cause: &RecordedEvent) -> Self {
        let correlation = cause.correlation_id().unwrap_or(cause.id());
        self.correlation_id(correlation).causation_id(cause.id())
    }

    /// The event id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The data bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The metadata bytes.
    pub fn metadata(&self) -> &[u8] {
        &self.metadata
    }

    /// The schema version of the payload (1 unless set with
    /// [`with_schema_version`](Self::with_schema_version)).
    pub fn schema_version(&self) -> u16 {
        self.schema_version
    }

    fn with_metadata_field(mut self, key: &str, id: Uuid) -> Self {
        self.metadata = Bytes::from(set_json_field(&self.metadata, key, &id.to_string()));
        self
    }
}

/// Sets `key` to the string `value` in a JSON object held as bytes, keeping
/// the other fields. The key and value are plain ASCII (no escaping needed).
/// Bytes that are not a JSON object (RFC 8259, checked strictly) are
/// replaced by a new object, so the result is always valid JSON.
fn set_json_field(object: &[u8], key: &str, value: &str) -> Vec<u8> {
    let field = format!("\"{key}\":\"{value}\"");
    // JSON's own whitespace only: other spaces around it are not JSON.
    let text = std::str::from_utf8(object)
        .unwrap_or("")
        .trim_matches([' ', '\t', '\n', '\r']);
    let Some(body) = Some(text)
        .filter(|t| crate::json::is_object(t))
        .and_then(|t| t.strip_prefix('{'))
        .and_then(|t| t.strip_suffix('}'))
    else {
        return format!("{{{field}}}").into_bytes();
    };
    // Drop an earlier value of the same key so the object stays valid JSON
    // with one occurrence of it.
    let mut kept = String::with_capacity(body.len());
    for item in top_level_items(body) {
        if member(item).is_none_or(|(k, _)| k != key) {
            if !kept.is_empty() {
                kept.push(',');
            }
            kept.push_str(item.trim());
        }
    }
    if kept.is_empty() {
        format!("{{{field}}}").into_bytes()
    } else {
        format!("{{{kept},{field}}}").into_bytes()
    }
}

/// Where a character of JSON text is: inside a string or not, and how
/// deeply nested in arrays and objects.
#[derive(Default)]
struct Nesting {
    depth: i32,
    in_string: bool,
    escaped: bool,
}

impl Nesting {
    /// Takes the next character; returns whether it lies outside every
    /// string (then `depth` counts the brackets opened before and by it).
    fn outside_string(&mut self, c: char) -> bool {
        if self.in_string {
            match (self.escaped, c) {
                (true, _) => self.escaped = false,
                (false, '\\') => self.escaped = true,
                (false, '"') => self.in_string = false,
                _ => {}
            }
            return false;
        }
        match c {
            '"' => self.in_string = true,
            '{' | '[' => self.depth += 1,
            '}' | ']' => self.depth -= 1,
            _ => {}
        }
        true
    }
}

/// Splits `s` at its first comma that is not inside a string, array or
/// object; returns the part before and the rest after the comma.
fn split_top_level_comma(s: &str) -> (&str, &str) {
    let mut nesting = Nesting::default();
    for (i, c) in s.char_indices() {
        if nesting.outside_string(c) && c == ',' && nesting.depth == 0 {
            return (&s[..i], &s[i + 1..]);
        }
    }
    (s, "")
}

/// The comma-separated items of a JSON object's body (between its braces),
/// split at the commas outside strings, arrays and objects.
fn top_level_items(body: &str) -> impl Iterator<Item = &str> {
    let mut rest = body.trim();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (item, tail) = split_top_level_comma(rest);
        rest = tail.trim();
        Some(item)
    })
}

/// An object member `"key": value`: the key as written between its quotes
/// (escapes not decoded) and the value's text, trimmed.
fn member(item: &str) -> Option<(&str, &str)> {
    let after_quote = item.trim_start().strip_prefix('"')?;
    let mut escaped = false;
    let end = after_quote.char_indices().find_map(|(i, c)| {
        let closing = c == '"' && !escaped;
        escaped = c == '\\' && !escaped;
        closing.then_some(i)
    })?;
    let value = after_quote[end + 1..].trim_start().strip_prefix(':')?;
    Some((&after_quote[..end], value.trim()))
}

/// Finds the string value of `key` among the top-level members of a JSON
/// object held as bytes, whatever the whitespace around its tokens (the
/// last one when the key repeats, as most JSON readers do). Values with
/// escapes are not decoded: `None`.
fn json_string_field<'a>(object: &'a [u8], key: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(object).ok()?.trim();
    let body = text.strip_prefix('{')?.strip_suffix('}')?;
    let value = top_level_items(body)
        .filter_map(member)
        .filter(|(k, _)| *k == key)
        .last()?
        .1;
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['"', '\\'])).then_some(inner)
}

/// The optimistic-concurrency condition of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check: append whatever the stream's state.
    Any,
    /// The stream must have no events (same as `Exact(0)`).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version (0 means the
    /// stream has no events).
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// What one append wrote to one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// Stream version of the first event written.
    pub first_version: u64,
    /// Stream version of the last event written (the stream's new version).
    pub last_version: u64,
    /// Global position of the first event written.
    pub first_position: u64,
    /// Global position of the last event written.
    pub last_position: u64,
}

/// One stream's part of a multi-stream append (see
/// [`crate::Store::append_multi`]).
#[derive(Clone, Debug)]
pub struct StreamAppend {
    /// The stream to append to.
    pub stream: String,
    /// The condition on that stream.
    pub expected: ExpectedVersion,
    /// The events, in order. Must not be empty.
    pub events: Vec<EventData>,
}

impl StreamAppend {
    /// Builds one stream's part of a multi-stream append.
    pub fn new(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = EventData>,
    ) -> Self {
        StreamAppend {
            stream: stream.into(),
            expected,
            events: events.into_iter().collect(),
        }
    }

    /// Checks what every append checks before it reaches a store: the
    /// stream name and event types (1 to 255 bytes), at least one event,
    /// no nil or repeated event id, each event's size, and the batch's
    /// event count and encoded size against [`crate::limits`]. An append
    /// can still fail these checks in a store whose segments are smaller
    /// than a batch of [`crate::limits::BATCH_BYTES_MAX`] bytes needs.
    pub fn validate(&self) -> crate::Result<()> {
        crate::writer::validate(&[self.borrowed()], crate::limits::BATCH_BYTES_MAX)
    }
}

/// An event read from the store.
///
/// Cheap to clone: the stream name, type, data and metadata all point into
/// one shared buffer (a memory map of the segment file) without copying.
#[derive(Clone)]
pub struct RecordedEvent {
    /// The log from the start of the event's batch to the end of its
    /// record: the batch header (read only for the timestamp, so that a
    /// read touches one place of the log, not two) and the record.
    pub(crate) bytes: Bytes,
    pub(crate) position: u64,
    pub(crate) version: u64,
    pub(crate) id: Uuid,
    pub(crate) schema_version: u16,
    /// Offsets in `bytes`: where the record starts, and where its stream
    /// name, event type and metadata end.
    pub(crate) record_at: u32,
    pub(crate) stream_end: u32,
    pub(crate) type_end: u32,
    pub(crate) metadata_end: u32,
}

impl RecordedEvent {
    /// Global position: 1 for the store's first event, gapless.
    #[inline]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Version in its stream: 1 for the stream's first event, gapless.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The event id.
    #[inline]
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The stream name.
    #[inline]
    pub fn stream(&self) -> &str {
        let start = self.record_at as usize + crate::log::frame::RECORD_HEADER_BYTES;
        self.text(start, self.stream_end as usize)
    }

    /// The stream's category: the part of its name before the first `-`
    /// (the whole name when it has none).
    #[inline]
    pub fn category(&self) -> &str {
        category_of(self.stream())
    }

    /// The event type.
    #[inline]
    pub fn event_type(&self) -> &str {
        self.text(self.stream_end as usize, self.type_end as usize)
    }

    /// The schema version of the payload, as given at append.
    #[inline]
    pub fn schema_version(&self) -> u16 {
        self.schema_version
    }

    /// The data bytes (borrowed from the log).
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.bytes.get(self.metadata_end as usize..).unwrap_or_default()
    }

    /// The data as a shared [`Bytes`] handle (no copy).
    #[inline]
    pub fn data_bytes(&self) -> Bytes {
        self.bytes.slice(self.metadata_end as usize..)
    }

    /// The metadata bytes (borrowed from the log).
    #[inline]
    pub fn metadata(&self) -> &[u8] {
        self.bytes
            .get(self.type_end as usize..self.metadata_end as usize)
            .unwrap_or_default()
    }

    /// The metadata as a shared [`Bytes`] handle (no copy).
    #[inline]
    pub fn metadata_bytes(&self) -> Bytes {
        self.bytes.slice(self.type_end as usize..self.metadata_end as usize)
    }

    /// When the append that wrote this event happened, in microseconds
    /// since the Unix epoch.
    #[inline]
    pub fn timestamp_micros(&self) -> i64 {
        crate::log::frame::batch_timestamp(&self.bytes)
    }

    /// When the append that wrote this event happened. (A time the
    /// platform's `SystemTime` cannot hold, tens of thousands of years
    /// away, which only a wrong clock or forged bytes give, comes back as
    /// the Unix epoch; [`RecordedEvent::timestamp_micros`] has the stored
    /// value.)
    pub fn timestamp(&self) -> SystemTime {
        let timestamp = self.timestamp_micros();
        let micros = Duration::from_micros(timestamp.unsigned_abs());
        let time = if timestamp >= 0 {
            UNIX_EPOCH.checked_add(micros)
        } else {
            UNIX_EPOCH.checked_sub(micros)
        };
        time.unwrap_or(UNIX_EPOCH)
    }

    /// The `$correlationId` in the metadata, when it holds one: a top-level
    /// string member of a metadata JSON object, a UUID (the last such
    /// member when the key repeats, as most JSON readers take it).
    pub fn correlation_id(&self) -> Option<Uuid> {
        json_string_field(self.metadata(), CORRELATION_ID_KEY).and_then(|s| Uuid::parse_str(s).ok())
    }

    /// The `$causationId` in the metadata, when it holds one: a top-level
    /// string member of a metadata JSON object, a UUID (the last such
    /// member when the key repeats, as most JSON readers take it).
    pub fn causation_id(&self) -> Option<Uuid> {
        json_string_field(self.metadata(), CAUSATION_ID_KEY).and_then(|s| Uuid::parse_str(s).ok())
    }

    /// The raw record bytes, as stored in the log (see docs/FORMAT.md).
    #[inline]
    pub fn raw_record(&self) -> &[u8] {
        self.bytes.get(self.record_at as usize..).unwrap_or_default()
    }

    // Names were checked to be UTF-8 when the record was decoded; they are
    // checked again here (the map's bytes are not ours to trust), with a
    // fast path for the usual ASCII names: a general UTF-8 check of a short
    // name cost about 100 instructions, several times the rest of reading
    // the field.
    #[inline]
    fn text(&self, start: usize, end: usize) -> &str {
        let bytes = self.bytes.get(start..end).unwrap_or_default();
        if bytes.is_ascii() {
            // SAFETY: every ASCII byte sequence is valid UTF-8, and these
            // bytes were just checked to be ASCII. They stay as checked for
            // the borrow's life on the same ground as every read of the
            // segment maps (and as the `from_utf8` below, whose result is
            // just as much a view of the map): no other program changes a
            // store's files while it is open (see the SAFETY comment where
            // the files are mapped, src/io/std_fs.rs).
            return unsafe { std::str::from_utf8_unchecked(bytes) };
        }
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl fmt::Debug for RecordedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedEvent")
            .field("position", &self.position)
            .field("stream", &self.stream())
            .field("version", &self.version)
            .field("id", &self.id)
            .field("event_type", &self.event_type())
            .field("schema_version", &self.schema_version)
            .field("timestamp_micros", &self.timestamp_micros())
            .field("data_len", &self.data().len())
            .field("metadata_len", &self.metadata().len())
            .finish()
    }
}

impl PartialEq for RecordedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position && self.raw_record() == other.raw_record()
    }
}

impl Eq for RecordedEvent {}

/// The category of a stream name: the part before the first `-`.
pub fn category_of(stream: &str) -> &str {
    stream.split_once('-').map_or(stream, |(c, _)| c)
}

/// [`category_of`] of a stream name given as its UTF-8 bytes (as a record
/// holds it): the same split, since a `-` byte is never part of a longer
/// character.
pub(crate) fn category_of_bytes(stream: &[u8]) -> &[u8] {
    stream
        .iter()
        .position(|&b| b == b'-')
        .map_or(stream, |dash| &stream[..dash])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_of_names_and_of_their_bytes_agree() {
        for name in ["Order-1", "Order", "-x", "a-b-c", "Zähler-é-1", "日本-1", "é"] {
            assert_eq!(
                category_of_bytes(name.as_bytes()),
                category_of(name).as_bytes(),
                "{name}"
            );
        }
    }

    #[test]
    fn metadata_fields_merge_into_objects() {
        let id = Uuid::from_u128(7);
        let e = EventData::new("T", "{}")
            .with_metadata(r#"{"user":"a,b","n":[1,2]}"#)
            .correlation_id(id);
        let text = std::str::from_utf8(e.metadata()).unwrap();
        assert_eq!(text, format!(r#"{{"user":"a,b","n":[1,2],"$correlationId":"{id}"}}"#));
        let e = e.correlation_id(Uuid::from_u128(8));
        let text = std::str::from_utf8(e.metadata()).unwrap();
        assert_eq!(text.matches("$correlationId").count(), 1);
        assert_eq!(
            json_string_field(e.metadata(), CORRELATION_ID_KEY),
            Some(Uuid::from_u128(8).to_string().as_str())
        );
    }

    /// Metadata written by other tools: spaces and newlines around the
    /// tokens, the key nested in another object, the key repeated.
    #[test]
    fn metadata_fields_are_found_whatever_the_spelling() {
        let (x, y) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let spaced = format!("{{ \"user\": \"a\",\n  \"$correlationId\" : \"{x}\" }}");
        assert_eq!(
            json_string_field(spaced.as_bytes(), CORRELATION_ID_KEY),
            Some(x.to_string().as_str())
        );
        let nested = format!(r#"{{"inner":{{"$correlationId":"{x}"}},"$correlationId":"{y}"}}"#);
        assert_eq!(
            json_string_field(nested.as_bytes(), CORRELATION_ID_KEY),
            Some(y.to_string().as_str())
        );
        let only_nested = format!(r#"{{"inner":{{"$correlationId":"{x}"}}}}"#);
        assert_eq!(json_string_field(only_nested.as_bytes(), CORRELATION_ID_KEY), None);
        let in_a_string = format!(r#"{{"note":"\"$correlationId\":\"{x}\""}}"#);
        assert_eq!(json_string_field(in_a_string.as_bytes(), CORRELATION_ID_KEY), None);
        for bad in ["", "{", "[]", r#"{"$correlationId":1}"#, r#"{"$correlationId":"a\"b"}"#] {
            assert_eq!(json_string_field(bad.as_bytes(), CORRELATION_ID_KEY), None, "{bad}");
        }
        // Setting the field replaces a spaced earlier value, once.
        let e = EventData::new("T", "{}").with_metadata(spaced).correlation_id(y);
        let text = std::str::from_utf8(e.metadata()).unwrap();
        assert_eq!(text.matches("$correlationId").count(), 1, "{text}");
        assert_eq!(
            json_string_field(e.metadata(), CORRELATION_ID_KEY),
            Some(y.to_string().as_str())
        );
        assert!(text.contains(r#""user": "a""#), "{text}");
    }

    #[test]
    fn empty_or_foreign_metadata_becomes_an_object() {
        let id = Uuid::from_u128(9);
        let e = EventData::new("T", "").causation_id(id);
        assert_eq!(e.metadata(), format!(r#"{{"$causationId":"{id}"}}"#).as_bytes());
        let e = EventData::new("T", "").with_metadata("not json").causation_id(id);
        assert_eq!(e.metadata(), format!(r#"{{"$causationId":"{id}"}}"#).as_bytes());
        // Shaped like an object, brackets and quotes balanced, but not JSON.
        for broken in [r#"{"a":}"#, r#"{"a":1 2}"#, r#"{"a":tru}"#, r#"{"a":01}"#] {
            let e = EventData::new("T", "").with_metadata(broken).causation_id(id);
            assert_eq!(
                e.metadata(),
                format!(r#"{{"$causationId":"{id}"}}"#).as_bytes(),
                "{broken}"
            );
        }
    }

    /// Any metadata bytes: reading or setting a field never panics, and
    /// setting one always leaves an object that holds it.
    #[test]
    fn metadata_fields_survive_arbitrary_bytes() {
        use proptest::prelude::*;
        let pieces = prop::collection::vec(
            prop_oneof![
                Just("{".to_string()),
                Just("}".to_string()),
                Just("[".to_string()),
                Just("]".to_string()),
                Just("\"".to_string()),
                Just("\\".to_string()),
                Just(",".to_string()),
                Just(":".to_string()),
                Just(" ".to_string()),
                Just("\"$correlationId\"".to_string()),
                "[a-z0-9é]{0,3}",
            ],
            0..24,
        );
        let bytes = prop_oneof![
            pieces.prop_map(|p| p.concat().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..64),
        ];
        proptest!(|(metadata in bytes)| {
            let _ = json_string_field(&metadata, CORRELATION_ID_KEY);
            let id = Uuid::from_u128(42).to_string();
            let set = set_json_field(&metadata, CORRELATION_ID_KEY, &id);
            prop_assert_eq!(json_string_field(&set, CORRELATION_ID_KEY), Some(id.as_str()));
            let text = std::str::from_utf8(&set).unwrap_or_default();
            prop_assert!(crate::json::is_object(text), "not a JSON object: {:?}", text);
        });
    }

    /// Valid JSON objects stay valid JSON with every other member kept, as
    /// a JSON reader sees them.
    #[cfg(feature = "aggregate")]
    #[test]
    fn setting_a_metadata_field_keeps_a_json_object_valid() {
        use proptest::prelude::*;
        use serde_json::{Map, Value};
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[ -~é]{0,8}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z$\"{},:]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        let keys = prop_oneof![Just(CORRELATION_ID_KEY.to_string()), "[a-z$\"{},:]{0,6}"];
        let object = prop::collection::vec((keys, value), 0..5);
        proptest!(|(members in object, pretty in any::<bool>())| {
            let object: Map<String, Value> = members.into_iter().collect();
            let text = if pretty {
                serde_json::to_vec_pretty(&object)
            } else {
                serde_json::to_vec(&object)
            }
            .unwrap();
            let id = Uuid::from_u128(7).to_string();
            if object.get(CORRELATION_ID_KEY).and_then(Value::as_str).is_some_and(|v| !v.contains(['"', '\\'])) {
                prop_assert_eq!(
                    json_string_field(&text, CORRELATION_ID_KEY),
                    object.get(CORRELATION_ID_KEY).and_then(Value::as_str)
                );
            }
            let set = set_json_field(&text, CORRELATION_ID_KEY, &id);
            let parsed: Map<String, Value> = serde_json::from_slice(&set).unwrap();
            let mut expected = object.clone();
            expected.insert(CORRELATION_ID_KEY.to_string(), Value::from(id.clone()));
            prop_assert_eq!(parsed, expected);
        });
    }

    #[test]
    fn categories() {
        assert_eq!(category_of("Order-42"), "Order");
        assert_eq!(category_of("Order-42-x"), "Order");
        assert_eq!(category_of("Order"), "Order");
    }
}
