//! Long admin operations (room deletion and purge, full-text reindexing) run
//! as tracked background jobs: the HTTP request returns at once, the job goes
//! on if the client disconnects, and its status can be asked for until the
//! server restarts.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::Result;
use crate::services::Services;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Scheduled,
    Active,
    Complete,
    Failed,
}

/// What a room deletion did (Synapse's `shutdown_room` object).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShutdownResult {
    pub kicked_users: Vec<String>,
    pub failed_to_kick_users: Vec<String>,
    pub local_aliases: Vec<String>,
    pub new_room_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoomJob {
    pub delete_id: String,
    pub room_id: String,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub shutdown_room: ShutdownResult,
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

/// A tracked job other than a room deletion: its state and progress, shown
/// by `GET /_myelin/admin/v1/jobs/{id}` (and, for history purges, Synapse's
/// `purge_history_status`).
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub kind: TaskKind,
    pub room_id: Option<String>,
    pub status: JobStatus,
    pub error: Option<String>,
    /// Items done so far (events indexed, events purged).
    pub processed: u64,
    pub started_ts: i64,
    started: Instant,
    finished: Option<(i64, Instant)>,
}

impl Task {
    pub fn to_json(&self) -> Value {
        let elapsed = match self.finished {
            Some((_, at)) => at.duration_since(self.started),
            None => self.started.elapsed(),
        };
        let mut body = json!({
            "job_id": self.id,
            "kind": self.kind,
            "status": self.status,
            "processed": self.processed,
            "started_ts": self.started_ts,
            "elapsed_ms": elapsed.as_millis() as u64,
        });
        if let Some(room) = &self.room_id {
            body["room_id"] = json!(room);
        }
        if let Some((ts, _)) = self.finished {
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
}

#[derive(Default)]
pub struct Jobs {
    rooms: Mutex<HashMap<String, RoomJob>>,
    tasks: Mutex<HashMap<String, Task>>,
}

fn new_id() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 16)
}

impl Jobs {
    pub fn new_room_job(&self, room_id: &str) -> String {
        let id = new_id();
        self.rooms.lock().insert(
            id.clone(),
            RoomJob {
                delete_id: id.clone(),
                room_id: room_id.to_owned(),
                status: JobStatus::Scheduled,
                error: None,
                shutdown_room: ShutdownResult::default(),
            },
        );
        id
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut RoomJob)) {
        if let Some(job) = self.rooms.lock().get_mut(id) {
            f(job);
        }
    }

    pub fn room_job(&self, id: &str) -> Option<RoomJob> {
        self.rooms.lock().get(id).cloned()
    }

    /// Every job for a room, oldest first.
    pub fn room_jobs_for(&self, room_id: &str) -> Vec<RoomJob> {
        let mut jobs: Vec<RoomJob> = self
            .rooms
            .lock()
            .values()
            .filter(|j| j.room_id == room_id)
            .cloned()
            .collect();
        jobs.sort_by(|a, b| a.delete_id.cmp(&b.delete_id));
        jobs
    }

    pub fn task(&self, id: &str) -> Option<Task> {
        self.tasks.lock().get(id).cloned()
    }

    pub fn update_task(&self, id: &str, f: impl FnOnce(&mut Task)) {
        if let Some(task) = self.tasks.lock().get_mut(id) {
            f(task);
        }
    }

    /// Adds to a task's progress count.
    pub fn progress(&self, id: &str, n: u64) {
        self.update_task(id, |t| t.processed += n);
    }

    /// Registers a new task, unless one of the same kind (for the same room)
    /// is still running: then `Err` with that one's id.
    fn new_task(
        &self,
        kind: TaskKind,
        room_id: Option<&str>,
    ) -> std::result::Result<String, String> {
        let mut tasks = self.tasks.lock();
        if let Some(t) = tasks
            .values()
            .find(|t| t.kind == kind && t.room_id.as_deref() == room_id && t.is_running())
        {
            return Err(t.id.clone());
        }
        let id = new_id();
        tasks.insert(
            id.clone(),
            Task {
                id: id.clone(),
                kind,
                room_id: room_id.map(str::to_owned),
                status: JobStatus::Scheduled,
                error: None,
                processed: 0,
                started_ts: crate::storage::now_ms(),
                started: Instant::now(),
                finished: None,
            },
        );
        Ok(id)
    }
}

/// Starts `work` as a tracked task and returns its id at once. The work gets
/// the task id (to report progress) and runs to the end even if the client
/// that asked for it goes away; its outcome becomes the task's status. Only
/// one task of a kind runs for a room (or, without a room, at all): while one
/// runs, `Err` carries its id and nothing new starts.
pub fn spawn_task<F, Fut>(
    s: &Arc<Services>,
    kind: TaskKind,
    room_id: Option<&str>,
    work: F,
) -> std::result::Result<String, String>
where
    F: FnOnce(Arc<Services>, String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let id = s.jobs.new_task(kind, room_id)?;
    let (s, task_id) = (s.clone(), id.clone());
    tokio::spawn(async move {
        s.jobs
            .update_task(&task_id, |t| t.status = JobStatus::Active);
        let outcome = work(s.clone(), task_id.clone()).await;
        s.jobs.update_task(&task_id, |t| {
            t.finished = Some((crate::storage::now_ms(), Instant::now()));
            match outcome {
                Ok(()) => t.status = JobStatus::Complete,
                Err(e) => {
                    tracing::warn!(job = %t.id, kind = ?t.kind, error = %e.message(), "job failed");
                    t.status = JobStatus::Failed;
                    t.error = Some(e.message().to_owned());
                }
            }
        });
    });
    Ok(id)
}
