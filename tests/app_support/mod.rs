//! A small task tracker on annal, written from the docs only (review of the
//! public API): task aggregates with commands, command ids, snapshots and an
//! upcaster; a read model of the open tasks per project kept in a file with
//! the position it covers (the documented pattern) fed by a
//! `ProjectionRunner`; a dispatcher with two handlers (notifications, stats);
//! several threads issuing commands at once; time travel; a restart; and an
//! export/import into a second store through the CLI, checked with
//! `annal verify` and `annal stats`.
//!
//! Shared by `tests/app_review.rs` (from a review in which the app was
//! built as an example).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annal::aggregate::{Aggregate, DomainEvent, JsonCodec, Repository, Upcasters};
use annal::{
    Dispatcher, EventData, ExpectedVersion, HandlerError, Projection, RecordedEvent, StartFrom, Store,
    SubscriptionFilter,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// The domain
// ---------------------------------------------------------------------------

/// One task. Ids are `"{project}.{n}"` (no `-`: the stream is `Task-{id}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub exists: bool,
    pub project: String,
    pub title: String,
    pub priority: u8,
    pub assignee: Option<String>,
    pub done: bool,
    pub comments: u64,
}

/// Task events. `Created` is at schema version 2: version 1 stored
/// `{"proj": "...", "name": "..."}` (no priority); an upcaster converts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskEvent {
    Created {
        project: String,
        title: String,
        priority: u8,
    },
    Renamed {
        title: String,
    },
    Assigned {
        assignee: String,
    },
    Commented {
        text: String,
    },
    Completed,
    Reopened,
}

impl DomainEvent for TaskEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TaskEvent::Created { .. } => "Created",
            TaskEvent::Renamed { .. } => "Renamed",
            TaskEvent::Assigned { .. } => "Assigned",
            TaskEvent::Commented { .. } => "Commented",
            TaskEvent::Completed => "Completed",
            TaskEvent::Reopened => "Reopened",
        }
    }
    fn schema_version(&self) -> u16 {
        match self {
            TaskEvent::Created { .. } => 2,
            _ => 1,
        }
    }
}

#[derive(Clone, Debug)]
pub enum TaskCommand {
    Create {
        project: String,
        title: String,
        priority: u8,
    },
    Rename {
        title: String,
    },
    Assign {
        assignee: String,
    },
    Comment {
        text: String,
    },
    Complete,
    Reopen,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TaskError {
    #[error("task already exists")]
    AlreadyExists,
    #[error("no such task")]
    NotFound,
    #[error("task is done")]
    Done,
    #[error("task is not done")]
    NotDone,
    #[error("title must not be empty")]
    EmptyTitle,
}

impl Aggregate for Task {
    const CATEGORY: &'static str = "Task";
    type Event = TaskEvent;
    type Command = TaskCommand;
    type Error = TaskError;

    fn apply(&mut self, event: &TaskEvent) {
        match event {
            TaskEvent::Created {
                project,
                title,
                priority,
            } => {
                self.exists = true;
                self.project = project.clone();
                self.title = title.clone();
                self.priority = *priority;
            }
            TaskEvent::Renamed { title } => self.title = title.clone(),
            TaskEvent::Assigned { assignee } => self.assignee = Some(assignee.clone()),
            TaskEvent::Commented { .. } => self.comments += 1,
            TaskEvent::Completed => self.done = true,
            TaskEvent::Reopened => self.done = false,
        }
    }

    fn handle(&self, command: TaskCommand) -> Result<Vec<TaskEvent>, TaskError> {
        use TaskCommand::*;
        match command {
            Create { .. } if self.exists => Err(TaskError::AlreadyExists),
            Create { title, .. } if title.is_empty() => Err(TaskError::EmptyTitle),
            Create {
                project,
                title,
                priority,
            } => Ok(vec![TaskEvent::Created {
                project,
                title,
                priority,
            }]),
            _ if !self.exists => Err(TaskError::NotFound),
            Rename { title } if title.is_empty() => Err(TaskError::EmptyTitle),
            Rename { title } if title == self.title => Ok(vec![]), // nothing changes
            Rename { title } => Ok(vec![TaskEvent::Renamed { title }]),
            Assign { assignee } => Ok(vec![TaskEvent::Assigned { assignee }]),
            Comment { text } => Ok(vec![TaskEvent::Commented { text }]),
            Complete if self.done => Err(TaskError::Done),
            Complete => Ok(vec![TaskEvent::Completed]),
            Reopen if !self.done => Err(TaskError::NotDone),
            Reopen => Ok(vec![TaskEvent::Reopened]),
        }
    }
}

/// The upcaster for the old `Created` shape.
pub fn upcasters() -> Upcasters {
    Upcasters::new().register_json("Created", 1, |old| {
        serde_json::json!({
            "project": old["proj"],
            "title": old["name"],
            "priority": 3,
        })
    })
}

pub type Tasks = Repository<Task>;

pub fn repository(store: &Store) -> Tasks {
    Repository::<Task>::new(store.clone(), JsonCodec)
        .with_upcasters(upcasters())
        .with_snapshot_every(5)
        .with_max_retries(50)
}

/// Writes a task the way version 1 of the app did (raw append, `Created` v1).
pub fn write_legacy_task(store: &Store, id: &str, project: &str, title: &str) -> annal::Result<()> {
    let data = serde_json::json!({ "proj": project, "name": title }).to_string();
    store.append(
        &format!("Task-{id}"),
        ExpectedVersion::NoStream,
        [EventData::new("Created", data).with_schema_version(1)],
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The read model: open tasks per project, in a file with its position
// ---------------------------------------------------------------------------

/// What the file holds (JSON, replaced atomically with the position).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpenTasksModel {
    /// Every event at or before this position is in the model.
    pub position: u64,
    /// project -> open task ids.
    pub open: BTreeMap<String, BTreeSet<String>>,
    /// task id -> project (Completed/Reopened do not carry the project).
    pub project_of: BTreeMap<String, String>,
}

pub struct OpenTasks {
    pub file: PathBuf,
    pub model: OpenTasksModel,
    pub repo: Tasks,
    /// Events applied (skipped ones not counted): to see redelivery.
    pub applied: u64,
    pub skipped: u64,
}

impl OpenTasks {
    pub fn load(file: PathBuf, repo: Tasks) -> OpenTasks {
        let model = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        OpenTasks {
            file,
            model,
            repo,
            applied: 0,
            skipped: 0,
        }
    }
}

pub fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Projection for OpenTasks {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.position() <= self.model.position {
            self.skipped += 1;
            return Ok(());
        }
        let (_, id) = annal::aggregate::split_stream_name(event.stream()).ok_or("stream without category")?;
        let m = &mut self.model;
        match self.repo.decode(event)? {
            TaskEvent::Created { project, .. } => {
                m.project_of.insert(id.to_string(), project.clone());
                m.open.entry(project).or_default().insert(id.to_string());
            }
            TaskEvent::Completed => {
                let project = m.project_of.get(id).ok_or("completed before created")?;
                if let Some(set) = m.open.get_mut(project) {
                    set.remove(id);
                }
            }
            TaskEvent::Reopened => {
                let project = m.project_of.get(id).ok_or("reopened before created")?.clone();
                m.open.entry(project).or_default().insert(id.to_string());
            }
            _ => {}
        }
        m.position = event.position();
        self.applied += 1;
        Ok(())
    }

    fn end_batch(&mut self, position: u64) -> Result<(), HandlerError> {
        self.model.position = self.model.position.max(position);
        write_atomically(&self.file, &serde_json::to_vec(&self.model)?)?;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), HandlerError> {
        self.model = OpenTasksModel::default();
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The dispatcher: notifications and stats
// ---------------------------------------------------------------------------

#[derive(Default)]
pub struct Side {
    /// "assignee: task" lines, in the order received.
    pub notifications: Mutex<Vec<String>>,
    /// events per type.
    pub counts: Mutex<BTreeMap<String, u64>>,
    pub last_stats_position: AtomicU64,
}

pub const NOTIFY: &str = "notify";
pub const STATS: &str = "stats";

/// Starts the dispatcher from the saved checkpoints (or the start).
pub fn start_dispatcher(store: &Store, side: &Arc<Side>) -> annal::Result<Dispatcher> {
    let cps = store.checkpoints();
    let from =
        |name: &str| -> annal::Result<StartFrom> { Ok(cps.load(name)?.map_or(StartFrom::Start, StartFrom::After)) };
    let (n, s) = (side.clone(), side.clone());
    store
        .dispatcher()
        .handler(
            NOTIFY,
            SubscriptionFilter::category("Task").event_type("Assigned"),
            from(NOTIFY)?,
            move |e| {
                let v: serde_json::Value = serde_json::from_slice(e.data())?;
                let who = v["assignee"].as_str().ok_or("no assignee")?;
                n.notifications.lock().unwrap().push(format!("{who}: {}", e.stream()));
                Ok(())
            },
        )?
        .handler(STATS, SubscriptionFilter::all(), from(STATS)?, move |e| {
            // Idempotent across restarts only with the position (pattern 1).
            if e.position() <= s.last_stats_position.load(Ordering::Acquire) {
                return Ok(());
            }
            *s.counts.lock().unwrap().entry(e.event_type().to_string()).or_default() += 1;
            s.last_stats_position.store(e.position(), Ordering::Release);
            Ok(())
        })?
        .start()
}

/// Waits until every handler of `d` is at `position` (there is no API for
/// it: poll `status()`).
pub fn wait_dispatcher(d: &Dispatcher, position: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let st = d.status();
        if st.iter().all(|h| h.position >= position || h.failure.is_some()) {
            return st.iter().all(|h| h.failure.is_none());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

pub fn save_dispatcher_checkpoints(store: &Store, d: &Dispatcher) -> annal::Result<()> {
    let cps = store.checkpoints();
    for h in d.status() {
        cps.save(&h.name, h.position)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------

pub fn annal_binary() -> Option<PathBuf> {
    if let Some(p) = option_env!("CARGO_BIN_EXE_annal") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/examples/review_app -> target/<profile>/annal
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("annal");
    candidate.exists().then_some(candidate)
}

pub fn cli(bin: &Path, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<std::process::Output> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input)?;
    }
    child.wait_with_output()
}
