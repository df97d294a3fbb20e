//! Table `jobs`: admin jobs (reindex, history purges, room deletions), so
//! that their status outlives a restart and unfinished ones resume.

use ruma::OwnedRoomId;

use super::Storage;
use super::rows::OptionalId;

/// One job as stored. `params` and `result` are JSON text.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub job_id: String,
    pub kind: String,
    #[sqlx(rename = "job_room", try_from = "OptionalId<OwnedRoomId>")]
    pub room: Option<OwnedRoomId>,
    pub params: String,
    pub status: String,
    pub processed: i64,
    pub error: Option<String>,
    pub result: Option<String>,
    pub started_ts: i64,
    pub finished_ts: Option<i64>,
}

const COLUMNS: &str =
    "job_id, kind, job_room, params, status, processed, error, result, started_ts, finished_ts";

impl Storage {
    pub async fn insert_job(&self, j: &JobRow) -> sqlx::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )))
        .bind(&j.job_id)
        .bind(&j.kind)
        .bind(j.room.as_ref().map(|r| r.as_str()))
        .bind(&j.params)
        .bind(&j.status)
        .bind(j.processed)
        .bind(&j.error)
        .bind(&j.result)
        .bind(j.started_ts)
        .bind(j.finished_ts)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Writes a job's changing fields (status, progress, outcome).
    pub async fn update_job(&self, j: &JobRow) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = $2, processed = $3, error = $4, result = $5, finished_ts = $6
             WHERE job_id = $1",
        )
        .bind(&j.job_id)
        .bind(&j.status)
        .bind(j.processed)
        .bind(&j.error)
        .bind(&j.result)
        .bind(j.finished_ts)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn job(&self, job_id: &str) -> sqlx::Result<Option<JobRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE job_id = $1"
        )))
        .bind(job_id)
        .fetch_optional(self.pool())
        .await
    }

    /// A room's jobs of one kind, oldest first.
    pub async fn room_jobs(&self, room: &str, kind: &str) -> sqlx::Result<Vec<JobRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE job_room = $1 AND kind = $2 ORDER BY started_ts, job_id"
        )))
        .bind(room)
        .bind(kind)
        .fetch_all(self.pool())
        .await
    }

    /// Jobs that were scheduled or running when the server stopped.
    pub async fn unfinished_jobs(&self) -> sqlx::Result<Vec<JobRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE status IN ('scheduled', 'active') ORDER BY started_ts, job_id"
        )))
        .fetch_all(self.pool())
        .await
    }

    /// Deletes finished jobs (complete or failed) that finished before
    /// `finished_before` (ms); returns how many went.
    pub async fn delete_finished_jobs(&self, finished_before: i64) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE status NOT IN ('scheduled', 'active') AND finished_ts < $1",
        )
        .bind(finished_before)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
