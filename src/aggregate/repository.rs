//! The repository: load an aggregate (snapshot + later events), run a
//! command, append under optimistic concurrency, snapshot by policy.

use std::marker::PhantomData;

use uuid::Uuid;

use super::{Aggregate, Codec, CodecError, DomainEvent, JsonCodec, UpcastError, Upcasters, stream_name};
use crate::event::{EventData, ExpectedVersion, RecordedEvent};
use crate::io::{FileSystem, StdFs};
use crate::read::ReadStream;
use crate::snapshot::SnapshotIssue;
use crate::store::Store;

/// Waits a random, growing while after a conflict, so that handlers racing
/// on one aggregate spread out instead of colliding again in lockstep.
fn backoff(attempt: u32) {
    let ceiling_micros = 100u64 << attempt.min(10);
    let jitter = Uuid::new_v4().as_u64_pair().0 % ceiling_micros;
    std::thread::sleep(std::time::Duration::from_micros(jitter));
}

/// The id of the `k`-th event (from 0) that the command `command_id`
/// appends through [`Repository::execute`]: a name-based UUID (version 5:
/// SHA-1 of `k` as 8 little-endian bytes, in the namespace of the command
/// id), the same in every run, process and version of this crate, so that
/// a repeated command is recognised by its events' ids.
pub fn command_event_id(command_id: Uuid, k: u64) -> Uuid {
    Uuid::new_v5(&command_id, &k.to_le_bytes())
}

/// Whether `name` can be a category of its own: not empty, no `-` (else
/// `{name}-{id}` would be in the category before its first `-`).
const fn is_category(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            return false;
        }
        i += 1;
    }
    !bytes.is_empty()
}

/// Where a command comes from: its id, and the correlation and causation
/// ids to write into the metadata of the events it causes.
///
/// Each event gets `$correlationId` = the correlation id (or, when none is
/// set, the command id) and `$causationId` = the causation id (or, when
/// none is set, the command id).
///
/// Not `Copy`: passing one value to two commands makes the second a repeat
/// of the first (on one aggregate) or a
/// [`RepositoryError::CommandIdReused`] (on another; see
/// [`Repository::execute`]), so a reuse has to be spelled out with
/// `clone()` (to retry the same command).
/// [`CommandMetadata::next_command`] gives the next command of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandMetadata {
    /// The command's id (random by default). The ids of the events the
    /// command appends derive from it ([`command_event_id`]), which makes
    /// [`Repository::execute`] idempotent: reuse it only to retry the same
    /// command.
    pub command_id: Uuid,
    /// The conversation the command belongs to.
    pub correlation_id: Option<Uuid>,
    /// What caused the command (a message or event id).
    pub causation_id: Option<Uuid>,
}

impl Default for CommandMetadata {
    fn default() -> Self {
        CommandMetadata::new()
    }
}

impl CommandMetadata {
    /// A command with a random id and no correlation or causation.
    pub fn new() -> Self {
        CommandMetadata {
            command_id: Uuid::new_v4(),
            correlation_id: None,
            causation_id: None,
        }
    }

    /// Sets the command id.
    pub fn with_command_id(mut self, id: Uuid) -> Self {
        self.command_id = id;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Another command of the same conversation (a request that runs
    /// several commands): a new command id, this one's correlation id (its
    /// command id when it has none) and causation id.
    pub fn next_command(&self) -> Self {
        CommandMetadata {
            command_id: Uuid::new_v4(),
            correlation_id: Some(self.correlation_id.unwrap_or(self.command_id)),
            causation_id: self.causation_id,
        }
    }

    /// A command caused by a stored event (a process manager reacting to
    /// it): causation = the event's id, correlation = the event's
    /// correlation id, or its id when it has none.
    pub fn caused_by(event: &RecordedEvent) -> Self {
        CommandMetadata::new()
            .with_correlation_id(event.correlation_id().unwrap_or(event.id()))
            .with_causation_id(event.id())
    }
}

/// What can go wrong in the repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError<E: std::error::Error + 'static> {
    /// The aggregate refused the command. Nothing was written.
    #[error("command refused: {0}")]
    Domain(#[source] E),
    /// The store failed (I/O, closed, invalid input...).
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// An event or state could not be encoded, a new event would not
    /// decode back (it is then not written: see docs/AGGREGATES.md), or a
    /// stored event could not be decoded (after upcasting) into the
    /// current event type.
    #[error("codec error in stream '{stream}' at version {version}: {source}")]
    Codec {
        /// The stream.
        stream: String,
        /// The event's version (0 when encoding a new event).
        version: u64,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// An upcaster failed on a stored event.
    #[error("stream '{stream}' at version {version}: {source}")]
    Upcast {
        /// The stream.
        stream: String,
        /// The event's version.
        version: u64,
        /// The upcaster's error.
        #[source]
        source: UpcastError,
    },
    /// The command's id was used before by another command, whose events
    /// are stored but not in this aggregate's stream: nothing was written.
    /// Give each command its own id; reuse one only to retry the same
    /// command (see [`CommandMetadata`]).
    #[error(
        "command id {command_id} was already used by another command, whose events are not in stream '{stream}': \
         give each command its own id, and reuse one only to retry the same command"
    )]
    CommandIdReused {
        /// The command id.
        command_id: Uuid,
        /// This command's stream.
        stream: String,
    },
    /// Other writers kept changing the stream: every attempt met a
    /// concurrency conflict. Nothing was written by this command.
    #[error("stream '{stream}' changed under {attempts} attempts of the command")]
    Conflict {
        /// The stream.
        stream: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// An aggregate as loaded.
#[derive(Clone, Debug)]
pub struct Loaded<A> {
    /// Its state.
    pub state: A,
    /// The stream version the state reflects (0: no events).
    pub version: u64,
    /// The version of the snapshot the load started from, if one was used.
    pub snapshot_version: Option<u64>,
    /// Events replayed on top of the snapshot (or from the start).
    pub replayed: u64,
    /// Snapshots passed over, and why (the load started from an older
    /// snapshot, or replayed from the start, instead).
    pub issues: Vec<SnapshotIssue>,
}

/// What a command did.
#[derive(Clone, Debug)]
pub struct Executed<A> {
    /// The aggregate's state after the command.
    pub state: A,
    /// Its stream version after the command.
    pub version: u64,
    /// Events the command appended (0 when it decided nothing changes).
    pub events: usize,
    /// Global position of the last event appended (0 when none).
    pub last_position: u64,
    /// Attempts it took (1 without conflicts).
    pub attempts: u32,
    /// The version snapshotted after the command, if the policy saved one.
    pub snapshot_saved: Option<u64>,
    /// Why saving the policy's snapshot failed, if it did (the command
    /// itself succeeded; the next load replays a little more).
    pub snapshot_error: Option<String>,
    /// The command (its command id) had already been executed on this
    /// aggregate: nothing was decided or appended again, `events` and
    /// `last_position` describe the earlier execution, `state` and
    /// `version` the aggregate now (see [`Repository::execute`]). A run
    /// that raced another run of the same command and decided the same
    /// events may return that execution with this flag unset (the store
    /// took its append for a retry).
    pub repeated: bool,
}

/// Loads aggregates of type `A` and runs their commands, on a store with
/// file system `F`, encoding with codec `C`. Cheap to clone (the store is
/// shared); usable from many threads at once.
pub struct Repository<A: Aggregate, F: FileSystem = StdFs, C: Codec = JsonCodec> {
    store: Store<F>,
    codec: C,
    upcasters: Upcasters,
    snapshot_every: Option<u64>,
    max_attempts: u32,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate, F: FileSystem, C: Codec + Clone> Clone for Repository<A, F, C> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            codec: self.codec.clone(),
            upcasters: self.upcasters.clone(),
            snapshot_every: self.snapshot_every,
            max_attempts: self.max_attempts,
            _aggregate: PhantomData,
        }
    }
}

type RepoResult<T, A> = Result<T, RepositoryError<<A as Aggregate>::Error>>;

impl<A: Aggregate, F: FileSystem, C: Codec> Repository<A, F, C> {
    /// A repository over `store`, without snapshots or upcasters, making up
    /// to 10 attempts per command.
    ///
    /// An aggregate whose [`Aggregate::CATEGORY`] is empty or holds a `-`
    /// is refused when this is built (its streams would fall into another
    /// category; `cargo check` does not evaluate the check):
    ///
    /// ```compile_fail
    /// use annal::aggregate::{Aggregate, DomainEvent, JsonCodec, Repository};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// enum Placed {
    ///     Placed,
    /// }
    /// impl DomainEvent for Placed {
    ///     fn event_type(&self) -> &'static str {
    ///         "Placed"
    ///     }
    /// }
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("never")]
    /// struct Never;
    ///
    /// #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// struct Order;
    /// impl Aggregate for Order {
    ///     const CATEGORY: &'static str = "Order-v2"; // "Order" compiles
    ///     type Event = Placed;
    ///     type Command = ();
    ///     type Error = Never;
    ///     fn apply(&mut self, _: &Placed) {}
    ///     fn handle(&self, _: ()) -> Result<Vec<Placed>, Never> {
    ///         Ok(vec![Placed::Placed])
    ///     }
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let dir = tempfile::tempdir()?;
    ///     let store = annal::Store::open(dir.path(), annal::Options::default())?;
    ///     let _orders = Repository::<Order>::new(store, JsonCodec);
    ///     Ok(())
    /// }
    /// ```
    pub fn new(store: Store<F>, codec: C) -> Self {
        const {
            assert!(
                is_category(A::CATEGORY),
                "Aggregate::CATEGORY must be a non-empty name without '-'"
            );
        }
        Repository {
            store,
            codec,
            upcasters: Upcasters::new(),
            snapshot_every: None,
            max_attempts: 10,
            _aggregate: PhantomData,
        }
    }

    /// Uses these upcasters on read.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Snapshot policy: after a command takes the stream past a multiple
    /// of `n` events, save a snapshot of the new state (0 turns it off).
    pub fn with_snapshot_every(mut self, n: u64) -> Self {
        self.snapshot_every = (n > 0).then_some(n);
        self
    }

    /// Retries on a concurrency conflict: at most `n` retries after the
    /// first attempt (default 9), each after a random pause that grows
    /// with the attempt (up to about 0.1 ms times 2^attempt, and never more
    /// than about 0.1 s).
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_attempts = n.saturating_add(1);
        self
    }

    /// The store.
    pub fn store(&self) -> &Store<F> {
        &self.store
    }

    /// The stream name of aggregate `id`: `{A::CATEGORY}-{id}`.
    pub fn stream_name(&self, id: &str) -> String {
        stream_name(A::CATEGORY, id)
    }

    /// The stream name of aggregate `id`, refused ([`crate::Error::InvalidInput`]
    /// in [`RepositoryError::Store`]) when no stream can have it (too
    /// long): a load then fails as `execute` would, rather than find a new,
    /// empty aggregate.
    fn valid_stream(&self, id: &str) -> RepoResult<String, A> {
        let stream = self.stream_name(id);
        crate::writer::validate_stream_name(&stream)?;
        Ok(stream)
    }

    /// Loads aggregate `id` as it is now, from the newest snapshot it can use
    /// (one of another schema version, or that does not decode, is passed
    /// over and reported in [`Loaded::issues`]). Fails with
    /// [`crate::Error::InvalidInput`] (in [`RepositoryError::Store`]) for an id
    /// that makes no valid stream name, as every load does.
    pub fn load(&self, id: &str) -> RepoResult<Loaded<A>, A> {
        self.load_stream(&self.valid_stream(id)?, u64::MAX, true)
    }

    /// Loads aggregate `id` without using any snapshot (a full replay).
    pub fn load_without_snapshot(&self, id: &str) -> RepoResult<Loaded<A>, A> {
        self.load_stream(&self.valid_stream(id)?, u64::MAX, false)
    }

    /// Loads aggregate `id` as it was at stream version `version` (or now,
    /// if the stream is shorter), from the newest snapshot at or before it.
    pub fn load_at_version(&self, id: &str, version: u64) -> RepoResult<Loaded<A>, A> {
        self.load_stream(&self.valid_stream(id)?, version, true)
    }

    /// Loads aggregate `id` as it was when the store's last global position
    /// was `position`: with exactly its events at positions up to it.
    pub fn load_at_position(&self, id: &str, position: u64) -> RepoResult<Loaded<A>, A> {
        let stream = self.valid_stream(id)?;
        let version = self.version_at_position(&stream, position)?;
        self.load_stream(&stream, version, true)
    }

    /// The number of the stream's events at positions up to `position`
    /// (binary search over versions; positions grow with versions).
    fn version_at_position(&self, stream: &str, position: u64) -> RepoResult<u64, A> {
        let (mut low, mut high) = (0u64, self.store.stream_version(stream).unwrap_or(0));
        // Invariant: event `low` (if any) is at or before `position`; event
        // `high + 1` (if any) is after it.
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            let event = self
                .store
                .read_stream(stream, ReadStream::forward().from_version(mid).limit(1))?
                .next()
                .transpose()?;
            match event {
                Some(e) if e.position() <= position => low = mid,
                _ => high = mid - 1,
            }
        }
        Ok(low)
    }

    fn load_stream(&self, stream: &str, max_version: u64, use_snapshot: bool) -> RepoResult<Loaded<A>, A> {
        self.load_stream_seeing(stream, max_version, use_snapshot, |_| {})
    }

    /// Loads `stream` whole (from a snapshot when `use_snapshot`), and the
    /// version of its event `id` if the load replayed it.
    fn load_finding(&self, stream: &str, use_snapshot: bool, id: Uuid) -> RepoResult<(Loaded<A>, Option<u64>), A> {
        let mut found = None;
        let loaded = self.load_stream_seeing(stream, u64::MAX, use_snapshot, |e| {
            if e.id() == id {
                found = Some(e.version());
            }
        })?;
        Ok((loaded, found))
    }

    /// [`Repository::load_stream`], showing `seen` every event replayed.
    fn load_stream_seeing(
        &self,
        stream: &str,
        max_version: u64,
        use_snapshot: bool,
        mut seen: impl FnMut(&RecordedEvent),
    ) -> RepoResult<Loaded<A>, A> {
        let have = self.store.stream_version(stream).unwrap_or(0);
        let target = max_version.min(have);
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
            snapshot_version: None,
            replayed: 0,
            issues: Vec::new(),
        };
        // The newest snapshot this aggregate can use: one of another schema
        // version (written by a newer or older build) or that does not
        // decode is reported and passed over for the one before it.
        let mut below = if use_snapshot { target } else { 0 };
        while below > 0 {
            let found = self.store.load_snapshot_at(stream, below);
            loaded.issues.extend(found.issues);
            let Some(s) = found.snapshot else {
                break;
            };
            let issue = if s.schema_version != A::SNAPSHOT_SCHEMA_VERSION {
                SnapshotIssue::SchemaMismatch {
                    stream: stream.to_string(),
                    version: s.version,
                    found: s.schema_version,
                    expected: A::SNAPSHOT_SCHEMA_VERSION,
                }
            } else {
                match self.codec.decode_state::<A>(&s.data) {
                    Ok(state) => {
                        loaded.state = state;
                        loaded.version = s.version;
                        loaded.snapshot_version = Some(s.version);
                        break;
                    }
                    Err(e) => SnapshotIssue::Undecodable {
                        stream: stream.to_string(),
                        version: s.version,
                        reason: e.0,
                    },
                }
            };
            self.store.report_snapshot_issue(issue.clone());
            loaded.issues.push(issue);
            below = s.version.saturating_sub(1);
        }
        if loaded.version < target {
            let count = usize::try_from(target - loaded.version).unwrap_or(usize::MAX);
            let events = self.store.read_stream(
                stream,
                ReadStream::forward().from_version(loaded.version + 1).limit(count),
            )?;
            for event in events {
                let event = event?;
                seen(&event);
                let decoded = self.decode(&event)?;
                loaded.state.apply(&decoded);
                loaded.version = event.version();
                loaded.replayed += 1;
            }
        }
        Ok(loaded)
    }

    /// Decodes a stored event into the current event type, upcasting it.
    ///
    /// The schema version the upcasters reach must be the decoded event's
    /// [`DomainEvent::schema_version`]: a payload left at an older version
    /// (a missing upcaster) or stored by a newer version of the program is
    /// never decoded into a shape it does not have. When its bytes decode
    /// all the same, that is an [`RepositoryError::Upcast`] error; when
    /// they do not (the usual case of a changed shape), a
    /// [`RepositoryError::Codec`] error whose message names the schema
    /// version the payload was left at (the current version is known only
    /// from a decoded event).
    pub fn decode(&self, event: &RecordedEvent) -> RepoResult<A::Event, A> {
        let upcast_error = |source: UpcastError| RepositoryError::Upcast {
            stream: event.stream().to_string(),
            version: event.version(),
            source,
        };
        let (reached, payload) = self
            .upcasters
            .upcast(event.event_type(), event.schema_version(), event.data())
            .map_err(upcast_error)?;
        let decoded: A::Event = self
            .codec
            .decode_event(event.event_type(), &payload)
            .map_err(|source| RepositoryError::Codec {
                stream: event.stream().to_string(),
                version: event.version(),
                // The current version is the decoded event's, unknown here:
                // say where the payload stands, for the missing upcaster.
                source: CodecError(format!(
                    "{} (event type '{}' at schema version {reached} after upcasting: if the type's shape \
                     changed since, register an upcaster from version {reached})",
                    source.0,
                    event.event_type()
                )),
            })?;
        let current = decoded.schema_version();
        if reached != current {
            let reason = if reached < current {
                format!(
                    "no upcaster to version {}, and the current version is {current}",
                    reached + 1
                )
            } else {
                format!("the current version is {current}: stored by a newer program")
            };
            return Err(upcast_error(UpcastError {
                event_type: event.event_type().to_string(),
                from_version: reached,
                reason,
            }));
        }
        Ok(decoded)
    }

    /// Runs `command` against aggregate `id`: load, decide, append under
    /// `Exact(version)`; on a concurrency conflict, load and decide again,
    /// up to the configured number of attempts.
    ///
    /// Idempotent by command id: the events a command appends get ids
    /// derived from its [`CommandMetadata::command_id`] (see
    /// [`command_event_id`]), and a command whose first event the
    /// aggregate already holds is not decided again: it returns that
    /// execution with [`Executed::repeated`] set. So a command retried
    /// with the same metadata after an error of unknown outcome (an I/O
    /// error, a crash, `Poisoned`) is applied once. It is found among the
    /// events a load replays (all of them without snapshots) and, when the
    /// load used a snapshot, among the store's recent event ids
    /// ([`Options::with_idempotency_window_events`](crate::Options::with_idempotency_window_events));
    /// older than both, it is decided again. A command id that another
    /// aggregate's command used (within that window) fails with
    /// [`RepositoryError::CommandIdReused`]. See docs/AGGREGATES.md.
    ///
    /// An id that makes no valid stream name fails with
    /// [`crate::Error::InvalidInput`] (in [`RepositoryError::Store`]) before
    /// the command is decided, as loads do.
    pub fn execute(&self, id: &str, command: A::Command, meta: CommandMetadata) -> RepoResult<Executed<A>, A> {
        let stream = self.valid_stream(id)?;
        let first_id = command_event_id(meta.command_id, 0);
        for attempt in 1..=self.max_attempts {
            let (mut loaded, mut earlier) = self.load_finding(&stream, true, first_id)?;
            if earlier.is_none() && loaded.snapshot_version.is_some() {
                earlier = self.recent_event_version(&stream, first_id)?;
                if earlier.is_some_and(|v| v > loaded.version) {
                    // Written by another run of the command since the
                    // load: the state returned must hold it.
                    loaded = self.load_stream(&stream, u64::MAX, true)?;
                }
            }
            if let Some(version) = earlier {
                return self.repeated(&stream, loaded, version, meta.command_id, attempt);
            }
            let events = loaded.state.handle(command.clone()).map_err(RepositoryError::Domain)?;
            if events.is_empty() {
                return Ok(Executed {
                    state: loaded.state,
                    version: loaded.version,
                    events: 0,
                    last_position: 0,
                    attempts: attempt,
                    snapshot_saved: None,
                    snapshot_error: None,
                    repeated: false,
                });
            }
            let data = (0u64..)
                .zip(&events)
                .map(|(k, e)| {
                    self.encode(&stream, e, &meta)
                        .map(|d| d.with_id(command_event_id(meta.command_id, k)))
                })
                .collect::<RepoResult<Vec<_>, A>>()?;
            match self.store.append(&stream, ExpectedVersion::Exact(loaded.version), data) {
                Ok(result) => {
                    // A run of this command that decided more events may
                    // have got there first: the store then took these
                    // (its first ones, same ids) for a retry of it. That
                    // execution stands, whole.
                    let next_id = command_event_id(meta.command_id, events.len() as u64);
                    let next = self
                        .store
                        .read_stream(
                            &stream,
                            ReadStream::forward().from_version(result.last_version + 1).limit(1),
                        )?
                        .next()
                        .transpose()?;
                    if next.is_some_and(|e| e.id() == next_id) {
                        let (loaded, earlier) = self.load_finding(&stream, false, first_id)?;
                        if let Some(version) = earlier {
                            return self.repeated(&stream, loaded, version, meta.command_id, attempt);
                        }
                    }
                    for e in &events {
                        loaded.state.apply(e);
                    }
                    let before = loaded.version;
                    let version = result.last_version;
                    let mut executed = Executed {
                        state: loaded.state,
                        version,
                        events: events.len(),
                        last_position: result.last_position,
                        attempts: attempt,
                        snapshot_saved: None,
                        snapshot_error: None,
                        repeated: false,
                    };
                    if let Some(n) = self.snapshot_every
                        && version / n > before / n
                    {
                        match self.save_snapshot_of(&stream, version, &executed.state) {
                            Ok(()) => executed.snapshot_saved = Some(version),
                            Err(e) => executed.snapshot_error = Some(e.to_string()),
                        }
                    }
                    return Ok(executed);
                }
                Err(crate::Error::WrongExpectedVersion { .. }) => backoff(attempt),
                Err(crate::Error::IdempotencyConflict { .. }) => {
                    // Another run of this command (a thread running it at
                    // once) wrote its events first, which differ from these
                    // (a handler that is not deterministic, stamping a time,
                    // say): that execution stands. Else the command id was
                    // used before, for a command on another aggregate. (The
                    // store may have matched the ids of the other run's
                    // append while it waited for its sync: its events are
                    // looked for once published.)
                    if let Some(position) = self.store.core().recent_event_position(first_id) {
                        self.wait_published(position);
                    }
                    let (loaded, earlier) = self.load_finding(&stream, false, first_id)?;
                    return match earlier {
                        Some(version) => self.repeated(&stream, loaded, version, meta.command_id, attempt),
                        None => Err(RepositoryError::CommandIdReused {
                            command_id: meta.command_id,
                            stream,
                        }),
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepositoryError::Conflict {
            stream,
            attempts: self.max_attempts,
        })
    }

    /// Saves a snapshot of aggregate `id` as it is now; returns its version
    /// (0 when the aggregate has no events, and nothing is saved). Fails
    /// with [`crate::Error::InvalidInput`] (in [`RepositoryError::Store`])
    /// for an id that makes no valid stream name, as loads do.
    pub fn snapshot(&self, id: &str) -> RepoResult<u64, A> {
        let stream = self.valid_stream(id)?;
        let loaded = self.load_stream(&stream, u64::MAX, true)?;
        if loaded.version > 0 {
            self.save_snapshot_of(&stream, loaded.version, &loaded.state)?;
        }
        Ok(loaded.version)
    }

    fn save_snapshot_of(&self, stream: &str, version: u64, state: &A) -> RepoResult<(), A> {
        let bytes = self
            .codec
            .encode_state(state)
            .map_err(|source| RepositoryError::Codec {
                stream: stream.to_string(),
                version,
                source,
            })?;
        self.store
            .save_snapshot(stream, version, A::SNAPSHOT_SCHEMA_VERSION, &bytes)?;
        Ok(())
    }

    /// Waits (a few seconds at most) until the event at `position`, queued
    /// by another append, is published: readable, and in the index.
    fn wait_published(&self, position: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.store.last_position() < position && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }

    /// The version of `stream`'s event `id`, when the store's recent-id
    /// window holds it (and it is that stream's).
    fn recent_event_version(&self, stream: &str, id: Uuid) -> RepoResult<Option<u64>, A> {
        let Some(position) = self.store.core().recent_event_position(id) else {
            return Ok(None);
        };
        Ok(self
            .store
            .read_position(position)?
            .filter(|e| e.id() == id && e.stream() == stream)
            .map(|e| e.version()))
    }

    /// The result of a command found executed already, its first event at
    /// `version` of `stream`: its events are those that follow with the
    /// ids derived from `command`.
    fn repeated(
        &self,
        stream: &str,
        loaded: Loaded<A>,
        version: u64,
        command: Uuid,
        attempt: u32,
    ) -> RepoResult<Executed<A>, A> {
        let (mut events, mut last_position) = (0usize, 0u64);
        for e in self
            .store
            .read_stream(stream, ReadStream::forward().from_version(version))?
        {
            let e = e?;
            if e.id() != command_event_id(command, events as u64) {
                break;
            }
            events += 1;
            last_position = e.position();
        }
        Ok(Executed {
            state: loaded.state,
            version: loaded.version,
            events,
            last_position,
            attempts: attempt,
            snapshot_saved: None,
            snapshot_error: None,
            repeated: true,
        })
    }

    /// Encodes a new event, refusing one that its codec cannot decode back
    /// (JSON has no NaN or infinity: `serde_json` writes them as `null`,
    /// which a float field refuses on read; a value nested deeper than the
    /// decoder's limit; a type that bincode cannot deserialize). Stored
    /// events are never rewritten: such an event, once appended, would make
    /// its aggregate fail every load that replays it.
    fn encode(&self, stream: &str, event: &A::Event, meta: &CommandMetadata) -> RepoResult<EventData, A> {
        let codec_error = |source| RepositoryError::Codec {
            stream: stream.to_string(),
            version: 0,
            source,
        };
        let data = self.codec.encode_event(event).map_err(codec_error)?;
        if let Err(e) = self.codec.decode_event::<A::Event>(event.event_type(), &data) {
            return Err(codec_error(CodecError(format!(
                "the new '{}' event would not decode back ({e}), so it is not written (JsonCodec writes a NaN or \
                 infinite float as null)",
                event.event_type()
            ))));
        }
        Ok(EventData::new(event.event_type(), data)
            .with_schema_version(event.schema_version())
            .correlation_id(meta.correlation_id.unwrap_or(meta.command_id))
            .causation_id(meta.causation_id.unwrap_or(meta.command_id)))
    }
}
