//! Tests written by a tool-driven mutation review of the stream index
//! (`cargo mutants` over `src/index/mod.rs`, `stream.rs`, `locations.rs`
//! and part of `file.rs`): each one kills a mutant that the rest of the
//! suite let through, and asserts the promise that the mutant breaks, not
//! how the code keeps it: the memory figure `Store::stats` reports
//! (`index_memory_bytes`) is the heap the index holds, as a counting
//! allocator measures it, plus the index file's tables read in place; the
//! tables grow by the fractions the index's documentation gives; the
//! index's equality, which the index file's round-trip tests lean on,
//! tells indexes apart; `verify` compares every stream of the index file
//! with the log; a header claiming more streams than events is refused
//! before the streams are decoded.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use annal::index::{Index, Location, LocationTable, StreamEntry, file};
use annal::tools::{IndexStatus, verify};
use annal::{ExpectedVersion, Options, Store};

/// Counts the bytes each thread holds: what it allocated, less what it
/// freed (the index measured here is built, measured and dropped on one
/// thread, so other tests running meanwhile do not disturb the count).
struct CountingAlloc;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn add_held(bytes: isize) {
    // `try_with`: no count while the thread's locals are torn down.
    let _ = HELD.try_with(|h| h.set(h.get() + bytes));
}

// SAFETY: every call is passed on to `System` unchanged; the counting
// touches only a thread-local `Cell` with a constant initialiser (no
// allocation, no destructor).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add_held(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add_held(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add_held(-(layout.size() as isize));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add_held(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Bytes this thread holds now.
fn held() -> isize {
    HELD.with(Cell::get)
}

/// A location as the store makes them: 64 bytes apart, in segments of
/// 100,000 events.
fn at(position: u64) -> Location {
    Location {
        segment: 1 + position / 100_000,
        offset: 64 * (position % 100_000 + 1),
    }
}

/// Pushes the next event of `stream` onto `index`.
fn push(index: &mut Index, stream: &str) {
    let version = index.stream_version(stream) + 1;
    let position = index.last_position() + 1;
    index.push(stream, version, position, at(position)).expect("push");
}

/// `category-i`, padded with zeros to `len` bytes: names of a multiple of
/// 8 bytes, whose allocation (with the 16-byte counts before them) has no
/// alignment padding the figure does not count.
fn name(category: &str, i: usize, len: usize) -> String {
    let width = len - category.len() - 1;
    format!("{category}-{i:0width$}")
}

/// An index shaped like a store's: `short` streams of one to three events
/// (held inline), `long` streams of `long_events` events each (in
/// vectors), spread over a few categories with names of several lengths.
fn build(short: usize, long: usize, long_events: usize) -> Index {
    let mut index = Index::default();
    for i in 0..short {
        let (category, len) = [("Order", 16), ("Cart", 24), ("UserAccountSettings", 40)][i % 3];
        let name = name(category, i, len);
        for _ in 0..=(i % 3) {
            push(&mut index, &name);
        }
    }
    for k in 0..long_events {
        for i in 0..long {
            push(&mut index, &name("Ledger", i, 16));
        }
        if k % 7 == 0 {
            push(&mut index, &name("Order", 0, 16));
        }
    }
    index
}

/// Asserts that `reported` is within 0.2% (and 128 bytes) of `real`.
#[track_caller]
fn assert_close(reported: usize, real: isize, what: &str) {
    let real = real as f64;
    let reported = reported as f64;
    assert!(
        (reported - real).abs() <= real * 0.002 + 128.0,
        "{what}: reported {reported} bytes, the heap holds {real}"
    );
}

/// The index's memory figure (what `Store::stats` reports as
/// `index_memory_bytes`) is the heap the index holds, measured by the
/// allocator: tables, stream lists, positions, the hash table of stream
/// numbers and the categories, for short streams held inline and long ones
/// in vectors. (Mutants: `hash_table_bytes` returning 0 or 1, or its
/// bucket count or slot size mutated; `shared_memory_bytes` returning 0
/// or 1, or its sums and products mutated (all but a category slot's
/// `+ 1` turned into `* 1`, one byte a slot); the name and positions
/// terms of `streams_memory_bytes`; the 4-byte positions' `heap_bytes`;
/// `LocationTable::memory_bytes` returning 0 or 1 or mutated.)
#[test]
fn the_reported_index_memory_is_the_heap_the_index_holds() {
    for (short, long, long_events) in [(3000, 0, 0), (0, 30, 2000), (5000, 40, 500), (7, 1, 3)] {
        let before = held();
        let index = build(short, long, long_events);
        let real = held() - before;
        assert_close(index.memory_bytes(), real, &format!("{short} short, {long} long"));
        assert_eq!(index.mapped_bytes(), 0, "nothing is mapped in a built index");
        drop(index);
    }
}

/// The same for a stream whose positions are past 2^32 (8 bytes each).
/// (Mutants: the wide positions' `heap_bytes`, a multiplication by 8
/// turned into an addition or a division.)
#[test]
fn the_reported_memory_counts_positions_past_32_bits() {
    let before = held();
    let positions: Vec<u64> = (0..1000).map(|i| (1 << 33) + i).collect();
    let streams = vec![(Arc::from("Wide-00000000001"), StreamEntry::from_positions(positions))];
    let table = LocationTable::from_vec(vec![64; 3]);
    let index = Index::from_parts(table, streams, bytes::Bytes::new()).expect("from parts");
    assert_close(index.memory_bytes(), held() - before, "wide positions");
}

/// The same for an index of many categories, each of one stream: the
/// categories' table is counted (its slots as the table's capacity, an
/// eighth short of its buckets: within 6%).
/// (Mutants: the categories' slots multiplied by their size turned into
/// an addition or a division in `shared_memory_bytes`.)
#[test]
fn the_reported_memory_counts_the_table_of_categories() {
    let before = held();
    let mut index = Index::default();
    for i in 0..2000 {
        // An 8-byte category of a 16-byte stream name: no padding.
        push(&mut index, &format!("C{i:07}-0000001"));
    }
    let real = (held() - before) as f64;
    let reported = index.memory_bytes() as f64;
    assert!(
        (reported - real).abs() <= real * 0.06,
        "reported {reported} bytes, the heap holds {real}"
    );
}

/// The same for an index loaded from its file: the figure is the heap the
/// loaded index holds (stream list, hash table, categories, names,
/// positions appended since) plus the file's tables read in place, 16
/// bytes per event the file held. (Mutants: `Index::mapped_bytes`,
/// `LocationTable::mapped_bytes` and `StreamEntry::mapped_bytes` returning
/// 0 or 1 or mutated; the loaded positions' `heap_bytes`, `+` turned into
/// `*`.)
#[test]
fn the_reported_memory_of_a_loaded_index_is_its_heap_and_its_mapped_tables() {
    let built = build(2000, 20, 300);
    let events = built.last_position();
    let checkpoint = file::Checkpoint {
        store_id: annal::Uuid::from_u128(3),
        last_position: events,
        end_segment: 1,
        end_offset: 64,
        last_batch_crc: 1,
    };
    let bytes = bytes::Bytes::from(file::encode(&built, &checkpoint));
    drop(built);
    let before = held();
    let (mut index, _) = file::decode(&bytes).expect("decode");
    // Read in place where the file stays mapped (unix); copied elsewhere.
    let mapped = if cfg!(unix) {
        usize::try_from(16 * events).expect("fits")
    } else {
        0
    };
    assert_eq!(index.mapped_bytes(), mapped);
    assert_close(index.memory_bytes() - mapped, held() - before, "loaded");
    for _ in 0..50 {
        for i in 0..20 {
            push(&mut index, &name("Ledger", i, 16));
        }
        push(&mut index, &name("Fresh", 1, 24));
    }
    assert_eq!(index.mapped_bytes(), mapped, "appends are not mapped");
    assert_close(
        index.memory_bytes() - mapped,
        held() - before,
        "loaded, then appended to",
    );
}

/// The index's equality, which the round-trip tests of the index file
/// lean on (`assert_eq!(decoded, index)`), tells apart indexes that differ
/// in one location, in one stream's positions (same counts), in a
/// stream's name, or by one more event; and the location table's and a
/// stream's equality likewise.
/// `LocationTable::is_empty` and `Stream::is_empty` say so only of an
/// empty one. (Mutants: `PartialEq` of `Index`, `LocationTable` and
/// `Stream` returning `true`, `&&` turned into `||`; both `is_empty`
/// returning `true` or `false`, `==` turned into `!=`.)
#[test]
fn index_equality_tells_apart_indexes_that_differ_in_one_thing() {
    let mut a = Index::default();
    let mut b = Index::default();
    for index in [&mut a, &mut b] {
        push(index, "A-1");
        push(index, "B-1");
        push(index, "A-1");
    }
    assert_eq!(a, b);
    assert_eq!(a.locations(), b.locations());
    assert_eq!(a.stream("A-1"), b.stream("A-1"));

    // Same streams and positions, one location elsewhere.
    let mut moved = Index::default();
    moved.push("A-1", 1, 1, at(1)).expect("push");
    moved.push("B-1", 1, 2, at(2)).expect("push");
    moved.push("A-1", 2, 3, at(7)).expect("push");
    assert_ne!(a, moved);
    assert_ne!(a.locations(), moved.locations());

    // Same locations and counts, the positions held by other streams.
    let mut swapped = Index::default();
    for stream in ["A-1", "A-1", "B-1"] {
        push(&mut swapped, stream);
    }
    assert_ne!(a, swapped);
    assert_ne!(a.stream("A-1"), swapped.stream("A-1"));
    assert_eq!(a.stream("A-1").map(|s| s.len()), swapped.stream("A-1").map(|s| s.len()));

    // Same locations, another stream's name.
    let mut renamed = Index::default();
    for stream in ["A-1", "C-1", "A-1"] {
        push(&mut renamed, stream);
    }
    assert_ne!(a, renamed);

    // One more event.
    let mut longer = b.clone();
    push(&mut longer, "B-1");
    assert_ne!(a, longer);
    assert_ne!(a.locations(), longer.locations());
    assert_ne!(a.stream("B-1"), longer.stream("B-1"));
    assert!(!a.locations().is_empty());
    assert!(Index::default().locations().is_empty());
    assert!(a.stream("A-1").is_some_and(|s| !s.is_empty()));
    let empty = vec![(Arc::from("E-1"), StreamEntry::from_positions(Vec::new()))];
    let empty = Index::from_parts(LocationTable::default(), empty, bytes::Bytes::new()).expect("an empty stream");
    assert!(empty.stream("E-1").is_some_and(|s| s.is_empty()));
}

/// The tables grow by a fraction of their size rather than by doubling,
/// as documented: the location table's slack stays within an eighth of
/// its entries and a long stream's positions' within a half (at least 4
/// entries either way), after every append of a stream growing to 5,000
/// events. (Mutants: the growth of `LocationTable::push` and of
/// `push_grow`, a division by 8 or 2 turned into a multiplication.)
#[test]
fn the_tables_grow_by_a_fraction_of_their_size() {
    let mut index = Index::default();
    let name = "Big-0000000000001";
    for len in 1..=5000usize {
        push(&mut index, name);
        let locations = index.locations().memory_bytes();
        assert!(locations >= 8 * len, "{len}: {locations}");
        assert!(
            locations <= 8 * (len + (len / 8).max(4)),
            "{len} entries: {locations} bytes"
        );
        // The one stream's own bytes: its name (and the 16 bytes before
        // it) and its positions, 4 bytes each, none of them past 2^32.
        let (stream, _) = index.streams_memory_bytes(0..1);
        let positions = stream - name.len() - 16;
        if len > 5 {
            assert!(positions >= 4 * len, "{len}: {positions}");
            assert!(
                positions <= 4 * (len + (len / 2).max(4)),
                "{len} positions: {positions} bytes"
            );
        } else {
            assert_eq!(positions, 0, "up to five positions are held inline");
        }
    }
}

/// `verify` compares each of the index file's streams with the log: an
/// index file whose locations agree with the log but whose streams hold
/// each other's positions (what a writer bug could save, its checksums
/// correct) is reported damaged, naming the stream; the file as the store
/// saved it agrees. (Mutant: `Index::streams` yielding no stream, which
/// `verify` walks.)
#[test]
fn verify_reports_an_index_file_whose_streams_differ_from_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), Options::default()).expect("create");
    for stream in ["A-1", "B-1", "A-1"] {
        store
            .append(stream, ExpectedVersion::Any, [common::event("E", 1)])
            .expect("append");
    }
    store.close().expect("close");
    let agrees = verify(dir.path()).expect("verify");
    assert_eq!(agrees.index, IndexStatus::Agrees { covers: 3 });

    let path = dir.path().join(file::FILE_NAME);
    let saved = bytes::Bytes::from(std::fs::read(&path).expect("read the index file"));
    let (index, checkpoint) = file::decode(&saved).expect("the saved index file decodes");
    assert_eq!(
        index.stream("A-1").map(|s| s.iter().collect::<Vec<_>>()),
        Some(vec![1, 3])
    );
    // A-1 holds positions 1 and 2, B-1 position 3: every position once.
    let streams = vec![
        (Arc::from("A-1"), StreamEntry::from_positions(vec![1, 2])),
        (Arc::from("B-1"), StreamEntry::from_positions(vec![3])),
    ];
    let table = LocationTable::from_vec(index.locations().iter().collect());
    let forged = Index::from_parts(table, streams, bytes::Bytes::new()).expect("forged index");
    std::fs::write(&path, file::encode(&forged, &checkpoint)).expect("write the forged index file");
    let report = verify(dir.path()).expect("verify");
    match report.index {
        IndexStatus::Damaged(damage) => {
            assert_eq!(damage.file, path);
            assert!(damage.reason.contains("stream 'A-1' differs"), "{}", damage.reason);
        }
        other => panic!("a forged index file passed: {other:?}"),
    }
}

/// Offset of the stream count in the index file's header (docs/FORMAT.md).
const H_STREAM_COUNT: usize = 60;
/// Offset of the header's CRC, which covers the bytes before it.
const H_CRC: usize = 76;

/// `bytes` (an index file) with the header's stream count set to `count`
/// and the header's CRC made right again.
fn with_stream_count(bytes: &[u8], count: u32) -> bytes::Bytes {
    let mut b = bytes.to_vec();
    b[H_STREAM_COUNT..H_STREAM_COUNT + 4].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&b[..H_CRC]);
    b[H_CRC..H_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    bytes::Bytes::from(b)
}

/// A header claiming more streams than events (each stream holds one at
/// least) is refused as such before the streams are decoded, up to the
/// largest count a header holds; the count the file holds decodes. (The
/// check bounds the room reserved for the streams: 48 bytes each, 200 GB
/// for a count of 2^32 - 1.) (Mutants: `stream_count > last_position`
/// turned into `==`, and the `||` joining it to the limit on streams into
/// `&&`, in `file::decode_streams`.)
#[test]
fn an_index_file_claiming_more_streams_than_events_is_refused() {
    let mut index = Index::default();
    for stream in ["A-1", "B-1", "A-1", "C-1"] {
        push(&mut index, stream);
    }
    let checkpoint = file::Checkpoint {
        store_id: annal::Uuid::from_u128(3),
        last_position: 4,
        end_segment: 1,
        end_offset: 64,
        last_batch_crc: 1,
    };
    let good = file::encode(&index, &checkpoint);
    let (decoded, _) = file::decode(&with_stream_count(&good, 3)).expect("the file as written decodes");
    assert_eq!(decoded, index);
    for claimed in [5, 6, u32::MAX] {
        let refused = file::decode(&with_stream_count(&good, claimed)).map(|_| ());
        assert_eq!(
            refused,
            Err("stream count out of range".to_string()),
            "{claimed} streams"
        );
    }
}
