//! Side-by-side peer comparison: the same workloads, in one process, against
//! annal, SQLite and redb, with the machine's own fdatasync rate as the
//! reference. Prints one table of figures and ratios.
//!
//! ```sh
//! cargo bench --bench peers                          # full run, about 1-3 minutes
//! ANNAL_PEERS_SCALE=0.02 cargo bench --bench peers   # smoke run, seconds
//! ```
//!
//! `ANNAL_PEERS_SCALE` (default 1.0; 0.02 under `cargo bench -- --test`,
//! which runs every bench once to see that it works) multiplies every
//! operation count and sampling time. Each store lives in its own temporary directory, all
//! commits are durable, and every store writes the same events
//! (`benches/common/mod.rs`: 200 B of JSON data, 67 B of JSON metadata,
//! 10,000 streams, same event ids):
//!
//! - annal: `Options::default()` (durable: `fdatasync` before an append
//!   returns, concurrent appends share syncs).
//! - SQLite (rusqlite, bundled): WAL, `synchronous=FULL`, the classic events
//!   table with `UNIQUE(stream_id, version)`; an append is one `BEGIN
//!   IMMEDIATE` transaction that reads the stream's current version, checks
//!   the expected version and inserts. Each writer thread has its own
//!   connection (busy timeout set, and retried on `SQLITE_BUSY`).
//! - redb: a table position -> encoded event and a table (stream, version)
//!   -> position; one write transaction per append with
//!   `Durability::Immediate`, the expected version checked inside it. Writer
//!   threads share one `Database`.
//!
//! Workloads: the fdatasync baseline; durable appends with 1 writer (1 event
//! per append), 16 writers (1 event) and 1 writer (100 events to one
//! stream); reading one 1,000-event stream (interleaved with other
//! streams' events) forward, warm; reading all events in global order, warm;
//! and the disk bytes per event after writing events in batches of 1,000.
//! Write figures are the median of a few repetitions, read figures the
//! median of a few samples.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use annal::{EventData, ExpectedVersion, Options, ReadAll, ReadStream, Store, StreamAppend};
use common::{STREAMS, event, stream_name};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use rusqlite::{Connection, ErrorCode, TransactionBehavior};

/// Operation counts at scale 1.0.
const BASELINE_SYNCS: u64 = 2_000;
const ONE_WRITER_APPENDS: u64 = 3_000;
const WRITERS: u64 = 16;
const APPENDS_PER_WRITER: u64 = 200;
const BATCH: u64 = 100;
const BATCH_APPENDS: u64 = 500;
/// Events in the store that is read in global order and measured on disk.
const ALL_EVENTS: u64 = 200_000;
/// Events per append when building that store (1,000 streams, one each).
const BUILD_BATCH: u64 = 1_000;
/// The stream read by the read-stream workload (not scaled: it is the workload).
const LONG_STREAM: &str = "Long-1";
const LONG_STREAM_EVENTS: u64 = 1_000;
/// Repetitions of each write workload, samples of each read workload.
const WRITE_REPS: usize = 3;
const READ_SAMPLES: usize = 5;
/// Time per read sample at scale 1.0.
const READ_SAMPLE_TIME: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------
// The stores under test
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Annal,
    Sqlite,
    Redb,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Annal, Kind::Sqlite, Kind::Redb];

    fn name(self) -> &'static str {
        match self {
            Kind::Annal => "annal",
            Kind::Sqlite => "SQLite",
            Kind::Redb => "redb",
        }
    }

    /// Opens (creating if needed) this kind of store in `dir`.
    fn open(self, dir: &Path) -> Box<dyn Peer> {
        match self {
            Kind::Annal => Box::new(AnnalPeer(Arc::new(Store::open(dir, Options::default()).unwrap()))),
            Kind::Sqlite => Box::new(SqlitePeer::open(dir)),
            Kind::Redb => Box::new(RedbPeer::open(dir)),
        }
    }
}

/// One append to one stream; a `Vec<Write>` is one atomic transaction.
struct Write {
    stream: String,
    expected: ExpectedVersion,
    events: Vec<EventData>,
}

impl Write {
    fn new(stream: String, expected: ExpectedVersion, events: Vec<EventData>) -> Self {
        Write {
            stream,
            expected,
            events,
        }
    }
}

/// An opened store.
trait Peer: Send + Sync {
    /// A handle for one thread: annal and redb share the store, SQLite opens
    /// a connection of its own.
    fn handle(&self) -> Box<dyn Handle>;
    /// Flushes and closes the store (handles must be dropped first).
    fn close(self: Box<Self>);
}

/// What the workloads do with a store.
trait Handle: Send {
    /// Writes all `writes` in one durable transaction, checking each one's
    /// expected version first.
    fn append(&mut self, writes: Vec<Write>);
    /// Reads `stream` forward; returns the number of events read. Every
    /// field of every event is touched, as an application would.
    fn read_stream(&mut self, stream: &str) -> u64;
    /// Reads every event in global order; returns the number read.
    fn read_all(&mut self) -> u64;
}

/// The optimistic-concurrency check the peers make inside the transaction
/// (annal makes its own); `current` is the stream's last version, 0 when
/// it has no events. No workload conflicts, so a mismatch is a bench bug.
fn check_expected(stream: &str, expected: ExpectedVersion, current: u64) {
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current == 0,
        ExpectedVersion::StreamExists => current > 0,
        ExpectedVersion::Exact(v) => current == v,
    };
    assert!(ok, "{stream}: expected version {expected}, found {current}");
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

// --- annal -----------------------------------------------------------------

struct AnnalPeer(Arc<Store>);

impl Peer for AnnalPeer {
    fn handle(&self) -> Box<dyn Handle> {
        Box::new(AnnalPeer(self.0.clone()))
    }

    fn close(self: Box<Self>) {
        let store = Arc::try_unwrap(self.0).expect("handles still open");
        store.close().unwrap();
    }
}

impl Handle for AnnalPeer {
    fn append(&mut self, mut writes: Vec<Write>) {
        if writes.len() == 1 {
            let w = writes.pop().unwrap();
            self.0.append(&w.stream, w.expected, w.events).unwrap();
        } else {
            let appends: Vec<StreamAppend> = writes
                .into_iter()
                .map(|w| StreamAppend::new(w.stream, w.expected, w.events))
                .collect();
            self.0.append_multi(&appends).unwrap();
        }
    }

    fn read_stream(&mut self, stream: &str) -> u64 {
        touch_annal(self.0.read_stream(stream, ReadStream::forward()).unwrap())
    }

    fn read_all(&mut self) -> u64 {
        touch_annal(self.0.read_all(ReadAll::forward()).unwrap())
    }
}

fn touch_annal(events: impl Iterator<Item = annal::Result<annal::RecordedEvent>>) -> u64 {
    let (mut n, mut sum) = (0u64, 0u64);
    for e in events {
        let e = e.unwrap();
        sum = sum
            .wrapping_add(e.position() ^ e.version())
            .wrapping_add(e.id().as_bytes()[0] as u64)
            .wrapping_add(e.timestamp_micros() as u64)
            .wrapping_add((e.stream().len() + e.event_type().len() + e.data().len() + e.metadata().len()) as u64);
        n += 1;
    }
    black_box(sum);
    n
}

// --- SQLite ----------------------------------------------------------------

const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS events (
    global_position INTEGER PRIMARY KEY,
    stream_id TEXT,
    version INTEGER,
    event_id BLOB UNIQUE,
    event_type TEXT,
    data BLOB,
    metadata BLOB,
    created INTEGER,
    UNIQUE(stream_id, version)
)";

struct SqlitePeer {
    path: std::path::PathBuf,
}

impl SqlitePeer {
    fn open(dir: &Path) -> Self {
        let peer = SqlitePeer {
            path: dir.join("events.db"),
        };
        peer.connect().execute_batch(SQLITE_SCHEMA).unwrap();
        peer
    }

    /// A connection in WAL mode with full syncs (one per commit).
    fn connect(&self) -> Connection {
        let conn = Connection::open(&self.path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn
    }
}

impl Peer for SqlitePeer {
    fn handle(&self) -> Box<dyn Handle> {
        Box::new(SqliteHandle(self.connect()))
    }

    fn close(self: Box<Self>) {
        // Move everything from the WAL into the database file; closing the
        // last connection then removes the WAL and shared-memory files.
        let conn = self.connect();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        conn.close().unwrap();
    }
}

struct SqliteHandle(Connection);

impl SqliteHandle {
    fn try_append(&mut self, writes: &[Write]) -> rusqlite::Result<()> {
        // IMMEDIATE takes the write lock up front, so a reader never has to
        // upgrade (an upgrade can fail with SQLITE_BUSY without waiting).
        let tx = self.0.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut current = tx.prepare_cached("SELECT MAX(version) FROM events WHERE stream_id = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (stream_id, version, event_id, event_type, data, metadata, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let created = now_micros();
            for w in writes {
                let version: Option<i64> = current.query_row([&w.stream], |r| r.get(0))?;
                let version = version.unwrap_or(0);
                check_expected(&w.stream, w.expected, version as u64);
                for (k, e) in w.events.iter().enumerate() {
                    insert.execute(rusqlite::params![
                        w.stream,
                        version + 1 + k as i64,
                        &e.id().as_bytes()[..],
                        e.event_type(),
                        e.data(),
                        e.metadata(),
                        created,
                    ])?;
                }
            }
        }
        tx.commit()
    }

    fn read(&mut self, sql: &str, params: impl rusqlite::Params) -> u64 {
        let mut stmt = self.0.prepare_cached(sql).unwrap();
        let mut rows = stmt.query(params).unwrap();
        let (mut n, mut sum) = (0u64, 0u64);
        while let Some(row) = rows.next().unwrap() {
            let position = row.get_ref(0).unwrap().as_i64().unwrap() as u64;
            let version = row.get_ref(2).unwrap().as_i64().unwrap() as u64;
            let created = row.get_ref(7).unwrap().as_i64().unwrap() as u64;
            let len = row.get_ref(1).unwrap().as_str().unwrap().len()
                + row.get_ref(4).unwrap().as_str().unwrap().len()
                + row.get_ref(5).unwrap().as_blob().unwrap().len()
                + row.get_ref(6).unwrap().as_blob().unwrap().len();
            sum = sum
                .wrapping_add(position ^ version)
                .wrapping_add(row.get_ref(3).unwrap().as_blob().unwrap()[0] as u64)
                .wrapping_add(created)
                .wrapping_add(len as u64);
            n += 1;
        }
        black_box(sum);
        n
    }
}

impl Handle for SqliteHandle {
    fn append(&mut self, writes: Vec<Write>) {
        loop {
            match self.try_append(&writes) {
                Ok(()) => return,
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => continue,
                Err(e) => panic!("SQLite append: {e}"),
            }
        }
    }

    fn read_stream(&mut self, stream: &str) -> u64 {
        self.read(
            "SELECT global_position, stream_id, version, event_id, event_type, data, metadata, created
             FROM events WHERE stream_id = ?1 ORDER BY version",
            [stream],
        )
    }

    fn read_all(&mut self) -> u64 {
        self.read(
            "SELECT global_position, stream_id, version, event_id, event_type, data, metadata, created
             FROM events ORDER BY global_position",
            [],
        )
    }
}

/// SQLite with all threads sharing one connection behind a mutex: writers
/// queue inside the process instead of polling the file lock with the busy
/// handler's sleeps. Reported beside the table as context for the
/// 16-writer row; the ratios use one connection per thread.
#[derive(Clone)]
struct SqliteShared(Arc<Mutex<SqliteHandle>>);

impl SqliteShared {
    fn open(dir: &Path) -> Self {
        SqliteShared(Arc::new(Mutex::new(SqliteHandle(SqlitePeer::open(dir).connect()))))
    }
}

impl Peer for SqliteShared {
    fn handle(&self) -> Box<dyn Handle> {
        Box::new(self.clone())
    }

    fn close(self: Box<Self>) {}
}

impl Handle for SqliteShared {
    fn append(&mut self, writes: Vec<Write>) {
        self.0.lock().unwrap().append(writes)
    }

    fn read_stream(&mut self, stream: &str) -> u64 {
        self.0.lock().unwrap().read_stream(stream)
    }

    fn read_all(&mut self) -> u64 {
        self.0.lock().unwrap().read_all()
    }
}

// --- redb ------------------------------------------------------------------

/// Global position -> encoded event (see `encode`).
const REDB_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// (stream, version) -> global position.
const REDB_STREAMS: TableDefinition<(&str, u64), u64> = TableDefinition::new("streams");

#[derive(Clone)]
struct RedbPeer(Arc<redb::Database>);

impl RedbPeer {
    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("events.redb")).unwrap();
        // Create both tables so that readers can open them.
        let tx = db.begin_write().unwrap();
        tx.open_table(REDB_EVENTS).unwrap();
        tx.open_table(REDB_STREAMS).unwrap();
        tx.commit().unwrap();
        RedbPeer(Arc::new(db))
    }

    fn try_append(&self, writes: &[Write]) -> Result<(), redb::Error> {
        let mut tx = self.0.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        {
            let mut events = tx.open_table(REDB_EVENTS)?;
            let mut streams = tx.open_table(REDB_STREAMS)?;
            let mut position = events.last()?.map_or(0, |(k, _)| k.value());
            let created = now_micros();
            let mut buf = Vec::with_capacity(512);
            for w in writes {
                let version = match streams
                    .range((w.stream.as_str(), 0)..=(w.stream.as_str(), u64::MAX))?
                    .next_back()
                {
                    Some(entry) => entry?.0.value().1,
                    None => 0,
                };
                check_expected(&w.stream, w.expected, version);
                for (k, e) in w.events.iter().enumerate() {
                    let version = version + 1 + k as u64;
                    position += 1;
                    encode(&mut buf, &w.stream, version, created, e);
                    events.insert(position, buf.as_slice())?;
                    streams.insert((w.stream.as_str(), version), position)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn try_read_stream(&self, stream: &str) -> Result<u64, redb::Error> {
        let tx = self.0.begin_read()?;
        let events = tx.open_table(REDB_EVENTS)?;
        let streams = tx.open_table(REDB_STREAMS)?;
        let (mut n, mut sum) = (0u64, 0u64);
        for entry in streams.range((stream, 1)..=(stream, u64::MAX))? {
            let position = entry?.1.value();
            let value = events.get(position)?.expect("indexed event missing");
            sum = sum.wrapping_add(position).wrapping_add(touch_encoded(value.value()));
            n += 1;
        }
        black_box(sum);
        Ok(n)
    }

    fn try_read_all(&self) -> Result<u64, redb::Error> {
        let tx = self.0.begin_read()?;
        let events = tx.open_table(REDB_EVENTS)?;
        let (mut n, mut sum) = (0u64, 0u64);
        for entry in events.range(0..)? {
            let (position, value) = entry?;
            sum = sum
                .wrapping_add(position.value())
                .wrapping_add(touch_encoded(value.value()));
            n += 1;
        }
        black_box(sum);
        Ok(n)
    }
}

impl Peer for RedbPeer {
    fn handle(&self) -> Box<dyn Handle> {
        Box::new(self.clone())
    }

    fn close(self: Box<Self>) {
        let db = Arc::try_unwrap(self.0).expect("handles still open");
        drop(db);
    }
}

impl Handle for RedbPeer {
    fn append(&mut self, writes: Vec<Write>) {
        self.try_append(&writes).unwrap();
    }

    fn read_stream(&mut self, stream: &str) -> u64 {
        self.try_read_stream(stream).unwrap()
    }

    fn read_all(&mut self) -> u64 {
        self.try_read_all().unwrap()
    }
}

/// A redb event value: version u64, created i64, id [16], then type and
/// stream (u16 length + UTF-8 each), data (u32 length + bytes), and the
/// metadata as the rest; integers little-endian.
fn encode(buf: &mut Vec<u8>, stream: &str, version: u64, created: i64, e: &EventData) {
    buf.clear();
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(&created.to_le_bytes());
    buf.extend_from_slice(e.id().as_bytes());
    for s in [e.event_type(), stream] {
        buf.extend_from_slice(&(s.len() as u16).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    buf.extend_from_slice(&(e.data().len() as u32).to_le_bytes());
    buf.extend_from_slice(e.data());
    buf.extend_from_slice(e.metadata());
}

/// Decodes an `encode`d event and touches every field.
fn touch_encoded(b: &[u8]) -> u64 {
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (version, created, id) = (u64_at(0), u64_at(8), &b[16..32]);
    let mut at = 32;
    let mut text = || {
        let len = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
        let s = std::str::from_utf8(&b[at + 2..at + 2 + len]).unwrap();
        at += 2 + len;
        s
    };
    let (event_type, stream) = (text(), text());
    let data_len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let data = &b[at + 4..at + 4 + data_len];
    let metadata = &b[at + 4 + data_len..];
    version
        .wrapping_add(created)
        .wrapping_add(id[0] as u64)
        .wrapping_add((event_type.len() + stream.len() + data.len() + metadata.len()) as u64)
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

/// Multiplies operation counts and sampling times.
#[derive(Clone, Copy)]
struct Scale(f64);

impl Scale {
    fn from_env() -> Self {
        // `cargo bench -- --test` (every bench once, to see that it runs):
        // the smoke scale unless one is given.
        let testing = std::env::args().any(|a| a == "--test");
        let scale = match std::env::var("ANNAL_PEERS_SCALE") {
            Ok(s) => s.trim().parse().expect("ANNAL_PEERS_SCALE must be a number"),
            Err(_) if testing => 0.02,
            Err(_) => 1.0,
        };
        assert!(scale > 0.0, "ANNAL_PEERS_SCALE must be positive");
        Scale(scale)
    }

    fn count(self, n: u64) -> u64 {
        ((n as f64 * self.0).round() as u64).max(1)
    }

    fn time(self, t: Duration) -> Duration {
        t.mul_f64(self.0)
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median seconds per call of `f`: calibrated so that each of the samples
/// takes about `sample_time`.
fn seconds_per_call(sample_time: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while calls == 0 || start.elapsed() < sample_time / 4 {
        f();
        calls += 1;
    }
    let per_call = start.elapsed().as_secs_f64() / calls as f64;
    let iters = (sample_time.as_secs_f64() / per_call).ceil().max(1.0) as u64;
    let samples = (0..READ_SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_secs_f64() / iters as f64
        })
        .collect();
    median(samples)
}

/// 1. Overwrite 335 bytes (one event's record) inside a preallocated,
///    synced file, then fdatasync: the machine's one-sync-per-append
///    ceiling (as `fdatasync_baseline` in `benches/append.rs`). Syncs/s.
fn baseline(scale: Scale) -> f64 {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let size = 64u64 << 20;
    let file = common::preallocated_file(&dir.path().join("prealloc"), size);
    let record = [7u8; 335];
    let mut offset = 0u64;
    let syncs = scale.count(BASELINE_SYNCS);
    let mut sync_n = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            file.write_all_at(&record, offset).unwrap();
            file.sync_data().unwrap();
            offset = (offset + record.len() as u64) % (size - record.len() as u64);
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    sync_n(syncs / 10 + 1);
    median((0..WRITE_REPS).map(|_| sync_n(syncs)).collect())
}

/// 2 and 4. One writer, `batch` events per append to one stream, with the
/// stream's exact expected version. Events/s.
fn one_writer(kind: Kind, batch: u64, appends: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let peer = kind.open(dir.path());
    let mut h = peer.handle();
    let mut versions = vec![0u64; STREAMS as usize];
    let mut i = 0u64;
    let mut append_n = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            let s = (i % STREAMS) as usize;
            let events = (i * batch..(i + 1) * batch).map(event).collect();
            h.append(vec![Write::new(
                stream_name(i),
                ExpectedVersion::Exact(versions[s]),
                events,
            )]);
            versions[s] += batch;
            i += 1;
        }
        (n * batch) as f64 / start.elapsed().as_secs_f64()
    };
    append_n(appends / 10 + 1); // warm-up: files created, caches filled
    let rate = median((0..WRITE_REPS).map(|_| append_n(appends)).collect());
    drop(h);
    peer.close();
    rate
}

/// 3. `WRITERS` threads, each appending single events (expected version
///    `Any`: the threads share streams). Events/s over all threads.
fn many_writers(open: impl FnOnce(&Path) -> Box<dyn Peer>, per_writer: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let peer = open(dir.path());
    let mut round = 0u64;
    let mut run = |per_writer: u64| {
        let barrier = Arc::new(Barrier::new(WRITERS as usize + 1));
        let threads: Vec<_> = (0..WRITERS)
            .map(|t| {
                // Connections are opened before the clock starts.
                let mut h = peer.handle();
                let barrier = barrier.clone();
                let first = round * WRITERS * per_writer;
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..per_writer {
                        let n = first + i * WRITERS + t;
                        h.append(vec![Write::new(stream_name(n), ExpectedVersion::Any, vec![event(n)])]);
                    }
                })
            })
            .collect();
        round += 1;
        barrier.wait();
        let start = Instant::now();
        for t in threads {
            t.join().unwrap();
        }
        (WRITERS * per_writer) as f64 / start.elapsed().as_secs_f64()
    };
    run(per_writer / 10 + 1);
    let rate = median((0..WRITE_REPS).map(|_| run(per_writer)).collect());
    peer.close();
    rate
}

/// 5. Read one 1,000-event stream forward, warm. The stream is written 10
///    events at a time, each followed by 100 events of other streams, so it
///    is not contiguous on disk. Seconds per read.
fn read_stream(kind: Kind, scale: Scale) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let peer = kind.open(dir.path());
    let mut h = peer.handle();
    let (chunk, noise) = (10u64, 100u64);
    for k in 0..LONG_STREAM_EVENTS / chunk {
        let events = (k * chunk..(k + 1) * chunk).map(event).collect();
        h.append(vec![Write::new(
            LONG_STREAM.into(),
            ExpectedVersion::Exact(k * chunk),
            events,
        )]);
        let others = (k * noise..(k + 1) * noise)
            .map(|n| Write::new(stream_name(n), ExpectedVersion::Any, vec![event(n)]))
            .collect();
        h.append(others);
    }
    assert_eq!(h.read_stream(LONG_STREAM), LONG_STREAM_EVENTS); // warm
    let seconds = seconds_per_call(scale.time(READ_SAMPLE_TIME), || {
        black_box(h.read_stream(LONG_STREAM));
    });
    drop(h);
    peer.close();
    seconds
}

/// Disk use of a store, in bytes.
struct Disk {
    total: u64,
    /// annal only: bytes of segment files, of which preallocated zeros at
    /// the end of the last one, and the index file.
    annal: Option<(u64, u64, u64)>,
}

/// 6 and 7. Write `events` events in durable batches of 1,000 (1,000
/// streams, one event each, expected version `Any`), close, measure the
/// directory, reopen, then read everything in global order, warm. Returns
/// the disk use and events/s read.
fn bulk(kind: Kind, events: u64, scale: Scale) -> (Disk, f64) {
    let dir = tempfile::tempdir().unwrap();
    let peer = kind.open(dir.path());
    let mut h = peer.handle();
    let mut i = 0;
    while i < events {
        let n = BUILD_BATCH.min(events - i);
        let writes = (i..i + n)
            .map(|k| Write::new(stream_name(k), ExpectedVersion::Any, vec![event(k)]))
            .collect();
        h.append(writes);
        i += n;
    }
    drop(h);
    peer.close();
    let disk = disk_use(kind, dir.path());

    let peer = kind.open(dir.path());
    let mut h = peer.handle();
    assert_eq!(h.read_all(), events); // warm
    let seconds = seconds_per_call(scale.time(READ_SAMPLE_TIME), || {
        black_box(h.read_all());
    });
    drop(h);
    peer.close();
    (disk, events as f64 / seconds)
}

fn disk_use(kind: Kind, dir: &Path) -> Disk {
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let total = files.iter().map(|f| f.0).sum();
    let annal = (kind == Kind::Annal).then(|| {
        let segments: Vec<_> = files
            .iter()
            .filter(|f| f.1.extension().is_some_and(|e| e == "seg"))
            .collect();
        let segment_bytes = segments.iter().map(|f| f.0).sum();
        let last = std::fs::read(&segments.last().expect("no segment").1).unwrap();
        let prealloc = last.iter().rev().take_while(|&&b| b == 0).count() as u64;
        let index = files
            .iter()
            .filter(|f| f.1.file_name().is_some_and(|n| n == "index"))
            .map(|f| f.0)
            .sum();
        (segment_bytes, prealloc, index)
    });
    Disk { total, annal }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// Whether a bigger figure is better (throughput) or a smaller one (time,
/// bytes); orients the ratios so that > 1 always means annal is better.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

struct Row {
    workload: String,
    /// annal, SQLite, redb.
    figures: [f64; 3],
    better: Better,
    decimals: usize,
}

impl Row {
    fn ratio(&self, peer: usize) -> f64 {
        match self.better {
            Better::Higher => self.figures[0] / self.figures[peer],
            Better::Lower => self.figures[peer] / self.figures[0],
        }
    }
}

/// `1234567.8` -> `1,234,568` (with `decimals` digits after the point).
fn fmt_num(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (k, c) in int.chars().enumerate() {
        if k > 0 && (int.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    out
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or("?".into(), |s| s.trim().to_string());
    format!(
        "{cpus} CPUs ({model}), Linux {kernel}, temp dir {}",
        std::env::temp_dir().display()
    )
}

fn progress(what: &str) {
    eprintln!("peers: {what}");
}

fn main() {
    let scale = Scale::from_env();
    let started = Instant::now();
    let mut rows = Vec::new();

    progress("fdatasync baseline");
    let base = baseline(scale);

    let mut each = |workload: String, better: Better, decimals: usize, f: &mut dyn FnMut(Kind) -> f64| {
        let mut figures = [0.0; 3];
        for (k, kind) in Kind::ALL.into_iter().enumerate() {
            progress(&format!("{workload}: {}", kind.name()));
            figures[k] = f(kind);
        }
        rows.push(Row {
            workload,
            figures,
            better,
            decimals,
        });
    };

    let appends = scale.count(ONE_WRITER_APPENDS);
    each(
        "durable, 1 writer, 1 event/append (events/s)".into(),
        Better::Higher,
        0,
        &mut |kind| one_writer(kind, 1, appends),
    );
    let per_writer = scale.count(APPENDS_PER_WRITER);
    each(
        format!("durable, {WRITERS} writers, 1 event/append (events/s)"),
        Better::Higher,
        0,
        &mut |kind| many_writers(|dir| kind.open(dir), per_writer),
    );
    progress("16 writers: SQLite sharing one connection");
    let sqlite_shared = many_writers(|dir| Box::new(SqliteShared::open(dir)), per_writer);
    let batch_appends = scale.count(BATCH_APPENDS);
    each(
        format!("durable, 1 writer, {BATCH} events/append to one stream (events/s)"),
        Better::Higher,
        0,
        &mut |kind| one_writer(kind, BATCH, batch_appends),
    );
    each(
        format!(
            "read one {}-event stream forward, warm (µs/read)",
            fmt_num(LONG_STREAM_EVENTS as f64, 0)
        ),
        Better::Lower,
        1,
        &mut |kind| read_stream(kind, scale) * 1e6,
    );
    let all = scale.count(ALL_EVENTS);
    let mut disks = Vec::new();
    each(
        format!(
            "read all {} events in global order, warm (events/s)",
            fmt_num(all as f64, 0)
        ),
        Better::Higher,
        0,
        &mut |kind| {
            let (disk, rate) = bulk(kind, all, scale);
            disks.push(disk);
            rate
        },
    );
    let disk_row = Row {
        workload: format!(
            "disk per event after {} events in batches of {} (bytes)",
            fmt_num(all as f64, 0),
            fmt_num(BUILD_BATCH as f64, 0)
        ),
        figures: [0, 1, 2].map(|k| disks[k].total as f64 / all as f64),
        better: Better::Lower,
        decimals: 1,
    };
    rows.push(disk_row);

    // The table.
    println!();
    println!("## annal vs SQLite vs redb, same process, same events");
    println!();
    println!("machine: {}", machine());
    println!("scale: {} (ANNAL_PEERS_SCALE)", scale.0);
    println!();
    println!("Ratios: > 1 means annal is better (throughput: annal / peer; time and bytes: peer / annal).");
    println!();
    println!("| workload | annal | SQLite | redb | annal/SQLite | annal/redb |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| machine baseline: 335 B overwrite in a preallocated file + fdatasync (syncs/s) | {} | | | | |",
        fmt_num(base, 0)
    );
    for (k, row) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {:.2}x | {:.2}x |",
            row.workload,
            fmt_num(row.figures[0], row.decimals),
            fmt_num(row.figures[1], row.decimals),
            fmt_num(row.figures[2], row.decimals),
            row.ratio(1),
            row.ratio(2),
        );
        if k == 0 {
            println!(
                "| annal durable 1 writer as % of the baseline | {:.1} % | | | | |",
                100.0 * row.figures[0] / base
            );
        }
    }
    println!();
    println!(
        "SQLite with the {WRITERS} writer threads sharing one connection behind a mutex (no busy-handler sleeps): \
         {} events/s; annal/that: {:.2}x.",
        fmt_num(sqlite_shared, 0),
        rows[1].figures[0] / sqlite_shared,
    );
    if let Some((segments, prealloc, index)) = disks[0].annal {
        println!(
            "annal's directory: {} bytes of segments (of which ~{} preallocated zeros at the end of the active \
             segment), {} bytes of index file, {} bytes of other files; log without the preallocation: {:.1} bytes/event.",
            fmt_num(segments as f64, 0),
            fmt_num(prealloc as f64, 0),
            fmt_num(index as f64, 0),
            fmt_num((disks[0].total - segments - index) as f64, 0),
            (segments - prealloc) as f64 / all as f64,
        );
    }
    println!(
        "Counts: baseline {} syncs; 1 writer {} appends; {WRITERS} writers x {} appends; {} appends of {BATCH}; \
         write figures are the median of {WRITE_REPS} runs, read figures of {READ_SAMPLES} samples. Total {:.0} s.",
        fmt_num(scale.count(BASELINE_SYNCS) as f64, 0),
        fmt_num(appends as f64, 0),
        fmt_num(per_writer as f64, 0),
        fmt_num(batch_appends as f64, 0),
        started.elapsed().as_secs_f64(),
    );
}
