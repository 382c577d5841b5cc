//! Mutation review of the API surface: `src/event.rs` (the `EventData`
//! builder and accessors, `RecordedEvent` accessors, `category_of`, the
//! metadata id fields), `src/id.rs`, `src/options.rs` (builder, accessors,
//! `validate`, `batch_bytes_max`), the limits of `src/limits.rs` as
//! `src/writer/validate.rs` enforces them, and the query methods of
//! `src/store.rs` (`stream_version`, `last_position`, `stream_names`,
//! `largest_streams`, `store_id`, `path`, `stats`, `read_position`, and the
//! argument checks of `read_stream`, `read_all` and `read_category`),
//! against their doc comments, README.md ("Limits", "idempotent"),
//! DESIGN.md and FORMAT.md.
//!
//! 73 mutants were put in by hand behind an environment switch and run
//! one at a time against `--lib event:: id:: options:: writer::validate`
//! and the suite modules `semantics`, `bad_input`, `smoke`,
//! `contract_review`, `cli_contract_review`, `new_api_review`,
//! `aggregates`, `app_review`, `repository_mutants_review`,
//! `format_cleanroom_review`, `read_mutants_review` and
//! `cli_mutants_review` (and `spare_segment`, `group_commit` for the two
//! stats counters those exercise). 56 were caught by existing tests; one
//! more (`appends_written` and `group_commits` swapped) only by
//! `group_commit`'s held-sync test. The 16 survivors, each killed here:
//! - `RecordedEvent::data_bytes` starting at the metadata, and
//!   `metadata_bytes` returning the data
//! - `RecordedEvent::timestamp` taking a negative timestamp as after the
//!   epoch
//! - `correlation_id` / `causation_id` reading the first of a repeated key
//! - a batch of exactly the size limit refused (`>=`), the batch header
//!   left out of the size, the segment header left out of a segment's room,
//!   the 32 MiB cap dropped for segments larger than it
//! - a default idempotency window of 1,000 ids
//! - `EventData::schema_version` returning 1, and the `Options` accessors
//!   (`durability`, `segment_size_bytes`, `read_only`) returning defaults
//! - a read-only open skipping `Options::validate`
//! - a periodic interval under a millisecond refused (only zero must be)
//! - `Stats::disk_bytes` counting the segment made ahead
//!
//! None of the 73 turned out equivalent.

mod common;

use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use annal::{Durability, Error, EventData, ExpectedVersion, Options, Store, StreamAppend, limits};
use common::files::{seg, segment_ids};
use common::*;

fn open(options: Options) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), options).unwrap();
    (dir, store)
}

fn is_invalid<T>(r: &annal::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidInput(_)))
}

// ------------------------------------------------------------ accessors

/// `data_bytes` and `metadata_bytes` are "the data/metadata as a shared
/// `Bytes` handle": the same bytes as `data()` and `metadata()`, which are
/// the bytes appended, empty ones included.
#[test]
fn shared_handles_hold_the_data_and_metadata_appended() {
    let (_d, store) = open(Options::default());
    store
        .append(
            "S-1",
            ExpectedVersion::Any,
            [
                EventData::new("T", &b"the data"[..]).with_metadata(&b"{\"m\":1}"[..]),
                EventData::new("T", &b""[..]).with_metadata(&b"only metadata"[..]),
                EventData::new("T", &b"only data"[..]),
            ],
        )
        .unwrap();
    let got = stream(&store, "S-1");
    let handles: Vec<(Vec<u8>, Vec<u8>)> = got
        .iter()
        .map(|e| (e.data_bytes().to_vec(), e.metadata_bytes().to_vec()))
        .collect();
    assert_eq!(
        handles,
        [
            (b"the data".to_vec(), b"{\"m\":1}".to_vec()),
            (b"".to_vec(), b"only metadata".to_vec()),
            (b"only data".to_vec(), b"".to_vec()),
        ]
    );
    for e in &got {
        assert_eq!(&e.data_bytes()[..], e.data());
        assert_eq!(&e.metadata_bytes()[..], e.metadata());
    }
}

/// `correlation_id` and `causation_id` read "the `$correlationId` /
/// `$causationId` in the metadata": when metadata written by another tool
/// names one twice, the value a JSON reader keeps, the last (the reader's
/// doc comment: "the last one when the key repeats, as most JSON readers
/// do"), not the first.
#[test]
fn a_repeated_id_key_in_metadata_reads_as_its_last_value() {
    let (_d, store) = open(Options::default());
    let (a, b) = (annal::Uuid::from_u128(1), annal::Uuid::from_u128(2));
    let metadata =
        format!(r#"{{"$correlationId":"{a}","$causationId":"{a}","$correlationId":"{b}","$causationId":"{b}"}}"#);
    store
        .append(
            "S-1",
            ExpectedVersion::Any,
            [EventData::new("T", "{}").with_metadata(metadata)],
        )
        .unwrap();
    let e = store.read_position(1).unwrap().unwrap();
    assert_eq!((e.correlation_id(), e.causation_id()), (Some(b), Some(b)));
}

/// Rewrites the timestamp of the store's first batch (right after the
/// 64-byte segment header) and its batch CRC, which covers the timestamp
/// and the CRC of each record (docs/FORMAT.md), as another writer of the
/// format could have written it.
fn forge_first_timestamp(segment: &std::path::Path, micros: i64) {
    let mut b = fs::read(segment).unwrap();
    let batch = 64;
    let records = u32::from_le_bytes(b[batch + 8..batch + 12].try_into().unwrap());
    assert_eq!(records, 1, "a one-event batch");
    b[batch + 24..batch + 32].copy_from_slice(&micros.to_le_bytes());
    let record = batch + 32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&b[batch..batch + 12]);
    crc.update(&b[batch + 16..batch + 32]);
    crc.update(&b[record + 4..record + 8]);
    let batch_crc = crc.finalize();
    b[batch + 12..batch + 16].copy_from_slice(&batch_crc.to_le_bytes());
    fs::write(segment, b).unwrap();
}

/// The batch timestamp is "microseconds since the Unix epoch (signed)"
/// (FORMAT.md), and `timestamp` is that moment: before the epoch for a
/// negative one.
#[test]
fn timestamps_are_signed_microseconds_from_the_epoch() {
    for micros in [-1_500_000i64, 1_700_000_000_123_456] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.append("S-1", ExpectedVersion::Any, [event("T", 1)]).unwrap();
        store.close().unwrap();
        forge_first_timestamp(&seg(dir.path(), 1), micros);
        fs::remove_file(dir.path().join("index")).unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let e = store.read_position(1).unwrap().unwrap();
        assert_eq!(e.timestamp_micros(), micros);
        let want = if micros < 0 {
            UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
        } else {
            UNIX_EPOCH + Duration::from_micros(micros as u64)
        };
        assert_eq!(e.timestamp(), want, "{micros} µs");
    }
}

// --------------------------------------------------------------- limits

/// One event of stream `S` and type `T` whose batch frame is `bytes` long:
/// a 32-byte batch header and a record of 40 bytes plus the names and
/// the data (docs/FORMAT.md).
fn batch_of(bytes: usize) -> EventData {
    EventData::new("T", vec![b'x'; bytes - 32 - 40 - 2])
}

/// "One append must fit in a segment" (`with_segment_size_bytes`); FORMAT.md:
/// "the writer limits a frame ... to the segment size minus its 64-byte
/// header". A batch of exactly that size is accepted and fills a segment
/// (the next append rolls over, which `Stats::segments` counts); one byte
/// more is refused with `InvalidInput`.
#[test]
fn a_batch_of_exactly_a_small_segment_less_its_header_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let options = Options::default().with_segment_size_bytes(limits::SEGMENT_BYTES_MIN);
    let store = Store::open(&p, options).unwrap();
    let fits = limits::SEGMENT_BYTES_MIN as usize - 64;
    let r = store.append("S", ExpectedVersion::Any, [batch_of(fits + 1)]);
    assert!(is_invalid(&r), "{r:?}");
    assert_eq!(store.last_position(), 0);
    store.append("S", ExpectedVersion::Any, [batch_of(fits)]).unwrap();
    assert_eq!(store.read_position(1).unwrap().unwrap().data().len(), fits - 74);
    assert_eq!(store.stats().segments, 1);
    store.append("S", ExpectedVersion::Any, [event("T", 2)]).unwrap();
    assert_eq!(store.stats().segments, 2, "the full segment rolled over");
    assert_eq!(segment_ids(&p), [1, 2]);
    assert_eq!(stream(&store, "S").len(), 2);
}

/// README: "One append: ... 32 MiB (and it must fit in one segment)": with
/// the default 64 MiB segments, 32 MiB is the limit, exactly that many
/// bytes accepted, one more refused. `StreamAppend::validate` checks the
/// same.
#[test]
fn an_append_of_exactly_32_mib_is_accepted_in_a_large_segment() {
    let (_d, store) = open(Options::default().with_durability(Durability::Buffered));
    assert_eq!(limits::BATCH_BYTES_MAX, 32 << 20);
    // Two events (one at the event limit of 16 MiB): a 32-byte batch
    // header, two 42-byte record headers and names, and the data.
    let first = EventData::new("T", vec![b'a'; limits::EVENT_PAYLOAD_BYTES_MAX]);
    let rest = limits::BATCH_BYTES_MAX - 32 - 2 * 42 - limits::EVENT_PAYLOAD_BYTES_MAX;
    let batch = |extra: usize| vec![first.clone(), EventData::new("T", vec![b'b'; rest + extra])];
    let over = StreamAppend::new("S", ExpectedVersion::Any, batch(1));
    assert!(is_invalid(&over.validate()));
    let r = store.append("S", ExpectedVersion::Any, batch(1));
    assert!(is_invalid(&r), "{r:?}");
    assert_eq!(store.last_position(), 0);
    StreamAppend::new("S", ExpectedVersion::Any, batch(0))
        .validate()
        .unwrap();
    store.append("S", ExpectedVersion::Any, batch(0)).unwrap();
    let got: Vec<usize> = stream(&store, "S").iter().map(|e| e.data().len()).collect();
    assert_eq!(got, [limits::EVENT_PAYLOAD_BYTES_MAX, rest]);
}

// ---------------------------------------------------- the default window

/// README: under `Any`, a retry is recognised "while the retried events
/// are still their stream's last ones, however old, and otherwise within
/// a window of the last 10,000 ids written" (the default): an append
/// whose id is among the last 10,000 gets its original result; one more
/// id written, and the retry writes its event again.
#[test]
fn the_default_idempotency_window_holds_the_last_10000_ids() {
    let (_d, store) = open(Options::default().with_durability(Durability::Buffered));
    let retried = event("T", 0);
    let first = store.append("S-1", ExpectedVersion::Any, [retried.clone()]).unwrap();
    // No longer its stream's last event.
    store.append("S-1", ExpectedVersion::Any, [event("T", 1)]).unwrap();
    // 9,998 more ids elsewhere: the retried one is the oldest of 10,000.
    for chunk in 0..10 {
        let n = if chunk < 9 { 1_000 } else { 998 };
        let events: Vec<EventData> = (0..n).map(|i| event("T", i)).collect();
        store
            .append(&format!("O-{chunk}"), ExpectedVersion::Any, events)
            .unwrap();
    }
    assert_eq!(store.last_position(), 10_000);
    let again = store.append("S-1", ExpectedVersion::Any, [retried.clone()]).unwrap();
    assert_eq!(again, first, "a retry within the window");
    assert_eq!(store.last_position(), 10_000);
    store.append("O-x", ExpectedVersion::Any, [event("T", 2)]).unwrap();
    let beyond = store.append("S-1", ExpectedVersion::Any, [retried]).unwrap();
    assert_eq!(
        beyond.first_position, 10_002,
        "a retry beyond the window is written again"
    );
}

// ------------------------------------------------ builders and options

/// The accessors of `EventData` return what its builder was given ("The
/// event id", "The data bytes", ...; schema version "1 unless set").
#[test]
fn event_data_accessors_return_what_was_set() {
    let id = annal::Uuid::from_u128(0x1234);
    let e = EventData::new("Kind", &b"data"[..])
        .with_metadata(&b"meta"[..])
        .with_schema_version(7)
        .with_id(id);
    assert_eq!(
        (e.id(), e.event_type(), e.data(), e.metadata(), e.schema_version()),
        (id, "Kind", &b"data"[..], &b"meta"[..], 7)
    );
    let plain = EventData::new("Kind", &b"data"[..]);
    assert_eq!((plain.metadata(), plain.schema_version()), (&b""[..], 1));
}

/// The accessors of `Options` return what its builder was given.
#[test]
fn option_accessors_return_what_was_set() {
    let o = Options::default()
        .with_durability(Durability::Periodic(Duration::from_millis(5)))
        .with_segment_size_bytes(1 << 20)
        .with_read_only(true);
    assert_eq!(o.durability(), Durability::Periodic(Duration::from_millis(5)));
    assert_eq!(o.segment_size_bytes(), 1 << 20);
    assert!(o.read_only());
    assert_eq!(
        Options::default().with_durability(Durability::Buffered).durability(),
        Durability::Buffered
    );
}

/// A segment size outside "between 4 KiB and 1 TiB"
/// (`with_segment_size_bytes`) is refused at open with `InvalidInput`, by a
/// read-only open too, which makes no segment: the same options open the
/// same way whatever the mode.
#[test]
fn a_read_only_open_refuses_options_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store.append("S-1", ExpectedVersion::Any, [event("T", 0)]).unwrap();
    store.close().unwrap();
    for size in [limits::SEGMENT_BYTES_MIN - 1, limits::SEGMENT_BYTES_MAX + 1] {
        let options = Options::default().with_read_only(true).with_segment_size_bytes(size);
        let r = Store::open(dir.path(), options).map(|_| ());
        assert!(is_invalid(&r), "segment size {size}: {r:?}");
    }
    let read_only = Options::default().with_read_only(true);
    assert_eq!(Store::open(dir.path(), read_only).unwrap().last_position(), 1);
}

/// "periodic sync interval must not be zero": any other is accepted, the
/// shortest too.
#[test]
fn a_periodic_interval_of_one_nanosecond_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().with_durability(Durability::Periodic(Duration::from_nanos(1)));
    let store = Store::open(dir.path(), options).unwrap();
    store.append("S-1", ExpectedVersion::Any, [event("T", 0)]).unwrap();
    store.close().unwrap();
}

// ---------------------------------------------------------------- stats

/// `Stats::disk_bytes` is "Bytes of all segment files"; the next segment
/// made ahead of need is reported in `spare_segment_bytes` and "Not
/// counted in `disk_bytes`".
#[test]
fn the_segment_made_ahead_is_not_counted_in_disk_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let size = 64 * 1024;
    let options = Options::default()
        .with_segment_size_bytes(size)
        .with_durability(Durability::Buffered);
    let store = Store::open(&dir, options).unwrap();
    // Past half of the first segment: the next one is made ahead.
    for i in 0..40 {
        store
            .append("S-1", ExpectedVersion::Any, [EventData::new("T", vec![i as u8; 1024])])
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.stats().spare_segment_bytes == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = store.stats();
    assert_eq!(s.spare_segment_bytes, size, "no segment was made ahead");
    let segment_files: u64 = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!((s.segments, s.disk_bytes), (1, segment_files));
}
