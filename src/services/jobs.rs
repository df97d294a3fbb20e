//! Long admin operations (room deletion and purge, full-text reindexing) run
//! as tracked background jobs: the HTTP request returns at once, the job goes
//! on if the client disconnects, and its status can be asked for until the
//! server restarts.

use std::collections::HashMap;

use parking_lot::Mutex;
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;

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

#[derive(Default)]
pub struct Jobs {
    rooms: Mutex<HashMap<String, RoomJob>>,
}

impl Jobs {
    pub fn new_room_job(&self, room_id: &str) -> String {
        let id = Alphanumeric.sample_string(&mut rand::rng(), 16);
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
}
