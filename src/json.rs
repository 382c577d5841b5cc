//! A strict check that text is one JSON value (RFC 8259), without building
//! it: metadata must be a JSON object before fields are merged into it, and
//! the library does not depend on a JSON parser.
//!
//! Iterative, with an explicit stack of open containers, so that no input,
//! however deeply nested, can overflow the call stack.

/// Whether `text` is a JSON object, with optional whitespace around it.
pub(crate) fn is_object(text: &str) -> bool {
    text.trim_start_matches(WHITESPACE).starts_with('{') && is_value(text)
}

/// Whether `text` is exactly one JSON value, with optional whitespace
/// around it.
pub(crate) fn is_value(text: &str) -> bool {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    p.value().is_some()
}

const WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// Containers opened and not yet closed.
#[derive(Clone, Copy)]
enum Open {
    Array,
    Object,
}

impl Open {
    /// The byte that closes it.
    fn close(self) -> u8 {
        match self {
            Open::Array => b']',
            Open::Object => b'}',
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    /// Walks one whole value to the end of the text; `None` when it is not.
    fn value(&mut self) -> Option<()> {
        let mut open: Vec<Open> = Vec::new();
        // Whether a value is expected next (else a separator or a close).
        let mut expect_value = true;
        loop {
            self.skip_whitespace();
            if expect_value {
                let c = self.peek()?;
                match c {
                    b'{' | b'[' => {
                        let kind = if c == b'{' { Open::Object } else { Open::Array };
                        self.i += 1;
                        self.skip_whitespace();
                        if !self.eat(kind.close()) {
                            if let Open::Object = kind {
                                self.key()?;
                            }
                            open.push(kind);
                            continue;
                        }
                    }
                    b'"' => self.string()?,
                    b't' => self.literal(b"true")?,
                    b'f' => self.literal(b"false")?,
                    b'n' => self.literal(b"null")?,
                    b'-' | b'0'..=b'9' => self.number()?,
                    _ => return None,
                }
                expect_value = false;
                continue;
            }
            match (open.last(), self.peek()) {
                (None, None) => return Some(()),
                (None, Some(_)) => return None,
                (Some(_), Some(b',')) => {
                    self.i += 1;
                    if let Some(Open::Object) = open.last() {
                        self.skip_whitespace();
                        self.key()?;
                    }
                    expect_value = true;
                }
                (Some(&kind), Some(c)) if c == kind.close() => {
                    self.i += 1;
                    open.pop();
                }
                _ => return None,
            }
        }
    }

    /// An object member's key and its colon.
    fn key(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        self.skip_whitespace();
        self.eat(b':').then_some(())
    }

    fn string(&mut self) -> Option<()> {
        self.i += 1; // the opening quote
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if !self.b.get(self.i..)?.starts_with(word) {
            return None;
        }
        self.i += word.len();
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let here = self.peek() == Some(c);
        if here {
            self.i += 1;
        }
        here
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_json_and_refuses_the_rest() {
        for ok in [
            "{}",
            " { \"a\" : [1, -2.5e+3, true, false, null, {\"b\": \"\\u00e9\\n\"}] } ",
            "[]",
            "0",
            "\"x\"",
            "{\"a\":{\"b\":[[[]]]}}",
        ] {
            assert!(is_value(ok), "{ok}");
        }
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "{\"a\":1 2}",
            "{\"a\":tru}",
            "{a:1}",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "1e",
            "\"\\x\"",
            "\"a\nb\"",
            "{}{}",
            "[}",
            "{\"a\" 1}",
            "nul",
            "\"\\u12G4\"",
        ] {
            assert!(!is_value(bad), "{bad}");
        }
        assert!(is_object(" {\"a\":1}"));
        assert!(!is_object("[1]"));
        // No recursion: deep nesting is checked, not a stack overflow.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(is_value(&deep));
        assert!(!is_value(&deep[1..]));
    }

    /// Text from JSON's own alphabet, so that most of it is near-JSON.
    #[cfg(any(feature = "aggregate", feature = "cli"))]
    fn near_json() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("{"),
            Just("}"),
            Just("["),
            Just("]"),
            Just(","),
            Just(":"),
            Just("\""),
            Just("\\"),
            Just("\\u00e9"),
            Just("a"),
            Just("0"),
            Just("-"),
            Just("1"),
            Just("."),
            Just("e"),
            Just("+"),
            Just(" "),
            Just("\n"),
            Just("true"),
            Just("null"),
            Just("\"k\":"),
            Just("\t"),
        ];
        prop::collection::vec(pieces, 0..24).prop_map(|p| p.concat())
    }

    /// The same answer as serde_json, for near-JSON text and for values
    /// serde_json writes itself.
    #[cfg(any(feature = "aggregate", feature = "cli"))]
    #[test]
    fn agrees_with_serde_json() {
        use serde_json::Value;
        proptest!(|(text in near_json())| {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            prop_assert_eq!(is_value(&text), serde, "{:?}", text);
        });
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        proptest!(|(v in value, pretty in any::<bool>())| {
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) };
            prop_assert!(is_value(&text.unwrap()));
        });
    }
}
