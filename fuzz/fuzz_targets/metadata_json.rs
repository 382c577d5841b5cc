//! Arbitrary bytes as an event's metadata, through the two places where
//! the library reads metadata as JSON itself: setting the correlation and
//! causation ids (`EventData::correlation_id`, `causation_id`), which check
//! that the metadata is a JSON object and keep its other fields, and
//! reading them back from a stored event (`RecordedEvent::correlation_id`,
//! `causation_id`). Never a panic; serde_json is the oracle for what the
//! rewrite must give.
#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use annal::io::sim::SimFs;
use annal::{
    CAUSATION_ID_KEY, CORRELATION_ID_KEY, Durability, EventData, ExpectedVersion, Options, RecordedEvent, Store, Uuid,
};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;

const CORRELATION: Uuid = Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888);
const CAUSATION: Uuid = Uuid::from_u128(0x9999_aaaa_bbbb_cccc_dddd_eeee_ffff_0000);

/// The two ids of a metadata object; a key given twice is an error.
#[derive(Deserialize)]
struct Ids {
    #[serde(rename = "$correlationId")]
    correlation: String,
    #[serde(rename = "$causationId")]
    causation: String,
}

/// A store in the simulated file system, replaced every few thousand
/// inputs so that a long run does not grow it without end.
struct Scratch {
    store: Store<SimFs>,
    appended: u32,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// Appends `event` and reads it back.
fn stored(event: EventData) -> RecordedEvent {
    SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|s| s.appended >= 4096) {
            let options = Options::default().with_durability(Durability::Buffered);
            let store = Store::open_with(SimFs::new(1), Path::new("/fuzz/store"), options).expect("open");
            *cell = Some(Scratch { store, appended: 0 });
        }
        let scratch = cell.as_mut().expect("made above");
        scratch.appended += 1;
        let result = scratch
            .store
            .append("S-1", ExpectedVersion::Any, [event])
            .expect("append");
        scratch
            .store
            .read_position(result.last_position)
            .expect("read")
            .expect("the event just appended")
    })
}

/// The top-level members of a JSON object, keys decoded, values as written
/// (a key given twice: its last value, as the JSON readers that keep one).
fn members(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(bytes).ok()?;
    Some(map.into_iter().map(|(k, v)| (k, v.get().to_string())).collect())
}

/// Whether `bytes` hold an escaped UTF-16 surrogate (`\uD800` to
/// `\uDFFF`), paired or not.
fn has_surrogate_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(4)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && w[2].eq_ignore_ascii_case(&b'd') && b"89abcdefABCDEF".contains(&w[3]))
}

fuzz_target!(|data: &[u8]| {
    let event = EventData::new("E", "{}")
        .with_metadata(data.to_vec())
        .correlation_id(CORRELATION)
        .causation_id(CAUSATION);
    let out = event.metadata().to_vec();

    // The rewrite is always one JSON object holding each id once.
    let said = |e: serde_json::Error| {
        format!(
            "{:?} became {:?}: {e}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&out)
        )
    };
    if has_surrogate_escape(data) {
        // Valid JSON (RFC 8259's grammar allows `\ud800` alone), which
        // serde_json refuses to decode as a key or string: only its syntax
        // is checked.
        serde_json::from_slice::<serde::de::IgnoredAny>(&out).unwrap_or_else(|e| panic!("{}", said(e)));
    } else {
        let ids: Ids = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{}", said(e)));
        assert_eq!(ids.correlation, CORRELATION.to_string());
        assert_eq!(ids.causation, CAUSATION.to_string());
    }

    // A JSON object keeps every other member, values byte for byte.
    if let Some(mut before) = members(data) {
        let mut after = members(&out).expect("an object rewritten is an object");
        for key in [CORRELATION_ID_KEY, CAUSATION_ID_KEY] {
            before.remove(key);
            after.remove(key);
        }
        assert_eq!(before, after, "members changed: {:?}", String::from_utf8_lossy(data));
    }

    // Read back from the log: the ids set, and no panic on the raw bytes.
    let rewritten = stored(event);
    assert_eq!(rewritten.correlation_id(), Some(CORRELATION));
    assert_eq!(rewritten.causation_id(), Some(CAUSATION));
    let raw = stored(EventData::new("E", "{}").with_metadata(data.to_vec()));
    let _ = (raw.correlation_id(), raw.causation_id());
});
