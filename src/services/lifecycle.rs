//! Background work: every task the services run besides requests starts in
//! [`Services::start`] and stops in [`Services::shutdown`], in one order.
//!
//! A service that needs a task registers it here ([`Workers::spawn`]) with
//! the [`Stage`] at which it stops; admin jobs go through
//! [`Workers::spawn_job`]. Nothing in `services` calls `tokio::spawn` for
//! work that outlives a request.
//!
//! What runs, by stage (see [`Services::start`]):
//! - jobs: admin jobs (room deletion, history purge, reindex) and, at
//!   start, resuming interrupted jobs / rebuilding the search index. Cut
//!   off at shutdown: each is kept in the `jobs` table and runs again at
//!   the next start.
//! - [`Stage::Drain`]: the group-commit writer (`rooms/writer.rs`). It stops
//!   taking events and writes every one already queued.
//! - [`Stage::Flush`]: periodic upkeep (last-seen records, typing expiry,
//!   search commits and giving memory back, the cache report). Each makes
//!   a final pass when told to stop: last-seen records are written and the
//!   search index committed after the writer has drained.
//! - The database's own WAL checkpointer (`storage/checkpoint.rs`) starts
//!   with the connection and stops when the database closes, last.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use super::Services;
use super::sessions::LAST_SEEN_FLUSH_INTERVAL;

/// How often the cache report is logged (at debug level).
const CACHE_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// When a worker stops at shutdown, in this order (after the server has
/// stopped accepting requests and finished those in flight, and after the
/// jobs were cut off).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Stage {
    /// Work that must finish what it holds: the event writer.
    Drain,
    /// Periodic upkeep, which makes a final pass over what the drained
    /// stage left (last-seen records, the search commit).
    Flush,
}

const STAGES: [Stage; 2] = [Stage::Drain, Stage::Flush];

/// Told to a worker when it should stop (make its final pass and return).
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once shutdown reaches the worker's stage (at once if it has).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

struct Worker {
    name: &'static str,
    stage: Stage,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// The registry of background tasks, owned by [`Services`].
#[derive(Default)]
pub struct Workers {
    running: Mutex<Vec<Worker>>,
    jobs: Mutex<Vec<AbortHandle>>,
}

impl Workers {
    /// Starts `work` as a named worker; it is told to stop (through its
    /// [`Stop`]) when shutdown reaches `stage`, and shutdown waits for it.
    pub fn spawn<F, Fut>(&self, name: &'static str, stage: Stage, work: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(work(Stop(stop_rx)));
        self.running.lock().push(Worker {
            name,
            stage,
            stop,
            handle,
        });
    }

    /// Starts an admin job (or any work that may be cut off at shutdown
    /// because it runs again at the next start). The handle lets a request
    /// wait for it; the job goes on if that request goes away.
    pub fn spawn_job<Fut>(&self, job: Fut) -> JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(job);
        let mut jobs = self.jobs.lock();
        jobs.retain(|j| !j.is_finished());
        jobs.push(handle.abort_handle());
        handle
    }

    /// The workers' names with their stages, in start order (for tests and logs).
    pub fn names(&self) -> Vec<(&'static str, Stage)> {
        self.running
            .lock()
            .iter()
            .map(|w| (w.name, w.stage))
            .collect()
    }

    /// Cuts off the jobs, then stops each stage in order, waiting for its
    /// workers to return.
    async fn stop_all(&self) {
        for job in std::mem::take(&mut *self.jobs.lock()) {
            job.abort();
        }
        for stage in STAGES {
            let workers: Vec<Worker> = {
                let mut running = self.running.lock();
                let (now, later) = std::mem::take(&mut *running)
                    .into_iter()
                    .partition(|w| w.stage == stage);
                *running = later;
                now
            };
            for w in &workers {
                let _ = w.stop.send(true);
            }
            for w in workers {
                if let Err(e) = w.handle.await {
                    tracing::warn!(worker = w.name, error = %e, "a background task failed");
                }
            }
        }
    }
}

/// A service that keeps entries in memory reports how many, by cache name.
pub trait CacheSizes {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)>;
}

impl Services {
    /// Starts every background task. Call once, after [`Services::new`]
    /// (and after the search index has caught up). `rebuild_search` asks
    /// for the index to be rebuilt unless a resumed reindex does it;
    /// `release_memory` runs after each periodic search commit (the
    /// server's `malloc_trim`).
    pub fn start(self: &Arc<Self>, rebuild_search: bool, release_memory: fn()) {
        self.rooms.start(&self.workers);
        let s = self.clone();
        self.workers.spawn("last-seen flush", Stage::Flush, |stop| {
            flush_last_seen(s, stop)
        });
        let s = self.clone();
        self.workers
            .spawn("typing expiry", Stage::Flush, |stop| expire_typing(s, stop));
        let s = self.clone();
        self.workers.spawn("upkeep", Stage::Flush, move |stop| {
            upkeep(s, release_memory, stop)
        });
        let s = self.clone();
        self.workers.spawn_job(async move {
            // Jobs a crash interrupted run again; a resumed reindex also
            // rebuilds the index.
            let reindexing = super::jobs::resume(&s).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e.message(), "could not resume interrupted jobs");
                false
            });
            if rebuild_search
                && !reindexing
                && let Err(e) = super::search::reindex(&s, None).await
            {
                tracing::warn!(error = %e.message(), "could not rebuild the search index");
            }
        });
    }

    /// Starts an admin job (see [`Workers::spawn_job`]).
    pub fn spawn_job<Fut>(&self, job: Fut) -> JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.workers.spawn_job(job)
    }

    /// The running workers' names and stages.
    pub fn workers(&self) -> Vec<(&'static str, Stage)> {
        self.workers.names()
    }

    /// Stops the background work in order and closes the database. Call it
    /// once no request is being served any more: jobs are cut off (they
    /// resume at the next start), the writer drains its queue, the upkeep
    /// workers make their final pass (last-seen records, search commit),
    /// then the database closes (and with it the WAL checkpointer).
    pub async fn shutdown(&self) {
        self.workers.stop_all().await;
        self.storage.close().await;
    }

    /// Every in-memory cache and table with its number of entries, by
    /// service (`service.cache`).
    pub fn cache_report(&self) -> Vec<(String, usize)> {
        let mut services: Vec<(&str, &dyn CacheSizes)> = vec![
            ("rooms", &self.rooms),
            ("sessions", &*self.sessions),
            ("account_data", &self.account_data),
            ("ephemeral", &self.ephemeral),
            ("unread", &*self.unread),
            ("stream", &*self.stream),
            ("jobs", &self.jobs),
            ("uia", &self.uia),
        ];
        if let Some(s) = &self.shared_secret {
            services.push(("shared_secret", s));
        }
        if let Some(l) = &self.client_limiter {
            services.push(("client_limiter", l));
        }
        if let Some(l) = &self.login_limiter {
            services.push(("login_limiter", l));
        }
        services
            .into_iter()
            .flat_map(|(service, caches)| {
                caches
                    .cache_sizes()
                    .into_iter()
                    .map(move |(cache, n)| (format!("{service}.{cache}"), n))
            })
            .collect()
    }

    /// The cache report as one line: `rooms.heads=3 sessions.tokens=1 ...`.
    pub fn cache_report_line(&self) -> String {
        let report = self.cache_report();
        let parts: Vec<String> = report.iter().map(|(k, n)| format!("{k}={n}")).collect();
        parts.join(" ")
    }
}

/// Writes batched last-seen records every few seconds, and once more at
/// shutdown.
async fn flush_last_seen(services: Arc<Services>, mut stop: Stop) {
    let mut tick = tokio::time::interval(LAST_SEEN_FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.requested() => break,
        }
        if let Err(e) = services.sessions.flush_last_seen().await {
            tracing::warn!(error = %e.message(), "could not write last-seen records");
        }
    }
    if let Err(e) = services.sessions.flush_last_seen().await {
        tracing::warn!(error = %e.message(), "could not write last-seen records at shutdown");
    }
}

/// Expires typing notifications once a second.
async fn expire_typing(services: Arc<Services>, mut stop: Stop) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => services.ephemeral.expire_typing(),
            () = stop.requested() => break,
        }
    }
}

/// Every [`LAST_SEEN_FLUSH_INTERVAL`]: a search commit (new events become
/// durable in the index within a few seconds; an idle server also gives
/// back the index writer's memory), then `release_memory` (memory freed
/// after a burst of work, and by a released index writer, goes back to the
/// system). Both block for milliseconds (a commit syncs files to disk): not
/// on a thread that serves requests. Once a minute, the cache report at
/// debug level. At shutdown, after the writer has drained, a last commit.
async fn upkeep(services: Arc<Services>, release_memory: fn(), mut stop: Stop) {
    let mut tick = tokio::time::interval(LAST_SEEN_FLUSH_INTERVAL);
    let mut report = tokio::time::interval(CACHE_REPORT_INTERVAL);
    report.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = report.tick() => {
                tracing::debug!(caches = %services.cache_report_line(), "cache sizes (entries)");
                continue;
            }
            () = stop.requested() => break,
        }
        let search = services.search.clone();
        let housekeeping = tokio::task::spawn_blocking(move || {
            let committed = search.map(|s| s.commit_and_release_if_idle());
            release_memory();
            committed
        });
        match housekeeping.await {
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e.message(), "could not commit the search index");
            }
            Err(e) => tracing::warn!(error = %e, "the housekeeping task failed"),
            Ok(_) => {}
        }
    }
    if let Some(search) = &services.search
        && let Err(e) = search.commit()
    {
        tracing::warn!(error = %e.message(), "could not commit the search index at shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stage is told to stop only after the stage before it has
    /// returned, and jobs are cut off first.
    #[tokio::test]
    async fn stages_stop_in_order_and_jobs_are_cut_off() {
        let workers = Workers::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        for (name, stage) in [("flush", Stage::Flush), ("drain", Stage::Drain)] {
            let log = log.clone();
            workers.spawn(name, stage, move |mut stop| async move {
                stop.requested().await;
                log.lock().push(format!("{name} told"));
                tokio::task::yield_now().await;
                log.lock().push(format!("{name} done"));
            });
        }
        let job = workers.spawn_job(std::future::pending());
        workers.stop_all().await;
        assert!(job.await.expect_err("cut off").is_cancelled());
        assert_eq!(
            *log.lock(),
            ["drain told", "drain done", "flush told", "flush done"]
        );
        assert!(workers.names().is_empty());
    }
}
