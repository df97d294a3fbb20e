//! What a job's work sees of its job: its id, where its progress goes, and
//! the test knob that stops it half-way. A leaf: the services that own the
//! work (search, admin) use this, never the job runner itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Reports progress (items done) to the job's record.
type Report = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A running job, as its work sees it.
#[derive(Clone)]
pub struct JobHandle {
    id: String,
    report: Report,
}

impl JobHandle {
    pub fn new(id: String, report: Report) -> Self {
        Self { id, report }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds to the job's progress count.
    pub async fn progress(&self, n: u64) {
        (self.report)(n).await;
    }

    /// See [`pause_point`].
    pub async fn pause_point(&self) {
        pause_point(&self.id).await;
    }
}

/// A point between two steps of a job: at shutdown the job stops here
/// ([`crate::services::workers::step_boundary`]). Also the test knob (see
/// the `jobs` module docs): with `MYELIN_TEST_PAUSE_JOBS` set, a job
/// reaching this point marks it with a file and never goes on.
pub async fn pause_point(job: &str) {
    crate::services::workers::step_boundary().await;
    let Some(dir) = std::env::var_os("MYELIN_TEST_PAUSE_JOBS") else {
        return;
    };
    tracing::warn!(job, "MYELIN_TEST_PAUSE_JOBS: job paused half-way");
    let _ = std::fs::write(std::path::Path::new(&dir).join(job), b"");
    std::future::pending::<()>().await;
}
