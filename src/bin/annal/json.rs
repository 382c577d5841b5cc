//! Writing JSON lines: objects with keys in a fixed order, event payloads
//! (JSON kept byte for byte, else base64), timestamps.

use annal::{AppendResult, RecordedEvent};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::value::RawValue;

/// A JSON object built key by key, in order.
pub struct Obj {
    text: String,
}

impl Obj {
    pub fn new() -> Self {
        Obj { text: "{".into() }
    }

    /// Adds a key with an already serialized JSON value.
    pub fn raw(mut self, key: &str, json: &str) -> Self {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        self.text.push_str(&quote(key));
        self.text.push(':');
        self.text.push_str(json);
        self
    }

    pub fn str(self, key: &str, value: &str) -> Self {
        self.raw(key, &quote(value))
    }

    pub fn num(self, key: &str, value: u64) -> Self {
        self.raw(key, &value.to_string())
    }

    pub fn bool(self, key: &str, value: bool) -> Self {
        self.raw(key, if value { "true" } else { "false" })
    }

    pub fn finish(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

/// A JSON string literal.
pub fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A JSON array of already serialized values.
pub fn array(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    format!("[{}]", items.join(","))
}

/// The bytes as a JSON text that can be embedded in a line and read back
/// as exactly these bytes: valid JSON, no line breaks, no surrounding
/// whitespace.
pub fn embeddable(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let clean = !text.is_empty() && text.trim() == text && !text.contains(['\n', '\r']) && is_json(text);
    clean.then_some(text)
}

/// Deepest nesting written as JSON: deeper values go out as base64, since
/// common JSON readers (jq, Python, serde_json) refuse them.
const NESTING_MAX: usize = 127;

/// Valid JSON nested at most [`NESTING_MAX`] levels deep, whose strings
/// escape no unpaired surrogate (`"\ud800"`: RFC 8259's grammar allows it,
/// but it is no Unicode text, and jq and others refuse it).
fn is_json(text: &str) -> bool {
    nesting_at_most(text, NESTING_MAX) && surrogates_paired(text) && serde_json::from_str::<&RawValue>(text).is_ok()
}

/// Whether every `\uD800`-`\uDBFF` escape in `text` is followed at once by
/// a `\uDC00`-`\uDFFF` one, and no such low escape comes alone.
fn surrogates_paired(text: &str) -> bool {
    let bytes = text.as_bytes();
    let escape_at = |i: usize| -> Option<u16> {
        let hex = bytes.get(i..i + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match escape_at(i) {
            Some(0xD800..=0xDBFF) => {
                if !matches!(escape_at(i + 6), Some(0xDC00..=0xDFFF)) {
                    return false;
                }
                i += 12;
            }
            Some(0xDC00..=0xDFFF) => return false,
            Some(_) => i += 6,
            // Another escape (`\"`, `\\`, ...): skip both bytes.
            None => i += 2,
        }
    }
    true
}

/// Whether no array or object in `text` (JSON or not) is opened deeper than
/// `max` levels, counting brackets outside strings.
fn nesting_at_most(text: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Adds a payload under `key` when it is embeddable JSON, else under
/// `{key}_base64`. In `lossy` mode (for reading, not exporting), JSON with
/// line breaks or surrounding whitespace is written without the whitespace
/// between its tokens instead: the same tokens, so the same value.
pub fn payload(obj: Obj, key: &str, bytes: &[u8], lossy: bool) -> Obj {
    if let Some(text) = embeddable(bytes) {
        return obj.raw(key, text);
    }
    if lossy
        && let Ok(text) = std::str::from_utf8(bytes)
        && is_json(text)
    {
        return obj.raw(key, &minified(text));
    }
    obj.str(&format!("{key}_base64"), &BASE64.encode(bytes))
}

/// Valid JSON `text` without the whitespace between its tokens: every token
/// as written (numbers keep their digits, objects their repeated keys), on
/// one line (a JSON string holds no raw line break).
fn minified(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The line `read` and `read-all` print for an event.
pub fn event_line(e: &RecordedEvent) -> String {
    let obj = Obj::new()
        .num("position", e.position())
        .str("stream", e.stream())
        .num("version", e.version())
        .str("id", &e.id().to_string())
        .str("type", e.event_type())
        .str("timestamp", &rfc3339(e.timestamp_micros()));
    let obj = payload(obj, "data", e.data(), true);
    let obj = if e.metadata().is_empty() {
        obj.raw("metadata", "null")
    } else {
        payload(obj, "metadata", e.metadata(), true)
    };
    obj.finish()
}

/// The import line that appends `e` again with the same id, at the same
/// version (the expected version is the one before it), keeping data and
/// metadata byte for byte (base64 when they are not embeddable JSON).
pub fn export_line(e: &RecordedEvent) -> String {
    let obj = Obj::new().str("stream", e.stream());
    let obj = match e.version() {
        1 => obj.str("expected", "no-stream"),
        v => obj.num("expected", v - 1),
    };
    let obj = obj.str("id", &e.id().to_string()).str("type", e.event_type());
    let obj = payload(obj, "data", e.data(), false);
    let obj = match e.metadata() {
        [] => obj,
        // "metadata": null imports as no metadata, so these bytes go as base64.
        b"null" => obj.str("metadata_base64", "bnVsbA=="),
        m => payload(obj, "metadata", m, false),
    };
    let obj = match e.schema_version() {
        1 => obj,
        v => obj.num("schema_version", u64::from(v)),
    };
    obj.finish()
}

/// The line `append` and `import` print for a successful append.
pub fn result_line(stream: &str, r: &AppendResult) -> String {
    Obj::new()
        .str("stream", stream)
        .num("first_version", r.first_version)
        .num("last_version", r.last_version)
        .num("first_position", r.first_position)
        .num("last_position", r.last_position)
        .finish()
}

/// Microseconds since the Unix epoch as RFC 3339 UTC, e.g.
/// `2026-05-01T12:00:00.123456Z`.
pub fn rfc3339(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (the well-known era-based conversion).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(rfc3339(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn unpaired_surrogates_are_not_embedded() {
        for text in [r#""\ud800""#, r#""\udc00""#, r#"{"a":"x\ud83dy"}"#, r#""\ud83d\u0041""#] {
            assert!(embeddable(text.as_bytes()).is_none(), "{text}");
        }
        for text in [
            r#""\ud83d\ude00""#,
            r#""\\ud800""#,
            r#""\u00e9""#,
            r#"{"a":"\\\ud83d\udE00"}"#,
        ] {
            assert!(embeddable(text.as_bytes()).is_some(), "{text}");
        }
    }

    #[test]
    fn payloads() {
        let line = |b: &[u8], lossy| payload(Obj::new(), "data", b, lossy).finish();
        assert_eq!(line(br#"{"b":1, "a":[2]}"#, false), r#"{"data":{"b":1, "a":[2]}}"#);
        assert_eq!(line(b"", false), r#"{"data_base64":""}"#);
        assert_eq!(line(b"\xff", false), r#"{"data_base64":"/w=="}"#);
        assert_eq!(line(b"{\n}", false), r#"{"data_base64":"ewp9"}"#);
        assert_eq!(line(b"{\n}", true), r#"{"data":{}}"#);
        // Whitespace goes, tokens stay as written: big and precise numbers,
        // repeated keys, escapes and spaces inside strings.
        let stored = b"[123456789012345678901234567890,\n 1.0000000000000000001]";
        assert_eq!(
            line(stored, true),
            r#"{"data":[123456789012345678901234567890,1.0000000000000000001]}"#
        );
        let stored = b"{\"a\": 1,\n\"a\" : \"x \\\" y\\\\\"}\n";
        assert_eq!(line(stored, true), r#"{"data":{"a":1,"a":"x \" y\\"}}"#);
        assert_eq!(line(b" 1", false), r#"{"data_base64":"IDE="}"#);
        assert_eq!(line(b"\"x\"", false), r#"{"data":"x"}"#);
    }
}
