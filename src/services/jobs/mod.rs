//! Long admin operations (room deletion and purge, history purges, full-text
//! reindexing) run as tracked background jobs: the HTTP request returns at
//! once, the job goes on if the client disconnects, and its status can be
//! asked for, also after a restart. Every job is a row of the `jobs` table
//! (kind, parameters, status, progress, outcome); running ones are also held
//! in memory. A job that was unfinished when the server stopped (killed)
//! runs again at start ([`resume`]): purges are deletes that can run twice,
//! a reindex starts over.
//!
//! Test knob: with `MYELIN_TEST_PAUSE_JOBS=<dir>` in the environment, each
//! job stops half-way (see [`pause_point`]), creates `<dir>/<job id>` and
//! waits forever, so that a test can kill the server in the middle of a job
//! without guessing at timing. Never set it in production.
//!
//! The runner knows the kinds of job, not their work: the services that own
//! the work give it one function per kind ([`Runners`], at start-up), and
//! the work sees its job through a [`JobHandle`] (`progress.rs`).

pub mod progress;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::distr::{Alphanumeric, SampleString};
use ruma::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::SharedClock;
use crate::error::{MatrixError, Result};
use crate::services::Services;
use crate::storage::Storage;
use crate::storage::jobs::JobRow;
pub use progress::{JobHandle, pause_point};

/// A job's work, running.
pub type JobFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs a history purge: (room, depth, delete local events too).
pub type PurgeHistoryRunner =
    fn(Arc<Services>, JobHandle, ruma::OwnedRoomId, i64, bool) -> JobFuture<Result<()>>;

/// Runs a room deletion again from the parameters it was stored with
/// (JSON), under its id; `Err` when they cannot be read.
pub type RoomDeleteRunner = fn(
    Arc<Services>,
    ruma::OwnedRoomId,
    &str,
    String,
) -> std::result::Result<JobFuture<()>, String>;

/// How each kind of job runs, given by the service that owns its work
/// (`Services::new`).
#[derive(Clone, Copy)]
pub struct Runners {
    /// Rebuilds the search index.
    pub reindex: fn(Arc<Services>, JobHandle) -> JobFuture<Result<()>>,
    pub purge_history: PurgeHistoryRunner,
    /// After a restart.
    pub room_delete: RoomDeleteRunner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Scheduled,
    Active,
    Complete,
    Failed,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Active => "active",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "scheduled" => Self::Scheduled,
            "active" => Self::Active,
            "complete" => Self::Complete,
            _ => Self::Failed,
        }
    }
}

/// What a room deletion did (Synapse's `shutdown_room` object).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShutdownResult {
    pub kicked_users: Vec<String>,
    pub failed_to_kick_users: Vec<String>,
    pub local_aliases: Vec<String>,
    pub new_room_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoomJob {
    pub delete_id: String,
    pub room_id: OwnedRoomId,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub shutdown_room: ShutdownResult,
    #[serde(skip)]
    started_ts: i64,
    #[serde(skip)]
    params: String,
}

/// The `kind` of a room deletion in the `jobs` table.
const ROOM_DELETE: &str = "room_delete";

impl RoomJob {
    /// The row to write; `now` (clock ms) is the finish time of a finished job.
    fn to_row(&self, now: i64) -> Result<JobRow> {
        let finished = matches!(self.status, JobStatus::Complete | JobStatus::Failed);
        Ok(JobRow {
            job_id: self.delete_id.clone(),
            kind: ROOM_DELETE.into(),
            room: Some(self.room_id.clone()),
            params: self.params.clone(),
            status: self.status.as_str().into(),
            processed: 0,
            error: self.error.clone(),
            result: Some(
                serde_json::to_string(&self.shutdown_room).map_err(MatrixError::internal)?,
            ),
            started_ts: self.started_ts,
            finished_ts: finished.then_some(now),
        })
    }

    /// A stored room deletion; one without a room is a bad row (a 500).
    fn from_row(row: JobRow) -> Result<Self> {
        let room_id = row.room.ok_or_else(|| {
            MatrixError::internal(format!("room deletion {} has no room", row.job_id))
        })?;
        Ok(Self {
            delete_id: row.job_id,
            room_id,
            status: JobStatus::parse(&row.status),
            error: row.error,
            shutdown_room: row
                .result
                .and_then(|r| serde_json::from_str(&r).ok())
                .unwrap_or_default(),
            started_ts: row.started_ts,
            params: row.params,
        })
    }
}

/// What kind of work a [`Task`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Rebuilding the full-text index (`/_dendrite/admin/fulltext/reindex`).
    Reindex,
    /// Synapse's `purge_history` of one room.
    PurgeHistory,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reindex => "reindex",
            Self::PurgeHistory => "purge_history",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "reindex" => Some(Self::Reindex),
            "purge_history" => Some(Self::PurgeHistory),
            _ => None,
        }
    }
}

/// The work of a [`Task`], with its parameters (kept in the `jobs` table so
/// that the task can run again after a restart).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "snake_case")]
pub enum Work {
    Reindex,
    PurgeHistory {
        room_id: OwnedRoomId,
        depth: i64,
        delete_local: bool,
    },
}

impl Work {
    fn kind(&self) -> TaskKind {
        match self {
            Self::Reindex => TaskKind::Reindex,
            Self::PurgeHistory { .. } => TaskKind::PurgeHistory,
        }
    }

    fn room(&self) -> Option<OwnedRoomId> {
        match self {
            Self::Reindex => None,
            Self::PurgeHistory { room_id, .. } => Some(room_id.clone()),
        }
    }

    async fn run(self, s: Arc<Services>, job: JobHandle) -> Result<()> {
        let runners = s.jobs.runners;
        match self {
            Self::Reindex => (runners.reindex)(s, job).await,
            Self::PurgeHistory {
                room_id,
                depth,
                delete_local,
            } => (runners.purge_history)(s, job, room_id, depth, delete_local).await,
        }
    }
}

/// A tracked job other than a room deletion: its state and progress, shown
/// by `GET /_myelin/admin/v1/jobs/{id}` (and, for history purges, Synapse's
/// `purge_history_status`).
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub kind: TaskKind,
    pub room_id: Option<OwnedRoomId>,
    pub status: JobStatus,
    pub error: Option<String>,
    /// Items done so far (events indexed, events purged).
    pub processed: u64,
    pub started_ts: i64,
    pub finished_ts: Option<i64>,
    params: String,
}

impl Task {
    /// The job's status; a running job's `elapsed_ms` runs up to `now` (clock ms).
    pub fn to_json(&self, now: i64) -> Value {
        let end = self.finished_ts.unwrap_or(now);
        let mut body = json!({
            "job_id": self.id,
            "kind": self.kind,
            "status": self.status,
            "processed": self.processed,
            "started_ts": self.started_ts,
            "elapsed_ms": (end - self.started_ts).max(0),
        });
        if let Some(room) = &self.room_id {
            body["room_id"] = json!(room);
        }
        if let Some(ts) = self.finished_ts {
            body["finished_ts"] = json!(ts);
        }
        if let Some(e) = &self.error {
            body["error"] = json!(e);
        }
        body
    }

    pub fn is_running(&self) -> bool {
        matches!(self.status, JobStatus::Scheduled | JobStatus::Active)
    }

    fn to_row(&self) -> JobRow {
        JobRow {
            job_id: self.id.clone(),
            kind: self.kind.as_str().into(),
            room: self.room_id.clone(),
            params: self.params.clone(),
            status: self.status.as_str().into(),
            processed: self.processed as i64,
            error: self.error.clone(),
            result: None,
            started_ts: self.started_ts,
            finished_ts: self.finished_ts,
        }
    }

    fn from_row(row: JobRow) -> Option<Self> {
        Some(Self {
            kind: TaskKind::parse(&row.kind)?,
            id: row.job_id,
            room_id: row.room,
            status: JobStatus::parse(&row.status),
            error: row.error,
            processed: row.processed.max(0) as u64,
            started_ts: row.started_ts,
            finished_ts: row.finished_ts,
            params: row.params,
        })
    }
}

/// How long a finished (complete or failed) job's status can still be
/// asked for: a week, as Synapse keeps its finished scheduled tasks. Then
/// the job is deleted, so that the table does not grow with every purge
/// the server ever ran.
pub const KEEP_FINISHED: Duration = Duration::from_secs(7 * 24 * 60 * 60);
const KEEP_FINISHED_MS: i64 = KEEP_FINISHED.as_millis() as i64;

/// How often, on the server's clock, finished jobs past [`KEEP_FINISHED`]
/// are deleted (as Synapse's half-hourly clean-up).
pub const PRUNE_EVERY: Duration = Duration::from_secs(30 * 60);

/// Jobs: every one in the database, the running ones also in memory (their
/// latest state; finished ones are dropped from memory once written).
pub struct Jobs {
    storage: Storage,
    runners: Runners,
    clock: SharedClock,
    rooms: Mutex<HashMap<String, RoomJob>>,
    tasks: Mutex<HashMap<String, Task>>,
}

fn new_id() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 16)
}

impl Jobs {
    pub fn new(storage: Storage, runners: Runners, clock: SharedClock) -> Self {
        Self {
            storage,
            runners,
            clock,
            rooms: Mutex::default(),
            tasks: Mutex::default(),
        }
    }

    /// Registers a room deletion with its options (to run it again after
    /// a restart).
    pub async fn new_room_job(&self, room_id: &RoomId, params: &impl Serialize) -> Result<String> {
        let id = new_id();
        let job = RoomJob {
            delete_id: id.clone(),
            room_id: room_id.to_owned(),
            status: JobStatus::Scheduled,
            error: None,
            shutdown_room: ShutdownResult::default(),
            started_ts: self.clock.now_ms(),
            params: serde_json::to_string(params).map_err(MatrixError::internal)?,
        };
        self.storage
            .insert_job(&job.to_row(self.clock.now_ms())?)
            .await?;
        self.rooms.lock().insert(id.clone(), job);
        Ok(id)
    }

    /// Changes a running room deletion and writes it down; a finished one
    /// leaves memory once written.
    pub async fn update(&self, id: &str, f: impl FnOnce(&mut RoomJob)) {
        let job = {
            let mut rooms = self.rooms.lock();
            let Some(job) = rooms.get_mut(id) else {
                return;
            };
            f(job);
            job.clone()
        };
        let saved = match job.to_row(self.clock.now_ms()) {
            Ok(row) => self
                .storage
                .update_job(&row)
                .await
                .map_err(MatrixError::from),
            Err(e) => Err(e),
        };
        match saved {
            Ok(()) if matches!(job.status, JobStatus::Complete | JobStatus::Failed) => {
                self.rooms.lock().remove(id);
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(job = id, error = %e.message(), "could not write a job's state")
            }
        }
    }

    pub async fn room_job(&self, id: &str) -> Result<Option<RoomJob>> {
        if let Some(job) = self.rooms.lock().get(id).cloned() {
            return Ok(Some(job));
        }
        self.storage
            .job(id)
            .await?
            .filter(|r| r.kind == ROOM_DELETE && self.kept(r))
            .map(RoomJob::from_row)
            .transpose()
    }

    /// Every deletion of a room, oldest first.
    pub async fn room_jobs_for(&self, room_id: &str) -> Result<Vec<RoomJob>> {
        let rows = self.storage.room_jobs(room_id, ROOM_DELETE).await?;
        let running = self.rooms.lock();
        rows.into_iter()
            .filter(|r| self.kept(r))
            .map(|r| match running.get(&r.job_id) {
                Some(job) => Ok(job.clone()),
                None => RoomJob::from_row(r),
            })
            .collect()
    }

    pub async fn task(&self, id: &str) -> Result<Option<Task>> {
        if let Some(task) = self.tasks.lock().get(id).cloned() {
            return Ok(Some(task));
        }
        Ok(self
            .storage
            .job(id)
            .await?
            .filter(|r| self.kept(r))
            .and_then(Task::from_row))
    }

    /// Whether a stored job is still to be shown: running, or finished
    /// less than [`KEEP_FINISHED`] ago. Older ones read as unknown even
    /// before [`Jobs::prune`] deletes them.
    fn kept(&self, row: &JobRow) -> bool {
        row.finished_ts
            .is_none_or(|t| t.saturating_add(KEEP_FINISHED_MS) > self.clock.now_ms())
    }

    /// Deletes the jobs that finished more than [`KEEP_FINISHED`] ago
    /// (the upkeep worker calls it every [`PRUNE_EVERY`]); returns how
    /// many went.
    pub async fn prune(&self) -> Result<u64> {
        let before = self.clock.now_ms().saturating_sub(KEEP_FINISHED_MS);
        Ok(self.storage.delete_finished_jobs(before).await?)
    }

    /// Changes a running task and writes it down; a finished one leaves
    /// memory once written.
    pub async fn update_task(&self, id: &str, f: impl FnOnce(&mut Task)) {
        let task = {
            let mut tasks = self.tasks.lock();
            let Some(task) = tasks.get_mut(id) else {
                return;
            };
            f(task);
            task.clone()
        };
        match self.storage.update_job(&task.to_row()).await {
            Ok(()) if !task.is_running() => {
                self.tasks.lock().remove(id);
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(job = id, error = %e, "could not write a job's state"),
        }
    }

    /// The running jobs: id, kind and items done so far (room deletions
    /// count none).
    pub fn running(&self) -> Vec<(String, &'static str, u64)> {
        let mut all: Vec<(String, &'static str, u64)> = self
            .tasks
            .lock()
            .values()
            .filter(|t| t.is_running())
            .map(|t| (t.id.clone(), t.kind.as_str(), t.processed))
            .collect();
        all.extend(
            self.rooms
                .lock()
                .values()
                .filter(|j| matches!(j.status, JobStatus::Scheduled | JobStatus::Active))
                .map(|j| (j.delete_id.clone(), ROOM_DELETE, 0)),
        );
        all
    }

    /// Adds to a task's progress count.
    pub async fn progress(&self, id: &str, n: u64) {
        self.update_task(id, |t| t.processed += n).await;
    }

    /// Registers a new task, unless one of the same kind (for the same room)
    /// is still running: then `Ok(Err)` with that one's id.
    async fn new_task(&self, work: &Work) -> Result<std::result::Result<String, String>> {
        let (kind, room_id) = (work.kind(), work.room());
        let task = {
            let mut tasks = self.tasks.lock();
            if let Some(t) = tasks
                .values()
                .find(|t| t.kind == kind && t.room_id == room_id && t.is_running())
            {
                return Ok(Err(t.id.clone()));
            }
            let task = Task {
                id: new_id(),
                kind,
                room_id,
                status: JobStatus::Scheduled,
                error: None,
                processed: 0,
                started_ts: self.clock.now_ms(),
                finished_ts: None,
                params: serde_json::to_string(work).map_err(MatrixError::internal)?,
            };
            tasks.insert(task.id.clone(), task.clone());
            task
        };
        if let Err(e) = self.storage.insert_job(&task.to_row()).await {
            self.tasks.lock().remove(&task.id);
            return Err(e.into());
        }
        Ok(Ok(task.id))
    }
}

/// Starts `work` as a tracked task and returns its id at once. It runs to
/// the end even if the client that asked for it goes away; its outcome
/// becomes the task's status. Only one task of a kind runs for a room (or,
/// without a room, at all): while one runs, `Ok(Err)` carries its id and
/// nothing new starts.
pub async fn start_task(
    s: &Arc<Services>,
    work: Work,
) -> Result<std::result::Result<String, String>> {
    let id = match s.jobs.new_task(&work).await? {
        Ok(id) => id,
        Err(running) => return Ok(Err(running)),
    };
    s.spawn_job(run_task(s.clone(), id.clone(), work));
    Ok(Ok(id))
}

async fn run_task(s: Arc<Services>, id: String, work: Work) {
    s.jobs
        .update_task(&id, |t| t.status = JobStatus::Active)
        .await;
    let reporter = s.clone();
    let report_id = id.clone();
    let handle = JobHandle::new(
        id.clone(),
        Arc::new(move |n| {
            let (s, id) = (reporter.clone(), report_id.clone());
            Box::pin(async move { s.jobs.progress(&id, n).await })
        }),
    );
    let outcome = work.run(s.clone(), handle).await;
    s.jobs
        .update_task(&id, |t| {
            t.finished_ts = Some(s.clock.now_ms());
            match outcome {
                Ok(()) => t.status = JobStatus::Complete,
                Err(e) => {
                    tracing::warn!(job = %t.id, kind = ?t.kind, error = %e.message(), "job failed");
                    t.status = JobStatus::Failed;
                    t.error = Some(e.message().to_owned());
                }
            }
        })
        .await;
}

/// Runs again every job that was unfinished when the server stopped, each
/// under its own id (its status stays readable throughout). A job whose
/// parameters cannot be read is marked failed. Returns whether a reindex
/// was among them (it rebuilds the search index anyway).
pub async fn resume(s: &Arc<Services>) -> Result<bool> {
    let mut reindexing = false;
    for row in s.storage.unfinished_jobs().await? {
        let id = row.job_id.clone();
        tracing::info!(job = %id, kind = %row.kind, "resuming a job interrupted by a restart");
        if row.kind == ROOM_DELETE {
            let job = RoomJob::from_row(row)?;
            let room_id = job.room_id.clone();
            let params = job.params.clone();
            // In memory before it runs: the deletion updates it.
            s.jobs.rooms.lock().insert(id.clone(), job);
            match (s.jobs.runners.room_delete)(s.clone(), room_id, &params, id.clone()) {
                Ok(run) => {
                    s.spawn_job(run);
                }
                Err(e) => {
                    let job = s.jobs.rooms.lock().remove(&id);
                    if let Some(job) = job {
                        fail_unreadable(s, job.to_row(s.clock.now_ms())?, &e).await?;
                    }
                }
            }
            continue;
        }
        let params = row.params.clone();
        let Some(task) = Task::from_row(row.clone()) else {
            fail_unreadable(s, row, "unknown job kind").await?;
            continue;
        };
        match serde_json::from_str::<Work>(&params) {
            Ok(work) => {
                reindexing |= task.kind == TaskKind::Reindex;
                s.jobs.tasks.lock().insert(id.clone(), task);
                s.spawn_job(run_task(s.clone(), id, work));
            }
            Err(e) => fail_unreadable(s, row, &e.to_string()).await?,
        }
    }
    Ok(reindexing)
}

async fn fail_unreadable(s: &Services, mut row: JobRow, why: &str) -> Result<()> {
    tracing::warn!(job = %row.job_id, error = why, "cannot resume a job; marking it failed");
    row.status = JobStatus::Failed.as_str().into();
    row.error = Some(format!(
        "Interrupted by a restart and could not be resumed: {why}"
    ));
    row.finished_ts = Some(s.clock.now_ms());
    s.storage.update_job(&row).await?;
    Ok(())
}

impl crate::services::workers::CacheSizes for Jobs {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("room_jobs", self.rooms.lock().len()),
            ("tasks", self.tasks.lock().len()),
        ]
    }
}
