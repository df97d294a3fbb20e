//! SQLite's write-ahead log checkpoints, off the commit path.
//!
//! Left to itself, SQLite copies the log back into the database file inside
//! the commit that takes the log past 1,000 pages: that commit (and every
//! event of a group commit, and every request waiting on them) waits for the
//! copy and two fsyncs. Under a steady stream of messages that was most of
//! the send latency's tail.
//!
//! So the pool's connections checkpoint only as a backstop
//! (`wal_autocheckpoint`, see [`super::Dialect::connection_setup`]), and a
//! task with a connection of its own does it instead:
//! - every [`BUSY_TICK`] while the log grows, a `PASSIVE` checkpoint copies
//!   what it can without waiting for or blocking anyone;
//! - when the log is longer than [`RESTART_FRAMES`] and that passive copy
//!   caught up with it, a `RESTART` checkpoint makes the next write start
//!   the log over, which keeps the file bounded (a passive copy alone never
//!   lets it start over while writes keep coming). A restart holds new
//!   writers back while it runs, and copying what was written since the
//!   passive copy costs it two fsyncs (hundreds of milliseconds on a busy
//!   disk), so under a steady stream of writes, when the passive copy
//!   never quite catches up, it waits until the log is longer than
//!   [`FORCE_RESTART_FRAMES`];
//! - with nothing to copy it looks again after [`IDLE_TICK`], and cuts a
//!   log file left longer than [`KEEP_LOG_BYTES`] by a burst back to
//!   nothing (`TRUNCATE`): while writes come, the file is written over,
//!   never cut, because freeing its blocks inside a commit stalled every
//!   writer (docs/benchmarks-history.md, run 42).
//!
//! The task ends when the storage is closed ([`super::Storage::close`]
//! closes its connection first, so that the pool's last connection makes
//! the final checkpoint and removes the log), or with the last handle to
//! the storage.

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection, Executor};

/// Between checkpoints while the log grows.
const BUSY_TICK: Duration = Duration::from_millis(100);
/// Between checks while nothing is written.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// A log longer than this (in pages: 64 MiB of 4 KiB pages) is started over
/// once a passive copy has caught up with it. At 4,096 pages restarts came
/// often enough under a steady send load to show in the send p99
/// (docs/benchmarks-history.md, run 15).
const RESTART_FRAMES: i64 = 16384;
/// A log longer than this (192 MiB) is started over even though writes keep
/// coming; below the pool's own backstop (`wal_autocheckpoint`, 256 MiB, see
/// [`super::Dialect::connection_setup`]) and SQLite's `journal_size_limit`.
const FORCE_RESTART_FRAMES: i64 = 49152;
/// A log file longer than this is cut back once writes have paused.
const KEEP_LOG_BYTES: u64 = 64 << 20;
/// How long a `RESTART` checkpoint waits for the writer and readers before
/// giving up until the next tick; new writers wait behind it meanwhile.
const RESTART_WAIT_MS: u32 = 20;

/// When the task checkpoints: [`BUSY_TICK`], [`IDLE_TICK`],
/// [`RESTART_FRAMES`], [`FORCE_RESTART_FRAMES`] and [`KEEP_LOG_BYTES`], or
/// others in tests.
#[derive(Clone, Copy)]
pub(super) struct Schedule {
    pub busy_tick: Duration,
    pub idle_tick: Duration,
    pub restart_frames: i64,
    pub force_restart_frames: i64,
    pub keep_log_bytes: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            busy_tick: BUSY_TICK,
            idle_tick: IDLE_TICK,
            restart_frames: RESTART_FRAMES,
            force_restart_frames: FORCE_RESTART_FRAMES,
            keep_log_bytes: KEEP_LOG_BYTES,
        }
    }
}

/// Opens the checkpoint connection and starts the task. `alive` is held by
/// every handle to the storage.
pub(super) async fn spawn(
    url: &str,
    alive: Weak<()>,
    stop: Arc<tokio::sync::Notify>,
    pool: sqlx::AnyPool,
    schedule: Schedule,
) -> sqlx::Result<tokio::task::JoinHandle<()>> {
    let mut conn = AnyConnectOptions::from_str(url)?
        .disable_statement_logging()
        .connect()
        .await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {RESTART_WAIT_MS}"
    )))
    .await?;
    let log_file = log_file(&mut conn).await?;
    let handle = tokio::spawn(async move {
        let mut last_log = 0;
        loop {
            let tick = match checkpoint(&mut conn, &schedule).await {
                Ok(log) if log == last_log => {
                    if let Err(e) = cut_back(&mut conn, log_file.as_deref(), &schedule).await {
                        tracing::warn!(error = %e, "WAL truncation failed");
                    }
                    schedule.idle_tick
                }
                Ok(log) => {
                    last_log = log;
                    schedule.busy_tick
                }
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                    schedule.idle_tick
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.notified() => break,
            }
            if alive.strong_count() == 0 || pool.is_closed() {
                break;
            }
        }
        let _ = conn.close().await;
    });
    Ok(handle)
}

/// The database's log file (`-wal` beside the main file), or `None` for
/// an in-memory database.
async fn log_file(conn: &mut AnyConnection) -> sqlx::Result<Option<std::path::PathBuf>> {
    #[derive(sqlx::FromRow)]
    struct Attached {
        name: String,
        file: String,
    }
    let attached: Vec<Attached> = sqlx::query_as("SELECT name, file FROM pragma_database_list")
        .fetch_all(&mut *conn)
        .await?;
    Ok(attached
        .into_iter()
        .find(|a| a.name == "main" && !a.file.is_empty())
        .map(|a| format!("{}-wal", a.file).into()))
}

/// What `PRAGMA wal_checkpoint` answers: whether it was kept from
/// finishing, the log's length and how much of it was copied, in pages.
#[derive(sqlx::FromRow)]
struct Checkpointed {
    busy: i64,
    log: i64,
    checkpointed: i64,
}

/// One round: a passive copy, and a restart if the log has grown long.
/// Returns the log's length in pages (0 once started over).
async fn checkpoint(conn: &mut AnyConnection, schedule: &Schedule) -> sqlx::Result<i64> {
    let passive: Checkpointed = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await?;
    let caught_up = passive.busy == 0 && passive.checkpointed == passive.log;
    if passive.log <= schedule.restart_frames
        || (passive.log <= schedule.force_restart_frames && !caught_up)
    {
        return Ok(passive.log);
    }
    let started = std::time::Instant::now();
    let Checkpointed { busy, log, .. } = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
        .fetch_one(&mut *conn)
        .await?;
    tracing::debug!(busy, log, caught_up, elapsed = ?started.elapsed(), "WAL restart checkpoint");
    Ok(if busy == 0 { 0 } else { log })
}

/// Writes have paused: a log file a burst left longer than the schedule
/// keeps is copied back and cut to nothing (a `TRUNCATE` checkpoint, which
/// gives up after its busy timeout if someone is reading or writing).
async fn cut_back(
    conn: &mut AnyConnection,
    log_file: Option<&std::path::Path>,
    schedule: &Schedule,
) -> sqlx::Result<()> {
    let Some(len) = log_file
        .and_then(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
    else {
        return Ok(());
    };
    if len <= schedule.keep_log_bytes {
        return Ok(());
    }
    let Checkpointed { busy, log, .. } = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *conn)
        .await?;
    tracing::debug!(busy, log, len, "WAL file cut back");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Schedule;
    use crate::storage::Storage;

    /// A fresh SQLite store in `dir` (the checkpoint task on `schedule`, if
    /// any) with a table `t` of rows `(a, b)`.
    async fn store_with_table(dir: &std::path::Path, schedule: Option<Schedule>) -> Storage {
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let storage = Storage::connect_with(&url, 1, schedule, i64::MAX)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
            .execute(storage.pool())
            .await
            .unwrap();
        storage
    }

    /// Writes that would grow the log far past the threshold leave it short:
    /// the task copies it back and makes writes start it over. Without the
    /// task the log only grows (the pool's own checkpoints wait for 32,768
    /// pages). 1,000 rows of 4,000 bytes are some 4 MiB of log.
    #[tokio::test]
    async fn the_log_is_copied_back_and_started_over() {
        let schedule = Schedule {
            busy_tick: Duration::from_millis(10),
            idle_tick: Duration::from_millis(10),
            restart_frames: 64,
            force_restart_frames: 256,
            keep_log_bytes: u64::MAX,
        };
        for (with_task, expect_short) in [(true, true), (false, false)] {
            let dir = tempfile::tempdir().unwrap();
            let storage = store_with_table(dir.path(), with_task.then_some(schedule)).await;
            let filler = "x".repeat(4000);
            for i in 0..1000 {
                sqlx::query("INSERT INTO t (a, b) VALUES ($1, $2)")
                    .bind(i)
                    .bind(&filler)
                    .execute(storage.pool())
                    .await
                    .unwrap();
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            }
            // Started over, the log is written from its start again: the
            // file stays as long as the longest log.
            let wal = std::fs::metadata(dir.path().join("t.db-wal"))
                .unwrap()
                .len();
            if expect_short {
                assert!(wal < 3 << 20, "log file of {wal} bytes");
            } else {
                assert!(wal > 4 << 20, "log file of only {wal} bytes");
            }
        }
    }

    /// A burst that leaves a long log file behind: once writes pause, the
    /// task copies the log back and cuts the file to nothing; every row is
    /// still there. Without the cut the file keeps its length.
    #[tokio::test]
    async fn a_long_log_file_is_cut_back_once_writes_pause() {
        for keep in [1u64 << 20, u64::MAX] {
            let schedule = Schedule {
                busy_tick: Duration::from_millis(10),
                idle_tick: Duration::from_millis(10),
                restart_frames: 1 << 30,
                force_restart_frames: 1 << 30,
                keep_log_bytes: keep,
            };
            let dir = tempfile::tempdir().unwrap();
            let storage = store_with_table(dir.path(), Some(schedule)).await;
            let filler = "x".repeat(4000);
            let mut tx = storage.pool().begin().await.unwrap();
            for i in 0..1000 {
                sqlx::query("INSERT INTO t (a, b) VALUES ($1, $2)")
                    .bind(i)
                    .bind(&filler)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
            let wal = || {
                std::fs::metadata(dir.path().join("t.db-wal"))
                    .map(|m| m.len())
                    .unwrap_or(0)
            };
            assert!(wal() > 3 << 20, "the burst wrote a log of {} bytes", wal());
            let mut waited = 0;
            while wal() > keep && waited < 100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                waited += 1;
            }
            if keep == u64::MAX {
                // Some twenty idle rounds.
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(wal() > 3 << 20, "left alone: {} bytes", wal());
            } else {
                assert!(wal() <= keep, "cut back: {} bytes", wal());
            }
            let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t")
                .fetch_one(storage.pool())
                .await
                .unwrap();
            assert_eq!(rows, 1000);
        }
    }

    /// Closing the storage stops the task before the pool closes, so the
    /// pool's last connection checkpoints the log and removes it.
    #[tokio::test]
    async fn closing_leaves_no_log_behind() {
        let (dir, storage) = Storage::scratch_with_table_t().await;
        assert!(dir.path().join("t.db-wal").exists());
        storage.close().await;
        assert!(!dir.path().join("t.db-wal").exists());
    }
}
