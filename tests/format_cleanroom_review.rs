//! Clean-room review of `docs/FORMAT.md`: an independent decoder, written
//! from the document alone (not from `src/log`, `src/index`, `src/snapshot`,
//! `src/checkpoint.rs`, `src/dir_lock.rs`), for every file of a store
//! directory: `LOCK`, segment files (header, batch frames, records, the bytes
//! after the last batch), `index`, `snapshots`, `checkpoints` and
//! `next-segment.tmp`. Every CRC is recomputed over exactly the bytes the
//! document names, every byte of every file is accounted for (a byte or a
//! file the document does not explain fails the test), and the decoded
//! values are compared field by field with what the public API reports.
//! Also covers the files `repair` and a torn-tail open put in `quarantine/`,
//! and the segment lengths the preallocation rules give. Where the document
//! left something to guess, a `FINDING:` comment says what (each one since
//! written into FORMAT.md).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use annal::{Durability, EventData, ExpectedVersion, Options, ReadAll, ReadStream, Store, StreamAppend, Uuid};

// ---------------------------------------------------------------------------
// Little-endian helpers and the CRC ("CRC-32, IEEE, as crc32fast computes").
// ---------------------------------------------------------------------------

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn uuid_at(b: &[u8], at: usize) -> Uuid {
    Uuid::from_bytes(b[at..at + 16].try_into().unwrap())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Segment files.
// ---------------------------------------------------------------------------

const SEG_HEADER: usize = 64;
const FRAME_HEADER: usize = 32;
const RECORD_HEADER: usize = 40;
const BATCH_MAGIC: u32 = 0x3154_4241; // "ABT1"

#[derive(Debug, Clone)]
struct SegHeader {
    store_id: Uuid,
    number: u64,
    first_position: u64,
    previous_end: u64,
    previous_crc: u32,
}

#[derive(Debug, Clone)]
struct Batch {
    offset: u64,
    len: u64,
    count: u32,
    crc: u32,
    first_position: u64,
}

#[derive(Debug, Clone)]
struct Record {
    segment: u64,
    /// Offset of the record in its segment file.
    offset: u64,
    position: u64,
    version: u32,
    id: Uuid,
    schema_version: u16,
    stream: String,
    event_type: String,
    metadata: Vec<u8>,
    data: Vec<u8>,
    timestamp: i64,
    raw: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    header: SegHeader,
    file_len: u64,
    batches: Vec<Batch>,
    /// Where the last batch ends (64 when the segment holds none).
    end: u64,
}

#[derive(Debug)]
struct Log {
    store_id: Uuid,
    segments: Vec<Segment>,
    records: Vec<Record>,
}

impl Log {
    fn last_position(&self) -> u64 {
        self.records.len() as u64
    }

    fn segment(&self, number: u64) -> &Segment {
        &self.segments[(number - 1) as usize]
    }
}

fn decode_segment_header(b: &[u8], name_number: u64) -> SegHeader {
    assert!(
        b.len() >= SEG_HEADER,
        "segment {name_number}: {} bytes, shorter than its header",
        b.len()
    );
    assert_eq!(&b[0..8], b"ANNALSEG", "segment {name_number}: magic");
    assert_eq!(u32_at(b, 8), 1, "segment {name_number}: format version");
    assert_eq!(u32_at(b, 12), 64, "segment {name_number}: header length");
    assert_eq!(
        u32_at(b, 60),
        crc(&[&b[0..60]]),
        "segment {name_number}: header CRC (bytes 0..60)"
    );
    let header = SegHeader {
        store_id: uuid_at(b, 16),
        number: u64_at(b, 32),
        first_position: u64_at(b, 40),
        previous_end: u64_at(b, 48),
        previous_crc: u32_at(b, 56),
    };
    assert_eq!(header.number, name_number, "segment number equals the file name's");
    header
}

/// Walks one segment from offset 64. `next_position` is the next global
/// position; `versions` the last version of each stream so far.
fn decode_segment(
    b: &[u8],
    name_number: u64,
    next_position: &mut u64,
    versions: &mut HashMap<String, u32>,
    records: &mut Vec<Record>,
) -> Segment {
    let header = decode_segment_header(b, name_number);
    let mut batches = Vec::new();
    let mut at = SEG_HEADER;
    loop {
        let left = b.len() - at;
        if left < 4 {
            assert!(
                all_zero(&b[at..]),
                "segment {name_number}: fewer than 4 non-zero bytes at {at}"
            );
            break;
        }
        if u32_at(b, at) == 0 {
            // The end of the log: "followed by zeros up to the end of the file".
            if let Some(nz) = b[at..].iter().position(|&x| x != 0) {
                let o = at + nz;
                panic!(
                    "segment {name_number}: non-zero byte after the end of the log at {o}: {}",
                    hex(&b[o..(o + 16).min(b.len())])
                );
            }
            break;
        }
        assert_eq!(u32_at(b, at), BATCH_MAGIC, "segment {name_number}: batch magic at {at}");
        let frame_len = u32_at(b, at + 4) as usize;
        let count = u32_at(b, at + 8);
        let batch_crc = u32_at(b, at + 12);
        let first_position = u64_at(b, at + 16);
        let timestamp = i64_at(b, at + 24);
        assert!(
            frame_len >= FRAME_HEADER && frame_len as u64 <= 32 * MIB,
            "frame length {frame_len}"
        );
        assert!(
            at + frame_len <= b.len(),
            "segment {name_number}: frame at {at} runs past the file"
        );
        assert!((1..=65_536).contains(&count), "record count {count}");
        assert_eq!(
            first_position, *next_position,
            "segment {name_number}: batch at {at}: first position"
        );
        let frame = &b[at..at + frame_len];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&frame[0..12]);
        hasher.update(&frame[16..32]);
        let mut r = FRAME_HEADER;
        for i in 0..count {
            assert!(r + RECORD_HEADER <= frame_len, "record {i} header past the frame");
            let rec_len = u32_at(frame, r) as usize;
            assert!(
                rec_len >= RECORD_HEADER && r + rec_len <= frame_len,
                "record length {rec_len}"
            );
            let rec = &frame[r..r + rec_len];
            assert_eq!(
                u32_at(rec, 4),
                crc(&[&rec[0..4], &rec[8..]]),
                "record CRC (0..4, 8..len)"
            );
            hasher.update(&rec[4..8]);
            assert_eq!(u32_at(rec, 8) as usize, r, "batch back-offset");
            let version = u32_at(rec, 12);
            assert!(version >= 1, "stream version 0");
            let id = uuid_at(rec, 16);
            let schema_version = u16_at(rec, 32);
            let name_len = rec[34] as usize;
            let type_len = rec[35] as usize;
            let meta_len = u32_at(rec, 36) as usize;
            assert!(name_len >= 1 && type_len >= 1, "name lengths non-zero");
            assert!(
                RECORD_HEADER + name_len + type_len + meta_len <= rec_len,
                "lengths exceed the record"
            );
            let mut f = RECORD_HEADER;
            let stream = std::str::from_utf8(&rec[f..f + name_len])
                .expect("stream name UTF-8")
                .to_string();
            f += name_len;
            let event_type = std::str::from_utf8(&rec[f..f + type_len])
                .expect("event type UTF-8")
                .to_string();
            f += type_len;
            let metadata = rec[f..f + meta_len].to_vec();
            f += meta_len;
            let data = rec[f..].to_vec();
            let prev = versions.get(&stream).copied().unwrap_or(0);
            assert_eq!(version, prev + 1, "stream {stream}: version follows the previous one");
            versions.insert(stream.clone(), version);
            records.push(Record {
                segment: name_number,
                offset: (at + r) as u64,
                position: first_position + u64::from(i),
                version,
                id,
                schema_version,
                stream,
                event_type,
                metadata,
                data,
                timestamp,
                raw: rec.to_vec(),
            });
            r += rec_len;
        }
        assert_eq!(
            r, frame_len,
            "frame length = 32 + sum of record lengths (no bytes unexplained)"
        );
        assert_eq!(hasher.finalize(), batch_crc, "batch CRC (0..12, 16..32, record CRCs)");
        batches.push(Batch {
            offset: at as u64,
            len: frame_len as u64,
            count,
            crc: batch_crc,
            first_position,
        });
        *next_position += u64::from(count);
        at += frame_len;
    }
    let end = batches.last().map_or(SEG_HEADER as u64, |x| x.offset + x.len);
    Segment {
        header,
        file_len: b.len() as u64,
        batches,
        end,
    }
}

/// Decodes every `N.seg` of `dir`, in order, and checks the chain between them.
fn decode_log(dir: &Path, segment_size: Option<u64>) -> Log {
    let mut numbers = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".seg") {
            assert_eq!(stem.len(), 20, "segment name {name}: 20 decimal digits");
            assert!(stem.bytes().all(|c| c.is_ascii_digit()), "segment name {name}");
            let n: u64 = stem.parse().unwrap();
            assert!(n >= 1);
            numbers.push(n);
        }
    }
    numbers.sort();
    assert!(!numbers.is_empty(), "no segment");
    for (i, n) in numbers.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "segments numbered from 1, consecutive");
    }
    let mut next = 1;
    let mut versions = HashMap::new();
    let mut records = Vec::new();
    let mut segments: Vec<Segment> = Vec::new();
    for n in numbers {
        let b = fs::read(dir.join(format!("{n:020}.seg"))).unwrap();
        let expected_first = next;
        let seg = decode_segment(&b, n, &mut next, &mut versions, &mut records);
        // "a segment whose first batch starts the segment must have a header
        // `first position` equal to the next global position"
        assert_eq!(
            seg.header.first_position, expected_first,
            "segment {n}: header first position"
        );
        if let Some(prev) = segments.last() {
            assert_eq!(
                seg.header.store_id, prev.header.store_id,
                "same store id in every segment"
            );
            // The previous segment is sealed: cut to the end of its last batch.
            assert_eq!(
                prev.file_len,
                prev.end,
                "sealed segment {} is cut to its last batch's end",
                n - 1
            );
            assert!(prev.end > 64, "annal never seals a segment without a batch");
            assert_eq!(seg.header.previous_end, prev.end, "segment {n}: previous end");
            assert_eq!(
                seg.header.previous_crc,
                prev.batches.last().unwrap().crc,
                "segment {n}: previous CRC"
            );
            if let (Some(size), Some(first)) = (segment_size, seg.batches.first()) {
                // "When the next batch does not fit within the configured
                // segment size, the segment is sealed".
                assert!(
                    prev.end + first.len > size,
                    "segment {} sealed while the next batch fit",
                    n - 1
                );
                assert!(
                    prev.end <= size,
                    "sealed segment {} larger than the segment size",
                    n - 1
                );
            }
        } else {
            assert_eq!(seg.header.previous_end, 0, "segment 1: previous end");
            assert_eq!(seg.header.previous_crc, 0, "segment 1: previous CRC");
        }
        segments.push(seg);
    }
    Log {
        store_id: segments[0].header.store_id,
        segments,
        records,
    }
}

// ---------------------------------------------------------------------------
// Index file.
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct IndexFile {
    store_id: Uuid,
    last_position: u64,
    end_segment: u64,
    end_offset: u64,
    last_batch_crc: u32,
    locations: Vec<(u64, u64)>,
    /// Streams in file order: name and positions.
    streams: Vec<(String, Vec<u64>)>,
}

fn decode_index(b: &[u8]) -> IndexFile {
    assert!(b.len() >= 84, "index file of {} bytes", b.len());
    assert_eq!(&b[0..8], b"ANNALIDX", "index magic");
    assert_eq!(u32_at(b, 8), 1, "index format version");
    assert_eq!(u32_at(b, 12), 0, "index flags: written as zero");
    assert_eq!(u32_at(b, 72), 0, "index reserved: written as zero");
    assert_eq!(u32_at(b, 76), crc(&[&b[0..76]]), "index header CRC (0..76)");
    let last_position = u64_at(b, 32);
    let stream_count = u32_at(b, 60) as usize;
    let body_len = u64_at(b, 64) as usize;
    assert_eq!(body_len, b.len() - 84, "body length = file length - 84");
    let body = &b[80..80 + body_len];
    assert_eq!(u32_at(b, 80 + body_len), crc(&[body]), "index body CRC");
    let mut at = 0;
    let mut locations = Vec::new();
    for _ in 0..last_position {
        let v = u64_at(body, at);
        locations.push((v >> 40, v & ((1 << 40) - 1)));
        at += 8;
    }
    let mut streams = Vec::new();
    for _ in 0..stream_count {
        let n = body[at] as usize;
        assert!(n >= 1, "empty stream name in the index");
        at += 1;
        let name = std::str::from_utf8(&body[at..at + n])
            .expect("index stream name UTF-8")
            .to_string();
        at += n;
        let count = u64_at(body, at);
        assert!(count >= 1, "stream entry with 0 events");
        at += 8;
        let mut positions = Vec::new();
        for _ in 0..count {
            positions.push(u64_at(body, at));
            at += 8;
        }
        streams.push((name, positions));
    }
    assert_eq!(at, body_len, "no bytes between the last stream entry and the body CRC");
    IndexFile {
        store_id: uuid_at(b, 16),
        last_position,
        end_segment: u64_at(b, 40),
        end_offset: u64_at(b, 48),
        last_batch_crc: u32_at(b, 56),
        locations,
        streams,
    }
}

/// Checks an index file against the decoded log: it must describe a prefix
/// of it exactly.
fn check_index(idx: &IndexFile, log: &Log) {
    assert_eq!(idx.store_id, log.store_id, "index store id");
    assert!(idx.last_position <= log.last_position(), "index ahead of the log");
    if idx.last_position == 0 {
        assert_eq!(
            (idx.end_segment, idx.end_offset, idx.last_batch_crc),
            (1, 64, 0),
            "empty index"
        );
        assert!(idx.streams.is_empty());
        return;
    }
    // The batch holding the last covered position.
    let last = &log.records[(idx.last_position - 1) as usize];
    let seg = log.segment(last.segment);
    let batch = seg
        .batches
        .iter()
        .find(|x| x.first_position <= last.position && last.position < x.first_position + u64::from(x.count))
        .unwrap();
    assert_eq!(
        batch.first_position + u64::from(batch.count) - 1,
        idx.last_position,
        "index ends with a batch"
    );
    assert_eq!(idx.end_segment, last.segment, "index end segment");
    assert_eq!(
        idx.end_offset,
        batch.offset + batch.len,
        "index end offset: just past the last covered batch"
    );
    assert_eq!(idx.last_batch_crc, batch.crc, "index last batch CRC");
    // FINDING: "byte offset of the record" is from the start of the segment
    // file (header included), which the text does not say.
    for (p, loc) in idx.locations.iter().enumerate() {
        let r = &log.records[p];
        assert_eq!(*loc, (r.segment, r.offset), "index location of position {}", p + 1);
    }
    let mut expected: Vec<(String, Vec<u64>)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for r in &log.records[..idx.last_position as usize] {
        let i = *at.entry(r.stream.clone()).or_insert_with(|| {
            expected.push((r.stream.clone(), Vec::new()));
            expected.len() - 1
        });
        expected[i].1.push(r.position);
    }
    // "Streams come in the order they were added to the index (any order
    // decodes)": compare as a set, then check the order is that of the
    // streams' first events for an index built in one session.
    let mut sorted_file = idx.streams.clone();
    sorted_file.sort();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort();
    assert_eq!(sorted_file, sorted_expected, "index stream entries");
}

// ---------------------------------------------------------------------------
// Snapshot file.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct SnapRecord {
    stream: String,
    version: u64,
    schema_version: u32,
    event_id: Uuid,
    data: Vec<u8>,
}

fn decode_snapshots(b: &[u8]) -> (Uuid, Vec<SnapRecord>) {
    assert!(b.len() >= 32, "snapshot file of {} bytes", b.len());
    assert_eq!(&b[0..8], b"ANNALSNP", "snapshot magic");
    assert_eq!(u32_at(b, 8), 2, "snapshot format version");
    assert_eq!(u32_at(b, 28), crc(&[&b[0..28]]), "snapshot header CRC (0..28)");
    let store_id = uuid_at(b, 12);
    let mut at = 32;
    let mut out = Vec::new();
    while at < b.len() {
        let r = &b[at..];
        assert!(r.len() >= 48, "snapshot record header cut at {at}");
        assert_eq!(&r[0..4], b"SNP2", "snapshot record magic at {at}");
        let len = u32_at(r, 8) as usize;
        assert!(len >= 48 && len <= r.len(), "snapshot record length {len} at {at}");
        assert_eq!(u32_at(r, 4), crc(&[&r[8..len]]), "snapshot record CRC (8..len) at {at}");
        let n = u16_at(r, 12) as usize;
        assert!((1..=255).contains(&n), "snapshot stream name length {n}");
        assert_eq!(u16_at(r, 14), 0, "snapshot reserved");
        let version = u64_at(r, 16);
        assert!(version >= 1);
        let schema_version = u32_at(r, 24);
        let m = u32_at(r, 28) as usize;
        assert!(m as u64 <= 64 * MIB);
        assert_eq!(len, 48 + n + m, "snapshot record length = 48 + n + m");
        out.push(SnapRecord {
            stream: std::str::from_utf8(&r[48..48 + n])
                .expect("snapshot name UTF-8")
                .to_string(),
            version,
            schema_version,
            event_id: uuid_at(r, 32),
            data: r[48 + n..len].to_vec(),
        });
        at += len;
    }
    (store_id, out)
}

// ---------------------------------------------------------------------------
// Checkpoint file.
// ---------------------------------------------------------------------------

fn decode_checkpoints(b: &[u8]) -> (Uuid, Vec<(String, u64)>) {
    assert!(b.len() >= 36, "checkpoints file of {} bytes", b.len());
    assert_eq!(&b[0..8], b"ANNALCKP", "checkpoints magic");
    assert_eq!(u32_at(b, 8), 1, "checkpoints format version");
    let end = b.len() - 4;
    assert_eq!(
        u32_at(b, end),
        crc(&[&b[..end]]),
        "checkpoints CRC of every byte before it"
    );
    let count = u32_at(b, 28);
    let mut at = 32;
    let mut out = Vec::new();
    for _ in 0..count {
        let n = u16_at(b, at) as usize;
        assert!((1..=1024).contains(&n), "checkpoint name length {n}");
        let name = std::str::from_utf8(&b[at + 2..at + 2 + n])
            .expect("checkpoint name UTF-8")
            .to_string();
        let position = u64_at(b, at + 2 + n);
        out.push((name, position));
        at += 2 + n + 8;
    }
    assert_eq!(at, end, "no bytes left over after the last checkpoint entry");
    let mut sorted = out.clone();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted.dedup_by(|a, b| a.0 == b.0);
    assert_eq!(sorted, out, "checkpoint entries sorted by name (bytes) and unique");
    (uuid_at(b, 12), out)
}

// ---------------------------------------------------------------------------
// LOCK file.
// ---------------------------------------------------------------------------

/// Returns the pid the file names, `None` for an empty file.
fn decode_lock(b: &[u8]) -> Option<u32> {
    if b.is_empty() {
        return None;
    }
    assert_eq!(b.len(), 40, "LOCK is 40 bytes: {:?}", String::from_utf8_lossy(b));
    assert_eq!(b[39], b'\n', "LOCK ends with a newline");
    let text = std::str::from_utf8(&b[..39]).expect("LOCK is ASCII");
    let rest = text.strip_prefix("annal store lock, pid ").expect("LOCK text");
    let digits = rest.trim_end_matches(' ');
    assert!(
        !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()),
        "LOCK pid {rest:?}"
    );
    Some(digits.parse().unwrap())
}

// ---------------------------------------------------------------------------
// The whole directory.
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Dir {
    log: Log,
    lock: Option<Option<u32>>,
    index: Option<IndexFile>,
    snapshots: Option<Vec<SnapRecord>>,
    checkpoints: Option<Vec<(String, u64)>>,
    spare_len: Option<u64>,
    quarantine: Vec<String>,
}

/// Decodes every file of a store directory; any file the document does not
/// name fails.
fn decode_dir(dir: &Path, segment_size: Option<u64>) -> Dir {
    let log = decode_log(dir, segment_size);
    let mut out = Dir {
        log,
        lock: None,
        index: None,
        snapshots: None,
        checkpoints: None,
        spare_len: None,
        quarantine: Vec::new(),
    };
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let b = || fs::read(e.path()).unwrap();
        match name.as_str() {
            n if n.ends_with(".seg") => {}
            "LOCK" => out.lock = Some(decode_lock(&b())),
            "index" => {
                let idx = decode_index(&b());
                check_index(&idx, &out.log);
                out.index = Some(idx);
            }
            "snapshots" => {
                let (id, recs) = decode_snapshots(&b());
                assert_eq!(id, out.log.store_id, "snapshot file store id");
                out.snapshots = Some(recs);
            }
            "checkpoints" => {
                let (id, entries) = decode_checkpoints(&b());
                assert_eq!(id, out.log.store_id, "checkpoints store id");
                out.checkpoints = Some(entries);
            }
            "next-segment.tmp" => {
                let bytes = b();
                assert!(all_zero(&bytes), "next-segment.tmp holds only zeros");
                if let Some(size) = segment_size {
                    assert!(
                        bytes.len() as u64 <= size,
                        "next-segment.tmp longer than the segment size"
                    );
                }
                out.spare_len = Some(bytes.len() as u64);
            }
            // Files being created or replaced, which a background save (of a
            // rebuilt index, say) may hold at any moment.
            "index.tmp" | "checkpoints.tmp" | "snapshots.tmp" => {}
            n if n.ends_with(".seg.tmp") => {}
            "quarantine" => {
                for q in fs::read_dir(e.path()).unwrap() {
                    out.quarantine.push(q.unwrap().file_name().into_string().unwrap());
                }
            }
            other => panic!("file {other:?} in the store directory is not described by FORMAT.md"),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Comparison with the public API.
// ---------------------------------------------------------------------------

/// Everything the public API says about the events, in position order.
fn api_events(store: &Store) -> Vec<annal::RecordedEvent> {
    store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
}

fn compare_events(log: &Log, store: &Store) {
    assert_eq!(log.store_id, store.store_id(), "store id");
    assert_eq!(log.last_position(), store.last_position(), "last position");
    let events = api_events(store);
    assert_eq!(events.len(), log.records.len());
    for (r, e) in log.records.iter().zip(&events) {
        let at = format!("position {}", r.position);
        assert_eq!(r.position, e.position(), "{at}");
        assert_eq!(u64::from(r.version), e.version(), "{at}: version");
        assert_eq!(r.id, e.id(), "{at}: event id");
        assert_eq!(r.stream, e.stream(), "{at}: stream");
        assert_eq!(r.event_type, e.event_type(), "{at}: type");
        assert_eq!(r.schema_version, e.schema_version(), "{at}: schema version");
        assert_eq!(r.metadata, e.metadata(), "{at}: metadata");
        assert_eq!(r.data, e.data(), "{at}: data");
        assert_eq!(r.timestamp, e.timestamp_micros(), "{at}: timestamp");
        assert_eq!(r.raw, e.raw_record(), "{at}: raw record");
        assert_eq!(
            store.read_position(r.position).unwrap().unwrap().id(),
            r.id,
            "{at}: read_position"
        );
    }
    let mut by_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in &log.records {
        by_stream.entry(&r.stream).or_default().push(r.position);
    }
    let mut names = store.stream_names();
    names.sort();
    assert_eq!(
        names,
        by_stream.keys().map(|s| s.to_string()).collect::<Vec<_>>(),
        "stream names"
    );
    for (stream, positions) in by_stream {
        assert_eq!(
            store.stream_version(stream),
            Some(positions.len() as u64),
            "{stream}: version"
        );
        let read: Vec<u64> = store
            .read_stream(stream, ReadStream::forward())
            .unwrap()
            .map(|e| e.unwrap().position())
            .collect();
        assert_eq!(read, positions, "{stream}: positions");
    }
}

/// The snapshot records as the API sees them: the newest record per
/// (stream, version) wins.
fn compare_snapshots(recs: &[SnapRecord], log: &Log, store: &Store, expected: &[SnapRecord]) {
    assert_eq!(recs, expected, "snapshot records, in save order");
    let mut newest: BTreeMap<&str, &SnapRecord> = BTreeMap::new();
    for r in recs {
        // The event id is the id of the stream's event at that version.
        let ev = log
            .records
            .iter()
            .find(|e| e.stream == r.stream && u64::from(e.version) == r.version)
            .unwrap();
        assert_eq!(r.event_id, ev.id, "snapshot of {} at {}: event id", r.stream, r.version);
        let slot = newest.entry(&r.stream).or_insert(r);
        if r.version >= slot.version {
            *slot = r;
        }
    }
    for (stream, r) in newest {
        let load = store.load_snapshot(stream);
        assert!(load.issues.is_empty(), "{stream}: {:?}", load.issues);
        let s = load.snapshot.unwrap();
        assert_eq!(
            (s.stream.as_str(), s.version, s.event_id, s.schema_version, &s.data[..]),
            (stream, r.version, r.event_id, r.schema_version, &r.data[..]),
            "{stream}: snapshot"
        );
    }
}

fn snap(stream: &str, version: u64, schema_version: u32, data: &[u8], log_ids: &Store) -> SnapRecord {
    let id = log_ids
        .read_stream(stream, ReadStream::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.version() == version)
        .unwrap()
        .id();
    SnapRecord {
        stream: stream.to_string(),
        version,
        schema_version,
        event_id: id,
        data: data.to_vec(),
    }
}

fn ev(kind: &str, data: &str) -> EventData {
    EventData::new(kind, data.as_bytes().to_vec())
}

/// A store of varied content across several small segments.
fn fill(store: &Store, segment_size: u64) -> (Vec<SnapRecord>, usize) {
    // Byte order of ids: "stored as their 16 bytes in RFC 4122 order, as printed".
    let fixed = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
    store
        .append(
            "Order-1",
            ExpectedVersion::NoStream,
            [ev("Placed", r#"{"sku":"A-1"}"#).with_id(fixed)],
        )
        .unwrap();
    store
        .append(
            "Order-1",
            ExpectedVersion::Exact(1),
            [
                ev("Paid", r#"{"amount":30}"#).with_metadata(br#"{"user":"ann"}"#.to_vec()),
                ev("Empty", ""),
                ev("Shipped", "{}")
                    .with_schema_version(7)
                    .with_metadata(b"\x00\x01\xff".to_vec()),
                ev("MetaOnly", "").with_metadata(b"m".to_vec()),
            ],
        )
        .unwrap();
    let unicode = "Ünïcødé-流-🦀";
    store
        .append(
            unicode,
            ExpectedVersion::NoStream,
            [ev("Créé✓", "données").with_schema_version(u16::MAX)],
        )
        .unwrap();
    let long_name = "s".repeat(255);
    let long_type = "t".repeat(255);
    store
        .append(&long_name, ExpectedVersion::Any, [ev(&long_type, "x")])
        .unwrap();
    store
        .append_multi(&[
            StreamAppend::new(
                "Order-1",
                ExpectedVersion::Exact(5),
                [ev("Amended", "1"), ev("Amended", "2")],
            ),
            StreamAppend::new("Order-2", ExpectedVersion::NoStream, [ev("Placed", "b")]),
            StreamAppend::new(
                unicode,
                ExpectedVersion::Exact(1),
                [ev("Zweite", "z").with_metadata(b"{}".to_vec())],
            ),
        ])
        .unwrap();
    // Enough appends, of 1 to 4 events, to roll over several segments.
    let mut written = 0u64;
    let mut i = 0u64;
    while written < 3 * segment_size + segment_size / 2 {
        let n = (i % 4 + 1) as usize;
        let stream = format!("Acct-{}", i % 7);
        let events: Vec<EventData> = (0..n)
            .map(|k| {
                let e = ev(
                    "Deposited",
                    &format!("{{\"i\":{i},\"k\":{k},\"pad\":\"{}\"}}", "p".repeat((i % 50) as usize)),
                );
                if k % 2 == 0 {
                    e.with_metadata(format!("m{i}").into_bytes())
                } else {
                    e
                }
            })
            .collect();
        store.append(&stream, ExpectedVersion::Any, events).unwrap();
        written += 32 + n as u64 * 140;
        i += 1;
        if i == 20 {
            store.save_index().unwrap();
        }
    }
    // A large event, close to what one segment allows.
    let big: Vec<u8> = (0..segment_size as usize - 64 - 32 - 40 - 200)
        .map(|k| (k * 7 % 251) as u8)
        .collect();
    store
        .append("Big", ExpectedVersion::NoStream, [EventData::new("Blob", big)])
        .unwrap();
    store
        .append("Order-2", ExpectedVersion::Exact(1), [ev("After", "a")])
        .unwrap();

    // Snapshots: several streams, a re-save of the same version, empty data.
    let mut snaps = Vec::new();
    let saves: [(&str, u64, u32, &[u8]); 6] = [
        ("Order-1", 2, 3, b"state@2"),
        (unicode, 1, 1, "état".as_bytes()),
        ("Order-1", 4, 3, b"state@4"),
        ("Order-1", 4, 4, b"state@4, again"),
        ("Order-2", 1, 9, b""),
        ("Acct-3", 5, 2, b"acct"),
    ];
    for (stream, version, schema, data) in saves {
        store.save_snapshot(stream, version, schema, data).unwrap();
        snaps.push(snap(stream, version, schema, data, store));
    }
    // Checkpoints: saves, updates and a removal.
    let cps = store.checkpoints();
    cps.save("proj-b", 10).unwrap();
    cps.save("proj-a", 5).unwrap();
    cps.save("ünï", 3).unwrap();
    cps.save("proj-a", 20).unwrap();
    cps.save("Z", 0).unwrap();
    cps.remove("proj-b").unwrap();
    // Appends: four single ones, one `append_multi`, the loop's, two more.
    (snaps, 5 + i as usize + 2)
}

fn compare_checkpoints(entries: &[(String, u64)], store: &Store) {
    let listed: Vec<(String, u64)> = store.checkpoints().list().unwrap().into_iter().collect();
    assert_eq!(entries, listed, "checkpoints");
}

fn compare_all(d: &Dir, store: &Store, snaps: &[SnapRecord]) {
    compare_events(&d.log, store);
    compare_snapshots(d.snapshots.as_ref().unwrap(), &d.log, store, snaps);
    compare_checkpoints(d.checkpoints.as_ref().unwrap(), store);
    let expected_cps = [("Z".to_string(), 0), ("proj-a".to_string(), 20), ("ünï".to_string(), 3)];
    assert_eq!(d.checkpoints.as_deref().unwrap(), &expected_cps[..]);
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

#[test]
fn varied_store_decodes_while_open_and_after_close() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let size = 16 * 1024;
    let options = Options::default()
        .with_segment_size_bytes(size)
        .with_durability(Durability::Buffered);
    let before = now_micros();
    let store = Store::open(&path, options.clone()).unwrap();
    let (snaps, appends) = fill(&store, size);
    let after = now_micros();

    // While open: LOCK names this process, the active segment ends in zeros,
    // the index file (saved mid-way) covers a prefix of the log.
    let d = decode_dir(&path, Some(size));
    assert_eq!(d.lock, Some(Some(std::process::id())), "LOCK names the writer's pid");
    assert!(d.log.segments.len() >= 4, "{} segments", d.log.segments.len());
    let idx = d.index.as_ref().expect("index saved by save_index");
    assert!(idx.last_position > 0 && idx.last_position < d.log.last_position());
    compare_all(&d, &store, &snaps);
    for r in &d.log.records {
        assert!(
            (before..=after).contains(&r.timestamp),
            "timestamp {} in [{before}, {after}]",
            r.timestamp
        );
    }
    // The id written with `with_id` is stored in printed order.
    let first = &d.log.segment(1);
    let rec1 = fs::read(path.join(format!("{:020}.seg", 1))).unwrap();
    let off = first.batches[0].offset as usize + 32;
    assert_eq!(
        hex(&rec1[off + 16..off + 32]),
        "00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff"
    );
    // The active segment, made on the spot or adopted from the spare: never
    // beyond the segment size (no batch here needs more).
    let active = d.log.segments.last().unwrap();
    assert!(active.file_len <= size, "active segment of {} bytes", active.file_len);
    store.close().unwrap();

    // After close: the index covers the whole log; no spare left.
    let d = decode_dir(&path, Some(size));
    assert_eq!(
        d.lock,
        Some(Some(std::process::id())),
        "LOCK still names the last writer"
    );
    assert!(d.spare_len.is_none(), "next-segment.tmp removed on close");
    let idx = d.index.as_ref().expect("index written by close");
    assert_eq!(idx.last_position, d.log.last_position());
    // "Batch frame (one per append)": `append_multi` across streams too.
    let batches: Vec<&Batch> = d.log.segments.iter().flat_map(|s| &s.batches).collect();
    assert_eq!(batches.len(), appends, "one batch per append");
    let multi = batches[4];
    assert_eq!((multi.first_position, multi.count), (8, 4), "the append_multi batch");
    let multi_streams: Vec<&str> = d.log.records[7..11].iter().map(|r| r.stream.as_str()).collect();
    assert_eq!(multi_streams, ["Order-1", "Order-1", "Order-2", "Ünïcødé-流-🦀"]);
    assert!(
        d.log.records[7..11]
            .iter()
            .all(|r| r.timestamp == d.log.records[7].timestamp)
    );
    let reader = Store::open(&path, options.clone().with_read_only(true)).unwrap();
    compare_all(&d, &reader, &snaps);
    // The index file's streams, in the order they were added (one session).
    let mut first_seen: Vec<&str> = Vec::new();
    for r in &d.log.records {
        if !first_seen.contains(&r.stream.as_str()) {
            first_seen.push(&r.stream);
        }
    }
    let file_order: Vec<&str> = idx.streams.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(file_order, first_seen, "index streams in the order they were added");
    drop(reader);

    // A backup decodes the same way, with an empty LOCK.
    let store = Store::open(&path, options.clone()).unwrap();
    let backup = tmp.path().join("backup");
    store.backup(&backup).unwrap();
    let b = decode_dir(&backup, Some(size));
    assert!(matches!(b.lock, None | Some(None)), "backup LOCK: {:?}", b.lock);
    assert_eq!(b.log.records.len(), d.log.records.len());
    for (x, y) in b.log.records.iter().zip(&d.log.records) {
        assert_eq!(x.raw, y.raw);
    }
    // Dropped without close: the same shape as a close.
    store
        .append("Order-2", ExpectedVersion::Exact(2), [ev("Late", "l")])
        .unwrap();
    drop(store);
    let d = decode_dir(&path, Some(size));
    assert!(d.spare_len.is_none());
    assert_eq!(d.index.as_ref().unwrap().last_position, d.log.last_position());
    let reader = Store::open(&path, options.with_read_only(true)).unwrap();
    compare_events(&d.log, &reader);
}

#[test]
fn empty_store_has_the_documented_empty_index() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let store = Store::open(&path, Options::default()).unwrap();
    let id = store.store_id();
    store.close().unwrap();
    let d = decode_dir(&path, None);
    assert_eq!(d.log.store_id, id);
    assert_eq!(d.log.segments.len(), 1);
    let seg = &d.log.segments[0];
    assert_eq!(seg.header.first_position, 1);
    assert_eq!((seg.header.previous_end, seg.header.previous_crc), (0, 0));
    assert!(seg.batches.is_empty());
    let idx = d.index.expect("index written by close");
    assert_eq!(
        (idx.last_position, idx.end_segment, idx.end_offset, idx.last_batch_crc),
        (0, 1, 64, 0)
    );
    assert!(d.snapshots.is_none() && d.checkpoints.is_none());
}

#[test]
fn default_segment_size_preallocation_and_a_large_event() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let options = Options::default().with_durability(Durability::Buffered);
    let store = Store::open(&path, options.clone()).unwrap();
    store.append("a", ExpectedVersion::Any, [ev("T", "small")]).unwrap();
    let d = decode_dir(&path, Some(64 * MIB));
    // (The first preallocation's exact length is checked in durable mode, in
    // `first_preallocation_of_a_new_segment`: here zeros may be written ahead.)
    assert!(d.log.segments[0].file_len >= 64 + MIB);
    // A batch larger than the current length: the file grows to hold it.
    let big: Vec<u8> = (0..3 * MIB as usize).map(|k| (k % 253) as u8).collect();
    store
        .append(
            "a",
            ExpectedVersion::Exact(1),
            [EventData::new("Big", big.clone()).with_metadata(b"meta".to_vec())],
        )
        .unwrap();
    let d = decode_dir(&path, Some(64 * MIB));
    let seg = &d.log.segments[0];
    assert!(seg.file_len <= 64 * MIB);
    assert_eq!(d.log.records[1].data, big);
    compare_events(&d.log, &store);
    // Checkpoints: a removal of a name never saved writes the file, count 0.
    store.checkpoints().remove("never").unwrap();
    let d = decode_dir(&path, Some(64 * MIB));
    assert_eq!(d.checkpoints.as_deref(), Some(&[][..]));
    assert_eq!(fs::read(path.join("checkpoints")).unwrap().len(), 36);
    // Snapshots: created with just the header on first use.
    store.snapshot_stats().unwrap();
    let d = decode_dir(&path, Some(64 * MIB));
    assert_eq!(d.snapshots.as_deref(), Some(&[][..]));
    store.close().unwrap();
    let d = decode_dir(&path, Some(64 * MIB));
    let idx = d.index.unwrap();
    assert_eq!(idx.last_position, 2);
    let reader = Store::open(&path, options.with_read_only(true)).unwrap();
    compare_events(&d.log, &reader);
}

#[test]
fn durable_store_with_spare_segments() {
    // Durability::Sync: spares written with zeros, adopted at roll-over.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let size = 8 * 1024;
    let options = Options::default().with_segment_size_bytes(size);
    let store = Store::open(&path, options.clone()).unwrap();
    for i in 0..60u64 {
        let data = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "q".repeat(400));
        store
            .append(&format!("S-{}", i % 3), ExpectedVersion::Any, [ev("E", &data)])
            .unwrap();
    }
    let d = decode_dir(&path, Some(size));
    assert!(d.log.segments.len() >= 3);
    for s in &d.log.segments[1..] {
        // Adopted (full size from the start) or made on the spot (header +
        // the first preallocation, the segment size when smaller than 1 MiB).
        if s.header.number == d.log.segments.len() as u64 {
            assert_eq!(s.file_len, size, "active segment {} length", s.header.number);
        }
    }
    compare_events(&d.log, &store);
    store.close().unwrap();
    let d = decode_dir(&path, Some(size));
    assert_eq!(d.index.unwrap().last_position, 60);
}

/// The names of the index file's streams, in file order.
fn index_stream_order(path: &Path) -> Vec<String> {
    let d = decode_dir(path, Some(16 * 1024));
    d.index.unwrap().streams.into_iter().map(|(s, _)| s).collect()
}

#[test]
fn index_stream_order_across_sessions_and_snapshot_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let options = Options::default()
        .with_segment_size_bytes(16 * 1024)
        .with_durability(Durability::Buffered);
    let store = Store::open(&path, options.clone()).unwrap();
    store.append("B", ExpectedVersion::Any, [ev("T", "1")]).unwrap();
    store
        .append("A", ExpectedVersion::Any, [ev("T", "2"), ev("T", "3")])
        .unwrap();
    store.close().unwrap();
    assert_eq!(index_stream_order(&path), ["B", "A"]);

    // Loaded from the index file, then new streams: "the order they were added".
    let store = Store::open(&path, options.clone()).unwrap();
    assert!(store.recovery_report().index_loaded);
    store.append("C", ExpectedVersion::Any, [ev("T", "4")]).unwrap();
    store.append("A", ExpectedVersion::Any, [ev("T", "5")]).unwrap();
    store.close().unwrap();
    assert_eq!(index_stream_order(&path), ["B", "A", "C"]);

    // Rebuilt from the log (no index file): the log's order.
    fs::remove_file(path.join("index")).unwrap();
    let store = Store::open(&path, options.clone()).unwrap();
    assert!(!store.recovery_report().index_loaded);
    store.append("D", ExpectedVersion::Any, [ev("T", "6")]).unwrap();

    // Snapshots, then a compaction keeping one per stream: the newest, and
    // of two records for one version the later one.
    let saves: [(&str, u64, u32, &[u8]); 5] = [
        ("A", 3, 1, b"a3"),
        ("A", 1, 1, b"a1"),
        ("B", 1, 2, b"b1"),
        ("A", 3, 1, b"a3-again"),
        ("C", 1, 1, b"c1"),
    ];
    let mut expected = Vec::new();
    for (stream, version, schema, data) in saves {
        store.save_snapshot(stream, version, schema, data).unwrap();
        expected.push(snap(stream, version, schema, data, &store));
    }
    let d = decode_dir(&path, Some(16 * 1024));
    compare_snapshots(d.snapshots.as_ref().unwrap(), &d.log, &store, &expected);
    store.set_snapshot_options(annal::SnapshotOptions::default().with_keep_per_stream(1));
    store.compact_snapshots().unwrap();
    let d = decode_dir(&path, Some(16 * 1024));
    let mut kept = d.snapshots.clone().unwrap();
    kept.sort_by(|a, b| (&a.stream, a.version).cmp(&(&b.stream, b.version)));
    let want: Vec<SnapRecord> = [3, 2, 4].iter().map(|&i| expected[i].clone()).collect();
    assert_eq!(kept, want, "compaction keeps the newest per stream");
    compare_snapshots(
        d.snapshots.as_ref().unwrap(),
        &d.log,
        &store,
        d.snapshots.as_ref().unwrap(),
    );
    store.close().unwrap();
    assert_eq!(index_stream_order(&path), ["B", "A", "C", "D"]);
}

#[test]
fn torn_tail_is_copied_to_quarantine_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let options = Options::default()
        .with_segment_size_bytes(16 * 1024)
        .with_durability(Durability::Buffered);
    let store = Store::open(&path, options.clone()).unwrap();
    store
        .append("A", ExpectedVersion::Any, [ev("T", "1"), ev("T", "2")])
        .unwrap();
    store.close().unwrap();
    let d = decode_dir(&path, Some(16 * 1024));
    let end = d.log.segments[0].end as usize;
    let seg_path = path.join(format!("{:020}.seg", 1));
    let mut b = fs::read(&seg_path).unwrap();
    // A torn write: non-zero bytes with no valid frame after them.
    let torn = [0xab, 0xcd, 0x00, 0x00, 0xef, 0x01];
    b[end..end + torn.len()].copy_from_slice(&torn);
    fs::write(&seg_path, &b).unwrap();
    let store = Store::open(&path, options).unwrap();
    let report = store.recovery_report().clone();
    assert_eq!(report.torn_tail_bytes, torn.len() as u64);
    let kept = report.torn_tail_kept.clone().expect("torn tail kept");
    let d = decode_dir(&path, Some(16 * 1024));
    // "`<N>.seg.torn-<offset>`: ... from `offset` (where the valid log of
    // segment N ends) to the last non-zero byte". FINDING: `<N>` is the
    // segment file's 20-digit stem, `<offset>` decimal: the text leaves both
    // to guess.
    let name = format!("{:020}.seg.torn-{end}", 1);
    assert_eq!(d.quarantine, std::slice::from_ref(&name), "quarantine file name");
    assert_eq!(kept, path.join("quarantine").join(&name));
    assert_eq!(fs::read(&kept).unwrap(), torn, "quarantined bytes");
    assert_eq!(d.log.records.len(), 2);
    compare_events(&d.log, &store);
    store.close().unwrap();
}

fn segment_len(path: &Path, n: u64) -> u64 {
    fs::metadata(path.join(format!("{n:020}.seg"))).unwrap().len()
}

#[test]
fn first_preallocation_of_a_new_segment() {
    // FINDING: "its header plus 1 MiB of zeros (or the segment size, when
    // smaller)" could mean 64 + min(1 MiB, size); it is min(64 + 1 MiB, size)
    // (a 1 MiB segment size gives a 1,048,576-byte file, not 1,048,640).
    // "A new segment starts with its header plus 1 MiB of zeros (or the
    // segment size, when smaller)", and "never passes the segment size".
    // Durable mode: no zeros are written ahead by a background thread.
    let tmp = tempfile::tempdir().unwrap();
    for size in [16 * 1024, MIB, MIB + 4096, 2 * MIB, 64 * MIB] {
        let path = tmp.path().join(format!("s{size}"));
        let store = Store::open(&path, Options::default().with_segment_size_bytes(size)).unwrap();
        let len = segment_len(&path, 1);
        assert_eq!(
            len,
            (64 + MIB).min(size),
            "segment size {size}: new segment of {len} bytes"
        );
        store.close().unwrap();
        decode_dir(&path, Some(size));
    }
}

#[test]
fn durable_growth_follows_the_documented_steps() {
    // FINDING: only durable mode follows these steps exactly. In the periodic
    // and buffered modes a background thread writes the next step's zeros
    // ahead, a piece at a time (docs/DESIGN.md, not FORMAT.md): the active
    // segment is seen at lengths such as 2,113,536 or 2,129,920 (varying run
    // to run), and after a 3 MiB batch ending at 3,145,951 it is 6,291,902
    // bytes long, not "up to the end of a batch that needs more".
    // "each later step adds the current length, kept between 1 MiB and
    // 4 MiB" (durable mode: the appender grows the file itself).
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let store = Store::open(&path, Options::default()).unwrap();
    let mut steps = vec![64 + MIB];
    while *steps.last().unwrap() < 16 * MIB {
        let l = *steps.last().unwrap();
        steps.push(l + l.clamp(MIB, 4 * MIB));
    }
    let data = vec![0x5a_u8; 300_000];
    for _ in 0..30 {
        store
            .append("grow", ExpectedVersion::Any, [EventData::new("T", data.clone())])
            .unwrap();
        let end = decode_log(&path, None).segments[0].end;
        let len = segment_len(&path, 1);
        let want = *steps.iter().find(|&&s| s >= end).unwrap();
        assert_eq!(len, want, "log end {end}: segment length");
    }
    // A batch that needs more than a step: "or up to the end of a batch that
    // needs more" (exactly there, in durable mode), then a step again.
    let big = vec![0xa5_u8; 10 * MIB as usize];
    store
        .append("grow", ExpectedVersion::Any, [EventData::new("T", big)])
        .unwrap();
    let d = decode_dir(&path, Some(64 * MIB));
    let seg = &d.log.segments[0];
    assert!(seg.end > *steps.last().unwrap());
    assert_eq!(
        seg.file_len, seg.end,
        "grown up to the end of the batch that needed more"
    );
    let end = seg.end;
    store.append("grow", ExpectedVersion::Any, [ev("T", "small")]).unwrap();
    assert_eq!(segment_len(&path, 1), end + 4 * MIB, "the next step");
    let d = decode_dir(&path, Some(64 * MIB));
    compare_events(&d.log, &store);
    store.close().unwrap();
}

#[test]
fn lock_file_content() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    Store::open(&path, Options::default()).unwrap().close().unwrap();
    // "a writable open truncates a `LOCK` of any other length first".
    fs::write(path.join("LOCK"), "x".repeat(100)).unwrap();
    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(
        decode_lock(&fs::read(path.join("LOCK")).unwrap()),
        Some(std::process::id())
    );
    store.close().unwrap();
    // "a read-only open never writes it".
    let mine = b"annal store lock, pid 1                \n";
    assert_eq!(mine.len(), 40);
    fs::write(path.join("LOCK"), mine).unwrap();
    let reader = Store::open(&path, Options::default().with_read_only(true)).unwrap();
    assert_eq!(fs::read(path.join("LOCK")).unwrap(), mine);
    assert_eq!(decode_lock(mine), Some(1));
    drop(reader);
    // The snapshot file is created, with just its header, by a load too.
    let store = Store::open(&path, Options::default()).unwrap();
    assert!(!path.join("snapshots").exists());
    assert!(store.load_snapshot("none").snapshot.is_none());
    let b = fs::read(path.join("snapshots")).unwrap();
    assert_eq!(b.len(), 32);
    assert_eq!(decode_snapshots(&b), (store.store_id(), Vec::new()));
    store.close().unwrap();
}

#[test]
fn edge_values_decode() {
    // Schema versions 0 (event and snapshot), a checkpoint name of 1,024
    // bytes, a 1-byte stream name and event type, metadata without data.
    // FINDING: the record table gives no range for the schema version (it
    // does for every other bounded field); 0 is accepted and stored as 00 00.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let store = Store::open(&path, Options::default().with_durability(Durability::Buffered)).unwrap();
    let id = Uuid::from_u128(0xffee_ddcc_bbaa_9988_7766_5544_3322_1100);
    store
        .append(
            "B",
            ExpectedVersion::NoStream,
            [EventData::new("T", Vec::new())
                .with_schema_version(0)
                .with_metadata(vec![0u8; 3])
                .with_id(id)],
        )
        .unwrap();
    store.save_snapshot("B", 1, 0, b"").unwrap();
    let long = "n".repeat(1024);
    store.checkpoints().save(&long, 1).unwrap();
    let d = decode_dir(&path, None);
    let r = &d.log.records[0];
    assert_eq!(
        (r.schema_version, r.id, &r.stream[..], &r.event_type[..]),
        (0, id, "B", "T")
    );
    assert_eq!(
        (&r.metadata[..], &r.data[..], r.raw.len()),
        (&[0u8; 3][..], &[][..], 40 + 1 + 1 + 3)
    );
    assert_eq!(hex(&r.raw[16..32]), "ff ee dd cc bb aa 99 88 77 66 55 44 33 22 11 00");
    compare_events(&d.log, &store);
    let snaps = d.snapshots.as_ref().unwrap();
    compare_snapshots(snaps, &d.log, &store, &[snap("B", 1, 0, b"", &store)]);
    assert_eq!(d.checkpoints.as_deref().unwrap(), &[(long, 1)][..]);
    compare_checkpoints(d.checkpoints.as_ref().unwrap(), &store);
    store.close().unwrap();
}

/// A store of 60 appends over several 16 KiB segments, closed.
fn small_segment_store(path: &Path) -> Options {
    let options = Options::default()
        .with_segment_size_bytes(16 * 1024)
        .with_durability(Durability::Buffered);
    let store = Store::open(path, options.clone()).unwrap();
    for i in 0..60u64 {
        let data = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "r".repeat(600));
        let events = (0..(i % 3 + 1)).map(|_| ev("E", &data));
        store
            .append(&format!("R-{}", i % 4), ExpectedVersion::Any, events)
            .unwrap();
    }
    store.close().unwrap();
    options
}

#[test]
fn repair_quarantine_files_are_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let options = small_segment_store(&path);
    let before = decode_dir(&path, Some(16 * 1024));
    assert!(before.log.segments.len() >= 4, "{} segments", before.log.segments.len());
    let seg = |n: u64| path.join(format!("{n:020}.seg"));
    let quarantine = path.join("quarantine");
    let originals: HashMap<u64, Vec<u8>> = (1..=before.log.segments.len() as u64)
        .map(|n| (n, fs::read(seg(n)).unwrap()))
        .collect();

    // A header damaged on its own (its CRC field): rebuilt, the old bytes in
    // `quarantine/<N>.seg.header`; no event lost.
    let original3 = originals[&3].clone();
    let mut damaged = original3.clone();
    damaged[60] ^= 0x01;
    fs::write(seg(3), &damaged).unwrap();
    let report = annal::tools::repair(&path).unwrap();
    assert_eq!(report.headers_rebuilt, [3]);
    let header_copy = format!("{:020}.seg.header", 3);
    assert_eq!(fs::read(quarantine.join(&header_copy)).unwrap(), &damaged[..64]);
    assert_eq!(
        fs::read(seg(3)).unwrap(),
        original3,
        "the header written anew is the original one"
    );
    let d = decode_dir(&path, Some(16 * 1024));
    assert_eq!(d.quarantine, std::slice::from_ref(&header_copy));
    assert_eq!(d.log.records.len(), before.log.records.len());

    // A damaged batch in sealed segment 2: the bytes from it on go to
    // `<N>.seg.from-<offset>` and are zeroed (the file keeps its length),
    // later segments and the index file move whole.
    let s2 = before.log.segment(2);
    let victim = &s2.batches[2];
    let original2 = originals[&2].clone();
    let mut damaged = original2.clone();
    damaged[(victim.offset + victim.len - 1) as usize] ^= 0x40;
    fs::write(seg(2), &damaged).unwrap();
    let report = annal::tools::repair(&path).unwrap();
    assert!(report.repaired);
    assert_eq!(report.kept_events, victim.first_position - 1);
    let mut names: Vec<String> = fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let from = format!("{:020}.seg.from-{}", 2, victim.offset);
    let mut want = vec![header_copy, from.clone(), "index".to_string()];
    for n in 3..=before.log.segments.len() as u64 {
        want.push(format!("{n:020}.seg"));
    }
    want.sort();
    assert_eq!(names, want, "quarantine files");
    // "from `offset` ... to the end of its last valid batch frame or its last
    // non-zero byte, whichever comes later": a sealed segment ends there.
    assert_eq!(
        fs::read(quarantine.join(&from)).unwrap(),
        &damaged[victim.offset as usize..]
    );
    for n in 3..=before.log.segments.len() as u64 {
        let moved = fs::read(quarantine.join(format!("{n:020}.seg"))).unwrap();
        assert_eq!(moved, originals[&n], "segment {n} moved whole");
    }
    let d = decode_dir(&path, Some(16 * 1024));
    assert_eq!(d.log.segments.len(), 2);
    let s2 = d.log.segment(2);
    assert_eq!(s2.file_len, original2.len() as u64, "the file keeps its length");
    assert_eq!(s2.end, victim.offset);
    assert_eq!(d.log.records.len() as u64, victim.first_position - 1);
    let store = Store::open(&path, options).unwrap();
    compare_events(&d.log, &store);
    store.close().unwrap();
}
